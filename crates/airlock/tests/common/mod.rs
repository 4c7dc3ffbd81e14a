//! Helpers shared by the end-to-end tests: root gating, temp dirs that are safe to remove,
//! running the real `airlock` binary with isolated state and a deadline, an unprivileged test
//! user for the rootless cases, host-side fixtures for the escape probe, and probe-report
//! parsing.
//!
//! Every test builds its own state directory (`AIRLOCK_STATE_DIR`, `XDG_STATE_HOME`,
//! `XDG_RUNTIME_DIR`, `HOME`) under a fresh temp dir and runs airlock with a cleared
//! environment, so tests run in parallel and never read the developer's config.
#![allow(dead_code)] // each test binary uses a different subset

pub mod internet;
pub mod pool;
pub mod probe;
pub mod work;

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Default deadline for one airlock invocation; a hang fails the test instead of blocking CI.
pub const DEADLINE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// Gating

/// End-to-end tests need root (CI is root). Without root: fail when `AIRLOCK_E2E` is set (CI
/// must never skip silently), otherwise print a note and let the test return early.
pub fn e2e(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("AIRLOCK_E2E").is_some() {
        panic!("{test}: AIRLOCK_E2E is set but the tests are not running as root; end-to-end tests need root");
    }
    eprintln!(
        "note: {test}: not root, end-to-end test not run (set AIRLOCK_E2E=1 to make this an error)"
    );
    false
}

// ---------------------------------------------------------------------------------------------
// Names and temp dirs

/// 16 random hex digits.
pub fn random_hex() -> String {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A directory removed on drop — but never through a mount point: if a test (or a buggy
/// sandbox) left something mounted under it, removing it could delete host files through a
/// leftover bind mount, so those are detached first and the directory is kept if that fails.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A fresh directory (mode 0755) under the system temp dir.
    pub fn new(label: &str) -> Self {
        Self::new_in(&std::env::temp_dir(), label)
    }

    pub fn new_in(parent: &Path, label: &str) -> Self {
        let path = parent.join(format!("airlock-e2e-{label}-{}", random_hex()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        set_mode(&path, 0o755);
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }

    /// Give the whole tree to `user` (for the rootless tests).
    pub fn chown_to(&self, user: &TestUser) {
        chown_tree(&self.path, user.uid, user.gid);
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let mut mounts = mounts_under(&self.path);
        for m in mounts.iter().rev() {
            if let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) {
                // SAFETY: `c` is a valid C string for the duration of the call.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        if !mounts.is_empty() {
            mounts = mounts_under(&self.path);
        }
        if mounts.is_empty() {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            eprintln!(
                "warning: not removing {}: still mounted below it: {mounts:?}",
                self.path.display()
            );
        }
    }
}

/// Mount points at or below `dir`, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

pub fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if path.is_dir() && !path.is_symlink() {
        for e in std::fs::read_dir(path).into_iter().flatten().flatten() {
            chown_tree(&e.path(), uid, gid);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Binaries

pub fn airlock_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_airlock"))
}

/// The escape probe, `airlock-probe` next to the airlock binary (same target dir and
/// profile). `cargo test --workspace` builds it already (the probe crate has integration
/// tests, so cargo builds its binary); it is (re)built here anyway — a no-op when fresh — so
/// `cargo test -p airlock` alone never runs a stale or missing probe. When cargo is not
/// available (test binary run by hand), an existing probe is used as is.
pub fn probe_exe() -> PathBuf {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let airlock = airlock_exe();
            let profile_dir = airlock.parent().expect("airlock binary has a directory");
            let probe = profile_dir.join("airlock-probe");
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev".to_string(),
                Some(other) => other.to_string(),
            };
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
            let mut cmd = Command::new(cargo);
            cmd.args([
                "build",
                "--quiet",
                "-p",
                "airlock-probe",
                "--profile",
                &profile,
                "--manifest-path",
            ])
            .arg(&manifest);
            if let Some(target_dir) = profile_dir.parent() {
                cmd.arg("--target-dir").arg(target_dir);
            }
            match cmd.status() {
                Ok(st) => assert!(st.success(), "`cargo build -p airlock-probe` failed"),
                Err(e) => eprintln!(
                    "note: cannot run cargo ({e}); using the existing {}",
                    probe.display()
                ),
            }
            assert!(
                probe.exists(),
                "{} missing: run `cargo build -p airlock-probe` (or `cargo test --workspace`)",
                probe.display()
            );
            probe
        })
        .clone()
}

/// The airlock and probe binaries a test runs.
pub struct Bins {
    pub airlock: PathBuf,
    pub probe: PathBuf,
    _copy: Option<TempDir>,
}

impl Bins {
    /// target/ in place.
    pub fn for_root() -> Self {
        Bins {
            airlock: airlock_exe(),
            probe: probe_exe(),
            _copy: None,
        }
    }

    /// Copies (0755) owned by `user`, in a temp dir that lives as long as this value: the user
    /// can execute them wherever target/ is, and — like a user's own ~/.cargo/bin/airlock in
    /// real rootless use — could overwrite them on the host, so only the sandbox stands
    /// between the probe's exe-overwrite check and the binary.
    pub fn owned_by(user: &TestUser) -> Self {
        let dir = TempDir::new("bins");
        let (a, p) = (dir.join("airlock"), dir.join("airlock-probe"));
        for (from, to) in [(airlock_exe(), &a), (probe_exe(), &p)] {
            std::fs::copy(&from, to)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
            set_mode(to, 0o755);
        }
        dir.chown_to(user);
        Bins {
            airlock: a,
            probe: p,
            _copy: Some(dir),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The unprivileged test user

#[derive(Clone, Debug)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

pub const TEST_USER: &str = "airlock-test";

/// `airlock-test`, created with `useradd -m` the first time (and kept for later runs).
pub fn test_user() -> TestUser {
    static USER: OnceLock<TestUser> = OnceLock::new();
    USER.get_or_init(|| {
        if lookup_user(TEST_USER).is_none() {
            let out = Command::new("useradd")
                .args([
                    "--create-home",
                    "--shell",
                    "/bin/sh",
                    "--user-group",
                    TEST_USER,
                ])
                .output()
                .expect("run useradd");
            // Another test binary may have won the race; only a still-missing user is an error.
            if lookup_user(TEST_USER).is_none() {
                panic!(
                    "useradd {TEST_USER} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let user = lookup_user(TEST_USER).expect("test user exists");
        std::fs::create_dir_all(&user.home).expect("create the test user's home");
        std::os::unix::fs::chown(&user.home, Some(user.uid), Some(user.gid))
            .expect("chown the test user's home");
        user
    })
    .clone()
}

fn lookup_user(name: &str) -> Option<TestUser> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 7 && f[0] == name).then(|| TestUser {
            name: name.to_string(),
            uid: f[2].parse().unwrap_or(u32::MAX),
            gid: f[3].parse().unwrap_or(u32::MAX),
            home: PathBuf::from(f[5]),
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Running airlock

/// What one airlock invocation did.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Outcome {
    /// The exit code; a signal death of airlock itself is reported as 128+N.
    pub fn code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        self.status
            .code()
            .unwrap_or_else(|| 128 + self.status.signal().unwrap_or(0))
    }

    pub fn describe(&self) -> String {
        format!(
            "exit {} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code(),
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }
}

/// An airlock invocation environment: its own state dir, cwd and (optionally) user.
pub struct Airlock {
    pub exe: PathBuf,
    /// Holds state, runtime and home dirs (and the default cwd).
    pub dir: TempDir,
    pub cwd: PathBuf,
    pub user: Option<TestUser>,
}

impl Airlock {
    /// Run as root (the test process's user).
    pub fn root() -> Self {
        Self::build(airlock_exe(), None)
    }

    /// Run as the unprivileged test user (rootless airlock), with `bins` it can execute
    /// (see `Bins::owned_by`).
    pub fn rootless(bins: &Bins) -> Self {
        Self::build(bins.airlock.clone(), Some(test_user()))
    }

    fn build(exe: PathBuf, user: Option<TestUser>) -> Self {
        let dir = TempDir::new("run");
        for sub in ["state", "xdg-state", "runtime", "home", "cwd"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create test dirs");
        }
        set_mode(&dir.join("runtime"), 0o700);
        if let Some(u) = &user {
            dir.chown_to(u);
        }
        let cwd = dir.join("cwd");
        Airlock {
            exe,
            dir,
            cwd,
            user,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The command, with a cleared environment and this test's state dirs.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        self.command_with(&self.exe, args)
    }

    /// Another program (e.g. script(1) wrapping airlock) in the same environment, user and cwd.
    pub fn command_with<S: AsRef<std::ffi::OsStr>>(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[S],
    ) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(&self.cwd).env_clear();
        cmd.env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        cmd.env("LANG", "C.UTF-8");
        cmd.env("AIRLOCK_STATE_DIR", self.state_dir());
        cmd.env("XDG_STATE_HOME", self.dir.join("xdg-state"));
        cmd.env("XDG_RUNTIME_DIR", self.dir.join("runtime"));
        // The engine's socket: one per test, never the machine's.
        cmd.env("AIRLOCK_RUNTIME_DIR", self.dir.join("runtime/airlock"));
        cmd.env("XDG_CONFIG_HOME", self.dir.join("home/.config"));
        cmd.env("HOME", self.dir.join("home"));
        if let Some(u) = &self.user {
            cmd.env("USER", &u.name).env("LOGNAME", &u.name);
            // std drops supplementary groups (setgroups(0)) when it changes the uid as root.
            cmd.uid(u.uid).gid(u.gid);
        } else {
            cmd.env("USER", "root").env("LOGNAME", "root");
        }
        cmd
    }

    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Outcome {
        run_with_deadline(self.command(args), None, DEADLINE)
    }

    /// Run with extra host environment variables set on the airlock process.
    pub fn run_with_env<S: AsRef<std::ffi::OsStr>>(
        &self,
        env: &[(&str, &str)],
        args: &[S],
    ) -> Outcome {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied());
        run_with_deadline(cmd, None, DEADLINE)
    }

    pub fn run_stdin<S: AsRef<std::ffi::OsStr>>(&self, args: &[S], input: &[u8]) -> Outcome {
        run_with_deadline(self.command(args), Some(input.to_vec()), DEADLINE)
    }
}

/// Run to completion, capturing output; SIGKILL and panic if it outlives `deadline`.
pub fn run_with_deadline(cmd: Command, input: Option<Vec<u8>>, deadline: Duration) -> Outcome {
    run_inner(cmd, input, false, deadline)
}

/// [`run_with_deadline`] with a stdin that stays open (never EOF) until the program exits: for
/// script(1), which types its terminal's EOF character into the session when its stdin ends.
pub fn run_with_open_stdin(cmd: Command, deadline: Duration) -> Outcome {
    run_inner(cmd, None, true, deadline)
}

fn run_inner(
    mut cmd: Command,
    input: Option<Vec<u8>>,
    hold_stdin: bool,
    deadline: Duration,
) -> Outcome {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if input.is_some() || hold_stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let start = Instant::now();
    // ETXTBSY: another test thread forked while a copied binary was still open for writing
    // (the classic copy-then-exec race); it clears as soon as that child execs.
    let mut tries = 0;
    let mut child = loop {
        match cmd.spawn() {
            Ok(c) => break c,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("spawn {cmd:?}: {e}"),
        }
    };
    let _held = if hold_stdin { child.stdin.take() } else { None };
    if let Some(data) = input {
        let mut stdin = child.stdin.take().expect("stdin pipe");
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&data);
        });
    }
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out_pipe.read_to_end(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err_pipe.read_to_end(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for airlock") {
            break st;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
            let err = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
            panic!("{cmd:?} did not finish within {deadline:?}; killed.\n--- stdout\n{out}\n--- stderr\n{err}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    Outcome {
        status,
        stdout,
        stderr,
        elapsed,
    }
}

/// Processes whose command line contains `marker` (the test's own unique token).
pub fn pids_with_marker(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) {
            found.push(pid);
        }
    }
    found
}

/// Poll until `f` holds or `timeout` passes; returns whether it held.
/// Cgroup directories (any hierarchy) whose name starts with `prefix`.
pub fn cgroups_named(prefix: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, prefix: &str, out: &mut Vec<PathBuf>) {
        if depth == 0 {
            return;
        }
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with(prefix) {
                out.push(p.clone());
            }
            walk(&p, depth - 1, prefix, out);
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), 6, prefix, &mut out);
    out
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `/usr/bin/python3` if the host has it (the sandbox sees the host's /usr).
pub fn python3() -> Option<&'static str> {
    Path::new("/usr/bin/python3")
        .exists()
        .then_some("/usr/bin/python3")
}

/// Kill the engine a test's commands auto-started (found by its runtime dir in its environment).
pub fn stop_engines_of(a: &Airlock) {
    let marker = format!(
        "AIRLOCK_RUNTIME_DIR={}",
        a.dir.join("runtime/airlock").display()
    );
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains("engine\0serve") {
            continue;
        }
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) {
            // SAFETY: kill(2) on a pid we just identified as this test's engine.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Two `#[test]`s running `$body(&Airlock, label)`: `$rootful` as root and `$rootless` as the
/// unprivileged test user (rootless airlock, with binaries it can execute). Both skip unless
/// the end-to-end tier is on (see [`e2e`]).
#[macro_export]
macro_rules! rootful_and_rootless {
    ($rootful:ident, $rootless:ident, $body:path) => {
        #[test]
        fn $rootful() {
            if !$crate::common::e2e(stringify!($rootful)) {
                return;
            }
            $body(&$crate::common::Airlock::root(), "rootful");
        }

        #[test]
        fn $rootless() {
            if !$crate::common::e2e(stringify!($rootless)) {
                return;
            }
            let bins = $crate::common::Bins::owned_by(&$crate::common::test_user());
            $body(&$crate::common::Airlock::rootless(&bins), "rootless");
        }
    };
}
