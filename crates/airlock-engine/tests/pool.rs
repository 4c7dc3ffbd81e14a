//! Engine-tier tests of the warm pool's records: the key (what a claim may bind, what it may
//! not), and the claim as one compare-and-set against a real SQLite file, with concurrent
//! claimers in separate connections.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};

use airlock_engine::pool::{self, Claim, MemberState};
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

fn ready_members(store: &mut Store, key: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let m = store.member_insert(key).expect("insert");
            assert!(store
                .member_cas(&m.name, &[MemberState::Warming], MemberState::Ready)
                .expect("cas"));
            m.name
        })
        .collect()
}

#[test]
fn no_pool_miss_and_hit() {
    let dir = TempDir::new("claims");
    let mut store = Store::open(dir.db()).expect("open");
    assert!(matches!(
        store.claim("nokey", 1, 1).expect("claim"),
        Claim::NoPool
    ));
    store.pool_define("k", "{}", 1).expect("define");
    assert!(matches!(
        store.claim("k", 1, 1).expect("claim"),
        Claim::Miss
    ));
    // A warming member is not handed out.
    let w = store.member_insert("k").expect("insert");
    assert!(matches!(
        store.claim("k", 1, 1).expect("claim"),
        Claim::Miss
    ));
    assert!(store
        .member_cas(&w.name, &[MemberState::Warming], MemberState::Ready)
        .expect("cas"));
    let Claim::Hit(m) = store.claim("k", 42, 7).expect("claim") else {
        panic!("no hit")
    };
    assert_eq!(
        (m.name.as_str(), m.state, m.claimer_pid),
        (w.name.as_str(), MemberState::Claimed, Some(42))
    );
    // Only its claimer releases it.
    assert!(!store.member_release(&m.name, 41).expect("release"));
    assert!(store.member_release(&m.name, 42).expect("release"));
    store.claim_done("k", 1500).expect("done");
    let p = &store.pools().expect("pools")[0];
    assert_eq!((p.hits, p.misses), (1, 2));
    assert_eq!(store.claim_latencies("k").expect("latencies"), vec![1500]);
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
    ready_members(&mut store, "k", 2);
    let Claim::Hit(m) = store.claim("k", 42, 7).expect("claim") else {
        panic!("no hit")
    };
    assert!(!store
        .claim_finished(&m.name, 41, "k", 900)
        .expect("another pid"));
    let row = |store: &mut Store| {
        store
            .members()
            .expect("members")
            .into_iter()
            .find(|x| x.name == m.name)
            .map(|x| x.state)
    };
    assert_eq!(row(&mut store), Some(MemberState::Claimed));
    assert!(store
        .claim_finished(&m.name, 42, "k", 1200)
        .expect("finish"));
    assert_eq!(row(&mut store), Some(MemberState::Released));
    let p = &store.pools().expect("pools")[0];
    assert_eq!((p.hits, p.misses), (2, 0));
    assert_eq!(
        store.claim_latencies("k").expect("latencies"),
        vec![900, 1200]
    );
}

#[test]
fn concurrent_claimers_never_share_a_member() {
    let dir = TempDir::new("race");
    let mut store = Store::open(dir.db()).expect("open");
    store.pool_define("k", "{}", 12).expect("define");
    let made: HashSet<String> = ready_members(&mut store, "k", 12).into_iter().collect();
    drop(store);
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (db, barrier) = (dir.db(), barrier.clone());
            std::thread::spawn(move || {
                let mut store = Store::open(db).expect("open").for_pool().expect("pool");
                barrier.wait();
                let mut got = Vec::new();
                loop {
                    match store.claim("k", 1000 + t as i32, 1).expect("claim") {
                        Claim::Hit(m) => got.push(m.name),
                        Claim::Miss => return got,
                        Claim::NoPool => panic!("the pool vanished"),
                    }
                }
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

/// The daemon's claim service (`pool::Service`: its real socket, thread and store
/// connection): a claim through it is the store's compare-and-set — concurrent askers never
/// share a member, an empty pool is a miss, an unknown key no pool —; a request that does not
/// name its sender, or comes from another uid, is refused with nothing claimed; a claim whose
/// answer cannot reach its asker is undone (ready again, no miss counted).
#[test]
fn claims_through_the_daemons_service() {
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;
    let dir = TempDir::new("service");
    std::fs::create_dir_all(pool::dir(&dir.0)).expect("pool dir");
    let mut store = Store::open(dir.db())
        .expect("open")
        .for_pool()
        .expect("pool");
    store.pool_define("k", "{}", 12).expect("define");
    let made: HashSet<String> = ready_members(&mut store, "k", 12).into_iter().collect();
    let service = pool::Service::start(&dir.0).expect("the service");
    let sock = pool::dir(&dir.0).join(pool::CLAIM_SOCKET);
    assert_eq!(
        std::fs::metadata(&sock)
            .expect("socket")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let (me, start) = pool::me();
    let ready = |store: &mut Store| {
        store
            .members()
            .expect("members")
            .iter()
            .filter(|m| m.state == MemberState::Ready)
            .count()
    };
    assert!(matches!(
        pool::ask(&dir.0, "nokey", me, start),
        Some(Claim::NoPool)
    ));
    // Not its sender: another pid, or another start time (a recycled pid).
    assert!(pool::ask(&dir.0, "k", 1, start).is_none());
    assert!(pool::ask(&dir.0, "k", me, start + 1).is_none());
    assert_eq!(ready(&mut store), 12);

    // Another uid — a thread of this process with credentials of its own (setresuid(2) as a
    // raw system call changes only the calling thread's) — on a socket it can reach (made
    // reachable here: the daemon's own check is what is tested, not the file mode).
    if nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(pool::dir(&dir.0), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let (state, path) = (dir.0.clone(), sock.clone());
        let (said, asked) = std::thread::spawn(move || {
            // SAFETY: integer arguments; this thread's credentials only, and it ends below.
            let r = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
            assert_eq!(r, 0, "setresuid");
            let (pid, start) = pool::me();
            let mut c = UnixStream::connect(&path).expect("connect as 65534");
            // The service refuses on the peer's uid alone, before it reads: its answer may
            // already be there and its end closed (then this write is EPIPE).
            let _ = c.write_all(format!("c1 k {pid} {start}\n").as_bytes());
            let mut said = String::new();
            let _ = c.read_to_string(&mut said);
            (said, pool::ask(&state, "k", pid, start).is_some())
        })
        .join()
        .expect("the other uid's thread");
        assert!(said.starts_with("e refused"), "{said:?}");
        assert!(!asked, "another uid's claim was answered");
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(ready(&mut store), 12);
    }

    // An asker that stopped waiting (its side shut) before the answer: the claim is undone.
    let mut c = UnixStream::connect(&sock).expect("connect");
    c.shutdown(std::net::Shutdown::Read).expect("shutdown");
    c.write_all(format!("c1 k {me} {start}\n").as_bytes())
        .expect("write");
    // The service answers one connection after the other: the next answer comes after it.
    let Some(Claim::Hit(first)) = pool::ask(&dir.0, "k", me, start) else {
        panic!("no hit")
    };
    drop(c);
    assert!(made.contains(&first.name));
    assert_eq!(ready(&mut store), 11, "the unanswered claim was not undone");
    let row = |store: &mut Store, name: &str| {
        store
            .members()
            .expect("members")
            .into_iter()
            .find(|m| m.name == name)
            .map(|m| (m.state, m.claimer_pid, m.claimer_start))
    };
    assert_eq!(
        row(&mut store, &first.name),
        Some((MemberState::Claimed, Some(me), Some(start)))
    );

    // Concurrent askers: every ready member once, then misses.
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (state, barrier) = (dir.0.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut got = Vec::new();
                // No answer within the claimer's wait (a loaded machine): nothing was taken
                // for it (undone, or never claimed), so asking again is what a claimer's
                // fallback amounts to here.
                let mut unanswered = 0;
                loop {
                    let Some(claim) = pool::ask(&state, "k", me, start) else {
                        unanswered += 1;
                        assert!(unanswered < 50, "no answer, 50 times");
                        continue;
                    };
                    match claim {
                        Claim::Hit(m) => got.push(m.name),
                        Claim::Miss => return got,
                        Claim::NoPool => panic!("the pool vanished"),
                    }
                }
            })
        })
        .collect();
    let mut all = vec![first.name.clone()];
    for h in handles {
        all.extend(h.join().expect("asker"));
    }
    let unique: HashSet<String> = all.iter().cloned().collect();
    assert_eq!(all.len(), 12, "{all:?}");
    assert_eq!(unique, made);
    let p = &store.pools().expect("pools")[0];
    assert_eq!(
        p.misses, threads as u64,
        "one miss per asker, none for the undone claim"
    );
    // Stopped: no answer (claims go to the store), the socket gone.
    drop(service);
    assert!(!sock.exists());
    assert!(pool::ask(&dir.0, "k", me, start).is_none());
}
