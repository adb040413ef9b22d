//! Workflows and arrays (`/v1/workflows`, `/v1/arrays`): creation, summaries, incremental
//! node sync (`/nodes?updated_since=`), pause, resume (hot or cold) and cancel.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::json::{Json, OptionalJson, Query};
use super::{ApiError, AppState};
use crate::model::Millis;
use crate::model::workflow::{ArrayRequest, WorkflowInfo, WorkflowKind, WorkflowNode, WorkflowRequest, WorkflowStatus};
use crate::orchestrator::workflows::{ResumeMode, WorkflowSummary};

/// A workflow or array just created.
#[derive(Serialize, ToSchema)]
pub(super) struct Created {
    id: String,
    status: WorkflowStatus,
}

impl From<WorkflowInfo> for Created {
    fn from(wf: WorkflowInfo) -> Self {
        Self { id: wf.id, status: wf.status }
    }
}

/// Create a workflow
///
/// A graph of calls, each node started when its `depends_on` are done, within
/// `max_concurrently_running` and `task_limits`.
#[utoipa::path(
    post, path = "/v1/workflows", tag = "workflows", request_body = WorkflowRequest,
    params(("traceparent" = Option<String>, Header, description = "W3C trace context: the workflow's span and its nodes' calls join this trace (ignored if invalid).")),
    responses(
        (status = 201, description = "Created.", body = Created),
        (status = 400, description = "An invalid graph (ids, dependencies, a cycle, limits) or an unknown task.", body = ErrorBody),
        (status = 413, description = "A body over `--max-batch-body-bytes` or arguments over `--max-args-bytes`.", body = ErrorBody),
        (status = 415, description = "Not `application/json`.", body = ErrorBody),
    )
)]
pub(super) async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<WorkflowRequest>,
) -> Result<impl IntoResponse, ApiError> {
    for n in &body.nodes {
        super::guard::check_size(&format!("arguments of node `{}`", n.id), &n.args, s.limits.max_args_bytes)?;
    }
    let trace = super::invocations::traceparent(&headers);
    let wf = s.orch.workflow_create(body, WorkflowKind::Workflow, trace).await?;
    Ok((StatusCode::CREATED, Json(Created::from(wf))))
}

/// Create an array
///
/// One task over a list of arguments: a workflow of nodes `"0"`…`"n-1"` without edges.
#[utoipa::path(
    post, path = "/v1/arrays", tag = "workflows", request_body = ArrayRequest,
    params(("traceparent" = Option<String>, Header, description = "W3C trace context: the array's span and its elements' calls join this trace (ignored if invalid).")),
    responses(
        (status = 201, description = "Created.", body = Created),
        (status = 400, description = "Invalid limits or an unknown task.", body = ErrorBody),
        (status = 413, description = "A body over `--max-batch-body-bytes` or arguments over `--max-args-bytes`.", body = ErrorBody),
        (status = 415, description = "Not `application/json`.", body = ErrorBody),
    )
)]
pub(super) async fn create_array(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<ArrayRequest>,
) -> Result<impl IntoResponse, ApiError> {
    for (i, a) in body.args.iter().enumerate() {
        super::guard::check_size(&format!("arguments of element {i}"), a, s.limits.max_args_bytes)?;
    }
    let trace = super::invocations::traceparent(&headers);
    let wf = s.orch.workflow_create(body.into_workflow(), WorkflowKind::Array, trace).await?;
    Ok((StatusCode::CREATED, Json(Created::from(wf))))
}

/// How many to list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// 1-1000 (default 50).
    limit: Option<u32>,
}

/// Workflows, newest first.
#[derive(Serialize, ToSchema)]
pub(super) struct WorkflowList {
    workflows: Vec<WorkflowInfo>,
}

/// List workflows
///
/// Newest first.
#[utoipa::path(
    get, path = "/v1/workflows", tag = "workflows", params(ListQuery),
    responses(
        (status = 200, description = "The workflows.", body = WorkflowList),
        (status = 400, description = "A bad limit.", body = ErrorBody),
    )
)]
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

/// What to show.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ShowQuery {
    /// Include the nodes (default true).
    nodes: Option<bool>,
}

/// Show a workflow
///
/// Its status, counts per node status and, unless `nodes=false`, its nodes.
#[utoipa::path(
    get, path = "/v1/workflows/{id}", tag = "workflows", params(("id" = String, Path, description = "Workflow id."), ShowQuery),
    responses(
        (status = 200, description = "The summary.", body = WorkflowSummary),
        (status = 400, description = "A malformed query.", body = ErrorBody),
        (status = 404, description = "No such workflow.", body = ErrorBody),
    )
)]
pub(super) async fn show(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Json<WorkflowSummary>, ApiError> {
    Ok(Json(s.orch.workflow_summary(&id, q.nodes.unwrap_or(true)).await?))
}

/// From when.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct SinceQuery {
    /// Milliseconds since the epoch: the `server_time` of the previous answer (default: all).
    updated_since: Option<i64>,
}

/// The nodes changed since a time, and the time to ask from next.
#[derive(Serialize, ToSchema)]
pub(super) struct NodesSince {
    server_time: Millis,
    nodes: Vec<WorkflowNode>,
}

/// Sync a workflow's nodes
///
/// The nodes changed after `updated_since`; pass `server_time` as the next `updated_since`
/// (some nodes come twice, none is missed).
#[utoipa::path(
    get, path = "/v1/workflows/{id}/nodes", tag = "workflows", params(("id" = String, Path, description = "Workflow id."), SinceQuery),
    responses(
        (status = 200, description = "The changed nodes.", body = NodesSince),
        (status = 400, description = "A malformed query.", body = ErrorBody),
        (status = 404, description = "No such workflow.", body = ErrorBody),
    )
)]
pub(super) async fn nodes(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<SinceQuery>,
) -> Result<Json<NodesSince>, ApiError> {
    let (server_time, nodes) = s.orch.workflow_nodes_since(&id, q.updated_since.unwrap_or(i64::MIN)).await?;
    Ok(Json(NodesSince { server_time, nodes }))
}

/// Pause a workflow
///
/// Running nodes finish, nothing new starts.
#[utoipa::path(
    post, path = "/v1/workflows/{id}/pause", tag = "workflows", params(("id" = String, Path, description = "Workflow id.")),
    responses(
        (status = 200, description = "The summary.", body = WorkflowSummary),
        (status = 404, description = "No such workflow.", body = ErrorBody),
        (status = 409, description = "The workflow is final.", body = ErrorBody),
    )
)]
pub(super) async fn pause(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<WorkflowSummary>, ApiError> {
    Ok(Json(s.orch.workflow_pause(&id).await?))
}

/// How to resume.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ResumeBody {
    /// `hot` (default) or `cold` (also restart running nodes).
    #[serde(default)]
    mode: ResumeMode,
}

/// Resume a workflow
///
/// With an optional `{"mode":"hot"|"cold"}` (no body: hot); cold also cancels the running
/// nodes' invocations and starts those nodes again.
#[utoipa::path(
    post, path = "/v1/workflows/{id}/resume", tag = "workflows", params(("id" = String, Path, description = "Workflow id.")),
    request_body(content = Option<ResumeBody>, description = "Optional; an empty body is `hot`."),
    responses(
        (status = 200, description = "The summary.", body = WorkflowSummary),
        (status = 400, description = "A malformed body.", body = ErrorBody),
        (status = 404, description = "No such workflow.", body = ErrorBody),
        (status = 409, description = "The workflow is final.", body = ErrorBody),
        (status = 415, description = "A body that is not `application/json`.", body = ErrorBody),
    )
)]
pub(super) async fn resume(
    State(s): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<ResumeBody>,
) -> Result<Json<WorkflowSummary>, ApiError> {
    Ok(Json(s.orch.workflow_resume(&id, body.mode).await?))
}

/// Cancel a workflow
///
/// Every unfinished node is cancelled, and so are the started invocations.
#[utoipa::path(
    post, path = "/v1/workflows/{id}/cancel", tag = "workflows", params(("id" = String, Path, description = "Workflow id.")),
    responses(
        (status = 200, description = "The summary.", body = WorkflowSummary),
        (status = 404, description = "No such workflow.", body = ErrorBody),
        (status = 409, description = "The workflow is final.", body = ErrorBody),
    )
)]
pub(super) async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<WorkflowSummary>, ApiError> {
    Ok(Json(s.orch.workflow_cancel(&id).await?))
}
