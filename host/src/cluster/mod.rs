//! The cluster core (JobSync): the token ring that spreads invocations over the live nodes, and
//! pinning of tasks to nodes by name and label patterns.
//! Membership heartbeats live with the atomic services (`services/`), which need them first.

pub mod leader;
pub mod pins;
pub mod ring;
