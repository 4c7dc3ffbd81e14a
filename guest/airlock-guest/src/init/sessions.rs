//! A held guest (a named microVM sandbox): after the root is built, serve `exec` sessions
//! over the one channel until `poweroff` or the channel closes. Each session is a child in
//! its own process group with its own pipes; every line names its session.

use super::{child, Become, Res};
use airlock_model::vm::{
    b64_decode, b64_encode, GuestExec, GuestMsg, HostMsg, TtySize, MAIN_SESSION,
    VM_PROTOCOL_VERSION,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

struct Session {
    pid: Pid,
    stdin: Option<File>,
    out: Option<File>,
    err: Option<File>,
    /// The session's pseudo-terminal (its master side), when it has one.
    pty: Option<File>,
    status: Option<i32>,
    /// Readable once the command has exited (see [`super::exit_fd`]).
    exited: Option<OwnedFd>,
}

/// How the server ends its sessions' commands, and where they run.
pub(crate) struct Serve<'a> {
    /// chroot for every session (None: stay, for tests).
    pub root: Option<&'a str>,
    /// Reap every child, orphans included (PID 1's duty); else only the sessions' own.
    pub reap_all: bool,
    /// `run -t`: start this as MAIN_SESSION first; its end ends the server.
    pub main: Option<&'a GuestExec>,
    /// Called on the channel just before MAIN_SESSION's exit status goes out (the overlay
    /// workspace's change summary).
    pub before_main_exit: Option<&'a dyn Fn(&mut File)>,
}

fn send(chan: &mut File, m: &GuestMsg) {
    if let Ok(mut line) = serde_json::to_vec(m) {
        line.push(b'\n');
        let _ = chan.write_all(&line);
    }
}

fn status_of(w: WaitStatus) -> Option<(Pid, i32)> {
    match w {
        WaitStatus::Exited(p, c) => Some((p, c)),
        WaitStatus::Signaled(p, s, _) => Some((p, 128 + s as i32)),
        _ => None,
    }
}

/// A new pseudo-terminal of `size`: (master, slave). The master comes from the devpts
/// instance the command will see (the new root's /dev/pts), so its `tty` names it there; the
/// slave is opened through the master (TIOCGPTPEER), by no path.
fn open_pty(root: Option<&str>, size: TtySize) -> Res<(File, OwnedFd)> {
    use std::os::unix::fs::OpenOptionsExt;
    let ptmx = match root {
        Some(r) => format!("{r}/dev/pts/ptmx"),
        None => "/dev/ptmx".into(),
    };
    let master = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&ptmx)
        .map_err(|e| format!("{ptmx}: {e}"))?;
    let m = master.as_raw_fd();
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int; TIOCGPTPEER returns a new descriptor.
    let slave = unsafe {
        if libc::ioctl(m, libc::TIOCSPTLCK, &unlock) < 0 {
            return Err(format!(
                "unlock the terminal: {}",
                std::io::Error::last_os_error()
            ));
        }
        libc::ioctl(
            m,
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(format!(
            "open the terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a new descriptor that nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    resize(&master, size);
    Ok((master, slave))
}

fn resize(pty: &File, size: TtySize) {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a valid winsize.
    unsafe {
        libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws);
    }
}

fn spawn(e: &GuestExec, root: Option<&str>) -> Res<Session> {
    if let Some(size) = e.tty {
        return spawn_tty(e, root, size);
    }
    use nix::unistd::{fork, ForkResult};
    let pipe =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (in_r, in_w) = pipe()?;
    let (argv, envp, cwd) = prepare(e)?;
    let null = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let who = Become {
        uid: e.uid,
        gid: e.gid,
        root,
        cwd: &cwd,
        cwd_label: &e.cwd,
        ctty: false,
    };
    // SAFETY: the child only dups descriptors, changes credentials and execs (in the guest
    // this process is single-threaded; in tests, nothing it calls takes a lock another thread
    // may hold before the exec, save the allocation of a failure message).
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let stdin = if e.stdin {
                in_r.as_raw_fd()
            } else {
                null.as_raw_fd()
            };
            child(
                &who,
                [stdin, out_w.as_raw_fd(), err_w.as_raw_fd()],
                &argv,
                &envp,
            )
        }
        ForkResult::Parent { child } => Ok(Session {
            pid: child,
            stdin: e.stdin.then(|| File::from(in_w)),
            out: Some(File::from(out_r)),
            err: Some(File::from(err_r)),
            pty: None,
            status: None,
            exited: super::exit_fd(child),
        }),
    }
}

/// The command as parts of its own argv, environment and working directory (C strings).
type Prepared = (Vec<CString>, Vec<CString>, CString);

fn prepare(e: &GuestExec) -> Res<Prepared> {
    let cstr = |s: &str| CString::new(s).map_err(|_| "a NUL byte in the command".to_string());
    if e.argv.is_empty() {
        return Err("an empty command".into());
    }
    let argv: Vec<CString> = e.argv.iter().map(|a| cstr(a)).collect::<Res<_>>()?;
    let envp: Vec<CString> = e
        .env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect::<Res<_>>()?;
    Ok((argv, envp, cstr(&e.cwd)?))
}

/// A session on a pseudo-terminal: the terminal is its stdin, stdout, stderr and controlling
/// terminal; what it prints comes back as stdout.
fn spawn_tty(e: &GuestExec, root: Option<&str>, size: TtySize) -> Res<Session> {
    use nix::unistd::{fork, ForkResult};
    let (argv, envp, cwd) = prepare(e)?;
    let (master, slave) = open_pty(root, size)?;
    let dup = |f: &File| f.try_clone().map_err(|e| format!("terminal: {e}"));
    let (out, input) = (dup(&master)?, dup(&master)?);
    let who = Become {
        uid: e.uid,
        gid: e.gid,
        root,
        cwd: &cwd,
        cwd_label: &e.cwd,
        ctty: true,
    };
    let fd = slave.as_raw_fd();
    // SAFETY: as in `spawn`.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => child(&who, [fd, fd, fd], &argv, &envp),
        ForkResult::Parent { child } => Ok(Session {
            pid: child,
            stdin: Some(input),
            out: Some(out),
            err: None,
            pty: Some(master),
            status: None,
            exited: super::exit_fd(child),
        }),
    }
}

/// The secrets under `root`'s /run/secrets, as (name, value).
fn secret_env(root: Option<&str>) -> Vec<(String, String)> {
    let dir = format!("{}{}", root.unwrap_or(""), super::SECRETS_DIR);
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let value = std::fs::read_to_string(e.path()).ok()?;
            Some((name, value))
        })
        .collect();
    out.sort();
    out
}

/// Serve sessions on `input` (the channel; `chan` writes to it) until poweroff or EOF; then
/// every session's process group gets SIGTERM, and SIGKILL after the grace period.
pub(crate) fn serve(input: &mut BufReader<File>, chan: &mut File, how: &Serve<'_>) -> Res<()> {
    let v = VM_PROTOCOL_VERSION;
    let mut sessions: BTreeMap<u32, Session> = BTreeMap::new();
    let mut buf = vec![0u8; 32 << 10];
    let chan_fd = input
        .get_ref()
        .try_clone()
        .map_err(|e| format!("channel: {e}"))?;
    let mut line = String::new();
    if let Some(main) = how.main {
        sessions.insert(MAIN_SESSION, spawn(main, how.root)?);
    }
    let grace = loop {
        // Reap.
        if how.reap_all {
            while let Ok(w) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                if w == WaitStatus::StillAlive {
                    break;
                }
                if let Some((p, c)) = status_of(w) {
                    if let Some(s) = sessions.values_mut().find(|s| s.pid == p) {
                        s.status = Some(c);
                    }
                }
            }
        } else {
            for s in sessions.values_mut().filter(|s| s.status.is_none()) {
                if let Some((_, c)) = waitpid(s.pid, Some(WaitPidFlag::WNOHANG))
                    .ok()
                    .and_then(status_of)
                {
                    s.status = Some(c);
                }
            }
        }
        // Poll the channel and every open pipe.
        let mut fds = vec![PollFd::new(chan_fd.as_fd(), PollFlags::POLLIN)];
        let mut who: Vec<(u32, bool)> = vec![];
        for (id, s) in &sessions {
            for (f, is_out) in [(&s.out, true), (&s.err, false)] {
                if let Some(f) = f {
                    fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                    who.push((*id, is_out));
                }
            }
        }
        // And every running command's exit: its pipes may close just before it can be reaped,
        // and the reap would otherwise wait for the poll's timeout.
        for s in sessions.values().filter(|s| s.status.is_none()) {
            if let Some(f) = &s.exited {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            }
        }
        let buffered = !input.buffer().is_empty();
        let draining = sessions.values().any(|s| s.status.is_some());
        let timeout: u16 = if buffered || draining { 0 } else { 50 };
        let _ = poll(&mut fds, PollTimeout::from(timeout));
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        for (k, &(id, is_out)) in who.iter().enumerate() {
            let Some(s) = sessions.get_mut(&id) else {
                continue;
            };
            let file = if is_out { &mut s.out } else { &mut s.err };
            if !ready[k + 1] {
                // An exited command's pipes with nothing left now: done (background
                // processes holding them open do not keep the session alive).
                if s.status.is_some() {
                    *file = None;
                }
                continue;
            }
            match file.as_mut().map(|f| f.read(&mut buf)).unwrap_or(Ok(0)) {
                Ok(0) | Err(_) => *file = None,
                Ok(n) => {
                    let data = b64_encode(&buf[..n]);
                    send(
                        chan,
                        &if is_out {
                            GuestMsg::Stdout {
                                v,
                                data,
                                session: id,
                            }
                        } else {
                            GuestMsg::Stderr {
                                v,
                                data,
                                session: id,
                            }
                        },
                    );
                }
            }
        }
        // Ended sessions: status known and output drained.
        let done: Vec<u32> = sessions
            .iter()
            .filter(|(_, s)| s.status.is_some() && s.out.is_none() && s.err.is_none())
            .map(|(id, _)| *id)
            .collect();
        let mut main_done = false;
        for id in done {
            if let Some(s) = sessions.remove(&id) {
                let code = s.status.unwrap_or(0);
                if id == MAIN_SESSION && how.main.is_some() {
                    if let Some(f) = how.before_main_exit {
                        f(chan);
                    }
                }
                send(
                    chan,
                    &GuestMsg::Exit {
                        v,
                        code,
                        session: id,
                    },
                );
                main_done |= id == MAIN_SESSION && how.main.is_some();
            }
        }
        if main_done {
            break Duration::ZERO;
        }
        if !(buffered || ready[0]) {
            continue;
        }
        line.clear();
        if input.read_line(&mut line).unwrap_or(0) == 0 {
            break Duration::ZERO;
        }
        match serde_json::from_str::<HostMsg>(&line) {
            Ok(HostMsg::Exec { session, exec, .. }) => {
                if sessions.contains_key(&session) {
                    let message = format!("session {session} is already running");
                    send(
                        chan,
                        &GuestMsg::Error {
                            v,
                            message,
                            session,
                        },
                    );
                    continue;
                }
                let mut exec = exec;
                if exec.secrets {
                    // `exec --secrets`: the sandbox's secrets as environment variables.
                    for (k, v) in secret_env(how.root) {
                        exec.env.retain(|(ek, _)| *ek != k);
                        exec.env.push((k, v));
                    }
                }
                match spawn(&exec, how.root) {
                    Ok(s) => {
                        sessions.insert(session, s);
                    }
                    Err(message) => send(
                        chan,
                        &GuestMsg::Error {
                            v,
                            message,
                            session,
                        },
                    ),
                }
            }
            Ok(HostMsg::Stdin { data, session, .. }) => {
                if let Some(i) = sessions.get_mut(&session).and_then(|s| s.stdin.as_mut()) {
                    let _ = i.write_all(&b64_decode(&data).unwrap_or_default());
                }
            }
            Ok(HostMsg::StdinEof { session, .. }) => {
                if let Some(s) = sessions.get_mut(&session) {
                    s.stdin = None;
                }
            }
            Ok(HostMsg::Signal {
                signal, session, ..
            }) => {
                if let Some(s) = sessions.get(&session) {
                    signal_group(s.pid, signal);
                }
            }
            Ok(HostMsg::Resize {
                rows,
                cols,
                session,
                ..
            }) => {
                if let Some(p) = sessions.get(&session).and_then(|s| s.pty.as_ref()) {
                    resize(p, TtySize { rows, cols });
                }
            }
            Ok(HostMsg::Poweroff { grace_ms, .. }) => break Duration::from_millis(grace_ms),
            _ => {}
        }
    };
    end_all(&mut sessions, grace, chan);
    Ok(())
}

/// Signal a session's process group; a child that has not reached its setsid yet (the
/// signal came right after the exec) has no group of its own: signal the child itself.
fn signal_group(pid: Pid, sig: i32) {
    // SAFETY: kill(2) on a session's process group, or on the session's child.
    unsafe {
        if libc::kill(-pid.as_raw(), sig) != 0 {
            libc::kill(pid.as_raw(), sig);
        }
    }
}

/// SIGTERM every running session's process group; SIGKILL what is left after `grace`. Each
/// session's end is reported (its exit status: 143 for SIGTERM, 137 for SIGKILL), so its
/// client hears how its command ended rather than a closed channel.
fn end_all(sessions: &mut BTreeMap<u32, Session>, grace: Duration, chan: &mut File) {
    let running = |s: &BTreeMap<u32, Session>| -> Vec<Pid> {
        s.values()
            .filter(|s| s.status.is_none())
            .map(|s| s.pid)
            .collect()
    };
    let kill = |pids: &[Pid], sig: i32| {
        for p in pids {
            signal_group(*p, sig);
        }
    };
    kill(&running(sessions), libc::SIGTERM);
    let start = Instant::now();
    loop {
        for s in sessions.values_mut().filter(|s| s.status.is_none()) {
            if let Some((_, c)) = waitpid(s.pid, Some(WaitPidFlag::WNOHANG))
                .ok()
                .and_then(status_of)
            {
                s.status = Some(c);
            }
        }
        // Each end is reported as it happens, not after the grace.
        let ended: Vec<u32> = sessions
            .iter()
            .filter(|(_, s)| s.status.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            if let Some(s) = sessions.remove(&id) {
                let code = s.status.unwrap_or(0);
                send(
                    chan,
                    &GuestMsg::Exit {
                        v: VM_PROTOCOL_VERSION,
                        code,
                        session: id,
                    },
                );
            }
        }
        let left = running(sessions);
        if left.is_empty() {
            break;
        }
        if start.elapsed() >= grace {
            kill(&left, libc::SIGKILL);
            for s in sessions.values_mut().filter(|s| s.status.is_none()) {
                s.status = waitpid(s.pid, None)
                    .ok()
                    .and_then(status_of)
                    .map(|(_, c)| c);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for (id, s) in std::mem::take(sessions) {
        let code = s.status.unwrap_or(128 + libc::SIGKILL);
        send(
            chan,
            &GuestMsg::Exit {
                v: VM_PROTOCOL_VERSION,
                code,
                session: id,
            },
        );
    }
}

#[cfg(test)]
mod tests;
