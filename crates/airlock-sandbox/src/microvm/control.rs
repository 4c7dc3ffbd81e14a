//! A named microVM sandbox's control socket (`DIR/vm.sock`, mode 0600): how `exec` reaches a
//! guest that its supervisor holds. A client speaks the channel's own line protocol
//! (`airlock_model::vm`) without session ids: `exec` first, then `stdin`/`stdin_eof`/`signal`;
//! it hears `stdout`/`stderr` and finally `exit` or `error`. The supervisor gives each client
//! its own session on the one guest channel ([`Mux`]).

use super::mux::{Event, Mux};
use airlock_model::vm::{
    b64_decode, b64_encode, GuestExec, GuestMsg, HostMsg, MAIN_SESSION, VM_PROTOCOL_VERSION,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The control socket's name in the sandbox's folder.
pub const VM_CONTROL: &str = "vm.sock";

/// The longest line a client may send (its stdin chunks are 16 KiB, base64).
const MAX_LINE: u64 = 1 << 20;

fn put(w: &mut impl Write, m: &impl serde::Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(m).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)
}

fn read_line<R: Read>(r: &mut BufReader<R>, line: &mut Vec<u8>) -> bool {
    line.clear();
    matches!(r.take(MAX_LINE).read_until(b'\n', line), Ok(n) if n > 0 && line.last() == Some(&b'\n'))
}

/// Accept clients on `listener` until `stop`, each in its own thread and session.
pub fn serve(listener: &UnixListener, mux: &Mux, stop: &AtomicBool) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    std::thread::scope(|s| {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((c, _)) => {
                    s.spawn(move || client(c, mux));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
}

fn client(c: UnixStream, mux: &Mux) {
    let v = VM_PROTOCOL_VERSION;
    let _ = c.set_nonblocking(false);
    let Ok(mut w) = c.try_clone() else { return };
    let mut r = BufReader::new(c);
    let mut line = Vec::new();
    let exec = loop {
        if !read_line(&mut r, &mut line) {
            return;
        }
        if let Ok(HostMsg::Exec { exec, .. }) = serde_json::from_slice(&line) {
            break exec;
        }
    };
    let session = match mux.exec(*exec) {
        Ok(s) => s,
        Err(message) => {
            let _ = put(
                &mut w,
                &GuestMsg::Error {
                    v,
                    message,
                    session: MAIN_SESSION,
                },
            );
            return;
        }
    };
    std::thread::scope(|s| {
        // The client's input; ends with the client (or its session).
        let input = session.input();
        s.spawn(move || {
            let mut line = Vec::new();
            while read_line(&mut r, &mut line) {
                let sent = match serde_json::from_slice(&line) {
                    Ok(HostMsg::Stdin { data, .. }) => {
                        input.stdin(&b64_decode(&data).unwrap_or_default())
                    }
                    Ok(HostMsg::StdinEof { .. }) => input.stdin_eof(),
                    Ok(HostMsg::Signal { signal, .. }) => input.signal(signal),
                    Ok(HostMsg::Resize { rows, cols, .. }) => input.resize(rows, cols),
                    _ => Ok(()),
                };
                if sent.is_err() {
                    break;
                }
            }
        });
        while let Some(ev) = session.next() {
            let (m, last) = match ev {
                Event::Stdout(b) => (
                    GuestMsg::Stdout {
                        v,
                        data: b64_encode(&b),
                        session: MAIN_SESSION,
                    },
                    false,
                ),
                Event::Stderr(b) => (
                    GuestMsg::Stderr {
                        v,
                        data: b64_encode(&b),
                        session: MAIN_SESSION,
                    },
                    false,
                ),
                Event::Exit(code) => (
                    GuestMsg::Exit {
                        v,
                        code,
                        session: MAIN_SESSION,
                    },
                    true,
                ),
                Event::Error(message) => (
                    GuestMsg::Error {
                        v,
                        message,
                        session: MAIN_SESSION,
                    },
                    true,
                ),
            };
            if put(&mut w, &m).is_err() {
                // The client went away: end its command rather than leave it running.
                let _ = session.signal(libc::SIGKILL);
            }
            if last {
                break;
            }
        }
        // Unblocks the input thread.
        let _ = w.shutdown(std::net::Shutdown::Both);
    });
}

/// The exec side: run `exec` in the guest held behind the control socket `sock`, with
/// `stdin` forwarded when given; its output to `out`/`err`. The command's exit status, or
/// why there is none. With a terminal (`exec.tty`), this process's stdin is that terminal:
/// raw while the command runs, its input and size relayed ([`super::term`]); `stdin` unused.
pub fn exec(
    sock: &Path,
    exec: GuestExec,
    stdin: Option<Box<dyn Read + Send>>,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<i32, String> {
    let v = VM_PROTOCOL_VERSION;
    let c = UnixStream::connect(sock).map_err(|e| format!("connect {}: {e}", sock.display()))?;
    let mut w = c.try_clone().map_err(|e| e.to_string())?;
    let tty = exec.tty;
    put(
        &mut w,
        &HostMsg::Exec {
            v,
            session: MAIN_SESSION,
            exec: Box::new(exec),
        },
    )
    .map_err(|e| format!("write {}: {e}", sock.display()))?;
    let _raw = tty.and_then(|_| super::term::RawMode::enter(0));
    let done = std::sync::Arc::new(AtomicBool::new(false));
    if tty.is_some() {
        let done = done.clone();
        std::thread::spawn(move || {
            super::term::pump(tty, &done, |m| put(&mut w, m).is_ok());
        });
    } else if let Some(mut input) = stdin {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 << 10];
            loop {
                let m = match input.read(&mut buf) {
                    Ok(0) | Err(_) => HostMsg::StdinEof {
                        v,
                        session: MAIN_SESSION,
                    },
                    Ok(n) => HostMsg::Stdin {
                        v,
                        data: b64_encode(&buf[..n]),
                        session: MAIN_SESSION,
                    },
                };
                let eof = matches!(m, HostMsg::StdinEof { .. });
                if put(&mut w, &m).is_err() || eof {
                    return;
                }
            }
        });
    }
    let mut r = BufReader::new(c);
    let mut line = Vec::new();
    let ended = loop {
        if !read_line(&mut r, &mut line) {
            break Err("the sandbox's VM ended before the command did".into());
        }
        match serde_json::from_slice(&line) {
            Ok(GuestMsg::Stdout { data, .. }) => {
                let _ = out
                    .write_all(&b64_decode(&data).unwrap_or_default())
                    .and_then(|()| out.flush());
            }
            Ok(GuestMsg::Stderr { data, .. }) => {
                let _ = err.write_all(&b64_decode(&data).unwrap_or_default());
            }
            Ok(GuestMsg::Exit { code, .. }) => break Ok(code),
            Ok(GuestMsg::Error { message, .. }) => break Err(message),
            _ => {}
        }
    };
    done.store(true, Ordering::Relaxed);
    ended
}

/// Run `exec` (no stdin) in the guest held behind `sock` and copy its stdout to `out`, at most
/// `limit` bytes: past that the connection is dropped (the supervisor then kills the
/// command) and the error says so. Its stderr, bounded too, comes back with a failure.
pub fn capture(
    sock: &Path,
    exec: GuestExec,
    out: &mut dyn Write,
    limit: u64,
) -> Result<(i32, Vec<u8>), String> {
    let v = VM_PROTOCOL_VERSION;
    let c = UnixStream::connect(sock).map_err(|e| format!("connect {}: {e}", sock.display()))?;
    let mut w = c.try_clone().map_err(|e| e.to_string())?;
    put(
        &mut w,
        &HostMsg::Exec {
            v,
            session: MAIN_SESSION,
            exec: Box::new(exec),
        },
    )
    .map_err(|e| format!("write {}: {e}", sock.display()))?;
    let mut r = BufReader::new(c);
    let mut line = Vec::new();
    let (mut got, mut err) = (0u64, Vec::new());
    while read_line(&mut r, &mut line) {
        match serde_json::from_slice(&line) {
            Ok(GuestMsg::Stdout { data, .. }) => {
                let b = b64_decode(&data).unwrap_or_default();
                got += b.len() as u64;
                if got > limit {
                    let _ = w.shutdown(std::net::Shutdown::Both);
                    return Err(format!("its output passed the limit of {limit} bytes"));
                }
                out.write_all(&b).map_err(|e| e.to_string())?;
            }
            Ok(GuestMsg::Stderr { data, .. }) if err.len() < 64 << 10 => {
                err.extend(b64_decode(&data).unwrap_or_default());
            }
            Ok(GuestMsg::Exit { code, .. }) => return Ok((code, err)),
            Ok(GuestMsg::Error { message, .. }) => return Err(message),
            _ => {}
        }
    }
    Err("the sandbox's VM ended before the command did".into())
}

#[cfg(test)]
mod tests;
