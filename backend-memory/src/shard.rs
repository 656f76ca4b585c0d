//! One shard of the store: the sessions whose ids hash to it, with two indexes kept beside them
//! under the same lock (the deadlines the expiry sweep follows and, with a capacity bound, the
//! order of last use).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use session_core::{EndReason, Items, SessionKey};

use crate::record::{Due, Record};

/// A session that ended under a shard lock, reported after the lock is let go
/// (`Signals::ended`): an expiry event with its final items, and a wake-up of its waiters if it
/// ended locked by expiry.
#[derive(Debug)]
pub(crate) struct End {
    pub(crate) key: SessionKey,
    pub(crate) items: Arc<Items>,
    pub(crate) reason: EndReason,
    pub(crate) locked: bool,
}

/// The ends one locked section produced. Empty (and unallocated) on every common path.
pub(crate) type Ends = Vec<End>;

/// What an operation does to the live session it looked at, besides the changes it made in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The session stays (changed in place or not).
    Keep,
    /// The session ends (`remove`): taken out of the shard and reported with `reason`.
    End(EndReason),
}

/// The indexes of a shard, apart from the sessions so that both can be borrowed at once.
#[derive(Debug, Default)]
struct Index {
    /// Every session of the shard by the time the sweep looks at it next (`Record::due`), which
    /// is never later than its deadline. Reads slide deadlines without touching this index; the
    /// sweep moves an entry that came due early on to the session's current deadline, so a
    /// session costs about one move per timeout. Exact: a session that ends leaves it at once.
    deadlines: BTreeMap<Due, SessionKey>,
    /// With a capacity bound only: every session that is not locked, by its last use
    /// (`Record::used`). A locked session is left out while its lock is held, so that eviction
    /// never takes a session from under the request that holds it (its commit would be lost);
    /// the access that lets the lock go puts it back as the most recent use.
    recency: BTreeMap<u64, SessionKey>,
    /// Makes every `Due` unique.
    seq: u64,
    bounded: bool,
}

impl Index {
    fn next_due(&mut self, at: Instant) -> Due {
        self.seq = self.seq.wrapping_add(1);
        (at, self.seq)
    }

    /// Puts a session that entered the shard into both indexes (into the recency index only if
    /// it is not locked).
    fn add(&mut self, key: &SessionKey, record: &mut Record, tick: u64) {
        record.due = self.next_due(record.expires_at);
        self.deadlines.insert(record.due, key.clone());
        if self.bounded {
            record.used = NOT_LISTED;
            self.list(key, record, tick);
        }
    }

    /// Takes a session that left the shard out of both indexes.
    fn forget(&mut self, record: &mut Record) {
        self.deadlines.remove(&record.due);
        if self.bounded && record.used != NOT_LISTED {
            self.recency.remove(&record.used);
            record.used = NOT_LISTED;
        }
    }

    /// With a capacity bound: records the use `tick` of the session in the recency index if it is
    /// unlocked, or takes it out of the index while it is locked. One removal and at most one
    /// insertion, as an access without the rule would cost.
    fn list(&mut self, key: &SessionKey, record: &mut Record, tick: u64) {
        let unlocked = record.lock.is_none();
        if record.used != NOT_LISTED && (!unlocked || record.used != tick) {
            let listed = self.recency.remove(&record.used);
            record.used = NOT_LISTED;
            if unlocked {
                let key = listed.unwrap_or_else(|| key.clone());
                record.used = tick;
                self.recency.insert(tick, key);
                return;
            }
        }
        if unlocked && record.used == NOT_LISTED {
            record.used = tick;
            self.recency.insert(tick, key.clone());
        }
    }

    /// After an access that kept the session: moves its deadline entry back if a write moved
    /// the deadline before it, and records the use.
    fn accessed(&mut self, key: &SessionKey, record: &mut Record, tick: u64) {
        if record.expires_at < record.due.0 {
            let key = self
                .deadlines
                .remove(&record.due)
                .unwrap_or_else(|| key.clone());
            record.due = self.next_due(record.expires_at);
            self.deadlines.insert(record.due, key);
        }
        if self.bounded {
            self.list(key, record, tick);
        }
    }
}

/// `Record::used` of a session that is not in the recency index (locked, or no capacity bound):
/// the recency clock starts at 1.
const NOT_LISTED: u64 = 0;

/// The sessions of one shard and their indexes. Every method runs under the shard's lock.
///
/// # Memory bound
///
/// Everything a shard holds is bounded by its live sessions plus a constant, whatever the churn:
/// - a session that leaves (delete, remove, `change_id`, expiry, eviction) leaves both indexes in
///   the same step, so each index holds at most one entry per session in the map;
/// - the map holds live sessions and expired ones the sweep has not removed yet. The expiry sweep
///   runs on the maintenance task, which a busy runtime may give too little time to keep up with
///   sessions that expire as fast as they are created. So once the map has grown past twice its
///   size when last found free of expired sessions (`caught_up`, plus [`BEHIND_FLOOR`]), every
///   `create` into the shard first sweeps two due entries itself (`behind`): each due entry is
///   either an expired session, removed, or a live one moved to its current deadline, so the
///   due entries run out within half as many creates as there are of them, a sweep then finds
///   none and `caught_up` becomes the (all live) sessions held. The map stays within about
///   twice its live sessions plus the floor;
/// - the map's table, which never shrinks by itself, is shrunk by the maintenance sweep when it
///   is more than four times what the sessions need (`compact`).
#[derive(Debug, Default)]
pub(crate) struct Shard {
    sessions: HashMap<SessionKey, Record>,
    index: Index,
    /// How many sessions the shard held the last time a sweep found nothing due in it: all of
    /// them were live then (every deadline entry is at or before its session's deadline).
    caught_up: usize,
}

/// Sessions a shard may hold past twice `Shard::caught_up` before creates help the sweep: keeps
/// a shard that is simply growing from checking its deadline index on every create.
pub(crate) const BEHIND_FLOOR: usize = 64;

impl Shard {
    /// An empty shard; `bounded` keeps the recency index (for a capacity bound).
    pub(crate) fn new(bounded: bool) -> Self {
        Self {
            sessions: HashMap::new(),
            index: Index {
                bounded,
                ..Index::default()
            },
            caught_up: 0,
        }
    }

    /// Whether the shard holds more than twice the sessions it held when a sweep last found
    /// nothing due in it (plus [`BEHIND_FLOOR`]): expired sessions may be piling up faster than
    /// the maintenance task removes them, and `create` sweeps a little first. One comparison, no
    /// look at the index.
    pub(crate) fn behind(&self) -> bool {
        self.sessions.len() > self.caught_up.saturating_mul(2) + BEHIND_FLOOR
    }

    /// Gives the map's unused table back when it is more than four times what the sessions need
    /// (after a mass expiry or deletion): a hash map never shrinks by itself, so without this
    /// the memory would follow the most sessions ever held, not the live ones. Shrinks to twice
    /// the sessions, so that a shard that grows again does not resize at once. Run by the
    /// maintenance sweep, never by a request: it rehashes the sessions left (amortized over the
    /// removals that emptied the table).
    pub(crate) fn compact(&mut self) {
        let (len, capacity) = (self.sessions.len(), self.sessions.capacity());
        if capacity > BEHIND_FLOOR && capacity / 4 > len {
            self.sessions.shrink_to(len.saturating_mul(2));
        }
    }

    /// How many sessions the shard holds, expired ones not yet removed included.
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Runs `decide` on the live session of `key` (`None` if there is none: a session past its
    /// deadline does not exist, and is ended here as expired), then applies the step it returns.
    /// `tick` is the use to record (with a capacity bound).
    pub(crate) fn visit<T>(
        &mut self, key: &SessionKey, now: Instant, tick: u64, ends: &mut Ends,
        decide: impl FnOnce(Option<&mut Record>) -> (Step, T),
    ) -> T {
        let (step, value) = match self.sessions.get_mut(key) {
            Some(record) if record.is_live(now) => {
                let (step, value) = decide(Some(&mut *record));
                if step == Step::Keep {
                    self.index.accessed(key, record, tick);
                    return value;
                }
                (step, value)
            }
            Some(_) => {
                self.end(key, EndReason::Expired, ends);
                decide(None)
            }
            None => decide(None),
        };
        if let Step::End(reason) = step {
            self.end(key, reason, ends);
        }
        value
    }

    /// Looks at the live session of `key` without changing it (an expired one is ended).
    pub(crate) fn peek(
        &mut self, key: &SessionKey, now: Instant, ends: &mut Ends,
    ) -> Option<&Record> {
        if self.sessions.get(key).is_some_and(|r| !r.is_live(now)) {
            self.end(key, EndReason::Expired, ends);
        }
        self.sessions.get(key)
    }

    /// Stores `make()` under `key` unless a live session is there: `false` then, and nothing
    /// changes. A session past its deadline under `key` ends as expired first.
    pub(crate) fn create(
        &mut self, key: &SessionKey, now: Instant, tick: u64, ends: &mut Ends,
        make: impl FnOnce() -> Record,
    ) -> bool {
        use std::collections::hash_map::Entry;
        match self.sessions.entry(key.clone()) {
            Entry::Occupied(mut slot) => {
                if slot.get().is_live(now) {
                    return false;
                }
                let mut record = make();
                self.index.add(key, &mut record, tick);
                let mut old = slot.insert(record);
                self.index.forget(&mut old);
                ends.push(end(key.clone(), old, EndReason::Expired));
            }
            Entry::Vacant(slot) => {
                let mut record = make();
                self.index.add(key, &mut record, tick);
                slot.insert(record);
            }
        }
        true
    }

    /// Puts `record` under `key`, where no session is (the caller made sure).
    pub(crate) fn insert(&mut self, key: SessionKey, mut record: Record, tick: u64) {
        self.index.add(&key, &mut record, tick);
        self.sessions.insert(key, record);
    }

    /// Takes the session of `key` out of the shard, live or not, without reporting it.
    pub(crate) fn take(&mut self, key: &SessionKey) -> Option<(SessionKey, Record)> {
        let (key, mut record) = self.sessions.remove_entry(key)?;
        self.index.forget(&mut record);
        Some((key, record))
    }

    /// Ends the session of `key`, if any, for `reason`.
    fn end(&mut self, key: &SessionKey, reason: EndReason, ends: &mut Ends) {
        if let Some((key, record)) = self.take(key) {
            ends.push(end(key, record, reason));
        }
    }

    /// One look of the expiry sweep at up to `limit` entries of the deadline index that are due
    /// at `now`: a session past its deadline ends as expired; one that slid meanwhile gets its
    /// entry moved to its current deadline. Returns whether due entries are left.
    pub(crate) fn sweep(&mut self, now: Instant, limit: usize, ends: &mut Ends) -> bool {
        for _ in 0..limit {
            let Some(entry) = self.index.deadlines.first_entry() else {
                self.caught_up = self.sessions.len();
                return false;
            };
            if entry.key().0 > now {
                self.caught_up = self.sessions.len();
                return false;
            }
            let key = entry.remove();
            match self.sessions.get_mut(&key) {
                Some(record) if record.is_live(now) => {
                    record.due = self.index.next_due(record.expires_at);
                    self.index.deadlines.insert(record.due, key);
                }
                Some(_) => self.end(&key, EndReason::Expired, ends),
                // Not reached: a session that leaves the shard leaves the index too.
                None => {}
            }
        }
        let more = self
            .index
            .deadlines
            .first_key_value()
            .is_some_and(|(due, _)| due.0 <= now);
        if !more {
            self.caught_up = self.sessions.len();
        }
        more
    }

    /// The last use of the least recently used session that is not locked, other than `except`
    /// (with a capacity bound).
    pub(crate) fn oldest(&self, except: &SessionKey) -> Option<u64> {
        self.index
            .recency
            .iter()
            .take(2)
            .find(|(_, key)| *key != except)
            .map(|(tick, _)| *tick)
    }

    /// Evicts the unlocked session whose last use is `tick`, if it has not been used (or locked)
    /// since: it ends as expired. Returns whether it did.
    pub(crate) fn evict(&mut self, tick: u64, ends: &mut Ends) -> bool {
        let Some(key) = self.index.recency.get(&tick).cloned() else {
            return false;
        };
        self.end(&key, EndReason::Expired, ends);
        true
    }

    /// The sizes of the deadline and recency indexes (one entry per session, and one per
    /// unlocked session with a capacity bound).
    pub(crate) fn indexed(&self) -> (usize, usize) {
        (self.index.deadlines.len(), self.index.recency.len())
    }

    /// How many sessions the map has room for without growing.
    pub(crate) fn slots(&self) -> usize {
        self.sessions.capacity()
    }

    /// The session of `key`, live or not, unchanged (tests).
    #[cfg(test)]
    pub(crate) fn get(&self, key: &SessionKey) -> Option<&Record> {
        self.sessions.get(key)
    }
}

fn end(key: SessionKey, record: Record, reason: EndReason) -> End {
    End {
        key,
        locked: record.lock.is_some(),
        items: record.items,
        reason,
    }
}
