//! The in-sandbox helper `airlock-guest` (one static binary, mounted read-only at
//! `/run/airlock/bin` in every sandbox, PID 1 in microVMs). It needs nothing from the image: no
//! libc, no shell, no `tar`. Subcommands: `runner` (the agent runner), `report` (also as argv[0]),
//! `which` (where the runner finds a program), `fs` (files in and out, a typed JSON contract, see
//! `fs`), `init` (microVM PID 1), `ws` (a warm microVM's workspace, bound at its claim).
//!
//! The `fs` stream format (`fs::stream`) is also what the host side of `airlock cp` reads and
//! writes, so both sides share one implementation of its checks.

pub mod fs;
pub mod init;
pub mod report;
pub mod summary;
pub mod which;
pub mod ws;

/// Where the helper is inside every sandbox.
pub const TOOL: &str = airlock_agent::GUEST_TOOL;

/// `airlock-guest runner --harness JSON --grace-secs N`.
pub fn runner_main(args: &[String]) -> i32 {
    let mut harness = None;
    let mut grace = airlock_model::config::DEFAULT_AGENT_GRACE.0;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--harness", Some(v)) => harness = Some(v.clone()),
            ("--grace-secs", Some(v)) => match v.parse() {
                Ok(n) => grace = n,
                Err(_) => {
                    eprintln!("airlock-guest runner: --grace-secs {v:?} is not a number");
                    return 2;
                }
            },
            _ => {
                eprintln!("usage: airlock-guest runner --harness JSON [--grace-secs N]");
                return 2;
            }
        }
    }
    let Some(h) = harness else {
        eprintln!("usage: airlock-guest runner --harness JSON [--grace-secs N]");
        return 2;
    };
    airlock_agent::runner::main(&h, grace)
}
