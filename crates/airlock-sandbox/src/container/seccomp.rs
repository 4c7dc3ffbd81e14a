//! The sandbox's seccomp filter: default allow, with kernel attack surface and escape
//! primitives denied (EPERM), clone3 answered ENOSYS (so libc falls back to clone, whose flags
//! we can inspect), and the x32 ABI killed outright.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// Syscalls denied unconditionally. Named so tests and `policy explain` can list them.
pub const DENIED: &[(&str, i64)] = &[
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("setns", libc::SYS_setns),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("reboot", libc::SYS_reboot),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("syslog", libc::SYS_syslog),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("vhangup", libc::SYS_vhangup),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
    #[cfg(target_arch = "x86_64")]
    ("uselib", libc::SYS_uselib),
];

/// Namespace-creating clone/unshare flags: a sandboxed process may not create namespaces
/// (a new user namespace would hand it a fresh set of capabilities).
const NS_FLAGS: &[u64] = &[
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWCGROUP as u64,
    0x80, // CLONE_NEWTIME
];

/// Socket families denied outright.
const DENIED_FAMILIES: &[(&str, i32)] = &[
    ("AF_PACKET", libc::AF_PACKET),
    ("AF_VSOCK", libc::AF_VSOCK),
    ("AF_KEY", libc::AF_KEY),
    ("AF_ALG", libc::AF_ALG),
    ("AF_XDP", libc::AF_XDP),
    ("AF_BLUETOOTH", libc::AF_BLUETOOTH),
    ("AF_CAN", libc::AF_CAN),
    ("AF_TIPC", libc::AF_TIPC),
    ("AF_RDS", libc::AF_RDS),
    ("AF_LLC", libc::AF_LLC),
    ("AF_ATMPVC", libc::AF_ATMPVC),
    ("AF_X25", libc::AF_X25),
    ("AF_AX25", libc::AF_AX25),
    ("AF_NETROM", libc::AF_NETROM),
    ("AF_ROSE", libc::AF_ROSE),
    ("AF_DECnet", libc::AF_DECnet),
    ("AF_APPLETALK", libc::AF_APPLETALK),
    ("AF_IPX", libc::AF_IPX),
];

/// TIOCSTI (inject input into a terminal) and TIOCLINUX (console subcommands, incl. paste).
const DENIED_IOCTLS: &[u64] = &[libc::TIOCSTI as u64, 0x541C];

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the seccomp filter: {0}")]
    Build(String),
    #[error("installing the seccomp filter: {0}")]
    Install(String),
}

fn cond(arg: u8, len: Len, op: Op, val: u64) -> Cond {
    #[allow(clippy::unwrap_used)] // arg indexes here are constants below 6
    Cond::new(arg, len, op, val).unwrap()
}

fn rule(conds: Vec<Cond>) -> SeccompRule {
    #[allow(clippy::unwrap_used)] // every caller passes at least one condition
    SeccompRule::new(conds).unwrap()
}

/// The main filter's rules: syscall number -> conditions (empty = always).
fn deny_rules() -> BTreeMap<i64, Vec<SeccompRule>> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in DENIED {
        rules.insert(*nr, vec![]);
    }
    let ns_rules = |arg: u8| -> Vec<SeccompRule> {
        NS_FLAGS.iter().map(|&f| rule(vec![cond(arg, Len::Qword, Op::MaskedEq(f), f)])).collect()
    };
    rules.insert(libc::SYS_unshare, ns_rules(0));
    rules.insert(libc::SYS_clone, ns_rules(0));

    let mut sock: Vec<SeccompRule> =
        DENIED_FAMILIES.iter().map(|(_, af)| rule(vec![cond(0, Len::Dword, Op::Eq, *af as u64)])).collect();
    // Netlink: only NETLINK_ROUTE (read-only use by libc's getaddrinfo); audit, netfilter,
    // xfrm, kobject and friends are kernel attack surface.
    sock.push(rule(vec![
        cond(0, Len::Dword, Op::Eq, libc::AF_NETLINK as u64),
        cond(2, Len::Dword, Op::Ne, libc::NETLINK_ROUTE as u64),
    ]));
    // Raw IP sockets (also refused for lack of CAP_NET_RAW; belt and braces).
    for af in [libc::AF_INET, libc::AF_INET6] {
        sock.push(rule(vec![
            cond(0, Len::Dword, Op::Eq, af as u64),
            cond(1, Len::Dword, Op::MaskedEq(0xf), libc::SOCK_RAW as u64),
        ]));
    }
    rules.insert(libc::SYS_socket, sock);
    rules.insert(
        libc::SYS_ioctl,
        DENIED_IOCTLS.iter().map(|&r| rule(vec![cond(1, Len::Dword, Op::Eq, r)])).collect(),
    );
    rules
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, action: SeccompAction) -> Result<BpfProgram, SeccompError> {
    let f = SeccompFilter::new(rules, SeccompAction::Allow, action, ARCH).map_err(|e| SeccompError::Build(e.to_string()))?;
    f.try_into().map_err(|e: seccompiler::BackendError| SeccompError::Build(e.to_string()))
}

/// The compiled programs, in installation order.
pub fn programs() -> Result<Vec<BpfProgram>, SeccompError> {
    let mut main = compile(deny_rules(), SeccompAction::Errno(libc::EPERM as u32))?;
    #[cfg(target_arch = "x86_64")]
    {
        // x32 syscalls share the x86_64 audit arch but have bit 30 set: kill them before
        // anything else looks at the number.
        use seccompiler::sock_filter;
        let x32 = [
            sock_filter { code: 0x20, jt: 0, jf: 0, k: 0 },             // ld [nr]
            sock_filter { code: 0x35, jt: 0, jf: 1, k: 0x4000_0000 },   // jge X32_SYSCALL_BIT
            sock_filter { code: 0x06, jt: 0, jf: 0, k: 0x8000_0000 },   // ret KILL_PROCESS
        ];
        main.splice(0..0, x32);
    }
    let mut clone3 = BTreeMap::new();
    clone3.insert(libc::SYS_clone3, vec![]);
    let enosys = compile(clone3, SeccompAction::Errno(libc::ENOSYS as u32))?;
    Ok(vec![main, enosys])
}

/// Install the filters on the calling thread (no_new_privs must already be set).
pub fn install(progs: &[BpfProgram]) -> Result<(), SeccompError> {
    for p in progs {
        seccompiler::apply_filter(p).map_err(|e| SeccompError::Install(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_compiles_and_covers_the_floor() {
        let progs = programs().expect("compile");
        assert_eq!(progs.len(), 2);
        assert!(progs[0].len() > DENIED.len(), "every denied syscall needs at least one instruction");
        let names: Vec<_> = DENIED.iter().map(|(n, _)| *n).collect();
        for must in [
            "ptrace", "process_vm_readv", "process_vm_writev", "keyctl", "bpf", "perf_event_open", "userfaultfd",
            "io_uring_setup", "kexec_load", "init_module", "finit_module", "mount", "setns", "open_by_handle_at",
        ] {
            assert!(names.contains(&must), "{must} missing from the deny list");
        }
        let rules = deny_rules();
        assert_eq!(rules[&libc::SYS_unshare].len(), NS_FLAGS.len());
        assert_eq!(rules[&libc::SYS_clone].len(), NS_FLAGS.len());
        assert!(DENIED_FAMILIES.iter().any(|(n, _)| *n == "AF_PACKET"));
        assert!(DENIED_FAMILIES.iter().any(|(n, _)| *n == "AF_VSOCK"));
    }
}
