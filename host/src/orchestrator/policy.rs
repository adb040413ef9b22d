//! Pure policy functions of the orchestrator: retry backoff and the concurrency scope of a
//! call (pynenc's registration and running concurrency). No I/O, so they are unit-tested exhaustively.

use std::time::Duration;

use serde_json::Value;

use crate::model::Concurrency;
use crate::model::identity;

/// Exponential backoff with "equal" jitter for the retry after attempt `attempt` (1-based):
/// with `ceiling = min(max, base × 2^(attempt-1))`, a uniformly random delay in
/// `[ceiling/2, ceiling]` (`jitter` in `[0, 1)` is the random draw, passed in so tests control
/// it). Half the ceiling is guaranteed, so retries of a struggling dependency really back off;
/// the random half spreads retries of many invocations apart.
pub fn retry_delay(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1u32 << exp).min(max);
    let j = jitter.clamp(0.0, 1.0);
    ceiling.mul_f64(0.5 + 0.5 * j).max(Duration::from_millis(1))
}

/// Why a call cannot be registered under its task's registration concurrency.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// A key argument named by the task is missing from the call.
    #[error("argument `{0}` is a key argument of the task and must be given")]
    MissingKey(String),
}

/// The scope of a call under a concurrency mode. For registration concurrency, calls of one
/// scope share one `registered` invocation (later ones reuse it); for running concurrency, at
/// most one invocation of a scope is owned (pending or running) at a time. `None` when the
/// mode is `disabled`.
pub fn concurrency_scope(
    mode: Concurrency,
    task: &str,
    args: &Value,
    canonical_args: &str,
    key_arguments: &[String],
) -> Result<Option<String>, ScopeError> {
    Ok(match mode {
        Concurrency::Disabled => None,
        Concurrency::Task => Some(format!("task:{task}")),
        Concurrency::Arguments => Some(format!("args:{}", identity::call_id(task, canonical_args))),
        Concurrency::Keys => {
            let mut keys = serde_json::Map::new();
            for k in key_arguments {
                let v = args.get(k).ok_or_else(|| ScopeError::MissingKey(k.clone()))?;
                keys.insert(k.clone(), v.clone());
            }
            let canonical_keys = identity::canonical_json(&Value::Object(keys));
            Some(format!("keys:{}", identity::call_id(task, &canonical_keys)))
        }
    })
}

/// A limit grown by `percent` percent `times` times, rounding up each time (Jobmon's
/// resource-scaling retries: 32 MiB at +50% becomes 48 MiB, then 72 MiB).
pub fn scaled_limit(base: u64, percent: u32, times: usize) -> u64 {
    let mut v = u128::from(base);
    for _ in 0..times.min(64) {
        v = (v * (100 + u128::from(percent))).div_ceil(100);
    }
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// The running scope of an invocation when `slots` invocations of `scope` may run at once:
/// lane `hash(id) mod slots` of the scope, so that the one-owner-per-scope index allows one per
/// lane. With one slot the scope is unchanged.
pub fn running_lane(scope: String, invocation_id: &str, slots: u32) -> String {
    if slots <= 1 {
        return scope;
    }
    let digest = identity::call_id("lane", invocation_id);
    let n = u64::from_str_radix(digest.get(..12).unwrap_or("0"), 16).unwrap_or(0);
    format!("{scope}#{}", n % u64::from(slots))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_grow_by_the_scale_rounded_up_per_resource_error() {
        assert_eq!(scaled_limit(32 << 20, 50, 0), 32 << 20);
        assert_eq!(scaled_limit(32 << 20, 50, 1), 48 << 20);
        assert_eq!(scaled_limit(32 << 20, 50, 2), 72 << 20);
        assert_eq!(scaled_limit(1_001, 50, 1), 1_502, "rounded up");
        assert_eq!(scaled_limit(10, 0, 5), 10);
        assert_eq!(scaled_limit(u64::MAX, 50, 3), u64::MAX, "saturates");
    }

    #[test]
    fn lanes_spread_invocations_over_the_slots_of_a_scope() {
        assert_eq!(running_lane("task:t".into(), "abc", 1), "task:t");
        let lanes: std::collections::BTreeSet<String> =
            (0..200).map(|i| running_lane("task:t".into(), &format!("inv-{i}"), 3)).collect();
        assert_eq!(lanes.into_iter().collect::<Vec<_>>(), vec!["task:t#0", "task:t#1", "task:t#2"]);
    }
    use serde_json::json;

    #[test]
    fn backoff_grows_exponentially_is_capped_and_jittered() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(10);
        assert_eq!(retry_delay(1, base, max, 1.0), Duration::from_millis(100));
        assert_eq!(retry_delay(2, base, max, 1.0), Duration::from_millis(200));
        assert_eq!(retry_delay(4, base, max, 1.0), Duration::from_millis(800));
        assert_eq!(retry_delay(30, base, max, 1.0), max);
        assert_eq!(retry_delay(u32::MAX, base, max, 1.0), max);
        assert_eq!(retry_delay(3, base, max, 0.5), Duration::from_millis(300));
        assert_eq!(retry_delay(3, base, max, 0.0), Duration::from_millis(200));
        for attempt in 1..40 {
            for j in [0.0, 0.1, 0.5, 0.99] {
                let d = retry_delay(attempt, base, max, j);
                let ceiling = retry_delay(attempt, base, max, 1.0);
                assert!(d <= max && d >= ceiling / 2, "attempt {attempt} jitter {j}: {d:?}");
            }
        }
    }

    #[test]
    fn scopes_follow_the_concurrency_mode() {
        let args = json!({"user": "ada", "n": 1});
        let canon = identity::canonical_json(&args);
        let keys = vec!["user".to_string()];
        assert_eq!(concurrency_scope(Concurrency::Disabled, "t", &args, &canon, &keys), Ok(None));
        assert_eq!(concurrency_scope(Concurrency::Task, "t", &args, &canon, &keys), Ok(Some("task:t".into())));
        let a = concurrency_scope(Concurrency::Arguments, "t", &args, &canon, &keys).ok().flatten();
        let other = json!({"user": "ada", "n": 2});
        let b = concurrency_scope(Concurrency::Arguments, "t", &other, &identity::canonical_json(&other), &keys)
            .ok()
            .flatten();
        assert_ne!(a, b, "different arguments, different scopes");
        let ka = concurrency_scope(Concurrency::Keys, "t", &args, &canon, &keys).ok().flatten();
        let kb =
            concurrency_scope(Concurrency::Keys, "t", &other, &identity::canonical_json(&other), &keys).ok().flatten();
        assert_eq!(ka, kb, "same key arguments, same scope");
        assert_eq!(
            concurrency_scope(Concurrency::Keys, "t", &json!({"n": 1}), "{}", &keys),
            Err(ScopeError::MissingKey("user".into()))
        );
    }
}
