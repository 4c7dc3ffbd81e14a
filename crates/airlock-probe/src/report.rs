//! What a check found, and the JSON lines the probe prints.
//!
//! A check is made of attempts. The check is `blocked` only when every attempt was blocked; one
//! attempt that got through makes the whole check `blocked: false`.

use crate::sys::SysResult;
use std::fmt::Display;

#[derive(Debug)]
struct Attempt {
    what: String,
    escaped: bool,
    how: String,
}

/// The attempts one check made.
#[derive(Debug, Default)]
pub struct Findings {
    attempts: Vec<Attempt>,
    notes: Vec<String>,
}

impl Findings {
    pub fn new() -> Self {
        Self::default()
    }

    /// The operation was stopped.
    pub fn blocked(&mut self, what: impl Display, how: impl Display) {
        self.attempts.push(Attempt {
            what: what.to_string(),
            escaped: false,
            how: how.to_string(),
        });
    }

    /// The operation succeeded (or got past every permission check).
    pub fn escaped(&mut self, what: impl Display, how: impl Display) {
        self.attempts.push(Attempt {
            what: what.to_string(),
            escaped: true,
            how: how.to_string(),
        });
    }

    /// The common case: success escaped, any error blocked.
    pub fn result<T>(&mut self, what: impl Display, r: &SysResult<T>) {
        match r {
            Ok(_) => self.escaped(what, "succeeded"),
            Err(e) => self.blocked(what, e),
        }
    }

    /// For calls whose permission check comes before argument validation: a denial (EPERM,
    /// EACCES, ENOSYS) is blocked, any other error means the permission check was passed.
    pub fn denial<T>(&mut self, what: impl Display, r: &SysResult<T>) {
        match r {
            Ok(_) => self.escaped(what, "succeeded"),
            Err(e) if e.is_denial() => self.blocked(what, e),
            Err(e) => self.escaped(what, format_args!("{e}: got past the permission check")),
        }
    }

    /// Context that is not an attempt (e.g. what PID 1 is).
    pub fn note(&mut self, note: impl Display) {
        self.notes.push(note.to_string());
    }

    pub fn outcome(self) -> Outcome {
        let blocked = self.attempts.iter().all(|a| !a.escaped);
        let mut parts: Vec<String> = Vec::new();
        // Escapes first: they are what a reader needs to see.
        for a in self.attempts.iter().filter(|a| a.escaped) {
            parts.push(format!("ESCAPED {}: {}", a.what, a.how));
        }
        for a in self.attempts.iter().filter(|a| !a.escaped) {
            parts.push(format!("{}: {}", a.what, a.how));
        }
        parts.extend(self.notes);
        if self.attempts.is_empty() {
            parts.insert(0, "nothing to attempt".to_string());
        }
        Outcome {
            blocked,
            detail: parts.join("; "),
        }
    }
}

/// The verdict of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub blocked: bool,
    pub detail: String,
}

impl Outcome {
    pub fn blocked(detail: impl Display) -> Self {
        Outcome {
            blocked: true,
            detail: detail.to_string(),
        }
    }

    pub fn escaped(detail: impl Display) -> Self {
        Outcome {
            blocked: false,
            detail: detail.to_string(),
        }
    }

    /// Wire form between the per-check child and the parent: "1\tdetail" / "0\tdetail".
    pub fn encode(&self) -> String {
        format!(
            "{}\t{}",
            u8::from(self.blocked),
            self.detail.replace('\n', " ")
        )
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (flag, detail) = s.split_once('\t')?;
        let blocked = match flag {
            "1" => true,
            "0" => false,
            _ => return None,
        };
        Some(Outcome {
            blocked,
            detail: detail.trim_end_matches('\n').to_string(),
        })
    }

    pub fn json_line(&self, check: &str) -> String {
        format!(
            "{{\"check\":{},\"blocked\":{},\"detail\":{}}}",
            json_str(check),
            self.blocked,
            json_str(&self.detail)
        )
    }
}

/// The last line: how many checks ran, which were not blocked, which were skipped and why.
pub fn summary_line(results: &[(&str, Outcome)], skipped: &[(&str, &str)]) -> String {
    let not_blocked: Vec<String> = results
        .iter()
        .filter(|(_, o)| !o.blocked)
        .map(|(c, _)| json_str(c))
        .collect();
    let skipped: Vec<String> = skipped
        .iter()
        .map(|(c, why)| format!("{{\"check\":{},\"reason\":{}}}", json_str(c), json_str(why)))
        .collect();
    format!(
        "{{\"summary\":{{\"checks\":{},\"blocked\":{},\"not_blocked\":[{}],\"skipped\":[{}]}}}}",
        results.len(),
        results.iter().filter(|(_, o)| o.blocked).count(),
        not_blocked.join(","),
        skipped.join(",")
    )
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Errno;

    #[test]
    fn one_escape_makes_the_check_open() {
        let mut f = Findings::new();
        f.blocked("a", "EPERM");
        f.escaped("b", "succeeded");
        let o = f.outcome();
        assert!(!o.blocked);
        assert_eq!(o.detail, "ESCAPED b: succeeded; a: EPERM");
    }

    #[test]
    fn denial_classification() {
        let mut f = Findings::new();
        f.denial::<()>("x", &Err(Errno(libc::EPERM)));
        assert!(f.outcome().blocked);
        let mut f = Findings::new();
        f.denial::<()>("x", &Err(Errno(libc::EINVAL)));
        assert!(!f.outcome().blocked);
    }

    #[test]
    fn wire_round_trip_and_json() {
        let o = Outcome::escaped("said \"hi\"\tthere");
        assert_eq!(Outcome::decode(&o.encode()), Some(o.clone()));
        assert_eq!(
            o.json_line("c"),
            r#"{"check":"c","blocked":false,"detail":"said \"hi\"\tthere"}"#
        );
    }

    #[test]
    fn summary_lists_open_and_skipped() {
        let r = vec![("a", Outcome::blocked("x")), ("b", Outcome::escaped("y"))];
        assert_eq!(
            summary_line(&r, &[("c", "no --canary")]),
            r#"{"summary":{"checks":2,"blocked":1,"not_blocked":["b"],"skipped":[{"check":"c","reason":"no --canary"}]}}"#
        );
    }
}
