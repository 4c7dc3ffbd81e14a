//! Privilege: mount, chroot, namespaces, credentials, capabilities, no_new_privs, seccomp.

use super::{scratch_dir, Ctx};
use crate::report::{Findings, Outcome};
use crate::sys::{self, fs, process};

pub fn mount(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    match scratch_dir() {
        Some(dir) => {
            let target = format!("{dir}/.airlock-probe-mnt-{}", sys::getpid());
            let made = fs::mkdir(&target, 0o755);
            let r = fs::mount("tmpfs", &target, Some("tmpfs"), 0, Some("size=1m"));
            if r.is_ok() {
                let _ = fs::umount2(&target, libc::MNT_DETACH);
            }
            f.result(format!("mount tmpfs on {target}"), &r);
            let r = fs::mount("/", &target, None, libc::MS_BIND | libc::MS_REC, None);
            if r.is_ok() {
                let _ = fs::umount2(&target, libc::MNT_DETACH);
            }
            f.result(format!("bind-mount / on {target}"), &r);
            if made.is_ok() {
                let _ = fs::rmdir(&target);
            }
        }
        None => f.note("no writable directory for a mount target"),
    }
    let r = fs::mount("none", "/usr", None, libc::MS_REMOUNT | libc::MS_BIND, None);
    if r.is_ok() {
        // Put it back at once.
        let _ = fs::mount(
            "none",
            "/usr",
            None,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
            None,
        );
    }
    f.result("remount /usr read-write", &r);
    let r = fs::mount("none", "/", None, libc::MS_REC | libc::MS_SHARED, None);
    f.result("make / shared (propagation)", &r);
    f.outcome()
}

pub fn chroot(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    let Some(dir) = scratch_dir() else {
        return Outcome::blocked("no writable directory for a chroot target");
    };
    let before = fs::dev_ino("/");
    let root_fd = fs::open("/", libc::O_RDONLY | libc::O_DIRECTORY, 0);
    let name = format!(".airlock-probe-chroot-{}", sys::getpid());
    let target = format!("{dir}/{name}");
    let made = fs::mkdir(&target, 0o755);
    match fs::chroot(&target) {
        Ok(()) => {
            // The classic escape: our cwd is still outside the new root; climb and chroot(".").
            for _ in 0..64 {
                let _ = fs::chdir("..");
            }
            let second = fs::chroot(".");
            let after = fs::dev_ino("/");
            let how = match (&before, &after, second) {
                (Ok(b), Ok(a), Ok(())) if b != a => {
                    "succeeded; the escape reached a different root".to_string()
                }
                (_, _, Ok(())) => {
                    "succeeded; the escape landed back on the sandbox root".to_string()
                }
                (_, _, Err(e)) => format!("succeeded; second chroot: {e}"),
            };
            f.escaped(format!("chroot {target}"), how);
        }
        Err(e) => f.blocked(format!("chroot {target}"), e),
    }
    if made.is_ok() {
        let rel = format!("{}/{name}", dir.trim_start_matches('/'));
        match &root_fd {
            Ok(root) => {
                let _ = fs::unlinkat(root, &rel, libc::AT_REMOVEDIR);
            }
            Err(_) => {
                let _ = fs::rmdir(&target);
            }
        }
    }
    f.outcome()
}

fn reap(pid: SysResultPid) -> SysResultPid {
    if let Ok(p) = pid {
        let _ = process::waitpid(p, 0);
    }
    pid
}

type SysResultPid = sys::SysResult<libc::pid_t>;

pub fn unshare_userns(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    let r = reap(process::clone_and_exit(
        libc::CLONE_NEWUSER as libc::c_ulong,
    ));
    f.result("clone(CLONE_NEWUSER)", &r);
    let r = reap(process::clone3_and_exit(libc::CLONE_NEWUSER as u64));
    f.result("clone3(CLONE_NEWUSER)", &r);
    // Last, because on success it moves this (throw-away) process into the new namespace.
    let r = process::unshare(libc::CLONE_NEWUSER);
    f.result("unshare(CLONE_NEWUSER)", &r);
    f.outcome()
}

pub fn unshare_ns(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    for (name, flag) in [
        ("CLONE_NEWNS", libc::CLONE_NEWNS),
        ("CLONE_NEWNET", libc::CLONE_NEWNET),
        ("CLONE_NEWUTS", libc::CLONE_NEWUTS),
        ("CLONE_NEWIPC", libc::CLONE_NEWIPC),
        ("CLONE_NEWPID", libc::CLONE_NEWPID),
        ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP),
    ] {
        let r = process::unshare(flag);
        f.result(format!("unshare({name})"), &r);
    }
    f.outcome()
}

pub fn setuid(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    if sys::geteuid() == 0 {
        // Root inside was asked for (--user root); `caps` covers what root may still do.
        return Outcome::blocked(
            "not applicable: already uid 0 inside (the caps check covers root)",
        );
    }
    f.note(format!("uid {} gid {}", sys::getuid(), sys::getgid()));
    let r = process::setuid(0);
    f.result("setuid(0)", &r);
    let r = process::setgid(0);
    f.result("setgid(0)", &r);
    f.outcome()
}

/// Fields of /proc/self/status.
fn status_field(name: &str) -> Option<String> {
    let status = fs::read_file("/proc/self/status", 1 << 16).ok()?;
    let text = String::from_utf8_lossy(&status).into_owned();
    text.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

pub fn caps(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    let nnp = status_field("NoNewPrivs").as_deref() == Some("1");
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd"] {
        match status_field(set).map(|v| u64::from_str_radix(&v, 16)) {
            Some(Ok(0)) => f.blocked(set, "0"),
            // A bounding set alone grants nothing to a process with no_new_privs.
            Some(Ok(v)) if set == "CapBnd" && nnp => {
                f.blocked(set, format!("{v:#x} (harmless: no_new_privs is set)"))
            }
            Some(Ok(v)) => f.escaped(set, format!("{v:#x}")),
            _ => f.escaped(set, "cannot read /proc/self/status"),
        }
    }
    f.outcome()
}

pub fn no_new_privs(_: &Ctx) -> Outcome {
    match status_field("NoNewPrivs") {
        Some(v) if v == "1" => Outcome::blocked("NoNewPrivs: 1"),
        Some(v) => Outcome::escaped(format!("NoNewPrivs: {v}")),
        None => Outcome::escaped("cannot read NoNewPrivs from /proc/self/status"),
    }
}

pub fn seccomp_filter(_: &Ctx) -> Outcome {
    match status_field("Seccomp") {
        Some(v) if v == "2" => {
            let n = status_field("Seccomp_filters").unwrap_or_else(|| "?".into());
            Outcome::blocked(format!("Seccomp: 2 (filter mode), {n} filter(s)"))
        }
        Some(v) => Outcome::escaped(format!("Seccomp: {v} (no filter)")),
        None => Outcome::escaped("cannot read Seccomp from /proc/self/status"),
    }
}
