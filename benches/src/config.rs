//! What to run: backends, workloads, payload, concurrency and duration.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::peers::PeerSpec;

/// The six workloads, each defined once and run unchanged against every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Workload {
    /// Read-only request: one `read` of a pooled session.
    W1,
    /// Exclusive request: `acquire`, change one item, `commit`.
    W2,
    /// New session: `create`, then `delete` (keeps the pool stable).
    W3,
    /// Large session delta: a session of 100 items of 1 KiB; `acquire`, change one item, `commit`.
    W4,
    /// Contention: all tasks open one session through the `SessionManager` with `Access::Exclusive`;
    /// the latency is the lock hand-off (from the previous holder's release to the next holder).
    W5,
    /// Lock-free concurrent writes: `write_concurrent` of one item to one shared session.
    W6,
}

impl Workload {
    /// Every workload, in order.
    pub const ALL: [Self; 6] = [Self::W1, Self::W2, Self::W3, Self::W4, Self::W5, Self::W6];

    /// A one-line description.
    pub fn describe(self) -> &'static str {
        match self {
            Self::W1 => "read-only request (read)",
            Self::W2 => "exclusive request (acquire, change one item, commit)",
            Self::W3 => "new session (create, delete)",
            Self::W4 => "large session delta (100 x 1 KiB, change one)",
            Self::W5 => "contention on one session (lock hand-off via SessionManager)",
            Self::W6 => "lock-free concurrent writes to one session",
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|w| w.to_string().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown workload {s:?} (expected W1..W6)"))
    }
}

/// A session's payload: `items` items of `item_size` bytes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Payload {
    /// Number of items.
    pub items: usize,
    /// Bytes per item value.
    pub item_size: usize,
}

impl Payload {
    /// The default: 10 items of 150 B.
    pub const DEFAULT: Self = Self {
        items: 10,
        item_size: 150,
    };
    /// W4's session: 100 items of 1 KiB.
    pub const LARGE: Self = Self {
        items: 100,
        item_size: 1024,
    };

    /// Total value bytes of one session.
    pub fn bytes(self) -> usize {
        self.items * self.item_size
    }
}

impl Default for Payload {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = match self.item_size {
            s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{}m", s >> 20),
            s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{}k", s >> 10),
            s => s.to_string(),
        };
        write!(f, "{}x{size}", self.items)
    }
}

impl FromStr for Payload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("bad payload {s:?} (expected ITEMSxSIZE, e.g. 10x150, 100x1k, 1x1m)");
        let (items, size) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let items: usize = items.parse().map_err(|_| bad())?;
        let size = size.to_ascii_lowercase();
        let (digits, mult) = if let Some(d) = size.strip_suffix('k') {
            (d, 1 << 10)
        } else if let Some(d) = size.strip_suffix('m') {
            (d, 1 << 20)
        } else {
            (size.strip_suffix('b').unwrap_or(&size), 1)
        };
        let item_size = digits.parse::<usize>().map_err(|_| bad())? * mult;
        if items == 0 || item_size == 0 {
            return Err(bad());
        }
        Ok(Self { items, item_size })
    }
}

/// A store to benchmark, with its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSpec {
    /// The in-process moka store.
    Memory,
    /// SQLite (`sqlite::memory:` or a file URL).
    Sqlite(String),
    /// Standalone Redis.
    Redis(String),
    /// Redis Cluster (`redis+cluster://h1:p1,h2:p2`).
    RedisCluster(String),
    /// Postgres.
    Postgres(String),
    /// MySQL or MariaDB.
    Mysql(String),
}

impl BackendSpec {
    /// The name used in the report.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite(_) => "sqlite",
            Self::Redis(_) => "redis",
            Self::RedisCluster(_) => "redis-cluster",
            Self::Postgres(_) => "postgres",
            Self::Mysql(_) => "mysql",
        }
    }

    /// The URL, if any (`None` for memory).
    pub fn url(&self) -> Option<&str> {
        match self {
            Self::Memory => None,
            Self::Sqlite(u)
            | Self::Redis(u)
            | Self::RedisCluster(u)
            | Self::Postgres(u)
            | Self::Mysql(u) => Some(u),
        }
    }
}

/// A whole benchmark run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Stores to run, in order.
    pub backends: Vec<BackendSpec>,
    /// Workloads to run, in order.
    pub workloads: Vec<Workload>,
    /// Task counts; every cell runs once per count.
    pub concurrency: Vec<usize>,
    /// The session payload (W4 always uses [`Payload::LARGE`]).
    pub payload: Payload,
    /// Measured time per cell.
    pub duration: Duration,
    /// Existing sessions per pool (capped so that a pool holds at most [`BenchConfig::pool_budget`] bytes).
    pub pool: usize,
    /// Largest pool in value bytes.
    pub pool_budget: usize,
    /// Also run the raw-client floors (and the reference probes that split W1's cost).
    pub floors: bool,
    /// `tower-sessions` stores to run on W1–W3 next to ours.
    pub peers: Vec<PeerSpec>,
    /// The manager's lock polling interval (W5, stores without a release signal).
    pub poll_interval: Duration,
    /// SQL stores: backend-sql's refresh throttle (`0.0`, the default: every read slides the
    /// expiry, which is a write; `0.5`: a read writes only once half the timeout is used up).
    pub refresh_throttle: f64,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            backends: vec![
                BackendSpec::Memory,
                BackendSpec::Sqlite("sqlite::memory:".to_owned()),
            ],
            workloads: Workload::ALL.to_vec(),
            concurrency: vec![1, 32],
            payload: Payload::DEFAULT,
            duration: Duration::from_secs(1),
            pool: 10_000,
            pool_budget: 64 << 20,
            floors: true,
            peers: Vec::new(),
            poll_interval: Duration::from_millis(10),
            refresh_throttle: 0.0,
            progress: false,
        }
    }
}

impl BenchConfig {
    /// The pool size for sessions of `payload`: `pool`, capped by the byte budget, at least the
    /// largest concurrency (each task gets its own slice of the pool).
    pub fn pool_for(&self, payload: Payload) -> usize {
        let by_budget = self.pool_budget / payload.bytes().max(1);
        let min = self.concurrency.iter().copied().max().unwrap_or(1);
        self.pool.min(by_budget).max(min).max(1)
    }
}

/// Parses `500ms`, `2s`, `1.5s`, `1m` (a bare number is seconds).
///
/// # Errors
/// A message naming the expected forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration {s:?} (expected e.g. 500ms, 2s, 1m)");
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        assert_eq!("10x150".parse::<Payload>().unwrap(), Payload::DEFAULT);
        assert_eq!("100x1k".parse::<Payload>().unwrap(), Payload::LARGE);
        let m: Payload = "1x1m".parse().unwrap();
        assert_eq!((m.items, m.item_size), (1, 1 << 20));
        assert_eq!(m.to_string(), "1x1m");
        assert!("10".parse::<Payload>().is_err());
        assert!("0x1k".parse::<Payload>().is_err());
    }

    #[test]
    fn durations_and_workloads_parse() {
        assert_eq!(parse_duration("50ms").unwrap(), Duration::from_millis(50));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!("w4".parse::<Workload>().unwrap(), Workload::W4);
        assert!("W7".parse::<Workload>().is_err());
    }

    #[test]
    fn pools_are_capped_by_bytes() {
        let c = BenchConfig::default();
        assert_eq!(c.pool_for(Payload::DEFAULT), 10_000);
        assert_eq!(c.pool_for("1x1m".parse().unwrap()), 64);
        assert_eq!(c.pool_for(Payload::LARGE), 655);
    }
}
