//! End-to-end escape tests: the probe (`crates/airlock-probe`) runs inside a real sandbox and
//! attempts every attack in GUIDE.md §3 it can express as a system call; every check must come
//! back blocked, and the host-side bait must be untouched.
//!
//! Needs root (CI is root): see `common::e2e`. The rootless cases drop to the `airlock-test`
//! user (created with useradd on first use).

mod common;

use common::probe::{all_check_names, assert_all_blocked, run_probe_all, Bait, Report};
use common::{e2e, run_with_deadline, test_user, Airlock, Bins, TestUser, DEADLINE};
use std::path::Path;
use std::process::Command;

fn probe_as_root_host(user_flag: &[&str], label: &str) {
    let bins = Bins::for_root();
    let airlock = Airlock::root();
    let bait = Bait::new(Path::new("/root"), None);
    let (out, report) = run_probe_all(&airlock, &bins.probe, &bait, user_flag);
    println!("{}", out.stdout);
    assert_all_blocked(label, &out, &report);
    bait.assert_untouched(label, &out.stdout);
}

fn probe_rootless(user_flag: &[&str], label: &str) {
    let user = test_user();
    let bins = Bins::owned_by(&user);
    let airlock = Airlock::rootless(&bins);
    let bait = Bait::new(&user.home, Some(&user));
    let (out, report) = run_probe_all(&airlock, &bins.probe, &bait, user_flag);
    println!("{}", out.stdout);
    assert_all_blocked(label, &out, &report);
    bait.assert_untouched(label, &out.stdout);
}

#[test]
fn rootful_sandbox_blocks_every_escape_as_agent() {
    if !e2e("rootful_sandbox_blocks_every_escape_as_agent") {
        return;
    }
    probe_as_root_host(&[], "rootful, --user agent (default)");
}

#[test]
fn rootful_sandbox_blocks_every_escape_as_root_inside() {
    if !e2e("rootful_sandbox_blocks_every_escape_as_root_inside") {
        return;
    }
    probe_as_root_host(&["--user", "root"], "rootful, --user root");
}

#[test]
fn rootless_sandbox_blocks_every_escape_as_agent() {
    if !e2e("rootless_sandbox_blocks_every_escape_as_agent") {
        return;
    }
    probe_rootless(&[], "rootless, --user agent (default)");
}

#[test]
fn rootless_sandbox_blocks_every_escape_as_root_inside() {
    if !e2e("rootless_sandbox_blocks_every_escape_as_root_inside") {
        return;
    }
    probe_rootless(&["--user", "root"], "rootless, --user root");
}

/// TIOCSTI into the user's own terminal (bubblewrap CVE-2017-5226): run airlock under a real
/// pty (`script`), without -t (the host terminal is handed in), with -i, and with -t.
#[test]
fn terminal_injection_is_blocked_with_a_real_terminal() {
    if !e2e("terminal_injection_is_blocked_with_a_real_terminal") {
        return;
    }
    let bins = Bins::for_root();
    let airlock = Airlock::root();
    for flags in ["", "-i", "-t"] {
        let inner = format!(
            "{} run {flags} --workspace none --ro {}:/probe -- /probe tiocsti,fds",
            bins.airlock.display(),
            bins.probe.display()
        );
        let mut script = airlock.command_with("script", &["-qec", inner.as_str(), "/dev/null"]);
        script.env("TERM", "xterm");
        // script's stdin stays open: at EOF it would type its EOF character into the session.
        let out = common::run_with_open_stdin(script, DEADLINE);
        let report = Report::parse(&out.stdout);
        let label = format!("TIOCSTI under a pty, flags [{flags}]");
        let tiocsti = report
            .get("tiocsti")
            .unwrap_or_else(|| panic!("{label}: no tiocsti line\n{}", out.describe()));
        assert!(tiocsti.blocked, "{label}: NOT blocked: {}", tiocsti.detail);
        if !tiocsti.detail.contains("(a tty)") {
            println!(
                "note: {label}: no terminal reached the sandbox ({})",
                tiocsti.detail
            );
        }
        let fds = report
            .get("fds")
            .unwrap_or_else(|| panic!("{label}: no fds line\n{}", out.describe()));
        assert!(fds.blocked, "{label}: leaked descriptors: {}", fds.detail);
    }
}

/// Control: without a sandbox the same probe reaches the bait, so the blocked verdicts above
/// are the sandbox's doing and not a broken probe or broken bait.
#[test]
fn probe_reaches_the_bait_without_a_sandbox() {
    if !e2e("probe_reaches_the_bait_without_a_sandbox") {
        return;
    }
    let user = test_user();
    let bins = Bins::owned_by(&user);
    let root_bait = Bait::new(Path::new("/root"), None);
    let user_bait = Bait::new(&user.home, Some(&user));
    let common_checks = [
        "canary-read",
        "write-host-path",
        "net-loopback-host",
        "unix-abstract",
    ];
    // The user owns its copy of airlock, so outside a sandbox it can open it for writing.
    let user_checks = [
        "canary-read",
        "write-host-path",
        "net-loopback-host",
        "unix-abstract",
        "exe-overwrite",
    ];
    let cases: [(&str, &Bait, Option<&TestUser>, &[&str]); 2] = [
        ("root on the host", &root_bait, None, &common_checks),
        (
            "airlock-test on the host",
            &user_bait,
            Some(&user),
            &user_checks,
        ),
    ];
    for (label, bait, as_user, wanted) in cases {
        let mut cmd = Command::new(&bins.probe);
        cmd.arg(wanted.join(","))
            .args(bait.probe_args(&bins.airlock))
            .current_dir("/");
        if let Some(u) = as_user {
            use std::os::unix::process::CommandExt;
            cmd.uid(u.uid).gid(u.gid);
        }
        let out = run_with_deadline(cmd, None, DEADLINE);
        let report = Report::parse(&out.stdout);
        for name in wanted {
            let c = report
                .get(name)
                .unwrap_or_else(|| panic!("{label}: no {name} line\n{}", out.describe()));
            assert!(
                !c.blocked,
                "{label}: {name} should succeed outside a sandbox (bait broken?): {}",
                c.detail
            );
        }
    }
    assert!(all_check_names().len() >= 40);
}
