//! The CLI test tier: the real `airlock` binary against a real engine (auto-started over its
//! Unix socket, real SQLite) whose backend is the in-memory fake (`AIRLOCK_ENGINE_BACKEND=fake`,
//! a test-only switch read only by `engine serve`). Nothing starts a sandbox, so this tier needs
//! no root: it must pass as an ordinary user, and as root it also runs the same checks as the
//! unprivileged test user to prove it.
//!
//! Outputs are compared whole against snapshots in `tests/snapshots/cli_tier/`, with the
//! volatile parts (ids, times, pids, paths, the host-sized default memory limit) normalised.
//! `AIRLOCK_BLESS=1 cargo test -p airlock --test cli_tier` rewrites the snapshots.

mod common;
use common::work::EngineGuard;

use common::{Airlock, Bins, Outcome};
use std::path::{Path, PathBuf};

const FAKE: &[(&str, &str)] = &[("AIRLOCK_ENGINE_BACKEND", "fake")];

fn run(a: &Airlock, args: &[&str]) -> Outcome {
    a.run_with_env(FAKE, args)
}

/// Runs `args`, checks the exit code and that stderr is empty.
fn ok(a: &Airlock, args: &[&str]) -> Outcome {
    let out = run(a, args);
    assert_eq!(out.code(), 0, "airlock {args:?}: {}", out.describe());
    assert_eq!(out.stderr, "", "airlock {args:?}: {}", out.describe());
    out
}

/// Runs `args`, expects exit `code`, and returns stderr.
fn fails(a: &Airlock, args: &[&str], code: i32) -> String {
    let out = run(a, args);
    assert_eq!(out.code(), code, "airlock {args:?}: {}", out.describe());
    assert_eq!(out.stdout, "", "airlock {args:?}: {}", out.describe());
    out.stderr
}

/// What varies between runs and hosts, replaced by placeholders.
struct Volatile {
    replace: Vec<(String, String)>,
}

impl Volatile {
    fn new(a: &Airlock) -> Self {
        let mut replace = vec![
            (a.cwd.display().to_string(), "<cwd>".to_string()),
            (a.dir.path().display().to_string(), "<tmp>".to_string()),
        ];
        // Both real paths and their canonical forms (a symlinked TMPDIR).
        for (p, name) in [(&a.cwd, "<cwd>"), (&a.dir.path().to_path_buf(), "<tmp>")] {
            if let Ok(c) = std::fs::canonicalize(p) {
                replace.push((c.display().to_string(), name.to_string()));
            }
        }
        Volatile { replace }
    }

    /// Learns the id and the host-sized default memory limit from `status --json`.
    fn learn(&mut self, status_json: &str) {
        let v: serde_json::Value = serde_json::from_str(status_json).expect("status --json");
        let id = v["id"].as_str().expect("an id").to_string();
        self.replace.push((id, "<id>".to_string()));
        if v["spec"]["defaulted"]["memory"] == true {
            let mem = v["spec"]["resources"]["memory"].as_str().expect("memory");
            // Where this host cannot enforce it for this user, the default is left out and
            // status says so (checked in `lifecycle`); the snapshot is the same either way.
            self.replace.push((
                format!("memory none (the {mem} default needs a cgroup this host does not give)"),
                "memory <default>".into(),
            ));
            self.replace
                .push((format!("memory {mem}"), "memory <default>".into()));
            self.replace.push((
                format!("\"memory\": \"{mem}\""),
                "\"memory\": \"<default>\"".into(),
            ));
        }
    }

    fn apply(&self, text: &str) -> String {
        let mut s = text.to_string();
        for (from, to) in &self.replace {
            s = s.replace(from, to);
        }
        // Which limits this host can enforce for this user (cgroup delegation) varies: the
        // list is checked against the human output in `lifecycle`, not snapshotted.
        let s = s.replace(" (not enforced on this host)", "");
        // The indentation of a multi-line `"unenforced_limits": [` being folded.
        let mut folding: Option<String> = None;
        s.lines()
            .filter_map(|line| {
                let placeholder = |indent: &str, end: &str| {
                    let comma = if end.ends_with(',') { "," } else { "" };
                    format!("{indent}\"unenforced_limits\": <host>{comma}")
                };
                if let Some(indent) = &folding {
                    if line.trim_start().starts_with(']') {
                        let folded = placeholder(indent, line);
                        folding = None;
                        return Some(folded);
                    }
                    return None;
                }
                if let Some(at) = line.find("\"unenforced_limits\": [") {
                    if line.ends_with('[') {
                        folding = Some(line[..at].to_string());
                        return None;
                    }
                    return Some(placeholder(&line[..at], line));
                }
                Some(line.to_string())
            })
            .map(|line| {
                // JSON numbers that are times, pids or counters, e.g. `"created_at": 1796540170,`.
                for key in [
                    "created_at",
                    "started_at",
                    "stopped_at",
                    "supervisor_pid",
                    "uptime_secs",
                    "cpu_usec",
                ] {
                    let prefix = format!("\"{key}\": ");
                    if let Some(at) = line.find(&prefix) {
                        let rest = &line[at + prefix.len()..];
                        if rest.starts_with(|c: char| c.is_ascii_digit()) {
                            let comma = if rest.ends_with(',') { "," } else { "" };
                            return format!("{}{prefix}<{key}>{comma}", &line[..at]);
                        }
                    }
                }
                // Human `status`: `uptime:   3s`, `cpu:      1001 us`.
                for key in ["uptime:   ", "cpu:      "] {
                    if let Some(rest) = line.strip_prefix(key) {
                        if rest.starts_with(|c: char| c.is_ascii_digit()) {
                            return format!("{key}<{}>", key.trim_end().trim_end_matches(':'));
                        }
                    }
                }
                line.to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
            + if text.ends_with('\n') { "\n" } else { "" }
    }
}

fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/cli_tier")
}

/// A line diff (`-` expected, `+` actual) good enough for short outputs.
fn diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    // Longest common subsequence, then walk it.
    let mut lcs = vec![vec![0usize; a.len() + 1]; e.len() + 1];
    for i in (0..e.len()).rev() {
        for j in (0..a.len()).rev() {
            lcs[i][j] = if e[i] == a[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < e.len() || j < a.len() {
        if i < e.len() && j < a.len() && e[i] == a[j] {
            out += &format!("  {}\n", e[i]);
            (i, j) = (i + 1, j + 1);
        } else if j < a.len() && (i == e.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out += &format!("+ {}\n", a[j]);
            j += 1;
        } else {
            out += &format!("- {}\n", e[i]);
            i += 1;
        }
    }
    out
}

/// Compares `actual` (normalised) with the snapshot `name`; AIRLOCK_BLESS=1 rewrites it.
fn snapshot(name: &str, actual: &str) {
    let path = snapshot_dir().join(format!("{name}.txt"));
    if std::env::var_os("AIRLOCK_BLESS").is_some() {
        std::fs::create_dir_all(snapshot_dir()).expect("create the snapshot dir");
        std::fs::write(&path, actual).expect("write the snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}\nhint: AIRLOCK_BLESS=1 cargo test -p airlock --test cli_tier writes it",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "output differs from the snapshot {} (- expected, + actual):\n{}\
             hint: if the change is intended, AIRLOCK_BLESS=1 cargo test -p airlock --test cli_tier",
            path.display(),
            diff(&expected, actual)
        );
    }
}

/// The whole tier, for whichever user `a` runs as.
fn lifecycle(a: &Airlock) {
    let _engine = EngineGuard(a);
    let mut vol = Volatile::new(a);

    // Empty.
    snapshot("list_empty", &ok(a, &["list"]).stdout);
    snapshot("list_empty.json", &ok(a, &["list", "--json"]).stdout);

    // Create: a stopped sandbox.
    let out = ok(
        a,
        &["create", "demo", "--workspace", "none", "--net", "off"],
    );
    assert_eq!(out.stdout, "demo\n");
    let status_json = ok(a, &["status", "demo", "--json"]).stdout;
    vol.learn(&status_json);
    snapshot("status_stopped.json", &vol.apply(&status_json));
    snapshot(
        "status_stopped",
        &vol.apply(&ok(a, &["status", "demo"]).stdout),
    );
    snapshot("list_stopped", &vol.apply(&ok(a, &["list"]).stdout));
    snapshot(
        "list_stopped.json",
        &vol.apply(&ok(a, &["list", "--json"]).stdout),
    );

    // Creating the same name twice: 119 (conflict), nothing changes.
    let err = fails(
        a,
        &["create", "demo", "--workspace", "none", "--net", "off"],
        119,
    );
    snapshot("create_twice.stderr", &err);

    // Start: running, with a (fake) supervisor pid, uptime and stats. It warns about the
    // limits this host cannot enforce for this user, exactly those status lists.
    let out = run(a, &["start", "demo"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(out.stdout, "demo running\n");
    let running = ok(a, &["status", "demo", "--json"]).stdout;
    let v: serde_json::Value = serde_json::from_str(&running).expect("status --json");
    assert_eq!(v["state"], "running", "{running}");
    assert!(v["supervisor_pid"].as_i64().is_some(), "{running}");
    let unenforced = v["unenforced_limits"]
        .as_array()
        .expect("unenforced_limits");
    if unenforced.is_empty() {
        assert_eq!(out.stderr, "", "{}", out.describe());
    } else {
        assert!(
            out.stderr
                .starts_with("airlock: warning: demo: not enforced on this host: "),
            "{}",
            out.describe()
        );
    }
    let human = ok(a, &["status", "demo"]).stdout;
    let flagged = human.matches(" (not enforced on this host)").count();
    assert_eq!(flagged, unenforced.len(), "{human}\n{running}");
    snapshot("status_running.json", &vol.apply(&running));
    snapshot("status_running", &vol.apply(&human));
    snapshot("list_running", &vol.apply(&ok(a, &["list"]).stdout));

    // rm of a running one without --force: 120, and it still runs.
    let err = fails(a, &["rm", "demo"], 120);
    snapshot("rm_running.stderr", &err);
    let v: serde_json::Value =
        serde_json::from_str(&ok(a, &["status", "demo", "--json"]).stdout).expect("status --json");
    assert_eq!(v["state"], "running");

    // Stop, then stop again (already stopped: 120).
    let out = ok(a, &["stop", "demo"]);
    snapshot("stop", &out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(&ok(a, &["status", "demo", "--json"]).stdout).expect("status --json");
    assert_eq!(v["state"], "stopped");
    assert!(v["supervisor_pid"].is_null());
    snapshot("stop_stopped.stderr", &fails(a, &["stop", "demo"], 120));

    // rm: gone from list and status.
    snapshot("rm", &ok(a, &["rm", "demo"]).stdout);
    snapshot("list_after_rm", &ok(a, &["list"]).stdout);
    assert_eq!(ok(a, &["list", "--json"]).stdout.trim(), "[]");

    // Unknown names: 122 with the hint line.
    let err = fails(a, &["status", "nosuch"], 122);
    assert!(
        err.lines().any(|l| l.starts_with("hint: ")),
        "no hint line: {err}"
    );
    snapshot("status_nosuch.stderr", &err);
    snapshot(
        "status_nosuch_json.stderr",
        &fails(a, &["status", "nosuch", "--json"], 122),
    );
    snapshot("rm_nosuch.stderr", &fails(a, &["rm", "nosuch"], 122));
    snapshot("start_nosuch.stderr", &fails(a, &["start", "nosuch"], 122));
}

/// As whoever runs the tests (an ordinary user, or root in CI). Never gated on root.
#[test]
fn cli_tier_as_current_user() {
    lifecycle(&Airlock::root());
}

/// As root, the same checks as the unprivileged test user: the tier needs no privilege.
/// (As an ordinary user, `cli_tier_as_current_user` already is that proof.)
#[test]
fn cli_tier_as_unprivileged_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("note: not root; cli_tier_as_current_user runs the tier unprivileged");
        return;
    }
    let bins = Bins::owned_by(&common::test_user());
    let a = Airlock::rootless(&bins);
    lifecycle(&a);
}

/// The switch takes `fake` (or `real`) only: anything else stops the engine from starting,
/// with a hint, and nothing is created.
#[test]
fn engine_backend_switch_refuses_unknown_values() {
    let a = Airlock::root();
    let _engine = EngineGuard(&a);
    let out = a.run_with_env(
        &[("AIRLOCK_ENGINE_BACKEND", "bogus")],
        &["create", "demo", "--workspace", "none", "--net", "off"],
    );
    assert_ne!(out.code(), 0, "{}", out.describe());
    assert!(
        out.stderr
            .contains("AIRLOCK_ENGINE_BACKEND=bogus: unknown engine backend"),
        "{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("hint: unset AIRLOCK_ENGINE_BACKEND"),
        "{}",
        out.describe()
    );
    assert_eq!(ok(&a, &["list"]).stdout, "no sandboxes\n");
}
