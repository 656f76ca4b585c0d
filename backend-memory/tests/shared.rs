//! The conformance suite's `shared::*` behaviours (two store instances sharing one server) checked
//! against themselves: with instances that share one `MemoryStore` every behaviour passes, and
//! with instances that each keep a copy of every read forever (a near cache that is never
//! invalidated) every behaviour fails, so none of them can pass by accident.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use backend_memory::MemoryStore;
use libtest_mimic::{Arguments, Trial};
use session_core::conformance::{self, StoreFactory};
use session_core::{Call, Layered, ReadOutcome, Reply, SessionKey, SessionStore, StoreLayer};

/// A layer that answers every read of a session it has read before from its copy, forever.
#[derive(Debug, Default)]
struct StaleReads(Mutex<HashMap<SessionKey, ReadOutcome>>);

impl StoreLayer for StaleReads {
    async fn around(
        &self, call: Call<'_>, inner: &dyn SessionStore,
    ) -> session_core::Result<Reply> {
        let Call::Read { key } = call else {
            return call.run(inner).await;
        };
        let copy = self.copies().get(key).cloned();
        if let Some(copy) = copy {
            return Ok(Reply::Read(copy));
        }
        let reply = call.run(inner).await?;
        if let Reply::Read(out) = &reply {
            self.copies().insert(key.clone(), out.clone());
        }
        Ok(reply)
    }
}

impl StaleReads {
    fn copies(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, ReadOutcome>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Instances over one shared `MemoryStore`, each behind a fresh `layer()`.
fn sharing<L: StoreLayer>(layer: fn() -> L) -> impl StoreFactory {
    let server = Arc::new(MemoryStore::new());
    move || {
        let store = Layered::new(Arc::clone(&server), layer());
        async move { Ok(Arc::new(store) as Arc<dyn SessionStore>) }
    }
}

/// A layer that changes nothing.
#[derive(Debug, Default)]
struct Plain;

impl StoreLayer for Plain {}

/// Runs `trials` and returns (passed, failed, ignored); the report goes to a log file.
fn run(name: &str, trials: Vec<Trial>) -> (u64, u64, u64) {
    let log = std::env::temp_dir().join(format!("shared-{name}-{}.log", std::process::id()));
    let mut args = Arguments::from_iter(["harness", "--test-threads=8"]);
    args.logfile = Some(log.display().to_string());
    let c = libtest_mimic::run(&args, trials);
    let _ = std::fs::remove_file(&log);
    (c.num_passed, c.num_failed, c.num_ignored)
}

fn shared_count() -> u64 {
    conformance::behaviour_names()
        .iter()
        .filter(|n| n.starts_with("shared::"))
        .count() as u64
}

#[test]
fn instances_sharing_one_store_pass() {
    let trials = conformance::shared_trials("", sharing(|| Plain));
    assert_eq!(run("plain", trials), (shared_count(), 0, 0));
}

#[test]
fn instances_with_stale_copies_fail_every_behaviour() {
    let trials = conformance::shared_trials("", sharing(StaleReads::default));
    assert_eq!(run("stale", trials), (0, shared_count(), 0));
}

#[test]
fn independent_instances_fail() {
    // Two memory stores share nothing: a session created through one is missing in the other.
    let factory = || async { Ok(Arc::new(MemoryStore::new()) as Arc<dyn SessionStore>) };
    let trials = conformance::shared_trials("", factory);
    assert_eq!(run("independent", trials), (0, shared_count(), 0));
}
