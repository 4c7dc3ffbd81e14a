//! exec clients → the control socket → one multiplexed channel → a scripted guest.

use super::*;
use crate::microvm::mux::tests::{exec as gexec, guest, job};
use std::sync::mpsc;
use std::time::Instant;

/// How long one of these tests may take on a loaded machine before it counts as hung.
const HUNG: Duration = Duration::from_secs(60);

/// Run a test's body in a thread of its own and wait for it at most `limit`: a body that
/// hangs (a read nobody answers, a scope waiting on a thread that never ends) fails the test
/// with `what` instead of hanging the run; a body that panics fails with its own message.
fn bounded(what: &str, limit: Duration, body: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(())) => {
            let _ = t.join();
        }
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what}: not done after {limit:?}; a wait in it never ended"),
    }
}

/// Ends the control server when dropped, panicking or not.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Serve `listener` while `f` runs, and stop serving when it returns or fails: a failed
/// assertion in `f` then fails the test (a scope waits for all its threads, and the server's
/// ran until told to stop: the assertion used to leave the test hanging instead).
fn serving<T>(listener: &UnixListener, mux: &Mux, f: impl FnOnce() -> T) -> T {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| serve(listener, mux, &stop));
        let _stop = StopOnDrop(&stop);
        f()
    })
}

#[test]
fn a_failed_assertion_beside_the_control_server_fails_the_test_at_once() {
    let t0 = Instant::now();
    let failed = std::panic::catch_unwind(|| {
        bounded("the failing body", HUNG, || {
            let dir = std::env::temp_dir().join(format!("airlock-vm-fail-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let sock = dir.join(VM_CONTROL);
            let _ = std::fs::remove_file(&sock);
            let listener = UnixListener::bind(&sock).unwrap();
            let (host, g) = UnixStream::pair().unwrap();
            let _guest = guest(g, true);
            let mux = Mux::open(host, &job(true)).unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            serving(&listener, &mux, || panic!("an assertion failed"));
        })
    });
    let msg = failed.expect_err("the body's failure fails the test");
    let msg = msg
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| msg.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert_eq!(msg, "an assertion failed");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // And a body that hangs fails with the watchdog's message.
    let hung = std::panic::catch_unwind(|| {
        bounded("the hanging body", Duration::from_millis(200), || {
            std::thread::sleep(Duration::from_secs(5))
        })
    });
    let msg = hung.expect_err("hung");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.starts_with("the hanging body: not done after"), "{msg}");
}

#[test]
fn concurrent_exec_clients_each_get_their_own_session_through_the_control_socket() {
    bounded("concurrent exec clients", HUNG, concurrent_exec_clients);
}

fn concurrent_exec_clients() {
    let dir = std::env::temp_dir().join(format!("airlock-vm-control-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join(VM_CONTROL);
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).unwrap();
    let (host, g) = UnixStream::pair().unwrap();
    let guest = guest(g, true);
    let mux = Mux::open(host, &job(true)).unwrap();
    serving(&listener, &mux, || {
        std::thread::scope(|s| {
            let clients: Vec<_> = (0..4)
                .map(|i| {
                    let sock = &sock;
                    s.spawn(move || {
                        // `cat`: stdin comes back on stdout, upper-cased on stderr.
                        let input: Box<dyn Read + Send> =
                            Box::new(std::io::Cursor::new(format!("in-{i}").into_bytes()));
                        let (mut o, mut e) = (vec![], vec![]);
                        let code = exec(sock, gexec(&["cat"], true), Some(input), &mut o, &mut e);
                        assert_eq!(code, Ok(0));
                        assert_eq!(String::from_utf8(o).unwrap(), format!("in-{i}"));
                        assert_eq!(String::from_utf8(e).unwrap(), format!("IN-{i}"));
                        let code = exec(
                            sock,
                            gexec(&["exit", &i.to_string()], false),
                            None,
                            &mut vec![],
                            &mut vec![],
                        );
                        assert_eq!(code, Ok(i));
                    })
                })
                .collect();
            for c in clients {
                c.join().unwrap();
            }
        });
        let err = exec(
            &sock,
            gexec(&["nope"], false),
            None,
            &mut vec![],
            &mut vec![],
        );
        assert_eq!(err, Err("nope: not found".into()));
    });
    mux.poweroff(0).unwrap();
    guest.join().unwrap();
    // The VM gone: a client hears so instead of waiting (whether or not the channel's reader
    // has seen the end yet).
    serving(&listener, &mux, || {
        let err = exec(
            &sock,
            gexec(&["echo", "x"], false),
            None,
            &mut vec![],
            &mut vec![],
        );
        assert!(err.as_ref().is_err_and(|e| e.contains("closed")), "{err:?}");
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A terminal's resize from an exec client reaches the guest as its session's `resize`.
#[test]
fn a_clients_resize_reaches_its_session_in_the_guest() {
    bounded("a client's resize", HUNG, clients_resize);
}

fn clients_resize() {
    let dir = std::env::temp_dir().join(format!("airlock-vm-resize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join(VM_CONTROL);
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).unwrap();
    let (host, g) = UnixStream::pair().unwrap();
    let guest = guest(g, true);
    let mux = Mux::open(host, &job(true)).unwrap();
    serving(&listener, &mux, || {
        let c = UnixStream::connect(&sock).unwrap();
        // A reply that never comes fails here rather than in the watchdog.
        c.set_read_timeout(Some(HUNG / 2)).unwrap();
        let mut w = c.try_clone().unwrap();
        let mut e = gexec(&["cat"], true);
        e.tty = Some(airlock_model::vm::TtySize { rows: 24, cols: 80 });
        let v = VM_PROTOCOL_VERSION;
        put(
            &mut w,
            &HostMsg::Exec {
                v,
                session: 0,
                exec: Box::new(e),
            },
        )
        .unwrap();
        put(
            &mut w,
            &HostMsg::Resize {
                v,
                rows: 40,
                cols: 120,
                session: 0,
            },
        )
        .unwrap();
        let mut r = BufReader::new(c);
        let mut line = Vec::new();
        assert!(read_line(&mut r, &mut line), "no answer to the resize");
        match serde_json::from_slice(&line).unwrap() {
            GuestMsg::Stdout { data, .. } => {
                assert_eq!(b64_decode(&data).unwrap(), b"resized 40x120\n");
            }
            other => panic!("{other:?}"),
        }
        put(&mut w, &HostMsg::StdinEof { v, session: 0 }).unwrap();
        assert!(read_line(&mut r, &mut line), "no exit status");
        assert!(matches!(
            serde_json::from_slice(&line).unwrap(),
            GuestMsg::Exit { code: 0, .. }
        ));
    });
    mux.poweroff(0).unwrap();
    let seen = guest.join().unwrap();
    // The session the supervisor chose for this client, not the client's 0.
    assert!(seen.iter().any(|m| matches!(m,
        HostMsg::Resize { rows: 40, cols: 120, session, .. } if *session != 0)));
    let _ = std::fs::remove_dir_all(&dir);
}
