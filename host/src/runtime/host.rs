//! The host side of the guest contract: `warden:task/context` (identity, logs, progress,
//! cancellation) and `warden:task/calls` (child calls and waits, routed to the attempt's
//! `GuestHost`). Errors a guest can act on are WIT values; only host bugs would trap.

use super::bindings::warden::task::{calls, context, types};
use super::bindings::{InvocationInfo as WitInfo, Level, TaskError};
use super::classify::{failure_to_guest, kind_name};
use super::ctx::{TaskCtx, cap_line};
use crate::model::{ErrorKind, TaskFailure};

impl types::Host for TaskCtx {}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

impl context::Host for TaskCtx {
    async fn info(&mut self) -> wasmtime::Result<WitInfo> {
        let i = &self.info;
        Ok(WitInfo {
            id: i.id.clone(),
            task: i.task.clone(),
            attempt: i.attempt,
            parent: i.parent.clone(),
            workflow: i.workflow.clone(),
        })
    }

    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.logs.push(level_name(level), message);
        Ok(())
    }

    async fn progress(&mut self, done: u64, total: u64, message: Option<String>) -> wasmtime::Result<()> {
        self.host.progress(&self.info, done, total, message.map(cap_line));
        Ok(())
    }

    async fn cancelled(&mut self) -> wasmtime::Result<bool> {
        Ok(self.cancel.is_cancelled())
    }
}

impl TaskCtx {
    /// Waits on invocations with the attempt clock stopped; always one result per id.
    async fn wait_on(&mut self, ids: &[String]) -> Vec<Result<String, TaskError>> {
        let results = {
            let _stopped = self.clock.begin_wait();
            self.host.wait(&self.info, ids).await
        };
        let mut results: Vec<_> = results.into_iter().map(|r| r.map_err(failure_to_guest)).collect();
        while results.len() < ids.len() {
            let id = &ids[results.len()];
            let f = TaskFailure::new(ErrorKind::Host, format!("no result came back for invocation `{id}`"));
            results.push(Err(failure_to_guest(f)));
        }
        results.truncate(ids.len());
        results
    }
}

impl calls::Host for TaskCtx {
    async fn call(&mut self, task: String, args: String) -> wasmtime::Result<Result<String, TaskError>> {
        let seq = self.call_seq;
        self.call_seq = self.call_seq.saturating_add(1);
        let routed = self.host.call(&self.info, seq, &task, &args).await;
        if let Err(f) = &routed {
            tracing::debug!(task, kind = kind_name(f.kind), "child call refused: {}", f.message);
        }
        Ok(routed.map_err(failure_to_guest))
    }

    async fn wait(&mut self, invocation: String) -> wasmtime::Result<Result<String, TaskError>> {
        let mut results = self.wait_on(std::slice::from_ref(&invocation)).await;
        Ok(results.pop().unwrap_or_else(|| Err(TaskError::Other("no result came back".into()))))
    }

    async fn wait_all(&mut self, invocations: Vec<String>) -> wasmtime::Result<Vec<Result<String, TaskError>>> {
        if invocations.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.wait_on(&invocations).await)
    }
}
