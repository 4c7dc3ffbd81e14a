//! `airlock run`: resolve config + flags into a RunSpec, plan it, run it, report.

use crate::cli::RunArgs;
use crate::error::{CliError, CliResult};
use airlock_model::policy::WorkspaceMode;
use airlock_model::{exit, plan};
use airlock_sandbox::cgroup::Layout;
use airlock_sandbox::container::{self, rundir, Changes};
use airlock_sandbox::isolation::{AnyBackend, Ending, Isolation};
use std::path::{Path, PathBuf};

pub use super::load::load_config;
pub use super::spec::{build, parse_duration, resolve_secrets, workdir_inside, Built};

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
    } else if let Some(code) =
        super::daemon::try_warm(&b, a.tty, a.timeout.as_deref(), a.net_log.as_deref())?
    {
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
    // Home files: copies staged in the sandbox's folder (named) or a per-run folder (removed
    // when this returns).
    let _staging = if spec.home_files.is_empty() {
        None
    } else {
        let dir = match persist {
            Some(d) => d.join("home-files"),
            None => state.join("home-files").join(&spec.name),
        };
        let staging =
            airlock_work::home_files::Staging::new(dir, persist.is_none()).map_err(|e| {
                CliError::new(
                    exit::SANDBOX_FAILED,
                    anyhow::anyhow!("stage home files: {e}"),
                )
            })?;
        let owner = crate::cmd::named::rootful_owner(&spec);
        let kept = spec.home_dir.clone();
        airlock_work::home_files::stage(&mut spec, kept.as_deref(), &staging.dir, owner).map_err(
            |e| CliError::usage(e).hint("fix [home_files] in airlock.toml (see `airlock config`)"),
        )?;
        Some(staging)
    };
    let spec = &spec;

    airlock_sandbox::phase("config loaded");
    // Reading the cgroup layout costs ~0.1 ms: only when there are limits to place.
    let layout = if spec.resources.any() {
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
    };
    let wayback = wayback_before(spec);
    let outcome = backend.start(&plan, &opts)?;
    airlock_sandbox::phase("cleaned up");
    let undone = wayback_after(spec, wayback.as_ref(), persist);
    match outcome.ending {
        Ending::TimedOut => errln!(
            "airlock: killed: timeout after {}",
            timeout_text.unwrap_or("?")
        ),
        Ending::OutOfMemory => errln!(
            "airlock: killed: out of memory (limit {})",
            spec.resources
                .memory
                .map(|m| m.to_string())
                .unwrap_or_default()
        ),
        Ending::Exited(_) => {}
    }
    if let Some(c) = &outcome.changes {
        print_changes(c);
    }
    if undone {
        return Err(tampered(spec, outcome.exit_code()));
    }
    Ok(outcome.exit_code())
}

/// What [`wayback_before`] looked at: the extra paths and the snapshot.
pub type Wayback = (Vec<PathBuf>, airlock_work::wayback::Snapshot);

/// Bind mode: the way back is the checkout itself; look at it before the run (and after it,
/// [`wayback_after`]). None for other workspaces.
pub fn wayback_before(spec: &airlock_model::spec::RunSpec) -> Option<Wayback> {
    (spec.workspace == WorkspaceMode::Bind).then(|| {
        let extra: Vec<PathBuf> = airlock_work::wayback::hooks_path(&spec.project_dir)
            .into_iter()
            .collect();
        let snap = airlock_work::wayback::snapshot(&spec.project_dir, &extra);
        (extra, snap)
    })
}

/// After a bind run: what the sandbox changed in git's control files is reported and undone
/// (true: something was undone, the run fails with [`tampered`]).
pub fn wayback_after(
    spec: &airlock_model::spec::RunSpec,
    wayback: Option<&Wayback>,
    persist: Option<&Path>,
) -> bool {
    let Some((extra, before)) = wayback else {
        return false;
    };
    let report = airlock_work::wayback::verify(&spec.project_dir, before, extra);
    if report.is_empty() {
        return false;
    }
    let undone = super::wayback::print(&report);
    if let Some(dir) = persist {
        let _ = std::fs::write(
            dir.join(airlock_work::wayback::REPORT_FILE),
            serde_json::to_vec_pretty(&report).unwrap_or_default(),
        );
    }
    undone
}

/// The error of a bind run whose changes to git's control files were undone.
pub fn tampered(spec: &airlock_model::spec::RunSpec, code: i32) -> CliError {
    CliError::new(
        exit::POLICY_REFUSED,
        anyhow::anyhow!(
            "the sandbox tampered with git's control files in {} (command exit status {code})",
            spec.project_dir.display(),
        ),
    )
    .hint("the changes listed above were undone; nothing the sandbox planted there runs on your next git")
}

const MAX_LISTED: usize = 20;

pub fn print_changes(c: &Changes) {
    if c.is_empty() {
        return;
    }
    let mut lines = Vec::new();
    for (mark, list) in [("+", &c.added), ("~", &c.modified), ("-", &c.deleted)] {
        for p in list {
            lines.push(format!("  {mark} {}", p.display()));
        }
    }
    errln!(
        "airlock: workspace changes (discarded, host untouched): {} added, {} changed, {} deleted",
        c.added.len(),
        c.modified.len(),
        c.deleted.len()
    );
    for l in lines.iter().take(MAX_LISTED) {
        errln!("{l}");
    }
    if lines.len() > MAX_LISTED {
        errln!("  … and {} more", lines.len() - MAX_LISTED);
    }
}
