//! `airlock cp`: files and directories in and out of a running sandbox. The sandbox side is
//! always resolved *inside* the sandbox, by a process exec'd there with the sandbox's own
//! privileges (it cannot reach anything the sandbox cannot); the host side is exactly the named
//! path, never followed through a symlink.

use crate::cmd::exec::exec_in;
use crate::error::{CliError, CliResult};
use airlock_model::exit;
use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::Mode;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `NAME:/path` -> (NAME, /path).
fn sandbox_side(s: &str) -> Option<(&str, &str)> {
    let (name, path) = s.split_once(':')?;
    (!name.is_empty() && !name.contains('/') && path.starts_with('/')).then_some((name, path))
}

fn usage(msg: impl std::fmt::Display) -> CliError {
    CliError::usage(msg)
        .hint("airlock cp HOST_PATH NAME:/path  or  airlock cp NAME:/path HOST_PATH")
}

fn redirect(fd: &OwnedFd, to: i32) -> CliResult<()> {
    airlock_sandbox::sys::dup2(fd.as_raw_fd(), to)
        .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))
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

fn copy_in(host: &Path, name: &str, inside: &str) -> CliResult<i32> {
    let meta =
        std::fs::symlink_metadata(host).map_err(|e| usage(format!("{}: {e}", host.display())))?;
    if meta.file_type().is_symlink() {
        return Err(usage(format!(
            "{} is a symlink; name the file it points to",
            host.display()
        )));
    }
    if meta.is_file() {
        let f = open(
            host,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| usage(format!("{}: {e}", host.display())))?;
        redirect(&f, 0)?;
        let base = host
            .file_name()
            .map(|b| b.to_string_lossy().into_owned())
            .unwrap_or_default();
        let script = r#"if [ -d "$1" ]; then exec cat > "$1/$2"; else exec cat > "$1"; fi"#;
        return exec_in(
            name,
            vec![
                "/bin/sh".into(),
                "-c".into(),
                script.into(),
                "sh".into(),
                inside.into(),
                base,
            ],
            &[],
            None,
            false,
            true,
            false,
        );
    }
    if meta.is_dir() {
        // tar on the host reads the directory as the invoking user (symlinks stay symlinks);
        // tar inside extracts it as the sandbox user, into the sandbox's own view.
        let parent = host
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = host
            .file_name()
            .ok_or_else(|| usage(format!("{}: no directory name", host.display())))?;
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(parent)
            .arg("-cf")
            .arg("-")
            .arg(base)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| CliError::new(exit::SANDBOX_FAILED, anyhow::anyhow!("run tar: {e}")))?;
        let out = tar.stdout.take().ok_or_else(|| {
            CliError::new(exit::SANDBOX_FAILED, anyhow::anyhow!("tar has no stdout"))
        })?;
        redirect(&OwnedFd::from(out), 0)?;
        let script = r#"mkdir -p "$1" && exec tar -C "$1" -xf - --no-same-owner"#;
        let code = exec_in(
            name,
            vec![
                "/bin/sh".into(),
                "-c".into(),
                script.into(),
                "sh".into(),
                inside.into(),
            ],
            &[],
            None,
            false,
            true,
            false,
        )?;
        let _ = tar.wait();
        return Ok(code);
    }
    Err(usage(format!(
        "{}: only regular files and directories can be copied",
        host.display()
    )))
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
    // Ask the sandbox what the path is (resolved inside, as the sandbox sees it).
    let kind = {
        let probe = r#"if [ -d "$1" ]; then echo dir; elif [ -f "$1" ]; then echo file; else echo none; fi"#;
        let out = Command::new(
            std::env::current_exe().map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?,
        )
        .args(["exec", name, "--", "/bin/sh", "-c", probe, "sh", inside])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
        if !out.status.success() {
            return Err(CliError::new(
                out.status.code().unwrap_or(exit::SANDBOX_FAILED),
                anyhow::anyhow!("{}", String::from_utf8_lossy(&out.stderr).trim()),
            ));
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    match kind.as_str() {
        "file" => {
            let f = open_host_dest(host, &base)?;
            redirect(&f, 1)?;
            exec_in(
                name,
                vec!["cat".into(), "--".into(), inside.into()],
                &[],
                None,
                false,
                false,
                false,
            )
            .map(|c| (c, vec![]))
        }
        "dir" => {
            // Extract into a new directory only, with GNU tar's protections against members that
            // climb out (`..`, absolute names, writes through symlinks it created).
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
            let mut tar = Command::new("tar")
                .arg("-C")
                .arg(&target)
                .args([
                    "-xf",
                    "-",
                    "--no-same-owner",
                    "--no-same-permissions",
                    "--no-overwrite-dir",
                ])
                .stdin(Stdio::piped())
                .spawn()
                .map_err(|e| {
                    CliError::new(exit::SANDBOX_FAILED, anyhow::anyhow!("run tar: {e}"))
                })?;
            let input = tar.stdin.take().ok_or_else(|| {
                CliError::new(exit::SANDBOX_FAILED, anyhow::anyhow!("tar has no stdin"))
            })?;
            let input = OwnedFd::from(input);
            redirect(&input, 1)?;
            drop(input);
            let code = exec_in(
                name,
                vec![
                    "tar".into(),
                    "-C".into(),
                    inside.into(),
                    "-cf".into(),
                    "-".into(),
                    ".".into(),
                ],
                &[],
                None,
                false,
                false,
                false,
            )?;
            // Close our stdout (the pipe) so tar sees the end.
            let null = open("/dev/null", OFlag::O_WRONLY, Mode::empty())
                .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
            redirect(&null, 1)?;
            let st = tar
                .wait()
                .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
            let notes = review_copy(&target)
                .into_iter()
                .map(|n| (target.clone(), n))
                .collect();
            let code = if code == 0 && !st.success() {
                exit::SANDBOX_FAILED
            } else {
                code
            };
            Ok((code, notes))
        }
        _ => Err(CliError::new(
            exit::NOT_FOUND,
            anyhow::anyhow!("{name}:{inside}: no such file or directory"),
        )),
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
