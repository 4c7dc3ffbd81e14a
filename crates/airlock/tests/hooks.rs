//! `[hooks]` run on the host around a named sandbox's life (issue 12), in configuration order,
//! with the sandbox's name in their environment; a failing hook warns and the command goes
//! on; `--no-hooks` skips them; a project file's hooks need `airlock trust` (issue 11).

mod common;

use common::work::{give, ok, EngineGuard};

use common::{e2e, Airlock, Bins};

fn hooks(a: &Airlock, label: &str) {
    let _g = EngineGuard(a);
    let log = a.dir.join("hooks.log");
    let p = a.cwd.clone();
    let user_cfg = a.dir.join("home/.config/airlock/config.toml");
    std::fs::create_dir_all(user_cfg.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        &user_cfg,
        format!(
            "[hooks]\npre_up = [\"echo user-pre-up $AIRLOCK_SANDBOX >> {l}\"]\n",
            l = log.display()
        ),
    )
    .expect("user config");
    std::fs::write(
        p.join("airlock.toml"),
        format!(
            "[hooks]\n\
             pre_up = [\"echo pre-up $AIRLOCK_SANDBOX $AIRLOCK_STATE $(pwd) >> {l}\", \"false\"]\n\
             post_up = [\"echo post-up $AIRLOCK_SANDBOX >> {l}\"]\n\
             pre_down = [\"echo pre-down $AIRLOCK_SANDBOX >> {l}\"]\n\
             post_down = [\"echo post-down $AIRLOCK_SANDBOX >> {l}\"]\n",
            l = log.display()
        ),
    )
    .expect("project config");
    give(a, a.dir.path());
    let read = || std::fs::read_to_string(&log).unwrap_or_default();

    // Untrusted: nothing runs, nothing is created.
    let out = a.run(&["up", "hk", "--net", "off"]);
    assert_eq!(out.code(), 121, "{label}: {}", out.describe());
    assert!(
        out.stderr.contains("hooks.pre_up"),
        "{label}: {}",
        out.stderr
    );
    assert_eq!(read(), "", "{label}: an untrusted hook ran");
    let list = ok(a, label, &["list", "--json"]);
    assert!(!list.stdout.contains("\"hk\""), "{label}: {}", list.stdout);

    ok(a, label, &["trust"]);
    let out = ok(a, label, &["up", "hk", "--net", "off"]);
    assert!(
        out.stderr.contains("`false` failed"),
        "{label}: the failing hook was not reported: {}",
        out.stderr
    );
    let cwd = std::fs::canonicalize(&p).expect("canon");
    assert_eq!(
        read(),
        format!(
            "user-pre-up hk\npre-up hk starting {}\npost-up hk\n",
            cwd.display()
        ),
        "{label}"
    );
    ok(a, label, &["stop", "hk"]);
    assert!(
        read().ends_with("post-up hk\npre-down hk\npost-down hk\n"),
        "{label}: {}",
        read()
    );

    // --no-hooks skips them.
    let before = read();
    ok(a, label, &["--no-hooks", "start", "hk"]);
    ok(a, label, &["stop", "hk", "--no-hooks"]);
    assert_eq!(read(), before, "{label}: --no-hooks ran hooks");

    // A changed project file is untrusted again: start refuses before anything starts,
    // rm of a running sandbox warns and goes on.
    ok(a, label, &["--no-hooks", "start", "hk"]);
    let mut text = std::fs::read_to_string(p.join("airlock.toml")).expect("read");
    text.push_str("# edited\n");
    std::fs::write(p.join("airlock.toml"), text).expect("write");
    give(a, &p);
    let out = a.run(&["rm", "--force", "hk"]);
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    assert!(
        out.stderr.contains("not trusted"),
        "{label}: {}",
        out.stderr
    );
    assert_eq!(read(), before, "{label}: an untrusted hook ran at rm");
}

#[test]
fn hooks_run_on_the_host_around_up_and_down() {
    if !e2e("hooks_run_on_the_host_around_up_and_down") {
        return;
    }
    hooks(&Airlock::root(), "rootful");
    let user = common::test_user();
    let bins = Bins::owned_by(&user);
    hooks(&Airlock::rootless(&bins), "rootless");
}
