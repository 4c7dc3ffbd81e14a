use super::*;
use airlock_model::exit;
use airlock_model::plan::{LaunchPlan, LimitSupport};
use airlock_model::policy::{BackendKind, NetMode};

fn facts() -> HostFacts {
    HostFacts {
        uid: 1000,
        gid: 1000,
        root_entries: vec![],
        etc_entries: vec![],
        profile_d: vec![],
        project_owner: (1000, 1000),
        limits: LimitSupport::default(),
        tmpfs_xattr: true,
        pasta: false,
        offer: offer(),
        vm: None,
        image: None,
    }
}

fn launch_plan(name: &str, argv: &[&str]) -> Plan {
    Plan::Container(LaunchPlan {
        name: name.into(),
        hostname: name.into(),
        rootless: true,
        uid_map: vec![],
        gid_map: vec![],
        user: (1000, 1000),
        mounts: vec![],
        cwd: "/".into(),
        env: vec![],
        argv: argv.iter().map(|s| s.to_string()).collect(),
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
    })
}

fn opts<'a>(state: &'a Path, layout: &'a Layout, facts: &'a HostFacts) -> RunOptions<'a> {
    RunOptions {
        state_dir: state,
        layout,
        timeout: None,
        tty: false,
        forward_stdin: false,
        facts,
        net_journal: None,
        secrets: &[],
        intercept: None,
        persist: None,
        instance_id: None,
        on_egress: None,
        on_ready: None,
        on_egress_ctx: None,
        defer_signal: None,
        exec_stub: false,
        on_child: None,
    }
}

#[test]
fn the_fake_records_every_call_through_any_backend() {
    let b = AnyBackend::Fake(Fake::new(facts(), 7));
    let dir = Path::new("/state/sandboxes/box");
    let sbx = Instance {
        name: "box",
        dir,
        id: Some("abc"),
    };
    let f = facts();
    let layout = Layout::None;
    assert_eq!(b.check(Path::new("/p"), &layout), facts());
    let out = b
        .start(
            &launch_plan("box", &["make", "test"]),
            &opts(Path::new("/s"), &layout, &f),
        )
        .expect("start");
    assert_eq!(out.exit_code(), 7);
    assert_eq!(b.observe(&sbx), Observed::Stopped);
    let req = ExecRequest {
        argv: vec!["ls".into()],
        ..Default::default()
    };
    assert!(b.exec(&sbx, &req).is_err(), "not running: refused");
    if let AnyBackend::Fake(fk) = &b {
        fk.set_running("box", true);
    }
    assert_eq!(b.observe(&sbx), Observed::Running { pid1: 1 });
    assert_eq!(b.exec(&sbx, &req).expect("exec").exit_code(), 7);
    assert_eq!(b.stats(&sbx), Some(Usage::default()));
    b.reclaim(&sbx);
    b.destroy(&sbx);
    assert_eq!(b.observe(&sbx), Observed::Stopped);
    let AnyBackend::Fake(fk) = &b else {
        unreachable!()
    };
    let name = || "box".to_string();
    assert_eq!(
        fk.calls(),
        vec![
            Call::Check {
                project_dir: "/p".into()
            },
            Call::Start {
                name: name(),
                argv: vec!["make".into(), "test".into()]
            },
            Call::Observe { name: name() },
            Call::Exec {
                name: name(),
                req: req.clone()
            },
            Call::Observe { name: name() },
            Call::Exec {
                name: name(),
                req: req.clone()
            },
            Call::Stats { name: name() },
            Call::Reclaim { name: name() },
            Call::Destroy { name: name() },
            Call::Observe { name: name() },
        ]
    );
}

#[test]
fn backends_by_kind() {
    assert!(matches!(
        AnyBackend::for_kind(BackendKind::Container),
        Some(AnyBackend::Container(Container))
    ));
    assert!(matches!(
        AnyBackend::for_kind(BackendKind::Microvm),
        Some(AnyBackend::MicroVm(_))
    ));
}

#[test]
fn the_backend_of_a_stored_spec() {
    assert!(matches!(
        AnyBackend::for_spec(br#"{"name":"x","backend":"container"}"#),
        Ok(AnyBackend::Container(_))
    ));
    // Specs written before the field existed run in containers.
    assert!(matches!(
        AnyBackend::for_spec(br#"{"name":"x"}"#),
        Ok(AnyBackend::Container(_))
    ));
    assert!(matches!(
        AnyBackend::for_spec(br#"{"backend":"microvm"}"#),
        Ok(AnyBackend::MicroVm(_))
    ));
}

#[test]
fn exit_codes_of_endings() {
    let o = |ending| Outcome {
        ending,
        changes: None,
    };
    assert_eq!(o(Ending::Exited(3)).exit_code(), 3);
    assert_eq!(o(Ending::TimedOut).exit_code(), exit::TIMEOUT);
    assert_eq!(
        o(Ending::OutOfMemory).exit_code(),
        exit::SIGNAL_BASE + libc::SIGKILL
    );
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("airlock-iso-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tempdir");
    d
}

#[test]
fn container_observes_a_published_pid1_only_when_it_is_that_process() {
    let dir = tempdir("observe");
    let sbx = Instance {
        name: "box",
        dir: &dir,
        id: None,
    };
    assert_eq!(Container.observe(&sbx), Observed::Stopped);
    let me = std::process::id() as i32;
    let start = container::proc_starttime(me).expect("starttime");
    std::fs::write(dir.join(container::PID1_FILE), format!("{me} {start}\n")).expect("write");
    assert_eq!(Container.observe(&sbx), Observed::Running { pid1: me });
    // A recycled pid (another start time) is not the sandbox: it died, leaving its record.
    std::fs::write(
        dir.join(container::PID1_FILE),
        format!("{me} {}\n", start + 1),
    )
    .expect("write");
    assert_eq!(Container.observe(&sbx), Observed::Dead);
    Container.reclaim(&sbx);
    assert_eq!(Container.observe(&sbx), Observed::Stopped);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn container_exec_without_a_recorded_plan_says_so() {
    let dir = tempdir("noplan");
    let sbx = Instance {
        name: "box",
        dir: &dir,
        id: None,
    };
    let err = Container
        .exec(
            &sbx,
            &ExecRequest {
                argv: vec!["true".into()],
                ..Default::default()
            },
        )
        .expect_err("no plan");
    assert!(err.to_string().contains("plan.json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn container_reclaim_and_destroy_clear_their_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir("destroy");
    let sbx = Instance {
        name: "box",
        dir: &dir,
        id: None,
    };
    std::fs::write(dir.join(container::exec::CONTROL_SOCKET), "").expect("write");
    std::fs::write(dir.join("spec.json"), "{}").expect("write");
    Container.reclaim(&sbx);
    assert!(!dir.join(container::exec::CONTROL_SOCKET).exists());
    // The kernel leaves an overlay's work directory mode 0000.
    std::fs::create_dir_all(dir.join("work/work")).expect("mkdir");
    std::fs::create_dir_all(dir.join("upper/x")).expect("mkdir");
    std::fs::set_permissions(
        dir.join("work/work"),
        std::fs::Permissions::from_mode(0o000),
    )
    .expect("chmod");
    Container.destroy(&sbx);
    assert!(!dir.join("work").exists() && !dir.join("upper").exists());
    assert!(dir.join("spec.json").exists(), "the folder is the caller's");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn container_records_its_plan_for_exec_in_the_folder() {
    let dir = tempdir("record");
    let Plan::Container(p) = launch_plan("box", &[]) else {
        panic!("not a container plan")
    };
    Container::record_plan(&dir, &p).expect("record");
    let back: LaunchPlan =
        serde_json::from_slice(&std::fs::read(dir.join(PLAN_FILE)).expect("read")).expect("json");
    assert_eq!(back, p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cpu_time_without_a_cpu_hierarchy_comes_from_the_cgroups_processes() {
    let dir = std::env::temp_dir().join(format!("airlock-procs-cpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    // This test process stands in for QEMU: it has used some CPU time by now.
    let mut x = 0u64;
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_millis(80) {
        x = x.wrapping_mul(31).wrapping_add(7);
    }
    std::hint::black_box(x);
    std::fs::write(
        dir.join("cgroup.procs"),
        format!("{}\n", std::process::id()),
    )
    .expect("procs");
    let missing = dir.join("nope");
    let got = super::procs_cpu_usec(&[missing, dir.clone()]);
    assert!(got.is_some_and(|us| us >= 10_000), "{got:?}");
    std::fs::write(dir.join("cgroup.procs"), "").expect("procs");
    assert_eq!(
        super::procs_cpu_usec(std::slice::from_ref(&dir)),
        None,
        "an empty cgroup"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
