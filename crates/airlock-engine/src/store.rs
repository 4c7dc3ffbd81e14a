//! The state store: one SQLite file holding a row per named sandbox.
//!
//! WAL journal, a busy timeout and `BEGIN IMMEDIATE` for every write, so several processes
//! (the engine, and until the engine exists the CLI processes themselves) can open the same
//! file at once. The schema is a list of embedded migrations applied in order and tracked by
//! `PRAGMA user_version`; a store written by a newer airlock is refused and left untouched.
//!
//! State changes are compare-and-set: [`Store::transition`] names the states it expects the
//! sandbox to be in and fails with [`StoreError::Conflict`] when another writer got there first.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use airlock_model::lifecycle::{self, Event, Next, SandboxState};
use airlock_model::spec::validate_name;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

/// The schema, one migration per version: `MIGRATIONS[i]` takes a store from version `i` to
/// `i + 1`. Only ever append.
pub const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_sandboxes.sql"),
    include_str!("migrations/0002_pool.sql"),
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a writer waits for another one before giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const COLUMNS: &str = "name, id, state, spec_json, backend, image, profile, supervisor_pid, \
                       created_at, started_at, stopped_at, last_error";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state store {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot make the state store {} private (mode 0600)", path.display())]
    Permissions {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state store {} cannot use a WAL journal (journal mode stays {mode})", path.display())]
    NoWal { path: PathBuf, mode: String },
    #[error(
        "the state store {} has schema version {found}, newer than this airlock supports ({supported})",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("cannot migrate the state store {} to schema version {version}", path.display())]
    Migration {
        path: PathBuf,
        version: i64,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{0}")]
    InvalidName(String),
    #[error("sandbox {0} already exists")]
    Exists(String),
    #[error("no sandbox named {0}")]
    NotFound(String),
    #[error("sandbox {name} is {actual}, not {}", list_states(expected))]
    Conflict {
        name: String,
        actual: SandboxState,
        expected: Vec<SandboxState>,
    },
    #[error("sandbox {name} cannot go from {from} to {to}")]
    InvalidTransition {
        name: String,
        from: SandboxState,
        to: SandboxState,
    },
    #[error("the spec of sandbox {name} is not valid JSON")]
    BadSpec {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the state store record of sandbox {name} is corrupt: {detail}")]
    Corrupt { name: String, detail: String },
    #[error("cannot generate a sandbox id")]
    Id(#[source] std::io::Error),
    #[error("state store error")]
    Sqlite(#[from] rusqlite::Error),
}

impl StoreError {
    /// What the user can do about it, for the `hint:` line.
    pub fn hint(&self) -> Option<String> {
        match self {
            StoreError::TooNew { .. } => Some(
                "it was written by a newer airlock; use that version (this one left the store untouched)"
                    .into(),
            ),
            StoreError::InvalidName(_) => Some(
                "names are 1-63 lowercase letters, digits and '-', not starting or ending with '-'"
                    .into(),
            ),
            StoreError::Exists(name) => Some(format!(
                "airlock start {name}, or choose another name, or airlock rm {name} first"
            )),
            StoreError::NotFound(_) => Some("airlock list shows the sandboxes".into()),
            StoreError::Conflict { name, .. } | StoreError::InvalidTransition { name, .. } => {
                Some(format!("airlock status {name}"))
            }
            _ => None,
        }
    }
}

fn list_states(states: &[SandboxState]) -> String {
    if states.is_empty() {
        return "in any expected state".into();
    }
    let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    names.join(" or ")
}

/// One named sandbox as the store knows it. This is the shape `list --json` and
/// `status --json` build on. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Record {
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", examples("web"))]
    pub name: String,
    /// Unique among every sandbox ever made here (names are reused, ids are not).
    #[schema(pattern = "^[0-9a-f]{32}$")]
    pub id: String,
    pub state: SandboxState,
    /// The spec it was created from, as given to [`Store::create`].
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    pub backend: Option<String>,
    pub image: Option<String>,
    pub profile: Option<String>,
    /// The supervisor owning its namespaces, while it has one.
    pub supervisor_pid: Option<i32>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    /// Why it last failed; cleared when it next reaches `running`.
    pub last_error: Option<String>,
}

/// An open state store. Each process (or thread) opens its own; SQLite coordinates them.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed, mode 0600) and migrates the store at `path`. A store from
    /// a newer schema is refused before anything is written to it.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let existed = path.exists();
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;

        // Read-only until we know we understand this store.
        let found = user_version(&conn).map_err(open_err)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if !existed {
            // The store names the user's sandboxes and their specs: not for other users.
            // Its -wal and -shm files take the same mode from SQLite.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(|source| {
                StoreError::Permissions {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        enable_wal(&conn, &path)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_err)?;
        migrate(&mut conn, &path)?;
        Ok(Store { conn, path })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for the other tables' code in this crate (the warm pool's).
    pub(crate) fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Records a new sandbox in state `creating`, with a fresh unique id.
    pub fn create(
        &mut self,
        name: &str,
        spec_json: &str,
        backend: Option<&str>,
        image: Option<&str>,
        profile: Option<&str>,
    ) -> Result<Record, StoreError> {
        check_name(name)?;
        let spec: serde_json::Value =
            serde_json::from_str(spec_json).map_err(|source| StoreError::BadSpec {
                name: name.to_owned(),
                source,
            })?;
        let record = Record {
            name: name.to_owned(),
            id: new_id()?,
            state: SandboxState::Creating,
            spec,
            backend: backend.map(str::to_owned),
            image: image.map(str::to_owned),
            profile: profile.map(str::to_owned),
            supervisor_pid: None,
            created_at: now(),
            started_at: None,
            stopped_at: None,
            last_error: None,
        };
        let inserted = self.conn.execute(
            &format!("INSERT INTO sandboxes ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
            params![
                record.name,
                record.id,
                record.state.as_str(),
                spec_json,
                record.backend,
                record.image,
                record.profile,
                record.supervisor_pid,
                record.created_at,
                record.started_at,
                record.stopped_at,
                record.last_error,
            ],
        );
        match inserted {
            Ok(_) => Ok(record),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::ConstraintViolation
                    && e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                Err(StoreError::Exists(name.to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the spec of `name` (its egress allowlist changed by `allow`/`deny`); its
    /// state, id and times stay.
    pub fn set_spec(&mut self, name: &str, spec_json: &str) -> Result<(), StoreError> {
        check_name(name)?;
        serde_json::from_str::<serde_json::Value>(spec_json).map_err(|source| {
            StoreError::BadSpec {
                name: name.to_owned(),
                source,
            }
        })?;
        let n = self.conn.execute(
            "UPDATE sandboxes SET spec_json = ?2 WHERE name = ?1",
            params![name, spec_json],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(name.to_owned()));
        }
        Ok(())
    }

    /// The sandbox named `name`, if there is one.
    pub fn get(&self, name: &str) -> Result<Option<Record>, StoreError> {
        check_name(name)?;
        get_in(&self.conn, name)
    }

    /// Every sandbox, ordered by name.
    pub fn list(&self) -> Result<Vec<Record>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM sandboxes ORDER BY name"))?;
        let rows = stmt.query_map([], RawRow::read)?;
        let mut records = Vec::new();
        for row in rows {
            records.push(row?.into_record()?);
        }
        Ok(records)
    }

    /// Compare-and-set: moves `name` to `to` if it is now in one of `expected_from` and the
    /// lifecycle allows the step, all in one transaction.
    ///
    /// `supervisor_pid` replaces the stored pid (`None` clears it). `error`, when given,
    /// replaces `last_error`; reaching `running` clears it. Reaching `running` sets
    /// `started_at`; reaching `stopped` or `failed` sets `stopped_at`.
    pub fn transition(
        &mut self,
        name: &str,
        expected_from: &[SandboxState],
        to: SandboxState,
        supervisor_pid: Option<i32>,
        error: Option<&str>,
    ) -> Result<Record, StoreError> {
        check_name(name)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut record = get_in(&tx, name)?.ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        if !expected_from.contains(&record.state) {
            return Err(StoreError::Conflict {
                name: name.to_owned(),
                actual: record.state,
                expected: expected_from.to_vec(),
            });
        }
        if !lifecycle::reachable(record.state, to) {
            return Err(StoreError::InvalidTransition {
                name: name.to_owned(),
                from: record.state,
                to,
            });
        }
        let now = now();
        record.state = to;
        record.supervisor_pid = supervisor_pid;
        match (error, to) {
            (Some(error), _) => record.last_error = Some(error.to_owned()),
            (None, SandboxState::Running) => record.last_error = None,
            (None, _) => {}
        }
        match to {
            SandboxState::Running => record.started_at = Some(now),
            SandboxState::Stopped | SandboxState::Failed => record.stopped_at = Some(now),
            _ => {}
        }
        tx.execute(
            "UPDATE sandboxes SET state = ?2, supervisor_pid = ?3, last_error = ?4, \
             started_at = ?5, stopped_at = ?6 WHERE name = ?1",
            params![
                record.name,
                record.state.as_str(),
                record.supervisor_pid,
                record.last_error,
                record.started_at,
                record.stopped_at,
            ],
        )?;
        tx.commit()?;
        Ok(record)
    }

    /// Deletes the record of a sandbox whose teardown is done. It must be in `removing`
    /// (recorded before the teardown began, so a crash halfway leaves a trace to finish).
    pub fn remove(&mut self, name: &str) -> Result<(), StoreError> {
        check_name(name)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record = get_in(&tx, name)?.ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        if lifecycle::next(record.state, Event::Removed) != Some(Next::Gone) {
            return Err(StoreError::Conflict {
                name: name.to_owned(),
                actual: record.state,
                expected: vec![SandboxState::Removing],
            });
        }
        tx.execute("DELETE FROM sandboxes WHERE name = ?1", params![name])?;
        tx.commit()?;
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), StoreError> {
    validate_name(name).map_err(StoreError::InvalidName)
}

/// Switches a store to the WAL journal (a no-op once it is). The switch takes an exclusive
/// lock without going through the busy handler, so openers racing on a fresh file retry.
fn enable_wal(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
            row.get::<_, String>(0)
        }) {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                return Err(StoreError::NoWal {
                    path: path.to_path_buf(),
                    mode,
                })
            }
            Err(e)
                if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(source) => {
                return Err(StoreError::Open {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Applies the migrations this store has not seen yet, in one immediate transaction so that
/// concurrent openers migrate exactly once.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let migration_err = |version, source| StoreError::Migration {
        path: path.to_path_buf(),
        version,
        source,
    };
    if user_version(conn).map_err(|e| migration_err(SCHEMA_VERSION, e))? == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| migration_err(SCHEMA_VERSION, e))?;
    let found = user_version(&tx).map_err(|e| migration_err(SCHEMA_VERSION, e))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in (1..).zip(MIGRATIONS).skip(found.max(0) as usize) {
        tx.execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "user_version", version))
            .map_err(|e| migration_err(version, e))?;
    }
    tx.commit().map_err(|e| migration_err(SCHEMA_VERSION, e))
}

fn get_in(conn: &Connection, name: &str) -> Result<Option<Record>, StoreError> {
    let raw = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM sandboxes WHERE name = ?1"),
            params![name],
            RawRow::read,
        )
        .optional()?;
    raw.map(RawRow::into_record).transpose()
}

/// A row as SQLite holds it, before its text columns are checked.
struct RawRow {
    name: String,
    id: String,
    state: String,
    spec_json: String,
    backend: Option<String>,
    image: Option<String>,
    profile: Option<String>,
    supervisor_pid: Option<i32>,
    created_at: Option<i64>,
    started_at: Option<i64>,
    stopped_at: Option<i64>,
    last_error: Option<String>,
}

impl RawRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
        Ok(RawRow {
            name: row.get(0)?,
            id: row.get(1)?,
            state: row.get(2)?,
            spec_json: row.get(3)?,
            backend: row.get(4)?,
            image: row.get(5)?,
            profile: row.get(6)?,
            supervisor_pid: row.get(7)?,
            created_at: row.get(8)?,
            started_at: row.get(9)?,
            stopped_at: row.get(10)?,
            last_error: row.get(11)?,
        })
    }

    fn into_record(self) -> Result<Record, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            name: self.name.clone(),
            detail,
        };
        let state = self.state.parse().map_err(|e| corrupt(format!("{e}")))?;
        let spec = serde_json::from_str(&self.spec_json)
            .map_err(|e| corrupt(format!("spec_json: {e}")))?;
        let created_at = self
            .created_at
            .ok_or_else(|| corrupt("created_at is missing".into()))?;
        Ok(Record {
            name: self.name,
            id: self.id,
            state,
            spec,
            backend: self.backend,
            image: self.image,
            profile: self.profile,
            supervisor_pid: self.supervisor_pid,
            created_at,
            started_at: self.started_at,
            stopped_at: self.stopped_at,
            last_error: self.last_error,
        })
    }
}

/// 128 random bits as 32 lowercase hex digits.
pub(crate) fn new_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(StoreError::Id)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
