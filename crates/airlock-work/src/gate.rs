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

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// CI workflows and pipelines (run with the repository's secrets once pushed).
    CiWorkflow,
    /// Agent, editor and airlock configuration at any depth: an agent rewriting its own rules.
    AgentConfig,
    /// Package-manager and toolchain configuration at any depth (obeyed by the next build).
    ToolConfig,
    /// `.gitattributes`: filters, diff and merge drivers.
    GitAttributes,
    /// `.gitmodules` and submodule entries.
    Submodules,
    /// Hook managers' directories (husky, pre-commit, .githooks).
    Hooks,
    /// A symbolic link whose target is absolute or leaves the tree (or points into .git),
    /// alone or through the tree's other links.
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
            Kind::ToolConfig => "tool configuration",
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
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
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

/// Configuration a common developer tool discovers by walking up from the directory it starts
/// in, and obeys — so it takes effect for commands that do not look like running the project's
/// code (`git status`, `cd` with direnv, opening an editor, `cargo build`, `npm install`,
/// starting an agent). Matched at **any depth** (`sub/airlock.toml` widens an `airlock run`
/// started in `sub/`), ASCII case-insensitively. Project code the user runs on purpose
/// (Makefile, package.json scripts, build.rs, tests) is reviewed in the diff like any source
/// and is not listed here. The rule, the list and its reasons: docs/threat-model.md.
const AGENT: &[&str] = &[
    ".claude/",
    ".codex/",
    ".gemini/",
    ".mcp.json",
    ".vscode/",
    ".idea/",
    ".zed/",
    ".envrc",
    "airlock.toml",
    ".cursor/",
    ".cursorrules",
    ".windsurf/",
    ".windsurfrules",
    ".devcontainer/",
    ".devcontainer.json",
    ".nvim.lua",
    ".nvimrc",
    ".exrc",
    ".dir-locals.el",
];

/// Package-manager and toolchain configuration: redirects registries, wraps or replaces the
/// compiler, runs scripts on install (e.g. `.cargo/config.toml` `rustc-wrapper`, `.npmrc`
/// `script-shell`, `.yarnrc.yml` `yarnPath`, `.pnpmfile.cjs`, a `rust-toolchain.toml` path
/// toolchain, mise/asdf tool definitions and tasks).
const TOOLS: &[&str] = &[
    ".cargo/config.toml",
    ".cargo/config",
    "rust-toolchain.toml",
    "rust-toolchain",
    ".npmrc",
    ".yarnrc",
    ".yarnrc.yml",
    ".pnpmfile.cjs",
    "bunfig.toml",
    ".tool-versions",
    "mise.toml",
    ".mise.toml",
    "mise.local.toml",
    ".mise.local.toml",
    ".mise/",
    ".config/mise/",
    ".config/mise.toml",
    ".bazelrc",
    ".lfsconfig",
];

const HOOKS: &[&str] = &[
    ".husky/",
    ".githooks/",
    ".pre-commit-config.yaml",
    "lefthook.yml",
    ".lefthook.yml",
    "lefthook-local.yml",
    ".overcommit.yml",
    ".git/",
];

/// `pat` ending in `/` matches the directory and everything under it; otherwise the exact path.
/// ASCII case-insensitive: a case-insensitive checkout treats `.GitHub/` as `.github/`.
fn matches(path: &str, pat: &str) -> bool {
    let p = path.to_ascii_lowercase();
    match pat.strip_suffix('/') {
        Some(dir) => p == dir || p.starts_with(pat),
        None => p == pat,
    }
}

/// `matches` at the root or below any directory of the path.
fn matches_anywhere(path: &str, pat: &str) -> bool {
    let mut rest = path;
    loop {
        if matches(rest, pat) {
            return true;
        }
        match rest.split_once('/') {
            Some((_, r)) => rest = r,
            None => return false,
        }
    }
}

fn last_component(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

pub use airlock_model::text::{shown, shown_but};

/// Could `path` match a configuration pattern at all: does one of its components (ASCII
/// lowercase) begin a pattern?
fn may_be_config(path: &str) -> bool {
    static FIRSTS: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    let firsts = FIRSTS.get_or_init(|| {
        AGENT
            .iter()
            .chain(TOOLS)
            .chain(HOOKS)
            .chain(CI)
            .chain(&[".gitattributes", ".gitmodules"])
            .filter_map(|p| p.split('/').next())
            .collect()
    });
    let lower = path.to_ascii_lowercase();
    lower.split('/').any(|c| firsts.contains(c))
}

/// The gate's kind for configuration a tool obeys at `path` (relative, `/`-separated), at any
/// depth: what the bind-mode check on the way out looks for in the host checkout.
pub fn config_kind(path: &str) -> Option<Kind> {
    // Most paths of a checkout (sources, build outputs) have no component any pattern starts
    // with: one lowercase and a few set lookups rule them out before the full matching.
    if !may_be_config(path) {
        return None;
    }
    if AGENT.iter().any(|p| matches_anywhere(path, p)) {
        return Some(Kind::AgentConfig);
    }
    if TOOLS.iter().any(|p| matches_anywhere(path, p)) {
        return Some(Kind::ToolConfig);
    }
    if HOOKS.iter().any(|p| matches_anywhere(path, p)) {
        return Some(Kind::Hooks);
    }
    let last = last_component(path);
    if last.eq_ignore_ascii_case(".gitattributes") {
        return Some(Kind::GitAttributes);
    }
    if last.eq_ignore_ascii_case(".gitmodules") {
        return Some(Kind::Submodules);
    }
    if CI.iter().any(|p| matches(path, p)) {
        return Some(Kind::CiWorkflow);
    }
    None
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

/// Does the symlink at `link` leave the tree (or reach into `.git`) once every symlink of the
/// tree it meets on the way is followed too? `links` maps each symlink path of the tree to its
/// target. Catches chains whose links each look harmless: `a/x -> ..` plus `dist -> a/x/..`.
/// More than 40 hops (a loop) counts as leaving.
pub fn chain_escapes(links: &std::collections::BTreeMap<String, Vec<u8>>, link: &str) -> bool {
    let Some(first) = links.get(link) else {
        return false;
    };
    let mut stack: Vec<String> = link.split('/').map(str::to_string).collect();
    stack.pop();
    let mut queue: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let push_target = |queue: &mut std::collections::VecDeque<String>, t: &[u8]| -> bool {
        let Ok(t) = std::str::from_utf8(t) else {
            return false;
        };
        if t.is_empty() || t.starts_with('/') {
            return false;
        }
        for c in t.split('/').rev() {
            queue.push_front(c.to_string());
        }
        true
    };
    if !push_target(&mut queue, first) {
        return true;
    }
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                if stack.pop().is_none() {
                    return true;
                }
                continue;
            }
            _ => stack.push(c),
        }
        if stack
            .first()
            .is_some_and(|c| c.eq_ignore_ascii_case(".git"))
        {
            return true;
        }
        if let Some(t) = links.get(&stack.join("/")) {
            hops += 1;
            if hops > 40 {
                return true;
            }
            stack.pop();
            if !push_target(&mut queue, t) {
                return true;
            }
        }
    }
    false
}

/// Classify one change. `link_target` is the new blob's content when the change adds or edits a
/// symlink (the caller reads it from the object store).
pub fn classify(c: &Change, link_target: Option<&[u8]>, extra: &[String]) -> Vec<Finding> {
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
    if AGENT.iter().any(|p| matches_anywhere(&c.path, p)) {
        flag(Kind::AgentConfig, verb.into());
    }
    if TOOLS.iter().any(|p| matches_anywhere(&c.path, p)) {
        flag(Kind::ToolConfig, verb.into());
    }
    let protected = |p: &String| {
        let p = p.trim_end_matches('/');
        c.path == p || c.path.starts_with(&format!("{p}/"))
    };
    if extra.iter().any(protected) {
        flag(Kind::AgentConfig, format!("{verb} (workspace.protected)"));
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
    if HOOKS.iter().any(|p| matches_anywhere(&c.path, p)) {
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
        classify(c, t, &[]).into_iter().map(|f| f.kind).collect()
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
    fn configured_protected_paths() {
        let extra = vec!["secrets".to_string(), "Makefile".to_string()];
        let f = classify(&ch('M', 0o100644, 0o100644, "secrets/a"), None, &extra);
        assert_eq!(f[0].kind, Kind::AgentConfig);
        assert!(!classify(&ch('M', 0o100644, 0o100644, "Makefile"), None, &extra).is_empty());
        assert!(classify(&ch('M', 0o100644, 0o100644, "secretsx"), None, &extra).is_empty());
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
    fn symlink_chains() {
        let links = |v: &[(&str, &str)]| -> std::collections::BTreeMap<String, Vec<u8>> {
            v.iter()
                .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec()))
                .collect()
        };
        // Each looks inside on its own; together they leave the tree.
        let l = links(&[("a/x", ".."), ("dist", "a/x/..")]);
        assert!(!symlink_escapes("a/x", b".."));
        assert!(!symlink_escapes("dist", b"a/x/.."));
        assert!(!chain_escapes(&l, "a/x"));
        assert!(chain_escapes(&l, "dist"));
        // Deeper chains and a link to an escaping link.
        let l = links(&[("p/q/up", "../.."), ("r", "p/q/up/.."), ("s", "r")]);
        assert!(chain_escapes(&l, "r"));
        assert!(chain_escapes(&l, "s"));
        assert!(!chain_escapes(&l, "p/q/up"));
        // Into .git through a link; loops; absolute targets met on the way.
        let l = links(&[("g", "."), ("h", "g/.git/config")]);
        assert!(chain_escapes(&l, "h"));
        let l = links(&[("x", "y"), ("y", "x")]);
        assert!(chain_escapes(&l, "x"));
        let l = links(&[("abs", "/etc"), ("via", "abs/passwd")]);
        assert!(chain_escapes(&l, "via"));
        // Ordinary links through links stay inside.
        let l = links(&[
            ("lib", "vendor/lib"),
            ("vendor/lib", "../src"),
            ("use", "lib/x"),
        ]);
        assert!(!chain_escapes(&l, "use"));
    }

    #[test]
    fn the_quick_check_never_hides_a_match() {
        // Every pattern, at the root and nested, passes the quick check; ordinary paths do not.
        for p in AGENT.iter().chain(TOOLS).chain(HOOKS).chain(CI) {
            let file = if p.ends_with('/') {
                format!("{p}x")
            } else {
                p.to_string()
            };
            assert!(may_be_config(&file), "{file}");
            assert!(may_be_config(&format!("a/b/{file}")), "{file}");
        }
        for p in [
            "src/main.rs",
            "target/debug/deps/libx.rlib",
            "node_modules/a/index.js",
        ] {
            assert!(!may_be_config(p), "{p}");
            assert_eq!(config_kind(p), None, "{p}");
        }
    }

    #[test]
    fn nested_configuration_at_any_depth() {
        let table: &[(&str, Kind)] = &[
            ("sub/airlock.toml", Kind::AgentConfig),
            ("a/b/.claude/settings.json", Kind::AgentConfig),
            ("deep/er/.mcp.json", Kind::AgentConfig),
            ("x/.VSCode/tasks.json", Kind::AgentConfig),
            ("x/.devcontainer/devcontainer.json", Kind::AgentConfig),
            ("sub/.cargo/config.toml", Kind::ToolConfig),
            ("web/.npmrc", Kind::ToolConfig),
            ("web/.yarnrc.yml", Kind::ToolConfig),
            ("web/.pnpmfile.cjs", Kind::ToolConfig),
            ("tools/.tool-versions", Kind::ToolConfig),
            ("tools/mise.toml", Kind::ToolConfig),
            ("lib/rust-toolchain.toml", Kind::ToolConfig),
            ("lib/.husky/pre-commit", Kind::Hooks),
            ("lib/.pre-commit-config.yaml", Kind::Hooks),
            ("lib/lefthook.yml", Kind::Hooks),
        ];
        for (p, k) in table {
            assert!(
                kinds(&ch('A', 0, 0o100644, p), None).contains(k),
                "{p} should be flagged {k:?}"
            );
        }
        for p in [
            "src/Makefile",
            "src/package.json",
            "src/build.rs",
            "docs/airlock.toml.md",
            "notes/cargo/config.toml",
            "x/my.npmrc",
        ] {
            assert!(kinds(&ch('A', 0, 0o100644, p), None).is_empty(), "{p}");
        }
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
