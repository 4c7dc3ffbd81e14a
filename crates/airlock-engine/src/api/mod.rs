//! The engine's API: HTTP/1.1 + JSON on a Unix socket, described by an OpenAPI 3.1 document
//! generated from the types (`GET /v1/openapi.json`; docs/api.md is the guide). Only the
//! engine's own user may talk to it (`SO_PEERCRED`, checked on every connection).
//!
//! - [`routes`]: the handlers (axum), each with its `#[utoipa::path]`, and the document;
//! - [`transport`]: the socket side (hyper's HTTP/1.1 on tokio): peer check, connection cap,
//!   timeouts, body limit, one request per connection;
//! - [`error`]: the one error body `{error, hint, code, kind}`.
//!
//! The engine's operations block (SQLite, spawning supervisors): handlers run them on tokio's
//! blocking pool. Only `airlock engine serve` starts a runtime; the CLI's client
//! ([`crate::client`]) stays blocking and runtime-free.

pub mod child;
pub mod error;
pub mod extract;
pub mod routes;
pub mod transport;
pub mod work;

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};

use crate::backend::Backend;
use crate::engine::{Engine, EngineError};

pub use error::{ApiError, ErrorBody};
pub use routes::{openapi, router};
pub use transport::Limits;

/// May a peer with `peer_uid` use an engine run by `owner_uid`? Only the same user.
pub fn authorize(peer_uid: u32, owner_uid: u32) -> Result<(), ApiError> {
    if peer_uid == owner_uid {
        return Ok(());
    }
    Err(ApiError::new(
        403,
        "forbidden",
        format!("this airlock engine belongs to uid {owner_uid}, not to uid {peer_uid}"),
        Some(
            "each user has their own engine; run airlock as the user who owns the sandboxes".into(),
        ),
        airlock_model::exit::USAGE,
    ))
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

/// Serves `listener` until it fails, with the default [`Limits`].
pub fn serve(engine: Arc<Engine>, listener: UnixListener) -> io::Result<()> {
    serve_with(engine, listener, Limits::default())
}

/// Serves `listener` until it fails: a single-threaded tokio runtime for the connections, its
/// blocking pool (one thread per request in progress, at most `max_connections`) for the
/// engine's operations.
pub fn serve_with(engine: Arc<Engine>, listener: UnixListener, limits: Limits) -> io::Result<()> {
    let owner_uid = nix::unistd::geteuid().as_raw();
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(limits.max_connections.max(1))
        .thread_name("airlock-api")
        .build()?;
    let router = router(engine);
    runtime.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        transport::accept_loop(listener, router, limits, owner_uid).await
    })
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
    end_when_unreachable(socket);
    serve(engine, listener).map_err(socket_err)
}

/// How often the engine checks that its socket is still the one it serves.
const SOCKET_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// The engine ends once its socket is gone or replaced — its runtime folder removed (a
/// logout's `/run/user`, a test's temporary folder), or another engine bound the path — as
/// no client can reach it any more and it would otherwise run on forever. As after a SIGTERM
/// (it has no other stop): sandboxes run on under their own supervisors, and the next
/// engine reconciles the records.
fn end_when_unreachable(socket: &Path) {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let Some(bound) = id(socket) else { return };
    let socket = socket.to_path_buf();
    let _ = std::thread::Builder::new()
        .name("socket-watch".into())
        .spawn(move || loop {
            std::thread::sleep(SOCKET_CHECK);
            if id(&socket) != Some(bound) {
                eprintln!(
                    "airlock engine: {} is gone or replaced: stopping",
                    socket.display()
                );
                std::process::exit(0);
            }
        });
}
