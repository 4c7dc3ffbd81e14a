//! Per-run scratch directories under the state directory, each held by an flock for as long as
//! its airlock process lives. A directory whose lock nobody holds belongs to a dead run: the next
//! airlock command (or `airlock gc`) reclaims it together with its cgroups. A run directory names
//! its run's cgroup in `cgroup` (written before the cgroup is created): gc removes exactly that
//! one, never a cgroup found by the run's name alone, which another state directory may share.

use crate::cgroup::{remove_cgroup_dir, Layout};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The state directory: $AIRLOCK_STATE_DIR, else /var/lib/airlock for root, else
/// $XDG_STATE_HOME/airlock (default ~/.local/state/airlock).
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("AIRLOCK_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/airlock");
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("airlock");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/state/airlock")
}

/// How long a half-created run directory (`.NAME.new`) is left to its creator.
const HALF_CREATED_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// The file in a run directory naming the run's cgroup (its leaf directory name).
pub const CGROUP_FILE: &str = "cgroup";

/// 16 random hex digits: the unique id of one run (its cgroup's name).
pub fn random_id() -> io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 8];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn runs_dir(state: &Path) -> PathBuf {
    state.join("runs")
}

/// An empty directory any run may mount its root over (in its own mount namespace only),
/// for runs that need no run directory of their own.
pub fn shared_mount_point(state: &Path) -> io::Result<PathBuf> {
    let p = runs_dir(state).join(".mnt");
    match fs::DirBuilder::new().mode(0o755).create(&p) {
        Ok(()) => Ok(p),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            mkdir_p(&runs_dir(state), 0o755)?;
            fs::DirBuilder::new().mode(0o755).create(&p).or_else(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
            Ok(p)
        }
        Err(e) => Err(e),
    }
}

/// A live run's directory; removed (with everything in it) on [`RunDir::remove`].
#[derive(Debug)]
pub struct RunDir {
    pub path: PathBuf,
    _lock: Flock<File>,
}

fn mkdir_p(p: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(mode).create(p)
}

impl RunDir {
    pub fn create(state: &Path, name: &str) -> io::Result<RunDir> {
        let runs = runs_dir(state);
        mkdir_p(&runs, 0o755)?;
        // Build under a hidden name, lock, then publish: gc never sees an unlocked live run.
        let tmp = runs.join(format!(".{name}.new"));
        let final_path = runs.join(name);
        if final_path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists", final_path.display()),
            ));
        }
        let _ = fs::remove_dir_all(&tmp);
        fs::DirBuilder::new().mode(0o711).create(&tmp)?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(tmp.join("lock"))?;
        let lock =
            Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| io::Error::from(e))?;
        fs::rename(&tmp, &final_path)?;
        Ok(RunDir {
            path: final_path,
            _lock: lock,
        })
    }

    pub fn remove(self) {
        remove_tree(&self.path);
    }
}

/// Remove a directory tree, fixing permissions the kernel left (overlay work dirs are 0000).
pub fn remove_tree(p: &Path) {
    if fs::remove_dir_all(p).is_ok() || !p.exists() {
        return;
    }
    fn chmod_all(p: &Path) {
        let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
        if let Ok(rd) = fs::read_dir(p) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    chmod_all(&e.path());
                }
            }
        }
    }
    chmod_all(p);
    let _ = fs::remove_dir_all(p);
}

/// Reclaim every run directory (and its cgroups) whose owner is gone. Returns the names.
/// `layout` is only computed when there is something to reclaim (it reads /proc files).
pub fn gc(state: &Path, layout: impl FnOnce() -> Layout) -> Vec<String> {
    let mut reclaimed = Vec::new();
    let mut layout = Some(layout);
    let mut parents: Option<Vec<std::path::PathBuf>> = None;
    let Ok(rd) = fs::read_dir(runs_dir(state)) else {
        return reclaimed;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name == ".mnt" {
            continue;
        }
        if name.starts_with('.') {
            // A half-created run: its creator takes the lock only after making the directory
            // and the lock file, so a young one may just not be locked yet. Reclaimed once it
            // is a minute old and nobody holds its lock.
            let young = fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age < HALF_CREATED_GRACE);
            if young || !lock_free(&path) {
                continue;
            }
        } else if !lock_free(&path) {
            continue;
        }
        let leaf = fs::read_to_string(path.join(CGROUP_FILE)).unwrap_or_default();
        let leaf = leaf.trim();
        if crate::cgroup::valid_leaf(leaf) {
            let parents = parents
                .get_or_insert_with(|| layout.take().map(|f| f().parents()).unwrap_or_default());
            let mut gone = true;
            for parent in parents.iter() {
                gone &= remove_cgroup_dir(&parent.join(leaf));
            }
            if !gone {
                // Still busy: the run directory stays, so that the next gc tries again (it is
                // the only record of which cgroup was the run's).
                continue;
            }
        }
        remove_tree(&path);
        reclaimed.push(name);
    }
    reclaimed
}

/// Whether nobody holds the flock on `dir/lock` (a missing lock file counts as free).
pub fn lock_free(dir: &Path) -> bool {
    let Ok(f) = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(dir.join("lock"))
    else {
        // No lock file: a directory we did not create or a broken one; reclaim it.
        return true;
    };
    Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_runs_survive_gc_and_dead_ones_are_reclaimed() {
        let state =
            std::env::temp_dir().join(format!("airlock-rundir-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&state);
        let live = RunDir::create(&state, "live").expect("create live");
        let dead = RunDir::create(&state, "dead").expect("create dead");
        fs::create_dir_all(dead.path.join("upper/x")).expect("mkdir");
        let dead_path = dead.path.clone();
        drop(dead); // lock released without removal: what a SIGKILLed airlock leaves
        assert!(
            RunDir::create(&state, "live").is_err(),
            "names are exclusive"
        );
        let got = gc(&state, || Layout::None);
        assert_eq!(got, vec!["dead".to_string()]);
        assert!(!dead_path.exists());
        assert!(live.path.exists());
        live.remove();
        assert!(gc(&state, || Layout::None).is_empty());
        let _ = fs::remove_dir_all(&state);
    }

    #[test]
    fn a_run_whose_cgroup_is_still_busy_is_kept_for_the_next_gc() {
        let base =
            std::env::temp_dir().join(format!("airlock-rundir-busy-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let (state, pids) = (base.join("state"), base.join("pids"));
        let layout = Layout::V1 {
            memory: None,
            pids: Some(pids.clone()),
            cpu: None,
        };
        let dead = RunDir::create(&state, "box").expect("create");
        fs::write(dead.path.join(CGROUP_FILE), "box.0123abcd").expect("write");
        let path = dead.path.clone();
        drop(dead);
        // A directory rmdir cannot remove yet (a cgroup whose last process is still exiting).
        fs::create_dir_all(pids.join("box.0123abcd/busy")).expect("mkdir");
        assert!(gc(&state, || layout.clone()).is_empty());
        assert!(
            path.join(CGROUP_FILE).exists(),
            "the record of its cgroup is kept"
        );
        let _ = fs::remove_dir_all(pids.join("box.0123abcd"));
        fs::create_dir_all(pids.join("box.0123abcd")).expect("mkdir");
        assert_eq!(gc(&state, || layout.clone()), vec!["box".to_string()]);
        assert!(!pids.join("box.0123abcd").exists() && !path.exists());
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn gc_leaves_a_run_directory_being_created_to_its_creator() {
        let state =
            std::env::temp_dir().join(format!("airlock-rundir-new-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&state);
        // What a concurrent `RunDir::create` has made before it could take its lock.
        let half = runs_dir(&state).join(".run-1.new");
        fs::create_dir_all(&half).expect("mkdir");
        assert!(gc(&state, || Layout::None).is_empty());
        assert!(half.exists());
        let _ = fs::remove_dir_all(&state);
    }

    #[test]
    fn gc_removes_the_cgroup_its_run_named_and_no_other() {
        let base =
            std::env::temp_dir().join(format!("airlock-rundir-cg-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let (state, mem, pids) = (base.join("state"), base.join("mem"), base.join("pids"));
        let layout = Layout::V1 {
            memory: Some(mem.clone()),
            pids: Some(pids.clone()),
            cpu: None,
        };
        let dead = RunDir::create(&state, "box").expect("create");
        fs::write(dead.path.join(CGROUP_FILE), "box.0123abcd").expect("write");
        drop(dead);
        // Its own cgroups, and same-named ones of another state dir's runs.
        for p in [&mem, &pids] {
            for leaf in ["box.0123abcd", "box", "box.ffff0000"] {
                fs::create_dir_all(p.join(leaf)).expect("mkdir");
            }
        }
        assert_eq!(gc(&state, || layout.clone()), vec!["box".to_string()]);
        for p in [&mem, &pids] {
            assert!(!p.join("box.0123abcd").exists());
            assert!(p.join("box").exists() && p.join("box.ffff0000").exists());
        }
        let _ = fs::remove_dir_all(&base);
    }
}
