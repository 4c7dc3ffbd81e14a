//! Secrets: the `--secret` flag, and binding injected secrets to their hosts at launch (the
//! sandbox gets placeholders; the egress proxy gets the values and the interception CA).

use crate::error::{CliError, CliResult};
use airlock_egress::inject::{At, Binding, Secrets};
use airlock_egress::intercept::Interceptor;
use airlock_model::config::{Inject, Secret, SecretSource};
use airlock_model::exit;
use airlock_model::policy::NetMode;
use airlock_model::spec::RunSpec;
use std::path::PathBuf;
use std::sync::Arc;

/// A PEM file of extra roots the egress proxy trusts for *upstream* servers of injected
/// secrets (a corporate TLS-inspecting proxy's CA, or a test server's). Read by the process
/// that runs the sandbox.
pub const UPSTREAM_CA_ENV: &str = "AIRLOCK_UPSTREAM_CA";

/// `NAME=env:VAR` or `NAME=file:PATH`, optionally followed by `;hosts=H1,H2` and one of
/// `;header=NAME`, `;bearer`, `;basic`, `;query=PARAM` (the secret is then injected).
pub fn parse_flag(spec: &str) -> CliResult<(String, Secret)> {
    let bad = |why: &str| {
        CliError::usage(format!("--secret {spec}: {why}")).hint(
            "--secret NAME=env:VAR or NAME=file:PATH; to inject it: \
             NAME=env:VAR;hosts=api.example.com;header=x-api-key (or ;bearer, ;basic, ;query=key)",
        )
    };
    let (name, rest) = spec
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=env:VAR or NAME=file:PATH"))?;
    let mut parts = rest.split(';');
    let source = match parts.next().and_then(|s| s.split_once(':')) {
        Some(("env", var)) if !var.is_empty() => SecretSource::FromEnv(var.to_string()),
        Some(("file", path)) if !path.is_empty() => SecretSource::FromFile(PathBuf::from(path)),
        _ => return Err(bad("expected NAME=env:VAR or NAME=file:PATH")),
    };
    let mut inject: Option<Inject> = None;
    for part in parts {
        let i = inject.get_or_insert_with(|| Inject {
            hosts: Vec::new(),
            header: None,
            bearer: false,
            basic: false,
            query: None,
        });
        match part.split_once('=') {
            Some(("hosts", h)) => i
                .hosts
                .extend(h.split(',').filter(|s| !s.is_empty()).map(str::to_string)),
            Some(("header", h)) => i.header = Some(h.to_string()),
            Some(("query", q)) => i.query = Some(q.to_string()),
            None if part == "bearer" => i.bearer = true,
            None if part == "basic" => i.basic = true,
            _ => return Err(bad(&format!("unknown part {part:?}"))),
        }
    }
    if let Some(i) = &inject {
        if i.hosts.is_empty() {
            return Err(bad("an injected secret needs ;hosts=HOST[,HOST...]"));
        }
        i.place().map_err(|m| bad(&m.replace('`', "")))?;
    }
    Ok((name.to_string(), Secret { source, inject }))
}

/// The secrets as the sandbox sees them (name, value or placeholder) and the interceptor.
pub type Bound = (Vec<(String, String)>, Option<Arc<Interceptor>>);

fn at(i: &Inject) -> At {
    match (&i.header, i.bearer, i.basic, &i.query) {
        (Some(h), ..) => At::Header(h.clone()),
        (_, true, ..) => At::Bearer,
        (_, _, true, _) => At::Basic,
        (_, _, _, Some(q)) => At::Query(q.clone()),
        _ => At::Bearer,
    }
}

/// Whether `spec` injects secrets, refusing what cannot work: injection without the filtered
/// network, or to a host the policy does not allow. Also called at `create`, so a named
/// sandbox that could never start is not made.
pub fn check(spec: &RunSpec) -> CliResult<bool> {
    let injected: Vec<(&String, &Inject)> = spec
        .secrets
        .iter()
        .filter_map(|(n, s)| s.inject.as_ref().map(|i| (n, i)))
        .collect();
    let Some((first, _)) = injected.first() else {
        return Ok(false);
    };
    if spec.net != NetMode::Filtered {
        return Err(CliError::new(
            exit::POLICY_REFUSED,
            anyhow::anyhow!(
                "secret {first} is injected into requests, which needs the filtered network (this sandbox's network is {:?})",
                spec.net
            ),
        )
        .hint("use --net filtered, or give the secret without `inject` (the sandbox then holds the real value)"));
    }
    let policy = airlock_egress::EgressPolicy::new(&spec.domains, &spec.ports)
        .map_err(|e| CliError::usage(format!("network policy: {e}")))?;
    for (name, inj) in &injected {
        for host in &inj.hosts {
            let allowed = spec
                .ports
                .iter()
                .any(|p| policy.check(host, *p) == airlock_egress::Decision::Allow);
            if !allowed {
                return Err(CliError::new(
                    exit::POLICY_REFUSED,
                    anyhow::anyhow!(
                        "secret {name} is injected into requests to {host}, which the network policy does not allow"
                    ),
                )
                .hint(format!("allow it: --allow {host} (or add it to [network] domains)")));
            }
        }
    }
    Ok(true)
}

/// The secrets as the sandbox sees them (injected ones replaced by fresh placeholders) and,
/// when some are injected, the interceptor that holds their values (see [`check`]).
pub fn bind(spec: &RunSpec, values: Vec<(String, String)>) -> CliResult<Bound> {
    let c = claim_bind(spec, values)?;
    if c.bindings.is_empty() {
        return Ok((c.seen, None));
    }
    let icpt =
        Interceptor::new(Secrets::new(c.bindings), c.upstream_ca.as_deref()).map_err(|e| {
            CliError::new(exit::SANDBOX_FAILED, anyhow::anyhow!(e)).hint(format!(
                "{UPSTREAM_CA_ENV} must name a PEM file of CA certificates"
            ))
        })?;
    Ok((c.seen, Some(Arc::new(icpt))))
}

/// Injected secrets split from what the sandbox sees: for a cold start's interceptor
/// ([`bind`]) or a warm claim's, made by the member's supervisor from these bindings
/// (`live_policy::begin_claim`).
pub struct ClaimBound {
    /// The secrets as the sandbox sees them: values, or placeholders for injected ones.
    pub seen: Vec<(String, String)>,
    /// The injected ones (empty: none).
    pub bindings: Vec<Binding>,
    /// `AIRLOCK_UPSTREAM_CA`'s roots (only read when something is injected).
    pub upstream_ca: Option<Vec<u8>>,
}

/// [`bind`]'s checks and placeholders, without the interceptor.
pub fn claim_bind(spec: &RunSpec, values: Vec<(String, String)>) -> CliResult<ClaimBound> {
    if !check(spec)? {
        return Ok(ClaimBound {
            seen: values,
            bindings: Vec::new(),
            upstream_ca: None,
        });
    }
    let mut bindings = Vec::new();
    let mut seen = Vec::new();
    for (name, value) in values {
        let Some(inj) = spec.secrets.get(&name).and_then(|s| s.inject.as_ref()) else {
            seen.push((name, value));
            continue;
        };
        let b = Binding::new(&name, value, &inj.hosts, at(inj))
            .map_err(|e| CliError::usage(e.to_string()))?;
        seen.push((name, b.placeholder.clone()));
        bindings.push(b);
    }
    let upstream_ca = match std::env::var_os(UPSTREAM_CA_ENV).filter(|v| !v.is_empty()) {
        Some(p) => Some(std::fs::read(&p).map_err(|e| {
            CliError::usage(format!(
                "{UPSTREAM_CA_ENV}={}: cannot read it: {e}",
                PathBuf::from(&p).display()
            ))
        })?),
        None => None,
    };
    Ok(ClaimBound {
        seen,
        bindings,
        upstream_ca,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_takes_the_config_forms() {
        let (n, s) = parse_flag("K=env:HK").unwrap();
        assert_eq!((n.as_str(), s.inject), ("K", None));
        let (_, s) = parse_flag("K=env:HK;hosts=a.com,b.com;header=x-api-key").unwrap();
        let i = s.inject.unwrap();
        assert_eq!(i.hosts, vec!["a.com", "b.com"]);
        assert_eq!(i.header.as_deref(), Some("x-api-key"));
        assert!(
            parse_flag("K=file:/k;hosts=a.com;bearer")
                .unwrap()
                .1
                .inject
                .unwrap()
                .bearer
        );
        assert!(parse_flag("K=env:HK;hosts=a.com").is_err());
        assert!(parse_flag("K=env:HK;bearer").is_err());
        assert!(parse_flag("K=env:HK;hosts=a.com;bearer;basic").is_err());
        assert!(parse_flag("K=env:HK;hosts=a.com;cookie=x").is_err());
    }
}
