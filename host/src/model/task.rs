//! Tasks and components as the host registers them: concurrency modes, option defaults, a
//! task's effective options and their patches, and the stored component.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Millis;

/// pynenc's concurrency modes, for registration (deduplication) and running (serialisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// No control.
    #[default]
    Disabled,
    /// One invocation of the task in scope.
    Task,
    /// One invocation per distinct argument set.
    Arguments,
    /// One invocation per distinct value of the key arguments.
    Keys,
}

impl Concurrency {
    /// The lower snake case name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Task => "task",
            Self::Arguments => "arguments",
            Self::Keys => "keys",
        }
    }
}

impl FromStr for Concurrency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "disabled" => Ok(Self::Disabled),
            "task" => Ok(Self::Task),
            "arguments" => Ok(Self::Arguments),
            "keys" => Ok(Self::Keys),
            other => Err(format!("unknown concurrency mode `{other}`")),
        }
    }
}

/// Most attempts a task or a workflow may give an invocation: beyond this a limit is a typo,
/// not a policy (a call failing that often should fail and be looked at).
pub const MAX_ATTEMPTS_LIMIT: u32 = 1_000;

/// Checks an attempt limit (`max_attempts` of a task or a workflow): 1 to
/// [`MAX_ATTEMPTS_LIMIT`]; the error says the range.
pub fn check_max_attempts(max_attempts: u32) -> Result<(), String> {
    if (1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
        Ok(())
    } else {
        Err(format!("max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {max_attempts}"))
    }
}

/// Most scratch space a task may give each attempt (`scratch_bytes`): 4 GiB. Every running
/// attempt of such a task may fill that much of the disk under the daemon's data directory.
pub const MAX_SCRATCH_BYTES: u64 = 4 << 30;

/// The refusal of a `scratch_bytes` outside 0 to [`MAX_SCRATCH_BYTES`], naming the range.
fn scratch_bytes_error(got: impl std::fmt::Display) -> String {
    format!("scratch_bytes must be an integer from 0 (no scratch directory) to {MAX_SCRATCH_BYTES} (4 GiB), got {got}")
}

/// Reads `scratch_bytes` of a patch: any JSON number, refused unless it is an integer from 0
/// to [`MAX_SCRATCH_BYTES`] (so a negative, fractional or absurd value is refused with the
/// range, not with serde's "expected u64").
fn scratch_bytes_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    match n.as_u64() {
        Some(v) if v <= MAX_SCRATCH_BYTES => Ok(Some(v)),
        _ => Err(serde::de::Error::custom(scratch_bytes_error(n))),
    }
}

/// Host defaults for options a component leaves out.
pub mod defaults {
    /// Attempts before an invocation fails for good.
    pub const MAX_ATTEMPTS: u32 = 3;
    /// Wall-clock limit of one attempt.
    pub const TIMEOUT_MS: u64 = 60_000;
    /// Linear-memory limit of one attempt.
    pub const MEMORY_LIMIT_BYTES: u64 = 256 * 1024 * 1024;
}

/// A task as registered on the host: its component and its effective options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskDef {
    /// Unique task name.
    pub name: String,
    /// The component (by name) that implements it.
    pub component: String,
    /// One line for humans.
    pub description: Option<String>,
    /// Attempts before the invocation fails for good.
    pub max_attempts: u32,
    /// Wall-clock limit of one attempt.
    pub timeout_ms: u64,
    /// Linear-memory limit of one attempt.
    pub memory_limit_bytes: u64,
    /// Deduplication applied at routing.
    pub registration_concurrency: Concurrency,
    /// Serialisation applied at claim and run time.
    pub running_concurrency: Concurrency,
    /// Argument names forming the key for `Concurrency::Keys`.
    pub key_arguments: Vec<String>,
    /// Ordered LIKE patterns over node names and labels.
    pub pins: Vec<String>,
    /// A paused task's invocations are not claimed.
    pub paused: bool,
    /// pynenc's concurrency policies (and later options), stored as one JSON column.
    #[serde(flatten)]
    pub policy: TaskPolicy,
}

/// Options of a task beyond limits and modes; every field has a default, so stored JSON
/// written before a field existed still decodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct TaskPolicy {
    /// After an attempt ends in a resource error (timeout or memory limit), the next attempt
    /// runs with the limits grown by this many percent, rounded up, once per earlier resource
    /// error (Jobmon's resource-scaling retry). Default 50.
    pub resource_scale_percent: u32,
    /// Registration concurrency `keys`: a call with the same key arguments but different other
    /// arguments is refused (HTTP 409) instead of reusing the waiting invocation (pynenc's
    /// `on_diff_non_key_args_raise`). Default false: reuse.
    pub on_diff_non_key_args_raise: bool,
    /// Running concurrency: an invocation blocked by another one of its scope stays runnable
    /// and is claimed later (true, the default; pynenc's `reroute_on_concurrency_control`), or
    /// is dropped as `concurrency_controlled_final` (false).
    pub reroute_on_concurrency_control: bool,
    /// Running concurrency: how many invocations of one scope may run at once (default 1).
    /// With N > 1 each invocation is given one of N lanes by its id and one runs per lane, so
    /// never more than N run at once (a busy lane can hold a call back while another is free).
    pub running_concurrency_slots: u32,
    /// Scratch space of each attempt, in bytes: a fresh, empty directory preopened in the
    /// guest as `/tmp` (and `TMPDIR=/tmp`), removed when the attempt ends. Writes that would
    /// take the attempt past this many bytes fail in the guest (ENOSPC, or EIO for a plain
    /// `write` through a stream). The count is what the attempt makes its files grow by plus 4 KiB for every
    /// file, directory or link it creates; truncating a file gives its bytes back, deleting
    /// one does not. Default 0: no scratch directory, nothing of the host's disk visible.
    /// At most 4 GiB.
    #[schema(maximum = 4294967296.0)]
    pub scratch_bytes: u64,
    /// The priority of its calls that do not give one (`options.priority`), 0-9, higher
    /// claimed first. Default 5.
    pub priority: u8,
    /// The rate limit (`PUT /v1/rate-limits/{name}`) its attempts count against: at most so
    /// many start per window, across the cluster. Absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
}

impl Default for TaskPolicy {
    fn default() -> Self {
        Self {
            resource_scale_percent: 50,
            on_diff_non_key_args_raise: false,
            reroute_on_concurrency_control: true,
            running_concurrency_slots: 1,
            scratch_bytes: 0,
            priority: DEFAULT_PRIORITY,
            rate_limit: None,
        }
    }
}

/// The priority of a call when neither it nor its task gives one.
pub const DEFAULT_PRIORITY: u8 = 5;
/// The highest priority (the lowest is 0).
pub const MAX_PRIORITY: u8 = 9;

/// Checks a priority given by a user: 0-9.
pub fn check_priority(p: i64, what: &str) -> Result<u8, String> {
    u8::try_from(p)
        .ok()
        .filter(|p| *p <= MAX_PRIORITY)
        .ok_or_else(|| format!("{what} must be between 0 and {MAX_PRIORITY} (higher runs first), not {p}"))
}

/// A change to a task's options (`PATCH /v1/tasks/{task}`); absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskPatch {
    /// New attempt limit.
    pub max_attempts: Option<u32>,
    /// New timeout.
    pub timeout_ms: Option<u64>,
    /// New memory limit.
    pub memory_limit_bytes: Option<u64>,
    /// New registration concurrency.
    pub registration_concurrency: Option<Concurrency>,
    /// New running concurrency.
    pub running_concurrency: Option<Concurrency>,
    /// New key arguments.
    pub key_arguments: Option<Vec<String>>,
    /// New pins.
    pub pins: Option<Vec<String>>,
    /// Pause or unpause the task.
    pub paused: Option<bool>,
    /// See [`TaskPolicy::resource_scale_percent`].
    pub resource_scale_percent: Option<u32>,
    /// See [`TaskPolicy::on_diff_non_key_args_raise`].
    pub on_diff_non_key_args_raise: Option<bool>,
    /// See [`TaskPolicy::reroute_on_concurrency_control`].
    pub reroute_on_concurrency_control: Option<bool>,
    /// See [`TaskPolicy::running_concurrency_slots`] (at least 1).
    pub running_concurrency_slots: Option<u32>,
    /// See [`TaskPolicy::scratch_bytes`] (0 to 4 GiB; 0 removes the scratch directory).
    #[serde(default, deserialize_with = "scratch_bytes_field")]
    #[schema(maximum = 4294967296.0)]
    pub scratch_bytes: Option<u64>,
    /// See [`TaskPolicy::priority`] (0-9).
    pub priority: Option<i64>,
    /// See [`TaskPolicy::rate_limit`]: the name of an existing limit, or `""` for none.
    pub rate_limit: Option<String>,
}

impl TaskDef {
    /// Applies a patch in place.
    pub fn apply(&mut self, p: &TaskPatch) {
        if let Some(v) = p.max_attempts {
            self.max_attempts = v;
        }
        if let Some(v) = p.timeout_ms {
            self.timeout_ms = v;
        }
        if let Some(v) = p.memory_limit_bytes {
            self.memory_limit_bytes = v;
        }
        if let Some(v) = p.registration_concurrency {
            self.registration_concurrency = v;
        }
        if let Some(v) = p.running_concurrency {
            self.running_concurrency = v;
        }
        if let Some(v) = &p.key_arguments {
            self.key_arguments.clone_from(v);
        }
        if let Some(v) = &p.pins {
            self.pins.clone_from(v);
        }
        if let Some(v) = p.paused {
            self.paused = v;
        }
        if let Some(v) = p.resource_scale_percent {
            self.policy.resource_scale_percent = v.min(1_000);
        }
        if let Some(v) = p.on_diff_non_key_args_raise {
            self.policy.on_diff_non_key_args_raise = v;
        }
        if let Some(v) = p.reroute_on_concurrency_control {
            self.policy.reroute_on_concurrency_control = v;
        }
        if let Some(v) = p.running_concurrency_slots {
            self.policy.running_concurrency_slots = v.max(1);
        }
        if let Some(v) = p.scratch_bytes {
            self.policy.scratch_bytes = v.min(MAX_SCRATCH_BYTES);
        }
        if let Some(v) = p.priority.and_then(|v| u8::try_from(v).ok()) {
            self.policy.priority = v.min(MAX_PRIORITY);
        }
        if let Some(v) = &p.rate_limit {
            self.policy.rate_limit = Some(v.clone()).filter(|v| !v.is_empty());
        }
    }
}

/// A stored component: its bytes live in the database so every node can load it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ComponentInfo {
    /// Name given at upload (`?name=`).
    pub name: String,
    /// Hex SHA-256 of the component bytes; also the AOT cache key.
    pub digest: String,
    /// Size of the component in bytes.
    pub size_bytes: i64,
    /// Upload time.
    pub uploaded_at: Millis,
    /// The tasks it registered.
    pub tasks: Vec<String>,
    /// The current version (1 for the first upload): new calls run it. Digest, size and
    /// upload time above are this version's.
    pub version: u64,
}

/// One stored version of a component (`GET /v1/components/{name}/versions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ComponentVersion {
    /// Its number: 1 for the first upload, one more for each upload of new code.
    pub version: u64,
    /// Hex SHA-256 of its bytes.
    pub digest: String,
    /// Size in bytes.
    pub size_bytes: i64,
    /// Upload time.
    pub uploaded_at: Millis,
    /// New calls run this version.
    pub current: bool,
    /// Unfinished invocations bound to it (they started on it; their retries run it too). A
    /// version with any is not deleted.
    pub unfinished: u64,
}

/// A component's stored versions, newest first, and which one is current.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ComponentVersions {
    /// The component.
    pub component: String,
    /// Its current version (new calls run it).
    pub current: u64,
    /// Every stored version, newest first.
    pub versions: Vec<ComponentVersion>,
}

impl ComponentVersions {
    /// The versions of `component`, as the store lists them (one of them current).
    pub fn new(component: &str, versions: Vec<ComponentVersion>) -> Self {
        let current = versions.iter().find(|v| v.current).map_or(0, |v| v.version);
        Self { component: component.to_owned(), current, versions }
    }

    /// The newest stored version before the current one: where a rollback goes by default.
    pub fn previous(&self) -> Option<u64> {
        self.versions.iter().map(|v| v.version).filter(|&v| v < self.current).max()
    }
}

/// How many versions of a component are kept besides the current one and those unfinished
/// calls are bound to: an upload deletes the older ones, so repeated deploys do not fill the
/// database with code nothing can run again (a rollback reaches back this far).
pub const KEPT_COMPONENT_VERSIONS: u64 = 10;

#[cfg(test)]
impl TaskDef {
    /// A task with plain options, for tests: 3 attempts, 1 s, 1 MiB, no concurrency control.
    pub(crate) fn sample(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            component: String::new(),
            description: Some(format!("the {name} task")),
            max_attempts: 3,
            timeout_ms: 1_000,
            memory_limit_bytes: 1 << 20,
            registration_concurrency: Concurrency::Disabled,
            running_concurrency: Concurrency::Disabled,
            key_arguments: vec![],
            pins: vec![],
            paused: false,
            policy: TaskPolicy::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollback_goes_to_the_newest_version_before_the_current_one() {
        let v = |version: u64, current: bool| ComponentVersion {
            version,
            digest: format!("d{version}"),
            size_bytes: 1,
            uploaded_at: 0,
            current,
            unfinished: 0,
        };
        // Newest first; 5 is current after a rollback, 3 was deleted.
        let list = ComponentVersions::new("c", vec![v(7, false), v(6, false), v(5, true), v(4, false), v(2, false)]);
        assert_eq!((list.current, list.previous()), (5, Some(4)));
        let first = ComponentVersions::new("c", vec![v(2, false), v(1, true)]);
        assert_eq!((first.current, first.previous()), (1, None), "nothing before version 1");
    }

    #[test]
    fn scratch_bytes_is_read_within_its_range_and_refused_with_the_range_outside() {
        let ok: TaskPatch = serde_json::from_str(r#"{"scratch_bytes": 1048576}"#).unwrap();
        assert_eq!(ok.scratch_bytes, Some(1 << 20));
        let max: TaskPatch = serde_json::from_str(&format!(r#"{{"scratch_bytes": {MAX_SCRATCH_BYTES}}}"#)).unwrap();
        assert_eq!(max.scratch_bytes, Some(MAX_SCRATCH_BYTES));
        let absent: TaskPatch = serde_json::from_str("{}").unwrap();
        assert_eq!(absent.scratch_bytes, None);
        let null: TaskPatch = serde_json::from_str(r#"{"scratch_bytes": null}"#).unwrap();
        assert_eq!(null.scratch_bytes, None);
        for bad in ["-1", "1.5", "4294967297", "1e30", "18446744073709551616"] {
            let err = serde_json::from_str::<TaskPatch>(&format!(r#"{{"scratch_bytes": {bad}}}"#)).unwrap_err();
            assert!(err.to_string().contains("from 0 (no scratch directory) to 4294967296 (4 GiB)"), "{bad}: {err}");
        }
        let mut def = TaskDef::sample("t");
        def.apply(&ok);
        assert_eq!(def.policy.scratch_bytes, 1 << 20);
        // A stored policy from before the field decodes with no scratch space.
        let old: TaskPolicy = serde_json::from_str(r#"{"resource_scale_percent": 50}"#).unwrap();
        assert_eq!(old.scratch_bytes, 0);
    }
}
