//! End-to-end tests of OCI images: a real registry (Debian's `docker-registry`) on a free
//! loopback port with a temporary storage directory, images built here from busybox-static
//! (no internet) and pushed with skopeo, then `airlock image pull|ls|rm|prune|import` and
//! `airlock run --image` rootful and rootless. `.ci/install-images` installs the tools.
//!
//! Needs root (CI is root): see `common::e2e`.

mod common;

use airlock_image::layout::{config_json, tar_of_files, write_docker_save, write_oci, LayerTar};
use common::{e2e, test_user, Airlock, Bins, TempDir};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ls", "id", "test", "head", "env", "pwd", "true", "false", "printf",
    "touch", "whoami", "grep", "wc", "sleep",
];

/// A running `docker-registry` on 127.0.0.1:PORT, killed (and its storage removed) on drop.
struct Registry {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = TempDir::new("registry");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("storage").display()
            ),
        )
        .expect("write the registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry (run .ci/install-images)");
        let r = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Push an OCI layout's image `tag` as `repo:tag` with skopeo.
    fn push(&self, layout: &Path, tag: &str, repo: &str) {
        self.push_with(layout, tag, repo, &[]);
    }

    /// `push` with more `skopeo copy` options (e.g. the layers' compression).
    fn push_with(&self, layout: &Path, tag: &str, repo: &str, extra: &[&str]) {
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(extra)
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.host()))
            .output()
            .expect("run skopeo (run .ci/install-images)");
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The registry's stored copy of a blob.
    fn blob_path(&self, hex: &str) -> PathBuf {
        self.dir.join(format!(
            "storage/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The base layer: busybox-static and its applets, an os-release naming `id`, a passwd with
/// an image user, `gone` and `d/old` (hidden by the whiteout layer).
fn base_layer(id: &str) -> LayerTar {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static (run .ci/install-images)");
    let os_release = format!("ID={id}\nNAME=\"airlock test {id}\"\n");
    let mut files: Vec<(String, Vec<u8>, u32)> = vec![
        ("bin/busybox".into(), busybox, 0o755),
        ("etc/os-release".into(), os_release.into_bytes(), 0o644),
        (
            "etc/passwd".into(),
            b"root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n".to_vec(),
            0o644,
        ),
        ("gone".into(), b"from the base layer\n".to_vec(), 0o644),
        ("d/old".into(), b"old\n".to_vec(), 0o644),
        ("srv/.keep".into(), Vec::new(), 0o644),
    ];
    for a in BUSYBOX_APPLETS {
        files.push((format!("bin/{a}"), b"->busybox".to_vec(), 0o777));
    }
    let refs: Vec<(&str, &[u8], u32)> = files
        .iter()
        .map(|(p, d, m)| (p.as_str(), d.as_slice(), *m))
        .collect();
    LayerTar {
        tar: tar_of_files(&refs).expect("tar"),
        gzip: true,
    }
}

/// A layer with a whiteout (`gone`) and an opaque directory (`d`: only `new` remains).
fn whiteout_layer() -> LayerTar {
    LayerTar {
        tar: tar_of_files(&[
            (".wh.gone", b"", 0o644),
            ("d/.wh..wh..opq", b"", 0o644),
            ("d/new", b"new\n", 0o644),
        ])
        .expect("tar"),
        gzip: true,
    }
}

fn image(layout: &Path, name: &str, id: &str) -> Vec<LayerTar> {
    let layers = vec![base_layer(id), whiteout_layer()];
    let cfg = config_json(
        &layers,
        &["PATH=/bin", "IMAGE_VAR=from-image"],
        Some("/srv"),
        Some("www"),
    );
    write_oci(layout, name, &layers, &cfg).expect("write the layout");
    layers
}

fn write_user_config(a: &Airlock, text: &str) {
    let dir = a.dir.join("home/.config/airlock");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("config.toml"), text).expect("write config");
    if let Some(u) = &a.user {
        for p in [
            a.dir.join("home/.config"),
            dir.clone(),
            dir.join("config.toml"),
        ] {
            std::os::unix::fs::chown(&p, Some(u.uid), Some(u.gid)).expect("chown");
        }
    }
}

fn ok(a: &Airlock, args: &[&str]) -> common::Outcome {
    let out = a.run(args);
    assert_eq!(out.code(), 0, "airlock {args:?}:\n{}", out.describe());
    out
}

fn layer_dirs(a: &Airlock) -> usize {
    std::fs::read_dir(a.state_dir().join("images/layers"))
        .map(|rd| rd.flatten().filter(|e| e.path().is_dir()).count())
        .unwrap_or(0)
}

#[test]
fn pull_run_ls_rm_prune_through_a_loopback_registry_rootful_and_rootless() {
    if !e2e("pull_run_ls_rm_prune_through_a_loopback_registry_rootful_and_rootless") {
        return;
    }
    let reg = Registry::start();
    let src = TempDir::new("layout");
    image(&src.join("oci"), "busybox:1", "airlock-busybox");
    reg.push(&src.join("oci"), "1", "library/busybox");
    let reference = format!("{}/library/busybox:1", reg.host());
    let bins = Bins::owned_by(&test_user());
    for (mode, a) in [
        ("rootful", Airlock::root()),
        ("rootless", Airlock::rootless(&bins)),
    ] {
        write_user_config(
            &a,
            &format!("[images]\ninsecure_registries = [\"{}\"]\n", reg.host()),
        );
        let pulled = ok(&a, &["image", "pull", &reference]);
        assert!(
            pulled.stdout.contains("pulled"),
            "{mode}: {}",
            pulled.describe()
        );
        let ls = ok(&a, &["image", "ls", "--json"]);
        let list: serde_json::Value = serde_json::from_str(&ls.stdout).expect("ls --json");
        assert_eq!(list[0]["reference"], reference.as_str(), "{mode}");
        assert_eq!(
            list[0]["layers"].as_array().map(Vec::len),
            Some(2),
            "{mode}"
        );
        let digest = list[0]["digest"].as_str().expect("digest").to_string();

        // The image is the root: its os-release, not the host's /usr; whiteouts applied; its
        // Env applies; its non-root User (`www`, uid 33 in its passwd) runs.
        let script = "cat /etc/os-release; test -e /usr/bin/dpkg || echo no-host-usr; \
                      test -e /gone || echo gone-hidden; ls /d; echo var=$IMAGE_VAR; id -u; \
                      grep -c ^www: /etc/passwd; touch /bin/x 2>/dev/null || echo root-ro";
        let out = ok(
            &a,
            &["run", "--image", &reference, "--", "sh", "-c", script],
        );
        let o = &out.stdout;
        for want in [
            "ID=airlock-busybox",
            "no-host-usr",
            "gone-hidden",
            "var=from-image",
            "\n33\n",
            "root-ro",
        ] {
            assert!(
                o.contains(want),
                "{mode}: {want:?} missing:\n{}",
                out.describe()
            );
        }
        assert!(
            o.contains("new") && !o.contains("old"),
            "{mode}: opaque dir:\n{o}"
        );
        assert!(
            o.contains("\n1\n"),
            "{mode}: the image's own user is kept:\n{o}"
        );
        // The issue's own check.
        let out = ok(
            &a,
            &[
                "run",
                "--image",
                &reference,
                "--",
                "sh",
                "-c",
                "cat /etc/os-release || busybox | head -1",
            ],
        );
        assert!(
            out.stdout.contains("airlock-busybox"),
            "{mode}: {}",
            out.describe()
        );
        // No workspace: the image's WorkingDir.
        let out = ok(
            &a,
            &[
                "run",
                "--workspace",
                "none",
                "--image",
                &reference,
                "--",
                "pwd",
            ],
        );
        assert_eq!(out.stdout.trim(), "/srv", "{mode}");
        // Pinned by digest: found in the store by it.
        let pinned = format!("{}/library/busybox@{digest}", reg.host());
        ok(&a, &["run", "--image", &pinned, "--", "true"]);
        let ls = ok(&a, &["image", "ls"]);
        assert!(
            !ls.stdout.contains("never"),
            "{mode}: last used is recorded:\n{}",
            ls.stdout
        );

        ok(&a, &["image", "rm", &reference]);
        let gone = a.run(&["image", "inspect", &reference]);
        assert_eq!(gone.code(), 122, "{mode}: {}", gone.describe());
        assert!(
            gone.stderr.contains("hint: pull it first"),
            "{mode}: {}",
            gone.stderr
        );
        assert_eq!(layer_dirs(&a), 2, "{mode}");
        let pruned = ok(&a, &["image", "prune", "--json"]);
        let p: serde_json::Value = serde_json::from_str(&pruned.stdout).expect("json");
        assert_eq!(p["layers"], 2, "{mode}: {}", pruned.stdout);
        assert_eq!(layer_dirs(&a), 0, "{mode}");
    }
}

#[test]
fn digests_are_verified_pins_honoured_and_registry_errors_explained() {
    if !e2e("digests_are_verified_pins_honoured_and_registry_errors_explained") {
        return;
    }
    let reg = Registry::start();
    let src = TempDir::new("layout");
    let layers = image(&src.join("oci"), "busybox:1", "pinned");
    reg.push(&src.join("oci"), "1", "library/busybox");
    let a = Airlock::root();
    write_user_config(
        &a,
        &format!("[images]\ninsecure_registries = [\"{}\"]\n", reg.host()),
    );
    let reference = format!("{}/library/busybox:1", reg.host());

    // A pin that is not the tag's digest is refused, nothing kept.
    let wrong = format!("{}/library/busybox:1@sha256:{}", reg.host(), "0".repeat(64));
    let out = a.run(&["image", "pull", &wrong]);
    assert_ne!(out.code(), 0, "{}", out.describe());
    assert_eq!(layer_dirs(&a), 0);

    // The right pin works and is what is recorded.
    let out = ok(&a, &["image", "pull", "--json", &reference]);
    let rec: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let digest = rec["digest"].as_str().expect("digest").to_string();
    ok(&a, &["image", "rm", &reference]);
    ok(&a, &["image", "prune"]);
    let pinned = format!("{}/library/busybox:1@{digest}", reg.host());
    let out = ok(&a, &["image", "pull", "--json", &pinned]);
    assert!(out.stdout.contains(&digest));
    ok(&a, &["image", "rm", &pinned]);
    ok(&a, &["image", "prune"]);

    // A registry serving a tampered layer: the digest check refuses it, nothing is kept.
    let blob = layers[1].blob().expect("blob");
    let hex = airlock_image::Digest::of(&blob).hex().to_string();
    let stored = reg.blob_path(&hex);
    let mut tampered = LayerTar {
        tar: tar_of_files(&[("d/new", b"evil\n", 0o644)]).expect("tar"),
        gzip: true,
    }
    .blob()
    .expect("blob");
    tampered.resize(blob.len().max(tampered.len()), 0);
    std::fs::write(&stored, &tampered).expect("tamper with the registry's copy");
    let out = a.run(&["image", "pull", &reference]);
    assert_eq!(out.code(), 118, "{}", out.describe());
    assert!(out.stderr.contains("digest mismatch"), "{}", out.stderr);
    assert!(out.stderr.contains("nothing was kept"), "{}", out.stderr);
    let ls = ok(&a, &["image", "ls", "--json"]);
    assert_eq!(ls.stdout.trim(), "[]");
    assert!(!a
        .state_dir()
        .join("images/layers")
        .join(layers[1].diff_id().hex())
        .exists());

    // Plain HTTP is never used for a registry not listed as insecure: TLS fails against it.
    let b = Airlock::root();
    let out = b.run(&["image", "pull", &reference]);
    assert_eq!(out.code(), 118, "{}", out.describe());
    assert!(out.stderr.contains("insecure_registries"), "{}", out.stderr);
    // A malformed reference is a usage error.
    let out = b.run(&["run", "--image", "Bad:ref!", "--", "true"]);
    assert_eq!(out.code(), 2, "{}", out.describe());
    // A registry that is down: a clear error and a hint.
    drop(reg);
    let out = a.run(&["image", "pull", &reference]);
    assert_eq!(out.code(), 118, "{}", out.describe());
    assert!(out.stderr.contains("unreachable"), "{}", out.stderr);
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
}

#[test]
fn concurrent_pulls_share_layers_and_an_interrupted_pull_leaves_nothing_used() {
    if !e2e("concurrent_pulls_share_layers_and_an_interrupted_pull_leaves_nothing_used") {
        return;
    }
    let reg = Registry::start();
    let src = TempDir::new("layout");
    image(&src.join("oci"), "busybox:1", "shared");
    reg.push(&src.join("oci"), "1", "library/busybox");
    // A second image sharing the base layer, with a big incompressible top layer.
    let mut noise = vec![0u8; 48 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut noise))
        .expect("random");
    let big = vec![
        base_layer("shared"),
        LayerTar {
            tar: tar_of_files(&[("big", &noise, 0o644)]).expect("tar"),
            gzip: false,
        },
    ];
    write_oci(
        &src.join("oci"),
        "big:1",
        &big,
        &config_json(&big, &[], None, None),
    )
    .expect("layout");
    reg.push(&src.join("oci"), "1", "library/big");
    let a = Airlock::root();
    write_user_config(
        &a,
        &format!("[images]\ninsecure_registries = [\"{}\"]\n", reg.host()),
    );
    let small = format!("{}/library/busybox:1", reg.host());
    let large = format!("{}/library/big:1", reg.host());

    // Kill a pull of the big image mid-way (or after: either way nothing half-made is used).
    let mut child = a
        .command(&["image", "pull", &large])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(150));
    let _ = child.kill();
    let _ = child.wait();
    // Two pulls at once: both succeed; the shared base layer is unpacked once.
    let (c1, c2) = (
        a.command(&["image", "pull", &small])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
        a.command(&["image", "pull", &large])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    for c in [c1, c2] {
        let out = c.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(layer_dirs(&a), 3, "base + whiteout layer + big layer");
    let tmp = a.state_dir().join("images/tmp");
    assert_eq!(
        std::fs::read_dir(&tmp).map(|r| r.count()).unwrap_or(0),
        0,
        "leftovers swept"
    );
    let out = ok(
        &a,
        &["run", "--image", &large, "--", "sh", "-c", "wc -c < /big"],
    );
    assert_eq!(out.stdout.trim(), (48u64 << 20).to_string());
}

#[test]
fn import_of_an_oci_layout_and_a_docker_save_archive_then_run() {
    if !e2e("import_of_an_oci_layout_and_a_docker_save_archive_then_run") {
        return;
    }
    let src = TempDir::new("layout");
    let layers = image(
        &src.join("oci"),
        "example.com/tools/busybox:oci",
        "imported-oci",
    );
    let a = Airlock::root();
    let out = ok(&a, &["image", "import", &src.join("oci").to_string_lossy()]);
    assert!(
        out.stdout
            .contains("imported example.com/tools/busybox:oci"),
        "{}",
        out.describe()
    );
    let out = ok(
        &a,
        &[
            "run",
            "--image",
            "example.com/tools/busybox:oci",
            "--",
            "cat",
            "/etc/os-release",
        ],
    );
    assert!(out.stdout.contains("ID=imported-oci"));
    let save = src.join("save.tar");
    write_docker_save(
        &save,
        "saved/busybox:2",
        &layers,
        &config_json(&layers, &["PATH=/bin"], None, None),
    )
    .expect("save");
    let out = ok(&a, &["image", "import", "--json", &save.to_string_lossy()]);
    let rec: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(rec["reference"], "docker.io/saved/busybox:2");
    assert_eq!(layer_dirs(&a), 2, "the same layers, unpacked once");
    ok(&a, &["run", "--image", "saved/busybox:2", "--", "true"]);
}

#[test]
fn auto_picks_the_runtime_through_a_mirror() {
    if !e2e("auto_picks_the_runtime_through_a_mirror") {
        return;
    }
    let reg = Registry::start();
    let src = TempDir::new("layout");
    // Pushed under the real names auto-detection picks, served by a mirror of docker.io.
    image(&src.join("py"), "python:3.12-alpine", "fake-python");
    reg.push(&src.join("py"), "3.12-alpine", "library/python");
    image(&src.join("node"), "node:22-alpine", "fake-node");
    reg.push(&src.join("node"), "22-alpine", "library/node");
    let a = Airlock::root();
    write_user_config(
        &a,
        &format!(
            "[sandbox]\nimage = \"auto\"\n[images]\ninsecure_registries = [\"{h}\"]\nmirrors = {{ \"docker.io\" = [\"{h}\"] }}\n",
            h = reg.host()
        ),
    );
    // A Python project: a shell command runs in the Python image.
    std::fs::write(a.cwd.join("pyproject.toml"), "[project]\nname = \"x\"\n").expect("write");
    let out = ok(&a, &["run", "--", "cat", "/etc/os-release"]);
    assert!(out.stdout.contains("ID=fake-python"), "{}", out.describe());
    assert!(
        out.stderr
            .contains("image: python:3.12-alpine (auto: the project file pyproject.toml)"),
        "{}",
        out.stderr
    );
    // The command decides over the project: `npm` runs in the Node image (busybox has no npm:
    // 127 from inside, but the image was chosen and pulled).
    let out = a.run(&["run", "--", "npm", "--version"]);
    assert!(
        out.stderr
            .contains("image: node:22-alpine (auto: the command `npm`)"),
        "{}",
        out.describe()
    );
    let ls = ok(&a, &["image", "ls"]);
    assert!(
        ls.stdout.contains("node:22-alpine") && ls.stdout.contains("python:3.12-alpine"),
        "{}",
        ls.stdout
    );
    // `airlock config` says what auto picks here; `doctor` shows the store and the mirrors.
    let cfg = ok(&a, &["config", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&cfg.stdout).expect("config --json");
    assert_eq!(
        v["image_auto"]["image"], "python:3.12-alpine",
        "{}",
        cfg.stdout
    );
    let cfg = ok(&a, &["config"]);
    assert!(
        cfg.stdout
            .contains("here python:3.12-alpine (the project file pyproject.toml)"),
        "{}",
        cfg.stdout
    );
    let doc = a.run(&["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&doc.stdout).expect("doctor --json");
    let row = |id: &str| {
        v["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["id"] == id))
            .map(|r| r["detail"].as_str().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("no doctor row {id}: {}", doc.stdout))
    };
    let store = row("images.store");
    let root = a.state_dir().join("images").display().to_string();
    assert!(
        store.contains(&root) && store.contains("2 image(s)"),
        "{store}"
    );
    let regs = row("images.registries");
    assert!(
        regs.contains(&format!("docker.io -> {}", reg.host())),
        "{regs}"
    );
}

#[test]
fn a_named_sandbox_on_an_image_keeps_it_across_restarts() {
    if !e2e("a_named_sandbox_on_an_image_keeps_it_across_restarts") {
        return;
    }
    let src = TempDir::new("layout");
    image(
        &src.join("oci"),
        "example.com/named/busybox:1",
        "named-image",
    );
    let a = Airlock::root();
    ok(&a, &["image", "import", &src.join("oci").to_string_lossy()]);
    let name = format!("img-{}", &common::random_hex()[..8]);
    ok(
        &a,
        &[
            "create",
            &name,
            "--workspace",
            "none",
            "--image",
            "example.com/named/busybox:1",
        ],
    );
    let status = ok(&a, &["status", &name, "--json"]);
    assert!(
        status
            .stdout
            .contains("example.com/named/busybox:1@sha256:"),
        "pinned by digest: {}",
        status.stdout
    );
    ok(&a, &["start", &name]);
    let out = ok(
        &a,
        &[
            "exec",
            &name,
            "--",
            "sh",
            "-c",
            "cat /etc/os-release; echo hi > /tmp/x; cat /tmp/x",
        ],
    );
    assert!(
        out.stdout.contains("ID=named-image") && out.stdout.contains("hi"),
        "{}",
        out.describe()
    );
    ok(&a, &["stop", &name]);
    ok(&a, &["start", &name]);
    let out = ok(&a, &["exec", &name, "--", "cat", "/etc/os-release"]);
    assert!(out.stdout.contains("ID=named-image"), "{}", out.describe());
    // The image cannot be removed from under the sandbox.
    let refused = a.run(&["image", "rm", "example.com/named/busybox:1"]);
    assert_eq!(refused.code(), 120, "{}", refused.describe());
    assert!(refused.stderr.contains(&name), "{}", refused.stderr);
    ok(&a, &["rm", "--force", &name]);
    ok(&a, &["image", "rm", "example.com/named/busybox:1"]);
    common::stop_engines_of(&a);
}

/// Agent mode and `cp` in a busybox image (no glibc, no tar, no git): the static in-sandbox
/// helper carries the runner, `report` and the file tools.
#[test]
fn an_agent_turn_and_cp_work_in_a_busybox_image() {
    if !e2e("an_agent_turn_and_cp_work_in_a_busybox_image") {
        return;
    }
    let src = TempDir::new("layout");
    image(
        &src.join("oci"),
        "example.com/agent/busybox:1",
        "agent-image",
    );
    let a = Airlock::root();
    ok(&a, &["image", "import", &src.join("oci").to_string_lossy()]);
    agent_turn_and_cp(
        &a,
        "example.com/agent/busybox:1",
        "image says $(head -n 1 /etc/os-release)",
        "image says ID=agent-image",
    );
}

/// One agent turn (scripted harness: `agent.sh` reports `said`, which must come back as
/// `want`) in a named sandbox on `image`, then `cp` in and out of it.
fn agent_turn_and_cp(a: &Airlock, image: &str, said: &str, want: &str) {
    let dir = &a.cwd;
    std::fs::write(
        dir.join("agent.sh"),
        format!("#!/bin/sh\nreport working \"starting\"\nreport done \"{said}\"\n"),
    )
    .expect("agent");
    common::set_mode(&dir.join("agent.sh"), 0o755);
    std::fs::write(
        dir.join("airlock.toml"),
        format!("[sandbox]\nimage = \"{image}\"\n[agent]\nharness = {{ command = [\"/workspace/agent.sh\"] }}\ngrace = \"3s\"\n"),
    )
    .expect("airlock.toml");
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &[
            "-c",
            "user.email=t@example.com",
            "-c",
            "user.name=t",
            "commit",
            "-qm",
            "init",
        ],
    ] {
        let st = Command::new("git")
            .args(args)
            .current_dir(dir)
            .status()
            .expect("git");
        assert!(st.success(), "git {args:?}");
    }
    let name = format!("agent-{}", &common::random_hex()[..8]);
    let out = a.run(&["up", &name, "--prompt", "go"]);
    let reports = a.run(&["reports", &name]);
    assert_eq!(
        out.code(),
        0,
        "up: {}\nreports:\n{}",
        out.describe(),
        reports.stdout
    );
    assert!(reports.stdout.contains(want), "{}", reports.stdout);
    // cp in and out.
    let host_in = a.dir.join("in.txt");
    std::fs::write(&host_in, "from the host\n").expect("write");
    ok(
        a,
        &[
            "cp",
            &host_in.to_string_lossy(),
            &format!("{name}:/tmp/in.txt"),
        ],
    );
    let host_out = a.dir.join("out.txt");
    ok(
        a,
        &[
            "cp",
            &format!("{name}:/tmp/in.txt"),
            &host_out.to_string_lossy(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(&host_out).expect("read"),
        "from the host\n"
    );
    ok(
        a,
        &[
            "cp",
            &format!("{name}:/etc/os-release"),
            &a.dir.join("os").to_string_lossy(),
        ],
    );
    assert!(std::fs::read_to_string(a.dir.join("os"))
        .expect("read")
        .starts_with("ID="));
    ok(a, &["rm", "--force", &name]);
    common::stop_engines_of(a);
}

/// An Alpine-like image: its programs are musl-dynamic (a C program built with `musl-gcc`,
/// musl's loader at /lib/ld-musl-x86_64.so.1), no glibc anywhere; busybox-static is its shell.
/// The musl program runs inside, and an agent turn and `cp` work through the static helper.
#[test]
fn a_musl_image_runs_its_programs_an_agent_turn_and_cp() {
    if !e2e("a_musl_image_runs_its_programs_an_agent_turn_and_cp") {
        return;
    }
    let build = TempDir::new("musl");
    std::fs::write(
        build.join("hello.c"),
        "#include <stdio.h>\nint main(void) { printf(\"hello from musl\\n\"); return 0; }\n",
    )
    .expect("write");
    let st = Command::new("musl-gcc")
        .arg("-o")
        .arg(build.join("hello"))
        .arg(build.join("hello.c"))
        .status()
        .expect("musl-gcc (run .ci/install-images)");
    assert!(st.success(), "musl-gcc");
    let hello = std::fs::read(build.join("hello")).expect("read");
    assert!(
        hello
            .windows(b"/lib/ld-musl-x86_64.so.1".len())
            .any(|w| w == b"/lib/ld-musl-x86_64.so.1"),
        "a musl-dynamic program"
    );
    let loader = std::fs::read("/lib/ld-musl-x86_64.so.1").expect("musl (run .ci/install-images)");
    let files: Vec<(&str, &[u8], u32)> = vec![
        ("bin/hello", &hello, 0o755),
        ("lib/ld-musl-x86_64.so.1", &loader, 0o755),
        ("etc/os-release", b"ID=alpine-like\n", 0o644),
    ];
    let layers = vec![
        base_layer("musl-image"),
        LayerTar {
            tar: tar_of_files(&files).expect("tar"),
            gzip: true,
        },
    ];
    let src = TempDir::new("layout");
    write_oci(
        &src.join("oci"),
        "example.com/agent/musl:1",
        &layers,
        &config_json(&layers, &["PATH=/bin"], None, None),
    )
    .expect("layout");
    let a = Airlock::root();
    ok(&a, &["image", "import", &src.join("oci").to_string_lossy()]);
    // No glibc loader in the image: only musl's.
    let out = ok(
        &a,
        &[
            "run",
            "--image",
            "example.com/agent/musl:1",
            "--",
            "sh",
            "-c",
            "hello; ls /lib; test -e /lib64/ld-linux-x86-64.so.2 || echo no-glibc",
        ],
    );
    assert!(
        out.stdout.contains("hello from musl") && out.stdout.contains("no-glibc"),
        "{}",
        out.describe()
    );
    agent_turn_and_cp(
        &a,
        "example.com/agent/musl:1",
        "musl says $(/bin/hello)",
        "musl says hello from musl",
    );
}

/// zstd layers (`tar+zstd`, compressed by skopeo, a real producer) are pulled, verified and
/// unpacked like gzip ones.
#[test]
fn zstd_layers_are_pulled_and_run() {
    if !e2e("zstd_layers_are_pulled_and_run") {
        return;
    }
    let reg = Registry::start();
    let src = TempDir::new("layout");
    let mut layers = vec![base_layer("zstd-image"), whiteout_layer()];
    for l in &mut layers {
        l.gzip = false; // skopeo compresses what is not compressed, with the format asked
    }
    let cfg = config_json(&layers, &["PATH=/bin"], None, None);
    write_oci(&src.join("oci"), "busybox:zstd", &layers, &cfg).expect("layout");
    reg.push_with(
        &src.join("oci"),
        "zstd",
        "library/busybox",
        &["--dest-compress-format", "zstd"],
    );
    let reference = format!("{}/library/busybox:zstd", reg.host());
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo inspect");
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).expect("manifest");
    let types: Vec<&str> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter_map(|l| l["mediaType"].as_str())
        .collect();
    assert_eq!(
        types, ["application/vnd.oci.image.layer.v1.tar+zstd"; 2],
        "the registry serves zstd layers: {manifest}"
    );
    let a = Airlock::root();
    write_user_config(
        &a,
        &format!("[images]\ninsecure_registries = [\"{}\"]\n", reg.host()),
    );
    ok(&a, &["image", "pull", &reference]);
    let out = ok(
        &a,
        &[
            "run",
            "--image",
            &reference,
            "--",
            "sh",
            "-c",
            "cat /etc/os-release; ls /d; test -e /gone || echo gone-hidden",
        ],
    );
    for want in ["ID=zstd-image", "new", "gone-hidden"] {
        assert!(out.stdout.contains(want), "{want}: {}", out.describe());
    }
    assert_eq!(layer_dirs(&a), 2);
    // The unpacked layers are the same content as the plain tars (diffIDs checked).
    for l in &layers {
        assert!(a
            .state_dir()
            .join("images/layers")
            .join(l.diff_id().hex())
            .is_dir());
    }
}

/// The image's `User` runs (a name from the image's own /etc/passwd and /etc/group, or a bare
/// `uid:gid`), mapped like `agent`: files it writes in the workspace belong to the project's
/// owner on the host, rootful and rootless; `--user` overrides; its HOME is its passwd entry's.
#[test]
fn an_images_user_runs_with_its_home_rootful_and_rootless() {
    if !e2e("an_images_user_runs_with_its_home_rootful_and_rootless") {
        return;
    }
    let reg = Registry::start();
    let src = TempDir::new("layout");
    let users = LayerTar {
        tar: tar_of_files(&[
            (
                "etc/passwd",
                b"root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345:app:/home/app:/bin/sh\n",
                0o644,
            ),
            ("etc/group", b"root:x:0:\napp:x:2345:\n", 0o644),
        ])
        .expect("tar"),
        gzip: true,
    };
    let layers = vec![base_layer("user-image"), users];
    for (tag, user) in [("named", "app"), ("numeric", "4321:4321"), ("root", "0")] {
        let cfg = config_json(&layers, &["PATH=/bin"], None, Some(user));
        let dir = src.join(tag);
        write_oci(&dir, &format!("users:{tag}"), &layers, &cfg).expect("layout");
        reg.push(&dir, tag, "library/users");
    }
    let bins = Bins::owned_by(&test_user());
    let script = "id -u; id -g; echo home=$HOME; whoami 2>/dev/null || echo noname; \
                  echo hi > /workspace/by-$(id -u); touch $HOME/x && echo home-writable";
    for (mode, a) in [
        ("rootful", Airlock::root()),
        ("rootless", Airlock::rootless(&bins)),
    ] {
        write_user_config(
            &a,
            &format!("[images]\ninsecure_registries = [\"{}\"]\n", reg.host()),
        );
        let project_owner = std::fs::metadata(&a.cwd).expect("cwd").uid();
        for (tag, user_flag, want) in [
            ("named", None, ["1234", "2345", "home=/home/app", "app"]),
            (
                "numeric",
                None,
                ["4321", "4321", "home=/home/4321", "noname"],
            ),
            ("root", None, ["1000", "1000", "home=/home/agent", "agent"]),
            (
                "named",
                Some("agent"),
                ["1000", "1000", "home=/home/agent", "agent"],
            ),
        ] {
            let reference = format!("{}/library/users:{tag}", reg.host());
            let mut args = vec!["run", "--workspace", "bind", "--image", &reference];
            if let Some(u) = user_flag {
                args.extend(["--user", u]);
            }
            args.extend(["--", "sh", "-c", script]);
            let out = ok(&a, &args);
            let lines: Vec<&str> = out.stdout.lines().collect();
            assert_eq!(
                lines,
                [want[0], want[1], want[2], want[3], "home-writable"],
                "{mode} {tag} {user_flag:?}: {}",
                out.describe()
            );
            let written = a.cwd.join(format!("by-{}", want[0]));
            assert_eq!(
                std::fs::metadata(&written).expect("written").uid(),
                project_owner,
                "{mode} {tag}: owned on the host as before"
            );
            std::fs::remove_file(&written).expect("rm");
        }
    }
}
