//! The warm pool (docs/design/warm-pool.md): pre-started sandboxes, bound late at claim.
//!
//! A **pool** is a member spec (a persistent `RunSpec`) and a size, recorded in the state
//! store. Its **key** is the hash of that spec with every field a claim binds cleared
//! ([`key`]), so a `run` whose spec has the same key can take a member and bind its own
//! command, environment, working directory and secrets to it.
//!
//! **Members** are ordinary supervised sandboxes (`airlock __supervise --dir DIR`, one process
//! each, detached): the daemon starts them and never owns their lives. Each has a row in
//! `pool_members` (`warming` → `ready` → `claimed` → `released`, or `draining` when the daemon
//! stops). A ready member also has a **ready marker**, an empty file `ready/KEY/NAME` in the
//! pool's folder, and a claim is one `rename(2)` of it to `claimed/NAME@PID.START` (the
//! claimer's pid and start time, [`take`]): a file is moved once, so two claimers never get
//! one member — nor a claimer and the daemon removing it, which takes the marker the same way
//! first. No store, no daemon and no socket on the claim's path: the store learns of the claim
//! afterwards ([`Store::claim_record`]: from the claimer's release, or the daemon's next pass,
//! [`sync_claims`], which reads the claimed markers), and a claim works while the daemon is
//! down. The daemon ([`serve`]) keeps each pool full, and removes what ended: members whose
//! claimer is gone, released ones, dead ones, and folders nobody records.

use crate::backend::{Backend, Secrets};
use crate::store::{new_id, now, Store, StoreError};
use crate::supervisor::{self, SupervisorBackend};
use airlock_model::spec::{RunSpec, Stdio};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The pool's folder in the state dir: the daemon's lock, pid, wake-up socket and log, and
/// the members' folders (`members/NAME`).
pub fn dir(state: &Path) -> PathBuf {
    state.join("pool")
}

pub fn members_dir(state: &Path) -> PathBuf {
    dir(state).join("members")
}

pub fn member_dir(state: &Path, name: &str) -> PathBuf {
    members_dir(state).join(name)
}

/// The cgroup layout the daemon's members are made under, published in the pool's folder
/// (`cgroup-layout.json`, as each member's supervisor publishes it in the member's): the
/// daemon's own, detected at its start (every member's supervisor is its child, in its
/// cgroup). A claim reads what limits a member can hold from it instead of detecting the
/// layout of its own cgroup (mountinfo, /proc/self/cgroup, access checks: ≈ 0.1 ms of a warm
/// run), which is not where the member's limits go anyway. None: no daemon published one (or
/// an older one).
pub fn published_layout(state: &Path) -> Option<airlock_sandbox::cgroup::Layout> {
    airlock_sandbox::container::stub::member_layout(&dir(state))
}

pub const DAEMON_LOCK: &str = "daemon.lock";
pub const DAEMON_PID: &str = "daemon.pid";
pub const DAEMON_SOCKET: &str = "daemon.sock";
pub const DAEMON_LOG: &str = "daemon.log";

/// The ready markers' folder in the pool's folder: `ready/KEY/NAME`, one empty file per member
/// a claim may take.
pub const READY_DIR: &str = "ready";

/// Taken markers: `claimed/NAME@PID.START`, the taker's pid and start time (a claimer's, or
/// the daemon's when it removes a ready member).
pub const CLAIMED_DIR: &str = "claimed";

fn ready_marker(state: &Path, key: &str, name: &str) -> PathBuf {
    dir(state).join(READY_DIR).join(key).join(name)
}

fn claimed_marker(state: &Path, name: &str, pid: i32, start: u64) -> PathBuf {
    dir(state)
        .join(CLAIMED_DIR)
        .join(format!("{name}@{pid}.{start}"))
}

/// The primes' folder in the pool's folder: `prime/KEY.json`, the workspace the pool's next
/// members are primed with (`attach::Prime`: its last claim's overlay workspace, written by
/// that claimer when its member had another one), copied into each member's folder
/// (`attach::PRIME_FILE`) before it starts.
pub const PRIME_DIR: &str = "prime";

fn prime_path(state: &Path, key: &str) -> PathBuf {
    dir(state).join(PRIME_DIR).join(format!("{key}.json"))
}

/// The project directory pool `key`'s new members are primed with ([`set_prime`]).
pub fn primed_project(state: &Path, key: &str) -> Option<PathBuf> {
    let bytes = fs::read(prime_path(state, key)).ok()?;
    serde_json::from_slice::<airlock_sandbox::container::attach::Prime>(&bytes)
        .ok()?
        .lower()
        .map(Path::to_path_buf)
}

/// Record `prime` (JSON) as the workspace pool `key`'s next members are primed with.
pub fn set_prime(state: &Path, key: &str, prime: &[u8]) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir(state).join(PRIME_DIR))
        .map_err(|e| e.to_string())?;
    crate::engine::write_atomic(&prime_path(state, key), prime).map_err(|e| e.to_string())
}

/// Make member `name` of pool `key` claimable: its ready marker, after its record says
/// `ready` (so a claim never takes a member the store does not know as ready).
pub fn publish_ready(state: &Path, key: &str, name: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut dirs = fs::DirBuilder::new();
    dirs.recursive(true).mode(0o700);
    dirs.create(dir(state).join(CLAIMED_DIR))?;
    dirs.create(dir(state).join(READY_DIR).join(key))?;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(ready_marker(state, key, name))
        .map(drop)
}

/// The claim: a ready member of pool `key` taken for the process `(pid, start)` — its ready
/// marker renamed to the claimed one, which succeeds for one taker only. `Ok(None)`: none is
/// ready (a miss); `Err` (not found): no member of this pool was ever made ready here.
pub fn take(state: &Path, key: &str, pid: i32, start: u64) -> std::io::Result<Option<String>> {
    for e in fs::read_dir(dir(state).join(READY_DIR).join(key))? {
        let Ok(e) = e else { continue };
        let name = e.file_name();
        let Some(name) = name.to_str().filter(|n| member_name_ok(n)) else {
            continue;
        };
        if take_named(state, key, name, pid, start) {
            return Ok(Some(name.to_owned()));
        }
    }
    Ok(None)
}

/// Take member `name` of pool `key` for `(pid, start)`: false when it is not ready (another
/// took it, or it never was).
pub fn take_named(state: &Path, key: &str, name: &str, pid: i32, start: u64) -> bool {
    fs::rename(
        ready_marker(state, key, name),
        claimed_marker(state, name, pid, start),
    )
    .is_ok()
}

/// Who took member `name` (its claimed marker): pid and start time.
pub fn taken_by(state: &Path, name: &str) -> Option<(i32, u64)> {
    let prefix = format!("{name}@");
    fs::read_dir(dir(state).join(CLAIMED_DIR))
        .ok()?
        .flatten()
        .find_map(|e| {
            let f = e.file_name();
            let (pid, start) = f.to_str()?.strip_prefix(&prefix)?.split_once('.')?;
            Some((pid.parse().ok()?, start.parse().ok()?))
        })
}

/// Every marker, ready (`ready/KEY/NAME`) or claimed (`claimed/NAME@PID.START`): its path
/// and the member it names.
fn markers(state: &Path) -> Vec<(PathBuf, String)> {
    let entries = |d: &Path| -> Vec<fs::DirEntry> {
        fs::read_dir(d).into_iter().flatten().flatten().collect()
    };
    let ready = entries(&dir(state).join(READY_DIR))
        .into_iter()
        .flat_map(|pool| entries(&pool.path()));
    ready
        .chain(entries(&dir(state).join(CLAIMED_DIR)))
        .map(|e| {
            let file = e.file_name();
            let name = file.to_string_lossy();
            let member = name.split('@').next().unwrap_or_default().to_string();
            (e.path(), member)
        })
        .collect()
}

/// Member `name`'s markers gone (its removal, or its adoption by a named sandbox).
pub fn unpublish(state: &Path, name: &str) {
    for (path, member) in markers(state) {
        if member == name {
            let _ = fs::remove_file(path);
        }
    }
}

/// The store told of the claims made since the last look: every member it records as
/// `ready` whose ready marker was taken is `claimed` by whoever took it. (A member recorded
/// `ready` with neither marker — a daemon killed between the record and the marker — is
/// published now.)
pub fn sync_claims(store: &mut Store, state: &Path) {
    let Ok(members) = store.members() else { return };
    for m in members.iter().filter(|m| m.state == MemberState::Ready) {
        if ready_marker(state, &m.pool, &m.name).exists() {
            continue;
        }
        match taken_by(state, &m.name) {
            Some((pid, start)) => {
                let _ = store.claim_record(&m.name, pid, start);
            }
            None => {
                let _ = publish_ready(state, &m.pool, &m.name);
            }
        }
    }
}

/// How many claim latencies each pool keeps for its percentiles.
const KEPT_LATENCIES: i64 = 1000;

/// The pool key of a spec: a hash of it with every field a claim binds cleared — the name and
/// hostname, the command, environment, working directory, time limit, terminal, secrets
/// (written at claim; injected ones bound in the member's supervisor, CA and all), a filtered
/// network's allowed domains (put in force at claim), and for containers the overlay or bind
/// workspace (attached at claim), the memory, pids and cpu limits (a cgroup made at claim),
/// the home files and the `--ro`/`--rw`/`[mounts]` binds (bound at claim, as the cold start
/// binds them), for microVMs the read-only mounts (snapshots written into the member's claim
/// slot) — and the project directory when there is no workspace. What stays (backend, root
/// filesystem and its digest, profile, network mode and ports, disk limit, user, whether
/// there is a workspace) is what a member was started with and a claim cannot change.
pub fn key(spec: &RunSpec) -> String {
    use sha2::Digest;
    let s = keyed(spec);
    let mut json = serde_json::to_vec(&s).unwrap_or_default();
    // A microVM member is also what its guest booted from (kernel, initramfs, root image).
    if s.backend == airlock_model::policy::BackendKind::Microvm {
        json.extend_from_slice(
            airlock_sandbox::microvm::pool::identity(s.kernel.as_ref()).as_bytes(),
        );
    }
    let digest = sha2::Sha256::digest(&json);
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`key`] hashes: the spec with every field a claim binds cleared.
fn keyed(spec: &RunSpec) -> RunSpec {
    let mut s = spec.clone();
    s.name.clear();
    s.hostname.clear();
    s.env.clear();
    s.argv.clear();
    s.persistent = false;
    s.timeout = None;
    s.stdio = Stdio::Inherit {
        forward_stdin: false,
    };
    s.workdir = None;
    s.home_dir = None;
    s.workspace_dir = None;
    s.setup.clear();
    s.agent = None;
    s.agent_grace = None;
    s.agent_min_warm = 0;
    s.context.clear();
    s.repos.clear();
    // Plain secrets are written at claim; injected ones bound in the member's egress context.
    s.secrets.clear();
    // A filtered member's allowed domains are set at claim (the live policy socket of its
    // supervisor). Its ports stay: the listeners for them are opened at start.
    if s.net == airlock_model::policy::NetMode::Filtered {
        s.domains.clear();
    }
    normalize_bound_at_claim(&mut s);
    if s.workspace == airlock_model::policy::WorkspaceMode::None {
        s.project_dir = PathBuf::from("/");
    }
    s
}

/// Why no pool serves `spec` (a run that found no pool of its key): the pool whose members
/// differ from it in the fewest settings, and those settings as a user names them
/// (`workspace`, `net`, `image`…); an empty list when only a microVM's boot artifacts differ.
/// None when there is no pool whose spec can be read.
pub fn nearest_mismatch(spec: &RunSpec, pools: &[Pool]) -> Option<(String, Vec<&'static str>)> {
    let want = serde_json::to_value(keyed(spec)).ok()?;
    pools
        .iter()
        .filter_map(|p| {
            let member: RunSpec = serde_json::from_str(&p.spec_json).ok()?;
            let have = serde_json::to_value(keyed(&member)).ok()?;
            let mut differ: Vec<&'static str> = Vec::new();
            let fields = want.as_object()?.keys().chain(have.as_object()?.keys());
            for f in fields {
                if want.get(f) != have.get(f) {
                    let name = setting_name(f);
                    if !differ.contains(&name) {
                        differ.push(name);
                    }
                }
            }
            Some((p.key.clone(), differ))
        })
        .min_by_key(|(_, d)| d.len())
}

/// A spec field as the option or setting that sets it.
fn setting_name(field: &str) -> &'static str {
    match field {
        "workspace" | "workspace_slot" | "workspace_slot_rw" | "project_dir" => "workspace",
        "net" | "domains" => "net",
        "ports" => "ports",
        "profile" => "profile",
        "resources" => "limits",
        "require_limits" => "require_limits",
        "user" => "user",
        "backend" => "backend",
        "rootfs" => "image",
        "kernel" => "kernel",
        _ => "other settings",
    }
}

/// The container-side fields a claim binds that change a member's spec rather than only
/// clearing it: an overlay or bind workspace is attached at claim to a member started with an
/// empty `/workspace` (`workspace_slot`; its mode, project and extra protected paths are the
/// claim's), memory, pids and cpu limits are written to a cgroup made for the claim, and home
/// files and the claim's own binds are bound in the member. Used by [`key`] and by the
/// daemon's member spec (`member_of`), so both sides agree.
pub fn normalize_bound_at_claim(s: &mut RunSpec) {
    use airlock_model::policy::WorkspaceMode;
    if s.backend == airlock_model::policy::BackendKind::Microvm {
        // A microVM's overlay workspace goes into its member's blank slot disk at claim
        // (`airlock-guest ws attach`); its limits are the VM's size, which stays in the key.
        if s.workspace == WorkspaceMode::Overlay {
            s.workspace = WorkspaceMode::None;
            s.workspace_slot = true;
            s.protected.clear();
        }
        // A named sandbox's clone: its ext4 image goes into a *writable* slot (the size of
        // that image: `disk` stays in the key), which becomes the sandbox's image.
        if s.workspace == WorkspaceMode::Clone {
            s.workspace = WorkspaceMode::None;
            s.workspace_slot = true;
            s.workspace_slot_rw = true;
            s.protected.clear();
        }
        // Read-only mounts: snapshots made at claim, written into the member's claim slot
        // (every microVM member has one) and mounted by the guest helper.
        s.binds.clear();
        s.vm_claim_slot = true;
        // `disk` (the writable layers' disk; a clone's slot keeps its size): the member boots
        // with a small one that the claim grows to its own.
        if !s.workspace_slot_rw {
            if let Some(d) = s.resources.disk.as_mut() {
                d.0 = airlock_model::plan::microvm::member_disk(d.0);
            }
        }
        return;
    }
    if s.backend != airlock_model::policy::BackendKind::Container {
        return;
    }
    // A named sandbox's clone is a bind of its folder's checkout: attached the same way.
    if matches!(
        s.workspace,
        WorkspaceMode::Overlay | WorkspaceMode::Bind | WorkspaceMode::Clone
    ) {
        s.workspace = WorkspaceMode::None;
        s.workspace_slot = true;
        s.protected.clear();
    }
    s.resources.memory = None;
    s.resources.pids = None;
    s.resources.cpus = None;
    s.defaulted = Default::default();
    // `[home_files]`: staged by the claimer and bound in the member's home at claim.
    s.home_files.clear();
    // `--ro`/`--rw`/`[mounts]`: bound in the member at claim (`attach::attach`), their
    // sources opened without following symlinks, their mountpoints made as a cold start's.
    s.binds.clear();
    s.pool_member = true;
}

/// Whether `name` is a member's name as [`Store::member_insert`] makes them (`run-` and hex): a
/// name from elsewhere (the daemon's answer) becomes a path under the members' folder.
pub fn member_name_ok(name: &str) -> bool {
    name.strip_prefix("run-")
        .is_some_and(|h| !h.is_empty() && h.len() <= 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A member's place in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Its supervisor is starting it.
    Warming,
    /// Running and checked: a claim may take it.
    Ready,
    /// Taken by a claimer (recorded by pid and start time).
    Claimed,
    /// Its claimer is done with it (or found it dead): to be removed.
    Released,
    /// The daemon is removing it (stop, or found dead).
    Draining,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Warming => "warming",
            MemberState::Ready => "ready",
            MemberState::Claimed => "claimed",
            MemberState::Released => "released",
            MemberState::Draining => "draining",
        }
    }

    fn parse(s: &str) -> Option<MemberState> {
        Some(match s {
            "warming" => MemberState::Warming,
            "ready" => MemberState::Ready,
            "claimed" => MemberState::Claimed,
            "released" => MemberState::Released,
            "draining" => MemberState::Draining,
            _ => return None,
        })
    }
}

/// A pool as the store records it.
#[derive(Debug, Clone, Serialize)]
pub struct Pool {
    pub key: String,
    #[serde(skip)]
    pub spec_json: String,
    pub size: u32,
    pub hits: u64,
    pub misses: u64,
}

/// A member as the store records it.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub name: String,
    pub id: String,
    pub pool: String,
    pub state: MemberState,
    pub claimer_pid: Option<i32>,
    #[serde(skip)]
    pub claimer_start: Option<u64>,
}

/// The claiming process: pid and start time (a recycled pid is never taken for it).
pub fn me() -> (i32, u64) {
    let pid = std::process::id() as i32;
    (
        pid,
        airlock_sandbox::container::exec::proc_starttime(pid).unwrap_or(0),
    )
}

/// Whether the process that claimed a member still runs.
pub fn claimer_alive(pid: i32, start: u64) -> bool {
    airlock_sandbox::container::exec::proc_starttime(pid) == Some(start)
}

fn member_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Member> {
    let state: String = row.get(3)?;
    Ok(Member {
        name: row.get(0)?,
        id: row.get(1)?,
        pool: row.get(2)?,
        state: MemberState::parse(&state).unwrap_or(MemberState::Released),
        claimer_pid: row.get(4)?,
        claimer_start: row.get::<_, Option<i64>>(5)?.map(|v| v as u64),
    })
}

const MEMBER_COLUMNS: &str = "name, id, pool_key, state, claimer_pid, claimer_start";

impl Store {
    /// The pool's connections commit without waiting for the disk (`synchronous = NORMAL`,
    /// still crash-safe in WAL mode): a claim must cost well under a millisecond, and a claim
    /// a power loss forgets concerned sandboxes the power loss ended too.
    pub fn for_pool(mut self) -> Result<Store, StoreError> {
        self.conn().pragma_update(None, "synchronous", "NORMAL")?;
        Ok(self)
    }

    /// Records a pool (or changes its spec and size).
    pub fn pool_define(&mut self, key: &str, spec_json: &str, size: u32) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO pools (key, spec_json, size, created_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT(key) DO UPDATE SET spec_json = ?2, size = ?3",
            params![key, spec_json, size, now()],
        )?;
        Ok(())
    }

    /// Forgets every pool (their members are the daemon's to remove).
    pub fn pools_clear(&mut self) -> Result<(), StoreError> {
        let tx = self
            .conn()
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM pools", [])?;
        tx.execute("DELETE FROM pool_claims", [])?;
        tx.commit()?;
        Ok(())
    }

    pub fn pools(&mut self) -> Result<Vec<Pool>, StoreError> {
        let mut stmt = self.conn().prepare(
            "SELECT key, spec_json, size, hits, misses FROM pools ORDER BY created_at, key",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Pool {
                key: r.get(0)?,
                spec_json: r.get(1)?,
                size: r.get(2)?,
                hits: r.get::<_, i64>(3)? as u64,
                misses: r.get::<_, i64>(4)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn members(&mut self) -> Result<Vec<Member>, StoreError> {
        let mut stmt = self.conn().prepare(&format!(
            "SELECT {MEMBER_COLUMNS} FROM pool_members ORDER BY created_at, name"
        ))?;
        let rows = stmt.query_map([], member_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A new member of pool `key`, `warming`, with a fresh name and id.
    pub fn member_insert(&mut self, key: &str) -> Result<Member, StoreError> {
        let id = new_id()?;
        let name = format!("run-{}", &id[..8]);
        self.conn().execute(
            "INSERT INTO pool_members (name, id, pool_key, state, created_at) \
             VALUES (?1, ?2, ?3, 'warming', ?4)",
            params![name, id, key, now()],
        )?;
        Ok(Member {
            name,
            id,
            pool: key.to_owned(),
            state: MemberState::Warming,
            claimer_pid: None,
            claimer_start: None,
        })
    }

    /// Compare-and-set: moves member `name` to `to` if it is in one of `from`.
    pub fn member_cas(
        &mut self,
        name: &str,
        from: &[MemberState],
        to: MemberState,
    ) -> Result<bool, StoreError> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let list = from
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let ready_at = if to == MemberState::Ready {
            ", ready_at = strftime('%s','now')"
        } else {
            ""
        };
        let n = self.conn().execute(
            &format!(
                "UPDATE pool_members SET state = ?2{ready_at} WHERE name = ?1 AND state IN ({list})"
            ),
            params![name, to.as_str()],
        )?;
        Ok(n == 1)
    }

    /// The claimer's release: `claimed` → `released`, only by the process that claimed it.
    pub fn member_release(&mut self, name: &str, pid: i32) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE pool_members SET state = 'released' \
             WHERE name = ?1 AND state = 'claimed' AND claimer_pid = ?2",
            params![name, pid],
        )?;
        Ok(n == 1)
    }

    /// A claimed member became a named sandbox (`start`): its row goes, only by the process
    /// that claimed it. The pool no longer knows it; the daemon refills.
    pub fn member_adopted(&mut self, name: &str, pid: i32) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM pool_members WHERE name = ?1 AND state = 'claimed' AND claimer_pid = ?2",
            params![name, pid],
        )?;
        Ok(n == 1)
    }

    pub fn member_remove(&mut self, name: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM pool_members WHERE name = ?1", params![name])?;
        Ok(())
    }

    /// A claim taken by its ready marker ([`take`]), recorded: member `name` `ready` →
    /// `claimed` by `(pid, start)`. False: it was not `ready` (recorded already).
    pub fn claim_record(&mut self, name: &str, pid: i32, start: u64) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE pool_members SET state = 'claimed', claimer_pid = ?2, claimer_start = ?3, \
             claimed_at = ?4 WHERE name = ?1 AND state = 'ready'",
            params![name, pid, start as i64, now()],
        )?;
        Ok(n == 1)
    }

    /// A claim that found pool `key` empty: one miss.
    pub fn miss(&mut self, key: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE pools SET misses = misses + 1 WHERE key = ?1",
            params![key],
        )?;
        Ok(())
    }

    /// Whether pool `key` is defined.
    pub fn pool_exists(&mut self, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM pools WHERE key = ?1", params![key], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }

    /// A claimed member's end and its claim's count, in one transaction: the member
    /// `released` (as [`Store::member_release`]), one hit for pool `key` and the claim's
    /// latency (as [`Store::claim_done`]). Whether the member was this claimer's.
    pub fn claim_finished(
        &mut self,
        name: &str,
        pid: i32,
        key: &str,
        micros: u64,
    ) -> Result<bool, StoreError> {
        let tx = self
            .conn()
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE pool_members SET state = 'released' \
             WHERE name = ?1 AND state = 'claimed' AND claimer_pid = ?2",
            params![name, pid],
        )?;
        count_hit(&tx, key, micros)?;
        tx.commit()?;
        Ok(n == 1)
    }

    /// A claim that was handed out: one hit, and how long it took.
    pub fn claim_done(&mut self, key: &str, micros: u64) -> Result<(), StoreError> {
        let tx = self
            .conn()
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        count_hit(&tx, key, micros)?;
        tx.commit()?;
        Ok(())
    }

    /// The pool's kept claim latencies (microseconds), oldest first; prunes older ones.
    pub fn claim_latencies(&mut self, key: &str) -> Result<Vec<u64>, StoreError> {
        self.conn().execute(
            "DELETE FROM pool_claims WHERE pool_key = ?1 AND rowid NOT IN \
             (SELECT rowid FROM pool_claims WHERE pool_key = ?1 ORDER BY rowid DESC LIMIT ?2)",
            params![key, KEPT_LATENCIES],
        )?;
        let mut stmt = self
            .conn()
            .prepare("SELECT micros FROM pool_claims WHERE pool_key = ?1 ORDER BY rowid")?;
        let rows = stmt.query_map(params![key], |r| r.get::<_, i64>(0))?;
        Ok(rows
            .map(|r| r.map(|v| v.max(0) as u64))
            .collect::<Result<_, _>>()?)
    }
}

/// One hit for the pool `key` and the claim's latency, in the caller's transaction.
fn count_hit(tx: &rusqlite::Transaction<'_>, key: &str, micros: u64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE pools SET hits = hits + 1 WHERE key = ?1",
        params![key],
    )?;
    tx.execute(
        "INSERT INTO pool_claims (pool_key, at, micros) VALUES (?1, ?2, ?3)",
        params![key, now(), micros as i64],
    )?;
    Ok(())
}

/// The `p`th percentile (0-100) of `values`, nearest rank; None when empty.
pub fn percentile(values: &[u64], p: u32) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = (u64::from(p) * v.len() as u64).div_ceil(100).max(1) as usize;
    Some(v[rank.min(v.len()) - 1])
}

/// One pool's figures for `daemon status`.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    pub key: String,
    /// What its members run: backend, root filesystem, profile, network.
    pub label: String,
    pub size: u32,
    pub ready: u32,
    pub warming: u32,
    pub claimed: u32,
    pub hits: u64,
    pub misses: u64,
    /// Claim latency percentiles, microseconds (None: no claim yet).
    pub claim_p50_us: Option<u64>,
    pub claim_p95_us: Option<u64>,
    pub claim_p99_us: Option<u64>,
    /// The project directory its new members' workspace is primed with (root-run overlay
    /// pools, once a claim said which: `attach::Prime`).
    pub primed: Option<PathBuf>,
}

/// A short description of a member spec.
pub fn label(spec_json: &str) -> String {
    let Ok(s) = serde_json::from_str::<RunSpec>(spec_json) else {
        return "?".into();
    };
    let mut parts = vec![
        format!("{:?}", s.backend).to_lowercase(),
        s.rootfs.label(),
        s.profile.to_string(),
        format!("net {}", s.net),
    ];
    if !s.domains.is_empty() {
        parts.push(format!("allow {}", s.domains.join(",")));
    }
    if s.workspace_slot {
        parts.push("workspace".into());
    }
    parts.join(" ")
}

/// Every pool's figures. A member recorded `ready` whose ready marker was taken (a claim the
/// store is not told of yet) counts as claimed.
pub fn status(store: &mut Store, state: &Path) -> Result<Vec<PoolStatus>, StoreError> {
    let mut members = store.members()?;
    for m in &mut members {
        if m.state == MemberState::Ready && !ready_marker(state, &m.pool, &m.name).exists() {
            m.state = MemberState::Claimed;
        }
    }
    let mut out = Vec::new();
    for p in store.pools()? {
        let count = |st: MemberState| {
            members
                .iter()
                .filter(|m| m.pool == p.key && m.state == st)
                .count() as u32
        };
        let lat = store.claim_latencies(&p.key)?;
        out.push(PoolStatus {
            label: label(&p.spec_json),
            size: p.size,
            ready: count(MemberState::Ready),
            warming: count(MemberState::Warming),
            claimed: count(MemberState::Claimed),
            hits: p.hits,
            misses: p.misses,
            claim_p50_us: percentile(&lat, 50),
            claim_p95_us: percentile(&lat, 95),
            claim_p99_us: percentile(&lat, 99),
            primed: primed_project(state, &p.key),
            key: p.key,
        });
    }
    Ok(out)
}

/// Tell a running daemon to look at the pools now (a claim was made, a pool changed). A
/// datagram to its socket; nothing waits, nothing fails when no daemon listens.
pub fn wake(state: &Path) {
    if let Ok(s) = std::os::unix::net::UnixDatagram::unbound() {
        let _ = s.set_nonblocking(true);
        let _ = s.send_to(b"w", dir(state).join(DAEMON_SOCKET));
    }
}

/// Tell the running daemon a claim found pool `key` empty: it counts the miss and refills. A
/// datagram, as [`wake`]; false when no daemon took it (count it in the store then).
pub fn hand_miss(state: &Path, key: &str) -> bool {
    let Ok(s) = std::os::unix::net::UnixDatagram::unbound() else {
        return false;
    };
    let _ = s.set_nonblocking(true);
    s.send_to(
        format!("m {key}").as_bytes(),
        dir(state).join(DAEMON_SOCKET),
    )
    .is_ok()
}

/// Hand a finished claim's release to the running daemon: one datagram naming the member,
/// its claimer (`pid`), the pool and the claim's latency; the daemon records the release and
/// the hit in one transaction (as [`Store::claim_finished`]) and removes the member, whose
/// PID 1 the claimer killed already. The claimer exits as soon as its command's status is
/// known. False: no daemon took it (none listens, or its queue is full) — release it here.
pub fn hand_release(state: &Path, name: &str, pid: i32, key: &str, micros: u64) -> bool {
    let Ok(s) = std::os::unix::net::UnixDatagram::unbound() else {
        return false;
    };
    let _ = s.set_nonblocking(true);
    let msg = format!("r {name} {pid} {key} {micros}");
    s.send_to(msg.as_bytes(), dir(state).join(DAEMON_SOCKET))
        .is_ok()
}

/// A datagram of [`hand_release`]'s or [`hand_miss`]'s, applied (anything else: a plain
/// wake-up) — only when its sender, as the kernel says (`SCM_CREDENTIALS`: `sender`, pid and
/// uid), is of this daemon's uid (or root) and, for a release, the claimer it names (its
/// claimed marker's too): a process could otherwise end another's claim (the daemon would
/// remove the member under its command).
fn take_datagram(store: &mut Store, state: &Path, msg: &[u8], sender: Option<(i32, u32)>, me: u32) {
    let msg = std::str::from_utf8(msg).unwrap_or_default();
    if let Some(key) = msg.strip_prefix("m ") {
        if sender.is_some_and(|(_, uid)| uid == me || uid == 0) {
            let _ = store.miss(key);
        }
        return;
    }
    let Some(rest) = msg.strip_prefix("r ") else {
        return;
    };
    let f: Vec<&str> = rest.split(' ').collect();
    if let [name, pid, key, micros] = f[..] {
        if let (Ok(pid), Ok(micros)) = (pid.parse::<i32>(), micros.parse::<u64>()) {
            if !sender.is_some_and(|(p, uid)| p == pid && (uid == me || uid == 0)) {
                eprintln!("airlock daemon: a release of {name} not sent by its claimer, ignored");
                return;
            }
            claimer_gone(pid, CLAIMER_EXIT);
            // Taken by its ready marker: recorded first (unless a pass did already).
            if let Some((by, start)) = taken_by(state, name).filter(|(by, _)| *by == pid) {
                let _ = store.claim_record(name, by, start);
            }
            let _ = store.claim_finished(name, pid, key, micros);
        }
    }
}

/// One datagram on the daemon's socket (`SO_PASSCRED`: the kernel attaches its sender's pid
/// and uid): its length and sender. None: nothing (time out, or non-blocking and empty).
fn recv_datagram(
    sock: &std::os::unix::net::UnixDatagram,
    buf: &mut [u8],
) -> Option<(usize, Option<(i32, u32)>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixCredentials};
    use std::os::fd::AsRawFd;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(UnixCredentials);
    let got = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    let sender = got.cmsgs().ok()?.find_map(|c| match c {
        ControlMessageOwned::ScmCredentials(c) => Some((c.pid(), c.uid())),
        _ => None,
    });
    Some((got.bytes, sender))
}

/// How long the daemon lets a claimer that handed its release over finish exiting.
const CLAIMER_EXIT: Duration = Duration::from_millis(100);

/// Until the process `pid` has exited (at most `limit`). A claimer hands its release over as
/// its last step; what the daemon does next (a transaction, the member's removal, a new
/// member's start) would share the CPUs with that claimer's exit, which its caller waits for.
fn claimer_gone(pid: i32, limit: Duration) {
    // Gone already: nothing to wait for.
    if let Ok(fd) = airlock_sandbox::sys::pidfd_open(pid) {
        airlock_sandbox::sys::wait_readable(&fd, limit);
    }
}

/// Whether a daemon runs for this state dir (holds the lock).
pub fn daemon_running(state: &Path) -> bool {
    supervisor::locked_file(&dir(state).join(DAEMON_LOCK))
}

/// The running daemon's pid, if one runs.
pub fn daemon_pid(state: &Path) -> Option<i32> {
    if !daemon_running(state) {
        return None;
    }
    fs::read_to_string(dir(state).join(DAEMON_PID))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The pool's side of one member's end: its supervisor and sandbox gone (stop, then the
/// isolation backend's destroy: cgroup, run directory), its folder removed, its row deleted.
pub fn remove_member(store: &mut Store, backend: &dyn Backend, state: &Path, name: &str) {
    let dir = member_dir(state, name);
    if forwarded(&dir) {
        // Adopted by a named sandbox: never torn down from here.
        unlink_forward(&dir);
    } else if dir.exists() {
        let _ = backend.destroy(name, &dir);
        let _ = fs::remove_dir_all(&dir);
    }
    unpublish(state, name);
    let _ = store.member_remove(name);
}

/// One pass over the members: remove what ended. `draining` pools (stop) take ready and
/// warming members too.
pub fn reap(store: &mut Store, backend: &dyn Backend, state: &Path, all: bool) -> usize {
    let Ok(members) = store.members() else {
        return 0;
    };
    let pools: Vec<String> = store
        .pools()
        .map(|p| p.into_iter().map(|p| p.key).collect())
        .unwrap_or_default();
    let mut removed = 0;
    // This process, as the taker of the ready members it removes (read once, when needed).
    let mut taker = None;
    for m in &members {
        let dir = member_dir(state, &m.name);
        let gone = match m.state {
            MemberState::Released | MemberState::Draining => true,
            MemberState::Claimed => !m
                .claimer_pid
                .is_some_and(|p| claimer_alive(p, m.claimer_start.unwrap_or(0))),
            // From an earlier daemon's life (this one starts and marks members in one go):
            // keep it only if it runs.
            MemberState::Warming => all || !supervisor::locked(&dir) || !running(&m.name, &dir),
            MemberState::Ready => {
                all || !pools.contains(&m.pool)
                    || !supervisor::locked(&dir)
                    || !running(&m.name, &dir)
            }
        };
        if !gone {
            if m.state == MemberState::Warming
                && store
                    .member_cas(&m.name, &[MemberState::Warming], MemberState::Ready)
                    .unwrap_or(false)
            {
                let _ = publish_ready(state, &m.pool, &m.name);
            }
            continue;
        }
        // A ready member is taken from its marker first, as a claim takes it: one that a
        // claimer took meanwhile is the claimer's (the next pass records it).
        if m.state == MemberState::Ready {
            let (pid, start) = *taker.get_or_insert_with(me);
            if !take_named(state, &m.pool, &m.name, pid, start)
                && taken_by(state, &m.name).is_some()
            {
                continue;
            }
        }
        // Only one side may remove it: a claim cannot take a member that left `ready`.
        let from: &[MemberState] = match m.state {
            MemberState::Ready => &[MemberState::Ready],
            MemberState::Warming => &[MemberState::Warming],
            s => &[s],
        };
        if m.state != MemberState::Draining
            && !store
                .member_cas(&m.name, from, MemberState::Draining)
                .unwrap_or(false)
        {
            continue;
        }
        remove_member(store, backend, state, &m.name);
        removed += 1;
    }
    // Folders no row knows: a daemon killed between making one and recording it… (the row
    // comes first, so only after its row was removed by a crash-interrupted teardown).
    let known: Vec<String> = store
        .members()
        .map(|m| m.into_iter().map(|m| m.name).collect())
        .unwrap_or_default();
    if let Ok(rd) = fs::read_dir(members_dir(state)) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if forwarded(&e.path()) {
                unlink_forward(&e.path());
            } else if !known.contains(&name) {
                let _ = backend.destroy(&name, &e.path());
                let _ = fs::remove_dir_all(e.path());
                removed += 1;
            }
        }
    }
    // Markers no row knows (a member removed by its claimer while a daemon started).
    for (path, member) in markers(state) {
        if !known.contains(&member) {
            let _ = fs::remove_file(path);
        }
    }
    removed
}

/// A member adopted by a named sandbox leaves a link at its old folder's path to its new one
/// (STATE/sandboxes/NAME), so that its supervisor's last clean-up (which knows the old path)
/// lands there. docs/design/warm-pool.md "Named sandboxes".
pub fn forwarded(dir: &Path) -> bool {
    fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink())
}

/// Remove a forwarding link once no supervisor holds the folder it leads to (never followed
/// for anything but that check).
fn unlink_forward(dir: &Path) {
    if !supervisor::locked(dir) {
        let _ = fs::remove_file(dir);
    }
}

/// Whether the member's PID 1 runs (published: its setup is done; a microVM's guest takes
/// sessions).
fn running(name: &str, dir: &Path) -> bool {
    matches!(
        backend_liveness(name, dir),
        crate::backend::Liveness::Running { .. }
    ) && supervisor::sandbox_up(name, dir)
}

fn backend_liveness(name: &str, dir: &Path) -> crate::backend::Liveness {
    SupervisorBackend {
        exe: PathBuf::new(),
    }
    .probe(name, dir)
}

/// Start one member of `pool`: row (`warming`) first, then its folder, then its supervisor;
/// `ready` once its PID 1 is up. Any failure undoes all three.
pub fn start_member(
    store: &mut Store,
    backend: &dyn Backend,
    state: &Path,
    pool: &Pool,
) -> Result<String, String> {
    let m = store.member_insert(&pool.key).map_err(|e| e.to_string())?;
    let dir = member_dir(state, &m.name);
    let made = (|| -> Result<(), String> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(members_dir(state))
            .map_err(|e| format!("create {}: {e}", members_dir(state).display()))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("create {}: {e}", dir.display()))?;
        crate::engine::write_atomic(&dir.join(crate::engine::ID_FILE), m.id.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut spec: serde_json::Value =
            serde_json::from_str(&pool.spec_json).map_err(|e| e.to_string())?;
        spec["name"] = m.name.clone().into();
        spec["hostname"] = m.name.clone().into();
        let spec_json = spec.to_string();
        crate::engine::write_atomic(&dir.join("spec.json"), spec_json.as_bytes())
            .map_err(|e| e.to_string())?;
        // The workspace it is primed with, if the pool's claims asked for one.
        if let Ok(prime) = fs::read(prime_path(state, &pool.key)) {
            crate::engine::write_atomic(
                &dir.join(airlock_sandbox::container::attach::PRIME_FILE),
                &prime,
            )
            .map_err(|e| e.to_string())?;
        }
        backend
            .start(&m.name, &dir, &spec_json, &Secrets::default())
            .map_err(|e| e.to_string())?;
        // A microVM is ready once a session went to its guest and back.
        if spec["backend"] == "microvm" {
            airlock_sandbox::microvm::pool::round_trip(&dir)?;
        }
        Ok(())
    })();
    match made {
        Ok(())
            if store
                .member_cas(&m.name, &[MemberState::Warming], MemberState::Ready)
                .unwrap_or(false) =>
        {
            match publish_ready(state, &pool.key, &m.name) {
                Ok(()) => Ok(m.name),
                Err(e) => {
                    remove_member(store, backend, state, &m.name);
                    Err(format!("its ready marker: {e}"))
                }
            }
        }
        Ok(()) => {
            remove_member(store, backend, state, &m.name);
            Err("its record changed while it started".into())
        }
        Err(e) => {
            remove_member(store, backend, state, &m.name);
            Err(e)
        }
    }
}

/// Set by SIGTERM/SIGINT in the daemon: drain and exit.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Start members until each pool has `size` of them ready or warming. Stops early when a stop
/// was asked for or a start failed (tried again at the next pass).
fn refill(store: &mut Store, backend: &dyn Backend, state: &Path) {
    let Ok(pools) = store.pools() else { return };
    for pool in pools {
        loop {
            if STOP.load(Ordering::SeqCst) {
                return;
            }
            let have = store
                .members()
                .map(|ms| {
                    ms.iter()
                        .filter(|m| {
                            m.pool == pool.key
                                && matches!(m.state, MemberState::Ready | MemberState::Warming)
                        })
                        .count() as u32
                })
                .unwrap_or(u32::MAX);
            if have >= pool.size {
                break;
            }
            match start_member(store, backend, state, &pool) {
                Ok(name) => eprintln!("airlock daemon: pool {}: {name} ready", &pool.key[..8]),
                Err(e) => {
                    eprintln!(
                        "airlock daemon: pool {}: a member did not start: {e}",
                        &pool.key[..8]
                    );
                    break;
                }
            }
        }
    }
}

/// The daemon: holds `pool/daemon.lock`, keeps the pools full, removes what ended; on
/// SIGTERM/SIGINT removes every member nobody claimed, forgets the pools and returns.
/// `ready` is called once the lock is held and the wake-up socket listens.
pub fn serve(state: &Path, exe: PathBuf, ready: impl FnOnce()) -> Result<(), String> {
    let pdir = dir(state);
    // `members/` also tells `run` that pools exist here (see the claim side).
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(members_dir(state))
        .map_err(|e| format!("create {}: {e}", pdir.display()))?;
    let Some(_lock) = supervisor::take_lock_file(&pdir.join(DAEMON_LOCK))
        .map_err(|e| format!("the daemon's lock: {e}"))?
    else {
        return Err("a daemon already runs for this state directory".into());
    };
    let sock_path = pdir.join(DAEMON_SOCKET);
    let _ = fs::remove_file(&sock_path);
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path)
        .map_err(|e| format!("listen on {}: {e}", sock_path.display()))?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    // Every datagram comes with its sender's pid and uid (a release is taken only from its
    // claimer: `take_release`).
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::PassCred, &true)
        .map_err(|e| format!("SO_PASSCRED on {}: {e}", sock_path.display()))?;
    fs::write(pdir.join(DAEMON_PID), std::process::id().to_string())
        .map_err(|e| format!("write the daemon's pid: {e}"))?;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT] {
            libc::signal(sig, on_stop as *const () as libc::sighandler_t);
        }
    }
    let mut store = Store::open(state.join("store.db"))
        .and_then(Store::for_pool)
        .map_err(|e| format!("the state store: {e}"))?;
    let backend = SupervisorBackend { exe };
    // Before any claim can reach this daemon's members: a layout left by an earlier daemon
    // (started in another cgroup) must not be taken for theirs.
    airlock_sandbox::container::stub::publish_layout(
        &dir(state),
        &airlock_sandbox::cgroup::Layout::detect(),
    )
    .map_err(|e| format!("publish the cgroup layout: {e}"))?;
    ready();
    let mut buf = [0u8; 512];
    let me = nix::unistd::geteuid().as_raw();
    while !STOP.load(Ordering::SeqCst) {
        sync_claims(&mut store, state);
        reap(&mut store, &backend, state, false);
        refill(&mut store, &backend, state);
        // Woken by a claim, a claim's release or a pool change; else every half second.
        if let Some((n, sender)) = recv_datagram(&sock, &mut buf) {
            take_datagram(&mut store, state, &buf[..n], sender, me);
        }
        while sock.set_nonblocking(true).is_ok() {
            let Some((n, sender)) = recv_datagram(&sock, &mut buf) else {
                break;
            };
            take_datagram(&mut store, state, &buf[..n], sender, me);
        }
        let _ = sock.set_nonblocking(false);
    }
    // Releases sent before the stop.
    let _ = sock.set_nonblocking(true);
    while let Some((n, sender)) = recv_datagram(&sock, &mut buf) {
        take_datagram(&mut store, state, &buf[..n], sender, me);
    }
    drain(&mut store, &backend, state);
    let _ = fs::remove_file(&sock_path);
    let _ = fs::remove_file(pdir.join(DAEMON_PID));
    Ok(())
}

/// The stop: forget the pools, remove every member nobody holds. A claimed member stays its
/// claimer's (who removes it when done, or the next daemon when the claimer is gone).
pub fn drain(store: &mut Store, backend: &dyn Backend, state: &Path) {
    let _ = store.pools_clear();
    sync_claims(store, state);
    reap(store, backend, state, true);
    // The pools' marker folders, empty now (a claimed member's marker stays with it).
    if let Ok(rd) = fs::read_dir(dir(state).join(READY_DIR)) {
        for e in rd.flatten() {
            let _ = fs::remove_dir(e.path());
        }
    }
    // What the pools' members were primed with: forgotten with the pools.
    let _ = fs::remove_dir_all(dir(state).join(PRIME_DIR));
}
