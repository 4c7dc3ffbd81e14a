//! Defaults that protect the host (issue 12): every sandbox gets a pids limit and a memory limit
//! without asking (shown by `airlock config` as defaults, overridable), its tmpfs mounts share
//! one budget, and `[resources] disk` is refused for named sandboxes rather than ignored.

mod common;

use common::{e2e, pids_with_marker, python3, random_hex, test_user, wait_until, Airlock, Bins};
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn modes() -> (Bins, Vec<(Airlock, &'static str)>) {
    let bins = Bins::owned_by(&test_user());
    let rootless = Airlock::rootless(&bins);
    (
        bins,
        vec![(Airlock::root(), "rootful"), (rootless, "rootless")],
    )
}

fn host_memory() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("MemTotal");
    kb * 1024
}

fn host_can_still_fork() {
    for _ in 0..20 {
        let st = Command::new("true").status().expect("host fork");
        assert!(st.success(), "host cannot run `true` any more");
    }
}

#[test]
fn config_shows_the_default_limits_and_their_origin() {
    let a = Airlock::root();
    let out = a.run(&["config", "--json"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let half = host_memory() / 2 / MIB;
    assert_eq!(v["config"]["resources"]["pids"], 2048, "{v}");
    assert_eq!(
        v["config"]["resources"]["memory"],
        format!("{half}M"),
        "{v}"
    );
    assert_eq!(v["origins"]["resources.memory"][0], "default", "{v}");
    assert_eq!(v["origins"]["resources.pids"][0], "default", "{v}");
    std::fs::write(a.cwd.join("airlock.toml"), "[resources]\npids = 300\n").expect("write");
    let out = a.run(&["config", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["config"]["resources"]["pids"], 300, "{v}");
    let origin = v["origins"]["resources.pids"][0].as_str().unwrap_or("");
    assert!(origin.starts_with("project:"), "{v}");
    assert_eq!(v["origins"]["resources.memory"][0], "default", "{v}");
}

/// Forks `sleep` children until fork fails; exits 1 saying so (the sandbox reports failure).
const FORKER: &str = r#"
import os, sys
n = 0
try:
    for _ in range(6000):
        pid = os.fork()
        if pid == 0:
            os.execv('/bin/sleep', ['sleep', '60', sys.argv[1]])
        n += 1
except OSError as e:
    print('fork-failed', e.errno, 'after', n, flush=True)
    sys.exit(1)
print('forked', n, flush=True)
"#;

#[test]
fn a_default_sandbox_contains_a_fork_bomb() {
    if !e2e("a_default_sandbox_contains_a_fork_bomb") {
        return;
    }
    let Some(py) = python3() else {
        panic!("this test needs /usr/bin/python3 on the host")
    };
    let (_bins, modes) = modes();
    for (a, mode) in modes {
        let marker = format!("bomb-{}", random_hex());
        let out = a.run(&[
            "run",
            "--workspace",
            "none",
            "--timeout",
            "60s",
            "--",
            py,
            "-c",
            FORKER,
            &marker,
        ]);
        assert_eq!(
            out.code(),
            1,
            "{mode}: the bomb should fail and say so:\n{}",
            out.describe()
        );
        let n: u64 = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("fork-failed 11 after "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{mode}: no EAGAIN:\n{}", out.describe()));
        assert!(
            (1000..2048).contains(&n),
            "{mode}: {n} children under the default pids limit (2048)"
        );
        assert!(
            !out.stderr.contains("not enforced"),
            "{mode}: defaults are not warned about:\n{}",
            out.describe()
        );
        let gone = wait_until(Duration::from_secs(20), || {
            pids_with_marker(&marker).is_empty()
        });
        assert!(gone, "{mode}: the bomb's processes outlived the sandbox");
        host_can_still_fork();
    }
}

/// Fills /tmp, /dev/shm and $HOME until each is full; prints each one's bytes.
const FILL: &str = "for d in /tmp /dev/shm $HOME; do \
    dd if=/dev/zero of=$d/fill bs=1M count=4096 2>/dev/null; \
    echo \"$d $(wc -c < $d/fill)\"; done";

fn filled(out: &common::Outcome, mode: &str) -> Vec<u64> {
    let sizes: Vec<u64> = out
        .stdout
        .lines()
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse().ok())
        .collect();
    assert_eq!(sizes.len(), 3, "{mode}: {}", out.describe());
    sizes
}

#[test]
fn tmpfs_mounts_together_stop_at_their_budget() {
    if !e2e("tmpfs_mounts_together_stop_at_their_budget") {
        return;
    }
    let (_bins, modes) = modes();
    for (a, mode) in modes {
        // --memory 128M: the budget is 128 MiB for every tmpfs together; /tmp and $HOME get
        // 4/16 each, /dev/shm 1/16. Rootless without a memory cgroup, the sizes still hold.
        let out = a.run(&[
            "run",
            "--workspace",
            "none",
            "--memory",
            "128M",
            "--timeout",
            "60s",
            "--",
            "sh",
            "-c",
            FILL,
        ]);
        let got = filled(&out, mode);
        let want = [32 * MIB, 8 * MIB, 32 * MIB];
        for (g, w) in got.iter().zip(want) {
            assert!(
                *g <= w && *g + MIB >= w,
                "{mode}: filled {got:?}, shares {want:?}:\n{}",
                out.describe()
            );
        }
        assert!(got.iter().sum::<u64>() <= 128 * MIB * 9 / 16);

        // The defaults: the budget is the default memory limit, half the host's RAM, for all
        // the mounts together (before: each mount could take half).
        let out = a.run(&[
            "run",
            "--workspace",
            "none",
            "--",
            "df",
            "-B1",
            "--output=size",
            "/tmp",
            "/dev/shm",
            "/run",
            "/home/agent",
        ]);
        assert_eq!(out.code(), 0, "{mode}: {}", out.describe());
        let sizes: Vec<u64> = out
            .stdout
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        assert_eq!(sizes.len(), 4, "{mode}: {}", out.describe());
        let budget = host_memory() / 2 / MIB * MIB;
        let total: u64 = sizes.iter().sum();
        assert!(
            total <= budget * 10 / 16 + 4 * 4096,
            "{mode}: default tmpfs sizes {sizes:?} exceed 10/16 of {budget}"
        );
        host_can_still_fork();
    }
}

#[test]
fn disk_is_refused_for_named_sandboxes_and_bounds_runs() {
    if !e2e("disk_is_refused_for_named_sandboxes_and_bounds_runs") {
        return;
    }
    let (_bins, modes) = modes();
    for (a, mode) in modes {
        let toml = a.cwd.join("airlock.toml");
        std::fs::write(&toml, "[resources]\ndisk = \"64M\"\n").expect("write airlock.toml");
        if let Some(u) = &a.user {
            std::os::unix::fs::chown(&toml, Some(u.uid), Some(u.gid)).expect("chown");
        }
        let name = format!("disk-{}", &random_hex()[..8]);
        let out = a.run(&["create", &name, "--net", "off"]);
        assert_eq!(out.code(), 121, "{mode}: {}", out.describe());
        assert!(
            out.stderr.contains("disk") && out.stderr.contains("hint:"),
            "{mode}: {}",
            out.describe()
        );
        let out = a.run(&["list", "--json"]);
        assert_eq!(out.stdout.trim(), "[]", "{mode}: nothing half-created");
        // `run`: the budget of the tmpfs mounts together.
        let out = a.run(&[
            "run",
            "--workspace",
            "none",
            "--timeout",
            "60s",
            "--",
            "sh",
            "-c",
            FILL,
        ]);
        let got = filled(&out, mode);
        assert_eq!(got, vec![16 * MIB, 4 * MIB, 16 * MIB], "{mode}");
        common::stop_engines_of(&a);
    }
}
