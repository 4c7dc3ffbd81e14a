//! The launch planner: (RunSpec, HostFacts) -> LaunchPlan, or a refusal naming what cannot be
//! enforced. Pure: the container backend executes the plan step by step and decides nothing.

use crate::policy::{NetMode, Profile, WorkspaceMode};
use crate::spec::{Resources, RunSpec, SandboxUser};
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
}

/// A launch plan lowered for one isolation backend. The spec and the admission checks are
/// backend-neutral; each backend has its own pure lowering (`LaunchPlan` is the container's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    Container(LaunchPlan),
}

impl Plan {
    pub fn name(&self) -> &str {
        match self {
            Plan::Container(p) => &p.name,
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
    #[error("[resources] disk cannot be enforced for a named sandbox: its workspace, home and writable layer live on the host's disk, where airlock sets no quota")]
    DiskUnenforceable,
}

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
            Refusal::DiskUnenforceable => "remove `disk` from [resources] for named sandboxes (it bounds the in-memory mounts of `airlock run`), or run the command with `airlock run`",
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

/// The limits of `r` a host with `support` cannot enforce. pids are always enforced: by the
/// cgroup where there is one, and by RLIMIT_NPROC.
pub fn unenforced_limits(r: &Resources, support: &LimitSupport) -> Vec<&'static str> {
    let mut unenforced = Vec::new();
    if r.memory.is_some() && !support.memory {
        unenforced.push("memory");
    }
    if r.cpus.is_some() && !support.cpu {
        unenforced.push("cpus");
    }
    unenforced
}

/// Size of the root tmpfs that holds mount points and the curated /etc.
const ROOT_TMPFS_SIZE: u64 = 4 << 20;
const WORKSPACE: &str = "/workspace";

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

/// Build the launch plan. Pure: same inputs, same plan.
pub fn plan(spec: &RunSpec, host: &HostFacts) -> Result<LaunchPlan, Refusal> {
    if spec.argv.is_empty() != spec.persistent {
        return Err(Refusal::EmptyCommand);
    }
    if spec.net == NetMode::Open && !host.pasta {
        return Err(Refusal::NetModeUnsupported(NetMode::Open));
    }
    if spec.net == NetMode::Filtered && spec.ports.contains(&PROXY_PORT) {
        return Err(Refusal::ReservedPort(PROXY_PORT));
    }
    match spec.workspace {
        WorkspaceMode::Bind if spec.profile == Profile::Restrictive => {
            return Err(Refusal::BindUnderRestrictive)
        }
        WorkspaceMode::Clone if spec.workspace_dir.is_none() => {
            return Err(Refusal::CloneUnsupported)
        }
        _ => {}
    }
    for b in &spec.binds {
        check_target(&b.target)?;
    }

    let rootless = host.uid != 0;
    let inside = spec.user.uid();
    let (uid_map, gid_map) = if rootless {
        (
            vec![IdMap {
                inside,
                outside: host.uid,
                count: 1,
            }],
            vec![IdMap {
                inside,
                outside: host.gid,
                count: 1,
            }],
        )
    } else {
        let m = IdMap {
            inside: 0,
            outside: ROOTFUL_UID_BASE,
            count: ROOTFUL_UID_COUNT,
        };
        (vec![m.clone()], vec![m])
    };
    let owner = (inside, inside);
    // Rootless sandboxes map a single uid: every tmpfs must be owned by it.
    let sys_owner = if rootless { owner } else { (0, 0) };
    let home = p(spec.user.home());
    if spec.persistent && spec.resources.disk.is_some() {
        return Err(Refusal::DiskUnenforceable);
    }
    let sizes = tmpfs_sizes(tmpfs_budget(&spec.resources));

    let mut unenforced = Vec::new();
    let r = &spec.resources;
    let mut limits = spec.resources;
    if r.memory.is_some() && !host.limits.memory {
        if spec.defaulted.memory {
            // A default the host cannot enforce: left out, not reported (nobody asked).
            limits.memory = None;
        } else {
            unenforced.push("memory");
        }
    }
    // pids are always enforced: by the cgroup where there is one, and by RLIMIT_NPROC.
    if r.cpus.is_some() && !host.limits.cpu {
        unenforced.push("cpus");
    }
    if spec.require_limits && !unenforced.is_empty() {
        return Err(Refusal::LimitsUnenforceable(unenforced));
    }

    let mut m = vec![MountStep::Tmpfs {
        target: p("/"),
        mode: 0o755,
        size: Some(ROOT_TMPFS_SIZE),
        owner: sys_owner,
        noexec: false,
    }];
    for (name, entry) in &host.root_entries {
        let target = Path::new("/").join(name);
        m.push(match entry {
            RootEntry::Dir => MountStep::BindRo {
                source: target.clone(),
                target,
            },
            RootEntry::Symlink(to) => MountStep::Symlink {
                target,
                points_to: to.clone(),
            },
        });
    }
    m.push(MountStep::Dir {
        target: p("/etc"),
        mode: 0o755,
    });
    m.extend(etc_files(spec, &home));
    for e in &host.etc_entries {
        let path = Path::new("/etc").join(e);
        m.push(MountStep::BindRo {
            source: path.clone(),
            target: path,
        });
    }
    m.extend(profile_d(&host.profile_d));
    m.push(MountStep::Proc { target: p("/proc") });
    for ro in [
        "/proc/sys",
        "/proc/sysrq-trigger",
        "/proc/irq",
        "/proc/bus",
        "/proc/fs",
    ] {
        m.push(MountStep::ReadOnly { target: p(ro) });
    }
    m.push(MountStep::Sysfs { target: p("/sys") });
    m.push(MountStep::Tmpfs {
        target: p("/dev"),
        mode: 0o755,
        size: Some(1 << 20),
        owner: sys_owner,
        noexec: true,
    });
    for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
        m.push(MountStep::Device { name: dev.into() });
    }
    m.push(MountStep::Devpts {
        target: p("/dev/pts"),
    });
    m.push(MountStep::Symlink {
        target: p("/dev/ptmx"),
        points_to: p("pts/ptmx"),
    });
    m.push(MountStep::Tmpfs {
        target: p("/dev/shm"),
        mode: 0o1777,
        size: sizes.shm,
        owner: sys_owner,
        noexec: false,
    });
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        m.push(MountStep::Symlink {
            target: Path::new("/dev").join(link),
            points_to: p(to),
        });
    }
    m.push(MountStep::Tmpfs {
        target: p("/tmp"),
        mode: 0o1777,
        size: sizes.tmp,
        owner: sys_owner,
        noexec: false,
    });
    m.push(MountStep::Tmpfs {
        target: p("/run"),
        mode: 0o755,
        size: sizes.run,
        owner: sys_owner,
        noexec: false,
    });
    match &spec.home_dir {
        // A named sandbox keeps $HOME on disk (its folder's `home`, owned by the sandbox user).
        Some(dir) => m.push(MountStep::BindRw {
            source: dir.clone(),
            target: home.clone(),
            idmap: false,
        }),
        None => m.push(MountStep::Tmpfs {
            target: home.clone(),
            mode: 0o700,
            size: sizes.home,
            owner,
            noexec: false,
        }),
    }

    let idmap = !rootless;
    let mut writable = vec![p("/tmp"), p("/run"), p("/dev/shm"), home.clone()];
    let ws = p(WORKSPACE);
    match spec.workspace {
        WorkspaceMode::Overlay => {
            let upper = if host.tmpfs_xattr && !spec.persistent {
                UpperStore::Tmpfs {
                    size: sizes.upper,
                    owner: sys_owner,
                }
            } else {
                UpperStore::Disk
            };
            m.push(MountStep::Overlay {
                lower: spec.project_dir.clone(),
                target: ws.clone(),
                idmap,
                upper,
            });
            writable.push(ws.clone());
        }
        WorkspaceMode::Bind => {
            m.push(MountStep::BindRw {
                source: spec.project_dir.clone(),
                target: ws.clone(),
                idmap,
            });
            writable.push(ws.clone());
        }
        WorkspaceMode::Clone => {
            // The clone is the sandbox's own, already owned by the sandbox user.
            if let Some(dir) = &spec.workspace_dir {
                m.push(MountStep::BindRw {
                    source: dir.clone(),
                    target: ws.clone(),
                    idmap: false,
                });
                writable.push(ws.clone());
            }
        }
        WorkspaceMode::None => {}
    }
    if spec.workspace == WorkspaceMode::Bind {
        // Before the protections below, so they sit on top of the pinned mount.
        m.push(MountStep::Pin {
            target: ws.join(".git"),
        });
        for rel in BIND_PROTECTED_PATHS {
            m.push(MountStep::Protect {
                target: ws.join(rel),
            });
        }
    }
    if spec.workspace != WorkspaceMode::None {
        let mut rels: Vec<&str> = protected_paths(spec.workspace).collect();
        rels.extend(spec.protected.iter().map(String::as_str));
        for rel in rels {
            m.push(MountStep::Protect {
                target: ws.join(rel),
            });
        }
    }
    for b in &spec.binds {
        if b.writable {
            m.push(MountStep::BindRw {
                source: b.source.clone(),
                target: b.target.clone(),
                idmap,
            });
            writable.push(b.target.clone());
        } else {
            m.push(MountStep::BindRo {
                source: b.source.clone(),
                target: b.target.clone(),
            });
        }
    }
    m.push(MountStep::RootReadOnly);

    let has_ws = spec.workspace != WorkspaceMode::None;
    let cwd = spec
        .workdir
        .clone()
        .unwrap_or(if has_ws { ws } else { home });

    Ok(LaunchPlan {
        name: spec.name.clone(),
        hostname: spec.hostname.clone(),
        rootless,
        uid_map,
        gid_map,
        user: (inside, inside),
        mounts: m,
        cwd,
        env: with_proxy_env(spec),
        argv: spec.argv.clone(),
        writable_paths: writable,
        limits,
        unenforced_limits: unenforced.iter().map(|s| s.to_string()).collect(),
        net: spec.net,
        egress: (spec.net == NetMode::Filtered).then(|| EgressPlan {
            ports: spec.ports.clone(),
            proxy_port: PROXY_PORT,
            domains: spec.domains.clone(),
        }),
        rlimit_nofile: 65536,
        rlimit_nproc: spec.resources.pids,
        summarize_changes: spec.workspace == WorkspaceMode::Overlay && !spec.persistent,
    })
}

/// Filtered sandboxes also advertise the explicit proxy, for tools that prefer one (the
/// transparent path enforces the same policy for everything that ignores it).
fn with_proxy_env(spec: &RunSpec) -> Vec<(String, String)> {
    let mut env = spec.env.clone();
    if spec.net == NetMode::Filtered {
        let url = format!("http://127.0.0.1:{PROXY_PORT}");
        for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            if !env.iter().any(|(ek, _)| ek == k) {
                env.push((k.into(), url.clone()));
            }
        }
        for k in ["NO_PROXY", "no_proxy"] {
            if !env.iter().any(|(ek, _)| ek == k) {
                env.push((k.into(), "localhost,127.0.0.1,::1".into()));
            }
        }
    }
    env
}

fn check_target(t: &Path) -> Result<(), Refusal> {
    if !t.is_absolute() {
        return Err(Refusal::BadTarget(t.into(), "not an absolute path"));
    }
    if t.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(Refusal::BadTarget(t.into(), "contains `..`"));
    }
    if t == Path::new("/") {
        return Err(Refusal::BadTarget(t.into(), "cannot replace the root"));
    }
    for reserved in ["/proc", "/sys", "/dev"] {
        if t.starts_with(reserved) {
            return Err(Refusal::BadTarget(
                t.into(),
                "reserved for the sandbox's own kernel filesystems",
            ));
        }
    }
    Ok(())
}

/// The generated files of the curated /etc.
/// The drop-in that keeps agent tools reachable from login shells: `/etc/profile` resets PATH
/// (Codex runs every command through `sh -lc`), then sources /etc/profile.d/*.sh.
pub const PROFILE_DROP_IN: &str = "airlock.sh";

/// /etc/profile.d: a directory of ours with the host's entries and airlock's drop-in, which
/// puts the agent tools directory back on PATH where it exists (agent sandboxes).
fn profile_d(host_entries: &[(String, RootEntry)]) -> Vec<MountStep> {
    let dir = Path::new("/etc/profile.d");
    let tools = crate::agent::adapter::TOOLS_DIR;
    let mut m = vec![
        MountStep::Dir {
            target: dir.to_path_buf(),
            mode: 0o755,
        },
        MountStep::File {
            target: dir.join(PROFILE_DROP_IN),
            contents: format!(
                "# airlock: login shells reset PATH; keep the agent tools (report) on it.\n\
                 if [ -d {tools} ]; then\n  case \":$PATH:\" in\n    *:{tools}:*) ;;\n    \
                 *) PATH=\"{tools}:$PATH\"; export PATH ;;\n  esac\nfi\n"
            ),
            mode: 0o644,
        },
    ];
    for (name, entry) in host_entries {
        if name == PROFILE_DROP_IN || name.contains('/') || name.starts_with('.') {
            continue;
        }
        let target = dir.join(name);
        m.push(match entry {
            RootEntry::Dir => MountStep::BindRo {
                source: target.clone(),
                target,
            },
            RootEntry::Symlink(to) => MountStep::Symlink {
                target,
                points_to: to.clone(),
            },
        });
    }
    m
}

fn etc_files(spec: &RunSpec, home: &Path) -> Vec<MountStep> {
    let u = SandboxUser::AGENT_UID;
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    passwd.push_str(&format!(
        "agent:x:{u}:{u}:airlock sandbox user:/home/agent:/bin/sh\n"
    ));
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    let group = format!("root:x:0:\ntty:x:5:\nagent:x:{u}:\nnogroup:x:65534:\n");
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
        spec.hostname
    );
    let _ = home;
    let file = |name: &str, contents: String| MountStep::File {
        target: Path::new("/etc").join(name),
        contents,
        mode: 0o644,
    };
    vec![
        file("passwd", passwd),
        file("group", group),
        file("hosts", hosts),
        file("hostname", format!("{}\n", spec.hostname)),
        // No resolver inside with --net off; filtered mode will point this at the sandbox resolver.
        file(
            "resolv.conf",
            match spec.net {
                NetMode::Off => "# airlock: no DNS in this sandbox (network off)\n".into(),
                NetMode::Open => format!("# airlock: open network, the host's resolver via the user-mode stack\nnameserver {OPEN_DNS}\n"),
                _ => "# airlock: the sandbox resolver answers allowed names only\nnameserver 127.0.0.1\noptions edns0\n".into(),
            },
        ),
        file("nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n".into()),
    ]
}

#[cfg(test)]
mod tests;
