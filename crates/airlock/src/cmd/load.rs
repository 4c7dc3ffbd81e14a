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

/// MemTotal from /proc/meminfo, in bytes.
fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}
