//! Claims through the running daemon (docs/design/warm-pool.md, "Claims through the daemon").
//!
//! The daemon holds the store open: it answers a claim on `STATE/pool/claim.sock` (a stream
//! socket, 0600, peers of its own uid or root) with the same compare-and-set transaction a
//! claimer runs on its own ([`Store::claim`]), on a thread and a connection of its own, so a
//! claimer does not open SQLite (schema, WAL, pragmas) and a member's start in the daemon's
//! loop never holds a claim up. The claimer is named by the kernel (`SO_PEERCRED`'s pid, its
//! start time read while its `SO_PEERPIDFD` shows it alive), never by the request alone.
//!
//! **No answer, no claim taken from it.** A claimer that gets no answer in [`ANSWER_WAIT`]
//! (or none at all: no daemon, an older one, a daemon killed mid-claim) claims in the store
//! itself, exactly as without a daemon. Before it does, it shuts its side of the connection:
//! the daemon's answer then either is in the claimer's queue already (it reads it and uses
//! it) or fails to send (`EPIPE`), and the daemon undoes its claim — the kernel orders the
//! two (the peer's receive shutdown and the queueing of the answer are both made under the
//! claimer socket's lock). A daemon killed between its commit and its answer leaves a member
//! `claimed` by a live claimer that never heard of it: nobody else can take it, and the
//! reconcile removes it once that claimer is gone, as any claimer's.

use super::{dir, Claim, Member, MemberState};
use crate::store::Store;
use airlock_sandbox::sys::wait_readable;
use nix::sys::socket::{self, sockopt, MsgFlags};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The daemon's claim socket in the pool's folder.
pub const CLAIM_SOCKET: &str = "claim.sock";

/// How long a claimer waits for the daemon's answer before it claims in the store itself. A
/// quiet machine answers in about 0.1 ms; a loaded one (load 5 on 2 CPUs) takes a few ms to
/// schedule the daemon's thread, and falling back costs a store open and a claim anyway.
pub const ANSWER_WAIT: Duration = Duration::from_millis(25);

/// How long the daemon waits for a connected claimer's request.
const REQUEST_WAIT: Duration = Duration::from_millis(100);

/// The request's version tag: another first word is refused.
const REQUEST: &str = "c1";

/// Claim a ready member of pool `key` for this process `(pid, start)` through the running
/// daemon. None: no answer (no daemon listens, an older one, it was killed, it was too slow
/// or refused): claim in the store.
pub fn ask(state: &Path, key: &str, pid: i32, start: u64) -> Option<Claim> {
    use socket::{AddressFamily, SockFlag, SockType, UnixAddr};
    // Non-blocking: a daemon that stopped accepting (a full backlog) is no daemon.
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .ok()?;
    let addr = UnixAddr::new(&dir(state).join(CLAIM_SOCKET)).ok()?;
    socket::connect(fd.as_raw_fd(), &addr).ok()?;
    let mut conn = UnixStream::from(fd);
    conn.write_all(format!("{REQUEST} {key} {pid} {start}\n").as_bytes())
        .ok()?;
    let deadline = Instant::now() + ANSWER_WAIT;
    let mut got = Vec::with_capacity(96);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !wait_readable(conn.as_fd(), left) {
            break;
        }
        match read_some(&mut conn, &mut got) {
            Some(true) => return answer_of(&got, key, pid, start),
            Some(false) => continue,
            // Closed without an answer: a refusal, or a daemon that died.
            None => return None,
        }
    }
    // No answer in time. From the shutdown on, an answer the daemon sends fails and it undoes
    // its claim; one it sent before is in the queue, and is used.
    let _ = conn.shutdown(std::net::Shutdown::Both);
    while let Some(false) = read_some(&mut conn, &mut got) {}
    if got.ends_with(b"\n") {
        return answer_of(&got, key, pid, start);
    }
    None
}

/// One read into `got`: Some(true) once a whole line is there, Some(false) for more to come
/// (or nothing yet), None at the end of the stream or an error.
fn read_some(conn: &mut UnixStream, got: &mut Vec<u8>) -> Option<bool> {
    let mut buf = [0u8; 256];
    match conn.read(&mut buf) {
        Ok(0) => None,
        Ok(n) => {
            got.extend_from_slice(&buf[..n]);
            if got.len() > 4096 {
                return None;
            }
            Some(got.contains(&b'\n'))
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(false),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Some(false),
        Err(_) => None,
    }
}

/// The daemon's answer line: `h NAME ID` (a member, claimed for this process), `m` (the pool
/// is empty: a miss, counted), `n` (no such pool). Anything else (`e …`: refused): None.
fn answer_of(line: &[u8], key: &str, pid: i32, start: u64) -> Option<Claim> {
    let line = std::str::from_utf8(line).ok()?.lines().next()?;
    let mut words = line.split(' ');
    match (words.next()?, words.next(), words.next(), words.next()) {
        ("h", Some(name), Some(id), None) if super::member_name_ok(name) => {
            Some(Claim::Hit(Member {
                name: name.to_owned(),
                id: id.to_owned(),
                pool: key.to_owned(),
                state: MemberState::Claimed,
                claimer_pid: Some(pid),
                claimer_start: Some(start),
            }))
        }
        ("m", None, None, None) => Some(Claim::Miss),
        ("n", None, None, None) => Some(Claim::NoPool),
        _ => None,
    }
}

/// The daemon's claim service: answers claims on a thread of its own, with its own connection
/// to the store. Dropped: it stops answering (claims go to the store) and its socket goes.
pub struct Service {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    /// Listen on `STATE/pool/claim.sock` (0600; the pool's folder is 0700) and answer claims
    /// of this process's uid (or root).
    pub fn start(state: &Path) -> Result<Service, String> {
        use std::os::unix::fs::PermissionsExt;
        let path = dir(state).join(CLAIM_SOCKET);
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).map_err(|e| format!("listen on {}: {e}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod {}: {e}", path.display()))?;
        let mut store = Store::open(state.join("store.db"))
            .and_then(Store::for_pool)
            .map_err(|e| format!("the state store: {e}"))?;
        let me = nix::unistd::geteuid().as_raw();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("claims".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        serve_one(&mut store, conn, me);
                    }
                }
            })
            .map_err(|e| format!("the claims thread: {e}"))?;
        Ok(Service {
            path,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes its accept.
        drop(UnixStream::connect(&self.path));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One claimer's connection: who it is (the kernel says), its request, the claim, the answer —
/// and the claim undone when the answer cannot reach it.
fn serve_one(store: &mut Store, mut conn: UnixStream, me: u32) {
    // `AIRLOCK_TIMING=1 airlock daemon start`: each claim's steps in the daemon's log.
    airlock_sandbox::phase("claims: accepted");
    let Ok(cred) = socket::getsockopt(&conn, sockopt::PeerCredentials) else {
        return;
    };
    if cred.uid() != me && cred.uid() != 0 {
        send(
            &conn,
            "e refused: the daemon serves its own user's claims\n",
        );
        return;
    }
    let _ = conn.set_read_timeout(Some(REQUEST_WAIT));
    let mut got = Vec::with_capacity(96);
    loop {
        match read_some(&mut conn, &mut got) {
            Some(true) => break,
            Some(false) => {}
            None => return,
        }
    }
    let Some(line) = std::str::from_utf8(&got)
        .ok()
        .and_then(|l| l.lines().next())
    else {
        return;
    };
    let mut words = line.split(' ');
    let (Some(REQUEST), Some(key), Some(pid), Some(start), None) = (
        words.next(),
        words.next(),
        words.next().and_then(|p| p.parse::<i32>().ok()),
        words.next().and_then(|s| s.parse::<u64>().ok()),
        words.next(),
    ) else {
        send(&conn, "e refused: not a claim request\n");
        return;
    };
    // The claimer is the connection's peer, as the kernel has it: its pid, and its start time
    // read while its pidfd shows it alive (so the pid was not recycled meanwhile). The request
    // must name the same process.
    if peer_start(&conn, cred.pid()) != Some(start) || cred.pid() != pid {
        send(&conn, "e refused: the request does not name its sender\n");
        return;
    }
    airlock_sandbox::phase("claims: request read, sender checked");
    let claim = match store.claim(key, pid, start) {
        Ok(c) => c,
        Err(e) => {
            send(&conn, &format!("e {}\n", e.to_string().replace('\n', " ")));
            return;
        }
    };
    let answer = match &claim {
        Claim::Hit(m) => format!("h {} {}\n", m.name, m.id),
        Claim::Miss => "m\n".into(),
        Claim::NoPool => "n\n".into(),
    };
    airlock_sandbox::phase("claims: committed");
    if send(&conn, &answer) {
        airlock_sandbox::phase("claims: answered");
        return;
    }
    // The claimer stopped waiting (and claims in the store) or died before the answer reached
    // it: it never learns of this claim.
    let _ = match claim {
        Claim::Hit(m) => store.claim_undo(&m.name, pid, start),
        Claim::Miss => store.miss_undo(key),
        Claim::NoPool => Ok(true),
    };
}

/// Whether `text` was queued whole for the peer (never SIGPIPE).
fn send(conn: &UnixStream, text: &str) -> bool {
    socket::send(conn.as_raw_fd(), text.as_bytes(), MsgFlags::MSG_NOSIGNAL)
        .is_ok_and(|n| n == text.len())
}

/// The start time of the connection's peer, process `pid` (`SO_PEERCRED`'s): read from /proc
/// while the peer's pidfd (`SO_PEERPIDFD`, Linux 6.5; else opened by pid) shows it running.
fn peer_start(conn: &UnixStream, pid: i32) -> Option<u64> {
    let pidfd: OwnedFd = socket::getsockopt(conn, sockopt::PeerPidfd)
        .ok()
        .or_else(|| airlock_sandbox::sys::pidfd_open(pid).ok())?;
    let start = airlock_sandbox::container::exec::proc_starttime(pid)?;
    // A pidfd is readable once its process has exited.
    (!wait_readable(pidfd.as_fd(), Duration::ZERO)).then_some(start)
}
