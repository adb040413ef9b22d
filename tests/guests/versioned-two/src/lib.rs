//! Version "two" of the component the versioned-deploy tests upload twice (see
//! `../versioned-one/src/which.rs`, the task both export).

const VERSION: &str = "two";

include!("../../versioned-one/src/which.rs");
