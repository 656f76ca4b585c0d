//! The conformance suite against `ReferenceStore`: one named test per behaviour of the contract
//! (docs/contract.md §5). A new store's runner is these lines with its own store.

use std::sync::Arc;

use reference_store::ReferenceStore;
use session_core::SessionStore;
use session_core::conformance;

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    // Called once per behaviour: every behaviour gets a store of its own.
    let trials = conformance::trials(|| async {
        Ok(Arc::new(ReferenceStore::new()) as Arc<dyn SessionStore>)
    });
    conformance::run(args, trials)
}
