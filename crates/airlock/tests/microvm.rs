//! End-to-end: the microVM backend boots real guests (QEMU `-M microvm`, TCG on hosts whose KVM
//! cannot boot a stock kernel) with a distribution kernel and airlock's guest init. Each test
//! boots as few VMs as it can: under emulation a boot costs seconds. Needs root, QEMU, a
//! `linux-image-*` package and erofs-utils (`.ci/install-microvm`).
//!
//! The kernel, initramfs and host root image are cached in a shared, world-readable directory
//! (`AIRLOCK_CACHE_DIR`, /var/cache/airlock-test unless the test environment sets it), so the
//! host image (the size of /usr) is built once per machine, not once per test.

mod common;

use common::internet::Internet;
use common::{e2e, Airlock, Bins, Outcome};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Boots under TCG on a loaded 2-core machine take a while.
const VM_DEADLINE: Duration = Duration::from_secs(240);

fn cache_dir() -> String {
    let dir = std::env::var("AIRLOCK_TEST_VM_CACHE")
        .unwrap_or_else(|_| "/var/cache/airlock-test".to_string());
    std::fs::create_dir_all(&dir).expect("create the VM cache directory");
    common::set_mode(std::path::Path::new(&dir), 0o755);
    dir
}

/// `run` options for `sh -c SCRIPT` as the guest's root user, without a workspace or a network.
fn as_guest_root(script: &str) -> [&str; 10] {
    [
        "--workspace",
        "none",
        "--net",
        "off",
        "--user",
        "root",
        "--",
        "sh",
        "-c",
        script,
    ]
}

fn vm_run(a: &Airlock, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    vm_run_stdin(a, args, env, None)
}

fn vm_run_stdin(a: &Airlock, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Outcome {
    let mut cmd = a.command(&[&["run", "--backend", "microvm"], args].concat());
    cmd.env("AIRLOCK_CACHE_DIR", cache_dir());
    cmd.envs(env.iter().copied());
    common::run_with_deadline(cmd, stdin.map(<[u8]>::to_vec), VM_DEADLINE)
}

/// The unprivileged test user's airlock (and the binaries it runs) for a microVM test. The
/// shared artifact cache is built by root (the user could not write it): one root boot per
/// test binary makes sure it is there before the user's first run reads it.
fn rootless_vm_airlock() -> (Bins, Airlock) {
    static CACHE: std::sync::Once = std::sync::Once::new();
    CACHE.call_once(|| {
        let out = vm_run(
            &Airlock::root(),
            &["--workspace", "none", "--net", "off", "--", "true"],
            &[],
        );
        assert_eq!(out.code(), 0, "{}", out.describe());
    });
    let bins = Bins::owned_by(&common::test_user());
    let a = Airlock::rootless(&bins);
    (bins, a)
}

fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("osrelease")
        .trim()
        .to_string()
}

#[test]
fn a_command_runs_on_the_guest_kernel_with_its_exit_status() {
    if !e2e("a_command_runs_on_the_guest_kernel_with_its_exit_status") {
        return;
    }
    let a = Airlock::root();
    std::fs::write(a.cwd.join("a.txt"), "from the host\n").expect("write");
    let out = vm_run_stdin(
        &a,
        &[
            "--net",
            "off",
            "--",
            "sh",
            "-c",
            "echo hi; uname -r; cat /workspace/a.txt; echo changed > /workspace/a.txt; \
             cat /workspace/a.txt; ls /sys/class/net; id -u; echo oops >&2; \
             read line; echo \"got $line\"; exit 7",
        ],
        // A boot (its steps are checked below), not a copy of a boot snapshot.
        &[("AIRLOCK_TIMING", "1"), ("AIRLOCK_VM_SNAPSHOT", "0")],
        Some(b"piped in\n"),
    );
    assert_eq!(out.code(), 7, "{}", out.describe());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "hi", "{}", out.describe());
    // A kernel of its own, not the host's.
    assert_ne!(lines[1], host_release(), "{}", out.describe());
    assert!(lines[1].contains('.'), "{}", out.describe());
    // The workspace: the host's files, writable inside, unchanged outside.
    assert_eq!(
        lines[2..4],
        ["from the host", "changed"],
        "{}",
        out.describe()
    );
    // --net off: no NIC at all.
    assert_eq!(lines[4], "lo", "{}", out.describe());
    assert_eq!(lines[5], "1000", "{}", out.describe());
    assert!(out.stderr.contains("oops"), "{}", out.describe());
    // stdin reaches the guest's command over the channel.
    assert_eq!(lines[6], "got piped in", "{}", out.describe());
    assert_eq!(
        std::fs::read_to_string(a.cwd.join("a.txt")).expect("read"),
        "from the host\n"
    );
    // What the command changed there, summarized as for a container (computed in the guest).
    assert!(
        out.stderr.contains(
            "airlock: workspace changes (discarded, host untouched): 0 added, 1 changed, 0 deleted\n  ~ a.txt\n"
        ),
        "{}",
        out.describe()
    );
    // The guest's boot steps (AIRLOCK_TIMING=1): it says hello once the channel's modules are
    // in, before the last of the root's, so the job travels while those load.
    let steps: Vec<&str> = out
        .stderr
        .lines()
        .filter_map(|l| {
            l.split_once("] guest +")?
                .1
                .split_once(": ")?
                .1
                .split(" (at ")
                .next()
        })
        .collect();
    let at = |pred: &dyn Fn(&str) -> bool| steps.iter().position(|s| pred(s));
    let open =
        at(&|s| s == "channel open").unwrap_or_else(|| panic!("no channel open in {steps:?}"));
    let console = at(&|s| s.starts_with("module ") && s.ends_with("-virtio_console"));
    let last_module = steps.iter().rposition(|s| s.starts_with("module "));
    if let (Some(console), Some(last)) = (console, last_module) {
        assert!(console < open && open < last, "{steps:?}");
    }
    assert!(
        open < at(&|s| s == "job received").expect("job received"),
        "{steps:?}"
    );
}

#[test]
fn guest_connections_go_through_the_egress_filter() {
    if !e2e("guest_connections_go_through_the_egress_filter") {
        return;
    }
    let inet = Internet::start(&["allowed.test", "denied.test"], &[]);
    let a = Airlock::root();
    let log = a.dir.join("net.jsonl");
    let log_s = log.display().to_string();
    // Transparently (no proxy variables: the guest's own connect, through QEMU's user-mode
    // network, into the sandbox's namespace) and through the explicit proxy.
    let script = format!(
        "unset HTTP_PROXY http_proxy; \
         curl -sS --max-time 30 http://allowed.test/y; \
         echo rc1=$?; curl -sS --max-time 30 http://denied.test/ >/dev/null 2>&1; echo rc2=$?; \
         echo ip=$(curl -sS --max-time 30 -o /dev/null -w '%{{http_code}}' http://{ip}/ 2>/dev/null); \
         export http_proxy=$https_proxy; \
         curl -sS --max-time 30 -o - -w '%{{http_code}}' http://denied.test/; echo",
        ip = inet.ip
    );
    let out = vm_run(
        &a,
        &[
            "--workspace",
            "none",
            "--net",
            "filtered",
            "--allow",
            "allowed.test",
            "--net-log",
            &log_s,
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[("AIRLOCK_DNS_UPSTREAM", &inet.dns)],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "hello from allowed.test /y", "{}", out.describe());
    assert_eq!(lines[1], "rc1=0", "{}", out.describe());
    // A denied name does not resolve; a literal IP gets no answer from the server.
    assert_ne!(lines[2], "rc2=0", "{}", out.describe());
    assert!(
        lines[3] == "ip=000" || lines[3] == "ip=403",
        "{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("literal IPs are not allowed"),
        "{}",
        out.describe()
    );
    // The explicit proxy (reached at QEMU's host address) answers an explained 403.
    assert!(
        lines[4].starts_with("airlock: blocked denied.test:80"),
        "{}",
        out.describe()
    );
    assert!(
        out.stdout.contains("--allow denied.test"),
        "{}",
        out.describe()
    );
    assert_eq!(lines.last(), Some(&"403"), "{}", out.describe());
    let journal = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        journal.contains("\"allow\"") && journal.contains("denied.test"),
        "the same journal records the guest's connections: {journal}"
    );
}

/// The host processes of a sandbox: those whose cgroup names it.
fn pids_in_cgroup_of(name: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| c.contains(&format!("/{name}.")))
        })
        .collect()
}

fn status_field(pid: i32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

#[test]
fn qemu_is_confined_and_dies_with_airlock() {
    if !e2e("qemu_is_confined_and_dies_with_airlock") {
        return;
    }
    let a = Airlock::root();
    let name = format!("vm-{}", &common::random_hex()[..8]);
    let mut cmd = a.command(&[
        "run",
        "--backend",
        "microvm",
        "--name",
        &name,
        "--workspace",
        "none",
        "--net",
        "off",
        "--memory",
        "256M",
        "--cpus",
        "1",
        "--",
        "sh",
        "-c",
        "echo up; sleep 600",
    ]);
    cmd.env("AIRLOCK_CACHE_DIR", cache_dir());
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn airlock");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read");
    assert_eq!(first, "up\n");
    let qemu: Vec<i32> = pids_in_cgroup_of(&name)
        .into_iter()
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/exe"))
                .is_ok_and(|e| e.to_string_lossy().contains("qemu-system"))
        })
        .collect();
    assert_eq!(qemu.len(), 1, "one QEMU in the sandbox's cgroup");
    let q = qemu[0];
    // No capabilities, no new privileges, a seccomp filter, its own pid namespace.
    assert_eq!(status_field(q, "CapEff"), "0000000000000000");
    assert_eq!(status_field(q, "CapPrm"), "0000000000000000");
    assert_eq!(status_field(q, "NoNewPrivs"), "1");
    assert_eq!(status_field(q, "Seccomp"), "2");
    assert_eq!(status_field(q, "NSpid").split_whitespace().count(), 2);
    let ns = |pid: &str, n: &str| std::fs::read_link(format!("/proc/{pid}/ns/{n}")).ok();
    assert_ne!(ns(&q.to_string(), "net"), ns("self", "net"));
    // The VM's size: -m 256M, and a memory limit of the guest plus QEMU's overhead.
    let argv = std::fs::read(format!("/proc/{q}/cmdline")).expect("cmdline");
    let argv: Vec<String> = argv
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    assert!(argv.windows(2).any(|w| w == ["-m", "256M"]), "{argv:?}");
    assert!(argv.windows(2).any(|w| w == ["-smp", "1"]), "{argv:?}");
    // Under TCG its guest RAM has no transparent huge pages (zeroed as the guest uses it, not
    // 2 MiB at a time); the kernel shows that since 5.0.
    let thp = status_field(q, "THP_enabled");
    if argv.iter().any(|a| a.starts_with("tcg")) && !thp.is_empty() {
        assert_eq!(thp, "0", "QEMU under TCG with transparent huge pages");
    }
    let cg = std::fs::read_to_string(format!("/proc/{q}/cgroup")).expect("cgroup");
    let limit = cg.lines().find_map(|l| {
        let candidates = if let Some((_, path)) = l.split_once(":memory:") {
            vec![format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")]
        } else if let Some(path) = l.strip_prefix("0::") {
            vec![
                format!("/sys/fs/cgroup{path}/memory.max"),
                format!("/sys/fs/cgroup/unified{path}/memory.max"),
            ]
        } else {
            vec![]
        };
        candidates.iter().find_map(|f| {
            std::fs::read_to_string(f)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
    });
    assert_eq!(limit, Some((256 << 20) + (384 << 20)), "{cg}");
    // airlock killed outright: QEMU goes with it.
    child.kill().expect("kill airlock");
    let _ = child.wait();
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{q}")).exists()
        && !status_field(q, "State").starts_with('Z')
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "QEMU outlived airlock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_guest_outliving_its_timeout_is_killed() {
    if !e2e("a_guest_outliving_its_timeout_is_killed") {
        return;
    }
    let a = Airlock::root();
    let start = Instant::now();
    let out = vm_run(
        &a,
        &[
            "--workspace",
            "none",
            "--net",
            "off",
            "--timeout",
            "30s",
            "--",
            "sh",
            "-c",
            "echo started; sleep 600",
        ],
        &[],
    );
    assert_eq!(out.code(), 124, "{}", out.describe());
    assert!(
        out.stderr.contains("timeout after 30s"),
        "{}",
        out.describe()
    );
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "{}",
        out.describe()
    );
}

#[test]
fn rootless_airlock_boots_a_guest_too() {
    if !e2e("rootless_airlock_boots_a_guest_too") {
        return;
    }
    let (_bins, a) = rootless_vm_airlock();
    let out = vm_run(
        &a,
        &[
            "--workspace",
            "none",
            "--net",
            "off",
            "--",
            "sh",
            "-c",
            "id -u; exit 3",
        ],
        &[],
    );
    assert_eq!(out.code(), 3, "{}", out.describe());
    assert_eq!(out.stdout, "1000\n", "{}", out.describe());
}

/// The host image holds what a stranger can read of the host, as a container's view: a root
/// guest finds no `/etc/ssl/private` (its TLS keys were in images root built), and an
/// unprivileged user builds the image on a fresh machine (its own cache) instead of stopping
/// at a directory it cannot open. One boot each.
#[test]
fn the_host_image_holds_only_what_others_can_read() {
    if !e2e("the_host_image_holds_only_what_others_can_read") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let hidden = |p: &str| {
        std::fs::symlink_metadata(p).is_ok_and(|m| m.permissions().mode() & 0o005 != 0o005)
    };
    let script = "for p in /etc/ssl/private /usr/share/polkit-1/rules.d; do \
        if test -e $p; then echo \"$p present\"; else echo \"$p absent\"; fi; done; \
        test -d /etc/ssl/certs && echo certs";
    let args = as_guest_root(script);
    let check = |out: &Outcome, who: &str| {
        assert_eq!(out.code(), 0, "{who}: {}", out.describe());
        for p in ["/etc/ssl/private", "/usr/share/polkit-1/rules.d"] {
            if hidden(p) {
                assert!(
                    out.stdout.contains(&format!("{p} absent")),
                    "{who}: {p} is not readable by others on the host, yet in the image: {}",
                    out.describe()
                );
            }
        }
        assert!(out.stdout.contains("certs"), "{who}: {}", out.describe());
    };
    check(&vm_run(&Airlock::root(), &args, &[]), "root");
    // The unprivileged user, from nothing: its own cache, its own image build.
    let bins = Bins::owned_by(&common::test_user());
    let a = Airlock::rootless(&bins);
    let own = common::TempDir::new("vm-cache");
    if let Some(u) = &a.user {
        own.chown_to(u);
    }
    let own_path = own.path().to_string_lossy().into_owned();
    check(
        &vm_run(&a, &args, &[("AIRLOCK_CACHE_DIR", &own_path)]),
        "rootless, fresh cache",
    );
}

/// `disk` on a microVM bounds what the guest writes: its root's overlay, /tmp and home live on
/// a disk of that size (not tmpfs sized from the guest's memory, where 1 GiB of memory let
/// each take 256 MiB). Writing less than `disk` succeeds; past it, ENOSPC in the guest.
/// Rootful and rootless, one boot each.
#[test]
fn disk_bounds_what_a_microvm_guest_writes() {
    if !e2e("disk_bounds_what_a_microvm_guest_writes") {
        return;
    }
    // 64 MiB: /tmp 16 + root overlay 24 fit; 40 more on the root overlay do not, nor, once
    // that is removed, 40 in home (the same disk).
    const FILL: &str = "w() { dd if=/dev/zero of=\"$1\" bs=1M count=\"$2\" 2>/tmp/dd.err; \
         r=$?; echo \"$3=$r $(grep -o 'No space left on device' /tmp/dd.err | head -n1)\"; }; \
         w /tmp/small 16 tmp; w /mid 24 root; w /big 40 big; \
         rm -f /big; w \"$HOME/h\" 40 home; \
         df -k /tmp | tail -n1";
    let root = Airlock::root();
    let bins = Bins::owned_by(&common::test_user());
    let rootless = Airlock::rootless(&bins);
    for (a, mode) in [(&root, "rootful"), (&rootless, "rootless")] {
        let toml = a.cwd.join("airlock.toml");
        std::fs::write(&toml, "[resources]\ndisk = \"64M\"\n").expect("write airlock.toml");
        if let Some(u) = &a.user {
            std::os::unix::fs::chown(&toml, Some(u.uid), Some(u.gid)).expect("chown");
        }
        // The guest's root user: the root's overlay is writable to it (not the agent's).
        let out = vm_run(a, &as_guest_root(FILL), &[]);
        assert_eq!(out.code(), 0, "{mode}: {}", out.describe());
        let lines: Vec<&str> = out.stdout.lines().map(str::trim_end).collect();
        assert_eq!(lines[0], "tmp=0", "{mode}: {}", out.describe());
        assert_eq!(lines[1], "root=0", "{mode}: {}", out.describe());
        assert_eq!(
            lines[2],
            "big=1 No space left on device",
            "{mode}: {}",
            out.describe()
        );
        assert_eq!(
            lines[3],
            "home=1 No space left on device",
            "{mode}: {}",
            out.describe()
        );
        // /tmp is the disk's: its size is the disk's (less ext4's own), not the memory's.
        let size_kib: u64 = lines[4]
            .split_whitespace()
            .nth(1)
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("{mode}: df: {}", out.describe()));
        assert!(
            (40 << 10..=64 << 10).contains(&size_kib),
            "{mode}: /tmp is {size_kib} KiB: {}",
            out.describe()
        );
        // The disk went with the run.
        let left: Vec<_> = walk_names(&a.state_dir())
            .into_iter()
            .filter(|n| n.ends_with("overlay.img"))
            .collect();
        assert!(left.is_empty(), "{mode}: {left:?}");
    }
}

/// `--disk` (as `[resources] disk`) sizes a named microVM's writable layers too (refused
/// before: "cannot be enforced for a named sandbox"): past it, ENOSPC in the guest. Sizes that
/// cannot be a disk are refused with a hint before anything is made. One boot.
#[test]
fn disk_bounds_a_named_microvm_and_bad_sizes_are_refused() {
    if !e2e("disk_bounds_a_named_microvm_and_bad_sizes_are_refused") {
        return;
    }
    let a = Airlock::root();
    let _guard = EngineGuard(&a);
    for (size, what) in [("lots", "--disk"), ("0", "--disk"), ("64K", "too small")] {
        let out = vm_cli(
            &a,
            &[
                "create",
                "--backend",
                "microvm",
                "vmbox",
                "--net",
                "off",
                "--disk",
                size,
            ],
        );
        assert_eq!(out.code(), 2, "--disk {size}: {}", out.describe());
        assert!(
            out.stderr.contains(what) && out.stderr.contains("hint:"),
            "--disk {size}: {}",
            out.describe()
        );
        let out = vm_cli(&a, &["list", "--json"]);
        assert_eq!(
            out.stdout.trim(),
            "[]",
            "--disk {size}: nothing half-created"
        );
    }
    let out = vm_cli(
        &a,
        &[
            "create",
            "--backend",
            "microvm",
            "vmbox",
            "--workspace",
            "none",
            "--net",
            "off",
            "--user",
            "root",
            "--disk",
            "64M",
        ],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    let out = vm_cli(&a, &["start", "vmbox"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    const FILL: &str = "w() { dd if=/dev/zero of=\"$1\" bs=1M count=\"$2\" 2>/tmp/dd.err; \
         r=$?; echo \"$3=$r $(grep -o 'No space left on device' /tmp/dd.err | head -n1)\"; }; \
         w /tmp/small 16 tmp; w /mid 24 root; w /big 40 big; rm -f /big; \
         df -k /tmp | tail -n1";
    let out = vm_cli(&a, &["exec", "vmbox", "--", "sh", "-c", FILL]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let lines: Vec<&str> = out.stdout.lines().map(str::trim_end).collect();
    assert_eq!(
        lines[..3],
        ["tmp=0 ", "root=0 ", "big=1 No space left on device"].map(str::trim_end),
        "{}",
        out.describe()
    );
    let size_kib: u64 = lines[3]
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("df: {}", out.describe()));
    assert!(
        (40 << 10..=64 << 10).contains(&size_kib),
        "/tmp is {size_kib} KiB: {}",
        out.describe()
    );
    // The disk goes with the boot (as the tmpfs it stands for).
    let out = vm_cli(&a, &["stop", "vmbox"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let left: Vec<_> = walk_names(&a.state_dir())
        .into_iter()
        .filter(|n| n.ends_with("overlay.img"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let out = vm_cli(&a, &["rm", "vmbox"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
}

/// `rm -f` of a running named microVM leaves nothing behind: its supervisor is killed, and the
/// run directory it held (`STATE/runs/*.vm`, with the guest's writable disk) goes with it
/// instead of waiting for the next `run` or `gc`. One boot.
#[test]
fn rm_force_of_a_running_microvm_leaves_no_run_directory() {
    if !e2e("rm_force_of_a_running_microvm_leaves_no_run_directory") {
        return;
    }
    let a = Airlock::root();
    let _guard = EngineGuard(&a);
    let out = vm_cli(
        &a,
        &[
            "create",
            "--backend",
            "microvm",
            "vmbox",
            "--workspace",
            "none",
            "--net",
            "off",
        ],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    let out = vm_cli(&a, &["start", "vmbox"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let runs = || -> Vec<String> {
        std::fs::read_dir(a.state_dir().join("runs"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".vm"))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(runs().len(), 1, "a running VM holds one run directory");
    let out = vm_cli(&a, &["rm", "-f", "vmbox"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(!a.state_dir().join("sandboxes/vmbox").exists());
    assert!(
        common::wait_until(Duration::from_secs(10), || runs().is_empty()),
        "run directories left after rm -f: {:?}",
        runs()
    );
}

/// The host's clock (ms) of the first `AIRLOCK_TIMING` line containing `what`.
fn phase_at(stderr: &str, what: &str) -> Option<f64> {
    let line = stderr.lines().find(|l| l.contains(what))?;
    line.strip_prefix('[')?
        .split(" ms]")
        .next()?
        .trim()
        .parse()
        .ok()
}

/// A run ends when its guest reports the command's exit, not when the guest has powered off:
/// 80 MiB left dirty on the `disk` would be written back by the guest's sync first (0.65 s
/// here under TCG before), for a disk that is deleted with the run anyway. One boot.
#[test]
fn a_run_ends_at_its_guests_report_not_its_poweroff() {
    if !e2e("a_run_ends_at_its_guests_report_not_its_poweroff") {
        return;
    }
    let a = Airlock::root();
    std::fs::write(a.cwd.join("airlock.toml"), "[resources]\ndisk = \"256M\"\n")
        .expect("write airlock.toml");
    let out = vm_run(
        &a,
        &as_guest_root(
            "dd if=/dev/zero of=/tmp/f bs=1M count=80 2>/dev/null; echo written; exit 5",
        ),
        &[("AIRLOCK_TIMING", "1")],
    );
    assert_eq!(out.code(), 5, "{}", out.describe());
    assert_eq!(out.stdout, "written\n", "{}", out.describe());
    let reported = phase_at(&out.stderr, ": command ended (at ")
        .unwrap_or_else(|| panic!("no guest timing: {}", out.describe()));
    let cleaned = phase_at(&out.stderr, "] cleaned up")
        .unwrap_or_else(|| panic!("no clean-up phase: {}", out.describe()));
    assert!(
        cleaned - reported < 150.0,
        "{:.0} ms from the guest's report to the end: {}",
        cleaned - reported,
        out.describe()
    );
    let left: Vec<_> = walk_names(&a.state_dir())
        .into_iter()
        .filter(|n| n.ends_with("overlay.img"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn walk_names(dir: &std::path::Path) -> Vec<String> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        out.push(p.display().to_string());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk_names(&p));
        }
    }
    out
}

/// Stops the sandbox's engine (and its supervisors) whatever the test's outcome.
struct EngineGuard<'a>(&'a Airlock);

impl Drop for EngineGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            common::work::kill_leftovers(self.0);
        }
        let _ = vm_cli(self.0, &["rm", "-f", "vmbox"]);
        common::stop_engines_of(self.0);
    }
}

fn vm_cli(a: &Airlock, args: &[&str]) -> Outcome {
    let mut cmd = a.command(args);
    cmd.env("AIRLOCK_CACHE_DIR", cache_dir());
    common::run_with_deadline(cmd, None, VM_DEADLINE)
}

/// A named microVM sandbox: create, start (the supervisor holds the guest), two execs at
/// once over the one guest channel, state kept between execs, stop, rm.
#[test]
fn a_named_microvm_sandbox_serves_concurrent_execs_and_keeps_its_state() {
    if !e2e("a_named_microvm_sandbox_serves_concurrent_execs_and_keeps_its_state") {
        return;
    }
    let a = Airlock::root();
    let _guard = EngineGuard(&a);
    let ok = |args: &[&str]| {
        let out = vm_cli(&a, args);
        assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
        out
    };
    ok(&["create", "--backend", "microvm", "vmbox", "--net", "off"]);
    ok(&["start", "vmbox"]);
    // The guest's own kernel, and its exit status.
    let out = ok(&["exec", "vmbox", "--", "sh", "-c", "uname -r; id -u"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_ne!(
        lines.first().copied(),
        Some(host_release().as_str()),
        "{}",
        out.describe()
    );
    assert_eq!(lines.get(1).copied(), Some("1000"), "{}", out.describe());
    // Its usage is the VM's (QEMU's cgroup): a booted guest's memory and CPU time, not empty.
    let out = ok(&["status", "vmbox", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&out.stdout).expect("status --json");
    let mem = st["stats"]["memory_bytes"].as_u64().unwrap_or(0);
    let cpu = st["stats"]["cpu_usec"].as_u64().unwrap_or(0);
    assert!(mem >= 16 << 20, "memory of a booted VM: {st}");
    assert!(cpu >= 10_000, "CPU time of a booted VM: {st}");
    assert!(st["stats"]["pids"].as_u64().is_some_and(|n| n >= 1), "{st}");
    let human = ok(&["status", "vmbox"]).stdout;
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("memory:") && l.ends_with(" bytes")),
        "{human}"
    );
    let out = vm_cli(
        &a,
        &["exec", "vmbox", "--", "sh", "-c", "echo err >&2; exit 7"],
    );
    assert_eq!(out.code(), 7, "{}", out.describe());
    assert!(out.stderr.contains("err"), "{}", out.describe());
    // Two sessions at once: the first waits for a file the second writes (so they overlap).
    let started = Instant::now();
    let (first, second) = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            vm_cli(
                &a,
                &[
                    "exec", "vmbox", "--", "sh", "-c",
                    "i=0; while [ ! -e /tmp/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; cat /tmp/go",
                ],
            )
        });
        std::thread::sleep(Duration::from_secs(1));
        let writer = vm_cli(
            &a,
            &[
                "exec",
                "vmbox",
                "--",
                "sh",
                "-c",
                "echo went > /tmp/go; echo wrote",
            ],
        );
        (waiter.join().expect("waiter"), writer)
    });
    assert_eq!(second.code(), 0, "{}", second.describe());
    assert_eq!(second.stdout, "wrote\n", "{}", second.describe());
    assert_eq!(first.code(), 0, "{}", first.describe());
    assert_eq!(first.stdout, "went\n", "{}", first.describe());
    assert!(started.elapsed() < Duration::from_secs(60));
    // State persists between execs.
    let out = ok(&["exec", "vmbox", "--", "cat", "/tmp/go"]);
    assert_eq!(out.stdout, "went\n");
    ok(&["stop", "vmbox"]);
    let out = vm_cli(&a, &["exec", "vmbox", "--", "true"]);
    assert_eq!(
        out.code(),
        120,
        "exec on a stopped sandbox: {}",
        out.describe()
    );
    ok(&["rm", "vmbox"]);
    assert!(!a.state_dir().join("sandboxes/vmbox").exists());
}

/// airlock on a real pseudo-terminal of its own (the user's terminal, as far as it can tell):
/// its stdin, stdout and stderr, and its controlling terminal, with a window size.
struct OnTerminal {
    master: std::fs::File,
    child: std::process::Child,
    seen: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl OnTerminal {
    fn spawn(mut cmd: std::process::Command, rows: u16, cols: u16) -> OnTerminal {
        use std::os::unix::process::CommandExt;
        let ws = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
        // Neither end may leak into what airlock starts (an engine it starts would hold the
        // terminal open, and the reader here would never see its end).
        for fd in [&pty.master, &pty.slave] {
            use std::os::fd::AsRawFd;
            // SAFETY: F_SETFD on a descriptor this function owns.
            let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
            assert_eq!(r, 0, "FD_CLOEXEC");
        }
        let slave = std::fs::File::from(pty.slave);
        for set in [
            std::process::Command::stdin,
            std::process::Command::stdout,
            std::process::Command::stderr,
        ] {
            set(&mut cmd, Stdio::from(slave.try_clone().expect("dup")));
        }
        // SAFETY: setsid and TIOCSCTTY are async-signal-safe; stdin is the terminal.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn airlock on a terminal");
        drop(slave);
        let master = std::fs::File::from(pty.master);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (mut r, s) = (master.try_clone().expect("dup"), seen.clone());
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock()
                    .expect("terminal log")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        OnTerminal {
            master,
            child,
            seen,
            reader: Some(reader),
        }
    }

    fn seen(&self) -> String {
        self.seen.lock().expect("terminal log").replace('\r', "")
    }

    fn wait_for(&self, needle: &str) {
        assert!(
            common::wait_until(VM_DEADLINE, || self.seen().contains(needle)),
            "{needle:?} never appeared on the terminal:\n{}",
            self.seen()
        );
    }

    fn type_in(&mut self, text: &str) {
        use std::io::Write;
        self.master.write_all(text.as_bytes()).expect("type");
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: TIOCSWINSZ on our own terminal: its foreground group (airlock) gets SIGWINCH.
        let r = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(r, 0);
    }

    /// Its exit status, once all it printed is seen (panics after the VM deadline).
    fn exit_code(&mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                // Its last output: the terminal reads EIO once no process holds it.
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return st.code().unwrap_or(-1);
            }
            if start.elapsed() > VM_DEADLINE {
                let _ = self.child.kill();
                panic!("airlock did not end; terminal:\n{}", self.seen());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What a terminal session in the guest prints about itself: its terminal, its size (then
/// again after a resize), what was typed, and its exit status.
const TTY_SCRIPT: &str = "tty; stty size; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo term-ok; \
    (: </dev/tty) && echo ctty-ok; read x; echo \"got:$x\"; \
    trap 'stty size; exit 5' WINCH; echo ready; while :; do sleep 0.1; done";

/// Returns all the terminal showed.
fn check_terminal_session(mut t: OnTerminal, label: &str) -> String {
    t.wait_for("ctty-ok");
    t.type_in("typed words\n");
    t.wait_for("ready");
    t.resize(40, 120);
    let code = t.exit_code();
    let seen = t.seen();
    assert_eq!(code, 5, "{label}:\n{seen}");
    let lines: Vec<&str> = seen.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("/dev/pts/"))
        .unwrap_or_else(|| panic!("{label}: no terminal inside:\n{seen}"));
    assert_eq!(
        lines[at + 1..at + 4],
        ["30 100", "term-ok", "ctty-ok"],
        "{label}:\n{seen}"
    );
    // The guest's terminal echoed the typing, the command read it.
    assert!(lines.contains(&"typed words"), "{label}:\n{seen}");
    assert!(lines.contains(&"got:typed words"), "{label}:\n{seen}");
    // The command's last line (an overlay run's change summary comes after it).
    let end = lines
        .iter()
        .position(|l| l.starts_with("airlock: workspace changes"))
        .unwrap_or(lines.len());
    assert_eq!(lines[..end].last(), Some(&"40 120"), "{label}:\n{seen}");
    seen
}

/// The newest distribution kernel in /boot with its modules: (image, release).
fn boot_kernel() -> (String, String) {
    let mut found: Vec<(String, String)> = std::fs::read_dir("/boot")
        .expect("/boot")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            std::path::Path::new(&format!("/lib/modules/{release}/modules.dep"))
                .exists()
                .then(|| (e.path().display().to_string(), release))
        })
        .collect();
    found.sort();
    found
        .pop()
        .expect("a kernel in /boot (.ci/install-microvm)")
}

/// `run -t`: the command gets a terminal of its own in the guest, the size of the user's.
/// (Booted with `--kernel` naming the kernel it runs.)
#[test]
fn run_t_gives_the_guest_command_a_real_terminal() {
    if !e2e("run_t_gives_the_guest_command_a_real_terminal") {
        return;
    }
    let a = Airlock::root();
    let (image, release) = boot_kernel();
    // In the overlay workspace (the default): its change summary comes after the command's
    // end, as without a terminal.
    let script = format!("uname -r; touch made-on-a-terminal; {TTY_SCRIPT}");
    let mut cmd = a.command(&[
        "run",
        "--backend",
        "microvm",
        "--kernel",
        &image,
        "-t",
        "--net",
        "off",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    cmd.env("AIRLOCK_CACHE_DIR", cache_dir())
        .env("TERM", "xterm");
    let t = OnTerminal::spawn(cmd, 30, 100);
    t.wait_for(&release);
    let seen = check_terminal_session(t, "run -t");
    check_terminal_summary(&seen, "run -t");
}

/// `run -t` in the overlay workspace: the change summary follows the command's end.
fn check_terminal_summary(seen: &str, label: &str) {
    assert!(
        seen.contains(
            "workspace changes (discarded, host untouched): 1 added, 0 changed, 0 deleted"
        ) && seen.contains("+ made-on-a-terminal"),
        "{label}:\n{seen}"
    );
}

/// The guest kernel: `--kernel` and `[sandbox] kernel` name one; one that is missing or not a
/// kernel is exit 123 with the path, who chose it and how to get one; `doctor` says which
/// kernel and where it came from. (No boot.)
#[test]
fn a_missing_or_unusable_guest_kernel_is_explained() {
    if !e2e("a_missing_or_unusable_guest_kernel_is_explained") {
        return;
    }
    let a = Airlock::root();
    let out = vm_run(&a, &["--kernel", "/nonexistent/vmlinuz", "--", "true"], &[]);
    assert_eq!(out.code(), 123, "{}", out.describe());
    assert!(
        out.stderr.contains("/nonexistent/vmlinuz (from --kernel)"),
        "{}",
        out.describe()
    );
    assert!(
        out.stderr.contains(
            "hint: install a distribution kernel package (Debian: apt-get install linux-image-cloud-amd64"
        ),
        "{}",
        out.describe()
    );
    // The configuration's, relative to the project; not a kernel at all.
    std::fs::write(a.cwd.join("junk-kernel"), "not a kernel").expect("write");
    std::fs::write(
        a.cwd.join("airlock.toml"),
        "[sandbox]\nkernel = \"junk-kernel\"\n",
    )
    .expect("write");
    let out = vm_run(&a, &["--", "true"], &[]);
    assert_eq!(out.code(), 123, "{}", out.describe());
    let project = a.cwd.canonicalize().expect("cwd");
    assert!(
        out.stderr.contains(&format!(
            "{}/junk-kernel (from project:{}/airlock.toml): not a bzImage or vmlinux",
            project.display(),
            project.display()
        )),
        "{}",
        out.describe()
    );
    // --kernel wins over the configuration (here: it is missing too, and says so).
    let out = vm_run(&a, &["--kernel", "/nonexistent/k2", "--", "true"], &[]);
    assert!(
        out.stderr.contains("/nonexistent/k2 (from --kernel)"),
        "{}",
        out.describe()
    );
    // doctor: which kernel, and from where.
    let (image, release) = boot_kernel();
    let doctor = |env: &[(&str, &str)]| {
        let mut cmd = a.command(&["doctor", "--json"]);
        cmd.env("AIRLOCK_CACHE_DIR", cache_dir())
            .envs(env.iter().copied());
        let out = common::run_with_deadline(cmd, None, VM_DEADLINE);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("doctor json");
        v["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["id"] == "microvm")
            .map(|r| r["detail"].as_str().unwrap_or_default().to_string())
            .expect("a microvm row")
    };
    let d = doctor(&[]);
    assert!(
        d.contains(&format!("kernel {release} ({image}, from /boot")),
        "{d}"
    );
    let d = doctor(&[("AIRLOCK_KERNEL", &image)]);
    assert!(d.contains("from AIRLOCK_KERNEL"), "{d}");
}

/// `airlock __action` (what the MCP server and the engine run for file tools): its answer.
fn action(a: &Airlock, act: serde_json::Value) -> serde_json::Value {
    let mut cmd = a.command(&["__action"]);
    cmd.env("AIRLOCK_CACHE_DIR", cache_dir());
    let out = common::run_with_deadline(cmd, Some(act.to_string().into_bytes()), VM_DEADLINE);
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.describe()))
}

/// A named microVM sandbox, one boot: `exec -t` and `shell` on a real terminal; `cp` both
/// ways and the MCP file tools, with their refusals; `stop` asks the guest to power off (its
/// commands get SIGTERM, then SIGKILL) and ends within the grace however busy the guest is.
#[test]
fn a_named_microvm_has_a_terminal_cp_file_tools_and_a_clean_stop() {
    if !e2e("a_named_microvm_has_a_terminal_cp_file_tools_and_a_clean_stop") {
        return;
    }
    let a = Airlock::root();
    let _guard = EngineGuard(&a);
    let ok = |args: &[&str]| {
        let out = vm_cli(&a, args);
        assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
        out
    };
    ok(&["create", "--backend", "microvm", "vmbox", "--net", "off"]);
    ok(&["start", "vmbox"]);
    let mut cmd = a.command(&["exec", "-t", "vmbox", "--", "sh", "-c", TTY_SCRIPT]);
    cmd.env("AIRLOCK_CACHE_DIR", cache_dir())
        .env("TERM", "xterm");
    check_terminal_session(OnTerminal::spawn(cmd, 30, 100), "exec -t");
    // `shell`: a login shell on a terminal; what is typed runs, `exit` is its status.
    let mut cmd = a.command(&["shell", "vmbox"]);
    cmd.env("AIRLOCK_CACHE_DIR", cache_dir())
        .env("TERM", "xterm");
    let mut t = OnTerminal::spawn(cmd, 24, 80);
    t.type_in("echo \"[$((6*7))] $TERM\"; [ -t 0 ] && echo on-a-tty; exit 3\n");
    let code = t.exit_code();
    let seen = t.seen();
    assert_eq!(code, 3, "{seen}");
    assert!(seen.contains("[42] xterm"), "{seen}");
    assert!(seen.lines().any(|l| l == "on-a-tty"), "{seen}");

    // cp in: a file into a directory, a tree with a symlink inside it.
    let host = common::TempDir::new("vm-cp");
    std::fs::write(host.join("in.txt"), "to the guest\n").expect("write");
    std::fs::create_dir_all(host.join("tree/sub")).expect("mkdir");
    std::fs::write(host.join("tree/sub/f"), [0u8, 255, 10, 1].repeat(50_000)).expect("write");
    std::os::unix::fs::symlink("sub/f", host.join("tree/link")).expect("symlink");
    let h = |p: &str| host.join(p).display().to_string();
    ok(&["cp", &h("in.txt"), "vmbox:/tmp/"]);
    ok(&["cp", &h("tree"), "vmbox:/home/agent/"]);
    let out = ok(&[
        "exec",
        "vmbox",
        "--",
        "sh",
        "-c",
        "cat /tmp/in.txt; md5sum < /home/agent/tree/link; readlink /home/agent/tree/link; \
         stat -c %U /tmp/in.txt; mkdir -p /tmp/d/x; cp /tmp/in.txt /tmp/d/x/y; ln -s /etc /tmp/d/esc; \
         ln -s /etc/passwd /tmp/pw",
    ]);
    let want_md5 = {
        let o = std::process::Command::new("md5sum")
            .stdin(std::fs::File::open(host.join("tree/sub/f")).expect("open"))
            .output()
            .expect("md5sum");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(
        out.stdout,
        format!("to the guest\n{want_md5}sub/f\nagent\n"),
        "{}",
        out.describe()
    );
    // cp out: a file, and a tree whose symlink leads out (it stays a symlink on the host).
    ok(&["cp", "vmbox:/home/agent/tree/sub/f", &h("out.bin")]);
    assert_eq!(
        std::fs::read(host.join("out.bin")).expect("out"),
        std::fs::read(host.join("tree/sub/f")).expect("in")
    );
    ok(&["cp", "vmbox:/tmp/d", &h("outdir")]);
    assert_eq!(
        std::fs::read_to_string(host.join("outdir/x/y")).expect("tree"),
        "to the guest\n"
    );
    assert!(std::fs::symlink_metadata(host.join("outdir/esc"))
        .expect("esc")
        .file_type()
        .is_symlink());
    // Refusals: a path that is not there, a host symlink as the source.
    let out = vm_cli(&a, &["cp", "vmbox:/tmp/nothing-here", &h("x")]);
    assert_eq!(out.code(), 122, "{}", out.describe());
    std::os::unix::fs::symlink("/etc/passwd", host.join("pw")).expect("symlink");
    let out = vm_cli(&a, &["cp", &h("pw"), "vmbox:/tmp/"]);
    assert_eq!(out.code(), 2, "{}", out.describe());

    // The MCP file tools: write, read back, and their refusals (outside the roots, and a
    // symlink planted inside that leads out).
    let w = action(
        &a,
        serde_json::json!({"action": "file_write", "name": "vmbox", "path": "/tmp/mcp.txt",
                           "content": "from the tools\n"}),
    );
    assert_eq!(w["ok"]["value"]["written_bytes"], 15, "{w}");
    let r = action(
        &a,
        serde_json::json!({"action": "file_read", "name": "vmbox", "path": "/tmp/mcp.txt"}),
    );
    assert_eq!(r["ok"]["value"]["content"], "from the tools\n", "{r}");
    for path in ["/etc/passwd", "/tmp/pw"] {
        let e = action(
            &a,
            serde_json::json!({"action": "file_read", "name": "vmbox", "path": path}),
        );
        assert_eq!(e["error"]["kind"], "refused", "{path}: {e}");
    }
    let c = action(
        &a,
        serde_json::json!({"action": "copy", "name": "vmbox", "direction": "out",
                           "host_path": h("mcp-out.txt"), "path": "/tmp/mcp.txt"}),
    );
    assert!(c.get("ok").is_some(), "{c}");
    assert_eq!(
        std::fs::read_to_string(host.join("mcp-out.txt")).expect("copied out"),
        "from the tools\n"
    );

    // stop: the guest's commands hear SIGTERM (143); one that ignores it is killed when the
    // guest's share of the grace is over (137); the stop itself ends within its grace.
    let spawn_exec = |script: &str| {
        let mut cmd = a.command(&["exec", "vmbox", "--", "sh", "-c", script]);
        cmd.env("AIRLOCK_CACHE_DIR", cache_dir());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn exec");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("read");
        assert_eq!(first, "up\n");
        child
    };
    let mut polite = spawn_exec("echo up; sleep 600");
    let mut stubborn = spawn_exec("trap '' TERM; echo up; while :; do sleep 0.2; done");
    let started = Instant::now();
    ok(&["stop", "--grace", "6s", "vmbox"]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "stop took {took:?}");
    assert!(took >= Duration::from_millis(2500), "stop took {took:?}");
    for (child, want) in [(&mut polite, 143), (&mut stubborn, 137)] {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err);
        let code = child.wait().expect("wait").code();
        assert_eq!(code, Some(want), "stop took {took:?}: {err}");
    }
}

/// A named microVM sandbox run by an ordinary user (rootless airlock, its own engine):
/// create, start, exec (the guest's kernel, the sandbox user, state kept between execs, stdin),
/// stop, rm.
#[test]
fn a_named_microvm_sandbox_works_rootless() {
    if !e2e("a_named_microvm_sandbox_works_rootless") {
        return;
    }
    let (_bins, a) = rootless_vm_airlock();
    let _guard = EngineGuard(&a);
    let ok = |args: &[&str]| {
        let out = vm_cli(&a, args);
        assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
        out
    };
    ok(&["create", "--backend", "microvm", "vmbox", "--net", "off"]);
    ok(&["start", "vmbox"]);
    let out = ok(&[
        "exec",
        "vmbox",
        "--",
        "sh",
        "-c",
        "uname -r; id -u; echo kept > /tmp/state",
    ]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_ne!(
        lines.first().copied(),
        Some(host_release().as_str()),
        "{}",
        out.describe()
    );
    assert_eq!(lines.get(1).copied(), Some("1000"), "{}", out.describe());
    let mut cmd = a.command(&[
        "exec",
        "-i",
        "vmbox",
        "--",
        "sh",
        "-c",
        "cat /tmp/state; cat",
    ]);
    cmd.env("AIRLOCK_CACHE_DIR", cache_dir());
    let out = common::run_with_deadline(cmd, Some(b"piped\n".to_vec()), VM_DEADLINE);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(out.stdout, "kept\npiped\n", "{}", out.describe());
    ok(&["stop", "vmbox"]);
    let out = vm_cli(&a, &["exec", "vmbox", "--", "true"]);
    assert_eq!(out.code(), 120, "{}", out.describe());
    ok(&["rm", "vmbox"]);
    assert!(!a.state_dir().join("sandboxes/vmbox").exists());
}

/// Removes a test's sandboxes and stops its engine whatever the outcome.
struct Cleanup<'a>(&'a Airlock, &'a [&'a str]);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for n in self.1 {
            let _ = vm_cli(self.0, &["rm", "-f", n]);
        }
        common::stop_engines_of(self.0);
    }
}

/// A named microVM whose boot runs out of its time (`AIRLOCK_VM_START_TIMEOUT=1`, in the
/// engine's environment): `start` fails with the cause (the boot, its time, its accelerator)
/// and a hint, nothing of it is left running (supervisor, QEMU, control socket, run
/// directory), and the sandbox is `failed` with that error; a later start with the boot's
/// usual time works. Rootful (one full boot) and rootless (the failed start only).
#[test]
fn a_named_microvm_start_out_of_time_says_why_and_leaves_nothing() {
    if !e2e("a_named_microvm_start_out_of_time_says_why_and_leaves_nothing") {
        return;
    }
    let root = Airlock::root();
    let bins = Bins::owned_by(&common::test_user());
    let rootless = Airlock::rootless(&bins);
    for (a, mode) in [(&root, "rootful"), (&rootless, "rootless")] {
        let _guard = Cleanup(a, &["vmslow"]);
        let hurried = |args: &[&str]| {
            let mut cmd = a.command(args);
            cmd.env("AIRLOCK_CACHE_DIR", cache_dir());
            cmd.env("AIRLOCK_VM_START_TIMEOUT", "1");
            // A boot (a copy of a boot snapshot may well start within the second).
            cmd.env("AIRLOCK_VM_SNAPSHOT", "0");
            common::run_with_deadline(cmd, None, VM_DEADLINE)
        };
        let out = hurried(&[
            "create",
            "--backend",
            "microvm",
            "vmslow",
            "--net",
            "off",
            "--workspace",
            "none",
        ]);
        assert_eq!(out.code(), 0, "{mode}: {}", out.describe());
        let out = hurried(&["start", "vmslow"]);
        assert_eq!(out.code(), 125, "{mode}: {}", out.describe());
        assert!(
            out.stderr
                .contains("did not finish booting within 1 s under TCG")
                || out
                    .stderr
                    .contains("did not finish booting within 1 s under KVM"),
            "{mode}: {}",
            out.describe()
        );
        assert!(
            out.stderr.contains("hint:") && out.stderr.contains("AIRLOCK_VM_START_TIMEOUT="),
            "{mode}: {}",
            out.describe()
        );
        // `failed`, with the cause as its last error.
        let out = vm_cli(a, &["list", "--json"]);
        let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("list --json");
        let rec = &list[0];
        assert_eq!(rec["name"], "vmslow", "{mode}: {list}");
        assert_eq!(rec["state"], "failed", "{mode}: {list}");
        assert!(
            rec["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("did not finish booting")),
            "{mode}: {list}"
        );
        // Nothing left: no supervisor, no QEMU (in the sandbox's cgroup), no socket, no run
        // directory.
        let dir = a.state_dir().join("sandboxes/vmslow");
        let sup: Option<i32> = std::fs::read_to_string(dir.join("supervisor.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok());
        if let Some(pid) = sup {
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
                && !status_field(pid, "State").starts_with('Z');
            assert!(!alive, "{mode}: supervisor {pid} still runs");
        }
        let gone = common::wait_until(Duration::from_secs(10), || {
            pids_in_cgroup_of("vmslow").is_empty()
        });
        assert!(gone, "{mode}: {:?}", pids_in_cgroup_of("vmslow"));
        for f in ["vm.sock", "vm.pid", "vm-booting"] {
            assert!(!dir.join(f).exists(), "{mode}: {f} left behind");
        }
        let runs: Vec<String> = std::fs::read_dir(a.state_dir().join("runs"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("vmslow"))
            .collect();
        assert!(runs.is_empty(), "{mode}: run directories left: {runs:?}");
        if a.user.is_some() {
            continue;
        }
        // An engine with the boot's usual time: the start works (the failed one blocks
        // nothing). On a terminal it says what it waits for meanwhile.
        common::stop_engines_of(a);
        let mut cmd = a.command(&["start", "vmslow"]);
        // A boot, whose wait the terminal shows (a boot snapshot's start may be too quick).
        cmd.env("AIRLOCK_CACHE_DIR", cache_dir())
            .env("AIRLOCK_VM_SNAPSHOT", "0")
            .env("TERM", "xterm");
        let mut t = OnTerminal::spawn(cmd, 24, 120);
        let code = t.exit_code();
        let seen = t.seen();
        assert_eq!(code, 0, "{mode}:\n{seen}");
        assert!(
            seen.contains("vmslow: booting its microVM") && seen.contains("vmslow running"),
            "{mode}:\n{seen}"
        );
        let out = vm_cli(a, &["exec", "vmslow", "--", "echo", "up"]);
        assert_eq!(out.stdout, "up\n", "{mode}: {}", out.describe());
    }
}

/// A git project in the test's working directory, with one commit.
fn git_project(a: &Airlock) -> std::path::PathBuf {
    let p = a.cwd.clone();
    let git = |args: &[&str]| {
        let out = common::run_with_deadline(a.command_with("git", args), None, VM_DEADLINE);
        assert_eq!(out.code(), 0, "git {args:?}: {}", out.describe());
        out.stdout
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["config", "user.name", "Host User"]);
    git(&["config", "user.email", "host@example.invalid"]);
    std::fs::write(p.join("a.txt"), "one\n").expect("write");
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "initial"]);
    p
}

fn host_git(a: &Airlock, args: &[&str]) -> String {
    let out = common::run_with_deadline(a.command_with("git", args), None, VM_DEADLINE);
    assert_eq!(out.code(), 0, "git {args:?}: {}", out.describe());
    out.stdout
}

/// A named microVM sandbox in a git repository gets its own clone (on a disk of its own),
/// and its work comes back through the same review gate as a container's: hooks and config
/// planted in the guest's repository never run on the host, nested agent configuration and
/// symlink chains are flagged, an oversized bundle is refused and changes nothing, and the
/// work (committed or not) survives a stop. Two boots.
#[test]
fn a_microvm_clone_workspace_comes_back_through_the_review_gate() {
    if !e2e("a_microvm_clone_workspace_comes_back_through_the_review_gate") {
        return;
    }
    let a = Airlock::root();
    let _guard = Cleanup(&a, &["vmclone"]);
    let p = git_project(&a);
    let ok = |args: &[&str]| {
        let out = vm_cli(&a, args);
        assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
        out
    };
    let inside = |script: &str| {
        ok(&[
            "exec",
            "vmclone",
            "--",
            "sh",
            "-c",
            &format!(
                "cd /workspace && export GIT_AUTHOR_NAME=agent GIT_AUTHOR_EMAIL=a@b.invalid \
                 GIT_COMMITTER_NAME=agent GIT_COMMITTER_EMAIL=a@b.invalid; {script}"
            ),
        ])
    };
    ok(&["create", "--backend", "microvm", "vmclone", "--net", "off"]);
    assert!(
        a.state_dir()
            .join("sandboxes/vmclone/workspace/.git")
            .is_dir(),
        "the host made the clone"
    );
    ok(&["start", "vmclone"]);
    let marker = a.dir.join("pwned");
    let m = marker.display().to_string();
    // The clone in the guest: the project's files and history, the sandbox user's (and
    // nothing else: no `lost+found` of the disk's file system).
    let out = inside(&format!(
        "ls -A | grep -v -x -e a.txt -e .git; cat a.txt; stat -c %u a.txt .git/HEAD; git rev-parse --abbrev-ref HEAD; \
         echo two > a.txt && git commit -qam two && \
         mkdir -p sub/.claude && echo '{{}}' > sub/.claude/settings.json && \
         mkdir -p l && ln -s .. l/x && ln -s l/x/.. dist && git add -A && git commit -qm nested && \
         git log --oneline | wc -l && \
         printf '#!/bin/sh\\ntouch {m}\\n' > .git/hooks/post-merge && chmod +x .git/hooks/post-merge && \
         for h in reference-transaction post-checkout pre-auto-gc post-rewrite; do \
           cp .git/hooks/post-merge .git/hooks/$h; done && \
         git config core.fsmonitor 'touch {m}' && git config core.hooksPath .git/hooks && \
         git config core.pager 'touch {m}'"
    ));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        ["one", "1000", "1000", "airlock/vmclone", "3"],
        "{}",
        out.describe()
    );
    // The host never mounts the guest's disk: the work comes over the channel at diff time.
    let dj: serde_json::Value =
        serde_json::from_str(&ok(&["diff", "vmclone", "--json"]).stdout).expect("diff json");
    let flagged: Vec<String> = dj["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["path"].as_str().unwrap_or_default().to_string())
        .collect();
    for f in ["sub/.claude/settings.json", "dist"] {
        assert!(flagged.iter().any(|l| l == f), "{f} not in {flagged:?}");
    }
    let host_config = std::fs::read(p.join(".git/config")).expect("host config");
    let out = vm_cli(&a, &["fetch", "vmclone"]);
    assert_eq!(out.code(), 121, "the gate stops it: {}", out.describe());
    assert!(
        out.stderr.contains("sub/.claude/settings.json"),
        "{}",
        out.describe()
    );
    ok(&["fetch", "vmclone", "--accept"]);
    let log = host_git(&a, &["log", "--format=%s", "airlock/vmclone"]);
    assert_eq!(log, "nested\ntwo\ninitial\n");
    assert_eq!(
        host_git(&a, &["show", "airlock/vmclone:a.txt"]),
        "two\n",
        "the guest's commit is on the host's branch"
    );
    // Nothing the guest planted in its repository ran or landed on the host.
    assert!(
        !marker.exists(),
        "a hook or fsmonitor of the guest ran on the host"
    );
    assert_eq!(
        std::fs::read(p.join(".git/config")).expect("host config"),
        host_config
    );
    assert!(!p.join(".git/hooks/post-merge").exists());

    // (The guest's own git is its business; unplant so its next commits work.)
    inside(
        "git config --unset core.fsmonitor; git config --unset core.hooksPath; rm -f .git/hooks/*",
    );
    // A bundle over the limit: refused, and nothing changes on the host.
    inside("head -c 1048576 /dev/urandom > big.bin && git add big.bin && git commit -qm big");
    // The engine pulls from the guest: the limit is the engine's environment, so this fetch
    // starts an engine of its own with it (and the next command one without).
    common::stop_engines_of(&a);
    let mut cmd = a.command(&["fetch", "vmclone", "--accept"]);
    cmd.env("AIRLOCK_CACHE_DIR", cache_dir());
    cmd.env("AIRLOCK_VM_BUNDLE_MAX", "65536");
    let out = common::run_with_deadline(cmd, None, VM_DEADLINE);
    common::stop_engines_of(&a);
    assert_ne!(out.code(), 0, "{}", out.describe());
    assert!(out.stderr.contains("65536"), "{}", out.describe());
    assert_eq!(
        host_git(&a, &["log", "-1", "--format=%s", "airlock/vmclone"]),
        "nested\n"
    );

    // Work made just before a stop comes out at the stop; the disk keeps everything,
    // uncommitted work too, for the next start.
    inside("echo three > a.txt && git commit -qam three && echo draft > scratch.txt");
    ok(&["stop", "vmclone"]);
    ok(&["fetch", "vmclone", "--accept"]);
    assert_eq!(
        host_git(&a, &["log", "-1", "--format=%s", "airlock/vmclone"]),
        "three\n",
        "the stopped sandbox's last commit came back"
    );
    ok(&["start", "vmclone"]);
    let out = inside("cat a.txt scratch.txt; git log -1 --format=%s");
    assert_eq!(out.stdout, "three\ndraft\nthree\n", "{}", out.describe());
    assert!(!marker.exists());
}

/// One request to the test's engine over its socket (curl, as the test's user): (status, body).
fn engine_http(a: &Airlock, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let dir = a.dir.join("runtime/airlock");
    let sock = std::fs::read_dir(&dir)
        .expect("runtime dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sock"))
        .expect("engine socket")
        .display()
        .to_string();
    let url = format!("http://airlock{path}");
    let mut args = vec![
        "-sS",
        "--unix-socket",
        &sock,
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ];
    if let Some(b) = body {
        args.extend(["-H", "Content-Type: application/json", "-d", b]);
    }
    args.push(&url);
    let out = common::run_with_deadline(a.command_with("curl", &args), None, VM_DEADLINE);
    let (text, code) = out.stdout.trim_end().rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), text.to_string())
}

/// A commit in a clone microVM's guest (synced to its disk): its id.
fn guest_commit(a: &Airlock, name: &str, subject: &str) -> String {
    let out = vm_cli(
        a,
        &[
            "exec",
            name,
            "--",
            "sh",
            "-c",
            &format!(
                "cd /workspace && echo '{subject}' >> a.txt && git -c user.name=agent \
                 -c user.email=a@b.invalid commit -qam '{subject}' && sync && git rev-parse HEAD"
            ),
        ],
    );
    assert_eq!(out.code(), 0, "commit {subject}: {}", out.describe());
    out.stdout.trim().to_string()
}

/// `airlock diff NAME --json`'s tip.
fn diff_tip(a: &Airlock, name: &str) -> String {
    let out = vm_cli(a, &["diff", name, "--json"]);
    assert_eq!(out.code(), 0, "diff: {}", out.describe());
    let d: serde_json::Value = serde_json::from_str(&out.stdout).expect("diff json");
    d["tip"].as_str().expect("tip").to_string()
}

/// A clone microVM's work comes back however its VM stops: a stop through the engine's HTTP
/// API (as MCP and agent mode stop it, not the CLI) brings the guest's branch over, so diff
/// and fetch of the stopped sandbox show it. A stop whose pull fails, and a killed supervisor,
/// leave it on the disk: diff and fetch then refuse (120, `in_guest`) with a hint, never show
/// older work as the last; the next start brings it over from the disk. Four boots.
#[test]
fn a_microvm_clones_work_comes_back_however_its_vm_stops() {
    if !e2e("a_microvm_clones_work_comes_back_however_its_vm_stops") {
        return;
    }
    let a = Airlock::root();
    let _guard = Cleanup(&a, &["vmpull"]);
    git_project(&a);
    let ok = |args: &[&str]| {
        let out = vm_cli(&a, args);
        assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
        out
    };
    ok(&["create", "--backend", "microvm", "vmpull", "--net", "off"]);
    ok(&["start", "vmpull"]);
    let api = guest_commit(&a, "vmpull", "before the api stop");
    let (code, body) = engine_http(
        &a,
        "POST",
        "/v1/sandboxes/vmpull/stop",
        Some(r#"{"grace_ms":10000}"#),
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"stopped\""), "{body}");
    assert_eq!(
        diff_tip(&a, "vmpull"),
        api,
        "the api's stop brought it over"
    );
    ok(&["fetch", "vmpull", "--accept"]);
    assert_eq!(host_git(&a, &["rev-parse", "airlock/vmpull"]).trim(), api);

    // A pull that fails at the stop (here: over the engine's bundle limit) does not keep the
    // VM running, and does not pass for the last work either: stop warns, diff refuses.
    ok(&["start", "vmpull"]);
    let limited = guest_commit(&a, "vmpull", "over the limit");
    common::stop_engines_of(&a);
    let mut cmd = a.command(&["stop", "vmpull"]);
    cmd.env("AIRLOCK_CACHE_DIR", cache_dir());
    cmd.env("AIRLOCK_VM_BUNDLE_MAX", "100");
    let out = common::run_with_deadline(cmd, None, VM_DEADLINE);
    common::stop_engines_of(&a);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(
        out.stdout.contains("vmpull stopped")
            && out
                .stderr
                .contains("warning: the work of vmpull is still on its VM's disk")
            && out
                .stderr
                .contains("hint: `airlock start vmpull` brings it over"),
        "{}",
        out.describe()
    );
    let out = vm_cli(&a, &["diff", "vmpull"]);
    assert_eq!(out.code(), 120, "{}", out.describe());
    let out = ok(&["audit", "vmpull"]);
    assert!(
        out.stdout.contains("pull at stop failed") && out.stdout.contains("100"),
        "{}",
        out.describe()
    );

    // The next start brings it over; then the supervisor killed: its VM dies with it, the
    // work stays on the disk.
    ok(&["start", "vmpull"]);
    assert_eq!(diff_tip(&a, "vmpull"), limited, "recovered at the start");
    let killed = guest_commit(&a, "vmpull", "before the kill");
    let dir = a.state_dir().join("sandboxes/vmpull");
    let pid: i32 = std::fs::read_to_string(dir.join("vm.pid"))
        .expect("vm.pid")
        .trim()
        .parse()
        .expect("pid");
    // SAFETY: kill(2) on the supervisor this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }),
        "the supervisor did not die"
    );
    for verb in [&["diff", "vmpull"][..], &["fetch", "vmpull", "--accept"]] {
        let out = vm_cli(&a, verb);
        assert_eq!(out.code(), 120, "{verb:?}: {}", out.describe());
        assert!(
            out.stderr.contains("still on its VM's disk")
                && out
                    .stderr
                    .contains("hint: `airlock start vmpull` brings it over"),
            "{verb:?}: {}",
            out.describe()
        );
    }
    let (code, body) = engine_http(&a, "GET", "/v1/sandboxes/vmpull/diff", None);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("\"in_guest\""), "{body}");
    assert_eq!(
        host_git(&a, &["rev-parse", "airlock/vmpull"]).trim(),
        api,
        "nothing was fetched"
    );
    // The next start: the running guest's branch is pulled again.
    ok(&["start", "vmpull"]);
    assert_eq!(diff_tip(&a, "vmpull"), killed, "recovered from the disk");
    let out = ok(&["stop", "vmpull"]);
    assert!(!out.stderr.contains("warning"), "{}", out.describe());
    ok(&["fetch", "vmpull", "--accept"]);
    assert_eq!(
        host_git(&a, &["rev-parse", "airlock/vmpull"]).trim(),
        killed
    );
    assert!(!dir.join("vm-work-pending").exists());
    // rm is the container clone's: the sandbox goes, disk and all (the fetched branch stays).
    ok(&["rm", "vmpull"]);
    assert!(!dir.exists());
    assert_eq!(
        host_git(&a, &["rev-parse", "airlock/vmpull"]).trim(),
        killed
    );
}

/// A guest committing in a loop while its sandbox stops: the stop ends the guest's commands
/// before it takes the branch out, so what the host reviews after the stop is the branch as
/// the guest left it — the next start finds no commit the host never saw (the bundle was cut
/// while the loop still ran, and its later commits were lost to review without a word).
/// Two boots.
#[test]
fn a_commit_loop_during_stop_is_not_lost_to_review() {
    if !e2e("a_commit_loop_during_stop_is_not_lost_to_review") {
        return;
    }
    let a = Airlock::root();
    let _guard = Cleanup(&a, &["vmrace"]);
    git_project(&a);
    let ok = |args: &[&str]| {
        let out = vm_cli(&a, args);
        assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
        out
    };
    ok(&["create", "--backend", "microvm", "vmrace", "--net", "off"]);
    ok(&["start", "vmrace"]);
    let mut cmd = a.command(&[
        "exec",
        "vmrace",
        "--",
        "sh",
        "-c",
        "cd /workspace && export GIT_AUTHOR_NAME=agent GIT_AUTHOR_EMAIL=a@b.invalid \
         GIT_COMMITTER_NAME=agent GIT_COMMITTER_EMAIL=a@b.invalid; \
         git commit -q --allow-empty -m 'loop 0' && echo up; \
         i=0; while :; do i=$((i + 1)); echo $i >> a.txt; git commit -qam \"loop $i\"; done",
    ]);
    cmd.env("AIRLOCK_CACHE_DIR", cache_dir());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut looping = cmd.spawn().expect("spawn the loop");
    let mut first = String::new();
    BufReader::new(looping.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read");
    assert_eq!(first, "up\n");
    // Let it commit a while, then stop.
    std::thread::sleep(Duration::from_secs(2));
    let out = ok(&["stop", "vmrace"]);
    assert!(!out.stderr.contains("warning"), "{}", out.describe());
    let ended = common::wait_until(Duration::from_secs(30), || {
        looping.try_wait().ok().flatten().is_some()
    });
    assert!(ended, "the loop's exec did not end with the stop");
    let taken = diff_tip(&a, "vmrace");
    ok(&["fetch", "vmrace", "--accept"]);
    assert_eq!(host_git(&a, &["rev-parse", "airlock/vmrace"]).trim(), taken);
    let host_log = host_git(&a, &["log", "--format=%s", "-1", "airlock/vmrace"]);
    assert!(host_log.starts_with("loop "), "{host_log}");
    let out = ok(&["audit", "vmrace"]);
    assert!(!out.stdout.contains("pull at stop"), "{}", out.describe());
    // The guest's disk holds nothing newer than what the stop took.
    ok(&["start", "vmrace"]);
    let out = ok(&[
        "exec",
        "vmrace",
        "--",
        "sh",
        "-c",
        "cd /workspace && git rev-parse HEAD && git log --format=%s -1",
    ]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(taken.as_str()),
        "the guest's branch moved after the stop took it: {}",
        out.describe()
    );
}

/// A clone workspace on a rootless microVM (an ordinary user's airlock and engine): create
/// makes the clone, a commit in the guest, stop, then diff and fetch bring it to the user's
/// repository; a `--ro` mount of the user's is readable and not writable there. One boot.
#[test]
fn a_rootless_microvm_clone_workspace_comes_back() {
    if !e2e("a_rootless_microvm_clone_workspace_comes_back") {
        return;
    }
    let (_bins, a) = rootless_vm_airlock();
    let _guard = Cleanup(&a, &["vmrlclone"]);
    let p = git_project(&a);
    let ok = |args: &[&str]| {
        let out = vm_cli(&a, args);
        assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
        out
    };
    // A read-only mount of the user's, beside the clone (a snapshot at each start).
    let notes = a.dir.join("notes");
    std::fs::create_dir_all(&notes).expect("mkdir");
    std::fs::write(notes.join("n.txt"), "user's notes\n").expect("write");
    let user = common::test_user();
    for p in [notes.clone(), notes.join("n.txt")] {
        std::os::unix::fs::chown(&p, Some(user.uid), Some(user.gid)).expect("chown");
    }
    let ro = format!("{}:/notes", notes.display());
    ok(&[
        "create",
        "--backend",
        "microvm",
        "vmrlclone",
        "--net",
        "off",
        "--ro",
        &ro,
    ]);
    assert!(
        a.state_dir()
            .join("sandboxes/vmrlclone/workspace/.git")
            .is_dir(),
        "the host made the clone"
    );
    ok(&["start", "vmrlclone"]);
    let out = ok(&[
        "exec",
        "vmrlclone",
        "--",
        "sh",
        "-c",
        "cd /workspace && id -u && stat -c %u a.txt && git rev-parse --abbrev-ref HEAD && \
         cat /notes/n.txt && { (echo x > /notes/n.txt) 2>/dev/null || echo read-only; }",
    ]);
    assert_eq!(
        std::fs::read_to_string(notes.join("n.txt")).expect("read"),
        "user's notes\n"
    );
    assert_eq!(
        out.stdout,
        "1000\n1000\nairlock/vmrlclone\nuser's notes\nread-only\n",
        "{}",
        out.describe()
    );
    let tip = guest_commit(&a, "vmrlclone", "rootless work");
    ok(&["stop", "vmrlclone"]);
    let out = ok(&["diff", "vmrlclone", "--json"]);
    let d: serde_json::Value = serde_json::from_str(&out.stdout).expect("diff json");
    assert_eq!(d["tip"], tip.as_str(), "{}", out.describe());
    assert_eq!(d["commits"], 1, "{}", out.describe());
    ok(&["fetch", "vmrlclone"]);
    assert_eq!(
        host_git(&a, &["rev-parse", "airlock/vmrlclone"]).trim(),
        tip
    );
    assert_eq!(
        host_git(&a, &["show", "airlock/vmrlclone:a.txt"]),
        "one\nrootless work\n"
    );
    // Everything in the user's repository and the sandbox's folder is the user's own.
    let uid = common::test_user().uid.to_string();
    for d in [p.join(".git"), a.state_dir().join("sandboxes/vmrlclone")] {
        let d = d.display().to_string();
        let out = common::run_with_deadline(
            a.command_with("find", &[d.as_str(), "!", "-user", uid.as_str()]),
            None,
            VM_DEADLINE,
        );
        assert_eq!(out.stdout, "", "not the user's: {}", out.describe());
    }
    ok(&["rm", "vmrlclone"]);
}

/// Every entry under `dir`: (relative path, mode, size, mtime, contents of files).
fn tree_state(dir: &std::path::Path) -> Vec<(String, u32, u64, i64, Vec<u8>)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let m = std::fs::symlink_metadata(&d).expect("stat");
        let rel = d.strip_prefix(dir).expect("under").display().to_string();
        let body = if m.is_file() {
            std::fs::read(&d).expect("read")
        } else {
            Vec::new()
        };
        out.push((rel, m.mode(), m.size(), m.mtime(), body));
        if m.is_dir() {
            for e in std::fs::read_dir(&d).expect("readdir") {
                stack.push(e.expect("entry").path());
            }
        }
    }
    out.sort();
    out
}

/// `--ro HOST:PATH` and `[[mounts]]` (read-only) on a microVM: a snapshot of the host path
/// per run, read-only at PATH in the guest (a directory, or a single file); reading works,
/// every write fails inside, and the host path is unchanged (contents, modes, times). `--rw`
/// and `readonly = false` stay refused (123) with a hint naming what to use instead. One boot.
#[test]
fn read_only_mounts_reach_the_guest_and_the_host_is_never_written() {
    if !e2e("read_only_mounts_reach_the_guest_and_the_host_is_never_written") {
        return;
    }
    let a = Airlock::root();
    let data = a.dir.join("data");
    std::fs::create_dir_all(data.join("sub")).expect("mkdir");
    std::fs::write(data.join("f.txt"), "from the host\n").expect("write");
    std::fs::write(data.join("sub/g.txt"), "nested\n").expect("write");
    common::set_mode(&data.join("sub/g.txt"), 0o600);
    let single = a.dir.join("single.conf");
    std::fs::write(&single, "one file\n").expect("write");
    let cfg = a.dir.join("cfg");
    std::fs::create_dir_all(&cfg).expect("mkdir");
    std::fs::write(cfg.join("c.txt"), "configured\n").expect("write");
    let conf_dir = a.dir.join("home/.config/airlock");
    std::fs::create_dir_all(&conf_dir).expect("mkdir");
    std::fs::write(
        conf_dir.join("config.toml"),
        format!(
            "[[mounts]]\nsource = \"{}\"\ntarget = \"/cfg\"\n",
            cfg.display()
        ),
    )
    .expect("config");
    let before = [tree_state(&data), tree_state(&single), tree_state(&cfg)];
    let script = "cat /data/f.txt /data/sub/g.txt /etc/single.conf /cfg/c.txt; \
        stat -c %u /data/sub/g.txt; \
        for t in /data/f.txt /data/new /data/sub/g.txt /etc/single.conf /cfg/c.txt; do \
          if echo x >> $t 2>/dev/null; then echo wrote $t; fi; done; \
        rm -f /data/f.txt 2>/dev/null && echo removed; \
        mkdir /data/d 2>/dev/null && echo made; \
        grep -E ' /(data|cfg|etc/single.conf) ' /proc/mounts | awk '{print $2, substr($4,1,2)}' | sort";
    let ro = format!("{}:/data", data.display());
    let ro_file = format!("{}:/etc/single.conf", single.display());
    let out = vm_run(
        &a,
        &[
            "--workspace",
            "none",
            "--net",
            "off",
            "--ro",
            &ro,
            "--ro",
            &ro_file,
            "--",
            "sh",
            "-c",
            script,
        ],
        &[],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(
        out.stdout,
        "from the host\nnested\none file\nconfigured\n1000\n/cfg ro\n/data ro\n/etc/single.conf ro\n",
        "{}",
        out.describe()
    );
    assert_eq!(
        [tree_state(&data), tree_state(&single), tree_state(&cfg)],
        before,
        "the host paths changed"
    );

    // --rw (and a writable [[mounts]] entry): refused before anything starts.
    let rw = format!("{}:/data", data.display());
    let out = vm_run(
        &a,
        &[
            "--workspace",
            "none",
            "--net",
            "off",
            "--rw",
            &rw,
            "--",
            "true",
        ],
        &[],
    );
    assert_eq!(out.code(), 123, "{}", out.describe());
    assert!(
        out.stderr.contains("no writable share of the host")
            && out.stderr.contains("hint: use --ro")
            && out.stderr.contains("clone workspace"),
        "{}",
        out.describe()
    );
    std::fs::write(
        conf_dir.join("config.toml"),
        format!(
            "[[mounts]]\nsource = \"{}\"\ntarget = \"/cfg\"\nreadonly = false\n",
            cfg.display()
        ),
    )
    .expect("config");
    let out = vm_run(
        &a,
        &["--workspace", "none", "--net", "off", "--", "true"],
        &[],
    );
    assert_eq!(out.code(), 123, "{}", out.describe());
    assert_eq!(tree_state(&cfg), before[2]);
}

/// A scripted harness (as tests/agent.rs has it): edits and commits, or recalls its session.
const SCRIPTED_AGENT: &str = r#"#!/bin/sh
set -u
word=${AIRLOCK_PROMPT%% *}
echo "scripted agent: turn $AIRLOCK_TURN_ID continue=$AIRLOCK_CONTINUE word=$word kernel=$(uname -r)"
case "$word" in
  edit)
    report working "editing notes.txt"
    echo "edited in turn $AIRLOCK_TURN_ID" >> notes.txt
    git add notes.txt && git -c user.email=agent@example.com -c user.name=agent commit -qm "agent: notes" || exit 1
    echo "$AIRLOCK_PROMPT" | head -n 1 > "$HOME/.scripted-session"
    report done "committed $(git rev-parse --short HEAD)"
    ;;
  recall)
    [ "$AIRLOCK_CONTINUE" = 1 ] || { report blocked "not a continued session"; exit 0; }
    report done "continuing after: $(cat "$HOME/.scripted-session")"
    ;;
  login)
    sh -lc 'report done "login shell found $(command -v report)"' || report blocked "report is not on a login shell's PATH"
    ;;
  silent)
    echo "finishing without a report"
    ;;
  *)
    report info "unknown word $word"
    ;;
esac
"#;

/// Agent mode on a microVM: `up --prompt` starts the runner in the guest (through an exec
/// session on the channel), reports come back over it, the next prompt continues the
/// session, `reports` reads the journal, and the agent's commit comes back with `fetch`. One
/// boot.
#[test]
fn agent_mode_runs_in_the_guest() {
    if !e2e("agent_mode_runs_in_the_guest") {
        return;
    }
    let a = Airlock::root();
    let _guard = Cleanup(&a, &["vmagent"]);
    let p = git_project(&a);
    std::fs::write(p.join("agent.sh"), SCRIPTED_AGENT).expect("agent");
    common::set_mode(&p.join("agent.sh"), 0o755);
    std::fs::write(
        p.join("airlock.toml"),
        "[agent]\nharness = { command = [\"/workspace/agent.sh\"] }\ngrace = \"3s\"\n",
    )
    .expect("airlock.toml");
    host_git(&a, &["add", "."]);
    host_git(&a, &["commit", "-qm", "agent"]);
    let out = vm_cli(
        &a,
        &[
            "up",
            "vmagent",
            "--backend",
            "microvm",
            "--net",
            "off",
            "--prompt",
            "edit the notes",
        ],
    );
    assert_eq!(out.code(), 0, "up --prompt: {}", out.describe());
    let working = out.stdout.find("turn 1 working: editing notes.txt");
    let done = out.stdout.find("turn 1 done: committed");
    assert!(
        working.is_some() && done.is_some() && working < done,
        "{}",
        out.describe()
    );
    let out = vm_cli(&a, &["prompt", "vmagent", "recall what you did"]);
    assert_eq!(out.code(), 0, "recall: {}", out.describe());
    assert!(
        out.stdout
            .contains("turn 2 done: continuing after: edit the notes"),
        "{}",
        out.describe()
    );
    let out = vm_cli(&a, &["prompt", "vmagent", "login shell check"]);
    assert!(
        out.stdout
            .contains("turn 3 done: login shell found /run/airlock/bin/report"),
        "{}",
        out.describe()
    );
    let out = vm_cli(&a, &["prompt", "vmagent", "silent please"]);
    assert_eq!(out.code(), 4, "silent: {}", out.describe());
    let out = vm_cli(&a, &["reports", "vmagent"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(
        out.stdout.contains("turn 1 done: committed")
            && !out.stdout.contains("turn 3 ended-unreported")
            && out.stdout.contains("turn 4 ended-unreported"),
        "{}",
        out.describe()
    );
    // The harness ran on the guest's kernel.
    let agent_log = std::fs::read_to_string(a.state_dir().join("sandboxes/vmagent/agent.log"))
        .expect("agent.log");
    assert!(
        agent_log.contains("scripted agent: turn 2 continue=1")
            && !agent_log.contains(&format!("kernel={}", host_release())),
        "{agent_log}"
    );
    let out = vm_cli(&a, &["fetch", "vmagent"]);
    assert_eq!(out.code(), 0, "fetch: {}", out.describe());
    assert_eq!(
        host_git(&a, &["log", "-1", "--format=%s", "airlock/vmagent"]),
        "agent: notes\n"
    );
    let out = vm_cli(&a, &["stop", "vmagent"]);
    assert_eq!(out.code(), 0, "stop: {}", out.describe());
}

/// Secrets in the guest: a plain one as $NAME and /run/secrets/NAME (0400, the sandbox
/// user's, on a tmpfs); an injected one reaches the guest as its placeholder only, and the
/// proxy (QEMU's host side, 10.0.2.2) puts the real value in on its way to the TLS test
/// server, which the guest's curl trusts through the bundle the run message carried. The
/// values appear nowhere on QEMU's command line. One boot.
#[test]
fn secrets_reach_the_guest_over_the_channel_and_injection_works_from_it() {
    if !e2e("secrets_reach_the_guest_over_the_channel_and_injection_works_from_it") {
        return;
    }
    const REAL: &str = "sk-real-value-for-the-vm-0123456789";
    const PLAIN: &str = "plain-secret-value-42";
    let inet = Internet::start(&["api.test"], &[]);
    let a = Airlock::root();
    let ca = inet.cert().display().to_string();
    let script = "echo \"key=$KEY\"; echo \"file=$(cat /run/secrets/KEY)\"; \
         echo \"plain=$PLAIN file=$(cat /run/secrets/PLAIN)\"; \
         stat -c '%a %u %n' /run/secrets/PLAIN; grep -c ' /run tmpfs' /proc/mounts; \
         echo \"bundle=$CURL_CA_BUNDLE\"; \
         curl -sS --max-time 60 -H \"x-api-key: $KEY\" https://api.test/v1/models; echo";
    let mut cmd = a.command(&[
        "run",
        "--backend",
        "microvm",
        "--workspace",
        "none",
        "--net",
        "filtered",
        "--allow",
        "api.test",
        "--secret",
        "KEY=env:HOST_KEY;hosts=api.test;header=x-api-key",
        "--secret",
        "PLAIN=env:HOST_PLAIN",
        "--",
        "sh",
        "-c",
        script,
    ]);
    cmd.env("AIRLOCK_CACHE_DIR", cache_dir())
        .env("AIRLOCK_DNS_UPSTREAM", &inet.dns)
        .env("AIRLOCK_UPSTREAM_CA", &ca)
        .env("HOST_KEY", REAL)
        .env("HOST_PLAIN", PLAIN);
    // While it runs, QEMU's command line is looked at from the host.
    let watcher_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = {
        let stop = watcher_stop.clone();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                    let exe = std::fs::read_link(e.path().join("exe")).unwrap_or_default();
                    if exe.to_string_lossy().contains("qemu-system") {
                        let c = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
                        lines.push((c, env));
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            lines
        })
    };
    let out = common::run_with_deadline(cmd, None, VM_DEADLINE);
    watcher_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let qemus = seen.join().expect("watcher");
    assert_eq!(out.code(), 0, "{}", out.describe());
    let lines: Vec<&str> = out.stdout.lines().collect();
    let ph = lines[0].strip_prefix("key=").expect("key line");
    assert!(ph.starts_with("airlock-placeholder-"), "{}", out.describe());
    assert_eq!(lines[1], format!("file={ph}"));
    assert_eq!(lines[2], format!("plain={PLAIN} file={PLAIN}"));
    assert_eq!(lines[3], "400 1000 /run/secrets/PLAIN");
    assert_eq!(lines[4], "1", "/run is a tmpfs: {}", out.describe());
    assert_eq!(lines[5], "bundle=/run/airlock-tls/ca-bundle.pem");
    assert_eq!(
        lines[6],
        "hello from api.test /v1/models",
        "{}",
        out.describe()
    );
    assert!(!out.stdout.contains(REAL) && !out.stderr.contains(REAL));
    let got: Vec<serde_json::Value> = inet
        .model_requests()
        .into_iter()
        .filter(|r| r["path"] == "/v1/models")
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["headers"]["x-api-key"], REAL);
    // QEMU (and its environment) never held either value.
    assert!(!qemus.is_empty(), "QEMU was never seen running");
    for (cmdline, env) in &qemus {
        for v in [REAL, PLAIN] {
            let hit = |b: &[u8]| b.windows(v.len()).any(|w| w == v.as_bytes());
            assert!(
                !hit(cmdline) && !hit(env),
                "{v} in QEMU's cmdline/environment"
            );
        }
    }
}

/// Probe checks whose subject is the guest kernel's own policy, not a way out of the VM: in a
/// microVM the boundary is the hardware virtualization (or TCG) plus QEMU's confinement
/// (namespaces, seccomp, no capabilities, no_new_privs: `qemu_is_confined_and_dies_with_airlock`),
/// and what the guest's processes may do with the guest's kernel is the guest's business.
const NOT_A_VM_BOUNDARY: &[(&str, &str)] = &[
    (
        "seccomp-filter",
        "filters the host kernel's syscalls; QEMU has one, the guest's syscalls reach the guest kernel",
    ),
    ("keyctl", "the guest kernel's keyrings"),
    ("io-uring", "the guest kernel's io_uring"),
    ("userfaultfd", "the guest kernel's userfaultfd"),
    ("personality", "a guest process's personality"),
    ("socket-netlink", "netlink of the guest kernel"),
];

/// The escape probe in the guest (`--net off`, as for containers): every check that is about
/// leaving the sandbox — host files, host processes, host sockets and listeners, host
/// devices, the network floor, privileges — is blocked; the rest is listed above with why it
/// does not apply to a VM. The guest's kernel is not the host's. One boot.
#[test]
fn the_escape_probe_is_blocked_in_the_guest() {
    if !e2e("the_escape_probe_is_blocked_in_the_guest") {
        return;
    }
    let a = Airlock::root();
    let bait = common::probe::Bait::new(std::path::Path::new("/root"), None);
    let probe = a.cwd.join("probe");
    std::fs::copy(common::probe_exe(), &probe).expect("copy the probe into the workspace");
    // Read-only to the sandbox user, as the containers' bind of it is.
    common::set_mode(&probe, 0o555);
    let args = bait.probe_args(&a.exe).join(" ");
    let out = vm_run(
        &a,
        &[
            "--workspace",
            "overlay",
            "--net",
            "off",
            "--timeout",
            "200s",
            "--",
            "sh",
            "-c",
            &format!("uname -r; /workspace/probe all {args}"),
        ],
        &[],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    let first = out.stdout.lines().next().unwrap_or_default();
    assert_ne!(first, host_release(), "{}", out.describe());
    let report = common::probe::Report::parse(&out.stdout);
    assert!(report.summary.is_some(), "no summary: {}", out.describe());
    let names = common::probe::all_check_names();
    let mut open = Vec::new();
    for n in &names {
        let Some(c) = report.get(n) else {
            panic!("{n} did not report:\n{}", out.describe());
        };
        if !c.blocked && !NOT_A_VM_BOUNDARY.iter().any(|(x, _)| x == n) {
            open.push(format!("  {n}: {}", c.detail));
        }
    }
    assert!(
        open.is_empty(),
        "{} check(s) NOT blocked in the guest:\n{}",
        open.len(),
        open.join("\n")
    );
    bait.assert_untouched("microvm", &out.stdout);
    // What the guest kernel's own policy gave the probe, for the record (not asserted).
    for (n, why) in NOT_A_VM_BOUNDARY {
        if let Some(c) = report.get(n) {
            eprintln!("{n}: blocked={} ({why})", c.blocked);
        }
    }
}

/// tests/network.rs's bypass attempts from a guest (filtered): literal IPs in every spelling,
/// Host-header tricks and fronting, QUIC, a forced address, DNS rebinding to loopback /
/// metadata / private addresses, the metadata name, DoT; plus the VM's own path: QEMU's host
/// address (10.0.2.2) leads to the sandbox's namespace, never to the host's loopback. One boot.
#[test]
fn network_bypass_attempts_from_the_guest_fail() {
    if !e2e("network_bypass_attempts_from_the_guest_fail") {
        return;
    }
    let inet = Internet::start(
        &["allowed.test"],
        &[
            ("rebind.test", "127.0.0.1"),
            ("meta.test", "169.254.169.254"),
            ("private.test", "10.0.0.1"),
        ],
    );
    let host_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("host listener");
    host_listener.set_nonblocking(true).expect("nonblocking");
    let host_port = host_listener.local_addr().expect("addr").port();
    let a = Airlock::root();
    let log = a.dir.join("net.jsonl");
    let log_s = log.display().to_string();
    let c = "curl -sS --max-time 20 --noproxy '*' -o - -w ' %{http_code}'";
    let py = format!(
        r#"
import socket
for host in [b'allowed.test\x00.evil.test', b'evil.test.', b'allowed.test..']:
    s = socket.create_connection(('allowed.test', 80), timeout=20)
    s.sendall(b'GET / HTTP/1.1\r\nHost: ' + host + b'\r\n\r\n')
    print('host-trick', s.recv(200).split(b'\r\n')[0].decode())
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(3)
u.connect(('allowed.test', 443))
u.send(b'quic')
try:
    u.recv(10); print('quic answered')
except Exception:
    print('quic blocked')
for (ip, port) in [('{ip}', 853), ('10.0.2.2', {host_port}), ('8.8.8.8', 53), ('1.1.1.1', 443)]:
    s = socket.socket(); s.settimeout(5)
    try:
        s.connect((ip, port)); s.sendall(b'x'); print('tcp', ip, port, 'connected', s.recv(10))
    except Exception as e:
        print('tcp', ip, port, 'blocked')
"#,
        ip = inet.ip
    );
    let script = format!(
        "for u in http://{ip}/ http://169.254.169.254/latest/meta-data/ 'http://[::ffff:169.254.169.254]/' \
           http://2852039166/ http://rebind.test/ http://meta.test/ http://private.test/; do \
           echo \"url $u: $({c} \"$u\" 2>/dev/null | tr '\\n' ' ')\"; done; \
         echo \"fronting: $({c} -H 'Host: evil.test' http://allowed.test/ 2>/dev/null | tr '\\n' ' ')\"; \
         echo \"forced: $({c} --resolve allowed.test:80:203.0.113.9 http://allowed.test/ 2>/dev/null | tr '\\n' ' ')\"; \
         getent hosts metadata.google.internal >/dev/null && echo metadata-resolved || echo metadata-refused; \
         python3 -c \"$PY\"",
        ip = inet.ip
    );
    let out = vm_run(
        &a,
        &[
            "--workspace",
            "none",
            "--net",
            "filtered",
            "--allow",
            "allowed.test",
            "--allow",
            "rebind.test",
            "--allow",
            "meta.test",
            "--allow",
            "private.test",
            "--allow",
            "metadata.google.internal",
            "--net-log",
            &log_s,
            "--env",
            &format!("PY={py}"),
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[("AIRLOCK_DNS_UPSTREAM", &inet.dns)],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    let so = &out.stdout;
    for l in so.lines().filter(|l| l.starts_with("url ")) {
        assert!(
            !l.contains("hello"),
            "reached a server: {l}\n{}",
            out.describe()
        );
    }
    assert_eq!(
        so.lines().filter(|l| l.starts_with("url ")).count(),
        7,
        "{}",
        out.describe()
    );
    assert!(
        so.lines()
            .any(|l| l.starts_with("fronting: airlock: blocked evil.test:80") && l.ends_with("403")),
        "{}",
        out.describe()
    );
    assert!(
        so.contains("forced: hello from allowed.test"),
        "{}",
        out.describe()
    );
    assert!(so.contains("metadata-refused"), "{}", out.describe());
    let tricks = so
        .lines()
        .filter(|l| l.starts_with("host-trick") && (l.contains(" 403 ") || l.contains(" 400 ")))
        .count();
    assert_eq!(tricks, 3, "{}", out.describe());
    assert!(so.contains("quic blocked"), "{}", out.describe());
    for (ip, port) in [
        (inet.ip.as_str(), "853".to_string()),
        ("10.0.2.2", host_port.to_string()),
        ("8.8.8.8", "53".to_string()),
        ("1.1.1.1", "443".to_string()),
    ] {
        let l = format!("tcp {ip} {port} ");
        let line = so.lines().find(|x| x.starts_with(&l)).unwrap_or_default();
        assert!(
            !line.contains("b'") || line.contains("b''"),
            "{l}: {line}\n{}",
            out.describe()
        );
    }
    // The host's own loopback listener heard nothing.
    assert!(
        host_listener.accept().is_err(),
        "the guest reached the host's loopback"
    );
    let journal = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        journal.contains("\"deny\"") && journal.contains("evil.test"),
        "the denials are journaled: {journal}"
    );
}

/// An OCI layout of a small image built here: busybox-static, an os-release only it has, a
/// user of its own (`www`, 33) that it runs as, its own variable and working directory.
fn vm_image_layout(dir: &std::path::Path) {
    use airlock_image::layout::{config_json, tar_of_files, write_oci, LayerTar};
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static (run .ci/install-microvm)");
    let mut files: Vec<(String, Vec<u8>, u32)> = vec![
        ("bin/busybox".into(), busybox, 0o755),
        (
            "etc/os-release".into(),
            b"ID=airlock-vm-image\nNAME=\"only in the image\"\n".to_vec(),
            0o644,
        ),
        (
            "etc/passwd".into(),
            b"root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/sh\n".to_vec(),
            0o644,
        ),
        (
            "gone".into(),
            b"hidden by the upper layer\n".to_vec(),
            0o644,
        ),
        ("srv/.keep".into(), Vec::new(), 0o644),
    ];
    for a in [
        "sh", "cat", "echo", "id", "test", "pwd", "ls", "uname", "true",
    ] {
        files.push((format!("bin/{a}"), b"->busybox".to_vec(), 0o777));
    }
    let refs: Vec<(&str, &[u8], u32)> = files
        .iter()
        .map(|(p, d, m)| (p.as_str(), d.as_slice(), *m))
        .collect();
    let layers = vec![
        LayerTar {
            tar: tar_of_files(&refs).expect("tar"),
            gzip: true,
        },
        LayerTar {
            tar: tar_of_files(&[(".wh.gone", b"", 0o644)]).expect("tar"),
            gzip: true,
        },
    ];
    let cfg = config_json(
        &layers,
        &["PATH=/bin", "IMAGE_VAR=from-the-image"],
        Some("/srv"),
        Some("www"),
    );
    write_oci(dir, "example.com/vm/busybox:1", &layers, &cfg).expect("write the layout");
}

/// `--image` on a microVM: the guest's root is the image (its files, not the host's /usr), as
/// its user, with its environment and working directory; the image's disk is built once and
/// the next run boots the same file.
#[test]
fn a_microvm_boots_an_images_root_built_once() {
    if !e2e("a_microvm_boots_an_images_root_built_once") {
        return;
    }
    let a = Airlock::root();
    let src = common::TempDir::new("vm-image");
    vm_image_layout(&src.join("oci"));
    let out = a.run(&["image", "import", &src.join("oci").to_string_lossy()]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let script = "cat /etc/os-release; test -e /usr && echo host-usr || echo no-usr; \
                  test -e /gone && echo gone-there || echo gone-hidden; \
                  id -u; pwd; echo \"$IMAGE_VAR\"; uname -r; ls -ln /bin/busybox";
    let image = "example.com/vm/busybox:1";
    let out = vm_run(
        &a,
        &[
            "--image",
            image,
            "--workspace",
            "none",
            "--net",
            "off",
            "--",
            "sh",
            "-c",
            script,
        ],
        &[],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(
        out.stderr.contains("building the microVM disk of image"),
        "{}",
        out.describe()
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[..8],
        [
            "ID=airlock-vm-image",
            "NAME=\"only in the image\"",
            "no-usr",
            "gone-hidden",
            "33",
            "/srv",
            "from-the-image",
            lines[7],
        ],
        "{}",
        out.describe()
    );
    assert_ne!(lines[7], host_release(), "the guest's kernel");
    // The image's owners (root's here), not the store's shifted ones.
    let owners = |line: Option<&&str>| -> Vec<String> {
        line.map(|l| {
            l.split_whitespace()
                .skip(2)
                .take(2)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
    };
    assert_eq!(owners(lines.get(8)), ["0", "0"], "{}", out.describe());
    let disks: Vec<std::path::PathBuf> = std::fs::read_dir(a.state_dir().join("images/vm"))
        .expect("images/vm")
        .flatten()
        .map(|e| e.path().join("root.erofs"))
        .collect();
    assert_eq!(disks.len(), 1, "{disks:?}");
    let before = std::fs::metadata(&disks[0]).expect("the disk");
    // The second run boots the cached disk: not rebuilt, not even rewritten. Its root is
    // writable (a layer over the read-only image, inside the guest).
    let out = vm_run(
        &a,
        &[
            "--image",
            image,
            "--user",
            "root",
            "--workspace",
            "none",
            "--net",
            "off",
            "--",
            "sh",
            "-c",
            "echo w > /bin/added && cat /bin/added; id -u; cat /etc/os-release",
        ],
        &[],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(
        out.stdout.starts_with("w\n0\nID=airlock-vm-image\n"),
        "{}",
        out.describe()
    );
    assert!(!out.stderr.contains("building"), "{}", out.describe());
    let after = std::fs::metadata(&disks[0]).expect("the disk");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (before.ino(), before.mtime(), before.mtime_nsec()),
        (after.ino(), after.mtime(), after.mtime_nsec())
    );

    // Rootless: the store and its layers are the user's own; the disk makes them root's.
    let user = common::test_user();
    let bins = Bins::owned_by(&user);
    let r = Airlock::rootless(&bins);
    src.chown_to(&user);
    let out = r.run(&["image", "import", &src.join("oci").to_string_lossy()]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    // A cache of its own, as on a first run: an image run builds the kernel's artifacts but
    // not the host root image (minutes on a fresh machine, and not booted).
    let fresh = r.dir.join("fresh-cache");
    std::fs::create_dir_all(&fresh).expect("cache dir");
    std::os::unix::fs::chown(&fresh, Some(user.uid), Some(user.gid)).expect("chown");
    let out = vm_run(
        &r,
        &[
            "--image",
            image,
            "--workspace",
            "none",
            "--net",
            "off",
            "--",
            "sh",
            "-c",
            "cat /etc/os-release; test -e /usr && echo host-usr || echo no-usr; id -u; ls -ln /bin/busybox",
        ],
        &[("AIRLOCK_CACHE_DIR", &fresh.to_string_lossy())],
    );
    assert_eq!(out.code(), 0, "rootless: {}", out.describe());
    let host_images: Vec<_> = std::fs::read_dir(&fresh)
        .expect("the cache")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.ends_with(".erofs")
                && (n.starts_with(airlock_sandbox::microvm::artifacts::HOST_ROOTFS_PREFIX)
                    || n.starts_with("root-"))
        })
        .collect();
    assert!(
        host_images.is_empty() && !out.stderr.contains("of this host's /usr"),
        "rootless: an image run built the host root image: {host_images:?} {}",
        out.describe()
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "ID=airlock-vm-image",
            "NAME=\"only in the image\"",
            "no-usr",
            "33"
        ],
        "rootless: {}",
        out.describe()
    );
    assert_eq!(
        owners(lines.get(4)),
        ["0", "0"],
        "rootless: {}",
        out.describe()
    );
    assert!(
        out.stderr.contains("building the microVM disk of image"),
        "rootless: its own store, its own disk: {}",
        out.describe()
    );
}

/// `--net open` on a microVM, as for containers: the guest reaches out (QEMU's user-mode
/// network inside an open-mode namespace with pasta), but the metadata floor holds and the
/// host's loopback services stay out of reach (neither as 127.0.0.1 nor as QEMU's host side).
#[test]
fn an_open_network_guest_reaches_out_but_not_metadata_or_host_loopback() {
    if !e2e("an_open_network_guest_reaches_out_but_not_metadata_or_host_loopback") {
        return;
    }
    let inet = Internet::start(&["open.test"], &[]);
    let host_lo = std::net::TcpListener::bind("127.0.0.1:0").expect("host loopback listener");
    host_lo.set_nonblocking(true).expect("nonblocking");
    let port = host_lo.local_addr().expect("addr").port();
    let script = format!(
        "curl -sS --max-time 30 http://{ip}/open; \
         curl -sS --max-time 5 -o /dev/null -w 'meta %{{http_code}}\\n' http://169.254.169.254/ 2>/dev/null; \
         curl -sS --max-time 5 -o /dev/null -w 'alibaba %{{http_code}}\\n' http://100.100.100.200/ 2>/dev/null; \
         curl -sS --max-time 5 -o /dev/null -w 'hostlo %{{http_code}}\\n' http://127.0.0.1:{port}/ 2>/dev/null; \
         curl -sS --max-time 5 -o /dev/null -w 'slirphost %{{http_code}}\\n' http://10.0.2.2:{port}/ 2>/dev/null; \
         env | grep -ci '^https\\?_proxy=' ; true",
        ip = inet.ip
    );
    let a = Airlock::root();
    let out = vm_run(
        &a,
        &[
            "--workspace",
            "none",
            "--net",
            "open",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(
        out.stdout
            .starts_with(&format!("hello from {} /open\n", inet.ip)),
        "{}",
        out.describe()
    );
    for blocked in ["meta 000", "alibaba 000", "hostlo 000", "slirphost 000"] {
        assert!(
            out.stdout.contains(blocked),
            "expected `{blocked}`: {}",
            out.describe()
        );
    }
    assert!(
        out.stdout.ends_with("\n0\n"),
        "no proxy variables in open mode: {}",
        out.describe()
    );
    assert!(
        host_lo.accept().is_err(),
        "the host's loopback listener was reached"
    );
}

/// Plain HTTP to x.test through the explicit proxy (curl, with the guest's proxy variables)
/// and on the transparent path with the sandbox's DNS (Python, no proxy): both results on one
/// line, e.g. `curl=hello from x.test /a py=hello from x.test /a`.
fn both_http_paths(path: &str) -> String {
    format!(
        "c=$(curl -fsS --max-time 20 http://x.test{path} 2>/dev/null || echo DENIED); \
         p=$(python3 -c \"import urllib.request as u; \
print(u.build_opener(u.ProxyHandler({{}})).open('http://x.test{path}',timeout=20).read().decode().strip())\" 2>/dev/null || echo DENIED); \
         echo \"curl=$c py=$p\""
    )
}

/// A keep-alive HTTPS connection on the transparent path (TLS relayed by name: plain HTTP is
/// one request per connection), one request, then wait (at most 60 s) for the connection to be
/// closed from outside. The guest has no copy of the test CA (a microVM takes no --ro mount
/// yet): the server's certificate is not what this checks.
const LONG_LIVED_TLS: &str = "import http.client, ssl, select
c = http.client.HTTPSConnection('x.test', 443, timeout=90, context=ssl._create_unverified_context())
c.request('GET', '/long')
r = c.getresponse()
print(r.status, r.read().decode().strip(), flush=True)
ready, _, _ = select.select([c.sock], [], [], 60)
try:
    data = c.sock.recv(1) if ready else b'x'
except Exception:
    data = b''
print('closed' if not data else 'still open', flush=True)
";

/// Removes the named sandbox and stops the engine whatever the test's outcome.
struct Named<'a>(&'a Airlock, &'a str);

impl Drop for Named<'_> {
    fn drop(&mut self) {
        let _ = vm_cli(self.0, &["rm", "-f", self.1]);
        common::stop_engines_of(self.0);
    }
}

/// Live policy on a running named microVM, as for containers (tests/live_policy.rs): the
/// guest's connection to a host is denied (journaled, with `airlock allow` as the fix), `allow`
/// lets the same connection through without a restart, `deny` refuses it again and closes an
/// open connection to it — on both the explicit proxy and the transparent path.
#[test]
fn allow_and_deny_reach_a_running_microvm() {
    if !e2e("allow_and_deny_reach_a_running_microvm") {
        return;
    }
    let inet = Internet::start(&["x.test", "keep.test"], &[]);
    let a = Airlock::root();
    let name = "live-vm";
    let _guard = Named(&a, name);
    let run = |args: &[&str]| {
        let mut cmd = a.command(args);
        cmd.env("AIRLOCK_CACHE_DIR", cache_dir());
        cmd.env("AIRLOCK_DNS_UPSTREAM", &inet.dns);
        common::run_with_deadline(cmd, None, VM_DEADLINE)
    };
    let ok = |args: &[&str]| {
        let out = run(args);
        assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
        out
    };
    let exec = |script: &str| {
        ok(&["exec", name, "--", "sh", "-c", script])
            .stdout
            .trim()
            .to_string()
    };
    let journal = || -> Vec<serde_json::Value> {
        ok(&["audit", name, "--json"])
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    };
    ok(&[
        "create",
        name,
        "--backend",
        "microvm",
        "--workspace",
        "none",
        "--allow",
        "keep.test",
    ]);
    ok(&["start", name]);
    let denied = "curl=DENIED py=DENIED";
    assert_eq!(exec(&both_http_paths("/a")), denied, "before");
    let fix = format!("run `airlock allow {name} x.test");
    let events = journal();
    assert!(
        events.iter().any(|e| e["category"] == "egress"
            && e["decision"] == "deny"
            && e["host"] == "x.test"
            && e["fix"].as_str().is_some_and(|f| f.starts_with(&fix))),
        "{events:#?}"
    );

    let out = ok(&["allow", name, "x.test"]);
    assert_eq!(
        out.stdout,
        format!("allowed x.test in {name} (in force now, and at its later starts)\n")
    );
    assert_eq!(
        exec(&both_http_paths("/b")),
        "curl=hello from x.test /b py=hello from x.test /b",
        "after allow, same guest, no restart"
    );

    // A long-lived connection, open while x.test is denied: closed from outside.
    let mut child = a
        .command(&["exec", name, "--", "python3", "-c", LONG_LIVED_TLS])
        .env("AIRLOCK_CACHE_DIR", cache_dir())
        .env("AIRLOCK_DNS_UPSTREAM", &inet.dns)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn exec");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(first, "200 hello from x.test /long");
    let out = ok(&["deny", name, "x.test", "--json"]);
    let change: serde_json::Value = serde_json::from_str(&out.stdout).expect("--json");
    assert_eq!(
        (
            &change["op"],
            &change["domain"],
            &change["live"],
            &change["closed"]
        ),
        (
            &serde_json::json!("deny"),
            &serde_json::json!("x.test"),
            &serde_json::json!(true),
            &serde_json::json!(1)
        ),
        "{change}"
    );
    assert_eq!(change["domains"], serde_json::json!(["keep.test"]));
    let second = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(second, "closed", "the open connection");
    let _ = child.wait();
    assert_eq!(exec(&both_http_paths("/c")), denied, "after deny");
    let policy: Vec<serde_json::Value> = journal()
        .into_iter()
        .filter(|e| e["category"] == "policy")
        .collect();
    assert_eq!(policy.len(), 2, "{policy:#?}");
    assert_eq!(
        (&policy[0]["op"], &policy[1]["op"]),
        (&serde_json::json!("allow"), &serde_json::json!("deny"))
    );
    assert_eq!(policy[1]["closed"], 1);
}

/// airlock's minimal guest kernel (`scripts/guest-kernel.sh`; `.ci/install-guest-kernel` builds
/// it into the test cache): AIRLOCK_TEST_GUEST_KERNEL, else where the script leaves it.
fn minimal_kernel() -> String {
    let p = std::env::var("AIRLOCK_TEST_GUEST_KERNEL")
        .unwrap_or_else(|_| format!("{}/microvm/guest-kernel/vmlinux", cache_dir()));
    let p = std::path::Path::new(&p);
    assert!(
        p.exists(),
        "{}: no minimal guest kernel (run .ci/install-guest-kernel)",
        p.display()
    );
    p.canonicalize().expect("kernel path").display().to_string()
}

/// The minimal guest kernel boots with its drivers built in: the initramfs holds no modules
/// and the init loads none (its boot steps show none), the root image, the workspace and the
/// NIC (virtio-net built in) are there; `doctor` says so of it, and of the distribution
/// kernel that its init loads modules and where the minimal one is.
#[test]
fn the_minimal_guest_kernel_boots_with_its_drivers_built_in() {
    if !e2e("the_minimal_guest_kernel_boots_with_its_drivers_built_in") {
        return;
    }
    let kernel = minimal_kernel();
    let a = Airlock::root();
    std::fs::write(a.cwd.join("a.txt"), "from the host\n").expect("write");
    let out = vm_run(
        &a,
        &[
            "--kernel",
            &kernel,
            "--",
            "sh",
            "-c",
            "uname -r; cat /workspace/a.txt; ls /sys/class/net; \
             test -e /proc/modules && echo modules || echo no-modules; exit 3",
        ],
        // A boot (its steps are checked below), not a copy of a boot snapshot.
        &[("AIRLOCK_TIMING", "1"), ("AIRLOCK_VM_SNAPSHOT", "0")],
    );
    assert_eq!(out.code(), 3, "{}", out.describe());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].ends_with("-airlock"), "{}", out.describe());
    assert_eq!(lines[1], "from the host", "{}", out.describe());
    assert!(lines.contains(&"eth0"), "{}", out.describe());
    assert_eq!(lines.last(), Some(&"no-modules"), "{}", out.describe());
    let steps: Vec<&str> = out
        .stderr
        .lines()
        .filter_map(|l| l.split_once("] guest +")?.1.split_once(": "))
        .map(|(_, s)| s)
        .collect();
    assert!(
        steps.iter().any(|s| s.starts_with("channel open")),
        "{steps:?}"
    );
    assert!(!steps.iter().any(|s| s.starts_with("module ")), "{steps:?}");

    let doctor = |env: &[(&str, &str)]| {
        let mut cmd = a.command(&["doctor", "--json"]);
        cmd.env("AIRLOCK_CACHE_DIR", cache_dir())
            .envs(env.iter().copied());
        let out = common::run_with_deadline(cmd, None, VM_DEADLINE);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("doctor json");
        v["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["id"] == "microvm")
            .map(|r| r["detail"].as_str().unwrap_or_default().to_string())
            .expect("a microvm row")
    };
    let d = doctor(&[("AIRLOCK_KERNEL", &kernel)]);
    assert!(
        d.contains("its guest drivers built in, no modules to load"),
        "{d}"
    );
    let d = doctor(&[]);
    assert!(d.contains("the guest's init loads "), "{d}");
    assert!(d.contains("virtio_console"), "{d}");
    assert!(
        d.contains(
            "airlock's minimal guest kernel (drivers built in, faster boots) is built: --kernel"
        ),
        "{d}"
    );
}

/// A named microVM's `--ro` source replaced by a symbolic link after `create` (by another
/// sandbox that can write where it lies, say): its start snapshots nothing through the link —
/// the start is refused (before any boot), naming the source, and the link's target is never
/// read into an image.
#[test]
fn a_named_microvm_ro_source_swapped_for_a_link_is_refused() {
    if !e2e("a_named_microvm_ro_source_swapped_for_a_link_is_refused") {
        return;
    }
    let a = Airlock::root();
    let _guard = Cleanup(&a, &["vmswap"]);
    let data = a.cwd.join("data");
    let secret = a.dir.join("secret");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::create_dir_all(&secret).expect("mkdir");
    std::fs::write(data.join("f"), "public\n").expect("write");
    std::fs::write(secret.join("key"), "TOPSECRET\n").expect("write");
    let ro = format!("{}:/data", data.display());
    let out = vm_cli(
        &a,
        &[
            "create",
            "vmswap",
            "--backend",
            "microvm",
            "--workspace",
            "none",
            "--net",
            "off",
            "--ro",
            &ro,
        ],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    std::fs::remove_dir_all(&data).expect("rm");
    std::os::unix::fs::symlink(&secret, &data).expect("symlink");
    let out = vm_cli(&a, &["start", "vmswap"]);
    // A policy refusal (121), as a run's and a container's named start's.
    assert_eq!(
        out.code(),
        121,
        "started through the planted link: {}",
        out.describe()
    );
    assert!(
        out.stderr.contains("symbolic link") && out.stderr.contains(&data.display().to_string()),
        "{}",
        out.describe()
    );
}

/// A named microVM's project directory (its overlay workspace's source) replaced by a symbolic
/// link to a secret directory after `create` (by a sandbox that can write its parent, say):
/// its start images nothing through the link — refused before any boot, naming the path, with
/// the containers' hint — and the secret never reaches a guest.
#[test]
fn a_named_microvm_project_dir_swapped_for_a_link_is_refused() {
    if !e2e("a_named_microvm_project_dir_swapped_for_a_link_is_refused") {
        return;
    }
    let a = Airlock::root();
    let _guard = Cleanup(&a, &["vmprojswap"]);
    let proj = a.cwd.join("swap").join("proj");
    let secret = a.dir.join("secret");
    std::fs::create_dir_all(&proj).expect("mkdir");
    std::fs::create_dir_all(&secret).expect("mkdir");
    std::fs::write(proj.join("f"), "public\n").expect("write");
    std::fs::write(secret.join("key"), "TOPSECRET\n").expect("write");
    let args = [
        "create",
        "vmprojswap",
        "--backend",
        "microvm",
        "--workspace",
        "overlay",
        "--net",
        "off",
    ];
    let mut create = a.command(&args);
    create
        .current_dir(&proj)
        .env("AIRLOCK_CACHE_DIR", cache_dir());
    let out = common::run_with_deadline(create, None, VM_DEADLINE);
    assert_eq!(out.code(), 0, "{}", out.describe());
    std::fs::remove_dir_all(&proj).expect("rm");
    std::os::unix::fs::symlink(&secret, &proj).expect("symlink");
    let started = vm_cli(&a, &["start", "vmprojswap"]);
    let leaked = started.code() == 0
        && vm_cli(&a, &["exec", "vmprojswap", "--", "cat", "/workspace/key"])
            .stdout
            .contains("TOPSECRET");
    assert!(!leaked, "the workspace image followed the planted link");
    // Refused as a container's swapped mount source is: 121, the same words and hint.
    assert_eq!(started.code(), 121, "{}", started.describe());
    assert!(
        started.stderr.contains("symbolic link")
            && started.stderr.contains(&proj.display().to_string())
            && started
                .stderr
                .contains("a mount source changed since it was checked"),
        "{}",
        started.describe()
    );
}

/// The phase line naming the boot snapshot a run started from (AIRLOCK_TIMING=1).
fn restored_from(out: &Outcome) -> Option<std::path::PathBuf> {
    out.stderr
        .lines()
        .find_map(|l| {
            l.split_once("restoring the boot snapshot ")?
                .1
                .split_whitespace()
                .next()
        })
        .map(std::path::PathBuf::from)
}

/// A one-shot run starts from its VM shape's boot snapshot (the first run of the shape saves
/// it), and every copy is a run of its own: its own project's files (another size, behind the
/// same device: the snapshot's page cache of the blank disk is gone), the host's clock (not
/// the snapshot's), and a random state of its own — two copies of one guest memory that were
/// not reseeded would read the same bytes from /dev/urandom and the same boot id. A snapshot
/// QEMU cannot load costs nothing but the time: the run boots, the snapshot is removed.
#[test]
fn runs_restored_from_one_boot_snapshot_are_each_their_own() {
    if !e2e("runs_restored_from_one_boot_snapshot_are_each_their_own") {
        return;
    }
    // A VM size no other test uses: this test's snapshot is its own to break.
    let script = "date +%s; cat /proc/sys/kernel/random/boot_id; \
                  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; cat /workspace/f";
    let args = ["--memory", "640m", "--net", "off", "--", "sh", "-c", script];
    let run = |content: &str| {
        let a = Airlock::root();
        std::fs::write(a.cwd.join("f"), content).expect("write");
        let out = vm_run(&a, &args, &[("AIRLOCK_TIMING", "1")]);
        assert_eq!(out.code(), 0, "{}", out.describe());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        (out, now)
    };
    // The first run of this shape saves its snapshot (unless an earlier test run did) and
    // starts from it.
    let (first, _) = run("the first project\n");
    let snap = restored_from(&first).unwrap_or_else(|| panic!("{}", first.describe()));
    assert!(snap.exists(), "{}", first.describe());
    assert!(
        first
            .stderr
            .contains("guest resumed from the boot snapshot"),
        "{}",
        first.describe()
    );
    // Long enough for a clock left at the snapshot's time to show.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let second_content = "the second project, a longer file\n".repeat(200);
    let (second, now) = run(&second_content);
    assert_eq!(restored_from(&second).as_deref(), Some(snap.as_path()));
    let (l1, l2): (Vec<&str>, Vec<&str>) = (
        first.stdout.lines().collect(),
        second.stdout.lines().collect(),
    );
    let guest_time: i64 = l2[0]
        .parse()
        .unwrap_or_else(|_| panic!("{}", second.describe()));
    assert!(
        (now - guest_time).abs() <= 2,
        "the restored guest's clock says {guest_time}, the host's {now}\n{}",
        second.describe()
    );
    assert_ne!(l1[1], l2[1], "two copies with one boot id");
    assert_ne!(l1[2], l2[2], "two copies read the same random bytes");
    assert_eq!(l1[3], "the first project");
    assert_eq!(
        second.stdout.lines().skip(3).count(),
        200,
        "{}",
        second.describe()
    );
    assert!(l2[3..]
        .iter()
        .all(|l| *l == "the second project, a longer file"));

    // A named sandbox of the same shape starts from the same snapshot (its start uses it: the
    // snapshot's time is touched) and holds a guest of its own.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::open(&snap)
        .and_then(|f| f.set_modified(old))
        .expect("age the snapshot");
    let a = Airlock::root();
    std::fs::write(a.cwd.join("f"), "the named sandbox's project\n").expect("write");
    let guard = Cleanup(&a, &["vmsnap"]);
    let mut create = a.command(&[
        "create",
        "--backend",
        "microvm",
        "vmsnap",
        "--memory",
        "640m",
        "--net",
        "off",
    ]);
    create.env("AIRLOCK_CACHE_DIR", cache_dir());
    let out = common::run_with_deadline(create, None, VM_DEADLINE);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let out = vm_cli(&a, &["start", "vmsnap"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let out = vm_cli(&a, &["exec", "vmsnap", "--", "sh", "-c", script]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let touched = std::fs::metadata(&snap)
        .and_then(|m| m.modified())
        .expect("mtime");
    assert!(
        touched > old,
        "the named sandbox's start did not use the snapshot"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let l3: Vec<&str> = out.stdout.lines().collect();
    let guest_time: i64 = l3[0]
        .parse()
        .unwrap_or_else(|_| panic!("{}", out.describe()));
    assert!((now - guest_time).abs() <= 2, "{}", out.describe());
    assert!(
        l3[1] != l1[1] && l3[1] != l2[1],
        "a named copy shares a boot id"
    );
    assert!(
        l3[2] != l1[2] && l3[2] != l2[2],
        "a named copy shares random bytes"
    );
    assert_eq!(l3[3], "the named sandbox's project");
    drop(guard);

    // A snapshot QEMU cannot load: the run boots and is right, the snapshot is gone.
    std::fs::write(&snap, b"not a QEMU migration stream").expect("corrupt");
    let (third, _) = run("the third project\n");
    assert!(
        third.stderr.contains("boot snapshot could not be restored"),
        "{}",
        third.describe()
    );
    assert_eq!(third.stdout.lines().nth(3), Some("the third project"));
    assert!(!snap.exists(), "the broken snapshot was kept");
}

/// ^C while the first run of a VM shape saves its boot snapshot ends the run as ^C ends a
/// command — 130, the command never runs — rather than booting it anyway; nothing is left (no
/// QEMU, no run directory) and the shape is not marked as one whose snapshot cannot be made:
/// the next run saves it.
#[test]
fn a_run_interrupted_while_its_snapshot_is_saved_ends_with_130_and_marks_nothing() {
    if !e2e("a_run_interrupted_while_its_snapshot_is_saved_ends_with_130_and_marks_nothing") {
        return;
    }
    let a = Airlock::root();
    // A VM size of its own (per test process: a snapshot of it may exist from an earlier one).
    let memory = format!("{}m", 520 + (std::process::id() % 97) * 2);
    let snapshots = std::path::Path::new(&cache_dir()).join("microvm/snapshots");
    let marks = || -> Vec<String> {
        std::fs::read_dir(&snapshots)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".failed"))
            .collect()
    };
    let before = marks();
    let vm_args = [
        "--memory",
        &memory,
        "--workspace",
        "none",
        "--net",
        "off",
        "--",
        "echo",
        "ran",
    ];
    let args = [&["run", "--backend", "microvm"][..], &vm_args].concat();
    let mut cmd = a.command(&args);
    cmd.env("AIRLOCK_CACHE_DIR", cache_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    let saving = loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            break false;
        }
        seen.push_str(&line);
        if line.contains("saving a boot snapshot") {
            break true;
        }
    };
    if !saving {
        // This size's snapshot was there already: nothing to interrupt.
        let _ = child.wait();
        eprintln!("note: a snapshot of {memory} existed; interruption not exercised");
        return;
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().expect("wait");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
        .expect("read");
    let _ = std::io::Read::read_to_string(&mut err, &mut seen);
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(
        !out.contains("ran"),
        "the command ran after ^C: {out}\n{seen}"
    );
    assert_eq!(marks(), before, "{seen}");
    let runs: Vec<String> = std::fs::read_dir(a.state_dir().join("runs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(runs.is_empty(), "run directories left: {runs:?}");
    // The next run of that size saves the snapshot and starts from it.
    let out = vm_run(&a, &vm_args, &[("AIRLOCK_TIMING", "1")]);
    assert_eq!(out.stdout, "ran\n", "{}", out.describe());
    let snap = restored_from(&out).unwrap_or_else(|| panic!("{}", out.describe()));
    // Gone again: its size is this test's alone.
    let _ = std::fs::remove_dir_all(snap.parent().expect("its directory"));
}
