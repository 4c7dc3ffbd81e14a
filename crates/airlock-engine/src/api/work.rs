//! Routes for what a clone workspace gives back (diff, fetch, sync — airlock-work's operations,
//! the same the CLI runs) and for running a command in a sandbox (exec), so an API client can
//! drive a whole create → exec → diff → fetch cycle without the CLI.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{act, expect_data, JsonBody, NameParam, SandboxName, Shared};
use crate::action::{Action, ActionData};
use crate::engine::EngineError;
use airlock_work::ops::{DiffSummary, FetchReport, SyncOptions, SyncReport};

/// The body of `POST /v1/sandboxes/{name}/fetch` (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct FetchRequest {
    /// Fetch even though the review gate flagged changes (after a human reviewed them).
    #[serde(default)]
    pub accept: bool,
    /// Replace the host's `airlock/NAME` even when it has commits the branch lacks.
    #[serde(default)]
    pub force: bool,
}

/// What the branch changes against where it started, and what the review gate flags.
#[utoipa::path(get, operation_id = "diff_sandbox", path = "/v1/sandboxes/{name}/diff", tag = "work",
    params(NameParam),
    responses(
        (status = 200, description = "The changed files, their line counts, the commits and the gate's findings", body = DiffSummary),
        (status = 400, description = "`invalid_name`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`not_clone` or `no_branch`", body = ErrorBody),
    ))]
pub async fn diff(
    State(engine): State<Shared>,
    SandboxName(name): SandboxName,
) -> Result<Json<DiffSummary>, ApiError> {
    expect_data!(act(engine, Action::Diff { name }).await?, ActionData::Diff).map(Json)
}

/// The branch into the host repository as `airlock/NAME`: objects only, fsck'd, review-gated.
#[utoipa::path(post, operation_id = "fetch_sandbox", path = "/v1/sandboxes/{name}/fetch", tag = "work",
    params(NameParam),
    request_body(content = Option<FetchRequest>, description = "Optional"),
    responses(
        (status = 200, description = "Fetched (or already up to date)", body = FetchReport),
        (status = 400, description = "`bad_request` or `invalid_name`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`needs_review` (the findings are listed in `error`; a human passes `accept`), `diverged`, `not_clone` or `no_branch`", body = ErrorBody),
    ))]
pub async fn fetch(
    State(engine): State<Shared>,
    SandboxName(name): SandboxName,
    JsonBody(body): JsonBody<FetchRequest>,
) -> Result<Json<FetchReport>, ApiError> {
    let b = body.unwrap_or_default();
    let action = Action::Fetch {
        name,
        accept: b.accept,
        force: b.force,
    };
    expect_data!(act(engine, action).await?, ActionData::Fetched).map(Json)
}

/// The branch's committed changes into the host checkout: a fast-forward, or a file-by-file
/// apply refused per path over host edits or symbolic links; review-gated.
#[utoipa::path(post, operation_id = "sync_sandbox", path = "/v1/sandboxes/{name}/sync", tag = "work",
    params(NameParam),
    request_body(content = Option<SyncOptions>, description = "Optional"),
    responses(
        (status = 200, description = "Applied (or, with `dry_run`, what would be)", body = SyncReport),
        (status = 400, description = "`bad_request` or `invalid_name`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`needs_review`, `conflict` (host edits), `through_links`, `diverged`, `not_clone` or `no_branch`", body = ErrorBody),
    ))]
pub async fn sync(
    State(engine): State<Shared>,
    SandboxName(name): SandboxName,
    JsonBody(body): JsonBody<SyncOptions>,
) -> Result<Json<SyncReport>, ApiError> {
    let o = body.unwrap_or_default();
    let action = Action::Sync {
        name,
        dry_run: o.dry_run,
        artifacts: o.artifacts,
        accept: o.accept,
    };
    expect_data!(act(engine, action).await?, ActionData::Synced).map(Json)
}

/// The body of `POST /v1/sandboxes/{name}/exec`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecRequest {
    /// The command and its arguments, run inside the sandbox as its user.
    #[schema(min_items = 1, examples(json!(["git", "status"])))]
    pub argv: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The working directory inside (relative: under /workspace).
    #[serde(default)]
    pub workdir: Option<String>,
}

/// One line of an exec's answer (NDJSON): output as it comes, then the exit status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ExecEvent {
    /// A chunk of the command's output (`stream` is `stdout` or `stderr`; `data` is the
    /// bytes as UTF-8, invalid sequences replaced).
    Output { stream: String, data: String },
    /// The last line: the command's exit code (airlock's own codes for its errors:
    /// 125 setup failed, 126 not executable, 127 not found, 128+N killed by signal N).
    Exit { exit: i32 },
}

/// Why the command line cannot be made (a usage error of the command, answered like one: on
/// stderr, exit 2), if so.
fn usage_problem(r: &ExecRequest) -> Option<String> {
    let nul = |s: &String| s.contains('\0');
    if r.argv.iter().any(nul) || r.env.values().any(nul) || r.workdir.as_ref().is_some_and(nul) {
        return Some("argv, env and workdir cannot hold NUL bytes".into());
    }
    for k in r.env.keys() {
        let ok = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Some(format!(
                "invalid environment variable name {k:?}: names are [A-Za-z_][A-Za-z0-9_]*"
            ));
        }
    }
    None
}

fn ndjson(lines: Vec<Bytes>) -> Result<Response, ApiError> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from(lines.concat()))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Runs a command in a running sandbox and streams its output and exit status as NDJSON
/// (`application/x-ndjson`), one [`ExecEvent`] per line. The command runs in a child process
/// of the engine (`airlock exec`: entering namespaces needs a single-threaded process); a
/// client that goes away kills it.
#[utoipa::path(post, operation_id = "exec_sandbox", path = "/v1/sandboxes/{name}/exec", tag = "sandboxes",
    params(NameParam),
    request_body = ExecRequest,
    responses(
        (status = 200, description = "NDJSON: output events, then `{\"exit\": N}`", body = [ExecEvent], content_type = "application/x-ndjson"),
        (status = 400, description = "`bad_request` or `invalid_name`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 500, description = "`internal`: the exec could not be started", body = ErrorBody),
        (status = 503, description = "`backend`: this engine's backend runs no commands; or `busy`", body = ErrorBody),
    ))]
pub async fn exec(
    State(engine): State<Shared>,
    SandboxName(name): SandboxName,
    JsonBody(body): JsonBody<ExecRequest>,
) -> Result<Response, ApiError> {
    let req = body.ok_or_else(|| ApiError::bad_request("expected {\"argv\": [...]}"))?;
    if req.argv.is_empty() {
        return Err(ApiError::bad_request("argv must name a command"));
    }
    if !engine.sandbox_dir(&name).is_dir() {
        return Err(EngineError::NotFound(name).into());
    }
    let Some(exe) = engine.exec_program() else {
        return Err(EngineError::Backend {
            op: "exec in",
            name,
            source: crate::backend::BackendError::Unavailable(
                "this engine's backend runs no commands".into(),
            ),
        }
        .into());
    };
    if let Some(problem) = usage_problem(&req) {
        return ndjson(vec![
            line(&ExecEvent::Output {
                stream: "stderr".into(),
                data: format!("airlock: error: {problem}\n"),
            }),
            line(&ExecEvent::Exit {
                exit: airlock_model::exit::USAGE,
            }),
        ]);
    }
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("exec");
    for (k, v) in &req.env {
        cmd.arg("-e").arg(format!("{k}={v}"));
    }
    if let Some(w) = &req.workdir {
        cmd.arg("-w").arg(w);
    }
    cmd.arg(&name).arg("--").args(&req.argv);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| ApiError::internal(format!("cannot start the exec: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let pump = |mut r: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                stream: &'static str,
                tx: tokio::sync::mpsc::Sender<Bytes>| async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let ev = ExecEvent::Output {
                        stream: stream.into(),
                        data: String::from_utf8_lossy(&buf[..n]).into_owned(),
                    };
                    if tx.send(line(&ev)).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let out = child
        .stdout
        .take()
        .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    let err = child
        .stderr
        .take()
        .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    tokio::spawn(async move {
        let a = out.map(|o| tokio::spawn(pump(o, "stdout", tx.clone())));
        let b = err.map(|e| tokio::spawn(pump(e, "stderr", tx.clone())));
        for h in [a, b].into_iter().flatten() {
            let _ = h.await;
        }
        let code = match child.wait().await {
            Ok(st) => st.code().unwrap_or_else(|| {
                use std::os::unix::process::ExitStatusExt;
                128 + st.signal().unwrap_or(0)
            }),
            Err(_) => airlock_model::exit::SANDBOX_FAILED,
        };
        let _ = tx.send(line(&ExecEvent::Exit { exit: code })).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn line(ev: &ExecEvent) -> Bytes {
    let mut v = serde_json::to_vec(ev).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}
