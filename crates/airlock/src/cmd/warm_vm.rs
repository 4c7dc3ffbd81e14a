//! `run --backend microvm` through a warm microVM (docs/design/warm-pool.md): the claim is the
//! container one (`daemon::claim`: one compare-and-set in the store, then a liveness check —
//! the member's supervisor and its control socket); the binding goes over the member's
//! channel before any of the claim's code runs: the allowlist (the supervisor's live policy
//! socket, as `airlock allow`), the plain secrets ([`microvm::pool::install_secrets`]), an
//! overlay workspace ([`microvm::pool::attach_workspace`]: its image into the member's slot
//! disk, mounted by the guest helper; the change summary read back after), then the command,
//! environment, working directory, terminal and stdin as one session. The guest powers off
//! at the end: a member serves one claim.

use super::daemon;
use super::vm_member::power_off;
use crate::error::{CliError, CliResult};
use airlock_engine::live_policy::ClaimedAs;
use airlock_engine::{paths, pool};
use airlock_model::policy::{NetMode, WorkspaceMode};
use airlock_sandbox::command::{Ending, Outcome};
use airlock_sandbox::isolation::{ExecRequest, MicroVm};
use airlock_sandbox::microvm;
use std::path::Path;
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
    // An overlay workspace goes into the member's slot disk at claim, unless the writable
    // layers are on a `disk` of their own. Read-only mounts (snapshots: a member's would date
    // from its boot), injected secrets (the proxy's CA and values live in the supervisor), a
    // chosen hostname (the guest's is set at its boot): cold. (A bind workspace is refused
    // cold: no writable host share.)
    let overlay = spec.workspace == WorkspaceMode::Overlay;
    if !(spec.workspace == WorkspaceMode::None || overlay && spec.resources.disk.is_none())
        || !spec.binds.is_empty()
        || spec.secrets.values().any(|s| s.inject.is_some())
        || b.hostname_chosen
    {
        return Ok(None);
    }
    let secrets = super::spec::resolve_secrets(&spec.secrets)?;
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
    let refused = |store: &mut airlock_engine::Store, what: &str, e: &dyn std::fmt::Display| {
        daemon::release(store, &state, &member, &dir, None);
        errln!("airlock: warning: the warm microVM refused {what}, starting cold: {e}");
        Ok(None)
    };
    // This run's allowlist, in force before its command runs; its denials hint `--allow` as
    // a cold run's, are said here and go to its `--net-log`.
    let mut watch = None;
    if spec.net == NetMode::Filtered {
        match airlock_engine::live_policy::send_claim(
            &dir,
            &spec.domains,
            &spec.ports,
            &[],
            None,
            ClaimedAs::Run,
            Some(journal),
        ) {
            Ok((_, w)) => watch = w,
            Err(e) => return refused(&mut store, "this run's allowlist", &e),
        }
    }
    if let Err(e) = microvm::pool::install_secrets(&dir, &secrets) {
        return refused(&mut store, "this run's secrets", &e);
    }
    if overlay {
        if let Err(e) = microvm::pool::attach_workspace(&dir, &spec.project_dir) {
            return refused(&mut store, "this run's workspace", &e);
        }
    }
    let bound_in = t0.elapsed();
    airlock_sandbox::phase("allowlist, secrets and workspace bound");
    let env = airlock_model::spec::env_over(&spec.env, &secrets);
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
