//! Redis expiry events under mass expiry (issue 15): every end is reported once, with its final
//! items or as `ExpiredItemsLost`, never silently lost; the listener's memory is bounded and a
//! lagging subscriber sees what it missed. Counts, not wall-clock: each wait is a bounded timeout,
//! not a speed claim. Needs the standalone server and the cluster (`SESSION_TEST_REDIS_URL`,
//! `SESSION_TEST_REDIS_CLUSTER_URLS`) with `notify-keyspace-events` `Egx`; the disconnect test
//! starts a private `redis-server`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backend_redis::redis;
use backend_redis::{ExpiryListenerLimits, RedisOptions, RedisStore};
use session_core::{
    AppName, Config, EndReason, ExpiryEvent, ExpiryEvents, ItemValue, Items, RefreshWindow,
    SessionId, SessionKey, SessionStore, decode_value, encode_value,
};
use test_support::private::{Private, PrivateRedis};
use test_support::{Failed, TestResult, ensure, fail, trial};

/// Database of the shared standalone server for these tests: empty but for them, so that Redis's
/// active expiry cycle and the sweeps (`SCAN`) see only their keys.
const DB: u32 = 11;
/// Tasks reading other sessions meanwhile (the traffic).
const READERS: usize = 8;
/// The longest wait for the last event after the common end (a timeout, not a speed claim).
const WAIT: Duration = Duration::from_secs(120);

fn app(name: &str) -> Result<AppName, Failed> {
    Ok(AppName::new(&format!(
        "/expiry-tests/{name}/{}",
        SessionId::generate()?.expose()
    ))?)
}

async fn open(
    url: &str, app: &AppName, limits: ExpiryListenerLimits,
) -> Result<RedisStore, Failed> {
    let config = Config::builder()
        .url(url)
        .application_name(app.clone())
        .refresh_window(RefreshWindow::EXACT)
        .build()?;
    let options = RedisOptions::new().with_expiry_listener_limits(limits);
    let store = RedisStore::connect_with(&config, options).await?;
    ensure!(
        store.capabilities().expiry_events,
        "{url}: start the server with notify-keyspace-events Egx"
    );
    Ok(store)
}

/// Deletes `name` with a plain connection (a cluster client routes it to its master): how many
/// keys it deleted.
async fn del(url: &str, name: &str) -> Result<i64, Failed> {
    let mut cmd = redis::cmd("DEL");
    cmd.arg(name);
    query(url, &cmd).await
}

/// Runs `cmd` on a plain connection (a cluster client routes it by its first key).
async fn query<T: redis::FromRedisValue>(url: &str, cmd: &redis::Cmd) -> Result<T, Failed> {
    if url.contains("+cluster://") {
        let nodes = backend_redis::node_urls(url)?;
        let mut conn = redis::cluster::ClusterClient::new(nodes)?
            .get_async_connection()
            .await?;
        return Ok(cmd.query_async(&mut conn).await?);
    }
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    Ok(cmd.query_async(&mut conn).await?)
}

/// Session `n`'s items: its number and nine values of 150 bytes.
fn items(n: u32) -> Result<Items, Failed> {
    let mut items = Items::new();
    items.insert("n".into(), encode_value("n", &n)?);
    for i in 0..9 {
        items.insert(format!("item{i}"), ItemValue::from_bytes(vec![7u8; 150]));
    }
    Ok(items)
}

/// Traffic: tasks reading a pool of long-lived sessions until dropped.
struct Readers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Readers {
    async fn start(store: &Arc<RedisStore>, app: &AppName) -> Result<Self, Failed> {
        let mut pool = Vec::new();
        for n in 0..100 {
            let key = SessionKey::new(app.clone(), SessionId::generate()?);
            store
                .create(&key, &items(n)?, Duration::from_secs(600), true)
                .await?;
            pool.push(key);
        }
        let pool = Arc::new(pool);
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..READERS)
            .map(|t| {
                let (store, pool, stop) = (Arc::clone(store), Arc::clone(&pool), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        let _ = store.read(&pool[i % pool.len()]).await;
                        i += 7;
                    }
                })
            })
            .collect();
        Ok(Self { stop, tasks })
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Creates `n` sessions (their items numbered) that all end at about the same instant, a little
/// after the last is created; returns their keys and that instant.
async fn expiring_together(
    store: &Arc<RedisStore>, app: &AppName, n: u32,
) -> Result<(Vec<SessionKey>, tokio::time::Instant), Failed> {
    let keys: Vec<SessionKey> = (0..n)
        .map(|_| SessionId::generate().map(|id| SessionKey::new(app.clone(), id)))
        .collect::<Result<_, _>>()?;
    let end = tokio::time::Instant::now() + Duration::from_millis(3000 + u64::from(n) / 2);
    let keys = Arc::new(keys);
    let mut tasks = Vec::new();
    for t in 0..16u32 {
        let (store, keys) = (Arc::clone(store), Arc::clone(&keys));
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while i < n {
                let timeout = end.saturating_duration_since(tokio::time::Instant::now());
                if timeout < Duration::from_millis(300) {
                    return Err(fail(format!("creating session {i} took too long")));
                }
                store
                    .create(&keys[i as usize], &items(i)?, timeout, true)
                    .await?;
                i += 16;
            }
            Ok::<(), Failed>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| fail(e.to_string()))??;
    }
    let keys = Arc::try_unwrap(keys).map_err(|_| fail("keys still shared"))?;
    Ok((keys, end))
}

/// The events of `keys` (by id), until every one arrived or `WAIT` after `end`.
async fn collect(
    events: &mut ExpiryEvents, keys: &[SessionKey], end: tokio::time::Instant,
) -> HashMap<String, ExpiryEvent> {
    let wanted: HashMap<&str, ()> = keys.iter().map(|k| (k.id().expose(), ())).collect();
    let mut got = HashMap::new();
    let deadline = end + WAIT;
    while got.len() < keys.len() {
        let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.next()).await else {
            break;
        };
        if wanted.contains_key(event.key.id().expose()) {
            got.insert(event.key.id().expose().to_owned(), event);
        }
    }
    got
}

/// Every key has exactly its own final items, as `Expired`.
fn check_items(keys: &[SessionKey], got: &HashMap<String, ExpiryEvent>, what: &str) -> TestResult {
    ensure!(
        got.len() == keys.len(),
        "{what}: {} of {} ends reported within {WAIT:?}",
        got.len(),
        keys.len()
    );
    for (n, key) in keys.iter().enumerate() {
        let event = got.get(key.id().expose()).ok_or_else(|| fail("reported"))?;
        ensure!(
            event.reason == EndReason::Expired,
            "{what}: session {n}: {:?}, not Expired",
            event.reason
        );
        ensure!(
            event.items.len() == 10,
            "{what}: session {n} reported with {} items, not its 10",
            event.items.len()
        );
        let value = event.items.get("n").ok_or_else(|| fail("item n"))?;
        ensure!(
            decode_value::<u32>("n", value)? == n as u32,
            "{what}: session {n}: another session's items"
        );
    }
    Ok(())
}

/// Thousands of sessions expiring together while other tasks read: every end arrives, each with
/// its own final items; the reading subscriber misses nothing; the queue stays within its bound.
async fn mass_expiry_reports_every_end_with_its_items(url: String, n: u32) -> TestResult {
    let app = app("mass")?;
    let limits = ExpiryListenerLimits::default();
    let store = Arc::new(open(&url, &app, limits).await?);
    let mut events = store.expiry_events().await?;
    let readers = Readers::start(&store, &app).await?;
    let (keys, end) = expiring_together(&store, &app, n).await?;
    let got = collect(&mut events, &keys, end).await;
    readers.stop().await;
    let stats = store
        .expiry_listener_stats()
        .ok_or_else(|| fail("stats where the capability is declared"))?;
    check_items(&keys, &got, &url)?;
    ensure!(
        events.missed() == 0,
        "a subscriber that reads misses nothing: {}",
        events.missed()
    );
    ensure!(
        stats.queued_max <= limits.queue() && stats.expired >= u64::from(n),
        "{stats:?}"
    );
    Ok(())
}

/// A queue far smaller than the storm: the notifications it cannot hold are not lost, a sweep
/// finds their sessions; every end still arrives with its items, and the queue never holds more
/// than its bound.
async fn an_overflowing_queue_is_recovered_by_a_sweep(url: String, n: u32) -> TestResult {
    let app = app("overflow")?;
    let limits = ExpiryListenerLimits::new(32, 2);
    let store = Arc::new(open(&url, &app, limits).await?);
    let mut events = store.expiry_events().await?;
    let readers = Readers::start(&store, &app).await?;
    let (keys, end) = expiring_together(&store, &app, n).await?;
    let got = collect(&mut events, &keys, end).await;
    readers.stop().await;
    let stats = store.expiry_listener_stats().ok_or_else(|| fail("stats"))?;
    check_items(&keys, &got, &format!("{url} {stats:?}"))?;
    ensure!(
        stats.overflowed > 0 && stats.sweeps > 0 && stats.swept > 0,
        "the storm overflowed the queue and sweeps found the sessions: {stats:?}"
    );
    ensure!(
        stats.queued_max <= 32,
        "the queue stays within its bound: {stats:?}"
    );
    Ok(())
}

/// A subscriber that never reads: its `missed()` grows (it counts the events that went past it),
/// the reading subscriber still gets every end (or counts it as missed: nothing silently), and the
/// listener's queue stays within its bound.
async fn a_subscriber_that_never_reads_sees_what_it_missed(url: String) -> TestResult {
    let app = app("idle")?;
    let n = 3000u32;
    let limits = ExpiryListenerLimits::default();
    let store = Arc::new(open(&url, &app, limits).await?);
    let mut events = store.expiry_events().await?;
    let mut idle = store.expiry_events().await?;
    ensure!(idle.missed() == 0, "nothing missed yet");
    let (keys, end) = expiring_together(&store, &app, n).await?;
    let got = collect(&mut events, &keys, end).await;
    // Whatever the reader did not get, it was told it missed.
    let missed = events.missed();
    ensure!(
        got.len() as u64 + missed >= u64::from(n),
        "{} received + {missed} missed < {n}",
        got.len()
    );
    let idle_missed = idle.missed();
    ensure!(
        idle_missed >= u64::from(n) - 1024 && idle_missed <= u64::from(n),
        "the idle subscriber (buffer 1024) missed {idle_missed} of {n}"
    );
    ensure!(idle.missed() == idle_missed, "looking again loses nothing");
    let first = idle.next().await.ok_or_else(|| fail("an event kept"))?;
    ensure!(
        first.reason == EndReason::Expired,
        "the idle subscriber still reads what its buffer kept"
    );
    let stats = store.expiry_listener_stats().ok_or_else(|| fail("stats"))?;
    ensure!(
        stats.expired == u64::from(n) && stats.queued_max <= limits.queue(),
        "{stats:?}"
    );
    Ok(())
}

/// `n` sessions (their items numbered) of 1.5 s each, created one after the other.
async fn ending_soon(store: &RedisStore, app: &AppName, n: u32) -> Result<Vec<SessionKey>, Failed> {
    let mut keys = Vec::new();
    for i in 0..n {
        let key = SessionKey::new(app.clone(), SessionId::generate()?);
        store
            .create(&key, &items(i)?, Duration::from_millis(1500), true)
            .await?;
        keys.push(key);
    }
    Ok(keys)
}

/// Items that cannot be kept (the value evicted before the end was claimed) are reported as
/// `ExpiredItemsLost`, never as an `Expired` event without items; the others keep theirs.
async fn items_gone_are_reported_as_lost(url: String) -> TestResult {
    let app = app("lost")?;
    let store = Arc::new(open(&url, &app, ExpiryListenerLimits::default()).await?);
    let mut events = store.expiry_events().await?;
    let keys = ending_soon(&store, &app, 20).await?;
    // An eviction (maxmemory) or a flush of the first ten values: their markers still expire.
    for key in &keys[..10] {
        let value = format!("{{{}_{}}}:v2", app.as_str(), key.id().expose());
        let deleted = del(&url, &value).await?;
        ensure!(deleted == 1, "the value {value} existed");
    }
    let end = tokio::time::Instant::now() + Duration::from_millis(1500);
    let got = collect(&mut events, &keys, end).await;
    ensure!(got.len() == 20, "{} of 20 ends reported", got.len());
    for (n, key) in keys.iter().enumerate() {
        let event = got.get(key.id().expose()).ok_or_else(|| fail("reported"))?;
        if n < 10 {
            ensure!(
                event.reason == EndReason::ExpiredItemsLost && event.items.is_empty(),
                "session {n}, its items gone: {:?} with {} items, not ExpiredItemsLost",
                event.reason,
                event.items.len()
            );
        } else {
            ensure!(
                event.reason == EndReason::Expired && event.items.len() == 10,
                "session {n}: {:?} with {} items",
                event.reason,
                event.items.len()
            );
        }
    }
    let stats = store.expiry_listener_stats().ok_or_else(|| fail("stats"))?;
    ensure!(stats.items_lost == 10 && stats.expired == 10, "{stats:?}");
    Ok(())
}

/// The TTL of the foreign bytes one session of `unreadable_values_are_reported_as_lost` gets:
/// longer than an end claim's 2 × the grace period.
const FOREIGN_TTL_MS: u64 = 600_000;

/// A session whose value was overwritten by bytes this layout did not write, or replaced by a
/// key of another type (so that the take's script fails), is still reported once its end comes:
/// as `ExpiredItemsLost`, never dropped; the corrupt keys are left as they are. Each end's claim
/// outlives the value left in place, so that it is never reported twice. The others keep their
/// items.
async fn unreadable_values_are_reported_as_lost(url: String) -> TestResult {
    let app = app("unreadable")?;
    let store = Arc::new(open(&url, &app, ExpiryListenerLimits::default()).await?);
    let mut events = store.expiry_events().await?;
    let keys = ending_soon(&store, &app, 6).await?;
    let value = |key: &SessionKey| format!("{{{}_{}}}:v2", app.as_str(), key.id().expose());
    for (n, key) in keys[..2].iter().enumerate() {
        // Not this layout's bytes (the alive marker still expires on time): the first keeps the
        // value's expiry, the second gets one of its own, past the end claim's 2 minutes.
        let mut set = redis::cmd("SET");
        set.arg(value(key)).arg("not a session");
        match n {
            0 => set.arg("KEEPTTL"),
            _ => set.arg("PX").arg(FOREIGN_TTL_MS),
        };
        let () = query(&url, &set).await?;
    }
    for key in &keys[2..4] {
        ensure!(del(&url, &value(key)).await? == 1, "the value existed");
        let mut hset = redis::cmd("HSET");
        hset.arg(value(key)).arg("field").arg("value");
        let _: i64 = query(&url, &hset).await?;
        let mut expire = redis::cmd("PEXPIRE");
        expire.arg(value(key)).arg(120_000);
        let _: i64 = query(&url, &expire).await?;
    }
    let end = tokio::time::Instant::now() + Duration::from_millis(1500);
    let got = collect(&mut events, &keys, end).await;
    ensure!(got.len() == 6, "{} of 6 ends reported", got.len());
    for (n, key) in keys.iter().enumerate() {
        let event = got.get(key.id().expose()).ok_or_else(|| fail("reported"))?;
        let (reason, len) = match n < 4 {
            true => (EndReason::ExpiredItemsLost, 0),
            false => (EndReason::Expired, 10),
        };
        ensure!(
            event.reason == reason && event.items.len() == len,
            "session {n}: {:?} with {} items, not {reason:?} with {len}",
            event.reason,
            event.items.len()
        );
    }
    for (n, key) in keys[..4].iter().enumerate() {
        let mut kind = redis::cmd("TYPE");
        kind.arg(value(key));
        let kind: String = query(&url, &kind).await?;
        let expected = if n < 2 { "string" } else { "hash" };
        ensure!(kind == expected, "session {n}'s corrupt value: {kind}");
    }
    // Every end's claim outlives the value left in its place, so that a later sweep (which
    // finds values within their grace period) cannot report the end again.
    for (n, key) in keys[..4].iter().enumerate() {
        let claim = format!("{{{}_{}}}:ended", app.as_str(), key.id().expose());
        let [value_left, claim_left] = [value(key), claim].map(|name| {
            let mut pttl = redis::cmd("PTTL");
            pttl.arg(name);
            pttl
        });
        let (value_left, claim_left): (i64, i64) = (
            query(&url, &value_left).await?,
            query(&url, &claim_left).await?,
        );
        ensure!(
            claim_left > value_left,
            "session {n}: the claim ends in {claim_left} ms, its value in {value_left} ms"
        );
    }
    let stats = store.expiry_listener_stats().ok_or_else(|| fail("stats"))?;
    ensure!(stats.items_lost == 4 && stats.expired == 2, "{stats:?}");
    // Nothing reported twice: no further event of this application comes.
    ensure!(
        tokio::time::timeout(Duration::from_millis(500), events.next())
            .await
            .is_err(),
        "an end reported twice"
    );
    Ok(())
}

/// The notification connections are killed again and again while sessions expire (a private
/// server: `CLIENT KILL TYPE pubsub` would hit other tests' subscribers): the notifications sent
/// meanwhile are lost by Redis, and a sweep finds their sessions; every end arrives with its items.
async fn dropped_notification_connections_are_swept() -> TestResult {
    let server = PrivateRedis::new();
    let url = server.url();
    let app = app("disconnect")?;
    let store = Arc::new(open(&url, &app, ExpiryListenerLimits::default()).await?);
    let mut events = store.expiry_events().await?;
    let (keys, end) = expiring_together(&store, &app, 1000).await?;
    let mut raw = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let killer = tokio::spawn(async move {
        tokio::time::sleep_until(end - Duration::from_millis(300)).await;
        let mut kills = 0u64;
        while tokio::time::Instant::now() < end + Duration::from_secs(2) {
            let killed: redis::RedisResult<i64> = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query_async(&mut raw)
                .await;
            kills += u64::try_from(killed.unwrap_or(0)).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        kills
    });
    let got = collect(&mut events, &keys, end).await;
    let kills = killer.await.map_err(|e| fail(e.to_string()))?;
    let stats = store.expiry_listener_stats().ok_or_else(|| fail("stats"))?;
    check_items(&keys, &got, &format!("{kills} kills, {stats:?}"))?;
    ensure!(
        kills > 0 && stats.disconnects > 0 && stats.sweeps > 0,
        "the connections were killed ({kills}) and swept after: {stats:?}"
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let mut args = libtest_mimic::Arguments::from_args();
    // One at a time: each loads the server with a storm of expiries.
    args.test_threads = Some(1);
    use test_support::{redis, redis_cluster};
    let trials = vec![
        trial(
            "standalone::mass_expiry_reports_every_end_with_its_items",
            redis(),
            |r| mass_expiry_reports_every_end_with_its_items(r.database(DB), 10_000),
        ),
        trial(
            "cluster::mass_expiry_reports_every_end_with_its_items",
            redis_cluster(),
            |c| mass_expiry_reports_every_end_with_its_items(c.url().to_owned(), 5_000),
        ),
        trial(
            "standalone::an_overflowing_queue_is_recovered_by_a_sweep",
            redis(),
            |r| an_overflowing_queue_is_recovered_by_a_sweep(r.database(DB), 3_000),
        ),
        trial(
            "cluster::an_overflowing_queue_is_recovered_by_a_sweep",
            redis_cluster(),
            |c| an_overflowing_queue_is_recovered_by_a_sweep(c.url().to_owned(), 3_000),
        ),
        trial(
            "standalone::a_subscriber_that_never_reads_sees_what_it_missed",
            redis(),
            |r| a_subscriber_that_never_reads_sees_what_it_missed(r.database(DB)),
        ),
        trial(
            "standalone::items_gone_are_reported_as_lost",
            redis(),
            |r| items_gone_are_reported_as_lost(r.database(DB)),
        ),
        trial(
            "cluster::items_gone_are_reported_as_lost",
            redis_cluster(),
            |c| items_gone_are_reported_as_lost(c.url().to_owned()),
        ),
        trial(
            "standalone::unreadable_values_are_reported_as_lost",
            redis(),
            |r| unreadable_values_are_reported_as_lost(r.database(DB)),
        ),
        trial(
            "cluster::unreadable_values_are_reported_as_lost",
            redis_cluster(),
            |c| unreadable_values_are_reported_as_lost(c.url().to_owned()),
        ),
        trial(
            "private::dropped_notification_connections_are_swept",
            redis(),
            |_| dropped_notification_connections_are_swept(),
        ),
    ];
    libtest_mimic::run(&args, trials).exit_code()
}
