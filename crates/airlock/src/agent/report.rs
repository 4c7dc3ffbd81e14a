//! `report working|done|blocked|info "text"` inside the sandbox: one line to the runner's report
//! socket, one line back. The runner attaches the turn; the tool cannot name one.

use super::REPORT_SOCKET;
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

const USAGE: &str = "usage: report working|done|blocked|info \"text\"\n\
  working  progress (any number of times)\n\
  info     a note for the user\n\
  done     the task is finished (ends the turn)\n\
  blocked  you need the user to go on (ends the turn)";

/// The tool's entry point; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let Some((status, rest)) = args.split_first() else {
        errln!("{USAGE}");
        return 2;
    };
    if status == "-h" || status == "--help" {
        outln!("{USAGE}");
        return 0;
    }
    let status: ReportStatus = match status.parse() {
        Ok(s) => s,
        Err(e) => {
            errln!("report: {e}\n{USAGE}");
            return 2;
        }
    };
    let text = rest.join(" ");
    let path = std::env::var("AIRLOCK_REPORT_SOCKET").unwrap_or_else(|_| REPORT_SOCKET.into());
    match send(&path, &ReportRequest { status, text }) {
        Ok(r) if r.ok => {
            if let Some(n) = r.note {
                errln!("report: {n}");
            }
            0
        }
        Ok(r) => {
            errln!("report: refused: {}", r.note.unwrap_or_default());
            1
        }
        Err(e) => {
            errln!(
                "report: cannot reach the agent runner at {path}: {e} (is this an agent sandbox?)"
            );
            1
        }
    }
}

fn send(path: &str, req: &ReportRequest) -> std::io::Result<ReportReply> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    serde_json::from_str(&reply).map_err(std::io::Error::other)
}
