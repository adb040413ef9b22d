//! What this node may claim, recomputed at every membership tick: its tokens of the ring and
//! the pinned tasks it must skip or may take whatever their token (`pins.rs`, pure, decides).

use super::pins::{self, PinNode};
use crate::model::{NodeInfo, TaskDef};
use crate::store::{ClaimFilter, Store, StoreError};

/// What `me` may claim while `live` are the live nodes (`leader::by_seniority`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Claims {
    /// The pinned tasks to skip or to take whatever their token.
    pub(crate) filter: ClaimFilter,
    /// Whether `me` owns tokens (a node owning none claims nothing and is not ready).
    pub(crate) owns_tokens: bool,
    /// Tokens in the ring.
    pub(crate) total_tokens: u32,
}

/// Whether `me` owned tokens at a version of the ring: the owners change only with the
/// version (a swap), so an unchanged ring needs no look at them.
pub(crate) type Owned = Option<(i64, bool)>;

/// Decides [`Claims`] for `me` by the pins of `tasks` (the tick's list) and the ring at
/// `ring` (its version and size, as the tick read them); `owned` is what the last call learnt
/// of the ring (kept by the caller between ticks): its owners are read only when it changed.
pub(crate) async fn claims_of(
    store: &dyn Store,
    me: &str,
    live: &[&NodeInfo],
    tasks: &[TaskDef],
    (ring_version, total_tokens): (i64, u32),
    owned: &mut Owned,
) -> Result<Claims, StoreError> {
    let owns_tokens = match *owned {
        Some((version, owns)) if version == ring_version => owns,
        _ => {
            let owns = ring_version > 0 && store.token_owns_any(me).await?;
            *owned = Some((ring_version, owns));
            owns
        }
    };
    let tasks: Vec<(String, Vec<String>)> =
        tasks.iter().filter(|t| !t.pins.is_empty()).map(|t| (t.name.clone(), t.pins.clone())).collect();
    if tasks.is_empty() {
        return Ok(Claims { filter: ClaimFilter::default(), owns_tokens, total_tokens });
    }
    let live: Vec<PinNode<'_>> = live.iter().map(|n| PinNode { name: &n.name, labels: &n.labels }).collect();
    let filter = ClaimFilter {
        excluded: pins::excluded_for(me, &tasks, &live),
        pinned_here: pins::pinned_to(me, &tasks, &live),
        aging_ms: None,
        rate_limited: false,
    };
    Ok(Claims { filter, owns_tokens, total_tokens })
}
