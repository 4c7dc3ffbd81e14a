use super::stream::{pack_path, unpack_rest, Reader, Record, Top};
use super::*;
use std::os::unix::fs::{symlink, PermissionsExt};

/// A temporary directory removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("airlock-guest-fs-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("mkdir");
        Tmp(p)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(req: serde_json::Value, input: &[u8]) -> (Result<(), FsError>, Vec<u8>) {
    let req: Request = serde_json::from_value(req).expect("request");
    let mut out = Vec::new();
    let r = serve(req, &mut &input[..], &mut out);
    (r, out)
}

fn answer_of(out: &[u8]) -> (Answer, &[u8]) {
    let nl = out.iter().position(|b| *b == b'\n').expect("answer line");
    (
        serde_json::from_slice(&out[..nl]).expect("answer json"),
        &out[nl + 1..],
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .expect("meta")
        .permissions()
        .mode()
        & 0o7777
}

fn stream_of(records: &[(Record, &[u8])]) -> Vec<u8> {
    let mut v = Vec::new();
    for (r, body) in records {
        v.extend(serde_json::to_vec(r).expect("json"));
        v.push(b'\n');
        v.extend_from_slice(body);
    }
    v
}

fn file(path: &str, body: &[u8]) -> Record {
    Record::File {
        path: path.into(),
        mode: 0o644,
        size: body.len() as u64,
        mtime: None,
    }
}

fn dir(path: &str) -> Record {
    Record::Dir {
        path: path.into(),
        mode: 0o755,
    }
}

fn end() -> Record {
    Record::End {
        entries: 0,
        bytes: 0,
        skipped: 0,
    }
}

#[test]
fn a_tree_round_trips_with_symlinks_as_symlinks_and_plain_modes() {
    let t = Tmp::new("tree");
    let src = t.join("src");
    std::fs::create_dir_all(src.join("a/b")).expect("mkdir");
    std::fs::write(src.join("a/b/f.txt"), b"hello").expect("write");
    std::fs::write(src.join("run.sh"), b"#!/bin/sh\n").expect("write");
    std::fs::set_permissions(src.join("run.sh"), PermissionsExt::from_mode(0o4755))
        .expect("setuid");
    symlink("a/b/f.txt", src.join("link")).expect("symlink");
    symlink("/etc/passwd", src.join("abs")).expect("symlink");

    let (r, out) = run(serde_json::json!({"op":"pack","path":src}), b"");
    r.expect("pack");
    let dest = t.join("dest");
    let (r, ans) = run(
        serde_json::json!({"op":"unpack","path":dest,"name":"copy"}),
        &out,
    );
    r.expect("unpack");
    let (a, _) = answer_of(&ans);
    assert!(a.ok);
    let copy = dest.join("copy");
    assert_eq!(a.path.as_deref(), Some(copy.to_str().expect("utf8")));
    assert_eq!(
        a.summary,
        Some(stream::Summary {
            entries: 7,
            bytes: 15,
            skipped: 0
        })
    );
    assert_eq!(
        std::fs::read(copy.join("a/b/f.txt")).expect("read"),
        b"hello"
    );
    // Set-id bits do not travel; the permission bits do.
    assert_eq!(mode(&copy.join("run.sh")), 0o755);
    assert_eq!(
        std::fs::read_link(copy.join("link")).expect("link"),
        Path::new("a/b/f.txt")
    );
    assert_eq!(
        std::fs::read_link(copy.join("abs")).expect("link"),
        Path::new("/etc/passwd")
    );
}

#[test]
fn pack_does_not_follow_symlinks_below_the_root() {
    let t = Tmp::new("nofollow");
    let outside = t.join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("secret"), b"s3cr3t").expect("write");
    let src = t.join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    symlink(&outside, src.join("dirlink")).expect("symlink");
    symlink(outside.join("secret"), src.join("filelink")).expect("symlink");
    let (r, out) = run(serde_json::json!({"op":"pack","path":src}), b"");
    r.expect("pack");
    assert!(
        !out.windows(6).any(|w| w == b"s3cr3t"),
        "a symlink's target was read"
    );
    // NoFollow (the host side of cp): a symlink as the root itself is refused.
    let mut sink = Vec::new();
    let e = pack_path(&src.join("dirlink"), Top::NoFollow, &mut sink).expect_err("refused");
    assert_eq!(e.code, Code::Invalid, "{e}");
}

#[test]
fn unpack_refuses_names_that_climb_out() {
    for bad in ["../x", "/etc/x", "a//b", "./x", "a/../../x", "a/.."] {
        let t = Tmp::new("climb");
        let s = stream_of(&[
            (dir(""), b""),
            (file(bad, b"pwned"), b"pwned"),
            (end(), b""),
        ]);
        let (r, _) = run(serde_json::json!({"op":"unpack","path":t.join("d")}), &s);
        let e = r.expect_err(bad);
        assert_eq!(e.code, Code::Escape, "{bad}: {e}");
        assert!(!t.join("x").exists() && !t.0.parent().expect("p").join("x").exists());
    }
}

#[test]
fn unpack_never_writes_through_a_symlink_even_one_it_made() {
    let t = Tmp::new("through");
    let outside = t.join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("keep"), b"original").expect("write");
    // The stream plants a symlink to a directory outside, then writes through it.
    let s = stream_of(&[
        (dir(""), b""),
        (
            Record::Symlink {
                path: "l".into(),
                target: outside.display().to_string(),
            },
            b"",
        ),
        (file("l/keep", b"pwned"), b"pwned"),
        (end(), b""),
    ]);
    let (r, _) = run(serde_json::json!({"op":"unpack","path":t.join("d")}), &s);
    assert_eq!(r.expect_err("refused").code, Code::Escape);
    // A symlink to a file, then the same name as a file: the link is not followed.
    let s = stream_of(&[
        (dir(""), b""),
        (
            Record::Symlink {
                path: "f".into(),
                target: outside.join("keep").display().to_string(),
            },
            b"",
        ),
        (file("f", b"pwned"), b"pwned"),
        (end(), b""),
    ]);
    let (r, _) = run(serde_json::json!({"op":"unpack","path":t.join("e")}), &s);
    assert_eq!(r.expect_err("refused").code, Code::Escape);
    assert_eq!(
        std::fs::read(outside.join("keep")).expect("read"),
        b"original"
    );
}

#[test]
fn a_truncated_or_malformed_stream_is_an_error() {
    let t = Tmp::new("trunc");
    let mut s = stream_of(&[(dir(""), b""), (file("f", b"0123456789"), b"01234")]);
    let (r, _) = run(serde_json::json!({"op":"unpack","path":t.join("d")}), &s);
    assert_eq!(r.expect_err("short").code, Code::Stream);
    s = b"{\"kind\":\"dir\",\"path\":\"\",\"mode\":493}\nnot json\n".to_vec();
    let (r, _) = run(serde_json::json!({"op":"unpack","path":t.join("e")}), &s);
    assert_eq!(r.expect_err("bad").code, Code::Stream);
    // The other side's error record comes back as its error.
    s = stream_of(&[(
        Record::Error {
            code: Code::NotFound,
            message: "/x: No such file".into(),
        },
        b"",
    )]);
    let (r, _) = run(serde_json::json!({"op":"unpack","path":t.join("f")}), &s);
    assert_eq!(r.expect_err("not found").code, Code::NotFound);
}

/// A writer that remembers the largest single write it was given.
struct Chunks {
    total: u64,
    largest: usize,
}

impl Write for Chunks {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.total += b.len() as u64;
        self.largest = self.largest.max(b.len());
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A reader producing `n` bytes of a pattern, never all at once.
struct Pattern {
    left: u64,
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left).min(8192) as usize;
        buf[..n].iter_mut().for_each(|b| *b = b'z');
        self.left -= n as u64;
        Ok(n)
    }
}

#[test]
fn big_files_are_streamed_in_bounded_chunks() {
    let t = Tmp::new("big");
    let big: u64 = 48 << 20;
    let src = t.join("big.bin");
    {
        let mut f = std::fs::File::create(&src).expect("create");
        std::io::copy(&mut Pattern { left: big }, &mut f).expect("fill");
    }
    let mut w = Chunks {
        total: 0,
        largest: 0,
    };
    let sum = pack_path(&src, Top::NoFollow, &mut w).expect("pack");
    assert_eq!(sum.bytes, big);
    assert!(w.total > big);
    assert!(w.largest <= 64 * 1024, "a write of {} bytes", w.largest);

    // Unpack from a stream that arrives piecewise, body never whole in memory.
    let header = stream_of(&[(dir(""), b""), (file("b", b""), b"")]);
    let header = String::from_utf8(header)
        .expect("utf8")
        .replace("\"size\":0", &format!("\"size\":{big}"));
    let tail = stream_of(&[(end(), b"")]);
    let input = std::io::Cursor::new(header.into_bytes())
        .chain(Pattern { left: big })
        .chain(std::io::Cursor::new(tail));
    let dest = t.join("d");
    std::fs::create_dir_all(&dest).expect("mkdir");
    let root = std::fs::File::open(&dest).expect("open");
    let mut r = Reader::new(std::io::BufReader::with_capacity(16 * 1024, input));
    assert!(matches!(r.record().expect("root"), Record::Dir { .. }));
    let s = unpack_rest(root.as_fd(), &mut r).expect("unpack");
    assert_eq!(s.bytes, big);
    assert_eq!(std::fs::metadata(dest.join("b")).expect("meta").len(), big);

    // `read` announces exactly what it sends.
    let (r, out) = run(
        serde_json::json!({"op":"read","path":src,"offset":big - 10,"max":100}),
        b"",
    );
    r.expect("read");
    let (a, body) = answer_of(&out);
    assert_eq!((a.size, a.returned), (Some(big), Some(10)));
    assert_eq!(body, b"zzzzzzzzzz");
}

#[test]
fn a_file_root_lands_in_a_directory_or_at_the_path() {
    let t = Tmp::new("fileroot");
    let s = stream_of(&[(file("", b"abc"), b"abc"), (end(), b"")]);
    let (r, _) = run(
        serde_json::json!({"op":"unpack","path":t.0,"name":"n.txt"}),
        &s,
    );
    r.expect("into dir");
    assert_eq!(std::fs::read(t.join("n.txt")).expect("read"), b"abc");
    let (r, _) = run(
        serde_json::json!({"op":"unpack","path":t.join("other"),"name":"n.txt"}),
        &s,
    );
    r.expect("at path");
    assert_eq!(std::fs::read(t.join("other")).expect("read"), b"abc");
    let (r, _) = run(
        serde_json::json!({"op":"unpack","path":t.0,"name":".."}),
        &s,
    );
    assert_eq!(r.expect_err("bad name").code, Code::Invalid);
}

#[test]
fn read_and_write_keep_to_their_roots() {
    let t = Tmp::new("roots");
    let root = t.join("ws");
    let outside = t.join("outside");
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("secret"), b"s3cr3t").expect("write");
    symlink(outside.join("secret"), root.join("to-secret")).expect("symlink");
    symlink(&outside, root.join("to-outside")).expect("symlink");
    let roots = serde_json::json!([root]);

    let (r, out) = run(
        serde_json::json!({"op":"read","path":root.join("to-secret"),"roots":roots}),
        b"",
    );
    assert_eq!(r.expect_err("escape").code, Code::Escape);
    assert!(!out.windows(6).any(|w| w == b"s3cr3t"));

    // Writing through a final symlink is refused, and so is a parent resolving outside.
    let (r, _) = run(
        serde_json::json!({"op":"write","path":root.join("to-secret")}),
        b"pwned",
    );
    assert_eq!(r.expect_err("symlink").code, Code::Escape);
    let (r, _) = run(
        serde_json::json!({"op":"write","path":root.join("to-outside/new"),"roots":roots}),
        b"pwned",
    );
    assert_eq!(r.expect_err("parent outside").code, Code::Escape);
    assert!(!outside.join("new").exists());
    // With `mkdirs`, nothing is created outside the roots before the refusal either.
    let (r, _) = run(
        serde_json::json!({"op":"write","path":root.join("to-outside/made/deeper/f"),"mkdirs":true,"roots":roots}),
        b"pwned",
    );
    assert_eq!(r.expect_err("mkdirs outside").code, Code::Escape);
    assert!(
        !outside.join("made").exists(),
        "a directory was made outside the roots"
    );
    assert_eq!(
        std::fs::read(outside.join("secret")).expect("read"),
        b"s3cr3t"
    );

    // Inside the roots: write, append, read back with an offset, list, stat.
    let f = root.join("sub/notes.txt");
    let (r, out) = run(
        serde_json::json!({"op":"write","path":f,"mkdirs":true,"roots":roots}),
        b"hello ",
    );
    r.expect("write");
    let (a, _) = answer_of(&out);
    assert_eq!((a.written, a.size), (Some(6), Some(6)));
    let (r, _) = run(
        serde_json::json!({"op":"write","path":f,"append":true,"roots":roots}),
        b"world",
    );
    r.expect("append");
    let (r, out) = run(
        serde_json::json!({"op":"read","path":f,"offset":6,"roots":roots}),
        b"",
    );
    r.expect("read");
    let (a, body) = answer_of(&out);
    assert_eq!(a.kind, Some(Kind::File));
    assert_eq!(body, b"world");
    let (r, out) = run(
        serde_json::json!({"op":"read","path":root.join("sub"),"roots":roots}),
        b"",
    );
    r.expect("list");
    let (a, _) = answer_of(&out);
    let entries = a.entries.expect("entries");
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].name.as_str(), entries[0].kind, entries[0].size),
        ("notes.txt", Kind::File, 11)
    );
    let (r, out) = run(serde_json::json!({"op":"stat","path":f}), b"");
    r.expect("stat");
    assert_eq!(answer_of(&out).0.kind, Some(Kind::File));
    let (r, _) = run(
        serde_json::json!({"op":"stat","path":root.join("nope")}),
        b"",
    );
    assert_eq!(r.expect_err("missing").code, Code::NotFound);
}

#[test]
fn requests_are_typed() {
    assert!(serde_json::from_str::<Request>(r#"{"op":"stat","path":"/x","extra":1}"#).is_err());
    assert!(serde_json::from_str::<Request>(r#"{"op":"chmod","path":"/x"}"#).is_err());
    let r: Request = serde_json::from_str(r#"{"op":"read","path":"/x","max":5}"#).expect("read");
    assert_eq!(
        r,
        Request::Read {
            path: "/x".into(),
            offset: 0,
            max: Some(5),
            roots: vec![]
        }
    );
}

/// The wire shapes of contract version 1, whole: a change here is a protocol change (bump
/// `FS_VERSION` and keep the host able to speak to helpers of running sandboxes).
#[test]
fn the_version_1_wire_shapes() {
    assert_eq!(FS_VERSION, 1);
    let req = |r: Request| serde_json::to_string(&r).expect("json");
    assert_eq!(
        req(Request::Stat { path: "/a".into() }),
        r#"{"op":"stat","path":"/a"}"#
    );
    assert_eq!(
        req(Request::Read {
            path: "/a".into(),
            offset: 2,
            max: Some(3),
            roots: vec!["/tmp".into()]
        }),
        r#"{"op":"read","path":"/a","offset":2,"max":3,"roots":["/tmp"]}"#
    );
    assert_eq!(
        req(Request::Write {
            path: "/a".into(),
            append: true,
            mkdirs: false,
            roots: vec![]
        }),
        r#"{"op":"write","path":"/a","append":true,"mkdirs":false}"#
    );
    assert_eq!(
        req(Request::Pack { path: "/a".into() }),
        r#"{"op":"pack","path":"/a"}"#
    );
    assert_eq!(
        req(Request::Unpack {
            path: "/a".into(),
            name: Some("b".into())
        }),
        r#"{"op":"unpack","path":"/a","name":"b"}"#
    );
    let rec = |r: Record| serde_json::to_string(&r).expect("json");
    assert_eq!(rec(dir("")), r#"{"kind":"dir","path":"","mode":493}"#);
    assert_eq!(
        rec(Record::File {
            path: "a/b".into(),
            mode: 0o644,
            size: 5,
            mtime: Some(7)
        }),
        r#"{"kind":"file","path":"a/b","mode":420,"size":5,"mtime":7}"#
    );
    assert_eq!(
        rec(Record::Symlink {
            path: "l".into(),
            target: "../x".into()
        }),
        r#"{"kind":"symlink","path":"l","target":"../x"}"#
    );
    assert_eq!(
        rec(end()),
        r#"{"kind":"end","entries":0,"bytes":0,"skipped":0}"#
    );
    assert_eq!(
        rec(Record::Error {
            code: Code::NotFound,
            message: "m".into()
        }),
        r#"{"kind":"error","code":"not_found","message":"m"}"#
    );
    let failed = Answer {
        ok: false,
        code: Some(Code::Escape),
        message: Some("m".into()),
        ..Answer::default()
    };
    assert_eq!(
        serde_json::to_string(&failed).expect("json"),
        r#"{"ok":false,"code":"escape","message":"m"}"#
    );
}
