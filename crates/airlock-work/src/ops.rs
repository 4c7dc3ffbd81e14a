//! The way back as operations with typed results: `diff`, `fetch` and `sync` of a clone-mode
//! sandbox, one implementation behind every surface (the CLI renders the reports, the engine's
//! API returns them as JSON). Nothing here prints.

use crate::gate::{Change, Finding};
use crate::git::{Git, GitError};
use crate::review::{FetchOutcome, Review, ReviewError};
use crate::sync::{self as wsync, Step};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One file of a diff, with its line counts (None for binary files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileStat {
    pub path: String,
    pub additions: Option<u64>,
    pub deletions: Option<u64>,
    pub binary: bool,
}

/// What the branch changes against where it started, and what the gate flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiffSummary {
    pub name: String,
    pub branch: String,
    pub from: String,
    pub tip: String,
    pub commits: usize,
    pub files: Vec<FileStat>,
    pub findings: Vec<Finding>,
    /// The changes as text (`git diff`, or its `--stat`), when asked for; at most
    /// [`MAX_PATCH`] bytes (head and tail kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
}

/// The most bytes of patch text a [`DiffSummary`] carries.
pub const MAX_PATCH: usize = 4 << 20;

/// How much of the changes a diff shows as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PatchForm {
    /// The whole patch (`git diff`).
    Full,
    /// The summary of changed files (`git diff --stat`).
    Stat,
}

/// The patch text of the branch's changes, as `airlock diff` shows it (no colour), bounded by
/// [`MAX_PATCH`]: what is cut from the middle is said in its place.
pub fn patch(r: &Review, form: PatchForm) -> Result<String, OpError> {
    let mut args = vec!["diff", "--no-ext-diff", "--no-textconv", "--no-color"];
    if form == PatchForm::Stat {
        args.push("--stat");
    }
    args.extend([r.from.as_str(), r.tip.as_str()]);
    let out = r.git.output(&args)?;
    if out.len() <= MAX_PATCH {
        return Ok(String::from_utf8_lossy(&out).into_owned());
    }
    let half = MAX_PATCH / 2;
    Ok(format!(
        "{}\n[airlock: {} bytes cut from the middle of {} bytes]\n{}",
        String::from_utf8_lossy(&out[..half]),
        out.len() - 2 * half,
        out.len(),
        String::from_utf8_lossy(&out[out.len() - half..])
    ))
}

/// A fetch that happened (or had nothing to do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FetchReport {
    pub name: String,
    pub branch: String,
    pub fetched: bool,
    pub tip: String,
    #[schema(value_type = String)]
    pub repository: PathBuf,
    /// "already up to date", "new branch, N commit(s)", "OLD..NEW".
    pub what: String,
    /// What the gate flagged (non-empty only with `accept`).
    pub findings: Vec<Finding>,
}

/// What sync did (or, for a dry run or a refusal, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyncReport {
    pub name: String,
    #[schema(value_type = String)]
    pub repository: PathBuf,
    pub applied: bool,
    pub dry_run: bool,
    /// `fast-forward` or `apply`.
    pub method: String,
    pub changes: Vec<Step>,
    pub conflicts: Vec<String>,
    pub unchanged: Vec<String>,
    pub skipped: Vec<String>,
    pub through_links: Vec<String>,
    pub findings: Vec<Finding>,
    /// With `artifacts`: (files copied, symlinks skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<u64>>)]
    pub artifacts: Option<(usize, usize)>,
}

/// How to sync (every field optional, default false).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct SyncOptions {
    /// Say what would change; change nothing.
    pub dry_run: bool,
    /// Also copy build outputs (dist/ build/ target/ .next/ out/: regular files only).
    pub artifacts: bool,
    /// Proceed although the review gate flagged changes (after a human reviewed them).
    pub accept: bool,
}

/// Why an operation did not (fully) happen.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{verb} stopped by the review gate")]
    NeedsReview {
        verb: &'static str,
        branch: String,
        findings: Vec<Finding>,
    },
    #[error("the host's {branch} ({}) has commits the sandbox's branch does not", short(.host_tip))]
    Diverged { branch: String, host_tip: String },
    #[error("sync refused: it never writes through a symbolic link")]
    ThroughLinks(Box<SyncReport>),
    #[error("sync refused: the host has conflicting local edits")]
    Conflicts(Box<SyncReport>),
    #[error(transparent)]
    Review(#[from] ReviewError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("{0}")]
    Io(String),
}

fn short(oid: &str) -> &str {
    &oid[..12.min(oid.len())]
}

impl OpError {
    /// The exit code of the CLI for this error (README "Exit codes").
    pub fn exit_code(&self) -> i32 {
        use airlock_model::exit;
        match self {
            OpError::NeedsReview { .. } | OpError::ThroughLinks(_) => exit::POLICY_REFUSED,
            OpError::Diverged { .. } | OpError::Conflicts(_) => exit::CONFLICT,
            OpError::Review(
                ReviewError::NotClone(_) | ReviewError::NoBranch(_) | ReviewError::InGuest(_),
            ) => exit::CONFLICT,
            _ => exit::SANDBOX_FAILED,
        }
    }

    /// A short stable name (the API's `kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            OpError::NeedsReview { .. } => "needs_review",
            OpError::Diverged { .. } => "diverged",
            OpError::ThroughLinks(_) => "through_links",
            OpError::Conflicts(_) => "conflict",
            OpError::Review(ReviewError::NotClone(_)) => "not_clone",
            OpError::Review(ReviewError::NoBranch(_)) => "no_branch",
            OpError::Review(ReviewError::InGuest(_)) => "in_guest",
            _ => "internal",
        }
    }

    /// What the user can do, for sandbox `name`.
    pub fn hint(&self, name: &str) -> Option<String> {
        Some(match self {
            OpError::NeedsReview { verb, .. } => format!(
                "review them with `airlock diff {name}`, then `airlock {verb} {name} --accept`"
            ),
            OpError::Diverged { .. } => format!(
                "rename the host branch, or `airlock fetch {name} --force` to replace it"
            ),
            OpError::ThroughLinks(_) => format!(
                "replace the link with a real folder if it is yours, or merge by hand: `airlock fetch {name}` then `git merge airlock/{name}`"
            ),
            OpError::Conflicts(_) => format!(
                "commit or stash those edits, or merge by hand: `airlock fetch {name}` then `git merge airlock/{name}`"
            ),
            OpError::Review(ReviewError::NotClone(n)) => format!(
                "diff, fetch and sync need `--workspace clone` (the default for named sandboxes in a git repository); use `airlock cp {n}:/workspace/…` for others"
            ),
            OpError::Review(ReviewError::NoBranch(_)) => {
                "the sandbox must keep its work on its airlock/NAME branch".into()
            }
            OpError::Review(ReviewError::InGuest(_)) => in_guest_hint(name),
            _ => return None,
        })
    }
}

/// What brings a microVM sandbox's stranded work over ([`ReviewError::InGuest`]).
pub fn in_guest_hint(name: &str) -> String {
    format!(
        "`airlock start {name}` brings it over (diff, fetch and sync of a running sandbox take the branch from its guest; `airlock stop {name}` keeps it on the host)"
    )
}

/// The review of sandbox `name` (folder `dir`), with the `[workspace] protected` paths of its
/// recorded spec (`DIR/spec.json`), which the gate flags like agent configuration.
pub fn open(dir: &Path, name: &str) -> Result<Review, OpError> {
    let protected = std::fs::read(dir.join("spec.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<airlock_model::spec::RunSpec>(&b).ok())
        .map(|s| s.protected)
        .unwrap_or_default();
    Ok(Review::open(dir, name, protected)?)
}

/// `diff --json`: the files, their line counts, the commits and the findings.
pub fn diff(r: &Review, name: &str) -> Result<DiffSummary, OpError> {
    let out = r
        .git
        .output(&["diff", "--numstat", "-z", "--no-renames", &r.from, &r.tip])?;
    let files = out
        .split(|b| *b == 0)
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let l = String::from_utf8_lossy(l);
            let mut f = l.splitn(3, '\t');
            let (add, del, path) = (f.next()?, f.next()?, f.next()?);
            Some(FileStat {
                path: path.to_string(),
                additions: add.parse().ok(),
                deletions: del.parse().ok(),
                binary: add == "-",
            })
        })
        .collect();
    Ok(DiffSummary {
        name: name.to_string(),
        branch: r.info.branch.clone(),
        from: r.from.clone(),
        tip: r.tip.clone(),
        commits: r.commits,
        files,
        findings: r.findings.clone(),
        patch: None,
    })
}

fn gate(r: &Review, accept: bool, verb: &'static str) -> Result<(), OpError> {
    if r.findings.is_empty() || accept {
        return Ok(());
    }
    Err(OpError::NeedsReview {
        verb,
        branch: r.info.branch.clone(),
        findings: r.findings.clone(),
    })
}

/// `fetch`: the branch into the host repository as `airlock/NAME`, review-gated.
pub fn fetch(
    dir: &Path,
    r: &Review,
    name: &str,
    accept: bool,
    force: bool,
) -> Result<FetchReport, OpError> {
    gate(r, accept, "fetch")?;
    let (fetched, what) = match r.fetch_into_host(force)? {
        FetchOutcome::UpToDate => (false, "already up to date".to_string()),
        FetchOutcome::Fetched { before: None } => {
            (true, format!("new branch, {} commit(s)", r.commits))
        }
        FetchOutcome::Fetched { before: Some(b) } => {
            (true, format!("{}..{}", short(&b), short(&r.tip)))
        }
        FetchOutcome::Diverged(b) => {
            return Err(OpError::Diverged {
                branch: r.info.branch.clone(),
                host_tip: b,
            })
        }
    };
    r.record(dir, false)?;
    Ok(FetchReport {
        name: name.to_string(),
        branch: r.info.branch.clone(),
        fetched,
        tip: r.tip.clone(),
        repository: r.info.host_repo.clone(),
        what,
        findings: r.findings.clone(),
    })
}

/// `sync`: the committed changes into the host checkout — a fast-forward when the host is
/// still where the last sync left it, else a file-by-file apply, refused per path over host
/// edits or symbolic links.
pub fn sync(dir: &Path, r: &Review, name: &str, o: SyncOptions) -> Result<SyncReport, OpError> {
    if !o.dry_run {
        gate(r, o.accept, "sync")?;
    }
    let top = r.info.host_repo.clone();
    let host = Git::worktree(&top);
    let head = host.commit("HEAD")?;
    let clean = host
        .output(&["status", "--porcelain", "-z", "--untracked-files=no"])?
        .is_empty();
    let current = host
        .text(&["symbolic-ref", "--quiet", "HEAD"])
        .unwrap_or_default();
    // What the checkout already has: everything up to the last sync's tip, else the start.
    let base = r.sync_base()?;
    let changes: Vec<Change> = if base == r.from {
        r.net.clone()
    } else {
        r.changes_between(&base)?
    };
    let ff = r.from_commit
        && head.as_deref() == Some(base.as_str())
        && clean
        && current != format!("refs/heads/{}", r.info.branch);
    let plan = wsync::plan(&host, &top, &changes, ff)?;
    let mut report = SyncReport {
        name: name.to_string(),
        repository: top.clone(),
        applied: false,
        dry_run: o.dry_run,
        method: plan.method.to_string(),
        changes: plan.steps.clone(),
        conflicts: plan.conflicts.clone(),
        unchanged: plan.unchanged.clone(),
        skipped: plan.skipped.clone(),
        through_links: plan.through_links.clone(),
        findings: r.findings.clone(),
        artifacts: None,
    };
    if !plan.through_links.is_empty() {
        return Err(OpError::ThroughLinks(Box::new(report)));
    }
    if !plan.conflicts.is_empty() {
        return Err(OpError::Conflicts(Box::new(report)));
    }
    if o.dry_run {
        return Ok(report);
    }
    if let FetchOutcome::Diverged(b) = r.fetch_into_host(false)? {
        return Err(OpError::Diverged {
            branch: r.info.branch.clone(),
            host_tip: b,
        });
    }
    if ff && !plan.steps.is_empty() {
        host.output(&[
            "merge",
            "--ff-only",
            "--quiet",
            &format!("refs/heads/{}", r.info.branch),
        ])?;
    } else {
        let by_path: std::collections::HashMap<&str, &Change> =
            changes.iter().map(|c| (c.path.as_str(), c)).collect();
        for s in &plan.steps {
            if let Some(c) = by_path.get(s.path.as_str()) {
                wsync::apply(&host, &top, c).map_err(OpError::Io)?;
            }
        }
    }
    r.record(dir, true)?;
    report.applied = true;
    if o.artifacts {
        let ws = dir.join(crate::clone::WORKSPACE_DIR);
        let (mut files, mut links) = (0, 0);
        for d in wsync::ARTIFACTS {
            let (f, l) = wsync::copy_artifacts(&ws.join(d), &top.join(d))
                .map_err(|e| OpError::Io(format!("copy {d}/: {e}")))?;
            files += f;
            links += l;
        }
        report.artifacts = Some((files, links));
    }
    Ok(report)
}
