//! Trusting a project's `airlock.toml` (issue 11): settings a project file adds that widen the
//! policy (see `airlock_model::config::trust`), and every hook, take effect only after the user
//! ran `airlock trust` on that exact content. The record is a SHA-256 of the project file and of
//! the plugin files only it names, kept in the user's state directory (`trust.json`), which no
//! sandbox can reach: a sandbox that rewrites the file makes it untrusted again, and one that
//! runs `airlock trust` inside writes only its own state.

use crate::error::{CliError, CliResult};
use airlock_model::config::{ProjectConfig, Widening};
use airlock_model::exit;
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const STORE_FILE: &str = "trust.json";

/// `trust.json`: the project file's absolute path -> the digest of the content trusted there.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Store {
    pub trusted: BTreeMap<PathBuf, String>,
}

pub fn store_path() -> PathBuf {
    airlock_sandbox::container::rundir::state_dir().join(STORE_FILE)
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

fn load_store(path: &Path) -> Store {
    crate::work::review::read_small(path, 16 << 20)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Serialise writers of the store (read-modify-write).
fn lock(store: &Path) -> std::io::Result<nix::fcntl::Flock<std::fs::File>> {
    if let Some(d) = store.parent() {
        std::fs::create_dir_all(d)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(store.with_extension("lock"))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from(e))
}

fn save_store(path: &Path, s: &Store) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(s).unwrap_or_default())?;
    std::fs::rename(&tmp, path)
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

pub fn state(p: &ProjectConfig) -> State {
    let store = load_store(&store_path());
    if store.trusted.get(&p.file) == Some(&digest(p)) {
        State::Trusted
    } else {
        State::Untrusted
    }
}

/// Refuse, before anything starts, a project configuration that widens the policy while
/// untrusted. `what` names the widened keys the caller acts on (all of them for run/create).
pub fn require(p: Option<&ProjectConfig>) -> CliResult<()> {
    let Some(p) = p else { return Ok(()) };
    if p.widening.is_empty() || state(p) == State::Trusted {
        return Ok(());
    }
    Err(refusal(p, &p.widening))
}

/// The refusal for `widening` (a subset of the project's, e.g. only its hooks).
pub fn refusal(p: &ProjectConfig, widening: &[Widening]) -> CliError {
    let mut msg = format!(
        "{} is not trusted, and it widens the policy:",
        p.file.display()
    );
    for w in widening {
        msg.push_str(&format!("\n  {:<18} {}", w.key, w.detail));
    }
    let dir = p.file.parent().unwrap_or(Path::new("."));
    CliError::new(exit::POLICY_REFUSED, anyhow::anyhow!(msg)).hint(format!(
        "review it, then `airlock trust {}` (a changed file needs trusting again); settings that only narrow the policy always apply",
        dir.display()
    ))
}

/// `airlock trust [DIR] [--revoke] [--json]`.
pub fn trust_cmd(dir: Option<&Path>, revoke: bool, json: bool) -> CliResult<i32> {
    let start = match dir {
        Some(d) => std::fs::canonicalize(d).map_err(|e| {
            CliError::usage(format!("{}: {e}", d.display()))
        })?,
        None => std::env::current_dir().map_err(|e| CliError::new(exit::USAGE, e))?,
    };
    let resolved = airlock_model::config::load(&airlock_model::config::LoadOptions::new(&start))?;
    let Some(p) = resolved.project else {
        return Err(CliError::usage(format!(
            "no airlock.toml in {} or above it",
            start.display()
        ))
        .hint("`airlock init` writes one"));
    };
    let path = store_path();
    let _lock = lock(&path).map_err(|e| {
        CliError::new(
            exit::SANDBOX_FAILED,
            anyhow::anyhow!("lock {}: {e}", path.display()),
        )
    })?;
    let mut store = load_store(&path);
    let d = digest(&p);
    if revoke {
        store.trusted.remove(&p.file);
    } else {
        store.trusted.insert(p.file.clone(), d.clone());
    }
    save_store(&path, &store).map_err(|e| {
        CliError::new(
            exit::SANDBOX_FAILED,
            anyhow::anyhow!("write {}: {e}", path.display()),
        )
    })?;
    if json {
        let v = serde_json::json!({
            "file": p.file, "files": p.files, "trusted": !revoke, "sha256": d,
            "widening": p.widening,
        });
        outln!("{v:#}");
    } else if revoke {
        outln!("untrusted {}", p.file.display());
    } else {
        outln!("trusted {} (sha256 {})", p.file.display(), &d[..16]);
        for w in &p.widening {
            outln!("  {:<18} {}", w.key, w.detail);
        }
    }
    Ok(0)
}
