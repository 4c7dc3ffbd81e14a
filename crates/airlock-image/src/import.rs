//! `airlock image import FILE`: an OCI image layout (a directory, or a tar of one) or a
//! `docker save` tarball. Archives are first copied, regular files only and under safe names,
//! into a temporary directory of the store; every blob is verified against its digest.

use crate::digest::Digest;
use crate::oci::{DockerSaveEntry, ImageConfig, Manifest, OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST};
use crate::pull::Progress;
use crate::reference::Reference;
use crate::store::{now, ImageRecord, LayerRef, Store, StoreError};
use crate::unpack::{self, entry_path};
use crate::ImageError;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

fn bad(why: impl Into<String>) -> ImageError {
    ImageError::BadImport(why.into())
}

/// A directory of files read by name: an OCI layout on disk or an unpacked archive, with the
/// archive's symlinks (docker save uses them between layer directories) resolved by name.
struct Files {
    root: PathBuf,
    links: BTreeMap<PathBuf, PathBuf>,
}

impl Files {
    fn path(&self, name: &str) -> Result<PathBuf, ImageError> {
        let mut rel = entry_path(name.as_bytes())
            .map_err(|e| bad(e.to_string()))?
            .ok_or_else(|| bad(format!("empty file name {name:?}")))?;
        for _ in 0..8 {
            match self.links.get(&rel) {
                Some(to) => rel = to.clone(),
                None => break,
            }
        }
        let p = self.root.join(&rel);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => Ok(p),
            _ => Err(bad(format!("{name} is missing or not a regular file"))),
        }
    }
    fn read(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        let p = self.path(name)?;
        fs::read(&p).map_err(|e| bad(format!("cannot read {name}: {e}")))
    }
    fn blob(&self, d: &Digest) -> Result<Vec<u8>, ImageError> {
        let bytes = self.read(&format!("blobs/sha256/{}", d.hex()))?;
        let actual = Digest::of(&bytes);
        if actual != *d {
            return Err(StoreError::DigestMismatch {
                what: format!("blob {d}"),
                expected: d.clone(),
                actual,
            }
            .into());
        }
        Ok(bytes)
    }
}

/// Copy an archive's regular files (and note its symlinks) into `dest`.
fn extract(archive: &Path, dest: &Path) -> Result<Files, ImageError> {
    let f = fs::File::open(archive)
        .map_err(|e| bad(format!("cannot open {}: {e}", archive.display())))?;
    let mut links = BTreeMap::new();
    let mut a = tar::Archive::new(f);
    for e in a
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?
    {
        let mut e = e.map_err(|e| bad(format!("cannot read the archive: {e}")))?;
        let Some(rel) = entry_path(&e.path_bytes()).map_err(|e| bad(e.to_string()))? else {
            continue;
        };
        match e.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let p = dest.join(&rel);
                if let Some(parent) = p.parent() {
                    fs::create_dir_all(parent)
                        .map_err(|e| bad(format!("{}: {e}", parent.display())))?;
                }
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&p)
                    .map_err(|e| bad(format!("{}: {e}", p.display())))?;
                io::copy(&mut e, &mut out).map_err(|e| bad(format!("{}: {e}", p.display())))?;
            }
            tar::EntryType::Symlink => {
                let to = e
                    .link_name_bytes()
                    .map(|b| b.into_owned())
                    .unwrap_or_default();
                let joined = rel
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(String::from_utf8_lossy(&to).as_ref());
                // Resolve `..` lexically, never above the archive's root.
                let mut norm = PathBuf::new();
                for c in joined.components() {
                    match c {
                        std::path::Component::Normal(n) => norm.push(n),
                        std::path::Component::ParentDir => {
                            if !norm.pop() {
                                return Err(bad(format!(
                                    "{} points outside the archive",
                                    rel.display()
                                )));
                            }
                        }
                        std::path::Component::CurDir => {}
                        _ => return Err(bad(format!("{} is an absolute symlink", rel.display()))),
                    }
                }
                links.insert(rel, norm);
            }
            _ => {}
        }
    }
    Ok(Files {
        root: dest.to_path_buf(),
        links,
    })
}

/// Import `path` into the store, named `name` (else the name the archive carries).
pub fn import(
    store: &Store,
    path: &Path,
    name: Option<&Reference>,
    progress: &dyn Progress,
) -> Result<ImageRecord, ImageError> {
    store.sweep_temporaries();
    let tmp = store.temp_dir()?;
    let result = (|| {
        let files = if path.is_dir() {
            Files {
                root: path.to_path_buf(),
                links: BTreeMap::new(),
            }
        } else {
            extract(path, &tmp.join("archive"))?
        };
        if files.path("index.json").is_ok() {
            import_oci(store, &files, name, progress)
        } else if files.path("manifest.json").is_ok() {
            import_docker(store, &files, name, progress)
        } else {
            Err(bad(format!(
                "{} is neither an OCI image layout (index.json) nor a `docker save` archive (manifest.json)",
                path.display()
            )))
        }
    })();
    let _ = unpack::remove_tree(&tmp);
    result
}

fn name_from(annotations: &BTreeMap<String, String>) -> Option<Reference> {
    [
        "io.containerd.image.name",
        "org.opencontainers.image.ref.name",
    ]
    .iter()
    .filter_map(|k| annotations.get(*k))
    .find_map(|v| {
        // A bare tag (`latest`) is not a name.
        (v.contains('/') || v.contains(':'))
            .then(|| Reference::parse(v).ok())
            .flatten()
    })
}

fn import_oci(
    store: &Store,
    files: &Files,
    name: Option<&Reference>,
    progress: &dyn Progress,
) -> Result<ImageRecord, ImageError> {
    let index: Manifest = serde_json::from_slice(&files.read("index.json")?)
        .map_err(|e| bad(format!("index.json: {e}")))?;
    let desc = index
        .manifests
        .first()
        .ok_or_else(|| bad("index.json lists no image"))?;
    let reference = match name {
        Some(n) => n.clone(),
        None => name_from(&desc.annotations).ok_or_else(|| {
            bad("the layout does not name its image (no io.containerd.image.name annotation); give one with --tag")
        })?,
    };
    let mut mbytes = files.blob(&desc.digest)?;
    let mut mdigest = desc.digest.clone();
    let mut manifest: Manifest =
        serde_json::from_slice(&mbytes).map_err(|e| bad(format!("manifest: {e}")))?;
    if manifest.is_index() {
        let pick = manifest
            .pick_platform()
            .ok_or_else(|| ImageError::NoPlatform {
                reference: reference.to_string(),
                arch: crate::oci::goarch(),
            })?
            .clone();
        mbytes = files.blob(&pick.digest)?;
        mdigest = pick.digest;
        manifest = serde_json::from_slice(&mbytes).map_err(|e| bad(format!("manifest: {e}")))?;
    }
    let cdesc = manifest
        .config
        .clone()
        .ok_or_else(|| bad("the manifest has no config"))?;
    let cbytes = files.blob(&cdesc.digest)?;
    let config: ImageConfig =
        serde_json::from_slice(&cbytes).map_err(|e| bad(format!("image config: {e}")))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(bad(
            "the manifest and the config disagree on the number of layers",
        ));
    }
    let mut layers = Vec::new();
    for (i, (l, diff_id)) in manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .enumerate()
    {
        progress.layer_start(i, &l.digest, Some(l.size));
        let p = files.path(&format!("blobs/sha256/{}", l.digest.hex()))?;
        let (size, cached) = store.ensure_layer(diff_id, Some(&l.digest), || {
            fs::File::open(&p).map_err(|e| StoreError::Io {
                what: "cannot open",
                path: p.clone(),
                source: e,
            })
        })?;
        progress.layer_done(i, cached);
        layers.push(LayerRef {
            diff_id: diff_id.clone(),
            size,
        });
    }
    store.put_blob(&cbytes, Some(&cdesc.digest))?;
    store.put_blob(&mbytes, Some(&mdigest))?;
    let rec = ImageRecord {
        reference: crate::pull::record_name(&reference),
        manifest: mdigest,
        config_digest: cdesc.digest,
        layers,
        config: config.config,
        created: now(),
        last_used: 0,
    };
    store.save(&rec)?;
    Ok(rec)
}

fn import_docker(
    store: &Store,
    files: &Files,
    name: Option<&Reference>,
    progress: &dyn Progress,
) -> Result<ImageRecord, ImageError> {
    let entries: Vec<DockerSaveEntry> = serde_json::from_slice(&files.read("manifest.json")?)
        .map_err(|e| bad(format!("manifest.json: {e}")))?;
    let entry = entries
        .first()
        .ok_or_else(|| bad("manifest.json lists no image"))?;
    let reference = match name {
        Some(n) => n.clone(),
        None => entry
            .repo_tags
            .iter()
            .flatten()
            .find_map(|t| Reference::parse(t).ok())
            .ok_or_else(|| {
                bad("the archive does not name its image (no RepoTags); give one with --tag")
            })?,
    };
    let cbytes = files.read(&entry.config)?;
    let config: ImageConfig =
        serde_json::from_slice(&cbytes).map_err(|e| bad(format!("image config: {e}")))?;
    if config.rootfs.diff_ids.len() != entry.layers.len() {
        return Err(bad(
            "manifest.json and the config disagree on the number of layers",
        ));
    }
    let config_digest = store.put_blob(&cbytes, None)?;
    let mut layers = Vec::new();
    let mut descs = Vec::new();
    for (i, (lpath, diff_id)) in entry.layers.iter().zip(&config.rootfs.diff_ids).enumerate() {
        let p = files.path(lpath)?;
        let size = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        progress.layer_start(i, diff_id, Some(size));
        // The saved layer may be gzip or plain tar; its content is checked against the diffID.
        let (unpacked, cached) = store.ensure_layer(diff_id, None, || {
            fs::File::open(&p).map_err(|e| StoreError::Io {
                what: "cannot open",
                path: p.clone(),
                source: e,
            })
        })?;
        progress.layer_done(i, cached);
        descs
            .push(serde_json::json!({"mediaType": OCI_LAYER_TAR, "digest": diff_id, "size": size}));
        layers.push(LayerRef {
            diff_id: diff_id.clone(),
            size: unpacked,
        });
    }
    // docker save carries no manifest: write the OCI manifest of what was imported, so the
    // image has a manifest digest like a pulled one.
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": cbytes.len()},
        "layers": descs,
    });
    let mbytes = serde_json::to_vec(&manifest).map_err(|e| bad(e.to_string()))?;
    let mdigest = store.put_blob(&mbytes, None)?;
    let rec = ImageRecord {
        reference: crate::pull::record_name(&reference),
        manifest: mdigest,
        config_digest,
        layers,
        config: config.config,
        created: now(),
        last_used: 0,
    };
    store.save(&rec)?;
    Ok(rec)
}
