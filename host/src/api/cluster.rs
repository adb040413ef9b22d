//! The token ring (`/v1/cluster/tokens`) and pinning over HTTP (`/v1/cluster/pins`): which tasks are pinned to which node patterns, and
//! who may run them right now (a pinned task that no live node matches is reported as
//! unrunnable, not left silently stuck).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::json::Json;
use super::{ApiError, AppState};
use crate::cluster::pins::{self, PinNode};
use crate::model::{Millis, TaskPatch, TokenAudit};

/// Body of `POST /v1/cluster/pins`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PinBody {
    /// The task.
    task: String,
    /// Ordered SQL `LIKE` patterns over node names and labels (at least one).
    patterns: Vec<String>,
}

/// A pinned task, its patterns and the live nodes that may run it now.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PinView {
    task: String,
    patterns: Vec<String>,
    eligible: Vec<String>,
    runnable: bool,
}

/// Every pinned task with its pins and the live nodes that may run it now, `nodes` being the
/// node list read at `now` (one read of the tasks, whatever the number of pinned tasks).
pub(super) async fn pin_views(
    s: &AppState,
    now: crate::model::Millis,
    nodes: &[crate::model::NodeInfo],
    only: Option<&str>,
) -> Result<Vec<PinView>, ApiError> {
    let timeout = s.orch.heartbeat_timeout_ms();
    // The live nodes as this node's claim filter sees them (`services::claim_filter`).
    let live: Vec<PinNode<'_>> = crate::cluster::leader::by_seniority(nodes, now, timeout, s.orch.node())
        .into_iter()
        .map(|n| PinNode { name: &n.name, labels: &n.labels })
        .collect();
    let tasks = s.orch.task_list().await?;
    Ok(tasks
        .iter()
        .filter(|t| !t.pins.is_empty() && only.is_none_or(|o| o == t.name))
        .map(|t| {
            let eligible: Vec<String> =
                pins::eligible(&t.pins, &live).unwrap_or_default().into_iter().map(String::from).collect();
            PinView { task: t.name.clone(), patterns: t.pins.clone(), runnable: !eligible.is_empty(), eligible }
        })
        .collect())
}

/// The tasks of the views that no live node can run.
pub(super) fn unrunnable(views: &[PinView]) -> Vec<&str> {
    views.iter().filter(|v| !v.runnable).map(|v| v.task.as_str()).collect()
}

/// Every pinned task and the ones no live node can run.
#[derive(Serialize, ToSchema)]
pub(super) struct PinList<'a> {
    /// Every pinned task.
    #[schema(value_type = Vec<PinView>)]
    pins: &'a [PinView],
    /// The pinned tasks no live node can run.
    #[schema(value_type = Vec<String>)]
    unrunnable: Vec<&'a str>,
}

/// List pins
///
/// Every pinned task, who may run it now, and the unrunnable ones.
#[utoipa::path(
    get, path = "/v1/cluster/pins", tag = "cluster",
    responses((status = 200, description = "The pins.", body = PinList))
)]
pub(super) async fn list(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let (now, nodes) = s.orch.node_list().await?;
    let views = pin_views(&s, now, &nodes, None).await?;
    Ok(Json(PinList { pins: &views, unrunnable: unrunnable(&views) }).into_response())
}

/// Pin a task
///
/// Sends the task to the nodes its first pattern with a live match names; answers the pins and
/// who may run it now.
#[utoipa::path(
    post, path = "/v1/cluster/pins", tag = "cluster", request_body = PinBody,
    responses(
        (status = 201, description = "Pinned.", body = PinView),
        (status = 400, description = "No or malformed patterns.", body = ErrorBody),
        (status = 404, description = "No such task.", body = ErrorBody),
        (status = 415, description = "Not `application/json`.", body = ErrorBody),
    )
)]
pub(super) async fn pin(State(s): State<AppState>, Json(body): Json<PinBody>) -> Result<impl IntoResponse, ApiError> {
    // Pinning takes at least one pattern (unpinning is DELETE).
    pins::validate(&body.patterns).map_err(ApiError::bad_request)?;
    set_pins(&s, &body.task, body.patterns).await?;
    let (now, nodes) = s.orch.node_list().await?;
    let view = pin_views(&s, now, &nodes, Some(&body.task)).await?.pop();
    if view.as_ref().is_some_and(|v| !v.runnable) {
        tracing::warn!(task = %body.task, "pinned to patterns no live node matches: it will not run until one joins");
    }
    Ok((StatusCode::CREATED, Json(view)))
}

/// Unpin a task
///
/// Any node may run it again.
#[utoipa::path(
    delete, path = "/v1/cluster/pins/{task}", tag = "cluster",
    params(("task" = String, Path, description = "Task name.")),
    responses(
        (status = 204, description = "Unpinned."),
        (status = 404, description = "No such task.", body = ErrorBody),
    )
)]
pub(super) async fn unpin(State(s): State<AppState>, Path(task): Path<String>) -> Result<impl IntoResponse, ApiError> {
    set_pins(&s, &task, Vec::new()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a task's pins through the one task update (validated there).
async fn set_pins(s: &AppState, task: &str, patterns: Vec<String>) -> Result<(), ApiError> {
    let patch = TaskPatch { pins: Some(patterns), ..TaskPatch::default() };
    s.orch.task_update(task, &patch).await?;
    Ok(())
}

/// The ring: its version and size, tokens per node, the spread of the loads (most minus
/// fewest; `null` before the first assignment) and the latest swaps.
#[derive(Serialize, ToSchema)]
pub(super) struct Tokens {
    version: i64,
    total_tokens: u32,
    updated_at: Millis,
    distribution: BTreeMap<String, i64>,
    spread: Option<i64>,
    swaps: Vec<TokenAudit>,
}

/// Show the token ring
///
/// The ring's version and size, tokens per node, the spread of the
/// loads and the latest swaps.
#[utoipa::path(
    get, path = "/v1/cluster/tokens", tag = "cluster",
    responses((status = 200, description = "The ring.", body = Tokens))
)]
pub(super) async fn tokens(State(s): State<AppState>) -> Result<Json<Tokens>, ApiError> {
    let ring = s.orch.ring().await?;
    let loads = s.orch.token_loads().await?;
    let (min, max) = (loads.iter().map(|l| l.tokens).min(), loads.iter().map(|l| l.tokens).max());
    Ok(Json(Tokens {
        version: ring.version,
        total_tokens: ring.total_tokens,
        updated_at: ring.updated_at,
        distribution: loads.into_iter().map(|l| (l.node, l.tokens)).collect(),
        spread: max.zip(min).map(|(a, b)| a - b),
        swaps: s.orch.token_audits(10).await?,
    }))
}
