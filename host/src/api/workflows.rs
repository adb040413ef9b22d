//! Workflows and arrays (`/v1/workflows`, `/v1/arrays`): creation, summaries, incremental
//! node sync (`/nodes?updated_since=`), pause, resume (hot or cold) and cancel.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::json::{Json, OptionalJson, Query};
use super::{ApiError, AppState};
use crate::model::Millis;
use crate::model::workflow::{ArrayRequest, WorkflowInfo, WorkflowKind, WorkflowNode, WorkflowRequest, WorkflowStatus};
use crate::orchestrator::workflows::{ResumeMode, WorkflowSummary};

/// A workflow or array just created.
#[derive(Serialize)]
pub(super) struct Created {
    id: String,
    status: WorkflowStatus,
}

impl From<WorkflowInfo> for Created {
    fn from(wf: WorkflowInfo) -> Self {
        Self { id: wf.id, status: wf.status }
    }
}

/// `POST /v1/workflows` → 201 `{"id","status"}`.
pub(super) async fn create(
    State(s): State<AppState>,
    Json(body): Json<WorkflowRequest>,
) -> Result<impl IntoResponse, ApiError> {
    for n in &body.nodes {
        super::guard::check_size(&format!("arguments of node `{}`", n.id), &n.args, s.limits.max_args_bytes)?;
    }
    let wf = s.orch.workflow_create(body, WorkflowKind::Workflow).await?;
    Ok((StatusCode::CREATED, Json(Created::from(wf))))
}

/// `POST /v1/arrays` → 201 `{"id","status"}`: one task over a list of arguments.
pub(super) async fn create_array(
    State(s): State<AppState>,
    Json(body): Json<ArrayRequest>,
) -> Result<impl IntoResponse, ApiError> {
    for (i, a) in body.args.iter().enumerate() {
        super::guard::check_size(&format!("arguments of element {i}"), a, s.limits.max_args_bytes)?;
    }
    let wf = s.orch.workflow_create(body.into_workflow(), WorkflowKind::Array).await?;
    Ok((StatusCode::CREATED, Json(Created::from(wf))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    limit: Option<u32>,
}

/// Workflows, newest first.
#[derive(Serialize)]
pub(super) struct WorkflowList {
    workflows: Vec<WorkflowInfo>,
}

/// `GET /v1/workflows?limit=N`: newest first.
pub(super) async fn list(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<WorkflowList>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    Ok(Json(WorkflowList { workflows: s.orch.workflow_list(limit).await? }))
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
    Query(q): Query<ShowQuery>,
) -> Result<Json<WorkflowSummary>, ApiError> {
    Ok(Json(s.orch.workflow_summary(&id, q.nodes.unwrap_or(true)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SinceQuery {
    updated_since: Option<i64>,
}

/// The nodes changed since a time, and the time to ask from next.
#[derive(Serialize)]
pub(super) struct NodesSince {
    server_time: Millis,
    nodes: Vec<WorkflowNode>,
}

/// `GET /v1/workflows/{id}/nodes?updated_since=T` → `{"server_time","nodes"}`: the nodes
/// changed after `T`; pass `server_time` as the next `T` (some nodes come twice, none is missed).
pub(super) async fn nodes(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<SinceQuery>,
) -> Result<Json<NodesSince>, ApiError> {
    let (server_time, nodes) = s.orch.workflow_nodes_since(&id, q.updated_since.unwrap_or(i64::MIN)).await?;
    Ok(Json(NodesSince { server_time, nodes }))
}

/// `POST /v1/workflows/{id}/pause` → the summary.
pub(super) async fn pause(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<WorkflowSummary>, ApiError> {
    Ok(Json(s.orch.workflow_pause(&id).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ResumeBody {
    #[serde(default)]
    mode: ResumeMode,
}

/// `POST /v1/workflows/{id}/resume` with an optional `{"mode":"hot"|"cold"}` (no body: hot)
/// → the summary.
pub(super) async fn resume(
    State(s): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<ResumeBody>,
) -> Result<Json<WorkflowSummary>, ApiError> {
    Ok(Json(s.orch.workflow_resume(&id, body.mode).await?))
}

/// `POST /v1/workflows/{id}/cancel` → the summary.
pub(super) async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<WorkflowSummary>, ApiError> {
    Ok(Json(s.orch.workflow_cancel(&id).await?))
}
