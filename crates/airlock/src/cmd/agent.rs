//! Agent mode commands: prompt, reports, attach, and the agent half of up/stop/list. They talk
//! to the sandbox's supervisor over `DIR/agent.sock` and read its journal; no engine hop.

use super::named::running;
use crate::cli::{AttachArgs, PromptArgs, ReportsArgs};
use crate::error::{CliError, CliResult};
use airlock_agent::host::{Reply, Request};
use airlock_agent::journal::{self, Follower, TurnEnd};
use airlock_agent::{AGENT_LOG, AGENT_SOCKET, REPORTS};
use airlock_model::exit;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// The harness a sandbox was created with (None: not an agent sandbox).
pub fn harness_of(dir: &Path) -> Option<airlock_model::config::Harness> {
    super::named::recorded_spec(dir)?.agent
}

fn not_agent(name: &str) -> CliError {
    CliError::new(
        exit::CONFLICT,
        anyhow::anyhow!("sandbox {name} has no agent"),
    )
    .hint(format!(
        "create it with one: airlock rm {name} && airlock up {name} --agent claude"
    ))
}

/// One request to the supervisor's agent socket (retried while the sandbox is starting).
fn request(dir: &Path, name: &str, req: &Request, timeout: Duration) -> CliResult<Reply> {
    let path = dir.join(AGENT_SOCKET);
    let deadline = Instant::now() + Duration::from_secs(15);
    let conn = loop {
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(c) => break c,
            Err(e) => {
                if !running(name, dir) {
                    return Err(CliError::new(
                        exit::CONFLICT,
                        anyhow::anyhow!("sandbox {name} is not running"),
                    )
                    .hint(format!("airlock start {name}")));
                }
                if Instant::now() >= deadline {
                    return Err(CliError::new(
                        exit::SANDBOX_FAILED,
                        anyhow::anyhow!("the agent of {name} does not answer: {e}"),
                    )
                    .hint(format!("airlock logs {name}")));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let fail = |e: std::io::Error| CliError::new(exit::SANDBOX_FAILED, e);
    conn.set_read_timeout(Some(timeout)).map_err(fail)?;
    let mut line = serde_json::to_vec(req).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    line.push(b'\n');
    (&conn).write_all(&line).map_err(fail)?;
    let mut reply = String::new();
    BufReader::new(&conn).read_line(&mut reply).map_err(fail)?;
    serde_json::from_str(&reply).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))
}

/// `airlock prompt NAME TEXT`.
pub fn prompt(a: &PromptArgs) -> CliResult<i32> {
    send_prompt(&a.name, &a.text, !a.no_wait, a.json)
}

/// Send a prompt; with `wait`, stream the turn's reports until it ends (exit code says how).
/// The exit code comes from the first terminal event (`done`, `blocked`, ended-unreported);
/// the command returns once the turn is journaled as completed, so a `reports` right after
/// sees the whole turn.
pub fn send_prompt(name: &str, text: &str, wait: bool, json: bool) -> CliResult<i32> {
    let mut out = std::io::stdout().lock();
    let (turn, code) = prompt_with(name, text, wait, &mut |raw, e| {
        if json {
            crate::out::check(writeln!(out, "{raw}"));
        } else if let Some(l) = journal::render(e) {
            crate::out::check(writeln!(out, "{l}"));
        }
        crate::out::check(out.flush());
    })?;
    if !wait {
        outln!("turn {turn}");
    }
    Ok(code)
}

/// Send a prompt; with `wait`, give each of the turn's journal lines (raw and parsed) to `sink`
/// until the turn ends. The turn's id and the exit code (0 done, 3 blocked, 4 unreported; 0
/// without `wait`).
pub fn prompt_with(
    name: &str,
    text: &str,
    wait: bool,
    sink: &mut dyn FnMut(&str, &airlock_model::agent::protocol::JournalEntry),
) -> CliResult<(u64, i32)> {
    let dir = super::named::existing_dir(name)?;
    if harness_of(&dir).is_none() {
        return Err(not_agent(name));
    }
    let reports = dir.join(REPORTS);
    let offset = journal::len(&reports);
    let reply = request(
        &dir,
        name,
        &Request::Prompt {
            text: text.to_string(),
        },
        Duration::from_secs(10),
    )?;
    let Some(turn) = reply.turn_id.filter(|_| reply.ok) else {
        return Err(CliError::new(
            exit::SANDBOX_FAILED,
            anyhow::anyhow!(
                "the agent refused the prompt: {}",
                reply.error.unwrap_or_default()
            ),
        )
        .hint(format!("airlock logs {name}")));
    };
    if !wait {
        return Ok((turn, 0));
    }
    let mut f = Follower::from_offset(&reports, offset);
    let mut ended: Option<i32> = None;
    loop {
        for (raw, e) in f.poll() {
            let Some(e) = e else { continue };
            let mine = airlock_agent::host::turn_of(&e.msg) == Some(turn)
                || matches!(
                    e.msg,
                    airlock_model::agent::protocol::JournalMsg::Sandbox(
                        airlock_model::agent::SandboxMsg::Error { .. }
                    )
                );
            if !mine {
                continue;
            }
            sink(&raw, &e);
            let code = match journal::ends_turn(&e, turn) {
                Some(TurnEnd::Done) => Some(0),
                Some(TurnEnd::Blocked) => Some(exit::AGENT_BLOCKED),
                Some(TurnEnd::Unreported) => Some(exit::AGENT_UNREPORTED),
                None => None,
            };
            ended = ended.or(code);
            if journal::completes_turn(&e, turn) {
                return Ok((turn, ended.unwrap_or(exit::AGENT_UNREPORTED)));
            }
        }
        if !running(name, &dir) {
            if let Some(code) = ended {
                return Ok((turn, code));
            }
            return Err(CliError::new(
                exit::CONFLICT,
                anyhow::anyhow!("sandbox {name} stopped during turn {turn}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `airlock reports NAME [--follow] [--json]`.
pub fn reports(a: &ReportsArgs) -> CliResult<i32> {
    let mut out = std::io::stdout().lock();
    reports_with(
        &a.name,
        a.follow,
        &mut |raw, e| {
            if a.json {
                crate::out::check(writeln!(out, "{raw}"));
            } else if let Some(l) = e.and_then(journal::render) {
                crate::out::check(writeln!(out, "{l}"));
            }
        },
        &mut || crate::out::check(std::io::stdout().flush()),
    )
}

/// The report journal, line by line (raw, and parsed when it parses) to `sink`; with `follow`,
/// as it grows, for good. `flush` after each batch.
pub fn reports_with(
    name: &str,
    follow: bool,
    sink: &mut dyn FnMut(&str, Option<&airlock_model::agent::protocol::JournalEntry>),
    flush: &mut dyn FnMut(),
) -> CliResult<i32> {
    let dir = super::named::existing_dir(name)?;
    let mut f = Follower::from_offset(&dir.join(REPORTS), 0);
    loop {
        for (raw, e) in f.poll() {
            sink(&raw, e.as_ref());
        }
        flush();
        if !follow {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `airlock attach NAME`: follow the agent's live session — the harness's output as it runs and
/// the reports between — until Ctrl-C. Not an agent sandbox, or `--shell`: a shell with a PTY.
pub fn attach(a: &AttachArgs) -> CliResult<i32> {
    let dir = super::named::existing_dir(&a.name)?;
    if a.shell || harness_of(&dir).is_none() {
        return crate::cmd::exec::shell(&a.name);
    }
    if !running(&a.name, &dir) {
        return Err(CliError::new(
            exit::CONFLICT,
            anyhow::anyhow!("sandbox {} is not running", a.name),
        )
        .hint(format!("airlock reports {} shows what it did", a.name)));
    }
    errln!(
        "airlock: following the agent of {0} (Ctrl-C detaches; `airlock prompt {0} \"…\"` steers it, `airlock attach --shell {0}` opens a shell)",
        a.name
    );
    let log = dir.join(AGENT_LOG);
    let mut log_offset = tail_offset(&log, 8 * 1024);
    let mut reports = Follower::from_offset(&dir.join(REPORTS), journal::len(&dir.join(REPORTS)));
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Ok(mut f) = std::fs::File::open(&log) {
            if f.seek(SeekFrom::Start(log_offset)).is_ok() {
                while let Ok(n) = f.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    log_offset += n as u64;
                    crate::out::bytes(&mut out, &buf[..n]);
                }
            }
        }
        for (_, e) in reports.poll() {
            if let Some(l) = e.as_ref().and_then(journal::render) {
                crate::out::check(writeln!(out, "\n[airlock] {l}"));
            }
        }
        crate::out::check(out.flush());
        if !running(&a.name, &dir) {
            errln!("airlock: sandbox {} stopped", a.name);
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

fn tail_offset(path: &Path, keep: u64) -> u64 {
    journal::len(path).saturating_sub(keep)
}

/// Before `stop`: tell the agent to finish its turn and the runner to exit (bounded by `wait`).
pub fn finish_before_stop(name: &str, wait: Duration) {
    let Ok(dir) = super::named::existing_dir(name) else {
        return;
    };
    if harness_of(&dir).is_none() || !running(name, &dir) || !dir.join(AGENT_SOCKET).exists() {
        return;
    }
    let req = Request::Stop {
        wait_secs: wait.as_secs(),
    };
    let _ = request(&dir, name, &req, wait + Duration::from_secs(5));
}

/// For `list`: the last report of each agent sandbox.
pub fn last_report(name: &str) -> Option<(String, serde_json::Value)> {
    let dir = super::named::sandbox_dir(name);
    let e = journal::last_report(&dir.join(REPORTS))?;
    let v = serde_json::to_value(&e).ok()?;
    Some((journal::summary(&e), v))
}

/// After an agent sandbox starts: is its harness there? Asked inside, of the runner's own PATH
/// (no shell or tool of the image needed). An error says where airlock looked and how to
/// provide the CLI.
pub fn check_harness(name: &str) -> CliResult<()> {
    let Some(spec) = super::named::existing_dir(name)
        .ok()
        .and_then(|d| super::named::recorded_spec(&d))
    else {
        return Ok(());
    };
    let Some(h) = &spec.agent else { return Ok(()) };
    let argv = airlock_model::agent::adapter::turn_command(h, "", false, 0).argv;
    let Some(program) = argv.first() else {
        return Ok(());
    };
    let exe = std::env::current_exe().map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    let out = std::process::Command::new(exe)
        .args([
            "exec",
            name,
            "--",
            airlock_agent::GUEST_TOOL,
            "which",
            program,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(CliError::new(
        exit::NOT_FOUND_CMD,
        anyhow::anyhow!("the {} harness cannot start in {name}: {said}", airlock_model::agent::adapter::harness_name(h)),
    )
    .hint(format!(
        "the sandbox sees the host's /usr read-only: install the CLI on the host (e.g. `npm install -g` puts it in /usr/local/bin), or mount it with `--ro DIR` and put DIR on PATH with `-e PATH=DIR:/usr/local/bin:/usr/bin:/bin`, or name it in `[agent] harness = {{ command = [\"/path/to/{program}\"] }}`; then `airlock up {name} --fresh` with those options"
    )))
}
