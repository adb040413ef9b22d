//! The cluster core (JobSync): the token ring that spreads invocations over the live nodes
//! (`ring.rs`, pure), the leader's lease and its rebalancing of the ring (`leader.rs`), pinning
//! of tasks to nodes by name and label patterns (`pins.rs`, pure) and what each node may claim
//! (`claims.rs`). The membership loop that drives them each tick lives in `services/`.

pub mod claims;
pub mod leader;
pub mod pins;
pub mod ring;
