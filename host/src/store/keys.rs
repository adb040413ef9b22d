//! [`KeyStore`] for [`SqlStore`]: API keys (name, role, SHA-256 of the secret, times). A child
//! of `engine.rs` (it shares its transaction macros); the SQL is in `sql_keys.rs`.

use async_trait::async_trait;

use super::{Dialect, Pools, SqlStore, bump_catalog, corrupt, sql, to_json};
use crate::model::key::Role;
use crate::store::{ApiKey, KeyStore, StoreError, StoreResult};

use sql::keys as q;

#[derive(sqlx::FromRow)]
struct KeyRow {
    name: String,
    role: String,
    key_hash: String,
    created_at: i64,
    last_used_at: Option<i64>,
}

impl KeyRow {
    fn decode(self) -> StoreResult<ApiKey> {
        Ok(ApiKey {
            role: self.role.parse::<Role>().map_err(|e| corrupt("api key role", e))?,
            name: self.name,
            hash: self.key_hash,
            created_at: self.created_at,
            last_used_at: self.last_used_at,
        })
    }
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn key_insert(&self, name: &str, role: Role, hash: &str) -> StoreResult<ApiKey> {
        let row: Option<KeyRow> = in_tx!(self, |tx, d| {
            bump_catalog(&mut *tx, "keys").await?;
            sqlx::query_as(q::KEY_INSERT.get(d))
                .bind(name)
                .bind(role.as_str())
                .bind(hash)
                .fetch_optional(&mut *tx)
                .await?
        });
        row.ok_or_else(|| StoreError::Conflict(format!("a key named `{name}` exists")))?.decode()
    }

    async fn key_list(&self) -> StoreResult<Vec<ApiKey>> {
        let rows: Vec<KeyRow> = on_read!(self, |db, d| sqlx::query_as(q::KEY_LIST.get(d)).fetch_all(db).await?);
        rows.into_iter().map(KeyRow::decode).collect()
    }

    async fn key_delete(&self, name: &str) -> StoreResult<bool> {
        let n = in_tx!(self, |tx, d| {
            bump_catalog(&mut *tx, "keys").await?;
            sqlx::query(q::KEY_DELETE.get(d)).bind(name).execute(&mut *tx).await?.rows_affected()
        });
        Ok(n > 0)
    }

    async fn key_touch(&self, names: &[String]) -> StoreResult<()> {
        if names.is_empty() {
            return Ok(());
        }
        let names = to_json(names)?;
        in_tx!(self, |tx, d| {
            sqlx::query(q::KEY_TOUCH.get(d)).bind(&names).execute(&mut *tx).await?;
        });
        Ok(())
    }
}
