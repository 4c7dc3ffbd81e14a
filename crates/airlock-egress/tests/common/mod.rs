//! Loopback fixtures: upstream servers, a DNS server, and "sandbox listeners" that hand each
//! accepted connection to the proxy the way the host side does.
#![allow(dead_code, clippy::unwrap_used)]

use airlock_egress::addr;
use airlock_egress::journal::SharedBuf;
use airlock_egress::{Ctx, EgressPolicy, Journal, Resolver, StaticResolver};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub const T: Duration = Duration::from_secs(10);

/// The address floor with 127.0.0.1 let through, so relays can be tested on loopback. Every
/// other forbidden address stays forbidden.
pub fn loopback_floor(ip: IpAddr) -> Option<&'static str> {
    if ip == IpAddr::V4(Ipv4Addr::LOCALHOST) {
        None
    } else {
        addr::forbidden(ip)
    }
}

pub fn loopback() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// A Ctx for loopback tests: `names` resolve to 127.0.0.1, the floor lets 127.0.0.1 through.
pub fn test_ctx(domains: &[&str], ports: &[u16], names: &[&str]) -> (Arc<Ctx>, SharedBuf) {
    let resolver = StaticResolver::new(names.iter().map(|n| (*n, vec![loopback()])));
    ctx_with(domains, ports, Arc::new(resolver), true)
}

pub fn ctx_with(
    domains: &[&str],
    ports: &[u16],
    resolver: Arc<dyn Resolver>,
    loopback_ok: bool,
) -> (Arc<Ctx>, SharedBuf) {
    let buf = SharedBuf::default();
    let mut ctx = Ctx::new(
        EgressPolicy::new(domains, ports).unwrap(),
        resolver,
        Journal::new(buf.clone()),
    );
    ctx.connect_timeout = Duration::from_secs(3);
    ctx.inspect_timeout = Duration::from_secs(3);
    if loopback_ok {
        ctx.forbidden = loopback_floor;
    }
    (Arc::new(ctx), buf)
}

/// Parsed journal lines, waiting briefly for at least `n` of them (the proxy thread writes
/// them).
pub fn journal(buf: &SharedBuf, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + T;
    loop {
        let lines = buf.lines();
        if lines.len() >= n || Instant::now() > deadline {
            return lines
                .iter()
                .map(|l| serde_json::from_str(l).expect("journal line is JSON"))
                .collect();
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A listener standing in for the sandbox's transparent listener: each connection goes to
/// `serve_transparent` with the given (fake) destination.
pub fn transparent(ctx: &Arc<Ctx>, dst: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    let ctx = ctx.clone();
    thread::spawn(move || {
        for c in l.incoming().flatten() {
            let ctx = ctx.clone();
            thread::spawn(move || airlock_egress::proxy::serve_transparent(c, dst, &ctx));
        }
    });
    at
}

/// The explicit proxy listener.
pub fn explicit(ctx: &Arc<Ctx>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    let ctx = ctx.clone();
    thread::spawn(move || {
        for c in l.incoming().flatten() {
            let ctx = ctx.clone();
            thread::spawn(move || airlock_egress::proxy::serve_explicit(c, &ctx));
        }
    });
    at
}

pub fn dial(at: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&at, T).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.set_write_timeout(Some(T)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Read until EOF (or error), bounded by the socket's timeout.
pub fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// An upstream HTTP server: reads one request head (and a Content-Length or chunked body,
/// byte-for-byte), answers `200` with a body naming the path, and closes. Every raw request
/// received is sent on the channel.
pub fn http_server() -> (u16, Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = channel();
    thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let tx = tx.clone();
            thread::spawn(move || {
                c.set_read_timeout(Some(T)).unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            let _ = tx.send(got);
                            return;
                        }
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&got[..head_end]).to_string();
                let lower = head.to_ascii_lowercase();
                let want = if let Some(i) = lower.find("content-length: ") {
                    let v: String = lower[i + 16..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    head_end + v.parse::<usize>().unwrap()
                } else {
                    head_end
                };
                let chunked = lower.contains("transfer-encoding: chunked");
                while (chunked && !got[head_end..].ends_with(b"0\r\n\r\n"))
                    || (!chunked && got.len() < want)
                {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let path = head.split(' ').nth(1).unwrap_or("?").to_string();
                let body = format!("hello from upstream: {path}");
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = c.shutdown(Shutdown::Write);
                // Anything else the proxy sends (it should send nothing) is recorded too.
                c.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let _ = tx.send(got);
            });
        }
    });
    (port, rx)
}

/// An upstream "TLS" server: sends `server-hello|` at once, echoes everything, and on EOF
/// writes `|bye` and closes. The bytes it received are sent on the channel.
pub fn tls_server() -> (u16, Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = channel();
    thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let tx = tx.clone();
            thread::spawn(move || {
                c.set_read_timeout(Some(T)).unwrap();
                let _ = c.write_all(b"server-hello|");
                let mut got = Vec::new();
                let mut buf = [0u8; 65536];
                loop {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            got.extend_from_slice(&buf[..n]);
                            if c.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = c.write_all(b"|bye");
                let _ = c.shutdown(Shutdown::Write);
                let _ = tx.send(got);
            });
        }
    });
    (port, rx)
}

/// What the test DNS server knows.
#[derive(Clone, Default)]
pub struct Zone {
    pub a: HashMap<String, Vec<IpAddr>>,
    pub cname: HashMap<String, String>,
    /// Names answered with TC over UDP and fully over TCP.
    pub truncate: Vec<String>,
    /// Names never answered.
    pub silent: Vec<String>,
    /// Names whose first UDP reply carries a wrong id (a spoofing attempt).
    pub spoof: Vec<String>,
}

fn fqdn(n: &str) -> String {
    let n = n.to_ascii_lowercase();
    if n.ends_with('.') {
        n
    } else {
        format!("{n}.")
    }
}

fn reply(zone: &Zone, query: &Message) -> Message {
    let mut resp = Message::response(query.metadata.id, query.metadata.op_code);
    resp.metadata.recursion_available = true;
    let q = &query.queries[0];
    resp.add_query(q.clone());
    let mut name = fqdn(&q.name().to_ascii());
    let mut found = false;
    for _ in 0..10 {
        if let Some(target) = zone.cname.get(&name) {
            resp.add_answer(Record::from_rdata(
                Name::from_ascii(&name).unwrap(),
                60,
                RData::CNAME(CNAME(Name::from_ascii(target).unwrap())),
            ));
            name = fqdn(target);
            found = true;
            continue;
        }
        if let Some(ips) = zone.a.get(&name) {
            found = true;
            for ip in ips {
                let data = match (ip, q.query_type()) {
                    (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                    (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                    _ => continue,
                };
                resp.add_answer(Record::from_rdata(
                    Name::from_ascii(&name).unwrap(),
                    60,
                    data,
                ));
            }
        }
        break;
    }
    if !found {
        resp.metadata.response_code = ResponseCode::NXDomain;
    }
    resp
}

/// A DNS server on 127.0.0.1 (UDP, and TCP on the same port for truncated answers). Returns
/// its address and a counter of questions received.
pub fn dns_server(zone: Zone) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(at).unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let (z, c) = (zone.clone(), count.clone());
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            c.fetch_add(1, Ordering::SeqCst);
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if q.metadata.message_type != MessageType::Query || q.queries.len() != 1 {
                continue;
            }
            let name = fqdn(&q.queries[0].name().to_ascii());
            if z.silent.iter().any(|s| fqdn(s) == name) {
                continue;
            }
            if z.spoof.iter().any(|s| fqdn(s) == name) {
                let mut fake = reply(&z, &q);
                fake.metadata.id = q.metadata.id.wrapping_add(1);
                fake.answers.clear();
                fake.add_answer(Record::from_rdata(
                    Name::from_ascii(&name).unwrap(),
                    60,
                    RData::A(A(Ipv4Addr::new(6, 6, 6, 6))),
                ));
                let _ = udp.send_to(&fake.to_vec().unwrap(), from);
            }
            let mut r = reply(&z, &q);
            if z.truncate.iter().any(|s| fqdn(s) == name) {
                r.answers.clear();
                r.metadata.truncation = true;
            }
            let _ = udp.send_to(&r.to_vec().unwrap(), from);
        }
    });
    thread::spawn(move || {
        for mut s in tcp.incoming().flatten() {
            s.set_read_timeout(Some(T)).unwrap();
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).is_err() {
                continue;
            }
            let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if s.read_exact(&mut q).is_err() {
                continue;
            }
            let Ok(q) = Message::from_vec(&q) else {
                continue;
            };
            let r = reply(&zone, &q).to_vec().unwrap();
            let mut out = (r.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(&r);
            let _ = s.write_all(&out);
        }
    });
    (at, count)
}
