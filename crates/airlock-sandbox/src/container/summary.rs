//! What an overlay workspace run changed: added, modified and deleted paths, read from the
//! overlay's upper directory against the (untouched) host directory.

use serde::Serialize;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub added: Vec<PathBuf>,
    pub modified: Vec<PathBuf>,
    pub deleted: Vec<PathBuf>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.deleted.is_empty()
    }
}

fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    for name in ["user.overlay.opaque", "trusted.overlay.opaque"] {
        if xattr_is_y(dir, name) {
            return true;
        }
    }
    false
}

fn xattr_is_y(p: &Path, name: &str) -> bool {
    let (Ok(cp), Ok(cn)) = (crate::sys::cstr(p), std::ffi::CString::new(name)) else { return false };
    let mut buf = [0u8; 4];
    // SAFETY: valid C strings and a buffer of the length we pass.
    let n = unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    n >= 1 && buf[0] == b'y'
}

fn same_content(a: &Path, b: &Path, ma: &fs::Metadata, mb: &fs::Metadata) -> bool {
    if ma.file_type().is_symlink() || mb.file_type().is_symlink() {
        return ma.file_type().is_symlink() && mb.file_type().is_symlink() && fs::read_link(a).ok() == fs::read_link(b).ok();
    }
    if !(ma.is_file() && mb.is_file()) || ma.len() != mb.len() || ma.mode() & 0o7777 != mb.mode() & 0o7777 {
        return false;
    }
    let (Ok(mut fa), Ok(mut fb)) = (fs::File::open(a), fs::File::open(b)) else { return false };
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let (Ok(na), Ok(nb)) = (fa.read(&mut ba), fb.read(&mut bb)) else { return false };
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

/// Walk `upper` against `lower`. Paths are relative to the workspace root.
pub fn diff(upper: &Path, lower: &Path) -> Changes {
    let mut c = Changes::default();
    walk(upper, lower, Path::new(""), &mut c);
    c.added.sort();
    c.modified.sort();
    c.deleted.sort();
    c
}

fn walk(upper: &Path, lower: &Path, rel: &Path, c: &mut Changes) {
    let Ok(rd) = fs::read_dir(upper.join(rel)) else { return };
    let opaque = !rel.as_os_str().is_empty() && is_opaque(&upper.join(rel));
    let mut seen = std::collections::HashSet::new();
    for e in rd.flatten() {
        let name = e.file_name();
        seen.insert(name.clone());
        let r = rel.join(&name);
        let (up, low) = (upper.join(&r), lower.join(&r));
        let Ok(mu) = fs::symlink_metadata(&up) else { continue };
        let ml = fs::symlink_metadata(&low).ok();
        if is_whiteout(&mu) {
            if ml.is_some() {
                c.deleted.push(r);
            }
            continue;
        }
        match (&ml, mu.is_dir()) {
            (None, true) => {
                c.added.push(r.clone());
                all_files(upper, &r, &mut c.added);
            }
            (None, false) => c.added.push(r),
            (Some(ml), true) if ml.is_dir() && !opaque => walk(upper, lower, &r, c),
            (Some(ml), true) if ml.is_dir() => {
                // Opaque directory: replaced wholesale.
                c.modified.push(r.clone());
            }
            (Some(ml), _) => {
                if !same_content(&up, &low, &mu, ml) {
                    c.modified.push(r);
                }
            }
        }
    }
    if opaque {
        if let Ok(rd) = fs::read_dir(lower.join(rel)) {
            for e in rd.flatten() {
                if !seen.contains(&e.file_name()) {
                    c.deleted.push(rel.join(e.file_name()));
                }
            }
        }
    }
}

fn all_files(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(root.join(rel)) else { return };
    for e in rd.flatten() {
        let r = rel.join(e.file_name());
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        out.push(r.clone());
        if is_dir {
            all_files(root, &r, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_upper_entries() {
        let base = std::env::temp_dir().join(format!("airlock-summary-{}", std::process::id()));
        let (up, low) = (base.join("upper"), base.join("lower"));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(low.join("src")).expect("mkdir");
        fs::create_dir_all(up.join("src")).expect("mkdir");
        fs::write(low.join("src/main.rs"), "old").expect("w");
        fs::write(up.join("src/main.rs"), "new").expect("w");
        fs::write(low.join("same.txt"), "x").expect("w");
        fs::write(up.join("same.txt"), "x").expect("w"); // copied up, unchanged
        fs::create_dir_all(up.join("newdir")).expect("mkdir");
        fs::write(up.join("newdir/a"), "a").expect("w");
        fs::write(up.join("added.txt"), "a").expect("w");
        fs::write(low.join("gone.txt"), "g").expect("w");
        // A whiteout needs mknod(0,0), which needs privilege; exercise it when we have it.
        let whiteout = nix::sys::stat::mknod(&up.join("gone.txt"), nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::from_bits_truncate(0o600), 0).is_ok();
        let c = diff(&up, &low);
        assert_eq!(c.added, vec![PathBuf::from("added.txt"), PathBuf::from("newdir"), PathBuf::from("newdir/a")]);
        assert_eq!(c.modified, vec![PathBuf::from("src/main.rs")]);
        if whiteout {
            assert_eq!(c.deleted, vec![PathBuf::from("gone.txt")]);
        }
        let _ = fs::remove_dir_all(&base);
    }
}
