//! The real agent CLIs (Claude Code, Codex, Gemini CLI — their npm packages, installed by
//! `.ci/run` into $AIRLOCK_AGENT_CLIS) start inside a sandbox through their adapters: `--version`
//! runs, and a prompt runs the adapter's exact headless command line up to the point where it
//! needs a model. No account exists here, so the tests assert the expected failure: without a
//! credential, the CLI's own "not logged in" answer; with the credential the user named (a
//! host variable whose name the user picks, given as a secret), that it arrived inside and the
//! CLI went on to ask the adapter's API domain — which the sandbox allowed by default.

mod common;

use common::{e2e, stop_engines_of, wait_until, Airlock};
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

struct EngineGuard<'a>(&'a Airlock);

impl Drop for EngineGuard<'_> {
    fn drop(&mut self) {
        stop_engines_of(self.0);
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
    assert_eq!(
        out.stdout.trim(),
        "airlock-test-credential",
        "{}: {}",
        c.harness,
        out.describe()
    );
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
