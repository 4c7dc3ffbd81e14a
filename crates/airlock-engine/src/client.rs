//! The CLI's side of the API: a tiny HTTP/1.1 client on the engine's Unix socket, and the
//! auto-start of the engine when none serves yet.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::action::{Action, ActionData};
use crate::engine::{ReconcileReport, Status};
use crate::store::Record;

/// How long the CLI waits for an engine it started to listen.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest response the client reads.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// The value of an action's answer of the kind expected (another kind is a protocol error).
macro_rules! data {
    ($data:expr, $kind:path) => {
        match $data {
            $kind(v) => Ok(v),
            other => Err(ClientError::Protocol(format!(
                "an answer of another kind: {other:?}"
            ))),
        }
    };
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The engine answered with an error (`{error, hint, code, kind}`).
    #[error("{error}")]
    Api {
        status: u16,
        kind: String,
        error: String,
        hint: Option<String>,
        code: i32,
        /// The error's structured detail (`ActionError::detail`), when it has one.
        detail: Option<Box<Value>>,
    },
    #[error("cannot talk to the airlock engine at {}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the airlock engine did not start{detail}")]
    Start { log: PathBuf, detail: String },
    #[error("bad answer from the airlock engine: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The exit code the CLI ends with.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Api { code, .. } => *code,
            _ => 1,
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            ClientError::Api { hint, .. } => hint.clone(),
            ClientError::Start { log, .. } => Some(format!("its log: {}", log.display())),
            ClientError::Connect { .. } => {
                Some("airlock engine serve runs it in the foreground to see why".into())
            }
            ClientError::Protocol(_) => None,
        }
    }
}

/// A client of one engine socket. Each request is its own connection.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client of the engine at `socket` (nothing is checked yet).
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A client of this user's engine (see [`crate::paths`]), starting it (as
    /// `AIRLOCK_EXE engine serve`) if none serves.
    pub fn connect_or_start(airlock_exe: &Path) -> Result<Client, ClientError> {
        Client::connect_or_start_at(
            &crate::paths::socket_path(),
            &crate::paths::state_dir(),
            airlock_exe,
        )
    }

    /// [`Client::connect_or_start`] with explicit paths. The start is serialized by an
    /// flock on `engine.lock` beside the socket, so concurrent CLIs start one engine; the
    /// engine's stdout and stderr go to `STATE/engine.log`.
    pub fn connect_or_start_at(
        socket: &Path,
        state_dir: &Path,
        airlock_exe: &Path,
    ) -> Result<Client, ClientError> {
        let client = Client::new(socket);
        if client.ping().is_ok() {
            return Ok(client);
        }
        let connect_err = |source| ClientError::Connect {
            socket: socket.to_path_buf(),
            source,
        };
        let lock_path = crate::api::sibling(socket, "engine.lock");
        if let Some(dir) = lock_path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(connect_err)?;
        }
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(connect_err)?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, e)| connect_err(e.into()))?;
        // Someone else may have started it while we waited for the lock.
        if client.ping().is_ok() {
            return Ok(client);
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(connect_err)?;
        let log_path = state_dir.join("engine.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(connect_err)?;
        let log2 = log.try_clone().map_err(connect_err)?;
        let mut command = Command::new(airlock_exe);
        // The engine outlives this CLI and serves later ones: it must not keep whatever this
        // shell happened to export (tokens a secret source names, among others).
        command.env_clear().envs(daemon_env());
        command
            .args(["engine", "serve"])
            .env("AIRLOCK_STATE_DIR", state_dir)
            .env(
                "AIRLOCK_RUNTIME_DIR",
                socket.parent().unwrap_or(Path::new("/")),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .current_dir("/");
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent; it
        // detaches the engine from the CLI's session and terminal so it outlives them.
        unsafe {
            command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(io::Error::from));
        }
        let mut child = command.spawn().map_err(|e| ClientError::Start {
            log: log_path.clone(),
            detail: format!(": cannot run {}: {e}", airlock_exe.display()),
        })?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if client.ping().is_ok() {
                return Ok(client);
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(ClientError::Start {
                    detail: format!(" ({status}){}", log_tail(&log_path)),
                    log: log_path,
                });
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Start {
                    detail: format!(
                        " within {}s{}",
                        START_TIMEOUT.as_secs(),
                        log_tail(&log_path)
                    ),
                    log: log_path,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Is an engine answering?
    pub fn ping(&self) -> Result<(), ClientError> {
        self.call::<Value>("GET", "/v1/health", None).map(drop)
    }

    /// One request; the JSON body of a 2xx answer, or the error it carries.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
                socket: self.socket.clone(),
                source,
            })?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: airlock\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let io_err = |e: io::Error| ClientError::Protocol(e.to_string());
        stream.write_all(head.as_bytes()).map_err(io_err)?;
        stream.write_all(body.as_bytes()).map_err(io_err)?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE as u64)
            .read_to_end(&mut raw)
            .map_err(io_err)?;
        parse_response(&raw)
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let (status, value) = self.request(method, path, body)?;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &value));
        }
        serde_json::from_value(value).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Carries out one action through the engine's one dispatch (`POST /v1/actions`); its
    /// error is the engine's `ActionError` (kind, code, message, hint) as [`ClientError::Api`].
    /// The streamed actions (run, exec, prompt, reports) are not for this call.
    pub fn act(&self, action: &Action) -> Result<ActionData, ClientError> {
        if action.streams() {
            return Err(ClientError::Protocol(
                "a streamed action needs a streaming reader".into(),
            ));
        }
        let body =
            serde_json::to_value(action).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.call("POST", "/v1/actions", Some(&body))
    }

    pub fn create(&self, name: &str, spec: &Value) -> Result<Record, ClientError> {
        // What the Action cannot carry, refused here as the engine refuses it.
        let Value::Object(spec) = spec else {
            let e = crate::action::ActionError::new("bad_spec", "the spec must be a JSON object");
            return Err(ClientError::Api {
                status: e.http_status(),
                kind: e.kind,
                error: e.message,
                hint: e.hint,
                code: e.code,
                detail: None,
            });
        };
        let action = Action::Create {
            name: name.to_owned(),
            spec: spec.clone(),
        };
        data!(self.act(&action)?, ActionData::Record)
    }

    pub fn list(&self) -> Result<Vec<Record>, ClientError> {
        data!(self.act(&Action::List)?, ActionData::Records)
    }

    pub fn status(&self, name: &str) -> Result<Status, ClientError> {
        let action = Action::Status {
            name: name.to_owned(),
        };
        data!(self.act(&action)?, ActionData::Status)
    }

    pub fn start(&self, name: &str) -> Result<Record, ClientError> {
        self.start_with_secrets(name, &[])
    }

    /// Start with secret values read by the caller; they reach the sandbox in memory only.
    pub fn start_with_secrets(
        &self,
        name: &str,
        secrets: &[(String, String)],
    ) -> Result<Record, ClientError> {
        let action = Action::Start {
            name: name.to_owned(),
            secrets: (!secrets.is_empty()).then(|| secrets.iter().cloned().collect()),
        };
        data!(self.act(&action)?, ActionData::Record)
    }

    pub fn stop(&self, name: &str, grace: Option<Duration>) -> Result<Record, ClientError> {
        let action = Action::Stop {
            name: name.to_owned(),
            grace_ms: grace.map(|g| u64::try_from(g.as_millis()).unwrap_or(u64::MAX)),
        };
        data!(self.act(&action)?, ActionData::Record)
    }

    pub fn rm(&self, name: &str, force: bool) -> Result<(), ClientError> {
        let action = Action::Remove {
            name: name.to_owned(),
            force,
        };
        data!(self.act(&action)?, ActionData::Removed).map(drop)
    }

    pub fn gc(&self) -> Result<ReconcileReport, ClientError> {
        data!(self.act(&Action::Gc)?, ActionData::Reconciled)
    }
}

fn api_error(status: u16, value: &Value) -> ClientError {
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    ClientError::Api {
        status,
        kind: text("kind").unwrap_or_default(),
        error: text("error").unwrap_or_else(|| format!("HTTP {status}")),
        hint: text("hint"),
        code: value
            .get("code")
            .and_then(Value::as_i64)
            .map_or(1, |c| c as i32),
        detail: value
            .get("detail")
            .filter(|d| !d.is_null())
            .map(|d| Box::new(d.clone())),
    }
}

/// Parses a whole `Connection: close` response: status and JSON body.
pub fn parse_response(raw: &[u8]) -> Result<(u16, Value), ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(ClientError::Protocol("the response ended early".into()))
        }
        Err(e) => return Err(ClientError::Protocol(e.to_string())),
    };
    let status = response.code.unwrap_or(0);
    let mut body = &raw[head_len..];
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let length: usize = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| ClientError::Protocol("bad Content-Length".into()))?;
            if body.len() < length {
                return Err(ClientError::Protocol(
                    "the response body ended early".into(),
                ));
            }
            body = &body[..length];
        }
    }
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| ClientError::Protocol(e.to_string()))?
    };
    Ok((status, value))
}

/// The environment long-lived airlock processes (engine, supervisors) keep from their starter:
/// locale, paths and airlock's own settings, nothing else.
pub fn daemon_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    const KEEP: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "TZ",
        "TMPDIR",
        "XDG_RUNTIME_DIR",
        "XDG_STATE_HOME",
        "XDG_CONFIG_HOME",
        "RUST_LOG",
        "RUST_BACKTRACE",
    ];
    std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            KEEP.contains(&&*k) || k.starts_with("AIRLOCK_")
        })
        .collect()
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail: Vec<&str> = lines.into_iter().rev().collect();
    format!(": {}", tail.join(" / "))
}
