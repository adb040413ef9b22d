//! Call identity: canonical JSON of arguments and the call id (hash of task + canonical args),
//! plus fresh and deterministic invocation ids.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Re-serialises a JSON value with object keys sorted at every level, so equal arguments give
/// equal text whatever order the caller wrote them in.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    if let Some(inner) = map.get(k) {
                        out.insert(k.clone(), sorted(inner));
                    }
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// The call id: hex SHA-256 of the task name, a NUL, and the canonical arguments.
pub fn call_id(task: &str, canonical_args: &str) -> String {
    let mut h = Sha256::new();
    h.update(task.as_bytes());
    h.update([0u8]);
    h.update(canonical_args.as_bytes());
    hex::encode(h.finalize())
}

/// A fresh invocation id: a UUIDv7, so ids sort by creation time.
pub fn new_invocation_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The id of the `seq`-th child call made by `parent`: deterministic, so a re-run parent
/// re-attaches to children that already exist, and sorting right after its parent.
pub fn child_invocation_id(parent: &str, seq: u32) -> String {
    format!("{parent}.{seq:06}")
}

/// Whether `s` has the form of an invocation id this host hands out: a hyphenated UUID,
/// then any number of `.<digits>` child sequence numbers. Paging cursors are invocation ids,
/// so anything else is a cursor no page ever returned.
pub fn is_invocation_id(s: &str) -> bool {
    let Some((head, rest)) = s.split_at_checked(36) else { return false };
    if uuid::Uuid::try_parse(head).is_err() {
        return false;
    }
    rest.is_empty()
        || rest
            .strip_prefix('.')
            .is_some_and(|r| r.split('.').all(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn invocation_ids_are_recognised() {
        let parent = new_invocation_id();
        assert!(is_invocation_id(&parent));
        assert!(is_invocation_id(&child_invocation_id(&parent, 3)));
        assert!(is_invocation_id(&child_invocation_id(&child_invocation_id(&parent, 3), 12)));
        for bad in
            ["", "garbage", "0190a000-0000-7000-8000-00000000000", &format!("{parent}."), &format!("{parent}.x1")]
        {
            assert!(!is_invocation_id(bad), "{bad}");
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": null}});
        let b = json!({"a": {"c": null, "d": [1, {"y": 1, "z": 0}]}, "b": 1});
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"c":null,"d":[1,{"y":1,"z":0}]},"b":1}"#);
    }

    #[test]
    fn call_id_depends_on_task_and_args() {
        let args = canonical_json(&json!({"x": 1}));
        assert_eq!(call_id("t", &args), call_id("t", &args));
        assert_ne!(call_id("t", &args), call_id("u", &args));
        assert_ne!(call_id("t", &args), call_id("t", "{\"x\":2}"));
    }

    #[test]
    fn ids_sort_by_creation_and_children_follow_their_parent() {
        let a = new_invocation_id();
        let b = new_invocation_id();
        assert!(a < b);
        let c0 = child_invocation_id(&a, 0);
        let c10 = child_invocation_id(&a, 10);
        assert!(a < c0 && c0 < c10 && c10 < b);
    }
}
