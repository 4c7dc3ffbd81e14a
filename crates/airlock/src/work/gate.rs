//! The review gate: which changes on a sandbox's branch need a human's `--accept` before they
//! enter the host repository. Pure classification over `git diff-tree --raw -z` records, so the
//! rules are table-tested here and the end-to-end tests prove git feeds them.

use serde::Serialize;

/// One raw change record (`:old_mode new_mode old_oid new_oid STATUS\0path\0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub old_mode: u32,
    pub new_mode: u32,
    pub old_oid: String,
    pub new_oid: String,
    pub status: char,
    pub path: String,
}

pub const MODE_SYMLINK: u32 = 0o120000;
pub const MODE_GITLINK: u32 = 0o160000;
const MODE_TYPE: u32 = 0o170000;
const MODE_FILE: u32 = 0o100000;

impl Change {
    pub fn new_is_symlink(&self) -> bool {
        self.new_mode & MODE_TYPE == MODE_SYMLINK
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// CI workflows and pipelines (run with the repository's secrets once pushed).
    CiWorkflow,
    /// Agent configuration (the protected list): an agent rewriting its own rules.
    AgentConfig,
    /// `.gitattributes`: filters, diff and merge drivers.
    GitAttributes,
    /// `.gitmodules` and submodule entries.
    Submodules,
    /// Hook managers' directories (husky, pre-commit, .githooks).
    Hooks,
    /// A symbolic link whose target is absolute or leaves the tree (or points into .git).
    SymlinkOutside,
    /// A file's executable bit switched on or off.
    ExecutableBit,
    /// The branch does not descend from where the sandbox started.
    HistoryRewritten,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::CiWorkflow => "CI workflow",
            Kind::AgentConfig => "agent configuration",
            Kind::GitAttributes => "git attributes",
            Kind::Submodules => "submodules",
            Kind::Hooks => "git hooks",
            Kind::SymlinkOutside => "symlink leaving the tree",
            Kind::ExecutableBit => "executable bit flipped",
            Kind::HistoryRewritten => "history rewritten",
        }
    }
}

/// A flagged change: what, where, and a detail line for humans.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub kind: Kind,
    pub path: String,
    pub detail: String,
}

const CI: &[&str] = &[
    ".github/",
    ".gitlab-ci.yml",
    ".gitlab/",
    ".circleci/",
    ".travis.yml",
    "jenkinsfile",
    "azure-pipelines.yml",
    ".azure-pipelines/",
    ".buildkite/",
    "bitbucket-pipelines.yml",
    ".drone.yml",
    ".woodpecker.yml",
    ".woodpecker/",
    ".gitea/",
    ".forgejo/",
];

const AGENT: &[&str] = &[
    ".claude/",
    ".codex/",
    ".gemini/",
    ".mcp.json",
    ".vscode/",
    ".idea/",
    ".envrc",
    "airlock.toml",
    ".cursor/",
    ".cursorrules",
    ".windsurf/",
    ".windsurfrules",
];

const HOOKS: &[&str] = &[".husky/", ".githooks/", ".pre-commit-config.yaml", ".git/"];

/// `pat` ending in `/` matches the directory and everything under it; otherwise the exact path.
/// ASCII case-insensitive: a case-insensitive checkout treats `.GitHub/` as `.github/`.
fn matches(path: &str, pat: &str) -> bool {
    let p = path.to_ascii_lowercase();
    match pat.strip_suffix('/') {
        Some(dir) => p == dir || p.starts_with(pat),
        None => p == pat,
    }
}

fn last_component(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Does a symlink at `path` with this target leave the tree (or reach into `.git`)?
pub fn symlink_escapes(path: &str, target: &[u8]) -> bool {
    if target.is_empty() || target.starts_with(b"/") {
        return true;
    }
    let Ok(target) = std::str::from_utf8(target) else {
        return true;
    };
    let mut stack: Vec<&str> = path.split('/').collect();
    stack.pop(); // the link itself
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return true;
                }
            }
            c => stack.push(c),
        }
    }
    stack
        .first()
        .is_some_and(|c| c.eq_ignore_ascii_case(".git"))
}

/// Classify one change. `link_target` is the new blob's content when the change adds or edits a
/// symlink (the caller reads it from the object store).
pub fn classify(c: &Change, link_target: Option<&[u8]>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut flag = |kind: Kind, detail: String| {
        out.push(Finding {
            kind,
            path: c.path.clone(),
            detail,
        })
    };
    let verb = match c.status {
        'A' => "added",
        'D' => "deleted",
        'T' => "type changed",
        _ => "modified",
    };
    if CI.iter().any(|p| matches(&c.path, p)) {
        flag(Kind::CiWorkflow, verb.into());
    }
    if AGENT.iter().any(|p| matches(&c.path, p)) || last_component(&c.path) == ".envrc" {
        flag(Kind::AgentConfig, verb.into());
    }
    if last_component(&c.path).eq_ignore_ascii_case(".gitattributes") {
        flag(Kind::GitAttributes, verb.into());
    }
    if last_component(&c.path).eq_ignore_ascii_case(".gitmodules") {
        flag(Kind::Submodules, verb.into());
    }
    if c.new_mode & MODE_TYPE == MODE_GITLINK && c.status != 'D' {
        flag(Kind::Submodules, format!("gitlink to {}", c.new_oid));
    }
    if HOOKS.iter().any(|p| matches(&c.path, p)) {
        flag(Kind::Hooks, verb.into());
    }
    if c.new_is_symlink() && c.status != 'D' {
        let t = link_target.unwrap_or_default();
        if symlink_escapes(&c.path, t) {
            flag(
                Kind::SymlinkOutside,
                format!("-> {}", String::from_utf8_lossy(t)),
            );
        }
    }
    let both_files = c.old_mode & MODE_TYPE == MODE_FILE && c.new_mode & MODE_TYPE == MODE_FILE;
    if both_files && (c.old_mode ^ c.new_mode) & 0o111 != 0 {
        flag(
            Kind::ExecutableBit,
            format!("{:o} -> {:o}", c.old_mode, c.new_mode),
        );
    }
    out
}

/// Parse `git diff-tree -r -z --no-renames [--stdin]` output. Commit header tokens (from
/// `--stdin`) are returned as `(Some(commit), change)` context for the records that follow.
pub fn parse_raw(out: &[u8]) -> Result<Vec<(Option<String>, Change)>, String> {
    let mut tokens = out.split(|b| *b == 0).filter(|t| !t.is_empty());
    let mut commit = None;
    let mut v = Vec::new();
    while let Some(t) = tokens.next() {
        let t = std::str::from_utf8(t).map_err(|_| "non-UTF-8 record header".to_string())?;
        let Some(meta) = t.strip_prefix(':') else {
            let id = t.trim();
            if super::git::is_oid(id) {
                commit = Some(id.to_string());
                continue;
            }
            return Err(format!("unexpected token {t:?}"));
        };
        let f: Vec<&str> = meta.split(' ').collect();
        if f.len() != 5 {
            return Err(format!("malformed record {t:?}"));
        }
        let mode = |s: &str| u32::from_str_radix(s, 8).map_err(|_| format!("bad mode {s:?}"));
        let path = tokens
            .next()
            .ok_or_else(|| "record without a path".to_string())?;
        v.push((
            commit.clone(),
            Change {
                old_mode: mode(f[0])?,
                new_mode: mode(f[1])?,
                old_oid: f[2].to_string(),
                new_oid: f[3].to_string(),
                status: f[4].chars().next().unwrap_or('M'),
                path: String::from_utf8_lossy(path).into_owned(),
            },
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(status: char, old: u32, new: u32, path: &str) -> Change {
        Change {
            old_mode: old,
            new_mode: new,
            old_oid: "0".repeat(40),
            new_oid: "1".repeat(40),
            status,
            path: path.into(),
        }
    }

    fn kinds(c: &Change, t: Option<&[u8]>) -> Vec<Kind> {
        classify(c, t).into_iter().map(|f| f.kind).collect()
    }

    #[test]
    fn ordinary_changes_pass() {
        for p in [
            "src/main.rs",
            "README.md",
            "github/x",
            "docs/.github.md",
            "a/.claudex",
        ] {
            assert!(
                kinds(&ch('M', 0o100644, 0o100644, p), None).is_empty(),
                "{p}"
            );
        }
        // A new executable file is not a flip.
        assert!(kinds(&ch('A', 0, 0o100755, "run.sh"), None).is_empty());
        // A symlink inside the tree is fine.
        assert!(kinds(&ch('A', 0, MODE_SYMLINK, "a/b/link"), Some(b"../c")).is_empty());
    }

    #[test]
    fn each_flag() {
        let table: &[(Change, Option<&[u8]>, Kind)] = &[
            (
                ch('A', 0, 0o100644, ".github/workflows/ci.yml"),
                None,
                Kind::CiWorkflow,
            ),
            (
                ch('M', 0o100644, 0o100644, ".GitHub/workflows/x.yml"),
                None,
                Kind::CiWorkflow,
            ),
            (
                ch('M', 0o100644, 0o100644, ".gitlab-ci.yml"),
                None,
                Kind::CiWorkflow,
            ),
            (ch('D', 0o100644, 0, "Jenkinsfile"), None, Kind::CiWorkflow),
            (
                ch('A', 0, 0o100644, ".claude/settings.json"),
                None,
                Kind::AgentConfig,
            ),
            (ch('A', 0, 0o100644, ".mcp.json"), None, Kind::AgentConfig),
            (
                ch('A', 0, 0o100644, "sub/dir/.envrc"),
                None,
                Kind::AgentConfig,
            ),
            (
                ch('M', 0o100644, 0o100644, "airlock.toml"),
                None,
                Kind::AgentConfig,
            ),
            (
                ch('A', 0, 0o100644, "lib/.gitattributes"),
                None,
                Kind::GitAttributes,
            ),
            (ch('A', 0, 0o100644, ".gitmodules"), None, Kind::Submodules),
            (ch('A', 0, MODE_GITLINK, "vendor/x"), None, Kind::Submodules),
            (ch('A', 0, 0o100755, ".husky/pre-commit"), None, Kind::Hooks),
            (
                ch('A', 0, 0o100644, ".pre-commit-config.yaml"),
                None,
                Kind::Hooks,
            ),
            (
                ch('A', 0, MODE_SYMLINK, "l"),
                Some(b"/etc/passwd"),
                Kind::SymlinkOutside,
            ),
            (
                ch('A', 0, MODE_SYMLINK, "a/l"),
                Some(b"../../x"),
                Kind::SymlinkOutside,
            ),
            (
                ch('A', 0, MODE_SYMLINK, "a/l"),
                Some(b"../.git/config"),
                Kind::SymlinkOutside,
            ),
            (
                ch('T', 0o100644, MODE_SYMLINK, "f"),
                Some(b"/home"),
                Kind::SymlinkOutside,
            ),
            (
                ch('A', 0, MODE_SYMLINK, "l"),
                Some(b""),
                Kind::SymlinkOutside,
            ),
            (
                ch('M', 0o100644, 0o100755, "build.sh"),
                None,
                Kind::ExecutableBit,
            ),
            (
                ch('M', 0o100755, 0o100644, "bin/x"),
                None,
                Kind::ExecutableBit,
            ),
        ];
        for (c, t, k) in table {
            assert!(kinds(c, *t).contains(k), "{c:?} should be flagged {k:?}");
        }
    }

    #[test]
    fn symlink_walks() {
        assert!(!symlink_escapes("a/b/l", b"../../x"));
        assert!(symlink_escapes("a/b/l", b"../../../x"));
        assert!(!symlink_escapes("l", b"./x/./y"));
        assert!(symlink_escapes("l", b"x/../../y"));
        assert!(symlink_escapes("l", b".git/hooks/pre-commit"));
        assert!(symlink_escapes("l", &[0xff]));
    }

    #[test]
    fn parses_diff_tree_output() {
        let raw = b"f1dff1862855da5f78333c26b6ffe0855404aaa5\0:100644 100755 7898192261\
3b2afb6025042ff6bd878ac1994e85 78981922613b2afb6025042ff6bd878ac1994e85 M\0a\0:000000 120000 \
0000000000000000000000000000000000000000 61780798228d17af2d34fce4cfbdf35556832472 A\0x y\0";
        let v = parse_raw(raw).expect("parses");
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0].0.as_deref(),
            Some("f1dff1862855da5f78333c26b6ffe0855404aaa5")
        );
        assert_eq!(v[0].1.new_mode, 0o100755);
        assert_eq!(v[1].1.path, "x y");
        assert_eq!(v[1].1.status, 'A');
        assert!(v[1].1.new_is_symlink());
        assert!(parse_raw(b":100644 100644 a b\0").is_err());
        assert!(parse_raw(b"junk\0").is_err());
    }
}
