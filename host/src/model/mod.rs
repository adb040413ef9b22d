//! The domain floor: every type and pure rule that two layers share, one file per subject.
//! It imports nothing of the crate but itself (and `config` nothing of it), so the store, the
//! runtime, the orchestrator, the services and the API all stand on it, never the reverse.
//!
//! - [`task`]: tasks, their options and patches, components.
//! - [`invocation`]: invocations, failures, history, ownership, transitions.
//! - [`status`]: the invocation status machine as one declarative table.
//! - [`identity`]: canonical arguments, call ids and invocation ids.
//! - [`instance`]: task instances (Jobmon) with their status table and triage.
//! - [`cluster`]: nodes, the lease, the token ring, atomic-service executions.
//! - [`trigger`]: triggers, events and the status changes they read.
//! - [`workflow`]: workflows and arrays, their validation, status rule and node selection.
//! - [`key`]: API key roles, generation and hashing.
//! - [`rate_limit`]: rate limits, their key paths and windows.
//! - [`feed`]: the change feed's event and its subscribers' filter.

pub mod cluster;
pub mod feed;
pub mod identity;
pub mod instance;
pub mod invocation;
pub mod key;
pub mod rate_limit;
pub mod status;
pub mod task;
pub mod trigger;
pub mod workflow;

pub use cluster::*;
pub use instance::TaskInstance;
pub use invocation::*;
pub use status::InvocationStatus;
pub use task::*;
pub use trigger::*;

/// Milliseconds since the Unix epoch, always read from the database clock.
pub type Millis = i64;
