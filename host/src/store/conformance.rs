//! placeholder (conformance)
