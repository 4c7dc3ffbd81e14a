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
        let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
        self.put(&HostMsg::Exec {
            v: 1,
            session,
            exec: Box::new(GuestExec {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                env: vec![("PATH".into(), "/usr/bin:/bin".into())],
                cwd: "/".into(),
                uid: uid.as_raw(),
                gid: gid.as_raw(),
                stdin,
                secrets: false,
            }),
        });
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

fn start() -> (Host, std::thread::JoinHandle<Res<()>>) {
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
