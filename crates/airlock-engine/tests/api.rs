//! API tests over a real Unix socket: a server thread with the fake backend, and the
//! crate's own client (plus raw bytes where the client would refuse to send them).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use airlock_engine::api;
use airlock_engine::client::parse_response;
use airlock_engine::{Client, ClientError, Engine, FakeBackend};
use airlock_model::exit;
use airlock_model::lifecycle::SandboxState as S;
use common::TempDir;
use serde_json::{json, Value};

struct Server {
    dir: TempDir,
    socket: PathBuf,
    fake: Arc<FakeBackend>,
}

impl Server {
    fn start() -> Server {
        let dir = TempDir::new("api");
        let fake = Arc::new(FakeBackend::new());
        let engine =
            Arc::new(Engine::open(&dir.path().join("state"), fake.clone()).expect("engine"));
        engine.reconcile().expect("reconcile");
        let socket = dir.path().join("run").join("engine.sock");
        let listener = api::bind(&socket).expect("bind");
        std::thread::spawn(move || api::serve(engine, listener));
        Server { dir, socket, fake }
    }

    fn client(&self) -> Client {
        Client::new(&self.socket)
    }
}

fn raw(socket: &Path, request: &[u8]) -> (u16, Value) {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream.write_all(request).expect("write");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let mut out = Vec::new();
    stream.read_to_end(&mut out).expect("read");
    parse_response(&out).expect("response")
}

fn api_err(e: ClientError) -> (u16, String, i32) {
    match e {
        ClientError::Api {
            status, kind, code, ..
        } => (status, kind, code),
        other => panic!("not an API error: {other:?}"),
    }
}

#[test]
fn round_trip() {
    let server = Server::start();
    let client = server.client();
    let mode = std::fs::metadata(&server.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(server.socket.parent().expect("dir"))
        .expect("dir")
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);

    let created = client
        .create("web", &json!({"image": "debian"}))
        .expect("create");
    assert_eq!(
        (created.state, created.image.as_deref()),
        (S::Stopped, Some("debian"))
    );
    let list = client.list().expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "web");
    let status = client.status("web").expect("status");
    assert_eq!(status.record.state, S::Stopped);
    assert_eq!(status.stats, None);
    let started = client.start("web").expect("start");
    assert_eq!(started.state, S::Running);
    let status = client.status("web").expect("status");
    assert!(status.stats.is_some());
    assert!(server.fake.is_running("web"));
    let stopped = client
        .stop("web", Some(Duration::from_millis(1500)))
        .expect("stop");
    assert_eq!(stopped.state, S::Stopped);
    assert!(server
        .fake
        .calls()
        .contains(&airlock_engine::backend::Call::Stop(
            "web".into(),
            Duration::from_millis(1500)
        )));
    client.rm("web", false).expect("rm");
    assert!(client.list().expect("list").is_empty());
    assert!(!server.dir.path().join("state/sandboxes/web").exists());
    let report = client.gc().expect("gc");
    assert!(report.changes.is_empty());
}

#[test]
fn raw_http_shapes() {
    let server = Server::start();
    let body = r#"{"name":"raw","spec":{}}"#;
    let request = format!(
        "POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, value) = raw(&server.socket, request.as_bytes());
    assert_eq!(status, 201);
    assert_eq!(value["name"], "raw");
    assert_eq!(value["state"], "stopped");
    let (status, value) = raw(&server.socket, b"GET /v1/sandboxes/raw HTTP/1.1\r\n\r\n");
    assert_eq!(status, 200);
    assert_eq!(value["uptime_secs"], Value::Null);
    // Stop without a body takes the default grace; start/stop bodies may be empty.
    let (status, _) = raw(
        &server.socket,
        b"POST /v1/sandboxes/raw/start HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status, 200);
    let (status, value) = raw(
        &server.socket,
        b"POST /v1/sandboxes/raw/stop HTTP/1.1\r\n\r\n",
    );
    assert_eq!((status, value["state"].as_str()), (200, Some("stopped")));
    let (status, value) = raw(
        &server.socket,
        b"DELETE /v1/sandboxes/raw?force=true HTTP/1.1\r\n\r\n",
    );
    assert_eq!(
        (status, value),
        (200, json!({"name": "raw", "removed": true}))
    );
}

#[test]
fn errors_have_status_kind_code_and_hint() {
    let server = Server::start();
    let client = server.client();
    // 404: unknown sandbox, unknown route; 405: wrong method.
    assert_eq!(
        api_err(client.status("ghost").expect_err("404")),
        (404, "not_found".into(), exit::NOT_FOUND)
    );
    assert_eq!(
        api_err(client.start("ghost").expect_err("404")),
        (404, "not_found".into(), exit::NOT_FOUND)
    );
    let (status, value) = client.request("GET", "/v2/nothing", None).expect("request");
    assert_eq!((status, value["kind"].as_str()), (404, Some("no_route")));
    let (status, _) = client
        .request("PUT", "/v1/sandboxes", None)
        .expect("request");
    assert_eq!(status, 405);

    // 409: exists, rm of a running one, start of a running one, stop of a stopped one.
    client.create("busy", &json!({})).expect("create");
    let err = client.create("busy", &json!({})).expect_err("exists");
    match &err {
        ClientError::Api { hint, .. } => {
            assert!(hint.as_deref().unwrap_or("").contains("airlock start busy"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(api_err(err), (409, "exists".into(), exit::ALREADY_EXISTS));
    assert_eq!(
        api_err(client.stop("busy", None).expect_err("stopped")),
        (409, "wrong_state".into(), exit::CONFLICT)
    );
    client.start("busy").expect("start");
    assert_eq!(
        api_err(client.start("busy").expect_err("running")),
        (409, "wrong_state".into(), exit::CONFLICT)
    );
    let err = client.rm("busy", false).expect_err("running");
    assert_eq!(
        err.hint().as_deref(),
        Some("airlock stop busy, or airlock rm --force busy")
    );
    assert_eq!(api_err(err), (409, "wrong_state".into(), exit::CONFLICT));
    client.rm("busy", true).expect("rm --force");

    // 400: invalid names, malformed JSON, wrong shapes, garbage HTTP.
    assert_eq!(
        api_err(client.create("Bad_Name", &json!({})).expect_err("name")).0,
        400
    );
    assert_eq!(api_err(client.status("..").expect_err("name")).0, 400);
    assert_eq!(
        api_err(client.create("ok", &json!([1])).expect_err("spec")).0,
        400
    );
    let cases: Vec<Vec<u8>> = vec![
        b"POST /v1/sandboxes HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"name\":".to_vec(),
        b"POST /v1/sandboxes HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]".to_vec(),
        b"POST /v1/sandboxes HTTP/1.1\r\nContent-Length: 11\r\n\r\n{\"spec\":{}}".to_vec(),
        b"POST /v1/sandboxes/x/stop HTTP/1.1\r\nContent-Length: 16\r\n\r\n{\"grace_ms\":-1 }"
            .to_vec(),
        b"DELETE /v1/sandboxes/x?force=maybe HTTP/1.1\r\n\r\n".to_vec(),
        b"POST /v1/sandboxes HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort".to_vec(),
        b"NOT HTTP AT ALL\r\n\r\n".to_vec(),
        b"POST /v1/sandboxes HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
    ];
    for request in cases {
        let (status, value) = raw(&server.socket, &request);
        assert_eq!(
            status,
            400,
            "{}: {value}",
            String::from_utf8_lossy(&request)
        );
        assert!(value["error"].is_string(), "{value}");
        assert_eq!(value["code"], exit::USAGE);
    }
    let huge = format!(
        "POST /v1/sandboxes HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        2 << 20
    );
    assert_eq!(raw(&server.socket, huge.as_bytes()).0, 413);
    // Nothing was created by any of it.
    assert!(client.list().expect("list").is_empty());
}

#[test]
fn backend_failure_over_the_api() {
    let server = Server::start();
    let client = server.client();
    client.create("flaky", &json!({})).expect("create");
    server.fake.fail(
        "flaky",
        airlock_engine::backend::FakeOp::Start,
        "pivot_root: EINVAL",
    );
    let err = client.start("flaky").expect_err("start");
    assert!(err.to_string().contains("pivot_root: EINVAL"), "{err}");
    assert_eq!(api_err(err), (500, "backend".into(), exit::SANDBOX_FAILED));
    let status = client.status("flaky").expect("status");
    assert_eq!(status.record.state, S::Failed);
    assert_eq!(
        status.record.last_error.as_deref(),
        Some("pivot_root: EINVAL")
    );
}

#[test]
fn sixty_four_parallel_creates_all_succeed() {
    let server = Server::start();
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let client = server.client();
            std::thread::spawn(move || client.create(&format!("par-{i}"), &json!({"n": i})))
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for thread in threads {
        let record = thread.join().expect("join").expect("create");
        assert_eq!(record.state, S::Stopped);
        assert!(ids.insert(record.id));
    }
    let list = server.client().list().expect("list");
    assert_eq!(list.len(), 64);
    for record in &list {
        let n: usize = record.name["par-".len()..].parse().expect("n");
        assert_eq!(record.spec, json!({"n": n}));
        assert!(server
            .dir
            .path()
            .join("state/sandboxes")
            .join(&record.name)
            .join("spec.json")
            .exists());
    }
}

#[test]
fn authorize_only_the_owner() {
    assert!(api::authorize(1000, 1000).is_ok());
    assert!(api::authorize(0, 0).is_ok());
    let refused = api::authorize(1001, 1000).expect_err("other user");
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body["kind"], "forbidden");
    // root is not let into a user's engine either: it gets its own.
    assert_eq!(api::authorize(0, 1000).expect_err("root").status, 403);
}

/// Run as another uid by `another_uid_is_refused` (does nothing otherwise).
#[test]
fn peer_helper() {
    let Some(socket) = std::env::var_os("AIRLOCK_TEST_PEER_SOCKET") else {
        return;
    };
    let (status, value) = raw(Path::new(&socket), b"GET /v1/sandboxes HTTP/1.1\r\n\r\n");
    println!("PEER-RESULT status={status} kind={}", value["kind"]);
}

#[test]
fn another_uid_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a client as another uid");
        return;
    }
    let server = Server::start();
    // Open the folder and socket to everyone so that only the peer check stands in the way.
    std::fs::set_permissions(server.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::set_permissions(
        server.socket.parent().expect("dir"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::set_permissions(&server.socket, std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    server.client().create("mine", &json!({})).expect("create");
    let exe = std::env::current_exe().expect("exe");
    let out = std::process::Command::new(&exe)
        .args(["--exact", "peer_helper", "--nocapture", "--test-threads=1"])
        .env("AIRLOCK_TEST_PEER_SOCKET", &server.socket)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run helper");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("PEER-RESULT status=403 kind=\"forbidden\""),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And it saw nothing: the owner still has its sandbox, untouched.
    assert_eq!(server.client().list().expect("list").len(), 1);
}

use std::os::unix::process::CommandExt;

#[test]
fn a_failing_engine_start_is_reported_with_its_log() {
    let dir = TempDir::new("autostart");
    let socket = dir.path().join("run/engine.sock");
    let err =
        Client::connect_or_start_at(&socket, &dir.path().join("state"), Path::new("/bin/false"))
            .expect_err("cannot start");
    assert!(matches!(err, ClientError::Start { .. }), "{err:?}");
    assert!(err.hint().unwrap_or_default().contains("engine.log"));
    assert!(dir.path().join("run/engine.lock").exists());
}

#[test]
fn connect_or_start_uses_a_running_engine() {
    let server = Server::start();
    // A live engine answers: the exe is never run.
    let client = Client::connect_or_start_at(
        &server.socket,
        &server.dir.path().join("state"),
        Path::new("/nonexistent"),
    )
    .expect("connect");
    client.ping().expect("ping");
}

/// Found by schemathesis: a `grace_ms` past what a deadline can hold (the backend adds it to
/// `Instant::now()`, which panics on overflow) is refused before anything is stopped.
#[test]
fn a_grace_too_long_for_the_clock_is_refused() {
    let server = Server::start();
    let client = server.client();
    client.create("long", &json!({})).expect("create");
    client.start("long").expect("start");
    for grace in [
        json!(9_223_372_036_854_775_808u64),
        json!(u64::MAX),
        json!(1_000_000_000_001u64),
    ] {
        let (status, value) = client
            .request(
                "POST",
                "/v1/sandboxes/long/stop",
                Some(&json!({ "grace_ms": grace })),
            )
            .expect("request");
        assert_eq!(
            (status, value["kind"].as_str()),
            (400, Some("bad_request")),
            "{value}"
        );
    }
    assert_eq!(
        client.status("long").expect("status").record.state,
        S::Running
    );
    // The longest one `airlock stop --grace` can give is fine.
    let (status, value) = client
        .request(
            "POST",
            "/v1/sandboxes/long/stop",
            Some(&json!({ "grace_ms": 1_000_000_000_000u64 })),
        )
        .expect("request");
    assert_eq!(
        (status, value["state"].as_str()),
        (200, Some("stopped")),
        "{value}"
    );
}

/// A `null` body is no body (the document allows it for start and stop).
#[test]
fn a_null_body_is_no_body() {
    let server = Server::start();
    let client = server.client();
    client.create("nul", &json!({})).expect("create");
    let (status, value) = client
        .request("POST", "/v1/sandboxes/nul/start", Some(&Value::Null))
        .expect("request");
    assert_eq!(
        (status, value["state"].as_str()),
        (200, Some("running")),
        "{value}"
    );
    let (status, value) = client
        .request("POST", "/v1/sandboxes/nul/stop", Some(&Value::Null))
        .expect("request");
    assert_eq!(
        (status, value["state"].as_str()),
        (200, Some("stopped")),
        "{value}"
    );
    // create needs its body.
    let (status, _) = client
        .request("POST", "/v1/sandboxes", Some(&Value::Null))
        .expect("request");
    assert_eq!(status, 400);
}

/// Found by schemathesis: JSON Schema counts `1500.0` as an integer, so the server does too;
/// fractions and negatives stay refused.
#[test]
fn grace_ms_is_an_integer_as_json_schema_counts_them() {
    let server = Server::start();
    let client = server.client();
    client.create("whole", &json!({})).expect("create");
    client.start("whole").expect("start");
    for bad in [
        json!(1.5),
        json!(-1),
        json!(-1.0),
        json!("10"),
        json!(1e300),
    ] {
        let (status, value) = client
            .request(
                "POST",
                "/v1/sandboxes/whole/stop",
                Some(&json!({ "grace_ms": bad })),
            )
            .expect("request");
        assert_eq!(status, 400, "{bad}: {value}");
    }
    let (status, value) = client
        .request(
            "POST",
            "/v1/sandboxes/whole/stop",
            Some(&json!({ "grace_ms": 1500.0 })),
        )
        .expect("request");
    assert_eq!(
        (status, value["state"].as_str()),
        (200, Some("stopped")),
        "{value}"
    );
    assert!(server
        .fake
        .calls()
        .contains(&airlock_engine::backend::Call::Stop(
            "whole".into(),
            Duration::from_millis(1500)
        )));
}

fn start_with_limits(limits: api::Limits) -> Server {
    let dir = TempDir::new("api-limits");
    let fake = Arc::new(FakeBackend::new());
    let engine = Arc::new(Engine::open(&dir.path().join("state"), fake.clone()).expect("engine"));
    let socket = dir.path().join("run").join("engine.sock");
    let listener = api::bind(&socket).expect("bind");
    std::thread::spawn(move || api::serve_with(engine, listener, limits));
    Server { dir, socket, fake }
}

/// Reads what the server sends until it closes, failing the test if it does not within 5 s.
fn read_until_closed(stream: &mut UnixStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut out = Vec::new();
    stream
        .read_to_end(&mut out)
        .expect("the server closes the connection");
    out
}

#[test]
fn connections_over_the_cap_are_told_busy_and_a_freed_slot_serves_again() {
    let server = start_with_limits(api::Limits {
        max_connections: 2,
        ..api::Limits::default()
    });
    let held: Vec<UnixStream> = (0..2)
        .map(|_| UnixStream::connect(&server.socket).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let (status, value) = raw(&server.socket, b"GET /v1/health HTTP/1.1\r\n\r\n");
    assert_eq!(
        (status, value["kind"].as_str()),
        (503, Some("busy")),
        "{value}"
    );
    assert_eq!(value["hint"], "retry");
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = raw(&server.socket, b"GET /v1/health HTTP/1.1\r\n\r\n");
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still busy: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_client_that_sends_nothing_or_too_slowly_gets_408_and_is_closed() {
    let server = start_with_limits(api::Limits {
        idle_timeout: Duration::from_millis(300),
        ..api::Limits::default()
    });
    let partial: [&[u8]; 3] = [
        b"",
        b"GET /v1/hea",
        // The head is whole, the body never comes.
        b"POST /v1/sandboxes HTTP/1.1\r\nContent-Length: 10\r\n\r\n{\"a",
    ];
    for sent in partial {
        let started = std::time::Instant::now();
        let mut stream = UnixStream::connect(&server.socket).expect("connect");
        stream.write_all(sent).expect("write");
        let out = read_until_closed(&mut stream);
        let (status, value) = parse_response(&out).expect("an answer");
        assert_eq!(
            (status, value["kind"].as_str()),
            (408, Some("timeout")),
            "{}: {value}",
            String::from_utf8_lossy(sent)
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    // Nothing was created.
    assert!(server.client().list().expect("list").is_empty());
}

#[test]
fn a_client_that_stops_reading_the_answer_is_dropped() {
    let server = start_with_limits(api::Limits {
        idle_timeout: Duration::from_millis(300),
        max_connections: 1,
        ..api::Limits::default()
    });
    // A list answer far larger than what the socket buffers hold.
    let pad = "x".repeat(400_000);
    for i in 0..5 {
        server
            .client()
            .create(&format!("big-{i}"), &json!({ "pad": pad }))
            .expect("create");
    }
    let mut stream = UnixStream::connect(&server.socket).expect("connect");
    stream
        .write_all(b"GET /v1/sandboxes HTTP/1.1\r\n\r\n")
        .expect("write");
    std::thread::sleep(Duration::from_millis(1500));
    let out = read_until_closed(&mut stream);
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &out[..out.len().min(40)]
    );
    assert!(
        out.len() < 2_000_000,
        "got the whole answer ({} bytes)",
        out.len()
    );
    assert!(parse_response(&out).is_err(), "a cut-off answer parses");
    // Its slot is free again (the cap is 1).
    assert_eq!(server.client().list().expect("list").len(), 5);
}

#[test]
fn a_trailing_slash_names_the_same_route() {
    let server = Server::start();
    server.client().create("slash", &json!({})).expect("create");
    let (status, value) = raw(&server.socket, b"GET /v1/sandboxes/ HTTP/1.1\r\n\r\n");
    assert_eq!((status, value[0]["name"].as_str()), (200, Some("slash")));
    let (status, value) = raw(&server.socket, b"GET /v1/sandboxes/slash/ HTTP/1.1\r\n\r\n");
    assert_eq!((status, value["name"].as_str()), (200, Some("slash")));
    let (status, value) = raw(
        &server.socket,
        b"DELETE /v1/sandboxes/slash/?force=true HTTP/1.1\r\n\r\n",
    );
    assert_eq!((status, value["removed"].as_bool()), (200, Some(true)));
}

/// hyper answers heads it refuses with a bare 400; the transport's own head check must refuse
/// them first, so every answer has the JSON error body.
#[test]
fn odd_request_heads_are_answered_in_the_error_shape() {
    let server = Server::start();
    let cases: &[(&[u8], u16)] = &[
        (
            b"POST /v1/sandboxes HTTP/1.1\r\nContent-Length: +2\r\n\r\n{}",
            400,
        ),
        (
            b"POST /v1/sandboxes HTTP/1.1\r\nContent-Length: 0x2\r\n\r\n{}",
            400,
        ),
        (
            b"POST /v1/sandboxes HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
            400,
        ),
        (
            b"POST /v1/sandboxes HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n{}",
            400,
        ),
        (
            b"GET /v1/health HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
            400,
        ),
        (b"GET /v1/health HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"GET /v1/health HTTP/2.0\r\n\r\n", 400),
        (b"GET /v1/health\r\n\r\n", 400),
        (b"GET v1/health HTTP/1.1\r\n\r\n", 400),
        (b"GET /v1/he alth HTTP/1.1\r\n\r\n", 400),
        (b"\r\n\r\n", 400),
        (b"GET /v1/health HTTP/1.0\r\n\r\n", 200),
        (b"GET http://airlock/v1/health HTTP/1.1\r\n\r\n", 200),
        (
            b"GET /v1/health HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            200,
        ),
        (b"GET /v1/health?x=%ZZ HTTP/1.1\r\n\r\n", 200),
    ];
    for (request, expected) in cases {
        let (status, value) = raw(&server.socket, request);
        assert_eq!(
            status,
            *expected,
            "{:?}: {value}",
            String::from_utf8_lossy(request)
        );
        if status != 200 {
            assert!(
                value["error"].is_string() && value["kind"].is_string(),
                "{:?}: {value}",
                String::from_utf8_lossy(request)
            );
        } else {
            assert_eq!(value["ok"], true);
        }
    }
}

/// Random byte-level mutations of valid requests: whatever hyper or the router make of them,
/// the answer is HTTP with a JSON body (an error body for every error), never a bare status or
/// silence.
#[test]
fn mutated_requests_are_always_answered_in_json() {
    let server = Server::start();
    let seeds: [&[u8]; 4] = [
        b"POST /v1/sandboxes HTTP/1.1\r\nHost: a\r\nContent-Length: 26\r\n\r\n{\"name\":\"m\",\"spec\":{\"a\":1}}",
        b"POST /v1/sandboxes/m/stop HTTP/1.1\r\nContent-Length: 16\r\n\r\n{\"grace_ms\":100}",
        b"DELETE /v1/sandboxes/m?force=true HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /v1/sandboxes/m HTTP/1.1\r\nAccept: */*\r\n\r\n",
    ];
    let alphabet = b" \r\n:/?%&=\t\0\x7f\xffaZ09-{}\"";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..1500 {
        let mut request = seeds[round % seeds.len()].to_vec();
        for _ in 0..1 + next() % 3 {
            let at = (next() as usize) % (request.len() + 1);
            match next() % 3 {
                0 if at < request.len() => {
                    request.remove(at);
                }
                1 if at < request.len() => {
                    request[at] = alphabet[(next() as usize) % alphabet.len()];
                }
                _ => request.insert(at, alphabet[(next() as usize) % alphabet.len()]),
            }
        }
        let (status, value) = raw(&server.socket, &request);
        assert!(
            (200..600).contains(&status),
            "{:?}: {status}",
            String::from_utf8_lossy(&request)
        );
        if status >= 400 {
            assert!(
                value["error"].is_string() && value["kind"].is_string(),
                "{:?}: {status} {value}",
                String::from_utf8_lossy(&request)
            );
        } else {
            assert!(!value.is_null(), "{:?}", String::from_utf8_lossy(&request));
        }
    }
}
