//! Cgroup layout detection for `doctor` and the runtime: which hierarchy (v1, v2, hybrid) holds
//! the memory, pids and cpu controllers, where they are mounted, this process's own cgroup in
//! each, and whether a child cgroup can really be created there (mkdir + rmdir of a uniquely
//! named directory under the own cgroup — sandbox cgroups live under airlock's own cgroup).
//!
//! [`analyze`] is the pure core (files and directory creation behind [`CgroupFs`]);
//! [`cgroups`] runs it on the live system. No forking, a handful of reads and mkdirs.

pub use crate::cgroup::procfs::{
    cgroup_mounts, own_dir, parse_mountinfo, parse_proc_cgroup, unescape_mountinfo, CgroupMount,
    Membership, MountEntry,
};
use serde::Serialize;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The controllers airlock enforces limits with.
pub const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// No cgroup filesystem mounted at all.
    None,
    /// Only legacy (v1) hierarchies.
    V1,
    /// Only the unified (v2) hierarchy.
    V2,
    /// v1 controller hierarchies plus a cgroup2 mount (usually /sys/fs/cgroup/unified).
    Hybrid,
}

impl CgroupVersion {
    pub fn label(self) -> &'static str {
        match self {
            CgroupVersion::None => "none",
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
            CgroupVersion::Hybrid => "hybrid (v1 controllers + cgroup2)",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hierarchy {
    V1,
    V2,
}

/// What one controller looks like from this process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControllerReport {
    pub name: String,
    /// Which hierarchy carries it; `None` when it is nowhere to be found.
    pub hierarchy: Option<Hierarchy>,
    pub mount_point: Option<PathBuf>,
    /// Our cgroup path for it, as /proc/self/cgroup says.
    pub own_path: Option<String>,
    /// That cgroup's directory in this mount namespace.
    pub own_dir: Option<PathBuf>,
    /// mkdir + rmdir of a child under `own_dir` worked.
    pub child_creatable: bool,
    /// Limits with this controller would be enforced for sandboxes created under `own_dir`.
    pub usable: bool,
    /// Why it is not usable, when it is not.
    pub problem: Option<String>,
}

/// The unified (v2) hierarchy as this process sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnifiedReport {
    pub mount_point: PathBuf,
    pub own_path: Option<String>,
    pub own_dir: Option<PathBuf>,
    /// `cgroup.controllers` of the own cgroup: what it may hand down.
    pub controllers: Vec<String>,
    /// `cgroup.subtree_control` of the own cgroup: what its children actually get.
    pub subtree_control: Vec<String>,
    pub child_creatable: bool,
    /// The own cgroup is delegated to the current (non-root) user: the directory and its
    /// cgroup.procs / cgroup.subtree_control belong to us. Always true for root when writable.
    pub delegated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupReport {
    pub version: CgroupVersion,
    pub mounts: Vec<CgroupMount>,
    pub membership: Vec<Membership>,
    /// Present when a cgroup2 filesystem is mounted (v2 or hybrid).
    pub unified: Option<UnifiedReport>,
    /// memory, pids, cpu — in that order.
    pub controllers: Vec<ControllerReport>,
    pub root: bool,
}

impl CgroupReport {
    pub fn controller(&self, name: &str) -> Option<&ControllerReport> {
        self.controllers.iter().find(|c| c.name == name)
    }

    /// memory, pids and cpu limits would all be enforced.
    pub fn all_usable(&self) -> bool {
        self.controllers.iter().all(|c| c.usable)
    }

    /// Names of the controllers that are not usable.
    pub fn unusable(&self) -> Vec<&str> {
        self.controllers
            .iter()
            .filter(|c| !c.usable)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// Limits that would not be enforced: the unusable controllers but pids, which RLIMIT_NPROC
    /// (counted per user namespace) enforces without its controller.
    pub fn unenforced(&self) -> Vec<&str> {
        let mut u = self.unusable();
        u.retain(|c| *c != "pids");
        u
    }
}

/// The filesystem questions [`analyze`] asks, so tests can answer them.
pub trait CgroupFs {
    fn read(&self, path: &Path) -> Option<String>;
    /// Create and remove a uniquely named child directory of `dir`.
    fn try_child(&self, dir: &Path) -> Result<(), String>;
    fn owner(&self, path: &Path) -> Option<u32>;
}

/// The live system.
pub struct RealFs;

impl CgroupFs for RealFs {
    fn read(&self, path: &Path) -> Option<String> {
        fs::read_to_string(path).ok()
    }

    fn try_child(&self, dir: &Path) -> Result<(), String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "airlock-probe-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let child = dir.join(name);
        fs::create_dir(&child).map_err(|e| e.to_string())?;
        // A fresh, empty cgroup can always be removed; retry briefly in case the kernel is
        // still tearing down a css.
        for _ in 0..20 {
            match fs::remove_dir(&child) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        fs::remove_dir(&child)
            .map_err(|e| format!("created but could not remove {}: {e}", child.display()))
    }

    fn owner(&self, path: &Path) -> Option<u32> {
        fs::metadata(path).ok().map(|m| m.uid())
    }
}

/// Detect the live layout (reads /proc/self/{mountinfo,cgroup}, tries one mkdir+rmdir per
/// distinct own-cgroup directory).
pub fn cgroups() -> CgroupReport {
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let cg = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let euid = nix::unistd::geteuid().as_raw();
    analyze(&mi, &cg, euid, &RealFs)
}

fn words(s: Option<String>) -> Vec<String> {
    s.map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The pure core: mountinfo and /proc/self/cgroup text, our euid, and the filesystem.
pub fn analyze(mountinfo: &str, proc_cgroup: &str, euid: u32, fsys: &dyn CgroupFs) -> CgroupReport {
    let mounts = cgroup_mounts(&parse_mountinfo(mountinfo));
    let membership = parse_proc_cgroup(proc_cgroup);
    let root = euid == 0;
    let has_v1 = mounts
        .iter()
        .any(|m| m.fstype == "cgroup" && m.controllers.iter().any(|c| !c.starts_with("name=")));
    let has_v2 = mounts.iter().any(|m| m.fstype == "cgroup2");
    let version = match (has_v1, has_v2) {
        (true, true) => CgroupVersion::Hybrid,
        (true, false) => CgroupVersion::V1,
        (false, true) => CgroupVersion::V2,
        // Only named v1 hierarchies (name=systemd) and nothing else: still v1, no controllers.
        (false, false) if mounts.iter().any(|m| m.fstype == "cgroup") => CgroupVersion::V1,
        (false, false) => CgroupVersion::None,
    };

    // mkdir+rmdir results per directory (co-mounted controllers share one).
    let mut tried: Vec<(PathBuf, Result<(), String>)> = vec![];
    let mut try_child = |dir: &Path| -> Result<(), String> {
        if let Some((_, r)) = tried.iter().find(|(d, _)| d == dir) {
            return r.clone();
        }
        let r = fsys.try_child(dir);
        tried.push((dir.to_path_buf(), r.clone()));
        r
    };

    let v2_path = membership
        .iter()
        .find(|m| m.hierarchy_id == 0 && m.controllers.is_empty())
        .map(|m| m.path.clone());
    let unified = mounts
        .iter()
        .filter(|m| m.fstype == "cgroup2")
        .find_map(|m| {
            let dir = v2_path
                .as_deref()
                .and_then(|p| own_dir(&m.mount_point, &m.root, p));
            // Prefer the mount that shows our cgroup; fall back to the first one.
            dir.as_ref().map(|_| (m, dir.clone()))
        });
    let unified = unified
        .or_else(|| {
            mounts
                .iter()
                .find(|m| m.fstype == "cgroup2")
                .map(|m| (m, None))
        })
        .map(|(m, dir)| {
            let (controllers, subtree_control, child_creatable, delegated) = match &dir {
                Some(d) => {
                    let controllers = words(fsys.read(&d.join("cgroup.controllers")));
                    let subtree = words(fsys.read(&d.join("cgroup.subtree_control")));
                    let ok = try_child(d).is_ok();
                    let delegated = ok
                        && (root
                            || [
                                d.clone(),
                                d.join("cgroup.procs"),
                                d.join("cgroup.subtree_control"),
                            ]
                            .iter()
                            .all(|p| fsys.owner(p) == Some(euid)));
                    (controllers, subtree, ok, delegated)
                }
                None => (vec![], vec![], false, false),
            };
            UnifiedReport {
                mount_point: m.mount_point.clone(),
                own_path: v2_path.clone(),
                own_dir: dir,
                controllers,
                subtree_control,
                child_creatable,
                delegated,
            }
        });

    let mut controllers = vec![];
    for name in CONTROLLERS {
        // v1 first: a controller bound to a v1 hierarchy is not available on v2.
        let v1 = mounts
            .iter()
            .filter(|m| m.fstype == "cgroup" && m.controllers.iter().any(|c| c == name))
            .find_map(|m| {
                let own = membership
                    .iter()
                    .find(|x| x.controllers.iter().any(|c| c == name))?;
                Some((
                    m,
                    own.path.clone(),
                    own_dir(&m.mount_point, &m.root, &own.path),
                ))
            });
        let v1 = v1.or_else(|| {
            let m = mounts
                .iter()
                .find(|m| m.fstype == "cgroup" && m.controllers.iter().any(|c| c == name))?;
            Some((m, String::new(), None))
        });
        let report = if let Some((m, path, dir)) = v1 {
            let (child, problem) = match &dir {
                Some(d) => match try_child(d) {
                    Ok(()) => (true, None),
                    Err(e) => (false, Some(format!("cannot create a child cgroup: {e}"))),
                },
                None if path.is_empty() => {
                    (false, Some("not listed in /proc/self/cgroup".to_string()))
                }
                None => (
                    false,
                    Some(format!(
                        "own cgroup {path} is not visible under {}",
                        m.mount_point.display()
                    )),
                ),
            };
            ControllerReport {
                name: name.to_string(),
                hierarchy: Some(Hierarchy::V1),
                mount_point: Some(m.mount_point.clone()),
                own_path: (!path.is_empty()).then_some(path),
                own_dir: dir,
                child_creatable: child,
                usable: child,
                problem,
            }
        } else if let Some(u) = unified.as_ref().filter(|u| {
            // On a v2 host the controller is in the own cgroup's cgroup.controllers; on a hybrid
            // host it may also appear only at the cgroup2 root.
            u.controllers.iter().any(|c| c == name)
                || fsys
                    .read(&u.mount_point.join("cgroup.controllers"))
                    .is_some_and(|s| s.split_whitespace().any(|c| c == name))
        }) {
            let at_root = u.own_dir.as_deref() == Some(u.mount_point.as_path());
            let enabled = u.subtree_control.iter().any(|c| c == name);
            let available = u.controllers.iter().any(|c| c == name);
            let usable = u.child_creatable && (enabled || (at_root && available));
            let problem = if usable {
                None
            } else if u.own_dir.is_none() {
                Some("own v2 cgroup is not visible in this mount namespace".to_string())
            } else if !u.child_creatable {
                Some(if root {
                    "cannot create a child cgroup under the own cgroup".to_string()
                } else {
                    "the own cgroup is not delegated to this user (no child cgroups can be created)"
                        .to_string()
                })
            } else if !available {
                Some(format!("{name} is not available to the own cgroup (absent from its cgroup.controllers)"))
            } else {
                Some(format!(
                    "{name} is not enabled for children of the own cgroup (cgroup.subtree_control)"
                ))
            };
            ControllerReport {
                name: name.to_string(),
                hierarchy: Some(Hierarchy::V2),
                mount_point: Some(u.mount_point.clone()),
                own_path: u.own_path.clone(),
                own_dir: u.own_dir.clone(),
                child_creatable: u.child_creatable,
                usable,
                problem,
            }
        } else {
            ControllerReport {
                name: name.to_string(),
                hierarchy: None,
                mount_point: None,
                own_path: None,
                own_dir: None,
                child_creatable: false,
                usable: false,
                problem: Some("controller not mounted in any cgroup hierarchy".to_string()),
            }
        };
        controllers.push(report);
    }

    CgroupReport {
        version,
        mounts,
        membership,
        unified,
        controllers,
        root,
    }
}

/// Summary detail and fix for the doctor row.
pub(crate) fn describe(r: &CgroupReport) -> (String, Option<String>) {
    let mut parts = vec![r.version.label().to_string()];
    if let Some(u) = &r.unified {
        if r.version == CgroupVersion::Hybrid {
            parts.push(format!("cgroup2 at {}", u.mount_point.display()));
        } else {
            parts.push(format!(
                "own cgroup {} (controllers: {}; enabled for children: {}{})",
                u.own_path.as_deref().unwrap_or("?"),
                list_or_none(&u.controllers),
                list_or_none(&u.subtree_control),
                if !r.root && u.delegated {
                    "; delegated"
                } else {
                    ""
                }
            ));
        }
    }
    for c in &r.controllers {
        let place = match (&c.own_dir, &c.mount_point) {
            (Some(d), _) => d.display().to_string(),
            (None, Some(m)) => format!("{} (own cgroup not visible)", m.display()),
            (None, None) => "not mounted".to_string(),
        };
        let hier = match c.hierarchy {
            Some(Hierarchy::V1) => "v1",
            Some(Hierarchy::V2) => "v2",
            None => "-",
        };
        match (&c.problem, c.usable) {
            (_, true) => parts.push(format!("{} [{hier}] usable at {place}", c.name)),
            (Some(p), false) => {
                parts.push(format!("{} [{hier}] NOT usable at {place}: {p}", c.name))
            }
            (None, false) => parts.push(format!("{} [{hier}] NOT usable at {place}", c.name)),
        }
    }
    let mut detail = parts.join("; ");
    if r.all_usable() {
        return (detail, None);
    }
    let pids_note = if r.unusable().contains(&"pids") {
        " (pids limits are: RLIMIT_NPROC caps the sandbox's processes without the controller)"
    } else {
        ""
    };
    if r.unenforced().is_empty() {
        detail.push_str(&format!(" — all limits are enforced{pids_note}"));
        return (detail, None);
    }
    detail.push_str(&format!(
        " — {} limits would not be enforced{pids_note}",
        r.unenforced().join("/")
    ));
    let v2_like = r
        .controllers
        .iter()
        .any(|c| c.hierarchy == Some(Hierarchy::V2));
    let fix = match (r.version, r.root, v2_like) {
        (CgroupVersion::None, _, _) => "mount the cgroup filesystem: mount -t cgroup2 none /sys/fs/cgroup".to_string(),
        (_, false, true) => "run airlock in a delegated cgroup: systemd-run --user --scope -p Delegate=yes airlock …  (or under a slice with Delegate=yes); `--require-limits` refuses to run without them".to_string(),
        (_, true, true) => "enable the controllers for airlock's cgroup: run it in its own scope with systemd-run --scope -p Delegate=yes airlock …, or echo +memory +pids +cpu > <parent>/cgroup.subtree_control".to_string(),
        (_, false, false) => "cgroup v1 cannot be delegated to ordinary users: run airlock as root, or boot with systemd.unified_cgroup_hierarchy=1 (cgroup v2) and use systemd-run --user --scope -p Delegate=yes airlock …".to_string(),
        (_, true, false) if r.controllers.iter().any(|c| !c.usable && c.hierarchy.is_none()) => {
            "mount the missing v1 controllers (mount -t cgroup -o memory,pids,cpu …) or boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1)".to_string()
        }
        (_, true, false) => "give airlock a writable cgroup hierarchy: the cgroup filesystem is read-only or not ours here (typical inside containers — run the outer container with --privileged, or on a cgroup v2 host with --cgroupns=private and a delegated cgroup)".to_string(),
    };
    (detail, Some(fix))
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// This machine: v1 controllers each on its own mount, cgroup2 at /sys/fs/cgroup/unified,
    /// the memory controller placing us in /process_api/<id>.
    const HYBRID_MI: &str = "\
23 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
24 23 0:5 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CG: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/fd24c2989c4e9e215df70a762d9c6536
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

    /// A pure v1 host (CentOS 7 style), co-mounted cpu,cpuacct, inside a docker container
    /// without cgroupns: the mounts show the container's subtree.
    const V1_MI: &str = "\
600 580 0:60 /docker/abc123 /sys/fs/cgroup/cpu,cpuacct ro,nosuid,nodev,noexec,relatime master:12 - cgroup cgroup rw,cpu,cpuacct
601 580 0:61 /docker/abc123 /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:13 - cgroup cgroup rw,memory
602 580 0:62 /docker/abc123 /sys/fs/cgroup/pids ro,nosuid,nodev,noexec,relatime master:14 - cgroup cgroup rw,pids
603 580 0:63 /docker/abc123 /sys/fs/cgroup/systemd ro,nosuid,nodev,noexec,relatime master:9 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
";
    const V1_CG: &str = "\
11:pids:/docker/abc123
4:memory:/docker/abc123
3:cpu,cpuacct:/docker/abc123
1:name=systemd:/docker/abc123
";

    /// A systemd v2 desktop: user session in a delegated user@1000.service.
    const V2_MI: &str = "\
29 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
    const V2_CG: &str =
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-foot.scope\n";

    /// Answers from a table; records mkdir attempts.
    struct Fake {
        files: Vec<(&'static str, &'static str)>,
        writable: Vec<&'static str>,
        owner: u32,
        tried: RefCell<Vec<PathBuf>>,
    }

    impl CgroupFs for Fake {
        fn read(&self, p: &Path) -> Option<String> {
            self.files
                .iter()
                .find(|(f, _)| Path::new(f) == p)
                .map(|(_, c)| c.to_string())
        }
        fn try_child(&self, dir: &Path) -> Result<(), String> {
            self.tried.borrow_mut().push(dir.to_path_buf());
            if self.writable.iter().any(|w| Path::new(w) == dir) {
                Ok(())
            } else {
                Err("Permission denied (os error 13)".into())
            }
        }
        fn owner(&self, _: &Path) -> Option<u32> {
            Some(self.owner)
        }
    }

    fn fake(
        files: Vec<(&'static str, &'static str)>,
        writable: Vec<&'static str>,
        owner: u32,
    ) -> Fake {
        Fake {
            files,
            writable,
            owner,
            tried: RefCell::new(vec![]),
        }
    }

    #[test]
    fn parses_this_machines_hybrid_layout() {
        let mounts = cgroup_mounts(&parse_mountinfo(HYBRID_MI));
        assert_eq!(mounts.len(), 10);
        assert_eq!(
            mounts[3],
            CgroupMount {
                fstype: "cgroup".into(),
                mount_point: "/sys/fs/cgroup/memory".into(),
                root: "/".into(),
                controllers: vec!["memory".into()]
            }
        );
        assert_eq!(
            mounts[9],
            CgroupMount {
                fstype: "cgroup2".into(),
                mount_point: "/sys/fs/cgroup/unified".into(),
                root: "/".into(),
                controllers: vec![]
            }
        );
        let cg = parse_proc_cgroup(HYBRID_CG);
        assert_eq!(cg.len(), 10);
        assert_eq!(
            cg[5],
            Membership {
                hierarchy_id: 4,
                controllers: vec!["memory".into()],
                path: "/process_api/fd24c2989c4e9e215df70a762d9c6536".into()
            }
        );
        assert_eq!(
            cg[9],
            Membership {
                hierarchy_id: 0,
                controllers: vec![],
                path: "/".into()
            }
        );
    }

    #[test]
    fn hybrid_as_root_uses_v1_controllers_under_own_cgroups() {
        let fs = fake(
            vec![
                ("/sys/fs/cgroup/unified/cgroup.controllers", ""),
                ("/sys/fs/cgroup/unified/cgroup.subtree_control", ""),
            ],
            vec![
                "/sys/fs/cgroup/memory/process_api/fd24c2989c4e9e215df70a762d9c6536",
                "/sys/fs/cgroup/pids",
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/unified",
            ],
            0,
        );
        let r = analyze(HYBRID_MI, HYBRID_CG, 0, &fs);
        assert_eq!(r.version, CgroupVersion::Hybrid);
        assert!(r.all_usable(), "{r:#?}");
        let mem = r.controller("memory").expect("memory");
        assert_eq!(
            *mem,
            ControllerReport {
                name: "memory".into(),
                hierarchy: Some(Hierarchy::V1),
                mount_point: Some("/sys/fs/cgroup/memory".into()),
                own_path: Some("/process_api/fd24c2989c4e9e215df70a762d9c6536".into()),
                own_dir: Some(
                    "/sys/fs/cgroup/memory/process_api/fd24c2989c4e9e215df70a762d9c6536".into()
                ),
                child_creatable: true,
                usable: true,
                problem: None,
            }
        );
        assert_eq!(
            r.controller("cpu").and_then(|c| c.own_dir.clone()),
            Some(PathBuf::from("/sys/fs/cgroup/cpu"))
        );
        let u = r.unified.as_ref().expect("unified");
        assert_eq!(u.mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(u.own_dir, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert!(u.controllers.is_empty());
        // Never at a path outside the own cgroups; each distinct directory tried once.
        assert_eq!(fs.tried.borrow().len(), 4);
        let (detail, fix) = describe(&r);
        assert!(detail.starts_with("hybrid"), "{detail}");
        assert_eq!(fix, None);
    }

    #[test]
    fn hybrid_rootless_is_degraded_with_v1_fix() {
        let fs = fake(vec![], vec![], 1000);
        let r = analyze(HYBRID_MI, HYBRID_CG, 1000, &fs);
        assert_eq!(r.version, CgroupVersion::Hybrid);
        assert!(!r.all_usable());
        assert_eq!(r.unusable(), vec!["memory", "pids", "cpu"]);
        let (detail, fix) = describe(&r);
        assert!(
            detail.contains("memory/cpu limits would not be enforced (pids limits are: RLIMIT_NPROC caps the sandbox's processes without the controller)"),
            "{detail}"
        );
        assert!(fix.expect("fix").contains("cgroup v1 cannot be delegated"));
    }

    #[test]
    fn v1_in_container_strips_the_bind_mounted_root() {
        let fs = fake(
            vec![],
            vec!["/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"],
            0,
        );
        let r = analyze(V1_MI, V1_CG, 0, &fs);
        assert_eq!(r.version, CgroupVersion::V1);
        assert!(r.unified.is_none());
        let cpu = r.controller("cpu").expect("cpu");
        assert_eq!(
            cpu.mount_point,
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            cpu.own_dir,
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert!(!cpu.usable);
        assert!(r.controller("memory").is_some_and(|c| c.usable));
        assert_eq!(r.unusable(), vec!["cpu"]);
        // name=systemd and release_agent= are not controllers
        assert_eq!(r.mounts[3].controllers, vec!["name=systemd".to_string()]);
    }

    #[test]
    fn v2_delegated_user_scope_is_usable() {
        let own =
            "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/app-foot.scope";
        let fs = fake(
            vec![
                ("/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/app-foot.scope/cgroup.controllers", "cpu memory pids"),
                ("/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/app-foot.scope/cgroup.subtree_control", "cpu memory pids"),
            ],
            vec![own],
            1000,
        );
        let r = analyze(V2_MI, V2_CG, 1000, &fs);
        assert_eq!(r.version, CgroupVersion::V2);
        let u = r.unified.as_ref().expect("unified");
        assert!(u.delegated && u.child_creatable);
        assert_eq!(u.own_dir, Some(PathBuf::from(own)));
        assert!(r.all_usable(), "{r:#?}");
        assert_eq!(
            r.controller("pids").and_then(|c| c.hierarchy),
            Some(Hierarchy::V2)
        );
    }

    #[test]
    fn v2_undelegated_rootless_is_degraded_with_systemd_run_fix() {
        let fs = fake(
            vec![
                ("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc"),
                ("/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/app-foot.scope/cgroup.controllers", "cpu memory pids"),
                ("/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/app-foot.scope/cgroup.subtree_control", ""),
            ],
            vec![],
            0,
        );
        let r = analyze(V2_MI, V2_CG, 1000, &fs);
        assert!(!r.all_usable());
        assert!(!r.unified.as_ref().expect("unified").delegated);
        assert_eq!(
            r.controller("memory")
                .and_then(|c| c.problem.clone())
                .as_deref(),
            Some("the own cgroup is not delegated to this user (no child cgroups can be created)")
        );
        let (_, fix) = describe(&r);
        assert!(fix
            .expect("fix")
            .contains("systemd-run --user --scope -p Delegate=yes"));
    }

    #[test]
    fn v2_writable_but_not_enabled_for_children() {
        let own =
            "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/app-foot.scope";
        let fs = fake(
            vec![
                ("/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/app-foot.scope/cgroup.controllers", "memory pids"),
                ("/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/app-foot.scope/cgroup.subtree_control", "pids"),
            ],
            vec![own],
            1000,
        );
        let r = analyze(V2_MI, V2_CG, 1000, &fs);
        assert!(r.controller("pids").is_some_and(|c| c.usable));
        assert_eq!(
            r.controller("memory")
                .and_then(|c| c.problem.clone())
                .as_deref(),
            Some("memory is not enabled for children of the own cgroup (cgroup.subtree_control)")
        );
        assert_eq!(r.controller("cpu").and_then(|c| c.hierarchy), None);
    }

    #[test]
    fn v2_cgroupns_root_and_invisible_paths() {
        // Inside a container with its own cgroup namespace: we are at "/" of the mount.
        let fs = fake(
            vec![
                ("/sys/fs/cgroup/cgroup.controllers", "cpu memory pids"),
                ("/sys/fs/cgroup/cgroup.subtree_control", ""),
            ],
            vec!["/sys/fs/cgroup"],
            0,
        );
        let r = analyze(V2_MI, "0::/\n", 0, &fs);
        assert!(r.all_usable(), "{r:#?}");
        // A path outside the namespace root cannot be resolved.
        assert_eq!(
            own_dir(Path::new("/sys/fs/cgroup"), "/", "/../../user.slice"),
            None
        );
        assert_eq!(
            own_dir(
                Path::new("/sys/fs/cgroup/memory"),
                "/docker/x",
                "/docker/xy"
            ),
            None
        );
        assert_eq!(
            own_dir(
                Path::new("/sys/fs/cgroup/memory"),
                "/docker/x",
                "/docker/x/sub"
            ),
            Some(PathBuf::from("/sys/fs/cgroup/memory/sub"))
        );
    }

    #[test]
    fn no_cgroups_at_all() {
        let fs = fake(vec![], vec![], 0);
        let r = analyze("23 1 254:0 / / rw - ext4 /dev/vda rw\n", "", 0, &fs);
        assert_eq!(r.version, CgroupVersion::None);
        assert!(r
            .controllers
            .iter()
            .all(|c| !c.usable && c.hierarchy.is_none()));
        assert!(describe(&r).1.expect("fix").contains("mount -t cgroup2"));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(
            unescape_mountinfo("/mnt/with\\040space\\011tab\\134"),
            "/mnt/with space\ttab\\"
        );
        assert_eq!(unescape_mountinfo("/trailing\\04"), "/trailing\\04");
        let m = parse_mountinfo("50 23 0:40 / /mnt/a\\040b rw - cgroup2 none rw\ngarbage line\n");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/a b"));
    }
}
