//! The explicit proxy (HTTP_PROXY / HTTPS_PROXY): CONNECT and absolute-form requests.
#![allow(clippy::unwrap_used)]

mod common;

use airlock_egress::sni::{self, build::client_hello};
use common::*;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

/// Read a response head (up to the empty line) without consuming what follows.
fn read_head(c: &mut std::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            c.read(&mut b).unwrap(),
            1,
            "closed early: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn connect_allowed_tunnels_tls() {
    let (port, got) = tls_server();
    let (ctx, buf) = test_ctx(&["tls.test"], &[port], &["tls.test"]);
    let proxy = explicit(&ctx);
    let mut c = dial(proxy);
    write!(c, "CONNECT tls.test:{port} HTTP/1.1\r\nHost: tls.test:{port}\r\nProxy-Connection: keep-alive\r\n\r\n").unwrap();
    assert_eq!(
        read_head(&mut c),
        "HTTP/1.1 200 Connection established\r\n\r\n"
    );
    let hello = client_hello(&[b"tls.test"], &[]);
    c.write_all(&hello).unwrap();
    c.write_all(b"data").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let back = read_all(&mut c);
    let mut want = b"server-hello|".to_vec();
    want.extend_from_slice(&hello);
    want.extend_from_slice(b"data|bye");
    assert_eq!(back, want);
    let mut sent = hello.clone();
    sent.extend_from_slice(b"data");
    assert_eq!(got.recv_timeout(T).unwrap(), sent);
    let j = journal(&buf, 1);
    assert_eq!(j[0]["kind"], "connect");
    assert_eq!(j[0]["decision"], "allow");
    assert_eq!(j[0]["host"], "tls.test");
    assert_eq!(j[0]["port"], port);
}

#[test]
fn connect_hello_in_the_same_packet_as_the_request() {
    let (port, got) = tls_server();
    let (ctx, _buf) = test_ctx(&["tls.test"], &[port], &["tls.test"]);
    let proxy = explicit(&ctx);
    let mut c = dial(proxy);
    let mut all = format!("CONNECT tls.test:{port} HTTP/1.1\r\n\r\n").into_bytes();
    let hello = client_hello(&[b"tls.test"], &[]);
    all.extend_from_slice(&hello);
    c.write_all(&all).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let back = read_all(&mut c);
    assert!(back.starts_with(b"HTTP/1.1 200 Connection established\r\n\r\nserver-hello|"));
    assert_eq!(got.recv_timeout(T).unwrap(), hello);
}

#[test]
fn connect_denied_gets_403_with_the_fix_line() {
    let (port, got) = tls_server();
    let (ctx, buf) = test_ctx(&["tls.test"], &[port], &["tls.test", "evil.test"]);
    let proxy = explicit(&ctx);
    let cases = [
        (
            format!("CONNECT evil.test:{port} HTTP/1.1\r\n\r\n"),
            "evil.test is not in the allowed domains",
        ),
        (
            "CONNECT tls.test:22 HTTP/1.1\r\n\r\n".to_string(),
            "port 22 is not allowed",
        ),
        (
            format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n"),
            "literal IPs are not allowed; use a name",
        ),
        (
            format!("CONNECT [::1]:{port} HTTP/1.1\r\n\r\n"),
            "literal IPs are not allowed; use a name",
        ),
        (
            format!("CONNECT tls.test:{port} HTTP/1.1\r\nHost: evil.test:{port}\r\n\r\n"),
            "domain fronting",
        ),
        (
            "CONNECT metadata.google.internal:80 HTTP/1.1\r\n\r\n".to_string(),
            "metadata",
        ),
    ];
    for (req, why) in &cases {
        let mut c = dial(proxy);
        c.write_all(req.as_bytes()).unwrap();
        let resp = String::from_utf8(read_all(&mut c)).unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 403 Forbidden\r\n"),
            "{req:?}: {resp}"
        );
        assert!(resp.contains(why), "{req:?}: {resp}");
    }
    let mut c = dial(proxy);
    write!(c, "CONNECT evil.test:{port} HTTP/1.1\r\n\r\n").unwrap();
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(
        resp.contains(&format!(
            "To allow it, add `--allow evil.test:{port}` or `[network] domains = [\"evil.test\"]`."
        )),
        "{resp}"
    );
    assert!(
        got.recv_timeout(Duration::from_millis(200)).is_err(),
        "upstream was contacted"
    );
    let j = journal(&buf, cases.len() + 1);
    assert!(
        j.iter()
            .all(|e| e["decision"] == "deny" && e["kind"] == "connect"),
        "{j:?}"
    );
}

#[test]
fn connect_tunnel_must_carry_the_same_name() {
    let (port, got) = tls_server();
    let (ctx, buf) = test_ctx(
        &["tls.test", "other.test"],
        &[port],
        &["tls.test", "other.test"],
    );
    let proxy = explicit(&ctx);
    // TLS for another (even allowed) name through the tunnel: fronting.
    let mut c = dial(proxy);
    write!(c, "CONNECT tls.test:{port} HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(
        read_head(&mut c),
        "HTTP/1.1 200 Connection established\r\n\r\n"
    );
    c.write_all(&client_hello(&[b"other.test"], &[])).unwrap();
    assert_eq!(read_all(&mut c), sni::ALERT_ACCESS_DENIED);
    // Plain HTTP inside a tunnel, Host for another name.
    let mut c = dial(proxy);
    write!(
        c,
        "CONNECT tls.test:{port} HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: other.test\r\n\r\n"
    )
    .unwrap();
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 403 Forbidden\r\n"),
        "{resp}"
    );
    assert!(resp.contains("domain fronting"), "{resp}");
    // Not TLS, not HTTP inside the tunnel.
    let mut c = dial(proxy);
    write!(c, "CONNECT tls.test:{port} HTTP/1.1\r\n\r\nSSH-2.0-x\r\n").unwrap();
    assert_eq!(
        read_all(&mut c),
        b"HTTP/1.1 200 Connection established\r\n\r\n"
    );
    // The upstream connections were opened but got no bytes.
    for _ in 0..3 {
        assert_eq!(got.recv_timeout(T).unwrap(), b"");
    }
    let j = journal(&buf, 6);
    let denies: Vec<_> = j.iter().filter(|e| e["decision"] == "deny").collect();
    assert_eq!(denies.len(), 3, "{j:?}");
}

#[test]
fn absolute_form_get_is_forwarded_in_origin_form() {
    let (port, got) = http_server();
    let (ctx, buf) = test_ctx(&["web.test"], &[port], &["web.test"]);
    let proxy = explicit(&ctx);
    let mut c = dial(proxy);
    write!(c, "GET http://web.test:{port}/path?q=1 HTTP/1.1\r\nHost: web.test:{port}\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eDp5\r\nAccept: */*\r\n\r\n").unwrap();
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.ends_with("hello from upstream: /path?q=1"));
    let req = String::from_utf8(got.recv_timeout(T).unwrap()).unwrap();
    assert_eq!(req, format!("GET /path?q=1 HTTP/1.1\r\nHost: web.test:{port}\r\nAccept: */*\r\nConnection: close\r\n\r\n"));
    let j = journal(&buf, 1);
    assert_eq!(j[0]["kind"], "http");
    assert_eq!(j[0]["decision"], "allow");
    assert_eq!(j[0]["port"], port);
}

#[test]
fn absolute_form_post_with_body() {
    let (port, got) = http_server();
    let (ctx, _buf) = test_ctx(&["web.test"], &[port], &["web.test"]);
    let proxy = explicit(&ctx);
    let mut c = dial(proxy);
    write!(c, "POST http://web.test:{port}/form HTTP/1.1\r\nHost: web.test:{port}\r\nContent-Length: 5\r\n\r\nab").unwrap();
    std::thread::sleep(Duration::from_millis(30));
    c.write_all(b"cde").unwrap();
    let resp = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(resp.ends_with("hello from upstream: /form"), "{resp}");
    assert!(String::from_utf8(got.recv_timeout(T).unwrap())
        .unwrap()
        .ends_with("\r\n\r\nabcde"));
}

#[test]
fn absolute_form_refusals() {
    let (port, got) = http_server();
    let (ctx, buf) = test_ctx(&["web.test"], &[port], &["web.test", "evil.test"]);
    let proxy = explicit(&ctx);
    let cases = [
        (
            format!("GET http://evil.test:{port}/ HTTP/1.1\r\nHost: evil.test:{port}\r\n\r\n"),
            "403",
            "evil.test is not in the allowed domains",
        ),
        (
            format!("GET http://web.test:{port}/ HTTP/1.1\r\nHost: evil.test\r\n\r\n"),
            "403",
            "domain fronting",
        ),
        (
            format!("GET http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n"),
            "403",
            "literal IPs are not allowed; use a name",
        ),
        (
            "GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\n\r\n".to_string(),
            "403",
            "literal IPs are not allowed; use a name",
        ),
        (
            "GET http://metadata.google.internal/computeMetadata/v1/ HTTP/1.1\r\n\r\n".to_string(),
            "403",
            "metadata",
        ),
        (
            "GET / HTTP/1.1\r\nHost: web.test\r\n\r\n".to_string(),
            "400",
            "absolute URL",
        ),
        (
            format!("GET https://web.test:{port}/ HTTP/1.1\r\n\r\n"),
            "400",
            "use CONNECT",
        ),
    ];
    for (req, status, why) in &cases {
        let mut c = dial(proxy);
        c.write_all(req.as_bytes()).unwrap();
        let resp = String::from_utf8(read_all(&mut c)).unwrap();
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {status} ")),
            "{req:?}: {resp}"
        );
        assert!(resp.contains(why), "{req:?}: {resp}");
    }
    assert!(
        got.recv_timeout(Duration::from_millis(200)).is_err(),
        "upstream was contacted"
    );
    let j = journal(&buf, cases.len());
    assert!(j.iter().all(|e| e["decision"] == "deny"), "{j:?}");
}

/// curl through the proxy, as a tool honouring HTTP_PROXY would.
#[test]
fn curl_through_the_explicit_proxy() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no curl");
        return;
    }
    let (port, _got) = http_server();
    let (ctx, _buf) = test_ctx(&["web.test"], &[port], &["web.test"]);
    let proxy = explicit(&ctx);
    let curl = |url: &str| {
        std::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                "--noproxy",
                "",
                "-x",
                &format!("http://{proxy}"),
                "-w",
                "\n%{http_code}",
                url,
            ])
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("no_proxy")
            .env_remove("NO_PROXY")
            .output()
            .unwrap()
    };
    let out = curl(&format!("http://web.test:{port}/via-curl"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from upstream: /via-curl\n200"
    );
    let out = curl(&format!("http://evil.test:{port}/"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n403"), "{text}");
    assert!(text.contains("--allow evil.test"), "{text}");
}
