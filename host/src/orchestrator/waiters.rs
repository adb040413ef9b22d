//! Wake-ups for callers waiting on invocations (long-polls and guests in `calls.wait`): one
//! `Notify` per watched id, so a completion wakes only its own waiters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Watched invocation ids and their waiter counts.
#[derive(Default)]
pub struct Waiters {
    map: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<Notify>, usize)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching `id`; the entry goes away when the last guard drops.
    pub fn register(&self, id: &str) -> WaiterGuard<'_> {
        let mut map = self.lock();
        let entry = map.entry(id.to_string()).or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        WaiterGuard { waiters: self, id: id.to_string(), notify: entry.0.clone() }
    }

    /// Wakes everyone watching `id`.
    pub fn wake(&self, id: &str) {
        if let Some((n, _)) = self.lock().get(id) {
            n.notify_waiters();
        }
    }
}

/// A registration; dropping it stops watching.
pub struct WaiterGuard<'a> {
    waiters: &'a Waiters,
    id: String,
    notify: Arc<Notify>,
}

impl WaiterGuard<'_> {
    /// The notifier to wait on (create `notified()` and `enable()` it before checking state).
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.waiters.lock();
        if let Some(entry) = map.get_mut(&self.id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                map.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wake_reaches_registered_waiters_and_entries_are_cleaned() {
        let w = Waiters::default();
        {
            let g = w.register("a");
            let n = g.notify().notified();
            tokio::pin!(n);
            n.as_mut().enable();
            w.wake("a");
            assert!(tokio::time::timeout(Duration::from_secs(1), n).await.is_ok(), "wake did not reach the waiter");
            let g2 = w.register("a");
            assert_eq!(w.lock().get("a").map(|e| e.1), Some(2));
            drop(g2);
        }
        assert!(w.lock().is_empty());
    }
}
