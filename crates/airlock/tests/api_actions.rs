//! The engine's HTTP API for the actions a typed child carries out (`airlock __action`): file
//! read and write, copies, deliver, trust, explain — end to end over the real socket (curl),
//! rootful and rootless. The whole create (clone) → write file → exec → read file → diff →
//! fetch cycle runs through HTTP alone.

mod common;

use common::work::{both_modes, git, give, ok, write, EngineGuard};
use common::{e2e, Airlock};
use serde_json::{json, Value};
use std::path::PathBuf;

/// A clean repository with one commit, and a branch `feature` for deliver.
fn project(a: &Airlock) -> PathBuf {
    let p = a.cwd.clone();
    git(a, &["init", "-q", "-b", "main"]);
    git(a, &["config", "user.name", "Host User"]);
    git(a, &["config", "user.email", "host@example.invalid"]);
    write(&p.join("a.txt"), "one\n");
    give(a, &p);
    git(a, &["add", "."]);
    git(a, &["commit", "-q", "-m", "initial"]);
    git(a, &["branch", "feature"]);
    p
}

fn engine_socket(a: &Airlock) -> PathBuf {
    let dir = a.dir.join("runtime/airlock");
    std::fs::read_dir(&dir)
        .expect("runtime dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sock"))
        .expect("engine socket")
}

/// One request to the engine over its socket: (status, body).
fn http(a: &Airlock, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let sock = engine_socket(a).display().to_string();
    let url = format!("http://airlock{path}");
    let body = body.map(Value::to_string);
    let mut args = vec![
        "-sS",
        "--unix-socket",
        &sock,
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ];
    if let Some(b) = &body {
        args.extend(["-H", "Content-Type: application/json", "-d", b]);
    }
    args.push(&url);
    let out = common::run_with_deadline(a.command_with("curl", &args), None, common::DEADLINE);
    let (text, code) = out.stdout.trim_end().rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), text.to_string())
}

/// A request that must answer `status`; its JSON body.
fn expect(a: &Airlock, label: &str, status: u16, method: &str, path: &str, body: Value) -> Value {
    let (code, text) = http(a, method, path, Some(&body));
    assert_eq!(code, status, "{label}: {method} {path} {body}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// An exec's stdout and exit code (the NDJSON events joined).
fn exec(a: &Airlock, label: &str, name: &str, script: &str) -> (String, i64) {
    let body = json!({"argv": ["sh", "-c", script], "workdir": "."});
    let (code, text) = http(
        a,
        "POST",
        &format!("/v1/sandboxes/{name}/exec"),
        Some(&body),
    );
    assert_eq!(code, 200, "{label}: exec: {text}");
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("an NDJSON line"))
        .collect();
    let stdout = events
        .iter()
        .filter(|e| e["stream"] == "stdout")
        .filter_map(|e| e["data"].as_str())
        .collect();
    let exit = events.last().and_then(|e| e["exit"].as_i64()).unwrap_or(-1);
    (stdout, exit)
}

fn cycle(a: &Airlock, label: &str) {
    let _g = EngineGuard(a);
    let p = project(a);
    // A spec as the CLI resolves it (this also starts the engine); from there on, HTTP alone.
    ok(a, label, &["create", "tmpl", "--net", "off"]);
    let spec_text =
        std::fs::read_to_string(a.state_dir().join("sandboxes/tmpl/spec.json")).expect("spec");
    let mut spec: Value = serde_json::from_str(&spec_text).expect("json");
    spec["name"] = "cyc".into();
    spec["hostname"] = "cyc".into();
    expect(
        a,
        label,
        201,
        "POST",
        "/v1/sandboxes",
        json!({"name": "cyc", "spec": spec}),
    );
    // Not running yet: the file actions say so.
    let e = expect(
        a,
        label,
        409,
        "POST",
        "/v1/sandboxes/cyc/files/read",
        json!({"path": "a.txt"}),
    );
    assert_eq!(
        (&e["kind"], &e["code"]),
        (&"wrong_state".into(), &120.into()),
        "{label}: {e}"
    );
    expect(a, label, 200, "POST", "/v1/sandboxes/cyc/start", json!({}));

    // write file → exec → read file → diff → fetch
    let w = expect(
        a,
        label,
        200,
        "POST",
        "/v1/sandboxes/cyc/files/write",
        json!({"path": "src/api.txt", "content": "from the api\n", "create_dirs": true}),
    );
    assert_eq!(
        (&w["path"], &w["written_bytes"], &w["size"]),
        (&"/workspace/src/api.txt".into(), &13.into(), &13.into()),
        "{label}: {w}"
    );
    let (out, code) = exec(
        a,
        label,
        "cyc",
        "cat src/api.txt && echo more >> src/api.txt && git add -A && \
         git -c user.email=a@b.invalid -c user.name=api commit -qm api && echo committed",
    );
    assert_eq!(
        (out.as_str(), code),
        ("from the api\ncommitted\n", 0),
        "{label}"
    );
    let r = expect(
        a,
        label,
        200,
        "POST",
        "/v1/sandboxes/cyc/files/read",
        json!({"path": "/workspace/src/api.txt"}),
    );
    assert_eq!(r["content"], "from the api\nmore\n", "{label}: {r}");
    assert_eq!(
        (&r["kind"], &r["size"], &r["truncated"]),
        (&"file".into(), &18.into(), &false.into()),
        "{label}: {r}"
    );
    // A window of it.
    let r = expect(
        a,
        label,
        200,
        "POST",
        "/v1/sandboxes/cyc/files/read",
        json!({"path": "src/api.txt", "offset": 5, "max_bytes": 3}),
    );
    assert_eq!(
        (&r["content"], &r["truncated"]),
        (&"the".into(), &true.into()),
        "{label}: {r}"
    );
    let d = expect(a, label, 200, "GET", "/v1/sandboxes/cyc/diff", Value::Null);
    assert_eq!(d["commits"], 1, "{label}: {d}");
    assert_eq!(d["files"][0]["path"], "src/api.txt", "{label}: {d}");
    expect(a, label, 200, "POST", "/v1/sandboxes/cyc/fetch", json!({}));
    assert_eq!(
        git(a, &["show", "airlock/cyc:src/api.txt"]),
        "from the api\nmore\n",
        "{label}"
    );

    // Bytes that are not UTF-8 travel as base64, both ways.
    let w = expect(
        a,
        label,
        200,
        "POST",
        "/v1/sandboxes/cyc/files/write",
        json!({"path": "/tmp/bin", "content": "AP+A", "encoding": "base64"}),
    );
    assert_eq!(w["written_bytes"], 3, "{label}: {w}");
    let r = expect(
        a,
        label,
        200,
        "POST",
        "/v1/actions",
        json!({"action": "file_read", "name": "cyc", "path": "/tmp/bin"}),
    );
    assert_eq!(
        (&r["data"], &r["value"]["encoding"], &r["value"]["content"]),
        (&"file".into(), &"base64".into(), &"AP+A".into()),
        "{label}: {r}"
    );
    // A directory is listed.
    let r = expect(
        a,
        label,
        200,
        "POST",
        "/v1/sandboxes/cyc/files/read",
        json!({"path": "src"}),
    );
    assert_eq!(r["kind"], "directory", "{label}: {r}");
    assert!(
        r["content"].as_str().is_some_and(|l| l.contains("api.txt")),
        "{label}: {r}"
    );

    // The protections: outside the roots, `..`, a symlink leading out, nothing there.
    for path in ["/etc/passwd", "../etc/passwd", "/workspace/../etc/shadow"] {
        let e = expect(
            a,
            label,
            403,
            "POST",
            "/v1/sandboxes/cyc/files/read",
            json!({"path": path}),
        );
        assert_eq!(
            (&e["kind"], &e["code"]),
            (&"refused".into(), &121.into()),
            "{label}: {e}"
        );
    }
    let (_, code) = exec(
        a,
        label,
        "cyc",
        "ln -s /etc/passwd out && ln -s /etc out-dir",
    );
    assert_eq!(code, 0, "{label}");
    let e = expect(
        a,
        label,
        403,
        "POST",
        "/v1/sandboxes/cyc/files/read",
        json!({"path": "out"}),
    );
    assert_eq!(e["kind"], "refused", "{label}: {e}");
    let e = expect(
        a,
        label,
        403,
        "POST",
        "/v1/sandboxes/cyc/files/write",
        json!({"path": "out", "content": "x"}),
    );
    assert_eq!(e["kind"], "refused", "{label}: {e}");
    let e = expect(
        a,
        label,
        403,
        "POST",
        "/v1/sandboxes/cyc/files/write",
        json!({"path": "out-dir/x", "content": "x"}),
    );
    assert_eq!(e["kind"], "refused", "{label}: {e}");
    let e = expect(
        a,
        label,
        404,
        "POST",
        "/v1/sandboxes/cyc/files/read",
        json!({"path": "no/such/file"}),
    );
    assert_eq!(e["kind"], "no_such_path", "{label}: {e}");
    let e = expect(
        a,
        label,
        404,
        "POST",
        "/v1/sandboxes/nosuch/files/read",
        json!({"path": "a.txt"}),
    );
    assert_eq!(e["kind"], "not_found", "{label}: {e}");

    // copy in and out (the host side as the engine's user sees it).
    let host = a.dir.join("host-files");
    write(&host.join("in.txt"), "copied in\n");
    give(a, &host);
    let c = expect(
        a,
        label,
        200,
        "POST",
        "/v1/sandboxes/cyc/copy",
        json!({"direction": "in", "host_path": host.join("in.txt"), "path": "/tmp/in.txt"}),
    );
    assert_eq!(c["direction"], "in", "{label}: {c}");
    let r = expect(
        a,
        label,
        200,
        "POST",
        "/v1/sandboxes/cyc/files/read",
        json!({"path": "/tmp/in.txt"}),
    );
    assert_eq!(r["content"], "copied in\n", "{label}: {r}");
    let (_, code) = exec(
        a,
        label,
        "cyc",
        "mkdir -p /tmp/d/e && echo deep > /tmp/d/e/f.txt && ln -s /etc /tmp/d/esc",
    );
    assert_eq!(code, 0, "{label}");
    let c = expect(
        a,
        label,
        200,
        "POST",
        "/v1/sandboxes/cyc/copy",
        json!({"direction": "out", "host_path": host.join("d-out"), "path": "/tmp/d"}),
    );
    assert_eq!(
        std::fs::read_to_string(host.join("d-out/e/f.txt")).expect("copied out"),
        "deep\n",
        "{label}"
    );
    assert!(
        c["review"].as_array().is_some_and(|r| r.iter().any(|n| n
            .as_str()
            .is_some_and(|n| n.contains("symlink leaving the copy")))),
        "{label}: {c}"
    );
    // A host path that is a symlink is refused; so is a relative one.
    std::os::unix::fs::symlink("/etc/passwd", host.join("link")).expect("symlink");
    let e = expect(
        a,
        label,
        400,
        "POST",
        "/v1/sandboxes/cyc/copy",
        json!({"direction": "in", "host_path": host.join("link"), "path": "/tmp/x"}),
    );
    assert!(
        e["error"].as_str().is_some_and(|m| m.contains("symlink")),
        "{label}: {e}"
    );
    expect(
        a,
        label,
        400,
        "POST",
        "/v1/sandboxes/cyc/copy",
        json!({"direction": "in", "host_path": "in.txt", "path": "/tmp/x"}),
    );

    // deliver: a host branch into the sandbox's repository.
    let d = expect(
        a,
        label,
        200,
        "POST",
        "/v1/sandboxes/cyc/deliver",
        json!({"branch": "feature"}),
    );
    assert_eq!(d["branch"], "delivered/feature", "{label}: {d}");
    let (out, code) = exec(
        a,
        label,
        "cyc",
        "git rev-parse --verify -q delivered/feature >/dev/null && echo there",
    );
    assert_eq!((out.as_str(), code), ("there\n", 0), "{label}");
    let e = expect(
        a,
        label,
        404,
        "POST",
        "/v1/sandboxes/cyc/deliver",
        json!({"branch": "no-such-branch"}),
    );
    assert_eq!(e["kind"], "not_found", "{label}: {e}");

    // explain: the sandbox's own policy (network off).
    let x = expect(
        a,
        label,
        200,
        "POST",
        "/v1/explain",
        json!({"sandbox": "cyc", "domain": "pypi.org", "syscall": "ptrace"}),
    );
    assert_eq!(x["origin"], "sandbox cyc", "{label}: {x}");
    assert_eq!(
        x["verdicts"].as_array().map(Vec::len),
        Some(2),
        "{label}: {x}"
    );
    assert_eq!(x["verdicts"][0]["allowed"], false, "{label}: {x}");
    assert!(
        x["verdicts"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("network is off")),
        "{label}: {x}"
    );
    expect(
        a,
        label,
        400,
        "POST",
        "/v1/explain",
        json!({"sandbox": "cyc"}),
    );

    // trust: status, allow, status, revoke — of another project's airlock.toml.
    let other = a.dir.join("other");
    write(
        &other.join("airlock.toml"),
        "[network]\ndomains = [\"example.org\"]\n",
    );
    give(a, &other);
    let dir = other.display().to_string();
    let t = expect(a, label, 200, "POST", "/v1/trust", json!({"dir": dir}));
    assert_eq!(t["trusted"], false, "{label}: {t}");
    assert!(
        t["widening"].as_array().is_some_and(|w| !w.is_empty()),
        "{label}: {t}"
    );
    let t = expect(
        a,
        label,
        200,
        "POST",
        "/v1/trust",
        json!({"dir": dir, "op": "allow"}),
    );
    assert_eq!(t["trusted"], true, "{label}: {t}");
    let t = expect(a, label, 200, "POST", "/v1/trust", json!({"dir": dir}));
    assert_eq!(t["trusted"], true, "{label}: {t}");
    let out = a.run(&["trust", "--json", &dir]);
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    let t = expect(
        a,
        label,
        200,
        "POST",
        "/v1/trust",
        json!({"dir": dir, "op": "revoke"}),
    );
    assert_eq!(t["trusted"], false, "{label}: {t}");
    let t = expect(a, label, 200, "POST", "/v1/trust", json!({"dir": dir}));
    assert_eq!(t["trusted"], false, "{label}: {t}");
    let e = expect(
        a,
        label,
        400,
        "POST",
        "/v1/trust",
        json!({"dir": "/nonexistent/dir"}),
    );
    assert_eq!(e["kind"], "bad_request", "{label}: {e}");

    expect(
        a,
        label,
        200,
        "DELETE",
        "/v1/sandboxes/cyc?force=true",
        Value::Null,
    );
    ok(a, label, &["rm", "--force", "tmpl"]);
    let _ = p;
}

#[test]
fn an_api_client_drives_files_copies_deliver_trust_and_explain() {
    if !e2e("an_api_client_drives_files_copies_deliver_trust_and_explain") {
        return;
    }
    both_modes(cycle);
}

/// A scripted harness (as in tests/agent.rs): `edit` edits, commits and reports done;
/// `silent` ends without a report.
const AGENT: &str = r#"#!/bin/sh
set -u
word=${AIRLOCK_PROMPT%% *}
case "$word" in
  edit)
    report working "editing notes.txt"
    echo "edited in turn $AIRLOCK_TURN_ID" >> notes.txt
    git add notes.txt && git -c user.email=agent@example.com -c user.name=agent commit -qm "agent: notes" || exit 1
    report done "committed"
    ;;
  *)
    echo "finishing without a report"
    ;;
esac
"#;

/// NDJSON lines of a streamed answer.
fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn agent(a: &Airlock, label: &str) {
    let _g = EngineGuard(a);
    let p = a.cwd.clone();
    write(&p.join("agent.sh"), AGENT);
    common::set_mode(&p.join("agent.sh"), 0o755);
    write(
        &p.join("airlock.toml"),
        "[agent]\nharness = { command = [\"/workspace/agent.sh\"] }\ngrace = \"3s\"\n",
    );
    git(a, &["init", "-q", "-b", "main"]);
    give(a, &p);
    git(a, &["add", "."]);
    git(
        a,
        &[
            "-c",
            "user.email=t@example.com",
            "-c",
            "user.name=t",
            "commit",
            "-qm",
            "init",
        ],
    );
    ok(a, label, &["up", "ag"]);
    ok(a, label, &["create", "plain", "--net", "off"]);

    // A prompt: the turn's journal lines as they come, then how it ended.
    let (code, text) = http(
        a,
        "POST",
        "/v1/sandboxes/ag/prompt",
        Some(&json!({"text": "edit the notes"})),
    );
    assert_eq!(code, 200, "{label}: {text}");
    let l = lines(&text);
    assert_eq!(
        l.last(),
        Some(&json!({"exit": 0, "turn": 1})),
        "{label}: {text}"
    );
    let kinds: Vec<&str> = l.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.contains(&"turn_completed"), "{label}: {text}");
    assert!(
        text.contains("editing notes.txt") && text.contains("committed"),
        "{label}: {text}"
    );
    // The CLI sees the same journal.
    let cli = ok(a, label, &["reports", "ag", "--json"]).stdout;
    let (code, text) = http(a, "GET", "/v1/sandboxes/ag/reports", None);
    assert_eq!(code, 200, "{label}: {text}");
    let l = lines(&text);
    assert_eq!(l.last(), Some(&json!({"exit": 0})), "{label}: {text}");
    assert_eq!(
        l[..l.len() - 1].to_vec(),
        lines(&cli),
        "{label}: the API's journal is not the CLI's"
    );
    // The same as one action (streamed the same way).
    let (code, text2) = http(
        a,
        "POST",
        "/v1/actions",
        Some(&json!({"action": "reports", "name": "ag"})),
    );
    assert_eq!((code, &text2), (200, &text), "{label}");
    // A turn that ends without a report: exit 4.
    let (code, text) = http(
        a,
        "POST",
        "/v1/sandboxes/ag/prompt",
        Some(&json!({"text": "silent please"})),
    );
    assert_eq!(code, 200, "{label}: {text}");
    assert_eq!(
        lines(&text).last(),
        Some(&json!({"exit": 4, "turn": 2})),
        "{label}: {text}"
    );
    // Not waiting: queued, its turn id at once.
    let (code, text) = http(
        a,
        "POST",
        "/v1/sandboxes/ag/prompt",
        Some(&json!({"text": "silent again", "wait": false})),
    );
    assert_eq!(
        (code, text.trim()),
        (200, r#"{"exit":0,"turn":3}"#),
        "{label}"
    );
    // Following: lines come, and the stream goes on until the client leaves.
    let sock = engine_socket(a).display().to_string();
    let out = common::run_with_deadline(
        a.command_with(
            "curl",
            &[
                "-sS",
                "--max-time",
                "3",
                "--unix-socket",
                &sock,
                "http://airlock/v1/sandboxes/ag/reports?follow=true",
            ],
        ),
        None,
        common::DEADLINE,
    );
    assert_eq!(
        out.code(),
        28,
        "{label}: curl should time out following: {}",
        out.describe()
    );
    assert!(
        out.stdout.contains("turn_completed"),
        "{label}: {}",
        out.describe()
    );
    assert!(
        !out.stdout.contains("\"exit\""),
        "{label}: {}",
        out.describe()
    );
    // Not running (created in the same project, so an agent sandbox too): the stream says so;
    // no sandbox: 404 before any stream.
    let (code, text) = http(
        a,
        "POST",
        "/v1/sandboxes/plain/prompt",
        Some(&json!({"text": "hello"})),
    );
    assert_eq!(code, 200, "{label}: {text}");
    let last = lines(&text).pop().unwrap_or_default();
    assert_eq!(last["error"]["kind"], "wrong_state", "{label}: {text}");
    assert!(
        last["error"]["error"]
            .as_str()
            .is_some_and(|m| m.contains("sandbox plain is not running")),
        "{label}: {text}"
    );
    let (code, text) = http(a, "GET", "/v1/sandboxes/nosuch/reports", None);
    assert_eq!(code, 404, "{label}: {text}");

    ok(a, label, &["rm", "--force", "ag"]);
    ok(a, label, &["rm", "--force", "plain"]);
}

#[test]
fn an_api_client_prompts_an_agent_and_reads_its_reports() {
    if !e2e("an_api_client_prompts_an_agent_and_reads_its_reports") {
        return;
    }
    both_modes(agent);
}

fn run_route(a: &Airlock, label: &str) {
    let _g = EngineGuard(a);
    let p = project(a);
    ok(a, label, &["list"]); // starts the engine
    let dir = p.display().to_string();
    // Output as it comes, then the exit status; the project at /workspace, copy-on-write.
    let (code, text) = http(
        a,
        "POST",
        "/v1/run",
        Some(
            &json!({"dir": dir, "argv": ["sh", "-c", "cat a.txt; echo oops >&2; echo changed > a.txt; exit 3"], "net": "off"}),
        ),
    );
    assert_eq!(code, 200, "{label}: {text}");
    let l = lines(&text);
    let of = |stream: &str| -> String {
        l.iter()
            .filter(|e| e["stream"] == stream)
            .filter_map(|e| e["data"].as_str())
            .collect()
    };
    assert_eq!(of("stdout"), "one\n", "{label}: {text}");
    // The command's stderr, then airlock's own note on the discarded changes.
    assert!(
        of("stderr").starts_with("oops\n") && of("stderr").contains("~ a.txt"),
        "{label}: {text}"
    );
    assert_eq!(l.last(), Some(&json!({"exit": 3})), "{label}: {text}");
    assert_eq!(
        std::fs::read_to_string(p.join("a.txt")).expect("a.txt"),
        "one\n",
        "{label}"
    );
    // airlock's own codes: the timeout (124), a command not found (127).
    let (_, text) = http(
        a,
        "POST",
        "/v1/run",
        Some(&json!({"dir": dir, "argv": ["sleep", "20"], "timeout_secs": 1})),
    );
    assert_eq!(
        lines(&text).last(),
        Some(&json!({"exit": 124})),
        "{label}: {text}"
    );
    let (_, text) = http(
        a,
        "POST",
        "/v1/actions",
        Some(&json!({"action": "run", "dir": dir, "argv": ["no-such-command-x"]})),
    );
    assert_eq!(
        lines(&text).last(),
        Some(&json!({"exit": 127})),
        "{label}: {text}"
    );
    // A policy the CLI refuses: the stream's error, with its exit code.
    let (_, text) = http(
        a,
        "POST",
        "/v1/run",
        Some(&json!({"dir": dir, "argv": ["true"], "profile": "yolo"})),
    );
    let last = lines(&text).pop().unwrap_or_default();
    assert_eq!(
        (&last["error"]["kind"], &last["error"]["code"]),
        (&"bad_request".into(), &2.into()),
        "{label}: {text}"
    );
    // Refused before anything starts: out of the schema (400), or by the run (a usage error).
    for bad in [
        json!({"dir": dir, "argv": []}),
        json!({"dir": "relative", "argv": ["true"]}),
        json!({"dir": dir, "argv": ["true"], "timeout_secs": 0}),
    ] {
        let (code, text) = http(a, "POST", "/v1/run", Some(&bad));
        assert_eq!(code, 400, "{label}: {bad}: {text}");
    }
    for bad in [
        json!({"dir": dir, "argv": ["true"], "env": {"A=B": "x"}}),
        json!({"dir": dir, "argv": [""]}),
        json!({"dir": dir, "argv": ["echo", "a\0b"]}),
    ] {
        let (code, text) = http(a, "POST", "/v1/run", Some(&bad));
        assert_eq!(code, 200, "{label}: {bad}: {text}");
        let last = lines(&text).pop().unwrap_or_default();
        assert_eq!(
            last["error"]["kind"], "bad_request",
            "{label}: {bad}: {text}"
        );
    }
    // A client that goes away ends the run (noticed when the run next writes: the engine's
    // HTTP/1 connections take half-closed clients, so a quiet one is noticed on its next line).
    let marker = format!("api-run-marker-{}", common::random_hex());
    let sock = engine_socket(a).display().to_string();
    let body =
        json!({"dir": dir, "argv": ["sh", "-c", format!("while :; do echo tick; sleep 0.2; done # {marker}")]}).to_string();
    let out = common::run_with_deadline(
        a.command_with(
            "curl",
            &[
                "-sS",
                "--max-time",
                "2",
                "--unix-socket",
                &sock,
                "-X",
                "POST",
                "-d",
                &body,
                "http://airlock/v1/run",
            ],
        ),
        None,
        common::DEADLINE,
    );
    assert_eq!(out.code(), 28, "{label}: {}", out.describe());
    assert!(
        common::wait_until(std::time::Duration::from_secs(10), || {
            common::pids_with_marker(&marker).is_empty()
        }),
        "{label}: the run outlived its client: {:?}",
        common::pids_with_marker(&marker)
    );
}

#[test]
fn an_api_client_runs_a_command_in_a_fresh_sandbox() {
    if !e2e("an_api_client_runs_a_command_in_a_fresh_sandbox") {
        return;
    }
    both_modes(run_route);
}
