//! User, mount and pid namespaces, a fresh /proc, overlayfs and idmapped mounts — each tried
//! for real in a bounded child whose mounts die with its namespaces.

use super::child::{self, Outcome, Reporter};
use super::host::{errstr, read_trim, Host, Scratch};
use super::row::{Row, Status};
use crate::sys;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);
/// The id a file owned by the caller shows through the probe's idmapped mount (as root).
const IDMAP_SHOWN: u32 = 1234;
const NOBODY: u32 = 65534;

// Step codes reported by the children.
const U_UNSHARE: u8 = 1;
const U_SETGROUPS: u8 = 2;
const U_UIDMAP: u8 = 3;
const U_GIDMAP: u8 = 4;
const NS_UNSHARE: u8 = 10;
const NS_PRIVATE: u8 = 11;
const NS_FORK: u8 = 12;
const NS_PID1: u8 = 13;
const PROC_MOUNT: u8 = 14;
const PROC_SELF: u8 = 15;
const OVL_USERXATTR: u8 = 20;
const OVL_PLAIN: u8 = 21;
const OVL_WRITE: u8 = 22;
const ID_UNSHARE: u8 = 30;
const ID_SELFMAP: u8 = 31;
const ID_PRIVATE: u8 = 32;
const ID_USERNS: u8 = 33;
const ID_OPEN_TREE: u8 = 34;
const ID_SETATTR: u8 = 35;
const ID_MOVE: u8 = 36;
const ID_UID: u8 = 37;
const UP_DROP: u8 = 40;
const UP_UNSHARE: u8 = 41;
const UP_MAP: u8 = 42;
const UP_MOUNT: u8 = 43;

/// The user-namespace related sysctls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UsernsSysctls {
    pub max_user_namespaces: Option<u64>,
    /// Debian/Ubuntu kernels only.
    pub unprivileged_userns_clone: Option<u64>,
    /// Ubuntu 23.10+ (AppArmor).
    pub apparmor_restrict: Option<u64>,
}

impl UsernsSysctls {
    fn read() -> UsernsSysctls {
        let n = |p: &str| read_trim(p).and_then(|s| s.parse().ok());
        UsernsSysctls {
            max_user_namespaces: n("/proc/sys/user/max_user_namespaces"),
            unprivileged_userns_clone: n("/proc/sys/kernel/unprivileged_userns_clone"),
            apparmor_restrict: n("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        }
    }

    pub fn describe(&self) -> String {
        let mut v = vec![];
        if let Some(n) = self.max_user_namespaces {
            v.push(format!("user.max_user_namespaces={n}"));
        }
        if let Some(n) = self.unprivileged_userns_clone {
            v.push(format!("kernel.unprivileged_userns_clone={n}"));
        }
        if let Some(n) = self.apparmor_restrict {
            v.push(format!("kernel.apparmor_restrict_unprivileged_userns={n}"));
        }
        v.join(", ")
    }

    /// The settings that keep unprivileged users (or everyone) from user namespaces.
    pub fn blockers(&self, for_unprivileged: bool) -> Vec<String> {
        let mut v = vec![];
        if self.max_user_namespaces == Some(0) {
            v.push("user.max_user_namespaces is 0".into());
        }
        if for_unprivileged && self.unprivileged_userns_clone == Some(0) {
            v.push("kernel.unprivileged_userns_clone is 0".into());
        }
        if for_unprivileged && self.apparmor_restrict == Some(1) {
            v.push("kernel.apparmor_restrict_unprivileged_userns is 1 (AppArmor strips capabilities inside new user namespaces)".into());
        }
        v
    }

    /// The exact sysctl commands that lift the blockers.
    pub fn fix(&self, for_unprivileged: bool) -> Option<String> {
        let mut set = vec![];
        if self.max_user_namespaces == Some(0) {
            set.push("user.max_user_namespaces=28633");
        }
        if for_unprivileged && self.unprivileged_userns_clone == Some(0) {
            set.push("kernel.unprivileged_userns_clone=1");
        }
        if for_unprivileged && self.apparmor_restrict == Some(1) {
            set.push("kernel.apparmor_restrict_unprivileged_userns=0");
        }
        if set.is_empty() {
            return None;
        }
        let now: Vec<String> = set.iter().map(|s| format!("sudo sysctl -w {s}")).collect();
        let mut fix = format!(
            "{}; to persist: printf '{}\\n' | sudo tee /etc/sysctl.d/60-airlock-userns.conf",
            now.join(" && "),
            set.join("\\n")
        );
        if set.contains(&"kernel.apparmor_restrict_unprivileged_userns=0") {
            fix.push_str(" (or keep the restriction and give the airlock binary an AppArmor profile with `userns,`)");
        }
        Some(fix)
    }
}

fn container_fix(h: &Host) -> Option<String> {
    (!h.container.is_empty()).then(|| {
        "this looks like a container whose runtime blocks it: run the outer container with \
         --security-opt seccomp=unconfined --security-opt apparmor=unconfined --security-opt systempaths=unconfined \
         (docker; podman: --security-opt unmask=ALL) or --privileged"
            .to_string()
    })
}

fn overlay_opts(lower: &Path, upper: &Path, work: &Path, userxattr: bool) -> String {
    let esc = |p: &Path| {
        p.display()
            .to_string()
            .replace('\\', "\\\\")
            .replace(',', "\\,")
            .replace(':', "\\:")
    };
    format!(
        "lowerdir={},upperdir={},workdir={}{}",
        esc(lower),
        esc(upper),
        esc(work),
        if userxattr { ",userxattr" } else { "" }
    )
}

fn private_root() -> nix::Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
}

struct Dirs {
    proc_: PathBuf,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
    idsrc: PathBuf,
    idmnt: PathBuf,
}

fn prepare(s: &Scratch) -> std::io::Result<Dirs> {
    let d = Dirs {
        proc_: s.mkdir("proc")?,
        lower: s.mkdir("lower")?,
        upper: s.mkdir("upper")?,
        work: s.mkdir("work")?,
        merged: s.mkdir("merged")?,
        idsrc: s.mkdir("idsrc")?,
        idmnt: s.mkdir("idmnt")?,
    };
    fs::write(d.lower.join("from-lower"), "lower")?;
    fs::write(d.idsrc.join("owned"), "")?;
    Ok(d)
}

/// The user namespace child: userns with a single-id map, then mount+pid namespaces, a
/// grandchild as PID 1 that mounts a fresh /proc and an overlay.
fn userns_child(h: &Host, d: &Dirs) -> Outcome {
    let uid_map = format!("0 {} 1\n", h.euid);
    let gid_map = format!("0 {} 1\n", h.egid);
    let ovl_x = overlay_opts(&d.lower, &d.upper, &d.work, true);
    let ovl_plain = overlay_opts(&d.lower, &d.upper, &d.work, false);
    child::run(TIMEOUT, |r: &Reporter| {
        if !r.check(U_UNSHARE, unshare(CloneFlags::CLONE_NEWUSER)) {
            return 1;
        }
        // ENOENT on kernels before 3.19 is fine; the gid_map write below tells.
        r.check_io(U_SETGROUPS, fs::write("/proc/self/setgroups", "deny"));
        if !r.check_io(U_UIDMAP, fs::write("/proc/self/uid_map", &uid_map))
            || !r.check_io(U_GIDMAP, fs::write("/proc/self/gid_map", &gid_map))
        {
            return 1;
        }
        if !r.check(
            NS_UNSHARE,
            unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID),
        ) || !r.check(NS_PRIVATE, private_root())
        {
            return 1;
        }
        let g = child::sub_fork(|| {
            r.ok(NS_PID1, nix::unistd::getpid().as_raw() as i64);
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            if r.check(
                PROC_MOUNT,
                mount(Some("proc"), &d.proc_, Some("proc"), flags, None::<&str>),
            ) {
                match fs::read_link(d.proc_.join("self")) {
                    Ok(p) => r.ok(
                        PROC_SELF,
                        p.to_str().and_then(|s| s.parse().ok()).unwrap_or(-1),
                    ),
                    Err(e) => r.err(PROC_SELF, e.raw_os_error().unwrap_or(libc::EIO)),
                }
            }
            let mounted = r.check(
                OVL_USERXATTR,
                mount(
                    Some("overlay"),
                    &d.merged,
                    Some("overlay"),
                    MsFlags::empty(),
                    Some(ovl_x.as_str()),
                ),
            ) || r.check(
                OVL_PLAIN,
                mount(
                    Some("overlay"),
                    &d.merged,
                    Some("overlay"),
                    MsFlags::empty(),
                    Some(ovl_plain.as_str()),
                ),
            );
            if mounted {
                let read = fs::read_to_string(d.merged.join("from-lower"));
                let wrote = fs::write(d.merged.join("from-lower"), "changed")
                    .and_then(|_| fs::write(d.merged.join("new"), "x"));
                match (read, wrote) {
                    (Ok(s), Ok(()))
                        if s == "lower"
                            && d.upper.join("new").exists()
                            && d.upper.join("from-lower").exists() =>
                    {
                        r.ok(OVL_WRITE, 0)
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        r.err(OVL_WRITE, e.raw_os_error().unwrap_or(libc::EIO))
                    }
                    _ => r.err(OVL_WRITE, libc::EIO),
                }
            }
            0
        });
        match g {
            Ok(pid) => {
                r.ok(NS_FORK, pid as i64);
                child::sub_wait(pid)
            }
            Err(e) => {
                r.err(NS_FORK, e);
                1
            }
        }
    })
}

/// A user namespace whose single mapping is `inside` -> `outside` (ids of the caller's
/// namespace), as an fd: as an idmapping it shows files owned by `inside` as owned by `outside`.
fn holder_userns(inside: u32, outside: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    crate::userns::idmap_userns((inside, inside), (outside, outside))
}

/// The idmapped-mount child: a private mount namespace (inside a user namespace when not
/// root), open_tree(OPEN_TREE_CLONE) of a scratch dir, mount_setattr(MOUNT_ATTR_IDMAP), attach
/// it and look at a file's owner through it.
fn idmap_child(h: &Host, d: &Dirs) -> Outcome {
    let uid_map = format!("0 {} 1\n", h.euid);
    let gid_map = format!("0 {} 1\n", h.egid);
    let root = h.root;
    let host_root = h.host_root();
    child::run(TIMEOUT, |r: &Reporter| {
        let flags = if root {
            CloneFlags::CLONE_NEWNS
        } else {
            CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS
        };
        if !r.check(ID_UNSHARE, unshare(flags)) {
            return 1;
        }
        if !root {
            let _ = fs::write("/proc/self/setgroups", "deny");
            let m = fs::write("/proc/self/uid_map", &uid_map)
                .and_then(|_| fs::write("/proc/self/gid_map", &gid_map));
            if !r.check_io(ID_SELFMAP, m) {
                return 1;
            }
        }
        if !r.check(ID_PRIVATE, private_root()) {
            return 1;
        }
        // The scratch file belongs to uid 0 as seen here (root, or our mapped self). Without
        // host root, only that id may exist in our namespace, so the mapping is the identity
        // (the kernel refuses idmapping host filesystems then anyway).
        let userns = match holder_userns(0, if host_root { IDMAP_SHOWN } else { 0 }) {
            Ok(fd) => {
                r.ok(ID_USERNS, 0);
                fd
            }
            Err(e) => {
                r.err(ID_USERNS, e.raw_os_error().unwrap_or(libc::EIO));
                return 1;
            }
        };
        let tree = match sys::open_tree_clone(&d.idsrc, false) {
            Ok(t) => {
                r.ok(ID_OPEN_TREE, 0);
                t
            }
            Err(e) => {
                r.err(ID_OPEN_TREE, e.raw_os_error().unwrap_or(libc::EIO));
                return 1;
            }
        };
        if !r.check_io(
            ID_SETATTR,
            sys::mount_setattr(&tree, 0, false, Some(&userns)),
        ) {
            return 1;
        }
        let target = match nix::fcntl::open(
            &d.idmnt,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(t) => t,
            Err(e) => {
                r.err(ID_MOVE, e as i32);
                return 1;
            }
        };
        if !r.check_io(ID_MOVE, sys::move_mount_to_fd(&tree, &target)) {
            return 1;
        }
        match fs::metadata(d.idmnt.join("owned")) {
            Ok(m) => r.ok(ID_UID, m.uid() as i64),
            Err(e) => r.err(ID_UID, e.raw_os_error().unwrap_or(libc::EIO)),
        }
        0
    })
}

/// Root only: can an ordinary user (nobody) create a user namespace, map itself and mount in
/// it? Catches unprivileged_userns_clone=0 and AppArmor's restriction (unshare works there
/// but the namespace gets no capabilities).
fn unprivileged_child() -> Outcome {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let uid_map = format!("0 {NOBODY} 1\n");
    let gid_map = format!("0 {NOBODY} 1\n");
    child::run(TIMEOUT, |r: &Reporter| {
        let (u, g) = (Uid::from_raw(NOBODY), Gid::from_raw(NOBODY));
        if !r.check(
            UP_DROP,
            setgroups(&[])
                .and_then(|_| setresgid(g, g, g))
                .and_then(|_| setresuid(u, u, u)),
        ) {
            return 1;
        }
        // Changing credentials made us non-dumpable, which would make /proc/self/* root's.
        let _ = sys::prctl_simple(libc::PR_SET_DUMPABLE, 1);
        if !r.check(UP_UNSHARE, unshare(CloneFlags::CLONE_NEWUSER)) {
            return 1;
        }
        let _ = fs::write("/proc/self/setgroups", "deny");
        let m = fs::write("/proc/self/uid_map", &uid_map)
            .and_then(|_| fs::write("/proc/self/gid_map", &gid_map));
        if !r.check_io(UP_MAP, m) {
            return 1;
        }
        r.check(
            UP_MOUNT,
            unshare(CloneFlags::CLONE_NEWNS).and_then(|_| private_root()),
        );
        0
    })
}

/// First failed step among `steps`, as "what: errno".
fn first_failure(o: &Outcome, steps: &[(u8, &str)]) -> Option<(u8, String, i32)> {
    steps.iter().find_map(|(s, what)| {
        o.errno(*s)
            .map(|e| (*s, format!("{what} failed: {}", errstr(e)), e))
    })
}

pub(super) fn rows(h: &Host) -> Vec<Row> {
    let sysctls = UsernsSysctls::read();
    let scratch = Scratch::new();
    let dirs = scratch
        .as_ref()
        .map_err(|e| e.to_string())
        .and_then(|s| prepare(s).map_err(|e| e.to_string()));
    let mut rows = vec![];
    match &dirs {
        Ok(d) => {
            let o = userns_child(h, d);
            rows.push(userns_row(h, &sysctls, &o));
            if h.host_root() {
                rows.push(unprivileged_row(&sysctls, &unprivileged_child()));
            }
            rows.push(mount_proc_row(h, &sysctls, &o));
            let fs_desc = h
                .fs_of(&d.upper)
                .map(|(t, m)| format!("{t} at {}", m.display()))
                .unwrap_or_else(|| "?".into());
            rows.push(overlay_row(&o, &fs_desc));
            let id = idmap_child(h, d);
            let id_fs = h
                .fs_of(&d.idsrc)
                .map(|(t, m)| format!("{t} at {}", m.display()))
                .unwrap_or_else(|| "?".into());
            rows.push(idmap_row(h, &id, &id_fs));
        }
        Err(e) => {
            let detail = format!(
                "cannot create a scratch directory in {}: {e}",
                std::env::temp_dir().display()
            );
            let fix = Some("make $TMPDIR (or /tmp) writable".to_string());
            for (id, name, status, needed) in [
                ("userns", "user namespaces", Status::Missing, NEEDED_USERNS),
                (
                    "mount_pid_proc",
                    "mount+pid namespaces, fresh /proc",
                    Status::Missing,
                    NEEDED_PROC,
                ),
                (
                    "overlayfs",
                    "overlayfs in a user namespace",
                    Status::Degraded,
                    NEEDED_OVERLAY,
                ),
                (
                    "idmapped_mounts",
                    "idmapped mounts",
                    Status::Degraded,
                    NEEDED_IDMAP,
                ),
            ] {
                rows.push(Row::new(
                    id,
                    name,
                    status,
                    detail.clone(),
                    fix.clone(),
                    needed,
                ));
            }
        }
    }
    drop(scratch);
    rows
}

const NEEDED_USERNS: &str = "every sandbox (container backend)";
const NEEDED_PROC: &str = "every sandbox (container backend): fresh /proc, PID 1";
const NEEDED_OVERLAY: &str = "--workspace overlay (the default workspace mode)";
const NEEDED_IDMAP: &str =
    "root-run sandboxes: writable binds and the overlay workspace keep host file ownership";

fn userns_row(h: &Host, s: &UsernsSysctls, o: &Outcome) -> Row {
    let name = "user namespaces";
    let facts = s.describe();
    let failure = first_failure(
        o,
        &[
            (U_UNSHARE, "unshare(CLONE_NEWUSER)"),
            (U_UIDMAP, "writing /proc/self/uid_map"),
            (U_GIDMAP, "writing /proc/self/gid_map"),
        ],
    );
    if let Some((_, what, _)) = failure {
        let mut detail = what;
        let blockers = s.blockers(!h.root);
        if !blockers.is_empty() {
            detail.push_str(&format!(" — {}", blockers.join("; ")));
        }
        if !facts.is_empty() {
            detail.push_str(&format!(" [{facts}]"));
        }
        let enospc = o.errno(U_UNSHARE) == Some(libc::ENOSPC);
        let fix = s
            .fix(!h.root)
            .or_else(|| {
                enospc.then(|| {
                    "raise the limit: sudo sysctl -w user.max_user_namespaces=28633; if it is already high, an enclosing \
                     sandbox or container (bwrap --disable-userns, a nested user namespace) forbids nesting: run airlock outside it"
                        .to_string()
                })
            })
            .or_else(|| container_fix(h))
            .or_else(|| Some("enable CONFIG_USER_NS in the kernel and check that no seccomp/LSM policy blocks unshare(CLONE_NEWUSER)".into()));
        return Row::new("userns", name, Status::Missing, detail, fix, NEEDED_USERNS);
    }
    if let Some(e) = o.abnormal_end().filter(|_| !o.ok(U_GIDMAP)) {
        return Row::new(
            "userns",
            name,
            Status::Missing,
            e,
            container_fix(h),
            NEEDED_USERNS,
        );
    }
    let detail = format!(
        "unshare(CLONE_NEWUSER) with a single-id uid/gid map works{}",
        if facts.is_empty() {
            String::new()
        } else {
            format!(" ({facts})")
        }
    );
    Row::new("userns", name, Status::Ok, detail, None, NEEDED_USERNS)
}

fn unprivileged_row(s: &UsernsSysctls, o: &Outcome) -> Row {
    let name = "user namespaces for unprivileged users";
    let needed = "rootless airlock for the other users of this host";
    let failure = first_failure(
        o,
        &[
            (UP_DROP, "dropping to uid 65534"),
            (UP_UNSHARE, "unshare(CLONE_NEWUSER) as uid 65534"),
            (UP_MAP, "writing its uid/gid map"),
            (UP_MOUNT, "mounting inside it"),
        ],
    );
    match failure {
        None if o.ok(UP_MOUNT) => Row::new(
            "userns_unprivileged",
            name,
            Status::Ok,
            format!("an unprivileged user (uid 65534) can create a user namespace, map itself and mount in it ({})", s.describe()),
            None,
            needed,
        ),
        None => Row::new("userns_unprivileged", name, Status::Degraded, o.abnormal_end().unwrap_or_else(|| "probe did not finish".into()), None, needed),
        Some((_, what, _)) => {
            let mut detail = what;
            let b = s.blockers(true);
            if !b.is_empty() {
                detail.push_str(&format!(" — {}", b.join("; ")));
            }
            let fix = s.fix(true).or_else(|| Some("check for an LSM or seccomp policy that blocks unshare(CLONE_NEWUSER) for ordinary users".into()));
            Row::new("userns_unprivileged", name, Status::Degraded, detail, fix, needed)
        }
    }
}

fn mount_proc_row(h: &Host, s: &UsernsSysctls, o: &Outcome) -> Row {
    let (id, name) = ("mount_pid_proc", "mount+pid namespaces, fresh /proc");
    let missing = |detail: String, fix: Option<String>| {
        Row::new(id, name, Status::Missing, detail, fix, NEEDED_PROC)
    };
    if !o.ok(U_GIDMAP) {
        return missing(
            "not tested: user namespaces are unavailable (see above)".into(),
            Some("fix user namespaces first".into()),
        );
    }
    let failure = first_failure(
        o,
        &[
            (NS_UNSHARE, "unshare(CLONE_NEWNS|CLONE_NEWPID)"),
            (
                NS_PRIVATE,
                "mounting in the new mount namespace (making / private)",
            ),
            (NS_FORK, "forking into the new pid namespace"),
            (PROC_MOUNT, "mounting a fresh proc filesystem"),
            (PROC_SELF, "reading the fresh /proc"),
        ],
    );
    if let Some((step, mut detail, errno)) = failure {
        let mut fix = None;
        if step == NS_PRIVATE && s.apparmor_restrict == Some(1) && !h.root {
            detail.push_str(" — AppArmor restricts unprivileged user namespaces");
            fix = s.fix(true);
        }
        if step == PROC_MOUNT && errno == libc::EPERM {
            detail.push_str(" — /proc is masked or partly read-only here (typical inside containers), so the kernel refuses a new proc mount");
        }
        return missing(
            detail,
            fix.or_else(|| container_fix(h)).or_else(|| {
                Some(
                    "check for a seccomp/LSM policy that blocks mount(2) in user namespaces".into(),
                )
            }),
        );
    }
    if let Some(e) = o.abnormal_end() {
        return missing(e, None);
    }
    match (o.get(NS_PID1), o.get(PROC_SELF)) {
        (Some(Ok(1)), Some(Ok(1))) => Row::new(
            id,
            name,
            Status::Ok,
            "new mount and pid namespaces; the child is PID 1 and a fresh /proc shows it as such",
            None,
            NEEDED_PROC,
        ),
        (pid1, procself) => missing(
            format!("unexpected: pid in the new namespace {pid1:?}, /proc/self -> {procself:?}"),
            None,
        ),
    }
}

fn overlay_row(o: &Outcome, fs_desc: &str) -> Row {
    let (id, name) = ("overlayfs", "overlayfs in a user namespace");
    let degraded = |detail: String, fix: &str| {
        Row::new(
            id,
            name,
            Status::Degraded,
            detail,
            Some(fix.to_string()),
            NEEDED_OVERLAY,
        )
    };
    const FIX: &str = "overlayfs in user namespaces needs Linux 5.11+ (with userxattr) and an upper filesystem with user xattrs (ext4, xfs, btrfs, tmpfs 6.6+); meanwhile use --workspace bind or --workspace none";
    if o.get(OVL_USERXATTR).is_none() && o.get(OVL_PLAIN).is_none() {
        return degraded(
            "not tested: needs a user + mount namespace (see above)".into(),
            "fix user/mount namespaces first",
        );
    }
    let write = match o.get(OVL_WRITE) {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(format!(
            "overlay mounted but copy-up/write through it failed: {}",
            errstr(e)
        )),
        None => Err(String::new()),
    };
    if o.ok(OVL_USERXATTR) {
        return match write {
            Ok(()) => Row::new(id, name, Status::Ok, format!("mounted with userxattr; reads from lower, copy-up and new files land in upper (upper on {fs_desc})"), None, NEEDED_OVERLAY),
            Err(e) => degraded(e, FIX),
        };
    }
    let ux = o.errno(OVL_USERXATTR).map(errstr).unwrap_or_default();
    if o.ok(OVL_PLAIN) {
        return degraded(
            format!("mounts only without userxattr (with it: {ux}); airlock mounts its workspace overlay with userxattr (upper on {fs_desc})"),
            FIX,
        );
    }
    let plain = o.errno(OVL_PLAIN).map(errstr).unwrap_or_default();
    degraded(
        format!(
            "mount -t overlay failed with userxattr: {ux}; without: {plain} (upper on {fs_desc})"
        ),
        FIX,
    )
}

fn idmap_row(h: &Host, o: &Outcome, fs_desc: &str) -> Row {
    let (id, name) = ("idmapped_mounts", "idmapped mounts");
    let row = |status, detail: String, fix: Option<&str>| {
        Row::new(
            id,
            name,
            status,
            detail,
            fix.map(str::to_string),
            NEEDED_IDMAP,
        )
    };
    let failure = first_failure(
        o,
        &[
            (ID_UNSHARE, "unshare of a mount namespace"),
            (ID_SELFMAP, "mapping our user namespace"),
            (ID_PRIVATE, "making / private"),
            (ID_USERNS, "creating the idmapping user namespace"),
            (ID_OPEN_TREE, "open_tree(OPEN_TREE_CLONE)"),
            (ID_SETATTR, "mount_setattr(MOUNT_ATTR_IDMAP)"),
            (ID_MOVE, "move_mount of the idmapped tree"),
            (ID_UID, "stat through the idmapped mount"),
        ],
    );
    if let Some((step, what, errno)) = failure {
        if !h.host_root() && step == ID_SETATTR && errno == libc::EPERM {
            return row(
                Status::Ok,
                format!("not usable without host root ({what}: the host filesystem belongs to the initial user namespace); rootless sandboxes do not need it"),
                None,
            );
        }
        if step == ID_USERNS || (step == ID_UNSHARE && !h.root) {
            return row(
                Status::Degraded,
                format!("{what}: needs user namespaces"),
                Some("fix user namespaces first"),
            );
        }
        let fix = match (step, errno) {
            (ID_OPEN_TREE | ID_SETATTR | ID_MOVE, libc::ENOSYS) => "idmapped mounts need Linux 5.12+ (new mount API)",
            (ID_SETATTR, libc::EINVAL) => "the filesystem does not support idmapped mounts (ext4, xfs, btrfs: 5.12+/5.15+, tmpfs 6.3+); keep the project on such a filesystem",
            _ => "check for a seccomp/LSM policy that blocks the new mount API (open_tree, mount_setattr, move_mount)",
        };
        return row(Status::Degraded, format!("{what} (on {fs_desc}); root-run sandboxes cannot keep host file ownership on writable mounts"), Some(fix));
    }
    if let Some(e) = o.abnormal_end() {
        return row(Status::Degraded, e, None);
    }
    match o.get(ID_UID) {
        Some(Ok(uid)) if !h.host_root() || uid == IDMAP_SHOWN as i64 => row(
            Status::Ok,
            format!("open_tree(OPEN_TREE_CLONE) + mount_setattr(MOUNT_ATTR_IDMAP) work on {fs_desc}; a file owned by uid {} shows as uid {uid} through the mount", h.euid),
            None,
        ),
        other => row(Status::Degraded, format!("the idmapping was not applied (stat through the mount gave {other:?}, expected uid {IDMAP_SHOWN})"), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_fixes_are_exact() {
        let s = UsernsSysctls {
            max_user_namespaces: Some(0),
            unprivileged_userns_clone: Some(0),
            apparmor_restrict: Some(1),
        };
        let f = s.fix(true).expect("fix");
        assert!(f.starts_with(
            "sudo sysctl -w user.max_user_namespaces=28633 && sudo sysctl -w kernel.unprivileged_userns_clone=1 && sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0;"
        ), "{f}");
        assert!(f.contains("/etc/sysctl.d/60-airlock-userns.conf"));
        // Root is only held back by max_user_namespaces.
        assert_eq!(s.blockers(false).len(), 1);
        let ok = UsernsSysctls {
            max_user_namespaces: Some(100),
            unprivileged_userns_clone: None,
            apparmor_restrict: Some(0),
        };
        assert_eq!(ok.fix(true), None);
        assert_eq!(
            ok.describe(),
            "user.max_user_namespaces=100, kernel.apparmor_restrict_unprivileged_userns=0"
        );
    }

    #[test]
    fn overlay_options_escape_separators() {
        assert_eq!(
            overlay_opts(Path::new("/a,b"), Path::new("/u:p"), Path::new("/w"), true),
            "lowerdir=/a\\,b,upperdir=/u\\:p,workdir=/w,userxattr"
        );
    }
}
