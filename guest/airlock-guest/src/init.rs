//! `airlock-guest init`: PID 1 inside a microVM (the initramfs's `/init`). It loads the kernel
//! modules the host put in `/modules` (virtio, erofs, overlay), finds its channel (the
//! virtio-serial port named `airlock`) and its disks (by virtio-blk serial), says hello, takes
//! the job, builds the root (the read-only image under a tmpfs overlay, a fresh /proc, /sys,
//! /dev, /tmp, $HOME and the workspace image under its own overlay), runs the command as the
//! sandbox user with its output relayed over the channel, reports the exit status and powers
//! the VM off. Protocol: `airlock_model::vm`.

use airlock_model::vm::{
    b64_decode, b64_encode, GuestExec, GuestJob, GuestMsg, GuestNet, HostMsg, TimingStep,
    DISK_OVERLAY, DISK_ROOT, DISK_WORKSPACE, MAIN_SESSION, VM_PORT_NAME, VM_PROTOCOL_VERSION,
};
use nix::mount::{mount, MsFlags};
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod sessions;

const NEWROOT: &str = "/newroot";

/// The subcommand's entry point. As PID 1 it never returns: it powers the VM off.
pub fn main(_args: &[String]) -> i32 {
    if std::process::id() != 1 {
        eprintln!("airlock-guest init: runs only as PID 1 of an airlock microVM");
        return 2;
    }
    let _ = boot();
    poweroff()
}

fn poweroff() -> ! {
    nix::unistd::sync();
    // SAFETY: reboot(2) with a valid command; as PID 1 this ends the VM (QEMU -no-reboot).
    unsafe {
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

pub(crate) type Res<T> = Result<T, String>;

pub(crate) fn ctx<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e}")
}

pub(crate) fn mkdir(p: &str, mode: u32) -> Res<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(p)
        .map_err(ctx(format!("mkdir {p}")))
}

pub(crate) fn mnt(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Res<()> {
    mkdir(target, 0o755)?;
    mount(Some(src), target, Some(fstype), flags, data)
        .map_err(ctx(format!("mount {fstype} at {target}")))
}

/// When each step of the boot ended (CLOCK_BOOTTIME: since the guest kernel started), for
/// the host's `AIRLOCK_TIMING=1` view of where a boot's time goes.
#[derive(Default)]
struct Timing(Vec<TimingStep>);

impl Timing {
    fn mark(&mut self, step: impl Into<String>) {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime(2) fills the timespec it is given.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        let us = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
        self.0.push(TimingStep {
            step: step.into(),
            us,
            cpu_us: Some(cpu_us(libc::RUSAGE_SELF) + cpu_us(libc::RUSAGE_CHILDREN)),
        });
    }
    fn send(&mut self, out: &mut Channel) {
        out.send(&GuestMsg::Timing {
            v: VM_PROTOCOL_VERSION,
            steps: std::mem::take(&mut self.0),
        });
    }
}

/// User + system CPU time of `who` (getrusage(2)), in microseconds.
fn cpu_us(who: libc::c_int) -> u64 {
    // SAFETY: rusage is plain data; getrusage(2) fills the one it is given.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above, with a valid `who`.
    if unsafe { libc::getrusage(who, &mut r) } != 0 {
        return 0;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(r.ru_utime) + us(r.ru_stime)
}

/// The early mounts and modules; then the channel, and everything else reported over it.
fn boot() -> Res<()> {
    let mut t = Timing::default();
    t.mark("init started");
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt("proc", "/proc", "proc", nosuid, None)?;
    mnt("sysfs", "/sys", "sysfs", nosuid, None)?;
    mnt("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, None)?;
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline.split_whitespace().any(|w| w == "airlock.probe=1") {
        return Ok(());
    }
    t.mark("early mounts");
    // The channel first: the hello goes out as soon as the port is there (looked for after
    // each module), and the host's job travels while the other modules load.
    let mut early = Early::default();
    load_modules(Path::new(CHAN_MODULES), &mut t, &mut |t| early.poll(t))?;
    load_modules(Path::new(MODULES), &mut t, &mut |t| early.poll(t))?;
    let chan = match early {
        Early { err: Some(e), .. } => return Err(e),
        Early { chan: Some(c), .. } => c,
        Early { chan: None, .. } => {
            let port = wait_for(Duration::from_secs(20), || find_port(VM_PORT_NAME))
                .ok_or("the channel port did not appear")?;
            greet(&port, &mut t)?
        }
    };
    let mut out = Channel(chan.try_clone().map_err(ctx("channel"))?);
    let mut input = BufReader::new(chan);
    let (mut job, secrets, ca_bundle) = loop {
        let mut line = String::new();
        if input.read_line(&mut line).map_err(ctx("channel"))? == 0 {
            return Err("the host closed the channel before sending the job".into());
        }
        match serde_json::from_str::<HostMsg>(&line) {
            Ok(HostMsg::Run {
                job,
                secrets,
                ca_bundle,
                restored,
                ..
            }) => {
                if let Some(r) = restored {
                    // A copy of a boot snapshot: say so before anything of the job runs (a
                    // host that hears nothing knows the command never started), then make
                    // the clock, the random state and the disks' caches this run's.
                    out.send(&GuestMsg::Resumed {
                        v: VM_PROTOCOL_VERSION,
                        kernel: release(),
                    });
                    t = Timing::default();
                    resume(&r)?;
                    t.mark("resumed from the boot snapshot");
                }
                break (job, secrets, ca_bundle);
            }
            Ok(HostMsg::Snapshot { .. }) => {
                // Booted to be saved: what a job may need loaded now, so that no copy pays
                // for it; then the host saves this guest as it waits here.
                load_modules(Path::new(NET_MODULES), &mut t, &mut |_| {})?;
                load_modules(Path::new(DISK_MODULES), &mut t, &mut |_| {})?;
                nix::unistd::sync();
                out.send(&GuestMsg::Idle {
                    v: VM_PROTOCOL_VERSION,
                });
            }
            _ => continue,
        }
    };
    t.mark("job received");
    let setup = |job: &GuestJob, t: &mut Timing| {
        setup(job, t).and_then(|()| install_secrets(job, &secrets, ca_bundle.as_deref()))
    };
    if job.hold {
        // A named sandbox: the root, then exec sessions until poweroff.
        let how = sessions::Serve {
            root: Some(NEWROOT),
            reap_all: true,
            main: None,
            before_main_exit: None,
        };
        let held = setup(&job, &mut t).and_then(|()| {
            t.send(&mut out);
            out.send(&GuestMsg::Ready {
                v: VM_PROTOCOL_VERSION,
            });
            sessions::serve(&mut input, &mut out.0, &how)
        });
        if let Err(message) = held {
            out.send(&GuestMsg::Error {
                v: VM_PROTOCOL_VERSION,
                message,
                session: MAIN_SESSION,
            });
        }
        return Ok(());
    }
    // The run's command gets the secrets as environment variables too.
    for (k, v) in &secrets {
        job.env.retain(|(ek, _)| ek != k);
        job.env.push((k.clone(), v.clone()));
    }
    if let Some(size) = job.tty {
        // `run -t`: the command is a session with a terminal (the session server's own
        // pseudo-terminal handling); its exit ends the VM.
        let main = GuestExec {
            argv: job.argv.clone(),
            env: job.env.clone(),
            cwd: job.cwd.clone(),
            uid: job.uid,
            gid: job.gid,
            stdin: true,
            secrets: false,
            tty: Some(size),
        };
        let how = sessions::Serve {
            root: Some(NEWROOT),
            reap_all: true,
            main: Some(&main),
            before_main_exit: job.workspace.then_some(&|chan: &mut File| {
                if let Ok(c) = chan.try_clone() {
                    send_changes(&mut Channel(c));
                }
            }),
        };
        let served = setup(&job, &mut t).and_then(|()| {
            t.send(&mut out);
            sessions::serve(&mut input, &mut out.0, &how)
        });
        if let Err(message) = served {
            out.send(&GuestMsg::Error {
                v: VM_PROTOCOL_VERSION,
                message,
                session: MAIN_SESSION,
            });
        }
        return Ok(());
    }
    let code = match setup(&job, &mut t).and_then(|()| run(&job, &mut input, &mut out, &mut t)) {
        Ok(code) => code,
        Err(message) => {
            out.send(&GuestMsg::Error {
                v: VM_PROTOCOL_VERSION,
                message,
                session: MAIN_SESSION,
            });
            return Ok(());
        }
    };
    t.send(&mut out);
    if job.workspace {
        send_changes(&mut out);
    }
    out.send(&GuestMsg::Exit {
        v: VM_PROTOCOL_VERSION,
        code,
        session: MAIN_SESSION,
    });
    Ok(())
}

/// The channel while the modules load: opened (and the hello sent) once its port is there.
#[derive(Default)]
struct Early {
    chan: Option<File>,
    err: Option<String>,
}

impl Early {
    fn poll(&mut self, t: &mut Timing) {
        if self.chan.is_some() || self.err.is_some() {
            return;
        }
        if let Some(port) = find_port(VM_PORT_NAME) {
            match greet(&port, t) {
                Ok(c) => self.chan = Some(c),
                Err(e) => self.err = Some(e),
            }
        }
    }
}

/// Open the channel's port and say hello.
fn greet(port: &Path, t: &mut Timing) -> Res<File> {
    let chan = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(port)
        .map_err(ctx(port.display()))?;
    t.mark("channel open");
    Channel(chan.try_clone().map_err(ctx("channel"))?).send(&GuestMsg::Hello {
        v: VM_PROTOCOL_VERSION,
        kernel: release(),
        sessions: true,
    });
    Ok(chan)
}

/// The guest kernel's release.
fn release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

struct Channel(File);

impl Channel {
    fn send(&mut self, m: &GuestMsg) {
        if let Ok(mut line) = serde_json::to_vec(m) {
            line.push(b'\n');
            let _ = self.0.write_all(&line);
        }
    }
}

fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Where the initramfs holds the kernel modules, each group in load order (`NN-NAME.ko`): in
/// `chan/` the channel's (loaded first), then the others every boot needs, in `net/` those only
/// a guest with a network needs and in `disk/` those only a workspace disk needs.
const CHAN_MODULES: &str = "/modules/chan";
const MODULES: &str = "/modules";
const NET_MODULES: &str = "/modules/net";
const DISK_MODULES: &str = "/modules/disk";

/// finit_module every DIR/NN-NAME.ko in order (already loaded or built in: fine), calling
/// `after` after each.
fn load_modules(dir: &Path, t: &mut Timing, after: &mut dyn FnMut(&mut Timing)) -> Res<()> {
    let mut mods: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(d) => d,
        // No optional group in this initramfs: nothing to load.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir != Path::new(MODULES) => {
            return Ok(())
        }
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    .flatten()
    .map(|e| e.path())
    .filter(|p| p.extension().is_some_and(|x| x == "ko"))
    .collect();
    mods.sort();
    for m in mods {
        let f = File::open(&m).map_err(ctx(m.display()))?;
        // SAFETY: finit_module(2) with an open module file and an empty parameter string.
        let r = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                f.as_raw_fd(),
                c"".as_ptr(),
                0 as libc::c_int,
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!("load {}: {e}", m.display()));
            }
        }
        let name = m
            .file_stem()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default();
        t.mark(format!("module {name}"));
        after(t);
    }
    Ok(())
}

/// /dev/vportNpM whose name (virtio-serial `name=`) is `name`.
fn find_port(name: &str) -> Option<PathBuf> {
    fs::read_dir("/sys/class/virtio-ports")
        .ok()?
        .flatten()
        .find(|e| fs::read_to_string(e.path().join("name")).is_ok_and(|n| n.trim() == name))
        .map(|e| Path::new("/dev").join(e.file_name()))
        .filter(|p| p.exists())
}

/// Every virtio-blk disk: (/dev/vdX, its serial).
fn disks() -> impl Iterator<Item = (String, String)> {
    fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let serial = fs::read_to_string(e.path().join("serial")).ok()?;
            let dev = format!("/dev/{}", e.file_name().to_string_lossy());
            Some((dev, serial.trim().to_string()))
        })
}

/// A guest restored from a boot snapshot makes itself this run's: the host's clock (the
/// snapshot's stood still while it was saved), the host's seed mixed into the kernel's pool
/// and the CRNG reseeded from it (every copy of the snapshot starts with the same random
/// state), and every disk's page cache dropped (what the snapshot's boot read of its blank
/// disks, or of a root image since rebuilt: this run's are behind the same devices now).
fn resume(r: &airlock_model::vm::Restored) -> Res<()> {
    let ts = libc::timespec {
        tv_sec: (r.realtime_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (r.realtime_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_settime(2) with a valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(format!(
            "set the clock: {}",
            std::io::Error::last_os_error()
        ));
    }
    let seed = b64_decode(&r.seed).ok_or("the restore's seed is not base64")?;
    if seed.len() < 32 {
        return Err("the restore's seed is shorter than 32 bytes".into());
    }
    reseed(&seed)?;
    for (dev, _) in disks() {
        let f = File::open(&dev).map_err(ctx(&dev))?;
        // SAFETY: BLKFLSBUF on an open block device, no argument.
        if unsafe { libc::ioctl(f.as_raw_fd(), BLKFLSBUF, 0) } != 0 {
            return Err(format!(
                "drop {dev}'s cache: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// BLKFLSBUF (_IO(0x12, 97)): write back and drop a block device's page cache.
const BLKFLSBUF: libc::c_ulong = 0x1261;
/// RNDADDENTROPY (_IOW('R', 0x03, int[2])) and RNDRESEEDCRNG (_IO('R', 0x07)).
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Mix `seed` into the kernel's input pool, credited, and reseed the CRNG from it now.
fn reseed(seed: &[u8]) -> Res<()> {
    let random = File::options()
        .write(true)
        .open("/dev/urandom")
        .map_err(ctx("/dev/urandom"))?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + seed.len());
    info.extend_from_slice(&((seed.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(seed.len() as i32).to_ne_bytes());
    info.extend_from_slice(seed);
    let fd = random.as_raw_fd();
    // SAFETY: RNDADDENTROPY reads a rand_pool_info of buf_size bytes of data: `info` is it.
    if unsafe { libc::ioctl(fd, RNDADDENTROPY, info.as_ptr()) } != 0 {
        return Err(format!("add the seed: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(fd, RNDRESEEDCRNG, 0) } != 0 {
        return Err(format!("reseed: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// /dev/vdX whose virtio-blk serial is `serial`.
pub(crate) fn find_disk(serial: &str) -> Option<String> {
    disks()
        .find(|(_, s)| s == serial)
        .map(|(dev, _)| dev)
        .filter(|p| Path::new(p).exists())
}

fn size_opt(job: &GuestJob) -> String {
    job.tmpfs_size
        .map(|s| format!(",size={s}"))
        .unwrap_or_default()
}

/// The root: the image read-only under a tmpfs overlay; kernel filesystems, tmpfs mounts, the
/// workspace image under its own overlay, the generated /etc files, hostname, network.
fn setup(job: &GuestJob, t: &mut Timing) -> Res<()> {
    let root = wait_for(Duration::from_secs(20), || find_disk(DISK_ROOT))
        .ok_or("the root disk did not appear")?;
    t.mark("root disk found");
    let ro = MsFlags::MS_RDONLY;
    mnt(&root, "/lower", "erofs", ro, None)?;
    t.mark("root image mounted");
    prefetch::command(job);
    let size = size_opt(job);
    if job.overlay_disk {
        // `disk`: the writable layers on the host's empty ext4 disk of that size.
        load_modules(Path::new(DISK_MODULES), t, &mut |_| {})?;
        let dev = wait_for(Duration::from_secs(20), || find_disk(DISK_OVERLAY))
            .ok_or("the writable-layer disk did not appear")?;
        mnt(&dev, "/rw", "ext4", MsFlags::empty(), None)?;
        t.mark("writable-layer disk mounted");
    } else {
        mnt(
            "tmpfs",
            "/rw",
            "tmpfs",
            MsFlags::empty(),
            Some(&format!("mode=0755{size}")),
        )?;
    }
    for d in ["/rw/upper", "/rw/work", "/rw/ws-upper", "/rw/ws-work"] {
        mkdir(d, 0o755)?;
    }
    // The generated /etc files straight into the writable layer, before the overlay is
    // mounted: written through the overlay, each replaced an image file (a whiteout, a copy-up
    // of its directory, a create over the whiteout), ~10 ms of overlay code under TCG.
    let mut in_upper = vec![false; job.files.len()];
    for (i, f) in job.files.iter().enumerate() {
        let over = job.mounts.iter().any(|m| {
            Path::new(&f.path).starts_with(&m.path) || Path::new(&m.path).starts_with(&f.path)
        });
        if f.path.starts_with("/etc/") && !over {
            in_upper[i] = write_in_upper(
                Path::new("/lower"),
                Path::new("/rw/upper"),
                &f.path,
                f.contents.as_bytes(),
                f.mode,
            )?;
        }
    }
    mnt(
        "overlay",
        NEWROOT,
        "overlay",
        MsFlags::empty(),
        Some("lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work"),
    )?;
    let at = |p: &str| format!("{NEWROOT}{p}");
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    // The sandbox user sees its own processes only (not PID 1's, not the kernel threads).
    mnt(
        "proc",
        &at("/proc"),
        "proc",
        nosuid | MsFlags::MS_NOEXEC,
        Some("hidepid=invisible"),
    )?;
    mnt(
        "sysfs",
        &at("/sys"),
        "sysfs",
        nosuid | MsFlags::MS_NOEXEC | ro,
        None,
    )?;
    mnt(
        "devtmpfs",
        &at("/dev"),
        "devtmpfs",
        MsFlags::MS_NOSUID,
        None,
    )?;
    // Not nodev: its ptmx and terminals are device nodes that must open (`exec -t`).
    mnt(
        "devpts",
        &at("/dev/pts"),
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    mnt("tmpfs", &at("/dev/shm"), "tmpfs", nosuid, Some("mode=1777"))?;
    if job.overlay_disk {
        // /tmp and home on the same disk: everything the guest writes counts against `disk`.
        on_disk("/rw/tmp", &at("/tmp"), 0o1777, None, nosuid)?;
    } else {
        mnt(
            "tmpfs",
            &at("/tmp"),
            "tmpfs",
            nosuid,
            Some(&format!("mode=1777{size}")),
        )?;
    }
    mnt("tmpfs", &at("/run"), "tmpfs", nosuid, Some("mode=0755"))?;
    tools(&at(airlock_model::agent::adapter::TOOLS_DIR))?;
    if job.overlay_disk {
        let owner = Some((job.uid, job.gid));
        on_disk("/rw/home", &at(&job.home), 0o700, owner, nosuid)?;
    } else {
        mnt(
            "tmpfs",
            &at(&job.home),
            "tmpfs",
            nosuid,
            Some(&format!("mode=0700,uid={},gid={}{size}", job.uid, job.gid)),
        )?;
    }
    if job.workspace {
        let ws = wait_for(Duration::from_secs(20), || find_disk(DISK_WORKSPACE))
            .ok_or("the workspace disk did not appear")?;
        mnt(&ws, "/ws-lower", "erofs", ro, None)?;
        nix::unistd::chown(
            "/rw/ws-upper",
            Some(nix::unistd::Uid::from_raw(job.uid)),
            Some(nix::unistd::Gid::from_raw(job.gid)),
        )
        .map_err(ctx("chown the workspace layer"))?;
        mnt(
            "overlay",
            &at("/workspace"),
            "overlay",
            nosuid,
            Some("lowerdir=/ws-lower,upperdir=/rw/ws-upper,workdir=/rw/ws-work"),
        )?;
        t.mark("workspace mounted");
    }
    if job.workspace_disk {
        // The sandbox's own clone: its ext4 image, writable, kept between starts.
        load_modules(Path::new(DISK_MODULES), t, &mut |_| {})?;
        let ws = wait_for(Duration::from_secs(20), || find_disk(DISK_WORKSPACE))
            .ok_or("the workspace disk did not appear")?;
        let target = at("/workspace");
        // The VM may end without a clean poweroff (a killed supervisor): commit the journal
        // every second and write dirty data back within about a second, so little is lost.
        mnt(&ws, &target, "ext4", nosuid, Some("commit=1"))?;
        let _ = fs::write("/proc/sys/vm/dirty_expire_centisecs", "100");
        let _ = fs::write("/proc/sys/vm/dirty_writeback_centisecs", "50");
        hand_over(Path::new(&target), job.uid, job.gid)?;
    }
    if job.workspace_slot_disk {
        // A pool member whose claim brings a named sandbox's ext4 workspace image into its
        // writable slot (`airlock-guest ws attach-disk`, a session that cannot reach these).
        load_modules(Path::new(DISK_MODULES), t, &mut |_| {})?;
    }
    for (i, m) in job.mounts.iter().enumerate() {
        ro_mount(i, m, &at(&m.path))?;
    }
    if !job.mounts.is_empty() {
        t.mark("read-only mounts mounted");
    }
    for (f, _) in job.files.iter().zip(&in_upper).filter(|(_, done)| !**done) {
        let path = at(&f.path);
        if let Some(parent) = Path::new(&path).parent() {
            let _ = fs::create_dir_all(parent);
        }
        let _ = fs::remove_file(&path);
        fs::write(&path, &f.contents).map_err(ctx(&path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(f.mode)).map_err(ctx(&path))?;
    }
    t.mark("root built");
    let _ = nix::unistd::sethostname(&job.hostname);
    net::up("lo", None)?;
    if job.net == GuestNet::User {
        load_modules(Path::new(NET_MODULES), t, &mut |_| {})?;
        net::up(
            "eth0",
            Some(([10, 0, 2, 15], [255, 255, 255, 0], [10, 0, 2, 2])),
        )?;
    }
    t.mark("network up");
    Ok(())
}

/// Write the file `path` of the new root (`contents`, `mode`) into the overlay's upper
/// directory `upper` before the overlay is mounted over `lower`, with each missing parent
/// directory made as the image has it (mode and owner; 0755 root's where the image has none),
/// so the merged root shows what writing through the overlay would have. False (nothing
/// written) when it must go through the overlay: a parent in the image is not a directory
/// (a symbolic link there is followed), or the path is a directory there.
pub(crate) fn write_in_upper(
    lower: &Path,
    upper: &Path,
    path: &str,
    contents: &[u8],
    mode: u32,
) -> Res<bool> {
    use std::os::unix::fs::MetadataExt;
    use std::path::Component;
    let rel = Path::new(path.trim_start_matches('/'));
    let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
    let Some(parent) = rel.parent().filter(|_| plain && rel.file_name().is_some()) else {
        return Ok(false);
    };
    let mut dirs = Vec::new();
    for dir in parent.ancestors().filter(|d| !d.as_os_str().is_empty()) {
        match fs::symlink_metadata(lower.join(dir)) {
            Ok(m) if m.is_dir() => dirs.push((dir, m.mode() & 0o7777, Some((m.uid(), m.gid())))),
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => dirs.push((dir, 0o755, None)),
            Err(e) => return Err(format!("{}: {e}", lower.join(dir).display())),
        }
    }
    match fs::symlink_metadata(lower.join(rel)) {
        Ok(m) if m.is_dir() => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", lower.join(rel).display())),
    }
    // Outermost first.
    for (dir, dmode, owner) in dirs.into_iter().rev() {
        let up = upper.join(dir);
        if fs::symlink_metadata(&up).is_ok() {
            continue;
        }
        fs::create_dir(&up).map_err(ctx(up.display()))?;
        fs::set_permissions(&up, fs::Permissions::from_mode(dmode)).map_err(ctx(up.display()))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(&up, Some(uid), Some(gid)).map_err(ctx(up.display()))?;
        }
    }
    let file = upper.join(rel);
    let _ = fs::remove_file(&file);
    fs::write(&file, contents).map_err(ctx(file.display()))?;
    fs::set_permissions(&file, fs::Permissions::from_mode(mode)).map_err(ctx(file.display()))?;
    Ok(true)
}

/// A directory `dir` of the writable-layer disk (`mode`, `owner`), bound at `target` with
/// `flags` (a fresh, empty directory each boot, as the tmpfs it stands for).
fn on_disk(
    dir: &str,
    target: &str,
    mode: u32,
    owner: Option<(u32, u32)>,
    flags: MsFlags,
) -> Res<()> {
    mkdir(dir, 0o700)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(ctx(dir))?;
    if let Some((u, g)) = owner {
        nix::unistd::chown(
            dir,
            Some(nix::unistd::Uid::from_raw(u)),
            Some(nix::unistd::Gid::from_raw(g)),
        )
        .map_err(ctx(format!("chown {dir}")))?;
    }
    mkdir(target, 0o755)?;
    mount(
        Some(dir),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(ctx(format!("bind {dir} at {target}")))?;
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
        None::<&str>,
    )
    .map_err(ctx(format!("remount {target}")))
}

/// A read-only mount (`--ro`): its snapshot's disk, read-only, at `target` in the new root —
/// a directory mounted there, a file (its image's one entry) bound there from a mount of the
/// image outside the new root.
fn ro_mount(i: usize, m: &airlock_model::vm::GuestMount, target: &str) -> Res<()> {
    let dev = wait_for(Duration::from_secs(20), || find_disk(&m.serial)).ok_or_else(|| {
        format!(
            "the disk of the read-only mount at {} did not appear",
            m.path
        )
    })?;
    mount_ro(&dev, target, m.file, &format!("/ro{i}"))
}

/// A read-only mount's snapshot on the block device `dev` at `target`, read-only, nosuid,
/// nodev: a directory's image mounted there, a file's (its image's one entry) bound there
/// from a mount of the image at `stage` (out of the sandbox user's reach). Also a warm
/// claim's (`airlock-guest ws ro`).
pub(crate) fn mount_ro(dev: &str, target: &str, file: bool, stage: &str) -> Res<()> {
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if !file {
        return mnt(dev, target, "erofs", flags, None);
    }
    mnt(dev, stage, "erofs", flags, None)?;
    if let Some(parent) = Path::new(target).parent() {
        mkdir(&parent.display().to_string(), 0o755)?;
    }
    if fs::symlink_metadata(target).is_err() {
        File::create(target).map_err(ctx(target))?;
    }
    let src = format!("{stage}/{}", airlock_model::vm::RO_FILE_ENTRY);
    mount(
        Some(src.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(ctx(format!("bind {src} at {target}")))?;
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
        None::<&str>,
    )
    .map_err(ctx(format!("remount {target} read-only")))
}

/// The secrets as /run/secrets/NAME (0400 files in a 0500 directory, the sandbox user's, on
/// the new root's /run tmpfs) and the injection CA bundle at `plan::CA_BUNDLE` (0444).
fn install_secrets(job: &GuestJob, secrets: &[(String, String)], ca: Option<&str>) -> Res<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let write = |path: &str, data: &[u8], mode: u32| -> Res<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(ctx(path))?;
        f.write_all(data).map_err(ctx(path))
    };
    if let Some(bundle) = ca {
        let path = format!("{NEWROOT}{}", airlock_model::plan::CA_BUNDLE);
        if let Some(dir) = Path::new(&path).parent() {
            mkdir(&dir.display().to_string(), 0o755)?;
        }
        write(&path, bundle.as_bytes(), 0o444)?;
    }
    if secrets.is_empty() {
        return Ok(());
    }
    let dir = format!("{NEWROOT}{SECRETS_DIR}");
    mkdir(&dir, 0o500)?;
    for (name, value) in secrets {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(format!("a secret's name is not a file name: {name:?}"));
        }
        let path = format!("{dir}/{name}");
        write(&path, value.as_bytes(), 0o400)?;
        std::os::unix::fs::lchown(&path, Some(job.uid), Some(job.gid)).map_err(ctx(&path))?;
    }
    std::os::unix::fs::lchown(&dir, Some(job.uid), Some(job.gid)).map_err(ctx(&dir))
}

/// Where the secrets are inside.
pub(crate) const SECRETS_DIR: &str = "/run/secrets";

/// On a disk's first boot (its root is not the sandbox user's yet: the host made it from a
/// clone owned by someone else), every entry becomes `uid`/`gid`'s; never through a symlink.
pub(crate) fn hand_over(root: &Path, uid: u32, gid: u32) -> Res<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(root).map_err(ctx(root.display()))?;
    if meta.uid() == uid && meta.gid() == gid {
        return Ok(());
    }
    let mut stack = vec![root.to_path_buf()];
    let mut dirs = Vec::new();
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).map_err(ctx(p.display()))?;
        if m.is_dir() {
            for e in fs::read_dir(&p).map_err(ctx(p.display()))? {
                stack.push(e.map_err(ctx(p.display()))?.path());
            }
            // The root last: an interrupted hand-over is redone at the next boot.
            dirs.push(p);
            continue;
        }
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid))
            .map_err(ctx(format!("chown {}", p.display())))?;
    }
    for d in dirs.iter().rev() {
        std::os::unix::fs::lchown(d, Some(uid), Some(gid))
            .map_err(ctx(format!("chown {}", d.display())))?;
    }
    Ok(())
}

/// The helper's own tools inside, as in a container sandbox (`cp` and the MCP file tools run
/// `airlock-guest fs` there): this very binary (/init), bound read-only as `airlock-guest`
/// and `report`.
fn tools(dir: &str) -> Res<()> {
    mkdir(dir, 0o755)?;
    for name in ["airlock-guest", "report"] {
        let target = format!("{dir}/{name}");
        File::create(&target).map_err(ctx(&target))?;
        mount(
            Some("/init"),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(ctx(format!("bind the helper at {target}")))?;
        mount(
            None::<&str>,
            target.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID,
            None::<&str>,
        )
        .map_err(ctx(format!("make {target} read-only")))?;
    }
    Ok(())
}

/// Start the command and relay until it ends; returns its exit status (128+N: signal N).
fn run(job: &GuestJob, input: &mut BufReader<File>, out: &mut Channel, t: &mut Timing) -> Res<i32> {
    use nix::unistd::{fork, ForkResult};
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(ctx("pipe"));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (in_r, in_w) = pipe()?;
    let cstr = |s: &str| CString::new(s).map_err(ctx("a NUL byte in the job"));
    let argv: Vec<CString> = job.argv.iter().map(|a| cstr(a)).collect::<Res<_>>()?;
    let envp: Vec<CString> = job
        .env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect::<Res<_>>()?;
    let cwd = cstr(&job.cwd)?;
    // SAFETY: this process is single-threaded (PID 1, no threads started), so the child may
    // run any code until exec.
    match unsafe { fork() }.map_err(ctx("fork"))? {
        ForkResult::Child => {
            let stdin = if job.stdin {
                in_r.as_raw_fd()
            } else {
                File::open("/dev/null")
                    .map(|f| {
                        let fd = f.as_raw_fd();
                        std::mem::forget(f);
                        fd
                    })
                    .unwrap_or(in_r.as_raw_fd())
            };
            let who = Become {
                uid: job.uid,
                gid: job.gid,
                root: Some(NEWROOT),
                cwd: &cwd,
                cwd_label: &job.cwd,
                ctty: false,
            };
            child(
                &who,
                [stdin, out_w.as_raw_fd(), err_w.as_raw_fd()],
                &argv,
                &envp,
            )
        }
        ForkResult::Parent { child } => {
            drop((out_w, err_w, in_r));
            t.mark("command started");
            let code = relay(child, job.stdin.then_some(in_w), out_r, err_r, input, out);
            t.mark("command ended");
            code
        }
    }
}

/// A descriptor that becomes readable when the child `pid` exits (pidfd_open(2); None before
/// Linux 5.3): in a relay's poll, so the command's end is seen when it comes — its output
/// pipes close a moment before it can be reaped, and a poll on what is left (the channel)
/// would otherwise sleep its whole timeout first.
pub(crate) fn exit_fd(pid: nix::unistd::Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) on this process's own unreaped child (its pid cannot be reused
    // meanwhile), no flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    // SAFETY: a new descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) })
}

/// The longest changes line sent (the host reads lines of at most 1 MiB).
const MAX_CHANGES_LINE: usize = 512 << 10;

/// The overlay workspace's change summary (its upper layer against the workspace image), as
/// the container backend's PID 1 computes it; paths past [`MAX_CHANGES_LINE`] are counted,
/// not listed. Nothing when the layers cannot be opened.
fn send_changes(out: &mut Channel) {
    use nix::fcntl::{open, OFlag};
    let dir = |p: &str| {
        open(
            p,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
    };
    let (Some(upper), Some(lower)) = (dir("/rw/ws-upper"), dir("/ws-lower")) else {
        return;
    };
    let mut c = crate::summary::diff(&upper, &lower);
    let changes = loop {
        let Ok(v) = serde_json::to_value(&c) else {
            return;
        };
        if v.to_string().len() <= MAX_CHANGES_LINE {
            break v;
        }
        let longest = [&mut c.added, &mut c.modified, &mut c.deleted]
            .into_iter()
            .max_by_key(|l| l.len());
        match longest {
            Some(l) if !l.is_empty() => {
                let cut = l.len() / 2;
                c.unlisted += l.len() - cut;
                l.truncate(cut);
            }
            _ => return,
        }
    };
    out.send(&GuestMsg::Changes {
        v: VM_PROTOCOL_VERSION,
        changes,
    });
}

/// Who a command runs as, and where: the root to chroot into (None: stay, for tests), its
/// working directory.
pub(crate) struct Become<'a> {
    pub uid: u32,
    pub gid: u32,
    pub root: Option<&'a str>,
    pub cwd: &'a CString,
    pub cwd_label: &'a str,
    /// stdin is a terminal that becomes the command's controlling terminal (after setsid).
    pub ctty: bool,
}

/// In a freshly forked child: take `stdio` as 0/1/2, become `who`, exec `argv`. Exit status
/// 127 (not found) or 126 (any other failure) with the reason on its stderr.
pub(crate) fn child(who: &Become<'_>, stdio: [i32; 3], argv: &[CString], envp: &[CString]) -> ! {
    let stderr = stdio[2];
    let fail = |what: &str, e: nix::errno::Errno| -> ! {
        let msg = format!("airlock: {what}: {e}\n");
        // SAFETY: writing a buffer to an open descriptor, then exiting without unwinding.
        unsafe {
            libc::write(stderr, msg.as_ptr().cast(), msg.len());
            libc::_exit(if e == nix::errno::Errno::ENOENT {
                127
            } else {
                126
            })
        }
    };
    for (to, &fd) in stdio.iter().enumerate() {
        // SAFETY: dup2 onto the standard descriptors of this (child) process.
        if unsafe { libc::dup2(fd, to as i32) } < 0 {
            fail("dup2", nix::errno::Errno::last());
        }
    }
    let _ = nix::unistd::setsid();
    // SAFETY: TIOCSCTTY on the terminal just dup'ed onto stdin, in a new session.
    if who.ctty && unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        fail("take the terminal", nix::errno::Errno::last());
    }
    if let Some(root) = who.root {
        if let Err(e) = nix::unistd::chroot(root) {
            fail("chroot", e);
        }
        if let Err(e) = nix::unistd::chdir("/") {
            fail("chdir /", e);
        }
    }
    let (uid, gid) = (
        nix::unistd::Uid::from_raw(who.uid),
        nix::unistd::Gid::from_raw(who.gid),
    );
    // (Only root has supplementary groups to drop: in tests the helper runs unprivileged.)
    if nix::unistd::geteuid().is_root() {
        if let Err(e) = nix::unistd::setgroups(&[gid]) {
            fail("setgroups", e);
        }
    }
    if let Err(e) = nix::unistd::setresgid(gid, gid, gid) {
        fail("setgid", e);
    }
    // As in a container: a non-root sandbox user can never gain a capability (an empty
    // bounding set; the root image holds the host's set-id programs) and no_new_privs holds.
    if who.uid != 0 && nix::unistd::geteuid().is_root() {
        for cap in 0..64 {
            // SAFETY: prctl(2) with integer arguments; unknown capabilities fail with EINVAL.
            unsafe {
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
        }
    }
    // SAFETY: prctl(2) with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        fail("no_new_privs", nix::errno::Errno::last());
    }
    if let Err(e) = nix::unistd::setresuid(uid, uid, uid) {
        fail("setuid", e);
    }
    if let Err(e) = nix::unistd::chdir(who.cwd.as_c_str()) {
        fail(&format!("working directory {}", who.cwd_label), e);
    }
    let prog = &argv[0];
    let e = if prog.as_bytes().contains(&b'/') {
        nix::unistd::execve(prog, argv, envp).err()
    } else {
        nix::unistd::execvpe(prog, argv, envp).err()
    };
    fail(
        &argv[0].to_string_lossy(),
        e.unwrap_or(nix::errno::Errno::ENOEXEC),
    )
}

/// Relay stdout/stderr (and stdin from the channel) until the command exits and its output
/// is drained; reap every orphan meanwhile (PID 1's duty).
fn relay(
    pid: nix::unistd::Pid,
    stdin: Option<OwnedFd>,
    out_r: OwnedFd,
    err_r: OwnedFd,
    input: &mut BufReader<File>,
    chan: &mut Channel,
) -> Res<i32> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let mut pipes: Vec<(Option<File>, bool)> = vec![
        (Some(File::from(out_r)), true),
        (Some(File::from(err_r)), false),
    ];
    let mut stdin = stdin.map(File::from);
    let mut status: Option<i32> = None;
    let exited = exit_fd(pid);
    let mut buf = vec![0u8; 32 << 10];
    let chan_fd = input.get_ref().try_clone().map_err(ctx("channel"))?;
    let mut pending = String::new();
    loop {
        // Reap: the command's status, and any orphan.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, c)) if p == pid => status = Some(c),
                Ok(WaitStatus::Signaled(p, s, _)) if p == pid => status = Some(128 + s as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let open: Vec<usize> = (0..pipes.len()).filter(|&i| pipes[i].0.is_some()).collect();
        if let Some(code) = status {
            if open.is_empty() {
                return Ok(code);
            }
        }
        if open.is_empty() && stdin.is_none() {
            // Its output is closed and no input is relayed: nothing to poll, only its end to
            // wait for (a poll on nothing would sleep its whole timeout).
            loop {
                match waitpid(pid, None) {
                    Ok(WaitStatus::Exited(p, c)) if p == pid => return Ok(c),
                    Ok(WaitStatus::Signaled(p, s, _)) if p == pid => return Ok(128 + s as i32),
                    Ok(_) => {}
                    Err(e) => return Err(format!("wait for the command: {e}")),
                }
            }
        }
        let mut fds: Vec<PollFd> = open
            .iter()
            .filter_map(|&i| {
                pipes[i]
                    .0
                    .as_ref()
                    .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
            })
            .collect();
        // The command's exit too (its pipes may close a moment before it can be reaped), then
        // the channel, last.
        if let Some(f) = exited.as_ref().filter(|_| status.is_none()) {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
        }
        let with_chan = stdin.is_some();
        if with_chan {
            fds.push(PollFd::new(chan_fd.as_fd(), PollFlags::POLLIN));
        }
        // Once the command has exited, what is left in the pipes is drained without waiting
        // for background processes that keep them open. Host lines already buffered (read
        // together with the job) are ready without the descriptor being readable.
        let buffered = with_chan && !input.buffer().is_empty();
        let timeout = if status.is_some() || buffered {
            0u16
        } else {
            50
        };
        let n = poll(&mut fds, PollTimeout::from(timeout)).unwrap_or(0);
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if n == 0 && status.is_some() && !buffered {
            return Ok(status.unwrap_or(0));
        }
        for (k, &i) in open.iter().enumerate() {
            if !ready[k] {
                continue;
            }
            let (file, is_out) = &mut pipes[i];
            let got = file.as_mut().map(|f| f.read(&mut buf)).unwrap_or(Ok(0));
            match got {
                Ok(0) | Err(_) => *file = None,
                Ok(n) => {
                    let data = b64_encode(&buf[..n]);
                    let v = VM_PROTOCOL_VERSION;
                    chan.send(&if *is_out {
                        GuestMsg::Stdout {
                            v,
                            data,
                            session: MAIN_SESSION,
                        }
                    } else {
                        GuestMsg::Stderr {
                            v,
                            data,
                            session: MAIN_SESSION,
                        }
                    });
                }
            }
        }
        if with_chan && (buffered || ready.last().copied().unwrap_or(false)) {
            pending.clear();
            if input.read_line(&mut pending).unwrap_or(0) == 0 {
                stdin = None;
                continue;
            }
            match serde_json::from_str::<HostMsg>(&pending) {
                Ok(HostMsg::Stdin { data, .. }) => {
                    if let Some(s) = stdin.as_mut() {
                        let _ = s.write_all(&b64_decode(&data).unwrap_or_default());
                    }
                }
                Ok(HostMsg::StdinEof { .. }) => stdin = None,
                Ok(HostMsg::Signal { signal, .. }) => {
                    // SAFETY: kill(2) on the command's process group.
                    unsafe {
                        libc::kill(-pid.as_raw(), signal);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The command's first exec reads its program, its ELF interpreter and the C library from the
/// image, page by page as they are mapped — under emulation each read a round trip to the
/// host while the guest waits. Asked for up front (readahead into the page cache, answered
/// while the guest builds the root), those reads are done by the time the command starts.
/// Only page-cache reads of the read-only image, resolved inside it (`RESOLVE_IN_ROOT`);
/// whatever is not found (another layout, a static program) is skipped.
mod prefetch {
    use airlock_model::vm::GuestJob;
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::path::{Path, PathBuf};

    /// Where the image is mounted (the overlay's lower layer).
    const IMAGE: &str = "/lower";
    /// What one readahead request asks for (the kernel caps each at the device's I/O size).
    const CHUNK: i64 = 1 << 20;

    pub fn command(job: &GuestJob) {
        for f in files(Path::new(IMAGE), job) {
            willneed(&f);
        }
    }

    /// What the command's exec maps first, opened in the image at `image`: its program, the
    /// program's ELF interpreter, the C library beside the interpreter's own file (glibc's
    /// layout; musl's interpreter is its C library). As many as are found, in that order.
    pub(crate) fn files(image: &Path, job: &GuestJob) -> Vec<OwnedFd> {
        let mut found = Vec::new();
        let Ok(root) = nix::fcntl::open(
            image,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) else {
            return found;
        };
        let Some(prog) = program(&root, job) else {
            return found;
        };
        let ld = interpreter(&prog).and_then(|i| open_in(&root, &i));
        found.push(prog);
        let Some(ld) = ld else {
            return found;
        };
        let real = std::fs::read_link(format!("/proc/self/fd/{}", ld.as_raw_fd()));
        let libc = real
            .ok()
            .as_deref()
            .and_then(Path::parent)
            .and_then(|dir| dir.strip_prefix(image).ok())
            .and_then(|rel| open_in(&root, &Path::new("/").join(rel).join("libc.so.6")));
        found.push(ld);
        found.extend(libc);
        found
    }

    /// `argv[0]` as exec finds it: a path as it is, a name through the job's PATH.
    fn program(root: &OwnedFd, job: &GuestJob) -> Option<OwnedFd> {
        let name = job.argv.first()?;
        if name.contains('/') {
            return name
                .starts_with('/')
                .then(|| open_in(root, Path::new(name)))?;
        }
        let path = job
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or("/usr/local/bin:/bin:/usr/bin");
        path.split(':')
            .filter(|d| d.starts_with('/'))
            .find_map(|d| open_in(root, &Path::new(d).join(name)))
    }

    /// A regular file at `path` inside the image, symbolic links resolved inside it.
    fn open_in(root: &OwnedFd, path: &Path) -> Option<OwnedFd> {
        let rel = CString::new(path.to_str()?.trim_start_matches('/')).ok()?;
        // SAFETY: open_how is plain data; all-zero is a valid value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: openat2(2) with a directory descriptor, a NUL-terminated path and an
        // open_how of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                rel.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let st = nix::sys::stat::fstat(&fd).ok()?;
        (st.st_mode & libc::S_IFMT == libc::S_IFREG).then_some(fd)
    }

    /// The ELF program's PT_INTERP, if it has one.
    fn interpreter(prog: &OwnedFd) -> Option<PathBuf> {
        let mut head = [0u8; 4096];
        let n = nix::sys::uio::pread(prog, &mut head, 0).ok()?;
        let head = &head[..n];
        if head.get(..5)? != b"\x7fELF\x02" {
            return None;
        }
        let u16_at = |o: usize| Some(u16::from_le_bytes(head.get(o..o + 2)?.try_into().ok()?));
        let u32_at = |o: usize| Some(u32::from_le_bytes(head.get(o..o + 4)?.try_into().ok()?));
        let u64_at = |o: usize| Some(u64::from_le_bytes(head.get(o..o + 8)?.try_into().ok()?));
        let (phoff, phentsize, phnum) = (u64_at(0x20)? as usize, u16_at(0x36)?, u16_at(0x38)?);
        (0..phnum as usize).find_map(|i| {
            let ph = phoff.checked_add(i.checked_mul(phentsize as usize)?)?;
            if u32_at(ph)? != libc::PT_INTERP {
                return None;
            }
            let (off, len) = (u64_at(ph + 8)? as usize, u64_at(ph + 32)? as usize);
            let name = head.get(off..off.checked_add(len)?)?;
            let name = name.split(|b| *b == 0).next()?;
            Some(PathBuf::from(std::str::from_utf8(name).ok()?))
        })
    }

    /// Readahead of the whole file (asynchronous: the reads are queued, not waited for).
    fn willneed(f: &OwnedFd) {
        let Ok(st) = nix::sys::stat::fstat(f) else {
            return;
        };
        let mut off = 0;
        while off < st.st_size {
            // SAFETY: posix_fadvise(2) on an open descriptor.
            unsafe {
                libc::posix_fadvise(f.as_raw_fd(), off, CHUNK, libc::POSIX_FADV_WILLNEED);
            }
            off += CHUNK;
        }
    }
}

/// Interface configuration through the classic ioctls (no netlink code needed for this).
mod net {
    use super::Res;
    use std::os::fd::AsRawFd;

    fn ifreq(name: &str) -> libc::ifreq {
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        r
    }

    fn sockaddr(ip: [u8; 4]) -> libc::sockaddr {
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(ip),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in and sockaddr have the same size; this is how the API is used.
        unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
    }

    fn ioctl(fd: i32, req: libc::c_ulong, arg: *mut libc::c_void, what: &str) -> Res<()> {
        // SAFETY: the request matches the argument's type at every call site below.
        if unsafe { libc::ioctl(fd, req, arg) } < 0 {
            return Err(format!("{what}: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Bring `name` up; with `addr`: (address, netmask, default gateway).
    pub fn up(name: &str, addr: Option<([u8; 4], [u8; 4], [u8; 4])>) -> Res<()> {
        let Some((ip, mask, gw)) = addr else {
            // Link flags only: any socket reaches the device ioctls (an unbound Unix one is
            // the least kernel code: no inet socket, no port).
            let s =
                std::os::unix::net::UnixDatagram::unbound().map_err(|e| format!("socket: {e}"))?;
            return up_flags(s.as_raw_fd(), name);
        };
        let s = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("socket: {e}"))?;
        let fd = s.as_raw_fd();
        let mut r = ifreq(name);
        r.ifr_ifru.ifru_addr = sockaddr(ip);
        ioctl(
            fd,
            libc::SIOCSIFADDR,
            (&raw mut r).cast(),
            "set the address",
        )?;
        let mut r = ifreq(name);
        r.ifr_ifru.ifru_netmask = sockaddr(mask);
        ioctl(
            fd,
            libc::SIOCSIFNETMASK,
            (&raw mut r).cast(),
            "set the netmask",
        )?;
        up_flags(fd, name)?;
        // SAFETY: rtentry is plain data; all-zero is a valid value.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr([0, 0, 0, 0]);
        rt.rt_genmask = sockaddr([0, 0, 0, 0]);
        rt.rt_gateway = sockaddr(gw);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        ioctl(
            fd,
            libc::SIOCADDRT,
            (&raw mut rt).cast(),
            "add the default route",
        )
    }

    fn up_flags(fd: i32, name: &str) -> Res<()> {
        let mut r = ifreq(name);
        ioctl(
            fd,
            libc::SIOCGIFFLAGS,
            (&raw mut r).cast(),
            "read the link flags",
        )?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe {
            r.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        }
        ioctl(
            fd,
            libc::SIOCSIFFLAGS,
            (&raw mut r).cast(),
            "bring the link up",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::write_in_upper;

    /// A minimal ELF64 executable header with one PT_INTERP program header naming `interp`.
    fn elf_with_interp(interp: &str) -> Vec<u8> {
        let mut f = vec![0u8; 64 + 56];
        f[..5].copy_from_slice(b"\x7fELF\x02");
        f[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        f[64..68].copy_from_slice(&libc::PT_INTERP.to_le_bytes());
        f[64 + 8..64 + 16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
        let len = interp.len() as u64 + 1;
        f[64 + 32..64 + 40].copy_from_slice(&len.to_le_bytes()); // p_filesz
        f.extend(interp.as_bytes());
        f.push(0);
        f
    }

    fn job(argv0: &str, path: &str) -> airlock_model::vm::GuestJob {
        serde_json::from_value(serde_json::json!({
            "argv": [argv0], "env": [["PATH", path]], "cwd": "/", "uid": 1000, "gid": 1000,
            "hostname": "h", "net": "none", "workspace": false, "home": "/home/u",
            "tmpfs_size": null, "files": [], "stdin": false
        }))
        .expect("a job")
    }

    #[test]
    fn the_prefetch_finds_the_program_its_interpreter_and_the_c_library_inside_the_image() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::symlink;
        let d = scratch("prefetch");
        let img = d.join("image");
        let lib = img.join("usr/lib/x86_64-linux-gnu");
        fs::create_dir_all(&lib).unwrap();
        fs::create_dir_all(img.join("usr/bin")).unwrap();
        fs::write(img.join("usr/bin/prog"), elf_with_interp("/lib64/ld.so")).unwrap();
        // As Debian: a relative link to a directory, an absolute link to the loader's file.
        symlink("usr/lib", img.join("lib64")).unwrap();
        symlink("/usr/lib/x86_64-linux-gnu/ld.so", img.join("usr/lib/ld.so")).unwrap();
        fs::write(lib.join("ld.so"), "loader").unwrap();
        fs::write(lib.join("libc.so.6"), "libc").unwrap();
        let names = |j| -> Vec<PathBuf> {
            super::prefetch::files(&img, &j)
                .iter()
                .map(|f| fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap())
                .collect()
        };
        assert_eq!(
            names(job("prog", "/nowhere:/usr/bin")),
            vec![
                img.join("usr/bin/prog"),
                lib.join("ld.so"),
                lib.join("libc.so.6")
            ]
        );
        assert_eq!(names(job("/usr/bin/prog", "")).len(), 3);
        // Links resolve inside the image, never to the host's files of the same name.
        fs::remove_file(img.join("usr/bin/prog")).unwrap();
        symlink("/../../../../../../bin/sh", img.join("usr/bin/prog")).unwrap();
        assert_eq!(names(job("prog", "/usr/bin")), Vec::<PathBuf>::new());
        // Not found, relative, or no interpreter: what there is.
        assert!(names(job("nothing", "/usr/bin")).is_empty());
        assert!(names(job("./prog", "/usr/bin")).is_empty());
        fs::write(img.join("usr/bin/static"), b"\x7fELF\x02 static").unwrap();
        assert_eq!(
            names(job("static", "/usr/bin")),
            vec![img.join("usr/bin/static")]
        );
        let _ = fs::remove_dir_all(&d);
    }
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    #[test]
    fn the_exit_descriptor_wakes_a_poll_when_the_child_ends_and_not_before() {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut child = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .expect("spawn sleep");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let exited = super::exit_fd(pid).expect("pidfd_open (Linux 5.3+)");
        let ready = |ms: u16| {
            let mut fds = [PollFd::new(exited.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(ms)).expect("poll") == 1
        };
        assert!(!ready(0), "readable while the child runs");
        assert!(ready(10_000), "not readable after the child's end");
        // Readable before the reap, and the reap then finds the status at once.
        let status = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        assert!(
            matches!(status, Ok(nix::sys::wait::WaitStatus::Exited(p, 0)) if p == pid),
            "{status:?}"
        );
        let _ = child.try_wait();
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("airlock-guest-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("scratch directory");
        d
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).expect("stat").mode() & 0o7777
    }

    #[test]
    fn etc_files_go_into_the_upper_layer_unless_the_image_has_a_link_or_a_directory_there() {
        let d = scratch("upper");
        let (lower, upper) = (d.join("lower"), d.join("upper"));
        fs::create_dir_all(lower.join("etc/hosts.d")).unwrap();
        fs::set_permissions(lower.join("etc"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(lower.join("etc/hosts"), "image's\n").unwrap();
        std::os::unix::fs::symlink("/elsewhere", lower.join("etc/ssl")).unwrap();
        std::os::unix::fs::symlink("../run/resolv.conf", lower.join("etc/resolv.conf")).unwrap();
        fs::create_dir_all(&upper).unwrap();

        // A file the image has: the upper one shadows it; its directory as the image has it.
        assert_eq!(
            write_in_upper(&lower, &upper, "/etc/hosts", b"ours\n", 0o644),
            Ok(true)
        );
        assert_eq!(fs::read(upper.join("etc/hosts")).unwrap(), b"ours\n");
        assert_eq!(mode(&upper.join("etc/hosts")), 0o644);
        assert_eq!(mode(&upper.join("etc")), 0o750, "the image's /etc mode");
        // A symbolic link in the image at the file itself: replaced (as remove + write did).
        assert_eq!(
            write_in_upper(&lower, &upper, "/etc/resolv.conf", b"nameserver\n", 0o600),
            Ok(true)
        );
        assert!(fs::symlink_metadata(upper.join("etc/resolv.conf"))
            .unwrap()
            .is_file());
        assert_eq!(mode(&upper.join("etc/resolv.conf")), 0o600);
        // A directory the image does not have: made 0755.
        assert_eq!(
            write_in_upper(&lower, &upper, "/etc/profile.d/airlock.sh", b"x", 0o644),
            Ok(true)
        );
        assert_eq!(mode(&upper.join("etc/profile.d")), 0o755);
        // Through a symbolic link, at a directory, or not a plain path: not here.
        for p in [
            "/etc/ssl/certs/ca.pem",
            "/etc/hosts.d",
            "/etc/../x",
            "/",
            "/etc/",
        ] {
            assert_eq!(
                write_in_upper(&lower, &upper, p, b"x", 0o644),
                Ok(false),
                "{p}"
            );
        }
        assert!(!upper.join("etc/ssl").exists());
        assert!(!upper.join("etc/hosts.d").exists());
        assert!(!upper.join("x").exists());
        let _ = fs::remove_dir_all(&d);
    }
}
