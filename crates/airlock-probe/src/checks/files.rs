//! Host files: secrets, read-only trees, host paths, device nodes, file handles.

use super::{scratch_dir, Ctx};
use crate::report::{Findings, Outcome};
use crate::sys::{self, fs, Errno};

pub fn canary_read(ctx: &Ctx) -> Outcome {
    let mut f = Findings::new();
    let Some(canary) = ctx.canary.as_deref() else {
        return Outcome::blocked("no --canary given");
    };
    // The path itself, and the same path through PID 1's and our own root links (which would
    // reach the host if either root were the host's).
    for path in [
        canary.to_string(),
        format!("/proc/1/root{canary}"),
        format!("/proc/self/root{canary}"),
    ] {
        match fs::read_file(&path, 64) {
            Ok(data) => f.escaped(format!("read {path}"), format!("{} bytes", data.len())),
            Err(e) => f.blocked(format!("read {path}"), e),
        }
    }
    f.outcome()
}

pub fn secret_files(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    for path in [
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/sudoers",
        "/etc/ssh/ssh_host_ed25519_key",
        "/etc/ssh/ssh_host_rsa_key",
        "/etc/ssh/ssh_host_ecdsa_key",
        "/root/.ssh",
        "/root/.bash_history",
    ] {
        let r = fs::open(path, libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK, 0);
        f.result(format!("open {path}"), &r);
    }
    f.outcome()
}

pub fn write_usr(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    let pid = sys::getpid();
    for dir in ["/usr", "/usr/bin", "/usr/lib", "/usr/local"] {
        let path = format!("{dir}/.airlock-probe-{pid}");
        match fs::open(&path, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o644) {
            Ok(_) => {
                let _ = fs::unlink(&path);
                f.escaped(format!("create {path}"), "created (and removed)");
            }
            Err(e) => f.blocked(format!("create {path}"), e),
        }
    }
    // Opening an existing file for writing without O_TRUNC modifies nothing.
    for path in ["/usr/bin/env", "/usr/bin/sh", "/usr/lib/os-release"] {
        let r = fs::open(path, libc::O_WRONLY | libc::O_NOCTTY, 0);
        f.result(format!("open {path} O_WRONLY"), &r);
    }
    f.outcome()
}

pub fn write_host_path(ctx: &Ctx) -> Outcome {
    let mut f = Findings::new();
    let Some(path) = ctx.host_path.as_deref() else {
        return Outcome::blocked("no --host-path given");
    };
    let file = format!("{path}/airlock-probe-{}", sys::getpid());
    match fs::open(&file, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o644) {
        Ok(fd) => {
            let wrote = fs::write(&fd, b"airlock-probe was here\n");
            drop(fd);
            let _ = fs::unlink(&file);
            f.escaped(
                format!("create {file}"),
                format!(
                    "created, write {:?} (removed again)",
                    wrote.map_err(|e| e.to_string())
                ),
            );
        }
        Err(e) => f.blocked(format!("create {file}"), e),
    }
    // If the path is a file rather than a directory, opening it for appending is the attack.
    let r = fs::open(path, libc::O_WRONLY | libc::O_APPEND | libc::O_NOCTTY, 0);
    match r {
        Err(Errno(libc::EISDIR)) => f.note(format!("{path} is a directory")),
        r => f.result(format!("open {path} O_WRONLY"), &r),
    }
    let r = fs::mkdir(
        &format!("{path}/airlock-probe-dir-{}", sys::getpid()),
        0o755,
    );
    if r.is_ok() {
        let _ = fs::rmdir(&format!("{path}/airlock-probe-dir-{}", sys::getpid()));
    }
    f.result(format!("mkdir in {path}"), &r);
    f.outcome()
}

pub fn mknod(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    let Some(dir) = scratch_dir() else {
        f.note("no writable directory to try in");
        return Outcome::blocked(
            "no writable directory (tried /tmp, /dev/shm, /var/tmp, ., $HOME)",
        );
    };
    let pid = sys::getpid();
    for (label, mode, major, minor) in [
        ("char device 1,3 (null)", libc::S_IFCHR, 1, 3),
        ("char device 1,1 (mem)", libc::S_IFCHR, 1, 1),
        ("block device 7,0 (loop0)", libc::S_IFBLK, 7, 0),
    ] {
        let path = format!("{dir}/.airlock-probe-node-{pid}-{major}-{minor}");
        let r = fs::mknod(&path, mode | 0o666, major, minor);
        if r.is_ok() {
            let _ = fs::unlink(&path);
        }
        f.result(format!("mknod {label} in {dir}"), &r);
    }
    let fifo = format!("{dir}/.airlock-probe-fifo-{pid}");
    match fs::mknod(&fifo, libc::S_IFIFO | 0o600, 0, 0) {
        Ok(()) => {
            let _ = fs::unlink(&fifo);
            f.note("fifo: allowed (fine)");
        }
        Err(e) => f.note(format!("fifo: {e}")),
    }
    f.outcome()
}

pub fn dev_nodes(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    for path in [
        "/dev/mem",
        "/dev/kmem",
        "/dev/port",
        "/dev/kmsg",
        "/dev/sda",
        "/dev/vda",
        "/dev/xvda",
        "/dev/nvme0n1",
        "/dev/loop0",
        "/dev/kvm",
        "/dev/vhost-vsock",
        "/dev/vhost-net",
        "/dev/vsock",
        "/dev/net/tun",
        "/dev/userfaultfd",
        "/dev/tty0",
    ] {
        match fs::open(path, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY, 0) {
            Ok(_) => f.escaped(format!("open {path}"), "opened"),
            // Absent nodes are the expected case; keep the detail short.
            Err(Errno(libc::ENOENT)) => f.blocked(path, "ENOENT"),
            Err(e) => f.blocked(format!("open {path}"), e),
        }
    }
    f.outcome()
}

pub fn open_by_handle(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    let root = match fs::open("/", libc::O_RDONLY | libc::O_DIRECTORY, 0) {
        Ok(fd) => fd,
        Err(e) => return Outcome::blocked(format!("cannot open / as the mount fd: {e}")),
    };
    // A genuine handle for "/" if the filesystem hands one out...
    match fs::name_to_handle("/") {
        Ok((ty, handle)) => {
            let r = fs::open_by_handle(&root, ty, &handle, libc::O_RDONLY | libc::O_DIRECTORY);
            f.denial("open_by_handle_at(handle of /)", &r);
        }
        Err(e) => f.note(format!("name_to_handle_at(/): {e}")),
    }
    // ...and a forged one (FILEID_INO32_GEN, inode 2 = the root of most block filesystems).
    let mut forged = Vec::new();
    forged.extend_from_slice(&2u32.to_ne_bytes());
    forged.extend_from_slice(&0u32.to_ne_bytes());
    let r = fs::open_by_handle(&root, 1, &forged, libc::O_RDONLY);
    f.denial("open_by_handle_at(forged inode 2)", &r);
    f.outcome()
}
