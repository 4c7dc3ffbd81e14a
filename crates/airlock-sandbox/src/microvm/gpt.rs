//! A GUID partition table written into a disk image file, for a warm microVM's claim slot
//! (docs/design/warm-pool.md, "microVM read-only mounts"): a claim's read-only mounts'
//! snapshots go into one blank disk the member booted with, a partition each, and the guest
//! kernel finds them when the guest helper asks it to read the table again (no hotplug on
//! `-M microvm`). Only what the kernel's `efi` partition parser checks: the protective MBR,
//! the primary header and entries, and their backup at the end of the disk.

use std::io::{Seek, SeekFrom, Write};

/// Sector size (virtio-blk's logical block size).
const SECTOR: u64 = 512;
/// Partition entries: 128 of 128 bytes (32 sectors), the usual table.
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
const TABLE_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;
/// Where partitions start: 1 MiB aligned, as partitioning tools align them.
pub const ALIGN: u64 = 1 << 20;

/// "Linux filesystem data" (0FC63DAF-8483-4772-8E79-3D69D8477DE4), as stored (the first three
/// fields little-endian).
const LINUX_DATA: [u8; 16] = [
    0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4,
];

/// Where `lens` (bytes) go on a disk of `disk` bytes: each partition's first byte, 1 MiB
/// aligned, in order; None when they do not fit before the backup table.
pub fn layout(lens: &[u64], disk: u64) -> Option<Vec<u64>> {
    let mut at = ALIGN;
    let mut starts = Vec::with_capacity(lens.len());
    for &len in lens {
        starts.push(at);
        at = at.checked_add(len.div_ceil(ALIGN).max(1).checked_mul(ALIGN)?)?;
    }
    let usable_end = disk.checked_sub((TABLE_SECTORS + 1) * SECTOR)?;
    (at <= usable_end).then_some(starts)
}

/// CRC-32 (IEEE 802.3, reflected), as the GPT headers carry it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A GUID of ours: `tag` then `n` (unique within one disk; the kernel needs none unique).
fn guid(tag: u8, n: u64) -> [u8; 16] {
    let mut g = *b"airlock-claim-\0\0";
    g[0] ^= tag;
    g[8..16].copy_from_slice(&(n + 1).to_le_bytes());
    g[14] = tag;
    g
}

fn header(my: u64, alternate: u64, entries_at: u64, last_usable: u64, table_crc: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(SECTOR as usize);
    h.extend_from_slice(b"EFI PART");
    h.extend_from_slice(&0x0001_0000u32.to_le_bytes());
    h.extend_from_slice(&92u32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes()); // header CRC, below
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&my.to_le_bytes());
    h.extend_from_slice(&alternate.to_le_bytes());
    h.extend_from_slice(&(2 + TABLE_SECTORS).to_le_bytes());
    h.extend_from_slice(&last_usable.to_le_bytes());
    h.extend_from_slice(&guid(0xd1, 0));
    h.extend_from_slice(&entries_at.to_le_bytes());
    h.extend_from_slice(&(ENTRIES as u32).to_le_bytes());
    h.extend_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    h.extend_from_slice(&table_crc.to_le_bytes());
    let crc = crc32(&h[..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h.resize(SECTOR as usize, 0);
    h
}

/// Write a GPT into `file` (a disk of `disk` bytes) with one read-only Linux data partition
/// per `(start, len)` (bytes; `start` from [`layout`]), numbered from 1 in order.
pub fn write(
    file: &mut (impl Write + Seek),
    disk: u64,
    parts: &[(u64, u64)],
) -> std::io::Result<()> {
    let sectors = disk / SECTOR;
    let last = sectors - 1;
    let last_usable = last - TABLE_SECTORS - 1;
    let mut table = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (i, &(start, len)) in parts.iter().enumerate() {
        let e = &mut table[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&LINUX_DATA);
        e[16..32].copy_from_slice(&guid(0xe7, i as u64));
        let first = start / SECTOR;
        let end = first + len.div_ceil(SECTOR).max(1) - 1;
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&end.to_le_bytes());
        // Attribute bit 60: read-only.
        e[48..56].copy_from_slice(&(1u64 << 60).to_le_bytes());
        for (j, c) in format!("ro{i}").encode_utf16().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&c.to_le_bytes());
        }
    }
    let table_crc = crc32(&table);
    // The protective MBR: one partition of type 0xEE over the whole disk.
    let mut mbr = vec![0u8; SECTOR as usize];
    let p = &mut mbr[446..462];
    p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    p[4] = 0xee;
    p[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    p[8..12].copy_from_slice(&1u32.to_le_bytes());
    p[12..16].copy_from_slice(&(last.min(u32::MAX as u64) as u32).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    let backup_table = last - TABLE_SECTORS;
    let mut put = |sector: u64, bytes: &[u8]| -> std::io::Result<()> {
        file.seek(SeekFrom::Start(sector * SECTOR))?;
        file.write_all(bytes)
    };
    put(0, &mbr)?;
    put(1, &header(1, last, 2, last_usable, table_crc))?;
    put(2, &table)?;
    put(backup_table, &table)?;
    put(last, &header(last, 1, backup_table, last_usable, table_crc))?;
    file.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_ieee() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

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
        let mut f = std::fs::File::create(&path).unwrap();
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
