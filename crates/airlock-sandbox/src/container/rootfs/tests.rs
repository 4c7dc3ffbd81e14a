//! The seam tier: the root filesystem executor against the recording fake of the OS. Each test
//! asserts the exact calls a plan turns into; no root, no kernel features needed.

use super::*;
use crate::os::fake::{Fake, FakeFd, Kind};
use airlock_model::plan::{self as planner, HostFacts, LimitSupport, Offer, RootEntry};
use airlock_model::policy::{ByteSize, NetMode, Profile, WorkspaceMode};
use airlock_model::spec::{Resources, RunSpec, SandboxUser, Stdio};

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

fn plan_of(mounts: Vec<MountStep>) -> LaunchPlan {
    LaunchPlan {
        name: "t".into(),
        hostname: "t".into(),
        rootless: true,
        uid_map: vec![],
        gid_map: vec![],
        user: (1000, 1000),
        mounts,
        cwd: "/".into(),
        env: vec![],
        argv: vec!["true".into()],
        writable_paths: vec![],
        limits: Default::default(),
        unenforced_limits: vec![],
        net: NetMode::Off,
        egress: None,
        rlimit_nofile: 1024,
        rlimit_nproc: None,
        summarize_changes: false,
        no_huge_pages: false,
        ram_fd: None,
        sealed_sources: vec![],
    }
}

/// prepare + build + pivot + finish, as the child runs them.
fn execute(
    os: &Fake,
    plan: &LaunchPlan,
    disk: Option<&OverlayDirs<FakeFd>>,
) -> Result<(), MountError> {
    let mut prepared = prepare(os, plan, Some(&FakeFd::Given("userns".into())))?;
    let (root, _) = build(
        os,
        plan,
        &FakeFd::Given("mount-point".into()),
        &mut prepared,
        disk,
    )?;
    pivot(os, &root).map_err(err("pivot", Path::new("/")))?;
    finish(os, plan).map_err(err("finish", Path::new("/")))
}

fn spec(workspace: WorkspaceMode) -> RunSpec {
    RunSpec {
        name: "t".into(),
        hostname: "t".into(),
        profile: Profile::Moderate,
        net: NetMode::Off,
        domains: vec![],
        ports: vec![],
        workspace,
        project_dir: p("/home/u/proj"),
        binds: vec![],
        env: vec![],
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
        protected: vec![],
        context: vec![],
        repos: vec![],
        home_files: Default::default(),
        secrets: Default::default(),
        agent: None,
        defaulted: Default::default(),
        agent_grace: None,
        agent_min_warm: 0,
        setup: Vec::new(),
        backend: Default::default(),
        rootfs: Default::default(),
        kernel: None,
        workspace_slot: false,
        workspace_slot_rw: false,
        pool_member: false,
        vm_claim_slot: false,
    }
}

fn facts(uid: u32) -> HostFacts {
    HostFacts {
        uid,
        gid: uid,
        root_entries: vec![("usr".into(), RootEntry::Dir)],
        etc_entries: vec![],
        profile_d: vec![],
        project_owner: (1000, 1000),
        limits: LimitSupport {
            memory: true,
            pids: true,
            cpu: true,
        },
        tmpfs_xattr: true,
        pasta: false,
        offer: Offer::default(),
        vm: None,
        image: None,
    }
}

/// The host the planner's plans are executed against.
fn host() -> Fake {
    Fake::with_host(&[
        ("/usr", Kind::Dir),
        ("/dev/null", Kind::File),
        ("/dev/zero", Kind::File),
        ("/dev/full", Kind::File),
        ("/dev/random", Kind::File),
        ("/dev/urandom", Kind::File),
        ("/dev/tty", Kind::File),
        ("/home/u/proj/.git/config", Kind::File),
        ("/home/u/proj/.git/hooks", Kind::Dir),
        ("/home/u/proj/.git/info", Kind::Dir),
        ("/home/u/proj/.vscode", Kind::Dir),
        // A planted link: Protect must never act through it.
        ("/home/u/proj/.claude", Kind::Symlink),
        ("/home/u/proj/src", Kind::Symlink),
        ("/opt/data", Kind::Dir),
    ])
}

fn lowered(s: &RunSpec, uid: u32) -> LaunchPlan {
    let planner::Plan::Container(plan) = planner::plan(s, &facts(uid)).expect("plan") else {
        panic!("not a container plan")
    };
    plan
}

/// The lines from the first one starting with `from` to the end.
fn from(lines: Vec<String>, first: &str) -> Vec<String> {
    let i = lines
        .iter()
        .position(|l| l.starts_with(first))
        .unwrap_or_else(|| panic!("no line starts with {first:?} in\n{}", lines.join("\n")));
    lines[i..].to_vec()
}

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_small_plan_becomes_exactly_these_calls() {
    let os = Fake::with_host(&[("/usr", Kind::Dir), ("/dev/null", Kind::File)]);
    let plan = plan_of(vec![
        MountStep::Tmpfs {
            target: p("/"),
            mode: 0o755,
            size: Some(4 << 20),
            owner: (1000, 1000),
            noexec: false,
        },
        MountStep::BindRo {
            source: p("/usr"),
            target: p("/usr"),
        },
        MountStep::Symlink {
            target: p("/bin"),
            points_to: p("usr/bin"),
        },
        MountStep::File {
            target: p("/etc/hostname"),
            contents: "t\n".into(),
            mode: 0o644,
        },
        MountStep::Device {
            name: "null".into(),
        },
        MountStep::Tmpfs {
            target: p("/tmp"),
            mode: 0o1777,
            size: Some(1 << 20),
            owner: (1000, 1000),
            noexec: false,
        },
        MountStep::RootReadOnly,
    ]);
    execute(&os, &plan, None).expect("execute");
    assert_eq!(
        os.calls(),
        lines(&[
            // prepare: every source opened as a detached mount with its final flags
            "open_tree_clone /usr recursive",
            "mount_setattr tree(host:/usr) rdonly|nosuid|nodev recursive",
            "open_tree_clone /dev/null recursive",
            "mount_setattr tree(host:/dev/null) nosuid|noexec recursive",
            // the root
            "fsmount tmpfs mode=755,uid=1000,gid=1000,size=4194304 nosuid|nodev",
            "move_mount tree(tmpfs) -> mount-point",
            // a bind: the mount point made component by component, never following a link
            "stat tree(host:/usr)",
            "dup tree(tmpfs)",
            "openat /usr (path|dir|nofollow)",
            "mkdir /usr 755",
            "openat /usr (path|dir|nofollow)",
            "move_mount tree(host:/usr) -> /usr",
            "dup tree(tmpfs)",
            "symlink /bin -> usr/bin",
            "dup tree(tmpfs)",
            "openat /etc (path|dir|nofollow)",
            "mkdir /etc 755",
            "openat /etc (path|dir|nofollow)",
            "openat /etc/hostname (wronly|nofollow|creat|excl) 644",
            "write /etc/hostname 2 bytes",
            "chmod /etc/hostname 644",
            // a device: an empty file to bind onto
            "dup tree(tmpfs)",
            "openat /dev (path|dir|nofollow)",
            "mkdir /dev 755",
            "openat /dev (path|dir|nofollow)",
            "openat /dev/null (path|nofollow)",
            "openat /dev/null (wronly|nofollow|creat|excl) 644",
            "openat /dev/null (path|nofollow)",
            "move_mount tree(host:/dev/null) -> /dev/null",
            "dup tree(tmpfs)",
            "openat /tmp (path|dir|nofollow)",
            "mkdir /tmp 755",
            "openat /tmp (path|dir|nofollow)",
            "mount tmpfs on /tmp (tmpfs nosuid|nodev) mode=1777,uid=1000,gid=1000,size=1048576",
            // after everything: into the new root, which becomes read-only
            "pivot_root tree(tmpfs)",
            "remount / (rdonly|nosuid|nodev)",
        ])
    );
}

#[test]
fn overlay_workspace_and_every_tmpfs_sized_from_the_memory_budget() {
    let os = host();
    let mut s = spec(WorkspaceMode::Overlay);
    s.resources.memory = Some(ByteSize(1 << 30));
    execute(&os, &lowered(&s, 1000), None).expect("execute");
    let effects = os.effects();
    // The budget (1 GiB) in sixteenths: /dev/shm and /run 1, /tmp and $HOME 4, the upper 6.
    let tmpfs: Vec<String> = effects
        .iter()
        .filter(|l| l.starts_with("mount tmpfs on"))
        .cloned()
        .collect();
    assert_eq!(
        tmpfs,
        lines(&[
            "mount tmpfs on /dev (tmpfs nosuid|nodev|noexec) mode=755,uid=1000,gid=1000,size=1048576",
            "mount tmpfs on /dev/shm (tmpfs nosuid|nodev) mode=1777,uid=1000,gid=1000,size=67108864",
            "mount tmpfs on /tmp (tmpfs nosuid|nodev) mode=1777,uid=1000,gid=1000,size=268435456",
            "mount tmpfs on /run (tmpfs nosuid|nodev) mode=755,uid=1000,gid=1000,size=67108864",
            "mount tmpfs on /home/agent (tmpfs nosuid|nodev) mode=700,uid=1000,gid=1000,size=268435456",
            "mount tmpfs on /.airlock-stage/up (tmpfs nosuid|nodev) mode=755,uid=1000,gid=1000,size=402653184",
        ])
    );
    // Rootless: the lower layer is read-only and not idmapped.
    assert!(effects.contains(
        &"mount_setattr tree(host:/home/u/proj) rdonly|nosuid|nodev recursive".to_string()
    ));
    assert_eq!(
        from(effects, "mkdir /.airlock-stage "),
        lines(&[
            "mkdir /.airlock-stage 755",
            "mkdir /.airlock-stage/lower 755",
            "move_mount tree(host:/home/u/proj) -> /.airlock-stage/lower",
            "mkdir /.airlock-stage/up 755",
            "mount tmpfs on /.airlock-stage/up (tmpfs nosuid|nodev) mode=755,uid=1000,gid=1000,size=402653184",
            "mkdir /.airlock-stage/up/upper 755",
            "mkdir /.airlock-stage/up/work 700",
            "chown /.airlock-stage/up/upper 1000:1000",
            "chmod /.airlock-stage/up/upper 755",
            "mkdir /workspace 755",
            "mount overlay on /workspace (overlay nosuid|nodev) lowerdir=/fd@/.airlock-stage/lower,\
             upperdir=/fd@/.airlock-stage/up/upper,workdir=/fd@/.airlock-stage/up/work,userxattr",
            "umount /.airlock-stage/lower",
            "umount /.airlock-stage/up",
            "rmdir /.airlock-stage/lower",
            "rmdir /.airlock-stage/up",
            "rmdir /.airlock-stage",
            // Protect: only what exists in the workspace, never through the planted .claude link
            "open_tree_clone /workspace/.git/hooks recursive",
            "mount_setattr tree(clone:/workspace/.git/hooks) rdonly|nosuid|nodev recursive",
            "move_mount tree(clone:/workspace/.git/hooks) -> /workspace/.git/hooks",
            "open_tree_clone /workspace/.git/config recursive",
            "mount_setattr tree(clone:/workspace/.git/config) rdonly|nosuid|nodev recursive",
            "move_mount tree(clone:/workspace/.git/config) -> /workspace/.git/config",
            "open_tree_clone /workspace/.vscode recursive",
            "mount_setattr tree(clone:/workspace/.vscode) rdonly|nosuid|nodev recursive",
            "move_mount tree(clone:/workspace/.vscode) -> /workspace/.vscode",
            "pivot_root tree(tmpfs)",
            "remount / (rdonly|nosuid|nodev)",
        ])
    );
}

#[test]
fn bind_workspace_is_idmapped_pins_git_then_protects_never_through_a_link() {
    let os = host();
    execute(&os, &lowered(&spec(WorkspaceMode::Bind), 0), None).expect("execute");
    let effects = os.effects();
    // Root-run: the writable workspace is idmapped to the sandbox user.
    assert!(effects.contains(
        &"mount_setattr tree(host:/home/u/proj) nosuid|nodev recursive idmap(userns)".to_string()
    ));
    assert_eq!(
        from(effects, "move_mount tree(host:/home/u/proj)"),
        lines(&[
            "move_mount tree(host:/home/u/proj) -> /workspace",
            // Pin: .git becomes a mount point of itself (cannot be renamed away) ...
            "open_tree_clone /workspace/.git recursive",
            "move_mount tree(clone:/workspace/.git) -> /workspace/.git",
            // ... before the read-only protections on top of it.
            "open_tree_clone /workspace/.git/info recursive",
            "mount_setattr tree(clone:/workspace/.git/info) rdonly|nosuid|nodev recursive",
            "move_mount tree(clone:/workspace/.git/info) -> /workspace/.git/info",
            "open_tree_clone /workspace/.git/hooks recursive",
            "mount_setattr tree(clone:/workspace/.git/hooks) rdonly|nosuid|nodev recursive",
            "move_mount tree(clone:/workspace/.git/hooks) -> /workspace/.git/hooks",
            "open_tree_clone /workspace/.git/config recursive",
            "mount_setattr tree(clone:/workspace/.git/config) rdonly|nosuid|nodev recursive",
            "move_mount tree(clone:/workspace/.git/config) -> /workspace/.git/config",
            "open_tree_clone /workspace/.vscode recursive",
            "mount_setattr tree(clone:/workspace/.vscode) rdonly|nosuid|nodev recursive",
            "move_mount tree(clone:/workspace/.vscode) -> /workspace/.vscode",
            "pivot_root tree(tmpfs)",
            "remount / (rdonly|nosuid|nodev)",
        ])
    );
    // The planted link was looked at without following it, and left alone.
    let calls = os.calls();
    assert!(calls.contains(&"openat /workspace/.claude (path|nofollow)".to_string()));
    assert!(!calls
        .iter()
        .any(|c| c.contains("tree(clone:/workspace/.claude)")));
}

#[test]
fn a_disk_upper_layer_uses_the_run_directory_and_an_unstaged_up_is_fine() {
    let os = host();
    let mut plan = plan_of(vec![
        MountStep::Tmpfs {
            target: p("/"),
            mode: 0o755,
            size: None,
            owner: (0, 0),
            noexec: false,
        },
        MountStep::Overlay {
            lower: p("/home/u/proj"),
            target: p("/workspace"),
            idmap: false,
            upper: UpperStore::Disk,
        },
    ]);
    plan.user = (1000, 1000);
    let disk = OverlayDirs {
        upper: FakeFd::Given("run/upper".into()),
        work: FakeFd::Given("run/work".into()),
    };
    // The kernel answers EINVAL for the `up` staging point a disk upper never mounted.
    os.fail_on("umount /.airlock-stage/up", libc::EINVAL);
    execute(&os, &plan, Some(&disk)).expect("execute");
    assert_eq!(
        from(os.effects(), "move_mount tree(host:/home/u/proj)"),
        lines(&[
            "move_mount tree(host:/home/u/proj) -> /.airlock-stage/lower",
            "chown run/upper 1000:1000",
            "chmod run/upper 755",
            "mkdir /workspace 755",
            "mount overlay on /workspace (overlay nosuid|nodev) lowerdir=/fd@/.airlock-stage/lower,\
             upperdir=/fd@run/upper,workdir=/fd@run/work,userxattr",
            "umount /.airlock-stage/lower",
            "umount /.airlock-stage/up",
            "rmdir /.airlock-stage/lower",
            "rmdir /.airlock-stage/up",
            "rmdir /.airlock-stage",
            "pivot_root tree(tmpfs)",
        ])
    );
    // The O_PATH upper is reopened readable for the change summary.
    assert!(os
        .calls()
        .contains(&"reopen run/upper (rdonly|dir)".to_string()));
}

#[test]
fn a_mount_target_through_a_planted_symlink_stops_the_launch() {
    let os = host();
    let mut s = spec(WorkspaceMode::Overlay);
    s.binds.push(airlock_model::spec::BindSpec {
        source: p("/opt/data"),
        target: p("/workspace/src/data"),
        writable: false,
    });
    let err = execute(&os, &lowered(&s, 1000), None).expect_err("refused");
    assert_eq!(err.what, "cannot create mount point");
    assert_eq!(err.path, p("/workspace/src/data"));
    assert!(
        err.to_string().contains("symlinks are not followed"),
        "{err}"
    );
    assert!(!os
        .calls()
        .iter()
        .any(|c| c.starts_with("move_mount tree(host:/opt/data)")));
    assert!(!os.calls().iter().any(|c| c.starts_with("pivot_root")));
}

#[test]
fn a_failing_call_names_the_step_it_belongs_to() {
    let os = host();
    os.fail_on("mount overlay on /workspace", libc::EPERM);
    let err = execute(&os, &lowered(&spec(WorkspaceMode::Overlay), 1000), None).expect_err("fails");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot mount the overlay workspace on /workspace: {}",
            io::Error::from_raw_os_error(libc::EPERM)
        )
    );
    assert_eq!(
        os.calls().last().map(String::as_str),
        Some(
            "mount overlay on /workspace (overlay nosuid|nodev) lowerdir=/fd@/.airlock-stage/lower,\
             upperdir=/fd@/.airlock-stage/up/upper,workdir=/fd@/.airlock-stage/up/work,userxattr"
        ),
        "nothing after the failure"
    );
}

/// The child's way in, as `enter` runs it for the real child.
fn enter_with(os: &Fake, plan: &LaunchPlan, prepared: Option<Prepared<FakeFd>>) -> Vec<String> {
    enter(
        os,
        plan,
        FakeFd::Given("mount-point".into()),
        prepared,
        None,
    )
    .expect("enter");
    os.effects()
}

#[test]
fn the_launch_sequence_of_a_rootless_child_opens_its_own_bind_sources() {
    let os = host();
    let plan = lowered(&spec(WorkspaceMode::None), 1000);
    let effects = enter_with(&os, &plan, None);
    assert_eq!(
        effects[..4],
        lines(&[
            "unshare cgroup",
            "mount / private recursive",
            "open_tree_clone /usr recursive",
            "mount_setattr tree(host:/usr) rdonly|nosuid|nodev recursive",
        ])[..]
    );
    assert_eq!(
        effects[effects.len() - 2..],
        lines(&["pivot_root tree(tmpfs)", "remount / (rdonly|nosuid|nodev)"])[..]
    );
}

#[test]
fn the_launch_sequence_of_a_root_run_child_uses_what_the_parent_prepared() {
    let os = host();
    let plan = lowered(&spec(WorkspaceMode::None), 0);
    // The privileged parent opened the sources (and idmapped them) before the clone.
    let prepared = prepare(&os, &plan, None).expect("prepare");
    let before = os.calls().len();
    let effects = enter_with(&os, &plan, Some(prepared));
    let own = &os.calls()[before..];
    assert!(
        !own.iter().any(|c| c.starts_with("open_tree_clone /usr")),
        "the child never opens a host path itself: {own:?}"
    );
    let i = effects
        .iter()
        .position(|l| l.starts_with("setresgid"))
        .expect("becomes root");
    assert_eq!(
        effects[i..i + 4],
        lines(&[
            "setresgid 0, setgroups [], setresuid 0",
            "unshare cgroup",
            "mount / private recursive",
            "fsmount tmpfs mode=755,uid=0,gid=0,size=4194304 nosuid|nodev",
        ])[..]
    );
}

#[test]
fn a_failing_launch_step_is_named() {
    let os = host();
    os.fail_on("mount / private", libc::EPERM);
    let plan = lowered(&spec(WorkspaceMode::None), 1000);
    let err =
        enter(&os, &plan, FakeFd::Given("mount-point".into()), None, None).expect_err("fails");
    assert_eq!(err.what, "make mounts private");
    assert_eq!(
        err.error,
        io::Error::from_raw_os_error(libc::EPERM).to_string()
    );
    assert_eq!(os.calls().len(), 2, "nothing after the failed step");
}

#[test]
fn an_image_root_stacks_its_layers_and_replaces_the_images_own_etc_files() {
    let os = Fake::with_host(&[("/s/layers/top", Kind::Dir), ("/s/layers/base", Kind::Dir)]);
    let plan = plan_of(vec![
        MountStep::Tmpfs {
            target: p("/"),
            mode: 0o755,
            size: Some(4 << 20),
            owner: (1000, 1000),
            noexec: false,
        },
        MountStep::ImageLayer {
            source: p("/s/layers/top"),
        },
        MountStep::ImageLayer {
            source: p("/s/layers/base"),
        },
        MountStep::ImageRoot {
            upper_size: 8 << 20,
            owner: (1000, 1000),
        },
        // The image has its own file there (the fake's overlay shows no lower content, so a
        // first step puts one in place): it is replaced, never written through.
        MountStep::Symlink {
            target: p("/etc/hostname"),
            points_to: p("/proc/self/root/host-file"),
        },
        MountStep::File {
            target: p("/etc/hostname"),
            contents: "t\n".into(),
            mode: 0o644,
        },
        MountStep::RootReadOnly,
    ]);
    execute(&os, &plan, None).expect("execute");
    let calls = os.calls();
    assert_eq!(
        from(calls.clone(), "openat /.airlock-image/root/etc/hostname")[..5],
        lines(&[
            "openat /.airlock-image/root/etc/hostname (wronly|nofollow|creat|excl) 644",
            "unlink /.airlock-image/root/etc/hostname",
            "openat /.airlock-image/root/etc/hostname (wronly|nofollow|creat|excl) 644",
            "write /.airlock-image/root/etc/hostname 2 bytes",
            "chmod /.airlock-image/root/etc/hostname 644",
        ])[..]
    );
    assert_eq!(
        calls[..4],
        lines(&[
            "open_tree_clone /s/layers/top recursive",
            "mount_setattr tree(host:/s/layers/top) rdonly|nosuid|nodev recursive",
            "open_tree_clone /s/layers/base recursive",
            "mount_setattr tree(host:/s/layers/base) rdonly|nosuid|nodev recursive",
        ])[..]
    );
    let mount = calls
        .iter()
        .find(|l| l.starts_with("mount overlay"))
        .expect("the overlay mount");
    assert_eq!(
        mount,
        "mount overlay on /.airlock-image/root (overlay nosuid|nodev) lowerdir=/fd@/.airlock-image/0:/fd@/.airlock-image/1,upperdir=/fd@/.airlock-image/up/upper,workdir=/fd@/.airlock-image/up/work,userxattr"
    );
    // The staged layers and upper are detached once the overlay holds them.
    let after = from(calls.clone(), "mount overlay");
    for staged in [
        "/.airlock-image/0",
        "/.airlock-image/1",
        "/.airlock-image/up",
    ] {
        assert!(
            after.iter().any(|l| l == &format!("umount {staged}")),
            "{staged} in\n{}",
            after.join("\n")
        );
    }
    // The image's root is what pivot_root enters.
    assert!(
        calls
            .iter()
            .any(|l| l.starts_with("pivot_root") && l.contains(".airlock-image/root")),
        "{}",
        calls.join("\n")
    );
}

/// A sealed source (the user's bind, the project) is opened without following links: one
/// planted in its path since it was checked is refused and names the source; the host's own
/// paths (not sealed) are opened as they are.
#[test]
fn sealed_sources_are_never_opened_through_a_symlink() {
    let os = Fake::with_host(&[
        ("/srv/p", Kind::Dir),
        ("/srv/p/data", Kind::Symlink),
        ("/srv/q", Kind::Dir),
        ("/usr", Kind::Dir),
    ]);
    let step = |src: &str, target: &str| MountStep::BindRo {
        source: p(src),
        target: p(target),
    };
    let mut plan = plan_of(vec![step("/usr", "/usr"), step("/srv/p/data", "/data")]);
    plan.sealed_sources = vec![p("/srv/p/data")];
    let e = prepare(&os, &plan, None).expect_err("followed a planted link");
    let msg = e.to_string();
    assert!(
        msg.contains("/srv/p/data") && msg.contains("symbolic link"),
        "{msg}"
    );
    let mut plan = plan_of(vec![step("/usr", "/usr"), step("/srv/q", "/q")]);
    plan.sealed_sources = vec![p("/srv/q")];
    prepare(&os, &plan, None).expect("a real directory");
    let calls = os.calls();
    assert!(
        calls.iter().any(|c| c == "open_tree_clone nofollow /srv/q")
            && calls.iter().any(|c| c == "open_tree_clone /usr recursive"),
        "{calls:?}"
    );
}
