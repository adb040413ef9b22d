//! Rate limits (`/v1/rate-limits`): create or replace, list, show, delete. A task counts its
//! attempts against one by naming it (`PATCH /v1/tasks/{task}` `{"rate_limit": name}`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::json::Json;
use super::{ApiError, AppState};
use crate::model::rate_limit::{RateLimit, RateLimitSpec};

/// Create or replace a rate limit
///
/// At most `limit` attempts of the tasks naming it start per window of `per_ms` (the
/// database clock's, aligned on multiples of `per_ms`), across every node; with `key`, per
/// value found at that JSON path in the call's arguments. Calls over the limit wait (their
/// invocation shows `rate_limited_until`); they never fail for it. A new `per_ms` or `key`
/// starts counting afresh.
#[utoipa::path(
    put, path = "/v1/rate-limits/{name}", tag = "rate limits", request_body = RateLimitSpec,
    params(("name" = String, Path, description = "The limit's name: 1-128 letters, digits, `-`, `_`, `.`.")),
    responses(
        (status = 200, description = "Replaced.", body = RateLimit),
        (status = 201, description = "Created.", body = RateLimit),
        (status = 400, description = "A limit or window out of range, a malformed key path or name.", body = ErrorBody),
        (status = 415, description = "Not `application/json`.", body = ErrorBody),
    )
)]
pub(super) async fn put(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Json(spec): Json<RateLimitSpec>,
) -> Result<impl IntoResponse, ApiError> {
    let (limit, created) = s.orch.rate_limit_put(&name, &spec).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(limit)))
}

/// Every rate limit.
#[derive(Serialize, ToSchema)]
pub(super) struct RateLimitList {
    rate_limits: Vec<RateLimit>,
}

/// List rate limits
#[utoipa::path(
    get, path = "/v1/rate-limits", tag = "rate limits",
    responses((status = 200, description = "Every rate limit, by name, with the tasks naming it.", body = RateLimitList))
)]
pub(super) async fn list(State(s): State<AppState>) -> Result<Json<RateLimitList>, ApiError> {
    Ok(Json(RateLimitList { rate_limits: s.orch.rate_limit_list().await? }))
}

/// Show a rate limit
#[utoipa::path(
    get, path = "/v1/rate-limits/{name}", tag = "rate limits",
    params(("name" = String, Path, description = "The limit's name.")),
    responses(
        (status = 200, description = "The limit and the tasks naming it.", body = RateLimit),
        (status = 404, description = "No such limit.", body = ErrorBody),
    )
)]
pub(super) async fn show(State(s): State<AppState>, Path(name): Path<String>) -> Result<Json<RateLimit>, ApiError> {
    Ok(Json(s.orch.rate_limit_get(&name).await?))
}

/// Delete a rate limit
#[utoipa::path(
    delete, path = "/v1/rate-limits/{name}", tag = "rate limits",
    params(("name" = String, Path, description = "The limit's name.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such limit.", body = ErrorBody),
        (status = 409, description = "A task names it.", body = ErrorBody),
    )
)]
pub(super) async fn remove(State(s): State<AppState>, Path(name): Path<String>) -> Result<impl IntoResponse, ApiError> {
    s.orch.rate_limit_delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
