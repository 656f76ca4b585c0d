//! The near cache (docs/contract.md §2) against real servers: hits cost no command, two store
//! instances (two processes' worth of connections) never see a stale read, a killed invalidation
//! connection or a `FLUSHDB` empties the cache before the next read is answered, and the memory
//! bound holds. The generic two-instance behaviours run in the conformance target
//! (`near::...::shared::...`).

use std::sync::Arc;
use std::time::Duration;

use backend_redis::redis;
use backend_redis::{NearCacheLimits, RedisOptions, RedisStore};
use session_core::{
    AppName, Config, CreateOutcome, Delta, Error, Items, LockToken, ReadOutcome, SessionId,
    SessionKey, SessionStore, encode_value,
};
use test_support::{Failed, TestResult, ensure, fail, trial};

macro_rules! failed {
    ($($msg:tt)+) => { fail(format!($($msg)+)) };
}

const LONG: Duration = Duration::from_secs(600);

fn key(name: &str) -> Result<SessionKey, Failed> {
    let app = AppName::new(&format!(
        "/near-tests/{name}/{}",
        SessionId::generate()?.expose()
    ))?;
    Ok(SessionKey::new(app, SessionId::generate()?))
}

fn items(n: u32) -> Items {
    let mut items = Items::new();
    if let Ok(value) = encode_value("n", &n) {
        items.insert("n".into(), value);
    }
    items
}

async fn near(url: &str, options: RedisOptions) -> Result<RedisStore, Failed> {
    let config = Config::builder().url(url).near_cache(true).build()?;
    Ok(RedisStore::connect_with(&config, options).await?)
}

fn n_of(outcome: &ReadOutcome) -> Option<u32> {
    match outcome {
        ReadOutcome::Found(s) => s
            .items
            .get("n")
            .and_then(|v| session_core::decode_value::<u32>("n", v).ok()),
        _ => None,
    }
}

async fn commit_n(store: &RedisStore, key: &SessionKey, n: u32) -> TestResult {
    let token = LockToken::generate()?;
    match store.acquire(key, token, LONG).await? {
        session_core::AcquireOutcome::Acquired(..) => {}
        other => return Err(failed!("acquire: {other:?}")),
    }
    let mut delta = Delta::default();
    delta.set.extend(items(n));
    store.commit(key, token, &delta, LONG).await?;
    Ok(())
}

/// `CLIENT KILL ID id`, from an admin connection of its own.
async fn kill_client(url: &str, id: u64) -> TestResult {
    let mut admin = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(&mut admin)
        .await?;
    Ok(())
}

async fn evalsha_calls(url: &str) -> Result<u64, Failed> {
    let mut raw = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut raw)
        .await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

/// A repeated read is answered from memory: the same data, no command sent, a hit counted.
async fn hits_send_nothing(url: String) -> TestResult {
    let store = near(&url, RedisOptions::new()).await?;
    let key = key("hits")?;
    ensure!(
        matches!(
            store.create(&key, &items(7), LONG, true).await?,
            CreateOutcome::Created
        ),
        "create"
    );
    // The first read asks the server to track the application, the second keeps a copy.
    ensure!(n_of(&store.read(&key).await?) == Some(7), "first read");
    ensure!(n_of(&store.read(&key).await?) == Some(7), "second read");
    let before = evalsha_calls(&url).await?;
    for _ in 0..20 {
        ensure!(n_of(&store.read(&key).await?) == Some(7), "cached read");
    }
    let after = evalsha_calls(&url).await?;
    let stats = store
        .near_cache_stats()
        .ok_or_else(|| failed!("no stats"))?;
    ensure!(stats.hits >= 20, "hits: {stats:?}");
    ensure!(stats.entries >= 1 && stats.bytes > 0, "{stats:?}");
    // Other tests may run scripts meanwhile on the shared server; this store ran none.
    ensure!(
        after - before < 20,
        "the cached reads ran scripts: {before} -> {after}"
    );
    let plain = test_support::open_redis(&url, RedisOptions::new()).await?;
    ensure!(
        plain.near_cache_stats().is_none() && plain.near_cache_client_ids().is_empty(),
        "a store without the setting has no near cache"
    );
    store.delete(&key).await?;
    Ok(())
}

/// Writes through another instance are seen by the next read here, whatever they did.
async fn other_instance_writes_are_seen(url: String) -> TestResult {
    let reader = near(&url, RedisOptions::new()).await?;
    let writer = near(&url, RedisOptions::new()).await?;
    let key = key("two")?;
    writer.create(&key, &items(1), LONG, false).await?;
    for n in 2..40u32 {
        // Read twice: the second is a hit, so a missed invalidation would show as a stale value.
        reader.read(&key).await?;
        ensure!(
            n_of(&reader.read(&key).await?) == Some(n - 1),
            "before write {n}"
        );
        commit_n(&writer, &key, n).await?;
        ensure!(
            n_of(&reader.read(&key).await?) == Some(n),
            "after write {n}: stale"
        );
    }
    let token = LockToken::generate()?;
    reader.read(&key).await?;
    writer.acquire(&key, token, LONG).await?;
    match reader.read(&key).await? {
        ReadOutcome::Locked(info) if info.token == token => {}
        other => return Err(failed!("a lock taken elsewhere reads {other:?}")),
    }
    writer.release(&key, token).await?;
    ensure!(n_of(&reader.read(&key).await?) == Some(39), "after release");
    writer.delete(&key).await?;
    ensure!(
        matches!(reader.read(&key).await?, ReadOutcome::Missing),
        "deleted elsewhere"
    );
    let stats = reader
        .near_cache_stats()
        .ok_or_else(|| failed!("no stats"))?;
    ensure!(stats.hits >= 38 && stats.invalidations >= 38, "{stats:?}");
    Ok(())
}

/// A killed invalidation connection empties the cache before the next read is answered, and
/// the connection comes back.
async fn killed_channel_empties_the_cache(url: String) -> TestResult {
    let reader = near(&url, RedisOptions::new()).await?;
    let writer = test_support::open_redis(&url, RedisOptions::new()).await?;
    let key = key("kill")?;
    writer.create(&key, &items(1), LONG, false).await?;
    for round in 0..3u32 {
        reader.read(&key).await?;
        ensure!(
            n_of(&reader.read(&key).await?) == Some(round + 1),
            "round {round}: cached value"
        );
        let ids = reader.near_cache_client_ids();
        ensure!(ids.len() == 1, "round {round}: ids {ids:?}");
        kill_client(&url, ids[0]).await?;
        // Written by a store without a near cache: the killed connection would have carried the
        // invalidation, so only the lost connection itself can prevent a stale read.
        commit_n(&writer, &key, round + 2).await?;
        ensure!(
            n_of(&reader.read(&key).await?) == Some(round + 2),
            "round {round}: stale read after CLIENT KILL"
        );
        // The connection is back within a moment, and copies are kept again.
        let mut back = false;
        for _ in 0..100 {
            if reader
                .near_cache_client_ids()
                .first()
                .is_some_and(|id| *id != ids[0])
            {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ensure!(
            back,
            "round {round}: the invalidation connection did not come back"
        );
    }
    let stats = reader
        .near_cache_stats()
        .ok_or_else(|| failed!("no stats"))?;
    ensure!(stats.flushes >= 3, "{stats:?}");
    writer.delete(&key).await?;
    Ok(())
}

/// `FLUSHDB` (of any database) empties the cache before the next read is answered.
async fn flush_empties_the_cache(redis: test_support::Redis) -> TestResult {
    let url = redis.database(9);
    let reader = near(&url, RedisOptions::new()).await?;
    let key = key("flush")?;
    reader.create(&key, &items(5), LONG, false).await?;
    reader.read(&key).await?;
    ensure!(n_of(&reader.read(&key).await?) == Some(5), "cached value");
    let mut admin = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let flushes = reader.near_cache_stats().unwrap_or_default().flushes;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut admin).await?;
    // Redis sends the flush's `invalidate null` while running FLUSHDB, and writes the caller's
    // reply first: the notice reaches this process a moment after the reply (backend-redis
    // README, "Near cache"). Once it has, no read is answered from memory.
    let mut noticed = false;
    for _ in 0..200 {
        if reader.near_cache_stats().unwrap_or_default().flushes > flushes {
            noticed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ensure!(noticed, "the flush was never noticed");
    ensure!(
        matches!(reader.read(&key).await?, ReadOutcome::Missing),
        "a flushed session was answered from memory"
    );
    Ok(())
}

/// The cache never holds more than its bound, in entries and in bytes.
async fn memory_is_bounded(url: String) -> TestResult {
    let by_entries = near(
        &url,
        RedisOptions::new().with_near_cache_limits(NearCacheLimits::new(32, 1 << 30)),
    )
    .await?;
    let by_bytes = near(
        &url,
        RedisOptions::new().with_near_cache_limits(NearCacheLimits::new(100_000, 64 * 1024)),
    )
    .await?;
    let mut big = Items::new();
    big.insert("blob".into(), encode_value("blob", &"x".repeat(2000))?);
    let first = key("bound")?;
    let mut keys = Vec::new();
    for i in 0..200u32 {
        let key = first.with_id(SessionId::generate()?);
        let items = if i % 2 == 0 { items(i) } else { big.clone() };
        by_entries.create(&key, &items, LONG, false).await?;
        for store in [&by_entries, &by_bytes] {
            store.read(&key).await?;
            store.read(&key).await?;
        }
        keys.push(key);
    }
    let e = by_entries
        .near_cache_stats()
        .ok_or_else(|| failed!("no stats"))?;
    ensure!(e.entries <= 32 && e.evictions > 0, "{e:?}");
    let b = by_bytes
        .near_cache_stats()
        .ok_or_else(|| failed!("no stats"))?;
    ensure!(b.bytes <= 64 * 1024 && b.evictions > 0, "{b:?}");
    for key in keys {
        by_entries.delete(&key).await?;
    }
    Ok(())
}

/// What a server without tracking, or over TLS, gets: a clear error at connect.
async fn unsupported_setups_are_refused(url: String) -> TestResult {
    let tls = Config::from_url("rediss://127.0.0.1:1?nearCache=true")?;
    match RedisStore::connect(&tls).await {
        Err(Error::InvalidConfig { .. }) => {}
        other => return Err(failed!("near cache over TLS: {:?}", other.map(|_| ()))),
    }
    // The URL parameter alone switches it on.
    let store = RedisStore::connect(&Config::from_url(&format!("{url}?nearCache=true"))?).await?;
    ensure!(
        store.near_cache_stats().is_some(),
        "nearCache=true in the URL"
    );
    ensure!(
        !store.near_cache_client_ids().is_empty(),
        "an invalidation connection"
    );
    Ok(())
}

/// A store opened for `app` (its `applicationName`), as a session manager of that application
/// opens it: the connect returns once every node tracks the application.
async fn near_for(url: &str, app: &AppName) -> Result<RedisStore, Failed> {
    let config = Config::builder()
        .url(url)
        .application_name(app.clone())
        .near_cache(true)
        .build()?;
    Ok(RedisStore::connect_with(&config, RedisOptions::new()).await?)
}

/// Cluster: two instances opened for the application, as its managers open them. Every node
/// (masters and replicas) tracks the application from the connect on, so the reader keeps copies
/// from its first reads, and a write through the other instance, on whichever master, is seen by
/// the next read. An application the stores were not opened for is tracked from its first read on
/// (without waiting: a read is one round trip, docs/contract.md §2): its reads go to the server
/// until every node has confirmed, then they are kept too, and still never stale.
async fn cluster_instances_agree(url: String) -> TestResult {
    let first = key("cluster")?;
    let reader = near_for(&url, first.app()).await?;
    let writer = near_for(&url, first.app()).await?;
    ensure!(
        reader.near_cache_client_ids().len() == 6,
        "{:?}",
        reader.near_cache_client_ids()
    );
    let mut keys = Vec::new();
    for _ in 0..12 {
        let key = first.with_id(SessionId::generate()?);
        // Initialized: the first read of an uninitialized session reports the flag, which writes.
        writer.create(&key, &items(1), LONG, true).await?;
        keys.push(key);
    }
    for key in &keys {
        reader.read(key).await?;
        reader.read(key).await?;
        ensure!(n_of(&reader.read(key).await?) == Some(1), "cached value");
        commit_n(&writer, key, 2).await?;
        ensure!(
            n_of(&reader.read(key).await?) == Some(2),
            "stale read on a cluster"
        );
    }
    let stats = reader
        .near_cache_stats()
        .ok_or_else(|| failed!("no stats"))?;
    // Two per session, less any placeholder a late invalidation of the create took.
    ensure!(stats.hits >= 12, "{stats:?}");

    // Another application: kept once all six nodes confirmed tracking it (bounded: 5 s).
    let other = key("cluster-other")?;
    writer.create(&other, &items(1), LONG, true).await?;
    let mut kept = false;
    for _ in 0..250 {
        ensure!(
            n_of(&reader.read(&other).await?) == Some(1),
            "another application's value"
        );
        let now = reader.near_cache_stats().unwrap_or_default();
        if now.hits > stats.hits {
            kept = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(kept, "another application's reads were never kept");
    commit_n(&writer, &other, 2).await?;
    ensure!(
        n_of(&reader.read(&other).await?) == Some(2),
        "stale read of another application"
    );
    for key in keys.iter().chain([&other]) {
        writer.delete(key).await?;
    }
    Ok(())
}

/// The reader's runtime is blocked (its reactor not polled) while another thread writes, and while
/// the reader's invalidation connection is killed: the next read still sees what reached this
/// machine, because a lookup reads the invalidation socket itself, not the reactor's last word.
fn blocked_reader_sees_what_arrived(url: String) -> TestResult {
    let reader_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let writer_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let reader = reader_rt.block_on(near(&url, RedisOptions::new()))?;
    let writer = writer_rt.block_on(test_support::open_redis(&url, RedisOptions::new()))?;
    let key = key("blocked")?;
    writer_rt.block_on(writer.create(&key, &items(1), LONG, true))?;
    let settle = Duration::from_millis(50);
    for n in 2..8u32 {
        reader_rt.block_on(async {
            reader.read(&key).await?;
            ensure!(n_of(&reader.read(&key).await?) == Some(n - 1), "cached {n}");
            Ok::<(), Failed>(())
        })?;
        if n % 2 == 0 {
            // A change by another process (a plain store: its invalidation is broadcast).
            writer_rt.block_on(commit_n(&writer, &key, n))?;
        } else {
            // The invalidation connection killed, then a change nobody will announce to us.
            let ids = reader.near_cache_client_ids();
            ensure!(ids.len() == 1, "ids {ids:?}");
            writer_rt.block_on(async {
                kill_client(&url, ids[0]).await?;
                commit_n(&writer, &key, n).await
            })?;
        }
        // The reader's thread sleeps: nothing drives its reactor (blocking on purpose: this
        // thread is outside every runtime here).
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(settle);
        let seen = reader_rt.block_on(reader.read(&key))?;
        ensure!(n_of(&seen) == Some(n), "round {n}: stale read {seen:?}");
        // Let the killed connection come back before the next round.
        reader_rt.block_on(async {
            for _ in 0..100 {
                if !reader.near_cache_client_ids().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    writer_rt.block_on(writer.delete(&key))?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let mut args = libtest_mimic::Arguments::from_args();
    // One at a time: FLUSHDB and CLIENT KILL empty every near cache on the server.
    args.test_threads = Some(1);
    use test_support::{redis, redis_cluster};
    let url = |r: test_support::Redis| r.url().to_owned();
    let trials = vec![
        trial("standalone::hits_send_nothing", redis(), move |r| {
            hits_send_nothing(url(r))
        }),
        trial(
            "standalone::other_instance_writes_are_seen",
            redis(),
            move |r| other_instance_writes_are_seen(url(r)),
        ),
        trial(
            "standalone::killed_channel_empties_the_cache",
            redis(),
            move |r| killed_channel_empties_the_cache(url(r)),
        ),
        trial(
            "standalone::flush_empties_the_cache",
            redis(),
            flush_empties_the_cache,
        ),
        trial(
            "standalone::blocked_reader_sees_what_arrived",
            redis(),
            move |r| async move {
                let url = url(r);
                tokio::task::spawn_blocking(move || blocked_reader_sees_what_arrived(url))
                    .await
                    .map_err(|e| failed!("{e}"))?
            },
        ),
        trial("standalone::memory_is_bounded", redis(), move |r| {
            memory_is_bounded(url(r))
        }),
        trial(
            "standalone::unsupported_setups_are_refused",
            redis(),
            move |r| unsupported_setups_are_refused(url(r)),
        ),
        trial("cluster::instances_agree", redis_cluster(), |c| {
            cluster_instances_agree(c.url().to_owned())
        }),
    ];
    libtest_mimic::run(&args, trials).exit_code()
}

#[allow(dead_code)]
fn _assert_store_is_shareable(store: RedisStore) -> Arc<dyn SessionStore> {
    Arc::new(store)
}
