//! The conformance suite against `MemoryStore`, three times: directly (through
//! `Arc<dyn SessionStore>`); through `RetryLayer`, the layer the manager wraps every store
//! in; and with its optional capabilities hidden (`bare::`), which exercises the paths of stores
//! without them: lock polling, the `renew_id` fallback and the `Unsupported` answers. All three
//! run with the default refresh window; the expiry behaviours run once more with exact sliding
//! (`exact::`, `RefreshWindow::EXACT`), so that both windows are tested.

use std::sync::Arc;
use std::time::Duration;

use backend_memory::{MemoryOptions, MemoryStore};
use session_core::conformance::{self, HideCapabilities};
use session_core::{Layered, RefreshWindow, RetryLayer, RetryPolicy, SessionStore};

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
    trials.extend(conformance::expiry_trials("exact::", || async {
        let exact = MemoryOptions::new().with_refresh_window(RefreshWindow::EXACT);
        Ok(Arc::new(MemoryStore::with_options(exact)) as Arc<dyn SessionStore>)
    }));
    trials.extend(conformance::trials_with_prefix("bare::", || async {
        Ok(Arc::new(HideCapabilities::wrap(MemoryStore::new())) as Arc<dyn SessionStore>)
    }));
    conformance::run(args, trials)
}
