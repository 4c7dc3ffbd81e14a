//! The typed child: an [`Action`] carried out by this binary's `airlock __action`, the action
//! as JSON on its stdin, `{"event": ...}` lines (streamed actions) and then one
//! [`ChildAnswer`] line on its stdout. Nothing here builds a command line from a call: the
//! child's one argument is the constant `__action`, and its stderr is the server's log, never
//! read for errors. The child owns the fds it redirects, the namespaces it enters and the
//! signals it forwards; a failure in it cannot take the server down; and it can always be
//! stopped: SIGTERM to its process group on timeout or cancellation (a run or exec forwards it
//! into the sandbox and ends), SIGKILL a few seconds later.

use airlock_engine::action::{Action, ActionData, ActionError, ChildAnswer};
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a child gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// The longest event line read (a 16 KiB chunk of output, escaped as JSON, fits many times).
const MAX_EVENT: usize = 1 << 20;

/// What to carry out.
pub struct Job {
    pub action: Action,
    pub timeout: Duration,
    /// The longest answer line accepted, in bytes.
    pub limit: usize,
    /// Each `{"event": X}` line's `X`, as it arrives (streamed actions).
    pub events: Option<tokio::sync::mpsc::UnboundedSender<Value>>,
}

/// How a child ended.
// One value per call, moved once: boxing the answer would save bytes nobody copies.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Ended {
    /// It answered.
    Answer(Result<ActionData, ActionError>),
    /// Stopped because the deadline passed.
    TimedOut,
    /// Stopped because the client cancelled the call.
    Cancelled,
}

/// Carry out `job` to its answer, the deadline, or cancellation.
pub async fn act(
    job: Job,
    cancel: impl std::future::Future<Output = ()>,
) -> std::io::Result<Ended> {
    tokio::pin!(cancel);
    let input = serde_json::to_vec(&job.action)?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("__action")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().map(|p| p as i32);
    if let Some(mut w) = child.stdin.take() {
        tokio::spawn(async move {
            let _ = w.write_all(&input).await;
            let _ = w.shutdown().await;
        });
    }
    let reader = tokio::spawn(answer(child.stdout.take(), job.limit, job.events));
    let deadline = tokio::time::sleep(job.timeout);
    tokio::pin!(deadline);
    let stopped = tokio::select! {
        s = child.wait() => { s?; None }
        () = &mut deadline => Some(Ended::TimedOut),
        () = &mut cancel => Some(Ended::Cancelled),
    };
    if stopped.is_some() {
        signal_group(pid, libc::SIGTERM);
        if tokio::time::timeout(KILL_GRACE, child.wait())
            .await
            .is_err()
        {
            signal_group(pid, libc::SIGKILL);
            let _ = child.wait().await;
        }
    }
    // The pipe closes when the child is gone; a grandchild that kept it open gets a bound.
    let answered = match tokio::time::timeout(KILL_GRACE, reader).await {
        Ok(Ok(a)) => a,
        _ => None,
    };
    if let Some(stopped) = stopped {
        return Ok(stopped);
    }
    Ok(Ended::Answer(answered.unwrap_or_else(|| {
        Err(ActionError::new(
            "internal",
            "the action's process ended without an answer",
        ))
    })))
}

fn signal_group(pid: Option<i32>, sig: i32) {
    if let Some(pid) = pid.filter(|p| *p > 0) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::try_from(sig).ok(),
        );
    }
}

/// Reads the child's lines: events go to `events`, the answer line ends it (`None`: there was
/// none). A line longer than its bound ends the reading with an error as the answer.
async fn answer<R: tokio::io::AsyncRead + Unpin>(
    r: Option<R>,
    limit: usize,
    events: Option<tokio::sync::mpsc::UnboundedSender<Value>>,
) -> Option<Result<ActionData, ActionError>> {
    let mut r = r?;
    let bound = limit.max(MAX_EVENT);
    let mut buf = vec![0u8; 64 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        while let Some(i) = partial.iter().position(|c| *c == b'\n') {
            let line: Vec<u8> = partial.drain(..=i).collect();
            match serde_json::from_slice::<Value>(&line) {
                Ok(Value::Object(mut m)) if m.contains_key("event") => {
                    if let (Some(tx), Some(ev)) = (&events, m.remove("event")) {
                        let _ = tx.send(ev);
                    }
                }
                _ if line.len() > limit + 1 => {
                    return Some(Err(ActionError::new(
                        "too_large",
                        format!("the answer is over {limit} bytes"),
                    )))
                }
                _ => {
                    return Some(match serde_json::from_slice::<ChildAnswer>(&line) {
                        Ok(ChildAnswer::Ok(data)) => Ok(*data),
                        Ok(ChildAnswer::Error(e)) => Err(e),
                        Err(e) => Err(ActionError::new(
                            "internal",
                            format!("an unreadable answer from the action's process: {e}"),
                        )),
                    })
                }
            }
        }
        if partial.len() > bound {
            return Some(Err(ActionError::new(
                "too_large",
                format!("the answer is over {limit} bytes"),
            )));
        }
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => partial.extend_from_slice(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(
        lines: &str,
        limit: usize,
    ) -> (Option<Result<ActionData, ActionError>>, Vec<Value>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let got = answer(Some(lines.as_bytes()), limit, Some(tx)).await;
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        (got, events)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    }

    /// The contract: events in order, then the one answer line; what follows it is not read.
    #[test]
    fn events_then_the_answer() {
        let lines = "{\"event\":{\"stream\":\"stdout\",\"data\":\"a\\n\"}}\n\
                     {\"event\":\"plain\"}\n\
                     {\"ok\":{\"data\":\"removed\",\"value\":\"box\"}}\n\
                     {\"event\":\"after\"}\n";
        let (got, events) = rt().block_on(read(lines, 1024));
        assert_eq!(
            events,
            vec![
                serde_json::json!({"stream": "stdout", "data": "a\n"}),
                serde_json::json!("plain")
            ]
        );
        assert_eq!(
            got.expect("an answer").expect("ok"),
            ActionData::Removed("box".into())
        );
    }

    /// An error answer arrives whole: kind, code, message and hint as the child sent them.
    #[test]
    fn an_error_answer_keeps_kind_code_and_hint() {
        let e = ActionError::new("not_found", "no sandbox named ghost")
            .with_hint("airlock list shows the sandboxes");
        let line = format!(
            "{}\n",
            serde_json::to_string(&ChildAnswer::Error(e.clone())).expect("json")
        );
        let (got, events) = rt().block_on(read(&line, 1024));
        assert!(events.is_empty());
        assert_eq!(got.expect("an answer"), Err(e));
    }

    /// No answer (the child died first) is said as such; an answer over the limit is refused,
    /// never parsed in part.
    #[test]
    fn no_answer_and_oversized_answers() {
        let (got, _) = rt().block_on(read("{\"event\":1}\n", 1024));
        assert!(got.is_none());
        let big = format!(
            "{{\"ok\":{{\"data\":\"removed\",\"value\":\"{}\"}}}}\n",
            "x".repeat(4096)
        );
        let (got, _) = rt().block_on(read(&big, 1024));
        assert_eq!(
            got.expect("an answer").map_err(|e| e.kind),
            Err("too_large".into())
        );
        let endless = "y".repeat(3 << 20);
        let (got, _) = rt().block_on(read(&endless, 1024));
        assert_eq!(
            got.expect("an answer").map_err(|e| e.kind),
            Err("too_large".into())
        );
    }
}
