//! The audit journal: one JSON object per line for every egress decision, allowed or denied,
//! and an optional callback (agent mode turns denials into `blocked` events).

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// What was decided about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A transparent connection (TLS by SNI, or anything that was neither TLS nor HTTP).
    Tcp,
    /// A DNS question.
    Dns,
    /// A plain-HTTP request (transparent or through the explicit proxy).
    Http,
    /// A CONNECT through the explicit proxy.
    Connect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

/// One journal line (read back by a warm-pool claim, which gets its member's events over the
/// policy socket: every optional field defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub kind: Kind,
    /// The name asked for, as the sandbox sent it (escaped, at most 255 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub port: Option<u16>,
    /// Where the program inside tried to connect (transparent connections).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub dst: Option<String>,
    /// The address the host side connected to, or the answers it gave (DNS).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[serde(default)]
    pub ip: Vec<String>,
    /// DNS question type (`A`, `AAAA`, `TXT`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub qtype: Option<String>,
    pub decision: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub reason: Option<String>,
    /// The configuration line that would allow a denied attempt, when one would.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub fix: Option<String>,
    /// The connection's TLS was ended here because a secret is bound to its host.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[serde(default)]
    pub intercepted: bool,
    /// Secrets put into the request (name and place; never a value).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[serde(default)]
    pub injected: Vec<crate::inject::Injected>,
}

impl Event {
    pub fn new(kind: Kind, decision: Verdict) -> Self {
        Self {
            time: now_rfc3339(),
            kind,
            host: None,
            port: None,
            dst: None,
            ip: Vec::new(),
            qtype: None,
            decision,
            reason: None,
            fix: None,
            intercepted: false,
            injected: Vec::new(),
        }
    }
}

type Callback = Box<dyn Fn(&Event) + Send + Sync>;
/// Called with every event while it returns true.
type Tap = Arc<dyn Fn(&Event) -> bool + Send + Sync>;

/// Where events go: a JSONL sink, an optional callback and an optional tap.
pub struct Journal {
    sink: Option<Mutex<Box<dyn Write + Send>>>,
    callback: Option<Callback>,
    /// Set while the sandbox runs: a warm-pool claim's copy of its member's events.
    tap: Mutex<Option<Tap>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("sink", &self.sink.is_some())
            .field("callback", &self.callback.is_some())
            .field("tap", &self.tap.lock().is_ok_and(|t| t.is_some()))
            .finish()
    }
}

/// The largest a journal file grows before it is rotated (see [`RotatingFile`]).
pub const MAX_FILE_BYTES: u64 = 8 << 20;

impl Journal {
    /// Write JSON lines to `w` (a file opened for append, a pipe, a `Vec<u8>` in tests).
    pub fn new(w: impl Write + Send + 'static) -> Self {
        Self {
            sink: Some(Mutex::new(Box::new(w))),
            callback: None,
            tap: Mutex::new(None),
        }
    }

    /// Append to the file at `path`, rotated at [`MAX_FILE_BYTES`] (see [`RotatingFile`]).
    pub fn to_file(path: &Path) -> std::io::Result<Self> {
        Ok(Self::new(RotatingFile::open(path, MAX_FILE_BYTES)?))
    }

    /// Record nothing.
    pub fn discard() -> Self {
        Self {
            sink: None,
            callback: None,
            tap: Mutex::new(None),
        }
    }

    /// Also call `f` for every event (after it is written).
    pub fn with_callback(mut self, f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.callback = Some(Box::new(f));
        self
    }

    /// From now on, also call `f` with every event, until it returns false (one tap at a time:
    /// a new one replaces the last). It runs on the recording thread: a tap that blocks holds
    /// up that connection's decision, as a slow journal file does.
    pub fn tap(&self, f: impl Fn(&Event) -> bool + Send + Sync + 'static) {
        *self.tap.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(f));
    }

    /// Append one event. A failing sink never stops enforcement; the event still reaches the
    /// callback and the tap.
    pub fn record(&self, event: &Event) {
        if let Some(sink) = &self.sink {
            if let Ok(mut line) = serde_json::to_vec(event) {
                line.push(b'\n');
                let mut w = sink.lock().unwrap_or_else(|p| p.into_inner());
                let _ = w.write_all(&line).and_then(|()| w.flush());
            }
        }
        if let Some(cb) = &self.callback {
            cb(event);
        }
        let tap = self.tap.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(tap) = tap {
            if !tap(event) {
                let mut t = self.tap.lock().unwrap_or_else(|p| p.into_inner());
                if t.as_ref().is_some_and(|now| Arc::ptr_eq(now, &tap)) {
                    *t = None;
                }
            }
        }
    }
}

/// How many distinct denials [`denial_sayer`] says before it says no more.
pub const MAX_SAID: usize = 256;

/// A journal callback that says each distinct denial once on stderr, in one write: `airlock:
/// blocked TARGET: REASON; FIX` — a resolver retries, asks A and AAAA, … — and only the first
/// [`MAX_SAID`] of them: a flood of distinct denials (DNS exfiltration attempts) stays in the
/// size-capped journal instead of the terminal and this process's memory. Intercepted
/// connections are told per reason (a leak, fronting, a refused certificate are different
/// stories about the same host).
pub fn denial_sayer() -> impl Fn(&Event) + Send + Sync + 'static {
    let said = Mutex::new(std::collections::HashSet::new());
    move |ev: &Event| {
        if ev.decision != Verdict::Deny {
            return;
        }
        let key = (
            ev.host.clone(),
            ev.dst.clone(),
            ev.intercepted.then(|| ev.reason.clone()).flatten(),
        );
        let line = {
            let mut s = said.lock().unwrap_or_else(|p| p.into_inner());
            if s.len() < MAX_SAID {
                s.insert(key).then(|| denial_line(ev))
            } else if s.len() == MAX_SAID && s.insert((None, None, None)) {
                Some("airlock: more connections blocked; no longer listed here (see the network journal)\n".to_string())
            } else {
                None
            }
        };
        if let Some(line) = line {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

/// `airlock: blocked TARGET: REASON[; FIX]` and a newline.
fn denial_line(ev: &Event) -> String {
    let target = match (&ev.host, ev.port) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.clone(),
        (None, _) => ev.dst.clone().unwrap_or_default(),
    };
    let reason = ev.reason.as_deref().unwrap_or("not allowed");
    match &ev.fix {
        Some(fix) => format!("airlock: blocked {target}: {reason}; {fix}\n"),
        None => format!("airlock: blocked {target}: {reason}\n"),
    }
}

/// The current time as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_millis())
}

fn rfc3339(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A journal file that never grows past `max` bytes: a write that would take it past `max`
/// first renames it to `PATH.1` (replacing the previous one) and starts `PATH` afresh, so the
/// journal holds at most `2 * max` bytes on disk, the newest lines last. Writes are whole lines
/// (the journal writes one line per call), so a rotation never splits one. Another process
/// appending to the same path (two runs sharing `--net-log FILE`) is noticed by inode and
/// followed, not clobbered.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    max: u64,
}

impl RotatingFile {
    pub fn open(path: &Path, max: u64) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            file: Self::open_append(path)?,
            max,
        })
    }

    fn open_append(path: &Path) -> std::io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }

    /// `PATH.1`: the previous file.
    pub fn rotated_path(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".1");
        PathBuf::from(p)
    }

    fn rotate_if_needed(&mut self, incoming: u64) -> std::io::Result<()> {
        let ours = self.file.metadata()?;
        // Someone else rotated it: follow to the current file.
        let current = std::fs::metadata(&self.path).ok();
        if current.as_ref().map(|m| (m.dev(), m.ino())) != Some((ours.dev(), ours.ino())) {
            self.file = Self::open_append(&self.path)?;
        }
        let len = self.file.metadata()?.len();
        if len == 0 || len + incoming <= self.max {
            return Ok(());
        }
        std::fs::rename(&self.path, Self::rotated_path(&self.path))?;
        self.file = Self::open_append(&self.path)?;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.rotate_if_needed(buf.len() as u64)?;
        self.file.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.rotate_if_needed(buf.len() as u64)?;
        self.file.write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A `Write` that appends to a shared buffer: handy for tests and for callers that ship lines
/// elsewhere.
#[derive(Debug, Clone, Default)]
pub struct SharedBuf(pub std::sync::Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    /// The lines written so far.
    pub fn lines(&self) -> Vec<String> {
        let b = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&b)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_767_225_599, 999), "2025-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn the_journal_file_rotates_and_never_exceeds_its_cap() {
        let dir = std::env::temp_dir().join(format!("airlock-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("net.jsonl");
        let cap = 16 << 10;
        let j = Journal::new(RotatingFile::open(&path, cap).unwrap());
        for i in 0..3000 {
            let mut e = Event::new(Kind::Dns, Verdict::Deny);
            e.host = Some(format!("x{i}.exfil.example"));
            e.qtype = Some("TXT".into());
            j.record(&e);
        }
        let old = RotatingFile::rotated_path(&path);
        let (now, before) = (
            std::fs::read_to_string(&path).unwrap(),
            std::fs::read_to_string(&old).unwrap(),
        );
        assert!(now.len() as u64 <= cap && before.len() as u64 <= cap);
        assert!(
            before.len() as u64 > cap / 2,
            "rotated files are nearly full"
        );
        // Whole lines only, in order, the newest last; nothing else is kept.
        let hosts: Vec<String> = before
            .lines()
            .chain(now.lines())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["host"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(
            hosts.last().map(String::as_str),
            Some("x2999.exfil.example")
        );
        let first: usize = hosts[0][1..].split('.').next().unwrap().parse().unwrap();
        assert_eq!(hosts.len(), 3000 - first);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lines_and_callback() {
        let buf = SharedBuf::default();
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        let j = Journal::new(buf.clone()).with_callback(move |e| {
            if e.decision == Verdict::Deny {
                s.fetch_add(1, Ordering::SeqCst);
            }
        });
        let mut e = Event::new(Kind::Http, Verdict::Deny);
        e.host = Some("evil.com".into());
        e.port = Some(80);
        e.reason = Some("evil.com is not in the allowed domains".into());
        j.record(&e);
        j.record(&Event::new(Kind::Dns, Verdict::Allow));
        let lines = buf.lines();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["kind"], "http");
        assert_eq!(v["decision"], "deny");
        assert_eq!(v["host"], "evil.com");
        assert_eq!(v["port"], 80);
        assert!(v.get("dst").is_none());
        let v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(v["decision"], "allow");
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }
}
