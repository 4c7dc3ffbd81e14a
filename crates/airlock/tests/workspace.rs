//! Workspaces in, work out (issue 5), end to end on real git repositories, rootful and rootless:
//! a named sandbox gets its own clone on `airlock/<name>` with the host's uncommitted changes as
//! a first commit; the agent commits; `diff` shows it; `fetch` brings the branch home while the
//! host's work tree stays byte-for-byte the same; `sync` applies it, and refuses over conflicting
//! host edits. Attack tests: what a sandbox plants in its repository (hooks, config, attributes,
//! symlinks, alternates) never runs or is followed on the host, and the gate lists it.

mod common;

use common::work::{both_modes, git, give, ok, write, EngineGuard};

use common::{e2e, Airlock, TempDir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every file under `dir` (symlinks as their target) with its bytes and mode: a fingerprint
/// of the work tree and, separately, of the whole .git directory.
fn fingerprint(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let rel = p.strip_prefix(dir).expect("under").to_path_buf();
            if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).expect("readlink");
                out.insert(rel, (t.into_os_string().into_encoded_bytes(), 0o120000));
            } else if m.is_dir() {
                stack.push(p);
            } else {
                let b = std::fs::read(&p).expect("read");
                out.insert(rel, (b, m.permissions().mode()));
            }
        }
    }
    out
}

fn worktree_fingerprint(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    fingerprint(dir)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(".git"))
        .collect()
}

/// A project with one commit plus staged, unstaged, untracked and ignored changes.
fn project(a: &Airlock) -> PathBuf {
    let p = a.cwd.clone();
    git(a, &["init", "-q", "-b", "main"]);
    git(a, &["config", "user.name", "Host User"]);
    git(a, &["config", "user.email", "host@example.invalid"]);
    write(&p.join("a.txt"), "one\n");
    write(&p.join("b.txt"), "bee\n");
    write(&p.join("tool.sh"), "#!/bin/sh\necho tool\n");
    write(&p.join(".gitignore"), "*.log\n");
    git(a, &["add", "."]);
    git(a, &["commit", "-q", "-m", "initial"]);
    write(&p.join("a.txt"), "one\nstaged\n");
    git(a, &["add", "a.txt"]);
    write(&p.join("b.txt"), "bee\nunstaged\n");
    write(&p.join("untracked.txt"), "new file\n");
    write(&p.join("debug.log"), "ignored\n");
    give(a, &p);
    p
}

fn workflow(a: &Airlock, label: &str) {
    let _guard = EngineGuard(a);
    let p = project(a);
    let head = git(a, &["rev-parse", "HEAD"]);
    let index_before = std::fs::read(p.join(".git/index")).expect("index");
    let tree_before = worktree_fingerprint(&p);

    ok(a, label, &["create", "box", "--net", "off"]);
    ok(a, label, &["start", "box"]);
    let inside = ok(
        a,
        label,
        &[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "cd /workspace && git rev-parse --abbrev-ref HEAD && git log --format=%s && \
             git status --porcelain && cat a.txt b.txt untracked.txt && \
             test ! -e debug.log && echo no-ignored",
        ],
    );
    assert_eq!(
        inside.stdout,
        "airlock/box\nairlock: uncommitted changes from the host\ninitial\n\
         one\nstaged\nbee\nunstaged\nnew file\nno-ignored\n",
        "{label}: the clone shows what the user sees: {}",
        inside.describe()
    );
    // The host repository is not mounted inside at all.
    let host_path = p.display().to_string();
    let out = a.run(&["exec", "box", "--", "test", "-e", &host_path]);
    assert_ne!(
        out.code(),
        0,
        "{label}: the host repo path is visible inside"
    );

    // The agent works: edit, add, commit.
    ok(
        a,
        label,
        &[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "cd /workspace && echo agent >> a.txt && echo fresh > new.txt && git add -A && \
             git commit -q -m 'agent work' && git log --oneline | wc -l",
        ],
    );

    let diff = ok(a, label, &["diff", "box", "--stat"]);
    assert!(
        diff.stdout.contains("a.txt") && diff.stdout.contains("new.txt"),
        "{label}: {}",
        diff.describe()
    );
    assert!(
        !diff.stdout.contains("b.txt"),
        "{label}: diff is against the start: {}",
        diff.stdout
    );
    let dj: serde_json::Value =
        serde_json::from_str(&ok(a, label, &["diff", "box", "--json"]).stdout).expect("json");
    assert_eq!(dj["commits"], 1, "{label}: {dj}");
    assert_eq!(
        dj["files"].as_array().map(|f| f.len()),
        Some(2),
        "{label}: {dj}"
    );
    assert_eq!(dj["findings"], serde_json::json!([]), "{label}: {dj}");

    let out = ok(a, label, &["fetch", "box"]);
    assert!(
        out.stdout.contains("airlock/box"),
        "{label}: {}",
        out.describe()
    );
    assert_eq!(
        git(a, &["log", "--format=%s", "airlock/box"]),
        "agent work\nairlock: uncommitted changes from the host\ninitial\n",
        "{label}"
    );
    assert_eq!(git(a, &["rev-parse", "HEAD"]), head, "{label}: HEAD moved");
    assert_eq!(
        git(a, &["symbolic-ref", "HEAD"]),
        "refs/heads/main\n",
        "{label}: the current branch changed"
    );
    assert_eq!(
        std::fs::read(p.join(".git/index")).expect("index"),
        index_before,
        "{label}: fetch touched the index"
    );
    assert!(
        worktree_fingerprint(&p) == tree_before,
        "{label}: fetch changed the host's work tree"
    );

    let dry = ok(a, label, &["sync", "box", "--dry-run"]);
    assert_eq!(
        dry.stdout,
        "M a.txt\nA new.txt\n",
        "{label}: {}",
        dry.describe()
    );
    assert!(
        worktree_fingerprint(&p) == tree_before,
        "{label}: dry run wrote"
    );
    ok(a, label, &["sync", "box"]);
    assert_eq!(
        std::fs::read_to_string(p.join("a.txt")).expect("a"),
        "one\nstaged\nagent\n",
        "{label}"
    );
    assert_eq!(
        std::fs::read_to_string(p.join("new.txt")).expect("new"),
        "fresh\n",
        "{label}"
    );
    assert_eq!(
        std::fs::read_to_string(p.join("b.txt")).expect("b"),
        "bee\nunstaged\n",
        "{label}: untouched paths stay"
    );
    // A second sync has nothing left to do.
    let again = ok(a, label, &["sync", "box", "--dry-run"]);
    assert_eq!(again.stdout, "", "{label}: {}", again.describe());

    // Conflicting edits: the sandbox and the host both change b.txt.
    ok(
        a,
        label,
        &[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "cd /workspace && echo sandbox >> b.txt && git commit -q -am 'b from sandbox'",
        ],
    );
    write(&p.join("b.txt"), "bee\nhost edit\n");
    let out = a.run(&["sync", "box"]);
    assert_eq!(out.code(), 120, "{label}: {}", out.describe());
    assert!(out.stderr.contains("b.txt"), "{label}: {}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(p.join("b.txt")).expect("b"),
        "bee\nhost edit\n",
        "{label}: a refused sync wrote"
    );

    // deliver: a host branch into the sandbox.
    git(a, &["branch", "feature", "HEAD"]);
    ok(a, label, &["deliver", "box", "feature"]);
    let out = ok(
        a,
        label,
        &[
            "exec",
            "box",
            "--",
            "git",
            "-C",
            "/workspace",
            "rev-parse",
            "delivered/feature",
        ],
    );
    assert_eq!(out.stdout, head, "{label}");
    let out = a.run(&["deliver", "box", "no-such-branch"]);
    assert_eq!(out.code(), 122, "{label}: {}", out.describe());

    ok(a, label, &["rm", "--force", "box"]);
}

#[test]
fn clone_diff_fetch_sync_deliver() {
    if !e2e("clone_diff_fetch_sync_deliver") {
        return;
    }
    both_modes(workflow);
}

/// A fast-forward: the host is clean and still where the sandbox started.
#[test]
fn sync_fast_forwards_a_clean_host() {
    if !e2e("sync_fast_forwards_a_clean_host") {
        return;
    }
    let a = Airlock::root();
    let _guard = EngineGuard(&a);
    let p = a.cwd.clone();
    git(&a, &["init", "-q", "-b", "main"]);
    write(&p.join("x"), "x\n");
    git(&a, &["add", "."]);
    git(
        &a,
        &[
            "-c",
            "user.name=u",
            "-c",
            "user.email=u@x",
            "commit",
            "-q",
            "-m",
            "one",
        ],
    );
    ok(&a, "ff", &["create", "ff", "--net", "off"]);
    ok(&a, "ff", &["start", "ff"]);
    ok(
        &a,
        "ff",
        &[
            "exec",
            "ff",
            "--",
            "sh",
            "-c",
            "cd /workspace && echo y > y && git add y && git commit -qm two",
        ],
    );
    let out = ok(&a, "ff", &["stop", "ff", "--sync"]);
    assert!(out.stdout.contains("ff stopped"), "{}", out.describe());
    assert_eq!(git(&a, &["log", "--format=%s"]), "two\none\n");
    assert_eq!(std::fs::read_to_string(p.join("y")).expect("y"), "y\n");
    assert_eq!(git(&a, &["status", "--porcelain"]), "");
    ok(&a, "ff", &["rm", "ff"]);
}

/// The sandbox plants everything that would run code if the host ran git in its repository;
/// the host's diff, fetch and sync run none of it, and the gate lists what the branch changes.
fn planted(a: &Airlock, label: &str) {
    let _guard = EngineGuard(a);
    let p = project(a);
    git(a, &["add", "-A"]);
    git(a, &["commit", "-q", "-m", "clean"]);
    let canaries = TempDir::new("canary");
    std::fs::set_permissions(
        canaries.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let c = |n: &str| canaries.join(n).display().to_string();
    ok(a, label, &["create", "evil", "--net", "off"]);
    ok(a, label, &["start", "evil"]);

    // Inside a clone the repository's config and hooks are the sandbox's own (nothing on the
    // host ever runs git in it, proven below): `git config` works, hooks can be written.
    let out = a.run(&[
        "exec",
        "evil",
        "--",
        "sh",
        "-c",
        "cd /workspace; \
         git config user.email agent@example.com && echo GIT-CONFIG-OK; \
         echo '[airlock] planted = yes' >> .git/config && echo CONFIG-WRITTEN; \
         echo 'touch /tmp/x' > .git/hooks/post-checkout && echo HOOK-WRITTEN; \
         true",
    ]);
    assert!(
        out.stdout.contains("GIT-CONFIG-OK")
            && out.stdout.contains("CONFIG-WRITTEN")
            && out.stdout.contains("HOOK-WRITTEN"),
        "{label}: a clone's git config and hooks are not the sandbox's own: {}",
        out.describe()
    );
    // The branch: a workflow, attributes with a filter and diff driver, a symlink to a host
    // file, an executable bit flip, agent config.
    let script = format!(
        "set -e; cd /workspace; mkdir -p .github/workflows; echo 'on: push' > .github/workflows/x.yml; \
         printf '* filter=evil diff=evil\\n' > .gitattributes; ln -s /etc/shadow leak; \
         chmod +x a.txt; mkdir -p .vscode; echo '{{}}' > .vscode/settings.json; \
         git add -A; git commit -q -m planted; echo {}",
        "done"
    );
    let out = ok(a, label, &["exec", "evil", "--", "sh", "-c", &script]);
    assert!(out.stdout.contains("done"), "{label}: {}", out.describe());

    // The sandbox's repository gets every hostile config and hook there is (written from the
    // host here, as the test's airlock user owns it). None of it may run on the host.
    let ws = a.state_dir().join("sandboxes/evil/workspace");
    let gitdir = ws.join(".git");
    let hook = format!("#!/bin/sh\ntouch {}\n", c("hook"));
    for h in [
        "post-checkout",
        "pre-commit",
        "reference-transaction",
        "post-merge",
        "fsmonitor-watchman",
        "pre-auto-gc",
        "post-index-change",
    ] {
        write(&gitdir.join("hooks").join(h), &hook);
        std::fs::set_permissions(
            gitdir.join("hooks").join(h),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod hook");
    }
    let mut config = std::fs::read_to_string(gitdir.join("config")).expect("config");
    config.push_str(&format!(
        "[core]\n\tfsmonitor = touch {fs}\n\tpager = touch {pg}; cat\n\thooksPath = {hp}\n\
         \talternateRefsCommand = touch {ar}\n\
         [filter \"evil\"]\n\tclean = touch {cl}\n\tsmudge = touch {sm}\n\tprocess = touch {pr}\n\
         [diff \"evil\"]\n\tcommand = touch {dc}\n\ttextconv = touch {tc}\n\
         [uploadpack]\n\tpackObjectsHook = touch {po};\n",
        fs = c("fsmonitor"),
        pg = c("pager"),
        hp = gitdir.join("hooks").display(),
        ar = c("alternate-refs"),
        cl = c("clean"),
        sm = c("smudge"),
        pr = c("process"),
        dc = c("diff-command"),
        tc = c("textconv"),
        po = c("pack-objects-hook"),
    ));
    write(&gitdir.join("config"), &config);
    write(&gitdir.join("info/attributes"), "* filter=evil diff=evil\n");
    give(a, &gitdir);

    let diff = ok(a, label, &["diff", "evil"]);
    assert!(
        diff.stdout.contains("on: push"),
        "{label}: {}",
        diff.describe()
    );
    for flagged in [
        ".github/workflows/x.yml",
        ".gitattributes",
        "leak",
        "a.txt",
        ".vscode/settings.json",
    ] {
        assert!(
            diff.stderr.contains(flagged),
            "{label}: the gate does not list {flagged}: {}",
            diff.describe()
        );
    }
    let out = a.run(&["fetch", "evil"]);
    assert_eq!(
        out.code(),
        121,
        "{label}: fetch without --accept: {}",
        out.describe()
    );
    assert!(
        out.stderr.contains("symlink leaving the tree")
            && out.stderr.contains("CI workflow")
            && out.stderr.contains("executable bit")
            && out.stderr.contains("git attributes")
            && out.stderr.contains("agent configuration"),
        "{label}: {}",
        out.stderr
    );
    assert_eq!(
        common::run_with_deadline(
            a.command_with("git", &["rev-parse", "--verify", "-q", "airlock/evil"]),
            None,
            common::DEADLINE
        )
        .code(),
        1,
        "{label}: a refused fetch created the branch"
    );
    let fj = a.run(&["fetch", "evil", "--json"]);
    assert_eq!(fj.code(), 121, "{label}: {}", fj.describe());
    let fj: serde_json::Value = serde_json::from_str(&fj.stdout).expect("fetch --json");
    assert_eq!(fj["needs_accept"], true, "{label}: {fj}");
    let out = a.run(&["sync", "evil"]);
    assert_eq!(
        out.code(),
        121,
        "{label}: sync without --accept: {}",
        out.describe()
    );
    ok(a, label, &["sync", "evil", "--dry-run"]);
    ok(a, label, &["fetch", "evil", "--accept"]);
    assert!(
        git(a, &["log", "--format=%s", "-1", "airlock/evil"]).contains("planted"),
        "{label}"
    );
    // The host repository reads the fetched tree (its own config: no evil filter defined).
    git(a, &["diff", "--stat", "HEAD", "airlock/evil"]);
    let ran: Vec<_> = std::fs::read_dir(canaries.path())
        .expect("canaries")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        ran.is_empty(),
        "{label}: sandbox-planted code ran on the host: {ran:?}"
    );
    assert!(
        !p.join("leak").exists(),
        "{label}: fetch wrote to the work tree"
    );

    // Alternates planted in the sandbox's object store are refused, not followed.
    write(&gitdir.join("objects/info/alternates"), "/etc\n");
    let out = a.run(&["fetch", "evil", "--accept"]);
    assert_eq!(out.code(), 125, "{label}: {}", out.describe());
    assert!(out.stderr.contains("alternates"), "{label}: {}", out.stderr);

    ok(a, label, &["rm", "--force", "evil"]);
}

#[test]
fn planted_repository_attacks_do_not_reach_the_host() {
    if !e2e("planted_repository_attacks_do_not_reach_the_host") {
        return;
    }
    both_modes(planted);
}

/// `run` refuses clone mode (its clone would vanish with it), and clone mode outside a git
/// repository is a clear error; named sandboxes outside a repository fall back to overlay.
#[test]
fn clone_mode_needs_a_named_sandbox_in_a_repository() {
    if !e2e("clone_mode_needs_a_named_sandbox_in_a_repository") {
        return;
    }
    let a = Airlock::root();
    let _guard = EngineGuard(&a);
    let out = a.run(&["run", "--workspace", "clone", "--", "true"]);
    assert_eq!(out.code(), 121, "{}", out.describe());
    assert!(out.stderr.contains("named sandbox"), "{}", out.stderr);
    let out = a.run(&["create", "c1", "--workspace", "clone"]);
    assert_eq!(out.code(), 121, "{}", out.describe());
    assert!(out.stderr.contains("git repository"), "{}", out.stderr);
    ok(&a, "fallback", &["create", "c2", "--net", "off"]);
    let st = ok(&a, "fallback", &["status", "c2", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&st.stdout).expect("status");
    assert_eq!(st["spec"]["workspace"], "overlay", "{st}");
    let out = a.run(&["diff", "c2"]);
    assert_eq!(out.code(), 120, "{}", out.describe());
    assert!(out.stderr.contains("clone"), "{}", out.stderr);
    ok(&a, "fallback", &["rm", "c2"]);
}

/// Secrets for named sandboxes: read by the CLI at start, handed over in memory; inside as
/// /run/secrets/NAME (and `exec --secrets`); never in the state directory, a process's argv,
/// airlock's own environments, `status`, `list` or the logs.
fn secrets(a: &Airlock, label: &str) {
    let _guard = EngineGuard(a);
    let value = format!("s3cr3t-{}", common::random_hex());
    let env = [("HOST_TOKEN", value.as_str())];
    let out = a.run_with_env(
        &env,
        &[
            "create",
            "sec",
            "--net",
            "off",
            "--secret",
            "TOKEN=env:HOST_TOKEN",
        ],
    );
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    let out = a.run(&["start", "sec"]);
    assert_eq!(
        out.code(),
        2,
        "{label}: start without the source: {}",
        out.describe()
    );
    assert!(out.stderr.contains("HOST_TOKEN"), "{label}: {}", out.stderr);
    assert!(!out.stderr.contains(&value), "{label}");
    let out = a.run_with_env(&env, &["start", "sec"]);
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    let out = ok(
        a,
        label,
        &["exec", "sec", "--", "cat", "/run/secrets/TOKEN"],
    );
    assert_eq!(out.stdout, value, "{label}");
    let out = ok(
        a,
        label,
        &["exec", "sec", "--", "sh", "-c", "echo ${TOKEN:-unset}"],
    );
    assert_eq!(out.stdout, "unset\n", "{label}: exec inherited the secret");
    let out = ok(
        a,
        label,
        &["exec", "--secrets", "sec", "--", "sh", "-c", "echo $TOKEN"],
    );
    assert_eq!(out.stdout, format!("{value}\n"), "{label}");

    let mut leaks = Vec::new();
    for (what, out) in [
        ("status", a.run(&["status", "sec", "--json"])),
        ("list", a.run(&["list", "--json"])),
        ("logs", a.run(&["logs", "sec"])),
        ("config", a.run(&["config"])),
    ] {
        if out.stdout.contains(&value) || out.stderr.contains(&value) {
            leaks.push(what.to_string());
        }
    }
    let grep = std::process::Command::new("grep")
        .args(["-rlF", &value])
        .arg(a.dir.path())
        .output()
        .expect("grep");
    assert!(
        grep.stdout.is_empty(),
        "{label}: the secret is on disk: {}",
        String::from_utf8_lossy(&grep.stdout)
    );
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&value) {
            leaks.push(format!("argv of {pid}"));
        }
        // airlock's own host processes (CLI, engine, supervisor) never hold it in their env.
        if String::from_utf8_lossy(&cmdline).contains("airlock") {
            let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
            if String::from_utf8_lossy(&environ).contains(&value) {
                leaks.push(format!(
                    "environment of {pid} ({})",
                    String::from_utf8_lossy(&cmdline).replace('\0', " ")
                ));
            }
        }
    }
    assert!(leaks.is_empty(), "{label}: the secret leaked to: {leaks:?}");
    ok(a, label, &["rm", "--force", "sec"]);
}

#[test]
fn secrets_reach_named_sandboxes_in_memory_only() {
    if !e2e("secrets_reach_named_sandboxes_in_memory_only") {
        return;
    }
    both_modes(secrets);
}

/// `context` paths, `[[workspace.repos]]` and `[home_files]` (immutable, link, seed) in a named
/// sandbox and in `run`.
fn extras(a: &Airlock, label: &str) {
    let _guard = EngineGuard(a);
    let p = a.cwd.clone();
    let files = a.dir.join("hostfiles");
    write(&files.join("imm.txt"), "immutable v1\n");
    // The `link` file is itself a link, as a dotfile manager makes them: followed at start
    // (its canonical path is bound), as the user meant.
    let dotfiles = a.dir.join("dotfiles");
    write(&dotfiles.join("link.txt"), "link v1\n");
    std::os::unix::fs::symlink("../dotfiles/link.txt", files.join("link.txt")).expect("symlink");
    give(a, &dotfiles);
    write(&files.join("seed.txt"), "seed v1\n");
    let refrepo = a.dir.join("refrepo");
    std::fs::create_dir_all(&refrepo).expect("mkdir");
    write(&refrepo.join("lib.rs"), "// reference\n");
    give(a, &refrepo);
    for args in [
        vec!["init", "-q", "-b", "main"],
        vec!["add", "."],
        vec![
            "-c",
            "user.name=u",
            "-c",
            "user.email=u@x",
            "commit",
            "-q",
            "-m",
            "ref",
        ],
    ] {
        let mut c = a.command_with("git", &args);
        c.current_dir(&refrepo);
        assert_eq!(
            common::run_with_deadline(c, None, common::DEADLINE).code(),
            0,
            "{label}"
        );
    }
    git(a, &["init", "-q", "-b", "main"]);
    write(&p.join(".gitignore"), "notes/\n");
    write(&p.join("notes/todo.md"), "- ship it\n");
    write(
        &p.join("airlock.toml"),
        &format!(
            "[workspace]\ncontext = [\"notes\"]\nprotected = [\"notes\"]\n\
             [[workspace.repos]]\nsource = \"{r}\"\ndest = \"Git/example.com/o/ref\"\n\
             [home_files.\"cfg/imm.txt\"]\nsource = \"{f}/imm.txt\"\nmode = \"immutable\"\n\
             [home_files.\"cfg/link.txt\"]\nsource = \"{f}/link.txt\"\nmode = \"link\"\n\
             [home_files.\"cfg/seed.txt\"]\nsource = \"{f}/seed.txt\"\nmode = \"seed\"\n",
            r = refrepo.display(),
            f = files.display()
        ),
    );
    for d in [&p, &files, &refrepo] {
        give(a, d);
    }
    // repos and home_files read host files: the project file needs the user's trust.
    let out = a.run(&["create", "ex", "--net", "off"]);
    assert_eq!(
        out.code(),
        121,
        "{label}: untrusted widening: {}",
        out.describe()
    );
    ok(a, label, &["trust"]);
    ok(a, label, &["create", "ex", "--net", "off"]);
    ok(a, label, &["start", "ex"]);
    let out = ok(
        a,
        label,
        &[
            "exec",
            "ex",
            "--",
            "sh",
            "-c",
            "cat /workspace/notes/todo.md ~/Git/example.com/o/ref/lib.rs ~/cfg/imm.txt \
             ~/cfg/link.txt ~/cfg/seed.txt; \
             echo mine > ~/Git/example.com/o/ref/lib.rs && echo repo-writable; \
             echo x > ~/cfg/imm.txt 2>/dev/null || echo imm-readonly; \
             echo x > ~/cfg/link.txt 2>/dev/null || echo link-readonly; \
             echo changed > ~/cfg/seed.txt && echo seed-writable; \
             echo x > /workspace/notes/todo.md 2>/dev/null || echo notes-protected",
        ],
    );
    assert_eq!(
        out.stdout,
        "- ship it\n// reference\nimmutable v1\nlink v1\nseed v1\nrepo-writable\n\
         imm-readonly\nlink-readonly\nseed-writable\nnotes-protected\n",
        "{label}: {}",
        out.describe()
    );
    // The host's copies are untouched; link follows the host, seed stays the sandbox's.
    assert_eq!(
        std::fs::read_to_string(refrepo.join("lib.rs")).expect("ref"),
        "// reference\n"
    );
    assert_eq!(
        std::fs::read_to_string(files.join("seed.txt")).expect("seed"),
        "seed v1\n"
    );
    write(&files.join("link.txt"), "link v2\n");
    write(&files.join("imm.txt"), "immutable v2\n");
    let out = ok(
        a,
        label,
        &["exec", "ex", "--", "cat", "/home/agent/cfg/link.txt"],
    );
    assert_eq!(out.stdout, "link v2\n", "{label}");
    ok(a, label, &["stop", "ex"]);
    ok(a, label, &["start", "ex"]);
    let out = ok(
        a,
        label,
        &[
            "exec",
            "ex",
            "--",
            "sh",
            "-c",
            "cat ~/cfg/seed.txt ~/cfg/imm.txt",
        ],
    );
    assert_eq!(out.stdout, "changed\nimmutable v2\n", "{label}");
    ok(a, label, &["rm", "--force", "ex"]);

    // run: the same files, staged for the run only.
    let out = ok(
        a,
        label,
        &[
            "run",
            "--net",
            "off",
            "--",
            "sh",
            "-c",
            "cat ~/cfg/seed.txt; echo w > ~/cfg/seed.txt && echo ok",
        ],
    );
    assert_eq!(out.stdout, "seed v1\nok\n", "{label}: {}", out.describe());
    let staged = a.state_dir().join("home-files");
    let left: Vec<_> = std::fs::read_dir(&staged)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{label}: run left staged copies: {left:?}");
}

#[test]
fn context_repos_and_home_files() {
    if !e2e("context_repos_and_home_files") {
        return;
    }
    both_modes(extras);
}
