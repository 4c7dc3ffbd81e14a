//! exec clients → the control socket → one multiplexed channel → a scripted guest.

use super::*;
use crate::microvm::mux::tests::{exec as gexec, guest, job};

#[test]
fn concurrent_exec_clients_each_get_their_own_session_through_the_control_socket() {
    let dir = std::env::temp_dir().join(format!("airlock-vm-control-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join(VM_CONTROL);
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).unwrap();
    let (host, g) = UnixStream::pair().unwrap();
    let guest = guest(g, true);
    let mux = Mux::open(host, &job(true)).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| serve(&listener, &mux, &stop));
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
        let err = exec(
            &sock,
            gexec(&["nope"], false),
            None,
            &mut vec![],
            &mut vec![],
        );
        assert_eq!(err, Err("nope: not found".into()));
        stop.store(true, Ordering::Relaxed);
    });
    mux.poweroff(0).unwrap();
    guest.join().unwrap();
    // The VM gone: a client hears so instead of waiting.
    let listener2 = listener;
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| serve(&listener2, &mux, &stop));
        let err = exec(
            &sock,
            gexec(&["echo", "x"], false),
            None,
            &mut vec![],
            &mut vec![],
        );
        assert!(err.as_ref().is_err_and(|e| e.contains("closed")), "{err:?}");
        stop.store(true, Ordering::Relaxed);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A terminal's resize from an exec client reaches the guest as its session's `resize`.
#[test]
fn a_clients_resize_reaches_its_session_in_the_guest() {
    let dir = std::env::temp_dir().join(format!("airlock-vm-resize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join(VM_CONTROL);
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).unwrap();
    let (host, g) = UnixStream::pair().unwrap();
    let guest = guest(g, true);
    let mux = Mux::open(host, &job(true)).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| serve(&listener, &mux, &stop));
        let c = UnixStream::connect(&sock).unwrap();
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
        assert!(read_line(&mut r, &mut line));
        match serde_json::from_slice(&line).unwrap() {
            GuestMsg::Stdout { data, .. } => {
                assert_eq!(b64_decode(&data).unwrap(), b"resized 40x120\n");
            }
            other => panic!("{other:?}"),
        }
        put(&mut w, &HostMsg::StdinEof { v, session: 0 }).unwrap();
        assert!(read_line(&mut r, &mut line));
        assert!(matches!(
            serde_json::from_slice(&line).unwrap(),
            GuestMsg::Exit { code: 0, .. }
        ));
        stop.store(true, Ordering::Relaxed);
    });
    mux.poweroff(0).unwrap();
    let seen = guest.join().unwrap();
    // The session the supervisor chose for this client, not the client's 0.
    assert!(seen.iter().any(|m| matches!(m,
        HostMsg::Resize { rows: 40, cols: 120, session, .. } if *session != 0)));
    let _ = std::fs::remove_dir_all(&dir);
}
