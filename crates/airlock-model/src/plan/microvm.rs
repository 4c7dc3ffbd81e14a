//! The microVM backend's lowering: (RunSpec, HostFacts) -> VmPlan. QEMU (`-M microvm`, direct
//! kernel boot) runs as the command of a container sandbox built from the same spec — same
//! namespaces, seccomp, Landlock, cgroup limits and network namespace with its egress
//! listeners — so QEMU's user-mode network turns every guest connection into an ordinary
//! connect that the same egress engine decides. The guest's side (what runs inside, as whom,
//! with which files) is a [`GuestJob`] sent over the channel when the guest is up.

use super::*;
use crate::policy::WorkspaceMode;
use crate::spec::SandboxUser;
use crate::vm::{
    disk_ro, GuestFile, GuestJob, GuestMount, GuestNet, DISK_CLAIM, DISK_OVERLAY, DISK_ROOT,
    DISK_WORKSPACE, VM_PORT_NAME,
};

/// Inside the QEMU container: the host's artifact cache (kernel, initrd, root image),
/// read-only.
pub const VM_CACHE_DIR: &str = "/airlock-vm/cache";
/// Inside the QEMU container: the run's own directory (channel socket, workspace image).
pub const VM_RUN_DIR: &str = "/airlock-vm/run";
/// Inside the QEMU container: the directory of an image's root disk (the image store's
/// `vm/KEY`), read-only.
pub const VM_IMAGE_DIR: &str = "/airlock-vm/image";
/// The channel's socket in the run directory.
pub const VM_CHANNEL: &str = "channel.sock";
/// The workspace image in the run directory.
pub const VM_WORKSPACE_IMAGE: &str = "workspace.erofs";
/// The snapshot image of the `i`th read-only mount in the run directory.
pub fn ro_image(i: usize) -> String {
    format!("ro-{i}.erofs")
}
/// The most read-only mounts a microVM takes (each is a virtio-blk disk of its own).
pub const MAX_RO_MOUNTS: usize = 8;
/// The disk of the guest's writable layers in the run directory when the spec sets `disk`:
/// a sparse file of exactly that size, formatted ext4 (empty) by the executor before QEMU
/// starts, gone with the run directory.
pub const VM_OVERLAY_DISK: &str = "overlay.img";
/// A clone workspace's disk in the run directory (a hard link to the sandbox's own image).
pub const VM_WORKSPACE_DISK: &str = "workspace.img";
/// A warm pool member's workspace slot in the run directory (a hard link to the member's
/// [`WORKSPACE_SLOT_FILE`]): a blank read-only disk the guest sees from its boot, into whose
/// file a claim writes its project's erofs image before it has the guest mount it
/// (`airlock-guest ws attach`): virtio-mmio has no hotplug, so the disk is there from the boot.
pub const VM_WORKSPACE_SLOT: &str = "workspace-slot.img";
/// That slot's file in the member's folder, where the claimer finds it.
pub const WORKSPACE_SLOT_FILE: &str = "vm-workspace-slot.img";
/// The slot's size (a sparse file: it costs the blocks a claim writes). A project whose image
/// is larger starts cold.
pub const VM_WORKSPACE_SLOT_SIZE: u64 = 16 << 30;
/// A warm pool member's claim slot in the run directory (a hard link to the member's
/// [`CLAIM_SLOT_FILE`]): a blank read-only disk the guest sees from its boot, into whose file
/// a claim writes its `--ro` mounts' snapshots (a GPT partition each) before the guest helper
/// mounts them (`airlock-guest ws ro`).
pub const VM_CLAIM_SLOT: &str = "claim-slot.img";
/// That slot's file in the member's folder.
pub const CLAIM_SLOT_FILE: &str = "vm-claim-slot.img";
/// The claim slot's size (sparse: it costs the blocks a claim writes). A claim whose
/// snapshots do not fit starts cold.
pub const VM_CLAIM_SLOT_SIZE: u64 = 16 << 30;
/// The writable-layer disk (`disk`) a pool member boots with when the spec's is larger: a claim
/// grows it to its own `disk` (QMP `block_resize`, then an online ext4 resize in the guest), so
/// one pool serves every `disk` from this size up ([`member_disk`]).
pub const VM_MEMBER_DISK: u64 = 16 << 20;
/// The `disk` a pool member boots with for a spec's `disk` (bytes): [`VM_MEMBER_DISK`], or the
/// spec's own when smaller (a filesystem is not shrunk online: such a spec has a pool per size).
pub fn member_disk(disk: u64) -> u64 {
    disk.min(VM_MEMBER_DISK)
}
/// A member with a writable-layer disk: QEMU's QMP socket in the run directory (its one use:
/// `block_resize` of that disk at claim), linked from the member's folder as [`QMP_LINK_FILE`].
pub const VM_QMP: &str = "qmp.sock";
/// That link in the member's folder.
pub const QMP_LINK_FILE: &str = "vm-qmp.sock";
/// A clone workspace's disk image in the sandbox's folder, beside its clone: an ext4 image
/// made from the clone at the first start, the guest's to write from then on. The host never
/// mounts or reads it; the work comes back as a git bundle over the channel.
pub const WORKSPACE_IMAGE_FILE: &str = "vm-workspace.img";
/// Beside that image while the guest's disk may hold work the host has not taken out: written
/// by the supervisor when it gives the guest the disk, removed once a stop has brought the
/// branch over (`airlock_engine::guest_work::before_stop`). Still there while the sandbox is
/// down: its VM ended without that (a killed supervisor), and the next start brings it over.
pub const WORK_PENDING_FILE: &str = "vm-work-pending";
/// The size of that image when the spec sets no `disk` (a sparse file: blocks cost only what
/// the guest writes).
pub const VM_DEFAULT_WORKSPACE_DISK: u64 = 8 << 30;
/// Guest memory when the spec's memory limit is airlock's default (half the host's RAM).
pub const VM_DEFAULT_MEMORY: u64 = 1 << 30;
/// What QEMU needs beyond the guest's memory (its own heap, the TCG translation cache):
/// added to the guest's memory for the cgroup limit of the QEMU container.
pub const VM_OVERHEAD: u64 = 384 << 20;
/// TCG translation block cache in MiB (QEMU's default is 1 GiB of address space).
pub const TCG_TB_MIB: u64 = 128;
/// The virtio-serial device's port count: port 0 (reserved by QEMU for a console, unused) and
/// the channel's.
pub const VM_SERIAL_PORTS: u32 = 2;
/// The guest's address on QEMU's user-mode network, where the host side is 10.0.2.2.
pub const SLIRP_HOST: &str = "10.0.2.2";

/// The size a `-t` guest terminal is planned with (the executor puts the user's in).
pub const DEFAULT_TTY: crate::vm::TtySize = crate::vm::TtySize { rows: 24, cols: 80 };

/// How the guest's CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm (its probe booted a guest).
    Kvm,
    /// Software emulation: works everywhere, ~10–50× slower CPU.
    Tcg,
}

/// What the microVM backend found on this host (gathered by its `check`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmFacts {
    /// qemu-system-x86_64 on the host.
    pub qemu: PathBuf,
    /// The host's artifact cache directory (bound read-only at VM_CACHE_DIR).
    pub cache_dir: PathBuf,
    /// File names in `cache_dir`: the guest kernel (uncompressed, PVH-bootable vmlinux), the
    /// initramfs (airlock's init and the kernel modules it loads), the root image (erofs).
    pub kernel: String,
    pub initrd: String,
    pub rootfs: String,
    /// The guest kernel's release (`uname -r` inside).
    pub kernel_release: String,
    pub accel: Accel,
    /// The host's TSC frequency in kHz (what the guest's TSC runs at, under TCG as under
    /// KVM), measured once per host boot; None: unknown (the guest is told 2 GHz).
    #[serde(default)]
    pub tsc_khz: Option<u64>,
}

/// The guest kernel's command line (`-append`). Quiet, no console at all (the channel carries
/// everything). `tsc_early_khz` spares the guest the TSC calibration (slow under TCG) and
/// `tsc=reliable` keeps the guest on the TSC: under TCG its timer ticks come late, and the
/// clocksource watchdog, comparing the TSC with those jiffies, would otherwise switch the
/// guest to the jiffies (coarse, slow time) halfway through the boot. `cryptomgr.notests` skips
/// the self-tests of the kernel's crypto algorithms: most of the boot's instructions under
/// TCG (the guest's kernel crypto guards nothing of airlock's). After `--`: the arguments of
/// /init (the guest helper).
pub fn kernel_cmdline(tsc_khz: Option<u64>) -> String {
    format!(
        "{KERNEL_CMDLINE_BASE} tsc_early_khz={} airlock.v=1 -- init",
        tsc_khz.unwrap_or(2_000_000)
    )
}

/// The part of [`kernel_cmdline`] that is not airlock's own or the host's.
pub const KERNEL_CMDLINE_BASE: &str = "quiet loglevel=1 panic=-1 tsc=reliable cryptomgr.notests";

/// The complete description of one microVM launch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmPlan {
    /// The container that confines QEMU; its argv is QEMU's command line. The executor adds
    /// one writable bind: the run's directory at VM_RUN_DIR.
    pub qemu: LaunchPlan,
    /// What runs in the guest.
    pub guest: GuestJob,
    /// The host directory whose read-only image becomes the guest's /workspace (under a
    /// tmpfs overlay inside: the host directory stays as it is).
    pub workspace: Option<PathBuf>,
    /// A clone workspace: the guest's writable disk (made from the clone at the first start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_disk: Option<WorkspaceDisk>,
    /// The host paths of the read-only mounts, in the order of `guest.mounts`: the executor
    /// makes each one's snapshot ([`ro_image`]) before QEMU starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ro_sources: Vec<PathBuf>,
    /// The size of the guest's writable-layer disk ([`VM_OVERLAY_DISK`]): the spec's `disk`.
    /// None: those layers are tmpfs sized from the guest's memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_disk: Option<u64>,
    /// A pool member's blank workspace slot of this size ([`VM_WORKSPACE_SLOT`]), made by the
    /// executor in the member's folder (`spec.workspace_slot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_slot: Option<u64>,
    /// A pool member's blank claim slot of this size ([`VM_CLAIM_SLOT`]), made by the
    /// executor in the member's folder (`spec.vm_claim_slot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_slot: Option<u64>,
    pub accel: Accel,
    pub memory: u64,
    pub cpus: u32,
}

/// A named sandbox's clone workspace as a disk of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceDisk {
    /// The host clone the image is made from when it does not exist yet.
    pub source: PathBuf,
    /// The image (`DIR/vm-workspace.img`).
    pub image: PathBuf,
    /// Its size in bytes (sparse).
    pub size: u64,
}

/// The size of a clone workspace's ext4 image (and of a pool member's writable slot for
/// one): the spec's `disk`, else [`VM_DEFAULT_WORKSPACE_DISK`].
pub fn workspace_disk_size(spec: &RunSpec) -> u64 {
    spec.resources
        .disk
        .map(|d| d.0)
        .unwrap_or(VM_DEFAULT_WORKSPACE_DISK)
}

/// `disk` sizes an ext4 disk: one too small to be made is refused (also by `admit`, so that
/// `create` refuses it before the first start).
pub fn check_disk(spec: &RunSpec) -> Result<(), Refusal> {
    match spec.resources.disk {
        Some(d) if d.0 < super::MIN_VM_DISK => Err(Refusal::DiskTooSmall(d.0)),
        _ => Ok(()),
    }
}

/// The microVM lowering of an admitted spec. Pure: same inputs, same plan.
pub fn lower(spec: &RunSpec, host: &HostFacts) -> Result<VmPlan, Refusal> {
    let Some(vm) = &host.vm else {
        return Err(Refusal::BackendUnavailable(BackendKind::Microvm));
    };
    if spec.argv.is_empty() != spec.persistent {
        return Err(Refusal::EmptyCommand);
    }
    match spec.workspace {
        WorkspaceMode::Bind => {
            return Err(Refusal::MicrovmUnsupported(
                "--workspace bind (a microVM gets no writable host share)",
            ))
        }
        WorkspaceMode::Clone if spec.workspace_dir.is_none() => {
            return Err(Refusal::CloneUnsupported)
        }
        _ => {}
    }
    if spec.binds.iter().any(|b| b.writable) {
        return Err(Refusal::MicrovmWritableMount);
    }
    if spec.binds.len() > MAX_RO_MOUNTS {
        return Err(Refusal::MicrovmUnsupported(
            "more than 8 read-only mounts (each is a disk of the VM's)",
        ));
    }
    for b in &spec.binds {
        container::check_target(&b.target)?;
    }
    // An image: its one read-only disk (made from its layers by the backend's preparation)
    // is the guest's root instead of the host root image.
    let image = match &spec.rootfs {
        crate::spec::RootFs::Host => None,
        image @ crate::spec::RootFs::Image { .. } => {
            let missing = || Refusal::ImageNotInStore(image.label());
            let found = host.image.as_deref().ok_or_else(missing)?;
            let disk = found.vm_disk.as_deref().ok_or_else(missing)?;
            let (Some(dir), Some(file)) = (disk.parent(), disk.file_name()) else {
                return Err(missing());
            };
            Some((
                found,
                dir.to_path_buf(),
                file.to_string_lossy().into_owned(),
            ))
        }
    };
    let memory = match spec.resources.memory {
        Some(m) if !spec.defaulted.memory => m.0,
        _ => VM_DEFAULT_MEMORY,
    };
    let cpus = spec
        .resources
        .cpus
        .map(|c| c.get().ceil().max(1.0) as u32)
        .unwrap_or(1);
    let has_ws = spec.workspace == WorkspaceMode::Overlay;
    let ws_disk = match (&spec.workspace, &spec.workspace_dir) {
        (WorkspaceMode::Clone, Some(dir)) => Some(WorkspaceDisk {
            source: dir.clone(),
            image: dir
                .parent()
                .unwrap_or(Path::new("/"))
                .join(WORKSPACE_IMAGE_FILE),
            size: workspace_disk_size(spec),
        }),
        _ => None,
    };
    let net = if spec.net == NetMode::Off {
        GuestNet::None
    } else {
        GuestNet::User
    };

    let cache = Path::new(VM_CACHE_DIR);
    let run = Path::new(VM_RUN_DIR);
    let s = |p: &Path| p.display().to_string();
    let mut argv: Vec<String> = vec![s(&vm.qemu)];
    let mut push = |a: &[&str]| argv.extend(a.iter().map(|x| x.to_string()));
    push(&[
        "-M",
        "microvm",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
    ]);
    push(&[
        "-no-reboot",
        "-serial",
        "none",
        "-parallel",
        "none",
        "-monitor",
        "none",
    ]);
    match vm.accel {
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => push(&[
            "-accel",
            &format!("tcg,tb-size={TCG_TB_MIB}"),
            "-cpu",
            "max",
        ]),
    }
    push(&[
        "-m",
        &format!("{}M", memory >> 20),
        "-smp",
        &cpus.to_string(),
    ]);
    push(&["-kernel", &s(&cache.join(&vm.kernel))]);
    push(&["-initrd", &s(&cache.join(&vm.initrd))]);
    push(&["-append", &kernel_cmdline(vm.tsc_khz)]);
    let mut disk = |id: &str, file: String, serial: &str, rw: bool| {
        let ro = if rw { "" } else { ",readonly=on" };
        argv.extend([
            "-drive".to_string(),
            format!("id={id},file={file},format=raw,if=none{ro}"),
            "-device".to_string(),
            format!("virtio-blk-device,drive={id},serial={serial}"),
        ]);
    };
    let root_disk = match &image {
        Some((_, _, file)) => Path::new(VM_IMAGE_DIR).join(file),
        None => cache.join(&vm.rootfs),
    };
    disk("root", s(&root_disk), DISK_ROOT, false);
    if has_ws {
        disk(
            "ws",
            s(&run.join(VM_WORKSPACE_IMAGE)),
            DISK_WORKSPACE,
            false,
        );
    }
    if ws_disk.is_some() {
        disk("ws", s(&run.join(VM_WORKSPACE_DISK)), DISK_WORKSPACE, true);
    }
    // A pool member whose claims bring a workspace: the blank slot its claim fills —
    // read-only for a run's overlay (an erofs image of the project), writable and the size
    // of the named sandbox's workspace image for a clone (its ext4 image).
    let slot_rw = spec.workspace_slot && spec.workspace_slot_rw;
    let slot = (spec.workspace_slot && !has_ws && ws_disk.is_none()).then(|| {
        if slot_rw {
            workspace_disk_size(spec)
        } else {
            VM_WORKSPACE_SLOT_SIZE
        }
    });
    if slot.is_some() {
        disk(
            "ws",
            s(&run.join(VM_WORKSPACE_SLOT)),
            DISK_WORKSPACE,
            slot_rw,
        );
    }
    // `disk`: the guest's writable layers on a disk of that size. A tmpfs bound is no bound
    // past the guest's memory (its pages are that memory), so `disk` is a real disk.
    check_disk(spec)?;
    let overlay_disk = spec.resources.disk.map(|d| d.0);
    if overlay_disk.is_some() {
        disk("ov", s(&run.join(VM_OVERLAY_DISK)), DISK_OVERLAY, true);
    }
    // A pool member's writable-layer disk is grown at claim: QEMU's QMP socket for that.
    let qmp = spec.vm_claim_slot && overlay_disk.is_some();
    for i in 0..spec.binds.len() {
        disk(
            &format!("ro{i}"),
            s(&run.join(ro_image(i))),
            &disk_ro(i),
            false,
        );
    }
    // A pool member: the blank read-only slot a claim writes its read-only mounts into.
    let claim_slot = spec.vm_claim_slot.then_some(VM_CLAIM_SLOT_SIZE);
    if claim_slot.is_some() {
        disk("cl", s(&run.join(VM_CLAIM_SLOT)), DISK_CLAIM, false);
    }
    let mut push = |a: &[&str]| argv.extend(a.iter().map(|x| x.to_string()));
    if qmp {
        push(&[
            "-qmp",
            &format!("unix:{},server=on,wait=off", s(&run.join(VM_QMP))),
        ]);
    }
    // One port (the channel; port 0 is reserved for a console): the guest's driver sets up two
    // virtqueues per possible port, 64 for QEMU's default of 31 ports, at boot.
    push(&[
        "-device",
        &format!("virtio-serial-device,max_ports={VM_SERIAL_PORTS}"),
    ]);
    push(&[
        "-chardev",
        &format!("socket,id=channel,path={}", s(&run.join(VM_CHANNEL))),
    ]);
    push(&[
        "-device",
        &format!("virtserialport,chardev=channel,name={VM_PORT_NAME}"),
    ]);
    match net {
        GuestNet::None => push(&["-nic", "none"]),
        GuestNet::User => push(&[
            "-netdev",
            "user,id=net0,ipv6=off",
            "-device",
            "virtio-net-device,netdev=net0",
        ]),
    }

    // The QEMU container: the same spec's policy with QEMU as the command, no workspace, the
    // artifact cache read-only; limits sized for the guest plus QEMU's own overhead.
    let mut q = spec.clone();
    q.argv = argv;
    // QEMU is the container's command even for a named sandbox (the guest holds its state).
    q.persistent = false;
    // QEMU runs on the host's root filesystem whatever the guest's is.
    q.rootfs = crate::spec::RootFs::Host;
    q.workspace = WorkspaceMode::None;
    q.workspace_slot = false;
    q.workspace_slot_rw = false;
    q.vm_claim_slot = false;
    q.workdir = Some(PathBuf::from("/"));
    q.env = vec![("PATH".into(), "/usr/bin:/bin".into())];
    q.user = SandboxUser::Agent;
    q.binds = vec![crate::spec::BindSpec {
        source: vm.cache_dir.clone(),
        target: cache.to_path_buf(),
        writable: false,
    }];
    if let Some((_, dir, _)) = &image {
        q.binds.push(crate::spec::BindSpec {
            source: dir.clone(),
            target: PathBuf::from(VM_IMAGE_DIR),
            writable: false,
        });
    }
    q.protected = vec![];
    q.home_files = Default::default();
    q.secrets = Default::default();
    if !spec.defaulted.memory || spec.resources.memory.is_none() {
        q.resources.memory = Some(crate::policy::ByteSize(memory + VM_OVERHEAD));
        q.defaulted.memory = false;
    }
    q.resources.disk = None;
    let mut qemu = container::lower(&q, host)?;
    // Its binds are airlock's own (the artifact cache, the image's folder), not the user's:
    // opened as any host path (the user's `--ro` sources become snapshot images, read by
    // `microvm::ro_snapshot`).
    qemu.sealed_sources.clear();
    // Under TCG QEMU's guest RAM and code buffer are anonymous memory it asks to be backed by
    // huge pages, made of free 2 MiB blocks — the very blocks a host that is itself a VM hands
    // back to its hypervisor (free page reporting), so each came back cold and was faulted in
    // again there: ~0.2 s of a boot started seconds after the last. 4 KiB pages come from
    // recently freed memory; back to back it is a wash (+~10 ms unmapping them at the end).
    // (KVM keeps them: its guest's own memory accesses go through the huge pages' mappings.)
    qemu.no_huge_pages = vm.accel == Accel::Tcg;
    if vm.accel == Accel::Kvm {
        qemu.mounts.insert(
            qemu.mounts.len() - 1,
            MountStep::Device { name: "kvm".into() },
        );
    }

    let user = &spec.user;
    let home = user.home().to_string();
    let mut env = spec.env.clone();
    if spec.net == NetMode::Filtered {
        // The explicit proxy is reachable as QEMU's host side (its loopback, in the
        // sandbox's network namespace, where the egress proxy listens).
        container::add_proxy_env(&mut env, SLIRP_HOST);
        // Injected secrets: every TLS client in the guest trusts the interception CA's
        // bundle (the guest writes it from the run message).
        if spec.secrets.values().any(|s| s.inject.is_some()) {
            super::set_ca_bundle_vars(&mut env);
        }
    }
    // The generated /etc files (with an image's own users kept), and airlock's profile.d
    // drop-in (login shells keep the agent tools on PATH): the guest's root image has no
    // /etc/profile.d of the host's.
    let files = container::etc_files(spec, image.as_ref().map(|(i, _, _)| *i))
        .into_iter()
        .chain(container::profile_d(&[]))
        .filter_map(|m| match m {
            MountStep::File {
                target,
                contents,
                mode,
            } => Some(GuestFile {
                path: target.display().to_string(),
                contents: guest_etc(&target, contents, net),
                mode,
            }),
            _ => None,
        })
        .collect();
    let cwd = spec.workdir.clone().unwrap_or_else(|| {
        PathBuf::from(if has_ws || ws_disk.is_some() {
            "/workspace"
        } else {
            home.as_str()
        })
    });
    Ok(VmPlan {
        guest: GuestJob {
            argv: spec.argv.clone(),
            env,
            cwd: s(&cwd),
            uid: user.uid(),
            gid: user.gid(),
            hostname: spec.hostname.clone(),
            net,
            workspace: has_ws,
            workspace_disk: ws_disk.is_some(),
            home,
            tmpfs_size: tmpfs_sizes(Some(memory)).tmp,
            files,
            stdin: matches!(
                spec.stdio,
                crate::spec::Stdio::Tty
                    | crate::spec::Stdio::Inherit {
                        forward_stdin: true
                    }
            ),
            // A named sandbox: the guest holds its root and serves exec sessions.
            hold: spec.persistent,
            // The executor sets the user's terminal size when it starts the guest.
            tty: (spec.stdio == crate::spec::Stdio::Tty).then_some(DEFAULT_TTY),
            mounts: spec
                .binds
                .iter()
                .enumerate()
                .map(|(i, b)| GuestMount {
                    serial: disk_ro(i),
                    path: s(&b.target),
                    file: false,
                })
                .collect(),
            overlay_disk: overlay_disk.is_some(),
            workspace_slot_disk: slot.is_some() && slot_rw,
        },
        qemu,
        workspace: has_ws.then(|| spec.project_dir.clone()),
        workspace_disk: ws_disk,
        ro_sources: spec.binds.iter().map(|b| b.source.clone()).collect(),
        overlay_disk,
        workspace_slot: slot,
        claim_slot,
        accel: vm.accel,
        memory,
        cpus,
    })
}

/// The guest's resolver is QEMU's (10.0.2.3), which forwards to the sandbox resolver.
fn guest_etc(target: &Path, contents: String, net: GuestNet) -> String {
    if target != Path::new("/etc/resolv.conf") || net == GuestNet::None {
        return contents;
    }
    "# airlock: QEMU's resolver, which asks the sandbox resolver (allowed names only)\nnameserver 10.0.2.3\n".into()
}
