//! `airlock gc`: reclaim run directories and cgroups left by airlock processes that died, and
//! have the engine reconcile named sandboxes with what really runs.

use crate::error::CliResult;
use airlock_sandbox::cgroup::Layout;
use airlock_sandbox::container::rundir;

pub fn gc(json: bool) -> CliResult<i32> {
    let state = rundir::state_dir();
    let mut reclaimed = rundir::gc(&state, Layout::detect);
    reclaimed.extend(
        airlock_work::home_files::sweep(&state, airlock_sandbox::container::rundir::lock_free)
            .into_iter()
            .map(|n| format!("home-files/{n}")),
    );
    // Named sandboxes: if an engine runs (or has state), have it reconcile.
    let named = if airlock_engine::paths::socket_path().exists() || state.join("store.db").exists()
    {
        let exe = std::env::current_exe()
            .map_err(|e| crate::error::CliError::new(airlock_model::exit::SANDBOX_FAILED, e))?;
        Some(airlock_engine::client::Client::connect_or_start(&exe)?.gc()?)
    } else {
        None
    };
    if json {
        outln!(
            "{}",
            serde_json::json!({ "reclaimed": reclaimed, "named": named })
        );
        return Ok(0);
    }
    if let Some(r) = &named {
        for c in &r.changes {
            outln!("{}: {}", c.name, c.detail);
        }
    }
    if reclaimed.is_empty() {
        outln!("nothing to reclaim");
    } else {
        outln!(
            "reclaimed {} leftover sandbox(es): {}",
            reclaimed.len(),
            reclaimed.join(", ")
        );
    }
    Ok(0)
}
