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
/// The most a record adds to its plaintext: header (5), TLS 1.2's explicit nonce (8) or TLS
/// 1.3's content type (1), tag (16).
const RECORD_OVERHEAD: usize = 5 + 8 + 16;
/// Data in one TCP segment on loopback (MTU 65536 less the IP and TCP headers with
/// timestamps), where the sandbox's connection ends.
const LOOPBACK_SEGMENT: usize = 65_483;
/// Encrypted answer bytes for the sandbox are sent before they would take more than this (or
/// before the proxy would wait for the upstream): whole records that fill one loopback
/// segment, three 16 KiB records. Four (64 KiB of plaintext, 65,624 bytes of TLS) were sent as
/// a full segment and one of 141 bytes, an extra packet and wake-up of the client per write.
/// Not much more either: rustls queues each record in its own allocation, and with 256 KiB
/// queued the allocator gave the freed memory back to the system after every write and
/// faulted it in again (page faults were 8% of the proxy's CPU, bench/RESULTS.md).
const FLUSH_WIRE: usize = LOOPBACK_SEGMENT;

/// An upper bound of the TLS bytes `n` bytes of plaintext become.
fn wire_len(n: usize) -> usize {
    n + n.div_ceil(MAX_FRAGMENT).max(1) * RECORD_OVERHEAD
}

/// Encrypt `data` for the sandbox into its connection's queue, in records of at most
/// [`MAX_FRAGMENT`]; what is queued (`queued`: its TLS bytes, an upper bound) is sent first
/// when the next record would take it past [`FLUSH_WIRE`].
fn queue_down(client: &mut Down, mut data: &[u8], queued: &mut usize) -> io::Result<()> {
    while !data.is_empty() {
        let piece = &data[..data.len().min(MAX_FRAGMENT)];
        if *queued > 0 && *queued + wire_len(piece.len()) > FLUSH_WIRE {
            flush_down(client, queued)?;
        }
        let n = client.conn.writer().write(piece)?;
        data = &data[n..];
        if n == 0 {
            // rustls's queue is full (it cannot be while `FLUSH_WIRE` is below its limit).
            flush_down(client, queued)?;
        } else {
            *queued += wire_len(n);
        }
    }
    Ok(())
}

/// Send what is queued for the sandbox (one vectored write per up to 64 records).
fn flush_down(client: &mut Down, queued: &mut usize) -> io::Result<()> {
    while client.conn.wants_write() {
        client.conn.write_tls(&mut client.sock)?;
    }
    *queued = 0;
    Ok(())
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
    // Room for what is queued between flushes (`queue_down`).
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
            let mut queued = 0;
            let client = &mut *self.client;
            queue_down(client, &head[..resp + take], &mut queued).map_err(|_| Next::Close)?;
            let mut extra = resp + take < head.len();
            while !body.done() {
                let more = server
                    .read_records(&mut |got| match got {
                        Got::Waiting => flush_down(client, &mut queued),
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
                            queue_down(client, &d[..take], &mut queued)
                        }
                    })
                    .map_err(|_| Next::Close)?;
                if !more {
                    return Err(Next::Close);
                }
            }
            flush_down(client, &mut queued).map_err(|_| Next::Close)?;
            // Bytes after the answer's end: the server is confused; its connection is not reused.
            return Ok(!extra && !close);
        }
    }

    fn copy_until_close(&mut self, server: &mut Up) {
        let mut queued = 0;
        let client = &mut *self.client;
        // Until the end: a server that closes without close_notify has still said everything.
        while let Ok(true) = server.read_records(&mut |got| match got {
            Got::Waiting => flush_down(client, &mut queued),
            Got::Data(d) => queue_down(client, d, &mut queued),
        }) {}
        let _ = flush_down(client, &mut queued);
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
    fn pair() -> (Down, thread::JoinHandle<Vec<u8>>) {
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
        let client = thread::spawn(move || {
            let name = ServerName::try_from(host).unwrap();
            let conn = rustls::ClientConnection::new(client_cfg, name).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, a);
            let mut got = Vec::new();
            tls.read_to_end(&mut got).unwrap();
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

    /// A bulk answer (16 KiB records from the upstream) goes to the sandbox in writes of three
    /// whole records: each fills one loopback TCP segment and none spills a few bytes into
    /// another (four records, 64 KiB of plaintext, did).
    #[test]
    fn bulk_answers_are_written_in_whole_loopback_segments() {
        let (mut down, client) = pair();
        let before = down.sock.writes.len();
        let mut queued = 0;
        let mut want = Vec::new();
        for i in 0..60 {
            let d = pattern(MAX_FRAGMENT, i);
            queue_down(&mut down, &d, &mut queued).unwrap();
            want.extend_from_slice(&d);
        }
        flush_down(&mut down, &mut queued).unwrap();
        let writes = down.sock.writes[before..].to_vec();
        down.conn.send_close_notify();
        down.flush().unwrap();
        drop(down);
        let got = client.join().unwrap();
        assert!(got == want, "the sandbox got other bytes");
        assert_eq!(writes.len(), 20, "{writes:?}");
        for w in &writes {
            assert!(*w <= LOOPBACK_SEGMENT, "{writes:?}");
            assert!(*w > 3 * MAX_FRAGMENT, "{writes:?}");
        }
    }

    /// Plaintext in pieces of every size from 1 byte to past a record, and large ones, reaches
    /// the sandbox whole and in order, and no write is larger than one loopback segment.
    #[test]
    fn pieces_of_every_size_arrive_whole_and_writes_stay_within_a_segment() {
        let (mut down, client) = pair();
        let before = down.sock.writes.len();
        let mut queued = 0;
        let mut want = Vec::new();
        let sizes = (1..=400).chain((16_000..16_800).step_by(37)).chain([
            3 * MAX_FRAGMENT - 1,
            64 * 1024,
            200_000,
            1,
            2,
            65_483,
            7,
        ]);
        for (i, n) in sizes.enumerate() {
            let d = pattern(n, i);
            queue_down(&mut down, &d, &mut queued).unwrap();
            want.extend_from_slice(&d);
            if i % 97 == 0 {
                // As before a read that may wait for the upstream.
                flush_down(&mut down, &mut queued).unwrap();
            }
        }
        flush_down(&mut down, &mut queued).unwrap();
        let writes = down.sock.writes[before..].to_vec();
        down.conn.send_close_notify();
        down.flush().unwrap();
        drop(down);
        let got = client.join().unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the sandbox got other bytes");
        assert!(writes.iter().all(|w| *w <= LOOPBACK_SEGMENT), "{writes:?}");
    }
}
