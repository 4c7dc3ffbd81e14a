//! The engine's real backend: each named sandbox is run by its own supervisor process
//! (`airlock __supervise --dir DIR`), detached from the engine, holding `DIR/lock` while alive.
//! Killing the engine never touches a sandbox; the next engine probes the locks to reconcile.

use crate::backend::{Backend, BackendError, Liveness, Secrets, Started, Stats};
use airlock_sandbox::cgroup::{leaf_name, remove_cgroup_dir, Layout};
use airlock_sandbox::container::exec;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
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
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(dir.join(LOCK))?;
    Ok(Flock::lock(f, FlockArg::LockExclusiveNonblock).ok())
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

/// The sandbox's cgroup leaf (`NAME.ID`), from the id in its folder.
fn cgroup_leaf(name: &str, dir: &Path) -> Option<String> {
    crate::engine::read_id(dir).map(|id| leaf_name(name, &id))
}

fn cgroup_dirs(name: &str, dir: &Path) -> Vec<PathBuf> {
    let Some(leaf) = cgroup_leaf(name, dir) else {
        return vec![];
    };
    Layout::detect()
        .parents()
        .into_iter()
        .map(|p| p.join(&leaf))
        .collect()
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

impl Backend for SupervisorBackend {
    fn start(
        &self,
        _name: &str,
        dir: &Path,
        _spec_json: &str,
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
        let _ = fs::remove_file(dir.join(airlock_sandbox::container::PID1_FILE));
        let mut cmd = Command::new(&self.exe);
        cmd.env_clear().envs(crate::client::daemon_env());
        cmd.arg("__supervise")
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(console)
            .stderr(err);
        // SAFETY: setsid() is async-signal-safe; the supervisor must not share our session.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()
                    .map(drop)
                    .map_err(std::io::Error::from)
            });
        }
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
        let up = wait_until(Instant::now() + Duration::from_secs(20), || {
            exec::pid1(dir).is_some() || child.try_wait().ok().flatten().is_some()
        });
        if !up || exec::pid1(dir).is_none() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BackendError::Failed(format!(
                "the sandbox did not start: {}",
                console_tail(dir)
            )));
        }
        // Reap the supervisor whenever it ends, so the engine never keeps a zombie.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(Started {
            supervisor_pid: pid,
        })
    }

    fn stop(&self, _name: &str, dir: &Path, grace: Duration) -> Result<(), BackendError> {
        if !locked(dir) {
            return Ok(());
        }
        let Some(pid) = supervisor_pid(dir) else {
            return Err(BackendError::Failed(
                "the supervisor's pid is unknown".into(),
            ));
        };
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if wait_until(Instant::now() + grace, || !locked(dir)) {
            return Ok(());
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        if wait_until(Instant::now() + Duration::from_secs(5), || !locked(dir)) {
            Ok(())
        } else {
            Err(BackendError::StopTimeout(format!(
                "supervisor {pid} still holds the sandbox"
            )))
        }
    }

    fn probe(&self, _name: &str, dir: &Path) -> Liveness {
        if locked(dir) {
            return Liveness::Running {
                supervisor_pid: supervisor_pid(dir).unwrap_or(0),
            };
        }
        // A clean stop removes pid1; a supervisor killed outright leaves it behind.
        if dir.join(airlock_sandbox::container::PID1_FILE).exists() {
            Liveness::Gone
        } else {
            Liveness::Stopped
        }
    }

    fn destroy(&self, name: &str, dir: &Path) -> Result<(), BackendError> {
        self.stop(name, dir, Duration::from_secs(0))?;
        for d in cgroup_dirs(name, dir) {
            let _ = remove_cgroup_dir(&d);
        }
        // The overlay's work directory is left mode 0000 by the kernel: clear the layers here,
        // so the engine can remove the folder even as an ordinary user.
        for layer in ["work", "upper", "home"] {
            airlock_sandbox::container::rundir::remove_tree(&dir.join(layer));
        }
        Ok(())
    }

    fn reclaim(&self, name: &str, dir: &Path) {
        // The lock is the supervisor's life: held, nothing here is a leftover. Holding it
        // ourselves meanwhile keeps a supervisor from starting under our feet.
        let Ok(Some(_lock)) = take_lock(dir) else {
            return;
        };
        if let Some(leaf) = cgroup_leaf(name, dir) {
            Layout::detect().reclaim(&leaf);
        }
        // Its control socket and agent socket lead nowhere now.
        for f in [exec::CONTROL_SOCKET, airlock_agent::AGENT_SOCKET] {
            let _ = fs::remove_file(dir.join(f));
        }
    }

    fn stats(&self, name: &str, dir: &Path) -> Option<Stats> {
        if !locked(dir) {
            return None;
        }
        let mut s = Stats::default();
        for d in cgroup_dirs(name, dir).into_iter().filter(|d| d.is_dir()) {
            if let Some(v) = read_u64(&d.join("memory.current"))
                .or_else(|| read_u64(&d.join("memory.usage_in_bytes")))
            {
                s.memory_bytes = Some(v);
            }
            if let Some(v) = read_u64(&d.join("pids.current")) {
                s.pids = Some(v);
            }
            if let Some(v) = read_u64(&d.join("cpuacct.usage")) {
                s.cpu_usec = Some(v / 1000);
            } else if let Ok(stat) = fs::read_to_string(d.join("cpu.stat")) {
                if let Some(v) = stat
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse().ok())
                {
                    s.cpu_usec = Some(v);
                }
            }
        }
        Some(s)
    }
}
