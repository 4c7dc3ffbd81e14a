//! `report working|done|blocked|info "text"` inside the sandbox: one line to the runner's report
//! socket, one line back. The runner attaches the turn; the tool cannot name one.

use airlock_model::agent::ReportStatus;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

/// What `report` sends to the runner.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    pub status: ReportStatus,
    pub text: String,
}

/// What the runner answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReportReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Send one report to the runner listening at `path`; its answer.
pub fn send(path: &str, req: &ReportRequest) -> std::io::Result<ReportReply> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    serde_json::from_str(&reply).map_err(std::io::Error::other)
}
