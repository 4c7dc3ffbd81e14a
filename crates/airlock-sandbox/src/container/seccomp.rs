//! The sandbox's seccomp filter: default allow, with kernel attack surface and escape
//! primitives denied (EPERM), clone3 answered ENOSYS (so libc falls back to clone, whose flags
//! we can inspect), and the x32 ABI killed outright.

//!
//! The BPF program is generated here rather than with seccompiler: seccompiler emits one linear
//! chain, and the kernel emulates a new filter once per syscall number when it is installed (to
//! build its allow-cache), so a 500-instruction chain costs ~0.2 ms per sandbox start. A binary
//! search over the syscall numbers keeps install cost and per-syscall cost logarithmic.

use std::collections::BTreeMap;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;

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
const DENIED_IOCTLS: &[u64] = &[libc::TIOCSTI, 0x541C];

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the seccomp filter: {0}")]
    Build(String),
    #[error("installing the seccomp filter: {0}")]
    Install(std::io::Error),
}

/// One comparison on the low 32 bits of a syscall argument (every argument we inspect is an
/// `int`/`unsigned int` to the kernel, or has all meaningful bits in the low word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq(u32),
    Ne(u32),
    /// `(arg & mask) == value`
    MaskedEq(u32, u32),
}

/// A conjunction of argument comparisons; an empty rule always matches.
pub type Rule = Vec<(u8, Cmp)>;

/// What a syscall number leads to when one of its rules matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub errno: u32,
    /// Any rule matching means `errno`; no rules at all means always.
    pub rules: Vec<Rule>,
}

/// The policy as data: syscall number -> entry.
pub fn policy() -> BTreeMap<u32, Entry> {
    let mut p = BTreeMap::new();
    let always = |errno| Entry {
        errno,
        rules: vec![],
    };
    for (_, nr) in DENIED {
        p.insert(*nr as u32, always(libc::EPERM as u32));
    }
    // clone3 takes its flags in memory, out of a filter's reach: answer ENOSYS so libc falls
    // back to clone(2), whose flags we can check.
    p.insert(libc::SYS_clone3 as u32, always(libc::ENOSYS as u32));
    let ns_rules: Vec<Rule> = NS_FLAGS
        .iter()
        .map(|&f| vec![(0, Cmp::MaskedEq(f as u32, f as u32))])
        .collect();
    p.insert(
        libc::SYS_unshare as u32,
        Entry {
            errno: libc::EPERM as u32,
            rules: ns_rules.clone(),
        },
    );
    p.insert(
        libc::SYS_clone as u32,
        Entry {
            errno: libc::EPERM as u32,
            rules: ns_rules,
        },
    );
    let mut sock: Vec<Rule> = DENIED_FAMILIES
        .iter()
        .map(|(_, af)| vec![(0, Cmp::Eq(*af as u32))])
        .collect();
    // Netlink: only NETLINK_ROUTE (read-only use by libc's getaddrinfo); audit, netfilter,
    // xfrm, kobject and friends are kernel attack surface.
    sock.push(vec![
        (0, Cmp::Eq(libc::AF_NETLINK as u32)),
        (2, Cmp::Ne(libc::NETLINK_ROUTE as u32)),
    ]);
    // Raw IP sockets (also refused for lack of CAP_NET_RAW; belt and braces).
    for af in [libc::AF_INET, libc::AF_INET6] {
        sock.push(vec![
            (0, Cmp::Eq(af as u32)),
            (1, Cmp::MaskedEq(0xf, libc::SOCK_RAW as u32)),
        ]);
    }
    p.insert(
        libc::SYS_socket as u32,
        Entry {
            errno: libc::EPERM as u32,
            rules: sock,
        },
    );
    // personality: only the harmless personas (Docker's set); ADDR_NO_RANDOMIZE and
    // READ_IMPLIES_EXEC would switch off ASLR / NX for whatever the sandbox execs next.
    let persona_ok = [0u32, 0x8, 0x20000, 0x20008, 0xffff_ffff];
    p.insert(
        libc::SYS_personality as u32,
        Entry {
            errno: libc::EPERM as u32,
            rules: vec![persona_ok.iter().map(|&v| (0, Cmp::Ne(v))).collect()],
        },
    );
    let ioctls = DENIED_IOCTLS
        .iter()
        .map(|&r| vec![(1, Cmp::Eq(r as u32))])
        .collect();
    p.insert(
        libc::SYS_ioctl as u32,
        Entry {
            errno: libc::EPERM as u32,
            rules: ioctls,
        },
    );
    p
}

/// What the filter does with the system call `name`, in words (for `policy_explain`), read off
/// the same tables the filter is built from; `None` when the filter does not name it (allowed
/// by the filter; the sandbox still has no capabilities).
pub fn describe(name: &str) -> Option<String> {
    if let Some((n, _)) = DENIED.iter().find(|(n, _)| *n == name) {
        return Some(format!("{n} is always denied (EPERM)"));
    }
    let ns: Vec<&str> = vec![
        "CLONE_NEWUSER",
        "CLONE_NEWNS",
        "CLONE_NEWPID",
        "CLONE_NEWNET",
        "CLONE_NEWUTS",
        "CLONE_NEWIPC",
        "CLONE_NEWCGROUP",
        "CLONE_NEWTIME",
    ];
    debug_assert_eq!(ns.len(), NS_FLAGS.len());
    Some(match name {
        "clone3" => "clone3 answers ENOSYS (its flags are out of a filter's reach), so libc falls \
                     back to clone, whose flags are checked"
            .into(),
        "unshare" | "clone" => format!(
            "{name} is denied (EPERM) with any namespace flag ({}): a new user namespace would \
             hand the process a fresh set of capabilities; without them it is allowed",
            ns.join(", ")
        ),
        "socket" => {
            format!(
            "socket is denied (EPERM) for the families {}, netlink other than NETLINK_ROUTE, and \
             raw IPv4/IPv6 sockets; TCP, UDP and Unix sockets are allowed",
            DENIED_FAMILIES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        )
        }
        "personality" => "personality is denied (EPERM) except the harmless personas: \
                          ADDR_NO_RANDOMIZE and READ_IMPLIES_EXEC would switch off ASLR / NX"
            .into(),
        "ioctl" => "ioctl is denied (EPERM) for TIOCSTI (typing into a terminal) and TIOCLINUX; \
                    other requests are allowed"
            .into(),
        _ => return None,
    })
}

pub use crate::sys::Insn;

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JA: u16 = 0x05;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg(i: u8) -> u32 {
    16 + 8 * i as u32
}

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

fn ret(k: u32) -> Insn {
    ins(RET_K, 0, 0, k)
}

/// Code for one syscall's entry; the syscall number is in A on entry.
fn entry_code(e: &Entry) -> Vec<Insn> {
    let deny = ret(RET_ERRNO | (e.errno & 0xffff));
    if e.rules.is_empty() {
        return vec![deny];
    }
    let mut out = Vec::new();
    for rule in &e.rules {
        // Each comparison either falls through or jumps to the end of this rule.
        let mut body: Vec<Vec<Insn>> = Vec::new();
        for (arg, cmp) in rule {
            let mut c = vec![ins(LD_W_ABS, 0, 0, off_arg(*arg))];
            match *cmp {
                Cmp::Eq(v) => c.push(ins(JEQ_K, 0, u8::MAX, v)),
                Cmp::Ne(v) => c.push(ins(JEQ_K, u8::MAX, 0, v)),
                Cmp::MaskedEq(m, v) => {
                    c.push(ins(AND_K, 0, 0, m));
                    c.push(ins(JEQ_K, 0, u8::MAX, v));
                }
            }
            body.push(c);
        }
        let total: usize = body.iter().map(Vec::len).sum::<usize>() + 1; // + the deny
        let mut pos = 0;
        for c in body {
            for mut i in c {
                pos += 1;
                // Jumps marked u8::MAX go past this rule's deny instruction.
                let skip = (total - pos) as u8;
                if i.jt == u8::MAX {
                    i.jt = skip;
                }
                if i.jf == u8::MAX {
                    i.jf = skip;
                }
                out.push(i);
            }
        }
        out.push(deny);
    }
    out.push(ret(RET_ALLOW));
    out
}

/// Binary search over the sorted syscall numbers; A holds the number throughout.
fn tree(entries: &[(u32, &Entry)]) -> Vec<Insn> {
    match entries {
        [] => vec![ret(RET_ALLOW)],
        [(nr, e)] => {
            let body = entry_code(e);
            let mut out = vec![ins(JEQ_K, 1, 0, *nr), ret(RET_ALLOW)];
            out.extend(body);
            out
        }
        _ => {
            let mid = entries.len() / 2;
            let left = tree(&entries[..mid]);
            let right = tree(&entries[mid..]);
            // if nr >= k: skip to `ja` -> right; else: skip the ja -> left.
            let mut out = vec![
                ins(JGE_K, 0, 1, entries[mid].0),
                ins(JA, 0, 0, left.len() as u32),
            ];
            out.extend(left);
            out.extend(right);
            out
        }
    }
}

/// The whole program: arch check, x32 kill, then the search.
pub fn program() -> Vec<Insn> {
    let p = policy();
    let entries: Vec<(u32, &Entry)> = p.iter().map(|(k, v)| (*k, v)).collect();
    let mut out = vec![
        ins(LD_W_ABS, 0, 0, OFF_ARCH),
        ins(JEQ_K, 1, 0, AUDIT_ARCH),
        ret(RET_KILL_PROCESS),
        ins(LD_W_ABS, 0, 0, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        // x32 syscalls share the x86_64 audit arch but have bit 30 set.
        out.push(ins(JGE_K, 0, 1, 0x4000_0000));
        out.push(ret(RET_KILL_PROCESS));
    }
    out.extend(tree(&entries));
    out
}

/// The compiled program, ready to install.
pub fn programs() -> Result<Vec<Insn>, SeccompError> {
    let p = program();
    if p.len() > 4096 {
        return Err(SeccompError::Build(format!(
            "program too long: {} instructions",
            p.len()
        )));
    }
    Ok(p)
}

/// Install the filter on the calling thread (no_new_privs or CAP_SYS_ADMIN in the user namespace).
pub fn install(prog: &[Insn]) -> Result<(), SeccompError> {
    crate::sys::seccomp_install(prog).map_err(SeccompError::Install)
}

/// A classic-BPF interpreter for the subset we emit: lets tests check decisions exactly.
#[cfg(test)]
pub fn eval(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let (mut a, mut pc) = (0u32, 0usize);
    loop {
        let i = prog[pc];
        pc += 1;
        match i.code {
            LD_W_ABS => {
                a = u32::from_le_bytes(
                    data[i.k as usize..i.k as usize + 4]
                        .try_into()
                        .expect("4 bytes"),
                )
            }
            AND_K => a &= i.k,
            JA => pc += i.k as usize,
            JEQ_K => pc += if a == i.k { i.jt } else { i.jf } as usize,
            JGE_K => pc += if a >= i.k { i.jt } else { i.jf } as usize,
            RET_K => return i.k,
            c => panic!("unexpected opcode {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn every_described_call_is_in_the_filter() {
        let p = policy();
        for (name, nr) in DENIED {
            assert!(
                describe(name).is_some_and(|d| d.contains("denied")),
                "{name}"
            );
            assert!(p.contains_key(&(*nr as u32)));
        }
        for (name, nr) in [
            ("unshare", libc::SYS_unshare),
            ("clone", libc::SYS_clone),
            ("clone3", libc::SYS_clone3),
            ("socket", libc::SYS_socket),
            ("personality", libc::SYS_personality),
            ("ioctl", libc::SYS_ioctl),
        ] {
            assert!(describe(name).is_some(), "{name}");
            assert!(p.contains_key(&(nr as u32)), "{name}");
        }
        assert_eq!(describe("read"), None);
        assert_eq!(describe("openat"), None);
    }
    use super::*;

    const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
    fn run(nr: i64, args: [u64; 6]) -> u32 {
        eval(&program(), AUDIT_ARCH, nr as u32, args)
    }

    #[test]
    fn denies_the_floor_and_allows_the_rest() {
        let prog = program();
        assert!(
            prog.len() < 450,
            "compact program expected, got {}",
            prog.len()
        );
        for (name, nr) in DENIED {
            assert_eq!(run(*nr, [0; 6]), EPERM, "{name}");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_exit_group,
            libc::SYS_mmap,
            libc::SYS_getpid,
        ] {
            assert_eq!(run(nr, [0; 6]), RET_ALLOW, "syscall {nr}");
        }
        // Every syscall number not in the policy is allowed, every one in it decided by it.
        let p = policy();
        for nr in 0..600u32 {
            let got = eval(&prog, AUDIT_ARCH, nr, [0; 6]);
            match p.get(&nr) {
                Some(e) if e.rules.is_empty() => assert_eq!(got, RET_ERRNO | e.errno, "nr {nr}"),
                _ => assert_eq!(got, RET_ALLOW, "nr {nr}"),
            }
        }
        assert_eq!(
            run(libc::SYS_clone3, [0; 6]),
            RET_ERRNO | libc::ENOSYS as u32
        );
    }

    #[test]
    fn wrong_arch_and_x32_are_killed() {
        assert_eq!(
            eval(&program(), 0x4000_0003, libc::SYS_getpid as u32, [0; 6]),
            RET_KILL_PROCESS
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            run(0x4000_0000 | libc::SYS_ptrace, [0; 6]),
            RET_KILL_PROCESS
        );
    }

    #[test]
    fn namespace_flags_sockets_and_ioctls() {
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(run(libc::SYS_unshare, [newuser, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(
            run(
                libc::SYS_unshare,
                [
                    libc::CLONE_NEWNS as u64 | libc::CLONE_FS as u64,
                    0,
                    0,
                    0,
                    0,
                    0
                ]
            ),
            EPERM
        );
        assert_eq!(
            run(libc::SYS_unshare, [libc::CLONE_FILES as u64, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        let fork_flags =
            (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;
        assert_eq!(run(libc::SYS_clone, [fork_flags, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            run(libc::SYS_clone, [fork_flags | newuser, 0, 0, 0, 0, 0]),
            EPERM
        );
        // High bits set do not hide the low word.
        assert_eq!(
            run(libc::SYS_clone, [(1 << 40) | newuser, 0, 0, 0, 0, 0]),
            EPERM
        );

        let s =
            |d: i32, t: i32, p: i32| run(libc::SYS_socket, [d as u64, t as u64, p as u64, 0, 0, 0]);
        assert_eq!(s(libc::AF_INET, libc::SOCK_STREAM, 0), RET_ALLOW);
        assert_eq!(
            s(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0),
            RET_ALLOW
        );
        assert_eq!(s(libc::AF_UNIX, libc::SOCK_STREAM, 0), RET_ALLOW);
        assert_eq!(
            s(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
            RET_ALLOW
        );
        assert_eq!(
            s(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT),
            EPERM
        );
        assert_eq!(s(libc::AF_PACKET, libc::SOCK_RAW, 0), EPERM);
        assert_eq!(s(libc::AF_VSOCK, libc::SOCK_STREAM, 0), EPERM);
        assert_eq!(
            s(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                libc::IPPROTO_ICMP
            ),
            EPERM
        );
        assert_eq!(s(libc::AF_INET6, libc::SOCK_RAW, 0), EPERM);

        let io = |cmd: u64| run(libc::SYS_ioctl, [0, cmd, 0, 0, 0, 0]);
        assert_eq!(io(libc::TIOCSTI), EPERM);
        assert_eq!(
            io((1 << 32) | libc::TIOCSTI),
            EPERM,
            "high bits must not hide TIOCSTI"
        );
        assert_eq!(io(0x541C), EPERM);
        assert_eq!(io(libc::TIOCGWINSZ), RET_ALLOW);
        assert_eq!(io(libc::TCGETS), RET_ALLOW);

        let pers = |v: u64| run(libc::SYS_personality, [v, 0, 0, 0, 0, 0]);
        assert_eq!(pers(0xffff_ffff), RET_ALLOW, "query");
        assert_eq!(pers(0), RET_ALLOW);
        assert_eq!(pers(0x0040000), EPERM, "ADDR_NO_RANDOMIZE");
        assert_eq!(pers(0x0400000), EPERM, "READ_IMPLIES_EXEC");
    }

    #[test]
    fn the_floor_is_listed() {
        let names: Vec<_> = DENIED.iter().map(|(n, _)| *n).collect();
        for must in [
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "keyctl",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "io_uring_setup",
            "kexec_load",
            "init_module",
            "finit_module",
            "mount",
            "setns",
            "open_by_handle_at",
        ] {
            assert!(names.contains(&must), "{must} missing from the deny list");
        }
    }
}
