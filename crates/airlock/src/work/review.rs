//! The review repository: a bare repository of airlock's (`DIR/review.git`) that sees the
//! sandbox clone's objects and the host repository's objects as alternates, and nothing else
//! of the sandbox's. diff, the review gate and fetch run here, so no config, hook, attribute or
//! filter written inside the sandbox is ever consulted on the host.

use super::clone::{CloneInfo, WORKSPACE_DIR};
use super::gate::{self, Change, Finding, Kind};
use super::git::{is_oid, Git, GitError};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("sandbox {0} has no clone workspace (it was created with another workspace mode)")]
    NotClone(String),
    #[error("the sandbox's repository is unusable: {0}")]
    Repo(String),
    #[error("branch {0} does not exist in the sandbox's repository")]
    NoBranch(String),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("{0}")]
    Io(String),
}

pub struct Review {
    pub dir: PathBuf,
    pub git: Git,
    pub info: CloneInfo,
    /// The branch's commit in the sandbox.
    pub tip: String,
    /// What the branch is compared with: `start`, else `base` (history rewritten), else the
    /// empty tree (unrelated history).
    pub from: String,
    /// `from` is a commit (not the empty tree).
    pub from_commit: bool,
    /// Commits on the branch since `from`.
    pub commits: usize,
    /// The net change from `from` to the tip (what sync applies).
    pub net: Vec<Change>,
    /// Everything the gate flags, over every commit and the net change.
    pub findings: Vec<Finding>,
    /// The sandbox's `[workspace] protected` paths (flagged like agent configuration).
    protected: Vec<String>,
}

impl Drop for Review {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A regular directory, not a symlink (checked with lstat).
fn real_dir(p: &Path) -> Result<(), ReviewError> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(ReviewError::Repo(format!(
            "{} is not a directory",
            p.display()
        ))),
        Err(e) => Err(ReviewError::Repo(format!("{}: {e}", p.display()))),
    }
}

/// Read at most `max` bytes of a regular file, without following a final symlink.
fn read_small(p: &Path, max: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut v = Vec::new();
    f.take(max).read_to_end(&mut v).ok()?;
    Some(v)
}

/// The branch's commit, read from the sandbox's refs as data (loose ref, else packed-refs).
fn read_ref(git_dir: &Path, branch: &str) -> Result<String, ReviewError> {
    let refname = format!("refs/heads/{branch}");
    let mut p = git_dir.to_path_buf();
    let mut loose_ok = true;
    for c in refname.split('/').take(refname.split('/').count() - 1) {
        p.push(c);
        if real_dir(&p).is_err() {
            loose_ok = false;
            break;
        }
    }
    if loose_ok {
        if let Some(b) = read_small(&git_dir.join(&refname), 4096) {
            let s = String::from_utf8_lossy(&b).trim().to_string();
            if is_oid(&s) {
                return Ok(s);
            }
            return Err(ReviewError::Repo(format!("{refname} is not an object id")));
        }
    }
    if let Some(b) = read_small(&git_dir.join("packed-refs"), 256 << 20) {
        for line in String::from_utf8_lossy(&b).lines() {
            if let Some((oid, name)) = line.split_once(' ') {
                if name == refname && is_oid(oid) {
                    return Ok(oid.to_string());
                }
            }
        }
    }
    Err(ReviewError::NoBranch(branch.to_string()))
}

fn host_objects(host: &Git) -> Result<PathBuf, GitError> {
    Ok(
        PathBuf::from(host.text(&["rev-parse", "--path-format=absolute", "--git-common-dir"])?)
            .join("objects"),
    )
}

impl Review {
    /// Open the review of sandbox `name` whose folder is `dir`.
    pub fn open(dir: &Path, name: &str) -> Result<Review, ReviewError> {
        let info = CloneInfo::load(dir).ok_or_else(|| ReviewError::NotClone(name.into()))?;
        let git_dir = dir.join(WORKSPACE_DIR).join(".git");
        real_dir(&dir.join(WORKSPACE_DIR))?;
        real_dir(&git_dir)?;
        let objects = git_dir.join("objects");
        real_dir(&objects)?;
        real_dir(&objects.join("pack")).ok();
        for chained in ["info/alternates", "info/http-alternates"] {
            if std::fs::symlink_metadata(objects.join(chained)).is_ok() {
                return Err(ReviewError::Repo(format!(
                    "objects/{chained} was added inside the sandbox; refusing to follow it"
                )));
            }
        }
        let tip = read_ref(&git_dir, &info.branch)?;

        let rdir = dir.join("review.git");
        let _ = std::fs::remove_dir_all(&rdir);
        Git::worktree(dir).output(&[
            std::ffi::OsStr::new("init"),
            "--bare".as_ref(),
            "--quiet".as_ref(),
            "--template=".as_ref(),
            rdir.as_os_str(),
        ])?;
        let host = Git::worktree(&info.host_repo);
        let alternates = format!(
            "{}\n{}\n",
            objects.display(),
            host_objects(&host)?.display()
        );
        let info_dir = rdir.join("objects/info");
        std::fs::create_dir_all(&info_dir)
            .and_then(|()| std::fs::write(info_dir.join("alternates"), alternates))
            .map_err(|e| ReviewError::Io(format!("write the review repository: {e}")))?;
        let git = Git::bare(&rdir);
        let mut r = Review {
            dir: rdir,
            git,
            info,
            tip,
            from: String::new(),
            from_commit: false,
            commits: 0,
            net: Vec::new(),
            findings: Vec::new(),
            protected: crate::cmd::sandbox::recorded_spec(dir)
                .map(|s| s.protected)
                .unwrap_or_default(),
        };
        if r.git.text(&["cat-file", "-t", &r.tip])? != "commit" {
            return Err(ReviewError::Repo(format!(
                "{} does not name a commit",
                r.info.branch
            )));
        }
        r.git.output(&["update-ref", "refs/heads/review", &r.tip])?;
        r.from = r.pick_from()?;
        r.net = r.net_changes()?;
        r.findings = r.gate()?;
        Ok(r)
    }

    fn empty_tree(&self) -> Result<String, GitError> {
        Ok(String::from_utf8_lossy(
            &self
                .git
                .with_input(&["hash-object", "-t", "tree", "--stdin"], b"")?,
        )
        .trim()
        .to_string())
    }

    fn pick_from(&mut self) -> Result<String, GitError> {
        for c in [&self.info.start, &self.info.base].into_iter().flatten() {
            let exists = self.git.commit(c)?.is_some();
            if exists && self.git.is_ancestor(c, &self.tip)? {
                if Some(c) != self.info.start.as_ref() {
                    self.findings.push(rewritten(
                        "the branch no longer contains the commit of the host's uncommitted changes",
                    ));
                }
                self.from_commit = true;
                return Ok(c.clone());
            }
        }
        if self.info.start.is_some() {
            self.findings.push(rewritten(
                "the branch does not descend from the host's HEAD: every file is compared with nothing",
            ));
        }
        self.empty_tree()
    }

    fn range(&self) -> Vec<String> {
        if self.from_commit {
            vec![self.tip.clone(), format!("^{}", self.from)]
        } else {
            vec![self.tip.clone()]
        }
    }

    /// The net change from `from` to the tip.
    fn net_changes(&self) -> Result<Vec<Change>, ReviewError> {
        let out = self.git.output(&[
            "diff-tree",
            "-r",
            "-z",
            "--no-renames",
            &self.from,
            &self.tip,
        ])?;
        Ok(gate::parse_raw(&out)
            .map_err(ReviewError::Repo)?
            .into_iter()
            .map(|(_, c)| c)
            .collect())
    }

    /// Every commit's changes and the net change, classified.
    fn gate(&mut self) -> Result<Vec<Finding>, ReviewError> {
        let mut args = vec!["rev-list".to_string()];
        args.extend(self.range());
        let list = self.git.output(&args)?;
        self.commits = list
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        let per_commit = self.git.with_input(
            &[
                "diff-tree",
                "--stdin",
                "-r",
                "-z",
                "--no-renames",
                "-m",
                "--root",
            ],
            &list,
        )?;
        let mut changes: Vec<Change> = gate::parse_raw(&per_commit)
            .map_err(ReviewError::Repo)?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        changes.extend(self.net.iter().cloned());
        let mut findings = std::mem::take(&mut self.findings);
        for c in &changes {
            let target = if c.new_is_symlink() && c.status != 'D' {
                Some(self.git.output(&["cat-file", "blob", &c.new_oid])?)
            } else {
                None
            };
            findings.extend(gate::classify(c, target.as_deref(), &self.protected));
        }
        findings.sort();
        findings.dedup_by(|a, b| a.kind == b.kind && a.path == b.path);
        Ok(findings)
    }

    /// Copy the branch into the host repository as `airlock/<name>`: objects only, checked by
    /// fsck; never the working tree, the index or the current branch.
    pub fn fetch_into_host(&self, force: bool) -> Result<FetchOutcome, ReviewError> {
        let host = Git::worktree(&self.info.host_repo);
        let refname = format!("refs/heads/{}", self.info.branch);
        let before = host.commit(&refname)?;
        if before.as_deref() == Some(self.tip.as_str()) {
            return Ok(FetchOutcome::UpToDate);
        }
        if let Some(b) = &before {
            if !force && !host.is_ancestor(b, &self.tip)? {
                return Ok(FetchOutcome::Diverged(b.clone()));
            }
        }
        let spec = format!("+refs/heads/review:{refname}");
        host.output(&[
            std::ffi::OsStr::new("-c"),
            "fetch.fsckObjects=true".as_ref(),
            "fetch".as_ref(),
            "--quiet".as_ref(),
            "--no-tags".as_ref(),
            "--no-write-fetch-head".as_ref(),
            "--no-recurse-submodules".as_ref(),
            self.dir.as_os_str(),
            spec.as_ref(),
        ])?;
        Ok(FetchOutcome::Fetched { before })
    }
}

fn rewritten(detail: &str) -> Finding {
    Finding {
        kind: Kind::HistoryRewritten,
        path: String::new(),
        detail: detail.into(),
    }
}

pub enum FetchOutcome {
    UpToDate,
    Fetched {
        before: Option<String>,
    },
    /// The host branch has commits the sandbox branch lacks (`--force` replaces it).
    Diverged(String),
}
