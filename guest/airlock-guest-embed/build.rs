//! Builds guest/airlock-guest as a static(-pie) executable with a nested
//! `cargo rustc --release -- -C target-feature=+crt-static` into its own target directory (no
//! wait on the outer build's lock; no `--target`, so proc-macros still build for the host), then
//! hands its bytes to `src/lib.rs` through OUT_DIR.
//!
//! Why nested: `crt-static` must apply to the guest's final link only. As RUSTFLAGS it would
//! apply to every crate of the outer build, proc-macros included (which then fail to load); a
//! `rustc-link-arg=-static-pie` from a build script still produces a dynamic executable.
//!
//! `AIRLOCK_GUEST_BIN=/path/to/airlock-guest` skips the nested build and embeds that file (it
//! must be static): for packagers who build the guest separately.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

include!("src/elf.rs");

fn main() {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env("OUT_DIR"));
    let ws = manifest
        .parent()
        .and_then(Path::parent)
        .expect("guest/airlock-guest-embed lives two levels below the workspace root")
        .to_path_buf();
    for p in [
        "guest/airlock-guest",
        "crates/airlock-agent/src",
        "crates/airlock-agent/Cargo.toml",
        "crates/airlock-model/src",
        "crates/airlock-model/Cargo.toml",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", ws.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=AIRLOCK_GUEST_BIN");

    let bin = match std::env::var_os("AIRLOCK_GUEST_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => build(&ws, &guest_target_dir(&out)),
    };
    let bytes = std::fs::read(&bin).unwrap_or_else(|e| panic!("read {}: {e}", bin.display()));
    match elf_linking(&bytes) {
        Ok(Linking::Static) => {}
        Ok(Linking::Dynamic) => panic!(
            "{} is dynamically linked (it has a PT_INTERP): the guest must run in images without \
             the host's libc",
            bin.display()
        ),
        Err(e) => panic!("{}: {e}", bin.display()),
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(&bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    write_if_changed(&out.join("airlock-guest"), &bytes);
    write_if_changed(&out.join("airlock-guest.sha256"), hex.as_bytes());
}

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("cargo sets {k} for build scripts"))
}

/// `<target>/guest`: next to the outer build's profile directories, shared by all of them (the
/// guest is always built in release), so `cargo build`, `test` and `clippy` build it once. OUT_DIR
/// is `<target>[/<triple>]/<profile>/build/<pkg>-<hash>/out`.
fn guest_target_dir(out: &Path) -> PathBuf {
    let Some(profile_parent) = out.ancestors().nth(4) else {
        return out.join("guest-target");
    };
    let target = if profile_parent.join("CACHEDIR.TAG").exists() {
        profile_parent
    } else {
        match profile_parent.parent() {
            Some(p) if p.join("CACHEDIR.TAG").exists() => p,
            _ => profile_parent,
        }
    };
    target.join("guest")
}

/// Environment a build script receives that must not reach the nested cargo: the outer build's
/// flags (RUSTFLAGS would make crt-static apply to proc-macros), its target and profile, its
/// package's metadata, clippy's wrapper.
fn scrubbed(k: &str) -> bool {
    const KEEP: &[&str] = &["CARGO_HOME", "CARGO_NET_OFFLINE", "CARGO_MAKEFLAGS"];
    const KEEP_PREFIX: &[&str] = &[
        "CARGO_HTTP_",
        "CARGO_NET_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
    ];
    if KEEP.contains(&k) || KEEP_PREFIX.iter().any(|p| k.starts_with(p)) {
        return false;
    }
    k.starts_with("CARGO_")
        || k.starts_with("__CARGO")
        || matches!(
            k,
            "RUSTFLAGS"
                | "RUSTDOCFLAGS"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "TARGET"
                | "HOST"
                | "OUT_DIR"
                | "PROFILE"
                | "OPT_LEVEL"
                | "DEBUG"
                | "NUM_JOBS"
                | "RUSTC_LINKER"
                | "CARGO"
        )
}

fn build(ws: &Path, target_dir: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str() {
            if scrubbed(k) {
                cmd.env_remove(k);
            }
        }
    }
    cmd.current_dir(ws)
        .arg("rustc")
        .arg("--manifest-path")
        .arg(ws.join("Cargo.toml"))
        .args([
            "-p",
            "airlock-guest",
            "--bin",
            "airlock-guest",
            "--release",
            "--locked",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    // Cross builds: the helper is built for the target the binary carrying it runs on.
    let target = std::env::var("TARGET").ok();
    let host = std::env::var("HOST").ok();
    let cross = target.as_deref().filter(|t| Some(*t) != host.as_deref());
    if let Some(t) = cross {
        cmd.args(["--target", t]);
    }
    cmd.args([
        "--",
        "-C",
        "target-feature=+crt-static",
        "-C",
        "strip=symbols",
    ]);
    let t = Instant::now();
    let st = cmd
        .status()
        .unwrap_or_else(|e| panic!("run {cargo} to build the static guest: {e}"));
    if !st.success() {
        panic!(
            "building the static guest (guest/airlock-guest) failed ({st}); its output is above"
        );
    }
    eprintln!(
        "airlock-guest: static build took {:.1}s",
        t.elapsed().as_secs_f64()
    );
    // Under <triple>/ when cross-building, or when a cargo config names a `build.target`.
    let plain = target_dir.join("release").join("airlock-guest");
    match cross {
        Some(t) => target_dir.join(t).join("release").join("airlock-guest"),
        None if plain.exists() => plain,
        None => std::fs::read_dir(target_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("release").join("airlock-guest"))
            .filter(|p| p.exists())
            .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .unwrap_or(plain),
    }
}

fn write_if_changed(path: &Path, bytes: &[u8]) {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return;
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
