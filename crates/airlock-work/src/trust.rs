//! Trusting a project's `airlock.toml` (issue 11): settings a project file adds that widen the
//! policy (see `airlock_model::config::trust`), and every hook, take effect only after the user
//! ran `airlock trust` on that exact content. The record is a SHA-256 of the project file and of
//! the plugin files only it names, kept in the user's state directory (`trust.json`), which no
//! sandbox can reach: a sandbox that rewrites the file makes it untrusted again, and one that
//! runs `airlock trust` inside writes only its own state.

use airlock_model::config::ProjectConfig;
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const STORE_FILE: &str = "trust.json";

/// `trust.json`: the project file's absolute path -> the digest of the content trusted there.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Store {
    pub trusted: BTreeMap<PathBuf, String>,
}

/// The digest of what was read: each file's path and exact text, in load order.
pub fn digest(p: &ProjectConfig) -> String {
    let mut h = sha2::Sha256::new();
    for (f, t) in p.files.iter().zip(&p.texts) {
        h.update(f.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    }
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

impl Store {
    /// The store at `path` (empty when missing or unreadable: nothing is trusted).
    pub fn load(path: &Path) -> Store {
        crate::review::read_small(path, 16 << 20)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).unwrap_or_default())?;
        std::fs::rename(&tmp, path)
    }
}

/// Serialise writers of the store at `path` (read-modify-write).
pub fn lock(path: &Path) -> std::io::Result<nix::fcntl::Flock<std::fs::File>> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("lock"))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from(e))
}

/// Trust state of a project configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// This exact content was trusted.
    Trusted,
    /// Never trusted, or changed since.
    Untrusted,
}

/// Is `p`, as read, trusted in the store at `store`?
pub fn state(p: &ProjectConfig, store: &Path) -> State {
    if Store::load(store).trusted.get(&p.file) == Some(&digest(p)) {
        State::Trusted
    } else {
        State::Untrusted
    }
}
