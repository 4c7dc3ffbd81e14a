//! The static in-sandbox helper in a root filesystem that is not the host's: the sandbox's /usr
//! (and so /bin, /lib, /lib64, which are links into it) is a directory holding one static
//! busybox and nothing else — no libc or dynamic loader, no /bin/sh, no `tar` on PATH (built from
//! Debian's busybox-static, `.ci/install-guest`, through `--ro DIR:/usr`, until `--image` lands).
//! `report`, `cp` both ways and an agent turn (a scripted harness run by busybox's shell) work
//! there, rootful and rootless.

mod common;
use common::work::EngineGuard;

use common::{e2e, Airlock, Bins, TempDir};
use std::path::Path;

/// The scripted harness, run as `busybox sh -c SCRIPT harness PROMPT`.
const HARNESS: &str = r#"
report working "in a foreign root"
[ -e /bin/sh ] && { report blocked "there is a /bin/sh"; exit 0; }
[ -e /lib64/ld-linux-x86-64.so.2 ] && { report blocked "there is a dynamic loader"; exit 0; }
report done "turn $AIRLOCK_TURN_ID without libc, shell or tar"
"#;

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(["-c", "safe.directory=*"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// A /usr holding only a static busybox.
fn foreign_usr() -> TempDir {
    let busybox = Path::new("/bin/busybox");
    let bytes = std::fs::read(busybox).expect(
        "/bin/busybox (Debian's busybox-static; .ci/install-guest installs it) for the foreign root",
    );
    assert_eq!(
        airlock_guest_embed::elf_linking(&bytes),
        Ok(airlock_guest_embed::Linking::Static),
        "/bin/busybox is dynamically linked: install busybox-static"
    );
    let d = TempDir::new("foreign-usr");
    std::fs::create_dir_all(d.join("bin")).expect("mkdir");
    std::fs::write(d.join("bin/busybox"), &bytes).expect("write");
    common::set_mode(&d.join("bin/busybox"), 0o755);
    d
}

fn project(a: &Airlock) {
    let dir = &a.cwd;
    std::fs::write(dir.join("README"), "project\n").expect("readme");
    let harness = serde_json::json!(["/usr/bin/busybox", "sh", "-c", HARNESS, "harness"]);
    std::fs::write(
        dir.join("airlock.toml"),
        format!("[agent]\nharness = {{ command = {harness} }}\ngrace = \"3s\"\n"),
    )
    .expect("airlock.toml");
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "."]);
    git(
        dir,
        &[
            "-c",
            "user.email=t@example.com",
            "-c",
            "user.name=t",
            "commit",
            "-qm",
            "init",
        ],
    );
    if let Some(u) = &a.user {
        a.dir.chown_to(u);
    }
}

fn foreign_root(a: &Airlock, label: &str) {
    let _guard = EngineGuard(a);
    let usr = foreign_usr();
    project(a);
    let ro = format!("{}:/usr", usr.path().display());
    let ok = |args: &[&str]| {
        let out = a.run(args);
        assert_eq!(out.code(), 0, "{label}: {args:?}: {}", out.describe());
        out
    };

    // An agent turn: the runner and `report` are the static helper.
    let out = ok(&["up", "fr", "--net", "off", "--ro", &ro, "--prompt", "go"]);
    assert!(
        out.stdout.contains("turn 1 working: in a foreign root")
            && out
                .stdout
                .contains("turn 1 done: turn 1 without libc, shell or tar"),
        "{label}: {}",
        out.describe()
    );

    // The root really is foreign: no shell, no tar, no dynamic loader or libc.
    for argv in [&["/bin/sh", "-c", "true"][..], &["tar", "--version"][..]] {
        let mut args = vec!["exec", "fr", "--"];
        args.extend_from_slice(argv);
        let out = a.run(&args);
        assert_eq!(out.code(), 127, "{label}: {argv:?}: {}", out.describe());
    }
    let out = a.run(&[
        "exec",
        "fr",
        "--",
        "/usr/bin/busybox",
        "ls",
        "/lib64/ld-linux-x86-64.so.2",
        "/lib/x86_64-linux-gnu/libc.so.6",
    ]);
    assert_ne!(out.code(), 0, "{label}: {}", out.describe());

    // `report` from a command (between turns).
    ok(&[
        "exec",
        "fr",
        "--",
        "/run/airlock/bin/report",
        "info",
        "reported without libc",
    ]);
    let reports = ok(&["reports", "fr"]).stdout;
    assert!(
        reports.contains("info: reported without libc"),
        "{label}: {reports}"
    );

    // cp in: a file into a directory, a tree.
    let host = TempDir::new("foreign-cp");
    std::fs::write(host.join("in.txt"), "to the foreign root\n").expect("write");
    std::fs::create_dir_all(host.join("tree/sub")).expect("mkdir");
    std::fs::write(host.join("tree/sub/f"), "deep\n").expect("write");
    std::os::unix::fs::symlink("sub/f", host.join("tree/link")).expect("symlink");
    if let Some(u) = &a.user {
        host.chown_to(u);
    }
    let h = |p: &str| host.join(p).display().to_string();
    ok(&["cp", &h("in.txt"), "fr:/tmp/"]);
    ok(&["cp", &h("tree"), "fr:/home/agent/"]);
    let cat = |p: &str| ok(&["exec", "fr", "--", "/usr/bin/busybox", "cat", p]).stdout;
    assert_eq!(cat("/tmp/in.txt"), "to the foreign root\n", "{label}");
    assert_eq!(cat("/home/agent/tree/sub/f"), "deep\n", "{label}");
    assert_eq!(cat("/home/agent/tree/link"), "deep\n", "{label}");

    // cp out: a file, and a tree whose symlink leaves it (it stays a symlink).
    for argv in [
        &["/usr/bin/busybox", "mkdir", "-p", "/tmp/d/x"][..],
        &["/usr/bin/busybox", "cp", "/tmp/in.txt", "/tmp/d/x/y"][..],
        &["/usr/bin/busybox", "ln", "-s", "/etc", "/tmp/d/esc"][..],
    ] {
        let mut args = vec!["exec", "fr", "--"];
        args.extend_from_slice(argv);
        ok(&args);
    }
    ok(&["cp", "fr:/home/agent/tree/sub/f", &h("out.txt")]);
    assert_eq!(
        std::fs::read_to_string(host.join("out.txt")).expect("out"),
        "deep\n",
        "{label}"
    );
    ok(&["cp", "fr:/tmp/d", &h("outdir")]);
    assert_eq!(
        std::fs::read_to_string(host.join("outdir/x/y")).expect("tree"),
        "to the foreign root\n",
        "{label}"
    );
    assert!(
        std::fs::symlink_metadata(host.join("outdir/esc"))
            .expect("esc")
            .file_type()
            .is_symlink(),
        "{label}"
    );
    let out = a.run(&["cp", "fr:/etc/shadow", &h("shadow")]);
    assert_eq!(out.code(), 122, "{label}: {}", out.describe());

    // The helper is read-only inside: shared by every sandbox, it cannot be replaced from one.
    for target in ["/run/airlock/bin/airlock-guest", "/run/airlock/bin/report"] {
        let out = a.run(&[
            "exec",
            "fr",
            "--",
            "/usr/bin/busybox",
            "cp",
            "/tmp/in.txt",
            target,
        ]);
        assert_ne!(out.code(), 0, "{label}: {target}: {}", out.describe());
    }
    let installed = airlock_guest_embed::installed_path(&a.state_dir());
    assert_eq!(
        std::fs::read(&installed).expect("installed helper"),
        airlock_guest_embed::BYTES,
        "{label}"
    );

    ok(&["rm", "--force", "fr"]);
}

#[test]
fn the_guest_serves_a_root_without_libc_shell_or_tar_rootful() {
    if e2e("the_guest_serves_a_root_without_libc_shell_or_tar_rootful") {
        foreign_root(&Airlock::root(), "rootful");
    }
}

#[test]
fn the_guest_serves_a_root_without_libc_shell_or_tar_rootless() {
    if e2e("the_guest_serves_a_root_without_libc_shell_or_tar_rootless") {
        let user = common::test_user();
        let bins = Bins::owned_by(&user);
        foreign_root(&Airlock::rootless(&bins), "rootless");
    }
}
