//! Components and tasks: upload (validate, precompile, describe, register), list, show,
//! remove, and task options.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::json::{Json, Query};
use super::{ApiError, AppState};
use crate::model::instance::AttemptUsage;
use crate::model::instance::InstanceStatus;
use crate::model::{ComponentInfo, ComponentVersions, TaskDef, TaskPatch};

/// Query of an upload.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct UploadQuery {
    /// The component's name (required; a new upload under a name replaces that component).
    name: Option<String>,
}

/// The bytes of a component (wasm32-wasip2): a schema only, the handler reads the raw body.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub(super) struct WasmComponent(Vec<u8>);

/// A component with the definitions of its tasks (the stored component lists only their names).
#[derive(Serialize, ToSchema)]
pub(super) struct ComponentView {
    name: String,
    /// The current version: new calls run it.
    version: u64,
    digest: String,
    size_bytes: i64,
    uploaded_at: crate::model::Millis,
    tasks: Vec<TaskDef>,
}

impl ComponentView {
    async fn of(s: &AppState, c: ComponentInfo) -> Result<Self, ApiError> {
        let all = s.orch.task_list().await?;
        let tasks = all.into_iter().filter(|t| t.component == c.name).collect();
        Ok(Self {
            name: c.name,
            version: c.version,
            digest: c.digest,
            size_bytes: c.size_bytes,
            uploaded_at: c.uploaded_at,
            tasks,
        })
    }
}

/// Upload a component
///
/// Validates and precompiles the component, asks it for its tasks and registers them. Under
/// the name of a stored component, new code becomes its next version, and the current one:
/// new calls run it, while calls that started on an earlier version (their retries, a re-run
/// after a crash) keep theirs until they finish. The same code as the current version's adds
/// no version. Refused (409) if the new version drops a task that has unfinished calls.
#[utoipa::path(
    post, path = "/v1/components", tag = "components", params(UploadQuery),
    request_body(content = WasmComponent, content_type = "application/wasm"),
    responses(
        (status = 201, description = "Stored, with its version and tasks.", body = ComponentView),
        (status = 400, description = "No name, an empty body, or not a valid component.", body = ErrorBody),
        (status = 409, description = "It would drop a task that has unfinished calls.", body = ErrorBody),
        (status = 413, description = "Larger than `--max-upload-bytes`.", body = ErrorBody),
        (status = 415, description = "Not `content-type: application/wasm`.", body = ErrorBody),
    )
)]
pub(super) async fn upload(
    State(s): State<AppState>,
    q: Result<Query<UploadQuery>, ApiError>,
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
    Ok((StatusCode::CREATED, Json(ComponentView::of(&s, info).await?)))
}

/// Every stored component.
#[derive(Serialize, ToSchema)]
pub(super) struct ComponentList {
    components: Vec<ComponentInfo>,
}

/// List components
#[utoipa::path(
    get, path = "/v1/components", tag = "components",
    responses((status = 200, description = "Every stored component.", body = ComponentList))
)]
pub(super) async fn list(State(s): State<AppState>) -> Result<Json<ComponentList>, ApiError> {
    Ok(Json(ComponentList { components: s.orch.component_list().await? }))
}

/// Show a component
#[utoipa::path(
    get, path = "/v1/components/{name}", tag = "components",
    params(("name" = String, Path, description = "Component name.")),
    responses(
        (status = 200, description = "The component and its tasks.", body = ComponentView),
        (status = 404, description = "No such component.", body = ErrorBody),
    )
)]
pub(super) async fn show(State(s): State<AppState>, Path(name): Path<String>) -> Result<Json<ComponentView>, ApiError> {
    let c = s
        .orch
        .component_get(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("component `{name}` not found")))?;
    Ok(Json(ComponentView::of(&s, c).await?))
}

/// Remove a component
///
/// Removes the component and its tasks; the invocations' record stays.
#[utoipa::path(
    delete, path = "/v1/components/{name}", tag = "components",
    params(("name" = String, Path, description = "Component name.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 404, description = "No such component.", body = ErrorBody),
        (status = 409, description = "Calls of its tasks are queued or running.", body = ErrorBody),
    )
)]
pub(super) async fn remove(State(s): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    s.orch.undeploy(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every task.
#[derive(Serialize, ToSchema)]
pub(super) struct TaskList {
    tasks: Vec<TaskDef>,
}

/// List tasks
#[utoipa::path(
    get, path = "/v1/tasks", tag = "tasks",
    responses((status = 200, description = "Every registered task with its options.", body = TaskList))
)]
pub(super) async fn tasks(State(s): State<AppState>) -> Result<Json<TaskList>, ApiError> {
    Ok(Json(TaskList { tasks: s.orch.task_list().await? }))
}

/// Show a task
#[utoipa::path(
    get, path = "/v1/tasks/{task}", tag = "tasks",
    params(("task" = String, Path, description = "Task name.")),
    responses(
        (status = 200, description = "The task and its effective options.", body = TaskDef),
        (status = 404, description = "No such task.", body = ErrorBody),
    )
)]
pub(super) async fn task(State(s): State<AppState>, Path(name): Path<String>) -> Result<Json<TaskDef>, ApiError> {
    s.orch.task_get(&name).await?.map(Json).ok_or_else(|| ApiError::not_found(format!("unknown task `{name}`")))
}

/// Change a task's options
///
/// Absent fields stay as they are; validated by the orchestrator (the same rules as the pins
/// API): `max_attempts` 1–1000, a memory limit not below what the component declares,
/// `scratch_bytes` 0 to 4 GiB.
#[utoipa::path(
    patch, path = "/v1/tasks/{task}", tag = "tasks",
    params(("task" = String, Path, description = "Task name.")),
    request_body = TaskPatch,
    responses(
        (status = 200, description = "The task as it is now.", body = TaskDef),
        (status = 400, description = "An invalid option.", body = ErrorBody),
        (status = 404, description = "No such task.", body = ErrorBody),
        (status = 415, description = "Not `application/json`.", body = ErrorBody),
    )
)]
pub(super) async fn patch_task(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Json(patch): Json<TaskPatch>,
) -> Result<Json<TaskDef>, ApiError> {
    Ok(Json(s.orch.task_update(&name, &patch).await?))
}

/// Percentiles of one figure over a task's attempts (`null` without attempts).
#[derive(Serialize, ToSchema)]
pub(super) struct Percentiles {
    p50: Option<i64>,
    p90: Option<i64>,
    p99: Option<i64>,
    max: Option<i64>,
}

impl Percentiles {
    /// Of `v`, sorted.
    fn of(v: &[i64]) -> Self {
        Self { p50: percentile(v, 50), p90: percentile(v, 90), p99: percentile(v, 99), max: v.last().copied() }
    }
}

/// The `p`-th percentile of sorted `v` (nearest rank).
fn percentile(v: &[i64], p: usize) -> Option<i64> {
    v.get((v.len() * p).div_ceil(100).saturating_sub(1)).copied()
}

/// A task's limits: as set, or as suggested (`null` without successful attempts).
#[derive(Serialize, ToSchema)]
pub(super) struct LimitsView<T> {
    timeout_ms: T,
    memory_limit_bytes: T,
}

/// The resource use of a task's latest attempts and the limits suggested from it.
#[derive(Serialize, ToSchema)]
pub(super) struct Resources {
    task: String,
    attempts: usize,
    by_status: HashMap<InstanceStatus, u64>,
    wall_ms: Percentiles,
    peak_memory_bytes: Percentiles,
    /// The limits as set.
    #[schema(inline)]
    current: LimitsView<u64>,
    /// The limits suggested (`null` without successful attempts).
    #[schema(inline)]
    suggested: LimitsView<Option<i64>>,
}

/// Resource use of a task
///
/// Resource use of the task's latest 1,000 attempts
/// (percentiles of wall time and peak memory) and limits suggested from it: the p99 of
/// successful attempts plus headroom (memory ×1.25, time ×1.5), never below what the slowest or
/// largest successful attempt needed.
#[utoipa::path(
    get, path = "/v1/tasks/{task}/resources", tag = "tasks",
    params(("task" = String, Path, description = "Task name.")),
    responses(
        (status = 200, description = "Percentiles and suggested limits.", body = Resources),
        (status = 404, description = "No such task.", body = ErrorBody),
    )
)]
pub(super) async fn resources(
    State(s): State<AppState>,
    Path(task): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let def = s.orch.task(&task).await?;
    let usage = s.orch.task_usage(&task, 1_000).await?;
    let pick = |f: fn(&AttemptUsage) -> i64, ok_only: bool| {
        let mut v: Vec<i64> = usage.iter().filter(|u| !ok_only || u.status == InstanceStatus::Done).map(f).collect();
        v.sort_unstable();
        v
    };
    let (wall, mem) = (pick(|u| u.wall_ms, false), pick(|u| u.peak_memory_bytes, false));
    let (ok_wall, ok_mem) = (pick(|u| u.wall_ms, true), pick(|u| u.peak_memory_bytes, true));
    let grow = |v: Option<i64>, num: i64, den: i64| v.map(|x| (x.saturating_mul(num) + den - 1) / den);
    let mut by_status = HashMap::new();
    for u in &usage {
        *by_status.entry(u.status).or_insert(0) += 1;
    }
    Ok(Json(Resources {
        task,
        attempts: usage.len(),
        by_status,
        wall_ms: Percentiles::of(&wall),
        peak_memory_bytes: Percentiles::of(&mem),
        current: LimitsView { timeout_ms: def.timeout_ms, memory_limit_bytes: def.memory_limit_bytes },
        suggested: LimitsView {
            timeout_ms: grow(percentile(&ok_wall, 99), 3, 2).max(ok_wall.last().copied()),
            memory_limit_bytes: grow(percentile(&ok_mem, 99), 5, 4).max(ok_mem.last().copied()),
        },
    }))
}

/// List a component's versions
///
/// Newest first, each with whether it is current and how many unfinished calls are bound to
/// it. An upload keeps the versions of the last 10 uploads of new code, the
/// current one and any that unfinished calls are bound to.
#[utoipa::path(
    get, path = "/v1/components/{name}/versions", tag = "components",
    params(("name" = String, Path, description = "Component name.")),
    responses(
        (status = 200, description = "Its versions.", body = ComponentVersions),
        (status = 404, description = "No such component.", body = ErrorBody),
    )
)]
pub(super) async fn versions(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ComponentVersions>, ApiError> {
    Ok(Json(s.orch.component_versions(&name).await?))
}

/// Query of a rollback.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RollbackQuery {
    /// The version to make current; without it, the newest stored version before the
    /// current one.
    version: Option<u64>,
}

/// Roll a component back
///
/// Makes an earlier version current again (by default the newest one before the current
/// version): new calls run it; calls bound to another version keep theirs. Its tasks are
/// registered as that version describes them, with the options a user patched kept.
#[utoipa::path(
    post, path = "/v1/components/{name}/rollback", tag = "components",
    params(("name" = String, Path, description = "Component name."), RollbackQuery),
    responses(
        (status = 200, description = "The component as it is now.", body = ComponentView),
        (status = 400, description = "A query that is not a version number.", body = ErrorBody),
        (status = 404, description = "No such component or version.", body = ErrorBody),
        (status = 409, description = "No earlier version to roll back to, the version is current already, \
            or it lacks a task that has unfinished calls.", body = ErrorBody),
    )
)]
pub(super) async fn rollback(
    State(s): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<RollbackQuery>, ApiError>,
) -> Result<Json<ComponentView>, ApiError> {
    let Query(q) = q?;
    let info = s.orch.rollback(&name, q.version).await?;
    Ok(Json(ComponentView::of(&s, info).await?))
}

/// Delete a version of a component
///
/// Only a version that is not current and that no unfinished call is bound to.
#[utoipa::path(
    delete, path = "/v1/components/{name}/versions/{version}", tag = "components",
    params(
        ("name" = String, Path, description = "Component name."),
        ("version" = u64, Path, description = "Version number."),
    ),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "A version that is not a number.", body = ErrorBody),
        (status = 404, description = "No such component or version.", body = ErrorBody),
        (status = 409, description = "It is current, or unfinished calls are bound to it.", body = ErrorBody),
    )
)]
pub(super) async fn delete_version(
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let version: u64 = version
        .parse()
        .map_err(|_| ApiError::bad_request(format!("version `{version}` is not a version number (1, 2, …)")))?;
    s.orch.component_version_delete(&name, version).await?;
    Ok(StatusCode::NO_CONTENT)
}
