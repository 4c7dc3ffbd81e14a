//! Moving bytes between the sandbox's connection and the upstream one, on two threads, with
//! half-close passed through and nothing left hanging.

use crate::http::body::BodyFramer;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Once one direction has ended, the other may stay idle this long before both are closed.
const HALF_OPEN_IDLE: Duration = Duration::from_secs(120);
/// With no byte moving either way for this long, the connection is closed.
const IDLE: Duration = Duration::from_secs(15 * 60);
/// After a one-request HTTP exchange is over, how long unread client bytes are drained (so
/// closing does not reset the connection under a response the client is still reading).
const DRAIN: Duration = Duration::from_secs(2);
/// Reads wake up this often to notice the other direction's end and the idle limits.
const TICK: Duration = Duration::from_millis(500);
const BUF: usize = 64 * 1024;

/// State both directions see.
struct Shared {
    start: Instant,
    last_ms: AtomicU64,
    done: [AtomicBool; 2],
}

impl Shared {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

fn abort(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Copy `from` → `to` until EOF (then half-close `to`). Direction `me` (0 = up, 1 = down).
fn pump(
    mut from: &TcpStream,
    mut to: &TcpStream,
    mut framer: Option<BodyFramer>,
    sh: &Shared,
    me: usize,
) -> io::Result<()> {
    from.set_read_timeout(Some(TICK))?;
    let mut buf = vec![0u8; BUF];
    let mut last_own = Instant::now();
    let mut draining = framer.as_ref().is_some_and(BodyFramer::done);
    let mut drain_end: Option<Instant> = None;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                if !draining {
                    let _ = to.shutdown(Shutdown::Write);
                }
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => {
                let other_done = sh.done[1 - me].load(Ordering::SeqCst);
                if draining && other_done {
                    if Instant::now() >= *drain_end.get_or_insert_with(|| Instant::now() + DRAIN) {
                        return Ok(());
                    }
                } else if sh.idle() >= IDLE
                    || (other_done && !draining && last_own.elapsed() >= HALF_OPEN_IDLE)
                {
                    return Err(e);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        last_own = Instant::now();
        sh.touch();
        if draining {
            continue;
        }
        let take = match framer.as_mut() {
            Some(f) => f
                .feed(&buf[..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
            None => n,
        };
        to.write_all(&buf[..take])?;
        // The one request is complete: nothing more goes upstream. Keep reading (and
        // discarding) until the client closes or the response is over.
        draining = framer.as_ref().is_some_and(BodyFramer::done);
    }
}

/// Relay until both directions are done. `framer` (plain HTTP) limits the client→upstream
/// direction to one request body.
pub(crate) fn relay(client: TcpStream, upstream: TcpStream, framer: Option<BodyFramer>) {
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        abort(&client, &upstream);
        return;
    };
    let _ = client.set_write_timeout(Some(IDLE));
    let _ = upstream.set_write_timeout(Some(IDLE));
    let sh = Arc::new(Shared {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        done: [AtomicBool::new(false), AtomicBool::new(false)],
    });
    let sh2 = sh.clone();
    let up = std::thread::Builder::new()
        .name("egress-up".into())
        .spawn(move || {
            let r = pump(&c2, &u2, framer, &sh2, 0);
            sh2.done[0].store(true, Ordering::SeqCst);
            if r.is_err() {
                abort(&c2, &u2);
            }
        });
    let Ok(up) = up else {
        abort(&client, &upstream);
        return;
    };
    let r = pump(&upstream, &client, None, &sh, 1);
    sh.done[1].store(true, Ordering::SeqCst);
    if r.is_err() {
        abort(&client, &upstream);
    }
    let _ = up.join();
}

/// Send a final message (an HTTP error or a TLS alert), half-close, and drain briefly so the
/// message is not lost to a reset.
pub(crate) fn refuse(mut conn: TcpStream, msg: &[u8]) {
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    let _ = conn.write_all(msg);
    let _ = conn.shutdown(Shutdown::Write);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while Instant::now() < deadline && total < 1 << 20 {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}
