//! The network journal is bounded (issue 12): a flood of denied DNS queries (40,000 distinct
//! names, ~20 MB of journal before) leaves at most 8 MiB in the journal file and 8 MiB in its
//! one rotated predecessor (`FILE.1`), whole JSON lines, the newest last — for `--net-log` and
//! for a named sandbox's journal (`airlock logs NAME --net` shows both files). airlock's stderr
//! lists only the first few hundred distinct denials.

mod common;

use common::{e2e, python3, random_hex, stop_engines_of, test_user, Airlock, Bins};
use std::path::Path;

const CAP: u64 = 8 << 20;
const QUERIES: usize = 40_000;

/// Sends QUERIES TXT queries for distinct names to the sandbox resolver, 50 at a time, and
/// prints how many were answered.
fn flood() -> String {
    format!(
        r#"
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
def q(i):
    name = b''.join(bytes([len(p)]) + p for p in [b'x%d' % i, b'exfil', b'example']) + b'\0'
    return struct.pack('>HHHHHH', i & 0xffff, 0x0100, 1, 0, 0, 0) + name + struct.pack('>HH', 16, 1)
got = 0
for b in range(0, {QUERIES}, 50):
    for i in range(b, b + 50):
        s.sendto(q(i), ('127.0.0.1', 53))
    for _ in range(50):
        try:
            s.recv(512)
            got += 1
        except socket.timeout:
            break
print('answered', got)
"#
    )
}

/// Both journal files are within the cap, hold whole JSON lines, and end with the last queries.
fn check_journal(path: &Path, label: &str) -> usize {
    let rotated = path.with_file_name(format!(
        "{}.1",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("")
    ));
    let mut hosts = Vec::new();
    for p in [&rotated, path] {
        let len = std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{label}: {}: {e}", p.display()))
            .len();
        assert!(len <= CAP, "{label}: {} is {len} bytes", p.display());
        let text = std::fs::read_to_string(p).expect("read journal");
        for l in text.lines() {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{label}: {e}: {l:?}"));
            hosts.push(v["host"].as_str().unwrap_or("").to_string());
        }
    }
    assert!(
        std::fs::metadata(&rotated).map(|m| m.len()).unwrap_or(0) > CAP / 2,
        "{label}: the journal did not rotate"
    );
    // The last batch is answered by concurrent threads: the newest query is among the last lines.
    let newest = format!("x{}.exfil.example", QUERIES - 1);
    assert!(
        hosts.iter().rev().take(200).any(|h| *h == newest),
        "{label}: the newest query is not at the end"
    );
    hosts.len()
}

#[test]
fn net_log_flood_is_capped_and_rotated() {
    if !e2e("net_log_flood_is_capped_and_rotated") {
        return;
    }
    let Some(py) = python3() else {
        panic!("this test needs /usr/bin/python3 on the host")
    };
    let bins = Bins::owned_by(&test_user());
    for (a, mode) in [
        (Airlock::root(), "rootful"),
        (Airlock::rootless(&bins), "rootless"),
    ] {
        let log = a.dir.join("net.jsonl");
        let script = flood();
        let out = a.run(&[
            "run",
            "--workspace",
            "none",
            "--net-log",
            log.to_str().expect("utf-8 path"),
            "--timeout",
            "120s",
            "--",
            py,
            "-c",
            &script,
        ]);
        assert_eq!(out.code(), 0, "{mode}: {}", out.describe());
        assert!(
            out.stdout.contains("answered"),
            "{mode}: {}",
            out.describe()
        );
        check_journal(&log, mode);
        let said = out.stderr.lines().filter(|l| l.contains("blocked")).count();
        assert!(
            (1..=300).contains(&said),
            "{mode}: {said} stderr lines about blocked queries"
        );
    }
}

#[test]
fn named_sandbox_journal_is_capped_and_logs_shows_both_files() {
    if !e2e("named_sandbox_journal_is_capped_and_logs_shows_both_files") {
        return;
    }
    let Some(py) = python3() else {
        panic!("this test needs /usr/bin/python3 on the host")
    };
    let a = Airlock::root();
    let name = format!("flood-{}", &random_hex()[..8]);
    let ok = |args: &[&str]| {
        let out = a.run(args);
        assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
        out
    };
    ok(&["create", &name, "--workspace", "none"]);
    ok(&["start", &name]);
    let script = flood();
    let out = ok(&["exec", &name, "--", py, "-c", &script]);
    assert!(out.stdout.contains("answered"), "{}", out.describe());
    let path = a
        .state_dir()
        .join("sandboxes")
        .join(&name)
        .join("net.jsonl");
    let total = check_journal(&path, "named");
    let out = ok(&["logs", &name, "--net"]);
    assert_eq!(out.stdout.lines().count(), total);
    ok(&["rm", "--force", &name]);
    stop_engines_of(&a);
}
