//! Socket system calls: creation by family, TCP connect with a deadline, UDP send, Unix connect.

use super::process::poll_events;
use super::{check_int, Errno, Fd, SysResult};
use std::net::SocketAddr;

pub fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> SysResult<Fd> {
    // SAFETY: socket takes only integers.
    let fd = check_int(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) })?;
    Ok(Fd::from_raw(fd))
}

/// A socket address in the kernel's layout.
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

fn raw_addr(addr: &SocketAddr) -> RawAddr {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    RawAddr {
        storage,
        len: len as libc::socklen_t,
    }
}

fn family(addr: &SocketAddr) -> libc::c_int {
    if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

/// What a TCP connect attempt came to.
pub enum Connect {
    Connected,
    /// No answer before the deadline: a route exists and packets may have left.
    TimedOut,
}

/// Non-blocking TCP connect, waiting at most `timeout_ms` for the handshake.
pub fn tcp_connect(addr: &SocketAddr, timeout_ms: i32) -> SysResult<Connect> {
    let fd = socket(family(addr), libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)?;
    let raw = raw_addr(addr);
    // SAFETY: `raw.storage` holds a valid address of `raw.len` bytes.
    let rc = unsafe {
        libc::connect(
            fd.raw(),
            (&raw.storage as *const libc::sockaddr_storage).cast(),
            raw.len,
        )
    };
    if rc == 0 {
        return Ok(Connect::Connected);
    }
    let err = Errno::last();
    if err.0 != libc::EINPROGRESS {
        return Err(err);
    }
    if !poll_events(&fd, libc::POLLOUT, timeout_ms)? {
        return Ok(Connect::TimedOut);
    }
    let mut so_error: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `so_error`/`len` are valid for an int-sized option.
    check_int(unsafe {
        libc::getsockopt(
            fd.raw(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut so_error as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    if so_error == 0 {
        Ok(Connect::Connected)
    } else {
        Err(Errno(so_error))
    }
}

/// One UDP datagram to `addr`; Ok means the kernel accepted it for sending (a route exists).
pub fn udp_send(addr: &SocketAddr, payload: &[u8]) -> SysResult<usize> {
    let fd = socket(family(addr), libc::SOCK_DGRAM, 0)?;
    let raw = raw_addr(addr);
    // SAFETY: the payload and address buffers are valid for the given lengths.
    let n = unsafe {
        libc::sendto(
            fd.raw(),
            payload.as_ptr().cast(),
            payload.len(),
            libc::MSG_DONTWAIT,
            (&raw.storage as *const libc::sockaddr_storage).cast(),
            raw.len,
        )
    };
    if n < 0 {
        Err(Errno::last())
    } else {
        Ok(n as usize)
    }
}

/// Connect a Unix stream socket to a filesystem path, or to an abstract name when `abstract_ns`.
pub fn unix_connect(name: &str, abstract_ns: bool) -> SysResult<()> {
    let fd = socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)?;
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let offset = usize::from(abstract_ns); // abstract names start with a NUL byte
    let bytes = name.as_bytes();
    if offset + bytes.len() >= sun.sun_path.len() {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    for (dst, src) in sun.sun_path[offset..].iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let base = std::mem::size_of::<libc::sa_family_t>();
    let len = if abstract_ns {
        base + 1 + bytes.len()
    } else {
        std::mem::size_of::<libc::sockaddr_un>()
    };
    // SAFETY: `sun` is a valid sockaddr_un and `len` does not exceed its size.
    let rc = unsafe {
        libc::connect(
            fd.raw(),
            (&sun as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = Errno::last();
    // A non-blocking Unix connect to a full backlog answers EAGAIN: the listener was reached.
    if err.0 == libc::EAGAIN || err.0 == libc::EINPROGRESS {
        return Ok(());
    }
    Err(err)
}
