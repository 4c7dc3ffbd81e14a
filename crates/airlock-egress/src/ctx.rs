//! What the enforcement of one sandbox shares across its connections ([`Ctx`]): the live
//! policy, the resolver, the journal, the open connections a policy change re-checks; and
//! connecting upstream for an allowed name. A leaf of `proxy` and `intercept`'s serving.

use crate::journal::{Event, Journal, Kind, Verdict};
use crate::policy::{Decision, EgressPolicy, LivePolicy};
use crate::resolve::Resolver;
use crate::{addr, host};
use std::collections::HashMap;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Everything the enforcement needs, shared by all connections of one sandbox.
pub struct Ctx {
    /// The domain policy: replaceable while the sandbox runs ([`Ctx::set_policy`]).
    policy: LivePolicy,
    pub resolver: Arc<dyn Resolver>,
    pub journal: Journal,
    /// Per upstream address tried.
    pub connect_timeout: Duration,
    /// How long a new connection may take to show its ClientHello or request head.
    pub inspect_timeout: Duration,
    /// TTL of the DNS answers given to the sandbox.
    pub dns_ttl: u32,
    /// The address floor. Always [`addr::forbidden`], except in tests that relay on loopback.
    pub forbidden: fn(IpAddr) -> Option<&'static str>,
    /// Connections served at once (inspecting or relaying); more are closed at once, so a
    /// sandbox cannot make the host side spawn threads without bound.
    pub max_connections: usize,
    /// Secrets bound to hosts: TLS to those hosts is ended here and the secrets put in. Set
    /// once: at start ([`Ctx::set_intercept`] before serving), or by a warm-pool claim over
    /// the supervisor's policy socket before any of the claim's code runs.
    intercept: std::sync::OnceLock<Arc<crate::intercept::Interceptor>>,
    active: AtomicUsize,
    /// The allowed connections being relayed, re-checked whenever the policy changes.
    open: Mutex<HashMap<u64, Open>>,
    next_open: AtomicU64,
    /// Threads serving a connection or a DNS query, counted from their accept
    /// ([`Ctx::working`]): the end of a sandbox waits for them ([`Ctx::settle`]).
    working: Arc<(Mutex<usize>, Condvar)>,
}

/// An allowed connection being relayed: what it was allowed as, and its sockets (clones),
/// to close it if a new policy denies that.
struct Open {
    kind: Kind,
    shown: Option<String>,
    host: String,
    port: u16,
    dst: Option<SocketAddr>,
    conn: TcpStream,
    up: Option<TcpStream>,
    /// Shut down by a policy change already (its relay is ending).
    closed: bool,
}

/// A connection's place in [`Ctx::open`]; given back on drop.
pub(crate) struct Registered<'a> {
    ctx: &'a Ctx,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.ctx.open_conns().remove(&self.id);
    }
}

impl Ctx {
    /// "x resolves only to forbidden addresses: 127.0.0.1 (loopback), ..."
    pub(crate) fn forbidden_reason(&self, name: &str, bad: &[IpAddr]) -> String {
        let why: Vec<String> = bad
            .iter()
            .filter_map(|ip| (self.forbidden)(*ip).map(|w| format!("{ip} ({w})")))
            .collect();
        format!(
            "{name} resolves only to forbidden addresses: {}",
            why.join(", ")
        )
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("policy", &self.policy.get())
            .field("journal", &self.journal)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// The defaults: the real address floor, 10 s to connect and to inspect, 5 s DNS TTL.
    pub fn new(policy: EgressPolicy, resolver: Arc<dyn Resolver>, journal: Journal) -> Self {
        Self {
            policy: LivePolicy::new(policy),
            resolver,
            journal,
            connect_timeout: Duration::from_secs(10),
            inspect_timeout: Duration::from_secs(10),
            dns_ttl: 5,
            forbidden: addr::forbidden,
            max_connections: 1024,
            intercept: std::sync::OnceLock::new(),
            active: AtomicUsize::new(0),
            open: Mutex::new(HashMap::new()),
            next_open: AtomicU64::new(0),
            working: Arc::new((Mutex::new(0), Condvar::new())),
        }
    }

    /// The interceptor of this sandbox's bound secrets, if it has any.
    pub fn intercept(&self) -> Option<&Arc<crate::intercept::Interceptor>> {
        self.intercept.get()
    }

    /// Give this sandbox its bound secrets' interceptor. Once only: a sandbox's secrets and
    /// CA are never replaced (a warm member serves one claim). Err: it has one already.
    pub fn set_intercept(
        &self,
        icpt: Arc<crate::intercept::Interceptor>,
    ) -> Result<(), Arc<crate::intercept::Interceptor>> {
        self.intercept.set(icpt)
    }

    /// The policy in force now (each decision takes it once, whole).
    pub fn policy(&self) -> Arc<EgressPolicy> {
        self.policy.get()
    }

    /// Put `policy` in force at once: later connections and DNS answers follow it, and every
    /// open connection it no longer allows is closed (both sides shut down) and journaled as a
    /// denial. Returns how many were closed.
    pub fn set_policy(&self, policy: EgressPolicy) -> usize {
        self.policy.set(policy);
        // Taken after the swap: a connection registered after this sweep re-checks the new
        // policy itself (see `register`), so none slips between the two.
        let now = self.policy.get();
        let mut open = self.open_conns();
        let mut closed = 0;
        for o in open.values_mut().filter(|o| !o.closed) {
            if let Decision::Deny { reason, fix } = now.check(&o.host, o.port) {
                o.closed = true;
                let _ = o.conn.shutdown(Shutdown::Both);
                if let Some(up) = &o.up {
                    let _ = up.shutdown(Shutdown::Both);
                }
                let note = Note {
                    kind: o.kind,
                    host: o.shown.clone(),
                    port: Some(o.port),
                    dst: o.dst,
                };
                note.record(
                    self,
                    Verdict::Deny,
                    &format!("{reason}; the open connection was closed (the policy changed)"),
                    &fix,
                    None,
                );
                closed += 1;
            }
        }
        closed
    }

    /// Connections being relayed now that a policy change would re-check.
    pub fn open_connections(&self) -> usize {
        self.open_conns().len()
    }

    fn open_conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Open>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record an allowed connection (to `host`, normalized, on `port`) for as long as the
    /// returned guard lives. None — and the denial journaled — when the policy in force no
    /// longer allows it (it changed since the decision), or its sockets cannot be kept.
    pub(crate) fn register(
        &self,
        note: &Note,
        host: &str,
        port: u16,
        conn: &TcpStream,
        up: Option<&TcpStream>,
    ) -> Option<Registered<'_>> {
        let (Ok(c), up) = (conn.try_clone(), up.map(TcpStream::try_clone).transpose()) else {
            return None;
        };
        let Ok(up) = up else { return None };
        let id = self.next_open.fetch_add(1, Ordering::SeqCst);
        self.open_conns().insert(
            id,
            Open {
                kind: note.kind,
                shown: note.host.clone(),
                host: host.to_string(),
                port,
                dst: note.dst,
                conn: c,
                up,
                closed: false,
            },
        );
        let reg = Registered { ctx: self, id };
        if let Decision::Deny { reason, fix } = self.policy.get().check(host, port) {
            note.record(self, Verdict::Deny, &reason, &fix, None);
            return None;
        }
        Some(reg)
    }
}

/// A place among [`Ctx::max_connections`]; given back on drop.
pub(crate) struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One thread's work for this sandbox (a connection, a DNS query), from its accept until
/// the guard drops: [`Ctx::settle`] waits for it.
pub struct Working(Arc<(Mutex<usize>, Condvar)>);

impl Drop for Working {
    fn drop(&mut self) {
        let (n, ended) = &*self.0;
        let mut n = n.lock().unwrap_or_else(PoisonError::into_inner);
        *n = n.saturating_sub(1);
        if *n == 0 {
            ended.notify_all();
        }
    }
}

impl Ctx {
    /// Counts a thread's work from now (take it before the thread is spawned, so that a
    /// connection accepted but not yet served is counted).
    pub fn working(&self) -> Working {
        *self
            .working
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += 1;
        Working(self.working.clone())
    }

    /// Waits, `max` at most, until no thread is serving a connection or query: a sandbox's
    /// last decisions are journaled before its end is reported (a denial found when the
    /// client hung up, e.g. a refused interception certificate, is written after the client
    /// learnt of it). True when none is left.
    pub fn settle(&self, max: Duration) -> bool {
        let deadline = Instant::now() + max;
        let (n, ended) = &*self.working;
        let mut n = n.lock().unwrap_or_else(PoisonError::into_inner);
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = ended
                .wait_timeout(n, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Connections being served right now.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    pub(crate) fn admit(&self, note: &Note) -> Option<Slot<'_>> {
        let n = self.active.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(&self.active);
        if n >= self.max_connections {
            let reason = format!(
                "too many connections at once (limit {})",
                self.max_connections
            );
            note.record(self, Verdict::Deny, &reason, "", None);
            return None;
        }
        Some(slot)
    }
}

/// Facts about one connection, for its journal line.
pub(crate) struct Note {
    pub(crate) kind: Kind,
    pub(crate) host: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) dst: Option<SocketAddr>,
}

impl Note {
    pub(crate) fn record(
        &self,
        ctx: &Ctx,
        v: Verdict,
        reason: &str,
        fix: &str,
        ip: Option<IpAddr>,
    ) {
        let mut e = Event::new(self.kind, v);
        e.host = self.host.as_deref().map(host::display);
        e.port = self.port;
        e.dst = self.dst.map(|d| d.to_string());
        e.ip = ip.map(|i| vec![i.to_string()]).unwrap_or_default();
        e.reason = (!reason.is_empty()).then(|| reason.to_string());
        e.fix = (!fix.is_empty()).then(|| fix.to_string());
        ctx.journal.record(&e);
    }
}

/// Why no upstream connection was made.
pub(crate) enum Unreachable {
    /// Every address is in a forbidden range (DNS rebinding, private names).
    Forbidden(String),
    Failed(String),
}

/// Resolve `name` here and connect to its first usable address on `port`.
pub(crate) fn connect(
    ctx: &Ctx,
    name: &str,
    port: u16,
) -> Result<(TcpStream, IpAddr), Unreachable> {
    let ips = ctx
        .resolver
        .lookup(name)
        .map_err(|e| Unreachable::Failed(format!("cannot resolve {name}: {e}")))?;
    let (mut good, bad): (Vec<IpAddr>, Vec<IpAddr>) = ips
        .into_iter()
        .partition(|ip| (ctx.forbidden)(*ip).is_none());
    if good.is_empty() {
        return Err(if bad.is_empty() {
            Unreachable::Failed(format!("{name} has no addresses"))
        } else {
            Unreachable::Forbidden(ctx.forbidden_reason(name, &bad))
        });
    }
    good.sort_by_key(|ip| ip.is_ipv6());
    let mut last = String::new();
    for ip in good {
        match TcpStream::connect_timeout(&SocketAddr::new(ip, port), ctx.connect_timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok((s, ip));
            }
            Err(e) => last = format!("cannot connect to {name} ({ip}:{port}): {e}"),
        }
    }
    Err(Unreachable::Failed(last))
}

/// Resolve and connect for an intercepted connection: the address, or why not.
pub(crate) fn connect_upstream(
    ctx: &Ctx,
    name: &str,
    port: u16,
) -> Result<(TcpStream, IpAddr), String> {
    connect(ctx, name, port).map_err(|u| match u {
        Unreachable::Forbidden(r) | Unreachable::Failed(r) => r,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::SharedBuf;
    use crate::resolve::StaticResolver;

    fn ctx() -> Ctx {
        Ctx::new(
            EgressPolicy::new(&["a.test"], &[443]).unwrap(),
            Arc::new(StaticResolver::new([])),
            Journal::new(SharedBuf::default()),
        )
    }

    #[test]
    fn settle_waits_for_the_work_counted_and_no_longer() {
        let ctx = ctx();
        assert!(
            ctx.settle(Duration::ZERO),
            "nothing counted: settled at once"
        );
        let held = ctx.working();
        let t = Instant::now();
        assert!(
            !ctx.settle(Duration::from_millis(50)),
            "a thread still works"
        );
        assert!(t.elapsed() >= Duration::from_millis(50));
        let other = ctx.working();
        let t = Instant::now();
        let ended = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
            drop(other);
        });
        assert!(ctx.settle(Duration::from_secs(30)), "both ended");
        assert!(t.elapsed() >= Duration::from_millis(100));
        ended.join().unwrap();
        assert!(ctx.settle(Duration::ZERO));
    }
}
