//! What every route handler shares: the engine handle, running an action on the blocking pool,
//! and the extractors for the `{name}` path parameter and JSON bodies — in our error shape. A
//! leaf of the API: routes.rs and work.rs build on it.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use crate::action::{Action, ActionData};
use crate::engine::{Engine, EngineError};

pub type Shared = Arc<Engine>;

/// Runs a blocking engine operation (SQLite, spawning supervisors) on tokio's blocking pool.
pub async fn blocking<T, F>(op: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, EngineError> + Send + 'static,
{
    match tokio::task::spawn_blocking(op).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!(
            "the engine operation did not finish: {e}"
        ))),
    }
}

/// Carries out one action on the blocking pool: every route comes here.
/// A route's JSON body, or `bad_request` naming the object it expects (`shape`).
pub fn required<T>(body: Option<T>, shape: &str) -> Result<T, ApiError> {
    body.ok_or_else(|| ApiError::bad_request(format!("expected a JSON object {shape}")))
}

pub async fn act(engine: Shared, action: Action) -> Result<ActionData, ApiError> {
    blocking(move || engine.execute(action)).await
}

/// A route got data of another kind than its action gives (a bug, never the client's).
pub fn unexpected(data: ActionData) -> ApiError {
    ApiError::internal(format!("internal: unexpected result {data:?}"))
}

/// The `{name}` path parameter.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct NameParam {
    /// The sandbox's name.
    #[param(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", example = "web")]
    name: String,
}

/// Extracts `{name}`; a path that does not decode is a 400 in our error shape.
pub struct SandboxName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SandboxName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| SandboxName(p.0))
            .map_err(|e| ApiError::bad_request(format!("bad sandbox name in the path: {e}")))
    }
}

/// A JSON object body, `None` when the body is empty or `null`. Whatever the `Content-Type`; a body
/// that is not a JSON object, or does not fit `T`, is a 400 in our error shape.
pub struct JsonBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        parse_object(&bytes).map(JsonBody)
    }
}

fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<Option<T>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if value.is_null() {
        return Ok(None);
    }
    // serde accepts a JSON array for a struct; the API takes objects only.
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    serde_json::from_value(value).map(Some).map_err(|e| {
        ApiError::bad_request(format!("the request body does not fit its schema: {e}"))
    })
}

/// The data of an action's result as the variant its route expects (any other is our bug).
macro_rules! expect_data {
    ($data:expr, $variant:path) => {
        match $data {
            $variant(v) => Ok(v),
            other => Err($crate::api::extract::unexpected(other)),
        }
    };
}
pub(crate) use expect_data;

/// Reads a `true`/`false` (or `1`/`0`, or bare) flag from a query string; absent is false.
pub(crate) fn query_flag(query: Option<&str>, key: &str) -> Result<bool, ApiError> {
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
        if k == key {
            return match v {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(ApiError::bad_request(format!(
                    "{key} must be true or false"
                ))),
            };
        }
    }
    Ok(false)
}
