//! The soak test (issue 14): concurrent clients on a mixed workload, with random store faults
//! injected, for a fixed number of operations; at the end no lost update, no stuck lock, and flat
//! memory.
//!
//! One trial per store and retry setting, `<store>::retries_off` and `<store>::retries_on`, on the
//! memory store, standalone Redis, Redis Cluster, Postgres, MariaDB/MySQL and SQLite (a temporary
//! file). A store whose server is not configured is ignored with the reason, or fails when
//! `SESSION_TEST_REQUIRE` names it (docs/style.md H10).
//!
//! # What a trial does
//!
//! Two [`SessionManager`]s, as two processes of one application would have: each over a store
//! instance of its own on the same server (one file for SQLite; one shared in-process store for
//! `memory://`, which has no server), each store wrapped in the fault-injecting layer
//! ([`Faults`]). `retries_on` gives both managers a 2 s retry timeout, `retries_off` none (the
//! default). A pool of sessions, each holding a counter `n`, is shared by `SOAK_CLIENTS`
//! concurrent clients; each operation picks a session and a manager at random and does one of:
//!
//! - an exclusive increment (open `Exclusive`, read `n`, hold the lock 0-2 ms, insert `n + 1`,
//!   end), now and then renewing the id on the way (`renew_id`);
//! - a `ReadOnly` read;
//! - a `Concurrent` open that reads `n` and sometimes writes an item of its own (never `n`);
//! - rarely, abandon the session and put a new one in its place.
//!
//! Meanwhile a fault injector arms, every 1-4 operations (at most one a millisecond), a random
//! fault on one of the two stores: fail the next 1-3 operations before they reach the store, lose
//! the replies of the next 1-2 (applied, then reported failed), either for any operation or for
//! one named operation (`acquire`, `commit`, `release`, `change_id`...), or delay the next 1-4 by
//! up to 40 ms.
//!
//! # What it checks
//!
//! A model keeps, per session id, the increments acknowledged (`end` answered
//! [`EndOutcome::Committed`]) and the ambiguous ones (`end` failed in the store: the commit may or
//! may not have landed), and the highest counter known to be stored.
//!
//! - **Counters never go backwards**: every open reads at least the highest value stored before
//!   it began (acknowledged, or read by an operation that had finished).
//! - **No lost session**: an id is only ever found missing (the session opens as new) after it
//!   was abandoned or moved by `renew_id`.
//! - **No lost update**: once the faults stop, every session's counter is between its acknowledged
//!   increments and those plus its ambiguous ones.
//! - **No stuck lock**: no open gives up waiting for a lock during the run (`WaitTimeout`, with
//!   a 15 s lock wait timeout against a 110 s lock TTL); once the faults stop, every session opens
//!   `Exclusive` through each manager within 5 s; no request is left counted as waiting
//!   ([`SessionManager::waiting_on`] is 0 for every id ever used).
//! - **Nothing left behind**: the runtime's live tasks (orphaned-lock releases included) go back
//!   within 5 s to at most their count before the clients started (the stores' own) plus 8 (for
//!   pools grown to the run's concurrency); on the memory store, the stored sessions are at most
//!   the live ones plus those an ambiguous create, remove or renew may have left.
//! - **Memory flat**: the resident set (Linux `/proc/self/statm`) after the run exceeds the one
//!   after warm-up (the first fifth of the operations) by at most 64 MiB plus 25 %. The bound is
//!   loose on purpose: it allows for the allocator keeping freed pages and for pools that grow to
//!   the run's concurrency, while a leak of 4 KiB per operation crosses it at the 20,000
//!   operations per trial of `scripts/soak.sh`, and one of 100 bytes at a million. Under 2,000
//!   operations (CI's short run) the check only reports.
//!
//! # What it found
//!
//! Three behaviours of the library this soak found, all a reply lost after the store applied the
//! operation, are fixed and now fail the trial (see `Known`; `SOAK_STRICT=0` tolerates them, to
//! look at an older build): a `change_id` retried by the retry layer answered `LockLost`; a
//! `change_id` that failed with retries off had moved the session anyway; a `commit` retried
//! after another request committed answered `LockLost` though it was written. One case stays
//! allowed, as `Session::renew_id` documents it: when the look at the new id that settles a lost
//! `change_id` reply fails too, `renew_id` fails although the session may have moved; it is
//! counted, and the session is taken out of the pool.
//!
//! Every trial prints a summary line to stderr (operations by kind, faults armed,
//! acknowledged/ambiguous increments, RSS and tasks before/after, time).
//!
//! # Knobs (environment)
//!
//! | variable | default | |
//! | --- | --- | --- |
//! | `SOAK_OPERATIONS` | 300 | operations per trial (CI runs the default through `cargo test`) |
//! | `SOAK_CLIENTS` | 16 | concurrent clients |
//! | `SOAK_SESSIONS` | 12 | sessions in the pool |
//! | `SOAK_SEED` | random | the random seed, printed at start: set it to replay a run's choices |
//! | `SOAK_STRICT` | 1 | 0: the findings above are only counted (for older builds) |
//!
//! A replay repeats the choices (operations, sessions, managers, faults), not the interleaving of
//! the clients, which the scheduler decides; a failure that depends on timing may need a few runs.
//! The long version is `scripts/soak.sh` (release build, a large count, every server).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backend_memory::MemoryStore;
use backend_redis::RedisOptions;
use libtest_mimic::{Arguments, Trial};
use session_core::conformance::{Faults, FaultyStore};
use sessions::{
    Access, AppName, Config, EndOutcome, Error, Operation, Session, SessionId, SessionManager,
    SessionStore,
};
use test_support::{Failed, TestResult, Unconfigured, block_on, fail};

// ---------------------------------------------------------------------------------------------
// Settings and randomness.

/// The knobs of a run, from the environment.
#[derive(Debug, Clone, Copy)]
struct Settings {
    operations: u64,
    clients: u64,
    sessions: u64,
    seed: u64,
    /// Whether the known findings ([`Known`]) fail the trial (`SOAK_STRICT=1`).
    strict: bool,
}

/// `name` as a number, or `default` when unset or empty.
fn env_number(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a non-negative integer")),
        _ => Ok(default),
    }
}

impl Settings {
    fn from_env() -> Result<Self, String> {
        let settings = Self {
            operations: env_number("SOAK_OPERATIONS", 300)?,
            clients: env_number("SOAK_CLIENTS", 16)?.max(1),
            sessions: env_number("SOAK_SESSIONS", 12)?.max(1),
            seed: env_number("SOAK_SEED", random_u64())?,
            strict: env_number("SOAK_STRICT", 1)? != 0,
        };
        Ok(settings)
    }
}

/// A random number from the OS (the default seed): the first 16 hex digits of a fresh session id.
fn random_u64() -> u64 {
    SessionId::generate()
        .ok()
        .and_then(|id| u64::from_str_radix(id.expose().get(..16)?, 16).ok())
        .unwrap_or(1)
}

/// A small, seeded generator (xorshift64*, seeded through splitmix64): enough for choosing, and
/// replayable from a printed seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// An index in `0..n`.
    fn index(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).unwrap_or(0)
    }
}

/// A stable number for `text` (FNV-1a), to give each trial a seed of its own.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------------------------
// The model of what the store must hold.

/// What is known of one session id.
#[derive(Debug, Default, Clone)]
struct Track {
    /// Increments whose `end` answered `Committed`.
    acked: u64,
    /// Increments whose `end` failed in the store: landed or not.
    ambiguous: u64,
    /// Of those, the ones whose retried commit answered `LockLost`
    /// ([`Known::CommitRetryLockLost`]).
    retry_lost: u64,
    /// The highest counter known to be stored (acknowledged, or read by a finished operation).
    floor: u64,
    /// Abandoned, or moved by `renew_id` (or about to be): the id may be found missing.
    leaving: bool,
}

#[derive(Debug, Default)]
struct Model {
    /// The pool: the id each slot's session has now.
    slots: Vec<String>,
    /// Every id ever used.
    ids: HashMap<String, Track>,
    /// Ids moved by `renew_id`, to the id they moved to.
    moved: HashMap<String, String>,
}

impl Model {
    /// Where the session that had `id` lives now: an increment acknowledged late on an id that
    /// has moved since (a retried commit answered after the move) landed before the move, so it
    /// counts for the id the session moved to.
    fn current(&self, id: &str) -> String {
        let mut id = id;
        while let Some(next) = self.moved.get(id) {
            id = next;
        }
        id.to_owned()
    }
}

/// Counters for the summary.
#[derive(Debug, Default)]
struct Stats {
    increments: AtomicU64,
    acked: AtomicU64,
    ambiguous: AtomicU64,
    reads: AtomicU64,
    concurrent: AtomicU64,
    concurrent_writes: AtomicU64,
    renews: AtomicU64,
    renews_failed: AtomicU64,
    abandons: AtomicU64,
    recreated: AtomicU64,
    /// Store failures a client got back (open, end, renew): injected faults surfacing.
    store_errors: AtomicU64,
    /// Sessions an ambiguous create or remove may have left in the store.
    ghosts: AtomicU64,
    /// Opens that found an abandoned or moved id missing, as they may.
    left: AtomicU64,
    faults: AtomicU64,
    /// The known findings, by [`Known`].
    known: [AtomicU64; 3],
    /// Increments reported `LockLost` after a retried commit that the counters at rest prove
    /// written (more than the other increments could account for).
    proven_written: AtomicU64,
}

/// Library behaviours this soak found (fixed; tolerated only with `SOAK_STRICT=0`), and the one
/// documented exception: the model treats their increments as ambiguous and their sessions as
/// lost.
#[derive(Debug, Clone, Copy)]
enum Known {
    /// Retries on: a `change_id` whose reply was lost is retried, and the retry answers
    /// `LockLost` (the session has already moved): `renew_id` fails with `LockLost` while the
    /// session lives on, locked, under the new id nobody was told. Standalone Redis, Postgres,
    /// MySQL and SQLite look only at the old id; the memory store answers such a retry `Changed`;
    /// Redis Cluster has no `change_id` (renew_id copies).
    RenewRetryLockLost,
    /// A `change_id` whose reply was lost, and the look at the new id that settles it failed too:
    /// `renew_id` fails with the store's error, yet the move was applied; the old id is gone and
    /// the session lives on under the new id nobody was told (its lock released in the
    /// background). Documented by `Session::renew_id`; allowed.
    RenewAmbiguousMoved,
    /// Retries on: a `commit` whose reply was lost is retried after another request has
    /// acquired and committed the session: the retry answers `LockLost`, and `end` fails with
    /// `LockLost` ("nothing was written") although the first attempt's write landed.
    CommitRetryLockLost,
}

impl Known {
    fn title(self) -> &'static str {
        match self {
            Self::RenewRetryLockLost => "renew_id retried after a lost change_id reply: LockLost",
            Self::RenewAmbiguousMoved => "renew_id failed, but the session moved",
            Self::CommitRetryLockLost => "commit retried after a lost reply: LockLost, yet written",
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// One trial's world: the two managers, their faulty stores, the model, the findings.
struct World {
    name: String,
    settings: Settings,
    /// Whether the managers retry.
    retries: bool,
    managers: [SessionManager; 2],
    faulty: [Arc<FaultyStore>; 2],
    model: Mutex<Model>,
    stats: Stats,
    violations: Mutex<Vec<String>>,
    /// Operations started (claimed by a client).
    started: AtomicU64,
    /// The resident set after warm-up.
    warm: Mutex<Option<Option<u64>>>,
}

impl World {
    fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn violation(&self, message: String) {
        eprintln!("soak {}: VIOLATION: {message}", self.name);
        self.violations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(message);
    }

    /// The id slot `slot` holds now, and the floor of its counter.
    fn look(&self, slot: usize) -> (String, u64) {
        let model = self.model();
        let id = model.slots[slot].clone();
        let floor = model.ids.get(&id).map_or(0, |t| t.floor);
        (id, floor)
    }

    fn with_track<T>(&self, id: &str, f: impl FnOnce(&mut Track) -> T) -> T {
        let mut model = self.model();
        f(model.ids.entry(id.to_owned()).or_default())
    }

    /// [`World::with_track`] on the id the session of `id` lives under now ([`Model::current`]).
    fn with_counts<T>(&self, id: &str, f: impl FnOnce(&mut Track) -> T) -> T {
        let mut model = self.model();
        let id = model.current(id);
        f(model.ids.entry(id).or_default())
    }

    /// A finding the soak knows (see [`Known`]): counted and printed; a violation (unless
    /// `SOAK_STRICT=0`), except a failed `renew_id` that moved the session when its settling look
    /// failed too, which `Session::renew_id` documents.
    fn known(&self, known: Known, message: String) {
        bump(&self.stats.known[known as usize]);
        if !matches!(known, Known::CommitRetryLockLost) {
            // The session lives on under an id nobody knows, until it expires.
            bump(&self.stats.ghosts);
        }
        if self.settings.strict && !matches!(known, Known::RenewAmbiguousMoved) {
            self.violation(format!("{}: {message}", known.title()));
        } else {
            eprintln!(
                "soak {}: known issue ({}): {message}",
                self.name,
                known.title()
            );
        }
    }

    /// Checks what `session` (opened on `id` by an operation that began when the floor was
    /// `floor`) holds: its counter, unless it opened as new. Raises the floor.
    fn observed(&self, id: &str, floor: u64, session: &Session, what: &str) -> Option<u64> {
        if session.is_new() {
            if self.with_track(id, |t| t.leaving) {
                bump(&self.stats.left);
            } else {
                self.violation(format!(
                    "{what} of {id}: the session was lost (it opened as new, and was neither \
                     abandoned nor renewed)"
                ));
            }
            return None;
        }
        match session.get::<u64>("n") {
            Ok(Some(n)) => {
                if n < floor {
                    self.violation(format!(
                        "{what} of {id}: the counter went backwards: read {n}, but {floor} was \
                         stored before this operation began"
                    ));
                }
                self.with_counts(id, |t| t.floor = t.floor.max(n));
                Some(n)
            }
            Ok(None) => {
                self.violation(format!("{what} of {id}: the counter is missing"));
                None
            }
            Err(e) => {
                self.violation(format!("{what} of {id}: the counter does not decode: {e}"));
                None
            }
        }
    }

    /// An open (or end) that failed with `err`: a store failure is an injected fault surfacing;
    /// anything else is a finding.
    fn failed(&self, what: &str, id: &str, err: &Error) {
        if err.is_store_failure() {
            bump(&self.stats.store_errors);
            return;
        }
        let why = match err {
            Error::WaitTimeout { .. } => " (a stuck lock?)",
            _ => "",
        };
        self.violation(format!("{what} of {id}: unexpected error{why}: {err}"));
    }

    /// Stores a new session with `n = 0` through manager `m` and puts it in slot `slot` (a new
    /// slot for `None`). A create that fails in the store may have landed: that
    /// id is left behind (a ghost) and another is tried.
    async fn create(&self, m: usize, slot: Option<usize>) -> Result<String, String> {
        for _ in 0..50 {
            let mut session = self.managers[m]
                .open(None, Access::Exclusive)
                .await
                .map_err(|e| format!("open of a new session: {e}"))?;
            session
                .insert("n", &0u64)
                .map_err(|e| format!("insert: {e}"))?;
            let id = session.id().expose().to_owned();
            match session.end().await {
                Ok(EndOutcome::Created) => {
                    let mut model = self.model();
                    model.ids.insert(id.clone(), Track::default());
                    match slot {
                        Some(slot) => model.slots[slot] = id.clone(),
                        None => model.slots.push(id.clone()),
                    }
                    return Ok(id);
                }
                Ok(other) => return Err(format!("create of {id}: ended {other:?}")),
                Err(e) if e.is_store_failure() => {
                    bump(&self.stats.store_errors);
                    bump(&self.stats.ghosts);
                }
                Err(e) => return Err(format!("create of {id}: {e}")),
            }
        }
        Err("50 creates in a row failed in the store".to_owned())
    }
}

// ---------------------------------------------------------------------------------------------
// The workload.

/// Read, hold, write `n + 1`, end; sometimes renew the id on the way.
async fn increment(w: &World, slot: usize, m: usize, rng: &mut Rng, renew: bool) {
    bump(&w.stats.increments);
    let (id, floor) = w.look(slot);
    let mut session = match w.managers[m].open(Some(&id), Access::Exclusive).await {
        Ok(s) => s,
        Err(e) => return w.failed("exclusive open", &id, &e),
    };
    let Some(n) = w.observed(&id, floor, &session, "exclusive open") else {
        return;
    };
    let hold = rng.below(3);
    if hold > 0 {
        tokio::time::sleep(Duration::from_millis(hold)).await;
    }
    let mut current = id.clone();
    // After a renew_id that failed in the store, whether the id changed.
    let mut renew_unsure = false;
    if renew {
        bump(&w.stats.renews);
        // Waiters on the old id may find it gone from now on.
        w.with_track(&id, |t| t.leaving = true);
        let renewed = match session.renew_id().await {
            // A renewal by copy that could not confirm the old id's removal continues under the
            // copy and still reports the failure (`Session::renew_id`): the session moved, and
            // the old id, if it survived, is removed in the background.
            Err(e) if e.is_store_failure() && session.id().expose() != id => {
                bump(&w.stats.store_errors);
                bump(&w.stats.renews_failed);
                Ok(*session.id())
            }
            other => other,
        };
        match renewed {
            Ok(new) => {
                let new = new.expose().to_owned();
                let mut model = w.model();
                let track = model.ids.get(&id).cloned().unwrap_or_default();
                model.moved.insert(id.clone(), new.clone());
                model.ids.insert(
                    new.clone(),
                    Track {
                        leaving: false,
                        ..track
                    },
                );
                if model.slots[slot] == id {
                    model.slots[slot] = new.clone();
                }
                current = new;
            }
            Err(e) if e.is_store_failure() => {
                bump(&w.stats.store_errors);
                bump(&w.stats.renews_failed);
                renew_unsure = true;
            }
            Err(e @ Error::LockLost { .. }) if w.retries => {
                w.known(
                    Known::RenewRetryLockLost,
                    format!("renew_id of {id}: {e}; the session is gone from its old id"),
                );
                drop(session);
                return retire(w, slot, &id, m).await;
            }
            Err(e) => {
                w.violation(format!("renew_id of {id}: unexpected error: {e}"));
                w.with_track(&id, |t| t.leaving = false);
                return;
            }
        }
    }
    if let Err(e) = session.insert("n", &(n + 1)) {
        return w.violation(format!("insert into {current}: {e}"));
    }
    match session.end().await {
        Ok(EndOutcome::Committed) => {
            bump(&w.stats.acked);
            w.with_counts(&current, |t| {
                t.acked += 1;
                t.floor = t.floor.max(n + 1);
            });
            if renew_unsure {
                // The commit found the session under its old id: the renew did not happen.
                w.with_track(&current, |t| t.leaving = false);
            }
        }
        Ok(other) => w.violation(format!("increment of {current}: ended {other:?}")),
        Err(e) if e.is_store_failure() => {
            bump(&w.stats.store_errors);
            bump(&w.stats.ambiguous);
            w.with_counts(&current, |t| t.ambiguous += 1);
            if renew_unsure {
                // Moved or not, nobody can tell: take it out of the pool.
                bump(&w.stats.ghosts);
                retire(w, slot, &current, m).await;
            }
        }
        Err(e) if renew_unsure => {
            // The renew_id that failed had moved the session after all: it now lives under an
            // id nobody was told, and its old id is gone.
            w.known(
                Known::RenewAmbiguousMoved,
                format!(
                    "increment of {current}: after renew_id failed in the store, the end \
                     answered {e}: the session is gone from its old id"
                ),
            );
            retire(w, slot, &current, m).await;
        }
        Err(e @ Error::LockLost { .. }) if w.retries => {
            bump(&w.stats.ambiguous);
            w.with_counts(&current, |t| {
                t.ambiguous += 1;
                t.retry_lost += 1;
            });
            w.known(
                Known::CommitRetryLockLost,
                format!("increment of {current}: {e}"),
            );
        }
        Err(e) => w.violation(format!("increment of {current}: unexpected error: {e}")),
    }
}

/// Takes `id` out of the pool and puts a new session in its slot.
async fn retire(w: &World, slot: usize, id: &str, m: usize) {
    w.with_track(id, |t| t.leaving = true);
    if let Err(e) = w.create(m, Some(slot)).await {
        w.violation(format!("recreating the session of slot {slot}: {e}"));
    } else {
        bump(&w.stats.recreated);
    }
}

async fn read_only(w: &World, slot: usize, m: usize) {
    bump(&w.stats.reads);
    let (id, floor) = w.look(slot);
    match w.managers[m].open(Some(&id), Access::ReadOnly).await {
        Ok(session) => {
            w.observed(&id, floor, &session, "read-only open");
            match session.end().await {
                Ok(EndOutcome::Nothing) => {}
                Ok(other) => w.violation(format!("read-only end of {id}: ended {other:?}")),
                Err(e) => w.failed("read-only end", &id, &e),
            }
        }
        Err(e) => w.failed("read-only open", &id, &e),
    }
}

async fn concurrent(w: &World, slot: usize, m: usize, client: u64, rng: &mut Rng) {
    bump(&w.stats.concurrent);
    let (id, floor) = w.look(slot);
    let mut session = match w.managers[m].open(Some(&id), Access::Concurrent).await {
        Ok(s) => s,
        Err(e) => return w.failed("concurrent open", &id, &e),
    };
    let Some(n) = w.observed(&id, floor, &session, "concurrent open") else {
        return;
    };
    let write = rng.below(2) == 0;
    if write {
        bump(&w.stats.concurrent_writes);
        if let Err(e) = session.insert(&format!("c{client}"), &n) {
            return w.violation(format!("concurrent insert into {id}: {e}"));
        }
    }
    match session.end().await {
        Ok(EndOutcome::Committed) if write => {}
        Ok(EndOutcome::Nothing) if !write => {}
        Ok(other) => w.violation(format!("concurrent end of {id}: ended {other:?}")),
        Err(Error::SessionGone { .. }) if w.with_track(&id, |t| t.leaving) => bump(&w.stats.left),
        Err(e) => w.failed("concurrent end", &id, &e),
    }
}

/// Abandon the session and put a new one in its slot.
async fn abandon(w: &World, slot: usize, m: usize) {
    bump(&w.stats.abandons);
    let (id, floor) = w.look(slot);
    let mut session = match w.managers[m].open(Some(&id), Access::Exclusive).await {
        Ok(s) => s,
        Err(e) => return w.failed("exclusive open (to abandon)", &id, &e),
    };
    if w.observed(&id, floor, &session, "exclusive open (to abandon)")
        .is_none()
    {
        return;
    }
    w.with_track(&id, |t| t.leaving = true);
    if let Err(e) = session.abandon() {
        return w.violation(format!("abandon of {id}: {e}"));
    }
    match session.end().await {
        Ok(EndOutcome::Removed) => {}
        Ok(other) => w.violation(format!("abandon of {id}: ended {other:?}")),
        Err(e) if e.is_store_failure() => {
            bump(&w.stats.store_errors);
            bump(&w.stats.ghosts);
        }
        Err(e) => w.violation(format!("abandon of {id}: unexpected error: {e}")),
    }
    retire(w, slot, &id, m).await;
}

async fn client(w: Arc<World>, index: u64, mut rng: Rng) {
    let slots = w.settings.sessions as usize;
    let warm_up = w.settings.operations / 5;
    loop {
        let op = w.started.fetch_add(1, Ordering::SeqCst);
        if op >= w.settings.operations {
            return;
        }
        if op == warm_up {
            let sample = rss_bytes();
            *w.warm.lock().unwrap_or_else(PoisonError::into_inner) = Some(sample);
        }
        let slot = rng.index(slots);
        let m = rng.index(2);
        match rng.below(100) {
            0..50 => increment(&w, slot, m, &mut rng, false).await,
            50..54 => increment(&w, slot, m, &mut rng, true).await,
            54..78 => read_only(&w, slot, m).await,
            78..97 => concurrent(&w, slot, m, index, &mut rng).await,
            _ => abandon(&w, slot, m).await,
        }
    }
}

/// The operations a fault may be armed for alone.
const OPERATIONS: [Operation; 8] = [
    Operation::Read,
    Operation::Acquire,
    Operation::Commit,
    Operation::Release,
    Operation::Create,
    Operation::Remove,
    Operation::ChangeId,
    Operation::WriteConcurrent,
];

/// Arms a random fault every 1-4 operations (at most one a millisecond) until `stop`, then
/// disarms everything.
async fn inject(w: Arc<World>, mut rng: Rng, stop: Arc<AtomicBool>) {
    let mut next = 0;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let started = w.started.load(Ordering::SeqCst);
        if started < next {
            continue;
        }
        next = started + 1 + rng.below(4);
        let store = &w.faulty[rng.index(2)];
        let n = 1 + u32::try_from(rng.below(3)).unwrap_or(0);
        let operation = OPERATIONS[rng.index(OPERATIONS.len())];
        match rng.below(6) {
            0 => store.fail_before(n),
            1 => store.fail_before_on(operation, 1),
            2 => store.lose_reply(n.min(2)),
            3 => store.lose_reply_on(operation, 1),
            _ => store.delay(n + 1, Duration::from_millis(1 + rng.below(40))),
        }
        bump(&w.stats.faults);
    }
    for store in &w.faulty {
        disarm(store);
    }
}

fn disarm(store: &FaultyStore) {
    store.fail_before(0);
    store.lose_reply(0);
    store.delay(0, Duration::ZERO);
    for operation in OPERATIONS {
        store.fail_before_on(operation, 0);
        store.lose_reply_on(operation, 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring.

/// The resident set of this process, on Linux (`/proc/self/statm`, pages of 4 KiB).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Tasks alive on this runtime.
fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The sessions a memory store holds, from its `Debug` (`MemoryStore { sessions: N, .. }`): its
/// only public view of the count.
fn memory_entries(store: &MemoryStore) -> Option<u64> {
    let text = format!("{store:?}");
    let rest = text.split("sessions: ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------------
// The stores.

/// Which store a trial runs on.
#[derive(Debug, Clone)]
enum Target {
    Memory,
    Redis(String),
    Sql(String),
    Sqlite,
}

/// A file deleted (with SQLite's companions) when dropped.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut file = self.0.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

/// The two stores of a trial, and what to clean up after it.
struct Pair {
    stores: [Arc<dyn SessionStore>; 2],
    memory: Option<Arc<MemoryStore>>,
    _file: Option<TempFile>,
}

async fn open_pair(target: &Target, tag: &str) -> Result<Pair, Failed> {
    let pair = |a: Arc<dyn SessionStore>, b: Arc<dyn SessionStore>| Pair {
        stores: [a, b],
        memory: None,
        _file: None,
    };
    Ok(match target {
        Target::Memory => {
            let store = Arc::new(MemoryStore::new());
            let dyn_store = Arc::clone(&store) as Arc<dyn SessionStore>;
            Pair {
                memory: Some(store),
                ..pair(Arc::clone(&dyn_store), dyn_store)
            }
        }
        Target::Redis(url) => pair(
            Arc::new(test_support::open_redis(url, RedisOptions::new()).await?),
            Arc::new(test_support::open_redis(url, RedisOptions::new()).await?),
        ),
        Target::Sql(url) => pair(
            Arc::new(test_support::open_sql(url).await?),
            Arc::new(test_support::open_sql(url).await?),
        ),
        Target::Sqlite => {
            let file = TempFile(std::env::temp_dir().join(format!("session-soak-{tag}.db")));
            let url = format!("sqlite:{}", file.0.display());
            Pair {
                _file: Some(file),
                ..pair(
                    Arc::new(test_support::open_sql(&url).await?),
                    Arc::new(test_support::open_sql(&url).await?),
                )
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// A trial.

/// How many more tasks than before the run may still be alive after it: pools that grew to the
/// run's concurrency.
const TASK_SLACK: usize = 8;

/// The bound on RSS growth from warm-up to the end (see the module docs).
fn rss_bound(warm: u64) -> u64 {
    64 * 1024 * 1024 + warm / 4
}

async fn soak(name: String, target: Target, retries: bool, settings: Settings) -> TestResult {
    let seed = settings.seed ^ fnv(&name);
    // Each run's own application (and SQLite file): runs never see each other's sessions.
    let tag = format!("{}-{:016x}", std::process::id(), random_u64());
    let pair = open_pair(&target, &tag).await?;
    let app = AppName::new(&format!("/soak/{}/{tag}", name.replace("::", "/")))?;
    let config = Config::builder()
        .application_name(app)
        .retry_timeout(if retries {
            Duration::from_secs(2)
        } else {
            Duration::ZERO
        })
        .operation_timeout(Some(Duration::from_secs(5)))
        .lock_wait_timeout(Duration::from_secs(15))
        .build()?;
    let faulty = pair
        .stores
        .clone()
        .map(|store| Arc::new(Faults::wrap(store)));
    let managers = faulty
        .clone()
        .map(|store| SessionManager::new(Arc::clone(&store) as Arc<dyn SessionStore>, &config));
    let w = Arc::new(World {
        name: name.clone(),
        settings,
        retries,
        managers,
        faulty,
        model: Mutex::new(Model::default()),
        stats: Stats::default(),
        violations: Mutex::new(Vec::new()),
        started: AtomicU64::new(0),
        warm: Mutex::new(None),
    });
    for i in 0..settings.sessions {
        w.create(usize::try_from(i % 2).unwrap_or(0), None)
            .await
            .map_err(fail)?;
    }

    // The store's own tasks (connections, listeners, maintenance), before any client.
    let idle_tasks = alive_tasks();
    let began = Instant::now();
    let mut rng = Rng::new(seed);
    let stop = Arc::new(AtomicBool::new(false));
    let injector = tokio::spawn(inject(
        Arc::clone(&w),
        Rng::new(rng.next()),
        Arc::clone(&stop),
    ));
    let clients: Vec<_> = (0..settings.clients)
        .map(|i| tokio::spawn(client(Arc::clone(&w), i, Rng::new(rng.next()))))
        .collect();
    for c in clients {
        c.await
            .map_err(|e| fail(format!("a client panicked: {e}")))?;
    }
    stop.store(true, Ordering::SeqCst);
    injector
        .await
        .map_err(|e| fail(format!("the injector panicked: {e}")))?;
    let ran = began.elapsed();

    let entries = check_at_rest(&w, pair.memory.as_deref()).await;
    let warm_rss = w
        .warm
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .unwrap_or_else(rss_bytes);
    let tasks = settle_tasks(idle_tasks + TASK_SLACK).await;
    if tasks > idle_tasks + TASK_SLACK {
        w.violation(format!(
            "{tasks} tasks still alive 5 s after the run, against {idle_tasks} before it \
             (background work left behind?)"
        ));
    }
    let end_rss = rss_bytes();
    let rss = match (warm_rss, end_rss) {
        (Some(before), Some(after)) => {
            let growth = after.saturating_sub(before);
            if growth > rss_bound(before) {
                let message = format!(
                    "resident set grew {:.1} MiB ({:.1} -> {:.1} MiB), over the bound of {:.1} MiB",
                    mib(growth),
                    mib(before),
                    mib(after),
                    mib(rss_bound(before))
                );
                if settings.operations >= 2000 {
                    w.violation(message);
                } else {
                    eprintln!("soak {name}: note (too few operations to judge): {message}");
                }
            }
            format!("RSS {:.1} -> {:.1} MiB", mib(before), mib(after))
        }
        _ => "RSS not measured (no /proc/self/statm)".to_owned(),
    };
    cleanup(&w).await;

    let s = &w.stats;
    eprintln!(
        "soak {name}: seed {seed} ({} clients, {} sessions, retries {}): {} operations in {:.1} s \
         ({} increments: {} acked, {} ambiguous; {} renew_id, {} failed; {} read-only; {} \
         concurrent, {} writing; {} abandoned, {} recreated); {} faults armed, {} store errors \
         surfaced, {} ids found gone after abandon/renew, {} possible ghosts{}; known issues: \
         {} renew LockLost after retry, {} renew moved despite its error, {} commit LockLost \
         after retry ({} of them proven written); {rss}; tasks {} -> {}",
        settings.clients,
        settings.sessions,
        if retries { "on" } else { "off" },
        settings.operations,
        ran.as_secs_f64(),
        get(&s.increments),
        get(&s.acked),
        get(&s.ambiguous),
        get(&s.renews),
        get(&s.renews_failed),
        get(&s.reads),
        get(&s.concurrent),
        get(&s.concurrent_writes),
        get(&s.abandons),
        get(&s.recreated),
        get(&s.faults),
        get(&s.store_errors),
        get(&s.left),
        get(&s.ghosts),
        entries.map_or(String::new(), |n| format!(", {n} stored")),
        get(&s.known[Known::RenewRetryLockLost as usize]),
        get(&s.known[Known::RenewAmbiguousMoved as usize]),
        get(&s.known[Known::CommitRetryLockLost as usize]),
        get(&s.proven_written),
        idle_tasks,
        tasks,
    );
    let violations = w
        .violations
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if violations.is_empty() {
        return Ok(());
    }
    let shown: Vec<_> = violations.iter().take(20).cloned().collect();
    Err(fail(format!(
        "{} violation(s); replay with SOAK_SEED={} SOAK_OPERATIONS={} SOAK_CLIENTS={} \
         SOAK_SESSIONS={} (this trial's seed {seed}):\n  {}",
        violations.len(),
        settings.seed,
        settings.operations,
        settings.clients,
        settings.sessions,
        shown.join("\n  ")
    )))
}

/// The checks once the faults have stopped: every live session opens `Exclusive` through each
/// manager within 5 s with a counter in its bounds; nobody is left waiting; the memory store
/// holds no more than it may. Returns the memory store's count.
async fn check_at_rest(w: &World, memory: Option<&MemoryStore>) -> Option<u64> {
    let (live, all): (Vec<(String, Track)>, Vec<String>) = {
        let model = w.model();
        let live = model
            .slots
            .iter()
            .filter_map(|id| {
                let track = model.ids.get(id)?;
                (!track.leaving).then(|| (id.clone(), track.clone()))
            })
            .collect();
        (live, model.ids.keys().cloned().collect())
    };
    for (id, track) in &live {
        for (m, manager) in w.managers.iter().enumerate() {
            let opened = tokio::time::timeout(
                Duration::from_secs(5),
                manager.open(Some(id), Access::Exclusive),
            )
            .await;
            let session = match opened {
                Err(_) => {
                    w.violation(format!(
                        "stuck lock: {id} did not open Exclusive through manager {m} within 5 s \
                         of the faults stopping"
                    ));
                    continue;
                }
                Ok(Err(e)) => {
                    w.violation(format!("at rest, open of {id} through manager {m}: {e}"));
                    continue;
                }
                Ok(Ok(session)) => session,
            };
            if session.is_new() {
                w.observed(id, track.floor, &session, "open at rest");
                continue;
            }
            let n = w.observed(id, track.floor, &session, "open at rest");
            if let (Some(n), 0) = (n, m) {
                let most = track.acked + track.ambiguous;
                if n < track.acked {
                    w.violation(format!(
                        "lost update on {id}: the counter is {n}, but {} increments were \
                         acknowledged",
                        track.acked
                    ));
                } else if n > most {
                    w.violation(format!(
                        "{id}: the counter is {n}, more than the {} acknowledged and {} \
                         ambiguous increments",
                        track.acked, track.ambiguous
                    ));
                }
                // Beyond what the other increments account for: written, though reported lost.
                let proven = n
                    .saturating_sub(most - track.retry_lost)
                    .min(track.retry_lost);
                w.stats.proven_written.fetch_add(proven, Ordering::Relaxed);
            }
            match session.end().await {
                Ok(EndOutcome::Released) => {}
                Ok(other) => w.violation(format!("at rest, end of {id}: ended {other:?}")),
                Err(e) => w.violation(format!("at rest, end of {id}: {e}")),
            }
        }
    }
    for id in &all {
        for (m, manager) in w.managers.iter().enumerate() {
            let waiting = manager.waiting_on(id);
            if waiting != 0 {
                w.violation(format!(
                    "{waiting} request(s) still counted as waiting on {id} in manager {m}"
                ));
            }
        }
    }
    let store = memory?;
    let entries = memory_entries(store)?;
    let bound = live.len() as u64 + get(&w.stats.ghosts);
    if entries > bound {
        w.violation(format!(
            "the memory store holds {entries} sessions, more than the {} live ones and {} \
             possible ghosts",
            live.len(),
            get(&w.stats.ghosts)
        ));
    }
    Some(entries)
}

/// Waits up to 5 s for the runtime's live tasks to drop to `bound`; returns the last count.
async fn settle_tasks(bound: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tasks = alive_tasks();
        if tasks <= bound || Instant::now() >= deadline {
            return tasks;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deletes every session the trial used (best effort), so that server stores do not keep them.
async fn cleanup(w: &World) {
    let ids: Vec<String> = w.model().ids.keys().cloned().collect();
    for id in ids {
        let _ = w.managers[0].delete(&id).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The runner.

/// The two trials of one store, or, without its server, the same ignored with the reason (failing
/// when required).
fn trials_of(store: &str, target: Result<Target, Unconfigured>, settings: Settings) -> Vec<Trial> {
    let names = ["retries_off", "retries_on"].map(|mode| format!("{store}::{mode}"));
    match target {
        Ok(target) => names
            .into_iter()
            .map(|name| {
                let (target, retries) = (target.clone(), name.ends_with("retries_on"));
                Trial::test(name.clone(), move || {
                    block_on(soak(name, target, retries, settings))
                })
            })
            .collect(),
        Err(unconfigured) => unconfigured.trials(names),
    }
}

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(why) => {
            eprintln!("soak: {why}");
            return ExitCode::FAILURE;
        }
    };
    // Each trial runs its own clients; one at a time keeps each trial's RSS its own.
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    eprintln!(
        "soak: SOAK_SEED={} SOAK_OPERATIONS={} SOAK_CLIENTS={} SOAK_SESSIONS={}",
        settings.seed, settings.operations, settings.clients, settings.sessions
    );
    let mut trials = trials_of("memory", Ok(Target::Memory), settings);
    let redis = test_support::redis().map(|s| Target::Redis(s.url().to_owned()));
    trials.extend(trials_of("redis", redis, settings));
    let cluster = test_support::redis_cluster().map(|s| Target::Redis(s.url().to_owned()));
    trials.extend(trials_of("redis_cluster", cluster, settings));
    let postgres = test_support::postgres().map(|s| Target::Sql(s.url().to_owned()));
    trials.extend(trials_of("postgres", postgres, settings));
    let mysql = test_support::mysql().map(|s| Target::Sql(s.url().to_owned()));
    trials.extend(trials_of("mysql", mysql, settings));
    trials.extend(trials_of("sqlite", Ok(Target::Sqlite), settings));
    libtest_mimic::run(&args, trials).exit_code()
}
