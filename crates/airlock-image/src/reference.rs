//! Image references, parsed and normalized the way Docker does: `python:3.12` is
//! `docker.io/library/python:3.12`, `ghcr.io/o/r@sha256:…` keeps its pinned digest.

use crate::digest::Digest;
use std::fmt;

/// The registry a reference without a host names.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API actually lives.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
const DEFAULT_TAG: &str = "latest";

/// A normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`, …
    pub registry: String,
    /// `library/python`, `owner/repo`.
    pub repository: String,
    /// None only when pinned by digest without a tag.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {why}")]
pub struct ParseError {
    pub input: String,
    pub why: &'static str,
}

impl Reference {
    pub fn parse(input: &str) -> Result<Reference, ParseError> {
        let bad = |why| ParseError {
            input: input.to_string(),
            why,
        };
        if input.is_empty() || input.len() > 512 {
            return Err(bad("empty or longer than 512 bytes"));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => (
                r,
                Some(
                    Digest::parse(d)
                        .map_err(|_| bad("the digest is not sha256:<64 hex digits>"))?,
                ),
            ),
            None => (input, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let slash = rest.rfind('/');
        let (name, tag) = match rest.rfind(':') {
            Some(c) if slash.is_none_or(|s| c > s) => (&rest[..c], Some(&rest[c + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(bad(
                    "the tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            Some(_) => (DOCKER_HUB.to_string(), name.to_string()),
            None => (DOCKER_HUB.to_string(), format!("library/{name}")),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if registry
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')))
        {
            return Err(bad("the registry host has invalid characters"));
        }
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.chars().all(|ch| {
                    ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')
                })
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
        };
        if repository.len() > 255 || !repository.split('/').all(component_ok) {
            return Err(bad(
                "the repository must be lowercase letters, digits and . _ - separated by /",
            ));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host the registry API is reached at.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What a manifest is fetched by: the pinned digest, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The same name and tag, without the digest (what an image record is listed under).
    pub fn without_digest(&self) -> Reference {
        Reference {
            digest: None,
            tag: self.tag.clone().or_else(|| Some(DEFAULT_TAG.into())),
            ..self.clone()
        }
    }

    /// The familiar short form: `python:3.12` for Docker Hub's library images.
    pub fn short(&self) -> String {
        let full = self.to_string();
        full.strip_prefix("docker.io/library/")
            .or_else(|| full.strip_prefix("docker.io/"))
            .map(str::to_string)
            .unwrap_or(full)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalizes_like_docker() {
        let table = [
            ("python:3.12", "docker.io/library/python:3.12"),
            ("python", "docker.io/library/python:latest"),
            ("library/node:22-alpine", "docker.io/library/node:22-alpine"),
            ("bitnami/redis", "docker.io/bitnami/redis:latest"),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("docker.io/busybox:1", "docker.io/library/busybox:1"),
            ("ghcr.io/o/r/x:v1.2", "ghcr.io/o/r/x:v1.2"),
            ("localhost/app", "localhost/app:latest"),
            (
                "127.0.0.1:5000/library/busybox",
                "127.0.0.1:5000/library/busybox:latest",
            ),
            ("127.0.0.1:5000/busybox:1.36", "127.0.0.1:5000/busybox:1.36"),
        ];
        for (input, want) in table {
            assert_eq!(
                Reference::parse(input).expect(input).to_string(),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn digests_are_kept_and_pin_the_manifest() {
        let r = Reference::parse(&format!("alpine:3.20@{D}")).expect("parse");
        assert_eq!(r.tag.as_deref(), Some("3.20"));
        assert_eq!(r.manifest_ref(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/alpine:3.20@{D}"));
        let bare = Reference::parse(&format!("alpine@{D}")).expect("parse");
        assert_eq!(bare.tag, None);
        assert_eq!(bare.to_string(), format!("docker.io/library/alpine@{D}"));
        assert_eq!(bare.short(), format!("alpine@{D}"));
    }

    #[test]
    fn api_host_and_short_form() {
        let r = Reference::parse("python:3.12").expect("parse");
        assert_eq!(r.api_host(), DOCKER_HUB_API);
        assert_eq!(r.short(), "python:3.12");
        let l = Reference::parse("127.0.0.1:5000/x/y:1").expect("parse");
        assert_eq!(l.api_host(), "127.0.0.1:5000");
        assert_eq!(l.short(), "127.0.0.1:5000/x/y:1");
    }

    #[test]
    fn refuses_malformed_references() {
        for bad in [
            "",
            "Python:3",
            "a b",
            "x:",
            "x:-tag",
            "x@sha256:abc",
            "x@md5:0123",
            "a//b",
            "-a/b",
            "a/b/",
            "x:tag\n",
            "ghcr.io/o/r:a/b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
