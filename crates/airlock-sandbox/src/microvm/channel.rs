//! The host's end of the guest channel: accept QEMU's connection for the virtio-serial port,
//! send the job, relay the command's output to this process's stdout/stderr (and stdin to
//! the guest when asked), and collect the exit status. Protocol: `airlock_model::vm`.

use airlock_model::vm::{
    b64_decode, b64_encode, GuestJob, GuestMsg, HostMsg, TimingStep, MAIN_SESSION,
    VM_PROTOCOL_VERSION,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The longest line the host reads from the guest (its output chunks are 32 KiB, base64).
const MAX_LINE: u64 = 1 << 20;

/// How the guest ended, as it reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    /// The exit status, and an overlay workspace's change summary when the guest sent one.
    Exit(i32, Option<Box<crate::container::Changes>>),
    Error(String),
    /// The channel closed (or never opened) without an exit status.
    Nothing,
    /// The channel opened, the job went, and it closed before the guest sent anything: the
    /// guest never ran (a restore QEMU could not load), so neither did the command.
    Unheard,
}

/// What the run message carries beside the job: the secrets' values and the injection CA
/// bundle, never recorded anywhere on the host.
#[derive(Debug, Clone, Default)]
pub struct Sealed {
    pub secrets: Vec<(String, String)>,
    pub ca_bundle: Option<String>,
    /// The guest is a copy of a boot snapshot: its clock and random seed (see
    /// [`airlock_model::vm::Restored`]).
    pub restored: Option<airlock_model::vm::Restored>,
}

impl Sealed {
    /// The run message for `job`.
    pub fn run(&self, job: &GuestJob) -> HostMsg {
        HostMsg::Run {
            v: VM_PROTOCOL_VERSION,
            job: Box::new(job.clone()),
            secrets: self.secrets.clone(),
            ca_bundle: self.ca_bundle.clone(),
            restored: self.restored.clone(),
        }
    }
}

/// Wait for QEMU to connect to `listener` (until `stop`), then relay until the guest reports
/// its end or the channel closes.
pub fn relay(
    listener: &UnixListener,
    job: &GuestJob,
    sealed: &Sealed,
    stop: &AtomicBool,
    stdin: bool,
) -> Reported {
    match accept(listener, stop) {
        Some(stream) => serve(stream, job, sealed, stdin),
        None => Reported::Nothing,
    }
}

/// QEMU's connection for the channel (None: `stop` came first).
pub fn accept(listener: &UnixListener, stop: &AtomicBool) -> Option<UnixStream> {
    listener.set_nonblocking(true).ok()?;
    let stream = loop {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    stream.set_nonblocking(false).ok()?;
    crate::phase("vm channel connected");
    Some(stream)
}

/// The guest init's steps, as phases (`AIRLOCK_TIMING=1`): each with its time since the guest
/// kernel started and since the step before, and (from guests that report it) how much of
/// that the init and its children spent on the CPU.
pub fn show_timing(steps: &[TimingStep]) {
    for line in timing_lines(steps) {
        crate::phase(&line);
    }
}

fn timing_lines(steps: &[TimingStep]) -> Vec<String> {
    let ms = |us: u64| us as f64 / 1000.0;
    let mut prev: Option<&TimingStep> = None;
    steps
        .iter()
        .map(|s| {
            let wall = s.us.saturating_sub(prev.map_or(0, |p| p.us));
            let cpu = match (s.cpu_us, prev.and_then(|p| p.cpu_us)) {
                (Some(now), Some(before)) => {
                    format!(" (init cpu {:.1})", ms(now.saturating_sub(before)))
                }
                _ => String::new(),
            };
            prev = Some(s);
            format!(
                "guest +{:.1} ms{cpu}: {} (at {:.1} ms since its kernel started)",
                ms(wall),
                s.step,
                ms(s.us)
            )
        })
        .collect()
}

/// One message to the guest: a JSON line.
pub(crate) fn send(w: &mut impl Write, m: &HostMsg) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(m).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)
}

pub fn serve(stream: UnixStream, job: &GuestJob, sealed: &Sealed, stdin: bool) -> Reported {
    let Ok(mut w) = stream.try_clone() else {
        return Reported::Nothing;
    };
    let run = sealed.run(job);
    if send(&mut w, &run).is_err() {
        return Reported::Nothing;
    }
    let done = Arc::new(AtomicBool::new(false));
    // `run -t`: the user's terminal, raw until the command ends (the guard's drop).
    let _raw = job.tty.and_then(|_| super::term::RawMode::enter(0));
    if job.tty.is_some() {
        let done = done.clone();
        let size = job.tty;
        std::thread::spawn(move || super::term::pump(size, &done, |m| send(&mut w, m).is_ok()));
    } else if stdin {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 << 10];
            let mut input = std::io::stdin().lock();
            loop {
                let msg = match input.read(&mut buf) {
                    Ok(0) | Err(_) => HostMsg::StdinEof {
                        v: VM_PROTOCOL_VERSION,
                        session: MAIN_SESSION,
                    },
                    Ok(n) => HostMsg::Stdin {
                        v: VM_PROTOCOL_VERSION,
                        data: b64_encode(&buf[..n]),
                        session: MAIN_SESSION,
                    },
                };
                let eof = matches!(msg, HostMsg::StdinEof { .. });
                if done.load(Ordering::Relaxed) || send(&mut w, &msg).is_err() || eof {
                    return;
                }
            }
        });
    }
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut reported = Reported::Nothing;
    let mut changes = None;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut heard = false;
    loop {
        // The guest is untrusted: a line longer than any message it has reason to send ends
        // the relay rather than growing this process's memory.
        line.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.last() != Some(&b'\n') => {
                crate::phase("vm channel: over-long or unterminated line; relay ended");
                break;
            }
            Ok(_) => {}
        }
        heard = true;
        let msg: GuestMsg = match serde_json::from_slice(&line) {
            Ok(m) => m,
            Err(e) => {
                crate::phase(&format!("vm channel: unreadable line skipped: {e}"));
                continue;
            }
        };
        match msg {
            GuestMsg::Hello { v, kernel, .. } => {
                crate::phase(&format!("guest up (protocol {v}, kernel {kernel})"));
            }
            GuestMsg::Stdout { data, .. } => {
                let _ = out.write_all(&b64_decode(&data).unwrap_or_default());
                let _ = out.flush();
            }
            GuestMsg::Stderr { data, .. } => {
                let _ = err.write_all(&b64_decode(&data).unwrap_or_default());
            }
            GuestMsg::Exit { code, .. } => {
                reported = Reported::Exit(code, changes.take());
                break;
            }
            GuestMsg::Changes { changes: c, .. } => {
                changes = serde_json::from_value(c)
                    .map_err(|e| crate::phase(&format!("vm channel: unreadable changes: {e}")))
                    .ok()
                    .map(Box::new);
            }
            GuestMsg::Error { message, .. } => {
                reported = Reported::Error(message);
                break;
            }
            GuestMsg::Ready { .. } | GuestMsg::Idle { .. } => {}
            GuestMsg::Resumed { .. } => crate::phase("guest resumed from the boot snapshot"),
            GuestMsg::Timing { steps, .. } => show_timing(&steps),
            GuestMsg::Unknown => crate::phase("vm channel: unknown message kind skipped"),
        }
    }
    done.store(true, Ordering::Relaxed);
    match reported {
        Reported::Nothing if !heard => Reported::Unheard,
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, us: u64, cpu_us: Option<u64>) -> TimingStep {
        TimingStep {
            step: name.into(),
            us,
            cpu_us,
        }
    }

    #[test]
    fn timing_lines_show_each_steps_wall_and_cpu_time_when_the_guest_reports_it() {
        let lines = timing_lines(&[
            step("init started", 500_000, Some(380_000)),
            step("early mounts", 507_500, Some(387_000)),
            step("channel open", 515_000, None),
            step("job received", 520_000, Some(390_000)),
        ]);
        assert_eq!(
            lines,
            [
                "guest +500.0 ms: init started (at 500.0 ms since its kernel started)",
                "guest +7.5 ms (init cpu 7.0): early mounts (at 507.5 ms since its kernel started)",
                "guest +7.5 ms: channel open (at 515.0 ms since its kernel started)",
                "guest +5.0 ms: job received (at 520.0 ms since its kernel started)",
            ]
        );
    }
}
