//! Bounded probe children: fork, let the child try things (it reports each step through a
//! pipe as fixed-size records), wait with a deadline, and kill the whole process group when
//! the deadline passes. Namespaces and mounts created by a child die with it.

use crate::sys;
use crate::sys::raw;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Where a probe child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum End {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    ForkFailed(String),
}

/// Every step a child reported: `Ok(value)` or `Err(errno)`.
#[derive(Debug, Clone)]
pub(super) struct Outcome {
    pub steps: BTreeMap<u8, Result<i64, i32>>,
    pub end: End,
}

impl Outcome {
    pub fn get(&self, step: u8) -> Option<Result<i64, i32>> {
        self.steps.get(&step).copied()
    }
    pub fn ok(&self, step: u8) -> bool {
        matches!(self.get(step), Some(Ok(_)))
    }
    /// The errno of a failed step.
    pub fn errno(&self, step: u8) -> Option<i32> {
        match self.get(step) {
            Some(Err(e)) => Some(e),
            _ => None,
        }
    }
    /// A short description of how the child ended, when that is abnormal.
    pub fn abnormal_end(&self) -> Option<String> {
        match &self.end {
            End::Exited(_) => None,
            End::Signaled(s) => Some(format!("probe child killed by signal {s}")),
            End::TimedOut => Some("probe child timed out and was killed".to_string()),
            End::ForkFailed(e) => Some(format!("cannot fork a probe child: {e}")),
        }
    }
}

const RECORD: usize = 16;

/// The child's side of the report pipe.
pub(super) struct Reporter {
    fd: RawFd,
}

impl Reporter {
    fn record(&self, step: u8, ok: bool, value: i64) {
        let mut rec = [0u8; RECORD];
        rec[0] = step;
        rec[1] = ok as u8;
        rec[8..16].copy_from_slice(&value.to_le_bytes());
        // One write of 16 bytes (< PIPE_BUF) is atomic even with grandchildren writing too.
        sys::write_all_raw(self.fd, &rec);
    }
    pub fn ok(&self, step: u8, value: i64) {
        self.record(step, true, value);
    }
    pub fn err(&self, step: u8, errno: i32) {
        self.record(step, false, errno as i64);
    }
    /// Report a result and say whether it succeeded.
    pub fn check<T>(&self, step: u8, r: Result<T, nix::errno::Errno>) -> bool {
        match r {
            Ok(_) => {
                self.ok(step, 0);
                true
            }
            Err(e) => {
                self.err(step, e as i32);
                false
            }
        }
    }
    pub fn check_io<T>(&self, step: u8, r: std::io::Result<T>) -> bool {
        match r {
            Ok(_) => {
                self.ok(step, 0);
                true
            }
            Err(e) => {
                self.err(step, e.raw_os_error().unwrap_or(libc::EIO));
                false
            }
        }
    }
}

/// Run `f` in a forked child with a deadline. `f` returns the child's exit code.
pub(super) fn run(timeout: Duration, f: impl FnOnce(&Reporter) -> i32) -> Outcome {
    let (rd, wr) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            return Outcome {
                steps: BTreeMap::new(),
                end: End::ForkFailed(format!("pipe: {e}")),
            }
        }
    };
    let parent = std::process::id() as libc::pid_t;
    match raw::fork() {
        Err(e) => Outcome {
            steps: BTreeMap::new(),
            end: End::ForkFailed(e.to_string()),
        },
        Ok(None) => {
            drop(rd);
            // Own process group, so a timeout can kill grandchildren too; die with the parent.
            let _ =
                nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
            let _ = sys::prctl_simple(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            if nix::unistd::getppid().as_raw() != parent {
                sys::exit_now(120);
            }
            let rep = Reporter { fd: wr.as_raw_fd() };
            let code =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&rep))).unwrap_or(101);
            sys::exit_now(code)
        }
        Ok(Some(pid)) => {
            drop(wr);
            let end = wait_deadline(pid, timeout);
            Outcome {
                steps: read_records(rd),
                end,
            }
        }
    }
}

/// In a probe child: fork a grandchild that dies with its parent and runs `f`.
/// Returns the grandchild's pid or the fork errno.
pub(super) fn sub_fork(f: impl FnOnce() -> i32) -> Result<libc::pid_t, i32> {
    let parent = nix::unistd::getpid().as_raw();
    match raw::fork() {
        Err(e) => Err(e.raw_os_error().unwrap_or(libc::EAGAIN)),
        Ok(None) => {
            let _ = sys::prctl_simple(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            // In a new pid namespace our parent shows as 0; otherwise it must still be `parent`.
            let pp = nix::unistd::getppid().as_raw();
            if pp != parent && pp != 0 {
                sys::exit_now(120);
            }
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
            sys::exit_now(code)
        }
        Ok(Some(pid)) => Ok(pid),
    }
}

/// Blocking wait for a grandchild (the probe child's own deadline bounds it): its exit code,
/// or 128+signal.
pub(super) fn sub_wait(pid: libc::pid_t) -> i32 {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, c)) => return c,
            Ok(WaitStatus::Signaled(_, s, _)) => return 128 + s as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 125,
        }
    }
}

fn wait_deadline(pid: libc::pid_t, timeout: Duration) -> End {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let p = nix::unistd::Pid::from_raw(pid);
    let deadline = Instant::now() + timeout;
    let pidfd = sys::pidfd_open(pid).ok();
    let mut nap = Duration::from_micros(200);
    loop {
        match waitpid(p, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, c)) => return End::Exited(c),
            Ok(WaitStatus::Signaled(_, s, _)) => return End::Signaled(s as i32),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return End::ForkFailed(format!("waitpid: {e}")),
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(-pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(p, None);
            return End::TimedOut;
        }
        let left = deadline - now;
        match &pidfd {
            Some(fd) => {
                use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
                use std::os::fd::AsFd;
                let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                let _ = poll(
                    &mut fds,
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
                );
            }
            None => {
                std::thread::sleep(nap.min(left));
                nap = (nap * 2).min(Duration::from_millis(20));
            }
        }
    }
}

fn read_records(rd: OwnedFd) -> BTreeMap<u8, Result<i64, i32>> {
    let _ = nix::fcntl::fcntl(
        &rd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match nix::unistd::read(&rd, &mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    let mut steps = BTreeMap::new();
    for rec in buf.chunks_exact(RECORD) {
        let mut v = [0u8; 8];
        v.copy_from_slice(&rec[8..16]);
        let value = i64::from_le_bytes(v);
        steps.insert(
            rec[0],
            if rec[1] == 1 {
                Ok(value)
            } else {
                Err(value as i32)
            },
        );
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_child_reports_steps_and_exit() {
        let o = run(Duration::from_secs(5), |r| {
            r.ok(1, 42);
            r.err(2, libc::EPERM);
            let g = sub_fork(|| 0).map(sub_wait);
            r.ok(3, g.unwrap_or(-1) as i64);
            7
        });
        assert_eq!(o.end, End::Exited(7));
        assert_eq!(o.get(1), Some(Ok(42)));
        assert_eq!(o.errno(2), Some(libc::EPERM));
        assert_eq!(o.get(3), Some(Ok(0)));
        assert_eq!(o.get(4), None);
    }

    #[test]
    fn probe_child_is_killed_at_the_deadline() {
        let t = Instant::now();
        let o = run(Duration::from_millis(100), |r| {
            // A grandchild that would outlive us without the process-group kill.
            let _ = sub_fork(|| {
                std::thread::sleep(Duration::from_secs(30));
                0
            });
            r.ok(1, 0);
            std::thread::sleep(Duration::from_secs(30));
            0
        });
        assert_eq!(o.end, End::TimedOut);
        assert!(o.ok(1));
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
