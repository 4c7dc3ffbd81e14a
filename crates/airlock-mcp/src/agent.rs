//! The agent tools: the agent-mode commands (`up --agent`, `prompt`, `reports`) and the
//! work-return commands (`diff`, `fetch`), run as the CLI runs them. A build without one of those
//! commands answers with a tool error naming what is missing, never with a made-up result.

use super::args::{NameArgs, NetArg, ProfileArg, WorkspaceArg};
use super::call::{check_name, parse, policy_flags, tri, Call};
use super::runner::Output;
use super::{tool_error, tool_ok};
use rmcp::model::CallToolResult;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// Which coding agent runs inside.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Harness {
    Claude,
    Codex,
    Gemini,
}

impl Harness {
    fn as_str(self) -> &'static str {
        match self {
            Harness::Claude => "claude",
            Harness::Codex => "codex",
            Harness::Gemini => "gemini",
        }
    }
}

/// `agent_start`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartArgs {
    /// Name of the agent's sandbox (its branch is airlock/NAME).
    pub name: String,
    /// The coding agent to run (default: `[agent] harness` in the project's airlock.toml,
    /// which may also name a custom harness command).
    pub harness: Option<Harness>,
    /// A first directive; the call then waits for that turn like agent_prompt.
    pub prompt: Option<String>,
    /// Policy defaults (default: the project's configuration, else `moderate`).
    pub profile: Option<ProfileArg>,
    /// Network mode (default: from the profile / configuration).
    pub network: Option<NetArg>,
    /// Extra domains to allow in `filtered` mode.
    #[serde(default)]
    pub allow_domains: Vec<String>,
    /// Most seconds to wait for the first turn (1-3600, default 1800).
    pub timeout_seconds: Option<u64>,
}

/// `agent_prompt`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptArgs {
    /// The agent's sandbox.
    pub name: String,
    /// The directive (the conversation's context is kept across prompts).
    pub prompt: String,
    /// Most seconds to wait for the turn to end (1-3600, default 1800).
    pub timeout_seconds: Option<u64>,
}

/// `agent_diff`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiffArgs {
    /// The agent's sandbox.
    pub name: String,
    /// Only the summary of changed files (default false: the full diff, bounded).
    pub stat: Option<bool>,
    /// Bytes of diff returned (1024-1048576, default 65536): head and tail kept.
    pub max_output_bytes: Option<usize>,
}

/// The command a tool needs, when this build of airlock lacks it.
fn missing(out: &Output, command: &str, issue: &str) -> Option<CallToolResult> {
    let err = out.stderr.render();
    (out.code == Some(airlock_model::exit::USAGE)
        && (err.contains("unrecognized subcommand") || err.contains("unexpected argument")))
    .then(|| {
        tool_error(format!(
            "not available: this airlock has no `airlock {command}` yet ({issue}); the MCP tool \
             runs that command and cannot work without it"
        ))
    })
}

fn turn_secs(secs: Option<u64>) -> Result<u64, CallToolResult> {
    match secs.unwrap_or(1800) {
        s @ 1..=3600 => Ok(s),
        s => Err(tool_error(format!(
            "timeout_seconds {s} is out of range (1-3600)"
        ))),
    }
}

/// Run an agent command, streaming its stdout lines (the reports) as progress notifications
/// when the client asked for progress.
async fn streamed(c: &Call, args: Vec<String>, secs: u64) -> Result<Output, CallToolResult> {
    c.airlock_streamed(args, None, Duration::from_secs(secs), 256 * 1024, true)
        .await
}

/// The answer of a turn-running command (`prompt`, `up --agent --prompt`).
fn turn_result(tool: &str, out: Output, secs: u64, turn: bool) -> CallToolResult {
    if out.timed_out {
        return tool_error(format!(
            "{tool}: the turn did not end within {secs}s; the agent was interrupted. Reports so \
             far:\n{}",
            out.stdout.render()
        ));
    }
    if out.cancelled {
        return tool_error(format!("{tool}: cancelled"));
    }
    let reports = out.stdout.render();
    if let Some(e) = out.airlock_error() {
        return tool_error(format!("{tool}: {e}\nreports:\n{reports}"));
    }
    // How the turn ended, as `airlock prompt`'s exit code says.
    let status = match out.code {
        _ if !turn => "no turn",
        Some(0) => "done",
        Some(airlock_model::exit::AGENT_BLOCKED) => "blocked",
        Some(airlock_model::exit::AGENT_UNREPORTED) => "ended-unreported",
        _ => "unknown",
    };
    tool_ok(
        reports.clone(),
        json!({
            "exit_code": out.code,
            "status": status,
            "reports": reports,
            "truncated": out.stdout.cut(),
        }),
    )
}

pub async fn start(c: Call, v: Value) -> CallToolResult {
    let a: StartArgs = tri!(parse("agent_start", v));
    tri!(check_name(&a.name));
    let secs = tri!(turn_secs(a.timeout_seconds));
    let policy = super::args::Policy {
        profile: a.profile,
        network: a.network,
        allow_domains: a.allow_domains.clone(),
        workspace: None::<WorkspaceArg>,
        ..Default::default()
    };
    let mut args = vec!["up".to_string(), a.name.clone()];
    if let Some(h) = a.harness {
        args.push(format!("--agent={}", h.as_str()));
    }
    args.extend(tri!(policy_flags(&policy, &c.opts)));
    match &a.prompt {
        Some(p) => args.push(format!("--prompt={p}")),
        None => args.push("--no-attach".into()),
    }
    let out = tri!(streamed(&c, args, secs).await);
    if let Some(e) = missing(&out, "up --agent", "issue 6, agent mode") {
        return e;
    }
    turn_result("agent_start", out, secs, a.prompt.is_some())
}

pub async fn prompt(c: Call, v: Value) -> CallToolResult {
    let a: PromptArgs = tri!(parse("agent_prompt", v));
    tri!(check_name(&a.name));
    if a.prompt.trim().is_empty() {
        return tool_error("agent_prompt: the prompt is empty");
    }
    let secs = tri!(turn_secs(a.timeout_seconds));
    let args = vec!["prompt".into(), a.name.clone(), "--".into(), a.prompt];
    let out = tri!(streamed(&c, args, secs).await);
    if let Some(e) = missing(&out, "prompt", "issue 6, agent mode") {
        return e;
    }
    turn_result("agent_prompt", out, secs, true)
}

/// A read-style command: bounded output, airlock errors as tool errors.
async fn plain(
    c: &Call,
    tool: &str,
    args: Vec<String>,
    needs: (&str, &str),
    limit: usize,
    secs: u64,
) -> Result<Output, CallToolResult> {
    let out = c
        .airlock(args, None, Duration::from_secs(secs), limit)
        .await?;
    if let Some(e) = missing(&out, needs.0, needs.1) {
        return Err(e);
    }
    if out.timed_out || out.cancelled {
        return Err(tool_error(format!("{tool}: did not finish within {secs}s")));
    }
    Ok(out)
}

pub async fn reports(c: Call, v: Value) -> CallToolResult {
    let a: NameArgs = tri!(parse("agent_reports", v));
    tri!(check_name(&a.name));
    let args = vec!["reports".into(), a.name.clone()];
    let out = tri!(
        plain(
            &c,
            "agent_reports",
            args,
            ("reports", "issue 6, agent mode"),
            256 * 1024,
            50
        )
        .await
    );
    if let Some(e) = out.airlock_error() {
        return tool_error(format!("agent_reports: {e}"));
    }
    let text = out.stdout.render();
    tool_ok(
        text.clone(),
        json!({ "reports": text, "truncated": out.stdout.cut() }),
    )
}

/// The review gate's findings as lines for the model.
fn findings_text(findings: &Value) -> String {
    let mut t = String::new();
    for f in findings.as_array().into_iter().flatten() {
        let path = f["path"]
            .as_str()
            .filter(|p| !p.is_empty())
            .unwrap_or("(branch)");
        t.push_str(&format!(
            "  {} {path}: {}\n",
            f["kind"].as_str().unwrap_or("?"),
            f["detail"].as_str().unwrap_or("")
        ));
    }
    t
}

/// `airlock ARGS --json` of a work command: its JSON answer (also on a non-zero exit, where
/// the command says why in JSON) or a tool error.
async fn work_json(
    c: &Call,
    tool: &str,
    args: Vec<String>,
    secs: u64,
) -> Result<(Option<i32>, Value), CallToolResult> {
    let out = plain(
        c,
        tool,
        args,
        ("diff/fetch", "issue 5, workspaces"),
        4 << 20,
        secs,
    )
    .await?;
    match serde_json::from_str::<Value>(out.stdout.render().trim()) {
        Ok(v) => Ok((out.code, v)),
        Err(_) => Err(tool_error(format!(
            "{tool}: {}",
            out.airlock_error()
                .unwrap_or_else(|| out.stderr.render().trim().to_string())
        ))),
    }
}

pub async fn diff(c: Call, v: Value) -> CallToolResult {
    let a: DiffArgs = tri!(parse("agent_diff", v));
    tri!(check_name(&a.name));
    let limit = match a.max_output_bytes.unwrap_or(64 * 1024) {
        b @ 1024..=1_048_576 => b,
        b => {
            return tool_error(format!(
                "max_output_bytes {b} is out of range (1024-1048576)"
            ))
        }
    };
    let (_, summary) = tri!(
        work_json(
            &c,
            "agent_diff",
            vec!["diff".into(), a.name.clone(), "--json".into()],
            60
        )
        .await
    );
    let mut args = vec!["diff".to_string(), a.name.clone()];
    if a.stat == Some(true) {
        args.push("--stat".into());
    }
    let out = tri!(
        plain(
            &c,
            "agent_diff",
            args,
            ("diff", "issue 5, workspaces"),
            limit,
            60
        )
        .await
    );
    if let Some(e) = out.airlock_error() {
        return tool_error(format!("agent_diff: {e}"));
    }
    let text = out.stdout.render();
    let mut shown = if text.is_empty() {
        "no changes\n".to_string()
    } else {
        text.clone()
    };
    let findings = &summary["findings"];
    if findings.as_array().is_some_and(|f| !f.is_empty()) {
        shown.push_str("\nThe review gate flags (fetch needs a human's --accept):\n");
        shown.push_str(&findings_text(findings));
    }
    let mut structured = summary.clone();
    structured["diff"] = json!(text);
    structured["diff_truncated"] = json!(out.stdout.cut());
    tool_ok(shown, structured)
}

pub async fn fetch(c: Call, v: Value) -> CallToolResult {
    let a: NameArgs = tri!(parse("agent_fetch", v));
    tri!(check_name(&a.name));
    // Never --accept or --force: accepting gated changes, or replacing a diverged host branch,
    // is a human's decision, made at the CLI.
    let args = vec!["fetch".into(), a.name.clone(), "--json".into()];
    let (code, v) = tri!(work_json(&c, "agent_fetch", args, 290).await);
    if v["needs_accept"] == json!(true) {
        return tool_ok(
            format!(
                "NOT fetched: the review gate flagged these changes on {}; a human must review \
                 them and run `airlock fetch {} --accept`:\n{}",
                v["branch"].as_str().unwrap_or("the branch"),
                a.name,
                findings_text(&v["findings"])
            ),
            v,
        );
    }
    if code != Some(0) {
        return tool_error(format!("agent_fetch: airlock exited {code:?}: {v}"));
    }
    tool_ok(
        format!(
            "{} {} into {} (tip {})",
            if v["fetched"] == json!(true) {
                "fetched"
            } else {
                "already up to date:"
            },
            v["branch"].as_str().unwrap_or("?"),
            v["repository"].as_str().unwrap_or("?"),
            v["tip"].as_str().unwrap_or("?"),
        ),
        v,
    )
}
