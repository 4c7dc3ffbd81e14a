//! Files a user names on the command line or in configuration (config and plugin files, secret
//! files, the network journal): regular files only, and bounded in size where airlock reads
//! them. A FIFO, a device (`--config /dev/zero`), a socket or a directory is refused before it
//! is opened for reading, so nothing blocks or reads forever. The errors are `io::Error`s whose
//! text says what is wrong; callers put the path in front.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::Path;

/// The largest config or plugin file airlock reads.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The largest secret file airlock reads.
pub const MAX_SECRET_BYTES: u64 = 1 << 20;

/// What a non-regular file is, for the error.
fn kind(meta: &Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    }
}

fn regular(meta: &Metadata) -> io::Result<()> {
    match kind(meta) {
        None => Ok(()),
        Some(k) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file ({k})"),
        )),
    }
}

fn too_large(max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than the {} limit", human(max)),
    )
}

fn human(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// Read a regular file of at most `max` bytes (symlinks are followed: the target is checked).
pub fn read(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    // Checked before opening (opening a FIFO for reading blocks until a writer comes), and
    // again on the opened file (what is read is what was checked).
    regular(&std::fs::metadata(path)?)?;
    let f = File::open(path)?;
    let meta = f.metadata()?;
    regular(&meta)?;
    if meta.len() > max {
        return Err(too_large(max));
    }
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(too_large(max));
    }
    Ok(buf)
}

/// [`read`] as UTF-8 text.
pub fn read_to_string(path: &Path, max: u64) -> io::Result<String> {
    String::from_utf8(read(path, max)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// A file to append to (a journal): created if missing, refused when it exists and is not a
/// regular file. Opened without blocking on a FIFO that appears in between.
pub fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::metadata(path) {
        Ok(m) => regular(&m)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    const O_NONBLOCK: i32 = 0o4000; // the same on every Linux architecture airlock builds for
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(O_NONBLOCK)
        .open(path)?;
    regular(&f.metadata()?)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(label: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "airlock-userfile-{label}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn only_regular_files_of_bounded_size() {
        let d = dir("read");
        let f = d.join("c.toml");
        std::fs::write(&f, "x = 1\n").expect("write");
        assert_eq!(read_to_string(&f, 100).expect("read"), "x = 1\n");
        let err = read(&f, 3).expect_err("too large");
        assert_eq!(err.to_string(), "larger than the 3 bytes limit");
        for (p, what) in [
            (Path::new("/dev/zero"), "a character device"),
            (d.as_path(), "a directory"),
        ] {
            let err = read(p, MAX_CONFIG_BYTES).expect_err("refused");
            assert_eq!(err.to_string(), format!("not a regular file ({what})"));
        }
        assert_eq!(
            read(&d.join("missing"), 10).expect_err("missing").kind(),
            io::ErrorKind::NotFound
        );
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn append_targets_are_regular_or_new() {
        let d = dir("append");
        let f = d.join("net.jsonl");
        open_append(&f).expect("created");
        assert!(f.is_file());
        open_append(&f).expect("appended");
        let err = open_append(Path::new("/dev/null")).expect_err("device");
        assert_eq!(err.to_string(), "not a regular file (a character device)");
        assert!(open_append(&d).is_err());
        std::fs::remove_dir_all(&d).expect("cleanup");
    }
}
