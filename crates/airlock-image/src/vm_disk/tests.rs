use super::*;
use crate::layout::tar_of_files;
use crate::oci::RunConfig;
use crate::store::LayerRef;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("airlock-vmdisk-{tag}-{}", std::process::id()));
        let _ = unpack::remove_tree(&d);
        fs::create_dir_all(&d).expect("scratch");
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = unpack::remove_tree(&self.0);
    }
}

fn base() -> Vec<u8> {
    tar_of_files(&[
        ("bin/tool", b"#!tool v1", 0o755),
        ("bin/alias", b"->tool", 0o777),
        ("etc/os-release", b"ID=base\n", 0o644),
        ("gone", b"hidden by a whiteout", 0o644),
        ("d/old", b"hidden by an opaque d", 0o644),
        ("f-then-dir", b"a file below", 0o644),
        ("keep/lower", b"stays", 0o600),
    ])
    .expect("tar")
}

fn top() -> Vec<u8> {
    tar_of_files(&[
        (".wh.gone", b"", 0o644),
        ("d/.wh..wh..opq", b"", 0o644),
        ("d/new", b"new", 0o644),
        ("bin/tool", b"#!tool v2", 0o700),
        ("f-then-dir/inside", b"a directory above", 0o644),
        ("keep/upper", b"added", 0o644),
    ])
    .expect("tar")
}

/// A store with one record of the two layers above.
fn store_with_image(root: &Path) -> (Store, ImageRecord) {
    let store = Store::at_state_dir(root);
    let mut layers = Vec::new();
    for tar in [base(), top()] {
        let diff_id = Digest::of(&tar);
        let (size, _) = store
            .ensure_layer(&diff_id, None, || Ok(io::Cursor::new(tar.clone())))
            .expect("layer");
        layers.push(LayerRef { diff_id, size });
    }
    let rec = ImageRecord {
        reference: "example.com/vm/disk:1".into(),
        manifest: Digest::of(b"manifest"),
        config_digest: Digest::of(b"config"),
        layers,
        config: RunConfig::default(),
        created: 1,
        last_used: 1,
    };
    store.save(&rec).expect("save");
    (store, rec)
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| format!("<{e}>"))
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("listing")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn merged_layers_show_what_the_overlay_of_them_shows() {
    let s = Scratch::new("merge");
    let (store, rec) = store_with_image(&s.0);
    for owners in [Owners::AllRoot, Owners::Image] {
        let out = s.0.join(format!("merged-{owners:?}"));
        merge_layers(&store.layer_dirs(&rec), &out, owners).expect("merge");
        assert_eq!(
            listing(&out),
            ["bin", "d", "etc", "f-then-dir", "keep"],
            "the whiteout removed `gone`"
        );
        assert_eq!(
            listing(&out.join("d")),
            ["new"],
            "opaque: the lower d is hidden"
        );
        assert_eq!(listing(&out.join("keep")), ["lower", "upper"], "merged");
        assert_eq!(read(&out.join("f-then-dir/inside")), "a directory above");
        assert_eq!(
            read(&out.join("bin/tool")),
            "#!tool v2",
            "the upper file wins"
        );
        let mode = |p: &str| {
            fs::symlink_metadata(out.join(p))
                .expect("stat")
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("bin/tool"), 0o700);
        assert_eq!(mode("keep/lower"), 0o600);
        assert_eq!(mode("keep"), 0o755);
        assert_eq!(
            fs::read_link(out.join("bin/alias")).expect("symlink"),
            Path::new("tool")
        );
        assert_eq!(read(&out.join("etc/os-release")), "ID=base\n");
        if nix::unistd::geteuid().is_root() {
            // Unpacked as root: owned by ROOTFUL_UID_BASE + 0 in the store, root's when merged
            // with the image's owners.
            let layer_file = store.layer_dirs(&rec)[1].join("etc/os-release");
            assert_eq!(
                fs::metadata(layer_file).expect("stat").uid(),
                ROOTFUL_UID_BASE
            );
            if owners == Owners::Image {
                assert_eq!(
                    fs::metadata(out.join("etc/os-release"))
                        .expect("stat")
                        .uid(),
                    0
                );
                assert_eq!(fs::metadata(out.join("d")).expect("stat").uid(), 0);
            }
        }
    }
    // The layers are untouched by the merge.
    let lower = &store.layer_dirs(&rec)[1];
    assert_eq!(read(&lower.join("gone")), "hidden by a whiteout");
    assert_eq!(read(&lower.join("bin/tool")), "#!tool v1");
}

#[test]
fn a_disk_is_built_once_under_its_lock_and_pruned_with_its_image() {
    let s = Scratch::new("disk");
    let (store, rec) = store_with_image(&s.0);
    let builds = AtomicUsize::new(0);
    let build = |tree: &Path, out: &Path, _: Owners| -> Result<(), String> {
        builds.fetch_add(1, Ordering::SeqCst);
        // Slow enough for the other builder to wait on the lock.
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(read(&tree.join("d/new")), "new");
        fs::write(out, listing(tree).join(",")).map_err(|e| e.to_string())
    };
    let disks: Vec<VmDisk> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..2)
            .map(|_| sc.spawn(|| store.vm_disk(&rec, || {}, build).expect("disk")))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect()
    });
    assert_eq!(builds.load(Ordering::SeqCst), 1, "built once");
    assert_eq!(
        disks.iter().filter(|d| d.built).count(),
        1,
        "one builder built it, the other found it"
    );
    let path = store.vm_disk_path(&rec);
    assert_eq!(disks[0].path, path);
    assert_eq!(read(&path), "bin,d,etc,f-then-dir,keep");
    let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "QEMU reads it as the sandbox's user");
    assert!(
        path.starts_with(store.root().join("vm")) && path.ends_with(VM_DISK_FILE),
        "{}",
        path.display()
    );
    let again = store
        .vm_disk(
            &rec,
            || panic!("not built again"),
            |_, _, _| Err("no".into()),
        )
        .expect("disk");
    assert!(!again.built);
    // Another layout or other layers: another key.
    let mut other = rec.clone();
    other.layers.pop();
    assert_ne!(vm_disk_key(&other), vm_disk_key(&rec));
    // A failed build leaves nothing behind.
    let err = store
        .vm_disk(&other, || {}, |_, _, _| Err("mkfs failed".into()))
        .expect_err("the builder failed");
    assert!(err.to_string().contains("mkfs failed"), "{err}");
    assert!(!store.vm_disk_path(&other).exists());
    assert!(listing(&store.root().join("tmp")).is_empty());
    // Prune keeps the disk while its record is there, and removes it once the record is gone.
    assert_eq!(store.prune(&[]).expect("prune").vm_disks, 0);
    assert!(path.exists());
    store
        .remove(&crate::Reference::parse(&rec.reference).expect("reference"))
        .expect("remove");
    let pruned = store.prune(&[]).expect("prune");
    assert_eq!(pruned.vm_disks, 1);
    assert!(!path.parent().expect("dir").exists());
}
