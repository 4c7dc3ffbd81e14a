//! A harness that is not in the sandbox (issue 12): `up --agent` and `start` say where airlock
//! looked and how to provide the CLI, and leave no half-started agent behind — a sandbox this
//! `up` created is removed again, an existing one is stopped.

mod common;

use common::work::EngineGuard;

use common::{e2e, Airlock, Bins};

fn missing(a: &Airlock, label: &str) {
    let _g = EngineGuard(a);
    // The host has no `claude` on its PATH (the CI's copy is in a cache folder, not mounted).
    let out = a.run(&[
        "up",
        "ag",
        "--agent",
        "claude",
        "--net",
        "off",
        "--no-attach",
    ]);
    assert_eq!(out.code(), 127, "{label}: {}", out.describe());
    for want in ["claude", "not on PATH", "/run/airlock/bin", "hint:", "--ro"] {
        assert!(
            out.stderr.contains(want),
            "{label}: {want:?}: {}",
            out.describe()
        );
    }
    let list = a.run(&["list", "--json"]);
    assert!(
        !list.stdout.contains("\"ag\""),
        "{label}: a half-started agent was left: {}",
        list.stdout
    );

    // An existing sandbox whose custom harness is gone: start refuses and stops it again.
    std::fs::write(
        a.cwd.join("airlock.toml"),
        "[agent]\nharness = { command = [\"/workspace/no-such-agent.sh\"] }\n",
    )
    .expect("config");
    if let Some(u) = &a.user {
        let _ = std::process::Command::new("chown")
            .arg(format!("{}:{}", u.uid, u.gid))
            .arg(a.cwd.join("airlock.toml"))
            .status();
    }
    let out = a.run(&["create", "ag2", "--net", "off"]);
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    let out = a.run(&["start", "ag2"]);
    assert_eq!(out.code(), 127, "{label}: {}", out.describe());
    assert!(
        out.stderr.contains("no-such-agent.sh"),
        "{label}: {}",
        out.describe()
    );
    let st = a.run(&["status", "ag2", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&st.stdout).expect("status json");
    assert_eq!(st["state"], "stopped", "{label}: {st}");
    let _ = a.run(&["rm", "--force", "ag2"]);
}

#[test]
fn a_missing_harness_is_explained_and_nothing_is_left_half_started() {
    if !e2e("a_missing_harness_is_explained_and_nothing_is_left_half_started") {
        return;
    }
    missing(&Airlock::root(), "rootful");
    let user = common::test_user();
    let bins = Bins::owned_by(&user);
    missing(&Airlock::rootless(&bins), "rootless");
}
