//! The microVM backend's needs (/dev/kvm that can boot a stock guest, QEMU with `-M microvm`)
//! and the user-mode network helpers.

use super::host::{run_bounded, which};
use super::row::{Row, Status};
use crate::microvm::artifacts::ModuleSource;
use crate::sys::raw;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

const KVM_API_VERSION: i32 = 12;

/// What /sys/module (and /proc/modules, when modules exist) says about the KVM flavour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KvmModules {
    /// kvm_pvm: the PVM paravirtual hypervisor (nested without hardware virtualization).
    pub pvm: bool,
    /// kvm_intel / kvm_amd.
    pub vendor: Option<&'static str>,
}

impl KvmModules {
    fn detect() -> KvmModules {
        let modules = std::fs::read_to_string("/proc/modules").unwrap_or_default();
        let loaded = |m: &str| {
            Path::new("/sys/module").join(m).exists()
                || modules.lines().any(|l| l.split(' ').next() == Some(m))
        };
        KvmModules {
            pvm: loaded("kvm_pvm"),
            vendor: if loaded("kvm_intel") {
                Some("kvm_intel")
            } else if loaded("kvm_amd") {
                Some("kvm_amd")
            } else {
                None
            },
        }
    }
}

pub(super) fn kvm_row() -> Row {
    kvm_row_with(&KvmModules::detect(), Path::new("/dev/kvm"))
}

pub(super) fn kvm_row_with(m: &KvmModules, dev: &Path) -> Row {
    let (id, name, needed) = (
        "kvm",
        "/dev/kvm",
        "microvm backend at hardware speed (TCG software emulation otherwise)",
    );
    let row = |status, detail: String, fix: Option<&str>| {
        Row::new(id, name, status, detail, fix.map(str::to_string), needed)
    };
    const TCG: &str = "the microvm backend will use TCG software emulation";
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(dev);
    if m.pvm {
        // Whatever else holds, PVM cannot run a stock guest: say that first.
        const PVM: &str =
            "KVM present but it is kvm_pvm (PVM) which cannot boot a stock guest kernel";
        let extra = match &opened {
            Ok(f) => match raw::kvm_api_version(f) {
                Ok(api) => format!(
                    "API {api}, KVM_CREATE_VM {}",
                    if raw::kvm_create_vm(f).is_ok() {
                        "works"
                    } else {
                        "fails"
                    }
                ),
                Err(e) => format!("KVM_GET_API_VERSION failed: {e}"),
            },
            Err(e) => format!("{}: {e}", dev.display()),
        };
        return row(
            Status::Degraded,
            format!("{PVM}; {TCG} ({extra})"),
            Some("nothing to do for TCG; for KVM speed use a host with hardware virtualization (kvm_intel/kvm_amd)"),
        );
    }
    let kvm = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let fix = if m.pvm {
                None
            } else {
                Some("enable VT-x/AMD-V in the firmware and load kvm_intel or kvm_amd (in a VM: enable nested virtualization)")
            };
            return row(
                Status::Degraded,
                format!("{} does not exist; {TCG}", dev.display()),
                fix,
            );
        }
        Err(e)
            if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EPERM) =>
        {
            return row(
                Status::Degraded,
                format!(
                    "{} exists but is not accessible to this user ({e}); {TCG}",
                    dev.display()
                ),
                Some(
                    "add the user to the kvm group: sudo usermod -aG kvm $USER (then log in again)",
                ),
            );
        }
        Err(e) => {
            return row(
                Status::Degraded,
                format!("cannot open {}: {e}; {TCG}", dev.display()),
                None,
            )
        }
    };
    let api = match raw::kvm_api_version(&kvm) {
        Ok(v) => v,
        Err(e) => {
            return row(
                Status::Degraded,
                format!("KVM_GET_API_VERSION failed: {e}; {TCG}"),
                None,
            )
        }
    };
    if api != KVM_API_VERSION {
        return row(
            Status::Degraded,
            format!("KVM_GET_API_VERSION returned {api}, expected {KVM_API_VERSION}; {TCG}"),
            None,
        );
    }
    if let Err(e) = raw::kvm_create_vm(&kvm) {
        return row(
            Status::Degraded,
            format!("KVM API {api}, but KVM_CREATE_VM failed: {e}; {TCG}"),
            None,
        );
    }
    row(
        Status::Ok,
        format!(
            "KVM API {api}, KVM_CREATE_VM works{}",
            m.vendor.map(|v| format!(" ({v})")).unwrap_or_default()
        ),
        None,
    )
}

/// QEMU binary and Debian package for this architecture.
pub(super) fn qemu_names(arch: &str) -> (String, &'static str) {
    let pkg = match arch {
        "x86_64" | "x86" => "qemu-system-x86",
        "aarch64" | "arm" => "qemu-system-arm",
        "powerpc64" | "powerpc" => "qemu-system-ppc",
        _ => "qemu-system-misc",
    };
    (format!("qemu-system-{arch}"), pkg)
}

pub(super) fn qemu_row() -> Row {
    let (id, name, needed) = ("qemu", "qemu", "microvm backend (--backend microvm)");
    let arch = std::env::consts::ARCH;
    let (bin, pkg) = qemu_names(arch);
    let fix = format!("apt install {pkg}  (dnf install qemu-system-{arch}-core)");
    let Some(path) = which(&bin) else {
        return Row::new(
            id,
            name,
            Status::Degraded,
            format!("{bin} not found"),
            Some(fix),
            needed,
        );
    };
    let t = Duration::from_secs(5);
    let version = match run_bounded(&path, &["--version"], t) {
        Ok((0, out)) => out.lines().next().unwrap_or("").trim().to_string(),
        Ok((code, out)) => {
            return Row::new(
                id,
                name,
                Status::Degraded,
                format!("{} --version exited {code}: {}", path.display(), out.trim()),
                Some(fix),
                needed,
            )
        }
        Err(e) => return Row::new(id, name, Status::Degraded, e, Some(fix), needed),
    };
    let machines = run_bounded(&path, &["-M", "help"], t);
    match machines {
        Ok((_, out))
            if out
                .lines()
                .any(|l| l.split_whitespace().next() == Some("microvm")) =>
        {
            Row::new(
                id,
                name,
                Status::Ok,
                format!("{} — {version}; -M microvm supported", path.display()),
                None,
                needed,
            )
        }
        Ok(_) => Row::new(
            id,
            name,
            Status::Degraded,
            format!(
                "{} — {version}; this build has no -M microvm machine",
                path.display()
            ),
            Some(format!(
                "install a QEMU build with the microvm machine: {fix}"
            )),
            needed,
        ),
        Err(e) => Row::new(
            id,
            name,
            Status::Degraded,
            format!("{} — {version}; -M help failed: {e}", path.display()),
            Some(fix),
            needed,
        ),
    }
}

pub(super) fn net_helpers_row() -> Row {
    let (id, name, needed) = (
        "net_helpers",
        "open network (pasta)",
        "--net open (filtered and off need nothing)",
    );
    let found: Vec<(&str, Option<std::path::PathBuf>)> = ["pasta", "passt", "slirp4netns"]
        .into_iter()
        .map(|b| (b, which(b)))
        .collect();
    let detail = found
        .iter()
        .map(|(b, p)| match p {
            Some(p) => format!("{b}: {}", p.display()),
            None => format!("{b}: not found"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let have = |b: &str| found.iter().any(|(n, p)| *n == b && p.is_some());
    // pasta opens /dev/net/tun as the invoking user.
    let tun = nix::unistd::access(
        "/dev/net/tun",
        nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
    )
    .is_ok();
    if have("pasta") && !tun {
        Row::new(
            id,
            name,
            Status::Degraded,
            format!("{detail}; /dev/net/tun is not readable and writable by this user"),
            Some("chmod 0666 /dev/net/tun (the usual mode)".into()),
            needed,
        )
    } else if have("pasta") {
        Row::new(
            id,
            name,
            Status::Ok,
            format!("{detail}; /dev/net/tun usable"),
            None,
            needed,
        )
    } else {
        Row::new(
            id,
            name,
            Status::Degraded,
            detail,
            Some("apt install passt".into()),
            needed,
        )
    }
}

/// KVM or TCG, as the microvm row says it: `kvm_usable` (/dev/kvm opens, not PVM) and the
/// probe boot's cached decision with its file, if a run has made it.
pub(super) fn accel_text(
    kvm_usable: bool,
    probed: Option<(airlock_model::plan::microvm::Accel, &Path)>,
) -> String {
    use airlock_model::plan::microvm::Accel;
    const TCG: &str = "microvm: TCG, ~10–50× slower CPU";
    match (kvm_usable, probed) {
        (false, _) => TCG.into(),
        (true, None) => "KVM if its probe boot succeeds at the first run (else TCG)".into(),
        (true, Some((Accel::Kvm, _))) => "microvm: KVM (its probe boot succeeded)".into(),
        (true, Some((Accel::Tcg, file))) => format!(
            "{TCG}: /dev/kvm opens but its probe boot did not power off in time (decision \
             cached in {}; remove it to probe again)",
            file.display()
        ),
    }
}

/// Where airlock's minimal guest kernel is, or how to build one (for a distribution kernel,
/// whose modules the guest loads at every boot).
fn minimal_kernel_hint() -> String {
    match crate::microvm::kernel::built_guest_kernel() {
        Some(p) => format!(
            "airlock's minimal guest kernel (drivers built in, faster boots) is built: --kernel {}",
            p.display()
        ),
        None => format!(
            "a minimal guest kernel with them built in boots faster: {}",
            crate::microvm::kernel::GUEST_KERNEL_HOW
        ),
    }
}

/// The microVM backend as a whole: which guest kernel it boots, KVM or TCG, the host image
/// cache, erofs-utils. Boots nothing and builds nothing (the first `run --backend microvm`
/// does, once).
pub(super) fn microvm_row() -> Row {
    let (id, name, needed) = ("microvm", "microvm backend", "--backend microvm");
    let mut missing = Vec::new();
    let mut fixes = Vec::new();
    let cache = crate::microvm::artifacts::cache_dir();
    let mut probed = None;
    let kernel = match crate::microvm::kernel::find(None) {
        Ok(k) => {
            let vmlinux = crate::microvm::artifacts::vmlinux_name(&k);
            probed = crate::microvm::cached_accel(&cache, &vmlinux)
                .map(|a| (a, crate::microvm::accel_cache(&cache, &vmlinux)));
            let modules = match crate::microvm::artifacts::modules_summary(&k) {
                Ok((ModuleSource::BuiltIn, _)) => {
                    "its guest drivers built in, no modules to load".to_string()
                }
                Ok((ModuleSource::Tree(_), names)) => format!(
                    "the guest's init loads {} modules ({}); {}",
                    names.len(),
                    names.join(", "),
                    minimal_kernel_hint()
                ),
                Err(e) => {
                    missing.push(format!("guest kernel unusable: {e}"));
                    fixes.push(crate::microvm::kernel::KERNEL_HINT.to_string());
                    String::new()
                }
            };
            format!(
                "kernel {} ({}, from {}; --kernel or [sandbox] kernel choose another): {modules}",
                k.release,
                k.image.display(),
                k.from
            )
        }
        Err(e) => {
            missing.push(format!("no guest kernel: {e}"));
            fixes.push(crate::microvm::kernel::KERNEL_HINT.to_string());
            String::new()
        }
    };
    if crate::microvm::artifacts::mkfs_erofs().is_none() {
        missing.push("mkfs.erofs not found".into());
        fixes.push("apt install erofs-utils".into());
    }
    if crate::microvm::qemu_path().is_none() {
        missing.push("qemu-system-x86_64 not found".into());
        fixes.push("apt install qemu-system-x86".into());
    }
    let pvm = KvmModules::detect().pvm;
    let kvm_usable = !pvm
        && OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
    let accel = accel_text(kvm_usable, probed.as_ref().map(|(a, p)| (*a, p.as_path())));
    let image = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .find(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(crate::microvm::artifacts::HOST_ROOTFS_PREFIX) && n.ends_with(".erofs")
        })
        .and_then(|e| e.metadata().ok())
        .map(|m| format!("host image cached ({} MiB)", m.len() >> 20))
        .unwrap_or_else(|| "host image not built yet (the first run builds it)".into());
    if !missing.is_empty() {
        return Row::new(
            id,
            name,
            Status::Degraded,
            format!("{}; {accel}", missing.join("; ")),
            Some(fixes.join("; ")),
            needed,
        );
    }
    Row::new(
        id,
        name,
        Status::Ok,
        format!(
            "{kernel}; {accel}; {image} in {}; {}",
            cache.display(),
            crate::microvm::snapshot::summary(&cache)
        ),
        None,
        needed,
    )
}
