//! zstd-compressed layers (`application/vnd.oci.image.layer.v1.tar+zstd`), decoded in pure
//! Rust (ruzstd: no C build). A stream may hold several frames (parallel compressors write
//! one per chunk) and skippable frames; all of them are read in order, as `zstd -d` does.

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
use std::io::{self, BufRead, Read};

/// The magic number that starts a zstd frame.
pub const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Every frame of a zstd stream, decoded.
pub struct Decoder<R: BufRead> {
    source: R,
    frame: FrameDecoder,
    /// A frame is being decoded (else the next one starts at the next read).
    in_frame: bool,
}

impl<R: BufRead> Decoder<R> {
    pub fn new(source: R) -> Decoder<R> {
        Decoder {
            source,
            frame: FrameDecoder::new(),
            in_frame: false,
        }
    }

    pub fn into_inner(self) -> R {
        self.source
    }

    /// Start the next data frame (skipping skippable frames); false at the end of the stream.
    fn next_frame(&mut self) -> io::Result<bool> {
        loop {
            if self.source.fill_buf()?.is_empty() {
                return Ok(false);
            }
            match self.frame.reset(&mut self.source) {
                Ok(()) => return Ok(true),
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let skipped =
                        io::copy(&mut (&mut self.source).take(length.into()), &mut io::sink())?;
                    if skipped != u64::from(length) {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "zstd: truncated skippable frame",
                        ));
                    }
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if !self.next_frame()? {
                    return Ok(0);
                }
                self.in_frame = true;
            }
            while self.frame.can_collect() == 0 && !self.frame.is_finished() {
                self.frame
                    .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBlocks(1))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            let n = self.frame.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.frame.is_finished() {
                self.in_frame = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// Compress with the `zstd` CLI (a real producer), when it is installed.
    fn zstd_cli(data: &[u8], args: &[&str]) -> Option<Vec<u8>> {
        let mut child = Command::new("zstd")
            .args(args)
            .args(["-q", "-c", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let mut stdin = child.stdin.take()?;
        let data = data.to_vec();
        let writer = std::thread::spawn(move || io::Write::write_all(&mut stdin, &data));
        let out = child.wait_with_output().ok()?;
        writer.join().ok()?.ok()?;
        out.status.success().then_some(out.stdout)
    }

    fn decode(blob: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Decoder::new(io::BufReader::new(blob)).read_to_end(&mut out)?;
        Ok(out)
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| ((i * 7919) % 251) as u8 ^ (i >> 12) as u8)
            .collect()
    }

    #[test]
    fn decodes_what_the_zstd_cli_writes_including_several_frames_and_skippable_ones() {
        let Some(_) = zstd_cli(b"x", &[]) else {
            // The encoder in the crate covers the stream format when the CLI is absent.
            let data = sample(300_000);
            let blob = ruzstd::encoding::compress_to_vec(
                &data[..],
                ruzstd::encoding::CompressionLevel::Fastest,
            );
            assert_eq!(decode(&blob).expect("decode"), data);
            return;
        };
        let a = sample(1 << 20);
        let b = b"second frame\n".repeat(1000);
        let fa = zstd_cli(&a, &["-19"]).expect("zstd");
        let fb = zstd_cli(&b, &["-1"]).expect("zstd");
        assert_eq!(decode(&fa).expect("one frame"), a);
        // Two frames with a skippable frame between them.
        let mut blob = fa.clone();
        blob.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
        blob.extend_from_slice(&fb);
        let mut want = a.clone();
        want.extend_from_slice(&b);
        assert_eq!(decode(&blob).expect("frames"), want);
        // Empty input is an empty stream; garbage and truncation are errors, never short data.
        assert_eq!(decode(b"").expect("empty"), b"");
        assert!(decode(&fa[..fa.len() / 2]).is_err(), "truncated");
        let mut bad = fa.clone();
        bad.extend_from_slice(b"not zstd at all");
        assert!(decode(&bad).is_err(), "trailing garbage");
    }
}
