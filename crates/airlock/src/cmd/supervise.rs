//! The processes the CLI starts for named sandboxes: the engine (`engine serve`) and one
//! supervisor per sandbox (`__supervise --dir DIR`), which runs it until it stops.

use super::named::{folder_id, persistent_home};
use crate::error::{CliError, CliResult};
use airlock_engine::paths;
use airlock_engine::supervisor::{self as backend, SupervisorBackend};
use airlock_engine::{Backend, FakeBackend};
use airlock_model::exit;
use std::path::Path;
use std::sync::Arc;

/// Test-only: `AIRLOCK_ENGINE_BACKEND=fake` makes `engine serve` run the engine with the
/// in-memory [`FakeBackend`] (nothing starts; no root needed), for the CLI test tier
/// (`crates/airlock/tests/cli_tier.rs`). Read here and nowhere else; unset (or `real`) is the
/// real backend. Not a user feature: see docs/api.md "For contributors".
pub const ENGINE_BACKEND_ENV: &str = "AIRLOCK_ENGINE_BACKEND";

/// `airlock engine serve`: the engine process.
pub fn engine_serve() -> CliResult<i32> {
    let backend: Arc<dyn Backend> = match std::env::var(ENGINE_BACKEND_ENV).as_deref() {
        Err(std::env::VarError::NotPresent) | Ok("" | "real") => {
            let exe =
                std::env::current_exe().map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
            Arc::new(SupervisorBackend { exe })
        }
        Ok("fake") => Arc::new(FakeBackend::new()),
        other => {
            let value = match other {
                Ok(v) => v.to_string(),
                Err(_) => "(not UTF-8)".to_string(),
            };
            return Err(CliError::usage(format!(
                "{ENGINE_BACKEND_ENV}={value}: unknown engine backend"
            ))
            .hint(format!(
                "unset {ENGINE_BACKEND_ENV} (it is a test-only switch; `fake` is the only other value)"
            )));
        }
    };
    airlock_engine::api::run(&paths::socket_path(), &paths::state_dir(), backend)
        .map_err(|e| CliError::new(exit::BACKEND_UNAVAILABLE, e))?;
    Ok(0)
}

/// `airlock __supervise --dir DIR` for a created sandbox: its spec is DIR/spec.json.
pub fn supervise_spec(dir: &Path) -> CliResult<i32> {
    // Not in its starter's session (the engine's or the daemon's spawn has no pre-exec hook:
    // `SupervisorBackend::start`). Fails only for a process group leader (started by hand).
    let _ = nix::unistd::setsid();
    // First, the secret values the engine passes on stdin (JSON [[name, value], …]).
    let secrets: Vec<(String, String)> = {
        use std::io::Read;
        let mut buf = Vec::new();
        let _ = std::io::stdin().take(16 << 20).read_to_end(&mut buf);
        if buf.is_empty() {
            Vec::new()
        } else {
            serde_json::from_slice(&buf).map_err(|e| {
                CliError::new(
                    exit::SANDBOX_FAILED,
                    anyhow::anyhow!("secrets from the engine: {e}"),
                )
            })?
        }
    };
    let Some(_lock) =
        backend::take_lock(dir).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?
    else {
        return Err(CliError::new(
            exit::CONFLICT,
            anyhow::anyhow!("another supervisor runs {}", dir.display()),
        ));
    };
    std::fs::write(
        dir.join(backend::SUPERVISOR_PID),
        std::process::id().to_string(),
    )
    .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    let instance_id = folder_id(dir)?;
    let spec: airlock_model::spec::RunSpec = std::fs::read(dir.join("spec.json"))
        .map_err(anyhow::Error::from)
        .and_then(|b| serde_json::from_slice(&b).map_err(anyhow::Error::from))
        .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    let mut spec = spec;
    if let Some(missing) = spec
        .secrets
        .keys()
        .find(|k| !secrets.iter().any(|(n, _)| n == *k))
    {
        return Err(CliError::new(
            exit::USAGE,
            anyhow::anyhow!("secret {missing} was not provided for this start"),
        )
        .hint("start it with `airlock start` from a shell where its source is available"));
    }
    if spec.workspace == airlock_model::policy::WorkspaceMode::Clone {
        spec.workspace_dir = Some(dir.join(airlock_work::clone::WORKSPACE_DIR));
    }
    spec.home_dir = Some(persistent_home(dir, &spec).map_err(|e| {
        CliError::new(
            exit::SANDBOX_FAILED,
            anyhow::anyhow!("prepare the sandbox's home: {e}"),
        )
    })?);
    // Agent mode: the in-sandbox tools first on PATH.
    if spec.agent.is_some() {
        let path = spec
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone());
        spec.env.retain(|(k, _)| k != "PATH");
        spec.env.push((
            "PATH".into(),
            airlock_agent::path_with_tools(path.as_deref()),
        ));
    }
    // A warm member of a matching pool becomes this sandbox (its supervisor runs it from
    // now on; an agent's host stays here); else it starts cold here.
    if let Some(member) = super::adopt::try_adopt(dir, &spec, &secrets)? {
        return match spec.agent.clone() {
            Some(h) => super::adopt::agent_host(dir, &spec, &member, h),
            None => Ok(0),
        };
    }
    let mut hooks = crate::cmd::run::Hooks::default();
    let mut agent_host = None;
    // The static helper (`cp`, the MCP file tools, the agent runner, `report`), read-only: it
    // needs nothing from the sandbox's root filesystem. (A microVM guest has no host mounts;
    // its PID 1 is that helper already.)
    if spec.backend != airlock_model::policy::BackendKind::Microvm {
        spec.binds
            .extend(airlock_agent::tool_binds(&install_guest()?));
    }
    if let Some(h) = spec.agent.clone() {
        let exe = std::env::current_exe().map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
        let grace = spec
            .agent_grace
            .unwrap_or(airlock_model::config::DEFAULT_AGENT_GRACE);
        let host = airlock_agent::host::Host::new(dir, h, grace, exe).map_err(|e| {
            CliError::new(
                exit::SANDBOX_FAILED,
                anyhow::anyhow!("prepare the agent journal: {e}"),
            )
        })?;
        hooks.on_egress = Some(host.egress_callback());
        agent_host = Some(host);
    }
    // The filtered-egress context, kept to change the policy while the sandbox runs
    // (`airlock allow`/`deny` reach it on DIR/policy.sock).
    let egress: std::sync::OnceLock<Arc<airlock_egress::proxy::Ctx>> = std::sync::OnceLock::new();
    let keep_egress = |ctx: Arc<airlock_egress::proxy::Ctx>| {
        let _ = egress.set(ctx);
    };
    hooks.on_egress_ctx = Some(&keep_egress);
    let name = spec.name.clone();
    let pool_member = spec.pool_member;
    let on_ready = || {
        if let Some(ctx) = egress.get() {
            if let Err(e) = airlock_engine::live_policy::serve(dir, &name, ctx.clone(), pool_member)
            {
                errln!("airlock: cannot serve the policy socket: {e}");
            }
            // A claim may bring injected secrets.
            if pool_member {
                airlock_engine::live_policy::preload_interception();
            }
        }
        if let Some(h) = &agent_host {
            h.start();
        }
    };
    hooks.on_ready = Some(&on_ready);
    let built = crate::cmd::run::Built {
        spec,
        timeout: None,
        forward_stdin: false,
        secrets: Some(secrets),
        instance_id: Some(instance_id),
        pool_size: 0,
        // A named sandbox's hostname is its own (set at claim by the adoption).
        hostname_chosen: true,
    };
    let code = crate::cmd::run::launch(
        &built,
        false,
        None,
        Some(&dir.join("net.jsonl")),
        Some(dir),
        &hooks,
    );
    // A claimer that ended the member before its last `sync` still gets the answer.
    airlock_engine::live_policy::wait_streams(std::time::Duration::from_secs(2));
    let _ = std::fs::remove_file(dir.join(airlock_agent::AGENT_SOCKET));
    let _ = std::fs::remove_file(dir.join(airlock_engine::live_policy::SOCKET));
    let _ = std::fs::remove_file(dir.join(backend::SUPERVISOR_PID));
    code
}

/// The in-sandbox helper carried in this binary, installed once under the state directory.
fn install_guest() -> CliResult<std::path::PathBuf> {
    let state = paths::state_dir();
    airlock_guest_embed::install(&state).map_err(|e| {
        CliError::new(
            exit::SANDBOX_FAILED,
            anyhow::anyhow!(
                "install the in-sandbox helper at {}: {e}",
                airlock_guest_embed::installed_path(&state).display()
            ),
        )
        .hint("the state directory must be writable (AIRLOCK_STATE_DIR names another one)")
    })
}
