//! SQL of rate limits (migration 0022): the limits, the tasks that name them and what started
//! in each window; a child of `sql.rs` so that it shares its dialect macros. The claim of
//! rate-limited calls is in `sql_invocations.rs`, beside the other claims.

use super::Sql;

/// The columns of a `LimitRow` (store/rate_limits.rs), in order.
macro_rules! limit_columns {
    () => {
        "name, limit_n, per_ms, key_path, created_at, updated_at"
    };
}

/// Limit `$1`, locked for a change on PostgreSQL.
pub(in crate::store) const LIMIT_GET_FOR_UPDATE: Sql = Sql {
    sqlite: concat!("SELECT ", limit_columns!(), " FROM rate_limits WHERE name = $1"),
    postgres: concat!("SELECT ", limit_columns!(), " FROM rate_limits WHERE name = $1 FOR UPDATE"),
};

/// Limit `$1`.
pub(in crate::store) const LIMIT_GET: Sql =
    Sql::same(concat!("SELECT ", limit_columns!(), " FROM rate_limits WHERE name = $1"));

/// Every limit, by name.
pub(in crate::store) const LIMIT_LIST: Sql =
    Sql::same(concat!("SELECT ", limit_columns!(), " FROM rate_limits ORDER BY name"));

macro_rules! limit_upsert {
    ($d:ident) => {
        concat!(
            "INSERT INTO rate_limits (",
            limit_columns!(),
            ") VALUES ($1, $2, $3, $4, ",
            now_ms!($d),
            ", ",
            now_ms!($d),
            ") ON CONFLICT (name) DO UPDATE SET limit_n = excluded.limit_n, per_ms = excluded.per_ms, \
             key_path = excluded.key_path, updated_at = excluded.updated_at RETURNING ",
            limit_columns!()
        )
    };
}
/// Creates or replaces limit `$1`: `$2` starts per window of `$3` ms, keyed by the path `$4`
/// (or NULL).
pub(in crate::store) const LIMIT_UPSERT: Sql = both!(limit_upsert);

/// Deletes limit `$1`.
pub(in crate::store) const LIMIT_DELETE: Sql = Sql::same("DELETE FROM rate_limits WHERE name = $1");

/// Forgets what started under limit `$1` (its window or key changed, or it is deleted).
pub(in crate::store) const USAGE_FORGET: Sql = Sql::same("DELETE FROM rate_limit_usage WHERE name = $1");

/// The tasks that name a rate limit: `(name, rate_limit)`, by task name.
pub(in crate::store) const LIMITED_TASKS: Sql =
    Sql::same("SELECT name, rate_limit FROM tasks WHERE rate_limit IS NOT NULL ORDER BY name");

macro_rules! limits_in_use_locked {
    ($d:ident, $lock:literal) => {
        concat!(
            "SELECT ",
            limit_columns!(),
            ", ",
            now_ms!($d),
            " AS now FROM rate_limits WHERE name IN \
             (SELECT t.rate_limit FROM tasks t WHERE t.rate_limit IS NOT NULL AND NOT t.paused) ORDER BY name",
            $lock
        )
    };
}
/// The limits that unpaused tasks name, locked in name order on PostgreSQL (the first locks
/// of a claim of rate-limited calls: claims of the same limit go one at a time, across nodes),
/// with the database clock as `now`.
pub(in crate::store) const LIMITS_IN_USE_LOCKED: Sql =
    Sql { sqlite: limits_in_use_locked!(sqlite, ""), postgres: limits_in_use_locked!(postgres, " FOR UPDATE") };

macro_rules! usage_drop_past {
    ($d:ident) => {
        concat!(
            "DELETE FROM rate_limit_usage WHERE window_end <= CAST($2 AS BIGINT) AND name IN (SELECT j.value FROM ",
            json_texts!($d),
            ")"
        )
    };
}
/// Deletes the usage of past windows (ended by `$2`) of the limits in the JSON array `$1`
/// (those the claim has locked).
pub(in crate::store) const USAGE_DROP_PAST: Sql = both!(usage_drop_past);

macro_rules! usage_current {
    ($d:ident) => {
        concat!(
            "SELECT name, rkey, used FROM rate_limit_usage WHERE window_start <= CAST($2 AS BIGINT) \
             AND window_end > CAST($2 AS BIGINT) AND name IN (SELECT j.value FROM ",
            json_texts!($d),
            ")"
        )
    };
}
/// What started in the current window (at `$2`) of the limits in the JSON array `$1`.
pub(in crate::store) const USAGE_CURRENT: Sql = both!(usage_current);

macro_rules! usage_add {
    ($d:ident) => {
        concat!(
            "INSERT INTO rate_limit_usage (name, rkey, window_start, window_end, used) \
             SELECT j.value ->> 'name', j.value ->> 'key', CAST(j.value ->> 'start' AS BIGINT), \
             CAST(j.value ->> 'end' AS BIGINT), CAST(j.value ->> 'n' AS BIGINT) FROM ",
            json_rows!($d),
            " WHERE TRUE ORDER BY j.key ON CONFLICT (name, rkey, window_start) \
             DO UPDATE SET used = rate_limit_usage.used + excluded.used"
        )
    };
}
/// Adds the starts in the JSON array `$1` of `{name, key, start, end, n}` (sorted by name and
/// key) to their windows.
pub(in crate::store) const USAGE_ADD: Sql = both!(usage_add);

macro_rules! limited_until {
    ($d:ident) => {
        concat!(
            "SELECT u.window_end FROM rate_limit_usage u JOIN rate_limits r ON r.name = u.name \
             WHERE u.name = $1 AND u.rkey = $2 AND u.used >= r.limit_n AND u.window_start <= ",
            now_ms!($d),
            " AND u.window_end > ",
            now_ms!($d)
        )
    };
}
/// When the current window of limit `$1` for key `$2` ends, if it is used up.
pub(in crate::store) const LIMITED_UNTIL: Sql = both!(limited_until);
