//! Secrets the sandbox can use but never see: inside it holds a random placeholder; requests
//! to the hosts a secret is bound to get the real value put in the one place the secret was
//! configured for (a header, `Authorization: Bearer`, basic auth, a query parameter).
//!
//! This module is the pure part: placeholders, and the rewrite of one request head for one
//! host (see [`Secrets::rewrite`]). The TLS side is [`crate::intercept`].

use crate::http::body::BodyFramer;
use crate::http::{BodyLength, HttpError, Request, Target};
use base64::Engine as _;

/// Where a secret's value goes in a request to a bound host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum At {
    /// The placeholder is replaced inside this header's value (`x-api-key: PLACEHOLDER`).
    Header(String),
    /// `Authorization: Bearer PLACEHOLDER`.
    Bearer,
    /// `Authorization: Basic base64(user:pass)`, the placeholder inside the decoded text.
    Basic,
    /// A query parameter of the request target (`?key=PLACEHOLDER`).
    Query(String),
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::Header(h) => write!(f, "header {}", h.to_ascii_lowercase()),
            At::Bearer => f.write_str("authorization bearer"),
            At::Basic => f.write_str("authorization basic"),
            At::Query(q) => write!(f, "query parameter {q}"),
        }
    }
}

/// One secret bound to hosts. The value lives only here, in the host-side process's memory.
pub struct Binding {
    pub name: String,
    /// What the sandbox holds instead of the value.
    pub placeholder: String,
    value: String,
    /// Normalized host names (exact matches).
    pub hosts: Vec<String>,
    pub at: At,
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binding")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("secret {0}: `inject.hosts` is empty")]
    NoHosts(String),
    #[error("secret {name}: bad host {host:?} in `inject.hosts`: {why}")]
    BadHost {
        name: String,
        host: String,
        why: String,
    },
    #[error("secret {0}: an injected value must be printable text without line breaks or control characters")]
    BadValue(String),
    #[error("cannot make a random placeholder: {0}")]
    Random(String),
    #[error("secret {0}: not an airlock placeholder")]
    BadPlaceholder(String),
}

/// A binding as it travels from a warm-pool claimer to the member's egress process (its
/// supervisor's policy socket: a Unix socket in a folder the sandbox never sees), which
/// re-checks it ([`Binding::from_wire`]). Not `Debug`: it holds the value.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct WireBinding {
    pub name: String,
    pub placeholder: String,
    value: String,
    pub hosts: Vec<String>,
    pub at: At,
}

impl Binding {
    /// This binding for the member that is to hold it (placeholder and value included).
    pub fn to_wire(&self) -> WireBinding {
        WireBinding {
            name: self.name.clone(),
            placeholder: self.placeholder.clone(),
            value: self.value.clone(),
            hosts: self.hosts.clone(),
            at: self.at.clone(),
        }
    }

    /// A binding received from a claimer, checked as [`Binding::new`] checks one, keeping its
    /// placeholder (the one the sandbox was given), which must look like [`placeholder`]'s.
    pub fn from_wire(w: WireBinding) -> Result<Self, BindError> {
        let mut b = Self::checked(&w.name, w.value, &w.hosts, w.at)?;
        let hex = w.placeholder.strip_prefix("airlock-placeholder-");
        if !hex.is_some_and(|h| h.len() == 32 && h.bytes().all(|c| c.is_ascii_hexdigit())) {
            return Err(BindError::BadPlaceholder(w.name));
        }
        b.placeholder = w.placeholder;
        Ok(b)
    }

    /// A binding with a fresh random placeholder.
    pub fn new(name: &str, value: String, hosts: &[String], at: At) -> Result<Self, BindError> {
        let mut b = Self::checked(name, value, hosts, at)?;
        b.placeholder = placeholder()?;
        Ok(b)
    }

    /// The checked binding, placeholder not yet set.
    fn checked(name: &str, value: String, hosts: &[String], at: At) -> Result<Self, BindError> {
        if hosts.is_empty() {
            return Err(BindError::NoHosts(name.into()));
        }
        let hosts = hosts
            .iter()
            .map(|h| {
                if h.contains('*') {
                    return Err(BindError::BadHost {
                        name: name.into(),
                        host: h.clone(),
                        why: "wildcards are not accepted: name each host".into(),
                    });
                }
                crate::host::normalize(h).map_err(|e| BindError::BadHost {
                    name: name.into(),
                    host: h.clone(),
                    why: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The value goes into a header line or a URL: no way to end the line or smuggle bytes.
        if value.is_empty() || value.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(BindError::BadValue(name.into()));
        }
        Ok(Self {
            name: name.into(),
            placeholder: String::new(),
            value,
            hosts,
            at,
        })
    }

    fn bound_to(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h == host)
    }
}

/// `airlock-placeholder-` and 32 random hex digits: unique per secret and start, URL- and
/// header-safe, and never a prefix of another placeholder.
pub fn placeholder() -> Result<String, BindError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| BindError::Random("the system random source failed".into()))?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("airlock-placeholder-{hex}"))
}

/// One secret put into a request (for the journal: name and place, never the value).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Injected {
    pub secret: String,
    #[serde(rename = "at")]
    pub at: String,
}

/// A request that carries a placeholder to a host its secret is not bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub secret: String,
    /// Where it was seen: `header NAME`, `request target`, `body`.
    pub place: String,
    /// The hosts the secret may go to.
    pub bound: Vec<String>,
}

impl Leak {
    pub fn reason(&self, host: &str) -> String {
        format!(
            "the request to {host} carries the placeholder of secret {} (in the {}); it is only put into requests to {}",
            self.secret,
            self.place,
            self.bound.join(", ")
        )
    }
}

/// All bindings of one sandbox.
#[derive(Debug, Default)]
pub struct Secrets {
    bindings: Vec<Binding>,
}

impl Secrets {
    pub fn new(bindings: Vec<Binding>) -> Self {
        Self { bindings }
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// Whether connections to `host` (normalized) are intercepted: some secret is bound to it.
    pub fn intercepts(&self, host: &str) -> bool {
        self.bindings.iter().any(|b| b.bound_to(host))
    }

    /// Every bound host, sorted and without repeats.
    pub fn hosts(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .bindings
            .iter()
            .flat_map(|b| b.hosts.iter().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The first placeholder in `data` of a secret *not* bound to `host` (`None` for plain
    /// HTTP: no host gets a value in clear text, so every placeholder counts).
    pub fn leak_in(&self, data: &[u8], host: Option<&str>, place: &str) -> Option<Leak> {
        self.bindings
            .iter()
            .filter(|b| host.is_none_or(|h| !b.bound_to(h)))
            .find(|b| contains(data, b.placeholder.as_bytes()))
            .map(|b| self.leak(b, place))
    }

    fn leak(&self, b: &Binding, place: &str) -> Leak {
        Leak {
            secret: b.name.clone(),
            place: place.into(),
            bound: b.hosts.clone(),
        }
    }

    /// The longest placeholder (a body scanner keeps this many bytes minus one between reads).
    pub fn max_placeholder(&self) -> usize {
        self.bindings
            .iter()
            .map(|b| b.placeholder.len())
            .max()
            .unwrap_or(0)
    }

    /// Check a request head for plain HTTP (no TLS): any placeholder anywhere is a leak.
    pub fn check_plain(&self, req: &Request) -> Result<(), Leak> {
        match self.scan_head(req, None) {
            Some(l) => Err(l),
            None => Ok(()),
        }
    }

    fn scan_head(&self, req: &Request, host: Option<&str>) -> Option<Leak> {
        let target = match &req.target {
            Target::Origin(t) | Target::Authority(t) => t.clone(),
            Target::Absolute {
                authority, path, ..
            } => format!("{authority}{path}"),
            Target::Asterisk => String::new(),
        };
        if let Some(l) = self.leak_in(target.as_bytes(), host, "request target") {
            return Some(l);
        }
        for (name, value) in &req.headers {
            let place = format!("header {}", name.to_ascii_lowercase());
            if let Some(l) = self.leak_in(value, host, &place) {
                return Some(l);
            }
            if let Some(decoded) = basic_decoded(name, value) {
                if let Some(l) = self.leak_in(&decoded, host, &place) {
                    return Some(l);
                }
            }
        }
        None
    }

    /// The request for `host` (the normalized name that is both the TLS server name and the
    /// Host), with every secret bound to `host` put in its configured place, and only there.
    /// A placeholder of a secret not bound to `host`, anywhere in the head, is a [`Leak`].
    pub fn rewrite(&self, req: &Request, host: &str) -> Result<(Request, Vec<Injected>), Leak> {
        if let Some(l) = self.scan_head(req, Some(host)) {
            return Err(l);
        }
        let mut out = req.clone();
        let mut done = Vec::new();
        for b in self.bindings.iter().filter(|b| b.bound_to(host)) {
            let ph = b.placeholder.as_bytes();
            let val = b.value.as_bytes();
            let mut hit = false;
            match &b.at {
                At::Header(h) => {
                    for (name, value) in out.headers.iter_mut() {
                        if name.eq_ignore_ascii_case(h) && contains(value, ph) {
                            *value = replace(value, ph, val);
                            hit = true;
                        }
                    }
                }
                At::Bearer => {
                    for (name, value) in out.headers.iter_mut() {
                        if !name.eq_ignore_ascii_case("authorization") {
                            continue;
                        }
                        if let Some(token) = strip_scheme(value, b"bearer") {
                            if token == ph {
                                let mut v = b"Bearer ".to_vec();
                                v.extend_from_slice(val);
                                *value = v;
                                hit = true;
                            }
                        }
                    }
                }
                At::Basic => {
                    for (name, value) in out.headers.iter_mut() {
                        let Some(decoded) = basic_decoded(name, value) else {
                            continue;
                        };
                        if contains(&decoded, ph) {
                            let swapped = replace(&decoded, ph, val);
                            let enc = base64::engine::general_purpose::STANDARD.encode(swapped);
                            *value = format!("Basic {enc}").into_bytes();
                            hit = true;
                        }
                    }
                }
                At::Query(param) => {
                    if let Target::Origin(t) = &mut out.target {
                        if let Some(new) = swap_query(t, param, &b.placeholder, &b.value) {
                            *t = new;
                            hit = true;
                        }
                    }
                }
            }
            if hit {
                done.push(Injected {
                    secret: b.name.clone(),
                    at: b.at.to_string(),
                });
            }
        }
        Ok((out, done))
    }
}

fn strip_scheme<'a>(value: &'a [u8], scheme: &[u8]) -> Option<&'a [u8]> {
    let n = scheme.len();
    (value.len() > n + 1 && value[..n].eq_ignore_ascii_case(scheme) && value[n] == b' ')
        .then(|| value[n + 1..].trim_ascii())
}

/// The decoded credentials of `Authorization: Basic ...` (or `Proxy-Authorization`).
fn basic_decoded(name: &str, value: &[u8]) -> Option<Vec<u8>> {
    if !name.eq_ignore_ascii_case("authorization")
        && !name.eq_ignore_ascii_case("proxy-authorization")
    {
        return None;
    }
    let enc = strip_scheme(value, b"basic")?;
    base64::engine::general_purpose::STANDARD.decode(enc).ok()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn replace(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len() + with.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// `path?a=1&key=PH` → `path?a=1&key=VALUE` (the value percent-encoded).
fn swap_query(target: &str, param: &str, ph: &str, value: &str) -> Option<String> {
    let (path, query) = target.split_once('?')?;
    let mut hit = false;
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if k == param && v == ph => {
                hit = true;
                format!("{k}={}", percent_encode(value))
            }
            _ => kv.to_string(),
        })
        .collect();
    hit.then(|| format!("{path}?{}", parts.join("&")))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Finds placeholders of secrets not bound to a host in a byte stream read in pieces (a
/// request body): keeps the tail of the previous piece so one split across reads is found.
pub struct BodyScan<'a> {
    secrets: &'a Secrets,
    host: Option<&'a str>,
    tail: Vec<u8>,
    keep: usize,
}

impl<'a> BodyScan<'a> {
    pub fn new(secrets: &'a Secrets, host: Option<&'a str>) -> Self {
        Self {
            secrets,
            host,
            tail: Vec::new(),
            keep: secrets.max_placeholder().saturating_sub(1),
        }
    }

    pub fn feed(&mut self, data: &[u8]) -> Result<(), Leak> {
        if self.secrets.is_empty() || data.is_empty() {
            return Ok(());
        }
        self.tail.extend_from_slice(data);
        if let Some(l) = self.secrets.leak_in(&self.tail, self.host, "body") {
            return Err(l);
        }
        let cut = self.tail.len().saturating_sub(self.keep);
        self.tail.drain(..cut);
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// Why a request body stops being forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyStop {
    /// The framing is broken (the connection ends).
    Malformed(HttpError),
    /// It carries a placeholder that must not go to this host.
    Leak(Leak),
}

/// A request body as it streams from the sandbox: where it ends, and any placeholder of a
/// secret not bound to the host in it — both in the bytes as sent (chunk extensions and
/// trailers too) and in the content the server puts together from them (a placeholder split
/// across two chunks, `ab\r\n1a\r\ncd`, is one there).
pub struct BodyCheck<'a> {
    framer: BodyFramer,
    wire: BodyScan<'a>,
    /// Chunked bodies only (otherwise the content is the bytes as sent).
    content: Option<BodyScan<'a>>,
}

impl<'a> BodyCheck<'a> {
    pub fn new(secrets: &'a Secrets, host: Option<&'a str>, len: BodyLength) -> Self {
        Self {
            framer: BodyFramer::new(len),
            wire: BodyScan::new(secrets, host),
            content: (len == BodyLength::Chunked).then(|| BodyScan::new(secrets, host)),
        }
    }

    /// The body is complete.
    pub fn done(&self) -> bool {
        self.framer.done()
    }

    /// The next bytes from the sandbox: how many of them belong to the body (a prefix), or why
    /// none of them may be forwarded.
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, BodyStop> {
        let mut leak = None;
        let content = &mut self.content;
        let take = self
            .framer
            .feed_payload(data, |piece| {
                if let (None, Some(c)) = (&leak, content.as_mut()) {
                    leak = c.feed(piece).err();
                }
            })
            .map_err(BodyStop::Malformed)?;
        match leak.or_else(|| self.wire.feed(&data[..take]).err()) {
            Some(l) => Err(BodyStop::Leak(l)),
            None => Ok(take),
        }
    }
}
