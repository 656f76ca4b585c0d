//! A counting layer: a store decorator that counts the calls (one round trip each, by contract)
//! and the item bytes (names + values) sent in each call's arguments, and can log the sequence of
//! operations so tests can prove every backend receives the same calls.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use session_core::{Call, Layered, Reply, Result, SessionStore, StoreLayer};

/// A store behind the [`Counting`] layer.
pub type CountingStore = Layered<Arc<dyn SessionStore>, Counting>;

/// The counting layer: counts calls and the item bytes they send.
#[derive(Debug, Default)]
pub struct Counting {
    calls: AtomicU64,
    bytes: AtomicU64,
    logging: AtomicBool,
    log: Mutex<Vec<&'static str>>,
}

impl Counting {
    /// Wraps `inner`; read the counts through [`Layered::layer`].
    pub fn wrap(inner: Arc<dyn SessionStore>) -> CountingStore {
        Layered::new(inner, Self::default())
    }

    /// Starts or stops logging operation names (for tests; it costs a lock per call).
    pub fn set_logging(&self, on: bool) {
        self.logging.store(on, Ordering::Relaxed);
    }

    /// Takes the logged operation names.
    pub fn take_log(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Calls and bytes so far, and resets both to zero.
    pub fn take_counts(&self) -> (u64, u64) {
        (
            self.calls.swap(0, Ordering::Relaxed),
            self.bytes.swap(0, Ordering::Relaxed),
        )
    }

    fn count(&self, op: &'static str, bytes: usize) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if self.logging.load(Ordering::Relaxed) {
            self.log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(op);
        }
    }
}

impl StoreLayer for Counting {
    async fn around(&self, call: Call<'_>, inner: &dyn SessionStore) -> Result<Reply> {
        self.count(call.operation().as_str(), call.item_bytes());
        call.run(inner).await
    }
}
