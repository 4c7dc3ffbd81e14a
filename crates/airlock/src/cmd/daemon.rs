//! `airlock daemon start|stop|status|prewarm` and the daemon itself (`__daemon`), and the claim
//! side of `run` ([`try_warm`]). The pool's records and the daemon's loop are
//! `airlock_engine::pool`; docs/design/warm-pool.md.

use crate::cli::{DaemonCommand, PoolArgs, RunArgs};
use crate::error::{CliError, CliResult};
use airlock_engine::live_policy::ClaimedAs;
use airlock_engine::pool;
use airlock_engine::supervisor::{self, SupervisorBackend};
use airlock_engine::{paths, Store, StoreError};
use airlock_model::exit;
use airlock_model::plan::LaunchPlan;
use airlock_model::policy::{BackendKind, Profile, WorkspaceMode};
use airlock_sandbox::cgroup::Layout;
use airlock_sandbox::container::attach;
use airlock_sandbox::isolation::{Ending, ExecRequest};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The default size of a pool nobody gave one.
pub const DEFAULT_SIZE: u32 = 2;

fn store_err(e: StoreError) -> CliError {
    let hint = e.hint();
    CliError::new(exit::SANDBOX_FAILED, e).maybe_hint(hint)
}

fn open_store(state: &Path) -> CliResult<Store> {
    std::fs::create_dir_all(state).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    Store::open(state.join("store.db"))
        .and_then(Store::for_pool)
        .map_err(store_err)
}

/// A claimer's pool records: the store, opened only when something needs it — a claim the
/// daemon answered and a release handed to the daemon need none.
pub(super) struct Records {
    state: PathBuf,
    store: Option<Store>,
}

impl Records {
    fn new(state: &Path) -> Records {
        Records {
            state: state.to_path_buf(),
            store: None,
        }
    }

    /// The store, opened now if it was not yet.
    pub(super) fn get(&mut self) -> CliResult<&mut Store> {
        if self.store.is_none() {
            self.store = Some(open_store(&self.state)?);
        }
        Ok(self.store.as_mut().expect("opened above"))
    }
}

fn exe() -> CliResult<PathBuf> {
    std::env::current_exe().map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))
}

pub fn dispatch(
    c: DaemonCommand,
    global_config: Option<&Path>,
    no_user_config: bool,
) -> CliResult<i32> {
    match c {
        DaemonCommand::Start(a) | DaemonCommand::Prewarm(a) => {
            start(&a, global_config, no_user_config)
        }
        DaemonCommand::Stop(a) => stop(a.json),
        DaemonCommand::Status(a) => status(a.json),
    }
}

/// The member spec of a pool from `run`'s options: what `run` with them would make,
/// persistent (PID 1 waits), with nothing a claim binds (environment, secrets).
fn member_spec(
    a: &PoolArgs,
    global_config: Option<&Path>,
    no_user_config: bool,
) -> CliResult<(airlock_model::spec::RunSpec, u32)> {
    let mut policy = a.policy.clone();
    // `--workspace clone`: members for named microVM sandboxes with a clone workspace (a
    // writable slot their image goes into); built as `none`, then made a clone's.
    // No `--workspace`: members for the runs `airlock run` with these options makes here (the
    // configuration's workspace mode, an overlay by default).
    if policy.workspace.is_none() {
        let mode = super::spec::run_workspace_mode(&policy, global_config, no_user_config)?;
        policy.workspace = Some(
            if mode == WorkspaceMode::None {
                "none"
            } else {
                "overlay"
            }
            .into(),
        );
    }
    let clone = policy.workspace.as_deref() == Some("clone");
    // `--workspace overlay`: the claim attaches each run's own project, so the directory the
    // pool is made in is not a workspace (`/` or $HOME are fine): built as `none`, then made
    // an overlay's.
    let overlay = policy.workspace.as_deref() == Some("overlay");
    match policy.workspace.as_deref() {
        None => policy.workspace = Some("none".into()),
        Some("none" | "bind") => {}
        Some("clone" | "overlay") => policy.workspace = Some("none".into()),
        Some(other) => {
            return Err(CliError::usage(format!(
                "--workspace {other}: a pool's members are claimed by runs (none, overlay or bind) or named microVM clones (clone)"
            ))
            .hint("--workspace overlay (the default) serves runs with an overlay or bind workspace, --workspace none runs without one"))
        }
    }
    let ra = RunArgs {
        policy,
        keep: false,
        name: Some("pool-member".into()),
        workdir: None,
        timeout: None,
        tty: false,
        net_log: None,
        interactive: false,
        cmd: vec![],
    };
    let mut built = super::spec::build(&ra, global_config, no_user_config, true)?;
    if clone {
        if built.spec.backend != BackendKind::Microvm {
            return Err(CliError::usage(
                "--workspace clone: only a microVM pool has members for clone workspaces",
            )
            .hint(
                "a container pool made with --workspace overlay serves named sandboxes' clones",
            ));
        }
        built.spec.workspace = WorkspaceMode::Clone;
    }
    if overlay {
        built.spec.workspace = WorkspaceMode::Overlay;
    }
    // A microVM member takes an overlay workspace at claim (its slot disk); nothing else.
    if built.spec.backend == BackendKind::Microvm
        && !matches!(
            built.spec.workspace,
            WorkspaceMode::None | WorkspaceMode::Overlay | WorkspaceMode::Clone
        )
    {
        return Err(CliError::usage(
            "a microVM pool's members take an overlay or a named sandbox's clone workspace at claim, no other kind",
        )
        .hint("--workspace overlay, clone (or none)"));
    }
    if built.spec.backend == BackendKind::Microvm {
        super::vm_member::check_backend(&built.spec)?;
    }
    Ok((member_of(&built.spec), built.pool_size))
}

/// A member spec for runs like `spec`: persistent (PID 1 waits), and nothing a claim binds —
/// the claimer's `run` resolves those. Secret values never wait in a member.
pub(super) fn member_of(spec: &airlock_model::spec::RunSpec) -> airlock_model::spec::RunSpec {
    let mut m = spec.clone();
    m.persistent = true;
    m.argv.clear();
    m.env.clear();
    m.secrets.clear();
    m.timeout = None;
    m.stdio = airlock_model::spec::Stdio::Inherit {
        forward_stdin: false,
    };
    m.workdir = None;
    m.setup.clear();
    m.agent = None;
    m.agent_grace = None;
    m.agent_min_warm = 0;
    // An overlay or bind workspace and the limits are the claim's (an empty /workspace here).
    pool::normalize_bound_at_claim(&mut m);
    if m.workspace_slot {
        m.project_dir = PathBuf::from("/");
    }
    m
}

/// At most this many pools are made on demand (`[pool] size`); `daemon start` adds more.
const MAX_AUTO_POOLS: usize = 4;

/// `[pool] size` and no pool for this run's kind: make one (and start the daemon). This run
/// starts cold; the next ones like it are warm.
fn auto_pool(spec: &airlock_model::spec::RunSpec, size: u32, state: &Path, key: &str) {
    let member = member_of(spec);
    if pool::key(&member) != key {
        return;
    }
    let made = (|| -> CliResult<()> {
        let mut store = open_store(state)?;
        if store.pools().map_err(store_err)?.len() >= MAX_AUTO_POOLS {
            return Ok(());
        }
        let json =
            serde_json::to_string(&member).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
        store.pool_define(key, &json, size).map_err(store_err)?;
        ensure_daemon(state)?;
        pool::wake(state);
        errln!(
            "airlock: cold start; warm pool {} started ([pool] size = {size}): runs like this one are warm from now on",
            &key[..8]
        );
        Ok(())
    })();
    if let Err(e) = made {
        errln!("airlock: warning: no warm pool: {:#}", e.error);
    }
}

/// Which agent each pool made for `[daemon.agents.NAME] min_warm` serves (key -> NAME), for
/// `daemon status`: `STATE/pool/agents.json`.
const AGENTS_FILE: &str = "agents.json";

fn agent_pools(state: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read(pool::dir(state).join(AGENTS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// `[daemon.agents.NAME] min_warm = N` and an agent start with spec `spec` (its member spec
/// `member`, key `key`): the pool for it holds at least N members (made, or raised), and the
/// daemon runs. Said on stderr; a failure is a warning (the pool is an optimisation).
pub(super) fn agent_pool(
    member: &airlock_model::spec::RunSpec,
    agent: &str,
    size: u32,
    state: &Path,
    key: &str,
) -> bool {
    if pool::key(member) != key {
        return false;
    }
    let made = (|| -> CliResult<bool> {
        let mut store = open_store(state)?;
        let have = store
            .pools()
            .map_err(store_err)?
            .into_iter()
            .find(|p| p.key == key)
            .map(|p| p.size);
        if have.is_some_and(|n| n >= size) {
            return Ok(false);
        }
        let json =
            serde_json::to_string(member).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
        store.pool_define(key, &json, size).map_err(store_err)?;
        let _ = std::fs::create_dir_all(pool::dir(state));
        let mut agents = agent_pools(state);
        agents.insert(key.to_string(), agent.to_string());
        let _ = airlock_engine::engine::write_atomic(
            &pool::dir(state).join(AGENTS_FILE),
            serde_json::to_string(&agents)
                .unwrap_or_default()
                .as_bytes(),
        );
        ensure_daemon(state)?;
        pool::wake(state);
        Ok(true)
    })();
    match made {
        Ok(made) => made,
        Err(e) => {
            errln!(
                "airlock: warning: no warm pool for {agent} agents: {:#}",
                e.error
            );
            false
        }
    }
}

fn start(a: &PoolArgs, global_config: Option<&Path>, no_user_config: bool) -> CliResult<i32> {
    let state = paths::state_dir();
    let mut store = open_store(&state)?;
    let key = match &a.pool {
        Some(k) => {
            let pools = store.pools().map_err(store_err)?;
            let p = pools
                .iter()
                .find(|p| p.key == *k || (k.len() >= 8 && p.key.starts_with(k.as_str())))
                .ok_or_else(|| {
                    CliError::new(exit::NOT_FOUND, anyhow::anyhow!("no pool {k}"))
                        .hint("airlock daemon status lists the pools")
                })?;
            let size = a.size.unwrap_or(p.size);
            store
                .pool_define(&p.key, &p.spec_json, size)
                .map_err(store_err)?;
            p.key.clone()
        }
        None => {
            let (spec, configured) = member_spec(a, global_config, no_user_config)?;
            let key = pool::key(&spec);
            let json =
                serde_json::to_string(&spec).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
            store
                .pool_define(
                    &key,
                    &json,
                    a.size.unwrap_or(if configured > 0 {
                        configured
                    } else {
                        DEFAULT_SIZE
                    }),
                )
                .map_err(store_err)?;
            key
        }
    };
    let pid = ensure_daemon(&state)?;
    pool::wake(&state);
    if a.wait {
        wait_full(&mut store, &state)?;
    }
    if a.json {
        outln!(
            "{}",
            serde_json::json!({"pid": pid, "pool": key, "pools": pool::status(&mut store, &state).map_err(store_err)?})
        );
    } else {
        errln!("airlock: daemon running (pid {pid}); pool {}", &key[..8]);
    }
    Ok(0)
}

/// Start the daemon unless one runs; its pid.
fn ensure_daemon(state: &Path) -> CliResult<i32> {
    if let Some(pid) = pool::daemon_pid(state) {
        return Ok(pid);
    }
    let pdir = pool::dir(state);
    std::fs::create_dir_all(&pdir).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(pdir.join(pool::DAEMON_LOG))
        .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    let mut cmd = Command::new(exe()?);
    cmd.env_clear()
        .envs(airlock_engine::client::daemon_env())
        .arg("__daemon")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: setsid() is async-signal-safe; the daemon must not share our session.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        CliError::new(
            exit::BACKEND_UNAVAILABLE,
            anyhow::anyhow!("start the daemon: {e}"),
        )
    })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = pool::daemon_pid(state) {
            // It runs on, detached; a thread would outlive nothing here, so leave the zombie
            // to init when we exit.
            std::mem::forget(child);
            return Ok(pid);
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Its own last words (its log is shared with earlier daemons: the last line).
            let said = std::fs::read_to_string(pdir.join(pool::DAEMON_LOG))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .map(str::to_owned)
                })
                .map(|l| format!(": {}", airlock_model::text::shown(l.trim())))
                .unwrap_or_default();
            return Err(CliError::new(
                exit::BACKEND_UNAVAILABLE,
                anyhow::anyhow!("the daemon exited at start ({status}){said}"),
            )
            .hint(format!(
                "its log: {}",
                pdir.join(pool::DAEMON_LOG).display()
            )));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(CliError::new(
                exit::BACKEND_UNAVAILABLE,
                anyhow::anyhow!("the daemon did not come up in 10 s"),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_full(store: &mut Store, state: &Path) -> CliResult<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = pool::status(store, state).map_err(store_err)?;
        if st.iter().all(|p| p.ready >= p.size) {
            return Ok(());
        }
        if !pool::daemon_running(state) {
            return Err(CliError::new(
                exit::BACKEND_UNAVAILABLE,
                anyhow::anyhow!("the daemon stopped before the pools were full"),
            ));
        }
        if Instant::now() > deadline {
            return Err(CliError::new(
                exit::TIMEOUT,
                anyhow::anyhow!("the pools are not full after 120 s"),
            )
            .hint(format!(
                "the daemon's log: {}",
                pool::dir(state).join(pool::DAEMON_LOG).display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(json: bool) -> CliResult<i32> {
    let state = paths::state_dir();
    let was = pool::daemon_pid(&state);
    if let Some(pid) = was {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while pool::daemon_running(&state) {
            if Instant::now() > deadline {
                return Err(CliError::new(
                    exit::CONFLICT,
                    anyhow::anyhow!("the daemon (pid {pid}) did not stop in 60 s"),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // What a daemon killed outright left: the same drain, from here.
    let mut store = open_store(&state)?;
    let backend = SupervisorBackend { exe: exe()? };
    pool::drain(&mut store, &backend, &state);
    let left = store.members().map_err(store_err)?.len();
    if json {
        outln!(
            "{}",
            serde_json::json!({"stopped": was, "claimed_left": left})
        );
    } else {
        match was {
            Some(pid) => errln!("airlock: daemon {pid} stopped"),
            None => errln!("airlock: no daemon was running"),
        }
        if left > 0 {
            errln!("airlock: {left} claimed sandbox(es) run on until their commands end");
        }
    }
    Ok(0)
}

fn us(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2} ms", v as f64 / 1000.0))
}

/// `airlock doctor`'s row for the warm pool: whether a daemon keeps pools here (their members
/// ready, hits and misses), else how to get one. Reads the store only when it exists (a
/// doctor on a fresh machine creates nothing). Degraded when pools are recorded but no
/// daemon refills them.
pub fn doctor_row() -> airlock_sandbox::hostcaps::Row {
    use airlock_sandbox::hostcaps::{Row, Status};
    let state = paths::state_dir();
    let row = |status, detail: String, fix: Option<&str>| {
        Row {
        id: "pool".into(),
        name: "warm pool".into(),
        status,
        detail,
        fix: fix.map(Into::into),
        needed_for: "warm starts: `airlock run` and named sandboxes claiming a pre-started sandbox in milliseconds".into(),
    }
    };
    let pid = pool::daemon_pid(&state);
    let db = state.join("store.db");
    let pools = if db.exists() {
        Store::open(&db)
            .map_err(|e| e.to_string())
            .and_then(|mut st| pool::status(&mut st, &state).map_err(|e| e.to_string()))
    } else {
        Ok(Vec::new())
    };
    let pools = match pools {
        Ok(p) => p,
        Err(e) => {
            return row(
                Status::Degraded,
                format!(
                    "the pool records in {} cannot be read: {e}; runs start cold",
                    db.display()
                ),
                Some("airlock daemon stop; airlock daemon start"),
            )
        }
    };
    let each: Vec<String> = pools
        .iter()
        .map(|p| {
            format!(
                "pool {} ({}): {}/{} ready, {} hits, {} misses",
                &p.key[..8.min(p.key.len())],
                p.label,
                p.ready,
                p.size,
                p.hits,
                p.misses
            )
        })
        .collect();
    match (pid, pools.is_empty()) {
        (Some(pid), _) => row(
            Status::Ok,
            format!(
                "daemon running (pid {pid}); {} pool(s){}{}",
                pools.len(),
                if each.is_empty() { "" } else { ": " },
                each.join("; ")
            ),
            None,
        ),
        (None, true) => row(
            Status::Ok,
            "no daemon: runs start cold (`airlock daemon start` keeps pre-started sandboxes for runs like `airlock run` with the same options; `[pool] size = N` starts one on the first run)".into(),
            None,
        ),
        (None, false) => row(
            Status::Degraded,
            format!(
                "pools recorded but no daemon refills them (it was killed?): {}",
                each.join("; ")
            ),
            Some("airlock daemon start (adopts the members still running and refills)"),
        ),
    }
}

fn status(json: bool) -> CliResult<i32> {
    let state = paths::state_dir();
    let pid = pool::daemon_pid(&state);
    let mut store = open_store(&state)?;
    let pools = pool::status(&mut store, &state).map_err(store_err)?;
    let agents = agent_pools(&state);
    let agent_of = |key: &str| agents.get(key).cloned();
    if json {
        let mut list =
            serde_json::to_value(&pools).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
        for p in list.as_array_mut().into_iter().flatten() {
            let a = p["key"].as_str().and_then(agent_of);
            p["agent"] = a.map_or(serde_json::Value::Null, Into::into);
        }
        outln!(
            "{}",
            serde_json::json!({"running": pid.is_some(), "pid": pid, "pools": list})
        );
        return Ok(0);
    }
    match pid {
        Some(p) => outln!("daemon: running (pid {p})"),
        None => outln!("daemon: not running"),
    }
    for p in &pools {
        let label = match agent_of(&p.key) {
            Some(a) => format!("{}  (agent {a}: [daemon.agents.{a}] min_warm)", p.label),
            None => p.label.clone(),
        };
        outln!(
            "pool {}  {}\n  size {}  ready {}  warming {}  claimed {}  hits {}  misses {}  claim p50 {}  p95 {}  p99 {}",
            &p.key[..8],
            label,
            p.size,
            p.ready,
            p.warming,
            p.claimed,
            p.hits,
            p.misses,
            us(p.claim_p50_us),
            us(p.claim_p95_us),
            us(p.claim_p99_us)
        );
        if let Some(project) = &p.primed {
            outln!(
                "  new members primed with the workspace of {}",
                project.display()
            );
        }
    }
    Ok(0)
}

/// `airlock __daemon`: the daemon's loop until SIGTERM.
pub fn serve() -> CliResult<i32> {
    let state = paths::state_dir();
    pool::serve(&state, exe()?, || {
        errln!("airlock daemon: pid {} serving", std::process::id());
    })
    .map_err(|e| CliError::new(exit::CONFLICT, anyhow::anyhow!(e)))?;
    errln!("airlock daemon: stopped");
    Ok(0)
}

/// The limits a claim puts on its member (a cgroup made for the claim, as a cold run's): None
/// when the run must start cold so that it warns or refuses exactly as a cold start does (a
/// limit it asked for that this host cannot enforce).
pub(super) fn claim_limits(
    spec: &airlock_model::spec::RunSpec,
) -> Option<(Layout, airlock_model::spec::Resources)> {
    let mut r = spec.resources;
    if r.memory.is_none() && r.pids.is_none() && r.cpus.is_none() {
        return Some((Layout::None, r));
    }
    let layout = pool::published_layout(&paths::state_dir()).unwrap_or_else(Layout::detect);
    let support = layout.support();
    if r.memory.is_some() && !support.memory {
        if !spec.defaulted.memory {
            return None;
        }
        r.memory = None;
    }
    if r.cpus.is_some() && !support.cpu {
        return None;
    }
    Some((layout, r))
}

/// `run` through a warm member when a pool matches its spec; None: start it cold (no pool,
/// the pool is empty, or the run asks for something a claim cannot bind yet).
pub fn try_warm(
    b: &super::spec::Built,
    tty: bool,
    timeout_text: Option<&str>,
    net_log: Option<&Path>,
) -> CliResult<Option<i32>> {
    let spec = &b.spec;
    let state = paths::state_dir();
    // Bound at claim: command, environment, working directory, terminal, time limit,
    // secrets (plain and injected), allowlist, the egress journal (`--net-log`, denials said),
    // an overlay or bind workspace, limits. The rest starts cold (docs/design/warm-pool.md).
    if spec.backend != BackendKind::Container {
        return Ok(None);
    }
    match spec.workspace {
        WorkspaceMode::None | WorkspaceMode::Overlay => {}
        // A cold start refuses a bind workspace under the restrictive profile.
        WorkspaceMode::Bind if spec.profile != Profile::Restrictive => {}
        _ => return Ok(None),
    }
    let rootless = !nix::unistd::geteuid().is_root();
    let (ws_steps, ws_writable) = airlock_model::plan::workspace_steps(
        spec,
        rootless,
        airlock_sandbox::kernel::at_least(6, 6),
    );
    if !attach::claimable(&ws_steps) {
        return Ok(None);
    }
    let Some((layout, limits)) = claim_limits(spec) else {
        return Ok(None);
    };
    // `--ro`/`--rw`/`[mounts]`: their destinations refused as a cold start refuses them (the
    // sources were checked when the spec was built), bound in the member at claim.
    let (own_steps, own_writable) = claim_binds(spec, rootless)?;
    // `[home_files]`: staged as a cold start stages them (same copies, owners, refusals),
    // bound over the member's home at claim.
    let (home_steps, _staging) = claim_home_files(spec, None, rootless)?;
    // Injected secrets: refused as a cold start refuses them; placeholders made here, the
    // values and the interception CA go to the member's supervisor at claim.
    let secrets = super::secrets::claim_bind(spec, super::spec::resolve_secrets(&spec.secrets)?)?;
    // The run's egress journal, as a cold start opens it (`--net-log` refused the same way):
    // the member's supervisor sends the claim's events to it.
    let mut journal = Some(airlock_sandbox::container::net_journal(net_log, None)?);
    airlock_sandbox::phase("warm: claiming");
    let t0 = Instant::now();
    let key = pool::key(spec);
    airlock_sandbox::phase("warm: pool key");
    // The pool is an optimisation: when its records cannot be read, the run starts cold.
    let Some((mut store, member)) = claim_or_cold(&state, &key, spec, b.pool_size) else {
        return Ok(None);
    };
    let claimed_in = t0.elapsed();
    airlock_sandbox::phase("warm: claimed");
    // The daemon is woken when this run ends (`release`): a member's start costs CPU this run
    // would share on a small machine. A long run's pool is refilled by the daemon's own pass
    // (every half second) meanwhile.
    let dir = pool::member_dir(&state, &member.name);
    let mut cgroup = None;
    let mut watch = None;
    // The command: its environment (the secrets' placeholders, the CA variables when it
    // injects) and working directory, as a cold start gives them.
    let mut env = airlock_model::spec::env_over(&spec.env, &secrets.seen);
    if !secrets.bindings.is_empty() {
        airlock_model::plan::set_ca_bundle_vars(&mut env);
    }
    let cwd = spec.workdir.clone().unwrap_or_else(|| {
        if spec.workspace == WorkspaceMode::None {
            PathBuf::from(spec.user.home())
        } else {
            PathBuf::from(WORKSPACE)
        }
    });
    let req = ExecRequest {
        argv: spec.argv.clone(),
        env,
        cwd: Some(cwd),
        tty,
        forward_stdin: b.forward_stdin,
        with_secrets: false,
        timeout: b.timeout,
    };
    // Nothing to read back from the member after the command (no egress events to sync from
    // its supervisor — a filtered claim's watch —, no terminal to drain): the stub ends it as
    // soon as the status is out, and its teardown overlaps this process's reading of it.
    let end_at_exit = spec.net != airlock_model::policy::NetMode::Filtered && !tty;
    // The command to the member's exec stub, sent first (over the member's plan, which the
    // stub has): the stub and its parked child take it while the claim is bound below, and
    // the command starts at the go, once it is. Landlock lets it write where its `--rw` binds
    // are, as a cold plan's.
    let mounts = claim_mounts(spec, &ws_steps, &own_steps, &home_steps);
    let claimed = airlock_sandbox::container::stub::Claimed {
        req: req.clone(),
        writable: own_writable.clone(),
        rlimit_nproc: limits.pids,
        end_at_exit,
        mounted: !mounts.steps.is_empty(),
        // Root-run: through the workspace helper the member's stub parked.
        attach: !mounts.steps.is_empty() && !rootless,
    };
    let mut begun = None;
    let bound = (|| -> Result<(LaunchPlan, attach::Attached), String> {
        // The claim's policy goes to the member's supervisor first (it needs nothing of the
        // member's plan), and is answered once the rest is bound: its binding, the longest
        // of the claim's (its thread's wake-up, the allowlist, the events' tap), runs on the
        // other CPU while this process binds the rest.
        let pending = begin_policy(&dir, spec, &secrets, ClaimedAs::Run, journal.take())?;
        airlock_sandbox::phase("warm: policy sent");
        // A root-run claim of the primed workspace sends the helper's job right behind the
        // request: the helper takes its overlay while the claim is bound.
        let ahead = claimed
            .attach
            .then(|| attach::AheadJob::of(&mounts))
            .flatten();
        begun = airlock_sandbox::container::stub::begin_claimed(&dir, &claimed, ahead)
            .map_err(|e| e.to_string())?;
        // The member's namespaces for the workspace, asked for now: its supervisor sends them
        // while the claim's limits and policy are bound.
        let parked_helper = begun.as_ref().is_some_and(|b| b.offers_workspace_helper());
        let asked = (!mounts.steps.is_empty() && !parked_helper)
            .then(|| airlock_sandbox::container::exec::ask_namespaces(&dir));
        let mut plan = airlock_sandbox::folder::read_plan(&dir)
            .map_err(|e| format!("the member's plan: {e}"))?;
        airlock_sandbox::phase("warm: plan read");
        plan.rlimit_nproc = limits.pids;
        // A chosen hostname (a random `run-…` one is as good as the member's): UTS name,
        // /etc/hostname and /etc/hosts, as the cold start's.
        if b.hostname_chosen && spec.hostname != plan.hostname {
            attach::set_hostname(&dir, &plan, &spec.hostname).map_err(|e| e.to_string())?;
            plan.hostname = spec.hostname.clone();
            airlock_sandbox::phase("warm: hostname set");
        }
        // The workspace: attached at the member's empty /workspace, protections over it,
        // then the home files in the member's home — by the member's parked helper while
        // the limits below are written (answered after them).
        if !ws_steps.is_empty() && !plan.writable_paths.iter().any(|p| ws_writable.contains(p)) {
            return Err("the member has no workspace slot".into());
        }
        let attaching = if mounts.steps.is_empty() {
            None
        } else {
            let helper = begun.as_mut().and_then(|b| b.workspace_helper());
            Some(
                attach::attach_workspace(&dir, &plan, &mounts, None, asked, helper)
                    .map_err(|e| e.to_string())?,
            )
        };
        // Limits: written into the cgroup of the member's name, which its exec stub is in
        // since the member's start (made now for a member without one).
        if limits.any() {
            let leaf = airlock_sandbox::cgroup::leaf_name(&plan.name, &member.id);
            // The member's own layout: the claimer's cgroup (hence its parent directories)
            // may not be the daemon's, and the stub is in the member's.
            let layout = airlock_sandbox::container::stub::member_layout(&dir)
                .unwrap_or_else(|| layout.clone());
            cgroup = airlock_sandbox::cgroup::Cgroup::bind(&layout, &leaf, &limits)
                .map_err(|e| format!("the claim's cgroup: {e}"))?;
            plan.limits = limits;
            airlock_sandbox::phase("warm: cgroup made");
        }
        let attached = match attaching {
            None => attach::Attached::default(),
            Some(pending) => {
                let a = pending.finish().map_err(|e| e.to_string())?;
                airlock_sandbox::phase("warm: workspace attached");
                // Its member was not primed with this workspace: the pool's next ones are.
                if let Some(p) = a.prime_wanted() {
                    let set = serde_json::to_vec(p)
                        .map_err(|e| e.to_string())
                        .and_then(|json| pool::set_prime(&state, &key, &json));
                    if let Err(e) = set {
                        errln!("airlock: warning: the pool's workspace to prime: {e}");
                    }
                }
                a
            }
        };
        watch = finish_policy_and_secrets(&dir, &secrets, pending)?;
        airlock_sandbox::phase("warm: policy and secrets bound");
        plan.writable_paths.extend(own_writable.iter().cloned());
        Ok((plan, attached))
    })();
    let (plan, attached) = match bound {
        Ok(b) => b,
        Err(e) => {
            // Its command never starts (the go pipe closes), and the member goes.
            drop(begun);
            release(&mut store, &state, &member, &dir, None);
            if let Some(cg) = cgroup {
                cg.destroy();
            }
            if let Some(refusal) = source_changed(&e) {
                return Err(refusal);
            }
            errln!("airlock: warning: the warm member refused this run, starting cold: {e}");
            return Ok(None);
        }
    };
    let wayback = super::wayback::wayback_before(spec);
    errln!(
        "airlock: warm start (pool {}, {}, claimed in {:.2} ms, bound in {:.2} ms)",
        &key[..8],
        member.name,
        claimed_in.as_secs_f64() * 1000.0,
        (t0.elapsed() - claimed_in).as_secs_f64() * 1000.0
    );
    // Forked by the member's exec stub, in the cgroup already: no migration on this path
    // (joining a cgroup waits for an RCU grace period on cgroup v1). A member without a stub:
    // exec joins it.
    let mut stub = None;
    // Its egress events, said while it runs: read by this process as it waits for the
    // command (no thread: its start would share the CPUs with the command's, and the last
    // events' sync is then one exchange). A member without a stub: read after the command.
    let ran = match begun {
        Some(b) => b
            .go(
                &plan,
                watch
                    .as_mut()
                    .map(|w| w as &mut dyn airlock_sandbox::container::stub::Side),
            )
            .map(|(o, s)| {
                stub = Some(s);
                o
            }),
        None => {
            let leaf = airlock_sandbox::cgroup::leaf_name(&plan.name, &member.id);
            airlock_sandbox::container::exec::exec(&dir, &plan, Some(&leaf), &req)
        }
    }
    .map_err(CliError::from);
    airlock_sandbox::phase("warm: command ended");
    // The member's end starts now; with a watch, beside its last events' sync (the
    // supervisor answers it before it exits: `live_policy::wait_streams`) — what the command
    // left running makes no connection after it.
    let ending = MemberEnd::kill(&dir);
    if let Some(w) = watch {
        w.finish();
    }
    // Read only for a command the kernel killed: an OOM kill is a SIGKILL.
    let killed = Ending::Exited(exit::SIGNAL_BASE + libc::SIGKILL);
    let oom = matches!(&ran, Ok(o) if o.ending == killed)
        && cgroup.as_ref().is_some_and(|c| c.oom_killed());
    // The member's end first, waited for: what the command left running is gone before
    // anything of the sandbox is read back (the change summary, the way back's checks of a
    // bind workspace) and before this run returns, as a cold run's PID 1 is waited for. With
    // a daemon running, the release is then handed to it (one datagram) once this run's
    // output is done — its supervisor removes the claim's cgroup, and the daemon, once this
    // process has exited, records the release and the hit and removes the member. Without
    // one, or if it does not take the datagram, the release is done here.
    if let Some(e) = ending {
        e.wait();
    }
    airlock_sandbox::phase("warm: member ended");
    let hand = pool::daemon_running(&state);
    // A release done here (no daemon, or one that does not take the datagram); true: a
    // daemon is to be woken for the refill.
    let mut release = |stub: &mut Option<airlock_sandbox::container::stub::StubExit>| {
        release_here(stub, &mut store, &state, &member, &dir, (&key, claimed_in))
    };
    let wake = !hand && release(&mut stub);
    // After the member's end, as a cold run's PID 1 does it once every process is gone.
    // The parked workspace helper's socket is held until this claim returns (the helper
    // exits then, off this run's path).
    let changes = attached.changes();
    let _attached = attached;
    let end = |ran: CliResult<airlock_sandbox::isolation::Outcome>| {
        let mut outcome = ran?;
        if oom && outcome.ending == killed {
            outcome.ending = Ending::OutOfMemory;
        }
        let undone = super::wayback::wayback_after(spec, wayback.as_ref(), None);
        super::wayback::finish(spec, &outcome, changes.as_ref(), undone, timeout_text)
    };
    let me = std::process::id() as i32;
    let micros = claimed_in.as_micros() as u64;
    if hand {
        let ended = end(ran);
        if pool::hand_release(&state, &member.name, me, &key, micros) {
            airlock_sandbox::phase("warm: released (handed to the daemon)");
            return ended.map(Some);
        }
        // Ended above: released here.
        let wake = release(&mut stub);
        release_rest(cgroup, stub, wake, &state);
        return ended.map(Some);
    }
    release_rest(cgroup, stub, wake, &state);
    airlock_sandbox::phase("warm: released");
    end(ran).map(Some)
}

/// The rest of a release done here ([`release_here`]): the claim's cgroup once the stub is
/// gone (it reported the status before it exited), then the refill, last (a member's start
/// would share the CPUs with the steps before it).
fn release_rest(
    cgroup: Option<airlock_sandbox::cgroup::Cgroup>,
    stub: Option<airlock_sandbox::container::stub::StubExit>,
    wake: bool,
    state: &Path,
) {
    if let Some(cg) = cgroup {
        if let Some(s) = stub {
            s.wait(Duration::from_secs(2));
        }
        cg.destroy();
    }
    if wake {
        pool::wake(state);
    }
}

/// The refusal of a claim whose own bind's source (or project) has a symlink in it now, since
/// it was checked: binding it would bind something the checks never saw, so the start is
/// refused (as a cold start refuses it), not started cold. None: `e` is another failure.
pub(super) fn source_changed(e: &str) -> Option<CliError> {
    let e = airlock_sandbox::container::RunError::Setup(e.to_string());
    e.link_refused().then(|| CliError::from(e))
}

/// A claim's own binds (`--ro`/`--rw`/`[mounts]`): their mount steps and the paths they make
/// writable, the cold lowering's (`plan::bind_steps`), after the cold lowering's refusal of
/// their destinations (`plan::check_binds`: the same error and exit code).
pub(super) fn claim_binds(
    spec: &airlock_model::spec::RunSpec,
    rootless: bool,
) -> CliResult<(Vec<airlock_model::plan::MountStep>, Vec<PathBuf>)> {
    airlock_model::plan::check_binds(&spec.binds)?;
    Ok(airlock_model::plan::bind_steps(&spec.binds, rootless))
}

/// What a claim attaches in its member, in the cold lowering's order: `first` (its
/// workspace; a named sandbox's home too), its own binds, its home files; a writable one's
/// idmapping made from the project directory's owner, as a cold start's.
pub(super) fn claim_mounts(
    spec: &airlock_model::spec::RunSpec,
    first: &[airlock_model::plan::MountStep],
    own: &[airlock_model::plan::MountStep],
    home: &[airlock_model::plan::MountStep],
) -> attach::ClaimMounts {
    use airlock_model::plan::MountStep;
    use std::os::unix::fs::MetadataExt;
    let steps: Vec<_> = first.iter().chain(own).chain(home).cloned().collect();
    let owner = std::fs::metadata(&spec.project_dir)
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((0, 0));
    attach::ClaimMounts {
        steps,
        own: first.len()..first.len() + own.len(),
        // The cold plan's: every bind's source (home files' too: they are in a cold spec's
        // binds) and the project.
        sealed: airlock_model::plan::sealed_sources(spec)
            .into_iter()
            .chain(home.iter().filter_map(|s| match s {
                MountStep::BindRo { source, .. } | MountStep::BindRw { source, .. } => {
                    Some(source.clone())
                }
                _ => None,
            }))
            .collect(),
        owner,
    }
}

/// A claim's `[home_files]` (`spec`'s; `persist`: a named sandbox's folder), staged as a cold
/// start stages them: the mount steps that put them in the member's home (none: no home
/// files, nothing done) and the staging folder, kept until the claim ends (a run's is removed
/// then). A refusal is the cold start's error.
pub(super) fn claim_home_files(
    spec: &airlock_model::spec::RunSpec,
    persist: Option<&Path>,
    rootless: bool,
) -> CliResult<(
    Vec<airlock_model::plan::MountStep>,
    Option<airlock_work::home_files::Staging>,
)> {
    if spec.home_files.is_empty() {
        return Ok((Vec::new(), None));
    }
    let mut staged = spec.clone();
    let before = staged.binds.len();
    let staging = super::spec::stage_home_files(
        &mut staged,
        persist,
        &airlock_sandbox::container::rundir::state_dir(),
    )?;
    let (steps, _) = airlock_model::plan::bind_steps(&staged.binds[before..], rootless);
    Ok((steps, staging))
}

/// A claim's allowlist (in force before its command runs, whatever the member had) and
/// secrets, bound in the running member in `dir`: the injected ones' values and CA in its
/// supervisor's egress context (over its policy socket), then `/run/secrets` and the CA
/// bundle inside. Its denials' hints name `claimed_as`. With `journal`, the member's egress
/// events from now on are recorded there (the watch returned: finish it after the command).
/// Err: what the member refused.
pub(super) fn bind_policy_and_secrets(
    dir: &Path,
    spec: &airlock_model::spec::RunSpec,
    secrets: &super::secrets::ClaimBound,
    claimed_as: ClaimedAs,
    journal: Option<airlock_egress::journal::Journal>,
) -> Result<Option<airlock_engine::live_policy::Watch>, String> {
    let pending = begin_policy(dir, spec, secrets, claimed_as, journal)?;
    finish_policy_and_secrets(dir, secrets, pending)
}

/// The second half of [`bind_policy_and_secrets`]: the supervisor's answer to
/// [`begin_policy`]'s request, then the plain secrets written into the member.
pub(super) fn finish_policy_and_secrets(
    dir: &Path,
    secrets: &super::secrets::ClaimBound,
    pending: Option<airlock_engine::live_policy::PendingClaim>,
) -> Result<Option<airlock_engine::live_policy::Watch>, String> {
    let (ca_pem, watch) = policy_answer(pending)?;
    if !secrets.seen.is_empty() {
        airlock_sandbox::container::exec::deliver_secrets(dir, &secrets.seen, ca_pem.as_deref())
            .map_err(|e| format!("the member refused its secrets: {e}"))?;
    }
    Ok(watch)
}

/// A filtered claim's allowlist and injected secrets' bindings, sent to the member's
/// supervisor in one line on its policy socket; the answer is [`policy_answer`]'s (the
/// supervisor binds the claim meanwhile). None: not a filtered claim, nothing to send.
pub(super) fn begin_policy(
    dir: &Path,
    spec: &airlock_model::spec::RunSpec,
    secrets: &super::secrets::ClaimBound,
    claimed_as: ClaimedAs,
    journal: Option<airlock_egress::journal::Journal>,
) -> Result<Option<airlock_engine::live_policy::PendingClaim>, String> {
    if spec.net != airlock_model::policy::NetMode::Filtered {
        return Ok(None);
    }
    airlock_engine::live_policy::begin_claim(
        dir,
        &spec.domains,
        &spec.ports,
        &secrets.bindings,
        secrets.upstream_ca.as_deref(),
        claimed_as,
        journal,
    )
    .map(Some)
    .map_err(policy_refused)
}

/// The answer to [`begin_policy`]'s request: the claim's CA certificate when it injects, and
/// the watch of its egress events when given a journal.
pub(super) fn policy_answer(
    pending: Option<airlock_engine::live_policy::PendingClaim>,
) -> Result<(Option<String>, Option<airlock_engine::live_policy::Watch>), String> {
    match pending {
        None => Ok((None, None)),
        Some(p) => p.finish().map_err(policy_refused),
    }
}

fn policy_refused(e: impl std::fmt::Display) -> String {
    format!("the member refused the allowlist or injected secrets: {e}")
}

/// Where a claim's workspace is attached (the plan's `/workspace`).
const WORKSPACE: &str = "/workspace";

/// [`claim`], with a pool whose records cannot be read as no pool (a warning; the run starts
/// cold: the pool is an optimisation).
pub(super) fn claim_or_cold(
    state: &Path,
    key: &str,
    spec: &airlock_model::spec::RunSpec,
    pool_size: u32,
) -> Option<(Records, pool::Member)> {
    claim(state, key, spec, pool_size).unwrap_or_else(|e| {
        errln!(
            "airlock: warning: warm pool unavailable, starting cold: {:#}",
            e.error
        );
        None
    })
}

/// The claim: a ready, live member of pool `key` for this process (None: start cold — no pool,
/// made one now with `[pool] size`, or the pool is empty). Its ready marker renamed to this
/// process's claimed one (`pool::take`): no store, daemon or socket on the way; the store is
/// told at the release (or by the daemon's next pass).
fn claim(
    state: &Path,
    key: &str,
    spec: &airlock_model::spec::RunSpec,
    pool_size: u32,
) -> CliResult<Option<(Records, pool::Member)>> {
    let mut records = Records::new(state);
    let (me, me_start) = pool::me();
    for _ in 0..3 {
        let name = match pool::take(state, key, me, me_start) {
            Ok(Some(name)) => name,
            Ok(None) => {
                missed(&mut records, state, key);
                return Ok(None);
            }
            // No member of this pool was ever made ready here: is there such a pool?
            Err(_) => {
                if records.get()?.pool_exists(key).map_err(store_err)? {
                    missed(&mut records, state, key);
                } else if pool_size > 0 {
                    drop(records);
                    auto_pool(spec, pool_size, state, key);
                } else if let Ok(store) = records.get() {
                    say_no_pool_matches(store, spec);
                }
                return Ok(None);
            }
        };
        airlock_sandbox::phase("warm: ready marker taken");
        let dir = pool::member_dir(state, &name);
        let m = pool::Member {
            id: airlock_engine::engine::read_id(&dir).unwrap_or_default(),
            name,
            pool: key.to_owned(),
            state: pool::MemberState::Claimed,
            claimer_pid: Some(me),
            claimer_start: Some(me_start),
        };
        let up = !m.id.is_empty()
            && match spec.backend {
                BackendKind::Microvm => super::vm_member::member_up(&dir),
                BackendKind::Container => {
                    supervisor::locked(&dir)
                        && airlock_sandbox::container::exec::pid1(&dir).is_some()
                }
            };
        if up {
            return Ok(Some((records, m)));
        }
        // Died since it was checked: released, for the daemon to remove.
        if let Ok(s) = records.get() {
            let _ = s.claim_record(&m.name, me, me_start);
            let _ = s.member_release(&m.name, me);
        }
    }
    pool::wake(state);
    Ok(None)
}

/// A claim that found pool `key` empty: the miss counted (by the daemon, which refills; else
/// in the store), and said.
fn missed(records: &mut Records, state: &Path, key: &str) {
    if !pool::hand_miss(state, key) {
        if let Ok(s) = records.get() {
            let _ = s.miss(key);
        }
    }
    errln!("airlock: cold start (warm pool {} is empty)", &key[..8]);
}

/// A run that found no pool of its kind while pools exist says so, and where the nearest one
/// differs (the pool that would serve it needs those settings): a cold start is never
/// silent when warm ones were expected. Nothing when there are no pools.
fn say_no_pool_matches(store: &mut Store, spec: &airlock_model::spec::RunSpec) {
    let Ok(pools) = store.pools() else { return };
    let Some((nearest, differ)) = pool::nearest_mismatch(spec, &pools) else {
        return;
    };
    let why = if differ.is_empty() {
        "its guest's boot artifacts (kernel, initramfs, root image)".to_string()
    } else {
        differ.join(", ")
    };
    errln!(
        "airlock: cold start (no warm pool matches this run; the nearest, pool {}, differs in {why})",
        &nearest[..8.min(nearest.len())]
    );
    errln!("hint: `airlock daemon prewarm` with this run's options adds a pool for runs like it");
}

/// A claimed member is never reused: its PID 1 goes now (its supervisor then cleans up and
/// exits), and its record and folder with the daemon — or here when no daemon runs. `done`:
/// the claim was used (a hit, and its latency).
pub(super) fn release(
    store: &mut Records,
    state: &Path,
    member: &pool::Member,
    dir: &Path,
    done: Option<(&str, Duration)>,
) {
    end_member(dir);
    if release_unwoken(store, state, member, dir, done) {
        pool::wake(state);
    }
}

/// A claimed container member's PID 1 killed (its supervisor then cleans up as after any end
/// and exits) and waited for, 2 s at most: a PID namespace's init exits only once every other
/// process in it is gone, so nothing of the member runs after this. (A stub that outlives its
/// claimer — killed mid-command — kills PID 1 itself once the claimer's connection closes.)
fn end_member(dir: &Path) {
    if let Some(e) = MemberEnd::kill(dir) {
        e.wait();
    }
}

/// A claimed member's PID 1, killed ([`end_member`] in two steps).
struct MemberEnd(std::os::fd::OwnedFd);

impl MemberEnd {
    /// Kill it (None: not running, or the kill failed).
    fn kill(dir: &Path) -> Option<Self> {
        use airlock_sandbox::container::exec::{pid1_recorded, proc_starttime};
        use airlock_sandbox::sys;
        let (pid, start) = pid1_recorded(dir)?;
        let fd = sys::pidfd_open(pid).ok()?;
        // The member's PID 1 (not a reused pid) if it still has its start time now that it is
        // held: a pid is reused only after its process is gone, so the process found now had
        // it when the pidfd was opened.
        if proc_starttime(pid) != Some(start) {
            return None;
        }
        sys::pidfd_kill(&fd).ok()?;
        Some(MemberEnd(fd))
    }

    /// Until it has exited, 2 s at most.
    fn wait(self) {
        airlock_sandbox::sys::wait_readable(&self.0, Duration::from_secs(2));
    }
}

/// [`release_unwoken`] of a claimed member whose command ran through its stub (`stub`): the
/// stub is hung up on first — the member's teardown, which the release waits for, follows
/// that hang-up (`Stub::wait_claimer`).
fn release_here(
    stub: &mut Option<airlock_sandbox::container::stub::StubExit>,
    store: &mut Records,
    state: &Path,
    member: &pool::Member,
    dir: &Path,
    done: (&str, Duration),
) -> bool {
    if let Some(s) = stub.as_mut() {
        s.hang_up();
    }
    release_unwoken(store, state, member, dir, Some(done))
}

/// [`release`] of a member already ended ([`end_member`]), except that a running daemon is
/// not woken: true when one runs, for the caller to wake once its own last steps are done
/// (the refill it starts takes a CPU from them).
fn release_unwoken(
    store: &mut Records,
    state: &Path,
    member: &pool::Member,
    dir: &Path,
    done: Option<(&str, Duration)>,
) -> bool {
    // A microVM member: its guest powers off.
    super::vm_member::power_off(dir);
    let me = std::process::id() as i32;
    let Ok(store) = store.get() else {
        // The records cannot be read: the daemon's reconcile removes the member once this
        // process is gone.
        return pool::daemon_running(state);
    };
    // Taken by its ready marker: recorded first (unless the daemon's pass did already).
    let _ = store.claim_record(&member.name, me, member.claimer_start.unwrap_or(0));
    let _ = match done {
        // One transaction: released, and the hit with its latency.
        Some((key, took)) => store.claim_finished(&member.name, me, key, took.as_micros() as u64),
        None => store.member_release(&member.name, me),
    };
    if pool::daemon_running(state) {
        return true;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while supervisor::locked(dir) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let Ok(exe) = exe() else { return false };
    if store
        .member_cas(
            &member.name,
            &[pool::MemberState::Released],
            pool::MemberState::Draining,
        )
        .unwrap_or(false)
    {
        pool::remove_member(store, &SupervisorBackend { exe }, state, &member.name);
    }
    false
}
