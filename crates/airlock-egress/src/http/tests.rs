use super::*;

fn req(s: &str) -> Result<Request, HttpError> {
    parse(s.as_bytes())
}

#[test]
fn origin_form() {
    let r = req("GET /x?y=1 HTTP/1.1\r\nHost: Example.com\r\nAccept: */*\r\n\r\nBODY").unwrap();
    assert_eq!(r.method, "GET");
    assert_eq!(r.target, Target::Origin("/x?y=1".into()));
    assert_eq!(r.host.as_deref(), Some("Example.com"));
    assert_eq!(
        r.head_len,
        "GET /x?y=1 HTTP/1.1\r\nHost: Example.com\r\nAccept: */*\r\n\r\n".len()
    );
    assert_eq!(r.authority(80).unwrap(), ("Example.com".into(), 80));
    assert_eq!(r.body, BodyLength::None);
    let r = req("GET / HTTP/1.1\r\nHost: a.com:8080\r\n\r\n").unwrap();
    assert_eq!(r.authority(80).unwrap(), ("a.com".into(), 8080));
}

#[test]
fn every_prefix_needs_more() {
    let full = "POST /p HTTP/1.1\r\nHost: a.com\r\nContent-Length: 3\r\n\r\n";
    for cut in 1..full.len() {
        assert_eq!(
            parse(&full.as_bytes()[..cut]),
            Err(HttpError::NeedMore),
            "cut {cut}"
        );
    }
    assert_eq!(req(full).unwrap().body, BodyLength::Length(3));
}

#[test]
fn absolute_form() {
    let r =
        req("GET http://a.com/p?q HTTP/1.1\r\nHost: a.com\r\nProxy-Connection: keep-alive\r\n\r\n")
            .unwrap();
    assert_eq!(
        r.target,
        Target::Absolute {
            scheme: "http".into(),
            authority: "a.com".into(),
            path: "/p?q".into()
        }
    );
    assert_eq!(r.authority(3128).unwrap(), ("a.com".into(), 80));
    assert_eq!(
        String::from_utf8(r.forward_head()).unwrap(),
        "GET /p?q HTTP/1.1\r\nHost: a.com\r\nConnection: close\r\n\r\n"
    );
    // No Host header: one is added from the target.
    let r = req("GET http://a.com:8080 HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(r.authority(3128).unwrap(), ("a.com".into(), 8080));
    assert_eq!(
        String::from_utf8(r.forward_head()).unwrap(),
        "GET / HTTP/1.0\r\nHost: a.com:8080\r\nConnection: close\r\n\r\n"
    );
    let r = req("GET http://a.com?x HTTP/1.1\r\nHost: A.COM.\r\n\r\n").unwrap();
    assert_eq!(r.authority(80).unwrap(), ("a.com".into(), 80));
    assert!(String::from_utf8(r.forward_head())
        .unwrap()
        .starts_with("GET /?x HTTP/1.1\r\n"));
}

#[test]
fn fronting_is_refused() {
    for (line, host) in [
        ("GET http://allowed.com/ HTTP/1.1", "evil.com"),
        ("GET http://allowed.com/ HTTP/1.1", "allowed.com.evil.com"),
        ("GET http://allowed.com/ HTTP/1.1", "allowed.com:8080"),
        ("CONNECT allowed.com:443 HTTP/1.1", "evil.com:443"),
        ("CONNECT allowed.com:443 HTTP/1.1", "allowed.com:444"),
    ] {
        let r = req(&format!("{line}\r\nHost: {host}\r\n\r\n")).unwrap();
        assert!(
            matches!(r.authority(80), Err(HttpError::Mismatch { .. })),
            "{line} / {host}"
        );
    }
}

#[test]
fn connect() {
    let r = req("CONNECT github.com:443 HTTP/1.1\r\nHost: github.com:443\r\n\r\n").unwrap();
    assert_eq!(r.target, Target::Authority("github.com:443".into()));
    assert_eq!(r.authority(3128).unwrap(), ("github.com".into(), 443));
    let r = req("CONNECT github.com:443 HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(r.authority(3128).unwrap(), ("github.com".into(), 443));
    let r = req("CONNECT github.com HTTP/1.1\r\n\r\n").unwrap();
    assert!(r.authority(3128).is_err());
    let r = req("CONNECT [::1]:443 HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(r.authority(3128).unwrap(), ("[::1]".into(), 443));
}

#[test]
fn refusals() {
    let cases: &[(&str, HttpError)] = &[
        (
            "GET / HTTP/1.1\r\nHost: a.com\r\nHost: b.com\r\n\r\n",
            HttpError::DuplicateHost,
        ),
        (
            "GET / HTTP/1.1\r\nHost: a.com\r\nhost: a.com\r\n\r\n",
            HttpError::DuplicateHost,
        ),
        (
            "GET / HTTP/1.1\r\nHost: a.com\0.evil.com\r\n\r\n",
            HttpError::Nul,
        ),
        (
            "GET / HTTP/1.1\r\nHost: a.com\nX: y\r\n\r\n",
            HttpError::Malformed("bare LF line end"),
        ),
        (
            "GET / HTTP/1.1\r\nHost: a.com\r\n folded\r\n\r\n",
            HttpError::Malformed("folded header line"),
        ),
        (
            "GET / HTTP/1.1\r\nHost : a.com\r\n\r\n",
            HttpError::Malformed("header name"),
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            HttpError::Malformed("bare CR"),
        ),
        ("GET / HTTP/2.0\r\nHost: a.com\r\n\r\n", HttpError::NotHttp),
        ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", HttpError::NotHttp),
        ("GET  / HTTP/1.1\r\nHost: a.com\r\n\r\n", HttpError::NotHttp),
        (
            "GET http://u@a.com/ HTTP/1.1\r\n\r\n",
            HttpError::Malformed("user info in the request target"),
        ),
        (
            "GET ftp://a.com/ HTTP/1.1\r\n\r\n",
            HttpError::Unsupported("an absolute target other than http:// (use CONNECT for https)"),
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            HttpError::Malformed("both Transfer-Encoding and Content-Length"),
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            HttpError::Malformed("conflicting Content-Length headers"),
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            HttpError::Malformed("bad Content-Length"),
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            HttpError::Unsupported("a transfer coding other than chunked"),
        ),
    ];
    for (raw, want) in cases {
        assert_eq!(req(raw).as_ref(), Err(want), "{raw:?}");
    }
    assert_eq!(
        req("GET / HTTP/1.1\r\n\r\n").unwrap().authority(80),
        Err(HttpError::NoHost)
    );
    assert_eq!(
        req("GET / HTTP/1.1\r\nHost:\r\n\r\n")
            .unwrap()
            .authority(80),
        Err(HttpError::NoHost)
    );
}

#[test]
fn early_rejections() {
    assert_eq!(parse(&[0x16, 3, 1]), Err(HttpError::NotHttp));
    assert_eq!(parse(b"SSH-2.0-OpenSSH_9.6\r\n"), Err(HttpError::NotHttp));
    assert_eq!(parse(b"\x00\x01"), Err(HttpError::NotHttp));
    assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a\0"), Err(HttpError::Nul));
    assert!(looks_like_http(b"GE"));
    assert!(!looks_like_http(b" GET"));
    let mut long = b"GET / HTTP/1.1\r\nHost: a.com\r\nX: ".to_vec();
    long.resize(MAX_HEAD + 10, b'a');
    assert_eq!(parse(&long), Err(HttpError::TooLong));
    long.truncate(MAX_HEAD - 1);
    assert_eq!(parse(&long), Err(HttpError::NeedMore));
}

#[test]
fn forward_head_strips_hop_by_hop() {
    let r = req("GET / HTTP/1.1\r\nHost: a.com\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nKeep-Alive: 5\r\nProxy-Authorization: x\r\nX-Keep: 1\r\n\r\n").unwrap();
    assert_eq!(
        String::from_utf8(r.forward_head()).unwrap(),
        "GET / HTTP/1.1\r\nHost: a.com\r\nX-Keep: 1\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn responses() {
    let r = String::from_utf8(response("403 Forbidden", "no\n")).unwrap();
    assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n"));
    assert!(r.contains("Content-Length: 3\r\n"));
    assert!(r.ends_with("\r\n\r\nno\n"));
}

#[test]
fn garbage_never_panics() {
    let base =
        b"POST http://a.com:80/x HTTP/1.1\r\nHost: a.com\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for i in 0..base.len() {
        for v in [0u8, b'\r', b'\n', b' ', b':', 0xff] {
            let mut b = base.clone();
            b[i] = v;
            if let Ok(r) = parse(&b) {
                let _ = r.authority(80);
                let _ = r.forward_head();
            }
        }
    }
}

#[test]
fn response_framing() {
    let r = |s: &str, m: &str| parse_response(s.as_bytes(), m);
    let ok = r("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "GET").unwrap();
    assert_eq!(ok.body, ResponseBody::Framed(BodyLength::Length(5)));
    assert!(!ok.close);
    assert_eq!(
        ok.head_len,
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".len()
    );
    let c = r(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: Close\r\n\r\n",
        "GET",
    )
    .unwrap();
    assert_eq!(c.body, ResponseBody::Framed(BodyLength::Chunked));
    assert!(c.close);
    // No length: until the server closes, never reused.
    let u = r("HTTP/1.1 200 OK\r\n\r\n", "GET").unwrap();
    assert_eq!((u.body, u.close), (ResponseBody::UntilClose, true));
    let u = r("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "GET").unwrap();
    assert_eq!(u.body, ResponseBody::UntilClose);
    // HEAD, 204 and 304 have no body whatever the length says; 1xx is interim; 101 is a tunnel.
    let h = r("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", "HEAD").unwrap();
    assert_eq!(h.body, ResponseBody::Framed(BodyLength::None));
    let n = r(
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
        "GET",
    )
    .unwrap();
    assert_eq!(n.body, ResponseBody::Framed(BodyLength::None));
    let i = r("HTTP/1.1 100 Continue\r\n\r\n", "POST").unwrap();
    assert_eq!(i.body, ResponseBody::Interim);
    let s = r("HTTP/1.1 101 Switching Protocols\r\n\r\n", "GET").unwrap();
    assert!(s.close);
    // HTTP/1.0 closes unless it says keep-alive.
    assert!(
        r("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "GET")
            .unwrap()
            .close
    );
    let k = r(
        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
        "GET",
    );
    assert!(!k.unwrap().close);
    assert_eq!(
        r("HTTP/1.1 200 OK\r\nContent-", "GET"),
        Err(HttpError::NeedMore)
    );
    assert!(r("HTTP/1.1 2x0 OK\r\n\r\n", "GET").is_err());
    assert!(r("SSH-2.0\r\n\r\n", "GET").is_err());
    assert!(r(
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "GET"
    )
    .is_err());
}

#[test]
fn keep_alive_head() {
    let r = req("GET / HTTP/1.1\r\nHost: a.com\r\nConnection: keep-alive\r\n\r\n").unwrap();
    assert!(r.keep_alive());
    assert_eq!(
        String::from_utf8(r.forward_head_with(true)).unwrap(),
        "GET / HTTP/1.1\r\nHost: a.com\r\n\r\n"
    );
    assert!(
        !req("GET / HTTP/1.1\r\nHost: a\r\nConnection: x, close\r\n\r\n")
            .unwrap()
            .keep_alive()
    );
    let old = req("GET / HTTP/1.0\r\nHost: a\r\n\r\n").unwrap();
    assert!(!old.keep_alive());
    assert!(String::from_utf8(old.forward_head_with(true))
        .unwrap()
        .ends_with("Connection: close\r\n\r\n"));
}
