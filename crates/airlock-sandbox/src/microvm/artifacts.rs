//! What a microVM boots, built once and cached, each under a content key: the guest kernel
//! (an extracted vmlinux), the initramfs (airlock's guest init and the kernel modules it
//! loads) and the root image of `image = "host"` (an erofs image of the host's /usr, the
//! root's symlinks and the curated /etc). The cache is shared by every state directory of a
//! user (`$AIRLOCK_CACHE_DIR`, else `$XDG_CACHE_HOME/airlock`, else `~/.cache/airlock`):
//! building the root image takes a while, and nothing in it is per sandbox.

use super::kernel::{self, Kernel};
use airlock_model::plan::{ETC_ALLOWLIST, ROOT_CANDIDATES};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Kernel modules the guest init loads (with their dependencies, from modules.dep), in this
/// order; those built into the kernel are skipped.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "virtio_net",
    "erofs",
    "overlay",
];

/// Modules the guest init loads only for a job with a workspace disk (a clone workspace's
/// ext4 image), from `/modules/disk`: a boot without one does not pay for them.
pub const DISK_MODULES: &[&str] = &["ext4"];

/// The microVM artifact cache.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("AIRLOCK_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(|x| PathBuf::from(x).join("airlock"))
        })
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache/airlock"))
        })
        .unwrap_or_else(|| PathBuf::from("/var/cache/airlock"));
    base.join("microvm")
}

/// FNV-1a, 64 bits: content keys of cache entries (not a security boundary: the cache is the
/// user's own).
pub fn key(parts: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.iter().chain(b"\0") {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn stat_key(p: &Path) -> String {
    match fs::symlink_metadata(p) {
        Ok(m) => format!("{}:{}:{}:{}", p.display(), m.ino(), m.size(), m.mtime()),
        Err(_) => format!("{}:-", p.display()),
    }
}

/// Serialize builders of one cache entry across processes (tests build in parallel).
struct BuildLock(#[allow(dead_code)] nix::fcntl::Flock<fs::File>);

fn lock(path: &Path) -> Result<BuildLock, String> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map(BuildLock)
        .map_err(|(_, e)| format!("lock {}: {e}", path.display()))
}

/// Make `dir/name` with `build` unless it exists: built under a temporary name, published by
/// rename, world-readable (QEMU reads it as the sandbox's unprivileged user).
fn cached(
    dir: &Path,
    name: &str,
    build: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    let path = dir.join(name);
    if path.exists() {
        return Ok(());
    }
    let _lock = lock(&dir.join(format!(".{name}.lock")))?;
    if path.exists() {
        return Ok(());
    }
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    build(&tmp).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let _ = fs::remove_file(dir.join(format!(".{name}.lock")));
    Ok(())
}

pub fn ensure_dir(dir: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// The extracted vmlinux of `k`, in the cache; returns its file name.
pub fn vmlinux(dir: &Path, k: &Kernel) -> Result<String, String> {
    let name = format!(
        "vmlinux-{}-{}",
        k.release,
        key(&[stat_key(&k.image).as_bytes()])
    );
    cached(dir, &name, |tmp| {
        let bz = fs::read(&k.image).map_err(|e| format!("{}: {e}", k.image.display()))?;
        let elf = kernel::extract(&bz).map_err(|e| format!("{}: {e}", k.image.display()))?;
        fs::write(tmp, elf).map_err(|e| format!("{}: {e}", tmp.display()))
    })?;
    Ok(name)
}

/// The modules to load for `release`, dependencies first (paths under /lib/modules/RELEASE).
pub fn module_list(release: &str) -> Result<Vec<PathBuf>, String> {
    module_list_of(release, GUEST_MODULES)
}

/// The modules for `wants` and their dependencies, in load order.
pub fn module_list_of(release: &str, wants: &[&str]) -> Result<Vec<PathBuf>, String> {
    let root = Path::new("/lib/modules").join(release);
    let dep = fs::read_to_string(root.join("modules.dep"))
        .map_err(|e| format!("{}/modules.dep: {e}", root.display()))?;
    let deps: Vec<(&str, Vec<&str>)> = dep
        .lines()
        .filter_map(|l| {
            let (m, d) = l.split_once(':')?;
            Some((m, d.split_whitespace().collect()))
        })
        .collect();
    let builtin = fs::read_to_string(root.join("modules.builtin")).unwrap_or_default();
    let stem = |p: &str| -> String {
        let f = p.rsplit('/').next().unwrap_or(p);
        f.split(".ko").next().unwrap_or(f).replace('-', "_")
    };
    let mut order: Vec<String> = Vec::new();
    fn visit(
        m: &str,
        deps: &[(&str, Vec<&str>)],
        order: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), String> {
        if order.iter().any(|o| o == m) || depth > 32 {
            return Ok(());
        }
        let (_, ds) = deps
            .iter()
            .find(|(p, _)| *p == m)
            .ok_or_else(|| format!("{m} is not in modules.dep"))?;
        // modules.dep lists the dependencies in the order modprobe unloads them: load the
        // last first.
        for d in ds.iter().rev() {
            visit(d, deps, order, depth + 1)?;
        }
        order.push(m.to_string());
        Ok(())
    }
    for want in wants {
        let Some((path, _)) = deps.iter().find(|(p, _)| stem(p) == *want) else {
            if builtin.lines().any(|l| stem(l) == *want) {
                continue;
            }
            return Err(format!(
                "kernel {release} has no module {want} and does not build it in"
            ));
        };
        visit(path, &deps, &mut order, 0)?;
    }
    Ok(order.into_iter().map(|m| root.join(m)).collect())
}

/// A module file's bytes, decompressed (the guest's init loads plain ELF objects).
fn module_bytes(p: &Path) -> Result<Vec<u8>, String> {
    let data = fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
    let tool = match ext {
        "xz" => "xz",
        "zst" => "zstd",
        "gz" => "gzip",
        _ => return Ok(data),
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(p)
        .output()
        .map_err(|e| format!("{tool} -dc {}: {e}", p.display()))?;
    if !out.status.success() {
        return Err(format!("{tool} -dc {}: failed", p.display()));
    }
    Ok(out.stdout)
}

/// One entry of a cpio "newc" archive.
fn cpio_entry(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8], ino: u32) {
    let namesize = name.len() + 1;
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
        0, 0, 1, 0, data.len(), 0, 0, 0, 0, 0
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The initramfs: /init (the guest helper, static), /modules/NN-NAME.ko in load order and
/// /modules/disk/NN-NAME.ko (loaded for a workspace disk only).
pub fn initrd(dir: &Path, guest: &[u8], k: &Kernel) -> Result<String, String> {
    let mods = module_list(&k.release)?;
    let disk: Vec<PathBuf> = module_list_of(&k.release, DISK_MODULES)?
        .into_iter()
        .filter(|m| !mods.contains(m))
        .collect();
    let mut parts: Vec<Vec<u8>> = vec![guest.to_vec(), k.release.as_bytes().to_vec()];
    parts.extend(mods.iter().map(|m| stat_key(m).into_bytes()));
    parts.push(b"disk".to_vec());
    parts.extend(disk.iter().map(|m| stat_key(m).into_bytes()));
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let name = format!("initrd-{}-{}", k.release, key(&refs));
    cached(dir, &name, |tmp| {
        let mut out = Vec::new();
        let mut ino = 1;
        cpio_entry(&mut out, "init", 0o100_755, guest, ino);
        ino += 1;
        cpio_entry(&mut out, "modules", 0o040_755, &[], ino);
        ino += 1;
        cpio_entry(&mut out, "modules/disk", 0o040_755, &[], ino);
        let all = mods
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("modules/{i:02}"), m))
            .chain(
                disk.iter()
                    .enumerate()
                    .map(|(i, m)| (format!("modules/disk/{i:02}"), m)),
            );
        for (prefix, m) in all {
            ino += 1;
            let stem = m
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or("m")
                .split(".ko")
                .next()
                .unwrap_or("m")
                .to_string();
            let data = module_bytes(m)?;
            cpio_entry(
                &mut out,
                &format!("{prefix}-{stem}.ko"),
                0o100_644,
                &data,
                ino,
            );
        }
        cpio_entry(&mut out, "TRAILER!!!", 0, &[], 0);
        let mut f = fs::File::create(tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.write_all(&out)
            .map_err(|e| format!("{}: {e}", tmp.display()))
    })?;
    Ok(name)
}

/// What goes into the root image of `image = "host"`: the root's entries (/usr and the
/// merged-/usr symlinks) and the curated /etc — the same host view a container gets. As
/// mkfs.erofs options excluding everything else (regexes: it matches paths as it builds them,
/// `//proc` for a source of `/`).
fn excludes() -> Vec<String> {
    let escape = |n: &str| -> String {
        n.chars()
            .flat_map(|c| {
                let special = !(c.is_ascii_alphanumeric() || c == '_' || c == '-');
                special
                    .then_some('\\')
                    .into_iter()
                    .chain(std::iter::once(c))
            })
            .collect()
    };
    let mut ex = Vec::new();
    for (dir, keep) in [("/", ROOT_CANDIDATES), ("/etc", ETC_ALLOWLIST)] {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if keep.contains(&name.as_str()) || (dir == "/" && name == "etc") {
                continue;
            }
            let prefix = if dir == "/" { "" } else { "etc/+" };
            ex.push(format!("--exclude-regex=^/*{prefix}{}$", escape(&name)));
        }
    }
    ex.sort();
    ex
}

/// The key of the host root image: the stat of what it holds at the top (the root entries
/// and each curated /etc entry), and when the package database and the main /usr
/// directories last changed (a package install changes them). Not the rest of /etc, which
/// changes whenever a user is added.
fn rootfs_key() -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in ROOT_CANDIDATES {
        parts.push(stat_key(&Path::new("/").join(e)));
    }
    for p in [
        "/usr/bin",
        "/usr/sbin",
        "/usr/lib",
        "/usr/lib64",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/local",
        "/usr/local/bin",
        "/usr/local/lib",
        "/usr/share",
        "/var/lib/dpkg/status",
    ] {
        parts.push(stat_key(Path::new(p)));
    }
    for e in ETC_ALLOWLIST {
        parts.push(stat_key(&Path::new("/etc").join(e)));
    }
    let refs: Vec<&[u8]> = parts.iter().map(|s| s.as_bytes()).collect();
    key(&refs)
}

/// mkfs.erofs (erofs-utils).
pub fn mkfs_erofs() -> Option<PathBuf> {
    [
        "/usr/bin/mkfs.erofs",
        "/usr/sbin/mkfs.erofs",
        "/sbin/mkfs.erofs",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Build an erofs image of `source` at `out` (`extra`: more mkfs.erofs options).
pub fn erofs(source: &Path, out: &Path, extra: &[String]) -> Result<(), String> {
    let mkfs = mkfs_erofs().ok_or("mkfs.erofs is not installed (apt-get install erofs-utils)")?;
    let res = Command::new(&mkfs)
        .arg("--quiet")
        .arg("-x-1")
        .args(extra)
        .arg(out)
        .arg(source)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", mkfs.display()))?;
    if !res.status.success() {
        return Err(format!(
            "mkfs.erofs {}: {}",
            source.display(),
            String::from_utf8_lossy(&res.stderr).trim()
        ));
    }
    Ok(())
}

/// mkfs.ext4 (e2fsprogs).
pub fn mkfs_ext4() -> Option<PathBuf> {
    [
        "/usr/sbin/mkfs.ext4",
        "/sbin/mkfs.ext4",
        "/usr/bin/mkfs.ext4",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// A writable ext4 image of `size` bytes (sparse) at `out` holding `source`'s tree: a clone
/// workspace's disk. Built beside `out` and renamed into place, so a failure leaves nothing.
pub fn ext4(source: &Path, out: &Path, size: u64) -> Result<(), String> {
    let mkfs = mkfs_ext4().ok_or("mkfs.ext4 is not installed (apt-get install e2fsprogs)")?;
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    let made = (|| {
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.set_len(size)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        drop(f);
        let res = Command::new(&mkfs)
            .args(["-q", "-F", "-t", "ext4", "-m", "0", "-L", "workspace"])
            .args(["-E", "lazy_itable_init=1,lazy_journal_init=1"])
            .arg("-d")
            .arg(source)
            .arg(&tmp)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", mkfs.display()))?;
        if !res.status.success() {
            return Err(format!(
                "mkfs.ext4 -d {}: {}",
                source.display(),
                String::from_utf8_lossy(&res.stderr).trim()
            ));
        }
        fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))
    })();
    if made.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    made
}

/// The host root image (built on first use: minutes for a large /usr, then cached).
pub fn host_rootfs(dir: &Path) -> Result<String, String> {
    let name = format!("root-{}.erofs", rootfs_key());
    let path = dir.join(&name);
    if !path.exists() {
        // Older images of the host root are stale now: the disk space is better freed.
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("root-") && n.ends_with(".erofs") && n != name {
                let _ = fs::remove_file(e.path());
            }
        }
        eprintln!(
            "airlock: building the microVM image of this host's /usr (once; cached in {})",
            dir.display()
        );
    }
    cached(dir, &name, |tmp| {
        let mut extra = excludes();
        extra.push("-zlz4".into());
        erofs(Path::new("/"), tmp, &extra)
    })?;
    Ok(name)
}
