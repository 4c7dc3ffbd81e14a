//! The OpenAPI document: what it lists, that it is valid OpenAPI 3.1, that the engine serves
//! it, and that it is true — schemathesis (a property-based API tester, from PyPI) generates
//! requests from it against a live engine and checks every answer against it.
//!
//! The engine under test is the real server and engine over the recording fake backend (as in
//! tests/api.rs): what is proved is the API layer, and fuzzed specs start nothing on the host.
//!
//! The tester lives in a venv made by `.ci/install-api-tester` (target/api-tester, or
//! `$AIRLOCK_API_TESTER`); without it these tests fail, they do not skip.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use airlock_engine::{api, Client, Engine, FakeBackend};
use common::TempDir;
use serde_json::Value;

const INSTALL: &str = "run `.ci/install-api-tester` (installs schemathesis and \
                       openapi-spec-validator from PyPI into target/api-tester; \
                       AIRLOCK_API_TESTER overrides the folder)";

/// The venv holding schemathesis and openapi-spec-validator.
fn tester() -> PathBuf {
    let dir = std::env::var_os("AIRLOCK_API_TESTER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/api-tester")
                .canonicalize()
                .unwrap_or_else(|_| PathBuf::from("target/api-tester"))
        });
    assert!(
        dir.join("bin/schemathesis").is_file() && dir.join("bin/python").is_file(),
        "the API tester is missing from {}: {INSTALL}",
        dir.display()
    );
    dir
}

struct Server {
    dir: TempDir,
    socket: PathBuf,
}

impl Server {
    fn start() -> Server {
        let dir = TempDir::new("openapi");
        let engine = Arc::new(
            Engine::open(&dir.path().join("state"), Arc::new(FakeBackend::new())).expect("engine"),
        );
        engine.reconcile().expect("reconcile");
        let socket = dir.path().join("run").join("engine.sock");
        let listener = api::bind(&socket).expect("bind");
        std::thread::spawn(move || api::serve(engine, listener));
        Server { dir, socket }
    }
}

/// Forwards 127.0.0.1:PORT to the engine's socket (schemathesis speaks TCP); returns PORT.
fn tcp_proxy(socket: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let socket = socket.clone();
            std::thread::spawn(move || {
                let Ok(unix) = UnixStream::connect(&socket) else {
                    return;
                };
                let (Ok(mut tcp_in), Ok(mut unix_out)) = (tcp.try_clone(), unix.try_clone()) else {
                    return;
                };
                let upstream = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut tcp_in, &mut unix_out);
                    let _ = unix_out.shutdown(Shutdown::Write);
                });
                let (mut unix_in, mut tcp_out) = (unix, tcp);
                let _ = std::io::copy(&mut unix_in, &mut tcp_out);
                let _ = tcp_out.shutdown(Shutdown::Both);
                let _ = upstream.join();
            });
        }
    });
    port
}

fn document() -> Value {
    serde_json::to_value(api::openapi()).expect("document")
}

/// method and path -> documented statuses, sorted.
fn operations(doc: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let mut statuses: Vec<String> = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .cloned()
                .collect();
            statuses.sort();
            out.insert(format!("{} {path}", method.to_uppercase()), statuses);
        }
    }
    out
}

#[test]
fn the_document_lists_every_route_with_its_answers() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let common = ["400", "403", "408", "413", "500", "503"];
    let with = |extra: &[&str]| {
        let mut all: Vec<String> = common.iter().chain(extra).map(|s| s.to_string()).collect();
        all.sort();
        all.dedup();
        all
    };
    let expected: BTreeMap<String, Vec<String>> = [
        ("GET /v1/health", with(&["200"])),
        ("GET /v1/openapi.json", with(&["200"])),
        ("GET /v1/sandboxes", with(&["200"])),
        ("POST /v1/sandboxes", with(&["201", "409"])),
        ("GET /v1/sandboxes/{name}", with(&["200", "404"])),
        ("DELETE /v1/sandboxes/{name}", with(&["200", "404", "409"])),
        (
            "POST /v1/sandboxes/{name}/start",
            with(&["200", "404", "409"]),
        ),
        (
            "POST /v1/sandboxes/{name}/stop",
            with(&["200", "404", "409"]),
        ),
        ("POST /v1/gc", with(&["200"])),
        ("POST /v1/sandboxes/{name}/exec", with(&["200", "404"])),
        ("POST /v1/actions", with(&["200", "404", "409"])),
        (
            "GET /v1/sandboxes/{name}/diff",
            with(&["200", "404", "409"]),
        ),
        (
            "POST /v1/sandboxes/{name}/fetch",
            with(&["200", "404", "409"]),
        ),
        (
            "POST /v1/sandboxes/{name}/sync",
            with(&["200", "404", "409"]),
        ),
        (
            "POST /v1/sandboxes/{name}/files/read",
            with(&["200", "404", "409"]),
        ),
        (
            "POST /v1/sandboxes/{name}/files/write",
            with(&["200", "404", "409"]),
        ),
        (
            "POST /v1/sandboxes/{name}/copy",
            with(&["200", "404", "409"]),
        ),
        (
            "POST /v1/sandboxes/{name}/deliver",
            with(&["200", "404", "409"]),
        ),
        ("POST /v1/trust", with(&["200"])),
        ("POST /v1/run", with(&["200"])),
        ("POST /v1/sandboxes/{name}/prompt", with(&["200", "404"])),
        ("GET /v1/sandboxes/{name}/reports", with(&["200", "404"])),
        ("POST /v1/explain", with(&["200", "404"])),
        (
            "POST /v1/sandboxes/{name}/allow",
            with(&["200", "404", "409"]),
        ),
        (
            "POST /v1/sandboxes/{name}/deny",
            with(&["200", "404", "409"]),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(operations(&doc), expected);
    // Stable operation ids, for SDK generators.
    let mut ids: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            let id = operation["operationId"].as_str().expect("operationId");
            ids.push((id.to_owned(), format!("{} {path}", method.to_uppercase())));
        }
    }
    ids.sort();
    let ids: Vec<(&str, &str)> = ids.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        ids,
        [
            ("agent_reports", "GET /v1/sandboxes/{name}/reports"),
            ("allow_domain", "POST /v1/sandboxes/{name}/allow"),
            ("copy_files", "POST /v1/sandboxes/{name}/copy"),
            ("create_sandbox", "POST /v1/sandboxes"),
            ("deliver_branch", "POST /v1/sandboxes/{name}/deliver"),
            ("deny_domain", "POST /v1/sandboxes/{name}/deny"),
            ("diff_sandbox", "GET /v1/sandboxes/{name}/diff"),
            ("exec_sandbox", "POST /v1/sandboxes/{name}/exec"),
            ("execute_action", "POST /v1/actions"),
            ("explain_policy", "POST /v1/explain"),
            ("fetch_sandbox", "POST /v1/sandboxes/{name}/fetch"),
            ("gc", "POST /v1/gc"),
            ("get_sandbox", "GET /v1/sandboxes/{name}"),
            ("health", "GET /v1/health"),
            ("list_sandboxes", "GET /v1/sandboxes"),
            ("openapi", "GET /v1/openapi.json"),
            ("prompt_agent", "POST /v1/sandboxes/{name}/prompt"),
            ("read_file", "POST /v1/sandboxes/{name}/files/read"),
            ("remove_sandbox", "DELETE /v1/sandboxes/{name}"),
            ("run_command", "POST /v1/run"),
            ("start_sandbox", "POST /v1/sandboxes/{name}/start"),
            ("stop_sandbox", "POST /v1/sandboxes/{name}/stop"),
            ("sync_sandbox", "POST /v1/sandboxes/{name}/sync"),
            ("trust_project", "POST /v1/trust"),
            ("write_file", "POST /v1/sandboxes/{name}/files/write"),
        ]
    );
    // Every error answer is the one error body.
    for item in doc["paths"].as_object().expect("paths").values() {
        for operation in item.as_object().expect("item").values() {
            for (status, response) in operation["responses"].as_object().expect("responses") {
                if status.starts_with('2') {
                    continue;
                }
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{status} of {operation}"
                );
            }
        }
    }
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "Record",
        "Status",
        "Stats",
        "ReconcileReport",
        "Change",
        "SandboxState",
        "ErrorBody",
        "CreateRequest",
        "StartRequest",
        "StopRequest",
        "Health",
        "Removed",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    assert_eq!(
        schemas["SandboxState"]["enum"],
        serde_json::json!([
            "creating", "stopped", "starting", "running", "stopping", "removing", "failed"
        ])
    );
    let mut error_fields: Vec<&str> = schemas["ErrorBody"]["properties"]
        .as_object()
        .expect("ErrorBody")
        .keys()
        .map(String::as_str)
        .collect();
    error_fields.sort();
    assert_eq!(error_fields, ["code", "detail", "error", "hint", "kind"]);
}

/// docs/openapi.json is the document as the code generates it (`AIRLOCK_BLESS=1` rewrites it).
#[test]
fn docs_openapi_json_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = api::openapi().to_pretty_json().expect("json") + "\n";
    if std::env::var_os("AIRLOCK_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write docs/openapi.json");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is not the document the code generates; \
         AIRLOCK_BLESS=1 cargo test -p airlock-engine --test openapi rewrites it"
    );
}

#[test]
fn the_document_is_valid_openapi_3_1() {
    let venv = tester();
    let dir = TempDir::new("openapi-validate");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, api::openapi().to_pretty_json().expect("json")).expect("write");
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", VALIDATE])
        .arg(&file)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "openapi-spec-validator rejects the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "valid OpenAPI 3.1"
    );
}

const VALIDATE: &str = r#"
import json, sys
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator
with open(sys.argv[1]) as f:
    spec = json.load(f)
validate(spec, cls=OpenAPIV31SpecValidator)
print("valid OpenAPI 3.1")
"#;

#[test]
fn the_engine_serves_its_document() {
    let server = Server::start();
    let (status, served) = Client::new(&server.socket)
        .request("GET", "/v1/openapi.json", None)
        .expect("request");
    assert_eq!(status, 200);
    assert_eq!(served, document());
    // Through the TCP forwarder too (what schemathesis sees).
    let port = tcp_proxy(server.socket.clone());
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.write_all(b"GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).expect("read");
    let (status, served) = airlock_engine::client::parse_response(&raw).expect("response");
    assert_eq!((status, served), (200, document()));
    drop(server.dir);
}

/// schemathesis against the live engine: every phase (the document's examples, coverage of
/// each schema's edges, random fuzzing, stateful sequences create -> start -> stop -> delete),
/// every check (status codes, content types, bodies against the schemas, valid input accepted,
/// invalid input rejected, no 5xx, deleted resources gone). Exit status 0 or the report.
#[test]
fn schemathesis_finds_the_document_true() {
    let venv = tester();
    let server = Server::start();
    let port = tcp_proxy(server.socket.clone());
    let base = format!("http://127.0.0.1:{port}");
    let report = server.dir.path().join("schemathesis.ndjson");
    // A fixed seed keeps CI reproducible; AIRLOCK_API_TEST_SEED / _EXAMPLES search further.
    let examples = std::env::var("AIRLOCK_API_TEST_EXAMPLES").unwrap_or_else(|_| "60".into());
    let seed = std::env::var("AIRLOCK_API_TEST_SEED").unwrap_or_else(|_| "13".into());
    let out = Command::new(venv.join("bin/schemathesis"))
        .current_dir(server.dir.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1")
        .args(["run", &format!("{base}/v1/openapi.json")])
        .args(["--checks", "all"])
        .args(["--max-examples", &examples])
        .args(["--workers", "1", "--seed", &seed])
        .args(["--request-timeout", "20"])
        .args(["--warnings", "off"])
        .args(["--report", "ndjson", "--report-ndjson-path"])
        .arg(&report)
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found the document untrue ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // It really tested: every operation but the document itself (schemathesis leaves out the
    // URL it loaded the schema from; `the_engine_serves_its_document` covers that one), and
    // the stateful phase.
    let mut labels = std::collections::BTreeSet::new();
    for line in std::fs::read_to_string(&report)
        .expect("schemathesis report")
        .lines()
    {
        collect_labels(&serde_json::from_str(line).expect("ndjson"), &mut labels);
    }
    for label in [
        "GET /v1/health",
        "GET /v1/sandboxes",
        "POST /v1/sandboxes",
        "GET /v1/sandboxes/{name}",
        "DELETE /v1/sandboxes/{name}",
        "POST /v1/sandboxes/{name}/start",
        "POST /v1/sandboxes/{name}/stop",
        "POST /v1/gc",
        "Stateful tests",
    ] {
        assert!(
            labels.contains(label),
            "schemathesis did not test {label} (it tested {labels:?}):\n{stdout}"
        );
    }
    let summary = stdout
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or("");
    eprintln!("schemathesis: {}", summary.trim());
}

/// Every `"label"` string in a report event (the operations and phases it ran).
fn collect_labels(value: &Value, out: &mut std::collections::BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("label", Value::String(label)) => {
                        out.insert(label.clone());
                    }
                    _ => collect_labels(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_labels(v, out)),
        _ => {}
    }
}

/// The document's name pattern (request body, path parameter, Record) is the engine's own rule
/// (`validate_name`), checked over edge cases and random strings with Python's regex engine.
#[test]
fn the_name_pattern_is_the_engines_rule() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let mut patterns = vec![
        schemas["CreateRequest"]["properties"]["name"]["pattern"].clone(),
        schemas["Record"]["properties"]["name"]["pattern"].clone(),
        schemas["ExplainRequest"]["properties"]["sandbox"]["pattern"].clone(),
    ];
    for item in doc["paths"].as_object().expect("paths").values() {
        for operation in item.as_object().expect("item").values() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["name"] == "name" {
                    patterns.push(parameter["schema"]["pattern"].clone());
                }
            }
        }
    }
    assert_eq!(patterns.len(), 3 + 16, "{patterns:?}");
    for pattern in &patterns {
        assert_eq!(pattern, api::routes::NAME_PATTERN);
    }
    let mut names: Vec<String> = [
        "", "a", "-", "a-", "-a", "a-b", "a--b", "web", "Web", "a_b", "a.b", "..", "0", "9-9",
        "a\n", "\na", "a b", "é",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "x".repeat(63),
        "x".repeat(64),
        format!("a{}b", "-".repeat(61)),
    ])
    .collect();
    let alphabet: Vec<char> = "ab09-A_.\n".chars().collect();
    let mut state: u64 = 42;
    for _ in 0..2000 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = (state >> 33) as usize % 70;
        let name: String = (0..len)
            .map(|i| {
                let r = state.rotate_left(i as u32 * 7) as usize;
                alphabet[r % alphabet.len()]
            })
            .collect();
        names.push(name);
    }
    let expected: Vec<bool> = names
        .iter()
        .map(|n| airlock_model::spec::validate_name(n).is_ok())
        .collect();
    let venv = tester();
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import json, re, sys; p, names = json.load(sys.stdin); \
             print(json.dumps([re.fullmatch(p, n) is not None for n in names]))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            let input = serde_json::to_vec(&(api::routes::NAME_PATTERN, &names))?;
            child.stdin.take().expect("stdin").write_all(&input)?;
            child.wait_with_output()
        })
        .expect("run python");
    let matched: Vec<bool> = serde_json::from_slice(&out.stdout).expect("python's answer");
    for ((name, want), got) in names.iter().zip(&expected).zip(&matched) {
        assert_eq!(
            want, got,
            "{name:?}: engine says {want}, pattern says {got}"
        );
    }
    assert!(expected.iter().filter(|ok| **ok).count() > 10);
}
