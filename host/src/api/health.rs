//! Liveness (the process answers) and readiness (the node is registered, knows its pins and
//! the database answers).

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::json::Json;

/// The answer of a probe: `{"status":"live"}`, `{"status":"ready","node","database"}` or
/// `{"status":"unavailable","reason"}`.
#[derive(Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(super) enum Health {
    /// The process answers.
    Live,
    /// The node serves.
    Ready { node: String, database: &'static str },
    /// The node does not serve yet, or no longer.
    Unavailable { reason: &'static str },
}

/// Liveness
///
/// The process answers.
#[utoipa::path(
    get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "`{\"status\":\"live\"}`.", body = Health))
)]
pub(super) async fn live() -> Json<Health> {
    Json(Health::Live)
}

/// Readiness
///
/// 503 until the node is registered and owns tokens (and while it is fenced off or the
/// database does not answer).
#[utoipa::path(
    get, path = "/health/ready", tag = "operations",
    responses(
        (status = 200, description = "`{\"status\":\"ready\",\"node\",\"database\"}`.", body = Health),
        (status = 503, description = "`{\"status\":\"unavailable\",\"reason\"}`.", body = Health),
    )
)]
pub(super) async fn ready(State(s): State<AppState>) -> (StatusCode, Json<Health>) {
    if !s.orch.is_ready() {
        let reason = "not registered in the cluster yet, owning no tokens yet (the ring waits for minimum_nodes), or \
                      fenced off (no heartbeat for a whole timeout)";
        return (StatusCode::SERVICE_UNAVAILABLE, Json(Health::Unavailable { reason }));
    }
    match s.orch.database_ping().await {
        Ok(()) => {
            let ready = Health::Ready { node: s.orch.node().to_string(), database: s.orch.database_dialect() };
            (StatusCode::OK, Json(ready))
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, Json(Health::Unavailable { reason: "database unreachable" }))
        }
    }
}
