//! Command implementations, one module per subcommand.

mod config;
mod doctor;
mod gc;
mod init;
mod run;

use crate::cli::{Cli, Command};
use crate::error::{CliError, CliResult};
use airlock_model::exit;

pub fn dispatch(cli: Cli) -> CliResult<i32> {
    match cli.command {
        Command::Run(a) => run::run(&a, cli.config.as_deref(), cli.no_user_config),
        Command::Gc(a) => gc::gc(a.json),
        Command::Config(a) => {
            let resolved = run::load_config(
                cli.config.as_deref(),
                cli.no_user_config,
                Default::default(),
            )?;
            config::run_config(&resolved, a.json, &mut std::io::stdout().lock())
                .map_err(|e| CliError::new(exit::USAGE, e))?;
            Ok(0)
        }
        Command::Init(a) => {
            let dir = std::env::current_dir().map_err(|e| CliError::new(exit::USAGE, e))?;
            let path = init::run_init(&dir, a.force)
                .map_err(|e| CliError::new(exit::USAGE, e).hint("pass --force to overwrite"))?;
            println!("wrote {}", path.display());
            Ok(0)
        }
        Command::Doctor(a) => doctor::run_doctor(a.json, &mut std::io::stdout().lock())
            .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e)),
    }
}
