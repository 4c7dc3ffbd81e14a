//! Running the escape probe (`crates/airlock-probe`) inside a sandbox: host-side bait it must
//! not reach, the probe's arguments, and the report it prints.

use super::{probe_exe, set_mode, Airlock, Outcome, TempDir, TestUser};
use std::net::TcpListener;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};

/// Host-side bait: a canary file, a loopback TCP listener, an abstract Unix socket and a
/// world-writable host directory outside any workspace.
pub struct Bait {
    pub canary: PathBuf,
    canary_content: String,
    pub listener: TcpListener,
    pub abstract_name: String,
    abstract_listener: UnixListener,
    pub host_dir: TempDir,
}

impl Bait {
    /// `canary_dir`: /root for the rootful tests; the test user's home for the rootless ones
    /// (where the user *can* read it on the host, so only the sandbox stands in the way).
    pub fn new(canary_dir: &Path, owner: Option<&TestUser>) -> Self {
        let token = super::random_hex();
        let canary = canary_dir.join(format!(".airlock-e2e-canary-{token}"));
        let canary_content = format!("AIRLOCK-CANARY-{token}");
        std::fs::write(&canary, &canary_content).expect("write canary");
        set_mode(&canary, 0o600);
        if let Some(u) = owner {
            std::os::unix::fs::chown(&canary, Some(u.uid), Some(u.gid)).expect("chown canary");
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("host loopback listener");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let abstract_name = format!("airlock-e2e-{token}");
        let addr =
            SocketAddr::from_abstract_name(abstract_name.as_bytes()).expect("abstract address");
        let abstract_listener = UnixListener::bind_addr(&addr).expect("abstract listener");
        abstract_listener
            .set_nonblocking(true)
            .expect("nonblocking unix listener");
        // Not under /tmp: the sandbox has its own /tmp, which would hide the point.
        let host_dir = TempDir::new_in(Path::new("/var/tmp"), "hostpath");
        set_mode(host_dir.path(), 0o777);
        Bait {
            canary,
            canary_content,
            listener,
            abstract_name,
            abstract_listener,
            host_dir,
        }
    }

    pub fn probe_args(&self, airlock_exe: &Path) -> Vec<String> {
        let port = self.listener.local_addr().expect("listener address").port();
        vec![
            "--canary".into(),
            self.canary.display().to_string(),
            "--host-pid".into(),
            std::process::id().to_string(),
            "--host-port".into(),
            port.to_string(),
            "--host-path".into(),
            self.host_dir.path().display().to_string(),
            "--exe-path".into(),
            airlock_exe.display().to_string(),
            "--host-abstract".into(),
            self.abstract_name.clone(),
        ]
    }

    /// Host-side evidence, independent of what the probe says about itself.
    pub fn assert_untouched(&self, label: &str, stdout: &str) {
        assert!(
            self.listener.accept().is_err(),
            "{label}: something inside connected to the host's loopback listener"
        );
        assert!(
            self.abstract_listener.accept().is_err(),
            "{label}: something inside connected to the host's abstract socket"
        );
        let entries: Vec<_> = std::fs::read_dir(self.host_dir.path())
            .expect("list host dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(
            entries.is_empty(),
            "{label}: files appeared in the host path: {entries:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&self.canary).expect("canary still there"),
            self.canary_content
        );
        assert!(
            !stdout.contains(&self.canary_content),
            "{label}: the canary's content reached the probe's output"
        );
    }
}

impl Drop for Bait {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.canary);
    }
}

/// One line of the probe's report.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub name: String,
    pub blocked: bool,
    pub detail: String,
}

#[derive(Debug)]
pub struct Report {
    pub checks: Vec<CheckResult>,
    pub summary: Option<serde_json::Value>,
}

impl Report {
    /// Parse the JSON lines (tolerating `\r` from a pty and non-JSON noise).
    pub fn parse(stdout: &str) -> Self {
        let mut checks = Vec::new();
        let mut summary = None;
        for line in stdout.lines().map(|l| l.trim_matches(['\r', ' '])) {
            if !line.starts_with('{') {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad probe line ({e}): {line}"));
            if let Some(s) = v.get("summary") {
                summary = Some(s.clone());
            } else if let Some(name) = v["check"].as_str() {
                checks.push(CheckResult {
                    name: name.to_string(),
                    blocked: v["blocked"]
                        .as_bool()
                        .unwrap_or_else(|| panic!("no blocked field: {line}")),
                    detail: v["detail"].as_str().unwrap_or_default().to_string(),
                });
            }
        }
        Report { checks, summary }
    }

    pub fn get(&self, name: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.name == name)
    }
}

/// Every check the probe knows (`airlock-probe list`, run on the host).
pub fn all_check_names() -> Vec<String> {
    let out = std::process::Command::new(probe_exe())
        .arg("list")
        .output()
        .expect("airlock-probe list");
    assert!(out.status.success(), "airlock-probe list failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Run `/probe all` in a sandbox (`--workspace none`, the probe mounted read-only at /probe)
/// with `extra` airlock flags, and return airlock's outcome and the parsed report.
pub fn run_probe_all(
    airlock: &Airlock,
    probe: &Path,
    bait: &Bait,
    extra: &[&str],
) -> (Outcome, Report) {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--workspace".into(),
        "none".into(),
        "--timeout".into(),
        "120s".into(),
        // The probe's connect/sendto checks assert the `off` floor (no route anywhere). In
        // filtered mode every address is routed to the sandbox's own listeners by design, and
        // what they let through is proven at the HTTP/DNS level by tests/network.rs.
        "--net".into(),
        "off".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--ro".into());
    args.push(format!("{}:/probe", probe.display()));
    args.extend(["--".into(), "/probe".into(), "all".into()]);
    args.extend(bait.probe_args(&airlock.exe));
    let out = airlock.run(&args);
    let report = Report::parse(&out.stdout);
    (out, report)
}

/// Every known check ran, none was skipped, and every one was blocked; the failure message
/// lists each check that got through with the probe's detail.
pub fn assert_all_blocked(label: &str, out: &Outcome, report: &Report) {
    assert_eq!(
        out.code(),
        0,
        "{label}: the probe exits 0 whatever it finds; airlock said:\n{}",
        out.describe()
    );
    let summary = report.summary.as_ref().unwrap_or_else(|| {
        panic!(
            "{label}: no summary line (probe crashed?)\n{}",
            out.describe()
        )
    });
    let skipped = summary["skipped"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(skipped, 0, "{label}: checks were skipped: {summary}");
    let ran: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    let missing: Vec<String> = all_check_names()
        .into_iter()
        .filter(|n| !ran.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{label}: checks that did not report: {missing:?}\n{}",
        out.describe()
    );
    let open: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !c.blocked)
        .map(|c| format!("  {}: {}", c.name, c.detail))
        .collect();
    assert!(
        open.is_empty(),
        "{label}: {} check(s) NOT blocked:\n{}\n(full report on stdout above)",
        open.len(),
        open.join("\n")
    );
}
