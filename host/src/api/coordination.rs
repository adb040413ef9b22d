//! Triggers (`/v1/triggers`), events (`/v1/events`), the atomic services' execution records
//! (`/v1/services/runs`) and the node list (`/v1/cluster/nodes`).

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::orchestrator::NewTrigger;

/// `POST /v1/triggers` → 201 with the trigger.
pub(super) async fn create_trigger(
    State(s): State<AppState>,
    body: Result<Json<NewTrigger>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body?;
    if let Some(args) = &body.args {
        super::guard::check_size("trigger arguments", args, s.limits.max_args_bytes)?;
    }
    let t = s.orch.trigger_create(body).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

/// `GET /v1/triggers`.
pub(super) async fn list_triggers(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(json!({"triggers": s.orch.store().trigger_list().await?})))
}

/// `GET /v1/triggers/{id}`: the trigger and its latest runs.
pub(super) async fn show_trigger(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let t = s.orch.store().trigger_get(&id).await?.ok_or_else(|| ApiError::not_found(format!("trigger `{id}`")))?;
    let runs = s.orch.store().trigger_runs(&id, 100).await?;
    let mut v = serde_json::to_value(&t).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(m) = v.as_object_mut() {
        m.insert("runs".into(), json!(runs));
    }
    Ok(Json(v))
}

/// `DELETE /v1/triggers/{id}` → 204.
pub(super) async fn delete_trigger(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    s.orch.trigger_delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventBody {
    code: String,
    #[serde(default)]
    payload: Value,
}

/// `POST /v1/events` → 202 `{"seq","code","at"}`: the stored event without its payload (an
/// echo would only double the traffic of large payloads).
pub(super) async fn post_event(
    State(s): State<AppState>,
    body: Result<Json<EventBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body?;
    let payload = if body.payload.is_null() { json!({}) } else { body.payload };
    super::guard::check_size("event payload", &payload, s.limits.max_args_bytes)?;
    let e = s.orch.event_post(&body.code, &payload).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"seq": e.seq, "code": e.code, "at": e.at}))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitQuery {
    limit: Option<u32>,
}

/// `GET /v1/services/runs?limit=N`: the latest executions of the atomic services.
pub(super) async fn service_runs(
    State(s): State<AppState>,
    q: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(50).clamp(1, 1_000);
    Ok(Json(json!({"runs": s.orch.store().service_list(limit).await?})))
}

/// `GET /v1/cluster/nodes`: every node with its liveness on the database clock, the leader,
/// tokens owned, and the invocations it runs (`running`) and holds in any owned status
/// (`owned`: claimed, running, paused, resumed).
pub(super) async fn nodes(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let (now, nodes) = s.orch.store().node_list().await?;
    let timeout = s.orch.heartbeat_timeout_ms();
    // The leader is the lease's holder while its lease holds by the rule `lease_claim` applies:
    // not expired and the holder live (a dead or departed holder has lost it). Between two
    // terms there is none.
    let lease = s.orch.store().lease_get().await?;
    let leader = lease
        .holder
        .filter(|h| lease.expires_at > lease.now && nodes.iter().any(|n| n.name == *h && n.is_live(now, timeout)));
    let loads: std::collections::HashMap<String, i64> = s.orch.store().token_loads().await?.into_iter().collect();
    let owned: std::collections::HashMap<String, (i64, i64)> =
        s.orch.store().owned_per_node().await?.into_iter().map(|(n, owned, running)| (n, (owned, running))).collect();
    let out: Vec<Value> = nodes
        .iter()
        .map(|n| {
            json!({
                "name": n.name,
                "labels": n.labels,
                "capacity": n.capacity,
                "live": n.is_live(now, timeout),
                "leader": Some(&n.name) == leader.as_ref(),
                "joined_at": n.joined_at,
                "started_at": n.started_at,
                "last_heartbeat": n.heartbeat_at,
                "left_at": n.left_at,
                "tokens": loads.get(&n.name).copied().unwrap_or(0),
                "running": owned.get(&n.name).map_or(0, |o| o.1),
                "owned": owned.get(&n.name).map_or(0, |o| o.0),
            })
        })
        .collect();
    Ok(Json(json!({"now": now, "nodes": out, "leader": leader, "lease_epoch": lease.epoch})))
}
