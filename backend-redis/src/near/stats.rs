//! The near cache's public knobs and counters.

/// The memory bound of the near cache: at most `max_entries` sessions and `max_bytes` of their
/// items (names and encoded values, plus a fixed overhead of 160 bytes and the key per entry).
/// Copies not read since the last sweep are evicted first (a clock sweep in each of 16 shards,
/// under one bound for the totals).
///
/// ```
/// use backend_redis::{NearCacheLimits, RedisOptions};
///
/// let options = RedisOptions::new().with_near_cache_limits(NearCacheLimits::new(50_000, 256 << 20));
/// assert_eq!(NearCacheLimits::default().max_entries(), 100_000);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NearCacheLimits {
    max_entries: usize,
    max_bytes: usize,
}

impl NearCacheLimits {
    /// The default bound: 100,000 sessions, 128 MiB (a busy process's active sessions: at the
    /// 10 items of 150 bytes the benchmarks use, about 75,000 of them fit the bytes).
    pub const DEFAULT: Self = Self {
        max_entries: 100_000,
        max_bytes: 128 << 20,
    };

    /// At most `max_entries` sessions and `max_bytes` bytes (each at least 1).
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            max_entries: max_entries.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// The most sessions kept.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// The most bytes kept (items plus a fixed overhead per entry).
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

impl Default for NearCacheLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What the near cache did since the store connected
/// ([`RedisStore::near_cache_stats`](crate::RedisStore::near_cache_stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NearCacheStats {
    /// Reads answered from process memory.
    pub hits: u64,
    /// Reads that went to the server (no copy, a copy that needed a slide, or no proof).
    pub misses: u64,
    /// Copies dropped because the server reported a change by another client. (A write by this
    /// process drops its own copy before it is sent, so its invalidation usually finds nothing.)
    pub invalidations: u64,
    /// Times the whole cache was emptied: a lost or reconnected invalidation connection, a
    /// `FLUSHALL`/`FLUSHDB`, a cluster topology change.
    pub flushes: u64,
    /// Copies evicted to stay within [`NearCacheLimits`].
    pub evictions: u64,
    /// Copies held now.
    pub entries: u64,
    /// Bytes held now (items plus a fixed overhead per entry).
    pub bytes: u64,
}
