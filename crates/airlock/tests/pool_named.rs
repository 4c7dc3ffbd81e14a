//! Named sandboxes from the warm pool (issue 16): `create` + `start` and `up` claim a ready
//! member of a matching pool, bind the sandbox's own workspace (its clone), home, environment,
//! secret, hostname and limits to it, and the member becomes that sandbox for good — exec,
//! diff, stop, start, rm work on it as on a cold one, the pool forgets it and refills, and a
//! killed or stopped daemon never touches it. An empty pool: a cold start, said so.

mod common;

use common::pool::{git_project, kill_daemon, members_dir, members_ever, start_pool};
use common::{mounts_under, pids_with_marker, wait_until, Airlock, Outcome};
use std::time::Duration;

/// Removes the test's sandboxes, stops its daemon and its engine however the test ends.
struct Guard<'a>(&'a Airlock, &'static [&'static str]);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        for n in self.1 {
            let _ = self.0.run(&["rm", "--force", n]);
        }
        kill_daemon(self.0);
        let _ = self.0.run(&["daemon", "stop"]);
        for pid in pids_with_marker(&members_dir(self.0).display().to_string()) {
            // SAFETY: kill(2) on a supervisor of this test's own pool.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        common::stop_engines_of(self.0);
    }
}

fn ok(a: &Airlock, args: &[&str]) -> Outcome {
    let out = a.run(args);
    assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
    out
}

fn status_of(a: &Airlock, name: &str) -> serde_json::Value {
    let out = ok(a, &["status", "--json", name]);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn pool0(a: &Airlock) -> serde_json::Value {
    let out = ok(a, &["daemon", "status", "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    v["pools"][0].clone()
}

fn wait_ready(a: &Airlock, n: u64, label: &str) {
    assert!(
        wait_until(Duration::from_secs(60), || pool0(a)["ready"] == n),
        "{label}: pool not refilled: {}",
        pool0(a)
    );
}

/// The member a named start claimed, from its `NAME: warm start (pool KEY, MEMBER, …)` line.
fn warm_member(a: &Airlock, name: &str, out: &Outcome, label: &str) -> String {
    out.stderr
        .lines()
        .find(|l| l.contains(": warm start (pool "))
        .and_then(|l| l.split(", ").nth(1))
        .map(str::to_string)
        .unwrap_or_else(|| {
            let console = std::fs::read_to_string(
                a.state_dir()
                    .join("sandboxes")
                    .join(name)
                    .join("console.log"),
            )
            .unwrap_or_default();
            panic!("{label}: not warm: {}\nconsole: {console}", out.describe())
        })
}

/// What the sandbox sees of itself: variables, secret, hostname, working directory, project.
const PROBE: &str = "echo \"$GREETING $TOKEN\"; cat /run/secrets/TOKEN; echo; hostname; pwd; cat README; cat ~/kept 2>/dev/null || echo no-kept";

fn create(a: &Airlock, name: &str, greeting: &str) {
    let greeting = format!("GREETING={greeting}");
    let mut args = vec![
        "create",
        "--net",
        "off",
        "-e",
        &greeting,
        "--secret",
        "TOKEN=env:TOKEN_SRC",
    ];
    // Root-run: a limit too (a rootless user may have no memory controller delegated).
    if a.user.is_none() {
        args.extend(["--memory", "256M"]);
    }
    args.push(name);
    // `create` checks the secret's source is there (and drops the value).
    let out = a.run_with_env(&[("TOKEN_SRC", "at-create")], &args);
    assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
}

fn start(a: &Airlock, args: &[&str], token: &str) -> Outcome {
    let out = a.run_with_env(&[("TOKEN_SRC", token)], args);
    assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
    out
}

fn probe(a: &Airlock, name: &str) -> Vec<String> {
    let out = ok(a, &["exec", "--secrets", name, "--", "sh", "-c", PROBE]);
    out.stdout.lines().map(str::to_string).collect()
}

fn expect(greeting: &str, token: &str, name: &str, kept: &str) -> Vec<String> {
    [
        format!("{greeting} {token}"),
        token.to_string(),
        name.to_string(),
        "/workspace".to_string(),
        "hello from the project".to_string(),
        kept.to_string(),
    ]
    .to_vec()
}

/// The memory limit of the cgroup of the running named sandbox `name` (host side: the
/// cgroup a cold start of it has, `NAME.ID`), among those `a`'s user made (the test's
/// rootful and rootless variants run at once and name their sandboxes alike).
fn memory_limit_of(a: &Airlock, name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let owner = a.user.as_ref().map_or(0, |u| u.uid);
    common::cgroups_named(&format!("{name}."))
        .iter()
        .filter(|d| std::fs::metadata(d).is_ok_and(|m| m.uid() == owner))
        .flat_map(|d| ["memory.max", "memory.limit_in_bytes"].map(|f| d.join(f)))
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .find_map(|s| s.trim().parse::<u64>().ok())
}

/// The sandbox's /etc/hostname and /etc/hosts name it (as a cold start's), not its member.
fn assert_names(a: &Airlock, name: &str, label: &str) {
    let out = ok(
        a,
        &[
            "exec",
            name,
            "--",
            "sh",
            "-c",
            &format!("cat /etc/hostname; getent hosts {name}; grep -c run- /etc/hosts || true"),
        ],
    );
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(
        words,
        [name, "127.0.1.1", name, "0"],
        "{label}: {}",
        out.describe()
    );
}

fn named_from_the_pool(a: &Airlock, label: &str) {
    let _guard = Guard(a, &["wn-one", "wn-two", "wn-three"]);
    let p = git_project(a);
    start_pool(a, "2", &["--workspace", "overlay", "--net", "off"]);
    let before = members_ever(a);
    assert_eq!(before.len(), 2, "{label}: {before:?}");
    let children = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default()
    };
    // What each member's stub parked (the child for a claim's command; root-run, the
    // workspace helper too): all of it must go with the stub of the member a sandbox adopts.
    let parked: std::collections::BTreeMap<String, Vec<i32>> = before
        .iter()
        .map(|m| {
            let stub: i32 = std::fs::read_to_string(members_dir(a).join(m).join("stub.pid"))
                .expect("stub.pid")
                .lines()
                .next()
                .unwrap_or_default()
                .parse()
                .expect("a pid");
            let kids: Vec<i32> = children(stub)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            (m.clone(), kids)
        })
        .collect();
    for (m, kids) in &parked {
        let expected = if a.user.is_none() { 2 } else { 1 };
        assert_eq!(
            kids.len(),
            expected,
            "{label}: {m}: the stub's children {kids:?}"
        );
    }

    // create + start: claimed; the sandbox sees its own settings, not the pool's.
    create(a, "wn-one", "hello");
    let out = start(a, &["start", "wn-one"], "tok-one");
    let m1 = warm_member(a, "wn-one", &out, label);
    assert!(before.contains(&m1), "{label}: {m1} not from {before:?}");
    // The pool forgets the member (its row goes right after the start).
    assert!(
        wait_until(Duration::from_secs(5), || pool0(a)["claimed"] == 0),
        "{label}: the pool still holds {m1}: {}",
        pool0(a)
    );
    assert_eq!(pool0(a)["hits"], 1, "{label}");
    assert!(
        !members_dir(a).join(&m1).is_dir() || members_dir(a).join(&m1).is_symlink(),
        "{label}"
    );
    // Nor a marker of it (ready or claimed): no claim can find it, none is left behind.
    let markers: Vec<String> = common::pool::marker_files(a)
        .iter()
        .map(|p| p.display().to_string())
        .filter(|p| p.contains(&m1))
        .collect();
    assert!(markers.is_empty(), "{label}: {markers:?}");
    assert_eq!(
        probe(a, "wn-one"),
        expect("hello", "tok-one", "wn-one", "no-kept"),
        "{label}"
    );
    assert_names(a, "wn-one", label);
    // The member's exec stub (a `run` claim's way in) is retired: no socket to hand it a
    // command that would run outside the sandbox's limits.
    let sdir = a.state_dir().join("sandboxes").join("wn-one");
    assert!(sdir.join("control.sock").exists(), "{label}");
    assert!(
        !sdir.join("stub.sock").exists(),
        "{label}: the stub still listens"
    );
    // The stub itself is ended (a zombie of the member's supervisor at most), and with it the
    // child it had parked inside the member for a claim: nothing of it stays in the sandbox.
    let stub: i32 = std::fs::read_to_string(sdir.join("stub.pid"))
        .expect("stub.pid")
        .lines()
        .next()
        .unwrap_or_default()
        .parse()
        .expect("a pid");
    let ended = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
            .unwrap_or(true)
    };
    assert!(
        wait_until(Duration::from_secs(5), || ended(stub)
            && children(stub).trim().is_empty()),
        "{label}: the member's stub {stub} lives on (children: {})",
        children(stub)
    );
    assert!(
        wait_until(Duration::from_secs(5), || parked[&m1]
            .iter()
            .all(|p| ended(*p))),
        "{label}: what the stub of {m1} parked lives on: {:?}",
        parked[&m1]
    );
    let status: serde_json::Value = status_of(a, "wn-one");
    assert_eq!(status["warm_start"]["warm"], true, "{label}: {status}");
    assert_eq!(status["warm_start"]["member"], m1.as_str(), "{label}");
    // Limits: the sandbox's own cgroup (the member started without one), as a cold start's.
    if a.user.is_none() {
        assert_eq!(memory_limit_of(a, "wn-one"), Some(256 << 20), "{label}");
    }
    // Its home is its folder's (kept across starts); its workspace its clone (diff sees it).
    ok(
        a,
        &[
            "exec",
            "wn-one",
            "--",
            "sh",
            "-c",
            "echo kept > ~/kept; cd /workspace && echo new > added.txt && git add added.txt \
             && git -c user.name=T -c user.email=t@example.invalid commit -qm add",
        ],
    );
    let diff = ok(a, &["diff", "wn-one"]);
    assert!(
        diff.stdout.contains("added.txt") || diff.stderr.contains("added.txt"),
        "{label}: {}",
        diff.describe()
    );
    assert!(
        !p.join("added.txt").exists(),
        "{label}: the clone wrote the host"
    );
    // cp both ways, fetch: as on a cold one.
    let copied = p.join("copied-out.txt");
    ok(
        a,
        &[
            "cp",
            "wn-one:/workspace/added.txt",
            &copied.display().to_string(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(&copied).ok().as_deref(),
        Some("new\n"),
        "{label}"
    );
    ok(
        a,
        &["cp", &copied.display().to_string(), "wn-one:/tmp/in.txt"],
    );
    let out = ok(a, &["exec", "wn-one", "--", "cat", "/tmp/in.txt"]);
    assert_eq!(out.stdout, "new\n", "{label}");
    std::fs::remove_file(&copied).expect("remove the copy");
    ok(a, &["fetch", "wn-one"]);
    let branches = common::work::git(a, &["branch", "--list", "airlock/wn-one"]);
    assert!(branches.contains("airlock/wn-one"), "{label}: {branches:?}");
    let list = ok(a, &["list"]);
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with("wn-one ") && l.contains("running")),
        "{label}: {}",
        list.stdout
    );

    // A second sandbox at once (`up`): another member, its own settings — no leak of w1's.
    wait_ready(a, 2, label);
    create(a, "wn-two", "bonjour");
    let out = start(a, &["up", "wn-two"], "tok-two");
    let m2 = warm_member(a, "wn-two", &out, label);
    assert_ne!(m1, m2, "{label}");
    assert_eq!(
        probe(a, "wn-two"),
        expect("bonjour", "tok-two", "wn-two", "no-kept"),
        "{label}"
    );
    assert_names(a, "wn-two", label);
    assert_eq!(
        probe(a, "wn-one"),
        expect("hello", "tok-one", "wn-one", "kept"),
        "{label}"
    );

    // The daemon killed, then stopped (its drain): the adopted sandboxes run on.
    kill_daemon(a);
    ok(a, &["daemon", "stop"]);
    assert_eq!(
        probe(a, "wn-two"),
        expect("bonjour", "tok-two", "wn-two", "no-kept"),
        "{label}"
    );

    // An empty pool (defined, nothing ready): cold, said so, the same result; a later start
    // of an adopted sandbox works the same (its home kept).
    ok(
        a,
        &[
            "daemon",
            "start",
            "--size",
            "0",
            "--workspace",
            "overlay",
            "--net",
            "off",
        ],
    );
    create(a, "wn-three", "hallo");
    let out = start(a, &["start", "wn-three"], "tok-four");
    assert!(
        out.stderr.contains("wn-three: cold start (warm pool ")
            && !out.stderr.contains("warm start"),
        "{label}: {}",
        out.describe()
    );
    assert_eq!(
        probe(a, "wn-three"),
        expect("hallo", "tok-four", "wn-three", "no-kept"),
        "{label}"
    );
    let status: serde_json::Value = status_of(a, "wn-three");
    assert_eq!(status["warm_start"]["warm"], false, "{label}: {status}");
    ok(a, &["stop", "wn-one"]);
    let out = start(a, &["start", "wn-one"], "tok-three");
    assert!(
        out.stderr.contains("wn-one: cold start"),
        "{label}: {}",
        out.describe()
    );
    assert_eq!(
        probe(a, "wn-one"),
        expect("hello", "tok-three", "wn-one", "kept"),
        "{label}"
    );
    assert_eq!(pool0(a)["misses"], 2, "{label}: {}", pool0(a));

    if a.user.is_none() {
        assert_eq!(
            memory_limit_of(a, "wn-three"),
            Some(256 << 20),
            "{label}: cold"
        );
    }

    // rm: nothing of any of them is left — no supervisor, folder, link, cgroup or mount.
    for n in ["wn-one", "wn-two", "wn-three"] {
        ok(a, &["rm", "--force", n]);
    }
    let marker = members_dir(a).display().to_string();
    assert!(
        wait_until(Duration::from_secs(10), || pids_with_marker(&marker)
            .is_empty()),
        "{label}: supervisors left: {:?}",
        pids_with_marker(&marker)
    );
    ok(a, &["daemon", "stop"]);
    let left: Vec<_> = std::fs::read_dir(members_dir(a))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{label}: member folders left: {left:?}");
    let mounts = mounts_under(&a.state_dir());
    assert!(mounts.is_empty(), "{label}: mounts left: {mounts:?}");
    for n in ["wn-one", "wn-two", "wn-three"] {
        assert!(!a.state_dir().join("sandboxes").join(n).exists(), "{label}");
        assert_eq!(memory_limit_of(a, n), None, "{label}: cgroup of {n} left");
    }
}

crate::rootful_and_rootless!(
    named_sandboxes_claim_warm_members_rootful,
    named_sandboxes_claim_warm_members_rootless,
    named_from_the_pool
);

// ---------------------------------------------------------------------------------------------
// Injected secrets

/// A named sandbox with a secret injected into requests to api.test claims a member: the
/// value and the interception CA are bound in the member's supervisor, the sandbox holds the
/// placeholder (exec --secrets, /run/secrets) and trusts the CA through the bundle and the
/// variables a cold start sets; the server gets the value; the placeholder in plain HTTP
/// elsewhere is blocked and journaled in the sandbox's journal; no file under the state
/// directory ever holds the value.
fn named_injected(a: &Airlock, label: &str) {
    use common::internet::Internet;
    const CA: &str = "/etc/airlock-test-ca.pem";
    const REAL: &str = "sk-named-real-value-0123456789abcdef";
    let _guard = Guard(a, &["wi-one"]);
    let inet = Internet::start(&["api.test", "other.test"], &[]);
    let cert = a.dir.join("inet-ca.pem");
    std::fs::copy(inet.cert(), &cert).expect("copy cert");
    common::set_mode(&cert, 0o644);
    let cert_s = cert.display().to_string();
    let ro = format!("{cert_s}:{CA}");
    let env = [
        ("AIRLOCK_DNS_UPSTREAM", inet.dns.as_str()),
        ("AIRLOCK_UPSTREAM_CA", cert_s.as_str()),
        ("HOST_KEY", REAL),
    ];
    let run = |args: &[&str]| {
        let out = a.run_with_env(&env, args);
        assert_eq!(out.code(), 0, "{label}: {args:?}: {}", out.describe());
        out
    };
    run(&[
        "daemon",
        "start",
        "--workspace",
        "none",
        "--size",
        "1",
        "--wait",
        "--allow",
        "other.test",
        "--ro",
        &ro,
    ]);
    run(&[
        "create",
        "--workspace",
        "none",
        "--allow",
        "api.test",
        "--allow",
        "other.test",
        "--ro",
        &ro,
        "--secret",
        "KEY=env:HOST_KEY;hosts=api.test;header=x-api-key",
        "wi-one",
    ]);
    let out = run(&["start", "wi-one"]);
    warm_member(a, "wi-one", &out, label);
    let fmt = "-o /dev/null -w '%{http_code}\\n'";
    let out = run(&[
        "exec",
        "--secrets",
        "wi-one",
        "--",
        "sh",
        "-c",
        &format!(
            "echo \"env=$KEY\"; echo \"file=$(cat /run/secrets/KEY)\"; \
             echo \"bundle=$SSL_CERT_FILE $REQUESTS_CA_BUNDLE\"; \
             curl -sS --max-time 10 -H \"x-api-key: $KEY\" https://api.test/named; \
             curl -sS --max-time 10 {fmt} -H \"x-leak: $KEY\" http://other.test/leak; \
             getent hosts denied.test >/dev/null || true"
        ),
    ]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let ph = lines[0].strip_prefix("env=").unwrap_or_default();
    assert!(
        ph.starts_with("airlock-placeholder-"),
        "{label}: {}",
        out.describe()
    );
    assert_eq!(
        lines[1..],
        [
            format!("file={ph}").as_str(),
            "bundle=/run/airlock-tls/ca-bundle.pem /run/airlock-tls/ca-bundle.pem",
            "hello from api.test /named",
            "403",
        ],
        "{label}: {}",
        out.describe()
    );
    let got: Vec<serde_json::Value> = inet
        .model_requests()
        .into_iter()
        .filter(|r| r["path"] == "/named" || r["path"] == "/leak")
        .collect();
    assert_eq!(got.len(), 1, "{label}: {got:?}");
    assert_eq!(got[0]["headers"]["x-api-key"], REAL, "{label}");
    let journal = std::fs::read_to_string(a.state_dir().join("sandboxes/wi-one/net.jsonl"))
        .unwrap_or_default();
    assert!(
        journal.contains("placeholder of secret KEY") && !journal.contains(REAL),
        "{label}: {journal}"
    );
    // Its denials' hints name the sandbox, not the member it was (`airlock allow run-…`).
    assert!(
        journal.contains("airlock allow wi-one denied.test") && !journal.contains("allow run-"),
        "{label}: {journal}"
    );
    assert!(!out.stdout.contains(REAL) && !out.stderr.contains(REAL));
    let mut stack = vec![a.state_dir()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let b = std::fs::read(e.path()).unwrap_or_default();
                assert!(
                    !b.windows(REAL.len()).any(|w| w == REAL.as_bytes()),
                    "{label}: the value is in {}",
                    e.path().display()
                );
            }
        }
    }
    run(&["rm", "--force", "wi-one"]);
    run(&["daemon", "stop"]);
}

crate::rootful_and_rootless!(
    named_injected_secrets_are_bound_at_claim_rootful,
    named_injected_secrets_are_bound_at_claim_rootless,
    named_injected
);

// ---------------------------------------------------------------------------------------------
// Home files

/// `[home_files]` of a named sandbox on a warm start: the seed copied once into its kept home
/// (writable, kept across starts), immutable copies taken at each start, link the host file —
/// bound over the sandbox's home at claim, as a cold start binds them.
fn named_home_files(a: &Airlock, label: &str) {
    use common::work::{give, write};
    let _guard = Guard(a, &["hf-one"]);
    start_pool(a, "1", &["--workspace", "none", "--net", "off"]);
    let files = a.dir.join("hostfiles");
    write(&files.join("imm.txt"), "immutable v1\n");
    write(&files.join("link.txt"), "link v1\n");
    write(&files.join("seed.txt"), "seed v1\n");
    give(a, &files);
    write(
        &a.dir.join("home/.config/airlock/config.toml"),
        &format!(
            "[home_files.\"cfg/imm.txt\"]\nsource = \"{f}/imm.txt\"\nmode = \"immutable\"\n\
             [home_files.\"cfg/link.txt\"]\nsource = \"{f}/link.txt\"\nmode = \"link\"\n\
             [home_files.\"cfg/seed.txt\"]\nsource = \"{f}/seed.txt\"\nmode = \"seed\"\n",
            f = files.display()
        ),
    );
    give(a, &a.dir.join("home"));
    ok(
        a,
        &["create", "--workspace", "none", "--net", "off", "hf-one"],
    );
    let out = ok(a, &["start", "hf-one"]);
    warm_member(a, "hf-one", &out, label);
    let out = ok(
        a,
        &[
            "exec",
            "hf-one",
            "--",
            "sh",
            "-c",
            "cat ~/cfg/imm.txt ~/cfg/link.txt ~/cfg/seed.txt; \
             echo x > ~/cfg/imm.txt 2>/dev/null || echo imm-readonly; \
             echo x > ~/cfg/link.txt 2>/dev/null || echo link-readonly; \
             echo changed > ~/cfg/seed.txt && echo seed-writable",
        ],
    );
    assert_eq!(
        out.stdout,
        "immutable v1\nlink v1\nseed v1\nimm-readonly\nlink-readonly\nseed-writable\n",
        "{label}: {}",
        out.describe()
    );
    write(&files.join("imm.txt"), "immutable v2\n");
    write(&files.join("link.txt"), "link v2\n");
    ok(a, &["stop", "hf-one"]);
    wait_ready(a, 1, label);
    let out = ok(a, &["start", "hf-one"]);
    warm_member(a, "hf-one", &out, label);
    let out = ok(
        a,
        &[
            "exec",
            "hf-one",
            "--",
            "sh",
            "-c",
            "cat ~/cfg/imm.txt ~/cfg/link.txt ~/cfg/seed.txt",
        ],
    );
    assert_eq!(
        out.stdout,
        "immutable v2\nlink v2\nchanged\n",
        "{label}: {}",
        out.describe()
    );
    assert_eq!(
        std::fs::read_to_string(files.join("seed.txt")).expect("seed"),
        "seed v1\n"
    );
    ok(a, &["rm", "--force", "hf-one"]);
    ok(a, &["daemon", "stop"]);
}

crate::rootful_and_rootless!(
    named_home_files_are_bound_at_claim_rootful,
    named_home_files_are_bound_at_claim_rootless,
    named_home_files
);

/// A named sandbox's own `--ro`/`--rw` mounts on a warm start: bound in the member at claim,
/// as its cold start binds them — read-only and writable (its `exec`s may write there: the
/// recorded plan's writable roots), the writes on the host; after `rm` no mount is left.
fn named_binds(a: &Airlock, label: &str) {
    use common::work::{give, write};
    let _guard = Guard(a, &["nb-one", "nb-two"]);
    start_pool(a, "1", &["--workspace", "none", "--net", "off"]);
    let base = a.dir.join("binds");
    write(&base.join("ro/f"), "from ro\n");
    std::fs::create_dir_all(base.join("rw")).expect("mkdir rw");
    give(a, &base);
    let ro = format!("{}:/data", base.join("ro").display());
    let rw = format!("{}:/out", base.join("rw").display());
    ok(
        a,
        &[
            "create",
            "--workspace",
            "none",
            "--net",
            "off",
            "--ro",
            &ro,
            "--rw",
            &rw,
            "nb-one",
        ],
    );
    let out = ok(a, &["start", "nb-one"]);
    warm_member(a, "nb-one", &out, label);
    let out = ok(
        a,
        &[
            "exec",
            "nb-one",
            "--",
            "sh",
            "-c",
            "cat /data/f; echo x > /data/new 2>/dev/null || echo data-readonly; \
             echo written > /out/w && echo out-written",
        ],
    );
    assert_eq!(
        out.stdout,
        "from ro\ndata-readonly\nout-written\n",
        "{label}: {}",
        out.describe()
    );
    assert_eq!(
        std::fs::read_to_string(base.join("rw/w")).ok().as_deref(),
        Some("written\n"),
        "{label}"
    );
    ok(a, &["rm", "--force", "nb-one"]);
    // Its source swapped for a symlink to airlock's state after `create` checked it: the warm
    // start is refused (a cold one would bind what the link names), nothing of the state is
    // ever mounted.
    wait_ready(a, 1, label);
    let src = base.join("swapped");
    std::fs::create_dir_all(&src).expect("mkdir swapped");
    give(a, &base);
    let swapped = format!("{}:/out", src.display());
    ok(
        a,
        &[
            "create",
            "--workspace",
            "none",
            "--net",
            "off",
            "--rw",
            &swapped,
            "nb-two",
        ],
    );
    std::fs::remove_dir(&src).expect("rmdir");
    std::os::unix::fs::symlink(a.state_dir(), &src).expect("symlink");
    let out = a.run(&["start", "nb-two"]);
    assert_ne!(out.code(), 0, "{label}: {}", out.describe());
    let console = std::fs::read_to_string(a.state_dir().join("sandboxes/nb-two/console.log"))
        .unwrap_or_default();
    assert!(
        format!("{}{console}", out.stderr).contains("changed since it was checked"),
        "{label}: {}\nconsole: {console}",
        out.describe()
    );
    let left = mounts_under(a.dir.path());
    assert!(left.is_empty(), "{label}: mounts left: {left:?}");
    ok(a, &["rm", "--force", "nb-two"]);
    ok(a, &["daemon", "stop"]);
    let left = mounts_under(a.dir.path());
    assert!(left.is_empty(), "{label}: mounts left: {left:?}");
}

crate::rootful_and_rootless!(
    named_binds_are_bound_at_claim_rootful,
    named_binds_are_bound_at_claim_rootless,
    named_binds
);

// ---------------------------------------------------------------------------------------------
// Overlay workspaces

/// A named sandbox with an overlay workspace outside a repository claims a member: the
/// overlay is attached at claim with its upper layer on disk in the sandbox's folder, so its
/// changes stay across stop and start (warm again, another member) and the project on the
/// host is never written.
fn named_overlay(a: &Airlock, label: &str) {
    use common::work::{give, write};
    let _guard = Guard(a, &["ov-one"]);
    let p = a.cwd.clone();
    write(&p.join("README"), "hello from the project\n");
    give(a, &p);
    start_pool(a, "1", &["--workspace", "overlay", "--net", "off"]);
    ok(
        a,
        &["create", "--workspace", "overlay", "--net", "off", "ov-one"],
    );
    let out = ok(a, &["start", "ov-one"]);
    let m1 = warm_member(a, "ov-one", &out, label);
    let out = ok(
        a,
        &[
            "exec",
            "ov-one",
            "--",
            "sh",
            "-c",
            "cd /workspace && cat README && echo new > added.txt && echo more >> README \
             && stat -c %U added.txt",
        ],
    );
    assert_eq!(
        out.stdout,
        "hello from the project\nagent\n",
        "{label}: {}",
        out.describe()
    );
    let upper = a.state_dir().join("sandboxes/ov-one/upper");
    assert!(
        upper.join("added.txt").is_file(),
        "{label}: not on disk in {}",
        upper.display()
    );
    ok(a, &["stop", "ov-one"]);
    wait_ready(a, 1, label);
    let out = ok(a, &["start", "ov-one"]);
    let m2 = warm_member(a, "ov-one", &out, label);
    assert_ne!(m1, m2, "{label}");
    let out = ok(
        a,
        &[
            "exec",
            "ov-one",
            "--",
            "sh",
            "-c",
            "cd /workspace && cat added.txt README",
        ],
    );
    assert_eq!(
        out.stdout,
        "new\nhello from the project\nmore\n",
        "{label}: {}",
        out.describe()
    );
    assert!(
        !p.join("added.txt").exists(),
        "{label}: the overlay wrote the host"
    );
    assert_eq!(
        std::fs::read_to_string(p.join("README")).expect("README"),
        "hello from the project\n"
    );
    ok(a, &["rm", "--force", "ov-one"]);
    ok(a, &["daemon", "stop"]);
    let mounts = mounts_under(&a.state_dir());
    assert!(mounts.is_empty(), "{label}: mounts left: {mounts:?}");
}

crate::rootful_and_rootless!(
    named_overlay_workspaces_are_attached_at_claim_rootful,
    named_overlay_workspaces_are_attached_at_claim_rootless,
    named_overlay
);

// ---------------------------------------------------------------------------------------------
// Agent starts

/// The scripted harness (as in tests/agent.rs): edits and commits, or asks for a domain.
const AGENT: &str = r#"#!/bin/sh
word=${AIRLOCK_PROMPT%% *}
case "$word" in
  edit)
    report working "editing"
    echo "edited in turn $AIRLOCK_TURN_ID" >> notes.txt
    git add notes.txt && git -c user.email=agent@example.com -c user.name=agent commit -qm notes || exit 1
    report done "committed on $(hostname) token=$(cat /run/secrets/TOKEN 2>/dev/null)"
    ;;
  net)
    curl -sS -m 10 -o /dev/null https://example.org/ 2>&1 || true
    report blocked "I need example.org"
    ;;
esac
"#;

fn agent_project(a: &Airlock) {
    use common::work::{git, give, write};
    let p = a.cwd.clone();
    write(&p.join("README"), "project\n");
    write(&p.join("agent.sh"), AGENT);
    common::set_mode(&p.join("agent.sh"), 0o755);
    write(
        &p.join("airlock.toml"),
        "[agent]\nharness = { command = [\"/workspace/agent.sh\"] }\ngrace = \"3s\"\n",
    );
    git(a, &["init", "-q", "-b", "main"]);
    git(a, &["config", "user.name", "Host User"]);
    git(a, &["config", "user.email", "host@example.invalid"]);
    git(a, &["add", "."]);
    git(a, &["commit", "-q", "-m", "initial"]);
    give(a, &p);
}

/// `up NAME --prompt …` of an agent sandbox claims a warm member: the turn runs in it (the
/// sandbox's own name and secret), a denial becomes a `blocked` event naming this sandbox,
/// and the agent's host ends with the sandbox.
fn agent_from_the_pool(a: &Airlock, label: &str) {
    let _guard = Guard(a, &["wn-agent"]);
    agent_project(a);
    start_pool(a, "1", &["--workspace", "overlay"]);
    let out = a.run_with_env(
        &[("TOKEN_SRC", "agent-token")],
        &[
            "up",
            "wn-agent",
            "--secret",
            "TOKEN=env:TOKEN_SRC",
            "--prompt",
            "edit the notes",
        ],
    );
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    warm_member(a, "wn-agent", &out, label);
    let reports = ok(a, &["reports", "wn-agent"]).stdout;
    assert!(
        reports.contains("done: committed on wn-agent token=agent-token"),
        "{label}: {reports}"
    );
    // A turn that ends blocked: prompt's own exit status for it (as after a cold start).
    // The denial reaches the journal from the member's egress log (read every 20 ms), so
    // it may land just after the turn's end.
    let out = a.run(&["prompt", "wn-agent", "net please"]);
    let blocked = |r: &str| {
        r.contains("blocked (network): example.org:443")
            && r.contains("airlock allow wn-agent example.org:443")
    };
    let mut reports = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            reports = ok(a, &["reports", "wn-agent"]).stdout;
            blocked(&reports)
        }),
        "{label}: {reports}\n{}",
        out.describe()
    );
    let hosts = || {
        pids_with_marker(
            &a.state_dir()
                .join("sandboxes/wn-agent")
                .display()
                .to_string(),
        )
    };
    assert!(!hosts().is_empty(), "{label}: no agent host");
    ok(a, &["stop", "wn-agent"]);
    assert!(
        wait_until(Duration::from_secs(5), || hosts().is_empty()),
        "{label}: the agent's host outlived its sandbox: {:?}",
        hosts()
    );
    ok(a, &["rm", "wn-agent"]);
}

crate::rootful_and_rootless!(
    agent_starts_claim_warm_members_rootful,
    agent_starts_claim_warm_members_rootless,
    agent_from_the_pool
);

/// `[daemon.agents.command] min_warm = 1` (a project setting, trusted): the first agent start
/// makes that agent's pool (cold, said so) and starts the daemon; `daemon status` shows it as
/// the agent's; the next agent start is warm.
fn agent_min_warm(a: &Airlock, label: &str) {
    let _guard = Guard(a, &["wn-mw-one", "wn-mw-two"]);
    agent_project(a);
    let toml = a.cwd.join("airlock.toml");
    let text = std::fs::read_to_string(&toml).expect("airlock.toml");
    common::work::write(
        &toml,
        &format!("{text}\n[daemon.agents.command]\nmin_warm = 1\n"),
    );
    // Untrusted, it widens the policy: refused, as `[pool] size` is.
    let out = a.run(&["up", "wn-mw-one"]);
    assert_eq!(out.code(), 121, "{label}: {}", out.describe());
    assert!(
        out.stderr
            .contains("keeps 1 command agent sandboxes started in the background"),
        "{label}: {}",
        out.describe()
    );
    ok(a, &["trust", &a.cwd.display().to_string()]);
    let out = ok(a, &["up", "wn-mw-one", "--prompt", "edit the notes"]);
    assert!(
        out.stderr.contains("wn-mw-one: cold start (warm pool ")
            && out.stderr.contains("[daemon.agents.command] min_warm = 1"),
        "{label}: {}",
        out.describe()
    );
    assert!(
        wait_until(Duration::from_secs(60), || pool0(a)["ready"] == 1),
        "{label}: {}",
        pool0(a)
    );
    assert_eq!(pool0(a)["agent"], "command", "{label}: {}", pool0(a));
    assert_eq!(pool0(a)["size"], 1, "{label}: {}", pool0(a));
    let text = ok(a, &["daemon", "status"]).stdout;
    assert!(text.contains("agent command"), "{label}: {text}");
    let out = ok(a, &["up", "wn-mw-two", "--prompt", "edit the notes"]);
    warm_member(a, "wn-mw-two", &out, label);
    let reports = ok(a, &["reports", "wn-mw-two"]).stdout;
    assert!(
        reports.contains("done: committed on wn-mw-two"),
        "{label}: {reports}"
    );
}

crate::rootful_and_rootless!(
    per_agent_min_warm_keeps_a_pool_rootful,
    per_agent_min_warm_keeps_a_pool_rootless,
    agent_min_warm
);
