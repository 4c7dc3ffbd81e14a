//! The spec-building of `run` (and of named sandboxes, the warm pool and agent mode):
//! configuration + flags -> a [`RunSpec`] and the host-side options of one launch.

use crate::cli::{PolicyArgs, RunArgs};
use crate::error::{CliError, CliResult};
use airlock_model::config::{
    self, Layer, MountLayer, NetworkLayer, ResourcesLayer, SandboxLayer, WorkspaceLayer,
};
use airlock_model::policy::{ByteSize, Cpus, NetMode, Profile, WorkspaceMode};
use airlock_model::spec::{validate_name, BindSpec, Resources, RunSpec, SandboxUser, Stdio};
use airlock_model::{exit, plan};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::load::load_config;

/// Host variables passed through by default: none of them carries a credential.
const ENV_PASSTHROUGH: &[&str] = &[
    "TERM",
    "COLORTERM",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "TZ",
    "NO_COLOR",
];
const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn parse<T: std::str::FromStr>(flag: &str, v: &str) -> CliResult<T>
where
    T::Err: std::fmt::Display,
{
    v.parse()
        .map_err(|e| CliError::usage(format!("--{flag}: {e}")))
}

/// Parse `30s`, `5m`, `1h`, `250ms`, or bare seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mult_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        (t, 1000.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 30s, 5m, 1h, 500ms"))?;
    if !v.is_finite() || v <= 0.0 || v * mult_ms > 1e12 {
        return Err(format!("invalid duration {s:?}: must be positive"));
    }
    Ok(Duration::from_micros((v * mult_ms * 1000.0) as u64))
}

/// Split `HOST[:DEST]`.
fn split_bind(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once(':') {
        Some((h, d)) if !d.is_empty() => (h, Some(d)),
        _ => (spec.trim_end_matches(':'), None),
    }
}

/// The command-line layer: flags that map onto configuration keys.
pub fn cli_layer(p: &PolicyArgs) -> CliResult<Layer> {
    let mut l = Layer::default();
    if let Some(v) = &p.compatibility_mode {
        l.agent = Some(airlock_model::config::AgentLayer {
            compatibility_mode: Some(parse::<airlock_model::policy::CompatibilityMode>(
                "compatibility-mode",
                v,
            )?),
            ..Default::default()
        });
    }
    if let Some(v) = &p.profile {
        l.sandbox = Some(SandboxLayer {
            profile: Some(parse::<Profile>("profile", v)?),
            ..Default::default()
        });
    }
    if let Some(v) = &p.backend {
        let backend = match v.as_str() {
            "container" => airlock_model::policy::BackendKind::Container,
            "microvm" => airlock_model::policy::BackendKind::Microvm,
            _ => {
                return Err(CliError::usage(format!(
                    "--backend {v}: expected container or microvm"
                )))
            }
        };
        l.sandbox.get_or_insert_with(Default::default).backend = Some(backend);
    }
    if let Some(image) = &p.image {
        l.sandbox.get_or_insert_with(Default::default).image = Some(image.clone());
    }
    if let Some(k) = &p.kernel {
        // Relative to where the command runs (a configuration file's: to its project).
        let k = std::path::absolute(k)
            .map_err(|e| CliError::usage(format!("--kernel {}: {e}", k.display())))?;
        l.sandbox.get_or_insert_with(Default::default).kernel = Some(k.display().to_string());
    }
    let memory = p
        .memory
        .as_deref()
        .map(|v| parse::<ByteSize>("memory", v))
        .transpose()?;
    let cpus = p
        .cpus
        .as_deref()
        .map(|v| parse::<Cpus>("cpus", v))
        .transpose()?;
    let disk = p
        .disk
        .as_deref()
        .map(|v| {
            parse::<ByteSize>("disk", v)
                .map_err(|e| e.hint("give a size in bytes or with a unit: 512M, 4G, 1.5G"))
        })
        .transpose()?;
    if p.pids == Some(0) {
        return Err(CliError::usage("--pids: must be at least 1"));
    }
    if disk.is_some_and(|d| d.0 == 0) {
        return Err(CliError::usage("--disk: must be more than 0")
            .hint("give a size such as 256M or 4G, or leave --disk out"));
    }
    if memory.is_some() || cpus.is_some() || p.pids.is_some() || disk.is_some() {
        l.resources = Some(ResourcesLayer {
            memory,
            cpus,
            pids: p.pids,
            disk,
        });
    }
    let mode = p
        .net
        .as_deref()
        .map(|v| parse::<NetMode>("net", v))
        .transpose()?;
    let mut domains = Vec::new();
    let mut ports = Vec::new();
    for a in &p.allow {
        let (host, port) = match a.rsplit_once(':') {
            Some((h, port)) => {
                let n: u16 = port.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    CliError::usage(format!("--allow {a}: invalid port {port:?}"))
                })?;
                (h, Some(n))
            }
            None => (a.as_str(), None),
        };
        domains.push(host.to_string());
        ports.extend(port);
    }
    if mode.is_some() || !domains.is_empty() {
        l.network = Some(NetworkLayer {
            mode,
            domains: (!domains.is_empty()).then_some(domains),
            ports: (!ports.is_empty()).then_some(ports),
        });
    }
    if let Some(v) = &p.workspace {
        l.workspace = Some(WorkspaceLayer {
            mode: Some(parse::<WorkspaceMode>("workspace", v)?),
            ..Default::default()
        });
    }
    let mut mounts = Vec::new();
    for (list, readonly) in [(&p.ro, true), (&p.rw, false)] {
        for spec in list {
            let (host, dest) = split_bind(spec);
            if host.is_empty() {
                return Err(CliError::usage(format!(
                    "--{}: empty host path in {spec:?}",
                    if readonly { "ro" } else { "rw" }
                )));
            }
            let target = PathBuf::from(dest.unwrap_or(host));
            mounts.push(MountLayer {
                source: PathBuf::from(host),
                target,
                readonly: Some(readonly),
            });
        }
    }
    if !mounts.is_empty() {
        l.mounts = Some(mounts);
    }
    let mut env = std::collections::BTreeMap::new();
    for kv in &p.env {
        match kv.split_once('=') {
            Some((k, v)) => {
                env.insert(k.to_string(), v.to_string());
            }
            None => {
                let v = std::env::var(kv).map_err(|_| {
                    CliError::usage(format!(
                        "-e {kv}: {kv} is not set on the host (use -e {kv}=VALUE)"
                    ))
                })?;
                env.insert(kv.clone(), v);
            }
        }
    }
    for name in &p.env_pass {
        let v = std::env::var(name).map_err(|_| {
            CliError::usage(format!("--env-pass {name}: {name} is not set on the host"))
        })?;
        env.insert(name.clone(), v);
    }
    if !env.is_empty() {
        l.env = Some(env);
    }
    let mut secrets = std::collections::BTreeMap::new();
    for spec in &p.secret {
        let (name, secret) = super::secrets::parse_flag(spec)?;
        secrets.insert(name, secret);
    }
    if !secrets.is_empty() {
        l.secrets = Some(secrets);
    }
    Ok(l)
}

fn random_suffix() -> String {
    let mut b = [0u8; 4];
    if getrandom(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        b = (t ^ std::process::id()).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

fn build_env(
    eff_env: &std::collections::BTreeMap<String, String>,
    profile: Profile,
    user: &SandboxUser,
    tty: bool,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v));
    };
    if profile == Profile::Permissive {
        for (k, v) in std::env::vars() {
            set(&k, v);
        }
    } else {
        for k in ENV_PASSTHROUGH {
            if let Ok(v) = std::env::var(k) {
                set(k, v);
            }
        }
        for (k, v) in std::env::vars().filter(|(k, _)| k.starts_with("LC_")) {
            set(&k, v);
        }
    }
    set("PATH", SANDBOX_PATH.into());
    set("HOME", user.home().into());
    set("USER", user.name());
    set("LOGNAME", user.name());
    set("SHELL", "/bin/sh".into());
    if tty && std::env::var_os("TERM").is_none() {
        set("TERM", "xterm-256color".into());
    }
    for (k, v) in eff_env {
        set(k, v.clone());
    }
    env
}

fn canonical(p: &Path, what: &str) -> CliResult<PathBuf> {
    std::fs::canonicalize(p).map_err(|e| CliError::usage(format!("{what} {}: {e}", p.display())))
}

/// A resolved spec and the host-side options of one launch.
pub struct Built {
    pub spec: RunSpec,
    pub timeout: Option<Duration>,
    pub forward_stdin: bool,
    /// Secret values already read (a supervisor gets them from the engine); None: read them
    /// from their sources now.
    pub secrets: Option<Vec<(String, String)>>,
    /// A named sandbox's unique id (from its folder); None for `run`.
    pub instance_id: Option<String>,
    /// `[pool] size`: a `run` with no pool for its kind starts one of this size.
    pub pool_size: u32,
    /// The hostname was chosen (`--hostname`, or `--name` whose default it is), not a random
    /// `run-…`: a warm claim sets it in the member (a random one is as good as the member's).
    pub hostname_chosen: bool,
}

/// Config + flags -> the spec (`persistent`: a named sandbox, no command).
pub fn build(
    a: &RunArgs,
    global_config: Option<&Path>,
    no_user_config: bool,
    persistent: bool,
) -> CliResult<Built> {
    airlock_sandbox::phase("start");
    let resolved = load_config(global_config, no_user_config, cli_layer(&a.policy)?)?;
    crate::cmd::trust::require(resolved.project.as_ref())?;
    let eff = &resolved.effective;
    let profile = eff.sandbox.profile;
    // Profile network defaults (SPEC §2): restrictive -> off, moderate -> filtered, permissive -> open.
    let net = eff.network.mode.unwrap_or(match profile {
        Profile::Restrictive => NetMode::Off,
        Profile::Moderate => NetMode::Filtered,
        Profile::Permissive => NetMode::Open,
    });
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let workspace = workspace_mode(&resolved, persistent, &cwd);
    if workspace == WorkspaceMode::Clone {
        if !persistent {
            return Err(airlock_model::plan::Refusal::CloneUnsupported.into());
        }
        // (A default of clone already found the repository.)
        if eff.workspace.mode.is_some() && airlock_work::clone::toplevel(&cwd).is_none() {
            return Err(CliError::new(
                exit::POLICY_REFUSED,
                anyhow::anyhow!(
                    "workspace mode clone needs a git repository, and {} is not in one",
                    cwd.display()
                ),
            )
            .hint("run from the repository, or use --workspace overlay"));
        }
    }
    let mut user = match &a.policy.user {
        Some(u) => parse::<SandboxUser>("user", u)?,
        None => SandboxUser::Agent,
    };
    let name = match &a.name {
        Some(n) => {
            validate_name(n).map_err(CliError::usage)?;
            n.clone()
        }
        None => format!("run-{}", random_suffix()),
    };
    let hostname = a.policy.hostname.clone().unwrap_or_else(|| name.clone());
    if hostname.is_empty() || hostname.len() > 64 || hostname.contains(['/', '\0']) {
        return Err(CliError::usage(format!(
            "--hostname {hostname:?}: must be 1-64 characters"
        )));
    }
    let timeout = a
        .timeout
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| CliError::usage(format!("--timeout: {e}")))?;
    if let Some(p) = &a.net_log {
        // Checked (and created) now, so a bad target fails before anything starts.
        airlock_model::userfile::open_append(p).map_err(|e| {
            CliError::usage(format!("--net-log {}: {e}", p.display()))
                .hint("name a regular file you can write; the journal is appended to it")
        })?;
    }
    if a.tty && !std::io::stdin().is_terminal() {
        return Err(CliError::usage("-t needs a terminal on stdin")
            .hint("drop -t when piping input or running from a script"));
    }
    let forward_stdin = a.interactive || a.tty || !std::io::stdin().is_terminal();
    let project_dir = canonical(
        &std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        "current directory",
    )?;
    if workspace != WorkspaceMode::None {
        if project_dir == Path::new("/") {
            return Err(CliError::new(exit::POLICY_REFUSED, anyhow::anyhow!("refused: the workspace would be the host's whole filesystem (current directory is /)"))
                .hint("cd into a project directory, or pass --workspace none"));
        }
        if std::env::var_os("HOME").is_some_and(|h| Path::new(&h) == project_dir) {
            errln!("airlock: warning: the workspace is your home directory: everything in it (~/.ssh, ~/.aws, …) is visible inside; run from a project directory or pass --workspace none");
        }
    }
    let mut binds = Vec::new();
    for m in &eff.mounts {
        binds.push(BindSpec {
            source: canonical(&m.source, "mount source")?,
            target: m.target.clone(),
            writable: !m.readonly,
        });
    }
    // Nothing writable inside may contain airlock's own state (the trust store, the sandboxes'
    // records): a sandbox must never be able to trust its own configuration.
    let state = airlock_sandbox::container::rundir::state_dir();
    let state = std::fs::canonicalize(&state).unwrap_or(state);
    let writable_sources = binds
        .iter()
        .filter(|b| b.writable)
        .map(|b| b.source.as_path())
        .chain((workspace == WorkspaceMode::Bind).then_some(project_dir.as_path()));
    for src in writable_sources {
        if state.starts_with(src) {
            return Err(CliError::new(
                exit::POLICY_REFUSED,
                anyhow::anyhow!(
                    "refused: {} would be writable inside, and it holds airlock's state ({})",
                    src.display(),
                    state.display()
                ),
            )
            .hint("mount a narrower directory, or move the state with AIRLOCK_STATE_DIR"));
        }
    }
    let workdir = a
        .workdir
        .as_ref()
        .map(|w| workdir_inside(Path::new(w)))
        .transpose()?;
    let r = &eff.resources;
    // A microVM's `disk` is a disk of that size (a named one's too); a container's is a budget
    // of in-memory mounts, which a named sandbox (its layers on the host's disk) does not have.
    if persistent
        && r.disk.is_some()
        && eff.sandbox.backend != airlock_model::policy::BackendKind::Microvm
    {
        return Err(plan::Refusal::DiskUnenforceable.into());
    }
    let (rootfs, image) =
        crate::cmd::image::resolve_for_spec(eff, &eff.sandbox.image, &a.cmd, &project_dir)?;
    // An image's non-root `User` runs unless --user says who.
    if let (None, Some(rec)) = (&a.policy.user, &image) {
        if let Some(iu) = crate::cmd::image::image_user(rec)? {
            user = SandboxUser::Image(iu);
        }
    }
    let mut env = build_env(&eff.env, profile, &user, a.tty);
    let mut workdir = workdir;
    if let Some(rec) = &image {
        apply_image_config(&mut env, &mut workdir, rec, &eff.env, workspace);
    }
    let from_defaults = |key: &str| {
        resolved
            .origins
            .get(key)
            .is_some_and(|s| s.iter().all(|s| *s == config::Source::Default))
    };
    let spec = RunSpec {
        name,
        hostname,
        profile,
        net,
        domains: eff.network.domains.clone(),
        ports: eff.network.ports.clone(),
        workspace,
        project_dir: project_dir.clone(),
        binds,
        env,
        workdir,
        resources: Resources {
            memory: r.memory,
            cpus: r.cpus,
            pids: r.pids,
            disk: r.disk,
        },
        require_limits: a.policy.require_limits,
        user,
        timeout,
        stdio: if a.tty {
            Stdio::Tty
        } else {
            Stdio::Inherit { forward_stdin }
        },
        argv: if persistent {
            vec![]
        } else {
            super::setup::wrap_command(&eff.setup, a.cmd.clone())?
        },
        persistent,
        home_dir: None,
        workspace_dir: None,
        context: if persistent {
            eff.workspace.context.clone()
        } else {
            Vec::new()
        },
        repos: if persistent {
            eff.workspace.repos.clone()
        } else {
            Vec::new()
        },
        protected: {
            let mut p = eff.workspace.protected.clone();
            // The hooks directory git is configured to use, when it is inside the checkout
            // (e.g. husky's `.husky`): in bind mode the sandbox must not write hooks there.
            if workspace == WorkspaceMode::Bind {
                if let Some(h) = airlock_work::wayback::hooks_path(&project_dir) {
                    if let Ok(r) = h.strip_prefix(&project_dir) {
                        p.push(r.to_string_lossy().into_owned());
                    }
                }
            }
            p
        },
        home_files: eff.home_files.clone(),
        secrets: eff.secrets.clone(),
        agent: if persistent { eff.agent.clone() } else { None },
        defaulted: airlock_model::spec::Defaulted {
            memory: from_defaults("resources.memory"),
            pids: from_defaults("resources.pids"),
        },
        agent_grace: persistent.then_some(eff.agent_grace),
        agent_min_warm: match (&eff.agent, persistent) {
            (Some(h), true) => eff.daemon.min_warm(h),
            _ => 0,
        },
        setup: eff.setup.clone(),
        backend: eff.sandbox.backend,
        rootfs,
        kernel: eff.sandbox.kernel.as_ref().map(|k| {
            let from = resolved
                .origins
                .get("sandbox.kernel")
                .and_then(|s| s.last())
                .map(|s| match s {
                    config::Source::CommandLine => {
                        airlock_sandbox::microvm::kernel::FROM_FLAG.to_string()
                    }
                    other => other.to_string(),
                })
                .unwrap_or_default();
            airlock_model::spec::GuestKernel {
                path: project_dir.join(k),
                from,
            }
        }),
        workspace_slot: false,
        workspace_slot_rw: false,
        pool_member: false,
    };
    // The planner refuses a backend or image this build cannot provide; asked here already so
    // that `create` refuses it too (a named sandbox is planned only when it starts).
    plan::admit(&spec, &airlock_sandbox::isolation::offer())?;
    Ok(Built {
        spec,
        timeout,
        forward_stdin,
        secrets: None,
        instance_id: None,
        pool_size: eff.pool.size,
        hostname_chosen: a.policy.hostname.is_some() || a.name.is_some(),
    })
}

/// The workspace mode a run (`persistent`: a named sandbox) in `cwd` gets from `resolved`
/// configuration and flags.
fn workspace_mode(
    resolved: &airlock_model::config::Resolved,
    persistent: bool,
    cwd: &Path,
) -> WorkspaceMode {
    let eff = &resolved.effective;
    let profile = eff.sandbox.profile;
    // A compatibility mode's `clone` applies where a clone can be made (a named sandbox in a
    // git repository); elsewhere its workspace is an overlay, as `run`'s default.
    let clone_from_mode = eff.workspace.mode == Some(WorkspaceMode::Clone)
        && resolved
            .origins
            .get("workspace.mode")
            .and_then(|s| s.last())
            .is_some_and(|s| matches!(s, airlock_model::config::Source::Mode(_)));
    // Named sandboxes default to their own clone when the project is a git repository.
    match eff.workspace.mode {
        Some(WorkspaceMode::Clone)
            if clone_from_mode && !(persistent && airlock_work::clone::toplevel(cwd).is_some()) =>
        {
            WorkspaceMode::Overlay
        }
        Some(m) => m,
        None if persistent && airlock_work::clone::toplevel(cwd).is_some() => WorkspaceMode::Clone,
        None => match profile {
            Profile::Permissive => WorkspaceMode::Bind,
            _ => WorkspaceMode::Overlay,
        },
    }
}

/// The workspace mode `airlock run` with `policy` would get here (configuration included),
/// without building its spec: what a warm pool made with the same options is for.
pub fn run_workspace_mode(
    policy: &PolicyArgs,
    global_config: Option<&Path>,
    no_user_config: bool,
) -> CliResult<WorkspaceMode> {
    let resolved = load_config(global_config, no_user_config, cli_layer(policy)?)?;
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    Ok(workspace_mode(&resolved, false, &cwd))
}

/// An image's `Env` and `WorkingDir`: its variables replace airlock's defaults (`PATH`…) but
/// never what the configuration or flags set, nor who the sandbox user is (`HOME`, `USER`,
/// `LOGNAME`); its working directory applies when there is no workspace and no `-w`.
fn apply_image_config(
    env: &mut Vec<(String, String)>,
    workdir: &mut Option<PathBuf>,
    rec: &airlock_image::ImageRecord,
    explicit: &std::collections::BTreeMap<String, String>,
    workspace: WorkspaceMode,
) {
    for (k, v) in rec.config.env_pairs() {
        if explicit.contains_key(&k) || ["HOME", "USER", "LOGNAME"].contains(&k.as_str()) {
            continue;
        }
        match env.iter_mut().find(|(ek, _)| *ek == k) {
            Some(slot) => slot.1 = v,
            None => env.push((k, v)),
        }
    }
    if workspace == WorkspaceMode::None && workdir.is_none() {
        *workdir = rec
            .config
            .working_dir
            .as_deref()
            .filter(|w| w.starts_with('/'))
            .map(PathBuf::from);
    }
}

/// `-w DIR` of `run` and `exec`: an absolute path as given; a relative one under /workspace,
/// resolved lexically (`-w .` is /workspace, `-w src/..` too). A relative path that climbs out
/// of /workspace is refused rather than silently leaving it.
pub fn workdir_inside(w: &Path) -> CliResult<PathBuf> {
    use std::path::Component;
    if w.is_absolute() {
        return Ok(w.to_path_buf());
    }
    let root = Path::new("/workspace");
    let mut p = root.to_path_buf();
    for c in w.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(n) => p.push(n),
            Component::ParentDir if p != root => {
                p.pop();
            }
            _ => {
                return Err(CliError::usage(format!(
                "-w {}: a relative working directory is under /workspace, and this one leaves it",
                w.display()
            ))
                .hint("give an absolute path to work elsewhere, e.g. -w /tmp"))
            }
        }
    }
    Ok(p)
}

/// Read every secret from its source, in memory only. Errors name the secret and its source,
/// never a value.
pub fn resolve_secrets(
    sources: &std::collections::BTreeMap<String, config::Secret>,
) -> CliResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (name, source) in sources {
        let value = match &source.source {
            config::SecretSource::FromEnv(var) => std::env::var(var).map_err(|_| {
                CliError::usage(format!("secret {name}: the host variable {var} is not set")).hint(
                    format!("export {var}=… before running, or change where {name} comes from"),
                )
            })?,
            config::SecretSource::FromFile(path) => {
                let v = airlock_model::userfile::read_to_string(
                    path,
                    airlock_model::userfile::MAX_SECRET_BYTES,
                )
                .map_err(|e| {
                    CliError::usage(format!(
                        "secret {name}: cannot read {}: {e}",
                        path.display()
                    ))
                })?;
                v.strip_suffix('\n').map(str::to_string).unwrap_or(v)
            }
        };
        if value.contains('\0') {
            return Err(CliError::usage(format!(
                "secret {name}: the value contains a NUL byte"
            )));
        }
        out.push((name.clone(), value));
    }
    Ok(out)
}

/// `[home_files]` into `spec`'s binds (and seed copies): copies staged in the sandbox's folder
/// `persist` (named) or a per-run folder under `state` (removed when the result drops). Also
/// a warm claim's, before it claims (a refusal is the cold start's).
pub fn stage_home_files(
    spec: &mut airlock_model::spec::RunSpec,
    persist: Option<&Path>,
    state: &Path,
) -> CliResult<Option<airlock_work::home_files::Staging>> {
    if spec.home_files.is_empty() {
        return Ok(None);
    }
    let dir = match persist {
        Some(d) => d.join("home-files"),
        None => state.join("home-files").join(&spec.name),
    };
    let staging = airlock_work::home_files::Staging::new(dir, persist.is_none()).map_err(|e| {
        CliError::new(
            exit::SANDBOX_FAILED,
            anyhow::anyhow!("stage home files: {e}"),
        )
    })?;
    let owner = crate::cmd::named::rootful_owner(spec);
    let kept = spec.home_dir.clone();
    airlock_work::home_files::stage(spec, kept.as_deref(), &staging.dir, owner).map_err(|e| {
        CliError::usage(e).hint("fix [home_files] in airlock.toml (see `airlock config`)")
    })?;
    Ok(Some(staging))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["", "0", "-1s", "abc", "5x"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn working_directories_stay_under_the_workspace() {
        let w = |s: &str| workdir_inside(Path::new(s)).map_err(|e| e.error.to_string());
        assert_eq!(w("."), Ok(PathBuf::from("/workspace")));
        assert_eq!(w("src"), Ok(PathBuf::from("/workspace/src")));
        assert_eq!(w("./src/../lib/"), Ok(PathBuf::from("/workspace/lib")));
        assert_eq!(w("src/.."), Ok(PathBuf::from("/workspace")));
        assert_eq!(w("/etc"), Ok(PathBuf::from("/etc")));
        assert_eq!(w("/tmp/../x"), Ok(PathBuf::from("/tmp/../x")));
        for bad in ["..", "../../etc", "src/../../etc", "./.."] {
            let err = w(bad).expect_err(bad);
            assert!(err.contains("leaves it"), "{bad}: {err}");
        }
    }

    #[test]
    fn bind_specs() {
        assert_eq!(split_bind("/a"), ("/a", None));
        assert_eq!(split_bind("/a:/b"), ("/a", Some("/b")));
        assert_eq!(split_bind("/a:"), ("/a", None));
    }
}
