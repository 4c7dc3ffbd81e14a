//! Kernel security features: seccomp (a filter is really installed in a child), Landlock
//! (ABI query), nf_tables (a netlink request in a fresh network namespace).

use super::child::{self, Outcome, Reporter};
use super::host::{errstr, read_trim, which, Host};
use super::row::{Row, Status};
use crate::sys::raw;
use nix::sched::{unshare, CloneFlags};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

const SC_NNP: u8 = 1;
const SC_INSTALL: u8 = 2;
const SC_CHECK: u8 = 3;
const NF_UNSHARE: u8 = 10;
const NF_SOCKET: u8 = 11;
const NF_QUERY: u8 = 12;

/// The errno the probe filter answers getppid(2) with.
const PROBE_ERRNO: u32 = libc::ENOTRECOVERABLE as u32;

/// Parsed `Seccomp:` / `Seccomp_filters:` of /proc/self/status.
pub(super) fn seccomp_status(status: &str) -> (Option<u32>, Option<u32>) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
    };
    (field("Seccomp:"), field("Seccomp_filters:"))
}

/// AUDIT_ARCH_* of the running architecture.
fn audit_arch() -> Option<u32> {
    match std::env::consts::ARCH {
        "x86_64" => Some(0xC000_003E),
        "aarch64" => Some(0xC000_00B7),
        "riscv64" => Some(0xC000_00F3),
        _ => None,
    }
}

/// A minimal filter: getppid(2) answers PROBE_ERRNO, everything else is allowed.
pub(super) fn probe_filter(arch: u32) -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    vec![
        ins(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        ins(JEQ_K, 0, 3, arch),
        ins(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        ins(JEQ_K, 0, 1, libc::SYS_getppid as u32),
        ins(RET_K, 0, 0, RET_ERRNO | PROBE_ERRNO),
        ins(RET_K, 0, 0, RET_ALLOW),
    ]
}

pub(super) fn seccomp_row(_h: &Host) -> Row {
    let (id, name, needed) = (
        "seccomp",
        "seccomp filters",
        "every sandbox: the syscall filter (ptrace, bpf, keyctl, io_uring, mount, new namespaces…)",
    );
    let missing = |detail: String, fix: &str| {
        Row::new(
            id,
            name,
            Status::Missing,
            detail,
            Some(fix.to_string()),
            needed,
        )
    };
    const KFIX: &str = "use a kernel built with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y";
    let mode = match raw::get_seccomp_mode() {
        Ok(m) => m,
        Err(e) => return missing(format!("prctl(PR_GET_SECCOMP) failed: {e}"), KFIX),
    };
    let actions = read_trim("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    let have = |a: &str| actions.split_whitespace().any(|w| w == a);
    let lacking: Vec<&str> = ["errno", "kill_process"]
        .into_iter()
        .filter(|a| !have(a))
        .collect();
    if actions.is_empty() {
        return missing(
            "/proc/sys/kernel/seccomp/actions_avail is missing: no seccomp filter support".into(),
            KFIX,
        );
    }
    if !lacking.is_empty() {
        return missing(
            format!(
                "filter actions missing: {} (available: {actions})",
                lacking.join(", ")
            ),
            "use a Linux 4.14+ kernel with CONFIG_SECCOMP_FILTER=y",
        );
    }
    let Some(arch) = audit_arch() else {
        return missing(
            format!(
                "no seccomp support in airlock for {}",
                std::env::consts::ARCH
            ),
            "airlock supports x86_64, aarch64 and riscv64",
        );
    };
    let prog = probe_filter(arch);
    let o: Outcome = child::run(TIMEOUT, |r: &Reporter| {
        if !r.check_io(
            SC_NNP,
            crate::sys::prctl_simple(libc::PR_SET_NO_NEW_PRIVS, 1),
        ) {
            return 1;
        }
        if !r.check_io(SC_INSTALL, raw::seccomp_install(&prog)) {
            return 1;
        }
        match raw::raw_getppid() {
            Err(e) => r.ok(SC_CHECK, e as i64),
            Ok(_) => r.err(SC_CHECK, 0),
        }
        0
    });
    if let Some(e) = o.errno(SC_NNP) {
        return missing(
            format!("prctl(PR_SET_NO_NEW_PRIVS) failed: {}", errstr(e)),
            KFIX,
        );
    }
    if let Some(e) = o.errno(SC_INSTALL) {
        return missing(
            format!("installing a seccomp filter failed: {}", errstr(e)),
            KFIX,
        );
    }
    match o.get(SC_CHECK) {
        Some(Ok(e)) if e == PROBE_ERRNO as i64 => {}
        Some(_) => {
            return missing(
                "a test filter was installed but not enforced (getppid was not denied)".into(),
                KFIX,
            )
        }
        None => {
            return missing(
                o.abnormal_end()
                    .unwrap_or_else(|| "seccomp probe did not finish".into()),
                KFIX,
            )
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let (sc, filters) = seccomp_status(&status);
    let mut detail = format!(
        "a test filter is enforced (getppid -> {}); actions: {actions}",
        errstr(PROBE_ERRNO as i32)
    );
    if mode == 2 || sc == Some(2) {
        detail.push_str(&format!(
            "; airlock itself already runs under {} inherited seccomp filter(s) — sandbox filters stack on top of them",
            filters.map(|n| n.to_string()).unwrap_or_else(|| "an".into())
        ));
    }
    Row::new(id, name, Status::Ok, detail, None, needed)
}

/// Which Landlock features an ABI version brings (cumulative).
pub(super) fn landlock_features(abi: i64) -> &'static str {
    match abi {
        ..=0 => "none",
        1 => "filesystem access control",
        2 => "filesystem access control, file reparenting",
        3 => "filesystem, reparenting, truncate",
        4 => "filesystem, truncate, TCP bind/connect",
        5 => "filesystem, truncate, TCP, device ioctl",
        6 => "filesystem, truncate, TCP, ioctl, signal and abstract-socket scoping",
        _ => "filesystem, truncate, TCP, ioctl, scoping, audit logging",
    }
}

pub(super) fn landlock_row() -> Row {
    let (id, name, needed) = (
        "landlock",
        "Landlock",
        "restricting writes to the sandbox's writable roots (defence in depth)",
    );
    match raw::landlock_abi() {
        Ok(abi) if abi >= 1 => Row::new(id, name, Status::Ok, format!("ABI {abi} ({})", landlock_features(abi)), None, needed),
        Ok(abi) => Row::new(id, name, Status::Degraded, format!("unexpected ABI {abi}"), None, needed),
        Err(libc::EOPNOTSUPP) => {
            let current = read_trim("/sys/kernel/security/lsm").filter(|s| !s.is_empty());
            let lsm = match &current {
                Some(c) => format!("landlock,{c}"),
                None => "landlock,lockdown,yama,integrity,apparmor,bpf".to_string(),
            };
            Row::new(
                id,
                name,
                Status::Degraded,
                format!("built into the kernel but not enabled at boot{}", current.map(|c| format!(" (active LSMs: {c})")).unwrap_or_default()),
                Some(format!("add Landlock to the lsm= kernel boot parameter, e.g. lsm={lsm} (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub and reboot)")),
                needed,
            )
        }
        Err(libc::ENOSYS) => Row::new(
            id,
            name,
            Status::Degraded,
            "landlock_create_ruleset(2) is not available (kernel without Landlock, or a seccomp policy hides it)".to_string(),
            Some("use Linux 5.13+ built with CONFIG_SECURITY_LANDLOCK=y and landlock in lsm=".into()),
            needed,
        ),
        Err(e) => Row::new(id, name, Status::Degraded, format!("landlock_create_ruleset(VERSION) failed: {}", errstr(e)), None, needed),
    }
}

// nfnetlink constants (linux/netfilter/nfnetlink.h, nf_tables.h).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETGEN: u16 = 16;
const NFT_MSG_NEWGEN: u16 = 15;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;

/// An nfnetlink NFT_MSG_GETGEN request.
pub(super) fn getgen_request(seq: u32) -> [u8; 20] {
    let mut m = [0u8; 20];
    m[0..4].copy_from_slice(&20u32.to_ne_bytes());
    m[4..6].copy_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // pid 0 (kernel assigns), nfgenmsg { family AF_UNSPEC, version NFNETLINK_V0, res_id 0 }
    m
}

/// The kernel's first answer: Ok(()) for NEWGEN, Err(errno) for an error message.
pub(super) fn parse_getgen_reply(buf: &[u8]) -> Result<(), i32> {
    if buf.len() < 16 {
        return Err(libc::EBADMSG);
    }
    let ty = u16::from_ne_bytes([buf[4], buf[5]]);
    if ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
        return Ok(());
    }
    if ty == NLMSG_ERROR && buf.len() >= 20 {
        let e = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        return if e == 0 { Ok(()) } else { Err(-e) };
    }
    Err(libc::EBADMSG)
}

fn nft_kernel_probe(root: bool) -> Outcome {
    use nix::sys::socket::{
        recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol,
        SockType,
    };
    use std::os::fd::AsRawFd;
    child::run(TIMEOUT, |r: &Reporter| {
        // Ask in a fresh network namespace (ours when rootless, via a user namespace): no
        // host state is read or touched and CAP_NET_ADMIN holds there.
        let flags = if root {
            CloneFlags::CLONE_NEWNET
        } else {
            CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET
        };
        r.check(NF_UNSHARE, unshare(flags));
        let sock = match socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        ) {
            Ok(s) => {
                r.ok(NF_SOCKET, 0);
                s
            }
            Err(e) => {
                r.err(NF_SOCKET, e as i32);
                return 1;
            }
        };
        let _ = setsockopt(
            &sock,
            sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(2, 0),
        );
        if let Err(e) = send(sock.as_raw_fd(), &getgen_request(1), MsgFlags::empty()) {
            r.err(NF_QUERY, e as i32);
            return 1;
        }
        let mut buf = [0u8; 4096];
        match recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => match parse_getgen_reply(&buf[..n]) {
                Ok(()) => r.ok(NF_QUERY, 0),
                Err(e) => r.err(NF_QUERY, e),
            },
            Err(e) => r.err(NF_QUERY, e as i32),
        }
        0
    })
}

/// airlock does not use nftables (nor any firewall): filtered egress is listeners on the
/// sandbox's own loopback plus the host-side proxy (the `egress` row), the metadata floor is
/// checked there and, in `--net open`, held by prohibited routes. Informational only.
pub(super) fn nftables_row(h: &Host) -> Row {
    let o = nft_kernel_probe(h.root);
    let kernel = match (o.get(NF_SOCKET), o.get(NF_QUERY)) {
        (_, Some(Ok(_))) => "kernel nf_tables answers netlink".to_string(),
        (Some(Err(e)), _) => format!("no nfnetlink socket: {}", errstr(e)),
        (_, Some(Err(e))) => format!("nf_tables did not answer: {}", errstr(e)),
        _ => o
            .abnormal_end()
            .unwrap_or_else(|| "nf_tables probe did not finish".into()),
    };
    let binary = match which("nft") {
        Some(b) => format!("nft at {}", b.display()),
        None => "no nft binary".into(),
    };
    Row::info(
        "nftables",
        "nftables",
        format!("not used by airlock (filtered egress and the metadata floor need no firewall rules); {kernel}; {binary}"),
    )
}
