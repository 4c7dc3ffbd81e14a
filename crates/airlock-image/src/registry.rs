//! A small blocking client of the OCI distribution API: manifests and blobs, with Docker's
//! token authentication, credentials from the user's Docker/Podman auth files, mirrors and
//! plain-HTTP ("insecure") registries from `[images]`.
//!
//! Why not `oci-client`: it is async (tokio + reqwest) and airlock's CLI has no runtime on its
//! hot path; a pull is a handful of GETs that stream straight into the unpacker. ureq gives
//! blocking HTTP/1.1 with rustls on the ring provider (no aws-lc, no OpenSSL).

use crate::digest::Digest;
use crate::oci::MANIFEST_ACCEPT;
use crate::reference::{Reference, DOCKER_HUB};
use base64::Engine as _;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

/// Registry settings from `[images]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Registry (as references name it: `docker.io`) -> mirror hosts tried first, in order.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Hosts spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// Where credentials are read from (None: the default Docker and Podman auth files).
    pub auth_files: Option<Vec<PathBuf>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {host} is unreachable: {why}")]
    Unreachable { host: String, why: String },
    #[error("{what} {reference} was not found on {host}")]
    NotFound {
        what: &'static str,
        reference: String,
        host: String,
    },
    #[error("registry {host} requires authentication for {reference} ({status})")]
    AuthRequired {
        host: String,
        reference: String,
        status: u16,
    },
    #[error("registry {host} answered {status} for {url}")]
    Status {
        host: String,
        status: u16,
        url: String,
    },
    #[error("registry {host} sent a bad answer: {why}")]
    Protocol { host: String, why: String },
}

/// The user's auth files: `$DOCKER_CONFIG/config.json` (or `~/.docker/config.json`), then
/// `$REGISTRY_AUTH_FILE` or `$XDG_RUNTIME_DIR/containers/auth.json` (Podman).
pub fn default_auth_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        Some(d) => out.push(PathBuf::from(d).join("config.json")),
        None => {
            if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
                out.push(PathBuf::from(h).join(".docker/config.json"));
            }
        }
    }
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(f));
    }
    if let Some(r) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(r).join("containers/auth.json"));
    }
    out
}

/// `user:password` for a registry from auth files (`auths.HOST.auth`, base64). Docker Hub is
/// also found under its historical key `https://index.docker.io/v1/`.
pub fn credentials(files: &[PathBuf], registry: &str) -> Option<(String, String)> {
    let keys: Vec<String> = if registry == DOCKER_HUB {
        vec![
            "docker.io".into(),
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![registry.into(), format!("https://{registry}")]
    };
    for f in files {
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        for k in &keys {
            let Some(auth) = v["auths"][k]["auth"].as_str() else {
                continue;
            };
            let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(auth.trim()) else {
                continue;
            };
            let Ok(text) = String::from_utf8(raw) else {
                continue;
            };
            if let Some((u, p)) = text.split_once(':') {
                return Some((u.to_string(), p.to_string()));
            }
        }
    }
    None
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut s = rest;
    while let Some((k, after)) = s.split_once('=') {
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            match q.split_once('"') {
                Some((v, n)) => (v.to_string(), n),
                None => (q.to_string(), ""),
            }
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v.trim().to_string(), n),
                None => (after.trim().to_string(), ""),
            }
        };
        params.insert(k, v);
        s = next;
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

pub struct Client {
    agent: ureq::Agent,
    config: RegistryConfig,
    auth_files: Vec<PathBuf>,
    /// Authorization header per (host, repository), once earned.
    tokens: std::sync::Mutex<BTreeMap<(String, String), String>>,
}

/// A blob download in progress.
pub struct Blob {
    pub reader: Box<dyn Read + Send>,
    /// Content-Length, when sent.
    pub length: Option<u64>,
}

impl Client {
    pub fn new(config: RegistryConfig) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let auth_files = config.auth_files.clone().unwrap_or_else(default_auth_files);
        Client {
            agent,
            config,
            auth_files,
            tokens: Default::default(),
        }
    }

    /// Hosts to try for a registry: its mirrors, then itself.
    pub fn hosts(&self, r: &Reference) -> Vec<String> {
        let mut v = self
            .config
            .mirrors
            .get(&r.registry)
            .cloned()
            .unwrap_or_default();
        v.push(r.api_host().to_string());
        v
    }

    fn scheme(&self, host: &str) -> &'static str {
        if self.config.insecure.iter().any(|h| h == host) {
            "http"
        } else {
            "https"
        }
    }

    /// GET with authentication: on 401, answer the challenge once and retry.
    fn get(
        &self,
        host: &str,
        r: &Reference,
        path: &str,
        accept: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        let url = format!("{}://{host}/v2/{}/{path}", self.scheme(host), r.repository);
        let key = (host.to_string(), r.repository.clone());
        let send = |auth: Option<&str>| {
            let mut req = self.agent.get(&url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            req.call().map_err(|e| RegistryError::Unreachable {
                host: host.to_string(),
                why: e.to_string(),
            })
        };
        let known = self.tokens.lock().ok().and_then(|t| t.get(&key).cloned());
        let resp = send(known.as_deref())?;
        if resp.status() != 401 {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge);
        let creds = credentials(&self.auth_files, &r.registry)
            .or_else(|| credentials(&self.auth_files, host));
        let header = match challenge {
            Some(Challenge::Basic) => match &creds {
                Some((u, p)) => basic(u, p),
                None => {
                    return Err(RegistryError::AuthRequired {
                        host: host.into(),
                        reference: r.to_string(),
                        status: 401,
                    })
                }
            },
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", r.repository));
                let token =
                    self.token(host, r, &realm, service.as_deref(), &scope, creds.as_ref())?;
                format!("Bearer {token}")
            }
            None => {
                return Err(RegistryError::AuthRequired {
                    host: host.into(),
                    reference: r.to_string(),
                    status: 401,
                })
            }
        };
        let resp = send(Some(&header))?;
        if resp.status() == 401 || resp.status() == 403 {
            return Err(RegistryError::AuthRequired {
                host: host.into(),
                reference: r.to_string(),
                status: resp.status().as_u16(),
            });
        }
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(key, header);
        }
        Ok(resp)
    }

    fn token(
        &self,
        host: &str,
        r: &Reference,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&(String, String)>,
    ) -> Result<String, RegistryError> {
        let mut req = self.agent.get(realm).query("scope", scope);
        if let Some(s) = service {
            req = req.query("service", s);
        }
        if let Some((u, p)) = creds {
            req = req.header("Authorization", basic(u, p));
        }
        let mut resp = req.call().map_err(|e| RegistryError::Unreachable {
            host: realm.to_string(),
            why: e.to_string(),
        })?;
        if !resp.status().is_success() {
            return Err(RegistryError::AuthRequired {
                host: host.into(),
                reference: r.to_string(),
                status: resp.status().as_u16(),
            });
        }
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| RegistryError::Unreachable {
                host: realm.into(),
                why: e.to_string(),
            })?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
                host: realm.into(),
                why: format!("token answer: {e}"),
            })?;
        v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .map(str::to_string)
            .ok_or_else(|| RegistryError::Protocol {
                host: realm.into(),
                why: "token answer has no token".into(),
            })
    }

    /// Fetch a manifest (or index) by tag or digest: its bytes, from the first host that has it.
    /// A digest reference is checked against the bytes; a tag's digest is computed from them.
    pub fn manifest(
        &self,
        r: &Reference,
        by: &str,
    ) -> Result<(Vec<u8>, Digest, String), RegistryError> {
        let mut last = None;
        for host in self.hosts(r) {
            match self.manifest_from(&host, r, by) {
                Ok(m) => return Ok((m.0, m.1, host)),
                Err(e @ RegistryError::AuthRequired { .. }) if host == r.api_host() => {
                    return Err(e)
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(RegistryError::NotFound {
            what: "image",
            reference: r.to_string(),
            host: r.api_host().into(),
        }))
    }

    fn manifest_from(
        &self,
        host: &str,
        r: &Reference,
        by: &str,
    ) -> Result<(Vec<u8>, Digest), RegistryError> {
        let mut resp = self.get(host, r, &format!("manifests/{by}"), Some(MANIFEST_ACCEPT))?;
        check_status(&resp, host, r, "image")?;
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(8 << 20)
            .read_to_vec()
            .map_err(|e| RegistryError::Unreachable {
                host: host.into(),
                why: e.to_string(),
            })?;
        Ok((bytes.clone(), Digest::of(&bytes)))
    }

    /// Stream a blob from `host` (the host its manifest came from).
    pub fn blob(&self, host: &str, r: &Reference, d: &Digest) -> Result<Blob, RegistryError> {
        let resp = self.get(host, r, &format!("blobs/{d}"), None)?;
        check_status(&resp, host, r, "blob")?;
        let length = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(Blob {
            reader: Box::new(resp.into_body().into_reader()),
            length,
        })
    }
}

fn basic(u: &str, p: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
    )
}

fn check_status(
    resp: &ureq::http::Response<ureq::Body>,
    host: &str,
    r: &Reference,
    what: &'static str,
) -> Result<(), RegistryError> {
    let s = resp.status().as_u16();
    match s {
        200..=299 => Ok(()),
        404 => Err(RegistryError::NotFound {
            what,
            reference: r.to_string(),
            host: host.into(),
        }),
        401 | 403 => Err(RegistryError::AuthRequired {
            host: host.into(),
            reference: r.to_string(),
            status: s,
        }),
        _ => Err(RegistryError::Status {
            host: host.into(),
            status: s,
            url: format!("/v2/{}/...", r.repository),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn credentials_from_docker_and_podman_files() {
        let dir = std::env::temp_dir().join(format!("airlock-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let docker = dir.join("config.json");
        let podman = dir.join("auth.json");
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &docker,
            serde_json::json!({"auths": {"https://index.docker.io/v1/": {"auth": enc("hub:pw1")}}})
                .to_string(),
        )
        .expect("write");
        std::fs::write(
            &podman,
            serde_json::json!({"auths": {"ghcr.io": {"auth": enc("gh:pw:with:colons")}}})
                .to_string(),
        )
        .expect("write");
        let files = vec![docker, dir.join("missing.json"), podman];
        assert_eq!(
            credentials(&files, "docker.io"),
            Some(("hub".into(), "pw1".into()))
        );
        assert_eq!(
            credentials(&files, "ghcr.io"),
            Some(("gh".into(), "pw:with:colons".into()))
        );
        assert_eq!(credentials(&files, "quay.io"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mirrors_come_first_and_insecure_hosts_use_http() {
        let mut mirrors = BTreeMap::new();
        mirrors.insert("docker.io".to_string(), vec!["127.0.0.1:5000".to_string()]);
        let c = Client::new(RegistryConfig {
            mirrors,
            insecure: vec!["127.0.0.1:5000".into()],
            auth_files: Some(vec![]),
        });
        let r = Reference::parse("python:3.12").expect("parse");
        assert_eq!(c.hosts(&r), vec!["127.0.0.1:5000", "registry-1.docker.io"]);
        assert_eq!(c.scheme("127.0.0.1:5000"), "http");
        assert_eq!(c.scheme("registry-1.docker.io"), "https");
    }
}
