//! Resolving allowed names on the host side. The upstream is a boundary, so it is a trait: the
//! real [`UdpResolver`] (the host's nameservers, or any configured upstream such as a test
//! server) and [`StaticResolver`] for tests.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Turns a (normalized, allowed) host name into addresses. Callers filter the answers with
/// [`crate::addr::forbidden`]; a resolver just reports what the upstream said.
pub trait Resolver: Send + Sync {
    /// All A and AAAA addresses of `host`. A name that does not exist is
    /// `io::ErrorKind::NotFound`.
    fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>>;
}

/// Fixed answers, for tests and for pinning names.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    pub names: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, Vec<IpAddr>)>) -> Self {
        Self {
            names: entries
                .into_iter()
                .map(|(n, ips)| (n.to_ascii_lowercase(), ips))
                .collect(),
        }
    }
}

impl Resolver for StaticResolver {
    fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        self.names.get(host).cloned().ok_or_else(|| not_found(host))
    }
}

fn not_found(host: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{host}: no such name"))
}

/// Remembers answers for a short time, so the DNS answer the sandbox got and the connection
/// that follows it cost one upstream lookup, and see the same addresses. Failures are not
/// remembered. Every use still goes through the address floor.
pub struct CachingResolver {
    inner: Arc<dyn Resolver>,
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Vec<IpAddr>)>>,
}

/// Most names remembered at once (the oldest half is dropped beyond that).
const CACHE_MAX: usize = 4096;

impl CachingResolver {
    pub fn new(inner: Arc<dyn Resolver>, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl Resolver for CachingResolver {
    fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let now = Instant::now();
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, ips)) = entries.get(host) {
                if now.duration_since(*at) < self.ttl {
                    return Ok(ips.clone());
                }
            }
        }
        let ips = self.inner.lookup(host)?;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CACHE_MAX {
            entries.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
            if entries.len() >= CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(host.to_string(), (now, ips.clone()));
        Ok(ips)
    }
}

/// Asks upstream nameservers over UDP (TCP when an answer is truncated), A and AAAA in
/// parallel, following CNAME chains within the answer.
#[derive(Debug, Clone)]
pub struct UdpResolver {
    pub upstream: Vec<SocketAddr>,
    /// Per upstream server, for both queries together.
    pub timeout: Duration,
}

/// Longest CNAME chain followed.
const MAX_CNAME: usize = 8;

impl UdpResolver {
    pub fn new(upstream: Vec<SocketAddr>, timeout: Duration) -> Self {
        Self { upstream, timeout }
    }

    /// The host's nameservers from `/etc/resolv.conf`.
    pub fn from_resolv_conf() -> io::Result<Self> {
        let text = std::fs::read_to_string("/etc/resolv.conf")?;
        let upstream = parse_resolv_conf(&text);
        if upstream.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no nameserver in /etc/resolv.conf",
            ));
        }
        Ok(Self {
            upstream,
            timeout: Duration::from_secs(3),
        })
    }

    fn query_one(&self, server: SocketAddr, name: &Name) -> io::Result<Vec<IpAddr>> {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .map_err(io::Error::other)?;
        let sock = UdpSocket::bind(bind)?;
        sock.connect(server)?;
        let deadline = Instant::now() + self.timeout;
        let mut pending: Vec<(u16, RecordType)> = Vec::new();
        for ty in [RecordType::A, RecordType::AAAA] {
            let id = random_u16();
            sock.send(&encode_query(id, name, ty)?)?;
            pending.push((id, ty));
        }
        let mut addrs = Vec::new();
        let mut buf = [0u8; 4096];
        let mut nxdomain = 0;
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{server}: no answer for {name}"),
                ));
            }
            sock.set_read_timeout(Some(left))?;
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            let Ok(msg) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(i) = pending
                .iter()
                .position(|(id, ty)| msg.metadata.id == *id && matches_question(&msg, name, *ty))
            else {
                continue;
            };
            let (id, ty) = pending.swap_remove(i);
            let msg = if msg.metadata.truncation {
                self.query_tcp(server, id, name, ty)?
            } else {
                msg
            };
            match msg.metadata.response_code {
                ResponseCode::NoError => addrs.extend(collect(&msg, name)),
                ResponseCode::NXDomain => nxdomain += 1,
                rc => return Err(io::Error::other(format!("{server}: {rc} for {name}"))),
            }
        }
        if nxdomain == 2 {
            return Err(not_found(&name.to_ascii()));
        }
        Ok(addrs)
    }

    fn query_tcp(
        &self,
        server: SocketAddr,
        id: u16,
        name: &Name,
        ty: RecordType,
    ) -> io::Result<Message> {
        let mut s = TcpStream::connect_timeout(&server, self.timeout)?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        let q = encode_query(id, name, ty)?;
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        s.write_all(&framed)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf)?;
        let msg = Message::from_vec(&buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if msg.metadata.id != id || !matches_question(&msg, name, ty) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{server}: mismatched TCP answer"),
            ));
        }
        Ok(msg)
    }
}

impl Resolver for UdpResolver {
    fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let name = Name::from_ascii(host)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let name = if name.is_fqdn() {
            name
        } else {
            Name::from_ascii(format!("{host}."))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no upstream nameserver configured");
        for &server in &self.upstream {
            match self.query_one(server, &name) {
                Ok(a) => return Ok(a),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// `nameserver` lines of a resolv.conf (port 53; IPv6 zone ids dropped).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            let addr = w.next()?;
            let addr = addr.split('%').next()?;
            addr.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

fn random_u16() -> u16 {
    // RandomState is seeded from the OS per thread and advanced per instance.
    RandomState::new().build_hasher().finish() as u16
}

pub(crate) fn encode_query(id: u16, name: &Name, ty: RecordType) -> io::Result<Vec<u8>> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name.clone(), ty));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    m.set_edns(edns);
    m.to_vec().map_err(|e| io::Error::other(e.to_string()))
}

fn matches_question(msg: &Message, name: &Name, ty: RecordType) -> bool {
    msg.metadata.message_type == MessageType::Response
        && msg.metadata.op_code == OpCode::Query
        && msg.queries.len() == 1
        && msg.queries[0].query_type() == ty
        && msg.queries[0]
            .name()
            .to_ascii()
            .eq_ignore_ascii_case(&name.to_ascii())
}

/// Addresses for `name` in the answer section, following CNAMEs (owner names compared without
/// case; records for other names ignored).
fn collect(msg: &Message, name: &Name) -> Vec<IpAddr> {
    let mut target = name.to_ascii().to_ascii_lowercase();
    let mut out = Vec::new();
    for _ in 0..=MAX_CNAME {
        let mut next = None;
        for r in &msg.answers {
            if r.name.to_ascii().to_ascii_lowercase() != target {
                continue;
            }
            match &r.data {
                RData::A(a) => out.push(IpAddr::V4(a.0)),
                RData::AAAA(a) => out.push(IpAddr::V6(a.0)),
                RData::CNAME(c) => next = Some(c.0.to_ascii().to_ascii_lowercase()),
                _ => {}
            }
        }
        match next {
            Some(n) if out.is_empty() => target = n,
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let text = "# comment\nsearch example.com\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver bogus\noptions edns0\nnameserver 2001:db8::1\n";
        let got = parse_resolv_conf(text);
        let want: Vec<SocketAddr> = ["127.0.0.53:53", "[fe80::1]:53", "[2001:db8::1]:53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn static_resolver() {
        let r = StaticResolver::new([("A.com", vec!["198.18.0.1".parse().unwrap()])]);
        assert_eq!(r.lookup("a.com").unwrap().len(), 1);
        assert_eq!(
            r.lookup("b.com").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn cache_remembers_answers_not_failures() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Counting(AtomicUsize);
        impl Resolver for Counting {
            fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
                self.0.fetch_add(1, Ordering::SeqCst);
                if host == "a.com" {
                    Ok(vec!["198.18.0.1".parse().unwrap()])
                } else {
                    Err(not_found(host))
                }
            }
        }
        let inner = Arc::new(Counting(AtomicUsize::new(0)));
        let c = CachingResolver::new(inner.clone(), Duration::from_millis(200));
        assert_eq!(c.lookup("a.com").unwrap().len(), 1);
        assert_eq!(c.lookup("a.com").unwrap().len(), 1);
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
        assert!(c.lookup("b.com").is_err());
        assert!(c.lookup("b.com").is_err());
        assert_eq!(inner.0.load(Ordering::SeqCst), 3);
        std::thread::sleep(Duration::from_millis(250));
        c.lookup("a.com").unwrap();
        assert_eq!(inner.0.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn ids_vary() {
        let ids: std::collections::HashSet<u16> = (0..64).map(|_| random_u16()).collect();
        assert!(ids.len() > 32);
    }
}
