//! The routes: one handler per operation, each with its OpenAPI description next to it.
//!
//! Adding a route: write the handler with `#[utoipa::path(...)]` (its request and response
//! types derive `ToSchema`), run the blocking engine call through [`blocking`], and register it
//! in [`router`] with `.routes(routes!(handler))`; the document picks it up from there.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{RefOr, Response as OaResponse};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use crate::action::{Action, ActionData, PolicyChange, Via};
use crate::backend::Stats;
use crate::engine::{Change, ReconcileReport, Status};
use crate::store::Record;

pub use super::extract::{act, blocking, JsonBody, NameParam, SandboxName, Shared};
use super::extract::{expect_data, query_flag, required};

/// A sandbox name, as the engine checks it (`airlock_model::spec::validate_name`). The schema
/// attributes below spell it out (they take literals only); a test holds them all to this.
pub const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

/// `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `true`: the engine answers.
    pub ok: bool,
    /// The engine's process id.
    pub pid: u32,
}

/// The body of `POST /v1/sandboxes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateRequest {
    /// The sandbox's name: 1-63 lowercase letters, digits and `-`, not starting or ending
    /// with `-`.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", examples("web"))]
    pub name: String,
    /// The sandbox's spec (what `airlock create` resolves from its flags and config);
    /// stored as given. Its string fields `backend`, `image` and `profile` are copied into
    /// the record. Default `{}`.
    #[serde(default)]
    #[schema(value_type = Object, examples(json!({"image": "debian"})))]
    pub spec: serde_json::Map<String, Value>,
}

/// The body of `POST /v1/sandboxes/{name}/start` (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct StartRequest {
    /// Values of the secrets the spec names, read by the client from its own environment.
    /// They reach the sandbox in memory only: never stored, logged or echoed.
    #[serde(default)]
    pub secrets: Option<BTreeMap<String, String>>,
}

pub use crate::action::MAX_GRACE_MS;

/// The body of `POST /v1/sandboxes/{name}/stop` (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct StopRequest {
    /// How long to wait after asking it to stop before killing it, in milliseconds
    /// (default 10000).
    #[serde(default, deserialize_with = "crate::action::whole_number")]
    #[schema(examples(10000), maximum = 1_000_000_000_000_u64)]
    pub grace_ms: Option<u64>,
}

/// The body of `POST /v1/sandboxes/{name}/allow`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AllowRequest {
    /// A host name, or `*.example.com` for its subdomains.
    #[schema(
        examples("github.com"),
        max_length = 253,
        pattern = "^(\\*\\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.?$"
    )]
    pub domain: String,
    /// Also allow this port (for every allowed domain: ports are one list).
    #[serde(default, deserialize_with = "crate::action::whole_number")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u64>,
}

/// The body of `POST /v1/sandboxes/{name}/deny`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DenyRequest {
    /// An entry of the allowlist (`github.com`, `*.example.com`).
    #[schema(
        examples("github.com"),
        max_length = 253,
        pattern = "^(\\*\\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.?$"
    )]
    pub domain: String,
}

/// `DELETE /v1/sandboxes/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Removed {
    pub name: String,
    /// Always `true`.
    pub removed: bool,
}

/// The OpenAPI document: its head here, its paths from the handlers registered in [`router`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "airlock engine API",
        description = "The airlock engine's HTTP/1.1 + JSON API on its Unix socket. Only the \
                       engine's own user may connect. docs/api.md is the guide.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody, Change, Stats)),
    tags(
        (name = "sandboxes", description = "Named sandboxes and their lifecycle"),
        (name = "engine", description = "The engine itself"),
        (name = "work", description = "What a clone workspace gives back: diff, fetch, sync; and deliver"),
        (name = "agent", description = "Agent mode: prompts and the report journal, streamed"),
        (name = "files", description = "Files inside a running sandbox: read, write, copy"),
    ),
)]
struct ApiDoc;

/// The OpenAPI document of the API (what `GET /v1/openapi.json` serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    build().1
}

/// The router over `engine`, serving its own document.
pub fn router(engine: Shared) -> axum::Router {
    let (router, doc) = build();
    let document = Document(Arc::new(serde_json::to_value(&doc).unwrap_or(Value::Null)));
    router
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::Extension(document))
        .with_state(engine)
}

/// The routes and their document, built together: every route is documented and every
/// documented route exists.
fn build() -> (axum::Router<Shared>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(openapi_document))
        .routes(routes!(list, create))
        .routes(routes!(status, remove))
        .routes(routes!(start))
        .routes(routes!(stop))
        .routes(routes!(allow))
        .routes(routes!(deny))
        .routes(routes!(gc))
        .routes(routes!(actions))
        .routes(routes!(super::work::exec))
        .routes(routes!(super::work::diff))
        .routes(routes!(super::work::fetch))
        .routes(routes!(super::work::sync))
        .routes(routes!(super::child::read_file))
        .routes(routes!(super::child::write_file))
        .routes(routes!(super::child::copy))
        .routes(routes!(super::child::deliver))
        .routes(routes!(super::child::trust))
        .routes(routes!(super::child::explain))
        .routes(routes!(super::child::prompt))
        .routes(routes!(super::child::reports))
        .routes(routes!(super::child::run))
        .split_for_parts();
    CommonResponses::add_to(&mut doc);
    (router, doc)
}

/// The served document, rendered once.
#[derive(Clone)]
struct Document(Arc<Value>);

/// Any action, as one JSON object tagged by `action`; its result tagged by `data`. The
/// routes above are each one of these.
#[utoipa::path(post, operation_id = "execute_action", path = "/v1/actions", tag = "engine",
    request_body = Action,
    responses(
        (status = 200, description = "The action's result; for the streamed actions (prompt, reports), NDJSON lines as their routes answer",
            content((ActionData = "application/json"), ([super::child::StreamLine] = "application/x-ndjson"))),
        (status = 400, description = "`bad_request`, `invalid_name` or `bad_spec`", body = ErrorBody),
        (status = 403, description = "`refused`: a path leads outside a sandbox's allowed roots", body = ErrorBody),
        (status = 404, description = "`not_found` or `no_such_path`", body = ErrorBody),
        (status = 409, description = "`exists`, `wrong_state`, `conflict`, `needs_review`, `diverged`, `through_links`, `not_clone`, `no_branch`", body = ErrorBody),
    ))]
async fn actions(
    State(engine): State<Shared>,
    JsonBody(body): JsonBody<Action>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let action =
        body.ok_or_else(|| ApiError::bad_request("expected an action: {\"action\": \"list\"}"))?;
    if action.streams() {
        return super::child::stream_child(engine, action).await;
    }
    act(engine, action).await.map(|d| Json(d).into_response())
}

/// Is the engine there?
#[utoipa::path(get, operation_id = "health", path = "/v1/health", tag = "engine",
    responses((status = 200, description = "The engine answers", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health {
        ok: true,
        pid: std::process::id(),
    })
}

/// This document.
#[utoipa::path(get, operation_id = "openapi", path = "/v1/openapi.json", tag = "engine",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API",
               body = Object, content_type = "application/json")))]
async fn openapi_document(axum::Extension(doc): axum::Extension<Document>) -> Json<Value> {
    Json(doc.0.as_ref().clone())
}

/// Every sandbox, ordered by name.
#[utoipa::path(get, operation_id = "list_sandboxes", path = "/v1/sandboxes", tag = "sandboxes",
    responses((status = 200, description = "Every sandbox, ordered by name", body = [Record])))]
async fn list(State(engine): State<Shared>) -> Result<Json<Vec<Record>>, ApiError> {
    expect_data!(act(engine, Action::List).await?, ActionData::Records).map(Json)
}

/// Records a sandbox and makes its folder; it ends `stopped`. If anything fails, neither
/// record nor folder remains.
#[utoipa::path(post, operation_id = "create_sandbox", path = "/v1/sandboxes", tag = "sandboxes",
    request_body = CreateRequest,
    responses(
        (status = 201, description = "Created, `stopped`", body = Record),
        (status = 400, description = "`bad_request`, `invalid_name` or `bad_spec`", body = ErrorBody),
        (status = 409, description = "`exists`: the name is in use", body = ErrorBody),
        (status = 500, description = "`backend` (could not prepare it) or `internal`", body = ErrorBody),
        (status = 503, description = "`backend`: it cannot work on this host; or `busy`", body = ErrorBody),
    ))]
async fn create(
    State(engine): State<Shared>,
    JsonBody(body): JsonBody<CreateRequest>,
) -> Result<(StatusCode, Json<Record>), ApiError> {
    let body = body.ok_or_else(|| {
        ApiError::bad_request("expected a JSON object {\"name\": ..., \"spec\": {...}}")
    })?;
    let action = Action::Create {
        name: body.name,
        spec: body.spec,
    };
    expect_data!(act(engine, action).await?, ActionData::Record)
        .map(|r| (StatusCode::CREATED, Json(r)))
}

/// One sandbox with its uptime and live resource use.
#[utoipa::path(get, operation_id = "get_sandbox", path = "/v1/sandboxes/{name}", tag = "sandboxes",
    params(NameParam),
    responses(
        (status = 200, description = "The sandbox", body = Status),
        (status = 400, description = "`invalid_name`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn status(
    State(engine): State<Shared>,
    SandboxName(name): SandboxName,
) -> Result<Json<Status>, ApiError> {
    expect_data!(
        act(engine, Action::Status { name }).await?,
        ActionData::Status
    )
    .map(Json)
}

/// Starts a `stopped` or `failed` sandbox; it ends `running`, or `failed` with the error as
/// `last_error`.
#[utoipa::path(post, operation_id = "start_sandbox", path = "/v1/sandboxes/{name}/start", tag = "sandboxes",
    params(NameParam),
    request_body(content = Option<StartRequest>, description = "Optional"),
    responses(
        (status = 200, description = "Started, `running`", body = Record),
        (status = 400, description = "`bad_request` or `invalid_name`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`wrong_state` or `conflict`", body = ErrorBody),
        (status = 500, description = "`backend` (it is left `failed`), `damaged` or `internal`", body = ErrorBody),
        (status = 503, description = "`backend`: it cannot work on this host; or `busy`", body = ErrorBody),
    ))]
async fn start(
    State(engine): State<Shared>,
    SandboxName(name): SandboxName,
    JsonBody(body): JsonBody<StartRequest>,
) -> Result<Json<Record>, ApiError> {
    let secrets = body.unwrap_or_default().secrets;
    expect_data!(
        act(engine, Action::Start { name, secrets }).await?,
        ActionData::Record
    )
    .map(Json)
}

/// Stops a sandbox: asks, waits `grace_ms`, kills; it ends `stopped`.
#[utoipa::path(post, operation_id = "stop_sandbox", path = "/v1/sandboxes/{name}/stop", tag = "sandboxes",
    params(NameParam),
    request_body(content = Option<StopRequest>, description = "Optional"),
    responses(
        (status = 200, description = "Stopped", body = Record),
        (status = 400, description = "`bad_request` or `invalid_name`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`wrong_state` or `conflict`", body = ErrorBody),
        (status = 500, description = "`backend` (it is left `failed` if it still runs) or `internal`", body = ErrorBody),
        (status = 503, description = "`backend`: it cannot work on this host; or `busy`", body = ErrorBody),
    ))]
async fn stop(
    State(engine): State<Shared>,
    SandboxName(name): SandboxName,
    JsonBody(body): JsonBody<StopRequest>,
) -> Result<Json<Record>, ApiError> {
    let grace_ms = body.unwrap_or_default().grace_ms;
    expect_data!(
        act(engine, Action::Stop { name, grace_ms }).await?,
        ActionData::Record
    )
    .map(Json)
}

/// Allows a domain (and a port) in a filtered sandbox's egress allowlist: in force at once
/// while it runs, without a restart, and kept for its later starts (a stopped sandbox's is
/// only stored). Journaled as a policy change (`via: api`).
#[utoipa::path(post, operation_id = "allow_domain", path = "/v1/sandboxes/{name}/allow", tag = "sandboxes",
    params(NameParam),
    request_body = AllowRequest,
    responses(
        (status = 200, description = "The allowlist now", body = PolicyChange),
        (status = 400, description = "`bad_request` (not a host name, a bad port) or `invalid_name`", body = ErrorBody),
        (status = 403, description = "`refused`: its network mode has no allowlist, a metadata name, the proxy's port", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`wrong_state`: starting, stopping or being removed", body = ErrorBody),
        (status = 500, description = "`backend`: the running sandbox could not take it (nothing changed)", body = ErrorBody),
    ))]
async fn allow(
    State(engine): State<Shared>,
    SandboxName(name): SandboxName,
    JsonBody(body): JsonBody<AllowRequest>,
) -> Result<Json<PolicyChange>, ApiError> {
    let body = required(body, "{\"domain\": ...}")?;
    let action = Action::Allow {
        name,
        domain: body.domain,
        port: body.port,
        via: Via::Api,
    };
    expect_data!(act(engine, action).await?, ActionData::Policy).map(Json)
}

/// Takes a domain out of a filtered sandbox's egress allowlist: new connections and DNS
/// answers for it are refused at once, and its open connections to it are closed.
#[utoipa::path(post, operation_id = "deny_domain", path = "/v1/sandboxes/{name}/deny", tag = "sandboxes",
    params(NameParam),
    request_body = DenyRequest,
    responses(
        (status = 200, description = "The allowlist now", body = PolicyChange),
        (status = 400, description = "`bad_request` or `invalid_name`", body = ErrorBody),
        (status = 403, description = "`refused`: its network mode has no allowlist, or another entry (a wildcard) still allows the name", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`wrong_state`: starting, stopping or being removed", body = ErrorBody),
        (status = 500, description = "`backend`: the running sandbox could not take it (nothing changed)", body = ErrorBody),
    ))]
async fn deny(
    State(engine): State<Shared>,
    SandboxName(name): SandboxName,
    JsonBody(body): JsonBody<DenyRequest>,
) -> Result<Json<PolicyChange>, ApiError> {
    let body = required(body, "{\"domain\": ...}")?;
    let action = Action::Deny {
        name,
        domain: body.domain,
        via: Via::Api,
    };
    expect_data!(act(engine, action).await?, ActionData::Policy).map(Json)
}

/// Removes a sandbox: its processes, what the backend holds, its folder, its record.
#[utoipa::path(delete, operation_id = "remove_sandbox", path = "/v1/sandboxes/{name}", tag = "sandboxes",
    params(NameParam, ForceParam),
    responses(
        (status = 200, description = "Removed", body = Removed),
        (status = 400, description = "`bad_request` or `invalid_name`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`wrong_state` (it runs; use `force`) or `conflict`", body = ErrorBody),
        (status = 500, description = "`backend` (it is left `removing`; retry with `force`) or `internal`", body = ErrorBody),
        (status = 503, description = "`backend`: it cannot work on this host; or `busy`", body = ErrorBody),
    ))]
async fn remove(
    State(engine): State<Shared>,
    SandboxName(name): SandboxName,
    Force(force): Force,
) -> Result<Json<Removed>, ApiError> {
    expect_data!(
        act(engine, Action::Remove { name, force }).await?,
        ActionData::Removed
    )
    .map(|name| {
        Json(Removed {
            name,
            removed: true,
        })
    })
}

/// Reconcile (also run at every engine start): makes the records match what runs.
#[utoipa::path(post, operation_id = "gc", path = "/v1/gc", tag = "engine",
    responses((status = 200, description = "What changed", body = ReconcileReport)))]
async fn gc(State(engine): State<Shared>) -> Result<Json<ReconcileReport>, ApiError> {
    expect_data!(act(engine, Action::Gc).await?, ActionData::Reconciled).map(Json)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        404,
        "no_route",
        format!("no route {method} {}", uri.path()),
        Some("GET /v1/openapi.json lists the routes (docs/api.md)".into()),
        airlock_model::exit::USAGE,
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        405,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
        Some("GET /v1/openapi.json lists the routes (docs/api.md)".into()),
        airlock_model::exit::USAGE,
    )
}

/// The `force` query parameter of `DELETE`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ForceParam {
    /// Remove it in any state (the way out of a stuck one). Default `false`.
    force: Option<bool>,
}

/// `?force=true|false|1|0` (a bare `force` is `true`); absent is `false`.
struct Force(bool);

impl<S: Send + Sync> FromRequestParts<S> for Force {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        query_flag(parts.uri.query(), "force").map(Force)
    }
}

/// Answers every route can give, whatever the route: the transport's (malformed HTTP, another
/// user, too slow, too large, too many connections) and the engine's internal errors.
struct CommonResponses;

impl CommonResponses {
    const ALL: &'static [(&'static str, &'static str)] = &[
        ("400", "`bad_request`: malformed HTTP or body"),
        (
            "403",
            "`forbidden`: the connection is not from the engine's own user",
        ),
        ("408", "`timeout`: the request did not arrive in time"),
        ("413", "`too_large`: the body is over 1 MiB"),
        ("500", "`internal`: the store or the file system failed"),
        ("503", "`busy`: too many connections at once"),
    ];

    fn add_to(doc: &mut utoipa::openapi::OpenApi) {
        for item in doc.paths.paths.values_mut() {
            for operation in operations(item) {
                for (status, description) in Self::ALL {
                    operation
                        .responses
                        .responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| error_response(description));
                }
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn error_response(description: &str) -> RefOr<OaResponse> {
    RefOr::T(
        utoipa::openapi::ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}
