//! Secret injection over real TLS on loopback: a fake API server with its own test CA, the
//! proxy ending the sandbox's TLS with the per-sandbox CA, and rustls clients standing in for
//! the program inside.
#![allow(clippy::unwrap_used, deprecated)]

mod common;

use airlock_egress::inject::{At, Binding, Secrets};
use airlock_egress::intercept::Interceptor;
use airlock_egress::{Ctx, EgressPolicy, Journal, StaticResolver};
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const KEY: &str = "sk-ant-REAL-0123456789abcdef";
/// The bulk body of `GET /big` (measurement only).
const BIG: usize = 128 << 20;

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test CA for the fake upstream servers, and its PEM (what `AIRLOCK_UPSTREAM_CA` names).
struct UpstreamCa {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

impl UpstreamCa {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        Self { key, cert }
    }

    /// An HTTPS server for `names` on loopback: reads one request (head + Content-Length body),
    /// sends it on the channel, answers 200 `hello from NAME`.
    fn server(&self, names: &[&str]) -> (u16, Receiver<Vec<u8>>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let leaf = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let cfg = Arc::new(cfg);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = channel();
        thread::spawn(move || {
            for c in l.incoming().flatten() {
                let cfg = cfg.clone();
                let tx = tx.clone();
                thread::spawn(move || {
                    c.set_read_timeout(Some(T)).unwrap();
                    let conn = rustls::ServerConnection::new(cfg).unwrap();
                    let mut s = rustls::StreamOwned::new(conn, c);
                    let mut got = Vec::new();
                    let mut b = [0u8; 4096];
                    loop {
                        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .map(|v| v.trim().parse().unwrap())
                                .unwrap_or(0);
                            if got.len() >= end + 4 + len {
                                break;
                            }
                        }
                        match s.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&b[..n]),
                        }
                    }
                    let sni = s.conn.server_name().unwrap_or("").to_string();
                    if got.starts_with(b"GET /big ") {
                        // Bulk: BIG bytes of zeros (throughput measurement).
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\nConnection: close\r\n\r\n"
                        );
                        let chunk = vec![0u8; 1 << 16];
                        for _ in 0..BIG / chunk.len() {
                            if s.write_all(&chunk).is_err() {
                                return;
                            }
                        }
                        s.conn.send_close_notify();
                        let _ = s.flush();
                        return;
                    }
                    let _ = tx.send(got);
                    let body = format!("hello from {sni}");
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    s.conn.send_close_notify();
                    let _ = s.flush();
                });
            }
        });
        (port, rx)
    }

    /// An HTTPS server that keeps connections open (HTTP/1.1 keep-alive): answers each
    /// request `200 hello N` with a length, sends every request on the channel, and counts
    /// the TCP connections it accepted. `hang_up`: closes each connection after one answer
    /// without saying so (as a server whose idle timeout ran out does).
    fn keepalive_server(
        &self,
        names: &[&str],
        hang_up: bool,
    ) -> (u16, Receiver<Vec<u8>>, Arc<AtomicUsize>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let leaf = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let cfg = Arc::new(
            rustls::ServerConfig::builder_with_provider(ring())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![leaf.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .unwrap(),
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = channel();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        thread::spawn(move || {
            for c in l.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                let (cfg, tx) = (cfg.clone(), tx.clone());
                thread::spawn(move || {
                    c.set_read_timeout(Some(T)).unwrap();
                    let conn = rustls::ServerConnection::new(cfg).unwrap();
                    let mut s = rustls::StreamOwned::new(conn, c);
                    let mut got = Vec::new();
                    let mut n = 0;
                    let mut b = [0u8; 4096];
                    loop {
                        while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .map(|v| v.trim().parse().unwrap())
                                .unwrap_or(0);
                            if got.len() < end + 4 + len {
                                break;
                            }
                            let req: Vec<u8> = got.drain(..end + 4 + len).collect();
                            let close = head.contains("connection: close");
                            let _ = tx.send(req);
                            n += 1;
                            let body = format!("hello {n}");
                            let _ = write!(
                                s,
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = s.flush();
                            if close || hang_up {
                                s.conn.send_close_notify();
                                let _ = s.flush();
                                return;
                            }
                        }
                        match s.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(k) => got.extend_from_slice(&b[..k]),
                        }
                    }
                });
            }
        });
        (port, rx, accepted)
    }

    /// An HTTPS server that answers one request with a chunked answer in two parts: the
    /// second only once `go` says so (a streamed answer: events as they happen).
    fn streaming_server(&self, names: &[&str], go: Receiver<()>) -> u16 {
        let key = rcgen::KeyPair::generate().unwrap();
        let p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let leaf = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let cfg = Arc::new(
            rustls::ServerConfig::builder_with_provider(ring())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![leaf.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .unwrap(),
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            c.set_read_timeout(Some(T)).unwrap();
            let conn = rustls::ServerConnection::new(cfg).unwrap();
            let mut s = rustls::StreamOwned::new(conn, c);
            let mut got = Vec::new();
            let mut b = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&b[..n]),
                }
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nevent1\r\n");
            let _ = s.flush();
            if go.recv_timeout(T).is_ok() {
                let _ = s.write_all(b"6\r\nevent2\r\n0\r\n\r\n");
                let _ = s.flush();
            }
            thread::sleep(Duration::from_millis(200));
        });
        port
    }

    /// A server that answers the first request with `answer` (TLS records as written: `answer`
    /// in pieces of `piece` bytes) and then ends the connection, with a close_notify or not.
    fn cut_server(&self, names: &[&str], answer: Vec<u8>, piece: usize, close_notify: bool) -> u16 {
        let key = rcgen::KeyPair::generate().unwrap();
        let p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let leaf = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let cfg = Arc::new(
            rustls::ServerConfig::builder_with_provider(ring())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![leaf.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .unwrap(),
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            c.set_read_timeout(Some(T)).unwrap();
            let conn = rustls::ServerConnection::new(cfg).unwrap();
            let mut s = rustls::StreamOwned::new(conn, c);
            let mut got = Vec::new();
            let mut b = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&b[..n]),
                }
            }
            for p in answer.chunks(piece) {
                let _ = s.write_all(p);
            }
            let _ = s.flush();
            if close_notify {
                s.conn.send_close_notify();
                let _ = s.flush();
            }
            let _ = s.sock.shutdown(std::net::Shutdown::Both);
        });
        port
    }

    fn pem(&self) -> Vec<u8> {
        self.cert.pem().into_bytes()
    }
}

struct Setup {
    ctx: Arc<Ctx>,
    journal: airlock_egress::journal::SharedBuf,
    icpt: Arc<Interceptor>,
    placeholder: String,
    other_placeholder: String,
}

/// `api.test` is bound to ANTHROPIC_API_KEY (x-api-key), `gh.test` to GH_TOKEN (bearer);
/// `plain.test` is allowed and not bound.
fn setup(ca: Option<&UpstreamCa>, ports: &[u16]) -> Setup {
    let secrets = Secrets::new(vec![
        Binding::new(
            "ANTHROPIC_API_KEY",
            KEY.into(),
            &["api.test".into()],
            At::Header("x-api-key".into()),
        )
        .unwrap(),
        Binding::new(
            "GH_TOKEN",
            "ghp_REAL".into(),
            &["gh.test".into()],
            At::Bearer,
        )
        .unwrap(),
    ]);
    let placeholder = secrets.bindings()[0].placeholder.clone();
    let other_placeholder = secrets.bindings()[1].placeholder.clone();
    let pem = ca.map(UpstreamCa::pem);
    let icpt = Arc::new(Interceptor::new(secrets, pem.as_deref()).unwrap());
    let names = ["api.test", "gh.test", "plain.test"];
    let resolver = StaticResolver::new(names.iter().map(|n| (*n, vec![loopback()])));
    let journal = airlock_egress::journal::SharedBuf::default();
    let mut ctx = Ctx::new(
        EgressPolicy::new(&names, ports).unwrap(),
        Arc::new(resolver),
        Journal::new(journal.clone()),
    );
    ctx.connect_timeout = Duration::from_secs(3);
    ctx.inspect_timeout = Duration::from_secs(3);
    ctx.forbidden = loopback_floor;
    ctx.set_intercept(icpt.clone()).expect("one interceptor");
    Setup {
        ctx: Arc::new(ctx),
        journal,
        icpt,
        placeholder,
        other_placeholder,
    }
}

/// A client in the sandbox: trusts the sandbox's CA (as the bundle airlock mounts makes it).
fn client_config(trust: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(trust) {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// TLS to `sni` over `sock`, send `request`, read the whole answer.
fn tls_exchange(
    sock: TcpStream,
    cfg: Arc<rustls::ClientConfig>,
    sni: &str,
    request: &str,
) -> Result<String, std::io::Error> {
    let conn =
        rustls::ClientConnection::new(cfg, ServerName::try_from(sni.to_string()).unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    s.write_all(request.as_bytes())?;
    s.flush()?;
    let mut out = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&b[..n]),
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A TLS connection from the sandbox that sends requests one after another on it.
struct KeptAlive(rustls::StreamOwned<rustls::ClientConnection, TcpStream>);

impl KeptAlive {
    fn open(at: SocketAddr, cfg: Arc<rustls::ClientConfig>, sni: &str) -> Self {
        let conn =
            rustls::ClientConnection::new(cfg, ServerName::try_from(sni.to_string()).unwrap())
                .unwrap();
        Self(rustls::StreamOwned::new(conn, dial(at)))
    }

    /// Send `request`, read one answer (its head and `Content-Length` body).
    fn ask(&mut self, request: &str) -> String {
        self.0.write_all(request.as_bytes()).unwrap();
        self.0.flush().unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    return String::from_utf8(got).unwrap();
                }
            }
            match self.0.read(&mut b) {
                Ok(0) | Err(_) => return String::from_utf8_lossy(&got).into_owned(),
                Ok(n) => got.extend_from_slice(&b[..n]),
            }
        }
    }
}

/// The certificate chain the proxy showed for `sni`.
fn leaf_of(at: SocketAddr, cfg: Arc<rustls::ClientConfig>, sni: &str) -> Vec<u8> {
    let conn =
        rustls::ClientConnection::new(cfg, ServerName::try_from(sni.to_string()).unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, dial(at));
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).unwrap();
    }
    s.conn.peer_certificates().unwrap()[0].to_vec()
}

fn transparent_to(ctx: &Arc<Ctx>, port: u16) -> SocketAddr {
    transparent(ctx, SocketAddr::from(([198, 51, 100, 7], port)))
}

#[test]
fn the_bound_host_gets_the_real_key_and_the_sandbox_only_the_placeholder() {
    let ca = UpstreamCa::new();
    let (port, got) = ca.server(&["api.test"]);
    let s = setup(Some(&ca), &[port]);
    let at = transparent_to(&s.ctx, port);
    let body = r#"{"model":"m"}"#;
    let answer = tls_exchange(
        dial(at),
        client_config(s.icpt.ca_pem().as_bytes()),
        "api.test",
        &format!(
            "POST /v1/messages HTTP/1.1\r\nHost: api.test\r\nx-api-key: {}\r\nContent-Length: {}\r\n\r\n{body}",
            s.placeholder,
            body.len()
        ),
    )
    .unwrap();
    assert!(answer.ends_with("hello from api.test"), "{answer}");
    let req = String::from_utf8(got.recv_timeout(T).unwrap()).unwrap();
    assert!(req.contains(&format!("x-api-key: {KEY}\r\n")), "{req}");
    assert!(!req.contains(&s.placeholder), "{req}");
    assert!(req.ends_with(body), "{req}");
    let j = journal(&s.journal, 1);
    let line = j.last().unwrap();
    assert_eq!(line["decision"], "allow", "{j:?}");
    assert_eq!(line["intercepted"], true);
    assert_eq!(
        line["injected"],
        serde_json::json!([{"secret": "ANTHROPIC_API_KEY", "at": "header x-api-key"}])
    );
    // The journal never holds the value.
    assert!(!s.journal.lines().concat().contains(KEY));
}

#[test]
fn the_placeholder_to_another_bound_host_is_blocked() {
    let ca = UpstreamCa::new();
    let (port, got) = ca.server(&["gh.test"]);
    let s = setup(Some(&ca), &[port]);
    let at = transparent_to(&s.ctx, port);
    let answer = tls_exchange(
        dial(at),
        client_config(s.icpt.ca_pem().as_bytes()),
        "gh.test",
        &format!(
            "GET /?k={} HTTP/1.1\r\nHost: gh.test\r\nAuthorization: Bearer {}\r\n\r\n",
            s.placeholder, s.other_placeholder
        ),
    )
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden"), "{answer}");
    assert!(answer.contains("secret ANTHROPIC_API_KEY"), "{answer}");
    assert!(got.recv_timeout(Duration::from_millis(300)).is_err());
    let j = journal(&s.journal, 1);
    assert_eq!(j[0]["decision"], "deny");
    assert!(j[0]["reason"]
        .as_str()
        .unwrap()
        .contains("only put into requests to api.test"));
}

#[test]
fn a_placeholder_in_a_body_to_another_bound_host_never_completes_the_request() {
    let ca = UpstreamCa::new();
    let (port, got) = ca.server(&["gh.test"]);
    let s = setup(Some(&ca), &[port]);
    let at = transparent_to(&s.ctx, port);
    let body = format!("{}{}", "x".repeat(40_000), s.placeholder);
    let answer = tls_exchange(
        dial(at),
        client_config(s.icpt.ca_pem().as_bytes()),
        "gh.test",
        &format!(
            "POST /gists HTTP/1.1\r\nHost: gh.test\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden"), "{answer}");
    // The server saw at most a truncated request: it never answered one.
    assert!(got.recv_timeout(Duration::from_millis(500)).is_err());
}

/// TLS to `sni` over `sock`, send `parts` one after another (each its own TLS write, with a
/// pause between them: the proxy reads them separately), read the whole answer.
fn tls_parts(sock: TcpStream, cfg: Arc<rustls::ClientConfig>, sni: &str, parts: &[&str]) -> String {
    let conn =
        rustls::ClientConnection::new(cfg, ServerName::try_from(sni.to_string()).unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            thread::sleep(Duration::from_millis(200));
        }
        if s.write_all(p.as_bytes()).and_then(|_| s.flush()).is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let mut b = [0u8; 4096];
    while let Ok(n) = s.read(&mut b) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `ph` split in two halves, each its own chunk of a chunked body: what the server puts
/// together holds the placeholder, the bytes on the wire never hold it in one piece.
fn chunks_splitting(ph: &str) -> (String, String) {
    let (a, b) = ph.split_at(ph.len() / 2);
    (
        format!("{:x}\r\n{{\"k\": \"{a}\r\n", a.len() + 7),
        format!("{:x}\r\n{b}\"}}\r\n0\r\n\r\n", b.len() + 2),
    )
}

/// Attack: the placeholder of a secret bound elsewhere, split across two chunks of a chunked
/// body (sent in one piece: the whole request is checked before anything goes upstream).
#[test]
fn a_placeholder_split_across_two_chunks_is_blocked() {
    let ca = UpstreamCa::new();
    let (port, got) = ca.server(&["gh.test"]);
    let s = setup(Some(&ca), &[port]);
    let at = transparent_to(&s.ctx, port);
    let (one, two) = chunks_splitting(&s.placeholder);
    let head = "POST /gists HTTP/1.1\r\nHost: gh.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let answer = tls_parts(
        dial(at),
        client_config(s.icpt.ca_pem().as_bytes()),
        "gh.test",
        &[&format!("{head}{one}{two}")],
    );
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden"), "{answer}");
    assert!(answer.contains("secret ANTHROPIC_API_KEY"), "{answer}");
    assert!(got.recv_timeout(Duration::from_millis(300)).is_err());
    let j = journal(&s.journal, 1);
    assert_eq!(j[0]["decision"], "deny", "{j:?}");
    assert!(
        j[0]["reason"].as_str().unwrap().contains("(in the body)"),
        "{j:?}"
    );
}

/// The same split while the body streams: the chunks arrive in two reads, the first one has
/// gone upstream already; the second is stopped and the request never completes.
#[test]
fn a_placeholder_split_across_two_streamed_chunks_is_blocked() {
    let ca = UpstreamCa::new();
    let (port, _got) = ca.server(&["gh.test"]);
    let s = setup(Some(&ca), &[port]);
    let at = transparent_to(&s.ctx, port);
    let (one, two) = chunks_splitting(&s.placeholder);
    let head = "POST /gists HTTP/1.1\r\nHost: gh.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let answer = tls_parts(
        dial(at),
        client_config(s.icpt.ca_pem().as_bytes()),
        "gh.test",
        &[&format!("{head}{one}"), &two],
    );
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden"), "{answer}");
    assert!(answer.contains("secret ANTHROPIC_API_KEY"), "{answer}");
    let j = journal(&s.journal, 2);
    assert!(
        j.iter()
            .any(|l| l["decision"] == "deny"
                && l["reason"].as_str().unwrap().contains("(in the body)")),
        "{j:?}"
    );
}

/// A `Content-Length` body whose placeholder arrives in two reads.
#[test]
fn a_placeholder_split_across_two_reads_of_a_body_is_blocked() {
    let ca = UpstreamCa::new();
    let (port, _got) = ca.server(&["gh.test"]);
    let s = setup(Some(&ca), &[port]);
    let at = transparent_to(&s.ctx, port);
    let body = format!("{{\"k\": \"{}\"}}", s.placeholder);
    let (a, b) = body.split_at(body.len() / 2);
    let head = format!(
        "POST /gists HTTP/1.1\r\nHost: gh.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let answer = tls_parts(
        dial(at),
        client_config(s.icpt.ca_pem().as_bytes()),
        "gh.test",
        &[&format!("{head}{a}"), b],
    );
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden"), "{answer}");
    assert!(answer.contains("secret ANTHROPIC_API_KEY"), "{answer}");
}

/// Plain HTTP: a placeholder split across two chunks is refused like one in one piece.
#[test]
fn a_placeholder_split_across_chunks_of_a_plain_body_is_blocked() {
    let (port, got) = http_server();
    let s = setup(None, &[port]);
    let at = transparent_to(&s.ctx, port);
    let mut c = dial(at);
    let (one, two) = chunks_splitting(&s.other_placeholder);
    write!(
        c,
        "POST /x HTTP/1.1\r\nHost: plain.test\r\nTransfer-Encoding: chunked\r\n\r\n{one}{two}"
    )
    .unwrap();
    let answer = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden"), "{answer}");
    assert!(answer.contains("GH_TOKEN"), "{answer}");
    assert!(got.recv_timeout(Duration::from_millis(300)).is_err());
}

#[test]
fn the_placeholder_in_plain_http_is_blocked() {
    let (port, got) = http_server();
    let s = setup(None, &[port]);
    let at = transparent_to(&s.ctx, port);
    let mut c = dial(at);
    write!(
        c,
        "GET /x HTTP/1.1\r\nHost: plain.test\r\nCookie: k={}\r\n\r\n",
        s.placeholder
    )
    .unwrap();
    let answer = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden"), "{answer}");
    assert!(answer.contains("ANTHROPIC_API_KEY"), "{answer}");
    assert!(got.recv_timeout(Duration::from_millis(300)).is_err());
    let j = journal(&s.journal, 1);
    assert_eq!(j[0]["decision"], "deny");
}

#[test]
fn host_and_sni_must_agree() {
    let ca = UpstreamCa::new();
    let (port, got) = ca.server(&["api.test", "gh.test"]);
    let s = setup(Some(&ca), &[port]);
    let at = transparent_to(&s.ctx, port);
    let answer = tls_exchange(
        dial(at),
        client_config(s.icpt.ca_pem().as_bytes()),
        "api.test",
        &format!(
            "GET / HTTP/1.1\r\nHost: gh.test\r\nx-api-key: {}\r\n\r\n",
            s.placeholder
        ),
    )
    .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 421 Misdirected Request"),
        "{answer}"
    );
    assert!(got.recv_timeout(Duration::from_millis(300)).is_err());
    let j = journal(&s.journal, 1);
    assert!(j[0]["reason"].as_str().unwrap().contains("domain fronting"));
}

#[test]
fn a_client_that_rejects_the_interception_fails_closed_and_it_is_explained() {
    let ca = UpstreamCa::new();
    let (port, got) = ca.server(&["api.test"]);
    let s = setup(Some(&ca), &[port]);
    let at = transparent_to(&s.ctx, port);
    // Trusts only the real server's CA (a pinning client, or one without the bundle).
    let r = tls_exchange(
        dial(at),
        client_config(&ca.pem()),
        "api.test",
        "GET / HTTP/1.1\r\nHost: api.test\r\n\r\n",
    );
    let e = r.unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    assert!(got.recv_timeout(Duration::from_millis(300)).is_err());
    let j = journal(&s.journal, 1);
    assert_eq!(j[0]["decision"], "deny");
    assert!(
        j[0]["reason"]
            .as_str()
            .unwrap()
            .contains("did not accept airlock's interception certificate"),
        "{j:?}"
    );
}

#[test]
fn an_upstream_that_cannot_be_verified_is_not_sent_the_key() {
    let ca = UpstreamCa::new();
    let (port, got) = ca.server(&["api.test"]);
    // The proxy does not trust the test CA: the "real" server is not verified.
    let s = setup(None, &[port]);
    let at = transparent_to(&s.ctx, port);
    let answer = tls_exchange(
        dial(at),
        client_config(s.icpt.ca_pem().as_bytes()),
        "api.test",
        &format!(
            "GET / HTTP/1.1\r\nHost: api.test\r\nx-api-key: {}\r\n\r\n",
            s.placeholder
        ),
    )
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 502 Bad Gateway"), "{answer}");
    assert!(answer.contains("certificate"), "{answer}");
    assert!(got.recv_timeout(Duration::from_millis(300)).is_err());
}

#[test]
fn the_ca_cannot_vouch_for_other_names() {
    // Name constraints: a leaf for another name, signed by the sandbox's CA, is not valid.
    let s = setup(None, &[443]);
    let pem = s.icpt.ca_pem();
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    assert!(
        x509_has_name_constraints(der.as_ref()),
        "the CA certificate carries a name constraints extension"
    );
    // ... permitting exactly the bound names.
    let has = |n: &str| der.as_ref().windows(n.len()).any(|w| w == n.as_bytes());
    assert!(has("api.test") && has("gh.test") && !has("plain.test"));
}

/// The OID of nameConstraints (2.5.29.30) in DER: 06 03 55 1D 1E.
fn x509_has_name_constraints(der: &[u8]) -> bool {
    der.windows(5).any(|w| w == [0x06, 0x03, 0x55, 0x1d, 0x1e])
}

#[test]
fn connect_tunnels_to_a_bound_host_are_intercepted_too() {
    let ca = UpstreamCa::new();
    let (port, got) = ca.server(&["api.test"]);
    let s = setup(Some(&ca), &[port]);
    let proxy = explicit(&s.ctx);
    let mut c = dial(proxy);
    write!(
        c,
        "CONNECT api.test:{port} HTTP/1.1\r\nHost: api.test:{port}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"));
    let answer = tls_exchange(
        c,
        client_config(s.icpt.ca_pem().as_bytes()),
        "api.test",
        &format!(
            "GET /v1/models HTTP/1.1\r\nHost: api.test:{port}\r\nx-api-key: {}\r\n\r\n",
            s.placeholder
        ),
    )
    .unwrap();
    assert!(answer.ends_with("hello from api.test"), "{answer}");
    let req = String::from_utf8(got.recv_timeout(T).unwrap()).unwrap();
    assert!(req.contains(&format!("x-api-key: {KEY}\r\n")), "{req}");
}

#[test]
fn a_placeholder_in_a_plain_body_sent_after_the_head_is_blocked() {
    let (port, got) = http_server();
    let s = setup(None, &[port]);
    let at = transparent_to(&s.ctx, port);
    let mut c = dial(at);
    let body = format!("k={}", s.placeholder);
    write!(
        c,
        "POST /x HTTP/1.1\r\nHost: plain.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    c.flush().unwrap();
    thread::sleep(Duration::from_millis(200));
    c.write_all(body.as_bytes()).unwrap();
    let answer = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden"), "{answer}");
    assert!(got.recv_timeout(Duration::from_millis(300)).is_err());
    // Without a placeholder the same request goes through.
    let mut c = dial(at);
    write!(
        c,
        "POST /x HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 3\r\n\r\n"
    )
    .unwrap();
    thread::sleep(Duration::from_millis(100));
    c.write_all(b"k=v").unwrap();
    let answer = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(String::from_utf8(got.recv_timeout(T).unwrap())
        .unwrap()
        .ends_with("k=v"));
}

#[test]
fn a_kept_alive_connection_gets_the_key_on_every_request_and_the_upstream_is_reused() {
    let ca = UpstreamCa::new();
    let (port, got, accepted) = ca.keepalive_server(&["api.test"], false);
    let s = setup(Some(&ca), &[port]);
    let at = transparent_to(&s.ctx, port);
    let cfg = client_config(s.icpt.ca_pem().as_bytes());
    let req = format!(
        "GET /v1/models HTTP/1.1\r\nHost: api.test\r\nx-api-key: {}\r\n\r\n",
        s.placeholder
    );
    let mut c = KeptAlive::open(at, cfg.clone(), "api.test");
    for i in 1..=3 {
        let answer = c.ask(&req);
        assert!(
            answer.ends_with(&format!("hello {i}")),
            "request {i}: {answer}"
        );
        let up = String::from_utf8(got.recv_timeout(T).unwrap()).unwrap();
        assert!(
            up.contains(&format!("x-api-key: {KEY}\r\n")),
            "request {i}: {up}"
        );
        assert!(!up.contains(&s.placeholder), "{up}");
        assert!(!up.to_lowercase().contains("connection: close"), "{up}");
    }
    drop(c);
    // A new connection from the sandbox: the idle upstream connection is used again (no new
    // TCP connection, no new handshake) and its request gets the key too.
    let mut c = KeptAlive::open(at, cfg, "api.test");
    assert!(c.ask(&req).ends_with("hello 4"));
    let up = String::from_utf8(got.recv_timeout(T).unwrap()).unwrap();
    assert!(up.contains(&format!("x-api-key: {KEY}\r\n")), "{up}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // Every request was judged and journaled on its own.
    let j = journal(&s.journal, 4);
    assert!(
        j.iter()
            .all(|l| l["decision"] == "allow" && l["injected"][0]["secret"] == "ANTHROPIC_API_KEY"),
        "{j:?}"
    );
    // The second request on a kept connection is checked like the first: another Host is
    // refused and never reaches the server.
    let bad = c.ask("GET / HTTP/1.1\r\nHost: other.test\r\n\r\n");
    assert!(bad.starts_with("HTTP/1.1 421"), "{bad}");
    assert!(got.recv_timeout(Duration::from_millis(300)).is_err());
}

#[test]
fn an_idle_upstream_the_server_closed_is_not_used_again() {
    let ca = UpstreamCa::new();
    let (port, got, accepted) = ca.keepalive_server(&["api.test"], true);
    let s = setup(Some(&ca), &[port]);
    let at = transparent_to(&s.ctx, port);
    let cfg = client_config(s.icpt.ca_pem().as_bytes());
    let req = format!(
        "GET / HTTP/1.1\r\nHost: api.test\r\nx-api-key: {}\r\n\r\n",
        s.placeholder
    );
    for _ in 0..3 {
        let mut c = KeptAlive::open(at, cfg.clone(), "api.test");
        assert!(c.ask(&req).ends_with("hello 1"));
        assert!(String::from_utf8(got.recv_timeout(T).unwrap())
            .unwrap()
            .contains(KEY));
        // Let the server's hang-up arrive before the next request.
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

/// The proxy sends the answer on in large writes, but never holds back what it has while it
/// waits for more: a streamed answer's first event reaches the sandbox before the second is
/// even sent.
#[test]
fn a_streamed_answer_reaches_the_sandbox_as_it_comes() {
    let ca = UpstreamCa::new();
    let (go, wait) = channel();
    let port = ca.streaming_server(&["api.test"], wait);
    let s = setup(Some(&ca), &[port]);
    let at = transparent_to(&s.ctx, port);
    let sock = dial(at);
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let conn = rustls::ClientConnection::new(
        client_config(s.icpt.ca_pem().as_bytes()),
        ServerName::try_from("api.test").unwrap(),
    )
    .unwrap();
    let mut c = rustls::StreamOwned::new(conn, sock);
    write!(
        c,
        "GET /events HTTP/1.1\r\nHost: api.test\r\nx-api-key: {}\r\n\r\n",
        s.placeholder
    )
    .unwrap();
    c.flush().unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while !got.windows(6).any(|w| w == b"event1") {
        let n = c
            .read(&mut b)
            .expect("the first event, before the second was sent");
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
    }
    assert!(!got.windows(6).any(|w| w == b"event2"));
    go.send(()).unwrap();
    while !got.ends_with(b"0\r\n\r\n") {
        let n = c.read(&mut b).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
    }
    assert!(got.windows(6).any(|w| w == b"event2"));
}

/// An answer the server cuts short (fewer body bytes than its Content-Length, then the end of
/// the connection, with or without close_notify): every byte it did send reaches the sandbox,
/// the last few (held by the proxy to start its next record) too, and nothing more.
#[test]
fn a_cut_answer_reaches_the_sandbox_as_far_as_it_came() {
    for close_notify in [false, true] {
        let body: Vec<u8> = (0..3 * 16384 + 1000).map(|i| (i % 251) as u8).collect();
        let mut answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
        let head_len = answer.len();
        answer.extend_from_slice(&body);
        let ca = UpstreamCa::new();
        let port = ca.cut_server(&["api.test"], answer.clone(), 16384, close_notify);
        let s = setup(Some(&ca), &[port]);
        let at = transparent_to(&s.ctx, port);
        let sock = dial(at);
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let conn = rustls::ClientConnection::new(
            client_config(s.icpt.ca_pem().as_bytes()),
            ServerName::try_from("api.test").unwrap(),
        )
        .unwrap();
        let mut c = rustls::StreamOwned::new(conn, sock);
        write!(
            c,
            "GET /big HTTP/1.1\r\nHost: api.test\r\nx-api-key: {}\r\n\r\n",
            s.placeholder
        )
        .unwrap();
        c.flush().unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        loop {
            match c.read(&mut b) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
                    break;
                }
            }
        }
        assert_eq!(
            got.len(),
            answer.len(),
            "close_notify from the server: {close_notify}"
        );
        assert!(
            got[head_len..] == body[..],
            "other bytes than the server sent"
        );
    }
}

#[test]
fn one_leaf_certificate_per_host_and_sandbox() {
    let ca = UpstreamCa::new();
    let s = setup(Some(&ca), &[443]);
    let at = transparent_to(&s.ctx, 443);
    let cfg = client_config(s.icpt.ca_pem().as_bytes());
    let first = leaf_of(at, cfg.clone(), "api.test");
    assert_eq!(leaf_of(at, cfg.clone(), "api.test"), first);
    assert_ne!(leaf_of(at, cfg, "gh.test"), first);
    // Another sandbox: its own CA, its own leaf for the same host.
    let other = setup(Some(&ca), &[443]);
    let at2 = transparent_to(&other.ctx, 443);
    let cfg2 = client_config(other.icpt.ca_pem().as_bytes());
    assert_ne!(leaf_of(at2, cfg2, "api.test"), first);
}

/// Cost of interception on loopback (run with `--release -- --ignored --nocapture`): median
/// time of a fresh HTTPS connection + request through the proxy, passthrough vs intercepted,
/// against the same server.
#[test]
#[ignore]
fn measure_interception_cost() {
    let ca = UpstreamCa::new();
    let (port, got) = ca.server(&["api.test", "plain.test"]);
    thread::spawn(move || while got.recv().is_ok() {});
    let s = setup(Some(&ca), &[port]);
    let at = transparent_to(&s.ctx, port);
    let trust_proxy = client_config(s.icpt.ca_pem().as_bytes());
    let trust_server = client_config(&ca.pem());
    let n = 200;
    let median = |sni: &str, cfg: &Arc<rustls::ClientConfig>, req: &str| {
        let mut v: Vec<f64> = (0..n)
            .map(|_| {
                let t = std::time::Instant::now();
                let a = tls_exchange(dial(at), cfg.clone(), sni, req).unwrap();
                assert!(a.contains("hello from"), "{a}");
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[n / 2]
    };
    let pass = median(
        "plain.test",
        &trust_server,
        "GET / HTTP/1.1\r\nHost: plain.test\r\nConnection: close\r\n\r\n",
    );
    let icpt = median(
        "api.test",
        &trust_proxy,
        &format!(
            "GET / HTTP/1.1\r\nHost: api.test\r\nx-api-key: {}\r\n\r\n",
            s.placeholder
        ),
    );
    println!(
        "passthrough {pass:.3} ms, intercepted {icpt:.3} ms, +{:.3} ms",
        icpt - pass
    );
    // This process's CPU time (ms, all threads: the server, the client and the proxy).
    let cpu_ms = || {
        let st = std::fs::read_to_string("/proc/self/stat").unwrap();
        let f: Vec<f64> = st
            .rsplit_once(") ")
            .unwrap()
            .1
            .split(' ')
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        (f[11] + f[12]) * 10.0
    };
    let rate = |sni: &str, cfg: &Arc<rustls::ClientConfig>, req: &str| {
        let t = std::time::Instant::now();
        let c = cpu_ms();
        let a = tls_exchange(dial(at), cfg.clone(), sni, req).unwrap();
        assert!(a.len() > BIG, "{}", a.len());
        let mib = BIG as f64 / (1 << 20) as f64;
        println!(
            "  {sni}: CPU of client + proxy + server {:.3} ms/MiB",
            (cpu_ms() - c) / mib
        );
        mib / t.elapsed().as_secs_f64()
    };
    let tp = rate(
        "plain.test",
        &trust_server,
        "GET /big HTTP/1.1\r\nHost: plain.test\r\nConnection: close\r\n\r\n",
    );
    let ti = rate(
        "api.test",
        &trust_proxy,
        &format!(
            "GET /big HTTP/1.1\r\nHost: api.test\r\nx-api-key: {}\r\n\r\n",
            s.placeholder
        ),
    );
    println!(
        "bulk: passthrough {tp:.0} MiB/s, intercepted {ti:.0} MiB/s, {:.2}x",
        ti / tp
    );
}
