//! The engine's operations on named sandboxes: create, start, stop, rm, list, status,
//! reconcile. Each is a [`lifecycle::can`] check, a compare-and-set transition in the store,
//! the backend call, and the final transition; a failed backend call is rolled back so that
//! no half-made sandbox is ever left (a failed creation leaves neither row nor folder).
//!
//! One folder per sandbox, `STATE/sandboxes/NAME/` (mode 0700), holding `spec.json`
//! (written atomically), `id` (the record's unique id: what the backend names anything outside
//! the folder by, e.g. cgroups) and whatever the backend keeps there. The store is the truth about
//! which sandboxes exist; [`Engine::reconcile`] makes it match what the backend sees after a
//! crash of the engine or of a supervisor.
//!
//! An `Engine` is shared by the API threads (`&self` everywhere). Operations on different
//! sandboxes run in parallel; the store is only locked for the short store calls, never
//! across a backend call, and concurrent operations on one sandbox are arbitrated by the
//! store's compare-and-set (the loser gets [`EngineError::Conflict`]).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_model::exit;
use airlock_model::lifecycle::{self, Op, Refused, SandboxState as S};

use crate::backend::{Backend, BackendError, Liveness};
pub use crate::report::{Change, ReconcileReport, Status};
use crate::store::{Record, Store, StoreError};

/// The file in a sandbox's folder holding its unique id.
pub const ID_FILE: &str = "id";

/// A sandbox's unique id from its folder (32 lowercase hex digits), if present and well-formed.
pub fn read_id(dir: &Path) -> Option<String> {
    let mut buf = [0u8; 128];
    let text = airlock_sandbox::sys::read_small(dir.join(ID_FILE), &mut buf).ok()?;
    let id = std::str::from_utf8(text).ok()?.trim();
    (id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then(|| id.to_owned())
}

/// The grace period of a stop nobody gave one for (reconcile finishing an interrupted stop).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    InvalidName(String),
    /// A request whose values are out of range.
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid spec: {0}")]
    BadSpec(String),
    #[error("no sandbox named {0}")]
    NotFound(String),
    #[error("sandbox {0} already exists")]
    Exists(String),
    /// The lifecycle refuses the operation in the sandbox's current state.
    #[error(transparent)]
    Refused(Refused),
    /// Another operation changed the sandbox between our check and our step.
    #[error("sandbox {name} changed while {op}: it is now {actual}")]
    Conflict {
        name: String,
        op: &'static str,
        actual: String,
    },
    #[error("cannot {op} sandbox {name}: {source}")]
    Backend {
        op: &'static str,
        name: String,
        #[source]
        source: BackendError,
    },
    /// The sandbox's folder is missing or unreadable.
    #[error("the folder of sandbox {name} ({}) is missing or damaged: {detail}", dir.display())]
    Damaged {
        name: String,
        dir: PathBuf,
        detail: String,
    },
    /// diff, fetch or sync of a clone workspace did not (fully) happen.
    #[error("{}", work_message(.source))]
    Work {
        name: String,
        #[source]
        source: airlock_work::ops::OpError,
    },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(StoreError),
    /// An action carried out in a typed child process failed (its error as it gave it).
    #[error(transparent)]
    Action(crate::action::ActionError),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidName(msg) => EngineError::InvalidName(msg),
            StoreError::Exists(name) => EngineError::Exists(name),
            StoreError::NotFound(name) => EngineError::NotFound(name),
            StoreError::BadSpec { source, .. } => EngineError::BadSpec(source.to_string()),
            other => EngineError::Store(other),
        }
    }
}

/// A work error's message, with what it refused listed (an API client sees them in `error`).
fn work_message(e: &airlock_work::ops::OpError) -> String {
    use airlock_work::ops::OpError;
    let list = |items: Vec<String>| items.iter().map(|i| format!("\n  {i}")).collect::<String>();
    match e {
        OpError::NeedsReview { findings, .. } => format!(
            "{e}: {} flagged change(s):{}",
            findings.len(),
            list(
                findings
                    .iter()
                    .map(|f| format!("{}  {}  {}", f.kind.label(), f.path, f.detail))
                    .collect()
            )
        ),
        OpError::ThroughLinks(r) => format!("{e}:{}", list(r.through_links.clone())),
        OpError::Conflicts(r) => format!("{e}:{}", list(r.conflicts.clone())),
        _ => e.to_string(),
    }
}

/// What a work refusal refused, as data (`ActionError::detail`): the CLI lists it as it did
/// in process.
fn work_detail(e: &airlock_work::ops::OpError) -> Option<serde_json::Value> {
    use airlock_work::ops::OpError;
    let summary = e.to_string();
    match e {
        OpError::NeedsReview {
            verb,
            branch,
            findings,
        } => Some(serde_json::json!({
            "summary": summary, "verb": verb, "branch": branch, "findings": findings,
        })),
        OpError::ThroughLinks(r) | OpError::Conflicts(r) => Some(serde_json::json!({
            "summary": summary, "report": r,
        })),
        _ => None,
    }
}

impl EngineError {
    /// The exit code the CLI ends with (README "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::InvalidName(_) | EngineError::BadSpec(_) | EngineError::BadRequest(_) => {
                exit::USAGE
            }
            EngineError::NotFound(_) => exit::NOT_FOUND,
            EngineError::Exists(_) => exit::ALREADY_EXISTS,
            EngineError::Refused(_) | EngineError::Conflict { .. } => exit::CONFLICT,
            EngineError::Backend {
                source: BackendError::Unavailable(_),
                ..
            } => exit::BACKEND_UNAVAILABLE,
            EngineError::Backend {
                source: BackendError::Refused { .. },
                ..
            } => exit::POLICY_REFUSED,
            EngineError::Backend { .. } => exit::SANDBOX_FAILED,
            EngineError::Work { source, .. } => source.exit_code(),
            EngineError::Damaged { .. } | EngineError::Io { .. } | EngineError::Store(_) => 1,
            EngineError::Action(e) => e.code,
        }
    }

    /// As the one error shape of actions: kind, exit code, the whole cause chain, hint (a test
    /// holds kind, code and status to the table, [`crate::action::KINDS`]).
    pub fn action_error(&self) -> crate::action::ActionError {
        // The whole cause chain: "cannot start sandbox x: <backend's reason>" already holds
        // it for backend errors; store errors keep theirs in source().
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            source = cause.source();
        }
        crate::action::ActionError {
            kind: self.kind().to_owned(),
            code: self.exit_code(),
            message,
            hint: self.hint(),
            detail: match self {
                EngineError::Work { source, .. } => work_detail(source),
                EngineError::Action(e) => e.detail.clone(),
                _ => None,
            },
        }
    }

    /// The HTTP status the API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            EngineError::InvalidName(_) | EngineError::BadSpec(_) | EngineError::BadRequest(_) => {
                400
            }
            EngineError::NotFound(_) => 404,
            EngineError::Exists(_) | EngineError::Refused(_) | EngineError::Conflict { .. } => 409,
            EngineError::Backend {
                source: BackendError::Unavailable(_),
                ..
            } => 503,
            EngineError::Backend {
                source: BackendError::Refused { .. },
                ..
            } => 403,
            EngineError::Work { source, .. } if source.kind() != "internal" => 409,
            EngineError::Action(e) => e.http_status(),
            _ => 500,
        }
    }

    /// A short stable name for the kind of error (`kind` in the API's error body).
    pub fn kind(&self) -> &str {
        match self {
            EngineError::InvalidName(_) => "invalid_name",
            EngineError::BadRequest(_) => "bad_request",
            EngineError::BadSpec(_) => "bad_spec",
            EngineError::NotFound(_) => "not_found",
            EngineError::Exists(_) => "exists",
            EngineError::Refused(_) => "wrong_state",
            EngineError::Conflict { .. } => "conflict",
            EngineError::Backend {
                source: BackendError::Refused { .. },
                ..
            } => "refused",
            EngineError::Backend { .. } => "backend",
            EngineError::Damaged { .. } => "damaged",
            EngineError::Work { source, .. } => source.kind(),
            EngineError::Io { .. } | EngineError::Store(_) => "internal",
            EngineError::Action(e) => &e.kind,
        }
    }

    /// What the user can do about it, for the `hint:` line.
    pub fn hint(&self) -> Option<String> {
        match self {
            EngineError::InvalidName(_) => Some(
                "names are 1-63 lowercase letters, digits and '-', not starting or ending with '-'"
                    .into(),
            ),
            EngineError::NotFound(_) => Some("airlock list shows the sandboxes".into()),
            EngineError::Exists(name) => Some(format!(
                "airlock start {name}, or choose another name, or airlock rm {name} first"
            )),
            EngineError::Refused(refused) => Some(refused.hint()),
            EngineError::Conflict { name, .. } => Some(format!(
                "another command changed it; airlock status {name} shows its state"
            )),
            EngineError::Backend {
                source: BackendError::StartTimeout { hint, .. },
                ..
            } => Some(hint.clone()),
            EngineError::Backend {
                source:
                    BackendError::Refused {
                        hint: Some(hint), ..
                    },
                ..
            } => Some(hint.clone()),
            EngineError::Backend { name, op, .. } => Some(match *op {
                "remove" => format!("retry with airlock rm --force {name}"),
                _ => format!("airlock status {name} shows its state and last error"),
            }),
            EngineError::Damaged { name, .. } => Some(format!(
                "airlock rm --force {name} removes what is left of it"
            )),
            EngineError::Store(e) => e.hint(),
            EngineError::Work { name, source } => source.hint(name),
            EngineError::Action(e) => e.hint.clone(),
            _ => None,
        }
    }
}

pub struct Engine {
    pub(crate) store: Mutex<Store>,
    pub(crate) backend: Arc<dyn Backend>,
    state_dir: PathBuf,
    /// Names with an operation in progress in this engine, and how many: reconcile leaves
    /// them alone (their transitional state is not a leftover).
    in_flight: Mutex<HashMap<String, usize>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

/// Marks a name busy for as long as it lives.
struct InFlight<'a> {
    engine: &'a Engine,
    name: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = lock(&self.engine.in_flight);
        if let Some(n) = map.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.name);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking API thread must not take the whole engine down with a poisoned lock.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Engine {
    /// Opens (creating) the state directory and its store `STATE/store.db`. Does not
    /// reconcile: call [`Engine::reconcile`] before serving (the API server does).
    pub fn open(state_dir: &Path, backend: Arc<dyn Backend>) -> Result<Engine, EngineError> {
        for dir in [state_dir.to_path_buf(), state_dir.join("sandboxes")] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|source| EngineError::Io {
                    what: "cannot create the state directory",
                    path: dir.clone(),
                    source,
                })?;
        }
        let store = Store::open(state_dir.join("store.db"))?;
        Ok(Engine {
            store: Mutex::new(store),
            backend,
            state_dir: state_dir.to_path_buf(),
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The folder of sandbox `name` (whether or not it exists).
    /// The review of a clone-mode sandbox's branch (the engine runs as the user, so it reads
    /// the clone and the host repository as the CLI would).
    fn review(&self, name: &str) -> Result<(PathBuf, airlock_work::review::Review), EngineError> {
        airlock_model::spec::validate_name(name).map_err(EngineError::InvalidName)?;
        let dir = self.sandbox_dir(name);
        if !dir.is_dir() {
            return Err(EngineError::NotFound(name.to_owned()));
        }
        let work = |source| EngineError::Work {
            name: name.to_owned(),
            source,
        };
        // A running microVM sandbox's work is in its guest: bring the branch over first (a
        // stopped one whose VM ended without that: refused, see guest_work).
        crate::guest_work::pull_or_refuse(&dir, name).map_err(|e| work(e.into()))?;
        let review = airlock_work::ops::open(&dir, name).map_err(work)?;
        Ok((dir, review))
    }

    /// What a clone-mode sandbox's branch changes against where it started, and the gate's
    /// findings.
    /// With `patch`, the changes as text too.
    pub fn diff(
        &self,
        name: &str,
        patch: Option<airlock_work::ops::PatchForm>,
    ) -> Result<airlock_work::ops::DiffSummary, EngineError> {
        let (_, r) = self.review(name)?;
        let work = |source| EngineError::Work {
            name: name.to_owned(),
            source,
        };
        let mut d = airlock_work::ops::diff(&r, name).map_err(work)?;
        if let Some(form) = patch {
            d.patch = Some(airlock_work::ops::patch(&r, form).map_err(work)?);
        }
        Ok(d)
    }

    /// The branch into the host repository as `airlock/NAME`, review-gated.
    pub fn fetch(
        &self,
        name: &str,
        accept: bool,
        force: bool,
    ) -> Result<airlock_work::ops::FetchReport, EngineError> {
        let (dir, r) = self.review(name)?;
        let got = airlock_work::ops::fetch(&dir, &r, name, accept, force);
        self.audit_review(name, "fetch", accept, got.as_ref().map(|f| &f.findings));
        got.map_err(|source| EngineError::Work {
            name: name.to_owned(),
            source,
        })
    }

    /// The review gate's outcome in the sandbox's audit journal.
    fn audit_review(
        &self,
        name: &str,
        op: &str,
        accept: bool,
        got: Result<&Vec<airlock_work::gate::Finding>, &airlock_work::ops::OpError>,
    ) {
        crate::audit::review(&self.sandbox_dir(name), op, accept, got);
    }

    /// The branch's committed changes into the host checkout, review-gated.
    pub fn sync(
        &self,
        name: &str,
        options: airlock_work::ops::SyncOptions,
    ) -> Result<airlock_work::ops::SyncReport, EngineError> {
        let (dir, r) = self.review(name)?;
        let (accept, dry_run) = (options.accept, options.dry_run);
        let got = airlock_work::ops::sync(&dir, &r, name, options);
        if !dry_run {
            self.audit_review(name, "sync", accept, got.as_ref().map(|s| &s.findings));
        }
        got.map_err(|source| EngineError::Work {
            name: name.to_owned(),
            source,
        })
    }

    /// The program that runs `exec` in this engine's sandboxes (None: the backend has none).
    pub fn exec_program(&self) -> Option<PathBuf> {
        self.backend.exec_program()
    }

    /// Carries out an action that needs a process of its own, through the backend.
    pub(crate) fn child_action(
        &self,
        action: &crate::action::Action,
    ) -> Result<crate::action::ActionData, EngineError> {
        self.backend
            .child_action(action)
            .map_err(EngineError::Action)
    }

    pub fn sandbox_dir(&self, name: &str) -> PathBuf {
        self.state_dir.join("sandboxes").join(name)
    }

    fn begin(&self, name: &str) -> InFlight<'_> {
        *lock(&self.in_flight).entry(name.to_owned()).or_insert(0) += 1;
        InFlight {
            engine: self,
            name: name.to_owned(),
        }
    }

    pub(crate) fn get_record(&self, name: &str) -> Result<Record, EngineError> {
        lock(&self.store)
            .get(name)?
            .ok_or_else(|| EngineError::NotFound(name.to_owned()))
    }

    fn transition(
        &self,
        name: &str,
        op: &'static str,
        from: &[S],
        to: S,
        supervisor_pid: Option<i32>,
        error: Option<&str>,
    ) -> Result<Record, EngineError> {
        // The state it leaves, for the journal (read under the same lock as the change).
        let (before, result) = {
            let mut store = lock(&self.store);
            let before = match from {
                [only] => Some(*only),
                _ => store.get(name).ok().flatten().map(|r| r.state),
            };
            (
                before,
                store.transition(name, from, to, supervisor_pid, error),
            )
        };
        if result.is_ok() {
            let mut ev = serde_json::json!({"op": op, "to": to.to_string()});
            if let Some(b) = before {
                ev["from"] = b.to_string().into();
            }
            if let Some(e) = error {
                ev["error"] = e.into();
            }
            crate::audit::record(&self.sandbox_dir(name), "lifecycle", ev);
        }
        result.map_err(|e| match e {
            StoreError::Conflict { actual, .. } => EngineError::Conflict {
                name: name.to_owned(),
                op,
                actual: actual.to_string(),
            },
            StoreError::NotFound(_) => EngineError::Conflict {
                name: name.to_owned(),
                op,
                actual: "removed".into(),
            },
            other => other.into(),
        })
    }

    /// Records a new sandbox and makes its folder; it ends `stopped`. On any failure the row
    /// and the folder are both gone again.
    pub fn create(&self, name: &str, spec_json: &str) -> Result<Record, EngineError> {
        let _busy = self.begin(name);
        let spec: serde_json::Value =
            serde_json::from_str(spec_json).map_err(|e| EngineError::BadSpec(e.to_string()))?;
        if !spec.is_object() {
            return Err(EngineError::BadSpec(
                "the spec must be a JSON object".into(),
            ));
        }
        let str_field = |key: &str| spec.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        // A RunSpec's root filesystem (`rootfs`: "host" or an image), else a plain `image`.
        let rootfs = spec
            .get("rootfs")
            .and_then(|v| serde_json::from_value::<airlock_model::spec::RootFs>(v.clone()).ok())
            .map(|r| r.label());
        let (backend, image, profile) = (
            str_field("backend"),
            rootfs.or_else(|| str_field("image")),
            str_field("profile"),
        );
        let record = lock(&self.store).create(
            name,
            spec_json,
            backend.as_deref(),
            image.as_deref(),
            profile.as_deref(),
        )?;
        let dir = self.sandbox_dir(name);
        let made = self
            .make_folder(&dir, spec_json, &record.id)
            .and_then(|()| {
                self.backend
                    .prepare(name, &dir, spec_json)
                    .map_err(|source| EngineError::Backend {
                        op: "create",
                        name: name.to_owned(),
                        source,
                    })
            })
            .and_then(|()| {
                self.transition(name, "creating", &[S::Creating], S::Stopped, None, None)
            });
        match made {
            Ok(record) => Ok(record),
            Err(e) => {
                // Folder first, row last: a crash in between leaves a `creating` row that
                // reconcile deletes; never a folder nobody knows about.
                let _ = self.backend.destroy(name, &dir);
                let _ = remove_dir(&dir);
                let mut store = lock(&self.store);
                if store
                    .transition(name, &[S::Creating], S::Removing, None, None)
                    .is_ok()
                {
                    let _ = store.remove(name);
                }
                Err(e)
            }
        }
    }

    fn make_folder(&self, dir: &Path, spec_json: &str, id: &str) -> Result<(), EngineError> {
        // A folder without a row is a leftover of a crash (or of a lost race with rm):
        // this sandbox's row is ours now, so is the name's folder.
        if dir.exists() {
            remove_dir(dir)?;
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|source| EngineError::Io {
                what: "cannot create the sandbox folder",
                path: dir.to_path_buf(),
                source,
            })?;
        write_atomic(&dir.join(ID_FILE), id.as_bytes())?;
        write_atomic(&dir.join("spec.json"), spec_json.as_bytes())
    }

    /// Starts a `stopped` or `failed` sandbox; it ends `running`, or `failed` with the
    /// backend's error as `last_error`.
    pub fn start(&self, name: &str) -> Result<Record, EngineError> {
        self.start_with(name, &crate::backend::Secrets::default())
    }

    /// `start`, handing the backend secret values for this start (held in memory only).
    pub fn start_with(
        &self,
        name: &str,
        secrets: &crate::backend::Secrets,
    ) -> Result<Record, EngineError> {
        self.refresh(Some(name));
        let _busy = self.begin(name);
        let record = self.get_record(name)?;
        lifecycle::can(name, record.state, Op::Start).map_err(EngineError::Refused)?;
        let dir = self.sandbox_dir(name);
        let spec_json =
            fs::read_to_string(dir.join("spec.json")).map_err(|e| EngineError::Damaged {
                name: name.to_owned(),
                dir: dir.clone(),
                detail: format!("spec.json: {e}"),
            })?;
        // Folders made before ids were written there get theirs now.
        if read_id(&dir).as_deref() != Some(record.id.as_str()) {
            write_atomic(&dir.join(ID_FILE), record.id.as_bytes())?;
        }
        self.transition(
            name,
            "starting",
            &[S::Stopped, S::Failed],
            S::Starting,
            None,
            None,
        )?;
        let started = match self.backend.start(name, &dir, &spec_json, secrets) {
            Ok(started) => started,
            Err(source) => {
                let message = source.to_string();
                // If someone stopped or removed it meanwhile, their state stands.
                let _ = self.transition(
                    name,
                    "starting",
                    &[S::Starting],
                    S::Failed,
                    None,
                    Some(&message),
                );
                return Err(EngineError::Backend {
                    op: "start",
                    name: name.to_owned(),
                    source,
                });
            }
        };
        match self.transition(
            name,
            "starting",
            &[S::Starting],
            S::Running,
            Some(started.supervisor_pid),
            None,
        ) {
            Ok(record) => Ok(record),
            Err(e) => {
                // Stopped or removed while it was starting: undo our start, theirs wins.
                let _ = self.backend.stop(name, &dir, Duration::ZERO);
                Err(e)
            }
        }
    }

    /// Stops a sandbox (asks, waits `grace`, kills); it ends `stopped`. When the backend
    /// cannot stop it, it ends `failed` with the error, still holding its supervisor pid.
    pub fn stop(&self, name: &str, grace: Duration) -> Result<Record, EngineError> {
        self.refresh(Some(name));
        let _busy = self.begin(name);
        let record = self.get_record(name)?;
        lifecycle::can(name, record.state, Op::Stop).map_err(EngineError::Refused)?;
        self.transition(
            name,
            "stopping",
            &[S::Starting, S::Running, S::Failed],
            S::Stopping,
            record.supervisor_pid,
            None,
        )?;
        let dir = self.sandbox_dir(name);
        self.work_out_of_guest(name, &dir, grace);
        match self.backend.stop(name, &dir, grace) {
            Ok(()) => self.transition(name, "stopping", &[S::Stopping], S::Stopped, None, None),
            Err(source) => {
                let pid = match self.backend.probe(name, &dir) {
                    Liveness::Running { supervisor_pid } => Some(supervisor_pid),
                    _ => None,
                };
                let message = format!("stop failed: {source}");
                let _ = self.transition(
                    name,
                    "stopping",
                    &[S::Stopping],
                    if pid.is_some() { S::Failed } else { S::Stopped },
                    pid,
                    Some(&message),
                );
                Err(EngineError::Backend {
                    op: "stop",
                    name: name.to_owned(),
                    source,
                })
            }
        }
    }

    /// A microVM sandbox's clone work out of its guest before it stops (every stop comes
    /// here). A failure does not keep it running: it is journaled, and the disk stays marked,
    /// so diff/fetch/sync say the work is still in the VM (see guest_work).
    fn work_out_of_guest(&self, name: &str, dir: &Path, grace: Duration) {
        use crate::guest_work::AtStop;
        let (result, reason) =
            match crate::guest_work::before_stop(dir, name, grace) {
                Ok(AtStop::Nothing | AtStop::Taken) => return,
                Err(e) => (
                    "failed",
                    format!("the work was not taken out of its VM before it stopped: {e}"),
                ),
                Ok(AtStop::Changed { taken, guest }) => {
                    (
                        "changed",
                        format!(
                    "work changed during stop: the guest's branch moved from {} to {} after \
                     it was taken; the newer work stays on its VM's disk until the next start",
                    short(&taken),
                    if guest.is_empty() { "nothing" } else { short(&guest) }
                ),
                    )
                }
            };
        crate::audit::record(
            dir,
            "review",
            serde_json::json!({"op": "pull at stop", "result": result, "reason": reason}),
        );
    }

    /// Removes a sandbox: its processes, what the backend holds, its folder, its row.
    /// Without `force` only a `stopped` or `failed` one. A failed teardown leaves it
    /// `removing` with the error; `rm --force` (or reconcile) finishes it.
    pub fn rm(&self, name: &str, force: bool) -> Result<(), EngineError> {
        let _busy = self.begin(name);
        let record = self.get_record(name)?;
        lifecycle::can(name, record.state, Op::Remove { force }).map_err(EngineError::Refused)?;
        let allowed: &[S] = if force {
            &S::ALL
        } else {
            &[S::Stopped, S::Failed]
        };
        self.transition(
            name,
            "removing",
            allowed,
            S::Removing,
            record.supervisor_pid,
            None,
        )?;
        self.finish_removal(name)
    }

    fn finish_removal(&self, name: &str) -> Result<(), EngineError> {
        let dir = self.sandbox_dir(name);
        let torn_down = self
            .backend
            .destroy(name, &dir)
            .map_err(|source| EngineError::Backend {
                op: "remove",
                name: name.to_owned(),
                source,
            })
            .and_then(|()| remove_dir(&dir));
        if let Err(e) = torn_down {
            let message = e.to_string();
            let _ = self.transition(
                name,
                "removing",
                &[S::Removing],
                S::Removing,
                None,
                Some(&message),
            );
            return Err(e);
        }
        match lock(&self.store).remove(name) {
            Ok(()) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every sandbox, ordered by name.
    pub fn list(&self) -> Result<Vec<Record>, EngineError> {
        self.refresh(None);
        self.records()
    }

    fn records(&self) -> Result<Vec<Record>, EngineError> {
        Ok(lock(&self.store).list()?)
    }

    /// Settle `running` records whose supervisor is gone (it can die while the engine lives:
    /// the engine learns it on the next request, not only at its own restart).
    fn refresh(&self, only: Option<&str>) {
        let Ok(records) = self.records() else { return };
        for record in records.iter().filter(|r| only.is_none_or(|n| n == r.name)) {
            if record.state != S::Running {
                continue;
            }
            if matches!(
                self.backend
                    .probe(&record.name, &self.sandbox_dir(&record.name)),
                Liveness::Running { .. }
            ) {
                continue;
            }
            let _busy = {
                let mut map = lock(&self.in_flight);
                if map.contains_key(&record.name) {
                    continue;
                }
                map.insert(record.name.clone(), 1);
                InFlight {
                    engine: self,
                    name: record.name.clone(),
                }
            };
            if let Ok(Some((Some(S::Stopped | S::Failed), _))) = self.settle(record) {
                self.backend
                    .reclaim(&record.name, &self.sandbox_dir(&record.name));
            }
        }
    }

    /// One sandbox with its uptime and live resource use.
    pub fn status(&self, name: &str) -> Result<Status, EngineError> {
        self.refresh(Some(name));
        let record = self.get_record(name)?;
        let (uptime_secs, stats) = if record.state == S::Running {
            let uptime = record.started_at.map(|t| (now() - t).max(0));
            (uptime, self.backend.stats(name, &self.sandbox_dir(name)))
        } else {
            (None, None)
        };
        Ok(Status {
            record,
            uptime_secs,
            stats,
        })
    }

    /// Makes the store match what the backend sees, after a crash of the engine or of
    /// supervisors. Sandboxes with an operation in progress in this engine are left alone.
    /// Also deletes folders under `sandboxes/` that no record owns.
    pub fn reconcile(&self) -> Result<ReconcileReport, EngineError> {
        let mut report = ReconcileReport::default();
        for record in self.records()? {
            let name = record.name.clone();
            let _busy = {
                let mut map = lock(&self.in_flight);
                if map.contains_key(&name) {
                    continue;
                }
                map.insert(name.clone(), 1);
                InFlight {
                    engine: self,
                    name: name.clone(),
                }
            };
            let from = record.state;
            let settled = self.settle(&record);
            // Nothing runs it: whatever a dead supervisor left outside the folder goes.
            if matches!(
                self.get_record(&name).map(|r| r.state),
                Ok(S::Stopped | S::Failed)
            ) {
                self.backend.reclaim(&name, &self.sandbox_dir(&name));
            }
            match settled {
                Ok(Some((to, detail))) => report.changes.push(Change {
                    name,
                    from,
                    to,
                    detail,
                }),
                Ok(None) => {}
                Err(e) => report.errors.push(Change {
                    name,
                    from,
                    to: Some(from),
                    detail: e.to_string(),
                }),
            }
        }
        report.orphan_folders = self.remove_orphan_folders()?;
        Ok(report)
    }

    /// Settles one sandbox; `Some((new state or None for deleted, why))` when it changed.
    #[allow(clippy::type_complexity)]
    fn settle(&self, record: &Record) -> Result<Option<(Option<S>, String)>, EngineError> {
        let name = record.name.as_str();
        let dir = self.sandbox_dir(name);
        let live = self.backend.probe(name, &dir);
        let op = "reconciling";
        let moved = |to: S, pid: Option<i32>, error: Option<&str>, detail: &str| {
            self.transition(name, op, &[record.state], to, pid, error)
                .map(|_| Some((Some(to), detail.to_owned())))
        };
        match (record.state, live) {
            (S::Creating, _) => {
                let _ = self.backend.destroy(name, &dir);
                remove_dir(&dir)?;
                self.transition(name, op, &[S::Creating], S::Removing, None, None)?;
                lock(&self.store).remove(name)?;
                Ok(Some((None, "interrupted creation rolled back".into())))
            }
            (S::Removing, _) => {
                self.finish_removal(name)?;
                Ok(Some((None, "interrupted removal finished".into())))
            }
            (S::Running, Liveness::Running { .. }) => Ok(None),
            (S::Running, Liveness::Stopped) => moved(
                S::Stopped,
                None,
                None,
                "its work ended while the engine was away",
            ),
            (S::Running, Liveness::Gone) => {
                let msg = "its supervisor died";
                moved(S::Failed, None, Some(msg), msg)
            }
            (S::Starting, Liveness::Running { supervisor_pid }) => moved(
                S::Running,
                Some(supervisor_pid),
                None,
                "interrupted start had succeeded",
            ),
            (S::Starting, _) => {
                let msg = "its start was interrupted";
                moved(S::Failed, None, Some(msg), msg)
            }
            (S::Stopping, Liveness::Running { supervisor_pid }) => {
                self.work_out_of_guest(name, &dir, DEFAULT_GRACE);
                match self.backend.stop(name, &dir, DEFAULT_GRACE) {
                    Ok(()) => moved(S::Stopped, None, None, "interrupted stop finished"),
                    Err(e) => {
                        let msg = format!("stop failed: {e}");
                        moved(S::Failed, Some(supervisor_pid), Some(&msg), &msg)
                    }
                }
            }
            (S::Stopping, _) => moved(S::Stopped, None, None, "interrupted stop had finished"),
            // Stopped and failed ones have nothing to settle; a failed one whose supervisor
            // died since loses its stale pid only when it is next started or stopped.
            (S::Stopped | S::Failed, _) => Ok(None),
        }
    }

    fn remove_orphan_folders(&self) -> Result<Vec<String>, EngineError> {
        let root = self.state_dir.join("sandboxes");
        let entries = fs::read_dir(&root).map_err(|source| EngineError::Io {
            what: "cannot read",
            path: root.clone(),
            source,
        })?;
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if lock(&self.in_flight).contains_key(&name) {
                continue;
            }
            // A row is created before its folder, so a folder whose row is missing now is
            // not one being created (unless the name is in flight, skipped above).
            let owned = matches!(lock(&self.store).get(&name), Ok(Some(_)));
            if !owned && remove_dir(&entry.path()).is_ok() {
                removed.push(name);
            }
        }
        removed.sort();
        Ok(removed)
    }
}

/// Writes `path` so that a reader sees the old content or the new, never a mix: a temporary
/// file in the same folder, fsynced, renamed over it.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), EngineError> {
    let io = |what, source| EngineError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io("cannot write", e));
    }
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<(), EngineError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(EngineError::Io {
            what: "cannot remove the sandbox folder",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// An object id's first 12 digits (what a person compares).
fn short(oid: &str) -> &str {
    oid.get(..12).unwrap_or(oid)
}
