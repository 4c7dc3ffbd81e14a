//! End-to-end positive tests of `airlock run`: exit codes and signals, stdin, the environment
//! allowlist, users, hostname, workspace modes, descriptors, TTY, and cleanup after airlock is
//! SIGKILLed. The core cases run both rootful and rootless (as the `airlock-test` user).
//!
//! Needs root (CI is root): see `common::e2e`.

mod common;

use common::{
    e2e, mounts_under, pids_with_marker, random_hex, run_with_deadline, test_user, wait_until,
    Airlock, Bins, DEADLINE,
};
use std::process::Stdio;
use std::time::Duration;

/// Run `f` once rootful and once rootless, each with a fresh airlock environment.
fn both_modes(test: &str, f: impl Fn(&Airlock, &str)) {
    if !e2e(test) {
        return;
    }
    f(&Airlock::root(), "rootful");
    let bins = Bins::owned_by(&test_user());
    f(&Airlock::rootless(&bins), "rootless");
}

fn assert_code(a: &Airlock, mode: &str, args: &[&str], want: i32) -> common::Outcome {
    let out = a.run(args);
    assert_eq!(
        out.code(),
        want,
        "{mode}: airlock {args:?}:\n{}",
        out.describe()
    );
    out
}

#[test]
fn exit_codes_and_signals_pass_through() {
    both_modes("exit_codes_and_signals_pass_through", |a, mode| {
        assert_code(a, mode, &["run", "--", "true"], 0);
        assert_code(a, mode, &["run", "--", "false"], 1);
        assert_code(a, mode, &["run", "--", "sh", "-c", "exit 7"], 7);
        assert_code(a, mode, &["run", "--", "sh", "-c", "kill -TERM $$"], 143);
        assert_code(a, mode, &["run", "--", "sh", "-c", "kill -KILL $$"], 137);
    });
}

#[test]
fn stdout_and_stderr_are_separate_streams() {
    both_modes("stdout_and_stderr_are_separate_streams", |a, mode| {
        let out = assert_code(
            a,
            mode,
            &[
                "run",
                "--workspace",
                "none",
                "--",
                "sh",
                "-c",
                "echo to-out; echo to-err >&2",
            ],
            0,
        );
        assert_eq!(out.stdout, "to-out\n", "{mode}: {}", out.describe());
        assert!(out.stderr.contains("to-err"), "{mode}: {}", out.describe());
        assert!(!out.stdout.contains("to-err"), "{mode}: {}", out.describe());
    });
}

#[test]
fn stdin_is_forwarded_with_i() {
    both_modes("stdin_is_forwarded_with_i", |a, mode| {
        let out = a.run_stdin(&["run", "-i", "--", "cat"], b"hi\n");
        assert_eq!(out.code(), 0, "{mode}: {}", out.describe());
        assert_eq!(out.stdout, "hi\n", "{mode}: {}", out.describe());
    });
}

#[test]
fn environment_is_an_allowlist() {
    both_modes("environment_is_an_allowlist", |a, mode| {
        let host_env = [
            ("SECRET_TOKEN", "x-secret-x"),
            ("PASSED_ON", "passed-value"),
        ];
        let out = a.run_with_env(
            &host_env,
            &["run", "-e", "A=B", "--env-pass", "PASSED_ON", "--", "env"],
        );
        assert_eq!(out.code(), 0, "{mode}: {}", out.describe());
        let vars: Vec<&str> = out.stdout.lines().collect();
        assert!(
            !out.stdout.contains("SECRET_TOKEN") && !out.stdout.contains("x-secret-x"),
            "{mode}: host variable leaked:\n{}",
            out.stdout
        );
        assert!(
            vars.contains(&"A=B"),
            "{mode}: -e A=B missing:\n{}",
            out.stdout
        );
        assert!(
            vars.contains(&"PASSED_ON=passed-value"),
            "{mode}: --env-pass missing:\n{}",
            out.stdout
        );
        // The test's own state-dir variables are host variables too.
        assert!(
            !out.stdout.contains("AIRLOCK_STATE_DIR"),
            "{mode}: AIRLOCK_STATE_DIR leaked:\n{}",
            out.stdout
        );
    });
}

#[test]
fn user_ids_and_home() {
    both_modes("user_ids_and_home", |a, mode| {
        let out = assert_code(
            a,
            mode,
            &[
                "run",
                "--workspace",
                "none",
                "--",
                "sh",
                "-c",
                "id -u; id -g; echo $HOME",
            ],
            0,
        );
        assert_eq!(
            out.stdout,
            "1000\n1000\n/home/agent\n",
            "{mode}: {}",
            out.describe()
        );
        let out = assert_code(
            a,
            mode,
            &[
                "run",
                "--workspace",
                "none",
                "--user",
                "root",
                "--",
                "id",
                "-u",
            ],
            0,
        );
        assert_eq!(out.stdout.trim(), "0", "{mode}: {}", out.describe());
    });
}

#[test]
fn hostname_flag() {
    both_modes("hostname_flag", |a, mode| {
        let out = assert_code(
            a,
            mode,
            &[
                "run",
                "--workspace",
                "none",
                "--hostname",
                "e2e-host",
                "--",
                "cat",
                "/proc/sys/kernel/hostname",
            ],
            0,
        );
        assert_eq!(out.stdout.trim(), "e2e-host", "{mode}: {}", out.describe());
        let out = assert_code(
            a,
            mode,
            &[
                "run",
                "--workspace",
                "none",
                "--",
                "cat",
                "/proc/sys/kernel/hostname",
            ],
            0,
        );
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        assert_ne!(
            out.stdout.trim(),
            host.trim(),
            "{mode}: the host's hostname is visible inside"
        );
    });
}

#[test]
fn working_directory() {
    both_modes("working_directory", |a, mode| {
        let out = assert_code(a, mode, &["run", "--", "pwd"], 0);
        assert_eq!(
            out.stdout.trim(),
            "/workspace",
            "{mode}: {}",
            out.describe()
        );
        let out = assert_code(a, mode, &["run", "-w", "/tmp", "--", "pwd"], 0);
        assert_eq!(out.stdout.trim(), "/tmp", "{mode}: {}", out.describe());
    });
}

#[test]
fn overlay_workspace_leaves_the_host_untouched_and_summarises() {
    both_modes(
        "overlay_workspace_leaves_the_host_untouched_and_summarises",
        |a, mode| {
            let ws = &a.cwd;
            std::fs::write(ws.join("existing.txt"), "original\n").expect("seed");
            std::fs::write(ws.join("gone.txt"), "doomed\n").expect("seed");
            std::fs::create_dir_all(ws.join(".git/hooks")).expect("seed");
            if let Some(u) = &a.user {
                a.dir.chown_to(u);
            }
            let new_name = format!("newfile-{}.txt", random_hex());
            let script = format!(
                "echo new > {new_name} && echo changed > existing.txt && rm gone.txt && \
             {{ echo 'echo pwned' > .git/hooks/pre-commit 2>/dev/null && echo HOOK-WRITTEN; true; }} && \
             cat existing.txt"
            );
            let out = assert_code(
                a,
                mode,
                &["run", "--workspace", "overlay", "--", "sh", "-c", &script],
                0,
            );
            assert_eq!(
                out.stdout,
                "changed\n",
                "{mode}: the command saw its own writes: {}",
                out.describe()
            );
            assert!(
                !ws.join(&new_name).exists(),
                "{mode}: overlay write reached the host"
            );
            assert_eq!(
                std::fs::read_to_string(ws.join("existing.txt")).expect("host file"),
                "original\n",
                "{mode}"
            );
            assert!(
                ws.join("gone.txt").exists(),
                "{mode}: overlay delete reached the host"
            );
            assert!(
                !ws.join(".git/hooks/pre-commit").exists(),
                "{mode}: a git hook reached the host"
            );
            for needle in ["added", new_name.as_str(), "existing.txt", "gone.txt"] {
                assert!(
                    out.stderr.contains(needle),
                    "{mode}: change summary lacks {needle:?}:\n{}",
                    out.stderr
                );
            }
        },
    );
}

#[test]
fn bind_workspace_writes_reach_the_host() {
    both_modes("bind_workspace_writes_reach_the_host", |a, mode| {
        let name = format!("bound-{}.txt", random_hex());
        let cmd = format!("echo data > {name}");
        assert_code(
            a,
            mode,
            &["run", "--workspace", "bind", "--", "sh", "-c", &cmd],
            0,
        );
        assert_eq!(
            std::fs::read_to_string(a.cwd.join(&name)).unwrap_or_default(),
            "data\n",
            "{mode}"
        );
    });
}

#[test]
fn no_workspace_means_no_workspace() {
    both_modes("no_workspace_means_no_workspace", |a, mode| {
        let out = assert_code(
            a,
            mode,
            &[
                "run",
                "--workspace",
                "none",
                "--",
                "sh",
                "-c",
                "test -e /workspace && echo present || echo absent",
            ],
            0,
        );
        assert_eq!(out.stdout.trim(), "absent", "{mode}: {}", out.describe());
    });
}

#[test]
fn only_stdio_descriptors_are_inherited() {
    both_modes("only_stdio_descriptors_are_inherited", |a, mode| {
        // 3 is ls's own directory descriptor.
        let out = assert_code(a, mode, &["run", "--", "ls", "/proc/self/fd"], 0);
        let fds: Vec<&str> = out.stdout.split_whitespace().collect();
        assert_eq!(fds, ["0", "1", "2", "3"], "{mode}: {}", out.describe());
    });
}

#[test]
fn tty_gives_a_pseudo_terminal_and_passes_the_exit_code() {
    both_modes(
        "tty_gives_a_pseudo_terminal_and_passes_the_exit_code",
        |a, mode| {
            let inner = format!("{} run -t -- sh -c 'tty; exit 3'", a.exe.display());
            let mut cmd = a.command_with("script", &["-qec", inner.as_str(), "/dev/null"]);
            cmd.env("TERM", "xterm");
            let out = run_with_deadline(cmd, None, DEADLINE);
            assert!(
                out.stdout.contains("/dev/pts/"),
                "{mode}: no pty inside: {}",
                out.describe()
            );
            assert_eq!(out.code(), 3, "{mode}: {}", out.describe());
        },
    );
}

#[test]
fn sigkill_of_airlock_leaves_nothing_behind() {
    both_modes("sigkill_of_airlock_leaves_nothing_behind", |a, mode| {
        // A unique argument to find the sandboxed process by.
        let marker = format!(
            "31.{}",
            u64::from_str_radix(&random_hex()[..8], 16).unwrap_or(1234) % 100_000_000
        );
        let mut cmd = a.command(&["run", "--workspace", "overlay", "--", "sleep", &marker]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn airlock");
        let started = wait_until(Duration::from_secs(10), || {
            !pids_with_marker(&format!("sleep {marker}")).is_empty()
        });
        if !started {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{mode}: the sandboxed sleep never showed up");
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        let _ = child.wait();
        let gone = wait_until(Duration::from_secs(10), || {
            pids_with_marker(&format!("sleep {marker}")).is_empty()
        });
        assert!(
            gone,
            "{mode}: sandboxed process survived airlock's SIGKILL: {:?}",
            pids_with_marker(&marker)
        );
        let gc = a.run(&["gc"]);
        assert_eq!(gc.code(), 0, "{mode}: airlock gc: {}", gc.describe());
        let left = mounts_under(&a.state_dir());
        assert!(
            left.is_empty(),
            "{mode}: mounts left under the state dir after gc: {left:?}"
        );
        // And the next run works.
        assert_code(a, mode, &["run", "--workspace", "none", "--", "true"], 0);
    });
}
