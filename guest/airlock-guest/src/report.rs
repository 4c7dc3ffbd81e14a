//! `report working|done|blocked|info "text"` inside an agent sandbox: one line to the runner's
//! report socket (`airlock_agent::report`), one line back.

use airlock_agent::report::ReportRequest;
use airlock_model::agent::ReportStatus;

const USAGE: &str = "usage: report working|done|blocked|info \"text\"\n\
  working  progress (any number of times)\n\
  info     a note for the user\n\
  done     the task is finished (ends the turn)\n\
  blocked  you need the user to go on (ends the turn)";

/// The tool's entry point; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let Some((status, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return 2;
    };
    if status == "-h" || status == "--help" {
        println!("{USAGE}");
        return 0;
    }
    let status: ReportStatus = match status.parse() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("report: {e}\n{USAGE}");
            return 2;
        }
    };
    let text = rest.join(" ");
    let path = std::env::var("AIRLOCK_REPORT_SOCKET")
        .unwrap_or_else(|_| airlock_agent::REPORT_SOCKET.into());
    match airlock_agent::report::send(&path, &ReportRequest { status, text }) {
        Ok(r) if r.ok => {
            if let Some(n) = r.note {
                eprintln!("report: {n}");
            }
            0
        }
        Ok(r) => {
            eprintln!("report: refused: {}", r.note.unwrap_or_default());
            1
        }
        Err(e) => {
            eprintln!(
                "report: cannot reach the agent runner at {path}: {e} (is this an agent sandbox?)"
            );
            1
        }
    }
}
