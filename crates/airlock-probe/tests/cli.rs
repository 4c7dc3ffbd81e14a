//! The probe's command line and output format, run directly on the host (no sandbox, no root
//! needed). Which checks are blocked depends on who runs this, so only the shape is asserted.
//!
//! This file also makes `cargo test --workspace` build `target/<profile>/airlock-probe`, which
//! the end-to-end tests of the `airlock` crate mount into their sandboxes.

use std::process::Command;

const PROBE: &str = env!("CARGO_BIN_EXE_airlock-probe");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(PROBE)
        .args(args)
        .output()
        .expect("run airlock-probe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_names() -> Vec<String> {
    let (code, out, _) = run(&["list"]);
    assert_eq!(code, 0);
    out.lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn list_names_every_check_once() {
    let names = check_names();
    assert!(names.len() >= 40, "{names:?}");
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        names.len(),
        "duplicate check names: {names:?}"
    );
    for expected in [
        "fds",
        "canary-read",
        "ptrace-pid1",
        "tiocsti",
        "net-internet",
        "exe-overwrite",
        "io-uring",
    ] {
        assert!(names.iter().any(|n| n == expected), "missing {expected}");
    }
}

#[test]
fn single_checks_print_json_lines_and_a_summary() {
    let (code, out, err) = run(&["fds,caps,no-new-privs,seccomp-filter,mknod"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 6, "{out}");
    let names: Vec<&str> = lines[..5]
        .iter()
        .map(|v| v["check"].as_str().expect("check name"))
        .collect();
    assert_eq!(
        names,
        ["fds", "caps", "no-new-privs", "seccomp-filter", "mknod"]
    );
    for v in &lines[..5] {
        assert!(v["blocked"].is_boolean(), "{v}");
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    }
    let summary = &lines[5]["summary"];
    assert_eq!(summary["checks"], 5);
    let open = summary["not_blocked"].as_array().expect("not_blocked");
    let blocked_count = lines[..5].iter().filter(|v| v["blocked"] == true).count();
    assert_eq!(summary["blocked"], blocked_count);
    assert_eq!(open.len(), 5 - blocked_count);
}

#[test]
fn checks_missing_their_argument_are_skipped_and_named() {
    let (code, out, _) = run(&["canary-read,net-loopback-host"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("summary JSON");
    assert_eq!(v["summary"]["checks"], 0);
    let skipped: Vec<&str> = v["summary"]["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|s| s["check"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(skipped, ["canary-read", "net-loopback-host"]);
}

#[test]
fn a_readable_canary_is_reported_as_not_blocked() {
    // The probe must detect success: a canary it *can* read (in a temp dir) is an escape.
    let dir = std::env::temp_dir().join(format!("airlock-probe-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let canary = dir.join("canary");
    std::fs::write(&canary, "secret").expect("write canary");
    let (code, out, _) = run(&[
        "canary-read",
        "--canary",
        canary.to_str().expect("utf-8 path"),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 0);
    let first: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("a line")).expect("JSON");
    assert_eq!(first["check"], "canary-read");
    assert_eq!(first["blocked"], false, "{first}");
}

#[test]
fn inherited_descriptors_are_found() {
    use std::os::unix::process::CommandExt;
    // Leak a descriptor into the probe: dup stdin-null onto fd 7 without CLOEXEC.
    let mut cmd = Command::new(PROBE);
    cmd.arg("fds");
    // SAFETY: dup2 is async-signal-safe; the closure runs in the forked child before exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::dup2(0, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run probe");
    let text = String::from_utf8_lossy(&out.stdout);
    let first: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("a line")).expect("JSON");
    assert_eq!(first["blocked"], false, "{first}");
    assert!(
        first["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("fd 7"),
        "{first}"
    );
}

#[test]
fn unknown_check_is_a_usage_error() {
    let (code, _, err) = run(&["no-such-check"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown check"), "{err}");
}
