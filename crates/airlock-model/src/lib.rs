//! airlock-model: pure data shared by every airlock crate. No syscalls, no sandboxes.

pub mod agent;
pub mod config;
pub mod exit;
pub mod lifecycle;
pub mod plan;
pub mod policy;
pub mod runtime;
pub mod spec;
pub mod text;
pub mod userfile;
pub mod vm;
