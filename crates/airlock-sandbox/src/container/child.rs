//! Code that runs in the cloned child: it becomes PID 1 of the sandbox, builds the root
//! filesystem, starts the command (PID 2) with every privilege dropped, then stays as a small
//! init that reaps zombies and forwards signals. Never returns: exits with the command's status.

use super::rootfs::{self, OverlayDirs, Prepared, SummaryDirs};
use super::seccomp::Insn;
use super::summary;
use super::{landlock, seccomp};
use crate::os::Real;
use crate::sys;
use airlock_model::exit;
use airlock_model::plan::LaunchPlan;
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{Gid, Pid, Uid};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Everything the child needs, prepared by the parent before clone.
pub struct ChildArgs<'a> {
    pub plan: &'a LaunchPlan,
    pub root_path: PathBuf,
    /// Overlay upper and work directories (host paths).
    pub overlay: Option<(PathBuf, PathBuf)>,
    pub prepared: Option<Prepared>,
    pub sync_rd: Option<OwnedFd>,
    pub err_wr: OwnedFd,
    /// PID 1 writes the overlay change summary (JSON) here before exiting.
    pub result_wr: OwnedFd,
    pub tty_sock: Option<OwnedFd>,
    /// Filtered egress: where the network namespace's listeners go.
    pub net_sock: Option<OwnedFd>,
    pub stdin_null: bool,
    pub seccomp: &'a [Insn],
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// Written to /run/secrets/NAME (0400, the sandbox user's) before privileges are dropped.
    pub secrets: &'a [(String, String)],
    /// Injected secrets: the CA bundle to write at [`airlock_model::plan::CA_BUNDLE`] (the system's roots plus the
    /// sandbox's interception CA).
    pub ca_bundle: Option<&'a [u8]>,
    /// Descriptors of the parent that must not survive in the child.
    pub parent_only: Vec<RawFd>,
    /// The sandbox's cgroup, joined by the child itself as its first step after the release
    /// (no global cgroup lock: see `Cgroup::self_join`).
    pub cgroup_join: Option<crate::cgroup::SelfJoin>,
}

/// Where [`LaunchPlan::ram_fd`]'s memory file is, past the exec.
const RAM_FD: RawFd = 3;

/// A memory file (memfd) of `ram.size` bytes with `ram.from`'s data where it has data (its
/// holes stay holes: zero, and no memory).
fn ram_file(ram: &airlock_model::plan::RamFile) -> std::io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    let src = std::fs::File::open(&ram.from)?;
    if src.metadata()?.len() != ram.size {
        return Err(std::io::Error::other(format!(
            "its size is not the guest's memory size ({} bytes)",
            ram.size
        )));
    }
    // SAFETY: memfd_create(2) with a NUL-terminated name; the result is a new descriptor.
    let fd = unsafe { libc::memfd_create(c"airlock-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned to us and is owned by nothing else.
    let mem = unsafe { OwnedFd::from_raw_fd(fd) };
    let mem_file = std::fs::File::from(mem.try_clone()?);
    mem_file.set_len(ram.size)?;
    sys::copy_data(src.as_raw_fd(), mem.as_raw_fd(), ram.size)?;
    Ok(mem)
}

/// Report a setup failure to the parent and exit.
fn fail(err_fd: RawFd, code: i32, msg: &str) -> ! {
    sys::write_all_raw(err_fd, msg.as_bytes());
    sys::exit_now(code)
}

macro_rules! tryc {
    ($fd:expr, $e:expr, $what:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => fail($fd, exit::SANDBOX_FAILED, &format!("{}: {}", $what, e)),
        }
    };
}

pub fn main(mut a: ChildArgs<'_>) -> ! {
    let ef = a.err_wr.as_raw_fd();
    // The parent's side of every pipe and socket pair.
    sys::close_inherited(&a.parent_only);
    tryc!(
        ef,
        sys::prctl_simple(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong),
        "set parent-death signal"
    );
    // Wait for the parent to write our id maps (and place us in the cgroups we do not join
    // ourselves); EOF = it died.
    let mut b = [0u8; 1];
    // The parent keeps the other end open for as long as it lives: EOF/HUP here = it died.
    let alive = a.sync_rd.take();
    if alive.as_ref().map(|s| nix::unistd::read(s, &mut b)) != Some(Ok(1)) {
        sys::exit_now(exit::SANDBOX_FAILED);
    }

    if let Some(join) = a.cgroup_join.take() {
        tryc!(ef, join.join(), super::error::JOIN_CGROUP);
    }
    let plan = a.plan;
    crate::phase("child: go");
    // Open the run's directories now, in our own mount namespace and while still the host's
    // uid (a root-run child can traverse the state directory only before it becomes the
    // sandbox's unprivileged root).
    let mount_point = tryc!(ef, open_dir(&a.root_path), "open the root mount point");
    let overlay = a.overlay.as_ref().map(|(u, w)| OverlayDirs {
        upper: tryc!(ef, open_dir(u), "open the overlay upper dir"),
        work: tryc!(ef, open_dir(w), "open the overlay work dir"),
    });
    let summary = match rootfs::enter(&Real, plan, mount_point, a.prepared.take(), overlay) {
        Ok(summary) => summary,
        Err(rootfs::Failed { what, error }) => {
            fail(ef, exit::SANDBOX_FAILED, &format!("{what}: {error}"))
        }
    };
    tryc!(ef, write_secrets(plan, a.secrets), "write /run/secrets");
    if let Some(b) = a.ca_bundle {
        tryc!(
            ef,
            write_ca_bundle(b),
            format!("write {}", airlock_model::plan::CA_BUNDLE)
        );
    }
    tryc!(ef, nix::unistd::sethostname(&plan.hostname), "sethostname");
    tryc!(ef, sys::loopback_up(), "bring up loopback");
    if plan.net == airlock_model::policy::NetMode::Open {
        tryc!(
            ef,
            sys::add_routes(&metadata_floor()),
            "hold the metadata floor"
        );
    }
    let ctl = a.net_sock.take();
    if let (Some(egress), Some(sock)) = (&plan.egress, &ctl) {
        let listeners = tryc!(ef, super::netns::setup(egress), "set up filtered egress");
        tryc!(
            ef,
            super::netns::send(sock, &listeners),
            "hand over the egress listeners"
        );
    }

    crate::phase("child: pivoted, net up");
    let slave = a
        .tty_sock
        .as_ref()
        .map(|sock| tryc!(ef, open_pty(sock.as_raw_fd()), "allocate a pseudo-terminal"));
    drop(a.tty_sock.take());

    // Block every signal: PID 1 takes them with sigwaitinfo; the command unblocks before exec.
    let all = SigSet::all();
    tryc!(ef, all.thread_block(), "block signals");

    // One filter for PID 1 and, inherited through fork and exec, the command.
    crate::phase("child: before seccomp");
    tryc!(ef, seccomp::install(a.seccomp), "seccomp");
    crate::phase("child: seccomp installed");
    // PID 1 gives up every privilege before the command exists. A credential change clears the
    // parent-death signal; re-arm it, then make sure airlock did not die in between.
    tryc!(ef, drop_privileges(plan, true), "drop privileges");
    let _ = sys::prctl_simple(libc::PR_SET_DUMPABLE, 0);
    tryc!(
        ef,
        sys::prctl_simple(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong),
        "set parent-death signal"
    );
    if alive.as_ref().is_none_or(sys::hung_up) {
        sys::exit_now(exit::SANDBOX_FAILED);
    }
    drop(alive);
    if plan.argv.is_empty() {
        // A persistent sandbox: PID 1 only keeps the namespaces alive; commands arrive by exec.
        drop(slave);
        // Tell the host side the sandbox is ready for exec, with our cgroup namespace (which
        // exists only now and which nobody outside may open once we are not dumpable).
        let cgroup_ns = tryc!(
            ef,
            std::fs::File::open("/proc/self/ns/cgroup"),
            "open the cgroup namespace"
        );
        if let Some(sock) = &ctl {
            tryc!(
                ef,
                sys::send_fds(sock.as_raw_fd(), b"R", &[cgroup_ns.as_raw_fd()]),
                "report ready"
            );
        }
        drop(a.err_wr);
        init_persistent()
    }
    let cmd = match tryc!(ef, sys::clone_fork(0), "fork the command") {
        0 => {
            let c = Command {
                argv: &a.argv,
                envp: &a.envp,
                cwd: &plan.cwd,
                err_fd: ef,
                stdin_null: a.stdin_null,
                drop_privileges: false,
                parked: false,
                landlock: Default::default(),
            };
            command(plan, &c, slave.as_ref())
        }
        pid => pid,
    };
    drop(slave);
    drop(a.err_wr);
    let summary = if plan.summarize_changes {
        summary
    } else {
        None
    };
    init(Pid::from_raw(cmd), summary, a.result_wr)
}

fn open_dir(p: &Path) -> std::io::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    Ok(nix::fcntl::open(
        p,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?)
}

/// Open /dev/ptmx of the sandbox's own devpts, hand the master to the host side, return the slave.
pub(super) fn open_pty(sock: RawFd) -> std::io::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    let master = nix::fcntl::open(
        "/dev/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let name = sys::ptsname(&master)?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    sys::send_fd(sock, master.as_raw_fd())?;
    Ok(slave)
}

/// `bounding`: the capability bounding set and the ambient set too (a parked child dropped
/// them while it waited for its claim).
fn drop_privileges(plan: &LaunchPlan, bounding: bool) -> std::io::Result<()> {
    let (uid, gid) = (Uid::from_raw(plan.user.0), Gid::from_raw(plan.user.1));
    if bounding {
        sys::drop_bounding_and_ambient()?;
    }
    if !plan.rootless {
        nix::unistd::setgroups(&[gid])?;
    }
    nix::unistd::setresgid(gid, gid, gid)?;
    nix::unistd::setresuid(uid, uid, uid)?;
    sys::capset_clear()?;
    sys::prctl_simple(libc::PR_SET_NO_NEW_PRIVS, 1)?;
    Ok(())
}

/// What to exec inside, and where to report failures before exec.
pub(super) struct Command<'a> {
    pub argv: &'a [CString],
    pub envp: &'a [CString],
    pub cwd: &'a Path,
    pub err_fd: RawFd,
    pub stdin_null: bool,
    /// Whether the caller still holds privileges to drop (exec), or already dropped them (PID 1).
    pub drop_privileges: bool,
    /// A warm member's parked child ([`prepare_parked`], done while it waited for its claim):
    /// its bounding and ambient sets are empty and every signal is at its default already.
    pub parked: bool,
    /// Landlock's ruleset made while a parked child waited, for the first `n` of the plan's
    /// writable paths (and /dev): the rest are added to it (None: made here, whole).
    pub landlock: std::cell::Cell<Option<(landlock::Prepared, usize)>>,
}

/// What a warm member's parked child does while it waits for its claim, of what
/// [`command`] does before the exec: nothing that depends on the claim (its workspace, its
/// limits, its paths), only what would otherwise cost its command ≈ 0.2 ms after the go — the
/// bounding set dropped one capability per `prctl` (41 calls, each through the seccomp
/// filter) and every signal's disposition reset (31 calls).
pub(super) fn prepare_parked() -> std::io::Result<()> {
    sys::drop_bounding_and_ambient()?;
    sys::default_all_signals();
    Ok(())
}

/// PID 2 (or an exec'd process): becomes the user's command, with every privilege dropped.
pub(super) fn command(plan: &LaunchPlan, a: &Command<'_>, slave: Option<&OwnedFd>) -> ! {
    let ef = a.err_fd;
    tryc!(ef, nix::unistd::setsid(), "setsid");
    if let Some(s) = slave {
        tryc!(
            ef,
            sys::set_controlling_tty(s.as_raw_fd()),
            "set controlling terminal"
        );
        for fd in 0..3 {
            tryc!(ef, sys::dup2(s.as_raw_fd(), fd), "dup2 terminal");
        }
    } else if a.stdin_null {
        let null = tryc!(
            ef,
            nix::fcntl::open(
                "/dev/null",
                nix::fcntl::OFlag::O_RDONLY,
                nix::sys::stat::Mode::empty()
            ),
            "open /dev/null"
        );
        tryc!(ef, sys::dup2(null.as_raw_fd(), 0), "dup2 /dev/null");
    }
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    tryc!(ef, setrlimit(Resource::RLIMIT_CORE, 0, 0), "setrlimit core");
    if let Some(n) = plan.rlimit_nproc {
        tryc!(
            ef,
            setrlimit(Resource::RLIMIT_NPROC, n, n),
            "setrlimit nproc"
        );
    }
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let soft = plan.rlimit_nofile.min(hard);
        tryc!(
            ef,
            setrlimit(Resource::RLIMIT_NOFILE, soft, hard),
            "setrlimit nofile"
        );
    }
    if let Err(e) = nix::unistd::chdir(a.cwd) {
        fail(
            ef,
            exit::SANDBOX_FAILED,
            &format!(
                "working directory {} is not usable inside the sandbox: {e}",
                a.cwd.display()
            ),
        );
    }
    crate::phase("cmd: forked, tty/rlimit/chdir");
    if a.drop_privileges {
        tryc!(ef, drop_privileges(plan, !a.parked), "drop privileges");
    }
    crate::phase("cmd: dropped privileges");
    let mut writable: Vec<&Path> = plan.writable_paths.iter().map(PathBuf::as_path).collect();
    match a.landlock.take() {
        Some((prepared, n)) => {
            let more = writable.get(n..).unwrap_or_default();
            tryc!(ef, landlock::restrict_prepared(prepared, more), "Landlock");
        }
        None => {
            writable.push(Path::new("/dev"));
            tryc!(ef, landlock::restrict(&writable), "Landlock");
        }
    }
    crate::phase("cmd: landlock");
    if plan.no_huge_pages {
        // SAFETY: prctl(2) with integer arguments. Best effort: a kernel without it (< 3.15)
        // only keeps the huge pages.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
    let exe = resolve(a.envp, &a.argv[0]);
    let mut ef = ef;
    let first_closed = match &plan.ram_fd {
        Some(ram) => {
            let mem = tryc!(
                ef,
                ram_file(ram),
                format!("the guest's memory from {}", ram.from.display())
            );
            if ef == RAM_FD {
                // SAFETY: F_DUPFD_CLOEXEC on our open error pipe; the copy is above 3.
                ef = unsafe { libc::fcntl(ef, libc::F_DUPFD_CLOEXEC, RAM_FD + 1) };
            }
            // dup2 clears CLOEXEC: descriptor 3 is QEMU's past the exec.
            // SAFETY: dup2(2) of our open memory file onto descriptor 3 (not the error pipe).
            if unsafe { libc::dup2(mem.as_raw_fd(), RAM_FD) } != RAM_FD {
                let e = std::io::Error::last_os_error();
                fail(
                    ef,
                    exit::SANDBOX_FAILED,
                    &format!("descriptor 3 for the guest's memory: {e}"),
                );
            }
            RAM_FD + 1
        }
        None => 3,
    };
    // Only 0, 1, 2 (3 with a memory file) and the CLOEXEC error pipe survive until exec;
    // nothing else survives past it.
    sys::close_fds_except(first_closed, &[ef]);
    if !a.parked {
        sys::default_all_signals();
    }
    let _ = SigSet::all().thread_unblock();
    crate::phase("cmd: before exec");
    let e = match &exe {
        Some(p) => sys::execve(p, a.argv, a.envp),
        None => std::io::Error::from_raw_os_error(libc::ENOENT),
    };
    let name = a.argv[0].to_string_lossy();
    match e.raw_os_error() {
        Some(libc::ENOENT) => fail(
            ef,
            exit::NOT_FOUND_CMD,
            &format!("command not found: {name}"),
        ),
        Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EISDIR) => fail(
            ef,
            exit::NOT_EXECUTABLE,
            &format!("cannot execute {name}: {e}"),
        ),
        _ => fail(
            ef,
            exit::NOT_EXECUTABLE,
            &format!("cannot execute {name}: {e}"),
        ),
    }
}

/// PATH lookup using the sandbox's PATH (not the host's).
fn resolve(envp: &[CString], argv0: &CString) -> Option<CString> {
    let bytes = argv0.as_bytes();
    if bytes.contains(&b'/') {
        return Some(argv0.clone());
    }
    let path = envp
        .iter()
        .find_map(|e| e.to_str().ok()?.strip_prefix("PATH="))
        .unwrap_or("/usr/bin:/bin");
    let mut found_noexec = None;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let cand = Path::new(dir).join(std::ffi::OsStr::from_bytes(bytes));
        let Ok(c) = CString::new(cand.as_os_str().as_bytes()) else {
            continue;
        };
        if nix::unistd::access(cand.as_path(), nix::unistd::AccessFlags::X_OK).is_ok()
            && !cand.is_dir()
        {
            return Some(c);
        }
        if cand.exists() && found_noexec.is_none() {
            found_noexec = Some(c);
        }
    }
    found_noexec
}

/// PID 1's life after the command started: reap everything, forward signals, exit with the
/// command's status (the kernel then kills whatever is left in the namespace).
fn init(cmd: Pid, summary: Option<SummaryDirs>, result: OwnedFd) -> ! {
    let mut keep = vec![result.as_raw_fd()];
    if let Some(s) = &summary {
        keep.extend([s.upper.as_raw_fd(), s.lower.as_raw_fd()]);
    }
    sys::close_fds_except(3, &keep);
    let all = SigSet::all();
    loop {
        let sig = match all.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig == Signal::SIGCHLD {
            loop {
                use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) if pid == cmd => {
                        finish(code, summary.as_ref(), &result)
                    }
                    Ok(WaitStatus::Signaled(pid, s, _)) if pid == cmd => {
                        finish(exit::SIGNAL_BASE + s as i32, summary.as_ref(), &result)
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
        } else {
            // Forward to the command's process group (it is a session leader), like a terminal would.
            if nix::sys::signal::killpg(cmd, sig).is_err() {
                let _ = nix::sys::signal::kill(cmd, sig);
            }
        }
    }
}

/// The command is done: stop everything else, report the workspace changes, exit with its code.
fn finish(code: i32, dirs: Option<&SummaryDirs>, result: &OwnedFd) -> ! {
    crate::phase("init: cmd exited");
    if let Some(d) = dirs {
        // Nothing may change the layers while we read them.
        let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGKILL);
        while nix::sys::wait::waitpid(None, None).is_ok() {}
        let changes = summary::diff(&d.upper, &d.lower);
        if let Ok(json) = serde_json::to_vec(&changes) {
            sys::write_all_raw(result.as_raw_fd(), &json);
        }
    }
    sys::exit_now(code)
}

/// Open mode: the cloud metadata ranges are prohibited routes (EACCES), whatever pasta offers.
fn metadata_floor() -> Vec<sys::Route> {
    airlock_model::plan::METADATA_FLOOR
        .iter()
        .filter_map(|(a, prefix)| {
            a.parse().ok().map(|dst| sys::Route {
                dst,
                prefix: *prefix,
                kind: sys::RouteKind::Prohibit,
            })
        })
        .collect()
}

/// PID 1 of a persistent sandbox: reap whatever exec'd processes leave behind; on SIGTERM (a
/// stop) pass it to every process and exit once they are gone. The supervisor enforces the
/// grace period with SIGKILL.
fn init_persistent() -> ! {
    sys::close_fds_from(3);
    let all = SigSet::all();
    let mut stopping = false;
    loop {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        let sig = if stopping {
            // Poll while stopping: the processes we wait for may not send us SIGCHLD.
            sys::sigtimedwait(&all, std::time::Duration::from_millis(20)).unwrap_or(Signal::SIGCHLD)
        } else {
            let Ok(sig) = all.wait() else { continue };
            sig
        };
        match sig {
            Signal::SIGCHLD => {}
            Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP => {
                stopping = true;
                let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGTERM);
            }
            _ => {}
        }
        // Reap; when stopping and nothing is left, we are done.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue,
                Err(nix::Error::ECHILD) => {
                    // Exec'd processes are not our children until orphaned: wait for them too.
                    if stopping && !others_alive() {
                        sys::exit_now(0);
                    }
                    if stopping {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGTERM);
                    }
                    break;
                }
                Err(_) => break,
            }
        }
    }
}

/// Whether any process other than PID 1 is left in this pid namespace.
fn others_alive() -> bool {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten().any(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|p| p != 1)
            })
        })
        .unwrap_or(false)
}

/// The CA bundle on the sandbox's /run tmpfs: root's (inside), readable by everyone.
pub(super) fn write_ca_bundle(bundle: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = Path::new(airlock_model::plan::CA_BUNDLE);
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().mode(0o555).create(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)?;
    std::io::Write::write_all(&mut f, bundle)
}

/// /run/secrets/NAME files on the sandbox's /run tmpfs, readable by the sandbox user only (a
/// start's PID 1, and a warm claim's helper in the member: `exec::deliver_secrets`). Refuses
/// a /run/secrets that is there already.
pub(super) fn write_secrets(
    plan: &LaunchPlan,
    secrets: &[(String, String)],
) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if secrets.is_empty() {
        return Ok(());
    }
    let (uid, gid) = (Uid::from_raw(plan.user.0), Gid::from_raw(plan.user.1));
    let dir = Path::new("/run/secrets");
    std::fs::DirBuilder::new().mode(0o500).create(dir)?;
    for (name, value) in secrets {
        let p = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)?;
        std::io::Write::write_all(&mut f, value.as_bytes())?;
        nix::unistd::fchown(&f, Some(uid), Some(gid))?;
    }
    nix::unistd::chown(dir, Some(uid), Some(gid))?;
    Ok(())
}
