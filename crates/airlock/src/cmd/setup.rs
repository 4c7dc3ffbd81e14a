//! `setup` scripts (`setup = ["./scripts/setup.sh"]` in a plugin or the project): run inside
//! a named sandbox once after its first start — recorded in its folder, so a restart does not
//! run them again; `up --fresh` makes a new folder, so they run again — and before the command
//! of `airlock run`. Each script is read on the host (a regular file of at most 1 MiB), saved
//! inside to a temporary file (so its `#!` line counts) and run in /workspace with the
//! sandbox's environment and secrets. A named sandbox's setup output goes to its console log
//! (`airlock logs NAME`); `run`'s to stderr.

use crate::error::{CliError, CliResult};
use airlock_engine::client::Client;
use airlock_model::exit;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// In a named sandbox's folder once its setup scripts have all succeeded.
pub const DONE_FILE: &str = "setup.done";

/// The largest script read.
const MAX_SCRIPT_BYTES: u64 = 1 << 20;

/// Runs one script given on stdin, as an executable file of its own.
const RUN_ONE: &str = r#"f=$(mktemp "${TMPDIR:-/tmp}/airlock-setup.XXXXXX") || exit 125
cat > "$f" && chmod 700 "$f" || exit 125
(cd /workspace 2>/dev/null; exec "$f") </dev/null
rc=$?; rm -f "$f"; exit $rc"#;

/// `run`'s command wrapped: `sh -c RUN_ALL airlock-setup N NAME1 BODY1 … -- CMD…`. A failing
/// script stops it with 125 before the command runs; setup output goes to stderr.
const RUN_ALL: &str = r#"n=$1; shift
while [ "$n" -gt 0 ]; do
  name=$1; body=$2; shift 2; n=$((n-1))
  f=$(mktemp "${TMPDIR:-/tmp}/airlock-setup.XXXXXX") || exit 125
  printf '%s' "$body" > "$f" && chmod 700 "$f" || exit 125
  (cd /workspace 2>/dev/null; exec "$f") </dev/null >&2
  rc=$?; rm -f "$f"
  if [ "$rc" -ne 0 ]; then
    echo "airlock: setup script $name failed with exit $rc; the command did not run" >&2
    exit 125
  fi
done
shift
exec "$@""#;

fn read_script(path: &Path) -> CliResult<Vec<u8>> {
    airlock_model::userfile::read(path, MAX_SCRIPT_BYTES).map_err(|e| {
        CliError::new(
            exit::USAGE,
            anyhow::anyhow!("setup script {}: {e}", path.display()),
        )
        .hint(
            "`setup` names script files (relative to the file that names them), at most 1 MiB each",
        )
    })
}

/// `run`: the command with the setup scripts before it (read now, so a missing one fails
/// before anything starts). Unchanged without scripts.
pub fn wrap_command(setup: &[PathBuf], cmd: Vec<String>) -> CliResult<Vec<String>> {
    if setup.is_empty() {
        return Ok(cmd);
    }
    let mut argv = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        RUN_ALL.to_string(),
        "airlock-setup".to_string(),
        setup.len().to_string(),
    ];
    for path in setup {
        let body = String::from_utf8(read_script(path)?).map_err(|_| {
            CliError::usage(format!("setup script {}: not UTF-8 text", path.display()))
        })?;
        if body.contains('\0') {
            return Err(CliError::usage(format!(
                "setup script {}: contains a NUL byte",
                path.display()
            )));
        }
        argv.push(path.display().to_string());
        argv.push(body);
    }
    argv.push("--".to_string());
    argv.extend(cmd);
    Ok(argv)
}

/// A named sandbox just started: run its setup scripts unless they already succeeded once.
/// When one fails (or cannot be read), the sandbox is not left half set up: removed when this
/// command created it, stopped otherwise; the error says which script and how it ended.
pub fn after_start(c: &Client, name: &str, created: bool) -> CliResult<()> {
    let dir = super::named::sandbox_dir(name);
    let Some(spec) = super::named::recorded_spec(&dir) else {
        return Ok(());
    };
    if spec.setup.is_empty() || dir.join(DONE_FILE).exists() {
        return Ok(());
    }
    let Err(e) = run_all(name, &dir, &spec.setup) else {
        return Ok(());
    };
    super::named::undo_start(c, name, created, "its setup did not complete");
    Err(e)
}

fn run_all(name: &str, dir: &Path, setup: &[PathBuf]) -> CliResult<()> {
    let failed = |e: std::io::Error| CliError::new(exit::SANDBOX_FAILED, e);
    let mut log =
        airlock_model::userfile::open_append(&dir.join(airlock_engine::supervisor::CONSOLE))
            .map_err(failed)?;
    let exe = std::env::current_exe().map_err(failed)?;
    for path in setup {
        let body = read_script(path)?;
        let _ = writeln!(log, "airlock: setup {}: running", path.display());
        let start = log.seek(SeekFrom::End(0)).map_err(failed)?;
        let mut child = Command::new(&exe)
            .arg("__exec")
            .arg("--dir")
            .arg(dir)
            .args(["--secrets", "--", "/bin/sh", "-c", RUN_ONE])
            .stdin(Stdio::piped())
            .stdout(log.try_clone().map_err(failed)?)
            .stderr(log.try_clone().map_err(failed)?)
            .spawn()
            .map_err(failed)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A script that fails to start leaves the pipe unread: its exit says why.
            let _ = stdin.write_all(&body);
        }
        let status = child.wait().map_err(failed)?;
        let code = status.code().unwrap_or(exit::SANDBOX_FAILED);
        let _ = writeln!(log, "airlock: setup {}: exit {code}", path.display());
        if code != 0 {
            // What it printed, for the error (the log keeps it too, while the sandbox exists).
            let mut out = String::new();
            let mut f = std::fs::File::open(dir.join(airlock_engine::supervisor::CONSOLE))
                .map_err(failed)?;
            f.seek(SeekFrom::Start(start)).map_err(failed)?;
            let _ = f.take(64 * 1024).read_to_string(&mut out);
            let tail: Vec<&str> = out.lines().rev().skip(1).take(20).collect();
            for line in tail.iter().rev() {
                errln!("  | {line}");
            }
            return Err(CliError::new(
                exit::SANDBOX_FAILED,
                anyhow::anyhow!(
                    "setup script {} failed in sandbox {name} with exit {code}",
                    path.display()
                ),
            )
            .hint(format!(
                "its output is above (and in `airlock logs {name}` while the sandbox exists); fix the script and start again: setup runs until it succeeds once"
            )));
        }
    }
    let list: Vec<String> = setup.iter().map(|p| p.display().to_string()).collect();
    std::fs::write(dir.join(DONE_FILE), list.join("\n") + "\n").map_err(failed)?;
    Ok(())
}
