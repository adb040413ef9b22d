//! End-to-end tests: real components built from source (tests/build.rs), a real daemon on a
//! real SQLite file or the machine's PostgreSQL, driven over HTTP. One test binary.

// Tests report failure by panicking; the workspace's production lints do not apply.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod api;
mod chaos;
mod cli;
mod cluster;
mod feed;
mod guards;
mod instances;
mod languages;
mod orchestration;
mod process;
mod runtime;
mod scheduling;
mod scratch;
mod security;
mod traces;
mod trust;
mod ui;
mod versions;
mod workflows;

/// The `warden` program the tests of `process.rs` and `chaos.rs` start as real processes: the
/// one built in the test crate, or the file named by `WARDEN_UNDER_TEST` (to measure another
/// build, e.g. the code before a fix, with the same tests).
pub(crate) fn warden() -> String {
    std::env::var("WARDEN_UNDER_TEST").unwrap_or_else(|_| env!("CARGO_BIN_EXE_warden-under-test").to_string())
}

/// Runs an async test body once per backend: `both!(name, body_fn)` makes `name::sqlite` and
/// `name::postgres` tests that call `body_fn(Backend)`.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body(warden_tests::harness::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body(warden_tests::harness::Backend::Postgres).await
            }
        }
    };
}
