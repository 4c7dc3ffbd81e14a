//! Host capability probing for `airlock doctor`: every capability the product uses is tried
//! for real (namespaces are created, /proc and overlays mounted, a seccomp filter installed,
//! the Landlock ABI queried, a cgroup child created…) in bounded, forked children that leave
//! nothing behind. Each check becomes a [`Row`].
//!
//! [`cgroups()`] is reusable by the runtime: it reports the detected cgroup layout without
//! forking.

pub mod cgroups;
mod child;
mod egress;
mod kernel;
mod ns;
mod raw;
mod vm;

pub use cgroups::{
    analyze as analyze_cgroups, cgroup_mounts, cgroups, own_dir as cgroup_own_dir, parse_mountinfo,
    parse_proc_cgroup, CgroupFs, CgroupMount, CgroupReport, CgroupVersion, ControllerReport,
    Hierarchy, Membership, MountEntry, RealFs, UnifiedReport, CONTROLLERS,
};

use serde::Serialize;
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How well a capability works on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works partly, or is missing but only an optional feature needs it.
    Degraded,
    /// Missing and needed.
    Missing,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Missing => "MISSING",
        })
    }
}

/// One line of `airlock doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// Stable identifier (`userns`, `cgroups`, `kvm`, …).
    pub id: String,
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// The exact fix, for rows that are not ok.
    pub fix: Option<String>,
    /// What in airlock uses it (`info` for informational rows).
    pub needed_for: String,
}

impl Row {
    fn new(
        id: &str,
        name: &str,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
        needed_for: &str,
    ) -> Row {
        Row {
            id: id.into(),
            name: name.into(),
            status,
            detail: detail.into(),
            fix,
            needed_for: needed_for.into(),
        }
    }
    fn info(id: &str, name: &str, detail: impl Into<String>) -> Row {
        Row::new(id, name, Status::Ok, detail, None, "info")
    }
}

/// Row ids the default path (container backend: user namespaces, mount/pid namespaces with a
/// fresh /proc, seccomp) depends on.
pub const DEFAULT_PATH: &[&str] = &["userns", "mount_pid_proc", "seccomp", "overlayfs"];

/// Every default-path row is present and ok.
pub fn default_path_ok(rows: &[Row]) -> bool {
    DEFAULT_PATH
        .iter()
        .all(|id| rows.iter().any(|r| r.id == *id && r.status == Status::Ok))
}

/// Facts about the calling process and host the probes share.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    pub euid: u32,
    pub egid: u32,
    pub root: bool,
    /// The uid map is not the identity: we run inside a user namespace, `outside` being the
    /// host-side id of our uid 0 when mapped.
    pub userns_outside_root: Option<Option<u32>>,
    /// Hints that we run inside a container (/.dockerenv, …).
    pub container: Vec<String>,
    pub mountinfo: String,
}

impl Host {
    fn detect() -> Host {
        let euid = nix::unistd::geteuid().as_raw();
        Host {
            euid,
            egid: nix::unistd::getegid().as_raw(),
            root: euid == 0,
            userns_outside_root: userns_of(
                &fs::read_to_string("/proc/self/uid_map").unwrap_or_default(),
            ),
            container: container_hints(),
            mountinfo: fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
        }
    }

    /// Root of the initial user namespace (real host root), not root inside a user namespace.
    pub fn host_root(&self) -> bool {
        self.root && self.userns_outside_root.is_none()
    }

    /// Filesystem type and mount point holding `path` (longest matching mount point).
    pub fn fs_of(&self, path: &Path) -> Option<(String, PathBuf)> {
        cgroups::parse_mountinfo(&self.mountinfo)
            .into_iter()
            .filter(|m| path.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.as_os_str().len())
            .map(|m| (m.fstype, m.mount_point))
    }
}

/// Run every probe. Takes well under a second on a normal host; every child process is bounded
/// by a deadline and everything created is removed before returning.
pub fn probe_all() -> Vec<Row> {
    let host = Host::detect();
    let mut rows = vec![
        kernel_row(),
        arch_row(),
        user_row(&host),
        environment_row(&host),
    ];
    rows.extend(ns::rows(&host));
    rows.push(kernel::seccomp_row(&host));
    rows.push(kernel::landlock_row());
    rows.push(cgroups_row(&cgroups(), &crate::cgroup::Layout::detect()));
    rows.push(egress::egress_row(&host));
    rows.push(kernel::nftables_row(&host));
    rows.push(not_built(vm::kvm_row()));
    rows.push(not_built(vm::qemu_row()));
    rows.push(vm::net_helpers_row());
    rows
}

/// A row about a backend this build does not have (the microvm backend): informational, what
/// was found kept as a note, never a failure nor a capability claim.
fn not_built(r: Row) -> Row {
    Row::info(
        &r.id,
        &r.name,
        format!(
            "not built yet: the microvm backend does not exist in this build, nothing uses this (found: {})",
            r.detail
        ),
    )
}

/// `layout` is what `airlock run` will actually use; it can do better than the own-cgroup view
/// (root on a v2 host whose own cgroup holds processes uses `/sys/fs/cgroup/airlock`).
fn cgroups_row(r: &CgroupReport, layout: &crate::cgroup::Layout) -> Row {
    let (mut detail, mut fix) = cgroups::describe(r);
    let s = layout.support();
    // pids are enforced without a pids controller too (RLIMIT_NPROC, per user namespace).
    let runtime_ok = s.memory && s.cpu;
    if !r.all_usable() && runtime_ok {
        if let crate::cgroup::Layout::V2 { parent, .. } = layout {
            detail.push_str(&format!(
                "; as root, sandbox cgroups go under {} instead",
                parent.display()
            ));
            fix = None;
        }
    }
    let status = if r.unenforced().is_empty() || runtime_ok {
        Status::Ok
    } else {
        Status::Degraded
    };
    Row::new(
        "cgroups",
        "cgroups (memory, pids, cpu)",
        status,
        detail,
        fix,
        "--memory/--cpus limits (--require-limits refuses without them); --pids is also capped by RLIMIT_NPROC",
    )
}

fn kernel_row() -> Row {
    let release = read_trim("/proc/sys/kernel/osrelease").unwrap_or_else(|| "?".into());
    let version = read_trim("/proc/sys/kernel/version").unwrap_or_default();
    let (maj, min) = kernel_version(&release);
    let detail = format!("Linux {release} {version}").trim_end().to_string();
    if (maj, min) < (5, 12) && maj > 0 {
        return Row::new(
            "kernel",
            "kernel",
            Status::Degraded,
            format!("{detail}: older than 5.12 (overlayfs in user namespaces needs 5.11, idmapped mounts 5.12, Landlock 5.13)"),
            Some("upgrade to a Linux 5.13+ kernel (6.x recommended)".into()),
            "everything",
        );
    }
    Row::info("kernel", "kernel", detail)
}

/// (major, minor) of a release string such as `6.18.44-fc-v769`.
pub fn kernel_version(release: &str) -> (u32, u32) {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let maj = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let min = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (maj, min)
}

fn arch_row() -> Row {
    let arch =
        read_trim("/proc/sys/kernel/arch").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    Row::info("arch", "architecture", arch)
}

fn user_row(h: &Host) -> Row {
    let name = user_name(h.euid);
    let detail = if h.host_root() {
        "root (uid 0): rootful sandboxes (the sandbox's users map to unprivileged host ids)"
            .to_string()
    } else if h.root {
        let outside = h
            .userns_outside_root
            .flatten()
            .map(|u| format!(" (host uid {u})"))
            .unwrap_or_default();
        format!("root inside a user namespace{outside}: host-level privileges (cgroups, idmapped mounts of host filesystems) are not available")
    } else {
        format!(
            "rootless (uid {}{}, gid {}): sandboxes run in user namespaces",
            h.euid,
            name.map(|n| format!(" {n}")).unwrap_or_default(),
            h.egid
        )
    };
    Row::info("user", "running as", detail)
}

/// `None` for the identity map of the initial user namespace; otherwise `Some(host id of
/// uid 0, if mapped)`.
pub(crate) fn userns_of(uid_map: &str) -> Option<Option<u32>> {
    let lines: Vec<Vec<u64>> = uid_map
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .collect();
    if lines.len() == 1 && lines[0] == [0, 0, 4_294_967_295] || uid_map.trim().is_empty() {
        return None;
    }
    Some(
        lines
            .iter()
            .find(|l| l.len() == 3 && l[0] == 0 && l[2] > 0)
            .and_then(|l| u32::try_from(l[1]).ok()),
    )
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

fn container_hints() -> Vec<String> {
    let mut hints = vec![];
    for f in ["/.dockerenv", "/run/.containerenv"] {
        if Path::new(f).exists() {
            hints.push(f.to_string());
        }
    }
    if let Ok(env) = fs::read("/proc/1/environ") {
        for var in env.split(|b| *b == 0) {
            if let Some(v) = var.strip_prefix(b"container=") {
                hints.push(format!("container={}", String::from_utf8_lossy(v)));
            }
        }
    }
    let cg = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for word in ["docker", "kubepods", "containerd", "libpod", "lxc"] {
        if cg.contains(word) {
            hints.push(format!("cgroup path mentions {word}"));
        }
    }
    hints
}

fn environment_row(h: &Host) -> Row {
    let mut parts = vec![];
    if h.container.is_empty() {
        parts.push("no container detected".to_string());
    } else {
        parts.push(format!("container hints: {}", h.container.join(", ")));
    }
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && l.split_whitespace().any(|w| w == "hypervisor"))
    {
        parts.push("virtual machine (cpu hypervisor flag)".to_string());
    }
    Row::info("environment", "environment", parts.join("; "))
}

// ---------------------------------------------------------------------------------------------
// Small shared helpers.

pub(crate) fn read_trim(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// `EPERM (Operation not permitted)`.
pub(crate) fn errstr(errno: i32) -> String {
    let e = nix::errno::Errno::from_raw(errno);
    format!("{e:?} ({})", e.desc())
}

/// Find an executable on $PATH, then in the usual sbin/bin directories (ordinary users'
/// $PATH often lacks /usr/sbin, where nft lives).
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ];
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Run a program with a deadline; its combined stdout+stderr (stdout first), or why not.
pub(crate) fn run_bounded(
    program: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<(i32, String), String> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C")
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut s);
        }
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut s);
        }
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                return Err(format!(
                    "{} did not finish within {} s",
                    program.display(),
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("waiting for {}: {e}", program.display())),
        }
    };
    let bytes = reader.join().unwrap_or_default();
    Ok((
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

/// A private scratch directory for probes, removed (with whatever the probes left in it,
/// including overlay work dirs with mode 000) on drop.
pub(crate) struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new() -> std::io::Result<Scratch> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("airlock-doctor-{}-{nanos}", std::process::id()));
        fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Scratch { path })
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
    pub fn mkdir(&self, p: &str) -> std::io::Result<PathBuf> {
        let d = self.join(p);
        fs::create_dir(&d)?;
        Ok(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove_tree(&self.path);
    }
}

fn remove_tree(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::symlink_metadata(p) else {
        return;
    };
    if meta.is_dir() {
        let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
        if let Ok(rd) = fs::read_dir(p) {
            for e in rd.flatten() {
                remove_tree(&e.path());
            }
        }
        let _ = fs::remove_dir(p);
    } else {
        let _ = fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests;
