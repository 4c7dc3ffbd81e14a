//! Standard output of the CLI commands.
//!
//! Rust starts every program with SIGPIPE ignored, so a write to a closed pipe fails with
//! EPIPE, and std's `outln!` panics on that (`airlock list | head -1`). airlock keeps SIGPIPE
//! ignored everywhere: the egress relays of `run` and of the supervisors, the engine, and the
//! engine client in every command write to sockets whose peers may go away, and must see an
//! error there rather than die. So the CLI never uses `outln!`/`print!` (clippy's
//! `disallowed-macros` in this crate's clippy.toml) and writes through here instead:
//! a reader that went away ends the command quietly with 141 (128 + SIGPIPE, what a shell shows
//! for any tool stopped by a closed pipe); any other write error is reported once and exits 125.

use airlock_model::exit;
use std::fmt;
use std::io::{self, Write};

/// The exit code when standard output was closed by its reader.
pub const CLOSED: i32 = exit::SIGNAL_BASE + libc::SIGPIPE;

/// Print one line to stdout (the `outln!` macro).
pub fn line(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    check(out.write_fmt(args).and_then(|()| out.write_all(b"\n")));
}

/// Write bytes to stdout and flush (for the commands that stream: logs, reports, attach).
pub fn bytes(out: &mut impl Write, data: &[u8]) {
    check(out.write_all(data).and_then(|()| out.flush()));
}

/// End the process quietly on EPIPE, loudly on anything else; nothing on success.
pub fn check(r: io::Result<()>) {
    if let Err(e) = r {
        exit_for(&e);
    }
}

/// Whether an error chain comes from stdout's reader having gone away: an EPIPE in it, and
/// stdout really closed (an EPIPE from the engine's socket is an error to report).
pub fn is_closed(e: &anyhow::Error) -> bool {
    stdout_closed()
        && e.chain().any(|c| {
            let kind = match c.downcast_ref::<io::Error>() {
                Some(io) => Some(io.kind()),
                // serde_json's writer errors carry the io::Error's kind, not the error.
                None => c
                    .downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind),
            };
            kind == Some(io::ErrorKind::BrokenPipe)
        })
}

/// stdout is a pipe or socket whose reader has gone (poll reports an error on it).
fn stdout_closed() -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let stdout = io::stdout();
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLOUT)];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}

fn exit_for(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(CLOSED);
    }
    let _ = writeln!(
        io::stderr(),
        "airlock: error: cannot write to standard output: {e}"
    );
    std::process::exit(exit::SANDBOX_FAILED);
}

/// One line to stderr, in one write (stderr is unbuffered: formatted piece by piece, a line
/// was a dozen writes, each waking a reader of the pipe, and could interleave with the
/// sandbox's own output); a failed write is dropped (a diagnostic has nowhere else to go).
pub fn err_line(args: fmt::Arguments<'_>) {
    let mut text = args.to_string();
    text.push('\n');
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// `outln!` that never panics: see the module documentation.
macro_rules! outln {
    () => {
        $crate::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}

/// `errln!` that never panics (stderr can be a closed pipe too: `2>&1 | head -1`).
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::out::err_line(format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    /// An EPIPE from elsewhere (the engine's socket) while stdout is open is a real error.
    #[test]
    fn epipe_is_quiet_only_when_stdout_is_closed() {
        let e = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(!super::stdout_closed());
        assert!(!super::is_closed(&e));
    }

    /// Every stdout/stderr line of the CLI goes through `outln!`/`errln!`: std's macros panic
    /// on a closed pipe. (The agent host and runner write only to the supervisor's log files.)
    #[test]
    fn the_cli_never_uses_std_print_macros() {
        fn walk(dir: &std::path::Path, bad: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).expect("read src").flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, bad);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).expect("read source");
                    for (i, l) in text.lines().enumerate() {
                        let code = l.split("//").next().unwrap_or("");
                        let std_macro = ["print", "eprint"].iter().any(|m| {
                            code.contains(&format!("{m}ln!")) || code.contains(&format!("{m}!("))
                        });
                        if std_macro {
                            bad.push(format!("{}:{}: {l}", p.display(), i + 1));
                        }
                    }
                }
            }
        }
        let mut bad = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut bad,
        );
        assert!(bad.is_empty(), "use outln!/errln!:\n{}", bad.join("\n"));
    }
}
