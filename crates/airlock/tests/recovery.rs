//! Lifecycle faults (issue 12): sandboxes of different state directories never touch each other
//! even with the same name (cgroups and the engine socket are per sandbox id / per state dir),
//! and a named sandbox whose supervisor was SIGKILLed at any moment starts again with its
//! workspace, while `gc` leaves none of its cgroups behind.

mod common;

use common::{cgroups_named, e2e, Airlock, Bins};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Kill every engine whose environment names `runtime` as its runtime dir.
fn stop_engines_at(runtime: &Path) {
    let marker = format!("AIRLOCK_RUNTIME_DIR={}", runtime.display());
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains("engine\0serve") {
            continue;
        }
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) {
            // SAFETY: kill(2) on a pid we just identified as this test's engine.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// One airlock environment whose engine socket may live in a runtime dir shared with another.
struct Env {
    a: Airlock,
    runtime: PathBuf,
}

impl Env {
    fn run(&self, args: &[&str]) -> common::Outcome {
        let mut cmd = self.a.command(args);
        cmd.env("AIRLOCK_RUNTIME_DIR", &self.runtime);
        common::run_with_deadline(cmd, None, common::DEADLINE)
    }

    fn ok(&self, args: &[&str]) -> common::Outcome {
        let out = self.run(args);
        assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        stop_engines_at(&self.runtime);
    }
}

#[test]
fn same_name_in_two_state_dirs_stays_apart() {
    if !e2e("same_name_in_two_state_dirs_stays_apart") {
        return;
    }
    // Separate runtime dirs (only the state dir differs), and one runtime dir shared by both,
    // as when a user sets AIRLOCK_STATE_DIR alone.
    for shared in [false, true] {
        let (a1, a2) = (Airlock::root(), Airlock::root());
        let own = |a: &Airlock| a.dir.join("runtime/airlock");
        let shared_rt = a1.dir.join("shared-runtime");
        let (rt1, rt2) = if shared {
            (shared_rt.clone(), shared_rt)
        } else {
            (own(&a1), own(&a2))
        };
        let e1 = Env {
            a: a1,
            runtime: rt1,
        };
        let e2 = Env {
            a: a2,
            runtime: rt2,
        };
        let name = format!("twin-{}", &common::random_hex()[..8]);
        for e in [&e1, &e2] {
            e.ok(&[
                "create",
                &name,
                "--net",
                "off",
                "--workspace",
                "none",
                "--memory",
                "256M",
                "--pids",
                "128",
            ]);
            e.ok(&["start", &name]);
            e.ok(&["exec", &name, "--", "true"]);
        }
        e1.ok(&["rm", "--force", &name]);
        let out = e2.run(&["exec", &name, "--", "echo", "still-here"]);
        assert_eq!(
            (out.code(), out.stdout.trim()),
            (0, "still-here"),
            "shared runtime dir {shared}: the other state dir's sandbox must keep running: {}",
            out.describe()
        );
        let st = e2.ok(&["status", &name, "--json"]);
        let st: serde_json::Value = serde_json::from_str(&st.stdout).expect("status json");
        assert_eq!(st["state"], "running", "{st}");
        e2.ok(&["rm", "--force", &name]);
        assert!(
            cgroups_named(&name).is_empty(),
            "cgroups left: {:?}",
            cgroups_named(&name)
        );
    }
}

/// xorshift, seeded from the clock (printed).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn state_of(e: &Env, name: &str) -> String {
    let out = e.ok(&["status", name, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("status json");
    v["state"].as_str().unwrap_or("?").to_string()
}

fn kill_supervisor(dir: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(dir.join("supervisor.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return false;
    };
    // SAFETY: kill(2) on the pid this test's supervisor published.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return false;
    }
    // Dead once its lock is free.
    let free = common::wait_until(Duration::from_secs(10), || {
        std::fs::OpenOptions::new()
            .read(true)
            .open(dir.join("lock"))
            .is_ok_and(|f| {
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok()
            })
    });
    assert!(free, "supervisor {pid} survived SIGKILL");
    true
}

fn sigkill_trials(a: Airlock, trials: usize, label: &str) {
    let runtime = a.dir.join("runtime/airlock");
    let e = Env { a, runtime };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    println!("{label}: seed {seed}");
    let mut rng = Rng(seed);
    let name = format!("kill9-{}", &common::random_hex()[..8]);
    let dir = e.a.state_dir().join("sandboxes").join(&name);
    e.ok(&[
        "create",
        &name,
        "--net",
        "off",
        "--workspace",
        "overlay",
        "--memory",
        "256M",
        "--pids",
        "128",
    ]);
    let mut written = Vec::new();
    for i in 0..trials {
        if state_of(&e, &name) != "running" {
            let out = e.run(&["start", &name]);
            assert_eq!(
                out.code(),
                0,
                "{label}: trial {i}: start after a SIGKILLed supervisor: {}",
                out.describe()
            );
        }
        let line = format!("trial-{i}");
        let out = e.run(&[
            "exec",
            &name,
            "--",
            "sh",
            "-c",
            &format!("echo {line} >> /workspace/log"),
        ]);
        assert_eq!(out.code(), 0, "{label}: trial {i}: {}", out.describe());
        written.push(line);
        match i % 3 {
            // Idle.
            0 => {
                assert!(kill_supervisor(&dir), "{label}: trial {i}: no supervisor");
            }
            // While a command runs inside.
            1 => {
                let mut child = e.a.command(&["exec", &name, "--", "sleep", "5"]);
                child
                    .env("AIRLOCK_RUNTIME_DIR", &e.runtime)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                let mut child = child.spawn().expect("spawn exec");
                std::thread::sleep(Duration::from_millis(50 + rng.below(200)));
                assert!(kill_supervisor(&dir), "{label}: trial {i}: no supervisor");
                let _ = child.wait();
            }
            // In the middle of a start.
            _ => {
                e.ok(&["stop", &name, "--grace", "1s"]);
                let mut child = e.a.command(&["start", &name]);
                child
                    .env("AIRLOCK_RUNTIME_DIR", &e.runtime)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                let mut child = child.spawn().expect("spawn start");
                let wait = Duration::from_millis(rng.below(400));
                let t0 = std::time::Instant::now();
                while t0.elapsed() < wait && !kill_supervisor(&dir) {
                    std::thread::sleep(Duration::from_millis(2));
                }
                kill_supervisor(&dir);
                let _ = child.wait();
            }
        }
        if i % 2 == 0 {
            e.ok(&["gc"]);
            if state_of(&e, &name) != "running" {
                let left = cgroups_named(&name);
                assert!(
                    left.is_empty(),
                    "{label}: trial {i}: gc left cgroups of a dead sandbox: {left:?}"
                );
            }
        }
    }
    if state_of(&e, &name) != "running" {
        e.ok(&["start", &name]);
    }
    let out = e.ok(&["exec", &name, "--", "cat", "/workspace/log"]);
    let got: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(got, written, "{label}: the workspace lost writes");
    assert!(kill_supervisor(&dir));
    e.ok(&["gc"]);
    let left = cgroups_named(&name);
    assert!(left.is_empty(), "{label}: gc left cgroups: {left:?}");
    e.ok(&["rm", "--force", &name]);
}

#[test]
fn sigkilled_supervisor_restarts_with_its_workspace_rootful() {
    if !e2e("sigkilled_supervisor_restarts_with_its_workspace_rootful") {
        return;
    }
    sigkill_trials(Airlock::root(), 21, "rootful");
}

#[test]
fn sigkilled_supervisor_restarts_with_its_workspace_rootless() {
    if !e2e("sigkilled_supervisor_restarts_with_its_workspace_rootless") {
        return;
    }
    let bins = Bins::owned_by(&common::test_user());
    sigkill_trials(Airlock::rootless(&bins), 9, "rootless");
}
