//! The store, imports and prune against real files (no registry: see crates/airlock/tests/images.rs).

use airlock_image::layout::{config_json, tar_of_files, write_docker_save, write_oci, LayerTar};
use airlock_image::pull::Quiet;
use airlock_image::store::StoreError;
use airlock_image::{import, Digest, ImageError, Reference, Store};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

struct T(PathBuf);
impl T {
    fn new(tag: &str) -> T {
        let d = std::env::temp_dir().join(format!("airlock-store-{tag}-{}", std::process::id()));
        let _ = airlock_image::unpack::remove_tree(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        T(d)
    }
    fn store(&self) -> Store {
        Store::at_state_dir(&self.0.join("state"))
    }
}
impl Drop for T {
    fn drop(&mut self) {
        let _ = airlock_image::unpack::remove_tree(&self.0);
    }
}

fn base() -> LayerTar {
    LayerTar {
        tar: tar_of_files(&[
            ("bin/hello", b"#!/bin/sh\necho hi\n", 0o755),
            ("etc/os-release", b"ID=test\n", 0o644),
        ])
        .expect("tar"),
        gzip: true,
    }
}
fn top(text: &[u8]) -> LayerTar {
    LayerTar {
        tar: tar_of_files(&[("app/data", text, 0o644)]).expect("tar"),
        gzip: false,
    }
}

fn layer_count(store: &Store) -> usize {
    std::fs::read_dir(store.root().join("layers"))
        .map(|rd| rd.flatten().filter(|e| e.path().is_dir()).count())
        .unwrap_or(0)
}

fn tmp_is_empty(store: &Store) -> bool {
    std::fs::read_dir(store.root().join("tmp"))
        .map(|rd| rd.count() == 0)
        .unwrap_or(true)
}

#[test]
fn oci_layout_import_shares_layers_and_prune_keeps_what_is_used() {
    let t = T::new("oci");
    let store = t.store();
    let layout = t.0.join("layout");
    let (l1, l2) = (vec![base(), top(b"one")], vec![base(), top(b"two")]);
    write_oci(
        &layout,
        "example.com/app:1",
        &l1,
        &config_json(&l1, &["PATH=/bin", "A=1"], Some("/app"), Some("1000")),
    )
    .expect("write");
    let rec = import::import(&store, &layout, None, &Quiet).expect("import");
    assert_eq!(rec.reference, "example.com/app:1");
    assert_eq!(rec.layers.len(), 2);
    assert_eq!(rec.config.working_dir.as_deref(), Some("/app"));
    assert_eq!(
        rec.config.env_pairs(),
        vec![("PATH".into(), "/bin".into()), ("A".into(), "1".into())]
    );
    let dirs = store.layer_dirs(&rec);
    assert_eq!(
        std::fs::read(dirs[0].join("app/data")).expect("top layer first"),
        b"one"
    );
    assert!(dirs[1].join("bin/hello").is_file());

    // A second image sharing the base layer: one more layer directory, not two.
    let layout2 = t.0.join("layout2");
    write_oci(
        &layout2,
        "example.com/app:2",
        &l2,
        &config_json(&l2, &[], None, None),
    )
    .expect("write");
    let rec2 = import::import(&store, &layout2, None, &Quiet).expect("import");
    assert_eq!(rec2.layers[0].diff_id, rec.layers[0].diff_id);
    assert_eq!(layer_count(&store), 3);
    assert_eq!(store.list().expect("list").len(), 2);
    let by_digest = Reference::parse(&format!("example.com/app@{}", rec2.manifest)).expect("ref");
    assert_eq!(store.find(&by_digest).expect("find"), Some(rec2.clone()));

    // rm the first: prune reclaims only its own top layer.
    store
        .remove(&Reference::parse("example.com/app:1").expect("ref"))
        .expect("rm");
    let pruned = store.prune(&[]).expect("prune");
    assert_eq!(pruned.layers, 1);
    assert_eq!(layer_count(&store), 2);
    assert!(store
        .find(&Reference::parse("example.com/app:2").expect("ref"))
        .expect("find")
        .is_some());
    store
        .remove(&Reference::parse("example.com/app:2").expect("ref"))
        .expect("rm");
    assert_eq!(store.prune(&[]).expect("prune").layers, 2);
    assert_eq!(layer_count(&store), 0);
    assert!(tmp_is_empty(&store));
}

#[test]
fn docker_save_and_oci_tar_archives_import() {
    let t = T::new("archives");
    let store = t.store();
    let layers = vec![base(), top(b"saved")];
    let cfg = config_json(&layers, &["X=y"], None, None);
    let save = t.0.join("save.tar");
    write_docker_save(&save, "busybox:saved", &layers, &cfg).expect("save");
    let rec = import::import(&store, &save, None, &Quiet).expect("import docker save");
    assert_eq!(rec.reference, "docker.io/library/busybox:saved");
    assert_eq!(
        std::fs::read(store.layer_dirs(&rec)[0].join("app/data")).expect("read"),
        b"saved"
    );

    // An OCI layout as a tar, renamed with --tag.
    let layout = t.0.join("layout");
    write_oci(&layout, "x:latest", &layers, &cfg).expect("write");
    let tarball = t.0.join("oci.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tarball).expect("create"));
    b.append_dir_all(".", &layout).expect("tar");
    b.finish().expect("finish");
    drop(b);
    let name = Reference::parse("registry.local/named:v1").expect("ref");
    let rec2 = import::import(&store, &tarball, Some(&name), &Quiet).expect("import oci tar");
    assert_eq!(rec2.reference, "registry.local/named:v1");
    assert_eq!(layer_count(&store), 2, "same layers, unpacked once");
    assert!(tmp_is_empty(&store));
}

#[test]
fn a_corrupt_blob_is_refused_and_nothing_is_kept() {
    let t = T::new("corrupt");
    let store = t.store();
    let layers = vec![base(), top(b"good")];
    let layout = t.0.join("layout");
    write_oci(
        &layout,
        "x.io/c:1",
        &layers,
        &config_json(&layers, &[], None, None),
    )
    .expect("write");
    // Swap the top layer's content for another tar under the same digest name.
    let good = Digest::of(&layers[1].blob().expect("blob"));
    std::fs::write(
        layout.join("blobs/sha256").join(good.hex()),
        top(b"evil").tar,
    )
    .expect("corrupt");
    let err = import::import(&store, &layout, None, &Quiet).expect_err("must refuse");
    assert!(
        matches!(err, ImageError::Store(StoreError::DigestMismatch { .. })),
        "{err}"
    );
    assert!(err.hint().contains("nothing was kept"));
    assert!(store.list().expect("list").is_empty());
    assert!(!store.has_layer(&layers[1].diff_id()));
    assert!(tmp_is_empty(&store));
}

#[test]
fn a_hostile_layer_is_refused_and_nothing_is_kept() {
    let t = T::new("hostile");
    let store = t.store();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    tar.append_link(&mut h, "esc", "/").expect("link");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "esc/tmp/pwned-by-layer", &b"x"[..])
        .expect("file");
    let layers = vec![LayerTar {
        tar: tar.into_inner().expect("tar"),
        gzip: true,
    }];
    let layout = t.0.join("layout");
    write_oci(
        &layout,
        "x.io/h:1",
        &layers,
        &config_json(&layers, &[], None, None),
    )
    .expect("write");
    let err = import::import(&store, &layout, None, &Quiet).expect_err("must refuse");
    assert!(err.to_string().contains("hostile layer"), "{err}");
    assert!(!Path::new("/tmp/pwned-by-layer").exists());
    assert!(store.list().expect("list").is_empty());
    assert_eq!(layer_count(&store), 0);
}

#[test]
fn concurrent_ensures_of_one_layer_unpack_it_once() {
    let t = T::new("concurrent");
    let store = t.store();
    let layer = base();
    let blob = layer.blob().expect("blob");
    let (diff, bd) = (layer.diff_id(), Digest::of(&blob));
    let calls = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                store
                    .ensure_layer(&diff, Some(&bd), || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        Ok(std::io::Cursor::new(blob.clone()))
                    })
                    .expect("ensure")
            });
        }
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(store.has_layer(&diff));
}

#[test]
fn leftovers_of_an_interrupted_unpack_are_never_used_and_are_swept() {
    let t = T::new("interrupted");
    let store = t.store();
    let layer = base();
    // A layer directory without its size file (killed between the renames) does not count.
    std::fs::create_dir_all(store.layer_dir(&layer.diff_id())).expect("mkdir");
    assert_eq!(store.layer_size(&layer.diff_id()), None);
    // A temporary of a dead process.
    let dead = store.root().join("tmp/4194303999-00");
    std::fs::create_dir_all(dead.join("layer/usr")).expect("mkdir");
    assert_eq!(store.sweep_temporaries(), 1);
    assert!(!dead.exists());
    let blob = layer.blob().expect("blob");
    let (_, cached) = store
        .ensure_layer(&layer.diff_id(), Some(&Digest::of(&blob)), || {
            Ok(std::io::Cursor::new(blob.clone()))
        })
        .expect("ensure");
    assert!(!cached);
    assert!(store
        .layer_dir(&layer.diff_id())
        .join("bin/hello")
        .is_file());
}

#[test]
fn a_moved_tag_keeps_the_older_image_until_prune_and_a_pinned_one_stays() {
    let t = T::new("moved");
    let store = t.store();
    let mut recs = Vec::new();
    for (i, text) in [b"v1", b"v2", b"v3"].iter().enumerate() {
        let layout = t.0.join(format!("l{i}"));
        let layers = vec![base(), top(*text)];
        write_oci(
            &layout,
            "x.io/moving:latest",
            &layers,
            &config_json(&layers, &[], None, None),
        )
        .expect("write");
        let mut rec = import::import(&store, &layout, None, &Quiet).expect("import");
        // Pulled at distinct times.
        rec.created = 1000 + i as u64;
        store.save(&rec).expect("save");
        recs.push(rec);
    }
    let name = Reference::parse("x.io/moving:latest").expect("ref");
    assert_eq!(store.list().expect("list").len(), 3);
    assert_eq!(
        store.find(&name).expect("find").map(|r| r.manifest),
        Some(recs[2].manifest.clone())
    );
    let old = Reference::parse(&format!("x.io/moving@{}", recs[0].manifest)).expect("ref");
    assert!(
        store.find(&old).expect("find").is_some(),
        "the older image is still there by digest"
    );
    // v1 is pinned (a named sandbox uses it): kept; v2 is superseded and unpinned: removed.
    let p = store
        .prune(std::slice::from_ref(&recs[0].manifest))
        .expect("prune");
    assert_eq!((p.images, p.layers), (1, 1));
    let left: Vec<_> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|r| r.manifest)
        .collect();
    assert_eq!(left.len(), 2);
    assert!(left.contains(&recs[0].manifest) && left.contains(&recs[2].manifest));
    assert!(store.find(&old).expect("find").is_some());
}
