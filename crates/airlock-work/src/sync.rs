//! `sync`: apply a sandbox branch's committed changes to the host checkout — a fast-forward when
//! the host is still exactly where the sandbox started, otherwise a clean apply of the net change
//! to the work tree, refused file by file when the host has edited a path the branch changes.

use super::gate::{Change, MODE_GITLINK, MODE_SYMLINK};
use super::git::{Git, GitError};
use serde::Serialize;
use std::path::Path;

const MODE_TYPE: u32 = 0o170000;

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Step {
    /// A (added), M (modified), D (deleted), T (type changed).
    pub status: char,
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct SyncPlan {
    /// `fast-forward` or `apply`.
    pub method: &'static str,
    pub steps: Vec<Step>,
    /// Paths the host changed since the sandbox started that the branch also changes.
    pub conflicts: Vec<String>,
    /// Paths already identical on the host (applied before).
    pub unchanged: Vec<String>,
    /// Entries sync does not write (submodules).
    pub skipped: Vec<String>,
    /// Paths below a symbolic link in the host checkout: writing them would follow the link,
    /// so sync refuses them.
    pub through_links: Vec<String>,
}

/// The first folder on the way to `path` (below `top`) that is a symbolic link in the host
/// checkout, if any. sync never writes, creates or removes through one: the link may lead
/// out of the checkout (planted by an earlier sync, or the user's own).
pub fn link_on_the_way(top: &Path, path: &str) -> Option<String> {
    let mut cur = top.to_path_buf();
    let comps: Vec<&str> = path.split('/').collect();
    for (i, c) in comps.iter().enumerate().take(comps.len().saturating_sub(1)) {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => return Some(comps[..=i].join("/")),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// What the host has at `path`: the blob id of its bytes as git would store them, with the
/// type bits. None: nothing there.
fn host_state(host: &Git, top: &Path, path: &str) -> Result<Option<(u32, String)>, GitError> {
    let full = top.join(path);
    let Ok(meta) = std::fs::symlink_metadata(&full) else {
        return Ok(None);
    };
    if meta.file_type().is_symlink() {
        let to = std::fs::read_link(&full).unwrap_or_default();
        let oid = host.with_input(
            &["hash-object", "--stdin"],
            to.as_os_str().as_encoded_bytes(),
        )?;
        return Ok(Some((
            MODE_SYMLINK,
            String::from_utf8_lossy(&oid).trim().to_string(),
        )));
    }
    if meta.is_dir() {
        return Ok(Some((0o040000, String::new())));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = if meta.permissions().mode() & 0o111 != 0 {
        0o100755
    } else {
        0o100644
    };
    let oid = host.text(&[
        std::ffi::OsStr::new("hash-object"),
        "--no-filters".as_ref(),
        "--".as_ref(),
        full.as_os_str(),
    ])?;
    Ok(Some((mode, oid)))
}

fn same(state: &Option<(u32, String)>, mode: u32, oid: &str) -> bool {
    match state {
        None => mode == 0,
        Some((m, o)) => {
            let type_ok = (m & MODE_TYPE) == (mode & MODE_TYPE);
            type_ok && o == oid
        }
    }
}

/// Decide what sync would do. `fast_forward`: the host HEAD is the branch's starting commit and
/// its tracked files are unmodified.
pub fn plan(
    host: &Git,
    top: &Path,
    changes: &[Change],
    fast_forward: bool,
) -> Result<SyncPlan, GitError> {
    let mut p = SyncPlan {
        method: if fast_forward {
            "fast-forward"
        } else {
            "apply"
        },
        ..Default::default()
    };
    for c in changes {
        if c.new_mode & MODE_TYPE == MODE_GITLINK || c.old_mode & MODE_TYPE == MODE_GITLINK {
            p.skipped.push(c.path.clone());
            continue;
        }
        if link_on_the_way(top, &c.path).is_some() {
            p.through_links.push(c.path.clone());
            continue;
        }
        if !fast_forward {
            let now = host_state(host, top, &c.path)?;
            if same(&now, c.new_mode, &c.new_oid) {
                p.unchanged.push(c.path.clone());
                continue;
            }
            if !same(&now, c.old_mode, &c.old_oid) {
                p.conflicts.push(c.path.clone());
                continue;
            }
        }
        p.steps.push(Step {
            status: c.status,
            path: c.path.clone(),
        });
    }
    Ok(p)
}

/// Write one change into the host work tree from the (already fetched) objects: through a
/// temporary name and a rename, so a reader never sees half a file.
pub fn apply(host: &Git, top: &Path, c: &Change) -> Result<(), String> {
    let dst = top.join(&c.path);
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what} {}: {e}", dst.display());
    if let Some(link) = link_on_the_way(top, &c.path) {
        return Err(fail(
            "refusing to write",
            &format!("{link} is a symbolic link in the checkout"),
        ));
    }
    if c.status == 'D' || c.new_mode == 0 {
        return match std::fs::remove_file(&dst) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(fail("remove", &e)),
        };
    }
    let parent = dst.parent().unwrap_or(top);
    std::fs::create_dir_all(parent).map_err(|e| fail("create the folder of", &e))?;
    let content = host
        .output(&["cat-file", "blob", &c.new_oid])
        .map_err(|e| fail("read the new content of", &e))?;
    let tmp = parent.join(format!(
        ".airlock-sync-{}-{}",
        std::process::id(),
        dst.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let _ = std::fs::remove_file(&tmp);
    if c.new_mode & MODE_TYPE == MODE_SYMLINK {
        let target = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&content);
        std::os::unix::fs::symlink(target, &tmp).map_err(|e| fail("link", &e))?;
    } else {
        use std::os::unix::fs::OpenOptionsExt;
        let mode = if c.new_mode & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| fail("write", &e))?;
        std::io::Write::write_all(&mut f, &content).map_err(|e| fail("write", &e))?;
        // The umask may have cleared bits git records.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| fail("chmod", &e))?;
    }
    if std::fs::symlink_metadata(&dst).is_ok_and(|m| m.is_dir()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail("replace", &"a directory is in the way"));
    }
    std::fs::rename(&tmp, &dst).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail("replace", &e)
    })
}

/// Artifact folders `--artifacts` copies back (build outputs git ignores).
pub const ARTIFACTS: &[&str] = &["dist", "build", "target", ".next", "out"];

/// Copy build outputs from the sandbox's work tree to the host's: regular files and folders
/// only (symlinks are skipped and counted), permission bits limited to rwx (no set-id bit of the
/// sandbox's reaches the host). Returns (files, skipped symlinks).
pub fn copy_artifacts(src: &Path, dst: &Path) -> std::io::Result<(usize, usize)> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::symlink_metadata(src) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    if meta.file_type().is_symlink() {
        return Ok((0, 1));
    }
    if meta.is_dir() {
        if std::fs::symlink_metadata(dst).is_ok_and(|m| !m.is_dir()) {
            std::fs::remove_file(dst)?;
        }
        std::fs::create_dir_all(dst)?;
        let (mut n, mut s) = (0, 0);
        for e in std::fs::read_dir(src)? {
            let e = e?;
            let (a, b) = copy_artifacts(&e.path(), &dst.join(e.file_name()))?;
            n += a;
            s += b;
        }
        return Ok((n, s));
    }
    if !meta.is_file() {
        return Ok((0, 0));
    }
    if std::fs::symlink_metadata(dst).is_ok_and(|m| m.file_type().is_symlink() || m.is_dir()) {
        return Ok((0, 1));
    }
    std::fs::copy(src, dst)?;
    std::fs::set_permissions(
        dst,
        std::fs::Permissions::from_mode(meta.permissions().mode() & 0o777),
    )?;
    Ok((1, 0))
}
