//! The audit journal of a named sandbox: one time-ordered view of every policy decision and
//! what happened to it. Two size-capped, rotated JSONL files in its folder feed it:
//! `net.jsonl` (every egress decision and secret injection, written by its supervisor) and
//! `audit.jsonl` (lifecycle transitions and review-gate outcomes, written by the engine).
//! [`read`] merges them; each line gets a `category`: `egress`, `lifecycle`, `review`,
//! `policy` (mounts added to or removed from a running sandbox, domains allowed or denied).

use airlock_egress::journal::{now_rfc3339, RotatingFile, MAX_FILE_BYTES};
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;

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
    // RFC 3339 UTC with milliseconds: text order is time order; stable for equal times.
    all.sort_by(|a, b| {
        let t = |v: &Value| v["time"].as_str().unwrap_or_default().to_string();
        t(a).cmp(&t(b))
    });
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
            let mut t = format!("{} -> {}", s("op"), s("to"));
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
        record(&d, "lifecycle", json!({"op": "stop", "to": "stopped"}));
        assert_eq!(read(&d).last().unwrap()["op"], "stop");
        let _ = std::fs::remove_dir_all(&d);
    }
}
