//! Running the airlock binary itself as a child, the way a user would: every tool that changes
//! or enters a sandbox is the very CLI operation, in its own process. That process owns the
//! fds it redirects, the namespaces it enters and the signals it forwards; a failure in it can
//! not take the server down; and it can always be stopped: SIGTERM on timeout or cancellation
//! (airlock forwards it into the sandbox and cleans up), SIGKILL to the whole process group a
//! few seconds later. Output is captured bounded (head and tail kept).

use super::bounded::Bounded;
use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// How long a child gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// A finished child.
#[derive(Debug)]
pub struct Output {
    /// The exit code; 128+N for a signal; `None` when it had to be killed.
    pub code: Option<i32>,
    pub stdout: Bounded,
    pub stderr: Bounded,
    /// Killed because the deadline passed.
    pub timed_out: bool,
    /// Killed because the client cancelled the call.
    pub cancelled: bool,
}

impl Output {
    /// airlock's own error message (`airlock: error: …` and what follows), if it printed one.
    pub fn airlock_error(&self) -> Option<String> {
        let text = self.stderr.render();
        let at = text.find("airlock: error:")?;
        Some(text[at..].trim_end().to_string())
    }
}

/// What to run.
pub struct Job {
    pub args: Vec<OsString>,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Bytes kept per stream.
    pub limit: usize,
    /// Also send each complete stdout line here as it arrives (progress streaming).
    pub lines: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

/// Run `airlock ARGS…` to completion, the deadline, or cancellation.
pub async fn run(
    job: Job,
    cancel: impl std::future::Future<Output = ()>,
) -> std::io::Result<Output> {
    tokio::pin!(cancel);
    let exe = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(&job.args)
        .stdin(if job.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let pid = child.id().map(|p| p as i32);
    if let (Some(data), Some(mut w)) = (job.stdin, child.stdin.take()) {
        tokio::spawn(async move {
            let _ = w.write_all(&data).await;
            let _ = w.shutdown().await;
        });
    }
    let out = tokio::spawn(drain(child.stdout.take(), job.limit, job.lines));
    let err = tokio::spawn(drain(child.stderr.take(), job.limit, None));
    let deadline = tokio::time::sleep(job.timeout);
    tokio::pin!(deadline);
    let (mut timed_out, mut cancelled) = (false, false);
    let status = tokio::select! {
        s = child.wait() => Some(s?),
        () = &mut deadline => { timed_out = true; None }
        () = &mut cancel => { cancelled = true; None }
    };
    let status = match status {
        Some(s) => Some(s),
        None => {
            signal_group(pid, libc::SIGTERM);
            match tokio::time::timeout(KILL_GRACE, child.wait()).await {
                Ok(s) => Some(s?),
                Err(_) => {
                    signal_group(pid, libc::SIGKILL);
                    let _ = child.wait().await;
                    None
                }
            }
        }
    };
    // The pipes close when the group is gone; a grandchild that kept them open gets a bound.
    let collect = |h: tokio::task::JoinHandle<Bounded>| async move {
        match tokio::time::timeout(KILL_GRACE, h).await {
            Ok(Ok(b)) => b,
            _ => Bounded::new(0),
        }
    };
    let (stdout, stderr) = (collect(out).await, collect(err).await);
    let code = status.map(|s| {
        use std::os::unix::process::ExitStatusExt;
        s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
    });
    Ok(Output {
        code: if timed_out || cancelled { None } else { code },
        stdout,
        stderr,
        timed_out,
        cancelled,
    })
}

fn signal_group(pid: Option<i32>, sig: i32) {
    if let Some(pid) = pid.filter(|p| *p > 0) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::try_from(sig).ok(),
        );
    }
}

async fn drain<R: AsyncRead + Unpin>(
    r: Option<R>,
    limit: usize,
    lines: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> Bounded {
    let mut b = Bounded::new(limit);
    let Some(mut r) = r else { return b };
    let mut buf = vec![0u8; 16 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return b,
            Ok(n) => {
                b.push(&buf[..n]);
                if let Some(tx) = &lines {
                    partial.extend_from_slice(&buf[..n]);
                    while let Some(i) = partial.iter().position(|c| *c == b'\n') {
                        let line: Vec<u8> = partial.drain(..=i).collect();
                        let _ = tx.send(String::from_utf8_lossy(&line).trim_end().to_string());
                    }
                    // A line longer than the buffer is passed on in pieces.
                    if partial.len() > 64 * 1024 {
                        let _ = tx.send(String::from_utf8_lossy(&partial).into_owned());
                        partial.clear();
                    }
                }
            }
        }
    }
}
