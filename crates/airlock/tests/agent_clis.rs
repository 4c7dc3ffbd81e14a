//! The real agent CLIs (Claude Code, Codex, Gemini CLI — their npm packages, installed by
//! `.ci/run` into $AIRLOCK_AGENT_CLIS) start inside a sandbox through their adapters: `--version`
//! runs, and a prompt runs the adapter's exact headless command line up to the point where it
//! needs a model. No account exists here, so the tests assert the expected failure: without a
//! credential, the CLI's own "not logged in" answer; with the credential the user named (a
//! host variable whose name the user picks, given as a secret), that it arrived inside and the
//! CLI went on to ask the adapter's API domain — which the sandbox allowed by default.
//!
//! Then the real thing: each CLI completes turns against a scripted model (`fixtures/model_api.py`)
//! served under the API's real name by a fake internet of the test's own (`common/internet.rs`,
//! reached through the sandbox's filtered egress; the CLI trusts the test's certificate through
//! its CA variable). The model makes the CLI run its own shell tool inside the sandbox: git
//! config, write a file, commit, `report done`. A second prompt must resume the same
//! conversation (the model sees the first task in the second request), `fetch` brings both
//! commits home, and no turn produces a `blocked` event. Rootful and rootless.

mod common;
use common::work::EngineGuard;

use common::internet::Internet;
use common::{e2e, wait_until, Airlock, Bins};
use std::path::{Path, PathBuf};
use std::time::Duration;

const INSIDE: &str = "/opt/agent-clis";

/// Where `.ci/run` installs the CLIs; None (with the reason) when they are missing.
fn clis(bin: &str) -> Result<PathBuf, String> {
    let dir = std::env::var_os("AIRLOCK_AGENT_CLIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/airlock-ci/agent-clis"));
    let exe = dir.join("node_modules/.bin").join(bin);
    if !exe.exists() {
        return Err(format!(
            "{} is missing: `.ci/run` installs @anthropic-ai/claude-code, @openai/codex and \
             @google/gemini-cli there with npm (or point AIRLOCK_AGENT_CLIS at an install)",
            exe.display()
        ));
    }
    if !Path::new("/usr/bin/node").exists() && !Path::new("/usr/local/bin/node").exists() {
        return Err("node is not installed on this host (the CLIs run on the host image)".into());
    }
    Ok(dir)
}

/// Gate: root, and the CLIs installed. Under AIRLOCK_E2E a missing CLI is a failure that says
/// exactly why, never a silent pass.
fn ready(test: &str, bin: &str) -> Option<PathBuf> {
    if !e2e(test) {
        return None;
    }
    match clis(bin) {
        Ok(d) => Some(d),
        Err(why) if std::env::var_os("AIRLOCK_E2E").is_some() => panic!("{test}: {why}"),
        Err(why) => {
            eprintln!("note: {test}: not run: {why}");
            None
        }
    }
}

fn project(dir: &Path) {
    std::fs::write(dir.join("README"), "project\n").expect("readme");
    let out = std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(dir)
        .output()
        .expect("git init");
    assert!(out.status.success(), "{out:?}");
}

struct Case {
    harness: &'static str,
    bin: &'static str,
    version: &'static str,
    /// The variable the adapter's CLI reads its credential from.
    credential: &'static str,
    /// What the CLI says when no credential is there (None: it asks the network first).
    not_logged_in: Option<&'static str>,
    /// The adapter's API domain, allowed by default.
    domain: &'static str,
}

fn up(a: &Airlock, name: &str, c: &Case, dir: &Path, secret: bool) -> common::Outcome {
    let ro = format!("{}:{INSIDE}", dir.display());
    let path = format!("PATH={INSIDE}/node_modules/.bin:/usr/local/bin:/usr/bin:/bin");
    let mut args = vec!["up", name, "--agent", c.harness, "--ro", &ro, "-e", &path];
    let sec = format!("{}=env:HARNESS_TOKEN", c.credential);
    if secret {
        args.extend(["--secret", &sec]);
    }
    a.run_with_env(&[("HARNESS_TOKEN", "airlock-test-credential")], &args)
}

fn real_cli(c: &Case, dir: &Path) {
    let a = Airlock::root();
    let _guard = EngineGuard(&a);
    project(&a.cwd);

    // Without a credential: the CLI's own missing-credentials failure ends the turn unreported.
    if let Some(msg) = c.not_logged_in {
        let name = format!("{}-nocred", c.harness);
        let out = up(&a, &name, c, dir, false);
        assert_eq!(out.code(), 0, "{}: up: {}", c.harness, out.describe());
        let out = a.run(&["exec", &name, "--", c.bin, "--version"]);
        assert!(
            out.code() == 0 && out.stdout.contains(c.version),
            "{}: --version: {}",
            c.harness,
            out.describe()
        );
        let out = a.run(&["prompt", &name, "say hello"]);
        let log = std::fs::read_to_string(
            a.state_dir()
                .join("sandboxes")
                .join(&name)
                .join("agent.log"),
        )
        .unwrap_or_default();
        assert_eq!(
            out.code(),
            4,
            "{}: {}\nagent.log:\n{log}",
            c.harness,
            out.describe()
        );
        assert!(
            log.contains(msg),
            "{}: expected {msg:?} in agent.log:\n{log}",
            c.harness
        );
        let _ = a.run(&["rm", "--force", &name]);
    }

    // With the credential the user named: it arrives inside under the adapter's variable, and
    // the CLI goes on to ask its API (allowed by the adapter's default domains).
    let name = format!("{}-cred", c.harness);
    let out = up(&a, &name, c, dir, true);
    assert_eq!(out.code(), 0, "{}: up: {}", c.harness, out.describe());
    let probe = format!("cat /run/secrets/{}", c.credential);
    let out = a.run(&["exec", &name, "--", "sh", "-c", &probe]);
    // API keys are injected by default (the sandbox holds a placeholder); OAuth tokens are
    // handed over.
    if c.credential.ends_with("_API_KEY") {
        assert!(
            out.stdout.trim().starts_with("airlock-placeholder-"),
            "{}: {}",
            c.harness,
            out.describe()
        );
    } else {
        assert_eq!(
            out.stdout.trim(),
            "airlock-test-credential",
            "{}: {}",
            c.harness,
            out.describe()
        );
    }
    let out = a.run(&["prompt", &name, "say hello", "--no-wait"]);
    assert_eq!(out.code(), 0, "{}: prompt: {}", c.harness, out.describe());
    let net = a
        .state_dir()
        .join("sandboxes")
        .join(&name)
        .join("net.jsonl");
    let asked = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&net).is_ok_and(|j| {
            j.lines()
                .any(|l| l.contains(&format!("\"{}\"", c.domain)) && l.contains("\"allow\""))
        })
    });
    let log = std::fs::read_to_string(
        a.state_dir()
            .join("sandboxes")
            .join(&name)
            .join("agent.log"),
    )
    .unwrap_or_default();
    assert!(
        asked,
        "{}: the CLI never asked {} through the sandbox's egress\nnet.jsonl:\n{}\nagent.log:\n{log}",
        c.harness,
        c.domain,
        std::fs::read_to_string(&net).unwrap_or_default()
    );
    // No model here: whatever the CLI prints next depends on the network of this host.
    let out = a.run(&["rm", "--force", &name]);
    assert_eq!(out.code(), 0, "{}: rm: {}", c.harness, out.describe());
}

#[test]
fn claude_code_runs_through_its_adapter() {
    let Some(dir) = ready("claude_code_runs_through_its_adapter", "claude") else {
        return;
    };
    real_cli(
        &Case {
            harness: "claude",
            bin: "claude",
            version: "Claude Code",
            credential: "CLAUDE_CODE_OAUTH_TOKEN",
            not_logged_in: Some("Not logged in"),
            domain: "api.anthropic.com",
        },
        &dir,
    );
}

#[test]
fn codex_runs_through_its_adapter() {
    let Some(dir) = ready("codex_runs_through_its_adapter", "codex") else {
        return;
    };
    real_cli(
        &Case {
            harness: "codex",
            bin: "codex",
            version: "codex-cli",
            credential: "OPENAI_API_KEY",
            // Codex checks its key only by asking the API (a 401), which needs the internet.
            not_logged_in: None,
            domain: "api.openai.com",
        },
        &dir,
    );
}

#[test]
fn gemini_cli_runs_through_its_adapter() {
    let Some(dir) = ready("gemini_cli_runs_through_its_adapter", "gemini") else {
        return;
    };
    real_cli(
        &Case {
            harness: "gemini",
            bin: "gemini",
            version: ".",
            credential: "GEMINI_API_KEY",
            not_logged_in: Some("GEMINI_API_KEY"),
            domain: "generativelanguage.googleapis.com",
        },
        &dir,
    );
}

/// How one CLI is pointed at the scripted model.
struct Model {
    harness: &'static str,
    /// The credential variable the adapter's CLI reads.
    credential: &'static str,
    /// The API's names, served by the fake internet (allowed by the adapter's default domains).
    names: &'static [&'static str],
    /// Which API of `model_api.py` the CLI speaks.
    api: &'static str,
    /// The CLI's variable(s) for an extra CA certificate (a PEM path).
    ca_vars: &'static [&'static str],
}

const CA_INSIDE: &str = "/etc/airlock-test-ca.pem";

fn git_out(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "safe.directory=*"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn committed_project(a: &Airlock) {
    std::fs::write(a.cwd.join("README"), "project\n").expect("readme");
    git_out(&a.cwd, &["init", "-q", "-b", "main"]);
    git_out(&a.cwd, &["add", "."]);
    git_out(
        &a.cwd,
        &[
            "-c",
            "user.email=t@example.com",
            "-c",
            "user.name=t",
            "commit",
            "-qm",
            "init",
        ],
    );
    if let Some(u) = &a.user {
        a.dir.chown_to(u);
    }
}

/// The text of everything the model API received whose request carries `needle`.
fn requests_with(inet: &Internet, api: &str, needle: &str) -> Vec<String> {
    inet.model_requests()
        .into_iter()
        .filter(|r| r["api"] == api)
        .map(|r| r["body"].to_string())
        .filter(|b| b.contains(needle))
        .collect()
}

fn completes_turns(m: &Model, clis: &Path, a: &Airlock, label: &str) {
    let _guard = EngineGuard(a);
    let inet = Internet::start(m.names, &[]);
    committed_project(a);
    // The certificate, readable by the sandbox user (rootless: the test user's bind source).
    let cert_dir = common::TempDir::new("ca");
    let cert = cert_dir.join("ca.pem");
    std::fs::copy(inet.cert(), &cert).expect("copy cert");
    common::set_mode(&cert, 0o644);
    common::set_mode(cert_dir.path(), 0o755);
    if let Some(u) = &a.user {
        cert_dir.chown_to(u);
    }
    let name = format!("{}-model", m.harness);
    let ro_clis = format!("{}:{INSIDE}", clis.display());
    let ro_ca = format!("{}:{CA_INSIDE}", cert.display());
    let path = format!("PATH={INSIDE}/node_modules/.bin:/usr/local/bin:/usr/bin:/bin");
    let secret = format!("{}=env:HARNESS_TOKEN", m.credential);
    let ca_env: Vec<String> = m
        .ca_vars
        .iter()
        .map(|v| format!("{v}={CA_INSIDE}"))
        .collect();
    let mut args = vec![
        "up", &name, "--agent", m.harness, "--ro", &ro_clis, "--ro", &ro_ca, "-e", &path,
        "--secret", &secret,
    ];
    for e in &ca_env {
        args.extend(["-e", e.as_str()]);
    }
    // The API key is injected: the egress proxy verifies the fake API's certificate with the
    // test CA.
    let upstream_ca = cert.display().to_string();
    let env = [
        ("HARNESS_TOKEN", "airlock-test-credential"),
        ("AIRLOCK_DNS_UPSTREAM", inet.dns.as_str()),
        ("AIRLOCK_UPSTREAM_CA", upstream_ca.as_str()),
    ];
    let diagnose = |what: &str, out: &common::Outcome| {
        let dir = a.state_dir().join("sandboxes").join(&name);
        let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
        let net = std::fs::read_to_string(dir.join("net.jsonl")).unwrap_or_default();
        let reqs: Vec<String> = inet
            .model_requests()
            .iter()
            .map(|r| {
                let mut r = r.clone();
                // The request bodies are long (system prompts, tool schemas): their gist only.
                if let Some(b) = r.get_mut("body") {
                    let keys: Vec<String> = b
                        .as_object()
                        .map(|o| o.keys().cloned().collect())
                        .unwrap_or_default();
                    *b = keys.into();
                }
                r.to_string()
            })
            .collect();
        format!(
            "{label} {}: {what}: {}\n--- agent.log\n{log}\n--- net.jsonl\n{net}\n--- model requests\n{}",
            m.harness,
            out.describe(),
            reqs.join("\n")
        )
    };
    // Each airlock command with the test's environment; a hang fails with the diagnosis.
    let run = |args: &[&str]| {
        let mut cmd = a.command(args);
        cmd.envs(env.iter().copied());
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            common::run_with_deadline(cmd, None, Duration::from_secs(150))
        }));
        match got {
            Ok(out) => out,
            Err(_) => {
                let out = a.run(&["reports", &name]);
                panic!("{}", diagnose(&format!("{args:?} hung"), &out))
            }
        }
    };
    let out = run(&args);
    assert_eq!(out.code(), 0, "{}", diagnose("up", &out));

    // Turn 1: the model has the CLI's shell tool configure git, write, commit and report.
    let out = run(&[
        "prompt",
        &name,
        "AIRLOCK-TASK:one (write one.txt and commit it)",
    ]);
    assert_eq!(out.code(), 0, "{}", diagnose("turn 1", &out));
    assert!(
        out.stdout.contains("turn 1 done: committed one"),
        "{}",
        diagnose("turn 1 report", &out)
    );
    // The turn is journaled as completed by the time prompt returns.
    let j = run(&["reports", &name, "--json"]);
    assert!(
        j.stdout.lines().any(|l| l.contains("\"turn_completed\"")
            && l.contains("\"turn_id\":1")
            && l.contains("\"reported\":true")),
        "{}",
        diagnose("turn 1 journal", &j)
    );

    // Turn 2: the same conversation, resumed — the model sees task one in the request.
    let out = run(&["prompt", &name, "AIRLOCK-TASK:two (now write two.txt)"]);
    assert_eq!(out.code(), 0, "{}", diagnose("turn 2", &out));
    assert!(
        out.stdout
            .contains("turn 2 done: committed two after resuming task one"),
        "{}",
        diagnose("turn 2 report", &out)
    );
    let resumed = requests_with(&inet, m.api, "AIRLOCK-TASK:two");
    assert!(
        !resumed.is_empty() && resumed.iter().all(|b| b.contains("AIRLOCK-TASK:one")),
        "{}",
        diagnose("turn 2 did not carry the first turn's conversation", &out)
    );

    // Nothing the CLI did was refused by the network policy: no spurious blocked events.
    let j = run(&["reports", &name, "--json"]);
    assert!(
        !j.stdout.lines().any(|l| l.contains("\"kind\":\"blocked\"")),
        "{}",
        diagnose("blocked events", &j)
    );

    // The API got the real key on every request; never the placeholder the CLI held. (Codex's
    // `exec` sends no credential to this API in this setup: only the placeholder check.)
    let posts: Vec<serde_json::Value> = inet
        .model_requests()
        .into_iter()
        .filter(|r| r["api"] == "post")
        .collect();
    assert!(
        !posts.is_empty()
            && posts.iter().all(|r| {
                let h = r["headers"].to_string();
                (m.harness == "codex" || h.contains("airlock-test-credential"))
                    && !h.contains("airlock-placeholder-")
            }),
        "{}",
        diagnose("the API did not get the injected key", &out)
    );

    // Both commits come home.
    let out = run(&["fetch", &name]);
    assert_eq!(out.code(), 0, "{}", diagnose("fetch", &out));
    let log = git_out(
        &a.cwd,
        &["log", "--format=%s %ae", &format!("airlock/{name}")],
    );
    assert!(
        log.starts_with("model: two model@example.com\nmodel: one model@example.com\n"),
        "{label} {}: airlock/{name}: {log}",
        m.harness
    );
    let out = run(&["rm", "--force", &name]);
    assert_eq!(out.code(), 0, "{}", diagnose("rm", &out));
}

const CLAUDE_MODEL: Model = Model {
    harness: "claude",
    credential: "ANTHROPIC_API_KEY",
    names: &["api.anthropic.com"],
    api: "anthropic",
    ca_vars: &["NODE_EXTRA_CA_CERTS"],
};

const CODEX_MODEL: Model = Model {
    harness: "codex",
    credential: "OPENAI_API_KEY",
    names: &["api.openai.com"],
    api: "openai",
    ca_vars: &["CODEX_CA_CERTIFICATE"],
};

const GEMINI_MODEL: Model = Model {
    harness: "gemini",
    credential: "GEMINI_API_KEY",
    names: &["generativelanguage.googleapis.com"],
    api: "gemini",
    ca_vars: &["NODE_EXTRA_CA_CERTS"],
};

fn model_case(test: &str, bin: &str, m: &Model, rootless: bool) {
    let Some(dir) = ready(test, bin) else {
        return;
    };
    if rootless {
        let bins = Bins::owned_by(&common::test_user());
        completes_turns(m, &dir, &Airlock::rootless(&bins), "rootless");
    } else {
        completes_turns(m, &dir, &Airlock::root(), "rootful");
    }
}

#[test]
fn claude_code_completes_turns_with_a_scripted_model_rootful() {
    model_case(
        "claude_code_completes_turns_with_a_scripted_model_rootful",
        "claude",
        &CLAUDE_MODEL,
        false,
    );
}

#[test]
fn claude_code_completes_turns_with_a_scripted_model_rootless() {
    model_case(
        "claude_code_completes_turns_with_a_scripted_model_rootless",
        "claude",
        &CLAUDE_MODEL,
        true,
    );
}

#[test]
fn codex_completes_turns_with_a_scripted_model_rootful() {
    model_case(
        "codex_completes_turns_with_a_scripted_model_rootful",
        "codex",
        &CODEX_MODEL,
        false,
    );
}

#[test]
fn codex_completes_turns_with_a_scripted_model_rootless() {
    model_case(
        "codex_completes_turns_with_a_scripted_model_rootless",
        "codex",
        &CODEX_MODEL,
        true,
    );
}

#[test]
fn gemini_cli_completes_turns_with_a_scripted_model_rootful() {
    model_case(
        "gemini_cli_completes_turns_with_a_scripted_model_rootful",
        "gemini",
        &GEMINI_MODEL,
        false,
    );
}

#[test]
fn gemini_cli_completes_turns_with_a_scripted_model_rootless() {
    model_case(
        "gemini_cli_completes_turns_with_a_scripted_model_rootless",
        "gemini",
        &GEMINI_MODEL,
        true,
    );
}
