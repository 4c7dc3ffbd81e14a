//! The multiplexer against a scripted guest on the other end of a socket pair: it speaks the
//! wire protocol line by line (as airlock-guest init does), so these tests pin what the host
//! sends and how it routes what comes back; the real guest is covered by tests/microvm.rs.

use super::*;
use airlock_model::vm::GuestNet;
use std::io::BufRead;

pub(crate) fn job(hold: bool) -> GuestJob {
    GuestJob {
        argv: vec![],
        env: vec![],
        cwd: "/".into(),
        uid: 1000,
        gid: 1000,
        hostname: "t".into(),
        net: GuestNet::None,
        workspace: false,
        home: "/home/agent".into(),
        tmpfs_size: None,
        files: vec![],
        stdin: false,
        workspace_disk: false,
        hold,
        tty: None,
        mounts: vec![],
        overlay_disk: false,
        workspace_slot_disk: false,
    }
}

pub(crate) fn exec(argv: &[&str], stdin: bool) -> GuestExec {
    GuestExec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        cwd: "/".into(),
        uid: 1000,
        gid: 1000,
        stdin,
        secrets: false,
        tty: None,
    }
}

fn put(w: &mut UnixStream, m: &GuestMsg) {
    let mut l = serde_json::to_vec(m).unwrap();
    l.push(b'\n');
    w.write_all(&l).unwrap();
}

/// A guest that serves sessions: `echo ARGS` prints, `exit N` ends with N, `cat` echoes its
/// stdin (upper-cased on stderr too) until EOF. Everything it received is returned.
pub(crate) fn guest(stream: UnixStream, sessions: bool) -> JoinHandle<Vec<HostMsg>> {
    std::thread::spawn(move || {
        let mut w = stream.try_clone().unwrap();
        let mut seen = vec![];
        let mut lines = BufReader::new(stream).lines();
        let v = VM_PROTOCOL_VERSION;
        while let Some(Ok(l)) = lines.next() {
            let m: HostMsg = serde_json::from_str(&l).unwrap();
            seen.push(m.clone());
            match m {
                HostMsg::Run { job, .. } => {
                    put(
                        &mut w,
                        &GuestMsg::Hello {
                            v,
                            kernel: "6.1.0-guest".into(),
                            sessions,
                        },
                    );
                    if job.hold && sessions {
                        put(&mut w, &GuestMsg::Ready { v });
                    }
                }
                HostMsg::Exec { session, exec, .. } => match exec.argv[0].as_str() {
                    "echo" => {
                        let data = b64_encode(format!("{}\n", exec.argv[1..].join(" ")).as_bytes());
                        put(&mut w, &GuestMsg::Stdout { v, data, session });
                        put(
                            &mut w,
                            &GuestMsg::Exit {
                                v,
                                code: 0,
                                session,
                            },
                        );
                    }
                    "exit" => {
                        let code = exec.argv[1].parse().unwrap();
                        put(&mut w, &GuestMsg::Exit { v, code, session });
                    }
                    "cat" => {}
                    other => put(
                        &mut w,
                        &GuestMsg::Error {
                            v,
                            message: format!("{other}: not found"),
                            session,
                        },
                    ),
                },
                HostMsg::Stdin { data, session, .. } => {
                    let b = b64_decode(&data).unwrap();
                    let up = b64_encode(&b.to_ascii_uppercase());
                    put(&mut w, &GuestMsg::Stdout { v, data, session });
                    put(
                        &mut w,
                        &GuestMsg::Stderr {
                            v,
                            data: up,
                            session,
                        },
                    );
                }
                HostMsg::StdinEof { session, .. } => put(
                    &mut w,
                    &GuestMsg::Exit {
                        v,
                        code: 0,
                        session,
                    },
                ),
                HostMsg::Signal {
                    signal, session, ..
                } => put(
                    &mut w,
                    &GuestMsg::Exit {
                        v,
                        code: 128 + signal,
                        session,
                    },
                ),
                HostMsg::Resize {
                    rows,
                    cols,
                    session,
                    ..
                } => {
                    let data = b64_encode(format!("resized {rows}x{cols}\n").as_bytes());
                    put(&mut w, &GuestMsg::Stdout { v, data, session });
                }
                HostMsg::Poweroff { .. } => break,
                HostMsg::Unknown | HostMsg::Snapshot { .. } => {}
            }
        }
        seen
    })
}

#[test]
fn two_sessions_at_once_each_get_their_own_input_output_and_status() {
    let (host, g) = UnixStream::pair().unwrap();
    let guest = guest(g, true);
    let mux = Mux::open(host, &job(true)).expect("open");
    assert_eq!(mux.kernel, "6.1.0-guest");
    let a = mux.exec(exec(&["cat"], true)).unwrap();
    let b = mux.exec(exec(&["cat"], true)).unwrap();
    assert_ne!(a.id, b.id);
    assert_ne!(a.id, MAIN_SESSION);
    // Interleaved input: each line must come back on its own session only.
    a.stdin(b"a1 ").unwrap();
    b.stdin(b"b1 ").unwrap();
    a.stdin(b"a2").unwrap();
    b.stdin(b"b2").unwrap();
    b.stdin_eof().unwrap();
    std::thread::scope(|s| {
        let tb = s.spawn(move || {
            let (mut o, mut e) = (vec![], vec![]);
            (b.wait(&mut o, &mut e), o, e)
        });
        let (code, o, e) = tb.join().unwrap();
        assert_eq!(code, Ok(0));
        assert_eq!(o, b"b1 b2");
        assert_eq!(e, b"B1 B2");
        // a is still running after b ended; it ends on a signal.
        a.signal(15).unwrap();
        let (mut o, mut e) = (vec![], vec![]);
        assert_eq!(a.wait(&mut o, &mut e), Ok(143));
        assert_eq!(o, b"a1 a2");
        assert_eq!(e, b"A1 A2");
    });
    // Sessions from several threads at once, each with its own status.
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let mux = &mux;
                s.spawn(move || {
                    let n = i.to_string();
                    let e = mux.exec(exec(&["echo", "hi", &n], false)).unwrap();
                    let (mut o, mut er) = (vec![], vec![]);
                    assert_eq!(e.wait(&mut o, &mut er), Ok(0));
                    assert_eq!(String::from_utf8(o).unwrap(), format!("hi {n}\n"));
                    let x = mux.exec(exec(&["exit", &n], false)).unwrap();
                    assert_eq!(x.wait(&mut vec![], &mut vec![]), Ok(i));
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    let nf = mux.exec(exec(&["nope"], false)).unwrap();
    assert_eq!(
        nf.wait(&mut vec![], &mut vec![]),
        Err("nope: not found".to_string())
    );
    mux.poweroff(500).unwrap();
    let seen = guest.join().unwrap();
    match &seen[0] {
        HostMsg::Run { job, .. } => assert!(job.hold && job.argv.is_empty()),
        other => panic!("first message {other:?}"),
    }
    assert_eq!(
        seen.last(),
        Some(&HostMsg::Poweroff {
            v: VM_PROTOCOL_VERSION,
            grace_ms: 500
        })
    );
}

#[test]
fn the_channel_closing_ends_open_sessions_and_refuses_new_ones() {
    let (host, g) = UnixStream::pair().unwrap();
    let guest = guest(g, true);
    let mux = Mux::open(host, &job(true)).expect("open");
    let a = mux.exec(exec(&["cat"], true)).unwrap();
    mux.poweroff(0).unwrap(); // the scripted guest closes its end
    guest.join().unwrap();
    let err = a.wait(&mut vec![], &mut vec![]).unwrap_err();
    assert!(err.contains("channel closed"), "{err}");
    // The reader has seen the end once a's error arrived: no new session.
    let err = mux
        .exec(exec(&["echo", "x"], false))
        .err()
        .expect("refused");
    assert!(err.contains("closed"), "{err}");
}

#[test]
fn an_older_guest_without_sessions_is_refused_clearly() {
    let (host, g) = UnixStream::pair().unwrap();
    let _guest = guest(g, false);
    let err = Mux::open(host, &job(true)).err().expect("refused");
    assert!(err.contains("does not serve exec sessions"), "{err}");
}

#[test]
fn a_job_with_its_own_command_is_not_a_held_guest() {
    let (host, _g) = UnixStream::pair().unwrap();
    let mut j = job(true);
    j.argv = vec!["true".into()];
    assert!(Mux::open(host, &j).is_err());
    let (host, _g) = UnixStream::pair().unwrap();
    assert!(Mux::open(host, &job(false)).is_err());
}

#[test]
fn an_over_long_line_ends_the_channel_not_the_host() {
    let (host, mut g) = UnixStream::pair().unwrap();
    let t = std::thread::spawn(move || {
        let mut r = BufReader::new(g.try_clone().unwrap());
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let v = VM_PROTOCOL_VERSION;
        put(
            &mut g,
            &GuestMsg::Hello {
                v,
                kernel: "k".into(),
                sessions: true,
            },
        );
        put(&mut g, &GuestMsg::Ready { v });
        l.clear();
        r.read_line(&mut l).unwrap(); // the exec
        let _ = g.write_all(&vec![b'x'; (MAX_LINE as usize) + 10]);
        // keep the socket open: the host must end the channel on its own
        std::thread::sleep(std::time::Duration::from_secs(2));
    });
    let mux = Mux::open(host, &job(true)).unwrap();
    let s = mux.exec(exec(&["cat"], true)).unwrap();
    let err = s.wait(&mut vec![], &mut vec![]).unwrap_err();
    assert!(err.contains("channel closed"), "{err}");
    drop(s);
    drop(mux);
    t.join().unwrap();
}

/// A guest whose end stopped reading (gone, before the reader thread has seen its end): a new
/// session is refused as a closed channel, the same answer as once the reader has seen it.
/// (It said "write to the VM channel: Broken pipe", which a caller checking for a closed
/// channel took for another failure: the control test's race under load.)
#[test]
fn a_session_on_a_channel_whose_guest_went_away_is_refused_as_closed() {
    let (host, mut g) = UnixStream::pair().unwrap();
    let t = std::thread::spawn(move || {
        let mut r = BufReader::new(g.try_clone().unwrap());
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let v = VM_PROTOCOL_VERSION;
        put(
            &mut g,
            &GuestMsg::Hello {
                v,
                kernel: "k".into(),
                sessions: true,
            },
        );
        put(&mut g, &GuestMsg::Ready { v });
        // No more reading, but the end stays open: the host's reader sees no end of file.
        g.shutdown(std::net::Shutdown::Read).unwrap();
        g
    });
    let mux = Mux::open(host, &job(true)).unwrap();
    let g = t.join().unwrap();
    let err = mux
        .exec(exec(&["echo", "x"], false))
        .err()
        .expect("refused");
    assert!(err.contains("channel is closed"), "{err}");
    drop(g);
}
