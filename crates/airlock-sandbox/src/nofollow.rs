//! Opening host paths without following any symbolic link: each component `O_PATH |
//! O_NOFOLLOW` from the root, a link anywhere refused. What a sandbox could have planted in a
//! path it may write (a mount source, a hot-plug source) is never followed this way. A leaf:
//! `container` (hot-plug, sealed mount sources), `os` and `microvm` build on it.

use nix::fcntl::OFlag;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

/// What an error from opening a path without following links says ([`open_nofollow`]).
pub const LINK_REFUSED: &str = "is a symbolic link (never followed)";

pub(crate) const PATH_FLAGS: OFlag = OFlag::O_PATH
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

pub(crate) fn names(p: &Path) -> io::Result<Vec<&OsStr>> {
    if !p.is_absolute() {
        return Err(io::Error::other(format!(
            "{} is not an absolute path",
            p.display()
        )));
    }
    p.components()
        .filter(|c| !matches!(c, Component::RootDir))
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(io::Error::other(format!(
                "{} has `.` or `..` components",
                p.display()
            ))),
        })
        .collect()
}

pub(crate) fn kind(fd: &OwnedFd) -> io::Result<u32> {
    Ok(nix::sys::stat::fstat(fd.as_fd())?.st_mode & libc::S_IFMT)
}

fn symlink_refused(p: &Path, at: &OsStr) -> io::Error {
    io::Error::other(format!("{}: {:?} {}", p.display(), at, LINK_REFUSED))
}

/// Why `name` (in `dir`) could not be opened as a directory: a symlink (refused), or not a
/// directory at all.
fn not_a_dir(dir: &OwnedFd, path: &Path, name: &OsStr, e: nix::Error) -> io::Error {
    match nix::fcntl::openat(dir.as_fd(), name, PATH_FLAGS, nix::sys::stat::Mode::empty())
        .map_err(io::Error::from)
        .and_then(|fd| kind(&fd))
    {
        Ok(libc::S_IFLNK) => symlink_refused(path, name),
        Ok(_) => io::Error::other(format!("{}: {name:?} is not a directory", path.display())),
        Err(_) => io::Error::other(format!("{}: {name:?}: {e}", path.display())),
    }
}

/// Open the existing `path` (O_PATH) from the current root without following any symlink.
pub fn open_nofollow(path: &Path) -> io::Result<OwnedFd> {
    walk(path, Leaf::Existing)
}

/// What [`walk`] wants at the end of its path.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaf {
    /// Whatever is there (it must exist; the directories above it too).
    Existing,
    /// A directory, made (0755, with the missing directories above it) if need be.
    Dir,
    /// A file, not a directory: made empty (0644, with the missing directories above it) if
    /// need be.
    File,
}

/// Open `path` (O_PATH) from the current root one component at a time without following
/// any symlink (a link anywhere is refused), making what is missing unless `leaf` is
/// [`Leaf::Existing`].
pub(crate) fn walk(path: &Path, leaf: Leaf) -> io::Result<OwnedFd> {
    let comps = names(path)?;
    let mut cur = nix::fcntl::open(
        "/",
        PATH_FLAGS | OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )?;
    for (i, name) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let want_dir = !last || leaf == Leaf::Dir;
        let flags = if want_dir {
            PATH_FLAGS | OFlag::O_DIRECTORY
        } else {
            PATH_FLAGS
        };
        let open = || nix::fcntl::openat(cur.as_fd(), *name, flags, nix::sys::stat::Mode::empty());
        let next = match open() {
            Ok(fd) => fd,
            Err(nix::Error::ENOENT) if leaf != Leaf::Existing => {
                make(&cur, name, want_dir)?;
                open()?
            }
            Err(e @ (nix::Error::ENOTDIR | nix::Error::ELOOP)) => {
                return Err(not_a_dir(&cur, path, name, e))
            }
            Err(e) => return Err(io::Error::other(format!("{}: {e}", path.display()))),
        };
        match kind(&next)? {
            libc::S_IFLNK => return Err(symlink_refused(path, name)),
            libc::S_IFDIR if last && leaf == Leaf::File => {
                return Err(io::Error::other(format!(
                    "{} is a directory, and the host path is a file",
                    path.display()
                )))
            }
            _ => {}
        }
        cur = next;
    }
    Ok(cur)
}

/// Make `name` in `dir`: a directory, or an empty file (never through a link).
fn make(dir: &OwnedFd, name: &OsStr, is_dir: bool) -> io::Result<()> {
    if is_dir {
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o755);
        return Ok(nix::sys::stat::mkdirat(dir.as_fd(), name, mode)?);
    }
    drop(nix::fcntl::openat(
        dir.as_fd(),
        name,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )?);
    Ok(())
}
