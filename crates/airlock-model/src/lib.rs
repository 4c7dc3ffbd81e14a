//! airlock-model: pure data shared by every airlock crate. No syscalls, no sandboxes.

pub mod config;
pub mod policy;
