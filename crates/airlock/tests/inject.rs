//! Secrets the sandbox can use but never see, end to end over real TLS against the fake
//! internet (common/internet.rs): the sandbox holds a placeholder in $NAME, /run/secrets/NAME
//! and its environment; the bound host receives the real value; the placeholder heading
//! anywhere else is blocked and journaled; Host/SNI mismatches are refused; a client that
//! does not trust the interception fails closed with an explanation. Needs root (network
//! namespaces, veth) for the fake internet.

mod common;

use common::internet::Internet;
use common::{e2e, Airlock, Outcome};

const REAL: &str = "sk-ant-real-value-1234567890abcdef";

/// `run` with KEY bound to api.test (x-api-key), `hosts` allowed, the journal at the returned
/// path; the upstream test CA is trusted by the proxy (`AIRLOCK_UPSTREAM_CA`), and is at
/// /etc/airlock-test-ca.pem inside for talking to hosts that are not intercepted.
fn run(a: &Airlock, inet: &Internet, script: &str) -> (Outcome, Vec<serde_json::Value>, String) {
    let log = a.dir.join(format!("net-{}.jsonl", common::random_hex()));
    let log_s = log.display().to_string();
    let ro = format!("{}:/etc/airlock-test-ca.pem", inet.cert().display());
    let ca = inet.cert().display().to_string();
    let args = [
        "run",
        "--workspace",
        "none",
        "--net",
        "filtered",
        "--net-log",
        &log_s,
        "--ro",
        &ro,
        "--allow",
        "api.test",
        "--allow",
        "other.test",
        "--allow",
        "gh.test",
        "--secret",
        "KEY=env:HOST_KEY;hosts=api.test;header=x-api-key",
        "--secret",
        "GH=env:HOST_GH;hosts=gh.test;bearer",
        "--",
        "sh",
        "-c",
        script,
    ];
    let out = a.run_with_env(
        &[
            ("AIRLOCK_DNS_UPSTREAM", inet.dns.as_str()),
            ("AIRLOCK_UPSTREAM_CA", ca.as_str()),
            ("HOST_KEY", REAL),
            ("HOST_GH", "ghp_real_token_value"),
        ],
        &args,
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let journal = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (out, journal, text)
}

/// The headers the fake internet received for requests to `path`.
fn received(inet: &Internet, path: &str) -> Vec<serde_json::Value> {
    inet.model_requests()
        .into_iter()
        .filter(|r| r["path"] == path)
        .map(|r| r["headers"].clone())
        .collect()
}

const CURL: &str = "curl -sS --max-time 10";

#[test]
fn the_bound_host_gets_the_value_the_sandbox_never_does() {
    if !e2e("the_bound_host_gets_the_value_the_sandbox_never_does") {
        return;
    }
    let inet = Internet::start(&["api.test", "other.test", "gh.test"], &[]);
    let a = Airlock::root();
    // No --cacert: the sandbox's bundle (SSL_CERT_FILE, CURL_CA_BUNDLE, ...) trusts the
    // interception CA.
    let script = format!(
        "echo \"env=$KEY\"; echo \"file=$(cat /run/secrets/KEY)\"; \
         cat /proc/self/environ | tr '\\0' '\\n' | grep '^KEY='; \
         echo \"bundle=$SSL_CERT_FILE $NODE_EXTRA_CA_CERTS\"; \
         {CURL} -H \"x-api-key: $KEY\" https://api.test/v1/models; \
         {CURL} -X POST -H \"x-api-key: $KEY\" -H 'content-type: application/json' -d '{{\"model\":\"m\"}}' https://api.test/v1/messages/count_tokens; echo; \
         {CURL} -H \"Authorization: Bearer $GH\" https://gh.test/user; \
         {CURL} --noproxy '*' -H \"x-api-key: $KEY\" https://api.test/transparent; \
         {CURL} --noproxy '*' --resolve api.test:443:203.0.113.9 -H \"x-api-key: $KEY\" https://api.test/forced"
    );
    let (out, journal, text) = run(&a, &inet, &script);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let lines: Vec<&str> = out.stdout.lines().collect();
    let ph = lines[0].strip_prefix("env=").expect("env line");
    assert!(ph.starts_with("airlock-placeholder-"), "{}", out.describe());
    assert_eq!(lines[1], format!("file={ph}"));
    assert_eq!(lines[2], format!("KEY={ph}"));
    assert_eq!(
        lines[3],
        "bundle=/run/airlock-tls/ca-bundle.pem /run/airlock-tls/ca-bundle.pem"
    );
    assert_eq!(lines[4], "hello from api.test /v1/models");
    assert_eq!(lines[5], "{\"input_tokens\": 10}");
    assert_eq!(lines[6], "hello from gh.test /user");
    // Without the proxy variables (the transparent path), and with a forced address (the host
    // side resolves the name itself: the key cannot be steered to another server).
    assert_eq!(lines[7], "hello from api.test /transparent");
    assert_eq!(lines[8], "hello from api.test /forced");
    assert_eq!(received(&inet, "/transparent")[0]["x-api-key"], REAL);
    assert_eq!(received(&inet, "/forced")[0]["x-api-key"], REAL);
    assert!(!out.stdout.contains(REAL) && !out.stderr.contains(REAL));
    // The server got the real value, in the configured header.
    let got = received(&inet, "/v1/models");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["x-api-key"], REAL);
    assert_eq!(
        received(&inet, "/v1/messages/count_tokens")[0]["x-api-key"],
        REAL
    );
    assert_eq!(
        received(&inet, "/user")[0]["authorization"],
        "Bearer ghp_real_token_value"
    );
    // Journaled (name and place), never the value.
    let inj: Vec<&serde_json::Value> = journal
        .iter()
        .filter(|e| e["injected"].is_array())
        .collect();
    assert_eq!(inj.len(), 5, "{text}");
    assert_eq!(
        inj[0]["injected"],
        serde_json::json!([{"secret": "KEY", "at": "header x-api-key"}])
    );
    assert!(!text.contains(REAL));
    assert!(!text.contains("ghp_real_token_value"));
}

#[test]
fn the_placeholder_anywhere_else_is_blocked_and_explained() {
    if !e2e("the_placeholder_anywhere_else_is_blocked_and_explained") {
        return;
    }
    let inet = Internet::start(&["api.test", "other.test", "gh.test"], &[]);
    let a = Airlock::root();
    let fmt = "-o /dev/null -w '%{http_code}\\n'";
    let script = format!(
        // Plain HTTP to an allowed host, in a header, the path, a body.
        "{CURL} {fmt} -H \"x-leak: $KEY\" http://other.test/a; \
         {CURL} {fmt} \"http://other.test/b?k=$KEY\"; \
         {CURL} {fmt} -d \"k=$KEY\" http://other.test/c; \
         {CURL} {fmt} -H \"x-leak: $KEY\" http://api.test/d; \
         {CURL} {fmt} -H \"Authorization: Bearer $KEY\" https://gh.test/e; \
         {CURL} {fmt} -H 'Host: other.test' -H \"x-api-key: $KEY\" https://api.test/f; \
         {CURL} --cacert /etc/airlock-test-ca.pem -H \"x-api-key: $KEY\" https://api.test/g; echo \"pinned=$?\""
    );
    let (out, journal, text) = run(&a, &inet, &script);
    assert_eq!(
        out.stdout,
        "403\n403\n403\n403\n403\n421\npinned=60\n",
        "{}",
        out.describe()
    );
    for p in ["/a", "/b", "/c", "/d", "/e", "/f", "/g"] {
        assert!(
            received(&inet, p).is_empty()
                && !inet.model_requests().iter().any(|r| r["path"]
                    .as_str()
                    .is_some_and(|x| x.starts_with(&format!("{p}?")))),
            "{p} reached the server"
        );
    }
    let denials: Vec<&str> = journal
        .iter()
        .filter(|e| e["decision"] == "deny")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(
        denials
            .iter()
            .filter(|r| r.contains("placeholder of secret KEY"))
            .count()
            >= 5,
        "{text}"
    );
    assert!(
        denials.iter().any(|r| r.contains("domain fronting")),
        "{text}"
    );
    assert!(
        denials
            .iter()
            .any(|r| r.contains("did not accept airlock's interception certificate")),
        "{text}"
    );
    // The terminal is told too.
    assert!(
        out.stderr
            .contains("did not accept airlock's interception certificate"),
        "{}",
        out.describe()
    );
}

#[test]
fn injection_needs_the_filtered_network_and_an_allowed_host() {
    if !e2e("injection_needs_the_filtered_network_and_an_allowed_host") {
        return;
    }
    let a = Airlock::root();
    let env = [("HOST_KEY", REAL)];
    let secret = "KEY=env:HOST_KEY;hosts=api.test;header=x-api-key";
    let out = a.run_with_env(
        &env,
        &["run", "--net", "off", "--secret", secret, "--", "true"],
    );
    assert_ne!(out.code(), 0);
    assert!(
        out.stderr.contains("needs the filtered network"),
        "{}",
        out.describe()
    );
    let out = a.run_with_env(
        &env,
        &["run", "--net", "filtered", "--secret", secret, "--", "true"],
    );
    assert_ne!(out.code(), 0);
    assert!(
        out.stderr
            .contains("which the network policy does not allow")
            && out.stderr.contains("hint: allow it: --allow api.test"),
        "{}",
        out.describe()
    );
    assert!(!out.stderr.contains(REAL));
    // A named sandbox that could never start is not created.
    let out = a.run_with_env(
        &env,
        &["create", "never", "--net", "off", "--secret", secret],
    );
    assert_eq!(out.code(), 121, "{}", out.describe());
    assert!(
        out.stderr.contains("needs the filtered network"),
        "{}",
        out.describe()
    );
    assert!(!a.state_dir().join("sandboxes").join("never").exists());
    common::stop_engines_of(&a);
}

/// A named sandbox: the secret's source and binding are recorded, never its value; each start
/// gets a new placeholder; `airlock audit` shows lifecycle, egress and injections in one
/// journal (`--json` and human).
#[test]
fn named_sandboxes_inject_and_audit_it() {
    if !e2e("named_sandboxes_inject_and_audit_it") {
        return;
    }
    let inet = Internet::start(&["api.test"], &[]);
    let a = Airlock::root();
    let ca = inet.cert().display().to_string();
    let env = [
        ("AIRLOCK_DNS_UPSTREAM", inet.dns.as_str()),
        ("AIRLOCK_UPSTREAM_CA", ca.as_str()),
        ("HOST_KEY", REAL),
    ];
    let run = |args: &[&str]| a.run_with_env(&env, args);
    let out = run(&[
        "create",
        "injbox",
        "--workspace",
        "none",
        "--allow",
        "api.test",
        "--secret",
        "KEY=env:HOST_KEY;hosts=api.test;header=x-api-key",
    ]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let dir = a.state_dir().join("sandboxes").join("injbox");
    let spec = std::fs::read_to_string(dir.join("spec.json")).unwrap();
    assert!(
        spec.contains("\"inject\"") && !spec.contains(REAL),
        "{spec}"
    );
    let mut placeholders = Vec::new();
    for round in 0..2 {
        assert_eq!(run(&["start", "injbox"]).code(), 0, "round {round}");
        let out = run(&[
            "exec",
            "injbox",
            "--secrets",
            "--",
            "sh",
            "-c",
            &format!("echo $KEY; {CURL} -H \"x-api-key: $KEY\" https://api.test/named{round}"),
        ]);
        assert_eq!(out.code(), 0, "{}", out.describe());
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(
            lines[0].starts_with("airlock-placeholder-"),
            "{}",
            out.describe()
        );
        assert_eq!(lines[1], format!("hello from api.test /named{round}"));
        assert_eq!(
            received(&inet, &format!("/named{round}"))[0]["x-api-key"],
            REAL
        );
        placeholders.push(lines[0].to_string());
        assert_eq!(run(&["stop", "injbox"]).code(), 0);
    }
    assert_ne!(
        placeholders[0], placeholders[1],
        "a new placeholder at each start"
    );
    let out = run(&["audit", "injbox", "--json"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect();
    let cat = |c: &str| events.iter().filter(|e| e["category"] == c).count();
    assert!(cat("lifecycle") >= 6, "{}", out.stdout);
    let injected: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["category"] == "egress" && e["injected"].is_array())
        .collect();
    assert_eq!(injected.len(), 2, "{}", out.stdout);
    let times: Vec<&str> = events.iter().map(|e| e["time"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "oldest first");
    assert!(!out.stdout.contains(REAL));
    let human = run(&["audit", "injbox"]);
    assert!(
        human
            .stdout
            .contains("allow connect api.test:443 — injected KEY (header x-api-key)"),
        "{}",
        human.describe()
    );
    assert!(
        human.stdout.contains("starting -> running"),
        "{}",
        human.stdout
    );
    // Without a name: every sandbox, each line naming its sandbox.
    let all = run(&["audit"]);
    assert!(
        all.stdout.lines().all(|l| l.starts_with("injbox  ")),
        "{}",
        all.stdout
    );
    assert_eq!(run(&["rm", "--force", "injbox"]).code(), 0);
    common::stop_engines_of(&a);
}
