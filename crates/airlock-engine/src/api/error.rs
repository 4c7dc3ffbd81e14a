//! The API's one error shape, `{error, hint, code, kind}`, and how engine errors map onto it.

use axum::http::{header, HeaderValue, StatusCode};
use serde_json::Value;

use crate::engine::EngineError;

/// The body of every error answer: an action's error, [`ActionError`] (`{error, hint, code,
/// kind}`; its kinds, with their exit codes and HTTP statuses, in [`crate::action::KINDS`]).
pub use crate::action::ActionError as ErrorBody;

/// An error answer: HTTP status and [`ErrorBody`] (kept as JSON so callers can index it).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub body: Value,
}

impl ApiError {
    pub fn new(status: u16, kind: &str, error: String, hint: Option<String>, code: i32) -> Self {
        let body = ErrorBody {
            message: error,
            hint,
            code,
            kind: kind.to_owned(),
            detail: None,
        };
        ApiError {
            status,
            body: serde_json::to_value(body).unwrap_or(Value::Null),
        }
    }

    /// 400 `bad_request` (exit code 2), with a pointer to the document.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(
            400,
            "bad_request",
            message.into(),
            Some("GET /v1/openapi.json describes every route and body".into()),
            airlock_model::exit::USAGE,
        )
    }

    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            413,
            "too_large",
            format!("request body over {limit} bytes"),
            None,
            airlock_model::exit::USAGE,
        )
    }

    pub fn timeout(what: &str) -> Self {
        ApiError::new(
            408,
            "timeout",
            format!("{what} did not arrive in time"),
            Some("send the whole request at once".into()),
            airlock_model::exit::USAGE,
        )
    }

    pub fn busy() -> Self {
        ApiError::new(
            503,
            "busy",
            "the engine is busy".into(),
            Some("retry".into()),
            1,
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, "internal", message.into(), None, 1)
    }

    /// The whole response as bytes, for the transport's answers outside the router.
    pub fn to_http1(&self) -> Vec<u8> {
        let body = serde_json::to_vec(&self.body).unwrap_or_else(|_| b"null".to_vec());
        let reason = StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    }
}

impl From<&EngineError> for ApiError {
    fn from(e: &EngineError) -> Self {
        ApiError {
            status: e.http_status(),
            body: serde_json::to_value(e.action_error()).unwrap_or(Value::Null),
        }
    }
}

impl From<ErrorBody> for ApiError {
    fn from(e: ErrorBody) -> Self {
        let status = e.http_status();
        ApiError {
            status,
            body: serde_json::to_value(e).unwrap_or(Value::Null),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError::from(&e)
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.body).unwrap_or_else(|_| b"null".to_vec());
        let mut response = axum::response::Response::new(axum::body::Body::from(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}
