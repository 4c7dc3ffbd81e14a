//! The host's end of a held guest (a named microVM sandbox): one channel, many sessions. The
//! host sends the job with `hold`, waits for the guest's `hello` (which must offer sessions)
//! and `ready`, then starts `exec` sessions over the same channel; a reader thread routes
//! the guest's lines to their session by id. Protocol: `airlock_model::vm`.

use airlock_model::vm::{
    b64_decode, b64_encode, GuestExec, GuestJob, GuestMsg, HostMsg, MAIN_SESSION,
    VM_PROTOCOL_VERSION,
};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The longest line the host reads from the guest (its output chunks are 32 KiB, base64).
const MAX_LINE: u64 = 1 << 20;

/// What one session hears from the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The command ended with this status (128+N: signal N). Last event of the session.
    Exit(i32),
    /// The guest could not start the command, or the channel closed under it. Last event.
    Error(String),
}

type Routes = Arc<Mutex<Option<HashMap<u32, Sender<Event>>>>>;

/// A held guest's channel (see the module documentation).
pub struct Mux {
    writer: Mutex<UnixStream>,
    /// Open sessions by id; None once the channel has closed (no new session then).
    routes: Routes,
    next: Mutex<u32>,
    reader: Option<JoinHandle<()>>,
    /// The guest's kernel release, from its hello.
    pub kernel: String,
}

/// One `exec` session: its events, and its input side.
pub struct Session<'a> {
    mux: &'a Mux,
    pub id: u32,
    events: Receiver<Event>,
}

use super::channel::send;

/// The next message from the guest: None when the channel closed or sent an over-long line
/// (the guest is untrusted: that ends the channel rather than growing this process).
/// Unreadable lines are skipped.
pub(crate) fn next_msg(reader: &mut BufReader<UnixStream>) -> Option<GuestMsg> {
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) if line.last() != Some(&b'\n') => {
                crate::phase("vm channel: over-long or unterminated line; channel ended");
                return None;
            }
            Ok(_) => {}
        }
        match serde_json::from_slice(&line) {
            Ok(m) => return Some(m),
            Err(e) => crate::phase(&format!("vm channel: unreadable line skipped: {e}")),
        }
    }
}

/// [`Mux::open_sealed`]'s error when the channel closed before the guest sent anything: it
/// never ran (a boot snapshot QEMU could not load).
pub const UNHEARD: &str = "the guest closed its channel before it said anything";

impl Mux {
    /// Send `job` (which must hold) over `stream` and wait until the guest has built its root.
    /// Errors: the guest closed the channel, does not serve sessions, or could not set up.
    pub fn open(stream: UnixStream, job: &GuestJob) -> Result<Mux, String> {
        Mux::open_sealed(stream, job, &super::channel::Sealed::default())
    }

    /// `open`, with the secrets and CA bundle the guest installs for every session.
    pub fn open_sealed(
        stream: UnixStream,
        job: &GuestJob,
        sealed: &super::channel::Sealed,
    ) -> Result<Mux, String> {
        if !job.hold || !job.argv.is_empty() {
            return Err("a held guest's job has no command of its own".into());
        }
        let mut w = stream
            .try_clone()
            .map_err(|e| format!("the VM channel: {e}"))?;
        let run = sealed.run(job);
        send(&mut w, &run).map_err(|e| format!("send the job to the guest: {e}"))?;
        let mut reader = BufReader::new(stream);
        let mut kernel = None;
        let mut heard = false;
        loop {
            let msg = next_msg(&mut reader);
            match msg {
                None if !heard => return Err(UNHEARD.into()),
                None => {
                    return Err("the guest closed its channel before it was ready".into());
                }
                Some(GuestMsg::Resumed { kernel: k, .. }) => {
                    crate::phase("guest resumed from the boot snapshot");
                    kernel = Some(k);
                }
                Some(GuestMsg::Hello {
                    v,
                    kernel: k,
                    sessions,
                }) => {
                    if !sessions {
                        return Err(format!(
                            "the guest's airlock-guest (protocol {v}) does not serve exec sessions; \
                             its initramfs is older than this airlock"
                        ));
                    }
                    crate::phase(&format!("guest up (protocol {v}, kernel {k})"));
                    kernel = Some(k);
                }
                Some(GuestMsg::Ready { .. }) => break,
                Some(GuestMsg::Timing { steps, .. }) => super::channel::show_timing(&steps),
                Some(GuestMsg::Error { message, .. }) => {
                    return Err(format!("the guest could not set up: {message}"));
                }
                Some(_) => crate::phase("vm channel: unexpected message before ready skipped"),
            }
            heard = true;
        }
        let routes: Routes = Arc::new(Mutex::new(Some(HashMap::new())));
        let r = routes.clone();
        let reader = std::thread::spawn(move || route(reader, &r));
        Ok(Mux {
            writer: Mutex::new(w),
            routes,
            next: Mutex::new(MAIN_SESSION),
            reader: Some(reader),
            kernel: kernel.unwrap_or_default(),
        })
    }

    fn send(&self, m: &HostMsg) -> Result<(), String> {
        let mut w = self
            .writer
            .lock()
            .map_err(|_| "the VM channel's writer failed earlier".to_string())?;
        send(&mut *w, m).map_err(|e| format!("write to the VM channel: {e}"))
    }

    /// Start `exec` as a new session beside the others.
    pub fn exec(&self, exec: GuestExec) -> Result<Session<'_>, String> {
        let id = {
            let mut n = self.next.lock().map_err(|_| "session ids poisoned")?;
            *n = n.checked_add(1).ok_or("out of session ids")?;
            *n
        };
        let (tx, rx) = channel();
        {
            let mut routes = self.routes.lock().map_err(|_| "session table poisoned")?;
            let Some(map) = routes.as_mut() else {
                return Err("the VM's channel is closed (the sandbox stopped)".into());
            };
            map.insert(id, tx);
        }
        let msg = HostMsg::Exec {
            v: VM_PROTOCOL_VERSION,
            session: id,
            exec: Box::new(exec),
        };
        if let Err(e) = self.send(&msg) {
            if let Ok(mut r) = self.routes.lock() {
                if let Some(map) = r.as_mut() {
                    map.remove(&id);
                }
            }
            // The guest's end went away before the reader thread saw it: the same closed
            // channel, whichever noticed first.
            return Err(format!(
                "the VM's channel is closed (the sandbox stopped): {e}"
            ));
        }
        Ok(Session {
            mux: self,
            id,
            events: rx,
        })
    }

    /// Ask the guest to end every session (SIGTERM, SIGKILL after `grace_ms`) and power off.
    pub fn poweroff(&self, grace_ms: u64) -> Result<(), String> {
        self.send(&HostMsg::Poweroff {
            v: VM_PROTOCOL_VERSION,
            grace_ms,
        })
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        if let Ok(w) = self.writer.lock() {
            let _ = w.shutdown(std::net::Shutdown::Both);
        }
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

/// The reader thread: each guest line to its session; when the channel ends, every open
/// session ends with an error and no new one starts.
fn route(mut reader: BufReader<UnixStream>, routes: &Routes) {
    while let Some(msg) = next_msg(&mut reader) {
        let (session, ev) = match msg {
            GuestMsg::Stdout { data, session, .. } => (
                session,
                Event::Stdout(b64_decode(&data).unwrap_or_default()),
            ),
            GuestMsg::Stderr { data, session, .. } => (
                session,
                Event::Stderr(b64_decode(&data).unwrap_or_default()),
            ),
            GuestMsg::Exit { code, session, .. } => (session, Event::Exit(code)),
            GuestMsg::Error {
                message, session, ..
            } => (session, Event::Error(message)),
            GuestMsg::Hello { .. }
            | GuestMsg::Ready { .. }
            | GuestMsg::Idle { .. }
            | GuestMsg::Resumed { .. }
            | GuestMsg::Timing { .. }
            | GuestMsg::Changes { .. } => continue,
            GuestMsg::Unknown => {
                crate::phase("vm channel: unknown message kind skipped");
                continue;
            }
        };
        let last = matches!(ev, Event::Exit(_) | Event::Error(_));
        let Ok(mut r) = routes.lock() else { return };
        let Some(map) = r.as_mut() else { return };
        match map.get(&session) {
            // A session whose caller went away: its output has nowhere to go.
            Some(tx) => {
                let _ = tx.send(ev);
            }
            None => crate::phase(&format!("vm channel: line for unknown session {session}")),
        }
        if last {
            map.remove(&session);
        }
    }
    if let Ok(mut r) = routes.lock() {
        for (_, tx) in r.take().unwrap_or_default() {
            let _ = tx.send(Event::Error(
                "the VM's channel closed before the command ended".into(),
            ));
        }
    }
}

/// A session's input side, shareable with another thread.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    mux: &'a Mux,
    id: u32,
}

impl<'a> Session<'a> {
    pub fn input(&self) -> Input<'a> {
        Input {
            mux: self.mux,
            id: self.id,
        }
    }

    pub fn stdin(&self, data: &[u8]) -> Result<(), String> {
        self.input().stdin(data)
    }

    pub fn stdin_eof(&self) -> Result<(), String> {
        self.input().stdin_eof()
    }

    /// Forward `signal` to the session's process group.
    pub fn signal(&self, signal: i32) -> Result<(), String> {
        self.input().signal(signal)
    }
}

impl Input<'_> {
    pub fn stdin(&self, data: &[u8]) -> Result<(), String> {
        self.mux.send(&HostMsg::Stdin {
            v: VM_PROTOCOL_VERSION,
            data: b64_encode(data),
            session: self.id,
        })
    }

    pub fn stdin_eof(&self) -> Result<(), String> {
        self.mux.send(&HostMsg::StdinEof {
            v: VM_PROTOCOL_VERSION,
            session: self.id,
        })
    }

    /// The user's terminal has this size now (a session with a terminal).
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), String> {
        self.mux.send(&HostMsg::Resize {
            v: VM_PROTOCOL_VERSION,
            rows,
            cols,
            session: self.id,
        })
    }

    /// Forward `signal` to the session's process group.
    pub fn signal(&self, signal: i32) -> Result<(), String> {
        self.mux.send(&HostMsg::Signal {
            v: VM_PROTOCOL_VERSION,
            signal,
            session: self.id,
        })
    }
}

impl Session<'_> {
    /// The next event (None: the session has ended and all its events were taken).
    pub fn next(&self) -> Option<Event> {
        self.events.recv().ok()
    }

    /// Copy the session's output to `out`/`err` until it ends; its exit status, or why none.
    pub fn wait(&self, out: &mut impl Write, err: &mut impl Write) -> Result<i32, String> {
        while let Some(ev) = self.next() {
            match ev {
                Event::Stdout(b) => {
                    let _ = out.write_all(&b).and_then(|()| out.flush());
                }
                Event::Stderr(b) => {
                    let _ = err.write_all(&b);
                }
                Event::Exit(code) => return Ok(code),
                Event::Error(m) => return Err(m),
            }
        }
        Err("the VM's channel closed before the command ended".into())
    }
}

#[cfg(test)]
pub(crate) mod tests;
