//! A named sandbox's start through a warm member (docs/design/warm-pool.md "Named sandboxes"):
//! `__supervise --dir STATE/sandboxes/NAME` claims a ready member of a pool matching the
//! sandbox's spec, binds what the key leaves out (workspace, home, environment, secrets,
//! allowlist, limits, hostname), then the member's folder *becomes* the sandbox's folder
//! (`renameat2(RENAME_EXCHANGE)`), its supervisor the sandbox's supervisor, and this process
//! exits. Any failure before the exchange gives the member back (destroyed) and the start
//! goes on cold.

use crate::error::CliResult;
use airlock_engine::live_policy::ClaimedAs;
use airlock_engine::pool;
use airlock_model::plan::MountStep;
use airlock_model::policy::{BackendKind, Profile, WorkspaceMode};
use airlock_model::spec::RunSpec;
use airlock_sandbox::container::attach;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// In a named sandbox's folder: how its last start went when a pool was involved (JSON:
/// `warm`, `pool`, `member`, `claim_ms`, `bind_ms`, or `reason` for a cold one). Read by the
/// CLI after `start`/`up` to say which, and shown in their `--json`.
pub const START_FILE: &str = "warm-start.json";

/// In an adopted member's folder: what the member had where the sandbox's own things went
/// (its `home`), kept until the sandbox's next start (see [`become_folder`]).
const ASIDE: &str = ".member";

fn record(dir: &Path, v: serde_json::Value) {
    let _ = airlock_engine::engine::write_atomic(&dir.join(START_FILE), v.to_string().as_bytes());
}

/// How the last start of the sandbox in `dir` went with the pool (None: no pool involved).
pub fn last_start(dir: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(dir.join(START_FILE)).ok()?).ok()
}

/// The warm start of the named sandbox in `dir` (its spec: `spec`, with `workspace_dir` and
/// `home_dir` set as for its cold start). Some(member): the member now runs the sandbox (this
/// supervisor has nothing left to do but an agent's host). None: start it cold.
pub fn try_adopt(
    dir: &Path,
    spec: &RunSpec,
    secrets: &[(String, String)],
) -> CliResult<Option<String>> {
    let _ = std::fs::remove_file(dir.join(START_FILE));
    // No supervisor runs here now: nothing is mounted on what a previous adoption put aside.
    airlock_sandbox::container::rundir::remove_tree(&dir.join(ASIDE));
    // Nor holds a member's workspace slot a previous adoption brought here (QEMU is gone).
    let _ = std::fs::remove_file(dir.join(airlock_model::plan::microvm::WORKSPACE_SLOT_FILE));
    let state = airlock_engine::paths::state_dir();
    // Only a named sandbox's folder (a pool member's own supervisor starts it, cold), and
    // no pool was ever made here: one stat, nothing opened.
    if dir.parent() != Some(state.join("sandboxes").as_path())
        || (!pool::members_dir(&state).is_dir() && spec.agent_min_warm == 0)
    {
        return Ok(None);
    }
    if spec.backend == BackendKind::Microvm {
        return try_adopt_vm(dir, spec, secrets, &state);
    }
    // What a claim binds for a named container sandbox; the rest starts cold (an overlay
    // whose upper layer is on disk).
    if spec.backend != BackendKind::Container {
        return Ok(None);
    }
    match spec.workspace {
        WorkspaceMode::None | WorkspaceMode::Overlay => {}
        WorkspaceMode::Bind if spec.profile != Profile::Restrictive => {}
        WorkspaceMode::Clone if spec.workspace_dir.is_some() => {}
        _ => return Ok(None),
    }
    let Some(home_dir) = spec.home_dir.clone() else {
        return Ok(None);
    };
    let rootless = !nix::unistd::geteuid().is_root();
    let (ws_steps, ws_writable) = airlock_model::plan::workspace_steps(
        spec,
        rootless,
        airlock_sandbox::kernel::at_least(6, 6),
    );
    let Some((layout, limits)) = super::daemon::claim_limits(spec) else {
        return Ok(None);
    };
    let key = pool::key(spec);
    // `--ro`/`--rw`/`[mounts]` (and `airlock mount`s recorded in its spec): refused as a cold
    // start refuses them, bound in the member at claim.
    let (own_steps, own_writable) = super::daemon::claim_binds(spec, rootless)?;
    // `[home_files]`: staged in the sandbox's folder and its kept home as a cold start stages
    // them, bound over the sandbox's home at claim.
    let (home_steps, _staging) = super::daemon::claim_home_files(spec, Some(dir), rootless)?;
    // Injected secrets: refused as a cold start refuses them; their placeholders made here,
    // the values and the CA bound in the member's supervisor at claim.
    let secrets = super::secrets::claim_bind(spec, secrets.to_vec())?;
    let made = agent_min_warm(spec, &state, &key);
    let t0 = Instant::now();
    let Some((mut store, member)) = super::daemon::claim_or_cold(&state, &key, spec, 0) else {
        record_cold(dir, &state, &key, made);
        return Ok(None);
    };
    let claimed_in = t0.elapsed();
    let mdir = pool::member_dir(&state, &member.name);
    let id = super::named::folder_id(dir)?;
    let mut cgroup = None;
    let bound = (|| -> Result<(), String> {
        // The member's exec stub serves a `run`'s one command; a named sandbox's commands
        // come through exec. It goes (its socket, itself and the child it parked inside).
        airlock_sandbox::container::stub::retire(&mdir, || {
            airlock_engine::supervisor::locked(&mdir)
        })
        .map_err(|e| format!("retire the member's exec stub: {e}"))?;
        let mut plan = airlock_sandbox::folder::read_plan(&mdir)
            .map_err(|e| format!("the member's plan: {e}"))?;
        // A named sandbox's journal is its supervisor's (the member's, adopted with it).
        super::daemon::bind_policy_and_secrets(
            &mdir,
            spec,
            &secrets,
            ClaimedAs::Sandbox(spec.name.clone()),
            None,
        )?;
        // Limits: the cgroup a cold start of this sandbox has (its name and id), joined by
        // every exec; removed when it stops (the engine's reclaim) or goes.
        let leaf = airlock_sandbox::cgroup::leaf_name(&spec.name, &id);
        layout.reclaim(&leaf);
        if limits.any() {
            cgroup = airlock_sandbox::cgroup::Cgroup::create(&layout, &leaf, &limits)
                .map_err(|e| format!("the sandbox's cgroup: {e}"))?;
        }
        // The workspace at the member's empty /workspace, and the sandbox's own $HOME (its
        // folder's `home`) over the member's.
        let home = PathBuf::from(spec.user.home());
        if !ws_steps.is_empty() && !plan.writable_paths.iter().any(|p| ws_writable.contains(p)) {
            return Err("the member has no workspace slot".into());
        }
        let mut first = ws_steps.clone();
        first.push(MountStep::BindRw {
            source: home_dir.clone(),
            target: home.clone(),
            idmap: false,
        });
        let mounts = super::daemon::claim_mounts(spec, &first, &own_steps, &home_steps);
        // An overlay's upper layer is on disk in the sandbox's folder (kept across stop and
        // start), as its cold start keeps it.
        drop(
            attach::attach_workspace(&mdir, &plan, &mounts, Some(dir), None, None)
                .and_then(attach::PendingAttach::finish)
                .map_err(|e| e.to_string())?,
        );
        // Landlock lets its commands write where its `--rw` binds are, as a cold plan's.
        plan.writable_paths.extend(own_writable.iter().cloned());
        attach::set_hostname(&mdir, &plan, &spec.hostname).map_err(|e| e.to_string())?;
        // The record exec reads: this sandbox's name (its cgroup), hostname, environment
        // (the sandbox's own first, then the member's — the proxy's — as a cold plan has it),
        // working directory and limits.
        plan.env = airlock_model::spec::env_over(&plan.env, &spec.env);
        if !secrets.bindings.is_empty() {
            airlock_model::plan::set_ca_bundle_vars(&mut plan.env);
        }
        plan.name = spec.name.clone();
        plan.hostname = spec.hostname.clone();
        plan.cwd = spec.workdir.clone().unwrap_or_else(|| {
            if spec.workspace == WorkspaceMode::None {
                home.clone()
            } else {
                PathBuf::from("/workspace")
            }
        });
        plan.limits = limits;
        plan.rlimit_nproc = limits.pids;
        let json = serde_json::to_vec_pretty(&plan).map_err(|e| e.to_string())?;
        airlock_engine::engine::write_atomic(&mdir.join(airlock_sandbox::folder::PLAN_FILE), &json)
            .map_err(|e| format!("record the plan: {e}"))?;
        // Said before the exchange: the engine's start returns as soon as the sandbox's
        // folder shows a running PID 1, and its caller reads this at once.
        let bound_in = t0.elapsed() - claimed_in;
        record(
            &mdir,
            serde_json::json!({"warm": true, "pool": key, "member": member.name,
                "claim_ms": claimed_in.as_secs_f64() * 1000.0,
                "bind_ms": bound_in.as_secs_f64() * 1000.0}),
        );
        become_folder(dir, &mdir, false)
    })();
    if let Err(e) = bound {
        if let Some(cg) = cgroup {
            cg.destroy();
        }
        if let Some(refusal) = super::daemon::source_changed(&e) {
            super::daemon::release(&mut store, &state, &member, &mdir, None);
            return Err(refusal);
        }
        return refused(
            dir,
            (&mut store, &state),
            &member,
            &mdir,
            &key,
            "member",
            &e,
        );
    }
    // The member is the sandbox now: the pool forgets it (until this, its row said this
    // process claimed it — a reconcile leaves it alone; if this process dies first, the
    // reconcile finds the folder adopted and drops only the row). The daemon refills at once:
    // the sandbox lives on, there is no end of a command to wait for.
    adopted(&mut store, &state, &member.name, &key, claimed_in);
    // The cgroup stays: the sandbox's (no Drop removes it).
    drop(cgroup);
    Ok(Some(member.name))
}

/// A claimed member (a `what`: member, microVM) that refused to become the sandbox in `dir`:
/// released, said, recorded; the start goes on cold.
fn refused(
    dir: &Path,
    (store, state): (&mut super::daemon::Records, &Path),
    member: &pool::Member,
    mdir: &Path,
    key: &str,
    what: &str,
    e: &str,
) -> CliResult<Option<String>> {
    super::daemon::release(store, state, member, mdir, None);
    errln!("airlock: warning: the warm {what} refused this sandbox, starting cold: {e}");
    record(
        dir,
        serde_json::json!({"warm": false, "pool": key,
            "reason": format!("the warm {what} refused this sandbox: {e}")}),
    );
    Ok(None)
}

/// `[daemon.agents.NAME] min_warm`: this agent's pool (key `key`) exists and is that big —
/// a container's or a microVM's — and the daemon runs (this start claims from it if a member
/// is ready; the next ones will). What to say when the pool was made or raised now.
fn agent_min_warm(spec: &RunSpec, state: &Path, key: &str) -> Option<String> {
    let (Some(h), n @ 1..) = (&spec.agent, spec.agent_min_warm) else {
        return None;
    };
    let mut m = spec.clone();
    m.home_dir = None;
    m.workspace_dir = None;
    m.context.clear();
    m.repos.clear();
    let member = super::daemon::member_of(&m);
    super::daemon::agent_pool(&member, h.pool_name(), n, state, key).then(|| {
        format!(
            "warm pool {} started for {} agents ([daemon.agents.{}] min_warm = {n}): the next starts are warm",
            &key[..8],
            h.pool_name(),
            h.pool_name()
        )
    })
}

/// The member is the sandbox now: the pool forgets it, counts the claim, and is refilled.
fn adopted(
    store: &mut super::daemon::Records,
    state: &Path,
    member: &str,
    key: &str,
    claimed: std::time::Duration,
) {
    if let Ok(store) = store.get() {
        let (me, start) = pool::me();
        // Taken by its ready marker: recorded first (unless the daemon's pass did already).
        let _ = store.claim_record(member, me, start);
        let _ = store.member_adopted(member, me);
        // No longer the pool's: its claimed marker goes with its record.
        pool::unpublish(state, member);
        let _ = store.claim_done(key, claimed.as_micros() as u64);
    }
    pool::wake(state);
}

/// A start that found no ready member: said in the folder when a pool for its key exists.
fn record_cold(dir: &Path, state: &Path, key: &str, made: Option<String>) {
    if let Ok(mut s) = airlock_engine::Store::open(state.join("store.db")) {
        if s.pools().is_ok_and(|p| p.iter().any(|p| p.key == key)) {
            let reason = made.unwrap_or_else(|| format!("warm pool {} is empty", &key[..8]));
            record(
                dir,
                serde_json::json!({"warm": false, "pool": key, "reason": reason}),
            );
        }
    }
}

/// [`try_adopt`] for a named microVM sandbox (docs/design/warm-pool.md, "Named microVM
/// starts"): a held guest of a matching pool becomes the sandbox. Bound over the member's
/// channel before the exchange: the allowlist and injected secrets (its supervisor's policy
/// socket; the CA bundle written in the guest), the secrets (/run/secrets), the workspace — a clone's ext4 image into the member's writable
/// slot (made from the clone on the first start, else the sandbox's image copied), mounted
/// read-write by the guest helper; an overlay's erofs image into a read-only slot, as a
/// `run` claim — its `disk` (the member's grown), its read-only mounts (snapshots made now,
/// in the member's claim slot), the hostname, and the recorded guest job `exec` starts from
/// (environment, working directory). The slot's file becomes the sandbox's `vm-workspace.img` (QEMU holds
/// that inode), so the next start, cold or warm, finds the work there.
fn try_adopt_vm(
    dir: &Path,
    spec: &RunSpec,
    secrets: &[(String, String)],
    state: &Path,
) -> CliResult<Option<String>> {
    use airlock_model::plan::microvm::{WORKSPACE_IMAGE_FILE, WORK_PENDING_FILE};
    use airlock_sandbox::microvm::pool as vm_pool;
    // A clone (its own disk) or an overlay (its layers in guest memory, or on the member's
    // `disk`, grown to the sandbox's). An agent start claims
    // too: this supervisor stays as its host (`agent_host`), its runner's sessions go over
    // the sandbox's control socket as a cold one's.
    let clone = match (&spec.workspace, &spec.workspace_dir) {
        (WorkspaceMode::Clone, Some(ws)) => Some(ws.clone()),
        (WorkspaceMode::None, _) => None,
        (WorkspaceMode::Overlay, _) => None,
        _ => return Ok(None),
    };
    // Read-only mounts: snapshots made at this start (as a cold start makes them at each
    // start), unless a cold start would refuse them (it says why).
    if super::warm_vm::cold_mounts(spec) {
        return Ok(None);
    }
    // Injected secrets: refused as a cold start refuses them (before any claim); their
    // placeholders made here, the values and the CA bound in the member's supervisor.
    let secrets = super::secrets::claim_bind(spec, secrets.to_vec())?;
    let key = pool::key(spec);
    // `[daemon.agents.NAME] min_warm` for a microVM agent: its pool of booted guests.
    let made = agent_min_warm(spec, state, &key);
    let t0 = Instant::now();
    let Some((mut store, member)) = super::daemon::claim_or_cold(state, &key, spec, 0) else {
        record_cold(dir, state, &key, made);
        return Ok(None);
    };
    let claimed_in = t0.elapsed();
    airlock_sandbox::phase("claimed a warm microVM");
    let mdir = pool::member_dir(state, &member.name);
    let bound = (|| -> Result<(), String> {
        super::warm_vm::bind_policy_and_secrets(
            &mdir,
            spec,
            &secrets,
            ClaimedAs::Sandbox(spec.name.clone()),
            None,
        )?;
        // `disk` (no clone: a clone's member has that size already): grown to the sandbox's.
        if clone.is_none() {
            super::warm_vm::grow_disk(&mdir, spec)?;
        }
        match &clone {
            Some(ws) => {
                vm_pool::fill_workspace_disk(&mdir, &dir.join(WORKSPACE_IMAGE_FILE), ws)?;
                // The guest may commit work the host has not taken out from now on (as a
                // cold start marks it before QEMU opens the disk).
                std::fs::write(mdir.join(WORK_PENDING_FILE), b"")
                    .map_err(|e| format!("mark the workspace disk in use: {e}"))?;
                vm_pool::attach_workspace_disk(&mdir)?;
            }
            None if spec.workspace == WorkspaceMode::Overlay => {
                vm_pool::attach_workspace(&mdir, &spec.project_dir)?
            }
            None => {}
        }
        vm_pool::attach_ro_mounts(&mdir, &super::warm_vm::ro_mounts(spec))?;
        airlock_sandbox::phase("allowlist, secrets and workspace bound");
        let files: Vec<(String, String)> = airlock_model::plan::name_files(&spec.hostname)
            .into_iter()
            .filter_map(|m| match m {
                MountStep::File {
                    target, contents, ..
                } => Some((target.display().to_string(), contents)),
                _ => None,
            })
            .collect();
        vm_pool::set_hostname(&mdir, &spec.hostname, &files)?;
        // What `exec` starts from: the sandbox's environment over the member's (its proxy
        // variables), its working directory, hostname and files.
        vm_pool::rebind_job(&mdir, |job| {
            job.env = airlock_model::spec::env_over(&job.env, &spec.env);
            if !secrets.bindings.is_empty() {
                airlock_model::plan::set_ca_bundle_vars(&mut job.env);
            }
            job.cwd = spec
                .workdir
                .clone()
                .unwrap_or_else(|| {
                    if spec.workspace == WorkspaceMode::None {
                        PathBuf::from(&job.home)
                    } else {
                        PathBuf::from("/workspace")
                    }
                })
                .display()
                .to_string();
            job.hostname = spec.hostname.clone();
            job.workspace = spec.workspace == WorkspaceMode::Overlay;
            job.workspace_disk = clone.is_some();
            for (path, contents) in &files {
                if let Some(f) = job.files.iter_mut().find(|f| &f.path == path) {
                    f.contents = contents.clone();
                }
            }
        })?;
        let bound_in = t0.elapsed() - claimed_in;
        record(
            &mdir,
            serde_json::json!({"warm": true, "pool": key, "member": member.name,
                "claim_ms": claimed_in.as_secs_f64() * 1000.0,
                "bind_ms": bound_in.as_secs_f64() * 1000.0}),
        );
        become_folder(dir, &mdir, clone.is_some())
    })();
    if let Err(e) = bound {
        return refused(
            dir,
            (&mut store, state),
            &member,
            &mdir,
            &key,
            "microVM",
            &e,
        );
    }
    adopted(&mut store, state, &member.name, &key, claimed_in);
    Ok(Some(member.name))
}

/// The member's folder `mdir` becomes the sandbox's folder `dir`: what the sandbox's folder
/// has (spec, id, workspace, home, journals) moves into the member's, over the member's own
/// spec and id; the two folders are exchanged in one step (the sandbox's path is never
/// missing); the old one is removed and its path left as a link to the new place, for the
/// member's supervisor's last clean-up (it knows only the old path).
///
/// `slot_image`: a microVM member's writable workspace slot, filled with the sandbox's image,
/// becomes the sandbox's `vm-workspace.img` (renamed inside the member's folder: QEMU holds
/// that inode); the sandbox's old image goes with its old folder.
fn become_folder(dir: &Path, mdir: &Path, slot_image: bool) -> Result<(), String> {
    use airlock_model::plan::microvm::{
        CLAIM_SLOT_FILE, WORKSPACE_IMAGE_FILE, WORKSPACE_SLOT_FILE,
    };
    // What belongs to the running supervisor (the member's are in force): its lock, pid,
    // console, plan, PID 1 record and sockets — a previous start's stay behind and go.
    const STAY: &[&str] = &[
        airlock_engine::supervisor::LOCK,
        airlock_engine::supervisor::CONSOLE,
        airlock_engine::supervisor::SUPERVISOR_PID,
        airlock_sandbox::folder::PLAN_FILE,
        airlock_sandbox::folder::STOP_GRACE_FILE,
        airlock_sandbox::container::PID1_FILE,
        airlock_sandbox::container::exec::CONTROL_SOCKET,
        airlock_engine::live_policy::SOCKET,
        airlock_agent::AGENT_SOCKET,
        ASIDE,
        START_FILE,
        // A microVM member's: its control socket, its pid, the guest job exec reads, its
        // boot record and its workspace slot (or, for a clone, the sandbox's image, whose
        // contents are in that slot now).
        airlock_sandbox::microvm::control::VM_CONTROL,
        airlock_sandbox::microvm::PID_FILE,
        airlock_sandbox::microvm::JOB_FILE,
        airlock_sandbox::isolation::VM_BOOT_FILE,
        WORKSPACE_SLOT_FILE,
        WORKSPACE_IMAGE_FILE,
        CLAIM_SLOT_FILE,
    ];
    // The sandbox's console history goes first in the member's (which its supervisor keeps
    // appending to).
    if let Ok(old) = std::fs::read(dir.join(airlock_engine::supervisor::CONSOLE)) {
        let mlog = mdir.join(airlock_engine::supervisor::CONSOLE);
        let cur = std::fs::read(&mlog).unwrap_or_default();
        let _ = std::fs::write(&mlog, [old, cur].concat());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    let mut moved: Vec<std::ffi::OsString> = Vec::new();
    let done = (|| -> Result<(), String> {
        for e in entries.flatten() {
            let name = e.file_name();
            if STAY.iter().any(|s| name == std::ffi::OsStr::new(s)) {
                continue;
            }
            let to = mdir.join(&name);
            if to.is_dir() && !to.is_symlink() {
                // The member's own (its $HOME): the mount point under the sandbox's home in
                // the member. Removing it would detach every mount on it in every namespace
                // (the kernel's rule for a deleted mount point), so it is put aside, and
                // removed at the sandbox's next start.
                std::fs::create_dir_all(mdir.join(ASIDE))
                    .and_then(|()| std::fs::rename(&to, mdir.join(ASIDE).join(&name)))
                    .map_err(|err| format!("put the member's {} aside: {err}", to.display()))?;
            }
            std::fs::rename(e.path(), &to)
                .map_err(|err| format!("move {} into the member: {err}", e.path().display()))?;
            moved.push(name);
        }
        if slot_image {
            std::fs::rename(
                mdir.join(WORKSPACE_SLOT_FILE),
                mdir.join(WORKSPACE_IMAGE_FILE),
            )
            .map_err(|e| format!("the slot as the sandbox's workspace disk: {e}"))?;
        }
        exchange(dir, mdir).map_err(|e| format!("exchange the folders: {e}"))
    })();
    if let Err(e) = done {
        // Nothing of the sandbox's stays in the member that is about to be destroyed.
        for name in moved {
            let _ = std::fs::rename(mdir.join(&name), dir.join(&name));
        }
        if slot_image && !mdir.join(WORKSPACE_SLOT_FILE).exists() {
            let _ = std::fs::rename(
                mdir.join(WORKSPACE_IMAGE_FILE),
                mdir.join(WORKSPACE_SLOT_FILE),
            );
        }
        return Err(e);
    }
    // `mdir` is the old sandbox folder now (this process's lock and console).
    let _ = std::fs::remove_dir_all(mdir);
    // A named start binds no read-only mounts (it starts cold with them): the member's blank
    // claim slot is not the sandbox's (QEMU keeps its own link to it).
    let _ = std::fs::remove_file(dir.join(CLAIM_SLOT_FILE));
    // Past the exchange the sandbox is the member's: a missing link only costs its
    // supervisor's last clean-up (the next start's reclaim does it).
    if let Err(e) = std::os::unix::fs::symlink(dir, mdir) {
        errln!("airlock: warning: link {}: {e}", mdir.display());
    }
    Ok(())
}

fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths; renameat2 reads them only.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// An adopted agent sandbox's host (what a cold supervisor runs beside its sandbox): the
/// agent's socket and runner, and its `blocked` events — the denials the member's supervisor
/// journals (`net.jsonl`, read as they come). Serves until the member's supervisor ends.
pub fn agent_host(
    dir: &Path,
    spec: &RunSpec,
    member: &str,
    harness: airlock_model::config::Harness,
) -> CliResult<i32> {
    use std::io::{Read, Seek};
    use std::os::unix::fs::MetadataExt;
    let fail = |e: std::io::Error| {
        crate::error::CliError::new(
            airlock_model::exit::SANDBOX_FAILED,
            anyhow::anyhow!("prepare the agent journal: {e}"),
        )
    };
    let exe = std::env::current_exe().map_err(fail)?;
    let grace = spec
        .agent_grace
        .unwrap_or(airlock_model::config::DEFAULT_AGENT_GRACE);
    // The supervisor whose life this host shares (not whoever holds the folder later).
    let sup = std::fs::read_to_string(dir.join(airlock_engine::supervisor::SUPERVISOR_PID))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    let sup_start = sup.and_then(airlock_sandbox::container::proc_starttime);
    let alive = || match (sup, sup_start) {
        (Some(p), Some(s)) => airlock_sandbox::container::proc_starttime(p) == Some(s),
        _ => false,
    };
    let journal = dir.join("net.jsonl");
    let mut offset = std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0);
    let host = airlock_agent::host::Host::new(dir, harness, grace, exe).map_err(fail)?;
    let on_egress = host.egress_callback();
    host.start();
    let sock = dir.join(airlock_agent::AGENT_SOCKET);
    let ino = std::fs::metadata(&sock).map(|m| m.ino()).ok();
    // The member's policy names itself in its hints; this sandbox's name is the one to use.
    let hint_name = |s: String| s.replace(&format!(" {member} "), &format!(" {} ", spec.name));
    while alive() {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let Ok(mut f) = std::fs::File::open(&journal) else {
            continue;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0; // rotated
        }
        let mut text = String::new();
        if f.seek(std::io::SeekFrom::Start(offset)).is_err() || f.read_to_string(&mut text).is_err()
        {
            continue;
        }
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        offset += complete as u64;
        for line in text[..complete].lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["decision"] != "deny" {
                continue;
            }
            use airlock_egress::journal::{Event, Kind, Verdict};
            let kind = match v["kind"].as_str() {
                Some("dns") => Kind::Dns,
                Some("http") => Kind::Http,
                Some("connect") => Kind::Connect,
                _ => Kind::Tcp,
            };
            let mut ev = Event::new(kind, Verdict::Deny);
            let s = |k: &str| v[k].as_str().map(str::to_string);
            ev.host = s("host");
            ev.port = v["port"].as_u64().and_then(|p| u16::try_from(p).ok());
            ev.dst = s("dst");
            ev.reason = s("reason");
            ev.fix = s("fix").map(hint_name);
            on_egress(&ev);
        }
    }
    // Its socket, unless a later start's host made its own there meanwhile.
    if ino.is_some() && std::fs::metadata(&sock).map(|m| m.ino()).ok() == ino {
        let _ = std::fs::remove_file(&sock);
    }
    Ok(0)
}
