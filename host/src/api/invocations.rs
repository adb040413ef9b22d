//! Invocations: route one or many calls, read one, long-poll its result, list, count and
//! read its status history.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::json::{Json, Query};
use super::{ApiError, AppState, MAX_LONG_POLL};
use crate::model::instance::InstanceStatus;
use crate::model::{HistoryEntry, Invocation, InvocationFilter, InvocationStatus, Millis, TaskFailure};
use crate::orchestrator::{CallRequest, Progress, Routed};
use crate::store::StatusCount;

/// Most calls in one batch request.
const MAX_BATCH_CALLS: usize = 10_000;

/// A call: the task and its arguments.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CallBody {
    /// Task name.
    task: String,
    /// Arguments, any JSON (`{}` when absent or `null`).
    #[serde(default)]
    args: Value,
    /// Options of the call.
    #[serde(default)]
    options: Option<CallOptions>,
}

/// Per-call options.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CallOptions {
    /// Same key, same invocation (a different call under a used key is 422).
    idempotency_key: Option<String>,
    /// A delayed call: stored at once, claimed no earlier than this many ms later (database
    /// clock), 0 to 31,622,400,000 (366 days).
    #[schema(minimum = 0, maximum = 31_622_400_000_i64)]
    delay_ms: Option<i64>,
    /// A scheduled call: stored at once, claimed no earlier than this time (RFC 3339, e.g.
    /// `2026-12-24T18:00:00Z`; a time past runs at once), at most 366 days ahead. Not with
    /// `delay_ms`.
    #[schema(format = DateTime)]
    not_before: Option<String>,
    /// A debounced call: calls of the task with the same debounce key within this many ms
    /// of each other collapse into one invocation, which runs with the last call's arguments
    /// this many ms after the last call (every call answers with its id; the later ones with
    /// `reused: true`). 1 to 31,622,400,000 (366 days). Not with `delay_ms`, `not_before` or
    /// an idempotency key.
    #[schema(minimum = 1, maximum = 31_622_400_000_i64)]
    debounce_ms: Option<i64>,
    /// The debounce key (1-255 characters); without it, the values of the task's key arguments
    /// are the key. Only with `debounce_ms`.
    debounce_key: Option<String>,
    /// 0-9 (default: the task's, 5 unless patched): among runnable calls a node claims higher
    /// priorities first, oldest first within one; a call claimable for longer than
    /// `--priority-aging-ms` (30 s) ranks as 9.
    #[schema(minimum = 0, maximum = 9)]
    priority: Option<i64>,
}

/// The debounce of a call, checked: `(debounce_ms, debounce_key)`.
fn debounce_of(o: &CallOptions) -> Result<(Option<u64>, Option<String>), ApiError> {
    let key = o.debounce_key.clone();
    if key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 255) {
        return Err(ApiError::bad_request("options.debounce_key must be 1-255 characters"));
    }
    let Some(d) = o.debounce_ms else {
        return match key {
            Some(_) => Err(ApiError::bad_request("options.debounce_key needs options.debounce_ms (the window, in ms)")),
            None => Ok((None, None)),
        };
    };
    let ms = match u64::try_from(d) {
        Ok(ms) if (1..=MAX_DELAY_MS).contains(&d) => ms,
        _ => {
            return Err(ApiError::bad_request(format!(
                "options.debounce_ms must be between 1 and {MAX_DELAY_MS} (366 days), not {d}"
            )));
        }
    };
    if o.delay_ms.is_some() || o.not_before.is_some() {
        return Err(ApiError::bad_request(
            "options.debounce_ms sets when the call starts (that many ms after the last call of its key): \
             not with options.delay_ms or options.not_before",
        ));
    }
    Ok((Some(ms), key))
}

/// The longest delay a call may be given (366 days), in ms.
const MAX_DELAY_MS: i64 = 366 * 24 * 3_600_000;

/// The start of a delayed or scheduled call, checked: `(delay_ms, not_before)`.
fn start_of(o: &CallOptions) -> Result<(Option<u64>, Option<Millis>), ApiError> {
    match (o.delay_ms, o.not_before.as_deref()) {
        (Some(_), Some(_)) => {
            Err(ApiError::bad_request("options.delay_ms and options.not_before both given: say when to start one way"))
        }
        (Some(d), None) => match u64::try_from(d) {
            Ok(ms) if d <= MAX_DELAY_MS => Ok((Some(ms), None)),
            _ => Err(ApiError::bad_request(format!(
                "options.delay_ms must be between 0 and {MAX_DELAY_MS} (366 days), not {d}"
            ))),
        },
        (None, Some(t)) => {
            let at = chrono::DateTime::parse_from_rfc3339(t).map_err(|e| {
                ApiError::bad_request(format!(
                    "options.not_before `{t}` is not an RFC 3339 time ({e}); e.g. 2026-12-24T18:00:00Z"
                ))
            })?;
            let ms = at.timestamp_millis();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let latest = i64::try_from(now.as_millis()).unwrap_or(i64::MAX).saturating_add(MAX_DELAY_MS);
            if ms > latest {
                return Err(ApiError::bad_request(format!("options.not_before `{t}` is more than 366 days ahead")));
            }
            Ok((None, Some(ms)))
        }
        (None, None) => Ok((None, None)),
    }
}

/// Calls routed in one request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchBody {
    /// 1 to 10,000 calls.
    calls: Vec<CallBody>,
}

fn to_call(c: CallBody, header_key: Option<String>, max_args: usize) -> Result<CallRequest, ApiError> {
    super::guard::check_size("call arguments", &c.args, max_args)?;
    let options = c.options.unwrap_or_default();
    let (delay_ms, not_before) = start_of(&options)?;
    let (debounce_ms, debounce_key) = debounce_of(&options)?;
    let priority = options
        .priority
        .map(|p| crate::model::check_priority(p, "options.priority"))
        .transpose()
        .map_err(ApiError::bad_request)?;
    let option_key = options.idempotency_key;
    let idempotency_key = match (header_key, option_key) {
        (Some(h), Some(o)) if h != o => {
            return Err(ApiError::bad_request("the Idempotency-Key header and options.idempotency_key differ"));
        }
        (h, o) => h.or(o),
    };
    if idempotency_key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 255) {
        return Err(ApiError::bad_request("an idempotency key must be 1-255 characters"));
    }
    if debounce_ms.is_some() && idempotency_key.is_some() {
        return Err(ApiError::bad_request(
            "a debounced call answers with the invocation of its debounce key: not with an idempotency key",
        ));
    }
    let args = if c.args.is_null() { Value::Object(serde_json::Map::new()) } else { c.args };
    Ok(CallRequest {
        task: c.task,
        args,
        idempotency_key,
        delay_ms,
        not_before,
        debounce_ms,
        debounce_key,
        trace_parent: None,
        priority,
    })
}

/// The request's W3C trace context (`traceparent` header), if valid: the calls it routes join
/// that trace. An invalid one is ignored, as the W3C recommendation asks.
pub(super) fn traceparent(headers: &HeaderMap) -> Option<String> {
    crate::telemetry::valid(headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string))
}

/// A routed call: `{"id","status","reused"}`, plus `rerun_of` for a rerun.
#[derive(Serialize, ToSchema)]
pub(super) struct RoutedView {
    id: String,
    status: InvocationStatus,
    reused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    rerun_of: Option<String>,
}

impl From<Routed> for RoutedView {
    fn from(r: Routed) -> Self {
        Self { id: r.invocation.id, status: r.invocation.status, reused: r.reused, rerun_of: None }
    }
}

/// `{"invocations": [...]}` of a batch.
#[derive(Serialize, ToSchema)]
pub(super) struct RoutedBatch {
    invocations: Vec<RoutedView>,
}

/// An invocation as the API shows it: every field of [`Invocation`], with the live progress
/// when it runs here.
#[derive(Serialize, ToSchema)]
pub(super) struct InvocationView {
    #[serde(flatten)]
    invocation: Invocation,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<Progress>,
    /// Why a runnable invocation is not claimed (running concurrency); its own page only.
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting: Option<crate::model::Waiting>,
    /// While its task's rate limit holds it back: when the used-up window ends (database
    /// clock); its own page only.
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limited_until: Option<crate::model::Millis>,
}

fn view(s: &AppState, invocation: Invocation) -> InvocationView {
    let progress = s.orch.progress(&invocation.id);
    InvocationView { invocation, progress, waiting: None, rate_limited_until: None }
}

/// Largest `args` or `result` a list page shows in full, as JSON text.
pub const LIST_VALUE_MAX_BYTES: usize = 1024;

/// The view of an invocation on a list page: an `args` or `result` larger than
/// [`LIST_VALUE_MAX_BYTES`] is omitted (`null`), with `args_omitted: true` and its size in
/// `args_bytes` (`result_…` likewise); the invocation's own page has the full values.
#[derive(Serialize, ToSchema)]
pub(super) struct ListedInvocation {
    #[serde(flatten)]
    view: InvocationView,
    #[serde(skip_serializing_if = "Option::is_none")]
    args_omitted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result_omitted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result_bytes: Option<usize>,
}

/// The size of `value` as JSON text if it is too large for a list page (it is then replaced
/// by `null`).
fn omit_if_large(value: &mut Value) -> Option<usize> {
    if value.is_null() || super::guard::json_size(value, LIST_VALUE_MAX_BYTES).is_some() {
        return None;
    }
    let bytes = serde_json::to_vec(value).map_or(0, |b| b.len());
    *value = Value::Null;
    Some(bytes)
}

fn brief(mut view: InvocationView) -> ListedInvocation {
    let args_bytes = omit_if_large(&mut view.invocation.args);
    let result_bytes = view.invocation.result.as_mut().and_then(omit_if_large);
    ListedInvocation {
        view,
        args_omitted: args_bytes.map(|_| true),
        args_bytes,
        result_omitted: result_bytes.map(|_| true),
        result_bytes,
    }
}

/// Call a task
///
/// Routes one call; it is durable before the answer. An `Idempotency-Key` header applies to the
/// call (it must equal `options.idempotency_key` when both are given): the same key and call
/// return the same invocation. Under registration concurrency a call whose scope already
/// waits answers that invocation (`reused: true`).
#[utoipa::path(
    post, path = "/v1/invocations", tag = "invocations",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters."),
        ("traceparent" = Option<String>, Header, description = "W3C trace context: the call's spans join this trace (ignored if invalid)."),
    ),
    request_body = CallBody,
    responses(
        (status = 202, description = "Routed.", body = RoutedView),
        (status = 400, description = "A malformed call or key.", body = ErrorBody),
        (status = 404, description = "No such task.", body = ErrorBody),
        (status = 409, description = "Same key arguments, other arguments, under `on_diff_non_key_args_raise`.", body = ErrorBody),
        (status = 413, description = "Arguments over `--max-args-bytes`.", body = ErrorBody),
        (status = 415, description = "Not `application/json`.", body = ErrorBody),
        (status = 422, description = "The idempotency key was used for another call.", body = ErrorBody),
    )
)]
pub(super) async fn route_one(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<CallBody>,
) -> Result<impl IntoResponse, ApiError> {
    let header_key = match headers.get("idempotency-key") {
        Some(v) => {
            Some(v.to_str().map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?.to_string())
        }
        None => None,
    };
    let mut call = to_call(body, header_key, s.limits.max_args_bytes)?;
    call.trace_parent = traceparent(&headers);
    let routed = s.orch.route(vec![call]).await?;
    let r = routed.into_iter().next().ok_or_else(|| ApiError::bad_request("nothing routed"))?;
    Ok((StatusCode::ACCEPTED, Json(RoutedView::from(r))))
}

/// Call tasks in a batch
///
/// Routes up to 10,000 calls in one request (one transaction).
#[utoipa::path(
    post, path = "/v1/invocations/batch", tag = "invocations",
    params(("traceparent" = Option<String>, Header, description = "W3C trace context: every call's spans join this trace (ignored if invalid).")),
    request_body = BatchBody,
    responses(
        (status = 202, description = "Routed, in the order of the calls.", body = RoutedBatch),
        (status = 400, description = "No calls, or a malformed one.", body = ErrorBody),
        (status = 404, description = "An unknown task.", body = ErrorBody),
        (status = 409, description = "A call refused by its task's concurrency policy.", body = ErrorBody),
        (status = 413, description = "More than 10,000 calls, or a body or arguments too large.", body = ErrorBody),
        (status = 415, description = "Not `application/json`.", body = ErrorBody),
        (status = 422, description = "An idempotency key used for another call.", body = ErrorBody),
    )
)]
pub(super) async fn route_batch(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<BatchBody>,
) -> Result<impl IntoResponse, ApiError> {
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
    let trace_parent = traceparent(&headers);
    let calls = body
        .calls
        .into_iter()
        .map(|c| Ok(CallRequest { trace_parent: trace_parent.clone(), ..to_call(c, None, max)? }))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let routed = s.orch.route(calls).await?;
    let invocations = routed.into_iter().map(RoutedView::from).collect();
    Ok((StatusCode::ACCEPTED, Json(RoutedBatch { invocations })))
}

/// Show an invocation
#[utoipa::path(
    get, path = "/v1/invocations/{id}", tag = "invocations", params(("id" = String, Path, description = "Invocation id.")),
    responses((status = 200, description = "The invocation, with its progress while it runs here.", body = InvocationView), (status = 404, description = "No such invocation.", body = ErrorBody),)
)]
pub(super) async fn show(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<InvocationView>, ApiError> {
    let inv = s.orch.get(&id).await?;
    let waiting = s.orch.waiting(&inv).await?;
    let rate_limited_until = s.orch.rate_limited_until(&inv).await?;
    Ok(Json(InvocationView { waiting, rate_limited_until, ..view(&s, inv) }))
}

/// How long to wait for a result.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ResultQuery {
    /// Longest wait for the final status (at most 60,000; default 0: answer at once).
    timeout_ms: Option<u64>,
}

/// Wait for a result
///
/// Long-polls the invocation: 200 once final, 202 if not final in time or when the daemon stops
/// meanwhile (with the status of that moment).
#[utoipa::path(
    get, path = "/v1/invocations/{id}/result", tag = "invocations", params(("id" = String, Path, description = "Invocation id."), ResultQuery),
    responses(
        (status = 200, description = "Final.", body = InvocationView),
        (status = 202, description = "Not final yet.", body = InvocationView),
        (status = 400, description = "A malformed `timeout_ms`.", body = ErrorBody),
        (status = 404, description = "No such invocation.", body = ErrorBody),
    )
)]
pub(super) async fn result(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ResultQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let timeout = Duration::from_millis(q.timeout_ms.unwrap_or(0)).min(MAX_LONG_POLL);
    let (inv, done) = tokio::select! {
        r = s.orch.wait_final(&id, Some(timeout)) => r?,
        _ = s.stop.cancelled() => s.orch.wait_final(&id, Some(Duration::ZERO)).await?,
    };
    let status = if done { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(view(&s, inv))))
}

/// Filter and page of a list of invocations.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// Only this task's.
    task: Option<String>,
    /// Only in this status (an invocation status).
    status: Option<String>,
    /// Page size, 1-1000 (default 50).
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn parse_status(s: Option<String>) -> Result<Option<InvocationStatus>, ApiError> {
    s.map(|s| s.parse::<InvocationStatus>().map_err(ApiError::bad_request)).transpose()
}

/// A page of invocations, newest first; `next_cursor` is `null` on the last page.
#[derive(Serialize, ToSchema)]
pub(super) struct InvocationPage {
    invocations: Vec<ListedInvocation>,
    next_cursor: Option<String>,
}

/// List invocations
///
/// Newest first, a page at a time; `args` and `result` over 1 KiB are left out.
#[utoipa::path(
    get, path = "/v1/invocations", tag = "invocations", params(ListQuery),
    responses(
        (status = 200, description = "A page.", body = InvocationPage),
        (status = 400, description = "A bad status, limit or cursor.", body = ErrorBody),
    )
)]
pub(super) async fn list(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<InvocationPage>, ApiError> {
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
    let page = s.orch.invocation_list(&filter).await?;
    let next_cursor = if page.len() as u32 == limit { page.last().map(|i| i.id.clone()) } else { None };
    let invocations = page.into_iter().map(|i| brief(view(&s, i))).collect();
    Ok(Json(InvocationPage { invocations, next_cursor }))
}

/// Filter of the counts.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct CountQuery {
    /// Only this task's.
    task: Option<String>,
    /// Only in this status (an invocation status).
    status: Option<String>,
}

/// Counts per task and status, and their total.
#[derive(Serialize, ToSchema)]
pub(super) struct Counts {
    total: i64,
    counts: Vec<StatusCount>,
}

/// Count invocations
///
/// Counts per task and status, and the total.
#[utoipa::path(
    get, path = "/v1/invocations/count", tag = "invocations", params(CountQuery),
    responses(
        (status = 200, description = "The counts.", body = Counts),
        (status = 400, description = "A bad status.", body = ErrorBody),
    )
)]
pub(super) async fn count(State(s): State<AppState>, Query(q): Query<CountQuery>) -> Result<Json<Counts>, ApiError> {
    let counts = s.orch.invocation_count(q.task.as_deref(), parse_status(q.status)?).await?;
    let total: i64 = counts.iter().map(|c| c.count).sum();
    Ok(Json(Counts { total, counts }))
}

/// The invocations an invocation called.
#[derive(Serialize, ToSchema)]
pub(super) struct Children {
    id: String,
    children: Vec<ListedInvocation>,
}

/// List an invocation's children
///
/// The invocations it called (pynenc's family tree, one
/// level; follow `children` of each for deeper levels).
#[utoipa::path(
    get, path = "/v1/invocations/{id}/children", tag = "invocations", params(("id" = String, Path, description = "Invocation id.")),
    responses((status = 200, description = "Its children.", body = Children), (status = 404, description = "No such invocation.", body = ErrorBody),)
)]
pub(super) async fn children(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Children>, ApiError> {
    let kids = s.orch.invocation_children(&id).await?;
    let children = kids.into_iter().map(|i| brief(view(&s, i))).collect();
    Ok(Json(Children { id, children }))
}

/// One attempt of an invocation: where it ran, how it ended and what it used; `ended_at` is
/// `null` while it is live (`report_by` set).
#[derive(Serialize, ToSchema)]
pub(super) struct AttemptView {
    attempt: u32,
    node: String,
    status: InstanceStatus,
    error: Option<TaskFailure>,
    wall_ms: u64,
    peak_memory_bytes: u64,
    started_at: Millis,
    report_by: Option<Millis>,
    ended_at: Option<Millis>,
    /// The version of the task's component it ran (`GET /v1/components/{name}/versions`).
    #[serde(skip_serializing_if = "Option::is_none")]
    component_version: Option<u64>,
}

/// The attempts of an invocation.
#[derive(Serialize, ToSchema)]
pub(super) struct Attempts {
    id: String,
    instances: Vec<AttemptView>,
}

/// List an invocation's attempts
///
/// Its attempts (task instances) with node, status, error and resource use.
#[utoipa::path(
    get, path = "/v1/invocations/{id}/instances", tag = "invocations", params(("id" = String, Path, description = "Invocation id.")),
    responses((status = 200, description = "Its attempts.", body = Attempts), (status = 404, description = "No such invocation.", body = ErrorBody),)
)]
pub(super) async fn instances(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Attempts>, ApiError> {
    let list = s.orch.invocation_instances(&id).await?;
    let instances = list
        .into_iter()
        .map(|i| AttemptView {
            attempt: i.attempt,
            node: i.node,
            status: i.status,
            error: i.error,
            wall_ms: i.wall_ms,
            peak_memory_bytes: i.peak_memory_bytes,
            started_at: i.started_at,
            ended_at: i.report_by.is_none().then_some(i.ended_at),
            report_by: i.report_by,
            component_version: i.component_version,
        })
        .collect();
    Ok(Json(Attempts { id, instances }))
}

/// What one attempt printed and logged.
#[derive(Serialize, ToSchema)]
pub(super) struct AttemptLogs {
    attempt: u32,
    stdout: String,
    stderr: String,
    logs: Value,
    output_truncated: bool,
}

/// The output of every attempt of an invocation.
#[derive(Serialize, ToSchema)]
pub(super) struct Logs {
    id: String,
    attempts: Vec<AttemptLogs>,
}

/// Read an invocation's output
///
/// Per attempt, the tail of stdout and stderr (10,000 bytes
/// each) and the guest's log lines.
#[utoipa::path(
    get, path = "/v1/invocations/{id}/logs", tag = "invocations", params(("id" = String, Path, description = "Invocation id.")),
    responses((status = 200, description = "Its attempts' output.", body = Logs), (status = 404, description = "No such invocation.", body = ErrorBody),)
)]
pub(super) async fn logs(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Logs>, ApiError> {
    let list = s.orch.invocation_instances(&id).await?;
    let attempts = list
        .into_iter()
        .map(|i| AttemptLogs {
            attempt: i.attempt,
            stdout: i.stdout,
            stderr: i.stderr,
            logs: i.logs,
            output_truncated: i.output_truncated,
        })
        .collect();
    Ok(Json(Logs { id, attempts }))
}

/// The status history of an invocation.
#[derive(Serialize, ToSchema)]
pub(super) struct History {
    id: String,
    history: Vec<HistoryEntry>,
}

/// Read an invocation's history
///
/// Every status it entered, when and on which node.
#[utoipa::path(
    get, path = "/v1/invocations/{id}/history", tag = "invocations", params(("id" = String, Path, description = "Invocation id.")),
    responses((status = 200, description = "Its status history.", body = History), (status = 404, description = "No such invocation.", body = ErrorBody),)
)]
pub(super) async fn history(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<History>, ApiError> {
    let history = s.orch.invocation_history(&id).await?;
    Ok(Json(History { id, history }))
}

/// Cancel an invocation
///
/// A running guest is interrupted; answers the invocation as it is after the cancel.
#[utoipa::path(
    post, path = "/v1/invocations/{id}/cancel", tag = "invocations", params(("id" = String, Path, description = "Invocation id.")),
    responses(
        (status = 200, description = "Cancelled (or already final).", body = InvocationView),
        (status = 404, description = "No such invocation.", body = ErrorBody),
        (status = 409, description = "It kept changing while being cancelled; try again.", body = ErrorBody),
    )
)]
pub(super) async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<InvocationView>, ApiError> {
    let inv = s.orch.cancel(&id).await?;
    Ok(Json(view(&s, inv)))
}

/// Rerun an invocation
///
/// Routes the same call again as a new invocation.
#[utoipa::path(
    post, path = "/v1/invocations/{id}/rerun", tag = "invocations", params(("id" = String, Path, description = "Invocation id.")),
    responses(
        (status = 202, description = "The new invocation, with `rerun_of`.", body = RoutedView),
        (status = 404, description = "No such invocation.", body = ErrorBody),
        (status = 404, description = "Its task is no longer registered.", body = ErrorBody),
        (status = 409, description = "Refused by the task's concurrency policy.", body = ErrorBody),
    )
)]
pub(super) async fn rerun(State(s): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let inv = s.orch.rerun(&id).await?;
    let routed = RoutedView { id: inv.id, status: inv.status, reused: false, rerun_of: Some(id) };
    Ok((StatusCode::ACCEPTED, Json(routed)))
}
