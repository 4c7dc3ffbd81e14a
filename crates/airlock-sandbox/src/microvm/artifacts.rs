//! What a microVM boots, built once and cached, each under a content key: the guest kernel
//! (an extracted vmlinux), the initramfs (airlock's guest init and the kernel modules it
//! loads) and the root image of `image = "host"` (an erofs image of the host's /usr, the
//! root's symlinks and the curated /etc). The cache is shared by every state directory of a
//! user (`$AIRLOCK_CACHE_DIR`, else `$XDG_CACHE_HOME/airlock`, else `~/.cache/airlock`):
//! building the root image takes a while, and nothing in it is per sandbox.

pub(crate) use super::cache::stat_key;
pub use super::cache::{cache_dir, ensure_dir, key};
use super::kernel::{self, Kernel};
use airlock_model::plan::{ETC_ALLOWLIST, ROOT_CANDIDATES};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Kernel modules every guest's init loads first (with their dependencies, from modules.dep),
/// from `/modules/chan`: the channel's. The guest says hello as soon as its port is there and
/// loads the rest while the host answers with the job.
pub const CHANNEL_MODULES: &[&str] = &["virtio_mmio", "virtio_console"];

/// Kernel modules every guest's init loads after the channel's (with the dependencies the
/// channel's do not bring), in this order; those built into the kernel are skipped.
pub const GUEST_MODULES: &[&str] = &["virtio_blk", "erofs", "overlay"];

/// Kernel modules only a guest with a network loads (after its job says so): the initramfs
/// holds them, with the dependencies the others do not share, in `modules/net/`.
pub const NET_MODULES: &[&str] = &["virtio_net"];

/// Modules the guest init loads only for a job with a workspace disk (a clone workspace's
/// ext4 image), from `/modules/disk`: a boot without one does not pay for them.
pub const DISK_MODULES: &[&str] = &["ext4"];

/// Each module above and the kernel configuration symbol that builds it in: how airlock
/// tells, from a kernel's embedded configuration, that a kernel without a modules tree (its
/// own minimal guest kernel, `scripts/guest-kernel.sh`) needs none of them loaded.
pub const MODULE_SYMBOLS: &[(&str, &str)] = &[
    ("virtio_mmio", "CONFIG_VIRTIO_MMIO"),
    ("virtio_console", "CONFIG_VIRTIO_CONSOLE"),
    ("virtio_blk", "CONFIG_VIRTIO_BLK"),
    ("erofs", "CONFIG_EROFS_FS"),
    ("overlay", "CONFIG_OVERLAY_FS"),
    ("virtio_net", "CONFIG_VIRTIO_NET"),
    ("ext4", "CONFIG_EXT4_FS"),
];

/// The initramfs's layout version, part of its cache key: an airlock that lays the initramfs
/// out differently (which modules where, how they are stored) never boots one cached by
/// another. 2: network modules apart; signatures stripped. 3: workspace-disk modules apart.
/// 4: the channel's modules apart, loaded first.
const INITRD_LAYOUT: &str = "4";

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

/// The file name of `k`'s extracted vmlinux in the cache.
pub fn vmlinux_name(k: &Kernel) -> String {
    format!(
        "vmlinux-{}-{}",
        k.release,
        key(&[stat_key(&k.image).as_bytes()])
    )
}

/// The extracted vmlinux of `k`, in the cache; returns its file name.
pub fn vmlinux(dir: &Path, k: &Kernel) -> Result<String, String> {
    let name = vmlinux_name(k);
    cached(dir, &name, |tmp| {
        let bz = fs::read(&k.image).map_err(|e| format!("{}: {e}", k.image.display()))?;
        let elf = kernel::extract(&bz).map_err(|e| format!("{}: {e}", k.image.display()))?;
        fs::write(tmp, elf).map_err(|e| format!("{}: {e}", tmp.display()))
    })?;
    Ok(name)
}

/// The modules a guest of `release` loads, dependencies first (paths under
/// /lib/modules/RELEASE): the channel's, the others every boot needs, those only a network
/// needs and those only a workspace disk needs (each set without what an earlier one holds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modules {
    pub channel: Vec<PathBuf>,
    pub base: Vec<PathBuf>,
    pub net: Vec<PathBuf>,
    pub disk: Vec<PathBuf>,
}

/// Where the modules of `k`'s guest come from: its modules tree (/lib/modules/RELEASE, a
/// distribution kernel's: loaded by the guest's init, as always) or, for a kernel without
/// one, nowhere: its embedded configuration must build every one of them in (airlock's
/// minimal guest kernel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSource {
    Tree(PathBuf),
    BuiltIn,
}

/// The modules `k`'s guest loads (see [`ModuleSource`]); `vmlinux`: its extracted image's
/// name in `dir`, where its configuration is read from (once, cached beside it).
pub fn modules_for(dir: &Path, k: &Kernel, vmlinux: &str) -> Result<Modules, String> {
    let root = Path::new("/lib/modules").join(&k.release);
    if root.join("modules.dep").exists() {
        return module_list_in(&root, &k.release);
    }
    let config = kernel_config(dir, vmlinux)?.ok_or_else(|| {
        format!(
            "no modules for kernel {} ({}/modules.dep is missing) and no embedded \
             configuration (CONFIG_IKCONFIG) saying its guest drivers are built in",
            k.release,
            root.display()
        )
    })?;
    builtin_only(&config, &k.release)
}

/// No modules at all, when `config` builds every module the guest needs in; else which not.
pub fn builtin_only(config: &str, release: &str) -> Result<Modules, String> {
    let missing: Vec<String> = MODULE_SYMBOLS
        .iter()
        .filter(|(_, sym)| !kernel::builds_in(config, sym))
        .map(|(m, sym)| format!("{m} ({sym})"))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "kernel {release} has no modules in /lib/modules/{release} and does not build in {}",
            missing.join(", ")
        ));
    }
    Ok(Modules::default())
}

/// The embedded configuration of the cached vmlinux `name` in `dir` (None: it has none),
/// read from the image once and kept beside it (`NAME.config`, empty for none).
pub fn kernel_config(dir: &Path, name: &str) -> Result<Option<String>, String> {
    let file = format!("{name}.config");
    cached(dir, &file, |tmp| {
        let p = dir.join(name);
        let elf = fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let text = match kernel::embedded_config(&elf) {
            Some(c) => c.map_err(|e| format!("{}: {e}", p.display()))?,
            None => String::new(),
        };
        fs::write(tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))
    })?;
    let p = dir.join(&file);
    let text = fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok((!text.is_empty()).then_some(text))
}

/// What `doctor` says of a kernel's modules: which ones the guest's init loads, or that it
/// has them all built in (its embedded configuration, read from the image if it is a
/// vmlinux; nothing is extracted or cached).
pub fn modules_summary(k: &Kernel) -> Result<(ModuleSource, Vec<String>), String> {
    let root = Path::new("/lib/modules").join(&k.release);
    if root.join("modules.dep").exists() {
        let m = module_list_in(&root, &k.release)?;
        let names = [&m.channel, &m.base, &m.net, &m.disk]
            .into_iter()
            .flatten()
            .filter_map(|p| {
                p.file_name()?
                    .to_str()?
                    .split(".ko")
                    .next()
                    .map(String::from)
            })
            .collect();
        return Ok((ModuleSource::Tree(root), names));
    }
    let data = fs::read(&k.image).map_err(|e| format!("{}: {e}", k.image.display()))?;
    let config = kernel::embedded_config(&data).transpose()?.ok_or_else(|| {
        format!(
            "no modules in {} and no embedded configuration (CONFIG_IKCONFIG) in {}",
            root.display(),
            k.image.display()
        )
    })?;
    builtin_only(&config, &k.release).map(|_| (ModuleSource::BuiltIn, Vec::new()))
}

/// The modules to load from the modules tree at `root` (/lib/modules/RELEASE; see [`Modules`]).
fn module_list_in(root: &Path, release: &str) -> Result<Modules, String> {
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
    let mut ends = Vec::new();
    for set in [CHANNEL_MODULES, GUEST_MODULES, NET_MODULES, DISK_MODULES] {
        for want in set {
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
        ends.push(order.len());
    }
    let mut channel: Vec<PathBuf> = order.into_iter().map(|m| root.join(m)).collect();
    let disk = channel.split_off(ends[2]);
    let net = channel.split_off(ends[1]);
    let base = channel.split_off(ends[0]);
    Ok(Modules {
        channel,
        base,
        net,
        disk,
    })
}

/// The trailer the kernel's build appends to a signed module.
const SIG_MAGIC: &[u8] = b"~Module signature appended~\n";

/// A module without its appended signature. The guest kernel then skips hashing and verifying
/// each module (seconds of SHA-256 and RSA under emulation, for modules airlock took from
/// the host's own /lib/modules); it notes them as unsigned, and loads them, as every
/// distribution kernel without `module.sig_enforce` does. Unsigned input comes back as it is.
pub fn strip_signature(mut data: Vec<u8>) -> Vec<u8> {
    let Some(rest) = data.len().checked_sub(SIG_MAGIC.len() + 12) else {
        return data;
    };
    if !data.ends_with(SIG_MAGIC) {
        return data;
    }
    // struct module_signature: algo, hash, id_type, signer_len, key_id_len, pad[3], sig_len
    // (big endian), then the magic.
    let ms = &data[rest..rest + 12];
    let sig_len = u32::from_be_bytes([ms[8], ms[9], ms[10], ms[11]]) as usize;
    let signer = usize::from(ms[3]) + usize::from(ms[4]);
    match rest.checked_sub(sig_len + signer) {
        Some(end) => {
            data.truncate(end);
            data
        }
        None => data,
    }
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

/// The initramfs's name in the cache: its layout, the guest helper's identity (its build-time
/// SHA-256: hashing its 2 MB at every start was most of a microVM run's planning, ~5 ms), the
/// kernel release and the stat of every module it holds.
pub fn initrd_name(guest_id: &str, release: &str, mods: &Modules) -> String {
    let mut parts: Vec<Vec<u8>> = vec![
        INITRD_LAYOUT.as_bytes().to_vec(),
        guest_id.as_bytes().to_vec(),
        release.as_bytes().to_vec(),
    ];
    for (set, list) in [
        ("channel", &mods.channel),
        ("base", &mods.base),
        ("net", &mods.net),
        ("disk", &mods.disk),
    ] {
        parts.push(set.as_bytes().to_vec());
        parts.extend(list.iter().map(|m| stat_key(m).into_bytes()));
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    format!("initrd-{release}-{}", key(&refs))
}

/// The initramfs (uncompressed: the kernel unpacks it faster than it would inflate it):
/// /init (the guest helper, static), /modules/chan/NN-NAME.ko (the channel's, loaded first),
/// /modules/NN-NAME.ko in load order and
/// /modules/net/NN-NAME.ko and /modules/disk/NN-NAME.ko (loaded for a workspace disk only), the
/// modules decompressed and without signatures.
pub fn initrd(
    dir: &Path,
    guest: &[u8],
    guest_id: &str,
    k: &Kernel,
    vmlinux: &str,
) -> Result<String, String> {
    let mods = modules_for(dir, k, vmlinux)?;
    let name = initrd_name(guest_id, &k.release, &mods);
    cached(dir, &name, |tmp| write_initrd(tmp, guest, &mods))?;
    Ok(name)
}

fn write_initrd(tmp: &Path, guest: &[u8], mods: &Modules) -> Result<(), String> {
    let mut out = Vec::new();
    let mut ino = 1;
    cpio_entry(&mut out, "init", 0o100_755, guest, ino);
    ino += 1;
    cpio_entry(&mut out, "modules", 0o040_755, &[], ino);
    ino += 1;
    cpio_entry(&mut out, "modules/chan", 0o040_755, &[], ino);
    ino += 1;
    cpio_entry(&mut out, "modules/net", 0o040_755, &[], ino);
    ino += 1;
    cpio_entry(&mut out, "modules/disk", 0o040_755, &[], ino);
    for (dir, list) in [
        ("modules/chan", &mods.channel),
        ("modules", &mods.base),
        ("modules/net", &mods.net),
        ("modules/disk", &mods.disk),
    ] {
        for (i, m) in list.iter().enumerate() {
            ino += 1;
            let stem = m
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or("m")
                .split(".ko")
                .next()
                .unwrap_or("m")
                .to_string();
            let data = strip_signature(module_bytes(m)?);
            cpio_entry(
                &mut out,
                &format!("{dir}/{i:02}-{stem}.ko"),
                0o100_644,
                &data,
                ino,
            );
        }
    }
    cpio_entry(&mut out, "TRAILER!!!", 0, &[], 0);
    let mut f = fs::File::create(tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(&out)
        .map_err(|e| format!("{}: {e}", tmp.display()))
}

/// What goes into the root image of `image = "host"`: the root's entries (/usr and the
/// merged-/usr symlinks) and the curated /etc — the same host view a container gets — less
/// what a stranger could not read there ([`unreadable_by_others`]). As mkfs.erofs options
/// excluding everything else (regexes: it matches paths as it builds them, `//proc` for a
/// source of `/`).
fn excludes() -> Vec<String> {
    let mut ex = Vec::new();
    let mut kept = Vec::new();
    for (dir, keep) in [("/", ROOT_CANDIDATES), ("/etc", ETC_ALLOWLIST)] {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dir == "/" && name == "etc" {
                continue;
            }
            if keep.contains(&name.as_str()) {
                kept.push(e.path());
            } else {
                ex.push(exclude_regex(&e.path()));
            }
        }
    }
    ex.extend(unreadable_by_others(&kept).iter().map(|p| exclude_regex(p)));
    ex.sort();
    ex
}

/// The mkfs.erofs option that leaves out the absolute path `p` (and what is under it).
fn exclude_regex(p: &Path) -> String {
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
    let parts: Vec<String> = p
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(escape(&n.to_string_lossy())),
            _ => None,
        })
        .collect();
    format!("--exclude-regex=^/*{}$", parts.join("/+"))
}

/// Every path under `roots` (symbolic links not followed) that a stranger could not read: a
/// file without read permission for others, a directory without read and search permission
/// for others (not entered). The host image holds what a root-run container's sandbox sees
/// of the host — its root is nobody there — so never root's private files (the TLS keys of
/// `/etc/ssl/private`: a guest's root is root of the image's files), and a rootless build
/// never stops at a directory it cannot open (`/usr/share/polkit-1/rules.d`).
fn unreadable_by_others(roots: &[PathBuf]) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo: Vec<PathBuf> = roots.to_vec();
    while let Some(p) = todo.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        let mode = m.permissions().mode();
        if m.file_type().is_symlink() {
            continue;
        }
        if m.is_dir() {
            match fs::read_dir(&p) {
                Ok(entries) if mode & 0o005 == 0o005 => {
                    todo.extend(entries.flatten().map(|e| e.path()));
                }
                _ => out.push(p),
            }
        } else if mode & 0o004 == 0 {
            out.push(p);
        }
    }
    out.sort();
    out
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

/// What a booted guest was made from, cheaply (stats, no reads of the images): the kernel
/// image, the initramfs layout and guest helper, and the host root image's sources and layout.
/// Part of a microVM warm pool's key, so a member booted from other artifacts is never handed
/// out.
pub fn boot_identity(kernel_image: &Path, guest_sha256: &str) -> String {
    key(&[
        stat_key(kernel_image).as_bytes(),
        INITRD_LAYOUT.as_bytes(),
        guest_sha256.as_bytes(),
        rootfs_key().as_bytes(),
        ROOTFS_LAYOUT.as_bytes(),
    ])
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
    erofs_inheriting(source, out, extra, None)
}

/// Build an erofs image of the directory `dir` names (a descriptor: e.g. one opened without
/// following links, [`crate::nofollow::open_nofollow`]) at `out`, whatever its path names by
/// now: mkfs.erofs reads it through `/proc/self/fd/N/`, N the one descriptor it inherits
/// (close-on-exec here, made inheritable in the child only, between fork and exec).
pub fn erofs_of(
    dir: std::os::fd::BorrowedFd<'_>,
    out: &Path,
    extra: &[String],
) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let fd = dir.as_raw_fd();
    erofs_inheriting(
        Path::new(&format!("/proc/self/fd/{fd}/")),
        out,
        extra,
        Some(fd),
    )
}

fn erofs_inheriting(
    source: &Path,
    out: &Path,
    extra: &[String],
    inherit: Option<std::os::fd::RawFd>,
) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mkfs = mkfs_erofs().ok_or("mkfs.erofs is not installed (apt-get install erofs-utils)")?;
    let mut cmd = Command::new(&mkfs);
    cmd.arg("--quiet")
        .arg("-x-1")
        .args(extra)
        .arg(out)
        .arg(source)
        .stdin(std::process::Stdio::null());
    if let Some(fd) = inherit {
        // SAFETY: only fcntl(2) (async-signal-safe) between fork and exec, on a descriptor
        // the caller keeps open across the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let res = cmd
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

/// The host root image's file name prefix. Before layout 2 it was `root-` (LZ4 throughout);
/// a different prefix lets an older airlock and this one share a cache: each removes only stale
/// images of its own when it builds (an older airlock removes every `root-*.erofs` then).
pub const HOST_ROOTFS_PREFIX: &str = "host-root-";

/// The host root image's layout version, part of its name. 2: LZ4 except the dynamic loader
/// and the C runtime libraries ([`UNCOMPRESSED`]), stored as they are. 3: without what others
/// cannot read (an image of layout 2 made by root held `/etc/ssl/private`).
const ROOTFS_LAYOUT: &str = "3";

/// Files of the host root image stored uncompressed (mkfs.erofs `--compress-hints`, regexes
/// over the path as it is built): the dynamic loader and the libraries nearly every dynamic
/// program maps at its start. Under TCG the guest's first dynamic exec read them through the
/// LZ4 decompressor (tens of ms); stored plainly they cost ~10 MB of a multi-GB image.
pub const UNCOMPRESSED: &[&str] = &[
    "/ld-linux[^/]*\\.so[^/]*$",
    "/lib(c|m|dl|rt|pthread|resolv|crypt|gcc_s|stdc\\+\\+|selinux|pcre2-8|z|tinfo|acl|attr|cap)\\.so[.0-9]*$",
];

/// The host root image (built on first use: minutes for a large /usr, then cached).
pub fn host_rootfs(dir: &Path) -> Result<String, String> {
    let name = format!("{HOST_ROOTFS_PREFIX}{ROOTFS_LAYOUT}-{}.erofs", rootfs_key());
    let path = dir.join(&name);
    if !path.exists() {
        // Older images of the host root are stale now: the disk space is better freed (the
        // layout-1 images too, `root-*.erofs`).
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let ours = n.starts_with(HOST_ROOTFS_PREFIX) || n.starts_with("root-");
            if ours && n.ends_with(".erofs") && n != name {
                let _ = fs::remove_file(e.path());
            }
        }
        eprintln!(
            "airlock: building the microVM image of this host's /usr (once; cached in {})",
            dir.display()
        );
    }
    cached(dir, &name, |tmp| {
        host_layout_erofs(Path::new("/"), tmp, excludes())
    })?;
    Ok(name)
}

/// An erofs image of `source` at `out` in the host root image's layout (LZ4, [`UNCOMPRESSED`]
/// stored as they are), with `extra` mkfs.erofs options.
fn host_layout_erofs(source: &Path, out: &Path, mut extra: Vec<String>) -> Result<(), String> {
    let hints = out.with_extension("hints");
    let lines: String = UNCOMPRESSED.iter().map(|r| format!("0 {r}\n")).collect();
    fs::write(&hints, lines).map_err(|e| format!("{}: {e}", hints.display()))?;
    extra.push("-zlz4".into());
    extra.push(format!("--compress-hints={}", hints.display()));
    let built = erofs(source, out, &extra);
    let _ = fs::remove_file(&hints);
    built
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
        mkfs_ext4_on(&mkfs, source, &tmp)?;
        fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))
    })();
    if made.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    made
}

/// [`ext4`] made *in* the existing file `file` (its size is the filesystem's; its inode stays:
/// a warm member's workspace slot, which QEMU holds open).
pub fn ext4_in_place(source: &Path, file: &Path) -> Result<(), String> {
    let mkfs = mkfs_ext4().ok_or("mkfs.ext4 is not installed (apt-get install e2fsprogs)")?;
    mkfs_ext4_on(&mkfs, source, file)
}

fn mkfs_ext4_on(mkfs: &Path, source: &Path, file: &Path) -> Result<(), String> {
    let res = Command::new(mkfs)
        .args(["-q", "-F", "-t", "ext4", "-m", "0", "-L", "workspace"])
        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1"])
        .arg("-d")
        .arg(source)
        .arg(file)
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
    // mkfs makes an empty `lost+found` at the root, which would show in the guest's
    // /workspace (or root) as a folder the project never had. e2fsck makes it again if
    // ever needed. Without debugfs it stays (cosmetic).
    if source.join("lost+found").symlink_metadata().is_err() {
        if let Some(debugfs) = ["/usr/sbin/debugfs", "/sbin/debugfs"]
            .iter()
            .find(|p| Path::new(p).exists())
        {
            let _ = Command::new(debugfs)
                .args(["-w", "-R", "rmdir lost+found"])
                .arg(file)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
    Ok(())
}

/// Copy `from` into the existing file `to` in place (its inode stays), holes kept: `to` is
/// emptied first (its blocks punched out, its size kept), then only `from`'s data segments are
/// copied. `to` must be at least as long as `from`.
pub fn copy_sparse_into(from: &Path, to: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let src = fs::File::open(from).map_err(|e| format!("{}: {e}", from.display()))?;
    let len = src
        .metadata()
        .map_err(|e| format!("{}: {e}", from.display()))?
        .len();
    let dst = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)
        .map_err(|e| format!("{}: {e}", to.display()))?;
    let room = dst
        .metadata()
        .map_err(|e| format!("{}: {e}", to.display()))?
        .len();
    if len > room {
        return Err(format!(
            "{} ({len} bytes) is larger than {} ({room} bytes)",
            from.display(),
            to.display()
        ));
    }
    let (s, d) = (src.as_raw_fd(), dst.as_raw_fd());
    let err = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: fallocate(2) on a descriptor we own, within its size.
    let punched = unsafe {
        libc::fallocate(
            d,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            room as libc::off_t,
        )
    };
    if punched != 0 {
        return Err(err(&format!("empty {}", to.display())));
    }
    crate::sys::copy_data(s, d, len)
        .map_err(|e| format!("copy {} into {}: {e}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_image_leaves_out_what_others_cannot_read() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("airlock-unreadable-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        for sub in [
            "etc/ssl/private",
            "etc/ssl/certs",
            "usr/share/rules.d",
            "usr/bin",
        ] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        let write = |p: &str, mode: u32| {
            fs::write(d.join(p), "x").unwrap();
            fs::set_permissions(d.join(p), fs::Permissions::from_mode(mode)).unwrap();
        };
        write("etc/ssl/private/host.key", 0o640);
        write("etc/ssl/certs/ca.pem", 0o644);
        write("usr/bin/tool", 0o4755);
        write("usr/bin/root-only", 0o700);
        write("usr/share/rules.d/r", 0o644);
        let mode = |p: &str, m: u32| {
            fs::set_permissions(d.join(p), fs::Permissions::from_mode(m)).unwrap();
        };
        mode("etc/ssl/private", 0o710);
        mode("usr/share/rules.d", 0o700);
        std::os::unix::fs::symlink("/etc/shadow", d.join("usr/bin/link")).unwrap();
        let got = unreadable_by_others(&[d.join("etc/ssl"), d.join("usr")]);
        assert_eq!(
            got,
            [
                d.join("etc/ssl/private"),
                d.join("usr/bin/root-only"),
                d.join("usr/share/rules.d"),
            ]
        );
        assert_eq!(
            exclude_regex(Path::new("/etc/ssl/private")),
            "--exclude-regex=^/*etc/+ssl/+private$"
        );
        assert_eq!(
            exclude_regex(Path::new("/usr/share/polkit-1/rules.d")),
            "--exclude-regex=^/*usr/+share/+polkit-1/+rules\\.d$"
        );
        mode("etc/ssl/private", 0o755);
        mode("usr/share/rules.d", 0o755);
        let _ = fs::remove_dir_all(&d);
    }

    use super::*;

    /// The copy into a warm member's slot: same bytes, same inode and size of the slot, the
    /// source's holes stay holes (an 8 GiB image costs its data), the slot's old contents gone,
    /// a source longer than the slot refused.
    #[test]
    fn a_sparse_copy_keeps_the_slots_inode_and_the_sources_holes() {
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::MetadataExt;
        let d = scratch("sparse");
        let (from, to) = (d.join("image"), d.join("slot"));
        let mut f = fs::File::create(&from).unwrap();
        f.write_all(b"head").unwrap();
        f.seek(SeekFrom::Start(64 << 20)).unwrap();
        f.write_all(b"middle").unwrap();
        f.set_len(128 << 20).unwrap();
        drop(f);
        let slot = fs::File::create(&to).unwrap();
        slot.set_len(256 << 20).unwrap();
        drop(slot);
        let mut old = fs::OpenOptions::new().write(true).open(&to).unwrap();
        old.seek(SeekFrom::Start(100 << 20)).unwrap();
        old.write_all(b"stale").unwrap();
        drop(old);
        let ino = fs::metadata(&to).unwrap().ino();
        copy_sparse_into(&from, &to).expect("copy");
        let m = fs::metadata(&to).unwrap();
        assert_eq!((m.ino(), m.len()), (ino, 256 << 20));
        assert!(
            m.blocks() * 512 < 4 << 20,
            "holes kept: {} blocks",
            m.blocks()
        );
        let got = fs::read(&to).unwrap();
        assert_eq!(&got[..4], b"head");
        assert_eq!(&got[64 << 20..(64 << 20) + 6], b"middle");
        assert!(got[100 << 20..(100 << 20) + 5].iter().all(|b| *b == 0));
        let big = d.join("big");
        fs::File::create(&big).unwrap().set_len(512 << 20).unwrap();
        assert!(copy_sparse_into(&big, &to).is_err());
        let _ = fs::remove_dir_all(&d);
    }

    fn scratch(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("airlock-artifacts-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("scratch directory");
        d
    }

    /// A module as the kernel's sign-file leaves it: body, PKCS#7 signature, struct
    /// module_signature (id_type 2, sig_len big endian), magic.
    fn signed(body: &[u8], sig_len: usize) -> Vec<u8> {
        let mut m = body.to_vec();
        m.extend(std::iter::repeat_n(0x5a, sig_len));
        m.extend([0, 0, 2, 0, 0, 0, 0, 0]);
        m.extend((sig_len as u32).to_be_bytes());
        m.extend(SIG_MAGIC);
        m
    }

    /// How dump.erofs (erofs-utils, with mkfs.erofs) says `path` is stored in `image`: its
    /// "Layout" number (0/2: plain, 1/3: compressed).
    fn erofs_layout(image: &Path, path: &str) -> u32 {
        let out = Command::new("dump.erofs")
            .arg(format!("--path={path}"))
            .arg(image)
            .output()
            .expect("dump.erofs (erofs-utils)");
        let text = String::from_utf8_lossy(&out.stdout);
        let n = text
            .split("Layout:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok());
        n.unwrap_or_else(|| panic!("dump.erofs {path}: {text}"))
    }

    /// `erofs_of`: the image is of the directory the descriptor names, not of what its path
    /// names by then, and the descriptor is never inheritable in this process (only mkfs.erofs,
    /// between its fork and exec, gets it without close-on-exec).
    #[test]
    fn an_erofs_image_of_a_descriptor_reads_that_directory_and_leaves_it_close_on_exec() {
        if mkfs_erofs().is_none() {
            eprintln!("note: mkfs.erofs is not installed: test skipped");
            return;
        }
        let d = scratch("erofs-of");
        let src = d.join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("opened"), "the directory opened\n").unwrap();
        let fd = crate::nofollow::open_nofollow(&src).unwrap();
        // The path now names another directory.
        fs::rename(&src, d.join("moved")).unwrap();
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("planted"), "planted since\n").unwrap();
        let image = d.join("image.erofs");
        use std::os::fd::AsFd;
        erofs_of(fd.as_fd(), &image, &[]).unwrap();
        // dump.erofs exits 0 either way; it names what it found.
        let has = |path: &str| {
            let out = Command::new("dump.erofs")
                .arg(format!("--path={path}"))
                .arg(&image)
                .output()
                .expect("dump.erofs (erofs-utils)");
            String::from_utf8_lossy(&out.stdout).contains(&format!("File : {path}"))
        };
        assert!(
            has("/opened"),
            "the image lacks the opened directory's file"
        );
        assert!(!has("/planted"), "the image followed the path");
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_eq!(
            flags & libc::FD_CLOEXEC,
            libc::FD_CLOEXEC,
            "inheritable here"
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn the_host_image_stores_the_loader_and_the_c_runtime_uncompressed() {
        let src = scratch("host-layout");
        let lib = src.join("usr/lib/x86_64-linux-gnu");
        fs::create_dir_all(&lib).unwrap();
        // Compressible contents: LZ4 would store each of these in a fraction of its size.
        let body: Vec<u8> = b"a shared object's sections "
            .iter()
            .cycle()
            .take(256 << 10)
            .copied()
            .collect();
        let plain = [
            "ld-linux-x86-64.so.2",
            "libc.so.6",
            "libm.so.6",
            "libstdc++.so.6.0.30",
            "libselinux.so.1",
            "libpcre2-8.so.0.11.2",
            "libz.so.1.2.13",
        ];
        let packed = [
            "libcrypto.so.3",
            "libcap-ng.so.0",
            "libc.so.6.bak",
            "liblzma.so.5",
        ];
        for n in plain.iter().chain(&packed) {
            fs::write(lib.join(n), &body).unwrap();
        }
        let image = src.with_extension("erofs");
        host_layout_erofs(&src, &image, Vec::new()).unwrap();
        for n in plain {
            let at = format!("/usr/lib/x86_64-linux-gnu/{n}");
            assert!(
                matches!(erofs_layout(&image, &at), 0 | 2),
                "{n}: compressed, should be plain"
            );
        }
        for n in packed {
            let at = format!("/usr/lib/x86_64-linux-gnu/{n}");
            assert!(
                matches!(erofs_layout(&image, &at), 1 | 3),
                "{n}: plain, should be compressed"
            );
        }
        assert!(
            !image.with_extension("hints").exists(),
            "the hints file is left behind"
        );
        let _ = fs::remove_dir_all(&src);
        let _ = fs::remove_file(&image);
    }

    #[test]
    fn a_signed_module_loses_its_signature_and_nothing_else() {
        let body = b"\x7fELF\x02\x01\x01 a module's sections";
        assert_eq!(strip_signature(signed(body, 515)), body);
        assert_eq!(strip_signature(body.to_vec()), body, "unsigned: unchanged");
        // A trailer that claims more signature than there is: left as it is.
        let mut bad = body.to_vec();
        bad.extend([0, 0, 2, 0, 0, 0, 0, 0]);
        bad.extend(9999u32.to_be_bytes());
        bad.extend(SIG_MAGIC);
        assert_eq!(strip_signature(bad.clone()), bad);
    }

    const DEP: &str = "\
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/fs/erofs/erofs.ko: kernel/lib/libcrc32c.ko
kernel/lib/libcrc32c.ko:
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/libcrc32c.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
";

    /// A modules tree like /lib/modules/RELEASE: modules.dep, overlay built in, every module
    /// a signed stand-in (virtio_net xz-compressed, as Debian ships them).
    fn tree(root: &Path) {
        fs::write(root.join("modules.dep"), DEP).expect("modules.dep");
        fs::write(
            root.join("modules.builtin"),
            "kernel/fs/overlayfs/overlay.ko\n",
        )
        .expect("modules.builtin");
        for line in DEP.lines() {
            let m = line.split(':').next().expect("module");
            let p = root.join(m);
            fs::create_dir_all(p.parent().expect("parent")).expect("module directory");
            let data = signed(format!("\x7fELF {m}").as_bytes(), 100);
            match m.strip_suffix(".xz") {
                Some(plain) => {
                    let plain = root.join(plain);
                    fs::write(&plain, data).expect("module");
                    let st = Command::new("xz").arg(&plain).status().expect("xz");
                    assert!(st.success());
                }
                None => fs::write(&p, data).expect("module"),
            }
        }
    }

    fn stems(list: &[PathBuf]) -> Vec<String> {
        list.iter()
            .map(|p| {
                let f = p.file_name().and_then(|f| f.to_str()).unwrap_or("");
                f.split(".ko").next().unwrap_or(f).to_string()
            })
            .collect()
    }

    #[test]
    fn network_modules_are_apart_and_everything_comes_after_its_dependencies() {
        let root = scratch("mods");
        tree(&root);
        let m = module_list_in(&root, "9.9.9-test").expect("module list");
        // The channel's first (the guest says hello before it loads the rest).
        assert_eq!(
            stems(&m.channel),
            ["virtio", "virtio_ring", "virtio_mmio", "virtio_console"]
        );
        assert_eq!(
            stems(&m.base),
            ["virtio_blk", "libcrc32c", "erofs"],
            "without the channel's; overlay is built in: skipped"
        );
        assert_eq!(stems(&m.net), ["failover", "net_failover", "virtio_net"]);
        // The workspace disk's: without libcrc32c, which the base set already loads.
        assert_eq!(stems(&m.disk), ["mbcache", "jbd2", "ext4"]);
        fs::write(root.join("modules.builtin"), "").expect("modules.builtin");
        let err = module_list_in(&root, "9.9.9-test").expect_err("overlay missing");
        assert!(err.contains("no module overlay"), "{err}");
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn the_initramfs_holds_plain_unsigned_modules_with_the_network_ones_apart() {
        let root = scratch("initrd");
        tree(&root);
        fs::write(root.join("modules.builtin"), "").expect("modules.builtin");
        let ovl = root.join("kernel/fs/overlayfs/overlay.ko");
        fs::create_dir_all(ovl.parent().expect("parent")).expect("dir");
        fs::write(&ovl, signed(b"\x7fELF overlay", 64)).expect("overlay");
        fs::write(
            root.join("modules.dep"),
            format!("{DEP}kernel/fs/overlayfs/overlay.ko:\n"),
        )
        .expect("modules.dep");
        let mods = module_list_in(&root, "9.9.9-test").expect("module list");
        let archive = root.join("initrd");
        write_initrd(&archive, b"#!guest", &mods).expect("initrd");
        let out = root.join("out");
        fs::create_dir_all(&out).expect("out");
        let st = Command::new("cpio")
            .args(["-idm", "--quiet", "-F"])
            .arg(&archive)
            .current_dir(&out)
            .status()
            .expect("cpio");
        assert!(st.success());
        assert_eq!(fs::read(out.join("init")).expect("init"), b"#!guest");
        let list = |d: &str| -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(out.join(d))
                .expect("listing")
                .flatten()
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            list("modules/chan"),
            [
                "00-virtio.ko",
                "01-virtio_ring.ko",
                "02-virtio_mmio.ko",
                "03-virtio_console.ko"
            ]
        );
        assert_eq!(
            list("modules"),
            [
                "00-virtio_blk.ko",
                "01-libcrc32c.ko",
                "02-erofs.ko",
                "03-overlay.ko"
            ]
        );
        assert_eq!(
            list("modules/net"),
            ["00-failover.ko", "01-net_failover.ko", "02-virtio_net.ko"]
        );
        assert_eq!(
            list("modules/disk"),
            ["00-mbcache.ko", "01-jbd2.ko", "02-ext4.ko"]
        );
        // Decompressed and unsigned.
        assert_eq!(
            fs::read(out.join("modules/net/02-virtio_net.ko")).expect("virtio_net"),
            b"\x7fELF kernel/drivers/net/virtio_net.ko.xz"
        );
        assert_eq!(
            fs::read(out.join("modules/03-overlay.ko")).expect("overlay"),
            b"\x7fELF overlay"
        );
        let _ = fs::remove_dir_all(&root);
    }

    /// A vmlinux stand-in carrying `config` the way CONFIG_IKCONFIG does.
    fn vmlinux_with(config: &str) -> Vec<u8> {
        let dir = scratch("gz");
        let plain = dir.join("config");
        fs::write(&plain, config).expect("config");
        let gz = Command::new("gzip")
            .arg("-c")
            .arg(&plain)
            .output()
            .expect("gzip");
        let _ = fs::remove_dir_all(&dir);
        let mut elf = b"\x7fELF Linux version 9.9.9-airlock-test (x) IKCFG_ST".to_vec();
        elf.extend(gz.stdout);
        elf.extend(b"IKCFG_ED");
        elf
    }

    /// A kernel with no modules tree boots when its embedded configuration builds every
    /// module the guest needs in: nothing to load, the initramfs holds none; one that lacks a
    /// driver, or says nothing, is refused with what is missing.
    #[test]
    fn a_kernel_without_modules_needs_its_guest_drivers_built_in() {
        let dir = scratch("builtin");
        let release = "9.9.9-airlock-test-no-such-tree";
        let k = |name: &str| Kernel {
            image: dir.join(name),
            release: release.into(),
            from: "--kernel".into(),
        };
        let all: String = MODULE_SYMBOLS
            .iter()
            .map(|(_, sym)| format!("{sym}=y\n"))
            .collect();
        fs::write(
            dir.join("full"),
            vmlinux_with(&format!("# CONFIG_MODULES is not set\n{all}")),
        )
        .expect("write");
        let m = modules_for(&dir, &k("full"), "full").expect("all built in");
        assert_eq!(m, Modules::default());
        assert_eq!(
            kernel_config(&dir, "full")
                .expect("cached")
                .as_deref()
                .map(|c| c.contains(&all)),
            Some(true)
        );
        assert_eq!(
            modules_summary(&k("full")).expect("summary"),
            (ModuleSource::BuiltIn, Vec::new())
        );
        let partial = all.replace("CONFIG_EROFS_FS=y", "CONFIG_EROFS_FS=m");
        fs::write(dir.join("partial"), vmlinux_with(&partial)).expect("write");
        let e = modules_for(&dir, &k("partial"), "partial").expect_err("erofs is a module");
        assert!(
            e.contains("does not build in erofs (CONFIG_EROFS_FS)"),
            "{e}"
        );
        fs::write(dir.join("bare"), b"\x7fELF Linux version 9.9.9 (x)").expect("write");
        let e = modules_for(&dir, &k("bare"), "bare").expect_err("no configuration");
        assert!(
            e.contains("no embedded configuration (CONFIG_IKCONFIG)"),
            "{e}"
        );
        // Every module the guest may load has its symbol.
        for m in CHANNEL_MODULES
            .iter()
            .chain(GUEST_MODULES)
            .chain(NET_MODULES)
            .chain(DISK_MODULES)
        {
            assert!(MODULE_SYMBOLS.iter().any(|(n, _)| n == m), "{m}");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_initramfs_key_changes_with_what_goes_into_it() {
        let root = scratch("key");
        tree(&root);
        let mods = module_list_in(&root, "9.9.9-test").expect("module list");
        let name = initrd_name("guest", "9.9.9-test", &mods);
        assert!(name.starts_with("initrd-9.9.9-test-"), "{name}");
        assert_eq!(name, initrd_name("guest", "9.9.9-test", &mods));
        assert_ne!(name, initrd_name("guest2", "9.9.9-test", &mods));
        // The same modules, one of them moved to the other set.
        let mut moved = mods.clone();
        let last = moved.base.pop().expect("a base module");
        moved.net.insert(0, last);
        assert_ne!(name, initrd_name("guest", "9.9.9-test", &moved));
        let mut moved = mods.clone();
        let first = moved.base.remove(0);
        moved.channel.push(first);
        assert_ne!(name, initrd_name("guest", "9.9.9-test", &moved));
        // A module file replaced (a kernel package update).
        let erofs = root.join("kernel/fs/erofs/erofs.ko");
        fs::remove_file(&erofs).expect("remove");
        fs::write(&erofs, signed(b"\x7fELF erofs, rebuilt and longer", 100)).expect("write");
        assert_ne!(name, initrd_name("guest", "9.9.9-test", &mods));
        let _ = fs::remove_dir_all(&root);
    }
}
