//! The static in-sandbox helper, carried inside the airlock binary (built by `build.rs`), and its
//! installation: written once per content under the state directory,
//! `STATE/guest/<sha256>/airlock-guest` (0555, temp file + rename, verified), from where it is
//! bind-mounted read-only into sandboxes (and copied into VM disks).

mod elf;

pub use elf::{elf_interpreter, elf_linking, Linking};

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The executable's bytes (static, no `PT_INTERP`; checked at build time).
pub static BYTES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/airlock-guest"));

/// SHA-256 of [`BYTES`], lower-case hex: its directory under `STATE/guest/`.
pub const SHA256: &str = include_str!(concat!(env!("OUT_DIR"), "/airlock-guest.sha256"));

/// The file name inside the installation directory (and inside sandboxes).
pub const NAME: &str = "airlock-guest";

/// Where [`install`] puts the helper for the state directory `state`.
pub fn installed_path(state: &Path) -> PathBuf {
    state.join("guest").join(SHA256).join(NAME)
}

/// Does the regular file (not a symlink) at `path` hold exactly [`BYTES`], mode 0555?
fn is_intact(path: &Path) -> std::io::Result<bool> {
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(false), // a symlink
        Err(e) => return Err(e),
    };
    let m = f.metadata()?;
    if !m.is_file() || m.len() != BYTES.len() as u64 || m.permissions().mode() & 0o7777 != 0o555 {
        return Ok(false);
    }
    let mut have = Vec::with_capacity(BYTES.len());
    f.take(BYTES.len() as u64 + 1).read_to_end(&mut have)?;
    Ok(have == BYTES)
}

/// Install the helper under the state directory `state` unless an intact copy is there; its
/// path. Concurrent callers are safe: each writes its own temporary file and links it into
/// place only if nothing is there yet, so an intact copy, once published, stays the same
/// file (sandboxes starting in parallel bind it by path: a copy renamed over another's would
/// leave a starting sandbox holding an unlinked file, and its bind fails). A damaged or
/// replaced copy is rewritten.
pub fn install(state: &Path) -> std::io::Result<PathBuf> {
    let path = installed_path(state);
    if is_intact(&path)? {
        return Ok(path);
    }
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no install directory"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{NAME}.tmp-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(BYTES)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o555))?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, &path) {
            Ok(()) => std::fs::remove_file(&tmp),
            // Another caller published first: keep its copy if it is intact.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if is_intact(&path)? {
                    std::fs::remove_file(&tmp)
                } else {
                    std::fs::rename(&tmp, &path)
                }
            }
            Err(e) => Err(e),
        }
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if !is_intact(&path)? {
        return Err(std::io::Error::other(format!(
            "{} does not hold the helper after writing it",
            path.display()
        )));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Callers racing on a fresh state directory all get the one file the first published:
    /// none replaces another's copy under it.
    #[test]
    fn parallel_installs_publish_one_file() {
        use std::os::unix::fs::MetadataExt;
        for round in 0..5 {
            let state = std::env::temp_dir().join(format!(
                "airlock-guest-embed-{}-{round}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&state);
            let go = std::sync::Arc::new(std::sync::Barrier::new(16));
            let inodes: Vec<u64> = (0..16)
                .map(|_| {
                    let (state, go) = (state.clone(), go.clone());
                    std::thread::spawn(move || {
                        go.wait();
                        let p = install(&state).expect("install");
                        // What a sandbox starting now would bind.
                        std::fs::File::open(&p).unwrap().metadata().unwrap().ino()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect();
            let now = std::fs::metadata(installed_path(&state)).unwrap().ino();
            assert!(
                inodes.iter().all(|i| *i == now),
                "round {round}: callers got {inodes:?}, the path holds {now}"
            );
            let left: Vec<_> = std::fs::read_dir(installed_path(&state).parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(left.len(), 1, "temporary files left: {left:?}");
            let _ = std::fs::remove_dir_all(&state);
        }
    }

    #[test]
    fn the_embedded_helper_is_static() {
        assert_eq!(elf_linking(BYTES), Ok(Linking::Static));
        assert_eq!(SHA256.len(), 64);
    }

    #[test]
    fn a_dynamic_executable_is_told_apart() {
        // This test binary is linked like any host program: with the loader.
        let me = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
        assert_eq!(elf_linking(&me), Ok(Linking::Dynamic));
        assert!(elf_linking(b"#!/bin/sh\n").is_err());
        let loader = elf_interpreter(&me).expect("ELF").expect("a loader");
        assert!(
            loader.starts_with(b"/") && !loader.contains(&0),
            "{loader:?}"
        );
        assert_eq!(elf_interpreter(BYTES), Ok(None));
    }

    #[test]
    fn install_writes_once_and_repairs() {
        let d = std::env::temp_dir().join(format!("airlock-guest-install-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let p = install(&d).expect("install");
        assert_eq!(p, installed_path(&d));
        assert_eq!(std::fs::read(&p).expect("read"), BYTES);
        let m = std::fs::metadata(&p).expect("meta");
        assert_eq!(m.permissions().mode() & 0o7777, 0o555);
        let ino = std::os::unix::fs::MetadataExt::ino(&m);
        // Intact: left alone.
        let again = install(&d).expect("again");
        let m2 = std::fs::metadata(&again).expect("meta");
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&m2), ino);
        // Damaged (or replaced by a symlink): rewritten.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(&p, b"not the helper").expect("damage");
        install(&d).expect("repair");
        assert_eq!(std::fs::read(&p).expect("read"), BYTES);
        std::fs::remove_file(&p).expect("rm");
        std::os::unix::fs::symlink("/bin/true", &p).expect("symlink");
        install(&d).expect("repair symlink");
        assert!(!std::fs::symlink_metadata(&p)
            .expect("meta")
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&p).expect("read"), BYTES);
        // Nothing left behind but the helper.
        let left: Vec<_> = std::fs::read_dir(p.parent().expect("dir"))
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(NAME)]);
        std::fs::remove_dir_all(&d).expect("cleanup");
    }
}
