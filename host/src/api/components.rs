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
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
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
    if patch.max_attempts == Some(0) {
        return Err(ApiError::bad_request("max_attempts must be at least 1"));
    }
    if patch.timeout_ms == Some(0) {
        return Err(ApiError::bad_request("timeout_ms must be at least 1"));
    }
    let t = s
        .orch
        .store()
        .task_update(&name, &patch)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("unknown task `{name}`")))?;
    s.orch.invalidate_tasks();
    Ok(Json(t))
}
