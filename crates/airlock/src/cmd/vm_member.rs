//! A warm microVM member's life as the pool sees it: can members boot here, is one up, power
//! it off. Used by the daemon (`daemon.rs`) and by a claim (`warm_vm.rs`).

use crate::error::{CliError, CliResult};
use airlock_engine::supervisor;
use airlock_sandbox::isolation::MicroVm;
use airlock_sandbox::microvm;
use std::path::Path;

/// A microVM pool's members must be able to boot here: what a cold run would refuse (no QEMU,
/// no usable kernel) is `daemon start`'s error, not a daemon retrying boots in the background.
/// Also builds what the guests boot from (once; the host image can take minutes), so the
/// members' starts find it ready.
pub(super) fn check_backend(spec: &airlock_model::spec::RunSpec) -> CliResult<()> {
    microvm::prepare(
        spec.kernel.as_ref(),
        spec.rootfs != airlock_model::spec::RootFs::Host,
    )
    .map(drop)
    .map_err(|e| {
        CliError::new(
            airlock_model::exit::BACKEND_UNAVAILABLE,
            anyhow::anyhow!("the microvm backend cannot run here: {}", e.why),
        )
        .hint(e.hint)
    })
}

/// Whether a claimed microVM member takes sessions: its supervisor holds the folder and its
/// control socket answers.
pub(super) fn member_up(dir: &Path) -> bool {
    supervisor::locked(dir)
        && matches!(
            MicroVm::default().observe_in(dir),
            airlock_sandbox::isolation::Observed::Running { .. }
        )
}

/// End a microVM member (no-op for any other): its supervisor asks the guest to power off with
/// no grace — a member serves one claim — and QEMU ends with it.
pub(super) fn power_off(dir: &Path) {
    let Some(pid) = std::fs::read_to_string(dir.join(microvm::PID_FILE))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return;
    };
    if !supervisor::locked(dir) {
        return;
    }
    let _ = std::fs::write(dir.join(airlock_sandbox::isolation::STOP_GRACE_FILE), "0");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
}
