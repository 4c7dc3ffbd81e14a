//! `[hooks]`: host commands around a named sandbox's life — `pre_up`/`post_up` around `up` and
//! `start`, `pre_down`/`post_down` around `stop` and `rm`/`down` of a running sandbox. Each runs
//! as `sh -c CMD` on the host in the sandbox's project directory, in configuration order (user
//! config, then plugins, then the project), with `AIRLOCK_SANDBOX`, `AIRLOCK_HOOK`,
//! `AIRLOCK_STATE` and `AIRLOCK_PROJECT_DIR` set. A failing hook warns and the command goes on
//! (a lifecycle step is never left half-done because of a hook); `--no-hooks` skips them.
//!
//! Hooks are host code execution, so a project file's hooks run only once that file is trusted
//! (`airlock trust`): untrusted, `up`/`start` refuse before anything starts, while `stop`/`rm`
//! warn and go on without them.

use crate::error::CliResult;
use airlock_model::config::{self, LoadOptions};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

static SKIP: AtomicBool = AtomicBool::new(false);

/// `--no-hooks` (a global flag).
pub fn skip_all(skip: bool) {
    SKIP.store(skip, Ordering::Relaxed);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    PreUp,
    PostUp,
    PreDown,
    PostDown,
}

impl Phase {
    fn key(self) -> &'static str {
        match self {
            Phase::PreUp => "pre_up",
            Phase::PostUp => "post_up",
            Phase::PreDown => "pre_down",
            Phase::PostDown => "post_down",
        }
    }

    fn starting(self) -> bool {
        matches!(self, Phase::PreUp | Phase::PostUp)
    }
}

/// Run the `phase` hooks of the project at `project_dir` for sandbox `name`.
pub fn run(name: &str, project_dir: &Path, phase: Phase, state: &str) -> CliResult<()> {
    if SKIP.load(Ordering::Relaxed) || !project_dir.is_dir() {
        return Ok(());
    }
    let resolved = match config::load(&LoadOptions::new(project_dir)) {
        Ok(r) => r,
        Err(e) if !phase.starting() => {
            errln!("airlock: warning: {} hooks skipped: {e}", phase.key());
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let h = &resolved.effective.hooks;
    let cmds = match phase {
        Phase::PreUp => &h.pre_up,
        Phase::PostUp => &h.post_up,
        Phase::PreDown => &h.pre_down,
        Phase::PostDown => &h.post_down,
    };
    if cmds.is_empty() {
        return Ok(());
    }
    if let Some(p) = &resolved.project {
        let hooks: Vec<_> = p
            .widening
            .iter()
            .filter(|w| w.key.starts_with("hooks."))
            .cloned()
            .collect();
        if !hooks.is_empty() && crate::cmd::trust::state(p) != crate::cmd::trust::State::Trusted {
            if phase.starting() {
                return Err(crate::cmd::trust::refusal(p, &hooks));
            }
            errln!(
                "airlock: warning: {} hooks skipped: {} is not trusted (`airlock trust {}`)",
                phase.key(),
                p.file.display(),
                p.file.parent().unwrap_or(Path::new(".")).display()
            );
            return Ok(());
        }
    }
    for cmd in cmds {
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(project_dir)
            .env("AIRLOCK_SANDBOX", name)
            .env("AIRLOCK_HOOK", phase.key())
            .env("AIRLOCK_STATE", state)
            .env("AIRLOCK_PROJECT_DIR", project_dir)
            .stdin(std::process::Stdio::null())
            .status();
        match st {
            Ok(s) if s.success() => {}
            Ok(s) => errln!(
                "airlock: warning: {} hook `{cmd}` failed ({s}); continuing",
                phase.key()
            ),
            Err(e) => errln!(
                "airlock: warning: {} hook `{cmd}` could not start: {e}; continuing",
                phase.key()
            ),
        }
    }
    Ok(())
}

/// The project directory of an existing sandbox (from its recorded spec).
pub fn project_of(name: &str) -> Option<std::path::PathBuf> {
    let dir = super::named::existing_dir(name).ok()?;
    super::named::recorded_spec(&dir).map(|s| s.project_dir)
}
