//! The Postgres release signal (docs/contract.md §3, "Waiting"): every routine that ends a lock
//! (commit, release, remove, delete of a locked session, change_id) sends
//! `pg_notify('<prefix>release', <hash of app and sid>)` (migrations 0003 and 0007), delivered when
//! its transaction commits. Each store holds one `LISTEN` connection of its own (not from the
//! operations' pool), opened on the first [`watch`](ReleaseSignal::watch), and fans each
//! notification out to the waiters of that session.
//!
//! A lost connection never hangs a waiter: when the listener loses its connection (or has not
//! listened yet), every waiter is woken once it listens again, so each looks at its session anew
//! (a spurious wake-up, which [`ReleaseWatch`] allows); while it cannot reconnect, the manager's
//! poll interval is the safety net. The listener reconnects with a backoff up to two seconds.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use session_core::{ReleaseWatch, SessionKey};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::dialect::{Key, ReleaseSignal};

/// The first pause before reconnecting a lost listener; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Waiters per session, by notification payload.
#[derive(Default)]
struct Waiters(Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>);

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<oneshot::Sender<()>>>> {
        // A panic while holding the lock leaves the map consistent (inserts and removals only).
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes the waiters of one session.
    fn wake(&self, payload: &str) {
        let woken = self.lock().remove(payload);
        for tx in woken.into_iter().flatten() {
            let _ = tx.send(());
        }
    }

    /// Wakes every waiter (the listener was not listening for a while).
    fn wake_all(&self) {
        let woken = std::mem::take(&mut *self.lock());
        for tx in woken.into_values().flatten() {
            let _ = tx.send(());
        }
    }
}

/// The release signal of one store.
pub(crate) struct PgSignal {
    connect: PgConnectOptions,
    channel: String,
    waiters: Arc<Waiters>,
    /// The listener task, started by the first watch.
    task: OnceLock<AbortHandle>,
}

impl fmt::Debug for PgSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSignal")
            .field("channel", &self.channel)
            .field("listening", &self.task.get().is_some())
            .finish()
    }
}

impl Drop for PgSignal {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl PgSignal {
    /// The signal for stores with table prefix `prefix` on the database `connect` names.
    pub(crate) fn new(connect: PgConnectOptions, prefix: &str) -> Self {
        Self {
            connect,
            channel: channel(prefix),
            waiters: Arc::default(),
            task: OnceLock::new(),
        }
    }
}

impl ReleaseSignal for PgSignal {
    fn watch(&self, key: &SessionKey) -> ReleaseWatch {
        self.task.get_or_init(|| {
            let (connect, channel) = (self.connect.clone(), self.channel.clone());
            tokio::spawn(listen(connect, channel, Arc::downgrade(&self.waiters))).abort_handle()
        });
        let key = Key::of(key);
        let payload = payload(key.app, key.sid);
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .entry(payload.clone())
            .or_default()
            .push(tx);
        ReleaseWatch::new(Waiting {
            rx,
            payload,
            waiters: Arc::downgrade(&self.waiters),
        })
    }
}

/// The channel routines of table prefix `prefix` notify (see migration 0003).
fn channel(prefix: &str) -> String {
    format!("{prefix}release")
}

/// A session's notification payload, as the routines write it (migration 0007): the SHA-256 of
/// `length(app)` (4 bytes, big-endian), `app`, `sid`, in hex. Not the id itself: any role that can
/// connect may `LISTEN` (docs/security.md).
fn payload(app: &[u8], sid: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let len = u32::try_from(app.len()).unwrap_or(u32::MAX);
    let digest = Sha256::new()
        .chain_update(len.to_be_bytes())
        .chain_update(app)
        .chain_update(sid)
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// One waiter: completes when woken, or when the signal is gone (a spurious wake-up). Dropped
/// unwoken (the waiter gave up), it takes its entry out of the map.
struct Waiting {
    rx: oneshot::Receiver<()>,
    payload: String,
    waiters: Weak<Waiters>,
}

impl Future for Waiting {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.rx).poll(cx).map(|_| ())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.rx.close();
        if let Some(waiters) = self.waiters.upgrade() {
            let mut map = waiters.lock();
            if let Some(list) = map.get_mut(&self.payload) {
                list.retain(|tx| !tx.is_closed());
                if list.is_empty() {
                    map.remove(&self.payload);
                }
            }
        }
    }
}

/// The listener task: listens, fans notifications out, and after any loss wakes every waiter and
/// listens again (with a backoff), until the signal is dropped.
async fn listen(connect: PgConnectOptions, channel: String, waiters: Weak<Waiters>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let result = listen_once(&connect, &channel, &waiters, &mut backoff).await;
        let Some(w) = waiters.upgrade() else { return };
        w.wake_all();
        drop(w);
        if let Err(e) = result {
            tracing::warn!(error = %e, channel, "release signal: listener lost; reconnecting");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One listening connection, until it fails. `Ok` when the signal is gone.
async fn listen_once(
    connect: &PgConnectOptions, channel: &str, waiters: &Weak<Waiters>, backoff: &mut Duration,
) -> Result<(), sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(connect.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.ignore_pool_close_event(true);
    listener.listen(channel).await?;
    *backoff = FIRST_BACKOFF;
    loop {
        // Listening now: whoever registered before (or during a reconnect) looks again.
        match waiters.upgrade() {
            Some(w) => w.wake_all(),
            None => return Ok(()),
        }
        // Until the connection is lost (then `try_recv` reconnects and listens again before it
        // answers `None`).
        while let Some(n) = listener.try_recv().await? {
            match waiters.upgrade() {
                Some(w) => w.wake(n.payload()),
                None => return Ok(()),
            }
        }
        tracing::debug!(
            channel,
            "release signal: connection lost and listening again"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_a_hash_of_the_key_not_the_id() {
        // sha256(00000002 || "/a" || "Z9"), as `encode(sha256(int4send(2) || '/a' || 'Z9'), 'hex')`.
        // The value Postgres 15 computes for it (psql).
        assert_eq!(
            payload(b"/a", b"Z9"),
            "7ccb0fa093a6601ba963788af04bf8abc3ed214a26a69e1fffb6f0840cc6448e"
        );
        assert_ne!(payload(b"/a", b"Z9"), payload(b"/aZ", b"9"), "unambiguous");
        assert_eq!(channel("sess_"), "sess_release");
    }
}
