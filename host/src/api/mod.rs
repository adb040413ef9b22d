//! The HTTP API (axum): the only place that speaks HTTP. `router(state)` builds every route of
//! DESIGN.md's contract; handlers translate JSON to orchestrator calls and errors to the one
//! error shape of `error.rs`.

mod cluster;
mod components;
mod coordination;
pub mod error;
mod health;
mod invocations;
mod metrics;
mod workflows;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

use crate::orchestrator::Orchestrator;
pub use error::ApiError;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The node's orchestrator.
    pub orch: Orchestrator,
    /// Largest accepted request body (component uploads).
    pub max_upload_bytes: usize,
}

/// Longest a result long-poll may wait.
pub const MAX_LONG_POLL: Duration = Duration::from_secs(60);

/// Builds the router with every route.
pub fn router(state: AppState) -> Router {
    let limit = state.max_upload_bytes;
    Router::new()
        .route("/v1/components", post(components::upload).get(components::list))
        .route("/v1/components/{name}", get(components::show).delete(components::remove))
        .route("/v1/tasks", get(components::tasks))
        .route("/v1/tasks/{task}", get(components::task).patch(components::patch_task))
        .route("/v1/tasks/{task}/resources", get(components::resources))
        .route("/v1/invocations", post(invocations::route_one).get(invocations::list))
        .route("/v1/invocations/batch", post(invocations::route_batch))
        .route("/v1/invocations/count", get(invocations::count))
        .route("/v1/invocations/{id}", get(invocations::show))
        .route("/v1/invocations/{id}/result", get(invocations::result))
        .route("/v1/invocations/{id}/history", get(invocations::history))
        .route("/v1/invocations/{id}/children", get(invocations::children))
        .route("/v1/invocations/{id}/instances", get(invocations::instances))
        .route("/v1/invocations/{id}/logs", get(invocations::logs))
        .route("/v1/invocations/{id}/cancel", post(invocations::cancel))
        .route("/v1/invocations/{id}/rerun", post(invocations::rerun))
        .route("/v1/triggers", post(coordination::create_trigger).get(coordination::list_triggers))
        .route("/v1/triggers/{id}", get(coordination::show_trigger).delete(coordination::delete_trigger))
        .route("/v1/events", post(coordination::post_event))
        .route("/v1/services/runs", get(coordination::service_runs))
        .route("/v1/cluster/nodes", get(coordination::nodes))
        .route("/v1/cluster/tokens", get(cluster::tokens))
        .route("/v1/cluster/pins", get(cluster::list).post(cluster::pin))
        .route("/v1/cluster/pins/{task}", axum::routing::delete(cluster::unpin))
        .route("/v1/workflows", post(workflows::create).get(workflows::list))
        .route("/v1/workflows/{id}", get(workflows::show))
        .route("/v1/workflows/{id}/nodes", get(workflows::nodes))
        .route("/v1/workflows/{id}/pause", post(workflows::pause))
        .route("/v1/workflows/{id}/resume", post(workflows::resume))
        .route("/v1/workflows/{id}/cancel", post(workflows::cancel))
        .route("/v1/arrays", post(workflows::create_array))
        .route("/metrics", get(metrics::metrics))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this path",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(TraceLayer::new_for_http())
        // Probes stay out of the request trace: a 503 from /health/ready while a node starts
        // is an answer, not a failure to log.
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .with_state(state)
}
