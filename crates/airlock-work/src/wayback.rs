//! Bind mode's way back: the sandbox writes the host's own checkout, so whatever it leaves
//! there is read — and some of it run — by the user's next `git`, `cd` (direnv), editor or
//! build. The kernel prevents what it can (the planner pins `.git` as a mount point, so it
//! cannot be renamed away from its read-only `config`, `hooks` and `info`); this module checks
//! the rest on the way out: a snapshot of everything git consults besides data (the `.git`
//! entry itself, config, `config.worktree`, `commondir`, hooks, `info/`, alternates, included
//! config files, submodule and worktree gitdirs, rebase/sequencer state, nested `.git` entries)
//! and of every tool-configuration file at any depth (the review gate's list), taken before
//! the sandbox starts and compared after it ends.
//!
//! Git control changes are attacks, not work: they are undone (restored from the snapshot, or
//! moved aside to `NAME.airlock-quarantine`) and reported, and the command fails (121).
//! Tool-configuration changes may be the work the user asked for: they are listed loudly.

use super::gate;
use sha2::Digest;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Files bigger than this are compared by digest only and cannot be restored.
const KEEP_BYTES: u64 = 1 << 20;
/// The tree walk stops after this many entries (the check then says it was partial).
pub const MAX_ENTRIES: usize = 300_000;
pub const QUARANTINE_SUFFIX: &str = ".airlock-quarantine";
/// A named bind-mode sandbox's last report (`DIR/wayback.json`), shown by `stop`.
pub const REPORT_FILE: &str = "wayback.json";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir {
        dev: u64,
        ino: u64,
    },
    File {
        mode: u32,
        digest: [u8; 32],
        bytes: Option<Vec<u8>>,
    },
    Link(Vec<u8>),
    Other,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Relative path -> entry: what git consults.
    git: BTreeMap<String, Entry>,
    /// Relative path -> entry: tool configuration at any depth.
    config: BTreeMap<String, Entry>,
    pub partial: bool,
}

/// One difference found on the way out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    pub path: String,
    /// added, changed, removed
    pub what: String,
    /// For git control: what was done about it. For configuration: the gate's label.
    pub note: String,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub git: Vec<Change>,
    pub config: Vec<Change>,
    pub partial: bool,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.git.is_empty() && self.config.is_empty()
    }
}

fn entry(p: &Path, keep: bool) -> Option<Entry> {
    let m = std::fs::symlink_metadata(p).ok()?;
    let ft = m.file_type();
    Some(if ft.is_symlink() {
        Entry::Link(
            std::fs::read_link(p)
                .map(|t| t.into_os_string().into_encoded_bytes())
                .unwrap_or_default(),
        )
    } else if ft.is_dir() {
        Entry::Dir {
            dev: m.dev(),
            ino: m.ino(),
        }
    } else if ft.is_file() {
        let bytes = crate::review::read_small(p, KEEP_BYTES + 1);
        let digest = match &bytes {
            Some(b) if (b.len() as u64) <= KEEP_BYTES => sha2::Sha256::digest(b).into(),
            _ => {
                let mut h = sha2::Sha256::new();
                use std::os::unix::fs::OpenOptionsExt;
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(p);
                if let Ok(mut f) = f {
                    use std::io::Read;
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n) = f.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        h.update(&buf[..n]);
                    }
                }
                h.finalize().into()
            }
        };
        Entry::File {
            mode: m.permissions().mode() & 0o7777,
            digest,
            bytes: bytes.filter(|b| keep && (b.len() as u64) <= KEEP_BYTES),
        }
    } else {
        Entry::Other
    })
}

/// Every entry below `dir` (not following links), as paths relative to `top`.
fn walk_all(top: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>, budget: &mut usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let p = e.path();
        let Some(en) = entry(&p, true) else { continue };
        let rel = rel(top, &p);
        let is_dir = matches!(en, Entry::Dir { .. });
        out.insert(rel, en);
        if is_dir {
            walk_all(top, &p, out, budget);
        }
    }
}

/// What git consults in a nested gitdir (a submodule's under `modules/`, a linked worktree's
/// under `worktrees/`): its config files, hooks and info, its alternates.
fn consulted(rel: &str) -> bool {
    rel.split('/').any(|c| c == "hooks" || c == "info")
        || [
            "config",
            "config.worktree",
            "commondir",
            "gitdir",
            "alternates",
        ]
        .iter()
        .any(|f| rel.ends_with(&format!("/{f}")))
}

/// The consulted entries below `dir` (see [`consulted`]), read only when kept. An object store
/// is data: only its `info/` (alternates) is walked, never the objects and packs.
fn walk_nested_gitdirs(
    top: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, Entry>,
    budget: &mut usize,
) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let in_objects = dir.file_name().is_some_and(|n| n == "objects");
    for e in rd.flatten() {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let p = e.path();
        let r = rel(top, &p);
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if consulted(&r) {
            if let Some(en) = entry(&p, true) {
                out.insert(r, en);
            }
        }
        if is_dir && (!in_objects || e.file_name() == "info") {
            walk_nested_gitdirs(top, &p, out, budget);
        }
    }
}

fn rel(top: &Path, p: &Path) -> String {
    p.strip_prefix(top)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// `path = X` values of `[include]` / `[includeIf …]` sections of a git config text.
fn include_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_include = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            let name = l.trim_start_matches('[').to_ascii_lowercase();
            in_include = name.starts_with("include]") || name.starts_with("includeif");
            continue;
        }
        if in_include {
            if let Some((k, v)) = l.split_once('=') {
                if k.trim().eq_ignore_ascii_case("path") {
                    out.push(v.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    out
}

/// The git control files of one gitdir (the checkout's, a submodule's, a worktree's).
fn gitdir_control(top: &Path, gd: &Path, out: &mut BTreeMap<String, Entry>, budget: &mut usize) {
    for f in [
        "config",
        "config.worktree",
        "commondir",
        "gitdir",
        "objects/info/alternates",
        "objects/info/http-alternates",
        "rebase-merge",
        "rebase-apply",
        "sequencer",
    ] {
        let p = gd.join(f);
        if let Some(e) = entry(&p, true) {
            out.insert(rel(top, &p), e);
        }
    }
    for d in ["hooks", "info"] {
        walk_all(top, &gd.join(d), out, budget);
    }
    // Files the config includes, when they are inside the checkout.
    if let Some(b) = crate::review::read_small(&gd.join("config"), KEEP_BYTES) {
        for inc in include_paths(&String::from_utf8_lossy(&b)) {
            let p = if let Some(rest) = inc.strip_prefix("~/") {
                match std::env::var_os("HOME") {
                    Some(h) => Path::new(&h).join(rest),
                    None => continue,
                }
            } else {
                gd.join(&inc)
            };
            if p.starts_with(top) {
                if let Some(e) = entry(&p, true) {
                    out.insert(rel(top, &p), e);
                }
            }
        }
    }
}

fn is_git_name(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().eq_ignore_ascii_case(".git")
}

/// The work tree (not the top `.git`): nested `.git` entries into `git`, tool configuration
/// into `config`.
fn walk_tree(top: &Path, dir: &Path, snap: &mut Snapshot, budget: &mut usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if *budget == 0 {
            snap.partial = true;
            return;
        }
        *budget -= 1;
        let p = e.path();
        let name = e.file_name();
        let r = rel(top, &p);
        let Ok(ft) = e.file_type() else { continue };
        if is_git_name(&name) {
            if dir != top {
                if let Some(en) = entry(&p, true) {
                    snap.git.insert(r, en);
                }
            }
            continue;
        }
        if r.ends_with(QUARANTINE_SUFFIX) {
            continue;
        }
        if ft.is_dir() {
            walk_tree(top, &p, snap, budget);
        } else if gate::config_kind(&r).is_some() {
            if let Some(en) = entry(&p, false) {
                snap.config.insert(r, en);
            }
        }
    }
}

/// Take the snapshot of a checkout (before the sandbox starts, and after it ends).
pub fn snapshot(top: &Path, extra_git_dirs: &[PathBuf]) -> Snapshot {
    let mut snap = Snapshot::default();
    let mut budget = MAX_ENTRIES;
    let dotgit = top.join(".git");
    if let Some(e) = entry(&dotgit, true) {
        let is_dir = matches!(e, Entry::Dir { .. });
        snap.git.insert(".git".into(), e);
        if is_dir {
            gitdir_control(top, &dotgit, &mut snap.git, &mut budget);
            for sub in ["modules", "worktrees"] {
                walk_nested_gitdirs(top, &dotgit.join(sub), &mut snap.git, &mut budget);
            }
        }
    }
    for d in extra_git_dirs {
        if d.starts_with(top) {
            walk_all(top, d, &mut snap.git, &mut budget);
        }
    }
    walk_tree(top, top, &mut snap, &mut budget);
    if budget == 0 {
        snap.partial = true;
    }
    snap
}

fn diff(
    before: &BTreeMap<String, Entry>,
    after: &BTreeMap<String, Entry>,
) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for (k, v) in after {
        match before.get(k) {
            None => out.push((k.clone(), "added")),
            Some(b) if !same(b, v) => out.push((k.clone(), "changed")),
            _ => {}
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) {
            out.push((k.clone(), "removed"));
        }
    }
    out.sort();
    out
}

fn same(a: &Entry, b: &Entry) -> bool {
    match (a, b) {
        (
            Entry::File {
                mode: m1,
                digest: d1,
                ..
            },
            Entry::File {
                mode: m2,
                digest: d2,
                ..
            },
        ) => m1 == m2 && d1 == d2,
        _ => a == b,
    }
}

fn quarantine(p: &Path) -> Result<PathBuf, String> {
    for i in 0..100 {
        let mut name = p.as_os_str().to_owned();
        name.push(QUARANTINE_SUFFIX);
        if i > 0 {
            name.push(format!(".{i}"));
        }
        let q = PathBuf::from(name);
        if std::fs::symlink_metadata(&q).is_err() {
            return std::fs::rename(p, &q)
                .map(|()| q)
                .map_err(|e| format!("cannot move {} aside: {e}", p.display()));
        }
    }
    Err(format!("cannot move {} aside", p.display()))
}

fn restore(p: &Path, e: &Entry) -> Result<(), String> {
    let Entry::File {
        mode,
        bytes: Some(b),
        ..
    } = e
    else {
        return Err("its earlier content was not kept".into());
    };
    if std::fs::symlink_metadata(p).is_ok_and(|m| !m.is_file()) {
        quarantine(p)?;
    }
    std::fs::write(p, b)
        .and_then(|()| std::fs::set_permissions(p, std::fs::Permissions::from_mode(*mode)))
        .map_err(|e| format!("cannot restore {}: {e}", p.display()))
}

/// Compare with the snapshot taken before; undo git control changes; report everything.
pub fn verify(top: &Path, before: &Snapshot, extra_git_dirs: &[PathBuf]) -> Report {
    let after = snapshot(top, extra_git_dirs);
    let mut report = Report {
        partial: before.partial || after.partial,
        ..Default::default()
    };
    // Deepest first, so a restored parent is not moved after its children were handled.
    let mut git = diff(&before.git, &after.git);
    git.sort_by(|a, b| b.0.cmp(&a.0));
    let mut handled: Vec<String> = Vec::new();
    for (path, what) in git {
        // Inside something already moved aside as a whole.
        if handled.iter().any(|h| path.starts_with(&format!("{h}/"))) {
            continue;
        }
        let p = top.join(&path);
        let note = match (what, before.git.get(&path), after.git.get(&path)) {
            ("added", _, Some(Entry::Dir { .. })) | ("added", _, _) => match quarantine(&p) {
                Ok(q) => {
                    handled.push(path.clone());
                    format!("moved aside to {}", rel(top, &q))
                }
                Err(e) => e,
            },
            ("changed", Some(old @ Entry::File { .. }), _) | ("removed", Some(old), _) => {
                match restore(&p, old) {
                    Ok(()) => "restored".into(),
                    Err(e) => e,
                }
            }
            ("changed", _, Some(Entry::Dir { .. })) => match quarantine(&p) {
                Ok(q) => {
                    handled.push(path.clone());
                    format!("replaced: the new one moved aside to {}", rel(top, &q))
                }
                Err(e) => e,
            },
            _ => match quarantine(&p) {
                Ok(q) => format!("moved aside to {}", rel(top, &q)),
                Err(e) => e,
            },
        };
        report.git.push(Change {
            path,
            what: what.into(),
            note,
        });
    }
    report.git.sort_by(|a, b| a.path.cmp(&b.path));
    for (path, what) in diff(&before.config, &after.config) {
        let note = gate::config_kind(&path)
            .map(|k| k.label().to_string())
            .unwrap_or_default();
        report.config.push(Change {
            path,
            what: what.into(),
            note,
        });
    }
    report
}

/// The directories git would run hooks from that are inside the checkout
/// (`core.hooksPath`, read with the host's git before the sandbox starts).
pub fn hooks_path(top: &Path) -> Option<PathBuf> {
    let out = crate::git::Git::worktree(top)
        .text(&["config", "--get", "core.hooksPath"])
        .ok()?;
    if out.is_empty() {
        return None;
    }
    let p = if let Some(rest) = out.strip_prefix("~/") {
        Path::new(&std::env::var_os("HOME")?).join(rest)
    } else {
        top.join(&out)
    };
    let p = std::fs::canonicalize(p).ok()?;
    (p.starts_with(top) && p != top).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_gitdirs_keep_what_git_consults_and_skip_objects() {
        let top = std::env::temp_dir().join(format!("airlock-wayback-{}", std::process::id()));
        let m = top.join(".git/modules/sub");
        for (f, body) in [
            ("config", "[core]\n"),
            ("hooks/post-checkout", "#!/bin/sh\n"),
            ("objects/info/alternates", "/elsewhere\n"),
            ("objects/ab/cdef", "blob"),
            ("objects/pack/pack-1.pack", "pack"),
            ("refs/heads/main", "0000\n"),
            ("HEAD", "ref: refs/heads/main\n"),
        ] {
            let p = m.join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, body).expect("write");
        }
        let snap = snapshot(&top, &[]);
        let _ = std::fs::remove_dir_all(&top);
        let kept: Vec<&str> = snap
            .git
            .keys()
            .map(String::as_str)
            .filter(|k| k.starts_with(".git/modules/"))
            .collect();
        assert_eq!(
            kept,
            [
                ".git/modules/sub/config",
                ".git/modules/sub/hooks",
                ".git/modules/sub/hooks/post-checkout",
                ".git/modules/sub/objects/info",
                ".git/modules/sub/objects/info/alternates",
            ]
        );
    }

    #[test]
    fn includes_are_found() {
        let t = "[core]\n\tbare = false\n[include]\n\tpath = extra.cfg\n\
                 [includeIf \"gitdir:~/w/\"]\n    path = \"../w.cfg\"\n[user]\n\tpath = no\n";
        assert_eq!(include_paths(t), vec!["extra.cfg", "../w.cfg"]);
    }
}
