//! The local worker pool: the dispatcher claims runnable invocations for free slots, and each
//! attempt moves its invocation `pending → running → success | retry | failed` through the
//! group-commit writer, with ownership (node + attempt epoch) checked on every change.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::guest_host::AttemptHost;
use super::policy::retry_delay;
use super::{AttemptCounters, Orchestrator, lock};
use crate::model::instance::{AttemptExit, InstanceStatus};
use crate::model::{Claimed, Concurrency, ErrorKind, InvocationStatus, Owner, TaskFailure, TaskInstance, Transition};
use crate::runtime::{InvocationInfo, Limits, RunReport, RunRequest};
use crate::store::TransitionOutcome;

/// Claims work ahead of free slots, runs it as slots free up, until shutdown.
///
/// Claiming is decoupled from the slot count: one claim takes up to `prefetch` invocations (one
/// transaction), which then wait here in `pending` — owned by this node, like a pynenc runner's
/// queue — until a slot is free. At shutdown the unstarted ones are handed back.
pub(crate) async fn dispatch_loop(orch: Orchestrator) {
    let inner = &orch.inner;
    let mut queue: VecDeque<Claimed> = VecDeque::new();
    // Whether the last claim came back short: then nothing is left until someone says so
    // (`work` is notified by routes, retries and delayed calls when due (`due_loop`), deploys,
    // freed concurrency scopes, a new claim filter, and other nodes' notices; its permit is kept if nobody waits, so no wake-up is
    // lost) or the poll interval passes (a safety net: `Orchestrator::claim_poll`).
    let mut drained = false;
    // Traced: a `warden.claim` span per claimed attempt, open while it waits here for a slot.
    let mut claim_spans: HashMap<String, tracing::Span> = HashMap::new();
    // When a used-up rate-limit window ends (a timer is set for it once).
    let mut rate_wake: Option<tokio::time::Instant> = None;
    loop {
        if queue.is_empty() {
            if drained {
                tokio::select! {
                    _ = inner.claims.work.notified() => {},
                    _ = tokio::time::sleep(orch.claim_poll()) => {},
                    _ = inner.shutdown.cancelled() => return,
                }
            }
            // Nothing is claimed until the node is registered and knows its pins (or while it
            // is fenced off).
            let mut ready = inner.claims.ready.subscribe();
            tokio::select! {
                r = ready.wait_for(|r| *r) => if r.is_err() { return },
                _ = inner.shutdown.cancelled() => return,
            }
            let window = orch.report_window_ms();
            let mut filter = lock(&inner.claims.claim_filter).clone();
            // Rate-limited calls are claimed only for free slots: with none free, wait for one
            // (an attempt ending frees it) rather than for a wake-up nobody sends.
            if filter.rate_limited && inner.attempts.slots.available_permits() == 0 {
                tokio::select! {
                    p = inner.attempts.slots.acquire() => drop(p),
                    _ = inner.shutdown.cancelled() => return,
                }
            }
            filter.aging_ms = Some(i64::try_from(inner.cfg.priority_aging_ms).unwrap_or(i64::MAX));
            let prefetch = inner.cfg.prefetch as u32;
            let claiming = std::time::Instant::now();
            // Rate-limited calls first, only as many as there are free slots: they start at
            // once, so their claim (what the limit counts) is their start.
            let (limited, full) = if filter.rate_limited {
                claim_rate_limited(&orch, window, &filter, &mut rate_wake).await
            } else {
                (Vec::new(), false)
            };
            let claim = inner.store.invocation_claim_reporting(&inner.cfg.node, prefetch, window, &filter).await;
            // The rate-limited ones are queued whatever the ordinary claim did: they are claimed.
            let (ordinary, claim) = match claim {
                Ok(c) => (Some(c.len()), c),
                Err(e) => {
                    tracing::error!(error = %e, "claiming invocations failed; retrying");
                    (None, Vec::new())
                }
            };
            drained = ordinary.is_none_or(|n| n < inner.cfg.prefetch) && !full;
            let claimed: Vec<Claimed> = limited.into_iter().chain(claim).collect();
            if crate::telemetry::enabled() {
                let claim_ms = claiming.elapsed().as_secs_f64() * 1e3;
                for c in &claimed {
                    claim_spans.insert(c.id.clone(), claim_span(c, orch.node(), claim_ms));
                }
            }
            if !claimed.is_empty() {
                inner.feed.wrote();
            }
            for c in &claimed {
                orch.hold(&c.id, c.attempt);
            }
            queue.extend(claimed);
            if queue.is_empty() {
                continue;
            }
        }
        let permit = tokio::select! {
            p = inner.attempts.slots.clone().acquire_owned() => p.ok(),
            _ = inner.shutdown.cancelled() => None,
        };
        let (Some(permit), Some(inv)) = (permit, queue.pop_front()) else {
            release_unstarted(&orch, queue).await;
            return;
        };
        let claimed = claim_spans.remove(&inv.id).unwrap_or_else(tracing::Span::none);
        let o = orch.clone();
        inner.tracker.spawn(async move { run_attempt(o, inv, permit, claimed).await });
    }
}

/// Claims calls of rate-limited tasks for the free slots, and says whether it filled them (then
/// there may be more); when a used-up window held one back, the dispatchers are woken when it
/// ends (one timer per window end: `wake`).
async fn claim_rate_limited(
    orch: &Orchestrator,
    window: i64,
    filter: &crate::store::ClaimFilter,
    wake: &mut Option<tokio::time::Instant>,
) -> (Vec<Claimed>, bool) {
    let inner = &orch.inner;
    let free = u32::try_from(inner.attempts.slots.available_permits()).unwrap_or(u32::MAX);
    match inner.store.invocation_claim_rate_limited(&inner.cfg.node, free, window, filter).await {
        Ok(c) => {
            if let Some(ms) = c.held_for_ms {
                let after = Duration::from_millis(u64::try_from(ms).unwrap_or(0) + 1);
                let at = tokio::time::Instant::now() + after;
                if wake.is_none_or(|w| w + Duration::from_millis(5) < at || w <= tokio::time::Instant::now()) {
                    *wake = Some(at);
                    orch.wake_after(after);
                }
            }
            let full = free > 0 && c.claimed.len() >= free as usize;
            (c.claimed, full)
        }
        Err(e) => {
            tracing::error!(error = %e, "claiming rate-limited invocations failed; retrying");
            (Vec::new(), false)
        }
    }
}

/// The span of a claimed attempt waiting for a slot, in the trace of what routed its call;
/// `claim_ms` is how long the claim statement took.
fn claim_span(c: &Claimed, node: &str, claim_ms: f64) -> tracing::Span {
    let span = tracing::info_span!(
        "claim",
        otel.name = "warden.claim",
        invocation = %c.id,
        task = %c.task,
        attempt = c.attempt,
        node = %node,
        claim_ms
    );
    crate::telemetry::set_parent(&span, c.trace_parent.as_deref());
    span
}

/// Hands claimed but unstarted invocations back (`pending → pending_recovery → rerouted`).
async fn release_unstarted(orch: &Orchestrator, queue: VecDeque<Claimed>) {
    if queue.is_empty() {
        return;
    }
    let n = queue.len();
    let changes = queue
        .iter()
        .map(|inv| {
            let owner = Owner { node: orch.node().to_string(), attempt: inv.attempt };
            let path = [InvocationStatus::PendingRecovery, InvocationStatus::Rerouted];
            let why = TaskFailure::new(ErrorKind::Cancelled, "handed back unstarted: the node is shutting down");
            let mut t = Transition::owned(&inv.id, &owner, InvocationStatus::Pending, &path, orch.node());
            // Never started: the claim does not count toward `max_attempts`.
            t.unstarted = true;
            t.with_instance(Some(TaskInstance::ended(
                &inv.id,
                inv.attempt,
                orch.node(),
                InstanceStatus::ErrorFatal,
                Some(why),
            )))
        })
        .collect();
    let outcome = orch.transition(changes).await;
    for inv in &queue {
        orch.unhold(&inv.id);
    }
    match outcome {
        Ok(_) => tracing::info!(released = n, "handed back claimed invocations that had not started"),
        Err(e) => tracing::warn!(error = %e, "could not hand back unstarted invocations; recovery will"),
    }
}

/// How long an attempt may run before `running` is written. Shorter attempts record
/// `pending → running → final` in one write; longer ones show `running` while they run.
const MARK_RUNNING_AFTER: Duration = Duration::from_millis(20);

/// Runs one claimed attempt to its recorded outcome.
async fn run_attempt(orch: Orchestrator, inv: Claimed, permit: OwnedSemaphorePermit, claimed: tracing::Span) {
    let span = tracing::info_span!(
        "attempt",
        otel.name = "warden.attempt",
        invocation = %inv.id,
        task = %inv.task,
        attempt = inv.attempt,
        node = %orch.node(),
        outcome = tracing::field::Empty
    );
    // Traced: the attempt joins the trace of what routed the call, and the calls it makes join
    // the attempt's.
    let trace = if crate::telemetry::enabled() {
        crate::telemetry::set_parent(&span, inv.trace_parent.as_deref());
        crate::telemetry::traceparent(&span)
    } else {
        inv.trace_parent.clone()
    };
    let attempt_span = span.clone();
    async move {
        let owner = Owner { node: orch.node().to_string(), attempt: inv.attempt };
        let cancel = CancellationToken::new();
        if !orch.start_if_held(&inv.id, inv.attempt, cancel.clone()) {
            // Triaged while it waited in the local queue: its instance is no longer this
            // node's, and the invocation went back to be claimed. Never start it.
            tracing::info!("not starting an attempt whose instance was taken away while it waited");
            drop(permit);
            return;
        }
        drop(claimed);
        let host = Arc::new(AttemptHost::new(
            orch.clone(),
            inv.id.clone(),
            owner.clone(),
            permit,
            cancel.clone(),
            trace,
            inv.priority,
        ));

        let Ran { outcome, max_attempts, scoped, report } = run_guest(&orch, &inv, cancel, host.clone()).await;
        // The slot is free as soon as the guest is done; recording the outcome is the writer's.
        host.release_slot().await;
        // Nothing is left to interrupt: the heartbeat stops looking for this guest (an
        // instance it no longer finds live is then this outcome landing, not a triage).
        lock(&orch.inner.attempts.running).remove(&inv.id);

        // Where the invocation is now: still `pending` if `running` was never written, or
        // `paused` if the guest was interrupted while waiting on children.
        let from = host.status();
        let end = Transition::attempt_end(&inv.id, &owner, from, orch.node());
        let interrupted = matches!(&outcome, Err(f) if f.kind == ErrorKind::Cancelled);
        let by_user = lock(&orch.inner.attempts.user_cancels).remove(&inv.id);
        let t = match outcome {
            // Interrupted by this node's shutdown: hand the invocation back, it is not a failure.
            Err(_) if interrupted && orch.inner.shutdown.is_cancelled() => end.handed_back(),
            Err(f) if by_user || from == InvocationStatus::Paused => end.cancelled(f),
            Ok(result) => end.succeeded(result),
            Err(f) => {
                let (kind, error) = (f.kind, f.message.replace('\n', " "));
                if f.kind.retryable() && inv.started() < max_attempts {
                    let cfg = &orch.inner.cfg;
                    let delay = retry_delay(inv.started(), cfg.retry_base, cfg.retry_max, rand::random::<f64>());
                    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                    tracing::info!(?kind, %error, delay_ms, "attempt failed; retrying");
                    end.retrying(f, delay_ms)
                } else {
                    if kind != ErrorKind::Cancelled {
                        tracing::warn!(?kind, %error, "attempt failed; no retry");
                    }
                    end.failed(f)
                }
            }
        };
        let to = t.to();
        let delay_ms = t.delay_ms;
        // An attempt that ended before its guest ran (its task or component could not be
        // read) ends its instance too, with nothing measured: no instance is left for triage
        // to blame on a silent node.
        let instance = TaskInstance {
            invocation_id: inv.id.clone(),
            attempt: inv.attempt,
            node: orch.node().to_string(),
            status: TaskInstance::status_for(t.error.as_ref().map(|e| e.kind)),
            error: t.error.clone(),
            wall_ms: report.wall_ms,
            peak_memory_bytes: report.peak_memory_bytes,
            stdout: report.stdout,
            stderr: report.stderr,
            logs: serde_json::to_value(&report.logs).unwrap_or_default(),
            // Log lines past the runtime's cap were dropped: the record says it is not whole.
            output_truncated: report.output_truncated || report.logs_dropped > 0,
            ended_at: 0,
            started_at: 0,
            report_by: None,
            report_window_ms: None,
            component_version: inv.component_version,
        };
        // An end the node knows of: reported with the instance's heartbeats until it is
        // recorded, so that triage knows how it ended if this node goes silent first. (Not a
        // hand-back or a user's cancel: those are not the attempt's end.)
        if matches!(to, InvocationStatus::Success | InvocationStatus::Retry | InvocationStatus::Failed) {
            orch.ended(&inv.id, AttemptExit { status: instance.status, error: instance.error.clone() });
        }
        tracing::Span::current().record("outcome", to.as_str());
        if let Some(e) = t.error.as_ref().filter(|_| to == InvocationStatus::Failed) {
            crate::telemetry::set_error(&attempt_span, &e.message);
        }
        // The attempt's record is written with its outcome, in the same transaction.
        let t = t.with_instance(Some(instance));
        let counters = orch.counters();
        let recording = if crate::telemetry::enabled() {
            tracing::info_span!("outcome", otel.name = "warden.outcome", invocation = %inv.id, status = to.as_str())
        } else {
            tracing::Span::none()
        };
        match record_outcome(&orch, t).instrument(recording).await {
            Ok(TransitionOutcome::Applied) => {
                AttemptCounters::bump(&counters.recorded);
                // The invocation no longer holds its running-concurrency scope: a call held
                // back by it may start now, here or on another node, not at their next poll.
                if scoped {
                    orch.nudge();
                }
                if to.is_runnable() {
                    // Wake the dispatchers when the retry becomes claimable: this node's, and
                    // the others' (the retry's token may be another node's).
                    orch.wake_after(Duration::from_millis(delay_ms));
                }
            }
            Ok(refused) => {
                AttemptCounters::bump(&counters.discarded);
                tracing::warn!(
                why = ?refused,
                    "the attempt was taken away from this node (or cancelled) meanwhile; its outcome is discarded and its instance says so"
                );
            }
            Err(e) => {
                AttemptCounters::bump(&counters.unrecorded);
                tracing::error!(error = %e, "could not record the outcome; recovery will reroute the invocation");
            }
        }
        lock(&orch.inner.attempts.progress).remove(&inv.id);
        orch.unhold(&inv.id);
    }
    .instrument(span)
    .await
}

/// Writes an attempt's outcome. While the database is unavailable (restarting, connections
/// cut, still aborting the write after the store's own retries), the write is tried again
/// with backoff for as long as it takes: an outcome that ran is never thrown away for a
/// passing fault. The node's heartbeat keeps the attempt's instance alive meanwhile, so no
/// one takes the invocation away; if someone does (the node was declared dead), the
/// compare-and-swap refuses the write and the answer says so. Returns the outcome of the
/// write, or the lasting error that stopped it.
async fn record_outcome(orch: &Orchestrator, t: Transition) -> Result<TransitionOutcome, super::OrchestratorError> {
    let mut tries = 0;
    loop {
        match orch.transition(vec![t.clone()]).await {
            Ok(out) => {
                if tries > 0 {
                    AttemptCounters::bump(&orch.counters().recorded_after_retry);
                    tracing::info!(tries, "recorded the outcome after the database came back");
                }
                return Ok(out.first().copied().unwrap_or(TransitionOutcome::NotFound));
            }
            Err(super::OrchestratorError::Unavailable(e)) => {
                tries += 1;
                if tries == 1 || tries % 20 == 0 {
                    tracing::warn!(error = %e, tries, "the outcome is not written yet (the database is unavailable); retrying until it answers");
                }
                tokio::time::sleep(super::write_backoff(tries)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The limits of an attempt: the task's, grown by its resource scale once for every earlier
/// attempt of the invocation that ended in a resource error (timeout or memory limit). The
/// earlier attempts are read as the task is (waiting out an unavailable database); if they
/// cannot be read for a lasting reason, the attempt runs with the task's limits. Fails only if
/// the attempt is interrupted while it waits.
async fn limits_for(
    orch: &Orchestrator,
    inv: &Claimed,
    task: &crate::model::TaskDef,
    cancel: &CancellationToken,
) -> Result<Limits, TaskFailure> {
    let base = Limits {
        timeout_ms: task.timeout_ms,
        memory_limit_bytes: task.memory_limit_bytes,
        scratch_bytes: task.policy.scratch_bytes,
    };
    if inv.attempt <= 1 || task.policy.resource_scale_percent == 0 {
        return Ok(base);
    }
    let earlier = until_available(orch, cancel, || async {
        orch.store().instance_list(&inv.id).await.map_err(super::OrchestratorError::from)
    })
    .await;
    let resource_errors = match earlier {
        Ok(instances) => instances.iter().filter(|i| i.status == InstanceStatus::ResourceError).count(),
        Err(f) if f.kind == ErrorKind::Cancelled => return Err(f),
        Err(f) => {
            tracing::warn!(error = %f.message, "reading earlier attempts failed; running with the task's limits");
            0
        }
    };
    let p = task.policy.resource_scale_percent;
    Ok(Limits {
        timeout_ms: super::policy::scaled_limit(base.timeout_ms, p, resource_errors),
        memory_limit_bytes: super::policy::scaled_limit(base.memory_limit_bytes, p, resource_errors),
        ..base
    })
}

/// Runs `read` until it does not fail with [`OrchestratorError::Unavailable`], with backoff.
/// A lasting error is a `host` failure; the attempt's interruption (a user's cancel, or the
/// node shutting down) while it waits is a `cancelled` one.
///
/// [`OrchestratorError::Unavailable`]: super::OrchestratorError::Unavailable
async fn until_available<T, F, Fut>(orch: &Orchestrator, cancel: &CancellationToken, read: F) -> Result<T, TaskFailure>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, super::OrchestratorError>>,
{
    let mut tries = 0;
    loop {
        match read().await {
            Ok(v) => return Ok(v),
            Err(super::OrchestratorError::Unavailable(e)) => {
                tries += 1;
                if tries == 1 || tries % 20 == 0 {
                    tracing::warn!(error = %e, tries, "could not read what the attempt needs yet (the task, its component, its earlier attempts); retrying");
                }
                tokio::select! {
                    () = tokio::time::sleep(super::write_backoff(tries)) => {}
                    () = cancel.cancelled() => {
                        return Err(TaskFailure::new(ErrorKind::Cancelled, "interrupted before it started"));
                    }
                    () = orch.inner.shutdown.cancelled() => {
                        return Err(TaskFailure::new(ErrorKind::Cancelled, "the node is shutting down"));
                    }
                }
            }
            Err(e) => return Err(TaskFailure::new(ErrorKind::Host, e.to_string())),
        }
    }
}

/// What [`run_guest`] returns.
struct Ran {
    /// The guest's result or failure.
    outcome: Result<String, TaskFailure>,
    /// The attempt limit in force.
    max_attempts: u32,
    /// The task runs under running concurrency: its end frees a scope.
    scoped: bool,
    /// The run's report (its outcome taken out); empty if the guest did not run.
    report: RunReport,
}

impl Ran {
    /// An attempt that ended with `failure` before its guest ran.
    fn not_run(failure: TaskFailure, max_attempts: u32, scoped: bool) -> Self {
        Self { outcome: Err(failure), max_attempts, scoped, report: RunReport::nothing(Ok(String::new())) }
    }
}

/// Looks up the task and component and runs the guest, writing `running` once the attempt has
/// run for [`MARK_RUNNING_AFTER`].
async fn run_guest(orch: &Orchestrator, inv: &Claimed, cancel: CancellationToken, host: Arc<AttemptHost>) -> Ran {
    // The task and its compiled component are usually cached; when they are not, reading them
    // waits out a database that is unavailable for now, like the attempt's writes do: a
    // passing fault must not fail a call that never ran.
    let task = match until_available(orch, &cancel, || orch.task(&inv.task)).await {
        Ok(t) => t,
        Err(f) => return Ran::not_run(f, 1, false),
    };
    let max_attempts = inv.max_attempts.unwrap_or(task.max_attempts);
    let scoped = task.running_concurrency != Concurrency::Disabled;
    let component =
        match until_available(orch, &cancel, || orch.component(&task.component, inv.component_version)).await {
            Ok(c) => c,
            Err(f) => return Ran::not_run(f, max_attempts, scoped),
        };
    let info = InvocationInfo {
        id: inv.id.clone(),
        task: inv.task.clone(),
        attempt: inv.attempt,
        parent: inv.parent.clone(),
        workflow: inv.workflow.clone(),
    };
    let limits = match limits_for(orch, inv, &task, &cancel).await {
        Ok(l) => l,
        Err(f) => return Ran::not_run(f, max_attempts, scoped),
    };
    let gauge = orch.gauge(&inv.id);
    let req = RunRequest { task: inv.task.clone(), args: inv.args.clone(), info, limits, cancel, gauge };
    let run = orch.inner.runtime.run(&component, req, host.clone());
    tokio::pin!(run);
    let mut report = tokio::select! {
        r = &mut run => r,
        _ = tokio::time::sleep(MARK_RUNNING_AFTER) => {
            // Still running: show it. A rejected write means the attempt was taken away from
            // this node (fencing); `ensure_running` then interrupts the guest.
            let ((), r) = tokio::join!(async { let _ = host.ensure_running().await; }, &mut run);
            r
        }
    };
    if report.output_truncated || !report.stderr.is_empty() {
        tracing::debug!(
            stdout_bytes = report.stdout.len(),
            stderr_bytes = report.stderr.len(),
            truncated = report.output_truncated,
            "guest output"
        );
    }
    let outcome = std::mem::replace(&mut report.outcome, Ok(String::new()));
    Ran { outcome, max_attempts, scoped, report }
}
