//! Routes for what a clone workspace gives back (diff, fetch, sync — airlock-work's operations,
//! the same the CLI runs) and for running a command in a sandbox (exec), so an API client can
//! drive a whole create → exec → diff → fetch cycle without the CLI.

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{act, expect_data, required, JsonBody, NameParam, SandboxName, Shared};
use crate::action::{Action, ActionData, ExecRequest};
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
        (status = 409, description = "`not_clone`, `no_branch` or `in_guest` (a microVM sandbox whose VM ended without its work taken out)", body = ErrorBody),
    ))]
pub async fn diff(
    State(engine): State<Shared>,
    SandboxName(name): SandboxName,
) -> Result<Json<DiffSummary>, ApiError> {
    expect_data!(
        act(engine, Action::Diff { name, patch: None }).await?,
        ActionData::Diff
    )
    .map(Json)
}

/// The branch into the host repository as `airlock/NAME`: objects only, fsck'd, review-gated.
#[utoipa::path(post, operation_id = "fetch_sandbox", path = "/v1/sandboxes/{name}/fetch", tag = "work",
    params(NameParam),
    request_body(content = Option<FetchRequest>, description = "Optional"),
    responses(
        (status = 200, description = "Fetched (or already up to date)", body = FetchReport),
        (status = 400, description = "`bad_request` or `invalid_name`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`needs_review` (the findings are listed in `error`; a human passes `accept`), `diverged`, `not_clone`, `no_branch` or `in_guest`", body = ErrorBody),
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
        (status = 409, description = "`needs_review`, `conflict` (host edits), `through_links`, `diverged`, `not_clone`, `no_branch` or `in_guest`", body = ErrorBody),
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

/// Runs a command in a running sandbox and streams its output and exit status as NDJSON
/// (`application/x-ndjson`): `{"stream": "stdout"|"stderr", "data": "..."}` lines as output
/// comes, then `{"exit": N}` (airlock's own codes for its errors: 125 setup failed, 126 not
/// executable, 127 not found, 128+N killed by signal N), or `{"error": ...}` when it could not
/// start. The exec action runs in the typed child (entering namespaces needs a single-threaded
/// process); a client that goes away ends it.
#[utoipa::path(post, operation_id = "exec_sandbox", path = "/v1/sandboxes/{name}/exec", tag = "sandboxes",
    params(NameParam),
    request_body = ExecRequest,
    responses(
        (status = 200, description = "NDJSON: output events, then `{\"exit\": N}` (or `{\"error\": ...}`)", body = [super::child::StreamLine], content_type = "application/x-ndjson"),
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
    let request = required(body, "{\"argv\": [...]}")?;
    super::child::stream_child(engine, Action::Exec { name, request }).await
}
