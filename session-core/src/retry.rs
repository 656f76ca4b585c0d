//! The retry policy of SPEC §4 and [`ResilientStore`], the decorator that gives any store retries,
//! per-operation timeouts and a tracing span per operation. The manager wraps every store in it.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use tracing::Instrument;

use crate::error::{Error, Operation, Result};
use crate::id::{LockToken, SessionId};
use crate::model::{
    AcquireOutcome, ChangeIdOutcome, CommitOutcome, CreateOutcome, Delta, Items, ReadOutcome,
    ReleaseOutcome, RemoveOutcome, TouchOutcome,
};
use crate::names::SessionKey;
use crate::store::{Capabilities, ExpiryEvents, ReleaseWatch, SessionStore};

/// The ASP.NET Redis provider's retry schedule: the first retry 20 ms after a transient failure,
/// then one every second until the retry timeout, then one final attempt at the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    timeout: Duration,
}

impl RetryPolicy {
    /// Delay before the first retry.
    pub const FIRST_DELAY: Duration = Duration::from_millis(20);
    /// Delay between later retries.
    pub const INTERVAL: Duration = Duration::from_secs(1);

    /// Retries for up to `timeout` (`retryTimeoutInMilliseconds`); zero disables retries.
    pub const fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// No retries.
    pub const fn none() -> Self {
        Self::new(Duration::ZERO)
    }

    /// The retry budget.
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How long to wait before the next attempt, after `failed_attempts` transient failures of which
    /// the last ended `elapsed` after the first attempt started; `None` means give up.
    pub fn next_delay(&self, failed_attempts: u32, elapsed: Duration) -> Option<Duration> {
        if failed_attempts == 0 || elapsed >= self.timeout {
            return None;
        }
        let step = if failed_attempts == 1 {
            Self::FIRST_DELAY
        } else {
            Self::INTERVAL
        };
        Some(step.min(self.timeout - elapsed))
    }

    /// When each attempt starts, measured from the first, if every attempt failed instantly:
    /// `[0, 20 ms, 1.02 s, 2.02 s, ..., timeout]`.
    pub fn schedule(&self) -> Vec<Duration> {
        let mut at = vec![Duration::ZERO];
        let mut elapsed = Duration::ZERO;
        let mut failed = 1;
        while let Some(delay) = self.next_delay(failed, elapsed) {
            elapsed += delay;
            at.push(elapsed);
            failed += 1;
        }
        at
    }
}

/// A name for each outcome, recorded in tracing spans without printing session data.
trait OutcomeName {
    fn outcome_name(&self) -> &'static str;
}

macro_rules! outcome_names {
    ($($ty:ty { $($pat:pat => $name:literal),* $(,)? })*) => {$(
        impl OutcomeName for $ty {
            fn outcome_name(&self) -> &'static str {
                #[allow(unreachable_patterns)]
                match self { $($pat => $name,)* _ => "other" }
            }
        }
    )*};
}

outcome_names! {
    ReadOutcome { ReadOutcome::Missing => "missing", ReadOutcome::Locked(_) => "locked", ReadOutcome::Found(_) => "found" }
    AcquireOutcome { AcquireOutcome::Missing => "missing", AcquireOutcome::Locked(_) => "locked", AcquireOutcome::Acquired(_) => "acquired" }
    CommitOutcome { CommitOutcome::Committed => "committed", CommitOutcome::LockLost => "lock_lost", CommitOutcome::Missing => "missing" }
    ReleaseOutcome { ReleaseOutcome::Released => "released", ReleaseOutcome::LockLost => "lock_lost" }
    CreateOutcome { CreateOutcome::Created => "created", CreateOutcome::AlreadyExists => "already_exists" }
    RemoveOutcome { RemoveOutcome::Removed => "removed", RemoveOutcome::LockLost => "lock_lost", RemoveOutcome::Missing => "missing" }
    TouchOutcome { TouchOutcome::Touched => "touched", TouchOutcome::Missing => "missing" }
    ChangeIdOutcome { ChangeIdOutcome::Changed => "changed", ChangeIdOutcome::LockLost => "lock_lost", ChangeIdOutcome::AlreadyExists => "already_exists" }
    u64 { _ => "ok" }
    ReleaseWatch { _ => "ok" }
    ExpiryEvents { _ => "ok" }
}

/// A store decorator adding the retry policy, an operation timeout and a tracing span (backend,
/// operation, outcome, attempts; only an id prefix) to every operation.
///
/// Retries repeat only transient failures ([`Error::is_transient`]). They never apply a delta twice
/// and never turn a success into an error: `acquire`, `commit` and `release` rely on the store's
/// idempotency under retry (see [`SessionStore`]); a retried `create` that finds the session is
/// reported `Created` (the first attempt created it: fresh ids do not collide); a retried `remove` or
/// `delete` that finds nothing is reported `Removed`; `write_concurrent` is not retried, since
/// repeating it could overwrite a newer value.
///
/// [`SessionManager::new`](crate::SessionManager::new) wraps every store in one of these; wrapping
/// a store yourself as well multiplies the retry budgets.
#[derive(Debug)]
pub struct ResilientStore<S> {
    inner: S,
    policy: RetryPolicy,
    operation_timeout: Option<Duration>,
}

impl<S: SessionStore> ResilientStore<S> {
    /// Wraps `inner` with `policy` and an optional per-attempt `operation_timeout`.
    pub fn new(inner: S, policy: RetryPolicy, operation_timeout: Option<Duration>) -> Self {
        Self {
            inner,
            policy,
            operation_timeout,
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Runs `attempt` under the policy; returns the result and whether it came from a retry.
    async fn run<T, F, Fut>(
        &self,
        operation: Operation,
        key: Option<&SessionKey>,
        attempt: F,
    ) -> Result<(T, bool)>
    where
        T: OutcomeName,
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<T>> + Send,
    {
        self.run_with(self.policy, operation, key, attempt).await
    }

    /// Runs `attempt` once, with the operation timeout and the span but without retries.
    async fn run_once<T, F, Fut>(
        &self,
        operation: Operation,
        key: Option<&SessionKey>,
        attempt: F,
    ) -> Result<(T, bool)>
    where
        T: OutcomeName,
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<T>> + Send,
    {
        self.run_with(RetryPolicy::none(), operation, key, attempt)
            .await
    }

    async fn run_with<T, F, Fut>(
        &self,
        policy: RetryPolicy,
        operation: Operation,
        key: Option<&SessionKey>,
        attempt: F,
    ) -> Result<(T, bool)>
    where
        T: OutcomeName,
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<T>> + Send,
    {
        let backend = self.inner.backend();
        let span = tracing::debug_span!(
            "session_store",
            backend,
            operation = operation.as_str(),
            app = key.map(|k| k.app().as_str()),
            id = key.map(|k| k.id().prefix()),
            outcome = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        async {
            let start = tokio::time::Instant::now();
            let mut failed = 0u32;
            loop {
                let result = match self.operation_timeout {
                    Some(after) => tokio::time::timeout(after, attempt())
                        .await
                        .unwrap_or(Err(Error::Timeout {
                            backend,
                            operation,
                            after,
                        })),
                    None => attempt().await,
                };
                match result {
                    Ok(value) => {
                        let span = tracing::Span::current();
                        span.record("outcome", value.outcome_name());
                        span.record("attempts", failed + 1);
                        return Ok((value, failed > 0));
                    }
                    Err(err) if err.is_transient() => {
                        failed += 1;
                        match policy.next_delay(failed, start.elapsed()) {
                            Some(delay) => {
                                tracing::debug!(error = %err, ?delay, "transient failure, retrying");
                                tokio::time::sleep(delay).await;
                            }
                            None => {
                                let span = tracing::Span::current();
                                span.record("outcome", "error");
                                span.record("attempts", failed);
                                tracing::warn!(error = %err, "store operation failed");
                                return Err(err);
                            }
                        }
                    }
                    Err(err) => {
                        tracing::Span::current().record("outcome", "error");
                        tracing::warn!(error = %err, "store operation failed");
                        return Err(err);
                    }
                }
            }
        }
        .instrument(span)
        .await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<S: SessionStore> SessionStore for ResilientStore<S> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn read(&self, key: &SessionKey) -> Result<ReadOutcome> {
        let run = self.run(Operation::Read, Some(key), || self.inner.read(key));
        Ok(run.await?.0)
    }

    async fn acquire(
        &self,
        key: &SessionKey,
        token: LockToken,
        lock_ttl: Duration,
    ) -> Result<AcquireOutcome> {
        // The same token on every attempt: a retry after a lost reply finds its own lock.
        let run = self.run(Operation::Acquire, Some(key), || {
            self.inner.acquire(key, token, lock_ttl)
        });
        Ok(run.await?.0)
    }

    async fn commit(
        &self,
        key: &SessionKey,
        token: LockToken,
        delta: &Delta,
        timeout: Duration,
    ) -> Result<CommitOutcome> {
        let run = self.run(Operation::Commit, Some(key), || {
            self.inner.commit(key, token, delta, timeout)
        });
        Ok(run.await?.0)
    }

    async fn release(&self, key: &SessionKey, token: LockToken) -> Result<ReleaseOutcome> {
        let run = self.run(Operation::Release, Some(key), || {
            self.inner.release(key, token)
        });
        Ok(run.await?.0)
    }

    async fn create(
        &self,
        key: &SessionKey,
        items: &Items,
        timeout: Duration,
        initialized: bool,
    ) -> Result<CreateOutcome> {
        let run = self.run(Operation::Create, Some(key), || {
            self.inner.create(key, items, timeout, initialized)
        });
        Ok(match run.await? {
            (CreateOutcome::AlreadyExists, true) => CreateOutcome::Created,
            (outcome, _) => outcome,
        })
    }

    async fn remove(&self, key: &SessionKey, token: LockToken) -> Result<RemoveOutcome> {
        let run = self.run(Operation::Remove, Some(key), || {
            self.inner.remove(key, token)
        });
        Ok(match run.await? {
            (RemoveOutcome::Missing, true) => RemoveOutcome::Removed,
            (outcome, _) => outcome,
        })
    }

    async fn touch(&self, key: &SessionKey) -> Result<TouchOutcome> {
        let run = self.run(Operation::Touch, Some(key), || self.inner.touch(key));
        Ok(run.await?.0)
    }

    async fn write_concurrent(
        &self,
        key: &SessionKey,
        delta: &Delta,
        timeout: Duration,
    ) -> Result<CommitOutcome> {
        // Never retried: after a lost reply the delta may have been applied, and applying it again
        // could overwrite a newer value another lock-free writer stored in between.
        let run = self.run_once(Operation::WriteConcurrent, Some(key), || {
            self.inner.write_concurrent(key, delta, timeout)
        });
        Ok(run.await?.0)
    }

    async fn delete(&self, key: &SessionKey) -> Result<RemoveOutcome> {
        let run = self.run(Operation::Delete, Some(key), || self.inner.delete(key));
        Ok(match run.await? {
            (RemoveOutcome::Missing, true) => RemoveOutcome::Removed,
            (outcome, _) => outcome,
        })
    }

    async fn change_id(
        &self,
        key: &SessionKey,
        new_id: SessionId,
        token: LockToken,
    ) -> Result<ChangeIdOutcome> {
        let run = self.run(Operation::ChangeId, Some(key), || {
            self.inner.change_id(key, new_id, token)
        });
        Ok(run.await?.0)
    }

    async fn purge_expired(&self, batch: usize) -> Result<u64> {
        let run = self.run(Operation::PurgeExpired, None, || {
            self.inner.purge_expired(batch)
        });
        Ok(run.await?.0)
    }

    async fn watch_release(&self, key: &SessionKey) -> Result<ReleaseWatch> {
        let run = self.run(Operation::WatchRelease, Some(key), || {
            self.inner.watch_release(key)
        });
        Ok(run.await?.0)
    }

    async fn expiry_events(&self) -> Result<ExpiryEvents> {
        let run = self.run(Operation::ExpiryEvents, None, || self.inner.expiry_events());
        Ok(run.await?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn no_retry_when_timeout_is_zero() {
        assert_eq!(RetryPolicy::none().schedule(), [ms(0)]);
        assert_eq!(RetryPolicy::none().next_delay(1, ms(0)), None);
    }

    #[test]
    fn schedule_is_20ms_then_every_second_then_final() {
        assert_eq!(
            RetryPolicy::new(ms(2500)).schedule(),
            [ms(0), ms(20), ms(1020), ms(2020), ms(2500)]
        );
        assert_eq!(
            RetryPolicy::new(ms(5000)).schedule(),
            [
                ms(0),
                ms(20),
                ms(1020),
                ms(2020),
                ms(3020),
                ms(4020),
                ms(5000)
            ]
        );
    }

    #[test]
    fn short_timeouts_get_one_final_attempt() {
        assert_eq!(RetryPolicy::new(ms(10)).schedule(), [ms(0), ms(10)]);
        assert_eq!(RetryPolicy::new(ms(20)).schedule(), [ms(0), ms(20)]);
    }

    #[test]
    fn slow_failures_consume_the_budget() {
        let p = RetryPolicy::new(ms(1000));
        // An attempt that failed after 990 ms leaves 10 ms: the final attempt runs at the deadline.
        assert_eq!(p.next_delay(1, ms(990)), Some(ms(10)));
        // One that failed at or after the deadline is the last.
        assert_eq!(p.next_delay(2, ms(1000)), None);
        assert_eq!(p.next_delay(3, ms(4000)), None);
    }

    use crate::test_store::{ScriptedStore, unavailable};
    use std::sync::Arc;

    fn key() -> SessionKey {
        SessionKey::new(crate::AppName::default(), SessionId::generate().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn store_retries_on_the_schedule_then_succeeds() {
        let store = Arc::new(ScriptedStore::failing_with(vec![
            unavailable(Operation::Touch),
            unavailable(Operation::Touch),
            unavailable(Operation::Touch),
        ]));
        let resilient = ResilientStore::new(Arc::clone(&store), RetryPolicy::new(ms(5000)), None);
        assert_eq!(
            resilient.touch(&key()).await.unwrap(),
            TouchOutcome::Touched
        );
        assert_eq!(store.attempt_times(), [ms(0), ms(20), ms(1020), ms(2020)]);
    }

    #[tokio::test(start_paused = true)]
    async fn store_gives_up_after_the_final_attempt() {
        let store = Arc::new(ScriptedStore::always_failing());
        let resilient = ResilientStore::new(Arc::clone(&store), RetryPolicy::new(ms(2500)), None);
        let err = resilient.touch(&key()).await.unwrap_err();
        assert!(err.is_transient());
        assert_eq!(
            store.attempt_times(),
            [ms(0), ms(20), ms(1020), ms(2020), ms(2500)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let store = Arc::new(ScriptedStore::failing_with(vec![Error::Backend {
            backend: "scripted",
            operation: Operation::Touch,
            source: "denied".into(),
        }]));
        let resilient = ResilientStore::new(Arc::clone(&store), RetryPolicy::new(ms(5000)), None);
        assert!(matches!(
            resilient.touch(&key()).await,
            Err(Error::Backend { .. })
        ));
        assert_eq!(store.attempt_times().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retried_create_that_finds_the_session_is_created() {
        let store = Arc::new(ScriptedStore::failing_with(vec![unavailable(
            Operation::Create,
        )]));
        let resilient = ResilientStore::new(Arc::clone(&store), RetryPolicy::new(ms(1000)), None);
        let out = resilient
            .create(&key(), &Items::new(), ms(1000), true)
            .await
            .unwrap();
        assert_eq!(out, CreateOutcome::Created);
        assert_eq!(store.attempt_times().len(), 2);
    }

    /// Captures every span's name and fields, to check what the spans record.
    /// A span's name and its `(field, value)` pairs.
    type Captured = (String, Vec<(String, String)>);

    #[derive(Default, Clone)]
    struct Spans(Arc<std::sync::Mutex<Vec<Captured>>>);

    struct Fields<'a>(&'a mut Vec<(String, String)>);
    impl tracing::field::Visit for Fields<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push((field.name().to_owned(), format!("{value:?}")));
        }
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            self.0.push((field.name().to_owned(), value.to_owned()));
        }
    }

    impl<S> tracing_subscriber::Layer<S> for Spans
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut fields = Vec::new();
            attrs.record(&mut Fields(&mut fields));
            self.0
                .lock()
                .unwrap()
                .push((attrs.metadata().name().to_owned(), fields));
        }
        fn on_record(
            &self,
            _: &tracing::span::Id,
            values: &tracing::span::Record<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut spans = self.0.lock().unwrap();
            if let Some(last) = spans.last_mut() {
                values.record(&mut Fields(&mut last.1));
            }
        }
    }

    #[tokio::test]
    async fn every_operation_has_a_span_without_the_whole_id() {
        use tracing_subscriber::layer::SubscriberExt;
        let spans = Spans::default();
        let subscriber = tracing_subscriber::registry().with(spans.clone());
        let _guard = tracing::subscriber::set_default(subscriber);
        let store = ResilientStore::new(ScriptedStore::default(), RetryPolicy::none(), None);
        let k = key();
        store.touch(&k).await.unwrap();
        let spans = spans.0.lock().unwrap().clone();
        assert_eq!(spans.len(), 1, "{spans:?}");
        let (name, fields) = &spans[0];
        assert_eq!(name, "session_store");
        let field = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(field("backend"), Some("scripted"));
        assert_eq!(field("operation"), Some("touch"));
        assert_eq!(field("outcome"), Some("touched"));
        assert_eq!(field("attempts"), Some("1"));
        assert_eq!(field("id"), Some(k.id().prefix()));
        let everything = format!("{spans:?}");
        assert!(
            !everything.contains(k.id().expose()),
            "a whole session id leaked: {everything}"
        );
    }
}
