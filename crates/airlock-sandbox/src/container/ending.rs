//! How a sandboxed command's process ended, as `run` and `exec` report it.

use super::error::RunError;
use airlock_model::exit;
use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;

/// How a sandboxed command's process ended, from its wait status and what it wrote on the
/// error pipe before exec (nothing once exec succeeded).
pub(super) enum Concluded {
    /// It ran: its exit code (128+N for a signal).
    Ran(i32),
    /// It could not be executed (127 not found, 126 not executable); already reported.
    NotStarted(i32),
}

pub(super) fn conclude(
    status: nix::sys::wait::WaitStatus,
    err_rd: OwnedFd,
) -> Result<Concluded, RunError> {
    use nix::sys::wait::WaitStatus;
    let mut msg = String::new();
    let _ = fs::File::from(err_rd).read_to_string(&mut msg);
    let code = match status {
        WaitStatus::Exited(_, c) => c,
        WaitStatus::Signaled(_, s, _) => exit::SIGNAL_BASE + s as i32,
        _ => exit::SANDBOX_FAILED,
    };
    if msg.is_empty() {
        return Ok(Concluded::Ran(code));
    }
    if code == exit::NOT_FOUND_CMD || code == exit::NOT_EXECUTABLE {
        eprintln!("airlock: {msg}");
        return Ok(Concluded::NotStarted(code));
    }
    Err(RunError::Setup(msg))
}
