//! Hot-plug mounts: a host path bound into a running named sandbox (`airlock mount`), or such
//! a bind taken away again (`airlock unmount`), inside its mount namespace, without a restart.
//!
//! The host side is opened here, never through a symlink (each component `O_NOFOLLOW`); the
//! destination is opened inside the sandbox's mount namespace the same way (created as needed,
//! as a directory or an empty file), so a symlink the sandbox planted in either path is refused
//! rather than followed. The detached mount (`open_tree`) is attached to the opened
//! destination (`move_mount`), so nothing can be swapped in between.
//!
//! Root-run sandboxes: this (privileged) process opens the tree and applies the idmapping of a
//! writable bind, as at start; a forked child joins the sandbox's user and mount namespaces and
//! attaches it. Rootless ones: the child joins the user namespace, makes a mount namespace of
//! its own there (a copy of the host's, which it may clone from), opens the tree, then joins
//! the sandbox's mount namespace to attach it. Joining namespaces needs a single thread: the
//! child is forked for it.

use super::error::{io_err, RunError};
use super::forked;
use crate::nofollow::{kind, names, open_nofollow, walk, Leaf};
use crate::sys;
use airlock_model::plan::LaunchPlan;
use nix::sched::CloneFlags;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What to change in a running sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hotplug {
    /// Bind host `source` at `target` inside (read-only unless `writable`).
    Mount {
        source: PathBuf,
        target: PathBuf,
        writable: bool,
    },
    /// Detach the bind at `target`, which must be a bind of `source` (checked by inode, so a
    /// path the sandbox rearranged cannot make it detach something else).
    Unmount { source: PathBuf, target: PathBuf },
}

/// Open (creating as needed: directories, and the leaf as a directory when `dir`, else an
/// empty file) `path` from the current root without following any symlink.
fn open_or_create(path: &Path, dir: bool) -> io::Result<OwnedFd> {
    if names(path)?.is_empty() {
        return Err(io::Error::other("cannot mount over /"));
    }
    walk(path, if dir { Leaf::Dir } else { Leaf::File })
}

/// The detached mount of host `source` (opened without following symlinks), with the flags
/// of a bind (nosuid, nodev; read-only unless `writable`) and an optional idmapping.
fn detached(source: &Path, writable: bool, idmap: Option<&OwnedFd>) -> io::Result<(OwnedFd, bool)> {
    let fd = open_nofollow(source)?;
    let is_dir = match kind(&fd)? {
        libc::S_IFDIR => true,
        libc::S_IFREG => false,
        _ => {
            return Err(io::Error::other(format!(
                "{} is neither a directory nor a regular file",
                source.display()
            )))
        }
    };
    let tree = sys::open_tree_clone_fd(&fd)
        .map_err(|e| io::Error::other(format!("open_tree {}: {e}", source.display())))?;
    let mut attrs = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
    if !writable {
        attrs |= sys::MOUNT_ATTR_RDONLY;
    }
    sys::mount_setattr(&tree, attrs, true, idmap).map_err(|e| {
        io::Error::other(format!("set the mount flags of {}: {e}", source.display()))
    })?;
    Ok((tree, is_dir))
}

/// (device, inode) of what `fd` is.
fn identity(fd: &OwnedFd) -> io::Result<(u64, u64)> {
    let st = nix::sys::stat::fstat(fd.as_fd())?;
    Ok((st.st_dev, st.st_ino))
}

/// Apply `change` to the running sandbox in `dir` (its plan: `plan`). Blocks until done.
pub fn apply(dir: &Path, plan: &LaunchPlan, change: &Hotplug) -> Result<(), RunError> {
    if super::exec::pid1(dir).is_none() {
        return Err(RunError::Setup(format!(
            "sandbox {} is not running",
            plan.name
        )));
    }
    let ns = super::exec::Namespaces::of(dir, &plan.name)?;
    let (userns, mntns) = (
        ns.get(CloneFlags::CLONE_NEWUSER)?,
        ns.get(CloneFlags::CLONE_NEWNS)?,
    );
    // Root-run: this process opens (and idmaps) the tree; the child only attaches it.
    let mut prepared: Option<(OwnedFd, bool)> = None;
    let mut expect: Option<(u64, u64)> = None;
    match change {
        Hotplug::Mount {
            source, writable, ..
        } if !plan.rootless => {
            let idmap = if *writable {
                let st = nix::sys::stat::stat(source.as_path())
                    .map_err(|e| io_err("stat the host path")(e.into()))?;
                let to = (
                    plan.uid_map[0].outside + plan.user.0,
                    plan.gid_map[0].outside + plan.user.1,
                );
                Some(
                    crate::userns::idmap_userns((st.st_uid, st.st_gid), to)
                        .map_err(io_err("create the idmapping user namespace"))?,
                )
            } else {
                None
            };
            prepared = Some(
                detached(source, *writable, idmap.as_ref())
                    .map_err(|e| RunError::Setup(e.to_string()))?,
            );
        }
        Hotplug::Unmount { source, .. } => {
            let fd = open_nofollow(source).map_err(|e| RunError::Setup(e.to_string()))?;
            expect = Some(identity(&fd).map_err(io_err("stat the host path"))?);
        }
        Hotplug::Mount { .. } => {}
    }
    forked::run("mount", "", |h| {
        h.join_user(userns.as_fd());
        let tree = match (change, prepared) {
            (
                Hotplug::Mount {
                    source, writable, ..
                },
                None,
            ) => {
                // Rootless: clone the host path from a mount namespace of our own.
                if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWNS) {
                    h.fail(format!("make a mount namespace: {e}"));
                }
                match detached(source, *writable, None) {
                    Ok(t) => Some(t),
                    Err(e) => h.fail(e.to_string()),
                }
            }
            (_, p) => p,
        };
        if !plan.rootless {
            // Become the sandbox's root: what it creates inside is its own.
            h.become_root();
        }
        h.join_mounts(mntns.as_fd());
        match change {
            Hotplug::Mount { target, .. } => {
                let Some((tree, is_dir)) = tree else {
                    h.fail("internal: no mount to attach".into())
                };
                let at = match open_or_create(target, is_dir) {
                    Ok(fd) => fd,
                    Err(e) => h.fail(format!("inside the sandbox: {e}")),
                };
                if let Err(e) = sys::move_mount_to_fd(&tree, &at) {
                    h.fail(format!("attach at {}: {e}", target.display()));
                }
            }
            Hotplug::Unmount { target, .. } => {
                let at = match open_nofollow(target) {
                    Ok(fd) => fd,
                    Err(e) => h.fail(format!("inside the sandbox: {e}")),
                };
                if identity(&at).ok() != expect {
                    h.fail(format!(
                        "{} inside is not the bind of that host path",
                        target.display()
                    ));
                }
                if let Err(e) = nix::unistd::fchdir(at.as_fd())
                    .and_then(|()| nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH))
                {
                    h.fail(format!("detach {}: {e}", target.display()));
                }
            }
        }
    })
}
