//! [`MemoryStore`]: the embedded, in-process store.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::future::{Future, ready};
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::clock::{Clock, Timestamp};
use crate::error::{ConfigError, StoreError};
use crate::record::{Deadlines, Record, StoreKey};
use crate::store::{
    CompareAndSet, INDEX_GRACE, IndexEntry, SessionStore, UserTag, cleanup, cleanup_task,
};

mod shard;

use shard::{KeyHasher, Shard};

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
///   login, logout and revocation). The cleanup task drops the entries of sessions
///   that are gone, evicted ones included.
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
        while self
            .total
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, claim)
            .is_ok()
        {
            let now = *now.get_or_insert_with(|| self.clock.now());
            match shard.evict(key, now) as u64 {
                0 => {
                    // Nothing may go: the claim is given back.
                    self.total.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                gone => self.total.fetch_sub(gone - 1, Ordering::Relaxed),
            };
        }
        result
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
        // Entries of sessions that are gone (expired, deleted or evicted) go too;
        // one just written for a session being created is spared for a moment.
        let grace = INDEX_GRACE;
        self.users().retain(|_, index| {
            self.prune(index, |key, e| {
                now < e.expires_at
                    && (now.saturating_since(e.indexed_at) < grace || self.shard(key).contains(key))
            });
            !index.entries.is_empty()
        });
        removed
    }

    /// Drops the entries of `index` that `keep` refuses: their sessions are no
    /// longer listed there.
    fn prune(&self, index: &mut UserIndex, mut keep: impl FnMut(&StoreKey, &IndexEntry) -> bool) {
        index.entries.retain(|key, entry| {
            let kept = keep(key, entry);
            if !kept {
                self.shard(key).unlist(key);
            }
            kept
        });
        index.pruned = index.entries.len();
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
        // most one lifespan of sessions even without a sweep; but only once it
        // has doubled since it was last pruned, so an upsert costs O(1) amortized
        // however many sessions the user has.
        if index.entries.len() >= 2 * index.pruned.max(8) {
            self.prune(index, |_, e| entry.indexed_at < e.expires_at);
        }
        match index.entries.entry(entry.store_key) {
            Entry::Occupied(mut existing) => {
                let merged = existing.get().merged(*entry);
                existing.insert(merged);
            }
            Entry::Vacant(vacant) => {
                vacant.insert(*entry);
                self.shard(&entry.store_key).list(entry.store_key);
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
                    self.shard(key).unlist(key);
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
                self.prune(index, |_, e| now < e.expires_at);
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
}

/// One user's session index.
#[derive(Default)]
struct UserIndex {
    entries: HashMap<StoreKey, IndexEntry, BuildHasherDefault<KeyHasher>>,
    /// How many entries it held after it was last pruned of expired ones.
    pruned: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use bytes::Bytes;

    fn record(version: u64, expires_at: Timestamp) -> Record {
        let deadlines = Deadlines {
            idle: expires_at,
            lifespan: Timestamp::NEVER,
            active: Timestamp::from_unix_millis(0),
        };
        Record::new(version, deadlines, Bytes::from_static(b"sealed"))
    }

    fn key(n: u8) -> StoreKey {
        StoreKey::from_bytes([n; 32])
    }

    #[tokio::test]
    async fn full_store_evicts_the_least_recently_used_session() {
        let store = MemoryStore::builder().max_sessions(3).build();
        let far = Timestamp::NEVER;
        for n in 0..3 {
            assert!(store.create(&key(n), &record(1, far)).await.unwrap());
        }
        // Reading session 0 makes session 1 the least recently used.
        assert!(store.load(&key(0)).await.unwrap().is_some());
        assert!(store.create(&key(3), &record(1, far)).await.unwrap());
        assert_eq!(store.len(), 3);
        assert!(store.load(&key(1)).await.unwrap().is_none(), "LRU evicted");
        for n in [0, 2, 3] {
            assert!(store.load(&key(n)).await.unwrap().is_some(), "{n} kept");
        }
    }

    #[tokio::test]
    async fn a_sharded_store_keeps_its_bound_and_the_recently_used() {
        let max = 5_000;
        let store = MemoryStore::builder().max_sessions(max).build();
        assert_eq!(store.shards.len(), 64);
        let far = Timestamp::NEVER;
        let keys: Vec<StoreKey> = (0..max)
            .map(|_| StoreKey::from_bytes(rand::random()))
            .collect();
        for k in &keys {
            assert!(store.create(k, &record(1, far)).await.unwrap());
        }
        assert_eq!(store.len(), max, "nothing evicted below the bound");
        for k in &keys[..100] {
            assert!(store.load(k).await.unwrap().is_some());
        }
        for _ in 0..1_000 {
            let k = StoreKey::from_bytes(rand::random());
            assert!(store.create(&k, &record(1, far)).await.unwrap());
        }
        assert_eq!(store.len(), max, "the bound holds");
        for k in &keys[..100] {
            assert!(
                store.load(k).await.unwrap().is_some(),
                "recently read, kept"
            );
        }
    }

    /// Lists `key` in a user's index, as the layer does before writing a session
    /// tied to a user, and stores its record.
    async fn bound(store: &MemoryStore, user: u8, key: &StoreKey) {
        let tag = UserTag::from_bytes([user; 32]);
        let now = store.clock.now();
        let entry = IndexEntry::new(*key, now, Timestamp::NEVER, now, false);
        store.index_add(&tag, &entry).await.unwrap();
        assert!(
            store
                .create(key, &record(1, Timestamp::NEVER))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn an_anonymous_flood_never_evicts_a_session_tied_to_a_user() {
        for max in [100, 10_000] {
            let store = MemoryStore::builder().max_sessions(max).build();
            let users: Vec<StoreKey> = (0..max / 2)
                .map(|_| StoreKey::from_bytes(rand::random()))
                .collect();
            for (n, key) in users.iter().enumerate() {
                bound(&store, n as u8, key).await;
            }
            for _ in 0..10 * max {
                let key = StoreKey::from_bytes(rand::random());
                assert!(
                    store
                        .create(&key, &record(1, Timestamp::NEVER))
                        .await
                        .unwrap()
                );
            }
            let shards = store.shards.len() as u64;
            assert!(
                store.len() <= max + shards,
                "{} for a bound of {max}",
                store.len()
            );
            for key in &users {
                assert!(store.load(key).await.unwrap().is_some(), "bound: {max}");
            }
        }
    }

    #[tokio::test]
    async fn sessions_tied_to_users_evict_each_other_and_anonymous_ones_take_no_room() {
        let store = MemoryStore::builder().max_sessions(3).build();
        for n in 0..3 {
            bound(&store, n, &key(n)).await;
        }
        // A fourth user's session: the least recently used of the others goes.
        bound(&store, 3, &key(3)).await;
        assert!(store.load(&key(0)).await.unwrap().is_none());
        // Anonymous sessions evict no user: they pass the bound by one, in turn.
        for n in 10..20 {
            assert!(
                store
                    .create(&key(n), &record(1, Timestamp::NEVER))
                    .await
                    .unwrap()
            );
            assert_eq!(store.len(), 4);
        }
        for n in 1..4 {
            assert!(store.load(&key(n)).await.unwrap().is_some(), "{n} kept");
        }
        // Out of every index, a session is anonymous again: among the first to go.
        // A user's session takes the room of both anonymous ones (the store was
        // one over its bound).
        let tag = UserTag::from_bytes([1; 32]);
        store.index_remove(&tag, &[key(1)]).await.unwrap();
        bound(&store, 4, &key(4)).await;
        assert_eq!(store.len(), 3);
        assert!(store.load(&key(19)).await.unwrap().is_none(), "anonymous");
        assert!(store.load(&key(1)).await.unwrap().is_none(), "unlisted");
        for n in 2..5 {
            assert!(store.load(&key(n)).await.unwrap().is_some(), "{n} kept");
        }
    }

    #[tokio::test]
    async fn expired_records_are_the_first_to_go() {
        let hand = ManualClock::new();
        let store = MemoryStore::builder()
            .max_sessions(10)
            .clock(hand.clone().into())
            .build();
        let soon = hand.now().saturating_add(Duration::from_secs(60));
        for n in 0..5 {
            store
                .create(&key(n), &record(1, Timestamp::NEVER))
                .await
                .unwrap();
        }
        // The expired ones are the most recently used.
        for n in 5..10 {
            store.create(&key(n), &record(1, soon)).await.unwrap();
        }
        hand.advance(Duration::from_secs(61));
        for n in 10..15 {
            store
                .create(&key(n), &record(1, Timestamp::NEVER))
                .await
                .unwrap();
        }
        assert_eq!(store.len(), 10);
        for n in (0..5).chain(10..15) {
            assert!(store.load(&key(n)).await.unwrap().is_some(), "{n} kept");
        }
    }

    #[tokio::test]
    async fn expired_record_is_dropped_on_access() {
        let hand = ManualClock::new();
        let store = MemoryStore::builder().clock(hand.clone().into()).build();
        let deadline = hand.now().saturating_add(Duration::from_secs(60));
        store.create(&key(1), &record(1, deadline)).await.unwrap();
        assert!(store.load(&key(1)).await.unwrap().is_some());
        hand.advance(Duration::from_secs(60));
        assert!(store.load(&key(1)).await.unwrap().is_none());
        assert_eq!(store.len(), 0, "removed, not just hidden");
        // An expired record does not block creating under its key, nor count as live.
        store.create(&key(2), &record(1, deadline)).await.unwrap();
        let expired_key = key(2);
        let revived = store.touch(&expired_key, record(1, Timestamp::NEVER).deadlines, 1);
        assert!(
            !revived.await.unwrap(),
            "an expired record is not touched back to life"
        );
        assert_eq!(
            store
                .update(&key(2), &record(2, Timestamp::NEVER), 1)
                .await
                .unwrap(),
            CompareAndSet::Missing
        );
        assert!(
            store
                .create(&key(2), &record(1, Timestamp::NEVER))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn delete_expired_removes_only_expired_records() {
        let hand = ManualClock::new();
        let store = MemoryStore::builder().clock(hand.clone().into()).build();
        let soon = hand.now().saturating_add(Duration::from_secs(10));
        let late = hand.now().saturating_add(Duration::from_secs(100));
        store.create(&key(1), &record(1, soon)).await.unwrap();
        store.create(&key(2), &record(1, late)).await.unwrap();
        store
            .create(&key(3), &record(1, Timestamp::NEVER))
            .await
            .unwrap();
        hand.advance(Duration::from_secs(30));
        assert_eq!(store.delete_expired(hand.now()).await.unwrap(), 1);
        assert_eq!(store.len(), 2);
        assert_eq!(store.delete_expired(hand.now()).await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn cleanup_task_sweeps_on_its_interval_and_refuses_short_ones() {
        let err = MemoryStore::new()
            .cleanup_task(Duration::from_secs(9))
            .err()
            .unwrap();
        assert!(err.to_string().contains("cleanup_interval"), "{err}");
        assert!(
            MemoryStore::new()
                .cleanup_task(Duration::from_secs(10))
                .is_ok()
        );

        let hand = ManualClock::new();
        let store = MemoryStore::builder().clock(hand.clone().into()).build();
        let soon = hand.now().saturating_add(Duration::from_secs(5));
        store.create(&key(1), &record(1, soon)).await.unwrap();
        hand.advance(Duration::from_secs(6));
        let task = tokio::spawn(store.cleanup_task(Duration::from_secs(3600)).unwrap());
        tokio::time::sleep(Duration::from_secs(3599)).await;
        assert_eq!(store.len(), 1, "not swept before the interval");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(store.len(), 0, "swept after one interval");
        task.abort();
    }
}
