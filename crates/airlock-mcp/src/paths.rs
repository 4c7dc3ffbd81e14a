//! Paths the file tools accept inside a sandbox. Two checks, both needed:
//! 1. here, lexically: relative paths are under /workspace, no `..`, no NUL, and the result is
//!    strictly beneath one of the allowed roots;
//! 2. inside the sandbox (the static helper's `fs read`/`fs write`, run by `airlock exec` with
//!    the sandbox's own credentials, seccomp and Landlock, given these `ROOTS`): the file is
//!    opened first and the path of the *opened* descriptor is checked against the same roots, so
//!    a symlink planted inside the sandbox cannot lead the tool elsewhere, not even by swapping
//!    it mid-call; a write never goes through a symlink in the last component.
//!
//! Neither check is what keeps host files safe: the sandbox side is resolved in the sandbox's
//! own mount namespace, where host paths do not exist. The roots keep the tools to the sandbox's
//! working areas (not its curated /etc, /proc, or read-only host binds).

use std::fmt;

/// Where file tools may read and write inside a sandbox.
pub const ROOTS: &[&str] = &["/workspace", "/tmp", "/home/agent", "/root"];

/// Longest path accepted (PATH_MAX).
const MAX_PATH: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    Empty,
    TooLong,
    Nul,
    Traversal,
    OutsideRoots(String),
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Empty => f.write_str("the path is empty"),
            PathError::TooLong => write!(f, "the path is longer than {MAX_PATH} bytes"),
            PathError::Nul => f.write_str("the path contains a NUL byte"),
            PathError::Traversal => {
                f.write_str("`..` is not allowed in paths (name the file directly)")
            }
            PathError::OutsideRoots(p) => write!(
                f,
                "{p} is outside the allowed roots ({}); relative paths are under /workspace",
                ROOTS.join(", ")
            ),
        }
    }
}

/// The absolute, normalized path inside the sandbox for a requested `path`.
pub fn resolve(path: &str) -> Result<String, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    if path.contains('\0') {
        return Err(PathError::Nul);
    }
    let mut parts: Vec<&str> = Vec::new();
    if !path.starts_with('/') {
        parts.push("workspace");
    }
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(PathError::Traversal),
            c => parts.push(c),
        }
    }
    let abs = format!("/{}", parts.join("/"));
    if !ROOTS.iter().any(|r| beneath(&abs, r)) {
        return Err(PathError::OutsideRoots(abs));
    }
    Ok(abs)
}

/// `p` is strictly beneath `root`.
fn beneath(p: &str, root: &str) -> bool {
    p.strip_prefix(root)
        .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_under_the_workspace() {
        assert_eq!(resolve("src/main.rs"), Ok("/workspace/src/main.rs".into()));
        assert_eq!(resolve("./a//b/./c"), Ok("/workspace/a/b/c".into()));
        assert_eq!(resolve("/tmp/x"), Ok("/tmp/x".into()));
        assert_eq!(
            resolve("/home/agent/.bashrc"),
            Ok("/home/agent/.bashrc".into())
        );
    }

    #[test]
    fn traversal_is_refused() {
        for p in [
            "../etc/passwd",
            "/workspace/../etc/shadow",
            "a/../../b",
            "/tmp/..",
        ] {
            assert_eq!(resolve(p), Err(PathError::Traversal), "{p}");
        }
    }

    #[test]
    fn outside_the_roots_is_refused() {
        for p in [
            "/etc/passwd",
            "/",
            "/workspace",
            "/workspacex/a",
            "/proc/1/root",
            "/tmpfoo",
        ] {
            assert!(matches!(resolve(p), Err(PathError::OutsideRoots(_))), "{p}");
        }
    }

    #[test]
    fn bad_strings_are_refused() {
        assert_eq!(resolve(""), Err(PathError::Empty));
        assert_eq!(resolve("a\0b"), Err(PathError::Nul));
        assert_eq!(resolve(&"a/".repeat(3000)), Err(PathError::TooLong));
    }
}
