//! TIOCSTI: pushing keystrokes into a terminal's input queue (bubblewrap CVE-2017-5226).

use super::Ctx;
use crate::report::{Findings, Outcome};
use crate::sys::{fs, Errno};

/// The kernel checks permission (legacy_tiocsti, controlling tty, CAP_SYS_ADMIN) before it
/// reads the character, so the probe passes a NULL pointer: EFAULT means the injection would
/// have been accepted, and nothing is injected either way.
fn attempt(f: &mut Findings, what: String, fd: libc::c_int) {
    match fs::tiocsti_null(fd) {
        Ok(()) => f.escaped(what, "accepted"),
        Err(Errno(libc::EFAULT)) => f.escaped(
            what,
            "EFAULT on a NULL char: permission granted (nothing injected)",
        ),
        Err(e) => f.blocked(what, e),
    }
}

pub fn tiocsti(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    let mut ttys = 0;
    for fd in 0..=2 {
        if fs::isatty(fd) {
            ttys += 1;
        }
        attempt(
            &mut f,
            format!(
                "TIOCSTI on fd {fd}{}",
                if fs::isatty(fd) { " (a tty)" } else { "" }
            ),
            fd,
        );
    }
    match fs::open(
        "/dev/tty",
        libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK,
        0,
    ) {
        Ok(tty) => {
            ttys += 1;
            attempt(&mut f, "TIOCSTI on /dev/tty".to_string(), tty.raw());
        }
        Err(e) => f.blocked("open /dev/tty", e),
    }
    if ttys == 0 {
        f.note("no terminal reachable: run the probe with a tty on stdin for a meaningful result");
    }
    f.outcome()
}
