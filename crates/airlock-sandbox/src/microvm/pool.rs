//! A microVM as a warm pool member (docs/design/warm-pool.md): a held guest, exactly as a
//! named microVM sandbox's (its supervisor serves sessions on the folder's control socket,
//! [`super::control`]), that nobody has used yet. A claim binds late over the channel: its
//! secrets with one root session ([`install_secrets`]), its command, environment and working
//! directory as the next session; then the guest powers off (a member serves one claim).

use super::{artifacts, control, kernel, JOB_FILE};
use airlock_model::vm::{GuestExec, GuestJob};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a member's guest boots from, beyond its spec (which names the kernel only when someone
/// chose one): the kernel image, the initramfs layout and guest helper, the host root image's
/// sources. Part of the pool key; stats only, so a claim can afford it.
pub fn identity(chosen: Option<&airlock_model::spec::GuestKernel>) -> String {
    let image = match kernel::given(chosen) {
        Some((image, _)) => image,
        None => match kernel::find(None) {
            Ok(k) => k.image,
            // No kernel: no member can boot, and a cold run says why.
            Err(_) => return "no-kernel".into(),
        },
    };
    artifacts::boot_identity(&image, airlock_guest_embed::SHA256)
}

/// The guest job a member's supervisor recorded (its user, environment, working directory).
pub fn job(dir: &Path) -> Result<GuestJob, String> {
    std::fs::read(dir.join(JOB_FILE))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("{}: {e}", dir.join(JOB_FILE).display()))
}

/// Run `exec` (no stdin, no output expected) over the member's channel: Ok when it exits 0.
fn quiet(dir: &Path, exec: GuestExec, what: &str) -> Result<(), String> {
    let mut out = Vec::new();
    let (code, err) = control::capture(&dir.join(control::VM_CONTROL), exec, &mut out, 4096)
        .map_err(|e| format!("{what}: {e}"))?;
    if code != 0 {
        return Err(format!(
            "{what}: exit status {code}: {}",
            String::from_utf8_lossy(&err).trim()
        ));
    }
    Ok(())
}

/// The readiness check before a member is handed out: sessions through the supervisor and the
/// channel to the guest and back. The first, as root, makes the claim's secrets directory
/// (/run/secrets on the guest's /run tmpfs, empty, 0700, the sandbox user's); the second runs
/// the shell as the sandbox user, as a claim's secrets do ([`install_secrets`]): under
/// emulation a program's first start in a guest pays for reading and decompressing it from
/// the root image, and that belongs here, not in the claim. The whole round trip.
pub fn round_trip(dir: &Path) -> Result<Duration, String> {
    let job = job(dir)?;
    let t0 = Instant::now();
    let session = |argv: Vec<String>, uid: u32, gid: u32| GuestExec {
        argv,
        env: path_only(&job),
        cwd: "/".into(),
        uid,
        gid,
        stdin: false,
        secrets: false,
        tty: None,
    };
    let (uid, gid) = (job.uid, job.gid);
    // Also the injection CA bundle's directory (root's, 0755, empty until a claim that
    // injects a secret writes the bundle there: [`install_ca_bundle`], built-ins only).
    let tls = ca_bundle_dir();
    let prepare = format!(
        "mkdir -m 0700 {SECRETS_DIR} && chown {uid}:{gid} {SECRETS_DIR} && mkdir -m 0755 {tls}"
    );
    quiet(
        dir,
        session(vec!["/bin/sh".into(), "-c".into(), prepare], 0, 0),
        "the guest's readiness check (secrets directory)",
    )?;
    quiet(
        dir,
        session(vec!["/bin/sh".into(), "-c".into(), ":".into()], uid, gid),
        "the guest's readiness check",
    )?;
    Ok(t0.elapsed())
}

/// Where a claim's secrets go in the guest (as the cold guest's init puts them).
const SECRETS_DIR: &str = "/run/secrets";

/// The job's PATH only: what a helper session needs of its environment.
fn path_only(job: &GuestJob) -> Vec<(String, String)> {
    job.env
        .iter()
        .filter(|(k, _)| k == "PATH")
        .cloned()
        .collect()
}

/// Whether a secret's name can be a file in /run/secrets and a shell variable name.
fn plain_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f == '_' || f.is_ascii_alphabetic())
        && c.all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
}

/// The script of [`install_secrets`]' session: each named variable of its environment to
/// `dir`/NAME, 0400 as it is written (the umask). Names come as arguments (checked: plain
/// identifiers), values only in the session's environment. Shell built-ins only: no program
/// starts (each would cost tens to hundreds of milliseconds under emulation).
fn secrets_script(dir: &str) -> String {
    format!(
        "set -e; umask 377; \
         for n in \"$@\"; do eval \"printf %s \\\"\\${{$n}}\\\"\" > \"{dir}/$n\"; done"
    )
}

/// A claim's plain secrets into its member's guest before its command: /run/secrets/NAME
/// (0400, the sandbox user's), as a cold run's guest has them. The values travel over the
/// channel only, in the environment of one session of the sandbox user's own shell that
/// writes them into the directory the readiness check made on the guest's /run tmpfs (never a
/// host file, an argument, QEMU's or the kernel's command line).
pub fn install_secrets(dir: &Path, secrets: &[(String, String)]) -> Result<(), String> {
    if secrets.is_empty() {
        return Ok(());
    }
    if let Some((bad, _)) = secrets.iter().find(|(n, _)| !plain_name(n)) {
        return Err(format!(
            "a warm microVM takes secrets named like variables only, not {bad:?}"
        ));
    }
    let job = job(dir)?;
    let mut env = path_only(&job);
    env.extend(secrets.iter().cloned());
    let mut argv = vec![
        "/bin/sh".to_string(),
        "-c".into(),
        secrets_script(SECRETS_DIR),
        "sh".into(),
    ];
    argv.extend(secrets.iter().map(|(n, _)| n.clone()));
    let exec = GuestExec {
        argv,
        env,
        cwd: "/".into(),
        uid: job.uid,
        gid: job.gid,
        stdin: false,
        secrets: false,
        tty: None,
    };
    quiet(dir, exec, "write the secrets in the guest")
}

/// The directory of the injection CA bundle in a guest (`plan::CA_BUNDLE`'s).
fn ca_bundle_dir() -> String {
    Path::new(airlock_model::plan::CA_BUNDLE)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/run".into())
}

/// The most bytes of one environment string of a session (the kernel's limit is 128 KiB).
const ENV_CHUNK: usize = 96 << 10;

/// The script of [`install_ca_bundle`]'s session: the variables named as arguments, in order,
/// into `path`, 0444 as it is written (the umask), with shell built-ins only.
fn bundle_script(path: &str) -> String {
    format!(
        "set -e; umask 222; \
         {{ for n in \"$@\"; do eval \"printf %s \\\"\\${{$n}}\\\"\"; done; }} > \"{path}\""
    )
}

/// A claim that injects secrets: the combined CA bundle (the system's roots, then the CA the
/// member's supervisor made for this claim, `ca_pem`) at `plan::CA_BUNDLE` in the guest (0444,
/// root's), where a cold guest has it from its run message. One root session of the shell
/// writes it from its environment (in chunks: one variable holds at most 128 KiB), into the
/// directory the readiness check made.
pub fn install_ca_bundle(dir: &Path, ca_pem: &str) -> Result<(), String> {
    let job = job(dir)?;
    let bundle = String::from_utf8_lossy(&crate::container::ca_bundle(ca_pem)).into_owned();
    let mut env = path_only(&job);
    let mut argv = vec![
        "/bin/sh".to_string(),
        "-c".into(),
        bundle_script(airlock_model::plan::CA_BUNDLE),
        "sh".into(),
    ];
    let mut rest = bundle.as_str();
    let mut i = 0;
    while !rest.is_empty() {
        let mut at = rest.len().min(ENV_CHUNK);
        while !rest.is_char_boundary(at) {
            at -= 1;
        }
        let (chunk, more) = rest.split_at(at);
        env.push((format!("AIRLOCK_CA{i}"), chunk.to_string()));
        argv.push(format!("AIRLOCK_CA{i}"));
        rest = more;
        i += 1;
    }
    let mut exec = helper_session(&job, &[]);
    exec.argv = argv;
    exec.env = env;
    quiet(dir, exec, "write the injection CA bundle in the guest")
}

/// The guest helper inside every guest (the initramfs' /init, bound there read-only).
fn helper() -> String {
    format!("{}/airlock-guest", airlock_model::agent::adapter::TOOLS_DIR)
}

/// A root session of the member's guest running the helper with `args`.
fn helper_session(job: &GuestJob, args: &[&str]) -> GuestExec {
    let mut argv = vec![helper()];
    argv.extend(args.iter().map(|a| a.to_string()));
    GuestExec {
        argv,
        env: path_only(job),
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        stdin: false,
        secrets: false,
        tty: None,
    }
}

/// A claim's overlay workspace into its member's guest before its command, as the cold guest
/// has it: the project's erofs image (made now, owned by the sandbox user inside, as a cold
/// start makes it) is written into the member's blank slot disk — the file QEMU has open
/// read-only since the boot, written in place — and one root session of the guest helper
/// (`airlock-guest ws attach`) drops the guest's cached blocks of that disk and mounts the
/// image read-only under an overlay at /workspace whose writable layers are on a tmpfs, or
/// on the member's writable-layer disk when it booted with one (`disk`). No writable host share: the guest
/// only reads the image, its writes stay in its memory.
pub fn attach_workspace(dir: &Path, project: &Path) -> Result<(), String> {
    use airlock_model::plan::microvm::WORKSPACE_SLOT_FILE;
    let job = job(dir)?;
    let slot = dir.join(WORKSPACE_SLOT_FILE);
    let room = std::fs::metadata(&slot)
        .map_err(|e| format!("the member's workspace slot {}: {e}", slot.display()))?
        .len();
    let image = dir.join(".workspace.erofs.tmp");
    let owner = [
        format!("--force-uid={}", job.uid),
        format!("--force-gid={}", job.gid),
    ];
    let made = super::workspace_image(project, &image, &owner).and_then(|()| {
        let mut from = std::fs::File::open(&image).map_err(|e| e.to_string())?;
        let len = from.metadata().map_err(|e| e.to_string())?.len();
        if len > room {
            return Err(format!(
                "the workspace image ({len} bytes) is larger than the slot ({room} bytes)"
            ));
        }
        // In place (no truncation, no rename): QEMU reads this very file.
        use std::os::unix::fs::OpenOptionsExt;
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&slot)
            .map_err(|e| format!("{}: {e}", slot.display()))?;
        std::io::copy(&mut from, &mut to)
            .map(drop)
            .map_err(|e| format!("write {}: {e}", slot.display()))
    });
    let _ = std::fs::remove_file(&image);
    made.map_err(|e| format!("workspace image: {e}"))?;
    crate::phase("workspace image written into the slot");
    let (uid, gid) = (job.uid.to_string(), job.gid.to_string());
    // The writable layers: on the member's `disk` when it booted with one (with its root's,
    // /tmp's and home's, as a cold guest has them), else a tmpfs.
    let size = match job.overlay_disk {
        true => Some("disk".to_string()),
        false => job.tmpfs_size.map(|s| s.to_string()),
    };
    let mut args = vec!["ws", "attach", uid.as_str(), gid.as_str()];
    args.extend(size.as_deref());
    quiet(
        dir,
        helper_session(&job, &args),
        "mount the workspace in the guest",
    )
}

/// A claim's read-only mounts (`--ro SOURCE:TARGET`) into its member's guest before its
/// command, as the cold guest has them: each source's snapshot made now (the erofs image a
/// cold start makes, owned by the sandbox user inside: [`super::ro_snapshot`]), all written
/// into the member's blank claim slot — the file QEMU has open read-only since the boot,
/// written in place — a GPT partition each ([`super::gpt`]); then one root session of the
/// guest helper (`airlock-guest ws ro KIND TARGET…`) drops the guest's cached blocks of that
/// disk, has the kernel read its partition table and mounts partition `i + 1` read-only
/// (nosuid, nodev) at the `i`th target — a file's one entry bound there, as the cold guest's
/// init does. No hotplug (`-M microvm` has none), no writable host share.
pub fn attach_ro_mounts(dir: &Path, mounts: &[(PathBuf, PathBuf)]) -> Result<(), String> {
    use airlock_model::plan::microvm::CLAIM_SLOT_FILE;
    if mounts.is_empty() {
        return Ok(());
    }
    let job = job(dir)?;
    let slot = dir.join(CLAIM_SLOT_FILE);
    let room = std::fs::metadata(&slot)
        .map_err(|e| format!("the member's claim slot {}: {e}", slot.display()))?
        .len();
    let owner = [
        format!("--force-uid={}", job.uid),
        format!("--force-gid={}", job.gid),
    ];
    let images: Vec<PathBuf> = (0..mounts.len())
        .map(|i| dir.join(format!(".ro-{i}.erofs.tmp")))
        .collect();
    let made = (|| -> Result<Vec<bool>, String> {
        let mut files = Vec::with_capacity(mounts.len());
        for ((src, _), image) in mounts.iter().zip(&images) {
            let stage = image.with_extension("d");
            let file = super::ro_snapshot(src, image, &owner, &stage)
                .map_err(|e| format!("read-only mount {}: {e}", src.display()))?;
            files.push(file);
        }
        crate::phase("read-only mount images built");
        let lens = images
            .iter()
            .map(|i| {
                std::fs::metadata(i)
                    .map(|m| m.len())
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<u64>, String>>()?;
        let starts = super::gpt::layout(&lens, room).ok_or_else(|| {
            format!(
                "the read-only mounts' images ({} bytes) do not fit the claim slot ({room} bytes)",
                lens.iter().sum::<u64>()
            )
        })?;
        // In place (no truncation, no rename): QEMU reads this very file.
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::OpenOptionsExt;
        let mut to = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&slot)
            .map_err(|e| format!("{}: {e}", slot.display()))?;
        let write = |e: std::io::Error| format!("write {}: {e}", slot.display());
        for (image, &start) in images.iter().zip(&starts) {
            let mut from = std::fs::File::open(image).map_err(|e| e.to_string())?;
            to.seek(SeekFrom::Start(start)).map_err(write)?;
            std::io::copy(&mut from, &mut to).map_err(write)?;
        }
        let parts: Vec<(u64, u64)> = starts.into_iter().zip(lens).collect();
        super::gpt::write(&mut to, room, &parts).map_err(write)?;
        Ok(files)
    })();
    for image in &images {
        let _ = std::fs::remove_file(image);
    }
    let files = made?;
    crate::phase("read-only mount images written into the claim slot");
    let mut args: Vec<String> = vec!["ws".into(), "ro".into()];
    for ((_, target), file) in mounts.iter().zip(files) {
        args.push(if file { "file" } else { "dir" }.into());
        args.push(target.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    quiet(
        dir,
        helper_session(&job, &args),
        "mount the read-only mounts in the guest",
    )
}

/// A claim's `disk` larger than the member's writable-layer disk (`size` bytes, grown from
/// [`airlock_model::plan::microvm::member_disk`]'s): QEMU grows the disk's file and tells the
/// guest (QMP `block_resize` on the member's QMP socket), then one root session of the guest
/// helper (`airlock-guest ws grow BYTES`) waits for the new capacity and grows the ext4
/// filesystem on it online — the one the guest's root layer, /tmp and home are on — so all
/// the claim writes is bounded by its own `disk`, as in a cold guest of that size.
pub fn grow_disk(dir: &Path, size: u64) -> Result<(), String> {
    use airlock_model::plan::microvm::QMP_LINK_FILE;
    let job = job(dir)?;
    if !job.overlay_disk {
        return Err("the member has no writable-layer disk".into());
    }
    qmp_block_resize(&dir.join(QMP_LINK_FILE), "ov", size)
        .map_err(|e| format!("grow the writable-layer disk (QMP): {e}"))?;
    crate::phase("writable-layer disk resized");
    let bytes = size.to_string();
    quiet(
        dir,
        helper_session(&job, &["ws", "grow", &bytes]),
        "grow the writable-layer filesystem in the guest",
    )
}

/// `block_resize` of drive `device` to `size` bytes over QEMU's QMP socket `sock`.
fn qmp_block_resize(sock: &Path, device: &str, size: u64) -> Result<(), String> {
    let mut qmp = super::qmp::Qmp::connect(sock, std::time::Duration::from_secs(10))?;
    qmp.execute(
        "block_resize",
        serde_json::json!({"device": device, "size": size}),
    )
    .map(drop)
}

/// A named sandbox's clone workspace into the member's *writable* slot
/// (`workspace_slot_rw`), in place (QEMU holds the slot's inode): the sandbox's own image
/// `image` when it has one (copied, holes kept), else one made from its clone `source` right
/// in the slot (what a cold first start makes). The caller marks the folder
/// ([`super::WORK_PENDING_FILE`]) before [`attach_workspace_disk`] gives the guest the disk.
pub fn fill_workspace_disk(dir: &Path, image: &Path, source: &Path) -> Result<(), String> {
    use airlock_model::plan::microvm::WORKSPACE_SLOT_FILE;
    let job = job(dir)?;
    if !job.workspace_slot_disk {
        return Err("the member's workspace slot is read-only".into());
    }
    let slot = dir.join(WORKSPACE_SLOT_FILE);
    if image.exists() {
        artifacts::copy_sparse_into(image, &slot)
            .map_err(|e| format!("the sandbox's workspace disk into the slot: {e}"))?;
        crate::phase("workspace disk copied into the slot");
    } else {
        artifacts::ext4_in_place(source, &slot)
            .map_err(|e| format!("workspace disk from the clone: {e}"))?;
        crate::phase("workspace disk made from the clone in the slot");
    }
    Ok(())
}

/// The guest mounts the filled writable slot read-write at /workspace (one root session of
/// `airlock-guest ws attach-disk`), as the cold guest's init mounts a clone's disk.
pub fn attach_workspace_disk(dir: &Path) -> Result<(), String> {
    let job = job(dir)?;
    let (uid, gid) = (job.uid.to_string(), job.gid.to_string());
    quiet(
        dir,
        helper_session(&job, &["ws", "attach-disk", uid.as_str(), gid.as_str()]),
        "mount the workspace disk in the guest",
    )
}

/// The guest takes a named sandbox's hostname (a member booted with its own): the kernel's
/// (`/proc/sys/kernel/hostname`), `/etc/hostname` and `/etc/hosts` as `files` has them (the
/// sandbox's guest job's), written by one root session of the shell with built-ins only.
pub fn set_hostname(dir: &Path, hostname: &str, files: &[(String, String)]) -> Result<(), String> {
    let job = job(dir)?;
    let mut script =
        String::from("set -e; printf %s \"$AIRLOCK_NAME\" > /proc/sys/kernel/hostname");
    let mut env = path_only(&job);
    env.push(("AIRLOCK_NAME".into(), hostname.to_string()));
    for (i, (path, contents)) in files.iter().enumerate() {
        if !path.starts_with("/etc/") || path.contains(['\'', '"', '$', '`', '\\']) {
            return Err(format!("not an /etc file: {path:?}"));
        }
        script.push_str(&format!("; printf %s \"$AIRLOCK_F{i}\" > '{path}'"));
        env.push((format!("AIRLOCK_F{i}"), contents.clone()));
    }
    let mut exec = helper_session(&job, &[]);
    exec.argv = vec!["/bin/sh".into(), "-c".into(), script];
    exec.env = env;
    quiet(dir, exec, "set the guest's hostname")
}

/// Rewrite the member's recorded guest job (what `exec` starts from) with `f`: a named
/// sandbox's environment, working directory, hostname and files after its adoption.
pub fn rebind_job(dir: &Path, f: impl FnOnce(&mut GuestJob)) -> Result<(), String> {
    let mut j = job(dir)?;
    f(&mut j);
    let json = serde_json::to_vec_pretty(&j).map_err(|e| e.to_string())?;
    let tmp = dir.join(".vm-job.json.tmp");
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, dir.join(JOB_FILE)))
        .map_err(|e| format!("record the guest job: {e}"))
}

/// What the command changed in a claimed member's overlay workspace ([`attach_workspace`]),
/// read in the guest after the command (`airlock-guest ws changes`): the summary a cold run
/// prints.
pub fn workspace_changes(dir: &Path) -> Result<crate::container::Changes, String> {
    let job = job(dir)?;
    let mut out = Vec::new();
    let what = "the workspace's changes";
    let (code, err) = control::capture(
        &dir.join(control::VM_CONTROL),
        helper_session(&job, &["ws", "changes"]),
        &mut out,
        64 << 20,
    )
    .map_err(|e| format!("{what}: {e}"))?;
    if code != 0 {
        return Err(format!(
            "{what}: exit status {code}: {}",
            String::from_utf8_lossy(&err).trim()
        ));
    }
    serde_json::from_slice(&out).map_err(|e| format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_plain_identifiers() {
        for ok in ["TOKEN", "_x", "A1_b"] {
            assert!(plain_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "a/b", "..", "A B", "$(x)", "A;B"] {
            assert!(!plain_name(bad), "{bad}");
        }
    }

    /// A member booted from another kernel image is another pool's: the identity follows the
    /// image (a rebuilt or replaced file), not only its path.
    #[test]
    fn the_identity_follows_the_kernel_image() {
        let dir = std::env::temp_dir().join(format!("airlock-vm-ident-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let image = dir.join("vmlinuz");
        std::fs::write(&image, b"one").unwrap();
        let chosen = airlock_model::spec::GuestKernel {
            path: image.clone(),
            from: kernel::FROM_FLAG.into(),
        };
        let a = identity(Some(&chosen));
        assert_eq!(a, identity(Some(&chosen)));
        std::fs::write(&image, b"another").unwrap();
        let b = identity(Some(&chosen));
        assert_ne!(a, b);
        let other = airlock_model::spec::GuestKernel {
            path: dir.join("other"),
            from: kernel::FROM_FLAG.into(),
        };
        assert_ne!(b, identity(Some(&other)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The bundle's script, run by the host's own shell: the chunks in order, exactly, 0444.
    #[test]
    fn the_bundle_script_writes_its_chunks_in_order() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("airlock-vm-bundle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let path = base.join("ca-bundle.pem");
        let chunks = [
            ("AIRLOCK_CA0", "-----BEGIN CERTIFICATE-----\nAAA$x`y`\n"),
            ("AIRLOCK_CA1", "BBB\"q\" \\n\n-----END CERTIFICATE-----\n"),
        ];
        let st = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(bundle_script(&path.display().to_string()))
            .arg("sh")
            .args(chunks.iter().map(|(n, _)| n))
            .env_clear()
            .envs(chunks.iter().copied())
            .status()
            .unwrap();
        assert!(st.success());
        let want: String = chunks.iter().map(|(_, v)| *v).collect();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), want);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o444
        );
        let _ = std::fs::remove_dir_all(&base);
    }

    /// The script, run by the host's own shell against a temporary directory instead of
    /// /run/secrets: exact values (spaces, quotes, newlines, `$`), each file 0400.
    #[test]
    fn the_secrets_script_writes_exact_values() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("airlock-vm-secrets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let script = secrets_script(&base.display().to_string());
        let values = [("A", "plain"), ("B_2", "it's \"q\" $HOME `x`\nline2\n")];
        let st = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .arg("sh")
            .args(values.iter().map(|(n, _)| n))
            .env_clear()
            .envs(values.iter().copied())
            .status()
            .unwrap();
        assert!(st.success());
        for (n, v) in values {
            let p = base.join(n);
            assert_eq!(std::fs::read_to_string(&p).unwrap(), v, "{n}");
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o400
            );
        }
        let _ = std::fs::remove_dir_all(&base);
    }
}
