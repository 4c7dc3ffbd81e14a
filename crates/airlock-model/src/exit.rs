//! Stable exit codes (documented in the README). The command's own code passes through
//! `run`; these are the codes airlock itself uses.

/// Bad flags, bad config, invalid input.
pub const USAGE: i32 = 2;
/// An image could not be pulled, imported or verified (registry unreachable, authentication
/// required, digest mismatch, unsafe layer).
pub const IMAGE_FAILED: i32 = 118;
/// A sandbox with that name already exists.
pub const ALREADY_EXISTS: i32 = 119;
/// The sandbox is in the wrong state for that (e.g. rm of a running one without --force,
/// start of a running one), or another operation on it got there first.
pub const CONFLICT: i32 = 120;
/// The policy asked for cannot be enforced on this host (fail closed).
pub const POLICY_REFUSED: i32 = 121;
/// The named sandbox does not exist.
pub const NOT_FOUND: i32 = 122;
/// The backend cannot work on this host (missing kernel feature, permissions).
pub const BACKEND_UNAVAILABLE: i32 = 123;
/// The command ran past --timeout and was killed.
pub const TIMEOUT: i32 = 124;
/// The sandbox failed to start (setup error).
pub const SANDBOX_FAILED: i32 = 125;
/// The command was found but could not be executed.
pub const NOT_EXECUTABLE: i32 = 126;
/// The command was not found inside the sandbox.
pub const NOT_FOUND_CMD: i32 = 127;
/// Killed by signal N: 128 + N.
pub const SIGNAL_BASE: i32 = 128;

/// `airlock prompt`: the agent reported `blocked` (0 is `done`).
pub const AGENT_BLOCKED: i32 = 3;
/// `airlock prompt`: the turn ended without a `done` or `blocked` report (ended-unreported),
/// including when the agent runner died mid-turn.
pub const AGENT_UNREPORTED: i32 = 4;
