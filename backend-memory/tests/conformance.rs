//! The conformance suite against `MemoryStore`, three times: directly (through
//! `Arc<dyn SessionStore>`); through `RetryLayer`, the layer the manager wraps every store
//! in; and with its optional capabilities hidden (`bare::`), which exercises the paths of stores
//! without them: lock polling, the `renew_id` fallback and the `Unsupported` answers.

use std::sync::Arc;
use std::time::Duration;

use backend_memory::MemoryStore;
use session_core::conformance::{self, HideCapabilities};
use session_core::{Layered, RetryLayer, RetryPolicy, SessionStore};

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials =
        conformance::trials(|| async { Ok(Arc::new(MemoryStore::new()) as Arc<dyn SessionStore>) });
    trials.extend(conformance::trials_with_prefix("resilient::", || async {
        let store = Layered::new(
            MemoryStore::new(),
            RetryLayer::new(
                RetryPolicy::new(Duration::from_secs(1)),
                Some(Duration::from_secs(5)),
            ),
        );
        Ok(Arc::new(store) as Arc<dyn SessionStore>)
    }));
    trials.extend(conformance::trials_with_prefix("bare::", || async {
        Ok(Arc::new(HideCapabilities::wrap(MemoryStore::new())) as Arc<dyn SessionStore>)
    }));
    conformance::run(args, trials)
}
