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

/// The engine's API socket: `engine.sock` in the runtime dir for the default state dir, and
/// `engine-HASH.sock` for any other (`$AIRLOCK_STATE_DIR`), so that state dirs sharing a
/// runtime dir never share an engine (which would serve one state dir's sandboxes to the other).
pub fn socket_path() -> PathBuf {
    runtime_dir().join(socket_name(&state_dir(), &default_state_dir()))
}

/// The socket's file name for `state`, given the user's default state dir.
pub fn socket_name(state: &std::path::Path, default: &std::path::Path) -> String {
    let canon = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let state = canon(state);
    if state == canon(default) {
        return "engine.sock".into();
    }
    // FNV-1a: stable across builds and platforms, short enough for sun_path.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in state.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("engine-{h:016x}.sock")
}

/// The folder of the store and of the sandboxes' folders: `$AIRLOCK_STATE_DIR` if set, else
/// `/var/lib/airlock` for root, else `$XDG_STATE_HOME/airlock` (falling back to
/// `~/.local/state/airlock`).
pub fn state_dir() -> PathBuf {
    env_path("AIRLOCK_STATE_DIR").unwrap_or_else(default_state_dir)
}

/// The state dir when `$AIRLOCK_STATE_DIR` is not set.
fn default_state_dir() -> PathBuf {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn each_state_dir_has_its_own_socket() {
        let default = Path::new("/nonexistent/default/airlock");
        assert_eq!(socket_name(default, default), "engine.sock");
        let a = socket_name(Path::new("/nonexistent/a"), default);
        let b = socket_name(Path::new("/nonexistent/b"), default);
        assert_ne!(a, b);
        assert!(
            a.starts_with("engine-") && a.ends_with(".sock") && a.len() == 28,
            "{a}"
        );
        assert_eq!(a, socket_name(Path::new("/nonexistent/a"), default));
    }
}
