use super::*;
use crate::journal::SharedBuf;
use crate::policy::EgressPolicy;
use crate::resolve::{Resolver, StaticResolver};
use std::sync::Arc;

fn ctx(buf: &SharedBuf) -> Ctx {
    let resolver = StaticResolver::new([
        (
            "github.com",
            vec![
                "140.82.112.3".parse().unwrap(),
                "2606:50c0::1".parse().unwrap(),
            ],
        ),
        (
            "rebind.example.com",
            vec![
                "127.0.0.1".parse().unwrap(),
                "10.0.0.1".parse().unwrap(),
                "169.254.169.254".parse().unwrap(),
            ],
        ),
        (
            "mixed.example.com",
            vec!["10.1.1.1".parse().unwrap(), "198.18.0.7".parse().unwrap()],
        ),
    ]);
    let policy = EgressPolicy::new(
        &["github.com", "*.example.com", "metadata.google.internal"],
        &[443],
    )
    .unwrap();
    Ctx::new(policy, Arc::new(resolver), Journal::new(buf.clone()))
}

use crate::journal::Journal;

fn ask(ctx: &Ctx, name: &str, ty: RecordType) -> Message {
    let q = encode_query(0x4242, name, ty).unwrap();
    Message::from_vec(&answer(&q, ctx)).unwrap()
}

fn addrs(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0.to_string(),
            RData::AAAA(a) => a.0.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn allowed_names_are_answered() {
    let buf = SharedBuf::default();
    let c = ctx(&buf);
    let m = ask(&c, "github.com.", RecordType::A);
    assert_eq!(m.metadata.id, 0x4242);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.queries.len(), 1);
    assert_eq!(addrs(&m), ["140.82.112.3"]);
    assert_eq!(m.answers[0].ttl, 5);
    let m = ask(&c, "GitHub.COM.", RecordType::AAAA);
    assert_eq!(addrs(&m), ["2606:50c0::1"]);
    let lines = buf.lines();
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["kind"], "dns");
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["qtype"], "A");
    assert_eq!(v["ip"][0], "140.82.112.3");
}

#[test]
fn other_names_are_refused_without_asking() {
    struct Panicky;
    impl Resolver for Panicky {
        fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
            panic!("resolver asked about {host}");
        }
    }
    let buf = SharedBuf::default();
    let mut c = ctx(&buf);
    c.resolver = Arc::new(Panicky);
    for (name, ty) in [
        ("evil.com.", RecordType::A),
        ("aGVsbG8gd29ybGQ.exfil.evil.com.", RecordType::TXT),
        ("c2VjcmV0.evil.com.", RecordType::AAAA),
        ("example.com.", RecordType::A),
        ("metadata.google.internal.", RecordType::A),
        ("metadata.", RecordType::A),
        ("wpad.", RecordType::A),
        ("x.local.", RecordType::A),
        ("1.0.0.127.in-addr.arpa.", RecordType::PTR),
    ] {
        let m = ask(&c, name, ty);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name}");
        assert!(m.answers.is_empty());
    }
    let lines = buf.lines();
    assert_eq!(lines.len(), 9);
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["host"], "evil.com");
    assert_eq!(
        v["fix"],
        "add `--allow evil.com` or `[network] domains = [\"evil.com\"]`"
    );
    let v: serde_json::Value = serde_json::from_str(&lines[4]).unwrap();
    assert!(v["reason"].as_str().unwrap().contains("metadata"));
}

#[test]
fn other_types_get_empty_answers() {
    let buf = SharedBuf::default();
    let c = ctx(&buf);
    for ty in [
        RecordType::TXT,
        RecordType::MX,
        RecordType::HTTPS,
        RecordType::ANY,
        RecordType::CNAME,
    ] {
        let m = ask(&c, "github.com.", ty);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{ty}");
        assert!(m.answers.is_empty());
    }
}

#[test]
fn rebinding_answers_are_dropped() {
    let buf = SharedBuf::default();
    let c = ctx(&buf);
    let m = ask(&c, "rebind.example.com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(m.answers.is_empty());
    let line = buf.lines().pop().unwrap();
    assert!(line.contains("forbidden addresses"), "{line}");
    assert!(line.contains("169.254.169.254"), "{line}");
    let m = ask(&c, "mixed.example.com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs(&m), ["198.18.0.7"]);
}

#[test]
fn unknown_upstream_name_is_nxdomain() {
    let buf = SharedBuf::default();
    let c = ctx(&buf);
    let m = ask(&c, "nope.example.com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn malformed_and_odd_queries() {
    let buf = SharedBuf::default();
    let c = ctx(&buf);
    // Too short to answer: dropped.
    assert!(answer(&[1, 2, 3], &c).is_empty());
    // A response is never answered (no loops).
    let mut resp = encode_query(7, "github.com.", RecordType::A).unwrap();
    resp[2] |= 0x80;
    assert!(answer(&resp, &c).is_empty());
    // Header says one question, none follows: FORMERR with the id.
    let bad = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'e'];
    let r = answer(&bad, &c);
    assert_eq!(r.len(), 12);
    assert_eq!(&r[..2], &[0x12, 0x34]);
    assert_eq!(r[2] & 0x80, 0x80);
    assert_eq!(r[3] & 0x0f, 1);
    // Two questions: FORMERR.
    let mut m = Message::query();
    m.metadata.id = 9;
    m.add_query(hickory_proto::op::Query::query(
        Name::from_ascii("github.com.").unwrap(),
        RecordType::A,
    ));
    m.add_query(hickory_proto::op::Query::query(
        Name::from_ascii("evil.com.").unwrap(),
        RecordType::A,
    ));
    let r = Message::from_vec(&answer(&m.to_vec().unwrap(), &c)).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    // Binary labels never match a policy name.
    let mut m = Message::query();
    m.metadata.id = 10;
    let name = Name::from_labels(vec![&b"git\0hub"[..], b"com"]).unwrap();
    m.add_query(hickory_proto::op::Query::query(name, RecordType::A));
    let r = Message::from_vec(&answer(&m.to_vec().unwrap(), &c)).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    let mut m = Message::query();
    m.metadata.id = 11;
    let name = Name::from_labels(vec![&b"github.com"[..]]).unwrap();
    m.add_query(hickory_proto::op::Query::query(name, RecordType::A));
    let r = Message::from_vec(&answer(&m.to_vec().unwrap(), &c)).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    // Random bytes never panic.
    let mut x: u32 = 99;
    for _ in 0..3000 {
        let mut q = vec![0u8; 40];
        for b in &mut q {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
        q[2] &= 0x7f;
        let _ = answer(&q, &c);
    }
}
