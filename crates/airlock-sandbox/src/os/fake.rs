//! A recording [`Os`] for the seam tier: it keeps a small model of the tree being built (what
//! exists at each path inside, and which host directory is mounted where, so lookups beneath a
//! bind see the host's entries), answers like the kernel would for the calls the root
//! filesystem code makes, and records every call as one readable line.

use super::Os;
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

/// What a fake descriptor refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeFd {
    /// A path inside the tree being built ("/" once the root is attached).
    At(PathBuf),
    /// A detached mount: `host:/usr`, `tmpfs`, `clone:/workspace/.git`, …
    Tree(String),
    /// A descriptor the caller made elsewhere (the mount point, a user namespace).
    Given(String),
}

impl std::fmt::Display for FakeFd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FakeFd::At(p) => write!(f, "{}", p.display()),
            FakeFd::Tree(s) => write!(f, "tree({s})"),
            FakeFd::Given(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

#[derive(Debug, Default)]
struct State {
    /// Entries created inside (mount points, files, links).
    inside: BTreeMap<PathBuf, Kind>,
    /// (inside target, host source) of every bind-like mount, in order.
    binds: Vec<(PathBuf, PathBuf)>,
    /// The detached tmpfs that became the root.
    root_attached: bool,
    calls: Vec<String>,
    /// Fail the first call whose line starts with this, with this errno.
    fail: Option<(String, i32)>,
}

/// The recording fake. Single-threaded, like the child that builds a root.
#[derive(Debug, Default)]
pub struct Fake {
    /// The host's filesystem as far as the test cares: path -> kind.
    host: BTreeMap<PathBuf, Kind>,
    state: RefCell<State>,
}

fn enoent() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

fn attrs(a: u64) -> String {
    let names = [
        (crate::sys::MOUNT_ATTR_RDONLY, "rdonly"),
        (crate::sys::MOUNT_ATTR_NOSUID, "nosuid"),
        (crate::sys::MOUNT_ATTR_NODEV, "nodev"),
        (crate::sys::MOUNT_ATTR_NOEXEC, "noexec"),
    ];
    names
        .iter()
        .filter(|(bit, _)| a & bit != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join("|")
}

fn ms_flags(f: MsFlags) -> String {
    let names = [
        (MsFlags::MS_RDONLY, "rdonly"),
        (MsFlags::MS_NOSUID, "nosuid"),
        (MsFlags::MS_NODEV, "nodev"),
        (MsFlags::MS_NOEXEC, "noexec"),
    ];
    names
        .iter()
        .filter(|(bit, _)| f.contains(*bit))
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join("|")
}

fn oflags(f: OFlag) -> String {
    let names = [
        (OFlag::O_PATH, "path"),
        (OFlag::O_RDONLY, "rdonly"),
        (OFlag::O_WRONLY, "wronly"),
        (OFlag::O_DIRECTORY, "dir"),
        (OFlag::O_NOFOLLOW, "nofollow"),
        (OFlag::O_CREAT, "creat"),
        (OFlag::O_EXCL, "excl"),
    ];
    let mut out: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| !bit.is_empty() && f.contains(*bit))
        .map(|(_, n)| *n)
        .collect();
    if !f.intersects(OFlag::O_PATH | OFlag::O_WRONLY | OFlag::O_RDWR) {
        out.insert(0, "rdonly");
    }
    out.join("|")
}

impl Fake {
    /// A host with these entries (parents of each are directories too).
    pub fn with_host(entries: &[(&str, Kind)]) -> Fake {
        let mut host = BTreeMap::new();
        for (p, k) in entries {
            let p = PathBuf::from(p);
            for a in p.ancestors().skip(1) {
                host.entry(a.to_path_buf()).or_insert(Kind::Dir);
            }
            host.insert(p, *k);
        }
        Fake {
            host,
            state: RefCell::default(),
        }
    }

    /// Let the first call whose recorded line starts with `prefix` fail with `errno`.
    pub fn fail_on(&self, prefix: &str, errno: i32) {
        self.state.borrow_mut().fail = Some((prefix.to_string(), errno));
    }

    /// Every call, in order.
    pub fn calls(&self) -> Vec<String> {
        self.state.borrow().calls.clone()
    }

    /// The calls that change something (lookups — dup, openat, stat, open, reopen — left out).
    pub fn effects(&self) -> Vec<String> {
        const LOOKUPS: [&str; 5] = ["dup ", "openat ", "stat ", "open ", "reopen "];
        self.calls()
            .into_iter()
            .filter(|c| !LOOKUPS.iter().any(|l| c.starts_with(l)) || c.contains("creat"))
            .collect()
    }

    fn record(&self, line: String) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        let fail = st
            .fail
            .as_ref()
            .filter(|(p, _)| line.starts_with(p.as_str()))
            .map(|(_, e)| *e);
        st.calls.push(line);
        if let Some(e) = fail {
            st.fail = None;
            return Err(io::Error::from_raw_os_error(e));
        }
        Ok(())
    }

    /// The inside path a descriptor stands for, when it is one.
    fn base(&self, fd: &FakeFd) -> io::Result<PathBuf> {
        match fd {
            FakeFd::At(p) => Ok(p.clone()),
            FakeFd::Tree(t) if t == "tmpfs" && self.state.borrow().root_attached => {
                Ok(PathBuf::from("/"))
            }
            _ => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    /// What is at `p` inside: created there, else what the latest covering bind shows.
    pub fn kind(&self, p: &Path) -> Option<Kind> {
        let st = self.state.borrow();
        if p == Path::new("/") && st.root_attached {
            return Some(Kind::Dir);
        }
        if let Some(k) = st.inside.get(p) {
            return Some(*k);
        }
        st.binds
            .iter()
            .rev()
            .filter(|(t, _)| p.starts_with(t) && p != t)
            .max_by_key(|(t, _)| t.components().count())
            .and_then(|(t, src)| {
                let rest = p.strip_prefix(t).ok()?;
                self.host.get(&src.join(rest)).copied()
            })
    }

    fn add(&self, p: PathBuf, k: Kind) {
        self.state.borrow_mut().inside.insert(p, k);
    }
}

fn mode_of(k: Kind) -> u32 {
    match k {
        Kind::Dir => libc::S_IFDIR | 0o755,
        Kind::File => libc::S_IFREG | 0o644,
        Kind::Symlink => libc::S_IFLNK | 0o777,
    }
}

impl Os for Fake {
    type Fd = FakeFd;

    fn open_tree_clone(&self, path: &Path, recursive: bool) -> io::Result<FakeFd> {
        let r = if recursive { " recursive" } else { "" };
        self.record(format!("open_tree_clone {}{r}", path.display()))?;
        if !self.host.contains_key(path) {
            return Err(enoent());
        }
        Ok(FakeFd::Tree(format!("host:{}", path.display())))
    }
    fn open_tree_clone_nofollow(&self, path: &Path) -> io::Result<FakeFd> {
        self.record(format!("open_tree_clone nofollow {}", path.display()))?;
        if let Some(link) = path
            .ancestors()
            .find(|p| matches!(self.host.get(*p), Some(Kind::Symlink)))
        {
            return Err(io::Error::other(format!(
                "{}: {} is a symbolic link (never followed)",
                path.display(),
                link.display()
            )));
        }
        if !self.host.contains_key(path) {
            return Err(enoent());
        }
        Ok(FakeFd::Tree(format!("host:{}", path.display())))
    }
    fn open_tree_clone_fd(&self, fd: &FakeFd) -> io::Result<FakeFd> {
        self.record(format!("open_tree_clone {fd} recursive"))?;
        Ok(FakeFd::Tree(format!("clone:{fd}")))
    }
    fn open_tree_clone_beneath(&self, root: &FakeFd, rel: &Path) -> io::Result<FakeFd> {
        self.record(format!("open_tree_clone {} recursive", rel.display()))?;
        let _ = self.base(root)?;
        if self.kind(rel).is_none() {
            return Err(enoent());
        }
        Ok(FakeFd::Tree(format!("clone:{}", rel.display())))
    }
    fn mount_setattr(
        &self,
        fd: &FakeFd,
        a: u64,
        recursive: bool,
        userns: Option<&FakeFd>,
    ) -> io::Result<()> {
        let r = if recursive { " recursive" } else { "" };
        let map = userns.map(|u| format!(" idmap({u})")).unwrap_or_default();
        self.record(format!("mount_setattr {fd} {}{r}{map}", attrs(a)))
    }
    fn move_mount(&self, from: &FakeFd, to: &FakeFd) -> io::Result<()> {
        self.record(format!("move_mount {from} -> {to}"))?;
        match (from, to) {
            (FakeFd::Tree(t), FakeFd::Given(_)) if t == "tmpfs" => {
                self.state.borrow_mut().root_attached = true;
            }
            (FakeFd::Tree(t), FakeFd::At(target)) => {
                if let Some(src) = t.strip_prefix("host:") {
                    self.state
                        .borrow_mut()
                        .binds
                        .push((target.clone(), PathBuf::from(src)));
                }
            }
            _ => {}
        }
        Ok(())
    }
    fn fsmount_tmpfs(&self, options: &[(&str, String)], a: u64) -> io::Result<FakeFd> {
        let opts: Vec<String> = options.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.record(format!("fsmount tmpfs {} {}", opts.join(","), attrs(a)))?;
        Ok(FakeFd::Tree("tmpfs".into()))
    }
    fn mount_on(
        &self,
        target: &FakeFd,
        source: &str,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        let shown = data.map(|d| format!(" {d}")).unwrap_or_default();
        self.record(format!(
            "mount {source} on {target} ({fstype} {}){shown}",
            ms_flags(flags)
        ))?;
        let at = self.base(target)?;
        match fstype {
            // What a fresh procfs shows that the plan re-binds read-only.
            "proc" => {
                for e in ["sys", "sysrq-trigger", "irq", "bus", "fs"] {
                    self.add(at.join(e), Kind::Dir);
                }
            }
            // The workspace shows its lower layer: the host directory staged at `lowerdir`.
            "overlay" => {
                let lower = data
                    .and_then(|d| d.strip_prefix("lowerdir=/fd@"))
                    .and_then(|d| d.split(',').next())
                    .map(PathBuf::from);
                let src = lower.and_then(|l| {
                    let st = self.state.borrow();
                    st.binds
                        .iter()
                        .rev()
                        .find(|(t, _)| *t == l)
                        .map(|(_, s)| s.clone())
                });
                if let Some(src) = src {
                    self.state.borrow_mut().binds.push((at, src));
                }
            }
            _ => {}
        }
        Ok(())
    }
    fn umount_beneath(&self, root: &FakeFd, rel: &Path) -> io::Result<()> {
        self.record(format!("umount {}", rel.display()))?;
        let _ = self.base(root)?;
        Ok(())
    }
    fn dup(&self, fd: &FakeFd) -> io::Result<FakeFd> {
        self.record(format!("dup {fd}"))?;
        match fd {
            FakeFd::Given(_) => Ok(fd.clone()),
            other => Ok(FakeFd::At(self.base(other)?)),
        }
    }
    fn openat(&self, dir: &FakeFd, name: &OsStr, flags: OFlag, mode: u32) -> io::Result<FakeFd> {
        let p = self.base(dir)?.join(name);
        let m = if flags.contains(OFlag::O_CREAT) {
            format!(" {mode:o}")
        } else {
            String::new()
        };
        self.record(format!("openat {} ({}){m}", p.display(), oflags(flags)))?;
        match self.kind(&p) {
            Some(_) if flags.contains(OFlag::O_CREAT | OFlag::O_EXCL) => {
                Err(io::Error::from_raw_os_error(libc::EEXIST))
            }
            None if flags.contains(OFlag::O_CREAT) => {
                self.add(p.clone(), Kind::File);
                Ok(FakeFd::At(p))
            }
            None => Err(enoent()),
            Some(Kind::Symlink) if !flags.contains(OFlag::O_NOFOLLOW) => {
                Err(io::Error::from_raw_os_error(libc::ELOOP))
            }
            Some(k) if flags.contains(OFlag::O_DIRECTORY) && k != Kind::Dir => {
                Err(io::Error::from_raw_os_error(libc::ENOTDIR))
            }
            Some(_) => Ok(FakeFd::At(p)),
        }
    }
    fn open_beneath(&self, root: &FakeFd, rel: &Path, flags: OFlag) -> io::Result<FakeFd> {
        self.record(format!("open {} ({})", rel.display(), oflags(flags)))?;
        let _ = self.base(root)?;
        match self.kind(rel) {
            Some(_) => Ok(FakeFd::At(rel.to_path_buf())),
            None => Err(enoent()),
        }
    }
    fn reopen(&self, fd: &FakeFd, flags: OFlag) -> io::Result<FakeFd> {
        self.record(format!("reopen {fd} ({})", oflags(flags)))?;
        Ok(fd.clone())
    }
    fn mkdirat(&self, dir: &FakeFd, name: &OsStr, mode: u32) -> io::Result<()> {
        let p = self.base(dir)?.join(name);
        self.record(format!("mkdir {} {mode:o}", p.display()))?;
        if self.kind(&p).is_some() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.add(p, Kind::Dir);
        Ok(())
    }
    fn symlinkat(&self, points_to: &Path, dir: &FakeFd, name: &OsStr) -> io::Result<()> {
        let p = self.base(dir)?.join(name);
        self.record(format!(
            "symlink {} -> {}",
            p.display(),
            points_to.display()
        ))?;
        self.add(p, Kind::Symlink);
        Ok(())
    }
    fn unlinkat(&self, dir: &FakeFd, name: &OsStr) -> io::Result<()> {
        let p = self.base(dir)?.join(name);
        self.record(format!("unlink {}", p.display()))?;
        self.state.borrow_mut().inside.remove(&p);
        Ok(())
    }
    fn stat_mode(&self, fd: &FakeFd) -> io::Result<u32> {
        self.record(format!("stat {fd}"))?;
        let kind = match fd {
            FakeFd::Tree(t) => t
                .strip_prefix("host:")
                .and_then(|h| self.host.get(Path::new(h)).copied()),
            other => self.kind(&self.base(other)?),
        };
        kind.map(mode_of).ok_or_else(enoent)
    }
    fn fchmod(&self, fd: &FakeFd, mode: u32) -> io::Result<()> {
        self.record(format!("chmod {fd} {mode:o}"))
    }
    fn fchown(&self, fd: &FakeFd, uid: u32, gid: u32) -> io::Result<()> {
        self.record(format!("chown {fd} {uid}:{gid}"))
    }
    fn write_all(&self, fd: &FakeFd, data: &[u8]) -> io::Result<()> {
        self.record(format!("write {fd} {} bytes", data.len()))
    }
    fn remove_dir_beneath(&self, root: &FakeFd, rel: &Path) -> io::Result<()> {
        self.record(format!("rmdir {}", rel.display()))?;
        let _ = self.base(root)?;
        self.state.borrow_mut().inside.remove(rel);
        Ok(())
    }
    fn fd_path(&self, fd: &FakeFd) -> PathBuf {
        match self.base(fd) {
            Ok(p) => PathBuf::from(format!("/fd@{}", p.display())),
            Err(_) => PathBuf::from(format!("/fd@{fd}")),
        }
    }
    fn become_root(&self) -> io::Result<()> {
        self.record("setresgid 0, setgroups [], setresuid 0".into())
    }
    fn unshare_cgroup_ns(&self) -> io::Result<()> {
        self.record("unshare cgroup".into())
    }
    fn make_mounts_private(&self) -> io::Result<()> {
        self.record("mount / private recursive".into())
    }
    fn pivot_into(&self, root: &FakeFd) -> io::Result<()> {
        self.record(format!("pivot_root {root}"))
    }
    fn remount_root_readonly(&self) -> io::Result<()> {
        self.record("remount / (rdonly|nosuid|nodev)".into())
    }
}
