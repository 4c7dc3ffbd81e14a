//! airlock: the command-line binary. Parses flags, dispatches to `cmd::*`, maps errors to
//! stable exit codes.

#[macro_use]
mod out;

mod cli;
mod cmd;
mod entry;
mod error;

fn main() {
    let cli = match cli::Cli::parse_args() {
        Ok(c) => c.normalize(),
        Err(e) => {
            let code = if e.use_stderr() {
                airlock_model::exit::USAGE
            } else {
                0
            };
            let _ = e.print();
            if let Some(h) = not_yet_hint(&e) {
                errln!("hint: {h}");
            }
            std::process::exit(code);
        }
    };
    let code = match cmd::dispatch(cli) {
        Ok(code) => code,
        Err(e) if out::is_closed(&e.error) => out::CLOSED,
        Err(e) => {
            e.print();
            e.code
        }
    };
    std::process::exit(code);
}

/// Options people reach for that this build does not have yet: the usage error says why.
fn not_yet_hint(e: &clap::Error) -> Option<&'static str> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    match arg.split('=').next()? {
        "--no-net" | "--offline" => Some("no network is `--net off` (or `--no-network`)"),
        _ => None,
    }
}
