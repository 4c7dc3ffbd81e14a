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
#[allow(deprecated)]
fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Interceptor {
    /// A fresh CA for `secrets`' hosts. Upstream servers are verified against the system's
    /// roots plus `extra_roots` (PEM; a test CA, or a corporate one: `AIRLOCK_UPSTREAM_CA`).
    pub fn new(secrets: Secrets, extra_roots: Option<&[u8]>) -> Result<Self, InterceptError> {
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
        })
    }

    /// The CA certificate (PEM) the sandbox must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn secrets(&self) -> &Secrets {
        &self.secrets
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
        let cfg = Arc::new(cfg);
        leaves.insert(host.to_string(), cfg.clone());
        Ok(cfg)
    }
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

type Tls<C> = rustls::StreamOwned<C, TcpStream>;

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
    let mut conn = conn;
    let _ = conn.set_read_timeout(Some(ctx.inspect_timeout));
    let _ = conn.set_write_timeout(Some(ctx.inspect_timeout));
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
    exchange(&mut client, name, &at, ctx, icpt, upstream);
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
fn answer(client: &mut Tls<rustls::ServerConnection>, status: &str, text: &str) {
    let _ = client.write_all(&http::response(status, text));
    let _ = client.flush();
}

/// One request: read its head, check and rewrite it, send it upstream, relay the answer.
fn exchange(
    client: &mut Tls<rustls::ServerConnection>,
    name: &str,
    at: &Where,
    ctx: &Ctx,
    icpt: &Interceptor,
    upstream: Option<(TcpStream, IpAddr)>,
) {
    let secrets = icpt.secrets();
    let deadline = Instant::now() + ctx.inspect_timeout;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let req = loop {
        let parsed = if buf.is_empty() {
            Err(HttpError::NeedMore)
        } else {
            http::parse(&buf)
        };
        match parsed {
            Ok(r) => break r,
            Err(HttpError::NeedMore) if Instant::now() < deadline => {}
            Err(HttpError::NeedMore) => {
                let reason = format!(
                    "no complete HTTP request inside the intercepted TLS within {} s",
                    ctx.inspect_timeout.as_secs()
                );
                at.record(ctx, Verdict::Deny, &reason, None, &[]);
                return;
            }
            Err(e) => {
                let reason = format!("inside the intercepted TLS to {name}: {e}");
                at.record(ctx, Verdict::Deny, &reason, None, &[]);
                return answer(
                    client,
                    "400 Bad Request",
                    &format!(
                        "airlock: blocked {name}: {e} (secrets are injected into HTTP/1 requests only)\n"
                    ),
                );
            }
        }
        match client.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    };
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
        return answer(
            client,
            "421 Misdirected Request",
            &format!("airlock: blocked {name}: {reason}\n"),
        );
    }
    let refuse_leak = |client: &mut Tls<rustls::ServerConnection>, l: Leak| {
        let reason = l.reason(name);
        at.record(ctx, Verdict::Deny, &reason, None, &[]);
        answer(
            client,
            "403 Forbidden",
            &format!("airlock: blocked {name}: {reason}\n"),
        );
    };
    let (mut req, injected) = match secrets.rewrite(&req, name) {
        Ok(r) => r,
        Err(l) => return refuse_leak(client, l),
    };
    // `Expect: 100-continue` is answered here: the body is read before the answer is.
    let expect = req
        .headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("expect") && v.eq_ignore_ascii_case(b"100-continue"));
    req.headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("expect"));
    let mut scan = BodyScan::new(secrets, Some(name));
    let mut framer = BodyFramer::new(req.body);
    let rest = buf[req.head_len..].to_vec();
    let Ok(take) = framer.feed(&rest) else { return };
    if let Err(l) = scan.feed(&rest[..take]) {
        return refuse_leak(client, l);
    }
    // Upstream: resolve and connect here (or the tunnel's), then TLS with real verification.
    let (up, ip) = match upstream {
        Some(u) => u,
        None => match crate::proxy::connect_upstream(ctx, name, at.port) {
            Ok(u) => u,
            Err(reason) => {
                // Allowed, but the network failed (as for connections not intercepted).
                at.record(ctx, Verdict::Allow, &reason, None, &[]);
                return answer(client, "502 Bad Gateway", &format!("airlock: {reason}\n"));
            }
        },
    };
    let Ok(server_name) = ServerName::try_from(name.to_string()) else {
        return;
    };
    let Ok(tls) = rustls::ClientConnection::new(icpt.upstream.clone(), server_name) else {
        return;
    };
    let mut up = up;
    let _ = up.set_read_timeout(Some(ctx.connect_timeout));
    let _ = up.set_write_timeout(Some(ctx.connect_timeout));
    let mut tls = tls;
    if let Err(e) = handshake(&mut tls, &mut up) {
        let reason =
            format!("TLS to {name} failed, the real server's certificate was not verified: {e}");
        at.record(ctx, Verdict::Deny, &reason, Some(ip), &[]);
        return answer(client, "502 Bad Gateway", &format!("airlock: {reason}\n"));
    }
    let mut server = rustls::StreamOwned::new(tls, up);
    at.record(ctx, Verdict::Allow, "", Some(ip), &injected);
    let mut out = req.forward_head();
    out.extend_from_slice(&rest[..take]);
    if server.write_all(&out).is_err() {
        return;
    }
    if expect && !framer.done() && client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
        return;
    }
    // The rest of the body, scanned as it passes.
    let _ = client.sock.set_read_timeout(Some(UPSTREAM_IDLE));
    while !framer.done() {
        let n = match client.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Ok(take) = framer.feed(&chunk[..n]) else {
            return;
        };
        if let Err(l) = scan.feed(&chunk[..take]) {
            // The upstream never sees the end of this request.
            let _ = server.sock.shutdown(std::net::Shutdown::Both);
            return refuse_leak(client, l);
        }
        if server.write_all(&chunk[..take]).is_err() {
            return;
        }
    }
    let _ = server.flush();
    // The answer, until the server closes (the request said `Connection: close`).
    let _ = server.sock.set_read_timeout(Some(UPSTREAM_IDLE));
    loop {
        let n = match server.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A server that closes without close_notify has still said everything.
            Err(_) => break,
        };
        if client.write_all(&chunk[..n]).is_err() || client.flush().is_err() {
            return;
        }
    }
}
