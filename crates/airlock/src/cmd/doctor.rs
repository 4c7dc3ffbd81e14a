//! `airlock doctor [--json]`: what this host supports, one row per capability the product
//! uses, each ok / degraded / MISSING with the exact fix. Exit 0 when the default path (the
//! container backend: user namespaces, mount+pid namespaces with a fresh /proc, seccomp) works,
//! 1 otherwise.

use airlock_sandbox::hostcaps::{self, Row, Status};
use std::io::Write;

/// Probe the host and write the report; returns the exit code.
pub fn run_doctor(json: bool, out: &mut dyn Write) -> anyhow::Result<i32> {
    let mut rows = hostcaps::probe_all();
    rows.extend(super::image::doctor_rows());
    rows.push(super::daemon::doctor_row());
    rows.push(link_row(std::env::current_exe().ok().as_deref()));
    rows.push(inject_row(
        airlock_egress::intercept::self_test().map_err(|e| e.to_string()),
        airlock_sandbox::container::system_ca_bundle(),
    ));
    let ok = hostcaps::default_path_ok(&rows);
    if json {
        write_json(&rows, ok, out)?;
    } else {
        write_table(&rows, ok, out)?;
    }
    out.flush()?;
    Ok(if ok { 0 } else { 1 })
}

/// How this `airlock` binary is linked: static-pie (the C library included, as
/// `scripts/rustc-wrapper` links it when the C library's static archives are there), or
/// dynamically — which works, but costs every airlock process (each command, supervisor,
/// proxy and helper) about a millisecond more to start (bench/RESULTS.md, "Session 14").
fn link_row(exe: Option<&std::path::Path>) -> Row {
    let row = |status, detail: String, fix: Option<String>| Row {
        id: "airlock.link".into(),
        name: "airlock's own start".into(),
        status,
        detail,
        fix,
        needed_for: "fast starts of every airlock process (each command, supervisor and proxy)"
            .into(),
    };
    match exe.map(elf_interpreter) {
        Some(Ok(None)) => row(
            Status::Ok,
            format!(
                "statically linked (static-pie): no dynamic loader at start; {}",
                if crate::entry::entered_here() {
                    "entered at airlock_entry: the pages its relocation writes are copied in one \
                     system call"
                } else {
                    "entered at _start: the pages its relocation writes fault in one by one"
                }
            ),
            None,
        ),
        Some(Ok(Some(interp))) => row(
            Status::Degraded,
            format!(
                "dynamically linked ({interp}): each airlock process spends about 1 ms more \
                 starting"
            ),
            Some(
                "install the C library's static archives (Debian/Ubuntu: libc6-dev; Fedora: \
                 glibc-static) and reinstall airlock with the README's command (from the \
                 repository, without a RUSTC_WRAPPER of your own)"
                    .into(),
            ),
        ),
        Some(Err(e)) => row(
            Status::Degraded,
            format!("cannot read this binary's ELF header: {e}"),
            None,
        ),
        None => row(
            Status::Degraded,
            "cannot find this binary (/proc/self/exe)".into(),
            None,
        ),
    }
}

/// The program interpreter (`PT_INTERP`: the dynamic loader) an ELF64 executable names, None
/// for a statically linked one: its first MiB (headers and interpreter come first) read by the
/// parser the embedded guest helper is checked with.
fn elf_interpreter(exe: &std::path::Path) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(exe)?
        .take(1 << 20)
        .read_to_end(&mut head)?;
    airlock_guest_embed::elf_interpreter(&head)
        .map(|i| i.map(|p| String::from_utf8_lossy(p).into_owned()))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Secret injection (`inject = {...}` secrets): the TLS provider, making the sandbox's CA and
/// a leaf (timed), the system roots for verifying real servers, and the system CA bundle the
/// sandbox's combined bundle starts with.
fn inject_row(
    check: Result<airlock_egress::intercept::SelfTest, String>,
    bundle: Option<&str>,
) -> Row {
    let needed_for = "secrets injected by the host (`inject = {...}`, agent API keys)";
    let row = |status, detail: String, fix: Option<String>| Row {
        id: "secrets.inject".into(),
        name: "secret injection".into(),
        status,
        detail,
        fix,
        needed_for: needed_for.into(),
    };
    let t = match check {
        Ok(t) => t,
        Err(e) => {
            return row(
                Status::Missing,
                format!("cannot make the interception CA or complete a TLS handshake with it: {e}"),
                Some(
                    "this airlock build's TLS (rustls + ring) does not work here; report it with                      `airlock doctor --json`; meanwhile give secrets without `inject` (the sandbox                      then sees their values)"
                        .into(),
                ),
            );
        }
    };
    let mut detail = format!(
        "ring TLS ok; CA {:.1} ms, leaf + verified handshake {:.1} ms; {} system roots ({:.1} ms)",
        t.ca_ms, t.leaf_ms, t.roots, t.roots_ms
    );
    match bundle {
        Some(b) => detail.push_str(&format!("; bundle {b}")),
        None => detail.push_str("; no system CA bundle"),
    }
    let mut missing = Vec::new();
    if t.roots == 0 {
        missing.push("no system root certificates: the real servers cannot be verified, so no key is sent (set AIRLOCK_UPSTREAM_CA to a PEM file of the CAs to trust)");
    }
    if bundle.is_none() {
        missing.push("no system CA bundle: inside, the combined bundle holds only the sandbox's CA, so HTTPS to hosts without a secret fails verification");
    }
    if missing.is_empty() {
        return row(Status::Ok, detail, None);
    }
    row(
        Status::Degraded,
        format!("{detail}; {}", missing.join("; ")),
        Some("install the system CA certificates (Debian/Ubuntu: apt-get install ca-certificates; Fedora: dnf install ca-certificates)".into()),
    )
}

pub fn write_json(rows: &[Row], default_path_ok: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    #[derive(serde::Serialize)]
    struct Report<'a> {
        rows: &'a [Row],
        default_path_ok: bool,
    }
    serde_json::to_writer_pretty(
        &mut *out,
        &Report {
            rows,
            default_path_ok,
        },
    )?;
    writeln!(out)?;
    Ok(())
}

/// The human table: status word, name, detail; `fix:` and `affects:` under rows that are not ok.
pub fn write_table(rows: &[Row], default_path_ok: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let name_w = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0)
        .min(40);
    let indent = " ".repeat(9 + 1 + name_w);
    for r in rows {
        writeln!(
            out,
            "{:<9} {:<name_w$}  {}",
            r.status.to_string(),
            r.name,
            r.detail
        )?;
        if r.status != Status::Ok {
            if let Some(fix) = &r.fix {
                writeln!(out, "{indent}  fix: {fix}")?;
            }
            writeln!(out, "{indent}  affects: {}", r.needed_for)?;
        }
    }
    writeln!(out)?;
    if default_path_ok {
        writeln!(out, "default path (container backend): ok — `airlock run` can sandbox commands on this host")?;
    } else {
        let broken: Vec<&str> = rows
            .iter()
            .filter(|r| hostcaps::DEFAULT_PATH.contains(&r.id.as_str()) && r.status != Status::Ok)
            .map(|r| r.name.as_str())
            .collect();
        writeln!(
            out,
            "default path (container backend): MISSING {} — `airlock run` cannot work until fixed",
            broken.join(", ")
        )?;
    }
    Ok(())
}

/// `airlock status`'s `environment:` block: doctor's rows without the informational ones,
/// each not-ok row with its fix, then whether the default path works.
pub fn write_environment(
    rows: &[Row],
    default_path_ok: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let shown: Vec<&Row> = rows.iter().filter(|r| r.needed_for != "info").collect();
    let name_w = shown
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0)
        .min(40);
    writeln!(out, "environment:")?;
    for r in shown {
        if r.status == Status::Ok {
            writeln!(out, "  {:<9} {}", r.status.to_string(), r.name)?;
            continue;
        }
        writeln!(
            out,
            "  {:<9} {:<name_w$}  {}",
            r.status.to_string(),
            r.name,
            r.detail
        )?;
        if let Some(fix) = &r.fix {
            writeln!(out, "  {:<9} {:<name_w$}  fix: {fix}", "", "")?;
        }
    }
    writeln!(
        out,
        "  default path (container backend): {}",
        if default_path_ok { "ok" } else { "MISSING" }
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, name: &str, status: Status, fix: Option<&str>) -> Row {
        Row {
            id: id.into(),
            name: name.into(),
            status,
            detail: format!("{id} detail"),
            fix: fix.map(str::to_string),
            needed_for: "stuff".into(),
        }
    }

    /// A dynamically linked program names its loader; a file that is not ELF is an error;
    /// the row says what it found and how to mend a dynamic airlock. (The installed binary's
    /// own row, static-pie: tests/cli.rs `doctor_rows_match_what_airlock_uses`.)
    #[test]
    fn how_a_binary_is_linked() {
        let sh = std::fs::canonicalize("/bin/sh").expect("/bin/sh");
        let interp = elf_interpreter(&sh)
            .expect("read /bin/sh")
            .expect("dynamic /bin/sh");
        assert!(interp.contains("ld-linux"), "{interp}");
        let r = link_row(Some(&sh));
        assert_eq!(r.status, Status::Degraded, "{r:?}");
        assert!(r.detail.contains(&interp), "{r:?}");
        assert!(
            r.fix.as_deref().is_some_and(|f| f.contains("libc6-dev")),
            "{r:?}"
        );
        let toml = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        assert!(elf_interpreter(&toml).is_err());
        assert_eq!(link_row(Some(&toml)).status, Status::Degraded);
        assert_eq!(link_row(None).status, Status::Degraded);
    }

    #[test]
    fn secret_injection_row() {
        let t = airlock_egress::intercept::self_test().expect("self test");
        assert!(t.ca_ms > 0.0 && t.leaf_ms > 0.0, "{t:?}");
        let bundle = airlock_sandbox::container::system_ca_bundle();
        let ok = inject_row(Ok(t.clone()), bundle);
        if t.roots > 0 && bundle.is_some() {
            assert_eq!(ok.status, Status::Ok, "{ok:?}");
            assert!(ok.detail.contains("ring TLS ok; CA "), "{ok:?}");
        }
        // Without roots or a bundle: degraded, and the fix says what to install.
        let none = airlock_egress::intercept::SelfTest { roots: 0, ..t };
        let r = inject_row(Ok(none), None);
        assert_eq!(r.status, Status::Degraded);
        assert!(r.detail.contains("AIRLOCK_UPSTREAM_CA"), "{r:?}");
        assert!(r.detail.contains("no system CA bundle"), "{r:?}");
        assert!(r.fix.unwrap().contains("ca-certificates"));
        let r = inject_row(Err("boom".into()), bundle);
        assert_eq!(r.status, Status::Missing);
        assert!(r.detail.contains("boom") && r.fix.is_some(), "{r:?}");
    }

    #[test]
    fn table_and_json() {
        let rows = vec![
            row("userns", "user namespaces", Status::Ok, None),
            row(
                "seccomp",
                "seccomp",
                Status::Missing,
                Some("rebuild the kernel"),
            ),
            row("kvm", "/dev/kvm", Status::Degraded, Some("usermod")),
        ];
        let mut out = Vec::new();
        write_table(&rows, false, &mut out).expect("table");
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ok        user namespaces  userns detail");
        assert_eq!(lines[1], "MISSING   seccomp          seccomp detail");
        // fix/affects lines start in the detail column
        let pad = " ".repeat("MISSING   seccomp          ".len());
        assert_eq!(lines[2], format!("{pad}fix: rebuild the kernel"));
        assert_eq!(lines[3], format!("{pad}affects: stuff"));
        assert_eq!(lines[4], "degraded  /dev/kvm         kvm detail");
        assert!(lines
            .last()
            .expect("summary")
            .starts_with("default path (container backend): MISSING seccomp"));

        let mut out = Vec::new();
        write_json(&rows, false, &mut out).expect("json");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("parse");
        assert_eq!(v["default_path_ok"], false);
        assert_eq!(v["rows"][1]["status"], "missing");
        assert_eq!(v["rows"][0]["fix"], serde_json::Value::Null);
    }

    #[test]
    fn environment_block() {
        let rows = vec![
            row("userns", "user namespaces", Status::Ok, None),
            row("seccomp", "seccomp", Status::Missing, Some("rebuild")),
            Row {
                needed_for: "info".into(),
                ..row("nft", "nftables", Status::Ok, None)
            },
        ];
        let mut out = Vec::new();
        write_environment(&rows, false, &mut out).expect("block");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text,
            format!(
                "environment:\n  ok        user namespaces\n  MISSING   seccomp          seccomp detail\n{}fix: rebuild\n  default path (container backend): MISSING\n",
                // the fix starts in the detail column
                " ".repeat("  MISSING   seccomp          ".len())
            )
        );
    }
}
