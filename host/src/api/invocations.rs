//! Invocations: route one or many calls, read one, long-poll its result, list, count and
//! read its status history.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, MAX_LONG_POLL};
use crate::model::{Invocation, InvocationFilter, InvocationStatus};
use crate::orchestrator::CallRequest;

/// Most calls in one batch request.
const MAX_BATCH_CALLS: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CallBody {
    task: String,
    #[serde(default)]
    args: Value,
    #[serde(default)]
    options: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchBody {
    calls: Vec<CallBody>,
}

fn to_call(c: CallBody) -> Result<CallRequest, ApiError> {
    if c.options.as_ref().is_some_and(|o| !o.is_null() && !o.as_object().is_some_and(|m| m.is_empty())) {
        return Err(ApiError::bad_request("call options are not supported yet"));
    }
    let args = if c.args.is_null() { json!({}) } else { c.args };
    Ok(CallRequest { task: c.task, args })
}

/// The JSON view of an invocation (with live progress when running here).
fn view(s: &AppState, inv: &Invocation) -> Value {
    let mut v = serde_json::to_value(inv).unwrap_or_default();
    if let Some(p) = s.orch.progress(&inv.id)
        && let Some(m) = v.as_object_mut()
    {
        m.insert("progress".into(), json!(p));
    }
    v
}

/// `POST /v1/invocations`.
pub(super) async fn route_one(
    State(s): State<AppState>,
    body: Result<Json<CallBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body?;
    let call = to_call(body)?;
    let inv = s.orch.route(vec![call]).await?;
    let inv = inv.first().ok_or_else(|| ApiError::bad_request("nothing routed"))?;
    Ok((StatusCode::ACCEPTED, Json(json!({"id": inv.id, "status": inv.status, "reused": false}))))
}

/// `POST /v1/invocations/batch`.
pub(super) async fn route_batch(
    State(s): State<AppState>,
    body: Result<Json<BatchBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body?;
    if body.calls.is_empty() {
        return Err(ApiError::bad_request("`calls` is empty"));
    }
    if body.calls.len() > MAX_BATCH_CALLS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_BATCH_CALLS} calls per batch, got {}",
            body.calls.len()
        )));
    }
    let calls = body.calls.into_iter().map(to_call).collect::<Result<Vec<_>, _>>()?;
    let invs = s.orch.route(calls).await?;
    let out: Vec<Value> = invs.iter().map(|i| json!({"id": i.id, "status": i.status})).collect();
    Ok((StatusCode::ACCEPTED, Json(json!({ "invocations": out }))))
}

/// `GET /v1/invocations/{id}`.
pub(super) async fn show(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let inv = s.orch.get(&id).await?;
    Ok(Json(view(&s, &inv)))
}

#[derive(Deserialize)]
pub(super) struct ResultQuery {
    timeout_ms: Option<u64>,
}

/// `GET /v1/invocations/{id}/result?timeout_ms=N`: 200 once final, 202 if not final in time.
pub(super) async fn result(
    State(s): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<ResultQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = q?;
    let timeout = Duration::from_millis(q.timeout_ms.unwrap_or(0)).min(MAX_LONG_POLL);
    let (inv, done) = s.orch.wait_final(&id, Some(timeout)).await?;
    let status = if done { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(view(&s, &inv))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    task: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn parse_status(s: Option<String>) -> Result<Option<InvocationStatus>, ApiError> {
    s.map(|s| s.parse::<InvocationStatus>().map_err(ApiError::bad_request)).transpose()
}

/// `GET /v1/invocations?task=&status=&limit=&cursor=`: newest first.
pub(super) async fn list(
    State(s): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let filter = InvocationFilter { task: q.task, status: parse_status(q.status)?, limit, cursor: q.cursor };
    let page = s.orch.store().invocation_list(&filter).await?;
    let next = if page.len() as u32 == limit { page.last().map(|i| i.id.clone()) } else { None };
    let items: Vec<Value> = page.iter().map(|i| view(&s, i)).collect();
    Ok(Json(json!({ "invocations": items, "next_cursor": next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CountQuery {
    task: Option<String>,
    status: Option<String>,
}

/// `GET /v1/invocations/count?task=&status=`: counts per task and status, and the total.
pub(super) async fn count(
    State(s): State<AppState>,
    q: Result<Query<CountQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let counts = s.orch.store().invocation_count(q.task.as_deref(), parse_status(q.status)?).await?;
    let total: i64 = counts.iter().map(|c| c.count).sum();
    Ok(Json(json!({ "total": total, "counts": counts })))
}

/// `GET /v1/invocations/{id}/children`: the invocations it called (pynenc's family tree, one
/// level; follow `children` of each for deeper levels).
pub(super) async fn children(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    s.orch.get(&id).await?;
    let kids = s.orch.store().invocation_children(&id).await?;
    let items: Vec<Value> = kids.iter().map(|i| view(&s, i)).collect();
    Ok(Json(json!({ "id": id, "children": items })))
}

/// `GET /v1/invocations/{id}/history`.
pub(super) async fn history(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    s.orch.get(&id).await?;
    let h = s.orch.store().invocation_history(&id).await?;
    Ok(Json(json!({ "id": id, "history": h })))
}

/// `POST /v1/invocations/{id}/cancel`: the invocation as it is after the cancel.
pub(super) async fn cancel(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let inv = s.orch.cancel(&id).await?;
    Ok(Json(view(&s, &inv)))
}

/// `POST /v1/invocations/{id}/rerun`: routes the same call again; 202 with the new invocation.
pub(super) async fn rerun(State(s): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let inv = s.orch.rerun(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"id": inv.id, "status": inv.status, "reused": false, "rerun_of": id}))))
}
