//! The agent tools: agent mode (`up` with an agent, `prompt`, `reports`: actions in the typed
//! child, the journal streamed as events) and the work-return actions (`diff`, `fetch`: the
//! engine's own, through its API).

use super::args::{NameArgs, NetArg, ProfileArg, WorkspaceArg};
use super::bounded::Bounded;
use super::call::{action_failed, check_name, parse, policy, project_dir, tri, Call, Events};
use super::runner::Ended;
use super::{tool_error, tool_ok};
use airlock_agent::journal;
use airlock_engine::action::{Action, ActionData, StreamEnd, UpRequest};
use airlock_model::agent::protocol::JournalEntry;
use airlock_work::ops::PatchForm;
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

fn turn_secs(secs: Option<u64>) -> Result<u64, CallToolResult> {
    match secs.unwrap_or(1800) {
        s @ 1..=3600 => Ok(s),
        s => Err(tool_error(format!(
            "timeout_seconds {s} is out of range (1-3600)"
        ))),
    }
}

/// The journal's lines as `airlock prompt` and `airlock reports` show them (bounded, head and
/// tail kept); each also progress.
struct Reports(Bounded);

impl Events for Reports {
    fn event(&mut self, event: Value) -> Vec<String> {
        let line = match serde_json::from_value::<JournalEntry>(event.clone()) {
            Ok(e) => journal::render(&e),
            Err(_) => event.as_str().map(str::to_owned),
        };
        let Some(line) = line else { return Vec::new() };
        self.0.push(format!("{line}\n").as_bytes());
        vec![line]
    }
}

/// A turn's end as the tool's answer (`prompt`; `up` with a first prompt).
fn turn_result(tool: &str, ended: Ended, reports: Reports, secs: u64) -> CallToolResult {
    let text = reports.0.render();
    let end = match ended {
        Ended::Answer(Ok(ActionData::Ended(end))) => end,
        Ended::Answer(Ok(other)) => {
            return tool_error(format!(
                "{tool}: internal: an answer of another kind: {other:?}"
            ))
        }
        Ended::Answer(Err(e)) => {
            let mut r = action_failed(tool, &e);
            if let Some(rmcp::model::ContentBlock::Text(t)) = r.content.first_mut() {
                t.text.push_str(&format!("\nreports:\n{text}"));
            }
            return r;
        }
        Ended::TimedOut => {
            return tool_error(format!(
                "{tool}: the turn did not end within {secs}s; the agent was interrupted. Reports \
                 so far:\n{text}"
            ))
        }
        Ended::Cancelled => return tool_error(format!("{tool}: cancelled")),
    };
    // How the turn ended, as `airlock prompt`'s exit code says.
    let StreamEnd { exit, .. } = end;
    let status = match exit {
        0 => "done",
        airlock_model::exit::AGENT_BLOCKED => "blocked",
        airlock_model::exit::AGENT_UNREPORTED => "ended-unreported",
        _ => "unknown",
    };
    tool_ok(
        text.clone(),
        json!({
            "exit_code": exit,
            "status": status,
            "reports": text,
            "truncated": reports.0.cut(),
        }),
    )
}

/// A turn: the prompt sent, its reports streamed until it ends.
async fn turn(c: &Call, tool: &str, name: String, text: String, secs: u64) -> CallToolResult {
    let action = Action::Prompt {
        name,
        text,
        wait: true,
    };
    let limit = Duration::from_secs(secs);
    let reports = Reports(Bounded::new(256 * 1024));
    let (ended, reports) = tri!(c.act(tool, action, limit, 64 * 1024, true, reports).await);
    turn_result(tool, ended, reports, secs)
}

pub async fn start(c: Call, v: Value) -> CallToolResult {
    let a: StartArgs = tri!(parse("agent_start", v));
    tri!(check_name(&a.name));
    let secs = tri!(turn_secs(a.timeout_seconds));
    let p = super::args::Policy {
        profile: a.profile,
        network: a.network,
        allow_domains: a.allow_domains.clone(),
        workspace: None::<WorkspaceArg>,
        ..Default::default()
    };
    let action = Action::Up(UpRequest {
        name: a.name.clone(),
        dir: tri!(project_dir()),
        agent: a.harness.map(|h| h.as_str().to_owned()),
        new: false,
        start: true,
        policy: tri!(policy(&p, &c.opts)),
    });
    let up = Duration::from_secs(secs);
    tri!(c.child("agent_start", action, up, 64 * 1024).await);
    match a.prompt {
        Some(p) => turn(&c, "agent_start", a.name, p, secs).await,
        None => {
            let text = format!("{} running\n", a.name);
            tool_ok(
                text.clone(),
                json!({ "exit_code": 0, "status": "no turn", "reports": text, "truncated": null }),
            )
        }
    }
}

pub async fn prompt(c: Call, v: Value) -> CallToolResult {
    let a: PromptArgs = tri!(parse("agent_prompt", v));
    tri!(check_name(&a.name));
    if a.prompt.trim().is_empty() {
        return tool_error("agent_prompt: the prompt is empty");
    }
    let secs = tri!(turn_secs(a.timeout_seconds));
    turn(&c, "agent_prompt", a.name, a.prompt, secs).await
}

pub async fn reports(c: Call, v: Value) -> CallToolResult {
    let a: NameArgs = tri!(parse("agent_reports", v));
    tri!(check_name(&a.name));
    let action = Action::Reports {
        name: a.name,
        follow: false,
    };
    let limit = Duration::from_secs(50);
    let reports = Reports(Bounded::new(256 * 1024));
    let (ended, reports) = tri!(
        c.act("agent_reports", action, limit, 64 * 1024, false, reports)
            .await
    );
    match ended {
        Ended::Answer(Ok(_)) => {}
        Ended::Answer(Err(e)) => return action_failed("agent_reports", &e),
        _ => return tool_error("agent_reports: did not finish within 50s"),
    }
    let text = reports.0.render();
    tool_ok(
        text.clone(),
        json!({ "reports": text, "truncated": reports.0.cut() }),
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

/// The engine's diff of a sandbox's branch (with its patch text, if asked), as JSON.
async fn diff_of(
    c: &Call,
    tool: &str,
    name: &str,
    patch: Option<PatchForm>,
) -> Result<Value, CallToolResult> {
    let action = Action::Diff {
        name: name.to_owned(),
        patch,
    };
    match c.engine(tool, action, Duration::from_secs(60)).await? {
        ActionData::Diff(d) => Ok(serde_json::to_value(&d).unwrap_or_default()),
        _ => Err(tool_error(format!(
            "{tool}: internal: an answer of another kind"
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
    let form = if a.stat == Some(true) {
        PatchForm::Stat
    } else {
        PatchForm::Full
    };
    let mut summary = tri!(diff_of(&c, "agent_diff", &a.name, Some(form)).await);
    let mut patch = Bounded::new(limit);
    if let Some(obj) = summary.as_object_mut() {
        let text = obj.remove("patch");
        patch.push(
            text.as_ref()
                .and_then(Value::as_str)
                .unwrap_or("")
                .as_bytes(),
        );
    }
    let text = patch.render();
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
    structured["diff_truncated"] = json!(patch.cut());
    tool_ok(shown, structured)
}

pub async fn fetch(c: Call, v: Value) -> CallToolResult {
    let a: NameArgs = tri!(parse("agent_fetch", v));
    tri!(check_name(&a.name));
    // Never accept or force: accepting gated changes, or replacing a diverged host branch,
    // is a human's decision, made at the CLI.
    let action = Action::Fetch {
        name: a.name.clone(),
        accept: false,
        force: false,
    };
    let f = match c
        .engine("agent_fetch", action, Duration::from_secs(290))
        .await
    {
        Ok(ActionData::Fetched(f)) => f,
        Ok(_) => return tool_error("agent_fetch: internal: an answer of another kind"),
        Err(e) => {
            let gated = e
                .structured_content
                .as_ref()
                .is_some_and(|s| s["error"]["kind"] == "needs_review");
            if !gated {
                return e;
            }
            // Held by the review gate: what it flags, for a human to review.
            let d = tri!(diff_of(&c, "agent_fetch", &a.name, None).await);
            let v = json!({
                "name": a.name, "branch": d["branch"], "fetched": false,
                "needs_accept": true, "findings": d["findings"],
            });
            return tool_ok(
                format!(
                    "NOT fetched: the review gate flagged these changes on {}; a human must \
                     review them and run `airlock fetch {} --accept`:\n{}",
                    v["branch"].as_str().unwrap_or("the branch"),
                    a.name,
                    findings_text(&v["findings"])
                ),
                v,
            );
        }
    };
    let v = json!({
        "name": f.name, "branch": f.branch, "fetched": f.fetched, "tip": f.tip,
        "repository": f.repository, "findings": f.findings,
    });
    tool_ok(
        format!(
            "{} {} into {} (tip {})",
            if f.fetched {
                "fetched"
            } else {
                "already up to date:"
            },
            f.branch,
            f.repository.display(),
            f.tip,
        ),
        v,
    )
}
