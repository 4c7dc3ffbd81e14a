//! Config tests: pure, against temp directories with unique names (removed on drop).
#![allow(clippy::unwrap_used)]

mod errors;
mod loading;
mod merging;
mod modes;
mod setup;
mod template;

use super::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A unique temp directory, removed when dropped (also when the test fails).
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("airlock-config-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// Writes `rel` (creating parent directories) and returns its absolute path.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Options that read nothing from the real user environment.
pub(super) fn opts(cwd: &Path) -> LoadOptions {
    LoadOptions {
        cwd: cwd.to_path_buf(),
        no_user_config: true,
        home: Some(PathBuf::from("/home/tester")),
        ..Default::default()
    }
}

pub(super) fn opts_with_user(cwd: &Path, user: &Path) -> LoadOptions {
    LoadOptions {
        user_config: Some(user.to_path_buf()),
        no_user_config: false,
        ..opts(cwd)
    }
}

pub(super) fn s(v: &str) -> String {
    v.to_string()
}

pub(super) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}
