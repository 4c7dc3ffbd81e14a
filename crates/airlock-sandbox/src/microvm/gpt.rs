//! A GUID partition table written into a disk image file, for a warm microVM's claim slot
//! (docs/design/warm-pool.md, "microVM read-only mounts"): a claim's read-only mounts'
//! snapshots go into one blank disk the member booted with, a partition each, and the guest
//! kernel finds them when the guest helper asks it to read the table again (no hotplug on
//! `-M microvm`). The table is the `gpt` crate's; the layout (1 MiB aligned, in order) ours.

use std::io::{Read, Seek, Write};

/// Sector size (virtio-blk's logical block size).
const SECTOR: u64 = 512;
/// The backup table and header at the end of the disk: 32 sectors of entries (128 of 128
/// bytes, the usual table) and one of header; no partition may reach them.
const BACKUP_SECTORS: u64 = 33;
/// Where partitions start: 1 MiB aligned, as partitioning tools align them.
pub const ALIGN: u64 = 1 << 20;
/// Partition attribute bit 60: read-only.
const READ_ONLY: u64 = 1 << 60;

/// Where `lens` (bytes) go on a disk of `disk` bytes: each partition's first byte, 1 MiB
/// aligned, in order; None when they do not fit before the backup table.
pub fn layout(lens: &[u64], disk: u64) -> Option<Vec<u64>> {
    let mut at = ALIGN;
    let mut starts = Vec::with_capacity(lens.len());
    for &len in lens {
        starts.push(at);
        at = at.checked_add(len.div_ceil(ALIGN).max(1).checked_mul(ALIGN)?)?;
    }
    let usable_end = disk.checked_sub(BACKUP_SECTORS * SECTOR)?;
    (at <= usable_end).then_some(starts)
}

/// Write a GPT (the `gpt` crate's: protective MBR, primary and backup headers and entries)
/// into `file`, a disk of `disk` bytes, with one read-only Linux data partition per
/// `(start, len)` (bytes; `start` from [`layout`]), numbered from 1 in order.
pub fn write<F>(file: &mut F, disk: u64, parts: &[(u64, u64)]) -> std::io::Result<()>
where
    F: Read + Write + Seek + std::fmt::Debug,
{
    let bad = |e: gpt::GptError| std::io::Error::other(format!("partition table: {e}"));
    let sectors = disk / SECTOR;
    gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX))
        .overwrite_lba0(file)
        .map_err(|e| std::io::Error::other(format!("protective MBR: {e}")))?;
    let mut table = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(&mut *file, None)
        .map_err(bad)?;
    for (i, &(start, len)) in parts.iter().enumerate() {
        table
            .add_partition_at(
                &format!("ro{i}"),
                i as u32 + 1,
                start / SECTOR,
                len.div_ceil(SECTOR).max(1),
                gpt::partition_types::LINUX_FS,
                READ_ONLY,
            )
            .map_err(bad)?;
    }
    table.write().map_err(bad)?;
    file.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_aligned_and_must_fit() {
        let mib = 1 << 20;
        assert_eq!(
            layout(&[1, 3 * mib, 4096], 64 * mib),
            Some(vec![mib, 2 * mib, 5 * mib])
        );
        assert_eq!(layout(&[], 2 * mib), Some(vec![]));
        // The backup table's 33 sectors are not for partitions.
        assert_eq!(layout(&[mib], 2 * mib), None);
        assert!(layout(&[mib], 3 * mib).is_some());
        assert_eq!(layout(&[u64::MAX], 64 * mib), None);
    }

    /// util-linux reads the table back (libblkid's GPT parser, which checks the CRCs and
    /// the backup as the kernel's does): the partitions where they were put, nothing else.
    #[test]
    fn util_linux_reads_the_table_back() {
        let path = std::env::temp_dir().join(format!("airlock-gpt-{}.img", std::process::id()));
        let disk = 64u64 << 20;
        let lens = [4096u64, (3 << 20) + 512, 1];
        let starts = layout(&lens, disk).unwrap();
        let parts: Vec<(u64, u64)> = starts.iter().copied().zip(lens).collect();
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(disk).unwrap();
        write(&mut f, disk, &parts).unwrap();
        drop(f);
        let out = std::process::Command::new("/usr/bin/partx")
            .args(["--show", "--noheadings", "-o", "NR,START,SECTORS"])
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(out.status.success(), "{out:?}");
        let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let want: Vec<String> = parts
            .iter()
            .enumerate()
            .map(|(i, (s, l))| format!("{} {} {}", i + 1, s / SECTOR, l.div_ceil(SECTOR)))
            .collect();
        assert_eq!(got, want);
    }
}
