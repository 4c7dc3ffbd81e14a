//! How long a named sandbox's start may take before it is given up, and what a start that
//! ran out of time says.
//!
//! A container is up in well under a second: 20 s is ample. A microVM's start has two parts
//! of very different lengths: the supervisor first prepares (on a host's first use it builds
//! the guest kernel's artifacts and the host root image: minutes), then QEMU boots the guest
//! (KVM: about a second; TCG, software emulation: 5–20 s on a loaded 2-core host, more under
//! heavier load). The supervisor says when the boot begins and under which accelerator
//! ([`VM_BOOT_FILE`]); the boot's own time counts from then. `AIRLOCK_VM_START_TIMEOUT`
//! (whole seconds, in the environment the engine starts with) replaces the boot's time.

use airlock_sandbox::isolation::VM_BOOT_FILE;
use std::path::Path;
use std::time::{Duration, Instant};

/// A container sandbox's start.
pub const CONTAINER_START: Duration = Duration::from_secs(20);
/// A microVM's supervisor before its boot (artifacts built on a host's first use).
pub const VM_PREPARE: Duration = Duration::from_secs(15 * 60);
/// A microVM's boot under KVM.
pub const VM_BOOT_KVM: Duration = Duration::from_secs(30);
/// A microVM's boot under TCG (software emulation).
pub const VM_BOOT_TCG: Duration = Duration::from_secs(180);
/// The variable that replaces the boot's time (seconds).
pub const VM_START_TIMEOUT_VAR: &str = "AIRLOCK_VM_START_TIMEOUT";

/// Where a start stands, for its deadline and its error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A container sandbox's start.
    Container,
    /// A microVM's supervisor prepares (no boot yet).
    Preparing,
    /// Its guest boots, since then, under this accelerator (`kvm`/`tcg`).
    Booting(Instant, Accel),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn label(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG (software emulation)",
        }
    }
}

/// The boot's time: `AIRLOCK_VM_START_TIMEOUT` seconds when set (`configured`), else by
/// accelerator.
pub fn boot_budget(accel: Accel, configured: Option<&str>) -> Duration {
    if let Some(s) = configured
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
    {
        return Duration::from_secs(s);
    }
    match accel {
        Accel::Kvm => VM_BOOT_KVM,
        Accel::Tcg => VM_BOOT_TCG,
    }
}

/// One start's clock: where it stands and until when it may wait.
#[derive(Debug)]
pub struct StartClock {
    began: Instant,
    stage: Stage,
    configured: Option<String>,
}

impl StartClock {
    /// A start of the sandbox whose spec is `spec_json`, beginning now.
    pub fn new(spec_json: &str) -> StartClock {
        let vm = serde_json::from_str::<serde_json::Value>(spec_json)
            .ok()
            .is_some_and(|v| v.get("backend").and_then(|b| b.as_str()) == Some("microvm"));
        StartClock {
            began: Instant::now(),
            stage: if vm {
                Stage::Preparing
            } else {
                Stage::Container
            },
            configured: std::env::var(VM_START_TIMEOUT_VAR).ok(),
        }
    }

    /// Take note of the supervisor's progress in the sandbox's folder `dir`.
    pub fn observe(&mut self, dir: &Path) {
        if self.stage != Stage::Preparing {
            return;
        }
        let accel = match std::fs::read_to_string(dir.join(VM_BOOT_FILE)).as_deref() {
            Ok("kvm") => Accel::Kvm,
            Ok("tcg") => Accel::Tcg,
            _ => return,
        };
        self.stage = Stage::Booting(Instant::now(), accel);
    }

    pub fn deadline(&self) -> Instant {
        match self.stage {
            Stage::Container => self.began + CONTAINER_START,
            Stage::Preparing => self.began + VM_PREPARE,
            Stage::Booting(at, accel) => at + boot_budget(accel, self.configured.as_deref()),
        }
    }

    /// Why the start was given up at its deadline.
    pub fn timed_out(&self) -> String {
        let secs = |d: Duration| d.as_secs();
        match self.stage {
            Stage::Container => format!("it was not up after {} s", secs(CONTAINER_START)),
            Stage::Preparing => format!(
                "its microVM's supervisor had not begun to boot it after {} s",
                secs(VM_PREPARE)
            ),
            Stage::Booting(_, accel) => format!(
                "its microVM did not finish booting within {} s under {}",
                secs(boot_budget(accel, self.configured.as_deref())),
                accel.label()
            ),
        }
    }

    /// What to do about it.
    pub fn hint(&self, name: &str) -> String {
        match self.stage {
            Stage::Booting(..) => format!(
                "a loaded host boots slowly, under TCG most: give the boot more time with \
                 {VM_START_TIMEOUT_VAR}=SECONDS in the environment the engine starts with, \
                 then `airlock start {name}` (it is stopped, nothing of it runs); \
                 `airlock doctor` says whether KVM is usable"
            ),
            _ => format!(
                "`airlock status {name}` shows its last error; `airlock start {name}` tries again"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_gets_its_own_time_by_accelerator_or_as_configured() {
        assert_eq!(boot_budget(Accel::Kvm, None), VM_BOOT_KVM);
        assert_eq!(boot_budget(Accel::Tcg, None), VM_BOOT_TCG);
        assert!(VM_BOOT_TCG > VM_BOOT_KVM && VM_BOOT_KVM > CONTAINER_START);
        assert_eq!(boot_budget(Accel::Tcg, Some("7")), Duration::from_secs(7));
        // Unusable values fall back to the accelerator's.
        for bad in ["0", "-3", "soon", ""] {
            assert_eq!(boot_budget(Accel::Kvm, Some(bad)), VM_BOOT_KVM, "{bad}");
        }
    }

    #[test]
    fn a_microvms_clock_runs_from_its_boot_and_a_containers_from_its_start() {
        let dir = std::env::temp_dir().join(format!("airlock-start-wait-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join(VM_BOOT_FILE));
        let c = StartClock::new(r#"{"backend":"container"}"#);
        assert_eq!(c.deadline(), c.began + CONTAINER_START);
        let mut vm = StartClock::new(r#"{"backend":"microvm"}"#);
        vm.configured = None;
        vm.observe(&dir);
        assert_eq!(vm.deadline(), vm.began + VM_PREPARE);
        assert!(vm.timed_out().contains("had not begun to boot"));
        std::fs::write(dir.join(VM_BOOT_FILE), "tcg").unwrap();
        let seen = Instant::now();
        vm.observe(&dir);
        let d = vm.deadline();
        assert!(d >= seen + VM_BOOT_TCG && d <= Instant::now() + VM_BOOT_TCG);
        let why = vm.timed_out();
        assert!(why.contains("180 s under TCG"), "{why}");
        assert!(vm.hint("box").contains(VM_START_TIMEOUT_VAR));
        // Once booting, the clock does not move again.
        std::fs::write(dir.join(VM_BOOT_FILE), "kvm").unwrap();
        vm.observe(&dir);
        assert_eq!(vm.deadline(), d);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
