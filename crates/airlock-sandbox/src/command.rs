//! A command in a sandbox, whatever the backend: what to run in a running one
//! ([`ExecRequest`]) and how it ended ([`Outcome`]).

use airlock_guest::summary::Changes;
use airlock_model::exit;
use std::path::PathBuf;

/// How the sandboxed command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Exit code, with 128+N for death by signal N (as a shell reports it).
    Exited(i32),
    TimedOut,
    OutOfMemory,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ending: Ending,
    /// What the command changed in an overlay workspace (discarded with the run).
    pub changes: Option<Changes>,
}

impl Outcome {
    pub fn exit_code(&self) -> i32 {
        match self.ending {
            Ending::Exited(c) => c,
            Ending::TimedOut => exit::TIMEOUT,
            Ending::OutOfMemory => exit::SIGNAL_BASE + libc::SIGKILL,
        }
    }
}

/// What to run inside a running sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// Added to (and overriding) the sandbox's environment.
    pub env: Vec<(String, String)>,
    /// Working directory inside; default the sandbox's.
    pub cwd: Option<PathBuf>,
    pub tty: bool,
    pub forward_stdin: bool,
    /// Give the command the sandbox's secrets (read from /run/secrets inside) as environment
    /// variables. Off by default: exec'd commands do not inherit them.
    pub with_secrets: bool,
    /// Stop waiting after this long: the command's host-side relay is killed and the outcome
    /// is `TimedOut`. What it started inside runs on until the caller ends the sandbox (the
    /// warm pool's claim does: its member is destroyed after every run).
    pub timeout: Option<std::time::Duration>,
}
