//! Liveness (the process answers) and readiness (the node is registered, knows its pins and
//! the database answers).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;

/// `GET /health/live`.
pub(super) async fn live() -> Json<Value> {
    Json(json!({"status": "live"}))
}

/// `GET /health/ready`: 503 until the node is registered (and while it is fenced off or the
/// database does not answer).
pub(super) async fn ready(State(s): State<AppState>) -> (StatusCode, Json<Value>) {
    if !s.orch.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"status": "unavailable", "reason": "not registered in the cluster yet, owning no tokens yet (the ring waits for minimum_nodes), or fenced off (no heartbeat for a whole timeout)"}),
            ),
        );
    }
    match s.orch.store().ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "node": s.orch.node(), "database": s.orch.store().dialect()})),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "reason": "database unreachable"})))
        }
    }
}
