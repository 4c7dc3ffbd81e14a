//! The agent channel: newline-delimited JSON between the host (the sandbox's supervisor) and the
//! agent runner inside the sandbox. One JSON object per line, tagged by `kind`. Both sides open
//! with `hello{version}`; a peer skips (and logs) kinds it does not know and survives malformed
//! lines, so either side can gain message kinds without breaking the other. Removing or
//! renaming a kind or a required field is a new `PROTOCOL_VERSION`. See docs/protocol.md.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change of the wire format (see docs/protocol.md).
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest line a peer accepts; longer ones are skipped as malformed.
pub const MAX_LINE: usize = 1 << 20;

/// What an agent says about its turn (`report STATUS TEXT` inside the sandbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    Working,
    Done,
    Blocked,
    Info,
}

impl ReportStatus {
    pub const NAMES: &'static [&'static str] = &["working", "done", "blocked", "info"];

    /// `done` and `blocked` end the turn.
    pub fn is_terminal(self) -> bool {
        matches!(self, ReportStatus::Done | ReportStatus::Blocked)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Working => "working",
            ReportStatus::Done => "done",
            ReportStatus::Blocked => "blocked",
            ReportStatus::Info => "info",
        }
    }
}

impl std::str::FromStr for ReportStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "working" => Ok(ReportStatus::Working),
            "done" => Ok(ReportStatus::Done),
            "blocked" => Ok(ReportStatus::Blocked),
            "info" => Ok(ReportStatus::Info),
            _ => Err(format!(
                "unknown status {s:?}: expected working, done, blocked or info"
            )),
        }
    }
}

/// Host -> sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HostMsg {
    /// First line: the protocol version the host speaks.
    Hello { version: u32 },
    /// The next turn of the conversation. Turn ids grow by one per prompt, across restarts.
    Prompt { turn_id: u64, text: String },
    /// Finish the current turn (if any), then exit.
    Stop,
}

impl HostMsg {
    pub const KINDS: &'static [&'static str] = &["hello", "prompt", "stop"];
}

/// Sandbox -> host (and the host's own `blocked` events, which share the journal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SandboxMsg {
    /// First line: the protocol version the runner speaks and the harness it drives.
    Hello { version: u32, harness: String },
    /// The runner waits for prompts.
    Ready,
    /// The runner is alive (every few seconds).
    Heartbeat,
    /// A prompt was taken; its harness run starts now.
    TurnAccepted { turn_id: u64 },
    /// The agent's `report` (turn_id: the turn it was made in, none between turns).
    Report {
        status: ReportStatus,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        turn_id: Option<u64>,
    },
    /// The turn is over. `reported`: it ended with `done` or `blocked`; false is the
    /// `ended-unreported` outcome (the harness exited and the grace period passed with no
    /// terminal report).
    TurnCompleted {
        turn_id: u64,
        reported: bool,
        /// The harness's exit code (128+N for signal N; none if it could not be started).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// Set when the harness was stopped: it was still running this many seconds after
        /// its terminal report (`[agent] grace`), or the sandbox was being stopped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stopped_after_secs: Option<u64>,
    },
    /// Something the agent tried was refused by the sandbox (today: a network destination),
    /// with how the user can allow it. Produced by the host for network denials.
    Blocked {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        turn_id: Option<u64>,
        /// The domain (or address) that was refused.
        domain: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        reason: String,
        /// How to allow it: the flag and the configuration line.
        hint: String,
    },
    /// The harness's live output (stdout and stderr, lossily UTF-8), for `airlock attach`.
    Output { turn_id: u64, text: String },
    /// The runner could not do something (harness missing, version mismatch, ...).
    Error { message: String },
}

impl SandboxMsg {
    pub const KINDS: &'static [&'static str] = &[
        "hello",
        "ready",
        "heartbeat",
        "turn_accepted",
        "report",
        "turn_completed",
        "blocked",
        "output",
        "error",
    ];

    /// The wire name of this message's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            SandboxMsg::Hello { .. } => "hello",
            SandboxMsg::Ready => "ready",
            SandboxMsg::Heartbeat => "heartbeat",
            SandboxMsg::TurnAccepted { .. } => "turn_accepted",
            SandboxMsg::Report { .. } => "report",
            SandboxMsg::TurnCompleted { .. } => "turn_completed",
            SandboxMsg::Blocked { .. } => "blocked",
            SandboxMsg::Output { .. } => "output",
            SandboxMsg::Error { .. } => "error",
        }
    }
}

/// A message kind set known to the decoder.
pub trait Kinds {
    const KNOWN: &'static [&'static str];
}
impl Kinds for HostMsg {
    const KNOWN: &'static [&'static str] = HostMsg::KINDS;
}
impl Kinds for SandboxMsg {
    const KNOWN: &'static [&'static str] = SandboxMsg::KINDS;
}

/// One decoded line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    Msg(T),
    /// A well-formed object of a kind this version does not know: log and skip.
    Unknown {
        kind: String,
    },
    /// Blank line: nothing.
    Empty,
    /// Not JSON, not an object, no `kind`, a known kind with bad fields, or too long.
    Malformed {
        error: String,
    },
}

/// Decode one line (without or with its trailing newline). Never panics.
pub fn decode<T: DeserializeOwned + Kinds>(line: &[u8]) -> Decoded<T> {
    let line = trim(line);
    if line.is_empty() {
        return Decoded::Empty;
    }
    if line.len() > MAX_LINE {
        return Decoded::Malformed {
            error: format!("line of {} bytes (limit {MAX_LINE})", line.len()),
        };
    }
    let value: serde_json::Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            return Decoded::Malformed {
                error: e.to_string(),
            }
        }
    };
    let Some(kind) = value.get("kind").and_then(|k| k.as_str()) else {
        return Decoded::Malformed {
            error: "not an object with a string `kind`".into(),
        };
    };
    if !T::KNOWN.contains(&kind) {
        return Decoded::Unknown {
            kind: kind.chars().take(64).collect(),
        };
    }
    match serde_json::from_value(value) {
        Ok(m) => Decoded::Msg(m),
        Err(e) => Decoded::Malformed {
            error: e.to_string(),
        },
    }
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// Encode one message as a line (with its newline).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing these plain enums cannot fail (string keys, no non-finite floats).
    let mut v = serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec());
    v.push(b'\n');
    v
}

/// A journal line (DIR/reports.ndjson): every message either way, with when and who.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// `host` (sent to the sandbox, or observed by the host) or `sandbox`.
    pub from: Origin,
    #[serde(flatten)]
    pub msg: JournalMsg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Host,
    Sandbox,
}

/// Either direction's message, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JournalMsg {
    Sandbox(SandboxMsg),
    Host(HostMsg),
}

#[cfg(test)]
mod tests;
