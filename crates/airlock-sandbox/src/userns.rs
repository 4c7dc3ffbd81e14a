//! Throwaway user namespaces: the idmapping applied to writable host mounts of root-run
//! sandboxes (and tried by `doctor`).

use crate::sys;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;

/// A throwaway user namespace whose mapping turns `owner` (a host uid/gid) into `to` (the host
/// id of the sandbox user): the idmapping applied to writable host mounts of root-run sandboxes.
pub fn idmap_userns(owner: (u32, u32), to: (u32, u32)) -> io::Result<OwnedFd> {
    let (pid, held, release, stack) = sys::userns_holder()?;
    let res = (|| {
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
    drop(release);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    drop((held, stack)); // only once the child that used them is gone
    res
}
