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
/// Start-up profiling: with AIRLOCK_TIMING set, print the time since the first phase;
/// `AIRLOCK_TIMING=wall`: the wall clock's milliseconds instead, which line up the phases of
/// several processes (a claimer, a member's stub and its parked child).
pub fn phase(name: &str) {
    let Some(how) = std::env::var_os("AIRLOCK_TIMING") else {
        return;
    };
    if how == "wall" {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // The seconds within the day: enough to line runs up, short to read.
        let ms = (now.as_micros() % 86_400_000_000) as f64 / 1000.0;
        eprintln!("[{ms:.3} ms wall] {name}");
        return;
    }
    let s = START.get_or_init(std::time::Instant::now);
    eprintln!("[{:7.3} ms] {name}", s.elapsed().as_secs_f64() * 1000.0);
}
