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
    /// The parked workspace helper's socket: it exits (its own mount namespace torn down)
    /// once this is dropped, after the claim's command, not while the command starts.
    _parked: Option<OwnedFd>,
    /// The claim's overlay workspace, when the member's parked helper was not primed with it:
    /// for the pool's members to come ([`Attached::prime_wanted`]).
    prime: Option<Prime>,
}

impl Attached {
    /// What the command changed in an overlay workspace (None: not an overlay).
    pub fn changes(&self) -> Option<Changes> {
        self.summary
            .as_ref()
            .map(|d| summary::diff(&d.upper, &d.lower))
    }

    /// The overlay workspace the pool's next members should be primed with ([`Prime`]): this
    /// claim's, when its member's parked helper had another one (or none). None: it had this
    /// one, or the claim cannot be primed for (no overlay, rootless, no parked helper).
    pub fn prime_wanted(&self) -> Option<&Prime> {
        self.prime.as_ref()
    }
}

/// A member's folder's prime ([`Prime`], as JSON): written by the daemon before the member
/// starts (the pool's last claim's workspace), read by its exec stub once it parked the
/// workspace helper.
pub const PRIME_FILE: &str = "prime.json";

/// An overlay workspace a root-run member's parked workspace helper builds before any claim
/// (**priming**): the lower layer opened and idmapped by the exec stub as a claimer opens it,
/// the overlay mounted in the helper's own mount namespace, nothing attached in the member and
/// nothing looked up through it. A claim whose workspace is the same (the same step and owner,
/// and its project directory the same directory now: [`attach_workspace`]) takes it as built;
/// any other claim's workspace is built at claim as before. The pool's last claim says which
/// workspace its next members are primed with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Prime {
    /// The overlay step (a tmpfs upper layer).
    pub step: MountStep,
    /// Whose files its idmapping gives the sandbox user ([`ClaimMounts::owner`]).
    pub owner: (u32, u32),
    /// Its lower layer is opened without following symlinks ([`ClaimMounts::sealed`]).
    pub sealed: bool,
}

impl Prime {
    /// The workspace of `mounts` that a member can be primed with, and its step's index: its
    /// overlay on a tmpfs upper layer (not one of the claim's own binds).
    pub fn of(mounts: &ClaimMounts) -> Option<(usize, Prime)> {
        mounts
            .steps
            .iter()
            .enumerate()
            .find_map(|(i, step)| match step {
                MountStep::Overlay {
                    lower,
                    upper: UpperStore::Tmpfs { .. },
                    ..
                } if !mounts.own.contains(&i) => Some((
                    i,
                    Prime {
                        step: step.clone(),
                        owner: mounts.owner,
                        sealed: mounts.sealed.contains(lower),
                    },
                )),
                _ => None,
            })
    }

    /// Its steps as a claim's: the one overlay (None: not an overlay on a tmpfs upper layer,
    /// which no member is primed with).
    fn mounts(&self) -> Option<ClaimMounts> {
        let MountStep::Overlay {
            lower,
            upper: UpperStore::Tmpfs { .. },
            ..
        } = &self.step
        else {
            return None;
        };
        Some(ClaimMounts {
            steps: vec![self.step.clone()],
            own: 0..0,
            sealed: if self.sealed {
                vec![lower.clone()]
            } else {
                Vec::new()
            },
            owner: self.owner,
        })
    }

    /// Its lower layer: the project directory.
    pub fn lower(&self) -> Option<&Path> {
        match &self.step {
            MountStep::Overlay { lower, .. } => Some(lower),
            _ => None,
        }
    }
}

/// A root-run member's parked workspace helper, as its exec stub hands it to a claimer
/// (`stub::Begun::workspace_helper`): its socket, and the workspace it was primed with.
#[derive(Debug)]
pub struct ParkedHelper {
    sock: OwnedFd,
    primed: Option<Prime>,
    /// The stub handed the helper this claim's job, sent ahead with the request
    /// ([`AheadJob`]): it is not sent again.
    ahead: bool,
}

impl ParkedHelper {
    /// From the stub's answer: the socket, and after the `W` (or `J`: the job sent ahead was
    /// handed over) the prime it sent the helper.
    pub(super) fn new(sock: OwnedFd, primed: &[u8], ahead: bool) -> Self {
        ParkedHelper {
            sock,
            primed: serde_json::from_slice(primed).ok(),
            ahead,
        }
    }
}

/// A claim's job for the member's parked helper sent ahead, right behind the claim's request
/// to the exec stub, which hands it to the helper at once if the helper was primed with this
/// workspace ([`Prime`]) — so the helper takes its overlay while the claim is bound (its
/// policy, its plan read, its limits) instead of after the stub's answer. For a claim whose
/// one mount with a source is the primed overlay (the default `run`: the overlay and its
/// protect steps): its project directory opened as
/// [`send_parked`] opens it for a primed helper, the same job. The helper checks the
/// directory as it does every primed job (the same directory as its lower layer, else `N` and
/// every source is sent after all).
pub struct AheadJob {
    /// The prime it is for, as JSON (the stub compares it with its helper's).
    pub(super) prime: Vec<u8>,
    /// The helper's message ([`send_job`]'s).
    pub(super) msg: Vec<u8>,
    pub(super) project: OwnedFd,
}

impl AheadJob {
    /// The job of a claim whose one mount with a source is an overlay a member can be primed
    /// with; None otherwise, or when its project directory does not open.
    pub fn of(mounts: &ClaimMounts) -> Option<AheadJob> {
        let (i, prime) = Prime::of(mounts)?;
        // No other step has a source (its protect and pin steps have none).
        if (mounts.steps.iter().enumerate()).any(|(j, s)| j != i && rootfs::has_source(s)) {
            return None;
        }
        let which: Vec<u8> = (0..mounts.steps.len()).map(|j| u8::from(j == i)).collect();
        let project = open_lower(&prime)?;
        let msg = job_message(&parked_job(mounts, Some(i)), &which).ok()?;
        Some(AheadJob {
            prime: serde_json::to_vec(&prime).ok()?,
            msg,
            project,
        })
    }
}

/// Whether the JSON primes `a` and `b` (the claim's sent ahead, the stub's helper's) are the
/// same workspace.
pub(super) fn same_prime(a: &[u8], b: &[u8]) -> bool {
    matches!(
        (serde_json::from_slice::<Prime>(a), serde_json::from_slice::<Prime>(b)),
        (Ok(x), Ok(y)) if x == y
    )
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
/// there). `asked`: the member's namespaces, asked for ahead (`exec::ask_namespaces`). Through a
/// parked helper (`parked`) the job is sent here and answered at [`PendingAttach::finish`] —
/// the helper attaches while the caller binds the rest of its claim; otherwise it is attached
/// here. Nothing is attached when it fails.
pub fn attach_workspace(
    dir: &Path,
    plan: &LaunchPlan,
    mounts: &ClaimMounts,
    disk: Option<&Path>,
    asked: Option<super::exec::AskedNamespaces>,
    parked: Option<ParkedHelper>,
) -> Result<PendingAttach, RunError> {
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
    if let Some(helper) = parked.filter(|_| !plan.rootless && disk.is_none()) {
        return send_parked(plan, mounts, helper);
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
    Ok(PendingAttach(Pending::Done(Attached {
        summary: summary_dirs(fds),
        _helper: Some(helper),
        _parked: None,
        prime: None,
    })))
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

/// What a claimer sends the parked helper, or the exec stub when it primes it: the JSON,
/// then one byte per step saying which have a source, with the sources (as the forked
/// helper's `feed`).
#[derive(serde::Serialize, serde::Deserialize)]
struct ParkedJob {
    mounts: Vec<MountStep>,
    own: (usize, usize),
    /// The exec stub's, before any claim ([`prime`]): `mounts` is one overlay, built and kept
    /// for a claim; no answer.
    #[serde(default)]
    prime: bool,
    /// The step of a workspace the helper was primed with: its source is the project
    /// directory itself (opened, not mounted). The primed overlay is taken for it if it is the
    /// same step and owner and that directory is its lower layer's; otherwise the helper
    /// answers `N`, and the claimer sends the job again with every source.
    #[serde(default)]
    primed: Option<usize>,
    /// [`ClaimMounts::owner`] (the prime's and a primed claim's).
    #[serde(default)]
    owner: Option<(u32, u32)>,
}

/// Send the parked helper `job` and the sources (one per step of `job.mounts`).
fn send_job(sock: &OwnedFd, job: &ParkedJob, prepared: &rootfs::Prepared) -> Result<(), RunError> {
    let (which, raw) = sources_sent(prepared);
    let msg = job_message(job, &which)?;
    sys::send_fds(sock.as_raw_fd(), &msg, &raw)
        .map_err(io_err("hand the member's workspace helper the sources"))
}

/// The helper's message for `job`: the JSON's length, the JSON, and `which` (one byte per
/// step: whether a source comes for it; the sources' fds go with the message).
fn job_message(job: &ParkedJob, which: &[u8]) -> Result<Vec<u8>, RunError> {
    let json = serde_json::to_vec(job).map_err(|e| RunError::Setup(e.to_string()))?;
    let mut msg = (json.len() as u32).to_le_bytes().to_vec();
    msg.extend_from_slice(&json);
    msg.extend_from_slice(which);
    Ok(msg)
}

/// The parked helper's answer to a claim's job: the overlay's directories (`W`), or that a
/// primed claim must send every source (`N`, None here), or why it failed (`E`).
fn parked_answer(sock: &OwnedFd) -> Result<Option<Vec<OwnedFd>>, RunError> {
    let (data, fds) = sys::recv_fds(sock.as_raw_fd(), 2)
        .map_err(io_err("the member's workspace helper's answer"))?;
    match data.split_first() {
        Some((b'W', _)) => Ok(Some(fds)),
        Some((b'N', _)) => Ok(None),
        Some((b'E', why)) => Err(RunError::Setup(String::from_utf8_lossy(why).into_owned())),
        _ => Err(RunError::Setup(
            "the member's workspace helper ended without an answer".into(),
        )),
    }
}

/// [`attach_workspace`] through the helper the member's stub parked ([`park`]): this process
/// opens and idmaps the sources, as it does for a helper it forks, and sends them with the
/// steps; the helper answers with the overlay's directories, or why it failed
/// ([`PendingAttach::finish`]). No fork, no namespace joined on the claim's path. A helper
/// primed with this claim's workspace ([`Prime`]) gets the project directory only (opened as
/// `rootfs::prepare` opens it, neither cloned nor idmapped: no idmapping user namespace on the
/// claim's path either), and attaches the overlay it built if that is still the directory it
/// was built from.
fn send_parked(
    plan: &LaunchPlan,
    mounts: &ClaimMounts,
    helper: ParkedHelper,
) -> Result<PendingAttach, RunError> {
    let ws_plan = helper_plan(plan, mounts);
    let wanted = Prime::of(mounts);
    let mut primed = false;
    if helper.ahead {
        // Its job is with the helper already (the stub handed it over, the prime the same).
        crate::phase("attach: sources sent ahead (primed)");
        primed = true;
    } else if let Some((i, p)) = wanted
        .as_ref()
        .filter(|(_, p)| helper.primed.as_ref() == Some(p))
    {
        // Opened as `rootfs::prepare` opens it; when it cannot be, every source is prepared
        // (which refuses it as a cold start would).
        if let Some(project) = open_lower(p) {
            let mut rest = ws_plan.clone();
            rest.mounts.remove(*i);
            let mut prepared = prepare_sources(&rest, mounts.owner)?;
            prepared.insert(*i, Some(project));
            crate::phase("attach: sources prepared (primed)");
            send_job(&helper.sock, &parked_job(mounts, Some(*i)), &prepared)?;
            primed = true;
        }
    }
    if !primed {
        send_all_sources(&helper.sock, &ws_plan, mounts)?;
    }
    let prime = wanted
        .map(|(_, p)| p)
        .filter(|p| helper.primed.as_ref() != Some(p));
    Ok(PendingAttach(Pending::Parked {
        sock: helper.sock,
        ws_plan: Box::new(ws_plan),
        mounts: mounts.clone(),
        primed,
        prime,
    }))
}

/// A claim's job for the parked helper: its steps; `primed`, the step whose source is the
/// project directory itself.
fn parked_job(mounts: &ClaimMounts, primed: Option<usize>) -> ParkedJob {
    ParkedJob {
        mounts: mounts.steps.clone(),
        own: (mounts.own.start, mounts.own.end),
        prime: false,
        primed,
        owner: Some(mounts.owner),
    }
}

/// Every source of `ws_plan` opened (and idmapped) and sent to the parked helper with the job.
fn send_all_sources(
    sock: &OwnedFd,
    ws_plan: &LaunchPlan,
    mounts: &ClaimMounts,
) -> Result<(), RunError> {
    let prepared = prepare_sources(ws_plan, mounts.owner)?;
    crate::phase("attach: sources prepared");
    send_job(sock, &parked_job(mounts, None), &prepared)
}

/// A workspace being attached ([`attach_workspace`]): through the parked helper, its
/// job sent and its answer due; otherwise attached already.
#[derive(Debug)]
pub struct PendingAttach(Pending);

#[derive(Debug)]
enum Pending {
    Done(Attached),
    Parked {
        sock: OwnedFd,
        ws_plan: Box<LaunchPlan>,
        mounts: ClaimMounts,
        /// The job sent is a primed one (the project directory for the primed overlay).
        primed: bool,
        prime: Option<Prime>,
    },
}

impl PendingAttach {
    /// Attached, or why not (nothing is attached then).
    pub fn finish(self) -> Result<Attached, RunError> {
        let (sock, ws_plan, mounts, primed, prime) = match self.0 {
            Pending::Done(a) => return Ok(a),
            Pending::Parked {
                sock,
                ws_plan,
                mounts,
                primed,
                prime,
            } => (sock, ws_plan, mounts, primed, prime),
        };
        let mut fds = parked_answer(&sock)?;
        let taken = primed && fds.is_some();
        // `N`: not the primed overlay's directory (or no primed overlay): every source, now.
        if primed && fds.is_none() {
            send_all_sources(&sock, &ws_plan, &mounts)?;
            fds = parked_answer(&sock)?;
        }
        let fds = fds.ok_or_else(|| {
            RunError::Setup("the member's workspace helper refused every source".into())
        })?;
        crate::phase(if taken {
            "attach: parked helper answered (primed)"
        } else {
            "attach: parked helper answered"
        });
        Ok(Attached {
            summary: summary_dirs(fds),
            _helper: None,
            _parked: Some(sock),
            prime,
        })
    }
}

/// A prime's lower layer (the project directory), opened as `rootfs::prepare` opens it
/// (without following any symlink when sealed), but neither cloned nor idmapped.
fn open_lower(prime: &Prime) -> Option<OwnedFd> {
    let lower = prime.lower()?;
    if prime.sealed {
        crate::nofollow::open_nofollow(lower).ok()
    } else {
        nix::fcntl::open(
            lower,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
    }
}

/// A directory's identity (device and inode), the same through any mount of it, idmapped
/// or not.
fn identity(fd: &OwnedFd) -> Option<(u64, u64)> {
    let st = nix::sys::stat::fstat(fd).ok()?;
    Some((st.st_dev, st.st_ino))
}

/// In a root-run member's exec stub, once it parked the workspace helper (`sock`, [`park`]):
/// the workspace the daemon asked this member to be primed with (`dir`/[`PRIME_FILE`]), its
/// lower layer opened and idmapped as a claimer opens it and sent to the helper, which builds
/// the overlay meanwhile. Returns the prime sent (for the claimer, with the stub's `W`
/// answer); empty: none (no prime asked for, or it could not be opened — a claim then builds
/// its workspace as before).
pub(super) fn prime(sock: &OwnedFd, dir: &Path, plan: &LaunchPlan) -> Vec<u8> {
    let Ok(bytes) = std::fs::read(dir.join(PRIME_FILE)) else {
        return Vec::new();
    };
    let Ok(prime) = serde_json::from_slice::<Prime>(&bytes) else {
        return Vec::new();
    };
    let Some(mounts) = prime.mounts() else {
        return Vec::new();
    };
    let ws_plan = helper_plan(plan, &mounts);
    let job = ParkedJob {
        prime: true,
        ..parked_job(&mounts, None)
    };
    let sent =
        prepare_sources(&ws_plan, prime.owner).and_then(|prepared| send_job(sock, &job, &prepared));
    match sent {
        Ok(()) => serde_json::to_vec(&prime).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// In a root-run member's exec stub, once it has the member's namespaces (`userns`, `mntns`):
/// fork the helper a claim's workspace needs, parked — it joins the member's user namespace,
/// makes its own mount namespace there and becomes the sandbox's root now, and takes one
/// claim's steps and sources later (over the returned socket, which the stub hands to the
/// claimer). So the claim's path has neither the fork nor the namespace changes. It is
/// outside the member's pid namespace (nothing inside can see or signal it), runs nothing of
/// the claim's but the mount steps, dies with the stub (`PR_SET_PDEATHSIG`), and exits when
/// its socket's other end is closed: by the claimer once it is done with the member (after
/// an answer: its exit, the teardown of its own mount namespace, is then off the claim's
/// path), or at once (a claim without a workspace, a claimer that died). Before any claim it
/// may be primed ([`prime`]). None: it could not park (the claim forks its own helper).
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

/// A workspace the parked helper built before any claim ([`prime`]): the overlay, detached,
/// and its upper and lower directories, with what a claim must match to take it.
struct Primed {
    step: MountStep,
    owner: Option<(u32, u32)>,
    /// The lower layer's root's identity ([`identity`]): the project directory's.
    lower: (u64, u64),
    tree: OwnedFd,
    back: Vec<OwnedFd>,
}

/// The parked helper's work: a prime, built and kept (the exec stub's, before any claim);
/// then one claim's steps and sources — the overlay built (or the primed one taken) and
/// everything attached in the member's mount namespace. Its answer (`W` and the overlay's
/// directories, `E` and why not, or `N`: a primed claim's workspace is not the primed one),
/// and its end.
fn serve_parked(sock: &OwnedFd, mntns: &OwnedFd, plan: &LaunchPlan) -> ! {
    let answer = |data: &[u8], fds: &[i32]| -> ! {
        let _ = sys::send_fds(sock.as_raw_fd(), data, fds);
        sys::exit_now(0)
    };
    let mut primed: Option<Primed> = None;
    loop {
        let (msg, fds) = match sys::recv_fds(sock.as_raw_fd(), 253) {
            Ok((m, f)) if !m.is_empty() => (m, f),
            // Closed: no claim needs it.
            _ => sys::exit_now(0),
        };
        let job = (|| -> Result<(ParkedJob, rootfs::Prepared), String> {
            let len = u32::from_le_bytes(
                msg.get(..4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or("a short message")?,
            ) as usize;
            let json = msg.get(4..4 + len).ok_or("a short message")?;
            let job: ParkedJob = serde_json::from_slice(json).map_err(|e| e.to_string())?;
            if job.own.1 > job.mounts.len() {
                return Err("internal: own binds out of range".into());
            }
            let prepared = sources_received(&msg[4 + len..], fds, job.mounts.len())?;
            Ok((job, prepared))
        })();
        let (job, mut prepared) = match job {
            Ok(j) => j,
            Err(e) => answer(format!("E{e}").as_bytes(), &[]),
        };
        let mut ws_plan = plan.clone();
        ws_plan.mounts = job.mounts;
        if job.prime {
            primed = build_prime(&ws_plan, job.owner, prepared);
            continue;
        }
        let own = job.own.0..job.own.1;
        let result = match job.primed {
            Some(i) => {
                let Some(p) = take_primed(&mut primed, &ws_plan, i, job.owner, &mut prepared)
                else {
                    if sys::send_fds(sock.as_raw_fd(), b"N", &[]).is_err() {
                        sys::exit_now(0);
                    }
                    continue;
                };
                build_and_attach(&ws_plan, &own, mntns, prepared, None, Some((i, p)))
            }
            None => build_and_attach(&ws_plan, &own, mntns, prepared, None, None),
        };
        match result {
            Ok(built) => {
                let raw: Vec<i32> = built.back.iter().map(|f| f.as_raw_fd()).collect();
                if sys::send_fds(sock.as_raw_fd(), b"W", &raw).is_ok() {
                    // Until the claimer is done with the member (it closes its end): this
                    // process's end — its own mount namespace's teardown — is not on the
                    // claim's path then.
                    let _ = nix::unistd::read(sock, &mut [0u8; 1]);
                    sys::background();
                }
                drop(built);
                sys::exit_now(0)
            }
            Err(e) => answer(format!("E{e}").as_bytes(), &[]),
        }
    }
}

/// A prime's overlay built in this helper's own mount namespace (`plan.mounts`: the one
/// overlay step; `prepared`: its lower layer). None: it could not be (claims build theirs).
fn build_prime(
    plan: &LaunchPlan,
    owner: Option<(u32, u32)>,
    mut prepared: rootfs::Prepared,
) -> Option<Primed> {
    let [step] = &plan.mounts[..] else {
        return None;
    };
    let lower = identity(prepared.first()?.as_ref()?)?;
    let back = build_overlays(plan, &mut prepared, None, None).ok()?;
    crate::phase("attach: primed");
    Some(Primed {
        step: step.clone(),
        owner,
        lower,
        tree: prepared.pop()??,
        back,
    })
}

/// The primed overlay for step `i` of a claim's `plan`, if it is the one primed (the same
/// step and owner) and the project directory the claimer opened (`prepared[i]`) is its lower
/// layer's: put in `prepared[i]`, its directories returned. None: it is not.
fn take_primed(
    primed: &mut Option<Primed>,
    plan: &LaunchPlan,
    i: usize,
    owner: Option<(u32, u32)>,
    prepared: &mut rootfs::Prepared,
) -> Option<Vec<OwnedFd>> {
    let p = primed.as_ref()?;
    let project = prepared.get(i)?.as_ref()?;
    if plan.mounts.get(i) != Some(&p.step) || owner != p.owner || identity(project)? != p.lower {
        return None;
    }
    let p = primed.take()?;
    prepared[i] = Some(p.tree);
    Some(p.back)
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
    build_and_attach(plan, own, mntns, prepared, disk.as_ref(), None)
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
/// (`mntns`). `primed`: step `i`'s overlay is built already (in `prepared[i]`; its
/// directories given). The overlay's upper and lower directories when there is one.
fn build_and_attach(
    plan: &LaunchPlan,
    own: &std::ops::Range<usize>,
    mntns: &OwnedFd,
    mut prepared: rootfs::Prepared,
    disk: Option<&rootfs::OverlayDirs<OwnedFd>>,
    primed: Option<(usize, Vec<OwnedFd>)>,
) -> Result<Built, String> {
    let (skip, mut back) = match primed {
        Some((i, back)) => (Some(i), back),
        None => (None, Vec::new()),
    };
    let built = build_overlays(plan, &mut prepared, disk, skip)?;
    if !built.is_empty() {
        back = built;
    }
    attach_built(plan, own, mntns, prepared, back)
}

/// Each overlay step of `plan.mounts` but `skip` built in this helper's own mount namespace
/// from its lower layer (`prepared[i]`), and put there as a detached mount. The (last)
/// overlay's upper and lower directories.
fn build_overlays(
    plan: &LaunchPlan,
    prepared: &mut rootfs::Prepared,
    disk: Option<&rootfs::OverlayDirs<OwnedFd>>,
    skip: Option<usize>,
) -> Result<Vec<OwnedFd>, String> {
    let os = Real;
    let mut back = Vec::new();
    for (i, step) in plan.mounts.iter().enumerate() {
        let MountStep::Overlay { upper, .. } = step else {
            continue;
        };
        if skip == Some(i) {
            continue;
        }
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
    Ok(back)
}

/// Everything of `plan.mounts` attached in the member's mount namespace (`mntns`), the
/// overlays built (`prepared`); `back`: the overlay's directories, for the answer.
fn attach_built(
    plan: &LaunchPlan,
    own: &std::ops::Range<usize>,
    mntns: &OwnedFd,
    mut prepared: rootfs::Prepared,
    back: Vec<OwnedFd>,
) -> Result<Built, String> {
    let os = Real;
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
