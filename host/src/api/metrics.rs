//! `GET /metrics`: the cluster's state in the Prometheus text format (version 0.0.4), read
//! from the database at scrape time, plus this node's own gauges. Includes the pinned tasks no
//! live node can run, so an alert can fire on them.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::{ApiError, AppState};

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Prometheus metrics
///
/// The cluster's state in the Prometheus text format (0.0.4): invocations by task and status,
/// live nodes, tokens per node, the ring's version, unrunnable pinned tasks, this node's slots,
/// readiness and attempt outcome counters.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "The metrics.", body = String, content_type = "text/plain"))
)]
pub(super) async fn metrics(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, rows: Vec<(String, i64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let counts = s.orch.invocation_count(None, None).await?;
    gauge(
        "warden_invocations",
        "Invocations by task and status.",
        counts
            .iter()
            .map(|c| (format!("{{task=\"{}\",status=\"{}\"}}", label(&c.task), c.status.as_str()), c.count))
            .collect(),
    );
    let (now, nodes) = s.orch.node_list().await?;
    let timeout = s.orch.heartbeat_timeout_ms();
    let live = nodes.iter().filter(|n| n.is_live(now, timeout)).count();
    gauge("warden_nodes_live", "Live nodes of the cluster.", vec![(String::new(), i64::try_from(live).unwrap_or(0))]);
    gauge(
        "warden_node_tokens",
        "Tokens of the ring each node owns.",
        s.orch
            .token_loads()
            .await?
            .into_iter()
            .map(|l| (format!("{{node=\"{}\"}}", label(&l.node)), l.tokens))
            .collect(),
    );
    let ring = s.orch.ring().await?;
    gauge(
        "warden_ring_version",
        "Version of the token ring (bumped by every swap).",
        vec![(String::new(), ring.version)],
    );
    let views = super::cluster::pin_views(&s, now, &nodes, None).await?;
    let unrunnable = super::cluster::unrunnable(&views);
    gauge(
        "warden_pinned_tasks_unrunnable",
        "Pinned tasks whose patterns match no live node (they cannot run).",
        vec![(String::new(), i64::try_from(unrunnable.len()).unwrap_or(0))],
    );
    gauge(
        "warden_pinned_task_unrunnable",
        "1 for each pinned task no live node can run.",
        unrunnable.iter().map(|t| (format!("{{task=\"{}\"}}", label(t)), 1)).collect(),
    );
    let node = format!("{{node=\"{}\"}}", label(s.orch.node()));
    gauge(
        "warden_slots",
        "Attempts this node runs at once.",
        vec![(node.clone(), i64::try_from(s.orch.slots()).unwrap_or(0))],
    );
    gauge(
        "warden_ready",
        "1 when this node is registered and owns tokens (it claims work).",
        vec![(node, i64::from(s.orch.is_ready()))],
    );
    let c = s.orch.counters();
    let me = format!("{{node=\"{}\"}}", label(s.orch.node()));
    for (name, help, v) in [
        ("warden_outcomes_recorded_total", "Attempt outcomes this node stored.", &c.recorded),
        (
            "warden_outcomes_recorded_after_retry_total",
            "Attempt outcomes stored only after the database was unavailable for a while.",
            &c.recorded_after_retry,
        ),
        (
            "warden_outcomes_discarded_total",
            "Attempt outcomes refused because the invocation was taken away or cancelled meanwhile.",
            &c.discarded,
        ),
        (
            "warden_outcomes_unrecorded_total",
            "Attempt outcomes that could not be written (recovery reroutes their invocations).",
            &c.unrecorded,
        ),
        (
            "warden_attempts_taken_away_total",
            "Running guests interrupted because triage took their instance away.",
            &c.taken_away,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name}{me} {}",
            v.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    let (delivered, holes) = s.orch.feed_counters();
    for (name, help, v) in [
        ("warden_feed_events_total", "Status changes the change feed delivered to this node's subscribers.", delivered),
        (
            "warden_feed_holes_skipped_total",
            "History sequence numbers the change feed gave up waiting for (rolled-back transactions).",
            holes,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name}{me} {v}");
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out))
}
