//! The facade's dispatch tests: schemes, connection strings, no store, features off, options.

use super::*;

/// The facade's scheme lists are the backend crates' own (the dev-dependencies have every
/// backend, whatever this build's features), and each crate accepts exactly its own.
#[test]
fn the_schemes_are_the_backend_crates_own() {
    assert_eq!(Backend::Memory.schemes(), backend_memory::SCHEMES);
    assert_eq!(Backend::Redis.schemes(), backend_redis::SCHEMES);
    assert_eq!(Backend::Postgres.schemes(), backend_sql::POSTGRES_SCHEMES);
    assert_eq!(Backend::Sqlite.schemes(), backend_sql::SQLITE_SCHEMES);
    assert_eq!(Backend::Mysql.schemes(), backend_sql::MYSQL_SCHEMES);
    for backend in Backend::ALL {
        for scheme in backend.schemes() {
            let url = format!("{}://h/x", scheme.to_ascii_uppercase());
            assert_eq!(Backend::for_url(&url).unwrap(), backend, "{url}");
            let accepted = [
                (Backend::Memory, backend_memory::accepts(&url)),
                (Backend::Redis, backend_redis::accepts(&url)),
                (
                    backend,
                    matches!(
                        backend,
                        Backend::Postgres | Backend::Sqlite | Backend::Mysql
                    ) && backend_sql::accepts(&url),
                ),
            ];
            let takers: Vec<Backend> = accepted
                .into_iter()
                .filter_map(|(b, yes)| yes.then_some(b))
                .collect();
            assert_eq!(takers, [backend], "{url}: taken by {takers:?}");
        }
    }
}

#[test]
fn urls_select_backends() {
    for (url, backend) in [
        ("memory://", Backend::Memory),
        ("redis://127.0.0.1:6379/0", Backend::Redis),
        ("rediss://:pw@host:6380", Backend::Redis),
        (
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
            Backend::Redis,
        ),
        ("Rediss+Cluster://:pw@a:1,b:2", Backend::Redis),
        ("postgres://u:p@h/db", Backend::Postgres),
        ("postgresql://h/db", Backend::Postgres),
        ("sqlite::memory:", Backend::Sqlite),
        ("mysql://u@h/db", Backend::Mysql),
        ("MariaDB://u@h/db", Backend::Mysql),
    ] {
        assert_eq!(Backend::for_url(url).unwrap(), backend, "{url}");
        let config = Config::from_url(url).unwrap();
        assert_eq!(Backend::for_config(&config).unwrap(), backend, "{url}");
    }
    let by_host = Config::from_attributes([("host", "127.0.0.1")]).unwrap();
    assert_eq!(Backend::for_config(&by_host).unwrap(), Backend::Redis);
}

/// Issue 13: a `connectionString` in the StackExchange.Redis form (or a bare host, or an
/// environment variable holding either) selects Redis, as does `host`; a URL wins over
/// `host`, as in ASP.NET (`host` is used only without a `connectionString`).
#[test]
fn stackexchange_connection_strings_select_redis() {
    for value in [
        "contoso.redis.cache.windows.net:6380,password=topsecret,ssl=True,abortConnect=False",
        "127.0.0.1:6379",
        "localhost",
        "redis:6379",
        "a:7000,b:7001,c:7002",
        "[::1]:6379,defaultDatabase=2",
    ] {
        let config = Config::from_attributes([("connectionString", value)]).unwrap();
        assert_eq!(
            Backend::for_config(&config).unwrap(),
            Backend::Redis,
            "{value}"
        );
    }
    let both =
        Config::from_attributes([("host", "cache"), ("connectionString", "memory://")]).unwrap();
    assert_eq!(Backend::for_config(&both).unwrap(), Backend::Memory);
    let by_name = Config::from_attributes_with([("connectionString", "STORE")], |name| {
        (name == "STORE").then(|| "postgres://app@db/sessions".to_owned())
    })
    .unwrap();
    assert_eq!(Backend::for_config(&by_name).unwrap(), Backend::Postgres);
}

/// Issue 13: settings that name no store used to open the memory store silently (sessions lost
/// on restart, not shared between servers). Now they are an error that says what to set, and
/// which of the given settings describe no server without `host`.
#[test]
fn no_store_is_an_error_that_says_what_to_set() {
    let reason = |config: &Config| match Backend::for_config(config) {
        Err(Error::InvalidConfig { setting, reason }) => {
            assert_eq!(setting, "connectionString");
            reason
        }
        other => panic!("{config:?} selected {other:?}"),
    };
    let empty = reason(&Config::default());
    for needed in [
        "no store",
        "connectionString or host",
        "postgres://",
        "memory://",
    ] {
        assert!(empty.contains(needed), "{empty}");
    }
    assert!(!empty.contains("without host"), "{empty}");
    // The seed sample with its host left out: port, accessKey and ssl, and no host.
    let orphans = Config::from_attributes([
        ("port", "6380"),
        ("accessKey", "topsecret"),
        ("ssl", "true"),
        ("host", ""),
        ("connectionString", " "),
        ("applicationName", "/shop"),
    ])
    .unwrap();
    let message = reason(&orphans);
    assert!(
        message.contains("port, accessKey, ssl are given without host"),
        "{message}"
    );
    assert!(!message.contains("topsecret"), "{message}");
    let one = Config::from_attributes([("databaseId", "2")]).unwrap();
    assert!(reason(&one).contains("databaseId is given without host"));
}

#[tokio::test]
async fn no_store_fails_at_open() {
    for attributes in [
        vec![],
        vec![("applicationName", "/shop")],
        vec![("port", "6380"), ("accessKey", "k"), ("ssl", "true")],
    ] {
        let Err(err) = open_attributes(attributes.clone()).await else {
            panic!("{attributes:?} opened a store");
        };
        assert!(err.to_string().contains("no store"), "{err}");
    }
    let Err(err) = open(&Config::default()).await else {
        panic!("the default configuration opened a store");
    };
    assert!(err.to_string().contains("no store"), "{err}");
}

#[test]
fn an_unknown_scheme_is_refused_without_echoing_the_url() {
    for url in [
        "gopher://u:topsecret@h",
        "http://h?password=topsecret",
        "nonsense",
    ] {
        let Err(Error::InvalidConfig { setting, reason }) = Backend::for_url(url) else {
            panic!("{url} selected a backend");
        };
        assert_eq!(setting, "url");
        assert!(!reason.contains("topsecret"), "{reason}");
        assert!(reason.contains("redis+cluster"), "{reason}");
    }
}

#[tokio::test]
async fn an_unknown_scheme_fails_at_open() {
    let Err(err) = open_url("gopher://h").await else {
        panic!("gopher:// opened");
    };
    assert!(
        matches!(&err, Error::InvalidConfig { setting, .. } if setting == "url"),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"gopher\""), "{err}");
}

#[test]
fn every_backend_names_its_feature() {
    assert_eq!(Backend::Memory.feature(), "memory");
    assert_eq!(Backend::Redis.to_string(), "redis");
    assert_eq!(Backend::Mysql.feature(), "mysql");
    let postgres = Config::from_url("postgres://u:p@127.0.0.1/db").unwrap();
    let message = feature_off(&postgres, Backend::Postgres).to_string();
    assert!(
        message.contains("enable the \"postgres\" feature of the sessions crate"),
        "{message}"
    );
    assert_eq!(
        Backend::ALL.map(Backend::is_compiled_in),
        [
            cfg!(feature = "memory"),
            cfg!(feature = "redis"),
            cfg!(feature = "postgres"),
            cfg!(feature = "sqlite"),
            cfg!(feature = "mysql"),
        ]
    );
}

#[test]
fn the_error_names_the_setting_that_selected_the_backend() {
    let setting = |config: &Config| match feature_off(config, Backend::for_config(config).unwrap())
    {
        Error::InvalidConfig { setting, .. } => setting,
        other => panic!("{other:?}"),
    };
    let by_host = Config::from_attributes([("host", "127.0.0.1")]).unwrap();
    assert_eq!(setting(&by_host), "host");
    let by_url = Config::from_url("redis://127.0.0.1:6379").unwrap();
    assert_eq!(setting(&by_url), "url");
    let by_string = Config::from_attributes([("connectionString", "cache:6380,ssl=True")]).unwrap();
    assert_eq!(setting(&by_string), "connectionString");
}

/// Asserts that `url` is refused with a configuration error naming `feature`.
#[allow(dead_code)]
async fn refused(url: &str, feature: &str) {
    let Err(err) = open_url(url).await else {
        panic!("{url} opened although its feature is off");
    };
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    let expected = format!("enable the \"{feature}\" feature of the sessions crate");
    assert!(err.to_string().contains(&expected), "{err}");
}

#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn redis_url_without_the_feature_names_it() {
    refused("redis://127.0.0.1:6379", "redis").await;
    refused("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", "redis").await;
    refused("rediss+cluster://:pw@127.0.0.1:7000", "redis").await;
    // The seed's host attribute and a StackExchange connection string select Redis too.
    for attributes in [
        ("host", "127.0.0.1"),
        ("connectionString", "127.0.0.1:6379,password=topsecret"),
    ] {
        let Err(err) = open_attributes([attributes]).await else {
            panic!("{attributes:?} opened Redis although its feature is off");
        };
        assert!(err.to_string().contains("\"redis\" feature"), "{err}");
        assert!(!err.to_string().contains("topsecret"), "{err}");
    }
}

#[cfg(not(feature = "postgres"))]
#[tokio::test]
async fn postgres_url_without_the_feature_names_it() {
    refused("postgres://u:p@127.0.0.1/db", "postgres").await;
}

#[cfg(not(feature = "sqlite"))]
#[tokio::test]
async fn sqlite_url_without_the_feature_names_it() {
    refused("sqlite::memory:", "sqlite").await;
}

#[cfg(not(feature = "mysql"))]
#[tokio::test]
async fn mysql_url_without_the_feature_names_it() {
    refused("mysql://u@127.0.0.1/db", "mysql").await;
    refused("mariadb://u@127.0.0.1/db", "mysql").await;
}

#[cfg(not(feature = "memory"))]
#[tokio::test]
async fn memory_url_without_the_feature_names_it() {
    refused("memory://", "memory").await;
}

#[cfg(feature = "memory")]
#[tokio::test]
async fn memory_opens_from_a_url_and_from_attributes() {
    let manager = open_url("memory://").await.unwrap();
    assert_eq!(manager.store().backend(), "memory");
    let manager = open_attributes([
        ("connectionString", "memory://"),
        ("applicationName", "/my shop"),
        ("port", ""),
    ])
    .await
    .unwrap();
    assert_eq!(manager.application().as_str(), "/my shop");
    let mut s = manager
        .open(None, session_core::Access::Exclusive)
        .await
        .unwrap();
    s.insert("n", &1u8).unwrap();
    s.end().await.unwrap();
}

/// The memory store checks its own URL: the facade passes it on.
#[cfg(feature = "memory")]
#[tokio::test]
async fn the_backend_checks_the_rest_of_its_url() {
    let Err(err) = open_url("memory://cache-host:6379").await else {
        panic!("memory:// with a host opened");
    };
    assert!(
        matches!(&err, Error::InvalidConfig { setting, .. } if setting == "url"),
        "{err:?}"
    );
}

#[cfg(feature = "memory")]
#[tokio::test]
async fn options_reach_the_selected_backend() {
    let options =
        StoreOptions::new().with_memory(backend_memory::MemoryOptions::new().with_max_sessions(1));
    let store = connect_with(&Config::from_url("memory://").unwrap(), &options)
        .await
        .unwrap();
    assert_eq!(store.backend(), "memory");
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_opens_from_a_url() {
    let manager = open_url("sqlite::memory:").await.unwrap();
    let mut s = manager
        .open(None, session_core::Access::Exclusive)
        .await
        .unwrap();
    s.insert("n", &1u8).unwrap();
    let id = s.id().expose().to_owned();
    s.end().await.unwrap();
    let s = manager
        .open(Some(&id), session_core::Access::ReadOnly)
        .await
        .unwrap();
    assert_eq!(s.get::<u8>("n").unwrap(), Some(1));
}

/// The SQL options given to the facade are the ones the store runs with: its tables carry
/// the prefix given.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sql_options_reach_the_sql_store() {
    use backend_sql::{SqlOptions, SqlStore};
    let path = std::env::temp_dir().join(format!("sessions-open-{}.db", std::process::id()));
    let config = Config::from_url(&format!("sqlite:{}", path.display())).unwrap();
    let options = |prefix: &str| {
        SqlOptions::new()
            .with_table_prefix(prefix)
            .unwrap()
            .with_sweeper(None)
    };
    let store = connect_with(&config, &StoreOptions::new().with_sql(options("facade_")))
        .await
        .unwrap();
    store.purge_expired(100).await.unwrap();
    let probe = |prefix: &'static str| {
        let config = config.clone();
        async move {
            let store = SqlStore::connect_with(&config, options(prefix).with_migrate(false))
                .await
                .unwrap();
            store.purge_expired(100).await
        }
    };
    assert!(probe("facade_").await.is_ok(), "the tables have the prefix");
    assert!(
        probe("other_").await.is_err(),
        "no tables under another prefix"
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
