//! The change feed over HTTP: the live event stream `GET /v1/events/stream` (Server-Sent
//! Events, one `status` event per invocation status change, resumable by `Last-Event-ID`) and
//! the batch await `POST /v1/invocations/results`. Both ride on the orchestrator's feed
//! (`orchestrator/feed.rs`), which wakes on this node's writes and other nodes' notifications.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::json::{Json, Query};
use super::{ApiError, AppState, MAX_LONG_POLL};
use crate::model::feed::{ChangeEvent, ChangeFilter};
use crate::model::{InvocationStatus, TaskFailure};
use crate::orchestrator::{Orchestrator, Subscription};

/// Most ids one batch await may name.
pub const MAX_AWAIT_IDS: usize = 10_000;
/// How often the stream sends a keep-alive comment when nothing happens.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// History rows read per page when a reconnecting client replays what it missed.
const REPLAY_PAGE: u32 = 500;

/// `POST /v1/invocations/results` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ResultsBody {
    /// Invocation ids (at most [`MAX_AWAIT_IDS`]; repeats count once).
    ids: Vec<String>,
    /// How long to wait for the ones not final yet (0: answer at once; at most 60,000).
    #[serde(default)]
    timeout_ms: Option<i64>,
}

/// One final invocation of a batch await.
#[derive(Serialize, ToSchema)]
pub(super) struct ResultItem {
    /// Invocation id.
    id: String,
    /// Its final status.
    status: InvocationStatus,
    /// The result, when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    result: Option<Value>,
    /// The error, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<TaskFailure>,
}

/// `POST /v1/invocations/results` answer: the final ones, and the ids still running.
#[derive(Serialize, ToSchema)]
pub(super) struct ResultsPage {
    /// The final invocations, in the order asked.
    results: Vec<ResultItem>,
    /// The ids not final in time, in the order asked.
    pending: Vec<String>,
}

/// Await many results
///
/// `{"ids":[…], "timeout_ms":N}`: answers as soon as every id is final, or at the timeout (or
/// when the daemon stops) with those that are; 404 listing (in `error.ids`) the ids that name
/// no invocation. Woken by the change feed, not by polling each id.
#[utoipa::path(
    post, path = "/v1/invocations/results", tag = "invocations",
    request_body = ResultsBody,
    responses(
        (status = 200, description = "The final ones and the ids still pending.", body = ResultsPage),
        (status = 400, description = "A malformed body or `timeout_ms` outside 0-60000.", body = ErrorBody),
        (status = 404, description = "Ids that name no invocation (listed in `error.ids`).", body = ErrorBody),
        (status = 413, description = "More than 10,000 ids.", body = ErrorBody),
        (status = 415, description = "Not `application/json`.", body = ErrorBody),
    )
)]
pub(super) async fn results(
    State(s): State<AppState>,
    Json(body): Json<ResultsBody>,
) -> Result<Json<ResultsPage>, ApiError> {
    if body.ids.len() > MAX_AWAIT_IDS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("at most {MAX_AWAIT_IDS} ids per await, got {}; split them", body.ids.len()),
        ));
    }
    let max_ms = i64::try_from(MAX_LONG_POLL.as_millis()).unwrap_or(i64::MAX);
    let timeout_ms = body.timeout_ms.unwrap_or(0);
    if !(0..=max_ms).contains(&timeout_ms) {
        return Err(ApiError::bad_request(format!("timeout_ms must be between 0 and {max_ms}, got {timeout_ms}")));
    }
    let timeout = Duration::from_millis(timeout_ms.unsigned_abs());
    let out = s.orch.await_results(&body.ids, timeout, &s.stop).await?;
    if !out.unknown.is_empty() {
        const SHOWN: usize = 20;
        let more = out.unknown.len().saturating_sub(SHOWN);
        let listed = out.unknown.iter().take(SHOWN).map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ");
        let tail = if more > 0 { format!(" and {more} more") } else { String::new() };
        return Err(ApiError::not_found(format!("no invocation with id {listed}{tail}")).with_ids(out.unknown));
    }
    let results = out
        .done
        .into_iter()
        .map(|i| ResultItem { id: i.id, status: i.status, result: i.result, error: i.error })
        .collect();
    Ok(Json(ResultsPage { results, pending: out.pending }))
}

/// `GET /v1/events/stream` query: every given filter must match.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    /// Only invocations of this task.
    task: Option<String>,
    /// Only invocations routed by this workflow.
    workflow: Option<String>,
    /// Only this invocation.
    invocation: Option<String>,
}

/// Stream status changes
///
/// Server-Sent Events, one per invocation status change, from every node: `event: status`,
/// `id:` the history sequence (cluster-wide, increasing), `data:`
/// `{"invocation","task","status","at","node","workflow"?}`. With `Last-Event-ID`, first every
/// stored change after it, then the live ones. A client too slow for the node's buffer gets
/// `event: lagged` (`{"missed","last_event_id"}`) and the stream ends. A keep-alive comment
/// every 10 s.
#[utoipa::path(
    get, path = "/v1/events/stream", tag = "events",
    params(StreamQuery, ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id.")),
    responses(
        (status = 200, description = "The event stream.", content_type = "text/event-stream", body = String),
        (status = 400, description = "A malformed `Last-Event-ID` or an unknown filter.", body = ErrorBody),
        (status = 404, description = "The task, workflow or invocation filtered on does not exist.", body = ErrorBody),
    )
)]
pub(super) async fn stream(
    State(s): State<AppState>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last = match headers.get("last-event-id") {
        None => None,
        Some(v) => {
            Some(v.to_str().ok().and_then(|t| t.trim().parse::<i64>().ok()).filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::bad_request("Last-Event-ID must be the `id:` of an event: a non-negative integer")
            })?)
        }
    };
    if let Some(task) = &q.task
        && s.orch.task_get(task).await?.is_none()
    {
        return Err(ApiError::not_found(format!("no task named `{task}`")));
    }
    if let Some(id) = &q.invocation {
        s.orch.get(id).await?;
    }
    if let Some(id) = &q.workflow {
        s.orch.workflow_summary(id, false).await?;
    }
    let filter = ChangeFilter { task: q.task, workflow: q.workflow, invocation: q.invocation };
    let sub = s.orch.subscribe_changes().await?;
    let state = StreamState {
        orch: s.orch.clone(),
        filter,
        replay_after: last.filter(|l| *l < sub.head),
        head: sub.head,
        sub,
        stop: s.stop.clone(),
        queued: VecDeque::new(),
        last_sent: last.unwrap_or(0),
        ended: false,
    };
    let events = futures::stream::unfold(state, |mut st| async move {
        let ev = st.next_event().await?;
        Some((Ok(ev), st))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

/// One client's place in the stream.
struct StreamState {
    orch: Orchestrator,
    filter: ChangeFilter,
    /// Replaying stored changes after this sequence (up to `head`) before the live ones.
    replay_after: Option<i64>,
    head: i64,
    sub: Subscription,
    stop: CancellationToken,
    queued: VecDeque<Event>,
    last_sent: i64,
    ended: bool,
}

impl StreamState {
    fn status_event(&mut self, e: &ChangeEvent) {
        if self.filter.matches(e) {
            let ev = Event::default().event("status").id(e.seq.to_string());
            let ev = ev.json_data(e).unwrap_or_else(|_| Event::default().comment("unserializable change"));
            self.queued.push_back(ev);
        }
        self.last_sent = e.seq;
    }

    /// The next event to send; `None` ends the stream.
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.queued.pop_front() {
                return Some(ev);
            }
            if self.ended {
                return None;
            }
            if let Some(after) = self.replay_after {
                match self.orch.changes_between(after, self.head, REPLAY_PAGE).await {
                    Ok(rows) if rows.is_empty() => self.replay_after = None,
                    Ok(rows) => {
                        self.replay_after = rows.last().map(|e| e.seq);
                        for e in &rows {
                            self.status_event(e);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the event stream could not replay the stored changes");
                        self.ended = true;
                        return Some(
                            Event::default().event("error").data("could not read the stored changes; reconnect"),
                        );
                    }
                }
                continue;
            }
            let received = tokio::select! {
                _ = self.stop.cancelled() => return None,
                r = self.sub.rx.recv() => r,
            };
            match received {
                Ok(e) if e.seq > self.head => self.status_event(&e),
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    self.ended = true;
                    let data = serde_json::json!({"missed": missed, "last_event_id": self.last_sent});
                    return Some(Event::default().event("lagged").data(data.to_string()));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}
