//! Warden: a WebAssembly-extensible task host. One daemon runs the invocation orchestrator,
//! the cluster core and the wasm runtime; this crate is its library and `warden` binary.
//! See ARCHITECTURE.md for the bird's-eye view and the code map.

pub(crate) mod api;
pub mod cli;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod data_dir;
#[cfg(test)]
mod layering;
pub mod model;
pub(crate) mod orchestrator;
pub mod runtime;
pub mod server;
pub(crate) mod services;
pub(crate) mod store;
pub(crate) mod telemetry;
