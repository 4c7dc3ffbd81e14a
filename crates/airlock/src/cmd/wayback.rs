//! Rendering the way back's check of a bind-mode checkout (`airlock_work::wayback`), and the
//! end of a run as the user reads it (cold or warm: [`finish`]).

use crate::error::CliError;
use airlock_model::exit;
use airlock_model::policy::WorkspaceMode;
use airlock_sandbox::container::Changes;
use airlock_work::wayback::Report;
use std::path::{Path, PathBuf};

/// Print a report on stderr. Returns whether git control files had to be undone.
pub fn print(report: &Report) -> bool {
    if !report.git.is_empty() {
        errln!(
            "airlock: the sandbox changed how git behaves in your checkout ({} change(s)); undone:",
            report.git.len()
        );
        for c in &report.git {
            errln!(
                "  {:<8} {}  ({})",
                c.what,
                airlock_work::gate::shown(&c.path),
                airlock_work::gate::shown(&c.note)
            );
        }
    }
    if !report.config.is_empty() {
        errln!(
            "airlock: the sandbox changed configuration that tools obey in your checkout; review before running them there:"
        );
        for c in &report.config {
            errln!(
                "  {:<8} {}  ({})",
                c.what,
                airlock_work::gate::shown(&c.path),
                airlock_work::gate::shown(&c.note)
            );
        }
    }
    if report.partial {
        errln!(
            "airlock: warning: the checkout has more than {} entries; the check on the way out was partial",
            airlock_work::wayback::MAX_ENTRIES
        );
    }
    !report.git.is_empty()
}

/// A named sandbox's report, left by its supervisor in its folder: printed (and removed).
/// Returns whether git control files had to be undone.
pub fn print_saved(dir: &std::path::Path) -> bool {
    let f = dir.join(airlock_work::wayback::REPORT_FILE);
    let Some(b) = airlock_work::review::read_small(&f, 1 << 22) else {
        return false;
    };
    let _ = std::fs::remove_file(&f);
    serde_json::from_slice::<Report>(&b).is_ok_and(|r| print(&r))
}

/// What [`wayback_before`] looked at: the extra paths and the snapshot.
pub type Wayback = (Vec<PathBuf>, airlock_work::wayback::Snapshot);

/// Bind mode: the way back is the checkout itself; look at it before the run (and after it,
/// [`wayback_after`]). None for other workspaces.
pub fn wayback_before(spec: &airlock_model::spec::RunSpec) -> Option<Wayback> {
    (spec.workspace == WorkspaceMode::Bind).then(|| {
        let extra: Vec<PathBuf> = airlock_work::wayback::hooks_path(&spec.project_dir)
            .into_iter()
            .collect();
        let snap = airlock_work::wayback::snapshot(&spec.project_dir, &extra);
        (extra, snap)
    })
}

/// After a bind run: what the sandbox changed in git's control files is reported and undone
/// (true: something was undone, the run fails with [`tampered`]).
pub fn wayback_after(
    spec: &airlock_model::spec::RunSpec,
    wayback: Option<&Wayback>,
    persist: Option<&Path>,
) -> bool {
    let Some((extra, before)) = wayback else {
        return false;
    };
    let report = airlock_work::wayback::verify(&spec.project_dir, before, extra);
    if report.is_empty() {
        return false;
    }
    let undone = print(&report);
    if let Some(dir) = persist {
        let _ = std::fs::write(
            dir.join(airlock_work::wayback::REPORT_FILE),
            serde_json::to_vec_pretty(&report).unwrap_or_default(),
        );
    }
    undone
}

/// The error of a bind run whose changes to git's control files were undone.
pub fn tampered(spec: &airlock_model::spec::RunSpec, code: i32) -> CliError {
    CliError::new(
        exit::POLICY_REFUSED,
        anyhow::anyhow!(
            "the sandbox tampered with git's control files in {} (command exit status {code})",
            spec.project_dir.display(),
        ),
    )
    .hint("the changes listed above were undone; nothing the sandbox planted there runs on your next git")
}

const MAX_LISTED: usize = 20;

pub fn print_changes(c: &Changes) {
    if c.is_empty() {
        return;
    }
    let mut lines = Vec::new();
    for (mark, list) in [("+", &c.added), ("~", &c.modified), ("-", &c.deleted)] {
        for p in list {
            // The sandbox named these files: no control of theirs reaches the terminal.
            lines.push(format!(
                "  {mark} {}",
                airlock_work::gate::shown(&p.to_string_lossy())
            ));
        }
    }
    errln!(
        "airlock: workspace changes (discarded, host untouched): {} added, {} changed, {} deleted",
        c.added.len(),
        c.modified.len(),
        c.deleted.len()
    );
    for l in lines.iter().take(MAX_LISTED) {
        errln!("{l}");
    }
    if lines.len() > MAX_LISTED {
        errln!("  … and {} more", lines.len() - MAX_LISTED);
    }
}

/// A run's end, on stderr and as its status: why it was killed (time limit, memory), what the
/// workspace changed, and a failure when the way back undid tampering (`undone`).
pub fn finish(
    spec: &airlock_model::spec::RunSpec,
    outcome: &airlock_sandbox::command::Outcome,
    changes: Option<&Changes>,
    undone: bool,
    timeout_text: Option<&str>,
) -> Result<i32, CliError> {
    use airlock_sandbox::command::Ending;
    match outcome.ending {
        Ending::TimedOut => errln!(
            "airlock: killed: timeout after {}",
            timeout_text.unwrap_or("?")
        ),
        Ending::OutOfMemory => errln!(
            "airlock: killed: out of memory (limit {})",
            spec.resources
                .memory
                .map(|m| m.to_string())
                .unwrap_or_default()
        ),
        Ending::Exited(_) => {}
    }
    if let Some(c) = changes {
        print_changes(c);
    }
    if undone {
        return Err(tampered(spec, outcome.exit_code()));
    }
    Ok(outcome.exit_code())
}
