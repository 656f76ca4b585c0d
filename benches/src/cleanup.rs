//! Cleanup: what a run created on the user's servers is removed at the end of each backend's (and
//! each peer's) run, and when the run fails midway, outside every measured cell: our stores'
//! pooled and shared sessions through `SessionStore::delete`, the floor keys and rows (and the
//! Redis probe hashes) through the raw client, the peers' pools through their store's `delete`.
//!
//! A cleanup failure does not discard the measured results: it is reported on stderr as a
//! warning naming the backend and how many keys could not be removed.

use std::future::Future;
use std::sync::Arc;

/// How many deletes (or floor batches) run at once.
pub const CLEANUP_CONCURRENCY: usize = 32;

/// Keys per floor batch (one `DEL` or `DELETE … WHERE id IN (…)` each).
pub const FLOOR_BATCH: usize = 500;

/// What one cleanup could not remove.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Keys that could not be removed.
    pub failed: usize,
    /// The first error seen.
    pub first_error: Option<String>,
}

impl Leftover {
    /// Adds `other`'s failures to these (keeping the first error).
    pub fn merge(&mut self, other: Self) {
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Prints a warning on stderr naming `backend` if anything could not be removed.
    pub fn warn(&self, backend: &str) {
        if self.failed > 0 {
            eprintln!(
                "session-bench: warning: {backend}: cleanup could not remove {} key(s) created by \
                 the run: {}",
                self.failed,
                self.first_error.as_deref().unwrap_or("unknown error")
            );
        }
    }
}

/// Runs `remove` on every item of `items`, at most `concurrency` at once; `weight(item)` is the
/// number of keys an item stands for (1 for a key, the batch size for a batch), counted as left
/// over when `remove` fails.
pub async fn remove_all<T, F, Fut>(
    items: Vec<T>, concurrency: usize, weight: fn(&T) -> usize, remove: F,
) -> Leftover
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let workers = concurrency.clamp(1, items.len().max(1));
    let mut chunks: Vec<Vec<T>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        chunks[i % workers].push(item);
    }
    let remove = Arc::new(remove);
    let mut set = tokio::task::JoinSet::new();
    for chunk in chunks {
        let remove = Arc::clone(&remove);
        set.spawn(async move {
            let mut left = Leftover::default();
            for item in chunk {
                let n = weight(&item);
                if let Err(e) = remove(item).await {
                    left.merge(Leftover {
                        failed: n,
                        first_error: Some(e),
                    });
                }
            }
            left
        });
    }
    let mut total = Leftover::default();
    while let Some(done) = set.join_next().await {
        match done {
            Ok(left) => total.merge(left),
            Err(e) => total.merge(Leftover {
                // The chunk's count is lost with the task; count at least one.
                failed: 1,
                first_error: Some(format!("cleanup task failed: {e}")),
            }),
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_are_counted_by_weight() {
        let left = remove_all(
            (0..10u32).collect(),
            3,
            |n| *n as usize,
            |n| async move {
                if n % 2 == 0 {
                    Ok(())
                } else {
                    Err(format!("no {n}"))
                }
            },
        )
        .await;
        assert_eq!(left.failed, 1 + 3 + 5 + 7 + 9);
        assert!(left.first_error.unwrap().starts_with("no "));
        assert_eq!(
            remove_all(Vec::<u32>::new(), 4, |_| 1, |_| async { Ok(()) }).await,
            Leftover::default()
        );
    }
}
