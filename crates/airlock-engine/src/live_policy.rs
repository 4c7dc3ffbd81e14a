//! Live egress policy: `airlock allow NAME DOMAIN[:PORT]` / `airlock deny NAME DOMAIN` change a
//! filtered sandbox's allowlist — at once while it runs, and for its later starts.
//!
//! The engine edits the allowlist ([`airlock_egress::policy::Allowlist`]), has the backend put
//! it in force ([`Backend::set_egress`]: for the real backend, one line to the supervisor's
//! policy socket), then stores it in the sandbox's `spec.json` and record, and journals the
//! change (category `policy`). A running sandbox that cannot take it keeps its old policy and
//! nothing is stored; a failed store puts the old policy back.
//!
//! The policy socket, `DIR/policy.sock` in the sandbox's folder (0600, the supervisor's own
//! uid or root only, checked with `SO_PEERCRED`), is served by the supervisor that holds the
//! sandbox's egress context. The folder is never mounted into the sandbox, and the sandbox's
//! mount and network namespaces are its own: nothing inside can reach the socket (or the
//! engine's). Its protocol is one JSON line each way: `{"domains": [...], "ports": [...]}` →
//! `{"ok": true, "closed": N}` or `{"ok": false, "error": "..."}` — the whole allowlist, so
//! a repeated or late line leaves the same state (a warm pool binds a claim's allowlist the same
//! way). A claim's line may also ask to `watch`: after the answer, the connection then carries
//! every egress event of the member's journal from that moment (one JSON line each, as in a
//! journal file) to the claimer, which journals and says them as a cold start's supervisor
//! would; a `sync` line from the claimer is answered by `{"synced": true}` after every event
//! recorded before it ([`Watch`]).

use crate::action::{PolicyChange, Via};
use crate::backend::BackendError;
use crate::engine::{Engine, EngineError};
use airlock_egress::inject::{Binding, Secrets, WireBinding};
use airlock_egress::intercept::Interceptor;
use airlock_egress::policy::{Allowlist, EditError, EgressPolicy};
use airlock_egress::proxy::Ctx;
use airlock_model::lifecycle::SandboxState as S;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

/// The supervisor's policy socket, in the sandbox's folder.
pub const SOCKET: &str = "policy.sock";
/// Serializes read-modify-writes of a sandbox's `spec.json` (`allow`/`deny` here, `mount`/
/// `unmount` in the CLI).
pub const SPEC_LOCK: &str = "mounts.lock";
/// The longest wait on the supervisor's answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request line the supervisor reads.
const MAX_LINE: u64 = 1 << 20;
/// How long a claimer's `sync` waits for the connections its command left being decided.
const SYNC_SETTLE: Duration = Duration::from_millis(300);

/// One change to an allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Allow { domain: String, port: Option<u16> },
    Deny { domain: String },
}

#[derive(Serialize, Deserialize)]
struct Request {
    domains: Vec<String>,
    ports: Vec<u16>,
    /// A warm-pool claim's injected secrets (see [`begin_claim`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    intercept: Option<InterceptRequest>,
    /// A warm-pool claim's: stream the egress events to it from now on ([`Watch`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    watch: bool,
    /// A warm-pool claim's: whose sandbox the member now is, for the hints of its denials
    /// (`airlock allow NAME …`); kept for the later requests. Absent: as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claimed_as: Option<ClaimedAs>,
}

/// Who claimed a pool member, as its denials' hints name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimedAs {
    /// `airlock run`: its denials say `--allow DOMAIN`, as a cold run's.
    Run,
    /// The named sandbox NAME adopted it: `airlock allow NAME DOMAIN`.
    Sandbox(String),
}

/// A claim's injected secrets, for the member's egress context: the supervisor makes the
/// interception CA (its key never leaves that process) and answers with the CA's certificate.
#[derive(Serialize, Deserialize)]
struct InterceptRequest {
    bindings: Vec<WireBinding>,
    /// PEM roots the upstream servers are also verified against (`AIRLOCK_UPSTREAM_CA`, read
    /// by the claimer as a cold start reads it).
    #[serde(default)]
    upstream_ca: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default)]
    closed: usize,
    #[serde(default)]
    error: Option<String>,
    /// The interception CA's certificate (PEM), when the request carried secrets.
    #[serde(default)]
    ca_pem: Option<String>,
}

fn refused(message: String, hint: String) -> EngineError {
    EngineError::Action(crate::action::ActionError::new("refused", message).with_hint(hint))
}

fn bad(message: String, hint: &str) -> EngineError {
    EngineError::Action(crate::action::ActionError::new("bad_request", message).with_hint(hint))
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> EngineError + 'a {
    move |source| EngineError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl Engine {
    /// Allow or deny a domain in sandbox `name`'s egress allowlist (see the module doc).
    pub fn change_policy(
        &self,
        name: &str,
        edit: Edit,
        via: Via,
    ) -> Result<PolicyChange, EngineError> {
        let record = self.get_record(name)?;
        let dir = self.sandbox_dir(name);
        let _lock = spec_lock(&dir)?;
        let spec_path = dir.join("spec.json");
        let text = std::fs::read_to_string(&spec_path).map_err(|e| EngineError::Damaged {
            name: name.to_owned(),
            dir: dir.clone(),
            detail: format!("spec.json: {e}"),
        })?;
        let mut spec: Value = serde_json::from_str(&text).map_err(|e| EngineError::Damaged {
            name: name.to_owned(),
            dir: dir.clone(),
            detail: format!("spec.json: {e}"),
        })?;
        let net = spec["net"].as_str().unwrap_or("filtered").to_owned();
        if net != "filtered" {
            return Err(refused(
                format!(
                    "sandbox {name} has network mode {net}: it has no allowlist to change ({})",
                    if net == "off" {
                        "it reaches no network at all"
                    } else {
                        "it reaches every destination but the security floor already"
                    }
                ),
                format!(
                    "an allowlist applies to --net filtered only: `airlock rm {name} && airlock create {name} --net filtered --allow DOMAIN` (fetch or sync its work first)"
                ),
            ));
        }
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let old = Allowlist {
            domains: strings(&spec["domains"]),
            ports: spec["ports"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_u64().and_then(|p| u16::try_from(p).ok()))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let mut list = old.clone();
        let (op, entry, port) = match &edit {
            Edit::Allow { domain, port } => ("allow", domain, *port),
            Edit::Deny { domain } => ("deny", domain, None),
        };
        if port == Some(airlock_model::plan::PROXY_PORT) {
            return Err(refused(
                format!(
                    "port {} is airlock's own proxy inside the sandbox",
                    airlock_model::plan::PROXY_PORT
                ),
                "choose another port".into(),
            ));
        }
        let edited = match &edit {
            Edit::Allow { domain, port } => list.allow(domain, *port),
            Edit::Deny { domain } => list.deny(domain),
        };
        let changed = edited.map_err(|e| match e {
            EditError::Pattern(p) => bad(
                p.to_string(),
                "give a host name (`example.com`) or `*.example.com` for its subdomains; \
                 IP addresses, ports other than 1-65535 and other wildcards are not accepted",
            ),
            EditError::PortZero => bad(e.to_string(), "give a port 1-65535: DOMAIN:PORT"),
            EditError::Metadata(_) => refused(
                e.to_string(),
                "cloud metadata endpoints are unreachable from every sandbox; nothing allows them"
                    .into(),
            ),
            EditError::StillAllowed { ref by, .. } => refused(
                e.to_string(),
                format!("deny {by} instead (then allow the names it should keep)"),
            ),
        })?;
        let shown = airlock_egress::policy::DomainPattern::parse(entry)
            .map(|p| p.to_string())
            .unwrap_or_else(|_| entry.clone());
        let running = match record.state {
            S::Running => true,
            S::Stopped | S::Failed | S::Creating => false,
            other => {
                return Err(EngineError::Action(
                    crate::action::ActionError::new(
                        "wrong_state",
                        format!("sandbox {name} is {other}: its policy cannot change now"),
                    )
                    .with_hint(format!(
                        "wait until it is running or stopped (`airlock status {name}`), then retry"
                    )),
                ))
            }
        };
        let backend_err = |source: BackendError| EngineError::Backend {
            op: "change the policy of",
            name: name.to_owned(),
            source,
        };
        // In force first: a running sandbox that cannot take it keeps the old one, and
        // nothing is stored.
        let closed = if running {
            self.backend
                .set_egress(name, &dir, &list.domains, &list.ports)
                .map_err(backend_err)?
        } else {
            0
        };
        spec["domains"] = json!(list.domains);
        spec["ports"] = json!(list.ports);
        let stored = serde_json::to_vec_pretty(&spec)
            .map_err(|e| EngineError::BadSpec(e.to_string()))
            .and_then(|bytes| {
                crate::engine::write_atomic(&spec_path, &bytes)?;
                let json = String::from_utf8_lossy(&bytes).into_owned();
                let r = self
                    .store
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .set_spec(name, &json);
                if let Err(e) = r {
                    let _ = crate::engine::write_atomic(&spec_path, text.as_bytes());
                    return Err(e.into());
                }
                Ok(())
            });
        if let Err(e) = stored {
            if running {
                let _ = self
                    .backend
                    .set_egress(name, &dir, &old.domains, &old.ports);
            }
            return Err(e);
        }
        let mut ev = json!({
            "op": op, "domain": shown, "via": via.to_string(), "changed": changed,
            "live": running, "closed": closed,
        });
        if let Some(p) = port {
            ev["port"] = json!(p);
        }
        crate::audit::record(&dir, "policy", ev);
        Ok(PolicyChange {
            name: name.to_owned(),
            op: op.to_owned(),
            domain: shown,
            port,
            changed,
            live: running,
            closed: closed as u64,
            domains: list.domains,
            ports: list.ports,
        })
    }
}

fn spec_lock(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, EngineError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(SPEC_LOCK);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("cannot open", &path))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| io_err("cannot lock", &path)(e.into()))
}

/// The supervisor's side: serve `DIR/policy.sock` for the egress context `ctx` of sandbox
/// `name`, on a thread of its own, for callers of this process's uid (or root) only.
pub fn serve(dir: &Path, name: &str, ctx: Arc<Ctx>, member: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let me = nix::unistd::geteuid().as_raw();
    // The name the hints give: the member's own until a claim says whose it is.
    let name = std::sync::Mutex::new(Some(name.to_owned()));
    std::thread::Builder::new()
        .name("policy".into())
        .spawn(move || {
            if member {
                warm_up();
            }
            for conn in listener.incoming().flatten() {
                let ok =
                    nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
                        .is_ok_and(|c| c.uid() == me || c.uid() == 0);
                if ok {
                    answer(conn, &name, &ctx);
                }
            }
        })?;
    Ok(())
}

/// A warm-pool member's policy thread, while it waits for its claim: the faults its claim's
/// answer would take, taken now — the thread's first allocations (its heap arena), a request's
/// parse, an allowlist built, an answer's JSON (code first run in this process), its stack.
/// Measured: the claim's policy answer ≈ 0.1 ms sooner (bench/RESULTS.md, session 19).
#[inline(never)]
fn warm_up() {
    airlock_sandbox::sys::prefault_heap(16);
    let req = Request {
        domains: vec!["example.com".into()],
        ports: vec![443],
        intercept: None,
        watch: true,
        claimed_as: Some(ClaimedAs::Run),
    };
    if let Ok(line) = serde_json::to_string(&req) {
        if let Ok(r) = serde_json::from_str::<Request>(&line) {
            std::hint::black_box(EgressPolicy::new(&r.domains, &r.ports).ok());
        }
    }
    let _ = std::hint::black_box(serde_json::to_vec(&Reply {
        ok: true,
        ..Reply::default()
    }));
    airlock_sandbox::sys::touch_stack();
}

/// A warm-pool member's supervisor: load what a claim's injected secrets need from the host
/// (the system's roots) now, on a thread of its own, while the member waits for its claim.
pub fn preload_interception() {
    let _ = std::thread::Builder::new().name("roots".into()).spawn(|| {
        airlock_egress::intercept::native_roots();
    });
}

/// One request on the policy socket: the whole new allowlist, put in force (and a claim's
/// injected secrets, bound first: refused, nothing changes).
fn answer(conn: UnixStream, name: &std::sync::Mutex<Option<String>>, ctx: &Arc<Ctx>) {
    let _ = conn.set_read_timeout(Some(TIMEOUT));
    let _ = conn.set_write_timeout(Some(TIMEOUT));
    let mut line = String::new();
    let read = BufReader::new((&conn).take(MAX_LINE)).read_line(&mut line);
    let mut watch = false;
    let reply = match read
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_str::<Request>(&line).map_err(|e| e.to_string()))
        .and_then(|r| {
            let policy = EgressPolicy::new(&r.domains, &r.ports).map_err(|e| e.to_string())?;
            watch = r.watch;
            Ok((policy, r.intercept, r.claimed_as))
        }) {
        Ok((policy, intercept, claimed_as)) => {
            let bound = match intercept {
                Some(i) => bind_intercept(ctx, i).map(Some),
                None => Ok(None),
            };
            match bound {
                Ok(ca_pem) => Reply {
                    ok: true,
                    closed: ctx.set_policy(named(policy, name, claimed_as)),
                    error: None,
                    ca_pem,
                },
                Err(e) => Reply {
                    error: Some(e),
                    ..Reply::default()
                },
            }
        }
        Err(e) => Reply {
            error: Some(format!("bad request: {e}")),
            ..Reply::default()
        },
    };
    // A watch taps the journal before the answer: the claimer's command, run once it has the
    // answer, finds every event of its connections on the way.
    let tapped = (reply.ok && watch).then(|| tap_events(ctx));
    let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
    bytes.push(b'\n');
    if (&conn).write_all(&bytes).is_ok() {
        if let Some(tapped) = tapped {
            stream_events(conn, ctx.clone(), tapped);
        }
    }
}

/// `policy` with the hints of the sandbox the member now serves (`name`, updated by a claim).
fn named(
    policy: EgressPolicy,
    name: &std::sync::Mutex<Option<String>>,
    claimed_as: Option<ClaimedAs>,
) -> EgressPolicy {
    let mut name = name.lock().unwrap_or_else(PoisonError::into_inner);
    match claimed_as {
        Some(ClaimedAs::Run) => *name = None,
        Some(ClaimedAs::Sandbox(n)) => *name = Some(n),
        None => {}
    }
    match &*name {
        Some(n) => policy.of_sandbox(n),
        None => policy,
    }
}

/// What the thread streaming a claim's events writes next.
enum Streamed {
    Event(airlock_egress::journal::Event),
    /// The claimer's `sync`: every event before it is written.
    Sync,
    /// The claimer hung up.
    End,
}

/// `ctx`'s events from now on, over a bounded queue: a claimer that stops reading holds up its
/// own sandbox's connections only; once the receiver is gone, the journal drops the tap.
struct Tapped {
    /// For the `sync`s (the `End`), behind the events.
    tx: std::sync::mpsc::SyncSender<Streamed>,
    rx: std::sync::mpsc::Receiver<Streamed>,
    /// Events sent and not written to the claimer yet.
    unwritten: Arc<std::sync::atomic::AtomicUsize>,
}

fn tap_events(ctx: &Ctx) -> Tapped {
    use std::sync::atomic::Ordering::SeqCst;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Streamed>(1024);
    let tap_tx = tx.clone();
    let unwritten = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = unwritten.clone();
    ctx.journal.tap(move |ev| {
        counted.fetch_add(1, SeqCst);
        let sent = tap_tx.send(Streamed::Event(ev.clone())).is_ok();
        if !sent {
            counted.fetch_sub(1, SeqCst);
        }
        sent
    });
    Tapped { tx, rx, unwritten }
}

/// How many claims' event streams this process is serving ([`stream_events`]), and their ends.
static STREAMS: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

/// One stream counted in [`STREAMS`] while this lives.
struct Streaming;

impl Streaming {
    fn start() -> Self {
        *STREAMS.0.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        Streaming
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let mut n = STREAMS.0.lock().unwrap_or_else(PoisonError::into_inner);
        *n = n.saturating_sub(1);
        STREAMS.1.notify_all();
    }
}

/// In a member's supervisor whose sandbox has ended: until every claimer's event stream has
/// ended (the claimer has its `synced` and hung up, or is gone), `limit` at most. A claimer may
/// end the member before it asks for the last events (its PID 1's end and the `sync` then
/// overlap): the answer is still given.
pub fn wait_streams(limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    let mut n = STREAMS.0.lock().unwrap_or_else(PoisonError::into_inner);
    while *n > 0 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        n = STREAMS
            .1
            .wait_timeout(n, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// The claimer's connection, for one line ([`write_line`]).
fn lock(out: &std::sync::Mutex<UnixStream>) -> std::sync::MutexGuard<'_, UnixStream> {
    out.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One line to the claimer, on its connection held locked (two threads write: a line at a
/// time).
fn write_line(mut conn: std::sync::MutexGuard<'_, UnixStream>, line: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line);
    buf.push(b'\n');
    conn.write_all(&buf)
}

/// The supervisor's side of a [`Watch`]: the tapped events to `conn`, and its `sync`s
/// answered in their order, on threads of their own (the policy socket goes on serving
/// `allow`/`deny`), until the claimer hangs up. A `sync` with every event before it written
/// already (the usual case: a command that made no connection) is answered by the thread
/// that reads it, without a hop through the streaming thread.
fn stream_events(conn: UnixStream, ctx: Arc<Ctx>, tapped: Tapped) {
    use std::sync::atomic::Ordering::SeqCst;
    let Tapped { tx, rx, unwritten } = tapped;
    let Ok(reading) = conn.try_clone() else {
        return;
    };
    let _ = reading.set_read_timeout(None);
    let out = Arc::new(std::sync::Mutex::new(conn));
    let answering = out.clone();
    let written = unwritten.clone();
    let reader = std::thread::Builder::new()
        .name("policy-watch-in".into())
        .spawn(move || {
            for line in BufReader::new(reading.take(MAX_LINE)).lines() {
                match line {
                    Ok(l) if l.trim() == "sync" => {
                        // The claim's command has ended: the connections it left being
                        // decided are journaled first (briefly: what it left running may
                        // keep its connections open).
                        ctx.settle(SYNC_SETTLE);
                        // Every event recorded by now was sent (the tap sends as it records):
                        // none unwritten, none can be written after this answer.
                        let conn = lock(&answering);
                        if written.load(SeqCst) == 0 {
                            if write_line(conn, SYNCED).is_err() {
                                break;
                            }
                            continue;
                        }
                        drop(conn);
                        if tx.send(Streamed::Sync).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(Streamed::End);
        });
    if reader.is_err() {
        return;
    }
    let streaming = Streaming::start();
    let _ = std::thread::Builder::new()
        .name("policy-watch-out".into())
        .spawn(move || {
            let _streaming = streaming;
            for msg in rx {
                let sent = match msg {
                    Streamed::Event(ev) => {
                        let line = serde_json::to_vec(&ev).unwrap_or_default();
                        let sent = write_line(lock(&out), &line);
                        unwritten.fetch_sub(1, SeqCst);
                        sent
                    }
                    Streamed::Sync => write_line(lock(&out), SYNCED),
                    Streamed::End => break,
                };
                if sent.is_err() {
                    break;
                }
            }
            let _ = lock(&out).shutdown(std::net::Shutdown::Both);
        });
}

/// A claim's secrets into `ctx`: a fresh interception CA for them, made here. Its PEM.
fn bind_intercept(ctx: &Ctx, i: InterceptRequest) -> Result<String, String> {
    if ctx.intercept().is_some() {
        return Err("this sandbox's injected secrets are bound already".into());
    }
    let bindings = i
        .bindings
        .into_iter()
        .map(Binding::from_wire)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let icpt = Interceptor::new(
        Secrets::new(bindings),
        i.upstream_ca.as_deref().map(str::as_bytes),
    )
    .map_err(|e| e.to_string())?;
    let pem = icpt.ca_pem().to_string();
    ctx.set_intercept(Arc::new(icpt))
        .map_err(|_| "this sandbox's injected secrets are bound already".to_string())?;
    Ok(pem)
}

/// The engine's side: have the supervisor of the sandbox in `dir` put this allowlist in force.
/// Returns how many open connections it closed.
pub fn send(dir: &Path, domains: &[String], ports: &[u16]) -> Result<usize, BackendError> {
    exchange(
        dir,
        &Request {
            domains: domains.to_vec(),
            ports: ports.to_vec(),
            intercept: None,
            watch: false,
            claimed_as: None,
        },
    )
    .map(|(r, _)| r.closed)
}

/// A warm-pool claim's side: the claim's allowlist and, when it injects secrets, their
/// bindings (values and placeholders) and the upstream roots, to the member's supervisor —
/// the process whose proxy intercepts. It makes the sandbox's interception CA there (the key
/// stays in its memory) and answers with the CA's certificate (PEM), for the sandbox's
/// bundle. The values travel only over this socket. Its denials' hints name `claimed_as`
/// from now on. With `watch`, the member's egress events from now on are recorded in that
/// journal ([`Watch`]). The request is sent now and its answer read by
/// [`PendingClaim::finish`]: the member's supervisor binds the claim while the claimer does
/// the rest of its binding (the workspace), and the command starts only after the answer.
pub fn begin_claim(
    dir: &Path,
    domains: &[String],
    ports: &[u16],
    bindings: &[Binding],
    upstream_ca: Option<&[u8]>,
    claimed_as: ClaimedAs,
    watch: Option<airlock_egress::journal::Journal>,
) -> Result<PendingClaim, BackendError> {
    let intercept = (!bindings.is_empty()).then(|| InterceptRequest {
        bindings: bindings.iter().map(Binding::to_wire).collect(),
        upstream_ca: upstream_ca.map(|b| String::from_utf8_lossy(b).into_owned()),
    });
    let wanted = intercept.is_some();
    let conn = request(
        dir,
        &Request {
            domains: domains.to_vec(),
            ports: ports.to_vec(),
            intercept,
            watch: watch.is_some(),
            claimed_as: Some(claimed_as),
        },
    )?;
    Ok(PendingClaim {
        conn,
        wanted,
        watch,
    })
}

/// A claim sent to its member's supervisor ([`begin_claim`]), its answer not read yet.
#[derive(Debug)]
pub struct PendingClaim {
    conn: UnixStream,
    /// Injected secrets were asked for: the answer must carry the claim's CA.
    wanted: bool,
    watch: Option<airlock_egress::journal::Journal>,
}

impl PendingClaim {
    /// The supervisor's answer: the claim's CA certificate when it injects, and the watch of
    /// its egress events when given a journal.
    pub fn finish(self) -> Result<(Option<String>, Option<Watch>), BackendError> {
        let reply = read_answer(&self.conn)?;
        let pem = match reply.ca_pem {
            None if self.wanted => {
                return Err(BackendError::Failed(
                    "the member's supervisor does not bind injected secrets (an older airlock)"
                        .into(),
                ))
            }
            pem => pem,
        };
        let watch = match self.watch {
            Some(journal) => Some(Watch::new(self.conn, journal)?),
            None => None,
        };
        Ok((pem, watch))
    }
}

/// A claimer's copy of its member's egress journal: the events the member's supervisor sends
/// after the claim, recorded in a journal of the claimer's (the run's `--net-log`, denials
/// said on its stderr: as a cold start's supervisor records its own). Either the claimer reads
/// them itself while it waits for its command (as a [`Side`](airlock_sandbox::container::stub::Side)),
/// or a thread of its own does, started by [`Watch::follow`] — once the claimer has made its
/// last fork for the claim (a child forked beside a running thread could find a lock held
/// forever). Until then the events wait in the member's queue.
#[derive(Debug)]
pub struct Watch {
    conn: UnixStream,
    /// The journal, until a reading thread takes it.
    journal: Option<Box<airlock_egress::journal::Journal>>,
    /// Read by this thread ([`Watch::take_ready`]): the start of a line not complete yet.
    partial: Vec<u8>,
    /// A reading thread's: its `synced` signal and its handle.
    synced: Option<std::sync::mpsc::Receiver<()>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// The member's answer to a `sync`: every event before it is sent.
const SYNCED: &[u8] = br#"{"synced":true}"#;

impl Watch {
    fn new(
        conn: UnixStream,
        journal: airlock_egress::journal::Journal,
    ) -> Result<Self, BackendError> {
        conn.set_read_timeout(None)
            .map_err(|e| BackendError::Failed(format!("the policy socket: {e}")))?;
        Ok(Self {
            conn,
            journal: Some(Box::new(journal)),
            partial: Vec::new(),
            synced: None,
            reader: None,
        })
    }

    /// Readable: record the events that came, without waiting for more. False once there is
    /// nothing more to read (the member's end hung up, or the watch is followed by a thread).
    fn take_ready(&mut self) -> bool {
        if self.journal.is_none() {
            return false;
        }
        let mut buf = [0u8; 16 * 1024];
        match nix::sys::socket::recv(
            std::os::fd::AsRawFd::as_raw_fd(&self.conn),
            &mut buf,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) => false,
            Ok(n) => {
                self.lines(&buf[..n]);
                true
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => true,
            Err(_) => false,
        }
    }

    /// The complete lines in what came (`data` after the partial line before it) recorded;
    /// true at the `synced` line (nothing comes after it).
    fn lines(&mut self, data: &[u8]) -> bool {
        self.partial.extend_from_slice(data);
        let mut synced = false;
        let mut used = 0;
        while let Some(i) = self.partial[used..].iter().position(|&b| b == b'\n') {
            let line = &self.partial[used..used + i];
            used += i + 1;
            if line == SYNCED {
                synced = true;
                break;
            }
            if let (Some(j), Ok(ev)) = (&self.journal, serde_json::from_slice(line)) {
                j.record(&ev);
            }
        }
        self.partial.drain(..used);
        if self.partial.len() as u64 > MAX_LINE {
            self.partial.clear();
        }
        synced
    }

    /// Record the member's events from now on, on a thread of this process's own. Call it
    /// after the last fork this process makes for the claim, before the command runs (its
    /// events then are said while it runs, and the member's queue never fills).
    pub fn follow(&mut self) {
        let Some(journal) = self.journal.take() else {
            return;
        };
        let Ok(reading) = self.conn.try_clone() else {
            self.journal = Some(journal);
            return;
        };
        let (synced_tx, synced) = std::sync::mpsc::channel();
        let partial = std::mem::take(&mut self.partial);
        self.synced = Some(synced);
        self.reader = std::thread::Builder::new()
            .name("egress-events".into())
            .spawn(move || {
                let mut me = Watch {
                    conn: reading,
                    journal: Some(journal),
                    partial,
                    synced: None,
                    reader: None,
                };
                // Until the last events are in (one sync per watch, at its end), or the end.
                if me.read_to_synced(None) {
                    let _ = synced_tx.send(());
                }
            })
            .ok();
    }

    /// After the claim's command: wait (two seconds at most) until every event the member
    /// recorded before now is recorded here, then hang up. False: they may not all be (the
    /// member did not answer in time, or is gone).
    pub fn finish(mut self) -> bool {
        let asked = (&self.conn).write_all(b"sync\n").is_ok();
        let limit = Duration::from_secs(2);
        let synced = match self.synced.take() {
            // A reading thread records them; synced, it ends by itself (nothing of it is
            // waited for), otherwise at the hang-up below.
            Some(rx) => asked && rx.recv_timeout(limit).is_ok(),
            None => asked && self.read_to_synced(Some(limit)),
        };
        let _ = self.conn.shutdown(std::net::Shutdown::Both);
        if let Some(r) = self.reader.take().filter(|_| !synced) {
            let _ = r.join();
        }
        synced
    }

    /// This thread's reading, until the `synced` line (true), the end or `limit` (None: no
    /// limit).
    fn read_to_synced(&mut self, limit: Option<Duration>) -> bool {
        let deadline = limit.map(|l| std::time::Instant::now() + l);
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() || self.conn.set_read_timeout(Some(left)).is_err() {
                    return false;
                }
            }
            match (&self.conn).read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    if self.lines(&buf[..n]) {
                        return true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

/// A claimer that reads the events itself while it waits for its command (no thread follows
/// them).
impl airlock_sandbox::container::stub::Side for Watch {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.conn.as_fd()
    }

    fn readable(&mut self) -> bool {
        self.take_ready()
    }
}

fn exchange(dir: &Path, req: &Request) -> Result<(Reply, UnixStream), BackendError> {
    let conn = request(dir, req)?;
    Ok((read_answer(&conn)?, conn))
}

/// `req`, written as one line to the policy socket of the sandbox in `dir`.
fn request(dir: &Path, req: &Request) -> Result<UnixStream, BackendError> {
    let path = dir.join(SOCKET);
    let conn = UnixStream::connect(&path).map_err(|e| {
        BackendError::Failed(format!(
            "its supervisor's policy socket {} does not answer ({e}); a sandbox started by an \
             older airlock has none: restart it (`airlock stop` and `airlock start`) to change \
             its policy while it runs",
            path.display()
        ))
    })?;
    let _ = conn.set_read_timeout(Some(TIMEOUT));
    let _ = conn.set_write_timeout(Some(TIMEOUT));
    let mut line = serde_json::to_vec(req).map_err(|e| BackendError::Failed(e.to_string()))?;
    line.push(b'\n');
    (&conn).write_all(&line).map_err(socket_failed)?;
    Ok(conn)
}

/// The supervisor's one-line answer on `conn` (an error when it refused).
fn read_answer(conn: &UnixStream) -> Result<Reply, BackendError> {
    let mut answer = String::new();
    BufReader::new(conn.take(MAX_LINE))
        .read_line(&mut answer)
        .map_err(socket_failed)?;
    let reply: Reply = serde_json::from_str(&answer)
        .map_err(|e| BackendError::Failed(format!("the supervisor answered unexpectedly: {e}")))?;
    if reply.ok {
        Ok(reply)
    } else {
        Err(BackendError::Failed(reply.error.unwrap_or_default()))
    }
}

fn socket_failed(e: std::io::Error) -> BackendError {
    BackendError::Failed(format!("the policy socket: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use airlock_egress::inject::At;

    fn served() -> (std::path::PathBuf, Arc<Ctx>) {
        served_as("")
    }

    fn served_as(label: &str) -> (std::path::PathBuf, Arc<Ctx>) {
        let dir = std::env::temp_dir().join(format!(
            "airlock-live-policy-{}-{:?}{label}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ctx = Arc::new(Ctx::new(
            EgressPolicy::new(&[] as &[String], &[443]).unwrap(),
            Arc::new(airlock_egress::resolve::StaticResolver::default()),
            airlock_egress::journal::Journal::new(std::io::sink()),
        ));
        serve(&dir, "m", ctx.clone(), false).unwrap();
        (dir, ctx)
    }

    /// A claim's secrets reach the member's egress context over the socket, with the
    /// claimer's placeholders; the CA is made there and its certificate comes back; a second
    /// claim (or a replay) can never replace them; a plain allowlist change leaves them be.
    #[test]
    fn a_claim_binds_its_secrets_once_and_gets_the_ca_back() {
        let (dir, ctx) = served();
        let b = Binding::new("K", "real-value".into(), &["api.test".into()], At::Bearer).unwrap();
        let ph = b.placeholder.clone();
        let pem = begin_claim(&dir, &["api.test".into()], &[443], &[b], None, run(), None)
            .and_then(PendingClaim::finish)
            .unwrap()
            .0
            .expect("a CA");
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        let icpt = ctx.intercept().expect("bound");
        assert_eq!(icpt.ca_pem(), pem);
        assert!(icpt.intercepts("api.test") && !icpt.intercepts("other.test"));
        assert_eq!(icpt.secrets().bindings()[0].placeholder, ph);
        assert!(ctx.policy().check("api.test", 443) == airlock_egress::Decision::Allow);
        let again = Binding::new("K", "other".into(), &["evil.test".into()], At::Bearer).unwrap();
        let e = begin_claim(
            &dir,
            &["evil.test".into()],
            &[443],
            &[again],
            None,
            run(),
            None,
        )
        .and_then(PendingClaim::finish)
        .unwrap_err();
        assert!(e.to_string().contains("bound already"), "{e}");
        // Refused whole: the allowlist did not change either.
        assert!(ctx.policy().check("evil.test", 443) != airlock_egress::Decision::Allow);
        assert_eq!(ctx.intercept().unwrap().ca_pem(), pem);
        send(&dir, &["x.test".into()], &[443]).unwrap();
        assert_eq!(ctx.intercept().unwrap().ca_pem(), pem);
        // No secrets: no CA is made.
        let (pem, watch) = begin_claim(&dir, &[], &[443], &[], None, run(), None)
            .and_then(PendingClaim::finish)
            .unwrap();
        assert!(pem.is_none() && watch.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn run() -> ClaimedAs {
        ClaimedAs::Run
    }

    /// A claim names whose the member is, for its denials' hints (the member's own name
    /// before; a run's say `--allow`, as a cold run's); later changes keep that name.
    #[test]
    fn denials_hint_at_whoever_claimed_the_member() {
        let hint = |ctx: &Ctx| match ctx.policy().check("no.test", 443) {
            airlock_egress::Decision::Deny { fix, .. } => fix,
            other => panic!("{other:?}"),
        };
        let (dir, ctx) = served();
        send(&dir, &["x.test".into()], &[443]).unwrap();
        assert!(
            hint(&ctx).contains("airlock allow m no.test"),
            "{}",
            hint(&ctx)
        );
        begin_claim(
            &dir,
            &[],
            &[443],
            &[],
            None,
            ClaimedAs::Sandbox("box".into()),
            None,
        )
        .and_then(PendingClaim::finish)
        .unwrap();
        assert!(
            hint(&ctx).contains("airlock allow box no.test"),
            "{}",
            hint(&ctx)
        );
        send(&dir, &["x.test".into()], &[443]).unwrap();
        assert!(
            hint(&ctx).contains("airlock allow box no.test"),
            "{}",
            hint(&ctx)
        );
        let (dir2, ctx2) = served_as("-run");
        begin_claim(&dir2, &[], &[443], &[], None, run(), None)
            .and_then(PendingClaim::finish)
            .unwrap();
        assert!(hint(&ctx2).contains("--allow no.test"), "{}", hint(&ctx2));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&dir2);
    }

    /// A `Vec` the test reads while a journal writes to it.
    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn denied(host: &str) -> airlock_egress::journal::Event {
        let mut e = airlock_egress::journal::Event::new(
            airlock_egress::journal::Kind::Dns,
            airlock_egress::journal::Verdict::Deny,
        );
        e.host = Some(host.into());
        e.port = Some(53);
        e.reason = Some(format!("{host} is not in the allowed domains"));
        e
    }

    /// A claim of the member served in `dir` (allowlist `a.test`) watching its events into
    /// `got`.
    fn watching_claim(dir: &Path, got: &Shared) -> Watch {
        let (_, watch) = begin_claim(
            dir,
            &["a.test".into()],
            &[443],
            &[],
            None,
            run(),
            Some(airlock_egress::journal::Journal::new(got.clone())),
        )
        .and_then(PendingClaim::finish)
        .unwrap();
        watch.expect("a watch")
    }

    /// A watching claim gets the member's events from the claim on, each as the member's
    /// journal wrote it, all of those before its `sync` by the time `finish` returns; none from
    /// before the claim; and once it has hung up the member's journal drops the tap.
    #[test]
    fn a_watching_claim_gets_its_members_events_from_the_claim_on() {
        let (dir, ctx) = served();
        ctx.journal.record(&denied("before.test"));
        let got = Shared::default();
        let mut watch = watching_claim(&dir, &got);
        watch.follow();
        let sent: Vec<_> = (0..300).map(|i| denied(&format!("h{i}.test"))).collect();
        for e in &sent {
            ctx.journal.record(e);
        }
        watch.finish();
        let text = String::from_utf8(got.0.lock().unwrap().clone()).unwrap();
        let back: Vec<airlock_egress::journal::Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back.len(), sent.len(), "{text}");
        assert!(back == sent, "not the events sent, in order: {text}");
        // Hung up: the next event finds the tap gone (and does not block on a full queue).
        for _ in 0..2000 {
            ctx.journal.record(&denied("after.test"));
        }
        assert!(
            !format!("{:?}", ctx.journal).contains("tap: true"),
            "{:?}",
            ctx.journal
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A claimer that reads its events itself, as it waits for its command (no thread), gets
    /// each as it comes, and after `finish` every one before it, in order, however many; its
    /// `sync` is answered whether events are still queued at the member (the streaming
    /// thread answers it behind them) or none are (the reading thread answers it at once).
    #[test]
    fn a_claimer_reading_its_events_itself_gets_them_all_in_order() {
        use airlock_sandbox::container::stub::Side;
        let (dir, ctx) = served();
        let got = Shared::default();
        let mut watch = watching_claim(&dir, &got);
        let sent: Vec<_> = (0..600).map(|i| denied(&format!("h{i}.test"))).collect();
        for e in &sent[..300] {
            ctx.journal.record(e);
        }
        // As the claimer's wait does: poll, then take what came.
        let lines = |got: &Shared| {
            got.0
                .lock()
                .unwrap()
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while lines(&got) < 300 && std::time::Instant::now() < deadline {
            let mut fds = [nix::poll::PollFd::new(
                watch.fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
            assert!(watch.readable(), "the member hung up");
        }
        assert_eq!(lines(&got), 300, "not said as they came");
        for e in &sent[300..] {
            ctx.journal.record(e);
        }
        assert!(watch.finish(), "not synced");
        let text = String::from_utf8(got.0.lock().unwrap().clone()).unwrap();
        let back: Vec<airlock_egress::journal::Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(back == sent, "not the events sent, in order: {text}");
        // Nothing queued at the member: answered all the same.
        let quiet = Shared::default();
        assert!(watching_claim(&dir, &quiet).finish(), "not synced");
        assert!(quiet.0.lock().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A member's supervisor whose sandbox has ended waits (`wait_streams`) until its claimer's
    /// event stream has ended: a claimer that ends the member before it asks for the last
    /// events still gets them, and its `sync` its answer.
    #[test]
    fn a_supervisor_answers_its_claimers_last_sync_before_it_exits() {
        let (dir, ctx) = served();
        let got = Shared::default();
        let watch = watching_claim(&dir, &got);
        // The member's end: its supervisor waits for the stream (the claimer has not asked).
        let exited = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let supervisor = {
            let exited = exited.clone();
            std::thread::spawn(move || {
                wait_streams(Duration::from_secs(10));
                exited.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !exited.load(std::sync::atomic::Ordering::SeqCst),
            "the supervisor went before its claimer's last sync"
        );
        ctx.journal.record(&denied("last.test"));
        assert!(watch.finish(), "not synced");
        supervisor.join().unwrap();
        let text = String::from_utf8(got.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("last.test"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
