//! `doctor`'s few raw calls (hostcaps) that neither nix nor the rest of `sys` cover: fork
//! through libc, raw syscalls it tries on purpose, KVM ioctls.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// fork(2) through libc (so glibc's atfork handlers keep malloc usable in the child).
/// `Ok(None)` in the child, `Ok(Some(pid))` in the parent.
///
/// The child must only run the probe closure and then `_exit` (see `child::run`): it never
/// returns into the caller's frames, and touches no lock another thread could hold except
/// malloc's, which glibc resets across fork.
pub(crate) fn fork() -> io::Result<Option<libc::pid_t>> {
    // SAFETY: the child side only runs self-contained probe code (syscalls, small
    // allocations made safe by glibc's fork handlers) and ends with _exit; see above.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => Ok(None),
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Some(child.as_raw())),
        Err(e) => Err(e.into()),
    }
}

const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

/// The Landlock ABI version the kernel offers, or the errno of
/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`.
pub(crate) fn landlock_abi() -> Result<i64, i32> {
    // SAFETY: a null attribute pointer with size 0 and the VERSION flag is the documented way
    // to query the ABI; no memory is read or written and no descriptor is created.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0 as libc::size_t,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

/// prctl(PR_GET_SECCOMP): 0 = not confined, 2 = under a filter.
pub(crate) fn get_seccomp_mode() -> io::Result<i32> {
    crate::sys::prctl_value(libc::PR_GET_SECCOMP, 0)
}

/// getppid(2) through the raw syscall, so a seccomp errno shows up as -1/errno.
pub(crate) fn raw_getppid() -> Result<i64, i32> {
    // SAFETY: getppid takes no arguments.
    let r = unsafe { libc::syscall(libc::SYS_getppid) };
    if r < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00; // _IO(KVMIO, 0x00)
const KVM_CREATE_VM: libc::c_ulong = 0xAE01; // _IO(KVMIO, 0x01)

/// KVM_GET_API_VERSION on an open /dev/kvm.
pub(crate) fn kvm_api_version(kvm: &impl AsRawFd) -> io::Result<i32> {
    // SAFETY: this ioctl takes no argument and returns an integer.
    let r = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// KVM_CREATE_VM (machine type 0): proves VMs can be created; the VM is released when the
/// returned descriptor is dropped.
pub(crate) fn kvm_create_vm(kvm: &impl AsRawFd) -> io::Result<OwnedFd> {
    // SAFETY: the argument is the integer machine type; the result is a new descriptor.
    let r = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM as _, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just created this descriptor for us; we are its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// Install a classic-BPF seccomp filter on the calling thread (no_new_privs must be set).
pub(crate) fn seccomp_install(prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies the program.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &fprog as *const libc::sock_fprog as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
