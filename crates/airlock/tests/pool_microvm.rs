//! The warm pool with microVM members (issue 16): the daemon keeps booted guests waiting on
//! their channel; `run --backend microvm --workspace none` claims one and binds its own
//! allowlist, secrets, environment, working directory, time limit and command over the
//! channel; an empty pool starts cold; a daemon killed with SIGKILL leaves its members
//! supervised, and the next one adopts them. Real QEMU (TCG here): each boot costs seconds, so
//! these tests boot few guests. Needs what tests/microvm.rs needs (`.ci/install-microvm`).

mod common;

use common::pool::{claimed, kill_daemon, members_dir, members_ever};

use common::internet::Internet;
use common::{e2e, pids_with_marker, wait_until, Airlock, Outcome};
use std::path::Path;
use std::time::Duration;

/// Boots under TCG on a loaded 2-core machine take a while.
const VM_DEADLINE: Duration = Duration::from_secs(300);

fn cache_dir() -> String {
    let dir = std::env::var("AIRLOCK_TEST_VM_CACHE")
        .unwrap_or_else(|_| "/var/cache/airlock-test".to_string());
    std::fs::create_dir_all(&dir).expect("create the VM cache directory");
    common::set_mode(Path::new(&dir), 0o755);
    dir
}

/// airlock with the shared VM cache (and `env`), to completion.
fn vm(a: &Airlock, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut cmd = a.command(args);
    cmd.env("AIRLOCK_CACHE_DIR", cache_dir());
    cmd.envs(env.iter().copied());
    common::run_with_deadline(cmd, None, VM_DEADLINE)
}

fn ok(a: &Airlock, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let out = vm(a, args, env);
    assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
    out
}

/// Stops the test's daemon however the test ends: SIGKILL, `daemon stop` (which drains what
/// it left), then SIGKILL to any member supervisor still there.
struct DaemonGuard<'a>(&'a Airlock);

impl Drop for DaemonGuard<'_> {
    fn drop(&mut self) {
        kill_daemon(self.0);
        let _ = vm(self.0, &["daemon", "stop"], &[]);
        for pid in pids_with_marker(&members_dir(self.0).display().to_string()) {
            // SAFETY: kill(2) on a supervisor of this test's own pool.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn status(a: &Airlock) -> serde_json::Value {
    let out = ok(a, &["daemon", "status", "--json"], &[]);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn pool0(a: &Airlock) -> serde_json::Value {
    status(a)["pools"][0].clone()
}

/// The host processes of a member (QEMU and its container's helpers): those whose cgroup
/// names it.
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

/// A member's supervisor and every process under it (QEMU's container, QEMU): by parent,
/// as a rootless member has no cgroup of its own.
fn member_processes(a: &Airlock, name: &str) -> Vec<i32> {
    let Some(sup) = std::fs::read_to_string(members_dir(a).join(name).join("supervisor.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return vec![];
    };
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid = stat.rsplit(") ").next()?.split(' ').nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![sup];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.retain(|p| Path::new(&format!("/proc/{p}")).exists());
    found
}

/// Whether a member's supervisor runs and its guest takes sessions (its control socket
/// answers).
fn member_alive(a: &Airlock, name: &str) -> bool {
    let dir = members_dir(a).join(name);
    let sup = std::fs::read_to_string(dir.join("supervisor.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    sup.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
        && std::os::unix::net::UnixStream::connect(dir.join("vm.sock")).is_ok()
}

/// After `daemon stop`: no supervisor, no member folder, no QEMU or cgroup of any member.
fn assert_nothing_left(a: &Airlock, label: &str) {
    let marker = members_dir(a).display().to_string();
    assert!(
        wait_until(Duration::from_secs(30), || pids_with_marker(&marker)
            .is_empty()),
        "{label}: supervisors left: {:?}",
        pids_with_marker(&marker)
    );
    let folders: Vec<_> = std::fs::read_dir(members_dir(a))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        folders.is_empty(),
        "{label}: member folders left: {folders:?}"
    );
    for name in members_ever(a) {
        assert!(
            wait_until(Duration::from_secs(10), || pids_in_cgroup_of(&name)
                .is_empty()),
            "{label}: processes of {name} left: {:?}",
            pids_in_cgroup_of(&name)
        );
    }
    let st = status(a);
    assert_eq!(st["running"], false, "{label}: {st}");
    assert_eq!(
        st["pools"].as_array().map(Vec::len),
        Some(0),
        "{label}: {st}"
    );
}

/// Claims of one filtered pool: an empty pool starts cold; each claim then gets its own
/// allowlist (not the pool's, not the previous claim's), its own secret (the next claim sees
/// none), its environment, working directory and exit status; a member serves one claim and
/// is replaced; the time limit is bound at claim too.
#[test]
fn a_warm_microvm_claim_binds_its_own_allowlist_and_secret() {
    if !e2e("a_warm_microvm_claim_binds_its_own_allowlist_and_secret") {
        return;
    }
    let inet = Internet::start(&["pool.test", "one.test", "two.test"], &[]);
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    let env = [
        ("AIRLOCK_DNS_UPSTREAM", inet.dns.as_str()),
        ("TOKEN_SRC", "s3cret-one"),
    ];
    let policy = ["--backend", "microvm", "--net", "filtered"];
    let start = |size: &str| {
        let mut args = vec![
            "daemon",
            "start",
            "--workspace",
            "none",
            "--size",
            size,
            "--wait",
        ];
        args.extend(policy);
        args.extend(["--allow", "pool.test"]);
        ok(&a, &args, &env)
    };
    let run = |extra: &[&str], script: &str| {
        let mut args = vec!["run", "--workspace", "none"];
        args.extend(policy);
        args.extend(extra);
        args.extend(["--", "sh", "-c", script]);
        vm(&a, &args, &env)
    };
    let probe = "for h in pool.test one.test two.test; do \
                   curl -sf --max-time 20 -o /dev/null http://$h/ && echo \"$h reached\" \
                   || echo \"$h denied\"; done";

    // An empty pool: cold start, said so, counted as a miss.
    start("0");
    let out = run(&["--allow", "one.test"], "uname -r");
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(
        out.stderr.contains("cold start (warm pool") && claimed(&out).is_none(),
        "{}",
        out.describe()
    );
    assert_eq!(pool0(&a)["misses"], 1, "{}", status(&a));
    let guest_kernel = out.stdout.trim().to_string();

    // One member, booted and checked before it is handed out.
    start("1");
    let first = members_ever(&a);
    assert_eq!(first.len(), 1, "{first:?}");
    let script = format!(
        "echo \"$GREETING $TOKEN\"; cat /run/secrets/TOKEN; echo; \
         stat -c %a:%U /run/secrets/TOKEN; pwd; hostname; uname -r; {probe}; exit 7"
    );
    let log = a.dir.join("net.jsonl");
    let out = run(
        &[
            "--net-log",
            &log.display().to_string(),
            "--allow",
            "one.test",
            "-e",
            "GREETING=hello",
            "--secret",
            "TOKEN=env:TOKEN_SRC",
            "-w",
            "/tmp",
        ],
        &script,
    );
    assert_eq!(out.code(), 7, "{}", out.describe());
    let member = claimed(&out).unwrap_or_else(|| panic!("not warm: {}", out.describe()));
    assert!(first.contains(&member), "{member} not from {first:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "hello s3cret-one",
            "s3cret-one",
            "400:agent",
            "/tmp",
            member.as_str(),
            guest_kernel.as_str(),
            "pool.test denied",
            "one.test reached",
            "two.test denied",
        ],
        "{}",
        out.describe()
    );
    // Its denials are its own, as a cold run's: said with the `--allow` hint (not the
    // member's `airlock allow run-…`), and in its --net-log with its allowed connection.
    assert!(
        out.stderr.contains("airlock: blocked two.test")
            && out.stderr.contains("--allow two.test")
            && !out.stderr.contains("airlock allow run-"),
        "{}",
        out.describe()
    );
    let journal = std::fs::read_to_string(&log).unwrap_or_default();
    let events: Vec<serde_json::Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for (host, decision) in [("two.test", "deny"), ("one.test", "allow")] {
        assert!(
            events
                .iter()
                .any(|e| e["host"] == host && e["decision"] == decision),
            "{host} {decision} not in the claim's journal: {journal}"
        );
    }
    // Never reused: its guest powered off, its folder gone; a new member in its place.
    assert!(
        wait_until(Duration::from_secs(30), || !members_dir(&a)
            .join(&member)
            .exists()
            && pids_in_cgroup_of(&member).is_empty()),
        "the claimed member is still there: {:?}",
        pids_in_cgroup_of(&member)
    );
    assert!(
        wait_until(VM_DEADLINE, || pool0(&a)["ready"] == 1),
        "not refilled: {}",
        status(&a)
    );
    let st = pool0(&a);
    assert_eq!(st["hits"], 1, "{st}");
    assert!(st["claim_p50_us"].as_u64().is_some(), "{st}");

    // The next claim: another allowlist, no secret of the first, and a time limit.
    let script =
        format!("ls -A /run/secrets 2>/dev/null | wc -l; env | grep -c s3cret; {probe}; sleep 600");
    let out = run(&["--allow", "two.test", "--timeout", "60s"], &script);
    assert_eq!(out.code(), 124, "{}", out.describe());
    let second = claimed(&out).unwrap_or_else(|| panic!("not warm: {}", out.describe()));
    assert_ne!(second, member, "a member was claimed twice");
    assert!(
        out.stderr.contains("killed: timeout after 60s"),
        "{}",
        out.describe()
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "0",
            "0",
            "pool.test denied",
            "one.test denied",
            "two.test reached"
        ],
        "{}",
        out.describe()
    );
    assert!(
        wait_until(Duration::from_secs(30), || pids_in_cgroup_of(&second)
            .is_empty()),
        "the timed-out member's QEMU runs on: {:?}",
        pids_in_cgroup_of(&second)
    );
    ok(&a, &["daemon", "stop"], &[]);
    assert_nothing_left(&a, "allowlist");
}

/// kill -9 the daemon: its booted member stays supervised (QEMU and the guest run on); a new
/// daemon adopts it (no new boot) and a claim gets it, with a secret; `daemon stop` leaves
/// nothing.
fn adopt(a: &Airlock, label: &str) {
    let _guard = DaemonGuard(a);
    let start = [
        "daemon",
        "start",
        "--workspace",
        "none",
        "--backend",
        "microvm",
        "--net",
        "off",
        "--size",
        "1",
        "--wait",
    ];
    ok(a, &start, &[]);
    let first = members_ever(a);
    assert_eq!(first.len(), 1, "{label}: {first:?}");
    let member = first.iter().next().cloned().unwrap_or_default();
    let qemu = member_processes(a, &member);
    assert!(
        qemu.len() >= 2,
        "{label}: no QEMU under {member}'s supervisor: {qemu:?}"
    );
    let qemu_started: Vec<(i32, Option<u64>)> = qemu.iter().map(|p| (*p, start_time(*p))).collect();

    kill_daemon(a);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        member_alive(a, &member),
        "{label}: {member} died with the daemon"
    );
    assert!(
        qemu.iter()
            .all(|p| Path::new(&format!("/proc/{p}")).exists()),
        "{label}: {member}'s QEMU died with the daemon"
    );

    // A new daemon adopts it: no second boot.
    ok(a, &start, &[]);
    assert_eq!(
        members_ever(a),
        first,
        "{label}: the new daemon booted another member"
    );
    assert_eq!(pool0(a)["ready"], 1, "{label}: {}", status(a));

    let out = ok(
        a,
        &[
            "run",
            "--backend",
            "microvm",
            "--net",
            "off",
            "--workspace",
            "none",
            "--secret",
            "TOKEN=env:TOKEN_SRC",
            "--",
            "sh",
            "-c",
            "hostname; cat /run/secrets/TOKEN",
        ],
        &[("TOKEN_SRC", "s3cret-adopted")],
    );
    assert_eq!(
        claimed(&out).as_deref(),
        Some(member.as_str()),
        "{label}: {}",
        out.describe()
    );
    assert_eq!(
        out.stdout,
        format!("{member}\ns3cret-adopted"),
        "{label}: {}",
        out.describe()
    );
    ok(a, &["daemon", "stop"], &[]);
    assert_nothing_left(a, label);
    // The claimed member powers its guest off after the command: it goes, maybe a moment after
    // `run` returned. A pid is the same process only with the same start time (pids are reused,
    // and /proc/N also answers for a thread id N of another process).
    let same = |(pid, start): &(i32, Option<u64>)| start.is_some() && start_time(*pid) == *start;
    assert!(
        wait_until(Duration::from_secs(30), || !qemu_started.iter().any(same)),
        "{label}: {member}'s processes left: {:?}",
        qemu_started.iter().filter(|p| same(p)).collect::<Vec<_>>()
    );
}

/// A process's start time (clock ticks after boot; field 22 of /proc/PID/stat).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(") ").next()?.split(' ').nth(19)?.parse().ok()
}

#[test]
fn a_killed_daemon_leaves_microvm_members_running_and_a_new_one_adopts_them() {
    if !e2e("a_killed_daemon_leaves_microvm_members_running_and_a_new_one_adopts_them") {
        return;
    }
    adopt(&Airlock::root(), "rootful");
}

#[test]
fn a_rootless_daemon_keeps_microvm_members_too() {
    if !e2e("a_rootless_daemon_keeps_microvm_members_too") {
        return;
    }
    let user = common::test_user();
    let bins = common::Bins::owned_by(&user);
    adopt(&Airlock::rootless(&bins), "rootless");
}

/// `daemon start --backend microvm` where no guest can boot (here: a missing kernel) says why,
/// as a cold run does (exit 123, the path, who chose it, the hint), and makes no pool and no
/// daemon that would retry boots in the background. (No boot.)
#[test]
fn a_microvm_pool_that_cannot_boot_is_refused_at_start() {
    if !e2e("a_microvm_pool_that_cannot_boot_is_refused_at_start") {
        return;
    }
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    let out = vm(
        &a,
        &[
            "daemon",
            "start",
            "--workspace",
            "none",
            "--backend",
            "microvm",
            "--kernel",
            "/nonexistent/vmlinuz",
            "--size",
            "1",
        ],
        &[],
    );
    assert_eq!(out.code(), 123, "{}", out.describe());
    assert!(
        out.stderr.contains("/nonexistent/vmlinuz (from --kernel)")
            && out
                .stderr
                .contains("hint: install a distribution kernel package"),
        "{}",
        out.describe()
    );
    let st = status(&a);
    assert_eq!(st["running"], false, "{st}");
    assert_eq!(st["pools"].as_array().map(Vec::len), Some(0), "{st}");
}

/// A run with `--ro` mounts never takes a warm microVM member, even from a pool made for that
/// very spec: a mount is a snapshot, and a member's would date from its boot. The run starts
/// cold and sees the host directory as it is now.
#[test]
fn a_microvm_run_with_read_only_mounts_never_takes_a_stale_member() {
    if !e2e("a_microvm_run_with_read_only_mounts_never_takes_a_stale_member") {
        return;
    }
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    let data = a.dir.join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("f.txt"), "at the member's boot\n").expect("write");
    let ro = format!("{}:/data", data.display());
    let policy = [
        "--backend",
        "microvm",
        "--net",
        "off",
        "--workspace",
        "none",
        "--ro",
        &ro,
    ];
    let mut args = vec!["daemon", "start", "--size", "1", "--wait"];
    args.extend(policy);
    ok(&a, &args, &[]);
    assert_eq!(members_ever(&a).len(), 1, "{}", status(&a));
    std::fs::write(data.join("f.txt"), "now\n").expect("write");
    let mut args = vec!["run"];
    args.extend(policy);
    args.extend(["--", "cat", "/data/f.txt"]);
    let out = ok(&a, &args, &[]);
    assert_eq!(out.stdout, "now\n", "{}", out.describe());
    assert!(claimed(&out).is_none(), "{}", out.describe());
}

/// The default `run --backend microvm` (an overlay workspace) claims a warm member: the
/// project goes into the member's blank slot disk at claim and the guest mounts it under an
/// overlay at /workspace, with no writable host share. The claimed run sees the project, its
/// changes stay in the guest (the host is untouched) and are summarized as a cold run
/// summarizes them; the same command started cold (pool empty) prints the same. Two boots:
/// the member (no daemon refills it: the daemon is killed before the claim) and the cold run.
#[test]
fn a_warm_microvm_claim_gets_its_overlay_workspace() {
    if !e2e("a_warm_microvm_claim_gets_its_overlay_workspace") {
        return;
    }
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    std::fs::create_dir_all(a.cwd.join("sub")).expect("mkdir");
    std::fs::write(a.cwd.join("a.txt"), "from the host\n").expect("write");
    std::fs::write(a.cwd.join("sub/b.txt"), "bee\n").expect("write");
    std::fs::write(a.cwd.join("gone.txt"), "doomed\n").expect("write");
    let policy = ["--backend", "microvm", "--net", "off"];
    let mut args = vec![
        "daemon",
        "start",
        "--size",
        "1",
        "--wait",
        "--workspace",
        "overlay",
    ];
    args.extend(policy);
    ok(&a, &args, &[]);
    let members = members_ever(&a);
    assert_eq!(members.len(), 1, "{members:?}");
    // Claims work with no daemon; none refills the pool after this one.
    kill_daemon(&a);
    // Written after the member booted: the claim's project is the project as it is now.
    std::fs::write(a.cwd.join("late.txt"), "after the boot\n").expect("write");
    let script = "pwd; cat a.txt sub/b.txt late.txt; stat -c %U:%a .; \
                  echo changed > a.txt; echo new > new.txt; rm gone.txt; cat a.txt; \
                  grep -c ' /workspace ' /proc/mounts; exit 3";
    let run = || {
        let mut args = vec!["run"];
        args.extend(policy);
        args.extend(["--", "sh", "-c", script]);
        vm(&a, &args, &[])
    };
    let warm = run();
    assert_eq!(warm.code(), 3, "{}", warm.describe());
    let member = claimed(&warm).unwrap_or_else(|| panic!("not warm: {}", warm.describe()));
    assert!(members.contains(&member), "{member} not from {members:?}");
    let want = [
        "/workspace",
        "from the host",
        "bee",
        "after the boot",
        "agent:755",
        "changed",
        "1",
    ];
    assert_eq!(
        warm.stdout.lines().collect::<Vec<_>>(),
        want,
        "{}",
        warm.describe()
    );
    // The summary names what the command changed; the host's files are as they were.
    let summary = |out: &Outcome| -> Vec<String> {
        out.stderr
            .lines()
            .skip_while(|l| !l.contains("workspace changes"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        summary(&warm),
        [
            "airlock: workspace changes (discarded, host untouched): 1 added, 1 changed, 1 deleted",
            "  + new.txt",
            "  ~ a.txt",
            "  - gone.txt",
        ],
        "{}",
        warm.describe()
    );
    assert_eq!(
        std::fs::read_to_string(a.cwd.join("a.txt")).expect("read"),
        "from the host\n"
    );
    assert!(a.cwd.join("gone.txt").exists() && !a.cwd.join("new.txt").exists());
    assert!(
        wait_until(Duration::from_secs(30), || !members_dir(&a)
            .join(&member)
            .exists()),
        "the claimed member is still there"
    );

    // Cold (the pool is empty now): the same output, the same summary, the same status.
    let cold = run();
    assert_eq!(cold.code(), 3, "{}", cold.describe());
    assert!(claimed(&cold).is_none(), "{}", cold.describe());
    assert_eq!(
        cold.stdout.lines().collect::<Vec<_>>(),
        want,
        "{}",
        cold.describe()
    );
    assert_eq!(summary(&cold), summary(&warm), "{}", cold.describe());
    ok(&a, &["daemon", "stop"], &[]);
    assert_nothing_left(&a, "overlay workspace");
}

/// Removes a test's named sandboxes and stops its engine however the test ends (declared
/// after the daemon's guard, so it runs first).
struct SandboxGuard<'a>(&'a Airlock, &'a [&'a str]);

impl Drop for SandboxGuard<'_> {
    fn drop(&mut self) {
        for n in self.1 {
            let _ = vm(self.0, &["rm", "-f", n], &[]);
        }
        common::stop_engines_of(self.0);
    }
}

/// Everything under `dir` (names relative to it), for "nothing is left" checks.
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// A named microVM sandbox with a clone workspace starts warm (`daemon start --backend
/// microvm --workspace clone`): `create` + `start` claims a held guest, which sees the
/// sandbox's clone read-write at /workspace (the sandbox user's), its hostname, environment
/// and working directory; a commit made there comes back through `diff`/`fetch` as after a
/// cold start, and a stop takes the last one out; the next start (warm again, from the
/// refilled pool: the sandbox's disk is copied into that member's slot) finds the committed
/// and the uncommitted work. `rm` leaves no sandbox folder, member, link or run directory.
/// Three guest boots (two members and the refill that `daemon stop` ends), rootful and
/// rootless.
#[test]
fn a_named_microvm_start_claims_a_warm_member_and_keeps_its_clone_work() {
    if !e2e("a_named_microvm_start_claims_a_warm_member_and_keeps_its_clone_work") {
        return;
    }
    named_clone(&Airlock::root(), "rootful");
}

#[test]
fn a_rootless_named_microvm_start_claims_a_warm_member_too() {
    if !e2e("a_rootless_named_microvm_start_claims_a_warm_member_too") {
        return;
    }
    let user = common::test_user();
    let bins = common::Bins::owned_by(&user);
    named_clone(&Airlock::rootless(&bins), "rootless");
}

fn named_clone(a: &Airlock, label: &str) {
    let _guard = DaemonGuard(a);
    let _sandboxes = SandboxGuard(a, &["vmwarm"]);
    common::pool::git_project(a);
    let host_git = |args: &[&str]| {
        let out = common::run_with_deadline(a.command_with("git", args), None, VM_DEADLINE);
        assert_eq!(out.code(), 0, "git {args:?}: {}", out.describe());
        out.stdout
    };
    let policy = ["--backend", "microvm", "--net", "off"];
    let mut args = vec![
        "daemon",
        "start",
        "--size",
        "1",
        "--wait",
        "--workspace",
        "clone",
    ];
    args.extend(policy);
    ok(a, &args, &[]);
    let first = members_ever(a);
    assert_eq!(first.len(), 1, "{first:?}");
    let mut create = vec!["create", "vmwarm", "--env", "GREETING=hi"];
    create.extend(policy);
    ok(a, &create, &[]);
    let sdir = a.state_dir().join("sandboxes/vmwarm");
    assert!(
        sdir.join("workspace/.git").is_dir(),
        "the host made the clone"
    );

    let started = ok(a, &["start", "vmwarm"], &[]);
    assert!(
        started.stderr.contains("vmwarm: warm start (pool"),
        "{label}: {}",
        started.describe()
    );
    let member = first.iter().next().cloned().unwrap_or_default();
    assert!(
        started.stderr.contains(&member),
        "{member}: {}",
        started.describe()
    );
    let inside = |script: &str| {
        ok(
            a,
            &[
                "exec",
                "vmwarm",
                "--",
                "sh",
                "-c",
                &format!(
                    "export GIT_AUTHOR_NAME=agent GIT_AUTHOR_EMAIL=a@b.invalid \
                     GIT_COMMITTER_NAME=agent GIT_COMMITTER_EMAIL=a@b.invalid; {script}"
                ),
            ],
            &[],
        )
    };
    // The clone, read-write, the sandbox user's; the sandbox's own name, environment and
    // working directory.
    let out = inside(
        "pwd; cat README; stat -c %u .git/HEAD; git rev-parse --abbrev-ref HEAD; hostname; \
         cat /etc/hostname; echo $GREETING; grep ' /workspace ' /proc/mounts | cut -d' ' -f3,4 \
         | cut -d, -f1",
    );
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        [
            "/workspace",
            "hello from the project",
            "1000",
            "airlock/vmwarm",
            "vmwarm",
            "vmwarm",
            "hi",
            "ext4 rw"
        ],
        "{label}: {}",
        out.describe()
    );
    inside("echo two >> README && git commit -qam two && echo draft > scratch.txt && sync");
    // The work comes back through the review gate, as after a cold start.
    let d: serde_json::Value =
        serde_json::from_str(&ok(a, &["diff", "vmwarm", "--json"], &[]).stdout).expect("diff json");
    assert!(d["tip"].as_str().is_some_and(|t| t.len() >= 40), "{d}");
    ok(a, &["fetch", "vmwarm", "--accept"], &[]);
    assert_eq!(
        host_git(&["log", "--format=%s", "airlock/vmwarm"]),
        "two\ninitial\n"
    );
    // The member is the sandbox now: the slot is its disk, the pool forgot it.
    assert!(sdir.join("vm-workspace.img").is_file());
    assert!(!sdir.join("vm-workspace-slot.img").exists());
    // A commit just before the stop comes out at the stop.
    inside("echo three >> README && git commit -qam three");
    ok(a, &["stop", "vmwarm"], &[]);
    ok(a, &["fetch", "vmwarm", "--accept"], &[]);
    assert_eq!(
        host_git(&["log", "-1", "--format=%s", "airlock/vmwarm"]),
        "three\n"
    );

    // The refilled pool's member: the next start is warm again, with the disk copied in.
    assert!(
        wait_until(VM_DEADLINE, || pool0(a)["ready"] == 1),
        "no refill: {}",
        status(a)
    );
    let again = ok(a, &["start", "vmwarm"], &[]);
    let second = claimed_named(&again).unwrap_or_else(|| panic!("{}", again.describe()));
    assert_ne!(second, member, "{}", again.describe());
    let out = inside("cat scratch.txt; git log -1 --format=%s; git status --short");
    assert_eq!(
        out.stdout,
        "draft\nthree\n?? scratch.txt\n",
        "{}",
        out.describe()
    );
    inside("echo four >> README && git commit -qam four");
    ok(a, &["stop", "vmwarm"], &[]);
    ok(a, &["fetch", "vmwarm", "--accept"], &[]);
    assert_eq!(
        host_git(&["log", "-1", "--format=%s", "airlock/vmwarm"]),
        "four\n"
    );
    ok(a, &["daemon", "stop"], &[]);
    ok(a, &["rm", "vmwarm"], &[]);
    assert!(!sdir.exists(), "{:?}", entries(&sdir));
    assert_nothing_left(a, label);
    let runs = || {
        let mut r = entries(&a.state_dir().join("runs"));
        r.retain(|n| n != ".mnt");
        r
    };
    assert!(
        wait_until(Duration::from_secs(30), || runs().is_empty()),
        "run directories left: {:?} (members {:?}, claimed {member} then {second})",
        runs(),
        members_ever(a)
    );
}

/// The member a named start claimed, from its `NAME: warm start (pool KEY, MEMBER, …)` line.
fn claimed_named(out: &Outcome) -> Option<String> {
    let line = out.stderr.lines().find(|l| l.contains(": warm start"))?;
    line.split(", ").nth(1).map(str::to_string)
}

/// Injected secrets on warm microVM claims: a run's bindings go to the member's supervisor
/// (its proxy intercepts) and the guest gets the placeholder, the claim's CA bundle and its
/// variables; the real key reaches the fake API over TLS and appears nowhere in the guest. A
/// second claim (another member: never reused) has its own key and placeholder and nothing of
/// the first's. A named start with an injected secret claims too (`exec --secrets` sees the
/// placeholder, the API the key). Three guest boots; no daemon refills after them.
#[test]
fn injected_secrets_are_bound_at_microvm_claims() {
    if !e2e("injected_secrets_are_bound_at_microvm_claims") {
        return;
    }
    const REAL1: &str = "sk-vm-warm-first-0123456789abcdef";
    const REAL2: &str = "sk-vm-warm-second-fedcba9876543210";
    const REAL3: &str = "sk-vm-warm-named-00112233445566";
    let inet = Internet::start(&["api.test"], &[]);
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    let _sandboxes = SandboxGuard(&a, &["vmsec"]);
    let ca = inet.cert().display().to_string();
    let env = |key: &'static str| {
        vec![
            ("AIRLOCK_DNS_UPSTREAM", inet.dns.clone()),
            ("AIRLOCK_UPSTREAM_CA", ca.clone()),
            ("HOST_KEY", key.to_string()),
        ]
    };
    let with = |args: &[&str], key: &'static str| {
        let e = env(key);
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = vm(&a, args, &e);
        assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
        out
    };
    let policy = [
        "--backend",
        "microvm",
        "--net",
        "filtered",
        "--workspace",
        "none",
    ];
    let mut args = vec!["daemon", "start", "--size", "3", "--wait"];
    args.extend(policy);
    with(&args, REAL1);
    kill_daemon(&a);
    let secret = "KEY=env:HOST_KEY;hosts=api.test;header=x-api-key";
    let script = "echo \"key=$KEY\"; echo \"file=$(cat /run/secrets/KEY)\"; ls /run/secrets; \
                  echo \"bundle=$CURL_CA_BUNDLE\"; \
                  grep -c 'this sandbox.s secret injection CA' /run/airlock-tls/ca-bundle.pem; \
                  curl -sS --max-time 60 -H \"x-api-key: $KEY\" https://api.test/v1/models";
    let run = |key: &'static str| {
        let mut args = vec!["run"];
        args.extend(policy);
        args.extend(["--allow", "api.test", "--secret", secret, "--"]);
        args.extend(["sh", "-c", script]);
        with(&args, key)
    };
    let requests = || -> Vec<String> {
        inet.model_requests()
            .into_iter()
            .filter(|r| r["path"] == "/v1/models")
            .map(|r| r["headers"]["x-api-key"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let check = |out: &Outcome, real: &str| -> String {
        let member = claimed(out).unwrap_or_else(|| panic!("not warm: {}", out.describe()));
        let lines: Vec<&str> = out.stdout.lines().collect();
        let ph = lines[0]
            .strip_prefix("key=")
            .unwrap_or_default()
            .to_string();
        assert!(ph.starts_with("airlock-placeholder-"), "{}", out.describe());
        assert_eq!(
            lines[1..],
            [
                format!("file={ph}").as_str(),
                "KEY",
                "bundle=/run/airlock-tls/ca-bundle.pem",
                "1",
                "hello from api.test /v1/models"
            ],
            "{}",
            out.describe()
        );
        assert!(!out.stdout.contains(real) && !out.stderr.contains(real));
        format!("{member} {ph}")
    };
    let first = run(REAL1);
    let one = check(&first, REAL1);
    assert_eq!(requests(), [REAL1]);
    let second = run(REAL2);
    let two = check(&second, REAL2);
    assert_eq!(requests(), [REAL1, REAL2]);
    // Another member, another placeholder; the first's appears nowhere in the second claim.
    let (m1, p1) = one.split_once(' ').unwrap_or_default();
    let (m2, p2) = two.split_once(' ').unwrap_or_default();
    assert_ne!(m1, m2);
    assert_ne!(p1, p2);
    assert!(!second.stdout.contains(p1) && !second.stdout.contains(REAL1));

    // A named start with an injected secret claims the third member.
    let mut create = vec!["create", "vmsec", "--allow", "api.test", "--secret", secret];
    create.extend(policy);
    with(&create, REAL3);
    let started = with(&["start", "vmsec"], REAL3);
    assert!(
        started.stderr.contains("vmsec: warm start (pool"),
        "{}",
        started.describe()
    );
    let out = with(
        &[
            "exec",
            "--secrets",
            "vmsec",
            "--",
            "sh",
            "-c",
            "echo \"key=$KEY\"; echo \"file=$(cat /run/secrets/KEY)\"; ls /run/secrets; \
             echo \"bundle=$CURL_CA_BUNDLE\"; \
             grep -c 'this sandbox.s secret injection CA' /run/airlock-tls/ca-bundle.pem; \
             curl -sS --max-time 60 -H \"x-api-key: $KEY\" https://api.test/v1/models",
        ],
        REAL3,
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    let ph = lines[0].strip_prefix("key=").unwrap_or_default();
    assert!(
        ph.starts_with("airlock-placeholder-") && ph != p1 && ph != p2,
        "{}",
        out.describe()
    );
    assert_eq!(
        lines[1..],
        [
            format!("file={ph}").as_str(),
            "KEY",
            "bundle=/run/airlock-tls/ca-bundle.pem",
            "1",
            "hello from api.test /v1/models"
        ],
        "{}",
        out.describe()
    );
    assert!(!out.stdout.contains(REAL3));
    assert_eq!(requests(), [REAL1, REAL2, REAL3]);
    // No value in any file of the state directory.
    let mut stack = vec![a.state_dir()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() && m.len() < (64 << 20) {
                let b = std::fs::read(&p).unwrap_or_default();
                for v in [REAL1, REAL2, REAL3] {
                    assert!(
                        !b.windows(v.len()).any(|w| w == v.as_bytes()),
                        "{v} in {}",
                        p.display()
                    );
                }
            }
        }
    }
}

/// A named agent start (`up --agent … --prompt`) on a microVM claims a warm member of the
/// clone pool: the adopting supervisor stays as the agent's host, the runner starts the
/// harness in the guest (on the guest's kernel, in the sandbox's clone), its reports come
/// back, and its commit comes back with `fetch`. One guest boot (the daemon is killed once the
/// member is ready: no refill).
#[test]
fn a_microvm_agent_start_claims_a_warm_member() {
    if !e2e("a_microvm_agent_start_claims_a_warm_member") {
        return;
    }
    const AGENT: &str = "#!/bin/sh\nset -u\ncd /workspace\nreport working \"on $(hostname)\"\n\
        echo \"$AIRLOCK_PROMPT\" > notes.txt\n\
        git add notes.txt && git -c user.email=a@b.invalid -c user.name=agent commit -qm 'agent: notes' || exit 1\n\
        report done \"committed on $(uname -r)\"\n";
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    let _sandboxes = SandboxGuard(&a, &["vmagent"]);
    let p = common::pool::git_project(&a);
    std::fs::write(p.join("agent.sh"), AGENT).expect("agent");
    common::set_mode(&p.join("agent.sh"), 0o755);
    std::fs::write(
        p.join("airlock.toml"),
        "[agent]\nharness = { command = [\"/workspace/agent.sh\"] }\ngrace = \"3s\"\n",
    )
    .expect("airlock.toml");
    let host_git = |args: &[&str]| {
        let out = common::run_with_deadline(a.command_with("git", args), None, VM_DEADLINE);
        assert_eq!(out.code(), 0, "git {args:?}: {}", out.describe());
        out.stdout
    };
    host_git(&["add", "."]);
    host_git(&["commit", "-qm", "agent"]);
    let policy = ["--backend", "microvm", "--net", "off"];
    let mut args = vec![
        "daemon",
        "start",
        "--size",
        "1",
        "--wait",
        "--workspace",
        "clone",
    ];
    args.extend(policy);
    ok(&a, &args, &[]);
    kill_daemon(&a);
    let mut up = vec!["up", "vmagent", "--prompt", "write the notes"];
    up.extend(policy);
    let out = ok(&a, &up, &[]);
    assert!(
        out.stderr.contains("vmagent: warm start (pool"),
        "{}",
        out.describe()
    );
    let working = out.stdout.find("turn 1 working: on vmagent");
    let done = out.stdout.find("turn 1 done: committed on ");
    assert!(
        working.is_some() && done.is_some() && working < done,
        "{}",
        out.describe()
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    assert!(
        !out.stdout
            .contains(&format!("committed on {}", host.trim())),
        "the harness ran on the host's kernel: {}",
        out.describe()
    );
    ok(&a, &["fetch", "vmagent", "--accept"], &[]);
    assert_eq!(
        host_git(&["log", "-1", "--format=%s", "airlock/vmagent"]),
        "agent: notes\n"
    );
    // `rm -f` of the running adopted sandbox: no folder, no member, no run directory (QEMU's
    // are named after the member it was).
    ok(&a, &["rm", "-f", "vmagent"], &[]);
    assert!(!a.state_dir().join("sandboxes/vmagent").exists());
    let runs = || {
        let mut r = entries(&a.state_dir().join("runs"));
        r.retain(|n| n != ".mnt");
        r
    };
    assert!(
        wait_until(Duration::from_secs(30), || runs().is_empty()),
        "run directories left after rm -f: {:?}",
        runs()
    );
    ok(&a, &["daemon", "stop"], &[]);
    assert_nothing_left(&a, "after rm -f");
}
