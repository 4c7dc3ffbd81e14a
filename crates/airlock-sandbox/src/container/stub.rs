//! A warm-pool member's exec stub (docs/design/warm-pool.md, "The exec stub"): a process its
//! supervisor forks before PID 1 and moves into the member's cgroup while the member warms
//! up, so that the claim's command is forked by a process that is in that cgroup already. A
//! command exec'd from the claimer would have to join it, and on a cgroup-v1 host each such
//! join (`cgroup.procs`) waits for an RCU grace period (`cgroup_threadgroup_rwsem`): 5–20 ms on
//! a loaded machine, more than the whole rest of a claim.
//!
//! The stub serves exactly one request, on `stub.sock` in the member's folder (0600, peers of
//! the supervisor's uid or root only, as `control.sock`): it unlinks the socket and closes the
//! listener before it reads the request, then does what exec's child does (join the member's
//! namespaces, fork the command with privileges dropped, Landlock and seccomp, only fds 0-2)
//! and relays signals to it; the command's status goes back over the connection before the
//! stub exits. No user code runs in a member before its claim, and the stub is outside the
//! sandbox's namespaces (pid, mount, user): nothing inside can reach or reuse it.

use super::error::{io_err, RunError};
use super::exec::{become_command, enter_and_relay, relay, Inside, NAMESPACES};
pub use super::tty::Side;
use super::{seccomp, tty};
use crate::cgroup::Cgroup;
use crate::command::{Ending, ExecRequest, Outcome};
use crate::sys;
use airlock_model::exit;
use airlock_model::plan::LaunchPlan;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The stub's socket, in the member's folder (gone once a claim took it).
pub const STUB_SOCKET: &str = "stub.sock";

/// The stub's pid, written by the member's supervisor right after forking it (before the
/// member is ready). The stub stays its supervisor's unreaped child until the member ends, so
/// the pid names the stub for as long as the member lives. The lines after it say what the
/// stub does: `go`, it takes a request before its claim is bound ([`begin_claimed`]);
/// `quiet`, it sends no hello to a request that asks for none.
pub const STUB_PID: &str = "stub.pid";

/// The published stub of the member in `dir`.
struct Published {
    pid: i32,
    go: bool,
    quiet: bool,
    /// It hands a claim that attaches a workspace its parked workspace helper.
    attach: bool,
    /// It takes a claim's job for that helper right behind the request (`Request::ahead`).
    job: bool,
}

fn published_stub(dir: &Path) -> Option<Published> {
    let mut buf = [0u8; 256];
    let text = sys::read_small(dir.join(STUB_PID), &mut buf).ok()?;
    let mut lines = std::str::from_utf8(text).ok()?.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let says: Vec<&str> = lines.collect();
    Some(Published {
        pid,
        go: says.contains(&"go"),
        quiet: says.contains(&"quiet"),
        attach: says.contains(&"attach"),
        job: says.contains(&"job"),
    })
}

/// The cgroup layout the member's supervisor made the member's cgroup (the stub's) with, as
/// JSON: a claim writes its limits there, wherever the claimer's own cgroup is.
pub const STUB_LAYOUT: &str = "cgroup-layout.json";

/// The cgroup layout published in `dir` ([`STUB_LAYOUT`]): a member's (its folder), or the
/// daemon's its members share (the pool's folder). None: not published (an older member or
/// daemon, or a member without a stub).
pub fn member_layout(dir: &Path) -> Option<crate::cgroup::Layout> {
    let mut buf = [0u8; 4096];
    serde_json::from_slice(sys::read_small(dir.join(STUB_LAYOUT), &mut buf).ok()?).ok()
}

/// Publish `layout` in `dir` ([`STUB_LAYOUT`], read by [`member_layout`]), whole or not at
/// all.
pub fn publish_layout(dir: &Path, layout: &crate::cgroup::Layout) -> std::io::Result<()> {
    let json = serde_json::to_vec(layout).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".{STUB_LAYOUT}.tmp"));
    fs::write(&tmp, json).and_then(|()| fs::rename(&tmp, dir.join(STUB_LAYOUT)))
}

/// A member adopted as a named sandbox (whose commands come through exec): its stub goes,
/// and with it the child parked in the member's namespaces (`PR_SET_PDEATHSIG`), so that
/// nothing can hand it a command later (it would run in the member's limit-free cgroup) and
/// nothing of it stays inside the sandbox. `alive`: whether the member's supervisor still
/// holds its folder, asked once the stub's pidfd is taken — the stub is its unreaped child
/// until then, so the pidfd cannot be a recycled pid's.
pub fn retire(dir: &Path, alive: impl Fn() -> bool) -> std::io::Result<()> {
    match fs::remove_file(dir.join(STUB_SOCKET)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let Some(pidfd) = published_stub(dir).and_then(|p| sys::pidfd_open(p.pid).ok()) else {
        return Ok(());
    };
    if alive() {
        sys::pidfd_kill(&pidfd)?;
    }
    Ok(())
}

/// What the claimer sends (with its fds 0, 1, 2, the error pipe and the terminal socket).
#[derive(Serialize, Deserialize)]
struct Request {
    argv: Vec<String>,
    /// The whole environment (the plan's under the request's).
    env: Vec<(String, String)>,
    cwd: PathBuf,
    tty: bool,
    stdin_null: bool,
    with_secrets: bool,
    rlimit_nproc: Option<u64>,
    /// The claim's writable roots (Landlock): the member's, and the claim's own `--rw`
    /// binds' destinations. None: the member's.
    #[serde(default)]
    writable_paths: Option<Vec<PathBuf>>,
    /// The claimer needs nothing of the member once the command is done (no egress events to
    /// sync from its supervisor): PID 1 goes as soon as the command's status is written, so
    /// the member's teardown overlaps the claimer's reading of it instead of following it.
    /// False (and from an older claimer): once the claimer hangs up.
    #[serde(default)]
    end_at_exit: bool,
    /// Sent before the claim is bound: one more fd (after the error pipe) whose one byte `g`
    /// says the claim is bound and the command may start; its end without it, that it never
    /// may. The parked child takes the request, then waits on it.
    #[serde(default)]
    go: bool,
    /// `env` and `writable_paths` add to the member's plan (the stub's own copy), which the
    /// claimer has not read yet: the environment over the plan's, the paths after the plan's.
    #[serde(default)]
    over_plan: bool,
    /// The stub's hello (its pid) is wanted: by a claimer of a stub that is not `quiet`, and
    /// by every older one. A quiet stub's claimer knows it is talking to the published stub
    /// without it (see [`begin_claimed`]) and starts the command without waiting for it.
    #[serde(default = "yes")]
    hello: bool,
    /// The claim mounts something in the member (a workspace, its own binds, home files): the
    /// parked child's Landlock rules, made while it waited, could name inodes those mounts
    /// hide, so it makes them again after the go. False: they hold (the claim's paths are
    /// added to them).
    #[serde(default = "yes")]
    mounted: bool,
    /// The claim attaches a workspace through the stub's parked workspace helper
    /// (`attach::park`): the stub answers the request with it (`W` and its socket, or `w`
    /// when it has none), before anything else it writes.
    #[serde(default)]
    attach: bool,
    /// Right behind the request comes a job for that helper ([`attach::AheadJob`], one `J`
    /// message: its prime, the helper's message, the project directory's fd): the stub hands
    /// it to the helper at once if the helper was primed with that workspace, and its answer
    /// says so (`J` instead of `W`).
    #[serde(default)]
    ahead: bool,
}

fn yes() -> bool {
    true
}

/// The byte on a request's go pipe that starts its command.
const GO: u8 = b'g';

/// Until the claimer's go (a request sent before its claim was bound): anything but [`GO`]
/// — the claimer failed, or died — ends this process before anything of the command runs.
fn wait_go(go: Option<OwnedFd>) {
    let Some(go) = go else { return };
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(&go, &mut byte) {
            Ok(1) if byte[0] == GO => return,
            Err(nix::Error::EINTR) => continue,
            _ => sys::exit_now(exit::SANDBOX_FAILED),
        }
    }
}

/// The supervisor's handle on its stub: the end that hands it the member's namespaces, and
/// its pid (killed and reaped when dropped, after the member's end).
pub(super) struct Stub {
    pid: Pid,
    ns: Option<OwnedFd>,
}

impl Stub {
    /// Hand the stub the member's namespaces (`NAMESPACES` order) and PID 1's pidfd, once
    /// PID 1 is set up.
    pub(super) fn give_namespaces(
        &mut self,
        fds: &[OwnedFd],
        pid1: &OwnedFd,
    ) -> Result<(), RunError> {
        let mut raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        raw.push(pid1.as_raw_fd());
        let sock = self
            .ns
            .take()
            .ok_or_else(|| RunError::Setup("the exec stub got its namespaces already".into()))?;
        sys::send_fds(sock.as_raw_fd(), b"ns", &raw).map_err(io_err("hand the exec stub over"))
    }

    /// Once PID 1 has exited: until the stub of a claimed member has exited by itself (it
    /// does once its claimer hangs up: the claimer's last steps and exit come first, and the
    /// member's teardown — the stub, the namespaces it holds, the parked helper, the cgroup —
    /// after them), `limit` at most. A member never claimed (its socket still there): not at
    /// all. True: the stub ended after its claimer, who needs nothing more of the member.
    pub(super) fn wait_claimer(&self, dir: &Path, limit: std::time::Duration) -> bool {
        if dir.join(STUB_SOCKET).exists() {
            return false;
        }
        sys::pidfd_open(self.pid.as_raw()).is_ok_and(|fd| sys::wait_readable(&fd, limit))
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// In the supervisor, before PID 1 is cloned (the process is single-threaded still): fork the
/// stub, listening on `dir/stub.sock`, and move it into the member's cgroup `cg`.
pub(super) fn spawn(dir: &Path, plan: &LaunchPlan, cg: Option<&Cgroup>) -> Result<Stub, RunError> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(STUB_SOCKET);
    let _ = fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path)
        .map_err(io_err("create the exec stub's socket"))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
        .map_err(io_err("restrict the exec stub's socket"))?;
    let (ns_host, ns_stub) =
        sys::socketpair(nix::sys::socket::SockType::SeqPacket).map_err(io_err("socketpair"))?;
    let filter = seccomp::programs()?;
    let parent = std::process::id() as i32;
    let pid = sys::clone_fork(0).map_err(RunError::Clone)?;
    if pid == 0 {
        serve(
            listener.as_raw_fd(),
            ns_stub.as_raw_fd(),
            &path,
            plan,
            &filter,
            parent,
        )
    }
    drop(ns_stub);
    drop(listener);
    let stub = Stub {
        pid: Pid::from_raw(pid),
        ns: Some(ns_host),
    };
    // Its pid, for the claimer's pidfd before it connects (`begin_claimed`), and that it
    // takes a request before the claim is bound.
    let attach = if plan.rootless { "" } else { "attach\njob\n" };
    fs::write(dir.join(STUB_PID), format!("{pid}\ngo\nquiet\n{attach}"))
        .map_err(io_err("publish the exec stub's pid"))?;
    if let Some(cg) = cg {
        cg.add(pid)?;
    }
    Ok(stub)
}

/// The stub: wait for the namespaces, then for one request from a peer of our uid or root.
fn serve(
    listener: RawFd,
    ns_sock: RawFd,
    path: &Path,
    plan: &LaunchPlan,
    filter: &[seccomp::Insn],
    parent: i32,
) -> ! {
    let _ = sys::prctl_simple(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    if nix::unistd::getppid().as_raw() != parent {
        sys::exit_now(exit::SANDBOX_FAILED);
    }
    sys::default_all_signals();
    let _ = nix::sys::signal::SigSet::all().thread_unblock();
    // Nothing of the supervisor's but these two.
    sys::close_fds_except(3, &[listener, ns_sock]);
    let Ok((msg, mut ns)) = sys::recv_fds(ns_sock, NAMESPACES.len() + 1) else {
        sys::exit_now(exit::SANDBOX_FAILED)
    };
    if msg != b"ns" || ns.len() != NAMESPACES.len() + 1 {
        sys::exit_now(exit::SANDBOX_FAILED);
    }
    let Some(pid1) = ns.pop() else {
        sys::exit_now(exit::SANDBOX_FAILED)
    };
    sys::close_inherited(&[ns_sock]);
    let ns: Vec<_> = NAMESPACES.iter().map(|(_, f)| *f).zip(ns).collect();
    // From here every signal waits for the relay's sigwait (the parked child's end, or the
    // command's, is a SIGCHLD that must not be lost).
    let _ = nix::sys::signal::SigSet::all().thread_block();
    let parked = park(&ns, plan, filter);
    // Root-run: the helper a claim's workspace needs, parked in the member's user namespace.
    let mut ws_helper = if plan.rootless {
        None
    } else {
        let get = |flag| ns.iter().find(|(f, _)| *f == flag).map(|(_, fd)| fd);
        match (
            get(nix::sched::CloneFlags::CLONE_NEWUSER),
            get(nix::sched::CloneFlags::CLONE_NEWNS),
        ) {
            (Some(user), Some(mnt)) => super::attach::park(user, mnt, plan),
            _ => None,
        }
    };
    // Which workspace it builds now, before any claim (the one the daemon asked for), for
    // the claimer: with the helper.
    let primed = match (&ws_helper, path.parent()) {
        (Some(h), Some(dir)) => super::attach::prime(h, dir, plan),
        _ => Vec::new(),
    };
    prefault();
    let me = nix::unistd::geteuid().as_raw();
    let conn = loop {
        let fd = match nix::sys::socket::accept4(listener, nix::sys::socket::SockFlag::SOCK_CLOEXEC)
        {
            Ok(fd) => fd,
            Err(nix::Error::EINTR | nix::Error::ECONNABORTED) => continue,
            Err(_) => sys::exit_now(exit::SANDBOX_FAILED),
        };
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let conn = unsafe { OwnedFd::from_raw_fd(fd) };
        let ok = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
            .is_ok_and(|c| c.uid() == me || c.uid() == 0);
        if ok {
            break conn;
        }
    };
    // Taken: nobody else ever reaches this stub — its socket goes once the request is on its
    // way to the parked child (no other claim can take this member: its ready marker is the
    // claimer's).
    let taken = || {
        let _ = fs::remove_file(path);
        sys::close_inherited(&[listener]);
    };
    let mut conn = UnixStream::from(conn);
    let mut hello = b"S".to_vec();
    hello.extend_from_slice(&std::process::id().to_le_bytes());
    let say_hello = |conn: &mut UnixStream| {
        if conn.write_all(&hello).is_err() {
            sys::exit_now(exit::SANDBOX_FAILED);
        }
    };
    // A claimer sends its request right after it connects (one that asks for the hello first
    // is older than every published stub: it gets the hello when it has sent nothing for a
    // while), and says whether it wants the hello.
    let early = sys::wait_readable(&conn, std::time::Duration::from_millis(100));
    if !early {
        say_hello(&mut conn);
    }
    let Some((req, passed, json)) = receive(&mut conn) else {
        sys::exit_now(exit::SANDBOX_FAILED)
    };
    // The job it sent ahead for the workspace helper, right behind the request.
    let ahead = if req.ahead {
        match receive_ahead(&mut conn) {
            Some(job) => Some(job),
            None => sys::exit_now(exit::SANDBOX_FAILED),
        }
    } else {
        None
    };
    if early && req.hello {
        say_hello(&mut conn);
    }
    // The workspace helper to a claim that attaches one; closed otherwise (it exits). A job
    // sent ahead goes to it first, if it was primed with that workspace (`J`: handed over).
    if req.attach {
        let sent = match ws_helper.take() {
            Some(h) => {
                let handed = ahead
                    .filter(|(want, _, _)| super::attach::same_prime(want, &primed))
                    .is_some_and(|(_, msg, fds)| {
                        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
                        sys::send_fds(h.as_raw_fd(), &msg, &raw).is_ok()
                    });
                let answer = if handed { b'J' } else { b'W' };
                sys::send_fds(
                    conn.as_raw_fd(),
                    &[&[answer][..], &primed].concat(),
                    &[h.as_raw_fd()],
                )
            }
            None => sys::send_fds(conn.as_raw_fd(), b"w", &[]),
        };
        if sent.is_err() {
            sys::exit_now(exit::SANDBOX_FAILED);
        }
    }
    // A helper this claim does not take stays parked until this stub exits (its socket closes
    // then, in the member's teardown): its exit tears down its own mount namespace — an
    // expedited RCU grace period, which stalled both CPUs on the claim's path.
    let _unused_helper = ws_helper;
    // The status, and that this stub ends the member: once the claimer has hung up (it
    // exited, or is done with the member), PID 1 goes — the member's teardown does not share
    // the CPUs with the claimer's last steps and exit. A claimer that died already: at once.
    // A claimer that needs nothing more of the member (`end_at_exit`): right after the status.
    let end_at_exit = req.end_at_exit;
    let report = |code: i32| {
        let mut status = code.to_le_bytes().to_vec();
        status.push(ENDS_MEMBER);
        // Written before PID 1 goes: its end ends the supervisor, which kills this stub.
        let written = (&conn).write_all(&status).is_ok();
        if written && !end_at_exit {
            let _ = (&conn).read(&mut [0u8; 1]);
        }
        let _ = sys::pidfd_kill(&pid1);
        // Then until the claimer hangs up (it exits, or is done with the member): this
        // process's end — and with it the member's namespaces, which it holds, and the parked
        // workspace helper — does not share the CPUs with the claimer's last steps. Its
        // supervisor waits for that (`Stub::wait_claimer`, briefly), then kills it.
        if written && end_at_exit {
            let _ = (&conn).read(&mut [0u8; 1]);
            sys::background();
        }
        sys::exit_now(0)
    };
    // The parked child takes the request and becomes the command; we relay and report.
    if let Some(mut p) = parked {
        if p.hand_over(&json, &passed.raw()).is_ok() {
            taken();
            drop((passed, p.sock));
            relay(p.pid, &report)
        }
        // It died (killed from outside before the claim): this process enters, as before.
    }
    taken();
    as_command(
        req,
        plan.clone(),
        filter,
        passed,
        false,
        None,
        |inside, err_wr| enter_and_relay(&ns, inside, err_wr, &report),
    )
}

/// The request's standard streams on 0, 1 and 2, its strings and limits, made ready while the
/// claim is still being bound; then, once the claimer's go came (a request sent before its
/// claim was bound: nothing of the command before it — its workspace attached, its limits
/// written, its secrets in place), the command to become, for `then`, with the error pipe
/// (`parked`: a parked child, whose seccomp filter is installed and whose bounding set and
/// signals are reset already). A failure is written to the error pipe and ends this process.
fn as_command(
    req: Request,
    mut plan: LaunchPlan,
    filter: &[seccomp::Insn],
    passed: Passed,
    parked: bool,
    landlock: Option<(super::landlock::Prepared, usize)>,
    then: impl FnOnce(&Inside, OwnedFd) -> std::convert::Infallible,
) -> ! {
    let Passed {
        streams,
        err_wr,
        go,
        tty: tty_sock,
    } = passed;
    let ef = err_wr.as_raw_fd();
    let fail = |msg: String| -> ! {
        sys::write_all_raw(ef, msg.as_bytes());
        sys::exit_now(exit::SANDBOX_FAILED)
    };
    // Only this process's own descriptors and memory until the go.
    for (fd, to) in streams.iter().zip([0, 1, 2]) {
        if let Err(err) = sys::dup2(fd.as_raw_fd(), to) {
            fail(format!("the command's standard streams: {err}"));
        }
    }
    drop(streams);
    let mut req = req;
    let env = if req.over_plan {
        airlock_model::spec::env_over(&plan.env, &req.env)
    } else {
        std::mem::take(&mut req.env)
    };
    let (argv, envp) =
        request_strings(std::mem::take(&mut req.argv), env).unwrap_or_else(|e| fail(e));
    if req.over_plan && req.cwd.as_os_str().is_empty() {
        req.cwd = plan.cwd.clone();
    }
    plan.rlimit_nproc = req.rlimit_nproc;
    // The rules made while parked hold for a claim that mounts nothing over the plan.
    let landlock = landlock.filter(|_| req.over_plan && !req.mounted);
    match req.writable_paths {
        Some(w) if req.over_plan => plan.writable_paths.extend(w),
        Some(w) => plan.writable_paths = w,
        None => {}
    }
    let inside = Inside {
        plan: &plan,
        argv: &argv,
        envp: &envp,
        cwd: &req.cwd,
        tty_sock: tty_sock.as_ref(),
        stdin_null: req.stdin_null,
        with_secrets: req.with_secrets,
        filter,
        parked,
        landlock: std::cell::Cell::new(landlock),
    };
    wait_go(go);
    match then(&inside, err_wr) {}
}

/// The child parked for the claim: already in the member's namespaces (pid included) and
/// cgroup, our own child, waiting on `sock` for the request.
struct Parked {
    pid: Pid,
    sock: UnixStream,
}

impl Parked {
    /// The claim's request (its JSON, as the claimer sent it) and its fds (0, 1, 2, the
    /// error pipe, the terminal socket), in the claimer's framing.
    fn hand_over(&mut self, json: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
        sys::send_fds(self.sock.as_raw_fd(), &frame(json), fds)
    }
}

/// Once the member is ready, before any claim: fork a helper that joins the member's
/// namespaces (user first) and forks the parked child into its pid namespace as *our* child
/// (`CLONE_PARENT`), then exits. So at the claim neither setns nor a fork is left on the
/// path, and this process itself never joins the sandbox's namespaces. The parked child is
/// not dumpable (no ptrace, no /proc access from inside the sandbox: that would need
/// CAP_SYS_PTRACE in the host's user namespace), dies with us (`PR_SET_PDEATHSIG`) and takes
/// exactly one request; nothing of the claim's is applied before it (privileges, Landlock,
/// limits and rlimits are the command's, as in [`enter_and_relay`]). What no claim changes
/// it does while it parks: its seccomp filter installed (as the command's process installs
/// it before everything else), its capability bounding set dropped and its signals reset
/// (`child::prepare_parked`); and once the request came, its strings and streams, before the
/// go.
/// None: could not park; the claim enters as before.
fn park(
    ns: &[(nix::sched::CloneFlags, OwnedFd)],
    plan: &LaunchPlan,
    filter: &[seccomp::Insn],
) -> Option<Parked> {
    let (mine, theirs) = sys::socketpair(nix::sys::socket::SockType::Stream).ok()?;
    let mut keep: Vec<RawFd> = ns.iter().map(|(_, f)| f.as_raw_fd()).collect();
    keep.push(theirs.as_raw_fd());
    let helper = sys::clone_fork(0).ok()?;
    if helper == 0 {
        // Not the listener (a connection must prove the stub alive), not our end.
        sys::close_fds_except(3, &keep);
        for (flag, fd) in ns {
            if nix::sched::setns(fd, *flag).is_err() {
                sys::exit_now(1);
            }
        }
        match sys::clone_fork(libc::CLONE_PARENT) {
            Ok(0) => parked(theirs, plan, filter),
            Ok(pid) => {
                sys::write_all_raw(theirs.as_raw_fd(), &pid.to_le_bytes());
                sys::exit_now(0)
            }
            Err(_) => sys::exit_now(1),
        }
    }
    drop(theirs);
    let done = nix::sys::wait::waitpid(Pid::from_raw(helper), None);
    if !matches!(done, Ok(nix::sys::wait::WaitStatus::Exited(_, 0))) {
        return None;
    }
    let mut sock = UnixStream::from(mine);
    let mut pid = [0u8; 4];
    sock.read_exact(&mut pid).ok()?;
    Some(Parked {
        pid: Pid::from_raw(i32::from_le_bytes(pid)),
        sock,
    })
}

/// The parked child: wait for the claim's request, then become its command.
fn parked(sock: OwnedFd, plan: &LaunchPlan, filter: &[seccomp::Insn]) -> ! {
    let _ = sys::prctl_simple(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    // Our parent (the stub) is outside this pid namespace: 0. Anything else: it died.
    if nix::unistd::getppid().as_raw() != 0 {
        sys::exit_now(exit::SANDBOX_FAILED);
    }
    let _ = sys::prctl_simple(libc::PR_SET_DUMPABLE, 0);
    sys::close_fds_except(3, &[sock.as_raw_fd()]);
    // What the command would otherwise do after the go and no claim changes: its bounding
    // set dropped, its signals reset, and its seccomp filter installed (as the command's
    // process installs it before its privilege drop): what is left for the claim runs under
    // it already.
    if super::child::prepare_parked().is_err() || seccomp::install(filter).is_err() {
        sys::exit_now(exit::SANDBOX_FAILED);
    }
    // Its own copy of the plan, its Landlock rules for the plan's writable roots (a claim that
    // mounts nothing adds its own), and its pages its own, before the claim.
    let plan = plan.clone();
    let mut writable: Vec<&Path> = plan.writable_paths.iter().map(PathBuf::as_path).collect();
    writable.push(Path::new("/dev"));
    let landlock = super::landlock::prepare(&writable)
        .ok()
        .map(|p| (p, plan.writable_paths.len()));
    drop(writable);
    prefault();
    let mut conn = UnixStream::from(sock);
    let Some((req, passed, _)) = receive(&mut conn) else {
        sys::exit_now(exit::SANDBOX_FAILED)
    };
    drop(conn);
    as_command(
        req,
        plan,
        filter,
        passed,
        true,
        landlock,
        |inside, err_wr| become_command(inside, err_wr.as_raw_fd()),
    )
}

/// While this process sleeps until its claim (the stub, its parked child): take now the page
/// faults the claim's path would take. Both are forked from the member's supervisor and share
/// its pages until they write them — each first write a copy-on-write fault, ≈ 5 µs on a
/// virtual machine, and a request's receipt, parse and strings write dozens — and both are on
/// the claim's path between its request and its command's start.
#[inline(never)]
fn prefault() {
    // Heap: ≈ 96 KiB.
    sys::prefault_heap(24);
    // A request's parse, once, on one of a request's shape.
    let dummy = Request {
        argv: vec!["true".into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into()); 8],
        cwd: PathBuf::from("/"),
        tty: false,
        stdin_null: false,
        with_secrets: false,
        rlimit_nproc: None,
        writable_paths: Some(vec![PathBuf::from("/tmp")]),
        end_at_exit: false,
        go: true,
        over_plan: true,
        hello: false,
        mounted: false,
        attach: false,
        ahead: false,
    };
    if let Ok(json) = serde_json::to_vec(&dummy) {
        std::hint::black_box(serde_json::from_slice::<Request>(&json).ok());
    }
    sys::touch_stack();
}

/// A request's argv and environment as C strings (Err: one holds a NUL).
fn request_strings(
    argv: Vec<String>,
    env: Vec<(String, String)>,
) -> Result<(Vec<CString>, Vec<CString>), String> {
    let cs = |items: Vec<String>| -> Result<Vec<CString>, String> {
        items
            .into_iter()
            .map(|s| CString::new(s).map_err(|e| format!("NUL in {e:?}")))
            .collect()
    };
    let envp = cs(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())?;
    Ok((cs(argv)?, envp))
}

/// The fds a request comes with, in this order: the command's 0, 1 and 2, the error pipe, the
/// go pipe (`Request::go`), the terminal socket (`Request::tty`).
struct Passed {
    streams: [OwnedFd; 3],
    err_wr: OwnedFd,
    go: Option<OwnedFd>,
    tty: Option<OwnedFd>,
}

impl Passed {
    /// `fds` as `req` says they come (None: a stream, the error pipe or the go pipe is
    /// missing).
    fn of(req: &Request, fds: Vec<OwnedFd>) -> Option<Passed> {
        let mut fds = fds.into_iter();
        let streams = [fds.next()?, fds.next()?, fds.next()?];
        let err_wr = fds.next()?;
        let go = if req.go { Some(fds.next()?) } else { None };
        let tty = if req.tty { fds.next() } else { None };
        Some(Passed {
            streams,
            err_wr,
            go,
            tty,
        })
    }

    /// Their numbers, in the order they came (to pass them on).
    fn raw(&self) -> Vec<RawFd> {
        self.streams
            .iter()
            .chain([&self.err_wr])
            .chain(&self.go)
            .chain(&self.tty)
            .map(|f| f.as_raw_fd())
            .collect()
    }
}

/// One request: a header (`R`, the JSON's length) with the fds, then the JSON ([`message`]).
fn receive(conn: &mut UnixStream) -> Option<(Request, Passed, Vec<u8>)> {
    let (mut data, fds) = sys::recv_fds(conn.as_raw_fd(), 6).ok()?;
    if data.len() < 5 || data[0] != b'R' {
        return None;
    }
    let len = u32::from_le_bytes(data[1..5].try_into().ok()?) as usize;
    let mut json = data.split_off(5);
    if json.len() > len {
        return None;
    }
    read_up_to(conn, &mut json, len)?;
    let req: Request = serde_json::from_slice(&json).ok()?;
    let passed = Passed::of(&req, fds)?;
    Some((req, passed, json))
}

/// After the command's status, the stub's word that it ends the member once the claimer hangs
/// up (a stub of an older build exits without a word, leaving PID 1 to the claimer).
const ENDS_MEMBER: u8 = b'K';

/// What [`Begun::go`] leaves: the stub, which reported the command's status and, when it
/// said so (`conn` kept), waits for the claimer to hang up (this dropped, or the claimer's
/// exit — a claimer killed mid-command), then kills the member's PID 1 and exits. The
/// claimer ends the member itself as soon as the command is done; this is for a claimer that
/// cannot. Wait for it before removing the member's cgroup (a cgroup with a process in it
/// cannot be removed).
pub struct StubExit {
    pidfd: OwnedFd,
    /// The connection, held while the claimer still needs the member.
    conn: Option<OwnedFd>,
}

impl StubExit {
    /// Hang up: the stub ends the member if it has not yet, then exits, and the member's
    /// teardown (which waits for that) goes on.
    pub fn hang_up(&mut self) {
        drop(self.conn.take());
    }

    /// Hang up, then until the stub is gone (at most `limit`).
    pub fn wait(mut self, limit: std::time::Duration) {
        self.hang_up();
        sys::wait_readable(&self.pidfd, limit);
    }
}

/// A request sent to a claimed member's stub ([`begin_claimed`]) whose command waits for
/// [`Begun::go`]; dropped without it, the command never starts (its go pipe closes: the
/// parked child exits).
pub struct Begun {
    conn: UnixStream,
    pid: i32,
    pidfd: OwnedFd,
    /// The stub's hello is still to be read (its pid was published: checked against it).
    hello_due: bool,
    /// The stub's answer about its parked workspace helper is still to be read.
    ws_due: bool,
    /// The go pipe's end (None: a stub that started the command on the request).
    go: Option<OwnedFd>,
    err_rd: OwnedFd,
    result_rd: OwnedFd,
    tty_host: Option<OwnedFd>,
    signals: tty::SignalPipe,
    timeout: Option<std::time::Duration>,
    /// An older stub's request, made and sent at the go (from the plan then read), and the
    /// fds it passes (held open until then).
    pending: Option<(Claimed, Vec<RawFd>)>,
    held: Vec<OwnedFd>,
}

/// What a claim's command gets beyond the member's plan: its own environment (over the
/// plan's), its `--rw` destinations (Landlock, after the plan's), its `rlimit_nproc`.
#[derive(Clone)]
pub struct Claimed {
    pub req: ExecRequest,
    pub writable: Vec<PathBuf>,
    pub rlimit_nproc: Option<u64>,
    pub end_at_exit: bool,
    /// The claim mounts something in the member (`Request::mounted`).
    pub mounted: bool,
    /// It attaches a workspace through the member's parked workspace helper, if the stub has
    /// one (`Request::attach`; [`Begun::workspace_helper`]).
    pub attach: bool,
}

impl Claimed {
    /// The request: over the stub's plan (`plan` None), or whole from `plan`; `hello`: the
    /// stub's hello is wanted.
    fn request(&self, plan: Option<&LaunchPlan>, go: bool, hello: bool) -> Request {
        let req = &self.req;
        let (env, cwd, writable) = match plan {
            None => (req.env.clone(), req.cwd.clone(), self.writable.clone()),
            Some(p) => (
                airlock_model::spec::env_over(&p.env, &req.env),
                req.cwd.clone().or_else(|| Some(p.cwd.clone())),
                p.writable_paths
                    .iter()
                    .chain(&self.writable)
                    .cloned()
                    .collect(),
            ),
        };
        Request {
            argv: req.argv.clone(),
            env,
            // Empty over the plan: the plan's.
            cwd: cwd.unwrap_or_default(),
            tty: req.tty,
            stdin_null: !req.forward_stdin && !req.tty,
            with_secrets: req.with_secrets,
            rlimit_nproc: self.rlimit_nproc,
            writable_paths: Some(writable),
            end_at_exit: self.end_at_exit,
            go,
            over_plan: plan.is_none(),
            hello,
            mounted: self.mounted,
            // Set by `begin_claimed` for a stub that has the helper.
            attach: false,
            ahead: false,
        }
    }
}

/// A request's message: `R`, the JSON's length, the JSON (one message with the fds; the stub
/// reads the rest of a short first read).
fn message(request: &Request) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    Ok(frame(&json))
}

/// A job sent ahead ([`Request::ahead`]): `J`, its prime's length and prime, its message's
/// length and message (the project directory's fd goes with it).
fn ahead_message(job: &super::attach::AheadJob) -> Vec<u8> {
    let mut msg = vec![b'J'];
    for part in [&job.prime, &job.msg] {
        msg.extend_from_slice(&(part.len() as u32).to_le_bytes());
        msg.extend_from_slice(part);
    }
    msg
}

/// A job sent ahead, as the stub reads it: its prime, its message, its fds. None: not one.
fn receive_ahead(conn: &mut UnixStream) -> Option<(Vec<u8>, Vec<u8>, Vec<OwnedFd>)> {
    let (mut data, fds) = sys::recv_fds(conn.as_raw_fd(), 1).ok()?;
    if data.first() != Some(&b'J') {
        return None;
    }
    let mut parts = Vec::new();
    let mut at = 1;
    for _ in 0..2 {
        read_up_to(conn, &mut data, at + 4)?;
        let len = u32::from_le_bytes(data[at..at + 4].try_into().ok()?) as usize;
        if len > MAX_AHEAD {
            return None;
        }
        at += 4;
        read_up_to(conn, &mut data, at + len)?;
        parts.push(data[at..at + len].to_vec());
        at += len;
    }
    if data.len() != at {
        return None;
    }
    let msg = parts.pop()?;
    let prime = parts.pop()?;
    Some((prime, msg, fds))
}

/// A job sent ahead is small (a few steps' JSON): larger is not one.
const MAX_AHEAD: usize = 1 << 20;

/// `data` (a message's first read) completed from `conn` to `len` bytes, if it is shorter.
fn read_up_to(conn: &mut UnixStream, data: &mut Vec<u8>, len: usize) -> Option<()> {
    if data.len() < len {
        let mut rest = vec![0; len - data.len()];
        conn.read_exact(&mut rest).ok()?;
        data.extend_from_slice(&rest);
    }
    Some(())
}

/// `R`, the length of `json`, `json`.
fn frame(json: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(5 + json.len());
    msg.push(b'R');
    msg.extend_from_slice(&(json.len() as u32).to_le_bytes());
    msg.extend_from_slice(json);
    msg
}

/// Send the claim's command to the stub of the claimed member in `dir` right after the claim,
/// before the member's plan is even read (the stub adds it to its own copy of the plan): the
/// stub hands it to its parked child, which takes its streams and waits for [`Begun::go`] — so
/// the stub's and the parked child's wake-ups overlap the claimer's binding (limits,
/// workspace, policy) instead of following it. A stub that does not say it waits (an older
/// member) gets the whole request only at the go. None: the member has no stub.
///
/// One round trip: the request goes out right after `connect`, the claimer writes the go
/// (after reading the hello of a stub that is not quiet), and wakes up again only when the
/// stub writes the command's
/// status — not when the stub has finished exiting (see [`StubExit`]). `end_at_exit`: the
/// claimer needs nothing of the member after the command (the stub ends it right after the
/// status, while the claimer reads it; the claimer still waits for that end).
pub fn begin_claimed(
    dir: &Path,
    claimed: &Claimed,
    ahead: Option<super::attach::AheadJob>,
) -> Result<Option<Begun>, RunError> {
    let req = &claimed.req;
    if req.argv.is_empty() {
        return Err(RunError::Setup("no command to exec".into()));
    }
    // The pidfd before the connection: a connection that succeeds proves the stub alive at
    // that moment (it alone holds the listener), and it lived since before the member was
    // ready, so this pidfd is the stub's and no recycled pid's — and the published pid the
    // stub's. A quiet stub's hello would tell nothing more: none is asked for, and the command
    // starts at the go without waiting for one.
    let published = published_stub(dir).and_then(|p| sys::pidfd_open(p.pid).ok().map(|fd| (p, fd)));
    let Ok(mut conn) = UnixStream::connect(dir.join(STUB_SOCKET)) else {
        return Ok(None);
    };
    let ws_due = claimed.attach && published.as_ref().is_some_and(|(p, _)| p.go && p.attach);
    let ahead = ahead.filter(|_| ws_due && published.as_ref().is_some_and(|(p, _)| p.job));
    let (pid, pidfd, waits, hello_due) = match published {
        Some((p, fd)) => (p.pid, fd, p.go, !p.quiet),
        None => {
            // A stub whose pid was not published (an older member): its hello first, and the
            // pidfd before the request, while the stub cannot end.
            let pid = hello(&mut conn)?;
            let fd = sys::pidfd_open(pid).map_err(io_err("pidfd_open"))?;
            (pid, fd, false, false)
        }
    };
    let pipe =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err("pipe")(e.into()));
    let (err_rd, err_wr) = pipe()?;
    let (result_rd, result_wr) = pipe()?;
    drop(result_wr); // a claim's change summary is read from its layers, not reported
    let go = if waits { Some(pipe()?) } else { None };
    let tty_pair = if req.tty {
        Some(sys::socketpair(nix::sys::socket::SockType::Stream).map_err(io_err("socketpair"))?)
    } else {
        None
    };
    let mut fds = vec![0, 1, 2, err_wr.as_raw_fd()];
    fds.extend(go.as_ref().map(|(rd, _)| rd.as_raw_fd()));
    fds.extend(tty_pair.as_ref().map(|(_, c)| c.as_raw_fd()));
    // Held open until they are sent.
    let mut held = vec![err_wr];
    let tty_host = tty_pair.map(|(host, child)| {
        held.push(child);
        host
    });
    let (go, pending) = match go {
        Some((rd, wr)) => {
            let mut request = claimed.request(None, true, hello_due);
            request.attach = ws_due;
            request.ahead = ahead.is_some();
            let msg = message(&request).map_err(lost)?;
            sys::send_fds(conn.as_raw_fd(), &msg, &fds).map_err(lost)?;
            if let Some(job) = &ahead {
                sys::send_fds(
                    conn.as_raw_fd(),
                    &ahead_message(job),
                    &[job.project.as_raw_fd()],
                )
                .map_err(lost)?;
            }
            drop(rd);
            held.clear();
            crate::phase("warm: request sent to the stub");
            (Some(wr), None)
        }
        // An older stub starts the command on the request: it goes at the go.
        None => (None, Some((claimed.clone(), fds))),
    };
    // Signals relayed from here (the request is on its way first): one that comes before
    // ends this process, and the claim with it — its go pipe closes unwritten.
    let signals = tty::SignalPipe::install().map_err(io_err("install signal handlers"))?;
    Ok(Some(Begun {
        conn,
        pid,
        pidfd,
        hello_due,
        ws_due,
        go,
        err_rd,
        result_rd,
        tty_host,
        signals,
        timeout: req.timeout,
        pending,
        held,
    }))
}

fn lost(e: std::io::Error) -> RunError {
    RunError::Setup(format!("the member's exec stub: {e}"))
}

/// A quiet stub's hello that its claimer did not ask for: a stub says hello when no request
/// came within 100 ms of the connection (the claimer it waits for is older than every quiet
/// stub), so a claimer that stalled that long between its `connect` and its request (a loaded
/// machine, a stopped process) gets one, before anything else the stub writes. Read off here —
/// `S` and the stub's pid, there since before the request left — so that neither the workspace
/// helper's answer nor the command's status is taken for it. (A status never reads that way:
/// its five bytes are a code up to 255 and `K`, and no pid has `K` as its high byte.)
fn skip_unasked_hello(conn: &UnixStream, pid: i32) {
    use nix::sys::socket::{recv, MsgFlags};
    let mut b = [0u8; 5];
    let peeked = recv(
        conn.as_raw_fd(),
        &mut b,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    );
    if matches!(peeked, Ok(5)) && b[0] == b'S' && b[1..] == pid.to_le_bytes() {
        let _ = (&*conn).read_exact(&mut b);
    }
}

/// The stub's hello: its pid.
fn hello(conn: &mut UnixStream) -> Result<i32, RunError> {
    let mut hello = [0u8; 5];
    conn.read_exact(&mut hello).map_err(lost)?;
    if hello[0] != b'S' {
        return Err(RunError::Setup(
            "the member's exec stub answered unexpectedly".into(),
        ));
    }
    Ok(i32::from_le_bytes(
        hello[1..5].try_into().unwrap_or_default(),
    ))
}

impl Begun {
    /// Whether the stub will hand over its parked workspace helper ([`Begun::workspace_helper`]):
    /// the member's namespaces are then not needed for the workspace.
    pub fn offers_workspace_helper(&self) -> bool {
        self.ws_due
    }

    /// The member's parked workspace helper (`attach::park`), for `attach_workspace`: None
    /// when the stub has none (it could not park it) or was not asked.
    pub fn workspace_helper(&mut self) -> Option<super::attach::ParkedHelper> {
        if !std::mem::take(&mut self.ws_due) {
            return None;
        }
        skip_unasked_hello(&self.conn, self.pid);
        let answer = sys::recv_fds(self.conn.as_raw_fd(), 1);
        crate::phase("warm: the stub's workspace helper");
        match answer {
            Ok((data, mut fds)) if matches!(data.first(), Some(b'W' | b'J')) && fds.len() == 1 => {
                fds.pop()
                    .map(|sock| super::attach::ParkedHelper::new(sock, &data[1..], data[0] == b'J'))
            }
            _ => None,
        }
    }

    /// The claim is bound (the member's plan `plan`, read meanwhile): the command starts now;
    /// until its status, `side` is served too (a claim's egress events).
    pub fn go(
        mut self,
        plan: &LaunchPlan,
        side: Option<&mut dyn Side>,
    ) -> Result<(Outcome, StubExit), RunError> {
        // An answer about the workspace helper that was not taken comes before the status.
        drop(self.workspace_helper());
        if let Some((claimed, fds)) = self.pending.take() {
            let msg = message(&claimed.request(Some(plan), false, true)).map_err(lost)?;
            sys::send_fds(self.conn.as_raw_fd(), &msg, &fds).map_err(lost)?;
            self.held.clear();
            crate::phase("warm: request sent to the stub");
        }
        // The stub is the one its supervisor published (the pid signals are relayed to)
        // before its command may start: otherwise the go pipe closes unwritten.
        if self.hello_due && hello(&mut self.conn)? != self.pid {
            return Err(RunError::Setup(
                "the member's exec stub is not the one its supervisor published".into(),
            ));
        }
        if !self.hello_due {
            skip_unasked_hello(&self.conn, self.pid);
        }
        if let Some(go) = self.go.take() {
            sys::write_all_raw(go.as_raw_fd(), &[GO]);
            crate::phase("warm: go sent to the parked child");
        }
        let child = Pid::from_raw(self.pid);
        let deadline = self.timeout.map(|t| std::time::Instant::now() + t);
        // Woken by the connection: the status the stub writes before it exits, or its end
        // (killed: the connection closes).
        let conn = OwnedFd::from(self.conn);
        let (timed_out, _) = tty::supervise(
            &conn,
            child,
            &self.signals,
            self.tty_host.as_ref(),
            &self.result_rd,
            deadline,
            None,
            side,
        )
        .map_err(io_err("supervise the command"))?;
        let mut stub = StubExit {
            pidfd: self.pidfd,
            conn: None,
        };
        if timed_out {
            return Ok((
                Outcome {
                    ending: Ending::TimedOut,
                    changes: None,
                },
                stub,
            ));
        }
        // The stub wrote the command's status before it exited; nothing: it was killed. Then,
        // in the same write, whether it ends the member when we hang up.
        let mut conn = UnixStream::from(conn);
        let mut code = [0u8; 4];
        let status = match conn.read_exact(&mut code) {
            Ok(()) => nix::sys::wait::WaitStatus::Exited(child, i32::from_le_bytes(code)),
            Err(_) => nix::sys::wait::WaitStatus::Signaled(child, Signal::SIGKILL, false),
        };
        let mut word = [0u8; 1];
        if matches!(status, nix::sys::wait::WaitStatus::Exited(..))
            && matches!(conn.read(&mut word), Ok(1))
            && word[0] == ENDS_MEMBER
        {
            stub.conn = Some(OwnedFd::from(conn));
        }
        let code = match super::ending::conclude(status, self.err_rd)? {
            super::ending::Concluded::Ran(c) | super::ending::Concluded::NotStarted(c) => c,
        };
        Ok((
            Outcome {
                ending: Ending::Exited(code),
                changes: None,
            },
            stub,
        ))
    }
}
