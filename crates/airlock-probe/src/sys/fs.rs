//! File-system system calls: open, read/write, mknod, mount, chroot, ioctl on ttys, file handles.

use super::{check, check_int, cstr, Fd, SysResult};

pub fn open(path: &str, flags: libc::c_int, mode: libc::mode_t) -> SysResult<Fd> {
    let p = cstr(path)?;
    // SAFETY: `p` is a valid NUL-terminated string that outlives the call.
    let fd = check_int(unsafe {
        libc::open(p.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint)
    })?;
    Ok(Fd::from_raw(fd))
}

pub fn read(fd: &Fd, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes.
    let n =
        check(unsafe { libc::read(fd.raw(), buf.as_mut_ptr().cast(), buf.len()) } as libc::c_long)?;
    Ok(n as usize)
}

pub fn pread(fd: &Fd, buf: &mut [u8], offset: i64) -> SysResult<usize> {
    // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes.
    let n = check(
        unsafe { libc::pread(fd.raw(), buf.as_mut_ptr().cast(), buf.len(), offset) }
            as libc::c_long,
    )?;
    Ok(n as usize)
}

pub fn write(fd: &Fd, data: &[u8]) -> SysResult<usize> {
    // SAFETY: `data` is a valid readable buffer of `data.len()` bytes.
    let n =
        check(unsafe { libc::write(fd.raw(), data.as_ptr().cast(), data.len()) } as libc::c_long)?;
    Ok(n as usize)
}

/// Read a whole (small) file with raw open/read; at most `limit` bytes.
pub fn read_file(path: &str, limit: usize) -> SysResult<Vec<u8>> {
    let fd = open(path, libc::O_RDONLY | libc::O_NOCTTY, 0)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < limit {
        let n = read(&fd, &mut buf)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out.truncate(limit);
    Ok(out)
}

pub fn mkdir(path: &str, mode: libc::mode_t) -> SysResult<()> {
    let p = cstr(path)?;
    // SAFETY: `p` is a valid NUL-terminated string.
    check_int(unsafe { libc::mkdir(p.as_ptr(), mode) })?;
    Ok(())
}

pub fn rmdir(path: &str) -> SysResult<()> {
    let p = cstr(path)?;
    // SAFETY: `p` is a valid NUL-terminated string.
    check_int(unsafe { libc::rmdir(p.as_ptr()) })?;
    Ok(())
}

pub fn unlink(path: &str) -> SysResult<()> {
    let p = cstr(path)?;
    // SAFETY: `p` is a valid NUL-terminated string.
    check_int(unsafe { libc::unlink(p.as_ptr()) })?;
    Ok(())
}

pub fn unlinkat(dir: &Fd, path: &str, flags: libc::c_int) -> SysResult<()> {
    let p = cstr(path)?;
    // SAFETY: `p` is valid; `dir` is an open descriptor.
    check_int(unsafe { libc::unlinkat(dir.raw(), p.as_ptr(), flags) })?;
    Ok(())
}

pub fn mknod(path: &str, mode: libc::mode_t, major: u32, minor: u32) -> SysResult<()> {
    let p = cstr(path)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: `p` is a valid NUL-terminated string.
    check_int(unsafe { libc::mknod(p.as_ptr(), mode, dev) })?;
    Ok(())
}

/// (st_dev, st_ino) of a path, following symlinks.
pub fn dev_ino(path: &str) -> SysResult<(u64, u64)> {
    let p = cstr(path)?;
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is valid and `st` is a writable stat buffer.
    check_int(unsafe { libc::stat(p.as_ptr(), &mut st) })?;
    Ok((st.st_dev, st.st_ino))
}

pub fn mount(
    src: &str,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> SysResult<()> {
    let s = cstr(src)?;
    let t = cstr(target)?;
    let f = fstype.map(cstr).transpose()?;
    let d = data.map(cstr).transpose()?;
    // SAFETY: every pointer is either NULL or a valid NUL-terminated string alive for the call.
    check_int(unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            d.as_ref().map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    })?;
    Ok(())
}

pub fn umount2(target: &str, flags: libc::c_int) -> SysResult<()> {
    let t = cstr(target)?;
    // SAFETY: `t` is a valid NUL-terminated string.
    check_int(unsafe { libc::umount2(t.as_ptr(), flags) })?;
    Ok(())
}

pub fn chroot(path: &str) -> SysResult<()> {
    let p = cstr(path)?;
    // SAFETY: `p` is a valid NUL-terminated string.
    check_int(unsafe { libc::chroot(p.as_ptr()) })?;
    Ok(())
}

pub fn chdir(path: &str) -> SysResult<()> {
    let p = cstr(path)?;
    // SAFETY: `p` is a valid NUL-terminated string.
    check_int(unsafe { libc::chdir(p.as_ptr()) })?;
    Ok(())
}

pub fn isatty(fd: libc::c_int) -> bool {
    // SAFETY: isatty only inspects the descriptor number.
    unsafe { libc::isatty(fd) == 1 }
}

/// `ioctl(fd, TIOCSTI, NULL)`. The kernel checks permission before it reads the character, so
/// EFAULT means "the injection would have been accepted" while nothing is actually injected.
pub fn tiocsti_null(fd: libc::c_int) -> SysResult<()> {
    // SAFETY: TIOCSTI reads one byte from the pointer; the kernel validates the (NULL) user
    // pointer itself and answers EFAULT, it never dereferences it in our address space.
    check_int(unsafe { libc::ioctl(fd, libc::TIOCSTI, std::ptr::null::<u8>()) })?;
    Ok(())
}

/// `getcwd` through the raw syscall, which reports "(unreachable)" paths instead of hiding them.
pub fn getcwd_raw() -> SysResult<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: `buf` is writable for its full length.
    let n = check(unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) })?;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(n as usize);
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// `name_to_handle_at(AT_FDCWD, path)`: returns (handle_type, handle bytes).
pub fn name_to_handle(path: &str) -> SysResult<(i32, Vec<u8>)> {
    let p = cstr(path)?;
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }
    let mut buf = [0u8; 8 + 128];
    buf[..4].copy_from_slice(&128u32.to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `buf` is a file_handle header followed by 128 bytes of room, as declared in
    // handle_bytes; `mount_id` is a valid int to write.
    check(unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            p.as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id,
            0,
        )
    })?;
    let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let ty = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Ok((ty, buf[8..8 + len.min(128)].to_vec()))
}

/// `open_by_handle_at(mount_fd, handle, flags)` (the "shocker" primitive).
pub fn open_by_handle(
    mount_fd: &Fd,
    handle_type: i32,
    handle: &[u8],
    flags: libc::c_int,
) -> SysResult<Fd> {
    let mut buf = vec![0u8; 8 + handle.len()];
    buf[..4].copy_from_slice(&(handle.len() as u32).to_ne_bytes());
    buf[4..8].copy_from_slice(&handle_type.to_ne_bytes());
    buf[8..].copy_from_slice(handle);
    // SAFETY: `buf` is a complete file_handle whose handle_bytes matches its length.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.raw(),
            buf.as_mut_ptr(),
            flags,
        )
    })?;
    Ok(Fd::from_raw(fd as libc::c_int))
}

/// faccessat(path, W_OK, AT_EACCESS): would the effective credentials be allowed to write?
/// Unlike open(2) it does not fail with ETXTBSY for a running executable.
pub fn access_w(path: &str) -> SysResult<()> {
    let p = cstr(path)?;
    // SAFETY: `p` is a valid NUL-terminated string.
    check_int(unsafe {
        libc::faccessat(libc::AT_FDCWD, p.as_ptr(), libc::W_OK, libc::AT_EACCESS)
    })?;
    Ok(())
}

/// fcntl(fd, F_GETFD): is this descriptor number open?
pub fn fd_is_open(fd: libc::c_int) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// The soft RLIMIT_NOFILE.
pub fn nofile_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid rlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
        rl.rlim_cur
    } else {
        1024
    }
}
