//! `airlock run`: resolve config + flags into a RunSpec, plan it, run it, report.

use crate::cli::RunArgs;
use crate::error::{CliError, CliResult};
use airlock_model::policy::BackendKind;
use airlock_model::{exit, plan};
use airlock_sandbox::cgroup::Layout;
use airlock_sandbox::container::{self, rundir};
use airlock_sandbox::isolation::{AnyBackend, Isolation};
use std::path::Path;

pub use super::load::load_config;
use super::spec::stage_home_files;
pub use super::spec::{build, parse_duration, resolve_secrets, workdir_inside, Built};
use super::wayback::{finish, wayback_after, wayback_before};

pub fn run(a: &RunArgs, global_config: Option<&Path>, no_user_config: bool) -> CliResult<i32> {
    run_with(a, global_config, no_user_config, None)
}

/// `run`, or with `persist` a persistent sandbox supervised in this process until stopped (its
/// backend keeps what exec needs in `persist`) and PID 1 waits for exec'd commands.
pub fn run_with(
    a: &RunArgs,
    global_config: Option<&Path>,
    no_user_config: bool,
    persist: Option<&Path>,
) -> CliResult<i32> {
    let mut b = build(a, global_config, no_user_config, persist.is_some())?;
    if let Some(dir) = persist {
        b.instance_id = Some(crate::cmd::named::folder_id(dir)?);
    } else if let Some(code) = try_warm(&b, a)? {
        return Ok(code);
    }
    launch(
        &b,
        a.tty,
        a.timeout.as_deref(),
        a.net_log.as_deref(),
        persist,
        &Hooks::default(),
    )
}

/// `run` through a warm member of a pool matching its spec (`daemon.rs` for containers,
/// `warm_vm.rs` for microVMs); None: start it cold.
fn try_warm(b: &Built, a: &RunArgs) -> CliResult<Option<i32>> {
    // No pool was ever made here and none is asked for: one stat, nothing opened.
    if b.pool_size == 0
        && !airlock_engine::pool::members_dir(&airlock_engine::paths::state_dir()).is_dir()
    {
        return Ok(None);
    }
    let (tty, timeout, net_log) = (a.tty, a.timeout.as_deref(), a.net_log.as_deref());
    match b.spec.backend {
        BackendKind::Microvm => super::warm_vm::try_warm(b, tty, timeout, net_log),
        BackendKind::Container => super::daemon::try_warm(b, tty, timeout, net_log),
    }
}

/// Host-side listeners of a launch (agent mode).
#[derive(Default)]
pub struct Hooks<'a> {
    pub on_egress: Option<container::EgressCallback>,
    pub on_ready: Option<&'a (dyn Fn() + Sync)>,
    pub on_egress_ctx: Option<&'a (dyn Fn(std::sync::Arc<airlock_egress::proxy::Ctx>) + Sync)>,
}

/// Launch a built spec: to completion (`run`), or supervised until stopped (`persist`).
pub fn launch(
    b: &Built,
    tty: bool,
    timeout_text: Option<&str>,
    net_log: Option<&Path>,
    persist: Option<&Path>,
    hooks: &Hooks<'_>,
) -> CliResult<i32> {
    let (mut spec, timeout, forward_stdin) = (b.spec.clone(), b.timeout, b.forward_stdin);
    let state = rundir::state_dir();
    let _staging = stage_home_files(&mut spec, persist, &state)?;
    let spec = &spec;

    airlock_sandbox::phase("config loaded");
    // Reading the cgroup layout costs ~0.1 ms: only when there are limits to place.
    // A pool member's cgroup is made with no limits, for its claim's (`exec_stub`).
    let exec_stub = persist.is_some() && spec.pool_member;
    let layout = if spec.resources.any() || exec_stub {
        Layout::detect()
    } else {
        Layout::None
    };
    rundir::gc(&state, Layout::detect);
    airlock_work::home_files::sweep(&state, container::rundir::lock_free);
    let secrets = match &b.secrets {
        Some(s) => s.clone(),
        None => resolve_secrets(&spec.secrets)?,
    };
    // Injected secrets: the sandbox gets placeholders, the egress proxy the values.
    let (secrets, intercept) = super::secrets::bind(spec, secrets)?;
    let backend =
        AnyBackend::for_run(spec).ok_or(plan::Refusal::BackendUnavailable(spec.backend))?;
    let mut facts = match &backend {
        // What the microVM backend lacks here (its kernel, QEMU) is this command's error.
        AnyBackend::MicroVm(m) => {
            m.check_or_explain(&spec.project_dir, &layout)
                .map_err(|(_, e)| {
                    CliError::new(
                        exit::BACKEND_UNAVAILABLE,
                        anyhow::anyhow!("the microvm backend cannot run here: {}", e.why),
                    )
                    .hint(e.hint)
                })?
        }
        _ => backend.check(&spec.project_dir, &layout),
    };
    let vm = matches!(backend, AnyBackend::MicroVm(_));
    facts.image = crate::cmd::image::root_facts(&spec.rootfs, vm)?;
    let plan = plan::plan(spec, &facts)?;
    airlock_sandbox::phase("planned");
    if !plan.unenforced_limits().is_empty() {
        errln!(
            "airlock: warning: not enforced on this host: {} limit (no usable cgroup{}); pass --require-limits to refuse instead",
            plan.unenforced_limits().join(", "),
            if plan.rootless() { " delegation for this user" } else { "" }
        );
    }
    let opts = container::RunOptions {
        state_dir: &state,
        layout: &layout,
        timeout,
        tty,
        forward_stdin,
        facts: &facts,
        net_journal: net_log,
        secrets: &secrets,
        intercept,
        persist,
        instance_id: b.instance_id.as_deref(),
        on_egress: hooks.on_egress.clone(),
        on_ready: hooks.on_ready,
        on_egress_ctx: hooks.on_egress_ctx,
        defer_signal: None,
        exec_stub,
        on_child: None,
    };
    let wayback = wayback_before(spec);
    let outcome = backend.start(&plan, &opts)?;
    airlock_sandbox::phase("cleaned up");
    let undone = wayback_after(spec, wayback.as_ref(), persist);
    finish(
        spec,
        &outcome,
        outcome.changes.as_ref(),
        undone,
        timeout_text,
    )
}
