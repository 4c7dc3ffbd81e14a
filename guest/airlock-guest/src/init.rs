//! `airlock-guest init`: PID 1 inside a microVM (issue 15). Not yet: the microVM backend fills
//! this in (mounts, the host channel, starting the command or the runner, relaying exit status).

/// The subcommand's entry point; returns the exit code.
pub fn main(_args: &[String]) -> i32 {
    eprintln!("airlock-guest init: not yet (the microVM backend is not built)");
    1
}
