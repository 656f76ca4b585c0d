//! The conformance suite (docs/contract.md §5): every behaviour of the contract as one named test.
//!
//! **Test-only and not semver-stable.** It writes sessions under fresh, random application names
//! (one per behaviour, so behaviours run in parallel against one shared server) and never touches
//! other applications' sessions; it deletes nothing it did not create. It leaves sessions behind:
//! most expire within seconds, some (timeouts of 10 to 20 minutes) are left to the store's expiry.
//! `capability::purge_*` deletes expired sessions of any application, as a store's purge does.
//!
//! # Running it against your store
//!
//! A complete store to start from, with this runner already written, is the workspace's
//! `reference-store` crate; docs/writing-a-backend.md walks through it.
//!
//! 1. In your crate's `Cargo.toml`:
//!
//! ```toml
//! [dev-dependencies]
//! # The crates are not on crates.io: depend on a checkout of this workspace by path (or on its
//! # repository with `git = "<its URL>"` in place of `path`).
//! session-core = { path = "../session-state/session-core", features = ["conformance"] }
//! libtest-mimic = "0.8"
//!
//! [[test]]
//! name = "conformance"
//! harness = false
//! ```
//!
//! 2. In `tests/conformance.rs`, hand [`trials`] a factory that opens your store (it is called once
//!    per behaviour, inside a tokio runtime):
//!
//! ```no_run
//! use std::future::Future;
//! use std::sync::Arc;
//!
//! use session_core::{SessionStore, conformance};
//!
//! /// The whole `main` of `tests/conformance.rs`, for a store that `connect(url)` opens
//! /// (`main` calls it with your store's constructor).
//! pub fn run_suite<F, Fut>(connect: F) -> std::process::ExitCode
//! where
//!     F: Fn(String) -> Fut + Send + Sync + 'static,
//!     Fut: Future<Output = session_core::Result<Arc<dyn SessionStore>>> + Send + 'static,
//! {
//!     let args = libtest_mimic::Arguments::from_args();
//!     let trials = match std::env::var("MY_STORE_URL") {
//!         Ok(url) => conformance::trials(move || connect(url.clone())),
//!         // Every behaviour ignored, with the reason.
//!         Err(_) => conformance::all_ignored("MY_STORE_URL is not set"),
//!     };
//!     conformance::run(args, trials)
//! }
//! ```
//!
//! `cargo test --test conformance` then lists one test per behaviour, named `<area>::<behaviour>`.
//! Behaviours of an optional capability your store does not declare show as *ignored*; for each
//! such capability a `capability::*_unsupported` behaviour checks that the operation returns
//! [`Error::Unsupported`] and changes nothing. Filter as usual: `cargo test --test conformance commit::`.
//! A failure message cites the rule of docs/contract.md it checks.
//!
//! # Two instances sharing one server
//!
//! If instances of your store share one server, as two processes' stores do (a database, a Redis
//! server), run the `shared::*` behaviours too: [`shared_trials`]`(prefix, factory)` lists only
//! them, named `{prefix}shared::<behaviour>`. Each opens a second instance from the factory
//! ([`Harness::open_another`]) and checks that what one writes, the other's next read sees. A
//! store that answers reads from a process-local copy (a near cache) runs the whole suite and
//! these with it on. [`trials`] leaves them out: a memory store's instances share nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use libtest_mimic::Trial;

use crate::{
    AppName, Capabilities, Config, ConfigBuilder, Error, RefreshWindow, SessionId, SessionKey,
    SessionManager, SessionStore,
};

mod acquire;
mod capability;
mod commit;
mod concurrency;
mod create;
mod delete;
mod hostile;
mod manager;
mod policy;
mod read;
mod refresh;
mod release;
mod remove;
mod shared;
mod support;
mod touch;
mod write_concurrent;

pub use support::{Faults, FaultyStore, HideCapabilities, WithoutCapabilities};

/// A failed behaviour: the message says what the contract expected and what happened.
#[derive(Debug)]
pub struct Failed(String);

impl Failed {
    /// A failure with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl From<Error> for Failed {
    fn from(err: Error) -> Self {
        let mut text = format!("unexpected error: {err}");
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        Self(text)
    }
}

/// What a behaviour returns.
pub type Outcome = Result<(), Failed>;

/// Fails the behaviour with a formatted message unless `cond` holds.
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::conformance::Failed::new(format!($($msg)+)));
        }
    };
}
pub(crate) use check;

/// A future that opens a store.
pub type StoreFuture = Pin<Box<dyn Future<Output = crate::Result<Arc<dyn SessionStore>>> + Send>>;

/// Something that opens a fresh handle to the store under test; called once per behaviour, inside
/// that behaviour's tokio runtime. Implemented for closures returning a future.
pub trait StoreFactory: Send + Sync + 'static {
    /// Opens the store.
    fn open(&self) -> StoreFuture;
}

impl<F, Fut> StoreFactory for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = crate::Result<Arc<dyn SessionStore>>> + Send + 'static,
{
    fn open(&self) -> StoreFuture {
        Box::pin(self())
    }
}

/// What a behaviour gets: the store, a fresh application name of its own, the declared
/// capabilities, and (in a run of the suite) the factory that opened the store, so that a
/// behaviour can open a second instance of it ([`Harness::open_another`]).
#[derive(Clone)]
pub struct Harness {
    store: Arc<dyn SessionStore>,
    app: AppName,
    caps: Capabilities,
    factory: Option<Arc<dyn StoreFactory>>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("store", &self.store)
            .field("app", &self.app)
            .field("caps", &self.caps)
            .field("can_open_another", &self.factory.is_some())
            .finish()
    }
}

impl Harness {
    /// A harness over `store` with a fresh random application name. It has no factory, so
    /// [`Harness::open_another`] fails; see [`Harness::with_factory`].
    ///
    /// # Errors
    /// If the OS random source fails.
    pub fn new(store: Arc<dyn SessionStore>) -> crate::Result<Self> {
        let caps = store.capabilities();
        Ok(Self {
            store,
            app: Self::fresh_app()?,
            caps,
            factory: None,
        })
    }

    /// [`Harness::new`] over `store`, keeping `factory` (the one that opened `store`) for
    /// [`Harness::open_another`].
    ///
    /// # Errors
    /// If the OS random source fails.
    pub fn with_factory(
        store: Arc<dyn SessionStore>, factory: Arc<dyn StoreFactory>,
    ) -> crate::Result<Self> {
        Ok(Self {
            factory: Some(factory),
            ..Self::new(store)?
        })
    }

    /// A second instance of the store under test, opened anew from the same factory (its own
    /// connections, and its own near cache if the store keeps one). Only where the factory's
    /// instances share one server ([`shared_trials`]) does the second instance see what the
    /// first one writes; the `shared::*` behaviours use it as another process's store.
    ///
    /// # Errors
    /// The factory's error; [`Error::InvalidConfig`] if this harness has no factory (it was built
    /// with [`Harness::new`]).
    pub async fn open_another(&self) -> crate::Result<Arc<dyn SessionStore>> {
        match &self.factory {
            Some(factory) => factory.open().await,
            None => Err(Error::InvalidConfig {
                setting: "conformance::Harness".to_owned(),
                reason: "built without a factory (Harness::new), so it cannot open another store"
                    .to_owned(),
            }),
        }
    }

    /// A harness over `store` (another instance of the store under test) in this behaviour's
    /// application, with the same capabilities and factory.
    fn beside(&self, store: Arc<dyn SessionStore>) -> Self {
        Self {
            store,
            ..self.clone()
        }
    }

    fn fresh_app() -> crate::Result<AppName> {
        AppName::new(&format!("/conformance/{}", SessionId::generate()?.expose()))
    }

    /// The store under test.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// This behaviour's application.
    pub fn app(&self) -> &AppName {
        &self.app
    }

    /// The store's declared capabilities.
    pub fn capabilities(&self) -> Capabilities {
        self.caps
    }

    /// A fresh session key in this behaviour's application.
    ///
    /// # Errors
    /// If the OS random source fails.
    pub fn key(&self) -> crate::Result<SessionKey> {
        Ok(SessionKey::new(self.app.clone(), SessionId::generate()?))
    }

    /// The configuration the manager behaviours start from: this application, a 20 ms poll
    /// interval, a 30 s lock wait timeout.
    pub fn config(&self) -> ConfigBuilder {
        Config::builder()
            .application_name(self.app.clone())
            .poll_interval(Duration::from_millis(20))
            .lock_wait_timeout(Duration::from_secs(30))
    }

    /// A manager on the store under test with [`Harness::config`] adjusted by `adjust`.
    ///
    /// # Errors
    /// If the adjusted configuration is invalid.
    pub fn manager(
        &self, adjust: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
    ) -> crate::Result<SessionManager> {
        let config = adjust(self.config()).build()?;
        Ok(SessionManager::new(Arc::clone(&self.store), &config))
    }
}

type BehaviourFn = fn(Harness) -> Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// When a behaviour runs.
#[derive(Clone, Copy)]
enum Gate {
    Always,
    /// Only where the capability (or every one of several) is declared.
    Needs(&'static str, fn(&Capabilities) -> bool),
    /// Only where the capability is *not* declared (the `Unsupported` companions).
    Lacks(&'static str, fn(&Capabilities) -> bool),
    /// Only where the store's refresh window is of the named kind.
    Window(&'static str, fn(RefreshWindow) -> bool),
}

struct Behaviour {
    name: &'static str,
    run: BehaviourFn,
    gate: Gate,
}

macro_rules! behaviours {
    ($( $module:ident :: $name:ident $(if $gate:ident($($cap:tt)+))? ),* $(,)?) => {
        vec![$(
            Behaviour {
                name: concat!(stringify!($module), "::", stringify!($name)),
                run: |h| Box::pin($module::$name(h)),
                gate: behaviours!(@gate $($gate($($cap)+))?),
            }
        ),*]
    };
    (@gate) => { Gate::Always };
    (@gate needs($cap:ident)) => { Gate::Needs(stringify!($cap), |c: &Capabilities| c.$cap) };
    (@gate needs($cap:ident & $cap2:ident)) => {
        Gate::Needs(concat!(stringify!($cap), " and ", stringify!($cap2)), |c: &Capabilities| c.$cap && c.$cap2)
    };
    (@gate lacks($cap:ident)) => { Gate::Lacks(stringify!($cap), |c: &Capabilities| c.$cap) };
    (@gate window(exact)) => { Gate::Window("exact sliding (w = 0)", RefreshWindow::is_exact) };
    (@gate window(lazy)) => {
        Gate::Window("a refresh window above 0", |w: RefreshWindow| !w.is_exact())
    };
}

/// The list of behaviours: the only one.
fn behaviours() -> Vec<Behaviour> {
    behaviours![
        read::missing_is_missing,
        read::returns_items_without_locking,
        read::locked_reports_holder_without_data,
        read::expired_is_missing,
        read::slides_expiry,
        read::slides_expiry_while_locked,
        read::reports_uninitialized_once,
        read::empty_session_is_found,
        read::stale_lock_is_still_reported_locked,
        acquire::missing_is_missing_and_creates_nothing,
        acquire::returns_items_and_fresh_token,
        acquire::locked_reports_holder_without_data,
        acquire::is_not_reentrant,
        acquire::lock_age_grows_with_same_token,
        acquire::stale_lock_is_taken_over,
        acquire::young_lock_is_not_taken_over,
        acquire::tokens_are_unique_per_acquisition,
        acquire::expired_is_missing,
        acquire::slides_expiry,
        acquire::slides_expiry_while_locked,
        acquire::reports_uninitialized_once,
        acquire::repeat_with_same_token_is_idempotent,
        commit::applies_delta_and_releases,
        commit::wrong_token_is_lock_lost,
        commit::after_takeover_is_lock_lost,
        commit::after_own_release_is_lock_lost,
        commit::after_forced_release_is_lock_lost,
        commit::missing_session_is_lock_lost,
        commit::expired_session_is_lock_lost,
        commit::stores_per_session_timeout,
        commit::new_timeout_governs_expiry,
        commit::writes_only_the_delta,
        commit::removes_items,
        commit::clear_then_set,
        commit::repeat_with_same_token_is_idempotent,
        commit::different_commit_with_spent_token_is_lock_lost,
        commit::retry_after_next_acquire_is_idempotent,
        release::matching_token_unlocks,
        release::wrong_token_is_lock_lost_and_keeps_lock,
        release::missing_is_lock_lost,
        release::slides_expiry,
        release::keeps_items,
        release::expired_is_lock_lost,
        release::after_takeover_is_lock_lost,
        create::creates_unlocked_session,
        create::never_overwrites,
        create::does_not_touch_a_lock,
        create::uninitialized_reported_once,
        create::initialized_never_reports_initialize,
        create::uses_given_timeout,
        create::over_expired_session_succeeds,
        remove::matching_token_deletes,
        remove::wrong_token_is_lock_lost_and_keeps_session,
        remove::missing_is_missing,
        remove::after_takeover_is_lock_lost,
        remove::expired_is_missing,
        touch::slides_expiry,
        touch::missing_creates_nothing,
        touch::keeps_lock_and_items,
        touch::uses_stored_timeout,
        touch::expired_is_missing,
        refresh::never_expires_before_timeout_after_last_access,
        refresh::never_lives_past_timeout_plus_window,
        refresh::access_inside_window_writes_nothing if window(lazy),
        refresh::exact_window_slides_on_every_access if window(exact),
        write_concurrent::merges_per_item,
        write_concurrent::last_writer_wins_per_item,
        write_concurrent::ignores_and_keeps_lock,
        write_concurrent::missing_creates_nothing,
        write_concurrent::stores_timeout,
        write_concurrent::expired_is_missing,
        delete::ignores_lock,
        delete::missing_is_missing,
        delete::holder_commit_after_delete_is_lock_lost,
        delete::expired_is_missing,
        delete::applications_are_isolated,
        hostile::applications_are_isolated,
        hostile::hostile_item_names_round_trip,
        hostile::hostile_values_round_trip,
        hostile::hostile_application_names_are_isolated,
        hostile::one_mib_value_round_trips,
        hostile::hundred_items_round_trip,
        hostile::clearing_all_items_keeps_session,
        concurrency::exclusive_writers_lose_no_update,
        concurrency::simultaneous_acquires_have_one_winner,
        concurrency::simultaneous_creates_have_one_winner,
        concurrency::concurrent_writers_of_distinct_items_merge,
        capability::change_id_moves_data_and_lock if needs(change_id),
        capability::change_id_wrong_token_is_lock_lost if needs(change_id),
        capability::change_id_to_taken_id_is_already_exists if needs(change_id),
        capability::release_signal_wakes_on_release if needs(release_signal),
        capability::release_signal_wakes_on_commit if needs(release_signal),
        capability::release_signal_wakes_on_remove_and_delete if needs(release_signal),
        capability::release_signal_wakes_on_change_id if needs(release_signal & change_id),
        capability::expiry_event_on_expiry if needs(expiry_events),
        capability::expiry_event_on_remove if needs(expiry_events),
        capability::purge_removes_only_expired if needs(purge_expired),
        capability::change_id_unsupported if lacks(change_id),
        capability::release_signal_unsupported if lacks(release_signal),
        capability::expiry_events_unsupported if lacks(expiry_events),
        capability::purge_expired_unsupported if lacks(purge_expired),
        manager::no_id_gives_new_session,
        manager::malformed_id_gives_new_session,
        manager::unknown_id_is_not_adopted,
        manager::new_unwritten_session_stores_nothing,
        manager::new_written_session_is_created,
        manager::changed_session_commits_delta,
        manager::unchanged_session_releases,
        manager::timeout_change_commits,
        manager::abandon_removes,
        manager::keep_alive_slides_expiry_of_unused_session,
        manager::read_only_never_writes,
        manager::read_only_waits_for_writer,
        manager::exclusive_waits_for_lock,
        manager::drop_without_end_releases_and_writes_nothing,
        manager::lock_lost_is_an_error,
        manager::stale_lock_is_taken_over,
        manager::waiter_limit_fails_fast,
        manager::waiter_deadline,
        manager::concurrent_access_merges,
        manager::renew_id_keeps_data,
        manager::initial_access_reported_once,
        manager::oversized_session_rejected_at_insert,
        manager::concurrent_unchanged_stores_nothing,
        manager::concurrent_abandon_deletes,
        manager::concurrent_write_to_vanished_session_is_session_gone,
        manager::read_only_force_releases_stale_lock,
        manager::lost_lock_on_release_is_reported,
        manager::renew_id_of_new_session,
        manager::manager_delete_logs_out_everywhere,
        manager::waiter_wakes_on_release_signal if needs(release_signal),
        manager::waiter_wakes_when_this_manager_releases,
        manager::waiters_are_served_in_arrival_order,
        manager::waiters_woken_by_the_release_signal_keep_arrival_order if needs(release_signal),
        policy::transient_failures_are_retried,
        policy::lost_commit_reply_is_not_an_error,
        policy::errors_propagate_when_throw_on_error,
        policy::degraded_session_when_not_throw_on_error,
        policy::corrupt_value_is_a_typed_error,
        policy::operation_timeout_applies,
        policy::lost_acquire_reply_keeps_session_usable,
        policy::lost_acquire_reply_without_retries_leaves_no_lock,
        policy::cancelled_acquire_leaves_no_lock,
        policy::cancelled_acquire_arriving_later_leaves_no_lock,
        policy::acquire_arriving_late_leaves_no_lock,
        policy::a_waiter_gives_up_at_its_deadline_while_a_store_call_is_slow,
        policy::a_look_cut_at_the_deadline_arriving_later_leaves_no_lock,
        policy::store_down_then_back_without_retries_leaves_no_lock,
        policy::store_down_then_back_with_retries_leaves_no_lock,
        policy::lock_is_released_when_end_fails,
        policy::renew_id_survives_lost_remove_reply,
        policy::lost_change_id_reply_keeps_the_new_id_without_retries if needs(change_id),
        policy::lost_change_id_reply_keeps_the_new_id_with_retries if needs(change_id),
        policy::retried_commit_after_the_next_holder_is_not_lock_lost,
        policy::renew_id_keeps_original_when_remove_fails,
        policy::renew_id_keeps_copy_when_store_cannot_tell,
        policy::renew_id_removes_the_surviving_old_id_when_store_cannot_tell,
        // Two instances sharing one server: run by `shared_trials` only.
        shared::create_is_seen_by_the_other,
        shared::commit_is_seen_by_the_other,
        shared::lock_is_seen_by_the_other,
        shared::delete_is_seen_by_the_other,
        shared::remove_is_seen_by_the_other,
        shared::expiry_is_seen_by_the_other,
        shared::uninitialized_reported_once_across_instances,
        shared::write_concurrent_is_seen_by_the_other,
        shared::read_only_waits_for_the_other_writer,
        shared::exclusive_writers_on_both_lose_no_update,
    ]
}

/// The names of every behaviour, in order (for listings and tests): those [`trials`] runs, then
/// the `shared::*` ones, which only [`shared_trials`] runs.
pub fn behaviour_names() -> Vec<&'static str> {
    behaviours().iter().map(|b| b.name).collect()
}

/// Whether behaviour `name` needs two store instances sharing one server ([`shared_trials`]).
fn is_shared(name: &str) -> bool {
    name.starts_with("shared::")
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// One trial per behaviour against the stores `factory` opens, except the `shared::*` behaviours
/// (see [`shared_trials`]).
///
/// The store's capabilities are read once, from a store opened here, to decide which behaviours
/// are ignored. If that fails, every trial fails with the error.
pub fn trials(factory: impl StoreFactory) -> Vec<Trial> {
    trials_with_prefix("", factory)
}

/// Like [`trials`], with every name prefixed by `prefix` (for running the suite more than once in
/// one target, for example through a decorator: `trials_with_prefix("resilient::", ...)`).
pub fn trials_with_prefix(prefix: &str, factory: impl StoreFactory) -> Vec<Trial> {
    trials_where(prefix, factory, |name| !is_shared(name))
}

/// The behaviours about expiry (sliding, the refresh window, expired sessions, per-session
/// timeouts), every name prefixed by `prefix`: for running them once more against a second
/// configuration of the same store, such as its exact-sliding window
/// ([`RefreshWindow::EXACT`]) next to its default one, without repeating the whole suite.
pub fn expiry_trials(prefix: &str, factory: impl StoreFactory) -> Vec<Trial> {
    trials_where(prefix, factory, is_about_expiry)
}

/// Whether behaviour `name` is one [`expiry_trials`] runs.
fn is_about_expiry(name: &str) -> bool {
    !is_shared(name)
        && (name.starts_with("refresh::")
            || ["slides_expiry", "expired", "timeout"]
                .iter()
                .any(|part| name.contains(part)))
}

/// The `shared::*` behaviours, every name prefixed by `prefix` (`{prefix}shared::<behaviour>`):
/// for a factory whose instances **share one server**, as two processes' stores do (a Redis
/// server, a database, a SQLite file; not a memory store, whose instances are independent).
///
/// Each behaviour opens a second instance next to the harness's one
/// ([`Harness::open_another`]), reads a session through it, changes the session through the first
/// instance, and checks that the second one's next read sees the change at once: a commit, a lock,
/// a delete or remove, an expiry, the initialize flag (reported once across both), a lock-free
/// write; and, through a manager on each instance, that a read-only request waits for the other
/// instance's writer and that exclusive writers on both lose no update (docs/contract.md §5). A
/// store that answers reads from a process-local copy (a near cache) must pass them with it on.
/// [`trials`] does not run them.
pub fn shared_trials(prefix: &str, factory: impl StoreFactory) -> Vec<Trial> {
    trials_where(prefix, factory, is_shared)
}

fn trials_where(prefix: &str, factory: impl StoreFactory, keep: fn(&str) -> bool) -> Vec<Trial> {
    let factory: Arc<dyn StoreFactory> = Arc::new(factory);
    let caps = runtime().map_err(|e| e.to_string()).and_then(|rt| {
        rt.block_on(factory.open())
            .map(|s| (s.capabilities(), s.refresh_window()))
            .map_err(|e| Failed::from(e).0)
    });
    behaviours()
        .into_iter()
        .filter(|b| keep(b.name))
        .map(|b| {
            let ignored = match (&caps, b.gate) {
                (Ok((caps, _)), Gate::Needs(cap, has)) if !has(caps) => {
                    Some(format!("capability `{cap}` not declared"))
                }
                (Ok((caps, _)), Gate::Lacks(cap, has)) if has(caps) => {
                    Some(format!("capability `{cap}` declared"))
                }
                (Ok((_, window)), Gate::Window(kind, is)) if !is(*window) => {
                    Some(format!("needs {kind}; the store's window is {window}"))
                }
                _ => None,
            };
            let caps = caps.clone();
            let factory = Arc::clone(&factory);
            let run = b.run;
            let trial = Trial::test(format!("{prefix}{}", b.name), move || {
                caps.map_err(|e| format!("opening the store failed: {e}"))?;
                let rt = runtime().map_err(|e| e.to_string())?;
                rt.block_on(async move {
                    let store = factory.open().await?;
                    run(Harness::with_factory(store, factory)?).await
                })
                .map_err(|f| f.0.into())
            });
            match ignored {
                Some(reason) => trial.with_ignored_flag(true).with_kind(reason),
                None => trial,
            }
        })
        .collect()
}

/// Every behaviour [`trials`] runs (not the `shared::*` ones), as an ignored trial, for a run
/// whose store is not configured (for example a server URL that is not set). Where the store must
/// run (CI), the caller should fail instead, as this workspace's `test-support` crate does
/// (`test_support::conformance_trials`).
pub fn all_ignored(reason: &str) -> Vec<Trial> {
    let reason = reason.to_owned();
    behaviours()
        .into_iter()
        .filter(|b| !is_shared(b.name))
        .map(|b| {
            Trial::test(b.name, || Ok(()))
                .with_ignored_flag(true)
                .with_kind(reason.clone())
        })
        .collect()
}

/// Runs `trials` with `args`, allowing at least 8 behaviours at once (most of them sleep through
/// short expiry timeouts), and returns the process exit code.
pub fn run(mut args: libtest_mimic::Arguments, trials: Vec<Trial>) -> std::process::ExitCode {
    if args.test_threads.is_none() {
        args.test_threads = Some(8);
    }
    libtest_mimic::run(&args, trials).exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviour_names_are_unique_and_numerous() {
        let names = behaviour_names();
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        assert!(names.len() >= 60, "{}", names.len());
    }

    fn names_of(trials: &[Trial]) -> Vec<&str> {
        trials.iter().map(Trial::name).collect()
    }

    /// A factory that cannot open a store: enough to list the trials.
    fn no_store() -> crate::Result<Arc<dyn SessionStore>> {
        Err(Error::InvalidConfig {
            setting: "test".to_owned(),
            reason: "no store".to_owned(),
        })
    }

    #[test]
    fn shared_behaviours_run_only_in_shared_trials() {
        let shared: Vec<_> = behaviour_names()
            .into_iter()
            .filter(|n| n.starts_with("shared::"))
            .map(|n| format!("p::{n}"))
            .collect();
        assert!(shared.len() >= 9, "{shared:?}");
        let listed = shared_trials("p::", || async { no_store() });
        assert_eq!(names_of(&listed), shared);
        for ordinary in [
            trials(|| async { no_store() }),
            expiry_trials("", || async { no_store() }),
            all_ignored("unset"),
        ] {
            assert!(!ordinary.is_empty());
            assert!(names_of(&ordinary).iter().all(|n| !n.contains("shared::")));
        }
        assert_eq!(
            trials(|| async { no_store() }).len() + shared.len(),
            behaviour_names().len()
        );
    }
}
