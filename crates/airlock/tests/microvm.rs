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

fn vm_run(a: &Airlock, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    vm_run_stdin(a, args, env, None)
}

fn vm_run_stdin(a: &Airlock, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Outcome {
    let mut cmd = a.command(&[&["run", "--backend", "microvm"], args].concat());
    cmd.env("AIRLOCK_CACHE_DIR", cache_dir());
    cmd.envs(env.iter().copied());
    common::run_with_deadline(cmd, stdin.map(<[u8]>::to_vec), VM_DEADLINE)
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
        &[],
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
    // The shared cache is built by root (a rootless user could not write it): make sure it
    // exists before the unprivileged run reads it.
    let root = Airlock::root();
    let out = vm_run(
        &root,
        &["--workspace", "none", "--net", "off", "--", "true"],
        &[],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    let bins = Bins::owned_by(&common::test_user());
    let a = Airlock::rootless(&bins);
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

/// Stops the sandbox's engine (and its supervisors) whatever the test's outcome.
struct EngineGuard<'a>(&'a Airlock);

impl Drop for EngineGuard<'_> {
    fn drop(&mut self) {
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

fn check_terminal_session(mut t: OnTerminal, label: &str) {
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
    assert_eq!(lines.last(), Some(&"40 120"), "{label}:\n{seen}");
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
    let script = format!("uname -r; {TTY_SCRIPT}");
    let mut cmd = a.command(&[
        "run",
        "--backend",
        "microvm",
        "--kernel",
        &image,
        "-t",
        "--workspace",
        "none",
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
    check_terminal_session(t, "run -t");
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
    // The shared cache is built by root (the user could not write it): make sure it is there.
    let root = Airlock::root();
    let out = vm_run(
        &root,
        &["--workspace", "none", "--net", "off", "--", "true"],
        &[],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    let bins = Bins::owned_by(&common::test_user());
    let a = Airlock::rootless(&bins);
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
