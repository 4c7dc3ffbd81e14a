//! Policy vocabulary: the enums and small value types every layer shares.
//!
//! Everything here is plain data with parsing and display; no I/O.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A named bundle of policy defaults (SPEC §2). Explicit options override it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// No network, read-only rootfs, no workspace write-back (bind refused).
    Restrictive,
    /// Filtered network, copy-on-write workspace.
    #[default]
    Moderate,
    /// Open network, writable bind of the workspace allowed, host env passthrough.
    Permissive,
}

/// Network egress mode (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// Loopback only.
    Off,
    /// Default deny, allowlisted domains through the host-side proxy.
    Filtered,
    /// Outbound allowed except the metadata floor and host loopback.
    Open,
}

/// How the project directory enters the sandbox (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceMode {
    /// A git clone of the host repo on branch airlock/NAME.
    Clone,
    /// Copy-on-write over the host directory; the host is never modified.
    Overlay,
    /// Writable bind mount: writes reach the host.
    Bind,
    /// No workspace at all.
    None,
}

/// Which isolation mechanism runs the sandbox (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Container,
    Microvm,
}

/// `--compatibility-mode` / `[agent] compatibility_mode`: one switch that sets what an agent
/// expects (profile, its API domains, the common package registries, the workspace mode); see
/// `config::compatibility_layer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompatibilityMode {
    Claude,
    Codex,
    Gemini,
    /// airlock's own defaults and no project workspace (agentkernel's `native`).
    Native,
}

/// home_files modes (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HomeFileMode {
    Immutable,
    Seed,
    Link,
}

macro_rules! str_enum {
    ($ty:ident, $what:literal { $($variant:ident => $s:literal),+ $(,)? }) => {
        impl $ty {
            /// Every accepted spelling, for error messages and `--help`.
            pub const NAMES: &'static [&'static str] = &[$($s),+];
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $s),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($ty::$variant),)+
                    _ => Err(ParseEnumError { what: $what, got: s.to_string(), expected: Self::NAMES }),
                }
            }
        }
    };
}

str_enum!(Profile, "profile" { Restrictive => "restrictive", Moderate => "moderate", Permissive => "permissive" });
str_enum!(NetMode, "network mode" { Off => "off", Filtered => "filtered", Open => "open" });
str_enum!(WorkspaceMode, "workspace mode" { Clone => "clone", Overlay => "overlay", Bind => "bind", None => "none" });
str_enum!(BackendKind, "backend" { Container => "container", Microvm => "microvm" });
str_enum!(HomeFileMode, "home file mode" { Immutable => "immutable", Seed => "seed", Link => "link" });
str_enum!(CompatibilityMode, "compatibility mode" { Claude => "claude", Codex => "codex", Gemini => "gemini", Native => "native" });

/// A value that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {got:?}: expected one of {}", expected.join(", "))]
pub struct ParseEnumError {
    pub what: &'static str,
    pub got: String,
    pub expected: &'static [&'static str],
}

/// A size in bytes, written as `512M`, `8G`, `1.5G`, `65536` (binary units: K=1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid size {0:?}: expected a number with an optional K, M, G or T suffix (e.g. 512M, 8G)"
)]
pub struct ParseSizeError(pub String);

impl FromStr for ByteSize {
    type Err = ParseSizeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseSizeError(s.to_string());
        let t = s.trim();
        let t = t.strip_suffix(['b', 'B']).unwrap_or(t);
        let t = t.strip_suffix(['i']).unwrap_or(t);
        let (num, mult): (&str, u64) = match t.chars().last() {
            Some('k' | 'K') => (&t[..t.len() - 1], 1 << 10),
            Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
            Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
            Some('t' | 'T') => (&t[..t.len() - 1], 1 << 40),
            Some(c) if c.is_ascii_digit() => (t, 1),
            _ => return Err(err()),
        };
        let num = num.trim();
        if num.is_empty() || num.starts_with('-') || num.starts_with('+') {
            return Err(err());
        }
        let bytes = if let Ok(n) = num.parse::<u64>() {
            n.checked_mul(mult).ok_or_else(err)?
        } else {
            let f: f64 = num.parse().map_err(|_| err())?;
            if !f.is_finite() || f < 0.0 {
                return Err(err());
            }
            let b = f * mult as f64;
            if b > u64::MAX as f64 {
                return Err(err());
            }
            b as u64
        };
        if bytes == 0 {
            return Err(err());
        }
        Ok(ByteSize(bytes))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            if b >= 1 << shift && b.is_multiple_of(1 << shift) {
                return write!(f, "{}{}", b >> shift, unit);
            }
        }
        write!(f, "{b}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(0) => Err(serde::de::Error::custom("size must be greater than zero")),
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A whole number of seconds, written as `20s`, `2m`, `1h` or a bare number of seconds; at
/// least 1 s and at most 24 h (e.g. `[agent] grace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Seconds(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: expected whole seconds such as 20s, 2m or 1h (1s to 24h)")]
pub struct ParseSecondsError(pub String);

impl Seconds {
    pub const MAX: u64 = 24 * 3600;

    pub fn new(secs: u64) -> Result<Self, ParseSecondsError> {
        if (1..=Self::MAX).contains(&secs) {
            Ok(Seconds(secs))
        } else {
            Err(ParseSecondsError(secs.to_string()))
        }
    }

    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0)
    }
}

impl FromStr for Seconds {
    type Err = ParseSecondsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseSecondsError(s.to_string());
        let t = s.trim();
        let (num, mult) = match t.chars().last() {
            Some('s') => (&t[..t.len() - 1], 1),
            Some('m') => (&t[..t.len() - 1], 60),
            Some('h') => (&t[..t.len() - 1], 3600),
            Some(c) if c.is_ascii_digit() => (t, 1),
            _ => return Err(err()),
        };
        let n: u64 = num.trim().parse().map_err(|_| err())?;
        Seconds::new(n.checked_mul(mult).ok_or_else(err)?).map_err(|_| err())
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            s if s.is_multiple_of(3600) => write!(f, "{}h", s / 3600),
            s if s.is_multiple_of(60) => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

impl Serialize for Seconds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Seconds::new(n).map_err(serde::de::Error::custom),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A CPU allowance in (possibly fractional) cores, e.g. `1.5`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Cpus(f64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cpu count {0:?}: expected a positive number of cores such as 2 or 0.5")]
pub struct ParseCpusError(pub String);

impl Cpus {
    pub fn new(v: f64) -> Result<Self, ParseCpusError> {
        if v.is_finite() && (0.01..=4096.0).contains(&v) {
            Ok(Cpus(v))
        } else {
            Err(ParseCpusError(v.to_string()))
        }
    }
    pub fn get(self) -> f64 {
        self.0
    }
    /// CFS quota in microseconds for the given period.
    pub fn quota_us(self, period_us: u64) -> u64 {
        ((self.0 * period_us as f64).round() as u64).max(1000)
    }
}

impl TryFrom<f64> for Cpus {
    type Error = ParseCpusError;
    fn try_from(v: f64) -> Result<Self, Self::Error> {
        Cpus::new(v)
    }
}
impl From<Cpus> for f64 {
    fn from(c: Cpus) -> f64 {
        c.0
    }
}
impl FromStr for Cpus {
    type Err = ParseCpusError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| ParseCpusError(s.to_string()))?;
        Cpus::new(v).map_err(|_| ParseCpusError(s.to_string()))
    }
}
impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!("64M".parse::<ByteSize>(), Ok(ByteSize(64 << 20)));
        assert_eq!("8G".parse::<ByteSize>(), Ok(ByteSize(8 << 30)));
        assert_eq!("8GiB".parse::<ByteSize>(), Ok(ByteSize(8 << 30)));
        assert_eq!("1.5G".parse::<ByteSize>(), Ok(ByteSize(3 << 29)));
        assert_eq!("4096".parse::<ByteSize>(), Ok(ByteSize(4096)));
        for bad in ["", "M", "-1G", "0", "12X", "1e999G", "nanG"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad} should not parse");
        }
        assert_eq!(ByteSize(64 << 20).to_string(), "64M");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }

    #[test]
    fn enums_round_trip_and_explain() {
        assert_eq!("off".parse::<NetMode>(), Ok(NetMode::Off));
        let e = "closed".parse::<NetMode>().expect_err("not a mode");
        assert_eq!(
            e.to_string(),
            "invalid network mode \"closed\": expected one of off, filtered, open"
        );
        assert_eq!(Profile::Restrictive.to_string(), "restrictive");
    }

    #[test]
    fn cpus_bounds() {
        assert!("0".parse::<Cpus>().is_err());
        assert!("-1".parse::<Cpus>().is_err());
        assert_eq!(
            "0.5".parse::<Cpus>().map(|c| c.quota_us(100_000)),
            Ok(50_000)
        );
    }
}

#[cfg(test)]
mod seconds_tests {
    use super::Seconds;

    #[test]
    fn seconds_parse_units_and_refuse_zero_fractions_and_overflow() {
        for (s, want) in [
            ("20s", 20),
            ("2m", 120),
            ("1h", 3600),
            ("45", 45),
            (" 5s ", 5),
        ] {
            assert_eq!(s.parse::<Seconds>(), Ok(Seconds(want)), "{s}");
        }
        for bad in [
            "0",
            "0s",
            "-1s",
            "1.5s",
            "s",
            "",
            "20ms",
            "25h",
            "99999999999999999999h",
        ] {
            assert!(bad.parse::<Seconds>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(Seconds(120).to_string(), "2m");
        assert_eq!(Seconds(90).to_string(), "90s");
        let t: toml::Table = toml::from_str("a = 30\nb = \"1m\"").expect("toml");
        assert_eq!(t["a"].clone().try_into::<Seconds>().ok(), Some(Seconds(30)));
        assert_eq!(t["b"].clone().try_into::<Seconds>().ok(), Some(Seconds(60)));
    }
}
