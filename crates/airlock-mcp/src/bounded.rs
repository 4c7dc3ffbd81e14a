//! Bounded capture of a byte stream: the first and the last bytes are kept, the middle is
//! counted and dropped, so a flood of output costs fixed memory and the model still sees how the
//! output began and how it ended.

use std::collections::VecDeque;

/// Keeps at most `head_cap` leading and `tail_cap` trailing bytes of everything pushed.
#[derive(Debug, Clone)]
pub struct Bounded {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    head_cap: usize,
    tail_cap: usize,
    total: u64,
}

/// What a rendered capture lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Cut {
    /// Bytes the stream carried in all.
    pub total_bytes: u64,
    /// Bytes dropped from the middle.
    pub cut_bytes: u64,
    pub kept_head_bytes: usize,
    pub kept_tail_bytes: usize,
}

impl Bounded {
    /// `limit` bytes in all, split evenly between head and tail.
    pub fn new(limit: usize) -> Self {
        let head_cap = limit / 2;
        Bounded {
            head: Vec::new(),
            tail: VecDeque::new(),
            head_cap,
            tail_cap: limit - head_cap,
            total: 0,
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.head.len() < self.head_cap {
            let n = data.len().min(self.head_cap - self.head.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if data.len() >= self.tail_cap {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.tail_cap..]);
            return;
        }
        let overflow = (self.tail.len() + data.len()).saturating_sub(self.tail_cap);
        self.tail.drain(..overflow);
        self.tail.extend(data);
    }

    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The bytes dropped from the middle so far.
    pub fn cut(&self) -> Option<Cut> {
        let kept = (self.head.len() + self.tail.len()) as u64;
        (self.total > kept).then(|| Cut {
            total_bytes: self.total,
            cut_bytes: self.total - kept,
            kept_head_bytes: self.head.len(),
            kept_tail_bytes: self.tail.len(),
        })
    }

    /// The kept text (invalid UTF-8 replaced), with a marker line where the middle was cut.
    pub fn render(&self) -> String {
        let head = String::from_utf8_lossy(&self.head);
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        let tail = String::from_utf8_lossy(&tail);
        match self.cut() {
            None => format!("{head}{tail}"),
            Some(c) => format!(
                "{head}\n[airlock: {} bytes cut from the middle of {} bytes; kept the first {} \
                 and the last {}]\n{tail}",
                c.cut_bytes, c.total_bytes, c.kept_head_bytes, c.kept_tail_bytes
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut b = Bounded::new(10);
        b.push(b"abc");
        b.push(b"def");
        assert_eq!(b.cut(), None);
        assert_eq!(b.render(), "abcdef");
    }

    #[test]
    fn exactly_the_limit_is_not_cut() {
        let mut b = Bounded::new(10);
        b.push(b"0123456789");
        assert_eq!(b.cut(), None);
        assert_eq!(b.render(), "0123456789");
    }

    #[test]
    fn head_and_tail_survive_a_flood() {
        let mut b = Bounded::new(8);
        b.push(b"HEAD");
        for _ in 0..1000 {
            b.push(b"middle-middle-");
        }
        b.push(b"TAIL");
        let c = b.cut().expect("cut");
        assert_eq!(c.total_bytes, 4 + 14_000 + 4);
        assert_eq!(c.cut_bytes, c.total_bytes - 8);
        let r = b.render();
        assert!(r.starts_with("HEAD\n[airlock: 14000 bytes cut"), "{r}");
        assert!(r.ends_with("]\ne-TAIL") || r.ends_with("]\nTAIL"), "{r}");
        assert!(r.ends_with("TAIL"));
    }

    #[test]
    fn tail_keeps_the_last_bytes_across_pushes() {
        let mut b = Bounded::new(6);
        for chunk in [&b"abc"[..], b"defg", b"h", b"ijklmnop", b"q"] {
            b.push(chunk);
        }
        // head: "abc"; tail: the last 3 bytes.
        assert_eq!(b.render().lines().last(), Some("opq"));
        assert!(b.render().starts_with("abc\n"));
        assert_eq!(b.total(), 17);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let mut b = Bounded::new(100);
        b.push(&[0xff, b'a']);
        assert_eq!(b.render(), "\u{fffd}a");
    }
}
