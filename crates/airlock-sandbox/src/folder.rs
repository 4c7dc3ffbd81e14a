//! A named sandbox's folder as the backends share it: the names of files kept there, and
//! what its state reads as. A leaf: `isolation`, `container` and `microvm` build on it.

/// In a named sandbox's folder: the grace period (milliseconds) its stopper gives before
/// SIGKILL, written just before the stop's SIGTERM (a microVM's supervisor shares it with its
/// guest: see `microvm`).
pub const STOP_GRACE_FILE: &str = "stop-grace-ms";

/// In a named microVM sandbox's folder: written by its supervisor when QEMU is about to boot
/// the guest (after the first use's artifacts are built), holding the accelerator (`kvm` or
/// `tcg`). Its starter (the engine) removes it before starting a supervisor and gives the
/// boot its own time from when it appears (see `airlock_engine::supervisor`).
pub const VM_BOOT_FILE: &str = "vm-booting";

/// The container backend's record of a named sandbox's plan, read by `exec` (what to become
/// inside: user, environment, working directory, rlimits, writable paths).
pub const PLAN_FILE: &str = "plan.json";

/// The plan recorded in a sandbox's (or pool member's) folder; the error names the file and
/// why it could not be read or decoded.
pub fn read_plan(dir: &std::path::Path) -> Result<airlock_model::plan::LaunchPlan, String> {
    std::fs::read(dir.join(PLAN_FILE))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("{PLAN_FILE}: {e}"))
}

/// Whether a named sandbox runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Its PID 1 (host pid) is alive and published for exec.
    Running { pid1: i32 },
    /// Not running, and it ended in an orderly way (or never ran).
    Stopped,
    /// Not running, but its last run left its record behind: it died without cleaning up.
    Dead,
}
