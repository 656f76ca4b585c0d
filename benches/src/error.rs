//! The benchmark's errors: each names the backend (and workload) it came from.

use std::path::PathBuf;

use session_core::BoxError;

/// A benchmark failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A store or floor client could not connect.
    #[error("{backend}: cannot connect to {url}: {source}")]
    Connect {
        /// The backend.
        backend: &'static str,
        /// The URL, with any password redacted.
        url: String,
        /// The cause.
        source: BoxError,
    },
    /// A store operation failed during a workload or setup.
    #[error("{backend} {workload}: store failed: {source}")]
    Store {
        /// The backend.
        backend: &'static str,
        /// The workload or setup step.
        workload: String,
        /// The cause.
        source: session_core::Error,
    },
    /// A store answered with an outcome the workload does not expect.
    #[error("{backend} {workload}: unexpected outcome: {what}")]
    Unexpected {
        /// The backend.
        backend: &'static str,
        /// The workload.
        workload: String,
        /// What was expected and what came.
        what: String,
    },
    /// A peer (`tower-sessions`) store failed during a workload or setup.
    #[error("{backend} {workload}: peer store failed: {source}")]
    Peer {
        /// The peer, e.g. `peer:tower-sessions-redis`.
        backend: &'static str,
        /// The workload or setup step.
        workload: String,
        /// The cause (tower-sessions' own error, which carries only a message).
        source: tower_sessions_core::session_store::Error,
    },
    /// A floor client failed.
    #[error("{backend} floor: {source}")]
    Floor {
        /// The backend.
        backend: &'static str,
        /// The cause.
        source: BoxError,
    },
    /// The JSON report or chart could not be written.
    #[error("cannot write {path}: {reason}")]
    Output {
        /// The file.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}
