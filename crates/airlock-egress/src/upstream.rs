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

/// Read buffer: four records per read while a download keeps the socket full. (256 KiB was
/// no cheaper: the socket's copies into it cost more than the system calls it saved.)
const IN_BUF: usize = 64 * 1024;
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
                ConnectionState::EncodeTlsData(mut e) => encode(&mut self.out, |b| e.encode(b))?,
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
        // Keep what is not processed (a partial record) at the front.
        if self.start > 0 {
            self.inb.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
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
                    encode(&mut self.out, |b| e.encode(b))?;
                    false
                }
                ConnectionState::TransmitTlsData(t) => {
                    self.sock.write_all(&self.out)?;
                    self.out.clear();
                    t.done();
                    false
                }
                ConnectionState::WriteTraffic(mut w) => {
                    encrypt(&mut self.out, |b| w.encrypt(data, b))?;
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
                ConnectionState::EncodeTlsData(mut e) => encode(&mut self.out, |b| e.encode(b))?,
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
                    if encode(&mut self.out, |b| e.encode(b)).is_err() {
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

/// Encode a handshake record at the end of `out` (grown as needed).
fn encode(
    out: &mut Vec<u8>,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
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
            Err(EncodeError::InsufficientSize(s)) => room = s.required_size,
            Err(e) => {
                out.truncate(at);
                return Err(io::Error::other(e.to_string()));
            }
        }
    }
}

/// Encrypt application data at the end of `out` (grown as needed).
fn encrypt(
    out: &mut Vec<u8>,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
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
            Err(EncryptError::InsufficientSize(s)) => room = s.required_size,
            Err(e) => {
                out.truncate(at);
                return Err(io::Error::other(e.to_string()));
            }
        }
    }
}
