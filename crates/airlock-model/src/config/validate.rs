//! Value checks for one layer, run on every layer (files and the command line) before merging.
//! Also normalizes what has one canonical spelling (domains are lowercased).

use super::origin::KeyPath;
use super::schema::{Harness, Layer, SecretSource};
use std::path::{Component, Path};

/// A bad value: which key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub key: KeyPath,
    pub message: String,
}

type Check = Result<(), Invalid>;

fn bad(key: KeyPath, message: impl Into<String>) -> Invalid {
    Invalid {
        key,
        message: message.into(),
    }
}

pub(crate) fn validate(layer: &mut Layer) -> Check {
    let root = KeyPath::default();
    for (i, p) in layer.plugins.iter().flatten().enumerate() {
        text(&root.key("plugins").index(i), p)?;
    }
    if let Some(s) = &layer.sandbox {
        if let Some(image) = &s.image {
            text(&KeyPath::of(&["sandbox", "image"]), image)?;
        }
    }
    if let Some(pids) = layer.resources.as_ref().and_then(|r| r.pids) {
        if pids == 0 {
            return Err(bad(
                KeyPath::of(&["resources", "pids"]),
                "must be at least 1",
            ));
        }
    }
    if let Some(n) = &mut layer.network {
        for (i, d) in n.domains.iter_mut().flatten().enumerate() {
            *d = domain(d).map_err(|m| bad(KeyPath::of(&["network", "domains"]).index(i), m))?;
        }
        for (i, p) in n.ports.iter().flatten().enumerate() {
            if *p == 0 {
                let key = KeyPath::of(&["network", "ports"]).index(i);
                return Err(bad(key, "ports are 1-65535"));
            }
        }
    }
    if let Some(w) = &layer.workspace {
        let at = KeyPath::of(&["workspace"]);
        for (i, c) in w.context.iter().flatten().enumerate() {
            relative(
                &at.key("context").index(i),
                Path::new(c),
                "the project directory",
            )?;
        }
        for (i, c) in w.protected.iter().flatten().enumerate() {
            relative(&at.key("protected").index(i), Path::new(c), "the workspace")?;
        }
        for (i, r) in w.repos.iter().flatten().enumerate() {
            let at = at.key("repos").index(i);
            path(&at.key("source"), &r.source)?;
            relative(&at.key("dest"), &r.dest, "the sandbox home")?;
        }
    }
    for (i, m) in layer.mounts.iter().flatten().enumerate() {
        let at = KeyPath::of(&["mounts"]).index(i);
        path(&at.key("source"), &m.source)?;
        path(&at.key("target"), &m.target)?;
        if !m.target.is_absolute() || has_parent(&m.target) {
            return Err(bad(
                at.key("target"),
                "must be an absolute path without `..`",
            ));
        }
    }
    for (k, v) in layer.env.iter().flatten() {
        let at = KeyPath::of(&["env"]).key(k);
        env_name(&at, k)?;
        if v.contains('\0') {
            return Err(bad(at, "values cannot contain NUL"));
        }
    }
    for (k, s) in layer.secrets.iter().flatten() {
        let at = KeyPath::of(&["secrets"]).key(k);
        env_name(&at, k)?;
        match &s.source {
            SecretSource::FromEnv(var) => env_name(&at.key("from_env"), var)?,
            SecretSource::FromFile(p) => path(&at.key("from_file"), p)?,
        }
        if let Some(inj) = &s.inject {
            let at = at.key("inject");
            inj.place().map_err(|m| bad(at.clone(), m))?;
            if inj.hosts.is_empty() {
                return Err(bad(at.key("hosts"), "name at least one host"));
            }
            for h in &inj.hosts {
                let ok = !h.is_empty()
                    && h.len() <= 253
                    && h.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    })
                    && h.parse::<std::net::IpAddr>().is_err();
                if !ok {
                    return Err(bad(
                        at.key("hosts"),
                        "each host is a DNS name (no wildcards, ports or addresses)",
                    ));
                }
            }
            let token = |v: &str| {
                !v.is_empty()
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            };
            if inj.header.as_deref().is_some_and(|h| !token(h)) {
                return Err(bad(at.key("header"), "not a header name"));
            }
            if inj.query.as_deref().is_some_and(|q| !token(q)) {
                return Err(bad(at.key("query"), "not a query parameter name"));
            }
        }
    }
    for (k, h) in layer.home_files.iter().flatten() {
        let at = KeyPath::of(&["home_files"]).key(k);
        relative(&at, Path::new(k), "the sandbox home")?;
        if let Some(src) = &h.source {
            path(&at.key("source"), src)?;
        }
    }
    if let Some(Harness::Command(argv)) = layer.agent.as_ref().and_then(|a| a.harness.as_ref()) {
        let at = KeyPath::of(&["agent", "harness", "command"]);
        match argv.first() {
            None => return Err(bad(at, "needs at least the program to run")),
            Some(prog) => text(&at.index(0), prog)?,
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(bad(at, "arguments cannot contain NUL"));
        }
    }
    if let Some(h) = &layer.hooks {
        let lists = [
            ("pre_up", &h.pre_up),
            ("post_up", &h.post_up),
            ("pre_down", &h.pre_down),
            ("post_down", &h.post_down),
        ];
        for (name, list) in lists {
            for (i, cmd) in list.iter().flatten().enumerate() {
                text(&KeyPath::of(&["hooks", name]).index(i), cmd)?;
            }
        }
    }
    if let Some(im) = &layer.images {
        for (i, host) in im.insecure_registries.iter().flatten().enumerate() {
            text(
                &KeyPath::of(&["images", "insecure_registries"]).index(i),
                host,
            )?;
        }
        for (reg, hosts) in im.mirrors.iter().flatten() {
            for (i, host) in hosts.iter().enumerate() {
                text(&KeyPath::of(&["images", "mirrors", reg]).index(i), host)?;
            }
        }
        for (key, image) in im.runtimes.iter().flatten() {
            text(&KeyPath::of(&["images", "runtimes", key]), image)?;
        }
    }
    Ok(())
}

/// A non-empty string without NUL.
fn text(key: &KeyPath, s: &str) -> Check {
    if s.is_empty() {
        Err(bad(key.clone(), "cannot be empty"))
    } else if s.contains('\0') {
        Err(bad(key.clone(), "cannot contain NUL"))
    } else {
        Ok(())
    }
}

fn path(key: &KeyPath, p: &Path) -> Check {
    text(key, &p.to_string_lossy())
}

/// A non-empty relative path that stays below its base (no `..`, not absolute).
fn relative(key: &KeyPath, p: &Path, base: &str) -> Check {
    path(key, p)?;
    if p.is_absolute() || has_parent(p) {
        return Err(bad(
            key.clone(),
            format!("must be a path inside {base} (relative, without `..`)"),
        ));
    }
    Ok(())
}

fn has_parent(p: &Path) -> bool {
    p.components().any(|c| matches!(c, Component::ParentDir))
}

/// A portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn env_name(key: &KeyPath, name: &str) -> Check {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(bad(
            key.clone(),
            format!("{name:?} is not a valid environment variable name (letters, digits and _, not starting with a digit)"),
        ))
    }
}

/// Checks a domain or `*.`-wildcard and returns its canonical (lowercase) form.
pub(crate) fn domain(raw: &str) -> Result<String, String> {
    let why = |m: &str| format!("{raw:?} is not a domain name: {m}");
    let lower = raw.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    let host = name.strip_prefix("*.").unwrap_or(name);
    if host.is_empty() || host.len() > 253 {
        return Err(why("expected something like example.com or *.example.com"));
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(why("each dot-separated label must be 1-63 characters"));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(why(
                "only letters, digits, `-` and a leading `*.` are allowed (write IDNs in punycode)",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(why("labels cannot start or end with `-`"));
        }
    }
    if host
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(why("IP addresses are not domains"));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_normalize_or_explain() {
        assert_eq!(domain("GitHub.com."), Ok("github.com".to_string()));
        assert_eq!(domain("*.npmjs.org"), Ok("*.npmjs.org".to_string()));
        assert_eq!(domain("localhost"), Ok("localhost".to_string()));
        for bad in [
            "",
            "*",
            "*.",
            "a..b",
            "-a.com",
            "a-.com",
            "a b.com",
            "ex*ample.com",
            "*.*.com",
            "a.*.com",
            "10.0.0.1",
            "https://x.com",
            "x.com/path",
            "bücher.de",
            "x_y.com",
        ] {
            assert!(domain(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(domain(&format!("{}.com", "a".repeat(64))).is_err());
    }

    #[test]
    fn env_names() {
        let k = KeyPath::of(&["env"]);
        for good in ["A", "_x", "RUST_LOG", "a1"] {
            assert_eq!(env_name(&k, good), Ok(()), "{good}");
        }
        for bad in ["", "1A", "A=B", "A\0", "A-B", "A B", "É"] {
            assert!(env_name(&k, bad).is_err(), "{bad:?}");
        }
    }
}
