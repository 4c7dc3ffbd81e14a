//! The agent runner: runs inside the sandbox as the sandbox user, started by the supervisor
//! through exec with the channel on its stdin/stdout (pipes only the supervisor holds). It runs
//! the harness once per prompt, continuing the conversation, and serves the `report` tool on a
//! socket of the sandbox's own /tmp. It is not dumpable, so the agent (same uid, no
//! capabilities) cannot open its descriptors through /proc to speak for the host.
//!
//! Turn rules: `done`/`blocked` end the turn (a harness still running `[agent] grace` later is
//! stopped, and the turn's `turn_completed` says so); a harness that exits with no terminal report ends the turn unreported once
//! `REPORT_GRACE` has passed (a report may still be on its way from a background process).

use super::report::{ReportReply, ReportRequest};
use super::{path_with_tools, REPORT_SOCKET};
use airlock_model::agent::adapter::{harness_name, seed_settings, turn_command};
use airlock_model::agent::protocol::{decode, encode, Decoded};
use airlock_model::agent::{HostMsg, ReportStatus, SandboxMsg, PROTOCOL_VERSION};
use airlock_model::config::Harness;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REPORT_GRACE: Duration = Duration::from_secs(2);
const HEARTBEAT: Duration = Duration::from_secs(5);

enum Ev {
    Host(HostMsg),
    HostGone,
    Report(ReportRequest, Sender<ReportReply>),
    Exited { turn_id: u64, code: Option<i32> },
}

#[derive(Clone)]
struct Out(Arc<Mutex<std::io::Stdout>>);

impl Out {
    fn send(&self, m: &SandboxMsg) {
        let mut o = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // The host gone: stdin's EOF ends the runner.
        let _ = o.write_all(&encode(m)).and_then(|()| o.flush());
    }
}

struct Turn {
    id: u64,
    terminal: Option<ReportStatus>,
    terminal_at: Option<Instant>,
    exited: Option<(Option<i32>, Instant)>,
    pgid: Option<i32>,
    /// When the harness was stopped: seconds after its terminal report.
    killed: Option<u64>,
}

/// `airlock-guest runner --harness JSON --grace-secs N`.
pub fn main(harness_json: &str, grace_secs: u64) -> i32 {
    let finish_grace = Duration::from_secs(grace_secs);
    let harness: Harness = match serde_json::from_str(harness_json) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("airlock agent runner: bad harness {harness_json:?}: {e}");
            return 2;
        }
    };
    // No /proc/self/fd for same-uid processes: the channel stays the host's.
    let _ = nix::sys::prctl::set_dumpable(false);
    let out = Out(Arc::new(Mutex::new(std::io::stdout())));
    out.send(&SandboxMsg::Hello {
        version: PROTOCOL_VERSION,
        harness: harness_name(&harness),
    });
    let (tx, rx) = mpsc::channel();
    if let Err(e) = serve_reports(tx.clone()) {
        out.send(&SandboxMsg::Error {
            message: format!("cannot serve the report socket {REPORT_SOCKET}: {e}"),
        });
        return 1;
    }
    read_host(tx.clone());
    let hb = out.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(HEARTBEAT);
        hb.send(&SandboxMsg::Heartbeat);
    });
    out.send(&SandboxMsg::Ready);
    run_loop(&harness, finish_grace, &out, &rx, &tx);
    let _ = std::fs::remove_file(REPORT_SOCKET);
    0
}

fn read_host(tx: Sender<Ev>) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(std::io::stdin());
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            match decode::<HostMsg>(&line) {
                Decoded::Msg(m) => {
                    if tx.send(Ev::Host(m)).is_err() {
                        return;
                    }
                }
                Decoded::Unknown { kind } => {
                    eprintln!("airlock agent runner: skipped unknown message kind {kind:?}")
                }
                Decoded::Malformed { error } => {
                    eprintln!("airlock agent runner: skipped a malformed line: {error}")
                }
                Decoded::Empty => {}
            }
        }
        let _ = tx.send(Ev::HostGone);
    });
}

fn serve_reports(tx: Sender<Ev>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(REPORT_SOCKET);
    let l = std::os::unix::net::UnixListener::bind(REPORT_SOCKET)?;
    std::fs::set_permissions(REPORT_SOCKET, std::fs::Permissions::from_mode(0o600))?;
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut line = Vec::new();
                let mut r = BufReader::new((&conn).take(64 * 1024));
                if r.read_until(b'\n', &mut line).is_err() {
                    return;
                }
                let reply = match serde_json::from_slice::<ReportRequest>(&line) {
                    Ok(req) => {
                        let (rtx, rrx) = mpsc::channel();
                        if tx.send(Ev::Report(req, rtx)).is_err() {
                            return;
                        }
                        rrx.recv_timeout(Duration::from_secs(5))
                            .unwrap_or_else(|_| refused("the runner did not answer"))
                    }
                    Err(e) => refused(&format!("not a report: {e}")),
                };
                let mut w = &conn;
                let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
                bytes.push(b'\n');
                let _ = w.write_all(&bytes);
            });
        }
    });
    Ok(())
}

fn refused(why: &str) -> ReportReply {
    ReportReply {
        ok: false,
        turn_id: None,
        note: Some(why.into()),
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// Set once a turn has run in this sandbox: later turns continue the conversation (the harness
/// keeps it under $HOME, which a named sandbox keeps).
fn session_marker() -> PathBuf {
    home().join(".airlock").join("agent-session")
}

fn run_loop(
    harness: &Harness,
    finish_grace: Duration,
    out: &Out,
    rx: &Receiver<Ev>,
    tx: &Sender<Ev>,
) {
    let mut queue: VecDeque<(u64, String)> = VecDeque::new();
    let mut current: Option<Turn> = None;
    let mut stopping = false;
    loop {
        if current.is_none() {
            if let Some((id, text)) = queue.pop_front() {
                current = Some(start_turn(harness, id, &text, out, tx));
            } else if stopping {
                return;
            }
        }
        let ev = rx.recv_timeout(Duration::from_millis(100));
        match ev {
            Ok(Ev::Host(HostMsg::Hello { version })) if version != PROTOCOL_VERSION => {
                out.send(&SandboxMsg::Error {
                    message: format!(
                        "protocol version {version} is not supported (runner speaks {PROTOCOL_VERSION})"
                    ),
                });
            }
            Ok(Ev::Host(HostMsg::Hello { .. })) => {}
            Ok(Ev::Host(HostMsg::Prompt { turn_id, text })) => queue.push_back((turn_id, text)),
            Ok(Ev::Host(HostMsg::Stop)) => {
                stopping = true;
                queue.clear();
            }
            Ok(Ev::HostGone) => {
                if let Some(t) = &mut current {
                    kill_turn(t);
                }
                return;
            }
            Ok(Ev::Report(req, reply)) => {
                let _ = reply.send(accept_report(req, current.as_mut(), out));
            }
            Ok(Ev::Exited { turn_id, code }) => {
                if let Some(t) = current.as_mut().filter(|t| t.id == turn_id) {
                    t.exited = Some((code, Instant::now()));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if let Some(t) = &mut current {
            if t.terminal.is_some() && t.exited.is_none() && t.killed.is_none() {
                let late = t.terminal_at.is_some_and(|at| at.elapsed() > finish_grace);
                if late || stopping {
                    kill_turn(t);
                }
            }
            let over = match (t.terminal, t.exited) {
                (Some(_), Some(_)) => true,
                (None, Some((_, at))) => at.elapsed() >= REPORT_GRACE,
                _ => false,
            };
            if over {
                out.send(&SandboxMsg::TurnCompleted {
                    turn_id: t.id,
                    reported: t.terminal.is_some(),
                    exit_code: t.exited.and_then(|(c, _)| c),
                    stopped_after_secs: t.killed,
                });
                current = None;
            }
        }
    }
}

fn accept_report(req: ReportRequest, turn: Option<&mut Turn>, out: &Out) -> ReportReply {
    let text: String = req.text.chars().take(16 * 1024).collect();
    let (turn_id, note) = match turn {
        Some(t) if t.terminal.is_none() => {
            if req.status.is_terminal() {
                t.terminal = Some(req.status);
                t.terminal_at = Some(Instant::now());
            }
            (Some(t.id), None)
        }
        Some(t) => (
            Some(t.id),
            Some(format!(
                "this turn already ended ({}); recorded as a note",
                t.terminal.map(|s| s.as_str()).unwrap_or("")
            )),
        ),
        None => (
            None,
            Some("no turn in progress; recorded between turns".into()),
        ),
    };
    out.send(&SandboxMsg::Report {
        status: req.status,
        text,
        turn_id,
    });
    ReportReply {
        ok: true,
        turn_id,
        note,
    }
}

fn start_turn(harness: &Harness, id: u64, text: &str, out: &Out, tx: &Sender<Ev>) -> Turn {
    out.send(&SandboxMsg::TurnAccepted { turn_id: id });
    let marker = session_marker();
    let continuing = marker.exists();
    let tc = turn_command(harness, text, continuing, id);
    let mut turn = Turn {
        id,
        terminal: None,
        terminal_at: None,
        exited: None,
        pgid: None,
        killed: None,
    };
    let cwd = if Path::new("/workspace").is_dir() {
        PathBuf::from("/workspace")
    } else {
        home()
    };
    let mut cmd = Command::new(&tc.argv[0]);
    if let Some((rel, contents)) = seed_settings(harness) {
        let path = home().join(rel);
        if std::fs::symlink_metadata(&path).is_err() {
            let _ = path
                .parent()
                .map(std::fs::create_dir_all)
                .transpose()
                .and_then(|_| std::fs::write(&path, contents));
        }
    }
    cmd.envs(secrets())
        .args(&tc.argv[1..])
        .envs(tc.env.iter().map(|(k, v)| (k, v)))
        .env(
            "PATH",
            path_with_tools(std::env::var("PATH").ok().as_deref()),
        )
        .env("AIRLOCK_REPORT_SOCKET", REPORT_SOCKET)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    match cmd.spawn() {
        Ok(mut child) => {
            if let Some(dir) = marker.parent() {
                let _ = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&marker, b""));
            }
            turn.pgid = Some(child.id() as i32);
            for r in [
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
            ]
            .into_iter()
            .flatten()
            {
                let out = out.clone();
                std::thread::spawn(move || forward_output(r, id, &out));
            }
            let tx = tx.clone();
            std::thread::spawn(move || {
                use std::os::unix::process::ExitStatusExt;
                let code = child
                    .wait()
                    .ok()
                    .and_then(|s| s.code().or(s.signal().map(|n| 128 + n)));
                let _ = tx.send(Ev::Exited { turn_id: id, code });
            });
        }
        Err(e) => {
            out.send(&SandboxMsg::Error {
                message: format!("cannot start the harness {:?}: {e}", tc.argv[0]),
            });
            turn.exited = Some((None, Instant::now() - REPORT_GRACE));
        }
    }
    turn
}

/// The sandbox's secrets (0400 files of the sandbox user on its /run tmpfs): the harness gets
/// them as environment variables, e.g. its credential under the name the adapter reads.
fn secrets() -> Vec<(String, String)> {
    let Ok(rd) = std::fs::read_dir("/run/secrets") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let value = std::fs::read_to_string(e.path()).ok()?;
            Some((name, value))
        })
        .collect()
}

fn forward_output(mut r: Box<dyn Read + Send>, turn_id: u64, out: &Out) {
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => out.send(&SandboxMsg::Output {
                turn_id,
                text: String::from_utf8_lossy(&buf[..n]).into_owned(),
            }),
        }
    }
}

fn kill_turn(t: &mut Turn) {
    use nix::sys::signal::{killpg, Signal};
    t.killed = Some(t.terminal_at.map_or(0, |at| at.elapsed().as_secs()));
    if let Some(pg) = t.pgid {
        let pg = nix::unistd::Pid::from_raw(pg);
        let _ = killpg(pg, Signal::SIGTERM);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            let _ = killpg(pg, Signal::SIGKILL);
        });
    }
}
