use super::*;
use crate::http;
use proptest::prelude::*;

const KEY: &str = "sk-real-KEY-0123456789";
const TOKEN: &str = "ghp_realtoken";

fn secrets() -> Secrets {
    Secrets::new(vec![
        Binding::new(
            "ANTHROPIC_API_KEY",
            KEY.into(),
            &["api.anthropic.com".into()],
            At::Header("x-api-key".into()),
        )
        .unwrap(),
        Binding::new(
            "GH_TOKEN",
            TOKEN.into(),
            &["api.github.com".into()],
            At::Bearer,
        )
        .unwrap(),
        Binding::new(
            "PASS",
            "hunter2".into(),
            &["registry.example.org".into()],
            At::Basic,
        )
        .unwrap(),
        Binding::new(
            "MAPS",
            "k/ey+1".into(),
            &["maps.example.org".into()],
            At::Query("key".into()),
        )
        .unwrap(),
    ])
}

fn ph(s: &Secrets, name: &str) -> String {
    s.bindings()
        .iter()
        .find(|b| b.name == name)
        .unwrap()
        .placeholder
        .clone()
}

fn req(text: &str) -> http::Request {
    http::parse(text.as_bytes()).unwrap()
}

fn head(r: &http::Request) -> String {
    String::from_utf8(r.forward_head()).unwrap()
}

#[test]
fn placeholders_are_unique_and_random() {
    let a = placeholder().unwrap();
    let b = placeholder().unwrap();
    assert_ne!(a, b);
    assert!(a.starts_with("airlock-placeholder-") && a.len() == 20 + 32);
}

#[test]
fn a_wire_binding_keeps_its_placeholder_and_is_checked_again() {
    let b = Binding::new("K", KEY.into(), &["API.Test".into()], At::Bearer).unwrap();
    let json = serde_json::to_string(&b.to_wire()).unwrap();
    let back = Binding::from_wire(serde_json::from_str(&json).unwrap()).unwrap();
    assert_eq!(back.placeholder, b.placeholder);
    assert_eq!(back.hosts, ["api.test"]);
    assert_eq!(back.at, At::Bearer);
    let s = Secrets::new(vec![back]);
    let r = req(&format!(
        "GET / HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer {}\r\n\r\n",
        b.placeholder
    ));
    let (out, _) = s.rewrite(&r, "api.test").unwrap();
    assert!(head(&out).contains(&format!("Bearer {KEY}")));
    // What the receiving side refuses: a made-up placeholder (it could be a prefix of another
    // or of ordinary text), a value that could end a header line, a wildcard host.
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["placeholder"] = "x".into();
    let e = Binding::from_wire(serde_json::from_value(v.clone()).unwrap());
    assert_eq!(e.unwrap_err(), BindError::BadPlaceholder("K".into()));
    v["placeholder"] = b.placeholder.clone().into();
    v["value"] = "a\r\nx: y".into();
    let e = Binding::from_wire(serde_json::from_value(v.clone()).unwrap());
    assert_eq!(e.unwrap_err(), BindError::BadValue("K".into()));
    v["value"] = "ok".into();
    v["hosts"] = serde_json::json!(["*.test"]);
    assert!(Binding::from_wire(serde_json::from_value(v).unwrap()).is_err());
}

#[test]
fn header_is_swapped_for_the_bound_host_only_there() {
    let s = secrets();
    let p = ph(&s, "ANTHROPIC_API_KEY");
    let r = req(&format!(
        "POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nx-api-key: {p}\r\nx-other: {p}\r\n\r\n"
    ));
    let (out, inj) = s.rewrite(&r, "api.anthropic.com").unwrap();
    let h = head(&out);
    assert!(h.contains(&format!("x-api-key: {KEY}\r\n")), "{h}");
    // Only the configured header gets the value.
    assert!(h.contains(&format!("x-other: {p}\r\n")), "{h}");
    assert_eq!(
        inj,
        vec![Injected {
            secret: "ANTHROPIC_API_KEY".into(),
            at: "header x-api-key".into()
        }]
    );
}

#[test]
fn bearer_basic_and_query() {
    let s = secrets();
    let g = ph(&s, "GH_TOKEN");
    let r = req(&format!(
        "GET /user HTTP/1.1\r\nHost: api.github.com\r\nAuthorization: Bearer {g}\r\n\r\n"
    ));
    let (out, _) = s.rewrite(&r, "api.github.com").unwrap();
    assert!(head(&out).contains(&format!("Authorization: Bearer {TOKEN}\r\n")));

    let b = ph(&s, "PASS");
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("me:{b}"));
    let r = req(&format!(
        "GET / HTTP/1.1\r\nHost: registry.example.org\r\nAuthorization: Basic {enc}\r\n\r\n"
    ));
    let (out, inj) = s.rewrite(&r, "registry.example.org").unwrap();
    let want = base64::engine::general_purpose::STANDARD.encode("me:hunter2");
    assert!(head(&out).contains(&format!("Authorization: Basic {want}\r\n")));
    assert_eq!(inj.len(), 1);

    let m = ph(&s, "MAPS");
    let r = req(&format!(
        "GET /geo?a=1&key={m}&b=2 HTTP/1.1\r\nHost: maps.example.org\r\n\r\n"
    ));
    let (out, _) = s.rewrite(&r, "maps.example.org").unwrap();
    assert!(head(&out).starts_with("GET /geo?a=1&key=k%2Fey%2B1&b=2 HTTP/1.1\r\n"));
}

#[test]
fn a_placeholder_for_another_host_is_a_leak_wherever_it_is() {
    let s = secrets();
    let p = ph(&s, "ANTHROPIC_API_KEY");
    for text in [
        format!("GET /?q={p} HTTP/1.1\r\nHost: api.github.com\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: api.github.com\r\nx-api-key: {p}\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: api.github.com\r\nCookie: a=x{p}y\r\n\r\n"),
        format!(
            "GET / HTTP/1.1\r\nHost: api.github.com\r\nAuthorization: Basic {}\r\n\r\n",
            base64::engine::general_purpose::STANDARD.encode(format!("u:{p}"))
        ),
    ] {
        let l = s.rewrite(&req(&text), "api.github.com").unwrap_err();
        assert_eq!(l.secret, "ANTHROPIC_API_KEY", "{text}");
        assert_eq!(l.bound, vec!["api.anthropic.com".to_string()]);
    }
    // In plain HTTP every placeholder is a leak, even to its own host.
    let text = format!("GET / HTTP/1.1\r\nHost: api.anthropic.com\r\nx-api-key: {p}\r\n\r\n");
    assert!(s.check_plain(&req(&text)).is_err());
}

#[test]
fn body_scan_finds_a_placeholder_split_across_reads() {
    let s = secrets();
    let p = ph(&s, "GH_TOKEN");
    let body = format!("{{\"x\": \"{p}\"}}");
    let (a, b) = body.as_bytes().split_at(20);
    let mut scan = BodyScan::new(&s, Some("api.anthropic.com"));
    scan.feed(a).unwrap();
    assert_eq!(scan.feed(b).unwrap_err().secret, "GH_TOKEN");
    // Its own host may get it in a body (it is not swapped there).
    let mut scan = BodyScan::new(&s, Some("api.github.com"));
    scan.feed(a).unwrap();
    scan.feed(b).unwrap();
}

#[test]
fn bad_bindings_are_refused() {
    let at = || At::Header("x".into());
    assert!(matches!(
        Binding::new("A", "v".into(), &[], at()),
        Err(BindError::NoHosts(_))
    ));
    assert!(matches!(
        Binding::new("A", "v".into(), &["*.x.com".into()], at()),
        Err(BindError::BadHost { .. })
    ));
    assert!(matches!(
        Binding::new("A", "v\r\nEvil: 1".into(), &["x.com".into()], at()),
        Err(BindError::BadValue(_))
    ));
}

#[test]
fn debug_never_shows_a_value() {
    let s = secrets();
    let d = format!("{s:?}");
    assert!(
        !d.contains(KEY) && !d.contains(TOKEN) && !d.contains("hunter2"),
        "{d}"
    );
}

fn hosts() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "api.anthropic.com",
        "api.github.com",
        "registry.example.org",
        "maps.example.org",
        "evil.example.com",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any request head: parsing and rewriting never panic, and whatever is forwarded to a
    /// host carries no value of a secret not bound to it, nor a placeholder of one.
    #[test]
    fn rewrite_never_sends_a_secret_elsewhere(
        host in hosts(),
        method in prop::sample::select(vec!["GET", "POST", "PUT", "OPTIONS"]),
        path in "/[a-zA-Z0-9/?=&%._-]{0,40}",
        headers in prop::collection::vec(
            (prop::sample::select(vec!["x-api-key", "Authorization", "Cookie", "X-Other", "Host", "Content-Length", "Transfer-Encoding"]),
             "[ -~]{0,30}",
             prop::sample::select(vec![None, Some(0usize), Some(1), Some(2), Some(3)]),
             prop::sample::select(vec!["", "Bearer ", "Basic "])),
            0..6),
        tail in prop::collection::vec(any::<u8>(), 0..64),
        junk in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let s = secrets();
        let names = ["ANTHROPIC_API_KEY", "GH_TOKEN", "PASS", "MAPS"];
        let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
        for (name, value, put, scheme) in &headers {
            let mut v = value.clone();
            if let Some(i) = put {
                let p = ph(&s, names[*i]);
                v = if *scheme == "Basic " {
                    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("u:{p}")))
                } else {
                    format!("{scheme}{p}")
                };
            }
            text.extend_from_slice(format!("{name}: {v}\r\n").as_bytes());
        }
        text.extend_from_slice(b"\r\n");
        text.extend_from_slice(&tail);
        // Arbitrary bytes too: the parser and the rewrite must not panic on them.
        let _ = http::parse(&junk).map(|r| s.rewrite(&r, host));
        if let Ok(r) = http::parse(&text) {
            match s.rewrite(&r, host) {
                Ok((out, inj)) => {
                    let fwd = out.forward_head();
                    for b in s.bindings() {
                        if b.hosts.iter().any(|h| h == host) {
                            continue;
                        }
                        prop_assert!(!contains(&fwd, b.placeholder.as_bytes()));
                        prop_assert!(!contains(&fwd, b.value.as_bytes()));
                        prop_assert!(!inj.iter().any(|i| i.secret == b.name));
                    }
                }
                Err(l) => {
                    let b = s.bindings().iter().find(|b| b.name == l.secret).unwrap();
                    prop_assert!(!b.hosts.iter().any(|h| h == host));
                }
            }
        }
    }
}

/// Feed `stream` the way the intercepted path does (reads of arbitrary sizes): a framer says
/// how much of each read is body, a [`BodyCheck`] looks for placeholders. Returns the bytes
/// taken as body (`None` if the framer refused) and the first leak the check reported.
fn feed_split(
    s: &Secrets,
    host: &str,
    len: http::BodyLength,
    stream: &[u8],
    cuts: &[usize],
) -> (Option<usize>, Option<Leak>) {
    let mut framer = http::body::BodyFramer::new(len);
    let mut check = BodyCheck::new(s, Some(host), len);
    let mut taken = 0;
    let mut leak = None;
    let mut at = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.push(stream.len());
    points.sort_unstable();
    for p in points {
        if framer.done() {
            break;
        }
        let piece = &stream[at..p];
        at = p;
        let Ok(take) = framer.feed(piece) else {
            return (None, leak);
        };
        if leak.is_none() {
            match check.feed(piece) {
                Ok(t) => assert_eq!(t, take),
                Err(BodyStop::Leak(l)) => leak = Some(l),
                Err(BodyStop::Malformed(e)) => panic!("the framer took it: {e}"),
            }
        }
        taken += take;
    }
    (framer.done().then_some(taken), leak)
}

/// `body` as a chunked stream, cut into chunks at `cuts`.
fn chunked(body: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    points.push(body.len());
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut at = 0;
    for p in points {
        if p > at {
            out.extend_from_slice(format!("{:x}\r\n", p - at).as_bytes());
            out.extend_from_slice(&body[at..p]);
            out.extend_from_slice(b"\r\n");
        }
        at = p;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[test]
fn body_check_finds_a_placeholder_split_across_chunks() {
    let s = secrets();
    let p = ph(&s, "GH_TOKEN");
    let body = format!("{{\"x\": \"{p}\"}}");
    let stream = chunked(body.as_bytes(), &[20]);
    assert!(!contains(&stream, p.as_bytes()));
    // In one read, and with the reads cut where the chunks are.
    for cuts in [vec![], vec![22], vec![10, 25, 30]] {
        let (_, leak) = feed_split(
            &s,
            "api.anthropic.com",
            http::BodyLength::Chunked,
            &stream,
            &cuts,
        );
        assert_eq!(leak.unwrap().secret, "GH_TOKEN", "{cuts:?}");
    }
    // Its own host may get it.
    let (taken, leak) = feed_split(
        &s,
        "api.github.com",
        http::BodyLength::Chunked,
        &stream,
        &[22],
    );
    assert_eq!((taken, leak), (Some(stream.len()), None));
}

#[test]
fn body_check_still_sees_chunk_extensions_and_trailers() {
    let s = secrets();
    let p = ph(&s, "GH_TOKEN");
    for stream in [
        format!("3;x={p}\r\nabc\r\n0\r\n\r\n"),
        format!("3\r\nabc\r\n0\r\nx-t: {p}\r\n\r\n"),
    ] {
        let (_, leak) = feed_split(
            &s,
            "api.anthropic.com",
            http::BodyLength::Chunked,
            stream.as_bytes(),
            &[7],
        );
        assert_eq!(leak.unwrap().secret, "GH_TOKEN", "{stream}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// A request body read in arbitrary pieces: where it ends does not depend on how it was
    /// split (the next pipelined request starts at the same byte), and a placeholder of a
    /// secret not bound to the host is found wherever the reads split it.
    #[test]
    fn body_framing_and_scanning_do_not_depend_on_read_sizes(
        host in hosts(),
        secret in prop::sample::select(vec![None, Some("ANTHROPIC_API_KEY"), Some("GH_TOKEN"), Some("PASS"), Some("MAPS")]),
        before in prop::collection::vec(any::<u8>(), 0..300),
        after in prop::collection::vec(any::<u8>(), 0..300),
        next in prop::collection::vec(any::<u8>(), 0..40),
        cuts_a in prop::collection::vec(any::<usize>(), 0..12),
        cuts_b in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let s = secrets();
        let mut body = before.clone();
        if let Some(name) = secret {
            body.extend_from_slice(ph(&s, name).as_bytes());
        }
        body.extend_from_slice(&after);
        let mut stream = body.clone();
        stream.extend_from_slice(&next);
        let len = http::BodyLength::Length(body.len() as u64);
        let (ta, la) = feed_split(&s, host, len, &stream, &cuts_a);
        let (tb, lb) = feed_split(&s, host, len, &stream, &cuts_b);
        prop_assert_eq!(ta, Some(body.len()));
        prop_assert_eq!(tb, Some(body.len()));
        // Found in one split iff in the other, and iff the body holds a placeholder that must
        // not go to this host.
        let must = s.leak_in(&body, Some(host), "body").map(|l| l.secret);
        prop_assert_eq!(la.map(|l| l.secret), must.clone());
        prop_assert_eq!(lb.map(|l| l.secret), must);
    }

    /// A chunked body cut into chunks anywhere and read in pieces cut anywhere: a placeholder
    /// of a secret not bound to the host is found however the chunks and reads split it.
    #[test]
    fn chunked_scanning_does_not_depend_on_chunk_or_read_sizes(
        host in hosts(),
        secret in prop::sample::select(vec![None, Some("ANTHROPIC_API_KEY"), Some("GH_TOKEN"), Some("PASS"), Some("MAPS")]),
        before in prop::collection::vec(any::<u8>(), 0..200),
        after in prop::collection::vec(any::<u8>(), 0..200),
        chunk_cuts in prop::collection::vec(any::<usize>(), 0..10),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let s = secrets();
        let mut body = before.clone();
        if let Some(name) = secret {
            body.extend_from_slice(ph(&s, name).as_bytes());
        }
        body.extend_from_slice(&after);
        let stream = chunked(&body, &chunk_cuts);
        let (taken, leak) = feed_split(&s, host, http::BodyLength::Chunked, &stream, &cuts);
        let must = s.leak_in(&body, Some(host), "body").map(|l| l.secret);
        if must.is_none() {
            prop_assert_eq!(taken, Some(stream.len()));
        }
        prop_assert_eq!(leak.map(|l| l.secret), must);
    }

    /// Arbitrary bytes as a chunked body, split two ways: both accept the same prefix or both
    /// refuse; never a panic.
    #[test]
    fn chunked_framing_does_not_depend_on_read_sizes(
        host in hosts(),
        chunks in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..64), any::<bool>()), 0..6),
        junk in prop::collection::vec(any::<u8>(), 0..40),
        cuts_a in prop::collection::vec(any::<usize>(), 0..12),
        cuts_b in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let s = secrets();
        let mut stream = Vec::new();
        for (c, upper) in &chunks {
            let size = if *upper { format!("{:X}", c.len()) } else { format!("{:x}", c.len()) };
            stream.extend_from_slice(size.as_bytes());
            stream.extend_from_slice(b"\r\n");
            stream.extend_from_slice(c);
            stream.extend_from_slice(b"\r\n");
        }
        // Well-formed streams end with the last chunk; otherwise the junk is read as framing.
        if !junk.is_empty() && junk[0] % 2 == 0 {
            stream.extend_from_slice(&junk);
        } else {
            stream.extend_from_slice(b"0\r\n\r\n");
            stream.extend_from_slice(&junk);
        }
        let (ta, _) = feed_split(&s, host, http::BodyLength::Chunked, &stream, &cuts_a);
        let (tb, _) = feed_split(&s, host, http::BodyLength::Chunked, &stream, &cuts_b);
        prop_assert_eq!(ta, tb);
    }
}
