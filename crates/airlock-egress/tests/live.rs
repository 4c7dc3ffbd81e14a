//! A policy changed while the sandbox runs (`airlock allow` / `airlock deny`): new connections
//! and DNS answers follow it at once, and open connections it no longer allows are closed.
#![allow(clippy::unwrap_used)]

mod common;

use airlock_egress::sni::build::client_hello;
use airlock_egress::EgressPolicy;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn fake_dst(port: u16) -> SocketAddr {
    SocketAddr::new("198.18.0.99".parse().unwrap(), port)
}

/// Open a TLS-looking connection to `name` through the transparent listener and wait for the
/// upstream's greeting: true when it was relayed, false when refused.
fn open(at: SocketAddr, name: &str) -> (bool, TcpStream) {
    let mut c = dial(at);
    c.write_all(&client_hello(&[name.as_bytes()], &[])).unwrap();
    let mut b = [0u8; 13];
    let ok = c.read_exact(&mut b).is_ok() && &b == b"server-hello|";
    (ok, c)
}

/// Whether the connection still carries bytes both ways (the upstream echoes).
fn alive(c: &mut TcpStream) -> bool {
    if c.write_all(b"ping").is_err() {
        return false;
    }
    let mut got = Vec::new();
    let mut b = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !got.ends_with(b"ping") && Instant::now() < deadline {
        match c.read(&mut b) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
    got.ends_with(b"ping")
}

fn policy(domains: &[&str], port: u16) -> EgressPolicy {
    EgressPolicy::new(domains, &[port])
        .unwrap()
        .of_sandbox("web")
}

#[test]
fn allow_then_deny_applies_to_new_connections_and_closes_open_ones() {
    let (port, _got) = tls_server();
    let (ctx, buf) = test_ctx(&["other.test"], &[port], &["x.test", "other.test"]);
    let at = transparent(&ctx, fake_dst(port));

    let (ok, _) = open(at, "x.test");
    assert!(!ok, "x.test relayed before it was allowed");

    assert_eq!(ctx.set_policy(policy(&["other.test", "x.test"], port)), 0);
    let (ok, mut long) = open(at, "x.test");
    assert!(ok, "x.test refused after allow");
    let (ok, mut other) = open(at, "other.test");
    assert!(ok);
    assert!(alive(&mut long));
    assert!(wait_until(|| ctx.open_connections() == 2));

    // deny x.test: its open connection is closed; the other one keeps working.
    assert_eq!(ctx.set_policy(policy(&["other.test"], port)), 1);
    long.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    let mut rest = Vec::new();
    let _ = long.read_to_end(&mut rest);
    assert!(t.elapsed() < Duration::from_secs(3), "not closed promptly");
    assert!(!alive(&mut long));
    assert!(alive(&mut other));
    let (ok, _) = open(at, "x.test");
    assert!(!ok, "x.test relayed after deny");

    let j = journal(&buf, 5);
    let closed: Vec<_> = j
        .iter()
        .filter(|e| {
            e["decision"] == "deny"
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("the open connection was closed"))
        })
        .collect();
    assert_eq!(closed.len(), 1, "{j:#?}");
    assert_eq!(closed[0]["host"], "x.test");
    assert_eq!(closed[0]["port"], port);
    assert_eq!(
        closed[0]["fix"],
        format!("run `airlock allow web x.test:{port}` (applies at once, no restart)")
    );
}

#[test]
fn a_denied_tunnel_is_closed_too() {
    let (port, _got) = tls_server();
    let (ctx, _buf) = test_ctx(&["x.test"], &[port], &["x.test"]);
    let proxy = explicit(&ctx);
    let mut c = dial(proxy);
    write!(
        c,
        "CONNECT x.test:{port} HTTP/1.1\r\nHost: x.test:{port}\r\n\r\n"
    )
    .unwrap();
    c.write_all(&client_hello(&[b"x.test"], &[])).unwrap();
    let mut head = vec![0u8; "HTTP/1.1 200 Connection established\r\n\r\nserver-hello|".len()];
    c.read_exact(&mut head).unwrap();
    assert!(head.ends_with(b"server-hello|"));
    assert!(wait_until(|| ctx.open_connections() == 1));
    assert_eq!(ctx.set_policy(policy(&[], port)), 1);
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(wait_until(|| ctx.open_connections() == 0));
}

#[test]
fn dns_follows_the_policy_in_force() {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::RecordType;
    let (ctx, _buf) = test_ctx(&[], &[443], &["x.test"]);
    let ask = || {
        let q = airlock_egress::dns::encode_query(7, "x.test.", RecordType::A).unwrap();
        Message::from_vec(&airlock_egress::dns::answer(&q, &ctx))
            .unwrap()
            .metadata
            .response_code
    };
    assert_eq!(ask(), ResponseCode::Refused);
    ctx.set_policy(policy(&["x.test"], 443));
    assert_eq!(ask(), ResponseCode::NoError);
    ctx.set_policy(policy(&[], 443));
    assert_eq!(ask(), ResponseCode::Refused);
}

fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Connections opened while the policy flips between allowing and denying x.test: once it
/// ends denied, none of them is left open — a connection allowed under the old policy but
/// registered after the sweep re-checks the new one itself.
#[test]
fn no_connection_slips_past_a_deny() {
    let (port, _got) = tls_server();
    let (ctx, _buf) = test_ctx(&["x.test"], &[port], &["x.test"]);
    let at = transparent(&ctx, fake_dst(port));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let openers: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let (ok, c) = open(at, "x.test");
                    if ok {
                        kept.push(c);
                    }
                }
                kept
            })
        })
        .collect();
    for i in 0..40 {
        let domains: &[&str] = if i % 2 == 0 { &[] } else { &["x.test"] };
        ctx.set_policy(policy(domains, port));
        std::thread::sleep(Duration::from_millis(5));
    }
    ctx.set_policy(policy(&[], port));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let kept: Vec<TcpStream> = openers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(!kept.is_empty(), "no connection was ever allowed");
    for mut c in kept {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let t = Instant::now();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "a connection stayed open"
        );
    }
    assert!(wait_until(|| ctx.open_connections() == 0));
}

/// Resolves to loopback, but only when let go: holds a connection between its (allowed)
/// decision and its upstream connect.
struct GatedResolver {
    entered: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl airlock_egress::Resolver for GatedResolver {
    fn lookup(&self, _host: &str) -> std::io::Result<Vec<std::net::IpAddr>> {
        let _ = self.entered.lock().unwrap().send(());
        let _ = self.release.lock().unwrap().recv_timeout(T);
        Ok(vec![loopback()])
    }
}

/// The deterministic case of the race above: a connection allowed, then the deny (whose sweep
/// cannot see it yet), then its upstream connect — it is refused, not relayed.
#[test]
fn a_connection_decided_before_a_deny_is_not_relayed_after_it() {
    let (port, got) = tls_server();
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let resolver = GatedResolver {
        entered: std::sync::Mutex::new(entered_tx),
        release: std::sync::Mutex::new(release_rx),
    };
    let (ctx, buf) = ctx_with(&["x.test"], &[port], std::sync::Arc::new(resolver), true);
    let at = transparent(&ctx, fake_dst(port));
    let client = std::thread::spawn(move || open(at, "x.test"));
    entered.recv_timeout(T).expect("the connection was allowed");
    assert_eq!(
        ctx.set_policy(policy(&[], port)),
        0,
        "nothing registered yet"
    );
    release.send(()).unwrap();
    let (ok, _c) = client.join().unwrap();
    assert!(!ok, "relayed after the deny");
    assert!(got
        .recv_timeout(Duration::from_secs(2))
        .map_or(true, |b| b.is_empty()));
    let j = journal(&buf, 2);
    assert!(
        j.iter()
            .any(|e| e["decision"] == "deny" && e["host"] == "x.test"),
        "{j:#?}"
    );
    assert_eq!(ctx.open_connections(), 0);
}
