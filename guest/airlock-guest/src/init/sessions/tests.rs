//! The session server on one end of a socket pair, running real commands (as this process's
//! own user, without a chroot): what the guest does for a named microVM sandbox's `exec`.

use super::*;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;

/// One session as the host saw it: stdout, stderr, and how it ended (when it has).
type Seen = (String, String, Option<Result<i32, String>>);
type Update = Box<dyn FnOnce(&mut Seen)>;

struct Host {
    w: UnixStream,
    rx: mpsc::Receiver<GuestMsg>,
}

impl Host {
    fn put(&mut self, m: &HostMsg) {
        let mut l = serde_json::to_vec(m).unwrap();
        l.push(b'\n');
        self.w.write_all(&l).unwrap();
    }
    fn exec(&mut self, session: u32, argv: &[&str], stdin: bool) {
        self.exec_tty(session, argv, stdin, None);
    }
    fn exec_tty(&mut self, session: u32, argv: &[&str], stdin: bool, tty: Option<TtySize>) {
        self.put(&HostMsg::Exec {
            v: 1,
            session,
            exec: Box::new(exec_of(argv, stdin, tty)),
        });
    }
    /// The session's stdout until it contains `needle` (or it ends: then, all of it).
    fn stdout_until(&self, session: u32, needle: &str, so_far: &mut String) -> Option<i32> {
        while !so_far.contains(needle) {
            match self
                .rx
                .recv_timeout(Duration::from_secs(20))
                .expect("the guest answers")
            {
                GuestMsg::Stdout {
                    data, session: s, ..
                } if s == session => {
                    *so_far += &String::from_utf8_lossy(&b64_decode(&data).unwrap());
                }
                GuestMsg::Exit {
                    code, session: s, ..
                } if s == session => return Some(code),
                other => panic!("unexpected {other:?} (stdout so far: {so_far:?})"),
            }
        }
        None
    }
    /// Collect (stdout, stderr, exit) per session until `n` sessions ended.
    fn collect(&self, n: usize) -> BTreeMap<u32, (String, String, Result<i32, String>)> {
        let mut got: BTreeMap<u32, Seen> = BTreeMap::new();
        while got.values().filter(|g| g.2.is_some()).count() < n {
            let m = self
                .rx
                .recv_timeout(Duration::from_secs(20))
                .expect("the guest answers");
            let (id, f): (u32, Update) = match m {
                GuestMsg::Stdout { data, session, .. } => (
                    session,
                    Box::new(move |g| g.0 += &String::from_utf8_lossy(&b64_decode(&data).unwrap())),
                ),
                GuestMsg::Stderr { data, session, .. } => (
                    session,
                    Box::new(move |g| g.1 += &String::from_utf8_lossy(&b64_decode(&data).unwrap())),
                ),
                GuestMsg::Exit { code, session, .. } => {
                    (session, Box::new(move |g| g.2 = Some(Ok(code))))
                }
                GuestMsg::Error {
                    message, session, ..
                } => (session, Box::new(move |g| g.2 = Some(Err(message)))),
                other => panic!("unexpected {other:?}"),
            };
            f(got.entry(id).or_default());
        }
        got.into_iter()
            .map(|(k, (o, e, x))| (k, (o, e, x.unwrap())))
            .collect()
    }
}

fn exec_of(argv: &[&str], stdin: bool, tty: Option<TtySize>) -> GuestExec {
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    GuestExec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: "/".into(),
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        stdin,
        secrets: false,
        tty,
    }
}

fn start() -> (Host, std::thread::JoinHandle<Res<()>>) {
    start_with(None)
}

fn start_with(main: Option<GuestExec>) -> (Host, std::thread::JoinHandle<Res<()>>) {
    let (h, g) = UnixStream::pair().unwrap();
    let server = std::thread::spawn(move || {
        let mut chan = File::from(std::os::fd::OwnedFd::from(g.try_clone().unwrap()));
        let mut input = BufReader::new(File::from(std::os::fd::OwnedFd::from(g)));
        serve(
            &mut input,
            &mut chan,
            &Serve {
                root: None,
                reap_all: false,
                main: main.as_ref(),
                before_main_exit: None,
            },
        )
    });
    let (tx, rx) = mpsc::channel();
    let r = h.try_clone().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { return };
            if tx.send(serde_json::from_str(&l).unwrap()).is_err() {
                return;
            }
        }
    });
    (Host { w: h, rx }, server)
}

#[test]
fn sessions_run_side_by_side_and_share_the_guests_state() {
    let (mut h, server) = start();
    let dir = std::env::temp_dir().join(format!("airlock-guest-sessions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("state");
    // Session 1 waits for its stdin while session 2 runs and ends.
    h.exec(1, &["sh", "-c", "read x; echo got $x"], true);
    h.exec(2, &["sh", "-c", "echo two; echo oops >&2; exit 3"], false);
    let two = h.collect(1);
    assert_eq!(
        two.get(&2),
        Some(&("two\n".to_string(), "oops\n".to_string(), Ok(3)))
    );
    h.put(&HostMsg::Stdin {
        v: 1,
        data: b64_encode(b"hello\n"),
        session: 1,
    });
    let one = h.collect(1);
    assert_eq!(
        one.get(&1).map(|g| (&g.0[..], &g.2)),
        Some(("got hello\n", &Ok(0)))
    );
    // State persists between sessions: one writes, the next reads.
    let fs = f.display().to_string();
    h.exec(3, &["sh", "-c", &format!("echo kept > {fs}")], false);
    assert_eq!(h.collect(1).get(&3).map(|g| g.2.clone()), Some(Ok(0)));
    h.exec(4, &["cat", &fs], false);
    assert_eq!(
        h.collect(1).get(&4).map(|g| g.0.clone()),
        Some("kept\n".into())
    );
    // A missing program: 127 with the reason, the server goes on.
    h.exec(5, &["no-such-program-here"], false);
    let nf = h.collect(1).remove(&5).unwrap();
    assert_eq!(nf.2, Ok(127));
    assert!(nf.1.contains("no-such-program-here"), "{}", nf.1);
    // A signal reaches the session's process group only.
    h.exec(6, &["sleep", "30"], false);
    h.exec(7, &["sh", "-c", "sleep 0.3; echo alive"], false);
    h.put(&HostMsg::Signal {
        v: 1,
        signal: libc::SIGTERM,
        session: 6,
    });
    let both = h.collect(2);
    assert_eq!(
        both.get(&6).map(|g| g.2.clone()),
        Some(Ok(128 + libc::SIGTERM))
    );
    assert_eq!(both.get(&7).map(|g| g.0.clone()), Some("alive\n".into()));
    // Poweroff ends what still runs (SIGTERM ignored: SIGKILL after the grace) and returns.
    h.exec(8, &["sh", "-c", "trap '' TERM; sleep 30"], false);
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    h.put(&HostMsg::Poweroff {
        v: 1,
        grace_ms: 300,
    });
    server.join().unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // Its client hears how it ended (SIGKILL after the grace), not a closed channel.
    assert_eq!(h.collect(1).get(&8).map(|g| g.2.clone()), Some(Ok(137)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_session_id_in_use_is_refused_and_the_channel_closing_ends_the_server() {
    let (mut h, server) = start();
    h.exec(1, &["sleep", "30"], false);
    h.exec(1, &["true"], false);
    let got = h.collect(1);
    assert!(matches!(&got.get(&1).unwrap().2, Err(m) if m.contains("already running")));
    let t = Instant::now();
    h.w.shutdown(std::net::Shutdown::Both).unwrap();
    server.join().unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
}

/// `exec -t`: the command's stdin, stdout and stderr are one pseudo-terminal of the size the
/// host gave, which is its controlling terminal; typed input arrives through the terminal's
/// line discipline; a resize reaches the command as SIGWINCH with the new size; the exit
/// status comes back as without a terminal.
#[test]
fn a_tty_session_gets_a_terminal_of_its_size_that_follows_resizes() {
    let (mut h, server) = start();
    let script = "tty; stty size; [ -t 0 ] && [ -t 2 ] && echo term; (: </dev/tty) && echo ctty; \
                  read x; echo \"got $x\"; trap 'stty size; exit 5' WINCH; echo ready; \
                  while :; do sleep 0.05; done";
    h.exec_tty(
        1,
        &["sh", "-c", script],
        true,
        Some(TtySize {
            rows: 30,
            cols: 100,
        }),
    );
    let mut out = String::new();
    assert_eq!(h.stdout_until(1, "ctty", &mut out), None, "{out}");
    h.put(&HostMsg::Stdin {
        v: 1,
        data: b64_encode(b"hello\n"),
        session: 1,
    });
    assert_eq!(h.stdout_until(1, "ready", &mut out), None, "{out}");
    h.put(&HostMsg::Resize {
        v: 1,
        rows: 40,
        cols: 120,
        session: 1,
    });
    let code = h.stdout_until(1, "no such line", &mut out);
    assert_eq!(code, Some(5), "{out}");
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{out}");
    assert_eq!(lines[1..4], ["30 100", "term", "ctty"], "{out}");
    // The terminal echoes what was typed, and the command read it.
    assert!(
        lines.contains(&"hello") && lines.contains(&"got hello"),
        "{out}"
    );
    assert_eq!(lines.last(), Some(&"40 120"), "{out}");
    h.w.shutdown(std::net::Shutdown::Both).unwrap();
    server.join().unwrap().unwrap();
}

/// `run -t`: the job's command is the main session, on a terminal; its end ends the server.
#[test]
fn the_main_session_ends_the_server_with_its_status() {
    let main = exec_of(
        &["sh", "-c", "stty size; exit 4"],
        true,
        Some(TtySize { rows: 7, cols: 33 }),
    );
    let (h, server) = start_with(Some(main));
    let mut out = String::new();
    assert_eq!(h.stdout_until(MAIN_SESSION, "never", &mut out), Some(4));
    assert_eq!(out.trim_end(), "7 33");
    server.join().unwrap().unwrap();
}

/// Poweroff: a command that ends on SIGTERM reports 143, one that ignores it 137 after the
/// grace — both before the server returns.
#[test]
fn poweroff_reports_how_each_running_session_ended() {
    let (mut h, server) = start();
    h.exec(1, &["sleep", "30"], false);
    h.exec(
        2,
        &[
            "sh",
            "-c",
            "trap '' TERM; echo up; while :; do sleep 0.05; done",
        ],
        false,
    );
    let mut out = String::new();
    assert_eq!(h.stdout_until(2, "up", &mut out), None);
    let t = Instant::now();
    h.put(&HostMsg::Poweroff {
        v: 1,
        grace_ms: 500,
    });
    server.join().unwrap().unwrap();
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let got = h.collect(2);
    assert_eq!(got.get(&1).map(|g| g.2.clone()), Some(Ok(143)));
    assert_eq!(got.get(&2).map(|g| g.2.clone()), Some(Ok(137)));
}
