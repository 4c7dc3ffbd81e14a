//! Attack tests for the layer unpacker: every hostile archive shape is refused or defused,
//! and nothing outside the layer's directory is touched.

use super::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

struct T {
    dir: PathBuf,
}

impl T {
    fn new(tag: &str) -> T {
        let dir = std::env::temp_dir().join(format!(
            "airlock-unpack-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = remove_tree(&dir);
        fs::create_dir_all(dir.join("layer")).expect("mkdir");
        fs::create_dir_all(dir.join("outside")).expect("mkdir");
        T { dir }
    }
    fn layer(&self) -> PathBuf {
        self.dir.join("layer")
    }
    fn outside(&self) -> PathBuf {
        self.dir.join("outside")
    }
}

impl Drop for T {
    fn drop(&mut self) {
        let _ = remove_tree(&self.dir);
    }
}

/// One raw tar entry: names are written byte for byte (the tar crate's own builder refuses
/// the hostile ones, which is the point of these tests).
enum E<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str, u32),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str),
    Fifo(&'a str),
}

fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_old();
        let (name, kind, data, mode, link): (&str, tar::EntryType, &[u8], u32, Option<&str>) =
            match e {
                E::File(n, d, m) => (n, tar::EntryType::Regular, d, *m, None),
                E::Dir(n, m) => (n, tar::EntryType::Directory, b"", *m, None),
                E::Symlink(n, to) => (n, tar::EntryType::Symlink, b"", 0o777, Some(to)),
                E::Hardlink(n, to) => (n, tar::EntryType::Link, b"", 0o644, Some(to)),
                E::Char(n) => (n, tar::EntryType::Char, b"", 0o666, None),
                E::Fifo(n) => (n, tar::EntryType::Fifo, b"", 0o666, None),
            };
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            old.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("finish")
}

fn hostile(err: Result<Unpacked, UnpackError>) -> String {
    match err {
        Err(e @ UnpackError::Hostile { .. }) => e.to_string(),
        other => panic!("expected a hostile-layer refusal, got {other:?}"),
    }
}

fn outside_untouched(t: &T) {
    let n = fs::read_dir(t.outside()).expect("read").count();
    assert_eq!(n, 0, "something was written outside the layer");
}

#[test]
fn dotdot_entries_are_refused() {
    let t = T::new("dotdot");
    let tar = tar_of(&[E::File("a/../../outside/pwned", b"x", 0o644)]);
    assert!(hostile(unpack(&tar[..], &t.layer())).contains("`..`"));
    outside_untouched(&t);
}

#[test]
fn absolute_entries_are_refused() {
    let t = T::new("abs");
    let target = t.outside().join("pwned");
    let name = target.to_string_lossy().into_owned();
    let tar = tar_of(&[E::File(&name, b"x", 0o644)]);
    assert!(hostile(unpack(&tar[..], &t.layer())).contains("absolute"));
    outside_untouched(&t);
}

#[test]
fn nothing_is_written_through_a_symlink_of_the_same_layer() {
    let t = T::new("symlink");
    let out = t.outside().to_string_lossy().into_owned();
    let tar = tar_of(&[E::Symlink("evil", &out), E::File("evil/pwned", b"x", 0o644)]);
    assert!(hostile(unpack(&tar[..], &t.layer())).contains("symlink"));
    outside_untouched(&t);
    // A relative escape through a symlinked directory, too.
    let t = T::new("symlink-rel");
    let tar = tar_of(&[E::Symlink("up", "../outside"), E::Dir("up/sub", 0o755)]);
    assert!(hostile(unpack(&tar[..], &t.layer())).contains("symlink"));
    outside_untouched(&t);
}

#[test]
fn a_file_replacing_a_symlink_does_not_follow_it() {
    let t = T::new("replace");
    fs::write(t.outside().join("victim"), b"host").expect("write");
    let victim = t.outside().join("victim").to_string_lossy().into_owned();
    let tar = tar_of(&[E::Symlink("f", &victim), E::File("f", b"layer", 0o644)]);
    unpack(&tar[..], &t.layer()).expect("unpack");
    assert_eq!(fs::read(t.outside().join("victim")).expect("read"), b"host");
    assert_eq!(fs::read(t.layer().join("f")).expect("read"), b"layer");
    assert!(!fs::symlink_metadata(t.layer().join("f"))
        .expect("lstat")
        .file_type()
        .is_symlink());
}

#[test]
fn an_earlier_layers_symlink_is_never_followed() {
    // Layer 1 plants `evil -> OUTSIDE`; layer 2 writes `evil/pwned`. Each layer lands in a
    // directory of its own, so layer 2 gets a real directory `evil`, never OUTSIDE/pwned.
    let t = T::new("cross");
    let out = t.outside().to_string_lossy().into_owned();
    let l1 = t.dir.join("l1");
    fs::create_dir(&l1).expect("mkdir");
    unpack(&tar_of(&[E::Symlink("evil", &out)])[..], &l1).expect("layer 1");
    unpack(
        &tar_of(&[E::File("evil/pwned", b"x", 0o644)])[..],
        &t.layer(),
    )
    .expect("layer 2");
    outside_untouched(&t);
    assert!(fs::symlink_metadata(t.layer().join("evil"))
        .expect("lstat")
        .is_dir());
    assert_eq!(fs::read(t.layer().join("evil/pwned")).expect("read"), b"x");
}

#[test]
fn hard_links_must_stay_inside_the_layer() {
    let t = T::new("hardlink");
    fs::write(t.outside().join("secret"), b"s").expect("write");
    let secret = t.outside().join("secret").to_string_lossy().into_owned();
    assert!(hostile(unpack(
        &tar_of(&[E::Hardlink("h", &secret)])[..],
        &t.layer()
    ))
    .contains("absolute"));
    let t2 = T::new("hardlink-rel");
    assert!(hostile(unpack(
        &tar_of(&[E::Hardlink("h", "../outside/secret")])[..],
        &t2.layer()
    ))
    .contains("`..`"));
    // Through a symlink of the layer.
    let t3 = T::new("hardlink-sym");
    let out = t3.outside().to_string_lossy().into_owned();
    fs::write(t3.outside().join("secret"), b"s").expect("write");
    let r = unpack(
        &tar_of(&[E::Symlink("d", &out), E::Hardlink("h", "d/secret")])[..],
        &t3.layer(),
    );
    assert!(hostile(r).contains("symlink"));
    assert_eq!(
        fs::metadata(t3.outside().join("secret"))
            .expect("stat")
            .nlink(),
        1
    );
    // A legitimate one works.
    let t4 = T::new("hardlink-ok");
    unpack(
        &tar_of(&[E::File("a", b"data", 0o644), E::Hardlink("b", "a")])[..],
        &t4.layer(),
    )
    .expect("unpack");
    assert_eq!(fs::metadata(t4.layer().join("b")).expect("stat").nlink(), 2);
}

#[test]
fn devices_and_fifos_are_skipped_and_setuid_is_cleared() {
    let t = T::new("dev");
    let u = unpack(
        &tar_of(&[
            E::Char("dev/sda"),
            E::Fifo("fifo"),
            E::File("bin/su", b"#!", 0o4755),
            E::File("bin/sg", b"#!", 0o2755),
            E::Dir("tmp", 0o1777),
        ])[..],
        &t.layer(),
    )
    .expect("unpack");
    assert_eq!(u.skipped, 2);
    assert!(!t.layer().join("dev/sda").exists());
    assert!(!t.layer().join("fifo").exists());
    let mode = |p: &str| fs::metadata(t.layer().join(p)).expect("stat").mode() & 0o7777;
    assert_eq!(mode("bin/su"), 0o755);
    assert_eq!(mode("bin/sg"), 0o755);
    assert_eq!(mode("tmp"), 0o1777);
}

#[test]
fn whiteouts_and_opaque_directories_become_overlay_markers() {
    let t = T::new("wh");
    unpack(
        &tar_of(&[
            E::File(".wh.gone", b"", 0o644),
            E::Dir("d", 0o755),
            E::File("d/.wh..wh..opq", b"", 0o644),
            E::File("d/kept", b"k", 0o644),
        ])[..],
        &t.layer(),
    )
    .expect("unpack");
    let m = fs::symlink_metadata(t.layer().join("gone")).expect("whiteout");
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), 0);
    assert!(!t.layer().join(".wh.gone").exists());
    assert_eq!(
        xattr_get(&t.layer().join("d"), OPAQUE_XATTR).as_deref(),
        Some(&b"y"[..])
    );
    assert!(!t.layer().join("d/.wh..wh..opq").exists());
    assert_eq!(fs::read(t.layer().join("d/kept")).expect("read"), b"k");
    // A whiteout cannot be aimed outside either.
    let t2 = T::new("wh-out");
    assert!(hostile(unpack(
        &tar_of(&[E::File("../.wh.outside", b"", 0o644)])[..],
        &t2.layer()
    ))
    .contains("`..`"));
}

#[test]
fn read_only_directories_are_filled_before_their_mode_applies() {
    let t = T::new("ro");
    unpack(
        &tar_of(&[E::Dir("ro", 0o555), E::File("ro/f", b"x", 0o444)])[..],
        &t.layer(),
    )
    .expect("unpack");
    assert_eq!(
        fs::metadata(t.layer().join("ro")).expect("stat").mode() & 0o777,
        0o555
    );
    assert_eq!(fs::read(t.layer().join("ro/f")).expect("read"), b"x");
}
