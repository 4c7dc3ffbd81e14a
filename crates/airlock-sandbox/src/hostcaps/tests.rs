use super::*;
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn status_words_and_json_shape() {
    assert_eq!(Status::Ok.to_string(), "ok");
    assert_eq!(Status::Degraded.to_string(), "degraded");
    assert_eq!(Status::Missing.to_string(), "MISSING");
    let r = Row::new(
        "kvm",
        "/dev/kvm",
        Status::Degraded,
        "d",
        Some("f".into()),
        "n",
    );
    assert_eq!(
        serde_json::to_value(&r).expect("json"),
        serde_json::json!({"id": "kvm", "name": "/dev/kvm", "status": "degraded", "detail": "d", "fix": "f", "needed_for": "n"})
    );
}

#[test]
fn default_path_needs_userns_proc_seccomp_and_overlay() {
    let row = |id: &str, s| Row::new(id, id, s, "", None, "");
    let mut rows = vec![
        row("userns", Status::Ok),
        row("mount_pid_proc", Status::Ok),
        row("seccomp", Status::Ok),
        row("overlayfs", Status::Ok),
        row("kvm", Status::Degraded),
    ];
    assert!(default_path_ok(&rows));
    rows[3].status = Status::Degraded;
    assert!(!default_path_ok(&rows));
    rows[3].status = Status::Ok;
    rows[1].status = Status::Missing;
    assert!(!default_path_ok(&rows));
    assert!(!default_path_ok(&rows[2..]));
}

#[test]
fn uid_map_tells_user_namespaces() {
    assert_eq!(userns_of("         0          0 4294967295\n"), None);
    assert_eq!(
        userns_of("         0       1000          1\n"),
        Some(Some(1000))
    );
    assert_eq!(userns_of("      1000       1000          1\n"), Some(None));
    assert_eq!(userns_of("0 100000 65536\n65536 0 1\n"), Some(Some(100000)));
}

#[test]
fn kernel_versions() {
    assert_eq!(crate::kernel::version("6.18.44-fc-v769"), (6, 18));
    assert_eq!(crate::kernel::version("5.4.0-150-generic"), (5, 4));
    assert_eq!(crate::kernel::version("garbage"), (0, 0));
}

#[test]
fn seccomp_status_lines() {
    let s = "Name:\tcat\nNoNewPrivs:\t0\nSeccomp:\t2\nSeccomp_filters:\t3\n";
    assert_eq!(kernel::seccomp_status(s), (Some(2), Some(3)));
    assert_eq!(kernel::seccomp_status("Name:\tx\n"), (None, None));
}

#[test]
fn nfnetlink_getgen_roundtrip() {
    let req = kernel::getgen_request(7);
    assert_eq!(u32::from_ne_bytes([req[0], req[1], req[2], req[3]]), 20);
    assert_eq!(u16::from_ne_bytes([req[4], req[5]]), 0x0a10);
    let mut newgen = [0u8; 36];
    newgen[4..6].copy_from_slice(&0x0a0fu16.to_ne_bytes());
    assert_eq!(kernel::parse_getgen_reply(&newgen), Ok(()));
    let mut err = [0u8; 36];
    err[4..6].copy_from_slice(&2u16.to_ne_bytes());
    err[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
    assert_eq!(kernel::parse_getgen_reply(&err), Err(libc::EPERM));
    assert_eq!(kernel::parse_getgen_reply(&[0u8; 4]), Err(libc::EBADMSG));
}

#[test]
fn landlock_feature_names() {
    assert_eq!(kernel::landlock_features(1), "filesystem access control");
    assert!(kernel::landlock_features(7).contains("audit"));
}

#[test]
fn qemu_binary_and_package_per_arch() {
    assert_eq!(
        vm::qemu_names("x86_64"),
        ("qemu-system-x86_64".to_string(), "qemu-system-x86")
    );
    assert_eq!(
        vm::qemu_names("aarch64"),
        ("qemu-system-aarch64".to_string(), "qemu-system-arm")
    );
}

#[test]
fn kvm_absent_and_pvm_rows() {
    let none = vm::KvmModules {
        pvm: false,
        vendor: None,
    };
    let r = vm::kvm_row_with(&none, Path::new("/nonexistent/kvm"));
    assert_eq!(r.status, Status::Degraded);
    assert!(r.detail.contains("TCG"), "{}", r.detail);
    assert!(r.fix.is_some());
    // PVM is reported as such whether or not /dev/kvm can be opened.
    let pvm = vm::KvmModules {
        pvm: true,
        vendor: None,
    };
    for dev in ["/dev/kvm", "/nonexistent/kvm"] {
        let r = vm::kvm_row_with(&pvm, Path::new(dev));
        assert_eq!(r.status, Status::Degraded);
        assert!(
            r.detail.starts_with("KVM present but it is kvm_pvm (PVM) which cannot boot a stock guest kernel; the microvm backend will use TCG software emulation"),
            "{}",
            r.detail
        );
    }
}

#[test]
fn scratch_is_removed_even_with_unreadable_dirs() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new().expect("scratch");
    let d = s.mkdir("work").expect("mkdir");
    fs::create_dir(d.join("work")).expect("mkdir");
    fs::write(d.join("work/f"), "x").expect("write");
    fs::set_permissions(d.join("work"), fs::Permissions::from_mode(0o000)).expect("chmod");
    let p = s.path.clone();
    drop(s);
    assert!(!p.exists());
}

/// The whole probe on the machine running the tests. Host-specific expectations apply only
/// where their preconditions hold (this project's dev host: root, kernel 6.18, Landlock ABI 7,
/// hybrid cgroups, kvm_pvm).
#[test]
fn probe_all_on_this_host() {
    let t = Instant::now();
    let rows = probe_all();
    let elapsed = t.elapsed();
    let get = |id: &str| {
        rows.iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("row {id} missing: {rows:#?}"))
    };
    for id in [
        "kernel",
        "arch",
        "user",
        "environment",
        "userns",
        "mount_pid_proc",
        "overlayfs",
        "idmapped_mounts",
        "seccomp",
        "landlock",
        "cgroups",
        "egress",
        "nftables",
        "kvm",
        "qemu",
        "net_helpers",
    ] {
        let r = get(id);
        assert!(!r.detail.is_empty(), "{id} has no detail");
        assert!(!r.needed_for.is_empty(), "{id} has no needed_for");
        if r.status != Status::Ok && id != "idmapped_mounts" && id != "kvm" {
            assert!(r.fix.is_some(), "{id} is {} without a fix: {r:?}", r.status);
        }
    }
    let mut ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), rows.len(), "duplicate row ids");
    let root = nix::unistd::geteuid().is_root();
    let host_root =
        root && userns_of(&fs::read_to_string("/proc/self/uid_map").unwrap_or_default()).is_none();
    assert_eq!(
        rows.iter().any(|r| r.id == "userns_unprivileged"),
        host_root
    );
    assert_eq!(!get("user").detail.starts_with("rootless"), root);

    // Anything that can run these tests can run processes in namespaces on a modern kernel.
    let (maj, min) =
        crate::kernel::version(&read_trim("/proc/sys/kernel/osrelease").unwrap_or_default());
    if (maj, min) >= (6, 1) && get("userns").status == Status::Ok {
        assert_eq!(
            get("mount_pid_proc").status,
            Status::Ok,
            "{:?}",
            get("mount_pid_proc")
        );
        assert_eq!(default_path_ok(&rows), get("seccomp").status == Status::Ok);
    }
    if let Ok(abi) = crate::sys::raw::landlock_abi() {
        assert_eq!(get("landlock").status, Status::Ok);
        assert!(get("landlock").detail.starts_with(&format!("ABI {abi} ")));
    }
    let cg = cgroups();
    if cg.version == CgroupVersion::Hybrid {
        assert!(
            get("cgroups").detail.starts_with("hybrid"),
            "{}",
            get("cgroups").detail
        );
        if root
            && cg
                .mounts
                .iter()
                .any(|m| m.mount_point == Path::new("/sys/fs/cgroup/unified"))
        {
            assert_eq!(get("cgroups").status, Status::Ok, "{:?}", get("cgroups"));
        }
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        // PVM cannot boot a stock guest: KVM is degraded, the microvm backend says TCG.
        let k = get("kvm");
        assert_eq!(k.status, Status::Degraded);
        assert!(
            get("microvm")
                .detail
                .contains("microvm: TCG, ~10–50× slower CPU"),
            "{:?}",
            get("microvm")
        );
        assert!(
            k.detail
                .contains("kvm_pvm (PVM) which cannot boot a stock guest kernel"),
            "{}",
            k.detail
        );
    }
    // Nothing left behind in the temp dir.
    let leftovers: Vec<_> = fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("airlock-doctor-{}-", std::process::id()))
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "scratch dirs left: {leftovers:?}");
    assert!(
        elapsed < Duration::from_secs(20),
        "probe_all took {elapsed:?}"
    );
}

#[test]
fn cgroups_report_is_fast_and_leaves_nothing() {
    let t = Instant::now();
    let r = cgroups();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(r.controllers.len(), 3);
    for c in &r.controllers {
        if let Some(d) = &c.own_dir {
            let left = fs::read_dir(d)
                .map(|rd| {
                    rd.flatten()
                        .filter(|e| {
                            e.file_name()
                                .to_string_lossy()
                                .starts_with(&format!("airlock-probe-{}-", std::process::id()))
                        })
                        .count()
                })
                .unwrap_or(0);
            assert_eq!(left, 0, "probe cgroup left in {}", d.display());
        }
    }
}

#[test]
fn the_microvm_row_says_what_the_kvm_probe_decided() {
    use airlock_model::plan::microvm::Accel;
    let file = Path::new("/cache/microvm/accel-0123");
    assert_eq!(
        vm::accel_text(false, None),
        "microvm: TCG, ~10–50× slower CPU"
    );
    assert_eq!(
        vm::accel_text(false, Some((Accel::Kvm, file))),
        "microvm: TCG, ~10–50× slower CPU",
        "an unusable /dev/kvm wins over an old decision"
    );
    assert!(vm::accel_text(true, None).contains("KVM if its probe boot succeeds"));
    assert_eq!(
        vm::accel_text(true, Some((Accel::Kvm, file))),
        "microvm: KVM (its probe boot succeeded)"
    );
    let tcg = vm::accel_text(true, Some((Accel::Tcg, file)));
    assert!(tcg.starts_with("microvm: TCG, ~10–50× slower CPU"), "{tcg}");
    assert!(
        tcg.contains("/cache/microvm/accel-0123; remove it to probe again"),
        "{tcg}"
    );
}
