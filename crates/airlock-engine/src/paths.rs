//! Where the engine lives: its socket (runtime dir) and its state (state dir). One engine per
//! user: root's under /run and /var/lib, a user's under $XDG_RUNTIME_DIR and $XDG_STATE_HOME.

use std::path::PathBuf;

/// The folder of the engine's socket and start lock: `$AIRLOCK_RUNTIME_DIR` if set, else
/// `/run/airlock` for root, else `$XDG_RUNTIME_DIR/airlock` (falling back to
/// `/run/user/UID/airlock`, or `STATE/run` where that does not exist).
pub fn runtime_dir() -> PathBuf {
    if let Some(dir) = env_path("AIRLOCK_RUNTIME_DIR") {
        return dir;
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/airlock");
    }
    if let Some(dir) = env_path("XDG_RUNTIME_DIR") {
        return dir.join("airlock");
    }
    // No session runtime dir (su, cron, containers): /run/user/UID if it exists, else a folder
    // in the state dir (same owner, 0700).
    let run_user = PathBuf::from(format!("/run/user/{uid}"));
    if run_user.is_dir() {
        run_user.join("airlock")
    } else {
        state_dir().join("run")
    }
}

/// The engine's API socket.
pub fn socket_path() -> PathBuf {
    runtime_dir().join("engine.sock")
}

/// The folder of the store and of the sandboxes' folders: `$AIRLOCK_STATE_DIR` if set, else
/// `/var/lib/airlock` for root, else `$XDG_STATE_HOME/airlock` (falling back to
/// `~/.local/state/airlock`).
pub fn state_dir() -> PathBuf {
    if let Some(dir) = env_path("AIRLOCK_STATE_DIR") {
        return dir;
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/airlock");
    }
    if let Some(dir) = env_path("XDG_STATE_HOME") {
        return dir.join("airlock");
    }
    env_path("HOME")
        .unwrap_or_else(|| PathBuf::from("/"))
        .join(".local/state/airlock")
}

fn env_path(key: &str) -> Option<PathBuf> {
    std::env::var_os(key)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}
