//! Kernel tunables through /proc/sys, /sys and cgroupfs.

use super::Ctx;
use crate::report::{Findings, Outcome};
use crate::sys::{self, fs};

/// Rewrite a sysctl with the value it already has: a real write that changes nothing.
fn rewrite_same(f: &mut Findings, path: &str) {
    let current = match fs::read_file(path, 4096) {
        Ok(v) => v,
        Err(e) => {
            f.blocked(format!("read {path}"), e);
            return;
        }
    };
    match fs::open(path, libc::O_WRONLY | libc::O_NOCTTY, 0) {
        Ok(fd) => match fs::write(&fd, &current) {
            Ok(_) => f.escaped(format!("write {path}"), "wrote (its current value back)"),
            Err(e) => f.blocked(format!("write {path}"), format!("opened, write: {e}")),
        },
        Err(e) => f.blocked(format!("open {path} O_WRONLY"), e),
    }
}

fn open_for_write(f: &mut Findings, path: &str) {
    let r = fs::open(path, libc::O_WRONLY | libc::O_NOCTTY | libc::O_NONBLOCK, 0);
    match r {
        Ok(_) => f.escaped(
            format!("open {path} O_WRONLY"),
            "opened for writing (nothing written)",
        ),
        Err(e) => f.blocked(format!("open {path} O_WRONLY"), e),
    }
}

pub fn proc_sys_write(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    rewrite_same(&mut f, "/proc/sys/kernel/hostname");
    rewrite_same(&mut f, "/proc/sys/net/ipv4/ip_forward");
    for path in [
        "/proc/sys/kernel/core_pattern",
        "/proc/sys/kernel/modprobe",
        "/proc/sys/vm/drop_caches",
        "/proc/sys/fs/binfmt_misc/register",
        "/proc/sysrq-trigger",
    ] {
        open_for_write(&mut f, path);
    }
    f.outcome()
}

pub fn sys_write(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    let targeted = [
        "/sys/kernel/uevent_helper",
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/kernel/profiling",
        "/sys/kernel/kexec_crash_size",
        "/sys/power/state",
        "/sys/class/net/lo/mtu",
        "/sys/module/printk/parameters/time",
    ];
    for path in targeted {
        open_for_write(&mut f, path);
    }
    // Beyond the known names: any writable-looking file two levels under /sys/kernel.
    let mut extra = Findings::new();
    let mut tried = 0usize;
    let mut opened: Vec<String> = Vec::new();
    for file in writable_looking_files(
        "/sys/kernel",
        2,
        &["debug", "tracing", "security", "config", "irq"],
    ) {
        if targeted.contains(&file.as_str()) {
            continue;
        }
        tried += 1;
        if fs::open(&file, libc::O_WRONLY | libc::O_NOCTTY | libc::O_NONBLOCK, 0).is_ok() {
            opened.push(file);
        }
    }
    if opened.is_empty() {
        extra.blocked(
            format!("{tried} other files under /sys/kernel"),
            "none opened for writing",
        );
    } else {
        let shown: Vec<&str> = opened.iter().take(5).map(String::as_str).collect();
        extra.escaped(
            format!("{} of {tried} other files under /sys/kernel", opened.len()),
            format!("opened for writing, e.g. {}", shown.join(", ")),
        );
    }
    let o1 = f.outcome();
    let o2 = extra.outcome();
    // Merge the two verdicts.
    if o2.blocked {
        Outcome {
            blocked: o1.blocked,
            detail: format!("{}; {}", o1.detail, o2.detail),
        }
    } else {
        Outcome::escaped(format!("{}; {}", o2.detail, o1.detail))
    }
}

/// Regular files with a write bit, `depth` levels under `root`, skipping `skip` names.
fn writable_looking_files(root: &str, depth: u32, skip: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if skip.contains(&name.as_str()) {
            continue;
        }
        let path = format!("{root}/{name}");
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        use std::os::unix::fs::PermissionsExt;
        if meta.is_file() && meta.permissions().mode() & 0o222 != 0 {
            out.push(path);
        } else if meta.is_dir() && depth > 1 {
            out.extend(writable_looking_files(&path, depth - 1, skip));
        }
        if out.len() > 500 {
            break;
        }
    }
    out
}

pub fn cgroup_write(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    let own = fs::read_file("/proc/self/cgroup", 8192)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let pid = sys::getpid().to_string();
    // Join the root cgroup of the hierarchy as mounted (v2 unified, or each v1 controller).
    let mut roots = vec![
        "/sys/fs/cgroup".to_string(),
        "/sys/fs/cgroup/unified".to_string(),
    ];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            roots.push(format!(
                "/sys/fs/cgroup/{}",
                e.file_name().to_string_lossy()
            ));
        }
    }
    roots.sort();
    roots.dedup();
    let mut any = false;
    for root in &roots {
        let procs = format!("{root}/cgroup.procs");
        if fs::dev_ino(&procs).is_err() {
            continue;
        }
        any = true;
        match fs::open(&procs, libc::O_WRONLY | libc::O_NOCTTY, 0) {
            Ok(fd) => match fs::write(&fd, pid.as_bytes()) {
                Ok(_) => f.escaped(format!("write {procs}"), "moved itself into this cgroup"),
                Err(e) => f.blocked(format!("write {procs}"), format!("opened, write: {e}")),
            },
            Err(e) => f.blocked(format!("open {procs} O_WRONLY"), e),
        }
    }
    // Raise its own limits: open the limit files of its own cgroup for writing.
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let path = path.trim_end_matches('/');
        let bases: Vec<String> = if ctrls.is_empty() {
            vec![
                format!("/sys/fs/cgroup{path}"),
                format!("/sys/fs/cgroup/unified{path}"),
            ]
        } else {
            ctrls
                .split(',')
                .map(|c| format!("/sys/fs/cgroup/{}{path}", c.trim_start_matches("name=")))
                .collect()
        };
        for base in bases {
            for file in [
                "memory.max",
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                "pids.max",
                "cpu.max",
                "cpu.cfs_quota_us",
            ] {
                let p = format!("{base}/{file}");
                if fs::dev_ino(&p).is_ok() {
                    any = true;
                    open_for_write(&mut f, &p);
                }
            }
        }
    }
    if !any {
        f.blocked("cgroupfs", "no cgroup files visible under /sys/fs/cgroup");
    }
    f.note(format!("own cgroups: {}", own.trim().replace('\n', " ")));
    f.outcome()
}

pub fn oom_score_adj(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    let path = "/proc/self/oom_score_adj";
    if let Ok(v) = fs::read_file(path, 32) {
        f.note(format!("current {}", String::from_utf8_lossy(&v).trim()));
    }
    match fs::open(path, libc::O_WRONLY | libc::O_NOCTTY, 0) {
        Ok(fd) => match fs::write(&fd, b"-1000") {
            Ok(_) => f.escaped(
                "write -1000 to oom_score_adj",
                "now immune to the OOM killer",
            ),
            Err(e) => f.blocked("write -1000 to oom_score_adj", e),
        },
        Err(e) => f.blocked(format!("open {path}"), e),
    }
    f.outcome()
}
