//! What /proc says about cgroups: the cgroup mounts (from mountinfo) and this process's
//! membership (from /proc/self/cgroup). Pure parsers, used by the runtime layout detection
//! (`cgroup::Layout`) and by `doctor` (`hostcaps::cgroups`).

use serde::Serialize;
use std::path::{Path, PathBuf};

/// One cgroup filesystem mount from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupMount {
    /// `cgroup` (v1) or `cgroup2`.
    pub fstype: String,
    pub mount_point: PathBuf,
    /// The cgroup this mount shows at its mount point (`/` unless a subtree is bind-mounted).
    pub root: String,
    /// v1: the controllers (and `name=` hierarchies) of this mount; v2: empty.
    pub controllers: Vec<String>,
}

/// Parsed /proc/self/cgroup line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub hierarchy_id: u32,
    /// Empty for the v2 (`0::`) line.
    pub controllers: Vec<String>,
    pub path: String,
}

/// Decode the octal escapes mountinfo uses for space, tab, newline and backslash.
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of /proc/self/mountinfo, the fields doctor needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub root: String,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
    pub super_options: Vec<String>,
}

/// Parse every well-formed line of mountinfo.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut lf = left.split(' ');
            let root = lf.nth(3)?;
            let mount_point = lf.next()?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let source = r.next().unwrap_or("");
            let opts = r.next().unwrap_or("");
            Some(MountEntry {
                root: unescape_mountinfo(root),
                mount_point: PathBuf::from(unescape_mountinfo(mount_point)),
                fstype: fstype.to_string(),
                source: unescape_mountinfo(source),
                super_options: opts
                    .split(',')
                    .filter(|o| !o.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

/// The cgroup filesystems among the mounts. v1 controllers are the super options that are not
/// generic mount options.
pub fn cgroup_mounts(mounts: &[MountEntry]) -> Vec<CgroupMount> {
    const GENERIC: &[&str] = &[
        "rw",
        "ro",
        "nsdelegate",
        "memory_recursiveprot",
        "memory_localevents",
        "favordynmods",
        "noprefix",
        "clone_children",
        "xattr",
        "cpuset_v2_mode",
        "memory_hugetlb_accounting",
        "pids_localevents",
    ];
    mounts
        .iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| CgroupMount {
            fstype: m.fstype.clone(),
            mount_point: m.mount_point.clone(),
            root: m.root.clone(),
            controllers: if m.fstype == "cgroup" {
                m.super_options
                    .iter()
                    .filter(|o| !GENERIC.contains(&o.as_str()) && !o.starts_with("release_agent="))
                    .cloned()
                    .collect()
            } else {
                vec![]
            },
        })
        .collect()
}

/// Parse /proc/self/cgroup (`id:controllers:path` per line).
pub fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let id = it.next()?.parse().ok()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            Some(Membership {
                hierarchy_id: id,
                controllers: if ctrls.is_empty() {
                    vec![]
                } else {
                    ctrls.split(',').map(str::to_string).collect()
                },
                path: path.to_string(),
            })
        })
        .collect()
}

/// The directory of cgroup `path` under a mount showing cgroup `root` at `mount_point`;
/// `None` when the cgroup is outside what the mount shows (e.g. `/..` paths across cgroup
/// namespaces, or a bind-mounted subtree that does not contain us).
pub fn own_dir(mount_point: &Path, root: &str, path: &str) -> Option<PathBuf> {
    if path.contains("/..") || path.starts_with("..") {
        return None;
    }
    let root = root.trim_end_matches('/');
    let rel = if root.is_empty() {
        path
    } else if path == root {
        ""
    } else {
        path.strip_prefix(root).filter(|r| r.starts_with('/'))?
    };
    let rel = rel.trim_start_matches('/');
    Some(if rel.is_empty() {
        mount_point.to_path_buf()
    } else {
        mount_point.join(rel)
    })
}
