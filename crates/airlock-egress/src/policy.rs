//! Which names on which ports a filtered sandbox may reach. Pure: a value in, a decision out.

use crate::{addr, host};
use std::fmt;

/// One allowed-domain entry: an exact name, or `*.x` for the strict subdomains of `x`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DomainPattern {
    /// `github.com` matches `github.com` only.
    Exact(String),
    /// `*.npmjs.org` (stored as `npmjs.org`) matches `registry.npmjs.org`, `a.b.npmjs.org`,
    /// never `npmjs.org` itself.
    Subdomains(String),
}

/// Why a configured pattern is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid domain pattern {pattern:?}: {why}")]
pub struct PatternError {
    pub pattern: String,
    pub why: String,
}

impl DomainPattern {
    /// Parse a configured entry. `*` is accepted only as the whole first label.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let err = |why: String| PatternError {
            pattern: host::display(s),
            why,
        };
        let (wild, rest) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let name = host::normalize(rest).map_err(|e| err(e.to_string()))?;
        Ok(if wild {
            Self::Subdomains(name)
        } else {
            Self::Exact(name)
        })
    }

    /// Whether a normalized host matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => host == name,
            Self::Subdomains(base) => {
                host.len() > base.len() + 1
                    && host.ends_with(base.as_str())
                    && host.as_bytes()[host.len() - base.len() - 1] == b'.'
            }
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(n) => f.write_str(n),
            Self::Subdomains(n) => write!(f, "*.{n}"),
        }
    }
}

/// The filtered-mode policy: default deny; the listed names on the listed ports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EgressPolicy {
    pub domains: Vec<DomainPattern>,
    pub ports: Vec<u16>,
    /// The named sandbox this policy belongs to, if any: its policy is fixed at creation, so
    /// a denial's fix says how to recreate it rather than a flag of `airlock run`.
    pub sandbox: Option<String>,
}

/// The outcome of a check. A denial carries a human reason and the configuration line that
/// would allow the attempt (empty when nothing should: metadata, literal IPs, bad names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny { reason: String, fix: String },
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow)
    }

    fn deny(reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::Deny {
            reason: reason.into(),
            fix: fix.into(),
        }
    }
}

impl EgressPolicy {
    /// Parse configured patterns (`["github.com", "*.npmjs.org"]`) and ports.
    pub fn new<S: AsRef<str>>(domains: &[S], ports: &[u16]) -> Result<Self, PatternError> {
        let domains = domains
            .iter()
            .map(|d| DomainPattern::parse(d.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            domains,
            ports: ports.to_vec(),
            sandbox: None,
        })
    }

    /// The policy of the named sandbox `name` (see [`EgressPolicy::sandbox`]).
    pub fn of_sandbox(mut self, name: impl Into<String>) -> Self {
        self.sandbox = Some(name.into());
        self
    }

    /// How to allow it: `--allow FLAG` or a configuration `line`, phrased for `airlock run` or
    /// for this named sandbox.
    fn fix(&self, flag: &str, line: &str) -> String {
        match &self.sandbox {
            None => format!("add `--allow {flag}` or `{line}`"),
            Some(n) => format!(
                "recreate sandbox {n} with it: `airlock rm {n} && airlock create {n} --allow {flag}` \
                 (with the options it was created with), or add `{line}` to airlock.toml and run \
                 `airlock up {n} --fresh`; either discards its state, so fetch or sync its work first"
            ),
        }
    }

    /// May a connection to `host` (as the program named it) on `port` proceed?
    pub fn check(&self, host: &str, port: u16) -> Decision {
        let name = match self.check_name(host, Some(port)) {
            Ok(name) => name,
            Err(d) => return d,
        };
        if !self.ports.contains(&port) {
            let mut ports = self.ports.clone();
            ports.push(port);
            let list = ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return Decision::deny(
                format!(
                    "port {port} is not allowed (allowed: {})",
                    self.ports_text()
                ),
                self.fix(
                    &format!("{name}:{port}"),
                    &format!("[network] ports = [{list}]"),
                ),
            );
        }
        Decision::Allow
    }

    /// May `host` be resolved at all (on any allowed port)? Used by the DNS answerer.
    pub fn check_dns(&self, host: &str) -> Decision {
        match self.check_name(host, None) {
            Ok(_) => Decision::Allow,
            Err(d) => d,
        }
    }

    /// The normalized name if it is allowed on some port, or the denial. `port`: the port the
    /// program connected to (None for a DNS query), which the fix names.
    fn check_name(&self, host: &str, port: Option<u16>) -> Result<String, Decision> {
        let name = host::normalize(host)
            .map_err(|e| Decision::deny(format!("{}: {e}", host::display(host)), String::new()))?;
        if addr::metadata_name(&name) {
            return Err(Decision::deny(
                format!("{name} is a cloud metadata service, unreachable in every mode"),
                "",
            ));
        }
        if !self.domains.iter().any(|p| p.matches(&name)) {
            return Err(Decision::deny(
                format!("{name} is not in the allowed domains"),
                self.fix(
                    &match port {
                        Some(p) => format!("{name}:{p}"),
                        None => name.clone(),
                    },
                    &format!("[network] domains = [\"{name}\"]"),
                ),
            ));
        }
        Ok(name)
    }

    fn ports_text(&self) -> String {
        if self.ports.is_empty() {
            return "none".into();
        }
        self.ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> EgressPolicy {
        EgressPolicy::new(&["github.com", "*.npmjs.org", "Example.ORG."], &[443, 80]).unwrap()
    }

    #[test]
    fn patterns() {
        assert_eq!(
            DomainPattern::parse("GitHub.com.").unwrap(),
            DomainPattern::Exact("github.com".into())
        );
        assert_eq!(
            DomainPattern::parse("*.npmjs.org").unwrap(),
            DomainPattern::Subdomains("npmjs.org".into())
        );
        assert_eq!(
            DomainPattern::parse("*.npmjs.org").unwrap().to_string(),
            "*.npmjs.org"
        );
        for bad in [
            "",
            "*",
            "*.",
            "a.*.com",
            "**.a.com",
            "*a.com",
            "1.2.3.4",
            "*.1.2.3.4",
            "a\0.com",
            "[::1]",
        ] {
            assert!(DomainPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn exact_and_wildcard() {
        let p = policy();
        let allowed = [
            "github.com",
            "GITHUB.COM",
            "github.com.",
            "registry.npmjs.org",
            "a.b.npmjs.org",
            "example.org",
        ];
        for h in allowed {
            assert_eq!(p.check(h, 443), Decision::Allow, "{h}");
        }
        let denied = [
            "api.github.com",
            "evilgithub.com",
            "github.com.evil.com",
            "npmjs.org",
            "xnpmjs.org",
            "npmjs.org.evil.com",
            "github.com..",
            "github.com\0.npmjs.org",
            "registry.npmjs.org\0",
            "git_hub.com",
        ];
        for h in denied {
            assert!(!p.check(h, 443).is_allow(), "{h:?}");
        }
    }

    #[test]
    fn ip_literals_always_denied() {
        let p = EgressPolicy::new(&["github.com"], &[443]).unwrap();
        for h in [
            "140.82.112.3",
            "2130706433",
            "0x7f000001",
            "127.1",
            "[::1]",
            "::ffff:10.0.0.1",
            "[2606:4700::1]",
        ] {
            match p.check(h, 443) {
                Decision::Deny { reason, fix } => {
                    assert!(
                        reason.contains("literal IPs are not allowed; use a name"),
                        "{h}: {reason}"
                    );
                    assert!(fix.is_empty());
                }
                Decision::Allow => panic!("{h} allowed"),
            }
        }
    }

    #[test]
    fn ports() {
        let p = policy();
        assert_eq!(p.check("github.com", 80), Decision::Allow);
        let Decision::Deny { reason, fix } = p.check("github.com", 22) else {
            panic!()
        };
        assert_eq!(reason, "port 22 is not allowed (allowed: 443, 80)");
        assert_eq!(
            fix,
            "add `--allow github.com:22` or `[network] ports = [443, 80, 22]`"
        );
        assert!(!EgressPolicy::new(&["github.com"], &[])
            .unwrap()
            .check("github.com", 443)
            .is_allow());
    }

    #[test]
    fn fix_names_the_line() {
        let Decision::Deny { reason, fix } = policy().check("Example.COM.", 443) else {
            panic!()
        };
        assert_eq!(reason, "example.com is not in the allowed domains");
        assert_eq!(
            fix,
            "add `--allow example.com:443` or `[network] domains = [\"example.com\"]`"
        );
    }

    #[test]
    fn the_fix_names_the_port_used() {
        let fix = |d: Decision| match d {
            Decision::Deny { fix, .. } => fix,
            Decision::Allow => panic!("allowed"),
        };
        let p = policy();
        assert_eq!(
            fix(p.check("example.com", 80)),
            "add `--allow example.com:80` or `[network] domains = [\"example.com\"]`"
        );
        // A DNS query has no port.
        assert_eq!(
            fix(p.check_dns("example.com")),
            "add `--allow example.com` or `[network] domains = [\"example.com\"]`"
        );
    }

    #[test]
    fn a_named_sandbox_fix_says_how_to_recreate_it() {
        let p = policy().of_sandbox("web");
        let Decision::Deny { fix, .. } = p.check("example.com", 443) else {
            panic!()
        };
        assert_eq!(
            fix,
            "recreate sandbox web with it: `airlock rm web && airlock create web --allow example.com:443` \
             (with the options it was created with), or add `[network] domains = [\"example.com\"]` to \
             airlock.toml and run `airlock up web --fresh`; either discards its state, so fetch or sync \
             its work first"
        );
        let Decision::Deny { fix, .. } = p.check("github.com", 22) else {
            panic!()
        };
        assert!(
            fix.starts_with("recreate sandbox web with it: `airlock rm web && airlock create web --allow github.com:22`")
                && fix.contains("add `[network] ports = [443, 80, 22]` to airlock.toml"),
            "{fix}"
        );
    }

    #[test]
    fn metadata_names_denied_even_if_listed() {
        let p = EgressPolicy::new(
            &["metadata.google.internal", "*.google.internal", "metadata"],
            &[80],
        )
        .unwrap();
        for h in [
            "metadata.google.internal",
            "METADATA.google.internal.",
            "metadata",
            "x.metadata.google.internal",
        ] {
            let Decision::Deny { reason, fix } = p.check(h, 80) else {
                panic!("{h}")
            };
            assert!(reason.contains("metadata"), "{reason}");
            assert!(fix.is_empty());
        }
    }

    #[test]
    fn dns_ignores_ports() {
        let p = EgressPolicy::new(&["github.com"], &[8443]).unwrap();
        assert_eq!(p.check_dns("github.com"), Decision::Allow);
        assert!(!p.check_dns("gitlab.com").is_allow());
    }
}
