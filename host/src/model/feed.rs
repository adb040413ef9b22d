//! The change feed's event (one invocation status change, as the history stored it) and the
//! filter a subscriber gives (`GET /v1/events/stream?task=&workflow=&invocation=`); pure.

use serde::Serialize;

use super::{InvocationStatus, Millis};

/// One status change: a row of `invocation_history` with its invocation's task and workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeEvent {
    /// The history sequence number: grows with every change, cluster-wide (the SSE `id:`).
    #[serde(skip)]
    pub seq: i64,
    /// The invocation that changed.
    pub invocation: String,
    /// Its task.
    pub task: String,
    /// The status it entered.
    pub status: InvocationStatus,
    /// When (database clock, ms since the Unix epoch).
    pub at: Millis,
    /// The node that made the change, if any.
    pub node: Option<String>,
    /// The workflow that routed the invocation, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
}

/// Which changes a subscriber wants: all given fields must match; none given, every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeFilter {
    /// Only this task's invocations.
    pub task: Option<String>,
    /// Only invocations routed by this workflow.
    pub workflow: Option<String>,
    /// Only this invocation.
    pub invocation: Option<String>,
}

impl ChangeFilter {
    /// Whether `e` passes the filter.
    pub fn matches(&self, e: &ChangeEvent) -> bool {
        self.task.as_ref().is_none_or(|t| *t == e.task)
            && self.workflow.as_ref().is_none_or(|w| e.workflow.as_ref() == Some(w))
            && self.invocation.as_ref().is_none_or(|i| *i == e.invocation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(task: &str, workflow: Option<&str>, id: &str) -> ChangeEvent {
        ChangeEvent {
            seq: 1,
            invocation: id.into(),
            task: task.into(),
            status: InvocationStatus::Registered,
            at: 0,
            node: None,
            workflow: workflow.map(str::to_string),
        }
    }

    #[test]
    fn every_given_field_must_match() {
        let e = event("hello", Some("w1"), "a");
        assert!(ChangeFilter::default().matches(&e));
        assert!(ChangeFilter { task: Some("hello".into()), ..Default::default() }.matches(&e));
        assert!(!ChangeFilter { task: Some("slow".into()), ..Default::default() }.matches(&e));
        assert!(
            ChangeFilter { workflow: Some("w1".into()), invocation: Some("a".into()), ..Default::default() }
                .matches(&e)
        );
        assert!(
            !ChangeFilter { workflow: Some("w1".into()), invocation: Some("b".into()), ..Default::default() }
                .matches(&e)
        );
        assert!(
            !ChangeFilter { workflow: Some("w1".into()), ..Default::default() }.matches(&event("hello", None, "a"))
        );
    }

    #[test]
    fn the_event_serializes_as_the_stream_sends_it() {
        let v = serde_json::to_value(event("hello", None, "a")).unwrap();
        assert_eq!(v, serde_json::json!({"invocation":"a","task":"hello","status":"registered","at":0,"node":null}));
    }
}
