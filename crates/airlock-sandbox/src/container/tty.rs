//! Host side of a running sandbox: signal relay, the timeout, and (with -t) the terminal relay
//! between the user's terminal and the sandbox's own pseudo-terminal.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, Signal};
use nix::sys::termios::{self, SetArg, Termios};
use nix::unistd::Pid;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// Signals the host side relays to the sandbox.
const RELAYED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Self-pipe that turns relayed signals into readable bytes.
pub struct SignalPipe {
    rd: OwnedFd,
    wr: OwnedFd,
}

impl SignalPipe {
    pub fn install() -> io::Result<SignalPipe> {
        let flags = nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK;
        let (rd, wr) = nix::unistd::pipe2(flags)?;
        crate::sys::signals_to_pipe(wr.as_raw_fd(), RELAYED)?;
        Ok(SignalPipe { rd, wr })
    }

    pub fn fds(&self) -> [RawFd; 2] {
        [self.rd.as_raw_fd(), self.wr.as_raw_fd()]
    }

    fn drain(&self) -> Vec<Signal> {
        let mut buf = [0u8; 64];
        let mut out = Vec::new();
        while let Ok(n) = nix::unistd::read(&self.rd, &mut buf) {
            if n == 0 {
                break;
            }
            out.extend(
                buf[..n]
                    .iter()
                    .filter_map(|&b| Signal::try_from(b as i32).ok()),
            );
        }
        out
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        crate::sys::restore_signals(RELAYED);
    }
}

/// Puts the user's terminal in raw mode and restores it on drop.
pub(crate) struct RawMode {
    fd: RawFd,
    saved: Termios,
}

impl RawMode {
    pub(crate) fn enter(fd: RawFd) -> Option<RawMode> {
        let b = crate::sys::stdio(fd);
        let saved = termios::tcgetattr(b).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(b, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let b = crate::sys::stdio(self.fd);
        let _ = termios::tcsetattr(b, SetArg::TCSADRAIN, &self.saved);
    }
}

fn copy(from: RawFd, to: RawFd) -> io::Result<usize> {
    let mut buf = [0u8; 16 * 1024];
    let n = crate::sys::read_raw(from, &mut buf)?;
    crate::sys::write_all_raw(to, &buf[..n]);
    Ok(n)
}

/// A connection [`supervise`] serves beside the rest (a warm claim's egress events).
pub trait Side {
    /// What to wait on.
    fn fd(&self) -> std::os::fd::BorrowedFd<'_>;
    /// It is readable: take what came, without waiting. False: it is done (polled no more).
    fn readable(&mut self) -> bool;
}

/// Wait for the sandbox's PID 1 to exit while relaying signals and the terminal.
/// Returns whether the timeout fired (the sandbox was then killed).
/// Also collects what PID 1 reports on `result` (read as it arrives, so a large report never
/// blocks PID 1). Returns (timed out, report bytes).
/// `defer`: asked about each relayed signal (save SIGWINCH); `Some(d)` holds it back, to be
/// sent only if the sandbox still runs after `d` (a microVM first asks its guest to power off).
/// `side`: another connection served meanwhile (a warm claim's egress events): called when its
/// descriptor is readable, polled no more once it answers false.
#[allow(clippy::too_many_arguments)]
pub fn supervise(
    pidfd: &OwnedFd,
    child: Pid,
    sigs: &SignalPipe,
    tty_sock: Option<&OwnedFd>,
    result: &OwnedFd,
    deadline: Option<Instant>,
    defer: Option<&(dyn Fn(Signal) -> Option<std::time::Duration> + Sync)>,
    mut side: Option<&mut dyn Side>,
) -> io::Result<(bool, Vec<u8>)> {
    const MAX_REPORT: usize = 8 << 20;
    let mut report = Vec::new();
    let mut result_open = true;
    let master = match tty_sock {
        Some(sock) => Some(crate::sys::recv_fd(sock.as_raw_fd())?),
        None => None,
    };
    let _raw = master.as_ref().and_then(|_| RawMode::enter(0));
    if let (Some(m), Some(ws)) = (&master, crate::sys::get_winsize(0)) {
        crate::sys::set_winsize(m.as_raw_fd(), &ws);
    }
    let mut stdin_open = master.is_some();
    let mut timed_out = false;
    let mut held: Option<(Instant, Signal)> = None;
    loop {
        if let Some((at, s)) = held.filter(|(at, _)| *at <= Instant::now()) {
            let _ = (at, signal::kill(child, s));
            held = None;
        }
        let next = [deadline.filter(|_| !timed_out), held.map(|(at, _)| at)]
            .into_iter()
            .flatten()
            .min();
        let timeout = match next {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let stdin = crate::sys::stdio(0);
        let mut fds = vec![
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigs.rd.as_fd(), PollFlags::POLLIN),
        ];
        let result_at = result_open.then(|| {
            fds.push(PollFd::new(result.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let master_at = master.as_ref().map(|m| {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let stdin_at = (master.is_some() && stdin_open).then(|| {
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
            fds.len() - 1
        });
        let side_at = side.as_ref().map(|s| {
            fds.push(PollFd::new(s.fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, timeout) {
            Ok(0) if deadline.is_some_and(|d| !timed_out && d <= Instant::now()) => {
                timed_out = true;
                let _ = signal::kill(child, Signal::SIGKILL);
                continue;
            }
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let at = |i: Option<usize>| i.is_some_and(ready);
        let (child_done, sig_ready, result_ready, master_ready, stdin_ready) = (
            ready(0),
            ready(1),
            at(result_at),
            at(master_at),
            at(stdin_at),
        );
        let side_ready = at(side_at);
        drop(fds);
        if side_ready && !side.as_mut().is_some_and(|s| s.readable()) {
            side = None;
        }
        if result_ready {
            let mut buf = [0u8; 64 * 1024];
            match nix::unistd::read(result, &mut buf) {
                Ok(0) | Err(_) => result_open = false,
                Ok(n) if report.len() < MAX_REPORT => report.extend_from_slice(&buf[..n]),
                Ok(_) => {}
            }
        }
        if sig_ready {
            for s in sigs.drain() {
                if s == Signal::SIGWINCH {
                    if let (Some(m), Some(ws)) = (&master, crate::sys::get_winsize(0)) {
                        crate::sys::set_winsize(m.as_raw_fd(), &ws);
                    }
                } else if let Some(d) = held.is_none().then(|| defer.and_then(|f| f(s))).flatten() {
                    held = Some((Instant::now() + d, s));
                } else {
                    let _ = signal::kill(child, s);
                }
            }
        }
        if let Some(m) = &master {
            if master_ready && copy(m.as_raw_fd(), 1).unwrap_or(0) == 0 && !child_done {
                // Terminal hung up: wait for the exit only.
            }
            if stdin_ready && copy(0, m.as_raw_fd()).unwrap_or(0) == 0 {
                stdin_open = false;
            }
        }
        if child_done {
            if let Some(m) = &master {
                // Drain what the command printed last.
                let _ = nix::fcntl::fcntl(
                    m,
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                );
                while copy(m.as_raw_fd(), 1).unwrap_or(0) > 0 {}
            }
            // PID 1 has exited: whatever it wrote is in the pipe now.
            let mut buf = [0u8; 64 * 1024];
            while result_open && report.len() < MAX_REPORT {
                match nix::unistd::read(result, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => report.extend_from_slice(&buf[..n]),
                }
            }
            return Ok((timed_out, report));
        }
    }
}
