//! Fast failure during an outage (issue 14), against servers these tests start and stop themselves:
//! a private Postgres cluster (`initdb` in a temporary directory, `pg_ctl -m immediate stop`) and a
//! private MariaDB instance (`mariadb-install-db`, `kill -9`), each on a free port. The shared
//! servers of the other tests are never stopped.
//!
//! While the server is down, every store operation fails with [`Error::Unavailable`] within the
//! connection timeout plus a margin (a bound on a timeout, not a speed claim), whether the pool
//! held (dead) connections or none; a server that accepts connections but never answers fails
//! them within the connection timeout too. Once the server is back, the next attempt succeeds:
//! a store without retries needs no second try, and one under the retry layer recovers within one
//! retry interval of the restart.
//!
//! Run when the Postgres (`SESSION_TEST_POSTGRES_BIN`, for `initdb`/`pg_ctl`) or MySQL
//! (`SESSION_TEST_MYSQL_URL`, then `mariadbd`/`mariadb-install-db` on the `PATH`) variant is
//! configured, as the other SQL tests are (test-support's require-or-ignore rule). As root (CI),
//! the servers run as the `postgres` and `mysql` users, as scripts/sql/start.sh runs them. The
//! servers are test-support's (`test_support::private`), shared with the HTTP fault tests.

use std::time::{Duration, Instant};

use backend_sql::{SqlOptions, SqlStore};
use session_core::{
    AcquireOutcome, AppName, Config, CreateOutcome, Error, ItemValue, Items, Layered, LockToken,
    ReadOutcome, RetryLayer, RetryPolicy, SessionId, SessionKey, SessionStore,
};
use test_support::private::Private;
#[cfg(feature = "mysql")]
use test_support::private::PrivateMariadb;
#[cfg(feature = "postgres")]
use test_support::private::PrivatePostgres;

/// `connectionTimeoutInMilliseconds` of the stores under test: far below the pool's acquire
/// timeout (10 s by default), so that a wait for the latter shows.
const CONNECT: Duration = Duration::from_secs(2);

/// The bound every failing operation must meet: the connection timeout plus a generous margin
/// for a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(3);

fn key() -> SessionKey {
    SessionKey::new(
        AppName::new("/outage").unwrap(),
        SessionId::generate().unwrap(),
    )
}

fn items() -> Items {
    let mut items = Items::new();
    items.insert("n".to_owned(), ItemValue::from_bytes(b"1".to_vec()));
    items
}

async fn connect(url: &str, migrate: bool) -> SqlStore {
    let config = Config::builder()
        .url(url)
        .connection_timeout(Some(CONNECT))
        .build()
        .unwrap();
    // The pool acquire timeout stays at its default (10 s): the bound is the connection timeout.
    let options = SqlOptions::new().with_sweeper(None).with_migrate(migrate);
    SqlStore::connect_with(&config, options).await.unwrap()
}

/// Runs `op` and checks that it failed with `Unavailable` within [`BOUND`]; answers how long it
/// took.
async fn fails_fast<T: std::fmt::Debug>(
    what: &str, op: impl std::future::Future<Output = session_core::Result<T>>,
) -> Duration {
    let started = Instant::now();
    let result = op.await;
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(Error::Unavailable { .. })),
        "{what}: expected Unavailable, got {result:?} after {elapsed:?}"
    );
    assert!(
        elapsed < BOUND,
        "{what}: failed after {elapsed:?}, not within {BOUND:?}"
    );
    elapsed
}

/// Every kind of operation on `store` fails fast, one after another and eight at once.
async fn all_fail_fast(label: &str, store: &SqlStore, existing: &SessionKey) -> Duration {
    let mut worst = Duration::ZERO;
    for round in 0..3 {
        let what = |op: &str| format!("{label} {op} #{round}");
        worst = worst.max(fails_fast(&what("read"), store.read(existing)).await);
        let (fresh, items) = (key(), items());
        let create = store.create(&fresh, &items, Duration::from_secs(600), true);
        worst = worst.max(fails_fast(&what("create"), create).await);
        let token = LockToken::generate().unwrap();
        let acquire = store.acquire(existing, token, Duration::from_secs(60));
        worst = worst.max(fails_fast(&what("acquire"), acquire).await);
        worst = worst.max(fails_fast(&what("touch"), store.touch(existing)).await);
    }
    let at_once = (0..8).map(|i| {
        let store = store.clone();
        let existing = existing.clone();
        let what = format!("{label} concurrent read {i}");
        tokio::spawn(async move { fails_fast(&what, store.read(&existing)).await })
    });
    for task in at_once.collect::<Vec<_>>() {
        worst = worst.max(task.await.unwrap());
    }
    worst
}

async fn found(store: &SqlStore, k: &SessionKey) {
    match store.read(k).await {
        Ok(ReadOutcome::Found(snap)) => assert_eq!(snap.items.len(), 1),
        other => panic!("expected the session back, got {other:?}"),
    }
}

/// The whole scenario on one server.
async fn outage(name: &str, server: &mut dyn Private) {
    let url = server.url();
    // `warm`: a pool with several idle connections when the server goes down (they die with it).
    // `cold`: an empty pool (no migrations: the connect check's connection is closed), so that
    // every operation has to connect, as the first one after the pool's idle timeout does.
    let warm = connect(&url, true).await;
    let cold = connect(&url, false).await;
    let k = key();
    let created = warm
        .create(&k, &items(), Duration::from_secs(600), true)
        .await;
    assert_eq!(created.unwrap(), CreateOutcome::Created);
    let reads: Vec<_> = (0..4)
        .map(|_| {
            let (warm, k) = (warm.clone(), k.clone());
            tokio::spawn(async move { warm.read(&k).await })
        })
        .collect();
    for r in reads {
        let r = r.await.unwrap();
        assert!(matches!(r, Ok(ReadOutcome::Found(_))), "{r:?}");
    }

    // ---- down: every operation fails fast, typed and transient.
    server.stop();
    let worst_warm = all_fail_fast(&format!("{name} warm"), &warm, &k).await;
    let worst_cold = all_fail_fast(&format!("{name} cold"), &cold, &k).await;
    eprintln!("{name}: server down: worst failure warm {worst_warm:?}, cold {worst_cold:?}");

    // ---- with retries: an operation begun during the outage succeeds once the server is back,
    // within one retry interval of the restart.
    let resilient = Layered::new(
        warm.clone(),
        RetryLayer::new(RetryPolicy::new(Duration::from_secs(20)), None),
    );
    let k2 = k.clone();
    let retried = tokio::spawn(async move {
        let r = resilient.read(&k2).await;
        (r, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!retried.is_finished(), "the retried read gave up early");
    server.start();
    let back = Instant::now();
    let (r, done) = retried.await.unwrap();
    assert!(matches!(r, Ok(ReadOutcome::Found(_))), "{r:?}");
    let recovery = done.saturating_duration_since(back);
    eprintln!("{name}: retried read answered {recovery:?} after the restart");
    assert!(
        recovery < RetryPolicy::INTERVAL + Duration::from_millis(500),
        "{recovery:?}"
    );

    // ---- back: the next attempt succeeds, without a retry, on both pools.
    found(&cold, &k).await;
    found(&warm, &k).await;
    let created = cold
        .create(&key(), &items(), Duration::from_secs(600), true)
        .await;
    assert_eq!(created.unwrap(), CreateOutcome::Created);
    let token = LockToken::generate().unwrap();
    let acquired = warm.acquire(&k, token, Duration::from_secs(60)).await;
    assert!(
        matches!(acquired, Ok(AcquireOutcome::Acquired(_))),
        "{acquired:?}"
    );
    warm.release(&k, token).await.unwrap();

    // ---- frozen: the server accepts connections but never answers. A store that has to
    // connect fails within the connection timeout, not the pool's acquire timeout.
    let fresh = connect(&url, false).await;
    server.freeze();
    let mut worst_frozen = Duration::ZERO;
    for round in 0..2 {
        let what = format!("{name} frozen read #{round}");
        worst_frozen = worst_frozen.max(fails_fast(&what, fresh.read(&k)).await);
    }
    eprintln!("{name}: server frozen: worst failure {worst_frozen:?}");
    assert!(
        worst_frozen >= CONNECT / 2,
        "{worst_frozen:?}: not the timeout?"
    );
    server.thaw();
    let started = Instant::now();
    found(&fresh, &k).await;
    eprintln!("{name}: thawed: answered in {:?}", started.elapsed());
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_fails_fast_and_recovers() {
    let Some(cluster) = test_support::configured(test_support::postgres_cluster()) else {
        return;
    };
    let bin = cluster.bin().to_owned();
    let mut pg = tokio::task::spawn_blocking(move || PrivatePostgres::new(&bin))
        .await
        .unwrap();
    outage("postgres", &mut pg).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_outage_fails_fast_and_recovers() {
    if test_support::configured(test_support::mysql()).is_none() {
        return;
    }
    let mut my = tokio::task::spawn_blocking(PrivateMariadb::new)
        .await
        .unwrap();
    outage("mariadb", &mut my).await;
}
