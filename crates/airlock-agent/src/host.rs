//! The host side of the agent channel, in the sandbox's supervisor: starts the runner inside
//! (through exec, the channel on its stdin/stdout), journals every message to
//! `DIR/reports.ndjson`, appends the harness's output to `DIR/agent.log`, turns network denials
//! into `blocked` events, and serves `prompt`/`stop` on `DIR/agent.sock` — a host path, mode
//! 0600, callers of our own uid only; nothing inside the sandbox can see it.

use super::{AGENT_LOG, AGENT_SOCKET, GUEST_TOOL, REPORTS};
use airlock_egress::journal::{now_rfc3339, Event, Verdict};
use airlock_model::agent::protocol::{decode, encode, Decoded, JournalEntry, JournalMsg, Origin};
use airlock_model::agent::{HostMsg, SandboxMsg, PROTOCOL_VERSION};
use airlock_model::config::Harness;
use airlock_model::policy::Seconds;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request on `DIR/agent.sock` (one line), answered with one `Reply` line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Queue the next turn.
    Prompt { text: String },
    /// Ask the agent to finish its turn and the runner to exit; answered when it has (or
    /// after `wait_secs`).
    Stop { wait_secs: u64 },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Runner {
    stdin: ChildStdin,
    child: Arc<Mutex<Child>>,
}

#[derive(Default)]
struct State {
    next_turn: u64,
    current_turn: Option<u64>,
    runner: Option<Runner>,
    /// (turn, domain, port) already reported as blocked: a resolver retries, asks A and AAAA.
    blocked_seen: HashSet<(Option<u64>, String, Option<u16>)>,
}

pub struct Host {
    dir: PathBuf,
    harness: Harness,
    /// `[agent] grace`, handed to the runner.
    grace: Seconds,
    exe: PathBuf,
    journal: Mutex<File>,
    output: Mutex<File>,
    state: Mutex<State>,
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl Host {
    pub fn new(
        dir: &Path,
        harness: Harness,
        grace: Seconds,
        exe: PathBuf,
    ) -> std::io::Result<Arc<Host>> {
        let last = super::journal::read(&dir.join(REPORTS))
            .iter()
            .filter_map(|e| turn_of(&e.msg))
            .max()
            .unwrap_or(0);
        Ok(Arc::new(Host {
            dir: dir.to_path_buf(),
            harness,
            grace,
            exe,
            journal: Mutex::new(append(&dir.join(REPORTS))?),
            output: Mutex::new(append(&dir.join(AGENT_LOG))?),
            state: Mutex::new(State {
                next_turn: last + 1,
                ..State::default()
            }),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, from: Origin, msg: JournalMsg) {
        let e = JournalEntry {
            time: now_rfc3339(),
            from,
            msg,
        };
        if let Ok(mut line) = serde_json::to_vec(&e) {
            line.push(b'\n');
            let mut j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
            let _ = j.write_all(&line);
        }
    }

    /// The egress listener: each distinct denial during the sandbox's life becomes a `blocked`
    /// event of the turn in progress.
    pub fn egress_callback(self: &Arc<Self>) -> Arc<dyn Fn(&Event) + Send + Sync> {
        let host = Arc::downgrade(self);
        Arc::new(move |ev: &Event| {
            if ev.decision != Verdict::Deny {
                return;
            }
            if let Some(h) = host.upgrade() {
                h.denied(ev);
            }
        })
    }

    fn denied(&self, ev: &Event) {
        // A connection that names no destination was not refused anything (the client hung
        // up before its request): nothing for the user to allow.
        let Some(domain) = ev.host.clone().or_else(|| ev.dst.clone()) else {
            return;
        };
        let turn_id = {
            let mut st = self.state();
            let t = st.current_turn;
            if !st.blocked_seen.insert((t, domain.clone(), ev.port)) {
                return;
            }
            t
        };
        let hint = ev.fix.clone().unwrap_or_else(|| {
            "this destination cannot be allowed (private, loopback or metadata address)".into()
        });
        self.record(
            Origin::Host,
            JournalMsg::Sandbox(SandboxMsg::Blocked {
                turn_id,
                domain,
                port: ev.port,
                reason: ev.reason.clone().unwrap_or_else(|| "not allowed".into()),
                hint,
            }),
        );
    }

    /// Start the runner and the host socket (the sandbox is up and published for exec).
    pub fn start(self: &Arc<Self>) {
        if let Err(e) = self.ensure_runner() {
            eprintln!("airlock: agent: cannot start the runner: {e}");
        }
        let path = self.dir.join(AGENT_SOCKET);
        let _ = std::fs::remove_file(&path);
        let listener = match std::os::unix::net::UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("airlock: agent: cannot create {}: {e}", path.display());
                return;
            }
        };
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        let me = nix::unistd::geteuid().as_raw();
        let host = self.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let ok =
                    nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
                        .is_ok_and(|c| c.uid() == me || c.uid() == 0);
                if !ok {
                    continue;
                }
                let host = host.clone();
                std::thread::spawn(move || host.serve(conn));
            }
        });
    }

    fn serve(self: &Arc<Self>, conn: std::os::unix::net::UnixStream) {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            return;
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Prompt { text }) => self.prompt(text),
            Ok(Request::Stop { wait_secs }) => self.stop(Duration::from_secs(wait_secs)),
            Err(e) => Reply {
                ok: false,
                turn_id: None,
                error: Some(format!("bad request: {e}")),
            },
        };
        let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
        bytes.push(b'\n');
        let _ = (&conn).write_all(&bytes);
    }

    fn send(&self, st: &mut State, msg: HostMsg) -> std::io::Result<()> {
        let r = st
            .runner
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the agent runner is not running"))?;
        r.stdin.write_all(&encode(&msg))?;
        r.stdin.flush()?;
        self.record(Origin::Host, JournalMsg::Host(msg));
        Ok(())
    }

    fn prompt(self: &Arc<Self>, text: String) -> Reply {
        if let Err(e) = self.ensure_runner() {
            return Reply {
                ok: false,
                turn_id: None,
                error: Some(format!("cannot start the agent runner: {e}")),
            };
        }
        let mut st = self.state();
        let turn_id = st.next_turn;
        match self.send(&mut st, HostMsg::Prompt { turn_id, text }) {
            Ok(()) => {
                st.next_turn += 1;
                Reply {
                    ok: true,
                    turn_id: Some(turn_id),
                    error: None,
                }
            }
            Err(e) => Reply {
                ok: false,
                turn_id: None,
                error: Some(e.to_string()),
            },
        }
    }

    fn stop(&self, wait: Duration) -> Reply {
        let child = {
            let mut st = self.state();
            if self.send(&mut st, HostMsg::Stop).is_err() {
                return Reply {
                    ok: true,
                    turn_id: None,
                    error: None,
                };
            }
            st.runner.as_ref().map(|r| r.child.clone())
        };
        let deadline = Instant::now() + wait;
        while let Some(c) = &child {
            let done = c
                .lock()
                .map(|mut c| c.try_wait().ok().flatten().is_some())
                .unwrap_or(true);
            if done || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Reply {
            ok: true,
            turn_id: None,
            error: None,
        }
    }

    /// Start the runner unless it runs (it is restarted if it died, e.g. killed from inside).
    fn ensure_runner(self: &Arc<Self>) -> std::io::Result<()> {
        let mut st = self.state();
        if let Some(r) = &st.runner {
            let alive = r
                .child
                .lock()
                .map(|mut c| c.try_wait().ok().flatten().is_none())
                .unwrap_or(false);
            if alive {
                return Ok(());
            }
        }
        let harness = serde_json::to_string(&self.harness).map_err(std::io::Error::other)?;
        let mut child = Command::new(&self.exe)
            .arg("__exec")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--")
            .arg(GUEST_TOOL)
            .arg("runner")
            .arg("--harness")
            .arg(harness)
            .arg("--grace-secs")
            .arg(self.grace.0.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        let child = Arc::new(Mutex::new(child));
        st.runner = Some(Runner {
            stdin,
            child: child.clone(),
        });
        self.send(
            &mut st,
            HostMsg::Hello {
                version: PROTOCOL_VERSION,
            },
        )?;
        drop(st);
        let host = self.clone();
        std::thread::spawn(move || host.read_runner(stdout, child));
        Ok(())
    }

    fn read_runner(&self, stdout: std::process::ChildStdout, child: Arc<Mutex<Child>>) {
        let mut r = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            match decode::<SandboxMsg>(&line) {
                Decoded::Msg(m) => self.on_runner_msg(m),
                Decoded::Unknown { kind } => {
                    eprintln!("airlock: agent: skipped unknown message kind {kind:?}")
                }
                Decoded::Malformed { error } => {
                    eprintln!("airlock: agent: skipped a malformed line: {error}")
                }
                Decoded::Empty => {}
            }
        }
        if let Ok(mut c) = child.lock() {
            let _ = c.wait();
        }
        // The runner is gone: a turn in progress ends unreported, and the user learns why.
        let turn = {
            let mut st = self.state();
            if st
                .runner
                .as_ref()
                .is_some_and(|r| Arc::ptr_eq(&r.child, &child))
            {
                st.runner = None;
            }
            st.current_turn.take()
        };
        self.record(
            Origin::Host,
            JournalMsg::Sandbox(SandboxMsg::Error {
                message: "the agent runner exited".into(),
            }),
        );
        if let Some(turn_id) = turn {
            self.record(
                Origin::Host,
                JournalMsg::Sandbox(SandboxMsg::TurnCompleted {
                    turn_id,
                    reported: false,
                    exit_code: None,
                    stopped_after_secs: None,
                }),
            );
        }
    }

    fn on_runner_msg(&self, m: SandboxMsg) {
        match &m {
            SandboxMsg::Heartbeat => return,
            SandboxMsg::Output { text, .. } => {
                let mut o = self.output.lock().unwrap_or_else(|p| p.into_inner());
                let _ = o.write_all(text.as_bytes());
                return;
            }
            SandboxMsg::TurnAccepted { turn_id } => {
                let mut st = self.state();
                st.current_turn = Some(*turn_id);
                drop(st);
                self.banner(&format!("turn {turn_id}"));
            }
            SandboxMsg::TurnCompleted { turn_id, .. } => {
                let mut st = self.state();
                if st.current_turn == Some(*turn_id) {
                    st.current_turn = None;
                }
            }
            // The runner may not speak for the host: a `blocked` from inside is its claim only.
            SandboxMsg::Blocked { .. } => {}
            _ => {}
        }
        self.record(Origin::Sandbox, JournalMsg::Sandbox(m));
    }

    fn banner(&self, what: &str) {
        let mut o = self.output.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(o, "\n===== airlock: {what} ({}) =====", now_rfc3339());
    }
}

/// The turn a journaled message belongs to.
pub fn turn_of(m: &JournalMsg) -> Option<u64> {
    match m {
        JournalMsg::Host(HostMsg::Prompt { turn_id, .. }) => Some(*turn_id),
        JournalMsg::Sandbox(s) => match s {
            SandboxMsg::TurnAccepted { turn_id }
            | SandboxMsg::TurnCompleted { turn_id, .. }
            | SandboxMsg::Output { turn_id, .. } => Some(*turn_id),
            SandboxMsg::Report { turn_id, .. } | SandboxMsg::Blocked { turn_id, .. } => *turn_id,
            _ => None,
        },
        _ => None,
    }
}
