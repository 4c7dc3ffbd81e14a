//! Live policy end to end, against the fake internet of common/internet.rs: in a running named
//! sandbox a connection to a host is denied (journaled, with `airlock allow` as the fix),
//! `airlock allow NAME HOST` lets the same connection through without a restart, `airlock deny
//! NAME HOST` denies it again and closes an open long-lived connection to it; the change is in
//! the audit journal and survives a restart. Rootful and rootless; also through the HTTP API.
//! Nothing inside the sandbox can reach the policy socket or the engine's. Needs root.

mod common;

use common::internet::Internet;
use common::{e2e, Airlock, Outcome};
use std::io::{BufRead, BufReader};
use std::process::Stdio;

const CA: &str = "/etc/airlock-test-ca.pem";

/// An HTTPS request through the explicit proxy (curl uses the sandbox's HTTPS_PROXY) and one on
/// the transparent path with the sandbox's DNS (Python ignores the proxy variables): both
/// results on one line, e.g. `curl=hello from x.test /a py=hello from x.test /a`.
fn both_paths(path: &str) -> String {
    format!(
        "c=$(curl -sS --max-time 10 --cacert {CA} https://x.test{path} 2>/dev/null || echo DENIED); \
         p=$(python3 -c \"import ssl,urllib.request as u; \
ctx=ssl.create_default_context(cafile='{CA}'); \
print(u.build_opener(u.ProxyHandler({{}}),u.HTTPSHandler(context=ctx)).open('https://x.test{path}',timeout=10).read().decode().strip())\" 2>/dev/null || echo DENIED); \
         echo \"curl=$c py=$p\""
    )
}

/// A keep-alive HTTPS connection on the transparent path: one request, then wait (at most
/// 30 s) for the connection to be closed from outside.
const LONG_LIVED: &str = "import http.client, ssl, select, time
ctx = ssl.create_default_context(cafile='/etc/airlock-test-ca.pem')
c = http.client.HTTPSConnection('x.test', 443, context=ctx, timeout=40)
c.request('GET', '/long')
r = c.getresponse()
print(r.status, r.read().decode().strip(), flush=True)
t = time.time()
ready, _, _ = select.select([c.sock], [], [], 30)
try:
    data = c.sock.recv(1) if ready else b'x'
except Exception:
    data = b''
print('closed' if not data else 'still open', flush=True)
";

struct Setup {
    a: Airlock,
    inet: Internet,
    ro: String,
    _cert_dir: common::TempDir,
    made: std::cell::RefCell<Vec<String>>,
}

/// Whatever happened: the sandboxes made are removed and the engine stopped.
impl Drop for Setup {
    fn drop(&mut self) {
        for name in self.made.borrow().iter() {
            let _ = self.run(&["rm", "--force", name]);
        }
        common::stop_engines_of(&self.a);
    }
}

impl Setup {
    fn new(a: Airlock) -> Setup {
        let inet = Internet::start(&["x.test", "keep.test"], &[]);
        let cert_dir = common::TempDir::new("cert");
        let cert = cert_dir.join("ca.pem");
        std::fs::copy(inet.cert(), &cert).expect("copy cert");
        common::set_mode(&cert, 0o644);
        common::set_mode(cert_dir.path(), 0o755);
        if let Some(u) = &a.user {
            cert_dir.chown_to(u);
        }
        let ro = format!("{}:{CA}", cert.display());
        Setup {
            a,
            inet,
            ro,
            _cert_dir: cert_dir,
            made: Default::default(),
        }
    }

    fn run(&self, args: &[&str]) -> Outcome {
        self.a
            .run_with_env(&[("AIRLOCK_DNS_UPSTREAM", &self.inet.dns)], args)
    }

    fn ok(&self, args: &[&str]) -> Outcome {
        let out = self.run(args);
        assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
        out
    }

    fn exec(&self, name: &str, script: &str) -> String {
        let out = self.run(&["exec", name, "--", "sh", "-c", script]);
        out.stdout.trim().to_string()
    }

    fn create(&self, name: &str) {
        self.made.borrow_mut().push(name.to_string());
        self.ok(&[
            "create",
            name,
            "--workspace",
            "none",
            "--allow",
            "keep.test",
            "--ro",
            &self.ro,
        ]);
        self.ok(&["start", name]);
    }

    fn journal(&self, name: &str) -> Vec<serde_json::Value> {
        let out = self.ok(&["audit", name, "--json"]);
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }
}

fn engine_socket(a: &Airlock) -> std::path::PathBuf {
    let dir = a.dir.join("runtime/airlock");
    std::fs::read_dir(&dir)
        .expect("runtime dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sock"))
        .expect("engine socket")
}

/// The policy socket is there on the host (a socket, 0600), and nothing of it — nor of the
/// sandbox's folder or the engine's socket — exists inside the sandbox.
fn unreachable_from_inside(s: &Setup, name: &str, label: &str) {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = s.a.state_dir().join("sandboxes").join(name);
    let sock = dir.join("policy.sock");
    let meta = std::fs::symlink_metadata(&sock).expect("the policy socket on the host");
    assert!(meta.file_type().is_socket(), "{label}");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{label}");
    let engine = engine_socket(&s.a);
    let script = format!(
        "for p in {sock} {dir} {engine}; do test -e \"$p\" && echo \"present $p\"; done; \
         python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('{sock}')\" 2>&1 | tail -1",
        sock = sock.display(),
        dir = dir.display(),
        engine = engine.display()
    );
    let out = s.exec(name, &script);
    assert!(!out.contains("present"), "{label}: {out}");
    assert!(
        out.contains("FileNotFoundError"),
        "{label}: connecting from inside: {out}"
    );
}

fn allow_then_deny(a: Airlock, label: &str) {
    let s = Setup::new(a);
    let name = format!("live-{label}");
    s.create(&name);
    unreachable_from_inside(&s, &name, label);
    let denied = "curl=DENIED py=DENIED";
    assert_eq!(s.exec(&name, &both_paths("/a")), denied, "{label}: before");
    // The denial is journaled with `airlock allow` as its fix.
    let fix = format!("run `airlock allow {name} x.test");
    let events = s.journal(&name);
    assert!(
        events.iter().any(|e| e["category"] == "egress"
            && e["decision"] == "deny"
            && e["host"] == "x.test"
            && e["fix"].as_str().is_some_and(|f| f.starts_with(&fix))),
        "{label}: {events:#?}"
    );

    let out = s.ok(&["allow", &name, "x.test"]);
    assert_eq!(
        out.stdout,
        format!("allowed x.test in {name} (in force now, and at its later starts)\n"),
        "{label}"
    );
    assert_eq!(
        s.exec(&name, &both_paths("/b")),
        "curl=hello from x.test /b py=hello from x.test /b",
        "{label}: after allow, same sandbox, no restart"
    );

    // A long-lived connection, open while x.test is denied: closed from outside.
    let mut child =
        s.a.command(&["exec", &name, "--", "python3", "-c", LONG_LIVED])
            .env("AIRLOCK_DNS_UPSTREAM", &s.inet.dns)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn exec");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(first, "200 hello from x.test /long", "{label}");
    let out = s.ok(&["deny", &name, "x.test", "--json"]);
    let change: serde_json::Value = serde_json::from_str(&out.stdout).expect("--json");
    assert_eq!(
        (
            &change["op"],
            &change["domain"],
            &change["live"],
            &change["closed"]
        ),
        (
            &serde_json::json!("deny"),
            &serde_json::json!("x.test"),
            &serde_json::json!(true),
            &serde_json::json!(1)
        ),
        "{label}: {change}"
    );
    assert_eq!(change["domains"], serde_json::json!(["keep.test"]));
    let second = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(second, "closed", "{label}: the open connection");
    let _ = child.wait();
    assert_eq!(
        s.exec(&name, &both_paths("/c")),
        denied,
        "{label}: after deny"
    );

    // The policy changes are in the audit journal: what, how, when.
    let events = s.journal(&name);
    let policy: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["category"] == "policy")
        .collect();
    assert_eq!(policy.len(), 2, "{label}: {policy:#?}");
    assert_eq!(
        (&policy[0]["op"], &policy[0]["domain"], &policy[0]["via"]),
        (
            &serde_json::json!("allow"),
            &serde_json::json!("x.test"),
            &serde_json::json!("cli")
        )
    );
    assert_eq!(policy[1]["op"], "deny");
    assert_eq!(policy[1]["closed"], 1);
    assert!(policy.iter().all(|e| e["time"].is_string()));
    assert!(events.iter().any(|e| e["category"] == "egress"
        && e["host"] == "x.test"
        && e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("the open connection was closed"))));
    let human = s.ok(&["audit", &name]);
    assert!(
        human
            .stdout
            .contains("allow x.test via cli (in force at once)"),
        "{}",
        human.stdout
    );

    // Kept across a restart; an allow while stopped is only stored, and in force at start.
    s.ok(&["stop", &name]);
    let out = s.ok(&["allow", &name, "x.test"]);
    assert!(
        out.stdout.contains("its next start has it"),
        "{}",
        out.stdout
    );
    s.ok(&["start", &name]);
    assert_eq!(
        s.exec(&name, &both_paths("/d")),
        "curl=hello from x.test /d py=hello from x.test /d",
        "{label}: after restart"
    );
    let st = s.ok(&["status", &name]);
    assert!(
        st.stdout.contains("allowed:  keep.test, x.test"),
        "{}",
        st.stdout
    );
    // Clear errors.
    let out = s.run(&["allow", &name, "10.0.0.1"]);
    assert_eq!(out.code(), 2, "{}", out.describe());
    assert!(
        out.stderr.contains("hint: give a host name"),
        "{}",
        out.stderr
    );
    let out = s.run(&["allow", "no-such-box", "x.test"]);
    assert_eq!(out.code(), 122, "{}", out.describe());
}

#[test]
fn allow_and_deny_a_running_sandbox_rootful() {
    if !e2e("allow_and_deny_a_running_sandbox_rootful") {
        return;
    }
    allow_then_deny(Airlock::root(), "root");
}

#[test]
fn allow_and_deny_a_running_sandbox_rootless() {
    if !e2e("allow_and_deny_a_running_sandbox_rootless") {
        return;
    }
    let user = common::test_user();
    let bins = common::Bins::owned_by(&user);
    allow_then_deny(Airlock::rootless(&bins), "rootless");
}

/// One request to the engine over its socket (curl): status and JSON body.
fn http(s: &Setup, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let sock = engine_socket(&s.a).display().to_string();
    let url = format!("http://airlock{path}");
    let body = body.to_string();
    let args = [
        "-sS",
        "--unix-socket",
        &sock,
        "-X",
        "POST",
        "-w",
        "\n%{http_code}",
        "-H",
        "Content-Type: application/json",
        "-d",
        &body,
        &url,
    ];
    let out = common::run_with_deadline(s.a.command_with("curl", &args), None, common::DEADLINE);
    let (text, code) = out.stdout.trim_end().rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.parse().unwrap_or(0),
        serde_json::from_str(text).unwrap_or(serde_json::Value::String(text.into())),
    )
}

/// The same sequence through the HTTP API: allow, the connection succeeds; deny, refused
/// again; the journal says `via: api`; the errors have the error body with a hint.
#[test]
fn allow_and_deny_through_the_http_api() {
    if !e2e("allow_and_deny_through_the_http_api") {
        return;
    }
    let s = Setup::new(Airlock::root());
    let name = "live-api";
    s.create(name);
    assert_eq!(s.exec(name, &both_paths("/a")), "curl=DENIED py=DENIED");
    let (code, body) = http(
        &s,
        &format!("/v1/sandboxes/{name}/allow"),
        serde_json::json!({"domain": "x.test"}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (&body["live"], &body["changed"]),
        (&serde_json::json!(true), &serde_json::json!(true))
    );
    assert_eq!(
        s.exec(name, &both_paths("/b")),
        "curl=hello from x.test /b py=hello from x.test /b"
    );
    // POST /v1/actions takes the same action whole.
    let (code, body) = http(
        &s,
        "/v1/actions",
        serde_json::json!({"action": "deny", "name": name, "domain": "x.test"}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"], "policy", "{body}");
    assert_eq!(s.exec(name, &both_paths("/c")), "curl=DENIED py=DENIED");
    let (code, body) = http(
        &s,
        &format!("/v1/sandboxes/{name}/allow"),
        serde_json::json!({"domain": "metadata.google.internal"}),
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["kind"], "refused", "{body}");
    assert!(body["hint"].is_string(), "{body}");
    let (code, body) = http(
        &s,
        "/v1/sandboxes/nope/allow",
        serde_json::json!({"domain": "x.test"}),
    );
    assert_eq!(
        (code, &body["kind"]),
        (404, &serde_json::json!("not_found"))
    );
    let policy: Vec<serde_json::Value> = s
        .journal(name)
        .into_iter()
        .filter(|e| e["category"] == "policy")
        .collect();
    assert_eq!(policy.len(), 2, "{policy:#?}");
    assert!(policy.iter().all(|e| e["via"] == "api"), "{policy:#?}");
    // A sandbox without the filtered network has no allowlist to change.
    s.made.borrow_mut().push("live-off".into());
    s.ok(&["create", "live-off", "--workspace", "none", "--net", "off"]);
    let out = s.run(&["allow", "live-off", "x.test"]);
    assert_eq!(out.code(), 121, "{}", out.describe());
    assert!(
        out.stderr
            .contains("hint: an allowlist applies to --net filtered only"),
        "{}",
        out.describe()
    );
}
