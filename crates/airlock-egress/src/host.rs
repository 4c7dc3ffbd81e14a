//! Host names as the policy sees them: one canonical spelling, or a refusal saying why.
//!
//! Every name that reaches a decision (SNI, Host header, CONNECT authority, DNS question,
//! configured pattern) goes through [`normalize`], so two spellings of one name can never get
//! two different answers.

use std::net::IpAddr;

/// Why a string is not a host name the policy will consider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("empty host name")]
    Empty,
    #[error("NUL byte in host name")]
    Nul,
    #[error("literal IPs are not allowed; use a name")]
    IpLiteral,
    #[error("host name longer than 253 characters")]
    TooLong,
    #[error("empty label in host name")]
    EmptyLabel,
    #[error("label longer than 63 characters in host name")]
    LabelTooLong,
    #[error("character {0:?} is not allowed in a host name (letters, digits and '-' only)")]
    BadChar(char),
    #[error("a label in a host name cannot start or end with '-'")]
    HyphenEdge,
    #[error("non-ASCII host name; use its xn-- (punycode) form")]
    NonAscii,
    #[error("invalid port in {0:?}")]
    BadPort(String),
}

/// The canonical form of a host name: ASCII lowercase, one trailing dot removed, letters,
/// digits and inner hyphens only, no IP literal in any spelling (dotted, decimal, hex, octal,
/// bracketed IPv6).
pub fn normalize(raw: &str) -> Result<String, HostError> {
    if raw.contains('\0') {
        return Err(HostError::Nul);
    }
    if raw.starts_with('[') || raw.parse::<IpAddr>().is_ok() {
        return Err(HostError::IpLiteral);
    }
    if !raw.is_ascii() {
        return Err(HostError::NonAscii);
    }
    let name = raw.strip_suffix('.').unwrap_or(raw);
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    if name.len() > 253 {
        return Err(HostError::TooLong);
    }
    let name = name.to_ascii_lowercase();
    for label in name.split('.') {
        if label.is_empty() {
            return Err(HostError::EmptyLabel);
        }
        if label.len() > 63 {
            return Err(HostError::LabelTooLong);
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(HostError::BadChar(c));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(HostError::HyphenEdge);
        }
    }
    if looks_numeric(&name) {
        return Err(HostError::IpLiteral);
    }
    Ok(name)
}

/// Whether the resolver library of some client would read this as an address: `inet_aton`
/// accepts `127.1`, `2130706433`, `0x7f000001`, `0177.0.0.1`; all have a numeric last part.
/// No real top-level domain is numeric, so such names are treated as literals.
fn looks_numeric(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()));
    hex || last.chars().all(|c| c.is_ascii_digit())
}

/// Split `host[:port]` or `[v6]:port` (as found in a Host header or a CONNECT target). The host
/// part is returned raw; the caller normalizes it.
pub fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), HostError> {
    if let Some(rest) = authority.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return Err(HostError::IpLiteral);
        };
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(parse_port(p, authority)?),
            None if after.is_empty() => None,
            None => return Err(HostError::BadPort(authority.to_string())),
        };
        return Ok((&authority[..end + 2], port));
    }
    match authority.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 literal.
        Some((h, _)) if h.contains(':') => Err(HostError::IpLiteral),
        Some((h, p)) => Ok((h, Some(parse_port(p, authority)?))),
        None => Ok((authority, None)),
    }
}

fn parse_port(p: &str, whole: &str) -> Result<u16, HostError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::BadPort(whole.to_string()));
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(HostError::BadPort(whole.to_string())),
        Ok(n) => Ok(n),
    }
}

/// A host string made safe to show in a message or the journal: at most 255 characters,
/// control characters escaped.
pub fn display(raw: &str) -> String {
    let mut out: String = raw.chars().take(255).flat_map(char::escape_debug).collect();
    if raw.chars().count() > 255 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(normalize("GitHub.COM").unwrap(), "github.com");
        assert_eq!(normalize("github.com.").unwrap(), "github.com");
        assert_eq!(normalize("a-b.x1.io").unwrap(), "a-b.x1.io");
        assert_eq!(normalize("localhost").unwrap(), "localhost");
    }

    #[test]
    fn refusals() {
        let cases: &[(&str, HostError)] = &[
            ("", HostError::Empty),
            (".", HostError::Empty),
            ("github.com..", HostError::EmptyLabel),
            (".github.com", HostError::EmptyLabel),
            ("git\0hub.com", HostError::Nul),
            ("github.com\0.evil.com", HostError::Nul),
            ("git_hub.com", HostError::BadChar('_')),
            ("git hub.com", HostError::BadChar(' ')),
            ("github.com/x", HostError::BadChar('/')),
            ("*.github.com", HostError::BadChar('*')),
            ("-a.com", HostError::HyphenEdge),
            ("a-.com", HostError::HyphenEdge),
            ("bücher.de", HostError::NonAscii),
            ("127.0.0.1", HostError::IpLiteral),
            ("127.1", HostError::IpLiteral),
            ("2130706433", HostError::IpLiteral),
            ("0x7f000001", HostError::IpLiteral),
            ("0177.0.0.1", HostError::IpLiteral),
            ("0x7f.0.0.1", HostError::IpLiteral),
            ("::1", HostError::IpLiteral),
            ("::ffff:169.254.169.254", HostError::IpLiteral),
            ("[::1]", HostError::IpLiteral),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw).as_ref(), Err(want), "{raw:?}");
        }
        assert_eq!(normalize(&"a".repeat(64)), Err(HostError::LabelTooLong));
        assert_eq!(normalize(&["abc"; 70].join(".")), Err(HostError::TooLong));
    }

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("a.com").unwrap(), ("a.com", None));
        assert_eq!(
            split_host_port("a.com:8080").unwrap(),
            ("a.com", Some(8080))
        );
        assert_eq!(split_host_port("[::1]:443").unwrap(), ("[::1]", Some(443)));
        assert_eq!(split_host_port("[::1]").unwrap(), ("[::1]", None));
        assert_eq!(split_host_port("::1"), Err(HostError::IpLiteral));
        assert!(split_host_port("a.com:").is_err());
        assert!(split_host_port("a.com:0").is_err());
        assert!(split_host_port("a.com:65536").is_err());
        assert!(split_host_port("a.com:+80").is_err());
        assert!(split_host_port("[::1]x").is_err());
    }

    #[test]
    fn display_escapes() {
        assert_eq!(display("a\0b\n"), "a\\0b\\n");
        assert_eq!(display(&"x".repeat(300)).chars().count(), 256);
    }
}
