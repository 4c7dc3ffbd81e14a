//! The container backend's lowering: (RunSpec, HostFacts) -> LaunchPlan, the complete,
//! ordered description of mount steps, id maps, writable roots and limits that
//! `airlock-sandbox`'s container backend executes without deciding anything.

use super::*;
use crate::policy::{NetMode, Profile, WorkspaceMode};
use crate::spec::{BindSpec, RunSpec, SandboxUser};
use std::path::{Path, PathBuf};

/// Size of the root tmpfs that holds mount points and the curated /etc.
const ROOT_TMPFS_SIZE: u64 = 4 << 20;
/// Size of an image root's writable upper layer: mount points and airlock's /etc files only
/// (the root is read-only once built).
pub const IMAGE_UPPER_SIZE: u64 = 8 << 20;
const WORKSPACE: &str = "/workspace";

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

/// The container lowering of an admitted spec. Pure: same inputs, same plan.
pub fn lower(spec: &RunSpec, host: &HostFacts) -> Result<LaunchPlan, Refusal> {
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
    check_binds(&spec.binds)?;

    let rootless = host.uid != 0;
    // Rootless: the sandbox user (agent, root or an image's own user) is the invoking user;
    // root-run: the whole sandbox range, so the user is its unprivileged host id there.
    let (inside, inside_gid) = (spec.user.uid(), spec.user.gid());
    let (uid_map, gid_map) = if rootless {
        (
            vec![IdMap {
                inside,
                outside: host.uid,
                count: 1,
            }],
            vec![IdMap {
                inside: inside_gid,
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
    let owner = (inside, inside_gid);
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

    let image = match &spec.rootfs {
        crate::spec::RootFs::Host => None,
        image @ crate::spec::RootFs::Image { .. } => {
            let found = host
                .image
                .as_deref()
                .ok_or_else(|| Refusal::ImageNotInStore(image.label()))?;
            if !host.tmpfs_xattr {
                return Err(Refusal::ImageNeedsTmpfsXattr);
            }
            Some(found)
        }
    };
    let mut m = vec![MountStep::Tmpfs {
        target: p("/"),
        mode: 0o755,
        size: Some(ROOT_TMPFS_SIZE),
        owner: sys_owner,
        noexec: false,
    }];
    // An image: the tmpfs above only stages the layers; the overlay of them is the root.
    if let Some(img) = image {
        for l in &img.layers {
            m.push(MountStep::ImageLayer { source: l.clone() });
        }
        m.push(MountStep::ImageRoot {
            upper_size: IMAGE_UPPER_SIZE,
            owner: sys_owner,
        });
    }
    let host_root_entries: &[(String, RootEntry)] = if image.is_some() {
        &[]
    } else {
        &host.root_entries
    };
    for (name, entry) in host_root_entries {
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
    m.extend(etc_files(spec, image));
    // An image brings its own /etc: the host's stays out.
    let (etc_entries, profile_entries): (&[String], &[(String, RootEntry)]) = match image {
        Some(_) => (&[], &[]),
        None => (&host.etc_entries, &host.profile_d),
    };
    for e in etc_entries {
        let path = Path::new("/etc").join(e);
        m.push(MountStep::BindRo {
            source: path.clone(),
            target: path,
        });
    }
    m.extend(profile_d(profile_entries));
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

    let mut writable = vec![p("/tmp"), p("/run"), p("/dev/shm"), home.clone()];
    let ws = p(WORKSPACE);
    let (steps, ws_writable) = workspace_steps(spec, rootless, host.tmpfs_xattr);
    m.extend(steps);
    writable.extend(ws_writable);
    if spec.workspace == WorkspaceMode::None && spec.workspace_slot {
        // A pool member: the claim attaches its workspace here.
        m.push(MountStep::Dir {
            target: ws.clone(),
            mode: 0o755,
        });
        writable.push(ws.clone());
    }
    let (steps, bind_writable) = bind_steps(&spec.binds, rootless);
    m.extend(steps);
    writable.extend(bind_writable);
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
        user: owner,
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
        no_huge_pages: false,
        ram_fd: None,
        sealed_sources: sealed_sources(spec),
    })
}

/// [`LaunchPlan::sealed_sources`] of `spec`: its binds' sources, and its project directory
/// when it has a workspace.
pub fn sealed_sources(spec: &RunSpec) -> Vec<PathBuf> {
    let project = matches!(spec.workspace, WorkspaceMode::Overlay | WorkspaceMode::Bind)
        .then(|| spec.project_dir.clone());
    spec.binds
        .iter()
        .map(|b| b.source.clone())
        .chain(project)
        .collect()
}

/// The workspace's mount steps of `spec` (its overlay or bind at /workspace, and the protected
/// paths over it) and the writable roots they add. The cold lowering puts them in the plan;
/// a warm-pool claim attaches the same steps to a member's empty `/workspace`.
pub fn workspace_steps(
    spec: &RunSpec,
    rootless: bool,
    tmpfs_xattr: bool,
) -> (Vec<MountStep>, Vec<PathBuf>) {
    let mut m = Vec::new();
    let mut writable = Vec::new();
    let idmap = !rootless;
    let sizes = tmpfs_sizes(tmpfs_budget(&spec.resources));
    let sys_owner = if rootless {
        (spec.user.uid(), spec.user.gid())
    } else {
        (0, 0)
    };
    let ws = p(WORKSPACE);
    match spec.workspace {
        WorkspaceMode::Overlay => {
            let upper = if tmpfs_xattr && !spec.persistent {
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
    (m, writable)
}

/// Filtered sandboxes also advertise the explicit proxy, for tools that prefer one (the
/// transparent path enforces the same policy for everything that ignores it).
fn with_proxy_env(spec: &RunSpec) -> Vec<(String, String)> {
    let mut env = spec.env.clone();
    if spec.net == NetMode::Filtered {
        add_proxy_env(&mut env, "127.0.0.1");
        // Injected secrets: every TLS client inside trusts the interception CA's bundle.
        if spec.secrets.values().any(|s| s.inject.is_some()) {
            super::set_ca_bundle_vars(&mut env);
        }
    }
    env
}

/// The explicit proxy's variables, at `proxy_host`, where the command did not set its own.
pub(super) fn add_proxy_env(env: &mut Vec<(String, String)>, proxy_host: &str) {
    let url = format!("http://{proxy_host}:{PROXY_PORT}");
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

/// The refusals of `binds`' destinations (not absolute, `..`, `/`, the kernel filesystems):
/// the cold lowering's, and a warm claim's before it binds them in a member.
pub fn check_binds(binds: &[BindSpec]) -> Result<(), Refusal> {
    binds.iter().try_for_each(|b| check_target(&b.target))
}

pub fn check_target(t: &Path) -> Result<(), Refusal> {
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

/// /etc/profile.d: a directory of ours with the host's entries and airlock's drop-in, which
/// puts the agent tools directory back on PATH where it exists (agent sandboxes).
pub(super) fn profile_d(host_entries: &[(String, RootEntry)]) -> Vec<MountStep> {
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

/// airlock's users and groups merged into an image's file: the image's entries are kept
/// unless they take one of airlock's names or ids (uid/gid 1000 is the sandbox user's).
pub fn merge_id_file(image: Option<&str>, ours: &str) -> String {
    let ours_keys: Vec<(&str, &str)> = ours
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?;
            Some((name, id))
        })
        .collect();
    let mut out = String::from(ours);
    for line in image.unwrap_or("").lines() {
        let mut f = line.split(':');
        let (name, id) = (f.next().unwrap_or(""), f.nth(1).unwrap_or(""));
        if line.trim().is_empty()
            || line.starts_with('#')
            || ours_keys.iter().any(|(n, i)| *n == name || *i == id)
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The mount steps of `binds` (host paths bound in; a writable one idmapped when root-run)
/// and the paths they make writable. Also a warm claim's `[home_files]`.
pub fn bind_steps(binds: &[BindSpec], rootless: bool) -> (Vec<MountStep>, Vec<PathBuf>) {
    let mut m = Vec::new();
    let mut writable = Vec::new();
    for b in binds {
        if b.writable {
            m.push(MountStep::BindRw {
                source: b.source.clone(),
                target: b.target.clone(),
                idmap: !rootless,
            });
            writable.push(b.target.clone());
        } else {
            m.push(MountStep::BindRo {
                source: b.source.clone(),
                target: b.target.clone(),
            });
        }
    }
    (m, writable)
}

/// `/etc/hosts` and `/etc/hostname` of a sandbox called `hostname` (also written by a warm
/// claim of a named sandbox, over its member's).
pub fn name_files(hostname: &str) -> [MountStep; 2] {
    let file = |name: &str, contents: String| MountStep::File {
        target: Path::new("/etc").join(name),
        contents,
        mode: 0o644,
    };
    [
        file(
            "hosts",
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
            ),
        ),
        file("hostname", format!("{hostname}\n")),
    ]
}

pub(super) fn etc_files(spec: &RunSpec, image: Option<&ImageRoot>) -> Vec<MountStep> {
    let u = SandboxUser::AGENT_UID;
    // An image's own user replaces `agent` where they would clash (same name or id).
    let image_user = match &spec.user {
        SandboxUser::Image(iu) => Some(iu),
        _ => None,
    };
    let clash = |id: u32, name: &str| {
        image_user
            .is_some_and(|iu| iu.uid == id || iu.gid == id || iu.name.as_deref() == Some(name))
    };
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    if !clash(u, "agent") {
        passwd.push_str(&format!(
            "agent:x:{u}:{u}:airlock sandbox user:/home/agent:/bin/sh\n"
        ));
    }
    if let Some(iu) = image_user.filter(|iu| iu.name.is_some()) {
        let name = iu.name.as_deref().unwrap_or_default();
        let (uid, gid, home) = (iu.uid, iu.gid, &iu.home);
        passwd.push_str(&format!("{name}:x:{uid}:{gid}:image user:{home}:/bin/sh\n"));
    }
    if !clash(65534, "nobody") {
        passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    }
    let mut group = String::from("root:x:0:\ntty:x:5:\n");
    if !clash(u, "agent") {
        group.push_str(&format!("agent:x:{u}:\n"));
    }
    if !clash(65534, "nogroup") {
        group.push_str("nogroup:x:65534:\n");
    }
    let (passwd, group) = match image {
        Some(img) => (
            merge_id_file(img.passwd.as_deref(), &passwd),
            merge_id_file(img.group.as_deref(), &group),
        ),
        None => (passwd, group),
    };
    let file = |name: &str, contents: String| MountStep::File {
        target: Path::new("/etc").join(name),
        contents,
        mode: 0o644,
    };
    let [hosts, hostname] = name_files(&spec.hostname);
    vec![
        file("passwd", passwd),
        file("group", group),
        hosts,
        hostname,
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
