//! The HTTP API (axum): the only place that speaks HTTP. `router(state)` builds every route of
//! DESIGN.md's contract; handlers take typed JSON (`json::Json`, whose rejection is the one
//! error shape of `error.rs`), call orchestrator methods (never the store) and answer with
//! `Serialize` types declared beside them. `serve` runs the server (timeouts, connection cap,
//! drain), `auth` asks for API keys, `ui` serves the web dashboard, `guard` keeps other web pages and oversized input out, and
//! a middleware of `error.rs` logs every 5xx once.

pub mod auth;
mod cluster;
mod components;
mod coordination;
pub mod error;
mod feed;
pub mod guard;
mod health;
mod invocations;
mod json;
mod metrics;
pub mod serve;
mod ui;
mod workflows;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::orchestrator::Orchestrator;
pub use auth::Auth;
pub use error::ApiError;
pub use guard::GuardConfig;
pub use serve::{ServeConfig, serve};

/// Size limits of requests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest component upload.
    pub max_upload_bytes: usize,
    /// Largest JSON body (other than the ones below).
    pub max_body_bytes: usize,
    /// Largest body of a batch, a workflow or an array.
    pub max_batch_body_bytes: usize,
    /// Largest call arguments and event payload as JSON text.
    pub max_args_bytes: usize,
    /// A request body that sends nothing for this long is cut off (the request fails with 400
    /// and the connection closes), so a client cannot hold a connection by dribbling a body.
    pub body_idle_timeout: Duration,
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The node's orchestrator.
    pub orch: Orchestrator,
    /// Size limits.
    pub limits: Limits,
    /// The node's API keys.
    pub auth: Auth,
    /// Host, origin and CORS settings.
    pub guard: GuardConfig,
    /// Fires when the daemon stops (long-polls answer at once).
    pub stop: CancellationToken,
}

/// Longest a result long-poll may wait.
pub const MAX_LONG_POLL: Duration = Duration::from_secs(60);

/// Builds the router with every route.
pub fn router(state: AppState) -> Router {
    let Limits { max_upload_bytes, max_body_bytes, max_batch_body_bytes, body_idle_timeout, .. } = state.limits;
    let big = || DefaultBodyLimit::max(max_batch_body_bytes);
    let router = Router::new()
        .route(
            "/v1/components",
            post(components::upload).layer(DefaultBodyLimit::max(max_upload_bytes)).get(components::list),
        )
        .route("/v1/components/{name}", get(components::show).delete(components::remove))
        .route("/v1/tasks", get(components::tasks))
        .route("/v1/tasks/{task}", get(components::task).patch(components::patch_task))
        .route("/v1/tasks/{task}/resources", get(components::resources))
        .route("/v1/invocations", post(invocations::route_one).get(invocations::list))
        .route("/v1/invocations/batch", post(invocations::route_batch).layer(big()))
        .route("/v1/invocations/count", get(invocations::count))
        .route("/v1/invocations/results", post(feed::results))
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
        .route("/v1/events/stream", get(feed::stream))
        .route("/v1/services/runs", get(coordination::service_runs))
        .route("/v1/cluster/nodes", get(coordination::nodes))
        .route("/v1/cluster/tokens", get(cluster::tokens))
        .route("/v1/cluster/pins", get(cluster::list).post(cluster::pin))
        .route("/v1/cluster/pins/{task}", axum::routing::delete(cluster::unpin))
        .route("/v1/workflows", post(workflows::create).layer(big()).get(workflows::list))
        .route("/v1/workflows/{id}", get(workflows::show))
        .route("/v1/workflows/{id}/nodes", get(workflows::nodes))
        .route("/v1/workflows/{id}/pause", post(workflows::pause))
        .route("/v1/workflows/{id}/resume", post(workflows::resume))
        .route("/v1/workflows/{id}/cancel", post(workflows::cancel))
        .route("/v1/arrays", post(workflows::create_array).layer(big()))
        .route("/v1/keys", post(auth::create).get(auth::list))
        .route("/v1/keys/{name}", axum::routing::delete(auth::delete))
        .route("/v1/whoami", get(auth::whoami))
        .route("/metrics", get(metrics::metrics))
        .merge(ui::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this path",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(RequestBodyTimeoutLayer::new(body_idle_timeout))
        .layer(axum::middleware::from_fn(error::log_server_errors))
        .layer(TraceLayer::new_for_http())
        // Probes stay out of the request trace: a 503 from /health/ready while a node starts
        // is an answer, not a failure to log.
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        // Outermost last: CORS (if any), then the Host check, the Origin check, the key.
        .layer(from_fn_with_state(state.clone(), auth::require_key))
        .layer(from_fn_with_state(state.clone(), guard::check_origin))
        .layer(from_fn_with_state(state.clone(), guard::check_host));
    let router = match guard::cors_layer(&state.guard.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(state)
}
