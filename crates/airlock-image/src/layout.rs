//! Writing OCI image layouts (and `docker save` archives) from layer tars: what the tests
//! build their images with (then push with skopeo or import), and a small tool for anyone
//! making an image out of a directory without a container engine.

use crate::digest::Digest;
use crate::oci::{OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST};
use std::fs;
use std::io::{self, Write};
use std::path::Path;

pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// One layer: an uncompressed tar, stored gzip-compressed or as is.
pub struct LayerTar {
    pub tar: Vec<u8>,
    pub gzip: bool,
}

impl LayerTar {
    pub fn diff_id(&self) -> Digest {
        Digest::of(&self.tar)
    }
    pub fn blob(&self) -> io::Result<Vec<u8>> {
        if !self.gzip {
            return Ok(self.tar.clone());
        }
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&self.tar)?;
        e.finish()
    }
    pub fn media_type(&self) -> &'static str {
        if self.gzip {
            OCI_LAYER_GZIP
        } else {
            OCI_LAYER_TAR
        }
    }
}

/// The image config JSON for `layers` with the given run settings.
pub fn config_json(
    layers: &[LayerTar],
    env: &[&str],
    workdir: Option<&str>,
    user: Option<&str>,
) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id().to_string()).collect();
    let mut config = serde_json::json!({ "Env": env });
    if let Some(w) = workdir {
        config["WorkingDir"] = w.into();
    }
    if let Some(u) = user {
        config["User"] = u.into();
    }
    serde_json::to_vec(&serde_json::json!({
        "architecture": crate::oci::goarch(),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap_or_default()
}

fn put(dir: &Path, bytes: &[u8]) -> io::Result<Digest> {
    let d = Digest::of(bytes);
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    fs::write(blobs.join(d.hex()), bytes)?;
    Ok(d)
}

/// Write (or add to) an OCI image layout at `dir`; `name` goes in the index's
/// `org.opencontainers.image.ref.name` (skopeo's `oci:DIR:NAME`) and
/// `io.containerd.image.name` annotations. Returns the manifest digest.
pub fn write_oci(dir: &Path, name: &str, layers: &[LayerTar], config: &[u8]) -> io::Result<Digest> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let cdigest = put(dir, config)?;
    let mut descs = Vec::new();
    for l in layers {
        let blob = l.blob()?;
        let d = put(dir, &blob)?;
        descs.push(
            serde_json::json!({"mediaType": l.media_type(), "digest": d, "size": blob.len()}),
        );
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cdigest, "size": config.len()},
        "layers": descs,
    }))?;
    let mdigest = put(dir, &manifest)?;
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value = fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({"schemaVersion": 2, "manifests": []}));
    let tag = name
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map(|(_, t)| t)
        .unwrap_or(name);
    if let Some(list) = index["manifests"].as_array_mut() {
        list.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
        list.push(serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": mdigest,
            "size": manifest.len(),
            "annotations": {
                "org.opencontainers.image.ref.name": tag,
                "io.containerd.image.name": name,
            },
        }));
    }
    fs::write(&index_path, serde_json::to_vec(&index)?)?;
    Ok(mdigest)
}

/// Write a `docker save` archive (the classic layout: `ID/layer.tar`, `ID.json`, manifest.json).
pub fn write_docker_save(
    file: &Path,
    tag: &str,
    layers: &[LayerTar],
    config: &[u8],
) -> io::Result<()> {
    let mut b = tar::Builder::new(fs::File::create(file)?);
    let mut add = |name: &str, data: &[u8]| -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, name, data)
    };
    let cname = format!("{}.json", Digest::of(config).hex());
    add(&cname, config)?;
    let mut names = Vec::new();
    for l in layers {
        let n = format!("{}/layer.tar", l.diff_id().hex());
        add(&n, &l.blob()?)?;
        names.push(n);
    }
    let manifest = serde_json::json!([{"Config": cname, "RepoTags": [tag], "Layers": names}]);
    add("manifest.json", &serde_json::to_vec(&manifest)?)?;
    b.into_inner()?.flush()
}

/// A tar of files: (path, contents, mode); directories are implied. Symlinks: contents
/// prefixed with `->`.
pub fn tar_of_files(files: &[(&str, &[u8], u32)]) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, data, mode) in files {
        let p = Path::new(path);
        let mut acc = std::path::PathBuf::new();
        if let Some(parent) = p.parent() {
            for c in parent.components() {
                acc.push(c);
                if dirs.insert(acc.clone()) {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    h.set_cksum();
                    b.append_data(&mut h, &acc, io::empty())?;
                }
            }
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        if let Some(to) = data.strip_prefix(b"->") {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, path, String::from_utf8_lossy(to).as_ref())?;
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append_data(&mut h, path, *data)?;
        }
    }
    b.into_inner()
}
