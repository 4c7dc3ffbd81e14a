//! `airlock-guest ws attach UID GID [SIZE]` and `airlock-guest ws changes`: a warm microVM's
//! overlay workspace, bound at its claim (docs/design/warm-pool.md, "microVM workspaces");
//! `airlock-guest ws attach-disk UID GID`: a named sandbox's clone workspace (its ext4 image,
//! written by the host into a member's writable slot), mounted read-write;
//! `airlock-guest ws ro (dir|file TARGET)…`: a warm claim's read-only mounts, partitions of
//! the member's claim slot disk (docs/design/warm-pool.md, "microVM read-only mounts").
//!
//! A pool member boots with a blank read-only disk (serial [`DISK_WORKSPACE`], the *slot*). At a
//! claim the host writes the project's erofs image into that disk's file, then runs `attach` as
//! root in the guest: it drops the guest's cached blocks of the device (the kernel read the
//! blank disk at boot), mounts the image read-only under a tmpfs overlay at /workspace — what
//! the cold guest's init does with its workspace disk — with the layers in a root-only tmpfs at
//! [`WS_DIR`] (the sandbox user cannot reach them). After the command `changes` prints the
//! change summary (upper against lower, [`crate::summary::diff`]) as one JSON line.
//!
//! Exit status: 0 done, 1 failed (the reason on stderr), 2 a bad request.

use crate::init::{ctx, find_disk, mkdir, mnt, Res};
use airlock_model::vm::{DISK_CLAIM, DISK_WORKSPACE};
use nix::mount::MsFlags;
use std::os::fd::AsRawFd;

/// The workspace's layers in the guest: `lower` (the image), `upper` and `work` (on a tmpfs).
pub const WS_DIR: &str = "/run/airlock-ws";
/// Where the workspace goes.
const WORKSPACE: &str = "/workspace";
/// BLKFLSBUF (`_IO(0x12, 97)`): write back and drop a block device's cached blocks.
const BLKFLSBUF: libc::c_ulong = 0x1261;
/// BLKRRPART (`_IO(0x12, 95)`): read a block device's partition table again.
const BLKRRPART: libc::c_ulong = 0x125f;
/// Where a claim's read-only file mounts' images are mounted (root's, 0700), each bound at its
/// target from there.
const RO_DIR: &str = "/run/airlock-ro";

const USAGE: &str = "usage: airlock-guest ws attach UID GID [SIZE|disk] | ws attach-disk UID GID \
                     | ws ro (dir|file TARGET)… | ws grow BYTES | ws changes";

pub fn main(args: &[String]) -> i32 {
    let done = match args {
        [op, uid, gid, rest @ ..] if op == "attach" && rest.len() <= 1 => {
            let num = |s: &String| s.parse::<u64>().ok();
            let layers = match rest.first() {
                None => Some(Layers::Tmpfs(None)),
                Some(d) if d == "disk" => Some(Layers::Disk),
                Some(size) => num(size).map(|s| Layers::Tmpfs(Some(s))),
            };
            match (num(uid), num(gid), layers) {
                (Some(u), Some(g), Some(layers)) => attach(u as u32, g as u32, layers),
                _ => {
                    eprintln!("{USAGE}");
                    return 2;
                }
            }
        }
        [op, uid, gid] if op == "attach-disk" => {
            match (uid.parse::<u32>().ok(), gid.parse::<u32>().ok()) {
                (Some(u), Some(g)) => attach_disk(u, g),
                _ => {
                    eprintln!("{USAGE}");
                    return 2;
                }
            }
        }
        [op, rest @ ..] if op == "ro" && !rest.is_empty() && rest.len() % 2 == 0 => {
            let mut mounts = Vec::new();
            for pair in rest.chunks(2) {
                let file = match pair[0].as_str() {
                    "dir" => false,
                    "file" => true,
                    _ => {
                        eprintln!("{USAGE}");
                        return 2;
                    }
                };
                if !pair[1].starts_with('/') {
                    eprintln!("airlock-guest ws ro: not an absolute path: {:?}", pair[1]);
                    return 2;
                }
                mounts.push((file, pair[1].as_str()));
            }
            ro(&mounts)
        }
        [op, bytes] if op == "grow" => match bytes.parse::<u64>() {
            Ok(b) => grow(b),
            Err(_) => {
                eprintln!("{USAGE}");
                return 2;
            }
        },
        [op] if op == "changes" => changes(),
        _ => {
            eprintln!("{USAGE}");
            return 2;
        }
    };
    match done {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("airlock-guest ws: {e}");
            1
        }
    }
}

/// Where a claimed workspace's writable layers go.
enum Layers {
    /// A root-only tmpfs (of this size), as the cold guest's without `disk`.
    Tmpfs(Option<u64>),
    /// The guest's writable-layer disk (`disk`: the member booted with it, its root's,
    /// /tmp's and home's layers are there already): the workspace's beside them, so all the
    /// guest writes counts against `disk`, as in a cold guest.
    Disk,
}

/// Where the writable-layer disk is mounted (once more: the boot's mount is PID 1's, outside
/// the sessions' root) while the claim's layer directory is bound at [`WS_DIR`].
const DISK_MNT: &str = "/run/airlock-ws-disk";

fn attach(uid: u32, gid: u32, layers: Layers) -> Res<()> {
    let dev = find_disk(DISK_WORKSPACE).ok_or("this guest has no workspace slot disk")?;
    drop_cached_blocks(&dev)?;
    if std::path::Path::new(WS_DIR).exists() {
        return Err(format!("{WS_DIR} exists: a workspace is attached already"));
    }
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    match layers {
        Layers::Tmpfs(size) => {
            let size = size.map(|s| format!(",size={s}")).unwrap_or_default();
            mnt(
                "tmpfs",
                WS_DIR,
                "tmpfs",
                nosuid,
                Some(&format!("mode=0700{size}")),
            )?;
        }
        Layers::Disk => layers_on_disk(nosuid)?,
    }
    let (lower, upper, work) = (
        format!("{WS_DIR}/lower"),
        format!("{WS_DIR}/upper"),
        format!("{WS_DIR}/work"),
    );
    for d in [&upper, &work] {
        mkdir(d, 0o755)?;
    }
    nix::unistd::chown(
        upper.as_str(),
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .map_err(ctx("chown the workspace layer"))?;
    mnt(&dev, &lower, "erofs", MsFlags::MS_RDONLY, None)?;
    mnt(
        "overlay",
        WORKSPACE,
        "overlay",
        nosuid,
        Some(&format!("lowerdir={lower},upperdir={upper},workdir={work}")),
    )
}

/// A claim's read-only mounts: the host wrote their snapshots into the claim slot (blank at
/// the boot), a GPT partition each, in order; the guest's cached blocks of it are dropped,
/// the kernel reads its table again, and partition `i + 1` is mounted at the `i`th target as
/// the cold guest's init mounts a read-only mount's disk.
fn ro(mounts: &[(bool, &str)]) -> Res<()> {
    let dev = find_disk(DISK_CLAIM).ok_or("this guest has no claim slot disk")?;
    drop_cached_blocks(&dev)?;
    let f = std::fs::File::open(&dev).map_err(ctx(&dev))?;
    // SAFETY: ioctl(2) with an integer argument on an open block device.
    if unsafe { libc::ioctl(f.as_raw_fd(), BLKRRPART as _, 0) } != 0 {
        return Err(format!(
            "read the partition table of {dev}: {}",
            std::io::Error::last_os_error()
        ));
    }
    drop(f);
    if mounts.iter().any(|(file, _)| *file) {
        mkdir(RO_DIR, 0o700)?;
    }
    for (i, (file, target)) in mounts.iter().enumerate() {
        let part = format!("{dev}{}", i + 1);
        let t0 = std::time::Instant::now();
        while !std::path::Path::new(&part).exists() {
            if t0.elapsed() > std::time::Duration::from_secs(10) {
                return Err(format!("partition {part} did not appear"));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        crate::init::mount_ro(&part, target, *file, &format!("{RO_DIR}/{i}"))?;
    }
    Ok(())
}

/// [`Layers::Disk`]: the writable-layer disk mounted again (the same filesystem as the
/// boot's /rw: its free space is the one `disk` bounds) at [`DISK_MNT`], a root-only
/// directory of the claim's made there and bound at [`WS_DIR`], the whole-disk mount gone
/// again (the guest's root layers are not the session's to see).
fn layers_on_disk(flags: MsFlags) -> Res<()> {
    use nix::mount::{mount, umount2, MntFlags};
    let dev = find_disk(airlock_model::vm::DISK_OVERLAY)
        .ok_or("this guest has no writable-layer disk (`disk`)")?;
    mkdir(DISK_MNT, 0o700)?;
    mnt(&dev, &format!("{DISK_MNT}/fs"), "ext4", flags, None)?;
    let own = format!("{DISK_MNT}/fs/claim-ws");
    let bound = mkdir(&own, 0o700).and_then(|()| {
        mkdir(WS_DIR, 0o700)?;
        mount(
            Some(own.as_str()),
            WS_DIR,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(ctx(format!("bind {own} at {WS_DIR}")))
    });
    let _ = umount2(format!("{DISK_MNT}/fs").as_str(), MntFlags::MNT_DETACH);
    bound
}

/// EXT4_IOC_RESIZE_FS (`_IOW('f', 16, __u64)`): grow a mounted ext4 to this many blocks.
const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;

/// `ws grow BYTES`: the host had QEMU grow the writable-layer disk to BYTES; once the guest's
/// kernel sees that capacity (a virtio config change, a moment later), the ext4 filesystem on
/// it (the boot's /rw, mounted once more at [`DISK_MNT`] for this) grows to fill it, online.
fn grow(bytes: u64) -> Res<()> {
    use nix::mount::{umount2, MntFlags};
    let dev = find_disk(airlock_model::vm::DISK_OVERLAY)
        .ok_or("this guest has no writable-layer disk (`disk`)")?;
    let name = dev.trim_start_matches("/dev/");
    let size_file = format!("/sys/block/{name}/size");
    let t0 = std::time::Instant::now();
    loop {
        let sectors: u64 = std::fs::read_to_string(&size_file)
            .map_err(ctx(&size_file))?
            .trim()
            .parse()
            .map_err(ctx(&size_file))?;
        if sectors * 512 >= bytes {
            break;
        }
        if t0.elapsed() > std::time::Duration::from_secs(10) {
            return Err(format!(
                "{dev} is {} bytes, not the {bytes} asked for",
                sectors * 512
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    mkdir(DISK_MNT, 0o700)?;
    let fs = format!("{DISK_MNT}/fs");
    mnt(
        &dev,
        &fs,
        "ext4",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None,
    )?;
    let grown = (|| {
        let root = std::fs::File::open(&fs).map_err(ctx(&fs))?;
        let st = nix::sys::statvfs::fstatvfs(&root).map_err(ctx(&fs))?;
        let blocks: u64 = bytes / st.fragment_size().max(1) as u64;
        // SAFETY: ioctl(2) on an open directory of the filesystem, with a pointer to a u64
        // that outlives the call.
        if unsafe { libc::ioctl(root.as_raw_fd(), EXT4_IOC_RESIZE_FS as _, &blocks) } != 0 {
            return Err(format!(
                "grow the filesystem on {dev} to {blocks} blocks: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    })();
    let _ = umount2(fs.as_str(), MntFlags::MNT_DETACH);
    grown
}

/// Drop the guest's cached blocks of the slot disk `dev` (the kernel read the blank disk when
/// it found it: those cached zeros must not stand for the image the host wrote since).
fn drop_cached_blocks(dev: &str) -> Res<()> {
    let f = std::fs::File::open(dev).map_err(ctx(dev))?;
    // SAFETY: ioctl(2) with an integer argument on an open block device.
    if unsafe { libc::ioctl(f.as_raw_fd(), BLKFLSBUF as _, 0) } != 0 {
        return Err(format!(
            "drop the cached blocks of {dev}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// A named sandbox's clone workspace in a warm member: the host wrote the sandbox's ext4
/// image into the member's *writable* slot; it is mounted read-write at /workspace exactly
/// as the cold guest's init mounts its workspace disk (journal committed every second, dirty
/// data written back within about a second, the tree handed to the sandbox user on its
/// first boot).
fn attach_disk(uid: u32, gid: u32) -> Res<()> {
    let dev = find_disk(DISK_WORKSPACE).ok_or("this guest has no workspace slot disk")?;
    drop_cached_blocks(&dev)?;
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if is_mounted(WORKSPACE) {
        return Err(format!("{WORKSPACE} is mounted already"));
    }
    mnt(&dev, WORKSPACE, "ext4", nosuid, Some("commit=1"))?;
    let _ = std::fs::write("/proc/sys/vm/dirty_expire_centisecs", "100");
    let _ = std::fs::write("/proc/sys/vm/dirty_writeback_centisecs", "50");
    crate::init::hand_over(std::path::Path::new(WORKSPACE), uid, gid)
}

/// Whether something is mounted at `path` (this mount namespace's /proc/self/mountinfo).
fn is_mounted(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(path)))
}

fn changes() -> Res<()> {
    use nix::fcntl::{open, OFlag};
    let dir = |p: String| {
        open(
            p.as_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(ctx(p))
    };
    let upper = dir(format!("{WS_DIR}/upper"))?;
    let lower = dir(format!("{WS_DIR}/lower"))?;
    let c = crate::summary::diff(&upper, &lower);
    let line = serde_json::to_string(&c).map_err(ctx("encode the changes"))?;
    println!("{line}");
    Ok(())
}
