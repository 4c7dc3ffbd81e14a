//! The microVM backend: a real guest kernel under QEMU (`-M microvm`, direct PVH boot of an
//! extracted vmlinux), airlock's static helper as the guest's PID 1 (`airlock-guest init`),
//! a virtio-serial channel for the job, its output and its exit status.
//!
//! QEMU itself runs as the command of a container sandbox lowered from the same spec
//! (`plan::microvm`): namespaces, no capabilities, seccomp, Landlock, the cgroup limits (the
//! guest's memory plus QEMU's overhead), death with airlock — and the sandbox's network
//! namespace with its egress listeners, where QEMU's user-mode network makes every guest
//! connection an ordinary connect that airlock-egress decides. No tap device, no bridge.

pub mod artifacts;
pub mod cache;
pub mod channel;
pub mod control;
pub mod gpt;
pub mod kernel;
pub mod mux;
pub mod pool;
pub mod qmp;
pub mod snapshot;
pub mod term;

use crate::container::{self, rundir::RunDir, RunError, RunOptions};
use airlock_model::plan::microvm::{
    Accel, VmFacts, VmPlan, CLAIM_SLOT_FILE, VM_CLAIM_SLOT, VM_OVERLAY_DISK, VM_RUN_DIR,
    VM_WORKSPACE_DISK, VM_WORKSPACE_IMAGE, VM_WORKSPACE_SLOT, WORKSPACE_SLOT_FILE,
    WORK_PENDING_FILE,
};
use airlock_model::plan::{HostFacts, MountStep, Plan};
use channel::Reported;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The microVM backend (see the module documentation), with the guest kernel a spec chose
/// (`--kernel`, `[sandbox] kernel`; None: AIRLOCK_KERNEL, else /boot's newest).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MicroVm {
    pub kernel: Option<airlock_model::spec::GuestKernel>,
    /// The run boots an image's root disk: the host root image is not needed (not built).
    pub image_root: bool,
}

/// Why the backend cannot run here, and what fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub why: String,
    pub hint: String,
}

/// qemu-system-x86_64 on this host.
pub fn qemu_path() -> Option<PathBuf> {
    [
        "/usr/bin/qemu-system-x86_64",
        "/usr/local/bin/qemu-system-x86_64",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// The static guest helper (PID 1 inside: `/init init`).
pub fn guest_binary() -> &'static [u8] {
    airlock_guest_embed::BYTES
}

/// Everything the backend needs on this host, built and cached on first use, with the guest
/// kernel `chosen` (see [`kernel::find`]). With `image_root` the run boots an image's own root
/// disk, and the host root image (minutes to build on a first run) is neither built nor named.
pub fn prepare(
    chosen: Option<&airlock_model::spec::GuestKernel>,
    image_root: bool,
) -> Result<VmFacts, Unavailable> {
    let qemu = qemu_path().ok_or_else(|| Unavailable {
        why: "qemu-system-x86_64 is not installed".into(),
        hint: "apt-get install qemu-system-x86".into(),
    })?;
    let unusable = |e: String| Unavailable {
        why: format!("guest kernel: {e}"),
        hint: kernel::KERNEL_HINT.into(),
    };
    let k = kernel::find(chosen).map_err(unusable)?;
    let dir = artifacts::cache_dir();
    let other = |why: String| Unavailable {
        why,
        hint: "run `airlock doctor` to see what the microvm backend found on this host".into(),
    };
    artifacts::ensure_dir(&dir).map_err(other)?;
    // A kernel that cannot be unpacked, or whose modules are missing, is unusable.
    let from = |e: String| unusable(format!("{} (from {}): {e}", k.image.display(), k.from));
    let vmlinux = artifacts::vmlinux(&dir, &k).map_err(from)?;
    let initrd = artifacts::initrd(
        &dir,
        guest_binary(),
        airlock_guest_embed::SHA256,
        &k,
        &vmlinux,
    )
    .map_err(from)?;
    let rootfs = if image_root {
        String::new()
    } else {
        artifacts::host_rootfs(&dir).map_err(other)?
    };
    let accel = accel(&qemu, &dir, &vmlinux, &initrd);
    let tsc_khz = tsc_khz(&dir);
    Ok(VmFacts {
        qemu,
        cache_dir: dir,
        kernel: vmlinux,
        initrd,
        rootfs,
        kernel_release: k.release,
        accel,
        tsc_khz,
    })
}

/// The host's TSC frequency in kHz (rounded to the MHz): QEMU gives the guest the host's TSC,
/// under TCG as under KVM. Measured against CLOCK_MONOTONIC_RAW over a few milliseconds once
/// per host boot (cached in the cache directory under the boot id).
pub fn tsc_khz(dir: &Path) -> Option<u64> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let cache = dir.join(format!("tsc-{}", artifacts::key(&[boot.trim().as_bytes()])));
    if let Some(khz) = std::fs::read_to_string(&cache)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return Some(khz);
    }
    let khz = measure_tsc_khz()?;
    let _ = std::fs::write(&cache, khz.to_string());
    Some(khz)
}

fn measure_tsc_khz() -> Option<u64> {
    let constant = std::fs::read_to_string("/proc/cpuinfo")
        .ok()?
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == "constant_tsc"));
    if !constant {
        return None;
    }
    // The middle of three short windows (one the scheduler interrupted reads high or low).
    let mut rates = Vec::new();
    for _ in 0..3 {
        let (t0, c0) = (Instant::now(), crate::sys::rdtsc()?);
        std::thread::sleep(Duration::from_millis(4));
        let (c1, ns) = (crate::sys::rdtsc()?, t0.elapsed().as_nanos());
        rates.push(c1.checked_sub(c0)? as f64 * 1e6 / ns.max(1) as f64);
    }
    rates.sort_by(f64::total_cmp);
    let khz = rates[1];
    (khz > 100_000.0).then(|| ((khz / 1000.0).round() as u64) * 1000)
}

/// Whether /dev/kvm can run our guest: not kvm_pvm (it hangs stock guest kernels), openable,
/// and a bounded probe boot (the guest powers off at once) ends in time. Cached per host
/// kernel; TCG otherwise.
pub fn accel(qemu: &Path, dir: &Path, vmlinux: &str, initrd: &str) -> Accel {
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Accel::Tcg;
    }
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable {
        return Accel::Tcg;
    }
    let cache = accel_cache(dir, vmlinux);
    if let Some(a) = cached_accel(dir, vmlinux) {
        return a;
    }
    let ok = probe_kvm(
        qemu,
        &dir.join(vmlinux),
        &dir.join(initrd),
        Duration::from_secs(20),
    );
    let a = if ok { Accel::Kvm } else { Accel::Tcg };
    let _ = std::fs::write(&cache, if ok { "kvm" } else { "tcg" });
    a
}

/// Where the KVM probe's decision for this host kernel and guest kernel is kept.
pub fn accel_cache(dir: &Path, vmlinux: &str) -> PathBuf {
    let host = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(
        "accel-{}",
        artifacts::key(&[host.as_bytes(), vmlinux.as_bytes()])
    ))
}

/// The KVM probe's decision, if it has been made (by the first run) for these kernels.
pub fn cached_accel(dir: &Path, vmlinux: &str) -> Option<Accel> {
    match std::fs::read_to_string(accel_cache(dir, vmlinux)).as_deref() {
        Ok("kvm") => Some(Accel::Kvm),
        Ok("tcg") => Some(Accel::Tcg),
        _ => None,
    }
}

fn probe_kvm(qemu: &Path, vmlinux: &Path, initrd: &Path, limit: Duration) -> bool {
    let child = Command::new(qemu)
        .args([
            "-M", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "128M",
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-serial", "none", "-nic", "none"])
        .arg("-kernel")
        .arg(vmlinux)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "quiet panic=-1 airlock.probe=1 -- init"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return false };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return st.success(),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

impl MicroVm {
    pub fn check(&self, project_dir: &Path, layout: &crate::cgroup::Layout) -> HostFacts {
        self.check_or_explain(project_dir, layout)
            .unwrap_or_else(|(facts, e)| {
                eprintln!("airlock: microvm backend unavailable: {}", e.why);
                *facts
            })
    }

    /// The host facts with the VM's, or (the facts without them, why not).
    pub fn check_or_explain(
        &self,
        project_dir: &Path,
        layout: &crate::cgroup::Layout,
    ) -> Result<HostFacts, (Box<HostFacts>, Unavailable)> {
        let mut facts = container::host_facts(project_dir, layout);
        facts.offer = crate::offer::offer();
        match prepare(self.kernel.as_ref(), self.image_root) {
            Ok(vm) => {
                facts.vm = Some(vm);
                Ok(facts)
            }
            Err(e) => Err((Box::new(facts), e)),
        }
    }

    pub fn start(&self, plan: &Plan, opts: &RunOptions<'_>) -> Result<Outcome, RunError> {
        let Plan::Microvm(vm) = plan else {
            return Err(RunError::Setup(
                "the microvm backend got another backend's plan".into(),
            ));
        };
        if let Some(dir) = opts.persist {
            if !vm.guest.hold {
                return Err(RunError::Vm(
                    "a named microVM sandbox needs a plan that holds its guest".into(),
                ));
            }
            record_job(dir, &vm.guest)?;
            // The starter's clock for the boot itself starts now (see VM_BOOT_FILE).
            let accel = match vm.accel {
                Accel::Kvm => "kvm",
                Accel::Tcg => "tcg",
            };
            std::fs::write(dir.join(crate::folder::VM_BOOT_FILE), accel)
                .map_err(container::io_err("record the VM's boot"))?;
        }
        let failed = std::cell::Cell::new(false);
        let attempt = |snapshots| {
            let rd = RunDir::create(opts.state_dir, &format!("{}.vm", vm.qemu.name)).map_err(
                |source| RunError::RunDir {
                    path: opts.state_dir.join("runs"),
                    source,
                },
            )?;
            let result = run_in(vm, opts, &rd.path, snapshots, &failed);
            rd.remove();
            result
        };
        let result = attempt(Snapshots::Use);
        if !failed.get() {
            return result;
        }
        // The guest restored from its boot snapshot never answered: the command never
        // started. The snapshot is gone (see snapshot::discard); this run boots.
        eprintln!("airlock: the microVM's boot snapshot could not be restored (removed); booting");
        attempt(Snapshots::Skip)
    }
}

use crate::command::{Ending, Outcome};

/// Whether a run may start from a boot snapshot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Snapshots {
    Use,
    Skip,
}

/// One run in the run directory `dir`. `restore_failed` is set when it started from a boot
/// snapshot whose guest never answered (QEMU could not restore it: its command never ran;
/// the snapshot is discarded) — the caller then runs it again with a boot.
fn run_in(
    vm: &VmPlan,
    opts: &RunOptions<'_>,
    dir: &Path,
    snapshots: Snapshots,
    restore_failed: &std::cell::Cell<bool>,
) -> Result<Outcome, RunError> {
    let vm = &snapshot_ro_mounts(vm, dir)?;
    let mut qemu = vm.qemu.clone();
    if !qemu.rootless {
        // Root-run: the run directory is bound idmapped, so its owner must be the project
        // owner (who appears as the sandbox user inside).
        let (u, g) = opts.facts.project_owner;
        nix::unistd::chown(
            dir,
            Some(nix::unistd::Uid::from_raw(u)),
            Some(nix::unistd::Gid::from_raw(g)),
        )
        .map_err(|e| RunError::Vm(format!("chown {}: {e}", dir.display())))?;
    }
    if let Some(src) = &vm.workspace {
        // Owned by the sandbox user inside, as the container backend's idmapped overlay.
        let owner = [
            format!("--force-uid={}", vm.guest.uid),
            format!("--force-gid={}", vm.guest.gid),
        ];
        workspace_image(src, &dir.join(VM_WORKSPACE_IMAGE), &owner)
            .map_err(|e| RunError::Vm(format!("workspace image: {e}")))?;
        crate::phase("workspace image built");
    }
    if let Some(size) = vm.overlay_disk {
        overlay_disk(dir, size, qemu.rootless, opts)?;
        crate::phase("writable-layer disk made");
        // A pool member's: the claimer grows it through QEMU's QMP socket (made by QEMU in
        // the run directory), found through this link in the member's folder.
        if let (Some(folder), Some(_)) = (opts.persist, vm.claim_slot) {
            let link = folder.join(airlock_model::plan::microvm::QMP_LINK_FILE);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(dir.join(airlock_model::plan::microvm::VM_QMP), &link)
                .map_err(|e| RunError::Vm(format!("link {}: {e}", link.display())))?;
        }
    }
    if let Some(d) = &vm.workspace_disk {
        // A clone workspace: the sandbox's own disk, made from its clone at the first start
        // and the guest's from then on (the host never mounts it). QEMU opens it through a
        // hard link in the run directory, owned like that directory.
        if !d.image.exists() {
            artifacts::ext4(&d.source, &d.image, d.size)
                .map_err(|e| RunError::Vm(format!("workspace disk: {e}")))?;
            crate::phase("workspace disk made from the clone");
        }
        if !qemu.rootless {
            let (u, g) = opts.facts.project_owner;
            nix::unistd::chown(
                &d.image,
                Some(nix::unistd::Uid::from_raw(u)),
                Some(nix::unistd::Gid::from_raw(g)),
            )
            .map_err(|e| RunError::Vm(format!("chown {}: {e}", d.image.display())))?;
        }
        let link = dir.join(VM_WORKSPACE_DISK);
        std::fs::hard_link(&d.image, &link).map_err(|e| {
            RunError::Vm(format!(
                "link the workspace disk {} into {}: {e}",
                d.image.display(),
                dir.display()
            ))
        })?;
        // From now on the guest may commit work the host has not taken out: marked until a
        // stop brings the branch over (the engine removes it), so a VM that ends any other
        // way (a killed supervisor) leaves diff and fetch saying so instead of showing less.
        if let Some(folder) = opts.persist {
            std::fs::write(folder.join(WORK_PENDING_FILE), b"")
                .map_err(container::io_err("mark the workspace disk in use"))?;
        }
    }
    if let Some(size) = vm.workspace_slot {
        blank_slot(
            dir,
            size,
            qemu.rootless,
            opts,
            VM_WORKSPACE_SLOT,
            WORKSPACE_SLOT_FILE,
        )
        .map_err(|e| RunError::Vm(format!("the workspace slot disk: {e}")))?;
    }
    if let Some(size) = vm.claim_slot {
        blank_slot(
            dir,
            size,
            qemu.rootless,
            opts,
            VM_CLAIM_SLOT,
            CLAIM_SLOT_FILE,
        )
        .map_err(|e| RunError::Vm(format!("the claim slot disk: {e}")))?;
    }
    // A run like this one starts from its boot snapshot (made now if there is none yet).
    let restore = match snapshots {
        Snapshots::Use if snapshot::eligible(vm) => match snapshot::prepare(vm, &qemu, dir, opts) {
            Ok(r) => r,
            // Interrupted while its snapshot was being made: ended as its command would be.
            Err(sig) => {
                return Ok(Outcome {
                    ending: Ending::Exited(128 + sig),
                    changes: None,
                })
            }
        },
        _ => None,
    };
    bind_run_dir(&mut qemu, dir);
    if std::env::var_os("AIRLOCK_TIMING").is_some() {
        // The exact command line (bench/microvm.sh starts raw QEMU from it).
        crate::phase(&format!(
            "qemu argv {}",
            serde_json::to_string(&qemu.argv).unwrap_or_default()
        ));
    }
    if let Some(r) = &restore {
        r.apply(&mut qemu);
        crate::phase(&format!(
            "restoring the boot snapshot {}",
            r.file().display()
        ));
    }

    // The channel: airlock listens, QEMU connects (as the sandbox's user) once it starts.
    let listener = listen_channel(dir, qemu.rootless, opts)?;
    // The secrets' values go to the guest in the run message only (never QEMU's command line,
    // environment or files, the kernel command line, the job record or a disk image).
    let sealed = channel::Sealed {
        secrets: opts.secrets.to_vec(),
        ca_bundle: opts
            .intercept
            .as_ref()
            .map(|i| String::from_utf8_lossy(&container::ca_bundle(i.ca_pem())).into_owned()),
        restored: restore.as_ref().map(|_| snapshot::restored()),
    };
    // `run -t`: the guest's terminal starts at the size of the user's.
    let mut guest = vm.guest.clone();
    if guest.tty.is_some() {
        guest.tty = term::size_of(0).or(guest.tty);
    }
    let guest = &guest;
    let stop = AtomicBool::new(false);
    // A named sandbox's guest, once it takes sessions: stopping asks it to power off.
    let held: Held = std::sync::Mutex::new(None);
    let defer = |sig: nix::sys::signal::Signal| -> Option<Duration> {
        use nix::sys::signal::Signal::{SIGHUP, SIGINT, SIGTERM};
        if !matches!(sig, SIGTERM | SIGINT | SIGHUP) {
            return None;
        }
        let mux = held.lock().ok()?.clone()?;
        let (guest_grace, hold_back) = stop_graces(stop_grace(opts.persist?));
        mux.poweroff(guest_grace.as_millis() as u64).ok()?;
        crate::phase("asked the guest to power off");
        Some(hold_back)
    };
    // A run's QEMU sandbox, by pidfd (never a reused pid): ended as soon as the guest has
    // reported the command's end — its poweroff (sync, device shutdown) and QEMU's own exit
    // are not waited for; nothing more comes from the guest after its report.
    let qemu_process = QemuProcess::default();
    let on_child = |pid: nix::unistd::Pid| qemu_process.record(pid);
    let (outcome, reported) = std::thread::scope(|s| {
        // The relay thread starts once the sandbox is cloned (see RunOptions::on_ready).
        let relay = std::sync::Mutex::new(None);
        let start_relay = || {
            let handle = s.spawn(|| {
                if let Some(Err(e)) = restore.as_ref().map(|r| r.load(dir, &stop)) {
                    // The guest never runs: a start that boots instead (see start).
                    crate::phase(&format!("the boot snapshot did not load: {e}"));
                    qemu_process.kill();
                    return Reported::Unheard;
                }
                match opts.persist {
                    Some(folder) => {
                        hold(&listener, vm, &sealed, folder, &stop, &held, opts.on_ready)
                    }
                    None => {
                        let r = channel::relay(&listener, guest, &sealed, &stop, guest.stdin);
                        if !matches!(r, Reported::Nothing | Reported::Unheard) {
                            crate::phase("guest reported: ending QEMU");
                            qemu_process.kill();
                        }
                        r
                    }
                }
            });
            if let Ok(mut r) = relay.lock() {
                *r = Some(handle);
            }
        };
        let inner = RunOptions {
            on_ready: Some(&start_relay),
            on_egress: opts.on_egress.clone(),
            intercept: opts.intercept.clone(),
            // The guest holds a named sandbox's state; QEMU's container is a run's.
            persist: None,
            // Secrets are the guest's, not QEMU's.
            secrets: &[],
            // The guest has the terminal and stdin (over the channel); QEMU neither.
            tty: false,
            forward_stdin: false,
            defer_signal: opts.persist.map(|_| &defer as _),
            exec_stub: false,
            // A run's QEMU is ended at the guest's report; a restore's, if the snapshot does
            // not load.
            on_child: (opts.persist.is_none() || restore.is_some()).then_some(&on_child as _),
            ..*opts
        };
        let outcome = container::run(&qemu, &inner);
        stop.store(true, Ordering::Relaxed);
        let handle = relay.lock().ok().and_then(|mut r| r.take());
        let reported = handle
            .and_then(|h| h.join().ok())
            .unwrap_or(Reported::Nothing);
        (outcome, reported)
    });
    let outcome = outcome?;
    if let (Some(r), Reported::Unheard) = (&restore, &reported) {
        // The guest never answered: its command (or a named sandbox's sessions) never began.
        r.discard();
        restore_failed.set(true);
        return Err(RunError::Vm(
            "the boot snapshot could not be restored".into(),
        ));
    }
    if opts.persist.is_some() {
        return Ok(Outcome {
            ending: outcome.ending,
            changes: None,
        });
    }
    match (outcome.ending, reported) {
        (Ending::TimedOut | Ending::OutOfMemory, _) => Ok(outcome),
        (_, Reported::Exit(code, changes)) => Ok(Outcome {
            ending: Ending::Exited(code),
            changes: changes.map(|c| *c),
        }),
        (_, Reported::Error(m)) => Err(RunError::Vm(format!(
            "the guest could not run the command: {m}"
        ))),
        (Ending::Exited(q), Reported::Nothing | Reported::Unheard) => Err(RunError::Vm(format!(
            "the VM ended without reporting the command's exit status (QEMU exited with {q})"
        ))),
    }
}

/// QEMU's container gets the run directory `dir` at VM_RUN_DIR, writable.
fn bind_run_dir(qemu: &mut airlock_model::plan::LaunchPlan, dir: &Path) {
    let at = qemu
        .mounts
        .iter()
        .position(|m| *m == MountStep::RootReadOnly)
        .unwrap_or(qemu.mounts.len());
    qemu.mounts.insert(
        at,
        MountStep::BindRw {
            source: dir.to_path_buf(),
            target: PathBuf::from(VM_RUN_DIR),
            idmap: !qemu.rootless,
        },
    );
    qemu.writable_paths.push(PathBuf::from(VM_RUN_DIR));
}

/// The channel's socket in the run directory `dir`: airlock listens, QEMU connects (as the
/// sandbox's user, who owns it in a root-run) once it starts.
fn listen_channel(
    dir: &Path,
    rootless: bool,
    opts: &RunOptions<'_>,
) -> Result<std::os::unix::net::UnixListener, RunError> {
    let socket = dir.join(airlock_model::plan::microvm::VM_CHANNEL);
    let listener = std::os::unix::net::UnixListener::bind(&socket)
        .map_err(|e| RunError::Vm(format!("listen on {}: {e}", socket.display())))?;
    if !rootless {
        chown_owner(&socket, opts).map_err(RunError::Vm)?;
    }
    Ok(listener)
}

/// `path` owned by the project's owner (who is the sandbox's user inside a root-run's QEMU
/// container).
fn chown_owner(path: &Path, opts: &RunOptions<'_>) -> Result<(), String> {
    let (u, g) = opts.facts.project_owner;
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(u)),
        Some(nix::unistd::Gid::from_raw(g)),
    )
    .map_err(|e| format!("chown {}: {e}", path.display()))
}

/// QEMU's sandbox (its PID 1, given by `RunOptions::on_child`), by pidfd — never a reused
/// pid — for the one SIGKILL that ends it early.
#[derive(Default)]
struct QemuProcess(std::sync::Mutex<Option<std::os::fd::OwnedFd>>);

impl QemuProcess {
    fn record(&self, pid: nix::unistd::Pid) {
        if let (Ok(fd), Ok(mut slot)) = (crate::sys::pidfd_open(pid.as_raw()), self.0.lock()) {
            *slot = Some(fd);
        }
    }

    /// SIGKILL, once (later calls do nothing).
    fn kill(&self) {
        if let Some(fd) = self.0.lock().ok().and_then(|mut s| s.take()) {
            let _ = crate::sys::pidfd_kill(&fd);
        }
    }
}

/// `disk`: the guest's writable layers' disk in the run directory, `size` bytes (sparse: only
/// what the guest writes takes host blocks), an empty ext4 the guest mounts and fills. Owned
/// like the run directory (QEMU opens it as the sandbox's user). Gone with the run directory.
fn overlay_disk(
    dir: &Path,
    size: u64,
    rootless: bool,
    opts: &RunOptions<'_>,
) -> Result<(), RunError> {
    let fail = |e: String| RunError::Vm(format!("the writable-layer disk (`disk`): {e}"));
    let empty = dir.join("overlay.d");
    std::fs::create_dir(&empty).map_err(|e| fail(format!("{}: {e}", empty.display())))?;
    let image = dir.join(VM_OVERLAY_DISK);
    let made = artifacts::ext4(&empty, &image, size);
    let _ = std::fs::remove_dir(&empty);
    made.map_err(fail)?;
    if !rootless {
        let (u, g) = opts.facts.project_owner;
        nix::unistd::chown(
            &image,
            Some(nix::unistd::Uid::from_raw(u)),
            Some(nix::unistd::Gid::from_raw(g)),
        )
        .map_err(|e| fail(format!("chown {}: {e}", image.display())))?;
    }
    Ok(())
}

/// A pool member's blank slot disk (`size` bytes, sparse): made in its folder (`file`, where a
/// claim writes into it: its project's image for the workspace slot, its read-only mounts'
/// for the claim slot) and hard-linked into the run directory (`link`) for QEMU, owned like
/// that directory. Without a folder, in the run directory.
fn blank_slot(
    dir: &Path,
    size: u64,
    rootless: bool,
    opts: &RunOptions<'_>,
    link: &str,
    file: &str,
) -> Result<(), String> {
    let link = dir.join(link);
    let file = opts
        .persist
        .map(|f| f.join(file))
        .unwrap_or_else(|| link.clone());
    let _ = std::fs::remove_file(&file);
    std::fs::File::create_new(&file)
        .and_then(|f| f.set_len(size))
        .map_err(|e| format!("{}: {e}", file.display()))?;
    if !rootless {
        let (u, g) = opts.facts.project_owner;
        nix::unistd::chown(
            &file,
            Some(nix::unistd::Uid::from_raw(u)),
            Some(nix::unistd::Gid::from_raw(g)),
        )
        .map_err(|e| format!("chown {}: {e}", file.display()))?;
    }
    if file != link {
        std::fs::hard_link(&file, &link)
            .map_err(|e| format!("link {} into {}: {e}", file.display(), dir.display()))?;
    }
    Ok(())
}

/// Each read-only mount's snapshot in the run directory (`ro_image(i)`, [`ro_snapshot`]).
/// The plan, with the guest told which mounts are files.
fn snapshot_ro_mounts(vm: &VmPlan, dir: &Path) -> Result<VmPlan, RunError> {
    use airlock_model::plan::microvm::ro_image;
    let mut vm = vm.clone();
    let owner = [
        format!("--force-uid={}", vm.guest.uid),
        format!("--force-gid={}", vm.guest.gid),
    ];
    for (i, src) in vm.ro_sources.iter().enumerate() {
        let stage = dir.join(format!("ro-{i}.d"));
        let file = ro_snapshot(src, &dir.join(ro_image(i)), &owner, &stage)
            .map_err(|e| RunError::Vm(format!("read-only mount {}: {e}", src.display())))?;
        if let Some(m) = vm.guest.mounts.get_mut(i).filter(|_| file) {
            m.file = true;
        }
    }
    if !vm.ro_sources.is_empty() {
        crate::phase("read-only mount images built");
    }
    Ok(vm)
}

/// A read-only mount's snapshot: the erofs `image` of `src` as it is now, owned as `owner`
/// (mkfs.erofs' `--force-uid`/`--force-gid`: the guest's user) — a directory as it is, a file
/// as the one entry ([`airlock_model::vm::RO_FILE_ENTRY`]) of an image of its own, staged in
/// `stage` (removed after). The host path is only read, and opened component by component
/// without following any symbolic link (the user's source was canonical when checked: a link
/// in it now was planted since, as for a container's sealed sources); what is read is what
/// that descriptor names. True when `src` is a file (the guest binds that entry).
pub(crate) fn ro_snapshot(
    src: &Path,
    image: &Path,
    owner: &[String],
    stage: &Path,
) -> Result<bool, String> {
    use std::os::fd::{AsFd, AsRawFd};
    let fd = crate::nofollow::open_nofollow(src).map_err(|e| e.to_string())?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| e.to_string())?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => artifacts::erofs_of(fd.as_fd(), image, owner).map(|()| false),
        libc::S_IFREG => {
            let through = format!("/proc/self/fd/{}", fd.as_raw_fd());
            let made = std::fs::create_dir(stage)
                .and_then(|()| {
                    std::fs::copy(&through, stage.join(airlock_model::vm::RO_FILE_ENTRY))
                        .map(|_| ())
                })
                .map_err(|e| e.to_string())
                .and_then(|()| artifacts::erofs(stage, image, owner));
            let _ = std::fs::remove_dir_all(stage);
            made.map(|()| true)
        }
        _ => Err("neither a file nor a directory".into()),
    }
}

/// The overlay workspace's erofs `image` of the project directory `project`, owned as `owner`
/// (the guest's user): read through a descriptor opened component by component without
/// following any symbolic link, as a container's sealed project directory is bound (the path
/// was canonical when checked: a link in it now was planted since, e.g. by a sandbox that
/// can write one of its parents) — refused, never followed.
pub(crate) fn workspace_image(
    project: &Path,
    image: &Path,
    owner: &[String],
) -> Result<(), String> {
    use std::os::fd::AsFd;
    let fd = crate::nofollow::open_nofollow(project).map_err(|e| e.to_string())?;
    artifacts::erofs_of(fd.as_fd(), image, owner)
}

/// A named sandbox's guest job, recorded in its folder: what `exec` starts from (environment,
/// working directory, user).
pub const JOB_FILE: &str = "vm-job.json";
/// The supervisor's pid while its guest takes exec sessions.
pub const PID_FILE: &str = "vm.pid";

fn record_job(dir: &Path, job: &airlock_model::vm::GuestJob) -> Result<(), RunError> {
    let json = serde_json::to_vec_pretty(job)
        .map_err(|e| RunError::Setup(format!("encode the guest job: {e}")))?;
    let tmp = dir.join(".vm-job.json.tmp");
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, dir.join(JOB_FILE)))
        .map_err(container::io_err("record the sandbox's guest job"))
}

/// A held guest's channel, shared with the signal relay (which asks it to power off).
type Held = std::sync::Mutex<Option<std::sync::Arc<mux::Mux>>>;

/// How long the one who stops a named sandbox waits before SIGKILL (what the engine wrote in
/// the folder's [`crate::folder::STOP_GRACE_FILE`] before its SIGTERM; 10 s without).
fn stop_grace(folder: &Path) -> Duration {
    std::fs::read_to_string(folder.join(crate::folder::STOP_GRACE_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(10))
}

/// Out of a stop's `grace`: the guest's commands get SIGTERM and `guest` to end (then the
/// guest kills them, syncs and powers off); QEMU itself gets the stop signal after
/// `hold_back` if the guest is still up — both before the stopper's own SIGKILL.
fn stop_graces(grace: Duration) -> (Duration, Duration) {
    // Under emulation on a loaded host a guest's last steps (kill, report, sync, power off)
    // can take a second or more: half the grace, up to 3 s, is theirs.
    let margin = (grace / 2).min(Duration::from_secs(3));
    (grace - margin, grace - margin / 4)
}

/// A named sandbox's guest: open the held channel, then serve exec clients on the folder's
/// control socket until QEMU ends.
fn hold(
    listener: &std::os::unix::net::UnixListener,
    vm: &VmPlan,
    sealed: &channel::Sealed,
    folder: &Path,
    stop: &AtomicBool,
    held: &Held,
    on_ready: Option<&(dyn Fn() + Sync)>,
) -> Reported {
    let Some(stream) = channel::accept(listener, stop) else {
        return Reported::Nothing;
    };
    let mux = match mux::Mux::open_sealed(stream, &vm.guest, sealed) {
        Ok(m) => std::sync::Arc::new(m),
        Err(e) if e == mux::UNHEARD => return Reported::Unheard,
        Err(e) => {
            eprintln!("airlock: {e}");
            return Reported::Error(e);
        }
    };
    if let Ok(mut h) = held.lock() {
        *h = Some(mux.clone());
    }
    let reported = serve_held(&mux, folder, stop, on_ready);
    if let Ok(mut h) = held.lock() {
        *h = None;
    }
    reported
}

fn serve_held(
    mux: &mux::Mux,
    folder: &Path,
    stop: &AtomicBool,
    on_ready: Option<&(dyn Fn() + Sync)>,
) -> Reported {
    crate::phase("guest ready for exec");
    let sock = folder.join(control::VM_CONTROL);
    let _ = std::fs::remove_file(&sock);
    let ctl = match std::os::unix::net::UnixListener::bind(&sock) {
        Ok(l) => l,
        Err(e) => return Reported::Error(format!("listen on {}: {e}", sock.display())),
    };
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600));
    let _ = std::fs::write(folder.join(PID_FILE), std::process::id().to_string());
    std::thread::scope(|s| {
        // The guest takes exec sessions now: what waits for that (agent mode's runner)
        // starts beside the control socket's server.
        if let Some(f) = on_ready {
            s.spawn(f);
        }
        control::serve(&ctl, mux, stop);
    });
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(folder.join(PID_FILE));
    Reported::Nothing
}

impl MicroVm {
    /// Run a command in a running named microVM sandbox, through its control socket.
    pub fn exec_in(
        &self,
        dir: &Path,
        name: &str,
        req: &crate::command::ExecRequest,
    ) -> Result<Outcome, RunError> {
        let job: airlock_model::vm::GuestJob = std::fs::read(dir.join(JOB_FILE))
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| RunError::NotRecorded {
                name: name.to_string(),
                why: format!("{JOB_FILE}: {e}"),
            })?;
        let mut env = airlock_model::spec::env_over(&job.env, &req.env);
        // A terminal: the user's size, and a TERM that knows it is one.
        let tty = req
            .tty
            .then(|| term::size_of(0).unwrap_or(airlock_model::plan::microvm::DEFAULT_TTY));
        if tty.is_some() && !env.iter().any(|(k, _)| k == "TERM") {
            let t = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
            env.push(("TERM".into(), t));
        }
        let exec = airlock_model::vm::GuestExec {
            argv: req.argv.clone(),
            env,
            cwd: req
                .cwd
                .as_ref()
                .map(|c| c.display().to_string())
                .unwrap_or(job.cwd.clone()),
            uid: job.uid,
            gid: job.gid,
            stdin: req.forward_stdin || tty.is_some(),
            secrets: req.with_secrets,
            tty,
        };
        // A descriptor of its own: the relay thread may outlive this call (the command can end
        // before its stdin does), and must never read whatever fd 0 becomes afterwards (the
        // MCP file tools put their caller's stdin back there).
        let stdin: Option<Box<dyn std::io::Read + Send>> = if req.forward_stdin && tty.is_none() {
            use std::os::fd::AsFd;
            let fd = std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| RunError::Vm(format!("stdin: {e}")))?;
            Some(Box::new(std::fs::File::from(fd)))
        } else {
            None
        };
        let code = control::exec(
            &dir.join(control::VM_CONTROL),
            exec,
            stdin,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        )
        .map_err(|e| RunError::Vm(format!("sandbox {name}: {e}")))?;
        Ok(Outcome {
            ending: Ending::Exited(code),
            changes: None,
        })
    }

    /// Run `argv` in a running named microVM sandbox (in /workspace, as its user, with its
    /// environment) and copy at most `limit` bytes of its stdout to `out`: how the host takes
    /// a clone workspace's work back (a git bundle). The exit status and the command's stderr.
    pub fn capture_in(
        &self,
        dir: &Path,
        name: &str,
        argv: Vec<String>,
        out: &mut dyn std::io::Write,
        limit: u64,
    ) -> Result<(i32, Vec<u8>), RunError> {
        let job: airlock_model::vm::GuestJob = std::fs::read(dir.join(JOB_FILE))
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| RunError::NotRecorded {
                name: name.to_string(),
                why: format!("{JOB_FILE}: {e}"),
            })?;
        let exec = airlock_model::vm::GuestExec {
            argv,
            env: job.env.clone(),
            cwd: "/workspace".into(),
            uid: job.uid,
            gid: job.gid,
            stdin: false,
            secrets: false,
            tty: None,
        };
        control::capture(&dir.join(control::VM_CONTROL), exec, out, limit)
            .map_err(|e| RunError::Vm(format!("sandbox {name}: {e}")))
    }

    /// Running: its control socket answers.
    pub fn observe_in(&self, dir: &Path) -> crate::folder::Observed {
        use crate::folder::Observed;
        let sock = dir.join(control::VM_CONTROL);
        let pid = std::fs::read_to_string(dir.join(PID_FILE))
            .ok()
            .and_then(|p| p.trim().parse().ok());
        match pid {
            Some(pid1) if std::os::unix::net::UnixStream::connect(&sock).is_ok() => {
                Observed::Running { pid1 }
            }
            Some(_) => Observed::Dead,
            None => Observed::Stopped,
        }
    }

    /// What a dead supervisor left: its control socket and pid record.
    pub fn reclaim_in(&self, dir: &Path) {
        for f in [control::VM_CONTROL, PID_FILE] {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }
}

#[cfg(test)]
mod stop_tests {
    use super::*;

    #[test]
    fn the_guest_powers_off_inside_the_stoppers_grace_and_qemu_goes_before_its_sigkill() {
        for (grace, guest, hold) in [(10_000, 7_000, 9_250), (6_000, 3_000, 5_250), (0, 0, 0)] {
            let ms = Duration::from_millis;
            assert_eq!(stop_graces(ms(grace)), (ms(guest), ms(hold)), "{grace}");
        }
        let dir = std::env::temp_dir().join(format!("airlock-stop-grace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(stop_grace(&dir), Duration::from_secs(10));
        std::fs::write(dir.join(crate::folder::STOP_GRACE_FILE), "2500").unwrap();
        assert_eq!(stop_grace(&dir), Duration::from_millis(2500));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
