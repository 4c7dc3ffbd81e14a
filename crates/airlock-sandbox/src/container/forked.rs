//! A short-lived helper forked to act inside a running sandbox's namespaces: attach a
//! workspace (`attach`), set its names (`attach::set_hostname`), hot-plug a mount (`hotplug`),
//! write a claim's secrets (`exec`). It dies with its parent (PDEATHSIG), reports a failure as
//! one message on a pipe, and the parent waits for it (or, when the helper answers over a
//! socket of its own, reaps it later: [`Forked`]). (The long-lived forks — exec's relay and
//! the member's stub — have their own shape.)

use super::error::{io_err, RunError};
use crate::os::{Os, Real};
use crate::sys;
use airlock_model::exit;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// The helper's way to give up: the message reaches the parent's error.
pub(crate) struct Helper(RawFd);

impl Helper {
    /// Report `msg` to the parent and exit.
    pub(crate) fn fail(&self, msg: String) -> ! {
        sys::write_all_raw(self.0, msg.as_bytes());
        sys::exit_now(exit::SANDBOX_FAILED)
    }

    /// Join the sandbox's user namespace (`fd`).
    pub(crate) fn join_user(&self, fd: BorrowedFd<'_>) {
        if let Err(e) = nix::sched::setns(fd, CloneFlags::CLONE_NEWUSER) {
            self.fail(format!("join the sandbox's user namespace: {e}"));
        }
    }

    /// Become the sandbox's root (root-run sandboxes: what the helper creates is its own).
    pub(crate) fn become_root(&self) {
        if let Err(e) = Real.become_root() {
            self.fail(format!("become the sandbox's root: {e}"));
        }
    }

    /// Join the sandbox's mount namespace (`fd`).
    pub(crate) fn join_mounts(&self, fd: BorrowedFd<'_>) {
        if let Err(e) = nix::sched::setns(fd, CloneFlags::CLONE_NEWNS) {
            self.fail(format!("join the sandbox's mount namespace: {e}"));
        }
    }
}

/// Fork a helper that runs `body` and exits 0 (or fails through [`Helper::fail`]); wait for it.
/// Its failure is `Setup("{doing}: MESSAGE")` (the message alone when `doing` is empty); an end
/// without a message names `what`.
pub(crate) fn run(what: &str, doing: &str, body: impl FnOnce(&Helper)) -> Result<(), RunError> {
    spawn(what, doing, body)?.wait()
}

/// [`run`]'s helper, running: [`Forked::wait`] for its end and failure. One dropped without a
/// wait is waited for then (a helper whose answer came another way, still exiting: reaped
/// once the caller is done with what it answered).
#[derive(Debug)]
pub(crate) struct Forked {
    pid: Option<nix::unistd::Pid>,
    err: Option<OwnedFd>,
    what: String,
    doing: String,
}

/// Fork the helper that runs `body` (see [`run`]); it is not waited for here.
pub(crate) fn spawn(
    what: &str,
    doing: &str,
    body: impl FnOnce(&Helper),
) -> Result<Forked, RunError> {
    let (err_rd, err_wr) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| io_err("pipe")(e.into()))?;
    let child = sys::clone_fork(0).map_err(RunError::Clone)?;
    if child == 0 {
        drop(err_rd);
        let helper = Helper(err_wr.as_raw_fd());
        let _ = sys::prctl_simple(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        body(&helper);
        sys::exit_now(0);
    }
    drop(err_wr);
    Ok(Forked {
        pid: Some(nix::unistd::Pid::from_raw(child)),
        err: Some(err_rd),
        what: what.to_string(),
        doing: doing.to_string(),
    })
}

impl Forked {
    /// Wait for the helper's end: Ok when it exited 0, else its failure (see [`run`]).
    pub(crate) fn wait(mut self) -> Result<(), RunError> {
        let (Some(pid), Some(err)) = (self.pid.take(), self.err.take()) else {
            return Ok(());
        };
        let status = nix::sys::wait::waitpid(pid, None)
            .map_err(|e| io_err("wait for a helper in the sandbox")(e.into()))?;
        let mut msg = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::fs::File::from(err), &mut msg);
        let (what, doing) = (&self.what, &self.doing);
        match status {
            nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
            _ if msg.is_empty() => Err(RunError::Setup(format!(
                "the {what} helper ended: {status:?}"
            ))),
            _ if doing.is_empty() => {
                Err(RunError::Setup(String::from_utf8_lossy(&msg).into_owned()))
            }
            _ => Err(RunError::Setup(format!(
                "{doing}: {}",
                String::from_utf8_lossy(&msg)
            ))),
        }
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_helper_not_waited_for_is_reaped_when_dropped_and_a_wait_says_its_failure() {
        let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe");
        let helper = spawn("probe", "probe", |_| {
            sys::write_all_raw(wr.as_raw_fd(), b"done");
        })
        .expect("spawn");
        drop(wr);
        let mut got = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::fs::File::from(rd), &mut got);
        assert_eq!(got, b"done");
        let pid = helper.pid.expect("running");
        drop(helper);
        // Reaped: no zombie left under its pid.
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "helper {pid} left as a zombie"
        );
        let err = spawn("probe", "do it", |h| h.fail("no".into()))
            .expect("spawn")
            .wait()
            .expect_err("failed helper")
            .to_string();
        assert!(err.contains("do it: no"), "{err}");
    }

    #[test]
    fn a_helper_reports_success_its_message_or_how_it_ended() {
        assert!(run("probe", "probe", |_| {}).is_ok());
        let err = run("probe", "do the thing", |h| h.fail("it broke".into()))
            .expect_err("failed helper")
            .to_string();
        assert!(err.contains("do the thing: it broke"), "{err}");
        let err = run("probe", "", |h| h.fail("raw message".into()))
            .expect_err("failed helper")
            .to_string();
        assert!(err.ends_with("failed: raw message"), "{err}");
        let err = run("probe", "do the thing", |_| {
            // SAFETY: the forked helper ends itself without a message.
            unsafe { libc::raise(libc::SIGKILL) };
        })
        .expect_err("killed helper")
        .to_string();
        assert!(err.contains("the probe helper ended"), "{err}");
    }
}
