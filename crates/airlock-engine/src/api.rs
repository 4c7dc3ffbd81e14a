//! The engine's API: HTTP/1.1 + JSON on a Unix socket, one thread per connection, one
//! request per connection. Only the engine's own user may talk to it (`SO_PEERCRED`).
//! The routes and bodies are documented in docs/api.md.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use serde_json::{json, Value};

use crate::backend::Backend;
use crate::engine::{Engine, EngineError};

/// Largest request head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body (a spec is a few KiB).
const MAX_BODY: usize = 1024 * 1024;
/// Connections served at once; more get 503 at once.
const MAX_CONNECTIONS: usize = 512;
/// A client that sends nothing for this long is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed request: what the router needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: Option<String>,
    pub body: Vec<u8>,
}

/// A response: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

impl Response {
    fn ok(status: u16, body: Value) -> Response {
        Response { status, body }
    }

    /// The error body: `{error, hint, code, kind}`.
    pub fn error(
        status: u16,
        kind: &str,
        error: String,
        hint: Option<String>,
        code: i32,
    ) -> Response {
        Response {
            status,
            body: json!({ "error": error, "hint": hint, "code": code, "kind": kind }),
        }
    }

    fn from_engine(e: &EngineError) -> Response {
        // The whole cause chain: "cannot start sandbox x: <backend's reason>" already holds
        // it for backend errors; store errors keep theirs in source().
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            source = cause.source();
        }
        Response::error(e.http_status(), e.kind(), message, e.hint(), e.exit_code())
    }

    fn bad_request(message: impl Into<String>) -> Response {
        Response::error(
            400,
            "bad_request",
            message.into(),
            None,
            airlock_model::exit::USAGE,
        )
    }
}

/// May a peer with `peer_uid` use an engine run by `owner_uid`? Only the same user.
pub fn authorize(peer_uid: u32, owner_uid: u32) -> Result<(), Response> {
    if peer_uid == owner_uid {
        return Ok(());
    }
    Err(Response::error(
        403,
        "forbidden",
        format!("this airlock engine belongs to uid {owner_uid}, not to uid {peer_uid}"),
        Some(
            "each user has their own engine; run airlock as the user who owns the sandboxes".into(),
        ),
        airlock_model::exit::USAGE,
    ))
}

/// Routes one request to the engine.
pub fn handle(engine: &Engine, request: &Request) -> Response {
    let segments: Vec<&str> = request.path.trim_end_matches('/').split('/').collect();
    let method = request.method.as_str();
    let result = match (method, segments.as_slice()) {
        ("GET", ["", "v1", "health"]) => Ok(Response::ok(
            200,
            json!({ "ok": true, "pid": std::process::id() }),
        )),
        ("GET", ["", "v1", "sandboxes"]) => engine
            .list()
            .map(|records| Response::ok(200, json!(records))),
        ("POST", ["", "v1", "sandboxes"]) => return create(engine, &request.body),
        ("GET", ["", "v1", "sandboxes", name]) => engine
            .status(name)
            .map(|status| Response::ok(200, json!(status))),
        ("POST", ["", "v1", "sandboxes", name, "start"]) => {
            let secrets = match start_secrets(&request.body) {
                Ok(s) => s,
                Err(response) => return response,
            };
            engine
                .start_with(name, &secrets)
                .map(|record| Response::ok(200, json!(record)))
        }
        ("POST", ["", "v1", "sandboxes", name, "stop"]) => {
            let grace = match stop_grace(&request.body) {
                Ok(grace) => grace,
                Err(response) => return response,
            };
            engine
                .stop(name, grace)
                .map(|record| Response::ok(200, json!(record)))
        }
        ("DELETE", ["", "v1", "sandboxes", name]) => {
            let force = match query_flag(request.query.as_deref(), "force") {
                Ok(force) => force,
                Err(response) => return response,
            };
            engine
                .rm(name, force)
                .map(|()| Response::ok(200, json!({ "name": name, "removed": true })))
        }
        ("POST", ["", "v1", "gc"]) => engine
            .reconcile()
            .map(|report| Response::ok(200, json!(report))),
        (_, ["", "v1", "health"])
        | (_, ["", "v1", "sandboxes"])
        | (_, ["", "v1", "sandboxes", _])
        | (_, ["", "v1", "sandboxes", _, "start" | "stop"])
        | (_, ["", "v1", "gc"]) => {
            return Response::error(
                405,
                "method_not_allowed",
                format!("{method} is not allowed on {}", request.path),
                Some("docs/api.md lists the routes".into()),
                airlock_model::exit::USAGE,
            )
        }
        _ => {
            return Response::error(
                404,
                "no_route",
                format!("no route {method} {}", request.path),
                Some("docs/api.md lists the routes".into()),
                airlock_model::exit::USAGE,
            )
        }
    };
    result.unwrap_or_else(|e| Response::from_engine(&e))
}

fn json_body(body: &[u8]) -> Result<Option<Value>, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| Response::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn create(engine: &Engine, body: &[u8]) -> Response {
    let body = match json_body(body) {
        Ok(Some(Value::Object(map))) => map,
        Ok(_) => {
            return Response::bad_request("expected a JSON object {\"name\": ..., \"spec\": {...}}")
        }
        Err(response) => return response,
    };
    let Some(name) = body.get("name").and_then(Value::as_str) else {
        return Response::bad_request("\"name\" (a string) is required");
    };
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    if !spec.is_object() {
        return Response::bad_request("\"spec\" must be a JSON object");
    }
    match engine.create(name, &spec.to_string()) {
        Ok(record) => Response::ok(201, json!(record)),
        Err(e) => Response::from_engine(&e),
    }
}

fn stop_grace(body: &[u8]) -> Result<Duration, Response> {
    match json_body(body)? {
        None => Ok(crate::engine::DEFAULT_GRACE),
        Some(Value::Object(map)) => match map.get("grace_ms") {
            None | Some(Value::Null) => Ok(crate::engine::DEFAULT_GRACE),
            Some(v) => v.as_u64().map(Duration::from_millis).ok_or_else(|| {
                Response::bad_request("\"grace_ms\" must be a non-negative integer")
            }),
        },
        Some(_) => Err(Response::bad_request(
            "expected a JSON object {\"grace_ms\": N}",
        )),
    }
}

/// `{"secrets": {"NAME": "value", …}}` (optional). Values never appear in a response or log.
fn start_secrets(body: &[u8]) -> Result<crate::backend::Secrets, Response> {
    let bad = || Response::bad_request("expected {\"secrets\": {\"NAME\": \"value\"}}");
    match json_body(body)? {
        None => Ok(Default::default()),
        Some(Value::Object(map)) => match map.get("secrets") {
            None | Some(Value::Null) => Ok(Default::default()),
            Some(Value::Object(s)) => s
                .iter()
                .map(|(k, v)| {
                    v.as_str()
                        .map(|v| (k.clone(), v.to_owned()))
                        .ok_or_else(bad)
                })
                .collect::<Result<Vec<_>, _>>()
                .map(crate::backend::Secrets),
            Some(_) => Err(bad()),
        },
        Some(_) => Err(bad()),
    }
}

fn query_flag(query: Option<&str>, key: &str) -> Result<bool, Response> {
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
        if k == key {
            return match v {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(Response::bad_request(format!(
                    "{key} must be true or false"
                ))),
            };
        }
    }
    Ok(false)
}

/// Reads one request from `stream`. `Ok(None)` when the peer closed before sending one.
pub fn read_request(stream: &mut impl Read) -> Result<Option<Request>, Response> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream
            .read(&mut chunk)
            .map_err(|e| Response::bad_request(format!("reading the request: {e}")))?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(Response::bad_request("the request ended early"));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let method = parsed.method.unwrap_or("").to_owned();
                let target = parsed.path.unwrap_or("/");
                let (path, query) = match target.split_once('?') {
                    Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
                    None => (target.to_owned(), None),
                };
                let mut length = 0usize;
                for header in parsed.headers.iter() {
                    if header.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(header.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .ok_or_else(|| Response::bad_request("bad Content-Length"))?;
                    } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(Response::bad_request(
                            "Transfer-Encoding is not supported; send Content-Length",
                        ));
                    }
                }
                if length > MAX_BODY {
                    return Err(Response::error(
                        413,
                        "too_large",
                        format!("request body over {MAX_BODY} bytes"),
                        None,
                        airlock_model::exit::USAGE,
                    ));
                }
                let mut body = buf.split_off(head_len);
                while body.len() < length {
                    let n = stream
                        .read(&mut chunk)
                        .map_err(|e| Response::bad_request(format!("reading the body: {e}")))?;
                    if n == 0 {
                        return Err(Response::bad_request("the request body ended early"));
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(length);
                return Ok(Some(Request {
                    method,
                    path,
                    query,
                    body,
                }));
            }
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Err(Response::bad_request("request head too large"))
            }
            Err(e) => {
                return Err(Response::bad_request(format!(
                    "malformed HTTP request: {e}"
                )))
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

pub fn write_response(stream: &mut impl Write, response: &Response) -> io::Result<()> {
    let body = serde_json::to_vec(&response.body).unwrap_or_else(|_| b"null".to_vec());
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    stream.flush()
}

fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let creds = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)?;
    Ok(creds.uid())
}

/// Serves one connection: peer check, one request, one response.
pub fn serve_connection(engine: &Engine, mut stream: UnixStream, owner_uid: u32) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let response = match peer_uid(&stream) {
        Err(e) => Response::error(
            403,
            "forbidden",
            format!("cannot read peer credentials: {e}"),
            None,
            1,
        ),
        Ok(uid) => match authorize(uid, owner_uid) {
            Err(response) => {
                // Read (and ignore) the request first: closing a socket with unread data
                // resets the connection and the client would never see the 403.
                let _ = read_request(&mut stream);
                response
            }
            Ok(()) => match read_request(&mut stream) {
                Ok(None) => return,
                Ok(Some(request)) => handle(engine, &request),
                Err(response) => response,
            },
        },
    };
    let _ = write_response(&mut stream, &response);
}

/// Binds the API socket at `socket`: its folder is created (0700), a stale socket from a
/// dead engine is replaced, and the socket itself is made 0600. The caller must hold the
/// serve lock ([`lock_serve`]) so it never replaces a live engine's socket.
pub fn bind(socket: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    match fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(socket)?;
    fs::set_permissions(socket, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Takes the lock that says "an engine serves here" (`engine.serve.lock` beside the socket),
/// for as long as the returned value lives. `Ok(None)` if another engine holds it.
pub fn lock_serve(socket: &Path) -> io::Result<Option<Flock<fs::File>>> {
    let path = sibling(socket, "engine.serve.lock");
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// A file beside the socket named after it: `engine.sock` → `engine.lock` for `name` =
/// `engine.lock` (and `engine-HASH.sock` → `engine-HASH.lock`).
pub(crate) fn sibling(socket: &Path, name: &str) -> PathBuf {
    let stem = socket
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "engine".into());
    let name = match name.strip_prefix("engine") {
        Some(rest) => format!("{stem}{rest}"),
        None => name.to_owned(),
    };
    socket
        .parent()
        .map(|d| d.join(&name))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Accepts connections forever, a thread each.
pub fn serve(engine: Arc<Engine>, listener: UnixListener) -> io::Result<()> {
    let owner_uid = nix::unistd::geteuid().as_raw();
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc_emfile()) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => return Err(e),
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = write_response(
                &mut stream,
                &Response::error(
                    503,
                    "busy",
                    "the engine is busy".into(),
                    Some("retry".into()),
                    1,
                ),
            );
            continue;
        }
        let engine = Arc::clone(&engine);
        let counter = Arc::clone(&active);
        let spawned = std::thread::Builder::new()
            .name("airlock-api".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                serve_connection(&engine, stream, owner_uid);
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
    Ok(())
}

fn libc_emfile() -> i32 {
    nix::errno::Errno::EMFILE as i32
}

/// Why `airlock engine serve` could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("another airlock engine already serves {}", .0.display())]
    AlreadyRunning(PathBuf),
    #[error("cannot serve on {}", path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Everything `airlock engine serve` does: take the serve lock, open the engine, reconcile,
/// bind the socket, serve until killed. Reconcile's findings go to stderr (the engine log).
pub fn run(socket: &Path, state_dir: &Path, backend: Arc<dyn Backend>) -> Result<(), ServeError> {
    let socket_err = |source| ServeError::Socket {
        path: socket.to_path_buf(),
        source,
    };
    let _lock = lock_serve(socket)
        .map_err(socket_err)?
        .ok_or_else(|| ServeError::AlreadyRunning(socket.to_path_buf()))?;
    let engine = Arc::new(Engine::open(state_dir, backend)?);
    let report = engine.reconcile()?;
    for change in report.changes.iter().chain(&report.errors) {
        eprintln!(
            "airlock engine: reconcile: {} {} -> {}: {}",
            change.name,
            change.from,
            change.to.map_or("gone".to_owned(), |s| s.to_string()),
            change.detail
        );
    }
    for name in &report.orphan_folders {
        eprintln!("airlock engine: reconcile: removed orphan folder sandboxes/{name}");
    }
    let listener = bind(socket).map_err(socket_err)?;
    eprintln!(
        "airlock engine: pid {} serving {} (state {})",
        std::process::id(),
        socket.display(),
        state_dir.display()
    );
    serve(engine, listener).map_err(socket_err)
}
