//! Reaching into PID 1 (the sandbox's init, or the host's if the PID namespace is missing).

use super::Ctx;
use crate::report::{Findings, Outcome};
use crate::sys::{self, fs, process};

fn note_pid1(f: &mut Findings) {
    if sys::getpid() == 1 {
        f.note("the probe itself is PID 1");
    }
}

pub fn ptrace_pid1(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    note_pid1(&mut f);
    // SEIZE first: it does not stop the tracee. Our process exits right after the check, which
    // detaches automatically.
    let seize = process::ptrace(libc::PTRACE_SEIZE, 1);
    f.result("PTRACE_SEIZE 1", &seize);
    if seize.is_ok() {
        return f.outcome();
    }
    let attach = process::ptrace(libc::PTRACE_ATTACH, 1);
    if attach.is_ok() {
        // Wait for the attach stop, then let it go without a signal.
        let _ = process::waitpid(1, libc::__WALL);
        let _ = process::ptrace(libc::PTRACE_DETACH, 1);
    }
    f.result("PTRACE_ATTACH 1", &attach);
    f.outcome()
}

pub fn proc1_mem(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    note_pid1(&mut f);
    match fs::open("/proc/1/mem", libc::O_RDONLY, 0) {
        Ok(fd) => {
            let mut how = "opened".to_string();
            if let Some(addr) = first_mapping(1) {
                let mut buf = [0u8; 16];
                match fs::pread(&fd, &mut buf, addr as i64) {
                    Ok(n) => how = format!("opened and read {n} bytes at {addr:#x}"),
                    Err(e) => how = format!("opened; read at {addr:#x}: {e}"),
                }
            }
            f.escaped("open /proc/1/mem", how);
        }
        Err(e) => f.blocked("open /proc/1/mem", e),
    }
    f.outcome()
}

pub fn proc1_environ(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    note_pid1(&mut f);
    match fs::read_file("/proc/1/environ", 1 << 16) {
        Ok(env) if env.is_empty() => f.blocked("read /proc/1/environ", "readable but empty"),
        Ok(env) => {
            let names: Vec<String> = env
                .split(|&b| b == 0)
                .filter_map(|kv| kv.split(|&b| b == b'=').next())
                .filter(|k| !k.is_empty())
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .take(12)
                .collect();
            f.escaped(
                "read /proc/1/environ",
                format!("{} bytes, variables {}", env.len(), names.join(",")),
            );
        }
        Err(e) => f.blocked("read /proc/1/environ", e),
    }
    f.outcome()
}

pub fn process_vm_readv(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    note_pid1(&mut f);
    // The kernel checks ptrace access before touching the remote range, so EFAULT on an
    // unmapped address still means "allowed".
    let addr = first_mapping(1).unwrap_or(0x1000);
    let what = format!("process_vm_readv(1, {addr:#x})");
    match process::process_vm_read(1, addr, 16) {
        Err(e) if e.0 == libc::ESRCH => f.blocked(what, e),
        r => f.denial(what, &r),
    }
    f.outcome()
}

/// The start of the first mapping in /proc/PID/maps, if readable.
fn first_mapping(pid: i32) -> Option<usize> {
    let maps = fs::read_file(&format!("/proc/{pid}/maps"), 256).ok()?;
    let line = String::from_utf8_lossy(&maps).into_owned();
    let start = line.split('-').next()?;
    usize::from_str_radix(start, 16).ok()
}
