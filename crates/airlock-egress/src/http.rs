//! HTTP/1.x request heads: what host a plain-HTTP connection (or an explicit-proxy request)
//! is for, strictly enough that the proxy and the origin server cannot disagree about it.
//!
//! Strict on purpose: CRLF line ends only, no folded headers, one Host, no NUL, no
//! Content-Length together with Transfer-Encoding, no userinfo in absolute targets, a head of
//! at most [`MAX_HEAD`] bytes. The proxy forwards one request per connection (see [`body`]) with
//! `Connection: close`, so a second request with another Host cannot ride along. (The
//! intercepting proxy for bound secrets parses each request on a kept-alive connection, and
//! response heads with [`parse_response`], see [`crate::intercept`].)

pub mod body;

use crate::host;

/// The largest request head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The head is incomplete: read more and call again with all bytes so far.
    #[error("incomplete request head")]
    NeedMore,
    #[error("not an HTTP/1 request")]
    NotHttp,
    #[error("request head longer than {MAX_HEAD} bytes")]
    TooLong,
    #[error("NUL byte in the request head")]
    Nul,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("request without a Host header")]
    NoHost,
    #[error("the request target names {target} but the Host header says {host} (domain fronting)")]
    Mismatch { target: String, host: String },
    #[error("unsupported request: {0}")]
    Unsupported(&'static str),
}

/// The request target, in the forms RFC 9112 §3.2 defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/path?query`
    Origin(String),
    /// `http://authority/path?query` (explicit proxy requests)
    Absolute {
        scheme: String,
        authority: String,
        path: String,
    },
    /// `host:port` (CONNECT)
    Authority(String),
    /// `*` (OPTIONS)
    Asterisk,
}

/// How the request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: Target,
    /// The `x` of `HTTP/1.x`.
    pub minor: u8,
    /// Header fields in order, names as sent, values without surrounding whitespace.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The Host header's value, if there was one.
    pub host: Option<String>,
    pub body: BodyLength,
    /// Bytes of `buf` the head took, including the final empty line.
    pub head_len: usize,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether the first bytes of a connection can be the start of an HTTP/1 request; `false`
/// means it certainly is not.
pub fn looks_like_http(buf: &[u8]) -> bool {
    let method: Vec<u8> = buf
        .iter()
        .copied()
        .take_while(|&b| b != b' ')
        .take(21)
        .collect();
    if method.len() > 20 || !method.iter().all(|&b| is_tchar(b)) {
        return false;
    }
    !method.is_empty()
}

/// Parse the request head at the start of `buf` (everything read so far).
pub fn parse(buf: &[u8]) -> Result<Request, HttpError> {
    if !looks_like_http(buf) {
        return Err(HttpError::NotHttp);
    }
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
        if window.contains(&0) {
            return Err(HttpError::Nul);
        }
        // A complete first line that is not a request line: fail early.
        if let Some(eol) = window.iter().position(|&b| b == b'\n') {
            parse_request_line(&window[..eol.saturating_sub(1)])?;
        }
        return Err(if buf.len() >= MAX_HEAD {
            HttpError::TooLong
        } else {
            HttpError::NeedMore
        });
    };
    let head = &buf[..end + 2];
    if head.contains(&0) {
        return Err(HttpError::Nul);
    }
    let mut lines = Vec::new();
    let mut rest = head;
    while !rest.is_empty() {
        let eol = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(HttpError::Malformed("line without an end"))?;
        if eol == 0 || rest[eol - 1] != b'\r' {
            return Err(HttpError::Malformed("bare LF line end"));
        }
        let line = &rest[..eol - 1];
        if line.contains(&b'\r') {
            return Err(HttpError::Malformed("bare CR"));
        }
        lines.push(line);
        rest = &rest[eol + 1..];
    }
    let (method, target, minor) = parse_request_line(lines[0])?;
    let mut headers = Vec::new();
    for line in &lines[1..] {
        headers.push(parse_header(line)?);
    }
    let mut host = None;
    let mut te: Option<&[u8]> = None;
    let mut cl: Option<u64> = None;
    for (name, value) in &headers {
        if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(HttpError::DuplicateHost);
            }
            host = Some(
                String::from_utf8(value.clone())
                    .map_err(|_| HttpError::Malformed("non-ASCII Host"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if te.is_some() {
                return Err(HttpError::Unsupported(
                    "more than one Transfer-Encoding header",
                ));
            }
            te = Some(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(value)?;
            if cl.is_some_and(|c| c != n) {
                return Err(HttpError::Malformed("conflicting Content-Length headers"));
            }
            cl = Some(n);
        }
    }
    let body = match (te, cl) {
        (Some(_), Some(_)) => {
            return Err(HttpError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ))
        }
        (Some(v), None) if minor >= 1 && v.eq_ignore_ascii_case(b"chunked") => BodyLength::Chunked,
        (Some(_), None) => {
            return Err(HttpError::Unsupported(
                "a transfer coding other than chunked",
            ))
        }
        (None, Some(n)) => BodyLength::Length(n),
        (None, None) => BodyLength::None,
    };
    Ok(Request {
        method,
        target,
        minor,
        headers,
        host,
        body,
        head_len: end + 4,
    })
}

fn parse_content_length(v: &[u8]) -> Result<u64, HttpError> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::Malformed("bad Content-Length"));
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(HttpError::Malformed("bad Content-Length"))
}

fn parse_request_line(line: &[u8]) -> Result<(String, Target, u8), HttpError> {
    let text =
        std::str::from_utf8(line).map_err(|_| HttpError::Malformed("non-ASCII request line"))?;
    let mut parts = text.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::NotHttp);
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(HttpError::NotHttp);
    }
    let minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return Err(HttpError::NotHttp),
    };
    if target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#') {
        return Err(HttpError::Malformed("request target"));
    }
    let target = if method == "CONNECT" {
        Target::Authority(target.to_string())
    } else if target.starts_with('/') {
        Target::Origin(target.to_string())
    } else if target == "*" && method == "OPTIONS" {
        Target::Asterisk
    } else if let Some((scheme, rest)) = target.split_once("://") {
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(HttpError::Unsupported(
                "an absolute target other than http:// (use CONNECT for https)",
            ));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty() {
            return Err(HttpError::Malformed("absolute target without a host"));
        }
        if authority.contains('@') {
            return Err(HttpError::Malformed("user info in the request target"));
        }
        let path = if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Target::Absolute {
            scheme: scheme.to_ascii_lowercase(),
            authority: authority.to_string(),
            path,
        }
    } else {
        return Err(HttpError::Malformed("request target"));
    };
    Ok((method.to_string(), target, minor))
}

fn parse_header(line: &[u8]) -> Result<(String, Vec<u8>), HttpError> {
    if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
        return Err(HttpError::Malformed("folded header line"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(HttpError::Malformed("header line without a colon"))?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::Malformed("header name"));
    }
    let value = line[colon + 1..].trim_ascii();
    if value.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f) {
        return Err(HttpError::Malformed("control character in a header value"));
    }
    Ok((String::from_utf8_lossy(name).into_owned(), value.to_vec()))
}

/// Host part (raw) and port of an authority, for comparisons.
fn host_key(authority: &str) -> Result<(String, Option<u16>), HttpError> {
    let (h, p) =
        host::split_host_port(authority).map_err(|_| HttpError::Malformed("bad authority"))?;
    let h = host::normalize(h).unwrap_or_else(|_| h.to_ascii_lowercase());
    Ok((h, p))
}

impl Request {
    /// The host (as written, for the policy to normalize and judge) and port this request is
    /// for. The request target and the Host header must agree: a mismatch is domain fronting.
    /// `default_port` applies when neither names a port.
    pub fn authority(&self, default_port: u16) -> Result<(String, u16), HttpError> {
        let from_target = match &self.target {
            Target::Absolute { authority, .. } => {
                let (h, p) = host::split_host_port(authority)
                    .map_err(|_| HttpError::Malformed("bad authority in the target"))?;
                Some((h.to_string(), p.unwrap_or(80), authority))
            }
            Target::Authority(authority) => {
                let (h, p) = host::split_host_port(authority)
                    .map_err(|_| HttpError::Malformed("bad CONNECT target"))?;
                let p = p.ok_or(HttpError::Malformed("CONNECT target without a port"))?;
                Some((h.to_string(), p, authority))
            }
            Target::Origin(_) | Target::Asterisk => None,
        };
        let host = self.host.as_deref().filter(|h| !h.is_empty());
        match (from_target, host) {
            (Some((h, p, authority)), Some(header)) => {
                let (th, _) = host_key(authority)?;
                let (hh, hp) =
                    host_key(header).map_err(|_| HttpError::Malformed("bad Host header"))?;
                if th != hh || hp.is_some_and(|hp| hp != p) {
                    return Err(HttpError::Mismatch {
                        target: host::display(authority),
                        host: host::display(header),
                    });
                }
                Ok((h, p))
            }
            (Some((h, p, _)), None) => Ok((h, p)),
            (None, Some(header)) => {
                let (h, p) = host::split_host_port(header)
                    .map_err(|_| HttpError::Malformed("bad Host header"))?;
                Ok((h.to_string(), p.unwrap_or(default_port)))
            }
            (None, None) => Err(HttpError::NoHost),
        }
    }

    /// The head to send upstream: origin-form target, hop-by-hop and proxy headers removed,
    /// a Host header guaranteed, and `Connection: close` so the origin serves this one request.
    pub fn forward_head(&self) -> Vec<u8> {
        self.forward_head_with(false)
    }

    /// Whether the client asked to keep the connection open after this request (HTTP/1.1
    /// without `Connection: close`).
    pub fn keep_alive(&self) -> bool {
        self.minor >= 1 && !has_token(&self.headers, "connection", "close")
    }

    /// [`forward_head`](Self::forward_head), but for a connection the proxy keeps open to the
    /// origin (`keep_alive`: no `Connection: close`; HTTP/1.1 only).
    pub fn forward_head_with(&self, keep_alive: bool) -> Vec<u8> {
        let (target, authority) = match &self.target {
            Target::Origin(t) => (t.as_str(), None),
            Target::Absolute {
                authority, path, ..
            } => (path.as_str(), Some(authority.as_str())),
            Target::Authority(a) => (a.as_str(), None),
            Target::Asterisk => ("*", None),
        };
        let mut out = format!("{} {} HTTP/1.{}\r\n", self.method, target, self.minor).into_bytes();
        if let (None, Some(a)) = (&self.host, authority) {
            out.extend_from_slice(format!("Host: {a}\r\n").as_bytes());
        }
        const HOP: &[&str] = &[
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authorization",
            "proxy-authenticate",
            "te",
            "upgrade",
        ];
        for (name, value) in &self.headers {
            if HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        if keep_alive && self.minor >= 1 {
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(b"Connection: close\r\n\r\n");
        }
        out
    }
}

/// Whether a comma-separated header (`Connection`, `Transfer-Encoding`) lists `token`.
fn has_token(headers: &[(String, Vec<u8>)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The largest response head the intercepting proxy parses (longer ones are relayed raw).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// How a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// A 1xx interim response (not 101): another head follows.
    Interim,
    /// Delimited: no body, a length or chunked ([`body::BodyFramer`] finds the end).
    Framed(BodyLength),
    /// Until the server closes the connection (no length, a 101, or another coding).
    UntilClose,
}

/// A parsed response head (only what framing and connection reuse need).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: ResponseBody,
    /// The server will close the connection after this response.
    pub close: bool,
    /// Bytes the head took, including the final empty line.
    pub head_len: usize,
}

/// Parse the response head at the start of `buf` (to a request with `method`).
pub fn parse_response(buf: &[u8], method: &str) -> Result<Response, HttpError> {
    let window = &buf[..buf.len().min(MAX_RESPONSE_HEAD)];
    let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(if buf.len() >= MAX_RESPONSE_HEAD {
            HttpError::TooLong
        } else {
            HttpError::NeedMore
        });
    };
    let head = &buf[..end + 2];
    if head.contains(&0) {
        return Err(HttpError::Nul);
    }
    let mut lines = head.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let first = lines
        .next()
        .and_then(|l| l.strip_suffix(b"\r"))
        .ok_or(HttpError::Malformed("status line"))?;
    let minor = match first.get(..9) {
        Some(b"HTTP/1.1 ") => 1,
        Some(b"HTTP/1.0 ") => 0,
        _ => return Err(HttpError::NotHttp),
    };
    let status = first
        .get(9..12)
        .filter(|d| d.iter().all(u8::is_ascii_digit))
        .filter(|_| first.get(12).is_none_or(|&b| b == b' '))
        .and_then(|d| std::str::from_utf8(d).ok()?.parse::<u16>().ok())
        .ok_or(HttpError::Malformed("status code"))?;
    let mut headers = Vec::new();
    for line in lines {
        let line = line
            .strip_suffix(b"\r")
            .ok_or(HttpError::Malformed("bare LF line end"))?;
        if line.contains(&b'\r') {
            return Err(HttpError::Malformed("bare CR"));
        }
        headers.push(parse_header(line)?);
    }
    let mut cl: Option<u64> = None;
    let mut te = false;
    for (name, value) in &headers {
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(value)?;
            if cl.is_some_and(|c| c != n) {
                return Err(HttpError::Malformed("conflicting Content-Length headers"));
            }
            cl = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
        }
    }
    let chunked_last = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .rfind(|t| !t.is_empty())
        .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
    let body = match status {
        101 => ResponseBody::UntilClose,
        100..=199 => ResponseBody::Interim,
        204 | 304 => ResponseBody::Framed(BodyLength::None),
        _ if method.eq_ignore_ascii_case("HEAD") => ResponseBody::Framed(BodyLength::None),
        _ if te && chunked_last => ResponseBody::Framed(BodyLength::Chunked),
        _ if te => ResponseBody::UntilClose,
        _ => match cl {
            Some(n) => ResponseBody::Framed(BodyLength::Length(n)),
            None => ResponseBody::UntilClose,
        },
    };
    let close = has_token(&headers, "connection", "close")
        || (minor == 0 && !has_token(&headers, "connection", "keep-alive"))
        || body == ResponseBody::UntilClose;
    Ok(Response {
        status,
        body,
        close,
        head_len: end + 4,
    })
}

/// A complete plain-text response (`403 Forbidden`, `502 Bad Gateway`, ...), closing the
/// connection.
pub fn response(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests;
