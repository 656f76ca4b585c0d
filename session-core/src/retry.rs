//! The retry policy of docs/contract.md §4 and [`RetryLayer`], the store layer that gives any store retries,
//! per-operation timeouts and a tracing span per operation. The manager wraps every store in it.

use std::time::Duration;

use tracing::Instrument;

use crate::error::{Error, Result};
use crate::layer::{Call, Layered, Reply, StoreLayer};
use crate::model::{
    ChangeIdOutcome, CommitOutcome, CreateOutcome, ReadOutcome, ReleaseOutcome, RemoveOutcome,
};
use crate::store::SessionStore;

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

/// The retry layer: the retry policy, a per-attempt operation timeout, and a tracing span (backend,
/// operation, outcome, attempts; only an id prefix) around every operation. The manager wraps
/// every store in it ([`ResilientStore`]).
///
/// Retries repeat only transient failures ([`Error::is_transient`]). They never apply a delta twice
/// and never turn a success into an error:
/// - `acquire` and `commit` rely on the store's idempotency under retry (see [`SessionStore`]);
/// - `release`, `create`, `remove` and `delete` are settled here: an outcome that a retry finds
///   after an earlier attempt of the same call may have been applied is read as that attempt's
///   success: a retried `release` that finds its lock gone is `Released`, a retried `create` that
///   finds the session is `Created` (fresh ids do not collide), a retried `remove` or `delete` that
///   finds nothing is `Removed`. (The price: a lock lost by other means while a release was being
///   retried is reported `Released`; nothing is written either way.)
/// - a retried `commit` that answers `LockLost` may have been applied by an earlier attempt whose
///   reply was lost, before the next request took the lock and committed (the store's memory of a
///   commit ends there, docs/contract.md §2): it is the earlier attempt's transient error, not
///   `LockLost`, which would say that nothing was written;
/// - a retried `change_id` that answers `LockLost` is `Changed` when the new id holds the session
///   under this request's lock (an earlier attempt moved it); if that cannot be read, it is the
///   earlier attempt's transient error.
/// - `write_concurrent` is not retried, since repeating it could overwrite a newer value.
///
/// The operation timeout is this layer's: it bounds each attempt, and a timed-out attempt is a
/// transient failure ([`Error::Timeout`]). Backends derive their drivers' timeouts from it, never
/// enforce it a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryLayer {
    policy: RetryPolicy,
    operation_timeout: Option<Duration>,
}

/// A store wrapped in the [`RetryLayer`].
pub type ResilientStore<S> = Layered<S, RetryLayer>;

impl RetryLayer {
    /// Retries under `policy`, each attempt bounded by `operation_timeout` (none: unbounded).
    pub const fn new(policy: RetryPolicy, operation_timeout: Option<Duration>) -> Self {
        Self {
            policy,
            operation_timeout,
        }
    }

    /// The retry policy.
    pub const fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// The per-attempt operation timeout.
    pub const fn operation_timeout(&self) -> Option<Duration> {
        self.operation_timeout
    }

    /// Runs `call` under `policy`; returns the reply and, when it came from a retry, the transient
    /// error of the attempt before it.
    async fn attempts(
        &self, policy: RetryPolicy, call: Call<'_>, inner: &dyn SessionStore,
    ) -> Result<(Reply, Option<Error>)> {
        let (backend, operation) = (inner.backend(), call.operation());
        let start = tokio::time::Instant::now();
        let mut failed = 0u32;
        let mut last_failure = None;
        loop {
            let result = match self.operation_timeout {
                Some(after) => tokio::time::timeout(after, call.run(inner))
                    .await
                    .unwrap_or(Err(Error::Timeout {
                        backend,
                        operation,
                        after,
                    })),
                None => call.run(inner).await,
            };
            let span = tracing::Span::current();
            match result {
                Ok(reply) => {
                    span.record("outcome", reply.outcome_name());
                    span.record("attempts", failed + 1);
                    return Ok((reply, last_failure));
                }
                Err(err) if err.is_transient() => {
                    failed += 1;
                    if let Some(delay) = policy.next_delay(failed, start.elapsed()) {
                        tracing::debug!(error = %err, ?delay, "transient failure, retrying");
                        last_failure = Some(err);
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    span.record("outcome", "error");
                    span.record("attempts", failed);
                    tracing::warn!(error = %err, "store operation failed");
                    return Err(err);
                }
                Err(err) => {
                    span.record("outcome", "error");
                    tracing::warn!(error = %err, "store operation failed");
                    return Err(err);
                }
            }
        }
    }
}

impl StoreLayer for RetryLayer {
    async fn around(&self, call: Call<'_>, inner: &dyn SessionStore) -> Result<Reply> {
        let key = call.key();
        let span = tracing::debug_span!(
            "session_store",
            backend = inner.backend(),
            operation = call.operation().as_str(),
            app = key.map(|k| k.app().as_str()),
            id = key.map(|k| k.id().prefix()),
            outcome = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        // Never retried: after a lost reply the delta may have been applied, and applying it again
        // could overwrite a newer value another lock-free writer stored in between.
        let policy = match call {
            Call::WriteConcurrent { .. } => RetryPolicy::none(),
            _ => self.policy,
        };
        let (reply, earlier) = self.attempts(policy, call, inner).instrument(span).await?;
        let Some(earlier) = earlier else {
            return Ok(reply);
        };
        Ok(match reply {
            Reply::Release(ReleaseOutcome::LockLost) => Reply::Release(ReleaseOutcome::Released),
            Reply::Create(CreateOutcome::AlreadyExists) => Reply::Create(CreateOutcome::Created),
            Reply::Remove(RemoveOutcome::Missing) => Reply::Remove(RemoveOutcome::Removed),
            Reply::Commit(CommitOutcome::LockLost) => return Err(earlier),
            Reply::ChangeId(ChangeIdOutcome::LockLost) => {
                let Call::ChangeId { key, new_id, token } = call else {
                    return Ok(reply);
                };
                // One look, bounded like an attempt.
                let new_key = key.with_id(new_id);
                let look = inner.read(&new_key);
                let looked = match self.operation_timeout {
                    Some(after) => tokio::time::timeout(after, look).await.ok(),
                    None => Some(look.await),
                };
                match looked {
                    Some(Ok(ReadOutcome::Locked(info))) if info.token == token => {
                        Reply::ChangeId(ChangeIdOutcome::Changed)
                    }
                    Some(Ok(_)) => reply,
                    Some(Err(_)) | None => return Err(earlier),
                }
            }
            reply => reply,
        })
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

    use crate::error::Operation;
    use crate::id::SessionId;
    use crate::model::{Items, TouchOutcome};
    use crate::names::SessionKey;
    use crate::test_store::{ScriptedStore, unavailable};
    use std::sync::Arc;

    fn resilient<S: SessionStore>(store: S, retry_for: Duration) -> ResilientStore<S> {
        Layered::new(store, RetryLayer::new(RetryPolicy::new(retry_for), None))
    }

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
        let resilient = resilient(Arc::clone(&store), ms(5000));
        assert_eq!(
            resilient.touch(&key()).await.unwrap(),
            TouchOutcome::Touched
        );
        assert_eq!(store.attempt_times(), [ms(0), ms(20), ms(1020), ms(2020)]);
    }

    #[tokio::test(start_paused = true)]
    async fn store_gives_up_after_the_final_attempt() {
        let store = Arc::new(ScriptedStore::always_failing());
        let resilient = resilient(Arc::clone(&store), ms(2500));
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
        let resilient = resilient(Arc::clone(&store), ms(5000));
        assert!(matches!(
            resilient.touch(&key()).await,
            Err(Error::Backend { .. })
        ));
        assert_eq!(store.attempt_times().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retried_release_that_finds_its_lock_gone_is_released() {
        // The first attempt's reply was lost; the retry finds the lock gone (the first released it).
        let store = Arc::new(ScriptedStore::failing_with(vec![unavailable(
            Operation::Release,
        )]));
        *store.release_outcome.lock().unwrap() = ReleaseOutcome::LockLost;
        let resilient = resilient(Arc::clone(&store), ms(1000));
        let token = crate::id::LockToken::generate().unwrap();
        let out = resilient.release(&key(), token).await.unwrap();
        assert_eq!(out, ReleaseOutcome::Released);
        assert_eq!(store.attempt_times().len(), 2);
        // Without a retry, LockLost is what the store said and is reported as such.
        let out = resilient.release(&key(), token).await.unwrap();
        assert_eq!(out, ReleaseOutcome::LockLost);
    }

    #[tokio::test(start_paused = true)]
    async fn retried_create_that_finds_the_session_is_created() {
        let store = Arc::new(ScriptedStore {
            create_outcome: CreateOutcome::AlreadyExists,
            ..ScriptedStore::failing_with(vec![unavailable(Operation::Create)])
        });
        let resilient = resilient(Arc::clone(&store), ms(1000));
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
            &self, attrs: &tracing::span::Attributes<'_>, _: &tracing::span::Id,
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
            &self, _: &tracing::span::Id, values: &tracing::span::Record<'_>,
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
        let store = resilient(ScriptedStore::default(), ms(0));
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
