//! The server name of a TLS connection, read from its ClientHello.
//!
//! Handles a ClientHello split across reads ([`SniError::NeedMore`]) and fragmented across
//! several TLS records (an evasion trick against naive inspectors). Never panics on input.

/// TLS record content type for handshake messages.
const HANDSHAKE: u8 = 22;
/// The largest ClientHello this inspector buffers.
pub const MAX_HELLO: usize = 32 * 1024;

const EXT_SERVER_NAME: u16 = 0;
const EXT_ECH: u16 = 0xfe0d;
const EXT_ESNI: u16 = 0xffce;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SniError {
    /// The ClientHello is incomplete: read more and call again with all bytes so far.
    #[error("incomplete ClientHello")]
    NeedMore,
    #[error("not a TLS handshake")]
    NotTls,
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    #[error("ClientHello larger than {MAX_HELLO} bytes")]
    TooLarge,
    #[error("TLS without a server name")]
    NoServerName,
    #[error("TLS with an encrypted client hello (ECH/ESNI) hides its destination")]
    Encrypted,
}

/// Whether these first bytes of a connection look like the start of a TLS handshake.
pub fn looks_like_tls(buf: &[u8]) -> bool {
    buf.first() == Some(&HANDSHAKE) && !matches!(buf.get(1), Some(&v) if v != 3)
}

/// Reassemble the handshake bytes carried by consecutive handshake records at the start of
/// `buf`, until the first handshake message (the ClientHello) is complete.
fn hello_message(buf: &[u8]) -> Result<Vec<u8>, SniError> {
    let mut msg = Vec::new();
    let mut pos = 0;
    loop {
        let Some(hdr) = buf.get(pos..pos + 5) else {
            return Err(if buf.len() > MAX_HELLO {
                SniError::TooLarge
            } else {
                SniError::NeedMore
            });
        };
        if hdr[0] != HANDSHAKE {
            return Err(if pos == 0 {
                SniError::NotTls
            } else {
                SniError::Malformed("record of another type inside the ClientHello")
            });
        }
        if hdr[1] != 3 {
            return Err(SniError::NotTls);
        }
        let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
        if len == 0 {
            return Err(SniError::Malformed("empty handshake record"));
        }
        if len > 16384 {
            return Err(SniError::Malformed("record longer than 2^14"));
        }
        let Some(body) = buf.get(pos + 5..pos + 5 + len) else {
            return Err(if pos + 5 + len > MAX_HELLO {
                SniError::TooLarge
            } else {
                SniError::NeedMore
            });
        };
        msg.extend_from_slice(body);
        pos += 5 + len;
        if msg.len() >= 4 {
            if msg[0] != 1 {
                return Err(SniError::Malformed(
                    "first handshake message is not a ClientHello",
                ));
            }
            let want =
                4 + (usize::from(msg[1]) << 16 | usize::from(msg[2]) << 8 | usize::from(msg[3]));
            if want > MAX_HELLO {
                return Err(SniError::TooLarge);
            }
            if msg.len() >= want {
                msg.truncate(want);
                return Ok(msg);
            }
        }
    }
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SniError> {
        if self.b.len() < n {
            return Err(SniError::Malformed(what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, SniError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, SniError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], SniError> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], SniError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }
}

/// The server name a ClientHello asks for, as sent (not normalized: the policy does that, and
/// refuses NUL bytes, trailing garbage and literals). `buf` is everything read so far.
pub fn server_name(buf: &[u8]) -> Result<String, SniError> {
    let msg = hello_message(buf)?;
    let mut r = Reader { b: &msg[4..] };
    r.take(2, "version")?;
    r.take(32, "random")?;
    let sid = r.vec8("session id")?;
    if sid.len() > 32 {
        return Err(SniError::Malformed("session id longer than 32"));
    }
    let suites = r.vec16("cipher suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(SniError::Malformed("cipher suites"));
    }
    r.vec8("compression methods")?;
    if r.b.is_empty() {
        return Err(SniError::NoServerName);
    }
    let mut exts = Reader {
        b: r.vec16("extensions")?,
    };
    if !r.b.is_empty() {
        return Err(SniError::Malformed("bytes after the extensions"));
    }
    let mut name = None;
    let mut seen = Vec::new();
    let mut encrypted = false;
    while !exts.b.is_empty() {
        let ty = exts.u16("extension type")?;
        let body = exts.vec16("extension body")?;
        if seen.contains(&ty) {
            return Err(SniError::Malformed("duplicate extension"));
        }
        seen.push(ty);
        match ty {
            EXT_SERVER_NAME => name = Some(parse_server_name_ext(body)?),
            EXT_ECH | EXT_ESNI => encrypted = true,
            _ => {}
        }
    }
    if encrypted {
        return Err(SniError::Encrypted);
    }
    name.ok_or(SniError::NoServerName)
}

fn parse_server_name_ext(body: &[u8]) -> Result<String, SniError> {
    let mut r = Reader { b: body };
    let mut list = Reader {
        b: r.vec16("server name list")?,
    };
    if !r.b.is_empty() {
        return Err(SniError::Malformed("bytes after the server name list"));
    }
    let mut host = None;
    while !list.b.is_empty() {
        let kind = list.u8("server name type")?;
        let name = list.vec16("server name")?;
        if kind == 0 {
            if host.is_some() {
                return Err(SniError::Malformed("two host names in server_name"));
            }
            host = Some(name);
        }
    }
    let host = host.ok_or(SniError::NoServerName)?;
    if host.is_empty() {
        return Err(SniError::NoServerName);
    }
    // Not UTF-8 cannot be a host name; keep the bytes visible for the journal.
    Ok(String::from_utf8(host.to_vec())
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// A fatal `access_denied` alert, sent before closing a refused TLS connection.
pub const ALERT_ACCESS_DENIED: [u8; 7] = [21, 3, 3, 0, 2, 2, 49];
/// A fatal `internal_error` alert (the name was allowed but could not be reached).
pub const ALERT_INTERNAL_ERROR: [u8; 7] = [21, 3, 3, 0, 2, 2, 80];

/// Test helpers: hand-built ClientHellos.
#[doc(hidden)]
pub mod build {
    /// A ClientHello record with the given SNI host names (none = no SNI extension) and extra
    /// extensions, in one TLS record.
    pub fn client_hello(names: &[&[u8]], extra: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut exts = Vec::new();
        if !names.is_empty() {
            let mut list = Vec::new();
            for n in names {
                list.push(0);
                list.extend_from_slice(&(n.len() as u16).to_be_bytes());
                list.extend_from_slice(n);
            }
            let mut body = (list.len() as u16).to_be_bytes().to_vec();
            body.extend_from_slice(&list);
            push_ext(&mut exts, 0, &body);
        }
        // supported_versions (TLS 1.3, 1.2) and a dummy key share, like real clients send.
        push_ext(&mut exts, 43, &[4, 3, 4, 3, 3]);
        push_ext(&mut exts, 10, &[0, 2, 0, 29]);
        for (ty, body) in extra {
            push_ext(&mut exts, *ty, body);
        }
        let mut hello = vec![3, 3];
        hello.extend_from_slice(&[7; 32]);
        hello.push(32);
        hello.extend_from_slice(&[9; 32]);
        hello.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
        hello.extend_from_slice(&[1, 0]);
        hello.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        hello.extend_from_slice(&exts);
        let mut hs = vec![1];
        hs.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&hello);
        records(&hs, usize::MAX)
    }

    /// Wrap handshake bytes in handshake records of at most `chunk` bytes each.
    pub fn records(hs: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for part in hs.chunks(chunk.min(16384)) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    fn push_ext(out: &mut Vec<u8>, ty: u16, body: &[u8]) {
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod tests;
