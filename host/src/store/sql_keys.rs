//! SQL of the `api_keys` table (migration 0011); a child of `sql.rs` so that it shares its
//! dialect macros.

use super::Sql;

/// The columns of a `KeyRow` (store/keys.rs), in order.
macro_rules! key_columns {
    () => {
        "name, role, key_hash, created_at, last_used_at"
    };
}

macro_rules! key_insert {
    ($d:ident) => {
        concat!(
            "INSERT INTO api_keys (name, role, key_hash, created_at) VALUES ($1, $2, $3, ",
            now_ms!($d),
            ") ON CONFLICT (name) DO NOTHING RETURNING ",
            key_columns!()
        )
    };
}
/// A new key `$1` with role `$2` and hash `$3`; no row if the name is taken.
pub(in crate::store) const KEY_INSERT: Sql = both!(key_insert);

/// Every key, by name.
pub(in crate::store) const KEY_LIST: Sql =
    Sql::same(concat!("SELECT ", key_columns!(), " FROM api_keys ORDER BY name"));

/// Deletes key `$1`.
pub(in crate::store) const KEY_DELETE: Sql = Sql::same("DELETE FROM api_keys WHERE name = $1");

macro_rules! key_touch {
    ($d:ident) => {
        concat!(
            "UPDATE api_keys SET last_used_at = ",
            now_ms!($d),
            " WHERE name IN (SELECT j.value FROM ",
            json_texts!($d),
            ")"
        )
    };
}
/// Stamps the keys named in the JSON array `$1` as used now: one statement for any number.
pub(in crate::store) const KEY_TOUCH: Sql = both!(key_touch);
