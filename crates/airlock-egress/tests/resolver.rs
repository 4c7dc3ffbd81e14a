//! The real UDP resolver against a test DNS server on loopback, and the sandbox's DNS answerer
//! on top of it.
#![allow(clippy::unwrap_used)]

mod common;

use airlock_egress::{dns, Resolver, UdpResolver};
use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn zone() -> Zone {
    let mut z = Zone::default();
    z.a.insert("web.test.".into(), ips(&["198.18.0.10", "2001:db8::10"]));
    z.a.insert("final.test.".into(), ips(&["198.18.0.11"]));
    z.cname.insert("alias.test.".into(), "middle.test.".into());
    z.cname.insert("middle.test.".into(), "final.test.".into());
    z.a.insert("loop.rebind.test.".into(), ips(&["127.0.0.1"]));
    z.a.insert("meta.rebind.test.".into(), ips(&["169.254.169.254"]));
    z.a.insert("private.rebind.test.".into(), ips(&["10.0.0.1"]));
    z.a.insert("v6.rebind.test.".into(), ips(&["::1", "fd00:ec2::254"]));
    z.a.insert("big.test.".into(), ips(&["198.18.0.12"]));
    z.truncate.push("big.test.".into());
    z.silent.push("slow.test.".into());
    z.a.insert("spoof.test.".into(), ips(&["198.18.0.13"]));
    z.spoof.push("spoof.test.".into());
    z
}

fn resolver(at: SocketAddr) -> UdpResolver {
    UdpResolver::new(vec![at], Duration::from_secs(2))
}

fn sorted(mut v: Vec<IpAddr>) -> Vec<IpAddr> {
    v.sort();
    v
}

#[test]
fn a_and_aaaa() {
    let (at, _) = dns_server(zone());
    assert_eq!(
        sorted(resolver(at).lookup("web.test").unwrap()),
        sorted(ips(&["198.18.0.10", "2001:db8::10"]))
    );
}

#[test]
fn cname_chain_is_followed() {
    let (at, _) = dns_server(zone());
    assert_eq!(
        resolver(at).lookup("alias.test").unwrap(),
        ips(&["198.18.0.11"])
    );
}

#[test]
fn nxdomain_is_not_found() {
    let (at, _) = dns_server(zone());
    assert_eq!(
        resolver(at).lookup("nothing.test").unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
}

#[test]
fn truncated_answers_retry_over_tcp() {
    let (at, _) = dns_server(zone());
    assert_eq!(
        resolver(at).lookup("big.test").unwrap(),
        ips(&["198.18.0.12"])
    );
}

#[test]
fn wrong_ids_are_ignored() {
    let (at, _) = dns_server(zone());
    assert_eq!(
        resolver(at).lookup("spoof.test").unwrap(),
        ips(&["198.18.0.13"])
    );
}

#[test]
fn silence_times_out_and_the_next_server_is_tried() {
    let (at, _) = dns_server(zone());
    let r = UdpResolver::new(vec![at], Duration::from_millis(300));
    let start = Instant::now();
    assert_eq!(
        r.lookup("slow.test").unwrap_err().kind(),
        io::ErrorKind::TimedOut
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    // A dead first server, a live second one.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let r = UdpResolver::new(
        vec![dead.local_addr().unwrap(), at],
        Duration::from_millis(300),
    );
    assert_eq!(r.lookup("final.test").unwrap(), ips(&["198.18.0.11"]));
}

#[test]
fn from_resolv_conf_reads_the_host() {
    // Only checks that it parses the file here; the machine's nameservers are not queried.
    match UdpResolver::from_resolv_conf() {
        Ok(r) => assert!(!r.upstream.is_empty()),
        Err(e) => eprintln!("no usable /etc/resolv.conf here: {e}"),
    }
}

fn ask(ctx: &airlock_egress::Ctx, name: &str, ty: RecordType) -> Message {
    Message::from_vec(&dns::answer(&dns::encode_query(77, name, ty).unwrap(), ctx)).unwrap()
}

/// The sandbox's DNS with the real resolver and the default floor: allowed names answered,
/// rebinding answers refused, others refused without reaching the upstream at all.
#[test]
fn sandbox_dns_over_the_real_resolver() {
    let (at, count) = dns_server(zone());
    let (ctx, buf) = ctx_with(
        &["web.test", "alias.test", "*.rebind.test"],
        &[443],
        Arc::new(resolver(at)),
        false,
    );
    let m = ask(&ctx, "web.test.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let got: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(got, ["198.18.0.10"]);
    let m = ask(&ctx, "alias.test.", RecordType::A);
    assert_eq!(m.answers.len(), 1);
    for name in [
        "loop.rebind.test.",
        "meta.rebind.test.",
        "private.rebind.test.",
        "v6.rebind.test.",
    ] {
        for ty in [RecordType::A, RecordType::AAAA] {
            let m = ask(&ctx, name, ty);
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::Refused,
                "{name} {ty}"
            );
            assert!(m.answers.is_empty());
        }
    }
    let before = count.load(Ordering::SeqCst);
    for (name, ty) in [
        ("evil.test.", RecordType::A),
        ("c2VjcmV0.evil.test.", RecordType::TXT),
        ("x.web.test.", RecordType::AAAA),
    ] {
        let m = ask(&ctx, name, ty);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        before,
        "a refused name reached the upstream"
    );
    let j = journal(&buf, 13);
    assert!(j.iter().all(|e| e["kind"] == "dns"));
    assert_eq!(j.iter().filter(|e| e["decision"] == "deny").count(), 11);
}

/// The DNS answerer over a real UDP socket, as the host side's loop drives it.
#[test]
fn answering_over_udp() {
    let (at, _) = dns_server(zone());
    let (ctx, _buf) = ctx_with(&["web.test"], &[443], Arc::new(resolver(at)), false);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sandbox_dns = sock.local_addr().unwrap();
    let c2 = ctx.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let reply = dns::answer(&buf[..n], &c2);
            if !reply.is_empty() {
                let _ = sock.send_to(&reply, from);
            }
        }
    });
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(T)).unwrap();
    client.connect(sandbox_dns).unwrap();
    client
        .send(&dns::encode_query(5, "web.test.", RecordType::AAAA).unwrap())
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = client.recv(&mut buf).unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, 5);
    assert_eq!(m.answers.len(), 1);
    client
        .send(&dns::encode_query(6, "exfil.evil.test.", RecordType::TXT).unwrap())
        .unwrap();
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(
        Message::from_vec(&buf[..n]).unwrap().metadata.response_code,
        ResponseCode::Refused
    );
    let _ = std::io::stdout().flush();
}
