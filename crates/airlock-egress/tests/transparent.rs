//! Transparent connections on loopback: the proxy reads SNI / Host, decides, resolves the name
//! itself and relays — whatever destination address the program dialled.
#![allow(clippy::unwrap_used)]

mod common;

use airlock_egress::sni::{self, build::client_hello};
use airlock_egress::StaticResolver;
use common::*;
use std::io::Write;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn fake_dst(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

#[test]
fn tls_allowed_name_relays_both_ways() {
    let (port, got) = tls_server();
    let (ctx, buf) = test_ctx(&["tls.test"], &[port], &["tls.test"]);
    let at = transparent(&ctx, fake_dst("198.18.0.99", port));
    let mut c = dial(at);
    let hello = client_hello(&[b"tls.test"], &[]);
    c.write_all(&hello).unwrap();
    c.write_all(b"ping").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let back = read_all(&mut c);
    let mut want = b"server-hello|".to_vec();
    want.extend_from_slice(&hello);
    want.extend_from_slice(b"ping|bye");
    assert_eq!(back, want);
    let mut sent = hello.clone();
    sent.extend_from_slice(b"ping");
    assert_eq!(got.recv_timeout(T).unwrap(), sent);
    let j = journal(&buf, 1);
    assert_eq!(j[0]["kind"], "tcp");
    assert_eq!(j[0]["decision"], "allow");
    assert_eq!(j[0]["host"], "tls.test");
    assert_eq!(j[0]["port"], port);
    assert_eq!(j[0]["dst"], format!("198.18.0.99:{port}"));
    assert_eq!(j[0]["ip"][0], "127.0.0.1");
}

#[test]
fn tls_hello_split_into_tiny_writes() {
    let (port, got) = tls_server();
    let (ctx, _buf) = test_ctx(&["*.example.test"], &[port], &["a.example.test"]);
    let at = transparent(&ctx, fake_dst("198.18.0.1", port));
    let mut c = dial(at);
    let hello = sni::build::records(&client_hello(&[b"A.Example.Test."], &[])[5..], 16);
    for (i, b) in hello.iter().enumerate() {
        c.write_all(&[*b]).unwrap();
        if i % 25 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    c.shutdown(Shutdown::Write).unwrap();
    let back = read_all(&mut c);
    assert!(back.starts_with(b"server-hello|"));
    assert!(back.ends_with(b"|bye"));
    assert_eq!(got.recv_timeout(T).unwrap(), hello);
}

#[test]
fn tls_denied_name_gets_an_alert_and_nothing_is_dialled() {
    let (port, got) = tls_server();
    let (ctx, buf) = test_ctx(&["tls.test"], &[port], &["tls.test", "evil.test"]);
    // The program dialled the allowed server's address: irrelevant, the SNI decides.
    let at = transparent(&ctx, fake_dst("127.0.0.1", port));
    for name in [
        &b"evil.test"[..],
        b"tls.test\0.evil.test",
        b"tls.test.evil.test",
        b"127.0.0.1",
        b"sub.tls.test",
    ] {
        let mut c = dial(at);
        c.write_all(&client_hello(&[name], &[])).unwrap();
        assert_eq!(
            read_all(&mut c),
            sni::ALERT_ACCESS_DENIED,
            "{}",
            String::from_utf8_lossy(name)
        );
    }
    // No SNI, ECH: denied too.
    for hello in [
        client_hello(&[], &[]),
        client_hello(&[b"tls.test"], &[(0xfe0d, vec![0; 8])]),
    ] {
        let mut c = dial(at);
        c.write_all(&hello).unwrap();
        assert_eq!(read_all(&mut c), sni::ALERT_ACCESS_DENIED);
    }
    assert!(
        got.recv_timeout(Duration::from_millis(300)).is_err(),
        "upstream was contacted"
    );
    let j = journal(&buf, 7);
    assert!(j.iter().all(|e| e["decision"] == "deny"));
    assert_eq!(j[0]["host"], "evil.test");
    assert_eq!(
        j[0]["fix"],
        format!("add `--allow evil.test:{port}` or `[network] domains = [\"evil.test\"]`")
    );
    assert!(j[1]["reason"].as_str().unwrap().contains("NUL"));
    assert!(j[3]["reason"]
        .as_str()
        .unwrap()
        .contains("literal IPs are not allowed; use a name"));
    let reasons: Vec<&str> = j.iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert!(
        reasons.contains(&"TLS without a server name"),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("ECH")), "{reasons:?}");
}

#[test]
fn port_must_be_allowed() {
    let (port, got) = tls_server();
    let (ctx, buf) = test_ctx(&["tls.test"], &[443], &["tls.test"]);
    let at = transparent(&ctx, fake_dst("198.18.0.1", port));
    let mut c = dial(at);
    c.write_all(&client_hello(&[b"tls.test"], &[])).unwrap();
    assert_eq!(read_all(&mut c), sni::ALERT_ACCESS_DENIED);
    assert!(got.recv_timeout(Duration::from_millis(200)).is_err());
    let j = journal(&buf, 1);
    assert_eq!(
        j[0]["fix"],
        format!("add `--allow tls.test:{port}` or `[network] ports = [443, {port}]`")
    );
}

#[test]
fn http_allowed_host_is_forwarded_with_connection_close() {
    let (port, got) = http_server();
    let (ctx, buf) = test_ctx(&["web.test"], &[port], &["web.test"]);
    let at = transparent(&ctx, fake_dst("198.18.0.5", port));
    let mut c = dial(at);
    c.write_all(b"GET /hello?x=1 HTTP/1.1\r\nHost: Web.Test.\r\nConnection: keep-alive\r\nUser-Agent: t\r\n\r\n").unwrap();
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.ends_with("hello from upstream: /hello?x=1"));
    let req = String::from_utf8(got.recv_timeout(T).unwrap()).unwrap();
    assert_eq!(
        req,
        "GET /hello?x=1 HTTP/1.1\r\nHost: Web.Test.\r\nUser-Agent: t\r\nConnection: close\r\n\r\n"
    );
    let j = journal(&buf, 1);
    assert_eq!(j[0]["kind"], "http");
    assert_eq!(j[0]["decision"], "allow");
    assert_eq!(j[0]["ip"][0], "127.0.0.1");
}

#[test]
fn http_request_body_is_relayed_and_a_smuggled_request_is_not() {
    let (port, got) = http_server();
    let (ctx, _buf) = test_ctx(&["web.test"], &[port], &["web.test"]);
    let at = transparent(&ctx, fake_dst("198.18.0.5", port));
    // Content-Length body in pieces, then a second request for another host on the same
    // connection.
    let mut c = dial(at);
    c.write_all(b"POST /up HTTP/1.1\r\nHost: web.test\r\nContent-Length: 10\r\n\r\n01234")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    c.write_all(b"56789GET /steal HTTP/1.1\r\nHost: evil.test\r\n\r\n")
        .unwrap();
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(resp.ends_with("hello from upstream: /up"), "{resp}");
    let req = String::from_utf8(got.recv_timeout(T).unwrap()).unwrap();
    assert!(req.ends_with("\r\n\r\n0123456789"), "{req:?}");
    assert!(!req.contains("evil"), "{req:?}");
    // Chunked.
    let mut c = dial(at);
    let body = "4\r\nabcd\r\n0\r\n\r\n";
    c.write_all(format!("POST /chunked HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}GET /x HTTP/1.1\r\nHost: evil.test\r\n\r\n").as_bytes()).unwrap();
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(resp.ends_with("hello from upstream: /chunked"), "{resp}");
    let req = String::from_utf8(got.recv_timeout(T).unwrap()).unwrap();
    assert!(req.ends_with(&format!("\r\n\r\n{body}")), "{req:?}");
}

#[test]
fn http_denied_host_gets_403_with_the_fix_line() {
    let (port, got) = http_server();
    let (ctx, buf) = test_ctx(&["web.test"], &[port], &["web.test", "evil.test"]);
    let at = transparent(&ctx, fake_dst("127.0.0.1", port));
    let mut c = dial(at);
    c.write_all(b"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n")
        .unwrap();
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(resp.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{resp}");
    let body = resp.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(
        body,
        format!(
            "airlock: blocked evil.test:{port}: evil.test is not in the allowed domains\nTo allow it, add `--allow evil.test:{port}` or `[network] domains = [\"evil.test\"]`.\n"
        )
    );
    assert!(got.recv_timeout(Duration::from_millis(200)).is_err());
    let j = journal(&buf, 1);
    assert_eq!(j[0]["decision"], "deny");
    assert_eq!(j[0]["kind"], "http");
    assert_eq!(j[0]["host"], "evil.test");
}

#[test]
fn http_evasions_are_refused() {
    let (port, got) = http_server();
    let (ctx, buf) = test_ctx(&["web.test"], &[port], &["web.test", "evil.test"]);
    let at = transparent(&ctx, fake_dst("198.18.0.5", port));
    let cases: &[(&str, &str)] = &[
        (
            "GET http://web.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n",
            "domain fronting",
        ),
        (
            "GET / HTTP/1.1\r\nHost: web.test\r\nHost: evil.test\r\n\r\n",
            "more than one Host header",
        ),
        (
            "GET / HTTP/1.1\r\nHost: web.test\0.evil.test\r\n\r\n",
            "NUL",
        ),
        (
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            "literal IPs are not allowed; use a name",
        ),
        (
            "GET / HTTP/1.1\r\nHost: 2130706433\r\n\r\n",
            "literal IPs are not allowed; use a name",
        ),
        (
            "GET / HTTP/1.1\r\nHost: [::ffff:127.0.0.1]\r\n\r\n",
            "literal IPs are not allowed; use a name",
        ),
        (
            "GET / HTTP/1.1\r\nHost: metadata.google.internal\r\n\r\n",
            "metadata",
        ),
        ("GET / HTTP/1.1\r\n\r\n", "without a Host"),
        (
            "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n",
            "explicit proxy",
        ),
        ("GET / HTTP/1.1\r\nHost: web.test\nX: y\r\n\r\n", "bare LF"),
    ];
    for (req, why) in cases {
        let mut c = dial(at);
        c.write_all(req.as_bytes()).unwrap();
        let resp = String::from_utf8(read_all(&mut c)).unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 403 Forbidden\r\n")
                || resp.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{req:?}: {resp}"
        );
        assert!(resp.contains(why), "{req:?}: {resp}");
    }
    let mut c = dial(at);
    let mut long = b"GET / HTTP/1.1\r\nHost: web.test\r\nX: ".to_vec();
    long.resize(20 * 1024, b'a');
    c.write_all(&long).unwrap();
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(resp.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{resp}");
    assert!(
        got.recv_timeout(Duration::from_millis(200)).is_err(),
        "upstream was contacted"
    );
    let j = journal(&buf, cases.len() + 1);
    assert_eq!(j.len(), cases.len() + 1);
    assert!(j.iter().all(|e| e["decision"] == "deny"), "{j:?}");
}

#[test]
fn trailing_dot_names_the_same_host() {
    let (port, _got) = http_server();
    let (ctx, _buf) = test_ctx(&["web.test"], &[port], &["web.test"]);
    let at = transparent(&ctx, fake_dst("198.18.0.5", port));
    let mut c = dial(at);
    c.write_all(b"GET /dot HTTP/1.1\r\nHost: web.test.:80\r\n\r\n")
        .unwrap();
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(resp.ends_with("hello from upstream: /dot"), "{resp}");
}

#[test]
fn neither_tls_nor_http_is_closed() {
    let (port, got) = tls_server();
    let (ctx, buf) = test_ctx(&["tls.test"], &[port], &["tls.test"]);
    let at = transparent(&ctx, fake_dst("198.18.0.5", port));
    let mut c = dial(at);
    c.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").unwrap();
    assert!(read_all(&mut c).is_empty());
    let mut c = dial(at);
    c.write_all(&[0, 1, 2, 3, 0xff]).unwrap();
    assert!(read_all(&mut c).is_empty());
    assert!(got.recv_timeout(Duration::from_millis(200)).is_err());
    let j = journal(&buf, 2);
    assert_eq!(j[0]["kind"], "tcp");
    assert_eq!(j[0]["decision"], "deny");
    assert_eq!(
        j[0]["reason"],
        "neither a TLS ClientHello nor an HTTP/1 request"
    );
}

#[test]
fn a_silent_client_is_cut_off() {
    let (port, _got) = tls_server();
    let (ctx, buf) = test_ctx(&["tls.test"], &[port], &["tls.test"]);
    let mut ctx = Arc::try_unwrap(ctx).unwrap();
    ctx.inspect_timeout = Duration::from_millis(300);
    let ctx = Arc::new(ctx);
    let at = transparent(&ctx, fake_dst("198.18.0.5", port));
    let start = Instant::now();
    let mut c = dial(at);
    // Half a ClientHello, then silence.
    c.write_all(&client_hello(&[b"tls.test"], &[])[..20])
        .unwrap();
    let back = read_all(&mut c);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(back, sni::ALERT_ACCESS_DENIED);
    let j = journal(&buf, 1);
    assert!(j[0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("no complete TLS ClientHello or HTTP request"));
}

/// DNS rebinding: an allowed name whose answers are loopback, private or metadata addresses
/// is refused by the default floor, for TLS and HTTP alike.
#[test]
fn rebinding_to_forbidden_addresses_is_refused_by_default() {
    let (port, got) = http_server();
    for ip in [
        "127.0.0.1",
        "10.0.0.1",
        "169.254.169.254",
        "100.100.100.200",
        "::1",
        "::ffff:127.0.0.1",
        "fd00:ec2::254",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        let resolver = StaticResolver::new([("web.test", vec![ip])]);
        let (ctx, buf) = ctx_with(&["web.test"], &[port], Arc::new(resolver), false);
        let at = transparent(&ctx, fake_dst("198.18.0.5", port));
        let mut c = dial(at);
        c.write_all(b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
            .unwrap();
        let resp = String::from_utf8(read_all(&mut c)).unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 403 Forbidden\r\n"),
            "{ip}: {resp}"
        );
        assert!(
            resp.contains("resolves only to forbidden addresses"),
            "{ip}: {resp}"
        );
        let mut c = dial(at);
        c.write_all(&client_hello(&[b"web.test"], &[])).unwrap();
        assert_eq!(read_all(&mut c), sni::ALERT_ACCESS_DENIED, "{ip}");
        let j = journal(&buf, 2);
        assert!(j.iter().all(|e| e["decision"] == "deny"), "{j:?}");
    }
    assert!(
        got.recv_timeout(Duration::from_millis(200)).is_err(),
        "upstream was contacted"
    );
}

#[test]
fn unresolvable_allowed_name_is_a_502() {
    let (ctx, buf) = test_ctx(&["gone.test"], &[80], &[]);
    let at = transparent(&ctx, fake_dst("198.18.0.5", 80));
    let mut c = dial(at);
    c.write_all(b"GET / HTTP/1.1\r\nHost: gone.test\r\n\r\n")
        .unwrap();
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(resp.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{resp}");
    assert!(resp.contains("cannot resolve gone.test"), "{resp}");
    journal(&buf, 1);
}

/// A real ClientHello (OpenSSL's, with TLS 1.3 key shares) is read like the hand-built one.
#[test]
fn real_openssl_client_hello() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no openssl");
        return;
    }
    let (port, got) = tls_server();
    let (ctx, buf) = test_ctx(&["tls.test"], &[port], &["tls.test"]);
    let at = transparent(&ctx, fake_dst("198.18.0.5", port));
    let mut child = std::process::Command::new("timeout")
        .args([
            "5",
            "openssl",
            "s_client",
            "-connect",
            &at.to_string(),
            "-servername",
            "tls.test",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let hello = got.recv_timeout(T).unwrap();
    let _ = child.wait();
    assert_eq!(sni::server_name(&hello).unwrap(), "tls.test");
    let j = journal(&buf, 1);
    assert_eq!(j[0]["decision"], "allow");
}

#[test]
fn connections_beyond_the_limit_are_closed() {
    let (port, _got) = tls_server();
    let (ctx, buf) = test_ctx(&["tls.test"], &[port], &["tls.test"]);
    let mut ctx = Arc::try_unwrap(ctx).unwrap();
    ctx.max_connections = 1;
    let ctx = Arc::new(ctx);
    let at = transparent(&ctx, fake_dst("198.18.0.5", port));
    let first = dial(at);
    let deadline = Instant::now() + T;
    while ctx.active_connections() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut second = dial(at);
    assert!(read_all(&mut second).is_empty());
    let j = journal(&buf, 1);
    assert!(
        j[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("too many connections at once"),
        "{j:?}"
    );
    drop(first);
    while ctx.active_connections() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut third = dial(at);
    third.write_all(&client_hello(&[b"tls.test"], &[])).unwrap();
    third.shutdown(Shutdown::Write).unwrap();
    assert!(read_all(&mut third).starts_with(b"server-hello|"));
}

#[test]
fn bulk_transfer_both_ways_at_once() {
    let (port, got) = tls_server();
    let (ctx, _buf) = test_ctx(&["tls.test"], &[port], &["tls.test"]);
    let at = transparent(&ctx, fake_dst("198.18.0.5", port));
    let c = dial(at);
    let mut w = c.try_clone().unwrap();
    let hello = client_hello(&[b"tls.test"], &[]);
    let payload: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (h2, p2) = (hello.clone(), payload.clone());
    let writer = std::thread::spawn(move || {
        w.write_all(&h2).unwrap();
        for part in p2.chunks(100_000) {
            w.write_all(part).unwrap();
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut r = c;
    let back = read_all(&mut r);
    writer.join().unwrap();
    let mut want = b"server-hello|".to_vec();
    want.extend_from_slice(&hello);
    want.extend_from_slice(&payload);
    want.extend_from_slice(b"|bye");
    assert_eq!(back.len(), want.len());
    assert!(back == want);
    assert_eq!(
        got.recv_timeout(T).unwrap().len(),
        hello.len() + payload.len()
    );
}
