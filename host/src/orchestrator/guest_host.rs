//! Host services of one running attempt (the WIT `calls` interface and progress): child calls
//! with deterministic ids, and waits that suspend the parent (`running → paused`), give its
//! slot back while children run, then take a slot again (`paused → resumed → running`).

use tokio::sync::{Mutex, OnceCell, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::{Orchestrator, OrchestratorError, Progress, lock};
use crate::model::{ErrorKind, InvocationStatus, Owner, TaskFailure, Transition, identity};
use crate::runtime::{GuestHost, InvocationInfo};
use crate::store::TransitionOutcome;

/// The `GuestHost` of one attempt.
pub(super) struct AttemptHost {
    orch: Orchestrator,
    /// The invocation this attempt runs.
    id: String,
    owner: Owner,
    /// The run slot; handed back while the guest waits on children.
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    /// The invocation's status as this attempt last changed it (`pending`, `running`, `paused`).
    status: std::sync::Mutex<InvocationStatus>,
    /// Whether `pending → running` was written (once) and how it went.
    running: OnceCell<Result<(), TaskFailure>>,
    /// Interrupts the guest when the attempt is taken away.
    cancel: CancellationToken,
    /// The trace context of the calls it makes: the attempt's span when traces are exported,
    /// else the invocation's own (passed on).
    trace: Option<String>,
    /// The invocation's priority: the calls it makes inherit it (a high-priority parent does
    /// not wait on children queued behind lower work).
    priority: u8,
}

impl AttemptHost {
    pub(super) fn new(
        orch: Orchestrator,
        id: String,
        owner: Owner,
        permit: OwnedSemaphorePermit,
        cancel: CancellationToken,
        trace: Option<String>,
        priority: u8,
    ) -> Self {
        Self {
            orch,
            id,
            owner,
            permit: Mutex::new(Some(permit)),
            status: std::sync::Mutex::new(InvocationStatus::Pending),
            running: OnceCell::new(),
            cancel,
            trace,
            priority,
        }
    }

    /// Writes `pending → running` once. If it is rejected, the attempt was taken away from this
    /// node: the guest is interrupted and every later write of the attempt fails. A database
    /// that is unavailable meanwhile is waited for ([`AttemptHost::change_with`] retries); an
    /// error that is not a rejection never stops the guest (its outcome is then written from
    /// `pending`).
    pub(super) async fn ensure_running(&self) -> Result<(), TaskFailure> {
        self.running
            .get_or_init(|| async {
                // The instance moves with it: `queued → instantiated → launched → running`,
                // due to report by now + the window (the heartbeat keeps it so from here on).
                let instance = crate::model::TaskInstance::live(
                    &self.id,
                    self.owner.attempt,
                    self.orch.node(),
                    crate::model::instance::InstanceStatus::Running,
                    self.orch.report_window_ms(),
                );
                let r = self
                    .change_with(&self.id, InvocationStatus::Pending, &[InvocationStatus::Running], Some(instance))
                    .await;
                match &r {
                    Err(Change::Refused) => {
                        tracing::warn!("the attempt was taken away from this node before it was marked running; interrupting it");
                        self.cancel.cancel();
                    }
                    Err(Change::Failed(f)) => {
                        tracing::warn!(error = %f, "could not mark the attempt running; it goes on, and its outcome will say so");
                    }
                    Ok(()) => {}
                }
                r.map_err(Change::into_failure)
            })
            .await
            .clone()
    }

    /// Gives the run slot back (the guest is done).
    pub(super) async fn release_slot(&self) {
        self.permit.lock().await.take();
    }

    /// The status this attempt last moved its invocation to.
    pub(super) fn status(&self) -> InvocationStatus {
        *lock(&self.status)
    }

    async fn change(&self, id: &str, from: InvocationStatus, path: &[InvocationStatus]) -> Result<(), TaskFailure> {
        self.change_with(id, from, path, None).await.map_err(Change::into_failure)
    }

    /// A change of the invocation, and of its instance when `instance` is given, in one write.
    /// While the database is unavailable the write is tried again with backoff, for as long
    /// as it takes (the attempt cannot go on without it, and its node's heartbeat keeps it
    /// alive meanwhile); only a refusal (the compare-and-swap found the invocation taken away
    /// or cancelled) or a lasting error ends it.
    async fn change_with(
        &self,
        id: &str,
        from: InvocationStatus,
        path: &[InvocationStatus],
        instance: Option<crate::model::TaskInstance>,
    ) -> Result<(), Change> {
        let t = Transition::owned(id, &self.owner, from, path, self.orch.node()).with_instance(instance);
        let to = t.to();
        let mut tries = 0;
        loop {
            match self.orch.transition(vec![t.clone()]).await.as_deref() {
                Ok([TransitionOutcome::Applied]) => {
                    *lock(&self.status) = to;
                    return Ok(());
                }
                Ok(_) => return Err(Change::Refused),
                Err(OrchestratorError::Unavailable(e)) => {
                    tries += 1;
                    tracing::warn!(error = %e, tries, to = %to, "could not record a status change yet; retrying");
                    tokio::time::sleep(super::write_backoff(tries)).await;
                }
                Err(e) => return Err(Change::Failed(TaskFailure::new(ErrorKind::Host, e.to_string()))),
            }
        }
    }
}

/// Why a status change of an attempt did not happen.
enum Change {
    /// The compare-and-swap refused it: the invocation was taken away from this attempt or
    /// cancelled.
    Refused,
    /// The write failed for a lasting reason.
    Failed(TaskFailure),
}

impl Change {
    fn into_failure(self) -> TaskFailure {
        match self {
            Self::Refused => TaskFailure::new(ErrorKind::Host, "the attempt was taken away from this node"),
            Self::Failed(f) => f,
        }
    }
}

impl AttemptHost {
    /// Stores child call `id` unless it exists (a re-run parent re-attaches to the child it
    /// made before).
    async fn call_once(
        &self,
        caller: &InvocationInfo,
        id: &str,
        task: &str,
        args: &serde_json::Value,
    ) -> Result<(), OrchestratorError> {
        if self.orch.store().invocation_get(id).await?.is_some() {
            return Ok(());
        }
        let mut new =
            self.orch.new_invocation(task, args, Some(id.to_string()), Some(caller.id.clone()), None, None).await?;
        // A child keeps its deterministic id, so it is never folded into another invocation.
        new.scope = None;
        let mut span = Vec::new();
        new.trace_parent = super::routing_trace(&new, self.trace.as_deref(), &mut span);
        new.priority = self.priority;
        match self.orch.insert(vec![new]).await {
            // Made meanwhile (by a try whose answer was lost): it exists.
            Err(OrchestratorError::Conflict(_)) if self.orch.store().invocation_get(id).await?.is_some() => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

fn to_failure(e: OrchestratorError) -> TaskFailure {
    match e {
        OrchestratorError::UnknownTask(_) | OrchestratorError::BadRequest(_) => {
            TaskFailure::new(ErrorKind::InvalidArgs, e.to_string())
        }
        other => TaskFailure::new(ErrorKind::Host, other.to_string()),
    }
}

#[async_trait::async_trait]
impl GuestHost for AttemptHost {
    async fn call(&self, caller: &InvocationInfo, seq: u32, task: &str, args: &str) -> Result<String, TaskFailure> {
        let max = self.orch.inner.cfg.max_args_bytes;
        if args.len() > max {
            return Err(TaskFailure::new(
                ErrorKind::InvalidArgs,
                format!(
                    "call of `{task}`: the arguments are {} bytes, more than the limit of {max} (--max-args-bytes)",
                    args.len()
                ),
            ));
        }
        let args: serde_json::Value = serde_json::from_str(args).map_err(|e| {
            TaskFailure::new(ErrorKind::InvalidArgs, format!("call of `{task}`: arguments are not JSON: {e}"))
        })?;
        let id = identity::child_invocation_id(&caller.id, seq);
        // While the database is unavailable the call waits for it (the guest's own time limit
        // still applies); the child's id is deterministic, so a try that was stored after all
        // is found by the next one.
        let mut tries = 0;
        loop {
            match self.call_once(caller, &id, task, &args).await {
                Err(OrchestratorError::Unavailable(e)) => {
                    tries += 1;
                    tracing::warn!(error = %e, tries, child = %id, "could not make a child call yet; retrying");
                    tokio::time::sleep(super::write_backoff(tries)).await;
                }
                other => return other.map(|()| id).map_err(to_failure),
            }
        }
    }

    async fn wait(&self, caller: &InvocationInfo, ids: &[String]) -> Vec<Result<String, TaskFailure>> {
        if let Err(f) = self.ensure_running().await {
            return ids.iter().map(|_| Err(f.clone())).collect();
        }
        if let Err(f) = self.change(&caller.id, InvocationStatus::Running, &[InvocationStatus::Paused]).await {
            return ids.iter().map(|_| Err(f.clone())).collect();
        }
        // Give the slot back so the children (or anything else) can run meanwhile.
        self.permit.lock().await.take();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(match self.orch.wait_final(id, None).await {
                Ok((inv, _)) => match inv.status {
                    InvocationStatus::Success => Ok(inv.result.map(|r| r.to_string()).unwrap_or_else(|| "null".into())),
                    status => Err(inv.error.unwrap_or_else(|| {
                        TaskFailure::new(ErrorKind::Other, format!("invocation `{id}` ended {status}"))
                    })),
                },
                Err(e) => Err(to_failure(e)),
            });
        }
        match self.orch.inner.attempts.slots.clone().acquire_owned().await {
            Ok(p) => *self.permit.lock().await = Some(p),
            Err(_) => {
                return ids
                    .iter()
                    .map(|_| Err(TaskFailure::new(ErrorKind::Host, "the node is shutting down")))
                    .collect();
            }
        }
        if let Err(f) = self
            .change(&caller.id, InvocationStatus::Paused, &[InvocationStatus::Resumed, InvocationStatus::Running])
            .await
        {
            return ids.iter().map(|_| Err(f.clone())).collect();
        }
        out
    }

    fn progress(&self, caller: &InvocationInfo, done: u64, total: u64, message: Option<String>) {
        lock(&self.orch.inner.attempts.progress).insert(caller.id.clone(), Progress { done, total, message });
    }
}
