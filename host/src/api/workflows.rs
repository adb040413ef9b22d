//! Workflows and arrays (`/v1/workflows`, `/v1/arrays`): creation, summaries, incremental
//! node sync (`/nodes?updated_since=`), pause, resume (hot or cold) and cancel.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};
use crate::model::workflow::{ArrayRequest, WorkflowKind, WorkflowRequest};
use crate::orchestrator::workflows::ResumeMode;

/// `POST /v1/workflows` → 201 `{"id","status"}`.
pub(super) async fn create(
    State(s): State<AppState>,
    body: Result<Json<WorkflowRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body?;
    for n in &body.nodes {
        super::guard::check_size(&format!("arguments of node `{}`", n.id), &n.args, s.limits.max_args_bytes)?;
    }
    let wf = s.orch.workflow_create(body, WorkflowKind::Workflow).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": wf.id, "status": wf.status}))))
}

/// `POST /v1/arrays` → 201 `{"id","status"}`: one task over a list of arguments.
pub(super) async fn create_array(
    State(s): State<AppState>,
    body: Result<Json<ArrayRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body?;
    for (i, a) in body.args.iter().enumerate() {
        super::guard::check_size(&format!("arguments of element {i}"), a, s.limits.max_args_bytes)?;
    }
    let wf = s.orch.workflow_create(body.into_workflow(), WorkflowKind::Array).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": wf.id, "status": wf.status}))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    limit: Option<u32>,
}

/// `GET /v1/workflows?limit=N`: newest first.
pub(super) async fn list(
    State(s): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    Ok(Json(json!({"workflows": s.orch.workflow_list(limit).await?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ShowQuery {
    nodes: Option<bool>,
}

/// `GET /v1/workflows/{id}[?nodes=false]`: the summary, with the nodes unless skipped.
pub(super) async fn show(
    State(s): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<ShowQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = q?;
    Ok(Json(s.orch.workflow_summary(&id, q.nodes.unwrap_or(true)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SinceQuery {
    updated_since: Option<i64>,
}

/// `GET /v1/workflows/{id}/nodes?updated_since=T` → `{"server_time","nodes"}`: the nodes
/// changed after `T`; pass `server_time` as the next `T` (some nodes come twice, none is missed).
pub(super) async fn nodes(
    State(s): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<SinceQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = q?;
    let (server_time, nodes) = s.orch.workflow_nodes_since(&id, q.updated_since.unwrap_or(i64::MIN)).await?;
    Ok(Json(json!({"server_time": server_time, "nodes": nodes})))
}

/// `POST /v1/workflows/{id}/pause` → the summary.
pub(super) async fn pause(State(s): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.orch.workflow_pause(&id).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ResumeBody {
    #[serde(default)]
    mode: ResumeMode,
}

/// `POST /v1/workflows/{id}/resume` with an optional `{"mode":"hot"|"cold"}` → the summary.
pub(super) async fn resume(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let body: ResumeBody = if body.iter().all(u8::is_ascii_whitespace) {
        ResumeBody::default()
    } else {
        super::guard::require_content_type(&headers, "application/json")?;
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("bad resume body: {e}")))?
    };
    Ok(Json(s.orch.workflow_resume(&id, body.mode).await?))
}

/// `POST /v1/workflows/{id}/cancel` → the summary.
pub(super) async fn cancel(State(s): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.orch.workflow_cancel(&id).await?))
}
