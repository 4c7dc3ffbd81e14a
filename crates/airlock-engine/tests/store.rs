//! Engine-tier tests of the state store against temporary SQLite files.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use airlock_engine::store::{Record, Store, StoreError, SCHEMA_VERSION};
use airlock_model::lifecycle::SandboxState as S;
use serde_json::json;

/// A unique temporary directory, removed when dropped (also when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!(
            "airlock-engine-test-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("state.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("raw open")
}

fn pragma_i64(conn: &rusqlite::Connection, pragma: &str) -> i64 {
    conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
        .expect("pragma")
}

fn pragma_text(conn: &rusqlite::Connection, pragma: &str) -> String {
    conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
        .expect("pragma")
}

fn create(store: &mut Store, name: &str) -> Record {
    store
        .create(
            name,
            r#"{"command":["bash"]}"#,
            Some("container"),
            Some("debian:12"),
            Some("default"),
        )
        .expect("create")
}

fn expect_conflict(err: StoreError) -> (String, S, Vec<S>) {
    match err {
        StoreError::Conflict {
            name,
            actual,
            expected,
        } => (name, actual, expected),
        other => panic!("expected Conflict, got {other:?}"),
    }
}

#[test]
fn migrates_from_empty() {
    let dir = TempDir::new("empty");
    let store = Store::open(dir.db()).expect("open");
    assert_eq!(store.list().expect("list"), vec![]);
    drop(store);

    let conn = raw(&dir.db());
    assert_eq!(pragma_i64(&conn, "user_version"), SCHEMA_VERSION);
    assert_eq!(pragma_text(&conn, "journal_mode"), "wal");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(
        tables,
        ["pool_claims", "pool_members", "pools", "sandboxes"].map(str::to_owned)
    );
    let mode = std::fs::metadata(dir.db())
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn create_get_list() {
    let dir = TempDir::new("create");
    let mut store = Store::open(dir.db()).expect("open");
    let b = create(&mut store, "bravo");
    let a = store
        .create("alpha", "{}", None, None, None)
        .expect("create alpha");

    assert_eq!(b.id.len(), 32);
    assert!(b.id.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a.id, b.id);
    assert_eq!(
        b,
        Record {
            name: "bravo".into(),
            id: b.id.clone(),
            state: S::Creating,
            spec: json!({"command": ["bash"]}),
            backend: Some("container".into()),
            image: Some("debian:12".into()),
            profile: Some("default".into()),
            supervisor_pid: None,
            created_at: b.created_at,
            started_at: None,
            stopped_at: None,
            last_error: None,
        }
    );
    assert!(b.created_at > 1_600_000_000);
    assert_eq!(store.get("bravo").expect("get"), Some(b.clone()));
    assert_eq!(store.get("charlie").expect("get"), None);
    assert_eq!(store.list().expect("list"), vec![a, b]);
}

#[test]
fn reopen_keeps_data() {
    let dir = TempDir::new("reopen");
    let mut store = Store::open(dir.db()).expect("open");
    create(&mut store, "keep");
    store
        .transition("keep", &[S::Creating], S::Stopped, None, None)
        .expect("to stopped");
    let before = store.list().expect("list");
    drop(store);

    let store = Store::open(dir.db()).expect("reopen");
    assert_eq!(store.list().expect("list"), before);
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].state, S::Stopped);
}

#[test]
fn newer_schema_is_refused_and_left_untouched() {
    let dir = TempDir::new("newer");
    {
        let conn = raw(&dir.db());
        conn.execute_batch(&format!(
            "CREATE TABLE from_the_future (x TEXT); PRAGMA user_version = {};",
            SCHEMA_VERSION + 1
        ))
        .expect("prepare future store");
        assert_eq!(pragma_text(&conn, "journal_mode"), "delete");
    }
    let bytes_before = std::fs::read(dir.db()).expect("read");

    let err = Store::open(dir.db()).expect_err("must refuse");
    assert_eq!(
        err.to_string(),
        format!(
            "the state store {} has schema version {}, newer than this airlock supports ({})",
            dir.db().display(),
            SCHEMA_VERSION + 1,
            SCHEMA_VERSION
        )
    );
    match err {
        StoreError::TooNew {
            path,
            found,
            supported,
        } => assert_eq!(
            (path, found, supported),
            (dir.db(), SCHEMA_VERSION + 1, SCHEMA_VERSION)
        ),
        other => panic!("expected TooNew, got {other:?}"),
    }

    assert_eq!(std::fs::read(dir.db()).expect("read"), bytes_before);
    let conn = raw(&dir.db());
    assert_eq!(pragma_i64(&conn, "user_version"), SCHEMA_VERSION + 1);
    assert_eq!(pragma_text(&conn, "journal_mode"), "delete");
}

#[test]
fn invalid_names_are_refused() {
    let dir = TempDir::new("names");
    let mut store = Store::open(dir.db()).expect("open");
    let long = "x".repeat(64);
    for bad in [
        "",
        "..",
        "/",
        "a/b",
        "a\nb",
        "a\u{7f}b",
        "tab\there",
        &long,
        "Upper",
        "-a",
        "a-",
    ] {
        let expected = airlock_model::spec::validate_name(bad).expect_err("model refuses it too");
        match store.create(bad, "{}", None, None, None) {
            Err(StoreError::InvalidName(msg)) => assert_eq!(msg, expected, "{bad:?}"),
            other => panic!("{bad:?}: expected InvalidName, got {other:?}"),
        }
        assert!(
            matches!(store.get(bad), Err(StoreError::InvalidName(_))),
            "{bad:?}"
        );
        assert!(
            matches!(
                store.transition(bad, &[S::Creating], S::Stopped, None, None),
                Err(StoreError::InvalidName(_))
            ),
            "{bad:?}"
        );
        assert!(
            matches!(store.remove(bad), Err(StoreError::InvalidName(_))),
            "{bad:?}"
        );
    }
    // 63 bytes is the limit, not past it.
    create(&mut store, &"x".repeat(63));
    assert_eq!(store.list().expect("list").len(), 1);
}

#[test]
fn bad_spec_json_is_refused() {
    let dir = TempDir::new("spec");
    let mut store = Store::open(dir.db()).expect("open");
    match store.create("spec", "{not json", None, None, None) {
        Err(StoreError::BadSpec { name, .. }) => assert_eq!(name, "spec"),
        other => panic!("expected BadSpec, got {other:?}"),
    }
    assert_eq!(store.list().expect("list"), vec![]);
}

#[test]
fn duplicate_create_is_refused() {
    let dir = TempDir::new("dup");
    let mut store = Store::open(dir.db()).expect("open");
    let first = create(&mut store, "twice");
    match store.create("twice", r#"{"other":true}"#, None, None, None) {
        Err(StoreError::Exists(name)) => assert_eq!(name, "twice"),
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(store.list().expect("list"), vec![first]);
}

#[test]
fn transitions_are_compare_and_set() {
    let dir = TempDir::new("cas");
    let mut store = Store::open(dir.db()).expect("open");
    let created = create(&mut store, "box");

    // Not in the expected state: refused, nothing changes.
    let err = store
        .transition("box", &[S::Stopped], S::Starting, None, None)
        .expect_err("conflict");
    assert_eq!(
        expect_conflict(err),
        ("box".into(), S::Creating, vec![S::Stopped])
    );
    assert_eq!(store.get("box").expect("get"), Some(created.clone()));

    // Expected, but the lifecycle forbids the step.
    match store.transition("box", &[S::Creating], S::Running, None, None) {
        Err(StoreError::InvalidTransition { name, from, to }) => {
            assert_eq!((name, from, to), ("box".into(), S::Creating, S::Running))
        }
        other => panic!("expected InvalidTransition, got {other:?}"),
    }

    let stopped = store
        .transition("box", &[S::Creating], S::Stopped, None, None)
        .expect("stopped");
    let starting = store
        .transition(
            "box",
            &[S::Stopped, S::Failed],
            S::Starting,
            Some(4242),
            None,
        )
        .expect("starting");
    let running = store
        .transition("box", &[S::Starting], S::Running, Some(4242), None)
        .expect("running");
    assert_eq!(
        running,
        Record {
            state: S::Running,
            supervisor_pid: Some(4242),
            started_at: running.started_at,
            stopped_at: stopped.stopped_at,
            ..created.clone()
        }
    );
    assert_eq!(starting.stopped_at, stopped.stopped_at);
    assert!(running.started_at.is_some() && stopped.stopped_at.is_some());
    assert_eq!(store.get("box").expect("get"), Some(running.clone()));

    // A crash records the error and clears the pid; the next successful start clears the error.
    let failed = store
        .transition(
            "box",
            &[S::Running],
            S::Failed,
            None,
            Some("supervisor died"),
        )
        .expect("failed");
    assert_eq!(
        (
            failed.state,
            failed.supervisor_pid,
            failed.last_error.as_deref()
        ),
        (S::Failed, None, Some("supervisor died"))
    );
    store
        .transition("box", &[S::Failed], S::Starting, Some(5151), None)
        .expect("restart");
    assert_eq!(
        store.get("box").expect("get").and_then(|r| r.last_error),
        Some("supervisor died".into()),
        "kept until it runs again"
    );
    let rerun = store
        .transition("box", &[S::Starting], S::Running, Some(5151), None)
        .expect("running again");
    assert_eq!((rerun.last_error, rerun.supervisor_pid), (None, Some(5151)));

    // Unknown sandbox.
    assert!(matches!(
        store.transition("ghost", &[S::Running], S::Stopping, None, None),
        Err(StoreError::NotFound(name)) if name == "ghost"
    ));
}

#[test]
fn two_writers_race_for_one_transition() {
    let dir = TempDir::new("race");
    let mut a = Store::open(dir.db()).expect("open a");
    let mut b = Store::open(dir.db()).expect("open b");
    create(&mut a, "contested");
    a.transition("contested", &[S::Creating], S::Stopped, None, None)
        .expect("stopped");

    // Both saw it stopped; only the first start wins.
    a.transition("contested", &[S::Stopped], S::Starting, Some(1), None)
        .expect("a starts it");
    let err = b
        .transition("contested", &[S::Stopped], S::Starting, Some(2), None)
        .expect_err("b lost the race");
    assert_eq!(
        expect_conflict(err),
        ("contested".into(), S::Starting, vec![S::Stopped])
    );
    assert_eq!(
        b.get("contested")
            .expect("get")
            .and_then(|r| r.supervisor_pid),
        Some(1)
    );
}

#[test]
fn remove_needs_removing_first() {
    let dir = TempDir::new("rm");
    let mut store = Store::open(dir.db()).expect("open");
    create(&mut store, "gone");
    store
        .transition("gone", &[S::Creating], S::Stopped, None, None)
        .expect("stopped");

    let err = store.remove("gone").expect_err("still stopped");
    assert_eq!(
        expect_conflict(err),
        ("gone".into(), S::Stopped, vec![S::Removing])
    );

    store
        .transition("gone", &[S::Stopped], S::Removing, None, None)
        .expect("removing");
    // A retried removal (rm --force after a crash) may record removing again.
    store
        .transition("gone", &[S::Removing], S::Removing, None, None)
        .expect("removing again");
    store.remove("gone").expect("remove");
    assert_eq!(store.get("gone").expect("get"), None);
    assert!(matches!(store.remove("gone"), Err(StoreError::NotFound(n)) if n == "gone"));

    // The name is free again, with a new id.
    create(&mut store, "gone");
}

#[test]
fn corrupt_rows_are_reported_not_panicked_on() {
    let dir = TempDir::new("corrupt");
    drop(Store::open(dir.db()).expect("open"));
    raw(&dir.db())
        .execute_batch(
            "INSERT INTO sandboxes (name, id, state, spec_json, created_at) \
             VALUES ('weird', 'x1', 'exploded', '{}', 1);\
             INSERT INTO sandboxes (name, id, state, spec_json, created_at) \
             VALUES ('torn', 'x2', 'stopped', '{', 1);",
        )
        .expect("insert");
    let store = Store::open(dir.db()).expect("open");
    for (name, detail) in [
        ("weird", "unknown sandbox state \"exploded\""),
        (
            "torn",
            "spec_json: EOF while parsing an object at line 1 column 1",
        ),
    ] {
        match store.get(name) {
            Err(StoreError::Corrupt { name: n, detail: d }) => {
                assert_eq!((n.as_str(), d.as_str()), (name, detail))
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
    assert!(matches!(store.list(), Err(StoreError::Corrupt { .. })));
}

#[test]
fn record_json_shape() {
    let record = Record {
        name: "web".into(),
        id: "0123456789abcdef0123456789abcdef".into(),
        state: S::Running,
        spec: json!({"command": ["bash"]}),
        backend: Some("container".into()),
        image: None,
        profile: Some("default".into()),
        supervisor_pid: Some(77),
        created_at: 1_700_000_000,
        started_at: Some(1_700_000_010),
        stopped_at: None,
        last_error: None,
    };
    let value = serde_json::to_value(&record).expect("serialize");
    assert_eq!(
        value,
        json!({
            "name": "web",
            "id": "0123456789abcdef0123456789abcdef",
            "state": "running",
            "spec": {"command": ["bash"]},
            "backend": "container",
            "image": null,
            "profile": "default",
            "supervisor_pid": 77,
            "created_at": 1_700_000_000,
            "started_at": 1_700_000_010,
            "stopped_at": null,
            "last_error": null
        })
    );
    assert_eq!(
        serde_json::from_value::<Record>(value).expect("deserialize"),
        record
    );
}

/// 64 threads, each with its own connection, create 64 sandboxes at the same instant on a
/// store nobody has opened yet (so they also race to create the file and migrate it).
#[test]
fn sixty_four_concurrent_creates() {
    const N: usize = 64;
    let dir = TempDir::new("concurrent");
    let path = dir.db();
    let barrier = Arc::new(Barrier::new(N));
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let path = path.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut store = Store::open(&path)?;
                let record = store.create(&format!("sb-{i:02}"), "{}", None, None, None)?;
                Ok::<_, StoreError>(record)
            })
        })
        .collect();
    let records: Vec<Record> = handles
        .into_iter()
        .map(|h| h.join().expect("thread").expect("open + create"))
        .collect();

    let ids: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), N);
    let listed = Store::open(&path).expect("open").list().expect("list");
    let names: Vec<String> = listed.iter().map(|r| r.name.clone()).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("sb-{i:02}")).collect();
    assert_eq!(names, expected);
}
