//! A scripted store for session-core's own unit tests: every operation first consults a script of
//! injected failures, then answers with a fixed, minimal outcome. It records when each attempt
//! happened (on tokio's clock, so tests can run with a paused clock).

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::{Error, Operation, Result};
use crate::id::{LockToken, SessionId};
use crate::layer::{Call, Reply, forward_store};
use crate::model::{
    AcquireOutcome, ChangeIdOutcome, CommitOutcome, CreateOutcome, Delta, Items, LockInfo,
    ReadOutcome, ReleaseOutcome, RemoveOutcome, TouchOutcome,
};
use crate::names::SessionKey;
use crate::store::{Capabilities, ExpiryEvents, ReleaseWatch, SessionStore};

#[derive(Debug)]
pub(crate) struct ScriptedStore {
    /// Failures to inject, consumed one per attempt; `None` = succeed.
    pub(crate) script: Mutex<Vec<Option<Error>>>,
    /// When every attempt started, and which operation it was.
    pub(crate) attempts: Mutex<Vec<(Operation, Instant)>>,
    /// What `release` answers once it gets through.
    pub(crate) release_outcome: Mutex<ReleaseOutcome>,
    /// What `create` answers once it gets through.
    pub(crate) create_outcome: CreateOutcome,
    /// How many more `acquire` attempts find the session locked by another request.
    pub(crate) locked_acquires: Mutex<u32>,
}

impl Default for ScriptedStore {
    fn default() -> Self {
        Self::failing_with(Vec::new())
    }
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
            release_outcome: Mutex::new(ReleaseOutcome::Released),
            create_outcome: CreateOutcome::Created,
            locked_acquires: Mutex::new(0),
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

impl ScriptedStore {
    /// The fixed answer to each operation once the script lets it through.
    fn answer(&self, call: Call<'_>) -> Result<Reply> {
        self.step(call.operation())?;
        Ok(match call {
            Call::Read { .. } => Reply::Read(ReadOutcome::Missing),
            Call::Acquire { .. } => {
                let mut locked = self.locked_acquires.lock().unwrap();
                if *locked > 0 {
                    *locked -= 1;
                    let info = LockInfo::new(LockToken::generate()?, Duration::ZERO);
                    Reply::Acquire(AcquireOutcome::Locked(info))
                } else {
                    Reply::Acquire(AcquireOutcome::Missing)
                }
            }
            Call::Commit { .. } | Call::WriteConcurrent { .. } => {
                Reply::Commit(CommitOutcome::Committed)
            }
            Call::Release { .. } => Reply::Release(
                *self
                    .release_outcome
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            ),
            Call::Create { .. } => Reply::Create(self.create_outcome),
            Call::Remove { .. } | Call::Delete { .. } => Reply::Remove(RemoveOutcome::Removed),
            Call::Touch { .. } => Reply::Touch(TouchOutcome::Touched),
            other => {
                return Err(Error::Unsupported {
                    backend: "scripted",
                    operation: other.operation(),
                });
            }
        })
    }
}

forward_store! {
    impl [] for ScriptedStore;
    backend(_this) = "scripted";
    capabilities(_this) = Capabilities::none();
    refresh_window(_this) = crate::RefreshWindow::EXACT;
    run(this, call) = std::future::ready(this.answer(call));
}
