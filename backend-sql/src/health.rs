//! Fast failure during an outage: the database server's health as this store's operations see
//! it, so that while the server cannot be reached every operation fails at once as a transient
//! error ([`session_core::Error::Unavailable`], docs/contract.md §4), instead of waiting in sqlx's
//! pool.
//!
//! Why: sqlx's pool opens its connections inside `acquire`, and reads a refused connection as a
//! server still starting: it tries again, backing off, until the pool's acquire timeout (10 s by
//! default). During an outage an operation that found no idle connection therefore waited that
//! long, or was answered at the restart if that came first.
//!
//! How (Postgres and MySQL/MariaDB; SQLite has no server):
//! - An operation takes an idle connection when there is one, without waiting or probing.
//! - A connection lost under an operation (an I/O error, the server going away) makes the server
//!   *suspect*: the idle connections are closed (if the server restarted, they died with it) and
//!   the next operation probes.
//! - A *probe* is one connection of this module's own, opened with the store's connect options
//!   within the connection timeout (`connectionTimeoutInMilliseconds`), then closed. One runs at
//!   a time: the operations that need an answer while it runs share it. Refused, reset, timed out
//!   or the server saying it cannot take connections now: *down* (the idle connections are
//!   closed). Anything else, a login refused included, is *up*: the pool reports that error
//!   itself.
//! - While the server is suspect or down, each operation probes first: it fails at once with the
//!   probe's error while the server is down, and the first one after the restart goes through.
//! - An operation that has to wait in the pool (no idle connection) waits for the first of: its
//!   connection; the server found down by any probe or made suspect by a lost connection (then it
//!   probes); or, once it has waited [`QUIET`] and the server has answered nothing for as long, a
//!   probe of its own (one per wait), which ends the wait if the server is down. Under load,
//!   replies keep coming, so a wait for a busy pool probes nothing and the pool's acquire timeout
//!   still bounds it.
//!
//! Bounds: a refused connection fails an operation at once (one connection attempt; [`QUIET`]
//! more for the first operation after a server died unnoticed, with no idle connection); a server
//! that accepts connections but never answers, within the connection timeout (plus [`QUIET`]).
//! An operation already running on a connection whose server stops answering is bounded by the
//! operation timeout, which the manager's retry layer enforces.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{ConnectOptions as _, Connection as _, Pool};
use tokio::sync::watch;

use crate::error::{connection_lost, server_going_away};
use crate::routines::ConnectOptions;

/// How long an operation waits in the pool, with the server answering nothing meanwhile, before
/// it probes the server: long enough that opening a pooled connection normally ends the wait first,
/// short enough that a server that died unnoticed fails the operation at once.
pub(crate) const QUIET: Duration = Duration::from_millis(50);

/// The server's health, shared by the clones of one store.
pub(crate) struct Health<DB: sqlx::Database> {
    shared: Arc<Shared<DB>>,
}

struct Shared<DB: sqlx::Database> {
    pool: Pool<DB>,
    /// Probes connect with these, as the pool does.
    connect: ConnectOptions<DB>,
    /// `connectionTimeoutInMilliseconds`: bounds each probe.
    timeout: Duration,
    state: watch::Sender<State>,
    /// The origin of `answered_at`.
    epoch: Instant,
    /// When the server last answered (an operation's reply or a probe), in milliseconds since
    /// `epoch`.
    answered_at: AtomicU64,
}

#[derive(Clone, Debug)]
struct State {
    status: Status,
    /// A probe is running; its result will replace `status`.
    probing: bool,
}

#[derive(Clone, Debug)]
enum Status {
    Up,
    /// A connection was lost under an operation: probe before trusting the server.
    Suspect,
    /// The last probe could not connect.
    Down(Arc<Unreachable>),
}

/// Why the last probe found the server down.
#[derive(Debug)]
struct Unreachable {
    kind: std::io::ErrorKind,
    what: String,
}

impl Unreachable {
    /// The error of an operation failed because of it: an I/O error, which the store classifies
    /// as `Unavailable`.
    fn error(&self) -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::new(
            self.kind,
            format!("the database server cannot be reached: {}", self.what),
        ))
    }
}

impl<DB: sqlx::Database> fmt::Debug for Health<DB> {
    /// The status only: the connect options hold the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.borrow();
        f.debug_struct("Health")
            .field("status", &state.status)
            .field("probing", &state.probing)
            .finish()
    }
}

impl<DB: sqlx::Database> Health<DB> {
    /// The health of the server behind `pool`, probed with `connect` within `timeout`. Up: the
    /// store has just connected.
    pub(crate) fn new(pool: Pool<DB>, connect: ConnectOptions<DB>, timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                pool,
                connect,
                timeout,
                state: watch::Sender::new(State {
                    status: Status::Up,
                    probing: false,
                }),
                epoch: Instant::now(),
                answered_at: AtomicU64::new(0),
            }),
        }
    }

    /// A pooled connection for one operation (see the module docs).
    ///
    /// # Errors
    /// The probe's error (an I/O error) while the server is down; the pool's errors otherwise
    /// (`PoolTimedOut` after its acquire timeout, `PoolClosed` after `SqlStore::close`).
    pub(crate) async fn connection(&self) -> Result<PoolConnection<DB>, sqlx::Error> {
        let pool = &self.shared.pool;
        if pool.is_closed() {
            return Err(sqlx::Error::PoolClosed);
        }
        if !matches!(self.shared.state.borrow().status, Status::Up) {
            self.probe().await?;
        }
        if let Some(conn) = pool.try_acquire() {
            return Ok(conn);
        }
        let waiting = Instant::now();
        let acquired = tokio::select! {
            biased;
            conn = pool.acquire() => conn,
            down = self.watch(waiting) => Err(down),
        };
        // The pool fails a connection attempt at once on anything but a refusal (a reset during
        // the handshake, the server going away).
        if acquired.as_ref().is_err_and(connection_lost) {
            self.suspect();
        }
        acquired
    }

    /// Takes note of what `result`, an operation's outcome on `conn`, says about the server, and
    /// gives `conn` back (or, when it was lost, closes it).
    pub(crate) fn after<T>(&self, conn: PoolConnection<DB>, result: &Result<T, sqlx::Error>) {
        match result {
            Err(e) if connection_lost(e) => {
                // Dead: not worth the pool's ping on return.
                drop(conn.detach());
                self.suspect();
            }
            // A reply, even an error, is the server answering.
            _ => self.shared.record_answer(),
        }
    }

    /// A connection was lost: probe before the next operation, and close the idle connections.
    fn suspect(&self) {
        self.shared.state.send_if_modified(|s| match s.status {
            Status::Up => {
                s.status = Status::Suspect;
                true
            }
            Status::Suspect | Status::Down(_) => false,
        });
        self.shared.close_idle();
    }

    /// Probes the server, or waits for the probe already running, and answers its result.
    async fn probe(&self) -> Result<(), sqlx::Error> {
        let mut rx = self.shared.state.subscribe();
        let mut claimed = false;
        self.shared.state.send_if_modified(|s| {
            claimed = !s.probing;
            s.probing = true;
            claimed
        });
        if claimed {
            // A task of its own: the probe outlives an operation abandoned meanwhile, so that the
            // others never wait for a result that will not come.
            tokio::spawn(Arc::clone(&self.shared).probe());
        }
        loop {
            {
                let state = rx.borrow_and_update();
                if !state.probing {
                    return match &state.status {
                        Status::Down(why) => Err(why.error()),
                        Status::Up | Status::Suspect => Ok(()),
                    };
                }
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self.shared`: unreachable while `self` is borrowed.
                return Err(sqlx::Error::PoolClosed);
            }
        }
    }

    /// While an operation waits in the pool since `waiting`: answers the error that ends the wait
    /// when the server is found down, and never otherwise.
    async fn watch(&self, waiting: Instant) -> sqlx::Error {
        let mut rx = self.shared.state.subscribe();
        let mut probed = false;
        loop {
            let status = rx.borrow_and_update().status.clone();
            match status {
                Status::Down(why) => return why.error(),
                Status::Suspect => {
                    probed = true;
                    if let Err(e) = self.probe().await {
                        return e;
                    }
                    // Up, or suspect again because another connection was lost meanwhile.
                    if matches!(rx.borrow_and_update().status, Status::Suspect) {
                        continue;
                    }
                }
                Status::Up if !probed => {
                    let due = self.shared.last_answer().max(waiting) + QUIET;
                    if Instant::now() >= due {
                        probed = true;
                        if let Err(e) = self.probe().await {
                            return e;
                        }
                        continue;
                    }
                    tokio::select! {
                        () = tokio::time::sleep_until(due.into()) => continue,
                        changed = rx.changed() => if changed.is_err() {
                            return std::future::pending().await;
                        },
                    }
                    continue;
                }
                Status::Up => {}
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

impl<DB: sqlx::Database> Shared<DB> {
    /// Records that the server answered now.
    fn record_answer(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        // A write only once per millisecond: every operation comes by here.
        if ms > self.answered_at.load(Ordering::Relaxed) {
            self.answered_at.fetch_max(ms, Ordering::Relaxed);
        }
    }

    /// When the server last answered (an operation's reply or a probe).
    fn last_answer(&self) -> Instant {
        self.epoch + Duration::from_millis(self.answered_at.load(Ordering::Relaxed))
    }

    /// Closes every idle connection (a lost connection or a failed probe says they are likely
    /// dead). Connections in use are left to their operations.
    fn close_idle(&self) {
        while let Some(mut conn) = self.pool.try_acquire() {
            conn.close_on_drop();
        }
    }

    /// One probe: connects within the timeout, publishes the result, closes the connection.
    async fn probe(self: Arc<Self>) {
        // Even if this task never finishes (its runtime shut down), the operations waiting for
        // its result must not wait forever: they then find the status as it was.
        let _finished = Finished(&self);
        let outcome = tokio::time::timeout(self.timeout, self.connect.connect()).await;
        let (status, conn) = match outcome {
            Ok(Ok(conn)) => (Status::Up, Some(conn)),
            Ok(Err(e)) => match unreachable(&e) {
                Some(why) => (Status::Down(Arc::new(why)), None),
                None => (Status::Up, None),
            },
            Err(_) => {
                let why = Unreachable {
                    kind: std::io::ErrorKind::TimedOut,
                    what: format!(
                        "no connection within {:?} (connectionTimeoutInMilliseconds)",
                        self.timeout
                    ),
                };
                (Status::Down(Arc::new(why)), None)
            }
        };
        match status {
            Status::Down(ref why) => {
                tracing::debug!(error = %why.what, "database server probe failed: down");
                self.close_idle();
            }
            _ => self.record_answer(),
        }
        self.state.send_modify(|s| {
            s.probing = false;
            s.status = status;
        });
        if let Some(conn) = conn {
            // Politely; a failure changes nothing.
            let _ = conn.close().await;
        }
    }
}

/// Clears the `probing` flag when a probe task ends, however it ends (a no-op once the probe has
/// published its result).
struct Finished<'a, DB: sqlx::Database>(&'a Shared<DB>);

impl<DB: sqlx::Database> Drop for Finished<'_, DB> {
    fn drop(&mut self) {
        self.0
            .state
            .send_if_modified(|s| std::mem::replace(&mut s.probing, false));
    }
}

/// Why a probe's connection failed, if that means the server cannot be reached: refused, reset or
/// any other I/O failure but a TLS handshake's (rustls: `InvalidData`, a configuration problem),
/// or the server saying it cannot take connections now (shutting down, starting up).
fn unreachable(err: &sqlx::Error) -> Option<Unreachable> {
    match err {
        sqlx::Error::Io(io) if io.kind() != std::io::ErrorKind::InvalidData => Some(Unreachable {
            kind: io.kind(),
            what: io.to_string(),
        }),
        sqlx::Error::Database(db) if server_going_away(db.as_ref()) => Some(Unreachable {
            kind: std::io::ErrorKind::ConnectionRefused,
            what: db.to_string(),
        }),
        _ => None,
    }
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use std::str::FromStr;

    use sqlx::pool::PoolOptions;
    use sqlx::postgres::{PgConnectOptions, Postgres};

    use super::*;

    /// A health over a lazy pool to `port` on 127.0.0.1, whose own acquire timeout (30 s) is far
    /// above the connection timeout (300 ms).
    fn health(port: u16) -> Health<Postgres> {
        let connect = PgConnectOptions::from_str(&format!(
            "postgres://u:pw@127.0.0.1:{port}/db?sslmode=disable"
        ))
        .unwrap();
        let pool = PoolOptions::<Postgres>::new()
            .acquire_timeout(Duration::from_secs(30))
            .connect_lazy_with(connect.clone());
        Health::new(pool, connect, Duration::from_millis(300))
    }

    /// A port where nothing listens.
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// A refused connection fails the operation at once (the first after [`QUIET`], the next ones
    /// without waiting), as an I/O error, where sqlx's pool alone would try until its acquire
    /// timeout.
    #[tokio::test]
    async fn a_refused_server_fails_at_once() {
        let health = health(closed_port());
        for round in 0..3 {
            let started = Instant::now();
            let err = health.connection().await.unwrap_err();
            let elapsed = started.elapsed();
            assert!(matches!(err, sqlx::Error::Io(_)), "{err:?}");
            assert!(elapsed < Duration::from_secs(1), "#{round}: {elapsed:?}");
            if round > 0 {
                assert!(elapsed < QUIET, "#{round}: known down, yet {elapsed:?}");
            }
            let msg = err.to_string();
            assert!(msg.contains("cannot be reached"), "{msg}");
        }
        assert!(format!("{health:?}").contains("Down"));
        // Many at once share the probes and fail together.
        let started = Instant::now();
        let all = (0..16).map(|_| health.connection());
        for result in futures_join(all).await {
            assert!(matches!(result, Err(sqlx::Error::Io(_))));
        }
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    /// A server that accepts connections and never answers fails the operation within the
    /// connection timeout, not the pool's acquire timeout.
    #[tokio::test]
    async fn a_silent_server_fails_within_the_connection_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let health = health(port);
        let started = Instant::now();
        let err = health.connection().await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            matches!(&err, sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut),
            "{err:?}"
        );
        assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        silent.abort();
    }

    /// Awaits all of `futs` concurrently, in order.
    async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
        let mut futs: Vec<_> = futs.map(Box::pin).collect();
        let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (f, out) in futs.iter_mut().zip(outs.iter_mut()) {
                if out.is_none() {
                    match f.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => *out = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        outs.into_iter().flatten().collect()
    }
}
