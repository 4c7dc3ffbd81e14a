//! TLS interception for the hosts a secret is bound to (and only those): the host side ends
//! the sandbox's TLS with a certificate from a per-sandbox CA, checks that the request's Host
//! is the name the TLS handshake asked for, puts the secret in (see [`crate::inject`]), and
//! sends the request on over a new TLS connection that verifies the real server normally.
//!
//! The CA is made when the sandbox starts; its key exists only in this process's memory, and
//! its certificate is name-constrained to the bound hosts, so even a stolen leaf or a
//! confused client cannot make it vouch for any other name. rustls with the ring provider.

use crate::http::{self, body::BodyFramer, HttpError};
use crate::inject::{BodyScan, Injected, Leak, Secrets};
use crate::journal::{Event, Kind, Verdict};
use crate::proxy::Ctx;
use crate::{host, sni};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// With no byte from the upstream for this long, an intercepted exchange is closed (long
/// enough for a model API's streamed answer to think).
const UPSTREAM_IDLE: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    #[error("make the sandbox's interception CA: {0}")]
    Ca(String),
    #[error("read the upstream CA file {path}: {why}")]
    UpstreamCa { path: String, why: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// The per-sandbox CA and the secrets it serves.
pub struct Interceptor {
    secrets: Secrets,
    ca_key: rcgen::KeyPair,
    ca: rcgen::Certificate,
    ca_pem: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
    leaves: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
    upstream: Arc<rustls::ClientConfig>,
    pool: Pool,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor")
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

/// The workspace's one TLS provider. (rustls deprecates it for lacking post-quantum key
/// exchange; aws-lc-rs, which has it, is not wanted here: one provider, no C toolchain.)
/// AES-128-GCM is preferred over AES-256-GCM (both sides of an intercepted connection
/// decrypt and encrypt every byte; AES-128 has 10 rounds to AES-256's 14).
#[allow(deprecated)]
fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| {
        let name = format!("{:?}", s.suite());
        !name.contains("AES_128_GCM")
    });
    Arc::new(p)
}

impl Interceptor {
    /// A fresh CA for `secrets`' hosts. Upstream servers are verified against the system's
    /// roots plus `extra_roots` (PEM; a test CA, or a corporate one: `AIRLOCK_UPSTREAM_CA`).
    pub fn new(secrets: Secrets, extra_roots: Option<&[u8]>) -> Result<Self, InterceptError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let _ = roots.add_parsable_certificates(native.certs);
        if let Some(pem) = extra_roots {
            use rustls::pki_types::pem::PemObject;
            for c in CertificateDer::pem_slice_iter(pem) {
                let c = c.map_err(|e| InterceptError::UpstreamCa {
                    path: "(given)".into(),
                    why: e.to_string(),
                })?;
                roots
                    .add(c)
                    .map_err(|e| InterceptError::Tls(e.to_string()))?;
            }
        }
        Self::with_roots(secrets, roots)
    }

    fn with_roots(secrets: Secrets, roots: rustls::RootCertStore) -> Result<Self, InterceptError> {
        let ca_err = |e: rcgen::Error| InterceptError::Ca(e.to_string());
        let ca_key = rcgen::KeyPair::generate().map_err(ca_err)?;
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(ca_err)?;
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(
            rcgen::DnType::CommonName,
            "airlock sandbox secret injection CA",
        );
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "airlock");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        p.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: secrets
                .hosts()
                .into_iter()
                .map(rcgen::GeneralSubtree::DnsName)
                .collect(),
            excluded_subtrees: Vec::new(),
        });
        let ca = p.self_signed(&ca_key).map_err(ca_err)?;
        let ca_pem = ca.pem();
        let provider = ring();
        let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| InterceptError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            secrets,
            ca_key,
            ca,
            ca_pem,
            provider,
            leaves: Mutex::new(HashMap::new()),
            upstream: Arc::new(client),
            pool: Pool::default(),
        })
    }

    /// The CA certificate (PEM) the sandbox must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Idle upstream connections kept for reuse (for tests and measurements).
    pub fn idle_upstreams(&self) -> usize {
        self.pool.len()
    }

    /// Whether TLS to `host` (normalized) is intercepted.
    pub fn intercepts(&self, host: &str) -> bool {
        self.secrets.intercepts(host)
    }

    /// The server configuration for `host`: a leaf certificate made (once) for it.
    fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut leaves = self
            .leaves
            .lock()
            .map_err(|_| "poisoned lock".to_string())?;
        if let Some(c) = leaves.get(host) {
            return Ok(c.clone());
        }
        let err = |e: rcgen::Error| e.to_string();
        let key = rcgen::KeyPair::generate().map_err(err)?;
        let mut p = rcgen::CertificateParams::new(vec![host.to_string()]).map_err(err)?;
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, host);
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = p.signed_by(&key, &self.ca, &self.ca_key).map_err(err)?;
        let chain = vec![leaf.der().clone(), self.ca.der().clone()];
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, der)
            .map_err(|e| e.to_string())?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        cfg.ignore_client_order = true;
        let cfg = Arc::new(cfg);
        leaves.insert(host.to_string(), cfg.clone());
        Ok(cfg)
    }
}

/// What `airlock doctor` reports about secret injection on this host.
#[derive(Debug, Clone)]
pub struct SelfTest {
    /// System root certificates found for verifying the real servers.
    pub roots: usize,
    pub roots_ms: f64,
    /// Making a sandbox's CA (and the TLS configurations), as a sandbox start does.
    pub ca_ms: f64,
    /// Making one host's leaf certificate, then a TLS handshake against it in memory that
    /// verifies it under the CA.
    pub leaf_ms: f64,
}

/// Check on this host what interception needs: the ring provider, making a CA and a leaf, a
/// verified handshake, the system roots. Timed.
pub fn self_test() -> Result<SelfTest, InterceptError> {
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let native = rustls_native_certs::load_native_certs();
    let mut system = rustls::RootCertStore::empty();
    let (roots, _) = system.add_parsable_certificates(native.certs);
    let roots_ms = ms(t);
    let host = "doctor.airlock.invalid";
    let b = crate::inject::Binding::new(
        "AIRLOCK_DOCTOR",
        "doctor".into(),
        &[host.into()],
        crate::inject::At::Header("x-doctor".into()),
    )
    .map_err(|e| InterceptError::Ca(e.to_string()))?;
    let t = Instant::now();
    let icpt = Interceptor::with_roots(Secrets::new(vec![b]), system)?;
    let ca_ms = ms(t);
    let t = Instant::now();
    let server_cfg = icpt.server_config(host).map_err(InterceptError::Ca)?;
    let mut trust = rustls::RootCertStore::empty();
    trust
        .add(icpt.ca.der().clone())
        .map_err(|e| InterceptError::Tls(e.to_string()))?;
    let client_cfg = rustls::ClientConfig::builder_with_provider(icpt.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| InterceptError::Tls(e.to_string()))?
        .with_root_certificates(trust)
        .with_no_client_auth();
    let tls = |e: rustls::Error| InterceptError::Tls(e.to_string());
    let name =
        ServerName::try_from(host.to_string()).map_err(|e| InterceptError::Tls(e.to_string()))?;
    let mut client = rustls::ClientConnection::new(Arc::new(client_cfg), name).map_err(tls)?;
    let mut server = rustls::ServerConnection::new(server_cfg).map_err(tls)?;
    // Both ends in memory: move each side's bytes to the other until both are done.
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
        let mut wire = Vec::new();
        while client.wants_write() {
            client
                .write_tls(&mut wire)
                .map_err(|e| InterceptError::Tls(e.to_string()))?;
        }
        let mut rd = wire.as_slice();
        while !rd.is_empty() {
            server
                .read_tls(&mut rd)
                .map_err(|e| InterceptError::Tls(e.to_string()))?;
        }
        server.process_new_packets().map_err(tls)?;
        let mut wire = Vec::new();
        while server.wants_write() {
            server
                .write_tls(&mut wire)
                .map_err(|e| InterceptError::Tls(e.to_string()))?;
        }
        let mut rd = wire.as_slice();
        while !rd.is_empty() {
            client
                .read_tls(&mut rd)
                .map_err(|e| InterceptError::Tls(e.to_string()))?;
        }
        client.process_new_packets().map_err(tls)?;
    }
    if client.is_handshaking() || server.is_handshaking() {
        return Err(InterceptError::Tls(
            "the test handshake did not complete".into(),
        ));
    }
    Ok(SelfTest {
        roots,
        roots_ms,
        ca_ms,
        leaf_ms: ms(t),
    })
}

/// Facts for the journal lines of one intercepted connection.
pub(crate) struct Where {
    pub kind: Kind,
    pub host: String,
    pub port: u16,
    pub dst: Option<SocketAddr>,
}

impl Where {
    fn record(&self, ctx: &Ctx, v: Verdict, reason: &str, ip: Option<IpAddr>, inj: &[Injected]) {
        let mut e = Event::new(self.kind, v);
        e.host = Some(host::display(&self.host));
        e.port = Some(self.port);
        e.dst = self.dst.map(|d| d.to_string());
        e.ip = ip.map(|i| vec![i.to_string()]).unwrap_or_default();
        e.reason = (!reason.is_empty()).then(|| reason.to_string());
        e.injected = inj.to_vec();
        e.intercepted = true;
        ctx.journal.record(&e);
    }
}

/// A socket with a read buffer: rustls reads TLS records 4 KiB at a time, a system call each
/// without one (a quarter of the intercepted bulk throughput went there).
pub(crate) struct BufSock {
    sock: TcpStream,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
}

impl BufSock {
    fn new(sock: TcpStream, cap: usize) -> Self {
        Self {
            sock,
            buf: vec![0u8; cap].into_boxed_slice(),
            pos: 0,
            end: 0,
        }
    }

    /// Bytes read from the socket and not yet handed to rustls.
    fn buffered(&self) -> usize {
        self.end - self.pos
    }
}

impl Read for BufSock {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.end {
            // Acknowledge at once what arrives: a kept-alive connection is in the kernel's
            // "ping-pong" mode, which delays ACKs (40 ms) to ride on the next data we send, and a
            // peer with Nagle on (most servers' default) holds the rest of its answer until
            // then. A new connection starts in quick-ACK mode; this keeps every read there.
            let _ = rustix::net::sockopt::set_tcp_quickack(&self.sock, true);
            let n = self.sock.read(&mut self.buf)?;
            self.pos = 0;
            self.end = n;
        }
        let n = out.len().min(self.end - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for BufSock {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.sock.write(b)
    }
    fn write_vectored(&mut self, b: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.sock.write_vectored(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// Read buffer of the upstream socket (bulk downloads) and of the sandbox's (requests).
const UP_SOCK_BUF: usize = 64 * 1024;
const DOWN_SOCK_BUF: usize = 16 * 1024;
/// Plaintext moved per read/write.
const CHUNK: usize = 64 * 1024;
/// How long a kept-alive connection from the sandbox may wait for its next request.
const KEEP_IDLE: Duration = Duration::from_secs(60);
/// How long an idle upstream connection is kept for reuse, and how many per host.
const POOL_IDLE: Duration = Duration::from_secs(30);
const POOL_PER_HOST: usize = 4;

type Down = rustls::StreamOwned<rustls::ServerConnection, BufSock>;
type Up = rustls::StreamOwned<rustls::ClientConnection, BufSock>;
/// An idle upstream connection, its address, since when it is idle.
type Idle = (Up, IpAddr, Instant);

/// Idle upstream TLS connections of one sandbox (the pool lives in its [`Interceptor`], so two
/// sandboxes never share one), by bound host and port. Every request sent on a reused
/// connection is parsed, checked and has its secret put in like the first.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<(String, u16), Vec<Idle>>>,
}

impl Pool {
    fn take(&self, host: &str, port: u16) -> Option<(Up, IpAddr)> {
        loop {
            let (mut up, ip, since) = {
                let mut idle = self.idle.lock().ok()?;
                let v = idle.get_mut(&(host.to_string(), port))?;
                v.pop()?
            };
            if since.elapsed() < POOL_IDLE && still_open(&mut up) {
                return Some((up, ip));
            }
        }
    }

    fn put(&self, host: &str, port: u16, up: Up, ip: IpAddr) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let v = idle.entry((host.to_string(), port)).or_default();
        v.retain(|e| e.2.elapsed() < POOL_IDLE);
        if v.len() < POOL_PER_HOST {
            v.push((up, ip, Instant::now()));
        }
    }

    /// Idle connections kept (tests).
    fn len(&self) -> usize {
        self.idle
            .lock()
            .map(|m| m.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

/// Whether an idle upstream connection can take another request: the server has not closed it
/// or sent anything but TLS housekeeping (session tickets) meanwhile. Never blocks.
fn still_open(up: &mut Up) -> bool {
    if up.sock.sock.set_nonblocking(true).is_err() {
        return false;
    }
    let ok = loop {
        match up.conn.read_tls(&mut up.sock) {
            Ok(0) => break false,
            Ok(_) => match up.conn.process_new_packets() {
                Ok(st) if st.plaintext_bytes_to_read() == 0 && !st.peer_has_closed() => {}
                _ => break false,
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
            Err(_) => break false,
        }
    };
    ok && up.sock.sock.set_nonblocking(false).is_ok()
}

/// Read what plaintext there is, up to `out.len()`: blocks for the first bytes, then also
/// takes what the socket buffer already holds (whole 16 KiB records, not one per call).
fn read_bulk<C, S>(tls: &mut rustls::StreamOwned<C, BufSock>, out: &mut [u8]) -> io::Result<usize>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = rustls::ConnectionCommon<S>>,
    S: rustls::SideData,
{
    let first = tls.read(out)?;
    let mut filled = first;
    while first > 0 && filled < out.len() {
        match tls.conn.reader().read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(k) => {
                filled += k;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        if tls.sock.buffered() == 0
            || tls.conn.read_tls(&mut tls.sock).is_err()
            || tls.conn.process_new_packets().is_err()
        {
            break;
        }
    }
    Ok(filled)
}

/// Serve a TLS connection to a bound host. `hello` holds the bytes read so far (the
/// ClientHello); `name` is its server name, already allowed by the policy and normalized;
/// `upstream`, if given, is an open connection (a CONNECT tunnel's).
pub(crate) fn serve(
    conn: TcpStream,
    hello: &[u8],
    name: &str,
    at: Where,
    ctx: &Ctx,
    icpt: &Interceptor,
    upstream: Option<(TcpStream, IpAddr)>,
) {
    let cfg = match icpt.server_config(name) {
        Ok(c) => c,
        Err(e) => {
            at.record(
                ctx,
                Verdict::Deny,
                &format!("cannot make the interception certificate: {e}"),
                None,
                &[],
            );
            return crate::relay::refuse(conn, &sni::ALERT_INTERNAL_ERROR);
        }
    };
    let Ok(mut server) = rustls::ServerConnection::new(cfg) else {
        return;
    };
    // The ClientHello was read already: hand it to rustls first.
    let mut rd: &[u8] = hello;
    while !rd.is_empty() {
        if server.read_tls(&mut rd).is_err() {
            return;
        }
    }
    let _ = conn.set_nodelay(true);
    let _ = conn.set_read_timeout(Some(ctx.inspect_timeout));
    let _ = conn.set_write_timeout(Some(ctx.inspect_timeout));
    let mut conn = BufSock::new(conn, DOWN_SOCK_BUF);
    if let Err(e) = server
        .process_new_packets()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        .and_then(|_| handshake(&mut server, &mut conn))
    {
        let reason = format!(
            "the program in the sandbox did not accept airlock's interception certificate for {name} ({e}); \
             secrets bound to {name} are injected over TLS that airlock ends, so the program must trust \
             the sandbox's CA (SSL_CERT_FILE, NODE_EXTRA_CA_CERTS, ... point to it; a client that pins \
             certificates cannot use injected secrets)"
        );
        at.record(ctx, Verdict::Deny, &reason, None, &[]);
        return;
    }
    let mut client = rustls::StreamOwned::new(server, conn);
    let mut x = Exchange {
        client: &mut client,
        name,
        at: &at,
        ctx,
        icpt,
        upstream,
        buf: Vec::new(),
        chunk: vec![0u8; CHUNK],
    };
    let mut first = true;
    while x.one(first) == Next::Again {
        first = false;
    }
    client.conn.send_close_notify();
    let _ = client.flush();
}

fn handshake<C, S>(tls: &mut rustls::ConnectionCommon<S>, sock: &mut C) -> io::Result<()>
where
    C: Read + Write,
    S: rustls::SideData,
{
    while tls.is_handshaking() {
        tls.complete_io(sock)?;
    }
    // Flush what is left to write (the server's last flight).
    while tls.wants_write() {
        tls.write_tls(sock)?;
    }
    Ok(())
}

/// An answer to the sandbox inside the TLS it opened (the request was refused).
fn answer(client: &mut Down, status: &str, text: &str) {
    let _ = client.write_all(&http::response(status, text));
    let _ = client.flush();
}

#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Both sides keep the connection: read the sandbox's next request.
    Again,
    Close,
}

/// One intercepted connection from the sandbox: its requests one after another.
struct Exchange<'a> {
    client: &'a mut Down,
    name: &'a str,
    at: &'a Where,
    ctx: &'a Ctx,
    icpt: &'a Interceptor,
    /// A CONNECT tunnel's connection, used by the first request.
    upstream: Option<(TcpStream, IpAddr)>,
    /// Bytes from the sandbox not yet used (the start of the next request).
    buf: Vec<u8>,
    chunk: Vec<u8>,
}

/// An upstream connection for one request.
struct Upstream {
    tls: Up,
    ip: IpAddr,
    reused: bool,
}

impl Exchange<'_> {
    /// A new verified TLS connection to the bound host (the tunnel's, or a new one).
    fn connect(&mut self) -> Result<Upstream, Next> {
        let (name, ctx, at) = (self.name, self.ctx, self.at);
        let (up, ip) = match self.upstream.take() {
            Some(u) => u,
            None => match crate::proxy::connect_upstream(ctx, name, at.port) {
                Ok(u) => u,
                Err(reason) => {
                    // Allowed, but the network failed (as for connections not intercepted).
                    at.record(ctx, Verdict::Allow, &reason, None, &[]);
                    answer(
                        self.client,
                        "502 Bad Gateway",
                        &format!("airlock: {reason}\n"),
                    );
                    return Err(Next::Close);
                }
            },
        };
        let Ok(server_name) = ServerName::try_from(name.to_string()) else {
            return Err(Next::Close);
        };
        let Ok(mut tls) = rustls::ClientConnection::new(self.icpt.upstream.clone(), server_name)
        else {
            return Err(Next::Close);
        };
        let _ = up.set_nodelay(true);
        let _ = up.set_read_timeout(Some(ctx.connect_timeout));
        let _ = up.set_write_timeout(Some(ctx.connect_timeout));
        let mut up = BufSock::new(up, UP_SOCK_BUF);
        if let Err(e) = handshake(&mut tls, &mut up) {
            let reason = format!(
                "TLS to {name} failed, the real server's certificate was not verified: {e}"
            );
            at.record(ctx, Verdict::Deny, &reason, Some(ip), &[]);
            answer(
                self.client,
                "502 Bad Gateway",
                &format!("airlock: {reason}\n"),
            );
            return Err(Next::Close);
        }
        Ok(Upstream {
            tls: rustls::StreamOwned::new(tls, up),
            ip,
            reused: false,
        })
    }

    /// An idle connection of this sandbox to the host, if `pooled` and there is one, else a new one.
    fn acquire(&mut self, pooled: bool) -> Result<Upstream, Next> {
        if pooled && self.upstream.is_none() {
            if let Some((tls, ip)) = self.icpt.pool.take(self.name, self.at.port) {
                return Ok(Upstream {
                    tls,
                    ip,
                    reused: true,
                });
            }
        }
        self.connect()
    }

    /// Read the next request's head (`first`: the connection's first request).
    fn read_head(&mut self, first: bool) -> Result<http::Request, Next> {
        let (name, ctx, at) = (self.name, self.ctx, self.at);
        let mut deadline = Instant::now() + ctx.inspect_timeout;
        loop {
            let parsed = if self.buf.is_empty() {
                Err(HttpError::NeedMore)
            } else {
                http::parse(&self.buf)
            };
            match parsed {
                Ok(r) => return Ok(r),
                Err(HttpError::NeedMore) if Instant::now() < deadline => {}
                Err(HttpError::NeedMore) => {
                    if first || !self.buf.is_empty() {
                        let reason = format!(
                            "no complete HTTP request inside the intercepted TLS within {} s",
                            ctx.inspect_timeout.as_secs()
                        );
                        at.record(ctx, Verdict::Deny, &reason, None, &[]);
                    }
                    return Err(Next::Close);
                }
                Err(e) => {
                    let reason = format!("inside the intercepted TLS to {name}: {e}");
                    at.record(ctx, Verdict::Deny, &reason, None, &[]);
                    answer(
                        self.client,
                        "400 Bad Request",
                        &format!(
                            "airlock: blocked {name}: {e} (secrets are injected into HTTP/1 requests only)\n"
                        ),
                    );
                    return Err(Next::Close);
                }
            }
            let idle = if self.buf.is_empty() && !first {
                KEEP_IDLE
            } else {
                ctx.inspect_timeout
            };
            let _ = self.client.sock.sock.set_read_timeout(Some(idle));
            let waiting = self.buf.is_empty() && !first;
            match read_bulk(self.client, &mut self.chunk) {
                Ok(0) => return Err(Next::Close),
                Ok(n) => {
                    if waiting {
                        // The next request began: its head has the usual time.
                        deadline = Instant::now() + ctx.inspect_timeout;
                    }
                    self.buf.extend_from_slice(&self.chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // An idle kept-alive connection ends quietly; other timeouts are judged above.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.buf.is_empty() && !first {
                        return Err(Next::Close);
                    }
                }
                Err(_) => return Err(Next::Close),
            }
        }
    }

    /// One request: read its head, check and rewrite it, send it upstream, relay the answer.
    fn one(&mut self, first: bool) -> Next {
        match self.request(first) {
            Ok(n) | Err(n) => n,
        }
    }

    fn request(&mut self, first: bool) -> Result<Next, Next> {
        let (name, ctx, at, icpt) = (self.name, self.ctx, self.at, self.icpt);
        let secrets = icpt.secrets();
        let req = self.read_head(first)?;
        // The Host must be the name the TLS handshake asked for (and was checked against).
        let host_ok = req
            .authority(at.port)
            .ok()
            .and_then(|(h, p)| host::normalize(&h).ok().map(|h| (h, p)))
            .is_some_and(|(h, p)| h == name && p == at.port);
        if !host_ok || !matches!(req.target, http::Target::Origin(_)) {
            let reason = format!(
                "the request's Host ({}) is not the TLS server name {name}:{} (domain fronting)",
                req.host.as_deref().map(host::display).unwrap_or_default(),
                at.port
            );
            at.record(ctx, Verdict::Deny, &reason, None, &[]);
            answer(
                self.client,
                "421 Misdirected Request",
                &format!("airlock: blocked {name}: {reason}\n"),
            );
            return Err(Next::Close);
        }
        let refuse_leak = |client: &mut Down, l: Leak| {
            let reason = l.reason(name);
            at.record(ctx, Verdict::Deny, &reason, None, &[]);
            answer(
                client,
                "403 Forbidden",
                &format!("airlock: blocked {name}: {reason}\n"),
            );
            Next::Close
        };
        let (mut req, injected) = match secrets.rewrite(&req, name) {
            Ok(r) => r,
            Err(l) => return Err(refuse_leak(self.client, l)),
        };
        // `Expect: 100-continue` is answered here: the body is read before the answer is.
        let expect = req.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("expect") && v.eq_ignore_ascii_case(b"100-continue")
        });
        req.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("expect"));
        let mut scan = BodyScan::new(secrets, Some(name));
        let mut framer = BodyFramer::new(req.body);
        let rest = self.buf.split_off(req.head_len);
        let take = framer.feed(&rest).map_err(|_| Next::Close)?;
        if let Err(l) = scan.feed(&rest[..take]) {
            return Err(refuse_leak(self.client, l));
        }
        // Bytes after this request's body: the start of the next (pipelined) one.
        self.buf = rest[take..].to_vec();
        let mut out = req.forward_head_with(true);
        out.extend_from_slice(&rest[..take]);
        // A request that is complete in memory can go on an idle connection: if the server
        // closed that one meanwhile, it is sent again on a new one.
        let whole = framer.done();
        let mut pooled = whole;
        let mut recorded = false;
        let (mut server, ip, head) = loop {
            let Upstream {
                tls: mut server,
                ip,
                reused,
            } = self.acquire(pooled)?;
            if !recorded {
                at.record(ctx, Verdict::Allow, "", Some(ip), &injected);
                recorded = true;
            }
            let _ = server
                .sock
                .sock
                .set_write_timeout(Some(ctx.connect_timeout));
            let sent = server.write_all(&out).and_then(|_| server.flush());
            if sent.is_err() {
                if reused {
                    pooled = false;
                    continue;
                }
                return Err(Next::Close);
            }
            if !whole {
                self.send_body(&mut server, &mut framer, &mut scan, expect)?;
            }
            // The answer's first bytes.
            let _ = server.sock.sock.set_read_timeout(Some(UPSTREAM_IDLE));
            match read_bulk(&mut server, &mut self.chunk) {
                Ok(n) if n > 0 => break (server, ip, self.chunk[..n].to_vec()),
                _ if reused => pooled = false,
                _ => return Err(Next::Close),
            }
        };
        let reuse = self.relay_answer(&mut server, head, &req.method)?;
        let _ = self.client.flush();
        if reuse && req.minor >= 1 {
            icpt.pool.put(name, at.port, server, ip);
        }
        Ok(if reuse && req.keep_alive() {
            Next::Again
        } else {
            Next::Close
        })
    }

    /// The rest of a request's body from the sandbox, scanned as it passes.
    fn send_body(
        &mut self,
        server: &mut Up,
        framer: &mut BodyFramer,
        scan: &mut BodyScan<'_>,
        expect: bool,
    ) -> Result<(), Next> {
        if expect
            && self
                .client
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .is_err()
        {
            return Err(Next::Close);
        }
        let _ = self.client.sock.sock.set_read_timeout(Some(UPSTREAM_IDLE));
        while !framer.done() {
            let n = match read_bulk(self.client, &mut self.chunk) {
                Ok(0) | Err(_) => return Err(Next::Close),
                Ok(n) => n,
            };
            let take = framer.feed(&self.chunk[..n]).map_err(|_| Next::Close)?;
            if let Err(l) = scan.feed(&self.chunk[..take]) {
                // The upstream never sees the end of this request.
                let _ = server.sock.sock.shutdown(std::net::Shutdown::Both);
                let reason = l.reason(self.name);
                self.at.record(self.ctx, Verdict::Deny, &reason, None, &[]);
                answer(
                    self.client,
                    "403 Forbidden",
                    &format!("airlock: blocked {}: {reason}\n", self.name),
                );
                return Err(Next::Close);
            }
            if server.write_all(&self.chunk[..take]).is_err() {
                return Err(Next::Close);
            }
            self.buf.extend_from_slice(&self.chunk[take..n]);
        }
        server.flush().map_err(|_| Next::Close)
    }

    /// Relay the answer (`head`: its first bytes) to the sandbox. `Ok(true)`: it was framed
    /// and complete, and both connections can carry another request.
    fn relay_answer(
        &mut self,
        server: &mut Up,
        mut head: Vec<u8>,
        method: &str,
    ) -> Result<bool, Next> {
        loop {
            let resp = loop {
                match http::parse_response(&head, method) {
                    Ok(r) => break Some(r),
                    Err(HttpError::NeedMore) => {}
                    Err(_) => break None,
                }
                match read_bulk(server, &mut self.chunk) {
                    Ok(n) if n > 0 => head.extend_from_slice(&self.chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    _ => break None,
                }
            };
            let (resp, len, close) = match resp {
                Some(http::Response {
                    body: http::ResponseBody::Framed(len),
                    close,
                    head_len,
                    ..
                }) => (head_len, len, close),
                Some(http::Response {
                    body: http::ResponseBody::Interim,
                    head_len,
                    ..
                }) => {
                    self.client
                        .write_all(&head[..head_len])
                        .map_err(|_| Next::Close)?;
                    head.drain(..head_len);
                    continue;
                }
                // Until the server closes (or not understood): relayed as it comes, then
                // both connections end.
                _ => {
                    self.client.write_all(&head).map_err(|_| Next::Close)?;
                    self.copy_until_close(server);
                    return Ok(false);
                }
            };
            self.client
                .write_all(&head[..resp])
                .map_err(|_| Next::Close)?;
            let mut body = BodyFramer::new(len);
            let mut extra = false;
            let mut data = head.split_off(resp);
            loop {
                let take = body.feed(&data).map_err(|_| Next::Close)?;
                self.client
                    .write_all(&data[..take])
                    .map_err(|_| Next::Close)?;
                extra |= take < data.len();
                if body.done() {
                    break;
                }
                let n = match read_bulk(server, &mut self.chunk) {
                    Ok(0) | Err(_) => return Err(Next::Close),
                    Ok(n) => n,
                };
                data.clear();
                data.extend_from_slice(&self.chunk[..n]);
            }
            // Bytes after the answer's end: the server is confused; its connection is not reused.
            return Ok(!extra && !close);
        }
    }

    fn copy_until_close(&mut self, server: &mut Up) {
        loop {
            match read_bulk(server, &mut self.chunk) {
                Ok(0) => break,
                Ok(n) => {
                    if self.client.write_all(&self.chunk[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A server that closes without close_notify has still said everything.
                Err(_) => break,
            }
        }
    }
}
