//! `airlock completions SHELL` and `airlock man`: generated from the clap definitions, so they
//! always match the binary that prints them.

use crate::cli::Cli;
use crate::error::{CliError, CliResult};
use airlock_model::exit;
use clap::CommandFactory;
use std::io::Write;
use std::path::Path;

/// The command tree users see: without the hidden internal commands (`__supervise`, `engine`,
/// …), which some generators would otherwise offer.
fn public_command() -> clap::Command {
    let full = Cli::command();
    let mut cmd = clap::Command::new("airlock")
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
        .subcommand_required(true)
        .version(env!("CARGO_PKG_VERSION"));
    if let Some(a) = full.get_about() {
        cmd = cmd.about(a.clone());
    }
    cmd
}

/// The completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> CliResult<i32> {
    let mut cmd = public_command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "airlock", &mut buf);
    write_stdout(&buf)
}

/// airlock(1) on stdout, or every page (airlock.1, airlock-run.1, …) into `dir`.
pub fn man(dir: Option<&Path>) -> CliResult<i32> {
    let cmd = public_command();
    match dir {
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut buf)
                .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
            write_stdout(&buf)
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                CliError::new(
                    exit::USAGE,
                    anyhow::Error::new(e).context(format!("create {}", dir.display())),
                )
                .hint("--dir names a directory to write the pages into")
            })?;
            clap_mangen::generate_to(cmd, dir).map_err(|e| {
                CliError::new(
                    exit::USAGE,
                    anyhow::Error::new(e)
                        .context(format!("write the pages into {}", dir.display())),
                )
                .hint("--dir names a directory you can write")
            })?;
            outln!("wrote the manual pages into {}", dir.display());
            Ok(0)
        }
    }
}

fn write_stdout(buf: &[u8]) -> CliResult<i32> {
    let mut out = std::io::stdout().lock();
    out.write_all(buf)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    Ok(0)
}
