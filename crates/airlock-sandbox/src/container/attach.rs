//! A warm-pool claim's workspace (docs/design/warm-pool.md): the overlay or bind of the
//! claimer's project, and the protected paths over it, attached at a running member's empty
//! `/workspace` before any of the claim's code runs — the same mount steps a cold run's plan
//! has (`airlock_model::plan::workspace_steps`), executed by the same code (`rootfs`).
//!
//! A forked helper joins the member's user namespace (and becomes its root, for root-run
//! members), makes a private mount namespace of its own there (a copy of the host's, where the
//! project is visible and `/proc/self` is its own), and builds what needs the host there: the
//! bind source cloned (`open_tree`), or the overlay mounted on a scratch tmpfs from the
//! (idmapped) lower layer and a size-bounded upper tmpfs, then cloned as a detached mount.
//! It then joins the member's mount namespace, attaches that at `/workspace` (`move_mount`,
//! the target opened without following symlinks) and runs the pin and protect steps over it.
//! Root-run members: this (privileged) process opens the host paths and applies the
//! idmapping, as a cold start's parent does. The overlay's upper and lower directories come
//! back over a socket for the change summary after the command.
//!
//! A root-run member's exec stub parks that helper before any claim ([`park`]): already in the
//! member's user namespace and a mount namespace of its own, it takes the claim's steps and
//! sources over a socket the stub hands the claimer. Without one (rootless, an older member,
//! or a stub that could not park it) the claimer forks its own.

use super::error::{io_err, RunError};
use super::forked;
use super::rootfs::{self, NewRoot, SummaryDirs};
use super::summary::{self, Changes};
use crate::os::{Os, Real};
use crate::sys;
use airlock_model::plan::{LaunchPlan, MountStep, UpperStore};
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A claimed member's attached workspace.
#[derive(Debug, Default)]
pub struct Attached {
    summary: Option<SummaryDirs>,
    /// The workspace helper, exiting: reaped with this.
    _helper: Option<forked::Forked>,
}

impl Attached {
    /// What the command changed in an overlay workspace (None: not an overlay).
    pub fn changes(&self) -> Option<Changes> {
        self.summary
            .as_ref()
            .map(|d| summary::diff(&d.upper, &d.lower))
    }
}

/// Whether a member can take these workspace steps at claim without a folder for an
/// overlay's disk upper layer (a run's belongs to a cold start's run folder; a named
/// sandbox's is in its own folder: [`attach_workspace`]'s `disk`).
pub fn claimable(steps: &[MountStep]) -> bool {
    !steps.iter().any(|s| {
        matches!(
            s,
            MountStep::Overlay {
                upper: UpperStore::Disk,
                ..
            }
        )
    })
}

/// What a claim attaches in its member, in the cold lowering's order: its workspace's steps,
/// its own binds (`--ro`/`--rw`/`[mounts]`, `plan::bind_steps`), its home files.
#[derive(Debug, Clone, Default)]
pub struct ClaimMounts {
    pub steps: Vec<MountStep>,
    /// Which of `steps` are the claim's own binds: their mountpoints may be made anywhere a
    /// cold start makes them — the member's read-only root is made writable for that moment.
    pub own: std::ops::Range<usize>,
    /// The sources opened without following any symlink, as the cold plan's
    /// (`plan::sealed_sources`: the claim's own binds' and its project directory): one swapped
    /// for a link since the claimer checked it is refused, never bound.
    pub sealed: Vec<PathBuf>,
    /// Whose files a writable step's idmapping gives the sandbox user (root-run): a cold
    /// start's `project_owner`, its project directory's owner.
    pub owner: (u32, u32),
}

/// Attach `mounts` (a claim's workspace, own binds and home files) in the running member in
/// `dir` (plan: `plan`). `disk`: the folder an overlay's disk upper layer lives in (`upper`,
/// `work`: a named sandbox's own folder, kept across stop/start, as its cold start keeps it
/// there). `asked`: the member's namespaces, asked for ahead (`exec::ask_namespaces`). Blocks
/// until done; nothing is attached when it fails.
pub fn attach_workspace(
    dir: &Path,
    plan: &LaunchPlan,
    mounts: &ClaimMounts,
    disk: Option<&Path>,
    asked: Option<super::exec::AskedNamespaces>,
    parked: Option<OwnedFd>,
) -> Result<Attached, RunError> {
    let steps = &mounts.steps[..];
    let own = &mounts.own;
    if own.end > steps.len() {
        return Err(RunError::Setup("internal: own binds out of range".into()));
    }
    if disk.is_none() && !claimable(steps) {
        return Err(RunError::Setup(
            "an overlay with a disk upper layer cannot be attached at claim".into(),
        ));
    }
    // Root-run: the helper the member's stub parked for this claim ([`park`]) does the
    // helper's part, already in the member's user namespace and a mount namespace of its own.
    if let Some(sock) = parked.filter(|_| !plan.rootless && disk.is_none()) {
        return attach_parked(plan, mounts, sock);
    }
    // The disk layers, made (and owned) as a cold start makes them; opened by the helper in
    // its own mount namespace (overlayfs clones its layers' mounts: they must be that
    // namespace's), before it becomes the sandbox's root (which could not traverse the state
    // directory).
    let disk_dirs = match disk.filter(|_| !claimable(steps)) {
        Some(d) => Some(super::disk_layers(plan, d)?),
        None => None,
    };
    let ns = super::exec::Namespaces::taken(asked, dir, &plan.name)?;
    let (userns, mntns) = (
        ns.get(CloneFlags::CLONE_NEWUSER)?,
        ns.get(CloneFlags::CLONE_NEWNS)?,
    );
    let ws_plan = helper_plan(plan, mounts);
    // Sequenced packets: the helper's end without an answer reads as an empty one.
    let (back, back_child) =
        sys::socketpair(nix::sys::socket::SockType::SeqPacket).map_err(io_err("socketpair"))?;
    // Root-run: this process opens the host paths and idmaps them, as a cold start's parent —
    // while the helper, forked first, joins the member's user namespace and makes its mount
    // namespace (the two took ≈ 0.3 ms each, one after the other); they reach it over `feed`.
    let (feed, feed_child) = if plan.rootless {
        (None, None)
    } else {
        let (f, c) =
            sys::socketpair(nix::sys::socket::SockType::SeqPacket).map_err(io_err("socketpair"))?;
        (Some(f), Some(c))
    };
    let helper = forked::spawn("workspace", "attach the workspace", |h| {
        // Not the claimer's end of `feed`: its close (a failure) must end the helper's read.
        if let Some(f) = &feed {
            // SAFETY: closing this forked child's copy of a descriptor it never uses.
            unsafe { libc::close(f.as_raw_fd()) };
        }
        let built = match helper(
            &ws_plan,
            own,
            userns,
            mntns,
            feed_child.as_ref(),
            disk_dirs.as_ref(),
        ) {
            Ok(f) => f,
            Err(e) => h.fail(e),
        };
        crate::phase("attach: helper attached");
        let raw: Vec<i32> = built.back.iter().map(|f| f.as_raw_fd()).collect();
        if let Err(e) = sys::send_fds(back_child.as_raw_fd(), b"ws", &raw) {
            h.fail(format!("hand back the overlay's layers: {e}"));
        }
    })?;
    drop(back_child);
    drop(feed_child);
    drop(ns);
    if let Some(feed) = feed {
        let prepared = prepare_sources(&ws_plan, mounts.owner);
        crate::phase("attach: sources prepared");
        // Which steps have a source (one byte each), and those sources, in order. Nothing
        // sent (a failure): the helper's read ends empty, and it fails without attaching.
        let sent = prepared.and_then(|prepared| {
            let (which, raw) = sources_sent(&prepared);
            sys::send_fds(feed.as_raw_fd(), &which, &raw)
                .map_err(io_err("hand the helper the workspace's sources"))
        });
        if let Err(e) = sent {
            drop(feed);
            let _ = helper.wait();
            return Err(e);
        }
    }
    // Its answer is sent once everything is attached: from then on it only exits, and is
    // reaped when the caller drops what it attached (its exit — a fork's teardown — is not on
    // the claim's path). No answer: it failed, and says why.
    let fds = match sys::recv_fds(back.as_raw_fd(), 2) {
        Ok((data, fds)) if data == b"ws" => fds,
        _ => {
            helper.wait()?;
            return Err(RunError::Setup(
                "the workspace helper answered unexpectedly".into(),
            ));
        }
    };
    crate::phase("attach: helper answered");
    Ok(Attached {
        summary: summary_dirs(fds),
        _helper: Some(helper),
    })
}

/// The member's plan with the claim's steps and sealed sources: what a helper executes.
fn helper_plan(plan: &LaunchPlan, mounts: &ClaimMounts) -> LaunchPlan {
    let mut ws_plan = plan.clone();
    ws_plan.mounts = mounts.steps.clone();
    ws_plan.sealed_sources = mounts.sealed.clone();
    ws_plan
}

/// The sources as a helper receives them ([`sources_received`]): one byte per step (a source
/// or none), and the sources' fds in order.
fn sources_sent(prepared: &rootfs::Prepared) -> (Vec<u8>, Vec<i32>) {
    let which = prepared.iter().map(|p| u8::from(p.is_some())).collect();
    let raw = prepared.iter().flatten().map(|f| f.as_raw_fd()).collect();
    (which, raw)
}

/// A helper's answer's fds: the overlay's upper and lower directories, when it made one.
fn summary_dirs(mut fds: Vec<OwnedFd>) -> Option<SummaryDirs> {
    match (fds.pop(), fds.pop()) {
        (Some(lower), Some(upper)) => Some(SummaryDirs { upper, lower }),
        _ => None,
    }
}

/// Root-run: the claim's sources opened by this (privileged) process, as a cold start's parent
/// opens them, writable ones idmapped from `owner` (the project's) to the sandbox user.
fn prepare_sources(ws_plan: &LaunchPlan, owner: (u32, u32)) -> Result<rootfs::Prepared, RunError> {
    let needs_idmap = ws_plan.mounts.iter().any(|m| {
        matches!(
            m,
            MountStep::BindRw { idmap: true, .. } | MountStep::Overlay { idmap: true, .. }
        )
    });
    let idmap = if needs_idmap {
        let to = (
            ws_plan.uid_map[0].outside + ws_plan.user.0,
            ws_plan.gid_map[0].outside + ws_plan.user.1,
        );
        Some(
            crate::userns::idmap_userns(owner, to)
                .map_err(io_err("create the idmapping user namespace"))?,
        )
    } else {
        None
    };
    rootfs::prepare(&Real, ws_plan, idmap.as_ref()).map_err(|e| RunError::Setup(e.to_string()))
}

/// What a claimer sends the parked helper (with the sources: one byte per step after the
/// JSON says which have one, as the forked helper's `feed`).
#[derive(serde::Serialize, serde::Deserialize)]
struct ParkedJob {
    mounts: Vec<MountStep>,
    own: (usize, usize),
}

/// [`attach_workspace`] through the helper the member's stub parked ([`park`]), reached over
/// `sock`: this process opens and idmaps the sources, as it does for a helper it forks, and
/// sends them with the steps; the helper answers with the overlay's directories, or why it
/// failed. No fork, no namespace joined on the claim's path.
fn attach_parked(
    plan: &LaunchPlan,
    mounts: &ClaimMounts,
    sock: OwnedFd,
) -> Result<Attached, RunError> {
    let ws_plan = helper_plan(plan, mounts);
    let prepared = prepare_sources(&ws_plan, mounts.owner)?;
    crate::phase("attach: sources prepared");
    let job = ParkedJob {
        mounts: mounts.steps.clone(),
        own: (mounts.own.start, mounts.own.end),
    };
    let json = serde_json::to_vec(&job).map_err(|e| RunError::Setup(e.to_string()))?;
    let mut msg = (json.len() as u32).to_le_bytes().to_vec();
    msg.extend_from_slice(&json);
    let (which, raw) = sources_sent(&prepared);
    msg.extend(which);
    sys::send_fds(sock.as_raw_fd(), &msg, &raw)
        .map_err(io_err("hand the member's workspace helper the sources"))?;
    drop(prepared);
    let (data, fds) = sys::recv_fds(sock.as_raw_fd(), 2)
        .map_err(io_err("the member's workspace helper's answer"))?;
    crate::phase("attach: parked helper answered");
    match data.split_first() {
        Some((b'W', _)) => {}
        Some((b'E', why)) => {
            return Err(RunError::Setup(String::from_utf8_lossy(why).into_owned()))
        }
        _ => {
            return Err(RunError::Setup(
                "the member's workspace helper ended without an answer".into(),
            ))
        }
    }
    Ok(Attached {
        summary: summary_dirs(fds),
        _helper: None,
    })
}

/// In a root-run member's exec stub, once it has the member's namespaces (`userns`, `mntns`):
/// fork the helper a claim's workspace needs, parked — it joins the member's user namespace,
/// makes its own mount namespace there and becomes the sandbox's root now, and takes one
/// claim's steps and sources later (over the returned socket, which the stub hands to the
/// claimer). So the claim's path has neither the fork nor the namespace changes. It is
/// outside the member's pid namespace (nothing inside can see or signal it), runs nothing of
/// the claim's but the mount steps, dies with the stub (`PR_SET_PDEATHSIG`), and exits after
/// one answer, or when its socket's other end is closed (a claim without a workspace, or a
/// claimer that died). None: it could not park (the claim forks its own helper).
pub(super) fn park(userns: &OwnedFd, mntns: &OwnedFd, plan: &LaunchPlan) -> Option<OwnedFd> {
    let (mine, theirs) = sys::socketpair(nix::sys::socket::SockType::SeqPacket).ok()?;
    let parent = std::process::id() as i32;
    let pid = sys::clone_fork(0).ok()?;
    if pid == 0 {
        let _ = sys::prctl_simple(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        // Not dumpable, as the parked child: no ptrace and no /proc access but the host's root.
        let _ = sys::prctl_simple(libc::PR_SET_DUMPABLE, 0);
        if nix::unistd::getppid().as_raw() != parent {
            sys::exit_now(1);
        }
        sys::close_fds_except(
            3,
            &[theirs.as_raw_fd(), userns.as_raw_fd(), mntns.as_raw_fd()],
        );
        let ready = enter(userns).and_then(|()| {
            Real.become_root()
                .map_err(|e| format!("become the sandbox's root: {e}"))
        });
        if ready.is_err() || sys::send_fds(theirs.as_raw_fd(), b"r", &[]).is_err() {
            sys::exit_now(1);
        }
        serve_parked(&theirs, mntns, plan)
    }
    drop(theirs);
    // Ready (in its namespaces) before the member is: its answer, or its end.
    match sys::recv_fds(mine.as_raw_fd(), 0) {
        Ok((r, _)) if r == b"r" => Some(mine),
        _ => None,
    }
}

/// The parked helper's one claim: the steps and sources, then the overlay built and everything
/// attached in the member's mount namespace; the answer (`W` and the overlay's directories,
/// or `E` and why not), and its end.
fn serve_parked(sock: &OwnedFd, mntns: &OwnedFd, plan: &LaunchPlan) -> ! {
    let answer = |data: &[u8], fds: &[i32]| {
        let _ = sys::send_fds(sock.as_raw_fd(), data, fds);
        sys::exit_now(0)
    };
    let (msg, fds) = match sys::recv_fds(sock.as_raw_fd(), 253) {
        Ok((m, f)) if !m.is_empty() => (m, f),
        // Closed: no claim needs it.
        _ => sys::exit_now(0),
    };
    let job = (|| -> Result<(ParkedJob, Vec<u8>), String> {
        let len = u32::from_le_bytes(
            msg.get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or("a short message")?,
        ) as usize;
        let json = msg.get(4..4 + len).ok_or("a short message")?;
        let job: ParkedJob = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        Ok((job, msg[4 + len..].to_vec()))
    })();
    let result = job.and_then(|(job, which)| {
        if job.own.1 > job.mounts.len() {
            return Err("internal: own binds out of range".into());
        }
        let prepared = sources_received(&which, fds, job.mounts.len())?;
        let mut ws_plan = plan.clone();
        ws_plan.mounts = job.mounts;
        build_and_attach(&ws_plan, &(job.own.0..job.own.1), mntns, prepared, None)
    });
    match result {
        Ok(built) => {
            let raw: Vec<i32> = built.back.iter().map(|f| f.as_raw_fd()).collect();
            answer(b"W", &raw)
        }
        Err(e) => answer(format!("E{e}").as_bytes(), &[]),
    }
}

/// The forked helper's work (see the module's comment); the overlay's upper and lower
/// directories when there is one.
fn helper(
    plan: &LaunchPlan,
    own: &std::ops::Range<usize>,
    userns: &OwnedFd,
    mntns: &OwnedFd,
    feed: Option<&OwnedFd>,
    disk: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> Result<Built, String> {
    let os = Real;
    enter(userns)?;
    crate::phase("attach: in its user and mount namespaces");
    // Still the host's uid: the state directory is traversable.
    let disk = match disk {
        Some((upper, work)) => {
            let open = |p: &Path| {
                nix::fcntl::open(
                    p,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| format!("open the overlay's disk layer {}: {e}", p.display()))
            };
            Some(rootfs::OverlayDirs {
                upper: open(upper)?,
                work: open(work)?,
            })
        }
        None => None,
    };
    if !plan.rootless {
        os.become_root()
            .map_err(|e| format!("become the sandbox's root: {e}"))?;
    }
    let prepared = match feed {
        // Root-run: the sources the claimer opened (and idmapped) meanwhile.
        Some(feed) => {
            let (which, fds) = sys::recv_fds(feed.as_raw_fd(), plan.mounts.len())
                .map_err(|e| format!("the workspace's sources: {e}"))?;
            sources_received(&which, fds, plan.mounts.len())?
        }
        None => rootfs::prepare(&os, plan, None).map_err(|e| e.to_string())?,
    };
    crate::phase("attach: sources opened");
    build_and_attach(plan, own, mntns, prepared, disk.as_ref())
}

/// The sources a helper received for `steps` steps: one byte per step (a source or none), the
/// sources' fds in order.
fn sources_received(
    which: &[u8],
    fds: Vec<OwnedFd>,
    steps: usize,
) -> Result<rootfs::Prepared, String> {
    if which.len() != steps {
        return Err("the workspace's sources did not come".into());
    }
    let mut fds = fds.into_iter();
    which
        .iter()
        .map(|w| match w {
            0 => Ok(None),
            _ => fds
                .next()
                .map(Some)
                .ok_or_else(|| "a workspace source is missing".to_string()),
        })
        .collect()
}

/// The helper's way into the member: its user namespace joined, and a private mount namespace
/// of its own made there (a copy of the host's).
fn enter(userns: &OwnedFd) -> Result<(), String> {
    nix::sched::setns(userns, CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("join the sandbox's user namespace: {e}"))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("make a mount namespace: {e}"))?;
    Real.make_mounts_private()
        .map_err(|e| format!("make mounts private: {e}"))
}

/// The helper's work once its sources are open (`prepared`, one per step of `plan.mounts`):
/// the overlay built in its own mount namespace, then everything attached in the member's
/// (`mntns`). The overlay's upper and lower directories when there is one.
fn build_and_attach(
    plan: &LaunchPlan,
    own: &std::ops::Range<usize>,
    mntns: &OwnedFd,
    mut prepared: rootfs::Prepared,
    disk: Option<&rootfs::OverlayDirs<OwnedFd>>,
) -> Result<Built, String> {
    let os = Real;
    let mut back = Vec::new();
    for (i, step) in plan.mounts.iter().enumerate() {
        let MountStep::Overlay { upper, .. } = step else {
            continue;
        };
        let lower = prepared
            .get_mut(i)
            .and_then(Option::take)
            .ok_or("internal: the overlay's lower layer was not prepared")?;
        // A scratch root for the overlay's staging, attached in this helper's own namespace.
        let owner = if plan.rootless { plan.user } else { (0, 0) };
        let scratch = os
            .fsmount_tmpfs(
                &[
                    ("mode", "755".into()),
                    ("size", "65536".into()),
                    ("uid", owner.0.to_string()),
                    ("gid", owner.1.to_string()),
                ],
                sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
            )
            .map_err(|e| format!("make a scratch tmpfs: {e}"))?;
        let at = nix::fcntl::open(
            "/tmp",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("open /tmp: {e}"))?;
        os.move_mount(&scratch, &at)
            .map_err(|e| format!("attach the scratch tmpfs: {e}"))?;
        let root = NewRoot { fd: scratch };
        let ws = Path::new("/ws");
        let dirs = rootfs::overlay(&os, &root, ws, lower, upper, plan.user, disk, true)
            .map_err(|e| e.to_string())?;
        let tree = os
            .open_tree_clone_beneath(&root.fd, ws)
            .map_err(|e| format!("clone the overlay: {e}"))?;
        prepared[i] = Some(tree);
        back = vec![dirs.upper, dirs.lower];
        crate::phase("attach: overlay made");
    }
    // Its own mount namespace (the overlay's staging in it) kept until this helper exits: left
    // at the setns, its teardown — every mount of a copy of the host's — would be on the
    // claim's path.
    let own_ns = std::fs::File::open("/proc/self/ns/mnt")
        .map_err(|e| format!("open its own mount namespace: {e}"))?;
    nix::sched::setns(mntns, CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("join the sandbox's mount namespace: {e}"))?;
    crate::phase("attach: in the sandbox's mount namespace");
    let root = NewRoot {
        fd: nix::fcntl::open(
            "/",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("open the sandbox's root: {e}"))?,
    };
    let mut attach_all = || -> Result<(), String> {
        for (i, step) in plan.mounts.iter().enumerate() {
            let fd = prepared.get_mut(i).and_then(Option::take);
            match step {
                MountStep::Overlay { target, .. } => {
                    let tree = fd.ok_or("internal: no overlay to attach")?;
                    let t = rootfs::open_target(&os, &root.fd, target, true)
                        .map_err(|e| format!("inside the sandbox, {}: {e}", target.display()))?;
                    os.move_mount(&tree, &t)
                        .map_err(|e| format!("attach the overlay at {}: {e}", target.display()))?;
                }
                _ => rootfs::step_exec(&os, &root, step, fd).map_err(|e| e.to_string())?,
            }
        }
        Ok(())
    };
    // The claim's own binds may need mountpoints on the read-only root (`/data`, a file in
    // `/etc`), as a cold start makes them on its root before it turns read-only.
    if own.is_empty() {
        attach_all()?;
    } else {
        with_root_writable(attach_all)?;
    }
    Ok(Built {
        back,
        _own_ns: own_ns,
    })
}

/// What a helper built: the overlay's upper and lower directories (for the claimer), and its
/// own mount namespace, held until it exits.
struct Built {
    back: Vec<OwnedFd>,
    _own_ns: std::fs::File,
}

/// Name the running member in `dir` (plan: `plan`) `hostname`: its UTS namespace, and its
/// `/etc/hostname` and `/etc/hosts` rewritten in its mount namespace as a cold start's root
/// filesystem step writes them (its read-only root made writable for that moment, before
/// any of the claim's code runs). Done by a forked helper that joins its user namespace: a
/// named sandbox that adopted a warm member is called by its own name, as a cold one is.
pub fn set_hostname(dir: &Path, plan: &LaunchPlan, hostname: &str) -> Result<(), RunError> {
    let ns = super::exec::Namespaces::of(dir, &plan.name)?;
    let (userns, utsns, mntns) = (
        ns.get(CloneFlags::CLONE_NEWUSER)?,
        ns.get(CloneFlags::CLONE_NEWUTS)?,
        ns.get(CloneFlags::CLONE_NEWNS)?,
    );
    let files = airlock_model::plan::name_files(hostname);
    let ended = forked::run("hostname", "set the hostname", |h| {
        h.join_user(userns.as_fd());
        if !plan.rootless {
            h.become_root();
        }
        if let Err(e) = nix::sched::setns(utsns, CloneFlags::CLONE_NEWUTS) {
            h.fail(format!("join the sandbox's UTS namespace: {e}"));
        }
        if let Err(e) = nix::unistd::sethostname(hostname) {
            h.fail(format!("sethostname: {e}"));
        }
        h.join_mounts(mntns.as_fd());
        if let Err(e) = write_etc(&files) {
            h.fail(e);
        }
    });
    drop(ns);
    ended
}

/// In the sandbox's mount namespace: `files` written (rootfs's own step), the root writable
/// meanwhile if it is read-only.
fn write_etc(files: &[MountStep]) -> Result<(), String> {
    let os = Real;
    with_root_writable(|| {
        let root = nix::fcntl::open(
            "/",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("open the sandbox's root: {e}"))
        .map(|fd| NewRoot { fd })?;
        files
            .iter()
            .try_for_each(|f| rootfs::step_exec(&os, &root, f, None).map_err(|e| e.to_string()))
    })
}

/// `f` done in the sandbox's mount namespace with its root writable meanwhile if it is
/// read-only (before any of the claim's code runs), read-only again afterwards whatever `f`
/// returned.
fn with_root_writable<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    use nix::mount::MsFlags;
    let os = Real;
    let ro = nix::sys::statvfs::statvfs("/")
        .map_err(|e| format!("statvfs /: {e}"))?
        .flags()
        .contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
    let remount = |extra: MsFlags| {
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | extra,
            None::<&str>,
        )
    };
    if ro {
        remount(MsFlags::empty()).map_err(|e| format!("make the root writable: {e}"))?;
    }
    let done = f();
    if ro {
        os.remount_root_readonly()
            .map_err(|e| format!("make the root read-only again: {e}"))?;
    }
    done
}
