//! The tool table (names, descriptions, schemas, annotations, time bounds) and the sandbox
//! tools. Each handler validates its arguments, makes them an [`Action`] and renders its
//! answer: the engine's own actions through its API, the rest in the typed child.

use super::args::*;
use super::bounded::Bounded;
use super::call::{action_failed, check_name, parse, policy, project_dir, tri, Call, Events};
use super::runner::Ended;
use super::{agent, explain, tool_error, tool_ok};
use airlock_engine::action::{
    Action, ActionData, Encoding as ActionEncoding, ExecRequest, RunRequest, UpRequest,
};
use rmcp::handler::server::common::schema_for_type;
use rmcp::model::{CallToolResult, JsonObject, Tool, ToolAnnotations};
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

type Fut = Pin<Box<dyn Future<Output = CallToolResult> + Send>>;

/// One tool.
pub struct Def {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub schema: fn() -> Arc<JsonObject>,
    /// Reads only: safe to auto-approve.
    pub read_only: bool,
    /// May destroy state (meaningful when not read-only).
    pub destructive: bool,
    pub idempotent: bool,
    /// The longest the tool may take (the server gives up a little after).
    pub max_secs: u64,
    pub run: fn(Call, Value) -> Fut,
}

const MAX_TIMEOUT: u64 = 3600;
const LIFECYCLE_SECS: u64 = 120;
const FILE_SECS: u64 = 60;

pub static TOOLS: &[Def] = &[
    Def {
        name: "sandbox_run",
        title: "Run a command in a fresh sandbox",
        description: "Run one command in a fresh, isolated, disposable sandbox (the project \
            directory appears copy-on-write at /workspace; nothing reaches the host), and return \
            its exit code and output. Network is filtered to allowlisted domains by default.",
        schema: schema_for_type::<RunArgs>,
        read_only: false,
        destructive: false,
        idempotent: false,
        max_secs: MAX_TIMEOUT + 30,
        run: |c, v| Box::pin(sandbox_run(c, v)),
    },
    Def {
        name: "sandbox_create",
        title: "Create a named sandbox",
        description: "Create a named, persistent sandbox of the project directory (and start it \
            unless start is false). Use sandbox_exec and sandbox_file_* on it; it keeps its \
            changes until sandbox_remove.",
        schema: schema_for_type::<CreateArgs>,
        read_only: false,
        destructive: false,
        idempotent: false,
        max_secs: LIFECYCLE_SECS * 2,
        run: |c, v| Box::pin(sandbox_create(c, v)),
    },
    Def {
        name: "sandbox_exec",
        title: "Run a command in a running sandbox",
        description: "Run a command in a running named sandbox and return its exit code and \
            output (stdout and stderr bounded: head and tail kept).",
        schema: schema_for_type::<ExecArgs>,
        read_only: false,
        destructive: true,
        idempotent: false,
        max_secs: MAX_TIMEOUT + 30,
        run: |c, v| Box::pin(sandbox_exec(c, v)),
    },
    Def {
        name: "sandbox_list",
        title: "List sandboxes",
        description: "List the named sandboxes with their state, profile and backend.",
        schema: schema_for_type::<NoArgs>,
        read_only: true,
        destructive: false,
        idempotent: true,
        max_secs: 60,
        run: |c, v| Box::pin(sandbox_list(c, v)),
    },
    Def {
        name: "sandbox_status",
        title: "Show a sandbox's status",
        description: "A named sandbox's state, policy (network, allowed domains, workspace, \
            limits), uptime, live resource use and last error.",
        schema: schema_for_type::<NameArgs>,
        read_only: true,
        destructive: false,
        idempotent: true,
        max_secs: 60,
        run: |c, v| Box::pin(sandbox_status(c, v)),
    },
    Def {
        name: "sandbox_start",
        title: "Start a sandbox",
        description: "Start a stopped (or failed) named sandbox.",
        schema: schema_for_type::<NameArgs>,
        read_only: false,
        destructive: false,
        idempotent: false,
        max_secs: LIFECYCLE_SECS,
        run: |c, v| Box::pin(sandbox_start(c, v)),
    },
    Def {
        name: "sandbox_stop",
        title: "Stop a sandbox",
        description: "Stop a running named sandbox (SIGTERM to everything inside, SIGKILL after \
            the grace period). Its files are kept.",
        schema: schema_for_type::<StopArgs>,
        read_only: false,
        destructive: true,
        idempotent: true,
        max_secs: LIFECYCLE_SECS + 300,
        run: |c, v| Box::pin(sandbox_stop(c, v)),
    },
    Def {
        name: "sandbox_remove",
        title: "Remove a sandbox",
        description: "Remove a named sandbox and everything it kept (force: stop it first if it \
            is running).",
        schema: schema_for_type::<RemoveArgs>,
        read_only: false,
        destructive: true,
        idempotent: false,
        max_secs: LIFECYCLE_SECS,
        run: |c, v| Box::pin(sandbox_remove(c, v)),
    },
    Def {
        name: "sandbox_allow",
        title: "Allow a domain in a sandbox",
        description: "Allow a domain (and optionally a port) in a named sandbox's egress \
            allowlist (filtered network): in force at once while it runs, no restart, and kept \
            for its later starts. Use it when a `blocked` report or a denial names a domain \
            the work needs. Journaled in the sandbox's audit journal.",
        schema: schema_for_type::<AllowArgs>,
        read_only: false,
        destructive: false,
        idempotent: true,
        max_secs: FILE_SECS,
        run: |c, v| Box::pin(sandbox_allow(c, v)),
    },
    Def {
        name: "sandbox_deny",
        title: "Deny a domain in a sandbox",
        description: "Take a domain out of a named sandbox's egress allowlist: new connections \
            and DNS answers for it are refused at once, and open connections to it are closed. \
            Journaled in the sandbox's audit journal.",
        schema: schema_for_type::<DenyArgs>,
        read_only: false,
        destructive: true,
        idempotent: true,
        max_secs: FILE_SECS,
        run: |c, v| Box::pin(sandbox_deny(c, v)),
    },
    Def {
        name: "sandbox_file_read",
        title: "Read a file in a sandbox",
        description: "Read a file (or list a directory) inside a running named sandbox, as the \
            sandbox sees it. Paths are relative to /workspace or absolute under /workspace, \
            /tmp, /home/agent, /root; `..` and symlinks leading outside are refused.",
        schema: schema_for_type::<FileReadArgs>,
        read_only: true,
        destructive: false,
        idempotent: true,
        max_secs: FILE_SECS,
        run: |c, v| Box::pin(file_read(c, v)),
    },
    Def {
        name: "sandbox_file_write",
        title: "Write a file in a sandbox",
        description: "Write (or append to) a file inside a running named sandbox, with the \
            sandbox's own permissions. Same path rules as sandbox_file_read; writing through a \
            symlink is refused; the workspace's agent configuration and git internals are \
            read-only.",
        schema: schema_for_type::<FileWriteArgs>,
        read_only: false,
        destructive: true,
        idempotent: true,
        max_secs: FILE_SECS,
        run: |c, v| Box::pin(file_write(c, v)),
    },
    Def {
        name: "policy_explain",
        title: "Explain a policy decision",
        description: "Explain whether a connection (domain/port), a path access (read/write) \
            or a system call would be allowed in a sandbox, why, and which configuration line or \
            option would allow it (or that nothing can: the security floor). Uses the policy \
            of an existing sandbox or of a new one with the given options.",
        schema: schema_for_type::<ExplainArgs>,
        read_only: true,
        destructive: false,
        idempotent: true,
        max_secs: 30,
        run: |c, v| Box::pin(explain::run(c, v)),
    },
    Def {
        name: "agent_start",
        title: "Start a sandboxed coding agent",
        description: "Create (or start) a named sandbox running a coding agent (claude, codex, \
            gemini) on the project, optionally with a first prompt; returns its reports.",
        schema: schema_for_type::<agent::StartArgs>,
        read_only: false,
        destructive: false,
        idempotent: false,
        max_secs: MAX_TIMEOUT + 60,
        run: |c, v| Box::pin(agent::start(c, v)),
    },
    Def {
        name: "agent_prompt",
        title: "Prompt a sandboxed agent",
        description: "Send a directive to the agent in a named sandbox and wait for the turn to \
            end (done or blocked); returns the turn's reports. Progress notifications stream \
            the reports while it works.",
        schema: schema_for_type::<agent::PromptArgs>,
        read_only: false,
        destructive: false,
        idempotent: false,
        max_secs: MAX_TIMEOUT + 60,
        run: |c, v| Box::pin(agent::prompt(c, v)),
    },
    Def {
        name: "agent_reports",
        title: "Read an agent's reports",
        description: "The report journal of the agent in a named sandbox (working, done, \
            blocked, info).",
        schema: schema_for_type::<NameArgs>,
        read_only: true,
        destructive: false,
        idempotent: true,
        max_secs: 60,
        run: |c, v| Box::pin(agent::reports(c, v)),
    },
    Def {
        name: "agent_diff",
        title: "Diff an agent's branch",
        description: "What the sandbox's branch airlock/NAME changes, against where it started.",
        schema: schema_for_type::<agent::DiffArgs>,
        read_only: true,
        destructive: false,
        idempotent: true,
        max_secs: 120,
        run: |c, v| Box::pin(agent::diff(c, v)),
    },
    Def {
        name: "agent_fetch",
        title: "Fetch an agent's branch",
        description: "Bring the sandbox's branch airlock/NAME into the host repository. Review \
            gated: when the branch touches CI workflows, agent configuration, git attributes, \
            hooks, symlinks leaving the tree or executable bits, nothing is fetched and the \
            flagged paths are returned for a human to review.",
        schema: schema_for_type::<NameArgs>,
        read_only: false,
        destructive: false,
        idempotent: true,
        max_secs: 300,
        run: |c, v| Box::pin(agent::fetch(c, v)),
    },
];

pub fn find(name: &str) -> Option<&'static Def> {
    TOOLS.iter().find(|d| d.name == name)
}

pub fn names() -> Vec<&'static str> {
    TOOLS.iter().map(|d| d.name).collect()
}

pub fn list() -> Vec<Tool> {
    TOOLS
        .iter()
        .map(|d| {
            let mut t = Tool::new(d.name, d.description, (d.schema)());
            t.title = Some(d.title.to_string());
            let mut a = ToolAnnotations::with_title(d.title)
                .read_only(d.read_only)
                .open_world(false);
            if !d.read_only {
                a = a.destructive(d.destructive).idempotent(d.idempotent);
            }
            t.annotations = Some(a);
            t
        })
        .collect()
}

fn check_command(cmd: &[String]) -> Result<(), CallToolResult> {
    match cmd.first() {
        None => Err(tool_error(
            "command is empty: give the argv, e.g. [\"ls\", \"-la\"]",
        )),
        Some(c) if c.is_empty() => Err(tool_error("command[0] is empty")),
        Some(_) if cmd.iter().any(|a| a.contains('\0')) => {
            Err(tool_error("command arguments cannot contain NUL bytes"))
        }
        Some(_) => Ok(()),
    }
}

fn check_env(env: &std::collections::BTreeMap<String, String>) -> Result<(), CallToolResult> {
    for (k, v) in env {
        let ok = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok || v.contains('\0') {
            return Err(tool_error(format!(
                "invalid environment variable {k:?}: names are [A-Za-z_][A-Za-z0-9_]*, values \
                 without NUL"
            )));
        }
    }
    Ok(())
}

/// The timeout a call asked for, within bounds.
fn timeout(secs: Option<u64>, default: u64) -> Result<u64, CallToolResult> {
    match secs.unwrap_or(default) {
        s @ 1..=MAX_TIMEOUT => Ok(s),
        s => Err(tool_error(format!(
            "timeout_seconds {s} is out of range (1-{MAX_TIMEOUT})"
        ))),
    }
}

fn output_limit(bytes: Option<usize>) -> Result<usize, CallToolResult> {
    match bytes.unwrap_or(32 * 1024) {
        b @ 1024..=1_048_576 => Ok(b),
        b => Err(tool_error(format!(
            "max_output_bytes {b} is out of range (1024-1048576)"
        ))),
    }
}

/// A run's or an exec's output events: the command's stdout and stderr, bounded (head and
/// tail kept); each complete stdout line is also progress.
pub struct Output {
    stdout: Bounded,
    stderr: Bounded,
    partial: Vec<u8>,
}

impl Output {
    fn new(limit: usize) -> Output {
        Output {
            stdout: Bounded::new(limit),
            stderr: Bounded::new(limit),
            partial: Vec::new(),
        }
    }
}

impl Events for Output {
    fn event(&mut self, event: Value) -> Vec<String> {
        let data = event["data"].as_str().unwrap_or_default().as_bytes();
        if event["stream"] == "stderr" {
            self.stderr.push(data);
            return Vec::new();
        }
        if event["stream"] != "stdout" {
            return Vec::new();
        }
        self.stdout.push(data);
        self.partial.extend_from_slice(data);
        let mut lines = Vec::new();
        while let Some(i) = self.partial.iter().position(|c| *c == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            lines.push(String::from_utf8_lossy(&line).trim_end().to_string());
        }
        // A line longer than this is passed on in pieces.
        if self.partial.len() > 64 * 1024 {
            lines.push(String::from_utf8_lossy(&self.partial).into_owned());
            self.partial.clear();
        }
        lines
    }
}

/// A command's result: exit code and bounded output, as text and structured.
fn command_result(out: Output, code: i32) -> CallToolResult {
    let stderr = out.stderr.render();
    let timed_out =
        code == airlock_model::exit::TIMEOUT && stderr.contains("airlock: killed: timeout");
    let stdout = out.stdout.render();
    let mut text = format!(
        "exit code {code}{}\n",
        if timed_out { " (timed out)" } else { "" }
    );
    for (label, body) in [("stdout", &stdout), ("stderr", &stderr)] {
        if !body.is_empty() {
            text.push_str(&format!("\n--- {label} ---\n{body}"));
            if !body.ends_with('\n') {
                text.push('\n');
            }
        }
    }
    tool_ok(
        text,
        json!({
            "exit_code": code,
            "timed_out": timed_out,
            "stdout": stdout,
            "stderr": stderr,
            "stdout_truncated": out.stdout.cut(),
            "stderr_truncated": out.stderr.cut(),
        }),
    )
}

/// A streamed command's end as the tool's answer (a timeout or a cancellation as errors).
fn command_end(tool: &str, ended: Ended, out: Output, secs: u64) -> CallToolResult {
    match ended {
        Ended::Answer(Ok(ActionData::Ended(end))) => command_result(out, end.exit),
        Ended::Answer(Ok(other)) => tool_error(format!(
            "{tool}: internal: an answer of another kind: {other:?}"
        )),
        Ended::Answer(Err(e)) => action_failed(tool, &e),
        Ended::TimedOut => tool_error(format!("{tool}: did not finish within {secs}s; stopped")),
        Ended::Cancelled => tool_error(format!("{tool}: cancelled")),
    }
}

async fn sandbox_run(c: Call, v: Value) -> CallToolResult {
    let a: RunArgs = tri!(parse("sandbox_run", v));
    tri!(check_command(&a.command));
    let secs = tri!(timeout(a.timeout_seconds, 120));
    let limit = tri!(output_limit(a.max_output_bytes));
    let policy = tri!(policy(&a.policy(), &c.opts));
    tri!(check_env(&a.env));
    let request = RunRequest {
        dir: tri!(project_dir()),
        command: ExecRequest {
            argv: a.command,
            env: a.env,
            workdir: a.workdir,
            stdin: a.stdin,
        },
        timeout_secs: Some(secs),
        policy,
    };
    // The run's own timeout ends the command (exit 124); this bound is for airlock itself.
    let (ended, out) = tri!(
        c.act(
            "sandbox_run",
            Action::Run(request),
            Duration::from_secs(secs + 20),
            64 * 1024,
            true,
            Output::new(limit)
        )
        .await
    );
    command_end("sandbox_run", ended, out, secs + 20)
}

async fn sandbox_exec(c: Call, v: Value) -> CallToolResult {
    let a: ExecArgs = tri!(parse("sandbox_exec", v));
    tri!(check_name(&a.name));
    tri!(check_command(&a.command));
    let secs = tri!(timeout(a.timeout_seconds, 120));
    let limit = tri!(output_limit(a.max_output_bytes));
    tri!(check_env(&a.env));
    let action = Action::Exec {
        name: a.name,
        request: ExecRequest {
            argv: a.command,
            env: a.env,
            workdir: a.workdir,
            stdin: a.stdin,
        },
    };
    let (ended, out) = tri!(
        c.act(
            "sandbox_exec",
            action,
            Duration::from_secs(secs),
            64 * 1024,
            true,
            Output::new(limit)
        )
        .await
    );
    if let Ended::TimedOut = ended {
        let mut r = command_result(out, -1);
        r.is_error = Some(true);
        if let Some(rmcp::model::ContentBlock::Text(t)) = r.content.first_mut() {
            t.text = format!(
                "timed out after {secs}s; the command was stopped\n{}",
                t.text
            );
        }
        return r;
    }
    command_end("sandbox_exec", ended, out, secs)
}

async fn sandbox_list(c: Call, v: Value) -> CallToolResult {
    let _: NoArgs = tri!(parse("sandbox_list", v));
    let data = tri!(
        c.engine("sandbox_list", Action::List, Duration::from_secs(50))
            .await
    );
    let ActionData::Records(list) = data else {
        return tool_error("sandbox_list: internal: an answer of another kind");
    };
    let list = serde_json::to_value(&list).unwrap_or_default();
    let text = serde_json::to_string_pretty(&list).unwrap_or_default();
    tool_ok(text, json!({ "sandboxes": list }))
}

async fn status_of(c: &Call, tool: &str, name: &str) -> Result<Value, CallToolResult> {
    let action = Action::Status {
        name: name.to_owned(),
    };
    match c.engine(tool, action, Duration::from_secs(50)).await? {
        ActionData::Status(st) => Ok(serde_json::to_value(&st).unwrap_or_default()),
        _ => Err(tool_error(format!(
            "{tool}: internal: an answer of another kind"
        ))),
    }
}

async fn sandbox_status(c: Call, v: Value) -> CallToolResult {
    let a: NameArgs = tri!(parse("sandbox_status", v));
    tri!(check_name(&a.name));
    let st = tri!(status_of(&c, "sandbox_status", &a.name).await);
    tool_ok(serde_json::to_string_pretty(&st).unwrap_or_default(), st)
}

/// A lifecycle action in the typed child (as the CLI carries it out); on success the
/// sandbox's status.
async fn lifecycle_act(
    c: &Call,
    tool: &str,
    action: Action,
    name: &str,
    secs: u64,
) -> CallToolResult {
    tri!(
        c.child(tool, action, Duration::from_secs(secs), 64 * 1024)
            .await
    );
    match status_of(c, tool, name).await {
        Ok(st) => {
            let state = st
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            tool_ok(format!("{name}: {state}"), st)
        }
        Err(e) => e,
    }
}

async fn sandbox_start(c: Call, v: Value) -> CallToolResult {
    let a: NameArgs = tri!(parse("sandbox_start", v));
    tri!(check_name(&a.name));
    let action = Action::Start {
        name: a.name.clone(),
        secrets: None,
    };
    lifecycle_act(&c, "sandbox_start", action, &a.name, LIFECYCLE_SECS).await
}

async fn sandbox_create(c: Call, v: Value) -> CallToolResult {
    let a: CreateArgs = tri!(parse("sandbox_create", v));
    tri!(check_name(&a.name));
    let action = Action::Up(UpRequest {
        name: a.name.clone(),
        dir: tri!(project_dir()),
        agent: None,
        new: true,
        start: a.start != Some(false),
        policy: tri!(policy(&a.policy(), &c.opts)),
    });
    lifecycle_act(&c, "sandbox_create", action, &a.name, LIFECYCLE_SECS * 2).await
}

async fn sandbox_stop(c: Call, v: Value) -> CallToolResult {
    let a: StopArgs = tri!(parse("sandbox_stop", v));
    tri!(check_name(&a.name));
    let grace = a.grace_seconds.unwrap_or(10);
    if !(1..=300).contains(&grace) {
        return tool_error(format!("grace_seconds {grace} is out of range (1-300)"));
    }
    let action = Action::Stop {
        name: a.name.clone(),
        grace_ms: Some(grace * 1000),
    };
    lifecycle_act(&c, "sandbox_stop", action, &a.name, grace + LIFECYCLE_SECS).await
}

async fn sandbox_remove(c: Call, v: Value) -> CallToolResult {
    let a: RemoveArgs = tri!(parse("sandbox_remove", v));
    tri!(check_name(&a.name));
    let action = Action::Remove {
        name: a.name.clone(),
        force: a.force == Some(true),
    };
    let limit = Duration::from_secs(LIFECYCLE_SECS);
    tri!(c.child("sandbox_remove", action, limit, 64 * 1024).await);
    tool_ok(
        format!("removed {}", a.name),
        json!({ "name": a.name, "removed": true }),
    )
}

async fn file_read(c: Call, v: Value) -> CallToolResult {
    let a: FileReadArgs = tri!(parse("sandbox_file_read", v));
    tri!(check_name(&a.name));
    let max = a.max_bytes.unwrap_or(256 * 1024);
    let action = Action::FileRead {
        name: a.name,
        path: a.path,
        offset: a.offset,
        max_bytes: a.max_bytes,
    };
    // base64 of the most it reads, and the answer's framing.
    let limit = (max.min(4 << 20) as usize) / 3 * 4 + 64 * 1024;
    let secs = Duration::from_secs(FILE_SECS - 10);
    let data = tri!(c.child("sandbox_file_read", action, secs, limit).await);
    let ActionData::File(f) = data else {
        return tool_error("sandbox_file_read: internal: an answer of another kind");
    };
    if f.kind == "directory" {
        return tool_ok(
            f.content.clone(),
            json!({ "path": f.path, "kind": "directory", "listing": f.content, "entries": f.entries }),
        );
    }
    let size = f.size.unwrap_or(0);
    let note = if f.truncated {
        format!(
            "\n[airlock: returned bytes {}..{} of {size}; read on with offset]",
            f.offset,
            f.offset + f.returned_bytes
        )
    } else {
        String::new()
    };
    let text = if f.encoding == ActionEncoding::Utf8 {
        format!("{}{note}", f.content)
    } else {
        format!(
            "(binary file, {} bytes, base64 in structuredContent.content){note}",
            f.returned_bytes
        )
    };
    let structured = serde_json::to_value(&f).unwrap_or_default();
    tool_ok(text, structured)
}

async fn file_write(c: Call, v: Value) -> CallToolResult {
    let a: FileWriteArgs = tri!(parse("sandbox_file_write", v));
    tri!(check_name(&a.name));
    let encoding = match a.encoding.unwrap_or(Encoding::Utf8) {
        Encoding::Utf8 => ActionEncoding::Utf8,
        Encoding::Base64 => ActionEncoding::Base64,
    };
    let action = Action::FileWrite {
        name: a.name,
        path: a.path,
        content: a.content,
        encoding,
        append: a.append == Some(true),
        create_dirs: a.create_dirs == Some(true),
    };
    let secs = Duration::from_secs(FILE_SECS - 10);
    let data = tri!(c.child("sandbox_file_write", action, secs, 64 * 1024).await);
    let ActionData::Written(w) = data else {
        return tool_error("sandbox_file_write: internal: an answer of another kind");
    };
    tool_ok(
        format!("wrote {} bytes to {}", w.written_bytes, w.path),
        json!({ "path": w.path, "written_bytes": w.written_bytes, "size": w.size }),
    )
}

/// An allow or deny through the engine's API (the engine's own actions); the answer says what
/// is in force.
async fn policy_change(c: Call, tool: &str, action: Action) -> CallToolResult {
    let data = tri!(c.engine(tool, action, Duration::from_secs(50)).await);
    let ActionData::Policy(p) = data else {
        return tool_error(format!("{tool}: internal: an answer of another kind"));
    };
    let target = match p.port {
        Some(port) => format!("{}:{port}", p.domain),
        None => p.domain.clone(),
    };
    let verb = if p.op == "allow" { "allowed" } else { "denied" };
    let when = if p.live {
        "in force now"
    } else {
        "stored; it is not running, its next start has it"
    };
    let text = format!(
        "{verb} {target} in {} ({when}); allowed domains: {}",
        p.name,
        if p.domains.is_empty() {
            "none".to_string()
        } else {
            p.domains.join(", ")
        }
    );
    tool_ok(text, serde_json::to_value(&p).unwrap_or_default())
}

async fn sandbox_allow(c: Call, v: Value) -> CallToolResult {
    let a: AllowArgs = tri!(parse("sandbox_allow", v));
    tri!(check_name(&a.name));
    let action = Action::Allow {
        name: a.name,
        domain: a.domain,
        port: a.port.map(u64::from),
        via: airlock_engine::action::Via::Mcp,
    };
    policy_change(c, "sandbox_allow", action).await
}

async fn sandbox_deny(c: Call, v: Value) -> CallToolResult {
    let a: DenyArgs = tri!(parse("sandbox_deny", v));
    tri!(check_name(&a.name));
    let action = Action::Deny {
        name: a.name,
        domain: a.domain,
        via: airlock_engine::action::Via::Mcp,
    };
    policy_change(c, "sandbox_deny", action).await
}
