//! airlock-probe: runs inside an airlock sandbox and tries to get out.
//!
//! Every check really attempts its operation with raw system calls and prints one JSON line,
//! `{"check": "...", "blocked": true|false, "detail": "..."}`, then a summary line. Each check
//! runs in its own forked child, so a check that succeeds (a new user namespace, a chroot, a
//! changed personality) cannot disturb the next one, and a check killed by seccomp (SIGSYS)
//! counts as blocked. The exit code is 0 whatever was found: the report is the result.

mod checks;
mod report;
mod sys;

use checks::{Check, Ctx, CHECKS};
use report::{summary_line, Outcome};
use std::io::Write;
use sys::{fs, process};

const USAGE: &str = "\
usage: airlock-probe all|CHECK[,CHECK...] [OPTIONS]
       airlock-probe list

options (a check that needs a missing one is skipped and named in the summary):
  --canary PATH          a host file the sandbox must not read
  --host-pid PID         a host process the sandbox must not see
  --host-port PORT       a TCP listener on the host's 127.0.0.1
  --host-path PATH       a host directory (or file) outside the workspace
  --exe-path PATH        the host airlock binary (repeatable)
  --host-abstract NAME   an abstract Unix socket listening on the host
  --host-unix PATH       a host Unix socket path (repeatable)
  --check-timeout-ms N   per-check deadline (default 10000)

output: one JSON object per line, then {\"summary\": {...}}; exit code 0.";

struct Args {
    selection: Vec<&'static Check>,
    ctx: Ctx,
    check_timeout_ms: i32,
}

fn parse_args(argv: &[String]) -> Result<Option<Args>, String> {
    let Some(first) = argv.first() else {
        return Err("missing CHECK or `all`".into());
    };
    match first.as_str() {
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            return Ok(None);
        }
        "list" => {
            for c in CHECKS {
                println!("{:<20} {}", c.name, c.about);
            }
            return Ok(None);
        }
        _ => {}
    }
    let selection: Vec<&'static Check> = if first == "all" {
        CHECKS.iter().collect()
    } else {
        first
            .split(',')
            .map(|n| {
                checks::find(n)
                    .ok_or_else(|| format!("unknown check {n:?} (see `airlock-probe list`)"))
            })
            .collect::<Result<_, _>>()?
    };
    let mut ctx = Ctx::default();
    let mut check_timeout_ms = 10_000;
    let mut it = argv[1..].iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--canary" => ctx.canary = Some(value()?),
            "--host-pid" => {
                ctx.host_pid = Some(value()?.parse().map_err(|_| "--host-pid: not a number")?)
            }
            "--host-port" => {
                ctx.host_port = Some(value()?.parse().map_err(|_| "--host-port: not a port")?)
            }
            "--host-path" => ctx.host_path = Some(value()?),
            "--exe-path" => ctx.exe_paths.push(value()?),
            "--host-abstract" => ctx.host_abstract = Some(value()?),
            "--host-unix" => ctx.host_unix.push(value()?),
            "--check-timeout-ms" => {
                check_timeout_ms = value()?
                    .parse()
                    .map_err(|_| "--check-timeout-ms: not a number")?
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(Some(Args {
        selection,
        ctx,
        check_timeout_ms,
    }))
}

/// Run one check in a forked child and collect its verdict through a pipe.
fn run_isolated(check: &Check, ctx: &Ctx, timeout_ms: i32) -> Outcome {
    let (rx, tx) = match process::pipe() {
        Ok(p) => p,
        Err(e) => {
            return Outcome::escaped(format!(
                "probe could not create a pipe ({e}); check not run"
            ))
        }
    };
    match process::fork() {
        Err(e) => Outcome::escaped(format!("probe could not fork ({e}); check not run")),
        Ok(process::Forked::Child) => {
            drop(rx);
            let outcome = (check.run)(ctx);
            let _ = fs::write(&tx, format!("{}\n", outcome.encode()).as_bytes());
            process::exit_now(0);
        }
        Ok(process::Forked::Parent(pid)) => {
            drop(tx);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let deadline =
                std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms as u64);
            let mut timed_out = false;
            loop {
                let left = deadline
                    .saturating_duration_since(std::time::Instant::now())
                    .as_millis() as i32;
                if left <= 0 || !process::poll_in(&rx, left).unwrap_or(false) {
                    timed_out = true;
                    break;
                }
                match fs::read(&rx, &mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            if timed_out {
                let _ = process::kill(pid, libc::SIGKILL);
            }
            let status = process::waitpid(pid, 0);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some(o) = Outcome::decode(&text) {
                return o;
            }
            match (timed_out, status) {
                (true, _) => Outcome::escaped(format!(
                    "check did not finish within {timeout_ms} ms (killed); treated as not blocked"
                )),
                (_, Ok(process::Status::Signaled(libc::SIGSYS))) => {
                    Outcome::blocked("killed by SIGSYS: a seccomp filter stopped the attempt")
                }
                (_, Ok(process::Status::Signaled(sig))) => {
                    Outcome::escaped(format!("check died by signal {sig} without a verdict"))
                }
                (_, Ok(process::Status::Exited(code))) => {
                    Outcome::escaped(format!("check exited {code} without a verdict"))
                }
                (_, Ok(process::Status::Other(st))) => {
                    Outcome::escaped(format!("check ended oddly (status {st:#x})"))
                }
                (_, Err(e)) => Outcome::escaped(format!("waitpid: {e}")),
            }
        }
    }
}

fn main() {
    // Before anything else opens a descriptor: every fd beyond 2 now was inherited.
    let initial_fds = checks::leaks_scan();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut args = match parse_args(&argv) {
        Ok(Some(a)) => a,
        Ok(None) => return,
        Err(msg) => {
            eprintln!("airlock-probe: {msg}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    args.ctx.initial_fds = Some(initial_fds);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut results: Vec<(&str, Outcome)> = Vec::new();
    let mut skipped: Vec<(&str, &str)> = Vec::new();
    for check in &args.selection {
        if let Some(why) = (check.missing)(&args.ctx) {
            skipped.push((check.name, why));
            continue;
        }
        let outcome = run_isolated(check, &args.ctx, args.check_timeout_ms);
        let _ = writeln!(out, "{}", outcome.json_line(check.name));
        let _ = out.flush();
        results.push((check.name, outcome));
    }
    let _ = writeln!(out, "{}", summary_line(&results, &skipped));
    let _ = out.flush();
}
