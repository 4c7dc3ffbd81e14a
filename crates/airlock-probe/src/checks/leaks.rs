//! What the sandbox inherited or can see of the host: descriptors, cwd, executables, processes.

use super::Ctx;
use crate::report::{Findings, Outcome};
use crate::sys::{fs, Errno};

/// Taken by `main` before the probe opens anything, so every fd beyond 2 was inherited.
pub fn scan_initial_fds() -> Outcome {
    let limit = fs::nofile_limit().min(65536) as libc::c_int;
    let open: Vec<libc::c_int> = (3..limit).filter(|&fd| fs::fd_is_open(fd)).collect();
    if open.is_empty() {
        return Outcome::blocked(format!(
            "only 0, 1, 2 open (scanned 3..{limit} with F_GETFD)"
        ));
    }
    // Name them through /proc (the directory fd this opens is the first free number, so it can
    // be told apart: it is not in `open`).
    let names: Vec<String> = open
        .iter()
        .map(
            |fd| match std::fs::read_link(format!("/proc/self/fd/{fd}")) {
                Ok(target) => format!("fd {fd} -> {}", target.display()),
                Err(_) => format!("fd {fd}"),
            },
        )
        .collect();
    Outcome::escaped(format!("inherited descriptors: {}", names.join(", ")))
}

pub fn fds(ctx: &Ctx) -> Outcome {
    ctx.initial_fds.clone().unwrap_or_else(scan_initial_fds)
}

pub fn cwd_leak(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    match fs::getcwd_raw() {
        Ok(cwd) if cwd.starts_with("(unreachable)") => {
            f.escaped("getcwd", format!("{cwd:?}: cwd is outside the root"))
        }
        Ok(cwd) => f.blocked("getcwd", format!("{cwd:?}")),
        Err(e) => f.escaped("getcwd", format!("{e}: cwd is not reachable from the root")),
    }
    // Climb with ".." from the cwd: inside the root we meet "/" on the way up; outside we reach a
    // top (".." == ".") that is not our root.
    match fs::dev_ino("/") {
        Ok(root) => {
            let mut path = String::from(".");
            let mut verdict = None;
            for _ in 0..256 {
                let here = fs::dev_ino(&path);
                let up = fs::dev_ino(&format!("{path}/.."));
                match (here, up) {
                    (Ok(h), _) if h == root => {
                        verdict = Some(true);
                        break;
                    }
                    (Ok(h), Ok(u)) if h == u => {
                        verdict = Some(false);
                        break;
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        f.note(format!("climb stopped at {path}: {e}"));
                        break;
                    }
                    _ => path.push_str("/.."),
                }
            }
            match verdict {
                Some(true) => f.blocked("climb from cwd", "reached the sandbox root"),
                Some(false) => f.escaped(
                    "climb from cwd",
                    "reached a top directory that is not the sandbox root",
                ),
                None => f.note("climb inconclusive"),
            }
        }
        Err(e) => f.note(format!("stat /: {e}")),
    }
    f.outcome()
}

/// Open every visible executable for writing (without truncating: nothing is modified).
pub fn exe_overwrite(ctx: &Ctx) -> Outcome {
    let mut f = Findings::new();
    let mut paths: Vec<String> = vec!["/proc/self/exe".to_string()];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.bytes().all(|b| b.is_ascii_digit()) {
                paths.push(format!("/proc/{name}/exe"));
            }
        }
    }
    paths.extend(ctx.exe_paths.iter().cloned());
    let mut seen_targets: Vec<String> = Vec::new();
    for path in paths {
        let target = std::fs::read_link(&path)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        if !target.is_empty() {
            if seen_targets.contains(&target) {
                continue;
            }
            seen_targets.push(target.clone());
        }
        let label = if target.is_empty() {
            format!("open {path} O_WRONLY")
        } else {
            format!("open {path} ({target}) O_WRONLY")
        };
        match fs::open(&path, libc::O_WRONLY | libc::O_NOCTTY, 0) {
            Ok(_) => f.escaped(label, "opened for writing"),
            // ETXTBSY comes after every permission and read-only-mount check except the
            // mount's own: ask access(2), which reports EROFS/EACCES but not ETXTBSY.
            Err(Errno(libc::ETXTBSY)) => match fs::access_w(&path) {
                Ok(()) => f.escaped(
                    label,
                    "ETXTBSY only while it runs: writable once it exits (reopen via O_PATH)",
                ),
                Err(e) => f.blocked(label, format!("ETXTBSY, and access(W_OK): {e}")),
            },
            Err(Errno(libc::ENOENT)) => f.blocked(path, "ENOENT"),
            Err(e) => f.blocked(label, e),
        }
    }
    f.outcome()
}

pub fn host_procs(ctx: &Ctx) -> Outcome {
    const HANDFUL: usize = 10;
    let mut f = Findings::new();
    match std::fs::read_dir("/proc") {
        Ok(entries) => {
            let pids: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                .collect();
            let what = format!("{} processes visible in /proc", pids.len());
            if pids.len() > HANDFUL {
                f.escaped("count /proc", what);
            } else {
                f.blocked("count /proc", format!("{what}: {}", pids.join(" ")));
            }
        }
        Err(e) => f.blocked("list /proc", e),
    }
    if let Some(pid) = ctx.host_pid {
        match fs::dev_ino(&format!("/proc/{pid}")) {
            Ok(_) => f.escaped(format!("host pid {pid}"), "present in /proc"),
            Err(e) => f.blocked(format!("host pid {pid}"), e),
        }
    }
    if let Ok(cmd) = fs::read_file("/proc/1/cmdline", 200) {
        let cmd: String = String::from_utf8_lossy(&cmd).replace('\0', " ");
        f.note(format!("pid 1 is {:?}", cmd.trim()));
    }
    f.outcome()
}
