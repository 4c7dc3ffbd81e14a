//! Looking up named sandboxes from the CLI: the engine client, a sandbox's folder, its recorded
//! spec, who owns its files. A leaf: the other commands build on it, it builds on none of them.

use crate::error::{CliError, CliResult};
use airlock_engine::client::{Client, ClientError};
use airlock_engine::paths;
use airlock_model::exit;
use airlock_sandbox::isolation::{AnyBackend, Instance, Isolation, Observed};
use std::path::{Path, PathBuf};

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        let (code, hint) = (e.exit_code(), e.hint());
        CliError::new(code, e).maybe_hint(hint)
    }
}

pub fn client() -> CliResult<Client> {
    let exe = std::env::current_exe().map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    Ok(Client::connect_or_start(&exe)?)
}

pub fn sandbox_dir(name: &str) -> PathBuf {
    paths::state_dir().join("sandboxes").join(name)
}

/// The folder of an existing sandbox: a usage error for a bad name, NOT_FOUND (with a hint)
/// when there is no such sandbox.
pub fn existing_dir(name: &str) -> CliResult<PathBuf> {
    airlock_model::spec::validate_name(name).map_err(CliError::usage)?;
    let dir = sandbox_dir(name);
    if !dir.is_dir() {
        return Err(
            CliError::new(exit::NOT_FOUND, anyhow::anyhow!("no sandbox named {name}"))
                .hint("airlock list shows the sandboxes"),
        );
    }
    Ok(dir)
}

/// The isolation backend of the named sandbox in `dir` (the `backend` of its spec) and its
/// unique id.
pub fn backend_of(name: &str, dir: &Path) -> CliResult<(AnyBackend, Option<String>)> {
    let json = std::fs::read(dir.join("spec.json")).unwrap_or_default();
    let backend = AnyBackend::for_spec(&json).map_err(|e| {
        CliError::new(
            exit::BACKEND_UNAVAILABLE,
            anyhow::anyhow!("sandbox {name}: {e}"),
        )
    })?;
    Ok((backend, airlock_engine::engine::read_id(dir)))
}

/// Do `f` to the named sandbox in `dir` through its isolation backend.
pub fn isolated<T>(
    name: &str,
    dir: &Path,
    f: impl FnOnce(&AnyBackend, &Instance<'_>) -> T,
) -> CliResult<T> {
    let (backend, id) = backend_of(name, dir)?;
    let sandbox = Instance {
        name,
        dir,
        id: id.as_deref(),
    };
    Ok(f(&backend, &sandbox))
}

/// Whether the named sandbox in `dir` runs.
pub fn running(name: &str, dir: &Path) -> bool {
    isolated(name, dir, |b, s| b.observe(s)).is_ok_and(|o| matches!(o, Observed::Running { .. }))
}

/// The spec recorded in a sandbox folder (`DIR/spec.json`), if readable.
pub fn recorded_spec(dir: &Path) -> Option<airlock_model::spec::RunSpec> {
    serde_json::from_slice(&std::fs::read(dir.join("spec.json")).ok()?).ok()
}

/// The host uid (= gid) that owns the sandbox user's files in a root-run sandbox.
pub use airlock_work::prepare::{persistent_home, rootful_owner};

/// A sandbox name from a directory name: lowercase, [a-z0-9-], at most 63 bytes.
pub fn name_from_dir(dir: &Path) -> Option<String> {
    let raw = dir.file_name()?.to_string_lossy().to_lowercase();
    let mut n: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    n = n.trim_matches('-').to_string();
    while n.contains("--") {
        n = n.replace("--", "-");
    }
    n.truncate(63);
    let n = n.trim_end_matches('-').to_string();
    airlock_model::spec::validate_name(&n).ok().map(|()| n)
}

/// The unique id of the sandbox in `dir` (`DIR/id`, written by the engine at create and
/// start); a folder without one (driven by `__supervise` directly) gets a fresh one.
pub fn folder_id(dir: &Path) -> CliResult<String> {
    if let Some(id) = airlock_engine::engine::read_id(dir) {
        return Ok(id);
    }
    let fail = |e: std::io::Error| {
        CliError::new(
            exit::SANDBOX_FAILED,
            anyhow::anyhow!("write {}/id: {e}", dir.display()),
        )
    };
    let id = format!(
        "{}{}",
        airlock_sandbox::container::rundir::random_id().map_err(fail)?,
        airlock_sandbox::container::rundir::random_id().map_err(fail)?
    );
    airlock_engine::engine::write_atomic(&dir.join(airlock_engine::engine::ID_FILE), id.as_bytes())
        .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    Ok(id)
}

/// Undo a start that cannot be completed: remove the sandbox when this command created it,
/// else stop it; say which (`why` ends the line), or that the undo failed.
pub(super) fn undo_start(c: &airlock_engine::client::Client, name: &str, created: bool, why: &str) {
    let undone = if created {
        c.rm(name, true).map(|()| "removed")
    } else {
        c.stop(name, Some(std::time::Duration::from_secs(2)))
            .map(|_| "stopped")
    };
    match undone {
        Ok(what) => errln!("airlock: {name} {what}: {why}"),
        Err(u) => errln!("airlock: warning: could not undo the start of {name}: {u}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_directories() {
        assert_eq!(
            name_from_dir(Path::new("/home/u/My_Project")),
            Some("my-project".into())
        );
        assert_eq!(name_from_dir(Path::new("/x/--a..b--")), Some("a-b".into()));
        assert_eq!(name_from_dir(Path::new("/")), None);
        assert_eq!(name_from_dir(Path::new("/x/___")), None);
        assert_eq!(
            name_from_dir(Path::new(&format!("/x/{}", "a".repeat(80)))).map(|n| n.len()),
            Some(63)
        );
    }
}
