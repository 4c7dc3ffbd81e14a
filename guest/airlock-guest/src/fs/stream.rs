//! The tree stream: a directory or file as NDJSON headers, each file's bytes raw after its
//! header. `airlock-guest fs pack` writes it and `fs unpack` reads it inside a sandbox; the host
//! side of `airlock cp` uses the same functions on the host.
//!
//! ```text
//! {"kind":"dir","path":"","mode":493}            the root itself (path "")
//! {"kind":"file","path":"a.txt","mode":420,"size":5,"mtime":1700000000}
//! hello                                          exactly `size` raw bytes
//! {"kind":"symlink","path":"l","target":"a.txt"}
//! {"kind":"end","entries":3,"bytes":5,"skipped":0}
//! ```
//! An `{"kind":"error","code":…,"message":…}` record may come instead of any header.
//!
//! Reading never follows a symlink below the root (symlinks travel as symlinks); writing walks
//! every parent component with `O_NOFOLLOW | O_DIRECTORY` from the destination's descriptor, so
//! an entry can never land outside the destination: not through `..`, an absolute name, or a
//! symlink (not even one the same stream created). Modes keep the permission bits only (no
//! set-id or sticky bits); ownership is the writer's own.

use super::{Code, FsError};
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{symlinkat, unlinkat, UnlinkatFlags};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Longest header line accepted.
const MAX_HEADER: u64 = 64 * 1024;
/// Deepest directory nesting packed or unpacked.
const MAX_DEPTH: usize = 256;
/// Copy buffer (files are streamed through it, never held whole).
const BUF: usize = 64 * 1024;

/// One record of the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        size: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mtime: Option<i64>,
    },
    Symlink {
        path: String,
        target: String,
    },
    End {
        entries: u64,
        bytes: u64,
        /// Entries left out: sockets, devices, FIFOs (and files that changed size while read).
        skipped: u64,
    },
    Error {
        code: Code,
        message: String,
    },
}

/// What a whole stream carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub entries: u64,
    pub bytes: u64,
    pub skipped: u64,
}

/// Whether the root named to `pack` may be a symlink (followed) or must not be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Top {
    Follow,
    NoFollow,
}

fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> FsError {
    FsError::new(Code::Io, format!("{what}: {e}"))
}

fn errno(what: impl std::fmt::Display, e: Errno) -> FsError {
    let code = match e {
        Errno::ENOENT => Code::NotFound,
        Errno::ELOOP | Errno::ENOTDIR => Code::Escape,
        _ => Code::Io,
    };
    FsError::new(code, format!("{what}: {}", e.desc()))
}

fn write_record(out: &mut dyn Write, r: &Record) -> Result<(), FsError> {
    let mut line = serde_json::to_vec(r).map_err(|e| io("encode", e))?;
    line.push(b'\n');
    out.write_all(&line).map_err(|e| io("write the stream", e))
}

fn perm(st: &FileStat) -> u32 {
    st.st_mode & 0o777
}

fn kind_of(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Copy exactly `size` bytes from `src` to `out`. A file that shrank while read is padded with
/// zeros (the header already promised `size`): returns false then.
fn copy_exact(src: &mut dyn Read, out: &mut dyn Write, size: u64) -> Result<bool, FsError> {
    let mut buf = vec![0u8; BUF];
    let mut left = size;
    let mut whole = true;
    while left > 0 {
        let want = left.min(BUF as u64) as usize;
        let n = if whole {
            match src.read(&mut buf[..want]) {
                Ok(0) => {
                    whole = false;
                    buf[..want].fill(0);
                    want
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io("read", e)),
            }
        } else {
            want
        };
        out.write_all(&buf[..n])
            .map_err(|e| io("write the stream", e))?;
        left -= n as u64;
    }
    Ok(whole)
}

/// The names in the directory open at `dir`, sorted (without `.` and `..`).
pub(crate) fn names(dir: BorrowedFd<'_>) -> Result<Vec<OsString>, FsError> {
    let fd = dir.try_clone_to_owned().map_err(|e| io("dup", e))?;
    let mut d = nix::dir::Dir::from_fd(fd).map_err(|e| errno("opendir", e))?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e.map_err(|e| errno("readdir", e))?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsString::from(std::ffi::OsStr::from_bytes(n)));
        }
    }
    out.sort();
    Ok(out)
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Write the stream of `path` (a regular file or a directory tree) to `out`, ending with an
/// `end` record; on failure an `error` record is written too (when the stream still works).
pub fn pack_path(path: &Path, top: Top, out: &mut dyn Write) -> Result<Summary, FsError> {
    let r = pack_inner(path, top, out);
    match &r {
        Ok(s) => write_record(
            out,
            &Record::End {
                entries: s.entries,
                bytes: s.bytes,
                skipped: s.skipped,
            },
        )?,
        Err(e) if e.code != Code::Stream => {
            let _ = write_record(
                out,
                &Record::Error {
                    code: e.code,
                    message: e.message.clone(),
                },
            );
        }
        Err(_) => {}
    }
    let _ = out.flush();
    r
}

fn pack_inner(path: &Path, top: Top, out: &mut dyn Write) -> Result<Summary, FsError> {
    let shown = path.display();
    let mut flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    if top == Top::NoFollow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let fd = nix::fcntl::open(path, flags, Mode::empty()).map_err(|e| match e {
        Errno::ELOOP => FsError::new(
            Code::Invalid,
            format!("{shown} is a symlink; name what it points to"),
        ),
        e => errno(&shown, e),
    })?;
    let st = fstat(&fd).map_err(|e| errno(&shown, e))?;
    let mut sum = Summary::default();
    match kind_of(&st) {
        SFlag::S_IFREG => pack_file(fd, &st, "", out, &mut sum)?,
        SFlag::S_IFDIR => {
            write_record(
                out,
                &Record::Dir {
                    path: String::new(),
                    mode: perm(&st),
                },
            )
            .map_err(FsError::stream)?;
            sum.entries += 1;
            pack_dir(fd.as_fd(), "", 0, out, &mut sum)?;
        }
        _ => {
            return Err(FsError::new(
                Code::Invalid,
                format!("{shown}: only regular files and directories can be copied"),
            ))
        }
    }
    Ok(sum)
}

fn pack_file(
    fd: OwnedFd,
    st: &FileStat,
    rel: &str,
    out: &mut dyn Write,
    sum: &mut Summary,
) -> Result<(), FsError> {
    let size = st.st_size.max(0) as u64;
    write_record(
        out,
        &Record::File {
            path: rel.to_string(),
            mode: perm(st),
            size,
            mtime: Some(st.st_mtime),
        },
    )
    .map_err(FsError::stream)?;
    let mut f = File::from(fd);
    if !copy_exact(&mut f, out, size).map_err(FsError::stream)? {
        sum.skipped += 1;
    }
    sum.entries += 1;
    sum.bytes += size;
    Ok(())
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

fn pack_dir(
    dir: BorrowedFd<'_>,
    prefix: &str,
    depth: usize,
    out: &mut dyn Write,
    sum: &mut Summary,
) -> Result<(), FsError> {
    if depth >= MAX_DEPTH {
        return Err(FsError::new(
            Code::Invalid,
            format!("{prefix}: deeper than {MAX_DEPTH} directories"),
        ));
    }
    for name in names(dir)? {
        let Some(s) = name.to_str() else {
            // Names travel as JSON strings: a name that is not UTF-8 is left out, counted.
            sum.skipped += 1;
            continue;
        };
        let rel = join(prefix, s);
        let st = fstatat(
            dir,
            name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| errno(&rel, e))?;
        match kind_of(&st) {
            SFlag::S_IFLNK => {
                let t = readlinkat(dir, name.as_os_str()).map_err(|e| errno(&rel, e))?;
                let Some(target) = t.to_str() else {
                    sum.skipped += 1;
                    continue;
                };
                write_record(
                    out,
                    &Record::Symlink {
                        path: rel,
                        target: target.to_string(),
                    },
                )
                .map_err(FsError::stream)?;
                sum.entries += 1;
            }
            SFlag::S_IFDIR => {
                let fd = open_dir_at(dir, &name).map_err(|e| errno(&rel, e))?;
                write_record(
                    out,
                    &Record::Dir {
                        path: rel.clone(),
                        mode: perm(&st),
                    },
                )
                .map_err(FsError::stream)?;
                sum.entries += 1;
                pack_dir(fd.as_fd(), &rel, depth + 1, out, sum)?;
            }
            SFlag::S_IFREG => {
                // NONBLOCK: if it was swapped for a FIFO since the stat, the open does not hang;
                // the opened file is checked again below.
                let fd = openat(
                    dir,
                    name.as_os_str(),
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| errno(&rel, e))?;
                let st = fstat(&fd).map_err(|e| errno(&rel, e))?;
                if kind_of(&st) != SFlag::S_IFREG {
                    sum.skipped += 1;
                    continue;
                }
                pack_file(fd, &st, &rel, out, sum)?;
            }
            _ => sum.skipped += 1,
        }
    }
    Ok(())
}

/// Reads records (and file bodies) from a stream.
pub struct Reader<R: BufRead> {
    input: R,
}

impl<R: BufRead> Reader<R> {
    pub fn new(input: R) -> Self {
        Reader { input }
    }

    /// The next record; an `error` record is returned as the error it carries.
    pub fn record(&mut self) -> Result<Record, FsError> {
        let mut line = Vec::new();
        (&mut self.input)
            .take(MAX_HEADER)
            .read_until(b'\n', &mut line)
            .map_err(|e| FsError::new(Code::Stream, format!("read the stream: {e}")))?;
        if line.is_empty() {
            return Err(FsError::new(
                Code::Stream,
                "the stream ended early (the other side stopped)",
            ));
        }
        if line.last() != Some(&b'\n') {
            return Err(FsError::new(Code::Stream, "a header line is too long"));
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(Record::Error { code, message }) => Err(FsError::new(code, message)),
            Ok(r) => Ok(r),
            Err(e) => Err(FsError::new(Code::Stream, format!("bad header: {e}"))),
        }
    }

    /// Copy the next `size` body bytes to `out` (streamed, never held whole).
    pub fn body_to(&mut self, size: u64, out: &mut dyn Write) -> Result<(), FsError> {
        let mut src = (&mut self.input).take(size);
        let n = std::io::copy(&mut src, out).map_err(|e| io("copy", e))?;
        if n != size {
            return Err(FsError::new(Code::Stream, "the stream ended inside a file"));
        }
        Ok(())
    }
}

/// `rel` as checked components: not empty, no `.`/`..`, no empty component, no NUL.
fn components(rel: &str) -> Result<Vec<&str>, FsError> {
    let bad = || {
        FsError::new(
            Code::Escape,
            format!("refusing the entry {rel:?}: not a plain relative path"),
        )
    };
    if rel.is_empty() || rel.len() > 4096 || rel.contains('\0') {
        return Err(bad());
    }
    let parts: Vec<&str> = rel.split('/').collect();
    if parts.len() > MAX_DEPTH
        || parts
            .iter()
            .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(bad());
    }
    Ok(parts)
}

/// The directory `parts` names below `root`, each step `O_NOFOLLOW`.
fn walk(root: BorrowedFd<'_>, parts: &[&str], rel: &str) -> Result<OwnedFd, FsError> {
    let mut cur = root.try_clone_to_owned().map_err(|e| io("dup", e))?;
    for p in parts {
        cur = open_dir_at(cur.as_fd(), std::ffi::OsStr::new(p)).map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => FsError::new(
                Code::Escape,
                format!("refusing the entry {rel:?}: {p} is a symlink or not a directory"),
            ),
            e => errno(rel, e),
        })?;
    }
    Ok(cur)
}

/// Create a file `name` in `dir` (never through a symlink; an existing file is replaced in
/// place) and return it open for writing.
pub(crate) fn create_file_at(
    dir: BorrowedFd<'_>,
    name: &str,
    mode: u32,
    rel: &str,
) -> Result<File, FsError> {
    let fd = openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode & 0o777),
    )
    .map_err(|e| match e {
        Errno::ELOOP => FsError::new(
            Code::Escape,
            format!("refusing to write {rel:?} through a symlink"),
        ),
        Errno::ENXIO => FsError::new(Code::Invalid, format!("{rel:?} is a FIFO")),
        e => errno(rel, e),
    })?;
    let st = fstat(&fd).map_err(|e| errno(rel, e))?;
    if kind_of(&st) != SFlag::S_IFREG {
        return Err(FsError::new(
            Code::Invalid,
            format!("{rel:?} exists and is not a regular file"),
        ));
    }
    nix::unistd::ftruncate(&fd, 0).map_err(|e| errno(rel, e))?;
    Ok(File::from(fd))
}

/// Create directory `name` in `dir` (an existing directory is fine) and open it.
pub(crate) fn create_dir_at(
    dir: BorrowedFd<'_>,
    name: &str,
    mode: u32,
    rel: &str,
) -> Result<OwnedFd, FsError> {
    match mkdirat(dir, name, Mode::from_bits_truncate((mode & 0o777) | 0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(errno(rel, e)),
    }
    open_dir_at(dir, std::ffi::OsStr::new(name)).map_err(|e| match e {
        Errno::ELOOP | Errno::ENOTDIR => FsError::new(
            Code::Escape,
            format!("refusing the entry {rel:?}: it exists as a symlink or a file"),
        ),
        e => errno(rel, e),
    })
}

fn set_mtime(f: &File, mtime: Option<i64>) {
    if let Some(t) = mtime {
        let ts = nix::sys::time::TimeSpec::new(t, 0);
        let now = nix::sys::time::TimeSpec::new(0, libc::UTIME_OMIT);
        let _ = nix::sys::stat::futimens(f, &now, &ts);
    }
}

/// Write one file record's body into `f`, then its time.
pub fn write_body<R: BufRead>(
    r: &mut Reader<R>,
    f: &mut File,
    size: u64,
    mtime: Option<i64>,
) -> Result<(), FsError> {
    let mut w = std::io::BufWriter::with_capacity(BUF, &mut *f);
    r.body_to(size, &mut w)?;
    w.flush().map_err(|e| io("write", e))?;
    drop(w);
    set_mtime(f, mtime);
    Ok(())
}

/// Unpack every record after the root into the directory open at `root`, up to the `end`
/// record. Returns what the stream carried (the root included, as `entries` counts it).
pub fn unpack_rest<R: BufRead>(
    root: BorrowedFd<'_>,
    r: &mut Reader<R>,
) -> Result<Summary, FsError> {
    let mut sum = Summary {
        entries: 1,
        ..Summary::default()
    };
    loop {
        let rec = r.record()?;
        let rel = match &rec {
            Record::End { skipped, .. } => {
                sum.skipped += skipped;
                return Ok(sum);
            }
            Record::Dir { path, .. } | Record::File { path, .. } | Record::Symlink { path, .. } => {
                path.clone()
            }
            Record::Error { .. } => unreachable!("returned as an error by record()"),
        };
        let parts = components(&rel)?;
        let (name, parents) = parts
            .split_last()
            .ok_or_else(|| FsError::new(Code::Escape, format!("refusing the entry {rel:?}")))?;
        let parent = walk(root, parents, &rel)?;
        match rec {
            Record::Dir { mode, .. } => {
                create_dir_at(parent.as_fd(), name, mode, &rel)?;
            }
            Record::File {
                mode, size, mtime, ..
            } => {
                let mut f = create_file_at(parent.as_fd(), name, mode, &rel)?;
                write_body(r, &mut f, size, mtime)?;
                sum.bytes += size;
            }
            Record::Symlink { target, .. } => {
                if target.is_empty() || target.contains('\0') {
                    return Err(FsError::new(
                        Code::Invalid,
                        format!("refusing the symlink {rel:?}: empty target"),
                    ));
                }
                match symlinkat(target.as_str(), parent.as_fd(), *name) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => {
                        // Replace an existing symlink or file; never a directory.
                        let st = fstatat(
                            parent.as_fd(),
                            *name,
                            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                        )
                        .map_err(|e| errno(&rel, e))?;
                        if kind_of(&st) == SFlag::S_IFDIR {
                            return Err(FsError::new(
                                Code::Invalid,
                                format!("{rel:?} exists as a directory"),
                            ));
                        }
                        unlinkat(parent.as_fd(), *name, UnlinkatFlags::NoRemoveDir)
                            .map_err(|e| errno(&rel, e))?;
                        symlinkat(target.as_str(), parent.as_fd(), *name)
                            .map_err(|e| errno(&rel, e))?;
                    }
                    Err(e) => return Err(errno(&rel, e)),
                }
            }
            Record::End { .. } | Record::Error { .. } => {}
        }
        sum.entries += 1;
    }
}
