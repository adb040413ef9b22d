//! Invocations: route one or many calls, read one, long-poll its result, list, count and
//! read its status history.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, MAX_LONG_POLL};
use crate::model::{Invocation, InvocationFilter, InvocationStatus};
use crate::orchestrator::{CallRequest, Routed};

/// Most calls in one batch request.
const MAX_BATCH_CALLS: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CallBody {
    task: String,
    #[serde(default)]
    args: Value,
    #[serde(default)]
    options: Option<CallOptions>,
}

/// Per-call options.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct CallOptions {
    /// Same key, same invocation (a different call under a used key is 422).
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchBody {
    calls: Vec<CallBody>,
}

fn to_call(c: CallBody, header_key: Option<String>, max_args: usize) -> Result<CallRequest, ApiError> {
    super::guard::check_size("call arguments", &c.args, max_args)?;
    let option_key = c.options.unwrap_or_default().idempotency_key;
    let idempotency_key = match (header_key, option_key) {
        (Some(h), Some(o)) if h != o => {
            return Err(ApiError::bad_request("the Idempotency-Key header and options.idempotency_key differ"));
        }
        (h, o) => h.or(o),
    };
    if idempotency_key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 255) {
        return Err(ApiError::bad_request("an idempotency key must be 1-255 characters"));
    }
    let args = if c.args.is_null() { json!({}) } else { c.args };
    Ok(CallRequest { task: c.task, args, idempotency_key })
}

fn routed_json(r: &Routed) -> Value {
    json!({"id": r.invocation.id, "status": r.invocation.status, "reused": r.reused})
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

/// Largest `args` or `result` a list page shows in full, as JSON text.
pub const LIST_VALUE_MAX_BYTES: usize = 1024;

/// The view of an invocation on a list page: an `args` or `result` larger than
/// [`LIST_VALUE_MAX_BYTES`] is omitted (`null`), with `args_omitted: true` and its size in
/// `args_bytes` (`result_…` likewise); the invocation's own page has the full values.
fn brief(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        for field in ["args", "result"] {
            let Some(value) = m.get(field) else { continue };
            if value.is_null() || super::guard::json_size(value, LIST_VALUE_MAX_BYTES).is_some() {
                continue;
            }
            let bytes = serde_json::to_vec(value).map_or(0, |b| b.len());
            m.insert(field.into(), Value::Null);
            m.insert(format!("{field}_omitted"), json!(true));
            m.insert(format!("{field}_bytes"), json!(bytes));
        }
    }
    v
}

/// `POST /v1/invocations`.
/// An `Idempotency-Key` header applies to the call (it must equal `options.idempotency_key`
/// when both are given).
pub(super) async fn route_one(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<CallBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body?;
    let header_key = match headers.get("idempotency-key") {
        Some(v) => {
            Some(v.to_str().map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?.to_string())
        }
        None => None,
    };
    let call = to_call(body, header_key, s.limits.max_args_bytes)?;
    let routed = s.orch.route(vec![call]).await?;
    let r = routed.first().ok_or_else(|| ApiError::bad_request("nothing routed"))?;
    Ok((StatusCode::ACCEPTED, Json(routed_json(r))))
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
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("at most {MAX_BATCH_CALLS} calls per batch, got {}; split it", body.calls.len()),
        ));
    }
    let max = s.limits.max_args_bytes;
    let calls = body.calls.into_iter().map(|c| to_call(c, None, max)).collect::<Result<Vec<_>, _>>()?;
    let routed = s.orch.route(calls).await?;
    let out: Vec<Value> = routed.iter().map(routed_json).collect();
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

/// `GET /v1/invocations/{id}/result?timeout_ms=N`: 200 once final, 202 if not final in time
/// or when the daemon stops meanwhile (with the status of that moment).
pub(super) async fn result(
    State(s): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<ResultQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = q?;
    let timeout = Duration::from_millis(q.timeout_ms.unwrap_or(0)).min(MAX_LONG_POLL);
    let (inv, done) = tokio::select! {
        r = s.orch.wait_final(&id, Some(timeout)) => r?,
        _ = s.stop.cancelled() => s.orch.wait_final(&id, Some(Duration::ZERO)).await?,
    };
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
    if let Some(c) = q.cursor.as_deref().filter(|c| !crate::model::identity::is_invocation_id(c)) {
        let head: String = c.chars().take(64).collect();
        return Err(ApiError::bad_request(format!(
            "unknown cursor `{head}`: pass the `next_cursor` of the previous page (an invocation id), or no cursor \
             for the first page"
        )));
    }
    let filter = InvocationFilter { task: q.task, status: parse_status(q.status)?, limit, cursor: q.cursor };
    let page = s.orch.store().invocation_list(&filter).await?;
    let next = if page.len() as u32 == limit { page.last().map(|i| i.id.clone()) } else { None };
    let items: Vec<Value> = page.iter().map(|i| brief(view(&s, i))).collect();
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
    let items: Vec<Value> = kids.iter().map(|i| brief(view(&s, i))).collect();
    Ok(Json(json!({ "id": id, "children": items })))
}

/// `GET /v1/invocations/{id}/instances`: its attempts (task instances) with node, status,
/// error and resource use.
pub(super) async fn instances(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    s.orch.get(&id).await?;
    let list = s.orch.store().instance_list(&id).await?;
    let items: Vec<Value> = list
        .iter()
        .map(|i| {
            json!({"attempt": i.attempt, "node": i.node, "status": i.status, "error": i.error,
                   "wall_ms": i.wall_ms, "peak_memory_bytes": i.peak_memory_bytes, "started_at": i.started_at,
                   "report_by": i.report_by, "ended_at": (i.report_by.is_none()).then_some(i.ended_at)})
        })
        .collect();
    Ok(Json(json!({ "id": id, "instances": items })))
}

/// `GET /v1/invocations/{id}/logs`: per attempt, the tail of stdout and stderr (10,000 bytes
/// each) and the guest's log lines.
pub(super) async fn logs(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    s.orch.get(&id).await?;
    let list = s.orch.store().instance_list(&id).await?;
    let items: Vec<Value> = list
        .iter()
        .map(|i| {
            json!({"attempt": i.attempt, "stdout": i.stdout, "stderr": i.stderr, "logs": i.logs,
                   "output_truncated": i.output_truncated})
        })
        .collect();
    Ok(Json(json!({ "id": id, "attempts": items })))
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
