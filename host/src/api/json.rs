//! JSON in and out of handlers: [`Json`] is axum's extractor and response with one change, its
//! rejection is the one error type ([`ApiError`]), so a body that is not JSON, does not fit
//! the handler's type, is too large or is not declared `application/json` answers in the
//! error shape of `error.rs` (400, 400, 413, 415) without each handler converting it.
//! [`OptionalJson`] is the same for a body that may be left out, and [`Query`] for query
//! strings (400).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ApiError;

/// A JSON request body or response body (axum's `Json` with [`ApiError`] as its rejection).
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(super) struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A query string (axum's `Query` with [`ApiError`] as its rejection).
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(super) struct Query<T>(pub T);

/// A JSON request body that may be left out: an empty (or all-blank) body is `T::default()`,
/// whatever its content type; any other body must be `application/json` (415) and parse as `T`
/// (400, as [`Json`] answers).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        super::guard::require_content_type(&headers, "application/json")?;
        let axum::Json(value) = axum::Json::<T>::from_bytes(&body)?;
        Ok(Self(value))
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::{Body, to_bytes};
    use axum::extract::DefaultBodyLimit;
    use axum::http::{Request, StatusCode, header};
    use axum::routing::{get, post};
    use serde::{Deserialize, Serialize};
    use serde_json::Value;
    use tower::ServiceExt;

    use super::{Json, OptionalJson, Query};

    #[derive(Debug, Default, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct Body1 {
        #[serde(default)]
        n: u32,
        #[serde(default)]
        v: Value,
    }

    fn app() -> Router {
        Router::new()
            .route("/json", post(|Json(b): Json<Body1>| async move { Json(b) }))
            .route("/optional", post(|OptionalJson(b): OptionalJson<Body1>| async move { Json(b) }))
            .route("/query", get(|Query(b): Query<Body1>| async move { Json(b) }))
            .layer(DefaultBodyLimit::max(1024))
    }

    /// Posts `body` (with `content_type` if any) and returns the status and the JSON answer.
    async fn post_to(path: &str, content_type: Option<&str>, body: impl Into<String>) -> (StatusCode, Value) {
        send(Request::post(path), content_type, body).await
    }

    async fn send(
        mut req: axum::http::request::Builder,
        content_type: Option<&str>,
        body: impl Into<String>,
    ) -> (StatusCode, Value) {
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = req.body(Body::from(body.into())).unwrap_or_else(|e| panic!("{e}"));
        let res = app().oneshot(req).await.unwrap_or_else(|e| panic!("{e}"));
        let status = res.status();
        let bytes = to_bytes(res.into_body(), 1 << 20).await.unwrap_or_else(|e| panic!("{e}"));
        (status, serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {bytes:?}")))
    }

    /// The answer is the one error shape, `{"error":{"code","message"}}` and nothing else.
    fn assert_error(v: &Value, code: &str) {
        let obj = v.as_object().unwrap_or_else(|| panic!("{v}"));
        assert_eq!(obj.len(), 1, "{v}");
        let err = v["error"].as_object().unwrap_or_else(|| panic!("{v}"));
        assert_eq!(err.len(), 2, "{v}");
        assert_eq!(err["code"], code, "{v}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }

    const JSON: Option<&str> = Some("application/json");

    #[tokio::test]
    async fn rejections_answer_in_the_one_error_shape() {
        let (s, v) = post_to("/json", JSON, r#"{"n": 3, "v": [1]}"#).await;
        assert_eq!((s, v["n"].as_u64()), (StatusCode::OK, Some(3)), "{v}");
        // Malformed JSON, a wrong type, an unknown field: 400 `bad_request`, as before.
        for body in [r#"{"n": "#, r#"{"n": "three"}"#, r#"{"m": 1}"#, "1"] {
            let (s, v) = post_to("/json", JSON, body).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
            assert_error(&v, "bad_request");
        }
        // Deeper than serde_json's limit of 128: 400.
        let deep = format!(r#"{{"v": {}1{}}}"#, "[".repeat(129), "]".repeat(129));
        let (s, v) = post_to("/json", JSON, deep).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_error(&v, "bad_request");
        // No or another content type: 415.
        for ct in [None, Some("text/plain")] {
            let (s, v) = post_to("/json", ct, r#"{"n": 1}"#).await;
            assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}: {v}");
            assert_error(&v, "unsupported_media_type");
        }
        // Over the body limit: 413.
        let (s, v) = post_to("/json", JSON, format!(r#"{{"v": "{}"}}"#, "x".repeat(2000))).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
        assert_error(&v, "too_large");
        // A query string that does not fit: 400.
        let (s, v) = send(Request::get("/query?n=4"), None, "").await;
        assert_eq!((s, v["n"].as_u64()), (StatusCode::OK, Some(4)), "{v}");
        for q in ["n=x", "m=1"] {
            let (s, v) = send(Request::get(format!("/query?{q}")), None, "").await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {v}");
            assert_error(&v, "bad_request");
        }
    }

    #[tokio::test]
    async fn an_optional_body_may_be_left_out_and_is_checked_when_given() {
        for (ct, body) in [(None, ""), (Some("text/plain"), "  \n"), (JSON, "")] {
            let (s, v) = post_to("/optional", ct, body).await;
            assert_eq!((s, v["n"].as_u64()), (StatusCode::OK, Some(0)), "{v}");
        }
        let (s, v) = post_to("/optional", JSON, r#"{"n": 7}"#).await;
        assert_eq!((s, v["n"].as_u64()), (StatusCode::OK, Some(7)), "{v}");
        let (s, v) = post_to("/optional", None, r#"{"n": 7}"#).await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
        assert_error(&v, "unsupported_media_type");
        for body in [r#"{"n": "#, r#"{"n": -1}"#] {
            let (s, v) = post_to("/optional", JSON, body).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
            assert_error(&v, "bad_request");
        }
        let (s, v) = post_to("/optional", JSON, format!(r#"{{"v": "{}"}}"#, "x".repeat(2000))).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
        assert_error(&v, "too_large");
    }
}
