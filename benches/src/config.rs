//! What to run: backends, workloads, payload, concurrency and duration.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sessions::{Backend, redact_url, url_scheme};

use crate::error::BenchError;
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

/// A store to benchmark: its URL and what the bench needs to know beyond the facade's dispatch.
/// The store itself is opened by `sessions::connect_with` ([`crate::connect_store`]); which
/// backend a URL selects is [`Backend::for_url`]'s answer. The bench adds one distinction of its
/// own: Redis standalone or Redis Cluster (`redis+cluster://`, `rediss+cluster://`), which have
/// different floors and probes and separate report rows.
///
/// ```
/// use session_bench::BackendSpec;
/// use sessions::Backend;
///
/// let cluster = BackendSpec::new("rediss+cluster://:pw@a:7000,b:7001")?;
/// assert_eq!((cluster.backend(), cluster.name()), (Backend::Redis, "redis-cluster"));
/// assert_eq!(BackendSpec::new("mariadb://u@h/db")?.name(), "mysql");
/// assert!(BackendSpec::new("gopher://h").is_err());
/// # Ok::<(), session_bench::BenchError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    backend: Backend,
    cluster: bool,
    url: String,
}

impl BackendSpec {
    /// The store `url` selects.
    ///
    /// # Errors
    /// [`BenchError::Config`] when no backend serves the URL's scheme (the message names the URL
    /// with its password redacted).
    pub fn new(url: impl Into<String>) -> Result<Self, BenchError> {
        let url = url.into();
        let backend = Backend::for_url(&url).map_err(|e| {
            let reason = match e {
                sessions::Error::InvalidConfig { reason, .. } => reason,
                other => other.to_string(),
            };
            BenchError::Config(format!("{}: {reason}", redact_url(&url)))
        })?;
        let cluster = backend == Backend::Redis
            && url_scheme(&url).is_some_and(|scheme| scheme.ends_with("+cluster"));
        Ok(Self {
            backend,
            cluster,
            url,
        })
    }

    /// The in-process store (`memory://`).
    pub fn memory() -> Self {
        Self {
            backend: Backend::Memory,
            cluster: false,
            url: "memory://".to_owned(),
        }
    }

    /// SQLite in memory (`sqlite::memory:`), the default embedded SQL row.
    pub fn sqlite_in_memory() -> Self {
        Self {
            backend: Backend::Sqlite,
            cluster: false,
            url: "sqlite::memory:".to_owned(),
        }
    }

    /// The backend the URL selects.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether this is Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Whether this is standalone Redis (the only store with probes and wire-byte counts beside
    /// memory's probes).
    pub fn is_standalone_redis(&self) -> bool {
        self.backend == Backend::Redis && !self.cluster
    }

    /// The name used in the report (and in the CLI's flags): the facade's feature name
    /// (`memory`, `sqlite`, `redis`, `postgres`, `mysql`), or `redis-cluster`.
    pub fn name(&self) -> &'static str {
        if self.cluster {
            "redis-cluster"
        } else {
            self.backend.feature()
        }
    }

    /// The name of the rows with exact sliding (`w = 0`): [`BackendSpec::name`] with `-exact`.
    pub fn exact_name(&self) -> &'static str {
        match self.name() {
            "memory" => "memory-exact",
            "sqlite" => "sqlite-exact",
            "redis" => "redis-exact",
            "redis-cluster" => "redis-cluster-exact",
            "postgres" => "postgres-exact",
            "mysql" => "mysql-exact",
            _ => "exact",
        }
    }

    /// The name of the rows with the near cache on (`nearCache`), on Redis only:
    /// [`BackendSpec::name`] with `-near` (`redis-near`, `redis-cluster-near`); `None` for the
    /// stores that have no near cache.
    ///
    /// ```
    /// use session_bench::BackendSpec;
    ///
    /// assert_eq!(BackendSpec::new("redis://h:6379")?.near_name(), Some("redis-near"));
    /// assert_eq!(BackendSpec::new("redis+cluster://a:7000")?.near_name(), Some("redis-cluster-near"));
    /// assert_eq!(BackendSpec::memory().near_name(), None);
    /// # Ok::<(), session_bench::BenchError>(())
    /// ```
    pub fn near_name(&self) -> Option<&'static str> {
        match self.name() {
            "redis" => Some("redis-near"),
            "redis-cluster" => Some("redis-cluster-near"),
            _ => None,
        }
    }

    /// The URL, as given (print it through `redact_url`).
    pub fn url(&self) -> &str {
        &self.url
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
    /// The manager's lock polling interval (W5, stores without a release signal); by default the
    /// manager's own default (500 ms), so W5 measures what a user gets.
    pub poll_interval: Duration,
    /// Also run W1 and W2 with exact sliding (`w = 0`), in rows named `<backend>-exact`, next to
    /// the default refresh window's rows.
    pub exact_rows: bool,
    /// Also run every workload on Redis (standalone and cluster) with the near cache on
    /// (`nearCache`, every other setting at its default), in rows named `<backend>-near`, next to
    /// the plain Redis rows.
    pub near_rows: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Run `--scale` (pools of live sessions, bytes per session, purge, expiry events) instead
    /// of the rows: [`crate::scale`].
    pub scale: Option<crate::scale::ScaleConfig>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            backends: vec![BackendSpec::memory(), BackendSpec::sqlite_in_memory()],
            workloads: Workload::ALL.to_vec(),
            concurrency: vec![1, 32],
            payload: Payload::DEFAULT,
            duration: Duration::from_secs(1),
            pool: 10_000,
            pool_budget: 64 << 20,
            floors: true,
            peers: Vec::new(),
            poll_interval: sessions::Config::default().poll_interval(),
            exact_rows: true,
            near_rows: true,
            progress: false,
            scale: None,
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

    /// The facade picks the backend; the bench only tells a Redis Cluster from one server.
    #[test]
    fn specs_follow_the_facades_dispatch() {
        for (url, backend, name) in [
            ("memory://", Backend::Memory, "memory"),
            ("sqlite::memory:", Backend::Sqlite, "sqlite"),
            ("redis://127.0.0.1:6379", Backend::Redis, "redis"),
            ("rediss://:pw@localhost:6380", Backend::Redis, "redis"),
            (
                "redis+cluster://a:7000,b:7001",
                Backend::Redis,
                "redis-cluster",
            ),
            (
                "REDISS+CLUSTER://:pw@a:7000",
                Backend::Redis,
                "redis-cluster",
            ),
            ("postgres://u:pw@h/db", Backend::Postgres, "postgres"),
            ("mysql://u@h/db", Backend::Mysql, "mysql"),
            ("mariadb://u@h/db", Backend::Mysql, "mysql"),
        ] {
            let spec = BackendSpec::new(url).unwrap();
            assert_eq!(
                (spec.backend(), spec.name(), spec.url()),
                (backend, name, url)
            );
            assert_eq!(spec.is_standalone_redis(), name == "redis", "{url}");
            let near = match name {
                "redis" => Some("redis-near"),
                "redis-cluster" => Some("redis-cluster-near"),
                _ => None,
            };
            assert_eq!(spec.near_name(), near, "{url}");
        }
        assert_eq!(
            BackendSpec::new("memory://").unwrap(),
            BackendSpec::memory()
        );
        assert_eq!(
            BackendSpec::new("sqlite::memory:").unwrap(),
            BackendSpec::sqlite_in_memory()
        );
        let Err(BenchError::Config(message)) = BackendSpec::new("gopher://u:s3cret@h") else {
            panic!("gopher:// selected a backend");
        };
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("gopher"), "{message}");
    }

    #[test]
    fn pools_are_capped_by_bytes() {
        let c = BenchConfig::default();
        assert_eq!(c.pool_for(Payload::DEFAULT), 10_000);
        assert_eq!(c.pool_for("1x1m".parse().unwrap()), 64);
        assert_eq!(c.pool_for(Payload::LARGE), 655);
    }
}
