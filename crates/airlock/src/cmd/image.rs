//! `airlock image pull|ls|rm|inspect|import|prune`, and resolving a spec's image for `run`,
//! `create` and `up` (pulled when missing; `auto` picked from the command and project files).

use crate::cli::ImageCommand;
use crate::error::{CliError, CliResult};
use airlock_image::pull::{Progress, Quiet};
use airlock_image::registry::RegistryError;
use airlock_image::store::StoreError;
use airlock_image::{Client, ImageError, ImageRecord, Reference, RegistryConfig, Store};
use airlock_model::config::Effective;
use airlock_model::plan::ImageRoot;
use airlock_model::spec::{ImageUser, RootFs};
use airlock_model::{exit, runtime};
use airlock_sandbox::container::rundir;
use std::io::IsTerminal;
use std::path::Path;

impl From<ImageError> for CliError {
    fn from(e: ImageError) -> Self {
        let code = match &e {
            ImageError::Reference(_) => exit::USAGE,
            ImageError::NotInStore(_) | ImageError::Registry(RegistryError::NotFound { .. }) => {
                exit::NOT_FOUND
            }
            _ => exit::IMAGE_FAILED,
        };
        let hint = e.hint();
        CliError::new(code, e).hint(hint)
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        ImageError::from(e).into()
    }
}

pub fn store() -> Store {
    Store::at_state_dir(&rundir::state_dir())
}

pub fn registry_config(eff: &Effective) -> RegistryConfig {
    RegistryConfig {
        mirrors: eff.images.mirrors.clone(),
        insecure: eff.images.insecure_registries.clone(),
        auth_files: None,
    }
}

fn parse_ref(s: &str) -> CliResult<Reference> {
    Ok(Reference::parse(s).map_err(ImageError::from)?)
}

pub fn dispatch(c: ImageCommand, global_config: Option<&Path>, no_user: bool) -> CliResult<i32> {
    let store = store();
    match c {
        ImageCommand::Pull(a) => {
            let eff =
                super::load::load_config(global_config, no_user, Default::default())?.effective;
            let r = parse_ref(&a.reference)?;
            let rec = pull(&store, &eff, &r, !a.json)?;
            if a.json {
                outln!("{}", record_json(&store, &rec));
            } else {
                outln!(
                    "pulled {} ({}, {} layers, {})",
                    short(&rec.reference),
                    rec.manifest,
                    rec.layers.len(),
                    human(rec.size())
                );
            }
            Ok(0)
        }
        ImageCommand::Ls(a) => {
            let list = store.list()?;
            if a.json {
                let v: Vec<_> = list.iter().map(|r| record_json(&store, r)).collect();
                outln!("{}", serde_json::Value::Array(v));
                return Ok(0);
            }
            outln!(
                "{:<48} {:<20} {:>10}  LAST USED",
                "REFERENCE",
                "DIGEST",
                "SIZE"
            );
            for r in &list {
                outln!(
                    "{:<48} {:<20} {:>10}  {}",
                    short(&r.reference),
                    r.manifest.short(),
                    human(r.size()),
                    ago(r.last_used)
                );
            }
            Ok(0)
        }
        ImageCommand::Rm(a) => {
            let r = parse_ref(&a.reference)?;
            // A named sandbox is pinned to its image: removing it would strand the sandbox
            // (and prune would take the layers it runs on).
            for rec in store.list()?.iter().filter(|rec| matches(rec, &r)) {
                let users = sandboxes_using(&rec.manifest.to_string());
                if !users.is_empty() {
                    return Err(CliError::new(
                        exit::CONFLICT,
                        anyhow::anyhow!(
                            "image {} is used by sandbox {}",
                            short(&rec.reference),
                            users.join(", ")
                        ),
                    )
                    .hint("remove those sandboxes first (airlock rm NAME)"));
                }
            }
            let removed = store.remove(&r)?;
            if removed.is_empty() {
                return Err(ImageError::NotInStore(a.reference.clone()).into());
            }
            if a.json {
                let v: Vec<_> = removed.iter().map(|r| record_json(&store, r)).collect();
                outln!("{}", serde_json::Value::Array(v));
            } else {
                for rec in &removed {
                    outln!(
                        "removed {} ({})",
                        short(&rec.reference),
                        rec.manifest.short()
                    );
                }
                outln!("(its layers are reclaimed by `airlock image prune`)");
            }
            Ok(0)
        }
        ImageCommand::Inspect(a) => {
            let r = parse_ref(&a.reference)?;
            let rec = store
                .find(&r)?
                .ok_or_else(|| ImageError::NotInStore(a.reference.clone()))?;
            let mut v = record_json(&store, &rec);
            v["config"] = serde_json::to_value(&rec.config).unwrap_or_default();
            v["layer_dirs"] = serde_json::to_value(store.layer_dirs(&rec)).unwrap_or_default();
            outln!(
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
            );
            Ok(0)
        }
        ImageCommand::Import(a) => {
            let name = a.tag.as_deref().map(parse_ref).transpose()?;
            let bars = Bars::new(!a.json);
            let rec =
                airlock_image::import::import(&store, &a.file, name.as_ref(), bars.as_progress())?;
            drop(bars);
            if a.json {
                outln!("{}", record_json(&store, &rec));
            } else {
                outln!(
                    "imported {} ({}, {} layers, {})",
                    short(&rec.reference),
                    rec.manifest,
                    rec.layers.len(),
                    human(rec.size())
                );
            }
            Ok(0)
        }
        ImageCommand::Prune(a) => {
            let p = store.prune(&pinned_digests())?;
            if a.json {
                outln!("{}", serde_json::to_value(&p).unwrap_or_default());
            } else {
                outln!(
                    "removed {} superseded images, {} layers, {} blobs, {} leftovers; {} reclaimed",
                    p.images,
                    p.layers,
                    p.blobs,
                    p.temporaries,
                    human(p.bytes)
                );
            }
            Ok(0)
        }
    }
}

/// Pull with progress bars when stderr is a terminal and `show` is set.
pub fn pull(store: &Store, eff: &Effective, r: &Reference, show: bool) -> CliResult<ImageRecord> {
    let client = Client::new(registry_config(eff));
    let bars = Bars::new(show);
    let rec = airlock_image::pull::pull(store, &client, r, bars.as_progress())?;
    Ok(rec)
}

fn record_json(store: &Store, r: &ImageRecord) -> serde_json::Value {
    serde_json::json!({
        "reference": r.reference,
        "digest": r.manifest,
        "config_digest": r.config_digest,
        "size": r.size(),
        "layers": r.layers.iter().map(|l| serde_json::json!({"diff_id": l.diff_id, "size": l.size})).collect::<Vec<_>>(),
        "created": r.created,
        "last_used": (r.last_used > 0).then_some(r.last_used),
        "store": store.root(),
    })
}

fn short(reference: &str) -> String {
    Reference::parse(reference)
        .map(|r| r.short())
        .unwrap_or_else(|_| reference.to_string())
}

pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn ago(t: u64) -> String {
    if t == 0 {
        return "never".into();
    }
    let d = airlock_image::store::now().saturating_sub(t);
    match d {
        0..=59 => format!("{d}s ago"),
        60..=3599 => format!("{}m ago", d / 60),
        3600..=86399 => format!("{}h ago", d / 3600),
        _ => format!("{}d ago", d / 86400),
    }
}

/// Progress bars (one per layer: bytes, total, rate) on a terminal; nothing otherwise.
struct Bars {
    multi: Option<indicatif::MultiProgress>,
    bars: std::sync::Mutex<Vec<indicatif::ProgressBar>>,
}

impl Bars {
    fn new(show: bool) -> Bars {
        let tty = show && std::io::stderr().is_terminal();
        Bars {
            multi: tty.then(indicatif::MultiProgress::new),
            bars: Default::default(),
        }
    }
    fn as_progress(&self) -> &dyn Progress {
        if self.multi.is_some() {
            self
        } else {
            &Quiet
        }
    }
    fn bar(&self, i: usize) -> Option<indicatif::ProgressBar> {
        self.bars.lock().ok()?.get(i).cloned()
    }
}

impl Progress for Bars {
    fn layer_start(&self, index: usize, digest: &airlock_image::Digest, size: Option<u64>) {
        let Some(m) = &self.multi else { return };
        let bar = m.add(indicatif::ProgressBar::new(size.unwrap_or(0)));
        let style = indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .map(|s| s.progress_chars("=> "));
        if let Ok(s) = style {
            bar.set_style(s);
        }
        bar.set_prefix(digest.short());
        if let Ok(mut b) = self.bars.lock() {
            while b.len() < index {
                b.push(indicatif::ProgressBar::hidden());
            }
            b.push(bar);
        }
    }
    fn layer_bytes(&self, index: usize, n: u64) {
        if let Some(b) = self.bar(index) {
            b.inc(n);
        }
    }
    fn layer_done(&self, index: usize, cached: bool) {
        if let Some(b) = self.bar(index) {
            b.finish_with_message(if cached { "already here" } else { "done" });
        }
    }
}

/// What `[sandbox] image` / `--image` means for this command: `host`, an image (found in the
/// store, else pulled), or `auto` (picked from `argv` and the project's files, said on stderr).
/// Returns the spec's root filesystem (pinned to the image's manifest digest) and the record.
pub fn resolve_for_spec(
    eff: &Effective,
    image: &str,
    argv: &[String],
    project_dir: &Path,
) -> CliResult<(RootFs, Option<ImageRecord>)> {
    let image = if image == runtime::AUTO {
        let files: Vec<String> = std::fs::read_dir(project_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        let d = runtime::detect(argv, &files, &eff.images.runtimes);
        errln!("airlock: image: {} (auto: {})", d.image, d.reason);
        d.image
    } else {
        image.to_string()
    };
    if image == "host" {
        return Ok((RootFs::Host, None));
    }
    let r = parse_ref(&image)?;
    let store = store();
    let rec = match store.find(&r)? {
        Some(rec) => rec,
        None => {
            errln!("airlock: pulling {} …", r.short());
            pull(&store, eff, &r, true)?
        }
    };
    let reference = Reference::parse(&rec.reference)
        .map(|x| x.without_digest().to_string())
        .unwrap_or_else(|_| rec.reference.clone());
    Ok((
        RootFs::Image {
            reference,
            digest: Some(rec.manifest.to_string()),
        },
        Some(rec),
    ))
}

/// The store's facts for a spec's image root (None for `host`), for the planner; for the
/// microVM backend (`vm_disk`) with the image's root disk, built on its first use.
pub fn root_facts(rootfs: &RootFs, vm_disk: bool) -> CliResult<Option<Box<ImageRoot>>> {
    let RootFs::Image { reference, digest } = rootfs else {
        return Ok(None);
    };
    let label = rootfs.label();
    let r = match digest {
        Some(d) => parse_ref(&format!("{}@{d}", strip_digest(reference)))?,
        None => parse_ref(reference)?,
    };
    let store = store();
    let Some(rec) = store.find(&r)? else {
        return Err(ImageError::NotInStore(label).into());
    };
    let _ = store.touch(&rec);
    let layers = store.layer_dirs(&rec);
    // /etc/passwd and /etc/group as the image shows them (never through a symlink).
    let read = |name: &str| airlock_image::user::read_file(&layers, &["etc", name]);
    let reference = format!("{}@{}", strip_digest(&rec.reference), rec.manifest);
    let vm_disk = match vm_disk {
        true => Some(ensure_vm_disk(&store, &rec, &label)?),
        false => None,
    };
    Ok(Some(Box::new(ImageRoot {
        reference,
        passwd: read("passwd"),
        group: read("group"),
        layers,
        vm_disk,
    })))
}

/// The image's read-only root disk for microVMs (an erofs of its merged layers), built once per
/// layer set and kept in the store beside the layers (`image prune` removes it with them).
fn ensure_vm_disk(store: &Store, rec: &ImageRecord, label: &str) -> CliResult<std::path::PathBuf> {
    use airlock_image::vm_disk::Owners;
    let disk = store.vm_disk(
        rec,
        || errln!("airlock: building the microVM disk of image {label} (once; kept in the image store)"),
        |tree, out, owners| {
            let mut extra = vec!["-zlz4".to_string()];
            if owners == Owners::AllRoot {
                extra.push("--all-root".into());
            }
            airlock_sandbox::microvm::artifacts::erofs(tree, out, &extra)
        },
    )?;
    Ok(disk.path)
}

/// Who runs in an image by default: its `User` resolved through its own /etc/passwd and
/// /etc/group (None: empty or root, so the unprivileged `agent`).
pub fn image_user(rec: &ImageRecord) -> CliResult<Option<ImageUser>> {
    let Some(user) = rec.config.user.as_deref() else {
        return Ok(None);
    };
    let layers = store().layer_dirs(rec);
    let read = |name: &str| airlock_image::user::read_file(&layers, &["etc", name]);
    airlock_image::user::resolve(user, read("passwd").as_deref(), read("group").as_deref()).map_err(
        |e| {
            CliError::new(
                exit::IMAGE_FAILED,
                anyhow::anyhow!("image {}: {e}", rec.reference),
            )
            .hint("pass --user agent (or --user root) to run as airlock's own user instead")
        },
    )
}

fn strip_digest(r: &str) -> &str {
    r.split_once('@').map(|(a, _)| a).unwrap_or(r)
}

/// `airlock doctor`'s rows about images: the store, the registry settings, image roots.
pub fn doctor_rows() -> Vec<airlock_sandbox::hostcaps::Row> {
    use airlock_sandbox::hostcaps::{Row, Status};
    let row = |id: &str, name: &str, status, detail: String, fix: Option<String>| Row {
        id: id.into(),
        name: name.into(),
        status,
        detail,
        fix,
        needed_for: "OCI images (--image, [sandbox] image)".into(),
    };
    let store = store();
    let (n, size) = store
        .list()
        .map(|l| (l.len(), l.iter().map(ImageRecord::size).sum::<u64>()))
        .unwrap_or((0, 0));
    let mut rows = vec![row(
        "images.store",
        "image store",
        Status::Ok,
        format!(
            "{}: {n} image(s), {} unpacked",
            store.root().display(),
            human(size)
        ),
        None,
    )];
    let eff = super::load::load_config(None, false, Default::default())
        .map(|r| r.effective)
        .unwrap_or_default();
    let mirrors: Vec<String> = eff
        .images
        .mirrors
        .iter()
        .map(|(r, m)| format!("{r} -> {}", m.join(", ")))
        .collect();
    let auth: Vec<String> = airlock_image::registry::default_auth_files()
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    rows.push(row(
        "images.registries",
        "image registries",
        Status::Ok,
        format!(
            "mirrors: {}; plain HTTP: {}; credentials from: {}",
            if mirrors.is_empty() {
                "none".into()
            } else {
                mirrors.join("; ")
            },
            if eff.images.insecure_registries.is_empty() {
                "none".into()
            } else {
                eff.images.insecure_registries.join(", ")
            },
            if auth.is_empty() {
                "no auth file".into()
            } else {
                auth.join(", ")
            }
        ),
        None,
    ));
    let xattr = airlock_sandbox::kernel::at_least(6, 6);
    rows.push(row(
        "images.overlay",
        "image root filesystems",
        if xattr { Status::Ok } else { Status::Missing },
        if xattr {
            "overlay of the image's layers, tmpfs upper layer with user xattrs".into()
        } else {
            "this kernel's tmpfs has no user xattrs (Linux < 6.6)".into()
        },
        (!xattr).then(|| "upgrade to Linux 6.6 or later, or keep image = \"host\"".into()),
    ));
    rows
}

fn matches(rec: &ImageRecord, r: &Reference) -> bool {
    match &r.digest {
        Some(d) => rec.manifest == *d,
        None => rec.reference == r.without_digest().to_string(),
    }
}

/// Every named sandbox and the image manifest its spec is pinned to.
fn pins() -> Vec<(String, String)> {
    let dir = airlock_engine::paths::state_dir().join("sandboxes");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Some(spec) = super::named::recorded_spec(&e.path()) {
            if let RootFs::Image {
                digest: Some(d), ..
            } = &spec.rootfs
            {
                out.push((e.file_name().to_string_lossy().into_owned(), d.clone()));
            }
        }
    }
    out.sort();
    out
}

/// Named sandboxes whose recorded spec is pinned to the manifest `digest`.
fn sandboxes_using(digest: &str) -> Vec<String> {
    pins()
        .into_iter()
        .filter(|(_, d)| d == digest)
        .map(|(n, _)| n)
        .collect()
}

fn pinned_digests() -> Vec<airlock_image::Digest> {
    pins()
        .iter()
        .filter_map(|(_, d)| airlock_image::Digest::parse(d).ok())
        .collect()
}
