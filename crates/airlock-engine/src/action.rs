//! One action type for what the engine does: every operation it executes is an [`Action`], and
//! [`Engine::execute`] is its one dispatch. The HTTP routes are thin: each parses its path and
//! body into an Action (`POST /v1/actions` takes one whole), so there is one place where an
//! operation is carried out and one error shape (`ErrorBody`, with the CLI's exit code).
//!
//! The actions live here rather than in `airlock-model` because their results are the engine's
//! records and airlock-work's reports; the model crate keeps the pure vocabulary they use.
//! Operations that need a process of their own (exec, and `run`) are routes that start one;
//! the CLI-side operations that are not actions yet (run, cp, prompt, explain, trust) are listed
//! in docs/ARCHITECTURE.md.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::backend::Secrets;
use crate::engine::{Engine, EngineError, ReconcileReport, Status};
use crate::store::Record;
use airlock_work::ops::{DiffSummary, FetchReport, SyncOptions, SyncReport};

/// The longest stop grace period, in milliseconds (as `airlock stop --grace` allows).
pub const MAX_GRACE_MS: u64 = 1_000_000_000_000;

/// An operation of the engine, as data. Tagged by `action`.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Record a sandbox and make its folder (and, for a clone-mode spec, its clone).
    Create {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        /// The sandbox's spec, as `airlock create` resolves it (`spec.json`).
        #[serde(default)]
        #[schema(value_type = Object)]
        spec: serde_json::Map<String, serde_json::Value>,
    },
    /// Start a stopped or failed sandbox, with the values of the secrets its spec names.
    Start {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        #[serde(default)]
        secrets: Option<BTreeMap<String, String>>,
    },
    /// Stop it: ask, wait `grace_ms` (default 10000), kill.
    Stop {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        #[serde(default)]
        #[schema(maximum = 1_000_000_000_000_u64)]
        grace_ms: Option<u64>,
    },
    /// Remove it and everything it kept (`force`: whatever its state).
    Remove {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        #[serde(default)]
        force: bool,
    },
    /// Every sandbox.
    List,
    /// One sandbox with its uptime and resource use.
    Status {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
    },
    /// Reconcile the records with what runs.
    Gc,
    /// What a clone-mode sandbox's branch changes, and the review gate's findings.
    Diff {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
    },
    /// The branch into the host repository as `airlock/NAME`, review-gated.
    Fetch {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        #[serde(default)]
        accept: bool,
        #[serde(default)]
        force: bool,
    },
    /// The branch's committed changes into the host checkout, review-gated.
    Sync {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        #[serde(default)]
        dry_run: bool,
        #[serde(default)]
        artifacts: bool,
        #[serde(default)]
        accept: bool,
    },
}

/// Secret values never show in logs or debug output: only their names.
impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Start { name, secrets } => f
                .debug_struct("Start")
                .field("name", name)
                .field(
                    "secrets",
                    &secrets.as_ref().map(|s| s.keys().collect::<Vec<_>>()),
                )
                .finish(),
            other => {
                let v = serde_json::to_value(other).unwrap_or_default();
                write!(f, "{v}")
            }
        }
    }
}

/// What an action gives back. Tagged by `data`, the value in `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "data", content = "value", rename_all = "snake_case")]
pub enum ActionData {
    /// create, start, stop
    Record(Record),
    /// list
    Records(Vec<Record>),
    /// status
    Status(Status),
    /// remove: the name removed
    Removed(String),
    /// gc
    Reconciled(ReconcileReport),
    /// diff
    Diff(DiffSummary),
    /// fetch
    Fetched(FetchReport),
    /// sync
    Synced(SyncReport),
}

impl Engine {
    /// Carry out one action: the engine's one dispatch (the HTTP routes and `POST /v1/actions`
    /// come here).
    pub fn execute(&self, action: Action) -> Result<ActionData, EngineError> {
        Ok(match action {
            Action::Create { name, spec } => {
                let spec = serde_json::Value::Object(spec).to_string();
                ActionData::Record(self.create(&name, &spec)?)
            }
            Action::Start { name, secrets } => {
                let secrets = Secrets(secrets.unwrap_or_default().into_iter().collect());
                ActionData::Record(self.start_with(&name, &secrets)?)
            }
            Action::Stop { name, grace_ms } => {
                let grace = match grace_ms {
                    None => crate::engine::DEFAULT_GRACE,
                    // A deadline that far away overflows the clock (and would panic).
                    Some(ms) if ms > MAX_GRACE_MS => {
                        return Err(EngineError::BadRequest(format!(
                            "grace_ms must be at most {MAX_GRACE_MS}"
                        )))
                    }
                    Some(ms) => Duration::from_millis(ms),
                };
                ActionData::Record(self.stop(&name, grace)?)
            }
            Action::Remove { name, force } => {
                self.rm(&name, force)?;
                ActionData::Removed(name)
            }
            Action::List => ActionData::Records(self.list()?),
            Action::Status { name } => ActionData::Status(self.status(&name)?),
            Action::Gc => ActionData::Reconciled(self.reconcile()?),
            Action::Diff { name } => ActionData::Diff(self.diff(&name)?),
            Action::Fetch {
                name,
                accept,
                force,
            } => ActionData::Fetched(self.fetch(&name, accept, force)?),
            Action::Sync {
                name,
                dry_run,
                artifacts,
                accept,
            } => ActionData::Synced(self.sync(
                &name,
                SyncOptions {
                    dry_run,
                    artifacts,
                    accept,
                },
            )?),
        })
    }
}
