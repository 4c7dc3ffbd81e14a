//! The CLI says what it does: usage errors for options it does not have, no panic on a closed
//! stdout, doctor rows that match what airlock really uses, user-named paths that are regular
//! files of bounded size, and no half-created sandbox when a secret source is missing.
//!
//! Most of these need no root: the real binary against a temp state dir (the CLI tier). The
//! ones that start the engine run as whoever runs the tests.

mod common;

use common::{stop_engines_of, Airlock};
use std::os::fd::OwnedFd;
use std::process::Stdio;

/// Stops the test's engine however the test ends.
struct EngineGuard<'a>(&'a Airlock);

impl Drop for EngineGuard<'_> {
    fn drop(&mut self) {
        stop_engines_of(self.0);
    }
}

fn usage_error(a: &Airlock, args: &[&str]) -> String {
    let out = a.run(args);
    assert_eq!(out.code(), 2, "airlock {args:?}: {}", out.describe());
    assert!(out.stdout.is_empty(), "{args:?}: {}", out.describe());
    out.stderr
}

#[test]
fn unknown_options_before_the_command_are_usage_errors() {
    let a = Airlock::root();
    // A typo of a real option: named, with the closest valid one.
    let err = usage_error(&a, &["run", "--nett", "off", "--", "echo", "hi"]);
    assert!(err.contains("unexpected argument '--nett'"), "{err}");
    assert!(err.contains("'--net'"), "{err}");
    let err = usage_error(&a, &["exec", "box", "--worklir", "/", "--", "true"]);
    assert!(err.contains("'--worklir'"), "{err}");
    assert!(err.contains("'--workdir'"), "{err}");
    // Options of the product that this build does not have yet.
    for (args, says) in [
        (
            &["run", "--image", "python:3.12", "--", "true"][..],
            "--image is not available yet",
        ),
        (
            &["run", "--backend=microvm", "--", "true"][..],
            "--backend is not available yet",
        ),
        (&["run", "--no-network", "--", "true"][..], "`--net off`"),
        (
            &["create", "box", "--image", "alpine"][..],
            "--image is not available yet",
        ),
    ] {
        let err = usage_error(&a, args);
        assert!(err.contains("unexpected argument"), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // After the command, hyphenated words are the command's own.
    if common::e2e("unknown_options_before_the_command_are_usage_errors") {
        let out = a.run(&["run", "--net", "off", "echo", "-n", "--nett"]);
        assert_eq!(out.code(), 0, "{}", out.describe());
        assert_eq!(out.stdout, "--nett");
        let out = a.run(&[
            "run",
            "--net",
            "off",
            "--",
            "sh",
            "-c",
            "echo \"$1\"",
            "x",
            "-w",
        ]);
        assert_eq!(out.stdout, "-w\n", "{}", out.describe());
    }
}

/// Run airlock with stdout a pipe whose reader is already gone.
fn closed_stdout(a: &Airlock, args: &[&str]) -> common::Outcome {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    drop(r);
    let mut cmd = a.command(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(OwnedFd::from(w)))
        .stderr(Stdio::piped());
    let start = std::time::Instant::now();
    let out = cmd.output().expect("run airlock");
    common::Outcome {
        status: out.status,
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

#[test]
fn a_closed_stdout_never_panics() {
    let a = Airlock::root();
    let _guard = EngineGuard(&a);
    let out = a.run(&["create", "box", "--net", "off"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let cases: &[&[&str]] = &[
        &["list"],
        &["list", "--json"],
        &["status", "box"],
        &["status", "box", "--json"],
        &["config"],
        &["config", "--json"],
        &["gc"],
        &["doctor", "--json"],
        &["logs", "box"],
        &["--help"],
    ];
    for args in cases {
        for _ in 0..10 {
            let out = closed_stdout(&a, args);
            assert!(
                !out.stderr.contains("panicked"),
                "airlock {args:?}: {}",
                out.describe()
            );
            // 141: 128 + SIGPIPE, as a shell shows for a tool stopped by a closed pipe; quiet.
            let code = out.code();
            assert!(
                code == 141 || (code == 0 && args == &["logs", "box"]) || args == &["--help"],
                "airlock {args:?}: {}",
                out.describe()
            );
            if code == 141 {
                assert!(
                    out.stderr.is_empty(),
                    "airlock {args:?}: {}",
                    out.describe()
                );
            }
        }
    }
}
