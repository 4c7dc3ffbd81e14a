//! What the engine asks of the thing that actually runs sandboxes.
//!
//! The engine owns the store and the lifecycle; a [`Backend`] owns processes: it starts a
//! sandbox's supervisor, stops it, tells whether it is alive and reclaims what it left. The
//! real implementation (supervisor processes) lives in `airlock-sandbox`; [`FakeBackend`] is
//! an in-memory stand-in for engine-tier tests that records every call and can be told to
//! fail or to let a sandbox "die".
//!
//! Every method gets the sandbox's name and its folder (`STATE/sandboxes/NAME`). Methods must
//! be idempotent: the engine retries them after a crash (reconcile) without knowing how far
//! the previous attempt got.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

pub use crate::report::Stats;

/// A supervisor that was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    pub supervisor_pid: i32,
}

/// What a backend sees of a sandbox right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its supervisor (and so PID 1) is alive.
    Running { supervisor_pid: i32 },
    /// Nothing runs and it ended in an orderly way (stopped, or its work ended by itself).
    Stopped,
    /// Nothing runs and there is no trace of how it ended: the supervisor died or never was.
    Gone,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot work on this host (missing kernel feature, permissions).
    #[error("the sandbox backend is unavailable: {0}")]
    Unavailable(String),
    /// The operation was tried and failed.
    #[error("{0}")]
    Failed(String),
    /// The sandbox did not stop within its grace period (and could not be killed).
    #[error("sandbox did not stop: {0}")]
    StopTimeout(String),
    /// The sandbox was not up in its start's time; whatever of it had started is gone.
    #[error("the sandbox did not start: {why}")]
    StartTimeout { why: String, hint: String },
    /// Its start was refused by the sandbox's own checks (exit 121 of its supervisor: a mount
    /// source that became a symbolic link, …), with the supervisor's reason and hint.
    #[error("the sandbox did not start: {why}")]
    Refused { why: String, hint: Option<String> },
}

/// Secret values for one start, by name. `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Secrets(pub Vec<(String, String)>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| format!("{k}=<redacted>")))
            .finish()
    }
}

pub trait Backend: Send + Sync {
    /// Prepares a new sandbox's folder beyond `spec.json` (which the engine has written).
    /// Called once while the sandbox is `creating`; a failure rolls the creation back.
    /// The default prepares nothing.
    fn prepare(&self, _name: &str, _dir: &Path, _spec_json: &str) -> Result<(), BackendError> {
        Ok(())
    }
    /// Starts the sandbox's supervisor, detached from the engine, and returns once it is up.
    /// `secrets` are values read by the client for this start: they must reach the sandbox in
    /// memory only (never a file, argv or log).
    fn start(
        &self,
        name: &str,
        dir: &Path,
        spec_json: &str,
        secrets: &Secrets,
    ) -> Result<Started, BackendError>;
    /// Asks it to stop, waits up to `grace`, then kills it. Stopping a stopped one is `Ok`.
    fn stop(&self, name: &str, dir: &Path, grace: Duration) -> Result<(), BackendError>;
    /// Is it alive? Must be cheap and never change anything.
    fn probe(&self, name: &str, dir: &Path) -> Liveness;
    /// Kills whatever runs and reclaims everything it holds outside `dir` (cgroups, run
    /// dirs, mounts). The engine deletes `dir` itself afterwards. Idempotent.
    fn destroy(&self, name: &str, dir: &Path) -> Result<(), BackendError>;
    /// Its live resource use, when it runs and the backend can tell.
    fn stats(&self, name: &str, dir: &Path) -> Option<Stats>;
    /// Reclaims what a dead supervisor left outside `dir` (cgroups, helper processes) of a
    /// sandbox the engine knows is not running, keeping everything its next start needs (the
    /// workspace, home). Must do nothing while a supervisor lives. Idempotent; the default
    /// reclaims nothing.
    fn reclaim(&self, _name: &str, _dir: &Path) {}
    /// The program that runs a command in one of this backend's running sandboxes
    /// (`PROGRAM exec NAME -- ARGV…`, a child process of the engine: entering namespaces needs
    /// a single-threaded process). None: this backend cannot exec (the fake).
    fn exec_program(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// Puts a new egress allowlist in force in the running sandbox `name` at once (no
    /// restart): new connections and DNS answers follow it, open connections it no longer
    /// allows are closed (how many is returned). The default: this backend cannot.
    fn set_egress(
        &self,
        _name: &str,
        _dir: &Path,
        _domains: &[String],
        _ports: &[u16],
    ) -> Result<usize, BackendError> {
        Err(BackendError::Unavailable(
            "this backend cannot change a running sandbox's egress policy".into(),
        ))
    }
    /// Carries out an action that needs a process of its own (file access, copies, deliver,
    /// trust, explain: [`Action::in_child`](crate::action::Action::in_child)). The default runs
    /// the typed child, `EXEC_PROGRAM __action`.
    fn child_action(
        &self,
        action: &crate::action::Action,
    ) -> Result<crate::action::ActionData, crate::action::ActionError> {
        match self.exec_program() {
            Some(program) => {
                crate::action::run_child(&program, action, crate::action::CHILD_DEADLINE)
            }
            None => Err(crate::action::ActionError::new(
                "unavailable",
                "this engine's backend carries out no actions in a child process",
            )),
        }
    }
}

/// One call the [`FakeBackend`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Prepare(String),
    Start(String),
    Stop(String, Duration),
    Destroy(String),
    Reclaim(String),
    /// An action for a typed child (its `action` tag).
    Child(String),
    /// A running sandbox's new egress allowlist: domains, ports.
    SetEgress(String, Vec<String>, Vec<u16>),
}

/// Which operation a [`FakeBackend`] should fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeOp {
    Prepare,
    Start,
    Stop,
    Destroy,
    SetEgress,
}

#[derive(Debug, Default)]
struct FakeState {
    /// Sandboxes that run, with their fake supervisor pid.
    running: HashMap<String, i32>,
    /// Sandboxes that ended in an orderly way (probe says `Stopped`, not `Gone`).
    stopped: HashSet<String>,
    fail: HashMap<(String, FakeOp), String>,
    calls: Vec<Call>,
    next_pid: i32,
    start_delay: Duration,
}

/// An in-memory backend for tests. Starting a sandbox makes it "run" with a made-up pid;
/// [`FakeBackend::fail`] makes the next calls of an operation fail; [`FakeBackend::die`]
/// makes a running sandbox vanish as if its supervisor had been killed.
#[derive(Debug, Default)]
pub struct FakeBackend {
    state: Mutex<FakeState>,
}

impl FakeBackend {
    pub fn new() -> FakeBackend {
        let backend = FakeBackend::default();
        backend.lock().next_pid = 1000;
        backend
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A test that panicked while holding the lock must not hide the real failure.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// From now on, `op` on `name` fails with `message` (until [`FakeBackend::heal`]).
    pub fn fail(&self, name: &str, op: FakeOp, message: &str) {
        self.lock()
            .fail
            .insert((name.to_owned(), op), message.to_owned());
    }

    /// Stops failing `op` on `name`.
    pub fn heal(&self, name: &str, op: FakeOp) {
        self.lock().fail.remove(&(name.to_owned(), op));
    }

    /// The supervisor of `name` dies without a trace: probe says `Gone`.
    pub fn die(&self, name: &str) {
        let mut state = self.lock();
        state.running.remove(name);
        state.stopped.remove(name);
    }

    /// The sandbox's work ends by itself in an orderly way: probe says `Stopped`.
    pub fn exit(&self, name: &str) {
        let mut state = self.lock();
        state.running.remove(name);
        state.stopped.insert(name.to_owned());
    }

    /// Makes `name` run (as if a supervisor were found alive after a crash of the engine).
    pub fn set_running(&self, name: &str) -> i32 {
        let mut state = self.lock();
        state.next_pid += 1;
        let pid = state.next_pid;
        state.running.insert(name.to_owned(), pid);
        state.stopped.remove(name);
        pid
    }

    /// Makes every start take this long (to widen race windows in tests).
    pub fn set_start_delay(&self, delay: Duration) {
        self.lock().start_delay = delay;
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.lock().running.contains_key(name)
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    fn check(state: &FakeState, name: &str, op: FakeOp) -> Result<(), BackendError> {
        match state.fail.get(&(name.to_owned(), op)) {
            Some(message) => Err(BackendError::Failed(message.clone())),
            None => Ok(()),
        }
    }
}

impl Backend for FakeBackend {
    /// The fake runs nothing: `true` stands in for the exec (the API layer's tests see a
    /// command that exits 0 with no output; the real exec is tested end to end).
    fn exec_program(&self) -> Option<std::path::PathBuf> {
        Some(std::path::PathBuf::from("true"))
    }

    /// No child: a canned answer of the right kind (the API layer's tests see its shape; the
    /// real child is tested end to end).
    fn child_action(
        &self,
        action: &crate::action::Action,
    ) -> Result<crate::action::ActionData, crate::action::ActionError> {
        use crate::action::*;
        let label = serde_json::to_value(action)
            .ok()
            .and_then(|v| v.get("action").and_then(|a| a.as_str()).map(str::to_owned))
            .unwrap_or_default();
        self.lock().calls.push(Call::Child(label));
        Ok(match action.clone() {
            Action::FileRead { path, offset, .. } => ActionData::File(FileContent {
                path,
                kind: "file".into(),
                size: Some(0),
                offset: offset.unwrap_or(0),
                returned_bytes: 0,
                truncated: false,
                encoding: Encoding::Utf8,
                content: String::new(),
                entries: None,
            }),
            Action::FileWrite { path, .. } => ActionData::Written(Written {
                path,
                written_bytes: 0,
                size: Some(0),
            }),
            Action::Copy {
                direction,
                host_path,
                path,
                ..
            } => ActionData::Copied(Copied {
                direction,
                host_path,
                path,
                review: vec![],
            }),
            Action::Deliver { name, branch } => ActionData::Delivered(Delivered {
                name,
                branch: format!("delivered/{branch}"),
            }),
            Action::Trust { dir, op } => ActionData::Trust(TrustReport {
                file: format!("{dir}/airlock.toml"),
                trusted: op == TrustOp::Allow,
                sha256: String::new(),
                widening: vec![],
            }),
            Action::Explain { sandbox, .. } => ActionData::Explained(Explanation {
                origin: format!("sandbox {sandbox}"),
                policy: String::new(),
                verdicts: vec![],
            }),
            Action::Up(r) => ActionData::Record(crate::store::Record {
                name: r.name,
                id: "0".repeat(32),
                state: if r.start {
                    airlock_model::lifecycle::SandboxState::Running
                } else {
                    airlock_model::lifecycle::SandboxState::Stopped
                },
                spec: serde_json::json!({}),
                backend: r.policy.backend,
                image: r.policy.image,
                profile: r.policy.profile,
                supervisor_pid: None,
                created_at: 0,
                started_at: None,
                stopped_at: None,
                last_error: None,
            }),
            other => {
                return Err(ActionError::new(
                    "internal",
                    format!("not a child's action: {other:?}"),
                ))
            }
        })
    }

    fn prepare(&self, name: &str, _dir: &Path, _spec_json: &str) -> Result<(), BackendError> {
        let mut state = self.lock();
        state.calls.push(Call::Prepare(name.to_owned()));
        FakeBackend::check(&state, name, FakeOp::Prepare)
    }

    fn start(
        &self,
        name: &str,
        _dir: &Path,
        _spec_json: &str,
        _secrets: &Secrets,
    ) -> Result<Started, BackendError> {
        let delay = {
            let mut state = self.lock();
            state.calls.push(Call::Start(name.to_owned()));
            FakeBackend::check(&state, name, FakeOp::Start)?;
            state.start_delay
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let supervisor_pid = self.set_running(name);
        Ok(Started { supervisor_pid })
    }

    fn stop(&self, name: &str, _dir: &Path, grace: Duration) -> Result<(), BackendError> {
        let mut state = self.lock();
        state.calls.push(Call::Stop(name.to_owned(), grace));
        FakeBackend::check(&state, name, FakeOp::Stop)?;
        state.running.remove(name);
        state.stopped.insert(name.to_owned());
        Ok(())
    }

    fn probe(&self, name: &str, _dir: &Path) -> Liveness {
        let state = self.lock();
        match state.running.get(name) {
            Some(&supervisor_pid) => Liveness::Running { supervisor_pid },
            None if state.stopped.contains(name) => Liveness::Stopped,
            None => Liveness::Gone,
        }
    }

    fn destroy(&self, name: &str, _dir: &Path) -> Result<(), BackendError> {
        let mut state = self.lock();
        state.calls.push(Call::Destroy(name.to_owned()));
        FakeBackend::check(&state, name, FakeOp::Destroy)?;
        state.running.remove(name);
        state.stopped.remove(name);
        Ok(())
    }

    fn reclaim(&self, name: &str, _dir: &Path) {
        self.lock().calls.push(Call::Reclaim(name.to_owned()));
    }

    fn set_egress(
        &self,
        name: &str,
        _dir: &Path,
        domains: &[String],
        ports: &[u16],
    ) -> Result<usize, BackendError> {
        let mut state = self.lock();
        state.calls.push(Call::SetEgress(
            name.to_owned(),
            domains.to_vec(),
            ports.to_vec(),
        ));
        FakeBackend::check(&state, name, FakeOp::SetEgress)?;
        if !state.running.contains_key(name) {
            return Err(BackendError::Failed(format!("{name} is not running")));
        }
        Ok(0)
    }

    fn stats(&self, name: &str, _dir: &Path) -> Option<Stats> {
        let state = self.lock();
        state.running.get(name).map(|&pid| Stats {
            memory_bytes: Some(1 << 20),
            pids: Some(1),
            cpu_usec: Some(pid as u64),
        })
    }
}
