//! Agent mode. Inside the sandbox: the runner (`airlock __agent-runner`, started by the host
//! through exec) and the `report` tool (this binary invoked as `report`). On the host: the
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

/// Inside the sandbox: where this binary is mounted (read-only) as `airlock` and `report`.
pub const TOOLS_DIR: &str = airlock_model::agent::adapter::TOOLS_DIR;
/// Inside the sandbox: the runner's report socket (the sandbox's own; nothing on the host).
pub const REPORT_SOCKET: &str = "/tmp/.airlock-report.sock";

/// The read-only binds that put the tools on PATH inside: this executable, twice.
pub fn tool_binds(exe: &Path) -> Vec<BindSpec> {
    ["airlock", "report"]
        .iter()
        .map(|n| BindSpec {
            source: exe.to_path_buf(),
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
