//! Helpers of the workspace and way-back tests: the engine guard, rootful-then-rootless runs,
//! asserting commands, host git as the test's user, writing files and handing them over.

use super::{run_with_deadline, stop_engines_of, Airlock, Bins, Outcome, DEADLINE};
use std::path::Path;

/// Stops the engine a test's commands auto-started, even when the test fails; a failing test's
/// supervisors (and anything else started with its state directory on the command line) are
/// killed too, so one failure does not leave sandboxes running into the next tests.
pub struct EngineGuard<'a>(pub &'a Airlock);

impl Drop for EngineGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            kill_leftovers(self.0);
        }
        stop_engines_of(self.0);
    }
}

/// SIGKILL every process whose command line names this test's directory (supervisors are
/// `__supervise --dir DIR/…`; their sandboxes die with them).
pub fn kill_leftovers(a: &Airlock) {
    for pid in super::pids_with_marker(&a.dir.path().display().to_string()) {
        // SAFETY: kill(2) on a pid whose command line carries this test's unique directory.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Run `f` as root, then as the unprivileged test user (rootless).
pub fn both_modes(f: impl Fn(&Airlock, &str)) {
    f(&Airlock::root(), "rootful");
    let user = super::test_user();
    let bins = Bins::owned_by(&user);
    f(&Airlock::rootless(&bins), "rootless");
}

/// Run airlock and assert it exits 0.
pub fn ok(a: &Airlock, label: &str, args: &[&str]) -> Outcome {
    let out = a.run(args);
    assert_eq!(out.code(), 0, "{label}: {args:?}: {}", out.describe());
    out
}

/// git on the host, as the test's airlock user, in its working directory; must succeed.
pub fn git(a: &Airlock, args: &[&str]) -> String {
    let out = run_with_deadline(a.command_with("git", args), None, DEADLINE);
    assert_eq!(out.code(), 0, "git {args:?}: {}", out.describe());
    out.stdout
}

/// Write a file, making its folders.
pub fn write(p: &Path, s: &str) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(p, s).expect("write");
}

/// Hand a tree to the test's airlock user (rootless runs); root keeps it otherwise.
pub fn give(a: &Airlock, p: &Path) {
    if let Some(u) = &a.user {
        let st = std::process::Command::new("chown")
            .args(["-R", &format!("{}:{}", u.uid, u.gid)])
            .arg(p)
            .status()
            .expect("chown");
        assert!(st.success(), "chown {}", p.display());
    }
}
