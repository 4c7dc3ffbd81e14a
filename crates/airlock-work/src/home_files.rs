//! `[home_files]`: host files under the sandbox user's home, in three modes:
//! - `link`: the host file itself, bound read-only (edits on the host show inside);
//! - `immutable`: a copy taken at each start, bound read-only (the host file may change, the
//!   sandbox's view does not until the next start);
//! - `seed`: a copy the sandbox owns — made once for a named sandbox (in its kept home), at each
//!   run for `run`.
//!
//! Copies live in a staging folder: the sandbox's folder for named sandboxes, a per-run folder
//! under the state directory (removed when the run ends) for `run`.

use airlock_model::policy::HomeFileMode;
use airlock_model::spec::{BindSpec, RunSpec};
use std::path::{Component, Path, PathBuf};

/// A staging folder removed on drop (for `run`). A run's folder holds a flock on `lock` while
/// the run lives, so `sweep` can tell a SIGKILLed run's leftovers from a live one.
pub struct Staging {
    pub dir: PathBuf,
    pub remove: bool,
    _lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

impl Staging {
    /// A named sandbox's folder (kept) or a run's (locked, removed at the end).
    pub fn new(dir: PathBuf, run: bool) -> Result<Staging, String> {
        let mut lock = None;
        if run {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let f = std::fs::File::create(dir.join("lock"))
                .map_err(|e| format!("{}: {e}", dir.display()))?;
            lock = Some(
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
                    .map_err(|(_, e)| format!("{}: {e}", dir.display()))?,
            );
        }
        Ok(Staging {
            dir,
            remove: run,
            _lock: lock,
        })
    }
}

/// Remove the staging folders of runs that died without cleaning up (`STATE/home-files/*`
/// whose lock nobody holds, as `lock_free` tells). Returns their names.
pub fn sweep(state: &Path, lock_free: impl Fn(&Path) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(state.join("home-files")) else {
        return out;
    };
    for e in rd.flatten() {
        if lock_free(&e.path()) {
            let _ = std::fs::remove_dir_all(e.path());
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn relative(rel: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(rel);
    if rel.is_empty()
        || p.is_absolute()
        || p.components().any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(format!(
            "home_files.{rel:?}: must be a path relative to the home folder, without `..`"
        ));
    }
    Ok(p)
}

fn copy(src: &Path, dst: &Path, owner: Option<(u32, u32)>) -> Result<(), String> {
    let _ = std::fs::remove_file(dst);
    let _ = std::fs::remove_dir_all(dst);
    super::clone::copy_tree(src, dst).map_err(|e| e.to_string())?;
    if let Some((u, g)) = owner {
        super::clone::chown_tree(dst, u, g).map_err(|e| format!("{}: {e}", dst.display()))?;
    }
    Ok(())
}

/// Turn `spec.home_files` into binds (and seed copies). `kept_home`: a named sandbox's home on
/// disk; `staging`: where copies go. `owner`: the host uid/gid owning the sandbox user's files
/// (root-run sandboxes), for copies the sandbox may read or own.
pub fn stage(
    spec: &mut RunSpec,
    kept_home: Option<&Path>,
    staging: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), String> {
    let home = PathBuf::from(spec.user.home());
    // Bind sources are opened without following links at start (a link in one is refused:
    // `LaunchPlan::sealed_sources`): the staging folder and a `link` file are bound by their
    // canonical paths, the user's own links (a dotfile manager's) resolved here.
    std::fs::create_dir_all(staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    let staging =
        &std::fs::canonicalize(staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    for (rel, hf) in spec.home_files.clone() {
        let r = relative(&rel)?;
        if std::fs::symlink_metadata(&hf.source).is_err() {
            return Err(format!(
                "home_files.{rel:?}: the source {} does not exist",
                hf.source.display()
            ));
        }
        let target = home.join(&r);
        match hf.mode {
            HomeFileMode::Link => spec.binds.push(BindSpec {
                source: std::fs::canonicalize(&hf.source).map_err(|e| {
                    format!(
                        "home_files.{rel:?}: the source {}: {e}",
                        hf.source.display()
                    )
                })?,
                target,
                writable: false,
            }),
            HomeFileMode::Immutable => {
                let copy_at = staging.join("immutable").join(&r);
                copy(&hf.source, &copy_at, owner)?;
                spec.binds.push(BindSpec {
                    source: copy_at,
                    target,
                    writable: false,
                });
            }
            HomeFileMode::Seed => match kept_home {
                Some(h) => seed(h, &r, &rel, &hf.source, owner)?,
                None => {
                    // Bound writable with the workspace's id mapping: the invoking user's files
                    // are the sandbox user's inside, so the copy stays the invoker's.
                    let copy_at = staging.join("seed").join(&r);
                    copy(&hf.source, &copy_at, None)?;
                    spec.binds.push(BindSpec {
                        source: copy_at,
                        target,
                        writable: true,
                    });
                }
            },
        }
    }
    Ok(())
}

/// A seed's copy in a named sandbox's kept home `h`, at `r`, made once (none there yet).
fn seed(
    h: &Path,
    r: &Path,
    rel: &str,
    source: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), String> {
    let dst = h.join(r);
    if std::fs::symlink_metadata(&dst).is_err() {
        // Folders on the way belong to the sandbox user too, or it could not
        // create its own files (or mount points) next to the seed.
        let mut d = h.to_path_buf();
        for c in r.parent().into_iter().flat_map(|p| p.components()) {
            d.push(c);
            // The sandbox writes its home: a link there would have this (host)
            // process write the copy wherever it points.
            if std::fs::symlink_metadata(&d).is_ok_and(|m| !m.is_dir()) {
                return Err(format!(
                        "home_files.{rel:?}: {} in the sandbox's home is not a folder (a symbolic link?); the seed is not written through it",
                        d.strip_prefix(h).unwrap_or(&d).display()
                    ));
            }
            if std::fs::symlink_metadata(&d).is_err() {
                std::fs::create_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
                if let Some((u, g)) = owner {
                    std::os::unix::fs::lchown(&d, Some(u), Some(g))
                        .map_err(|e| format!("{}: {e}", d.display()))?;
                }
            }
        }
        copy(source, &dst, owner)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A named sandbox's kept home is the sandbox's to write: a link it left on the way to a
    /// seed's place is refused, and nothing is written where it points.
    #[test]
    fn a_seed_is_never_written_through_a_link_in_the_kept_home() {
        let base = std::env::temp_dir().join(format!("airlock-hf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (home, outside, src) = (base.join("home"), base.join("outside"), base.join("seed"));
        for d in [&home, &outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&src, "seed\n").unwrap();
        std::os::unix::fs::symlink(&outside, home.join("cfg")).unwrap();
        let r = Path::new("cfg/seed.txt");
        let e = seed(&home, r, "cfg/seed.txt", &src, None).unwrap_err();
        assert!(e.contains("not a folder"), "{e}");
        assert!(!outside.join("seed.txt").exists());
        // A real folder there: seeded.
        std::fs::remove_file(home.join("cfg")).unwrap();
        seed(&home, r, "cfg/seed.txt", &src, None).unwrap();
        assert_eq!(
            std::fs::read_to_string(home.join("cfg/seed.txt")).unwrap(),
            "seed\n"
        );
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn relative_paths_only() {
        assert!(relative(".claude/CLAUDE.md").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "./a"] {
            assert!(relative(bad).is_err(), "{bad}");
        }
    }
}
