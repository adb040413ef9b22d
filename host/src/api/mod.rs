//! The HTTP API (axum): the only place that speaks HTTP. `router(state)` builds every route of
//! DESIGN.md's contract; handlers take typed JSON (`json::Json`, whose rejection is the one
//! error shape of `error.rs`), call orchestrator methods (never the store) and answer with
//! `Serialize` types declared beside them. One route table (`api_routes`, `probe_routes`) of
//! handlers annotated with `#[utoipa::path]` builds both the router and the OpenAPI document
//! (`openapi.rs`, served at `/openapi.json`). `serve` runs the server (timeouts, connection cap,
//! drain), `auth` asks for API keys, `feed` streams status changes and awaits many results,
//! `ui` serves the web dashboard, `guard` keeps other web pages and oversized input out, and
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
pub mod openapi;
mod rate_limits;
pub mod serve;
mod ui;
mod workflows;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

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

impl Limits {
    /// The limits a configuration sets.
    pub fn of(cfg: &crate::config::Config) -> Self {
        Self {
            max_upload_bytes: cfg.max_upload_bytes,
            max_body_bytes: cfg.max_body_bytes,
            max_batch_body_bytes: cfg.max_batch_body_bytes,
            max_args_bytes: cfg.max_args_bytes,
            body_idle_timeout: Duration::from_millis(cfg.header_read_timeout_ms),
        }
    }
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

/// Builds the router with every route: the route table of [`api_routes`] and [`probe_routes`]
/// (the same table the OpenAPI document is generated from), the fallbacks and the layers.
pub fn router(state: AppState) -> Router {
    let Limits { max_body_bytes, body_idle_timeout, .. } = state.limits;
    let (api, _) = api_routes(&state.limits).split_for_parts();
    let (probes, _) = probe_routes().split_for_parts();
    let router = api
        // The dashboard's page and files: not part of the API document.
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
        .merge(probes)
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

/// The route table of everything but the probes: each handler with its `#[utoipa::path]`
/// (method, path, parameters, bodies, answers), so the router and the OpenAPI document
/// (`openapi.rs`) come from this one list. A route added any other way fails
/// `openapi::tests::every_route_goes_through_the_table`.
fn api_routes(limits: &Limits) -> OpenApiRouter<AppState> {
    let upload = DefaultBodyLimit::max(limits.max_upload_bytes);
    let big = DefaultBodyLimit::max(limits.max_batch_body_bytes);
    let layered = |(schemas, paths, method): UtoipaMethodRouter<AppState>, limit: DefaultBodyLimit| {
        (schemas, paths, method.layer(limit))
    };
    OpenApiRouter::new()
        .routes(layered(routes!(components::upload), upload))
        .routes(routes!(components::list))
        .routes(routes!(components::show, components::remove))
        .routes(routes!(components::versions))
        .routes(routes!(components::rollback))
        .routes(routes!(components::delete_version))
        .routes(routes!(components::tasks))
        .routes(routes!(components::task, components::patch_task))
        .routes(routes!(components::resources))
        .routes(routes!(invocations::route_one, invocations::list))
        .routes(layered(routes!(invocations::route_batch), big))
        .routes(routes!(invocations::count))
        .routes(routes!(feed::results))
        .routes(routes!(invocations::show))
        .routes(routes!(invocations::result))
        .routes(routes!(invocations::history))
        .routes(routes!(invocations::children))
        .routes(routes!(invocations::instances))
        .routes(routes!(invocations::logs))
        .routes(routes!(invocations::cancel))
        .routes(routes!(invocations::rerun))
        .routes(routes!(coordination::create_trigger, coordination::list_triggers))
        .routes(routes!(coordination::show_trigger, coordination::delete_trigger))
        .routes(routes!(coordination::post_event))
        .routes(routes!(feed::stream))
        .routes(routes!(coordination::service_runs))
        .routes(routes!(coordination::nodes))
        .routes(routes!(cluster::tokens))
        .routes(routes!(cluster::list, cluster::pin))
        .routes(routes!(cluster::unpin))
        .routes(layered(routes!(workflows::create), big))
        .routes(routes!(workflows::list))
        .routes(routes!(workflows::show))
        .routes(routes!(workflows::nodes))
        .routes(routes!(workflows::pause))
        .routes(routes!(workflows::resume))
        .routes(routes!(workflows::cancel))
        .routes(layered(routes!(workflows::create_array), big))
        .routes(routes!(rate_limits::list))
        .routes(routes!(rate_limits::put, rate_limits::show, rate_limits::remove))
        .routes(routes!(auth::create, auth::list))
        .routes(routes!(auth::delete))
        .routes(routes!(auth::whoami))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi::serve_document))
}

/// The probes' route table: open to anyone, outside the request trace.
fn probe_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health::live)).routes(routes!(health::ready))
}
