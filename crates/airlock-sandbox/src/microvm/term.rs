//! The user's terminal for a guest command with `-t` (`run -t`, `exec -t`, `shell`): raw mode
//! while it runs, typed bytes to the guest as stdin, and the terminal's size — at the start
//! and whenever it changes — as `resize` lines (the guest's pseudo-terminal follows, and its
//! kernel sends the command SIGWINCH).
//!
//! The size is looked at every 100 ms rather than on SIGWINCH: the signal's one handler in this
//! process belongs to the container relay that runs QEMU (`run`), and a poll needs no handler.

use airlock_model::vm::{b64_encode, HostMsg, TtySize, MAIN_SESSION, VM_PROTOCOL_VERSION};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) use crate::container::tty::RawMode;

/// The terminal on `fd`'s size (None: not a terminal).
pub fn size_of(fd: i32) -> Option<TtySize> {
    crate::sys::get_winsize(fd)
        .filter(|w| w.ws_row > 0 && w.ws_col > 0)
        .map(|w| TtySize {
            rows: w.ws_row,
            cols: w.ws_col,
        })
}

/// Relay this process's stdin (a terminal) to the guest through `send` until stdin ends,
/// `send` fails or `done`; send a `resize` whenever the terminal's size is no longer `last`.
pub fn pump(last: Option<TtySize>, done: &AtomicBool, mut send: impl FnMut(&HostMsg) -> bool) {
    let v = VM_PROTOCOL_VERSION;
    let session = MAIN_SESSION;
    let mut last = last;
    let mut buf = vec![0u8; 16 << 10];
    while !done.load(Ordering::Relaxed) {
        let now = size_of(0);
        if let Some(TtySize { rows, cols }) = now.filter(|n| Some(*n) != last) {
            last = now;
            if !send(&HostMsg::Resize {
                v,
                rows,
                cols,
                session,
            }) {
                return;
            }
        }
        let mut fds = [PollFd::new(crate::sys::stdio(0), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        let m = match crate::sys::read_raw(0, &mut buf) {
            Ok(0) | Err(_) => {
                send(&HostMsg::StdinEof { v, session });
                return;
            }
            Ok(n) => HostMsg::Stdin {
                v,
                data: b64_encode(&buf[..n]),
                session,
            },
        };
        if !send(&m) {
            return;
        }
    }
}
