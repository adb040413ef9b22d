//! The token ring (`/v1/cluster/tokens`) and pinning over HTTP (`/v1/cluster/pins`): which tasks are pinned to which node patterns, and
//! who may run them right now (a pinned task that no live node matches is reported as
//! unrunnable, not left silently stuck).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::cluster::pins::{self, PinNode};
use crate::model::TaskPatch;

/// Body of `POST /v1/cluster/pins`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PinBody {
    task: String,
    patterns: Vec<String>,
}

/// Every pinned task with its pins and the live nodes that may run it now (one read of the
/// tasks and one of the nodes, whatever the number of pinned tasks).
async fn pin_views(s: &AppState, only: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let (now, nodes) = s.orch.store().node_list().await?;
    let timeout = s.orch.heartbeat_timeout_ms();
    let live: Vec<PinNode<'_>> = nodes
        .iter()
        .filter(|n| n.left_at.is_none() && n.is_live(now, timeout))
        .map(|n| PinNode { name: &n.name, labels: &n.labels })
        .collect();
    let tasks = s.orch.store().task_list().await?;
    Ok(tasks
        .iter()
        .filter(|t| !t.pins.is_empty() && only.is_none_or(|o| o == t.name))
        .map(|t| {
            let eligible = pins::eligible(&t.pins, &live).unwrap_or_default();
            json!({"task": t.name, "patterns": t.pins, "eligible": eligible, "runnable": !eligible.is_empty()})
        })
        .collect())
}

/// The names of the views that no live node can run.
fn unrunnable_of(views: &[Value]) -> Vec<Value> {
    views.iter().filter(|v| v["runnable"] == false).map(|v| v["task"].clone()).collect()
}

/// The pinned tasks no live node can run now.
pub(super) async fn unrunnable(s: &AppState) -> Result<Vec<String>, ApiError> {
    Ok(unrunnable_of(&pin_views(s, None).await?).iter().filter_map(|t| t.as_str().map(String::from)).collect())
}

/// `GET /v1/cluster/pins`: every pinned task, who may run it now, and the unrunnable ones.
pub(super) async fn list(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let views = pin_views(&s, None).await?;
    let unrunnable = unrunnable_of(&views);
    Ok(Json(json!({"pins": views, "unrunnable": unrunnable})))
}

/// `POST /v1/cluster/pins` `{"task", "patterns"}` → 201 with the pins and who may run it.
pub(super) async fn pin(
    State(s): State<AppState>,
    body: Result<Json<PinBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body?;
    pins::validate(&body.patterns).map_err(ApiError::bad_request)?;
    set_pins(&s, &body.task, body.patterns.clone()).await?;
    let v = pin_views(&s, Some(&body.task)).await?.pop().unwrap_or(Value::Null);
    if v["runnable"] == false {
        tracing::warn!(task = %body.task, "pinned to patterns no live node matches: it will not run until one joins");
    }
    Ok((StatusCode::CREATED, Json(v)))
}

/// `DELETE /v1/cluster/pins/{task}` → 204: any node may run it again.
pub(super) async fn unpin(State(s): State<AppState>, Path(task): Path<String>) -> Result<impl IntoResponse, ApiError> {
    set_pins(&s, &task, Vec::new()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_pins(s: &AppState, task: &str, patterns: Vec<String>) -> Result<(), ApiError> {
    let patch = TaskPatch { pins: Some(patterns), ..TaskPatch::default() };
    s.orch
        .store()
        .task_update(task, &patch)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("unknown task `{task}`")))?;
    s.orch.invalidate_tasks();
    Ok(())
}

/// `GET /v1/cluster/tokens`: the ring's version and size, tokens per node, the spread of the
/// loads and the latest swaps.
pub(super) async fn tokens(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let store = s.orch.store();
    let ring = store.ring_get(false).await?;
    let loads = store.token_loads().await?;
    let (min, max) = (loads.iter().map(|(_, c)| *c).min(), loads.iter().map(|(_, c)| *c).max());
    let distribution: serde_json::Map<String, Value> = loads.into_iter().map(|(n, c)| (n, json!(c))).collect();
    Ok(Json(json!({
        "version": ring.version,
        "total_tokens": ring.total_tokens,
        "updated_at": ring.updated_at,
        "distribution": distribution,
        "spread": max.zip(min).map(|(a, b)| a - b),
        "swaps": store.token_audits(10).await?,
    })))
}
