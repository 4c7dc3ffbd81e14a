//! Agent mode, as data: the host<->sandbox protocol (`protocol`) and the harness adapters
//! (`adapter`: how Claude Code, Codex, Gemini CLI or a custom command run one turn).

pub mod adapter;
pub mod protocol;

pub use protocol::{Decoded, HostMsg, ReportStatus, SandboxMsg, PROTOCOL_VERSION};
