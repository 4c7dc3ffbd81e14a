use super::container::{etc_files, profile_d};
use super::*;
use crate::policy::{ByteSize, Cpus, Profile};
use crate::spec::{BindSpec, SandboxUser, Stdio};

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

/// The container lowering, through the planner's front door (admission included).
fn plan(s: &RunSpec, h: &HostFacts) -> Result<LaunchPlan, Refusal> {
    super::plan(s, h).map(|p| match p {
        Plan::Container(c) => c,
        Plan::Microvm(_) => panic!("a container spec lowered to a microVM"),
    })
}

fn spec() -> RunSpec {
    RunSpec {
        name: "run-1".into(),
        hostname: "run-1".into(),
        profile: Profile::Moderate,
        net: NetMode::Off,
        domains: vec![],
        ports: vec![443, 80],
        workspace: WorkspaceMode::Overlay,
        project_dir: p("/home/u/proj"),
        binds: vec![],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        workdir: None,
        resources: Resources::default(),
        require_limits: false,
        user: SandboxUser::Agent,
        timeout: None,
        stdio: Stdio::Inherit {
            forward_stdin: false,
        },
        argv: vec!["true".into()],
        persistent: false,
        home_dir: None,
        workspace_dir: None,
        protected: Vec::new(),
        context: Vec::new(),
        repos: Vec::new(),
        home_files: Default::default(),
        secrets: Default::default(),
        agent: None,
        defaulted: Default::default(),
        agent_grace: None,
        agent_min_warm: 0,
        setup: Vec::new(),
        backend: BackendKind::Container,
        rootfs: RootFs::Host,
        kernel: None,
        workspace_slot: false,
        workspace_slot_rw: false,
        pool_member: false,
        vm_claim_slot: false,
    }
}

fn host(uid: u32) -> HostFacts {
    HostFacts {
        uid,
        gid: uid,
        root_entries: vec![
            ("usr".into(), RootEntry::Dir),
            ("bin".into(), RootEntry::Symlink(p("usr/bin"))),
        ],
        etc_entries: vec!["ssl".into()],
        profile_d: vec![],
        project_owner: (uid, uid),
        limits: LimitSupport {
            memory: true,
            pids: true,
            cpu: false,
        },
        tmpfs_xattr: true,
        pasta: true,
        offer: Offer::default(),
        image: None,
        vm: None,
    }
}

#[test]
fn rootless_overlay_plan_is_exact() {
    let got = plan(&spec(), &host(1001)).expect("plan");
    let t = |target: &str, mode, size, owner, noexec| MountStep::Tmpfs {
        target: p(target),
        mode,
        size,
        owner,
        noexec,
    };
    let sym = |target: &str, to: &str| MountStep::Symlink {
        target: p(target),
        points_to: p(to),
    };
    let ro = |path: &str| MountStep::BindRo {
        source: p(path),
        target: p(path),
    };
    let o = (1000, 1000);
    let mut mounts = vec![
        t("/", 0o755, Some(4 << 20), o, false),
        ro("/usr"),
        sym("/bin", "usr/bin"),
    ];
    mounts.push(MountStep::Dir {
        target: p("/etc"),
        mode: 0o755,
    });
    mounts.extend(etc_files(&spec(), None));
    mounts.push(ro("/etc/ssl"));
    mounts.extend(profile_d(&[]));
    mounts.push(MountStep::Proc { target: p("/proc") });
    for r in [
        "/proc/sys",
        "/proc/sysrq-trigger",
        "/proc/irq",
        "/proc/bus",
        "/proc/fs",
    ] {
        mounts.push(MountStep::ReadOnly { target: p(r) });
    }
    mounts.push(MountStep::Sysfs { target: p("/sys") });
    mounts.push(t("/dev", 0o755, Some(1 << 20), o, true));
    for d in ["null", "zero", "full", "random", "urandom", "tty"] {
        mounts.push(MountStep::Device { name: d.into() });
    }
    mounts.push(MountStep::Devpts {
        target: p("/dev/pts"),
    });
    mounts.push(sym("/dev/ptmx", "pts/ptmx"));
    mounts.push(t("/dev/shm", 0o1777, None, o, false));
    mounts.push(sym("/dev/fd", "/proc/self/fd"));
    mounts.push(sym("/dev/stdin", "/proc/self/fd/0"));
    mounts.push(sym("/dev/stdout", "/proc/self/fd/1"));
    mounts.push(sym("/dev/stderr", "/proc/self/fd/2"));
    mounts.push(t("/tmp", 0o1777, None, o, false));
    mounts.push(t("/run", 0o755, None, o, false));
    mounts.push(t("/home/agent", 0o700, None, (1000, 1000), false));
    mounts.push(MountStep::Overlay {
        lower: p("/home/u/proj"),
        target: p("/workspace"),
        idmap: false,
        upper: UpperStore::Tmpfs {
            size: None,
            owner: o,
        },
    });
    for rel in PROTECTED_PATHS {
        mounts.push(MountStep::Protect {
            target: Path::new("/workspace").join(rel),
        });
    }
    mounts.push(MountStep::RootReadOnly);
    let want = LaunchPlan {
        name: "run-1".into(),
        hostname: "run-1".into(),
        rootless: true,
        uid_map: vec![IdMap {
            inside: 1000,
            outside: 1001,
            count: 1,
        }],
        gid_map: vec![IdMap {
            inside: 1000,
            outside: 1001,
            count: 1,
        }],
        user: (1000, 1000),
        mounts,
        cwd: p("/workspace"),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        argv: vec!["true".into()],
        writable_paths: vec![
            p("/tmp"),
            p("/run"),
            p("/dev/shm"),
            p("/home/agent"),
            p("/workspace"),
        ],
        limits: Resources::default(),
        unenforced_limits: vec![],
        net: NetMode::Off,
        egress: None,
        rlimit_nofile: 65536,
        rlimit_nproc: None,
        summarize_changes: true,
        no_huge_pages: false,
        ram_fd: None,
        sealed_sources: vec![p("/home/u/proj")],
    };
    assert_eq!(got, want);
}

#[test]
fn rootful_root_user_maps_to_unprivileged_range_and_idmaps_writable_mounts() {
    let mut s = spec();
    s.user = SandboxUser::Root;
    s.workspace = WorkspaceMode::Bind;
    s.binds = vec![
        BindSpec {
            source: p("/data"),
            target: p("/data"),
            writable: false,
        },
        BindSpec {
            source: p("/out"),
            target: p("/mnt/out"),
            writable: true,
        },
    ];
    let got = plan(&s, &host(0)).expect("plan");
    let range = IdMap {
        inside: 0,
        outside: ROOTFUL_UID_BASE,
        count: ROOTFUL_UID_COUNT,
    };
    assert_eq!(
        (got.uid_map.clone(), got.gid_map.clone(), got.user),
        (vec![range.clone()], vec![range], (0, 0))
    );
    assert!(!got.rootless);
    let protected: Vec<_> = got
        .mounts
        .iter()
        .filter(|m| matches!(m, MountStep::Protect { .. }))
        .cloned()
        .collect();
    // Bind mode: the host's own checkout, so git's info/ is protected too (before the rest).
    let want_protected: Vec<_> = BIND_PROTECTED_PATHS
        .iter()
        .chain(PROTECTED_PATHS)
        .map(|r| MountStep::Protect {
            target: Path::new("/workspace").join(r),
        })
        .collect();
    assert_eq!(protected, want_protected);
    let rest: Vec<_> = got
        .mounts
        .iter()
        .filter(|m| !matches!(m, MountStep::Protect { .. }))
        .cloned()
        .collect();
    let tail: Vec<_> = rest[rest.len() - 6..].to_vec();
    assert_eq!(
        tail,
        vec![
            MountStep::Tmpfs {
                target: p("/root"),
                mode: 0o700,
                size: None,
                owner: (0, 0),
                noexec: false
            },
            MountStep::BindRw {
                source: p("/home/u/proj"),
                target: p("/workspace"),
                idmap: true
            },
            // .git becomes a mount point: it cannot be renamed away from its protections.
            MountStep::Pin {
                target: p("/workspace/.git"),
            },
            MountStep::BindRo {
                source: p("/data"),
                target: p("/data")
            },
            MountStep::BindRw {
                source: p("/out"),
                target: p("/mnt/out"),
                idmap: true
            },
            MountStep::RootReadOnly,
        ]
    );
    assert_eq!(
        got.writable_paths,
        vec![
            p("/tmp"),
            p("/run"),
            p("/dev/shm"),
            p("/root"),
            p("/workspace"),
            p("/mnt/out")
        ]
    );
}

#[test]
fn refusals_fail_closed() {
    let mut s = spec();
    s.net = NetMode::Open;
    let mut no_pasta = host(0);
    no_pasta.pasta = false;
    assert_eq!(
        plan(&s, &no_pasta),
        Err(Refusal::NetModeUnsupported(NetMode::Open))
    );
    assert!(plan(&s, &host(0)).is_ok());

    let mut s = spec();
    s.profile = Profile::Restrictive;
    s.workspace = WorkspaceMode::Bind;
    assert_eq!(plan(&s, &host(0)), Err(Refusal::BindUnderRestrictive));

    let mut s = spec();
    s.resources = Resources {
        memory: Some(ByteSize(64 << 20)),
        cpus: Some(Cpus::new(1.0).expect("cpus")),
        pids: Some(10),
        disk: None,
    };
    s.require_limits = true;
    let mut h = host(1000);
    h.limits = LimitSupport::default();
    assert_eq!(
        plan(&s, &h),
        Err(Refusal::LimitsUnenforceable(vec!["memory", "cpus"]))
    );
    s.require_limits = false;
    let got = plan(&s, &h).expect("plan");
    assert_eq!(
        (got.unenforced_limits, got.rlimit_nproc),
        (vec!["memory".to_string(), "cpus".to_string()], Some(10))
    );

    for bad in ["relative", "/", "/proc/x", "/a/../etc", "/dev/sda"] {
        let mut s = spec();
        s.binds = vec![BindSpec {
            source: p("/x"),
            target: p(bad),
            writable: false,
        }];
        assert!(
            matches!(plan(&s, &host(0)), Err(Refusal::BadTarget(..))),
            "{bad}"
        );
    }
    let mut s = spec();
    s.argv.clear();
    assert_eq!(plan(&s, &host(0)), Err(Refusal::EmptyCommand));
}

#[test]
fn workdir_defaults_to_home_without_workspace() {
    let mut s = spec();
    s.workspace = WorkspaceMode::None;
    let got = plan(&s, &host(1000)).expect("plan");
    assert_eq!(got.cwd, p("/home/agent"));
    assert!(!got.summarize_changes);
    assert_eq!(got.overlay(), None);
    assert!(!got.writable_paths.contains(&p("/workspace")));
}

#[test]
fn old_kernels_keep_the_upper_layer_on_disk() {
    let mut h = host(1000);
    h.tmpfs_xattr = false;
    let mut s = spec();
    s.resources.disk = Some(ByteSize(1 << 30));
    assert_eq!(
        plan(&s, &h)
            .expect("plan")
            .overlay()
            .map(|(_, u)| u.clone()),
        Some(UpperStore::Disk)
    );
    h.tmpfs_xattr = true;
    assert_eq!(
        plan(&s, &h)
            .expect("plan")
            .overlay()
            .map(|(_, u)| u.clone()),
        Some(UpperStore::Tmpfs {
            // `disk` is the budget of every tmpfs together; the upper layer gets 6/16 of it.
            size: Some(6 << 26),
            owner: (1000, 1000)
        })
    );
}

fn tmpfs_size_of(plan: &LaunchPlan, target: &str) -> Option<u64> {
    plan.mounts.iter().find_map(|m| match m {
        MountStep::Tmpfs {
            target: t, size, ..
        } if t == &p(target) => *size,
        MountStep::Overlay {
            upper: UpperStore::Tmpfs { size, .. },
            ..
        } if target == "upper" => *size,
        _ => None,
    })
}

#[test]
fn tmpfs_mounts_share_one_budget_tied_to_memory_or_disk() {
    const MIB: u64 = 1 << 20;
    let mut s = spec();
    s.resources.memory = Some(ByteSize(256 * MIB));
    let got = plan(&s, &host(1000)).expect("plan");
    let sizes: Vec<Option<u64>> = ["upper", "/tmp", "/home/agent", "/dev/shm", "/run"]
        .iter()
        .map(|t| tmpfs_size_of(&got, t))
        .collect();
    assert_eq!(
        sizes,
        vec![
            Some(96 * MIB),
            Some(64 * MIB),
            Some(64 * MIB),
            Some(16 * MIB),
            Some(16 * MIB)
        ]
    );
    assert_eq!(sizes.iter().flatten().sum::<u64>(), 256 * MIB);
    // `disk` (run only) takes over from the memory limit as the budget.
    s.resources.disk = Some(ByteSize(64 * MIB));
    let got = plan(&s, &host(1000)).expect("plan");
    assert_eq!(tmpfs_size_of(&got, "/tmp"), Some(16 * MIB));
    // No budget: the kernel's defaults, as before.
    assert_eq!(tmpfs_sizes(None).tmp, None);
    // Tiny budgets still give every mount 1 MiB.
    assert_eq!(tmpfs_sizes(Some(MIB)).shm, Some(MIB));
}

#[test]
fn default_limits_the_host_cannot_enforce_are_left_out_quietly() {
    let mut s = spec();
    s.resources.memory = Some(ByteSize(1 << 30));
    s.resources.pids = Some(2048);
    s.defaulted = crate::spec::Defaulted {
        memory: true,
        pids: true,
    };
    s.require_limits = true;
    let mut h = host(1000);
    h.limits = LimitSupport::default();
    let got = plan(&s, &h).expect("a default is never refused");
    assert!(got.unenforced_limits.is_empty());
    assert_eq!(got.limits.memory, None);
    // pids hold through RLIMIT_NPROC; the tmpfs budget through the mounts' sizes.
    assert_eq!(got.rlimit_nproc, Some(2048));
    assert_eq!(tmpfs_size_of(&got, "/tmp"), Some(1 << 28));
    // The same limit asked for is refused as before.
    s.defaulted.memory = false;
    assert_eq!(
        plan(&s, &h),
        Err(Refusal::LimitsUnenforceable(vec!["memory"]))
    );
}

#[test]
fn disk_is_refused_for_named_sandboxes() {
    let mut s = spec();
    s.persistent = true;
    s.argv.clear();
    s.resources.disk = Some(ByteSize(1 << 30));
    assert_eq!(plan(&s, &host(0)), Err(Refusal::DiskUnenforceable));
    s.resources.disk = None;
    assert!(plan(&s, &host(0)).is_ok());
}

#[test]
fn filtered_plans_listeners_proxy_env_and_resolver() {
    let mut s = spec();
    s.net = NetMode::Filtered;
    s.domains = vec!["github.com".into()];
    let got = plan(&s, &host(1000)).expect("plan");
    assert_eq!(
        got.egress,
        Some(EgressPlan {
            ports: vec![443, 80],
            proxy_port: PROXY_PORT,
            domains: vec!["github.com".into()]
        })
    );
    let env: Vec<&str> = got.env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        env,
        vec![
            "PATH",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "NO_PROXY",
            "no_proxy"
        ]
    );
    assert!(got
        .env
        .contains(&("HTTPS_PROXY".into(), "http://127.0.0.1:3128".into())));
    let resolv = got.mounts.iter().find_map(|m| match m {
        MountStep::File {
            target, contents, ..
        } if target == Path::new("/etc/resolv.conf") => Some(contents.clone()),
        _ => None,
    });
    assert!(resolv
        .expect("resolv.conf")
        .contains("nameserver 127.0.0.1"));
}

#[test]
fn injected_secrets_point_every_ca_variable_at_the_bundle() {
    let mut s = spec();
    s.net = NetMode::Filtered;
    s.domains = vec!["api.anthropic.com".into()];
    s.env
        .push(("NODE_EXTRA_CA_CERTS".into(), "/mine.pem".into()));
    let plain = plan(&s, &host(1000)).expect("plan");
    assert!(plain
        .env
        .contains(&("NODE_EXTRA_CA_CERTS".into(), "/mine.pem".into())));
    assert!(!plain.env.iter().any(|(k, _)| k == "SSL_CERT_FILE"));
    s.secrets.insert(
        "K".into(),
        crate::config::Secret {
            source: crate::config::SecretSource::FromEnv("K".into()),
            inject: Some(crate::config::Inject {
                hosts: vec!["api.anthropic.com".into()],
                header: Some("x-api-key".into()),
                bearer: false,
                basic: false,
                query: None,
            }),
        },
    );
    let got = plan(&s, &host(1000)).expect("plan");
    for v in CA_BUNDLE_VARS {
        let vals: Vec<&str> = got
            .env
            .iter()
            .filter(|(k, _)| k == v)
            .map(|(_, x)| x.as_str())
            .collect();
        assert_eq!(vals, vec![CA_BUNDLE], "{v}");
    }
}

#[test]
fn persistent_plans_have_no_command_and_a_disk_upper() {
    let mut s = spec();
    s.persistent = true;
    assert_eq!(
        plan(&s, &host(1000)),
        Err(Refusal::EmptyCommand),
        "a persistent plan takes no command"
    );
    s.argv.clear();
    let got = plan(&s, &host(1000)).expect("plan");
    assert!(got.argv.is_empty());
    assert!(!got.summarize_changes);
    assert_eq!(
        got.overlay().map(|(_, u)| u.clone()),
        Some(UpperStore::Disk)
    );
    let json = serde_json::to_string(&got).expect("serialize");
    assert_eq!(
        serde_json::from_str::<LaunchPlan>(&json).expect("deserialize"),
        got
    );
}

/// A clone's git config and hooks are the sandbox's own (the host never runs git in the clone):
/// writable there, still protected where the host reads the repository (overlay, bind). Agent
/// configuration and `[workspace] protected` stay read-only in every mode.
#[test]
fn clone_workspaces_leave_git_config_and_hooks_to_the_sandbox() {
    let protected = |mode: WorkspaceMode| {
        let mut s = spec();
        s.workspace = mode;
        s.workspace_dir = Some(p("/state/sandboxes/x/workspace"));
        s.protected = vec!["notes/rules.md".into()];
        plan(&s, &host(1000))
            .expect("plan")
            .mounts
            .iter()
            .filter_map(|m| match m {
                MountStep::Protect { target } => Some(target.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let ws = |r: &str| Path::new("/workspace").join(r);
    let all: Vec<PathBuf> = PROTECTED_PATHS
        .iter()
        .copied()
        .chain(["notes/rules.md"])
        .map(ws)
        .collect();
    assert_eq!(protected(WorkspaceMode::Overlay), all);
    // Bind: the host's own checkout, so git's info/ too (first).
    let bind: Vec<PathBuf> = BIND_PROTECTED_PATHS
        .iter()
        .copied()
        .map(ws)
        .chain(all.iter().cloned())
        .collect();
    assert_eq!(protected(WorkspaceMode::Bind), bind);
    let clone: Vec<PathBuf> = all
        .iter()
        .filter(|p| **p != ws(".git/config") && **p != ws(".git/hooks"))
        .cloned()
        .collect();
    assert_eq!(protected(WorkspaceMode::Clone), clone);
    assert!(clone.contains(&ws(".gitmodules")) && clone.contains(&ws(".claude")));
}

/// Login shells (`sh -lc`, as Codex runs every command) reset PATH in /etc/profile and then
/// source /etc/profile.d/*.sh: /etc/profile.d is ours, with the host's entries (files bound,
/// symlinks recreated) and a drop-in putting the agent tools directory back on PATH.
#[test]
fn profile_d_keeps_the_agent_tools_on_login_shells_path() {
    let mut h = host(1000);
    h.profile_d = vec![
        ("bash_completion.sh".into(), RootEntry::Dir),
        ("vte.sh".into(), RootEntry::Symlink(p("vte-2.91.sh"))),
        ("airlock.sh".into(), RootEntry::Dir),
    ];
    let got = plan(&spec(), &h).expect("plan");
    let at = got
        .mounts
        .iter()
        .position(
            |m| matches!(m, MountStep::Dir { target, .. } if target == Path::new("/etc/profile.d")),
        )
        .expect("/etc/profile.d is made");
    let MountStep::File {
        target,
        contents,
        mode,
    } = &got.mounts[at + 1]
    else {
        panic!("no drop-in after /etc/profile.d: {:?}", got.mounts[at + 1]);
    };
    assert_eq!(
        (target.as_path(), *mode),
        (Path::new("/etc/profile.d/airlock.sh"), 0o644)
    );
    assert!(
        contents.contains("PATH=\"/run/airlock/bin:$PATH\"") && contents.contains("export PATH")
    );
    assert_eq!(
        got.mounts[at + 2..at + 4].to_vec(),
        vec![
            MountStep::BindRo {
                source: p("/etc/profile.d/bash_completion.sh"),
                target: p("/etc/profile.d/bash_completion.sh"),
            },
            MountStep::Symlink {
                target: p("/etc/profile.d/vte.sh"),
                points_to: p("vte-2.91.sh"),
            },
        ]
    );
    // The host's own airlock.sh never replaces ours; the host's whole directory is not bound.
    assert!(!got.mounts.iter().any(|m| matches!(m,
        MountStep::BindRo { target, .. } if target == Path::new("/etc/profile.d/airlock.sh")
            || target == Path::new("/etc/profile.d"))));
}

#[test]
fn the_planner_refuses_a_backend_this_build_does_not_offer() {
    let mut s = spec();
    s.backend = BackendKind::Microvm;
    assert_eq!(
        super::plan(&s, &host(1000)),
        Err(Refusal::BackendUnavailable(BackendKind::Microvm))
    );
    assert_eq!(
        admit(&s, &Offer::default()),
        Err(Refusal::BackendUnavailable(BackendKind::Microvm))
    );
    // A host that offered it would get past admission (and be refused by the missing lowering).
    let mut h = host(1000);
    h.offer.backends.push(BackendKind::Microvm);
    assert_eq!(admit(&s, &h.offer), Ok(()));
    assert!(Refusal::BackendUnavailable(BackendKind::Microvm)
        .hint()
        .contains("backend = \"container\""));
}

#[test]
fn the_planner_refuses_an_image_root_filesystem_until_images_exist() {
    let mut s = spec();
    s.rootfs = RootFs::from_config("alpine:3.20@sha256:abc");
    assert_eq!(
        super::plan(&s, &host(1000)),
        Err(Refusal::RootFsUnavailable("alpine:3.20@sha256:abc".into()))
    );
    let offer = Offer {
        backends: vec![BackendKind::Container],
        images: true,
    };
    assert_eq!(admit(&s, &offer), Ok(()));
    s.rootfs = RootFs::Host;
    assert_eq!(admit(&s, &Offer::default()), Ok(()));
}

#[test]
fn the_container_plan_is_the_container_lowering() {
    assert_eq!(
        super::plan(&spec(), &host(1000)),
        lower(&spec(), &host(1000)).map(Plan::Container)
    );
}

fn image_host(uid: u32) -> HostFacts {
    let mut h = host(uid);
    h.offer.images = true;
    h.image = Some(Box::new(ImageRoot {
        reference: "docker.io/library/busybox:1@sha256:00".into(),
        layers: vec![p("/s/images/layers/top"), p("/s/images/layers/base")],
        passwd: Some("root:x:0:0:root:/root:/bin/ash\nnode:x:1000:1000::/home/node:/bin/sh\nwww:x:33:33::/var/www:/bin/false\n".into()),
        group: Some("root:x:0:\nwww:x:33:\n".into()),
        vm_disk: None,
    }));
    h
}

#[test]
fn an_image_root_is_an_overlay_of_its_layers_instead_of_the_hosts_usr() {
    let mut s = spec();
    s.rootfs = RootFs::from_config("busybox:1");
    let got = plan(&s, &image_host(1001)).expect("plan");
    let o = (1000, 1000);
    let img = image_host(1001).image;
    let mut want = vec![
        MountStep::Tmpfs {
            target: p("/"),
            mode: 0o755,
            size: Some(4 << 20),
            owner: o,
            noexec: false,
        },
        MountStep::ImageLayer {
            source: p("/s/images/layers/top"),
        },
        MountStep::ImageLayer {
            source: p("/s/images/layers/base"),
        },
        MountStep::ImageRoot {
            upper_size: container::IMAGE_UPPER_SIZE,
            owner: o,
        },
        MountStep::Dir {
            target: p("/etc"),
            mode: 0o755,
        },
    ];
    want.extend(etc_files(&s, img.as_deref()));
    want.extend(profile_d(&[]));
    want.push(MountStep::Proc { target: p("/proc") });
    assert_eq!(got.mounts[..want.len()], want[..]);
    // Nothing of the host's root or /etc is bound in.
    for m in &got.mounts {
        if let MountStep::BindRo { source, .. } = m {
            assert!(
                !source.starts_with("/usr") && !source.starts_with("/etc"),
                "{m:?}"
            );
        }
    }
    assert!(!got
        .mounts
        .iter()
        .any(|m| matches!(m, MountStep::Symlink { target, .. } if target == Path::new("/bin"))));
    // Everything else is the same plan as on the host: workspace, /proc, limits, read-only root.
    let host_plan = plan(&spec(), &host(1001)).expect("plan");
    let tail = |p: &LaunchPlan| -> Vec<MountStep> {
        let at = p
            .mounts
            .iter()
            .position(|m| matches!(m, MountStep::Proc { .. }))
            .expect("proc");
        p.mounts[at..].to_vec()
    };
    assert_eq!(tail(&got), tail(&host_plan));
    assert_eq!(got.writable_paths, host_plan.writable_paths);
    assert_eq!(got.user, host_plan.user);
}

#[test]
fn an_images_users_are_kept_beside_the_sandbox_user() {
    let mut s = spec();
    s.rootfs = RootFs::from_config("busybox:1");
    let img = image_host(0).image;
    let files = etc_files(&s, img.as_deref());
    let passwd = files
        .iter()
        .find_map(|m| match m {
            MountStep::File {
                target, contents, ..
            } if target == Path::new("/etc/passwd") => Some(contents.clone()),
            _ => None,
        })
        .expect("passwd");
    assert_eq!(
        passwd,
        "root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:airlock sandbox user:/home/agent:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nwww:x:33:33::/var/www:/bin/false\n"
    );
}

#[test]
fn an_image_missing_from_the_store_or_on_an_old_kernel_is_refused() {
    let mut s = spec();
    s.rootfs = RootFs::from_config("busybox:1");
    let mut h = host(1000);
    h.offer.images = true;
    assert_eq!(
        plan(&s, &h),
        Err(Refusal::ImageNotInStore("busybox:1".into()))
    );
    assert!(Refusal::ImageNotInStore("x".into())
        .hint()
        .contains("airlock image pull"));
    let mut h = image_host(1000);
    h.tmpfs_xattr = false;
    assert_eq!(plan(&s, &h), Err(Refusal::ImageNeedsTmpfsXattr));
}

fn passwd_and_group(s: &RunSpec, img: Option<&ImageRoot>) -> (String, String) {
    let files = etc_files(s, img);
    let get = |name: &str| {
        files
            .iter()
            .find_map(|m| match m {
                MountStep::File {
                    target, contents, ..
                } if target == &Path::new("/etc").join(name) => Some(contents.clone()),
                _ => None,
            })
            .expect("file")
    };
    (get("passwd"), get("group"))
}

fn image_user(uid: u32, gid: u32, name: Option<&str>, home: &str) -> SandboxUser {
    SandboxUser::Image(crate::spec::ImageUser {
        uid,
        gid,
        name: name.map(str::to_string),
        home: home.into(),
    })
}

#[test]
fn an_images_user_runs_with_its_ids_mapped_like_the_sandbox_user() {
    let mut s = spec();
    s.rootfs = RootFs::from_config("busybox:1");
    s.workspace = WorkspaceMode::Bind;
    s.user = image_user(1234, 2345, Some("app"), "/home/app");

    // Root-run: the sandbox range (uid 1234 is BASE + 1234, as unprivileged as agent's BASE +
    // 1000); writable host paths are id-mapped to the project's owner as before.
    let got = plan(&s, &image_host(0)).expect("plan");
    let range = IdMap {
        inside: 0,
        outside: ROOTFUL_UID_BASE,
        count: ROOTFUL_UID_COUNT,
    };
    assert_eq!(
        (got.uid_map.clone(), got.gid_map.clone(), got.user),
        (vec![range.clone()], vec![range], (1234, 2345))
    );
    assert!(got.mounts.iter().any(|m| matches!(
        m,
        MountStep::BindRw { target, idmap: true, .. } if target == Path::new("/workspace")
    )));
    // Its home is a tmpfs it owns; no workspace means it starts there.
    assert!(got.mounts.contains(&MountStep::Tmpfs {
        target: p("/home/app"),
        mode: 0o700,
        size: tmpfs_sizes(tmpfs_budget(&s.resources)).home,
        owner: (1234, 2345),
        noexec: false,
    }));
    assert!(got.writable_paths.contains(&p("/home/app")));
    assert!(!got.writable_paths.contains(&p("/home/agent")));

    // Rootless: exactly one id each way, the invoking user's.
    let got = plan(&s, &image_host(1001)).expect("plan");
    assert_eq!(
        (got.uid_map, got.gid_map, got.user),
        (
            vec![IdMap {
                inside: 1234,
                outside: 1001,
                count: 1
            }],
            vec![IdMap {
                inside: 2345,
                outside: 1001,
                count: 1
            }],
            (1234, 2345)
        )
    );
    assert!(got
        .mounts
        .iter()
        .all(|m| !matches!(m, MountStep::Tmpfs { owner, .. } if *owner != (1234, 2345))));
}

#[test]
fn an_images_user_is_in_passwd_and_replaces_agent_only_where_they_clash() {
    let mut s = spec();
    s.rootfs = RootFs::from_config("busybox:1");
    let img = image_host(0).image;
    // A user of the image's own: its entry (airlock's home), agent kept beside it.
    s.user = image_user(33, 33, Some("www"), "/var/www");
    let (passwd, group) = passwd_and_group(&s, img.as_deref());
    assert_eq!(
        passwd,
        "root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:airlock sandbox user:/home/agent:/bin/sh\nwww:x:33:33:image user:/var/www:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    );
    assert_eq!(
        group,
        "root:x:0:\ntty:x:5:\nagent:x:1000:\nnogroup:x:65534:\nwww:x:33:\n"
    );
    // The image's uid 1000 (`node`, as in node images): it is node, not agent.
    s.user = image_user(1000, 1000, Some("node"), "/home/node");
    let (passwd, group) = passwd_and_group(&s, img.as_deref());
    assert!(passwd.contains("node:x:1000:1000:image user:/home/node:/bin/sh\n"));
    assert!(!passwd.contains("agent"), "{passwd}");
    assert!(!group.contains("agent"), "{group}");
    // `nobody` (as many images run): once, as the image user.
    s.user = image_user(65534, 65534, Some("nobody"), "/nonexistent");
    let (passwd, group) = passwd_and_group(&s, img.as_deref());
    assert_eq!(passwd.matches(":65534:").count(), 1, "{passwd}");
    assert!(passwd.contains("nobody:x:65534:65534:image user:/nonexistent:/bin/sh\n"));
    assert!(!group.contains("nogroup"), "{group}");
    // A numeric user the image does not list: no entry is made up.
    s.user = image_user(4321, 4321, None, "/home/4321");
    let (passwd, _) = passwd_and_group(&s, img.as_deref());
    assert!(!passwd.contains("4321"), "{passwd}");
    assert!(passwd.contains("agent:x:1000"), "{passwd}");
}

#[test]
fn only_a_tcg_microvms_qemu_runs_without_huge_pages() {
    let mut s = spec();
    let container = plan(&s, &vm_host()).expect("container plan");
    assert!(!container.no_huge_pages);
    s.backend = BackendKind::Microvm;
    let mut h = vm_host();
    for (accel, want) in [(Accel::Tcg, true), (Accel::Kvm, false)] {
        if let Some(vm) = h.vm.as_mut() {
            vm.accel = accel;
        }
        let Plan::Microvm(got) = super::plan(&s, &h).expect("plan") else {
            panic!("not a microVM plan");
        };
        assert_eq!(got.qemu.no_huge_pages, want, "{accel:?}");
    }
}

fn vm_host() -> HostFacts {
    let mut h = host(0);
    h.offer.backends.push(BackendKind::Microvm);
    h.vm = Some(VmFacts {
        qemu: p("/usr/bin/qemu-system-x86_64"),
        cache_dir: p("/var/cache/airlock/microvm"),
        kernel: "vmlinux-K".into(),
        initrd: "initrd-I".into(),
        rootfs: "root-R.erofs".into(),
        kernel_release: "6.1.0-48-cloud-amd64".into(),
        accel: Accel::Tcg,
        tsc_khz: Some(2_100_000),
    });
    h
}

#[test]
fn the_microvm_plan_is_exact() {
    let mut s = spec();
    s.backend = BackendKind::Microvm;
    s.argv = vec!["echo".into(), "hi".into()];
    s.resources.memory = Some(ByteSize(512 << 20));
    s.resources.cpus = Some(Cpus::new(1.5).expect("cpus"));
    let Plan::Microvm(got) = super::plan(&s, &vm_host()).expect("plan") else {
        panic!("not a microVM plan");
    };
    let argv: Vec<String> = [
        "/usr/bin/qemu-system-x86_64",
        "-M",
        "microvm",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "none",
        "-parallel",
        "none",
        "-monitor",
        "none",
        "-accel",
        "tcg,tb-size=128",
        "-cpu",
        "max",
        "-m",
        "512M",
        "-smp",
        "2",
        "-kernel",
        "/airlock-vm/cache/vmlinux-K",
        "-initrd",
        "/airlock-vm/cache/initrd-I",
        "-append",
        "quiet loglevel=1 panic=-1 tsc=reliable cryptomgr.notests tsc_early_khz=2100000 airlock.v=1 -- init",
        "-drive",
        "id=root,file=/airlock-vm/cache/root-R.erofs,format=raw,if=none,readonly=on",
        "-device",
        "virtio-blk-device,drive=root,serial=airlock-root",
        "-drive",
        "id=ws,file=/airlock-vm/run/workspace.erofs,format=raw,if=none,readonly=on",
        "-device",
        "virtio-blk-device,drive=ws,serial=airlock-ws",
        "-device",
        "virtio-serial-device,max_ports=2",
        "-chardev",
        "socket,id=channel,path=/airlock-vm/run/channel.sock",
        "-device",
        "virtserialport,chardev=channel,name=airlock",
        "-nic",
        "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // QEMU is the command of a container built from the same spec: no workspace, the
    // artifact cache read-only, the guest's memory plus QEMU's overhead as its limit.
    let mut q = s.clone();
    q.argv = argv;
    q.workspace = WorkspaceMode::None;
    q.workdir = Some(p("/"));
    q.env = vec![("PATH".into(), "/usr/bin:/bin".into())];
    q.binds = vec![BindSpec {
        source: p("/var/cache/airlock/microvm"),
        target: p("/airlock-vm/cache"),
        writable: false,
    }];
    q.resources.memory = Some(ByteSize((512 << 20) + microvm::VM_OVERHEAD));
    // Its binds are airlock's own: not sealed (a user's `--ro` source becomes an image).
    let mut qemu = lower(&q, &vm_host()).expect("qemu container");
    qemu.sealed_sources.clear();
    // Under TCG, without transparent huge pages: its guest RAM is zeroed as the guest uses it.
    qemu.no_huge_pages = true;
    let want = VmPlan {
        qemu,
        guest: crate::vm::GuestJob {
            argv: vec!["echo".into(), "hi".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: "/workspace".into(),
            uid: 1000,
            gid: 1000,
            hostname: "run-1".into(),
            net: crate::vm::GuestNet::None,
            workspace: true,
            home: "/home/agent".into(),
            tmpfs_size: Some(128 << 20),
            files: etc_files(&s, None)
                .into_iter()
                .chain(profile_d(&[]))
                .filter_map(|m| match m {
                    MountStep::File {
                        target,
                        contents,
                        mode,
                    } => Some(crate::vm::GuestFile {
                        path: target.display().to_string(),
                        contents,
                        mode,
                    }),
                    MountStep::Dir { .. } => None,
                    other => panic!("{other:?}"),
                })
                .collect(),
            stdin: false,
            workspace_disk: false,
            hold: false,
            tty: None,
            mounts: vec![],
            overlay_disk: false,
            workspace_slot_disk: false,
        },
        workspace: Some(p("/home/u/proj")),
        workspace_disk: None,
        ro_sources: vec![],
        overlay_disk: None,
        workspace_slot: None,
        claim_slot: None,
        accel: Accel::Tcg,
        memory: 512 << 20,
        cpus: 2,
    };
    assert_eq!(*got, want);
    assert_eq!(
        got.qemu.limits.memory,
        Some(ByteSize((512 << 20) + (384 << 20)))
    );
}

/// A named microVM takes `disk` (its writable layers on a disk of that size at each boot); a
/// named container sandbox still refuses it; a disk too small for ext4 is refused by size.
#[test]
fn disk_is_honoured_for_named_microvms_and_checked_for_size() {
    let mut s = spec();
    s.persistent = true;
    s.argv.clear();
    s.resources.disk = Some(ByteSize(64 << 20));
    assert_eq!(plan(&s, &host(0)), Err(Refusal::DiskUnenforceable));
    s.backend = BackendKind::Microvm;
    let Plan::Microvm(got) = super::plan(&s, &vm_host()).expect("plan") else {
        panic!("not a microvm plan")
    };
    assert!(got.guest.hold);
    assert_eq!(got.overlay_disk, Some(64 << 20));
    assert!(got.guest.overlay_disk);
    s.resources.disk = Some(ByteSize(64 << 10));
    assert_eq!(
        super::plan(&s, &vm_host()),
        Err(Refusal::DiskTooSmall(64 << 10))
    );
    // `create` admits without planning: refused there too.
    let offer = Offer {
        backends: vec![BackendKind::Container, BackendKind::Microvm],
        images: true,
    };
    assert_eq!(admit(&s, &offer), Err(Refusal::DiskTooSmall(64 << 10)));
    s.persistent = false;
    s.argv = vec!["true".into()];
    assert_eq!(
        super::plan(&s, &vm_host()),
        Err(Refusal::DiskTooSmall(64 << 10))
    );
    s.resources.disk = Some(ByteSize(super::MIN_VM_DISK));
    assert!(super::plan(&s, &vm_host()).is_ok());
}

/// A microVM pool member whose claims bring a workspace (`workspace_slot`): a blank read-only
/// disk with the workspace's serial, no workspace mounted at boot, and QEMU's own container
/// without the slot's empty /workspace. Without the slot: no such disk.
#[test]
fn a_microvm_member_with_a_workspace_slot_boots_with_a_blank_read_only_disk() {
    use crate::plan::microvm::{VM_WORKSPACE_SLOT, VM_WORKSPACE_SLOT_SIZE};
    let mut s = spec();
    s.backend = BackendKind::Microvm;
    s.persistent = true;
    s.argv.clear();
    s.workspace = WorkspaceMode::None;
    let Plan::Microvm(got) = super::plan(&s, &vm_host()).expect("plan") else {
        panic!("not a microvm plan")
    };
    assert_eq!(got.workspace_slot, None);
    assert!(!got
        .qemu
        .argv
        .iter()
        .any(|a| a.contains("serial=airlock-ws")));
    s.workspace_slot = true;
    let Plan::Microvm(got) = super::plan(&s, &vm_host()).expect("plan") else {
        panic!("not a microvm plan")
    };
    assert_eq!(got.workspace_slot, Some(VM_WORKSPACE_SLOT_SIZE));
    assert!(!got.guest.workspace && !got.guest.workspace_disk);
    assert_eq!(got.workspace, None);
    let drive = got
        .qemu
        .argv
        .iter()
        .find(|a| a.contains(VM_WORKSPACE_SLOT))
        .unwrap_or_else(|| panic!("no slot drive in {:?}", got.qemu.argv));
    assert!(drive.ends_with(",readonly=on"), "{drive}");
    assert!(got
        .qemu
        .argv
        .iter()
        .any(|a| a == "virtio-blk-device,drive=ws,serial=airlock-ws"));
    assert!(
        !got.qemu.mounts.iter().any(
            |m| matches!(m, MountStep::Dir { target, .. } if target == Path::new("/workspace"))
        ),
        "{:?}",
        got.qemu.mounts
    );
}

/// A microVM pool member for named clone sandboxes (`workspace_slot_rw`): its slot is a
/// *writable* disk the size of the sandbox's workspace image (`disk`, else the default), and
/// its guest loads the ext4 modules at boot; a run's slot stays read-only and 16 GiB.
#[test]
fn a_microvm_member_for_named_clones_boots_with_a_writable_slot_of_the_images_size() {
    use crate::plan::microvm::{VM_DEFAULT_WORKSPACE_DISK, VM_WORKSPACE_SLOT};
    let mut s = spec();
    s.backend = BackendKind::Microvm;
    s.persistent = true;
    s.argv.clear();
    s.workspace = WorkspaceMode::None;
    s.workspace_slot = true;
    s.workspace_slot_rw = true;
    let Plan::Microvm(got) = super::plan(&s, &vm_host()).expect("plan") else {
        panic!("not a microvm plan")
    };
    assert_eq!(got.workspace_slot, Some(VM_DEFAULT_WORKSPACE_DISK));
    assert!(got.guest.workspace_slot_disk);
    assert!(!got.guest.workspace && !got.guest.workspace_disk);
    let drive = got
        .qemu
        .argv
        .iter()
        .find(|a| a.contains(VM_WORKSPACE_SLOT))
        .unwrap_or_else(|| panic!("no slot drive in {:?}", got.qemu.argv));
    assert!(!drive.contains("readonly"), "{drive}");
    s.resources.disk = Some(ByteSize(super::MIN_VM_DISK));
    let Plan::Microvm(got) = super::plan(&s, &vm_host()).expect("plan") else {
        panic!("not a microvm plan")
    };
    assert_eq!(got.workspace_slot, Some(super::MIN_VM_DISK));
    // The run's read-only slot: no ext4 modules, read-only.
    s.workspace_slot_rw = false;
    s.resources.disk = None;
    let Plan::Microvm(got) = super::plan(&s, &vm_host()).expect("plan") else {
        panic!("not a microvm plan")
    };
    assert!(!got.guest.workspace_slot_disk);
}

/// Every microVM pool member (`vm_claim_slot`) boots with a blank *read-only* claim slot of
/// 16 GiB, where a claim writes its read-only mounts' snapshots, and — with `disk` — QEMU's
/// QMP socket in its run directory (the claim grows that disk); a cold run has neither.
#[test]
fn a_microvm_member_boots_with_a_read_only_claim_slot() {
    use crate::plan::microvm::{VM_CLAIM_SLOT, VM_CLAIM_SLOT_SIZE};
    let mut s = spec();
    s.backend = BackendKind::Microvm;
    let Plan::Microvm(cold) = super::plan(&s, &vm_host()).expect("plan") else {
        panic!("not a microvm plan")
    };
    assert_eq!(cold.claim_slot, None);
    assert!(!cold.qemu.argv.iter().any(|a| a.contains(VM_CLAIM_SLOT)));
    s.persistent = true;
    s.argv.clear();
    s.vm_claim_slot = true;
    let Plan::Microvm(got) = super::plan(&s, &vm_host()).expect("plan") else {
        panic!("not a microvm plan")
    };
    assert_eq!(got.claim_slot, Some(VM_CLAIM_SLOT_SIZE));
    let drive = got
        .qemu
        .argv
        .iter()
        .find(|a| a.contains(VM_CLAIM_SLOT))
        .unwrap_or_else(|| panic!("no claim slot drive in {:?}", got.qemu.argv));
    assert!(drive.contains("readonly=on"), "{drive}");
    assert!(got
        .qemu
        .argv
        .iter()
        .any(|a| a.ends_with(&format!("serial={}", crate::vm::DISK_CLAIM))));
    // QMP (to grow the writable-layer disk at claim): a member with `disk` only.
    let qmp = |p: &VmPlan| p.qemu.argv.iter().any(|a| a == "-qmp");
    assert!(!qmp(&got) && !qmp(&cold));
    s.resources.disk = Some(ByteSize(16 << 20));
    let Plan::Microvm(got) = super::plan(&s, &vm_host()).expect("plan") else {
        panic!("not a microvm plan")
    };
    let at = got
        .qemu
        .argv
        .iter()
        .position(|a| a == "-qmp")
        .expect("-qmp");
    assert_eq!(
        got.qemu.argv[at + 1],
        "unix:/airlock-vm/run/qmp.sock,server=on,wait=off"
    );
    s.vm_claim_slot = false;
    let Plan::Microvm(cold_disk) = super::plan(&s, &vm_host()).expect("plan") else {
        panic!("not a microvm plan")
    };
    assert!(!qmp(&cold_disk));
}

/// `disk` on a microVM: the guest's writable layers on a writable disk of their own (the
/// executor makes it that size); without `disk`, tmpfs as before and no such disk.
#[test]
fn disk_gives_a_microvm_a_writable_layer_disk_of_that_size() {
    let mut s = spec();
    s.backend = BackendKind::Microvm;
    let Plan::Microvm(got) = super::plan(&s, &vm_host()).expect("plan") else {
        panic!("not a microvm plan")
    };
    assert_eq!(got.overlay_disk, None);
    assert!(!got.guest.overlay_disk);
    assert!(!got.qemu.argv.iter().any(|a| a.contains("airlock-overlay")));
    s.resources.disk = Some(ByteSize(64 << 20));
    let Plan::Microvm(got) = super::plan(&s, &vm_host()).expect("plan") else {
        panic!("not a microvm plan")
    };
    assert_eq!(got.overlay_disk, Some(64 << 20));
    assert!(got.guest.overlay_disk);
    let at = got
        .qemu
        .argv
        .iter()
        .position(|a| a == "id=ov,file=/airlock-vm/run/overlay.img,format=raw,if=none")
        .unwrap_or_else(|| panic!("{:?}", got.qemu.argv));
    assert_eq!(
        got.qemu.argv[at + 2],
        "virtio-blk-device,drive=ov,serial=airlock-overlay"
    );
    // The disk bounds the guest's writes; QEMU's own container keeps no disk budget.
    assert_eq!(got.qemu.limits.disk, None);
}

#[test]
fn the_microvm_plan_gives_filtered_guests_a_nic_and_the_proxy_on_qemus_host_side() {
    let mut s = spec();
    s.backend = BackendKind::Microvm;
    s.net = NetMode::Filtered;
    s.domains = vec!["example.com".into()];
    s.workspace = WorkspaceMode::None;
    let Plan::Microvm(got) = super::plan(&s, &vm_host()).expect("plan") else {
        panic!("not a microVM plan");
    };
    let a = &got.qemu.argv;
    let at = a.iter().position(|x| x == "-netdev").expect("a NIC");
    assert_eq!(
        a[at..],
        [
            "-netdev",
            "user,id=net0,ipv6=off",
            "-device",
            "virtio-net-device,netdev=net0"
        ]
    );
    assert!(!a.iter().any(|x| x.contains("airlock-ws")));
    // The QEMU container holds the filtered network namespace and its egress listeners.
    assert_eq!(
        got.qemu.egress,
        Some(EgressPlan {
            ports: vec![443, 80],
            proxy_port: PROXY_PORT,
            domains: vec!["example.com".into()],
        })
    );
    assert!(got
        .guest
        .env
        .contains(&("HTTPS_PROXY".into(), "http://10.0.2.2:3128".into())));
    let resolv = got
        .guest
        .files
        .iter()
        .find(|f| f.path == "/etc/resolv.conf");
    assert!(resolv.is_some_and(|f| f.contents.contains("nameserver 10.0.2.3")));
    assert_eq!(got.guest.cwd, "/home/agent");
    assert_eq!(got.guest.net, crate::vm::GuestNet::User);
    // No explicit memory: a 1 GiB guest in a container limited to it plus QEMU's overhead.
    assert!(a.windows(2).any(|w| w == ["-m", "1024M"]));
    assert_eq!(
        got.qemu.limits.memory,
        Some(ByteSize((1 << 30) + (384 << 20)))
    );
}

#[test]
fn a_named_microvm_sandbox_is_a_held_guest_without_a_command() {
    let mut s = spec();
    s.backend = BackendKind::Microvm;
    s.persistent = true;
    s.argv = vec![];
    let v = match super::plan(&s, &vm_host()) {
        Ok(Plan::Microvm(v)) => v,
        other => panic!("{other:?}"),
    };
    assert!(v.guest.hold);
    assert!(v.guest.argv.is_empty());
    // A command for a named sandbox (or none for a run) is still an error.
    s.argv = vec!["true".into()];
    assert!(matches!(
        super::plan(&s, &vm_host()),
        Err(Refusal::EmptyCommand)
    ));
}

#[test]
fn a_named_microvm_sandboxs_clone_is_a_writable_disk_of_its_own() {
    let mut s = spec();
    s.backend = BackendKind::Microvm;
    s.persistent = true;
    s.argv = vec![];
    s.workspace = WorkspaceMode::Clone;
    // A run (no clone made for it) cannot have one.
    assert_eq!(
        super::plan(&s, &vm_host()).map(|_| ()),
        Err(Refusal::CloneUnsupported)
    );
    s.workspace_dir = Some(p("/state/sandboxes/box/workspace"));
    let Plan::Microvm(v) = super::plan(&s, &vm_host()).expect("plan") else {
        panic!("not a microVM plan");
    };
    assert_eq!(
        v.workspace_disk,
        Some(microvm::WorkspaceDisk {
            source: p("/state/sandboxes/box/workspace"),
            image: p("/state/sandboxes/box/vm-workspace.img"),
            size: microvm::VM_DEFAULT_WORKSPACE_DISK,
        })
    );
    assert_eq!(v.workspace, None, "no read-only image of the project");
    assert!(v.guest.workspace_disk && !v.guest.workspace);
    assert_eq!(v.guest.cwd, "/workspace");
    let argv = &v.qemu.argv;
    // Writable (no readonly=on), from the run directory, found by its serial.
    assert!(
        argv.iter()
            .any(|a| a == "id=ws,file=/airlock-vm/run/workspace.img,format=raw,if=none"),
        "{argv:?}"
    );
    assert!(argv
        .iter()
        .any(|a| a == "virtio-blk-device,drive=ws,serial=airlock-ws"));
    // `disk` sizes it.
    s.resources.disk = Some(ByteSize(3 << 30));
    let Plan::Microvm(v) = super::plan(&s, &vm_host()).expect("plan") else {
        panic!("not a microVM plan");
    };
    assert_eq!(v.workspace_disk.map(|d| d.size), Some(3 << 30));
}

#[test]
fn microvm_guests_take_secrets_and_trust_the_injection_ca_while_qemu_gets_neither() {
    let mut s = spec();
    s.backend = BackendKind::Microvm;
    s.net = NetMode::Filtered;
    s.domains = vec!["api.test".into()];
    s.secrets.insert(
        "K".into(),
        crate::config::Secret {
            source: crate::config::SecretSource::FromEnv("K".into()),
            inject: Some(crate::config::Inject {
                hosts: vec!["api.test".into()],
                header: Some("x-api-key".into()),
                bearer: false,
                basic: false,
                query: None,
            }),
        },
    );
    s.secrets.insert(
        "PLAIN".into(),
        crate::config::SecretSource::FromEnv("PLAIN".into()).into(),
    );
    let Plan::Microvm(v) = super::plan(&s, &vm_host()).expect("secrets are not refused") else {
        panic!("not a microVM plan");
    };
    for var in CA_BUNDLE_VARS {
        let vals: Vec<&str> = v
            .guest
            .env
            .iter()
            .filter(|(k, _)| k == var)
            .map(|(_, x)| x.as_str())
            .collect();
        assert_eq!(vals, vec![CA_BUNDLE], "{var}");
    }
    // QEMU's container is given no secret, and its environment names none.
    assert!(!v.qemu.env.iter().any(|(k, _)| k == "K" || k == "PLAIN"));
    assert!(!v.qemu.argv.iter().any(|a| a.contains("K=")));
}

#[test]
fn a_microvm_run_with_a_terminal_gives_the_guest_one() {
    let mut s = spec();
    s.backend = BackendKind::Microvm;
    s.stdio = crate::spec::Stdio::Tty;
    let v = match super::plan(&s, &vm_host()) {
        Ok(Plan::Microvm(v)) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(v.guest.tty, Some(microvm::DEFAULT_TTY));
    assert!(v.guest.stdin);
}

#[test]
fn the_microvm_plan_refuses_what_it_cannot_keep_promises_on() {
    let mut s = spec();
    s.backend = BackendKind::Microvm;
    s.workspace = WorkspaceMode::Bind;
    assert!(matches!(
        super::plan(&s, &vm_host()),
        Err(Refusal::MicrovmUnsupported(_))
    ));
    s.workspace = WorkspaceMode::Overlay;
    s.binds = vec![BindSpec {
        source: p("/srv"),
        target: p("/srv"),
        writable: true,
    }];
    let rw = super::plan(&s, &vm_host());
    assert_eq!(rw, Err(Refusal::MicrovmWritableMount));
    let hint = Refusal::MicrovmWritableMount.hint();
    assert!(
        hint.contains("--ro") && hint.contains("clone workspace") && hint.contains("airlock cp")
    );
    s.binds.clear();
    // An image that is not in the store, or whose disk was not prepared: refused by name.
    s.rootfs = RootFs::from_config("busybox:1.36");
    let mut with_images = vm_host();
    with_images.offer.images = true;
    assert_eq!(
        super::plan(&s, &with_images),
        Err(Refusal::ImageNotInStore("busybox:1.36".into()))
    );
    with_images.image = image_host(0).image;
    assert_eq!(
        super::plan(&s, &with_images),
        Err(Refusal::ImageNotInStore("busybox:1.36".into()))
    );
    s.rootfs = RootFs::Host;
    let mut h = vm_host();
    h.vm = None;
    assert_eq!(
        super::plan(&s, &h),
        Err(Refusal::BackendUnavailable(BackendKind::Microvm))
    );
    // Not offered by the build at all: refused at admission.
    assert_eq!(
        super::plan(&s, &host(0)),
        Err(Refusal::BackendUnavailable(BackendKind::Microvm))
    );
}

/// `--ro HOST:PATH` on a microVM: each mount is a read-only disk of its own (its snapshot, made
/// by the executor in the run directory) that the guest mounts at PATH, after the workspace;
/// targets are checked as for containers, and there is a bound on how many.
#[test]
fn the_microvm_plan_gives_each_read_only_mount_a_disk_of_its_own() {
    let mut s = spec();
    s.backend = BackendKind::Microvm;
    s.binds = vec![
        BindSpec {
            source: p("/srv/data"),
            target: p("/data"),
            writable: false,
        },
        BindSpec {
            source: p("/etc/hostname"),
            target: p("/workspace/cfg/hostname"),
            writable: false,
        },
    ];
    let Plan::Microvm(got) = super::plan(&s, &vm_host()).expect("plan") else {
        panic!("not a microVM plan");
    };
    assert_eq!(got.ro_sources, vec![p("/srv/data"), p("/etc/hostname")]);
    assert_eq!(
        got.guest.mounts,
        vec![
            crate::vm::GuestMount {
                serial: "airlock-ro0".into(),
                path: "/data".into(),
                file: false,
            },
            crate::vm::GuestMount {
                serial: "airlock-ro1".into(),
                path: "/workspace/cfg/hostname".into(),
                file: false,
            },
        ]
    );
    let argv = got.qemu.argv.join(" ");
    for (i, serial) in ["airlock-ro0", "airlock-ro1"].iter().enumerate() {
        assert!(
            argv.contains(&format!(
                "-drive id=ro{i},file=/airlock-vm/run/ro-{i}.erofs,format=raw,if=none,readonly=on \
                 -device virtio-blk-device,drive=ro{i},serial={serial}"
            )),
            "{argv}"
        );
    }
    // The host paths are not QEMU's: only the cache and (by the executor) its run directory.
    assert!(!argv.contains("/srv/data"), "{argv}");
    assert_eq!(
        got.qemu
            .mounts
            .iter()
            .filter(|m| matches!(m, MountStep::BindRo { source, .. } if source == &p("/srv/data")))
            .count(),
        0
    );

    s.binds[0].target = p("/proc/x");
    assert!(matches!(
        super::plan(&s, &vm_host()),
        Err(Refusal::BadTarget(..))
    ));
    s.binds[0].target = p("relative");
    assert!(matches!(
        super::plan(&s, &vm_host()),
        Err(Refusal::BadTarget(..))
    ));
    s.binds = (0..=microvm::MAX_RO_MOUNTS)
        .map(|i| BindSpec {
            source: p(&format!("/srv/{i}")),
            target: p(&format!("/m/{i}")),
            writable: false,
        })
        .collect();
    assert!(matches!(
        super::plan(&s, &vm_host()),
        Err(Refusal::MicrovmUnsupported(_))
    ));
}

#[test]
fn a_microvm_on_an_image_boots_the_images_disk_with_its_users_and_qemu_on_the_host_root() {
    let mut s = spec();
    s.backend = BackendKind::Microvm;
    s.rootfs = RootFs::from_config("busybox:1@sha256:00");
    s.workspace = WorkspaceMode::None;
    s.workdir = Some(p("/srv"));
    s.user = image_user(33, 33, Some("www"), "/var/www");
    let mut h = vm_host();
    h.offer.images = true;
    h.image = image_host(0).image;
    if let Some(i) = h.image.as_mut() {
        i.vm_disk = Some(p("/s/images/vm/k3y/root.erofs"));
    }
    let Plan::Microvm(v) = super::plan(&s, &h).expect("plan") else {
        panic!("not a microVM plan");
    };
    let a = &v.qemu.argv;
    assert!(
        a.contains(
            &"id=root,file=/airlock-vm/image/root.erofs,format=raw,if=none,readonly=on".to_string()
        ),
        "{a:?}"
    );
    assert!(!a.iter().any(|x| x.contains("root-R.erofs")), "{a:?}");
    // Its directory (only) is bound read-only into QEMU's container, beside the cache.
    assert_eq!(
        v.qemu.mounts.iter().filter(|m| matches!(m, MountStep::BindRo { target, .. } if target == Path::new(microvm::VM_IMAGE_DIR))).count(),
        1,
        "{:#?}",
        v.qemu.mounts
    );
    assert!(v.qemu.mounts.iter().any(|m| matches!(m, MountStep::BindRo { source, target } if source == Path::new("/s/images/vm/k3y") && target == Path::new(microvm::VM_IMAGE_DIR))));
    // QEMU itself runs on the host's root, never on the image's layers.
    assert!(
        !v.qemu.mounts.iter().any(|m| matches!(
            m,
            MountStep::ImageLayer { .. } | MountStep::ImageRoot { .. }
        )),
        "{:#?}",
        v.qemu.mounts
    );
    // The guest runs as the image's user, where the image says, with the image's users kept.
    assert_eq!((v.guest.uid, v.guest.gid), (33, 33));
    assert_eq!(v.guest.cwd, "/srv");
    assert_eq!(v.guest.home, "/var/www");
    let passwd = v
        .guest
        .files
        .iter()
        .find(|f| f.path == "/etc/passwd")
        .expect("passwd");
    let (want, _) = passwd_and_group(&s, h.image.as_deref());
    assert_eq!(passwd.contents, want);
}

#[test]
fn a_microvm_with_an_open_network_gets_a_nic_in_a_namespace_with_pasta_and_no_proxy() {
    let mut s = spec();
    s.backend = BackendKind::Microvm;
    s.net = NetMode::Open;
    s.workspace = WorkspaceMode::None;
    let mut h = vm_host();
    h.pasta = false;
    assert_eq!(
        super::plan(&s, &h),
        Err(Refusal::NetModeUnsupported(NetMode::Open)),
        "no pasta: refused as for containers"
    );
    h.pasta = true;
    let Plan::Microvm(v) = super::plan(&s, &h).expect("plan") else {
        panic!("not a microVM plan");
    };
    assert_eq!(v.guest.net, crate::vm::GuestNet::User);
    assert!(v
        .qemu
        .argv
        .windows(2)
        .any(|w| w == ["-netdev", "user,id=net0,ipv6=off"]));
    // QEMU's container is an open-mode sandbox (pasta, the metadata floor), without egress
    // listeners; the guest gets no proxy variables and QEMU's resolver.
    assert_eq!(v.qemu.net, NetMode::Open);
    assert_eq!(v.qemu.egress, None);
    assert!(!v
        .guest
        .env
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("https_proxy")));
    let resolv = v.guest.files.iter().find(|f| f.path == "/etc/resolv.conf");
    assert!(resolv.is_some_and(|f| f.contents.contains("nameserver 10.0.2.3")));
}

/// A warm-pool claim attaches exactly the workspace steps a cold run's plan has (overlay or
/// bind, the pin, every protected path, in order), and a pool member's plan (workspace
/// `none` with a slot) has an empty, writable `/workspace` for them and nothing else of it.
#[test]
fn claim_workspace_steps_are_the_cold_plans_and_a_slot_is_an_empty_dir() {
    for uid in [0, 1000] {
        for mode in [WorkspaceMode::Overlay, WorkspaceMode::Bind] {
            let mut s = spec();
            s.workspace = mode;
            s.profile = Profile::Moderate;
            s.protected = vec!["secrets.env".into()];
            let cold = plan(&s, &host(uid)).expect("plan");
            let ws_steps: Vec<MountStep> = cold
                .mounts
                .iter()
                .filter(|m| match m {
                    MountStep::Overlay { target, .. }
                    | MountStep::BindRw { target, .. }
                    | MountStep::Pin { target }
                    | MountStep::Protect { target } => target.starts_with("/workspace"),
                    _ => false,
                })
                .cloned()
                .collect();
            let (steps, writable) = workspace_steps(&s, uid != 0, true);
            assert_eq!(steps, ws_steps, "{mode:?} uid {uid}");
            assert!(steps.len() > 3, "{steps:?}");
            assert_eq!(writable, vec![p("/workspace")]);

            let mut member = s.clone();
            member.workspace = WorkspaceMode::None;
            member.workspace_slot = true;
            member.persistent = true;
            member.argv.clear();
            let mp = plan(&member, &host(uid)).expect("member plan");
            let at_ws: Vec<&MountStep> = mp
                .mounts
                .iter()
                .filter(|m| format!("{m:?}").contains("/workspace"))
                .collect();
            assert_eq!(
                at_ws,
                vec![&MountStep::Dir {
                    target: p("/workspace"),
                    mode: 0o755
                }]
            );
            assert!(mp.writable_paths.contains(&p("/workspace")));
            member.workspace_slot = false;
            let none = plan(&member, &host(uid)).expect("plan");
            assert!(!none.writable_paths.contains(&p("/workspace")));
            assert!(!format!("{:?}", none.mounts).contains("/workspace"));
        }
    }
}
