//! What an overlay workspace run changed: added, modified and deleted paths, read from the
//! overlay's upper layer against the (untouched) lower one. Never follows a symlink. Shared by
//! the container backend (run in the sandbox's PID 1 once every other process is gone, through
//! directory descriptors opened before the layers' staging mounts were detached; re-exported as
//! `airlock_sandbox::container::summary`) and the microVM guest (`airlock-guest ws changes`),
//! so a change is named the same way on both backends.

use nix::dir::Dir;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode};
use serde::{Deserialize, Serialize};
use std::ffi::{CString, OsStr};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Paths listed per run at most; the rest are only counted.
const MAX_LISTED: usize = 5000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    pub added: Vec<PathBuf>,
    pub modified: Vec<PathBuf>,
    pub deleted: Vec<PathBuf>,
    /// Changes beyond the listing cap (counted, not listed).
    #[serde(default)]
    pub unlisted: usize,
    /// Directories the summary could not read (e.g. made unreadable by the command).
    #[serde(default)]
    pub unreadable: Vec<PathBuf>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.modified.is_empty()
            && self.deleted.is_empty()
            && self.unlisted == 0
    }
    fn push(list: &mut Vec<PathBuf>, unlisted: &mut usize, p: PathBuf) {
        if list.len() < MAX_LISTED {
            list.push(p);
        } else {
            *unlisted += 1;
        }
    }
}

const S_IFMT: u32 = libc::S_IFMT;

fn kind(st: &FileStat) -> u32 {
    st.st_mode & S_IFMT
}

fn is_whiteout(st: &FileStat) -> bool {
    kind(st) == libc::S_IFCHR && st.st_rdev == 0
}

fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> Option<FileStat> {
    fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).ok()
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> Option<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()
}

fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    ["user.overlay.opaque", "trusted.overlay.opaque"]
        .iter()
        .any(|name| {
            let Ok(cn) = CString::new(*name) else {
                return false;
            };
            let mut buf = [0u8; 4];
            fgetxattr(dir, &cn, &mut buf).is_some_and(|n| n >= 1 && buf[0] == b'y')
        })
}

/// fgetxattr(2): the value's length, read into `buf`.
fn fgetxattr(fd: BorrowedFd<'_>, name: &CString, buf: &mut [u8]) -> Option<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid fd, a C string and a buffer of the length we pass.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    usize::try_from(n).ok()
}

fn names(dir: BorrowedFd<'_>) -> Option<Vec<std::ffi::OsString>> {
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut d = Dir::from_fd(fd).ok()?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e.ok()?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    out.sort();
    Some(out)
}

fn same_content(
    up: BorrowedFd<'_>,
    low: BorrowedFd<'_>,
    name: &OsStr,
    su: &FileStat,
    sl: &FileStat,
) -> bool {
    if kind(su) != kind(sl) || su.st_mode & 0o7777 != sl.st_mode & 0o7777 {
        return false;
    }
    if kind(su) == libc::S_IFLNK {
        return nix::fcntl::readlinkat(up, name).ok() == nix::fcntl::readlinkat(low, name).ok();
    }
    if kind(su) != libc::S_IFREG || su.st_size != sl.st_size {
        return kind(su) != libc::S_IFREG && su.st_rdev == sl.st_rdev;
    }
    let open = |d| {
        openat(
            d,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()
        .map(std::fs::File::from)
    };
    let (Some(mut fa), Some(mut fb)) = (open(up), open(low)) else {
        return false;
    };
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let (Ok(na), Ok(nb)) = (fa.read(&mut ba), fb.read(&mut bb)) else {
            return false;
        };
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

/// Compare the upper layer with the lower one. Paths are relative to the workspace root.
pub fn diff(upper: &OwnedFd, lower: &OwnedFd) -> Changes {
    let mut c = Changes::default();
    walk(
        upper.as_fd(),
        Some(lower.as_fd()),
        Path::new(""),
        false,
        &mut c,
    );
    c
}

fn walk(
    up: BorrowedFd<'_>,
    low: Option<BorrowedFd<'_>>,
    rel: &Path,
    opaque: bool,
    c: &mut Changes,
) {
    let Some(entries) = names(up) else {
        c.unreadable.push(rel.to_path_buf());
        return;
    };
    for name in &entries {
        let r = rel.join(name);
        let Some(su) = stat_at(up, name) else {
            continue;
        };
        let sl = if opaque {
            None
        } else {
            low.and_then(|l| stat_at(l, name))
        };
        if is_whiteout(&su) {
            if sl.is_some() {
                Changes::push(&mut c.deleted, &mut c.unlisted, r);
            }
            continue;
        }
        let up_dir = kind(&su) == libc::S_IFDIR;
        match sl {
            None => {
                Changes::push(&mut c.added, &mut c.unlisted, r.clone());
                if up_dir {
                    if let Some(d) = open_dir_at(up, name) {
                        walk(d.as_fd(), None, &r, true, c);
                    }
                }
            }
            Some(sl) if up_dir && kind(&sl) == libc::S_IFDIR => {
                let Some(ud) = open_dir_at(up, name) else {
                    c.unreadable.push(r);
                    continue;
                };
                let ld = low.and_then(|l| open_dir_at(l, name));
                let op = is_opaque(ud.as_fd());
                if op {
                    // Replaced wholesale: everything of the lower dir not recreated is deleted.
                    if let Some(ld) = &ld {
                        let now = names(ud.as_fd()).unwrap_or_default();
                        for n in names(ld.as_fd())
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|n| !now.contains(n))
                        {
                            Changes::push(&mut c.deleted, &mut c.unlisted, r.join(n));
                        }
                    }
                }
                walk(
                    ud.as_fd(),
                    if op {
                        None
                    } else {
                        ld.as_ref().map(|d| d.as_fd())
                    },
                    &r,
                    op,
                    c,
                );
            }
            Some(sl) => {
                let same = match low {
                    Some(l) => same_content(up, l, name, &su, &sl),
                    None => false,
                };
                if !same {
                    Changes::push(&mut c.modified, &mut c.unlisted, r);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn open(p: &Path) -> OwnedFd {
        openat(
            nix::fcntl::AT_FDCWD,
            p,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .expect("open")
    }

    #[test]
    fn classifies_upper_entries() {
        let base = std::env::temp_dir().join(format!("airlock-summary-{}", std::process::id()));
        let (up, low) = (base.join("upper"), base.join("lower"));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(low.join("src")).expect("mkdir");
        fs::create_dir_all(up.join("src")).expect("mkdir");
        fs::write(low.join("src/main.rs"), "old").expect("w");
        fs::write(up.join("src/main.rs"), "new").expect("w");
        fs::write(low.join("same.txt"), "x").expect("w");
        fs::write(up.join("same.txt"), "x").expect("w"); // copied up, unchanged
        fs::create_dir_all(up.join("newdir")).expect("mkdir");
        fs::write(up.join("newdir/a"), "a").expect("w");
        fs::write(up.join("added.txt"), "a").expect("w");
        fs::write(low.join("gone.txt"), "g").expect("w");
        std::os::unix::fs::symlink("/etc/passwd", up.join("link")).expect("symlink");
        // A whiteout needs mknod(0,0), which needs privilege; exercise it when we have it.
        let whiteout = nix::sys::stat::mknod(
            &up.join("gone.txt"),
            nix::sys::stat::SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            0,
        )
        .is_ok();
        let c = diff(&open(&up), &open(&low));
        let p = PathBuf::from;
        assert_eq!(
            c.added,
            vec![p("added.txt"), p("link"), p("newdir"), p("newdir/a")]
        );
        assert_eq!(c.modified, vec![p("src/main.rs")]);
        if whiteout {
            assert_eq!(c.deleted, vec![p("gone.txt")]);
        }
        assert_eq!((c.unlisted, c.unreadable.len()), (0, 0));
        let _ = fs::remove_dir_all(&base);
    }
}
