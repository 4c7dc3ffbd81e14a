//! Thin wrappers over the raw system calls the checks attempt. All `unsafe` of the probe lives
//! under this module; the checks only see `SysResult` values.
//!
//! The wrappers never retry, never fall back and never "fix" an error: the probe must report
//! exactly what the kernel (or the sandbox's seccomp filter in front of it) answered.

pub mod fs;
pub mod kernel;
pub mod net;
pub mod process;

use std::ffi::CString;
use std::fmt;

/// An errno value as returned by a failed system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

pub type SysResult<T> = Result<T, Errno>;

impl Errno {
    pub fn last() -> Self {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::ESRCH => "ESRCH",
            libc::EINTR => "EINTR",
            libc::EIO => "EIO",
            libc::ENXIO => "ENXIO",
            libc::E2BIG => "E2BIG",
            libc::ENOEXEC => "ENOEXEC",
            libc::EBADF => "EBADF",
            libc::ECHILD => "ECHILD",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::EXDEV => "EXDEV",
            libc::ENODEV => "ENODEV",
            libc::ENOTDIR => "ENOTDIR",
            libc::EISDIR => "EISDIR",
            libc::EINVAL => "EINVAL",
            libc::EMFILE => "EMFILE",
            libc::ENOTTY => "ENOTTY",
            libc::ETXTBSY => "ETXTBSY",
            libc::ENOSPC => "ENOSPC",
            libc::EROFS => "EROFS",
            libc::ENOSYS => "ENOSYS",
            libc::ENOKEY => "ENOKEY",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::EAFNOSUPPORT => "EAFNOSUPPORT",
            libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
            libc::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
            libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
            libc::ENETDOWN => "ENETDOWN",
            libc::ENETUNREACH => "ENETUNREACH",
            libc::ECONNREFUSED => "ECONNREFUSED",
            libc::ECONNRESET => "ECONNRESET",
            libc::EHOSTUNREACH => "EHOSTUNREACH",
            libc::ETIMEDOUT => "ETIMEDOUT",
            libc::EINPROGRESS => "EINPROGRESS",
            libc::ESTALE => "ESTALE",
            _ => "errno",
        }
    }

    /// Errors that a seccomp filter, a missing capability or an LSM typically answer with.
    pub fn is_denial(self) -> bool {
        matches!(self.0, libc::EPERM | libc::EACCES | libc::ENOSYS)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = std::io::Error::from_raw_os_error(self.0);
        match self.name() {
            "errno" => write!(f, "errno {} ({})", self.0, msg),
            name => write!(f, "{name}"),
        }
    }
}

/// Turn a raw return value into a result, reading errno on failure.
pub fn check(rc: libc::c_long) -> SysResult<libc::c_long> {
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}

pub fn check_int(rc: libc::c_int) -> SysResult<libc::c_int> {
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}

/// Build a C string; interior NUL bytes (never produced by the probe itself) become EINVAL.
pub fn cstr(s: &str) -> SysResult<CString> {
    CString::new(s).map_err(|_| Errno(libc::EINVAL))
}

/// An owned file descriptor, closed on drop.
#[derive(Debug)]
pub struct Fd(libc::c_int);

impl Fd {
    /// Take ownership of a descriptor a system call just returned.
    pub fn from_raw(fd: libc::c_int) -> Self {
        Fd(fd)
    }

    pub fn raw(&self) -> libc::c_int {
        self.0
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor and nothing else closes it.
        unsafe {
            libc::close(self.0);
        }
    }
}

pub fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

pub fn getuid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

pub fn getgid() -> u32 {
    // SAFETY: getgid has no preconditions.
    unsafe { libc::getgid() }
}
