//! Process system calls: fork/wait for the per-check child, ptrace, namespaces, credentials.

use super::{check, check_int, Errno, Fd, SysResult};

pub enum Forked {
    Child,
    Parent(libc::pid_t),
}

/// fork(2). The probe is single-threaded, so the child may run arbitrary code.
pub fn fork() -> SysResult<Forked> {
    // SAFETY: the probe never starts threads, so the child inherits a consistent address space.
    let pid = check_int(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Forked::Child
    } else {
        Forked::Parent(pid)
    })
}

/// Leave the process immediately, without running destructors or atexit handlers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

pub fn pipe() -> SysResult<(Fd, Fd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    check_int(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((Fd::from_raw(fds[0]), Fd::from_raw(fds[1])))
}

/// Wait for readability with a timeout; Ok(true) when readable (or hung up).
pub fn poll_in(fd: &Fd, timeout_ms: i32) -> SysResult<bool> {
    poll_events(fd, libc::POLLIN, timeout_ms)
}

pub fn poll_events(fd: &Fd, events: libc::c_short, timeout_ms: i32) -> SysResult<bool> {
    let mut p = libc::pollfd {
        fd: fd.raw(),
        events,
        revents: 0,
    };
    loop {
        // SAFETY: `p` is one valid pollfd.
        match check_int(unsafe { libc::poll(&mut p, 1, timeout_ms) }) {
            Ok(n) => return Ok(n > 0),
            Err(Errno(libc::EINTR)) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// How a waited-for process ended.
pub enum Status {
    Exited(i32),
    Signaled(i32),
    Other(i32),
}

pub fn waitpid(pid: libc::pid_t, flags: libc::c_int) -> SysResult<Status> {
    let mut st: libc::c_int = 0;
    loop {
        // SAFETY: `st` is a valid int to receive the status.
        match check_int(unsafe { libc::waitpid(pid, &mut st, flags) }) {
            Ok(_) => break,
            Err(Errno(libc::EINTR)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(if libc::WIFEXITED(st) {
        Status::Exited(libc::WEXITSTATUS(st))
    } else if libc::WIFSIGNALED(st) {
        Status::Signaled(libc::WTERMSIG(st))
    } else {
        Status::Other(st)
    })
}

pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> SysResult<()> {
    // SAFETY: kill has no memory-safety preconditions.
    check_int(unsafe { libc::kill(pid, sig) })?;
    Ok(())
}

pub fn ptrace(req: libc::c_uint, pid: libc::pid_t) -> SysResult<()> {
    // SAFETY: the requests used here (ATTACH, SEIZE, DETACH) take no pointers (addr/data 0).
    check(unsafe { libc::ptrace(req, pid, 0usize, 0usize) })?;
    Ok(())
}

pub fn unshare(flags: libc::c_int) -> SysResult<()> {
    // SAFETY: unshare has no memory-safety preconditions.
    check_int(unsafe { libc::unshare(flags) })?;
    Ok(())
}

/// Raw clone(2) with fork semantics (no new stack, no CLONE_VM): the child exits at once.
/// Returns the child's pid to the caller, which must reap it.
pub fn clone_and_exit(flags: libc::c_ulong) -> SysResult<libc::pid_t> {
    // SAFETY: without CLONE_VM the child gets a private copy of the address space and the
    // current stack, exactly like fork; it only issues exit_group, touching nothing else.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if rc == 0 {
        // SAFETY: exit_group never returns.
        unsafe { libc::syscall(libc::SYS_exit_group, 0) };
    }
    Ok(check(rc)? as libc::pid_t)
}

/// Raw clone3(2) with fork semantics; the child exits at once. seccomp cannot inspect clone3's
/// flags (they sit behind a pointer), so this is the usual way around a clone-flags filter.
pub fn clone3_and_exit(flags: u64) -> SysResult<libc::pid_t> {
    // struct clone_args (CLONE_ARGS_SIZE_VER0 = 64 bytes): flags, pidfd, child_tid,
    // parent_tid, exit_signal, stack, stack_size, tls.
    let mut args = [0u64; 8];
    args[0] = flags;
    args[4] = libc::SIGCHLD as u64;
    // SAFETY: `args` is a valid VER0 clone_args; no CLONE_VM and no stack, so the child runs on
    // a private copy of our stack like fork and only issues exit_group.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args.as_mut_ptr(),
            std::mem::size_of_val(&args),
        )
    };
    if rc == 0 {
        // SAFETY: exit_group never returns.
        unsafe { libc::syscall(libc::SYS_exit_group, 0) };
    }
    Ok(check(rc)? as libc::pid_t)
}

pub fn setuid(uid: u32) -> SysResult<()> {
    // SAFETY: the raw syscall (not glibc's all-threads wrapper) has no pointer arguments.
    check(unsafe { libc::syscall(libc::SYS_setuid, uid) })?;
    Ok(())
}

pub fn setgid(gid: u32) -> SysResult<()> {
    // SAFETY: the raw syscall has no pointer arguments.
    check(unsafe { libc::syscall(libc::SYS_setgid, gid) })?;
    Ok(())
}

/// personality(2); 0xffffffff queries without changing.
pub fn personality(persona: libc::c_ulong) -> SysResult<libc::c_int> {
    // SAFETY: personality has no pointer arguments.
    check_int(unsafe { libc::personality(persona) })
}

/// process_vm_readv of `len` bytes at `remote_addr` in `pid`.
pub fn process_vm_read(pid: libc::pid_t, remote_addr: usize, len: usize) -> SysResult<usize> {
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: remote_addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` describes our own writable buffer; the remote iovec is only interpreted
    // by the kernel in the target's address space.
    let n =
        check(unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) } as libc::c_long)?;
    Ok(n as usize)
}
