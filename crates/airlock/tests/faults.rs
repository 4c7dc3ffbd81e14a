//! Fault injection for named sandboxes: 60 rounds of a lifecycle operation with the engine or a
//! supervisor SIGKILLed at a random moment, each followed by the next command (which restarts and
//! reconciles the engine) and a check that the store matches reality: every `running` sandbox has
//! a live supervisor and answers exec, nothing else has one, no sandbox process is orphaned, and
//! every folder belongs to a record. At the end everything is removed and nothing is left.

mod common;

use common::{e2e, stop_engines_of, Airlock};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// xorshift: reproducible "random" choices (the seed is printed).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Processes whose environment or command line names this test's state dir, by role.
fn processes(a: &Airlock, what: &str) -> Vec<i32> {
    let needle = a.dir.path().display().to_string();
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd =
            String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default())
                .replace('\0', " ");
        let env =
            String::from_utf8_lossy(&std::fs::read(e.path().join("environ")).unwrap_or_default())
                .into_owned();
        if (cmd.contains(&needle) || env.contains(&needle)) && cmd.contains(what) {
            out.push(pid);
        }
    }
    out
}

fn kill(pid: i32) {
    // SAFETY: kill(2) on a pid identified as one of this test's processes.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // kill(2) returns before the process is gone: until it has exited (gone, or a zombie),
    // it still holds its files and locks, and the check below would race with its death.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return,
            Ok(stat) => {
                let state = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next());
                if matches!(state, Some("Z" | "X")) {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn check(a: &Airlock, round: usize) {
    let out = a.run(&["list", "--json"]);
    assert_eq!(out.code(), 0, "round {round}: list: {}", out.describe());
    let list: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).expect("list --json");
    let dir = a.state_dir().join("sandboxes");
    for rec in &list {
        let name = rec["name"].as_str().expect("name");
        let state = rec["state"].as_str().expect("state");
        let sdir = dir.join(name);
        assert!(sdir.is_dir(), "round {round}: {name} has no folder");
        let live = airlock_running(&sdir);
        match state {
            "running" => {
                assert!(
                    live,
                    "round {round}: {name} is `running` without a supervisor"
                );
                let out = a.run(&["exec", name, "--", "true"]);
                assert_eq!(
                    out.code(),
                    0,
                    "round {round}: exec into {name}: {}",
                    out.describe()
                );
            }
            "stopped" | "failed" => {
                assert!(!live, "round {round}: {name} is `{state}` but still runs")
            }
            other => panic!("round {round}: {name} left in transitional state `{other}`"),
        }
    }
    // Every folder belongs to a record; every supervisor to a listed sandbox.
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(
            list.iter().any(|r| r["name"] == n.as_str()),
            "round {round}: folder {n} without a record"
        );
    }
    for pid in processes(a, "__supervise") {
        let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            list.iter().any(|r| cmd.contains(&format!(
                "sandboxes/{}\0",
                r["name"].as_str().unwrap_or("?")
            ))),
            "round {round}: stray supervisor {pid}: {cmd:?}"
        );
    }
}

fn airlock_running(dir: &Path) -> bool {
    // The supervisor holds DIR/lock while it lives.
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .open(dir.join("lock"))
    else {
        return false;
    };
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
}

#[test]
fn sigkill_engine_or_supervisor_at_random_points() {
    if !e2e("sigkill_engine_or_supervisor_at_random_points") {
        return;
    }
    let a = Airlock::root();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let names = ["f0", "f1", "f2"];
    for round in 0..60 {
        let name = names[rng.below(3) as usize];
        let op: Vec<&str> = match rng.below(5) {
            0 => vec!["create", name, "--net", "off", "--workspace", "none"],
            1 => vec!["start", name],
            2 => vec!["exec", name, "--", "true"],
            3 => vec!["stop", name, "--grace", "1s"],
            _ => vec!["rm", "--force", name],
        };
        let mut cmd = a.command(&op);
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawn airlock");
        std::thread::sleep(Duration::from_millis(rng.below(30)));
        let victims = if rng.below(2) == 0 {
            processes(&a, "engine serve")
        } else {
            processes(&a, "__supervise")
        };
        if let Some(v) = victims.get(rng.below(victims.len().max(1) as u64) as usize) {
            kill(*v);
        }
        let _ = child.wait();
        check(&a, round);
    }
    for n in names {
        let _ = a.run(&["rm", "--force", n]);
    }
    let out = a.run(&["list", "--json"]);
    assert_eq!(out.stdout.trim(), "[]", "{}", out.describe());
    assert!(processes(&a, "__supervise").is_empty(), "supervisors left");
    stop_engines_of(&a);
}

/// An engine whose socket is gone (its runtime folder removed: a logout, a test's temporary
/// folder) stops by itself, instead of running on forever where no client can reach it; the
/// next command starts a new one, which serves the same records.
#[test]
fn an_engine_whose_socket_is_gone_stops() {
    if !e2e("an_engine_whose_socket_is_gone_stops") {
        return;
    }
    let a = Airlock::root();
    let out = a.run(&["create", "sockgone", "--net", "off", "--workspace", "none"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let engines = processes(&a, "engine serve");
    assert_eq!(engines.len(), 1, "one engine serves: {engines:?}");
    let runtime = a.dir.join("runtime/airlock");
    let socket = std::fs::read_dir(&runtime)
        .expect("runtime dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sock"))
        .expect("the engine's socket");
    std::fs::remove_file(&socket).expect("rm socket");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{}", engines[0])).exists()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let gone = !std::path::Path::new(&format!("/proc/{}/cmdline", engines[0])).exists()
        || std::fs::read(format!("/proc/{}/cmdline", engines[0])).is_ok_and(|c| c.is_empty());
    if !gone {
        kill(engines[0]);
    }
    assert!(gone, "the engine runs on without its socket");
    // A new engine, the same records.
    let out = a.run(&["list", "--json"]);
    assert!(out.stdout.contains("sockgone"), "{}", out.describe());
    let _ = a.run(&["rm", "--force", "sockgone"]);
    stop_engines_of(&a);
}
