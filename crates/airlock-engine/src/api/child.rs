//! Routes of the actions a typed child process carries out (`airlock __action`, see
//! [`crate::action::run_child`]): file read and write, copies between the host and a sandbox,
//! deliver, trust and explain. Each parses its path and body into an [`Action`]; how the bytes
//! move is the child's business.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{act, expect_data, required, JsonBody, NameParam, SandboxName, Shared};
use crate::action::{
    Access, Action, ActionData, ActionError, ChildAnswer, Copied, Delivered, Direction, Encoding,
    Explanation, FileContent, RunRequest, TrustOp, TrustReport, Written,
};

/// The body of `POST /v1/sandboxes/{name}/files/read`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileReadRequest {
    /// Relative to /workspace, or absolute under /workspace, /tmp, /home/agent or /root.
    #[schema(examples("src/main.rs"))]
    pub path: String,
    /// Byte offset to start at (default 0).
    #[serde(default, deserialize_with = "crate::action::whole_number")]
    #[schema(maximum = 9007199254740991_u64)]
    pub offset: Option<u64>,
    /// Most bytes returned (1-4194304, default 262144).
    #[serde(default, deserialize_with = "crate::action::whole_number")]
    #[schema(minimum = 1, maximum = 4194304)]
    pub max_bytes: Option<u64>,
}

/// The body of `POST /v1/sandboxes/{name}/files/write`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileWriteRequest {
    /// Same rules as for reading; writing through a symbolic link is refused.
    #[schema(examples("notes.txt"))]
    pub path: String,
    /// The new content, encoded as `encoding` says.
    #[schema(examples("hello\n"))]
    pub content: String,
    #[serde(default)]
    pub encoding: Encoding,
    /// Append instead of replacing (default false).
    #[serde(default)]
    pub append: bool,
    /// Make missing parent directories (default false).
    #[serde(default)]
    pub create_dirs: bool,
}

/// The body of `POST /v1/sandboxes/{name}/copy`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CopyRequest {
    /// `in`: host to sandbox; `out`: sandbox to host.
    pub direction: Direction,
    /// An absolute path on the host, as the engine's user sees it; never followed through a
    /// symbolic link.
    #[schema(examples("/home/me/data.csv"))]
    pub host_path: String,
    /// An absolute path inside the sandbox (resolved there).
    #[schema(examples("/workspace/data.csv"))]
    pub path: String,
}

/// The body of `POST /v1/sandboxes/{name}/deliver`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliverRequest {
    /// A branch of the host repository.
    #[schema(examples("main"))]
    pub branch: String,
}

/// The body of `POST /v1/trust`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TrustRequest {
    /// An absolute project directory; its airlock.toml is found upward.
    #[schema(examples("/home/me/project"))]
    pub dir: String,
    /// `status` (default), `allow` or `revoke`.
    #[serde(default)]
    pub op: TrustOp,
}

/// The body of `POST /v1/explain`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExplainRequest {
    /// The sandbox whose policy to explain.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", examples("web"))]
    pub sandbox: String,
    /// A host name (or IP literal) to connect to.
    #[serde(default)]
    #[schema(examples("pypi.org"))]
    pub domain: Option<String>,
    /// The connection's port (default 443).
    #[serde(default, deserialize_with = "crate::action::whole_number")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u64>,
    /// A path inside the sandbox.
    #[serde(default)]
    pub path: Option<String>,
    /// The access to `path` (default write).
    #[serde(default)]
    pub access: Option<Access>,
    /// A system call, e.g. `ptrace`.
    #[serde(default)]
    pub syscall: Option<String>,
}

/// Reads a file (or lists a directory) inside a running sandbox, as the sandbox sees it:
/// resolved inside, by a process with the sandbox's own privileges; `..` and symbolic links
/// leading outside the allowed roots are refused.
#[utoipa::path(post, operation_id = "read_file", path = "/v1/sandboxes/{name}/files/read", tag = "files",
    params(NameParam),
    request_body = FileReadRequest,
    responses(
        (status = 200, description = "The content (`encoding` utf8 or base64) or the listing", body = FileContent),
        (status = 400, description = "`bad_request` or `invalid_name`", body = ErrorBody),
        (status = 403, description = "`refused`: the path leads outside the allowed roots", body = ErrorBody),
        (status = 404, description = "`not_found` (no such sandbox) or `no_such_path`", body = ErrorBody),
        (status = 409, description = "`wrong_state`: it is not running", body = ErrorBody),
    ))]
pub async fn read_file(
    State(engine): State<Shared>,
    SandboxName(name): SandboxName,
    JsonBody(body): JsonBody<FileReadRequest>,
) -> Result<Json<FileContent>, ApiError> {
    let b = required(body, "{\"path\": ...}")?;
    let action = Action::FileRead {
        name,
        path: b.path,
        offset: b.offset,
        max_bytes: b.max_bytes,
    };
    expect_data!(act(engine, action).await?, ActionData::File).map(Json)
}

/// Writes (or appends to) a file inside a running sandbox, with the sandbox's own permissions.
/// The request body is at most 1 MiB.
#[utoipa::path(post, operation_id = "write_file", path = "/v1/sandboxes/{name}/files/write", tag = "files",
    params(NameParam),
    request_body = FileWriteRequest,
    responses(
        (status = 200, description = "Written", body = Written),
        (status = 400, description = "`bad_request` or `invalid_name`", body = ErrorBody),
        (status = 403, description = "`refused`: outside the allowed roots, or through a symbolic link", body = ErrorBody),
        (status = 404, description = "`not_found` (no such sandbox) or `no_such_path` (no such folder)", body = ErrorBody),
        (status = 409, description = "`wrong_state`: it is not running", body = ErrorBody),
    ))]
pub async fn write_file(
    State(engine): State<Shared>,
    SandboxName(name): SandboxName,
    JsonBody(body): JsonBody<FileWriteRequest>,
) -> Result<Json<Written>, ApiError> {
    let b = required(body, "{\"path\": ..., \"content\": ...}")?;
    let action = Action::FileWrite {
        name,
        path: b.path,
        content: b.content,
        encoding: b.encoding,
        append: b.append,
        create_dirs: b.create_dirs,
    };
    expect_data!(act(engine, action).await?, ActionData::Written).map(Json)
}

/// Copies a file or directory between the host and a running sandbox, as `airlock cp` does.
#[utoipa::path(post, operation_id = "copy_files", path = "/v1/sandboxes/{name}/copy", tag = "files",
    params(NameParam),
    request_body = CopyRequest,
    responses(
        (status = 200, description = "Copied; a directory copied out lists what to review", body = Copied),
        (status = 400, description = "`bad_request` (e.g. a host path that is a symbolic link, or a directory copied out onto an existing path) or `invalid_name`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such sandbox, or nothing at `path` inside", body = ErrorBody),
        (status = 409, description = "`wrong_state`: it is not running", body = ErrorBody),
    ))]
pub async fn copy(
    State(engine): State<Shared>,
    SandboxName(name): SandboxName,
    JsonBody(body): JsonBody<CopyRequest>,
) -> Result<Json<Copied>, ApiError> {
    let b = required(
        body,
        "{\"direction\": \"in\", \"host_path\": ..., \"path\": ...}",
    )?;
    let action = Action::Copy {
        name,
        direction: b.direction,
        host_path: b.host_path,
        path: b.path,
    };
    expect_data!(act(engine, action).await?, ActionData::Copied).map(Json)
}

/// Pushes a host branch into a clone-mode sandbox's repository as `delivered/BRANCH` (the
/// sandbox's own git stores it, inside the sandbox).
#[utoipa::path(post, operation_id = "deliver_branch", path = "/v1/sandboxes/{name}/deliver", tag = "work",
    params(NameParam),
    request_body = DeliverRequest,
    responses(
        (status = 200, description = "Delivered", body = Delivered),
        (status = 400, description = "`bad_request` (not a branch name) or `invalid_name`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such sandbox or host branch", body = ErrorBody),
        (status = 409, description = "`wrong_state` (not running) or `not_clone`", body = ErrorBody),
    ))]
pub async fn deliver(
    State(engine): State<Shared>,
    SandboxName(name): SandboxName,
    JsonBody(body): JsonBody<DeliverRequest>,
) -> Result<Json<Delivered>, ApiError> {
    let b = required(body, "{\"branch\": ...}")?;
    let action = Action::Deliver {
        name,
        branch: b.branch,
    };
    expect_data!(act(engine, action).await?, ActionData::Delivered).map(Json)
}

/// Whether a project's airlock.toml is trusted; or trust it as it is now; or withdraw the
/// trust. Its settings that widen the policy (and its hooks) apply only once trusted.
#[utoipa::path(post, operation_id = "trust_project", path = "/v1/trust", tag = "engine",
    request_body = TrustRequest,
    responses(
        (status = 200, description = "The trust as it now is", body = TrustReport),
        (status = 400, description = "`bad_request`: no such directory, or no airlock.toml in it or above", body = ErrorBody),
    ))]
pub async fn trust(
    State(engine): State<Shared>,
    JsonBody(body): JsonBody<TrustRequest>,
) -> Result<Json<TrustReport>, ApiError> {
    let b = required(body, "{\"dir\": ..., \"op\": \"status\"}")?;
    let action = Action::Trust {
        dir: b.dir,
        op: b.op,
    };
    expect_data!(act(engine, action).await?, ActionData::Trust).map(Json)
}

/// Whether a connection, a path access or a system call would be allowed in a sandbox, why,
/// and which option or configuration line would allow it (or that nothing may: the floor).
#[utoipa::path(post, operation_id = "explain_policy", path = "/v1/explain", tag = "engine",
    request_body = ExplainRequest,
    responses(
        (status = 200, description = "One verdict per subject asked about", body = Explanation),
        (status = 400, description = "`bad_request` (nothing asked about) or `invalid_name`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn explain(
    State(engine): State<Shared>,
    JsonBody(body): JsonBody<ExplainRequest>,
) -> Result<Json<Explanation>, ApiError> {
    let b = required(body, "{\"sandbox\": ..., \"domain\": ...}")?;
    let action = Action::Explain {
        sandbox: b.sandbox,
        domain: b.domain,
        port: b.port,
        path: b.path,
        access: b.access,
        syscall: b.syscall,
    };
    expect_data!(act(engine, action).await?, ActionData::Explained).map(Json)
}

/// The body of `POST /v1/sandboxes/{name}/prompt`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PromptRequest {
    /// The directive: the next turn of the agent's conversation.
    #[schema(examples("add a test for the parser"))]
    pub text: String,
    /// Stream the turn's journal lines until it ends (default true); false: answer once the
    /// prompt is queued.
    #[serde(default = "yes")]
    pub wait: bool,
}

fn yes() -> bool {
    true
}

/// One line of a streamed answer (prompt, reports; NDJSON): journal lines as they come (the
/// journal's own JSON objects, as `airlock reports --json` prints them), then one last line,
/// `{"exit": N, "turn": T}` or `{"error": ActionError}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StreamLine {
    /// How it ended: the CLI's exit code (prompt: 0 done, 3 blocked, 4 ended without a
    /// report) and the turn's id (prompt).
    End {
        exit: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        turn: Option<u64>,
    },
    /// It failed (after the answer began: the status is already 200).
    Failed { error: ActionError },
    /// A journal line.
    Journal(std::collections::BTreeMap<String, serde_json::Value>),
}

/// Sends a prompt to the agent of a running agent-mode sandbox and, with `wait`, streams the
/// turn's journal lines until it ends (done, blocked, or ended without a report).
#[utoipa::path(post, operation_id = "prompt_agent", path = "/v1/sandboxes/{name}/prompt", tag = "agent",
    params(NameParam),
    request_body = PromptRequest,
    responses(
        (status = 200, description = "NDJSON: journal lines, then `{\"exit\": N, \"turn\": T}` (or `{\"error\": ...}`)", body = [StreamLine], content_type = "application/x-ndjson"),
        (status = 400, description = "`bad_request` or `invalid_name`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn prompt(
    State(engine): State<Shared>,
    SandboxName(name): SandboxName,
    JsonBody(body): JsonBody<PromptRequest>,
) -> Result<axum::response::Response, ApiError> {
    let b = required(body, "{\"text\": ...}")?;
    let action = Action::Prompt {
        name,
        text: b.text,
        wait: b.wait,
    };
    stream_child(engine, action).await
}

/// The report journal of an agent-mode sandbox (prompts, reports, blocked events, turn ends);
/// with `follow`, it goes on as the journal grows until the client goes away.
#[utoipa::path(get, operation_id = "agent_reports", path = "/v1/sandboxes/{name}/reports", tag = "agent",
    params(NameParam, FollowParam),
    responses(
        (status = 200, description = "NDJSON: journal lines, then `{\"exit\": 0}` (never, with `follow`)", body = [StreamLine], content_type = "application/x-ndjson"),
        (status = 400, description = "`bad_request` or `invalid_name`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn reports(
    State(engine): State<Shared>,
    SandboxName(name): SandboxName,
    uri: axum::http::Uri,
) -> Result<axum::response::Response, ApiError> {
    let follow = super::extract::query_flag(uri.query(), "follow")?;
    stream_child(engine, Action::Reports { name, follow }).await
}

/// Why a run request is out of its schema, if so (what the schema cannot say — variable names,
/// NUL bytes — the run itself refuses, as a usage error in the stream).
fn run_problem(r: &RunRequest) -> Option<String> {
    if r.command.argv.is_empty() {
        return Some("argv must name a command".into());
    }
    if !r.dir.starts_with('/') {
        return Some(format!("dir must be an absolute path, not {:?}", r.dir));
    }
    if r.timeout_secs.is_some_and(|t| !(1..=86400).contains(&t)) {
        return Some("timeout_secs must be 1-86400".into());
    }
    if r.policy.pids.is_some_and(|p| !(1..=4194304).contains(&p)) {
        return Some("pids must be 1-4194304".into());
    }
    None
}

/// Runs a command in a fresh, disposable sandbox — `airlock run`, in a child process of the
/// engine — and streams its output and exit status as NDJSON: `{"stream": "stdout"|"stderr",
/// "data": "..."}` lines as output comes, then `{"exit": N}` (or `{"error": ...}` when it could
/// not start, e.g. a refused policy). A client that goes away ends it.
#[utoipa::path(post, operation_id = "run_command", path = "/v1/run", tag = "sandboxes",
    request_body = RunRequest,
    responses(
        (status = 200, description = "NDJSON: output events, then `{\"exit\": N}` (or `{\"error\": ...}`)", body = [StreamLine], content_type = "application/x-ndjson"),
        (status = 400, description = "`bad_request`: no command, a relative `dir`, values out of range", body = ErrorBody),
    ))]
pub async fn run(
    State(engine): State<Shared>,
    JsonBody(body): JsonBody<RunRequest>,
) -> Result<axum::response::Response, ApiError> {
    let r = required(body, "{\"dir\": ..., \"argv\": [...]}")?;
    stream_child(engine, Action::Run(r)).await
}

/// The `follow` query parameter.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct FollowParam {
    /// Go on as the journal grows. Default `false`.
    follow: Option<bool>,
}

/// Runs a streamed action in the typed child and answers its lines as NDJSON: `{"event": X}`
/// lines become `X`, the child's answer becomes the last line. A client that goes away ends the
/// child.
pub(crate) async fn stream_child(
    engine: Shared,
    action: Action,
) -> Result<axum::response::Response, ApiError> {
    use axum::body::{Body, Bytes};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let name = match &action {
        Action::Prompt { name, .. } | Action::Reports { name, .. } => Some(name.clone()),
        Action::Run(r) => {
            run_problem(r).map_or(Ok(()), |p| Err(ApiError::bad_request(p)))?;
            None
        }
        Action::Exec { name, request } => {
            if request.argv.is_empty() {
                return Err(ApiError::bad_request("argv must name a command"));
            }
            Some(name.clone())
        }
        _ => return Err(ApiError::internal("internal: not a streamed action")),
    };
    if let Some(name) = name {
        let e2 = engine.clone();
        super::extract::blocking(move || e2.get_record(&name).map(drop)).await?;
    }
    let Some(program) = engine.exec_program() else {
        return Err(crate::engine::EngineError::Action(ActionError::new(
            "unavailable",
            "this engine's backend carries out no actions in a child process",
        ))
        .into());
    };
    let input = serde_json::to_vec(&action).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut child = tokio::process::Command::new(program)
        .arg("__action")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ApiError::internal(format!("cannot start the action: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
    }
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| ApiError::internal("the action has no stdout"))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut ended = false;
        loop {
            // The client gone (the body dropped): end the child (dropped: killed), even when
            // it is quiet.
            let line = match tokio::time::timeout(Duration::from_secs(1), lines.next_line()).await {
                Err(_) if tx.is_closed() => break,
                Err(_) => continue,
                Ok(Ok(Some(line))) => line,
                Ok(_) => break,
            };
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let out = if let Some(event) = value.get("event") {
                StreamLine::Journal(match event {
                    serde_json::Value::Object(m) => m.clone().into_iter().collect(),
                    other => [("line".to_owned(), other.clone())].into_iter().collect(),
                })
            } else {
                ended = true;
                match serde_json::from_value::<ChildAnswer>(value) {
                    Ok(ChildAnswer::Ok(data)) => match *data {
                        ActionData::Ended(end) => StreamLine::End {
                            exit: end.exit,
                            turn: end.turn,
                        },
                        other => StreamLine::Failed {
                            error: ActionError::new(
                                "internal",
                                format!("an answer of another kind: {other:?}"),
                            ),
                        },
                    },
                    Ok(ChildAnswer::Error(error)) => StreamLine::Failed { error },
                    Err(e) => StreamLine::Failed {
                        error: ActionError::new("internal", format!("unreadable answer: {e}")),
                    },
                }
            };
            if tx.send(stream_line(&out)).await.is_err() {
                break;
            }
        }
        if !ended {
            let out = StreamLine::Failed {
                error: ActionError::new("internal", "the action's process gave no answer"),
            };
            let _ = tx.send(stream_line(&out)).await;
        }
        if tx.is_closed() {
            // The client is gone: end the child rather than wait for it.
            let _ = child.start_kill();
        }
        let _ = child.wait().await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    axum::response::Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn stream_line(line: &StreamLine) -> axum::body::Bytes {
    let mut v = serde_json::to_vec(line).unwrap_or_default();
    v.push(b'\n');
    axum::body::Bytes::from(v)
}
