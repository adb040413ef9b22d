//! Version "one" of the component the versioned-deploy tests upload twice (see `which.rs`).

const VERSION: &str = "one";

include!("which.rs");
