//! Rate limits (issue 17): at most `limit` attempts of the tasks naming a limit start per
//! window of `per_ms` (database clock, windows aligned on multiples of `per_ms` since the
//! epoch), per value of the key when the limit has one; pure rules: validation, the key
//! path and the window arithmetic.

use serde::{Deserialize, Serialize};

use super::Millis;

/// Longest window a limit may have: one day.
pub const MAX_PER_MS: u64 = 86_400_000;
/// Most starts a limit may allow per window.
pub const MAX_LIMIT: u64 = 1_000_000;

/// A rate limit as stored and shown (`GET /v1/rate-limits/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RateLimit {
    /// Its name, which tasks give as their `rate_limit`.
    pub name: String,
    /// At most this many attempts start per window.
    pub limit: u64,
    /// The window, in ms.
    pub per_ms: u64,
    /// A JSON path into the call's arguments (`$.customer`, `$.order.region`, `$.items[0]`):
    /// the limit then holds per value found there. Absent: one limit for all calls.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key: Option<String>,
    /// The tasks that name it.
    #[serde(default)]
    pub tasks: Vec<String>,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// The body of `PUT /v1/rate-limits/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// At most this many attempts start per window: 1 to 1,000,000.
    #[schema(minimum = 1, maximum = 1000000)]
    pub limit: i64,
    /// The window in ms: 1 to 86,400,000 (a day).
    #[schema(minimum = 1, maximum = 86400000)]
    pub per_ms: i64,
    /// A JSON path into the arguments whose value keys the limit (`$.customer`).
    #[serde(default)]
    pub key: Option<String>,
}

impl RateLimitSpec {
    /// Checks the numbers and the key path; the error names the field and its range.
    pub fn check(&self) -> Result<(u64, u64), String> {
        let limit = u64::try_from(self.limit)
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| format!("limit must be between 1 and {MAX_LIMIT} starts per window, got {}", self.limit))?;
        let per_ms = u64::try_from(self.per_ms)
            .ok()
            .filter(|p| (1..=MAX_PER_MS).contains(p))
            .ok_or_else(|| format!("per_ms must be between 1 and {MAX_PER_MS} (a day), got {}", self.per_ms))?;
        if let Some(k) = &self.key {
            KeyPath::parse(k)?;
        }
        Ok((limit, per_ms))
    }
}

/// Checks a limit's name: 1-128 letters, digits, `-`, `_` or `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!("a rate limit's name must be 1-128 letters, digits, `-`, `_` or `.`, got {name:?}"))
    }
}

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Field(String),
    Index(usize),
}

/// A JSON path of the simple form `$` followed by `.field` and `[index]` steps: the part of
/// JSONPath that names one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPath(Vec<Step>);

impl KeyPath {
    /// Parses `$.a.b[2]`; a field is letters, digits, `_` or `-`.
    pub fn parse(path: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("key {path:?} is not a JSON path of the form `$.field`, `$.a.b` or `$.items[0]`: {why}")
        };
        let rest = path.strip_prefix('$').ok_or_else(|| bad("it must start with `$`"))?;
        let mut steps = Vec::new();
        let mut s = rest;
        while !s.is_empty() {
            if let Some(r) = s.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                let field = &r[..end];
                if field.is_empty() || !field.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')) {
                    return Err(bad("a field is letters, digits, `_` or `-`"));
                }
                steps.push(Step::Field(field.to_string()));
                s = &r[end..];
            } else if let Some(r) = s.strip_prefix('[') {
                let end = r.find(']').ok_or_else(|| bad("`[` without `]`"))?;
                let index = r[..end].parse::<usize>().map_err(|_| bad("an index is a number"))?;
                steps.push(Step::Index(index));
                s = &r[end + 1..];
            } else {
                return Err(bad("expected `.` or `[`"));
            }
        }
        if steps.is_empty() {
            return Err(bad("it names no field"));
        }
        if path.len() > 256 {
            return Err(bad("longer than 256 characters"));
        }
        Ok(Self(steps))
    }

    /// The key the value at this path gives: a string as it is, any other value as its JSON
    /// text; `None` when the arguments have nothing there (or `null`).
    pub fn key_of(&self, args: &serde_json::Value) -> Option<String> {
        let mut v = args;
        for step in &self.0 {
            v = match step {
                Step::Field(f) => v.get(f.as_str())?,
                Step::Index(i) => v.get(*i)?,
            };
        }
        match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

/// The window of a limit of `per_ms` that `now` falls in: `(start, end)`, end exclusive.
pub fn window(now: Millis, per_ms: u64) -> (Millis, Millis) {
    let per = i64::try_from(per_ms).unwrap_or(i64::MAX).max(1);
    let start = now - now.rem_euclid(per);
    (start, start.saturating_add(per))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn key_paths_name_one_value_and_refuse_anything_else() {
        let args = json!({"customer": "acme", "order": {"region": "eu", "n": 3}, "items": [{"sku": "a"}, 7]});
        let key = |p: &str| KeyPath::parse(p).unwrap().key_of(&args);
        assert_eq!(key("$.customer").as_deref(), Some("acme"));
        assert_eq!(key("$.order.region").as_deref(), Some("eu"));
        assert_eq!(key("$.order.n").as_deref(), Some("3"));
        assert_eq!(key("$.items[0].sku").as_deref(), Some("a"));
        assert_eq!(key("$.items[1]").as_deref(), Some("7"));
        assert_eq!(key("$.order").as_deref(), Some(r#"{"n":3,"region":"eu"}"#));
        assert_eq!(key("$.nobody"), None);
        assert_eq!(key("$.items[5]"), None);
        for bad in ["customer", "$", "$.", "$..a", "$.a b", "$[x]", "$.a[1", "$a", "$.a.*"] {
            let err = KeyPath::parse(bad).unwrap_err();
            assert!(err.contains("is not a JSON path"), "{bad}: {err}");
        }
    }

    #[test]
    fn specs_are_checked_with_their_ranges() {
        let spec = |limit, per_ms, key: Option<&str>| RateLimitSpec { limit, per_ms, key: key.map(str::to_string) };
        assert_eq!(spec(50, 1000, Some("$.customer")).check(), Ok((50, 1000)));
        assert!(spec(0, 1000, None).check().unwrap_err().contains("limit must be between 1"));
        assert!(spec(-3, 1000, None).check().unwrap_err().contains("got -3"));
        assert!(spec(5, 0, None).check().unwrap_err().contains("per_ms must be between 1"));
        assert!(spec(5, 86_400_001, None).check().unwrap_err().contains("a day"));
        assert!(spec(5, 10, Some("x")).check().unwrap_err().contains("JSON path"));
        assert!(check_name("api.v1-eu_2").is_ok());
        assert!(check_name("").is_err() && check_name("a/b").is_err() && check_name(&"x".repeat(129)).is_err());
    }

    #[test]
    fn windows_are_aligned_on_multiples_of_their_length() {
        assert_eq!(window(12_345, 1_000), (12_000, 13_000));
        assert_eq!(window(13_000, 1_000), (13_000, 14_000));
        assert_eq!(window(7, 1), (7, 8));
        assert_eq!(window(-1, 1_000), (-1_000, 0));
    }
}
