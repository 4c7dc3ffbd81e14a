//! Reading `DIR/reports.ndjson`: whole, followed from an offset, summarised for `list`, and
//! rendered for people.

use airlock_model::agent::protocol::{JournalEntry, JournalMsg, Origin};
use airlock_model::agent::{HostMsg, ReportStatus, SandboxMsg};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

/// Every entry (lines that do not parse are skipped).
pub fn read(path: &Path) -> Vec<JournalEntry> {
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// Reads complete lines appended after `offset`.
pub struct Follower {
    path: std::path::PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Follower {
    pub fn from_offset(path: &Path, offset: u64) -> Self {
        Self {
            path: path.to_path_buf(),
            offset,
            partial: Vec::new(),
        }
    }

    /// The lines (raw, with the entry if it parses) written since the last call.
    pub fn poll(&mut self) -> Vec<(String, Option<JournalEntry>)> {
        let mut out = Vec::new();
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return out;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return out;
        }
        let mut r = BufReader::new(f);
        loop {
            let mut buf = Vec::new();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.offset += n as u64;
                    self.partial.extend_from_slice(&buf);
                    if self.partial.ends_with(b"\n") {
                        let line = String::from_utf8_lossy(&self.partial)
                            .trim_end()
                            .to_string();
                        self.partial.clear();
                        let e = serde_json::from_str(&line).ok();
                        out.push((line, e));
                    }
                }
            }
        }
        out
    }
}

pub fn len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The latest thing worth showing in `list`: a report, a blocked event, or an unreported end.
pub fn last_report(path: &Path) -> Option<JournalEntry> {
    read(path).into_iter().rev().find(|e| {
        matches!(
            &e.msg,
            JournalMsg::Sandbox(
                SandboxMsg::Report { .. }
                    | SandboxMsg::Blocked { .. }
                    | SandboxMsg::TurnCompleted {
                        reported: false,
                        ..
                    }
            )
        )
    })
}

/// One line for people, or None for entries not worth a line (hello, ready, heartbeat).
pub fn render(e: &JournalEntry) -> Option<String> {
    let time = e.time.get(11..19).unwrap_or(&e.time);
    let turn = |t: &Option<u64>| t.map(|t| format!("turn {t}")).unwrap_or_else(|| "-".into());
    let body = match &e.msg {
        JournalMsg::Host(HostMsg::Prompt { turn_id, text }) => {
            format!("turn {turn_id} prompt: {}", one_line(text))
        }
        JournalMsg::Host(HostMsg::Stop) => "- stop requested".into(),
        JournalMsg::Host(HostMsg::Hello { .. }) => return None,
        JournalMsg::Sandbox(s) => match s {
            SandboxMsg::TurnAccepted { turn_id } => format!("turn {turn_id} started"),
            SandboxMsg::Report {
                status,
                text,
                turn_id,
            } => format!("{} {}: {}", turn(turn_id), status.as_str(), one_line(text)),
            SandboxMsg::Blocked {
                turn_id,
                domain,
                port,
                reason,
                hint,
            } => {
                let target = match port {
                    Some(p) => format!("{domain}:{p}"),
                    None => domain.clone(),
                };
                let by = if e.from == Origin::Host {
                    "network"
                } else {
                    "agent"
                };
                format!(
                    "{} blocked ({by}): {target}: {reason}; {hint}",
                    turn(turn_id)
                )
            }
            SandboxMsg::TurnCompleted {
                turn_id,
                reported,
                exit_code,
                stopped_after_secs,
            } => {
                let code = exit_code.map(|c| format!(", exit {c}")).unwrap_or_default();
                let stopped = stopped_after_secs
                    .map(|s| {
                        format!(
                            "; the harness was stopped, still running {s}s after its report \
                             (its final message may be cut: raise `[agent] grace`)"
                        )
                    })
                    .unwrap_or_default();
                if *reported {
                    format!("turn {turn_id} completed{code}{stopped}")
                } else {
                    format!("turn {turn_id} ended-unreported{code}{stopped}")
                }
            }
            SandboxMsg::Error { message } => format!("- error: {message}"),
            SandboxMsg::Hello { .. }
            | SandboxMsg::Ready
            | SandboxMsg::Heartbeat
            | SandboxMsg::Output { .. } => return None,
        },
    };
    // The texts are the agent's: a terminal must not obey the controls in them.
    Some(airlock_model::text::shown(&format!("{time} {body}")).into_owned())
}

/// A short summary for `list`: "done: text" / "ended-unreported" / "blocked: domain".
pub fn summary(e: &JournalEntry) -> String {
    let line = match &e.msg {
        JournalMsg::Sandbox(SandboxMsg::Report { status, text, .. }) => {
            format!("{}: {}", status.as_str(), one_line(text))
        }
        JournalMsg::Sandbox(SandboxMsg::Blocked { domain, .. }) => format!("blocked: {domain}"),
        JournalMsg::Sandbox(SandboxMsg::TurnCompleted { .. }) => "ended-unreported".into(),
        _ => String::new(),
    };
    airlock_model::text::shown(&line).into_owned()
}

fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

/// How a turn ended, from its journal entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEnd {
    Done,
    Blocked,
    Unreported,
}

/// Whether this entry is turn `turn`'s `turn_completed` (the last entry of a turn).
pub fn completes_turn(e: &JournalEntry, turn: u64) -> bool {
    matches!(&e.msg, JournalMsg::Sandbox(SandboxMsg::TurnCompleted { turn_id, .. }) if *turn_id == turn)
}

/// Whether this entry ends turn `turn`, and how.
pub fn ends_turn(e: &JournalEntry, turn: u64) -> Option<TurnEnd> {
    match &e.msg {
        JournalMsg::Sandbox(SandboxMsg::Report {
            status,
            turn_id: Some(t),
            ..
        }) if *t == turn && status.is_terminal() => Some(if *status == ReportStatus::Done {
            TurnEnd::Done
        } else {
            TurnEnd::Blocked
        }),
        JournalMsg::Sandbox(SandboxMsg::TurnCompleted {
            turn_id,
            reported: false,
            ..
        }) if *turn_id == turn => Some(TurnEnd::Unreported),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent writes the report text: `reports`, `attach` and `list` print it on the user's
    /// terminal, which must not obey an escape sequence in it (clear the screen, set the
    /// clipboard, hide a line) or reorder it with a bidi override.
    #[test]
    fn a_report_cannot_drive_the_terminal() {
        let e = JournalEntry {
            time: "2026-12-06T13:00:00.000Z".into(),
            from: Origin::Sandbox,
            msg: JournalMsg::Sandbox(SandboxMsg::Report {
                status: ReportStatus::Done,
                text: "all good\u{1b}[2J\u{1b}]52;c;ZXZpbA==\u{7} \u{9b}1A\u{202e}gnp.exe".into(),
                turn_id: Some(1),
            }),
        };
        for line in [render(&e).expect("a report renders"), summary(&e)] {
            assert!(
                !line.chars().any(|c| c.is_control() || c == '\u{202e}'),
                "{line:?}"
            );
            assert!(
                line.contains("all good\\x1b[2J\\x1b]52;c;ZXZpbA==\\x07"),
                "{line:?}"
            );
            assert!(line.contains("\\x9b1A\\u{202e}gnp.exe"), "{line:?}");
        }
    }
}
