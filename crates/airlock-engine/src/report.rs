//! What the engine reports: a sandbox's status with its live resource use, and what reconcile
//! changed. A leaf of the engine: `action`, `backend` and `engine` build on it.

use airlock_model::lifecycle::SandboxState as S;
use serde::{Deserialize, Serialize};

use crate::store::Record;

/// Live resource use, read from the sandbox's cgroup: None (JSON null) where it cannot be read
/// (a sandbox without limits has no cgroup; a host without a controller).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct Stats {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    pub cpu_usec: Option<u64>,
}

/// `status`: the record plus what is live about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Status {
    #[serde(flatten)]
    pub record: Record,
    /// Seconds since it reached `running`, while it runs.
    pub uptime_secs: Option<i64>,
    /// Live resource use, while it runs and the backend can tell.
    pub stats: Option<Stats>,
}

/// What reconcile changed, one entry per sandbox it touched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReconcileReport {
    pub changes: Vec<Change>,
    /// Folders under `sandboxes/` that no record owned, deleted.
    pub orphan_folders: Vec<String>,
    /// Sandboxes reconcile could not settle, with why (they are left for the next run).
    pub errors: Vec<Change>,
}

/// One sandbox reconcile touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Change {
    pub name: String,
    pub from: S,
    /// The new state, or `None` when the record was deleted.
    pub to: Option<S>,
    pub detail: String,
}
