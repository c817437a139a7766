//! [`RecordCache`] and the [`Front`] a store's operations go through.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
// (Future is in the 2024 prelude.)
use std::time::{Duration, Instant};

use bytes::Bytes;
use hashlink::LinkedHashMap;
use zeroize::Zeroizing;

use super::CacheSettings;
use crate::record::{Deadlines, KeyHasher, Record, StoreKey};

/// Shards of the cache, each under its own lock.
const SHARDS: usize = 16;
/// Invalidation counts per shard (4,096 stripes in all).
const STRIPES: usize = 256;

/// A cached record: the store's record, its sealed bytes wiped on drop.
struct Entry {
    version: u64,
    deadlines: Deadlines,
    data: Zeroizing<Box<[u8]>>,
    filled: Instant,
}

struct Shard {
    entries: LinkedHashMap<StoreKey, Entry, BuildHasherDefault<KeyHasher>>,
    /// How many invalidations each stripe of keys has seen.
    stripes: Box<[u64; STRIPES]>,
    /// Keys this process wrote or deleted without learning the outcome (an
    /// error, a timeout, a request dropped half-way): not filled until the
    /// instant given, by which the store has run or dropped that operation. Its
    /// change would not be reported (it is this process's own), so a fill of
    /// what was there before it could stay until the ttl.
    unsettled: HashMap<StoreKey, Instant, BuildHasherDefault<KeyHasher>>,
}

/// What a fill must show: the key's stripe count and the stream's epoch when
/// the store was asked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    epoch: u64,
    count: u64,
}

/// The cache of one store.
pub(crate) struct RecordCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    ttl: Duration,
    /// How long a key stays unsettled: longer than any operation of the store
    /// takes to run or be dropped there.
    hold: Duration,
    /// Whether the invalidation stream is up: only then are entries served or
    /// filled.
    live: AtomicBool,
    /// Counts the stream's losses and returns, so a fill from before either is
    /// dropped.
    epoch: AtomicU64,
}

/// Which shard and stripe a key falls in.
fn place(key: &StoreKey) -> (usize, usize) {
    let mut hasher = KeyHasher::default();
    hasher.write(key.as_bytes());
    let hash = hasher.finish() as usize;
    (hash % SHARDS, (hash / SHARDS) % STRIPES)
}

impl RecordCache {
    /// An empty cache, down until its stream reports it is up
    /// ([`resume`](Self::resume)); `hold` is how long an operation of the store
    /// may go on after its caller stopped waiting.
    pub(crate) fn new(settings: &CacheSettings, hold: Duration) -> Self {
        let per_shard = settings.max_entries().div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    entries: LinkedHashMap::default(),
                    stripes: Box::new([0; STRIPES]),
                    unsettled: HashMap::default(),
                })
            })
            .collect();
        RecordCache {
            shards,
            per_shard,
            ttl: settings.ttl(),
            hold,
            live: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        }
    }

    fn shard(&self, index: usize) -> MutexGuard<'_, Shard> {
        // No critical section below can panic half-way.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The record under `key`, if one is cached and younger than the ttl. (The
    /// layer checks its deadlines after every load, a hit's as a store's.)
    pub(crate) fn get(&self, key: &StoreKey) -> Option<Record> {
        let (shard, _) = place(key);
        let mut shard = self.shard(shard);
        if !self.live.load(Ordering::SeqCst) {
            return None;
        }
        let fresh = match shard.entries.get(key) {
            None => return None,
            Some(entry) => entry.filled.elapsed() < self.ttl,
        };
        if !fresh {
            shard.entries.remove(key);
            return None;
        }
        let entry = shard.entries.to_back(key)?;
        Some(Record::new(
            entry.version,
            entry.deadlines,
            Bytes::copy_from_slice(&entry.data),
        ))
    }

    /// A ticket for a fill of `key`, taken before the store is asked; `None`
    /// while the stream is down (then nothing is filled).
    pub(crate) fn ticket(&self, key: &StoreKey) -> Option<Ticket> {
        let (shard, stripe) = place(key);
        let shard = self.shard(shard);
        self.live.load(Ordering::SeqCst).then(|| Ticket {
            epoch: self.epoch.load(Ordering::SeqCst),
            count: shard.stripes[stripe],
        })
    }

    /// Whether nothing dropped the fills of `ticket` for a key of `stripe`: no
    /// invalidation of the stripe, no loss of the stream. Called under the
    /// shard's lock, which [`invalidate`](Self::invalidate) and
    /// [`flush`](Self::flush) take too.
    fn current(&self, shard: &Shard, stripe: usize, ticket: Ticket) -> bool {
        self.live.load(Ordering::SeqCst)
            && self.epoch.load(Ordering::SeqCst) == ticket.epoch
            && shard.stripes[stripe] == ticket.count
    }

    /// Caches `record` under `key`, unless the key (or its stripe) was
    /// invalidated, or the stream lost, since `ticket` was taken, or the key is
    /// unsettled; a record older than the one cached is not put in its place.
    /// `own`: what a write of this process made, which the stream does not
    /// report: every fill asked before it (a read that may have found the
    /// record before the write) is dropped. Returns whether it cached `record`.
    pub(crate) fn fill(&self, key: &StoreKey, ticket: Ticket, record: &Record, own: bool) -> bool {
        let (index, stripe) = place(key);
        let mut shard = self.shard(index);
        let unsettled = match shard.unsettled.get(key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                shard.unsettled.remove(key);
                false
            }
            None => false,
        };
        // Whatever dropped this fill dropped the entry too, or put a newer one
        // there (a write of this process): it stays as it is.
        if unsettled || !self.current(&shard, stripe, ticket) {
            return false;
        }
        if own {
            shard.stripes[stripe] = shard.stripes[stripe].wrapping_add(1);
        }
        if shard
            .entries
            .get(key)
            .is_some_and(|cached| cached.version > record.version)
        {
            return false;
        }
        let entry = Entry {
            version: record.version,
            deadlines: record.deadlines,
            data: Zeroizing::new(record.data.to_vec().into_boxed_slice()),
            filled: Instant::now(),
        };
        shard.entries.replace(*key, entry);
        while shard.entries.len() > self.per_shard {
            shard.entries.pop_front();
        }
        true
    }

    /// Moves the deadlines of the entry under `key`, after a touch of this
    /// process that found `version` still there; as [`fill`](Self::fill), only
    /// when nothing was invalidated since `ticket`.
    pub(crate) fn touched(&self, key: &StoreKey, ticket: Ticket, version: u64, to: Deadlines) {
        let (index, stripe) = place(key);
        let mut shard = self.shard(index);
        let current = self.current(&shard, stripe, ticket);
        match shard.entries.get_mut(key) {
            Some(entry) if current && entry.version == version => {
                entry.deadlines = to;
                entry.filled = Instant::now();
                // A read asked before the touch would bring back the old deadlines.
                shard.stripes[stripe] = shard.stripes[stripe].wrapping_add(1);
            }
            Some(_) => {
                shard.entries.remove(key);
            }
            None => {}
        }
    }

    /// Another process changed `key` in the store (the stream says so): drops
    /// its entry and any fill on its way, and counts an invalidation.
    pub(crate) fn invalidate(&self, key: &StoreKey) {
        self.drop_key(key);
        #[cfg(feature = "metrics")]
        metrics::counter!("sealed_sessions_cache_invalidations_total").increment(1);
    }

    /// The stream is lost: drops every entry and every fill on its way, and
    /// serves nothing until [`resume`](Self::resume).
    pub(crate) fn flush(&self) {
        let was_live = self.live.swap(false, Ordering::SeqCst);
        self.clear();
        if was_live {
            tracing::warn!(target: "tower_sealed_sessions", "session cache emptied: its invalidation stream is lost; reads go to the store until it is back");
            #[cfg(feature = "metrics")]
            metrics::counter!("sealed_sessions_cache_flushes_total").increment(1);
        }
    }

    /// The stream could not say which keys changed (a flush of the whole
    /// database): drops every entry and every fill on its way; the stream stays up.
    pub(crate) fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for index in 0..SHARDS {
            self.shard(index).entries.clear();
        }
    }

    /// The stream is up (again): from now on every change is reported, so
    /// entries may be filled and served.
    pub(crate) fn resume(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if !self.live.swap(true, Ordering::SeqCst) {
            tracing::info!(target: "tower_sealed_sessions", "session cache on: its invalidation stream is up");
        }
    }

    /// Whether the stream is up.
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    /// How many entries it holds.
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.shard(i).entries.len()).sum()
    }
}

/// A store's cache, or none: what its operations call around their round trips.
#[derive(Clone)]
pub(crate) struct Front(pub(crate) Option<std::sync::Arc<RecordCache>>);

#[cfg(feature = "test-util")]
impl Front {
    /// How many records the cache holds, and whether its stream is up (`None`
    /// without a cache).
    pub(crate) fn inspect(&self) -> Option<(usize, bool)> {
        self.0.as_ref().map(|cache| (cache.len(), cache.is_live()))
    }
}

/// Counts a hit or a miss, and says which on the store operation's span.
fn looked_up(hit: bool) {
    let outcome = if hit { "hit" } else { "miss" };
    tracing::Span::current().record("cache", outcome);
    #[cfg(feature = "metrics")]
    metrics::counter!("sealed_sessions_cache_lookups_total", "outcome" => outcome).increment(1);
}

impl Front {
    /// The record under `key` if the cache holds it (a hit, counted), or `None`
    /// (not counted: the load that follows counts its own lookup).
    pub(crate) fn hit(&self, key: &StoreKey) -> Option<Record> {
        let hit = self.0.as_ref()?.get(key)?;
        #[cfg(feature = "metrics")]
        metrics::counter!("sealed_sessions_cache_lookups_total", "outcome" => "hit").increment(1);
        Some(hit)
    }

    /// A load: from the cache when it holds the record, else from `fetch`, whose
    /// record is cached.
    pub(crate) async fn load<F>(
        &self,
        key: &StoreKey,
        fetch: F,
    ) -> Result<Option<Record>, crate::error::StoreError>
    where
        F: Future<Output = Result<Option<Record>, crate::error::StoreError>>,
    {
        let Some(cache) = &self.0 else {
            return fetch.await;
        };
        if let Some(hit) = cache.get(key) {
            looked_up(true);
            return Ok(Some(hit));
        }
        looked_up(false);
        let ticket = cache.ticket(key);
        let found = fetch.await?;
        if let (Some(record), Some(ticket)) = (&found, ticket) {
            cache.fill(key, ticket, record, false);
        }
        Ok(found)
    }

    /// A write of `record` (an update): cached once the store says it is done;
    /// a conflict caches the record the store returned instead.
    pub(crate) async fn write<F>(
        &self,
        key: &StoreKey,
        record: &Record,
        write: F,
    ) -> Result<crate::store::CompareAndSet, crate::error::StoreError>
    where
        F: Future<Output = Result<crate::store::CompareAndSet, crate::error::StoreError>>,
    {
        use crate::store::CompareAndSet;
        let Some(cache) = &self.0 else {
            return write.await;
        };
        let pending = Pending::new(cache, std::slice::from_ref(key));
        let outcome = write.await;
        match (&outcome, pending.ticket) {
            (Ok(CompareAndSet::Done), Some(ticket)) => {
                cache.fill(key, ticket, record, true);
            }
            (Ok(CompareAndSet::Conflict(current)), Some(ticket)) => {
                cache.fill(key, ticket, current, false);
            }
            (Ok(_), _) => cache.drop_key(key),
            (Err(_), _) => return outcome,
        }
        pending.settled();
        outcome
    }

    /// A create: `record` is cached when the store made it.
    pub(crate) async fn create<F>(
        &self,
        key: &StoreKey,
        record: &Record,
        create: F,
    ) -> Result<bool, crate::error::StoreError>
    where
        F: Future<Output = Result<bool, crate::error::StoreError>>,
    {
        let Some(cache) = &self.0 else {
            return create.await;
        };
        let pending = Pending::new(cache, std::slice::from_ref(key));
        let outcome = create.await;
        match (&outcome, pending.ticket) {
            (Ok(true), Some(ticket)) => {
                cache.fill(key, ticket, record, true);
            }
            (Ok(_), _) => cache.drop_key(key),
            (Err(_), _) => return outcome,
        }
        pending.settled();
        outcome
    }

    /// A touch: the entry's deadlines move with the stored ones.
    pub(crate) async fn touch<F>(
        &self,
        key: &StoreKey,
        deadlines: Deadlines,
        expected_version: u64,
        touch: F,
    ) -> Result<bool, crate::error::StoreError>
    where
        F: Future<Output = Result<bool, crate::error::StoreError>>,
    {
        let Some(cache) = &self.0 else {
            return touch.await;
        };
        let pending = Pending::new(cache, std::slice::from_ref(key));
        let outcome = touch.await;
        match (&outcome, pending.ticket) {
            (Ok(true), Some(ticket)) => cache.touched(key, ticket, expected_version, deadlines),
            (Ok(_), _) => cache.drop_key(key),
            (Err(_), _) => return outcome,
        }
        pending.settled();
        outcome
    }

    /// A delete of `keys`: their entries go before the store is asked (no
    /// request is served a record being deleted) and again after (no fill of a
    /// read that raced it survives).
    pub(crate) async fn delete<T, F>(
        &self,
        keys: &[StoreKey],
        delete: F,
    ) -> Result<T, crate::error::StoreError>
    where
        F: Future<Output = Result<T, crate::error::StoreError>>,
    {
        let Some(cache) = &self.0 else {
            return delete.await;
        };
        keys.iter().for_each(|key| cache.drop_key(key));
        let pending = Pending::new(cache, keys);
        let outcome = delete.await;
        if outcome.is_ok() {
            keys.iter().for_each(|key| cache.drop_key(key));
            pending.settled();
        }
        outcome
    }
}

/// A write or delete of this process on its way to the store. Unless it is
/// [`settled`](Pending::settled) (its outcome known and applied to the cache),
/// dropping it (an error, or the request dropped half-way) leaves its keys
/// unsettled: the store may still run it, and this process would not hear of it.
struct Pending<'a> {
    cache: &'a RecordCache,
    keys: &'a [StoreKey],
    /// The ticket of a write of one key, taken before it was sent.
    ticket: Option<Ticket>,
    settled: bool,
}

impl<'a> Pending<'a> {
    fn new(cache: &'a RecordCache, keys: &'a [StoreKey]) -> Self {
        let ticket = match keys {
            [key] => cache.ticket(key),
            _ => None,
        };
        Pending {
            cache,
            keys,
            ticket,
            settled: false,
        }
    }

    fn settled(mut self) {
        self.settled = true;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.keys.iter().for_each(|key| self.cache.unsettle(key));
        }
    }
}

impl RecordCache {
    /// Drops the entry under `key` and the fills on their way (their stripe's
    /// count moves): an invalidation, or this process's own change whose outcome
    /// is unknown.
    fn drop_key(&self, key: &StoreKey) {
        let (index, stripe) = place(key);
        let mut shard = self.shard(index);
        shard.stripes[stripe] = shard.stripes[stripe].wrapping_add(1);
        shard.entries.remove(key);
    }

    /// A write or delete of `key` by this process whose outcome is unknown:
    /// drops the entry and fills on their way, and fills none for `hold`.
    fn unsettle(&self, key: &StoreKey) {
        let (index, stripe) = place(key);
        let mut shard = self.shard(index);
        shard.stripes[stripe] = shard.stripes[stripe].wrapping_add(1);
        shard.entries.remove(key);
        let now = Instant::now();
        if shard.unsettled.len() >= 1_024 {
            shard.unsettled.retain(|_, until| *until > now);
        }
        shard.unsettled.insert(*key, now + self.hold);
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
