//! Kernel attack surface: keyrings, bpf, io_uring, perf, userfaultfd, personality, kexec, modules.

use super::Ctx;
use crate::report::{Findings, Outcome};
use crate::sys::{kernel, process};

pub fn keyctl(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    f.result(
        "add_key(user, process keyring)",
        &kernel::add_key("airlock-probe"),
    );
    f.result(
        "keyctl(JOIN_SESSION_KEYRING)",
        &kernel::keyctl_join_session(),
    );
    f.outcome()
}

pub fn bpf(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    f.result("bpf(BPF_MAP_CREATE array)", &kernel::bpf_map_create());
    f.result("bpf(BPF_PROG_LOAD socket filter)", &kernel::bpf_prog_load());
    f.outcome()
}

pub fn io_uring(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    f.result("io_uring_setup(1)", &kernel::io_uring_setup());
    f.outcome()
}

pub fn perf_event_open(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    f.result(
        "perf_event_open(sw cpu-clock, self, user only)",
        &kernel::perf_event_open(),
    );
    f.outcome()
}

pub fn userfaultfd(_: &Ctx) -> Outcome {
    const UFFD_USER_MODE_ONLY: libc::c_int = 1;
    let mut f = Findings::new();
    f.result(
        "userfaultfd(UFFD_USER_MODE_ONLY)",
        &kernel::userfaultfd(libc::O_CLOEXEC | UFFD_USER_MODE_ONLY),
    );
    f.result("userfaultfd(0)", &kernel::userfaultfd(libc::O_CLOEXEC));
    f.outcome()
}

pub fn personality(_: &Ctx) -> Outcome {
    const QUERY: libc::c_ulong = 0xffff_ffff;
    const ADDR_NO_RANDOMIZE: libc::c_ulong = 0x0040000;
    const READ_IMPLIES_EXEC: libc::c_ulong = 0x0400000;
    let mut f = Findings::new();
    let old = match process::personality(QUERY) {
        Ok(p) => p as libc::c_ulong,
        Err(e) => {
            f.blocked("personality(query)", e);
            return f.outcome();
        }
    };
    for (name, flag) in [
        ("ADDR_NO_RANDOMIZE", ADDR_NO_RANDOMIZE),
        ("READ_IMPLIES_EXEC", READ_IMPLIES_EXEC),
    ] {
        let set = process::personality(old | flag);
        let now = process::personality(QUERY).map(|p| p as libc::c_ulong);
        match (set, now) {
            (Ok(_), Ok(p)) if p & flag != 0 => {
                f.escaped(format!("personality({name})"), "flag set")
            }
            (Ok(_), _) => f.blocked(
                format!("personality({name})"),
                "call returned but the flag did not stick",
            ),
            (Err(e), _) => f.blocked(format!("personality({name})"), e),
        }
        let _ = process::personality(old);
    }
    f.outcome()
}

pub fn kexec_load(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    f.denial("kexec_load(17 segments)", &kernel::kexec_load_probe());
    f.outcome()
}

pub fn module_load(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    f.denial("init_module(empty image)", &kernel::init_module_probe());
    f.denial("finit_module(-1)", &kernel::finit_module_probe());
    f.denial(
        "delete_module(no such module)",
        &kernel::delete_module_probe(),
    );
    f.outcome()
}
