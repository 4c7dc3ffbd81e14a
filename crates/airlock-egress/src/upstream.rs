//! The verified TLS connection from the proxy to a bound host, on rustls's unbuffered API: the
//! socket is read straight into this connection's own buffer, and rustls decrypts each record
//! there (the buffered API copies every byte from the read buffer into its own first, and
//! shrinks and regrows that buffer at each record boundary). The answers' bulk comes this way.

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

/// Read buffer: up to eight records per read while a download keeps the socket full (half
/// the reads of a 64 KiB buffer, bench/RESULTS.md).
const IN_BUF: usize = 128 * 1024;
/// A partial record is moved to the front of the buffer only when less than this much room is
/// left after it: each read has room for at least half the buffer, and the (up to 16 KiB)
/// partial record is not copied before every read.
const MIN_ROOM: usize = IN_BUF / 2;
/// The largest TLS record on the wire (16 KiB of plaintext and the protection's overhead).
const MAX_RECORD: usize = 16 * 1024 + 2048 + 5;

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// What [`Up::read_records`] hands its caller.
pub(crate) enum Got<'a> {
    /// The plaintext of one record.
    Data(&'a [u8]),
    /// Nothing more is decrypted and the next socket read may wait (send what is queued).
    Waiting,
}

/// A client TLS connection to the real server.
pub(crate) struct Up {
    conn: UnbufferedClientConnection,
    pub(crate) sock: TcpStream,
    /// TLS bytes from the server: `inb[start..end]` is not yet processed.
    inb: Box<[u8]>,
    start: usize,
    end: usize,
    /// The last socket read filled the free space: more is queued (no quick ACK needed).
    full: bool,
    /// TLS bytes for the server not yet written.
    out: Vec<u8>,
    /// The server ended the TLS (close_notify) or the TCP connection.
    ended: bool,
    /// Socket reads that got bytes, and how often a partial record was moved to the front.
    #[cfg(test)]
    reads: usize,
    #[cfg(test)]
    moves: usize,
}

impl Up {
    /// TLS to `name` over `sock`, the handshake done (the server's certificate verified).
    pub(crate) fn connect(
        cfg: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        sock: TcpStream,
    ) -> io::Result<Self> {
        let conn = UnbufferedClientConnection::new(cfg, name).map_err(tls_err)?;
        let mut up = Self {
            conn,
            sock,
            inb: vec![0u8; IN_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            full: false,
            out: Vec::with_capacity(MAX_RECORD),
            ended: false,
            #[cfg(test)]
            reads: 0,
            #[cfg(test)]
            moves: 0,
        };
        up.handshake()?;
        Ok(up)
    }

    fn handshake(&mut self) -> io::Result<()> {
        loop {
            let UnbufferedStatus { discard, state } = self
                .conn
                .process_tls_records(&mut self.inb[self.start..self.end]);
            let mut read = false;
            match state.map_err(tls_err)? {
                ConnectionState::EncodeTlsData(mut e) => {
                    append_grown(&mut self.out, |b| e.encode(b))?
                }
                ConnectionState::TransmitTlsData(t) => {
                    self.sock.write_all(&self.out)?;
                    self.out.clear();
                    t.done();
                }
                ConnectionState::BlockedHandshake => read = true,
                // Done: application data may be sent (and may have arrived already).
                ConnectionState::WriteTraffic(_) | ConnectionState::ReadTraffic(_) => {
                    self.start += discard;
                    return Ok(());
                }
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the server ended the TLS handshake",
                    ))
                }
            }
            self.start += discard;
            if read && self.fill(true)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Read more from the socket (waiting for it if `wait`, else only what is there):
    /// the bytes read, 0 at the end of the stream; `WouldBlock` if not waiting and none.
    fn fill(&mut self, wait: bool) -> io::Result<usize> {
        // What is not processed (a partial record) goes to the front once the room after it
        // runs short; everything before `start` is processed.
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.inb.len() - self.end < MIN_ROOM {
            self.inb.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            #[cfg(test)]
            {
                self.moves += 1;
            }
        }
        let free = &mut self.inb[self.end..];
        let n = if wait {
            // As `BufSock`: acknowledge at once what arrives when this read may wait.
            if !self.full {
                let _ = rustix::net::sockopt::set_tcp_quickack(&self.sock, true);
            }
            loop {
                match self.sock.read(free) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    r => break r?,
                }
            }
        } else {
            match rustix::net::recv(&self.sock, &mut *free, rustix::net::RecvFlags::DONTWAIT) {
                Ok((_, n)) => n,
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {
                    return Err(io::ErrorKind::WouldBlock.into())
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.full = n > 0 && n == free.len();
        self.end += n;
        #[cfg(test)]
        {
            self.reads += usize::from(n > 0);
        }
        Ok(n)
    }

    /// Send `data` to the server (encrypted).
    pub(crate) fn send(&mut self, data: &[u8]) -> io::Result<()> {
        loop {
            let UnbufferedStatus { discard, state } = self
                .conn
                .process_tls_records(&mut self.inb[self.start..self.end]);
            let done = match state.map_err(tls_err)? {
                ConnectionState::EncodeTlsData(mut e) => {
                    append_grown(&mut self.out, |b| e.encode(b))?;
                    false
                }
                ConnectionState::TransmitTlsData(t) => {
                    self.sock.write_all(&self.out)?;
                    self.out.clear();
                    t.done();
                    false
                }
                ConnectionState::WriteTraffic(mut w) => {
                    append_grown(&mut self.out, |b| w.encrypt(data, b))?;
                    true
                }
                // Data or the end before the request was sent: nothing to send it on.
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the server sent data or closed before the request",
                    ))
                }
            };
            self.start += discard;
            if done {
                let r = self.sock.write_all(&self.out);
                self.out.clear();
                return r;
            }
        }
    }

    /// Hand `got` the plaintext of every record there is, reading the socket when none is
    /// (after `got(Got::Waiting)` if the read may wait): `Ok(true)` once at least one record
    /// was handed over, `Ok(false)` at the end (close_notify or the TCP end: a server that closes
    /// without close_notify has still said everything; HTTP framing tells a cut answer).
    pub(crate) fn read_records(
        &mut self,
        got: &mut dyn FnMut(Got<'_>) -> io::Result<()>,
    ) -> io::Result<bool> {
        let mut any = false;
        loop {
            if self.ended {
                return Ok(any);
            }
            let UnbufferedStatus { discard, state } = self
                .conn
                .process_tls_records(&mut self.inb[self.start..self.end]);
            let mut need = false;
            match state.map_err(tls_err)? {
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(rec) = r.next_record() {
                        let rec = rec.map_err(tls_err)?;
                        any = true;
                        got(Got::Data(rec.payload))?;
                    }
                }
                ConnectionState::EncodeTlsData(mut e) => {
                    append_grown(&mut self.out, |b| e.encode(b))?
                }
                ConnectionState::TransmitTlsData(t) => {
                    self.sock.write_all(&self.out)?;
                    self.out.clear();
                    t.done();
                }
                ConnectionState::PeerClosed | ConnectionState::Closed => self.ended = true,
                // All complete records are processed.
                _ => need = true,
            }
            self.start += discard;
            if !need {
                continue;
            }
            if any {
                return Ok(true);
            }
            if self.end - self.start >= MAX_RECORD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a TLS record longer than allowed",
                ));
            }
            let n = match self.fill(false) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    got(Got::Waiting)?;
                    self.fill(true)?
                }
                r => r?,
            };
            if n == 0 {
                self.ended = true;
            }
        }
    }

    /// Append the plaintext of what has arrived (waiting for at least one record) to `buf`:
    /// the bytes added, 0 at the end.
    pub(crate) fn read_into(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let before = buf.len();
        self.read_records(&mut |g| {
            if let Got::Data(d) = g {
                buf.extend_from_slice(d);
            }
            Ok(())
        })?;
        Ok(buf.len() - before)
    }

    /// An idle pooled connection can take another request: the server has not closed it nor
    /// sent anything but TLS housekeeping (session tickets) meanwhile. Never waits.
    pub(crate) fn still_open(&mut self) -> bool {
        loop {
            match self.fill(false) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return false,
            }
            if self.end == self.inb.len() {
                return false;
            }
        }
        loop {
            let UnbufferedStatus { discard, state } = self
                .conn
                .process_tls_records(&mut self.inb[self.start..self.end]);
            let ok = match state {
                Ok(ConnectionState::WriteTraffic(_)) => true,
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    if append_grown(&mut self.out, |b| e.encode(b)).is_err() {
                        return false;
                    }
                    self.start += discard;
                    continue;
                }
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    if self.sock.write_all(&self.out).is_err() {
                        return false;
                    }
                    self.out.clear();
                    t.done();
                    self.start += discard;
                    continue;
                }
                _ => false,
            };
            self.start += discard;
            return ok;
        }
    }
}

/// rustls's two "the buffer is too small" errors (encoding a handshake record, encrypting
/// application data): the size it needs, or None for any other error.
trait NeedsRoom: std::fmt::Display {
    fn required(&self) -> Option<usize>;
}

impl NeedsRoom for EncodeError {
    fn required(&self) -> Option<usize> {
        match self {
            EncodeError::InsufficientSize(s) => Some(s.required_size),
            _ => None,
        }
    }
}

impl NeedsRoom for EncryptError {
    fn required(&self) -> Option<usize> {
        match self {
            EncryptError::InsufficientSize(s) => Some(s.required_size),
            _ => None,
        }
    }
}

/// Let `f` (rustls encoding a handshake record or encrypting application data) write at the
/// end of `out`, growing it to the size `f` asks for until it fits.
fn append_grown<E: NeedsRoom>(
    out: &mut Vec<u8>,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, E>,
) -> io::Result<()> {
    let at = out.len();
    let mut room = MAX_RECORD;
    loop {
        out.resize(at + room, 0);
        match f(&mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                return Ok(());
            }
            Err(e) => match e.required() {
                Some(needed) => room = needed,
                None => {
                    out.truncate(at);
                    return Err(io::Error::other(e.to_string()));
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::net::TcpListener;
    use std::thread;
    use std::time::Duration;

    fn pattern(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 13 + seed) % 253) as u8).collect()
    }

    /// A TLS server on loopback that sends `records` (one TLS record each) then close_notify,
    /// writing the TLS bytes in pieces of `cuts` sizes in turn, with a pause after every
    /// `pause_every`th (so that reads end inside records, headers and tags); and a client
    /// configuration for it. The server's name is `up.test`.
    fn server(
        records: Vec<Vec<u8>>,
        cuts: Vec<usize>,
        pause_every: usize,
    ) -> (TcpStream, Arc<rustls::ClientConfig>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = p.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["up.test".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let provider = crate::intercept::ring();
        let server_cfg = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![leaf.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .unwrap(),
        );
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let client_cfg = Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let sock = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut tls = rustls::ServerConnection::new(server_cfg).unwrap();
            while tls.is_handshaking() {
                tls.complete_io(&mut s).unwrap();
            }
            while tls.wants_write() {
                tls.write_tls(&mut s).unwrap();
            }
            let mut wire = Vec::new();
            for r in &records {
                tls.writer().write_all(r).unwrap();
                while tls.wants_write() {
                    tls.write_tls(&mut wire).unwrap();
                }
            }
            tls.send_close_notify();
            while tls.wants_write() {
                tls.write_tls(&mut wire).unwrap();
            }
            let mut rest = &wire[..];
            for (i, n) in cuts.iter().cycle().enumerate() {
                if rest.is_empty() {
                    break;
                }
                let n = (*n).min(rest.len());
                s.write_all(&rest[..n]).unwrap();
                rest = &rest[n..];
                if i % pause_every == 0 {
                    thread::sleep(Duration::from_millis(1));
                }
            }
        });
        (sock, client_cfg)
    }

    fn read_all(up: &mut Up) -> Vec<u8> {
        let mut got = Vec::new();
        while up
            .read_records(&mut |g| {
                if let Got::Data(d) = g {
                    got.extend_from_slice(d);
                }
                Ok(())
            })
            .unwrap()
        {}
        got
    }

    /// Records of every size from 1 byte to a full 16 KiB, their TLS bytes cut at odd places
    /// (inside headers, payloads and tags) across socket reads: the plaintext comes out
    /// whole and in order.
    #[test]
    fn records_of_every_size_cut_anywhere_arrive_whole() {
        let sizes = (1..=600)
            .chain((600..=16 * 1024).step_by(331))
            .chain([16 * 1024; 8]);
        let records: Vec<Vec<u8>> = sizes.enumerate().map(|(i, n)| pattern(n, i)).collect();
        let want: Vec<u8> = records.concat();
        let cuts = vec![
            1,
            2,
            3,
            4,
            5,
            6,
            17,
            21,
            22,
            23,
            4096,
            16 * 1024 + 22,
            7,
            40_000,
            131_071,
        ];
        let (sock, cfg) = server(records, cuts, 5);
        let name = ServerName::try_from("up.test").unwrap();
        let mut up = Up::connect(cfg, name, sock).unwrap();
        let got = read_all(&mut up);
        assert_eq!(got.len(), want.len());
        assert!(got == want, "other plaintext than sent");
    }

    /// A bulk answer that comes slower than it is read (each read ends inside a record):
    /// the partial record at the end of a read is moved to the front of the buffer only when
    /// the room after it runs short, not before every read.
    #[test]
    fn a_partial_record_is_not_moved_before_every_read() {
        let records: Vec<Vec<u8>> = (0..160).map(|i| pattern(16 * 1024, i)).collect();
        let want: Vec<u8> = records.concat();
        // 24 KiB at a time: never on a record boundary (records are 16 KiB and some bytes).
        let (sock, cfg) = server(records, vec![24 * 1024], 1);
        let name = ServerName::try_from("up.test").unwrap();
        let mut up = Up::connect(cfg, name, sock).unwrap();
        let got = read_all(&mut up);
        assert!(got == want, "other plaintext than sent");
        assert!(up.reads > 20, "{} reads", up.reads);
        assert!(
            up.moves * 2 < up.reads,
            "{} moves for {} reads",
            up.moves,
            up.reads
        );
    }
}
