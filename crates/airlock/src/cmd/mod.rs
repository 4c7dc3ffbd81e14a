//! Command implementations, one module per subcommand.

mod gc;
mod run;

use crate::cli::{Cli, Command};
use crate::error::CliResult;

pub fn dispatch(cli: Cli) -> CliResult<i32> {
    match cli.command {
        Command::Run(a) => run::run(&a, cli.config.as_deref(), cli.no_user_config),
        Command::Gc(a) => gc::gc(a.json),
        Command::Doctor(_) | Command::Config(_) | Command::Init(_) => Err(crate::error::CliError::usage("not wired yet")),
    }
}
