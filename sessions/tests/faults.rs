//! Fault tests over HTTP under load (issue 14): the example application's counter, served by two
//! application instances ("two processes per store", each with its own store connection and
//! session manager) on two ports, while the store under them crashes and comes back.
//!
//! The store is a private server the test starts itself on a free port (test-support's
//! `private` module), so the shared servers other tests use are never disturbed:
//!
//! | trial | fault |
//! | --- | --- |
//! | `redis::kill_9_under_load` | a durable standalone Redis (`appendonly yes`, `appendfsync always`) is killed with `kill -9`, stays down 2 s and restarts on the same port and file |
//! | `postgres::immediate_stop_under_load` | Postgres (`synchronous_commit = on`) is stopped with `pg_ctl stop -m immediate`, stays down 3 s and restarts; [`postgres_runs`] times in a row (default 10, `FAULT_RUNS` to change), on one cluster, each run with fresh sessions |
//! | `mysql::kill_9_under_load` | MariaDB (`innodb_flush_log_at_trx_commit = 1`) is killed with `kill -9`, stays down 2 s and restarts |
//! | `redis-cluster::master_killed_under_load` | a six-node Redis Cluster (3 masters, 3 replicas, `cluster-node-timeout` 500 ms) loses, to `kill -9`, the master of the first client's session; its replica is promoted; the node restarts and rejoins afterwards |
//!
//! The application has two routes: `POST /incr` (an exclusive session: reads `n`, writes `n + 1`,
//! answers the new value) and `GET /n` (a read-only session: answers `n`), under `SessionLayer`
//! and `CatchPanicLayer`. Its configuration bounds every wait: connection and operation timeouts
//! of 1 s, a lock wait of 3 s, retries off (the default); the lock TTL stays at its default (110
//! s), so a lock orphaned by the crash would show. Sixteen clients, each with its own session
//! (cookie), alternate between the two instances and increment in a loop (every third round also
//! reading), pausing 5 ms after each increment and 20 ms after a 503; one more client sends requests without a cookie.
//!
//! Each scenario checks:
//!
//! - **No request hangs**: every request has a client-side timeout of the configured bound (lock
//!   wait + 2 × operation timeout, the acquire and the commit, + a 2 s margin for a loaded 2-core
//!   machine: 7 s); one that runs out fails the test. Every answer is 200 or 503 (what
//!   `SessionError` maps an unavailable store or a timeout to; on the cluster also 409, below);
//!   during the outage the 503s are counted (and must come: the store fails fast) and their
//!   latency is reported.
//! - **Nothing goes backwards, nothing acknowledged is lost** (on the durable stores): each
//!   client's 200 answers count strictly upwards, a read never answers less than the client's last
//!   acknowledged increment, no session is replaced by a fresh one, and after the run a read of
//!   each session is at least its last acknowledged value (and at most the increments sent). On
//!   the cluster, whose replication is asynchronous, an increment the killed master acknowledged
//!   but had not passed on may be lost, and a lock it granted but had not passed on is gone at
//!   the commit (a 409): both are counted and reported, not failed. A failure's message lists
//!   the errors the web layer logged behind its 500s and 409s.
//! - **No session stays locked**: within 5 s of the restart (of the promotion, on the cluster)
//!   every session opens `Exclusive` through a third manager (a lock wait of 5 s: an orphaned lock
//!   would hold it for the TTL). On Postgres and MariaDB the sessions table (`sess_sessions`) is
//!   also queried directly, from the restart on: no row may still hold a lock taken before the
//!   restart (Postgres: `locked_at < pg_postmaster_start_time()`; MariaDB: `locked_at` older than
//!   the restart by the server's clock) 5 s after it, and at the end no row holds a lock.
//! - **No panic**: a panic hook counts panics in the process, and the 500s of `CatchPanicLayer`.
//!
//! Each run prints its measurements to stderr (`--nocapture` is not needed): the time from the
//! restart until every session opened, and until every client had a 200; the 503s (during the
//! outage, and their slowest); the slowest request; increments acknowledged.
//!
//! Run: `cargo test -p sessions --features axum --test faults` after `source /tmp/ci-redis/env;
//! source /tmp/ci-sql/env` (scripts/redis/start.sh, scripts/sql/start.sh). A trial runs when its
//! variant is configured (`SESSION_TEST_REDIS_URL`, `SESSION_TEST_REDIS_CLUSTER_URLS`,
//! `SESSION_TEST_POSTGRES_BIN`, `SESSION_TEST_MYSQL_URL`: the binaries `redis-server`,
//! `redis-cli`, `initdb`/`pg_ctl`, `mariadbd` are then installed), is ignored with the reason
//! otherwise, and fails when `SESSION_TEST_REQUIRE` names the variant (test-support's rule). As
//! root, the SQL servers run as `postgres` and `mysql`. The trials run one at a time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{Method, Request, StatusCode};
use axum::routing::{get, post};
use backend_redis::RedisStore;
use backend_sql::sqlx;
use backend_sql::{SqlOptions, SqlStore};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sessions::web::{CookieOptions, ExclusiveSession, ReadOnlySession, SessionError, SessionLayer};
use sessions::{Access, AppName, Config, SessionId, SessionManager, SessionStore};
use test_support::private::{
    Private, PrivateMariadb, PrivatePostgres, PrivateRedis, PrivateRedisCluster,
};
use test_support::{Failed, TestResult, ensure, fail};
use tower_http::catch_panic::CatchPanicLayer;

/// Panics anywhere in the process (the hook installed in `main`).
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// The errors the web layer logged behind its 500s and 409s (the [`Errors`] subscriber layer
/// installed in `main`): the answers carry a fixed body, the reason is only in the log.
static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Keeps the `error` field of the web layer's events for a 500 (level ERROR) or a 409 ("session
/// changes rejected"), so that a failure can say what was behind the answer.
struct Errors;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Errors {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(String, String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "message" => self.0 = format!("{value:?}"),
                    "error" => self.1 = format!("{value:?}"),
                    _ => {}
                }
            }
        }
        let mut fields = Fields(String::new(), String::new());
        event.record(&mut fields);
        let error = *event.metadata().level() == tracing::Level::ERROR;
        if (error || fields.0 == "session changes rejected")
            && let Ok(mut logged) = LOGGED.lock()
            && logged.len() < 100
        {
            logged.push(format!(
                "{} {}: {}",
                event.metadata().level(),
                fields.0,
                fields.1
            ));
        }
    }
}

/// The errors logged since the last call, for a failure's message.
fn take_logged() -> Vec<String> {
    LOGGED
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default()
}

/// `connectionTimeoutInMilliseconds` of the application.
const CONNECT: Duration = Duration::from_secs(1);
/// `operationTimeoutInMilliseconds` of the application.
const OPERATION: Duration = Duration::from_secs(1);
/// `lockWaitTimeoutInMilliseconds` of the application.
const LOCK_WAIT: Duration = Duration::from_secs(3);
/// The margin on top of the configured timeouts: a loaded 2-core machine, debug build.
const MARGIN: Duration = Duration::from_secs(2);
/// The longest any request may take: the lock wait, one acquire attempt and one commit attempt,
/// each bounded by the operation timeout, plus [`MARGIN`].
const BOUND: Duration = LOCK_WAIT
    .saturating_add(OPERATION)
    .saturating_add(OPERATION)
    .saturating_add(MARGIN);
/// Every session must be usable (open `Exclusive`) this soon after the restart.
const USABLE_WITHIN: Duration = Duration::from_secs(5);
/// Clients with a session each.
const CLIENTS: usize = 16;
/// Load before the fault.
const WARM: Duration = Duration::from_millis(800);
/// Load after the restart, at least (the run goes on until every check of the recovery is done).
const AFTER: Duration = Duration::from_secs(2);
/// A client's pause after each acknowledged increment: a busy user, not a loop that never lets
/// go of its session (a waiter in another process that polls, on a store without a release
/// signal, would otherwise rarely find the lock free).
const THINK: Duration = Duration::from_millis(5);
/// A client's pause after a 503, as a polite client would.
const BACKOFF: Duration = Duration::from_millis(20);
/// The cookie's name.
const COOKIE_NAME: &str = "faults";

// ---------------------------------------------------------------------------------------------
// The application (sessions/examples/axum_app.rs's counter).

/// Reads `n`, writes `n + 1` under the session's exclusive lock, answers the new value.
async fn increment(session: ExclusiveSession) -> Result<String, SessionError> {
    let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
    session.insert("n", &n).await?;
    Ok(n.to_string())
}

/// Answers `n`, read-only.
async fn read_n(session: ReadOnlySession) -> Result<String, SessionError> {
    Ok(session.get::<u64>("n").await?.unwrap_or(0).to_string())
}

fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route("/incr", post(increment))
        .route("/n", get(read_n))
        .layer(layer)
        .layer(CatchPanicLayer::new())
}

/// The store kinds under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Redis,
    RedisCluster,
    Postgres,
    Mariadb,
}

impl Kind {
    /// Whether an acknowledged write survives the fault (see the module docs).
    fn durable(self) -> bool {
        self != Self::RedisCluster
    }
}

/// The application's configuration: every wait bounded, retries off.
fn config(url: &str, app: &AppName, lock_wait: Duration) -> Result<Config, Failed> {
    Ok(Config::builder()
        .url(url)
        .application_name(app.clone())
        .connection_timeout(Some(CONNECT))
        .operation_timeout(Some(OPERATION))
        .lock_wait_timeout(lock_wait)
        .max_waiters_per_session(64)
        .build()?)
}

async fn open_store(kind: Kind, config: &Config) -> Result<Arc<dyn SessionStore>, Failed> {
    Ok(match kind {
        Kind::Redis | Kind::RedisCluster => Arc::new(RedisStore::connect(config).await?),
        Kind::Postgres | Kind::Mariadb => {
            let options = SqlOptions::new().with_sweeper(None);
            Arc::new(SqlStore::connect_with(config, options).await?)
        }
    })
}

/// One application instance on its own port; stopped on drop.
struct Instance {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn instance(kind: Kind, config: &Config) -> Result<Instance, Failed> {
    let manager = SessionManager::new(open_store(kind, config).await?, config);
    let layer = SessionLayer::new(manager)
        .with_cookie(CookieOptions::new().with_name(COOKIE_NAME)?)
        .with_end_wait(Duration::from_secs(1));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app(layer)).await {
            eprintln!("test server stopped: {err}");
        }
    });
    Ok(Instance { addr, task })
}

// ---------------------------------------------------------------------------------------------
// The clients.

type HttpClient = Client<HttpConnector, String>;

/// One answer, as a client saw it.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    body: String,
    issued: Option<String>,
    sent: Instant,
    latency: Duration,
}

/// Sends one request; a request that takes longer than [`BOUND`] is an error.
async fn send(
    client: &HttpClient, addr: SocketAddr, method: Method, path: &str, cookie: Option<&str>,
) -> Result<Reply, String> {
    let sent = Instant::now();
    let exchange = async {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("http://{addr}{path}"));
        if let Some(id) = cookie {
            request = request.header(COOKIE, format!("{COOKIE_NAME}={id}"));
        }
        let request = request.body(String::new()).map_err(|e| e.to_string())?;
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let prefix = format!("{COOKIE_NAME}=");
        let issued = response.headers().get_all(SET_COOKIE).iter().find_map(|v| {
            let value = v.to_str().ok()?.strip_prefix(&prefix)?.split(';').next()?;
            (!value.is_empty()).then(|| value.to_owned())
        });
        let body = response.into_body().collect().await;
        let body = body.map_err(|e| e.to_string())?.to_bytes();
        let body = String::from_utf8(body.to_vec()).map_err(|e| e.to_string())?;
        Ok::<_, String>((status, body, issued))
    };
    match tokio::time::timeout(BOUND, exchange).await {
        Ok(Ok((status, body, issued))) => Ok(Reply {
            status,
            body,
            issued,
            sent,
            latency: sent.elapsed(),
        }),
        Ok(Err(e)) => Err(format!("{method} {path}: {e}")),
        Err(_) => Err(format!(
            "{method} {path} (cookie {}) got no answer within {BOUND:?} (the configured timeouts \
             plus {MARGIN:?})",
            cookie.is_some()
        )),
    }
}

/// What the clients share: the stop flag and the failures they saw.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    violations: Mutex<Vec<String>>,
}

impl Shared {
    fn violation(&self, what: String) {
        if let Ok(mut v) = self.violations.lock() {
            v.push(what);
        }
    }
}

/// One client's record of its run.
#[derive(Debug, Default)]
struct Log {
    /// The client's session.
    id: String,
    /// Its last acknowledged (200) increment.
    last_acked: u64,
    /// Increments sent (answered or not).
    sent: u64,
    /// Acknowledged increments.
    acked: u64,
    /// Acknowledged increments whose value was not above the previous one (lost by the store).
    regressions: u64,
    /// Increments answered 409 (the lock was gone at the commit): on the cluster, a lock the
    /// killed master acknowledged but had not passed on to its replica.
    rejected: u64,
    /// The instants of the 200 answers (their arrival).
    oks: Vec<Instant>,
    /// Every 503: when it was sent, how long it took.
    unavailable: Vec<(Instant, Duration)>,
    /// The slowest request.
    slowest: Duration,
}

impl Log {
    fn saw(&mut self, reply: &Reply) {
        self.slowest = self.slowest.max(reply.latency);
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            self.unavailable.push((reply.sent, reply.latency));
        }
    }
}

/// A client incrementing its session `id` until told to stop, alternating between the
/// instances; every third round it also reads.
async fn client_loop(
    kind: Kind, client: HttpClient, addrs: [SocketAddr; 2], id: String, first: u64,
    shared: Arc<Shared>,
) -> Log {
    let mut log = Log {
        id: id.clone(),
        last_acked: first,
        ..Log::default()
    };
    let mut round = 0usize;
    while !shared.stop.load(Ordering::Relaxed) {
        let addr = addrs[round % 2];
        round += 1;
        log.sent += 1;
        let reply = match send(&client, addr, Method::POST, "/incr", Some(&id)).await {
            Ok(r) => r,
            Err(e) => {
                shared.violation(format!("client {id:.8}: {e}"));
                continue;
            }
        };
        log.saw(&reply);
        match reply.status {
            StatusCode::OK => {
                let Ok(n) = reply.body.parse::<u64>() else {
                    shared.violation(format!("client {id:.8}: bad body {:?}", reply.body));
                    continue;
                };
                if let Some(issued) = &reply.issued
                    && *issued != id
                {
                    shared.violation(format!(
                        "client {id:.8}: its session was replaced by a new one at {n}"
                    ));
                }
                if n <= log.last_acked {
                    log.regressions += 1;
                    if kind.durable() {
                        shared.violation(format!(
                            "client {id:.8}: counter went from {} to {n}: an acknowledged \
                             increment was lost",
                            log.last_acked
                        ));
                    }
                }
                log.last_acked = n;
                log.acked += 1;
                log.oks.push(Instant::now());
                tokio::time::sleep(THINK).await;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
            // Asynchronous replication: like an acknowledged increment lost, counted.
            StatusCode::CONFLICT if !kind.durable() => {
                log.rejected += 1;
                continue;
            }
            other => {
                shared.violation(format!(
                    "client {id:.8}: POST /incr answered {other} {:?}",
                    reply.body
                ));
                continue;
            }
        }
        if round.is_multiple_of(3) {
            match send(&client, addrs[round % 2], Method::GET, "/n", Some(&id)).await {
                Ok(reply) => {
                    log.saw(&reply);
                    match reply.status {
                        StatusCode::OK => match reply.body.parse::<u64>() {
                            Ok(n) if n < log.last_acked && kind.durable() => {
                                shared.violation(format!(
                                    "client {id:.8}: read {n} after {} was acknowledged",
                                    log.last_acked
                                ));
                            }
                            Ok(_) => {}
                            Err(_) => shared
                                .violation(format!("client {id:.8}: bad body {:?}", reply.body)),
                        },
                        StatusCode::SERVICE_UNAVAILABLE => tokio::time::sleep(BACKOFF).await,
                        other => shared.violation(format!(
                            "client {id:.8}: GET /n answered {other} {:?}",
                            reply.body
                        )),
                    }
                }
                Err(e) => shared.violation(format!("client {id:.8}: {e}")),
            }
        }
    }
    log
}

/// A client without a cookie: a new session per request, every 100 ms; each must answer 200
/// with a new session, or 503, within the bound.
async fn anonymous_loop(client: HttpClient, addrs: [SocketAddr; 2], shared: Arc<Shared>) -> Log {
    let mut log = Log::default();
    let mut round = 0usize;
    while !shared.stop.load(Ordering::Relaxed) {
        round += 1;
        match send(&client, addrs[round % 2], Method::POST, "/incr", None).await {
            Ok(reply) => {
                log.saw(&reply);
                match reply.status {
                    StatusCode::OK if reply.body == "1" && reply.issued.is_some() => {}
                    StatusCode::SERVICE_UNAVAILABLE => {}
                    other => shared.violation(format!(
                        "a request without a cookie answered {other} {:?} (issued {:?})",
                        reply.body, reply.issued
                    )),
                }
            }
            Err(e) => shared.violation(format!("without a cookie: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    log
}

// ---------------------------------------------------------------------------------------------
// The faults.

/// The server under test.
enum Target {
    /// One server, down for the given time.
    Single(Box<dyn Private>, Duration),
    /// A cluster whose master of the first session is killed.
    Cluster(PrivateRedisCluster),
}

impl Target {
    fn url(&self) -> String {
        match self {
            Self::Single(server, _) => server.url(),
            Self::Cluster(cluster) => cluster.url(),
        }
    }
}

/// Blocking work (starting and stopping servers) without stalling the load on this worker.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// When the server went down and came back.
struct Outage {
    down: Instant,
    up: Instant,
    /// What the fault hit (for the report).
    what: String,
}

/// Crashes and restarts a single server, or kills a cluster master and waits for its replica's
/// promotion (the node itself restarts after the run: [`Target::heal`]).
async fn crash(
    target: &mut Target, app: &AppName, ids: &[String],
) -> Result<(Outage, Option<u16>), Failed> {
    match target {
        Target::Single(server, down_for) => {
            let started = Instant::now();
            blocking(|| server.stop());
            let down = Instant::now();
            let stopping = down - started;
            tokio::time::sleep(*down_for).await;
            blocking(|| server.start());
            let up = Instant::now();
            Ok((
                Outage {
                    down,
                    up,
                    what: format!(
                        "stopped in {stopping:?}, down {:?}, restart took {:?}",
                        *down_for,
                        up - down - *down_for
                    ),
                },
                None,
            ))
        }
        Target::Cluster(cluster) => {
            let tag = |id: &str| format!("{{{}_{id}}}", app.as_str());
            let (victim, on_victim) = blocking(|| {
                let victim = cluster.master_of(&tag(&ids[0]));
                let on = ids
                    .iter()
                    .filter(|id| cluster.master_of(&tag(id)) == victim)
                    .count();
                (victim, on)
            });
            blocking(|| cluster.kill(victim));
            let down = Instant::now();
            // Promoted: another node serves the slot, and the cluster is whole again.
            loop {
                ensure!(
                    down.elapsed() < Duration::from_secs(20),
                    "no replica was promoted within 20 s"
                );
                let promoted = blocking(|| {
                    cluster.master_of(&tag(&ids[0])) != victim
                        && cluster.wait_ok(Duration::from_millis(1))
                });
                if promoted {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let up = Instant::now();
            Ok((
                Outage {
                    down,
                    up,
                    what: format!(
                        "master {victim} (serving {on_victim} of {} sessions) killed, replica \
                         promoted after {:?}",
                        ids.len(),
                        up - down
                    ),
                },
                Some(victim),
            ))
        }
    }
}

impl Target {
    /// Restarts a killed cluster node and waits until it has rejoined as a replica.
    fn heal(&mut self, victim: Option<u16>) -> TestResult {
        if let (Self::Cluster(cluster), Some(port)) = (self, victim) {
            blocking(|| cluster.restart(port));
            ensure!(
                blocking(|| cluster.wait_ok(Duration::from_secs(30))),
                "the killed node did not rejoin within 30 s"
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Recovery checks.

/// Opens every session `Exclusive` through `probe` (lock wait [`USABLE_WITHIN`]), trying again
/// after store failures until [`USABLE_WITHIN`] after `up`; answers when each one opened.
async fn probe_sessions(
    probe: &SessionManager, ids: &[String], up: Instant,
) -> Result<Vec<Instant>, Failed> {
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids {
        let (probe, id) = (probe.clone(), id.clone());
        tasks.spawn(async move {
            let mut last = None;
            while up.elapsed() < USABLE_WITHIN {
                match probe.open(Some(&id), Access::Exclusive).await {
                    Ok(session) => {
                        let new = session.is_new();
                        let opened = Instant::now();
                        session.end().await?;
                        ensure!(!new, "session {id:.8} was gone after the restart");
                        return Ok(opened);
                    }
                    Err(e) => {
                        last = Some(e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            Err(fail(format!(
                "session {id:.8} could not be opened Exclusive within {USABLE_WITHIN:?} of the \
                 restart: {last:?}"
            )))
        });
    }
    let mut opened = Vec::new();
    while let Some(done) = tasks.join_next().await {
        opened.push(done??);
    }
    Ok(opened)
}

/// A direct connection to the SQL server under the store, for the table checks.
enum Raw {
    Postgres(sqlx::PgConnection),
    Mariadb(sqlx::MySqlConnection),
}

impl Raw {
    async fn connect(kind: Kind, url: &str) -> Result<Self, Failed> {
        use sqlx::Connection;
        Ok(match kind {
            Kind::Postgres => Self::Postgres(sqlx::PgConnection::connect(url).await?),
            Kind::Mariadb => Self::Mariadb(sqlx::MySqlConnection::connect(url).await?),
            _ => return Err(fail("not a SQL store")),
        })
    }

    /// Rows holding a lock taken before the restart, which was `since` ago: on Postgres,
    /// `locked_at < pg_postmaster_start_time()`; on MariaDB (`locked_at` in UTC), older than
    /// `since` by the server's clock.
    async fn locked_before_restart(&mut self, since: Duration) -> Result<i64, Failed> {
        Ok(match self {
            Self::Postgres(c) => {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM sess_sessions \
                      WHERE lock_token IS NOT NULL AND locked_at < pg_postmaster_start_time()",
                )
                .fetch_one(c)
                .await?
            }
            Self::Mariadb(c) => {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM sess_sessions WHERE lock_token IS NOT NULL \
                        AND locked_at < UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND",
                )
                .bind(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
                .fetch_one(c)
                .await?
            }
        })
    }

    /// Rows holding a lock.
    async fn locked(&mut self) -> Result<i64, Failed> {
        const Q: &str = "SELECT count(*) FROM sess_sessions WHERE lock_token IS NOT NULL";
        Ok(match self {
            Self::Postgres(c) => sqlx::query_scalar::<_, i64>(Q).fetch_one(c).await?,
            Self::Mariadb(c) => sqlx::query_scalar::<_, i64>(Q).fetch_one(c).await?,
        })
    }
}

/// Polls the SQL sessions table from the restart on, until no row holds a lock taken before the
/// restart; answers how long after `up` that was. Fails when such a row is still there
/// [`USABLE_WITHIN`] after `up`.
async fn stale_locks_cleared(kind: Kind, url: &str, up: Instant) -> Result<Duration, Failed> {
    let mut raw = None;
    let mut last = String::new();
    loop {
        let now = up.elapsed();
        if now > USABLE_WITHIN {
            return Err(fail(format!(
                "{USABLE_WITHIN:?} after the restart: {last} (sess_sessions)"
            )));
        }
        if raw.is_none() {
            raw = Raw::connect(kind, url).await.ok();
        }
        if let Some(r) = raw.as_mut() {
            match r.locked_before_restart(now).await {
                Ok(0) => return Ok(now),
                Ok(n) => last = format!("{n} rows still hold a lock taken before the restart"),
                Err(e) => {
                    last = format!("query failed: {e:?}");
                    raw = None;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After the run, once every request has ended: no row of the SQL sessions table holds a lock
/// (the background releases are given two seconds).
async fn no_lock_left(kind: Kind, url: &str) -> TestResult {
    let mut raw = Raw::connect(kind, url).await?;
    let mut held = 0;
    for _ in 0..20 {
        held = raw.locked().await?;
        if held == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(fail(format!(
        "{held} rows of sess_sessions still hold a lock after the run"
    )))
}

// ---------------------------------------------------------------------------------------------
// One run.

/// What one run measured.
#[derive(Debug)]
struct Measured {
    /// From the restart (promotion) until every session had opened `Exclusive`.
    all_usable: Duration,
    /// From the restart until every client had a 200.
    all_answered: Duration,
    /// SQL stores: from the restart until no row held a lock from before it.
    stale_rows_cleared: Option<Duration>,
    /// 503s in the whole run, and those sent while the server was down.
    unavailable: usize,
    unavailable_in_outage: usize,
    /// The slowest 503 sent during the outage.
    slowest_503: Duration,
    /// The slowest request of the run.
    slowest: Duration,
    /// Increments acknowledged.
    acked: u64,
    /// Acknowledged increments lost (only the cluster may have any).
    lost: u64,
    /// Increments answered 409 because their lock was gone (only the cluster may have any).
    rejected: u64,
}

/// One run: the application on `target`, sixteen clients, the fault, the checks.
async fn run(kind: Kind, label: &str, target: &mut Target, n: usize) -> Result<Measured, Failed> {
    let panics_before = PANICS.load(Ordering::SeqCst);
    let app = AppName::new(&format!(
        "/faults/{label}/{n}/{}",
        &SessionId::generate()?.expose()[..8]
    ))?;
    let url = target.url();
    let config = config(&url, &app, LOCK_WAIT)?;
    let a = instance(kind, &config).await?;
    let b = instance(kind, &config).await?;
    let addrs = [a.addr, b.addr];
    let probe_config = self::config(&url, &app, USABLE_WITHIN)?;
    let probe = SessionManager::new(open_store(kind, &probe_config).await?, &probe_config);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // Sixteen sessions, each at 1.
    let mut ids = Vec::new();
    for i in 0..CLIENTS {
        let reply = send(&client, addrs[i % 2], Method::POST, "/incr", None).await?;
        ensure!(
            reply.status == StatusCode::OK && reply.body == "1",
            "creating session {i}: {reply:?}"
        );
        ids.push(
            reply
                .issued
                .ok_or_else(|| fail("a new session issues its cookie"))?,
        );
    }

    let shared = Arc::new(Shared::default());
    let clients: Vec<_> = ids
        .iter()
        .map(|id| {
            tokio::spawn(client_loop(
                kind,
                client.clone(),
                addrs,
                id.clone(),
                1,
                Arc::clone(&shared),
            ))
        })
        .collect();
    let anonymous = tokio::spawn(anonymous_loop(client.clone(), addrs, Arc::clone(&shared)));
    tokio::time::sleep(WARM).await;

    let crashed = crash(target, &app, &ids).await;
    let (outage, victim) = match crashed {
        Ok(o) => o,
        Err(e) => {
            shared.stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
    };
    let Outage { down, up, what } = outage;

    // Recovery, under load.
    let table = async {
        if matches!(kind, Kind::Postgres | Kind::Mariadb) {
            Some(stale_locks_cleared(kind, &url, up).await)
        } else {
            None
        }
    };
    let (probed, stale) = tokio::join!(probe_sessions(&probe, &ids, up), table);
    if let Some(rest) = AFTER.checked_sub(up.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    shared.stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for c in clients {
        logs.push(c.await?);
    }
    let anonymous = anonymous.await?;
    let healed = target.heal(victim);
    let opened = probed?;
    let stale_rows_cleared = stale.transpose()?;
    healed?;
    let logged = take_logged();
    if let Ok(v) = shared.violations.lock()
        && !v.is_empty()
    {
        return Err(fail(format!(
            "{} failures, the first ones:\n  {}\nthe errors the web layer logged (500s, 409s):\n  {}",
            v.len(),
            v.iter().take(10).cloned().collect::<Vec<_>>().join("\n  "),
            logged.join("\n  ")
        )));
    }

    // Nothing acknowledged is lost: a read of each session, after the run.
    let mut lost = logs.iter().map(|l| l.regressions).sum::<u64>();
    for (i, log) in logs.iter().enumerate() {
        let reply = send(&client, addrs[i % 2], Method::GET, "/n", Some(&log.id)).await?;
        ensure!(
            reply.status == StatusCode::OK,
            "reading session {i} after the run: {reply:?}"
        );
        let n = reply.body.parse::<u64>()?;
        // One increment per request sent, plus the one that created the session.
        ensure!(
            n <= log.sent + 1,
            "session {i} counts {n}, more than the {} increments sent",
            log.sent + 1
        );
        if n < log.last_acked {
            lost += log.last_acked - n;
            ensure!(
                !kind.durable(),
                "session {i}: {n} after the run, but {} was acknowledged ({what})",
                log.last_acked
            );
        }
    }
    if matches!(kind, Kind::Postgres | Kind::Mariadb) {
        no_lock_left(kind, &url).await?;
    }

    let panics = PANICS.load(Ordering::SeqCst) - panics_before;
    ensure!(panics == 0, "{panics} panics during the run");

    let all_usable = opened
        .iter()
        .map(|t| t.saturating_duration_since(up))
        .max()
        .unwrap_or_default();
    ensure!(
        all_usable <= USABLE_WITHIN,
        "not every session was usable within {USABLE_WITHIN:?}: {all_usable:?}"
    );
    let mut all_answered = Duration::ZERO;
    for (i, log) in logs.iter().enumerate() {
        let first = log
            .oks
            .iter()
            .find(|t| **t > up)
            .ok_or_else(|| fail(format!("client {i} had no 200 after the restart")))?;
        all_answered = all_answered.max(*first - up);
    }
    let everyone = || logs.iter().chain(std::iter::once(&anonymous));
    let unavailable = everyone().map(|l| l.unavailable.len()).sum::<usize>();
    let in_outage: Vec<Duration> = everyone()
        .flat_map(|l| &l.unavailable)
        .filter(|(sent, _)| *sent >= down && *sent < up)
        .map(|(_, latency)| *latency)
        .collect();
    if kind != Kind::RedisCluster {
        ensure!(
            !in_outage.is_empty(),
            "no request was answered 503 while the server was down ({what})"
        );
    }
    let measured = Measured {
        all_usable,
        all_answered,
        stale_rows_cleared,
        unavailable,
        unavailable_in_outage: in_outage.len(),
        slowest_503: in_outage.iter().copied().max().unwrap_or_default(),
        slowest: everyone().map(|l| l.slowest).max().unwrap_or_default(),
        acked: logs.iter().map(|l| l.acked).sum(),
        lost,
        rejected: logs.iter().map(|l| l.rejected).sum(),
    };
    eprintln!(
        "{label} run {n}: {what}; all {CLIENTS} sessions usable {:?} after the restart \
         (every client answered 200 after {:?}){}; 503s {} ({} sent while down, slowest {:?}); \
         slowest request {:?} (bound {BOUND:?}); {} increments acknowledged, {} lost, {} \
         rejected (409: lock gone)",
        measured.all_usable,
        measured.all_answered,
        measured
            .stale_rows_cleared
            .map(|d| format!("; no row locked from before the restart after {d:?}"))
            .unwrap_or_default(),
        measured.unavailable,
        measured.unavailable_in_outage,
        measured.slowest_503,
        measured.slowest,
        measured.acked,
        measured.lost,
        measured.rejected,
    );
    drop((a, b));
    Ok(measured)
}

// ---------------------------------------------------------------------------------------------
// The scenarios.

/// How many Postgres crash runs in a row: `FAULT_RUNS`, default 10 (issue 14's "done when").
fn postgres_runs() -> usize {
    std::env::var("FAULT_RUNS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(10)
}

async fn redis_kill_9(_: test_support::Redis) -> TestResult {
    let redis = blocking(PrivateRedis::new);
    let mut target = Target::Single(Box::new(redis), Duration::from_secs(2));
    run(Kind::Redis, "redis", &mut target, 1).await?;
    Ok(())
}

async fn postgres_immediate_stop(cluster: test_support::PostgresCluster) -> TestResult {
    let bin = cluster.bin().to_owned();
    let pg = blocking(|| PrivatePostgres::new(&bin));
    let mut target = Target::Single(Box::new(pg), Duration::from_secs(3));
    let runs = postgres_runs();
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    for i in 1..=runs {
        let m = run(Kind::Postgres, "postgres", &mut target, i).await?;
        worst = worst
            .max(m.all_usable)
            .max(m.stale_rows_cleared.unwrap_or_default());
    }
    eprintln!(
        "postgres: {runs} crash runs in {:?}; the longest any session stayed locked after a \
         restart: {worst:?} (limit {USABLE_WITHIN:?})",
        started.elapsed()
    );
    Ok(())
}

async fn mariadb_kill_9(_: test_support::SqlServer) -> TestResult {
    let my = blocking(PrivateMariadb::new);
    let mut target = Target::Single(Box::new(my), Duration::from_secs(2));
    run(Kind::Mariadb, "mariadb", &mut target, 1).await?;
    Ok(())
}

async fn cluster_master_killed(_: test_support::RedisCluster) -> TestResult {
    let cluster = blocking(PrivateRedisCluster::new);
    let mut target = Target::Cluster(cluster);
    run(Kind::RedisCluster, "redis-cluster", &mut target, 1).await?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let mut args = libtest_mimic::Arguments::from_args();
    {
        use tracing_subscriber::layer::SubscriberExt;
        let _ =
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Errors));
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    // Timing bounds on a 2-core machine: one scenario at a time.
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let trials = vec![
        test_support::trial(
            "redis::kill_9_under_load",
            test_support::redis(),
            redis_kill_9,
        ),
        test_support::trial(
            "postgres::immediate_stop_under_load",
            test_support::postgres_cluster(),
            postgres_immediate_stop,
        ),
        test_support::trial(
            "mysql::kill_9_under_load",
            test_support::mysql(),
            mariadb_kill_9,
        ),
        test_support::trial(
            "redis-cluster::master_killed_under_load",
            test_support::redis_cluster(),
            cluster_master_killed,
        ),
    ];
    libtest_mimic::run(&args, trials).exit_code()
}
