//! Which names on which ports a filtered sandbox may reach. Pure: a value in, a decision out.

use crate::{addr, host};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

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
    /// The named sandbox this policy belongs to, if any: a denial's fix then says
    /// `airlock allow NAME DOMAIN[:PORT]` (its allowlist changes while it runs) rather than a
    /// flag of `airlock run`.
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

    /// How to allow it: `--allow FLAG` or a configuration `line` for `airlock run`; for a
    /// named sandbox, `airlock allow NAME FLAG` (it applies at once, without a restart).
    fn fix(&self, flag: &str, line: &str) -> String {
        match &self.sandbox {
            None => format!("add `--allow {flag}` or `{line}`"),
            Some(n) => format!("run `airlock allow {n} {flag}` (applies at once, no restart)"),
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

/// The policy of a running sandbox, replaceable while connections and DNS queries use it
/// (`airlock allow`/`deny`). A lookup takes the current policy as a whole (an `Arc` cloned
/// under a read lock held for that clone only), so a decision never sees half of an old
/// policy and half of a new one.
#[derive(Debug)]
pub struct LivePolicy {
    current: RwLock<Arc<EgressPolicy>>,
}

impl LivePolicy {
    pub fn new(policy: EgressPolicy) -> Self {
        Self {
            current: RwLock::new(Arc::new(policy)),
        }
    }

    /// The policy in force now.
    pub fn get(&self) -> Arc<EgressPolicy> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Put `policy` in force for every later decision; the one it replaces is returned.
    pub fn set(&self, policy: EgressPolicy) -> Arc<EgressPolicy> {
        let mut cur = self.current.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *cur, Arc::new(policy))
    }
}

/// A configured allowlist as it is stored (`[network] domains` / `ports`, a sandbox's spec),
/// and the two edits `airlock allow` / `airlock deny` make to it. Pure.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allowlist {
    pub domains: Vec<String>,
    pub ports: Vec<u16>,
}

/// Why an allow or deny cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error("port 0 is not a port")]
    PortZero,
    #[error("{0} is a cloud metadata service: it is never allowed, in any mode")]
    Metadata(String),
    /// `deny` of a name that another entry still allows.
    #[error("{name} stays allowed by the entry {by}")]
    StillAllowed { name: String, by: String },
}

impl Allowlist {
    /// Allow `entry` (`github.com`, `*.npmjs.org`), and `port` when given. True when anything
    /// changed (allowing what is allowed already is no error).
    pub fn allow(&mut self, entry: &str, port: Option<u16>) -> Result<bool, EditError> {
        let pattern = DomainPattern::parse(entry)?;
        let name = match &pattern {
            DomainPattern::Exact(n) | DomainPattern::Subdomains(n) => n,
        };
        if addr::metadata_name(name) {
            return Err(EditError::Metadata(pattern.to_string()));
        }
        if port == Some(0) {
            return Err(EditError::PortZero);
        }
        let mut changed = false;
        if !self.patterns().any(|p| p == pattern) {
            self.domains.push(pattern.to_string());
            changed = true;
        }
        if let Some(p) = port.filter(|p| !self.ports.contains(p)) {
            self.ports.push(p);
            changed = true;
        }
        Ok(changed)
    }

    /// Take `entry` out: every stored entry equal to it goes. Refused (nothing changed) when
    /// the name would stay allowed by another entry (`a.x.com` under `*.x.com`): deny that
    /// one instead. True when anything changed. Ports stay: they are shared by every domain.
    pub fn deny(&mut self, entry: &str) -> Result<bool, EditError> {
        let pattern = DomainPattern::parse(entry)?;
        let keep: Vec<String> = self
            .domains
            .iter()
            .filter(|d| DomainPattern::parse(d).ok().as_ref() != Some(&pattern))
            .cloned()
            .collect();
        if let DomainPattern::Exact(name) = &pattern {
            if let Some(by) = keep
                .iter()
                .find(|d| DomainPattern::parse(d).is_ok_and(|p| p.matches(name)))
            {
                return Err(EditError::StillAllowed {
                    name: name.clone(),
                    by: by.clone(),
                });
            }
        }
        let changed = keep.len() != self.domains.len();
        self.domains = keep;
        Ok(changed)
    }

    fn patterns(&self) -> impl Iterator<Item = DomainPattern> + '_ {
        self.domains
            .iter()
            .filter_map(|d| DomainPattern::parse(d).ok())
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
    fn a_named_sandbox_fix_says_airlock_allow() {
        let p = policy().of_sandbox("web");
        let Decision::Deny { fix, .. } = p.check("example.com", 443) else {
            panic!()
        };
        assert_eq!(
            fix,
            "run `airlock allow web example.com:443` (applies at once, no restart)"
        );
        let Decision::Deny { fix, .. } = p.check("github.com", 22) else {
            panic!()
        };
        assert_eq!(
            fix,
            "run `airlock allow web github.com:22` (applies at once, no restart)"
        );
        let Decision::Deny { fix, .. } = p.check_dns("example.com") else {
            panic!()
        };
        assert_eq!(
            fix,
            "run `airlock allow web example.com` (applies at once, no restart)"
        );
    }

    #[test]
    fn allowlist_edits() {
        let mut a = Allowlist {
            domains: vec!["github.com".into(), "*.npmjs.org".into()],
            ports: vec![443],
        };
        assert_eq!(a.allow("Example.COM.", None), Ok(true));
        assert_eq!(a.allow("example.com", None), Ok(false));
        assert_eq!(a.allow("example.com", Some(8443)), Ok(true));
        assert_eq!(a.allow("*.npmjs.org", Some(443)), Ok(false));
        assert_eq!(
            a,
            Allowlist {
                domains: vec![
                    "github.com".into(),
                    "*.npmjs.org".into(),
                    "example.com".into()
                ],
                ports: vec![443, 8443],
            }
        );
        for bad in ["1.2.3.4", "a b", "", "*"] {
            assert!(
                matches!(a.allow(bad, None), Err(EditError::Pattern(_))),
                "{bad}"
            );
        }
        assert_eq!(a.allow("x.com", Some(0)), Err(EditError::PortZero));
        assert!(matches!(
            a.allow("metadata.google.internal", None),
            Err(EditError::Metadata(_))
        ));
        // deny: exact entries go; ports stay; denying what is not there changes nothing.
        assert_eq!(a.deny("EXAMPLE.com."), Ok(true));
        assert_eq!(a.deny("example.com"), Ok(false));
        assert_eq!(a.ports, vec![443, 8443]);
        // A name a wildcard still covers is refused, and nothing changes.
        let before = a.clone();
        assert_eq!(
            a.deny("registry.npmjs.org"),
            Err(EditError::StillAllowed {
                name: "registry.npmjs.org".into(),
                by: "*.npmjs.org".into()
            })
        );
        assert_eq!(a, before);
        assert_eq!(a.deny("*.npmjs.org"), Ok(true));
        assert_eq!(a.domains, vec!["github.com".to_string()]);
        let p = EgressPolicy::new(&a.domains, &a.ports).unwrap();
        assert!(!p.check("registry.npmjs.org", 443).is_allow());
    }

    /// Readers racing a writer that flips between two policies only ever see one of the two
    /// whole: never a domain list of one with the ports of the other.
    #[test]
    fn live_policy_swaps_whole_under_concurrent_lookups() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let a = EgressPolicy::new(&["a.test"], &[443]).unwrap();
        let b = EgressPolicy::new(&["b.test"], &[8443]).unwrap();
        let live = Arc::new(LivePolicy::new(a.clone()));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (live, stop) = (live.clone(), stop.clone());
                std::thread::spawn(move || {
                    let (mut seen_a, mut seen_b) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let p = live.get();
                        let ok_a = p.check("a.test", 443).is_allow();
                        let ok_b = p.check("b.test", 8443).is_allow();
                        // Exactly one of the two policies, as a whole.
                        assert!(ok_a != ok_b, "torn read: {p:?}");
                        assert!(!p.check("a.test", 8443).is_allow(), "{p:?}");
                        assert!(!p.check("b.test", 443).is_allow(), "{p:?}");
                        if ok_a {
                            seen_a += 1
                        } else {
                            seen_b += 1
                        }
                    }
                    (seen_a, seen_b)
                })
            })
            .collect();
        for i in 0..20_000 {
            live.set(if i % 2 == 0 { b.clone() } else { a.clone() });
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        for r in readers {
            let (sa, sb) = r.join().expect("a reader saw a torn policy");
            total += sa + sb;
        }
        assert!(total > 0);
        // The last write is what every later lookup sees.
        assert_eq!(*live.get(), a);
        assert_eq!(*live.set(b.clone()), a);
        assert_eq!(*live.get(), b);
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
