//! Redis-specific behaviours beyond the shared suite (issue 3). Each test needs a server variant,
//! which `test-support` reads from the environment, and is ignored, with the reason, when it is not
//! configured (failing instead when it is required); tests that stop a server start their own
//! `redis-server` on a free port (the binary `scripts/redis/start.sh` installs). They run one at a
//! time: the failover test takes a cluster master down.

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backend_redis::redis::{self, AsyncCommands};
use backend_redis::{RedisOptions, RedisStore};
use session_core::{
    Access, AcquireOutcome, AppName, Config, CreateOutcome, Delta, EndOutcome, EndReason, Error,
    ExpiryEvent, ExpiryEvents, ItemValue, Items, LockToken, ReadOutcome, SessionId, SessionKey,
    SessionManager, SessionStore, decode_value, encode_value,
};
use test_support::{Failed, Redis, RedisCluster, RedisTls, TestResult, ensure, fail, trial};

fn app(name: &str) -> Result<AppName, Failed> {
    Ok(AppName::new(&format!(
        "/redis-tests/{name}/{}",
        SessionId::generate()?.expose()
    ))?)
}

fn key(app: &AppName) -> Result<SessionKey, Failed> {
    Ok(SessionKey::new(app.clone(), SessionId::generate()?))
}

fn items(n: u32) -> Items {
    let mut items = Items::new();
    let value = encode_value("n", &n).unwrap_or_else(|_| ItemValue::from_bytes(Vec::new()));
    items.insert("n".into(), value);
    items
}

const LONG: Duration = Duration::from_secs(600);

async fn connect(url: &str) -> Result<RedisStore, Failed> {
    Ok(test_support::open_redis(url, RedisOptions::new()).await?)
}

/// A private `redis-server` on a free port, killed on drop; with AOF, so data survives a restart.
struct Private {
    port: u16,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl Private {
    async fn start() -> Result<Self, Failed> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("session-redis-test-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.spawn().await?;
        Ok(server)
    }

    async fn spawn(&mut self) -> Result<(), Failed> {
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        for _ in 0..200 {
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(fail("private redis-server did not start"))
    }

    async fn kill(&mut self) -> Result<(), Failed> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn raw(&self) -> Result<redis::aio::MultiplexedConnection, Failed> {
        Ok(redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await?)
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every key of one session hashes to one slot, and its value (and, with expiry events, its alive
/// marker) is really there.
async fn keys_of_a_session_share_one_slot(cluster: RedisCluster) -> TestResult {
    let store = connect(cluster.url()).await?;
    let app = app("slot")?;
    let key = key(&app)?;
    ensure!(
        store.create(&key, &items(1), LONG, true).await? == CreateOutcome::Created,
        "create"
    );
    let tag = format!("{{{}_{}}}", app.as_str(), key.id().expose());
    let client = redis::cluster::ClusterClient::new(cluster.seeds().to_vec())?;
    let mut conn = client.get_async_connection().await?;
    let mut slots = Vec::new();
    for suffix in [":v2", ":v2:alive", ":released", ":ended"] {
        let name = format!("{tag}{suffix}");
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&name)
            .query_async(&mut conn)
            .await?;
        slots.push(slot);
    }
    ensure!(
        slots.iter().all(|s| *s == slots[0]),
        "keys of one session must share a slot, got {slots:?}"
    );
    let events = store.capabilities().expiry_events;
    for (suffix, expected) in [(":v2", true), (":v2:alive", events)] {
        let exists: bool = conn.exists(format!("{tag}{suffix}")).await?;
        ensure!(
            exists == expected,
            "the session's {suffix} key must exist under the tag: {expected}"
        );
    }
    Ok(())
}

/// Two `databaseId`s are two separate stores; `databaseId` is honoured on the attribute path.
async fn databases_are_isolated(redis: Redis) -> TestResult {
    let one = connect(&redis.database(1)).await?;
    let two = connect(&redis.database(2)).await?;
    let app = app("db")?;
    let key = key(&app)?;
    one.create(&key, &items(1), LONG, true).await?;
    ensure!(
        matches!(two.read(&key).await?, ReadOutcome::Missing),
        "database 2 must not see database 1's session"
    );
    ensure!(
        two.create(&key, &items(2), LONG, true).await? == CreateOutcome::Created,
        "the same id in another database is another session"
    );
    // The attribute path (`host`, `port`, `databaseId`) selects the same database as `/1`.
    let hostport = redis
        .url()
        .trim_end_matches('/')
        .split_once("://")
        .map(|(_, h)| h.to_owned())
        .unwrap_or_default();
    let (host, port) = hostport.rsplit_once(':').unwrap_or((&hostport, "6379"));
    let config = Config::from_attributes([("host", host), ("port", port), ("databaseId", "1")])?;
    let via_attributes = RedisStore::connect(&config).await?;
    match via_attributes.read(&key).await? {
        ReadOutcome::Found(s) => ensure!(s.items == Arc::new(items(1)), "database 1's data"),
        other => {
            return Err(fail(format!(
                "databaseId=1 must find the session, got {other:?}"
            )));
        }
    }
    Ok(())
}

/// `SCRIPT FLUSH` between operations is survived: EVALSHA falls back to loading the script.
async fn script_flush_is_survived(redis: Redis) -> TestResult {
    let cluster = test_support::redis_cluster().ok();
    let mut urls = vec![redis.url().to_owned()];
    urls.extend(cluster.as_ref().map(|c| c.url().to_owned()));
    for url in urls {
        let store = connect(&url).await?;
        let app = app("flush")?;
        let key = key(&app)?;
        store.create(&key, &items(1), LONG, true).await?;
        flush_scripts(&url, cluster.as_ref()).await?;
        let token = LockToken::generate()?;
        let out = store.acquire(&key, token, LONG).await?;
        ensure!(
            matches!(out, session_core::AcquireOutcome::Acquired(_)),
            "{url}: acquire after SCRIPT FLUSH, got {out:?}"
        );
        flush_scripts(&url, cluster.as_ref()).await?;
        let delta = Delta::new().with_set("m", ItemValue::from_bytes(vec![0x01]));
        let out = store.commit(&key, token, &delta, LONG).await?;
        ensure!(
            out == session_core::CommitOutcome::Committed,
            "{url}: commit after SCRIPT FLUSH, got {out:?}"
        );
    }
    Ok(())
}

async fn flush_scripts(url: &str, cluster: Option<&RedisCluster>) -> TestResult {
    if let Some(cluster) = cluster.filter(|c| c.url() == url) {
        // Every node, replicas included (they are promoted on failover).
        for port in 7000..=7005u16 {
            let node = cluster
                .seeds()
                .first()
                .and_then(|u| u.rsplit_once(':').map(|(h, _)| format!("{h}:{port}")));
            let Some(node) = node else { continue };
            if let Ok(client) = redis::Client::open(node)
                && let Ok(mut c) = client.get_multiplexed_async_connection().await
            {
                let _: redis::RedisResult<()> =
                    redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut c).await;
            }
        }
        return Ok(());
    }
    let mut c = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut c)
        .await?;
    Ok(())
}

/// A restart within the retry timeout is survived with no failed operation.
async fn restart_within_retry_timeout_is_survived() -> TestResult {
    let mut server = Private::start().await?;
    let config = Config::builder()
        .url(server.url())
        .application_name(app("restart")?)
        .retry_timeout(Duration::from_secs(5))
        .build()?;
    let store = RedisStore::connect(&config).await?;
    let manager = SessionManager::new(Arc::new(store), &config);
    let mut s = manager.open(None, Access::Exclusive).await?;
    s.insert("n", &1u32)?;
    let id = s.id().expose().to_owned();
    ensure!(s.end().await? == EndOutcome::Created, "created");
    server.kill().await?;
    let restart = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        server.spawn().await
    };
    let (restarted, opened) = tokio::join!(restart, manager.open(Some(&id), Access::Exclusive));
    restarted?;
    let mut s = opened?;
    ensure!(
        !s.is_new() && s.get::<u32>("n")? == Some(1),
        "the session written before the restart is read back"
    );
    s.insert("n", &2u32)?;
    ensure!(
        s.end().await? == EndOutcome::Committed,
        "commit after restart"
    );
    Ok(())
}

/// With the server down and `throwOnError=false`, sessions are degraded and `last_error` says why.
async fn server_down_gives_degraded_sessions() -> TestResult {
    let mut server = Private::start().await?;
    let config = Config::builder()
        .url(server.url())
        .application_name(app("down")?)
        .throw_on_error(false)
        .build()?;
    let manager = SessionManager::new(Arc::new(RedisStore::connect(&config).await?), &config);
    let mut s = manager.open(None, Access::Exclusive).await?;
    s.insert("n", &1u32)?;
    let id = s.id().expose().to_owned();
    s.end().await?;
    server.kill().await?;
    let mut s = manager.open(Some(&id), Access::Exclusive).await?;
    ensure!(
        s.is_degraded(),
        "a store that is down gives a degraded session"
    );
    s.insert("n", &2u32)?;
    ensure!(
        s.end().await? == EndOutcome::NotSaved,
        "degraded sessions are not saved"
    );
    let cause = manager
        .last_error()
        .ok_or_else(|| fail("last_error must name the cause"))?;
    ensure!(
        matches!(*cause, Error::Unavailable { .. }),
        "the cause is Unavailable, got {cause:?}"
    );
    ensure!(
        chain(&cause).contains("connection"),
        "the cause names the connection: {}",
        chain(&cause)
    );
    Ok(())
}

/// Fast failure during an outage (issue 14): with the server killed, every operation fails with
/// `Unavailable` within the connection timeout plus a margin (a bound on a timeout, not a speed
/// claim), and once it is back an operation succeeds within one retry interval.
async fn outage_fails_fast_and_recovers() -> TestResult {
    let connect = Duration::from_secs(2);
    let bound = connect + Duration::from_secs(1);
    let mut server = Private::start().await?;
    let config = Config::builder()
        .url(server.url())
        .application_name(app("outage")?)
        .connection_timeout(Some(connect))
        .build()?;
    let store = RedisStore::connect(&config).await?;
    let k = key(config.application_name())?;
    let created = store.create(&k, &items(1), LONG, true).await?;
    ensure!(created == CreateOutcome::Created, "created: {created:?}");
    server.kill().await?;
    let mut worst = Duration::ZERO;
    // Each operation fails with `Unavailable`, within the bound.
    macro_rules! fails_fast {
        ($what:expr, $op:expr) => {{
            let started = std::time::Instant::now();
            let result = $op.await.map(drop);
            let elapsed = started.elapsed();
            ensure!(
                matches!(result, Err(Error::Unavailable { .. })),
                "{}: expected Unavailable, got {result:?} after {elapsed:?}",
                $what
            );
            ensure!(elapsed < bound, "{}: failed after {elapsed:?}", $what);
            worst = worst.max(elapsed);
        }};
    }
    for round in 0..3 {
        let fresh = key(config.application_name())?;
        fails_fast!(format!("read #{round}"), store.read(&k));
        fails_fast!(
            format!("create #{round}"),
            store.create(&fresh, &items(1), LONG, true)
        );
        fails_fast!(
            format!("acquire #{round}"),
            store.acquire(&k, LockToken::generate()?, LONG)
        );
        fails_fast!(format!("touch #{round}"), store.touch(&k));
    }
    eprintln!("redis: server down: worst failure {worst:?}");
    server.spawn().await?;
    let back = std::time::Instant::now();
    loop {
        match store.read(&k).await {
            Ok(ReadOutcome::Found(_)) => break,
            Ok(other) => return Err(fail(format!("after the restart: {other:?}"))),
            Err(e) if e.is_transient() && back.elapsed() < session_core::RetryPolicy::INTERVAL => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => {
                return Err(fail(format!(
                    "not back {:?} after the restart: {e:?}",
                    back.elapsed()
                )));
            }
        }
    }
    eprintln!("redis: answered {:?} after the restart", back.elapsed());
    Ok(())
}

fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

/// A wrong password, a wrong CA and a closed port are three distinct, clear errors.
async fn connect_errors_are_distinct(server: RedisTls) -> TestResult {
    let tls_url = server.url().to_owned();
    let good = server.options();
    let attempt = |url: String, options: RedisOptions| async move {
        let config = Config::from_url(&url)?;
        match RedisStore::connect_with(&config, options).await {
            Ok(_) => Err(fail(format!("{url}: connect must fail"))),
            Err(e) => Ok::<Error, Failed>(e),
        }
    };
    let wrong_password = tls_url.replacen("sesspw", "not-the-password", 1);
    let auth = attempt(wrong_password, good.clone()).await?;
    ensure!(
        matches!(auth, Error::Backend { .. }) && chain(&auth).contains("authentication failed"),
        "wrong password: {auth:?} / {}",
        chain(&auth)
    );
    let wrong_ca = match server.other_ca() {
        Some(path) => RedisOptions::new().with_ca_file(path),
        // Without a second CA, the server's own leaf is not a CA: still untrusted.
        None => RedisOptions::new(),
    };
    let tls = attempt(tls_url.clone(), wrong_ca).await?;
    ensure!(
        matches!(tls, Error::Backend { .. }) && chain(&tls).contains("certificate is not trusted"),
        "wrong CA: {tls:?} / {}",
        chain(&tls)
    );
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let closed = attempt(format!("redis://127.0.0.1:{port}"), RedisOptions::new()).await?;
    ensure!(
        matches!(closed, Error::Unavailable { .. })
            && chain(&closed).contains(&format!("no Redis server listening at 127.0.0.1:{port}")),
        "closed port: {closed:?} / {}",
        chain(&closed)
    );
    let texts = [chain(&auth), chain(&tls), chain(&closed)];
    ensure!(
        texts[0] != texts[1] && texts[1] != texts[2] && texts[0] != texts[2],
        "three distinct errors: {texts:?}"
    );
    // The ACL user may not touch keys outside its pattern: a permanent error, not a retry.
    Ok(())
}

/// Each store operation is exactly one request (`EVALSHA`), counted with `INFO commandstats` on a
/// private server (so no other client's commands are counted).
async fn one_request_per_operation() -> TestResult {
    let server = Private::start().await?;
    let store = connect(&server.url()).await?;
    let mut raw = server.raw().await?;
    let app = app("round-trips")?;
    let key = key(&app)?;
    // Load every script once (a fresh server has none: the first call of each is
    // EVALSHA + SCRIPT LOAD + EVALSHA, as after a SCRIPT FLUSH).
    warm_up(&store, &app).await?;
    let token = LockToken::generate()?;
    let delta = Delta::new().with_set("a", ItemValue::from_bytes(vec![1]));
    let ops: Vec<(&str, OpFuture<'_>)> = vec![
        (
            "create",
            Box::pin(async { store.create(&key, &items(1), LONG, false).await.map(drop) }),
        ),
        ("read", Box::pin(async { store.read(&key).await.map(drop) })),
        (
            "acquire",
            Box::pin(async { store.acquire(&key, token, LONG).await.map(drop) }),
        ),
        (
            "touch",
            Box::pin(async { store.touch(&key).await.map(drop) }),
        ),
        (
            "write_concurrent",
            Box::pin(async { store.write_concurrent(&key, &delta, LONG).await.map(drop) }),
        ),
        (
            "commit",
            Box::pin(async { store.commit(&key, token, &delta, LONG).await.map(drop) }),
        ),
        (
            "release",
            Box::pin(async { store.release(&key, token).await.map(drop) }),
        ),
        (
            "remove",
            Box::pin(async { store.remove(&key, token).await.map(drop) }),
        ),
        (
            "delete",
            Box::pin(async { store.delete(&key).await.map(drop) }),
        ),
    ];
    for (name, op) in ops {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async::<()>(&mut raw)
            .await?;
        op.await?;
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut raw)
            .await?;
        let (evalsha, others) = top_level_calls(&stats);
        ensure!(
            evalsha == 1 && others.is_empty(),
            "{name}: expected exactly one EVALSHA, got {evalsha} and {others:?}"
        );
    }
    Ok(())
}

type OpFuture<'a> = std::pin::Pin<Box<dyn Future<Output = session_core::Result<()>> + Send + 'a>>;

async fn warm_up(store: &RedisStore, app: &AppName) -> TestResult {
    let key = key(app)?;
    let token = LockToken::generate()?;
    store.create(&key, &items(1), LONG, true).await?;
    store.read(&key).await?;
    store.acquire(&key, token, LONG).await?;
    store.touch(&key).await?;
    store.write_concurrent(&key, &Delta::new(), LONG).await?;
    store.commit(&key, token, &Delta::new(), LONG).await?;
    store.release(&key, token).await?;
    store.remove(&key, token).await?;
    store.delete(&key).await?;
    Ok(())
}

/// `EVALSHA` calls, and the other commands a client (not a script) must have sent. Commands the
/// scripts run themselves (`HSET`, `PEXPIRE`, ...) are counted by Redis too; they are not requests.
fn top_level_calls(stats: &str) -> (u64, Vec<String>) {
    const FROM_SCRIPTS: &[&str] = &[
        "get", "getrange", "set", "setrange", "pttl", "del", "exists", "pexpire", "time", "publish",
    ];
    const OURS: &[&str] = &["info", "config|resetstat", "config"];
    let mut evalsha = 0;
    let mut others = Vec::new();
    for line in stats.lines() {
        let Some((name, rest)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let calls = rest
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0);
        if calls == 0 || FROM_SCRIPTS.contains(&name) || OURS.contains(&name) {
            continue;
        }
        if name == "evalsha" {
            evalsha = calls;
        } else {
            others.push(format!("{name}={calls}"));
        }
    }
    (evalsha, others)
}

/// Two "web servers" (two stores) on one server or cluster, both subscribed to expiry events, get
/// each expiry exactly once between them, with the final items; a removal is reported only by the
/// store that removed. A server without keyspace notifications does not declare the capability.
async fn expiry_events_once_per_farm(url: String) -> TestResult {
    let app = app("farm")?;
    let config = Config::builder()
        .url(&url)
        .application_name(app.clone())
        .build()?;
    let web1 = RedisStore::connect(&config).await?;
    let web2 = RedisStore::connect(&config).await?;
    ensure!(
        web1.capabilities().expiry_events && web2.capabilities().expiry_events,
        "{url}: start the server with notify-keyspace-events Egx"
    );
    let mut events1 = web1.expiry_events().await?;
    let mut events2 = web2.expiry_events().await?;
    let short = Duration::from_millis(200);
    let mut keys = Vec::new();
    for n in 0..10u32 {
        let key = key(&app)?;
        // Half the sessions were created by each web server; both hear every expiry.
        let store = if n % 2 == 0 { &web1 } else { &web2 };
        store.create(&key, &items(n), short, true).await?;
        keys.push(key);
    }
    // A last write through the other server: the event carries the final items.
    let token = LockToken::generate()?;
    ensure!(
        matches!(
            web2.acquire(&keys[0], token, LONG).await?,
            AcquireOutcome::Acquired(_)
        ),
        "acquire"
    );
    let last = Delta::new().with_set("last", encode_value("last", &"words")?);
    web2.commit(&keys[0], token, &last, short).await?;
    // Collect for long enough that a duplicate would have arrived.
    let (got1, got2) = tokio::join!(
        collect(&mut events1, Duration::from_secs(4)),
        collect(&mut events2, Duration::from_secs(4))
    );
    let all: Vec<&ExpiryEvent> = got1.iter().chain(&got2).collect();
    for (n, key) in keys.iter().enumerate() {
        let ends: Vec<&&ExpiryEvent> = all.iter().filter(|e| e.key == *key).collect();
        ensure!(
            ends.len() == 1,
            "{url}: session {n} must be reported exactly once between the two stores, got {}",
            ends.len()
        );
        let event = ends[0];
        ensure!(event.reason == EndReason::Expired, "reason Expired");
        let value = event.items.get("n").ok_or_else(|| fail("final items"))?;
        ensure!(
            decode_value::<u32>("n", value)? == n as u32,
            "session {n}: its own final items"
        );
    }
    let value = all
        .iter()
        .find(|e| e.key == keys[0])
        .and_then(|e| e.items.get("last"))
        .ok_or_else(|| fail("the last write is in the final items"))?;
    ensure!(
        decode_value::<String>("last", value)? == "words",
        "the last write"
    );
    // A removal is reported by the store that removed it, and by no other.
    let key = key(&app)?;
    web1.create(&key, &items(7), LONG, true).await?;
    let token = LockToken::generate()?;
    web1.acquire(&key, token, LONG).await?;
    web1.remove(&key, token).await?;
    let (got1, got2) = tokio::join!(
        collect(&mut events1, Duration::from_millis(500)),
        collect(&mut events2, Duration::from_millis(500))
    );
    let count = |got: &[ExpiryEvent]| got.iter().filter(|e| e.key == key).count();
    ensure!(
        count(&got1) == 1 && count(&got2) == 0,
        "{url}: remove is reported once, by the remover ({} / {})",
        count(&got1),
        count(&got2)
    );
    ensure!(
        got1.iter()
            .any(|e| e.key == key && e.reason == EndReason::Removed),
        "reason Removed"
    );
    // Dropping the stores ends the streams (the listener stops with them).
    drop((web1, web2));
    for events in [&mut events1, &mut events2] {
        let end = tokio::time::timeout(Duration::from_secs(2), async {
            while events.next().await.is_some() {}
        })
        .await;
        ensure!(
            end.is_ok(),
            "{url}: the stream must end once its store is gone"
        );
    }
    Ok(())
}

/// Every event that arrives within `window`.
async fn collect(events: &mut ExpiryEvents, window: Duration) -> Vec<ExpiryEvent> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.next()).await {
        got.push(event);
    }
    got
}

/// A server without keyspace notifications (a fresh private one): the capability is not declared
/// and `expiry_events` is `Unsupported`.
async fn expiry_events_need_keyspace_notifications() -> TestResult {
    let server = Private::start().await?;
    let store = connect(&server.url()).await?;
    ensure!(
        !store.capabilities().expiry_events,
        "no notify-keyspace-events: not declared"
    );
    ensure!(
        matches!(store.expiry_events().await, Err(Error::Unsupported { .. })),
        "expiry_events is Unsupported"
    );
    Ok(())
}

/// After a cluster master is killed and its replica promoted, sessions written before are readable
/// and new operations succeed. The killed node is restarted and rejoins as a replica.
async fn cluster_failover_is_survived(cluster: RedisCluster) -> TestResult {
    let app = app("failover")?;
    let config = Config::builder()
        .url(cluster.url())
        .application_name(app.clone())
        .retry_timeout(Duration::from_secs(15))
        .build()?;
    let store = Arc::new(RedisStore::connect(&config).await?);
    let manager = SessionManager::new(Arc::clone(&store) as Arc<dyn SessionStore>, &config);
    let mut ids = Vec::new();
    for n in 0..20u32 {
        let mut s = manager.open(None, Access::Exclusive).await?;
        s.insert("n", &n)?;
        ids.push(s.id().expose().to_owned());
        s.end().await?;
    }
    // A near-cached reader holds a copy of the first session through the failover.
    let near_config = Config::builder()
        .url(cluster.url())
        .application_name(app.clone())
        .near_cache(true)
        .build()?;
    let near = RedisStore::connect(&near_config).await?;
    let first = SessionKey::new(app.clone(), SessionId::parse(&ids[0])?);
    for _ in 0..3 {
        near.read(&first).await?;
    }
    let before = near.near_cache_stats().unwrap_or_default();
    ensure!(before.hits >= 1, "the near reader keeps a copy: {before:?}");
    // The master that owns the first session's slot.
    let nodes = cluster.seeds().to_vec();
    let mut conn = redis::cluster::ClusterClient::new(nodes.clone())?
        .get_async_connection()
        .await?;
    let tag = format!("{{{}_{}}}", app.as_str(), ids[0]);
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(&tag)
        .query_async(&mut conn)
        .await?;
    let port = master_of(&nodes, slot).await?;
    // SIGKILL it; `scripts/redis/start.sh` left the node's exact start command beside its pidfile.
    let pidfile = cluster.run_dir().join(format!("{port}/redis.pid"));
    let restart = cluster.run_dir().join(format!("{port}/start.sh"));
    ensure!(
        restart.exists(),
        "{} is missing: start the cluster with scripts/redis/start.sh",
        restart.display()
    );
    let pid = std::fs::read_to_string(&pidfile)?.trim().to_owned();
    let status = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()?;
    ensure!(status.success(), "kill -9 {pid}");
    let result = async {
        // Every session written before is readable (through the promoted replica) ...
        for (n, id) in ids.iter().enumerate() {
            let s = manager.open(Some(id), Access::Exclusive).await?;
            ensure!(
                !s.is_new() && s.get::<u32>("n")? == Some(n as u32),
                "session {n} must survive the failover"
            );
            s.end().await?;
        }
        // ... the near reader's copy went with the killed node's invalidation connection: a
        // change made after the failover is what it reads ...
        let mut s = manager.open(Some(&ids[0]), Access::Exclusive).await?;
        s.insert("n", &1000u32)?;
        s.end().await?;
        let seen = match near.read(&first).await? {
            ReadOutcome::Found(snapshot) => snapshot
                .items
                .get("n")
                .map(|v| session_core::decode_value::<u32>("n", v))
                .transpose()?,
            other => return Err(test_support::fail(format!("near read: {other:?}"))),
        };
        ensure!(
            seen == Some(1000),
            "stale near read after failover: {seen:?}"
        );
        let after = near.near_cache_stats().unwrap_or_default();
        ensure!(
            after.flushes > before.flushes,
            "the failover emptied the near cache: {after:?}"
        );
        // ... and new operations succeed.
        let mut s = manager.open(None, Access::Exclusive).await?;
        s.insert("after", &true)?;
        ensure!(
            s.end().await? == EndOutcome::Created,
            "create after failover"
        );
        Ok(())
    }
    .await;
    // Restart the killed node (it daemonizes, and rejoins as a replica of the promoted one).
    let _ = std::fs::remove_file(&pidfile);
    let _ = std::process::Command::new("sh").arg(&restart).status();
    wait_cluster_ok(&nodes).await;
    result
}

async fn master_of(nodes: &[String], slot: i64) -> Result<u16, Failed> {
    let client = redis::Client::open(nodes[0].as_str())?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let shards: redis::Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut c)
        .await?;
    let redis::Value::Array(ranges) = shards else {
        return Err(fail("CLUSTER SLOTS: not an array"));
    };
    for range in ranges {
        let redis::Value::Array(parts) = range else {
            continue;
        };
        let (
            Some(redis::Value::Int(lo)),
            Some(redis::Value::Int(hi)),
            Some(redis::Value::Array(master)),
        ) = (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        if (*lo..=*hi).contains(&slot)
            && let Some(redis::Value::Int(port)) = master.get(1)
        {
            return u16::try_from(*port).map_err(|_| fail("port"));
        }
    }
    Err(fail(format!("no master for slot {slot}")))
}

async fn wait_cluster_ok(nodes: &[String]) {
    for _ in 0..150 {
        let mut ok = true;
        for port in 7000..=7005u16 {
            let Some(node) = nodes
                .first()
                .and_then(|u| u.rsplit_once(':').map(|(h, _)| format!("{h}:{port}")))
            else {
                return;
            };
            let info: Option<String> = match redis::Client::open(node) {
                Ok(client) => match client.get_multiplexed_async_connection().await {
                    Ok(mut c) => redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut c)
                        .await
                        .ok(),
                    Err(_) => None,
                },
                Err(_) => None,
            };
            if !info.is_some_and(|i| i.contains("cluster_state:ok")) {
                ok = false;
            }
        }
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The settled record is the session's last commit only (docs/contract.md §2, "Repeated calls"):
/// a release records nothing, so a repeated release is `LockLost` at the store (the retry layer
/// reads it as `Released`), and a commit's repeat stays `Committed` after another holder acquired
/// and released; the same token with another delta is `LockLost`, and the next commit replaces
/// the record.
async fn settled_record_is_the_last_commit(redis: Redis) -> TestResult {
    use session_core::{CommitOutcome::*, ReleaseOutcome};
    let store = connect(redis.url()).await?;
    let app = app("settled")?;
    let key = key(&app)?;
    store.create(&key, &items(1), LONG, true).await?;
    let lock = async || -> Result<LockToken, Failed> {
        let token = LockToken::generate()?;
        match store.acquire(&key, token, LONG).await? {
            AcquireOutcome::Acquired(_) => Ok(token),
            other => Err(fail(format!("acquire: {other:?}"))),
        }
    };
    let released = lock().await?;
    ensure!(
        store.release(&key, released).await? == ReleaseOutcome::Released,
        "release"
    );
    let again = store.release(&key, released).await?;
    ensure!(
        again == ReleaseOutcome::LockLost,
        "a repeated release: {again:?}"
    );

    let token = lock().await?;
    let delta = Delta::new().with_set("n", items(2)["n"].clone());
    ensure!(
        store.commit(&key, token, &delta, LONG).await? == Committed,
        "commit"
    );
    let other = lock().await?;
    ensure!(
        store.release(&key, other).await? == ReleaseOutcome::Released,
        "release"
    );
    let again = store.commit(&key, token, &delta, LONG).await?;
    ensure!(
        again == Committed,
        "the commit's repeat after a release: {again:?}"
    );
    let other_delta = Delta::new().with_set("n", items(3)["n"].clone());
    let out = store.commit(&key, token, &other_delta, LONG).await?;
    ensure!(
        out == LockLost,
        "the settled token with another delta: {out:?}"
    );
    let next = lock().await?;
    store.commit(&key, next, &Delta::new(), LONG).await?;
    let out = store.commit(&key, token, &delta, LONG).await?;
    ensure!(
        out == LockLost,
        "the record is replaced by the next commit: {out:?}"
    );
    match store.read(&key).await? {
        ReadOutcome::Found(s) => ensure!(s.items == Arc::new(items(2)), "the committed items"),
        other => return Err(fail(format!("read: {other:?}"))),
    }
    Ok(())
}

/// Calls of each command since the last `CONFIG RESETSTAT`, from `INFO commandstats`.
async fn command_calls(
    raw: &mut redis::aio::MultiplexedConnection, command: &str,
) -> Result<u64, Failed> {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(raw)
        .await?;
    let prefix = format!("cmdstat_{command}:calls=");
    Ok(stats
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

async fn reset_stats(raw: &mut redis::aio::MultiplexedConnection) -> TestResult {
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(raw)
        .await?;
    Ok(())
}

/// The refresh window (docs/contract.md §1), counted on a private server: an access that finds
/// more than the timeout left writes nothing (no `PEXPIRE`, no `SET`, no `SETRANGE`); one that
/// finds less slides to `now + timeout + w`; with `w = 0` every access slides to `now + timeout`.
async fn refresh_window_writes_only_when_due() -> TestResult {
    use session_core::RefreshWindow;
    let server = Private::start().await?;
    let mut raw = server.raw().await?;
    let store = connect(&server.url()).await?;
    ensure!(
        store.refresh_window() == RefreshWindow::DEFAULT,
        "the default window"
    );
    let app = app("window")?;
    let key = key(&app)?;
    let name = format!("{{{}_{}}}:v2", app.as_str(), key.id().expose());
    let timeout = Duration::from_secs(1000);
    // A fresh server: load every script first, so EVALSHA is the only request counted below.
    warm_up(&store, &app).await?;
    store.create(&key, &items(1), timeout, true).await?;
    let pttl: i64 = raw.pttl(&name).await?;
    ensure!(
        (1_099_000..=1_100_000).contains(&pttl),
        "create sets now + timeout + w (w = 10 % = 100 s): {pttl} ms"
    );
    let writes = ["pexpire", "set", "setrange"];
    let token = LockToken::generate()?;
    reset_stats(&mut raw).await?;
    store.read(&key).await?;
    store.touch(&key).await?;
    store.acquire(&key, token, LONG).await?;
    store.read(&key).await?;
    for command in writes {
        let n = command_calls(&mut raw, command).await?;
        let expected = u64::from(command == "setrange");
        ensure!(
            n == expected,
            "inside the window: {command} ran {n} times, expected {expected} (the lock only)"
        );
    }
    // As if 150 s had passed: 950 s left, less than the timeout.
    let _: () = raw.pexpire(&name, 950_000).await?;
    reset_stats(&mut raw).await?;
    store.read(&key).await?;
    ensure!(
        command_calls(&mut raw, "pexpire").await? == 1,
        "a read that finds less than the timeout left slides"
    );
    let pttl: i64 = raw.pttl(&name).await?;
    ensure!(
        (1_099_000..=1_100_000).contains(&pttl),
        "the slide sets now + timeout + w: {pttl} ms"
    );
    store.release(&key, token).await?;

    let exact =
        test_support::open_redis_with(&server.url(), RedisOptions::new(), RefreshWindow::EXACT)
            .await?;
    ensure!(
        exact.refresh_window() == RefreshWindow::EXACT,
        "the configured window"
    );
    reset_stats(&mut raw).await?;
    exact.read(&key).await?;
    exact.touch(&key).await?;
    ensure!(
        command_calls(&mut raw, "pexpire").await? == 2,
        "with w = 0 every access slides"
    );
    let pttl: i64 = raw.pttl(&name).await?;
    ensure!(
        (999_000..=1_000_000).contains(&pttl),
        "w = 0 slides to now + timeout: {pttl} ms"
    );
    Ok(())
}

/// The end of a lock is published only when a waiter asked for it (`watch_release` sets the
/// header's waiting byte after subscribing): a commit or release nobody waits for sends no
/// `PUBLISH` (on a cluster each one crosses the bus to every node); one somebody waits for wakes
/// the waiter, and the next end nobody waits for is silent again.
async fn releases_publish_only_when_waited() -> TestResult {
    use session_core::{CommitOutcome, ReleaseOutcome};
    let server = Private::start().await?;
    let mut raw = server.raw().await?;
    let store = connect(&server.url()).await?;
    let app = app("waited")?;
    warm_up(&store, &app).await?;
    let key = key(&app)?;
    store.create(&key, &items(1), LONG, true).await?;
    let lock = async || -> Result<LockToken, Failed> {
        let token = LockToken::generate()?;
        match store.acquire(&key, token, LONG).await? {
            AcquireOutcome::Acquired(_) => Ok(token),
            other => Err(fail(format!("acquire: {other:?}"))),
        }
    };
    let delta = Delta::new().with_set("n", items(2)["n"].clone());
    for waited in [false, true, false] {
        // A commit.
        let token = lock().await?;
        let watch = if waited {
            Some(store.watch_release(&key).await?)
        } else {
            None
        };
        reset_stats(&mut raw).await?;
        ensure!(
            store.commit(&key, token, &delta, LONG).await? == CommitOutcome::Committed,
            "commit"
        );
        let published = command_calls(&mut raw, "publish").await?;
        ensure!(
            published == u64::from(waited),
            "commit, waited for {waited}: PUBLISH ran {published} times"
        );
        if let Some(watch) = watch {
            ensure!(
                tokio::time::timeout(Duration::from_secs(2), watch)
                    .await
                    .is_ok(),
                "the waiter wakes on the commit"
            );
        }
        // A release.
        let token = lock().await?;
        let watch = if waited {
            Some(store.watch_release(&key).await?)
        } else {
            None
        };
        reset_stats(&mut raw).await?;
        ensure!(
            store.release(&key, token).await? == ReleaseOutcome::Released,
            "release"
        );
        let published = command_calls(&mut raw, "publish").await?;
        ensure!(
            published == u64::from(waited),
            "release, waited for {waited}: PUBLISH ran {published} times"
        );
        if let Some(watch) = watch {
            ensure!(
                tokio::time::timeout(Duration::from_secs(2), watch)
                    .await
                    .is_ok(),
                "the waiter wakes on the release"
            );
        }
    }
    // A watch of an unlocked session marks nothing: the next lock's end is silent.
    let _idle = store.watch_release(&key).await?;
    let token = lock().await?;
    reset_stats(&mut raw).await?;
    store.release(&key, token).await?;
    ensure!(
        command_calls(&mut raw, "publish").await? == 0,
        "a watch taken while unlocked does not mark the next lock"
    );
    Ok(())
}

/// A commit that only replaces items with values of the same length is written in place (no
/// `SET` of the whole value); any other delta rebuilds the value. Either way the session reads
/// back as the delta applied to it.
async fn commits_patch_in_place_or_rebuild() -> TestResult {
    let server = Private::start().await?;
    let mut raw = server.raw().await?;
    let store = connect(&server.url()).await?;
    let app = app("patch")?;
    warm_up(&store, &app).await?;
    let key = key(&app)?;
    let value = |byte: u8, len: usize| ItemValue::from_bytes(vec![byte; len]);
    let mut expected = Items::new();
    for (name, byte) in [("a", 1), ("bb", 2), ("c", 3)] {
        expected.insert(name.into(), value(byte, 10));
    }
    store.create(&key, &expected, LONG, true).await?;
    let deltas = [
        (Delta::new().with_set("bb", value(9, 10)), true),
        (
            Delta::new()
                .with_set("c", value(8, 10))
                .with_set("a", value(7, 10)),
            true,
        ),
        (Delta::new(), true),
        (Delta::new().with_set("a", value(6, 3)), false),
        (Delta::new().with_set("new", value(5, 10)), false),
        (Delta::new().with_removed("bb"), false),
        (
            Delta::new().with_cleared().with_set("z", value(4, 1)),
            false,
        ),
    ];
    for (n, (delta, in_place)) in deltas.iter().enumerate() {
        let token = LockToken::generate()?;
        ensure!(
            matches!(
                store.acquire(&key, token, LONG).await?,
                AcquireOutcome::Acquired(_)
            ),
            "delta {n}: acquire"
        );
        reset_stats(&mut raw).await?;
        ensure!(
            store.commit(&key, token, delta, LONG).await? == session_core::CommitOutcome::Committed,
            "delta {n}: commit"
        );
        let sets = command_calls(&mut raw, "set").await?;
        ensure!(
            (sets == 0) == *in_place,
            "delta {n}: in place {in_place}, but SET ran {sets} times"
        );
        delta.apply_to(&mut expected);
        match store.read(&key).await? {
            ReadOutcome::Found(s) => ensure!(
                *s.items == expected,
                "delta {n}: read back {:?}, expected {expected:?}",
                s.items
            ),
            other => return Err(fail(format!("delta {n}: read {other:?}"))),
        }
    }
    Ok(())
}

/// Stored bytes this layout did not write are `Error::Corrupt` for every operation that reads
/// them, never a panic or a silent reset; an administrative delete still removes them.
async fn corrupt_values_are_typed_errors(redis: Redis) -> TestResult {
    let store = connect(redis.url()).await?;
    let app = app("corrupt")?;
    let mut raw = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let token = LockToken::generate()?;
    let delta = Delta::new().with_set("n", items(2)["n"].clone());
    // A header of the right length with an unknown version, a short value, and a good header
    // whose item runs past the end.
    let mut truncated = vec![0u8; 56];
    truncated[0] = 2;
    truncated[31] = 100;
    truncated.extend_from_slice(&[0, 1, 0, 0, 1, 0, b'n']);
    let values: [Vec<u8>; 3] = [vec![7u8; 56], b"short".to_vec(), truncated];
    // With a subscriber, a removal decodes the final items for the end event: undecodable ones
    // must not turn a removal that happened into an error.
    let _events = if store.capabilities().expiry_events {
        Some(store.expiry_events().await?)
    } else {
        None
    };
    for (n, value) in values.iter().enumerate() {
        let key = key(&app)?;
        let name = format!("{{{}_{}}}:v2", app.as_str(), key.id().expose());
        let _: () = raw.pset_ex(&name, value.as_slice(), 600_000).await?;
        let corrupt = |what: &str, e: Option<Error>| -> TestResult {
            ensure!(
                matches!(e, Some(Error::Corrupt { .. })),
                "value {n}, {what}: expected Error::Corrupt, got {e:?}"
            );
            Ok(())
        };
        corrupt("read", store.read(&key).await.err())?;
        if n < 2 {
            // The header itself is bad: every operation that checks it says so.
            corrupt("acquire", store.acquire(&key, token, LONG).await.err())?;
            corrupt("touch", store.touch(&key).await.err())?;
            corrupt("release", store.release(&key, token).await.err())?;
            corrupt("remove", store.remove(&key, token).await.err())?;
            corrupt(
                "commit",
                store.commit(&key, token, &delta, LONG).await.err(),
            )?;
            corrupt(
                "write_concurrent",
                store.write_concurrent(&key, &delta, LONG).await.err(),
            )?;
            ensure!(
                store.create(&key, &items(1), LONG, true).await? == CreateOutcome::AlreadyExists,
                "value {n}: create never overwrites it"
            );
        } else {
            // The header is good, the items are not: the acquire that found out lets its lock go
            // again, so the next request gets the same error, not a lock to wait out.
            corrupt("acquire", store.acquire(&key, token, LONG).await.err())?;
            let next = LockToken::generate()?;
            corrupt(
                "the next acquire (the first let its lock go)",
                store.acquire(&key, next, LONG).await.err(),
            )?;
        }
        ensure!(
            store.delete(&key).await? == session_core::RemoveOutcome::Removed,
            "value {n}: delete removes it"
        );
        ensure!(
            matches!(store.read(&key).await?, ReadOutcome::Missing),
            "value {n}: gone after delete"
        );
    }
    Ok(())
}

/// Sessions of the first layout (a `:meta` and an `:items` hash) are not read: after an upgrade
/// they are simply not found, and a new session under the same id is created beside them.
/// Two processes (two stores): the waiter watches while the session is unlocked, another request
/// takes the lock before the waiter looks, then lets it go. The waiter must not sleep through that
/// release: a watch made while nothing is locked completes at once (the manager then looks and
/// watches again, which marks the new lock), and a watch made while locked wakes on its end.
async fn a_lock_taken_after_an_unlocked_watch_is_not_missed(redis: Redis) -> TestResult {
    let waiter = connect(redis.url()).await?;
    let holder = connect(redis.url()).await?;
    let app = app("watch-race")?;
    let key = key(&app)?;
    holder.create(&key, &items(1), LONG, true).await?;
    let unlocked_watch = waiter.watch_release(&key).await?;
    let token = LockToken::generate()?;
    ensure!(
        matches!(
            holder.acquire(&key, token, LONG).await?,
            AcquireOutcome::Acquired(_)
        ),
        "the other request takes the lock"
    );
    ensure!(
        tokio::time::timeout(Duration::from_secs(1), unlocked_watch)
            .await
            .is_ok(),
        "a watch made while nothing was locked completes at once, so the waiter looks again"
    );
    let watch = waiter.watch_release(&key).await?;
    holder.release(&key, token).await?;
    ensure!(
        tokio::time::timeout(Duration::from_secs(2), watch)
            .await
            .is_ok(),
        "the watch made while locked wakes when that lock ends"
    );
    Ok(())
}

async fn first_layout_is_not_found(redis: Redis) -> TestResult {
    let store = connect(redis.url()).await?;
    let app = app("upgrade")?;
    let key = key(&app)?;
    let tag = format!("{{{}_{}}}", app.as_str(), key.id().expose());
    let mut raw = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let _: () = raw.hset(format!("{tag}:meta"), "t", "600000").await?;
    let _: () = raw.pexpire(format!("{tag}:meta"), 600_000).await?;
    ensure!(
        matches!(store.read(&key).await?, ReadOutcome::Missing),
        "an old session is not found"
    );
    ensure!(
        store.create(&key, &items(1), LONG, true).await? == CreateOutcome::Created,
        "a new session beside it"
    );
    let _: () = raw.del(format!("{tag}:meta")).await?;
    store.delete(&key).await?;
    Ok(())
}

/// `host:port` of a `redis://` or `rediss://` URL (without its userinfo and path).
fn host_port(url: &str) -> Result<(String, String), Failed> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = hosts
        .rsplit_once(':')
        .ok_or_else(|| fail(format!("no port in {hosts:?}")))?;
    Ok((host.to_owned(), port.to_owned()))
}

/// The first seed node of `cluster`: its URL, host and port.
fn first_seed(cluster: &RedisCluster) -> Result<(&str, String, String), Failed> {
    let seed = cluster
        .seeds()
        .first()
        .ok_or_else(|| fail("no cluster seed"))?;
    let (host, port) = host_port(seed)?;
    Ok((seed, host, port))
}

/// The store for `connectionString` (or the attributes), as an ASP.NET application gives them.
async fn connect_attributes(
    attributes: &[(&str, &str)], options: RedisOptions,
) -> session_core::Result<RedisStore> {
    let config = Config::from_attributes(attributes.iter().copied())?;
    RedisStore::connect_with(&config, options).await
}

/// A store on a cluster declares no `change_id` (two ids, two slots); on one server it does.
fn is_cluster(store: &RedisStore) -> bool {
    !store.capabilities().change_id
}

/// Creates, reads, locks, commits and reads back `n` sessions (spread over every slot range),
/// failing at the first error or unexpected outcome.
async fn round_trips(store: &RedisStore, app: &AppName, n: u32) -> TestResult {
    use session_core::CommitOutcome;
    for i in 0..n {
        let key = key(app)?;
        let created = store.create(&key, &items(i), LONG, true).await;
        ensure!(
            matches!(created, Ok(CreateOutcome::Created)),
            "session {i}: create: {created:?}"
        );
        match store.read(&key).await {
            Ok(ReadOutcome::Found(s)) if s.items == Arc::new(items(i)) => {}
            other => return Err(fail(format!("session {i}: read: {other:?}"))),
        }
        let token = LockToken::generate()?;
        let acquired = store.acquire(&key, token, LONG).await;
        ensure!(
            matches!(acquired, Ok(AcquireOutcome::Acquired(_))),
            "session {i}: acquire: {acquired:?}"
        );
        let delta = Delta::new().with_set("n", items(i + 1)["n"].clone());
        let committed = store.commit(&key, token, &delta, LONG).await;
        ensure!(
            matches!(committed, Ok(CommitOutcome::Committed)),
            "session {i}: commit: {committed:?}"
        );
        match store.read(&key).await {
            Ok(ReadOutcome::Found(s)) if s.items == Arc::new(items(i + 1)) => {}
            other => return Err(fail(format!("session {i}: read after commit: {other:?}"))),
        }
    }
    Ok(())
}

/// `host` and `port` naming one node of a cluster (as a `web.config` names an Azure clustered
/// cache) open the cluster: a few hundred sessions created, read, locked and committed without a
/// single error (a standalone connection to the node fails about half of them with `MOVED`,
/// reported as "the Redis cluster is changing topology"). No retries: the store is used bare.
async fn cluster_found_from_host_and_port(cluster: RedisCluster) -> TestResult {
    let (seed, host, port) = first_seed(&cluster)?;
    let store =
        connect_attributes(&[("host", &host), ("port", &port)], RedisOptions::new()).await?;
    ensure!(
        is_cluster(&store),
        "host={host} port={port}: not opened as a cluster"
    );
    round_trips(&store, &app("host-cluster")?, 300).await?;
    // A `redis://` URL naming the node is detected the same way.
    let store = connect(seed).await?;
    ensure!(is_cluster(&store), "{seed}: not opened as a cluster");
    round_trips(&store, &app("url-cluster")?, 20).await?;
    // A database other than 0 is refused at connect, naming the setting that chose it.
    let db = [
        ("host", host.as_str()),
        ("port", &port),
        ("databaseId", "1"),
    ];
    match connect_attributes(&db, RedisOptions::new()).await {
        Err(Error::InvalidConfig { setting, reason }) => ensure!(
            setting == "databaseId" && reason.contains("database 0"),
            "databaseId=1 on a cluster: {setting}: {reason}"
        ),
        Err(e) => return Err(fail(format!("databaseId=1 on a cluster: {e:?}"))),
        Ok(_) => return Err(fail("databaseId=1 on a cluster was accepted")),
    }
    Ok(())
}

/// An ACL user without `INFO` (in `@dangerous`, which least-privilege users lack) still has the
/// cluster detected (from `HELLO`'s `mode`), so its sessions never meet `MOVED`.
async fn cluster_found_without_info(cluster: RedisCluster) -> TestResult {
    let (_, host, port) = first_seed(&cluster)?;
    let nodes = (7000u16..7006).map(|p| format!("redis://127.0.0.1:{p}"));
    let user = format!("noinfo{}", std::process::id());
    for node in nodes.clone() {
        let mut admin = redis::Client::open(node.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&user)
            .arg("on")
            .arg(">noinfo-pw")
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .arg("-info")
            .query_async(&mut admin)
            .await?;
    }
    let result = async {
        let store = connect_attributes(
            &[
                ("host", &host),
                ("port", &port),
                ("user", &user),
                ("accessKey", "noinfo-pw"),
            ],
            RedisOptions::new(),
        )
        .await?;
        ensure!(
            is_cluster(&store),
            "a user without INFO: not opened as a cluster"
        );
        round_trips(&store, &app("noinfo-cluster")?, 60).await
    }
    .await;
    for node in nodes {
        if let Ok(client) = redis::Client::open(node.as_str())
            && let Ok(mut admin) = client.get_multiplexed_async_connection().await
        {
            let _: redis::RedisResult<()> = redis::cmd("ACL")
                .arg("DELUSER")
                .arg(&user)
                .query_async(&mut admin)
                .await;
        }
    }
    result
}

/// StackExchange.Redis configuration strings open the cluster: several endpoints (the cluster's
/// seeds) and one endpoint (detected); `defaultDatabase` other than 0 is refused.
async fn cluster_from_stackexchange_strings(cluster: RedisCluster) -> TestResult {
    let nodes = cluster
        .seeds()
        .iter()
        .take(2)
        .map(|seed| host_port(seed).map(|(h, p)| format!("{h}:{p}")))
        .collect::<Result<Vec<_>, _>>()?;
    let app = app("se-cluster")?;
    for text in [
        nodes.join(","),
        nodes[0].clone(),
        format!("{},abortConnect=False", nodes[0]),
    ] {
        let store = connect_attributes(&[("connectionString", &text)], RedisOptions::new()).await?;
        ensure!(is_cluster(&store), "{text}: not opened as a cluster");
        round_trips(&store, &app, 20).await?;
    }
    for text in [
        format!("{},defaultDatabase=2", nodes[0]),
        format!("{},defaultDatabase=2", nodes.join(",")),
    ] {
        match connect_attributes(&[("connectionString", &text)], RedisOptions::new()).await {
            Err(Error::InvalidConfig { setting, .. }) => ensure!(
                setting == "defaultDatabase",
                "{text}: the error names {setting}"
            ),
            Err(e) => return Err(fail(format!("{text}: {e:?}"))),
            Ok(_) => {
                return Err(fail(format!(
                    "{text}: database 2 on a cluster was accepted"
                )));
            }
        }
    }
    Ok(())
}

/// A StackExchange.Redis string for a standalone server: `defaultDatabase` selects the database
/// (the session is in database 3, not in 0), and `host:port` alone is a standalone store.
async fn stackexchange_string_selects_the_database(redis: Redis) -> TestResult {
    let (host, port) = host_port(redis.url())?;
    let text = format!("{host}:{port},defaultDatabase=3,abortConnect=false");
    let store = connect_attributes(&[("connectionString", &text)], RedisOptions::new()).await?;
    ensure!(
        !is_cluster(&store),
        "{text}: a standalone server opened as a cluster"
    );
    let app = app("se-db")?;
    let key = key(&app)?;
    store.create(&key, &items(3), LONG, true).await?;
    let three = connect(&redis.database(3)).await?;
    ensure!(
        matches!(three.read(&key).await?, ReadOutcome::Found(_)),
        "the session must be in database 3"
    );
    let zero = connect(&redis.database(0)).await?;
    ensure!(
        matches!(zero.read(&key).await?, ReadOutcome::Missing),
        "the session must not be in database 0"
    );
    // `defaultDatabase` wins over the attribute `databaseId`, as in the ASP.NET provider.
    let both = [("connectionString", text.as_str()), ("databaseId", "5")];
    let store = connect_attributes(&both, RedisOptions::new()).await?;
    ensure!(
        matches!(store.read(&key).await?, ReadOutcome::Found(_)),
        "defaultDatabase=3 must win over databaseId=5"
    );
    Ok(())
}

/// The TLS server with an ACL user through a StackExchange.Redis string (`ssl=true`, `user`,
/// `password`) and the test CA; a wrong password is an authentication error that does not echo
/// the password.
async fn stackexchange_string_over_tls(server: RedisTls) -> TestResult {
    let url = server.url();
    let (host, port) = host_port(url)?;
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (user, password) = rest
        .rsplit_once('@')
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .ok_or_else(|| fail("the TLS URL has no user:password"))?;
    let text = format!("{host}:{port},ssl=true,user={user},password={password},abortConnect=False");
    let store = connect_attributes(&[("connectionString", &text)], server.options()).await?;
    let app = app("se-tls")?;
    round_trips(&store, &app, 5).await?;
    // docs/security.md §2.4: the store's `Debug` prints no password.
    let shown = format!("{store:?}");
    ensure!(
        !shown.contains(password),
        "the store's Debug shows the password: {shown}"
    );
    let wrong = format!("{host}:{port},ssl=true,user={user},password=n0t-th3-pw");
    match connect_attributes(&[("connectionString", &wrong)], server.options()).await {
        Err(e) => {
            let text = chain(&e);
            ensure!(
                text.contains("authentication failed") && !text.contains("n0t-th3-pw"),
                "wrong password: {text}"
            );
        }
        Ok(_) => return Err(fail("a wrong password was accepted")),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let mut args = libtest_mimic::Arguments::from_args();
    // One at a time: the failover and restart tests stop servers.
    args.test_threads = Some(1);
    use test_support::{redis, redis_cluster, redis_tls};
    let trials = vec![
        trial(
            "cluster::keys_of_a_session_share_one_slot",
            redis_cluster(),
            keys_of_a_session_share_one_slot,
        ),
        trial(
            "standalone::databases_are_isolated",
            redis(),
            databases_are_isolated,
        ),
        trial(
            "standalone::script_flush_is_survived",
            redis(),
            script_flush_is_survived,
        ),
        trial(
            "standalone::restart_within_retry_timeout_is_survived",
            redis(),
            |_| restart_within_retry_timeout_is_survived(),
        ),
        trial(
            "standalone::outage_fails_fast_and_recovers",
            redis(),
            |_| outage_fails_fast_and_recovers(),
        ),
        trial(
            "standalone::server_down_gives_degraded_sessions",
            redis(),
            |_| server_down_gives_degraded_sessions(),
        ),
        trial(
            "standalone::settled_record_is_the_last_commit",
            redis(),
            settled_record_is_the_last_commit,
        ),
        trial("standalone::one_request_per_operation", redis(), |_| {
            one_request_per_operation()
        }),
        trial(
            "standalone::refresh_window_writes_only_when_due",
            redis(),
            |_| refresh_window_writes_only_when_due(),
        ),
        trial(
            "standalone::releases_publish_only_when_waited",
            redis(),
            |_| releases_publish_only_when_waited(),
        ),
        trial(
            "standalone::commits_patch_in_place_or_rebuild",
            redis(),
            |_| commits_patch_in_place_or_rebuild(),
        ),
        trial(
            "standalone::corrupt_values_are_typed_errors",
            redis(),
            corrupt_values_are_typed_errors,
        ),
        trial(
            "standalone::a_lock_taken_after_an_unlocked_watch_is_not_missed",
            redis(),
            a_lock_taken_after_an_unlocked_watch_is_not_missed,
        ),
        trial(
            "standalone::first_layout_is_not_found",
            redis(),
            first_layout_is_not_found,
        ),
        trial(
            "standalone::expiry_events_once_per_farm",
            redis(),
            // Database 9 of the shared server, which the other suites leave empty: Redis reports
            // an expiry when its active expiry cycle samples the key, which takes much longer in a
            // database holding thousands of live keys (the conformance and bench runs' sessions).
            |redis| expiry_events_once_per_farm(redis.database(9)),
        ),
        trial(
            "cluster::expiry_events_once_per_farm",
            redis_cluster(),
            |cluster| expiry_events_once_per_farm(cluster.url().to_owned()),
        ),
        trial(
            "standalone::expiry_events_need_keyspace_notifications",
            redis(),
            |_| expiry_events_need_keyspace_notifications(),
        ),
        trial(
            "tls::connect_errors_are_distinct",
            redis_tls(),
            connect_errors_are_distinct,
        ),
        trial(
            "cluster::found_from_host_and_port",
            redis_cluster(),
            cluster_found_from_host_and_port,
        ),
        trial(
            "cluster::found_without_info",
            redis_cluster(),
            cluster_found_without_info,
        ),
        trial(
            "cluster::from_stackexchange_strings",
            redis_cluster(),
            cluster_from_stackexchange_strings,
        ),
        trial(
            "standalone::stackexchange_string_selects_the_database",
            redis(),
            stackexchange_string_selects_the_database,
        ),
        trial(
            "tls::stackexchange_string_over_tls",
            redis_tls(),
            stackexchange_string_over_tls,
        ),
        trial(
            "cluster::zz_failover_is_survived",
            redis_cluster(),
            cluster_failover_is_survived,
        ),
    ];
    libtest_mimic::run(&args, trials).exit_code()
}
