//! `airlock audit`: trust changes in the host's journal, and `--follow` reading the journals
//! incrementally across a rotation. The real CLI on a test state directory (no sandbox is
//! started: the journals are files in the state directory).

mod common;

use common::{Airlock, Outcome};
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

fn ok(a: &Airlock, args: &[&str]) -> Outcome {
    let out = a.run(args);
    assert_eq!(out.code(), 0, "airlock {args:?}: {}", out.describe());
    out
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn trust_and_untrust_are_in_the_host_journal() {
    let a = Airlock::root();
    let project = a.cwd.join("proj");
    std::fs::create_dir_all(&project).expect("project dir");
    std::fs::write(
        project.join("airlock.toml"),
        "[network]\ndomains = [\"evil.example\"]\n",
    )
    .expect("airlock.toml");
    let dir = project.to_str().expect("utf-8");
    let first: serde_json::Value =
        serde_json::from_str(&ok(&a, &["trust", "--json", dir]).stdout).expect("trust json");
    // The file changes; trusting it again records what it replaced.
    std::fs::write(
        project.join("airlock.toml"),
        "[network]\ndomains = [\"evil.example\", \"worse.example\"]\n",
    )
    .expect("airlock.toml");
    let second: serde_json::Value =
        serde_json::from_str(&ok(&a, &["trust", "--json", dir]).stdout).expect("trust json");
    ok(&a, &["trust", "--revoke", dir]);
    // `trust` without a change of state (status) is not journaled.
    ok(&a, &["config", "--json"]);

    let events = json_lines(&ok(&a, &["audit", "--json"]).stdout);
    let trust: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["category"] == "trust").collect();
    assert_eq!(trust.len(), 3, "{events:#?}");
    let file = project.join("airlock.toml");
    for e in &trust {
        assert_eq!(e["file"], file.to_str().unwrap(), "{e}");
        assert_eq!(e["via"], "cli", "{e}");
        assert_eq!(e["uid"], nix::unistd::getuid().as_raw(), "{e}");
        assert!(e["time"].is_string() && e.get("sandbox").is_none(), "{e}");
    }
    assert_eq!(trust[0]["op"], "trust");
    assert_eq!(trust[0]["sha256"], first["sha256"]);
    assert!(trust[0]["previous_sha256"].is_null());
    assert_eq!(trust[0]["widening"], serde_json::json!(["network.domains"]));
    assert_eq!(trust[1]["sha256"], second["sha256"]);
    assert_eq!(trust[1]["previous_sha256"], first["sha256"]);
    assert_eq!(trust[2]["op"], "untrust");
    assert_eq!(trust[2]["previous_sha256"], second["sha256"]);

    // For people: the host's events are labelled (host), with file, digest and who.
    let human = ok(&a, &["audit"]).stdout;
    let short = &first["sha256"].as_str().unwrap()[..16];
    assert!(
        human.lines().any(|l| l.starts_with("(host)")
            && l.contains(&format!("trust {} (sha256 {short})", file.display()))
            && l.contains("via cli")),
        "{human}"
    );
    // A sandbox's own journal does not hold them.
    std::fs::create_dir_all(a.state_dir().join("sandboxes/box")).expect("sandbox dir");
    assert_eq!(ok(&a, &["audit", "box", "--json"]).stdout, "");
}

#[test]
fn follow_prints_each_event_once_across_a_rotation() {
    let a = Airlock::root();
    let dir = a.state_dir().join("sandboxes/box");
    std::fs::create_dir_all(&dir).expect("sandbox dir");
    let net = dir.join("net.jsonl");
    let line = |i: usize| {
        format!(
            "{{\"time\":\"2026-01-01T00:00:{:02}.000Z\",\"kind\":\"tcp\",\"host\":\"h{i}.com\",\"port\":443,\"decision\":\"allow\"}}\n",
            i
        )
    };
    let append = |from: usize, to: usize| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&net)
            .expect("net.jsonl");
        for i in from..to {
            f.write_all(line(i).as_bytes()).expect("write");
        }
    };
    append(0, 3);
    let mut child = a
        .command(&["audit", "box", "--follow", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("airlock audit --follow");
    let (tx, rx) = channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let mut got: Vec<String> = Vec::new();
    let wait_for = |n: usize, got: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < n && Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                got.push(l);
            }
        }
        // Nothing more than expected arrives (no event printed twice).
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(800)) {
            got.push(l);
        }
    };
    wait_for(3, &mut got);
    append(3, 5);
    // Two events can be identical (same time to the millisecond, same facts): both are shown.
    append(4, 5);
    wait_for(6, &mut got);
    // Rotation as the writers do it: the full file becomes net.jsonl.1, a new one begins.
    // Lines written to the old file just before the rename must not be lost.
    append(5, 7);
    std::fs::rename(&net, dir.join("net.jsonl.1")).expect("rotate");
    append(7, 9);
    wait_for(10, &mut got);
    // A second rotation to a file shorter than the offset read so far.
    std::fs::rename(&net, dir.join("net.jsonl.1")).expect("rotate");
    append(9, 10);
    wait_for(11, &mut got);
    let _ = child.kill();
    let _ = child.wait();
    let hosts: Vec<String> = got
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            assert_eq!(v["category"], "egress", "{l}");
            v["host"].as_str().expect("host").to_string()
        })
        .collect();
    let mut want: Vec<String> = (0..10).map(|i| format!("h{i}.com")).collect();
    want.insert(4, "h4.com".into());
    assert_eq!(hosts, want);
}
