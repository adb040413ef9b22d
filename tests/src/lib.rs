//! Support for Warden's end-to-end tests: the guest components built from source by
//! `tests/build.rs` ([`guests`]), and the harness that runs a daemon and drives it over HTTP.

// A test harness reports failure by panicking; the workspace's production lints do not apply.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

/// Paths of the guest components, built for `wasm32-wasip2` by `tests/build.rs` before the tests
/// compile. One constant per crate of `examples/` (the example tasks: `HELLO`, `MATH`, `FLAKY`,
/// `SLOW`, `FANOUT`) and of `tests/guests/` (the fixtures: `HOSTILE`, whose tasks misbehave on
/// purpose, `NOHANDLER`, a component that does not export `warden:task/handler`, and
/// `SCRATCH`, whose task uses its temporary directory), plus `ALL`.
///
/// ```no_run
/// let bytes = std::fs::read(warden_tests::guests::HELLO).unwrap();
/// assert_eq!(&bytes[4..8], &[0x0d, 0x00, 0x01, 0x00]); // a component, not a core module
/// ```
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}
pub mod chaos;
pub mod harness;
pub mod process;
