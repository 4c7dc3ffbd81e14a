//! The only module with `unsafe`: thin wrappers over syscalls that libc/nix do not cover
//! (clone-as-fork, the new mount API, capset, pidfd, signal dispositions), each returning
//! `io::Result`; `raw` holds doctor's.

pub(crate) mod raw;

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_fd(ret: libc::c_long) -> io::Result<OwnedFd> {
    let fd = cvt(ret)?;
    // SAFETY: the kernel just returned this descriptor to us; we are its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub fn cstr(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// fork(2) with extra clone flags (new namespaces). Returns 0 in the child, the pid in the parent.
///
/// Only call from a single-threaded process: the child continues on a copy of the stack.
pub fn clone_fork(flags: libc::c_int) -> io::Result<libc::pid_t> {
    // SAFETY: raw clone without CLONE_VM behaves like fork(): the child gets a copy of the address
    // space and continues from here with a null stack pointer meaning "same stack". The caller is
    // single-threaded, so no lock can be held by a thread that does not exist in the child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    cvt(ret).map(|p| p as libc::pid_t)
}

pub const OPEN_TREE_CLONE: libc::c_uint = 1;
pub const AT_RECURSIVE: libc::c_uint = 0x8000;
pub const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
pub const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// open_tree(OPEN_TREE_CLONE [| AT_RECURSIVE]): a detached copy of the mount at `path`.
pub fn open_tree_clone(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    cvt_fd(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) })
}

/// open_tree(OPEN_TREE_CLONE | AT_RECURSIVE) of what an (O_PATH) descriptor refers to.
pub fn open_tree_clone_fd(fd: &OwnedFd) -> io::Result<OwnedFd> {
    let empty = c"";
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | AT_RECURSIVE
        | libc::AT_EMPTY_PATH as libc::c_uint;
    // SAFETY: a valid descriptor and an empty C string, as AT_EMPTY_PATH requires.
    cvt_fd(unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), empty.as_ptr(), flags) })
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(2) on a mount fd, optionally recursive and with an idmapping user namespace.
pub fn mount_setattr(
    fd: &OwnedFd,
    set: u64,
    recursive: bool,
    userns: Option<&OwnedFd>,
) -> io::Result<()> {
    let mut attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    if let Some(u) = userns {
        attr.attr_set |= MOUNT_ATTR_IDMAP;
        attr.userns_fd = u.as_raw_fd() as u64;
    }
    let empty = c"";
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: `attr` is a properly laid out struct mount_attr living across the call; size matches.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            flags,
            &mut attr as *mut MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    cvt(ret).map(drop)
}

/// Attach a detached mount onto the (already opened, O_PATH) target.
pub fn move_mount_to_fd(from: &OwnedFd, to: &OwnedFd) -> io::Result<()> {
    let empty = c"";
    // SAFETY: both descriptors are valid for the duration of the call; paths are empty C strings.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            empty.as_ptr(),
            to.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    cvt(ret).map(drop)
}

/// Drop every capability from the effective, permitted and inheritable sets.
pub fn capset_clear() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut hdr = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and data are valid _LINUX_CAPABILITY_VERSION_3 structures (two data words).
    cvt(unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) })
        .map(drop)
}

/// Remove every capability from the bounding set and clear the ambient set.
pub fn drop_bounding_and_ambient() -> io::Result<()> {
    for cap in 0..=63 {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break; // past the last capability this kernel knows
            }
            return Err(e);
        }
    }
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn prctl_simple(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    prctl_value(option, arg).map(drop)
}

/// prctl(2) with integer arguments, returning its (non-negative) result.
pub fn prctl_value(option: libc::c_int, arg: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: prctl options used here take integer arguments only.
    let r = unsafe {
        libc::prctl(
            option,
            arg,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments only.
    cvt_fd(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })
}

/// Close every descriptor >= `first` (close_range(2), with a /proc fallback for old kernels).
pub fn close_fds_from(first: RawFd) {
    // SAFETY: integer arguments only; closing descriptors we do not use is the point.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0,
        )
    };
    if r == 0 {
        return;
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<RawFd> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        for fd in fds.into_iter().filter(|&fd| fd >= first) {
            // SAFETY: closing a descriptor number; at worst EBADF for the read_dir's own fd.
            unsafe { libc::close(fd) };
        }
    }
}

/// Clear FD_CLOEXEC on a descriptor so it survives an exec or stays across clone.
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bring the loopback interface up in the current network namespace.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket creation; the fd is wrapped immediately.
    let sock =
        cvt_fd(
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) }
                as libc::c_long,
        )?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        ifr.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills ifr_ifru.ifru_flags of a valid ifreq.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } as libc::c_long)?;
    // SAFETY: reading/writing the flags member of the union we just had filled.
    unsafe { ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads a valid ifreq.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } as libc::c_long)?;
    Ok(())
}

/// Send descriptors with a data payload over a Unix socket (SCM_RIGHTS).
pub fn send_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [std::io::IoSlice::new(data)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let mut sent =
        sendmsg::<()>(sock, &iov, &cmsg, MsgFlags::empty(), None).map_err(io::Error::from)?;
    // A stream socket may take a long payload in parts (the descriptors went with the first).
    while sent < data.len() {
        match nix::sys::socket::send(sock, &data[sent..], MsgFlags::MSG_NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Receive a payload and up to `max_fds` descriptors sent with [`send_fds`].
pub fn recv_fds(sock: RawFd, max_fds: usize) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = vec![0u8; nix::sys::socket::cmsg_space::<RawFd>() * max_fds.max(1)];
    let (n, fds) = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(io::Error::from)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(got) = c {
                // SAFETY: the kernel installed these descriptors for us via SCM_RIGHTS.
                fds.extend(
                    got.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        (msg.bytes, fds)
    };
    buf.truncate(n);
    Ok((buf, fds))
}

/// Send one descriptor over a Unix socket.
pub fn send_fd(sock: RawFd, fd: RawFd) -> io::Result<()> {
    send_fds(sock, b"F", &[fd])
}

/// Receive one descriptor sent with [`send_fd`].
pub fn recv_fd(sock: RawFd) -> io::Result<OwnedFd> {
    recv_fds(sock, 1)?
        .1
        .into_iter()
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no descriptor received"))
}

/// Name of the pseudo-terminal slave for a master fd.
pub fn ptsname(master: &OwnedFd) -> io::Result<String> {
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } as libc::c_long)?;
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) } as libc::c_long)?;
    Ok(format!("/dev/pts/{n}"))
}

/// Make `fd` (a terminal) the controlling terminal of the calling session leader.
pub fn set_controlling_tty(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument.
    cvt(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } as libc::c_long).map(drop)
}

pub fn get_winsize(fd: RawFd) -> Option<libc::winsize> {
    // SAFETY: winsize is plain old data; TIOCGWINSZ fills it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some(ws)
}

pub fn set_winsize(fd: RawFd, ws: &libc::winsize) {
    // SAFETY: TIOCSWINSZ reads a valid winsize.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, ws) };
}

/// execve with an explicit environment. Returns only on failure.
pub fn execve(path: &CStr, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: argv/envp are NULL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(path.as_ptr(), a.as_ptr(), e.as_ptr()) };
    io::Error::last_os_error()
}

/// Write all of `buf` to a raw fd without allocating (usable between fork and exec).
pub fn write_all_raw(fd: RawFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: buf is a valid slice for the given length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n <= 0 {
            if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        buf = &buf[n as usize..];
    }
}

/// The calling thread at the lowest priority (`SCHED_IDLE`): work that must not stand in the
/// way of anything else — a claimed member's teardown once its claimer is done, beside the
/// claimer's own exit and whatever its caller does next (on a small machine, the caller woken
/// by the claimer's exit waited for a CPU the teardown had). Any other task preempts it at
/// once; on a machine kept busy by other work it gets a trickle of CPU, so the teardown (which
/// only the daemon's removal of the member waits for) takes longer there.
pub fn background() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid parameter.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
}

/// `chunks` × 4000 bytes of heap written and freed: the allocator keeps them (below its trim
/// threshold), so work done later — on a claim's path — takes no fault for them (part of a
/// process's or thread's warm-up while it waits; a first write costs ≈ 5 µs on a VM).
#[inline(never)]
pub fn prefault_heap(chunks: usize) {
    let chunks: Vec<Vec<u8>> = (0..chunks).map(|_| vec![1u8; 4000]).collect();
    std::hint::black_box(&chunks);
}

/// 64 KiB of this thread's stack written (the rest of a warm-up, [`prefault_heap`]).
#[inline(never)]
pub fn touch_stack() {
    let mut buf = [0u8; 64 * 1024];
    for i in (0..buf.len()).step_by(4096) {
        buf[i] = 1;
    }
    std::hint::black_box(&buf);
}

pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and runs no atexit handlers (correct in a forked child).
    unsafe { libc::_exit(code) }
}

/// dup2(2) onto a fixed descriptor number (0, 1, 2 when wiring the command's stdio).
pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on descriptor numbers; replacing `to` is the intent.
    cvt(unsafe { libc::dup2(from, to) } as libc::c_long).map(drop)
}

/// A new, detached tmpfs (fsopen/fsconfig/fsmount) with the given string options.
pub fn fsmount_tmpfs(options: &[(&str, String)], attrs: u64) -> io::Result<OwnedFd> {
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    let name = c"tmpfs";
    // SAFETY: valid C string; flags are integers.
    let fs = cvt_fd(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), 1 as libc::c_uint) })?;
    for (k, v) in options {
        let (k, v) = (CString::new(*k)?, CString::new(v.as_str())?);
        // SAFETY: valid fd and C strings for the duration of the call.
        cvt(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        })?;
    }
    // SAFETY: integer arguments and null pointers as documented for FSCONFIG_CMD_CREATE.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: integer arguments; FSMOUNT_CLOEXEC = 1.
    cvt_fd(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            1 as libc::c_uint,
            attrs as libc::c_uint,
        )
    })
}

/// One classic BPF instruction: the kernel's `struct sock_filter` (seccomp programs are
/// generated in `container::seccomp`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// seccomp(SECCOMP_SET_MODE_FILTER) with a classic BPF program.
pub fn seccomp_install(prog: &[Insn]) -> io::Result<()> {
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const Insn,
    }
    let len = libc::c_ushort::try_from(prog.len())
        .map_err(|_| io::Error::other("seccomp program too long"))?;
    let fprog = SockFprog {
        len,
        filter: prog.as_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, a slice of `struct sock_filter`-layout instructions that
    // outlives the call; the kernel copies the program.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            1 as libc::c_uint,
            0 as libc::c_uint,
            &fprog as *const SockFprog,
        )
    })
    .map(drop)
}

/// SIGKILL to the process behind `pidfd` (pidfd_send_signal: never a recycled pid's).
pub fn pidfd_kill(pidfd: &OwnedFd) -> io::Result<()> {
    // SAFETY: pidfd_send_signal with a pidfd we own, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    match cvt(r) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        r => r.map(|_| ()),
    }
}

/// Close every descriptor >= `first` except those in `keep`.
/// Copy the data of the first `len` bytes of file `src` into `dst` at the same offsets, hole by
/// hole (SEEK_DATA/SEEK_HOLE): where `src` has holes, `dst` is left as it is (the callers'
/// are holes too). copy_file_range(2) where the two files' filesystems allow it (same type),
/// else sendfile(2).
pub fn copy_data(src: RawFd, dst: RawFd, len: u64) -> std::io::Result<()> {
    let last = std::io::Error::last_os_error;
    let mut at: libc::off_t = 0;
    let mut splice_only = false;
    while (at as u64) < len {
        // SAFETY: lseek(2) on the caller's open descriptor.
        let data = unsafe { libc::lseek(src, at, libc::SEEK_DATA) };
        if data < 0 {
            let e = last();
            if e.raw_os_error() == Some(libc::ENXIO) {
                return Ok(()); // only a hole up to the end
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(src, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(last());
        }
        let hole = hole.min(len as libc::off_t);
        let (mut off_in, mut off_out) = (data, data);
        while off_in < hole {
            let want = (hole - off_in) as usize;
            let n = if splice_only {
                // SAFETY: sendfile(2) between the caller's descriptors from `off_in`; it
                // writes at `dst`'s file offset, set to the same place first.
                unsafe {
                    if libc::lseek(dst, off_in, libc::SEEK_SET) < 0 {
                        return Err(last());
                    }
                    libc::sendfile(dst, src, &mut off_in, want)
                }
            } else {
                // SAFETY: copy_file_range(2) between the caller's descriptors, our offsets.
                unsafe { libc::copy_file_range(src, &mut off_in, dst, &mut off_out, want, 0) }
            };
            if n < 0 {
                let e = last();
                let other_fs = matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS)
                );
                if !splice_only && other_fs {
                    splice_only = true;
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(std::io::Error::other("the source ended early"));
            }
            off_out = off_in;
        }
        at = hole;
    }
    Ok(())
}

pub fn close_fds_except(first: RawFd, keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&k| k >= first).collect();
    keep.sort_unstable();
    let mut from = first;
    for k in keep {
        if k > from {
            // SAFETY: closing a range of descriptor numbers we do not use.
            unsafe {
                libc::syscall(
                    libc::SYS_close_range,
                    from as libc::c_uint,
                    (k - 1) as libc::c_uint,
                    0,
                )
            };
        }
        from = k + 1;
    }
    close_fds_from(from);
}

/// One route for [`add_routes`] (rtnetlink RTM_NEWROUTE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dst: std::net::IpAddr,
    pub prefix: u8,
    pub kind: RouteKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// `local DST dev lo` in the local table: the destination is this host.
    LocalOnLo,
    /// `prohibit DST`: connecting fails with EACCES.
    Prohibit,
}

/// Every address becomes local on lo (`local 0.0.0.0/0`, `local ::/0`): any connect() from inside
/// lands on the listeners the sandbox set up (the filtered-egress trick; no veth, no firewall).
pub fn add_anyip_routes() -> io::Result<()> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    add_routes(&[
        Route {
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            prefix: 0,
            kind: RouteKind::LocalOnLo,
        },
        Route {
            dst: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            prefix: 0,
            kind: RouteKind::LocalOnLo,
        },
    ])
}

/// Add routes in the current network namespace. IPv6 routes are skipped where IPv6 is off.
pub fn add_routes(routes: &[Route]) -> io::Result<()> {
    // SAFETY: plain socket creation; wrapped immediately.
    let sock = cvt_fd(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    } as libc::c_long)?;
    let lo = nix::net::if_::if_nametoindex("lo").map_err(io::Error::from)?;
    for (i, r) in routes.iter().enumerate() {
        let msg = route_msg(i as u32 + 1, r, lo);
        // SAFETY: zeroed sockaddr_nl (pid 0 = the kernel) is valid.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: valid buffer and address for the call.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 512];
        // SAFETY: valid buffer.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // NLMSG_ERROR carries the result: 0 = ack.
        if n as usize >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == libc::NLMSG_ERROR as u16 {
            let err = -i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            let v6_off = r.dst.is_ipv6()
                && matches!(err, libc::EAFNOSUPPORT | libc::EACCES | libc::ENETUNREACH);
            if err != 0 && err != libc::EEXIST && !v6_off {
                return Err(io::Error::new(
                    io::Error::from_raw_os_error(err).kind(),
                    format!(
                        "route {}/{}: {}",
                        r.dst,
                        r.prefix,
                        io::Error::from_raw_os_error(err)
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn route_msg(seq: u32, r: &Route, lo: u32) -> Vec<u8> {
    const RTM_NEWROUTE: u16 = 24;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const NLM_F_CREATE: u16 = 0x400;
    const NLM_F_REPLACE: u16 = 0x100;
    const RT_TABLE_MAIN: u8 = 254;
    const RT_TABLE_LOCAL: u8 = 255;
    const RTPROT_STATIC: u8 = 4;
    const RT_SCOPE_UNIVERSE: u8 = 0;
    const RT_SCOPE_HOST: u8 = 254;
    const RTN_LOCAL: u8 = 2;
    const RTN_PROHIBIT: u8 = 8;
    const RTA_DST: u16 = 1;
    const RTA_OIF: u16 = 4;
    let (family, addr): (u8, Vec<u8>) = match r.dst {
        std::net::IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        std::net::IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let (table, scope, rtype) = match r.kind {
        RouteKind::LocalOnLo => (RT_TABLE_LOCAL, RT_SCOPE_HOST, RTN_LOCAL),
        RouteKind::Prohibit => (RT_TABLE_MAIN, RT_SCOPE_UNIVERSE, RTN_PROHIBIT),
    };
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, patched below
    m.extend_from_slice(&RTM_NEWROUTE.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid
                                              // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32)
    m.extend_from_slice(&[family, r.prefix, 0, 0, table, RTPROT_STATIC, scope, rtype]);
    m.extend_from_slice(&0u32.to_ne_bytes());
    if r.prefix > 0 {
        m.extend_from_slice(&((4 + addr.len()) as u16).to_ne_bytes());
        m.extend_from_slice(&RTA_DST.to_ne_bytes());
        m.extend_from_slice(&addr);
    }
    if r.kind == RouteKind::LocalOnLo {
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&RTA_OIF.to_ne_bytes());
        m.extend_from_slice(&lo.to_ne_bytes());
    }
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m
}

extern "C" fn hold_until_eof(arg: *mut libc::c_void) -> libc::c_int {
    // arg = parent pid << 32 | read end of the release pipe.
    let (parent, fd) = (
        (arg as usize >> 32) as libc::pid_t,
        (arg as usize & 0xffff_ffff) as libc::c_int,
    );
    let mut b = 0u8;
    // SAFETY: prctl/getppid/read/_exit only (async-signal-safe), on a borrowed stack that shares
    // the parent's memory. The descriptor table is shared too, so the parent's death would not
    // close the pipe's write end: die with the parent instead (and if it is already gone).
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        libc::read(fd, (&mut b as *mut u8).cast(), 1);
        libc::_exit(0)
    }
}

/// A process in a new user namespace that lives until `release` (the returned write end) is
/// closed; its id maps can be written and its namespace opened meanwhile. It shares our memory
/// and descriptor table (CLONE_VM | CLONE_FILES) on a small stack of its own, so no page tables
/// are copied. Keep the returned read end and stack until the child has been reaped.
pub fn userns_holder() -> io::Result<(libc::pid_t, OwnedFd, OwnedFd, Vec<u8>)> {
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: the stack pointer is the (16-byte aligned) top of `stack`, which the caller keeps
    // alive until the child has exited; the child runs only `hold_until_eof`.
    let top = unsafe { stack.as_mut_ptr().add(stack.len()) } as usize & !15;
    // SAFETY: as above; `rd` stays open in the child's copy of the descriptor table.
    let pid = unsafe {
        libc::clone(
            hold_until_eof,
            top as *mut libc::c_void,
            libc::CLONE_NEWUSER | libc::CLONE_VM | libc::CLONE_FILES | libc::SIGCHLD,
            ((std::process::id() as usize) << 32 | rd.as_raw_fd() as usize) as *mut libc::c_void,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((pid, rd, wr, stack))
}

/// sigtimedwait(2): the next pending signal of `set`, or None after `timeout`.
pub fn sigtimedwait(
    set: &nix::sys::signal::SigSet,
    timeout: std::time::Duration,
) -> Option<nix::sys::signal::Signal> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: valid sigset and timespec pointers for the call; no siginfo requested.
    let r = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    (r > 0)
        .then(|| nix::sys::signal::Signal::try_from(r).ok())
        .flatten()
}

/// Until `fd` is readable — a pidfd: its process has exited; a socket: data or its end — or
/// `limit` has passed (zero: look now); whether it is. The wait is rounded up to whole
/// milliseconds, so it never gives up before `limit`.
pub fn wait_readable(fd: impl std::os::fd::AsFd, limit: std::time::Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let ms = limit.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(
        poll(&mut fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)),
        Ok(n) if n > 0
    )
}

/// A small file's bytes in `buf`, read with as few system calls as it takes: one `read` for a
/// file that fits (no `fstat`, no read at the end to find it): for files written whole (a
/// rename over them) and one-record /proc files (`/proc/PID/stat`), where a short read is the
/// end. Fails with `InvalidData` when the file does not fit in `buf`.
pub fn read_small(path: impl AsRef<Path>, buf: &mut [u8]) -> io::Result<&[u8]> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut n = 0;
    loop {
        match f.read(&mut buf[n..]) {
            Ok(0) => return Ok(&buf[..n]),
            Ok(k) => {
                n += k;
                if n == buf.len() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "file too large"));
                }
                // A short read: the end (see above).
                if k < buf.len() - (n - k) {
                    return Ok(&buf[..n]);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Whether the other end of a pipe is gone (poll reports POLLHUP without blocking).
pub fn hung_up(fd: &OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
        Err(_) => true,
    }
}

/// A close-on-exec Unix socket pair (Stream or SeqPacket).
pub fn socketpair(kind: nix::sys::socket::SockType) -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag};
    nix::sys::socket::socketpair(AddressFamily::Unix, kind, None, SockFlag::SOCK_CLOEXEC)
        .map_err(io::Error::from)
}

/// close(2) of descriptor numbers inherited from the parent that this process must not keep
/// (a forked child closing the parent's ends of its pipes).
pub fn close_inherited(fds: &[RawFd]) {
    for fd in fds {
        // SAFETY: closing descriptor numbers the caller does not own as Rust objects (they are
        // the parent's, duplicated by fork); nothing in this process uses them afterwards.
        unsafe { libc::close(*fd) };
    }
}

/// Every signal back to its default disposition (before exec: no handler of ours survives,
/// and neither does an ignored signal). All 64, the real-time ones included, and glibc's two
/// own (32 and 33, which its `sigaction` refuses, hence the system call): a process spawned
/// by glibc's `posix_spawn` — each of a daemon's members — starts with those two ignored, and
/// an ignored signal stays ignored across exec.
pub fn default_all_signals() {
    /// The kernel's `struct sigaction` (x86_64 and aarch64 alike).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction(2) installing SIG_DFL from a valid struct, with the kernel's
        // signal-set size; no handler code of ours runs.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

static SIG_WRITE_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn write_signal_number(sig: libc::c_int) {
    let fd = SIG_WRITE_FD.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        let b = [sig as u8];
        // SAFETY: write(2) is async-signal-safe; the buffer is valid.
        unsafe { libc::write(fd, b.as_ptr().cast(), 1) };
    }
}

/// The self-pipe trick: each of `sigs` is written (as one byte, its number) to `fd`, which the
/// caller keeps open until [`restore_signals`].
pub fn signals_to_pipe(fd: RawFd, sigs: &[nix::sys::signal::Signal]) -> io::Result<()> {
    use nix::sys::signal::{signal, SigHandler};
    SIG_WRITE_FD.store(fd, std::sync::atomic::Ordering::Relaxed);
    for s in sigs {
        // SAFETY: the handler only calls write(2) on a descriptor that stays open.
        unsafe { signal(*s, SigHandler::Handler(write_signal_number)) }?;
    }
    Ok(())
}

/// Undo [`signals_to_pipe`]: default dispositions, and the pipe forgotten.
pub fn restore_signals(sigs: &[nix::sys::signal::Signal]) {
    use nix::sys::signal::{signal, SigHandler};
    for s in sigs {
        // SAFETY: restoring the default disposition.
        let _ = unsafe { signal(*s, SigHandler::SigDfl) };
    }
    SIG_WRITE_FD.store(-1, std::sync::atomic::Ordering::Relaxed);
}

/// This process's stdin, stdout or stderr (0, 1, 2), borrowed.
pub fn stdio(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    assert!((0..=2).contains(&fd), "not a standard descriptor: {fd}");
    // SAFETY: descriptors 0-2 stay open for the life of the process (a closed one is reopened
    // on /dev/null by the runtime's startup before main).
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// read(2) into `buf` from a descriptor number.
pub fn read_raw(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// fgetxattr(2): the value of extended attribute `name` of an open file, into `buf`.
pub fn fgetxattr(
    fd: std::os::fd::BorrowedFd<'_>,
    name: &CStr,
    buf: &mut [u8],
) -> io::Result<usize> {
    // SAFETY: valid fd, C string and a buffer of the length we pass.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The CPU's time-stamp counter (None off x86_64).
pub fn rdtsc() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC reads a counter; it has no preconditions on x86_64.
        Some(unsafe { core::arch::x86_64::_rdtsc() })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::read_small;

    #[test]
    fn read_small_reads_whole_files_and_refuses_what_does_not_fit() {
        let dir = std::env::temp_dir().join(format!("airlock-read-small-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("f");
        std::fs::write(&f, b"12345 678\n").expect("write");
        let mut buf = [0u8; 64];
        assert_eq!(read_small(&f, &mut buf).expect("read"), b"12345 678\n");
        // Exactly the buffer's size, or more: refused, never cut short.
        let mut small = [0u8; 10];
        assert!(read_small(&f, &mut small).is_err());
        let mut smaller = [0u8; 4];
        assert!(read_small(&f, &mut smaller).is_err());
        std::fs::write(&f, b"").expect("write");
        assert_eq!(read_small(&f, &mut buf).expect("empty"), b"");
        assert!(read_small(dir.join("missing"), &mut buf).is_err());
        // A one-record /proc file, whole: it ends with the newline after its last field.
        let mut big = [0u8; 2048];
        let stat = read_small("/proc/self/stat", &mut big).expect("stat");
        assert!(stat.starts_with(format!("{} (", std::process::id()).as_bytes()));
        assert!(stat.ends_with(b"\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
