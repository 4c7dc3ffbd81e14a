//! Engine-tier tests: the engine's operations over a temporary store and the fake backend.
//! Every lifecycle operation in every state, rollback when the backend fails, and reconcile
//! after simulated crashes of the engine and of supervisors.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use airlock_engine::backend::{Call, FakeOp};
use airlock_engine::{Engine, EngineError, FakeBackend, Store};
use airlock_model::exit;
use airlock_model::lifecycle::{self, Op, SandboxState as S};
use common::TempDir;

const SPEC: &str = r#"{"image":"debian","profile":"default","backend":"container"}"#;

struct Fixture {
    dir: TempDir,
    fake: Arc<FakeBackend>,
    engine: Engine,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = TempDir::new("engine");
        let fake = Arc::new(FakeBackend::new());
        let engine = Engine::open(dir.path(), fake.clone()).expect("open engine");
        Fixture { dir, fake, engine }
    }

    /// A second handle on the same store, to force states and to check rows.
    fn store(&self) -> Store {
        Store::open(self.dir.path().join("store.db")).expect("open store")
    }

    /// The engine dies and a new one starts on the same state (the backend's sandboxes live
    /// on, as real supervisors would).
    fn restart(self) -> Fixture {
        let Fixture { dir, fake, engine } = self;
        drop(engine);
        let engine = Engine::open(dir.path(), fake.clone()).expect("reopen engine");
        Fixture { dir, fake, engine }
    }

    fn state(&self, name: &str) -> Option<S> {
        self.store().get(name).expect("get").map(|r| r.state)
    }

    fn folder_exists(&self, name: &str) -> bool {
        self.engine.sandbox_dir(name).exists()
    }

    /// Puts a new sandbox `name` into `state` the way the engine would get it there (or,
    /// for transitional states, as a crash in the middle of an operation would leave it).
    fn make(&self, name: &str, state: S) {
        let mut store = self.store();
        let force = |store: &mut Store, from: S, to: S, pid: Option<i32>| {
            store
                .transition(name, &[from], to, pid, None)
                .expect("force transition");
        };
        if state == S::Creating {
            store
                .create(name, SPEC, None, None, None)
                .expect("create row");
            return;
        }
        self.engine.create(name, SPEC).expect("create");
        match state {
            S::Creating | S::Stopped => {}
            S::Starting => force(&mut store, S::Stopped, S::Starting, None),
            S::Running => {
                self.engine.start(name).expect("start");
            }
            S::Stopping => {
                let pid = self.engine.start(name).expect("start").supervisor_pid;
                force(&mut store, S::Running, S::Stopping, pid);
            }
            S::Removing => force(&mut store, S::Stopped, S::Removing, None),
            S::Failed => {
                force(&mut store, S::Stopped, S::Starting, None);
                force(&mut store, S::Starting, S::Failed, None);
            }
        }
        assert_eq!(self.state(name), Some(state), "fixture for {state}");
    }
}

fn name_for(state: S, op: &str) -> String {
    format!("{}-{op}", state.as_str())
}

#[test]
fn create_shows_a_run_specs_typed_root_filesystem_as_its_image() {
    let f = Fixture::new();
    let host = f
        .engine
        .create("on-host", r#"{"backend":"container","rootfs":"host"}"#)
        .expect("create");
    assert_eq!(host.image.as_deref(), Some("host"));
    assert_eq!(host.backend.as_deref(), Some("container"));
    let pinned = f
        .engine
        .create(
            "pinned",
            r#"{"backend":"container","rootfs":{"image":{"reference":"alpine:3.20","digest":"sha256:ab"}}}"#,
        )
        .expect("create");
    assert_eq!(pinned.image.as_deref(), Some("alpine:3.20@sha256:ab"));
}

#[test]
fn create_makes_a_stopped_sandbox_with_a_private_folder_and_its_spec() {
    let f = Fixture::new();
    let record = f.engine.create("web", SPEC).expect("create");
    assert_eq!(record.state, S::Stopped);
    assert_eq!(record.image.as_deref(), Some("debian"));
    assert_eq!(record.profile.as_deref(), Some("default"));
    assert_eq!(record.backend.as_deref(), Some("container"));
    assert_eq!(record.id.len(), 32);
    let dir = f.engine.sandbox_dir("web");
    let mode = std::fs::metadata(&dir)
        .expect("folder")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let spec = std::fs::read_to_string(dir.join("spec.json")).expect("spec.json");
    assert_eq!(spec, SPEC);
    let spec_mode = std::fs::metadata(dir.join("spec.json"))
        .expect("spec")
        .permissions()
        .mode();
    assert_eq!(spec_mode & 0o777, 0o600);
    // No temporary file is left beside it (the audit journal has its creation).
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("read")
        .map(|e| e.expect("entry").file_name())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        vec![
            std::ffi::OsString::from("audit.jsonl"),
            std::ffi::OsString::from("id"),
            std::ffi::OsString::from("spec.json")
        ]
    );
    let audit = airlock_engine::audit::read(&dir);
    assert_eq!(
        (audit.len(), &audit[0]["op"], &audit[0]["to"]),
        (
            1,
            &serde_json::json!("creating"),
            &serde_json::json!("stopped")
        )
    );
    // The unique id the backend names things outside the folder by (cgroups).
    assert_eq!(
        airlock_engine::engine::read_id(&dir).as_deref(),
        Some(record.id.as_str())
    );
    assert_eq!(f.fake.calls(), vec![Call::Prepare("web".into())]);
}

#[test]
fn create_refuses_bad_input_and_leaves_nothing() {
    let f = Fixture::new();
    f.engine.create("taken", "{}").expect("create");
    let long = "x".repeat(64);
    let cases: Vec<(&str, &str, i32)> = vec![
        ("", "{}", exit::USAGE),
        ("..", "{}", exit::USAGE),
        ("a/b", "{}", exit::USAGE),
        ("Upper", "{}", exit::USAGE),
        ("-dash", "{}", exit::USAGE),
        ("ctl\u{1}", "{}", exit::USAGE),
        (long.as_str(), "{}", exit::USAGE),
        ("okname", "not json", exit::USAGE),
        ("okname", "[1,2]", exit::USAGE),
        ("taken", "{}", exit::ALREADY_EXISTS),
    ];
    for (name, spec, code) in cases {
        let err = f.engine.create(name, spec).expect_err(name);
        assert_eq!(err.exit_code(), code, "{name:?} {spec}: {err}");
        assert!(err.hint().is_some() || code == exit::USAGE, "{err}");
    }
    let names: Vec<String> = f
        .engine
        .list()
        .expect("list")
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, vec!["taken".to_owned()]);
    let folders: Vec<_> = std::fs::read_dir(f.dir.path().join("sandboxes"))
        .expect("read")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(folders, vec![std::ffi::OsString::from("taken")]);
}

/// start, stop, rm and rm --force in every state: what `lifecycle::can` allows happens and
/// ends in the right state; what it refuses is refused with its exact reason, exit code 120,
/// no backend call and no state change. (exec, shell, cp and logs are not engine operations.)
#[test]
fn every_operation_in_every_state() {
    let f = Fixture::new();
    let ops = [
        ("start", Op::Start),
        ("stop", Op::Stop),
        ("rm", Op::Remove { force: false }),
        ("rmf", Op::Remove { force: true }),
    ];
    for state in S::ALL {
        for (label, op) in ops {
            let name = name_for(state, label);
            f.make(&name, state);
            let calls_before = f.fake.calls().len();
            let result = match op {
                Op::Start => f.engine.start(&name).map(|r| Some(r.state)),
                Op::Stop => f
                    .engine
                    .stop(&name, Duration::from_millis(5))
                    .map(|r| Some(r.state)),
                Op::Remove { force } => f.engine.rm(&name, force).map(|()| None),
                _ => unreachable!(),
            };
            match lifecycle::can(&name, state, op) {
                Ok(()) => {
                    let expected = match op {
                        Op::Start => Some(S::Running),
                        Op::Stop => Some(S::Stopped),
                        _ => None,
                    };
                    let got = result.unwrap_or_else(|e| panic!("{label} in {state}: {e}"));
                    assert_eq!(got, expected, "{label} in {state}");
                    assert_eq!(f.state(&name), expected, "{label} in {state}: stored");
                    assert_eq!(
                        f.folder_exists(&name),
                        expected.is_some(),
                        "{label} in {state}: folder"
                    );
                    let running = f.fake.is_running(&name);
                    assert_eq!(
                        running,
                        expected == Some(S::Running),
                        "{label} in {state}: backend"
                    );
                }
                Err(refused) => {
                    let err = result.expect_err("refused");
                    assert!(
                        matches!(&err, EngineError::Refused(r) if *r == refused),
                        "{label} in {state}: {err:?}"
                    );
                    assert_eq!(err.exit_code(), exit::CONFLICT);
                    assert_eq!(err.http_status(), 409);
                    assert_eq!(err.hint(), Some(refused.hint()));
                    assert_eq!(f.state(&name), Some(state), "{label} in {state}: unchanged");
                    assert_eq!(
                        f.fake.calls().len(),
                        calls_before,
                        "{label} in {state}: no call"
                    );
                }
            }
        }
    }
}

#[test]
fn unknown_sandbox_is_not_found() {
    let f = Fixture::new();
    let errors = [
        f.engine.start("ghost").expect_err("start"),
        f.engine.stop("ghost", Duration::ZERO).expect_err("stop"),
        f.engine.rm("ghost", true).expect_err("rm"),
        f.engine.status("ghost").expect_err("status"),
    ];
    for err in errors {
        assert!(matches!(err, EngineError::NotFound(_)), "{err:?}");
        assert_eq!(err.exit_code(), exit::NOT_FOUND);
        assert_eq!(err.http_status(), 404);
    }
}

#[test]
fn failed_prepare_rolls_the_creation_back() {
    let f = Fixture::new();
    f.fake.fail("half", FakeOp::Prepare, "no space left");
    let err = f.engine.create("half", SPEC).expect_err("create fails");
    assert!(err.to_string().contains("no space left"), "{err}");
    assert_eq!(err.exit_code(), exit::SANDBOX_FAILED);
    assert_eq!(f.state("half"), None);
    assert!(!f.folder_exists("half"));
    // The name is free again.
    f.fake.heal("half", FakeOp::Prepare);
    assert_eq!(
        f.engine.create("half", SPEC).expect("create").state,
        S::Stopped
    );
}

#[test]
fn create_replaces_a_leftover_folder_without_a_row() {
    let f = Fixture::new();
    let dir = f.engine.sandbox_dir("left");
    std::fs::create_dir_all(dir.join("upper")).expect("leftover");
    std::fs::write(dir.join("junk"), "x").expect("junk");
    f.engine.create("left", SPEC).expect("create");
    assert!(!dir.join("junk").exists());
    assert!(dir.join("spec.json").exists());
}

#[test]
fn failed_start_leaves_it_failed_with_the_error_and_a_retry_clears_it() {
    let f = Fixture::new();
    f.engine.create("box", SPEC).expect("create");
    f.fake
        .fail("box", FakeOp::Start, "clone: operation not permitted");
    let err = f.engine.start("box").expect_err("start fails");
    assert_eq!(err.exit_code(), exit::SANDBOX_FAILED);
    let record = f.store().get("box").expect("get").expect("row");
    assert_eq!(record.state, S::Failed);
    assert_eq!(
        record.last_error.as_deref(),
        Some("clone: operation not permitted")
    );
    assert!(record.stopped_at.is_some());
    f.fake.heal("box", FakeOp::Start);
    let record = f.engine.start("box").expect("retry");
    assert_eq!(record.state, S::Running);
    assert_eq!(record.last_error, None);
    assert!(record.supervisor_pid.is_some());
    // The journal names the state each step left: the retry started from `failed`.
    let moves: Vec<(String, String)> = airlock_engine::audit::read(&f.engine.sandbox_dir("box"))
        .iter()
        .filter(|e| e["category"] == "lifecycle")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("?").to_owned();
            (s("from"), s("to"))
        })
        .collect();
    let want = [
        ("creating", "stopped"),
        ("stopped", "starting"),
        ("starting", "failed"),
        ("failed", "starting"),
        ("starting", "running"),
    ];
    assert_eq!(
        moves,
        want.map(|(a, b)| (a.to_owned(), b.to_owned())).to_vec()
    );
}

#[test]
fn unavailable_backend_maps_to_its_exit_code() {
    struct Unavailable;
    impl airlock_engine::Backend for Unavailable {
        fn start(
            &self,
            _: &str,
            _: &std::path::Path,
            _: &str,
            _: &airlock_engine::backend::Secrets,
        ) -> Result<airlock_engine::Started, airlock_engine::BackendError> {
            Err(airlock_engine::BackendError::Unavailable(
                "no user namespaces".into(),
            ))
        }
        fn stop(
            &self,
            _: &str,
            _: &std::path::Path,
            _: Duration,
        ) -> Result<(), airlock_engine::BackendError> {
            Ok(())
        }
        fn probe(&self, _: &str, _: &std::path::Path) -> airlock_engine::Liveness {
            airlock_engine::Liveness::Gone
        }
        fn destroy(
            &self,
            _: &str,
            _: &std::path::Path,
        ) -> Result<(), airlock_engine::BackendError> {
            Ok(())
        }
        fn stats(&self, _: &str, _: &std::path::Path) -> Option<airlock_engine::Stats> {
            None
        }
    }
    let dir = TempDir::new("unavail");
    let engine = Engine::open(dir.path(), Arc::new(Unavailable)).expect("open");
    engine.create("u", "{}").expect("create");
    let err = engine.start("u").expect_err("start");
    assert_eq!(err.exit_code(), exit::BACKEND_UNAVAILABLE);
    assert_eq!(err.http_status(), 503);
}

#[test]
fn failed_stop_of_a_live_sandbox_leaves_it_failed_with_its_pid() {
    let f = Fixture::new();
    f.engine.create("box", SPEC).expect("create");
    let pid = f.engine.start("box").expect("start").supervisor_pid;
    f.fake.fail("box", FakeOp::Stop, "still running after 10s");
    let err = f
        .engine
        .stop("box", Duration::from_secs(10))
        .expect_err("stop fails");
    assert_eq!(err.exit_code(), exit::SANDBOX_FAILED);
    let record = f.store().get("box").expect("get").expect("row");
    assert_eq!(record.state, S::Failed);
    assert_eq!(record.supervisor_pid, pid);
    assert!(record
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("still running"));
    // Stop is allowed from failed: a second try that works ends it stopped.
    f.fake.heal("box", FakeOp::Stop);
    let record = f.engine.stop("box", Duration::ZERO).expect("stop");
    assert_eq!(record.state, S::Stopped);
    assert_eq!(record.supervisor_pid, None);
}

#[test]
fn failed_stop_of_a_dead_sandbox_ends_stopped() {
    let f = Fixture::new();
    f.engine.create("box", SPEC).expect("create");
    f.engine.start("box").expect("start");
    f.fake.fail("box", FakeOp::Stop, "no such process");
    f.fake.die("box");
    f.engine
        .stop("box", Duration::ZERO)
        .expect_err("stop fails");
    assert_eq!(f.state("box"), Some(S::Stopped));
}

#[test]
fn failed_teardown_stays_removing_until_a_retry_finishes_it() {
    let f = Fixture::new();
    f.engine.create("box", SPEC).expect("create");
    f.fake.fail("box", FakeOp::Destroy, "cgroup busy");
    let err = f.engine.rm("box", false).expect_err("rm fails");
    assert!(err.hint().unwrap_or_default().contains("rm --force box"));
    let record = f.store().get("box").expect("get").expect("row");
    assert_eq!(record.state, S::Removing);
    assert!(record
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("cgroup busy"));
    assert!(
        f.folder_exists("box"),
        "nothing deleted before the teardown worked"
    );
    // Only --force is allowed now.
    assert!(matches!(
        f.engine.rm("box", false),
        Err(EngineError::Refused(_))
    ));
    f.fake.heal("box", FakeOp::Destroy);
    f.engine.rm("box", true).expect("rm --force");
    assert_eq!(f.state("box"), None);
    assert!(!f.folder_exists("box"));
}

#[test]
fn rm_force_of_a_running_sandbox_destroys_it() {
    let f = Fixture::new();
    f.engine.create("box", SPEC).expect("create");
    f.engine.start("box").expect("start");
    f.engine.rm("box", true).expect("rm --force");
    assert!(!f.fake.is_running("box"));
    assert_eq!(f.state("box"), None);
    assert!(!f.folder_exists("box"));
    assert!(f.fake.calls().contains(&Call::Destroy("box".into())));
}

#[test]
fn start_with_a_missing_folder_is_damaged_not_a_panic() {
    let f = Fixture::new();
    f.engine.create("box", SPEC).expect("create");
    std::fs::remove_dir_all(f.engine.sandbox_dir("box")).expect("rm folder");
    let err = f.engine.start("box").expect_err("start");
    assert!(matches!(err, EngineError::Damaged { .. }), "{err:?}");
    assert!(err.hint().unwrap_or_default().contains("rm --force box"));
    assert_eq!(f.state("box"), Some(S::Stopped), "nothing changed");
    f.engine.rm("box", false).expect("rm still works");
}

#[test]
fn status_has_uptime_and_stats_only_while_running() {
    let f = Fixture::new();
    f.engine.create("box", SPEC).expect("create");
    let status = f.engine.status("box").expect("status");
    assert_eq!((status.uptime_secs, status.stats), (None, None));
    f.engine.start("box").expect("start");
    let status = f.engine.status("box").expect("status");
    assert_eq!(status.record.state, S::Running);
    assert!(status.uptime_secs.is_some_and(|u| u >= 0));
    assert_eq!(status.stats.and_then(|s| s.pids), Some(1));
    let json = serde_json::to_value(&status).expect("json");
    assert_eq!(json["name"], "box");
    assert_eq!(json["state"], "running");
    assert_eq!(json["stats"]["memory_bytes"], 1 << 20);
}

#[test]
fn stop_while_starting_wins_and_the_start_is_undone() {
    let f = Arc::new(Fixture::new());
    f.engine.create("box", SPEC).expect("create");
    f.fake.set_start_delay(Duration::from_millis(300));
    let starter = {
        let f = Arc::clone(&f);
        std::thread::spawn(move || f.engine.start("box"))
    };
    // Wait until it is starting, then stop it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while f.state("box") != Some(S::Starting) {
        assert!(std::time::Instant::now() < deadline, "never starting");
        std::thread::sleep(Duration::from_millis(2));
    }
    let stopped = f.engine.stop("box", Duration::ZERO).expect("stop");
    assert_eq!(stopped.state, S::Stopped);
    let err = starter.join().expect("join").expect_err("start loses");
    assert!(matches!(err, EngineError::Conflict { .. }), "{err:?}");
    assert_eq!(err.exit_code(), exit::CONFLICT);
    assert_eq!(f.state("box"), Some(S::Stopped));
    assert!(!f.fake.is_running("box"), "the late start was undone");
}

#[test]
fn concurrent_creates_of_one_name_make_exactly_one() {
    let f = Arc::new(Fixture::new());
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let f = Arc::clone(&f);
            std::thread::spawn(move || f.engine.create("same", SPEC).map(|r| r.id))
        })
        .collect();
    let results: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("join"))
        .collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1);
    for r in results.iter().filter(|r| r.is_err()) {
        let err = r.as_ref().expect_err("err");
        assert!(matches!(err, EngineError::Exists(_)), "{err:?}");
    }
    assert_eq!(f.state("same"), Some(S::Stopped));
    assert!(f.folder_exists("same"));
}

// ---- reconcile after crashes ----

#[test]
fn reconcile_after_supervisors_died_or_exited() {
    let f = Fixture::new();
    for name in ["alive", "died", "exited"] {
        f.make(name, S::Running);
    }
    let alive_pid = f
        .store()
        .get("alive")
        .expect("get")
        .expect("row")
        .supervisor_pid;
    f.fake.die("died");
    f.fake.exit("exited");
    let f = f.restart();
    let report = f.engine.reconcile().expect("reconcile");
    assert_eq!(report.changes.len(), 2, "{report:?}");
    assert!(report.errors.is_empty());
    let died = f.store().get("died").expect("get").expect("row");
    assert_eq!(died.state, S::Failed);
    assert_eq!(died.supervisor_pid, None);
    assert_eq!(died.last_error.as_deref(), Some("its supervisor died"));
    let exited = f.store().get("exited").expect("get").expect("row");
    assert_eq!((exited.state, exited.last_error), (S::Stopped, None));
    let alive = f.store().get("alive").expect("get").expect("row");
    assert_eq!((alive.state, alive.supervisor_pid), (S::Running, alive_pid));
    // A second pass finds nothing to do.
    assert_eq!(f.engine.reconcile().expect("again"), Default::default());
}

#[test]
fn reconcile_settles_interrupted_starts() {
    let f = Fixture::new();
    f.make("up", S::Starting);
    f.make("down", S::Starting);
    // The engine died after spawning the supervisor of "up", before recording it.
    let pid = f.fake.set_running("up");
    let f = f.restart();
    f.engine.reconcile().expect("reconcile");
    let up = f.store().get("up").expect("get").expect("row");
    assert_eq!((up.state, up.supervisor_pid), (S::Running, Some(pid)));
    let down = f.store().get("down").expect("get").expect("row");
    assert_eq!(down.state, S::Failed);
    assert_eq!(
        down.last_error.as_deref(),
        Some("its start was interrupted")
    );
}

#[test]
fn reconcile_finishes_interrupted_stops() {
    let f = Fixture::new();
    f.make("still-up", S::Stopping);
    f.make("gone", S::Stopping);
    f.make("stuck", S::Stopping);
    f.fake.die("gone");
    f.fake.fail("stuck", FakeOp::Stop, "will not die");
    let f = f.restart();
    f.engine.reconcile().expect("reconcile");
    assert_eq!(f.state("still-up"), Some(S::Stopped));
    assert!(!f.fake.is_running("still-up"));
    assert_eq!(f.state("gone"), Some(S::Stopped));
    let stuck = f.store().get("stuck").expect("get").expect("row");
    assert_eq!(stuck.state, S::Failed);
    assert!(stuck.supervisor_pid.is_some());
    assert!(f
        .fake
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Stop(n, _) if n == "still-up")));
}

#[test]
fn reconcile_finishes_interrupted_removals() {
    let f = Fixture::new();
    f.make("half-removed", S::Removing);
    f.make("stubborn", S::Removing);
    f.fake.fail("stubborn", FakeOp::Destroy, "EBUSY");
    let f = f.restart();
    let report = f.engine.reconcile().expect("reconcile");
    assert_eq!(f.state("half-removed"), None);
    assert!(!f.folder_exists("half-removed"));
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert_eq!(report.errors[0].name, "stubborn");
    assert_eq!(f.state("stubborn"), Some(S::Removing));
    assert!(f.folder_exists("stubborn"));
    f.fake.heal("stubborn", FakeOp::Destroy);
    f.engine.reconcile().expect("reconcile");
    assert_eq!(f.state("stubborn"), None);
}

#[test]
fn reconcile_rolls_back_interrupted_creations_and_orphan_folders() {
    let f = Fixture::new();
    // A row without a folder (crash right after the insert) and a row with a half-made one.
    f.make("no-folder", S::Creating);
    f.make("half-folder", S::Creating);
    std::fs::create_dir_all(f.engine.sandbox_dir("half-folder")).expect("mkdir");
    // A folder no row owns (crash between the folder's and the row's deletion).
    std::fs::create_dir_all(f.engine.sandbox_dir("orphan").join("upper")).expect("mkdir");
    f.make("kept", S::Stopped);
    let f = f.restart();
    let report = f.engine.reconcile().expect("reconcile");
    assert_eq!(report.orphan_folders, vec!["orphan".to_owned()]);
    for name in ["no-folder", "half-folder", "orphan"] {
        assert_eq!(f.state(name), None, "{name}");
        assert!(!f.folder_exists(name), "{name}");
    }
    assert_eq!(f.state("kept"), Some(S::Stopped));
    assert!(f.folder_exists("kept"));
    // The names are free again.
    f.engine.create("no-folder", SPEC).expect("create");
}

#[test]
fn reconcile_leaves_operations_in_progress_alone() {
    let f = Arc::new(Fixture::new());
    f.engine.create("slow", SPEC).expect("create");
    f.fake.set_start_delay(Duration::from_millis(300));
    let starter = {
        let f = Arc::clone(&f);
        std::thread::spawn(move || f.engine.start("slow"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while f.state("slow") != Some(S::Starting) {
        assert!(std::time::Instant::now() < deadline, "never starting");
        std::thread::sleep(Duration::from_millis(2));
    }
    // gc while it starts: not a leftover, not touched.
    let report = f.engine.reconcile().expect("reconcile");
    assert!(report.changes.is_empty(), "{report:?}");
    let record = starter.join().expect("join").expect("start");
    assert_eq!(record.state, S::Running);
}

#[test]
fn a_supervisor_dying_under_a_live_engine_is_seen_on_the_next_request() {
    let f = Fixture::new();
    for n in ["died", "ended", "alive"] {
        f.engine.create(n, SPEC).expect("create");
        f.engine.start(n).expect("start");
    }
    f.fake.die("died");
    f.fake.exit("ended");
    let states: Vec<(String, S)> = f
        .engine
        .list()
        .expect("list")
        .into_iter()
        .map(|r| (r.name, r.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("alive".into(), S::Running),
            ("died".into(), S::Failed),
            ("ended".into(), S::Stopped)
        ]
    );
    // A start of the dead one is allowed again (no stale `running` blocks it).
    assert_eq!(f.engine.start("died").expect("restart").state, S::Running);
}

#[test]
fn dead_supervisors_leftovers_are_reclaimed_by_reconcile_and_on_the_next_request() {
    let f = Fixture::new();
    for n in ["alive", "died", "stopped", "seen"] {
        f.make(n, S::Running);
    }
    f.engine.stop("stopped", Duration::ZERO).expect("stop");
    f.fake.die("died");
    f.fake.die("seen");
    // A live engine learns of `seen` on the next request, and reclaims right away.
    f.engine.status("seen").expect("status");
    let reclaimed = |f: &Fixture| -> Vec<String> {
        f.fake
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Reclaim(n) => Some(n),
                _ => None,
            })
            .collect()
    };
    assert_eq!(reclaimed(&f), vec!["seen".to_string()]);
    // gc (reconcile): every sandbox that does not run, never a running one.
    f.engine.reconcile().expect("reconcile");
    let mut got = reclaimed(&f);
    got.sort();
    got.dedup();
    assert_eq!(got, vec!["died", "seen", "stopped"]);
}

#[test]
fn start_gives_a_folder_without_an_id_its_records_id() {
    let f = Fixture::new();
    let rec = f.engine.create("old", SPEC).expect("create");
    let dir = f.engine.sandbox_dir("old");
    std::fs::remove_file(dir.join(airlock_engine::engine::ID_FILE)).expect("rm id");
    f.engine.start("old").expect("start");
    assert_eq!(
        airlock_engine::engine::read_id(&dir).as_deref(),
        Some(rec.id.as_str())
    );
}

/// A microVM clone sandbox whose VM ended without a stop taking its work out (its supervisor
/// was killed: the supervisor's mark is still beside its disk) is not reviewed as if the last
/// pulled work were all there is: diff and fetch refuse, saying where the work is and that a
/// start brings it over; once the mark is gone (a stop pulled it) they review as before.
#[test]
fn diff_and_fetch_of_a_vm_that_ended_without_its_work_taken_out_refuse_with_a_hint() {
    use airlock_model::plan::microvm::WORK_PENDING_FILE;
    let f = Fixture::new();
    let host = f.dir.path().join("project");
    std::fs::create_dir_all(&host).expect("mkdir");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&host)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t.invalid")
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(host.join("a.txt"), "one\n").expect("write");
    git(&["add", "."]);
    git(&["commit", "-qm", "initial"]);
    f.engine
        .create("vm", r#"{"backend":"microvm"}"#)
        .expect("create");
    let dir = f.engine.sandbox_dir("vm");
    airlock_work::clone::prepare(&host, &dir, "vm").expect("clone");
    std::fs::write(dir.join(WORK_PENDING_FILE), b"").expect("mark");

    for e in [
        f.engine.diff("vm", None).expect_err("diff refused"),
        f.engine
            .fetch("vm", true, false)
            .expect_err("fetch refused"),
    ] {
        let a = e.action_error();
        assert_eq!(a.kind, "in_guest", "{a:?}");
        assert_eq!(a.code, exit::CONFLICT, "{a:?}");
        assert_eq!(e.http_status(), 409);
        assert!(a.message.contains("still on its VM's disk"), "{a:?}");
        assert!(
            a.hint
                .as_deref()
                .is_some_and(|h| h.contains("airlock start vm")),
            "{a:?}"
        );
    }
    std::fs::remove_file(dir.join(WORK_PENDING_FILE)).expect("unmark");
    let d = f.engine.diff("vm", None).expect("diff");
    assert_eq!(d.commits, 0);
}
