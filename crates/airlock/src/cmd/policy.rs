//! `airlock allow NAME DOMAIN[:PORT]` and `airlock deny NAME DOMAIN`: a filtered sandbox's
//! egress allowlist, changed at once while it runs and kept for its later starts — the
//! engine's `allow`/`deny` actions (`airlock_engine::live_policy`).

use super::named::client;
use crate::cli::{AllowArgs, DenyArgs};
use crate::error::{CliError, CliResult};
use airlock_engine::action::{Action, ActionData, ActionError, PolicyChange, Via};
use airlock_model::exit;

fn via(s: &str) -> Via {
    match s {
        "mcp" => Via::Mcp,
        "api" => Via::Api,
        _ => Via::Cli,
    }
}

pub fn allow(a: &AllowArgs) -> CliResult<i32> {
    airlock_model::spec::validate_name(&a.name).map_err(CliError::usage)?;
    let (domain, port) = match a.domain.rsplit_once(':') {
        Some((d, p)) => {
            let port = p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                CliError::usage(format!("{}: invalid port {p:?}", a.domain))
                    .hint("DOMAIN[:PORT] with a port 1-65535, e.g. example.com:8443")
            })?;
            (d.to_string(), Some(u64::from(port)))
        }
        None => (a.domain.clone(), None),
    };
    let change = execute(Action::Allow {
        name: a.name.clone(),
        domain,
        port,
        via: via(&a.via),
    })?;
    show(&change, a.json)
}

pub fn deny(a: &DenyArgs) -> CliResult<i32> {
    airlock_model::spec::validate_name(&a.name).map_err(CliError::usage)?;
    let change = execute(Action::Deny {
        name: a.name.clone(),
        domain: a.domain.clone(),
        via: via(&a.via),
    })?;
    show(&change, a.json)
}

fn execute(action: Action) -> CliResult<PolicyChange> {
    let body = serde_json::to_value(&action).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    let (status, value) = client()?.request("POST", "/v1/actions", Some(&body))?;
    let unreadable = |e: serde_json::Error| {
        CliError::new(
            exit::SANDBOX_FAILED,
            anyhow::anyhow!("unreadable answer from the engine: {e}"),
        )
    };
    if !(200..300).contains(&status) {
        let e: ActionError = serde_json::from_value(value).map_err(unreadable)?;
        return Err(e.into());
    }
    match serde_json::from_value(value).map_err(unreadable)? {
        ActionData::Policy(p) => Ok(p),
        other => Err(CliError::new(
            exit::SANDBOX_FAILED,
            anyhow::anyhow!("unexpected answer from the engine: {other:?}"),
        )),
    }
}

fn show(p: &PolicyChange, json: bool) -> CliResult<i32> {
    if json {
        let text = serde_json::to_string(p).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
        outln!("{text}");
        return Ok(0);
    }
    let target = match p.port {
        Some(port) => format!("{}:{port}", p.domain),
        None => p.domain.clone(),
    };
    let done = if p.op == "allow" { "allowed" } else { "denied" };
    let what = if p.changed {
        format!("{done} {target} in {}", p.name)
    } else {
        format!("{target} was {done} in {} already", p.name)
    };
    let when = if p.live {
        match p.closed {
            0 => "in force now, and at its later starts".to_string(),
            n => format!(
                "in force now ({n} open connection(s) to it closed), and at its later starts"
            ),
        }
    } else {
        "it is not running: its next start has it".to_string()
    };
    outln!("{what} ({when})");
    Ok(0)
}
