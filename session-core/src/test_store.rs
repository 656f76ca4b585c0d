//! A scripted store for session-core's own unit tests: every operation first consults a script of
//! injected failures, then answers with a fixed, minimal outcome. It records when each attempt
//! happened (on tokio's clock, so tests can run with a paused clock).

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::{Error, Operation, Result};
use crate::id::{LockToken, SessionId};
use crate::model::{
    AcquireOutcome, ChangeIdOutcome, CommitOutcome, CreateOutcome, Delta, Items, ReadOutcome,
    ReleaseOutcome, RemoveOutcome, TouchOutcome,
};
use crate::names::SessionKey;
use crate::store::{Capabilities, ExpiryEvents, ReleaseWatch, SessionStore};

#[derive(Debug, Default)]
pub(crate) struct ScriptedStore {
    /// Failures to inject, consumed one per attempt; `None` = succeed.
    script: Mutex<Vec<Option<Error>>>,
    /// When every attempt started, and which operation it was.
    pub(crate) attempts: Mutex<Vec<(Operation, Instant)>>,
}

pub(crate) fn unavailable(operation: Operation) -> Error {
    Error::Unavailable {
        backend: "scripted",
        operation,
        source: "injected".into(),
    }
}

impl ScriptedStore {
    /// Fails the next attempts with the given errors, in order, then succeeds.
    pub(crate) fn failing_with(errors: Vec<Error>) -> Self {
        let mut script: Vec<Option<Error>> = errors.into_iter().map(Some).collect();
        script.reverse();
        Self {
            script: Mutex::new(script),
            attempts: Mutex::new(Vec::new()),
        }
    }

    /// Fails every attempt with `Unavailable`.
    pub(crate) fn always_failing() -> Self {
        Self::failing_with((0..1000).map(|_| unavailable(Operation::Read)).collect())
    }

    pub(crate) fn attempt_times(&self) -> Vec<Duration> {
        let attempts = self.attempts.lock().unwrap();
        let start = attempts.first().map(|a| a.1);
        attempts
            .iter()
            .map(|(_, t)| start.map_or(Duration::ZERO, |s| *t - s))
            .collect()
    }

    fn step(&self, op: Operation) -> Result<()> {
        self.attempts.lock().unwrap().push((op, Instant::now()));
        match self.script.lock().unwrap().pop() {
            Some(Some(err)) => Err(err),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl SessionStore for ScriptedStore {
    fn backend(&self) -> &'static str {
        "scripted"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
    }
    async fn read(&self, _: &SessionKey) -> Result<ReadOutcome> {
        self.step(Operation::Read).map(|()| ReadOutcome::Missing)
    }
    async fn acquire(&self, _: &SessionKey, _: LockToken, _: Duration) -> Result<AcquireOutcome> {
        self.step(Operation::Acquire)
            .map(|()| AcquireOutcome::Missing)
    }
    async fn commit(
        &self,
        _: &SessionKey,
        _: LockToken,
        _: &Delta,
        _: Duration,
    ) -> Result<CommitOutcome> {
        self.step(Operation::Commit)
            .map(|()| CommitOutcome::Committed)
    }
    async fn release(&self, _: &SessionKey, _: LockToken) -> Result<ReleaseOutcome> {
        self.step(Operation::Release)
            .map(|()| ReleaseOutcome::Released)
    }
    async fn create(
        &self,
        _: &SessionKey,
        _: &Items,
        _: Duration,
        _: bool,
    ) -> Result<CreateOutcome> {
        self.step(Operation::Create)
            .map(|()| CreateOutcome::Created)
    }
    async fn remove(&self, _: &SessionKey, _: LockToken) -> Result<RemoveOutcome> {
        self.step(Operation::Remove)
            .map(|()| RemoveOutcome::Removed)
    }
    async fn touch(&self, _: &SessionKey) -> Result<TouchOutcome> {
        self.step(Operation::Touch).map(|()| TouchOutcome::Touched)
    }
    async fn write_concurrent(
        &self,
        _: &SessionKey,
        _: &Delta,
        _: Duration,
    ) -> Result<CommitOutcome> {
        self.step(Operation::WriteConcurrent)
            .map(|()| CommitOutcome::Committed)
    }
    async fn delete(&self, _: &SessionKey) -> Result<RemoveOutcome> {
        self.step(Operation::Delete)
            .map(|()| RemoveOutcome::Removed)
    }
    async fn change_id(
        &self,
        _: &SessionKey,
        _: SessionId,
        _: LockToken,
    ) -> Result<ChangeIdOutcome> {
        Err(Error::Unsupported {
            backend: "scripted",
            operation: Operation::ChangeId,
        })
    }
    async fn purge_expired(&self, _: usize) -> Result<u64> {
        Err(Error::Unsupported {
            backend: "scripted",
            operation: Operation::PurgeExpired,
        })
    }
    async fn watch_release(&self, _: &SessionKey) -> Result<ReleaseWatch> {
        Err(Error::Unsupported {
            backend: "scripted",
            operation: Operation::WatchRelease,
        })
    }
    async fn expiry_events(&self) -> Result<ExpiryEvents> {
        Err(Error::Unsupported {
            backend: "scripted",
            operation: Operation::ExpiryEvents,
        })
    }
}
