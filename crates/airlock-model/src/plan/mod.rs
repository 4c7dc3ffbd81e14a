//! The launch planner: (RunSpec, HostFacts) -> Plan, or a refusal naming what cannot be
//! enforced. Pure. [`admit`] checks what is backend-neutral (can this build and host provide
//! the spec's backend and root filesystem?); each backend then has its own lowering
//! (`container::lower` -> [`LaunchPlan`], which the container backend executes step by step,
//! deciding nothing).

use crate::policy::{BackendKind, NetMode, WorkspaceMode};
use crate::spec::{Resources, RootFs, RunSpec};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// First host uid of the range a root-run sandbox maps to: inside uid N is host uid BASE+N.
/// Far above ordinary users and /etc/subuid ranges, so root inside owns nothing on the host.
pub const ROOTFUL_UID_BASE: u32 = 0x6000_0000;
/// Size of the rootful mapping (inside uids 0..65535).
pub const ROOTFUL_UID_COUNT: u32 = 65536;

/// Facts about the host the planner needs. Gathered by the backend (cheap: a few lstat calls).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// Effective uid/gid of the airlock process.
    pub uid: u32,
    pub gid: u32,
    /// Top-level root entries to expose (`usr`, `bin`, `lib64`, …) and what they are on the host.
    pub root_entries: Vec<(String, RootEntry)>,
    /// Entries of the host's /etc that exist and are on the curated allowlist.
    pub etc_entries: Vec<String>,
    /// Entries of the host's /etc/profile.d (`Dir`: bound read-only, file or directory;
    /// `Symlink`: recreated as the same link, resolved inside).
    #[serde(default)]
    pub profile_d: Vec<(String, RootEntry)>,
    /// Owner (uid, gid) of the project directory.
    pub project_owner: (u32, u32),
    /// Which cgroup limits this host can enforce for this user.
    pub limits: LimitSupport,
    /// tmpfs supports user.* xattrs (Linux >= 6.6): overlay upper layers can live in memory.
    pub tmpfs_xattr: bool,
    /// pasta (user-mode networking, from passt) is installed: open mode is possible.
    pub pasta: bool,
    /// The backends and root filesystems this build and host can provide.
    #[serde(default)]
    pub offer: Offer,
    /// The microVM backend's findings (kernel, QEMU, acceleration); None where it was not
    /// checked or is unavailable.
    #[serde(default)]
    pub vm: Option<VmFacts>,
    /// The spec's image, resolved in the local store (None for the host root filesystem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Box<ImageRoot>>,
}

/// An image found in the store: what the planner lowers an image root filesystem to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRoot {
    /// `docker.io/library/busybox:1.36@sha256:…`
    pub reference: String,
    /// The unpacked layer directories, top layer first (overlay's lowerdir order).
    pub layers: Vec<PathBuf>,
    /// The image's /etc/passwd and /etc/group, when it has them (kept, with airlock's users
    /// added, so the image's own users still resolve).
    pub passwd: Option<String>,
    pub group: Option<String>,
    /// The image as one read-only disk for a microVM's root (built once per layer set by the
    /// microVM backend's preparation; None for the container backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_disk: Option<PathBuf>,
}

/// What a build and host can provide, whatever the policy: the isolation backends, and whether
/// root filesystems from images are possible (the host's own always are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub backends: Vec<BackendKind>,
    pub images: bool,
}

impl Default for Offer {
    /// The container backend on the host's root filesystem: what every build provides.
    fn default() -> Offer {
        Offer {
            backends: vec![BackendKind::Container],
            images: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootEntry {
    Dir,
    Symlink(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LimitSupport {
    pub memory: bool,
    pub pids: bool,
    pub cpu: bool,
}

/// /etc entries bound read-only from the host when present. Never shadow, gshadow, sudoers, ssh
/// keys, machine credentials: only what programs need to run, resolve names and verify TLS.
pub const ETC_ALLOWLIST: &[&str] = &[
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "crypto-policies",
    "debian_version",
    "environment",
    "gai.conf",
    "host.conf",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "locale.conf",
    "localtime",
    "login.defs",
    "mime.types",
    "os-release",
    "pki",
    "profile",
    "protocols",
    "services",
    "ssl",
    "terminfo",
    "timezone",
    "vim",
];

/// Workspace paths the sandboxed agent must not rewrite (SPEC §7): its own rules and git's.
/// A clone workspace leaves git's own out (`SANDBOX_OWNED_IN_CLONE`), see `protected_paths`.
pub const PROTECTED_PATHS: &[&str] = &[
    ".git/hooks",
    ".git/config",
    ".gitmodules",
    ".claude",
    ".codex",
    ".gemini",
    ".mcp.json",
    ".vscode",
    ".idea",
    ".envrc",
    "airlock.toml",
];

/// Git internals that only matter where the host uses the repository. A clone workspace's
/// repository is the sandbox's own: the host never runs git in it (diff, fetch and sync read
/// its objects as data through a review repository of airlock's), so its config and hooks only
/// ever act inside the sandbox — and the agent needs `git config` there.
pub const SANDBOX_OWNED_IN_CLONE: &[&str] = &[".git/hooks", ".git/config"];

/// The workspace paths made read-only for a workspace mode: all of `PROTECTED_PATHS` where the
/// host reads the repository (overlay, bind), all but git's own internals in a clone.
pub fn protected_paths(mode: WorkspaceMode) -> impl Iterator<Item = &'static str> {
    PROTECTED_PATHS
        .iter()
        .copied()
        .filter(move |p| mode != WorkspaceMode::Clone || !SANDBOX_OWNED_IN_CLONE.contains(p))
}

/// Top-level host directories considered for the `host` image.
pub const ROOT_CANDIDATES: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// How uids map between the sandbox's user namespace and the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// Where an overlay workspace's writable layer lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpperStore {
    /// A tmpfs inside the sandbox: bounded by `size` and the memory limit, gone with the sandbox.
    Tmpfs {
        size: Option<u64>,
        owner: (u32, u32),
    },
    /// The run directory on the host's disk (kernels whose tmpfs lacks user xattrs, < 6.6,
    /// where overlayfs could not mark directories opaque on a tmpfs upper layer).
    Disk,
}

/// One step of building the sandbox's root filesystem. Targets are absolute paths inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountStep {
    /// A tmpfs; `owner` is the inside uid/gid owning its root.
    Tmpfs {
        target: PathBuf,
        mode: u32,
        size: Option<u64>,
        owner: (u32, u32),
        noexec: bool,
    },
    /// A read-only recursive bind of a host path (nosuid, nodev).
    BindRo {
        source: PathBuf,
        target: PathBuf,
    },
    /// A writable bind of a host path (nosuid, nodev); `idmap` = files owned by the host owner
    /// appear owned by the sandbox user (root-run sandboxes only).
    BindRw {
        source: PathBuf,
        target: PathBuf,
        idmap: bool,
    },
    /// A copy-on-write overlay of a host directory; changes land in the upper layer.
    Overlay {
        lower: PathBuf,
        target: PathBuf,
        idmap: bool,
        upper: UpperStore,
    },
    Symlink {
        target: PathBuf,
        points_to: PathBuf,
    },
    Dir {
        target: PathBuf,
        mode: u32,
    },
    File {
        target: PathBuf,
        contents: String,
        mode: u32,
    },
    /// Bind a host device node (from host /dev) onto an empty file.
    Device {
        name: String,
    },
    Proc {
        target: PathBuf,
    },
    /// Re-bind an existing path read-only over itself (e.g. /proc/sys).
    ReadOnly {
        target: PathBuf,
    },
    Sysfs {
        target: PathBuf,
    },
    Devpts {
        target: PathBuf,
    },
    /// Make an existing path of the workspace read-only (agent configuration, git internals);
    /// skipped when it does not exist or any component is a symlink.
    Protect {
        target: PathBuf,
    },
    /// Make an existing workspace path a mount point of itself, access unchanged, so that it
    /// cannot be renamed, removed or replaced from inside (EBUSY) — bind mode pins `.git`, so
    /// its read-only config and hooks cannot travel away with a rename. Skipped like Protect.
    Pin {
        target: PathBuf,
    },
    /// Make the root tmpfs read-only once everything is in place.
    RootReadOnly,
    /// Stage one unpacked image layer (a host directory, read-only) for [`MountStep::ImageRoot`].
    ImageLayer {
        source: PathBuf,
    },
    /// The image's root: an overlay of the staged layers (top first) with a small writable
    /// tmpfs upper layer (mount points, airlock's /etc files), mounted with `userxattr`. Every
    /// later step builds beneath it, and it is what pivot_root enters.
    ImageRoot {
        upper_size: u64,
        owner: (u32, u32),
    },
}

/// Extra workspace paths made read-only when the workspace is the host's own checkout (bind):
/// what git consults on the host that the sandbox could otherwise rewrite there
/// (`info/attributes`, `info/grafts`, `info/exclude`).
pub const BIND_PROTECTED_PATHS: &[&str] = &[".git/info"];

/// The complete, executable description of one sandbox launch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchPlan {
    pub name: String,
    pub hostname: String,
    pub rootless: bool,
    pub uid_map: Vec<IdMap>,
    pub gid_map: Vec<IdMap>,
    /// uid/gid inside that runs the command.
    pub user: (u32, u32),
    pub mounts: Vec<MountStep>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub argv: Vec<String>,
    /// Paths the command may write (Landlock); everything else is read/execute only.
    pub writable_paths: Vec<PathBuf>,
    pub limits: Resources,
    /// Limits asked for that this host cannot enforce (reported, or refused with --require-limits).
    pub unenforced_limits: Vec<String>,
    pub net: NetMode,
    /// Filtered mode: what the sandbox's network namespace listens on (handed to the host side).
    pub egress: Option<EgressPlan>,
    pub rlimit_nofile: u64,
    /// RLIMIT_NPROC for the command: counted per user namespace, so it caps this sandbox's
    /// processes even where no pids cgroup is available (rootless without delegation).
    pub rlimit_nproc: Option<u64>,
    /// Whether to report what the command changed in the overlay workspace.
    pub summarize_changes: bool,
    /// Host paths a step binds that are opened without following any symbolic link: the
    /// user's `--ro`/`--rw`/`[mounts]` sources and the project directory. A sandbox may write
    /// where such a path lies (one source inside another's writable bind) and plant a link
    /// there for its next start; the path was canonical when it was checked, so a link in it
    /// now is refused, never followed. (The host's own `/usr`, `/etc`… are followed.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sealed_sources: Vec<PathBuf>,
    /// The command runs without transparent huge pages (`PR_SET_THP_DISABLE`, inherited by
    /// whatever it starts): a microVM's QEMU under TCG, whose guest RAM would otherwise be made
    /// of free 2 MiB blocks — cold on a host that reports free memory to its hypervisor.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_huge_pages: bool,
    /// The command starts with descriptor 3 open on a memory file (memfd) of `size` bytes
    /// holding the data of `from` (a file inside the sandbox, sparse: its holes stay zero
    /// and cost nothing): a microVM's QEMU restored from a boot snapshot maps it as the guest's
    /// RAM. Filled by the sandbox's own process, so the memory is its cgroup's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_fd: Option<RamFile>,
}

/// See [`LaunchPlan::ram_fd`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RamFile {
    pub from: PathBuf,
    pub size: u64,
}

/// A launch plan lowered for one isolation backend. The spec and the admission checks are
/// backend-neutral; each backend has its own pure lowering (`LaunchPlan` is the container's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(clippy::large_enum_variant)] // one plan per launch; the container's is not boxed for its many users
pub enum Plan {
    Container(LaunchPlan),
    Microvm(Box<VmPlan>),
}

impl Plan {
    pub fn name(&self) -> &str {
        match self {
            Plan::Container(p) => &p.name,
            Plan::Microvm(v) => &v.qemu.name,
        }
    }
    /// Limits asked for that this host cannot enforce (reported, or refused with
    /// --require-limits).
    pub fn unenforced_limits(&self) -> &[String] {
        match self {
            Plan::Container(p) => &p.unenforced_limits,
            Plan::Microvm(v) => &v.qemu.unenforced_limits,
        }
    }
    /// Whether it runs without root on the host (limits then need a delegated cgroup).
    pub fn rootless(&self) -> bool {
        match self {
            Plan::Container(p) => p.rootless,
            Plan::Microvm(v) => v.qemu.rootless,
        }
    }
}

impl LaunchPlan {
    /// The overlay workspace step, if any.
    pub fn overlay(&self) -> Option<(&Path, &UpperStore)> {
        self.mounts.iter().find_map(|m| match m {
            MountStep::Overlay { lower, upper, .. } => Some((lower.as_path(), upper)),
            _ => None,
        })
    }
}

/// Listeners of a filtered sandbox's network namespace. Every destination address is local
/// inside (any-IP routes on lo), so these catch every connection and DNS query the sandbox makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressPlan {
    /// Transparent TCP listeners (IPv4 and IPv6), one per allowed port.
    pub ports: Vec<u16>,
    /// The explicit HTTP proxy (HTTP_PROXY / HTTPS_PROXY) on 127.0.0.1.
    pub proxy_port: u16,
    /// Allowed domain patterns, for the host-side policy.
    pub domains: Vec<String>,
}

/// The explicit proxy's port inside filtered sandboxes.
pub const PROXY_PORT: u16 = 3128;

/// Where a sandbox with injected secrets finds the CA bundle that trusts its interception CA
/// (the system's roots plus the CA; PID 1 writes it on the sandbox's /run).
pub const CA_BUNDLE: &str = "/run/airlock-tls/ca-bundle.pem";

/// The variables TLS clients read a CA bundle from, set to [`CA_BUNDLE`] in sandboxes with
/// injected secrets (over any value given: a client trusting another bundle would refuse the
/// interception): OpenSSL and what builds on it (curl, Python's ssl, Ruby, git), Node,
/// requests, curl, git, the AWS SDKs, Deno, Codex.
pub const CA_BUNDLE_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "AWS_CA_BUNDLE",
    "DENO_CERT",
    "CODEX_CA_CERTIFICATE",
];

/// Point every [`CA_BUNDLE_VARS`] variable of `env` at [`CA_BUNDLE`] (over any value given).
pub fn set_ca_bundle_vars(env: &mut Vec<(String, String)>) {
    env.retain(|(k, _)| !CA_BUNDLE_VARS.contains(&k.as_str()));
    for k in CA_BUNDLE_VARS {
        env.push((k.to_string(), CA_BUNDLE.into()));
    }
}

/// Open mode: the resolver address inside (TEST-NET-2, never routed anywhere); the user-mode
/// network stack forwards queries to it to the host's resolver.
pub const OPEN_DNS: &str = "198.51.100.53";

/// The metadata floor, held in every mode: (address, prefix length) made unreachable inside.
pub const METADATA_FLOOR: &[(&str, u8)] = &[
    ("169.254.0.0", 16),
    ("100.100.100.200", 32),
    ("fd00:ec2::254", 128),
];

/// Why a spec cannot be launched as asked. Fail closed: nothing is weakened silently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "network mode `{0}` is not available yet in this build; `off` and `filtered` are enforced"
    )]
    NetModeUnsupported(NetMode),
    #[error("--workspace bind is refused by the restrictive profile")]
    BindUnderRestrictive,
    #[error("limits cannot be enforced on this host: {}", .0.join(", "))]
    LimitsUnenforceable(Vec<&'static str>),
    #[error("workspace mode `clone` needs a named sandbox (its clone and branch outlive the run)")]
    CloneUnsupported,
    #[error("mount target {0} is not allowed: {1}")]
    BadTarget(PathBuf, &'static str),
    #[error("port {0} is reserved for the sandbox's explicit HTTP proxy")]
    ReservedPort(u16),
    #[error("the command is empty")]
    EmptyCommand,
    #[error("the {0} backend is not available in this build or on this host")]
    BackendUnavailable(BackendKind),
    #[error("image {0:?} is not available: this build runs sandboxes on the host's root filesystem only")]
    RootFsUnavailable(String),
    #[error("the microvm backend does not support {0} yet")]
    MicrovmUnsupported(&'static str),
    #[error("--rw mounts are refused on the microvm backend: a microVM gets no writable share of the host (its --ro mounts are snapshots)")]
    MicrovmWritableMount,
    #[error("image {0:?} is not in the local image store")]
    ImageNotInStore(String),
    #[error("image root filesystems need Linux >= 6.6 (user xattrs on tmpfs for the overlay's upper layer)")]
    ImageNeedsTmpfsXattr,
    #[error("[resources] disk cannot be enforced for a named sandbox: its workspace, home and writable layer live on the host's disk, where airlock sets no quota")]
    DiskUnenforceable,
    #[error("[resources] disk = {0} bytes is too small for a microVM's writable-layer disk (an ext4 disk of that size; at least {MIN_VM_DISK} bytes)")]
    DiskTooSmall(u64),
}

/// The smallest `disk` a microVM takes: its writable layers are an ext4 disk of that size
/// (mkfs.ext4 makes none below 256 KiB, and the layers' directories need room).
pub const MIN_VM_DISK: u64 = 1 << 20;

impl Refusal {
    pub fn hint(&self) -> &'static str {
        match self {
            Refusal::NetModeUnsupported(_) => "install passt (it provides pasta), or use --net filtered with --allow DOMAIN",
            Refusal::BindUnderRestrictive => "use --workspace overlay, or --profile moderate/permissive",
            Refusal::LimitsUnenforceable(_) => {
                "run as root, or give airlock a delegated cgroup (systemd-run --user --scope -p Delegate=yes airlock …); \
                 or drop --require-limits to run with the limits unenforced"
            }
            Refusal::CloneUnsupported => "use `airlock run --keep` or `airlock create NAME`, or --workspace overlay for a throwaway copy",
            Refusal::BadTarget(..) => "mount targets must be absolute paths outside /proc, /sys, /dev and not `/`",
            Refusal::EmptyCommand => "give the command after `--`, e.g. airlock run -- echo hello",
            Refusal::ReservedPort(_) => "remove that port from [network] ports / --allow",
            Refusal::BackendUnavailable(_) => "use backend = \"container\" (or drop --backend); run `airlock doctor` to see what this host supports",
            Refusal::RootFsUnavailable(_) => "use image = \"host\" (the default); run `airlock doctor` to see what this host supports",
            Refusal::MicrovmUnsupported(_) => "use the container backend for this (drop --backend microvm)",
            Refusal::MicrovmWritableMount => "use --ro for a read-only snapshot; for work that must come back, a clone workspace (a named sandbox in a git repository: `airlock diff`/`fetch`) or `airlock cp NAME:PATH DEST`; or the container backend",
            Refusal::ImageNotInStore(_) => "pull it first: airlock image pull IMAGE (`airlock image ls` lists the store)",
            Refusal::ImageNeedsTmpfsXattr => "use image = \"host\" on this kernel, or upgrade to Linux 6.6 or later",
            Refusal::DiskUnenforceable => "remove `disk` from [resources] for named sandboxes (it bounds the in-memory mounts of `airlock run`), run the command with `airlock run`, or use --backend microvm (its writable layer is a disk of that size)",
            Refusal::DiskTooSmall(_) => "give at least 1M (e.g. --disk 256M), or leave `disk` out for tmpfs layers sized from the VM's memory",
        }
    }
}

/// The budget of a sandbox's writable tmpfs mounts, all together: `[resources] disk` when set
/// (`run` only), else the memory limit (tmpfs pages are charged to the memory cgroup anyway, and
/// the sizes hold where no cgroup does). None: no bound (the kernel's default per mount).
pub fn tmpfs_budget(r: &Resources) -> Option<u64> {
    r.disk.or(r.memory).map(|b| b.0)
}

/// How the budget is shared out, in sixteenths: the overlay workspace's upper layer 6, /tmp 4,
/// $HOME 4, /dev/shm 1, /run 1 — 16 in all, so the mounts can never hold more than the budget
/// together (each gets at least 1 MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TmpfsSizes {
    pub upper: Option<u64>,
    pub tmp: Option<u64>,
    pub home: Option<u64>,
    pub shm: Option<u64>,
    pub run: Option<u64>,
}

pub fn tmpfs_sizes(budget: Option<u64>) -> TmpfsSizes {
    let share = |n: u64| budget.map(|b| (b / 16 * n).max(1 << 20));
    TmpfsSizes {
        upper: share(6),
        tmp: share(4),
        home: share(4),
        shm: share(1),
        run: share(1),
    }
}

/// The limits of `spec` a host with `support` cannot enforce and that were asked for: a
/// default the host cannot enforce is left out quietly, as the container lowering leaves it
/// out ([`left_out_default_memory`]). pids are always enforced: by the cgroup where there is
/// one, and by RLIMIT_NPROC.
pub fn unenforced_limits(spec: &RunSpec, support: &LimitSupport) -> Vec<&'static str> {
    let r = &spec.resources;
    let mut unenforced = Vec::new();
    if r.memory.is_some() && !support.memory && !spec.defaulted.memory {
        unenforced.push("memory");
    }
    if r.cpus.is_some() && !support.cpu {
        unenforced.push("cpus");
    }
    unenforced
}

/// Whether `spec`'s memory limit is airlock's default that a host with `support` cannot
/// enforce: left out of the sandbox, not reported as a limit it has.
pub fn left_out_default_memory(spec: &RunSpec, support: &LimitSupport) -> bool {
    spec.resources.memory.is_some() && spec.defaulted.memory && !support.memory
}

/// The generated files of the curated /etc.
/// The drop-in that keeps agent tools reachable from login shells: `/etc/profile` resets PATH
/// (Codex runs every command through `sh -lc`), then sources /etc/profile.d/*.sh.
pub const PROFILE_DROP_IN: &str = "airlock.sh";

/// The planner: admit the spec for this host and build (backend-neutral checks first), then
/// lower it for its backend. Pure: same inputs, same plan.
pub fn plan(spec: &RunSpec, host: &HostFacts) -> Result<Plan, Refusal> {
    admit(spec, &host.offer)?;
    match spec.backend {
        BackendKind::Container => container::lower(spec, host).map(Plan::Container),
        BackendKind::Microvm => microvm::lower(spec, host).map(|v| Plan::Microvm(Box::new(v))),
    }
}

/// Whether this build and host can provide the spec's backend and root filesystem at all.
/// Also called on its own where a spec is accepted before it is ever planned (`create`).
pub fn admit(spec: &RunSpec, offer: &Offer) -> Result<(), Refusal> {
    if !offer.backends.contains(&spec.backend) {
        return Err(Refusal::BackendUnavailable(spec.backend));
    }
    if spec.backend == BackendKind::Microvm {
        microvm::check_disk(spec)?;
    }
    match &spec.rootfs {
        RootFs::Host => Ok(()),
        RootFs::Image { .. } if offer.images => Ok(()),
        image @ RootFs::Image { .. } => Err(Refusal::RootFsUnavailable(image.label())),
    }
}

mod container;
pub use container::{
    bind_steps, check_binds, check_target, lower, name_files, sealed_sources, workspace_steps,
};
pub mod microvm;
pub use microvm::{Accel, VmFacts, VmPlan};

#[cfg(test)]
mod tests;
