//! `exec` and `shell`: commands in a running named sandbox, entered directly (setns) from this
//! process — no engine hop on the hot path.

use super::named::existing_dir;
use crate::cli::ExecArgs;
use crate::error::{CliError, CliResult};
use airlock_model::exit;
use airlock_sandbox::isolation::{ExecRequest, Instance, Isolation, Observed};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// exec/shell: straight into the running sandbox's namespaces.
pub fn exec_in(
    name: &str,
    argv: Vec<String>,
    env: &[String],
    workdir: Option<PathBuf>,
    tty: bool,
    interactive: bool,
    with_secrets: bool,
) -> CliResult<i32> {
    let dir = existing_dir(name)?;
    exec_dir(
        &dir,
        name,
        argv,
        env,
        workdir,
        tty,
        interactive,
        with_secrets,
    )
}

/// exec into the running sandbox whose folder is `dir` (`name` is for messages).
#[allow(clippy::too_many_arguments)] // the flags of `exec`, one by one
pub fn exec_dir(
    dir: &Path,
    name: &str,
    argv: Vec<String>,
    env: &[String],
    workdir: Option<PathBuf>,
    tty: bool,
    interactive: bool,
    with_secrets: bool,
) -> CliResult<i32> {
    // One look at the folder: which backend runs it, and whether it runs.
    let (backend, id) = super::named::backend_of(name, dir)?;
    let sandbox = Instance {
        name,
        dir,
        id: id.as_deref(),
    };
    if !matches!(backend.observe(&sandbox), Observed::Running { .. }) {
        return Err(CliError::new(
            exit::CONFLICT,
            anyhow::anyhow!("sandbox {name} is not running"),
        )
        .hint(format!("airlock start {name}")));
    }
    if tty && !std::io::stdin().is_terminal() {
        return Err(CliError::usage("-t needs a terminal on stdin"));
    }
    let workdir = workdir
        .as_deref()
        .map(crate::cmd::run::workdir_inside)
        .transpose()?;
    let env = env.iter().map(|kv| match kv.split_once('=') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => (kv.clone(), std::env::var(kv).unwrap_or_default()),
    });
    let req = ExecRequest {
        argv,
        env: env.collect(),
        cwd: workdir,
        tty,
        forward_stdin: interactive || tty || !std::io::stdin().is_terminal(),
        with_secrets,
        timeout: None,
    };
    Ok(backend.exec(&sandbox, &req)?.exit_code())
}

pub fn exec_cmd(a: ExecArgs) -> CliResult<i32> {
    let o = a.opts;
    exec_in(
        &a.name,
        a.cmd,
        &o.env,
        o.workdir,
        o.tty,
        o.interactive,
        o.secrets,
    )
}

pub fn shell(name: &str) -> CliResult<i32> {
    let tty = std::io::stdin().is_terminal();
    exec_in(
        name,
        vec!["/bin/sh".into(), "-l".into()],
        &[],
        None,
        tty,
        true,
        false,
    )
}
