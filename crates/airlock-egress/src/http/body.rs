//! Where a request body ends, so the proxy forwards exactly one request and nothing after it.

use super::{BodyLength, HttpError};

/// Longest chunk-size line or trailer line, and all trailers together.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Length(u64),
    Size {
        value: u64,
        digits: u8,
        ext: bool,
        line: usize,
    },
    SizeLf {
        value: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    Trailer {
        line: usize,
    },
    TrailerLf,
    FinalLf,
    Done,
}

/// Streams a request body through, byte-exact, and says where it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyFramer {
    state: State,
    trailers: usize,
}

impl BodyFramer {
    pub fn new(len: BodyLength) -> Self {
        let state = match len {
            BodyLength::None | BodyLength::Length(0) => State::Done,
            BodyLength::Length(n) => State::Length(n),
            BodyLength::Chunked => State::Size {
                value: 0,
                digits: 0,
                ext: false,
                line: 0,
            },
        };
        Self { state, trailers: 0 }
    }

    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Consume bytes from the client; returns how many of them belong to the body (a prefix of
    /// `data`). Once [`done`](Self::done), everything else is not forwarded.
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, HttpError> {
        self.feed_payload(data, |_| {})
    }

    /// As [`feed`](Self::feed), and `payload` is called with each piece of the body's content
    /// in order: all of a `Content-Length` body, the chunks' data of a chunked one (without
    /// sizes, extensions and trailers) — what the server puts together.
    pub fn feed_payload(
        &mut self,
        data: &[u8],
        mut payload: impl FnMut(&[u8]),
    ) -> Result<usize, HttpError> {
        let bad = |why| Err(HttpError::Malformed(why));
        let mut i = 0;
        while i < data.len() {
            if let State::Length(n) | State::Data(n) = self.state {
                let take = (data.len() - i).min(usize::try_from(n).unwrap_or(usize::MAX));
                payload(&data[i..i + take]);
                i += take;
                let left = n - take as u64;
                self.state = match (&self.state, left) {
                    (State::Length(_), 0) => State::Done,
                    (State::Length(_), _) => State::Length(left),
                    (_, 0) => State::DataCr,
                    _ => State::Data(left),
                };
                continue;
            }
            let b = data[i];
            self.state = match self.state {
                State::Done => return Ok(i),
                State::Length(_) | State::Data(_) => return bad("framer state"),
                State::Size {
                    value,
                    digits,
                    ext,
                    line,
                } => {
                    if line >= MAX_LINE {
                        return bad("chunk size line too long");
                    }
                    let line = line + 1;
                    match b {
                        b'\r' if digits > 0 => State::SizeLf { value },
                        _ if ext => {
                            if b == b'\n' || (b < b' ' && b != b'\t') {
                                return bad("control character in a chunk extension");
                            }
                            State::Size {
                                value,
                                digits,
                                ext,
                                line,
                            }
                        }
                        b';' | b' ' | b'\t' if digits > 0 => State::Size {
                            value,
                            digits,
                            ext: true,
                            line,
                        },
                        _ => {
                            let Some(d) = (b as char).to_digit(16) else {
                                return bad("chunk size");
                            };
                            if digits >= 15 {
                                return bad("chunk size too large");
                            }
                            State::Size {
                                value: value * 16 + u64::from(d),
                                digits: digits + 1,
                                ext,
                                line,
                            }
                        }
                    }
                }
                State::SizeLf { value } => match (b, value) {
                    (b'\n', 0) => State::TrailerStart,
                    (b'\n', n) => State::Data(n),
                    _ => return bad("chunk size line end"),
                },
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size {
                    value: 0,
                    digits: 0,
                    ext: false,
                    line: 0,
                },
                State::DataCr | State::DataLf => return bad("chunk data end"),
                State::TrailerStart if b == b'\r' => State::FinalLf,
                State::TrailerStart | State::Trailer { .. } => {
                    let line = match self.state {
                        State::Trailer { line } => line,
                        _ => 0,
                    };
                    self.trailers += 1;
                    if line >= MAX_LINE || self.trailers > MAX_TRAILERS {
                        return bad("trailers too long");
                    }
                    match b {
                        b'\r' => State::TrailerLf,
                        b'\n' | 0 => return bad("trailer line"),
                        _ => State::Trailer { line: line + 1 },
                    }
                }
                State::TrailerLf if b == b'\n' => State::TrailerStart,
                State::FinalLf if b == b'\n' => State::Done,
                State::TrailerLf | State::FinalLf => return bad("trailer line end"),
            };
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(len: BodyLength, input: &[u8], step: usize) -> Result<(usize, bool), HttpError> {
        let mut f = BodyFramer::new(len);
        let mut total = 0;
        for part in input.chunks(step.max(1)) {
            let n = f.feed(part)?;
            total += n;
            if n < part.len() {
                break;
            }
        }
        Ok((total, f.done()))
    }

    #[test]
    fn content_length() {
        for step in [1, 2, 5, 100] {
            assert_eq!(
                run(BodyLength::Length(5), b"helloGET /evil", step).unwrap(),
                (5, true)
            );
            assert_eq!(
                run(BodyLength::Length(10), b"hello", step).unwrap(),
                (5, false)
            );
        }
        assert_eq!(
            run(BodyLength::None, b"GET / HTTP/1.1", 1).unwrap(),
            (0, true)
        );
    }

    #[test]
    fn chunked() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n";
        let mut input = body.to_vec();
        input.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: evil.com\r\n\r\n");
        for step in 1..=body.len() {
            assert_eq!(
                run(BodyLength::Chunked, &input, step).unwrap(),
                (body.len(), true),
                "step {step}"
            );
        }
        assert_eq!(
            run(BodyLength::Chunked, b"0\r\n\r\nrest", 1).unwrap(),
            (5, true)
        );
        assert_eq!(
            run(BodyLength::Chunked, b"A \r\n0123456789\r\n0\r\n\r\n", 3).unwrap(),
            (21, true)
        );
    }

    #[test]
    fn chunked_errors() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello",
            b"5\r\nhelloX",
            b"0\r\nX\n",
            b"-1\r\n",
            b"1234567890abcdef0\r\n",
            b"5;\x01\r\n",
        ] {
            assert!(
                run(BodyLength::Chunked, bad, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b'a'; 5000];
        let mut t = b"0\r\n".to_vec();
        t.extend_from_slice(&long);
        assert!(run(BodyLength::Chunked, &t, 7).is_err());
    }
}
