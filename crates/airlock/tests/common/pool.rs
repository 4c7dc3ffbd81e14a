//! Helpers of the warm-pool tests (container and microVM pools): the daemon's records, its
//! pid, killing it, and which member a run claimed.

use super::{wait_until, Airlock, Outcome};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn members_dir(a: &Airlock) -> PathBuf {
    a.state_dir().join("pool/members")
}

pub fn daemon_pid(a: &Airlock) -> Option<i32> {
    std::fs::read_to_string(a.state_dir().join("pool/daemon.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p| Path::new(&format!("/proc/{p}")).exists())
}

pub fn kill_daemon(a: &Airlock) {
    if let Some(pid) = daemon_pid(a) {
        // SAFETY: kill(2) on this test's daemon.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_until(Duration::from_secs(5), || {
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z"))
        });
    }
}

/// `daemon start --size SIZE --wait POLICY…`, which must succeed: a pool of SIZE members
/// made as `run POLICY…` makes them, full on return.
pub fn start_pool(a: &Airlock, size: &str, policy: &[&str]) -> Outcome {
    let mut args = vec!["daemon", "start", "--size", size, "--wait"];
    args.extend_from_slice(policy);
    let out = a.run(&args);
    assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
    out
}

/// The member a run claimed, from its `warm start (pool KEY, NAME, …)` line.
pub fn claimed(out: &Outcome) -> Option<String> {
    let line = out.stderr.lines().find(|l| l.contains("warm start"))?;
    line.split(", ").nth(1).map(str::to_string)
}

/// Every member name the daemon started (its log).
pub fn members_ever(a: &Airlock) -> BTreeSet<String> {
    let log = std::fs::read_to_string(a.state_dir().join("pool/daemon.log")).unwrap_or_default();
    log.lines()
        .filter_map(|l| l.strip_suffix(" ready"))
        .filter_map(|l| l.rsplit(' ').next())
        .map(str::to_string)
        .collect()
}

/// A small git project in the test's working directory (the user's, for rootless runs).
pub fn git_project(a: &Airlock) -> PathBuf {
    use super::work::{git, give, write};
    let p = a.cwd.clone();
    git(a, &["init", "-q", "-b", "main"]);
    git(a, &["config", "user.name", "Host User"]);
    git(a, &["config", "user.email", "host@example.invalid"]);
    write(&p.join("README"), "hello from the project\n");
    git(a, &["add", "."]);
    git(a, &["commit", "-q", "-m", "initial"]);
    give(a, &p);
    p
}

/// The warm pool's marker files (`STATE/pool/ready/KEY/NAME`, `STATE/pool/claimed/NAME@…`).
pub fn marker_files(a: &Airlock) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    for d in ["ready", "claimed"] {
        walk(&a.state_dir().join("pool").join(d), &mut out);
    }
    out
}
