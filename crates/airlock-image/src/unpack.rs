//! Unpacking one layer tar into its own fresh directory, safe against hostile archives:
//!
//! - entry names with `..` or an absolute path refuse the layer;
//! - nothing is written through a symlink: every parent component is checked with lstat and
//!   must be a real directory of this layer (a layer's directory starts empty, so an earlier
//!   layer's symlinks cannot be followed at all: each layer lands in a directory of its own);
//!   hard links must point at a regular file inside this layer, reached the same way;
//! - device nodes and FIFOs are skipped, setuid/setgid bits cleared, extended attributes
//!   (file capabilities included) dropped;
//! - OCI whiteouts become overlayfs whiteouts: `.wh.NAME` a 0:0 character device (which the
//!   kernel lets anyone create), `.wh..wh..opq` the `user.overlay.opaque` xattr on its directory
//!   (airlock mounts overlays with `userxattr`).
//!
//! Ownership: when unpacking as root, files are owned by the image's uid/gid shifted into the
//! range root-run sandboxes map (`ROOTFUL_UID_BASE + id`), so inside they show the image's
//! owners; otherwise they belong to the unpacking user, which is who rootless sandboxes map.

use airlock_model::plan::{ROOTFUL_UID_BASE, ROOTFUL_UID_COUNT};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("hostile layer: entry {entry:?} {why}")]
    Hostile { entry: String, why: &'static str },
    #[error("cannot read the layer archive: {0}")]
    Read(#[source] io::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What an unpack produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// Bytes of regular file content written.
    pub bytes: u64,
    pub entries: u64,
    /// Device nodes and FIFOs left out.
    pub skipped: u64,
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// The relative path of an entry, or a refusal: no absolute paths, no `..`.
pub fn entry_path(raw: &[u8]) -> Result<Option<PathBuf>, UnpackError> {
    let name = OsStr::from_bytes(raw);
    let hostile = |why| UnpackError::Hostile {
        entry: name.to_string_lossy().into_owned(),
        why,
    };
    if raw.contains(&0) {
        return Err(hostile("contains a NUL byte"));
    }
    let p = Path::new(name);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(hostile("contains `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(hostile("is an absolute path"))
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

struct Layer<'a> {
    root: &'a Path,
    as_root: bool,
    /// Directories whose final mode is applied at the end (a read-only directory must stay
    /// writable while its entries are created).
    dir_modes: Vec<(PathBuf, u32)>,
}

impl Layer<'_> {
    /// Make sure every parent of `rel` is a real directory of this layer (created as needed),
    /// never a symlink; returns the absolute path of `rel`.
    fn parents(&self, rel: &Path, entry: &str) -> Result<PathBuf, UnpackError> {
        let mut cur = self.root.to_path_buf();
        let comps: Vec<_> = rel.components().collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(UnpackError::Hostile {
                        entry: entry.into(),
                        why: "would be written through a symlink",
                    })
                }
                Ok(_) => {
                    return Err(UnpackError::Hostile {
                        entry: entry.into(),
                        why: "has a parent that is not a directory",
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&cur).map_err(write_err(&cur))?;
                }
                Err(e) => return Err(write_err(&cur)(e)),
            }
        }
        Ok(self.root.join(rel))
    }

    /// Remove whatever this layer already has at `path` (a later entry replaces it), except a
    /// directory when a directory is wanted.
    fn clear(&self, path: &Path, keep_dir: bool) -> Result<(), UnpackError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_dir() => {
                if !keep_dir {
                    make_writable(path);
                    fs::remove_dir_all(path).map_err(write_err(path))?;
                }
            }
            Ok(_) => fs::remove_file(path).map_err(write_err(path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(write_err(path)(e)),
        }
        Ok(())
    }

    fn own(&self, path: &Path, uid: u64, gid: u64) -> Result<(), UnpackError> {
        if !self.as_root {
            return Ok(());
        }
        let shift = |id: u64| {
            let id = if id < u64::from(ROOTFUL_UID_COUNT) {
                id as u32
            } else {
                65534
            };
            ROOTFUL_UID_BASE + id
        };
        std::os::unix::fs::lchown(path, Some(shift(uid)), Some(shift(gid))).map_err(write_err(path))
    }
}

/// Make a tree writable by its owner (so it can be removed by a non-root owner).
pub fn make_writable(path: &Path) {
    let Ok(m) = fs::symlink_metadata(path) else {
        return;
    };
    if m.is_dir() {
        let _ = fs::set_permissions(
            path,
            fs::Permissions::from_mode(m.permissions().mode() | 0o700),
        );
        if let Ok(rd) = fs::read_dir(path) {
            for e in rd.flatten() {
                make_writable(&e.path());
            }
        }
    }
}

/// Remove a tree that may hold read-only directories.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    make_writable(path);
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

fn mode_of(h: &tar::Header) -> u32 {
    // setuid/setgid never survive: a sandbox gains nothing from them, and neither should a
    // host user that can read the store.
    h.mode().unwrap_or(0o644) & 0o1777
}

/// Unpack the (uncompressed) tar stream `input` into `dest`, an empty directory.
pub fn unpack(input: impl Read, dest: &Path) -> Result<Unpacked, UnpackError> {
    let mut layer = Layer {
        root: dest,
        as_root: nix::unistd::geteuid().is_root(),
        dir_modes: Vec::new(),
    };
    let mut out = Unpacked::default();
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let Some(rel) = entry_path(&raw)? else {
            continue; // the layer's root itself
        };
        out.entries += 1;
        let name = rel
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let h = entry.header().clone();
        let (uid, gid) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));

        if name == OPAQUE_MARKER.as_bytes() {
            let dir_rel = rel.parent().unwrap_or(Path::new(""));
            let dir = layer.parents(&rel, &shown)?;
            let dir = dir
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| dest.join(dir_rel));
            xattr_set(&dir, OPAQUE_XATTR, b"y").map_err(write_err(&dir))?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(UnpackError::Hostile {
                    entry: shown,
                    why: "is a whiteout of nothing",
                });
            }
            let path = layer.parents(&rel, &shown)?;
            let target = path.with_file_name(OsStr::from_bytes(hidden));
            layer.clear(&target, false)?;
            whiteout(&target).map_err(write_err(&target))?;
            continue;
        }

        let path = layer.parents(&rel, &shown)?;
        match h.entry_type() {
            tar::EntryType::Directory => {
                layer.clear(&path, true)?;
                if !path.is_dir() {
                    fs::create_dir(&path).map_err(write_err(&path))?;
                }
                layer.own(&path, uid, gid)?;
                layer.dir_modes.push((path, mode_of(&h)));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                layer.clear(&path, false)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&path)
                    .map_err(write_err(&path))?;
                let n = io::copy(&mut entry, &mut f).map_err(UnpackError::Read)?;
                f.flush().map_err(write_err(&path))?;
                drop(f);
                out.bytes += n;
                layer.own(&path, uid, gid)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode_of(&h)))
                    .map_err(write_err(&path))?;
            }
            tar::EntryType::Symlink => {
                let to = entry
                    .link_name_bytes()
                    .map(|b| b.into_owned())
                    .unwrap_or_default();
                if to.is_empty() || to.contains(&0) {
                    return Err(UnpackError::Hostile {
                        entry: shown,
                        why: "is a symlink with an empty target",
                    });
                }
                layer.clear(&path, false)?;
                // The link is created, never followed here; inside the sandbox it resolves
                // within the image's root.
                std::os::unix::fs::symlink(OsStr::from_bytes(&to), &path)
                    .map_err(write_err(&path))?;
                layer.own(&path, uid, gid)?;
            }
            tar::EntryType::Link => {
                let to_raw = entry
                    .link_name_bytes()
                    .map(|b| b.into_owned())
                    .unwrap_or_default();
                let Some(to_rel) = entry_path(&to_raw)? else {
                    return Err(UnpackError::Hostile {
                        entry: shown,
                        why: "is a hard link to the layer's root",
                    });
                };
                let to = layer.parents(&to_rel, &shown)?;
                match fs::symlink_metadata(&to) {
                    Ok(m) if m.file_type().is_file() => {}
                    _ => return Err(UnpackError::Hostile {
                        entry: shown,
                        why: "is a hard link to something that is not a regular file of this layer",
                    }),
                }
                if to != path {
                    layer.clear(&path, false)?;
                    fs::hard_link(&to, &path).map_err(write_err(&path))?;
                }
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                out.skipped += 1;
            }
            // PAX/GNU extension headers are consumed by the tar reader; anything else is
            // ignored rather than guessed at.
            _ => {}
        }
    }
    // Deepest first, so a read-only parent does not block its children's chmod.
    layer.dir_modes.sort_by(|a, b| b.0.cmp(&a.0));
    for (path, mode) in &layer.dir_modes {
        fs::set_permissions(path, fs::Permissions::from_mode(*mode)).map_err(write_err(path))?;
    }
    Ok(out)
}

/// An overlayfs whiteout: a 0:0 character device.
fn whiteout(path: &Path) -> io::Result<()> {
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .map_err(io::Error::from)
}

pub(crate) fn xattr_set(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .map_err(io::Error::from)
}

/// Read an xattr without following a symlink (tests and `inspect`).
pub fn xattr_get(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(path, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

#[cfg(test)]
mod tests;
