//! Workflows and arrays (Jobmon): the request bodies, their validation (ids, dependencies,
//! cycles, limits) and the scheduler's selection of ready nodes, all pure. The store keeps
//! the graph (`store/workflow.rs`) and the orchestrator steps it (`orchestrator/workflows.rs`).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::model::Millis;

/// Most nodes one workflow may have by default (`--max-workflow-nodes`).
pub const MAX_NODES: usize = 100_000;

/// Most node ids a cycle error names (a cycle may run through every node of the graph).
pub const CYCLE_NAMES_SHOWN: usize = 10;

/// Longest node id, in bytes.
pub const MAX_NODE_ID: usize = 256;

/// Default of `max_concurrently_running`.
pub const DEFAULT_MAX_RUNNING: u32 = 100;

fn default_max_running() -> u32 {
    DEFAULT_MAX_RUNNING
}

fn empty_args() -> serde_json::Value {
    serde_json::json!({})
}

/// `POST /v1/workflows`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowRequest {
    /// A name for people (not unique).
    #[serde(default)]
    pub name: Option<String>,
    /// Most nodes running at once (counting routed, not yet final invocations).
    #[serde(default = "default_max_running")]
    pub max_concurrently_running: u32,
    /// Start nothing new after the first failure.
    #[serde(default)]
    pub fail_fast: bool,
    /// Attempt limit of every node's invocation; `None`: each task's.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Most nodes of a task running at once.
    #[serde(default)]
    pub task_limits: BTreeMap<String, u32>,
    /// The nodes, in the order they should start when they are ready at once.
    pub nodes: Vec<NodeRequest>,
}

/// One node of a [`WorkflowRequest`].
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeRequest {
    /// Unique within the workflow.
    pub id: String,
    /// Task to call.
    pub task: String,
    /// Its arguments.
    #[serde(default = "empty_args")]
    pub args: serde_json::Value,
    /// Nodes that must be done before this one starts.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// `POST /v1/arrays`: one task called with each of `args`, nodes `"0"`…`"n-1"`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArrayRequest {
    /// Task to call.
    pub task: String,
    /// One call per element.
    pub args: Vec<serde_json::Value>,
    /// Most calls running at once.
    #[serde(default = "default_max_running")]
    pub max_concurrently_running: u32,
    /// Attempt limit of each call; `None`: the task's.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// A name for people.
    #[serde(default)]
    pub name: Option<String>,
}

impl ArrayRequest {
    /// The equivalent workflow: nodes without edges.
    pub fn into_workflow(self) -> WorkflowRequest {
        let task = self.task;
        WorkflowRequest {
            name: self.name.or_else(|| Some(format!("array of {task}"))),
            max_concurrently_running: self.max_concurrently_running,
            fail_fast: false,
            max_attempts: self.max_attempts,
            task_limits: BTreeMap::new(),
            nodes: self
                .args
                .into_iter()
                .enumerate()
                .map(|(i, args)| NodeRequest { id: i.to_string(), task: task.clone(), args, depends_on: Vec::new() })
                .collect(),
        }
    }
}

/// What kind of graph a workflow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowKind {
    /// A graph of nodes with dependencies.
    Workflow,
    /// Independent calls of one task.
    Array,
}

/// Status of a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowStatus {
    /// Being stored (never visible: creation is one transaction).
    Registering,
    /// Nothing started yet.
    Queued,
    /// Some node started.
    Running,
    /// Every node is done (final).
    Done,
    /// Nothing can move any more and some node failed or is blocked (final).
    Failed,
    /// Paused: nothing new starts.
    Halted,
    /// Cancelled by a user (final).
    Cancelled,
}

/// Status of a workflow node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Some upstream is not done.
    Waiting,
    /// Every upstream is done; may start.
    Ready,
    /// Its invocation is routed and not final.
    Running,
    /// Its invocation succeeded.
    Done,
    /// Its invocation ended otherwise (failed, cancelled, dropped).
    Failed,
    /// An upstream failed (transitively): it never runs.
    Blocked,
    /// The workflow was cancelled before it finished.
    Cancelled,
}

macro_rules! string_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The stored (and serialised) name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    other => Err(format!("unknown {} `{other}`", stringify!($ty))),
                }
            }
        }
    };
}

string_enum!(WorkflowKind { Workflow => "workflow", Array => "array" });
string_enum!(WorkflowStatus {
    Registering => "registering",
    Queued => "queued",
    Running => "running",
    Done => "done",
    Failed => "failed",
    Halted => "halted",
    Cancelled => "cancelled",
});
string_enum!(NodeStatus {
    Waiting => "waiting",
    Ready => "ready",
    Running => "running",
    Done => "done",
    Failed => "failed",
    Blocked => "blocked",
    Cancelled => "cancelled",
});

impl WorkflowStatus {
    /// Whether nothing changes any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }
}

/// A workflow as stored (without its nodes).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WorkflowInfo {
    /// Id (UUIDv7).
    pub id: String,
    /// Name.
    pub name: String,
    /// Graph or array.
    pub kind: WorkflowKind,
    /// Status.
    pub status: WorkflowStatus,
    /// Paused by a user.
    pub paused: bool,
    /// Most nodes running at once.
    pub max_concurrently_running: u32,
    /// Start nothing after the first failure.
    pub fail_fast: bool,
    /// Attempt limit of the nodes' invocations.
    pub max_attempts: Option<u32>,
    /// Per-task running limits.
    pub task_limits: BTreeMap<String, u32>,
    /// Bumped by every step and control change.
    pub version: i64,
    /// Database time of creation.
    pub created_at: Millis,
    /// Database time of the last step or change.
    pub updated_at: Millis,
    /// The W3C trace context its nodes' calls join: the workflow's span, a child of the
    /// `traceparent` it was created with. Absent when nobody traces it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub traceparent: Option<String>,
}

/// One node as stored.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WorkflowNode {
    /// Node id.
    pub id: String,
    /// Task.
    pub task: String,
    /// Status.
    pub status: NodeStatus,
    /// Its current (or last) invocation.
    pub invocation: Option<String>,
    /// Upstream nodes (empty when not asked for).
    pub depends_on: Vec<String>,
    /// Database time of its last change.
    pub updated_at: Millis,
}

/// A validated workflow ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWorkflow {
    /// Fresh id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Graph or array.
    pub kind: WorkflowKind,
    /// Most nodes running at once.
    pub max_concurrently_running: u32,
    /// Start nothing after the first failure.
    pub fail_fast: bool,
    /// Attempt limit of the nodes' invocations.
    pub max_attempts: Option<u32>,
    /// Per-task running limits.
    pub task_limits: BTreeMap<String, u32>,
    /// Nodes in `seq` order: id, task, canonical JSON arguments, whether it has upstreams.
    pub nodes: Vec<NewNode>,
    /// `(node, upstream)` pairs.
    pub edges: Vec<(String, String)>,
    /// The trace context its nodes' calls join ([`WorkflowInfo::traceparent`]).
    pub trace_parent: Option<String>,
}

/// One node of a [`NewWorkflow`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewNode {
    /// Node id.
    pub id: String,
    /// Task.
    pub task: String,
    /// Canonical JSON text of the arguments.
    pub args: String,
    /// Starts `waiting` (else `ready`).
    pub has_upstreams: bool,
}

/// Checks a workflow request and turns it into what the store keeps; the message of an
/// error says exactly what is wrong. `max_nodes` is the node's `--max-workflow-nodes`.
/// O(nodes + edges).
pub fn validate(
    req: &WorkflowRequest,
    id: String,
    kind: WorkflowKind,
    max_nodes: usize,
) -> Result<NewWorkflow, String> {
    if req.nodes.is_empty() {
        return Err("a workflow needs at least one node".into());
    }
    if req.nodes.len() > max_nodes {
        return Err(format!(
            "a workflow has at most {max_nodes} nodes (--max-workflow-nodes), this one has {}",
            req.nodes.len()
        ));
    }
    if req.max_concurrently_running == 0 {
        return Err("max_concurrently_running must be at least 1".into());
    }
    if let Some(m) = req.max_attempts {
        crate::model::check_max_attempts(m)?;
    }
    if let Some((task, _)) = req.task_limits.iter().find(|(_, limit)| **limit == 0) {
        return Err(format!("task_limits of `{task}` must be at least 1"));
    }
    let name = req.name.clone().unwrap_or_default();
    if name.len() > 256 {
        return Err("a workflow name has at most 256 bytes".into());
    }
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(req.nodes.len());
    for (i, n) in req.nodes.iter().enumerate() {
        if n.id.is_empty() {
            return Err(format!("node #{i} has an empty id"));
        }
        if n.id.len() > MAX_NODE_ID {
            let head: String = n.id.chars().take(32).collect();
            return Err(format!("node id `{head}…` is longer than {MAX_NODE_ID} bytes"));
        }
        if n.task.is_empty() {
            return Err(format!("node `{}` has no task", n.id));
        }
        if index.insert(n.id.as_str(), i).is_some() {
            return Err(format!("duplicate node id `{}`", n.id));
        }
    }
    // Upstreams by index, deduplicated.
    let mut ups: Vec<Vec<usize>> = Vec::with_capacity(req.nodes.len());
    let mut edges = Vec::new();
    for n in &req.nodes {
        let mut mine: Vec<usize> = Vec::with_capacity(n.depends_on.len());
        for d in &n.depends_on {
            if *d == n.id {
                return Err(format!("node `{}` depends on itself", n.id));
            }
            let Some(&u) = index.get(d.as_str()) else {
                return Err(format!("node `{}` depends on `{d}`, which is not a node of this workflow", n.id));
            };
            if !mine.contains(&u) {
                mine.push(u);
                edges.push((n.id.clone(), d.clone()));
            }
        }
        ups.push(mine);
    }
    if let Some(cycle) = find_cycle(&ups) {
        return Err(cycle_message(&cycle, |i| req.nodes[i].id.as_str()));
    }
    let nodes = req
        .nodes
        .iter()
        .zip(&ups)
        .map(|(n, u)| NewNode {
            id: n.id.clone(),
            task: n.task.clone(),
            args: crate::model::identity::canonical_json(&n.args),
            has_upstreams: !u.is_empty(),
        })
        .collect();
    Ok(NewWorkflow {
        id,
        name,
        kind,
        max_concurrently_running: req.max_concurrently_running,
        fail_fast: req.fail_fast,
        max_attempts: req.max_attempts,
        task_limits: req.task_limits.clone(),
        nodes,
        edges,
        trace_parent: None,
    })
}

/// The error for a cycle (node indexes in dependency order, each depending on the next): its
/// nodes by id when it is short, else its length and the first [`CYCLE_NAMES_SHOWN`], so that
/// a cycle through 100,000 nodes is a message of a few hundred bytes, not a megabyte of ids.
fn cycle_message<'a>(cycle: &[usize], id: impl Fn(usize) -> &'a str) -> String {
    let shown: Vec<&str> = cycle.iter().take(CYCLE_NAMES_SHOWN).map(|&i| id(i)).collect();
    if cycle.len() <= CYCLE_NAMES_SHOWN {
        format!("the dependencies form a cycle: {}", shown.join(" -> "))
    } else {
        let first = cycle.first().map(|&i| id(i)).unwrap_or_default();
        format!(
            "the dependencies form a cycle of {} nodes: {} -> … -> {first} (the first {CYCLE_NAMES_SHOWN} shown)",
            cycle.len(),
            shown.join(" -> ")
        )
    }
}

/// A cycle of the graph given as upstream lists, as node indexes in dependency order (each
/// depends on the next, the last on the first), or `None` when the graph is acyclic. Kahn's
/// topological sort, O(nodes + edges); on a cycle, the nodes it could not order all have an
/// unordered upstream, so walking upstream from one of them must come back to a node seen.
pub fn find_cycle(ups: &[Vec<usize>]) -> Option<Vec<usize>> {
    let n = ups.len();
    let mut downs: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut missing: Vec<usize> = vec![0; n];
    for (v, us) in ups.iter().enumerate() {
        missing[v] = us.len();
        for &u in us {
            downs[u].push(v);
        }
    }
    let mut stack: Vec<usize> = (0..n).filter(|&v| missing[v] == 0).collect();
    let mut ordered = 0;
    while let Some(u) = stack.pop() {
        ordered += 1;
        for &v in &downs[u] {
            missing[v] -= 1;
            if missing[v] == 0 {
                stack.push(v);
            }
        }
    }
    if ordered == n {
        return None;
    }
    let start = (0..n).find(|&v| missing[v] > 0)?;
    let mut seen_at: HashMap<usize, usize> = HashMap::new();
    let mut path = Vec::new();
    let mut v = start;
    loop {
        if let Some(&at) = seen_at.get(&v) {
            return Some(path.split_off(at));
        }
        seen_at.insert(v, path.len());
        path.push(v);
        // An upstream that is not ordered either exists, since `v` is unordered.
        v = *ups[v].iter().find(|&&u| missing[u] > 0)?;
    }
}

/// Which of the `ready` nodes (task names, in `seq` order) start now: in order, as long as
/// the workflow's running nodes stay within `max_running` and each task's within its limit
/// (`task_limits`; a task without one is only bound by `max_running`). `running` counts the
/// nodes running now, per task. Returns indexes into `ready`, ascending.
pub fn select_ready<S: AsRef<str>>(
    ready: &[S],
    running: &HashMap<String, u32>,
    max_running: u32,
    task_limits: &BTreeMap<String, u32>,
) -> Vec<usize> {
    let mut total: u32 = running.values().copied().fold(0u32, u32::saturating_add);
    let mut per_task: HashMap<&str, u32> = running.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    let mut out = Vec::new();
    for (i, task) in ready.iter().enumerate() {
        if total >= max_running {
            break;
        }
        let task = task.as_ref();
        let now = per_task.get(task).copied().unwrap_or(0);
        if task_limits.get(task).is_some_and(|&limit| now >= limit) {
            continue;
        }
        per_task.insert(task, now + 1);
        total += 1;
        out.push(i);
    }
    out
}

/// What a workflow's counts of nodes per status make of its status (the rule the store's
/// step applies in SQL; the conformance test checks the SQL against it after every step): done when every
/// node is done; failed when nothing runs and nothing can start any more (no ready node, or
/// fail-fast) while some failed or is blocked; halted while paused; running once something
/// started; else queued.
pub fn status_of(counts: &HashMap<NodeStatus, i64>, paused: bool, fail_fast: bool) -> WorkflowStatus {
    let n = |s: NodeStatus| counts.get(&s).copied().unwrap_or(0);
    let total: i64 = counts.values().sum();
    let failed = n(NodeStatus::Failed) + n(NodeStatus::Blocked);
    if n(NodeStatus::Done) == total {
        WorkflowStatus::Done
    } else if n(NodeStatus::Running) == 0 && failed > 0 && (fail_fast || n(NodeStatus::Ready) == 0) {
        WorkflowStatus::Failed
    } else if paused {
        WorkflowStatus::Halted
    } else if n(NodeStatus::Running) + n(NodeStatus::Done) + failed > 0 {
        WorkflowStatus::Running
    } else {
        WorkflowStatus::Queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn req(body: serde_json::Value) -> WorkflowRequest {
        serde_json::from_value(body).expect("request")
    }

    fn check(body: serde_json::Value) -> Result<NewWorkflow, String> {
        validate(&req(body), "w".into(), WorkflowKind::Workflow, MAX_NODES)
    }

    #[test]
    fn defaults_and_a_valid_diamond() {
        let w = check(json!({"nodes": [
            {"id": "a", "task": "t", "args": {"y": 1, "x": 2}},
            {"id": "b", "task": "t", "depends_on": ["a"]},
            {"id": "c", "task": "u", "depends_on": ["a", "a"]},
            {"id": "d", "task": "t", "depends_on": ["b", "c"]},
        ]}))
        .expect("valid");
        assert_eq!(w.max_concurrently_running, 100);
        assert!(!w.fail_fast);
        assert_eq!(w.max_attempts, None);
        assert!(w.task_limits.is_empty());
        assert_eq!(w.nodes[0].args, r#"{"x":2,"y":1}"#);
        assert_eq!(w.nodes[1].args, "{}");
        assert_eq!(w.nodes.iter().map(|n| n.has_upstreams).collect::<Vec<_>>(), [false, true, true, true]);
        assert_eq!(w.edges.len(), 4, "the repeated dependency is stored once: {:?}", w.edges);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            (json!({"nodes": []}), "at least one node"),
            (json!({"nodes": [{"id": "", "task": "t"}]}), "empty id"),
            (json!({"nodes": [{"id": "a", "task": "t"}, {"id": "a", "task": "t"}]}), "duplicate node id `a`"),
            (json!({"nodes": [{"id": "a", "task": "t", "depends_on": ["zz"]}]}), "`zz`"),
            (json!({"nodes": [{"id": "a", "task": "t", "depends_on": ["a"]}]}), "depends on itself"),
            (json!({"max_concurrently_running": 0, "nodes": [{"id": "a", "task": "t"}]}), "max_concurrently_running"),
            (json!({"max_attempts": 0, "nodes": [{"id": "a", "task": "t"}]}), "max_attempts"),
            (json!({"max_attempts": 1001, "nodes": [{"id": "a", "task": "t"}]}), "between 1 and 1000"),
            (json!({"max_attempts": 4_000_000_000u32, "nodes": [{"id": "a", "task": "t"}]}), "between 1 and 1000"),
            (json!({"task_limits": {"t": 0}, "nodes": [{"id": "a", "task": "t"}]}), "task_limits of `t`"),
        ];
        for (body, needle) in cases {
            let e = check(body.clone()).expect_err("invalid");
            assert!(e.contains(needle), "{body}: `{e}` lacks `{needle}`");
        }
    }

    #[test]
    fn a_cycle_is_named() {
        let e = check(json!({"nodes": [
            {"id": "root", "task": "t"},
            {"id": "a", "task": "t", "depends_on": ["root", "c"]},
            {"id": "b", "task": "t", "depends_on": ["a"]},
            {"id": "c", "task": "t", "depends_on": ["b"]},
            {"id": "after", "task": "t", "depends_on": ["c"]},
        ]}))
        .expect_err("cycle");
        let (head, cycle) = e.split_once(": ").expect("a list of nodes");
        assert!(head.contains("cycle"), "{e}");
        let mut names: Vec<&str> = cycle.split(" -> ").collect();
        names.sort_unstable();
        assert_eq!(names, ["a", "b", "c"], "only the cycle's nodes: {e}");
    }

    #[test]
    fn too_many_nodes() {
        let nodes: Vec<_> = (0..=MAX_NODES).map(|i| json!({"id": i.to_string(), "task": "t"})).collect();
        let e = check(json!({ "nodes": nodes })).expect_err("too many");
        assert!(e.contains("at most 100000"), "{e}");
        let three =
            req(json!({"nodes": [{"id": "a", "task": "t"}, {"id": "b", "task": "t"}, {"id": "c", "task": "t"}]}));
        let e = validate(&three, "w".into(), WorkflowKind::Workflow, 2).expect_err("over the flag");
        assert!(e.contains("at most 2 nodes (--max-workflow-nodes), this one has 3"), "{e}");
        assert!(validate(&three, "w".into(), WorkflowKind::Workflow, 3).is_ok());
    }

    #[test]
    fn a_long_cycle_is_named_briefly() {
        let n = 100_000;
        let nodes: Vec<_> = (0..n)
            .map(|i| json!({"id": format!("node-{i:06}"), "task": "t", "depends_on": [format!("node-{:06}", (i + 1) % n)]}))
            .collect();
        let e = check(json!({ "nodes": nodes })).expect_err("cycle");
        assert!(e.len() < 400, "{} bytes: {e}", e.len());
        assert!(e.contains("a cycle of 100000 nodes: node-000000 -> node-000001 -> "), "{e}");
        assert!(e.contains("-> … -> node-000000"), "{e}");
    }

    #[test]
    fn a_long_chain_is_checked_in_linear_time() {
        let n = 50_000;
        let ups: Vec<Vec<usize>> = (0..n).map(|i| if i == 0 { vec![] } else { vec![i - 1] }).collect();
        let t = std::time::Instant::now();
        assert_eq!(find_cycle(&ups), None);
        let mut cyclic = ups.clone();
        cyclic[0] = vec![n - 1];
        let cycle = find_cycle(&cyclic).expect("cycle");
        assert_eq!(cycle.len(), n);
        assert!(t.elapsed() < std::time::Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn arrays_are_workflows_without_edges() {
        let a: ArrayRequest = serde_json::from_value(json!({"task": "t", "args": [{"x": 1}, {"x": 2}]})).unwrap();
        let w = validate(&a.into_workflow(), "w".into(), WorkflowKind::Array, MAX_NODES).unwrap();
        assert_eq!(w.nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["0", "1"]);
        assert!(w.edges.is_empty());
    }

    #[test]
    fn selection_examples() {
        let limits: BTreeMap<String, u32> = [("a".to_string(), 1)].into();
        let running: HashMap<String, u32> = HashMap::new();
        assert_eq!(select_ready(&["a", "a", "b", "b"], &running, 3, &limits), [0, 2, 3]);
        let running: HashMap<String, u32> = [("b".to_string(), 2)].into();
        assert_eq!(select_ready(&["a", "a", "b", "b"], &running, 3, &limits), [0]);
        assert!(select_ready(&["b"], &running, 2, &limits).is_empty());
    }

    #[test]
    fn status_rules() {
        use NodeStatus::*;
        let c = |v: &[(NodeStatus, i64)]| v.iter().copied().collect::<HashMap<_, _>>();
        assert_eq!(status_of(&c(&[(Done, 3)]), false, false), WorkflowStatus::Done);
        assert_eq!(status_of(&c(&[(Ready, 3)]), false, false), WorkflowStatus::Queued);
        assert_eq!(status_of(&c(&[(Ready, 3)]), true, false), WorkflowStatus::Halted);
        assert_eq!(status_of(&c(&[(Running, 1), (Failed, 1)]), false, true), WorkflowStatus::Running);
        assert_eq!(status_of(&c(&[(Ready, 1), (Failed, 1)]), false, true), WorkflowStatus::Failed);
        assert_eq!(status_of(&c(&[(Ready, 1), (Failed, 1)]), false, false), WorkflowStatus::Running);
        assert_eq!(status_of(&c(&[(Done, 1), (Blocked, 1)]), false, false), WorkflowStatus::Failed);
    }

    proptest! {
        #[test]
        fn selection_never_exceeds_the_limits(
            ready in proptest::collection::vec(0u8..4, 0..40),
            running in proptest::collection::vec(0u32..4, 4),
            max in 1u32..20,
            limits in proptest::collection::vec(proptest::option::of(1u32..5), 4),
        ) {
            let name = |t: u8| format!("t{t}");
            let ready: Vec<String> = ready.into_iter().map(name).collect();
            let running: HashMap<String, u32> =
                running.iter().enumerate().map(|(t, n)| (name(t as u8), *n)).collect();
            let limits: BTreeMap<String, u32> =
                limits.iter().enumerate().filter_map(|(t, l)| l.map(|l| (name(t as u8), l))).collect();
            let picked = select_ready(&ready, &running, max, &limits);
            let before: u32 = running.values().sum();
            prop_assert!(picked.windows(2).all(|w| w[0] < w[1]));
            if before >= max {
                prop_assert!(picked.is_empty());
            } else {
                prop_assert!(before + picked.len() as u32 <= max);
            }
            for (task, limit) in &limits {
                let now = running.get(task).copied().unwrap_or(0);
                let added = picked.iter().filter(|&&i| &ready[i] == task).count() as u32;
                if now >= *limit {
                    prop_assert_eq!(added, 0);
                } else {
                    prop_assert!(now + added <= *limit);
                }
            }
            // Greedy: a skipped node was refused by a limit.
            let mut total = before;
            let mut per: HashMap<&str, u32> = running.iter().map(|(t, n)| (t.as_str(), *n)).collect();
            for (i, t) in ready.iter().enumerate() {
                if total >= max { break; }
                let now = per.get(t.as_str()).copied().unwrap_or(0);
                let allowed = limits.get(t).is_none_or(|&l| now < l);
                prop_assert_eq!(allowed, picked.contains(&i));
                if allowed { per.insert(t, now + 1); total += 1; }
            }
        }
    }
}
