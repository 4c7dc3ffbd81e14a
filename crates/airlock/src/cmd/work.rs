//! `diff`, `fetch`, `sync`, `deliver`: work out of (and into) a clone-mode sandbox. Everything
//! that reads the sandbox's repository goes through the review repository (`work::review`).

use crate::cli::{DeliverArgs, DiffArgs, FetchArgs, SyncArgs};
use crate::error::{CliError, CliResult};
use airlock_engine::action::{Action, ActionData};
use airlock_engine::client::ClientError;
use airlock_model::exit;
use airlock_work::gate::{shown, shown_but, Finding};
use airlock_work::git::{valid_branch, Git, GitError};
use airlock_work::ops::{self, SyncReport};
use airlock_work::review::ReviewError;
use serde::Deserialize;

impl From<ReviewError> for CliError {
    fn from(e: ReviewError) -> Self {
        let hint = match &e {
            ReviewError::NotClone(n) => Some(format!(
                "diff, fetch and sync need `--workspace clone` (the default for named sandboxes in a git repository); use `airlock cp {n}:/workspace/…` for others"
            )),
            ReviewError::NoBranch(_) => {
                Some("the sandbox must keep its work on its airlock/NAME branch".into())
            }
            ReviewError::InGuest(n) => Some(airlock_work::ops::in_guest_hint(n)),
            _ => None,
        };
        let code = match &e {
            ReviewError::NotClone(_) | ReviewError::NoBranch(_) | ReviewError::InGuest(_) => {
                exit::CONFLICT
            }
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

/// One of diff, fetch and sync through the engine (`Client::act`). The engine brings a running
/// microVM sandbox's branch over from its guest first, and journals the review gate's outcome.
fn act(action: Action, name: &str, json: bool) -> CliResult<ActionData> {
    super::named::existing_dir(name)?;
    super::named::client()?
        .act(&action)
        .map_err(|e| refusal(e, name, json))
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

/// What a needs_review refusal's detail holds.
#[derive(serde::Deserialize)]
struct NeedsReview {
    verb: String,
    branch: String,
    findings: Vec<Finding>,
}

/// An operation's error as the engine gave it: what it refused (from the error's `detail`),
/// listed as before, then the error with its hint.
fn refusal(e: ClientError, name: &str, json: bool) -> CliError {
    let ClientError::Api {
        kind,
        hint,
        code,
        detail: Some(detail),
        ..
    } = &e
    else {
        return e.into();
    };
    let summary = detail.get("summary").and_then(|s| s.as_str());
    match kind.as_str() {
        "needs_review" => {
            if let Ok(n) = NeedsReview::deserialize(&**detail) {
                errln!(
                    "airlock: {} of {} needs review: {} flagged change(s):",
                    n.verb,
                    n.branch,
                    n.findings.len()
                );
                print_findings(&n.findings);
            }
        }
        "through_links" | "conflict" => {
            if let Some(report) = detail
                .get("report")
                .and_then(|r| SyncReport::deserialize(r).ok())
            {
                sync_lines(&report, json);
                let paths = if kind == "through_links" {
                    errln!(
                        "airlock: {} path(s) of {name} lie below a symbolic link in your checkout:",
                        report.through_links.len()
                    );
                    &report.through_links
                } else {
                    errln!(
                        "airlock: {} path(s) changed on the host since {name} started, and on its branch:",
                        report.conflicts.len()
                    );
                    &report.conflicts
                };
                for p in paths {
                    errln!("  {}", shown(p));
                }
            }
        }
        _ => {}
    }
    match summary {
        Some(s) => CliError::new(*code, anyhow::anyhow!("{s}")).maybe_hint(hint.clone()),
        None => e.into(),
    }
}

pub fn diff(a: &DiffArgs) -> CliResult<i32> {
    let form = if a.json {
        None
    } else if a.stat {
        Some(ops::PatchForm::Stat)
    } else {
        Some(ops::PatchForm::Full)
    };
    let action = Action::Diff {
        name: a.name.clone(),
        patch: form,
    };
    let ActionData::Diff(d) = act(action, &a.name, a.json)? else {
        return Err(other_answer());
    };
    if a.json {
        outln!("{:#}", serde_json::to_value(&d).unwrap_or_default());
        return Ok(0);
    }
    // The patch is the engine's (made in its review repository, the one its gate checked): no
    // git runs here on what the sandbox wrote.
    show_patch(d.patch.as_deref().unwrap_or_default(), !a.stat);
    if !d.findings.is_empty() {
        errln!(
            "airlock: the review gate flags {} change(s) (fetch and sync need --accept):",
            d.findings.len()
        );
        print_findings(&d.findings);
    }
    Ok(0)
}

/// The patch text on stdout. A pipe or file gets it as git made it (for `git apply`). A
/// terminal gets every line through [`shown_but`] — the sandbox wrote those bytes, and a raw
/// carriage return, erase-line or bidi override would hide a line from the reviewer, an OSC
/// would drive the terminal — coloured like git's (unless `NO_COLOR`), through the user's pager
/// (`PAGER`, else `less -FRX`).
fn show_patch(patch: &str, full: bool) {
    use std::io::{IsTerminal, Write};
    if !std::io::stdout().is_terminal() {
        crate::out::bytes(&mut std::io::stdout().lock(), patch.as_bytes());
        return;
    }
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb");
    let mut text = String::with_capacity(patch.len() + patch.len() / 8);
    for line in patch.lines() {
        let safe = shown_but(line, &['\t']);
        let paint = match line.as_bytes().first() {
            _ if !color || !full => None,
            _ if line.starts_with("diff --git ")
                || line.starts_with("index ")
                || line.starts_with("--- ")
                || line.starts_with("+++ ")
                || line.starts_with("new file mode ")
                || line.starts_with("deleted file mode ")
                || line.starts_with("old mode ")
                || line.starts_with("new mode ")
                || line.starts_with("similarity index ")
                || line.starts_with("rename ")
                || line.starts_with("Binary files ") =>
            {
                Some("1")
            }
            Some(b'@') if line.starts_with("@@") => Some("36"),
            Some(b'+') => Some("32"),
            Some(b'-') => Some("31"),
            _ => None,
        };
        match paint {
            Some(code) => text.push_str(&format!("\x1b[{code}m{safe}\x1b[m\n")),
            None => {
                text.push_str(&safe);
                text.push('\n');
            }
        }
    }
    let pager = std::env::var("PAGER").ok().filter(|p| !p.trim().is_empty());
    let mut cmd = match &pager {
        Some(p) if p.trim() == "cat" => None,
        Some(p) => {
            let mut c = std::process::Command::new("/bin/sh");
            c.args(["-c", p]);
            Some(c)
        }
        None => Some(std::process::Command::new("less")),
    };
    if let Some(c) = cmd.as_mut() {
        if std::env::var_os("LESS").is_none() {
            c.env("LESS", "FRX");
        }
        if let Ok(mut child) = c.stdin(std::process::Stdio::piped()).spawn() {
            if let Some(mut stdin) = child.stdin.take() {
                // The reader quitting early (q in less) is not an error.
                let _ = stdin.write_all(text.as_bytes());
            }
            let _ = child.wait();
            return;
        }
    }
    crate::out::bytes(&mut std::io::stdout().lock(), text.as_bytes());
}

fn other_answer() -> CliError {
    CliError::new(
        1,
        anyhow::anyhow!("bad answer from the airlock engine: an answer of another kind"),
    )
}

pub fn fetch(a: &FetchArgs) -> CliResult<i32> {
    let action = Action::Fetch {
        name: a.name.clone(),
        accept: a.accept,
        force: a.force,
    };
    let got =
        super::named::existing_dir(&a.name).and_then(|_| Ok(super::named::client()?.act(&action)));
    let f = match got? {
        Ok(ActionData::Fetched(f)) => f,
        Ok(_) => return Err(other_answer()),
        // --json: the refusal is the answer, on stdout.
        Err(ClientError::Api {
            kind,
            detail: Some(detail),
            ..
        }) if a.json && kind == "needs_review" => {
            let n = NeedsReview::deserialize(&*detail).map_err(|e| {
                CliError::new(
                    1,
                    anyhow::anyhow!("bad answer from the airlock engine: {e}"),
                )
            })?;
            let v = serde_json::json!({
                "name": a.name, "branch": n.branch, "fetched": false,
                "needs_accept": true, "findings": n.findings,
            });
            outln!("{v:#}");
            return Ok(exit::POLICY_REFUSED);
        }
        Err(e) => return Err(refusal(e, &a.name, a.json)),
    };
    if a.json {
        let v = serde_json::json!({
            "name": f.name, "branch": f.branch, "fetched": f.fetched, "tip": f.tip,
            "repository": f.repository, "findings": f.findings,
        });
        outln!("{v:#}");
    } else {
        outln!(
            "{} -> {} in {} ({})",
            f.name,
            f.branch,
            f.repository.display(),
            f.what
        );
    }
    Ok(0)
}

/// The plan's lines (stdout): JSON, or one line per change.
fn sync_lines(r: &SyncReport, json: bool) {
    if json {
        let mut v = serde_json::to_value(r).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("artifacts");
        }
        outln!("{v:#}");
    } else {
        for s in &r.changes {
            outln!("{} {}", s.status, shown(&s.path));
        }
        for p in &r.skipped {
            outln!("skipped (submodule) {}", shown(p));
        }
    }
}

pub fn sync(a: &SyncArgs) -> CliResult<i32> {
    let action = Action::Sync {
        name: a.name.clone(),
        dry_run: a.dry_run,
        artifacts: a.artifacts,
        accept: a.accept,
    };
    let ActionData::Synced(report) = act(action, &a.name, a.json)? else {
        return Err(other_answer());
    };
    sync_lines(&report, a.json);
    if a.dry_run {
        if !report.findings.is_empty() {
            errln!("airlock: the review gate flags (sync needs --accept):");
            print_findings(&report.findings);
        }
        if !a.json {
            errln!(
                "airlock: dry run: {} change(s) by {}, nothing written",
                report.changes.len(),
                report.method
            );
        }
        return Ok(0);
    }
    if let Some((files, links)) = report.artifacts {
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
            report.changes.len(),
            report.repository.display(),
            report.method,
            if report.method == "apply" && !report.changes.is_empty() {
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
