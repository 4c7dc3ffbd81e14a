//! The calling process and host as the probes see them, and the small tools they share
//! (reading /proc files, finding and running programs with a deadline, a scratch directory).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    pub(crate) fn detect() -> Host {
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
        crate::cgroup::procfs::parse_mountinfo(&self.mountinfo)
            .into_iter()
            .filter(|m| path.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.as_os_str().len())
            .map(|m| (m.fstype, m.mount_point))
    }
}

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

pub(crate) fn container_hints() -> Vec<String> {
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
