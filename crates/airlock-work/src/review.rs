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
    /// A microVM sandbox that is down while its guest's disk holds work the host has not
    /// taken out (its VM ended without a stop bringing the branch over).
    #[error("the work of {0} is still on its VM's disk: the VM ended without airlock taking its branch out (killed, or it stopped by itself)")]
    InGuest(String),
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
    /// What already came back: the tip of the last accepted fetch/sync and of the last sync.
    pub returned: Returned,
    /// Where the gate starts: the last accepted tip when the branch still contains it (what
    /// came back before was reviewed then), else `from`.
    pub gate_from: String,
}

/// `DIR/returned.json` (host-only): how far the branch has come back already.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Returned {
    /// The tip of the last fetch or sync that passed the gate (clean, or `--accept`ed).
    pub accepted: Option<String>,
    /// The tip of the last sync: the host checkout holds its files.
    pub synced: Option<String>,
}

pub const RETURNED_FILE: &str = "returned.json";

impl Returned {
    pub fn load(dir: &Path) -> Returned {
        read_small(&dir.join(RETURNED_FILE), 1 << 16)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, dir: &Path) -> Result<(), ReviewError> {
        let tmp = dir.join(".returned.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, dir.join(RETURNED_FILE)))
            .map_err(|e| ReviewError::Io(format!("record what came back: {e}")))
    }
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
pub fn read_small(p: &Path, max: u64) -> Option<Vec<u8>> {
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
    /// Open the review of sandbox `name` whose folder is `dir`; `protected` are the sandbox's
    /// `[workspace] protected` paths (flagged like agent configuration).
    pub fn open(dir: &Path, name: &str, protected: Vec<String>) -> Result<Review, ReviewError> {
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
        // A microVM sandbox's work arrives in DIR/pulled.git (see `pull`): its branch, when
        // there, is newer than the host-made clone's.
        let pulled = dir.join(crate::clone::PULLED_DIR);
        let from_guest = real_dir(&pulled).is_ok() && read_ref(&pulled, &info.branch).is_ok();
        let tip = if from_guest {
            read_ref(&pulled, &info.branch)?
        } else {
            read_ref(&git_dir, &info.branch)?
        };

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
        let mut alternates = String::new();
        if from_guest {
            alternates.push_str(&format!("{}\n", pulled.join("objects").display()));
        }
        alternates.push_str(&format!(
            "{}\n{}\n",
            objects.display(),
            host_objects(&host)?.display()
        ));
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
            protected,
            returned: Returned::load(dir),
            gate_from: String::new(),
        };
        if r.git.text(&["cat-file", "-t", &r.tip])? != "commit" {
            return Err(ReviewError::Repo(format!(
                "{} does not name a commit",
                r.info.branch
            )));
        }
        r.git.output(&["update-ref", "refs/heads/review", &r.tip])?;
        r.from = r.pick_from()?;
        r.net = r.changes_between(&r.from.clone())?;
        r.gate_from = match r.returned.accepted.clone() {
            Some(a) if r.from_commit && r.contains(&a)? => a,
            _ => r.from.clone(),
        };
        r.findings = r.gate()?;
        Ok(r)
    }

    /// Is `commit` a commit the branch contains?
    fn contains(&self, commit: &str) -> Result<bool, GitError> {
        Ok(is_oid(commit)
            && self.git.commit(commit)?.is_some()
            && self.git.is_ancestor(commit, &self.tip)?)
    }

    /// Where sync starts: the last synced tip when the branch still contains it (the host
    /// checkout already has everything up to there), else `from`.
    pub fn sync_base(&self) -> Result<String, GitError> {
        match &self.returned.synced {
            Some(s) if self.from_commit && self.contains(s)? => Ok(s.clone()),
            _ => Ok(self.from.clone()),
        }
    }

    /// Record that the branch came back up to the tip (after a fetch or sync passed the gate).
    pub fn record(&self, dir: &Path, synced: bool) -> Result<(), ReviewError> {
        let mut r = self.returned.clone();
        r.accepted = Some(self.tip.clone());
        if synced {
            r.synced = Some(self.tip.clone());
        }
        r.save(dir)
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
            vec![self.tip.clone(), format!("^{}", self.gate_from)]
        } else {
            vec![self.tip.clone()]
        }
    }

    /// The net change from `base` to the tip.
    pub fn changes_between(&self, base: &str) -> Result<Vec<Change>, ReviewError> {
        let out = self
            .git
            .output(&["diff-tree", "-r", "-z", "--no-renames", base, &self.tip])?;
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
        if self.gate_from == self.from {
            changes.extend(self.net.iter().cloned());
        } else {
            changes.extend(self.changes_between(&self.gate_from.clone())?);
        }
        let mut findings = std::mem::take(&mut self.findings);
        for c in &changes {
            let target = if c.new_is_symlink() && c.status != 'D' {
                Some(self.git.output(&["cat-file", "blob", &c.new_oid])?)
            } else {
                None
            };
            findings.extend(gate::classify(c, target.as_deref(), &self.protected));
        }
        // Links that leave the tree only through other links (chains): every symlink of the
        // tip that escapes once links are followed, unless it already did at the start.
        let tip_links = self.symlinks(&self.tip)?;
        if !tip_links.is_empty() {
            let from_links = if self.from_commit {
                self.symlinks(&self.gate_from)?
            } else {
                Default::default()
            };
            for (path, target) in &tip_links {
                let was =
                    from_links.get(path) == Some(target) && gate::chain_escapes(&from_links, path);
                if !was && gate::chain_escapes(&tip_links, path) {
                    findings.push(Finding {
                        kind: Kind::SymlinkOutside,
                        path: path.clone(),
                        detail: format!(
                            "-> {} (leaves the tree through the branch's other links)",
                            String::from_utf8_lossy(target)
                        ),
                    });
                }
            }
        }
        findings.sort();
        findings.dedup_by(|a, b| a.kind == b.kind && a.path == b.path);
        Ok(findings)
    }

    /// Every symlink of a commit's tree and its target.
    fn symlinks(
        &self,
        commit: &str,
    ) -> Result<std::collections::BTreeMap<String, Vec<u8>>, ReviewError> {
        let out = self
            .git
            .output(&["ls-tree", "-r", "-z", "--full-tree", commit])?;
        let mut want = Vec::new();
        for rec in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            // `<mode> SP <type> SP <oid> TAB <path>`
            let Some(tab) = rec.iter().position(|b| *b == b'\t') else {
                continue;
            };
            let meta = String::from_utf8_lossy(&rec[..tab]);
            let mut f = meta.split(' ');
            if f.next() != Some("120000") {
                continue;
            }
            let oid = f.nth(1).unwrap_or_default().to_string();
            want.push((String::from_utf8_lossy(&rec[tab + 1..]).into_owned(), oid));
        }
        let mut links = std::collections::BTreeMap::new();
        if want.is_empty() {
            return Ok(links);
        }
        let input: String = want.iter().map(|(_, o)| format!("{o}\n")).collect();
        let out = self
            .git
            .with_input(&["cat-file", "--batch"], input.as_bytes())?;
        let mut rest = &out[..];
        for (path, _) in want {
            // `<oid> SP blob SP <size> LF <content> LF`
            let nl = rest
                .iter()
                .position(|b| *b == b'\n')
                .ok_or_else(|| ReviewError::Repo("short cat-file output".into()))?;
            let header = String::from_utf8_lossy(&rest[..nl]).into_owned();
            let size: usize = header
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| ReviewError::Repo(format!("cat-file: {header}")))?;
            let body = rest
                .get(nl + 1..nl + 1 + size)
                .ok_or_else(|| ReviewError::Repo("short cat-file output".into()))?;
            links.insert(path, body.to_vec());
            rest = rest.get(nl + 2 + size..).unwrap_or_default();
        }
        Ok(links)
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
            // Asked of the review repository: it sees the host's objects and the sandbox's,
            // while the host repository does not have the sandbox's new commits yet.
            if !force && !self.git.is_ancestor(b, &self.tip)? {
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
