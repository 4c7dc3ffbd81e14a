//! `airlock cp`: files and directories in and out of a running sandbox. The sandbox side is
//! always resolved *inside* the sandbox, by the static helper (`airlock-guest fs`, mounted in
//! every sandbox) exec'd there with the sandbox's own privileges (it cannot reach anything the
//! sandbox cannot, and needs no shell or `tar` in the image); the host side is exactly the named
//! path, never followed through a symlink. Both sides speak the helper's tree stream
//! (`airlock_guest::fs::stream`): the host packs what goes in and unpacks what comes out with the
//! same checked code the helper runs inside.

use crate::error::{CliError, CliResult};
use airlock_guest::fs::stream::{self, Reader, Record, Top};
use airlock_guest::fs::{Answer, Code, FsError, Request};
use airlock_model::exit;
use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::Mode;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// `NAME:/path` -> (NAME, /path).
fn sandbox_side(s: &str) -> Option<(&str, &str)> {
    let (name, path) = s.split_once(':')?;
    (!name.is_empty() && !name.contains('/') && path.starts_with('/')).then_some((name, path))
}

fn usage(msg: impl std::fmt::Display) -> CliError {
    CliError::usage(msg)
        .hint("airlock cp HOST_PATH NAME:/path  or  airlock cp NAME:/path HOST_PATH")
}

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::new(exit::SANDBOX_FAILED, anyhow::anyhow!("{e}"))
}

pub fn cp(src: &str, dst: &str) -> CliResult<i32> {
    let (code, notes) = copy(src, dst)?;
    print_review(&notes);
    Ok(code)
}

/// The copy: the exit code, and for a directory copied out, what it holds to review.
pub fn copy(src: &str, dst: &str) -> CliResult<(i32, Vec<(PathBuf, String)>)> {
    match (sandbox_side(src), sandbox_side(dst)) {
        (None, Some((name, path))) => copy_in(Path::new(src), name, path).map(|c| (c, vec![])),
        (Some((name, path)), None) => copy_out(name, path, Path::new(dst)),
        (Some(_), Some(_)) => Err(usage("both sides name a sandbox: copy through the host")),
        (None, None) => Err(usage("neither side names a sandbox (NAME:/absolute/path)")),
    }
}

/// `airlock exec NAME -- airlock-guest fs REQUEST`, with piped stdin and stdout.
fn guest_fs(name: &str, req: &Request) -> CliResult<Child> {
    let json = serde_json::to_string(req).map_err(failed)?;
    Command::new(std::env::current_exe().map_err(failed)?)
        .args([
            "exec",
            "--interactive",
            name,
            "--",
            airlock_agent::GUEST_TOOL,
            "fs",
        ])
        .arg(json)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(failed)
}

/// The helper's (or `exec`'s) failure as our error: a refusal or a missing path by its code,
/// anything else with what it said on stderr.
fn guest_error(name: &str, inside: &str, e: Option<FsError>, child: Child) -> CliError {
    let out = child.wait_with_output();
    let stderr = out
        .as_ref()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    let code = out.ok().and_then(|o| o.status.code());
    // The helper's message may start with the path already: said once.
    let named = |m: &str| match m.strip_prefix(inside).and_then(|r| r.strip_prefix(": ")) {
        Some(rest) => format!("{name}:{inside}: {rest}"),
        None => format!("{name}:{inside}: {m}"),
    };
    match e {
        Some(e) if e.code == Code::NotFound => {
            CliError::new(exit::NOT_FOUND, anyhow::anyhow!("{}", named(&e.message)))
        }
        Some(e) if e.code == Code::Escape || e.code == Code::Invalid => usage(named(&e.message)),
        Some(e) if e.code != Code::Stream => failed(named(&e.message)),
        _ => {
            // The helper did not answer: `exec` failed (not running, no such sandbox) and said
            // why on stderr, or the helper is missing (a sandbox started by an older airlock).
            // `exec`'s own error is ours, said once: its `airlock: error: ` prefix and its
            // `hint: ` line are taken apart, not printed inside our message.
            let said = stderr
                .lines()
                .filter(|l| !l.starts_with("airlock-guest fs:"))
                .collect::<Vec<_>>()
                .join("\n");
            let (why, hint) = airlock_engine::supervisor::said_error(&said)
                .unwrap_or((if said.is_empty() { stderr } else { said }, None));
            let err = CliError::new(
                code.filter(|c| *c != 0).unwrap_or(exit::SANDBOX_FAILED),
                anyhow::anyhow!("{why}"),
            )
            .maybe_hint(hint);
            if code == Some(exit::NOT_FOUND_CMD) || code == Some(126) {
                err.hint(format!(
                    "{name} has no {} (started by an older airlock?): `airlock restart {name}`",
                    airlock_agent::GUEST_TOOL
                ))
            } else {
                err
            }
        }
    }
}

fn copy_in(host: &Path, name: &str, inside: &str) -> CliResult<i32> {
    let meta =
        std::fs::symlink_metadata(host).map_err(|e| usage(format!("{}: {e}", host.display())))?;
    if meta.file_type().is_symlink() {
        return Err(usage(format!(
            "{} is a symlink; name the file it points to",
            host.display()
        )));
    }
    if !meta.is_file() && !meta.is_dir() {
        return Err(usage(format!(
            "{}: only regular files and directories can be copied",
            host.display()
        )));
    }
    let base = host
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .ok_or_else(|| usage(format!("{}: name a file or directory", host.display())))?;
    let mut child = guest_fs(
        name,
        &Request::Unpack {
            path: inside.into(),
            name: Some(base),
        },
    )?;
    let stdin = child.stdin.take().ok_or_else(|| failed("no stdin"))?;
    let stdout = child.stdout.take().ok_or_else(|| failed("no stdout"))?;
    // The host side is read here, as the invoking user, never through a symlink (the top was
    // checked above and is opened O_NOFOLLOW; below it symlinks travel as symlinks).
    let host_path = host.to_path_buf();
    let packer = std::thread::spawn(move || {
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, stdin);
        stream::pack_path(&host_path, Top::NoFollow, &mut w)
    });
    let answer = read_answer(stdout);
    let packed = packer
        .join()
        .map_err(|_| failed("the copy thread panicked"))?;
    match (packed, answer) {
        (Err(e), _) if e.code != Code::Stream => {
            let _ = child.wait();
            Err(usage(format!("{}: {}", host.display(), e.message)))
        }
        (_, Ok(a)) if a.ok => {
            let st = child.wait().map_err(failed)?;
            Ok(st.code().unwrap_or(exit::SANDBOX_FAILED))
        }
        (_, Ok(a)) => Err(guest_error(
            name,
            inside,
            Some(FsError::new(
                a.code.unwrap_or(Code::Io),
                a.message.unwrap_or_default(),
            )),
            child,
        )),
        (_, Err(e)) => Err(guest_error(name, inside, Some(e), child)),
    }
}

/// The helper's answer line.
fn read_answer(out: impl Read) -> Result<Answer, FsError> {
    let mut line = Vec::new();
    BufReader::new(out.take(1 << 20))
        .read_until(b'\n', &mut line)
        .map_err(|e| FsError::new(Code::Stream, e.to_string()))?;
    if line.is_empty() {
        return Err(FsError::new(Code::Stream, "no answer"));
    }
    serde_json::from_slice(&line).map_err(|e| FsError::new(Code::Stream, e.to_string()))
}

/// Open `host` for writing a copied file: never through a symlink; into it if it is a directory.
fn open_host_dest(host: &Path, base: &str) -> CliResult<OwnedFd> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mode = Mode::from_bits_truncate(0o644);
    match std::fs::symlink_metadata(host) {
        Ok(m) if m.file_type().is_symlink() => Err(usage(format!(
            "{} is a symlink; name a real path",
            host.display()
        ))),
        Ok(m) if m.is_dir() => {
            let dir = open(
                host,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| usage(format!("{}: {e}", host.display())))?;
            if base.is_empty() || base == "." || base == ".." || base.contains('/') {
                return Err(usage(format!("cannot name the copy of {base:?}")));
            }
            openat(&dir, base, flags, mode)
                .map_err(|e| usage(format!("{}/{base}: {e}", host.display())))
        }
        _ => open(host, flags, mode).map_err(|e| usage(format!("{}: {e}", host.display()))),
    }
}

fn copy_out(name: &str, inside: &str, host: &Path) -> CliResult<(i32, Vec<(PathBuf, String)>)> {
    let base = Path::new(inside)
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut child = guest_fs(
        name,
        &Request::Pack {
            path: inside.into(),
        },
    )?;
    drop(child.stdin.take());
    let stdout = child.stdout.take().ok_or_else(|| failed("no stdout"))?;
    let mut r = Reader::new(BufReader::with_capacity(64 * 1024, stdout));
    // The helper resolved the path inside, as the sandbox sees it; its first record says what
    // it is.
    let root = match r.record() {
        Ok(rec) => rec,
        Err(e) => return Err(guest_error(name, inside, Some(e), child)),
    };
    let copied = match root {
        Record::File {
            path, size, mtime, ..
        } if path.is_empty() => {
            let dest = if host.is_dir() {
                host.join(&base)
            } else {
                host.to_path_buf()
            };
            let created = std::fs::symlink_metadata(&dest).is_err();
            let mut f = std::fs::File::from(open_host_dest(host, &base)?);
            let written = stream::write_body(&mut r, &mut f, size, mtime).and_then(|()| {
                match r.record()? {
                    Record::End { .. } => Ok(None),
                    _ => Err(FsError::new(Code::Stream, "expected the end of the stream")),
                }
            });
            if written.is_err() && created {
                // Nothing half-copied is left behind (a file that was there stays, truncated).
                let _ = std::fs::remove_file(&dest);
            }
            written
        }
        Record::Dir { path, .. } if path.is_empty() => {
            // Unpacked into a new directory only, every entry checked (no `..`, no absolute
            // names, never through a symlink, not even one the stream made).
            let target: PathBuf = if host.is_dir() {
                host.join(&base)
            } else {
                host.to_path_buf()
            };
            if std::fs::symlink_metadata(&target).is_ok() {
                return Err(usage(format!(
                    "{} exists; copy a directory out into a new path",
                    target.display()
                )));
            }
            std::fs::create_dir(&target)
                .map_err(|e| usage(format!("{}: {e}", target.display())))?;
            let unpacked = open(
                &target,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| FsError::new(Code::Io, format!("{}: {e}", target.display())))
            .and_then(|fd| stream::unpack_rest(fd.as_fd(), &mut r));
            match unpacked {
                Ok(_) => Ok(Some(target)),
                Err(e) => {
                    // Nothing half-copied is left behind.
                    let _ = std::fs::remove_dir_all(&target);
                    Err(e)
                }
            }
        }
        _ => Err(FsError::new(
            Code::Stream,
            "the stream does not start with its root",
        )),
    };
    match copied {
        Ok(tree) => {
            let st = child.wait().map_err(failed)?;
            let notes = match tree {
                Some(t) => review_copy(&t)
                    .into_iter()
                    .map(|n| (t.clone(), n))
                    .collect(),
                None => vec![],
            };
            Ok((st.code().unwrap_or(exit::SANDBOX_FAILED), notes))
        }
        Err(e) => Err(guest_error(name, inside, Some(e), child)),
    }
}

/// What a copied-out tree brings that the host would obey or follow: set-id bits (cleared),
/// symlinks leaving the copy, git control directories and tool configuration (listed, so the
/// user reviews them before running git or tools there). Sorted.
fn review_copy(top: &Path) -> Vec<String> {
    use airlock_work::gate::{config_kind, shown, symlink_escapes};
    use std::os::unix::fs::PermissionsExt;
    let mut notes = Vec::new();
    let mut stack = vec![top.to_path_buf()];
    let mut budget = 300_000usize;
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if budget == 0 {
                break;
            }
            budget -= 1;
            let p = e.path();
            let rel = p
                .strip_prefix(top)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap_or_default();
                if symlink_escapes(&rel, t.as_os_str().as_encoded_bytes()) {
                    notes.push(format!(
                        "{}  symlink leaving the copy -> {}",
                        shown(&rel),
                        shown(&t.to_string_lossy())
                    ));
                }
                continue;
            }
            if e.file_name().to_string_lossy().eq_ignore_ascii_case(".git") {
                notes.push(format!("{}  a git repository's control files (git run inside obeys its config and hooks)", shown(&rel)));
                continue;
            } else if let Some(k) = config_kind(&rel) {
                notes.push(format!("{}  {}", shown(&rel), k.label()));
            }
            if m.is_dir() {
                stack.push(p);
            } else if m.permissions().mode() & 0o6000 != 0 {
                let mode = m.permissions().mode() & 0o777;
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode));
                notes.push(format!("{}  set-id bit cleared", shown(&rel)));
            }
        }
    }
    notes.sort();
    notes
}

/// The review notes of a copy, on stderr.
fn print_review(notes: &[(PathBuf, String)]) {
    let Some((top, _)) = notes.first() else {
        return;
    };
    errln!(
        "airlock: the copy in {} holds what tools obey or follow; review before running them there:",
        top.display()
    );
    for (_, n) in notes.iter().take(50) {
        errln!("  {n}");
    }
    if notes.len() > 50 {
        errln!("  … and {} more", notes.len() - 50);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides() {
        assert_eq!(sandbox_side("box:/a/b"), Some(("box", "/a/b")));
        assert_eq!(sandbox_side("box:rel"), None);
        assert_eq!(sandbox_side("/host/path"), None);
        assert_eq!(sandbox_side("./a:b"), None);
        assert_eq!(sandbox_side(":/x"), None);
    }
}
