//! The audit journal of a named sandbox: one time-ordered view of every policy decision and
//! what happened to it. Two size-capped, rotated JSONL files in its folder feed it:
//! `net.jsonl` (every egress decision and secret injection, written by its supervisor) and
//! `audit.jsonl` (lifecycle transitions and review-gate outcomes, written by the engine).
//! [`read`] merges them; each line gets a `category`: `egress`, `lifecycle`, `review`,
//! `policy` (mounts added to or removed from a running sandbox, domains allowed or denied).
//!
//! Events about no one sandbox go to the host's journal, `audit.jsonl` in the state directory
//! (same format, same cap): `trust` (a project's airlock.toml trusted or untrusted: which file,
//! which sha256, who). `airlock audit` without NAME shows it with every sandbox's.
//!
//! [`Follower`] reads the journals incrementally for `--follow`: an offset per file, a rotation
//! noticed by a new inode (or a shorter file), the rest of the rotated file read first.

use airlock_egress::journal::{now_rfc3339, RotatingFile, MAX_FILE_BYTES};
use serde_json::{json, Value};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The engine's part of the journal, in the sandbox's folder.
pub const FILE: &str = "audit.jsonl";
/// The supervisor's egress journal, in the sandbox's folder.
pub const NET_FILE: &str = "net.jsonl";

/// Append one event (a JSON object; `time` and `category` are added). Best effort: the journal
/// never makes an operation fail.
pub fn record(dir: &Path, category: &str, mut event: Value) {
    if !dir.is_dir() {
        return;
    }
    if let Some(o) = event.as_object_mut() {
        o.insert("time".into(), json!(now_rfc3339()));
        o.insert("category".into(), json!(category));
    }
    let Ok(mut line) = serde_json::to_vec(&event) else {
        return;
    };
    line.push(b'\n');
    if let Ok(mut f) = RotatingFile::open(&dir.join(FILE), MAX_FILE_BYTES) {
        let _ = f.write_all(&line);
    }
}

/// The review gate's outcome of a fetch or sync (`accepted`: findings were let through with
/// `--accept`; a refusal lists what needs it).
pub fn review(
    dir: &Path,
    op: &str,
    accept: bool,
    got: Result<&Vec<airlock_work::gate::Finding>, &airlock_work::ops::OpError>,
) {
    let ev = match got {
        Ok(findings) => json!({
            "op": op, "result": "done", "accepted": accept && !findings.is_empty(),
            "findings": findings,
        }),
        Err(airlock_work::ops::OpError::NeedsReview { findings, .. }) => json!({
            "op": op, "result": "refused", "reason": "the review gate flags changes (--accept lets them through)",
            "findings": findings,
        }),
        Err(e) => json!({"op": op, "result": "failed", "reason": e.to_string()}),
    };
    record(dir, "review", ev);
}

/// The host's journal (events about no one sandbox) in airlock's state directory.
pub fn host_file(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// One journal file read incrementally: where reading stopped, in which file (inode).
#[derive(Debug)]
struct Tail {
    path: PathBuf,
    /// Device and inode of the file `off` is in; `None` until the file is there.
    id: Option<(u64, u64)>,
    /// The rotated file was read (the first poll).
    started: bool,
    off: u64,
    /// An incomplete last line (the writer is in the middle of it).
    partial: Vec<u8>,
}

impl Tail {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            id: None,
            started: false,
            off: 0,
            partial: Vec::new(),
        }
    }

    /// Complete lines of `f` from `self.off` on.
    fn read_from(&mut self, f: &mut std::fs::File, out: &mut Vec<Value>) {
        if f.seek(SeekFrom::Start(self.off)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else {
            return;
        };
        self.off += n as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let rest = self.partial.split_off(end + 1);
        let whole = std::mem::replace(&mut self.partial, rest);
        out.extend(
            whole
                .split(|&b| b == b'\n')
                .filter_map(|l| serde_json::from_slice::<Value>(l).ok()),
        );
    }

    /// Lines added since the last poll (the first poll: the rotated file and the current one).
    fn poll(&mut self, out: &mut Vec<Value>) {
        let rotated = RotatingFile::rotated_path(&self.path);
        let id_of = |m: &std::fs::Metadata| (m.dev(), m.ino());
        let Some(prev) = self.id else {
            if !self.started {
                self.started = true;
                if let Ok(mut f) = std::fs::File::open(&rotated) {
                    self.read_from(&mut f, out);
                }
            }
            self.off = 0;
            self.partial.clear();
            let Ok(mut f) = std::fs::File::open(&self.path) else {
                return;
            };
            self.id = f.metadata().ok().map(|m| id_of(&m));
            self.read_from(&mut f, out);
            return;
        };
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        let Ok(meta) = f.metadata() else { return };
        if id_of(&meta) != prev || meta.len() < self.off {
            // Rotated (renamed to PATH.1, a new PATH begun): finish the old file first, if it
            // is the one now at PATH.1 (after two rotations between polls it is gone).
            if let Ok(mut old) = std::fs::File::open(&rotated) {
                if old.metadata().is_ok_and(|m| id_of(&m) == prev) {
                    self.read_from(&mut old, out);
                }
            }
            self.id = Some(id_of(&meta));
            self.off = 0;
            self.partial.clear();
        }
        self.read_from(&mut f, out);
    }
}

/// `airlock audit --follow`: the journals of some sandboxes (and the host's), read
/// incrementally. Each [`poll`](Self::poll) returns the new events, oldest first.
#[derive(Debug, Default)]
pub struct Follower {
    /// (label, category override, file) per journal file.
    tails: Vec<(Option<String>, bool, Tail)>,
}

impl Follower {
    /// Follow the sandbox whose folder is `dir` (events labelled `sandbox: label`, if given).
    pub fn add_sandbox(&mut self, label: Option<&str>, dir: &Path) {
        if self.tails.iter().any(|(_, _, t)| t.path == dir.join(FILE)) {
            return;
        }
        let l = label.map(str::to_string);
        self.tails
            .push((l.clone(), false, Tail::new(dir.join(FILE))));
        self.tails.push((l, true, Tail::new(dir.join(NET_FILE))));
    }

    /// Follow the host's journal in `state_dir`.
    pub fn add_host(&mut self, state_dir: &Path) {
        self.tails
            .push((None, false, Tail::new(host_file(state_dir))));
    }

    pub fn poll(&mut self) -> Vec<Value> {
        let mut all = Vec::new();
        for (label, egress, tail) in &mut self.tails {
            let mut got = Vec::new();
            tail.poll(&mut got);
            for mut e in got {
                if let Some(o) = e.as_object_mut() {
                    if *egress {
                        o.insert("category".into(), json!("egress"));
                    }
                    if let Some(l) = label {
                        o.insert("sandbox".into(), json!(l));
                    }
                }
                all.push(e);
            }
        }
        sort_by_time(&mut all);
        all
    }
}

fn sort_by_time(all: &mut [Value]) {
    // RFC 3339 UTC with milliseconds: text order is time order; stable for equal times.
    all.sort_by(|a, b| {
        let t = |v: &Value| v["time"].as_str().unwrap_or_default().to_string();
        t(a).cmp(&t(b))
    });
}

/// A journal file's lines (the rotated one first), parsed; unparsable lines are skipped.
fn lines(path: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for p in [RotatingFile::rotated_path(path), path.to_path_buf()] {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
    }
    out
}

/// Every event of the sandbox in `dir`, oldest first.
pub fn read(dir: &Path) -> Vec<Value> {
    let mut all = lines(&dir.join(FILE));
    for mut e in lines(&dir.join(NET_FILE)) {
        if let Some(o) = e.as_object_mut() {
            o.insert("category".into(), json!("egress"));
        }
        all.push(e);
    }
    sort_by_time(&mut all);
    all
}

/// One line for people: `TIME  CATEGORY  what happened`.
pub fn human(e: &Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
    let what = match s("category").as_str() {
        "egress" => {
            let target = match (e["host"].as_str(), e["port"].as_u64()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                _ => s("dst"),
            };
            let mut t = format!("{} {} {target}", s("decision"), s("kind"));
            if let Some(inj) = e["injected"].as_array() {
                let list: Vec<String> = inj
                    .iter()
                    .map(|i| {
                        format!(
                            "{} ({})",
                            i["secret"].as_str().unwrap_or_default(),
                            i["at"].as_str().unwrap_or_default()
                        )
                    })
                    .collect();
                t.push_str(&format!(" — injected {}", list.join(", ")));
            } else if e["intercepted"] == true {
                t.push_str(" (intercepted)");
            }
            if let Some(r) = e["reason"].as_str() {
                t.push_str(&format!(": {r}"));
            }
            t
        }
        "lifecycle" => {
            // "starting: stopped -> starting" (the operation, then the states it moved
            // between); lines written before `from` was recorded show the operation only.
            let mut t = match e["from"].as_str() {
                Some(from) => format!("{}: {from} -> {}", s("op"), s("to")),
                None => format!("{}: -> {}", s("op"), s("to")),
            };
            if let Some(r) = e["error"].as_str() {
                t.push_str(&format!(": {r}"));
            }
            t
        }
        "review" => {
            let mut t = format!("{} {}", s("op"), s("result"));
            if e["accepted"] == true {
                t.push_str(" (accepted)");
            }
            if let Some(f) = e["findings"].as_array().filter(|f| !f.is_empty()) {
                let list: Vec<String> = f
                    .iter()
                    .map(|x| {
                        format!(
                            "{} {}",
                            x["kind"].as_str().unwrap_or_default(),
                            x["path"].as_str().unwrap_or_default()
                        )
                    })
                    .collect();
                t.push_str(&format!(": {}", list.join(", ")));
            }
            if let Some(r) = e["reason"].as_str() {
                t.push_str(&format!(": {r}"));
            }
            t
        }
        "policy" if e["domain"].is_string() => {
            // An egress allowlist change (`airlock allow`/`deny`).
            let mut t = format!("{} {}", s("op"), s("domain"));
            if let Some(p) = e["port"].as_u64() {
                t.push_str(&format!(":{p}"));
            }
            t.push_str(&format!(" via {}", s("via")));
            if e["changed"] == false {
                t.push_str(" (no change)");
            }
            if e["live"] == true {
                t.push_str(" (in force at once)");
            }
            if let Some(n) = e["closed"].as_u64().filter(|n| *n > 0) {
                t.push_str(&format!(", {n} open connection(s) closed"));
            }
            t
        }
        "policy" => {
            let mut t = s("op");
            if let Some(src) = e["source"].as_str() {
                t.push_str(&format!(" {src}"));
            }
            if let Some(tgt) = e["target"].as_str() {
                t.push_str(&format!(" at {tgt}"));
            }
            if e["writable"] == true {
                t.push_str(" (writable)");
            }
            t
        }
        "trust" => {
            let mut t = format!("{} {}", s("op"), s("file"));
            if let Some(h) = e["sha256"].as_str().filter(|h| !h.is_empty()) {
                t.push_str(&format!(" (sha256 {})", &h[..h.len().min(16)]));
            }
            t.push_str(&format!(" by {} (uid {})", s("user"), e["uid"]));
            if let Some(v) = e["via"].as_str() {
                t.push_str(&format!(" via {v}"));
            }
            t
        }
        _ => e.to_string(),
    };
    // Paths in review findings, hosts and reasons are the sandbox's choice: no escape sequence
    // or forged line reaches the user's terminal.
    let line = format!("{}  {:<9}  {what}", s("time"), s("category"));
    airlock_work::gate::shown(&line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_sandbox_chose_is_shown_without_control_characters() {
        let e = serde_json::json!({
            "time": "2026-12-06T10:00:00Z", "category": "review", "op": "fetch",
            "result": "refused",
            "findings": [{"kind": "hook", "path": "a\u{1b}]0;pwned\u{7}\nforged line"}],
        });
        let line = human(&e);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(
            line.contains("a\\x1b]0;pwned\\x07\\x0aforged line"),
            "{line:?}"
        );
        let e = serde_json::json!({
            "time": "t", "category": "egress", "decision": "deny", "kind": "tls",
            "host": "x\u{1b}[2J", "port": 443,
        });
        assert!(!human(&e).contains('\u{1b}'));
    }

    #[test]
    fn follow_reads_each_line_once_across_rotations() {
        let d = std::env::temp_dir().join(format!("airlock-audit-follow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        // A small cap: the file rotates every few lines.
        let cap = 300;
        let mut w = RotatingFile::open(&d.join(NET_FILE), cap).unwrap();
        let line = |i: usize| {
            format!(
                "{{\"time\":\"2026-01-01T00:00:{:02}.{:03}Z\",\"kind\":\"tcp\",\"host\":\"h{i}.com\",\"decision\":\"allow\"}}\n",
                i / 1000,
                i % 1000
            )
        };
        let mut f = Follower::default();
        f.add_sandbox(Some("box"), &d);
        let mut seen = Vec::new();
        let mut next = 0;
        for round in 0..12 {
            // Whole lines, and one written in two halves across a poll.
            for _ in 0..(round % 4) {
                w.write_all(line(next).as_bytes()).unwrap();
                next += 1;
            }
            if round == 5 {
                let l = line(next);
                w.write_all(&l.as_bytes()[..20]).unwrap();
                seen.extend(f.poll());
                w.write_all(&l.as_bytes()[20..]).unwrap();
                next += 1;
            }
            seen.extend(f.poll());
        }
        assert!(RotatingFile::rotated_path(&d.join(NET_FILE)).exists());
        let hosts: Vec<String> = seen
            .iter()
            .map(|e| e["host"].as_str().unwrap().to_string())
            .collect();
        let want: Vec<String> = (0..next).map(|i| format!("h{i}.com")).collect();
        assert_eq!(hosts, want);
        assert!(seen
            .iter()
            .all(|e| e["category"] == "egress" && e["sandbox"] == "box"));
        // A rotation before the first poll: the rotated file is read too.
        let mut g = Follower::default();
        g.add_sandbox(None, &d);
        let all = g.poll();
        assert!(!all.is_empty() && all.len() < next, "{}", all.len());
        assert_eq!(all.last().unwrap()["host"], format!("h{}.com", next - 1));
        assert!(g.poll().is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn merges_both_files_in_time_order_and_rotates() {
        let d = std::env::temp_dir().join(format!("airlock-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(NET_FILE),
            "{\"time\":\"2026-01-01T00:00:01.000Z\",\"kind\":\"tcp\",\"host\":\"a.com\",\"port\":443,\"decision\":\"allow\",\"intercepted\":true,\"injected\":[{\"secret\":\"K\",\"at\":\"header x-api-key\"}]}\n",
        )
        .unwrap();
        std::fs::write(
            d.join(FILE),
            "{\"time\":\"2026-01-01T00:00:00.000Z\",\"category\":\"lifecycle\",\"op\":\"start\",\"to\":\"running\"}\n{\"time\":\"2026-01-01T00:00:02.000Z\",\"category\":\"review\",\"op\":\"fetch\",\"result\":\"refused\",\"findings\":[{\"kind\":\"ci\",\"path\":\".github/x\"}]}\n",
        )
        .unwrap();
        let all = read(&d);
        let cats: Vec<&str> = all
            .iter()
            .map(|e| e["category"].as_str().unwrap())
            .collect();
        assert_eq!(cats, ["lifecycle", "egress", "review"]);
        assert!(human(&all[1]).ends_with("allow tcp a.com:443 — injected K (header x-api-key)"));
        assert!(human(&all[2]).contains("fetch refused: ci .github/x"));
        assert!(
            human(&all[0]).ends_with("start: -> running"),
            "{}",
            human(&all[0])
        );
        record(
            &d,
            "lifecycle",
            json!({"op": "stopping", "from": "stopping", "to": "stopped"}),
        );
        let last = read(&d).last().unwrap().clone();
        assert_eq!(last["op"], "stopping");
        assert!(human(&last).ends_with("stopping: stopping -> stopped"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
