//! Throwaway user namespaces: the idmapping applied to writable host mounts of root-run
//! sandboxes (and tried by `doctor`).

use crate::sys;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;

/// A throwaway user namespace whose mapping turns `owner` (a host uid/gid) into `to` (the host
/// id of the sandbox user): the idmapping applied to writable host mounts of root-run sandboxes.
pub fn idmap_userns(owner: (u32, u32), to: (u32, u32)) -> io::Result<OwnedFd> {
    let mut made = idmap_userns_unreaped(owner, to)?;
    let fd = made
        .fd
        .take()
        .ok_or_else(|| io::Error::other("no namespace"))?;
    drop(made); // its holder reaped
    Ok(fd)
}

/// [`idmap_userns`]'s namespace, its holder process (which shares this process's memory, on
/// a stack of its own) released but reaped only when this is dropped: its exit is not waited
/// for on the caller's path (a warm claim's). Until then this process must not join another
/// user namespace (`setns` refuses a process whose memory is shared).
#[derive(Debug)]
pub struct Idmap {
    fd: Option<OwnedFd>,
    pid: libc::pid_t,
    _held: OwnedFd,
    _stack: Vec<u8>,
}

impl Idmap {
    /// The namespace.
    pub fn fd(&self) -> Option<&OwnedFd> {
        self.fd.as_ref()
    }
}

impl Drop for Idmap {
    fn drop(&mut self) {
        // Its stack and descriptor are dropped after this: once the child is gone.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid), None);
    }
}

/// See [`Idmap`].
pub fn idmap_userns_unreaped(owner: (u32, u32), to: (u32, u32)) -> io::Result<Idmap> {
    let (pid, held, release, stack) = sys::userns_holder()?;
    let res = (|| -> io::Result<OwnedFd> {
        fs::write(
            format!("/proc/{pid}/uid_map"),
            format!("{} {} 1\n", owner.0, to.0),
        )?;
        fs::write(
            format!("/proc/{pid}/gid_map"),
            format!("{} {} 1\n", owner.1, to.1),
        )?;
        let f = fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok(OwnedFd::from(f))
    })();
    // Released: it exits on its own.
    drop(release);
    // Reaped when dropped, the namespace made or not.
    let mut made = Idmap {
        fd: None,
        pid,
        _held: held,
        _stack: stack,
    };
    made.fd = Some(res?);
    Ok(made)
}
