//! placeholder (sql)
