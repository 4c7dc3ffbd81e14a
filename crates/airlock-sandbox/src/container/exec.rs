//! exec into a running persistent sandbox, straight from the caller's process: join PID 1's
//! namespaces (user first: the owner of a user namespace holds its capabilities), fork into its
//! pid namespace, join its cgroup, and become the command exactly as `run` would (privileges
//! dropped, Landlock, seccomp, only fds 0-2). No daemon on the path.

use super::child::{command, Command};
use super::ending::{conclude, Concluded};
use super::error::{io_err, RunError};
use super::forked;
use super::{seccomp, tty};
use crate::cgroup::Layout;
use crate::command::{Ending, Outcome};
use crate::sys;
use airlock_model::exit;
use airlock_model::plan::LaunchPlan;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

pub use crate::command::ExecRequest;

/// The sandbox's secrets as `NAME=value` (read inside its mount namespace).
fn secret_env() -> Vec<std::ffi::CString> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/run/secrets") else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(v) = fs::read(e.path()) {
            let mut kv = format!("{name}=").into_bytes();
            kv.extend_from_slice(&v);
            if let Ok(c) = std::ffi::CString::new(kv) {
                out.push(c);
            }
        }
    }
    out
}

/// Where a persistent sandbox publishes PID 1: "PID STARTTIME".
pub const PID1_FILE: &str = "pid1";

/// Field 22 of /proc/PID/stat: when the process started (distinguishes a recycled pid).
pub fn proc_starttime(pid: i32) -> Option<u64> {
    let mut buf = [0u8; 2048];
    let stat = crate::sys::read_small(format!("/proc/{pid}/stat"), &mut buf).ok()?;
    let stat = std::str::from_utf8(stat).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

/// The running sandbox's PID 1, checked against its recorded start time (a recycled pid is
/// never mistaken for it).
pub fn pid1(dir: &Path) -> Option<i32> {
    let (pid, start) = pid1_recorded(dir)?;
    (proc_starttime(pid) == Some(start)).then_some(pid)
}

/// PID 1 as published in `dir`: its pid and start time, not checked.
pub fn pid1_recorded(dir: &Path) -> Option<(i32, u64)> {
    let mut buf = [0u8; 64];
    let text = crate::sys::read_small(dir.join(PID1_FILE), &mut buf).ok()?;
    let mut it = std::str::from_utf8(text).ok()?.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

pub(super) const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("user", CloneFlags::CLONE_NEWUSER),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    // Last: PID 1 creates it only after joining its cgroup and hands it over itself.
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
];

/// Open PID 1's namespaces (in `NAMESPACES` order).
/// (All but the cgroup namespace, which PID 1 sends once it exists.)
pub fn open_namespaces(pid: i32) -> std::io::Result<Vec<OwnedFd>> {
    NAMESPACES[..NAMESPACES.len() - 1]
        .iter()
        .map(|(n, _)| fs::File::open(format!("/proc/{pid}/ns/{n}")).map(OwnedFd::from))
        .collect()
}

/// The control socket of a persistent sandbox (in its folder).
pub const CONTROL_SOCKET: &str = "control.sock";

/// Serve the namespaces to exec on `dir/control.sock`, for callers of our own uid only.
pub fn serve_namespaces(dir: &Path, fds: Vec<OwnedFd>) -> Result<(), RunError> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(CONTROL_SOCKET);
    let _ = fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path)
        .map_err(io_err("create the control socket"))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
        .map_err(io_err("restrict the control socket"))?;
    let me = nix::unistd::geteuid().as_raw();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
            for conn in listener.incoming().flatten() {
                let ok =
                    nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
                        .is_ok_and(|c| c.uid() == me || c.uid() == 0);
                if ok {
                    let _ = sys::send_fds(conn.as_raw_fd(), b"ns", &raw);
                }
            }
        })
        .map_err(io_err("start the control thread"))?;
    Ok(())
}

/// A running sandbox's namespaces, as its control socket hands them out.
pub(crate) struct Namespaces(Vec<(CloneFlags, OwnedFd)>);

/// A running sandbox's namespaces asked for ahead of their use ([`ask_namespaces`]): its
/// supervisor sends them while the caller does something else.
pub struct AskedNamespaces(std::io::Result<std::os::unix::net::UnixStream>);

/// Ask the sandbox whose folder is `dir` for its namespaces now, to take them later.
pub fn ask_namespaces(dir: &Path) -> AskedNamespaces {
    AskedNamespaces(std::os::unix::net::UnixStream::connect(
        dir.join(CONTROL_SOCKET),
    ))
}

impl AskedNamespaces {
    /// The namespaces the control socket sends.
    fn take(self) -> std::io::Result<Vec<(CloneFlags, OwnedFd)>> {
        let conn = self.0?;
        let (data, fds) = sys::recv_fds(conn.as_raw_fd(), NAMESPACES.len())?;
        if data != b"ns" || fds.len() != NAMESPACES.len() {
            return Err(std::io::Error::other(
                "the control socket answered unexpectedly",
            ));
        }
        Ok(NAMESPACES.iter().map(|(_, f)| *f).zip(fds).collect())
    }
}

impl Namespaces {
    /// Those of the sandbox `name` whose folder is `dir`; an error says it is not running.
    pub(crate) fn of(dir: &Path, name: &str) -> Result<Self, RunError> {
        Self::taken(None, dir, name)
    }

    /// Those asked for with [`ask_namespaces`] (None: asked for now).
    pub(crate) fn taken(
        asked: Option<AskedNamespaces>,
        dir: &Path,
        name: &str,
    ) -> Result<Self, RunError> {
        asked
            .unwrap_or_else(|| ask_namespaces(dir))
            .take()
            .map(Self)
            .map_err(|e| RunError::Setup(format!("sandbox {name} is not running ({e})")))
    }

    /// The namespace of kind `flag`.
    pub(crate) fn get(&self, flag: CloneFlags) -> Result<&OwnedFd, RunError> {
        self.0
            .iter()
            .find(|(f, _)| *f == flag)
            .map(|(_, fd)| fd)
            .ok_or_else(|| RunError::Setup("the sandbox's namespaces are incomplete".into()))
    }
}

fn cstrings(items: impl Iterator<Item = String>) -> Result<Vec<CString>, RunError> {
    items
        .map(|s| CString::new(s.clone()).map_err(|_| RunError::Nul(s)))
        .collect()
}

/// Run `req` in the sandbox whose folder is `dir` (plan.json + pid1), in its cgroup `leaf`
/// (`NAME.ID`, so that its limits hold for the command too). Blocks until it exits.
pub fn exec(
    dir: &Path,
    plan: &LaunchPlan,
    leaf: Option<&str>,
    req: &ExecRequest,
) -> Result<Outcome, RunError> {
    if req.argv.is_empty() {
        return Err(RunError::Setup("no command to exec".into()));
    }
    if pid1(dir).is_none() {
        return Err(RunError::Setup(format!(
            "sandbox {} is not running",
            plan.name
        )));
    }
    let ns = Namespaces::of(dir, &plan.name)?;
    // The sandbox's cgroup directories (host view), joined by the child before entering its
    // namespaces as a sandbox's PID 1 joins them (`Cgroup::self_join`: on v1 through `tasks`
    // files opened here, without the kernel's global cgroup lock).
    let cgroups = match leaf {
        Some(leaf) => {
            let layout = Layout::detect();
            let dirs: Vec<PathBuf> = layout
                .parents()
                .into_iter()
                .map(|p| p.join(leaf))
                .filter(|p| p.is_dir())
                .collect();
            crate::cgroup::SelfJoin::open(&dirs, matches!(layout, Layout::V2 { .. }))
        }
        None => crate::cgroup::SelfJoin::default(),
    };
    let env = airlock_model::spec::env_over(&plan.env, &req.env);
    let argv = cstrings(req.argv.iter().cloned())?;
    let envp = cstrings(env.iter().map(|(k, v)| format!("{k}={v}")))?;
    let cwd = req.cwd.clone().unwrap_or_else(|| plan.cwd.clone());
    crate::phase("exec: namespaces fetched");
    let filter = seccomp::programs()?;
    crate::phase("exec: seccomp compiled");
    let pipe =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err("pipe")(e.into()));
    let (err_rd, err_wr) = pipe()?;
    let (result_rd, result_wr) = pipe()?;
    drop(result_wr); // exec reports no change summary
    let tty_pair = if req.tty {
        Some(sys::socketpair(nix::sys::socket::SockType::Stream).map_err(io_err("socketpair"))?)
    } else {
        None
    };
    let signals = tty::SignalPipe::install().map_err(io_err("install signal handlers"))?;
    let child = sys::clone_fork(0).map_err(RunError::Clone)?;
    if child == 0 {
        let ef = err_wr.as_raw_fd();
        let fail = |msg: String| -> ! {
            sys::write_all_raw(ef, msg.as_bytes());
            sys::exit_now(exit::SANDBOX_FAILED)
        };
        let _ = sys::prctl_simple(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        let pid = std::process::id() as i32;
        if let Err(e) = cgroups.join().and_then(|()| cgroups.add_rest(pid)) {
            fail(format!("join the sandbox cgroup: {e}"));
        }
        drop(cgroups);
        crate::phase("exec: cgroups joined");
        let inside = Inside {
            plan,
            argv: &argv,
            envp: &envp,
            cwd: &cwd,
            tty_sock: tty_pair.as_ref().map(|(_, c)| c),
            stdin_null: !req.forward_stdin && !req.tty,
            with_secrets: req.with_secrets,
            filter: &filter,
            parked: false,
            landlock: Default::default(),
        };
        enter_and_relay(&ns.0, &inside, err_wr, &|_| {})
    }
    drop(err_wr);
    drop(ns);
    let tty_host = tty_pair.map(|(h, c)| {
        drop(c);
        h
    });
    let pidfd = sys::pidfd_open(child).map_err(io_err("pidfd_open"))?;
    let child = Pid::from_raw(child);
    let deadline = req.timeout.map(|t| std::time::Instant::now() + t);
    let (timed_out, _) = tty::supervise(
        &pidfd,
        child,
        &signals,
        tty_host.as_ref(),
        &result_rd,
        deadline,
        None,
        None,
    )
    .map_err(io_err("supervise the command"))?;
    let status = nix::sys::wait::waitpid(child, None)
        .map_err(|e| io_err("wait for the command")(e.into()))?;
    if timed_out {
        return Ok(Outcome {
            ending: Ending::TimedOut,
            changes: None,
        });
    }
    let code = match conclude(status, err_rd)? {
        Concluded::Ran(c) | Concluded::NotStarted(c) => c,
    };
    Ok(Outcome {
        ending: Ending::Exited(code),
        changes: None,
    })
}

/// What a process joining a running sandbox starts there: exec's child, or a warm-pool
/// member's stub (`stub.rs`) once claimed.
pub(super) struct Inside<'a> {
    pub plan: &'a LaunchPlan,
    pub argv: &'a [CString],
    pub envp: &'a [CString],
    pub cwd: &'a Path,
    pub tty_sock: Option<&'a OwnedFd>,
    pub stdin_null: bool,
    pub with_secrets: bool,
    pub filter: &'a [seccomp::Insn],
    /// A warm member's parked child: its seccomp filter is on, its bounding set dropped and
    /// its signals at their defaults already (done before the claim, `child::prepare_parked`).
    pub parked: bool,
    /// Landlock's ruleset made while a parked child waited (see `child::Command::landlock`).
    pub landlock: std::cell::Cell<Option<(super::landlock::Prepared, usize)>>,
}

/// In a forked child that is in the sandbox's cgroup already: join the sandbox's namespaces
/// (user first), fork the command into its pid namespace (privileges dropped, Landlock,
/// seccomp, only fds 0-2), relay signals to it and exit with its status, which `report` gets
/// first. Never returns.
pub(super) fn enter_and_relay(
    ns: &[(CloneFlags, OwnedFd)],
    a: &Inside<'_>,
    err_wr: OwnedFd,
    report: &dyn Fn(i32),
) -> ! {
    let ef = err_wr.as_raw_fd();
    let fail = |msg: String| -> ! {
        sys::write_all_raw(ef, msg.as_bytes());
        sys::exit_now(exit::SANDBOX_FAILED)
    };
    for (flag, fd) in ns {
        if let Err(e) = nix::sched::setns(fd, *flag) {
            fail(format!("join the sandbox's {flag:?} namespace: {e}"));
        }
    }
    let all = SigSet::all();
    let _ = all.thread_block();
    let inner = match sys::clone_fork(0) {
        Ok(0) => become_command(a, ef),
        Ok(p) => Pid::from_raw(p),
        Err(e) => fail(format!("fork into the sandbox: {e}")),
    };
    drop(err_wr);
    relay(inner, report)
}

/// In the command's own process, inside the sandbox's namespaces and cgroup: its terminal,
/// the secrets in its environment, seccomp, then [`command`] (privileges dropped, Landlock,
/// only fds 0-2 and the error pipe `ef`). Never returns.
pub(super) fn become_command(a: &Inside<'_>, ef: RawFd) -> ! {
    let fail = |msg: String| -> ! {
        sys::write_all_raw(ef, msg.as_bytes());
        sys::exit_now(exit::SANDBOX_FAILED)
    };
    let slave = a
        .tty_sock
        .map(|s| match super::child::open_pty(s.as_raw_fd()) {
            Ok(sl) => sl,
            Err(e) => fail(format!("allocate a pseudo-terminal: {e}")),
        });
    let mut envp = a.envp.to_vec();
    if a.with_secrets {
        for kv in secret_env() {
            let key = kv
                .as_bytes()
                .split(|b| *b == b'=')
                .next()
                .unwrap_or_default();
            envp.retain(|e| e.as_bytes().split(|b| *b == b'=').next() != Some(key));
            envp.push(kv);
        }
    }
    if !a.parked {
        if let Err(e) = seccomp::install(a.filter) {
            fail(format!("seccomp: {e}"));
        }
    }
    let c = Command {
        argv: a.argv,
        envp: &envp,
        cwd: a.cwd,
        err_fd: ef,
        stdin_null: a.stdin_null,
        drop_privileges: true,
        parked: a.parked,
        landlock: std::cell::Cell::new(a.landlock.take()),
    };
    command(a.plan, &c, slave.as_ref())
}

/// With every signal blocked in this process: relay signals to the command `inner` (our
/// child) and exit with its status, which `report` gets first. Never returns.
pub(super) fn relay(inner: Pid, report: &dyn Fn(i32)) -> ! {
    let all = SigSet::all();
    loop {
        let Ok(sig) = all.wait() else { continue };
        if sig == Signal::SIGCHLD {
            use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
            let code = match waitpid(inner, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, c)) => c,
                Ok(WaitStatus::Signaled(_, s, _)) => exit::SIGNAL_BASE + s as i32,
                _ => continue,
            };
            report(code);
            sys::exit_now(code)
        } else if nix::sys::signal::killpg(inner, sig).is_err() {
            let _ = nix::sys::signal::kill(inner, sig);
        }
    }
}

/// Write `secrets` as /run/secrets/NAME (0400, the sandbox user's, as a start writes them)
/// into the running sandbox in `dir`, from a forked child that joins its user and mount
/// namespaces. For the warm pool's claim: a member starts with no secrets, and the claimer's
/// are written before its command runs. Refuses a sandbox that has /run/secrets already (a
/// second claim of one member, which the pool never makes, would find the first one's).
/// `ca_pem`: the claim's interception CA (injected secrets), written with the system's roots
/// at `plan::CA_BUNDLE` as a cold start's PID 1 writes it (refused if one is there already).
pub fn deliver_secrets(
    dir: &Path,
    secrets: &[(String, String)],
    ca_pem: Option<&str>,
) -> Result<(), RunError> {
    let plan = crate::folder::read_plan(dir)
        .map_err(|e| RunError::Setup(format!("the sandbox's plan: {e}")))?;
    let ns = Namespaces::of(dir, &plan.name)?;
    let (userns, mntns) = (
        ns.get(CloneFlags::CLONE_NEWUSER)?,
        ns.get(CloneFlags::CLONE_NEWNS)?,
    );
    // A warm claim's injected secrets: the bundle a cold start's PID 1 writes (the system's
    // roots and the claim's interception CA).
    let bundle = ca_pem.map(super::ca_bundle);
    let ended = forked::run("secrets", "", |h| {
        h.join_user(userns.as_fd());
        if !plan.rootless {
            h.become_root();
        }
        h.join_mounts(mntns.as_fd());
        if let Err(e) = super::child::write_secrets(&plan, secrets) {
            h.fail(format!("write /run/secrets: {e}"));
        }
        if let Some(b) = &bundle {
            if let Err(e) = super::child::write_ca_bundle(b) {
                h.fail(format!("write {}: {e}", airlock_model::plan::CA_BUNDLE));
            }
        }
    });
    drop(ns);
    ended
}
