//! Per-operation cost on a real server: server CPU (`INFO cpu`, the whole process) with its
//! breakdown by command (`INFO commandstats`: a script's inner commands are counted inside
//! `evalsha` and again on their own) and this process's CPU, per
//! operation, for the bench's workloads (10 items × 150 B): W1 read, W2 acquire + commit of one
//! item, W3 create + delete. Concurrency 32, like the bench's second column.
//!
//! ```text
//! cargo run --release -p backend-redis --example opcost -- redis://127.0.0.1:6379 [ops]
//! ```
//!
//! Commandstats are per server, so run it against a server nobody else is using heavily (other
//! clients' commands are counted too).

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_redis::RedisStore;
use backend_redis::redis;
use session_core::{
    AppName, Config, Delta, ItemValue, Items, LockToken, SessionId, SessionKey, SessionStore,
};

const TASKS: usize = 32;

fn cpu_ticks() -> u64 {
    // utime + stime of this process, in clock ticks (field 14 and 15 of /proc/self/stat).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    n(11) + n(12)
}

async fn stats(raw: &mut redis::aio::MultiplexedConnection) -> Vec<(String, u64, u64)> {
    let text: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(raw)
        .await
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |f: &str| {
                rest.split(',')
                    .find_map(|x| x.strip_prefix(f))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            Some((name.to_owned(), field("calls=")?, field("usec=")?))
        })
        .filter(|(name, _, _)| !matches!(name.as_str(), "info" | "config|resetstat"))
        .collect()
}

/// The server's CPU seconds (user + system, its main thread and I/O included), `INFO cpu`.
async fn server_cpu(raw: &mut redis::aio::MultiplexedConnection) -> f64 {
    let text: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(raw)
        .await
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (name, v) = l.split_once(':')?;
            matches!(name, "used_cpu_sys" | "used_cpu_user")
                .then(|| v.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let ops: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(64_000);
    let app = AppName::new(&format!("/opcost/{}", SessionId::generate()?.expose()))?;
    let config = Config::builder()
        .url(&url)
        .application_name(app.clone())
        .build()?;
    let store = Arc::new(RedisStore::connect(&config).await?);
    let mut raw = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let mut items = Items::new();
    for i in 0..10 {
        items.insert(format!("item{i}"), ItemValue::from_bytes(vec![7u8; 150]));
    }
    let timeout = Duration::from_secs(1200);
    let keys: Arc<Vec<SessionKey>> = Arc::new(
        (0..1000)
            .map(|_| SessionId::generate().map(|id| SessionKey::new(app.clone(), id)))
            .collect::<Result<_, _>>()?,
    );
    for key in keys.iter() {
        store.create(key, &items, timeout, true).await?;
    }
    let values = [vec![1u8; 150], vec![2u8; 150]];
    for workload in ["W1", "W2", "W3"] {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async::<()>(&mut raw)
            .await?;
        let cpu = cpu_ticks();
        let server_before = server_cpu(&mut raw).await;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let (store, keys, items) = (Arc::clone(&store), Arc::clone(&keys), items.clone());
            let values = values.clone();
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..ops / TASKS {
                    let key = &keys[(t * 31 + i) % keys.len()];
                    match workload {
                        "W1" => {
                            store.read(key).await?;
                        }
                        "W2" => {
                            // Disjoint sessions per task: no lock contention.
                            let key = &keys[(t + i * TASKS) % keys.len()];
                            let token = LockToken::generate()?;
                            store.acquire(key, token, Duration::from_secs(110)).await?;
                            let delta = Delta::new()
                                .with_set("item0", ItemValue::from_bytes(values[i % 2].clone()));
                            store.commit(key, token, &delta, timeout).await?;
                        }
                        _ => {
                            let key = SessionKey::new(app.clone(), SessionId::generate()?);
                            store.create(&key, &items, timeout, true).await?;
                            store.delete(&key).await?;
                        }
                    }
                }
                Ok::<(), session_core::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let elapsed = start.elapsed();
        let client_ticks = cpu_ticks() - cpu;
        let n = (ops / TASKS * TASKS) as f64;
        let server = server_cpu(&mut raw).await - server_before;
        let stats = stats(&mut raw).await;
        let detail: Vec<String> = stats
            .iter()
            .map(|(name, calls, usec)| {
                format!(
                    "{name} {:.2}x{:.2}us",
                    *calls as f64 / n,
                    *usec as f64 / *calls as f64
                )
            })
            .collect();
        println!(
            "{workload}: {:.0} ops/s, server {:.2} us/op, client {:.2} us/op | {}",
            n / elapsed.as_secs_f64(),
            server * 1e6 / n,
            client_ticks as f64 * 10_000.0 / n,
            detail.join(", ")
        );
    }
    for key in keys.iter() {
        store.delete(key).await?;
    }
    Ok(())
}
