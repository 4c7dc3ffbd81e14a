//! The guest kernel: found (a path the user gives — `--kernel`, AIRLOCK_KERNEL, `[sandbox]
//! kernel`, in that order — else the newest distribution kernel in /boot with its modules in
//! /lib/modules), and turned into what QEMU
//! boots fast: an uncompressed vmlinux, booted through PVH. Decompressing a bzImage inside the
//! guest costs seconds under emulation; here it costs a fraction of one, once (cached).
//!
//! A bzImage's setup header says where its compressed payload is (`payload_offset` and
//! `payload_length`, boot protocol ≥ 2.08) and the payload's magic says how it is compressed:
//! LZ4 (Debian's choice) is decoded here; gzip, xz and zstd by the shipped tools.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A kernel airlock can boot: the image and its release (for /lib/modules/RELEASE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub image: PathBuf,
    pub release: String,
    /// Who chose it: `--kernel`, `AIRLOCK_KERNEL`, a configuration file, or `/boot`.
    pub from: String,
}

/// Where the guest kernel comes from, for errors and `doctor`.
pub const KERNEL_HINT: &str = "install a distribution kernel package (Debian: apt-get install linux-image-cloud-amd64; Ubuntu: linux-image-kvm), or name a bzImage or vmlinux whose modules are in /lib/modules with --kernel, [sandbox] kernel or AIRLOCK_KERNEL, or build airlock's minimal guest kernel (scripts/guest-kernel.sh in airlock's source) and name it";

/// How to get airlock's minimal guest kernel (its drivers built in, no modules to load).
pub const GUEST_KERNEL_HOW: &str = "scripts/guest-kernel.sh in airlock's source builds one from Debian's linux-source-6.1 (minutes, once) into the cache";

/// Where `scripts/guest-kernel.sh` leaves the minimal guest kernel it built (a symbolic link
/// to the newest build) when given no other place: `guest-kernel/vmlinux` in the microVM
/// artifact cache. Never booted unless named (`--kernel`, `[sandbox] kernel`,
/// AIRLOCK_KERNEL); `doctor` points at it.
pub fn built_guest_kernel() -> Option<PathBuf> {
    let p = super::cache::cache_dir().join("guest-kernel/vmlinux");
    p.exists().then(|| p.canonicalize().unwrap_or(p))
}

/// Who chose a kernel given as `--kernel` (a [`airlock_model::spec::GuestKernel`]'s `from`).
pub const FROM_FLAG: &str = "--kernel";

/// The kernel image someone named (and who), in `find`'s order; None: /boot's newest.
pub fn given(chosen: Option<&airlock_model::spec::GuestKernel>) -> Option<(PathBuf, String)> {
    let env = std::env::var_os("AIRLOCK_KERNEL")
        .filter(|v| !v.is_empty())
        .map(|p| (PathBuf::from(p), "AIRLOCK_KERNEL".to_string()));
    match chosen {
        Some(c) if c.from == FROM_FLAG => Some((c.path.clone(), c.from.clone())),
        Some(c) => env.or_else(|| Some((c.path.clone(), c.from.clone()))),
        None => env,
    }
}

/// The kernel to boot: `chosen` when it came from `--kernel`, else AIRLOCK_KERNEL, else
/// `chosen` (the configuration's), else the newest /boot/vmlinuz-RELEASE with modules.
pub fn find(chosen: Option<&airlock_model::spec::GuestKernel>) -> Result<Kernel, String> {
    if let Some((image, from)) = given(chosen) {
        // The release of a real kernel image (over 1 MiB), once per image (its stat): finding
        // the banner reads and scans the whole image, tens of MB for a vmlinux, at every run
        // otherwise.
        let big = std::fs::metadata(&image).is_ok_and(|m| m.len() > 1 << 20);
        let remembered = super::cache::cache_dir().join(format!(
            "release-{}",
            super::cache::key(&[super::cache::stat_key(&image).as_bytes()])
        ));
        if let Some(release) = std::fs::read_to_string(&remembered)
            .ok()
            .filter(|r| big && !r.is_empty())
        {
            return Ok(Kernel {
                image,
                release,
                from,
            });
        }
        let data =
            std::fs::read(&image).map_err(|e| format!("{} (from {from}): {e}", image.display()))?;
        let release = release_of(&data)
            .or_else(|| vmlinux_release(&data))
            .ok_or_else(|| {
                format!(
                    "{} (from {from}): not a bzImage or vmlinux with a version string",
                    image.display()
                )
            })?;
        if big && super::cache::ensure_dir(&super::cache::cache_dir()).is_ok() {
            let _ = std::fs::write(&remembered, &release);
        }
        return Ok(Kernel {
            image,
            release,
            from,
        });
    }
    let mut found: Vec<Kernel> = std::fs::read_dir("/boot")
        .map_err(|e| format!("/boot: {e}"))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            Path::new("/lib/modules")
                .join(&release)
                .join("modules.dep")
                .exists()
                .then(|| Kernel {
                    image: e.path(),
                    release,
                    from: "/boot".into(),
                })
        })
        .collect();
    found.sort_by_key(|k| version_key(&k.release));
    found
        .pop()
        .ok_or_else(|| "no kernel in /boot with its modules in /lib/modules".to_string())
}

fn version_key(r: &str) -> Vec<u64> {
    r.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

/// The release a bzImage names in its header's `kernel_version` string.
pub fn release_of(bz: &[u8]) -> Option<String> {
    if bz.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let at = usize::from(u16_at(bz, 0x20e)?) + 0x200;
    let s = bz.get(at..(at + 256).min(bz.len()))?;
    let s = &s[..s.iter().position(|&b| b == 0)?];
    Some(String::from_utf8_lossy(s).split(' ').next()?.to_string())
}

/// The release an uncompressed vmlinux (ELF) names in its banner ("Linux version R ...").
pub fn vmlinux_release(elf: &[u8]) -> Option<String> {
    if !elf.starts_with(b"\x7fELF") {
        return None;
    }
    let tag = b"Linux version ";
    let at = elf.windows(tag.len()).position(|w| w == tag)? + tag.len();
    let rest = elf.get(at..(at + 128).min(elf.len()))?;
    let end = rest.iter().position(|&b| b == b' ' || b == 0)?;
    let r = String::from_utf8(rest[..end].to_vec()).ok()?;
    (!r.is_empty() && r.chars().next().is_some_and(|c| c.is_ascii_digit())).then_some(r)
}

/// The kernel's own configuration (`CONFIG_IKCONFIG`: gzipped between the markers
/// `IKCFG_ST` and `IKCFG_ED` in the image), as text; None: the kernel carries none.
pub fn embedded_config(elf: &[u8]) -> Option<Result<String, String>> {
    let start = b"IKCFG_ST\x1f\x8b\x08";
    let at = elf.windows(start.len()).position(|w| w == start)? + 8;
    let len = elf[at..].windows(8).position(|w| w == b"IKCFG_ED")?;
    Some(
        decompress_with(&["gzip", "-dc"], &elf[at..at + len]).and_then(|text| {
            String::from_utf8(text)
                .ok()
                .filter(|t| t.contains("CONFIG_"))
                .ok_or_else(|| "the kernel's embedded configuration does not unpack".into())
        }),
    )
}

/// Whether a kernel configuration builds `symbol` (`CONFIG_…`) in (`=y`).
pub fn builds_in(config: &str, symbol: &str) -> bool {
    config
        .lines()
        .any(|l| l.strip_prefix(symbol).and_then(|r| r.strip_prefix('=')) == Some("y"))
}

/// The uncompressed kernel (an ELF vmlinux) inside a bzImage; a vmlinux is returned as is.
pub fn extract(bz: &[u8]) -> Result<Vec<u8>, String> {
    if bz.starts_with(b"\x7fELF") {
        return Ok(bz.to_vec());
    }
    if bz.get(0x202..0x206) != Some(b"HdrS") || u16_at(bz, 0x206).unwrap_or(0) < 0x208 {
        return Err("not a bzImage (boot protocol 2.08 or later)".into());
    }
    let setup_sects = match bz[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512;
    let off = u32_at(bz, 0x248).ok_or("truncated header")? as usize;
    let len = u32_at(bz, 0x24c).ok_or("truncated header")? as usize;
    let payload = bz
        .get(start + off..start + off + len)
        .ok_or("the payload lies outside the file")?;
    let elf = if payload.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
        lz4_legacy(&payload[4..])?
    } else {
        let tool: &[&str] = if payload.starts_with(&[0x1f, 0x8b]) {
            &["gzip", "-dc"]
        } else if payload.starts_with(b"\xfd7zXZ\x00") {
            &["xz", "-dc"]
        } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            &["zstd", "-dcq"]
        } else {
            return Err("the kernel's payload is compressed in a way airlock does not know (LZ4, gzip, xz and zstd are)".into());
        };
        decompress_with(tool, payload)?
    };
    if !elf.starts_with(b"\x7fELF") {
        return Err("the decompressed payload is not an ELF vmlinux".into());
    }
    Ok(elf)
}

fn decompress_with(tool: &[&str], data: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", tool[0]))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let data = data.to_vec();
    let feeder = std::thread::spawn(move || {
        // The kernel's payload ends with its size (4 bytes): the tools warn about trailing
        // garbage, which is why their status is not checked; the ELF check is.
        let _ = stdin.write_all(&data);
    });
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", tool[0]))?;
    let _ = feeder.join();
    Ok(out.stdout)
}

/// LZ4's legacy frame (what the kernel's build uses): blocks of `u32 length` + LZ4 block,
/// each decompressing to at most 8 MiB, ended by the payload's end (the kernel appends its
/// uncompressed size, which reads as a block longer than what is left).
fn lz4_legacy(mut d: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(d.len() * 4);
    while d.len() >= 4 {
        let n = u32_at(d, 0).unwrap_or(0) as usize;
        if n == 0x184c_2102 {
            d = &d[4..];
            continue;
        }
        if n == 0 || n > d.len() - 4 {
            break;
        }
        lz4_block(&d[4..4 + n], &mut out)?;
        d = &d[4 + n..];
    }
    Ok(out)
}

fn lz4_block(src: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    const BAD: &str = "corrupt LZ4 data in the kernel image";
    let mut i = 0;
    let ext = |i: &mut usize, mut n: usize| -> Result<usize, String> {
        loop {
            let b = *src.get(*i).ok_or(BAD)?;
            *i += 1;
            n += usize::from(b);
            if b != 255 {
                return Ok(n);
            }
        }
    };
    while i < src.len() {
        let token = src[i];
        i += 1;
        let mut lit = usize::from(token >> 4);
        if lit == 15 {
            lit = ext(&mut i, lit)?;
        }
        out.extend_from_slice(src.get(i..i + lit).ok_or(BAD)?);
        i += lit;
        if i >= src.len() {
            break;
        }
        let offset = usize::from(u16_at(src, i).ok_or(BAD)?);
        i += 2;
        let mut len = usize::from(token & 15);
        if len == 15 {
            len = ext(&mut i, len)?;
        }
        len += 4;
        if offset == 0 || offset > out.len() {
            return Err(BAD.into());
        }
        let from = out.len() - offset;
        for k in 0..len {
            let b = out[from + k];
            out.push(b);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lz4_blocks_decode_literals_and_overlapping_matches() {
        // "abc" then a match of 9 at offset 3 ("abcabcabc"), then the final literals "xy".
        let block = [0x35, b'a', b'b', b'c', 3, 0, 0x20, b'x', b'y'];
        let mut out = Vec::new();
        lz4_block(&block, &mut out).expect("decode");
        assert_eq!(out, b"abcabcabcabcxy");
        let mut bad = Vec::new();
        assert!(lz4_block(&[0x0f, 9, 0], &mut bad).is_err());
    }

    #[test]
    fn a_bzimage_header_names_its_release_and_payload() {
        let mut bz = vec![0u8; 0x1000];
        bz[0x1f1] = 1; // one setup sector: the payload area starts at 1024
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        bz[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        bz[0x300..0x312].copy_from_slice(b"6.1.0-9-test (x@y)");
        assert_eq!(release_of(&bz).as_deref(), Some("6.1.0-9-test"));
        // An LZ4 legacy payload holding an ELF header, then the kernel's trailing size.
        let mut payload = vec![0x02, 0x21, 0x4c, 0x18];
        let block = [0x40, 0x7f, b'E', b'L', b'F'];
        payload.extend((block.len() as u32).to_le_bytes());
        payload.extend(block);
        payload.extend(4u32.to_le_bytes());
        bz[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        bz[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        bz[1040..1040 + payload.len()].copy_from_slice(&payload);
        assert_eq!(extract(&bz), Ok(b"\x7fELF".to_vec()));
        assert!(extract(b"MZ not a kernel").is_err());
    }

    #[test]
    fn a_vmlinux_carries_its_configuration_when_built_with_ikconfig() {
        let config = "CONFIG_VIRTIO_BLK=y\nCONFIG_EXT4_FS=m\n# CONFIG_MODULES is not set\n";
        let mut gz = Command::new("gzip")
            .arg("-c")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("gzip");
        gz.stdin
            .take()
            .expect("stdin")
            .write_all(config.as_bytes())
            .expect("write");
        let packed = gz.wait_with_output().expect("gzip").stdout;
        let mut elf = b"\x7fELF....IKCFG_ST".to_vec();
        elf.extend(&packed);
        elf.extend(b"IKCFG_ED and the rest of .rodata");
        let got = embedded_config(&elf).expect("found").expect("unpacked");
        assert_eq!(got, config);
        assert!(builds_in(&got, "CONFIG_VIRTIO_BLK"));
        assert!(
            !builds_in(&got, "CONFIG_EXT4_FS"),
            "a module is not built in"
        );
        assert!(
            !builds_in(&got, "CONFIG_VIRTIO"),
            "a prefix is not the symbol"
        );
        assert!(!builds_in(&got, "CONFIG_MODULES"));
        assert!(embedded_config(b"\x7fELF without a configuration").is_none());
    }

    #[test]
    fn a_vmlinux_names_its_release_in_its_banner() {
        let mut elf = b"\x7fELF....".to_vec();
        elf.extend(b"Linux version 6.12.5-cloud (builder@x) #1 SMP\0");
        assert_eq!(vmlinux_release(&elf).as_deref(), Some("6.12.5-cloud"));
        assert_eq!(vmlinux_release(b"\x7fELF no banner"), None);
        assert_eq!(vmlinux_release(b"Linux version 6.1 but not an ELF"), None);
    }

    /// `--kernel` wins over AIRLOCK_KERNEL, which wins over the configuration's; each one's
    /// failure names the path and who chose it.
    #[test]
    fn the_kernel_comes_from_the_flag_then_the_environment_then_the_configuration() {
        let dir = std::env::temp_dir().join(format!("airlock-kernel-find-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let k = |name: &str, release: &str| {
            let mut elf = b"\x7fELF".to_vec();
            elf.extend(format!("Linux version {release} (x)").as_bytes());
            let p = dir.join(name);
            std::fs::write(&p, elf).unwrap();
            p
        };
        let (flag, env, conf) = (k("f", "6.1.1"), k("e", "6.2.2"), k("c", "6.3.3"));
        let chose = |p: &Path, from: &str| airlock_model::spec::GuestKernel {
            path: p.to_path_buf(),
            from: from.into(),
        };
        // The only test in this binary that sets AIRLOCK_KERNEL.
        std::env::set_var("AIRLOCK_KERNEL", &env);
        let got = find(Some(&chose(&flag, FROM_FLAG))).unwrap();
        assert_eq!(
            (got.release.as_str(), got.from.as_str()),
            ("6.1.1", "--kernel")
        );
        let got = find(Some(&chose(&conf, "project:/p/airlock.toml"))).unwrap();
        assert_eq!(
            (got.release.as_str(), got.from.as_str()),
            ("6.2.2", "AIRLOCK_KERNEL")
        );
        std::env::remove_var("AIRLOCK_KERNEL");
        let got = find(Some(&chose(&conf, "project:/p/airlock.toml"))).unwrap();
        assert_eq!(got.image, conf);
        assert_eq!(got.from, "project:/p/airlock.toml");
        let e = find(Some(&chose(&dir.join("missing"), FROM_FLAG))).unwrap_err();
        assert!(e.contains("missing (from --kernel)"), "{e}");
        std::fs::write(dir.join("junk"), "not a kernel").unwrap();
        let e = find(Some(&chose(&dir.join("junk"), FROM_FLAG))).unwrap_err();
        assert!(e.contains("not a bzImage or vmlinux"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
