//! Group commit: many callers submit small batches, one actor applies everything queued as one
//! store call (one transaction), then the next lot. While a commit is in flight, new work
//! queues up, so the batch grows with load and a lone call is never delayed by a timer.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

type Reply<O, E> = oneshot::Sender<Result<Vec<O>, E>>;

/// Handle to a running batch actor; clone it freely. `E` is the error every submitter of a
/// failed batch gets (a clone each); the actor's own failures arrive through `From<String>`.
pub struct Batcher<I, O, E = String> {
    tx: mpsc::UnboundedSender<(Vec<I>, Reply<O, E>)>,
}

impl<I, O, E> Clone for Batcher<I, O, E> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone() }
    }
}

impl<I: Send + 'static, O: Send + 'static, E: Clone + Send + From<String> + 'static> Batcher<I, O, E> {
    /// Spawns the actor. `apply` gets every queued item (up to `max_items`, never splitting a
    /// submission) and must return one output per input, in order.
    pub fn spawn<F, Fut>(max_items: usize, apply: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<O>, E>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<I>, Reply<O, E>)>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut lots = vec![first];
                let mut count = lots[0].0.len();
                while count < max_items {
                    match rx.try_recv() {
                        Ok(lot) => {
                            count += lot.0.len();
                            lots.push(lot);
                        }
                        Err(_) => break,
                    }
                }
                let mut sizes = Vec::with_capacity(lots.len());
                let mut items = Vec::with_capacity(count);
                let mut replies = Vec::with_capacity(lots.len());
                for (lot, reply) in lots {
                    sizes.push(lot.len());
                    items.extend(lot);
                    replies.push(reply);
                }
                match apply(items).await {
                    Ok(outputs) if outputs.len() == count => {
                        let mut outputs = outputs.into_iter();
                        for (size, reply) in sizes.into_iter().zip(replies) {
                            let _ = reply.send(Ok(outputs.by_ref().take(size).collect()));
                        }
                    }
                    Ok(outputs) => {
                        let msg = format!("batch returned {} outputs for {count} inputs", outputs.len());
                        for reply in replies {
                            let _ = reply.send(Err(E::from(msg.clone())));
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Queues `items` and returns a future of their outputs (the work is queued at once, even
    /// if the future is never awaited).
    pub fn submit(&self, items: Vec<I>) -> impl Future<Output = Result<Vec<O>, E>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send((items, reply)).is_ok();
        async move {
            let stopped = || E::from("the batch writer has stopped".to_string());
            if !sent {
                return Err(stopped());
            }
            rx.await.unwrap_or_else(|_| Err(stopped()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_submissions_share_commits_and_get_their_own_outputs() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let b: Batcher<u32, u32> = Batcher::spawn(10_000, move |items| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                Ok(items.into_iter().map(|i| i * 2).collect())
            }
        });
        let futs: Vec<_> = (0..200u32).map(|i| b.submit(vec![i, i + 1000])).collect();
        for (i, f) in futs.into_iter().enumerate() {
            let i = i as u32;
            assert_eq!(f.await, Ok(vec![i * 2, (i + 1000) * 2]));
        }
        let n = calls.load(Ordering::SeqCst);
        assert!(n < 200, "expected grouped commits, got {n} for 200 submissions");
    }

    #[tokio::test]
    async fn errors_reach_every_submitter_of_the_batch() {
        let b: Batcher<u32, u32> = Batcher::spawn(100, |_| async { Err("boom".to_string()) });
        assert_eq!(b.submit(vec![1]).await, Err("boom".to_string()));
    }
}
