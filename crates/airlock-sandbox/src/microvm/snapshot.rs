//! Boot snapshots: under software emulation a one-shot microVM run starts from a saved copy of
//! a guest that has booted, loaded its modules and waits for its job, instead of booting —
//! QEMU loads the saved state (`-incoming`) and the guest reads the job it was waiting for.
//!
//! - **Two files in one directory** (`snapshots/KEY/`, published by one rename): the guest's
//!   memory (`ram`, sparse: as large as the guest's memory, holding only what its boot wrote)
//!   and the devices' state (`vmstate`, QEMU's migration stream without the memory:
//!   `x-ignore-shared`). A restored run's sandbox copies the memory into a memory file of its
//!   own (`LaunchPlan::ram_fd`: charged to its cgroup, never written back to the snapshot)
//!   that QEMU maps as the guest's RAM; only the devices' state goes through the stream.
//!   (Through the stream, the memory cost QEMU a zero-page check per page of the guest's —
//!   300–400 ms for 1 GiB without huge pages; this way ≈ 30 ms for the data.)
//! - **Made once per VM shape** (the exact QEMU command line — kernel, initramfs, root disk,
//!   memory, CPUs, network, the disks' names and sizes — and QEMU's binary), by a boot of its
//!   own: blank disks, no job, no user code, no user data. The guest loads every optional
//!   module group, says `Idle`; QEMU saves it (`migrate`) and is killed. At most [`KEEP`]
//!   snapshots are kept (the least recently used go).
//! - **A run's own disks** are behind the same devices at the same sizes: the read-only
//!   images made for each run (the workspace's, the read-only mounts') grow (sparse) to at
//!   least [`PAD`], so every project's image fits one shape; writable disks keep their sizes
//!   (in the key). The restored guest drops those disks'
//!   page cache (read from the blank disks at the snapshot's boot) before it mounts anything.
//! - **What each copy makes its own** before the job: the host's clock, and 32 bytes from the
//!   host's getrandom mixed into the guest kernel's pool and the CRNG reseeded
//!   ([`airlock_model::vm::Restored`]) — copies never share a random stream.
//! - **Failure never costs a run**: a snapshot that cannot be made is remembered for a day
//!   (`KEY.failed`, the reason) and runs boot; one QEMU cannot load is removed and that run
//!   boots (the guest never answered, so the command never started).
//! - Runs, named sandboxes' starts and pool members' under TCG (seconds of boot); KVM boots
//!   in a fraction of that. `AIRLOCK_VM_SNAPSHOT=0` turns it off.

use super::{bind_run_dir, chown_owner, listen_channel, QemuProcess};
use crate::container::{self, rundir::RunDir, RunOptions};
use airlock_model::plan::microvm::{
    ro_image, Accel, VmPlan, VM_CACHE_DIR, VM_CLAIM_SLOT, VM_OVERLAY_DISK, VM_RUN_DIR,
    VM_WORKSPACE_DISK, VM_WORKSPACE_IMAGE, VM_WORKSPACE_SLOT,
};
use airlock_model::plan::LaunchPlan;
use airlock_model::vm::{GuestMsg, HostMsg, Restored, VM_PROTOCOL_VERSION};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// The snapshots' directory in the artifact cache.
pub const SNAPSHOT_DIR: &str = "snapshots";
/// The smallest size a run's own disk has (sparse): the workspace image, the read-only mounts'
/// images and the writable-layer disk grow to this, so one snapshot serves every project.
pub const PAD: u64 = 16 << 30;
/// Snapshots kept in the cache (each is the guest's memory as its boot left it: tens of MB).
pub const KEEP: usize = 8;
/// How long after a failed attempt a shape's snapshot is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Turns boot snapshots off when set to 0, off, no or false.
pub const ENV: &str = "AIRLOCK_VM_SNAPSHOT";
/// The format of what a key covers: a change to what the guest does before `Idle` (or to
/// the restore's contract) changes it.
const FORMAT: &[u8] = b"airlock-vm-snapshot-2";
/// QEMU's QMP socket in the run directory (the builder's `migrate`, a restore's
/// `migrate-incoming`), its devices' state and the builder's guest memory there.
const QMP: &str = "snapshot-qmp.sock";
const STATE: &str = "vmstate";
const RAM: &str = "ram";
/// The guest's memory backend: a file, shared (the guest's writes are the file's), so that
/// the migration leaves it out (`x-ignore-shared`).
const RAM_ID: &str = "airlock-ram";

/// Whether boot snapshots are turned off (`AIRLOCK_VM_SNAPSHOT=0`).
pub fn disabled() -> bool {
    std::env::var(ENV).is_ok_and(|v| matches!(v.trim(), "0" | "off" | "no" | "false"))
}

/// What `doctor` says of boot snapshots in the cache `cache`: off, or how many are saved and
/// the data they hold.
pub fn summary(cache: &Path) -> String {
    if disabled() {
        return format!("boot snapshots off ({ENV}=0)");
    }
    let (mut n, mut bytes) = (0, 0u64);
    for e in std::fs::read_dir(cache.join(SNAPSHOT_DIR))
        .into_iter()
        .flatten()
        .flatten()
    {
        let (state, ram) = (e.path().join(STATE), e.path().join(RAM));
        if !e.file_name().to_string_lossy().contains('.') && state.exists() {
            use std::os::unix::fs::MetadataExt;
            n += 1;
            bytes += [&state, &ram]
                .iter()
                .filter_map(|f| std::fs::metadata(f).ok())
                .map(|m| m.blocks() * 512)
                .sum::<u64>();
        }
    }
    let saved = match n {
        0 => "none saved yet (the first run of each VM shape saves one)".to_string(),
        n => format!("{n} saved ({} MiB)", bytes >> 20),
    };
    format!(
        "boot snapshots (one-shot runs under TCG start from one instead of booting; {ENV}=0 turns them off): {saved}"
    )
}

/// A start that may come from a boot snapshot: under TCG, not turned off — a run, a named
/// sandbox's start, a pool member's.
pub fn eligible(vm: &VmPlan) -> bool {
    vm.accel == Accel::Tcg && !disabled()
}

/// The run's own disks (file names in its run directory), as the plan has them.
fn run_disks(vm: &VmPlan) -> Vec<String> {
    let mut names = Vec::new();
    if vm.workspace.is_some() {
        names.push(VM_WORKSPACE_IMAGE.to_string());
    }
    if vm.workspace_disk.is_some() {
        names.push(VM_WORKSPACE_DISK.to_string());
    }
    if vm.workspace_slot.is_some() {
        names.push(VM_WORKSPACE_SLOT.to_string());
    }
    if vm.overlay_disk.is_some() {
        names.push(VM_OVERLAY_DISK.to_string());
    }
    names.extend((0..vm.ro_sources.len()).map(ro_image));
    if vm.claim_slot.is_some() {
        names.push(VM_CLAIM_SLOT.to_string());
    }
    names
}

/// Whether a run's disk grows to [`PAD`] for the snapshot's shape: the read-only images made
/// for each run (the workspace's, the read-only mounts'). Writable disks keep their size (a
/// filesystem's or a slot's, which claims and copies rely on): it is in the key.
fn padded(name: &str) -> bool {
    name.ends_with(".erofs")
}

/// A snapshot this run starts from: a directory of the cache (`snapshots/KEY/`) holding the
/// guest's memory (`ram`) and its devices' state (`vmstate`), published by one rename — a run
/// never sees one half of a snapshot with the other half of another.
#[derive(Debug)]
pub struct Restore {
    /// Its directory on the host (`snapshots/KEY`).
    dir: PathBuf,
    /// The guest's memory size.
    memory: u64,
}

impl Restore {
    /// Where QEMU's container sees the snapshot's file `name` (the cache is bound there).
    fn inside(&self, name: &str) -> String {
        let key = self.dir.file_name().unwrap_or_default().to_string_lossy();
        format!("{VM_CACHE_DIR}/{SNAPSHOT_DIR}/{key}/{name}")
    }

    /// QEMU's container for the restore: the guest's memory a copy of the snapshot's (its
    /// descriptor 3), QEMU waiting for the devices' state ([`Restore::load`]).
    pub fn apply(&self, qemu: &mut LaunchPlan) {
        qemu.ram_fd = Some(airlock_model::plan::RamFile {
            from: PathBuf::from(self.inside(RAM)),
            size: self.memory,
        });
        qemu.argv
            .extend(memory_backend("/proc/self/fd/3", self.memory));
        qemu.argv.extend([
            "-incoming".to_string(),
            "defer".to_string(),
            "-qmp".to_string(),
            format!("unix:{VM_RUN_DIR}/{QMP},server=on,wait=off"),
        ]);
    }

    /// Once QEMU runs (in run directory `dir`): have it load the devices' state; the guest
    /// runs when that is done. Waits for QEMU's socket until `stop`.
    pub fn load(&self, dir: &Path, stop: &AtomicBool) -> Result<(), String> {
        let sock = dir.join(QMP);
        let t = Instant::now();
        let mut qmp = loop {
            match super::qmp::Qmp::connect(&sock, Duration::from_secs(30)) {
                Ok(q) => break q,
                Err(_)
                    if !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(30) =>
                {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => return Err(e),
            }
        };
        ignore_shared(&mut qmp)?;
        let uri = format!("exec:cat {}", self.inside(STATE));
        qmp.execute("migrate-incoming", serde_json::json!({ "uri": uri }))
            .map(drop)
    }

    /// Its devices' state file on the host (in the snapshot's directory).
    pub fn file(&self) -> PathBuf {
        self.dir.join(STATE)
    }

    /// QEMU could not load it: gone, so that the next run makes a new one.
    pub fn discard(&self) {
        remove_snapshot(&self.dir);
    }
}

/// A snapshot's directory out of the cache: renamed aside first (runs stop finding it at
/// once), then removed.
fn remove_snapshot(dir: &Path) {
    let aside = dir.with_extension(format!("gone.{}", std::process::id()));
    if std::fs::rename(dir, &aside).is_ok() {
        let _ = std::fs::remove_dir_all(&aside);
    }
}

/// QEMU's arguments for guest memory of `size` bytes in the file `path`, shared.
fn memory_backend(path: &str, size: u64) -> [String; 4] {
    [
        "-object".to_string(),
        format!("memory-backend-file,id={RAM_ID},size={size},mem-path={path},share=on"),
        "-machine".to_string(),
        format!("memory-backend={RAM_ID}"),
    ]
}

/// The migration leaves shared memory out (the memory file is the snapshot's memory).
fn ignore_shared(qmp: &mut super::qmp::Qmp) -> Result<(), String> {
    qmp.execute(
        "migrate-set-capabilities",
        serde_json::json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
    )
    .map(drop)
}

/// The clock and seed a restored guest makes its own.
pub fn restored() -> Restored {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut seed = [0u8; 32];
    // getrandom(2) of 32 bytes never returns short once the pool is initialised; a host
    // where it fails leaves zeros, which the guest mixes in (its pool keeps its own state).
    // SAFETY: getrandom(2) fills at most `len` bytes of the buffer it is given.
    let _ = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    Restored {
        realtime_ns: now,
        seed: airlock_model::vm::b64_encode(&seed),
    }
}

/// The snapshot this run (its plan `vm`, QEMU's container `qemu` before the run directory is
/// bound, its run directory `dir` with its disks made) starts from: its disks padded to the
/// snapshot's shape, the snapshot made first when there is none. None: this run boots (no
/// snapshot can be made, or its disks cannot be padded). Err(signal): the user interrupted
/// the snapshot's making (SIGINT, SIGTERM, SIGHUP, relayed to the builder): the run ends.
pub fn prepare(
    vm: &VmPlan,
    qemu: &LaunchPlan,
    dir: &Path,
    opts: &RunOptions<'_>,
) -> Result<Option<Restore>, i32> {
    let mut disks = Vec::new();
    for name in run_disks(vm) {
        let path = dir.join(&name);
        let size = if padded(&name) {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| {
                    let len = f.metadata()?.len();
                    if len < PAD {
                        f.set_len(PAD)?;
                    }
                    Ok(len.max(PAD))
                })
        } else {
            std::fs::metadata(&path).map(|m| m.len())
        };
        match size {
            Ok(size) => disks.push((name, size)),
            Err(e) => {
                crate::phase(&format!("no boot snapshot: {}: {e}", path.display()));
                return Ok(None);
            }
        }
    }
    let cache = super::cache::cache_dir();
    let key = key(&qemu.argv, &disks);
    let snapshots = cache.join(SNAPSHOT_DIR);
    let dir = snapshots.join(&key);
    let restore = |dir: PathBuf| Restore {
        dir,
        memory: vm.memory,
    };
    if dir.join(STATE).exists() {
        // Recently used: the eviction keeps it.
        let _ = std::fs::File::open(dir.join(STATE))
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        return Ok(Some(restore(dir)));
    }
    // A shape whose snapshot could not be made boots without trying again for a day (a
    // failure may have been the host's state of the moment: load, memory, disk).
    let failed = snapshots.join(format!("{key}.failed"));
    let failed_lately = std::fs::metadata(&failed)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().unwrap_or_default() < RETRY_AFTER);
    if failed_lately {
        return Ok(None);
    }
    // Where it will go, first: a cache this user cannot write (a shared one, made by root)
    // is not worth a boot.
    let tmp = snapshots.join(format!("{key}.tmp.{}", std::process::id()));
    let writable = super::cache::ensure_dir(&snapshots)
        .and_then(|()| std::fs::create_dir(&tmp).map_err(|e| format!("{}: {e}", tmp.display())));
    if let Err(e) = writable {
        crate::phase(&format!("no boot snapshot: {e}"));
        return Ok(None);
    }
    eprintln!(
        "airlock: saving a boot snapshot of this microVM (once per kernel, image and VM size; \
         later runs start from it; cached in {})",
        snapshots.display()
    );
    let t = Instant::now();
    let interrupted = AtomicI32::new(0);
    let built = build(vm, qemu, &disks, opts, &tmp, &interrupted).and_then(|()| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        // One rename publishes both files. Another run of this shape may have published
        // its own meanwhile: it is as good, and stays.
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => Ok(()),
            Err(_) if dir.join(STATE).exists() => Ok(()),
            Err(e) => Err(format!("{}: {e}", dir.display())),
        }
    });
    let _ = std::fs::remove_dir_all(&tmp);
    // The user stopped it (^C): the run stops too, as its command would have — no marker.
    match interrupted.load(Ordering::Relaxed) {
        0 => {}
        sig => return Err(sig),
    }
    match built {
        Ok(()) => {
            crate::phase(&format!(
                "boot snapshot saved in {} ms",
                t.elapsed().as_millis()
            ));
            evict(&snapshots, &key);
            Ok(Some(restore(dir)))
        }
        Err(e) => {
            eprintln!("airlock: no boot snapshot (runs like this one boot): {e}");
            let _ = std::fs::write(&failed, format!("{e}\n"));
            Ok(None)
        }
    }
}

/// What a snapshot is for: QEMU's command line (the run directory's contents appear in it by
/// name), the run's disks' names and sizes, QEMU's binary, and the guest helper.
fn key(argv: &[String], disks: &[(String, u64)]) -> String {
    let argv = argv.join("\0");
    let disks: String = disks.iter().map(|(n, s)| format!("{n}={s}\n")).collect();
    let binary = argv
        .split('\0')
        .next()
        .map(|q| super::cache::stat_key(Path::new(q)))
        .unwrap_or_default();
    super::cache::key(&[
        FORMAT,
        argv.as_bytes(),
        disks.as_bytes(),
        binary.as_bytes(),
        airlock_guest_embed::SHA256.as_bytes(),
    ])
}

/// At most [`KEEP`] snapshots, the least recently used removed first (never `keep`); and
/// what builders that died left (`KEY.tmp.PID` of a pid no longer there).
fn evict(snapshots: &Path, keep: &str) {
    let mut all: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(snapshots).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let leftover = n
            .rsplit_once(".tmp.")
            .or_else(|| n.rsplit_once(".gone."))
            .and_then(|(_, p)| p.parse::<i32>().ok());
        match leftover {
            Some(pid) => {
                let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                    == Err(nix::errno::Errno::ESRCH);
                if gone {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
            // An earlier layout's halves (`KEY.vmstate`, `KEY.ram`): nothing reads them now.
            None if n.ends_with(".vmstate") || n.ends_with(".ram") => {
                let _ = std::fs::remove_file(e.path());
            }
            None if n != keep && !n.contains('.') => {
                let used = std::fs::metadata(e.path().join(STATE)).and_then(|m| m.modified());
                // A directory without its state is half of nothing: the oldest.
                all.push((used.unwrap_or(std::time::UNIX_EPOCH), e.path()));
            }
            None => {}
        }
    }
    all.sort();
    let excess = (all.len() + 1).saturating_sub(KEEP);
    for (_, p) in all.into_iter().take(excess) {
        remove_snapshot(&p);
    }
}

/// Boot the snapshot's guest in a run directory of its own and save it into `to` (a
/// directory of the cache): its devices' state and its memory.
fn build(
    vm: &VmPlan,
    qemu: &LaunchPlan,
    disks: &[(String, u64)],
    opts: &RunOptions<'_>,
    to: &Path,
    interrupted: &AtomicI32,
) -> Result<(), String> {
    let rd = RunDir::create(opts.state_dir, &format!("{}.snap", vm.qemu.name))
        .map_err(|e| format!("a run directory in {}: {e}", opts.state_dir.display()))?;
    let r = build_in(vm.memory, qemu, disks, opts, &rd.path, interrupted)
        .and_then(|()| install(&rd.path.join(STATE), &to.join(STATE), false))
        .and_then(|()| install(&rd.path.join(RAM), &to.join(RAM), true));
    rd.remove();
    r
}

fn build_in(
    memory: u64,
    qemu: &LaunchPlan,
    disks: &[(String, u64)],
    opts: &RunOptions<'_>,
    dir: &Path,
    interrupted: &AtomicI32,
) -> Result<(), String> {
    if !qemu.rootless {
        chown_owner(dir, opts)?;
    }
    // Blank disks where the run's own will be: the guest probes them (same devices, same
    // sizes) and never reads more.
    for (name, size) in disks {
        let p = dir.join(name);
        std::fs::File::create_new(&p)
            .and_then(|f| f.set_len(*size))
            .map_err(|e| format!("{}: {e}", p.display()))?;
        if !qemu.rootless {
            chown_owner(&p, opts)?;
        }
    }
    let mut q = qemu.clone();
    bind_run_dir(&mut q, dir);
    q.argv.extend([
        "-qmp".to_string(),
        format!("unix:{VM_RUN_DIR}/{QMP},server=on,wait=off"),
    ]);
    q.argv
        .extend(memory_backend(&format!("{VM_RUN_DIR}/{RAM}"), memory));
    let listener = listen_channel(dir, q.rootless, opts).map_err(|e| e.to_string())?;
    let stop = AtomicBool::new(false);
    let qemu_process = QemuProcess::default();
    let on_child = |pid: nix::unistd::Pid| qemu_process.record(pid);
    // Relayed to the builder's QEMU as to any sandbox (it ends); noted, so that the run ends
    // too rather than boot.
    let note = |sig: nix::sys::signal::Signal| -> Option<Duration> {
        use nix::sys::signal::Signal::{SIGHUP, SIGINT, SIGTERM};
        if matches!(sig, SIGINT | SIGTERM | SIGHUP) {
            interrupted.store(sig as i32, Ordering::Relaxed);
        }
        None
    };
    let (outcome, saved) = std::thread::scope(|s| {
        let handle = std::sync::Mutex::new(None);
        let start = || {
            let h = s.spawn(|| {
                let r = save(&listener, dir, &stop);
                // Saved (or not): this QEMU has nothing more to do.
                qemu_process.kill();
                r
            });
            if let Ok(mut slot) = handle.lock() {
                *slot = Some(h);
            }
        };
        let inner = RunOptions {
            timeout: Some(Duration::from_secs(180)),
            tty: false,
            forward_stdin: false,
            net_journal: None,
            secrets: &[],
            intercept: None,
            persist: None,
            instance_id: None,
            on_egress: None,
            on_ready: Some(&start),
            on_egress_ctx: None,
            defer_signal: Some(&note),
            exec_stub: false,
            on_child: Some(&on_child),
            ..*opts
        };
        let outcome = container::run(&q, &inner);
        stop.store(true, Ordering::Relaxed);
        let h = handle.lock().ok().and_then(|mut h| h.take());
        let saved = h
            .map(|h| h.join().unwrap_or(Err("the saving thread panicked".into())))
            .unwrap_or(Err("QEMU's sandbox did not start".into()));
        (outcome, saved)
    });
    saved.map_err(|e| match outcome {
        Err(o) => format!("{e} ({o})"),
        Ok(_) => e,
    })
}

/// The builder's side of the channel and QMP: ask the guest to get ready for a snapshot,
/// wait for its `Idle`, have QEMU save it into the run directory.
fn save(
    listener: &std::os::unix::net::UnixListener,
    dir: &Path,
    stop: &AtomicBool,
) -> Result<(), String> {
    let stream = super::channel::accept(listener, stop).ok_or("QEMU never opened the channel")?;
    let limit = Duration::from_secs(150);
    stream
        .set_read_timeout(Some(limit))
        .map_err(|e| e.to_string())?;
    let mut w = stream.try_clone().map_err(|e| e.to_string())?;
    let ask = HostMsg::Snapshot {
        v: VM_PROTOCOL_VERSION,
    };
    super::channel::send(&mut w, &ask).map_err(|e| format!("the channel: {e}"))?;
    let mut reader = BufReader::new(stream);
    loop {
        match super::mux::next_msg(&mut reader) {
            None => {
                return Err(
                    "the guest ended (or said nothing for 150 s) before it was ready to be saved"
                        .into(),
                )
            }
            Some(GuestMsg::Idle { .. }) => break,
            Some(GuestMsg::Error { message, .. }) => return Err(format!("the guest: {message}")),
            Some(_) => continue,
        }
    }
    crate::phase("snapshot guest idle: saving it");
    let mut qmp = super::qmp::Qmp::connect(&dir.join(QMP), Duration::from_secs(30))?;
    ignore_shared(&mut qmp)?;
    qmp.execute(
        "migrate",
        serde_json::json!({ "uri": format!("exec:cat > {VM_RUN_DIR}/{STATE}") }),
    )?;
    let t = Instant::now();
    loop {
        let st = qmp.execute("query-migrate", serde_json::Value::Null)?;
        match st.get("status").and_then(|s| s.as_str()) {
            Some("completed") => return Ok(()),
            Some("failed") | Some("cancelled") => {
                let why = st
                    .get("error-desc")
                    .and_then(|e| e.as_str())
                    .unwrap_or("no reason given");
                return Err(format!("QEMU could not save the guest: {why}"));
            }
            _ if t.elapsed() > Duration::from_secs(120) => {
                return Err("QEMU took more than 2 minutes to save the guest".into())
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// What the builder saved in its run directory (`from`) into `to`, in the snapshot's
/// directory before it is published; `sparse`: only its data, its holes left holes.
fn install(from: &Path, to: &Path, sparse: bool) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // Written by the builder's QEMU in a directory its sandbox can write: opened without
    // following a link (one planted there would have this process copy what it names into
    // the cache), and only a regular file is taken.
    let mut src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
        .map_err(|e| format!("{}: {e}", from.display()))?;
    let meta = src
        .metadata()
        .map_err(|e| format!("{}: {e}", from.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", from.display()));
    }
    if meta.len() == 0 {
        return Err(format!("QEMU saved nothing in {}", from.display()));
    }
    let mut copy = |dst: &mut std::fs::File| -> std::io::Result<()> {
        dst.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        if sparse {
            // Only the data: the holes of a new file of that size stay holes.
            dst.set_len(meta.len())?;
            crate::sys::copy_data(src.as_raw_fd(), dst.as_raw_fd(), meta.len())
        } else {
            std::io::copy(&mut src, dst).map(drop)
        }
    };
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .and_then(|mut dst| copy(&mut dst))
        .map_err(|e| format!("{}: {e}", to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_changes_with_the_command_line_and_the_disks_and_only_with_them() {
        let argv: Vec<String> = ["/usr/bin/qemu-system-x86_64", "-m", "1024M"]
            .map(String::from)
            .to_vec();
        let ws = [("workspace.erofs".to_string(), PAD)];
        let k = key(&argv, &ws);
        assert_eq!(k, key(&argv, &ws));
        let mut bigger = argv.clone();
        bigger[2] = "2048M".into();
        assert_ne!(k, key(&bigger, &ws));
        assert_ne!(k, key(&argv, &[]));
        assert_ne!(k, key(&argv, &[("workspace.erofs".to_string(), PAD * 2)]));
    }

    #[test]
    fn eviction_keeps_the_newest_and_the_one_just_saved_and_clears_dead_builders() {
        let dir = std::env::temp_dir().join(format!("airlock-snap-evict-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let base = std::time::SystemTime::now() - Duration::from_secs(1000);
        for i in 0..KEEP + 2 {
            let snap = dir.join(format!("k{i}"));
            std::fs::create_dir(&snap).unwrap();
            std::fs::write(snap.join(RAM), b"m").unwrap();
            let p = snap.join(STATE);
            std::fs::write(&p, b"x").unwrap();
            let f = std::fs::File::open(&p).unwrap();
            f.set_modified(base + Duration::from_secs(i as u64))
                .unwrap();
        }
        std::fs::write(dir.join("other.failed"), b"why").unwrap();
        // A builder that died (a pid that was and is no more) and one that lives (ours).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        std::fs::create_dir(dir.join(format!("kd.tmp.{dead}"))).unwrap();
        std::fs::create_dir(dir.join(format!("kl.tmp.{}", std::process::id()))).unwrap();
        // The oldest is the one just saved: kept anyway.
        evict(&dir, "k0");
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want: Vec<String> = ["k0".to_string(), "other.failed".to_string()]
            .into_iter()
            .chain([format!("kl.tmp.{}", std::process::id())])
            .chain((3..KEEP + 2).map(|i| format!("k{i}")))
            .collect();
        want.sort();
        assert_eq!(left, want);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn install_refuses_a_link_planted_where_the_builder_saves() {
        let dir = std::env::temp_dir().join(format!("airlock-snap-install-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, b"TOPSECRET").unwrap();
        std::os::unix::fs::symlink(&secret, dir.join("vmstate")).unwrap();
        assert!(install(&dir.join("vmstate"), &dir.join("copied"), false).is_err());
        assert!(!dir.join("copied").exists());
        // A regular file is taken, whole, and a sparse one keeps its holes.
        std::fs::write(dir.join("state"), b"devices").unwrap();
        install(&dir.join("state"), &dir.join("state.copy"), false).unwrap();
        assert_eq!(std::fs::read(dir.join("state.copy")).unwrap(), b"devices");
        let ram = std::fs::File::create(dir.join("ram")).unwrap();
        ram.set_len(64 << 20).unwrap();
        std::os::unix::fs::FileExt::write_at(&ram, b"page", 32 << 20).unwrap();
        install(&dir.join("ram"), &dir.join("ram.copy"), true).unwrap();
        let copy = std::fs::metadata(dir.join("ram.copy")).unwrap();
        assert_eq!(copy.len(), 64 << 20);
        assert!(std::os::unix::fs::MetadataExt::blocks(&copy) * 512 < 1 << 20);
        let mut buf = [0u8; 4];
        let copied = std::fs::File::open(dir.join("ram.copy")).unwrap();
        std::os::unix::fs::FileExt::read_at(&copied, &mut buf, 32 << 20).unwrap();
        assert_eq!(&buf, b"page");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
