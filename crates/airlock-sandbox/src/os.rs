//! The OS calls the root filesystem is built with, behind one narrow trait: [`Os`], with the
//! real implementation ([`Real`], safe code over `sys` and nix; no `unsafe` here) and a
//! recording fake ([`fake::Fake`]) for the seam tier, which checks the exact sequence of calls
//! a plan turns into without root or a kernel.
//!
//! Descriptors are the implementation's own type (`Os::Fd`): real ones are `OwnedFd`s, the
//! fake's name what they refer to. Paths that the real implementation reaches through
//! `/proc/self/fd/N` are methods taking the descriptor (`mount_on`, `open_beneath`, …), so the
//! code above never builds one by hand. Generic code is monomorphized: the real path costs
//! nothing extra.

pub mod fake;

use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub trait Os {
    type Fd: std::fmt::Debug;

    /// open_tree(OPEN_TREE_CLONE): a detached copy of the mount at a host path.
    fn open_tree_clone(&self, path: &Path, recursive: bool) -> io::Result<Self::Fd>;
    /// open_tree(OPEN_TREE_CLONE | AT_RECURSIVE) of a host path opened component by
    /// component without following any symbolic link (one in the path is an error).
    fn open_tree_clone_nofollow(&self, path: &Path) -> io::Result<Self::Fd>;
    /// open_tree(OPEN_TREE_CLONE | AT_RECURSIVE) of what a descriptor refers to.
    fn open_tree_clone_fd(&self, fd: &Self::Fd) -> io::Result<Self::Fd>;
    /// open_tree(OPEN_TREE_CLONE | AT_RECURSIVE) of `rel` beneath `root`, mounts traversed.
    fn open_tree_clone_beneath(&self, root: &Self::Fd, rel: &Path) -> io::Result<Self::Fd>;
    /// mount_setattr(2): set `attrs` (MOUNT_ATTR_*), optionally idmapped through `userns`.
    fn mount_setattr(
        &self,
        fd: &Self::Fd,
        attrs: u64,
        recursive: bool,
        userns: Option<&Self::Fd>,
    ) -> io::Result<()>;
    /// move_mount(2) of a detached mount onto an opened target.
    fn move_mount(&self, from: &Self::Fd, to: &Self::Fd) -> io::Result<()>;
    /// fsopen/fsconfig/fsmount: a new detached tmpfs.
    fn fsmount_tmpfs(&self, options: &[(&str, String)], attrs: u64) -> io::Result<Self::Fd>;
    /// mount(2) of a filesystem onto an opened target.
    fn mount_on(
        &self,
        target: &Self::Fd,
        source: &str,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// umount2(MNT_DETACH) of `rel` beneath `root`.
    fn umount_beneath(&self, root: &Self::Fd, rel: &Path) -> io::Result<()>;

    fn dup(&self, fd: &Self::Fd) -> io::Result<Self::Fd>;
    /// openat(2); `mode` applies with O_CREAT.
    fn openat(&self, dir: &Self::Fd, name: &OsStr, flags: OFlag, mode: u32)
        -> io::Result<Self::Fd>;
    /// open(2) of `rel` beneath `root`, mounts and symlinks inside the new root traversed
    /// (only for paths airlock itself created or mounted).
    fn open_beneath(&self, root: &Self::Fd, rel: &Path, flags: OFlag) -> io::Result<Self::Fd>;
    /// `rel` beneath `root`, O_PATH, when none of its components (the last included) is a
    /// symlink: ELOOP when one is. One component at a time here; the kernel's `openat2`
    /// does it in one call ([`Real`]).
    fn open_no_symlinks(&self, root: &Self::Fd, rel: &Path) -> io::Result<Self::Fd> {
        walk_no_symlinks(self, root, rel)
    }
    /// A new descriptor for what `fd` (e.g. an O_PATH one) refers to, with `flags`.
    fn reopen(&self, fd: &Self::Fd, flags: OFlag) -> io::Result<Self::Fd>;
    fn mkdirat(&self, dir: &Self::Fd, name: &OsStr, mode: u32) -> io::Result<()>;
    fn symlinkat(&self, points_to: &Path, dir: &Self::Fd, name: &OsStr) -> io::Result<()>;
    /// unlinkat(2) of a non-directory (never follows a symlink: removes the link itself).
    fn unlinkat(&self, dir: &Self::Fd, name: &OsStr) -> io::Result<()>;
    /// st_mode of what `fd` refers to.
    fn stat_mode(&self, fd: &Self::Fd) -> io::Result<u32>;
    fn fchmod(&self, fd: &Self::Fd, mode: u32) -> io::Result<()>;
    fn fchown(&self, fd: &Self::Fd, uid: u32, gid: u32) -> io::Result<()>;
    fn write_all(&self, fd: &Self::Fd, data: &[u8]) -> io::Result<()>;
    /// rmdir(2) of `rel` beneath `root` (errors ignored by callers: best effort).
    fn remove_dir_beneath(&self, root: &Self::Fd, rel: &Path) -> io::Result<()>;
    /// The path that reaches what `fd` refers to (overlay layer options name them).
    fn fd_path(&self, fd: &Self::Fd) -> PathBuf;

    /// setresgid/setgroups/setresuid to 0: a root-run child becomes its user namespace's root.
    fn become_root(&self) -> io::Result<()>;
    /// unshare(CLONE_NEWCGROUP).
    fn unshare_cgroup_ns(&self) -> io::Result<()>;
    /// Make every mount of this (new) mount namespace private, recursively.
    fn make_mounts_private(&self) -> io::Result<()>;
    /// Make `root` the root directory (pivot_root) and detach the old one entirely.
    fn pivot_into(&self, root: &Self::Fd) -> io::Result<()>;
    /// Remount `/` read-only (after the pivot).
    fn remount_root_readonly(&self) -> io::Result<()>;
}

/// The kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Real;

fn proc_fd(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// [`Os::open_no_symlinks`] one component at a time: each opened without following it, and
/// refused if it is a symlink.
fn walk_no_symlinks<O: Os + ?Sized>(os: &O, root: &O::Fd, rel: &Path) -> io::Result<O::Fd> {
    let mut cur = os.dup(root)?;
    for c in rel.components() {
        let std::path::Component::Normal(name) = c else {
            continue;
        };
        cur = os.openat(&cur, name, crate::nofollow::PATH_FLAGS, 0)?;
        if os.stat_mode(&cur)? & libc::S_IFMT == libc::S_IFLNK {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
    }
    Ok(cur)
}

fn beneath(root: &OwnedFd, rel: &Path) -> PathBuf {
    proc_fd(root).join(rel.strip_prefix("/").unwrap_or(rel))
}

fn mode(m: u32) -> nix::sys::stat::Mode {
    nix::sys::stat::Mode::from_bits_truncate(m)
}

impl Os for Real {
    type Fd = OwnedFd;

    fn open_tree_clone(&self, path: &Path, recursive: bool) -> io::Result<OwnedFd> {
        crate::sys::open_tree_clone(path, recursive)
    }
    fn open_tree_clone_nofollow(&self, path: &Path) -> io::Result<OwnedFd> {
        crate::sys::open_tree_clone_fd(&crate::nofollow::open_nofollow(path)?)
    }
    fn open_tree_clone_fd(&self, fd: &OwnedFd) -> io::Result<OwnedFd> {
        crate::sys::open_tree_clone_fd(fd)
    }
    fn open_tree_clone_beneath(&self, root: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
        crate::sys::open_tree_clone(&beneath(root, rel), true)
    }
    fn mount_setattr(
        &self,
        fd: &OwnedFd,
        attrs: u64,
        recursive: bool,
        userns: Option<&OwnedFd>,
    ) -> io::Result<()> {
        crate::sys::mount_setattr(fd, attrs, recursive, userns)
    }
    fn move_mount(&self, from: &OwnedFd, to: &OwnedFd) -> io::Result<()> {
        crate::sys::move_mount_to_fd(from, to)
    }
    fn fsmount_tmpfs(&self, options: &[(&str, String)], attrs: u64) -> io::Result<OwnedFd> {
        crate::sys::fsmount_tmpfs(options, attrs)
    }
    fn mount_on(
        &self,
        target: &OwnedFd,
        source: &str,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        Ok(nix::mount::mount(
            Some(source),
            &proc_fd(target),
            Some(fstype),
            flags,
            data,
        )?)
    }
    fn umount_beneath(&self, root: &OwnedFd, rel: &Path) -> io::Result<()> {
        Ok(nix::mount::umount2(
            &beneath(root, rel),
            nix::mount::MntFlags::MNT_DETACH,
        )?)
    }
    fn dup(&self, fd: &OwnedFd) -> io::Result<OwnedFd> {
        Ok(nix::unistd::dup(fd.as_fd())?)
    }
    fn openat(&self, dir: &OwnedFd, name: &OsStr, flags: OFlag, m: u32) -> io::Result<OwnedFd> {
        Ok(nix::fcntl::openat(dir.as_fd(), name, flags, mode(m))?)
    }
    fn open_beneath(&self, root: &OwnedFd, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
        Ok(nix::fcntl::open(&beneath(root, rel), flags, mode(0))?)
    }
    fn reopen(&self, fd: &OwnedFd, flags: OFlag) -> io::Result<OwnedFd> {
        Ok(nix::fcntl::open(&proc_fd(fd), flags, mode(0))?)
    }
    fn open_no_symlinks(&self, root: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        if rel.as_os_str().is_empty() {
            return self.dup(root);
        }
        // The kernel's `struct open_how` (libc's cannot be built by a struct expression).
        #[repr(C)]
        struct OpenHow {
            flags: u64,
            mode: u64,
            resolve: u64,
        }
        let how = OpenHow {
            flags: crate::nofollow::PATH_FLAGS.bits() as u64,
            mode: 0,
            resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
        };
        let path = std::ffi::CString::new(rel.as_os_str().as_encoded_bytes())?;
        // SAFETY: valid fd, C string and open_how for the call; the result is a new fd.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            // No openat2 (before 5.6), or a filter that refuses it: one component at a time.
            return match e.raw_os_error() {
                Some(libc::ENOSYS | libc::EPERM | libc::E2BIG) => walk_no_symlinks(self, root, rel),
                _ => Err(e),
            };
        }
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(r as i32) };
        // O_NOFOLLOW with O_PATH opens a final symlink itself: refused as the walk refuses it.
        if self.stat_mode(&fd)? & libc::S_IFMT == libc::S_IFLNK {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        Ok(fd)
    }
    fn mkdirat(&self, dir: &OwnedFd, name: &OsStr, m: u32) -> io::Result<()> {
        Ok(nix::sys::stat::mkdirat(dir.as_fd(), name, mode(m))?)
    }
    fn symlinkat(&self, points_to: &Path, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        Ok(nix::unistd::symlinkat(points_to, dir, name)?)
    }
    fn unlinkat(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        Ok(nix::unistd::unlinkat(
            dir,
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )?)
    }
    fn stat_mode(&self, fd: &OwnedFd) -> io::Result<u32> {
        Ok(nix::sys::stat::fstat(fd)?.st_mode)
    }
    fn fchmod(&self, fd: &OwnedFd, m: u32) -> io::Result<()> {
        Ok(nix::sys::stat::fchmod(fd, mode(m))?)
    }
    fn fchown(&self, fd: &OwnedFd, uid: u32, gid: u32) -> io::Result<()> {
        Ok(nix::unistd::fchown(
            fd,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )?)
    }
    fn write_all(&self, fd: &OwnedFd, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match nix::unistd::write(fd, data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(nix::Error::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
    fn remove_dir_beneath(&self, root: &OwnedFd, rel: &Path) -> io::Result<()> {
        std::fs::remove_dir(beneath(root, rel))
    }
    fn fd_path(&self, fd: &OwnedFd) -> PathBuf {
        proc_fd(fd)
    }
    fn become_root(&self) -> io::Result<()> {
        use nix::unistd::{Gid, Uid};
        let (g, u) = (Gid::from_raw(0), Uid::from_raw(0));
        nix::unistd::setresgid(g, g, g)
            .map_err(|e| io::Error::other(format!("setresgid(0): {e}")))?;
        nix::unistd::setgroups(&[]).map_err(|e| io::Error::other(format!("setgroups: {e}")))?;
        nix::unistd::setresuid(u, u, u).map_err(|e| io::Error::other(format!("setresuid(0): {e}")))
    }
    fn unshare_cgroup_ns(&self) -> io::Result<()> {
        Ok(nix::sched::unshare(
            nix::sched::CloneFlags::CLONE_NEWCGROUP,
        )?)
    }
    fn make_mounts_private(&self) -> io::Result<()> {
        Ok(nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )?)
    }
    fn pivot_into(&self, root: &OwnedFd) -> io::Result<()> {
        nix::unistd::fchdir(root)?;
        nix::unistd::pivot_root(".", ".")?;
        nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)?;
        Ok(nix::unistd::chdir("/")?)
    }
    fn remount_root_readonly(&self) -> io::Result<()> {
        Ok(nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_BIND
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            None::<&str>,
        )?)
    }
}

#[cfg(test)]
mod open_no_symlinks_tests {
    use super::{walk_no_symlinks, Os, Real};
    use std::os::fd::OwnedFd;
    use std::path::Path;

    /// The kernel's one-call open and the component walk agree: what exists opens, and a
    /// symlink anywhere (the last component too), a missing component or an escape is refused.
    #[test]
    fn opens_only_what_no_symlink_reaches() {
        let dir = std::env::temp_dir().join(format!("airlock-nosym-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a/b")).expect("dirs");
        std::fs::write(dir.join("a/b/f"), b"x").expect("file");
        std::os::unix::fs::symlink("b", dir.join("a/link")).expect("link");
        std::os::unix::fs::symlink("/etc/passwd", dir.join("a/b/out")).expect("link");
        let root: OwnedFd = std::fs::File::open(&dir).expect("root").into();
        let kernel = |p: &str| Real.open_no_symlinks(&root, Path::new(p)).map(|_| ());
        let walk = |p: &str| walk_no_symlinks(&Real, &root, Path::new(p)).map(|_| ());
        for p in ["/a", "a/b", "/a/b/f"] {
            assert!(kernel(p).is_ok(), "{p}");
            assert!(walk(p).is_ok(), "{p}");
        }
        for p in ["a/link/f", "a/link", "/a/b/out", "a/missing", "a/b/f/g"] {
            assert!(kernel(p).is_err(), "{p}");
            assert!(walk(p).is_err(), "{p}");
        }
        // A symlink is refused as such.
        let e = kernel("a/link/f").expect_err("link");
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        let e = kernel("a/b/out").expect_err("final link");
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        // Never above the root.
        assert!(kernel("a/../../etc").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
