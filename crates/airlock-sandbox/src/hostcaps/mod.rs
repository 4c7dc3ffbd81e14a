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
mod host;
mod kernel;
mod ns;
mod row;
mod vm;

pub use cgroups::{
    analyze as analyze_cgroups, cgroup_mounts, cgroups, own_dir as cgroup_own_dir, parse_mountinfo,
    parse_proc_cgroup, CgroupFs, CgroupMount, CgroupReport, CgroupVersion, ControllerReport,
    Hierarchy, Membership, MountEntry, RealFs, UnifiedReport, CONTROLLERS,
};

use host::{read_trim, Host};
#[cfg(test)]
use host::{userns_of, Scratch};
pub use row::{Row, Status};
use std::fs;

/// Row ids the default path (container backend: user namespaces, mount/pid namespaces with a
/// fresh /proc, seccomp) depends on.
pub const DEFAULT_PATH: &[&str] = &["userns", "mount_pid_proc", "seccomp", "overlayfs"];

/// Every default-path row is present and ok.
pub fn default_path_ok(rows: &[Row]) -> bool {
    DEFAULT_PATH
        .iter()
        .all(|id| rows.iter().any(|r| r.id == *id && r.status == Status::Ok))
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
    rows.push(vm::kvm_row());
    rows.push(vm::qemu_row());
    rows.push(vm::microvm_row());
    rows.push(vm::net_helpers_row());
    rows
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
    let (maj, min) = crate::kernel::version(&release);
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
fn user_name(uid: u32) -> Option<String> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
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

#[cfg(test)]
mod tests;
