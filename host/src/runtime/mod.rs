//! The only place that touches wasmtime (placeholder until the runtime lands).
