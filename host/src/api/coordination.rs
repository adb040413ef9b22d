//! Triggers (`/v1/triggers`), events (`/v1/events`), the atomic services' execution records
//! (`/v1/services/runs`) and the node list (`/v1/cluster/nodes`).

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::json::{Json, Query};
use super::{ApiError, AppState};
use crate::model::{Millis, ServiceRun, Trigger, TriggerRun};
use crate::orchestrator::NewTrigger;

/// Create a trigger
///
/// A trigger routes a call of its task when its condition (`on`) holds.
#[utoipa::path(
    post, path = "/v1/triggers", tag = "triggers", request_body = NewTrigger,
    responses(
        (status = 201, description = "Created.", body = Trigger),
        (status = 400, description = "A malformed condition or arguments.", body = ErrorBody),
        (status = 404, description = "No such task.", body = ErrorBody),
        (status = 413, description = "Arguments over `--max-args-bytes`.", body = ErrorBody),
        (status = 415, description = "Not `application/json`.", body = ErrorBody),
    )
)]
pub(super) async fn create_trigger(
    State(s): State<AppState>,
    Json(body): Json<NewTrigger>,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(args) = &body.args {
        super::guard::check_size("trigger arguments", args, s.limits.max_args_bytes)?;
    }
    let t = s.orch.trigger_create(body).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

/// Every trigger.
#[derive(Serialize, ToSchema)]
pub(super) struct TriggerList {
    triggers: Vec<Trigger>,
}

/// List triggers
#[utoipa::path(
    get, path = "/v1/triggers", tag = "triggers",
    responses((status = 200, description = "Every trigger.", body = TriggerList))
)]
pub(super) async fn list_triggers(State(s): State<AppState>) -> Result<Json<TriggerList>, ApiError> {
    Ok(Json(TriggerList { triggers: s.orch.trigger_list().await? }))
}

/// A trigger with its latest runs.
#[derive(Serialize, ToSchema)]
pub(super) struct TriggerView {
    #[serde(flatten)]
    trigger: Trigger,
    runs: Vec<TriggerRun>,
}

/// Show a trigger
///
/// The trigger and its latest 100 runs.
#[utoipa::path(
    get, path = "/v1/triggers/{id}", tag = "triggers",
    params(("id" = String, Path, description = "Trigger id.")),
    responses(
        (status = 200, description = "The trigger and its runs.", body = TriggerView),
        (status = 404, description = "No such trigger.", body = ErrorBody),
    )
)]
pub(super) async fn show_trigger(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TriggerView>, ApiError> {
    let (trigger, runs) =
        s.orch.trigger_get(&id, 100).await?.ok_or_else(|| ApiError::not_found(format!("trigger `{id}`")))?;
    Ok(Json(TriggerView { trigger, runs }))
}

/// Delete a trigger
#[utoipa::path(
    delete, path = "/v1/triggers/{id}", tag = "triggers",
    params(("id" = String, Path, description = "Trigger id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such trigger.", body = ErrorBody),
    )
)]
pub(super) async fn delete_trigger(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    s.orch.trigger_delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An event to post.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EventBody {
    /// Its code (triggers with `{"event": code}` fire).
    code: String,
    /// Any JSON (`{}` when absent).
    #[serde(default)]
    payload: Value,
}

/// A stored event without its payload.
#[derive(Serialize, ToSchema)]
pub(super) struct EventAccepted {
    seq: i64,
    code: String,
    at: Millis,
}

/// Post an event
///
/// Stores the event; triggers on its code fire. Answers the stored event without its payload
/// (an echo would only double the traffic of large payloads).
#[utoipa::path(
    post, path = "/v1/events", tag = "triggers", request_body = EventBody,
    responses(
        (status = 202, description = "Stored.", body = EventAccepted),
        (status = 400, description = "A malformed event.", body = ErrorBody),
        (status = 413, description = "Payload over `--max-args-bytes`.", body = ErrorBody),
        (status = 415, description = "Not `application/json`.", body = ErrorBody),
    )
)]
pub(super) async fn post_event(
    State(s): State<AppState>,
    Json(body): Json<EventBody>,
) -> Result<impl IntoResponse, ApiError> {
    let payload = if body.payload.is_null() { Value::Object(serde_json::Map::new()) } else { body.payload };
    super::guard::check_size("event payload", &payload, s.limits.max_args_bytes)?;
    let e = s.orch.event_post(&body.code, &payload).await?;
    Ok((StatusCode::ACCEPTED, Json(EventAccepted { seq: e.seq, code: e.code, at: e.at })))
}

/// How many to show.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitQuery {
    /// At most this many (1-1000, default 50).
    limit: Option<u32>,
}

/// The latest executions of the atomic services.
#[derive(Serialize, ToSchema)]
pub(super) struct ServiceRuns {
    runs: Vec<ServiceRun>,
}

/// List the atomic services' runs
///
/// The latest executions of the atomic services (recovery, triage, triggers, purge; run by the
/// leader), newest first.
#[utoipa::path(
    get, path = "/v1/services/runs", tag = "cluster", params(LimitQuery),
    responses(
        (status = 200, description = "The latest runs.", body = ServiceRuns),
        (status = 400, description = "A malformed limit.", body = ErrorBody),
    )
)]
pub(super) async fn service_runs(
    State(s): State<AppState>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<ServiceRuns>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1_000);
    Ok(Json(ServiceRuns { runs: s.orch.service_runs(limit).await? }))
}

/// A node of the cluster as `GET /v1/cluster/nodes` shows it.
#[derive(Serialize, ToSchema)]
pub(super) struct NodeView {
    name: String,
    labels: Vec<String>,
    capacity: u32,
    live: bool,
    leader: bool,
    joined_at: Millis,
    started_at: Millis,
    last_heartbeat: Millis,
    left_at: Option<Millis>,
    tokens: i64,
    running: i64,
    owned: i64,
}

/// The nodes, the leader (`null` between two terms) and its lease's epoch, on the database clock.
#[derive(Serialize, ToSchema)]
pub(super) struct Nodes {
    now: Millis,
    nodes: Vec<NodeView>,
    leader: Option<String>,
    lease_epoch: i64,
}

/// List the nodes
///
/// Every node with its liveness on the database clock, the leader,
/// tokens owned, and the invocations it runs (`running`) and holds in any owned status
/// (`owned`: claimed, running, paused, resumed).
#[utoipa::path(
    get, path = "/v1/cluster/nodes", tag = "cluster",
    responses((status = 200, description = "The nodes and the leader.", body = Nodes))
)]
pub(super) async fn nodes(State(s): State<AppState>) -> Result<Json<Nodes>, ApiError> {
    let (now, nodes) = s.orch.node_list().await?;
    let timeout = s.orch.heartbeat_timeout_ms();
    // The leader is the lease's holder while its lease holds by the rule `lease_claim` applies:
    // not expired and the holder live (a dead or departed holder has lost it). Between two
    // terms there is none.
    let lease = s.orch.lease().await?;
    let leader = lease
        .holder
        .filter(|h| lease.expires_at > lease.now && nodes.iter().any(|n| n.name == *h && n.is_live(now, timeout)));
    let tokens: HashMap<String, i64> = s.orch.token_loads().await?.into_iter().map(|l| (l.node, l.tokens)).collect();
    let loads: HashMap<String, (i64, i64)> =
        s.orch.node_loads().await?.into_iter().map(|l| (l.node, (l.owned, l.running))).collect();
    let nodes = nodes
        .into_iter()
        .map(|n| NodeView {
            live: n.is_live(now, timeout),
            leader: Some(&n.name) == leader.as_ref(),
            tokens: tokens.get(&n.name).copied().unwrap_or(0),
            running: loads.get(&n.name).map_or(0, |o| o.1),
            owned: loads.get(&n.name).map_or(0, |o| o.0),
            name: n.name,
            labels: n.labels,
            capacity: n.capacity,
            joined_at: n.joined_at,
            started_at: n.started_at,
            last_heartbeat: n.heartbeat_at,
            left_at: n.left_at,
        })
        .collect();
    Ok(Json(Nodes { now, nodes, leader, lease_epoch: lease.epoch }))
}
