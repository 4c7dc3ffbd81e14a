//! Agent mode. Inside the sandbox: the runner and the `report` tool (both run by the static
//! helper `airlock-guest`, started by the host through exec). On the host: the
//! supervisor's side of the channel (`host`), the journal reader shared by `prompt`, `reports`,
//! `attach` and `list` (`journal`). The protocol itself is `airlock_model::agent`.

#[cfg(feature = "host")]
pub mod host;
pub mod journal;
pub mod report;
pub mod runner;

use airlock_model::spec::BindSpec;
use std::path::{Path, PathBuf};

/// In the sandbox's folder: every protocol message (NDJSON), the harness's live output, and the
/// host-only socket `prompt`/`stop` talk to.
pub const REPORTS: &str = "reports.ndjson";
pub const AGENT_LOG: &str = "agent.log";
pub const AGENT_SOCKET: &str = "agent.sock";

/// Inside the sandbox: where the static helper (guest/airlock-guest) is mounted, read-only, as
/// `airlock-guest` and `report`.
pub const TOOLS_DIR: &str = airlock_model::agent::adapter::TOOLS_DIR;
/// Inside the sandbox: the helper (`runner`, `which`, `fs`, `report`).
pub const GUEST_TOOL: &str = "/run/airlock/bin/airlock-guest";
/// Inside the sandbox: the runner's report socket (the sandbox's own; nothing on the host).
pub const REPORT_SOCKET: &str = "/tmp/.airlock-report.sock";

/// The read-only binds that put the tools on PATH inside: the installed helper `guest` (see
/// `airlock_guest_embed::install`), twice.
pub fn tool_binds(guest: &Path) -> Vec<BindSpec> {
    ["airlock-guest", "report"]
        .iter()
        .map(|n| BindSpec {
            source: guest.to_path_buf(),
            target: PathBuf::from(TOOLS_DIR).join(n),
            writable: false,
        })
        .collect()
}

/// `PATH` with the tools directory first.
pub fn path_with_tools(path: Option<&str>) -> String {
    match path {
        Some(p) if p.split(':').any(|d| d == TOOLS_DIR) => p.to_string(),
        Some(p) if !p.is_empty() => format!("{TOOLS_DIR}:{p}"),
        _ => format!("{TOOLS_DIR}:/usr/local/bin:/usr/bin:/bin"),
    }
}
