//! Executing a plan's mount steps inside the child's fresh mount namespace. Every mount target
//! is opened component by component with O_NOFOLLOW beneath the new root, so nothing that exists
//! in a mounted host directory (a planted symlink) can redirect a mount (CVE-2021-30465 class).
//!
//! Every OS call goes through [`Os`] (the real kernel in the child, a recording fake in the seam
//! tests, `tests.rs`), so the exact sequence a plan becomes is tested without root.

use crate::os::Os;
use crate::sys;
use airlock_model::plan::{LaunchPlan, MountStep, UpperStore};
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct MountError {
    pub what: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

fn err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> MountError + 'a {
    move |source| MountError {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn internal(what: &'static str, path: &Path, why: &str) -> MountError {
    MountError {
        what,
        path: path.to_path_buf(),
        source: io::Error::other(why.to_string()),
    }
}

/// Detached mounts opened ahead of time, by step index (binds, devices, overlay lowers).
pub type Prepared<F = OwnedFd> = Vec<Option<F>>;

/// Whether [`prepare`] opens a source for `step`.
pub fn has_source(step: &MountStep) -> bool {
    matches!(
        step,
        MountStep::BindRo { .. }
            | MountStep::BindRw { .. }
            | MountStep::Overlay { .. }
            | MountStep::Device { .. }
            | MountStep::ImageLayer { .. }
    )
}

/// Open the sources of every bind-like step as detached mounts with their final flags.
/// Root-run sandboxes do this in the privileged parent (it can traverse any host path and
/// apply idmappings); rootless ones in the child.
pub fn prepare<O: Os>(
    os: &O,
    plan: &LaunchPlan,
    idmap: Option<&O::Fd>,
) -> Result<Prepared<O::Fd>, MountError> {
    let base = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
    plan.mounts
        .iter()
        .map(|step| {
            let (src, attrs, map) = match step {
                MountStep::BindRo { source, .. } => {
                    (source.clone(), base | sys::MOUNT_ATTR_RDONLY, None)
                }
                MountStep::BindRw {
                    source,
                    idmap: want,
                    ..
                } => (source.clone(), base, idmap.filter(|_| *want)),
                MountStep::Overlay {
                    lower, idmap: want, ..
                } => (
                    lower.clone(),
                    base | sys::MOUNT_ATTR_RDONLY,
                    idmap.filter(|_| *want),
                ),
                MountStep::Device { name } => (
                    Path::new("/dev").join(name),
                    sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC,
                    None,
                ),
                MountStep::ImageLayer { source } => {
                    (source.clone(), base | sys::MOUNT_ATTR_RDONLY, None)
                }
                // (`has_source`: false)
                _ => return Ok(None),
            };
            // The user's sources (and the project) were canonical when checked: a symbolic
            // link in one now was planted since (`LaunchPlan::sealed_sources`).
            let fd = if plan.sealed_sources.contains(&src) {
                os.open_tree_clone_nofollow(&src)
            } else {
                os.open_tree_clone(&src, true)
            }
            .map_err(err("cannot open", &src))?;
            os.mount_setattr(&fd, attrs, true, map)
                .map_err(err("cannot set mount flags on", &src))?;
            Ok(Some(fd))
        })
        .collect()
}

fn rel_components(target: &Path) -> Vec<&std::ffi::OsStr> {
    target
        .components()
        .filter_map(|c| {
            if let Component::Normal(n) = c {
                Some(n)
            } else {
                None
            }
        })
        .collect()
}

use crate::nofollow::PATH_FLAGS;

/// Open (creating as needed) `target` beneath `root` without following any symlink.
/// `leaf_dir`: create a directory (true) or an empty file (false) when missing.
pub(crate) fn open_target<O: Os>(
    os: &O,
    root: &O::Fd,
    target: &Path,
    leaf_dir: bool,
) -> io::Result<O::Fd> {
    let comps = rel_components(target);
    let mut cur = os.dup(root)?;
    for (i, name) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let want_dir = !last || leaf_dir;
        let flags = if want_dir {
            PATH_FLAGS | OFlag::O_DIRECTORY
        } else {
            PATH_FLAGS
        };
        match os.openat(&cur, name, flags, 0) {
            Ok(fd) => cur = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                if want_dir {
                    os.mkdirat(&cur, name, 0o755)?;
                } else {
                    let f = os.openat(
                        &cur,
                        name,
                        OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_WRONLY
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        0o644,
                    )?;
                    drop(f);
                }
                cur = os.openat(&cur, name, flags, 0)?;
            }
            Err(e) => {
                return Err(io::Error::other(format!(
                    "component {:?}: {e} (symlinks are not followed)",
                    name
                )))
            }
        }
    }
    Ok(cur)
}

/// Open an existing `target` beneath `root` (O_PATH), never through a symlink; None when any
/// component is missing or a symlink.
fn open_existing<O: Os>(os: &O, root: &O::Fd, target: &Path) -> Option<O::Fd> {
    os.open_no_symlinks(root, target).ok()
}

fn parent_and_name<O: Os>(
    os: &O,
    root: &O::Fd,
    target: &Path,
) -> io::Result<(O::Fd, std::ffi::OsString)> {
    let name = target
        .file_name()
        .ok_or_else(|| io::Error::other("no file name"))?
        .to_os_string();
    let parent = target.parent().unwrap_or(Path::new("/"));
    Ok((open_target(os, root, parent, true)?, name))
}

fn is_dir_fd<O: Os>(os: &O, fd: &O::Fd) -> bool {
    os.stat_mode(fd)
        .is_ok_and(|m| m & libc::S_IFMT == libc::S_IFDIR)
}

/// Disk-backed overlay layers in the run directory (opened by the child before it drops the
/// host uid), for kernels whose tmpfs cannot hold the upper layer.
pub struct OverlayDirs<F = OwnedFd> {
    pub upper: F,
    pub work: F,
}

/// Descriptors PID 1 keeps to summarize the overlay's changes after the command exits.
#[derive(Debug)]
pub struct SummaryDirs<F = OwnedFd> {
    pub upper: F,
    pub lower: F,
}

fn escape_opt(p: &Path) -> String {
    p.to_string_lossy()
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace(':', "\\:")
}

/// The new root: a tmpfs attached on the run's mount point (reached through the mount's own
/// fd, so no host directory permissions are involved).
pub struct NewRoot<F = OwnedFd> {
    pub fd: F,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC);

/// What `build` leaves: the new root, and the overlay workspace's layers for the change summary.
pub type Built<F> = (NewRoot<F>, Option<SummaryDirs<F>>);

/// Mount the root tmpfs on `mount_point` and execute every step beneath it.
pub fn build<O: Os>(
    os: &O,
    plan: &LaunchPlan,
    mount_point: &O::Fd,
    prepared: &mut Prepared<O::Fd>,
    disk: Option<&OverlayDirs<O::Fd>>,
) -> Result<Built<O::Fd>, MountError> {
    let mut root: Option<NewRoot<O::Fd>> = None;
    let mut summary = None;
    let mut layers = 0usize;
    for (i, step) in plan.mounts.iter().enumerate() {
        if let MountStep::Tmpfs {
            target,
            mode,
            size,
            owner,
            ..
        } = step
        {
            if target == Path::new("/") {
                let mut opts = vec![
                    ("mode", format!("{mode:o}")),
                    ("uid", owner.0.to_string()),
                    ("gid", owner.1.to_string()),
                ];
                if let Some(s) = size {
                    opts.push(("size", s.to_string()));
                }
                let fd = os
                    .fsmount_tmpfs(&opts, sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV)
                    .map_err(err("cannot create the root tmpfs", target))?;
                os.move_mount(&fd, mount_point)
                    .map_err(err("cannot attach the root tmpfs", target))?;
                root = Some(NewRoot { fd });
                continue;
            }
        }
        let Some(r) = root.as_ref() else {
            return Err(internal(
                "plan does not start with the root tmpfs",
                Path::new("/"),
                "bad plan",
            ));
        };
        let fd = prepared.get_mut(i).and_then(Option::take);
        if let MountStep::ImageLayer { source } = step {
            let fd =
                fd.ok_or_else(|| internal("image layer was not prepared", source, "internal"))?;
            let at = Path::new(IMAGE_STAGE).join(layers.to_string());
            let t = open_target(os, &r.fd, &at, true).map_err(err("cannot create", &at))?;
            os.move_mount(&fd, &t)
                .map_err(err("cannot stage the image layer at", &at))?;
            layers += 1;
            continue;
        }
        if let MountStep::ImageRoot { upper_size, owner } = step {
            let fd = image_root(os, r, layers, *upper_size, *owner)?;
            root = Some(NewRoot { fd });
            continue;
        }
        if let MountStep::Overlay { target, upper, .. } = step {
            let fd =
                fd.ok_or_else(|| internal("overlay lower was not prepared", target, "internal"))?;
            summary = Some(overlay(os, r, target, fd, upper, plan.user, disk, false)?);
        } else {
            step_exec(os, r, step, fd)?;
        }
    }
    let root =
        root.ok_or_else(|| internal("plan has no root tmpfs", Path::new("/"), "bad plan"))?;
    Ok((root, summary))
}

const STAGE: &str = "/.airlock-stage";
/// Where an image's layers, upper layer and merged root are staged in the scaffold tmpfs.
const IMAGE_STAGE: &str = "/.airlock-image";

/// Mount an image's root: the overlay of the `layers` staged layers (0 on top) with a tmpfs
/// upper layer, on a directory of the scaffold; the staged mounts are detached again (overlay
/// holds its own references). Returns the overlay's root, beneath which the rest is built.
fn image_root<O: Os>(
    os: &O,
    scaffold: &NewRoot<O::Fd>,
    layers: usize,
    upper_size: u64,
    owner: (u32, u32),
) -> Result<O::Fd, MountError> {
    let stage = Path::new(IMAGE_STAGE);
    if layers == 0 {
        return Err(internal("an image root needs layers", stage, "bad plan"));
    }
    let up_at = stage.join("up");
    let u = open_target(os, &scaffold.fd, &up_at, true).map_err(err("cannot create", &up_at))?;
    let step = MountStep::Tmpfs {
        target: up_at.clone(),
        mode: 0o755,
        size: Some(upper_size),
        owner,
        noexec: false,
    };
    tmpfs(os, &u, &step).map_err(err("cannot mount the image's upper tmpfs on", &up_at))?;
    let up = os
        .open_beneath(&scaffold.fd, &up_at, DIR_FLAGS)
        .map_err(err("cannot open", &up_at))?;
    for (name, mode) in [("upper", 0o755), ("work", 0o700)] {
        os.mkdirat(&up, name.as_ref(), mode)
            .map_err(|e| MountError {
                what: "cannot create the image's layer",
                path: up_at.join(name),
                source: e,
            })?;
    }
    let merged_at = stage.join("root");
    let t = open_target(os, &scaffold.fd, &merged_at, true)
        .map_err(err("cannot create", &merged_at))?;
    let base = os.fd_path(&scaffold.fd);
    let under = |rel: &Path| base.join(rel.strip_prefix("/").unwrap_or(rel));
    let lower: Vec<String> = (0..layers)
        .map(|i| escape_opt(&under(&stage.join(i.to_string()))))
        .collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        lower.join(":"),
        escape_opt(&under(&up_at.join("upper"))),
        escape_opt(&under(&up_at.join("work")))
    );
    os.mount_on(
        &t,
        "overlay",
        "overlay",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(err("cannot mount the image's overlay root on", &merged_at))?;
    let merged = os
        .open_beneath(&scaffold.fd, &merged_at, PATH_FLAGS | OFlag::O_DIRECTORY)
        .map_err(err("cannot open", &merged_at))?;
    for staged in (0..layers)
        .map(|i| stage.join(i.to_string()))
        .chain([up_at.clone()])
    {
        os.umount_beneath(&scaffold.fd, &staged)
            .map_err(err("cannot detach", &staged))?;
    }
    Ok(merged)
}

/// Mount the overlay workspace: stage the (possibly idmapped) lower layer and, for a tmpfs upper,
/// a size-bounded tmpfs inside the root; mount the overlay from them; keep directory fds for the
/// change summary; detach the staging mounts (overlay holds its own references) — unless
/// `keep_stage`: a throwaway mount namespace's staging, gone with it (detaching a mount waits
/// for an RCU grace period: ≈ 0.15 ms here).
#[allow(clippy::too_many_arguments)]
pub(crate) fn overlay<O: Os>(
    os: &O,
    root: &NewRoot<O::Fd>,
    target: &Path,
    lower: O::Fd,
    upper: &UpperStore,
    user: (u32, u32),
    disk: Option<&OverlayDirs<O::Fd>>,
    keep_stage: bool,
) -> Result<SummaryDirs<O::Fd>, MountError> {
    let stage = Path::new(STAGE);
    let lower_at = stage.join("lower");
    let l = open_target(os, &root.fd, &lower_at, true).map_err(err("cannot create", &lower_at))?;
    os.move_mount(&lower, &l)
        .map_err(err("cannot stage the overlay lower layer at", &lower_at))?;
    let lower_dir = os
        .open_beneath(&root.fd, &lower_at, DIR_FLAGS)
        .map_err(err("cannot open", &lower_at))?;
    let lower_mode = os
        .stat_mode(&lower_dir)
        .map(|m| m & 0o7777)
        .unwrap_or(0o755);

    let up_at = stage.join("up");
    let (upper_dir, work_dir) = match upper {
        UpperStore::Tmpfs { size, owner } => {
            let u =
                open_target(os, &root.fd, &up_at, true).map_err(err("cannot create", &up_at))?;
            let step = MountStep::Tmpfs {
                target: up_at.clone(),
                mode: 0o755,
                size: *size,
                owner: *owner,
                noexec: false,
            };
            tmpfs(os, &u, &step).map_err(err("cannot mount the upper tmpfs on", &up_at))?;
            let up = os
                .open_beneath(&root.fd, &up_at, DIR_FLAGS)
                .map_err(err("cannot open", &up_at))?;
            for (name, mode) in [("upper", lower_mode), ("work", 0o700)] {
                os.mkdirat(&up, name.as_ref(), mode)
                    .map_err(|e| MountError {
                        what: "cannot create the overlay layer",
                        path: up_at.join(name),
                        source: e,
                    })?;
            }
            let open_layer = |name: &str| {
                os.openat(&up, name.as_ref(), DIR_FLAGS | OFlag::O_NOFOLLOW, 0)
                    .map_err(|e| MountError {
                        what: "cannot open",
                        path: up_at.join(name),
                        source: e,
                    })
            };
            (open_layer("upper")?, open_layer("work")?)
        }
        UpperStore::Disk => {
            let d = disk
                .ok_or_else(|| internal("no disk overlay directories for", target, "internal"))?;
            let dup = |fd: &O::Fd| os.dup(fd).map_err(err("dup", target));
            let (u, w) = (dup(&d.upper)?, dup(&d.work)?);
            // O_PATH descriptors cannot be read; reopen the upper for the summary.
            let u = os
                .reopen(&u, DIR_FLAGS)
                .map_err(err("cannot open the upper layer of", target))?;
            (u, w)
        }
    };
    // The workspace root shows the upper directory's owner and mode: the sandbox user's.
    os.fchown(&upper_dir, user.0, user.1)
        .map_err(err("cannot chown the upper layer of", target))?;
    os.fchmod(&upper_dir, lower_mode)
        .map_err(err("cannot chmod the upper layer of", target))?;

    let t = open_target(os, &root.fd, target, true).map_err(err("cannot create", target))?;
    let data = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        escape_opt(
            &os.fd_path(&root.fd)
                .join(lower_at.strip_prefix("/").unwrap_or(&lower_at))
        ),
        escape_opt(&os.fd_path(&upper_dir)),
        escape_opt(&os.fd_path(&work_dir))
    );
    os.mount_on(
        &t,
        "overlay",
        "overlay",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(err("cannot mount the overlay workspace on", target))?;
    if keep_stage {
        return Ok(SummaryDirs {
            upper: upper_dir,
            lower: lower_dir,
        });
    }
    for staged in [&lower_at, &up_at] {
        match os.umount_beneath(&root.fd, staged) {
            Ok(()) => {}
            // EINVAL / ENOENT: a disk upper was never staged here.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {}
            Err(e) => {
                return Err(MountError {
                    what: "cannot detach",
                    path: staged.clone(),
                    source: e,
                })
            }
        }
    }
    for d in [&lower_at, &up_at, &stage.to_path_buf()] {
        let _ = os.remove_dir_beneath(&root.fd, d);
    }
    Ok(SummaryDirs {
        upper: upper_dir,
        lower: lower_dir,
    })
}

fn tmpfs<O: Os>(os: &O, at: &O::Fd, step: &MountStep) -> io::Result<()> {
    let MountStep::Tmpfs {
        mode,
        size,
        owner,
        noexec,
        ..
    } = step
    else {
        return Ok(());
    };
    let mut data = format!("mode={mode:o},uid={},gid={}", owner.0, owner.1);
    if let Some(s) = size {
        data.push_str(&format!(",size={s}"));
    }
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if *noexec {
        flags |= MsFlags::MS_NOEXEC;
    }
    os.mount_on(at, "tmpfs", "tmpfs", flags, Some(data.as_str()))
}

pub(crate) fn step_exec<O: Os>(
    os: &O,
    new_root: &NewRoot<O::Fd>,
    step: &MountStep,
    fd: Option<O::Fd>,
) -> Result<(), MountError> {
    let root = &new_root.fd;
    match step {
        MountStep::Tmpfs { target, .. } => {
            let t = open_target(os, root, target, true).map_err(err("cannot create", target))?;
            tmpfs(os, &t, step).map_err(err("cannot mount tmpfs on", target))
        }
        MountStep::BindRo { target, source } | MountStep::BindRw { target, source, .. } => {
            let fd =
                fd.ok_or_else(|| internal("bind source was not prepared", source, "internal"))?;
            let t = open_target(os, root, target, is_dir_fd(os, &fd))
                .map_err(err("cannot create mount point", target))?;
            os.move_mount(&fd, &t)
                .map_err(err("cannot bind onto", target))
        }
        MountStep::Device { name } => {
            let target = Path::new("/dev").join(name);
            let fd = fd.ok_or_else(|| internal("device was not prepared", &target, "internal"))?;
            let t = open_target(os, root, &target, false).map_err(err("cannot create", &target))?;
            os.move_mount(&fd, &t)
                .map_err(err("cannot bind device onto", &target))
        }
        MountStep::Overlay { target, .. } => {
            Err(internal("overlay handled by build", target, "internal"))
        }
        MountStep::Symlink { target, points_to } => {
            let (dir, name) =
                parent_and_name(os, root, target).map_err(err("cannot create", target))?;
            os.symlinkat(points_to, &dir, &name)
                .map_err(err("cannot create symlink", target))
        }
        MountStep::Dir { target, mode } => {
            let t = open_target(os, root, target, true).map_err(err("cannot create", target))?;
            let d = os
                .reopen(&t, DIR_FLAGS)
                .map_err(err("cannot open", target))?;
            os.fchmod(&d, *mode).map_err(err("cannot chmod", target))
        }
        MountStep::File {
            target,
            contents,
            mode,
        } => {
            let (dir, name) =
                parent_and_name(os, root, target).map_err(err("cannot create", target))?;
            let create = || {
                os.openat(
                    &dir,
                    &name,
                    OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_WRONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    *mode,
                )
            };
            // An image root has its own /etc files (or symlinks there): replaced, never
            // written through.
            let f = match create() {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => os
                    .unlinkat(&dir, &name)
                    .and_then(|()| create())
                    .map_err(err("cannot replace", target))?,
                other => other.map_err(err("cannot create", target))?,
            };
            os.write_all(&f, contents.as_bytes())
                .map_err(err("cannot write", target))?;
            os.fchmod(&f, *mode).map_err(err("cannot chmod", target))
        }
        MountStep::Proc { target } => {
            let t = open_target(os, root, target, true).map_err(err("cannot create", target))?;
            os.mount_on(
                &t,
                "proc",
                "proc",
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None,
            )
            .map_err(err("cannot mount a fresh /proc on", target))
        }
        MountStep::ReadOnly { target } => match os.open_tree_clone_beneath(root, target) {
            Ok(fd) => {
                os.mount_setattr(
                    &fd,
                    sys::MOUNT_ATTR_RDONLY
                        | sys::MOUNT_ATTR_NOSUID
                        | sys::MOUNT_ATTR_NODEV
                        | sys::MOUNT_ATTR_NOEXEC,
                    true,
                    None,
                )
                .map_err(err("cannot make read-only", target))?;
                let t = os
                    .open_beneath(root, target, PATH_FLAGS)
                    .map_err(err("cannot open", target))?;
                os.move_mount(&fd, &t)
                    .map_err(err("cannot remount read-only", target))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(MountError {
                what: "cannot open",
                path: target.clone(),
                source: e,
            }),
        },
        MountStep::Sysfs { target } => {
            let t = open_target(os, root, target, true).map_err(err("cannot create", target))?;
            let flags =
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            if os.mount_on(&t, "sysfs", "sysfs", flags, None).is_err() {
                // Some hosts forbid a fresh sysfs; an empty read-only tmpfs is the safe fallback.
                os.mount_on(&t, "tmpfs", "tmpfs", flags, Some("size=0,mode=555"))
                    .map_err(err("cannot mount /sys on", target))?;
            }
            Ok(())
        }
        MountStep::Devpts { target } => {
            let t = open_target(os, root, target, true).map_err(err("cannot create", target))?;
            os.mount_on(
                &t,
                "devpts",
                "devpts",
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("newinstance,ptmxmode=0666,mode=0620"),
            )
            .map_err(err("cannot mount devpts on", target))
        }
        MountStep::Protect { target } => {
            let Some(t) = open_existing(os, root, target) else {
                return Ok(());
            };
            let fd = os
                .open_tree_clone_fd(&t)
                .map_err(err("cannot open", target))?;
            os.mount_setattr(
                &fd,
                sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
                true,
                None,
            )
            .map_err(err("cannot make read-only", target))?;
            os.move_mount(&fd, &t)
                .map_err(err("cannot protect", target))
        }
        MountStep::Pin { target } => {
            let Some(t) = open_existing(os, root, target) else {
                return Ok(());
            };
            let fd = os
                .open_tree_clone_fd(&t)
                .map_err(err("cannot open", target))?;
            os.move_mount(&fd, &t).map_err(err("cannot pin", target))
        }
        MountStep::RootReadOnly => Ok(()), // applied after pivot_root, see `finish`
        MountStep::ImageLayer { .. } | MountStep::ImageRoot { .. } => Err(internal(
            "image root handled by build",
            Path::new(IMAGE_STAGE),
            "internal",
        )),
    }
}

/// A step of [`enter`] that failed: what it was, and why.
#[derive(Debug)]
pub struct Failed {
    pub what: &'static str,
    pub error: String,
}

fn step<T, E: std::fmt::Display>(what: &'static str, r: Result<T, E>) -> Result<T, Failed> {
    r.map_err(|e| Failed {
        what,
        error: e.to_string(),
    })
}

/// The child's way into its root, in order: become the namespace's root (root-run sandboxes;
/// a rootless child already is), a cgroup namespace of its own, private mounts, the bind
/// sources (opened here when the parent did not), the root built from the plan, pivot_root,
/// and the root made read-only. Returns the overlay's layers for the change summary.
pub fn enter<O: Os>(
    os: &O,
    plan: &LaunchPlan,
    mount_point: O::Fd,
    prepared: Option<Prepared<O::Fd>>,
    overlay: Option<OverlayDirs<O::Fd>>,
) -> Result<Option<SummaryDirs<O::Fd>>, Failed> {
    if !plan.rootless {
        step("become root in the sandbox", os.become_root())?;
    }
    step("unshare cgroup namespace", os.unshare_cgroup_ns())?;
    step("make mounts private", os.make_mounts_private())?;
    let mut prepared = match prepared {
        Some(p) => p,
        None => step("prepare mounts", prepare(os, plan, None))?,
    };
    let (new_root, summary) = step(
        "build root filesystem",
        build(os, plan, &mount_point, &mut prepared, overlay.as_ref()),
    )?;
    drop(prepared);
    drop(overlay);
    drop(mount_point);
    crate::phase("child: built root");
    step("pivot_root", pivot(os, &new_root))?;
    drop(new_root);
    step("make the root read-only", finish(os, plan))?;
    Ok(summary)
}

/// Switch into the new root and detach the host's filesystem tree entirely.
pub fn pivot<O: Os>(os: &O, root: &NewRoot<O::Fd>) -> io::Result<()> {
    os.pivot_into(&root.fd)
}

/// Steps that must run after pivot_root.
pub fn finish<O: Os>(os: &O, plan: &LaunchPlan) -> io::Result<()> {
    if plan.mounts.contains(&MountStep::RootReadOnly) {
        os.remount_root_readonly()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
