//! Resource limits through cgroups, v1 (legacy/hybrid hosts) and v2 (unified), detected at run
//! time. Sandbox cgroups live under airlock's own cgroup (`<own>/airlock/<leaf>`), never at the
//! hierarchy root, except on v2 as root when our own cgroup cannot host children (processes in
//! it): then `/sys/fs/cgroup/airlock/<leaf>`. The leaf is `NAME.ID` ([`leaf_name`]): the id is
//! unique per sandbox (a named sandbox's store id, a fresh random one per `run`), so sandboxes of
//! different state directories never share a cgroup even when their names are equal.

pub mod procfs;

use airlock_model::plan::LimitSupport;
use airlock_model::spec::Resources;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const CPU_PERIOD_US: u64 = 100_000;
const GROUP_DIR: &str = "airlock";

/// Where this process can create sandbox cgroups.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Layout {
    /// Per-controller parent directories (already including `/airlock`), when usable.
    V1 {
        memory: Option<PathBuf>,
        pids: Option<PathBuf>,
        cpu: Option<PathBuf>,
    },
    /// One parent directory (including `/airlock`) with the listed controllers usable.
    V2 {
        parent: PathBuf,
        memory: bool,
        pids: bool,
        cpu: bool,
    },
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot create cgroup {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.into(),
        value: value.into(),
        source,
    })
}

fn writable_dir(p: &Path) -> bool {
    nix::unistd::access(
        p,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .is_ok()
}

/// The cgroup directory name of one sandbox instance: its name (for people reading
/// /sys/fs/cgroup) and its unique id (what makes it its own).
pub fn leaf_name(name: &str, id: &str) -> String {
    format!("{name}.{id}")
}

/// Whether `leaf` is a plain directory name (what gc reads back from a run directory).
pub fn valid_leaf(leaf: &str) -> bool {
    !leaf.is_empty() && leaf != "." && leaf != ".." && !leaf.contains(['/', '\0'])
}

impl Layout {
    /// Kill whatever is left in the cgroup `leaf` and remove it, in every hierarchy. For the
    /// leftovers of a sandbox whose supervisor died (its owner must be known dead). Returns
    /// whether there was anything.
    pub fn reclaim(&self, leaf: &str) -> bool {
        if !valid_leaf(leaf) {
            return false;
        }
        let mut found = false;
        for parent in self.parents() {
            let d = parent.join(leaf);
            if d.is_dir() {
                found = true;
                let _ = remove_cgroup_dir(&d);
            }
        }
        found
    }

    /// Detect from the live system (reads two /proc files and does a few access(2) checks).
    pub fn detect() -> Layout {
        let cg = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mi = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let root = nix::unistd::geteuid().is_root();
        Self::from_parts(&mi, &cg, root, &writable_dir, &|p| {
            fs::read_to_string(p).ok()
        })
    }

    /// Pure core of [`detect`]: mountinfo and /proc/self/cgroup text, with the filesystem
    /// questions passed in. Parsing is shared with `doctor` (`probe::cgroups`).
    pub fn from_parts(
        mountinfo: &str,
        proc_cgroup: &str,
        root: bool,
        writable: &dyn Fn(&Path) -> bool,
        read: &dyn Fn(&Path) -> Option<String>,
    ) -> Layout {
        let mounts = procfs::cgroup_mounts(&procfs::parse_mountinfo(mountinfo));
        let procs = procfs::parse_proc_cgroup(proc_cgroup);
        let v1_ctrl = |ctrl: &str| -> Option<PathBuf> {
            let m = mounts
                .iter()
                .find(|m| m.fstype == "cgroup" && m.controllers.iter().any(|x| x == ctrl))?;
            let p = procs
                .iter()
                .find(|p| p.controllers.iter().any(|x| x == ctrl))?;
            let own = procfs::own_dir(&m.mount_point, &m.root, &p.path)?;
            let parent = own.join(GROUP_DIR);
            (writable(&parent) || writable(&own)).then_some(parent)
        };
        let any_v1 = mounts.iter().any(|m| {
            m.fstype == "cgroup" && m.controllers.iter().any(|x| x == "memory" || x == "pids")
        });
        if any_v1 {
            return Layout::V1 {
                memory: v1_ctrl("memory"),
                pids: v1_ctrl("pids"),
                cpu: v1_ctrl("cpu"),
            };
        }
        let Some(m2) = mounts.iter().find(|m| m.fstype == "cgroup2") else {
            return Layout::None;
        };
        let mp = &m2.mount_point;
        let Some(own) = procs
            .iter()
            .find(|p| p.controllers.is_empty())
            .and_then(|p| procfs::own_dir(mp, &m2.root, &p.path))
        else {
            return Layout::None;
        };
        let has = |dir: &Path, file: &str, c: &str| {
            read(&dir.join(file)).is_some_and(|s| s.split_whitespace().any(|w| w == c))
        };
        // Our own cgroup can host children with controllers only if it already delegates them to
        // its subtree (no internal processes rule) or it is the root.
        let own_ok = writable(&own)
            && (["memory", "pids", "cpu"]
                .iter()
                .any(|c| has(&own, "cgroup.subtree_control", c))
                || own == *mp);
        let base = if own_ok {
            own
        } else if root {
            mp.clone()
        } else {
            return Layout::None;
        };
        let avail = |c: &str| has(&base, "cgroup.controllers", c);
        Layout::V2 {
            parent: base.join(GROUP_DIR),
            memory: avail("memory"),
            pids: avail("pids"),
            cpu: avail("cpu"),
        }
    }

    pub fn support(&self) -> LimitSupport {
        match self {
            Layout::V1 { memory, pids, cpu } => LimitSupport {
                memory: memory.is_some(),
                pids: pids.is_some(),
                cpu: cpu.is_some(),
            },
            Layout::V2 {
                memory, pids, cpu, ..
            } => LimitSupport {
                memory: *memory,
                pids: *pids,
                cpu: *cpu,
            },
            Layout::None => LimitSupport::default(),
        }
    }

    /// Every parent directory sandbox cgroups are created in (for gc).
    pub fn parents(&self) -> Vec<PathBuf> {
        match self {
            Layout::V1 { memory, pids, cpu } => {
                [memory, pids, cpu].into_iter().flatten().cloned().collect()
            }
            Layout::V2 { parent, .. } => vec![parent.clone()],
            Layout::None => vec![],
        }
    }
}

/// A live sandbox cgroup (one directory per v1 controller, or one v2 directory).
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    memory_dir: Option<PathBuf>,
    v2: bool,
    how: Make,
}

/// How [`Cgroup::make`] treats the directories: new ones with the limits set; a member's slot
/// (every available controller, no limits); or a claim's limits in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Make {
    New,
    Slot,
    Bind,
}

impl Cgroup {
    /// Create `<parent>/<name>` and apply the limits that are set and supported.
    pub fn create(
        layout: &Layout,
        name: &str,
        r: &Resources,
    ) -> Result<Option<Cgroup>, CgroupError> {
        Self::make(layout, name, r, Make::New)
    }

    /// A warm-pool member's cgroup `<parent>/<name>`: one directory for every controller this
    /// host offers, with no limit in it; a claim writes its own ([`Cgroup::bind`]).
    pub fn create_slot(layout: &Layout, name: &str) -> Result<Option<Cgroup>, CgroupError> {
        Self::make(layout, name, &Resources::default(), Make::Slot)
    }

    /// The limits `r` in the cgroup `<parent>/<name>`: in the directories a member made with
    /// [`Cgroup::create_slot`], the missing ones made now. The returned cgroup is every
    /// directory of that name (its `destroy` removes them all).
    pub fn bind(layout: &Layout, name: &str, r: &Resources) -> Result<Option<Cgroup>, CgroupError> {
        Self::make(layout, name, r, Make::Bind)
    }

    fn make(
        layout: &Layout,
        name: &str,
        r: &Resources,
        how: Make,
    ) -> Result<Option<Cgroup>, CgroupError> {
        let mut cg = Cgroup {
            dirs: vec![],
            memory_dir: None,
            v2: false,
            how,
        };
        let result = cg.populate(layout, name, r);
        match result {
            Ok(()) if cg.dirs.is_empty() => Ok(None),
            Ok(()) => Ok(Some(cg)),
            Err(e) => {
                cg.destroy();
                Err(e)
            }
        }
    }

    fn mkdir(&mut self, parent: &Path, name: &str) -> Result<PathBuf, CgroupError> {
        let dir = parent.join(name);
        let create = |p: &Path, existing: bool| match fs::create_dir(p) {
            Ok(()) => Ok(()),
            Err(e) if existing && e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(source) => Err(CgroupError::Create {
                path: p.into(),
                source,
            }),
        };
        // A bind finds the directory its member made (and its parent): one attempt on the
        // claim's path instead of two, the parent only when the member's is missing.
        let bind = self.how == Make::Bind;
        let found = bind
            && match fs::create_dir(&dir) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(source) => return Err(CgroupError::Create { path: dir, source }),
            };
        if !found {
            create(parent, true)?;
            create(&dir, bind)?;
        }
        self.dirs.push(dir.clone());
        Ok(dir)
    }

    /// Whether a controller's directory belongs in this cgroup although no limit of it is set:
    /// always in a slot, and in a bind when the slot has it (so that `destroy` removes it).
    fn keep_unlimited(&self, parent: &Path, name: &str) -> bool {
        match self.how {
            Make::New => false,
            Make::Slot => true,
            Make::Bind => parent.join(name).is_dir(),
        }
    }

    /// A controller's directory for no limit of its own, when [`Cgroup::keep_unlimited`].
    fn unlimited(&mut self, parent: &Path, name: &str) -> Result<Option<PathBuf>, CgroupError> {
        if !self.keep_unlimited(parent, name) {
            return Ok(None);
        }
        self.mkdir(parent, name).map(Some)
    }

    fn populate(&mut self, layout: &Layout, name: &str, r: &Resources) -> Result<(), CgroupError> {
        match layout {
            Layout::V1 { memory, pids, cpu } => {
                if let Some(p) = memory.as_ref() {
                    if let Some(m) = r.memory {
                        let d = self.mkdir(p, name)?;
                        write(&d.join("memory.limit_in_bytes"), &m.0.to_string())?;
                        let memsw = d.join("memory.memsw.limit_in_bytes");
                        if memsw.exists() {
                            write(&memsw, &m.0.to_string())?;
                        }
                        self.memory_dir = Some(d);
                    } else if let Some(d) = self.unlimited(p, name)? {
                        self.memory_dir = Some(d);
                    }
                }
                if let Some(p) = pids.as_ref() {
                    if let Some(n) = r.pids {
                        let d = self.mkdir(p, name)?;
                        write(&d.join("pids.max"), &n.to_string())?;
                    } else {
                        self.unlimited(p, name)?;
                    }
                }
                if let Some(p) = cpu.as_ref() {
                    if let Some(c) = r.cpus {
                        let d = self.mkdir(p, name)?;
                        write(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                        write(
                            &d.join("cpu.cfs_quota_us"),
                            &c.quota_us(CPU_PERIOD_US).to_string(),
                        )?;
                    } else {
                        self.unlimited(p, name)?;
                    }
                }
            }
            Layout::V2 {
                parent,
                memory,
                pids,
                cpu,
            } => {
                let keep = self.keep_unlimited(parent, name);
                let want_mem = (r.memory.is_some() || keep) && *memory;
                let want_pids = (r.pids.is_some() || keep) && *pids;
                let want_cpu = (r.cpus.is_some() || keep) && *cpu;
                if !(want_mem || want_pids || want_cpu) {
                    return Ok(());
                }
                self.v2 = true;
                // Enable the controllers for the airlock parent's children.
                let mut enable = String::new();
                for (on, c) in [
                    (want_mem, "+memory"),
                    (want_pids, "+pids"),
                    (want_cpu, "+cpu"),
                ] {
                    if on {
                        enable.push_str(c);
                        enable.push(' ');
                    }
                }
                let base = parent.parent().unwrap_or(parent);
                let _ = fs::write(base.join("cgroup.subtree_control"), enable.trim());
                let d = self.mkdir(parent, name)?;
                let _ = fs::write(parent.join("cgroup.subtree_control"), enable.trim());
                if let Some(m) = r.memory.filter(|_| want_mem) {
                    write(&d.join("memory.max"), &m.0.to_string())?;
                    let _ = fs::write(d.join("memory.swap.max"), "0");
                    let _ = fs::write(d.join("memory.oom.group"), "1");
                    self.memory_dir = Some(d.clone());
                } else if want_mem {
                    self.memory_dir = Some(d.clone());
                }
                if let Some(n) = r.pids.filter(|_| want_pids) {
                    write(&d.join("pids.max"), &n.to_string())?;
                }
                if let Some(c) = r.cpus.filter(|_| want_cpu) {
                    write(
                        &d.join("cpu.max"),
                        &format!("{} {}", c.quota_us(CPU_PERIOD_US), CPU_PERIOD_US),
                    )?;
                }
            }
            Layout::None => {}
        }
        Ok(())
    }

    /// Move a process into every directory of this cgroup.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        for d in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// What a freshly forked child needs to join this cgroup itself ([`SelfJoin::join`]): on
    /// cgroup v1, each directory's `tasks` file opened now (by this process, whose credentials
    /// the kernel checks); the directories it cannot open that way (and every v2 one) are left
    /// to [`SelfJoin::add_rest`] from the parent.
    ///
    /// Why: a write of another process's pid (`cgroup.procs`, or `tasks` with a pid) takes the
    /// kernel's global `cgroup_threadgroup_rwsem` for writing, and the first such write after a
    /// quiet spell waits for an RCU grace period — 6–15 ms measured here, the largest host step
    /// before a sandbox's command starts. A thread writing `0` to `tasks` moves only itself and
    /// takes no global lock; a child that has not started any thread is its whole process.
    pub fn self_join(&self) -> SelfJoin {
        SelfJoin::open(&self.dirs, self.v2)
    }

    /// Whether the kernel OOM-killed a process in this cgroup.
    pub fn oom_killed(&self) -> bool {
        let Some(d) = &self.memory_dir else {
            return false;
        };
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        fs::read_to_string(d.join(file))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == key).then(|| v.trim().parse::<u64>().ok()).flatten()
                })
            })
            .is_some_and(|n| n > 0)
    }

    /// Kill anything left and remove the directories.
    pub fn destroy(self) {
        for d in &self.dirs {
            let _ = remove_cgroup_dir(d);
        }
    }
}

/// A cgroup a child joins by itself (see [`Cgroup::self_join`]).
#[derive(Debug, Default)]
pub struct SelfJoin {
    /// An open v1 `tasks` file per directory, with its path for error messages.
    fds: Vec<(OwnedFd, PathBuf)>,
    /// Directories the parent moves the child into (`cgroup.procs`).
    rest: Vec<PathBuf>,
}

impl SelfJoin {
    /// For cgroup directories `dirs` (`v2`: of the unified hierarchy, which has no `tasks`):
    /// each v1 directory's `tasks` opened now by this process; the others (and any whose
    /// `tasks` cannot be opened) left to [`SelfJoin::add_rest`].
    pub fn open(dirs: &[PathBuf], v2: bool) -> SelfJoin {
        let mut join = SelfJoin::default();
        for d in dirs {
            let tasks = d.join("tasks");
            let opened = (!v2)
                .then(|| {
                    fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(libc::O_CLOEXEC)
                        .open(&tasks)
                        .ok()
                })
                .flatten();
            match opened {
                Some(f) => join.fds.push((OwnedFd::from(f), tasks)),
                None => join.rest.push(d.clone()),
            }
        }
        join
    }

    /// In the child, before it does anything else: move the calling thread into every
    /// directory opened for it; drop this right after (nothing of the host's cgroup tree stays
    /// open in a sandbox). Call only while the process has a single thread (a fresh fork/clone
    /// child).
    pub fn join(&self) -> Result<(), CgroupError> {
        for (fd, path) in &self.fds {
            nix::unistd::write(fd, b"0").map_err(|e| CgroupError::Write {
                path: path.clone(),
                value: "0".into(),
                source: e.into(),
            })?;
        }
        Ok(())
    }

    /// In the parent: move `pid` into the directories the child does not join by itself.
    pub fn add_rest(&self, pid: i32) -> Result<(), CgroupError> {
        for d in &self.rest {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }
}

/// Kill every process in a cgroup directory and remove it (best effort, a few retries).
/// Returns whether it is gone.
pub fn remove_cgroup_dir(d: &Path) -> bool {
    // Killed processes leave the cgroup only once the kernel has torn them down, which on a
    // loaded machine can take longer than a few naps: retry for up to 3 s in all (1 ms naps
    // first, then 10 ms) before leaving it to `gc`.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    for attempt in 0.. {
        if attempt > 0 && std::time::Instant::now() >= deadline {
            break;
        }
        match fs::remove_dir(d) {
            Ok(()) => return true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
            // Only a cgroup that still has members (EBUSY) is worth waiting for.
            Err(e) if e.raw_os_error() != Some(libc::EBUSY) && attempt > 0 => break,
            Err(_) => {
                if fs::write(d.join("cgroup.kill"), "1").is_err() {
                    if let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) {
                        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(if attempt < 10 {
                    1
                } else {
                    10
                }));
            }
        }
    }
    !d.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_CG: &str =
        "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/\n";
    const HYBRID_MI: &str = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw,nsdelegate
31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:6 - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/pids rw,nosuid shared:7 - cgroup cgroup rw,pids
33 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:8 - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn hybrid_v1_uses_own_cgroup_per_controller() {
        let l = Layout::from_parts(HYBRID_MI, HYBRID_CG, true, &|_| true, &|_| None);
        assert_eq!(
            l,
            Layout::V1 {
                memory: Some(PathBuf::from(
                    "/sys/fs/cgroup/memory/process_api/abc/airlock"
                )),
                pids: Some(PathBuf::from("/sys/fs/cgroup/pids/airlock")),
                cpu: Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/airlock")),
            }
        );
        let ro = Layout::from_parts(HYBRID_MI, HYBRID_CG, false, &|_| false, &|_| None);
        assert_eq!(ro.support(), LimitSupport::default());
    }

    #[test]
    fn v2_delegated_and_root_fallback() {
        let cg = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope\n";
        let mi = "40 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let own = PathBuf::from(
            "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope",
        );
        let read = |p: &Path| -> Option<String> {
            if p.ends_with("cgroup.subtree_control") && p.starts_with(&own) {
                Some("memory pids".into())
            } else if p.ends_with("cgroup.controllers") {
                Some("cpu memory pids".into())
            } else {
                None
            }
        };
        let l = Layout::from_parts(mi, cg, false, &|_| true, &read);
        assert_eq!(
            l,
            Layout::V2 {
                parent: own.join("airlock"),
                memory: true,
                pids: true,
                cpu: true
            }
        );

        // Not delegated: rootless gets nothing, root falls back to the hierarchy's airlock dir.
        let nothing =
            |_: &Path| -> Option<String> { Some("cpu memory pids".into()).filter(|_| false) };
        assert_eq!(
            Layout::from_parts(mi, cg, false, &|_| false, &nothing),
            Layout::None
        );
        let root_read = |p: &Path| -> Option<String> {
            p.ends_with("cgroup.controllers")
                .then(|| "memory pids".into())
        };
        assert_eq!(
            Layout::from_parts(mi, cg, true, &|_| false, &root_read),
            Layout::V2 {
                parent: PathBuf::from("/sys/fs/cgroup/airlock"),
                memory: true,
                pids: true,
                cpu: false
            }
        );
    }

    /// On a cgroup-v1 host, as root: a freshly forked child joins the sandbox's cgroup through
    /// the `tasks` files opened before the fork (writing `0`: itself, without the kernel's
    /// global lock), in every hierarchy, and the parent stays where it was.
    #[test]
    fn a_fresh_child_joins_its_v1_cgroups_by_itself() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("AIRLOCK_E2E").is_none(),
                "AIRLOCK_E2E is set but the tests are not running as root"
            );
            eprintln!("note: not root, cgroup test not run");
            return;
        }
        let layout = Layout::detect();
        if !matches!(layout, Layout::V1 { .. }) {
            eprintln!("note: not a cgroup v1 host: children join through CLONE_INTO_CGROUP-less writes by the parent");
            return;
        }
        let leaf = leaf_name("selfjoin", &format!("t{}", std::process::id()));
        let r = Resources {
            memory: Some(airlock_model::policy::ByteSize(256 << 20)),
            pids: Some(64),
            ..Resources::default()
        };
        let cg = Cgroup::create(&layout, &leaf, &r)
            .expect("create")
            .expect("a cgroup on this host");
        let join = cg.self_join();
        assert!(
            join.rest.is_empty(),
            "root opens every v1 tasks file: {join:?}"
        );
        assert_eq!(join.fds.len(), cg.dirs.len());
        let (ready_r, ready_w) = nix::unistd::pipe().expect("pipe");
        let (hold_r, hold_w) = nix::unistd::pipe().expect("pipe");
        // SAFETY: the child only makes system calls (write, read, _exit) before it exits.
        let child = match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                drop(hold_w);
                let ok = join.join().is_ok();
                let _ = nix::unistd::write(&ready_w, &[u8::from(ok)]);
                let mut b = [0u8; 1];
                let _ = nix::unistd::read(&hold_r, &mut b);
                // SAFETY: leaving the forked child without running the test harness's code.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => child,
        };
        drop(join);
        drop(ready_w);
        drop(hold_r);
        let mut b = [0u8; 1];
        let got = nix::unistd::read(&ready_r, &mut b);
        let theirs = fs::read_to_string(format!("/proc/{child}/cgroup")).unwrap_or_default();
        let ours = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        drop(hold_w);
        let _ = nix::sys::wait::waitpid(child, None);
        cg.destroy();
        assert_eq!(got.ok(), Some(1), "the child's join failed");
        for ctrl in ["memory", "pids"] {
            let line = |text: &str| {
                text.lines()
                    .find(|l| {
                        l.split(':')
                            .nth(1)
                            .is_some_and(|c| c.split(',').any(|c| c == ctrl))
                    })
                    .unwrap_or_default()
                    .to_string()
            };
            assert!(
                line(&theirs).ends_with(&format!("/{leaf}")),
                "{ctrl}: {theirs}"
            );
            assert!(
                !line(&ours).contains(&leaf),
                "{ctrl}: the parent moved: {ours}"
            );
        }
    }
}
