//! The catalogue of escape attempts. Each check really performs the operation (raw syscalls
//! through `crate::sys`) and reports `blocked: false` when it worked.

mod files;
mod kernel;
mod kernfs;
mod leaks;
mod net;
mod privilege;
mod procs;
mod tty;

use crate::report::Outcome;
use crate::sys::{self, fs};

/// What the caller told the probe about the host (all optional; checks that need a missing
/// value are skipped and listed as such in the summary).
#[derive(Debug, Default)]
pub struct Ctx {
    pub canary: Option<String>,
    pub host_pid: Option<i32>,
    pub host_port: Option<u16>,
    pub host_path: Option<String>,
    pub exe_paths: Vec<String>,
    pub host_abstract: Option<String>,
    pub host_unix: Vec<String>,
    /// Descriptors found open at start-up, before the probe opened anything.
    pub initial_fds: Option<Outcome>,
}

pub struct Check {
    pub name: &'static str,
    pub about: &'static str,
    /// Some(reason) when the check cannot run with the given context.
    pub missing: fn(&Ctx) -> Option<&'static str>,
    pub run: fn(&Ctx) -> Outcome,
}

fn always(_: &Ctx) -> Option<&'static str> {
    None
}

macro_rules! check {
    ($name:literal, $about:literal, $run:path) => {
        Check {
            name: $name,
            about: $about,
            missing: always,
            run: $run,
        }
    };
    ($name:literal, $about:literal, $run:path, needs $missing:expr) => {
        Check {
            name: $name,
            about: $about,
            missing: $missing,
            run: $run,
        }
    };
}

/// Every check, in the order `all` runs them. `fds` comes first in spirit: its data is taken
/// at start-up, before the probe opens its own descriptors.
pub const CHECKS: &[Check] = &[
    check!("fds", "no descriptor beyond 0-2 is inherited (leaked host fds, CVE-2024-21626 class)", leaks::fds),
    check!("cwd-leak", "the working directory is inside the sandbox root", leaks::cwd_leak),
    check!("canary-read", "read a canary file in the host's /root (--canary)", files::canary_read,
        needs |c: &Ctx| c.canary.is_none().then_some("no --canary given")),
    check!("secret-files", "read host secrets: /etc/shadow, ssh host keys, /root/.ssh", files::secret_files),
    check!("write-usr", "create or open-for-write files under /usr", files::write_usr),
    check!("write-host-path", "write a host path outside the workspace (--host-path)", files::write_host_path,
        needs |c: &Ctx| c.host_path.is_none().then_some("no --host-path given")),
    check!("exe-overwrite", "open /proc/*/exe and --exe-path for writing (runc CVE-2019-5736 class)", leaks::exe_overwrite),
    check!("host-procs", "see host processes (--host-pid in /proc, or more than a handful)", leaks::host_procs),
    check!("ptrace-pid1", "PTRACE_SEIZE / PTRACE_ATTACH of PID 1", procs::ptrace_pid1),
    check!("proc1-mem", "open /proc/1/mem for reading", procs::proc1_mem),
    check!("proc1-environ", "read /proc/1/environ (the supervisor's environment)", procs::proc1_environ),
    check!("process-vm-readv", "process_vm_readv of PID 1", procs::process_vm_readv),
    check!("mount", "mount a tmpfs; remount /usr read-write", privilege::mount),
    check!("chroot", "chroot and the classic chroot escape", privilege::chroot),
    check!("unshare-userns", "unshare(CLONE_NEWUSER), clone and clone3 with CLONE_NEWUSER", privilege::unshare_userns),
    check!("unshare-ns", "unshare mount, net, uts, ipc, pid, cgroup namespaces", privilege::unshare_ns),
    check!("setuid", "setuid(0)/setgid(0) from the unprivileged user", privilege::setuid),
    check!("caps", "no capability is held (effective, permitted, inheritable, ambient)", privilege::caps),
    check!("no-new-privs", "no_new_privs is set", privilege::no_new_privs),
    check!("seccomp-filter", "a seccomp filter is installed", privilege::seccomp_filter),
    check!("keyctl", "add_key and keyctl(JOIN_SESSION_KEYRING)", kernel::keyctl),
    check!("bpf", "bpf(BPF_MAP_CREATE) and bpf(BPF_PROG_LOAD)", kernel::bpf),
    check!("io-uring", "io_uring_setup", kernel::io_uring),
    check!("perf-event-open", "perf_event_open of a software counter", kernel::perf_event_open),
    check!("userfaultfd", "userfaultfd (with and without UFFD_USER_MODE_ONLY)", kernel::userfaultfd),
    check!("personality", "personality(ADDR_NO_RANDOMIZE | READ_IMPLIES_EXEC)", kernel::personality),
    check!("kexec-load", "kexec_load (permission check only; nothing is loaded)", kernel::kexec_load),
    check!("module-load", "init_module, finit_module, delete_module (permission check only)", kernel::module_load),
    check!("open-by-handle", "name_to_handle_at + open_by_handle_at (shocker)", files::open_by_handle),
    check!("mknod", "mknod a character device (1,3) and a block device; a fifo is allowed", files::mknod),
    check!("dev-nodes", "open host devices: /dev/mem, /dev/kmsg, disks, /dev/kvm, vhost, tun", files::dev_nodes),
    check!("proc-sys-write", "write /proc/sys (hostname, ip_forward, core_pattern) and /proc/sysrq-trigger", kernfs::proc_sys_write),
    check!("sys-write", "open files under /sys for writing", kernfs::sys_write),
    check!("cgroup-write", "write cgroup files (join the root cgroup, raise own limits)", kernfs::cgroup_write),
    check!("oom-score-adj", "make itself OOM-immune (oom_score_adj -1000)", kernfs::oom_score_adj),
    check!("tiocsti", "TIOCSTI keystroke injection on fds 0-2 and /dev/tty", tty::tiocsti),
    check!("socket-packet", "socket(AF_PACKET)", net::socket_packet),
    check!("socket-vsock", "socket(AF_VSOCK)", net::socket_vsock),
    check!("socket-raw", "socket(AF_INET/AF_INET6, SOCK_RAW)", net::socket_raw),
    check!("socket-netlink", "netlink sockets other than NETLINK_ROUTE (audit, netfilter, uevent, generic)", net::socket_netlink),
    check!("net-loopback-host", "TCP connect to the host's 127.0.0.1:--host-port", net::loopback_host,
        needs |c: &Ctx| c.host_port.is_none().then_some("no --host-port given")),
    check!("net-internet", "TCP connect to 1.1.1.1:443 and [2606:4700:4700::1111]:443", net::internet),
    check!("net-metadata", "TCP connect to cloud metadata 169.254.169.254:80 and [fd00:ec2::254]:80", net::metadata),
    check!("net-udp-dns", "UDP sendto 8.8.8.8:53", net::udp_dns),
    check!("unix-abstract", "connect to the host's abstract Unix socket @--host-abstract", net::unix_abstract,
        needs |c: &Ctx| c.host_abstract.is_none().then_some("no --host-abstract given")),
    check!("unix-host-sockets", "connect to well-known host Unix sockets (docker, containerd, dbus, systemd) and --host-unix", net::unix_host_sockets),
];

pub fn find(name: &str) -> Option<&'static Check> {
    CHECKS.iter().find(|c| c.name == name)
}

/// A directory where the probe can create files (for mknod, mount and chroot targets).
pub(crate) fn scratch_dir() -> Option<String> {
    let home = std::env::var("HOME").ok();
    let candidates = ["/tmp", "/dev/shm", "/var/tmp", "."];
    let all = candidates.iter().map(|s| s.to_string()).chain(home);
    for dir in all {
        let probe = format!("{dir}/.airlock-probe-{}", sys::getpid());
        if fs::open(&probe, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600).is_ok() {
            let _ = fs::unlink(&probe);
            return Some(dir);
        }
    }
    None
}

/// The descriptor scan, for `main` to take before it opens anything.
pub fn leaks_scan() -> Outcome {
    leaks::scan_initial_fds()
}
