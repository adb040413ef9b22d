//! placeholder (sqlite)
pub struct SqliteStore;
