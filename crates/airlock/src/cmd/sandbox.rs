//! Named, persistent sandboxes: thin clients of the local engine (auto-started), plus exec and
//! shell, which go straight into the running sandbox (no engine on that path).

use super::exec::exec_in;
use super::named::{client, existing_dir, name_from_dir, recorded_spec, sandbox_dir};
use crate::cli::{CreateArgs, LogsArgs, RmArgs, RunArgs, StatusArgs, StopArgs, UpArgs};
use crate::error::{CliError, CliResult};
use airlock_engine::client::Client;
use airlock_engine::supervisor as backend;
use airlock_engine::Status as SandboxStatus;
use airlock_model::exit;
use std::path::{Path, PathBuf};

pub fn up(a: UpArgs, global_config: Option<&Path>, no_user_config: bool) -> CliResult<i32> {
    let name = match a.name.clone() {
        Some(n) => n,
        None => {
            let cwd = std::env::current_dir().map_err(|e| CliError::new(exit::USAGE, e))?;
            name_from_dir(&cwd).ok_or_else(|| {
                CliError::usage(format!(
                    "cannot derive a sandbox name from {}",
                    cwd.display()
                ))
                .hint("give one: airlock up NAME")
            })?
        }
    };
    let c = client()?;
    let project = super::hooks::project_of(&name)
        .filter(|_| !a.fresh)
        .or_else(|| std::env::current_dir().ok());
    let running = |c: &Client| {
        c.status(&name)
            .is_ok_and(|st| st.record.state == airlock_model::lifecycle::SandboxState::Running)
    };
    let was_running = running(&c);
    if !a.fresh && c.status(&name).is_ok() {
        refuse_changes(&a, &name, global_config, no_user_config)?;
    }
    if !was_running || a.fresh {
        if let Some(p) = &project {
            super::hooks::run(&name, p, super::hooks::Phase::PreUp, "starting")?;
        }
    }
    if a.fresh && c.status(&name).is_ok() {
        c.rm(&name, true)?;
    }
    match c.status(&name) {
        Ok(st) if st.record.state == airlock_model::lifecycle::SandboxState::Running => {}
        Ok(_) => {
            start_named(&c, &name)?;
            super::setup::after_start(&c, &name, false)?;
            harness_or_stop(&c, &name, false)?;
        }
        Err(_) => {
            create(
                CreateArgs {
                    name: name.clone(),
                    agent: a.agent.clone(),
                    policy: a.policy,
                },
                global_config,
                no_user_config,
            )?;
            start_named(&c, &name)?;
            super::setup::after_start(&c, &name, true)?;
            harness_or_stop(&c, &name, true)?;
        }
    }
    outln!("{name} running");
    if !was_running || a.fresh {
        if let Some(p) = &project {
            super::hooks::run(&name, p, super::hooks::Phase::PostUp, "running")?;
        }
    }
    match &a.prompt {
        Some(text) => crate::cmd::agent::send_prompt(&name, text, !a.no_attach, false),
        None => {
            if a.agent.is_some() {
                errln!("airlock: send it a task: airlock prompt {name} \"…\"");
            }
            Ok(0)
        }
    }
}

/// `up NAME OPTIONS` of an existing sandbox: its policy was fixed at creation, so options
/// that would differ are refused, each named, with the way out — never dropped silently.
fn refuse_changes(
    a: &UpArgs,
    name: &str,
    global_config: Option<&Path>,
    no_user_config: bool,
) -> CliResult<()> {
    let Some(recorded) = recorded_spec(&sandbox_dir(name)) else {
        return Ok(());
    };
    let run_args = RunArgs {
        policy: a.policy.clone(),
        name: Some(name.to_string()),
        workdir: None,
        timeout: None,
        tty: false,
        interactive: false,
        net_log: None,
        keep: false,
        cmd: vec![],
    };
    let asked = crate::cmd::run::build(&run_args, global_config, no_user_config, true)?.spec;
    let agent = a
        .agent
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: String| CliError::usage(format!("--agent: {e}")))?;
    let diffs = crate::cmd::drift::drift(&a.policy, agent.as_ref(), &asked, &recorded);
    if diffs.is_empty() {
        return Ok(());
    }
    Err(CliError::usage(format!(
        "sandbox {name} exists, and `up` does not change an existing sandbox; these options differ from it:\n    {}",
        diffs.join("\n    ")
    ))
    .hint(format!(
        "`airlock up {name} --fresh` with these options recreates it (its state is discarded: fetch or sync its work first); or drop them to start it as it is{}",
        if diffs.iter().any(|d| d.starts_with("--allow ")) {
            format!("; `airlock allow {name} DOMAIN[:PORT]` adds a domain to it in place, even while it runs")
        } else {
            String::new()
        }
    )))
}

/// `airlock audit [NAME] [--follow] [--json]`: the merged journal of one sandbox, or of all.
pub fn audit(a: &crate::cli::AuditArgs) -> CliResult<i32> {
    use std::io::Write;
    let mut follower = airlock_engine::audit::Follower::default();
    match &a.name {
        Some(n) => follower.add_sandbox(None, &existing_dir(n)?),
        // Every sandbox's journal and the host's (trust changes).
        None => follower.add_host(&airlock_engine::paths::state_dir()),
    }
    loop {
        if a.name.is_none() {
            // Sandboxes created meanwhile are followed too.
            let root = sandbox_dir("x")
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(&root)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().is_dir())
                .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
                .collect();
            v.sort();
            for (name, dir) in v {
                follower.add_sandbox(Some(&name), &dir);
            }
        }
        let mut out = std::io::stdout().lock();
        for e in follower.poll() {
            let text = if a.json {
                e.to_string()
            } else if a.name.is_none() {
                format!(
                    "{}  {}",
                    e["sandbox"].as_str().unwrap_or("(host)"),
                    airlock_engine::audit::human(&e)
                )
            } else {
                airlock_engine::audit::human(&e)
            };
            crate::out::bytes(&mut out, format!("{text}\n").as_bytes());
        }
        if !a.follow {
            return Ok(0);
        }
        crate::out::check(out.flush());
        drop(out);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

pub fn logs(a: &LogsArgs) -> CliResult<i32> {
    use std::io::{Read, Seek, Write};
    let dir = existing_dir(&a.name)?;
    let path = dir.join(if a.net { "net.jsonl" } else { backend::CONSOLE });
    if a.net {
        // The journal rotates at 8 MiB: the previous file's lines come first.
        let old = airlock_egress::journal::RotatingFile::rotated_path(&path);
        if let Ok(mut f) = std::fs::File::open(old) {
            let _ = std::io::copy(&mut f, &mut std::io::stdout().lock());
        }
    }
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(_) if !a.follow => return Ok(0),
        Err(e) => return Err(CliError::new(exit::SANDBOX_FAILED, e)),
    };
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
        if n > 0 {
            crate::out::bytes(&mut out, &buf[..n]);
            continue;
        }
        if !a.follow {
            return Ok(0);
        }
        crate::out::check(out.flush());
        std::thread::sleep(std::time::Duration::from_millis(200));
        let _ = f.stream_position();
    }
}

/// `run --keep`: the command runs in a named sandbox, which stays (stopped, with its changes).
pub fn run_keep(a: RunArgs, global_config: Option<&Path>, no_user_config: bool) -> CliResult<i32> {
    let name = match &a.name {
        Some(n) => n.clone(),
        None => format!(
            "run-{:08x}",
            std::process::id()
                ^ (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0))
        ),
    };
    airlock_model::spec::validate_name(&name).map_err(CliError::usage)?;
    let (tty, interactive, cmd) = (a.tty, a.interactive, a.cmd.clone());
    let workdir = a
        .workdir
        .as_deref()
        .map(|w| crate::cmd::run::workdir_inside(Path::new(w)))
        .transpose()?;
    let run_args = RunArgs {
        name: Some(name.clone()),
        cmd: vec![],
        keep: false,
        ..a
    };
    let built = crate::cmd::run::build(&run_args, global_config, no_user_config, true)?;
    let c = client()?;
    create_record(&c, &name, &built)?;
    start_with(&c, &name, &built.spec)?;
    super::setup::after_start(&c, &name, true)?;
    let code = exec_in(&name, cmd, &[], workdir, tty, interactive, true);
    let stopped = c.stop(&name, Some(std::time::Duration::from_secs(10)));
    errln!("airlock: kept as sandbox {name}: `airlock start {name}` to resume, `airlock rm {name}` to discard");
    stopped?;
    code
}

pub fn create(a: CreateArgs, global_config: Option<&Path>, no_user_config: bool) -> CliResult<i32> {
    airlock_model::spec::validate_name(&a.name).map_err(CliError::usage)?;
    let run_args = RunArgs {
        policy: a.policy,
        name: Some(a.name.clone()),
        workdir: None,
        timeout: None,
        tty: false,
        interactive: false,
        net_log: None,
        keep: false,
        cmd: vec![],
    };
    let built = crate::cmd::run::build(&run_args, global_config, no_user_config, true)?;
    let mut built = built;
    if let Some(h) = &a.agent {
        built.spec.agent = Some(
            h.parse()
                .map_err(|e: String| CliError::usage(format!("--agent: {e}")))?,
        );
    }
    if let Some(h) = &built.spec.agent {
        // The harness's API must be reachable in filtered mode.
        for d in airlock_model::agent::adapter::default_domains(h) {
            if !built.spec.domains.iter().any(|x| x == d) {
                built.spec.domains.push(d.to_string());
            }
        }
        if built.spec.ports.is_empty() {
            built.spec.ports.push(443);
        }
        // Its API key is injected, not handed over (unless the user said how).
        for (name, secret) in built.spec.secrets.iter_mut() {
            if secret.inject.is_none() && built.spec.net == airlock_model::policy::NetMode::Filtered
            {
                secret.inject = airlock_model::agent::adapter::default_inject(h, name);
            }
        }
    }
    let rec = create_record(&client()?, &a.name, &built)?;
    outln!("{}", rec.name);
    Ok(0)
}

/// Create the engine's record, then the sandbox's own workspace (clone mode): its clone of the
/// host repository, the `context` paths, the reference repositories. A failure removes the
/// record again, so nothing half-made stays. Secret sources are read first (and the values
/// dropped): one that is missing fails before anything exists.
fn create_record(
    c: &Client,
    name: &str,
    built: &crate::cmd::run::Built,
) -> CliResult<airlock_engine::store::Record> {
    drop(crate::cmd::run::resolve_secrets(&built.spec.secrets)?);
    crate::cmd::secrets::check(&built.spec)?;
    if built.spec.require_limits {
        check_limits(name, &built.spec)?;
    }
    // Its `backend` and `rootfs` are what `list` and `status` show.
    let spec =
        serde_json::to_value(&built.spec).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    // The engine makes the workspace (the clone, context, reference repos) and rolls the
    // creation back if that fails.
    Ok(c.create(name, &spec)?)
}

/// Start a created sandbox by name, reading the secrets its spec names.
fn start_named(c: &Client, name: &str) -> CliResult<airlock_engine::store::Record> {
    airlock_model::spec::validate_name(name).map_err(CliError::usage)?;
    match recorded_spec(&sandbox_dir(name)) {
        Some(spec) => start_with(c, name, &spec),
        None => Ok(c.start(name)?),
    }
}

/// Start through the engine, with the secrets read here, now, from this process's
/// environment and files: they travel in memory to the supervisor, never to disk.
fn start_with(
    c: &Client,
    name: &str,
    spec: &airlock_model::spec::RunSpec,
) -> CliResult<airlock_engine::store::Record> {
    let secrets = crate::cmd::run::resolve_secrets(&spec.secrets)?;
    check_limits(name, spec)?;
    let rec = {
        let _progress = (spec.backend == airlock_model::policy::BackendKind::Microvm)
            .then(|| BootProgress::show(name));
        c.start_with_secrets(name, &secrets)?
    };
    say_warm(name);
    Ok(rec)
}

/// Say whether the start just made claimed a warm member (as `run` says it), when a pool
/// was involved.
fn say_warm(name: &str) {
    let Some(v) = crate::cmd::adopt::last_start(&sandbox_dir(name)) else {
        return;
    };
    let pool: String = v["pool"].as_str().unwrap_or("").chars().take(8).collect();
    if v["warm"].as_bool() == Some(true) {
        errln!(
            "airlock: {name}: warm start (pool {pool}, {}, claimed in {:.2} ms, bound in {:.2} ms)",
            v["member"].as_str().unwrap_or("?"),
            v["claim_ms"].as_f64().unwrap_or(0.0),
            v["bind_ms"].as_f64().unwrap_or(0.0)
        );
    } else {
        errln!(
            "airlock: {name}: cold start ({})",
            v["reason"].as_str().unwrap_or("no warm member")
        );
    }
}

/// While a microVM sandbox starts, on a terminal: what it waits for and for how long (a boot
/// under emulation takes seconds to minutes). Nothing when stderr is not a terminal.
struct BootProgress(Option<indicatif::ProgressBar>);

impl BootProgress {
    fn show(name: &str) -> BootProgress {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return BootProgress(None);
        }
        let bar = indicatif::ProgressBar::new_spinner();
        let style = indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        bar.set_style(style);
        let (name, dir) = (name.to_owned(), sandbox_dir(name));
        let shown = bar.clone();
        // Says which stage it is in: the boot file appears when QEMU starts.
        std::thread::spawn(move || {
            while !shown.is_finished() {
                let boot =
                    std::fs::read_to_string(dir.join(airlock_sandbox::isolation::VM_BOOT_FILE));
                shown.set_message(match boot.as_deref() {
                    Ok("tcg") => {
                        format!("{name}: booting its microVM under TCG (software emulation)")
                    }
                    Ok(_) => format!("{name}: booting its microVM"),
                    Err(_) => format!("{name}: preparing its microVM"),
                });
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        });
        bar.enable_steady_tick(std::time::Duration::from_millis(250));
        BootProgress(Some(bar))
    }
}

impl Drop for BootProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// The limits of `spec` this host cannot enforce for this user: what the supervisor's plan
/// will find (it runs as this user, on this host).
fn unenforced_limits(spec: &airlock_model::spec::RunSpec) -> Vec<&'static str> {
    if !spec.resources.any() {
        return Vec::new();
    }
    let support = airlock_sandbox::cgroup::Layout::detect().support();
    airlock_model::plan::unenforced_limits(spec, &support)
}

/// Before anything starts: refuse (121) what `--require-limits` cannot have, or say which
/// limits will not hold, as `run` does.
fn check_limits(name: &str, spec: &airlock_model::spec::RunSpec) -> CliResult<()> {
    let unenforced = unenforced_limits(spec);
    if unenforced.is_empty() {
        return Ok(());
    }
    if spec.require_limits {
        return Err(airlock_model::plan::Refusal::LimitsUnenforceable(unenforced).into());
    }
    errln!(
        "airlock: warning: {name}: not enforced on this host: {} limit (no usable cgroup{}); `airlock status {name}` says so too; create it with --require-limits to refuse instead",
        unenforced.join(", "),
        if nix::unistd::geteuid().is_root() { "" } else { " delegation for this user" }
    );
    Ok(())
}

/// An agent sandbox whose harness is missing is not left half-started: stopped, or removed
/// again when this command created it.
fn harness_or_stop(c: &Client, name: &str, created: bool) -> CliResult<()> {
    let Err(e) = super::agent::check_harness(name) else {
        return Ok(());
    };
    super::named::undo_start(c, name, created, "its agent cannot run");
    Err(e)
}

pub fn start(name: &str) -> CliResult<i32> {
    let project = super::hooks::project_of(name);
    if let Some(p) = &project {
        super::hooks::run(name, p, super::hooks::Phase::PreUp, "starting")?;
    }
    let c = client()?;
    let rec = start_named(&c, name)?;
    super::setup::after_start(&c, name, false)?;
    harness_or_stop(&c, name, false)?;
    outln!("{} {}", rec.name, rec.state);
    if let Some(p) = &project {
        super::hooks::run(name, p, super::hooks::Phase::PostUp, "running")?;
    }
    Ok(0)
}

fn is_running(c: &Client, name: &str) -> bool {
    c.status(name)
        .is_ok_and(|st| st.record.state == airlock_model::lifecycle::SandboxState::Running)
}

pub fn stop(a: &StopArgs) -> CliResult<i32> {
    let code = stop_only(a)?;
    if a.remove {
        // `stop --remove` is `stop` then `rm` (Katsuobushi's spelling); not reached when the
        // stop failed or its checks refused, so there is still something to look at.
        return rm(&RmArgs {
            name: a.name.clone(),
            force: false,
        });
    }
    Ok(code)
}

fn stop_only(a: &StopArgs) -> CliResult<i32> {
    let grace = crate::cmd::run::parse_duration(&a.grace)
        .map_err(|e| CliError::usage(format!("--grace: {e}")))?;
    crate::cmd::agent::finish_before_stop(&a.name, grace);
    if a.sync {
        crate::cmd::work::sync(&crate::cli::SyncArgs {
            name: a.name.clone(),
            dry_run: false,
            artifacts: a.artifacts,
            accept: a.accept,
            json: false,
        })?;
    }
    let c = client()?;
    let project = super::hooks::project_of(&a.name).filter(|_| is_running(&c, &a.name));
    if let Some(p) = &project {
        super::hooks::run(&a.name, p, super::hooks::Phase::PreDown, "stopping")?;
    }
    // (A microVM sandbox's clone work is taken out of its guest by the engine's stop.)
    let rec = c.stop(&a.name, Some(grace))?;
    outln!("{} {}", rec.name, rec.state);
    if existing_dir(&a.name).is_ok_and(|dir| airlock_engine::guest_work::stranded(&dir)) {
        errln!(
            "airlock: warning: the work of {} is still on its VM's disk: it was not taken out before the VM ended (`airlock audit {}` says why when the pull failed)",
            a.name, a.name
        );
        errln!("hint: {}", airlock_work::ops::in_guest_hint(&a.name));
    }
    if let Some(p) = &project {
        super::hooks::run(&a.name, p, super::hooks::Phase::PostDown, "stopped")?;
    }
    // A bind-mode sandbox's check of the checkout on the way out (written by its supervisor).
    if existing_dir(&a.name).is_ok_and(|dir| super::wayback::print_saved(&dir)) {
        return Err(CliError::new(
            exit::POLICY_REFUSED,
            anyhow::anyhow!(
                "{} tampered with git's control files in its bind workspace",
                a.name
            ),
        )
        .hint("the changes listed above were undone; nothing the sandbox planted there runs on your next git"));
    }
    Ok(0)
}

pub fn rm(a: &RmArgs) -> CliResult<i32> {
    let c = client()?;
    let project = super::hooks::project_of(&a.name).filter(|_| a.force && is_running(&c, &a.name));
    if let Some(p) = &project {
        super::hooks::run(&a.name, p, super::hooks::Phase::PreDown, "stopping")?;
    }
    c.rm(&a.name, a.force)?;
    outln!("removed {}", a.name);
    if let Some(p) = &project {
        super::hooks::run(&a.name, p, super::hooks::Phase::PostDown, "removed")?;
    }
    Ok(0)
}

pub fn list(json: bool) -> CliResult<i32> {
    let records = client()?.list()?;
    let last: Vec<Option<(String, serde_json::Value)>> = records
        .iter()
        .map(|r| crate::cmd::agent::last_report(&r.name))
        .collect();
    if json {
        let mut v =
            serde_json::to_value(&records).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
        if let Some(arr) = v.as_array_mut() {
            for (item, l) in arr.iter_mut().zip(&last) {
                if let (Some(obj), Some((_, entry))) = (item.as_object_mut(), l) {
                    obj.insert("last_report".into(), entry.clone());
                }
            }
        }
        outln!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?
        );
        return Ok(0);
    }
    if records.is_empty() {
        outln!("no sandboxes");
        return Ok(0);
    }
    let agents = last.iter().any(Option::is_some);
    let head = format!(
        "{:<24} {:<10} {:<10} {:<12}",
        "NAME", "STATE", "PROFILE", "BACKEND"
    );
    if agents {
        outln!("{head} LAST REPORT");
    } else {
        outln!("{}", head.trim_end());
    }
    for (r, l) in records.iter().zip(&last) {
        let line = format!(
            "{:<24} {:<10} {:<10} {:<12}",
            r.name,
            r.state.to_string(),
            r.profile.as_deref().unwrap_or("-"),
            r.backend.as_deref().unwrap_or("-")
        );
        match l {
            Some((summary, _)) => outln!("{line} {summary}"),
            None => outln!("{}", line.trim_end()),
        }
    }
    Ok(0)
}

pub fn status(a: &StatusArgs) -> CliResult<i32> {
    match &a.name {
        Some(name) => status_of(name, a.json),
        None => status_here(a.json),
    }
}

/// `airlock status` without NAME: this host's `environment:` (doctor's checks) first, then the
/// sandbox `up` would name after the current directory, if there is one. Exits 123 when the
/// default path cannot work here (as `doctor` says), after printing what is missing.
fn status_here(json: bool) -> CliResult<i32> {
    use airlock_sandbox::hostcaps;
    let rows = hostcaps::probe_all();
    let env_ok = hostcaps::default_path_ok(&rows);
    let cwd = std::env::current_dir().map_err(|e| CliError::new(exit::USAGE, e))?;
    let name = name_from_dir(&cwd);
    // The sandbox is looked up only where sandboxes can run at all.
    let sandbox = match (&name, env_ok) {
        (Some(n), true) => match client()?.status(n) {
            Ok(st) => Some(st),
            Err(e) => {
                let e = CliError::from(e);
                if e.code != exit::NOT_FOUND {
                    return Err(e);
                }
                None
            }
        },
        _ => None,
    };
    if json {
        let env = serde_json::json!({ "rows": rows, "default_path_ok": env_ok });
        let sandbox = sandbox.as_ref().map(status_json).transpose()?;
        let v = serde_json::json!({ "environment": env, "name": name, "sandbox": sandbox });
        outln!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?
        );
    } else {
        let mut buf = Vec::new();
        super::doctor::write_environment(&rows, env_ok, &mut buf)
            .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
        out_text(&String::from_utf8_lossy(&buf));
        outln!();
    }
    if !env_ok {
        let missing: Vec<&str> = rows
            .iter()
            .filter(|r| {
                hostcaps::DEFAULT_PATH.contains(&r.id.as_str()) && r.status != hostcaps::Status::Ok
            })
            .map(|r| r.name.as_str())
            .collect();
        return Err(CliError::new(
            exit::BACKEND_UNAVAILABLE,
            anyhow::anyhow!(
                "this host lacks what sandboxes need: {}",
                if missing.is_empty() {
                    "see above".to_string()
                } else {
                    missing.join(", ")
                }
            ),
        )
        .hint("each row above says its fix; `airlock doctor` has the full report"));
    }
    match (sandbox, name) {
        (Some(st), _) if !json => print_status(st),
        (None, Some(n)) if !json => {
            outln!("sandbox:  none named {n} for this directory (`airlock up` creates it)");
            Ok(0)
        }
        (None, None) if !json => {
            outln!("sandbox:  none (no name can be derived from this directory's name)");
            Ok(0)
        }
        _ => Ok(0),
    }
}

fn out_text(text: &str) {
    for line in text.lines() {
        outln!("{line}");
    }
}

fn status_of(name: &str, json: bool) -> CliResult<i32> {
    let st = client()?.status(name)?;
    if json {
        let v = status_json(&st)?;
        outln!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?
        );
        return Ok(0);
    }
    print_status(st)
}

fn status_json(st: &SandboxStatus) -> CliResult<serde_json::Value> {
    let mut v = serde_json::to_value(st).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("unenforced_limits".into(), unenforced_of(st).into());
        // Whether its last start claimed a warm member (null: no pool was involved).
        obj.insert(
            "warm_start".into(),
            crate::cmd::adopt::last_start(&sandbox_dir(&st.record.name))
                .unwrap_or(serde_json::Value::Null),
        );
    }
    // Binds as the sandbox has them now: `airlock mount`/`unmount` change its spec.json.
    if let (Some(spec), Some(binds)) = (
        recorded_spec(&sandbox_dir(&st.record.name)),
        v.get_mut("spec").and_then(|s| s.get_mut("binds")),
    ) {
        *binds = serde_json::to_value(&spec.binds)
            .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    }
    Ok(v)
}

/// Whether the sandbox's memory limit is the default this host cannot enforce (left out of
/// the sandbox quietly, so not a limit it has).
fn default_memory_left_out(name: &str) -> bool {
    recorded_spec(&sandbox_dir(name)).is_some_and(|s| {
        let support = airlock_sandbox::cgroup::Layout::detect().support();
        airlock_model::plan::left_out_default_memory(&s, &support)
    })
}

/// Limits that do not hold: what the running sandbox's plan says, else this host now.
fn unenforced_of(st: &SandboxStatus) -> Vec<String> {
    let name = &st.record.name;
    match std::fs::read(sandbox_dir(name).join(airlock_sandbox::isolation::PLAN_FILE))
        .ok()
        .filter(|_| st.record.state == airlock_model::lifecycle::SandboxState::Running)
        .and_then(|b| serde_json::from_slice::<airlock_model::plan::LaunchPlan>(&b).ok())
    {
        Some(plan) => plan.unenforced_limits,
        None => recorded_spec(&sandbox_dir(name))
            .map(|s| {
                unenforced_limits(&s)
                    .iter()
                    .map(|l| l.to_string())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn print_status(st: SandboxStatus) -> CliResult<i32> {
    let unenforced = unenforced_of(&st);
    let r = &st.record;
    outln!("name:     {}", r.name);
    outln!("state:    {}", r.state);
    outln!("backend:  {}", r.backend.as_deref().unwrap_or("container"));
    outln!("image:    {}", r.image.as_deref().unwrap_or("host"));
    outln!("profile:  {}", r.profile.as_deref().unwrap_or("-"));
    if let Some(net) = r.spec.get("net").and_then(|v| v.as_str()) {
        outln!("network:  {net}");
    }
    if let Some(ws) = r.spec.get("workspace").and_then(|v| v.as_str()) {
        match airlock_work::clone::CloneInfo::load(&sandbox_dir(&r.name)) {
            Some(c) => outln!(
                "workspace: clone of {} on {} (`airlock diff {}`)",
                c.host_repo.display(),
                c.branch,
                r.name
            ),
            None => outln!("workspace: {ws}"),
        }
    }
    if let Some(d) = r
        .spec
        .get("domains")
        .and_then(|v| v.as_array())
        .filter(|d| !d.is_empty())
    {
        let list: Vec<&str> = d.iter().filter_map(|v| v.as_str()).collect();
        outln!("allowed:  {}", list.join(", "));
    }
    // Binds as the sandbox has them now (`airlock mount`/`unmount` change them while it runs).
    if let Some(spec) = recorded_spec(&sandbox_dir(&r.name)).filter(|s| !s.binds.is_empty()) {
        let list: Vec<String> = (spec.binds.iter())
            .map(|b| {
                format!(
                    "{} at {} ({})",
                    b.source.display(),
                    b.target.display(),
                    if b.writable { "rw" } else { "ro" }
                )
            })
            .collect();
        outln!("mounts:   {}", list.join(", "));
    }
    if let Some(res) = r.spec.get("resources") {
        let limit = |k: &str| {
            res.get(k)
                .filter(|v| !v.is_null())
                .map(|v| v.to_string().trim_matches('"').to_string())
        };
        let parts: Vec<String> = [
            ("memory", limit("memory")),
            ("cpus", limit("cpus")),
            ("pids", limit("pids")),
        ]
        .into_iter()
        .filter_map(|(k, v)| {
            v.map(|v| match unenforced.iter().any(|u| u == k) {
                true => format!("{k} {v} (not enforced on this host)"),
                false if k == "memory" && default_memory_left_out(&r.name) => {
                    format!("{k} none (the {v} default needs a cgroup this host does not give)")
                }
                false => format!("{k} {v}"),
            })
        })
        .collect();
        outln!(
            "limits:   {}",
            if parts.is_empty() {
                "none".to_string()
            } else {
                parts.join(", ")
            }
        );
    }
    if let Some(up) = st.uptime_secs {
        outln!("uptime:   {up}s");
    }
    if let Some(s) = st.stats {
        // Use is read from the sandbox's cgroup; one without limits has none.
        let shown = |v: Option<u64>, unit: &str| match v {
            Some(v) => format!("{v}{unit}"),
            None => "n/a".to_string(),
        };
        outln!("memory:   {}", shown(s.memory_bytes, " bytes"));
        outln!("pids:     {}", shown(s.pids, ""));
        outln!("cpu:      {}", shown(s.cpu_usec, " us"));
    }
    if let Some(e) = &r.last_error {
        outln!("error:    {e}");
    }
    Ok(0)
}
