//! `run --backend microvm` through a warm microVM (docs/design/warm-pool.md): the claim is the
//! container one (`daemon::claim`: one compare-and-set in the store, then a liveness check —
//! the member's supervisor and its control socket); the binding goes over the member's
//! channel before any of the claim's code runs: the allowlist (the supervisor's live policy
//! socket, as `airlock allow`), the plain secrets ([`microvm::pool::install_secrets`]), an
//! overlay workspace ([`microvm::pool::attach_workspace`]: its image into the member's slot
//! disk, mounted by the guest helper; the change summary read back after), the read-only
//! mounts ([`microvm::pool::attach_ro_mounts`]: snapshots into the member's claim slot), a
//! chosen hostname ([`set_hostname`]), then the command,
//! environment, working directory, terminal and stdin as one session. The guest powers off
//! at the end: a member serves one claim.

use super::daemon;
use super::vm_member::power_off;
use crate::error::{CliError, CliResult};
use airlock_engine::live_policy::ClaimedAs;
use airlock_engine::{paths, pool};
use airlock_model::policy::WorkspaceMode;
use airlock_sandbox::command::{Ending, Outcome};
use airlock_sandbox::isolation::{ExecRequest, MicroVm};
use airlock_sandbox::microvm;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

/// `run` for a microVM spec through a warm member; None: start it cold (no pool, the pool is
/// empty, the run asks for what a claim cannot bind, or the member refused a binding).
pub(super) fn try_warm(
    b: &super::spec::Built,
    tty: bool,
    timeout_text: Option<&str>,
    net_log: Option<&Path>,
) -> CliResult<Option<i32>> {
    let spec = &b.spec;
    let state = paths::state_dir();
    // An overlay workspace goes into the member's slot disk at claim (its writable layers on
    // the member's `disk` when the run has one, grown to the run's). Read-only mounts are
    // snapshots made now, written into the member's claim slot; what a cold start refuses (a
    // writable mount — no writable host share — too many, a bad target; a bind workspace)
    // starts cold, which says why.
    let overlay = spec.workspace == WorkspaceMode::Overlay;
    if !(spec.workspace == WorkspaceMode::None || overlay) || cold_mounts(spec) {
        return Ok(None);
    }
    // Injected secrets: refused as a cold run refuses them (before any claim); their
    // placeholders made here, the values and the CA bound in the member's supervisor.
    let secrets = super::secrets::claim_bind(spec, super::spec::resolve_secrets(&spec.secrets)?)?;
    // The run's egress journal, opened (and refused) as a cold start opens it; the member's
    // supervisor sends the claim's events to it (`live_policy::Watch`).
    let journal = airlock_sandbox::container::net_journal(net_log, None)?;
    let t0 = Instant::now();
    let key = pool::key(spec);
    let Some((mut store, member)) = daemon::claim_or_cold(&state, &key, spec, b.pool_size) else {
        return Ok(None);
    };
    let claimed_in = t0.elapsed();
    airlock_sandbox::phase("claimed a warm microVM");
    let dir = pool::member_dir(&state, &member.name);
    let refused = |store: &mut daemon::Records, what: &str, e: &dyn std::fmt::Display| {
        daemon::release(store, &state, &member, &dir, None);
        errln!("airlock: warning: the warm microVM refused {what}, starting cold: {e}");
        Ok(None)
    };
    // This run's allowlist and injected secrets, in force before its command runs; its
    // denials hint `--allow` as a cold run's, are said here and go to its `--net-log`.
    let mut watch =
        match bind_policy_and_secrets(&dir, spec, &secrets, ClaimedAs::Run, Some(journal)) {
            Ok(w) => w,
            Err(e) => return refused(&mut store, "this run's allowlist or secrets", &e),
        };
    if let Err(e) = grow_disk(&dir, spec) {
        return refused(&mut store, "this run's `disk`", &e);
    }
    if overlay {
        if let Err(e) = microvm::pool::attach_workspace(&dir, &spec.project_dir) {
            return refused(&mut store, "this run's workspace", &e);
        }
    }
    // Its read-only mounts: snapshots as of now, as a cold start makes them.
    if let Err(e) = microvm::pool::attach_ro_mounts(&dir, &ro_mounts(spec)) {
        return refused(&mut store, "this run's read-only mounts", &e);
    }
    // A chosen hostname: the guest's, in /etc/hostname and /etc/hosts (as a named start's).
    if b.hostname_chosen {
        if let Err(e) = set_hostname(&dir, &spec.hostname) {
            return refused(&mut store, "this run's hostname", &e);
        }
    }
    let bound_in = t0.elapsed();
    airlock_sandbox::phase("allowlist, secrets, workspace and mounts bound");
    let mut env = airlock_model::spec::env_over(&spec.env, &secrets.seen);
    if !secrets.bindings.is_empty() {
        airlock_model::plan::set_ca_bundle_vars(&mut env);
    }
    errln!(
        "airlock: warm start (pool {}, {}, claimed in {:.2} ms, bound in {:.2} ms)",
        &key[..8],
        member.name,
        claimed_in.as_secs_f64() * 1000.0,
        bound_in.as_secs_f64() * 1000.0
    );
    let req = ExecRequest {
        argv: spec.argv.clone(),
        env,
        cwd: spec
            .workdir
            .clone()
            .or_else(|| overlay.then(|| "/workspace".into())),
        tty,
        forward_stdin: b.forward_stdin,
        with_secrets: false,
        timeout: b.timeout,
    };
    // Its egress events, said while it runs (every fork of the claim's is done).
    if let Some(w) = &mut watch {
        w.follow();
    }
    // The time limit: past it the guest powers off under the command.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let timed_out = std::sync::atomic::AtomicBool::new(false);
    let ran = std::thread::scope(|s| {
        if let Some(limit) = b.timeout {
            let (dir, timed_out) = (&dir, &timed_out);
            s.spawn(move || {
                if done_rx.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout) {
                    timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
                    power_off(dir);
                }
            });
        }
        let ran = MicroVm::default().exec_in(&dir, &member.name, &req);
        airlock_sandbox::phase("command ended");
        drop(done_tx);
        ran
    });
    if let Some(w) = watch {
        w.finish();
    }
    // The overlay's summary, read in the guest before it powers off (not after a timeout:
    // the guest is going down).
    let changes = match (&ran, overlay) {
        (Ok(_), true) if !timed_out.load(std::sync::atomic::Ordering::SeqCst) => {
            microvm::pool::workspace_changes(&dir)
                .map_err(|e| errln!("airlock: warning: {e}"))
                .ok()
        }
        _ => None,
    };
    daemon::release(&mut store, &state, &member, &dir, Some((&key, claimed_in)));
    airlock_sandbox::phase("member released");
    let outcome = if timed_out.load(std::sync::atomic::Ordering::SeqCst) {
        Outcome {
            ending: Ending::TimedOut,
            changes: None,
        }
    } else {
        ran.map_err(CliError::from)?
    };
    super::wayback::finish(spec, &outcome, changes.as_ref(), false, timeout_text).map(Some)
}

/// A microVM claim's allowlist and secrets, before its command (a run's or a named
/// sandbox's): the allowlist and the injected secrets' bindings on the member's policy
/// socket in one line (its supervisor — the one whose proxy intercepts — makes this claim's
/// CA and answers with its certificate), the combined CA bundle into the guest, then the
/// secrets as the guest's /run/secrets files (an injected one as its placeholder). Its
/// denials' hints name `claimed_as`; with `journal`, the member's egress events from now on
/// are recorded there (the watch returned: finish it after the command).
pub(super) fn bind_policy_and_secrets(
    dir: &Path,
    spec: &airlock_model::spec::RunSpec,
    secrets: &super::secrets::ClaimBound,
    claimed_as: ClaimedAs,
    journal: Option<airlock_egress::journal::Journal>,
) -> Result<Option<airlock_engine::live_policy::Watch>, String> {
    let (ca, watch) = daemon::policy_answer(daemon::begin_policy(
        dir, spec, secrets, claimed_as, journal,
    )?)?;
    if let Some(pem) = ca.filter(|_| !secrets.bindings.is_empty()) {
        microvm::pool::install_ca_bundle(dir, &pem)?;
    }
    microvm::pool::install_secrets(dir, &secrets.seen)?;
    Ok(watch)
}

/// The guest takes the claim's hostname (a member booted with its own): the kernel's,
/// `/etc/hostname` and `/etc/hosts` as a cold guest has them.
pub(super) fn set_hostname(dir: &Path, hostname: &str) -> Result<(), String> {
    let files: Vec<(String, String)> = airlock_model::plan::name_files(hostname)
        .into_iter()
        .filter_map(|m| match m {
            airlock_model::plan::MountStep::File {
                target, contents, ..
            } => Some((target.display().to_string(), contents)),
            _ => None,
        })
        .collect();
    microvm::pool::set_hostname(dir, hostname, &files)
}

/// A claim's `disk` larger than its member's (which booted with
/// [`airlock_model::plan::microvm::member_disk`] of it): the member's disk and its filesystem
/// grown to the claim's size before anything of the claim's runs.
pub(super) fn grow_disk(dir: &Path, spec: &airlock_model::spec::RunSpec) -> Result<(), String> {
    match spec.resources.disk {
        Some(d) if d.0 > airlock_model::plan::microvm::member_disk(d.0) => {
            microvm::pool::grow_disk(dir, d.0)
        }
        _ => Ok(()),
    }
}

/// Mounts a microVM claim does not bind (a cold start refuses them and says why): a writable
/// one (no writable host share), more than a guest takes, a target a cold start refuses.
pub(super) fn cold_mounts(spec: &airlock_model::spec::RunSpec) -> bool {
    spec.binds.len() > airlock_model::plan::microvm::MAX_RO_MOUNTS
        || spec
            .binds
            .iter()
            .any(|m| m.writable || airlock_model::plan::check_target(&m.target).is_err())
}

/// A claim's read-only mounts as (host source, guest target).
pub(super) fn ro_mounts(spec: &airlock_model::spec::RunSpec) -> Vec<(PathBuf, PathBuf)> {
    spec.binds
        .iter()
        .map(|m| (m.source.clone(), m.target.clone()))
        .collect()
}
