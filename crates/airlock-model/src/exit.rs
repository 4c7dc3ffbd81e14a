//! Stable exit codes (documented in the README). The command's own code passes through
//! `run`; these are the codes airlock itself uses.

/// Bad flags, bad config, invalid input.
pub const USAGE: i32 = 2;
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
