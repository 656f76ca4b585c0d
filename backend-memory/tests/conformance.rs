//! The conformance suite against `MemoryStore`: directly (through `Arc<dyn SessionStore>`), and
//! through `ResilientStore`, the decorator the manager wraps every store in.

use std::sync::Arc;
use std::time::Duration;

use backend_memory::MemoryStore;
use session_core::{ResilientStore, RetryPolicy, SessionStore, conformance};

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials =
        conformance::trials(|| async { Ok(Arc::new(MemoryStore::new()) as Arc<dyn SessionStore>) });
    trials.extend(conformance::trials_with_prefix("resilient::", || async {
        let store = ResilientStore::new(
            MemoryStore::new(),
            RetryPolicy::new(Duration::from_secs(1)),
            Some(Duration::from_secs(5)),
        );
        Ok(Arc::new(store) as Arc<dyn SessionStore>)
    }));
    conformance::run(args, trials)
}
