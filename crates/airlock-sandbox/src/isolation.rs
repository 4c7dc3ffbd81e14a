//! The one isolation seam: [`Isolation`] is what the rest of airlock asks of the mechanism
//! that runs sandboxes; [`AnyBackend`] is the enum over the implementations (the container
//! backend today, a microVM later) plus a recording [`Fake`] for tests.
//!
//! The operations are the ones the callers really perform, nothing speculative:
//! - `check`: the host facts the planner needs (what this backend can enforce here).
//! - `start`: start a plan and hold it until it ends (blocking). A sandbox's lifetime *is* this
//!   call: `run` waits here for the command; a named sandbox's supervisor waits here until it is
//!   stopped. So there is no separate `stop`: stopping is a signal to the process inside
//!   `start` (SIGTERM reaches PID 1, which ends every process and exits; the engine's
//!   supervisor backend applies the grace period and SIGKILL), and the backend cannot stop a
//!   sandbox that another process holds any better than that signal.
//! - `exec`: run a command inside a running named sandbox, from the caller's own process (the
//!   container backend joins its namespaces directly: no daemon on the hot path).
//! - `observe`: is it running (cheap, changes nothing).
//! - `stats`: live resource use.
//! - `reclaim`: remove what a dead instance left outside its state (cgroups, stale sockets),
//!   keeping what its next start needs. `destroy`: remove everything the backend made for it.
//!
//! A running named sandbox is addressed by its [`Instance`] (folder, name, unique id); what
//! the backend keeps in the folder (the container backend: `plan.json`, `pid1`, the control
//! socket, disk layers) is its own business.

use crate::cgroup::Layout;
pub use crate::command::{Ending, ExecRequest, Outcome};
use crate::container::{self, RunError, RunOptions};
pub use crate::folder::{Observed, PLAN_FILE, STOP_GRACE_FILE, VM_BOOT_FILE};
pub use crate::microvm::MicroVm;
pub use crate::offer::offer;
use airlock_model::plan::{HostFacts, Plan};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A named sandbox as the backend sees it: its folder, its name and its unique id (the
/// engine's `DIR/id`; None for a folder driven without an engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance<'a> {
    pub name: &'a str,
    pub dir: &'a Path,
    pub id: Option<&'a str>,
}

/// Live resource use, from the sandbox's cgroup (None: this host does not account it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    pub cpu_usec: Option<u64>,
}

/// What every isolation backend does. See the module documentation for why these operations.
pub trait Isolation {
    /// The facts about this host the planner needs to lower a spec for this backend.
    fn check(&self, project_dir: &Path, layout: &Layout) -> HostFacts;
    /// Start `plan` and hold the sandbox until it ends; everything created is removed before
    /// returning (a named sandbox's folder keeps its state).
    fn start(&self, plan: &Plan, opts: &RunOptions<'_>) -> Result<Outcome, RunError>;
    /// Run a command in a running named sandbox; blocks until it exits.
    fn exec(&self, sandbox: &Instance<'_>, req: &ExecRequest) -> Result<Outcome, RunError>;
    /// Bind a host path into a running named sandbox, or take such a bind away, without a
    /// restart (`airlock mount` / `unmount`). Never through a symlink on either side.
    fn hotplug(
        &self,
        sandbox: &Instance<'_>,
        change: &container::hotplug::Hotplug,
    ) -> Result<(), RunError>;
    fn observe(&self, sandbox: &Instance<'_>) -> Observed;
    /// Live resource use of a running sandbox (None: not running, or nothing to read).
    fn stats(&self, sandbox: &Instance<'_>) -> Option<Usage>;
    /// Reclaim what a dead instance left outside its state. Idempotent; never call it while
    /// the sandbox may run (the caller holds the folder's lock).
    fn reclaim(&self, sandbox: &Instance<'_>);
    /// Remove everything the backend made for the sandbox (cgroups, layers); the caller then
    /// deletes the folder. Idempotent.
    fn destroy(&self, sandbox: &Instance<'_>);
}

/// The container backend: namespaces, seccomp, Landlock, cgroups (see `container`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Container;

impl Container {
    fn cgroup_dirs(sandbox: &Instance<'_>) -> Vec<PathBuf> {
        let Some(id) = sandbox.id else {
            return vec![];
        };
        let leaf = crate::cgroup::leaf_name(sandbox.name, id);
        Layout::detect()
            .parents()
            .into_iter()
            .map(|p| p.join(&leaf))
            .collect()
    }

    fn record_plan(dir: &Path, plan: &airlock_model::plan::LaunchPlan) -> Result<(), RunError> {
        let json = serde_json::to_vec_pretty(plan)
            .map_err(|e| RunError::Setup(format!("encode the plan: {e}")))?;
        let tmp = dir.join(".plan.json.tmp");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, dir.join(PLAN_FILE)))
            .map_err(container::io_err("record the sandbox's plan"))
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// The CPU time (user + system, their own and their waited-for children's) of the processes
/// listed in the first of `dirs` that lists any, from /proc/PID/stat.
fn procs_cpu_usec(dirs: &[PathBuf]) -> Option<u64> {
    let procs = dirs
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .filter(|p| !p.trim().is_empty())?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&h| h > 0)
        .unwrap_or(100) as u64;
    let mut ticks = 0u64;
    for pid in procs.split_whitespace() {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command name (in parentheses, which may hold spaces): state is field 3;
        // utime, stime, cutime, cstime are fields 14–17.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        ticks += f
            .get(11..15)
            .into_iter()
            .flatten()
            .filter_map(|v| v.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(ticks * 1_000_000 / hz)
}

/// What a sandbox's cgroups (one per hierarchy: cgroup v2, or v1's memory, pids, cpuacct)
/// say it uses now; fields the hierarchies do not have stay None.
fn usage_of(dirs: &[PathBuf]) -> Usage {
    let mut s = Usage::default();
    for d in dirs.iter().filter(|d| d.is_dir()) {
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
        } else if let Ok(stat) = std::fs::read_to_string(d.join("cpu.stat")) {
            if let Some(v) = stat
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok())
            {
                s.cpu_usec = Some(v);
            }
        }
    }
    s
}

impl Isolation for Container {
    fn check(&self, project_dir: &Path, layout: &Layout) -> HostFacts {
        HostFacts {
            offer: offer(),
            ..container::host_facts(project_dir, layout)
        }
    }

    fn start(&self, plan: &Plan, opts: &RunOptions<'_>) -> Result<Outcome, RunError> {
        let Plan::Container(plan) = plan else {
            return Err(RunError::Setup(
                "the container backend got another backend's plan".into(),
            ));
        };
        if let Some(dir) = opts.persist {
            Self::record_plan(dir, plan)?;
        }
        container::run(plan, opts)
    }

    fn exec(&self, sandbox: &Instance<'_>, req: &ExecRequest) -> Result<Outcome, RunError> {
        let plan = crate::folder::read_plan(sandbox.dir).map_err(|why| RunError::NotRecorded {
            name: sandbox.name.to_string(),
            why,
        })?;
        // The cgroup is named after the name the sandbox was started with (its plan's).
        let leaf = sandbox
            .id
            .map(|id| crate::cgroup::leaf_name(&plan.name, id));
        container::exec::exec(sandbox.dir, &plan, leaf.as_deref(), req)
    }

    fn hotplug(
        &self,
        sandbox: &Instance<'_>,
        change: &container::hotplug::Hotplug,
    ) -> Result<(), RunError> {
        let plan = crate::folder::read_plan(sandbox.dir).map_err(|why| RunError::NotRecorded {
            name: sandbox.name.to_string(),
            why,
        })?;
        container::hotplug::apply(sandbox.dir, &plan, change)
    }

    fn observe(&self, sandbox: &Instance<'_>) -> Observed {
        match container::exec::pid1(sandbox.dir) {
            Some(pid1) => Observed::Running { pid1 },
            // A clean end removes the record of PID 1; a supervisor killed outright leaves it.
            None if sandbox.dir.join(container::PID1_FILE).exists() => Observed::Dead,
            None => Observed::Stopped,
        }
    }

    fn stats(&self, sandbox: &Instance<'_>) -> Option<Usage> {
        Some(usage_of(&Self::cgroup_dirs(sandbox)))
    }

    fn reclaim(&self, sandbox: &Instance<'_>) {
        if let Some(id) = sandbox.id {
            Layout::detect().reclaim(&crate::cgroup::leaf_name(sandbox.name, id));
        }
        // Its control socket leads nowhere now, and the record of its PID 1 is stale.
        for f in [container::exec::CONTROL_SOCKET, container::PID1_FILE] {
            let _ = std::fs::remove_file(sandbox.dir.join(f));
        }
    }

    fn destroy(&self, sandbox: &Instance<'_>) {
        for d in Self::cgroup_dirs(sandbox) {
            let _ = crate::cgroup::remove_cgroup_dir(&d);
        }
        // The overlay's work directory is left mode 0000 by the kernel: clear the layers here,
        // so the folder can be removed even by an ordinary user.
        for layer in ["work", "upper", "home"] {
            container::rundir::remove_tree(&sandbox.dir.join(layer));
        }
    }
}

/// One call the [`Fake`] received, with what identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Check {
        project_dir: PathBuf,
    },
    Start {
        name: String,
        argv: Vec<String>,
    },
    Exec {
        name: String,
        req: ExecRequest,
    },
    Hotplug {
        name: String,
        change: container::hotplug::Hotplug,
    },
    Observe {
        name: String,
    },
    Stats {
        name: String,
    },
    Reclaim {
        name: String,
    },
    Destroy {
        name: String,
    },
}

/// A recording stand-in for tests of code above the seam: it records every call, answers
/// `check` with the facts it was given, and ends every start/exec with a scripted exit code.
#[derive(Debug)]
pub struct Fake {
    facts: Box<HostFacts>,
    exit_code: i32,
    running: Mutex<Vec<String>>,
    calls: Mutex<Vec<Call>>,
}

impl Fake {
    pub fn new(facts: HostFacts, exit_code: i32) -> Fake {
        Fake {
            facts: Box::new(facts),
            exit_code,
            running: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
        }
    }
    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
    /// Let `name` be seen as running (as if its supervisor were inside `start`).
    pub fn set_running(&self, name: &str, on: bool) {
        if let Ok(mut r) = self.running.lock() {
            r.retain(|n| n != name);
            if on {
                r.push(name.to_string());
            }
        }
    }
    fn record(&self, c: Call) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(c);
        }
    }
    fn is_running(&self, name: &str) -> bool {
        self.running
            .lock()
            .is_ok_and(|r| r.iter().any(|n| n == name))
    }
}

impl Isolation for Fake {
    fn check(&self, project_dir: &Path, _layout: &Layout) -> HostFacts {
        self.record(Call::Check {
            project_dir: project_dir.to_path_buf(),
        });
        (*self.facts).clone()
    }
    fn start(&self, plan: &Plan, _opts: &RunOptions<'_>) -> Result<Outcome, RunError> {
        let (name, argv) = match plan {
            Plan::Container(p) => (p.name.clone(), p.argv.clone()),
            Plan::Microvm(v) => (v.qemu.name.clone(), v.guest.argv.clone()),
        };
        self.record(Call::Start { name, argv });
        Ok(Outcome {
            ending: Ending::Exited(self.exit_code),
            changes: None,
        })
    }
    fn exec(&self, sandbox: &Instance<'_>, req: &ExecRequest) -> Result<Outcome, RunError> {
        self.record(Call::Exec {
            name: sandbox.name.to_string(),
            req: req.clone(),
        });
        if !self.is_running(sandbox.name) {
            return Err(RunError::Setup(format!(
                "sandbox {} is not running",
                sandbox.name
            )));
        }
        Ok(Outcome {
            ending: Ending::Exited(self.exit_code),
            changes: None,
        })
    }
    fn hotplug(
        &self,
        sandbox: &Instance<'_>,
        change: &container::hotplug::Hotplug,
    ) -> Result<(), RunError> {
        self.record(Call::Hotplug {
            name: sandbox.name.to_string(),
            change: change.clone(),
        });
        if !self.is_running(sandbox.name) {
            return Err(RunError::Setup(format!(
                "sandbox {} is not running",
                sandbox.name
            )));
        }
        Ok(())
    }
    fn observe(&self, sandbox: &Instance<'_>) -> Observed {
        self.record(Call::Observe {
            name: sandbox.name.to_string(),
        });
        if self.is_running(sandbox.name) {
            Observed::Running { pid1: 1 }
        } else {
            Observed::Stopped
        }
    }
    fn stats(&self, sandbox: &Instance<'_>) -> Option<Usage> {
        self.record(Call::Stats {
            name: sandbox.name.to_string(),
        });
        self.is_running(sandbox.name).then(Usage::default)
    }
    fn reclaim(&self, sandbox: &Instance<'_>) {
        self.record(Call::Reclaim {
            name: sandbox.name.to_string(),
        });
    }
    fn destroy(&self, sandbox: &Instance<'_>) {
        self.record(Call::Destroy {
            name: sandbox.name.to_string(),
        });
        self.set_running(sandbox.name, false);
    }
}

/// The microVM backend (QEMU; see `microvm`). A named microVM sandbox's supervisor holds its
/// guest inside `start`; exec goes through the folder's control socket.
impl Isolation for MicroVm {
    fn check(&self, project_dir: &Path, layout: &Layout) -> HostFacts {
        MicroVm::check(self, project_dir, layout)
    }
    fn start(&self, plan: &Plan, opts: &RunOptions<'_>) -> Result<Outcome, RunError> {
        MicroVm::start(self, plan, opts)
    }
    fn exec(&self, sandbox: &Instance<'_>, req: &ExecRequest) -> Result<Outcome, RunError> {
        self.exec_in(sandbox.dir, sandbox.name, req)
    }
    fn hotplug(
        &self,
        sandbox: &Instance<'_>,
        _change: &container::hotplug::Hotplug,
    ) -> Result<(), RunError> {
        Err(RunError::Vm(format!(
            "sandbox {}: a microVM gets no host mounts",
            sandbox.name
        )))
    }
    fn observe(&self, sandbox: &Instance<'_>) -> Observed {
        self.observe_in(sandbox.dir)
    }
    /// The VM's usage is its QEMU's: the cgroup of QEMU's container (`NAME.ID`, as a
    /// container sandbox's) holds the guest's memory, its vCPU threads and QEMU itself.
    fn stats(&self, sandbox: &Instance<'_>) -> Option<Usage> {
        let dirs = Container::cgroup_dirs(sandbox);
        let mut u = usage_of(&dirs);
        if u.cpu_usec.is_none() {
            // No CPU accounting hierarchy for it (cgroup v1 without a --cpus limit): the CPU
            // time of the processes in its cgroup, and of their reaped children.
            u.cpu_usec = procs_cpu_usec(&dirs);
        }
        Some(u)
    }
    fn reclaim(&self, sandbox: &Instance<'_>) {
        if let Some(id) = sandbox.id {
            Layout::detect().reclaim(&crate::cgroup::leaf_name(sandbox.name, id));
        }
        self.reclaim_in(sandbox.dir);
        reclaim_runs(sandbox);
    }
    fn destroy(&self, sandbox: &Instance<'_>) {
        if let Some(id) = sandbox.id {
            Layout::detect().reclaim(&crate::cgroup::leaf_name(sandbox.name, id));
        }
        self.reclaim_in(sandbox.dir);
        let _ = std::fs::remove_file(sandbox.dir.join(crate::microvm::JOB_FILE));
        reclaim_runs(sandbox);
    }
}

/// A named microVM's supervisor holds its boot's run directory (`STATE/runs/NAME.vm`, with the
/// guest's writable disk) and removes it when it ends; one killed (`rm -f`, a crash) cannot.
/// Its sandbox's teardown reclaims run directories whose owner is gone, as every `run` does
/// (`rundir::gc`: only those nobody holds the lock of).
/// A warm pool member's folder is `STATE/pool/members/NAME`, and its run directories are
/// the state directory's too.
fn reclaim_runs(sandbox: &Instance<'_>) {
    let Some(parent) = sandbox.dir.parent() else {
        return;
    };
    let state = if parent.ends_with("pool/members") {
        parent.parent().and_then(Path::parent)
    } else {
        parent.parent()
    };
    let Some(state) = state else {
        return;
    };
    // A named sandbox that adopted a warm member runs QEMU in run directories named after
    // that member (`run-XXXXXXXX.vm`): any microVM run directory is a reason to look.
    let runs = state.join("runs");
    let vm_runs = runs.join(format!("{}.vm", sandbox.name)).exists()
        || std::fs::read_dir(&runs).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".vm"))
        });
    if vm_runs {
        container::rundir::gc(state, Layout::detect);
    }
}

/// Every isolation backend of this build, chosen at run time from the spec's `backend`.
// The Fake (tests only) is the large one; one backend value lives per command.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum AnyBackend {
    Container(Container),
    MicroVm(MicroVm),
    Fake(Fake),
}

impl AnyBackend {
    /// The backend for a spec's `backend` (the planner has refused the ones this build lacks).
    pub fn for_kind(kind: airlock_model::policy::BackendKind) -> Option<AnyBackend> {
        match kind {
            airlock_model::policy::BackendKind::Container => Some(AnyBackend::Container(Container)),
            airlock_model::policy::BackendKind::Microvm => {
                Some(AnyBackend::MicroVm(MicroVm::default()))
            }
        }
    }
    /// The backend for a spec, with what it chose for it (the microVM's guest kernel).
    pub fn for_run(spec: &airlock_model::spec::RunSpec) -> Option<AnyBackend> {
        match AnyBackend::for_kind(spec.backend)? {
            AnyBackend::MicroVm(_) => Some(AnyBackend::MicroVm(MicroVm {
                kernel: spec.kernel.clone(),
                image_root: spec.rootfs != airlock_model::spec::RootFs::Host,
            })),
            other => Some(other),
        }
    }
    /// The backend a stored spec (`spec.json` of a named sandbox) names in `backend` — the
    /// container when the field is absent (specs written before it existed) or unreadable.
    pub fn for_spec(json: &[u8]) -> Result<AnyBackend, String> {
        #[derive(serde::Deserialize)]
        struct Named {
            #[serde(default)]
            backend: airlock_model::policy::BackendKind,
        }
        let kind = serde_json::from_slice::<Named>(json)
            .map(|n| n.backend)
            .unwrap_or_default();
        AnyBackend::for_kind(kind)
            .ok_or_else(|| format!("the {kind} backend is not available in this build"))
    }
    fn inner(&self) -> &dyn Isolation {
        match self {
            AnyBackend::Container(c) => c,
            AnyBackend::MicroVm(m) => m,
            AnyBackend::Fake(f) => f,
        }
    }
}

impl Isolation for AnyBackend {
    fn check(&self, project_dir: &Path, layout: &Layout) -> HostFacts {
        self.inner().check(project_dir, layout)
    }
    fn start(&self, plan: &Plan, opts: &RunOptions<'_>) -> Result<Outcome, RunError> {
        self.inner().start(plan, opts)
    }
    fn exec(&self, sandbox: &Instance<'_>, req: &ExecRequest) -> Result<Outcome, RunError> {
        self.inner().exec(sandbox, req)
    }
    fn hotplug(
        &self,
        sandbox: &Instance<'_>,
        change: &container::hotplug::Hotplug,
    ) -> Result<(), RunError> {
        self.inner().hotplug(sandbox, change)
    }
    fn observe(&self, sandbox: &Instance<'_>) -> Observed {
        self.inner().observe(sandbox)
    }
    fn stats(&self, sandbox: &Instance<'_>) -> Option<Usage> {
        self.inner().stats(sandbox)
    }
    fn reclaim(&self, sandbox: &Instance<'_>) {
        self.inner().reclaim(sandbox)
    }
    fn destroy(&self, sandbox: &Instance<'_>) {
        self.inner().destroy(sandbox)
    }
}

#[cfg(test)]
mod tests;
