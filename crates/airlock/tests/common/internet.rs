//! A fake internet for the network tests: a network namespace of the test's own, joined to the
//! host by a veth pair on a private /30 inside 198.18.0.0/15 (the benchmarking range, which the
//! egress policy does not treat as private), running `fixtures/internet.py` (DNS, HTTP, HTTPS
//! with a certificate made at test time, and a scripted model behind the agent CLIs' APIs). No
//! traffic leaves the machine.

use super::TempDir;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Internet {
    ns: String,
    host_if: String,
    child: Child,
    dir: TempDir,
    /// The address everything is served on.
    pub ip: String,
    /// The DNS server, as host:port, for the egress resolver's upstream setting.
    pub dns: String,
}

fn sh(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(st.success(), "{args:?} failed: {st}");
}

impl Internet {
    /// Start serving; `names` are DNS names answered with this internet's address, `extra`
    /// are (name, ip) answers pointing anywhere (rebinding tests).
    pub fn start(names: &[&str], extra: &[(&str, &str)]) -> Internet {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let slot = (std::process::id() % 120) * 4 + n; // 0..=~500, distinct per test
        let (b, c) = (slot / 64, (slot % 64) * 4);
        let host_ip = format!("198.18.{}.{}", 100 + b, c + 1);
        let ip = format!("198.18.{}.{}", 100 + b, c + 2);
        let tag = format!("{}{}", std::process::id() % 100_000, n);
        let ns = format!("alk-inet-{tag}");
        let host_if = format!("alkh{tag}");
        let peer_if = format!("alkp{tag}");
        let dir = TempDir::new("internet");
        sh(&["ip", "netns", "add", &ns]);
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
        ]);
        sh(&["ip", "link", "set", &peer_if, "netns", &ns]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &host_if,
        ]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip}/30"),
            "dev",
            &peer_if,
        ]);
        sh(&["ip", "-n", &ns, "link", "set", &peer_if, "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        // A CA of the test's own (what clients trust: `cert()`) and a server certificate it
        // signed for the names: strict TLS stacks (rustls) refuse a CA certificate as a server's.
        let (ca, ca_key) = (dir.join("cert.pem"), dir.join("ca-key.pem"));
        let (cert, key, csr) = (
            dir.join("server.pem"),
            dir.join("key.pem"),
            dir.join("server.csr"),
        );
        let ext = dir.join("server.ext");
        let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={}\nbasicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
                san.join(",")
            ),
        )
        .expect("write the certificate extensions");
        let path = |p: &PathBuf| p.to_str().unwrap_or_default().to_string();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca_args = vec!["openssl", "req", "-x509"];
        ca_args.extend(ec);
        let (ca_s, ca_key_s) = (path(&ca), path(&ca_key));
        ca_args.extend([
            "-days",
            "1",
            "-subj",
            "/CN=airlock-test-ca",
            "-keyout",
            &ca_key_s,
        ]);
        ca_args.extend(["-out", &ca_s]);
        sh(&ca_args);
        let (key_s, csr_s, cert_s, ext_s) = (path(&key), path(&csr), path(&cert), path(&ext));
        let mut req = vec!["openssl", "req"];
        req.extend(ec);
        req.extend([
            "-subj",
            "/CN=airlock-test",
            "-keyout",
            &key_s,
            "-out",
            &csr_s,
        ]);
        sh(&req);
        sh(&[
            "openssl",
            "x509",
            "-req",
            "-in",
            &csr_s,
            "-CA",
            &ca_s,
            "-CAkey",
            &ca_key_s,
            "-set_serial",
            "2",
            "-days",
            "1",
            "-extfile",
            &ext_s,
            "-out",
            &cert_s,
        ]);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/internet.py");
        let ready = dir.join("ready");
        std::fs::create_dir_all(dir.join("files")).expect("files dir");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns, "python3"]).arg(&script);
        for n in names {
            cmd.arg("--name").arg(format!("{n}={ip}"));
        }
        for (n, to) in extra {
            cmd.arg("--name").arg(format!("{n}={to}"));
        }
        cmd.arg("--cert").arg(&cert).arg("--key").arg(&key);
        cmd.arg("--serve-dir").arg(dir.join("files"));
        cmd.arg("--model-log").arg(dir.join("model.jsonl"));
        cmd.arg("--dns-log")
            .arg(dir.join("dns.log"))
            .arg("--ready")
            .arg(&ready)
            .args(["--lifetime", "300"]);
        cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
        let child = cmd.spawn().expect("start the fake internet");
        let up = super::wait_until(Duration::from_secs(20), || ready.exists());
        assert!(up, "the fake internet did not come up");
        Internet {
            ns,
            host_if,
            child,
            dir,
            dns: format!("{ip}:53"),
            ip,
        }
    }

    /// The certificate to trust (curl --cacert).
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// Files served under `http(s)://NAME/files/` (e.g. a bare git repository).
    pub fn files(&self) -> PathBuf {
        self.dir.join("files")
    }

    /// Every request the scripted model APIs received (`fixtures/model_api.py`), parsed.
    pub fn model_requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("model.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Every DNS query the fake internet received, one `name qtype` per line.
    pub fn dns_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dns.log")).unwrap_or_default()
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}
