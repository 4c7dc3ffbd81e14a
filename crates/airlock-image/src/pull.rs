//! Pulling an image from a registry into the store.

use crate::digest::Digest;
use crate::oci::{ImageConfig, Manifest};
use crate::reference::Reference;
use crate::registry::{Client, RegistryError};
use crate::store::{now, ImageRecord, LayerRef, Store, StoreError};
use crate::ImageError;
use std::io::{self, Read};

/// What a pull reports as it goes (the CLI draws progress bars from it).
pub trait Progress: Sync {
    fn layer_start(&self, _index: usize, _digest: &Digest, _size: Option<u64>) {}
    fn layer_bytes(&self, _index: usize, _n: u64) {}
    fn layer_done(&self, _index: usize, _cached: bool) {}
}

/// Reports nothing.
pub struct Quiet;
impl Progress for Quiet {}

struct Counting<'a, R> {
    inner: R,
    index: usize,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.layer_bytes(self.index, n as u64);
        Ok(n)
    }
}

/// Resolve a manifest reference to an image manifest (through an index for this platform).
fn resolve(
    client: &Client,
    r: &Reference,
) -> Result<(Manifest, Vec<u8>, Digest, String), ImageError> {
    let (bytes, digest, host) = client.manifest(r, &r.manifest_ref())?;
    if let Some(want) = &r.digest {
        if *want != digest {
            return Err(StoreError::DigestMismatch {
                what: format!("manifest of {r}"),
                expected: want.clone(),
                actual: digest,
            }
            .into());
        }
    }
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
        host: host.clone(),
        why: format!("manifest: {e}"),
    })?;
    if !m.is_index() {
        return Ok((m, bytes, digest, host));
    }
    let pick = m.pick_platform().ok_or_else(|| ImageError::NoPlatform {
        reference: r.to_string(),
        arch: crate::oci::goarch(),
    })?;
    let (bytes, got, host) = client.manifest(r, &pick.digest.to_string())?;
    if got != pick.digest {
        return Err(StoreError::DigestMismatch {
            what: format!("platform manifest of {r}"),
            expected: pick.digest.clone(),
            actual: got,
        }
        .into());
    }
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
        host: host.clone(),
        why: format!("manifest: {e}"),
    })?;
    Ok((m, bytes, got, host))
}

/// Pull `r` into `store`: manifest and config verified, each missing layer downloaded,
/// verified and unpacked once; the record written last.
pub fn pull(
    store: &Store,
    client: &Client,
    r: &Reference,
    progress: &dyn Progress,
) -> Result<ImageRecord, ImageError> {
    store.sweep_temporaries();
    let (manifest, manifest_bytes, manifest_digest, host) = resolve(client, r)?;
    let config_desc = manifest
        .config
        .clone()
        .ok_or_else(|| RegistryError::Protocol {
            host: host.clone(),
            why: "the manifest has no config".into(),
        })?;
    let mut blob = client.blob(&host, r, &config_desc.digest)?;
    let mut config_bytes = Vec::new();
    (&mut blob.reader)
        .take(16 << 20)
        .read_to_end(&mut config_bytes)
        .map_err(|e| RegistryError::Unreachable {
            host: host.clone(),
            why: e.to_string(),
        })?;
    store.put_blob(&config_bytes, Some(&config_desc.digest))?;
    let config: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|e| RegistryError::Protocol {
            host: host.clone(),
            why: format!("image config: {e}"),
        })?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(RegistryError::Protocol {
            host,
            why: format!(
                "the manifest has {} layers, the config {} diff_ids",
                manifest.layers.len(),
                diff_ids.len()
            ),
        }
        .into());
    }
    let mut layers = Vec::new();
    for (i, (desc, diff_id)) in manifest.layers.iter().zip(diff_ids).enumerate() {
        progress.layer_start(i, &desc.digest, (desc.size > 0).then_some(desc.size));
        let mut fetch_err = None;
        let got = store.ensure_layer(diff_id, Some(&desc.digest), || {
            let b = client.blob(&host, r, &desc.digest).map_err(|e| {
                let msg = e.to_string();
                fetch_err = Some(e);
                StoreError::Io {
                    what: "cannot download",
                    path: desc.digest.to_string().into(),
                    source: io::Error::other(msg),
                }
            })?;
            Ok(Counting {
                inner: b.reader,
                index: i,
                progress,
            })
        });
        let (size, cached) = match (got, fetch_err) {
            (Ok(v), _) => v,
            (Err(_), Some(e)) => return Err(e.into()),
            (Err(e), None) => return Err(e.into()),
        };
        progress.layer_done(i, cached);
        layers.push(LayerRef {
            diff_id: diff_id.clone(),
            size,
        });
    }
    store.put_blob(&manifest_bytes, Some(&manifest_digest))?;
    let rec = ImageRecord {
        reference: record_name(r),
        manifest: manifest_digest,
        config_digest: config_desc.digest,
        layers,
        config: config.config,
        created: now(),
        last_used: 0,
    };
    store.save(&rec)?;
    Ok(rec)
}

/// The name a record is listed under: name and tag, or name@digest when only pinned.
pub fn record_name(r: &Reference) -> String {
    if r.tag.is_some() {
        r.without_digest().to_string()
    } else {
        r.to_string()
    }
}
