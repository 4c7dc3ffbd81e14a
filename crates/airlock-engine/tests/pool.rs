//! Engine-tier tests of the warm pool's records: the key (what a claim may bind, what it may
//! not), and the claim as one rename of a member's ready marker in a real directory, with
//! concurrent claimers, and the store told of it afterwards (a real SQLite file).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};

use airlock_engine::pool::{self, MemberState};
use airlock_engine::Store;
use airlock_model::config::{Inject, Secret, SecretSource};
use airlock_model::policy::{BackendKind, ByteSize, NetMode, Profile, WorkspaceMode};
use airlock_model::spec::{BindSpec, Resources, RootFs, RunSpec, SandboxUser, Stdio};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("airlock-pool-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("store.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn member() -> RunSpec {
    RunSpec {
        name: "run-aaaa".into(),
        hostname: "run-aaaa".into(),
        profile: Profile::Moderate,
        net: NetMode::Filtered,
        domains: vec!["one.example".into()],
        ports: vec![443],
        workspace: WorkspaceMode::None,
        project_dir: PathBuf::from("/srv/where-the-daemon-started"),
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
        argv: vec![],
        persistent: true,
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

/// What `run` makes for the same policy: its own name, command, variables, directory,
/// terminal and plain secrets.
fn run_of(m: &RunSpec) -> RunSpec {
    let mut r = m.clone();
    r.name = "run-bbbb".into();
    r.hostname = "run-bbbb".into();
    r.persistent = false;
    r.argv = vec!["sh".into(), "-c".into(), "echo hi".into()];
    r.env = vec![("GREETING".into(), "hello".into())];
    r.workdir = Some(PathBuf::from("/tmp"));
    r.stdio = Stdio::Tty;
    r.project_dir = PathBuf::from("/home/u/elsewhere");
    r.secrets.insert(
        "TOKEN".into(),
        Secret {
            source: SecretSource::FromEnv("TOKEN_SRC".into()),
            inject: None,
        },
    );
    r
}

/// One change to a run's spec.
type Change = Box<dyn Fn(&mut RunSpec)>;

#[test]
fn a_claim_binds_what_the_key_leaves_out_and_nothing_else() {
    let m = member();
    assert_eq!(pool::key(&m), pool::key(&run_of(&m)));
    // A filtered run's allowlist is put in force at claim.
    let mut other = run_of(&m);
    other.domains = vec!["two.example".into()];
    assert_eq!(
        pool::key(&m),
        pool::key(&other),
        "domains are bound at claim"
    );
    // So are injected secrets: their values and CA go to the member's supervisor at claim.
    let mut injected = run_of(&m);
    injected.secrets.insert(
        "KEY".into(),
        Secret {
            source: SecretSource::FromEnv("K".into()),
            inject: Some(Inject {
                hosts: vec!["one.example".into()],
                header: Some("x-api-key".into()),
                bearer: false,
                basic: false,
                query: None,
            }),
        },
    );
    assert_eq!(
        pool::key(&m),
        pool::key(&injected),
        "injected secrets are bound at claim"
    );
    let changed: Vec<(&str, Change)> = vec![
        (
            "domains with the network off",
            Box::new(|r| {
                r.net = NetMode::Off;
                r.domains = vec!["two.example".into()];
            }),
        ),
        ("net", Box::new(|r| r.net = NetMode::Off)),
        ("ports", Box::new(|r| r.ports = vec![443, 80])),
        ("profile", Box::new(|r| r.profile = Profile::Restrictive)),
        (
            "disk",
            Box::new(|r| r.resources.disk = Some(ByteSize(1 << 30))),
        ),
        ("user", Box::new(|r| r.user = SandboxUser::Root)),
        (
            "image",
            Box::new(|r| {
                r.rootfs = RootFs::Image {
                    reference: "docker.io/library/alpine:3".into(),
                    digest: Some("sha256:00".into()),
                }
            }),
        ),
        (
            "workspace",
            Box::new(|r| r.workspace = WorkspaceMode::Overlay),
        ),
    ];
    for (what, change) in changed {
        let mut r = run_of(&m);
        change(&mut r);
        assert_ne!(
            pool::key(&m),
            pool::key(&r),
            "{what} must not be bound at claim"
        );
    }
}

/// A container run's own `--ro`/`--rw`/`[mounts]` binds are bound at claim: a pool started with
/// none serves runs with any, and its member spec has none. A microVM's stay in its key (its
/// read-only mounts are snapshots made at boot).
#[test]
fn binds_are_bound_at_claim_for_containers() {
    let m = member();
    let mut r = run_of(&m);
    r.binds = vec![
        BindSpec {
            source: PathBuf::from("/usr/share/doc"),
            target: PathBuf::from("/data"),
            writable: false,
        },
        BindSpec {
            source: PathBuf::from("/home/u/out"),
            target: PathBuf::from("/out"),
            writable: true,
        },
    ];
    assert_eq!(pool::key(&m), pool::key(&r), "binds are bound at claim");
    let mut made = r.clone();
    pool::normalize_bound_at_claim(&mut made);
    assert!(
        made.binds.is_empty(),
        "a member starts without the run's binds"
    );
    // A microVM's are bound at claim too (snapshots in its claim slot: the next test).
    let mut vm = member();
    vm.backend = BackendKind::Microvm;
    let mut vm_run = run_of(&vm);
    vm_run.binds = r.binds[..1].to_vec();
    assert_eq!(
        pool::key(&vm),
        pool::key(&vm_run),
        "a microVM's binds at claim"
    );
}

/// Limits (memory, pids, cpus, defaulted or not) are bound at claim; a workspace pool's
/// member (`workspace_slot`) serves overlay and bind runs of any project, with their own
/// protected paths and limits, and nothing without a workspace.
#[test]
fn limits_and_workspaces_are_bound_at_claim() {
    let m = member();
    let mut r = run_of(&m);
    r.resources.memory = Some(ByteSize(1 << 30));
    r.resources.pids = Some(64);
    r.resources.cpus = Some("1.5".parse().expect("cpus"));
    r.defaulted.memory = true;
    assert_eq!(pool::key(&m), pool::key(&r), "limits are bound at claim");

    let mut slot = member();
    slot.workspace_slot = true;
    slot.project_dir = PathBuf::from("/");
    assert_ne!(pool::key(&m), pool::key(&slot));
    for mode in [WorkspaceMode::Overlay, WorkspaceMode::Bind] {
        let mut r = run_of(&m);
        r.workspace = mode;
        r.protected = vec!["secrets.env".into()];
        r.resources.memory = Some(ByteSize(1 << 28));
        assert_eq!(pool::key(&slot), pool::key(&r), "{mode:?}");
        assert_ne!(
            pool::key(&m),
            pool::key(&r),
            "{mode:?} on a no-workspace member"
        );
        // The daemon's member spec of such a run is that member.
        let mut made = r.clone();
        pool::normalize_bound_at_claim(&mut made);
        assert!(made.workspace_slot && made.workspace == WorkspaceMode::None);
        assert_eq!(
            made.resources,
            Resources {
                disk: None,
                ..Resources::default()
            }
        );
    }
    // A named sandbox's clone is a bind of its folder's checkout, attached at claim the same
    // way (issue 16: named starts claim); `run` never has one.
    let mut clone = run_of(&m);
    clone.workspace = WorkspaceMode::Clone;
    clone.workspace_dir = Some(PathBuf::from("/state/sandboxes/x/workspace"));
    assert_eq!(
        pool::key(&slot),
        pool::key(&clone),
        "clone workspaces are attached"
    );
    assert_ne!(
        pool::key(&m),
        pool::key(&clone),
        "clone on a no-workspace member"
    );
    // A microVM's limits are its boot settings: they stay in its key.
    let mut vm = member();
    vm.backend = BackendKind::Microvm;
    let mut vm_run = run_of(&vm);
    vm_run.resources.memory = Some(ByteSize(1 << 30));
    assert_ne!(pool::key(&vm), pool::key(&vm_run));
    // A microVM's overlay workspace goes into its member's slot disk at claim: runs of any
    // project share a slot member's pool (not a no-workspace member's); its bind workspace
    // is not attached (refused cold), a named clone goes into a *writable* slot: a pool of
    // its own, whichever sandbox's clone it is.
    let mut vm_slot = vm.clone();
    vm_slot.workspace_slot = true;
    vm_slot.project_dir = PathBuf::from("/");
    for project in ["/home/u/one", "/home/u/two"] {
        let mut r = run_of(&vm);
        r.workspace = WorkspaceMode::Overlay;
        r.project_dir = PathBuf::from(project);
        assert_eq!(pool::key(&vm_slot), pool::key(&r), "{project}");
        assert_ne!(pool::key(&vm), pool::key(&r), "{project}");
        let mut made = r.clone();
        pool::normalize_bound_at_claim(&mut made);
        assert!(made.workspace_slot && made.workspace == WorkspaceMode::None);
    }
    for mode in [WorkspaceMode::Bind, WorkspaceMode::Clone] {
        let mut r = run_of(&vm);
        r.workspace = mode;
        r.workspace_dir = Some(PathBuf::from("/state/sandboxes/x/workspace"));
        assert_ne!(pool::key(&vm_slot), pool::key(&r), "{mode:?}");
    }
    let mut vm_rw = vm_slot.clone();
    vm_rw.workspace_slot_rw = true;
    for (name, project) in [("x", "/home/u/one"), ("y", "/home/u/two")] {
        let mut r = run_of(&vm);
        r.workspace = WorkspaceMode::Clone;
        r.project_dir = PathBuf::from(project);
        r.workspace_dir = Some(PathBuf::from(format!("/state/sandboxes/{name}/workspace")));
        assert_eq!(pool::key(&vm_rw), pool::key(&r), "{name}");
        let mut made = r.clone();
        pool::normalize_bound_at_claim(&mut made);
        assert!(made.workspace_slot && made.workspace_slot_rw);
        assert_eq!(made.workspace, WorkspaceMode::None);
        // `disk` sizes the slot (the sandbox's image): it stays in the key.
        r.resources.disk = Some(ByteSize(1 << 30));
        assert_ne!(pool::key(&vm_rw), pool::key(&r), "{name}");
    }
}

/// A microVM run's read-only mounts are snapshots made at claim and written into the
/// member's claim slot: a run with `--ro` mounts shares the pool of one without, every
/// microVM member (the daemon's member spec) has the slot and no binds; a container's binds
/// stay in its key (mounted when the member starts). Its `disk` is grown at claim.
#[test]
fn a_microvm_runs_read_only_mounts_and_disk_size_are_bound_at_claim() {
    let ro = |src: &str, dst: &str| airlock_model::spec::BindSpec {
        source: PathBuf::from(src),
        target: PathBuf::from(dst),
        writable: false,
    };
    let mut vm = member();
    vm.backend = BackendKind::Microvm;
    let mut with_ro = run_of(&vm);
    with_ro.binds = vec![ro("/srv/data", "/data"), ro("/etc/motd", "/etc/m")];
    assert_eq!(
        pool::key(&vm),
        pool::key(&with_ro),
        "--ro is bound at claim"
    );
    for r in [vm.clone(), with_ro.clone()] {
        let mut made = r;
        pool::normalize_bound_at_claim(&mut made);
        assert!(made.vm_claim_slot && made.binds.is_empty());
    }
    // `disk`: a member boots with a small one that the claim grows (never shrinks): every
    // size from 16 MiB up shares one pool, a smaller one has its own.
    let with_disk = |bytes: u64| {
        let mut r = run_of(&vm);
        r.resources.disk = Some(ByteSize(bytes));
        r
    };
    let (d64m, d1g, d8m) = (with_disk(64 << 20), with_disk(1 << 30), with_disk(8 << 20));
    assert_eq!(pool::key(&d64m), pool::key(&d1g), "disk is grown at claim");
    assert_ne!(
        pool::key(&d64m),
        pool::key(&vm),
        "a member with a disk or without"
    );
    assert_ne!(
        pool::key(&d64m),
        pool::key(&d8m),
        "a smaller disk is not shrunk"
    );
    let mut made = d1g.clone();
    pool::normalize_bound_at_claim(&mut made);
    assert_eq!(made.resources.disk, Some(ByteSize(16 << 20)));
    // A container's are bound at claim as well, without a claim slot (the test before).
    let m = member();
    let mut c = run_of(&m);
    c.binds = vec![ro("/srv/data", "/data")];
    assert_eq!(pool::key(&m), pool::key(&c), "a container's binds at claim");
    let mut made = c;
    pool::normalize_bound_at_claim(&mut made);
    assert!(!made.vm_claim_slot && made.binds.is_empty());
}

/// `n` members of pool `key`, recorded `ready` and published (their ready markers), as the
/// daemon makes them.
fn ready_members(store: &mut Store, state: &std::path::Path, key: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let m = store.member_insert(key).expect("insert");
            assert!(store
                .member_cas(&m.name, &[MemberState::Warming], MemberState::Ready)
                .expect("cas"));
            pool::publish_ready(state, key, &m.name).expect("publish");
            m.name
        })
        .collect()
}

fn state_of(store: &mut Store, name: &str) -> Option<MemberState> {
    store
        .members()
        .expect("members")
        .into_iter()
        .find(|x| x.name == name)
        .map(|x| x.state)
}

/// A claim takes a published member once: no folder for the pool is an error (the claimer
/// then asks the store whether the pool exists), an empty one a miss, a warming (unpublished)
/// member is never taken; the taker is named by its marker, the store learns of the claim
/// from it (`sync_claims`, or the claimer's `claim_record`), and only the claimer releases.
#[test]
fn no_pool_miss_and_hit() {
    let dir = TempDir::new("claims");
    let state = dir.0.clone();
    let mut store = Store::open(dir.db()).expect("open");
    assert!(pool::take(&state, "k", 1, 1).is_err());
    assert!(!store.pool_exists("k").expect("exists"));
    store.pool_define("k", "{}", 1).expect("define");
    assert!(store.pool_exists("k").expect("exists"));
    // A warming member is not handed out.
    let w = store.member_insert("k").expect("insert");
    assert!(pool::take(&state, "k", 1, 1).is_err());
    assert!(store
        .member_cas(&w.name, &[MemberState::Warming], MemberState::Ready)
        .expect("cas"));
    pool::publish_ready(&state, "k", &w.name).expect("publish");
    let status = |store: &mut Store| {
        let p = &pool::status(store, &state).expect("status")[0];
        (p.ready, p.claimed)
    };
    assert_eq!(status(&mut store), (1, 0));
    assert_eq!(
        pool::take(&state, "k", 42, 7).expect("take"),
        Some(w.name.clone())
    );
    assert_eq!(pool::take(&state, "k", 43, 8).expect("take"), None, "twice");
    assert!(!pool::take_named(&state, "k", &w.name, 43, 8));
    assert_eq!(pool::taken_by(&state, &w.name), Some((42, 7)));
    // The store does not know yet; its figures do (from the marker), and a pass records it.
    assert_eq!(state_of(&mut store, &w.name), Some(MemberState::Ready));
    assert_eq!(status(&mut store), (0, 1));
    pool::sync_claims(&mut store, &state);
    assert_eq!(state_of(&mut store, &w.name), Some(MemberState::Claimed));
    assert!(!store.claim_record(&w.name, 42, 7).expect("again"));
    // Only its claimer releases it.
    assert!(!store.member_release(&w.name, 41).expect("release"));
    assert!(store.member_release(&w.name, 42).expect("release"));
    store.miss("k").expect("miss");
    store.claim_done("k", 1500).expect("done");
    let p = &store.pools().expect("pools")[0];
    assert_eq!((p.hits, p.misses), (1, 1));
    assert_eq!(store.claim_latencies("k").expect("latencies"), vec![1500]);
    // A member recorded ready whose marker never was made (a daemon killed in between) is
    // published by the next pass.
    let lost = store.member_insert("k").expect("insert");
    assert!(store
        .member_cas(&lost.name, &[MemberState::Warming], MemberState::Ready)
        .expect("cas"));
    assert_eq!(pool::take(&state, "k", 1, 1).expect("take"), None);
    pool::sync_claims(&mut store, &state);
    assert_eq!(
        pool::take(&state, "k", 1, 1).expect("take"),
        Some(lost.name.clone())
    );
}

/// A run no pool serves is told which pool is nearest and the settings it differs in; what a
/// claim binds never counts as a difference.
#[test]
fn the_nearest_pool_and_what_sets_a_run_apart() {
    let define = |m: &RunSpec| pool::Pool {
        key: pool::key(m),
        spec_json: serde_json::to_string(m).expect("json"),
        size: 1,
        hits: 0,
        misses: 0,
    };
    let filtered = member();
    let mut off = member();
    off.net = NetMode::Off;
    off.domains.clear();
    off.ports.clear();
    let pools = [define(&filtered), define(&off)];
    // A filtered run with another allowlist and its own command is the first pool's.
    let mut run = run_of(&filtered);
    run.domains = vec!["two.example".into()];
    assert_eq!(pool::key(&run), pools[0].key);
    // As root, off: nearest is the second pool, apart only by its user.
    let mut run = run_of(&off);
    run.user = SandboxUser::Root;
    let (key, differ) = pool::nearest_mismatch(&run, &pools).expect("a pool");
    assert_eq!(
        (key.as_str(), differ),
        (pools[1].key.as_str(), vec!["user"])
    );
    // Another image and a disk limit, filtered: the first pool, both named.
    let mut run = run_of(&filtered);
    run.rootfs = RootFs::Image {
        reference: "debian:12".into(),
        digest: Some("sha256:00".into()),
    };
    run.resources.disk = Some(ByteSize(64 << 20));
    let (key, mut differ) = pool::nearest_mismatch(&run, &pools).expect("a pool");
    differ.sort();
    assert_eq!(
        (key.as_str(), differ),
        (pools[0].key.as_str(), vec!["image", "limits"])
    );
    assert_eq!(pool::nearest_mismatch(&run, &[]), None);
}

/// The claimer's end of a used claim is one transaction: its member released (only for its
/// claimer's pid, as `member_release`), one hit and the latency counted (as `claim_done`).
#[test]
fn a_finished_claim_is_released_and_counted_at_once() {
    let dir = TempDir::new("finished");
    let mut store = Store::open(dir.db())
        .expect("open")
        .for_pool()
        .expect("pool");
    store.pool_define("k", "{}", 2).expect("define");
    ready_members(&mut store, &dir.0, "k", 2);
    let name = pool::take(&dir.0, "k", 42, 7)
        .expect("take")
        .expect("a member");
    assert!(store.claim_record(&name, 42, 7).expect("record"));
    assert!(!store
        .claim_finished(&name, 41, "k", 900)
        .expect("another pid"));
    assert_eq!(state_of(&mut store, &name), Some(MemberState::Claimed));
    assert!(store.claim_finished(&name, 42, "k", 1200).expect("finish"));
    assert_eq!(state_of(&mut store, &name), Some(MemberState::Released));
    let p = &store.pools().expect("pools")[0];
    assert_eq!((p.hits, p.misses), (2, 0));
    assert_eq!(
        store.claim_latencies("k").expect("latencies"),
        vec![900, 1200]
    );
}

/// Claimers racing for the ready markers, each in a thread of its own: every member is taken
/// exactly once, and every claimer stops at a miss.
#[test]
fn concurrent_claimers_never_share_a_member() {
    let dir = TempDir::new("race");
    let mut store = Store::open(dir.db()).expect("open");
    store.pool_define("k", "{}", 12).expect("define");
    let made: HashSet<String> = ready_members(&mut store, &dir.0, "k", 12)
        .into_iter()
        .collect();
    drop(store);
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (state, barrier) = (dir.0.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut got = Vec::new();
                while let Some(name) = pool::take(&state, "k", 1000 + t as i32, 1).expect("take") {
                    got.push(name);
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().expect("claimer"));
    }
    let unique: HashSet<String> = all.iter().cloned().collect();
    assert_eq!(all.len(), 12, "{all:?}");
    assert_eq!(unique, made);
}

#[test]
fn percentiles_are_nearest_rank() {
    assert_eq!(pool::percentile(&[], 50), None);
    let v: Vec<u64> = (1..=100).rev().collect();
    assert_eq!(pool::percentile(&v, 50), Some(50));
    assert_eq!(pool::percentile(&v, 95), Some(95));
    assert_eq!(pool::percentile(&v, 99), Some(99));
    assert_eq!(pool::percentile(&[7], 99), Some(7));
}
