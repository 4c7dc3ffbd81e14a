//! The layered configuration as `airlock` sees it from where it stands (SPEC §3): the
//! defaults, the user's and the project's files and the command line's layer.

use crate::error::{CliError, CliResult};
use airlock_model::config::{self, Layer, LoadOptions};
use airlock_model::exit;
use std::path::Path;

pub fn load_config(
    global_config: Option<&Path>,
    no_user_config: bool,
    cli: Layer,
) -> CliResult<config::Resolved> {
    let cwd = std::env::current_dir().map_err(|e| {
        CliError::new(
            exit::USAGE,
            anyhow::anyhow!("cannot read the current directory: {e}"),
        )
    })?;
    let opts = LoadOptions {
        cwd,
        user_config: global_config.map(Path::to_path_buf),
        no_user_config,
        cli,
        home: None,
        host_memory: host_memory(),
    };
    Ok(config::load(&opts)?)
}

/// The host's memory, in bytes: /proc/meminfo's MemTotal, from sysinfo(2) (the same count of
/// pages; one system call instead of reading and parsing the file on every start).
fn host_memory() -> Option<u64> {
    // SAFETY: sysinfo(2) fills the zeroed struct it is given, nothing else.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a sysinfo struct for the call.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return None;
    }
    Some(info.totalram as u64 * u64::from(info.mem_unit.max(1)))
}
