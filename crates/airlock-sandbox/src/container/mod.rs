//! The container backend: Linux namespaces, seccomp, Landlock and cgroups, rootful or
//! rootless. `run` is the host side: it prepares, clones the child (which becomes the sandbox's
//! PID 1, see `child`), relays signals and the terminal, enforces the timeout, and cleans up.

pub mod attach;
mod child;
mod egress;
mod ending;
mod error;
pub mod exec;
mod forked;
pub mod hotplug;
pub mod landlock;
pub mod netns;
pub mod rootfs;
pub mod rundir;
pub mod seccomp;
pub mod stub;
pub use airlock_guest::summary;
pub(crate) mod tty;

use crate::cgroup::{Cgroup, Layout};
pub use crate::command::{Ending, Outcome};
use crate::sys;
use airlock_model::exit;
use airlock_model::plan::{
    HostFacts, LaunchPlan, MountStep, RootEntry, UpperStore, ETC_ALLOWLIST, ROOT_CANDIDATES,
};
use ending::{conclude, Concluded};
pub(crate) use error::io_err;
pub use error::{RunError, LINK_REFUSED};
pub use exec::{proc_starttime, PID1_FILE};
use rundir::RunDir;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use summary::Changes;

/// Gather the facts the planner needs about this host (a few lstat calls).
pub fn host_facts(project_dir: &Path, layout: &Layout) -> HostFacts {
    let root_entries = ROOT_CANDIDATES
        .iter()
        .filter_map(|name| {
            let p = Path::new("/").join(name);
            let m = fs::symlink_metadata(&p).ok()?;
            if m.file_type().is_symlink() {
                Some((
                    name.to_string(),
                    RootEntry::Symlink(fs::read_link(&p).ok()?),
                ))
            } else if m.is_dir() {
                Some((name.to_string(), RootEntry::Dir))
            } else {
                None
            }
        })
        .collect();
    let etc_entries = ETC_ALLOWLIST
        .iter()
        .filter(|e| Path::new("/etc").join(e).exists())
        .map(|s| s.to_string())
        .collect();
    let mut profile_d: Vec<(String, RootEntry)> = fs::read_dir("/etc/profile.d")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let m = fs::symlink_metadata(e.path()).ok()?;
            if m.file_type().is_symlink() {
                Some((name, RootEntry::Symlink(fs::read_link(e.path()).ok()?)))
            } else if m.is_file() || m.is_dir() {
                Some((name, RootEntry::Dir))
            } else {
                None
            }
        })
        .collect();
    profile_d.sort_by(|a, b| a.0.cmp(&b.0));
    let owner = fs::metadata(project_dir)
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((0, 0));
    HostFacts {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        root_entries,
        etc_entries,
        profile_d,
        project_owner: owner,
        limits: layout.support(),
        tmpfs_xattr: crate::kernel::at_least(6, 6),
        pasta: pasta_path().is_some(),
        offer: Default::default(),
        vm: None,
        image: None,
    }
}

/// pasta (from passt): the user-mode network stack behind open mode.
pub fn pasta_path() -> Option<PathBuf> {
    [
        "/usr/bin/pasta",
        "/usr/sbin/pasta",
        "/usr/local/bin/pasta",
        "/bin/pasta",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Open mode: attach pasta to the sandbox's network namespace (it copies the host's addresses
/// and routes, forwards DNS sent to OPEN_DNS to the host's resolver, and does not map the
/// gateway to the host's loopback). Returns pasta's pid once the namespace is configured.
fn start_pasta(pid: i32, dir: &Path) -> Result<i32, RunError> {
    let exe = pasta_path().ok_or_else(|| RunError::Setup("pasta is not installed".into()))?;
    let pidfile = dir.join(format!(".pasta-{pid}.pid"));
    let mut cmd = std::process::Command::new(exe);
    // -T/-U none: pasta would otherwise offer the host's loopback listeners on the sandbox's loopback.
    cmd.args([
        "--config-net",
        "--no-map-gw",
        "-q",
        "-t",
        "none",
        "-u",
        "none",
        "-T",
        "none",
        "-U",
        "none",
        "--dns-forward",
        airlock_model::plan::OPEN_DNS,
    ])
    .arg("--netns")
    .arg(format!("/proc/{pid}/ns/net"))
    .arg("--userns")
    .arg(format!("/proc/{pid}/ns/user"))
    .arg("-P")
    .arg(&pidfile)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null());
    if nix::unistd::geteuid().is_root() {
        // pasta drops root by default; the sandbox's user namespace belongs to root.
        cmd.args(["--runas", "0"]);
    }
    let out = cmd.output().map_err(io_err("start pasta"))?;
    if !out.status.success() {
        let err: String = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.contains("syslog"))
            .collect::<Vec<_>>()
            .join("; ");
        let tun = nix::unistd::access(
            "/dev/net/tun",
            nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
        )
        .is_err();
        let hint = if tun {
            " (/dev/net/tun is not readable and writable by this user: `chmod 0666 /dev/net/tun`, or use --net filtered)"
        } else {
            ""
        };
        return Err(RunError::Setup(format!(
            "open network: pasta failed: {err}{hint}"
        )));
    }
    let pasta = fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let _ = fs::remove_file(&pidfile);
    pasta.ok_or_else(|| RunError::Setup("pasta did not report its pid".into()))
}

/// A helper process (pasta) killed when the run ends.
struct KillOnDrop(nix::unistd::Pid);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGTERM);
    }
}

fn egress_ctx(
    name: &str,
    plan: &airlock_model::plan::EgressPlan,
    opts: &RunOptions<'_>,
) -> Result<airlock_egress::proxy::Ctx, RunError> {
    let mut policy = airlock_egress::policy::EgressPolicy::new(&plan.domains, &plan.ports)
        .map_err(|e| RunError::Setup(format!("network policy: {e}")))?;
    // A named sandbox's denials say `airlock allow NAME …`: a persistent container's, and the
    // QEMU of a named microVM (a run given the sandbox's id; the guest holds the state).
    if opts.persist.is_some() || opts.instance_id.is_some() {
        policy = policy.of_sandbox(name);
    }
    let timeout = Duration::from_secs(3);
    let resolver = match std::env::var("AIRLOCK_DNS_UPSTREAM")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(list) => {
            let ups: Result<Vec<std::net::SocketAddr>, _> =
                list.split(',').map(|a| a.trim().parse()).collect();
            let ups =
                ups.map_err(|e| RunError::Setup(format!("AIRLOCK_DNS_UPSTREAM={list:?}: {e}")))?;
            airlock_egress::resolve::UdpResolver::new(ups, timeout)
        }
        None => airlock_egress::resolve::UdpResolver::from_resolv_conf()
            .map_err(io_err("read the host's DNS configuration"))?,
    };
    let journal = net_journal(opts.net_journal, opts.on_egress.clone())?;
    let ctx = airlock_egress::proxy::Ctx::new(policy, Arc::new(resolver), journal);
    if let Some(i) = &opts.intercept {
        let _ = ctx.set_intercept(i.clone());
    }
    Ok(ctx)
}

/// A sandbox's egress journal: appended to `path` (`--net-log`: a regular file, created if
/// missing, rotated) when given; `also` called with every event; each distinct denial said on
/// stderr ([`airlock_egress::journal::denial_sayer`]). A cold start's, and a warm claim's for
/// the events its member's supervisor sends it.
pub fn net_journal(
    path: Option<&Path>,
    also: Option<EgressCallback>,
) -> Result<airlock_egress::journal::Journal, RunError> {
    use airlock_egress::journal::{denial_sayer, Journal};
    let journal = match path {
        Some(p) => airlock_model::userfile::open_append(p)
            // Checked as a user-named path first (a regular file, never a FIFO or device).
            .and_then(|_| Journal::to_file(p))
            .map_err(|source| RunError::Journal {
                path: p.to_path_buf(),
                source,
            })?,
        None => Journal::discard(),
    };
    let say = denial_sayer();
    Ok(journal.with_callback(move |ev| {
        if let Some(f) = &also {
            f(ev);
        }
        say(ev);
    }))
}

/// How long a sandbox's end waits for its egress threads' last journal lines.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// The host's CA bundles, in the order distributions keep them.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The host's CA bundle the sandbox's combined bundle starts with (`airlock doctor`).
pub fn system_ca_bundle() -> Option<&'static str> {
    SYSTEM_BUNDLES
        .iter()
        .copied()
        .find(|p| Path::new(p).is_file())
}

/// The system's roots (the first bundle found on the host) followed by the sandbox's CA.
pub(crate) fn ca_bundle(ca_pem: &str) -> Vec<u8> {
    let mut out = SYSTEM_BUNDLES
        .iter()
        .find_map(|p| fs::read(p).ok())
        .unwrap_or_default();
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(b"# airlock: this sandbox's secret injection CA\n");
    out.extend_from_slice(ca_pem.as_bytes());
    out
}

/// Options of one run that are about the host side, not the sandbox's policy.
pub struct RunOptions<'a> {
    pub state_dir: &'a Path,
    pub layout: &'a Layout,
    pub timeout: Option<Duration>,
    pub tty: bool,
    pub forward_stdin: bool,
    pub facts: &'a HostFacts,
    /// Append the filtered-egress audit journal (JSONL) here.
    pub net_journal: Option<&'a Path>,
    /// Secrets (name, value): given to the command as environment variables and as 0400 files
    /// in /run/secrets. Held in memory only; never part of the plan.
    pub secrets: &'a [(String, String)],
    /// Secrets bound to hosts (their placeholders are what `secrets` holds for them): the
    /// egress proxy ends TLS to those hosts with this CA, which the sandbox is made to trust.
    pub intercept: Option<Arc<airlock_egress::intercept::Interceptor>>,
    /// A persistent sandbox's folder: its disk layers live (and stay) there, and the host pid
    /// of PID 1 is published there for exec while it runs.
    pub persist: Option<&'a Path>,
    /// A persistent sandbox's unique id (its cgroup is `NAME.ID`); runs make up their own,
    /// except the QEMU of a named microVM sandbox: a run given the sandbox's id, whose cgroup
    /// is then `NAME.ID` too (where `airlock status` reads the VM's usage).
    pub instance_id: Option<&'a str>,
    /// Also called for every filtered-egress decision (agent mode turns denials into `blocked`
    /// events).
    pub on_egress: Option<EgressCallback>,
    /// Called once a persistent sandbox is published for exec (agent mode starts its runner);
    /// for an ephemeral run, once its PID 1 is released. Threads of the caller's start here:
    /// before the clone the process must stay single-threaded (the child would inherit locks).
    pub on_ready: Option<&'a (dyn Fn() + Sync)>,
    /// Given the filtered-egress context once it serves (before `on_ready`): a named
    /// sandbox's supervisor keeps it to change the policy while the sandbox runs
    /// (`airlock allow`/`deny`). Must not start threads (it may run before `on_ready`).
    pub on_egress_ctx: Option<&'a (dyn Fn(Arc<airlock_egress::proxy::Ctx>) + Sync)>,
    /// Asked about each signal relayed to the sandbox: hold it back this long (a microVM
    /// asks its guest to power off first). None: every signal goes at once.
    pub defer_signal: Option<&'a (dyn Fn(nix::sys::signal::Signal) -> Option<Duration> + Sync)>,
    /// A warm-pool member (with `persist`): its cgroup is made with no limits and holds only
    /// an exec stub (`stub.rs`) that forks the claim's command, PID 1 stays outside it.
    pub exec_stub: bool,
    /// Given the sandbox's PID 1 (a host pid) once it is released, before `on_ready`: a
    /// microVM run ends QEMU's sandbox as soon as its guest has reported the command's exit.
    pub on_child: Option<&'a (dyn Fn(nix::unistd::Pid) + Sync)>,
}

/// A listener of egress decisions.
pub type EgressCallback = Arc<dyn Fn(&airlock_egress::journal::Event) + Send + Sync>;

fn cstrings<'a>(items: impl Iterator<Item = String> + 'a) -> Result<Vec<CString>, RunError> {
    items
        .map(|s| CString::new(s.clone()).map_err(|_| RunError::Nul(s)))
        .collect()
}

fn write_map(pid: i32, file: &str, maps: &[airlock_model::plan::IdMap]) -> io::Result<()> {
    let text: String = maps
        .iter()
        .map(|m| format!("{} {} {}\n", m.inside, m.outside, m.count))
        .collect();
    fs::write(format!("/proc/{pid}/{file}"), text)
}

/// Run the plan to completion. Everything created is removed before returning.
pub fn run(plan: &LaunchPlan, opts: &RunOptions<'_>) -> Result<Outcome, RunError> {
    // A run directory marks, through its flock, the run's cgroups as live for gc, and holds a
    // disk-backed overlay upper layer on old kernels. Runs that need neither skip it.
    let disk_upper = matches!(plan.overlay(), Some((_, UpperStore::Disk)));
    if let Some(dir) = opts.persist {
        let id = opts.instance_id.ok_or_else(|| {
            RunError::Setup("a persistent sandbox needs its id (the folder's `id` file)".into())
        })?;
        let leaf = crate::cgroup::leaf_name(&plan.name, id);
        // A cgroup of this very id can only be a leftover of a supervisor of ours that was
        // killed (this one holds the folder's lock): reclaim it, then start afresh.
        opts.layout.reclaim(&leaf);
        let cg = if opts.exec_stub {
            // Where the slot is, for the claim's limits: the claimer's own cgroup may be
            // elsewhere, and so would its idea of the parent directories.
            stub::publish_layout(dir, opts.layout)
                .map_err(io_err("publish the member's cgroup layout"))?;
            Cgroup::create_slot(opts.layout, &leaf)?
        } else {
            Cgroup::create(opts.layout, &leaf, &plan.limits)?
        };
        let layers = if disk_upper { Some(dir) } else { None };
        let result = run_in(plan, opts, layers, cg.as_ref());
        let _ = fs::remove_file(dir.join(PID1_FILE));
        let _ = fs::remove_file(dir.join(exec::CONTROL_SOCKET));
        if let Some(cg) = cg {
            cg.destroy();
        }
        return result;
    }
    let rd = if disk_upper || plan.limits.any() {
        Some(
            RunDir::create(opts.state_dir, &plan.name).map_err(|source| RunError::RunDir {
                path: opts.state_dir.join("runs").join(&plan.name),
                source,
            })?,
        )
    } else {
        None
    };
    let cg = match run_cgroup(rd.as_ref(), opts.layout, plan, opts.instance_id) {
        Ok(cg) => cg,
        Err(e) => {
            if let Some(rd) = rd {
                rd.remove();
            }
            return Err(e);
        }
    };
    let result = run_in(
        plan,
        opts,
        rd.as_ref().filter(|_| disk_upper).map(|r| r.path.as_path()),
        cg.as_ref(),
    );
    crate::phase("run finished");
    let oom = cg.as_ref().is_some_and(|c| c.oom_killed());
    if let Some(cg) = cg {
        cg.destroy();
    }
    if let Some(rd) = rd {
        rd.remove();
    }
    result.map(|mut o| {
        if oom && o.ending == Ending::Exited(exit::SIGNAL_BASE + libc::SIGKILL) {
            o.ending = Ending::OutOfMemory;
        }
        o
    })
}

/// An ephemeral run's cgroup, `NAME.ID` with a fresh id (or the one given), named in its run
/// directory first so that gc finds it (and only it) if this process dies.
fn run_cgroup(
    rd: Option<&RunDir>,
    layout: &Layout,
    plan: &LaunchPlan,
    given: Option<&str>,
) -> Result<Option<Cgroup>, RunError> {
    let Some(rd) = rd.filter(|_| plan.limits.any()) else {
        return Ok(None);
    };
    let id = match given {
        Some(id) => id.to_string(),
        None => rundir::random_id().map_err(io_err("generate the run's id"))?,
    };
    let leaf = crate::cgroup::leaf_name(&plan.name, &id);
    if given.is_some() {
        // A cgroup of a given id can only be a leftover of a killed supervisor of the same
        // sandbox (its caller holds the sandbox's lock).
        layout.reclaim(&leaf);
    }
    fs::write(rd.path.join(rundir::CGROUP_FILE), &leaf).map_err(|source| RunError::RunDir {
        path: rd.path.clone(),
        source,
    })?;
    Ok(Cgroup::create(layout, &leaf, &plan.limits)?)
}

/// Disk-backed overlay layers in the run directory (kernels without tmpfs user xattrs) or a
/// persistent sandbox's folder (kept across stop/start).
pub(crate) fn disk_layers(plan: &LaunchPlan, dir: &Path) -> Result<(PathBuf, PathBuf), RunError> {
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    for d in [&upper, &work] {
        match fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create the overlay layer directories")(e)),
        }
    }
    if !plan.rootless {
        // The child mounts as the sandbox's root, an unprivileged host uid; the upper layer
        // belongs to the sandbox user.
        let base = plan.uid_map[0].outside;
        let (u, g) = (base + plan.user.0, plan.gid_map[0].outside + plan.user.1);
        let own = |p: &Path, u: u32, g: u32| {
            nix::unistd::chown(
                p,
                Some(nix::unistd::Uid::from_raw(u)),
                Some(nix::unistd::Gid::from_raw(g)),
            )
        };
        own(dir, base, base).map_err(|e| io_err("chown the run directory")(e.into()))?;
        own(&upper, u, g).map_err(|e| io_err("chown the overlay upper directory")(e.into()))?;
        own(&work, base, base).map_err(|e| io_err("chown the overlay work directory")(e.into()))?;
    }
    Ok((upper, work))
}

fn run_in(
    plan: &LaunchPlan,
    opts: &RunOptions<'_>,
    disk_dir: Option<&Path>,
    cg: Option<&Cgroup>,
) -> Result<Outcome, RunError> {
    let root_path =
        rundir::shared_mount_point(opts.state_dir).map_err(|source| RunError::RunDir {
            path: opts.state_dir.into(),
            source,
        })?;
    let overlay = disk_dir.map(|d| disk_layers(plan, d)).transpose()?;

    // Root-run sandboxes: the privileged parent opens every host path (it can traverse them all)
    // and applies the idmapping; the child only attaches the results.
    let prepared = if plan.rootless {
        None
    } else {
        let needs_idmap = plan.mounts.iter().any(|m| {
            matches!(
                m,
                MountStep::BindRw { idmap: true, .. } | MountStep::Overlay { idmap: true, .. }
            )
        });
        let userns = if needs_idmap {
            let host_user = plan.uid_map[0].outside + plan.user.0;
            let host_group = plan.gid_map[0].outside + plan.user.1;
            Some(
                crate::userns::idmap_userns(opts.facts.project_owner, (host_user, host_group))
                    .map_err(io_err("create the idmapping user namespace"))?,
            )
        } else {
            None
        };
        Some(rootfs::prepare(&crate::os::Real, plan, userns.as_ref())?)
    };

    crate::phase("prepared");
    let filters = seccomp::programs()?;
    let argv = cstrings(plan.argv.iter().cloned())?;
    // Injected secrets: the sandbox trusts its interception CA through a bundle of the
    // system's roots and it (the plan's environment names it: plan::CA_BUNDLE_VARS).
    let ca_bundle = opts.intercept.as_ref().map(|i| ca_bundle(i.ca_pem()));
    let env = plan
        .env
        .iter()
        .filter(|(k, _)| !opts.secrets.iter().any(|(n, _)| n == k));
    let envp = cstrings(
        env.chain(opts.secrets.iter())
            .map(|(k, v)| format!("{k}={v}")),
    )?;
    let pipe =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err("pipe")(e.into()));
    let (sync_rd, sync_wr) = pipe()?;
    let (err_rd, err_wr) = pipe()?;
    let (result_rd, result_wr) = pipe()?;
    let tty_pair = if opts.tty {
        let (a, b) =
            sys::socketpair(nix::sys::socket::SockType::Stream).map_err(io_err("socketpair"))?;
        Some((a, b))
    } else {
        None
    };
    // Filtered egress listeners, and a persistent PID 1's "ready" with its cgroup namespace,
    // come back over this pair.
    let net_pair = if plan.egress.is_some() || opts.persist.is_some() {
        Some(sys::socketpair(nix::sys::socket::SockType::SeqPacket).map_err(io_err("socketpair"))?)
    } else {
        None
    };
    // A pool member's exec stub: forked while this process is single-threaded, in the
    // member's cgroup before PID 1 exists.
    let mut stub = match opts.persist.filter(|_| opts.exec_stub) {
        Some(dir) => Some(stub::spawn(dir, plan, cg)?),
        None => None,
    };
    let signals = tty::SignalPipe::install().map_err(io_err("install signal handlers"))?;

    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWNET;
    let mut parent_only: Vec<RawFd> = vec![
        sync_wr.as_raw_fd(),
        err_rd.as_raw_fd(),
        result_rd.as_raw_fd(),
    ];
    parent_only.extend(signals.fds());
    for (host_end, _) in tty_pair.iter().chain(net_pair.iter()) {
        parent_only.push(host_end.as_raw_fd());
    }
    // The cgroup: joined by the child itself where it can be (cgroup v1), else by us below.
    // A pool member's cgroup is its claim's: only the stub and the command go there.
    let cgroup_join = cg.filter(|_| !opts.exec_stub).map(Cgroup::self_join);
    crate::phase("before clone");
    let pid = sys::clone_fork(flags).map_err(RunError::Clone)?;
    if pid == 0 {
        let tty_sock = tty_pair.map(|(_, child_end)| child_end);
        let net_sock = net_pair.map(|(_, child_end)| child_end);
        child::main(child::ChildArgs {
            plan,
            root_path,
            overlay,
            prepared,
            sync_rd: Some(sync_rd),
            err_wr,
            result_wr,
            tty_sock,
            net_sock,
            stdin_null: !opts.forward_stdin,
            seccomp: &filters,
            argv,
            envp,
            secrets: opts.secrets,
            ca_bundle: ca_bundle.as_deref(),
            parent_only,
            cgroup_join,
        });
    }
    drop(sync_rd);
    drop(err_wr);
    drop(result_wr);
    drop(prepared);
    let tty_host = tty_pair.map(|(host_end, child_end)| {
        drop(child_end);
        host_end
    });
    let net_host = net_pair.map(|(host_end, child_end)| {
        drop(child_end);
        host_end
    });
    crate::phase("cloned");
    // A persistent sandbox hands its namespaces to exec through the control socket; they must
    // be opened now, while PID 1 is still dumpable (it is not, once set up).
    let mut ns_fds = match opts.persist {
        Some(_) => {
            Some(exec::open_namespaces(pid).map_err(io_err("open the sandbox's namespaces"))?)
        }
        None => None,
    };
    let child = nix::unistd::Pid::from_raw(pid);
    let setup = (|| -> Result<(), RunError> {
        if plan.rootless {
            fs::write(format!("/proc/{pid}/setgroups"), "deny").map_err(RunError::IdMap)?;
        }
        write_map(pid, "uid_map", &plan.uid_map).map_err(RunError::IdMap)?;
        write_map(pid, "gid_map", &plan.gid_map).map_err(RunError::IdMap)?;
        if let Some(join) = &cgroup_join {
            join.add_rest(pid)?;
        }
        Ok(())
    })();
    // Open mode: the namespace gets its user-mode network stack before anything runs in it.
    let setup = setup.and_then(|()| match plan.net {
        airlock_model::policy::NetMode::Open => {
            start_pasta(pid, root_path.parent().unwrap_or(&root_path)).map(Some)
        }
        _ => Ok(None),
    });
    let setup = setup.and_then(|pasta| {
        nix::unistd::write(&sync_wr, &[1]).map_err(|e| io_err("start the sandbox")(e.into()))?;
        Ok(pasta)
    });
    let pasta = match setup {
        Ok(p) => p.map(|p| KillOnDrop(nix::unistd::Pid::from_raw(p))),
        Err(e) => {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
            return Err(e);
        }
    };
    // Kept open until we return: PID 1 checks it to know that we are alive.
    let _alive = sync_wr;

    crate::phase("released child");
    let mut served = None;
    if let (Some(h), Some(plan_egress)) = (&net_host, &plan.egress) {
        // The child sends its listeners during setup (EOF if it died first).
        match netns::recv(h) {
            Ok(listeners) => {
                let ctx = Arc::new(egress_ctx(&plan.name, plan_egress, opts)?);
                if let Some(f) = opts.on_egress_ctx {
                    f(ctx.clone());
                }
                served = Some(ctx.clone());
                egress::serve(listeners, ctx)
            }
            Err(e) => crate::phase(&format!("no egress listeners: {e}")),
        }
    }
    if let Some(f) = opts.on_child {
        f(child);
    }
    if let (None, Some(f)) = (opts.persist, opts.on_ready) {
        f();
    }
    if let Some(dir) = opts.persist {
        // Publish the sandbox for exec only once PID 1 reports its setup finished: before that
        // its mount namespace may not even be pivoted yet.
        let ready = net_host.as_ref().map(|h| sys::recv_fds(h.as_raw_fd(), 1));
        if let Some(Ok((msg, cgroup_ns))) =
            ready.filter(|r| r.as_ref().is_ok_and(|(m, f)| m == b"R" && f.len() == 1))
        {
            let _ = msg;
            let mut fds = ns_fds.take().unwrap_or_default();
            fds.extend(cgroup_ns);
            if let Some(s) = stub.as_mut() {
                let pid1 = sys::pidfd_open(pid).map_err(io_err("pidfd_open"))?;
                s.give_namespaces(&fds, &pid1)?;
            }
            exec::serve_namespaces(dir, fds)?;
            let start = proc_starttime(pid).unwrap_or(0);
            let tmp = dir.join(".pid1.tmp");
            fs::write(&tmp, format!("{pid} {start}\n"))
                .and_then(|()| fs::rename(&tmp, dir.join(PID1_FILE)))
                .map_err(io_err("publish the sandbox's PID 1"))?;
            if let Some(f) = opts.on_ready {
                f();
            }
        }
    }
    let pidfd = sys::pidfd_open(pid).map_err(io_err("pidfd_open"))?;
    let deadline = opts.timeout.map(|t| Instant::now() + t);
    let (timed_out, report) = tty::supervise(
        &pidfd,
        child,
        &signals,
        tty_host.as_ref(),
        &result_rd,
        deadline,
        opts.defer_signal,
        None,
    )
    .map_err(io_err("supervise the sandbox"))?;
    let status = nix::sys::wait::waitpid(child, None)
        .map_err(|e| io_err("wait for the sandbox")(e.into()))?;

    crate::phase("child exited");
    // A claimed member: its teardown after its claimer's exit (briefly), and out of the way
    // of whatever runs next (the claimer's caller goes on as the claimer exits; nobody waits
    // for this teardown but the daemon that removes the member).
    if let (Some(s), Some(dir)) = (&stub, opts.persist) {
        if s.wait_claimer(dir, std::time::Duration::from_millis(100)) {
            sys::background();
        }
    }
    drop(pasta);
    // Every process of the sandbox is gone, so are its ends of its connections: the threads
    // still deciding one journal it now (a second at most), before the end is reported.
    if let Some(ctx) = served {
        if !ctx.settle(SETTLE) {
            crate::phase("egress threads still busy at the end");
        }
    }
    if timed_out {
        return Ok(Outcome {
            ending: Ending::TimedOut,
            changes: None,
        });
    }
    let code = match conclude(status, err_rd)? {
        Concluded::Ran(code) => code,
        Concluded::NotStarted(code) => {
            return Ok(Outcome {
                ending: Ending::Exited(code),
                changes: None,
            })
        }
    };
    let changes = if plan.summarize_changes {
        serde_json::from_slice(&report).ok()
    } else {
        None
    };
    Ok(Outcome {
        ending: Ending::Exited(code),
        changes,
    })
}
