//! `airlock trust` and the refusal of an untrusted widening (the store and digest:
//! `airlock_work::trust`).

use crate::error::{CliError, CliResult};
use airlock_engine::action::{TrustOp, TrustReport};
use airlock_model::config::{ProjectConfig, Widening};
use airlock_model::exit;
use std::path::{Path, PathBuf};

pub use airlock_work::trust::State;

/// The user's trust store: in airlock's state directory, which no sandbox can reach.
pub fn store_path() -> PathBuf {
    airlock_sandbox::container::rundir::state_dir().join(airlock_work::trust::STORE_FILE)
}

pub fn state(p: &ProjectConfig) -> State {
    airlock_work::trust::state(p, &store_path())
}

/// Refuse, before anything starts, a project configuration that widens the policy while
/// untrusted. `what` names the widened keys the caller acts on (all of them for run/create).
pub fn require(p: Option<&ProjectConfig>) -> CliResult<()> {
    let Some(p) = p else { return Ok(()) };
    if p.widening.is_empty() || state(p) == State::Trusted {
        return Ok(());
    }
    Err(refusal(p, &p.widening))
}

/// The refusal for `widening` (a subset of the project's, e.g. only its hooks).
pub fn refusal(p: &ProjectConfig, widening: &[Widening]) -> CliError {
    let mut msg = format!(
        "{} is not trusted, and it widens the policy:",
        p.file.display()
    );
    for w in widening {
        msg.push_str(&format!("\n  {:<18} {}", w.key, w.detail));
    }
    let dir = p.file.parent().unwrap_or(Path::new("."));
    CliError::new(exit::POLICY_REFUSED, anyhow::anyhow!(msg)).hint(format!(
        "review it, then `airlock trust {}` (a changed file needs trusting again); settings that only narrow the policy always apply",
        dir.display()
    ))
}

/// `airlock trust [DIR] [--revoke] [--json]`.
pub fn trust_cmd(dir: Option<&Path>, revoke: bool, json: bool) -> CliResult<i32> {
    let start = match dir {
        Some(d) => std::fs::canonicalize(d)
            .map_err(|e| CliError::usage(format!("{}: {e}", d.display())))?,
        None => std::env::current_dir().map_err(|e| CliError::new(exit::USAGE, e))?,
    };
    let op = if revoke {
        TrustOp::Revoke
    } else {
        TrustOp::Allow
    };
    let (p, report) = trust(&start, op, "cli")?;
    if json {
        let v = serde_json::json!({
            "file": p.file, "files": p.files, "trusted": report.trusted,
            "sha256": report.sha256, "widening": p.widening,
        });
        outln!("{v:#}");
    } else if revoke {
        outln!("untrusted {}", p.file.display());
    } else {
        outln!(
            "trusted {} (sha256 {})",
            p.file.display(),
            &report.sha256[..16]
        );
        for w in &p.widening {
            outln!("  {:<18} {}", w.key, w.detail);
        }
    }
    Ok(0)
}

/// The trust action: the project's airlock.toml found upward from `start`, its trust as it
/// is (`status`) or as `op` makes it. A change is journaled (`via`: `cli`, `api`).
pub fn trust(start: &Path, op: TrustOp, via: &str) -> CliResult<(ProjectConfig, TrustReport)> {
    let resolved = airlock_model::config::load(&airlock_model::config::LoadOptions::new(start))?;
    let Some(p) = resolved.project else {
        return Err(CliError::usage(format!(
            "no airlock.toml in {} or above it",
            start.display()
        ))
        .hint("`airlock init` writes one"));
    };
    let d = airlock_work::trust::digest(&p);
    let report = |trusted: bool| TrustReport {
        file: p.file.display().to_string(),
        trusted,
        sha256: d.clone(),
        widening: p
            .widening
            .iter()
            .filter_map(|w| serde_json::to_value(w).ok())
            .collect(),
    };
    if op == TrustOp::Status {
        let r = report(state(&p) == State::Trusted);
        return Ok((p, r));
    }
    let path = store_path();
    let _lock = airlock_work::trust::lock(&path).map_err(|e| {
        CliError::new(
            exit::SANDBOX_FAILED,
            anyhow::anyhow!("lock {}: {e}", path.display()),
        )
    })?;
    let mut store = airlock_work::trust::Store::load(&path);
    let previous = if op == TrustOp::Revoke {
        store.trusted.remove(&p.file)
    } else {
        store.trusted.insert(p.file.clone(), d.clone())
    };
    store.save(&path).map_err(|e| {
        CliError::new(
            exit::SANDBOX_FAILED,
            anyhow::anyhow!("write {}: {e}", path.display()),
        )
    })?;
    journal(&path, &p, op, &d, previous.as_deref(), via);
    let r = report(op == TrustOp::Allow);
    Ok((p, r))
}

/// A trust change in the host's audit journal (next to the trust store; `airlock audit`
/// without NAME shows it): which project file, which digest, what it replaced, who.
fn journal(
    store: &Path,
    p: &ProjectConfig,
    op: TrustOp,
    sha256: &str,
    previous: Option<&str>,
    via: &str,
) {
    let Some(dir) = store.parent() else { return };
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let mut ev = serde_json::json!({
        "op": if op == TrustOp::Revoke { "untrust" } else { "trust" },
        "file": p.file,
        "sha256": sha256,
        "previous_sha256": previous,
        "widening": p.widening.iter().map(|w| w.key.clone()).collect::<Vec<_>>(),
        "uid": uid.as_raw(),
        "user": user,
        "via": via,
    });
    if let Some(s) = std::env::var_os("SUDO_USER") {
        ev["sudo_user"] = s.to_string_lossy().into_owned().into();
    }
    airlock_engine::audit::record(dir, "trust", ev);
}
