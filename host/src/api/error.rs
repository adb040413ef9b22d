//! The one error shape of the HTTP API, `{"error":{"code","message"}}`, and the mapping from
//! every internal error to a status code. A 5xx never leaks internals: it is answered with a
//! generic message, and its cause rides along in the response's extensions ([`ServerError`])
//! for the middleware [`log_server_errors`] to log, once per response.

use std::sync::Arc;

use axum::Json;
use axum::extract::Request;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::orchestrator::OrchestratorError;
use crate::runtime::RuntimeError;
use crate::store::StoreError;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// What went wrong inside, for the log only (a 5xx answers with a generic message).
    cause: Option<String>,
    /// The ids the error is about (unknown ids of a batch await), answered as `error.ids`.
    ids: Option<Vec<String>>,
}

/// The body of every error answer: `{"error":{"code","message"}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub(super) struct ErrorBody {
    /// The error.
    error: ErrorDetail,
}

/// The code and message of an error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ErrorDetail {
    /// Machine code: `bad_request`, `not_found`, `conflict`, `args_conflict`, `too_large`,
    /// `unsupported_media_type`, `idempotency_mismatch`, `invalid_component`, `unauthorized`,
    /// `forbidden`, `method_not_allowed`, `unavailable`, `internal`, …
    code: &'static str,
    /// Human message.
    message: String,
    /// The ids the error is about, when it is about several (unknown ids of a batch await).
    #[serde(skip_serializing_if = "Option::is_none")]
    ids: Option<Vec<String>>,
}

/// The cause of a 5xx answer, put in the response's extensions for [`log_server_errors`].
#[derive(Debug, Clone)]
struct ServerError(Arc<str>);

impl ApiError {
    /// Builds an error with a status, a machine code and a human message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), cause: None, ids: None }
    }

    /// Names the ids the error is about (`error.ids` in the answer).
    pub fn with_ids(mut self, ids: Vec<String>) -> Self {
        self.ids = Some(ids);
        self
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500 `internal` with a generic message; `cause` goes to the log only.
    pub(super) fn internal(cause: impl std::fmt::Display) -> Self {
        Self {
            cause: Some(cause.to_string()),
            ..Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the daemon's log")
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let cause = self.status.is_server_error().then(|| self.cause.unwrap_or_else(|| self.message.clone()));
        let body = Json(ErrorBody { error: ErrorDetail { code: self.code, message: self.message, ids: self.ids } });
        let mut response = if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Tell clients (and their retry loops) when to come back.
            (self.status, [(axum::http::header::RETRY_AFTER, "1")], body).into_response()
        } else {
            (self.status, body).into_response()
        };
        if let Some(cause) = cause {
            response.extensions_mut().insert(ServerError(cause.into()));
        }
        response
    }
}

/// The middleware that logs every 5xx answer in one line: method, path, status and the error
/// (the cause an [`ApiError`] carried, else `-`). A 500 is an error, any other 5xx (the
/// database unavailable: 503) a warning. Nothing else logs them.
pub(super) async fn log_server_errors(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let response = next.run(req).await;
    let status = response.status();
    if status.is_server_error() {
        let error = response.extensions().get::<ServerError>().map_or("-", |e| &*e.0);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(%method, %path, status = status.as_u16(), %error, "answered a server error");
        } else {
            tracing::warn!(%method, %path, status = status.as_u16(), %error, "answered a server error");
        }
    }
    response
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
            OrchestratorError::Unavailable(m) => Self {
                cause: Some(format!("the database is unavailable: {m}")),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; try again shortly",
                )
            },
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

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;

    use super::*;

    #[tokio::test]
    async fn a_server_error_keeps_its_cause_for_the_log_and_out_of_the_answer() {
        let res = ApiError::internal("disk full at /secret/path").into_response();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let cause = res.extensions().get::<ServerError>().map(|e| e.0.to_string());
        assert_eq!(cause.as_deref(), Some("disk full at /secret/path"));
        let body = to_bytes(res.into_body(), 1 << 16).await.unwrap_or_else(|e| panic!("{e}"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            v,
            serde_json::json!({"error": {"code": "internal", "message": "internal error; see the daemon's log"}})
        );

        let res = ApiError::from(OrchestratorError::Unavailable("pool timed out".into())).into_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers().get(axum::http::header::RETRY_AFTER).map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert!(res.extensions().get::<ServerError>().is_some_and(|e| e.0.contains("pool timed out")));

        // A 4xx carries nothing to log.
        let res = ApiError::bad_request("no").into_response();
        assert!(res.extensions().get::<ServerError>().is_none());
    }
}
