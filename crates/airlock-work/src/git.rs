//! Running host git with a controlled environment.
//!
//! Two kinds of repository are touched on the host:
//! - the user's own repository (trusted: its config and hooks are the user's), and
//! - a *review* repository airlock makes for each fetch/diff/sync: a bare repository of ours,
//!   with no config of the sandbox's, whose object store borrows the sandbox clone's objects as
//!   an alternate. git never runs inside the sandbox's repository on the host, so nothing the
//!   sandbox wrote there (hooks, `core.fsmonitor`, `core.pager`, filters, `.gitattributes`) can
//!   execute on the host: its objects are read as data only.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Variables from the caller's environment that would redirect git to another repository,
/// index or object store. Identity, editor, pager and ssh settings pass through.
fn redirecting(key: &OsStr) -> bool {
    let k = key.to_string_lossy();
    k.starts_with("GIT_")
        && !k.starts_with("GIT_AUTHOR_")
        && !k.starts_with("GIT_COMMITTER_")
        && !matches!(
            &*k,
            "GIT_PAGER" | "GIT_EDITOR" | "GIT_SSH" | "GIT_SSH_COMMAND"
        )
}

/// One repository to run git against.
#[derive(Debug, Clone)]
pub struct Git {
    /// `git -C`: the working directory (a worktree or anywhere for a bare `git_dir`).
    pub cwd: PathBuf,
    /// `GIT_DIR`, for the review repository.
    pub git_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git: {0}")]
    Spawn(std::io::Error),
    #[error("git {args}: {stderr}")]
    Failed { args: String, stderr: String },
}

impl Git {
    pub fn worktree(dir: &Path) -> Git {
        Git {
            cwd: dir.to_path_buf(),
            git_dir: None,
        }
    }

    pub fn bare(git_dir: &Path) -> Git {
        Git {
            cwd: git_dir.to_path_buf(),
            git_dir: Some(git_dir.to_path_buf()),
        }
    }

    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new("git");
        for (k, _) in std::env::vars_os() {
            if redirecting(&k) {
                c.env_remove(k);
            }
        }
        c.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .current_dir(&self.cwd);
        if let Some(d) = &self.git_dir {
            c.env("GIT_DIR", d);
        }
        c.args(args);
        c
    }

    /// Run to completion; stdout on success, stderr in the error.
    pub fn output<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Vec<u8>, GitError> {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .map_err(GitError::Spawn)?;
        check(args, out)
    }

    /// Like `output`, trimmed to a string.
    pub fn text<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String, GitError> {
        let out = self.output(args)?;
        Ok(String::from_utf8_lossy(&out).trim_end().to_string())
    }

    /// Exit status only (for `--quiet`/`--is-ancestor` style questions).
    pub fn succeeds<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<bool, GitError> {
        let st = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(GitError::Spawn)?;
        Ok(st.success())
    }

    /// Feed `input` on stdin.
    pub fn with_input<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        input: &[u8],
    ) -> Result<Vec<u8>, GitError> {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(GitError::Spawn)?;
        let mut stdin = child.stdin.take().expect("piped");
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().map_err(GitError::Spawn)?;
        let _ = writer.join();
        check(args, out)
    }

    /// The commit a revision names, or None when it does not resolve.
    pub fn commit(&self, rev: &str) -> Result<Option<String>, GitError> {
        let spec = format!("{rev}^{{commit}}");
        match self.output(&[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ]) {
            Ok(o) => Ok(Some(String::from_utf8_lossy(&o).trim().to_string())),
            Err(GitError::Failed { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn is_ancestor(&self, a: &str, b: &str) -> Result<bool, GitError> {
        self.succeeds(&["merge-base", "--is-ancestor", a, b])
    }
}

fn check<S: AsRef<OsStr>>(args: &[S], out: Output) -> Result<Vec<u8>, GitError> {
    if out.status.success() {
        return Ok(out.stdout);
    }
    let args = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if stderr.is_empty() {
        stderr = format!("exited with {}", out.status);
    }
    Err(GitError::Failed { args, stderr })
}

/// A full object id (SHA-1 or SHA-256), lower-case hex.
pub fn is_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A branch name git accepts (`git check-ref-format --branch` rules, checked by git itself).
pub fn valid_branch(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && Git::worktree(Path::new("/"))
            .succeeds(&["check-ref-format", &format!("refs/heads/{name}")])
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids() {
        assert!(is_oid(&"a".repeat(40)));
        assert!(is_oid(&"0".repeat(64)));
        assert!(!is_oid(&"A".repeat(40)));
        assert!(!is_oid("ref: refs/heads/x"));
        assert!(!is_oid(&"a".repeat(41)));
    }

    #[test]
    fn redirecting_variables_are_dropped() {
        for k in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_CONFIG_PARAMETERS",
        ] {
            assert!(redirecting(OsStr::new(k)), "{k}");
        }
        for k in ["GIT_AUTHOR_NAME", "GIT_PAGER", "HOME", "GIT_SSH_COMMAND"] {
            assert!(!redirecting(OsStr::new(k)), "{k}");
        }
    }

    #[test]
    fn branch_names() {
        assert!(valid_branch("feature/x"));
        assert!(!valid_branch("a..b"));
        assert!(!valid_branch("-x"));
        assert!(!valid_branch("a b"));
    }
}
