//! Serving one intercepted connection: end the sandbox's TLS with the [`Interceptor`]'s leaf,
//! check each request, put its secrets in and send it on over verified TLS (pooled). The
//! interceptor itself (CA, TLS configurations, the pool) is `intercept`.

use crate::ctx::Ctx;
use crate::http::{self, body::BodyFramer, HttpError};
use crate::inject::{BodyCheck, BodyStop, Injected, Leak};
use crate::intercept::{BufSock, Down, Interceptor, Up};
use crate::journal::{Event, Kind, Verdict};
use crate::upstream::Got;
use crate::{host, sni};
use rustls::pki_types::ServerName;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// With no byte from the upstream for this long, an intercepted exchange is closed (long
/// enough for a model API's streamed answer to think).
const UPSTREAM_IDLE: Duration = Duration::from_secs(10 * 60);

/// Read buffer of the upstream socket (bulk downloads) and of the sandbox's (requests).
const DOWN_SOCK_BUF: usize = 16 * 1024;
/// Plaintext moved per read/write.
const CHUNK: usize = 64 * 1024;
/// How long a kept-alive connection from the sandbox may wait for its next request.
const KEEP_IDLE: Duration = Duration::from_secs(60);

/// Facts for the journal lines of one intercepted connection.
pub(crate) struct Where {
    pub kind: Kind,
    pub host: String,
    pub port: u16,
    pub dst: Option<SocketAddr>,
}

impl Where {
    fn record(&self, ctx: &Ctx, v: Verdict, reason: &str, ip: Option<IpAddr>, inj: &[Injected]) {
        let mut e = Event::new(self.kind, v);
        e.host = Some(host::display(&self.host));
        e.port = Some(self.port);
        e.dst = self.dst.map(|d| d.to_string());
        e.ip = ip.map(|i| vec![i.to_string()]).unwrap_or_default();
        e.reason = (!reason.is_empty()).then(|| reason.to_string());
        e.injected = inj.to_vec();
        e.intercepted = true;
        ctx.journal.record(&e);
    }
}

/// Read what plaintext there is, up to `out.len()`: blocks for the first bytes, then also
/// takes what the socket buffer already holds (whole 16 KiB records, not one per call).
fn read_bulk<C, S>(tls: &mut rustls::StreamOwned<C, BufSock>, out: &mut [u8]) -> io::Result<usize>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = rustls::ConnectionCommon<S>>,
    S: rustls::SideData,
{
    let first = tls.read(out)?;
    let mut filled = first;
    while first > 0 && filled < out.len() {
        match tls.conn.reader().read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(k) => {
                filled += k;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        if tls.sock.buffered() == 0
            || tls.conn.read_tls(&mut tls.sock).is_err()
            || tls.conn.process_new_packets().is_err()
        {
            break;
        }
    }
    Ok(filled)
}

/// The most plaintext in one TLS record (rustls fragments at this size).
const MAX_FRAGMENT: usize = 16 * 1024;
/// The most a TLS 1.2 record adds to its plaintext: header (5), explicit nonce (8), tag (16).
const RECORD_OVERHEAD: usize = 5 + 8 + 16;
/// What a TLS 1.3 record adds to its plaintext: header (5), content type (1), tag (16).
const RECORD_OVERHEAD_TLS13: usize = 5 + 1 + 16;
/// Data in one TCP segment on loopback (MTU 65536 less the IP and TCP headers with
/// timestamps), where the sandbox's connection ends.
const LOOPBACK_SEGMENT: usize = 65_483;
/// Encrypted answer bytes for the sandbox are sent when they fill one loopback segment (or
/// before the proxy would wait for the upstream). Whole 16 KiB records do not fill it: four
/// (65,624 bytes of TLS) were sent as a full segment and one of 141 bytes, an extra packet and
/// wake-up of the client per write; three (49,218 bytes) leave a quarter of each segment
/// empty. So the segment's last record is cut to fit (4 records, 65,395 bytes of plaintext per
/// segment). Not more than a segment either: rustls queues each record in its own allocation,
/// and with 256 KiB queued the allocator gave the freed memory back to the system after every
/// write and faulted it in again (bench/RESULTS.md).
const FLUSH_WIRE: usize = LOOPBACK_SEGMENT;
/// No record shorter than this is made to fill the rest of a segment: it is sent as it is.
const MIN_RECORD: usize = 1024;
/// The rest of a piece that did not fill a record is held (copied) to start the next record
/// if it is at most this long; a longer rest is a record of its own. The records stay full
/// (the rest of a cut record is not a small record of its own, which costs the sandbox's TLS
/// two reads), and the copy stays small.
const CARRY_MAX: usize = 4 * 1024;

/// Answer plaintext on its way to the sandbox: encrypted into its connection's queue in
/// records sized so that each write fills one loopback segment ([`FLUSH_WIRE`]).
struct Packer {
    /// TLS bytes queued since the last write (exact for TLS 1.3 and TLS 1.2's AES-GCM).
    queued: usize,
    /// What one record adds to its plaintext on this connection.
    overhead: usize,
    /// Plaintext held for the next record (at most [`CARRY_MAX`]); sent by [`Packer::flush`].
    carry: Vec<u8>,
}

impl Packer {
    fn new(client: &Down) -> Self {
        let overhead = match client.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => RECORD_OVERHEAD_TLS13,
            _ => RECORD_OVERHEAD,
        };
        Self {
            queued: 0,
            overhead,
            carry: Vec::new(),
        }
    }

    /// Encrypt `data` for the sandbox (what is held before it first); a write goes out each
    /// time a segment is full. A short rest may be held until the next call or `flush`.
    fn queue(&mut self, client: &mut Down, data: &[u8]) -> io::Result<()> {
        self.records(client, data, true)
    }

    fn records(&mut self, client: &mut Down, mut data: &[u8], hold: bool) -> io::Result<()> {
        loop {
            let have = self.carry.len() + data.len();
            if have == 0 {
                return Ok(());
            }
            let room = FLUSH_WIRE.saturating_sub(self.queued);
            if room < self.overhead + MIN_RECORD {
                self.send(client)?;
                continue;
            }
            // This record's plaintext: a full one, or what fills the segment.
            let want = MAX_FRAGMENT.min(room - self.overhead);
            if hold && have < want && have <= CARRY_MAX {
                self.carry.extend_from_slice(data);
                return Ok(());
            }
            let from_carry = self.carry.len().min(want);
            let take = want.min(have) - from_carry;
            let mut w = client.conn.writer();
            // One record (rustls fragments at MAX_FRAGMENT) from the held bytes and the new.
            let k = match (from_carry, take) {
                (0, _) => w.write(&data[..take])?,
                (_, 0) => w.write(&self.carry[..from_carry])?,
                _ => w.write_vectored(&[
                    io::IoSlice::new(&self.carry[..from_carry]),
                    io::IoSlice::new(&data[..take]),
                ])?,
            };
            if k == 0 {
                // rustls's queue is full (it cannot be while FLUSH_WIRE is below its limit).
                if self.queued == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                self.send(client)?;
                continue;
            }
            self.queued += k + self.overhead;
            let c = k.min(self.carry.len());
            self.carry.drain(..c);
            data = &data[k - c..];
        }
    }

    /// Write what is queued (one vectored write of its records).
    fn send(&mut self, client: &mut Down) -> io::Result<()> {
        while client.conn.wants_write() {
            client.conn.write_tls(&mut client.sock)?;
        }
        self.queued = 0;
        Ok(())
    }

    /// Send everything, what is held too (before the proxy waits for the upstream, and at
    /// the end of an answer).
    fn flush(&mut self, client: &mut Down) -> io::Result<()> {
        if !self.carry.is_empty() {
            let held = std::mem::take(&mut self.carry);
            let r = self.records(client, &held, false);
            self.carry = held;
            self.carry.clear();
            r?;
        }
        self.send(client)
    }
}

/// Serve a TLS connection to a bound host. `hello` holds the bytes read so far (the
/// ClientHello); `name` is its server name, already allowed by the policy and normalized;
/// `upstream`, if given, is an open connection (a CONNECT tunnel's).
pub(crate) fn serve(
    conn: TcpStream,
    hello: &[u8],
    name: &str,
    at: Where,
    ctx: &Ctx,
    icpt: &Interceptor,
    upstream: Option<(TcpStream, IpAddr)>,
) {
    let cfg = match icpt.server_config(name) {
        Ok(c) => c,
        Err(e) => {
            at.record(
                ctx,
                Verdict::Deny,
                &format!("cannot make the interception certificate: {e}"),
                None,
                &[],
            );
            return crate::relay::refuse(conn, &sni::ALERT_INTERNAL_ERROR);
        }
    };
    let Ok(mut server) = rustls::ServerConnection::new(cfg) else {
        return;
    };
    // The ClientHello was read already: hand it to rustls first.
    let mut rd: &[u8] = hello;
    while !rd.is_empty() {
        if server.read_tls(&mut rd).is_err() {
            return;
        }
    }
    let _ = conn.set_nodelay(true);
    let _ = conn.set_read_timeout(Some(ctx.inspect_timeout));
    let _ = conn.set_write_timeout(Some(ctx.inspect_timeout));
    let mut conn = BufSock::new(conn, DOWN_SOCK_BUF);
    if let Err(e) = server
        .process_new_packets()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        .and_then(|_| handshake(&mut server, &mut conn))
    {
        let reason = format!(
            "the program in the sandbox did not accept airlock's interception certificate for {name} ({e}); \
             secrets bound to {name} are injected over TLS that airlock ends, so the program must trust \
             the sandbox's CA (SSL_CERT_FILE, NODE_EXTRA_CA_CERTS, ... point to it; a client that pins \
             certificates cannot use injected secrets)"
        );
        at.record(ctx, Verdict::Deny, &reason, None, &[]);
        return;
    }
    // Room for what is queued between writes (`Packer`).
    server.set_buffer_limit(Some(2 * FLUSH_WIRE));
    let mut client = rustls::StreamOwned::new(server, conn);
    let mut x = Exchange {
        client: &mut client,
        name,
        at: &at,
        ctx,
        icpt,
        upstream,
        buf: Vec::new(),
        chunk: vec![0u8; CHUNK],
    };
    let mut first = true;
    while x.one(first) == Next::Again {
        first = false;
    }
    client.conn.send_close_notify();
    let _ = client.flush();
}

fn handshake<C, S>(tls: &mut rustls::ConnectionCommon<S>, sock: &mut C) -> io::Result<()>
where
    C: Read + Write,
    S: rustls::SideData,
{
    while tls.is_handshaking() {
        tls.complete_io(sock)?;
    }
    // Flush what is left to write (the server's last flight).
    while tls.wants_write() {
        tls.write_tls(sock)?;
    }
    Ok(())
}

/// An answer to the sandbox inside the TLS it opened (the request was refused).
fn answer(client: &mut Down, status: &str, text: &str) {
    let _ = client.write_all(&http::response(status, text));
    let _ = client.flush();
}

#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Both sides keep the connection: read the sandbox's next request.
    Again,
    Close,
}

/// One intercepted connection from the sandbox: its requests one after another.
struct Exchange<'a> {
    client: &'a mut Down,
    name: &'a str,
    at: &'a Where,
    ctx: &'a Ctx,
    icpt: &'a Interceptor,
    /// A CONNECT tunnel's connection, used by the first request.
    upstream: Option<(TcpStream, IpAddr)>,
    /// Bytes from the sandbox not yet used (the start of the next request).
    buf: Vec<u8>,
    chunk: Vec<u8>,
}

/// An upstream connection for one request.
struct Upstream {
    tls: Up,
    ip: IpAddr,
    reused: bool,
}

impl Exchange<'_> {
    /// A new verified TLS connection to the bound host (the tunnel's, or a new one).
    fn connect(&mut self) -> Result<Upstream, Next> {
        let (name, ctx, at) = (self.name, self.ctx, self.at);
        let (up, ip) = match self.upstream.take() {
            Some(u) => u,
            None => match crate::ctx::connect_upstream(ctx, name, at.port) {
                Ok(u) => u,
                Err(reason) => {
                    // Allowed, but the network failed (as for connections not intercepted).
                    at.record(ctx, Verdict::Allow, &reason, None, &[]);
                    answer(
                        self.client,
                        "502 Bad Gateway",
                        &format!("airlock: {reason}\n"),
                    );
                    return Err(Next::Close);
                }
            },
        };
        let Ok(server_name) = ServerName::try_from(name.to_string()) else {
            return Err(Next::Close);
        };
        let _ = up.set_nodelay(true);
        let _ = up.set_read_timeout(Some(ctx.connect_timeout));
        let _ = up.set_write_timeout(Some(ctx.connect_timeout));
        let tls = match Up::connect(self.icpt.upstream.clone(), server_name, up) {
            Ok(t) => t,
            Err(e) => {
                let reason = format!(
                    "TLS to {name} failed, the real server's certificate was not verified: {e}"
                );
                at.record(ctx, Verdict::Deny, &reason, Some(ip), &[]);
                answer(
                    self.client,
                    "502 Bad Gateway",
                    &format!("airlock: {reason}\n"),
                );
                return Err(Next::Close);
            }
        };
        Ok(Upstream {
            tls,
            ip,
            reused: false,
        })
    }

    /// An idle connection of this sandbox to the host, if `pooled` and there is one, else a new one.
    fn acquire(&mut self, pooled: bool) -> Result<Upstream, Next> {
        if pooled && self.upstream.is_none() {
            if let Some((tls, ip)) = self.icpt.pool.take(self.name, self.at.port) {
                return Ok(Upstream {
                    tls,
                    ip,
                    reused: true,
                });
            }
        }
        self.connect()
    }

    /// Read the next request's head (`first`: the connection's first request).
    fn read_head(&mut self, first: bool) -> Result<http::Request, Next> {
        let (name, ctx, at) = (self.name, self.ctx, self.at);
        let mut deadline = Instant::now() + ctx.inspect_timeout;
        loop {
            let parsed = if self.buf.is_empty() {
                Err(HttpError::NeedMore)
            } else {
                http::parse(&self.buf)
            };
            match parsed {
                Ok(r) => return Ok(r),
                Err(HttpError::NeedMore) if Instant::now() < deadline => {}
                Err(HttpError::NeedMore) => {
                    if first || !self.buf.is_empty() {
                        let reason = format!(
                            "no complete HTTP request inside the intercepted TLS within {} s",
                            ctx.inspect_timeout.as_secs()
                        );
                        at.record(ctx, Verdict::Deny, &reason, None, &[]);
                    }
                    return Err(Next::Close);
                }
                Err(e) => {
                    let reason = format!("inside the intercepted TLS to {name}: {e}");
                    at.record(ctx, Verdict::Deny, &reason, None, &[]);
                    answer(
                        self.client,
                        "400 Bad Request",
                        &format!(
                            "airlock: blocked {name}: {e} (secrets are injected into HTTP/1 requests only)\n"
                        ),
                    );
                    return Err(Next::Close);
                }
            }
            let idle = if self.buf.is_empty() && !first {
                KEEP_IDLE
            } else {
                ctx.inspect_timeout
            };
            let _ = self.client.sock.sock.set_read_timeout(Some(idle));
            let waiting = self.buf.is_empty() && !first;
            match read_bulk(self.client, &mut self.chunk) {
                Ok(0) => return Err(Next::Close),
                Ok(n) => {
                    if waiting {
                        // The next request began: its head has the usual time.
                        deadline = Instant::now() + ctx.inspect_timeout;
                    }
                    self.buf.extend_from_slice(&self.chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // An idle kept-alive connection ends quietly; other timeouts are judged above.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.buf.is_empty() && !first {
                        return Err(Next::Close);
                    }
                }
                Err(_) => return Err(Next::Close),
            }
        }
    }

    /// One request: read its head, check and rewrite it, send it upstream, relay the answer.
    fn one(&mut self, first: bool) -> Next {
        match self.request(first) {
            Ok(n) | Err(n) => n,
        }
    }

    fn request(&mut self, first: bool) -> Result<Next, Next> {
        let (name, ctx, at, icpt) = (self.name, self.ctx, self.at, self.icpt);
        let secrets = icpt.secrets();
        let req = self.read_head(first)?;
        // The Host must be the name the TLS handshake asked for (and was checked against).
        let host_ok = req
            .authority(at.port)
            .ok()
            .and_then(|(h, p)| host::normalize(&h).ok().map(|h| (h, p)))
            .is_some_and(|(h, p)| h == name && p == at.port);
        if !host_ok || !matches!(req.target, http::Target::Origin(_)) {
            let reason = format!(
                "the request's Host ({}) is not the TLS server name {name}:{} (domain fronting)",
                req.host.as_deref().map(host::display).unwrap_or_default(),
                at.port
            );
            at.record(ctx, Verdict::Deny, &reason, None, &[]);
            answer(
                self.client,
                "421 Misdirected Request",
                &format!("airlock: blocked {name}: {reason}\n"),
            );
            return Err(Next::Close);
        }
        let refuse_leak = |client: &mut Down, l: Leak| {
            let reason = l.reason(name);
            at.record(ctx, Verdict::Deny, &reason, None, &[]);
            answer(
                client,
                "403 Forbidden",
                &format!("airlock: blocked {name}: {reason}\n"),
            );
            Next::Close
        };
        let (mut req, injected) = match secrets.rewrite(&req, name) {
            Ok(r) => r,
            Err(l) => return Err(refuse_leak(self.client, l)),
        };
        // `Expect: 100-continue` is answered here: the body is read before the answer is.
        let expect = req.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("expect") && v.eq_ignore_ascii_case(b"100-continue")
        });
        req.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("expect"));
        let mut body = BodyCheck::new(secrets, Some(name), req.body);
        let rest = self.buf.split_off(req.head_len);
        let take = match body.feed(&rest) {
            Ok(t) => t,
            Err(BodyStop::Leak(l)) => return Err(refuse_leak(self.client, l)),
            Err(BodyStop::Malformed(_)) => return Err(Next::Close),
        };
        // Bytes after this request's body: the start of the next (pipelined) one.
        self.buf = rest[take..].to_vec();
        let mut out = req.forward_head_with(true);
        out.extend_from_slice(&rest[..take]);
        // A request that is complete in memory can go on an idle connection: if the server
        // closed that one meanwhile, it is sent again on a new one.
        let whole = body.done();
        let mut pooled = whole;
        let mut recorded = false;
        let (mut server, ip, head) = loop {
            let Upstream {
                tls: mut server,
                ip,
                reused,
            } = self.acquire(pooled)?;
            if !recorded {
                at.record(ctx, Verdict::Allow, "", Some(ip), &injected);
                recorded = true;
            }
            let _ = server.sock.set_write_timeout(Some(ctx.connect_timeout));
            let sent = server.send(&out);
            if sent.is_err() {
                if reused {
                    pooled = false;
                    continue;
                }
                return Err(Next::Close);
            }
            if !whole {
                self.send_body(&mut server, &mut body, expect)?;
            }
            // The answer's first bytes.
            let _ = server.sock.set_read_timeout(Some(UPSTREAM_IDLE));
            let mut head = Vec::new();
            match server.read_into(&mut head) {
                Ok(n) if n > 0 => break (server, ip, head),
                _ if reused => pooled = false,
                _ => return Err(Next::Close),
            }
        };
        let reuse = self.relay_answer(&mut server, head, &req.method)?;
        let _ = self.client.flush();
        if reuse && req.minor >= 1 {
            icpt.pool.put(name, at.port, server, ip);
        }
        Ok(if reuse && req.keep_alive() {
            Next::Again
        } else {
            Next::Close
        })
    }

    /// The rest of a request's body from the sandbox, scanned as it passes.
    fn send_body(
        &mut self,
        server: &mut Up,
        body: &mut BodyCheck<'_>,
        expect: bool,
    ) -> Result<(), Next> {
        if expect
            && self
                .client
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .is_err()
        {
            return Err(Next::Close);
        }
        let _ = self.client.sock.sock.set_read_timeout(Some(UPSTREAM_IDLE));
        while !body.done() {
            let n = match read_bulk(self.client, &mut self.chunk) {
                Ok(0) | Err(_) => return Err(Next::Close),
                Ok(n) => n,
            };
            let take = match body.feed(&self.chunk[..n]) {
                Ok(t) => t,
                Err(BodyStop::Malformed(_)) => return Err(Next::Close),
                Err(BodyStop::Leak(l)) => {
                    // The upstream never sees the end of this request.
                    let _ = server.sock.shutdown(std::net::Shutdown::Both);
                    let reason = l.reason(self.name);
                    self.at.record(self.ctx, Verdict::Deny, &reason, None, &[]);
                    answer(
                        self.client,
                        "403 Forbidden",
                        &format!("airlock: blocked {}: {reason}\n", self.name),
                    );
                    return Err(Next::Close);
                }
            };
            if server.send(&self.chunk[..take]).is_err() {
                return Err(Next::Close);
            }
            self.buf.extend_from_slice(&self.chunk[take..n]);
        }
        Ok(())
    }

    /// Relay the answer (`head`: its first bytes) to the sandbox. `Ok(true)`: it was framed
    /// and complete, and both connections can carry another request.
    fn relay_answer(
        &mut self,
        server: &mut Up,
        mut head: Vec<u8>,
        method: &str,
    ) -> Result<bool, Next> {
        loop {
            let resp = loop {
                match http::parse_response(&head, method) {
                    Ok(r) => break Some(r),
                    Err(HttpError::NeedMore) => {}
                    Err(_) => break None,
                }
                match server.read_into(&mut head) {
                    Ok(n) if n > 0 => {}
                    _ => break None,
                }
            };
            let (resp, len, close) = match resp {
                Some(http::Response {
                    body: http::ResponseBody::Framed(len),
                    close,
                    head_len,
                    ..
                }) => (head_len, len, close),
                Some(http::Response {
                    body: http::ResponseBody::Interim,
                    head_len,
                    ..
                }) => {
                    self.client
                        .write_all(&head[..head_len])
                        .map_err(|_| Next::Close)?;
                    head.drain(..head_len);
                    continue;
                }
                // Until the server closes (or not understood): relayed as it comes, then
                // both connections end.
                _ => {
                    self.client.write_all(&head).map_err(|_| Next::Close)?;
                    self.copy_until_close(server);
                    return Ok(false);
                }
            };
            let mut body = BodyFramer::new(len);
            // The head and what came with it, then each record's plaintext from rustls's queue
            // straight into the sandbox's TLS (no copy in between), sent in large writes.
            let take = body.feed(&head[resp..]).map_err(|_| Next::Close)?;
            let client = &mut *self.client;
            let mut pk = Packer::new(client);
            pk.queue(client, &head[..resp + take])
                .map_err(|_| Next::Close)?;
            let mut extra = resp + take < head.len();
            while !body.done() {
                let more = server.read_records(&mut |got| match got {
                    Got::Waiting => pk.flush(client),
                    // Bytes after the answer's end.
                    Got::Data(_) if body.done() => {
                        extra = true;
                        Ok(())
                    }
                    Got::Data(d) => {
                        let take = body
                            .feed(d)
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                        extra |= take < d.len();
                        pk.queue(client, &d[..take])
                    }
                });
                if !matches!(more, Ok(true)) {
                    // The answer was cut (or is not understood): what came of it still goes
                    // to the sandbox, the bytes held for the next record too.
                    let _ = pk.flush(client);
                    return Err(Next::Close);
                }
            }
            pk.flush(client).map_err(|_| Next::Close)?;
            // Bytes after the answer's end: the server is confused; its connection is not reused.
            return Ok(!extra && !close);
        }
    }

    fn copy_until_close(&mut self, server: &mut Up) {
        let client = &mut *self.client;
        let mut pk = Packer::new(client);
        // Until the end: a server that closes without close_notify has still said everything.
        while let Ok(true) = server.read_records(&mut |got| match got {
            Got::Waiting => pk.flush(client),
            Got::Data(d) => pk.queue(client, d),
        }) {}
        let _ = pk.flush(client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::{At, Binding, Secrets};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::thread;

    /// The sandbox's end (a rustls client trusting the interceptor's CA) and the proxy's end
    /// of an intercepted connection on loopback, the handshake done. The client reads until
    /// the proxy's close_notify and returns what it got.
    fn pair(slow: bool) -> (Down, thread::JoinHandle<Vec<u8>>) {
        let host = "api.test";
        let b = Binding::new(
            "KEY",
            "real".into(),
            &[host.into()],
            At::Header("x-api-key".into()),
        )
        .unwrap();
        let icpt = Interceptor::new(Secrets::new(vec![b]), None).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(icpt.ca_pem().as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let client_cfg = Arc::new(
            rustls::ClientConfig::builder_with_provider(crate::intercept::ring())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        if slow {
            let _ = rustix::net::sockopt::set_socket_send_buffer_size(&s, 16 * 1024);
            let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&a, 16 * 1024);
        }
        let client = thread::spawn(move || {
            let name = ServerName::try_from(host).unwrap();
            let conn = rustls::ClientConnection::new(client_cfg, name).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, a);
            let mut got = Vec::new();
            if slow {
                // Small reads with pauses: the proxy's socket buffer fills and its writes wait.
                let mut b = [0u8; 1000];
                let mut reads = 0;
                loop {
                    let n = tls.read(&mut b).unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&b[..n]);
                    reads += 1;
                    if reads % 200 == 0 {
                        thread::sleep(Duration::from_millis(5));
                    }
                }
            } else {
                tls.read_to_end(&mut got).unwrap();
            }
            got
        });
        let mut server = rustls::ServerConnection::new(icpt.server_config(host).unwrap()).unwrap();
        let mut sock = BufSock::new(s, DOWN_SOCK_BUF);
        handshake(&mut server, &mut sock).unwrap();
        server.set_buffer_limit(Some(2 * FLUSH_WIRE));
        (rustls::StreamOwned::new(server, sock), client)
    }

    fn pattern(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 7 + seed) % 251) as u8).collect()
    }

    /// Records in the TLS bytes `wire` (whole records, as the sandbox got them).
    fn record_sizes(wire: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 5 <= wire.len() {
            let n = u16::from_be_bytes([wire[at + 3], wire[at + 4]]) as usize;
            out.push(n);
            at += 5 + n;
        }
        assert_eq!(at, wire.len(), "the writes end inside a record");
        out
    }

    /// A bulk answer (16 KiB records from the upstream) goes to the sandbox in writes that each
    /// fill one loopback TCP segment exactly (the last one's fourth record is cut to fit), none
    /// spilling a few bytes into another segment (four whole records, 65,624 bytes, did) and
    /// none leaving a quarter of it empty (three whole records, 49,218 bytes, did); the records
    /// stay full: the rest of a cut one starts the next record, not a small one of its own.
    #[test]
    fn bulk_answers_fill_whole_loopback_segments() {
        let (mut down, client) = pair(false);
        let before = down.sock.writes.len();
        let mut pk = Packer::new(&down);
        assert_eq!(pk.overhead, RECORD_OVERHEAD_TLS13);
        let mut want = Vec::new();
        for i in 0..60 {
            let d = pattern(MAX_FRAGMENT, i);
            pk.queue(&mut down, &d).unwrap();
            want.extend_from_slice(&d);
        }
        pk.flush(&mut down).unwrap();
        let writes = down.sock.writes[before..].to_vec();
        let wire = down.sock.sent[before..].concat();
        down.conn.send_close_notify();
        down.flush().unwrap();
        drop(down);
        let got = client.join().unwrap();
        assert!(got == want, "the sandbox got other bytes");
        // 60 records' plaintext in segments of 65,483 TLS bytes (65,395 of plaintext): 16.
        assert_eq!(writes.len(), 16, "{writes:?}");
        let (last, full) = writes.split_last().unwrap();
        assert!(full.iter().all(|w| *w == LOOPBACK_SEGMENT), "{writes:?}");
        assert!(*last < LOOPBACK_SEGMENT, "{writes:?}");
        let records = record_sizes(&wire);
        assert!(
            records.len() <= 62,
            "{} records: {records:?}",
            records.len()
        );
        assert!(
            records
                .iter()
                .all(|r| *r <= MAX_FRAGMENT + RECORD_OVERHEAD_TLS13),
            "{records:?}"
        );
    }

    /// Plaintext in pieces of every size from 1 byte to past a record, and large ones, with
    /// sends (before the proxy would wait) in between, reaches the sandbox whole and in order;
    /// no write is larger than one loopback segment, and none ends inside a record.
    #[test]
    fn pieces_of_every_size_arrive_whole_and_writes_stay_within_a_segment() {
        let (mut down, client) = pair(false);
        let before = down.sock.writes.len();
        let mut pk = Packer::new(&down);
        let mut want = Vec::new();
        let sizes = (1..=400)
            .chain((16_000..16_800).step_by(37))
            .chain((CARRY_MAX - 40..CARRY_MAX + 40).step_by(3))
            .chain((MIN_RECORD - 30..MIN_RECORD + 30).step_by(7))
            .chain([
                3 * MAX_FRAGMENT - 1,
                64 * 1024,
                200_000,
                1,
                2,
                65_483,
                65_395,
                7,
            ]);
        for (i, n) in sizes.enumerate() {
            let d = pattern(n, i);
            pk.queue(&mut down, &d).unwrap();
            want.extend_from_slice(&d);
            if i % 97 == 0 || i % 13 == 5 {
                // As before a read that may wait for the upstream: nothing is held back.
                pk.flush(&mut down).unwrap();
                assert!(pk.carry.is_empty());
                assert!(!down.conn.wants_write());
            }
        }
        pk.flush(&mut down).unwrap();
        let writes = down.sock.writes[before..].to_vec();
        let wire = down.sock.sent[before..].concat();
        down.conn.send_close_notify();
        down.flush().unwrap();
        drop(down);
        let got = client.join().unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the sandbox got other bytes");
        assert!(writes.iter().all(|w| *w <= LOOPBACK_SEGMENT), "{writes:?}");
        for r in record_sizes(&wire) {
            assert!(r <= MAX_FRAGMENT + RECORD_OVERHEAD_TLS13);
        }
    }

    /// A sandbox that reads slowly (small buffers, pauses): the writes wait for it and go on
    /// where they stopped; every byte arrives, in order, then the close_notify.
    #[test]
    fn a_slow_reader_gets_everything() {
        let (mut down, client) = pair(true);
        let mut pk = Packer::new(&down);
        let mut want = Vec::new();
        for i in 0..200 {
            let d = pattern(MAX_FRAGMENT - (i % 3) * 1000, i);
            pk.queue(&mut down, &d).unwrap();
            want.extend_from_slice(&d);
            if i % 50 == 0 {
                pk.flush(&mut down).unwrap();
            }
        }
        pk.flush(&mut down).unwrap();
        down.conn.send_close_notify();
        down.flush().unwrap();
        drop(down);
        let got = client.join().unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the sandbox got other bytes");
    }
}
