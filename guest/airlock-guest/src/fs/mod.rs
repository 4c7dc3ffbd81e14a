//! `airlock-guest fs REQUEST`: files in and out of a sandbox without a shell or `tar` in it. The
//! request is one JSON object (the argument); data flows on stdin/stdout; the answer is one JSON
//! line on stdout (`{"ok":true,…}` or `{"ok":false,"code":…,"message":…}`, the message also on
//! stderr), followed by the bytes it announces. Paths are resolved inside, with the sandbox's
//! own credentials and view: nothing here can reach what the sandbox cannot.
//!
//! | op       | request fields                          | answer                                   |
//! |----------|-----------------------------------------|------------------------------------------|
//! | `stat`   | `path`                                  | `kind` (file/dir/symlink/other), `size`, `mode` |
//! | `read`   | `path`, `offset`, `max`, `roots`        | file: `size`, `offset`, `returned` + bytes; dir: `entries` |
//! | `write`  | `path`, `append`, `mkdirs`, `roots`; bytes on stdin | `path` (resolved), `written`, `size` |
//! | `pack`   | `path`                                  | a tree stream (`stream`) on stdout       |
//! | `unpack` | `path`, `name`; a tree stream on stdin  | `entries`, `bytes`, `skipped`, `path`    |
//!
//! `roots` (optional): the opened file's real path must be strictly beneath one of them, checked
//! on the descriptor after opening (a symlink swapped mid-call cannot lead elsewhere). `write`
//! never writes through a symlink in the last component.
//!
//! Exit status: 0 ok, 65 refused (escape), 66 not found, 1 other failures, 2 a bad request.

pub mod stream;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, Mode, SFlag};
use serde::{Deserialize, Serialize};
use std::io::{BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use stream::{Reader, Record, Top};

/// Version of the `fs` contract (requests, answers, the tree stream).
pub const FS_VERSION: u32 = 1;

/// Exit status for a refusal (a path resolving outside the allowed roots, a symlink).
pub const EXIT_ESCAPE: i32 = 65;
/// Exit status for a path that does not exist.
pub const EXIT_NOT_FOUND: i32 = 66;

/// What went wrong, stable for the host to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// Refused: outside the allowed roots, through a symlink, `..`.
    Escape,
    NotFound,
    /// Not something this operation takes (a FIFO, a device, a bad request).
    Invalid,
    Io,
    /// The stream itself broke (the other side stopped, a malformed header).
    Stream,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsError {
    pub code: Code,
    pub message: String,
}

impl FsError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        FsError {
            code,
            message: message.into(),
        }
    }

    /// A failure writing the stream: the other side is gone, no error record can follow.
    pub(crate) fn stream(e: FsError) -> Self {
        FsError::new(Code::Stream, e.message)
    }

    pub fn exit_code(&self) -> i32 {
        match self.code {
            Code::Escape => EXIT_ESCAPE,
            Code::NotFound => EXIT_NOT_FOUND,
            Code::Invalid => 2,
            Code::Io | Code::Stream => 1,
        }
    }
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FsError {}

/// One `fs` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Stat {
        path: PathBuf,
    },
    Read {
        path: PathBuf,
        #[serde(default)]
        offset: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        roots: Vec<PathBuf>,
    },
    Write {
        path: PathBuf,
        #[serde(default)]
        append: bool,
        #[serde(default)]
        mkdirs: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        roots: Vec<PathBuf>,
    },
    Pack {
        path: PathBuf,
    },
    /// Unpack a tree stream from stdin. A file root lands at `path`, or at `path/name` when
    /// `path` is a directory; a directory root lands at `path/name` (`path` created as needed),
    /// or at `path` itself without `name`.
    Unpack {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
}

/// The kind of a file, as answers name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One directory entry in a `read` of a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
}

/// The answer line of a successful request (fields by operation; absent ones are left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returned: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<DirEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<stream::Summary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Code>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The subcommand's entry point; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let [req] = args else {
        eprintln!(
            "usage: airlock-guest fs REQUEST_JSON   (e.g. '{{\"op\":\"stat\",\"path\":\"/tmp\"}}')"
        );
        return 2;
    };
    let req: Request = match serde_json::from_str(req) {
        Ok(r) => r,
        Err(e) => {
            let e = FsError::new(Code::Invalid, format!("bad fs request: {e}"));
            return fail(&mut std::io::stdout().lock(), &e);
        }
    };
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match serve(req, &mut stdin.lock(), &mut out) {
        Ok(()) => 0,
        Err(e) => fail(&mut out, &e),
    }
}

fn fail(out: &mut dyn Write, e: &FsError) -> i32 {
    // A pack that failed part-way already wrote its error record into the stream.
    eprintln!("airlock-guest fs: {e}");
    if e.code != Code::Stream {
        let a = Answer {
            ok: false,
            code: Some(e.code),
            message: Some(e.message.clone()),
            ..Answer::default()
        };
        let _ = answer(out, &a);
    }
    e.exit_code()
}

fn answer(out: &mut dyn Write, a: &Answer) -> Result<(), FsError> {
    let mut line = serde_json::to_vec(a).map_err(|e| FsError::new(Code::Io, e.to_string()))?;
    line.push(b'\n');
    out.write_all(&line)
        .and_then(|()| out.flush())
        .map_err(|e| FsError::new(Code::Stream, format!("write the answer: {e}")))
}

/// Carry out one request with `input`/`out` as its stdin/stdout.
pub fn serve(req: Request, input: &mut dyn Read, out: &mut dyn Write) -> Result<(), FsError> {
    match req {
        Request::Stat { path } => answer(out, &stat(&path)?),
        Request::Read {
            path,
            offset,
            max,
            roots,
        } => read(&path, offset, max, &roots, out),
        Request::Write {
            path,
            append,
            mkdirs,
            roots,
        } => answer(out, &write(&path, append, mkdirs, &roots, input)?),
        Request::Pack { path } => {
            // Errors are in the stream (its error record); the exit status says so too.
            stream::pack_path(&path, Top::Follow, out).map(drop)
        }
        Request::Unpack { path, name } => {
            let mut r = Reader::new(BufReader::with_capacity(64 * 1024, input));
            let (dest, sum) = unpack(&path, name.as_deref(), &mut r)?;
            answer(
                out,
                &Answer {
                    ok: true,
                    path: Some(dest.display().to_string()),
                    summary: Some(sum),
                    ..Answer::default()
                },
            )
        }
    }
}

fn errno(path: &Path, e: Errno) -> FsError {
    let code = match e {
        Errno::ENOENT => Code::NotFound,
        _ => Code::Io,
    };
    FsError::new(code, format!("{}: {}", path.display(), e.desc()))
}

fn kind(mode: u32) -> Kind {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

fn stat(path: &Path) -> Result<Answer, FsError> {
    let st = nix::sys::stat::stat(path).map_err(|e| errno(path, e))?;
    Ok(Answer {
        ok: true,
        kind: Some(kind(st.st_mode)),
        size: Some(st.st_size.max(0) as u64),
        mode: Some(st.st_mode & 0o7777),
        ..Answer::default()
    })
}

/// The path the open descriptor `fd` names (its mount namespace's view).
fn real_path(fd: &OwnedFd) -> Result<PathBuf, FsError> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| {
        FsError::new(
            Code::Io,
            format!("cannot tell where the opened file is (/proc): {e}"),
        )
    })
}

/// `p` is strictly beneath `root`.
fn beneath(p: &Path, root: &Path) -> bool {
    p.strip_prefix(root)
        .is_ok_and(|rest| !rest.as_os_str().is_empty())
}

/// When `roots` are given, the opened `fd` must be beneath one of them.
/// Without roots, no /proc is needed (the answer then names the path as asked when /proc is
/// absent, e.g. in a bare root).
fn check_roots(fd: &OwnedFd, asked: &Path, roots: &[PathBuf]) -> Result<PathBuf, FsError> {
    if roots.is_empty() {
        return Ok(real_path(fd).unwrap_or_else(|_| asked.to_path_buf()));
    }
    let real = real_path(fd)?;
    if !roots.iter().any(|r| beneath(&real, r)) {
        return Err(FsError::new(
            Code::Escape,
            format!(
                "{} resolves to {}, outside the allowed roots",
                asked.display(),
                real.display()
            ),
        ));
    }
    Ok(real)
}

fn read(
    path: &Path,
    offset: u64,
    max: Option<u64>,
    roots: &[PathBuf],
    out: &mut dyn Write,
) -> Result<(), FsError> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| errno(path, e))?;
    let real = check_roots(&fd, path, roots)?;
    let st = fstat(&fd).map_err(|e| errno(path, e))?;
    match kind(st.st_mode) {
        Kind::Dir => {
            let mut entries = Vec::new();
            for name in stream::names(fd.as_fd())? {
                let Ok(st) = nix::sys::stat::fstatat(
                    &fd,
                    name.as_os_str(),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                ) else {
                    continue;
                };
                entries.push(DirEntry {
                    name: name.to_string_lossy().into_owned(),
                    kind: kind(st.st_mode),
                    size: st.st_size.max(0) as u64,
                    mode: st.st_mode & 0o7777,
                });
            }
            answer(
                out,
                &Answer {
                    ok: true,
                    kind: Some(Kind::Dir),
                    path: Some(real.display().to_string()),
                    entries: Some(entries),
                    ..Answer::default()
                },
            )
        }
        Kind::File => {
            let size = st.st_size.max(0) as u64;
            let returned = size.saturating_sub(offset).min(max.unwrap_or(u64::MAX));
            answer(
                out,
                &Answer {
                    ok: true,
                    kind: Some(Kind::File),
                    path: Some(real.display().to_string()),
                    size: Some(size),
                    offset: Some(offset),
                    returned: Some(returned),
                    ..Answer::default()
                },
            )?;
            let mut f = std::fs::File::from(fd);
            use std::io::{Seek, SeekFrom};
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| FsError::new(Code::Io, format!("{}: {e}", path.display())))?;
            // The answer announced `returned` bytes: a file that shrank meanwhile is padded.
            let mut src = f.take(returned).chain(std::io::repeat(0)).take(returned);
            std::io::copy(&mut src, out)
                .map_err(|e| FsError::new(Code::Stream, format!("write: {e}")))?;
            out.flush()
                .map_err(|e| FsError::new(Code::Stream, format!("write: {e}")))
        }
        _ => Err(FsError::new(
            Code::Invalid,
            format!("{} is not a regular file or a directory", path.display()),
        )),
    }
}

fn split(path: &Path) -> Result<(&Path, &str), FsError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| *n != "..")
        .ok_or_else(|| {
            FsError::new(
                Code::Invalid,
                format!("{}: name a file, not a directory", path.display()),
            )
        })?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((parent, name))
}

fn open_dir(path: &Path) -> Result<OwnedFd, FsError> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ENOENT => FsError::new(
            Code::NotFound,
            format!("{}: no such directory", path.display()),
        ),
        e => errno(path, e),
    })
}

fn write(
    path: &Path,
    append: bool,
    mkdirs: bool,
    roots: &[PathBuf],
    input: &mut dyn Read,
) -> Result<Answer, FsError> {
    let (parent, name) = split(path)?;
    if mkdirs {
        if !roots.is_empty() {
            // Nothing is made outside the roots: the nearest existing ancestor, resolved, with
            // the rest of the path below it, must already be beneath one.
            let existing = parent
                .ancestors()
                .find(|a| std::fs::metadata(a).is_ok_and(|m| m.is_dir()))
                .unwrap_or(Path::new("/"));
            let rest = parent.strip_prefix(existing).unwrap_or(Path::new(""));
            let would_be = real_path(&open_dir(existing)?)?.join(rest).join(name);
            if !roots.iter().any(|r| beneath(&would_be, r)) {
                return Err(FsError::new(
                    Code::Escape,
                    format!(
                        "{} resolves to {}, outside the allowed roots",
                        path.display(),
                        would_be.display()
                    ),
                ));
            }
        }
        std::fs::create_dir_all(parent)
            .map_err(|e| FsError::new(Code::Io, format!("{}: {e}", parent.display())))?;
    }
    let dir = open_dir(parent)?;
    if !roots.is_empty() {
        // The file itself must be beneath a root: so its resolved parent must be one or below.
        let real = real_path(&dir)?.join(name);
        if !roots.iter().any(|r| beneath(&real, r)) {
            return Err(FsError::new(
                Code::Escape,
                format!(
                    "{} resolves to {}, outside the allowed roots",
                    path.display(),
                    real.display()
                ),
            ));
        }
    }
    let fd = nix::fcntl::openat(
        &dir,
        name,
        OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC
            | if append {
                OFlag::O_APPEND
            } else {
                OFlag::empty()
            },
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| match e {
        Errno::ELOOP => FsError::new(
            Code::Escape,
            format!(
                "{} is a symlink; refusing to write through it",
                path.display()
            ),
        ),
        e => errno(path, e),
    })?;
    let real = check_roots(&fd, path, roots)?;
    let st = fstat(&fd).map_err(|e| errno(path, e))?;
    if kind(st.st_mode) != Kind::File {
        return Err(FsError::new(
            Code::Invalid,
            format!("{} is not a regular file", path.display()),
        ));
    }
    // Truncated only now, after the checks on the opened file.
    if !append {
        nix::unistd::ftruncate(&fd, 0).map_err(|e| errno(path, e))?;
    }
    let mut f = std::fs::File::from(fd);
    let written = std::io::copy(input, &mut f)
        .map_err(|e| FsError::new(Code::Io, format!("{}: {e}", path.display())))?;
    let size = f.metadata().map(|m| m.len()).ok();
    Ok(Answer {
        ok: true,
        path: Some(real.display().to_string()),
        written: Some(written),
        size,
        ..Answer::default()
    })
}

fn unpack<R: std::io::BufRead>(
    path: &Path,
    name: Option<&str>,
    r: &mut Reader<R>,
) -> Result<(PathBuf, stream::Summary), FsError> {
    if let Some(n) = name {
        if n.is_empty() || n == "." || n == ".." || n.contains('/') || n.contains('\0') {
            return Err(FsError::new(
                Code::Invalid,
                format!("cannot name the copy {n:?}"),
            ));
        }
    }
    match r.record()? {
        Record::File {
            path: p,
            mode,
            size,
            mtime,
        } if p.is_empty() => {
            let is_dir = std::fs::metadata(path).is_ok_and(|m| m.is_dir());
            let dest = match name {
                Some(n) if is_dir => path.join(n),
                _ => path.to_path_buf(),
            };
            let (parent, base) = split(&dest)?;
            let dir = open_dir(parent)?;
            let mut f = stream::create_file_at(dir.as_fd(), base, mode, &dest.to_string_lossy())?;
            stream::write_body(r, &mut f, size, mtime)?;
            match r.record()? {
                Record::End { .. } => {}
                _ => return Err(FsError::new(Code::Stream, "expected the end of the stream")),
            }
            Ok((
                dest,
                stream::Summary {
                    entries: 1,
                    bytes: size,
                    skipped: 0,
                },
            ))
        }
        Record::Dir { path: p, mode } if p.is_empty() => {
            std::fs::create_dir_all(path)
                .map_err(|e| FsError::new(Code::Io, format!("{}: {e}", path.display())))?;
            let (dest, fd) = match name {
                Some(n) => {
                    let dir = open_dir(path)?;
                    let d = path.join(n);
                    let fd = stream::create_dir_at(dir.as_fd(), n, mode, &d.to_string_lossy())?;
                    (d, fd)
                }
                None => (path.to_path_buf(), open_dir(path)?),
            };
            let sum = stream::unpack_rest(fd.as_fd(), r)?;
            Ok((dest, sum))
        }
        _ => Err(FsError::new(
            Code::Stream,
            "the stream does not start with its root",
        )),
    }
}

#[cfg(test)]
mod tests;
