//! Warden: a WebAssembly-extensible task host. One daemon runs the invocation orchestrator,
//! the cluster core and the wasm runtime; this crate is its library and `warden` binary.
//! See ARCHITECTURE.md for the bird's-eye view and the code map.

pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod data_dir;
pub mod instances;
pub mod keys;
pub mod model;
pub mod orchestrator;
pub mod runtime;
pub mod server;
pub mod services;
pub mod store;
pub mod workflows;
