//! The persistent-sandbox building blocks (issue 3, in progress): a supervisor process keeps a
//! sandbox's PID 1 alive, commands are exec'd into it directly (no daemon on the path), its
//! workspace changes survive stop/start, and stopping leaves no process behind. Driven through
//! the internal `__supervise` / `__exec` entry points until the engine and its CLI land.

mod common;

use common::{e2e, wait_until, Airlock};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

/// A supervisor that is killed however the test ends.
struct Sup(Option<Child>);

impl Drop for Sup {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn supervise(a: &Airlock, dir: &Path, name: &str) -> Sup {
    let d = dir.display().to_string();
    let mut cmd = a.command(&["__supervise", "--dir", &d, "--name", name, "--net", "off"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let sup = Sup(Some(cmd.spawn().expect("start the supervisor")));
    assert!(
        wait_until(Duration::from_secs(20), || dir.join("pid1").exists()),
        "the sandbox did not come up"
    );
    sup
}

fn stop(mut sup: Sup) {
    let mut child = sup.0.take().expect("a running supervisor");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = child.wait().expect("wait for the supervisor");
    assert!(status.success() || status.code().is_some(), "{status}");
}

fn exec(a: &Airlock, dir: &Path, cmd: &[&str]) -> common::Outcome {
    let d = dir.display().to_string();
    let mut args = vec!["__exec", "--dir", d.as_str(), "--"];
    args.extend_from_slice(cmd);
    a.run(&args)
}

fn lifecycle(a: &Airlock, label: &str) {
    let dir = a.dir.join("sandboxes/keep");
    let marker = format!(
        "sleep 41.{}",
        common::random_hex()
            .chars()
            .filter(|c| c.is_ascii_digit())
            .take(4)
            .collect::<String>()
    );
    let sup = supervise(a, &dir, "keep");
    let out = exec(
        a,
        &dir,
        &["sh", "-c", "id -u; hostname; echo kept > /workspace/state"],
    );
    assert_eq!(out.stdout, "1000\nkeep\n", "{label}: {}", out.describe());
    let out = exec(a, &dir, &["sh", "-c", "exit 9"]);
    assert_eq!(out.code(), 9, "{label}: {}", out.describe());
    // A background process left by an exec is reaped by the sandbox's PID 1 and dies at stop.
    let out = exec(
        a,
        &dir,
        &["sh", "-c", &format!("({marker} >/dev/null 2>&1 &) ; true")],
    );
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    assert!(
        !common::pids_with_marker(&marker).is_empty(),
        "{label}: background process missing"
    );
    stop(sup);
    assert!(
        wait_until(Duration::from_secs(10), || common::pids_with_marker(
            &marker
        )
        .is_empty()),
        "{label}: a process outlived stop"
    );
    assert!(!dir.join("pid1").exists(), "{label}: pid1 left behind");
    // Stopped: exec is refused with a clear error, nothing runs.
    let out = exec(a, &dir, &["true"]);
    assert_ne!(out.code(), 0, "{label}: {}", out.describe());
    assert!(
        out.stderr.contains("not running"),
        "{label}: {}",
        out.describe()
    );
    // Started again: the workspace change is still there; the host directory never saw it.
    let sup = supervise(a, &dir, "keep");
    let out = exec(a, &dir, &["cat", "/workspace/state"]);
    assert_eq!(out.stdout, "kept\n", "{label}: {}", out.describe());
    assert!(
        !a.cwd.join("state").exists(),
        "{label}: the host workspace was written"
    );
    stop(sup);
}

crate::rootful_and_rootless!(
    persistent_sandbox_exec_stop_start_rootful,
    persistent_sandbox_exec_stop_start_rootless,
    lifecycle
);

/// An exec'd command lives in the sandbox's own cgroup (`NAME.ID`), so the sandbox's memory and
/// pids limits hold for it too: inside its cgroup namespace it sees itself at the root, not
/// outside it (`/..`).
#[test]
fn exec_joins_the_sandboxs_cgroup() {
    if !e2e("exec_joins_the_sandboxs_cgroup") {
        return;
    }
    let a = Airlock::root();
    let dir = a.dir.join("sandboxes/cg");
    let sup = supervise(&a, &dir, "cg");
    let out = exec(&a, &dir, &["cat", "/proc/self/cgroup"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let limited: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains(":memory:") || l.contains(":pids:") || l.starts_with("0::"))
        .collect();
    assert!(!limited.is_empty(), "{}", out.describe());
    for l in &limited {
        assert!(
            l.ends_with(":/"),
            "the exec'd command is outside the sandbox's cgroup: {l}\n{}",
            out.describe()
        );
    }
    stop(sup);
}
