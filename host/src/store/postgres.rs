//! placeholder (postgres)
pub struct PgStore;
