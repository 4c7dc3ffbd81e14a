//! Executing a plan's mount steps inside the child's fresh mount namespace. Every mount target
//! is opened component by component with O_NOFOLLOW beneath the new root, so nothing that exists
//! in a mounted host directory (a planted symlink) can redirect a mount (CVE-2021-30465 class).

use crate::sys;
use airlock_model::plan::{LaunchPlan, MountStep, UpperStore};
use nix::fcntl::{openat, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fchmod, Mode};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
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

fn nix_err(e: nix::Error) -> io::Error {
    io::Error::from(e)
}

/// Detached mounts opened ahead of time, by step index (binds, devices, overlay lowers).
pub type Prepared = Vec<Option<OwnedFd>>;

/// Open the sources of every bind-like step as detached mounts with their final flags.
/// Root-run sandboxes do this in the privileged parent (it can traverse any host path and
/// apply idmappings); rootless ones in the child.
pub fn prepare(plan: &LaunchPlan, idmap: Option<&OwnedFd>) -> Result<Prepared, MountError> {
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
                _ => return Ok(None),
            };
            let fd = sys::open_tree_clone(&src, true).map_err(err("cannot open", &src))?;
            sys::mount_setattr(&fd, attrs, true, map)
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

/// Open (creating as needed) `target` beneath `root` without following any symlink.
/// `leaf_dir`: create a directory (true) or an empty file (false) when missing.
fn open_target(root: &OwnedFd, target: &Path, leaf_dir: bool) -> io::Result<OwnedFd> {
    let comps = rel_components(target);
    let mut cur = nix::unistd::dup(root.as_fd()).map_err(nix_err)?;
    let path_flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    for (i, name) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let want_dir = !last || leaf_dir;
        let flags = if want_dir {
            path_flags | OFlag::O_DIRECTORY
        } else {
            path_flags
        };
        match openat(cur.as_fd(), *name, flags, Mode::empty()) {
            Ok(fd) => cur = fd,
            Err(nix::Error::ENOENT) => {
                if want_dir {
                    nix::sys::stat::mkdirat(cur.as_fd(), *name, Mode::from_bits_truncate(0o755))
                        .map_err(nix_err)?;
                } else {
                    let f = openat(
                        cur.as_fd(),
                        *name,
                        OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_WRONLY
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o644),
                    )
                    .map_err(nix_err)?;
                    drop(f);
                }
                cur = openat(cur.as_fd(), *name, flags, Mode::empty()).map_err(nix_err)?;
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
fn open_existing(root: &OwnedFd, target: &Path) -> Option<OwnedFd> {
    let mut cur = nix::unistd::dup(root.as_fd()).ok()?;
    for name in rel_components(target) {
        cur = openat(
            cur.as_fd(),
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let st = nix::sys::stat::fstat(&cur).ok()?;
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return None;
        }
    }
    Some(cur)
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn parent_and_name(root: &OwnedFd, target: &Path) -> io::Result<(OwnedFd, std::ffi::OsString)> {
    let name = target
        .file_name()
        .ok_or_else(|| io::Error::other("no file name"))?
        .to_os_string();
    let parent = target.parent().unwrap_or(Path::new("/"));
    Ok((open_target(root, parent, true)?, name))
}

fn is_dir_fd(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// Disk-backed overlay layers in the run directory (opened by the child before it drops the
/// host uid), for kernels whose tmpfs cannot hold the upper layer.
pub struct OverlayDirs {
    pub upper: OwnedFd,
    pub work: OwnedFd,
}

/// Descriptors PID 1 keeps to summarize the overlay's changes after the command exits.
pub struct SummaryDirs {
    pub upper: OwnedFd,
    pub lower: OwnedFd,
}

fn escape_opt(p: &Path) -> String {
    p.to_string_lossy()
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace(':', "\\:")
}

/// The new root: a tmpfs attached on the run's mount point, and a path that reaches inside it
/// (through the mount's own fd, so no host directory permissions are involved).
pub struct NewRoot {
    pub fd: OwnedFd,
}

impl NewRoot {
    /// A path to `rel` (absolute inside the sandbox) beneath the new root, mounts traversed.
    fn path(&self, rel: &Path) -> PathBuf {
        fd_path(&self.fd).join(rel.strip_prefix("/").unwrap_or(rel))
    }
}

/// Mount the root tmpfs on `mount_point` and execute every step beneath it.
pub fn build(
    plan: &LaunchPlan,
    mount_point: &OwnedFd,
    prepared: &mut Prepared,
    disk: Option<&OverlayDirs>,
) -> Result<(NewRoot, Option<SummaryDirs>), MountError> {
    let mut root: Option<NewRoot> = None;
    let mut summary = None;
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
                let fd = sys::fsmount_tmpfs(&opts, sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV)
                    .map_err(err("cannot create the root tmpfs", target))?;
                sys::move_mount_to_fd(&fd, mount_point)
                    .map_err(err("cannot attach the root tmpfs", target))?;
                root = Some(NewRoot { fd });
                continue;
            }
        }
        let Some(r) = root.as_ref() else {
            return Err(MountError {
                what: "plan does not start with the root tmpfs",
                path: "/".into(),
                source: io::Error::other("bad plan"),
            });
        };
        let fd = prepared.get_mut(i).and_then(Option::take);
        if let MountStep::Overlay { target, upper, .. } = step {
            let fd = fd.ok_or_else(|| MountError {
                what: "overlay lower was not prepared",
                path: target.clone(),
                source: io::Error::other("internal"),
            })?;
            summary = Some(overlay(r, target, fd, upper, plan.user, disk)?);
        } else {
            step_exec(r, step, fd)?;
        }
    }
    let root = root.ok_or_else(|| MountError {
        what: "plan has no root tmpfs",
        path: "/".into(),
        source: io::Error::other("bad plan"),
    })?;
    Ok((root, summary))
}

const STAGE: &str = "/.airlock-stage";

/// Mount the overlay workspace: stage the (possibly idmapped) lower layer and, for a tmpfs upper,
/// a size-bounded tmpfs inside the root; mount the overlay from them; keep directory fds for the
/// change summary; detach the staging mounts (overlay holds its own references).
fn overlay(
    root: &NewRoot,
    target: &Path,
    lower: OwnedFd,
    upper: &UpperStore,
    user: (u32, u32),
    disk: Option<&OverlayDirs>,
) -> Result<SummaryDirs, MountError> {
    let stage = Path::new(STAGE);
    let lower_at = stage.join("lower");
    let l = open_target(&root.fd, &lower_at, true).map_err(err("cannot create", &lower_at))?;
    sys::move_mount_to_fd(&lower, &l)
        .map_err(err("cannot stage the overlay lower layer at", &lower_at))?;
    let lower_dir = open_dir(&root.path(&lower_at)).map_err(err("cannot open", &lower_at))?;
    let lower_mode = nix::sys::stat::fstat(&lower_dir)
        .map(|st| st.st_mode & 0o7777)
        .unwrap_or(0o755);

    let up_at = stage.join("up");
    let (upper_dir, work_dir) = match upper {
        UpperStore::Tmpfs { size, owner } => {
            let u = open_target(&root.fd, &up_at, true).map_err(err("cannot create", &up_at))?;
            let step = MountStep::Tmpfs {
                target: up_at.clone(),
                mode: 0o755,
                size: *size,
                owner: *owner,
                noexec: false,
            };
            tmpfs(&fd_path(&u), &step).map_err(err("cannot mount the upper tmpfs on", &up_at))?;
            let up = open_dir(&root.path(&up_at)).map_err(err("cannot open", &up_at))?;
            for (name, mode) in [("upper", lower_mode), ("work", 0o700)] {
                nix::sys::stat::mkdirat(&up, name, Mode::from_bits_truncate(mode)).map_err(
                    |e| MountError {
                        what: "cannot create the overlay layer",
                        path: up_at.join(name),
                        source: e.into(),
                    },
                )?;
            }
            let open_layer = |name: &str| {
                openat(
                    &up,
                    name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| MountError {
                    what: "cannot open",
                    path: up_at.join(name),
                    source: e.into(),
                })
            };
            (open_layer("upper")?, open_layer("work")?)
        }
        UpperStore::Disk => {
            let d = disk.ok_or_else(|| MountError {
                what: "no disk overlay directories for",
                path: target.into(),
                source: io::Error::other("internal"),
            })?;
            let dup = |fd: &OwnedFd| {
                nix::unistd::dup(fd).map_err(|e| MountError {
                    what: "dup",
                    path: target.into(),
                    source: e.into(),
                })
            };
            let (u, w) = (dup(&d.upper)?, dup(&d.work)?);
            // O_PATH descriptors cannot be read; reopen the upper for the summary.
            let u =
                open_dir(&fd_path(&u)).map_err(err("cannot open the upper layer of", target))?;
            (u, w)
        }
    };
    // The workspace root shows the upper directory's owner and mode: the sandbox user's.
    nix::unistd::fchown(
        &upper_dir,
        Some(nix::unistd::Uid::from_raw(user.0)),
        Some(nix::unistd::Gid::from_raw(user.1)),
    )
    .map_err(|e| MountError {
        what: "cannot chown the upper layer of",
        path: target.into(),
        source: e.into(),
    })?;
    fchmod(&upper_dir, Mode::from_bits_truncate(lower_mode)).map_err(|e| MountError {
        what: "cannot chmod the upper layer of",
        path: target.into(),
        source: e.into(),
    })?;

    let t = open_target(&root.fd, target, true).map_err(err("cannot create", target))?;
    let data = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        escape_opt(&root.path(&lower_at)),
        escape_opt(&fd_path(&upper_dir)),
        escape_opt(&fd_path(&work_dir))
    );
    mount(
        Some("overlay"),
        &fd_path(&t),
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|e| MountError {
        what: "cannot mount the overlay workspace on",
        path: target.into(),
        source: e.into(),
    })?;
    for staged in [&lower_at, &up_at] {
        match nix::mount::umount2(&root.path(staged), nix::mount::MntFlags::MNT_DETACH) {
            // EINVAL / ENOENT: a disk upper was never staged here.
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => {
                return Err(MountError {
                    what: "cannot detach",
                    path: staged.clone(),
                    source: e.into(),
                })
            }
        }
    }
    let _ = std::fs::remove_dir(root.path(&lower_at));
    let _ = std::fs::remove_dir(root.path(&up_at));
    let _ = std::fs::remove_dir(root.path(stage));
    Ok(SummaryDirs {
        upper: upper_dir,
        lower: lower_dir,
    })
}

fn open_dir(p: &Path) -> io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        p,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

fn tmpfs(at: &Path, step: &MountStep) -> io::Result<()> {
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
    mount(Some("tmpfs"), at, Some("tmpfs"), flags, Some(data.as_str())).map_err(nix_err)
}

fn step_exec(new_root: &NewRoot, step: &MountStep, fd: Option<OwnedFd>) -> Result<(), MountError> {
    let root = &new_root.fd;
    match step {
        MountStep::Tmpfs { target, .. } => {
            let t = open_target(root, target, true).map_err(err("cannot create", target))?;
            tmpfs(&fd_path(&t), step).map_err(err("cannot mount tmpfs on", target))
        }
        MountStep::BindRo { target, source } | MountStep::BindRw { target, source, .. } => {
            let fd = fd.ok_or_else(|| MountError {
                what: "bind source was not prepared",
                path: source.clone(),
                source: io::Error::other("internal"),
            })?;
            let t = open_target(root, target, is_dir_fd(&fd))
                .map_err(err("cannot create mount point", target))?;
            sys::move_mount_to_fd(&fd, &t).map_err(err("cannot bind onto", target))
        }
        MountStep::Device { name } => {
            let target = Path::new("/dev").join(name);
            let fd = fd.ok_or_else(|| MountError {
                what: "device was not prepared",
                path: target.clone(),
                source: io::Error::other("internal"),
            })?;
            let t = open_target(root, &target, false).map_err(err("cannot create", &target))?;
            sys::move_mount_to_fd(&fd, &t).map_err(err("cannot bind device onto", &target))
        }
        MountStep::Overlay { target, .. } => Err(MountError {
            what: "overlay handled by build",
            path: target.clone(),
            source: io::Error::other("internal"),
        }),
        MountStep::Symlink { target, points_to } => {
            let (dir, name) =
                parent_and_name(root, target).map_err(err("cannot create", target))?;
            nix::unistd::symlinkat(points_to.as_path(), &dir, name.as_os_str()).map_err(|e| {
                MountError {
                    what: "cannot create symlink",
                    path: target.clone(),
                    source: e.into(),
                }
            })
        }
        MountStep::Dir { target, mode } => {
            let t = open_target(root, target, true).map_err(err("cannot create", target))?;
            let d = nix::fcntl::open(
                &fd_path(&t),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| MountError {
                what: "cannot open",
                path: target.clone(),
                source: e.into(),
            })?;
            fchmod(&d, Mode::from_bits_truncate(*mode)).map_err(|e| MountError {
                what: "cannot chmod",
                path: target.clone(),
                source: e.into(),
            })
        }
        MountStep::File {
            target,
            contents,
            mode,
        } => {
            let (dir, name) =
                parent_and_name(root, target).map_err(err("cannot create", target))?;
            let f = openat(
                dir.as_fd(),
                name.as_os_str(),
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(*mode),
            )
            .map_err(|e| MountError {
                what: "cannot create",
                path: target.clone(),
                source: e.into(),
            })?;
            let mut file = std::fs::File::from(f);
            file.write_all(contents.as_bytes())
                .map_err(err("cannot write", target))?;
            fchmod(&file, Mode::from_bits_truncate(*mode)).map_err(|e| MountError {
                what: "cannot chmod",
                path: target.clone(),
                source: e.into(),
            })
        }
        MountStep::Proc { target } => {
            let t = open_target(root, target, true).map_err(err("cannot create", target))?;
            mount(
                Some("proc"),
                &fd_path(&t),
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(|e| MountError {
                what: "cannot mount a fresh /proc on",
                path: target.clone(),
                source: e.into(),
            })
        }
        MountStep::ReadOnly { target } => {
            let host = new_root.path(target);
            match sys::open_tree_clone(&host, true) {
                Ok(fd) => {
                    sys::mount_setattr(
                        &fd,
                        sys::MOUNT_ATTR_RDONLY
                            | sys::MOUNT_ATTR_NOSUID
                            | sys::MOUNT_ATTR_NODEV
                            | sys::MOUNT_ATTR_NOEXEC,
                        true,
                        None,
                    )
                    .map_err(err("cannot make read-only", target))?;
                    let t = nix::fcntl::open(
                        &host,
                        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| MountError {
                        what: "cannot open",
                        path: target.clone(),
                        source: e.into(),
                    })?;
                    sys::move_mount_to_fd(&fd, &t).map_err(err("cannot remount read-only", target))
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
                Err(e) => Err(MountError {
                    what: "cannot open",
                    path: target.clone(),
                    source: e,
                }),
            }
        }
        MountStep::Sysfs { target } => {
            let t = open_target(root, target, true).map_err(err("cannot create", target))?;
            let flags =
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            if mount(
                Some("sysfs"),
                &fd_path(&t),
                Some("sysfs"),
                flags,
                None::<&str>,
            )
            .is_err()
            {
                // Some hosts forbid a fresh sysfs; an empty read-only tmpfs is the safe fallback.
                mount(
                    Some("tmpfs"),
                    &fd_path(&t),
                    Some("tmpfs"),
                    flags,
                    Some("size=0,mode=555"),
                )
                .map_err(|e| MountError {
                    what: "cannot mount /sys on",
                    path: target.clone(),
                    source: e.into(),
                })?;
            }
            Ok(())
        }
        MountStep::Devpts { target } => {
            let t = open_target(root, target, true).map_err(err("cannot create", target))?;
            mount(
                Some("devpts"),
                &fd_path(&t),
                Some("devpts"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("newinstance,ptmxmode=0666,mode=0620"),
            )
            .map_err(|e| MountError {
                what: "cannot mount devpts on",
                path: target.clone(),
                source: e.into(),
            })
        }
        MountStep::Protect { target } => {
            let Some(t) = open_existing(root, target) else {
                return Ok(());
            };
            let fd = sys::open_tree_clone_fd(&t).map_err(err("cannot open", target))?;
            sys::mount_setattr(
                &fd,
                sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
                true,
                None,
            )
            .map_err(err("cannot make read-only", target))?;
            sys::move_mount_to_fd(&fd, &t).map_err(err("cannot protect", target))
        }
        MountStep::Pin { target } => {
            let Some(t) = open_existing(root, target) else {
                return Ok(());
            };
            let fd = sys::open_tree_clone_fd(&t).map_err(err("cannot open", target))?;
            sys::move_mount_to_fd(&fd, &t).map_err(err("cannot pin", target))
        }
        MountStep::RootReadOnly => Ok(()), // applied after pivot_root, see `finish`
    }
}

/// Switch into the new root and detach the host's filesystem tree entirely.
pub fn pivot(root: &NewRoot) -> io::Result<()> {
    nix::unistd::fchdir(&root.fd).map_err(nix_err)?;
    nix::unistd::pivot_root(".", ".").map_err(nix_err)?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH).map_err(nix_err)?;
    nix::unistd::chdir("/").map_err(nix_err)
}

/// Steps that must run after pivot_root.
pub fn finish(plan: &LaunchPlan) -> io::Result<()> {
    if plan.mounts.contains(&MountStep::RootReadOnly) {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_BIND
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(nix_err)?;
    }
    Ok(())
}
