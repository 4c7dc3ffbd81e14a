//! Named sandboxes say what they do: `exec -w` resolves like `run -w`, `up` on an existing
//! sandbox never drops options silently, limits a host cannot enforce are said (and refused with
//! --require-limits), and `status` shows resource use it can read, "n/a" otherwise.
//!
//! Needs root (CI is root): see `common::e2e`.

mod common;

use common::{e2e, stop_engines_of, Airlock, Bins};

/// Stops the test's engine however the test ends.
struct EngineGuard<'a>(&'a Airlock);

impl Drop for EngineGuard<'_> {
    fn drop(&mut self) {
        stop_engines_of(self.0);
    }
}

fn ok(a: &Airlock, args: &[&str]) -> common::Outcome {
    let out = a.run(args);
    assert_eq!(out.code(), 0, "airlock {args:?}: {}", out.describe());
    out
}

#[test]
fn exec_workdirs_are_under_the_workspace_as_for_run() {
    if !e2e("exec_workdirs_are_under_the_workspace_as_for_run") {
        return;
    }
    let a = Airlock::root();
    let _guard = EngineGuard(&a);
    std::fs::create_dir_all(a.cwd.join("src/deep")).expect("mkdir");
    ok(&a, &["create", "box", "--net", "off"]);
    ok(&a, &["start", "box"]);
    for (w, want) in [
        ("src", "/workspace/src"),
        (".", "/workspace"),
        ("src/deep/..", "/workspace/src"),
        ("/tmp", "/tmp"),
    ] {
        let out = ok(&a, &["exec", "-w", w, "box", "--", "pwd"]);
        assert_eq!(out.stdout.trim(), want, "exec -w {w}");
        let out = ok(&a, &["run", "--net", "off", "-w", w, "--", "pwd"]);
        assert_eq!(out.stdout.trim(), want, "run -w {w}");
    }
    for w in ["../../etc", "..", "src/../../etc"] {
        for args in [
            &["exec", "-w", w, "box", "--", "pwd"][..],
            &["run", "--net", "off", "-w", w, "--", "pwd"][..],
        ] {
            let out = a.run(args);
            assert_eq!(out.code(), 2, "{args:?}: {}", out.describe());
            assert!(out.stdout.is_empty(), "{args:?}: {}", out.describe());
            assert!(out.stderr.contains("leaves it"), "{}", out.describe());
            assert!(out.stderr.contains("hint: "), "{}", out.describe());
        }
    }
    ok(&a, &["rm", "--force", "box"]);
}
