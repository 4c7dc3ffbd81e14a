//! An image as one read-only disk for the microVM backend: the record's layers merged into a
//! single tree (overlay whiteouts and opaque directories applied, owners shifted back out of
//! the root-run range) and made into a filesystem image by a builder the caller gives
//! (mkfs.erofs). Built once per layer set and disk layout, cached in the store:
//!
//! ```text
//! images/vm/KEY/root.erofs    KEY: the disk layout version and the layers' diffIDs, hashed
//! images/locks/vm-KEY.lock    flock held while it is being built
//! ```
//!
//! Published by renaming a finished directory into place (never half there); concurrent
//! builders of one disk build it once. `prune` removes the disks no record uses.

use crate::digest::Digest;
use crate::store::{lock_exclusive, ImageRecord, Store, StoreError};
use crate::unpack::{self, OPAQUE_XATTR};
use airlock_model::plan::{ROOTFUL_UID_BASE, ROOTFUL_UID_COUNT};
use nix::fcntl::{Flock, FlockArg};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The disk's layout version, part of its key: an airlock that builds the disk differently
/// never boots one cached by another.
pub const VM_DISK_LAYOUT: u32 = 1;
/// The disk's file name in its directory.
pub const VM_DISK_FILE: &str = "root.erofs";

/// How a merged tree's files are owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// As the layers have them, shifted out of the root-run range (`ROOTFUL_UID_BASE + id`
    /// becomes `id`): the store was unpacked as root, with the image's owners.
    Image,
    /// The layers belong to the unpacking user (a rootless store): the builder makes every
    /// file root's.
    AllRoot,
}

/// What [`Store::vm_disk`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDisk {
    /// `images/vm/KEY/root.erofs`.
    pub path: PathBuf,
    /// Built by this call (false: it was there already).
    pub built: bool,
}

/// The key of a record's disk: the layout version and its layers, bottom first.
pub fn vm_disk_key(rec: &ImageRecord) -> String {
    let mut text = format!("airlock vm disk {VM_DISK_LAYOUT}\n");
    for l in &rec.layers {
        text.push_str(&l.diff_id.to_string());
        text.push('\n');
    }
    Digest::of(text.as_bytes()).hex()[..32].to_string()
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    /// Where a record's disk is (whether or not it has been built).
    pub fn vm_disk_path(&self, rec: &ImageRecord) -> PathBuf {
        self.root()
            .join("vm")
            .join(vm_disk_key(rec))
            .join(VM_DISK_FILE)
    }

    /// Make sure `rec`'s disk exists: merge its layers into a temporary tree and call
    /// `build(tree, out, owners)` to write the image at `out`; published by rename, under the
    /// disk's lock. `building` is called (once, before the work) when it has to be built.
    pub fn vm_disk(
        &self,
        rec: &ImageRecord,
        building: impl FnOnce(),
        build: impl FnOnce(&Path, &Path, Owners) -> Result<(), String>,
    ) -> Result<VmDisk, StoreError> {
        let path = self.vm_disk_path(rec);
        if path.is_file() {
            return Ok(VmDisk { path, built: false });
        }
        let key = vm_disk_key(rec);
        let locks = self.root().join("locks");
        fs::create_dir_all(&locks).map_err(io_err("cannot create", &locks))?;
        let lock_path = locks.join(format!("vm-{key}.lock"));
        let _lock = lock_exclusive(&lock_path)?;
        if path.is_file() {
            return Ok(VmDisk { path, built: false });
        }
        building();
        let tmp = self.temp_dir()?;
        let result = (|| {
            let tree = tmp.join("tree");
            let owners = if nix::unistd::geteuid().is_root() {
                Owners::Image
            } else {
                Owners::AllRoot
            };
            merge_layers(&self.layer_dirs(rec), &tree, owners)
                .map_err(io_err("cannot merge the layers into", &tree))?;
            let disk_dir = tmp.join("disk");
            fs::create_dir(&disk_dir).map_err(io_err("cannot create", &disk_dir))?;
            let out = disk_dir.join(VM_DISK_FILE);
            build(&tree, &out, owners).map_err(|why| StoreError::Io {
                what: "cannot build the microVM disk",
                path: out.clone(),
                source: io::Error::other(why),
            })?;
            // QEMU reads it as the sandbox's unprivileged user.
            fs::set_permissions(&out, fs::Permissions::from_mode(0o644))
                .and_then(|()| fs::set_permissions(&disk_dir, fs::Permissions::from_mode(0o755)))
                .map_err(io_err("cannot set the mode of", &out))?;
            let vm = self.root().join("vm");
            fs::create_dir_all(&vm).map_err(io_err("cannot create", &vm))?;
            let final_dir = path.parent().unwrap_or(&vm);
            fs::rename(&disk_dir, final_dir).map_err(io_err("cannot rename into", final_dir))
        })();
        let _ = unpack::remove_tree(&tmp);
        result.map(|()| VmDisk { path, built: true })
    }

    /// Remove the disks of `images/vm` whose key is none of `keep`'s (not while one is being
    /// built). Returns how many and their bytes.
    pub(crate) fn prune_vm_disks(&self, keep: &[ImageRecord]) -> (usize, u64) {
        let keys: Vec<String> = keep.iter().map(vm_disk_key).collect();
        let (mut n, mut bytes) = (0, 0);
        for e in fs::read_dir(self.root().join("vm"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let key = e.file_name().to_string_lossy().into_owned();
            if keys.contains(&key) {
                continue;
            }
            let lock_path = self.root().join("locks").join(format!("vm-{key}.lock"));
            let Ok(f) = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
            else {
                continue;
            };
            let Ok(_lock) = Flock::lock(f, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            let size = fs::metadata(e.path().join(VM_DISK_FILE))
                .map(|m| m.len())
                .unwrap_or(0);
            if unpack::remove_tree(&e.path()).is_ok() {
                n += 1;
                bytes += size;
            }
            let _ = fs::remove_file(&lock_path);
        }
        (n, bytes)
    }
}

/// Merge unpacked layer directories (`layers`: top first, as overlay stacks them) into a new
/// directory `out`, as the overlay of them shows it: an upper entry replaces a lower one, a
/// 0:0 character device (a whiteout) removes it, a directory marked opaque hides the lower
/// directory's entries. Regular files and symlinks are hard links into the layers where their
/// owner stays as it is ([`Owners::AllRoot`]), copies where it changes.
pub fn merge_layers(layers: &[PathBuf], out: &Path, owners: Owners) -> io::Result<()> {
    fs::create_dir(out)?;
    for layer in layers.iter().rev() {
        merge_dir(layer, out, owners)?;
    }
    fs::set_permissions(out, fs::Permissions::from_mode(0o755))
}

/// An owner as the image has it.
fn shift(id: u32, owners: Owners) -> u32 {
    match owners {
        Owners::Image if (ROOTFUL_UID_BASE..ROOTFUL_UID_BASE + ROOTFUL_UID_COUNT).contains(&id) => {
            id - ROOTFUL_UID_BASE
        }
        _ => id,
    }
}

fn own(path: &Path, m: &fs::Metadata, owners: Owners) -> io::Result<()> {
    if owners == Owners::AllRoot {
        return Ok(());
    }
    std::os::unix::fs::lchown(
        path,
        Some(shift(m.uid(), owners)),
        Some(shift(m.gid(), owners)),
    )
}

/// Remove whatever is at `p` (a file, symlink or tree); nothing there is fine.
fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => unpack::remove_tree(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn merge_dir(src: &Path, dst: &Path, owners: Owners) -> io::Result<()> {
    for e in fs::read_dir(src)? {
        let e = e?;
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let m = fs::symlink_metadata(&from)?;
        let ft = m.file_type();
        if ft.is_char_device() && m.rdev() == 0 {
            remove_any(&to)?;
            continue;
        }
        if ft.is_dir() {
            let opaque = unpack::xattr_get(&from, OPAQUE_XATTR).is_some_and(|v| v == b"y");
            match fs::symlink_metadata(&to) {
                Ok(t) if t.is_dir() && !opaque => {}
                Ok(_) => {
                    remove_any(&to)?;
                    fs::create_dir(&to)?;
                }
                Err(_) => fs::create_dir(&to)?,
            }
            // Writable while it is filled (a rootless builder has no override), its own mode
            // after.
            fs::set_permissions(&to, fs::Permissions::from_mode(0o700))?;
            merge_dir(&from, &to, owners)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(m.mode() & 0o7777))?;
            own(&to, &m, owners)?;
            continue;
        }
        remove_any(&to)?;
        if owners == Owners::AllRoot && fs::hard_link(&from, &to).is_ok() {
            continue;
        }
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if ft.is_file() {
            fs::copy(&from, &to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(m.mode() & 0o7777))?;
        } else {
            // Nothing else is unpacked (device nodes and FIFOs are skipped).
            continue;
        }
        own(&to, &m, owners)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
