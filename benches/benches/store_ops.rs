//! Criterion micro-benchmarks of single store operations: one `BenchmarkGroup` per operation,
//! `BenchmarkId::new(backend, payload)`, `Throughput::Bytes`. Memory and SQLite (in-memory) always;
//! Redis, Redis Cluster, Postgres and MySQL on the servers of the integration tests, where
//! configured (`test-support` reads them from the environment; a missing one is left out), and
//! Redis and Redis Cluster once more with the near cache on (`redis-near`, `redis-cluster-near`).
//! Every iteration checks its outcome, so a bench never times a failure path (a `Locked` acquire,
//! an `AlreadyExists` create).

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput};
use session_bench::workload::{LOCK_TTL, SESSION_TIMEOUT, make_items};
use session_bench::{BackendSpec, Payload, connect_near_store, connect_store};
use session_core::{
    AcquireOutcome, AppName, CommitOutcome, CreateOutcome, Delta, ItemValue, LockToken,
    ReadOutcome, RemoveOutcome, SessionId, SessionKey, SessionStore, items_size,
};
use test_support::Variant;

fn backends() -> Vec<BackendSpec> {
    let mut specs = vec![BackendSpec::memory(), BackendSpec::sqlite_in_memory()];
    for backend in [
        Variant::Redis,
        Variant::RedisCluster,
        Variant::Postgres,
        Variant::Mysql,
    ] {
        let Ok(server) = backend.server() else {
            continue;
        };
        match BackendSpec::new(server.url()) {
            Ok(spec) => specs.push(spec),
            Err(err) => eprintln!("skipping {}: {err}", backend.name()),
        }
    }
    specs
}

fn store_ops(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let payloads = [Payload::DEFAULT, Payload::LARGE];
    let app = AppName::new("/session-bench-criterion").expect("app name");
    let mut stores: Vec<(&'static str, Arc<dyn SessionStore>)> = Vec::new();
    for spec in backends() {
        match rt.block_on(connect_store(&spec, 4)) {
            Ok(store) => stores.push((spec.name(), store)),
            Err(err) => eprintln!("skipping {}: {err}", spec.name()),
        }
        // Redis again with its near cache on (`nearCache`), as the `-near` rows of session-bench.
        let Some(near) = spec.near_name() else {
            continue;
        };
        match rt.block_on(connect_near_store(&spec)) {
            Ok(store) => stores.push((near, Arc::new(store))),
            Err(err) => eprintln!("skipping {near}: {err}"),
        }
    }
    let session = |store: &Arc<dyn SessionStore>, payload: Payload| {
        let key = SessionKey::new(app.clone(), SessionId::generate().expect("id"));
        let items = make_items(payload);
        let created = rt
            .block_on(store.create(&key, &items, SESSION_TIMEOUT, true))
            .expect("create");
        assert_eq!(created, CreateOutcome::Created);
        (key, items)
    };

    let mut group = c.benchmark_group("read");
    for (name, store) in &stores {
        for payload in payloads {
            let (key, items) = session(store, payload);
            group.throughput(Throughput::Bytes(items_size(&items) as u64));
            group.bench_function(BenchmarkId::new(*name, payload), |b| {
                b.to_async(&rt).iter(|| async {
                    let out = store.read(&key).await.expect("read");
                    assert!(matches!(out, ReadOutcome::Found(_)), "read: {out:?}");
                    out
                });
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("acquire_commit");
    for (name, store) in &stores {
        for payload in payloads {
            let (key, _) = session(store, payload);
            let delta = Delta::new().with_set(
                "item0",
                ItemValue::from_bytes(vec![b'z'; payload.item_size]),
            );
            group.throughput(Throughput::Bytes(delta.size() as u64));
            group.bench_function(BenchmarkId::new(*name, payload), |b| {
                b.to_async(&rt).iter(|| async {
                    let token = LockToken::generate().expect("token");
                    let out = store.acquire(&key, token, LOCK_TTL).await.expect("acquire");
                    assert!(
                        matches!(out, AcquireOutcome::Acquired(_)),
                        "acquire: {out:?}"
                    );
                    let out = store
                        .commit(&key, token, &delta, SESSION_TIMEOUT)
                        .await
                        .expect("commit");
                    assert_eq!(out, CommitOutcome::Committed);
                });
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("create_delete");
    for (name, store) in &stores {
        for payload in payloads {
            let items = make_items(payload);
            group.throughput(Throughput::Bytes(items_size(&items) as u64));
            group.bench_function(BenchmarkId::new(*name, payload), |b| {
                b.to_async(&rt).iter(|| async {
                    let key = SessionKey::new(app.clone(), SessionId::generate().expect("id"));
                    let out = store
                        .create(&key, &items, SESSION_TIMEOUT, true)
                        .await
                        .expect("create");
                    assert_eq!(out, CreateOutcome::Created);
                    let out = store.delete(&key).await.expect("delete");
                    assert_eq!(out, RemoveOutcome::Removed);
                });
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("write_concurrent");
    for (name, store) in &stores {
        for payload in payloads {
            let (key, _) = session(store, payload);
            let delta = Delta::new().with_set(
                "item0",
                ItemValue::from_bytes(vec![b'w'; payload.item_size]),
            );
            group.throughput(Throughput::Bytes(delta.size() as u64));
            group.bench_function(BenchmarkId::new(*name, payload), |b| {
                b.to_async(&rt).iter(|| async {
                    let out = store
                        .write_concurrent(&key, &delta, SESSION_TIMEOUT)
                        .await
                        .expect("write_concurrent");
                    assert_eq!(out, CommitOutcome::Committed);
                });
            });
        }
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    store_ops(&mut criterion);
    criterion.final_summary();
}
