//! `diff`, `fetch`, `sync`, `deliver`: work out of (and into) a clone-mode sandbox. Everything
//! that reads the sandbox's repository goes through the review repository (`work::review`).

use crate::cli::{DeliverArgs, DiffArgs, FetchArgs, SyncArgs};
use crate::error::{CliError, CliResult};
use airlock_model::exit;
use airlock_work::gate::{shown, Finding};
use airlock_work::git::{valid_branch, Git, GitError};
use airlock_work::review::{FetchOutcome, Review, ReviewError};
use airlock_work::sync as wsync;

impl From<ReviewError> for CliError {
    fn from(e: ReviewError) -> Self {
        let hint = match &e {
            ReviewError::NotClone(n) => Some(format!(
                "diff, fetch and sync need `--workspace clone` (the default for named sandboxes in a git repository); use `airlock cp {n}:/workspace/…` for others"
            )),
            ReviewError::NoBranch(_) => {
                Some("the sandbox must keep its work on its airlock/NAME branch".into())
            }
            _ => None,
        };
        let code = match &e {
            ReviewError::NotClone(_) | ReviewError::NoBranch(_) => exit::CONFLICT,
            _ => exit::SANDBOX_FAILED,
        };
        CliError::new(code, e).maybe_hint(hint)
    }
}

impl From<GitError> for CliError {
    fn from(e: GitError) -> Self {
        CliError::new(exit::SANDBOX_FAILED, e)
    }
}

/// The sandbox's `[workspace] protected` paths (the gate flags them like agent configuration).
fn protected_of(dir: &std::path::Path) -> Vec<String> {
    super::named::recorded_spec(dir)
        .map(|s| s.protected)
        .unwrap_or_default()
}

fn open(name: &str) -> CliResult<(std::path::PathBuf, Review)> {
    let dir = super::named::existing_dir(name)?;
    let r = Review::open(&dir, name, protected_of(&dir))?;
    Ok((dir, r))
}

fn print_findings(findings: &[Finding]) {
    for f in findings {
        let path = if f.path.is_empty() {
            "(branch)"
        } else {
            &f.path
        };
        errln!(
            "  {:<24} {}  {}",
            f.kind.label(),
            shown(path),
            shown(&f.detail)
        );
    }
}

/// Refuse unless the gate is clean or the user accepted.
fn gate(r: &Review, name: &str, accept: bool, verb: &str) -> CliResult<()> {
    if r.findings.is_empty() || accept {
        return Ok(());
    }
    errln!(
        "airlock: {} of {} needs review: {} flagged change(s):",
        verb,
        r.info.branch,
        r.findings.len()
    );
    print_findings(&r.findings);
    Err(CliError::new(
        exit::POLICY_REFUSED,
        anyhow::anyhow!("{verb} stopped by the review gate"),
    )
    .hint(format!(
        "review them with `airlock diff {name}`, then `airlock {verb} {name} --accept`"
    )))
}

pub fn diff(a: &DiffArgs) -> CliResult<i32> {
    let (_, r) = open(&a.name)?;
    if a.json {
        let out = r
            .git
            .output(&["diff", "--numstat", "-z", "--no-renames", &r.from, &r.tip])?;
        let files: Vec<serde_json::Value> = out
            .split(|b| *b == 0)
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                let l = String::from_utf8_lossy(l);
                let mut f = l.splitn(3, '\t');
                let (add, del, path) = (f.next()?, f.next()?, f.next()?);
                Some(serde_json::json!({
                    "path": path,
                    "additions": add.parse::<u64>().ok(),
                    "deletions": del.parse::<u64>().ok(),
                    "binary": add == "-",
                }))
            })
            .collect();
        let v = serde_json::json!({
            "name": a.name,
            "branch": r.info.branch,
            "from": r.from,
            "tip": r.tip,
            "commits": r.commits,
            "files": files,
            "findings": r.findings,
        });
        outln!("{v:#}");
        return Ok(0);
    }
    let mut args = vec!["diff", "--no-ext-diff", "--no-textconv", "--color=auto"];
    if a.stat {
        args.push("--stat");
    }
    args.push(&r.from);
    args.push(&r.tip);
    let st = r
        .git
        .command(&args)
        .status()
        .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    if !r.findings.is_empty() {
        errln!(
            "airlock: the review gate flags {} change(s) (fetch and sync need --accept):",
            r.findings.len()
        );
        print_findings(&r.findings);
    }
    Ok(if st.success() {
        0
    } else {
        exit::SANDBOX_FAILED
    })
}

pub fn fetch(a: &FetchArgs) -> CliResult<i32> {
    let (dir, r) = open(&a.name)?;
    if a.json && !r.findings.is_empty() && !a.accept {
        let v = serde_json::json!({
            "name": a.name, "branch": r.info.branch, "fetched": false,
            "needs_accept": true, "findings": r.findings,
        });
        outln!("{v:#}");
        return Ok(exit::POLICY_REFUSED);
    }
    gate(&r, &a.name, a.accept, "fetch")?;
    let outcome = r.fetch_into_host(a.force)?;
    let (fetched, what) = match &outcome {
        FetchOutcome::UpToDate => (false, "already up to date".to_string()),
        FetchOutcome::Fetched { before: None } => {
            (true, format!("new branch, {} commit(s)", r.commits))
        }
        FetchOutcome::Fetched { before: Some(b) } => {
            (true, format!("{}..{}", &b[..12.min(b.len())], &r.tip[..12]))
        }
        FetchOutcome::Diverged(b) => {
            return Err(CliError::new(
                exit::CONFLICT,
                anyhow::anyhow!(
                    "the host's {} ({}) has commits the sandbox's branch does not",
                    r.info.branch,
                    &b[..12.min(b.len())]
                ),
            )
            .hint(format!(
                "rename the host branch, or `airlock fetch {} --force` to replace it",
                a.name
            )))
        }
    };
    r.record(&dir, false)?;
    if a.json {
        let v = serde_json::json!({
            "name": a.name, "branch": r.info.branch, "fetched": fetched, "tip": r.tip,
            "repository": r.info.host_repo, "findings": r.findings,
        });
        outln!("{v:#}");
    } else {
        outln!(
            "{} -> {} in {} ({what})",
            a.name,
            r.info.branch,
            r.info.host_repo.display()
        );
    }
    Ok(0)
}

pub fn sync(a: &SyncArgs) -> CliResult<i32> {
    let dir = super::named::existing_dir(&a.name)?;
    let r = Review::open(&dir, &a.name, protected_of(&dir))?;
    if !a.dry_run {
        gate(&r, &a.name, a.accept, "sync")?;
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
    let changes = if base == r.from {
        r.net.clone()
    } else {
        r.changes_between(&base)?
    };
    let ff = r.from_commit
        && head.as_deref() == Some(base.as_str())
        && clean
        && current != format!("refs/heads/{}", r.info.branch);
    let plan = wsync::plan(&host, &top, &changes, ff)?;
    let report = |applied: bool| {
        if a.json {
            let v = serde_json::json!({
                "name": a.name, "repository": top, "applied": applied, "dry_run": a.dry_run,
                "method": plan.method, "changes": plan.steps, "conflicts": plan.conflicts,
                "unchanged": plan.unchanged, "skipped": plan.skipped,
                "through_links": plan.through_links, "findings": r.findings,
            });
            outln!("{v:#}");
        } else {
            for s in &plan.steps {
                outln!("{} {}", s.status, shown(&s.path));
            }
            for p in &plan.skipped {
                outln!("skipped (submodule) {}", shown(p));
            }
        }
    };
    if !plan.through_links.is_empty() {
        report(false);
        errln!(
            "airlock: {} path(s) of {} lie below a symbolic link in your checkout:",
            plan.through_links.len(),
            a.name
        );
        for p in &plan.through_links {
            errln!("  {}", shown(p));
        }
        return Err(CliError::new(
            exit::POLICY_REFUSED,
            anyhow::anyhow!("sync refused: it never writes through a symbolic link"),
        )
        .hint(format!(
            "replace the link with a real folder if it is yours, or merge by hand: `airlock fetch {0}` then `git merge {1}`",
            a.name, r.info.branch
        )));
    }
    if !plan.conflicts.is_empty() {
        report(false);
        errln!(
            "airlock: {} path(s) changed on the host since {} started, and on its branch:",
            plan.conflicts.len(),
            a.name
        );
        for p in &plan.conflicts {
            errln!("  {}", shown(p));
        }
        return Err(CliError::new(
            exit::CONFLICT,
            anyhow::anyhow!("sync refused: the host has conflicting local edits"),
        )
        .hint(format!(
            "commit or stash those edits, or merge by hand: `airlock fetch {0}` then `git merge {1}`",
            a.name, r.info.branch
        )));
    }
    if a.dry_run {
        report(false);
        if !r.findings.is_empty() {
            errln!("airlock: the review gate flags (sync needs --accept):");
            print_findings(&r.findings);
        }
        if !a.json {
            errln!(
                "airlock: dry run: {} change(s) by {}, nothing written",
                plan.steps.len(),
                plan.method
            );
        }
        return Ok(0);
    }
    match r.fetch_into_host(false)? {
        FetchOutcome::Diverged(_) => {
            return Err(CliError::new(
                exit::CONFLICT,
                anyhow::anyhow!(
                    "the host's {} has commits the sandbox's branch does not",
                    r.info.branch
                ),
            )
            .hint(format!("`airlock fetch {} --force` replaces it", a.name)))
        }
        FetchOutcome::UpToDate | FetchOutcome::Fetched { .. } => {}
    }
    if ff && !plan.steps.is_empty() {
        host.output(&[
            "merge",
            "--ff-only",
            "--quiet",
            &format!("refs/heads/{}", r.info.branch),
        ])?;
    } else {
        let by_path: std::collections::HashMap<&str, &airlock_work::gate::Change> =
            changes.iter().map(|c| (c.path.as_str(), c)).collect();
        for s in &plan.steps {
            if let Some(c) = by_path.get(s.path.as_str()) {
                wsync::apply(&host, &top, c)
                    .map_err(|e| CliError::new(exit::SANDBOX_FAILED, anyhow::anyhow!(e)))?;
            }
        }
    }
    r.record(&dir, true)?;
    report(true);
    if a.artifacts {
        let ws = dir.join(airlock_work::clone::WORKSPACE_DIR);
        let (mut files, mut links) = (0, 0);
        for d in wsync::ARTIFACTS {
            let (f, l) = wsync::copy_artifacts(&ws.join(d), &top.join(d)).map_err(|e| {
                CliError::new(exit::SANDBOX_FAILED, anyhow::anyhow!("copy {d}/: {e}"))
            })?;
            files += f;
            links += l;
        }
        errln!(
            "airlock: artifacts: {files} file(s) copied{}",
            if links > 0 {
                format!(", {links} symlink(s) skipped")
            } else {
                String::new()
            }
        );
    }
    if !a.json {
        errln!(
            "airlock: {} change(s) applied to {} by {}{}",
            plan.steps.len(),
            top.display(),
            plan.method,
            if plan.method == "apply" && !plan.steps.is_empty() {
                " (uncommitted: review with `git diff`)"
            } else {
                ""
            }
        );
    }
    Ok(0)
}

pub fn deliver(a: &DeliverArgs) -> CliResult<i32> {
    let dir = super::named::existing_dir(&a.name)?;
    let info = airlock_work::clone::CloneInfo::load(&dir)
        .ok_or_else(|| CliError::from(ReviewError::NotClone(a.name.clone())))?;
    if !valid_branch(&a.branch) {
        return Err(CliError::usage(format!(
            "{:?} is not a valid branch name",
            a.branch
        )));
    }
    let host = Git::worktree(&info.host_repo);
    let refname = format!("refs/heads/{}", a.branch);
    if host.commit(&refname)?.is_none() {
        return Err(CliError::new(
            exit::NOT_FOUND,
            anyhow::anyhow!("no branch {} in {}", a.branch, info.host_repo.display()),
        ));
    }
    let bundle = dir.join(format!(".deliver-{}.bundle", std::process::id()));
    host.output(&[
        std::ffi::OsStr::new("bundle"),
        "create".as_ref(),
        "--quiet".as_ref(),
        bundle.as_os_str(),
        refname.as_ref(),
    ])?;
    let input = std::fs::File::open(&bundle);
    let _ = std::fs::remove_file(&bundle);
    let input = input.map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    // The sandbox's own git, inside the sandbox, stores it: nothing of the sandbox's runs here.
    let script = r#"set -e
f=$(mktemp)
trap 'rm -f "$f"' EXIT
cat > "$f"
git -C /workspace fetch --quiet --no-tags "$f" "+refs/heads/$1:refs/heads/delivered/$1""#;
    let exe = std::env::current_exe().map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    let st = std::process::Command::new(exe)
        .args(["exec", &a.name, "--", "sh", "-c", script, "sh", &a.branch])
        .stdin(input)
        .status()
        .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    match st.code() {
        Some(0) => {
            outln!("{} <- delivered/{}", a.name, a.branch);
            Ok(0)
        }
        Some(c) if c == exit::CONFLICT || c == exit::NOT_FOUND => Ok(c),
        _ => Err(CliError::new(
            exit::SANDBOX_FAILED,
            anyhow::anyhow!("the sandbox's git could not store the branch ({st})"),
        )),
    }
}
