//! The microVM artifact cache's place and keys, shared by the artifacts (artifacts.rs) and
//! the kernel's remembered facts (kernel.rs).

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The microVM artifact cache.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("AIRLOCK_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(|x| PathBuf::from(x).join("airlock"))
        })
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache/airlock"))
        })
        .unwrap_or_else(|| PathBuf::from("/var/cache/airlock"));
    base.join("microvm")
}

/// FNV-1a, 64 bits: content keys of cache entries (not a security boundary: the cache is the
/// user's own).
pub fn key(parts: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.iter().chain(b"\0") {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// A cheap identity of a file: path, inode, size and modification time.
pub(crate) fn stat_key(p: &Path) -> String {
    match fs::symlink_metadata(p) {
        Ok(m) => format!("{}:{}:{}:{}", p.display(), m.ino(), m.size(), m.mtime()),
        Err(_) => format!("{}:-", p.display()),
    }
}

/// Make `dir` (and its parents), world-readable.
pub fn ensure_dir(dir: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))
}
