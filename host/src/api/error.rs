//! The one error shape of the HTTP API, `{"error":{"code","message"}}`, and the mapping from
//! every internal error to a status code. A 5xx never leaks internals: it is logged here and
//! answered with a generic message.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::orchestrator::OrchestratorError;
use crate::runtime::RuntimeError;
use crate::store::StoreError;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// Builds an error with a status, a machine code and a human message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(super) fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the daemon's log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Tell clients (and their retry loops) when to come back.
            return (self.status, [(axum::http::header::RETRY_AFTER, "1")], body).into_response();
        }
        (self.status, body).into_response()
    }
}

impl From<OrchestratorError> for ApiError {
    fn from(e: OrchestratorError) -> Self {
        match e {
            OrchestratorError::UnknownTask(_) | OrchestratorError::NotFound(_) => Self::not_found(e.to_string()),
            OrchestratorError::BadRequest(m) => Self::bad_request(m),
            OrchestratorError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            OrchestratorError::ArgsConflict(m) => Self::new(StatusCode::CONFLICT, "args_conflict", m),
            OrchestratorError::Component(r) => r.into(),
            OrchestratorError::Store(m) => Self::internal(m),
            OrchestratorError::Unavailable(m) => {
                tracing::warn!(error = %m, "answering 503: the database is unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; try again shortly",
                )
            }
            OrchestratorError::IdempotencyMismatch(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_mismatch", e.to_string())
            }
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::TooLarge { .. } => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string()),
            RuntimeError::Host(_) => Self::internal(e),
            _ => Self::new(StatusCode::BAD_REQUEST, "invalid_component", e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        OrchestratorError::from(e).into()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        body_error(r.status(), r.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        body_error(r.status(), r.body_text())
    }
}

/// A request body that could not be read or parsed: 413 and 415 keep their status, the rest is 400.
fn body_error(status: StatusCode, text: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(status, "too_large", format!("request body too large: {text}")),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(status, "unsupported_media_type", text),
        _ => ApiError::bad_request(text),
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(r.body_text())
    }
}
