//! airlock-sandbox: isolation mechanisms behind one trait, [`isolation::Isolation`], with
//! [`isolation::AnyBackend`] over the implementations. `sys` holds every `unsafe` block;
//! `container` is the namespace backend.

pub mod cgroup;
pub mod command;
pub mod container;
pub mod folder;
pub mod hostcaps;
pub mod isolation;
pub mod kernel;
pub mod microvm;
pub mod nofollow;
pub mod offer;
pub mod os;
pub mod sys;
pub mod userns;

static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
/// Start-up profiling: with AIRLOCK_TIMING set, print the time since the first phase.
pub fn phase(name: &str) {
    if std::env::var_os("AIRLOCK_TIMING").is_some() {
        let s = START.get_or_init(std::time::Instant::now);
        eprintln!("[{:7.3} ms] {name}", s.elapsed().as_secs_f64() * 1000.0);
    }
}
