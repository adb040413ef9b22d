//! Warden: a WebAssembly-extensible task host. One daemon runs the invocation orchestrator,
//! the cluster core and the wasm runtime; this crate is its library and `warden` binary.
//! See ARCHITECTURE.md for the bird's-eye view and the code map.

#[cfg(feature = "wip")]
pub mod api;
#[cfg(feature = "wip")]
pub mod cli;
#[cfg(feature = "wip")]
pub mod config;
pub mod model;
#[cfg(feature = "wip")]
pub mod orchestrator;
#[cfg(not(feature = "wip"))]
#[allow(missing_docs)]
pub mod orchestrator {
    pub mod status;
}
pub mod runtime;
#[cfg(feature = "wip")]
pub mod server;
pub mod store;
