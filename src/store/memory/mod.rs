//! [`MemoryStore`]: the embedded, in-process store.

use std::collections::HashMap;
use std::fmt;
use std::future::{Future, ready};
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hashlink::LinkedHashMap;

use crate::clock::{Clock, Timestamp};
use crate::error::{ConfigError, StoreError};
use crate::record::{Deadlines, Record, StoreKey};
use crate::store::{
    CompareAndSet, INDEX_GRACE, IndexEntry, IndexSample, SessionStore, UserTag, cleanup,
    cleanup_task,
};

mod shard;

use crate::record::KeyHasher;
use shard::{Owners, Shard};

/// An in-process [`SessionStore`], bounded in size: the embedded default.
///
/// - **Bounded**: it holds at most [`max_sessions`](MemoryStoreBuilder::max_sessions)
///   records (default 1,000,000). When full, storing one more makes room: expired
///   records go first, then the least recently used *anonymous* session (one no
///   user index lists), whose visitor then starts a new, empty session. A session
///   tied to a user is evicted only for another user's session, never for an
///   anonymous one, so a flood of anonymous sessions logs no one out. Up to 4,096
///   sessions the order is exact; above, the store is split into 64 shards and
///   the session evicted is the least recently used of its kind in the shard
///   being written, which approximates the order. (The bound can be passed by at
///   most one session per shard, when the shard being written holds no other
///   session it may evict.)
/// - **Expiry**: a record found past its deadline on access is removed on the
///   spot, and [`MemoryStore::cleanup_task`] removes the rest on a schedule; a
///   full shard also sweeps its expired records before it evicts a live one
///   (again after every sixteenth of the shard evicted).
/// - **User indexes**: kept beside the records, under one lock (they change only at
///   login, logout and revocation), each in a rotating order: an upsert looks at
///   the two entries at its front and a login's sample at the next 64, moving them
///   to the back and dropping the expired, so neither costs more at 2,000
///   sessions of one user than at 10. A session evicted to make room leaves its
///   user's index at once; the cleanup task drops the entries of sessions that
///   are gone otherwise.
/// - **Scope**: one process. Sessions are lost on restart and not shared between
///   replicas: use the Redis store for that.
///
/// Records live in 64 shards (one for small stores), each two maps kept in
/// least-recently-used order ([hashlink](https://docs.rs/hashlink)'s
/// `LinkedHashMap`), one for anonymous sessions and one for those tied to a user,
/// behind its own mutex. A user index lists a session before its record is
/// written, and the shard keeps the store keys listed, so a record lands in the
/// right map when it is stored. Every operation on a session is one short
/// critical section on its shard, so compare-and-set is atomic without a global
/// lock; only the cleanup sweep and `len` visit every shard.
///
/// ```
/// use std::time::Duration;
/// use tower_sealed_sessions::{Keys, MemoryStore, SessionLayer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store = MemoryStore::builder().max_sessions(10_000).build();
/// assert_eq!(store.max_sessions(), 10_000);
/// // Expired records are dropped on access, and by a sweep on a schedule:
/// tokio::spawn(store.cleanup_task(MemoryStore::DEFAULT_CLEANUP_INTERVAL).unwrap());
/// let layer = SessionLayer::new(store.clone(), Keys::generate());
/// assert!(store.is_empty());
/// # }
/// ```
///
/// Cheap to clone; clones share the same sessions.
#[derive(Clone)]
pub struct MemoryStore {
    shards: Arc<[Mutex<Shard>]>,
    /// Records in all shards.
    total: Arc<AtomicU64>,
    users: Arc<Mutex<HashMap<UserTag, UserIndex>>>,
    clock: Clock,
    max_sessions: u64,
}

/// Builds a [`MemoryStore`].
#[derive(Debug, Clone)]
pub struct MemoryStoreBuilder {
    max_sessions: u64,
    clock: Clock,
}

impl MemoryStore {
    /// The default bound on the number of sessions.
    pub const DEFAULT_MAX_SESSIONS: u64 = 1_000_000;
    /// The shortest interval [`MemoryStore::cleanup_task`] accepts (Kibana's minimum).
    pub const MIN_CLEANUP_INTERVAL: Duration = cleanup::MIN_CLEANUP_INTERVAL;
    /// The usual cleanup interval (Kibana's default).
    pub const DEFAULT_CLEANUP_INTERVAL: Duration = cleanup::DEFAULT_CLEANUP_INTERVAL;

    /// A store with the default bound and the system clock.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Configures a store.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            max_sessions: Self::DEFAULT_MAX_SESSIONS,
            clock: Clock::system(),
        }
    }

    /// The bound on the number of sessions.
    pub fn max_sessions(&self) -> u64 {
        self.max_sessions
    }

    /// How many records the store holds, expired ones not yet dropped included.
    pub fn len(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every record with its key: an inspection hook for tests.
    #[cfg(feature = "test-util")]
    pub fn dump(&self) -> Vec<(StoreKey, Record)> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let shard = lock(shard);
            all.extend(shard.records().map(|(k, v)| (*k, v.clone())));
        }
        all
    }

    /// Runs `f` on the shard that holds `key`, under its lock, and keeps the
    /// count and the bound: beyond it, the shard makes room (see [`Shard::evict`]).
    fn with_shard<R>(&self, key: &StoreKey, f: impl FnOnce(&mut Shard) -> R) -> R {
        let mut shard = self.shard(key);
        let before = shard.len() as u64;
        let result = f(&mut shard);
        let after = shard.len() as u64;
        if after >= before {
            self.total.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.total.fetch_sub(before - after, Ordering::Relaxed);
        }

        // One eviction per unit over the bound, claimed atomically, so writers on
        // two shards never both evict for the same excess. The record just used
        // never goes.
        let max = self.max_sessions;
        let claim = |t: u64| (t > max).then(|| t - 1);
        let mut now = None;
        let mut unlisted = Vec::new();
        while self
            .total
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, claim)
            .is_ok()
        {
            let now = *now.get_or_insert_with(|| self.clock.now());
            match shard.evict(key, now, &mut unlisted) as u64 {
                0 => {
                    // Nothing may go: the claim is given back.
                    self.total.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                gone => self.total.fetch_sub(gone - 1, Ordering::Relaxed),
            };
        }
        #[cfg(feature = "metrics")]
        crate::metrics::memory_sessions(self.total.load(Ordering::Relaxed));
        if !unlisted.is_empty() {
            // The users' lock is taken before a shard's everywhere, so the shard's
            // goes first.
            drop(shard);
            self.unlist_evicted(unlisted);
        }
        result
    }

    /// Takes sessions evicted to make room out of the indexes that listed them,
    /// so that their users no longer see them (the shard has unlisted them).
    fn unlist_evicted(&self, unlisted: Vec<(StoreKey, Owners)>) {
        let mut users = self.users();
        for (key, owners) in unlisted {
            for user in owners.users() {
                if let Some(index) = users.get_mut(user) {
                    index.entries.remove(&key);
                    if index.entries.is_empty() {
                        users.remove(user);
                    }
                }
            }
        }
    }

    /// The shard that holds `key`, locked.
    fn shard(&self, key: &StoreKey) -> MutexGuard<'_, Shard> {
        // Store keys are uniformly random: their first byte picks a shard.
        let index = usize::from(key.as_bytes()[0]) % self.shards.len();
        lock(&self.shards[index])
    }

    /// A future that deletes expired records every `interval`, forever, on the
    /// store's own clock: [`cleanup_task`](crate::store::cleanup_task) for this
    /// store. Spawn it on the runtime (`tokio::spawn`); the first sweep runs one
    /// interval after start.
    ///
    /// # Errors
    ///
    /// An interval under [`MemoryStore::MIN_CLEANUP_INTERVAL`] is refused.
    pub fn cleanup_task(
        &self,
        interval: Duration,
    ) -> Result<impl Future<Output = ()> + Send + 'static, ConfigError> {
        cleanup_task(self.clone(), interval, self.clock.clone())
    }

    /// Compare-and-set under the shard's lock: replaces the record with
    /// `replacement`, or removes it when `None`, if its version is
    /// `expected_version`.
    fn swap(
        &self,
        key: &StoreKey,
        expected_version: u64,
        replacement: Option<&Record>,
    ) -> CompareAndSet {
        let now = self.clock.now();
        self.with_shard(key, |shard| match shard.live(key, now) {
            None => CompareAndSet::Missing,
            Some(current) if current.version != expected_version => {
                CompareAndSet::Conflict(current.clone())
            }
            Some(current) => {
                match replacement {
                    Some(record) => *current = record.clone(),
                    None => {
                        shard.remove(key);
                    }
                }
                CompareAndSet::Done
            }
        })
    }

    fn users(&self) -> MutexGuard<'_, HashMap<UserTag, UserIndex>> {
        // No critical section below can panic half-way.
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The number of entries in every user index: an inspection hook for tests.
    #[cfg(feature = "test-util")]
    pub fn index_len(&self) -> usize {
        self.users().values().map(|index| index.entries.len()).sum()
    }

    fn remove_expired(&self, now: Timestamp) -> u64 {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let gone = lock(shard).remove_expired(now) as u64;
            self.total.fetch_sub(gone, Ordering::Relaxed);
            removed += gone;
        }
        #[cfg(feature = "metrics")]
        crate::metrics::memory_sessions(self.total.load(Ordering::Relaxed));
        // Entries of sessions that are gone (expired, deleted or evicted) go too;
        // one just written for a session being created is spared for a moment.
        let grace = INDEX_GRACE;
        self.users().retain(|user, index| {
            self.prune(user, index, |key, e| {
                now < e.expires_at
                    && (now.saturating_since(e.indexed_at) < grace || self.shard(key).contains(key))
            });
            !index.entries.is_empty()
        });
        removed
    }

    /// Drops the entries of `index` that `keep` refuses: their sessions are no
    /// longer listed there.
    fn prune(
        &self,
        user: &UserTag,
        index: &mut UserIndex,
        mut keep: impl FnMut(&StoreKey, &IndexEntry) -> bool,
    ) {
        index.entries.retain(|key, entry| {
            let kept = keep(key, entry);
            if !kept {
                self.shard(key).unlist(key, user);
            }
            kept
        });
    }

    /// Moves up to `count` entries from the front of the index of `user` to its
    /// back, dropping those expired at `now`, and returns the others: a rotation,
    /// so that successive calls visit every entry in turn.
    fn rotate(
        &self,
        user: &UserTag,
        index: &mut UserIndex,
        count: usize,
        now: Timestamp,
    ) -> Vec<IndexEntry> {
        let mut kept = Vec::with_capacity(count.min(index.entries.len()));
        for _ in 0..count.min(index.entries.len()) {
            let Some((key, entry)) = index.entries.pop_front() else {
                break;
            };
            if now < entry.expires_at {
                index.entries.insert(key, entry);
                kept.push(entry);
            } else {
                self.shard(&key).unlist(&key, user);
            }
        }
        kept
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.len())
            .field("max_sessions", &self.max_sessions)
            .finish()
    }
}

impl MemoryStoreBuilder {
    /// The most sessions the store keeps (at least 1); see [`MemoryStore`] for what
    /// happens when it is full.
    pub fn max_sessions(mut self, max: u64) -> Self {
        self.max_sessions = max.max(1);
        self
    }

    /// The clock that decides expiry; use the same one as the layer.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore {
        // Exact LRU order for small stores; 64 independent shards for large ones.
        let count = if self.max_sessions <= 4096 { 1 } else { 64 };
        let shards: Vec<Mutex<Shard>> = (0..count).map(|_| Mutex::new(Shard::default())).collect();
        MemoryStore {
            shards: shards.into(),
            total: Arc::default(),
            users: Arc::default(),
            clock: self.clock,
            max_sessions: self.max_sessions,
        }
    }
}

/// Our critical sections never panic half-way, so a poisoned lock still guards
/// consistent state.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SessionStore for MemoryStore {
    const KIND: &'static str = "memory";

    /// Every operation is done under a lock before its future is returned.
    const IMMEDIATE: bool = true;

    fn load(
        &self,
        key: &StoreKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        let now = self.clock.now();
        let found = self.with_shard(key, |shard| shard.live(key, now).cloned());
        ready(Ok(found))
    }

    fn create(
        &self,
        key: &StoreKey,
        record: &Record,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let now = self.clock.now();
        let created = self.with_shard(key, |shard| {
            let taken = shard.live(key, now).is_some();
            if !taken {
                shard.insert(*key, record.clone());
            }
            !taken
        });
        ready(Ok(created))
    }

    fn update(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> impl Future<Output = Result<CompareAndSet, StoreError>> + Send {
        ready(Ok(self.swap(key, expected_version, Some(record))))
    }

    fn touch(
        &self,
        key: &StoreKey,
        deadlines: Deadlines,
        expected_version: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let now = self.clock.now();
        let touched = self.with_shard(key, |shard| match shard.live(key, now) {
            Some(record) if record.version == expected_version => {
                record.deadlines = deadlines;
                true
            }
            _ => false,
        });
        ready(Ok(touched))
    }

    fn delete(&self, key: &StoreKey) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.with_shard(key, |shard| shard.remove(key));
        ready(Ok(()))
    }

    fn delete_version(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> impl Future<Output = Result<CompareAndSet, StoreError>> + Send {
        ready(Ok(self.swap(key, expected_version, None)))
    }

    fn delete_expired(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        ready(Ok(self.remove_expired(now)))
    }

    fn index_add(
        &self,
        user: &UserTag,
        entry: &IndexEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut users = self.users();
        let index = users.entry(*user).or_default();
        // As in Redis, an index drops the entries past their expiry, so it holds at
        // most one lifespan of sessions even without a sweep: each upsert looks
        // at the two entries at the front and moves them to the back, so an
        // upsert costs O(1) however many sessions the user has, and every entry
        // is looked at once per half as many upserts as the index holds.
        self.rotate(user, index, UPSERT_PRUNES, entry.indexed_at);
        match index.entries.get_mut(&entry.store_key) {
            Some(existing) => *existing = existing.merged(*entry),
            None => {
                index.entries.insert(entry.store_key, *entry);
                self.shard(&entry.store_key).list(entry.store_key, *user);
            }
        }
        ready(Ok(()))
    }

    fn index_remove(
        &self,
        user: &UserTag,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut users = self.users();
        if let Some(index) = users.get_mut(user) {
            for key in keys {
                if index.entries.remove(key).is_some() {
                    self.shard(key).unlist(key, user);
                }
            }
            if index.entries.is_empty() {
                users.remove(user);
            }
        }
        ready(Ok(()))
    }

    fn index_list(
        &self,
        user: &UserTag,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<IndexEntry>, StoreError>> + Send {
        let mut users = self.users();
        let listed = match users.get_mut(user) {
            Some(index) => {
                self.prune(user, index, |_, e| now < e.expires_at);
                let listed: Vec<IndexEntry> = index.entries.values().copied().collect();
                if listed.is_empty() {
                    users.remove(user);
                }
                listed
            }
            None => Vec::new(),
        };
        ready(Ok(listed))
    }

    /// The `limit` entries at the front of the index, which then move to its
    /// back: each call checks the next ones, and the work is O(`limit`).
    fn index_sample(
        &self,
        user: &UserTag,
        now: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<IndexSample, StoreError>> + Send {
        let mut users = self.users();
        let sample = match users.get_mut(user) {
            Some(index) => {
                let entries = self.rotate(user, index, limit, now);
                let whole = entries.len() == index.entries.len();
                if index.entries.is_empty() {
                    users.remove(user);
                }
                IndexSample::new(entries, whole)
            }
            None => IndexSample::new(Vec::new(), true),
        };
        ready(Ok(sample))
    }
}

/// How many entries an upsert looks at for expiry (see `index_add`).
const UPSERT_PRUNES: usize = 2;

/// One user's session index, in the order [`MemoryStore::rotate`] visits it.
#[derive(Default)]
struct UserIndex {
    entries: LinkedHashMap<StoreKey, IndexEntry, BuildHasherDefault<KeyHasher>>,
}

#[cfg(test)]
mod tests;
