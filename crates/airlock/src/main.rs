//! airlock: the command-line binary. Parses flags, dispatches to `cmd::*`, maps errors to
//! stable exit codes.

mod agent;
mod backend;
mod cli;
mod cmd;
mod error;
mod mcp;
mod trust;
mod work;

use clap::Parser;

fn main() {
    // Multi-call: inside an agent sandbox this binary is also `report`.
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some(std::ffi::OsStr::new("report")) {
        let rest: Vec<String> = args.collect();
        std::process::exit(agent::report::main(&rest));
    }
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                airlock_model::exit::USAGE
            } else {
                0
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let code = match cmd::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            e.print();
            e.code
        }
    };
    std::process::exit(code);
}
