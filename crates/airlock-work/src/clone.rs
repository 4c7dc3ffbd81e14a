//! Clone mode: the sandbox's own git clone of the host repository, made on the host at create
//! time, on branch `airlock/<name>` from the host's HEAD, with the host's uncommitted changes
//! (tracked and untracked, .gitignore respected) as a first commit. The host repository is only
//! read: `git clone` and `ls-files`/`diff` with optional locks off, so not even its index is
//! refreshed.

use super::git::{Git, GitError};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What the host knows about a clone-mode sandbox (`DIR/clone.json`, host-only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CloneInfo {
    /// The host repository's top level.
    pub host_repo: PathBuf,
    /// `airlock/<name>`.
    pub branch: String,
    /// The host's HEAD commit at create time (None: the host repository had no commit yet).
    pub base: Option<String>,
    /// Where the sandbox branch started: `base`, or the commit of the host's uncommitted
    /// changes on top of it. None only for an empty repository with nothing to commit.
    pub start: Option<String>,
}

pub const INFO_FILE: &str = "clone.json";
pub const WORKSPACE_DIR: &str = "workspace";
/// The repository a microVM sandbox's work is received into (in its folder; see `pull`).
pub const PULLED_DIR: &str = "pulled.git";

impl CloneInfo {
    pub fn load(dir: &Path) -> Option<CloneInfo> {
        let b = std::fs::read(dir.join(INFO_FILE)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(".clone.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, dir.join(INFO_FILE))
    }
}

/// The top level of the git work tree containing `dir`, if any.
pub fn toplevel(dir: &Path) -> Option<PathBuf> {
    // Fails outside a work tree (and in a bare repository or inside .git).
    Git::worktree(dir)
        .text(&["rev-parse", "--show-toplevel"])
        .ok()
        .filter(|t| !t.is_empty())
        .map(PathBuf::from)
}

#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("{0}")]
    Io(String),
}

fn io(what: &str, p: &Path) -> impl Fn(std::io::Error) -> CloneError {
    let (what, p) = (what.to_string(), p.display().to_string());
    move |e| CloneError::Io(format!("{what} {p}: {e}"))
}

/// `-z` NUL-separated paths.
fn paths(out: &[u8]) -> Vec<String> {
    out.split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// The committer identity for the snapshot commit: the host user's, else airlock's.
fn identity(host: &Git) -> (String, String) {
    let get = |k: &str| {
        host.text(&["config", "--get", k])
            .ok()
            .filter(|v| !v.is_empty())
    };
    (
        get("user.name").unwrap_or_else(|| "airlock".into()),
        get("user.email").unwrap_or_else(|| "airlock@localhost".into()),
    )
}

/// Copy one path of the host work tree into the clone's work tree (regular files with their
/// executable bit, symlinks as symlinks; anything else is left out). Missing on the host: the
/// change is a deletion.
fn copy_entry(host: &Path, clone: &Path, rel: &str) -> Result<(), CloneError> {
    let src = host.join(rel);
    let dst = clone.join(rel);
    let meta = match std::fs::symlink_metadata(&src) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match std::fs::remove_file(&dst) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io("remove", &dst)(e)),
            };
        }
        Err(e) => return Err(io("read", &src)(e)),
    };
    if meta.is_dir() {
        return Ok(()); // a submodule or nested repository: not part of the snapshot
    }
    copy_tree(&src, &dst)?;
    if meta.is_file() {
        // git records only the executable bit.
        let mode = if meta.mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))
            .map_err(io("chmod", &dst))?;
    }
    Ok(())
}

/// Make `DIR/workspace` and `DIR/clone.json` for sandbox `name` from the repository at `repo`.
pub fn prepare(repo: &Path, dir: &Path, name: &str) -> Result<CloneInfo, CloneError> {
    let host = Git::worktree(repo);
    let top = PathBuf::from(host.text(&["rev-parse", "--show-toplevel"])?);
    let host = Git::worktree(&top);
    let base = host.commit("HEAD")?;
    let ws = dir.join(WORKSPACE_DIR);
    if ws.exists() {
        std::fs::remove_dir_all(&ws).map_err(io("remove", &ws))?;
    }
    // --template= : no sample hooks; --no-hardlinks: the sandbox never shares an inode with the
    // host's object store.
    Git::worktree(dir).output(&[
        std::ffi::OsStr::new("clone"),
        "--quiet".as_ref(),
        "--no-hardlinks".as_ref(),
        "--no-checkout".as_ref(),
        "--template=".as_ref(),
        top.as_os_str(),
        ws.as_os_str(),
    ])?;
    let clone = Git::worktree(&ws);
    clone.output(&["remote", "remove", "origin"])?;
    let branch = format!("airlock/{name}");
    match &base {
        Some(b) => clone.output(&["checkout", "--quiet", "-B", &branch, b])?,
        None => clone.output(&["symbolic-ref", "HEAD", &format!("refs/heads/{branch}")])?,
    };

    // The host's uncommitted state: tracked changes against HEAD (staged or not, deletions
    // included) and untracked files that .gitignore does not exclude.
    let mut changed = match &base {
        // Plumbing: unlike `git diff`, diff-index never rewrites the host's index. Stat-dirty
        // paths may be listed too; copying them again changes nothing.
        Some(_) => {
            paths(&host.output(&["diff-index", "--name-only", "-z", "--no-renames", "HEAD"])?)
        }
        None => paths(&host.output(&["ls-files", "-z", "--cached"])?),
    };
    changed.extend(paths(&host.output(&[
        "ls-files",
        "-z",
        "--others",
        "--exclude-standard",
    ])?));
    changed.sort();
    changed.dedup();
    for rel in &changed {
        copy_entry(&top, &ws, rel)?;
    }
    let (uname, email) = identity(&host);
    clone.output(&["config", "user.name", &uname])?;
    clone.output(&["config", "user.email", &email])?;
    if !changed.is_empty() {
        clone.output(&["add", "--all"])?;
        if !clone.succeeds(&["diff", "--cached", "--quiet"])? {
            clone.output(&[
                "commit",
                "--quiet",
                "--no-verify",
                "-m",
                "airlock: uncommitted changes from the host",
            ])?;
        }
    }
    // An empty hooks directory, as git makes one (the clone is made with --template=).
    let hooks = ws.join(".git/hooks");
    std::fs::create_dir_all(&hooks).map_err(io("create", &hooks))?;
    let info = CloneInfo {
        host_repo: top,
        branch,
        base,
        start: clone.commit("HEAD")?,
    };
    info.save(dir).map_err(io("write", &dir.join(INFO_FILE)))?;
    Ok(info)
}

/// Hand a tree to the sandbox user (root-run sandboxes: its host uid), without following links.
pub fn chown_tree(root: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(root, Some(uid), Some(gid))?;
    let meta = std::fs::symlink_metadata(root)?;
    if meta.is_dir() {
        for e in std::fs::read_dir(root)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Copy `context` paths (untracked project files such as `.claude/` or notes) from the project
/// over the clone's work tree: regular files, directories and symlinks that stay inside.
pub fn copy_context(project: &Path, ws: &Path, rels: &[PathBuf]) -> Result<usize, CloneError> {
    let mut n = 0;
    for rel in rels {
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(CloneError::Io(format!(
                "context path {} must be relative to the project, without `..`",
                rel.display()
            )));
        }
        n += copy_tree(&project.join(rel), &ws.join(rel))?;
    }
    Ok(n)
}

/// Copy a tree (files, dirs, symlinks as links); returns the number of files. Missing: nothing.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<usize, CloneError> {
    let meta = match std::fs::symlink_metadata(src) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("read", src)(e)),
    };
    if let Some(p) = dst.parent() {
        std::fs::create_dir_all(p).map_err(io("create", p))?;
    }
    if std::fs::symlink_metadata(dst).is_ok_and(|m| !m.is_dir() || !meta.is_dir()) {
        let _ = std::fs::remove_file(dst).or_else(|_| std::fs::remove_dir_all(dst));
    }
    if meta.file_type().is_symlink() {
        let to = std::fs::read_link(src).map_err(io("read", src))?;
        std::os::unix::fs::symlink(&to, dst).map_err(io("create", dst))?;
        Ok(1)
    } else if meta.is_dir() {
        std::fs::create_dir_all(dst).map_err(io("create", dst))?;
        let mut n = 0;
        for e in std::fs::read_dir(src).map_err(io("read", src))? {
            let e = e.map_err(io("read", src))?;
            n += copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        Ok(n)
    } else if meta.is_file() {
        std::fs::copy(src, dst).map_err(io("copy", src))?;
        Ok(1)
    } else {
        Ok(0)
    }
}

/// A reference repository for `[[workspace.repos]]`: a writable copy in the sandbox's home
/// (a git clone when it is a repository, else a plain copy); changes stay in the sandbox.
/// Made once: an existing destination is kept.
pub fn clone_reference(source: &Path, dest: &Path) -> Result<(), CloneError> {
    if dest.exists() {
        return Ok(());
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    }
    if toplevel(source).is_some() {
        Git::worktree(source).output(&[
            std::ffi::OsStr::new("clone"),
            "--quiet".as_ref(),
            "--no-hardlinks".as_ref(),
            "--template=".as_ref(),
            source.as_os_str(),
            dest.as_os_str(),
        ])?;
    } else if source.is_dir() {
        copy_tree(source, dest)?;
    } else {
        return Err(CloneError::Io(format!(
            "{} is not a directory",
            source.display()
        )));
    }
    Ok(())
}
