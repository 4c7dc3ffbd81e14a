//! `airlock __action`: the typed child process. It reads one [`Action`] as JSON on stdin and
//! writes one [`ChildAnswer`] line on stdout — the engine (for its routes) and the MCP server
//! start it, never with argv built from what a client sent, and never reading its stderr (which
//! is their log). The actions that enter a sandbox (file read/write/copy, deliver; run and exec
//! from a grandchild) need a single-threaded process; trust, explain and up use this binary's
//! configuration resolution; start (without secrets), stop and remove are carried out as the
//! CLI carries them out (hooks, setup scripts, secrets from this process's environment), then
//! through the engine; the engine's other actions are forwarded to it.
//!
//! What this module decides is the contract (the action in, one answer out, errors as
//! [`ActionError`]); how bytes move inside the sandbox is the file scripts' business
//! (`airlock_mcp::paths`) and `airlock cp`'s.

use crate::cmd::exec::exec_in;
use crate::error::{CliError, CliResult};
use airlock_engine::action::{
    Action, ActionData, ActionError, ChildAnswer, Copied, Delivered, Direction, Encoding,
    ExecRequest, Explanation, FileContent, PolicyOptions, RunRequest, StreamEnd, UpRequest,
    Verdict, Written,
};
use airlock_guest::fs::{Answer as FsAnswer, Code as FsCode, Request as FsRequest};
use airlock_mcp::{b64, explain, paths};
use airlock_model::exit;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

/// The largest action read from stdin (a 4 MiB file to write, as base64, and its framing).
const MAX_INPUT: u64 = 8 << 20;
/// The most a file read returns, and a file write takes.
const MAX_FILE: u64 = 4 << 20;

pub fn main() -> CliResult<i32> {
    // Nothing of it outlives its caller (the engine's streams end it by killing it).
    let _ = airlock_sandbox::sys::prctl_simple(libc::PR_SET_PDEATHSIG, libc::SIGKILL as u64);
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_INPUT + 1)
        .read_to_end(&mut input)
        .map_err(|e| CliError::new(exit::USAGE, e))?;
    // The answer channel is our stdout, kept aside: whatever runs from here on writes to
    // stderr (the caller's log), reads nothing from the caller.
    let answer = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    let null = File::open("/dev/null").map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    redirect(&null.into(), 0)?;
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    redirect(&stderr, 1)?;
    let mut answer = File::from(answer);
    let result = if input.len() as u64 > MAX_INPUT {
        Err(ActionError::new(
            "too_large",
            format!("the action is over {MAX_INPUT} bytes"),
        ))
    } else {
        serde_json::from_slice::<Action>(&input)
            .map_err(|e| ActionError::new("bad_request", format!("not an action: {e}")))
            .and_then(|a| {
                // A caller ends a run or an exec with SIGTERM to this process group: the
                // grandchild carrying it out forwards it into the sandbox and ends; this
                // process stays to answer how it ended (its caller SIGKILLs the group after a
                // grace period). The handler only writes to /dev/null (reset at exec).
                let _keep = matches!(a, Action::Run(_) | Action::Exec { .. }).then(
                    || -> std::io::Result<File> {
                        let sink = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
                        airlock_sandbox::sys::signals_to_pipe(
                            sink.as_raw_fd(),
                            &[nix::sys::signal::Signal::SIGTERM],
                        )?;
                        Ok(sink)
                    },
                );
                carry_out(a, &mut answer)
            })
    };
    let answer_line = match result {
        Ok(data) => ChildAnswer::Ok(Box::new(data)),
        Err(e) => ChildAnswer::Error(e),
    };
    let mut line = serde_json::to_vec(&answer_line).unwrap_or_default();
    line.push(b'\n');
    answer
        .write_all(&line)
        .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    Ok(0)
}

/// A CLI error as the action's error: its kind from its exit code, its whole cause chain (the
/// reverse of `CliError::from(ActionError)`; a test holds the round trip).
pub fn action_error(e: CliError) -> ActionError {
    let mut message = e.error.to_string();
    for cause in e.error.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
    }
    ActionError::from_code(e.code, message, e.hint)
}

/// One event of a streamed action, on the answer channel: `{"event": LINE}` (the journal line
/// as JSON; a line that is not JSON as a string).
fn event(answer: &mut File, raw: &str) {
    let value: serde_json::Value =
        serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_owned()));
    let mut line = serde_json::to_vec(&serde_json::json!({ "event": value })).unwrap_or_default();
    line.push(b'\n');
    let _ = answer.write_all(&line);
}

fn carry_out(action: Action, answer: &mut File) -> Result<ActionData, ActionError> {
    match action {
        Action::Run(r) => grandchild(Job::Run(r), answer).map(ActionData::Ended),
        Action::Exec { name, request } => {
            grandchild(Job::Exec { name, request }, answer).map(ActionData::Ended)
        }
        Action::Up(r) => up(r).map(ActionData::Record),
        // The lifecycle as the CLI carries it out (its hooks, setup scripts, the secrets from
        // this process's environment, an agent's turn ended before a stop), then the engine.
        Action::Start {
            name,
            secrets: None,
        } => as_cli(&name, || crate::cmd::sandbox::start(&name)).map(ActionData::Record),
        Action::Stop { name, grace_ms } => {
            let args = crate::cli::StopArgs {
                name: name.clone(),
                grace: format!("{}ms", grace_ms.unwrap_or(10_000)),
                sync: false,
                accept: false,
                artifacts: false,
                remove: false,
            };
            as_cli(&name, || crate::cmd::sandbox::stop(&args)).map(ActionData::Record)
        }
        Action::Remove { name, force } => {
            let args = crate::cli::RmArgs {
                name: name.clone(),
                force,
            };
            quietly(|| crate::cmd::sandbox::rm(&args))?;
            Ok(ActionData::Removed(name))
        }
        Action::Prompt { name, text, wait } => {
            let (turn, exit) = crate::cmd::agent::prompt_with(&name, &text, wait, &mut |raw, _| {
                event(answer, raw)
            })
            .map_err(action_error)?;
            Ok(ActionData::Ended(StreamEnd {
                turn: Some(turn),
                exit,
            }))
        }
        Action::Reports { name, follow } => {
            crate::cmd::agent::reports_with(
                &name,
                follow,
                &mut |raw, _| event(answer, raw),
                &mut || {},
            )
            .map_err(action_error)?;
            Ok(ActionData::Ended(StreamEnd {
                turn: None,
                exit: 0,
            }))
        }
        Action::FileRead {
            name,
            path,
            offset,
            max_bytes,
        } => file_read(&name, &path, offset.unwrap_or(0), max_bytes).map(ActionData::File),
        Action::FileWrite {
            name,
            path,
            content,
            encoding,
            append,
            create_dirs,
        } => file_write(&name, &path, &content, encoding, append, create_dirs)
            .map(ActionData::Written),
        Action::Copy {
            name,
            direction,
            host_path,
            path,
        } => copy(&name, direction, &host_path, &path).map(ActionData::Copied),
        Action::Deliver { name, branch } => deliver(&name, &branch).map(ActionData::Delivered),
        Action::Trust { dir, op } => {
            let dir = absolute(&dir, "dir")?;
            let dir = std::fs::canonicalize(dir)
                .map_err(|e| ActionError::new("bad_request", format!("{dir}: {e}")))?;
            crate::cmd::trust::trust(&dir, op, "api")
                .map(|(_, report)| ActionData::Trust(report))
                .map_err(action_error)
        }
        Action::Explain {
            sandbox,
            domain,
            port,
            path,
            access,
            syscall,
        } => {
            airlock_model::spec::validate_name(&sandbox)
                .map_err(|e| ActionError::new("invalid_name", e.to_string()))?;
            if domain.is_none() && path.is_none() && syscall.is_none() {
                return Err(ActionError::new(
                    "bad_request",
                    "give at least one of domain, path, syscall",
                ));
            }
            let spec =
                explain::recorded_spec(&sandbox).map_err(|e| ActionError::new("not_found", e))?;
            let subjects = explain::Subjects {
                domain: domain.as_deref(),
                port: port.and_then(|p| u16::try_from(p).ok()),
                path: path.as_deref(),
                write: access != Some(airlock_engine::action::Access::Read),
                syscall: syscall.as_deref(),
            };
            let verdicts = explain::verdicts(&spec, &subjects)
                .into_iter()
                .map(|v| Verdict {
                    subject: v.subject,
                    allowed: v.allowed,
                    reason: v.reason,
                    fix: v.fix,
                })
                .collect();
            Ok(ActionData::Explained(Explanation {
                origin: format!("sandbox {sandbox}"),
                policy: explain::policy_line(&spec),
                verdicts,
            }))
        }
        // The engine's own: through its API (started if need be).
        other => forward(&other),
    }
}

/// `run` and `exec`: carried out by a grandchild, `airlock __run` (the job as JSON on its
/// stdin), whose stdout and stderr are the command's and become `{"event": {"stream", "data"}}`
/// lines as they come. Not in this process: starting or entering a sandbox forks (and enters
/// namespaces), and this one has the pumping threads. Its error, if it has one, comes back
/// typed through a scratch file it inherits.
fn grandchild(job: Job, answer: &mut File) -> Result<StreamEnd, ActionError> {
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};
    let internal = |e: std::io::Error| ActionError::new("internal", e.to_string());
    let errors = scratch()?;
    airlock_sandbox::sys::set_cloexec(errors.as_raw_fd(), false).map_err(internal)?;
    let input = serde_json::to_vec(&RunJob {
        job,
        error_fd: errors.as_raw_fd(),
    })
    .map_err(|e| ActionError::new("internal", e.to_string()))?;
    let exe = std::env::current_exe().map_err(internal)?;
    let mut child = Command::new(exe)
        .arg("__run")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(internal)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&input).map_err(internal)?;
    }
    let shared = Arc::new(Mutex::new(answer.try_clone().map_err(internal)?));
    let mut pumps = Vec::new();
    let readers: [(Option<Box<dyn Read + Send>>, &'static str); 2] = [
        (
            child
                .stdout
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>),
            "stdout",
        ),
        (
            child
                .stderr
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>),
            "stderr",
        ),
    ];
    for (reader, stream) in readers {
        let Some(mut reader) = reader else { continue };
        let out = Arc::clone(&shared);
        pumps.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let data = String::from_utf8_lossy(&buf[..n]);
                let value = serde_json::json!({ "stream": stream, "data": data });
                if let Ok(mut f) = out.lock() {
                    event(&mut f, &value.to_string());
                }
            }
        }));
    }
    let status = child.wait().map_err(internal)?;
    for p in pumps {
        let _ = p.join();
    }
    let error = slurp(errors);
    if !error.is_empty() {
        return Err(serde_json::from_slice(&error).unwrap_or_else(|e| {
            ActionError::new("internal", format!("unreadable error from the run: {e}"))
        }));
    }
    let exit = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        exit::SIGNAL_BASE + status.signal().unwrap_or(0)
    });
    Ok(StreamEnd { turn: None, exit })
}

/// What a grandchild carries out.
// One value per process, serialized once: boxing would save bytes nobody copies.
#[allow(clippy::large_enum_variant)]
#[derive(serde::Serialize, serde::Deserialize)]
enum Job {
    Run(RunRequest),
    Exec { name: String, request: ExecRequest },
}

/// What `airlock __run` reads on its stdin.
#[derive(serde::Serialize, serde::Deserialize)]
struct RunJob {
    job: Job,
    /// An inherited descriptor to write its [`ActionError`] to, if it fails itself.
    error_fd: i32,
}

/// `airlock __run`: a run or exec job (JSON on stdin) as `airlock run` / `airlock exec` carry
/// it out, in this process, its stdout and stderr the command's, its stdin the job's (else
/// /dev/null). Ends with the command's exit code; airlock's own error goes, typed, to the
/// descriptor the job names. Dies with its parent.
pub fn run_main() -> CliResult<i32> {
    let _ = airlock_sandbox::sys::prctl_simple(libc::PR_SET_PDEATHSIG, libc::SIGKILL as u64);
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_INPUT)
        .read_to_end(&mut input)
        .map_err(|e| CliError::new(exit::USAGE, e))?;
    let job: RunJob =
        serde_json::from_slice(&input).map_err(|e| CliError::usage(format!("not a run: {e}")))?;
    let stdin = match &job.job {
        Job::Run(r) => r.command.stdin.as_deref(),
        Job::Exec { request, .. } => request.stdin.as_deref(),
    };
    let stdin: OwnedFd = match stdin {
        Some(text) => {
            let mut f = scratch().map_err(CliError::from)?;
            f.write_all(text.as_bytes())
                .and_then(|()| f.rewind())
                .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
            f.into()
        }
        None => File::open("/dev/null")
            .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?
            .into(),
    };
    redirect(&stdin, 0)?;
    drop(stdin);
    let result = match job.job {
        Job::Run(r) => run_request(r),
        Job::Exec { name, request } => exec_request(&name, request),
    };
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            let code = e.code;
            let error = serde_json::to_vec(&action_error(e)).unwrap_or_default();
            // The scratch file the parent made for this, behind a descriptor we own.
            let fd = job.error_fd;
            if fd > 2 {
                let dup = std::io::stderr()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
                airlock_sandbox::sys::dup2(fd, dup.as_raw_fd())
                    .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
                let _ = File::from(dup).write_all(&error);
            }
            Ok(code)
        }
    }
}

/// What no command line can hold (NUL bytes), and environment names that are not names.
fn check_strings<'a>(
    strings: impl IntoIterator<Item = &'a String>,
    env: &'a BTreeMap<String, String>,
) -> CliResult<()> {
    if strings
        .into_iter()
        .chain(env.values())
        .any(|s| s.contains('\0'))
    {
        return Err(CliError::usage(
            "the request's strings cannot hold NUL bytes",
        ));
    }
    for k in env.keys() {
        let ok = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(CliError::usage(format!(
                "invalid environment variable name {k:?}: names are [A-Za-z_][A-Za-z0-9_]*"
            )));
        }
    }
    Ok(())
}

/// A command that can be a command line: it names one, and its strings (and `more`) hold no
/// NUL bytes, its environment names are names.
fn check_command<'a>(
    c: &'a ExecRequest,
    more: impl IntoIterator<Item = &'a String>,
) -> CliResult<()> {
    check_strings(c.argv.iter().chain(c.workdir.iter()).chain(more), &c.env)?;
    if c.argv.first().is_none_or(String::is_empty) {
        return Err(CliError::usage("argv must name a command"));
    }
    Ok(())
}

fn env_pairs(env: &BTreeMap<String, String>) -> Vec<String> {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn exec_request(name: &str, r: ExecRequest) -> CliResult<i32> {
    airlock_model::spec::validate_name(name).map_err(CliError::usage)?;
    check_command(&r, [])?;
    let interactive = r.stdin.is_some();
    exec_in(
        name,
        r.argv,
        &env_pairs(&r.env),
        r.workdir.map(Into::into),
        false,
        interactive,
        false,
    )
}

/// The CLI's policy flags for these options (the other flags unset).
pub fn policy_args(p: PolicyOptions, env: Vec<String>) -> crate::cli::PolicyArgs {
    crate::cli::PolicyArgs {
        profile: p.profile,
        compatibility_mode: p.compatibility_mode,
        backend: p.backend,
        kernel: None,
        image: p.image,
        net: p.net,
        no_network: false,
        allow: p.allow,
        workspace: p.workspace,
        ro: vec![],
        rw: vec![],
        env,
        env_pass: vec![],
        secret: vec![],
        memory: p.memory,
        cpus: p.cpus,
        disk: None,
        pids: p.pids,
        require_limits: false,
        user: None,
        hostname: None,
    }
}

fn policy_strings(p: &PolicyOptions) -> impl Iterator<Item = &String> {
    p.allow
        .iter()
        .chain(p.profile.iter())
        .chain(p.compatibility_mode.iter())
        .chain(p.net.iter())
        .chain(p.workspace.iter())
        .chain(p.image.iter())
        .chain(p.backend.iter())
        .chain(p.memory.iter())
        .chain(p.cpus.iter())
}

fn run_request(r: RunRequest) -> CliResult<i32> {
    check_command(
        &r.command,
        [&r.dir].into_iter().chain(policy_strings(&r.policy)),
    )?;
    let dir = Path::new(&r.dir);
    if !dir.is_absolute() {
        return Err(CliError::usage(format!(
            "dir must be an absolute path, not {:?}",
            r.dir
        )));
    }
    std::env::set_current_dir(dir)
        .map_err(|e| CliError::usage(format!("{}: {e}", dir.display())))?;
    let args = crate::cli::RunArgs {
        policy: policy_args(r.policy, env_pairs(&r.command.env)),
        keep: false,
        name: None,
        workdir: r.command.workdir,
        timeout: r.timeout_secs.map(|s| format!("{s}s")),
        tty: false,
        net_log: None,
        interactive: false,
        cmd: r.command.argv,
    };
    crate::cmd::run::run(&args, None, false)
}

/// `up`: the project's configuration and the request's options resolved into a spec as
/// `airlock create` resolves them (in the project directory), then created and started as
/// `airlock create` + `start` do — or, unless `new`, as `airlock up` does. Its record after.
fn up(r: UpRequest) -> Result<airlock_engine::store::Record, ActionError> {
    airlock_model::spec::validate_name(&r.name)
        .map_err(|e| ActionError::new("invalid_name", e.to_string()))?;
    let dir = absolute(&r.dir, "dir")?;
    check_strings(
        policy_strings(&r.policy).chain(r.agent.iter()),
        &BTreeMap::new(),
    )
    .map_err(action_error)?;
    std::env::set_current_dir(dir)
        .map_err(|e| ActionError::new("bad_request", format!("{dir}: {e}")))?;
    let name = r.name.clone();
    let policy = policy_args(r.policy, vec![]);
    as_cli(&name, || {
        if !r.new {
            let args = crate::cli::UpArgs {
                name: Some(r.name.clone()),
                fresh: false,
                agent: r.agent,
                prompt: None,
                no_attach: true,
                policy,
            };
            return crate::cmd::sandbox::up(args, None, false);
        }
        let args = crate::cli::CreateArgs {
            name: r.name.clone(),
            agent: r.agent,
            policy,
        };
        crate::cmd::sandbox::create(args, None, false)?;
        if r.start {
            crate::cmd::sandbox::start(&r.name)?;
        }
        Ok(0)
    })
}

/// A CLI operation on sandbox `name`, its output kept out of the answer (its stderr goes to
/// this process's, the caller's log); then the sandbox's record as the engine has it.
fn as_cli(
    name: &str,
    f: impl FnOnce() -> CliResult<i32>,
) -> Result<airlock_engine::store::Record, ActionError> {
    quietly(f)?;
    let status = crate::cmd::named::client()
        .and_then(|c| Ok(c.status(name)?))
        .map_err(action_error)?;
    Ok(status.record)
}

/// A CLI operation with its stdout and stderr captured (the stderr passed on to this
/// process's, the caller's log); its error typed, a non-zero code as the error of that code.
fn quietly(f: impl FnOnce() -> CliResult<i32>) -> Result<(), ActionError> {
    let (result, _, err) = captured(b"", f)?;
    let _ = std::io::stderr().write_all(&err);
    match result.map_err(action_error)? {
        0 => Ok(()),
        code => Err(ActionError::from_code(
            code,
            format!("failed (exit {code}): {}", text(&err)),
            None,
        )),
    }
}

fn absolute<'a>(path: &'a str, what: &str) -> Result<&'a str, ActionError> {
    if path.starts_with('/') && !path.contains('\0') {
        Ok(path)
    } else {
        Err(ActionError::new(
            "bad_request",
            format!("{what} must be an absolute path, not {path:?}"),
        ))
    }
}

fn forward(action: &Action) -> Result<ActionData, ActionError> {
    let exe = std::env::current_exe()
        .map_err(|e| ActionError::new("internal", format!("this program: {e}")))?;
    let client = airlock_engine::Client::connect_or_start(&exe)
        .map_err(|e| ActionError::new("unavailable", e.to_string()))?;
    let body =
        serde_json::to_value(action).map_err(|e| ActionError::new("internal", e.to_string()))?;
    let (status, value) = client
        .request("POST", "/v1/actions", Some(&body))
        .map_err(|e| ActionError::new("internal", e.to_string()))?;
    if (200..300).contains(&status) {
        serde_json::from_value(value).map_err(|e| ActionError::new("internal", e.to_string()))
    } else {
        serde_json::from_value(value)
            .map_err(|e| ActionError::new("internal", e.to_string()))
            .and_then(Err)
    }
}

fn redirect(fd: &OwnedFd, to: i32) -> CliResult<()> {
    airlock_sandbox::sys::dup2(fd.as_raw_fd(), to)
        .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))
}

/// An anonymous file (never linked anywhere).
fn scratch() -> Result<File, ActionError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(std::env::temp_dir())
        .map_err(|e| ActionError::new("internal", format!("a scratch file: {e}")))
}

fn slurp(mut f: File) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = f.rewind().and_then(|()| f.read_to_end(&mut out));
    out
}

/// What ran: its result, its stdout, its stderr.
type Captured<T> = (CliResult<T>, Vec<u8>, Vec<u8>);

/// What ran with `input` on its stdin: its result, its stdout and its stderr (the caller's own
/// descriptors put back afterwards, whatever `f` did to them).
fn captured<T>(input: &[u8], f: impl FnOnce() -> CliResult<T>) -> Result<Captured<T>, ActionError> {
    let internal = |e: std::io::Error| ActionError::new("internal", e.to_string());
    let mut inp = scratch()?;
    inp.write_all(input)
        .and_then(|()| inp.rewind())
        .map_err(internal)?;
    let (out, err) = (scratch()?, scratch()?);
    let saved: Vec<OwnedFd> = [
        std::io::stdin().as_fd(),
        std::io::stdout().as_fd(),
        std::io::stderr().as_fd(),
    ]
    .into_iter()
    .map(|fd| fd.try_clone_to_owned())
    .collect::<Result<_, _>>()
    .map_err(internal)?;
    let set = |fds: [&dyn AsRawFd; 3]| -> Result<(), ActionError> {
        for (i, fd) in fds.into_iter().enumerate() {
            airlock_sandbox::sys::dup2(fd.as_raw_fd(), i as i32).map_err(internal)?;
        }
        Ok(())
    };
    set([&inp, &out, &err])?;
    let result = f();
    set([&saved[0], &saved[1], &saved[2]])?;
    Ok((result, slurp(out), slurp(err)))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// The inside path for a file action (lexically checked; the sandbox's helper checks the
/// opened file again, inside).
fn inside_path(path: &str) -> Result<String, ActionError> {
    paths::resolve(path).map_err(|e| ActionError::new("refused", e.to_string()))
}

fn roots() -> Vec<std::path::PathBuf> {
    paths::ROOTS.iter().map(std::path::PathBuf::from).collect()
}

/// `airlock-guest fs REQUEST` in the sandbox (its static helper: it resolves the path inside,
/// with the sandbox's own credentials and view, and checks the opened file against the roots),
/// `input` on its stdin. Its answer line and what follows it; its refusal or failure as the
/// action's error.
fn guest_fs(
    name: &str,
    path: &str,
    req: &FsRequest,
    input: Option<&[u8]>,
) -> Result<(FsAnswer, Vec<u8>), ActionError> {
    let argv = vec![
        airlock_guest::TOOL.into(),
        "fs".into(),
        serde_json::to_string(req).map_err(|e| ActionError::new("internal", e.to_string()))?,
    ];
    let interactive = input.is_some();
    let (code, out, err) = captured(input.unwrap_or_default(), || {
        exec_in(name, argv, &[], None, false, interactive, false)
    })?;
    let code = code.map_err(action_error)?;
    let answer = out
        .iter()
        .position(|b| *b == b'\n')
        .and_then(|nl| Some((serde_json::from_slice::<FsAnswer>(&out[..nl]).ok()?, nl)));
    let Some((a, nl)) = answer else {
        return Err(ActionError::from_code(
            if code == 0 {
                exit::SANDBOX_FAILED
            } else {
                code
            },
            format!(
                "{path}: no answer from the sandbox's helper: {}",
                text(&err)
            ),
            None,
        ));
    };
    if !a.ok {
        let msg = a.message.clone().unwrap_or_default();
        return Err(match a.code {
            Some(FsCode::Escape) => ActionError::new("refused", format!("refused: {msg}")),
            Some(FsCode::NotFound) => ActionError::new("no_such_path", format!("{path}: {msg}")),
            Some(FsCode::Invalid) => ActionError::new("bad_request", format!("{path}: {msg}")),
            _ => ActionError::new("failed", format!("{path}: {msg}")),
        });
    }
    Ok((a, out[nl + 1..].to_vec()))
}

/// A directory listing for people: kind, mode, size, name.
fn listing(entries: &[airlock_guest::fs::DirEntry]) -> String {
    use airlock_guest::fs::Kind;
    entries
        .iter()
        .map(|e| {
            let k = match e.kind {
                Kind::Dir => 'd',
                Kind::File => '-',
                Kind::Symlink => 'l',
                Kind::Other => '?',
            };
            format!("{k} {:04o} {:>12} {}\n", e.mode, e.size, e.name)
        })
        .collect()
}

fn file_read(
    name: &str,
    path: &str,
    offset: u64,
    max_bytes: Option<u64>,
) -> Result<FileContent, ActionError> {
    airlock_model::spec::validate_name(name)
        .map_err(|e| ActionError::new("invalid_name", e.to_string()))?;
    let path = inside_path(path)?;
    let max = max_bytes.unwrap_or(256 * 1024);
    if !(1..=MAX_FILE).contains(&max) {
        return Err(ActionError::new(
            "bad_request",
            format!("max_bytes {max} is out of range (1-{MAX_FILE})"),
        ));
    }
    let req = FsRequest::Read {
        path: path.clone().into(),
        offset,
        max: Some(max),
        roots: roots(),
    };
    let (answer, body) = guest_fs(name, &path, &req, None)?;
    if let Some(entries) = &answer.entries {
        let listing = listing(entries);
        return Ok(FileContent {
            path,
            kind: "directory".into(),
            size: None,
            offset: 0,
            returned_bytes: listing.len() as u64,
            truncated: false,
            encoding: Encoding::Utf8,
            content: listing,
            entries: Some(
                entries
                    .iter()
                    .filter_map(|e| serde_json::to_value(e).ok())
                    .collect(),
            ),
        });
    }
    let size = answer.size.unwrap_or(0);
    let (content, encoding) = match std::str::from_utf8(&body) {
        Ok(s) => (s.to_string(), Encoding::Utf8),
        Err(_) => (b64::encode(&body), Encoding::Base64),
    };
    Ok(FileContent {
        path,
        kind: "file".into(),
        size: Some(size),
        offset,
        returned_bytes: body.len() as u64,
        truncated: offset + (body.len() as u64) < size,
        encoding,
        content,
        entries: None,
    })
}

fn file_write(
    name: &str,
    path: &str,
    content: &str,
    encoding: Encoding,
    append: bool,
    create_dirs: bool,
) -> Result<Written, ActionError> {
    airlock_model::spec::validate_name(name)
        .map_err(|e| ActionError::new("invalid_name", e.to_string()))?;
    let path = inside_path(path)?;
    let data = match encoding {
        Encoding::Utf8 => content.as_bytes().to_vec(),
        Encoding::Base64 => b64::decode(content)
            .map_err(|e| ActionError::new("bad_request", format!("content: {e}")))?,
    };
    if data.len() as u64 > MAX_FILE {
        return Err(ActionError::new(
            "too_large",
            format!("content is {} bytes; at most {MAX_FILE}", data.len()),
        ));
    }
    let req = FsRequest::Write {
        path: path.clone().into(),
        append,
        mkdirs: create_dirs,
        roots: roots(),
    };
    let (answer, _) = guest_fs(name, &path, &req, Some(&data))?;
    Ok(Written {
        path,
        written_bytes: data.len() as u64,
        size: answer.size,
    })
}

fn copy(
    name: &str,
    direction: Direction,
    host_path: &str,
    path: &str,
) -> Result<Copied, ActionError> {
    airlock_model::spec::validate_name(name)
        .map_err(|e| ActionError::new("invalid_name", e.to_string()))?;
    absolute(host_path, "host_path")?;
    absolute(path, "path")?;
    let inside = format!("{name}:{path}");
    let (src, dst) = match direction {
        Direction::In => (host_path, inside.as_str()),
        Direction::Out => (inside.as_str(), host_path),
    };
    let (result, _, err) = captured(b"", || crate::cmd::cp::copy(src, dst))?;
    let (code, notes) = result.map_err(action_error)?;
    if code != 0 {
        return Err(ActionError::from_code(
            code,
            format!("the copy failed (exit {code}): {}", text(&err)),
            None,
        ));
    }
    Ok(Copied {
        direction,
        host_path: host_path.to_owned(),
        path: path.to_owned(),
        review: notes.into_iter().map(|(_, n)| n).collect(),
    })
}

fn deliver(name: &str, branch: &str) -> Result<Delivered, ActionError> {
    let args = crate::cli::DeliverArgs {
        name: name.to_owned(),
        branch: branch.to_owned(),
    };
    let (result, _, err) = captured(b"", || crate::cmd::work::deliver(&args))?;
    match result.map_err(action_error)? {
        0 => Ok(Delivered {
            name: name.to_owned(),
            branch: format!("delivered/{branch}"),
        }),
        code => Err(ActionError::from_code(
            code,
            format!("deliver {branch}: {}", text(&err)),
            None,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_round_trip_between_the_cli_and_actions() {
        for code in [
            exit::USAGE,
            exit::NOT_FOUND,
            exit::CONFLICT,
            exit::POLICY_REFUSED,
            125,
        ] {
            let e = CliError::new(code, anyhow::anyhow!("inner")).hint("do this");
            let a = action_error(e);
            assert_eq!((a.code, a.hint.as_deref()), (code, Some("do this")));
            let back = CliError::from(a.clone());
            assert_eq!((back.code, back.hint.as_deref()), (code, Some("do this")));
            assert_eq!(back.error.to_string(), a.message);
        }
        let chained = CliError::new(
            exit::SANDBOX_FAILED,
            anyhow::Error::from(std::io::Error::other("cause")).context("outer"),
        );
        assert_eq!(action_error(chained).message, "outer: cause");
    }
}
