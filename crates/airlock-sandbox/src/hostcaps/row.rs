//! The vocabulary of `airlock doctor`'s report: one [`Row`] per capability, with a [`Status`].

use serde::Serialize;
use std::fmt;

/// How well a capability works on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works partly, or is missing but only an optional feature needs it.
    Degraded,
    /// Missing and needed.
    Missing,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Missing => "MISSING",
        })
    }
}

/// One line of `airlock doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// Stable identifier (`userns`, `cgroups`, `kvm`, …).
    pub id: String,
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// The exact fix, for rows that are not ok.
    pub fix: Option<String>,
    /// What in airlock uses it (`info` for informational rows).
    pub needed_for: String,
}

impl Row {
    pub(crate) fn new(
        id: &str,
        name: &str,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
        needed_for: &str,
    ) -> Row {
        Row {
            id: id.into(),
            name: name.into(),
            status,
            detail: detail.into(),
            fix,
            needed_for: needed_for.into(),
        }
    }
    pub(crate) fn info(id: &str, name: &str, detail: impl Into<String>) -> Row {
        Row::new(id, name, Status::Ok, detail, None, "info")
    }
}
