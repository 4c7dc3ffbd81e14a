//! Named sandboxes through the CLI and the auto-started engine: create, start, exec, status,
//! stop, start again (state kept), rm (refused while running), rm --force; the engine killed
//! with SIGKILL leaves running sandboxes running and the next command reconciles.

mod common;
use common::work::EngineGuard;

use common::{e2e, stop_engines_of, Airlock, Bins};

fn cli(a: &Airlock, args: &[&str]) -> common::Outcome {
    a.run(args)
}

/// Run `f` as root and as the unprivileged test user (rootless airlock).
fn both_modes(f: impl Fn(&Airlock)) {
    f(&Airlock::root());
    let user = common::test_user();
    let bins = Bins::owned_by(&user);
    f(&Airlock::rootless(&bins));
}

fn lifecycle(a: &Airlock, label: &str) {
    let _guard = EngineGuard(a);
    let ok = |args: &[&str]| {
        let out = cli(a, args);
        assert_eq!(out.code(), 0, "{label}: {args:?}: {}", out.describe());
        out
    };
    ok(&["create", "box", "--net", "off"]);
    let out = cli(a, &["create", "box"]);
    assert_eq!(
        out.code(),
        119,
        "{label}: duplicate create: {}",
        out.describe()
    );
    let out = cli(a, &["create", "Bad/Name"]);
    assert_eq!(out.code(), 2, "{label}: {}", out.describe());
    let out = cli(a, &["exec", "box", "--", "true"]);
    assert_eq!(
        out.code(),
        120,
        "{label}: exec on a stopped sandbox: {}",
        out.describe()
    );
    assert!(
        out.stderr.contains("hint: airlock start box"),
        "{label}: {}",
        out.describe()
    );
    ok(&["start", "box"]);
    let out = ok(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "id -u; echo kept > /workspace/f; echo home > ~/.h",
    ]);
    assert_eq!(out.stdout, "1000\n", "{label}");
    let out = cli(a, &["exec", "box", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.code(), 7, "{label}: {}", out.describe());
    let out = ok(&["list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("list --json");
    assert_eq!(list[0]["name"], "box", "{label}: {list}");
    assert_eq!(list[0]["state"], "running", "{label}: {list}");
    let out = ok(&["status", "box", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&out.stdout).expect("status --json");
    assert_eq!(st["state"], "running", "{label}: {st}");
    let out = cli(a, &["rm", "box"]);
    assert_eq!(
        out.code(),
        120,
        "{label}: rm of a running sandbox: {}",
        out.describe()
    );
    // The engine dies; the sandbox does not.
    stop_engines_of(a);
    let out = ok(&["exec", "box", "--", "cat", "/workspace/f"]);
    assert_eq!(out.stdout, "kept\n", "{label}");
    let out = ok(&["status", "box", "--json"]);
    assert!(
        out.stdout.contains("\"running\""),
        "{label}: reconcile after the engine died: {}",
        out.describe()
    );
    ok(&["stop", "box", "--grace", "2s"]);
    ok(&["start", "box"]);
    let out = ok(&["exec", "box", "--", "cat", "/workspace/f"]);
    assert_eq!(out.stdout, "kept\n", "{label}: state across stop/start");
    let out = ok(&["exec", "box", "--", "cat", "/home/agent/.h"]);
    assert_eq!(out.stdout, "home\n", "{label}: $HOME across stop/start");
    assert!(
        !a.cwd.join("f").exists(),
        "{label}: the host workspace was written"
    );
    ok(&["rm", "--force", "box"]);
    let out = ok(&["list", "--json"]);
    assert_eq!(out.stdout.trim(), "[]", "{label}");
    assert!(
        !a.state_dir().join("sandboxes/box").exists(),
        "{label}: folder left behind"
    );
    stop_engines_of(a);
}

crate::rootful_and_rootless!(
    named_sandbox_lifecycle_rootful,
    named_sandbox_lifecycle_rootless,
    lifecycle
);

#[test]
fn up_creates_or_starts_and_fresh_discards_state() {
    if !e2e("up_creates_or_starts_and_fresh_discards_state") {
        return;
    }
    both_modes(|a| {
        let _guard = EngineGuard(a);
        // The project directory of the test is `cwd`: the sandbox is named after it.
        let run = |args: &[&str]| {
            let out = a.run(args);
            assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
            out
        };
        run(&["up", "--net", "off"]);
        run(&["exec", "cwd", "--", "sh", "-c", "echo s > /workspace/s"]);
        run(&["up"]); // already running: nothing changes
        assert_eq!(
            run(&["exec", "cwd", "--", "cat", "/workspace/s"]).stdout,
            "s\n"
        );
        run(&["up", "--fresh", "--net", "off"]);
        let out = a.run(&["exec", "cwd", "--", "cat", "/workspace/s"]);
        assert_ne!(out.code(), 0, "--fresh kept the state: {}", out.describe());
        run(&["logs", "cwd"]);
        run(&["rm", "--force", "cwd"]);
    });
}

/// 64 sandboxes created, started, exec'd into and removed from 64 CLI processes at once.
#[test]
fn sixty_four_parallel_lifecycles() {
    if !e2e("sixty_four_parallel_lifecycles") {
        return;
    }
    let a = std::sync::Arc::new(Airlock::root());
    let _guard = EngineGuard(&a);
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let a = a.clone();
            std::thread::spawn(move || {
                let name = format!("p{i}");
                for args in [
                    vec![
                        "create",
                        name.as_str(),
                        "--net",
                        "off",
                        "--workspace",
                        "none",
                    ],
                    vec!["start", name.as_str()],
                ] {
                    let out = a.run(&args);
                    assert_eq!(out.code(), 0, "{name}: {args:?}: {}", out.describe());
                }
                let out = a.run(&["exec", &name, "--", "hostname"]);
                assert_eq!(
                    out.stdout,
                    format!("{name}\n"),
                    "{name}: {}",
                    out.describe()
                );
                let out = a.run(&["rm", "--force", &name]);
                assert_eq!(out.code(), 0, "{name}: {}", out.describe());
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a parallel lifecycle failed");
    }
    let out = a.run(&["list", "--json"]);
    assert_eq!(out.stdout.trim(), "[]", "{}", out.describe());
    let left: Vec<_> = std::fs::read_dir(a.state_dir().join("sandboxes"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "folders left: {left:?}");
    assert!(
        common::pids_with_marker(&a.dir.path().display().to_string())
            .iter()
            .all(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.contains("engine"))
            }),
        "supervisors left running"
    );
}

#[test]
fn cp_copies_in_and_out_and_never_through_host_symlinks() {
    if !e2e("cp_copies_in_and_out_and_never_through_host_symlinks") {
        return;
    }
    both_modes(|a| {
        let _guard = EngineGuard(a);
        let run = |args: &[&str]| a.run(args);
        assert_eq!(run(&["up", "cpbox", "--net", "off"]).code(), 0);
        let host = common::TempDir::new("cp");
        std::fs::write(host.join("in.txt"), "to the sandbox\n").expect("write");
        std::fs::create_dir_all(host.join("tree/sub")).expect("mkdir");
        std::fs::write(host.join("tree/sub/f"), "deep\n").expect("write");
        std::fs::create_dir(host.join("outdir")).expect("mkdir");
        std::fs::write(host.join("victim"), "keep\n").expect("write");
        std::os::unix::fs::symlink(host.join("victim"), host.join("link")).expect("symlink");
        if let Some(u) = &a.user {
            host.chown_to(u);
            common::set_mode(host.path(), 0o755);
        }
        let h = |p: &str| host.join(p).display().to_string();
        // In: a file into a directory, a directory tree.
        assert_eq!(run(&["cp", &h("in.txt"), "cpbox:/tmp/"]).code(), 0);
        assert_eq!(
            run(&["exec", "cpbox", "--", "cat", "/tmp/in.txt"]).stdout,
            "to the sandbox\n"
        );
        assert_eq!(run(&["cp", &h("tree"), "cpbox:/home/agent/"]).code(), 0);
        assert_eq!(
            run(&["exec", "cpbox", "--", "cat", "/home/agent/tree/sub/f"]).stdout,
            "deep\n"
        );
        // Out: the sandbox plants a symlink at the path and a symlink in a tree.
        let plant = "echo out > /tmp/o; ln -s /etc/hostname /tmp/l; mkdir -p /tmp/d/x; echo y > /tmp/d/x/y; ln -s /etc /tmp/d/esc";
        assert_eq!(run(&["exec", "cpbox", "--", "sh", "-c", plant]).code(), 0);
        assert_eq!(run(&["cp", "cpbox:/tmp/o", &h("o.txt")]).code(), 0);
        assert_eq!(
            std::fs::read_to_string(host.join("o.txt")).expect("copied"),
            "out\n"
        );
        // A host destination that is a symlink is refused, its target untouched.
        let out = run(&["cp", "cpbox:/tmp/o", &h("link")]);
        assert_eq!(out.code(), 2, "{}", out.describe());
        assert_eq!(
            std::fs::read_to_string(host.join("victim")).expect("victim"),
            "keep\n"
        );
        // A directory comes out as a new tree; its symlinks stay symlinks and nothing is written
        // through them.
        assert_eq!(run(&["cp", "cpbox:/tmp/d", &h("outdir")]).code(), 0);
        assert_eq!(
            std::fs::read_to_string(host.join("outdir/d/x/y")).expect("tree"),
            "y\n"
        );
        assert!(std::fs::symlink_metadata(host.join("outdir/d/esc"))
            .expect("esc")
            .file_type()
            .is_symlink());
        // Paths that do not exist inside (the curated /etc has no shadow) are not found.
        let out = run(&["cp", "cpbox:/etc/shadow", &h("shadow")]);
        assert_eq!(out.code(), 122, "{}", out.describe());
        assert!(!host.join("shadow").exists());
        // Said once: the path, then why.
        assert_eq!(
            out.stderr.matches("/etc/shadow").count(),
            1,
            "{}",
            out.describe()
        );
        // A stopped sandbox: exec's error and hint as cp's own, each said once.
        assert_eq!(run(&["stop", "cpbox"]).code(), 0);
        let out = run(&["cp", "cpbox:/tmp/o", &h("o2.txt")]);
        assert_eq!(out.code(), 120, "{}", out.describe());
        assert_eq!(
            out.stderr.matches("airlock: error:").count(),
            1,
            "{}",
            out.describe()
        );
        assert!(
            out.stderr.lines().any(|l| l == "hint: airlock start cpbox"),
            "{}",
            out.describe()
        );
        assert_eq!(run(&["rm", "--force", "cpbox"]).code(), 0);
    });
}

#[test]
fn run_keep_leaves_a_named_stopped_sandbox_with_its_changes() {
    if !e2e("run_keep_leaves_a_named_stopped_sandbox_with_its_changes") {
        return;
    }
    both_modes(|a| {
        let _guard = EngineGuard(a);
        let out = a.run(&[
            "run",
            "--keep",
            "--name",
            "kept",
            "--net",
            "off",
            "--",
            "sh",
            "-c",
            "echo k > /workspace/k; exit 4",
        ]);
        assert_eq!(out.code(), 4, "{}", out.describe());
        assert!(
            out.stderr.contains("kept as sandbox kept"),
            "{}",
            out.describe()
        );
        let list = a.run(&["list", "--json"]);
        assert!(list.stdout.contains("\"stopped\""), "{}", list.describe());
        assert_eq!(a.run(&["start", "kept"]).code(), 0);
        assert_eq!(
            a.run(&["exec", "kept", "--", "cat", "/workspace/k"]).stdout,
            "k\n"
        );
        assert!(!a.cwd.join("k").exists(), "the host workspace was written");
        assert_eq!(a.run(&["gc"]).code(), 0);
        assert_eq!(a.run(&["rm", "--force", "kept"]).code(), 0);
    });
}

#[test]
fn shell_gives_a_real_terminal_inside() {
    if !e2e("shell_gives_a_real_terminal_inside") {
        return;
    }
    both_modes(|a| {
        let _guard = EngineGuard(a);
        assert_eq!(a.run(&["up", "sh1", "--net", "off"]).code(), 0);
        let line = format!("{} shell sh1", a.exe.display());
        let cmd = a.command_with("script", &["-qec", line.as_str(), "/dev/null"]);
        let out = common::run_with_deadline(
            cmd,
            Some(b"echo pty-$((40+2)); tty; exit 5\n".to_vec()),
            common::DEADLINE,
        );
        assert!(out.stdout.contains("pty-42"), "{}", out.describe());
        assert!(
            out.stdout.contains("/dev/pts/"),
            "no terminal inside: {}",
            out.describe()
        );
        assert_eq!(out.code(), 5, "{}", out.describe());
        assert_eq!(a.run(&["rm", "--force", "sh1"]).code(), 0);
    });
}
