//! The tool table (names, descriptions, schemas, annotations, time bounds) and the sandbox
//! tools. Each handler validates its arguments, then runs the same CLI operation a user would.

use super::args::*;
use super::call::{check_name, parse, policy_flags, tri, Call};
use super::runner::Output;
use super::{agent, explain, tool_error, tool_ok};
use airlock_engine::action::{Action, ActionData, ChildAnswer, Encoding as ActionEncoding};
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
        run: |c, v| Box::pin(lifecycle(c, v, "start")),
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

fn check_env(
    env: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<String>, CallToolResult> {
    let mut out = Vec::new();
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
        out.push(format!("--env={k}={v}"));
    }
    Ok(out)
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

/// A failure of airlock itself (not of the command it ran), as a tool error.
fn airlock_failed(what: &str, out: &Output, timeout_secs: u64) -> Option<CallToolResult> {
    if out.timed_out {
        return Some(tool_error(format!(
            "{what}: did not finish within {timeout_secs}s; stopped"
        )));
    }
    if out.cancelled {
        return Some(tool_error(format!("{what}: cancelled")));
    }
    let code = out.code?;
    out.airlock_error()
        .map(|e| tool_error(format!("{what}: {e}\n(airlock exit code {code})")))
}

/// A command's result: exit code and bounded output, as text and structured.
fn command_result(out: Output) -> CallToolResult {
    let code = out.code.unwrap_or(-1);
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

async fn sandbox_run(c: Call, v: Value) -> CallToolResult {
    let a: RunArgs = tri!(parse("sandbox_run", v));
    tri!(check_command(&a.command));
    let secs = tri!(timeout(a.timeout_seconds, 120));
    let limit = tri!(output_limit(a.max_output_bytes));
    let mut args = vec!["run".to_string()];
    args.extend(tri!(policy_flags(&a.policy(), &c.opts)));
    args.extend(tri!(check_env(&a.env)));
    if let Some(w) = &a.workdir {
        args.push(format!("--workdir={w}"));
    }
    args.push(format!("--timeout={secs}s"));
    args.push("--".into());
    args.extend(a.command);
    let stdin = a.stdin.map(String::into_bytes);
    // airlock's own --timeout ends the command (exit 124); this bound is for airlock itself.
    let out = tri!(
        c.airlock_streamed(args, stdin, Duration::from_secs(secs + 20), limit, true)
            .await
    );
    if let Some(e) = airlock_failed("sandbox_run", &out, secs) {
        return e;
    }
    command_result(out)
}

async fn sandbox_exec(c: Call, v: Value) -> CallToolResult {
    let a: ExecArgs = tri!(parse("sandbox_exec", v));
    tri!(check_name(&a.name));
    tri!(check_command(&a.command));
    let secs = tri!(timeout(a.timeout_seconds, 120));
    let limit = tri!(output_limit(a.max_output_bytes));
    let mut args = vec!["exec".to_string()];
    args.extend(tri!(check_env(&a.env)));
    if let Some(w) = &a.workdir {
        args.push(format!("--workdir={w}"));
    }
    if a.stdin.is_some() {
        args.push("--interactive".into());
    }
    args.extend([a.name.clone(), "--".into()]);
    args.extend(a.command);
    let stdin = a.stdin.map(String::into_bytes);
    let out = tri!(
        c.airlock_streamed(args, stdin, Duration::from_secs(secs), limit, true)
            .await
    );
    if out.timed_out {
        let mut r = command_result(out);
        r.is_error = Some(true);
        if let Some(rmcp::model::ContentBlock::Text(t)) = r.content.first_mut() {
            t.text = format!(
                "timed out after {secs}s; the command was stopped\n{}",
                t.text
            );
        }
        return r;
    }
    if let Some(e) = airlock_failed("sandbox_exec", &out, secs) {
        return e;
    }
    command_result(out)
}

/// `airlock ARGS` whose stdout is JSON.
async fn json_of(c: &Call, what: &str, args: Vec<String>) -> Result<Value, CallToolResult> {
    let out = c
        .airlock(args, None, Duration::from_secs(50), 4 << 20)
        .await?;
    if let Some(e) = airlock_failed(what, &out, 50) {
        return Err(e);
    }
    if out.code != Some(0) {
        return Err(tool_error(format!(
            "{what}: airlock exited {:?}: {}",
            out.code,
            out.stderr.render().trim()
        )));
    }
    let text = out.stdout.render();
    serde_json::from_str(&text)
        .map_err(|e| tool_error(format!("{what}: unreadable answer from airlock: {e}")))
}

async fn sandbox_list(c: Call, v: Value) -> CallToolResult {
    let _: NoArgs = tri!(parse("sandbox_list", v));
    let list = tri!(json_of(&c, "sandbox_list", vec!["list".into(), "--json".into()]).await);
    let text = serde_json::to_string_pretty(&list).unwrap_or_default();
    tool_ok(text, json!({ "sandboxes": list }))
}

async fn status_of(c: &Call, name: &str) -> Result<Value, CallToolResult> {
    json_of(
        c,
        "sandbox_status",
        vec!["status".into(), name.into(), "--json".into()],
    )
    .await
}

async fn sandbox_status(c: Call, v: Value) -> CallToolResult {
    let a: NameArgs = tri!(parse("sandbox_status", v));
    tri!(check_name(&a.name));
    let st = tri!(status_of(&c, &a.name).await);
    tool_ok(serde_json::to_string_pretty(&st).unwrap_or_default(), st)
}

/// Run a lifecycle command; on success answer with the sandbox's status.
async fn lifecycle_cmd(
    c: &Call,
    tool: &str,
    args: Vec<String>,
    name: &str,
    secs: u64,
) -> CallToolResult {
    let out = tri!(
        c.airlock(args, None, Duration::from_secs(secs), 64 * 1024)
            .await
    );
    if let Some(e) = airlock_failed(tool, &out, secs) {
        return e;
    }
    if out.code != Some(0) {
        return tool_error(format!("{tool}: {}", out.stderr.render().trim()));
    }
    match status_of(c, name).await {
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

async fn lifecycle(c: Call, v: Value, verb: &str) -> CallToolResult {
    let tool = format!("sandbox_{verb}");
    let a: NameArgs = tri!(parse(&tool, v));
    tri!(check_name(&a.name));
    lifecycle_cmd(
        &c,
        &tool,
        vec![verb.into(), a.name.clone()],
        &a.name,
        LIFECYCLE_SECS,
    )
    .await
}

async fn sandbox_create(c: Call, v: Value) -> CallToolResult {
    let a: CreateArgs = tri!(parse("sandbox_create", v));
    tri!(check_name(&a.name));
    let mut args = vec!["create".to_string()];
    args.extend(tri!(policy_flags(&a.policy(), &c.opts)));
    args.extend(["--".into(), a.name.clone()]);
    if a.start == Some(false) {
        return lifecycle_cmd(&c, "sandbox_create", args, &a.name, LIFECYCLE_SECS).await;
    }
    let created = lifecycle_cmd(&c, "sandbox_create", args, &a.name, LIFECYCLE_SECS).await;
    if created.is_error == Some(true) {
        return created;
    }
    lifecycle_cmd(
        &c,
        "sandbox_create",
        vec!["start".into(), a.name.clone()],
        &a.name,
        LIFECYCLE_SECS,
    )
    .await
}

async fn sandbox_stop(c: Call, v: Value) -> CallToolResult {
    let a: StopArgs = tri!(parse("sandbox_stop", v));
    tri!(check_name(&a.name));
    let grace = a.grace_seconds.unwrap_or(10);
    if !(1..=300).contains(&grace) {
        return tool_error(format!("grace_seconds {grace} is out of range (1-300)"));
    }
    let args = vec!["stop".into(), format!("--grace={grace}s"), a.name.clone()];
    lifecycle_cmd(&c, "sandbox_stop", args, &a.name, grace + LIFECYCLE_SECS).await
}

async fn sandbox_remove(c: Call, v: Value) -> CallToolResult {
    let a: RemoveArgs = tri!(parse("sandbox_remove", v));
    tri!(check_name(&a.name));
    let mut args = vec!["rm".to_string()];
    if a.force == Some(true) {
        args.push("--force".into());
    }
    args.push(a.name.clone());
    let out = tri!(
        c.airlock(args, None, Duration::from_secs(LIFECYCLE_SECS), 64 * 1024)
            .await
    );
    if let Some(e) = airlock_failed("sandbox_remove", &out, LIFECYCLE_SECS) {
        return e;
    }
    if out.code != Some(0) {
        return tool_error(format!("sandbox_remove: {}", out.stderr.render().trim()));
    }
    tool_ok(
        format!("removed {}", a.name),
        json!({ "name": a.name, "removed": true }),
    )
}

/// Carry out `action` in the typed child (`airlock __action`: the action as JSON on its stdin,
/// one answer line on its stdout); no argv from the call, no reading of its stderr.
async fn child_action(
    c: &Call,
    tool: &str,
    action: &Action,
    limit: usize,
) -> Result<ActionData, CallToolResult> {
    let input =
        serde_json::to_vec(action).map_err(|e| tool_error(format!("{tool}: internal: {e}")))?;
    let secs = FILE_SECS - 10;
    let out = c
        .airlock(
            vec!["__action".into()],
            Some(input),
            Duration::from_secs(secs),
            limit,
        )
        .await?;
    if out.timed_out {
        return Err(tool_error(format!(
            "{tool}: did not finish within {secs}s; stopped"
        )));
    }
    if out.cancelled {
        return Err(tool_error(format!("{tool}: cancelled")));
    }
    let code = out.code;
    let Some(bytes) = out.stdout.into_complete() else {
        return Err(tool_error(format!(
            "{tool}: the answer was larger than expected"
        )));
    };
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    match serde_json::from_slice::<ChildAnswer>(line) {
        Ok(ChildAnswer::Ok(data)) => Ok(*data),
        Ok(ChildAnswer::Error(e)) if e.kind == "refused" && !e.message.starts_with("refused") => {
            Err(tool_error(format!("{tool}: refused: {}", e.message)))
        }
        Ok(ChildAnswer::Error(e)) => Err(tool_error(format!("{tool}: {}", e.message))),
        Err(e) => Err(tool_error(format!(
            "{tool}: no answer from airlock (exit {code:?}): {e}"
        ))),
    }
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
    let data = tri!(child_action(&c, "sandbox_file_read", &action, limit).await);
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
    let data = tri!(child_action(&c, "sandbox_file_write", &action, 64 * 1024).await);
    let ActionData::Written(w) = data else {
        return tool_error("sandbox_file_write: internal: an answer of another kind");
    };
    tool_ok(
        format!("wrote {} bytes to {}", w.written_bytes, w.path),
        json!({ "path": w.path, "written_bytes": w.written_bytes, "size": w.size }),
    )
}

/// An allow or deny through the engine (via the typed child, which forwards it); the answer
/// says what is in force.
async fn policy_change(c: Call, tool: &str, action: Action) -> CallToolResult {
    let data = tri!(child_action(&c, tool, &action, 64 * 1024).await);
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
