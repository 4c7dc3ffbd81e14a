//! The embedded helper runs in a root holding nothing but itself (and an empty /tmp): no libc,
//! no loader, no /proc. Every subcommand is run there through chroot(8). Needs root (CI is
//! root); without root it fails when AIRLOCK_E2E is set, else it says so and returns.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn empty_root() -> Root {
    let r = std::env::temp_dir().join(format!("airlock-guest-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&r);
    std::fs::create_dir_all(r.join("tmp")).expect("mkdir");
    let bin = r.join(airlock_guest_embed::NAME);
    std::fs::write(&bin, airlock_guest_embed::BYTES).expect("write");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    std::os::unix::fs::symlink(airlock_guest_embed::NAME, r.join("report")).expect("symlink");
    Root(r)
}

fn run(root: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut c = Command::new("/usr/sbin/chroot")
        .arg(root)
        .args(args)
        .env_clear()
        .env("PATH", "/run/airlock/bin:/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chroot");
    let mut stdin = c.stdin.take().expect("stdin");
    stdin.write_all(input).expect("stdin");
    drop(stdin);
    c.wait_with_output().expect("wait")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_subcommand_runs_in_an_empty_root() {
    if !is_root() {
        assert!(
            std::env::var_os("AIRLOCK_E2E").is_none(),
            "AIRLOCK_E2E is set but the tests are not running as root"
        );
        eprintln!("note: not root, the empty-root test of airlock-guest did not run");
        return;
    }
    let r = empty_root();
    let root = r.0.as_path();
    let g = "/airlock-guest";

    // fs: write, read, stat, pack | unpack.
    let out = run(
        root,
        &[
            g,
            "fs",
            r#"{"op":"write","path":"/tmp/a/f.txt","mkdirs":true}"#,
        ],
        b"hello",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains(r#""written":5"#), "{out:?}");
    let out = run(
        root,
        &[g, "fs", r#"{"op":"read","path":"/tmp/a/f.txt"}"#],
        b"",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).ends_with("\nhello"), "{out:?}");
    let out = run(root, &[g, "fs", r#"{"op":"stat","path":"/tmp/a"}"#], b"");
    assert!(text(&out.stdout).contains(r#""kind":"dir""#), "{out:?}");
    let packed = run(root, &[g, "fs", r#"{"op":"pack","path":"/tmp/a"}"#], b"");
    assert!(packed.status.success(), "{packed:?}");
    let out = run(
        root,
        &[g, "fs", r#"{"op":"unpack","path":"/tmp","name":"b"}"#],
        &packed.stdout,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(root.join("tmp/b/f.txt")).expect("unpacked"),
        b"hello"
    );
    let out = run(
        root,
        &[g, "fs", r#"{"op":"read","path":"/etc/passwd"}"#],
        b"",
    );
    assert_eq!(out.status.code(), Some(66), "{out:?}");
    assert!(
        text(&out.stdout).contains(r#""code":"not_found""#),
        "{out:?}"
    );

    // which: itself by path; a missing program with the 127 of a shell.
    let out = run(root, &[g, "which", g], b"");
    assert_eq!(text(&out.stdout), "/airlock-guest\n", "{out:?}");
    let out = run(root, &[g, "which", "claude"], b"");
    assert_eq!(out.status.code(), Some(127), "{out:?}");

    // report (as a subcommand and as argv[0]): no runner here, said clearly.
    let out = run(root, &[g, "report", "done", "x"], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("cannot reach the agent runner"),
        "{out:?}"
    );
    let out = run(root, &["/report", "--help"], b"");
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("usage: report"), "{out:?}");

    // runner: greets the host, serves its report socket, ends when the host goes.
    let out = run(
        root,
        &[g, "runner", "--harness", r#"{"command":["/nope"]}"#],
        b"",
    );
    assert!(out.status.success(), "{out:?}");
    let said = text(&out.stdout);
    assert!(
        said.contains(r#""kind":"hello""#) && said.contains(r#""kind":"ready""#),
        "{out:?}"
    );

    // init: PID 1 of a microVM only (tests/microvm.rs of the airlock crate boots it); as an
    // ordinary process it refuses, touching nothing.
    let out = run(root, &[g, "init"], b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("only as PID 1"), "{out:?}");
}
