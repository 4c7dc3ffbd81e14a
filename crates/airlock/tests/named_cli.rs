//! Named sandboxes say what they do: `exec -w` resolves like `run -w`, `up` on an existing
//! sandbox never drops options silently, limits a host cannot enforce are said (and refused with
//! --require-limits), and `status` shows resource use it can read, "n/a" otherwise.
//!
//! Needs root (CI is root): see `common::e2e`.

mod common;
use common::work::EngineGuard;

use common::{e2e, Airlock, Bins};

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

/// `status` shows the use it can read and "n/a" (JSON null) for the rest, never a made-up 0.
#[test]
fn status_shows_use_or_na_never_a_fake_zero() {
    if !e2e("status_shows_use_or_na_never_a_fake_zero") {
        return;
    }
    let a = Airlock::root();
    let _guard = EngineGuard(&a);
    ok(&a, &["create", "plain", "--net", "off"]);
    ok(
        &a,
        &[
            "create", "limited", "--net", "off", "--memory", "256M", "--pids", "64",
        ],
    );
    for name in ["plain", "limited"] {
        ok(&a, &["start", name]);
        ok(
            &a,
            &[
                "exec",
                name,
                "--",
                "sh",
                "-c",
                "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done",
            ],
        );
        let out = ok(&a, &["status", name, "--json"]);
        let st: serde_json::Value = serde_json::from_str(&out.stdout).expect("status --json");
        let stats = &st["stats"];
        assert!(stats.is_object(), "{name}: {st}");
        for (key, floor) in [("memory_bytes", 1), ("pids", 1), ("cpu_usec", 1)] {
            let v = &stats[key];
            assert!(
                v.is_null() || v.as_u64().is_some_and(|n| n >= floor),
                "{name}: {key} = {v}: {st}"
            );
        }
        let human = ok(&a, &["status", name]).stdout;
        for (key, unit) in [
            ("memory_bytes", " bytes"),
            ("pids", ""),
            ("cpu_usec", " us"),
        ] {
            let label = match key {
                "memory_bytes" => "memory:   ",
                "pids" => "pids:     ",
                _ => "cpu:      ",
            };
            let want = match stats[key].as_u64() {
                Some(n) => format!("{label}{n}"),
                None => format!("{label}n/a"),
            };
            let line = human
                .lines()
                .find(|l| l.starts_with(label))
                .unwrap_or_else(|| panic!("{name}: no {label:?} line: {human}"));
            // cpu and memory move between the two calls; the shape must match.
            if stats[key].is_null() {
                assert_eq!(line, want, "{name}: {human}");
            } else {
                assert!(
                    line.ends_with(unit) && !line.contains("n/a"),
                    "{name}: {human}"
                );
            }
        }
        if name == "limited" {
            // A sandbox with limits has a cgroup on this (root) host: use is read.
            assert!(stats["memory_bytes"].as_u64().is_some(), "{st}");
            assert!(stats["pids"].as_u64().is_some(), "{st}");
        }
        ok(&a, &["rm", "--force", name]);
    }
}

/// Rootless named sandboxes with limits this host cannot enforce: start/up warn as run does,
/// status says "not enforced", and --require-limits refuses (121) before anything exists.
#[test]
fn unenforceable_limits_of_named_sandboxes_are_said_or_refused() {
    if !e2e("unenforceable_limits_of_named_sandboxes_are_said_or_refused") {
        return;
    }
    let bins = Bins::owned_by(&common::test_user());
    let a = Airlock::rootless(&bins);
    let _guard = EngineGuard(&a);
    // The oracle: does `run` enforce a memory limit for this user on this host?
    let probe = a.run(&[
        "run",
        "--net",
        "off",
        "--memory",
        "64M",
        "--require-limits",
        "--",
        "true",
    ]);
    if probe.code() == 0 {
        eprintln!(
            "note: this host enforces memory limits rootless (delegated cgroup); nothing to check"
        );
        return;
    }
    assert_eq!(probe.code(), 121, "{}", probe.describe());

    ok(
        &a,
        &[
            "create", "box", "--net", "off", "--memory", "64M", "--pids", "50",
        ],
    );
    let out = ok(&a, &["start", "box"]);
    assert!(
        out.stderr
            .contains("warning: box: not enforced on this host: memory limit"),
        "{}",
        out.describe()
    );
    assert!(
        !out.stderr.contains("pids"),
        "pids are enforced: {}",
        out.describe()
    );
    let human = ok(&a, &["status", "box"]).stdout;
    assert!(
        human.contains("limits:   memory 64M (not enforced on this host), pids 50\n"),
        "{human}"
    );
    let out = ok(&a, &["status", "box", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&out.stdout).expect("status --json");
    assert_eq!(
        st["unenforced_limits"],
        serde_json::json!(["memory"]),
        "{st}"
    );
    ok(&a, &["stop", "box"]);
    // `up` of an existing stopped sandbox warns too.
    let out = ok(&a, &["up", "box"]);
    assert!(
        out.stderr.contains("not enforced on this host: memory"),
        "{}",
        out.describe()
    );
    ok(&a, &["rm", "--force", "box"]);

    // The default memory limit, which nobody asked for, is left out quietly (as `run` leaves
    // it out), and status does not claim the sandbox has it.
    ok(
        &a,
        &["create", "plain", "--net", "off", "--workspace", "none"],
    );
    for args in [
        &["start", "plain"][..],
        &["stop", "plain"],
        &["up", "plain"],
    ] {
        let out = ok(&a, args);
        assert!(
            !out.stderr.contains("not enforced"),
            "{args:?}: {}",
            out.describe()
        );
    }
    let human = ok(&a, &["status", "plain"]).stdout;
    assert!(
        human.contains("limits:   memory none (the ")
            && human.contains(" default needs a cgroup this host does not give), pids 2048\n"),
        "{human}"
    );
    ok(&a, &["rm", "--force", "plain"]);

    for args in [
        &[
            "create",
            "strict",
            "--net",
            "off",
            "--memory",
            "64M",
            "--require-limits",
        ][..],
        &[
            "up",
            "strict",
            "--net",
            "off",
            "--memory",
            "64M",
            "--require-limits",
        ][..],
    ] {
        let out = a.run(args);
        assert_eq!(out.code(), 121, "{args:?}: {}", out.describe());
        assert!(
            out.stderr
                .contains("refused: limits cannot be enforced on this host: memory"),
            "{}",
            out.describe()
        );
        assert!(out.stderr.contains("hint: "), "{}", out.describe());
        assert_eq!(
            out.stderr.matches("limits cannot be enforced").count(),
            1,
            "said once: {}",
            out.describe()
        );
        let list = ok(&a, &["list", "--json"]).stdout;
        assert!(
            !list.contains("strict"),
            "{args:?}: nothing created: {list}"
        );
        // `ls` is `list` (as for images, and as container tools spell it).
        assert_eq!(ok(&a, &["ls", "--json"]).stdout, list);
    }
}

/// `up NAME OPTIONS` on an existing sandbox never drops the options silently: differing ones
/// are refused (exit 2), each named, with the way out; the same options start it; `--fresh`
/// applies them. A denial inside a named sandbox says how to allow it for that sandbox.
#[test]
fn up_of_an_existing_sandbox_refuses_options_that_differ() {
    if !e2e("up_of_an_existing_sandbox_refuses_options_that_differ") {
        return;
    }
    let a = Airlock::root();
    let _guard = EngineGuard(&a);
    ok(&a, &["create", "box", "--allow", "github.com"]);
    let out = a.run(&["up", "box", "--allow", "example.org", "--memory", "64M"]);
    assert_eq!(out.code(), 2, "{}", out.describe());
    for want in [
        "sandbox box exists, and `up` does not change an existing sandbox",
        "--allow example.org (it has domains [github.com] on ports [443, 80])",
        // (every sandbox has a default memory limit: half the host's RAM)
        "--memory 64M (it has ",
        "hint: `airlock up box --fresh` with these options recreates it",
        "`airlock allow box DOMAIN[:PORT]` adds a domain to it in place, even while it runs",
    ] {
        assert!(out.stderr.contains(want), "{want:?}: {}", out.describe());
    }
    let st = ok(&a, &["status", "box", "--json"]).stdout;
    let st: serde_json::Value = serde_json::from_str(&st).expect("status");
    assert_eq!(st["state"], "stopped", "refused means not started: {st}");
    assert!(st["started_at"].is_null(), "never started: {st}");
    // The options it has: started as it is.
    ok(&a, &["up", "box", "--allow", "github.com"]);
    // A denial names a fix that works for this named sandbox (at once, while it runs), and the
    // port really used.
    let out = a.run(&[
        "exec",
        "box",
        "--",
        "curl",
        "-sS",
        "-x",
        "http://127.0.0.1:3128",
        "http://example.org/",
    ]);
    assert!(
        out.stdout.contains(
            "To allow it, run `airlock allow box example.org:80` (applies at once, no restart)."
        ),
        "{}",
        out.describe()
    );
    // --fresh applies the options.
    ok(
        &a,
        &[
            "up",
            "box",
            "--fresh",
            "--allow",
            "example.org",
            "--memory",
            "64M",
        ],
    );
    let st = ok(&a, &["status", "box", "--json"]).stdout;
    let st: serde_json::Value = serde_json::from_str(&st).expect("status");
    assert_eq!(
        st["spec"]["domains"],
        serde_json::json!(["example.org"]),
        "{st}"
    );
    assert_eq!(st["spec"]["resources"]["memory"], "64M", "{st}");
    ok(&a, &["rm", "--force", "box"]);
}

/// A named microVM sandbox's guest kernel is part of what it was made with: `up` with another
/// `--kernel`, or after `[sandbox] kernel` changed, names the difference (exit 2) instead of
/// booting the old kernel silently; the same kernel is no difference. Nothing boots here.
#[test]
fn up_of_a_microvm_names_a_changed_guest_kernel() {
    if !e2e("up_of_a_microvm_names_a_changed_guest_kernel") {
        return;
    }
    let a = Airlock::root();
    let _guard = EngineGuard(&a);
    let kdir = common::TempDir::new("kernels");
    let (k1, k2) = (kdir.join("vmlinuz-one"), kdir.join("vmlinuz-two"));
    for k in [&k1, &k2] {
        std::fs::write(k, b"not booted in this test").expect("write");
    }
    let (k1, k2) = (k1.display().to_string(), k2.display().to_string());
    let config = a.cwd.join("airlock.toml");
    std::fs::write(&config, format!("[sandbox]\nkernel = \"{k1}\"\n")).expect("config");
    ok(
        &a,
        &["create", "vmk", "--backend", "microvm", "--net", "off"],
    );
    let out = a.run(&["up", "vmk", "--kernel", &k2]);
    assert_eq!(out.code(), 2, "{}", out.describe());
    for want in [
        "sandbox vmk exists, and `up` does not change an existing sandbox",
        &format!("--kernel {k2} (it has {k1})"),
        "hint: `airlock up vmk --fresh` with these options recreates it",
    ] {
        assert!(out.stderr.contains(want), "{want:?}: {}", out.describe());
    }
    // The configuration changed since: said, with where it says so.
    std::fs::write(&config, format!("[sandbox]\nkernel = \"{k2}\"\n")).expect("config");
    let out = a.run(&["up", "vmk"]);
    assert_eq!(out.code(), 2, "{}", out.describe());
    assert!(
        out.stderr
            .contains(&format!("[sandbox] kernel = {k2} (in ")),
        "{}",
        out.describe()
    );
    assert!(
        out.stderr.contains(&format!("(it has {k1})")),
        "{}",
        out.describe()
    );
    let st = ok(&a, &["status", "vmk", "--json"]).stdout;
    let st: serde_json::Value = serde_json::from_str(&st).expect("status");
    assert_eq!(st["state"], "stopped", "refused means not started: {st}");
    let _ = a.run(&["rm", "-f", "vmk"]);
}
