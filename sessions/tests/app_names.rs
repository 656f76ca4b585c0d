//! Issue 13: application names as ASP.NET applications have them (a virtual path with spaces,
//! non-ASCII letters), through the facade from the seed's attributes, on every store that keeps a
//! name in a key or a row: memory, a SQLite file, and Redis standalone (when
//! `SESSION_TEST_REDIS_URL` is set; required when `SESSION_TEST_REQUIRE` names `redis`). Each
//! store creates, reads, commits and re-reads a session under each name, and two names that
//! differ only after a space never see each other's sessions.

#![cfg(any(feature = "memory", feature = "sqlite", feature = "redis"))]

#[cfg(feature = "memory")]
use std::sync::Arc;

use sessions::{Access, SessionManager};

/// Names that were refused before issue 13 (whitespace, non-ASCII) plus their near neighbours,
/// made unique per run so that runs against one server cannot see each other.
fn names() -> Vec<String> {
    let run = sessions::SessionId::generate().unwrap();
    let run = &run.expose()[..8];
    [
        "/my app",
        "/my app2",
        "/my",
        "My Application (staging) #2",
        "/café ünï",
    ]
    .iter()
    .map(|n| format!("{n} {run}"))
    .collect()
}

#[cfg(any(feature = "sqlite", feature = "redis"))]
async fn manager(connection: &str, app: &str) -> SessionManager {
    sessions::open_attributes([
        ("connectionString", connection),
        ("applicationName", app),
        ("port", ""),
        ("accessKey", ""),
    ])
    .await
    .unwrap_or_else(|e| panic!("{app:?} on {}: {e}", sessions::redact_url(connection)))
}

/// Under every name: create, read, commit a change, read it back; then each name's id is unknown
/// under every other name (a new session, not the other application's).
#[cfg(any(feature = "sqlite", feature = "redis"))]
async fn round_trip(connection: &str) {
    let names = names();
    let mut ids = Vec::new();
    for (i, app) in names.iter().enumerate() {
        let m = manager(connection, app).await;
        assert_eq!(m.application().as_str(), app);
        let mut s = m.open(None, Access::Exclusive).await.unwrap();
        s.insert("i", &i).unwrap();
        let id = s.id().expose().to_owned();
        s.end().await.unwrap();

        let mut s = m.open(Some(&id), Access::Exclusive).await.unwrap();
        assert_eq!(s.id().expose(), id, "{app:?}: the session was not found");
        assert_eq!(s.get::<usize>("i").unwrap(), Some(i), "{app:?}");
        s.insert("name", &app.clone()).unwrap();
        s.end().await.unwrap();

        let s = m.open(Some(&id), Access::ReadOnly).await.unwrap();
        assert_eq!(
            s.get::<String>("name").unwrap().as_deref(),
            Some(app.as_str())
        );
        drop(s);
        ids.push(id);
    }
    for (i, app) in names.iter().enumerate() {
        let m = manager(connection, app).await;
        for (j, id) in ids.iter().enumerate() {
            let s = m.open(Some(id), Access::ReadOnly).await.unwrap();
            if i == j {
                assert_eq!(s.get::<usize>("i").unwrap(), Some(i), "{app:?}");
            } else {
                assert_ne!(s.id().expose(), id, "{app:?} saw {:?}'s session", names[j]);
                assert_eq!(s.get::<usize>("i").unwrap(), None, "{app:?}");
            }
        }
    }
}

#[cfg(feature = "memory")]
#[tokio::test]
async fn memory() {
    // One store for every name: the managers must share it, so open one and reuse its handle.
    let store = sessions::connect(&sessions::Config::from_url("memory://").unwrap())
        .await
        .unwrap();
    let names = names();
    let mut ids = Vec::new();
    for app in &names {
        let config =
            sessions::Config::from_attributes([("url", "memory://"), ("applicationName", app)])
                .unwrap();
        let m = SessionManager::new(Arc::clone(&store), &config);
        let mut s = m.open(None, Access::Exclusive).await.unwrap();
        s.insert("app", &app.clone()).unwrap();
        ids.push(s.id().expose().to_owned());
        s.end().await.unwrap();
        let s = m
            .open(ids.last().map(String::as_str), Access::ReadOnly)
            .await
            .unwrap();
        assert_eq!(
            s.get::<String>("app").unwrap().as_deref(),
            Some(app.as_str())
        );
    }
    for (i, app) in names.iter().enumerate() {
        let config =
            sessions::Config::from_attributes([("applicationName", app.as_str())]).unwrap();
        let m = SessionManager::new(Arc::clone(&store), &config);
        for (j, id) in ids.iter().enumerate() {
            let s = m.open(Some(id), Access::ReadOnly).await.unwrap();
            let seen = s.get::<String>("app").unwrap();
            assert_eq!(seen.is_some(), i == j, "{app:?} and {:?}", names[j]);
        }
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_file() {
    let path = std::env::temp_dir().join(format!("sessions-app-names-{}.db", std::process::id()));
    round_trip(&format!("sqlite:{}", path.display())).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_standalone() {
    let Some(redis) = test_support::configured(test_support::redis()) else {
        return;
    };
    round_trip(redis.url()).await;
}

/// The standalone server's URL (`redis://[user:password@]host:port[/db]`) as a StackExchange.Redis
/// configuration string: `host:port[,user=...][,password=...][,defaultDatabase=db]`.
#[cfg(feature = "redis")]
fn stackexchange(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, host) = authority.rsplit_once('@').unwrap_or(("", authority));
    let mut out = host.to_owned();
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    if !user.is_empty() {
        out.push_str(&format!(",user={user}"));
    }
    if !password.is_empty() {
        out.push_str(&format!(",password={password}"));
    }
    let db = path.split(['?', '#']).next().unwrap_or("");
    if !db.is_empty() {
        out.push_str(&format!(",defaultDatabase={db}"));
    }
    out.push_str(",ssl=False,abortConnect=False");
    out
}

/// Issue 13: the facade dispatches a StackExchange.Redis `connectionString` to Redis (no scheme,
/// no `host` attribute), and one given by name through the lookup; spaced names work there too.
#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_through_a_stackexchange_connection_string() {
    let Some(redis) = test_support::configured(test_support::redis()) else {
        return;
    };
    let configuration = stackexchange(redis.url());
    round_trip(&configuration).await;

    let config = sessions::Config::from_attributes_with(
        [
            ("connectionString", "SESSION_REDIS"),
            ("applicationName", "/by name"),
        ],
        |name| (name == "SESSION_REDIS").then(|| configuration.clone()),
    )
    .unwrap();
    assert_eq!(
        sessions::Backend::for_config(&config).unwrap(),
        sessions::Backend::Redis
    );
    let m = sessions::open(&config).await.unwrap();
    assert_eq!(m.store().backend(), "redis");
    let mut s = m.open(None, Access::Exclusive).await.unwrap();
    s.insert("n", &1u8).unwrap();
    s.end().await.unwrap();
}
