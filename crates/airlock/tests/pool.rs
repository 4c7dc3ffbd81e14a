//! The warm pool (issue 16): `airlock daemon start|status|stop|prewarm`, `run` claiming a
//! pre-started member and binding its own command, environment and secrets to it, cold
//! fallback, refill, and the daemon killed with SIGKILL at random points (members live on, no
//! double claims, nothing left behind after `daemon stop`).

mod common;
use common::work::EngineGuard;

use common::pool::{claimed, git_project, kill_daemon, members_dir, members_ever, start_pool};

use common::internet::Internet;
use common::{cgroups_named, e2e, mounts_under, pids_with_marker, wait_until, Airlock, Bins};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Stops the test's daemon (SIGKILL, then `daemon stop` drains what it left) however the test
/// ends.
struct DaemonGuard<'a>(&'a Airlock);

impl Drop for DaemonGuard<'_> {
    fn drop(&mut self) {
        kill_daemon(self.0);
        let _ = self.0.run(&["daemon", "stop"]);
        for pid in pids_with_marker(&members_dir(self.0).display().to_string()) {
            // SAFETY: kill(2) on a supervisor of this test's own pool.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// `airlock run` without a workspace or a network: what most of these tests claim with.
const RUN_NONE_OFF: [&str; 5] = ["run", "--workspace", "none", "--net", "off"];

fn ok(a: &Airlock, args: &[&str]) -> common::Outcome {
    let out = a.run(args);
    assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
    out
}

fn status(a: &Airlock) -> serde_json::Value {
    let out = ok(a, &["daemon", "status", "--json"]);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// After `daemon stop`: no supervisor, no member folder or record, no cgroup, no mount.
fn assert_nothing_left(a: &Airlock, label: &str) {
    let marker = members_dir(a).display().to_string();
    assert!(
        wait_until(Duration::from_secs(10), || pids_with_marker(&marker)
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
    // No ready or claimed marker either (they live and go with their members).
    let markers = common::pool::marker_files(a);
    assert!(markers.is_empty(), "{label}: markers left: {markers:?}");
    let st = status(a);
    assert_eq!(st["running"], false, "{label}: {st}");
    assert_eq!(
        st["pools"].as_array().map(Vec::len),
        Some(0),
        "{label}: {st}"
    );
    for name in members_ever(a) {
        let left = cgroups_named(&format!("{name}."));
        assert!(left.is_empty(), "{label}: cgroups of {name} left: {left:?}");
    }
    let mounts = mounts_under(&a.state_dir());
    assert!(mounts.is_empty(), "{label}: mounts left: {mounts:?}");
}

fn pool0(st: &serde_json::Value) -> &serde_json::Value {
    &st["pools"][0]
}

/// Start, claim (command, environment, secret, exit status bound at claim), refill, stop.
fn warm_lifecycle(a: &Airlock, label: &str) {
    let _guard = DaemonGuard(a);
    // A command's signals, capabilities and filters, and where it may write, started cold (no
    // pool yet): a claimed command starts with exactly these (a member is spawned by the
    // daemon through glibc's posix_spawn, which leaves its two own signals ignored, and an
    // ignored signal stays ignored across exec; its parked child made its Landlock rules
    // before the claim).
    let process = [
        "run",
        "--workspace",
        "none",
        "--",
        "sh",
        "-c",
        "grep -E '^(SigIgn|SigBlk|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; \
         for d in / /etc /tmp /var/tmp /dev/shm /run /home \"$HOME\" /proc/self; do \
           (: > \"$d/.w\") 2>/dev/null && echo \"$d writable\" || echo \"$d not\"; done",
    ];
    let cold = ok(a, &process);
    assert!(claimed(&cold).is_none(), "{label}: {}", cold.describe());
    assert!(
        cold.stdout.contains("SigIgn:\t0000000000000000"),
        "{label}: {}",
        cold.describe()
    );
    start_pool(a, "2", &["--workspace", "none"]);
    let st = status(a);
    assert_eq!(st["running"], true, "{label}: {st}");
    assert_eq!(pool0(&st)["ready"], 2, "{label}: {st}");
    let before = members_ever(a);
    assert_eq!(before.len(), 2, "{label}: {before:?}");

    // The claim binds this run's command, variables, secret and working directory.
    let out = a.run_with_env(
        &[("TOKEN_SRC", "s3cret-value")],
        &[
            "run",
            "--workspace",
            "none",
            "-e",
            "GREETING=hello",
            "--secret",
            "TOKEN=env:TOKEN_SRC",
            "-w",
            "/tmp",
            "--",
            "sh",
            "-c",
            "echo \"$GREETING $TOKEN\"; cat /run/secrets/TOKEN; echo; pwd; hostname; exit 7",
        ],
    );
    assert_eq!(out.code(), 7, "{label}: {}", out.describe());
    let member = claimed(&out).unwrap_or_else(|| panic!("{label}: not warm: {}", out.describe()));
    assert!(
        before.contains(&member),
        "{label}: {member} not from {before:?}"
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "hello s3cret-value",
            "s3cret-value",
            "/tmp",
            member.as_str()
        ],
        "{label}: {}",
        out.describe()
    );

    // Never reused; refilled right after.
    assert!(
        wait_until(Duration::from_secs(60), || {
            let st = status(a);
            pool0(&st)["ready"] == 2 && pool0(&st)["claimed"] == 0
        }),
        "{label}: not refilled: {}",
        status(a)
    );
    assert!(
        !members_dir(a).join(&member).exists(),
        "{label}: the claimed member's folder is still there"
    );
    assert_eq!(members_ever(a).len(), 3, "{label}: {:?}", members_ever(a));
    let st = status(a);
    assert_eq!(pool0(&st)["hits"], 1, "{label}: {st}");
    assert!(
        pool0(&st)["claim_p50_us"].as_u64().is_some(),
        "{label}: {st}"
    );

    // A second run gets a fresh member, and sees nothing of the first claim's secret.
    let out = a.run(&[
        "run",
        "--workspace",
        "none",
        "--",
        "sh",
        "-c",
        "ls -A /run/secrets 2>/dev/null; env | grep -c s3cret; true",
    ]);
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    let second = claimed(&out).unwrap_or_else(|| panic!("{label}: not warm: {}", out.describe()));
    assert_ne!(second, member, "{label}: a member was claimed twice");
    assert_eq!(out.stdout.trim(), "0", "{label}: {}", out.describe());

    assert!(
        wait_until(Duration::from_secs(60), || pool0(&status(a))["ready"] == 2),
        "{label}: not refilled: {}",
        status(a)
    );
    let out = ok(a, &process);
    assert!(claimed(&out).is_some(), "{label}: {}", out.describe());
    assert_eq!(
        out.stdout,
        cold.stdout,
        "{label}: warm vs cold: {}",
        out.describe()
    );

    // The time limit is bound at claim too.
    assert!(
        wait_until(Duration::from_secs(60), || pool0(&status(a))["ready"] == 2),
        "{label}: not refilled: {}",
        status(a)
    );
    let out = a.run(&[
        "run",
        "--workspace",
        "none",
        "--timeout",
        "1s",
        "--",
        "sleep",
        "30",
    ]);
    assert_eq!(out.code(), 124, "{label}: {}", out.describe());
    assert!(
        claimed(&out).is_some() && out.stderr.contains("killed: timeout after 1s"),
        "{label}: {}",
        out.describe()
    );
    assert!(
        out.elapsed < Duration::from_secs(10),
        "{label}: {:?}",
        out.elapsed
    );

    ok(a, &["daemon", "stop"]);
    assert_nothing_left(a, label);
}

crate::rootful_and_rootless!(
    daemon_start_claim_refill_stop_rootful,
    daemon_start_claim_refill_stop_rootless,
    warm_lifecycle
);

/// An empty pool: cold start (said so), counted as a miss. A run whose policy differs from
/// every pool's never gets a member (said so, with where the nearest pool differs) (a pool of filtered members serves no `--net off` run).
#[test]
fn cold_fallback_and_no_policy_leak() {
    if !e2e("cold_fallback_and_no_policy_leak") {
        return;
    }
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    ok(
        &a,
        &[
            "daemon",
            "start",
            "--workspace",
            "none",
            "--size",
            "0",
            "--net",
            "off",
        ],
    );
    let out = ok(
        &a,
        &["run", "--workspace", "none", "--net", "off", "--", "true"],
    );
    assert!(
        out.stderr.contains("cold start (warm pool") && claimed(&out).is_none(),
        "{}",
        out.describe()
    );
    assert_eq!(pool0(&status(&a))["misses"], 1, "{}", status(&a));
    // A run no pool is for says so, and what sets it apart from the nearest pool.
    let out = ok(
        &a,
        &[
            "run",
            "--workspace",
            "none",
            "--net",
            "off",
            "--user",
            "root",
            "--",
            "true",
        ],
    );
    assert!(
        claimed(&out).is_none()
            && out
                .stderr
                .contains("cold start (no warm pool matches this run; the nearest, pool ")
            && out.stderr.contains("differs in user)"),
        "{}",
        out.describe()
    );
    assert_eq!(pool0(&status(&a))["misses"], 1, "{}", status(&a));

    ok(
        &a,
        &[
            "daemon",
            "prewarm",
            "--workspace",
            "none",
            "--size",
            "1",
            "--wait",
            "--allow",
            "one.example",
        ],
    );
    // Another network mode is not that pool's (a filtered run with another allowlist is:
    // `a_claim_gets_its_own_allowlist`).
    let out = ok(
        &a,
        &["run", "--workspace", "none", "--net", "off", "--", "true"],
    );
    assert!(claimed(&out).is_none(), "{}", out.describe());
    // The same policy claims it.
    let out = ok(
        &a,
        &[
            "run",
            "--workspace",
            "none",
            "--allow",
            "one.example",
            "--",
            "true",
        ],
    );
    assert!(claimed(&out).is_some(), "{}", out.describe());
    ok(&a, &["daemon", "stop"]);
    assert_nothing_left(&a, "cold");
}

/// A warm run's egress journal is its own, as a cold run's: what it blocked is said on its
/// stderr (with the hint), and `--net-log FILE` claims warm, the claim's decisions (and no
/// one else's) reaching FILE.
fn warm_runs_say_and_journal_their_egress(a: &Airlock, label: &str) {
    let _guard = DaemonGuard(a);
    start_pool(a, "1", &["--workspace", "none"]);
    let probe = |host: &str, log: Option<&Path>| {
        let script = format!("getent hosts {host}; echo done");
        let mut args = vec!["run", "--workspace", "none"];
        let log = log.map(|p| p.display().to_string());
        if let Some(l) = &log {
            args.extend(["--net-log", l.as_str()]);
        }
        args.extend(["--", "sh", "-c", script.as_str()]);
        let out = a.run(&args);
        assert_eq!(out.code(), 0, "{label}: {}", out.describe());
        assert_eq!(out.stdout, "done\n", "{label}: {}", out.describe());
        assert!(
            claimed(&out).is_some(),
            "{label}: not warm: {}",
            out.describe()
        );
        let said = format!("airlock: blocked {host}:53: {host} is not in the allowed domains");
        assert!(
            out.stderr.contains(&said) && out.stderr.contains(&format!("--allow {host}")),
            "{label}: the denial is not said: {}",
            out.describe()
        );
        // Said once, however often the resolver asked.
        assert_eq!(
            out.stderr.matches("airlock: blocked").count(),
            1,
            "{label}: {}",
            out.describe()
        );
    };
    probe("first.example", None);
    assert!(
        wait_until(Duration::from_secs(60), || pool0(&status(a))["ready"] == 1),
        "{label}: no refill: {}",
        status(a)
    );
    let log = a.dir.join("net.jsonl");
    probe("second.example", Some(&log));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{label}: {e}: {l}")))
        .collect();
    assert!(
        events.iter().any(|e| e["host"] == "second.example"
            && e["kind"] == "dns"
            && e["decision"] == "deny"),
        "{label}: the claim's denial is not in its journal: {text}"
    );
    assert!(
        !text.contains("first.example"),
        "{label}: another claim's decision is in this one's journal: {text}"
    );
    // Said as it happens, while the command still runs (not at its end).
    assert!(
        wait_until(Duration::from_secs(60), || pool0(&status(a))["ready"] == 1),
        "{label}: no refill: {}",
        status(a)
    );
    let mut cmd = a.command(&[
        "run",
        "--workspace",
        "none",
        "--",
        "sh",
        "-c",
        "getent hosts live.example; sleep 4; echo done",
    ]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn airlock");
    let (_, mut stderr) = warm_member(&mut child);
    let mut said = String::new();
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut stderr, &mut line).unwrap_or(0) > 0 {
        said.push_str(&line);
        if line.contains("airlock: blocked live.example:53") {
            break;
        }
        line.clear();
    }
    // The command sleeps 4 s after its lookup: said then, the run is far from its end.
    let said_at = Instant::now();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
    let status = child.wait().expect("wait");
    let before_end = said_at.elapsed();
    assert!(
        said.contains("airlock: blocked live.example:53"),
        "{label}: {said}"
    );
    assert!(
        status.success() && before_end > Duration::from_secs(2),
        "{label}: the denial was said {before_end:?} before the run's end, not while the \
         command ran ({status}): {said}"
    );
}

crate::rootful_and_rootless!(
    warm_runs_say_and_journal_their_egress_rootful,
    warm_runs_say_and_journal_their_egress_rootless,
    warm_runs_say_and_journal_their_egress
);

/// `airlock doctor --json`'s warm pool row.
fn doctor_pool_row(a: &Airlock) -> serde_json::Value {
    let out = a.run(&["doctor", "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.describe()));
    v["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["id"] == "pool"))
        .cloned()
        .unwrap_or_else(|| panic!("no pool row: {}", out.stdout))
}

/// kill -9 the daemon: its members run on; a new daemon adopts them (no new starts) and
/// resumes refilling.
#[test]
fn a_killed_daemon_leaves_members_running_and_a_new_one_adopts_them() {
    if !e2e("a_killed_daemon_leaves_members_running_and_a_new_one_adopts_them") {
        return;
    }
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    start_pool(&a, "2", &["--workspace", "none", "--net", "off"]);
    let first = members_ever(&a);
    kill_daemon(&a);
    let supervisors: Vec<i32> = first
        .iter()
        .filter_map(|m| {
            std::fs::read_to_string(members_dir(&a).join(m).join("supervisor.pid")).ok()
        })
        .filter_map(|p| p.trim().parse().ok())
        .filter(|p: &i32| Path::new(&format!("/proc/{p}")).exists())
        .collect();
    assert_eq!(supervisors.len(), 2, "supervisors gone with the daemon");
    // `doctor` says the pool is not refilled, and how to mend that.
    let row = doctor_pool_row(&a);
    assert!(
        row["status"] == "degraded"
            && row["detail"]
                .as_str()
                .is_some_and(|d| d.contains("no daemon refills them") && d.contains("2/2 ready"))
            && row["fix"]
                .as_str()
                .is_some_and(|f| f.contains("airlock daemon start")),
        "{row}"
    );
    // A claim needs no daemon.
    let out = ok(
        &a,
        &["run", "--workspace", "none", "--net", "off", "--", "true"],
    );
    let member = claimed(&out).unwrap_or_else(|| panic!("not warm: {}", out.describe()));
    assert!(first.contains(&member));
    // Claimed and ended with no daemon: removed by the claimer itself.
    assert!(!members_dir(&a).join(&member).exists());
    start_pool(&a, "2", &["--workspace", "none", "--net", "off"]);
    let now = members_ever(&a);
    // One new member (the refill), the other adopted.
    assert_eq!(now.len(), 3, "{now:?}");
    let row = doctor_pool_row(&a);
    assert!(
        row["status"] == "ok"
            && row["detail"].as_str().is_some_and(|d| {
                d.starts_with("daemon running (pid ") && d.contains("2/2 ready, 1 hits, 0 misses")
            }),
        "{row}"
    );
    ok(&a, &["daemon", "stop"]);
    assert_nothing_left(&a, "adopt");
}

/// `n` runs of `run --workspace none --net off -- hostname` at once (with `AIRLOCK_TIMING`, so
/// each says how its claim was taken), `during` done meanwhile: each succeeds, and each warm
/// one ran in its member, never handed out before (`seen`). Their outcomes.
fn racing_runs(
    a: &Airlock,
    n: usize,
    seen: &mut BTreeSet<String>,
    round: usize,
    during: impl FnOnce(),
) -> Vec<common::Outcome> {
    let outs = std::thread::scope(|s| {
        let runs: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(move || {
                    a.run_with_env(
                        &[("AIRLOCK_TIMING", "1")],
                        &[
                            "run",
                            "--workspace",
                            "none",
                            "--net",
                            "off",
                            "--",
                            "hostname",
                        ],
                    )
                })
            })
            .collect();
        during();
        runs.into_iter()
            .map(|r| r.join().expect("a run thread"))
            .collect::<Vec<_>>()
    });
    for out in &outs {
        assert_eq!(out.code(), 0, "round {round}: {}", out.describe());
        if let Some(m) = claimed(out) {
            assert_eq!(out.stdout.trim(), m, "round {round}: ran elsewhere");
            assert!(seen.insert(m.clone()), "round {round}: {m} claimed twice");
        }
    }
    outs
}

/// Claims while the daemon is killed with SIGKILL at random moments and started again: every
/// run succeeds (warm or cold), no member is handed out twice, and `daemon stop` leaves nothing.
#[test]
fn claims_survive_daemon_kill_9_at_random_points() {
    if !e2e("claims_survive_daemon_kill_9_at_random_points") {
        return;
    }
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    start_pool(&a, "3", &["--workspace", "none", "--net", "off"]);
    let mut seen = BTreeSet::new();
    let mut warm = 0;
    for round in 0..6 {
        let a = &a;
        let outs = racing_runs(a, 3, &mut seen, round, || {
            // A random moment in the claims (or in the refill after them).
            let delay = u64::from_str_radix(&common::random_hex()[..4], 16).unwrap_or(0) % 400;
            std::thread::sleep(Duration::from_millis(delay));
            kill_daemon(a);
        });
        warm += outs.iter().filter(|o| claimed(o).is_some()).count();
        ok(
            a,
            &[
                "daemon",
                "start",
                "--workspace",
                "none",
                "--size",
                "3",
                "--net",
                "off",
            ],
        );
    }
    assert!(warm > 0, "no run was warm");
    ok(&a, &["daemon", "stop"]);
    assert_nothing_left(&a, "kill -9");
}

/// Claimers racing for the ready markers (`pool::take`: one rename each), many rounds of
/// more claimers than members: no member is handed out twice, a claim that finds the pool
/// empty is a cold start counted as a miss, and `daemon status` counts every hit and miss.
/// Each claim says how it was taken (`AIRLOCK_TIMING`).
#[test]
fn claimers_racing_for_ready_markers_never_share_a_member() {
    if !e2e("claimers_racing_for_ready_markers_never_share_a_member") {
        return;
    }
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    start_pool(&a, "3", &["--workspace", "none", "--net", "off"]);
    let (mut seen, mut hits, mut misses) = (BTreeSet::new(), 0, 0);
    for round in 0..6 {
        wait_ready(&a, 3, "race");
        for out in racing_runs(&a, 5, &mut seen, round, || ()) {
            if claimed(&out).is_some() {
                hits += 1;
                assert!(
                    out.stderr.contains("warm: ready marker taken"),
                    "round {round}: {}",
                    out.describe()
                );
            } else {
                assert!(
                    out.stderr.contains("is empty"),
                    "round {round}: {}",
                    out.describe()
                );
                misses += 1;
            }
        }
    }
    assert!(hits >= 6 && misses > 0, "{hits} hits, {misses} misses");
    assert!(
        wait_until(Duration::from_secs(20), || {
            let st = status(&a);
            pool0(&st)["hits"] == hits
                && pool0(&st)["claimed"] == 0
                && pool0(&st)["misses"] == misses
        }),
        "{hits} hits, {misses} misses: {}",
        status(&a)
    );
    ok(&a, &["daemon", "stop"]);
    assert_nothing_left(&a, "race");
}

/// A claim made while no daemon runs (killed with SIGKILL): the run is warm all the same
/// (claims need no daemon), and the store does not know of it — the next daemon learns it
/// from the member's claimed marker: it keeps that member while its claimer lives, never
/// hands it out again, refills the pool around it, and removes it once the claimer is gone.
#[test]
fn a_claim_made_while_no_daemon_runs_is_kept_by_the_next_one() {
    if !e2e("a_claim_made_while_no_daemon_runs_is_kept_by_the_next_one") {
        return;
    }
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    start_pool(&a, "2", &["--workspace", "none", "--net", "off"]);
    wait_ready(&a, 2, "no daemon");
    let first = members_ever(&a);
    kill_daemon(&a);
    assert!(
        wait_until(Duration::from_secs(5), || common::pool::daemon_pid(&a)
            .is_none()),
        "the daemon survived"
    );
    let (claimer, used, stderr) = spawn_warm(&a, &[], &["sh", "-c", "hostname; sleep 4"]);
    assert!(first.contains(&used), "{first:?} {used}");
    // The next daemon keeps it (its claimer lives) and refills; the next runs get others.
    start_pool(&a, "2", &["--workspace", "none", "--net", "off"]);
    wait_ready(&a, 2, "no daemon");
    assert_eq!(pool0(&status(&a))["claimed"], 1, "{}", status(&a));
    for _ in 0..2 {
        let out = ok(
            &a,
            &["run", "--workspace", "none", "--net", "off", "--", "true"],
        );
        let next = warm(&out, "after the kill");
        assert!(next != used, "{next} handed out again");
        wait_ready(&a, 2, "no daemon");
    }
    assert!(
        members_dir(&a).join(&used).exists(),
        "{used} removed while its claimer runs"
    );
    // Its claimer done: removed, and counted.
    let done = claimer.wait_with_output().expect("the claimer");
    drop(stderr);
    assert!(done.status.success(), "{done:?}");
    assert!(
        wait_until(Duration::from_secs(10), || !members_dir(&a)
            .join(&used)
            .exists()
            && pool0(&status(&a))["claimed"] == 0),
        "{used} left after its claimer: {}",
        status(&a)
    );
    ok(&a, &["daemon", "stop"]);
    assert_nothing_left(&a, "no daemon");
}

/// `[pool] size` in the user configuration: the first run of a kind starts its pool (and the
/// daemon) and runs cold; the next one is warm.
#[test]
fn configured_pool_starts_on_the_first_run() {
    if !e2e("configured_pool_starts_on_the_first_run") {
        return;
    }
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    let cfg = a.dir.join("home/.config/airlock");
    std::fs::create_dir_all(&cfg).expect("config dir");
    std::fs::write(cfg.join("config.toml"), "[pool]\nsize = 1\n").expect("config");
    let run = ["run", "--workspace", "none", "--net", "off", "--", "true"];
    let out = ok(&a, &run);
    assert!(
        claimed(&out).is_none() && out.stderr.contains("warm pool"),
        "{}",
        out.describe()
    );
    assert!(
        wait_until(Duration::from_secs(60), || pool0(&status(&a))["ready"] == 1),
        "{}",
        status(&a)
    );
    let out = ok(&a, &run);
    assert!(claimed(&out).is_some(), "{}", out.describe());
    ok(&a, &["daemon", "stop"]);
    assert_nothing_left(&a, "configured");
}

/// The HTTP API's `run` (and so the MCP run tool) claims from the pool like the CLI does.
#[test]
fn an_api_run_claims_a_warm_member() {
    if !e2e("an_api_run_claims_a_warm_member") {
        return;
    }
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    let _engine = EngineGuard(&a);
    start_pool(&a, "1", &["--workspace", "none", "--net", "off"]);
    ok(&a, &["list"]); // starts the engine
    let sock = std::fs::read_dir(a.dir.join("runtime/airlock"))
        .expect("runtime dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sock"))
        .expect("engine socket")
        .display()
        .to_string();
    let body = serde_json::json!({
        "dir": a.cwd.display().to_string(),
        "argv": ["hostname"],
        "workspace": "none",
        "net": "off",
        "env": {"X": "1"},
    })
    .to_string();
    let out = common::run_with_deadline(
        a.command_with(
            "curl",
            &[
                "-sS",
                "--unix-socket",
                &sock,
                "-H",
                "Content-Type: application/json",
                "-d",
                &body,
                "http://airlock/v1/run",
            ],
        ),
        None,
        common::DEADLINE,
    );
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let of = |stream: &str| -> String {
        events
            .iter()
            .filter(|e| e["stream"] == stream)
            .filter_map(|e| e["data"].as_str())
            .collect()
    };
    let stderr = of("stderr");
    let member = stderr
        .lines()
        .find(|l| l.contains("warm start"))
        .and_then(|l| l.split(", ").nth(1))
        .unwrap_or_else(|| panic!("not warm: {}", out.stdout))
        .to_string();
    assert_eq!(of("stdout").trim(), member, "{}", out.stdout);
    assert_eq!(
        events.last(),
        Some(&serde_json::json!({"exit": 0})),
        "{}",
        out.stdout
    );
    ok(&a, &["daemon", "stop"]);
    assert_nothing_left(&a, "api");
}

/// The pool is an optimisation: records it cannot read make a cold start with a warning, never
/// a failed run.
#[test]
fn unreadable_pool_records_mean_a_cold_start_not_a_failure() {
    if !e2e("unreadable_pool_records_mean_a_cold_start_not_a_failure") {
        return;
    }
    let a = Airlock::root();
    std::fs::create_dir_all(members_dir(&a)).expect("members dir");
    std::fs::write(
        a.state_dir().join("store.db"),
        "this is not an SQLite database, whatever its name says\n".repeat(200),
    )
    .expect("garbage store");
    let out = ok(
        &a,
        &[
            "run",
            "--workspace",
            "none",
            "--net",
            "off",
            "--",
            "echo",
            "hi",
        ],
    );
    assert_eq!(out.stdout, "hi\n", "{}", out.describe());
    assert!(
        out.stderr.contains("warm pool unavailable, starting cold"),
        "{}",
        out.describe()
    );
}

/// A filtered member's allowlist is the claim's: put in force before the command runs, so a
/// run reaches what it allows and nothing the pool (or an earlier claim) allowed.
#[test]
fn a_claim_gets_its_own_allowlist() {
    if !e2e("a_claim_gets_its_own_allowlist") {
        return;
    }
    const CA: &str = "/etc/airlock-test-ca.pem";
    let inet = Internet::start(&["x.test", "y.test"], &[]);
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    let cert_dir = common::TempDir::new("cert");
    let cert = cert_dir.join("ca.pem");
    std::fs::copy(inet.cert(), &cert).expect("copy cert");
    common::set_mode(&cert, 0o644);
    let ro = format!("{}:{CA}", cert.display());
    let env = [("AIRLOCK_DNS_UPSTREAM", inet.dns.as_str())];
    let start = a.run_with_env(
        &env,
        &[
            "daemon",
            "start",
            "--workspace",
            "none",
            "--size",
            "2",
            "--wait",
            "--allow",
            "x.test",
            "--ro",
            &ro,
        ],
    );
    assert_eq!(start.code(), 0, "{}", start.describe());
    let probe = format!(
        "for h in x.test y.test; do \
           curl -sS --max-time 10 --cacert {CA} https://$h/ >/dev/null 2>&1 \
             && echo \"$h reached\" || echo \"$h denied\"; \
         done"
    );
    for (allow, reached, denied) in [
        ("y.test", "y.test", "x.test"),
        ("x.test", "x.test", "y.test"),
    ] {
        let out = a.run_with_env(
            &env,
            &[
                "run",
                "--workspace",
                "none",
                "--allow",
                allow,
                "--ro",
                &ro,
                "--",
                "sh",
                "-c",
                &probe,
            ],
        );
        assert_eq!(out.code(), 0, "{allow}: {}", out.describe());
        assert!(
            claimed(&out).is_some(),
            "{allow}: not warm: {}",
            out.describe()
        );
        assert!(
            out.stdout.contains(&format!("{reached} reached"))
                && out.stdout.contains(&format!("{denied} denied")),
            "allowing {allow}: {}",
            out.describe()
        );
    }
    ok(&a, &["daemon", "stop"]);
    assert_nothing_left(&a, "allowlist");
}

// ---------------------------------------------------------------------------------------------
// Workspaces and limits bound at claim

/// Until the pool has `n` members ready again.
fn wait_ready(a: &Airlock, n: u64, label: &str) {
    assert!(
        wait_until(Duration::from_secs(60), || pool0(&status(a))["ready"] == n),
        "{label}: pool not refilled: {}",
        status(a)
    );
}

fn warm(out: &common::Outcome, label: &str) -> String {
    claimed(out).unwrap_or_else(|| panic!("{label}: not warm: {}", out.describe()))
}

/// The default run (overlay workspace) and a bind run claim a member of the default pool
/// (`daemon start` with no `--workspace`, made from `/`: an overlay pool): the project is attached at /workspace before the command runs, the host
/// directory stays untouched (overlay) and the change summary is printed; the protected paths
/// are read-only exactly as in a cold run; a bind run's tampering with git's control files is
/// reported and undone as after a cold bind run; two claims at once never see each other's
/// workspace.
fn workspaces_at_claim(a: &Airlock, label: &str) {
    let _guard = DaemonGuard(a);
    let p = git_project(a);
    // No `--workspace`: the pool is for what `run` makes with these options, an overlay run.
    // Made from `/`: the directory a pool is made in is no workspace (each claim attaches its
    // own), so it is not refused as a run from `/` is.
    let mut start = a.command(&["daemon", "start", "--size", "2", "--net", "off", "--wait"]);
    start.current_dir("/");
    let out = common::run_with_deadline(start, None, Duration::from_secs(120));
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());

    // Overlay: the default workspace.
    let out = a.run_with_env(
        &[("AIRLOCK_TIMING", "1")],
        &[
            "run",
            "--net",
            "off",
            "--",
            "sh",
            "-c",
            "echo x > f; cat README; pwd; cat f",
        ],
    );
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    warm(&out, label);
    // Root-run, through the workspace helper the member's stub parked (no fork, no namespace
    // change on the claim's path); rootless, a helper of the claimer's own.
    let parked = out.stderr.contains("attach: parked helper answered");
    assert_eq!(parked, a.user.is_none(), "{label}: {}", out.describe());
    assert_eq!(
        out.stderr.contains("attach: helper answered"),
        !parked,
        "{label}: {}",
        out.describe()
    );
    // A claimer that stalls between its connect and its request (the stub then says an
    // unasked hello, before its answer about the workspace helper): attached all the same.
    wait_ready(a, 2, label);
    let late = run_stalled_after_connect(
        a,
        &[
            "run",
            "--net",
            "off",
            "--",
            "sh",
            "-c",
            "cat README; echo y > g; exit 3",
        ],
    );
    assert_eq!(late.code(), 3, "{label}: {}", late.describe());
    warm(&late, label);
    assert_eq!(
        late.stdout,
        "hello from the project\n",
        "{label}: {}",
        late.describe()
    );
    assert!(
        late.stderr.contains("  + g"),
        "{label}: {}",
        late.describe()
    );
    assert_eq!(
        late.stderr.contains("attach: parked helper answered"),
        a.user.is_none(),
        "{label}: {}",
        late.describe()
    );
    assert_eq!(
        out.stdout,
        "hello from the project\n/workspace\nx\n",
        "{label}: {}",
        out.describe()
    );
    assert!(!p.join("f").exists(), "{label}: the overlay wrote the host");
    assert!(
        out.stderr
            .contains("workspace changes (discarded, host untouched): 1 added")
            && out.stderr.contains("  + f"),
        "{label}: no change summary: {}",
        out.stderr
    );

    // The protected paths: the same refusal warm as cold.
    let attack = "(echo evil > .git/hooks/pre-commit); echo rc=$?; (echo '[core]' >> .git/config); echo rc=$?";
    wait_ready(a, 2, label);
    let out = a.run(&["run", "--net", "off", "--", "sh", "-c", attack]);
    warm(&out, label);
    let bins = a.user.as_ref().map(Bins::owned_by);
    let cold_env = match &bins {
        None => Airlock::root(),
        Some(b) => Airlock::rootless(b),
    };
    let mut cmd = cold_env.command(&["run", "--net", "off", "--", "sh", "-c", attack]);
    cmd.current_dir(&p);
    let cold = common::run_with_deadline(cmd, None, common::DEADLINE);
    assert!(claimed(&cold).is_none(), "{label}: {}", cold.describe());
    assert_eq!(out.code(), cold.code(), "{label}: {}", out.describe());
    assert_eq!(out.stdout, cold.stdout, "{label}: warm vs cold");
    assert_eq!(out.stdout, "rc=2\nrc=2\n", "{label}: {}", out.describe());
    for (what, o) in [("warm", &out), ("cold", &cold)] {
        assert_eq!(
            o.stderr.matches("Read-only file system").count(),
            2,
            "{label}: {what}: {}",
            o.describe()
        );
    }
    assert!(!p.join(".git/hooks/pre-commit").exists(), "{label}");
    assert!(
        !std::fs::read_to_string(p.join(".git/config"))
            .expect("config")
            .contains("[core]\n[core]"),
        "{label}"
    );

    // Bind: writes reach the host; git's control files are protected, and what slips past
    // the protections is reported and undone.
    wait_ready(a, 2, label);
    let script = r#"e() { l=$1; shift; "$@" 2>/dev/null && echo "OK $l" || echo "DENIED $l"; }
e rename-git mv .git .git-moved
e git-hook sh -c 'echo x > .git/hooks/pre-commit'
e info-attributes sh -c 'echo "* filter=x" > .git/info/attributes'
e commondir sh -c 'echo ../evil > .git/commondir'
e work sh -c 'echo work > work.txt'
true"#;
    let out = tampering_bind_run(a, script, label);
    for line in [
        "DENIED rename-git",
        "DENIED git-hook",
        "DENIED info-attributes",
        "OK commondir",
        "OK work",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "{label}: {line}: {}",
            out.describe()
        );
    }
    assert!(
        out.stderr.contains(".git/commondir"),
        "{label}: {}",
        out.stderr
    );
    assert!(!p.join(".git/commondir").exists(), "{label}: not undone");
    assert_eq!(
        std::fs::read_to_string(p.join("work.txt")).ok().as_deref(),
        Some("work\n"),
        "{label}: the bind's write is lost"
    );
    std::fs::remove_file(p.join("work.txt")).expect("rm work.txt");

    // Two claims at once, two projects: each sees its own.
    wait_ready(a, 2, label);
    let q = a.dir.join("other-project");
    std::fs::create_dir_all(&q).expect("mkdir");
    std::fs::write(q.join("OTHER"), "the other project\n").expect("write");
    common::work::give(a, &q);
    let both: Vec<_> = [(&p, "one"), (&q, "two")]
        .into_iter()
        .map(|(dir, tag)| {
            let mut cmd = a.command(&[
                "run",
                "--net",
                "off",
                "--",
                "sh",
                "-c",
                &format!("echo {tag} > mine; sleep 1; ls; cat mine"),
            ]);
            cmd.current_dir(dir);
            std::thread::spawn(move || common::run_with_deadline(cmd, None, common::DEADLINE))
        })
        .collect();
    let outs: Vec<_> = both.into_iter().map(|t| t.join().expect("join")).collect();
    let (m1, m2) = (warm(&outs[0], label), warm(&outs[1], label));
    assert_ne!(m1, m2, "{label}: one member for two claims");
    assert_eq!(
        outs[0].stdout,
        "README\nmine\none\n",
        "{label}: {}",
        outs[0].describe()
    );
    assert_eq!(
        outs[1].stdout,
        "OTHER\nmine\ntwo\n",
        "{label}: {}",
        outs[1].describe()
    );
    assert!(!p.join("mine").exists() && !q.join("mine").exists());

    ok(a, &["daemon", "stop"]);
    assert_nothing_left(a, label);
}

/// A warm bind run of `script` (no network), whose tampering with git's control files the
/// way back reports and undoes: exit 121.
fn tampering_bind_run(a: &Airlock, script: &str, label: &str) -> common::Outcome {
    let out = a.run(&[
        "run",
        "--workspace",
        "bind",
        "--net",
        "off",
        "--",
        "sh",
        "-c",
        script,
    ]);
    warm(&out, label);
    assert_eq!(out.code(), 121, "{label}: {}", out.describe());
    out
}

/// A warm run's sandbox is gone before anything of it is read back and before the run
/// returns, as a cold run's: a process the command leaves behind, rewriting a git control
/// file in a loop in a bind workspace, cannot put it back after the way back's check undid it
/// (the run then says "undone" and the host keeps the tampering), nor write on once the run
/// has returned. (Attack: with the member's end left until the claimer hangs up, the loop
/// outlived the check and `.git/commondir` stayed on the host.)
fn leftovers_end_before_the_way_back(a: &Airlock, label: &str) {
    let _guard = DaemonGuard(a);
    let p = git_project(a);
    let mut start = a.command(&[
        "daemon",
        "start",
        "--size",
        "1",
        "--workspace",
        "bind",
        "--net",
        "off",
        "--wait",
    ]);
    start.current_dir(&p);
    let out = common::run_with_deadline(start, None, Duration::from_secs(120));
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    // Left running: the control file rewritten, and a counter appended, without a pause.
    let script = "(while :; do echo ../evil > .git/commondir; echo x >> late.txt; done) \
         >/dev/null 2>&1 & sleep 0.2; echo started";
    for round in 0..3 {
        wait_ready(a, 1, label);
        let out = tampering_bind_run(a, script, &format!("{label}: round {round}"));
        assert!(
            out.stderr.contains(".git/commondir"),
            "{label}: round {round}: not reported: {}",
            out.stderr
        );
        let size = |f: &str| std::fs::metadata(p.join(f)).map(|m| m.len()).ok();
        let (commondir, late) = (size(".git/commondir"), size("late.txt"));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            (commondir, size(".git/commondir")),
            (None, None),
            "{label}: round {round}: the sandbox put .git/commondir back after the check"
        );
        assert!(
            late.is_some_and(|n| n > 0),
            "{label}: round {round}: the loop never ran"
        );
        assert_eq!(
            size("late.txt"),
            late,
            "{label}: round {round}: the sandbox wrote on after the run returned"
        );
        std::fs::remove_file(p.join("late.txt")).expect("rm late.txt");
    }
    ok(a, &["daemon", "stop"]);
    assert_nothing_left(a, label);
}

crate::rootful_and_rootless!(
    a_warm_runs_leftovers_end_before_the_way_back_rootful,
    a_warm_runs_leftovers_end_before_the_way_back_rootless,
    leftovers_end_before_the_way_back
);

/// Root-run members are primed with the pool's last claim's overlay workspace (the member's
/// stub opens and idmaps the project, its parked helper builds the overlay, before any claim);
/// a claim takes it only while the project directory is still the one it was built from, and
/// sees the project as it is at the claim: a file added since is there, a protected path
/// made since is read-only, nothing of the claim before is in it. A directory put in the
/// project's place since is what the claim attaches (attack: the primed overlay of the
/// directory that was there, shown to the claim). Rootless members are never primed.
fn primed_workspaces(a: &Airlock, label: &str) {
    use common::work::{give, write};
    let _guard = DaemonGuard(a);
    let p = git_project(a);
    let rootful = a.user.is_none();
    let mut start = a.command(&["daemon", "start", "--size", "1", "--net", "off", "--wait"]);
    start.current_dir("/");
    let out = common::run_with_deadline(start, None, Duration::from_secs(120));
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    let timed = |script: &str| {
        let out = a.run_with_env(
            &[("AIRLOCK_TIMING", "1")],
            &["run", "--net", "off", "--", "sh", "-c", script],
        );
        warm(&out, label);
        out
    };
    let primed = |o: &common::Outcome| o.stderr.contains("attach: parked helper answered (primed)");
    let ahead = |o: &common::Outcome| o.stderr.contains("attach: sources sent ahead (primed)");
    let prime_dir = a.state_dir().join("pool/prime");

    // The first claim's member started before any claim said which workspace.
    let out = timed("echo first > first.txt; cat README");
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    assert!(!primed(&out), "{label}: {}", out.describe());
    assert_eq!(prime_dir.exists(), rootful, "{label}: the pool's prime");
    // `daemon status` says what new members are primed with.
    let primed_with = pool0(&status(a))["primed"].clone();
    if rootful {
        assert_eq!(primed_with, p.display().to_string(), "{label}");
        let text = ok(a, &["daemon", "status"]);
        assert!(
            text.stdout.contains(&format!(
                "new members primed with the workspace of {}",
                p.display()
            )),
            "{label}: {}",
            text.describe()
        );
    } else {
        assert!(primed_with.is_null(), "{label}: {primed_with}");
    }

    // Added on the host since the next member was primed: a file, and a protected path.
    wait_ready(a, 1, label);
    write(&p.join("late.txt"), "late\n");
    write(&p.join(".vscode/settings.json"), "{}\n");
    give(a, &p);
    let out = timed(
        "cat late.txt; test -e first.txt && echo LEAK; (echo evil > .vscode/settings.json); echo rc=$?",
    );
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    assert_eq!(primed(&out), rootful, "{label}: {}", out.describe());
    // Its job went to the helper through the stub, right behind the request.
    assert_eq!(ahead(&out), rootful, "{label}: {}", out.describe());
    assert_eq!(out.stdout, "late\nrc=2\n", "{label}: {}", out.describe());
    assert!(
        out.stderr.contains("Read-only file system"),
        "{label}: {}",
        out.describe()
    );
    assert_eq!(
        std::fs::read_to_string(p.join(".vscode/settings.json"))
            .ok()
            .as_deref(),
        Some("{}\n"),
        "{label}"
    );

    // Another directory in the project's place since the next member was primed.
    wait_ready(a, 1, label);
    let away = a.dir.join("moved-away");
    std::fs::rename(&p, &away).expect("move the project away");
    write(&p.join("NEW"), "new\n");
    give(a, &p);
    let out = timed("ls -A; cat NEW");
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    assert!(!primed(&out), "{label}: {}", out.describe());
    // The job sent ahead named the project's path: the helper refused it all the same.
    assert_eq!(ahead(&out), rootful, "{label}: {}", out.describe());
    assert_eq!(
        out.stderr.contains("attach: parked helper answered"),
        rootful,
        "{label}: {}",
        out.describe()
    );
    assert_eq!(out.stdout, "NEW\nnew\n", "{label}: {}", out.describe());
    std::fs::remove_dir_all(&p).expect("rm the stand-in");
    std::fs::rename(&away, &p).expect("move the project back");

    ok(a, &["daemon", "stop"]);
    assert!(!prime_dir.exists(), "{label}: the pool's prime left");
    assert_nothing_left(a, label);
}

crate::rootful_and_rootless!(
    a_primed_workspace_is_the_project_as_it_is_at_the_claim_rootful,
    a_primed_workspace_is_the_project_as_it_is_at_the_claim_rootless,
    primed_workspaces
);

crate::rootful_and_rootless!(
    overlay_and_bind_workspaces_are_attached_at_claim_rootful,
    overlay_and_bind_workspaces_are_attached_at_claim_rootless,
    workspaces_at_claim
);

/// The memory limit of the cgroup a claimed member's command runs in, read on the host while
/// it runs (the command sleeps); and the member it claimed.
fn claimed_memory_limit(a: &Airlock, extra: &[&str], label: &str) -> (String, Option<u64>) {
    let (mut child, member, mut stderr) = spawn_warm(a, extra, &["sleep", "3"]);
    let file = |d: &Path| {
        ["memory.max", "memory.limit_in_bytes"]
            .iter()
            .map(|f| d.join(f))
            .find(|f| f.exists())
    };
    let mut limit = None;
    wait_until(Duration::from_secs(2), || {
        limit = cgroups_named(&format!("{member}."))
            .iter()
            .filter_map(|d| file(d))
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .find_map(|s| s.trim().parse::<u64>().ok());
        limit.is_some()
    });
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    let status = child.wait().expect("wait");
    assert!(status.success(), "{label}: {status}: {rest}");
    (member, limit)
}

/// Limits are bound at claim: a run with `--memory` claims a member of a pool started without
/// it, and its command's cgroup has that limit; the next claim of the same pool without it
/// does not; the claims' cgroups are gone afterwards.
#[test]
fn a_claim_gets_its_own_limits() {
    if !e2e("a_claim_gets_its_own_limits") {
        return;
    }
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    start_pool(&a, "2", &["--workspace", "none", "--net", "off"]);
    let (m1, limit) = claimed_memory_limit(&a, &["--memory", "48M", "--pids", "64"], "--memory");
    assert_eq!(limit, Some(48 << 20), "the claim's memory limit");
    // Removed by the member's supervisor once the run handed its release to the daemon.
    let pids = || -> Vec<String> {
        cgroups_named(&format!("{m1}."))
            .iter()
            .map(|d| d.join("pids.max"))
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(5), || pids().is_empty()),
        "cgroup left after the run: {:?}",
        pids()
    );
    wait_ready(&a, 2, "limits");
    let (m2, other) = claimed_memory_limit(&a, &[], "default");
    assert_ne!(m1, m2);
    assert_ne!(
        other,
        Some(48 << 20),
        "another claim got the first one's limit"
    );
    assert_eq!(pool0(&status(&a))["hits"], 2, "{}", status(&a));
    // What limits a member can hold, a claim reads from the layout the daemon published at its
    // start (the members' cgroups are under it), not from its own cgroup: a layout without
    // controllers there means a limit is started cold, as on a host without them.
    let published = a.state_dir().join("pool/cgroup-layout.json");
    let layout = std::fs::read_to_string(&published).expect("the daemon's published layout");
    assert!(
        layout.starts_with("{\"V1\"") || layout.starts_with("{\"V2\""),
        "{layout}"
    );
    std::fs::write(&published, "\"None\"").expect("rewrite the layout");
    wait_ready(&a, 2, "limits");
    let out = a.run(&[&RUN_NONE_OFF[..], &["--memory", "48M", "--", "true"]].concat());
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(
        claimed(&out).is_none(),
        "claimed by a limit the published layout cannot hold: {}",
        out.stderr
    );
    ok(&a, &["daemon", "stop"]);
    assert_nothing_left(&a, "limits");
}

/// The pids in a cgroup directory.
fn procs_in(d: &Path) -> Vec<i32> {
    std::fs::read_to_string(d.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// `procs` (a member's cgroup before its claim) are its stub, the one child the stub parked
/// for the claim (in the member's pid namespace) and, root-run, the workspace helper it parked
/// (in the stub's): the stub's pid.
fn stub_and_parked(procs: &[i32]) -> Option<i32> {
    let stub = *procs
        .iter()
        .find(|p| procs.iter().all(|q| q == *p || ppid(*q) == Some(**p)))?;
    let (inside, outside): (Vec<i32>, Vec<i32>) = procs
        .iter()
        .filter(|p| **p != stub)
        .partition(|p| ns_of(**p, "pid") != ns_of(stub, "pid"));
    (inside.len() == 1 && outside.len() <= 1).then_some(stub)
}

/// The children of process `pid`.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn ns_of(pid: i32, ns: &str) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok()
}

/// A field of /proc/PID/status ("" when the process is gone).
fn status_field(pid: i32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn ppid(pid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// No cgroup migration on the claim path (docs/design/warm-pool.md, "The exec stub"): each
/// ready member's cgroup exists before any claim and holds one process, its exec stub (not
/// PID 1); a claim with `--memory 48M` gets that limit in that cgroup and its command is the
/// stub's child, in it; the claimed stub's socket is gone while the command runs (nobody
/// reaches it again), and the other member's stub socket is not visible from inside the
/// sandbox; afterwards the stub and the claim's cgroup are gone.
/// A spawned warm run's member, from its `warm start` line on stderr (taken from `child`;
/// keep the reader: the run's later writes to stderr need it open).
fn warm_member(
    child: &mut std::process::Child,
) -> (String, std::io::BufReader<std::process::ChildStderr>) {
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let (mut line, mut seen) = (String::new(), String::new());
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).expect("read");
        seen.push_str(&line);
        if n == 0 {
            let _ = child.kill();
            panic!("not warm: {seen}");
        }
        if line.contains("warm start") {
            return (line.split(", ").nth(1).expect("member").to_string(), stderr);
        }
    }
}

/// A `run --workspace none --net off EXTRA -- COMMAND…` spawned with its stdout and stderr
/// piped, and the member it claimed ([`warm_member`]: keep the reader).
fn spawn_warm(
    a: &Airlock,
    extra: &[&str],
    command: &[&str],
) -> (
    std::process::Child,
    String,
    std::io::BufReader<std::process::ChildStderr>,
) {
    let mut cmd = a.command(&[&RUN_NONE_OFF[..], extra, &["--"], command].concat());
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn airlock");
    let (member, stderr) = warm_member(&mut child);
    (child, member, stderr)
}

#[test]
fn a_claims_command_is_forked_in_its_cgroup_by_the_members_stub() {
    if !e2e("a_claims_command_is_forked_in_its_cgroup_by_the_members_stub") {
        return;
    }
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    start_pool(&a, "2", &["--workspace", "none", "--net", "off"]);
    wait_ready(&a, 2, "stub");
    let mut stubs = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(members_dir(&a))
        .expect("members")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let dirs = cgroups_named(&format!("{name}."));
        assert!(
            dirs.iter()
                .any(|d| d.join("memory.limit_in_bytes").exists() || d.join("memory.max").exists()),
            "{name}: no memory cgroup before the claim: {dirs:?}"
        );
        let mut procs: Vec<i32> = dirs.iter().flat_map(|d| procs_in(d)).collect();
        procs.sort_unstable();
        procs.dedup();
        // The stub and the child it parked for the claim, nothing else.
        let stub = stub_and_parked(&procs)
            .unwrap_or_else(|| panic!("{name}: not the stub and its child in {dirs:?}: {procs:?}"));
        let pid1 = std::fs::read_to_string(e.path().join("pid1")).expect("pid1");
        let pid1 = pid1.split_whitespace().next().expect("pid1").to_string();
        assert!(
            !procs.iter().any(|p| p.to_string() == pid1),
            "{name}: PID 1 in {procs:?}"
        );
        assert!(
            e.path().join("stub.sock").exists(),
            "{name}: no stub socket"
        );
        stubs.insert(name, (stub, e.path().join("stub.sock")));
    }
    assert_eq!(stubs.len(), 2, "{stubs:?}");
    let probe: String = stubs
        .values()
        .map(|(_, s)| format!("test -e {0} && echo reachable {0}; ", s.display()))
        .collect();
    let script = format!("{probe}echo probed; sleep 3");
    let (child, member, _stderr) = spawn_warm(&a, &["--memory", "48M"], &["sh", "-c", &script]);
    let (stub, sock) = stubs.get(&member).cloned().expect("a member seen ready");
    let dirs = cgroups_named(&format!("{member}."));
    let mut command = None;
    wait_until(Duration::from_secs(2), || {
        command = dirs
            .iter()
            .flat_map(|d| procs_in(d))
            .find(|p| *p != stub && ppid(*p) == Some(stub));
        command.is_some()
    });
    let command = command.unwrap_or_else(|| {
        panic!(
            "no child of the stub {stub} in {dirs:?}: {:?}",
            dirs.iter().map(|d| procs_in(d)).collect::<Vec<_>>()
        )
    });
    for d in &dirs {
        let procs = procs_in(d);
        assert!(
            procs.contains(&stub) && procs.contains(&command),
            "{d:?}: {procs:?}"
        );
    }
    let limit = dirs
        .iter()
        .flat_map(|d| ["memory.limit_in_bytes", "memory.max"].map(|f| d.join(f)))
        .find_map(|f| std::fs::read_to_string(f).ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    assert_eq!(limit, Some(48 << 20), "the claim's memory limit");
    // The warm-start line comes before the claimer connects to the stub (the parked child,
    // the stub's child already, is seen at once): its socket goes once the stub took the claim.
    assert!(
        wait_until(Duration::from_secs(2), || !sock.exists()),
        "the claimed stub's socket is still there"
    );
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_err());
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}: {stdout}", out.status);
    assert!(stdout.contains("probed"), "{stdout}");
    assert!(
        !stdout.contains("reachable"),
        "a stub socket inside: {stdout}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !Path::new(&format!(
            "/proc/{stub}"
        ))
        .exists()),
        "the claimed member's stub is still there"
    );
    for d in &dirs {
        assert!(
            wait_until(Duration::from_secs(5), || !d.exists()),
            "{d:?} left after the claim"
        );
    }
    ok(&a, &["daemon", "stop"]);
    assert_nothing_left(&a, "stub");
}

/// The unclaimed members' `stub.pid` files, by member name.
fn stub_pids(a: &Airlock) -> std::collections::BTreeMap<String, PathBuf> {
    std::fs::read_dir(members_dir(a))
        .expect("members")
        .flatten()
        .filter(|e| e.path().join("stub.sock").exists())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.path().join("stub.pid"),
            )
        })
        .collect()
}

/// What `airlock ARGS` wrote to stderr, one entry per write(2) (stderr is one end of a
/// SOCK_SEQPACKET pair, which keeps write boundaries); asserts it succeeded.
fn stderr_writes(a: &Airlock, args: &[&str]) -> Vec<String> {
    use std::os::fd::FromRawFd;
    let mut pair = [0; 2];
    // SAFETY: socketpair(2) fills two descriptors, owned just below.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, pair.as_mut_ptr()) };
    assert_eq!(r, 0, "socketpair");
    // SAFETY: fresh descriptors from socketpair, owned by nothing else.
    let (ours, theirs) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(pair[0]),
            std::os::fd::OwnedFd::from_raw_fd(pair[1]),
        )
    };
    let status = a
        .command(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(theirs))
        .status()
        .expect("run airlock");
    assert!(status.success(), "{args:?}: {status}");
    let mut writes = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: recv(2) into our buffer; MSG_DONTWAIT: everything was written already.
        let n = unsafe {
            libc::recv(
                std::os::fd::AsRawFd::as_raw_fd(&ours),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            return writes;
        }
        writes.push(String::from_utf8_lossy(&buf[..n as usize]).into_owned());
    }
}

/// `airlock ARGS` with its first `sendmsg` — a claim's request to its member's stub, right
/// after the connection — held back 300 ms (strace's fault injection): a claimer that stalls
/// between its `connect` and its request, as on a loaded machine.
fn run_stalled_after_connect(a: &Airlock, args: &[&str]) -> common::Outcome {
    let exe = a.exe.display().to_string();
    let mut full = vec![
        "-o",
        "/dev/null",
        "-e",
        "inject=sendmsg:delay_enter=300000:when=1",
        exe.as_str(),
    ];
    full.extend_from_slice(args);
    let mut cmd = a.command_with("strace", &full);
    cmd.env("AIRLOCK_TIMING", "1");
    common::run_with_deadline(cmd, None, common::DEADLINE)
}

/// One round trip to a member's exec stub (docs/design/warm-pool.md, "The exec stub"): the
/// supervisor publishes the stub's pid (`stub.pid`, the one process in the member's cgroup),
/// the claimer takes its pidfd before connecting and sends the command with the connection,
/// then checks the stub's hello names that pid — a published pid that is not the stub's fails
/// the run and leaves nothing behind; a member without `stub.pid` (an older supervisor's) is
/// still claimed through its stub, hello first; the claim's exit status comes back either way.
/// The `warm start` notice reaches stderr in one write.
fn stub_round_trip(a: &Airlock, label: &str) {
    let _guard = DaemonGuard(a);
    let start = [
        "daemon",
        "start",
        "--size",
        "2",
        "--workspace",
        "none",
        "--net",
        "off",
        "--wait",
    ];
    ok(a, &start);
    wait_ready(a, 2, label);
    for (name, file) in stub_pids(a) {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{label}: {name}: no stub.pid: {e}"));
        // Its pid, and that it takes the request before the claim is bound.
        assert_eq!(text.lines().nth(1), Some("go"), "{label}: {name}: {text:?}");
        let pid: i32 = text
            .lines()
            .next()
            .unwrap_or_default()
            .parse()
            .expect("a pid");
        let mut procs: Vec<i32> = cgroups_named(&format!("{name}."))
            .iter()
            .flat_map(|d| procs_in(d))
            .collect();
        procs.dedup();
        if procs.is_empty() {
            // No cgroup (rootless without delegation): a fork of the member's supervisor.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            assert!(
                String::from_utf8_lossy(&cmdline).contains(&name),
                "{label}: {name}: {pid} is not its stub"
            );
        } else {
            procs.sort_unstable();
            procs.dedup();
            assert_eq!(
                stub_and_parked(&procs),
                Some(pid),
                "{label}: {name}: the stub is not {pid}: {procs:?}"
            );
        }
    }
    assert_eq!(stub_pids(a).len(), 2, "{label}");
    let run = |code: &str| {
        a.run(&[
            "run",
            "--workspace",
            "none",
            "--net",
            "off",
            "--",
            "sh",
            "-c",
            &format!("echo ran-$((40+2)); exit {code}"),
        ])
    };
    let out = run("7");
    assert_eq!(out.code(), 7, "{label}: {}", out.describe());
    assert!(claimed(&out).is_some(), "{label}: {}", out.describe());
    assert!(out.stdout.contains("ran-42"), "{label}: {}", out.describe());

    // The warm start's notice is one write (stderr a SOCK_SEQPACKET: one packet per write).
    wait_ready(a, 2, label);
    let writes = stderr_writes(
        a,
        &["run", "--workspace", "none", "--net", "off", "--", "true"],
    );
    let notice: Vec<&String> = writes.iter().filter(|w| w.contains("warm")).collect();
    assert!(
        notice.len() == 1
            && notice[0].starts_with("airlock: warm start (")
            && notice[0].ends_with(")\n"),
        "{label}: the notice in pieces: {writes:?}"
    );

    // A claimer that stalls between its connect and its request (strace holds its first
    // `sendmsg`, the request, 300 ms): the quiet stub says the hello it would say to an older
    // claimer; the claim still waits for its command and gets its status.
    wait_ready(a, 2, label);
    let out = run_stalled_after_connect(
        a,
        &[
            "run",
            "--workspace",
            "none",
            "--net",
            "off",
            "--",
            "sh",
            "-c",
            "sleep 0.3; echo ran-late; exit 7",
        ],
    );
    assert_eq!(out.code(), 7, "{label}: {}", out.describe());
    assert!(claimed(&out).is_some(), "{label}: {}", out.describe());
    assert_eq!(out.stdout, "ran-late\n", "{label}: {}", out.describe());

    // A published pid that is another live process (this test's): refused, not signalled —
    // from a stub that takes the request early (the command never starts: its go pipe
    // closes unwritten) or not.
    for published in ["{}\ngo\n", "{}\n"] {
        wait_ready(a, 2, label);
        for file in stub_pids(a).values() {
            let text = published.replace("{}", &std::process::id().to_string());
            std::fs::write(file, text).expect("write stub.pid");
        }
        let out = run("0");
        assert_ne!(out.code(), 0, "{label}: {published:?}: {}", out.describe());
        assert!(
            out.stderr.contains("not the one its supervisor published"),
            "{label}: {published:?}: {}",
            out.describe()
        );
        if published.contains("go") {
            assert!(
                !out.stdout.contains("ran-42"),
                "{label}: the command ran: {}",
                out.describe()
            );
        }
    }

    // No published pid: the stub's hello first, as before.
    ok(a, &["daemon", "stop"]);
    ok(a, &start);
    wait_ready(a, 2, label);
    for file in stub_pids(a).values() {
        std::fs::remove_file(file).expect("remove stub.pid");
    }
    let out = run("5");
    assert_eq!(out.code(), 5, "{label}: {}", out.describe());
    assert!(claimed(&out).is_some(), "{label}: {}", out.describe());
    assert!(out.stdout.contains("ran-42"), "{label}: {}", out.describe());
    ok(a, &["daemon", "stop"]);
    assert_nothing_left(a, label);
}

crate::rootful_and_rootless!(
    a_claim_reaches_its_stub_in_one_round_trip_rootful,
    a_claim_reaches_its_stub_in_one_round_trip_rootless,
    stub_round_trip
);

/// A claim's limits go into the member's own cgroup — the one its stub and command are in —
/// even when the claimer runs in another cgroup than the daemon (whose parent directories
/// follow the process's own cgroup on a v1 host): the command there has `--memory 48M`. The
/// claimer used to write them under its own cgroup's `airlock/` and the command ran with
/// none.
#[test]
fn a_claims_limits_hold_when_the_claimer_is_in_another_cgroup() {
    if !e2e("a_claims_limits_hold_when_the_claimer_is_in_another_cgroup") {
        return;
    }
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    start_pool(&a, "2", &["--workspace", "none", "--net", "off"]);
    // The claimer's own cgroup: a fresh one in every v1 hierarchy with a limit airlock sets
    // (on a v2 host: one under the root).
    let tag = format!("airlock-test-{}", common::random_hex());
    let v1 = Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists();
    let homes: Vec<PathBuf> = if v1 {
        ["memory", "pids"]
            .iter()
            .map(|c| Path::new("/sys/fs/cgroup").join(c))
            .filter(|p| p.is_dir())
            .map(|p| p.join(&tag))
            .collect()
    } else {
        vec![Path::new("/sys/fs/cgroup").join(&tag)]
    };
    for h in &homes {
        std::fs::create_dir(h).expect("make the claimer's cgroup");
    }
    struct Gone(Vec<PathBuf>);
    impl Drop for Gone {
        fn drop(&mut self) {
            for h in &self.0 {
                let _ = std::fs::remove_dir(h.join("airlock"));
                let _ = std::fs::remove_dir(h);
            }
        }
    }
    let _gone = Gone(homes.clone());
    let mut cmd = a.command(&[
        "run",
        "--workspace",
        "none",
        "--net",
        "off",
        "--memory",
        "48M",
        "--",
        "sleep",
        "3",
    ]);
    let procs: Vec<PathBuf> = homes.iter().map(|h| h.join("cgroup.procs")).collect();
    // SAFETY: pre_exec runs in the forked child before exec; it only writes files.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            for p in &procs {
                std::fs::write(p, b"0")?;
            }
            Ok(())
        });
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn airlock");
    let (member, _stderr) = warm_member(&mut child);
    // The cgroup the command runs in (the stub's child), and its memory limit.
    let mut limit = None;
    wait_until(Duration::from_secs(2), || {
        limit = cgroups_named(&format!("{member}."))
            .iter()
            .filter(|d| procs_in(d).len() >= 2)
            .flat_map(|d| ["memory.max", "memory.limit_in_bytes"].map(|f| d.join(f)))
            .find_map(|f| std::fs::read_to_string(f).ok())
            .and_then(|s| s.trim().parse::<u64>().ok());
        limit == Some(48 << 20)
    });
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
    assert_eq!(
        limit,
        Some(48 << 20),
        "the command's cgroup does not have the claim's limit"
    );
    ok(&a, &["daemon", "stop"]);
    assert_nothing_left(&a, "another cgroup");
}

// ---------------------------------------------------------------------------------------------
// Injected secrets bound at claim

/// The headers the fake internet received for requests to `path`.
fn received(inet: &Internet, path: &str) -> Vec<serde_json::Value> {
    inet.model_requests()
        .into_iter()
        .filter(|r| r["path"] == path)
        .map(|r| r["headers"].clone())
        .collect()
}

/// Every regular file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file()
                && std::fs::read(e.path())
                    .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                out.push(e.path());
            }
        }
    }
    out
}

/// A warm run with a secret injected into requests to api.test: the member's supervisor gets
/// the value and makes the interception CA at claim (over its policy socket), the sandbox
/// holds only the placeholder ($KEY, /run/secrets/KEY) and trusts the CA through the same
/// bundle and variables a cold start gives; the server gets the real value; the placeholder
/// in plain HTTP elsewhere is blocked, a Host/SNI mismatch refused. Two claims at once, with
/// different keys, each reach the server with their own key only, through their own CA; no
/// value is ever in a file under the state directory.
fn injected_secrets_at_claim(a: &Airlock, label: &str) {
    const CA: &str = "/etc/airlock-test-ca.pem";
    let inet = Internet::start(&["api.test", "other.test"], &[]);
    let _guard = DaemonGuard(a);
    let cert = a.dir.join("inet-ca.pem");
    std::fs::copy(inet.cert(), &cert).expect("copy cert");
    common::set_mode(&cert, 0o644);
    let cert_s = cert.display().to_string();
    let ro = format!("{cert_s}:{CA}");
    let dns = [("AIRLOCK_DNS_UPSTREAM", inet.dns.as_str())];
    let start = a.run_with_env(
        &dns,
        &[
            "daemon",
            "start",
            "--workspace",
            "none",
            "--size",
            "2",
            "--wait",
            "--allow",
            "other.test",
            "--ro",
            &ro,
        ],
    );
    assert_eq!(start.code(), 0, "{label}: {}", start.describe());
    let run = |key: &str, script: &str| {
        a.run_with_env(
            &[
                ("AIRLOCK_DNS_UPSTREAM", inet.dns.as_str()),
                ("AIRLOCK_UPSTREAM_CA", cert_s.as_str()),
                ("HOST_KEY", key),
            ],
            &[
                "run",
                "--workspace",
                "none",
                "--allow",
                "api.test",
                "--allow",
                "other.test",
                "--ro",
                &ro,
                "--secret",
                "KEY=env:HOST_KEY;hosts=api.test;header=x-api-key",
                "--",
                "sh",
                "-c",
                script,
            ],
        )
    };
    const REAL: &str = "sk-warm-real-value-0123456789abcdef";
    let fmt = "-o /dev/null -w '%{http_code}\\n'";
    let script = format!(
        "echo \"env=$KEY\"; echo \"file=$(cat /run/secrets/KEY)\"; \
         echo \"bundle=$SSL_CERT_FILE $NODE_EXTRA_CA_CERTS $CURL_CA_BUNDLE\"; \
         curl -sS --max-time 10 -H \"x-api-key: $KEY\" https://api.test/warm; \
         curl -sS --max-time 10 {fmt} -H \"x-leak: $KEY\" http://other.test/leak; \
         curl -sS --max-time 10 {fmt} -H 'Host: other.test' -H \"x-api-key: $KEY\" https://api.test/fronted; \
         curl -sS --max-time 10 --cacert {CA} {fmt} https://other.test/plain"
    );
    let out = run(REAL, &script);
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    warm(&out, label);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let ph = lines[0].strip_prefix("env=").unwrap_or_default();
    assert!(
        ph.starts_with("airlock-placeholder-"),
        "{label}: {}",
        out.describe()
    );
    assert_eq!(
        lines[1..],
        [
            format!("file={ph}").as_str(),
            "bundle=/run/airlock-tls/ca-bundle.pem /run/airlock-tls/ca-bundle.pem /run/airlock-tls/ca-bundle.pem",
            "hello from api.test /warm",
            "403",
            "421",
            "200",
        ],
        "{label}: {}",
        out.describe()
    );
    assert_eq!(received(&inet, "/warm").len(), 1, "{label}");
    assert_eq!(received(&inet, "/warm")[0]["x-api-key"], REAL, "{label}");
    assert!(received(&inet, "/leak").is_empty() && received(&inet, "/fronted").is_empty());
    assert!(!out.stdout.contains(REAL) && !out.stderr.contains(REAL));

    // Two claims at once, each with its own key: each sees its own placeholder and CA, and
    // the server gets each one's own value.
    wait_ready(a, 2, label);
    let keys = [
        "sk-claim-one-aaaaaaaaaaaaaaaa",
        "sk-claim-two-bbbbbbbbbbbbbbbb",
    ];
    let outs: Vec<common::Outcome> = std::thread::scope(|s| {
        let hs: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let script = format!(
                    "echo \"$KEY\"; sha256sum /run/airlock-tls/ca-bundle.pem | cut -c1-64; \
                     curl -sS --max-time 10 -o /dev/null -H \"x-api-key: $KEY\" https://api.test/claim{i}; \
                     sleep 3; \
                     curl -sS --max-time 10 -o /dev/null -H \"x-api-key: $KEY\" https://api.test/again{i}"
                );
                let run = &run;
                s.spawn(move || run(k, &script))
            })
            .collect();
        // While both run: no value in any file of the state directory.
        assert!(
            wait_until(Duration::from_secs(20), || pool0(&status(a))["claimed"]
                == 2),
            "{label}: {}",
            status(a)
        );
        std::thread::sleep(Duration::from_millis(500));
        for k in keys.iter().chain([&REAL]) {
            let found = files_containing(&a.state_dir(), k);
            assert!(found.is_empty(), "{label}: {k} in {found:?}");
        }
        hs.into_iter().map(|h| h.join().expect("run")).collect()
    });
    let mut seen = BTreeSet::new();
    for (i, (out, key)) in outs.iter().zip(keys).enumerate() {
        assert_eq!(out.code(), 0, "{label} {i}: {}", out.describe());
        let member = warm(out, label);
        let l: Vec<&str> = out.stdout.lines().collect();
        assert!(l[0].starts_with("airlock-placeholder-"), "{label}: {l:?}");
        assert!(
            seen.insert(member) && seen.insert(l[0].to_string()) && seen.insert(l[1].to_string()),
            "{label}: two claims share a member, placeholder or CA: {outs:?}"
        );
        for p in [format!("/claim{i}"), format!("/again{i}")] {
            let got = received(&inet, &p);
            assert_eq!(got.len(), 1, "{label}: {p}");
            assert_eq!(got[0]["x-api-key"], key, "{label}: {p}");
        }
        assert!(!out.stdout.contains(key) && !out.stderr.contains(key));
    }
    ok(a, &["daemon", "stop"]);
    assert_nothing_left(a, label);
}

crate::rootful_and_rootless!(
    injected_secrets_are_bound_at_claim_rootful,
    injected_secrets_are_bound_at_claim_rootless,
    injected_secrets_at_claim
);

// ---------------------------------------------------------------------------------------------
// Home files bound at claim

/// `[home_files]` (immutable, link, seed) in a warm run: staged by the claimer as a cold run
/// stages them and bound in the member's home at claim — the pool was made before the files
/// were configured (they are not in its key), an immutable copy is the one at the claim (not
/// at the member's start), link is the host file, seed is the run's own writable copy; the
/// run's staging goes when it ends. A path escaping the home is refused as a cold run refuses
/// it, and costs the pool nothing.
fn home_files_at_claim(a: &Airlock, label: &str) {
    use common::work::{give, write};
    let _guard = DaemonGuard(a);
    start_pool(a, "1", &["--workspace", "none", "--net", "off"]);
    let files = a.dir.join("hostfiles");
    write(&files.join("imm.txt"), "immutable v1\n");
    write(&files.join("link.txt"), "link v1\n");
    write(&files.join("seed.txt"), "seed v1\n");
    give(a, &files);
    let config = a.dir.join("home/.config/airlock/config.toml");
    let entries = |extra: &str| {
        format!(
            "[home_files.\"cfg/imm.txt\"]\nsource = \"{f}/imm.txt\"\nmode = \"immutable\"\n\
             [home_files.\"cfg/link.txt\"]\nsource = \"{f}/link.txt\"\nmode = \"link\"\n\
             [home_files.\"cfg/seed.txt\"]\nsource = \"{f}/seed.txt\"\nmode = \"seed\"\n{extra}",
            f = files.display()
        )
    };
    write(&config, &entries(""));
    give(a, &a.dir.join("home"));
    let script = "cat ~/cfg/imm.txt ~/cfg/link.txt ~/cfg/seed.txt; \
                  echo x > ~/cfg/imm.txt 2>/dev/null || echo imm-readonly; \
                  echo x > ~/cfg/link.txt 2>/dev/null || echo link-readonly; \
                  echo changed > ~/cfg/seed.txt && cat ~/cfg/seed.txt; \
                  stat -c '%U %a' ~/cfg/seed.txt";
    for v in ["v1", "v2"] {
        write(&files.join("imm.txt"), &format!("immutable {v}\n"));
        let out = a.run(&[
            "run",
            "--workspace",
            "none",
            "--net",
            "off",
            "--",
            "sh",
            "-c",
            script,
        ]);
        assert_eq!(out.code(), 0, "{label} {v}: {}", out.describe());
        warm(&out, label);
        assert_eq!(
            out.stdout,
            format!(
                "immutable {v}\nlink v1\nseed v1\nimm-readonly\nlink-readonly\nchanged\nagent 644\n"
            ),
            "{label} {v}: {}",
            out.describe()
        );
        assert_eq!(
            std::fs::read_to_string(files.join("seed.txt")).expect("seed"),
            "seed v1\n",
            "{label}: the seed is the run's copy"
        );
        let left: Vec<_> = std::fs::read_dir(a.state_dir().join("home-files"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{label}: staged copies left: {left:?}");
        wait_ready(a, 1, label);
    }
    // Refused as cold (the configuration's own check), before any claim.
    write(
        &config,
        &entries("[home_files.\"../escape.txt\"]\nsource = \"/etc/hostname\"\n"),
    );
    give(a, &a.dir.join("home"));
    let out = a.run(&["run", "--workspace", "none", "--net", "off", "--", "true"]);
    assert_eq!(out.code(), 2, "{label}: {}", out.describe());
    assert!(
        out.stderr.contains("home_files") && claimed(&out).is_none(),
        "{label}: {}",
        out.describe()
    );
    assert_eq!(pool0(&status(a))["ready"], 1, "{label}: {}", status(a));
    ok(a, &["daemon", "stop"]);
    assert_nothing_left(a, label);
}

crate::rootful_and_rootless!(
    home_files_are_bound_at_claim_rootful,
    home_files_are_bound_at_claim_rootless,
    home_files_at_claim
);

// ---------------------------------------------------------------------------------------------
// A chosen hostname or name bound at claim

/// `--hostname H` (or `--name N`, whose default hostname is N) holds in a warm run as in a cold
/// one: `hostname` and `/etc/hostname` say it, not the member's name. (Before: the key left the
/// hostname out as "bound at claim", and the claim never bound it.)
fn chosen_hostname(a: &Airlock, label: &str) {
    let _guard = DaemonGuard(a);
    start_pool(a, "2", &["--workspace", "none", "--net", "off"]);
    for (flag, value) in [("--hostname", "chosen-host"), ("--name", "named-run")] {
        let out = ok(
            a,
            &[
                "run",
                "--workspace",
                "none",
                "--net",
                "off",
                flag,
                value,
                "--",
                "sh",
                "-c",
                "hostname; cat /etc/hostname; grep -c \"$(hostname)\" /etc/hosts",
            ],
        );
        assert!(
            claimed(&out).is_some(),
            "{label}: {flag}: not warm: {}",
            out.describe()
        );
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(
            lines[..2],
            [value, value],
            "{label}: {flag}: {}",
            out.describe()
        );
        assert_ne!(lines.get(2), Some(&"0"), "{label}: {flag}: /etc/hosts");
    }
    ok(a, &["daemon", "stop"]);
}

crate::rootful_and_rootless!(
    a_chosen_hostname_or_name_is_bound_at_claim_rootful,
    a_chosen_hostname_or_name_is_bound_at_claim_rootless,
    chosen_hostname
);

/// The child a member's stub parks for its claim (docs/design/warm-pool.md, "The parked
/// child"): before any claim each ready member's stub has exactly one child, already in the
/// member's namespaces (user, mount, pid, network, ipc, uts) and cgroup while the stub itself
/// is in none of them, under the command's seccomp filter already but nothing else of a
/// command's applied yet (no no_new_privs);
/// it is not dumpable, so a process of its own uid without capabilities in the host's user
/// namespace — more than anything inside the sandbox has — can neither read its /proc files
/// nor attach to it; the claim's command is that very process (the same pid, outside and
/// inside), run with seccomp, no_new_privs, no capabilities and the claim's memory limit; the
/// other member keeps its own; nothing is left afterwards.
fn parked_child(a: &Airlock, label: &str) {
    let _guard = DaemonGuard(a);
    start_pool(a, "2", &["--workspace", "none", "--net", "off"]);
    wait_ready(a, 2, label);
    let mut parked = std::collections::BTreeMap::new();
    for (name, file) in stub_pids(a) {
        let stub: i32 = std::fs::read_to_string(&file)
            .expect("stub.pid")
            .lines()
            .next()
            .unwrap_or_default()
            .parse()
            .expect("a pid");
        let pid1: i32 = std::fs::read_to_string(members_dir(a).join(&name).join("pid1"))
            .expect("pid1")
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("PID 1");
        let kids = children(stub);
        // The parked child, in the member's pid namespace; root-run, the workspace helper the
        // stub parked too, outside it.
        let (inside, helper): (Vec<i32>, Vec<i32>) = kids
            .iter()
            .partition(|k| ns_of(**k, "pid") == ns_of(pid1, "pid"));
        assert_eq!(
            (inside.len(), helper.len()),
            (1, usize::from(label == "rootful")),
            "{label}: {name}: the stub's children {kids:?}"
        );
        let child = inside[0];
        for h in &helper {
            // In the member's user namespace (its root), a mount namespace of its own, and
            // the host's pid namespace: nothing inside the member can see or signal it.
            assert_eq!(ns_of(*h, "user"), ns_of(pid1, "user"), "{label}: {name}");
            assert_eq!(ns_of(*h, "pid"), ns_of(stub, "pid"), "{label}: {name}");
            assert_ne!(ns_of(*h, "mnt"), ns_of(pid1, "mnt"), "{label}: {name}");
            assert_ne!(ns_of(*h, "mnt"), ns_of(stub, "mnt"), "{label}: {name}");
        }
        for ns in ["user", "mnt", "pid", "net", "ipc", "uts"] {
            assert_eq!(
                ns_of(child, ns),
                ns_of(pid1, ns),
                "{label}: {name}: the parked child is not in the member's {ns} namespace"
            );
            assert!(ns_of(pid1, ns).is_some(), "{label}: {name}: {ns}");
        }
        assert_ne!(ns_of(stub, "user"), ns_of(pid1, "user"), "{label}: {name}");
        assert_ne!(ns_of(stub, "pid"), ns_of(pid1, "pid"), "{label}: {name}");
        let nspid: Vec<String> = status_field(child, "NSpid")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert_eq!(nspid.len(), 2, "{label}: {name}: NSpid {nspid:?}");
        // Its seccomp filter is on already; nothing else of a command's yet.
        assert_eq!(status_field(child, "Seccomp"), "2", "{label}: {name}");
        assert_eq!(status_field(child, "NoNewPrivs"), "0", "{label}: {name}");
        for d in cgroups_named(&format!("{name}.")) {
            assert!(
                procs_in(&d).contains(&child),
                "{label}: {name}: the parked child is not in {d:?}"
            );
        }
        // Its own uid, no capabilities: its /proc files stay closed (not dumpable).
        let uid = status_field(child, "Uid");
        let uid = uid.split_whitespace().next().expect("uid").to_string();
        let gid = status_field(child, "Gid");
        let gid = gid.split_whitespace().next().expect("gid").to_string();
        let peek = std::process::Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
                "cat",
                &format!("/proc/{child}/environ"),
            ])
            .output()
            .expect("setpriv");
        assert!(
            !peek.status.success() && String::from_utf8_lossy(&peek.stderr).contains("denied"),
            "{label}: {name}: the parked child's environ read as uid {uid}: {peek:?}"
        );
        // Control: that way, a process of the same uid without capabilities is readable.
        let mut control = std::process::Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
                "sleep",
                "5",
            ])
            .spawn()
            .expect("setpriv sleep");
        wait_until(Duration::from_secs(2), || {
            std::fs::read(format!("/proc/{}/cmdline", control.id()))
                .is_ok_and(|c| c.starts_with(b"sleep"))
        });
        let seen = std::process::Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
                "cat",
                &format!("/proc/{}/environ", control.id()),
            ])
            .output()
            .expect("setpriv");
        let _ = control.kill();
        let _ = control.wait();
        assert!(seen.status.success(), "{label}: {name}: control: {seen:?}");
        parked.insert(name, (stub, child, nspid[1].clone()));
    }
    assert_eq!(parked.len(), 2, "{label}: {parked:?}");
    let limit: &[&str] = if a.user.is_none() {
        &["--memory", "48M"]
    } else {
        &[]
    };
    let (run, member, _stderr) = spawn_warm(
        a,
        limit,
        &[
            "sh",
            "-c",
            "echo pid=$$; grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status; sleep 2",
        ],
    );
    let (stub, child, inner) = parked.get(&member).cloned().expect("a member seen ready");
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::fs::read(format!("/proc/{child}/cmdline")).is_ok_and(|c| c.starts_with(b"sh\0"))
        }),
        "{label}: the parked child {child} did not become the command"
    );
    assert_eq!(ppid(child), Some(stub), "{label}");
    if a.user.is_none() {
        let limits: Vec<u64> = cgroups_named(&format!("{member}."))
            .iter()
            .filter(|d| procs_in(d).contains(&child))
            .flat_map(|d| ["memory.limit_in_bytes", "memory.max"].map(|f| d.join(f)))
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        assert_eq!(limits, vec![48 << 20], "{label}: the claim's memory limit");
    }
    for (name, (other_stub, other, _)) in &parked {
        if *name != member {
            assert_eq!(
                ppid(*other),
                Some(*other_stub),
                "{label}: {name} lost its child"
            );
        }
    }
    let out = run.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{label}: {}: {stdout}", out.status);
    assert!(
        stdout.contains(&format!("pid={inner}\n")),
        "{label}: {stdout}"
    );
    assert!(stdout.contains("Seccomp:\t2"), "{label}: {stdout}");
    assert!(stdout.contains("NoNewPrivs:\t1"), "{label}: {stdout}");
    assert!(
        stdout.contains("CapEff:\t0000000000000000"),
        "{label}: {stdout}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !Path::new(&format!(
            "/proc/{child}"
        ))
        .exists()),
        "{label}: the command is still there"
    );
    ok(a, &["daemon", "stop"]);
    assert_nothing_left(a, label);
}

crate::rootful_and_rootless!(
    a_members_parked_child_becomes_the_claims_command_rootful,
    a_members_parked_child_becomes_the_claims_command_rootless,
    parked_child
);

/// With a daemon running, a warm run hands its release to the daemon (one datagram) and ends
/// as soon as its command's status is known: with the daemon stopped (SIGSTOP) the run still
/// returns at once, its member's PID 1 already killed, the member still recorded as claimed;
/// once the daemon continues it records the release and the hit and removes the member. A
/// release the daemon never took (stopped, then killed with SIGKILL) is the next daemon's:
/// the claimer is gone, so the member goes, and nothing is left after `daemon stop`.
#[test]
fn a_claims_release_is_handed_to_the_daemon() {
    if !e2e("a_claims_release_is_handed_to_the_daemon") {
        return;
    }
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    let start = [
        "daemon",
        "start",
        "--size",
        "1",
        "--workspace",
        "none",
        "--net",
        "off",
        "--wait",
    ];
    ok(&a, &start);
    let stop_daemon = |sig: i32| {
        let pid = common::pool::daemon_pid(&a).expect("the daemon runs");
        // SAFETY: kill(2) on this test's daemon.
        unsafe { libc::kill(pid, sig) };
        pid
    };
    let released_while_stopped = |label: &str| -> String {
        wait_ready(&a, 1, label);
        let pid1 = |m: &str| {
            std::fs::read_to_string(members_dir(&a).join(m).join("pid1"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<i32>().ok())
        };
        let before: Vec<(String, Option<i32>)> = std::fs::read_dir(members_dir(&a))
            .expect("members")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .map(|m| (m.clone(), pid1(&m)))
            .collect();
        stop_daemon(libc::SIGSTOP);
        let out = a.run(&["run", "--workspace", "none", "--net", "off", "--", "true"]);
        assert_eq!(out.code(), 0, "{label}: {}", out.describe());
        let member = claimed(&out).unwrap_or_else(|| panic!("{label}: {}", out.describe()));
        let pid = before
            .iter()
            .find(|(m, _)| *m == member)
            .and_then(|(_, p)| *p)
            .expect("the member's PID 1");
        assert!(
            wait_until(Duration::from_secs(5), || !Path::new(&format!(
                "/proc/{pid}"
            ))
            .exists()),
            "{label}: the member's PID 1 {pid} lives on"
        );
        let st = status(&a);
        assert_eq!(pool0(&st)["claimed"], 1, "{label}: {st}");
        member
    };
    let member = released_while_stopped("handed");
    assert_eq!(pool0(&status(&a))["hits"], 0, "{}", status(&a));
    stop_daemon(libc::SIGCONT);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let st = status(&a);
            pool0(&st)["claimed"] == 0 && pool0(&st)["hits"] == 1
        }),
        "the daemon did not record the release: {}",
        status(&a)
    );
    assert!(
        wait_until(Duration::from_secs(10), || !members_dir(&a)
            .join(&member)
            .exists()),
        "{member}'s folder is still there"
    );

    // The daemon never takes it: killed while stopped.
    let member = released_while_stopped("lost");
    let pid = stop_daemon(libc::SIGKILL);
    wait_until(Duration::from_secs(5), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    ok(&a, &start);
    assert!(
        wait_until(Duration::from_secs(10), || !members_dir(&a)
            .join(&member)
            .exists()),
        "{member}'s folder is still there"
    );
    ok(&a, &["daemon", "stop"]);
    assert_nothing_left(&a, "handed");
}

/// A release datagram not sent by the claimer it names (here: this test process naming a
/// running claimer) is ignored: the daemon takes a release only from its claimer, as the
/// kernel says (`SO_PASSCRED`). Before, it marked the member released and removed it under the
/// claimer's running command.
#[test]
fn a_release_not_sent_by_its_claimer_is_ignored() {
    if !e2e("a_release_not_sent_by_its_claimer_is_ignored") {
        return;
    }
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    start_pool(&a, "1", &["--workspace", "none", "--net", "off"]);
    wait_ready(&a, 1, "forged release");
    let key = pool0(&status(&a))["key"]
        .as_str()
        .expect("the pool's key")
        .to_string();
    let (child, member, _stderr) = spawn_warm(&a, &[], &["sh", "-c", "sleep 2; echo survived"]);
    let forged = format!("r {member} {} {key} 1", child.id());
    std::os::unix::net::UnixDatagram::unbound()
        .expect("socket")
        .send_to(
            forged.as_bytes(),
            a.state_dir().join("pool").join("daemon.sock"),
        )
        .expect("send the forged release");
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        members_dir(&a).join(&member).exists(),
        "{member} removed under its command"
    );
    let st = status(&a);
    assert_eq!(
        (&pool0(&st)["claimed"], &pool0(&st)["hits"]),
        (&1.into(), &0.into()),
        "{st}"
    );
    let out = child.wait_with_output().expect("the claimer");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "survived");
    // Its own release still counts.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let st = status(&a);
            pool0(&st)["hits"] == 1 && pool0(&st)["claimed"] == 0
        }),
        "{}",
        status(&a)
    );
    ok(&a, &["daemon", "stop"]);
    assert_nothing_left(&a, "forged release");
}

/// A claimer killed during its command while no daemon can act (stopped): the member's stub
/// ends PID 1 once the command ends, so the member is not left running for a daemon that may
/// never come back (before, it ran on until a daemon's reconcile).
#[test]
fn a_killed_claimers_member_ends_with_its_command() {
    if !e2e("a_killed_claimers_member_ends_with_its_command") {
        return;
    }
    let a = Airlock::root();
    let _guard = DaemonGuard(&a);
    start_pool(&a, "1", &["--workspace", "none", "--net", "off"]);
    wait_ready(&a, 1, "killed claimer");
    let member = std::fs::read_dir(members_dir(&a))
        .expect("members")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .expect("a member");
    let pid1: i32 = std::fs::read_to_string(members_dir(&a).join(&member).join("pid1"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("the member's PID 1");
    let daemon = common::pool::daemon_pid(&a).expect("the daemon runs");
    // SAFETY: kill(2) on this test's daemon.
    unsafe { libc::kill(daemon, libc::SIGSTOP) };
    let (mut child, claimed, _stderr) = spawn_warm(&a, &[], &["sh", "-c", "echo started; sleep 1"]);
    assert_eq!(claimed, member);
    // Killed once its command runs (the stub has the claim).
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("read");
    assert_eq!(line.trim(), "started");
    child.kill().expect("kill the claimer");
    child.wait().expect("wait");
    let alive = || Path::new(&format!("/proc/{pid1}")).exists();
    assert!(alive(), "PID 1 went before its command ended");
    let gone = wait_until(Duration::from_secs(5), || !alive());
    // SAFETY: as above.
    unsafe { libc::kill(daemon, libc::SIGCONT) };
    assert!(gone, "the killed claimer's member (PID 1 {pid1}) lives on");
    ok(&a, &["daemon", "stop"]);
    assert_nothing_left(&a, "killed claimer");
}

/// Host processes whose command line is exactly `argv` (joined by spaces).
fn processes_running(argv: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .trim_end_matches('\0')
                    .replace('\0', " ")
                    == argv
            })
        })
        .collect()
}

/// A warm run whose command needs nothing back from its member (`--net off`, no terminal): the
/// stub ends the member right after writing the command's status, while the claimer reads it
/// (`end_at_exit`). The status still arrives whole (the exit code, the output), and what the
/// command left running is gone when `run` returns, as after a cold run — in every round.
fn leftovers_gone_when_a_warm_run_returns(a: &Airlock, label: &str) {
    let _guard = DaemonGuard(a);
    start_pool(a, "1", &["--workspace", "none", "--net", "off"]);
    let leftover = "sleep 31.4159";
    for round in 0..4 {
        wait_ready(a, 1, label);
        let script = format!("{leftover} & echo started; exit 3");
        let out = a.run(&[&RUN_NONE_OFF[..], &["--", "sh", "-c", &script]].concat());
        warm(&out, &format!("{label}: round {round}"));
        assert_eq!(out.code(), 3, "{label}: round {round}: {}", out.describe());
        assert_eq!(out.stdout.trim(), "started", "{label}: round {round}");
        let left = processes_running(leftover);
        assert!(
            left.is_empty(),
            "{label}: round {round}: left running after the run returned: {left:?}"
        );
    }
    ok(a, &["daemon", "stop"]);
    assert_nothing_left(a, label);
}

crate::rootful_and_rootless!(
    a_warm_runs_leftovers_are_gone_when_it_returns_rootful,
    a_warm_runs_leftovers_are_gone_when_it_returns_rootless,
    leftovers_gone_when_a_warm_run_returns
);

// ---------------------------------------------------------------------------------------------
// `--ro`/`--rw`/`[mounts]` bound at claim

/// Host folders for a claim's own binds, given to the test's airlock user: `ro` (a file `f`,
/// and `file`, a single file to bind), `rw` (empty).
fn bind_sources(a: &Airlock) -> (PathBuf, PathBuf, PathBuf) {
    use common::work::{give, write};
    let base = a.dir.join("binds");
    let (ro, rw, file) = (base.join("ro"), base.join("rw"), base.join("one.conf"));
    write(&ro.join("f"), "from ro\n");
    write(&file, "one file\n");
    std::fs::create_dir_all(&rw).expect("mkdir rw");
    give(a, &base);
    (ro, rw, file)
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A pool started with no mounts serves a run with its own `--ro`, `--rw` and a single-file
/// `--ro` under /etc (a mountpoint on the member's read-only root): the run is warm, sees the
/// read-only one read-only (nosuid, nodev) and writes through the writable one to the host, as
/// the host directory's owner sees it after a cold run; the root is read-only again; the next
/// claim of the pool sees none of it; the same command cold prints the same; nothing is left
/// in the host's mount table or in the sources.
fn own_binds_at_claim(a: &Airlock, label: &str) {
    let _guard = DaemonGuard(a);
    let (ro, rw, file) = bind_sources(a);
    start_pool(a, "1", &["--net", "off", "--workspace", "none"]);
    let ro_arg = format!("{}:/data", ro.display());
    let rw_arg = format!("{}:/out", rw.display());
    let file_arg = format!("{}:/etc/airlock-one.conf", file.display());
    let script = "cat /data/f /etc/airlock-one.conf; \
                  echo x > /data/new 2>/dev/null || echo data-readonly; \
                  echo written > /out/w && echo out-written; \
                  touch /rootfile 2>/dev/null || echo root-readonly; \
                  awk '$5 == \"/data\" || $5 == \"/out\" || $5 == \"/etc/airlock-one.conf\" \
                       { split($6, o, \",\"); print $5, o[1], ($6 ~ /nosuid/), ($6 ~ /nodev/) }' \
                      /proc/self/mountinfo | sort";
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["run", "--workspace", "none", "--net", "off"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend(["--", "sh", "-c", script].iter().map(|s| s.to_string()));
        v
    };
    let with_binds = args(&["--ro", &ro_arg, "--rw", &rw_arg, "--ro", &file_arg]);
    let out = a.run(&with_binds);
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    warm(&out, label);
    let expected = "from ro\none file\ndata-readonly\nout-written\nroot-readonly\n\
                    /data ro 1 1\n/etc/airlock-one.conf ro 1 1\n/out rw 1 1\n";
    assert_eq!(out.stdout, expected, "{label}: {}", out.describe());
    // The write landed on the host, owned as a cold run's (the project directory's owner,
    // root-run: idmapped; rootless: the user).
    use std::os::unix::fs::MetadataExt;
    let w = rw.join("w");
    assert_eq!(
        std::fs::read_to_string(&w).ok().as_deref(),
        Some("written\n"),
        "{label}"
    );
    let owner = std::fs::metadata(&a.cwd).expect("cwd").uid();
    assert_eq!(std::fs::metadata(&w).expect("w").uid(), owner, "{label}");
    assert_eq!(names_in(&ro), BTreeSet::from(["f".to_string()]), "{label}");
    // The next claim of the same pool has none of them.
    wait_ready(a, 1, label);
    let out = ok(
        a,
        &[
            "run",
            "--workspace",
            "none",
            "--net",
            "off",
            "--",
            "sh",
            "-c",
            "for p in /data /out /etc/airlock-one.conf; do test -e $p && echo \"$p seen\"; done; \
             grep -c -e ' /data ' -e ' /out ' -e airlock-one /proc/self/mountinfo || true",
        ],
    );
    warm(&out, label);
    assert_eq!(out.stdout, "0\n", "{label}: {}", out.describe());
    ok(a, &["daemon", "stop"]);
    assert_nothing_left(a, label);
    // Cold, the same command says the same.
    std::fs::remove_file(&w).expect("rm w");
    let cold = a.run(&with_binds);
    assert_eq!(cold.code(), 0, "{label}: {}", cold.describe());
    assert!(claimed(&cold).is_none(), "{label}: {}", cold.describe());
    assert_eq!(cold.stdout, expected, "{label}: cold: {}", cold.describe());
    let left = mounts_under(a.dir.path());
    assert!(left.is_empty(), "{label}: host mounts left: {left:?}");
    assert_eq!(names_in(&ro), BTreeSet::from(["f".to_string()]), "{label}");
}

crate::rootful_and_rootless!(
    a_claim_binds_its_own_mounts_rootful,
    a_claim_binds_its_own_mounts_rootless,
    own_binds_at_claim
);

/// A tmpfs mounted on the host under a bind's source (so that the read-only bind must be
/// read-only recursively), unmounted however the test ends.
struct SubMount(PathBuf);

impl SubMount {
    fn new(at: &Path) -> SubMount {
        std::fs::create_dir_all(at).expect("mkdir sub");
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0777", "tmpfs"])
            .arg(at)
            .status()
            .expect("mount");
        assert!(st.success(), "mount a tmpfs at {}", at.display());
        SubMount(at.to_path_buf())
    }
}

impl Drop for SubMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// What a warm sandbox tries against a claim's `--ro` bind (and the tools it uses exist:
/// the same on the `--rw` one succeeds).
const RO_ATTACKS: &str = "\
    echo x > /data/f 2>/dev/null && echo WROTE; \
    echo x > /data/new 2>/dev/null && echo CREATED; \
    echo x > /data/sub/new 2>/dev/null && echo CREATED-IN-SUBMOUNT; \
    chmod 777 /data/f 2>/dev/null && echo CHMOD; \
    mv /data/f /data/g 2>/dev/null && echo RENAMED; \
    mkdir /data/d 2>/dev/null && echo MKDIR; \
    touch -d 2000-01-01 /data/f 2>/dev/null && echo TOUCHED; \
    mount -o remount,rw /data 2>/dev/null && echo REMOUNTED; \
    mount -o remount,bind,rw /data 2>/dev/null && echo REMOUNTED-BIND; \
    unshare -Urm sh -c 'mount -o remount,rw /data && echo x > /data/f' 2>/dev/null && echo USERNS-REMOUNTED; \
    unshare -Urm sh -c 'mount -o remount,bind,rw /data/sub && echo x > /data/sub/x' 2>/dev/null && echo USERNS-SUB; \
    echo x > /out/f && chmod 600 /out/f && mv /out/f /out/g && mkdir /out/d && echo rw-works; \
    command -v mount unshare >/dev/null && echo tools";

/// Attacks on a claim's own binds (run before the fix against a naive claim: a bind by path):
/// a `--ro` bind is read-only recursively (write, create, chmod, rename, mkdir, utimes,
/// remount rw — also from a user namespace of the sandbox's own — all fail, the host folder and
/// the tmpfs mounted under it are untouched); destinations a cold run refuses (`..`, /proc,
/// a missing source) are refused before any claim; a source swapped for a symlink to
/// airlock's own state while runs start (a loop exchanging the two) is never bound: each run
/// is refused or binds the real folder.
fn own_binds_attacks(a: &Airlock, label: &str) {
    let _guard = DaemonGuard(a);
    let (ro, rw, _) = bind_sources(a);
    let _sub = SubMount::new(&ro.join("sub"));
    std::fs::write(ro.join("sub/kept"), "sub\n").expect("write sub");
    start_pool(a, "1", &["--net", "off", "--workspace", "none"]);
    let ro_arg = format!("{}:/data", ro.display());
    let rw_arg = format!("{}:/out", rw.display());
    let out = a.run(&[
        "run",
        "--workspace",
        "none",
        "--net",
        "off",
        "--ro",
        &ro_arg,
        "--rw",
        &rw_arg,
        "--",
        "sh",
        "-c",
        RO_ATTACKS,
    ]);
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    warm(&out, label);
    assert_eq!(
        out.stdout,
        "rw-works\ntools\n",
        "{label}: {}",
        out.describe()
    );
    assert_eq!(
        std::fs::read_to_string(ro.join("f")).ok().as_deref(),
        Some("from ro\n"),
        "{label}"
    );
    assert_eq!(
        names_in(&ro),
        BTreeSet::from(["f".to_string(), "sub".to_string()]),
        "{label}"
    );
    assert_eq!(
        names_in(&ro.join("sub")),
        BTreeSet::from(["kept".to_string()]),
        "{label}"
    );
    wait_ready(a, 1, label);

    // Refused as cold, before any claim: the pool keeps its member, no cold start follows.
    for (dest, code, says) in [
        (
            format!("{}:/workspace/../etc", ro.display()),
            2,
            "mounts[0].target",
        ),
        (format!("{}:/proc/x", ro.display()), 2, "/proc/x"),
        (format!("{}/missing:/data", ro.display()), 2, "mount source"),
    ] {
        let out = a.run(&[
            "run",
            "--workspace",
            "none",
            "--net",
            "off",
            "--ro",
            &dest,
            "--",
            "true",
        ]);
        assert_eq!(out.code(), code, "{label} {dest}: {}", out.describe());
        assert!(
            out.stderr.contains(says)
                && claimed(&out).is_none()
                && !out.stderr.contains("starting cold"),
            "{label} {dest}: {}",
            out.describe()
        );
        assert_eq!(pool0(&status(a))["ready"], 1, "{label} {dest}");
    }

    // A symlink swapped into the source between the check and the bind.
    let race = a.dir.join("race");
    let src = race.join("src");
    let alt = race.join("alt");
    common::work::write(&src.join("real"), "real\n");
    std::os::unix::fs::symlink(a.state_dir(), &alt).expect("symlink");
    common::work::give(a, &race);
    std::fs::write(a.state_dir().join("STATE-MARKER"), "state\n").expect("marker");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, src, alt) = (stop.clone(), src.clone(), alt.clone());
        std::thread::spawn(move || {
            let (s, t) = (
                std::ffi::CString::new(src.as_os_str().as_encoded_bytes()).expect("cstr"),
                std::ffi::CString::new(alt.as_os_str().as_encoded_bytes()).expect("cstr"),
            );
            let mut flips = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: two valid C strings; renameat2 exchanges the two names atomically.
                let r = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        s.as_ptr(),
                        libc::AT_FDCWD,
                        t.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                if r != 0 {
                    break; // the test's folder went (it failed)
                }
                flips += 1;
                std::thread::sleep(Duration::from_micros(50));
            }
            flips
        })
    };
    let race_arg = format!("{}:/out", src.display());
    let mut outcomes = BTreeSet::new();
    for i in 0..16 {
        wait_ready(a, 1, label);
        let out = a.run(&[
            "run",
            "--workspace",
            "none",
            "--net",
            "off",
            "--rw",
            &race_arg,
            "--",
            "sh",
            "-c",
            "echo started; ls /out",
        ]);
        let seen = match out.code() {
            0 if out.stdout == "started\nreal\n" && claimed(&out).is_some() => {
                "bound the real folder"
            }
            121 if out.stderr.contains("airlock's state") => "refused: the state",
            121 if out.stderr.contains("changed since it was checked") => "refused: swapped",
            _ => panic!("{label} run {i}: {}", out.describe()),
        };
        // A refused claim's command never starts, though its request reached the member's
        // stub before the binds were tried (it waits for the go).
        if out.code() != 0 {
            assert!(out.stdout.is_empty(), "{label} run {i}: {}", out.describe());
        }
        outcomes.insert(seen);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flips = flipper.join().expect("flipper");
    assert!(flips > 16, "{label}: only {flips} flips");
    assert!(
        outcomes.len() > 1,
        "{label}: the race was never on: {outcomes:?}"
    );
    ok(a, &["daemon", "stop"]);
    assert_nothing_left(a, label);
}

crate::rootful_and_rootless!(
    claimed_binds_resist_attacks_rootful,
    claimed_binds_resist_attacks_rootless,
    own_binds_attacks
);
