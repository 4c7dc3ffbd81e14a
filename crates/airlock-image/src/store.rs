//! The content-addressed image store under the state directory:
//!
//! ```text
//! images/blobs/sha256/HEX     manifests and configs, verified against their digest
//! images/layers/HEX/          one unpacked layer per diffID, shared by every image using it
//! images/layers/HEX.json      its size
//! images/refs/KEY.json        an image record: reference, manifest digest, config, layers
//! images/locks/HEX.lock       flock held while a layer is being unpacked
//! images/tmp/PID-RANDOM/      work in progress; renamed into place only once verified
//! images/vm/KEY/root.erofs    an image as one microVM root disk (see [`crate::vm_disk`])
//! ```
//!
//! Everything lands through a temporary name and a rename, so an interrupted pull or import
//! leaves only `tmp/` entries of a dead process, which the next pull or `prune` removes.

use crate::digest::{Digest, HashingReader};
use crate::oci::RunConfig;
use crate::reference::Reference;
use crate::unpack::{self, UnpackError, Unpacked};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("layer {diff_id}: {source}")]
    Unpack {
        diff_id: Digest,
        #[source]
        source: UnpackError,
    },
    #[error("corrupt store record {path}: {why}")]
    Corrupt { path: PathBuf, why: String },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// One layer of an image record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRef {
    pub diff_id: Digest,
    /// Unpacked bytes of file content.
    pub size: u64,
}

/// An image in the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// The full reference it was pulled or imported as, without a digest.
    pub reference: String,
    pub manifest: Digest,
    pub config_digest: Digest,
    /// Bottom layer first (as in the image's config).
    pub layers: Vec<LayerRef>,
    pub config: RunConfig,
    /// Unix seconds.
    pub created: u64,
    pub last_used: u64,
}

impl ImageRecord {
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What `prune` reclaimed.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Pruned {
    /// Superseded records removed.
    pub images: usize,
    pub layers: usize,
    pub blobs: usize,
    pub bytes: u64,
    pub temporaries: usize,
    /// microVM disks of images no record has any more (`images/vm`).
    pub vm_disks: usize,
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store of a state directory (`STATE/images`); nothing is created until written.
    pub fn at_state_dir(state: &Path) -> Store {
        Store {
            root: state.join("images"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, name: &str) -> Result<PathBuf, StoreError> {
        let d = self.root.join(name);
        fs::create_dir_all(&d).map_err(io_err("cannot create", &d))?;
        Ok(d)
    }

    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).is_dir()
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// A fresh temporary directory, named after this process so that `prune` can tell live
    /// work from leftovers.
    pub fn temp_dir(&self) -> Result<PathBuf, StoreError> {
        let tmp = self.dir("tmp")?;
        let mut rnd = [0u8; 8];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut rnd))
            .map_err(io_err("cannot read", Path::new("/dev/urandom")))?;
        let name = format!(
            "{}-{}",
            std::process::id(),
            rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let p = tmp.join(name);
        fs::create_dir(&p).map_err(io_err("cannot create", &p))?;
        Ok(p)
    }

    /// Store a small blob (manifest, config) after checking it against `expected`.
    pub fn put_blob(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<Digest, StoreError> {
        let d = Digest::of(bytes);
        if let Some(e) = expected {
            if *e != d {
                return Err(StoreError::DigestMismatch {
                    what: "blob".into(),
                    expected: e.clone(),
                    actual: d,
                });
            }
        }
        let dir = self.dir("blobs/sha256")?;
        let path = dir.join(d.hex());
        if !path.exists() {
            let tmp = dir.join(format!(".{}.{}", d.hex(), std::process::id()));
            fs::write(&tmp, bytes).map_err(io_err("cannot write", &tmp))?;
            fs::rename(&tmp, &path).map_err(io_err("cannot rename into", &path))?;
        }
        Ok(d)
    }

    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(d);
        let bytes = fs::read(&p).map_err(io_err("cannot read", &p))?;
        let actual = Digest::of(&bytes);
        if actual != *d {
            return Err(StoreError::DigestMismatch {
                what: format!("stored blob {}", p.display()),
                expected: d.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Make sure the layer `diff_id` is unpacked. `blob` is called (only when it is missing,
    /// under the layer's lock) for the layer's blob as stored (gzip, zstd or plain tar). With a
    /// `blob_digest` the blob is downloaded and verified first, then unpacked; its content is
    /// checked against `diff_id` before the layer is renamed into place. Concurrent callers for
    /// one layer unpack it once. Returns the layer's size and whether it was already there.
    pub fn ensure_layer<R: Read>(
        &self,
        diff_id: &Digest,
        blob_digest: Option<&Digest>,
        blob: impl FnOnce() -> Result<R, StoreError>,
    ) -> Result<(u64, bool), StoreError> {
        if let Some(size) = self.layer_size(diff_id) {
            return Ok((size, true));
        }
        let locks = self.dir("locks")?;
        let lock_path = locks.join(format!("{}.lock", diff_id.hex()));
        let _lock = lock_exclusive(&lock_path)?;
        if let Some(size) = self.layer_size(diff_id) {
            return Ok((size, true));
        }
        let tmp = self.temp_dir()?;
        let result = (|| {
            let dest = tmp.join("layer");
            fs::create_dir(&dest).map_err(io_err("cannot create", &dest))?;
            let unpacked = match blob_digest {
                // A blob with a known digest is downloaded and checked before anything of it
                // is parsed: the tar reader only ever sees verified bytes.
                Some(d) => {
                    let file = tmp.join("blob");
                    fetch_verified(blob()?, &file, d)?;
                    let f = fs::File::open(&file).map_err(io_err("cannot open", &file))?;
                    let u = unpack_verified(f, &dest, diff_id, None);
                    let _ = fs::remove_file(&file);
                    u?
                }
                None => unpack_verified(blob()?, &dest, diff_id, None)?,
            };
            let layers = self.dir("layers")?;
            let meta = layers.join(format!("{}.json", diff_id.hex()));
            let json = serde_json::json!({"size": unpacked.bytes, "entries": unpacked.entries});
            let meta_tmp = tmp.join("meta.json");
            fs::write(&meta_tmp, json.to_string()).map_err(io_err("cannot write", &meta_tmp))?;
            // The directory first, then its size file: a layer counts once both exist.
            let final_dir = self.layer_dir(diff_id);
            if final_dir.exists() {
                unpack::remove_tree(&final_dir).map_err(io_err("cannot remove", &final_dir))?;
            }
            fs::rename(&dest, &final_dir).map_err(io_err("cannot rename into", &final_dir))?;
            fs::rename(&meta_tmp, &meta).map_err(io_err("cannot rename into", &meta))?;
            Ok(unpacked.bytes)
        })();
        let _ = unpack::remove_tree(&tmp);
        result.map(|s| (s, false))
    }

    /// The size of a complete layer, None when it is missing or half there.
    pub fn layer_size(&self, diff_id: &Digest) -> Option<u64> {
        let meta = self
            .root
            .join("layers")
            .join(format!("{}.json", diff_id.hex()));
        let v: serde_json::Value = serde_json::from_slice(&fs::read(meta).ok()?).ok()?;
        self.has_layer(diff_id)
            .then(|| v["size"].as_u64())
            .flatten()
    }

    /// One record per (reference, manifest): a tag that moves keeps the image it named before
    /// (a named sandbox may be pinned to it) until `prune` finds it superseded and unpinned.
    fn record_path(&self, reference: &str, manifest: &Digest) -> PathBuf {
        let key = Digest::of(format!("{reference}@{manifest}").as_bytes());
        self.root
            .join("refs")
            .join(format!("{}.json", &key.hex()[..32]))
    }

    pub fn save(&self, rec: &ImageRecord) -> Result<(), StoreError> {
        let dir = self.dir("refs")?;
        let path = self.record_path(&rec.reference, &rec.manifest);
        let tmp = dir.join(format!(".{}.tmp", std::process::id()));
        let json = serde_json::to_vec_pretty(rec).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        fs::write(&tmp, json).map_err(io_err("cannot write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("cannot rename into", &path))
    }

    /// Every image record, sorted by reference.
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.root.join("refs");
        let mut out = Vec::new();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err("cannot read", &dir)(e)),
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let bytes = fs::read(&p).map_err(io_err("cannot read", &p))?;
            let rec: ImageRecord =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                    path: p.clone(),
                    why: e.to_string(),
                })?;
            out.push(rec);
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// The record a reference names: by its digest when pinned, else by name and tag. Only
    /// records whose layers are all present count.
    pub fn find(&self, r: &Reference) -> Result<Option<ImageRecord>, StoreError> {
        let name = r.without_digest().to_string();
        // By name: the newest pull of it.
        let found = self
            .list()?
            .into_iter()
            .filter(|rec| match &r.digest {
                Some(d) => rec.manifest == *d,
                None => rec.reference == name,
            })
            .max_by_key(|rec| rec.created);
        Ok(found.filter(|rec| rec.layers.iter().all(|l| self.has_layer(&l.diff_id))))
    }

    /// Remove the records a reference names. Layers stay until `prune`.
    pub fn remove(&self, r: &Reference) -> Result<Vec<ImageRecord>, StoreError> {
        let name = r.without_digest().to_string();
        let mut removed = Vec::new();
        for rec in self.list()? {
            let hit = match &r.digest {
                Some(d) => rec.manifest == *d,
                None => rec.reference == name,
            };
            if hit {
                let p = self.record_path(&rec.reference, &rec.manifest);
                fs::remove_file(&p).map_err(io_err("cannot remove", &p))?;
                removed.push(rec);
            }
        }
        Ok(removed)
    }

    /// Record that a sandbox used it now.
    pub fn touch(&self, rec: &ImageRecord) -> Result<(), StoreError> {
        let mut r = rec.clone();
        r.last_used = now();
        self.save(&r)
    }

    /// The unpacked layer directories an overlay stacks, top layer first.
    pub fn layer_dirs(&self, rec: &ImageRecord) -> Vec<PathBuf> {
        rec.layers
            .iter()
            .rev()
            .map(|l| self.layer_dir(&l.diff_id))
            .collect()
    }

    /// Remove superseded records (an older pull of a reference whose tag has moved) unless
    /// `pinned` names their manifest, then the layers and blobs no record references, and
    /// temporaries of dead processes.
    pub fn prune(&self, pinned: &[Digest]) -> Result<Pruned, StoreError> {
        let mut out = Pruned::default();
        let mut records = self.list()?;
        let newest: std::collections::BTreeMap<String, u64> =
            records.iter().fold(Default::default(), |mut m, r| {
                let e = m.entry(r.reference.clone()).or_insert(0);
                *e = (*e).max(r.created);
                m
            });
        records.retain(|r| {
            let superseded = newest.get(&r.reference).is_some_and(|n| *n > r.created);
            if superseded && !pinned.contains(&r.manifest) {
                let _ = fs::remove_file(self.record_path(&r.reference, &r.manifest));
                out.images += 1;
                return false;
            }
            true
        });
        let mut keep_layers = std::collections::BTreeSet::new();
        let mut keep_blobs = std::collections::BTreeSet::new();
        for r in &records {
            keep_blobs.insert(r.manifest.hex().to_string());
            keep_blobs.insert(r.config_digest.hex().to_string());
            for l in &r.layers {
                keep_layers.insert(l.diff_id.hex().to_string());
            }
        }
        out.temporaries = self.sweep_temporaries();
        let (disks, disk_bytes) = self.prune_vm_disks(&records);
        out.vm_disks = disks;
        out.bytes += disk_bytes;
        let layers = self.root.join("layers");
        for e in fs::read_dir(&layers).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let hex = name.strip_suffix(".json").unwrap_or(&name).to_string();
            if keep_layers.contains(&hex) {
                continue;
            }
            let Ok(d) = Digest::parse(&format!("sha256:{hex}")) else {
                continue;
            };
            // Under the layer's lock: a pull of it may be finishing right now.
            let lock_path = self.root.join("locks").join(format!("{hex}.lock"));
            let f = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path);
            let Ok(f) = f else { continue };
            let Ok(_lock) = Flock::lock(f, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            if e.path().is_dir() {
                out.bytes += self.layer_size(&d).unwrap_or(0);
                unpack::remove_tree(&e.path()).map_err(io_err("cannot remove", &e.path()))?;
                out.layers += 1;
            } else {
                let _ = fs::remove_file(e.path());
            }
            let _ = fs::remove_file(&lock_path);
        }
        let blobs = self.root.join("blobs/sha256");
        for e in fs::read_dir(&blobs).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep_blobs.contains(&name) {
                out.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = fs::remove_file(e.path());
                out.blobs += 1;
            }
        }
        Ok(out)
    }

    /// Remove `tmp/PID-…` entries whose process is gone. Returns how many.
    pub fn sweep_temporaries(&self) -> usize {
        let mut n = 0;
        for e in fs::read_dir(self.root.join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive && unpack::remove_tree(&e.path()).is_ok() {
                n += 1;
            }
        }
        n
    }
}

/// Copy `blob` into `file`, checking it against `expected`.
fn fetch_verified(blob: impl Read, file: &Path, expected: &Digest) -> Result<(), StoreError> {
    let out = fs::File::create(file).map_err(io_err("cannot create", file))?;
    let mut w = crate::digest::HashingWriter::new(io::BufWriter::with_capacity(1 << 16, out));
    let mut r = blob;
    io::copy(&mut r, &mut w).map_err(io_err("cannot download the layer into", file))?;
    io::Write::flush(&mut w).map_err(io_err("cannot write", file))?;
    let actual = w.hasher.finish();
    if actual != *expected {
        return Err(StoreError::DigestMismatch {
            what: "layer blob".into(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}

/// Unpack the (decompressed) tar stream `layer` into `dest`, reading it to its end: the
/// contents, their digest (the diffID), and the reader back.
fn unpack_hashed<R: Read>(
    layer: R,
    dest: &Path,
    diff_id: &Digest,
) -> Result<(Unpacked, Digest, R), StoreError> {
    let mut r = HashingReader::new(layer);
    let unpacked = unpack::unpack(&mut r, dest).map_err(|source| StoreError::Unpack {
        diff_id: diff_id.clone(),
        source,
    })?;
    drain(&mut r, dest)?;
    Ok((unpacked, r.hasher.finish(), r.inner))
}

/// Read `r` to its end.
fn drain(mut r: impl Read, dest: &Path) -> Result<(), StoreError> {
    io::copy(&mut r, &mut io::sink())
        .map(drop)
        .map_err(io_err("cannot read the layer of", dest))
}

/// An exclusive lock on the file at `path` (created if missing), held until it is dropped.
pub(crate) fn lock_exclusive(path: &Path) -> Result<Flock<fs::File>, StoreError> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("cannot open", path))?;
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| StoreError::Io {
        what: "cannot lock",
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// Decompress (gzip, zstd or none, by magic number), unpack into `dest`, and check both digests.
pub fn unpack_verified(
    blob: impl Read,
    dest: &Path,
    diff_id: &Digest,
    blob_digest: Option<&Digest>,
) -> Result<Unpacked, StoreError> {
    let mut outer = HashingReader::new(blob);
    let mut buffered = BufReader::with_capacity(1 << 16, &mut outer);
    let magic = buffered
        .fill_buf()
        .map_err(io_err("cannot read the layer of", dest))?
        .to_vec();
    // A compressed stream is read to its end after the tar's (padding, the trailer), so that
    // the blob's digest covers every byte of it.
    let (unpacked, actual_diff) = if magic.starts_with(&[0x1f, 0x8b]) {
        let (u, d, gz) = unpack_hashed(
            flate2::bufread::MultiGzDecoder::new(buffered),
            dest,
            diff_id,
        )?;
        drain(gz.into_inner(), dest)?;
        (u, d)
    } else if magic.starts_with(&crate::zstd::MAGIC) {
        let (u, d, zst) = unpack_hashed(crate::zstd::Decoder::new(buffered), dest, diff_id)?;
        drain(zst.into_inner(), dest)?;
        (u, d)
    } else {
        let (u, d, _) = unpack_hashed(buffered, dest, diff_id)?;
        (u, d)
    };
    if let Some(expected) = blob_digest {
        let actual = outer.hasher.finish();
        if actual != *expected {
            return Err(StoreError::DigestMismatch {
                what: "layer blob".into(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    if actual_diff != *diff_id {
        return Err(StoreError::DigestMismatch {
            what: "layer content (diffID)".into(),
            expected: diff_id.clone(),
            actual: actual_diff,
        });
    }
    Ok(unpacked)
}
