//! Helpers shared by the behaviours, and two layers the suite applies to stores: [`Faults`], the
//! fault-injecting layer the policy behaviours use, and [`HideCapabilities`].
//!
//! The helpers name the steps the behaviours repeat: set a session up (`seed*`), take or look at
//! its lock (`lock`, `acquire_fresh`, `take_over`), read it (`found`, `is_missing`) and check what
//! the contract requires (`expect*`, `held_by`, `slides_while_locked`). The manager and policy
//! behaviours store a session through a manager (`new_n1`, `store_n1`), open it again (`reopen`,
//! `open_later`) and bound their waits (`within`). A check fails with the message it is given,
//! which cites the contract rule; a check of an outcome or a value appends `, got <what it got>`.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use super::{Failed, Harness, Outcome, check};
use crate::{
    Access, AcquireOutcome, AppName, Call, Capabilities, CreateOutcome, Delta, EndOutcome, Error,
    ItemValue, Items, Layered, LockInfo, LockToken, Operation, ReadOutcome, Reply, Session,
    SessionId, SessionKey, SessionManager, SessionStore, Snapshot, StoreLayer, decode_value,
    encode_value,
};

/// A long lock TTL: locks in these behaviours are never stale unless a behaviour says so.
pub(super) const LONG_TTL: Duration = Duration::from_secs(600);
/// A long session timeout, for behaviours that are not about expiry.
pub(super) const LONG: Duration = Duration::from_secs(600);
/// The timeout of sliding-expiry behaviours, and the step between accesses (well under it).
pub(super) const SLIDE_TIMEOUT: Duration = Duration::from_millis(1500);
pub(super) const SLIDE_STEP: Duration = Duration::from_millis(1000);
/// A session timeout that has surely passed after [`EXPIRE_WAIT`].
pub(super) const SHORT: Duration = Duration::from_millis(300);
pub(super) const EXPIRE_WAIT: Duration = Duration::from_millis(800);

pub(super) fn val<T: Serialize>(v: T) -> ItemValue {
    encode_value("item", &v).unwrap_or_else(|_| ItemValue::from_bytes(Vec::new()))
}

pub(super) fn items<T: Serialize + Copy>(pairs: &[(&str, T)]) -> Items {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), val(*v)))
        .collect()
}

/// A delta that sets item `a` to `v`.
pub(super) fn set_a(v: u32) -> Delta {
    Delta::new().with_set("a", val(v))
}

pub(super) fn get<T: DeserializeOwned>(items: &Items, name: &str) -> Result<Option<T>, Failed> {
    items
        .get(name)
        .map(|v| decode_value(name, v))
        .transpose()
        .map_err(Failed::from)
}

pub(super) async fn sleep(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Fails with `what, got <got>` unless `got` is `want`.
pub(super) fn expect<T: PartialEq + Debug>(got: T, want: T, what: &str) -> Outcome {
    check!(got == want, "{what}, got {got:?}");
    Ok(())
}

/// What `read` and `acquire` outcomes have in common: `Missing`, or `Locked` by a holder.
pub(super) trait Lookup: Debug {
    /// The holder, for a `Locked` outcome.
    fn holder(&self) -> Option<LockInfo>;
    /// Whether the outcome is `Missing`.
    fn is_missing(&self) -> bool;
}

/// `Lookup` for the outcomes of `read` and `acquire`, whose `Missing` and `Locked` variants agree.
macro_rules! lookup {
    ($($outcome:ident),*) => {$(
        impl Lookup for $outcome {
            fn holder(&self) -> Option<LockInfo> {
                match self {
                    Self::Locked(info) => Some(*info),
                    _ => None,
                }
            }

            fn is_missing(&self) -> bool {
                matches!(self, Self::Missing)
            }
        }
    )*};
}
lookup!(ReadOutcome, AcquireOutcome);

impl<T: Lookup + ?Sized> Lookup for Box<T> {
    fn holder(&self) -> Option<LockInfo> {
        (**self).holder()
    }

    fn is_missing(&self) -> bool {
        (**self).is_missing()
    }
}

/// The holder a `Locked` outcome reports; fails with `what, got <out>` for any other outcome.
pub(super) fn expect_locked(out: impl Lookup, what: &str) -> Result<LockInfo, Failed> {
    out.holder()
        .ok_or_else(|| Failed::new(format!("{what}, got {out:?}")))
}

/// Fails with `what, got <out>` unless the outcome is `Missing`.
pub(super) fn expect_gone(out: impl Lookup, what: &str) -> Outcome {
    check!(out.is_missing(), "{what}, got {out:?}");
    Ok(())
}

/// The snapshot of an `Acquired` outcome; fails with `what, got <out>` otherwise.
pub(super) fn expect_acquired(out: AcquireOutcome, what: &str) -> Result<Snapshot, Failed> {
    match out {
        AcquireOutcome::Acquired(s) => Ok(s),
        other => Err(Failed::new(format!("{what}, got {other:?}"))),
    }
}

async fn create_fresh(
    h: &Harness, items: &Items, timeout: Duration, initialized: bool,
) -> Result<SessionKey, Failed> {
    let key = h.key()?;
    let out = h.store().create(&key, items, timeout, initialized).await?;
    expect(
        out,
        CreateOutcome::Created,
        "create of a fresh id: expected Created",
    )?;
    Ok(key)
}

/// Creates an initialized session with `items` and `timeout`; fails unless `Created`.
pub(super) async fn seed(
    h: &Harness, items: &Items, timeout: Duration,
) -> Result<SessionKey, Failed> {
    create_fresh(h, items, timeout, true).await
}

/// Creates an initialized session holding `a = 1` with `timeout`; fails unless `Created`.
pub(super) async fn seed_a1(h: &Harness, timeout: Duration) -> Result<SessionKey, Failed> {
    seed(h, &items(&[("a", 1u32)]), timeout).await
}

/// [`seed`], then [`lock`]: the key and the holder's token.
pub(super) async fn seed_locked(
    h: &Harness, items: &Items, timeout: Duration,
) -> Result<(SessionKey, LockToken), Failed> {
    let key = seed(h, items, timeout).await?;
    let (_, token) = lock(h, &key).await?;
    Ok((key, token))
}

/// [`seed_a1`], then [`lock`]: the key and the holder's token.
pub(super) async fn seed_a1_locked(
    h: &Harness, timeout: Duration,
) -> Result<(SessionKey, LockToken), Failed> {
    seed_locked(h, &items(&[("a", 1u32)]), timeout).await
}

/// [`seed_a1`] with the short timeout, then waits until it has surely expired.
pub(super) async fn seed_expired(h: &Harness) -> Result<SessionKey, Failed> {
    let key = seed_a1(h, SHORT).await?;
    sleep(EXPIRE_WAIT).await;
    Ok(key)
}

/// [`seed_a1_locked`] with the short timeout, then waits until it has surely expired: the key and
/// the token of the lock that expired with it.
pub(super) async fn seed_expired_locked(h: &Harness) -> Result<(SessionKey, LockToken), Failed> {
    let locked = seed_a1_locked(h, SHORT).await?;
    sleep(EXPIRE_WAIT).await;
    Ok(locked)
}

/// The key with the id of `key` in another application (docs/contract.md §1: a different session).
pub(super) fn in_other_app(h: &Harness, key: &SessionKey) -> Result<SessionKey, Failed> {
    let other = AppName::new(&format!("{}-other", h.app()))?;
    Ok(SessionKey::new(other, *key.id()))
}

/// Creates an empty, uninitialized session (`create` with `initialized = false`, ASP.NET's
/// `CreateUninitializedItem`) with the long timeout; fails unless `Created`.
pub(super) async fn seed_uninitialized(h: &Harness) -> Result<SessionKey, Failed> {
    create_fresh(h, &Items::new(), LONG, false).await
}

/// Acquires `key` with a fresh token and the long lock TTL.
pub(super) async fn acquire_fresh(h: &Harness, key: &SessionKey) -> Result<AcquireOutcome, Failed> {
    Ok(h.store()
        .acquire(key, LockToken::generate()?, LONG_TTL)
        .await?)
}

/// Acquires `key`; fails unless `Acquired`. Returns the snapshot and token.
pub(super) async fn lock(h: &Harness, key: &SessionKey) -> Result<(Snapshot, LockToken), Failed> {
    let token = LockToken::generate()?;
    let out = h.store().acquire(key, token, LONG_TTL).await?;
    let what = "acquire of an unlocked session: expected Acquired";
    Ok((expect_acquired(out, what)?, token))
}

/// Lets the lock on `key` age 300 ms, then acquires with a 100 ms lock TTL: the stale lock must
/// be taken over in that step (docs/contract.md §2); fails with `what, got <outcome>` otherwise.
/// Returns the new holder's snapshot and token.
pub(super) async fn take_over(
    h: &Harness, key: &SessionKey, what: &str,
) -> Result<(Snapshot, LockToken), Failed> {
    sleep(Duration::from_millis(300)).await;
    let token = LockToken::generate()?;
    let out = h
        .store()
        .acquire(key, token, Duration::from_millis(100))
        .await?;
    Ok((expect_acquired(out, what)?, token))
}

/// Fails with `what, got <read outcome>` unless `key` reads as `Locked` by `token`.
pub(super) async fn held_by(
    h: &Harness, key: &SessionKey, token: LockToken, what: &str,
) -> Outcome {
    let held = h.store().read(key).await?;
    check!(
        held.holder().is_some_and(|i| i.token == token),
        "{what}, got {held:?}"
    );
    Ok(())
}

/// The two operations that report a lock they do not take: `read`, and `acquire` of a lock younger
/// than the lock TTL (here the long one).
#[derive(Debug, Clone, Copy)]
pub(super) enum Look {
    /// `read`.
    Read,
    /// `acquire` with a fresh token and the long lock TTL.
    Acquire,
}

async fn look(h: &Harness, key: &SessionKey, by: Look) -> Result<Box<dyn Lookup>, Failed> {
    Ok(match by {
        Look::Read => Box::new(h.store().read(key).await?),
        Look::Acquire => Box::new(acquire_fresh(h, key).await?),
    })
}

/// Locks a session with the sliding timeout and looks at it `by` twice, a slide step apart: both
/// must report it `Locked`, the second only because the first slid the expiry (docs/contract.md
/// §2). Fails with `what, got <outcome>` if the second does not.
pub(super) async fn slides_while_locked(h: &Harness, by: Look, what: &str) -> Outcome {
    let (key, _) = seed_a1_locked(h, SLIDE_TIMEOUT).await?;
    sleep(SLIDE_STEP).await;
    expect_locked(look(h, &key, by).await?, "expected Locked")?;
    sleep(SLIDE_STEP).await;
    expect_locked(look(h, &key, by).await?, what)?;
    Ok(())
}

/// Waits a slide step more and fails with `what` unless `key` is still found: called a slide step
/// after a session with the sliding timeout was created and a step after an operation slid its
/// expiry, it checks that the operation did slide it (docs/contract.md §1).
pub(super) async fn expect_slid(h: &Harness, key: &SessionKey, what: &str) -> Outcome {
    sleep(SLIDE_STEP).await;
    found(h, key).await.map_err(|_| Failed::new(what))?;
    Ok(())
}

/// Reads `key`; fails unless `Found`.
pub(super) async fn found(h: &Harness, key: &SessionKey) -> Result<Snapshot, Failed> {
    match h.store().read(key).await? {
        ReadOutcome::Found(s) => Ok(s),
        other => Err(Failed::new(format!("read: expected Found, got {other:?}"))),
    }
}

/// Fails with `what, got <value>` unless item `name` of `snap` decodes to `want`.
pub(super) fn expect_item(snap: &Snapshot, name: &str, want: u32, what: &str) -> Outcome {
    expect(get::<u32>(&snap.items, name)?, Some(want), what)
}

/// Reads `key` (fails unless `Found`), then [`expect_item`].
pub(super) async fn expect_found_item(
    h: &Harness, key: &SessionKey, name: &str, want: u32, what: &str,
) -> Outcome {
    expect_item(&found(h, key).await?, name, want, what)
}

/// Whether `key` reads as `Missing`.
pub(super) async fn is_missing(h: &Harness, key: &SessionKey) -> Result<bool, Failed> {
    Ok(h.store().read(key).await?.is_missing())
}

/// Fails with `what` unless `key` reads as `Missing`.
pub(super) async fn expect_missing(h: &Harness, key: &SessionKey, what: &str) -> Outcome {
    check!(is_missing(h, key).await?, "{what}");
    Ok(())
}

/// Fails with `what, got <read outcome>` unless `key` reads as `Found` (exists and is unlocked).
pub(super) async fn expect_found(h: &Harness, key: &SessionKey, what: &str) -> Outcome {
    let out = h.store().read(key).await?;
    check!(matches!(out, ReadOutcome::Found(_)), "{what}, got {out:?}");
    Ok(())
}

/// Fails with `what` if `key` reads as `Missing`.
pub(super) async fn expect_exists(h: &Harness, key: &SessionKey, what: &str) -> Outcome {
    check!(!is_missing(h, key).await?, "{what}");
    Ok(())
}

/// Fails with `what, got <value>` unless `value` matches the pattern (and its guard). The value is
/// matched by reference, so it stays usable.
macro_rules! expect_matches {
    ($value:expr, $pat:pat $(if $guard:expr)?, $what:expr $(,)?) => {
        let got = &$value;
        $crate::conformance::check!(matches!(got, $pat $(if $guard)?), "{}, got {got:?}", $what);
    };
}
pub(super) use expect_matches;

/// `fut`'s output; fails with `what` unless it finishes within `limit`.
pub(super) async fn within<F: Future>(
    limit: Duration, what: &str, fut: F,
) -> Result<F::Output, Failed> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| Failed::new(what))
}

/// What a spawned task returned; fails if it panicked or was cancelled.
pub(super) async fn joined<T>(task: JoinHandle<T>) -> Result<T, Failed> {
    task.await.map_err(|e| Failed::new(e.to_string()))
}

/// The key of the session `id` in this behaviour's application (the one its managers use).
pub(super) fn key_of(h: &Harness, id: &str) -> Result<SessionKey, Failed> {
    Ok(SessionKey::new(h.app().clone(), SessionId::parse(id)?))
}

/// Opens a new session on `m` and sets item `n` to 1: the session and its id.
pub(super) async fn new_n1(m: &SessionManager) -> Result<(Session, String), Failed> {
    let mut s = m.open(None, Access::Exclusive).await?;
    s.insert("n", &1u32)?;
    let id = s.id().expose().to_owned();
    Ok((s, id))
}

/// [`new_n1`], then ends the session: its id and what the end reported.
pub(super) async fn store_n1(m: &SessionManager) -> Result<(String, EndOutcome), Failed> {
    let (s, id) = new_n1(m).await?;
    Ok((id, s.end().await?))
}

/// Opens the session `id` on `m` for exclusive access.
pub(super) async fn reopen(m: &SessionManager, id: &str) -> crate::Result<Session> {
    m.open(Some(id), Access::Exclusive).await
}

/// Opens the session `id` with `access` on a clone of `m` when first polled, as a future that
/// borrows nothing (to spawn as another request).
pub(super) fn open_later(
    m: &SessionManager, id: &str, access: Access,
) -> impl Future<Output = crate::Result<Session>> + Send + 'static {
    let (m, id) = (m.clone(), id.to_owned());
    async move { m.open(Some(&id), access).await }
}

/// The fault-injecting layer: `fail_before(n)` fails the next `n` operations before they reach the
/// store (`fail_before_on(op, n)`: the next `n` calls of operation `op`); `lose_reply(n)` lets the
/// next `n` operations reach the store and then reports a transient failure, as when a reply is
/// lost on the wire (`lose_reply_on(op, n)`: the next `n` calls of `op`); `delay(n, by)` makes the
/// next `n` operations slow; `slow_reply_on(op, n, by)` lets the next `n` calls of `op` reach the
/// store and holds their reply back for `by` (a request cancelled meanwhile never sees it);
/// `arrive_late(by)` fails the next acquire at once and applies it `by` later;
/// `acquire_arrives_after(by)` applies the next acquire `by` later, whether or not its caller
/// still waits for the answer;
/// `set_down(true)` fails every operation until `set_down(false)` (a
/// server that is down for a while, then back). Injected failures are [`Error::Unavailable`] from
/// backend `"faulty"`.
#[derive(Debug, Default)]
pub struct Faults {
    down: AtomicBool,
    fail_before: AtomicU32,
    fail_before_on: PerOperation,
    lose_reply: AtomicU32,
    lose_reply_on: PerOperation,
    delay: AtomicU32,
    delay_by: Mutex<Duration>,
    slow_reply_on: PerOperation,
    slow_reply_by: Mutex<Duration>,
    /// The next acquire reaches the store this long after it was made, and whether its caller is
    /// told it failed at once (`arrive_late`) or waits for the store's answer
    /// (`acquire_arrives_after`).
    late_acquire: Mutex<Option<(Duration, LateAnswer)>>,
    /// The wrapped store, for an acquire that arrives late (`arrive_late`,
    /// `acquire_arrives_after`).
    inner: std::sync::OnceLock<Arc<dyn SessionStore>>,
    calls: AtomicU32,
}

/// What the caller of an acquire that reaches the store late hears, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LateAnswer {
    /// A transient failure at once (its reply was lost; the request is still on its way).
    FailedNow,
    /// The store's answer once it came (a request queued behind a lock on the server, or slowed
    /// on the network); a caller that gave up meanwhile never hears it, but it is applied.
    WhenApplied,
}

/// A fault armed for the next calls of one operation: the operation and how many calls are left.
type PerOperation = Mutex<Option<(Operation, u32)>>;

/// A store behind the fault-injecting layer ([`Faults::wrap`]).
pub type FaultyStore = Layered<Arc<dyn SessionStore>, Faults>;

impl Faults {
    /// Wraps `inner`, injecting nothing yet.
    pub fn wrap(inner: Arc<dyn SessionStore>) -> FaultyStore {
        let faults = Self::default();
        let _ = faults.inner.set(Arc::clone(&inner));
        Layered::new(inner, faults)
    }

    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn arm(slot: &PerOperation, operation: Operation, n: u32) {
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some((operation, n));
    }

    /// Whether the fault armed in `slot` applies to this call of `operation` (and counts it).
    fn take_on(slot: &PerOperation, operation: Operation) -> bool {
        let mut on = slot.lock().unwrap_or_else(PoisonError::into_inner);
        match *on {
            Some((op, n)) if op == operation && n > 0 => {
                *on = Some((op, n - 1));
                true
            }
            _ => false,
        }
    }
}

impl StoreLayer for Faults {
    async fn around(&self, call: Call<'_>, inner: &dyn SessionStore) -> crate::Result<Reply> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let operation = call.operation();
        let fail = || Error::Unavailable {
            backend: "faulty",
            operation,
            source: "injected transient failure".into(),
        };
        if self.down.load(Ordering::SeqCst)
            || Self::take(&self.fail_before)
            || Self::take_on(&self.fail_before_on, operation)
        {
            return Err(fail());
        }
        let late = match call {
            Call::Acquire { .. } => self
                .late_acquire
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
            _ => None,
        };
        if let Call::Acquire {
            key,
            token,
            lock_ttl,
        } = &call
            && let Some((by, answer)) = late
            && let Some(store) = self.inner.get()
        {
            // Sent, but still on its way: the store applies it `by` from now, whether or not
            // its caller still waits for the answer (a task of its own, not the caller's future).
            let (store, key, token, lock_ttl) =
                (Arc::clone(store), (*key).clone(), *token, *lock_ttl);
            let (tell, told) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                tokio::time::sleep(by).await;
                let _ = tell.send(store.acquire(&key, token, lock_ttl).await);
            });
            return match answer {
                LateAnswer::FailedNow => Err(fail()),
                LateAnswer::WhenApplied => match told.await {
                    Ok(applied) => applied.map(Reply::Acquire),
                    Err(_) => Err(fail()),
                },
            };
        }
        if Self::take(&self.delay) {
            let by = *self.delay_by.lock().unwrap_or_else(PoisonError::into_inner);
            tokio::time::sleep(by).await;
        }
        let reply = call.run(inner).await;
        if Self::take_on(&self.slow_reply_on, operation) {
            let by = *self
                .slow_reply_by
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            tokio::time::sleep(by).await;
        }
        let reply = reply?;
        if Self::take(&self.lose_reply) || Self::take_on(&self.lose_reply_on, operation) {
            return Err(fail());
        }
        Ok(reply)
    }
}

impl<S: SessionStore> Layered<S, Faults> {
    /// Takes the store down (`true`: every operation fails without reaching it) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.layer().down.store(down, Ordering::SeqCst);
    }

    /// Fails the next `n` operations without reaching the store.
    pub fn fail_before(&self, n: u32) {
        self.layer().fail_before.store(n, Ordering::SeqCst);
    }

    /// Fails the next `n` calls of `operation` without reaching the store (other operations pass
    /// untouched).
    pub fn fail_before_on(&self, operation: Operation, n: u32) {
        Faults::arm(&self.layer().fail_before_on, operation, n);
    }

    /// Lets the next `n` operations reach the store, then reports them failed.
    pub fn lose_reply(&self, n: u32) {
        self.layer().lose_reply.store(n, Ordering::SeqCst);
    }

    /// Lets the next `n` calls of `operation` reach the store, then reports them failed (other
    /// operations pass untouched).
    pub fn lose_reply_on(&self, operation: Operation, n: u32) {
        Faults::arm(&self.layer().lose_reply_on, operation, n);
    }

    /// Delays the next `n` operations by `by` before they reach the store (a slow server).
    pub fn delay(&self, n: u32, by: Duration) {
        *self
            .layer()
            .delay_by
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = by;
        self.layer().delay.store(n, Ordering::SeqCst);
    }

    /// Lets the next `n` calls of `operation` reach the store, then holds each reply back for `by`
    /// before returning it (a slow network on the way back: the store has applied the call, the
    /// caller does not know yet).
    pub fn slow_reply_on(&self, operation: Operation, n: u32, by: Duration) {
        *self
            .layer()
            .slow_reply_by
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = by;
        Faults::arm(&self.layer().slow_reply_on, operation, n);
    }

    /// Makes the next acquire reach the store `by` after its caller was told it failed (a
    /// transient failure, as for a request whose answer never came): a request still on its way
    /// when the caller gave up.
    pub fn arrive_late(&self, by: Duration) {
        self.arm_late_acquire(by, LateAnswer::FailedNow);
    }

    /// Makes the next acquire reach the store `by` after it was made, whether or not its caller
    /// still waits for the answer then (a request queued behind a lock on the server, or slowed on
    /// the network): a caller that gave up before (its request cancelled, its wait over) never
    /// hears that the store took the lock for it.
    pub fn acquire_arrives_after(&self, by: Duration) {
        self.arm_late_acquire(by, LateAnswer::WhenApplied);
    }

    fn arm_late_acquire(&self, by: Duration, answer: LateAnswer) {
        *self
            .layer()
            .late_acquire
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((by, answer));
    }

    /// How many operations were attempted through this layer.
    pub fn calls(&self) -> u32 {
        self.layer().calls.load(Ordering::SeqCst)
    }
}

/// The layer that hides a store's optional capabilities: it declares none and answers
/// `Unsupported` for them. Running the suite through it exercises the paths every store without
/// those capabilities takes: the manager's lock polling and its `renew_id` fallback.
#[derive(Debug, Default, Clone, Copy)]
pub struct HideCapabilities;

/// A store behind [`HideCapabilities`].
pub type WithoutCapabilities<S> = Layered<S, HideCapabilities>;

impl HideCapabilities {
    /// Wraps `inner`.
    pub fn wrap<S: SessionStore>(inner: S) -> WithoutCapabilities<S> {
        Layered::new(inner, Self)
    }
}

impl StoreLayer for HideCapabilities {
    fn capabilities(&self, _: &dyn SessionStore) -> Capabilities {
        Capabilities::none()
    }

    async fn around(&self, call: Call<'_>, inner: &dyn SessionStore) -> crate::Result<Reply> {
        match call {
            Call::ChangeId { .. }
            | Call::PurgeExpired { .. }
            | Call::WatchRelease { .. }
            | Call::ExpiryEvents => Err(Error::Unsupported {
                backend: inner.backend(),
                operation: call.operation(),
            }),
            _ => call.run(inner).await,
        }
    }
}
