//! The cluster core (JobSync): the token ring that spreads invocations over the live nodes.
//! Membership heartbeats live with the atomic services (`services/`), which need them first.

pub mod ring;
