//! The engine's real backend: each named sandbox is run by its own supervisor process
//! (`airlock __supervise --dir DIR`), detached from the engine, holding `DIR/lock` while alive.
//! Killing the engine never touches a sandbox; the next engine probes the locks to reconcile.

use crate::backend::{Backend, BackendError, Liveness, Secrets, Started, Stats};
use airlock_sandbox::isolation::{AnyBackend, Instance, Isolation, Observed};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The supervisor's liveness lock and pid inside a sandbox's folder.
pub const LOCK: &str = "lock";
pub const SUPERVISOR_PID: &str = "supervisor.pid";
pub const CONSOLE: &str = "console.log";

pub struct SupervisorBackend {
    pub exe: PathBuf,
}

/// Whether a supervisor holds the folder's lock.
pub fn locked(dir: &Path) -> bool {
    dir.join(LOCK).exists() && !airlock_sandbox::container::rundir::lock_free(dir)
}

/// Take the folder's lock for the life of this supervisor (None: another one holds it).
pub fn take_lock(dir: &Path) -> std::io::Result<Option<Flock<File>>> {
    take_lock_file(&dir.join(LOCK))
}

/// How long taking a lock file retries while it is held: a liveness probe ([`locked_file`],
/// `rundir::lock_free`) holds the lock for the moment it takes to test it, and an owner
/// starting in that moment must not conclude that another owner runs. A real owner holds it
/// for its whole life, so this only delays the answer "another one holds it".
const TAKE_RETRY: Duration = Duration::from_millis(250);

/// Take the lock file `path` (None: another process holds it).
pub fn take_lock_file(path: &Path) -> std::io::Result<Option<Flock<File>>> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    let deadline = Instant::now() + TAKE_RETRY;
    loop {
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some(lock)),
            Err((back, _)) if Instant::now() < deadline => {
                f = back;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => return Ok(None),
        }
    }
}

/// Whether a process holds the lock file `path` (a missing file: nobody).
pub fn locked_file(path: &Path) -> bool {
    let Ok(f) = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
    else {
        return false;
    };
    Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err()
}

fn supervisor_pid(dir: &Path) -> Option<i32> {
    fs::read_to_string(dir.join(SUPERVISOR_PID))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn console_tail(dir: &Path) -> String {
    let text = fs::read_to_string(dir.join(CONSOLE)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join("; ")
}

/// A refused start's reason and hint, from its supervisor's console (see [`said_error`]).
fn console_refusal(dir: &Path) -> (String, Option<String>) {
    let text = fs::read_to_string(dir.join(CONSOLE)).unwrap_or_default();
    said_error(&text).unwrap_or_else(|| (console_tail(dir), None))
}

/// The last error an airlock command printed in `text` (its stderr, a supervisor's console)
/// and the `hint:` after it, both without their prefixes; None when it printed no error.
pub fn said_error(text: &str) -> Option<(String, Option<String>)> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let at = lines
        .iter()
        .rposition(|l| l.starts_with("airlock: error: "))?;
    let why = lines[at].trim_start_matches("airlock: error: ").to_owned();
    let hint = lines[at + 1..]
        .iter()
        .find_map(|l| l.strip_prefix("hint: "))
        .map(str::to_owned);
    Some((why, hint))
}

fn wait_until(deadline: Instant, mut f: impl FnMut() -> bool) -> bool {
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A supervisor that is not to go on: SIGTERM (it stops what it started and cleans up after
/// it), SIGKILL after 10 s if it has not ended; reaped either way.
fn end_supervisor(child: &mut std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let ended = wait_until(Instant::now() + Duration::from_secs(10), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !ended {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// The sandbox's isolation backend, from the `backend` of its spec (None: one this build
/// does not have, so nothing of it can be running or left over).
fn isolation(dir: &Path) -> Option<AnyBackend> {
    let json = fs::read(dir.join("spec.json")).unwrap_or_default();
    AnyBackend::for_spec(&json).ok()
}

/// Run `f` on the sandbox in `dir` through its isolation backend.
fn with_isolation<T>(
    name: &str,
    dir: &Path,
    f: impl FnOnce(&AnyBackend, &Instance<'_>) -> T,
) -> Option<T> {
    let backend = isolation(dir)?;
    let id = crate::engine::read_id(dir);
    let sandbox = Instance {
        name,
        dir,
        id: id.as_deref(),
    };
    Some(f(&backend, &sandbox))
}

/// Whether PID 1 of the sandbox in `dir` runs (published for exec).
pub fn sandbox_up(name: &str, dir: &Path) -> bool {
    pid1_up(name, dir)
}

fn pid1_up(name: &str, dir: &Path) -> bool {
    with_isolation(name, dir, |b, s| b.observe(s))
        .is_some_and(|o| matches!(o, Observed::Running { .. }))
}

impl Backend for SupervisorBackend {
    fn start(
        &self,
        name: &str,
        dir: &Path,
        spec_json: &str,
        secrets: &Secrets,
    ) -> Result<Started, BackendError> {
        if locked(dir) {
            return Err(BackendError::Failed(
                "a supervisor already runs this sandbox".into(),
            ));
        }
        let console = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join(CONSOLE))
            .map_err(|e| BackendError::Failed(format!("console log: {e}")))?;
        let err = console
            .try_clone()
            .map_err(|e| BackendError::Failed(e.to_string()))?;
        // What an earlier, killed run left (its cgroup, the record of its PID 1) goes first.
        self.reclaim(name, dir);
        // The supervisor says afresh when its VM boots.
        let _ = fs::remove_file(dir.join(airlock_sandbox::isolation::VM_BOOT_FILE));
        let mut cmd = Command::new(&self.exe);
        cmd.env_clear().envs(crate::client::daemon_env());
        cmd.arg("__supervise")
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(console)
            .stderr(err);
        // No pre-exec hook: std then spawns with posix_spawn (a vfork, no copy of this
        // process's memory), where a fork made every page copy-on-write — the daemon's claims
        // thread then took ≈ 75 page faults at its next claim (every claim follows a refill's
        // start). The supervisor leaves this session itself, first thing (`__supervise`).
        let mut child = cmd
            .spawn()
            .map_err(|e| BackendError::Unavailable(format!("start the supervisor: {e}")))?;
        let pid = child.id() as i32;
        // The secret values go through a pipe the supervisor reads to its end before anything
        // else (never argv, environment or a file). Always written, so it never waits.
        if let Some(mut stdin) = child.stdin.take() {
            let msg = serde_json::to_vec(&secrets.0).unwrap_or_default();
            let _ = std::io::Write::write_all(&mut stdin, &msg);
        }
        let mut clock = crate::start_wait::StartClock::new(spec_json);
        let began = Instant::now();
        let up = loop {
            if pid1_up(name, dir) || child.try_wait().ok().flatten().is_some() {
                break true;
            }
            clock.observe(dir);
            if Instant::now() >= clock.deadline() {
                break false;
            }
            // Often at first (a container is up in milliseconds), less while a VM boots.
            let tick = if began.elapsed() < Duration::from_secs(2) {
                5
            } else {
                25
            };
            std::thread::sleep(Duration::from_millis(tick));
        };
        if !up {
            // Out of time: the supervisor ends what it started (its VM, its run directory),
            // killed if it does not; then what a killed one leaves goes too.
            end_supervisor(&mut child);
            self.reclaim(name, dir);
            let _ = fs::remove_file(dir.join(airlock_sandbox::isolation::VM_BOOT_FILE));
            let tail = console_tail(dir);
            return Err(BackendError::StartTimeout {
                why: if tail.is_empty() {
                    clock.timed_out()
                } else {
                    format!("{} (its console: {tail})", clock.timed_out())
                },
                hint: clock.hint(name),
            });
        }
        if !pid1_up(name, dir) {
            let _ = child.kill();
            let refused = child
                .wait()
                .is_ok_and(|s| s.code() == Some(airlock_model::exit::POLICY_REFUSED));
            if refused {
                let (why, hint) = console_refusal(dir);
                return Err(BackendError::Refused { why, hint });
            }
            return Err(BackendError::Failed(format!(
                "the sandbox did not start: {}",
                console_tail(dir)
            )));
        }
        // Reap the supervisor whenever it ends, so the engine never keeps a zombie.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        // A start that adopted a warm member (`__supervise` exits, the member's supervisor runs
        // the sandbox): the pid the folder names.
        Ok(Started {
            supervisor_pid: supervisor_pid(dir).filter(|_| locked(dir)).unwrap_or(pid),
        })
    }

    fn stop(&self, name: &str, dir: &Path, grace: Duration) -> Result<(), BackendError> {
        if !locked(dir) {
            return Ok(());
        }
        let Some(pid) = supervisor_pid(dir) else {
            return Err(BackendError::Failed(
                "the supervisor's pid is unknown".into(),
            ));
        };
        let pid = nix::unistd::Pid::from_raw(pid);
        // The supervisor shares the grace with what it runs (a microVM's guest powers off in it).
        let _ = fs::write(
            dir.join(airlock_sandbox::isolation::STOP_GRACE_FILE),
            grace.as_millis().to_string(),
        );
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if wait_until(Instant::now() + grace, || !locked(dir)) {
            // What a supervisor leaves outside its folder (an adopted warm member's claim
            // cgroup) goes now; a cold one's supervisor removed it already.
            self.reclaim(name, dir);
            return Ok(());
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        if wait_until(Instant::now() + Duration::from_secs(5), || !locked(dir)) {
            self.reclaim(name, dir);
            Ok(())
        } else {
            Err(BackendError::StopTimeout(format!(
                "supervisor {pid} still holds the sandbox"
            )))
        }
    }

    fn exec_program(&self) -> Option<PathBuf> {
        Some(self.exe.clone())
    }

    fn prepare(&self, name: &str, dir: &Path, spec_json: &str) -> Result<(), BackendError> {
        // A spec that is not a RunSpec (an API client's partial one) needs nothing made here;
        // `start` refuses it with its own message.
        let Ok(spec) = serde_json::from_str::<airlock_model::spec::RunSpec>(spec_json) else {
            return Ok(());
        };
        airlock_work::prepare::prepare(dir, name, &spec).map_err(BackendError::Failed)
    }

    fn probe(&self, name: &str, dir: &Path) -> Liveness {
        if locked(dir) {
            return Liveness::Running {
                supervisor_pid: supervisor_pid(dir).unwrap_or(0),
            };
        }
        // A clean stop leaves nothing; a supervisor killed outright leaves its sandbox's record.
        match with_isolation(name, dir, |b, s| b.observe(s)) {
            Some(Observed::Stopped) | None => Liveness::Stopped,
            Some(Observed::Running { .. } | Observed::Dead) => Liveness::Gone,
        }
    }

    fn destroy(&self, name: &str, dir: &Path) -> Result<(), BackendError> {
        self.stop(name, dir, Duration::from_secs(0))?;
        with_isolation(name, dir, |b, s| b.destroy(s));
        Ok(())
    }

    fn reclaim(&self, name: &str, dir: &Path) {
        // The lock is the supervisor's life: held, nothing here is a leftover. Holding it
        // ourselves meanwhile keeps a supervisor from starting under our feet.
        let Ok(Some(_lock)) = take_lock(dir) else {
            return;
        };
        with_isolation(name, dir, |b, s| b.reclaim(s));
        // The agent's and the policy's sockets lead nowhere now either.
        let _ = fs::remove_file(dir.join(airlock_agent::AGENT_SOCKET));
        let _ = fs::remove_file(dir.join(crate::live_policy::SOCKET));
    }

    fn set_egress(
        &self,
        _name: &str,
        dir: &Path,
        domains: &[String],
        ports: &[u16],
    ) -> Result<usize, BackendError> {
        crate::live_policy::send(dir, domains, ports)
    }

    fn stats(&self, name: &str, dir: &Path) -> Option<Stats> {
        if !locked(dir) {
            return None;
        }
        let u = with_isolation(name, dir, |b, s| b.stats(s))??;
        Some(Stats {
            memory_bytes: u.memory_bytes,
            pids: u.pids,
            cpu_usec: u.cpu_usec,
        })
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A liveness probe running at the moment an owner starts must not make the owner think
    /// another one holds the lock (`daemon start` failed with "a daemon already runs" while
    /// it polled for the new daemon: the probe takes the lock to test it).
    #[test]
    fn an_owner_starting_beside_a_probe_still_takes_its_lock() {
        let dir = std::env::temp_dir().join(format!("airlock-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("daemon.lock");
        drop(take_lock_file(&path).unwrap().expect("first take"));
        let stop = Arc::new(AtomicBool::new(false));
        let probed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let probe = {
            let (stop, path, probed) = (stop.clone(), path.clone(), probed.clone());
            std::thread::spawn(move || {
                let mut probes = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let _ = locked_file(&path);
                    probes += 1;
                    probed.store(probes, Ordering::Relaxed);
                }
                probes
            })
        };
        // On a loaded machine the probe may not be scheduled before 300 takes are done: it
        // must have probed before the takes start counting.
        while probed.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        let mut missed = 0;
        for _ in 0..300 {
            match take_lock_file(&path).unwrap() {
                // While held, a probe sees it held.
                Some(lock) => {
                    assert!(locked_file(&path));
                    drop(lock);
                }
                None => missed += 1,
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(probe.join().unwrap() > 0);
        assert_eq!(
            missed, 0,
            "an owner lost its lock to a probe {missed} times in 300"
        );
        // A real owner still keeps a second one out.
        let held = take_lock_file(&path).unwrap().expect("take");
        assert!(take_lock_file(&path).unwrap().is_none());
        drop(held);
        let _ = fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::said_error;

    #[test]
    fn the_last_error_said_and_its_hint_without_their_prefixes() {
        let text = "airlock: warning: w\nairlock: error: first\nairlock: error: refused: x\n  \nhint: do y\nhint: other\n";
        assert_eq!(
            said_error(text),
            Some(("refused: x".to_string(), Some("do y".to_string())))
        );
        assert_eq!(
            said_error("airlock: error: no hint\n"),
            Some(("no hint".to_string(), None))
        );
        // A hint before the error is not its hint; no error said: None.
        assert_eq!(
            said_error("hint: early\nairlock: error: e\n"),
            Some(("e".to_string(), None))
        );
        assert_eq!(said_error("ls: cannot access\n"), None);
    }
}
