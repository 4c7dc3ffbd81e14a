//! TLS interception for the hosts a secret is bound to (and only those): the host side ends
//! the sandbox's TLS with a certificate from a per-sandbox CA, checks that the request's Host
//! is the name the TLS handshake asked for, puts the secret in (see [`crate::inject`]), and
//! sends the request on over a new TLS connection that verifies the real server normally.
//!
//! The CA is made when the sandbox starts; its key exists only in this process's memory, and
//! its certificate is name-constrained to the bound hosts, so even a stolen leaf or a
//! confused client cannot make it vouch for any other name. rustls with the ring provider.

use crate::inject::Secrets;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    pub(crate) upstream: Arc<rustls::ClientConfig>,
    pub(crate) pool: Pool,
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
pub(crate) fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| {
        let name = format!("{:?}", s.suite());
        !name.contains("AES_128_GCM")
    });
    Arc::new(p)
}

/// The system's roots, loaded once per process (parsing the bundle is the larger part of an
/// interceptor's making): a warm-pool member's supervisor loads them while it waits for its
/// claim, so that a claim with injected secrets does not.
pub fn native_roots() -> &'static rustls::RootCertStore {
    static ROOTS: std::sync::OnceLock<rustls::RootCertStore> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let _ = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        roots
    })
}

impl Interceptor {
    /// A fresh CA for `secrets`' hosts. Upstream servers are verified against the system's
    /// roots plus `extra_roots` (PEM; a test CA, or a corporate one: `AIRLOCK_UPSTREAM_CA`).
    pub fn new(secrets: Secrets, extra_roots: Option<&[u8]>) -> Result<Self, InterceptError> {
        let mut roots = native_roots().clone();
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
    pub(crate) fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, String> {
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

/// A socket with a read buffer: rustls reads TLS records 4 KiB at a time, a system call each
/// without one (a quarter of the intercepted bulk throughput went there).
pub(crate) struct BufSock {
    pub(crate) sock: TcpStream,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// The last read filled the buffer: more is queued, the next read will not wait.
    full: bool,
    /// Reads from the socket, and how many of them asked for quick ACKs.
    #[cfg(test)]
    refills: usize,
    #[cfg(test)]
    quick_acks: usize,
    /// The size of each write to the socket.
    #[cfg(test)]
    pub(crate) writes: Vec<usize>,
    /// The bytes of each write.
    #[cfg(test)]
    pub(crate) sent: Vec<Vec<u8>>,
}

impl BufSock {
    pub(crate) fn new(sock: TcpStream, cap: usize) -> Self {
        Self {
            sock,
            buf: vec![0u8; cap].into_boxed_slice(),
            pos: 0,
            end: 0,
            full: false,
            #[cfg(test)]
            refills: 0,
            #[cfg(test)]
            quick_acks: 0,
            #[cfg(test)]
            writes: Vec::new(),
            #[cfg(test)]
            sent: Vec::new(),
        }
    }

    /// Bytes read from the socket and not yet handed to rustls.
    pub(crate) fn buffered(&self) -> usize {
        self.end - self.pos
    }
}

impl Read for BufSock {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.end {
            // Acknowledge at once what arrives: a kept-alive connection is in the kernel's
            // "ping-pong" mode, which delays ACKs (40 ms) to ride on the next data we send, and a
            // peer with Nagle on (most servers' default) holds the rest of its answer until
            // then. A new connection starts in quick-ACK mode; this keeps every read that may
            // wait there. Not while a bulk transfer keeps the buffer full: nothing waits on an
            // ACK then (the kernel acknowledges every second segment anyway), and quick ACKs
            // would only double the ACKs the sender has to process.
            if !self.full {
                let _ = rustix::net::sockopt::set_tcp_quickack(&self.sock, true);
                #[cfg(test)]
                {
                    self.quick_acks += 1;
                }
            }
            #[cfg(test)]
            {
                self.refills += 1;
            }
            let n = self.sock.read(&mut self.buf)?;
            self.pos = 0;
            self.end = n;
            self.full = n == self.buf.len();
        }
        let n = out.len().min(self.end - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for BufSock {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.sock.write(b)?;
        #[cfg(test)]
        {
            self.writes.push(n);
            self.sent.push(b[..n].to_vec());
        }
        Ok(n)
    }
    fn write_vectored(&mut self, b: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let n = self.sock.write_vectored(b)?;
        #[cfg(test)]
        {
            self.writes.push(n);
            let all: Vec<u8> = b.iter().flat_map(|s| s.iter().copied()).collect();
            self.sent.push(all[..n].to_vec());
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// How long an idle upstream connection is kept for reuse, and how many per host.
const POOL_IDLE: Duration = Duration::from_secs(30);
const POOL_PER_HOST: usize = 4;

pub(crate) type Down = rustls::StreamOwned<rustls::ServerConnection, BufSock>;
pub(crate) use crate::upstream::Up;
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
    pub(crate) fn take(&self, host: &str, port: u16) -> Option<(Up, IpAddr)> {
        loop {
            let (mut up, ip, since) = {
                let mut idle = self.idle.lock().ok()?;
                let v = idle.get_mut(&(host.to_string(), port))?;
                v.pop()?
            };
            if since.elapsed() < POOL_IDLE && up.still_open() {
                return Some((up, ip));
            }
        }
    }

    pub(crate) fn put(&self, host: &str, port: u16, up: Up, ip: IpAddr) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    /// Read all of `from` through a `BufSock` the way rustls does (4 KiB at a time).
    fn drain(sock: TcpStream) -> (usize, BufSock) {
        let mut bs = BufSock::new(sock, 64 * 1024);
        let mut out = [0u8; 4096];
        let mut total = 0;
        loop {
            match bs.read(&mut out).unwrap() {
                0 => return (total, bs),
                n => total += n,
            }
        }
    }

    /// A bulk transfer keeps the buffer full: quick ACKs (a system call each, and an ACK per
    /// read the sender has to process) are asked for only when a read may wait.
    #[test]
    fn bulk_reads_do_not_ask_for_quick_acks() {
        let (mut w, r) = pair();
        const SIZE: usize = 8 << 20;
        let writer = thread::spawn(move || {
            w.write_all(&vec![7u8; SIZE]).unwrap();
        });
        // Let the sender fill the socket buffers first: the reads then find a full queue.
        thread::sleep(Duration::from_millis(200));
        let (total, bs) = drain(r);
        writer.join().unwrap();
        assert_eq!(total, SIZE);
        assert!(bs.refills >= SIZE / (64 * 1024), "{}", bs.refills);
        assert!(
            bs.quick_acks * 2 <= bs.refills,
            "{} quick ACKs for {} reads",
            bs.quick_acks,
            bs.refills
        );
    }

    /// Small pieces with pauses between them (a request head, a streamed answer): every read
    /// that may wait still asks for a quick ACK (a peer with Nagle on waits for it).
    #[test]
    fn trickling_reads_keep_quick_acks() {
        let (mut w, r) = pair();
        let writer = thread::spawn(move || {
            for _ in 0..20 {
                w.write_all(&[1u8; 100]).unwrap();
                thread::sleep(Duration::from_millis(5));
            }
        });
        let (total, bs) = drain(r);
        writer.join().unwrap();
        assert_eq!(total, 2000);
        assert_eq!(bs.quick_acks, bs.refills);
    }
}
