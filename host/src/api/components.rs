//! Components and tasks: upload (validate, precompile, describe, register), list, show,
//! remove, and task options.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::model::{ComponentInfo, TaskDef, TaskPatch};

#[derive(Deserialize)]
pub(super) struct UploadQuery {
    name: Option<String>,
}

fn component_json(c: &ComponentInfo, tasks: &[TaskDef]) -> Value {
    json!({
        "name": c.name,
        "digest": c.digest,
        "size_bytes": c.size_bytes,
        "uploaded_at": c.uploaded_at,
        "tasks": tasks,
    })
}

/// `POST /v1/components?name=N` with the component bytes as body.
pub(super) async fn upload(
    State(s): State<AppState>,
    q: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    // Only `application/wasm`: a browser page cannot send it without a CORS preflight.
    super::guard::require_content_type(&headers, "application/wasm")?;
    let Query(q) = q?;
    let body = body?;
    let name = q.name.ok_or_else(|| ApiError::bad_request("missing query parameter `name`"))?;
    if body.is_empty() {
        return Err(ApiError::bad_request("empty body: send the component's bytes (application/wasm)"));
    }
    let info = s.orch.deploy(&name, &body).await?;
    let tasks = tasks_of(&s, &info).await?;
    Ok((StatusCode::CREATED, Json(component_json(&info, &tasks))))
}

async fn tasks_of(s: &AppState, c: &ComponentInfo) -> Result<Vec<TaskDef>, ApiError> {
    let all = s.orch.store().task_list().await?;
    Ok(all.into_iter().filter(|t| t.component == c.name).collect())
}

/// `GET /v1/components`.
pub(super) async fn list(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let comps = s.orch.store().component_list().await?;
    Ok(Json(json!({ "components": comps })))
}

/// `GET /v1/components/{name}`.
pub(super) async fn show(State(s): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let c = s
        .orch
        .store()
        .component_get(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("component `{name}` not found")))?;
    let tasks = tasks_of(&s, &c).await?;
    Ok(Json(component_json(&c, &tasks)))
}

/// `DELETE /v1/components/{name}`.
pub(super) async fn remove(State(s): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    s.orch.undeploy(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/tasks`.
pub(super) async fn tasks(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "tasks": s.orch.store().task_list().await? })))
}

/// `GET /v1/tasks/{task}`.
pub(super) async fn task(State(s): State<AppState>, Path(name): Path<String>) -> Result<Json<TaskDef>, ApiError> {
    s.orch.store().task_get(&name).await?.map(Json).ok_or_else(|| ApiError::not_found(format!("unknown task `{name}`")))
}

/// `PATCH /v1/tasks/{task}`.
pub(super) async fn patch_task(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<TaskPatch>, JsonRejection>,
) -> Result<Json<TaskDef>, ApiError> {
    let Json(patch) = body?;
    Ok(Json(update_task(&s, &name, &patch).await?))
}

/// Validates a patch (the same rules whichever endpoint sends it: `PATCH /v1/tasks/{task}` or
/// the pins API), applies it and drops the cached task definitions.
pub(super) async fn update_task(s: &AppState, name: &str, patch: &TaskPatch) -> Result<TaskDef, ApiError> {
    if let Some(m) = patch.max_attempts {
        crate::model::check_max_attempts(m).map_err(ApiError::bad_request)?;
    }
    if patch.timeout_ms == Some(0) {
        return Err(ApiError::bad_request("timeout_ms must be at least 1"));
    }
    if let Some(limit) = patch.memory_limit_bytes {
        s.orch.check_memory_limit(name, limit).await?;
    }
    // An empty list unpins; any other list follows the pin rules.
    if let Some(patterns) = patch.pins.as_ref().filter(|p| !p.is_empty()) {
        crate::cluster::pins::validate(patterns).map_err(ApiError::bad_request)?;
    }
    let t = s
        .orch
        .store()
        .task_update(name, patch)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("unknown task `{name}`")))?;
    s.orch.invalidate_tasks();
    Ok(t)
}

/// `GET /v1/tasks/{task}/resources`: resource use of the task's latest 1,000 attempts
/// (percentiles of wall time and peak memory) and limits suggested from it: the p99 of
/// successful attempts plus headroom (memory ×1.25, time ×1.5), never below what the slowest or
/// largest successful attempt needed.
pub(super) async fn resources(
    State(s): State<AppState>,
    Path(task): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let def = s.orch.task(&task).await?;
    let usage = s.orch.store().instance_usage(&task, 1_000).await?;
    let pick = |f: fn(&(String, i64, i64)) -> i64, ok_only: bool| {
        let mut v: Vec<i64> = usage.iter().filter(|u| !ok_only || u.0 == "done").map(f).collect();
        v.sort_unstable();
        v
    };
    let pct = |v: &[i64], p: usize| -> Option<i64> { v.get((v.len() * p).div_ceil(100).saturating_sub(1)).copied() };
    let summary = |v: &[i64]| json!({"p50": pct(v, 50), "p90": pct(v, 90), "p99": pct(v, 99), "max": v.last()});
    let (wall, mem) = (pick(|u| u.1, false), pick(|u| u.2, false));
    let (ok_wall, ok_mem) = (pick(|u| u.1, true), pick(|u| u.2, true));
    let grow = |v: Option<i64>, num: i64, den: i64| v.map(|x| (x.saturating_mul(num) + den - 1) / den);
    let by_status = usage.iter().fold(serde_json::Map::new(), |mut m, u| {
        let n = m.get(&u.0).and_then(Value::as_u64).unwrap_or(0) + 1;
        m.insert(u.0.clone(), json!(n));
        m
    });
    Ok(Json(json!({
        "task": task,
        "attempts": usage.len(),
        "by_status": by_status,
        "wall_ms": summary(&wall),
        "peak_memory_bytes": summary(&mem),
        "current": {"timeout_ms": def.timeout_ms, "memory_limit_bytes": def.memory_limit_bytes},
        "suggested": {
            "timeout_ms": grow(pct(&ok_wall, 99), 3, 2).max(ok_wall.last().copied()),
            "memory_limit_bytes": grow(pct(&ok_mem, 99), 5, 4).max(ok_mem.last().copied()),
        },
    })))
}
