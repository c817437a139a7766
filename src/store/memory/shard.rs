//! One shard of the [`MemoryStore`](super::MemoryStore): its records in two
//! least-recently-used lists, sessions tied to a user apart from anonymous ones,
//! so that a flood of anonymous sessions never evicts a logged-in user.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::BuildHasherDefault;

use hashlink::LinkedHashMap;

use crate::clock::Timestamp;
use crate::record::{KeyHasher, Record, StoreKey};
use crate::store::UserTag;

/// The users whose indexes list one session: nearly always one, kept inline.
pub(super) struct Owners {
    first: UserTag,
    more: Vec<UserTag>,
}

impl Owners {
    /// Every user listed.
    pub(super) fn users(&self) -> impl Iterator<Item = &UserTag> {
        std::iter::once(&self.first).chain(&self.more)
    }
}

type Lru = LinkedHashMap<StoreKey, Record, BuildHasherDefault<KeyHasher>>;

/// One shard: records in least-recently-used order, oldest first.
#[derive(Default)]
pub(super) struct Shard {
    /// Sessions no user index lists: the first to be evicted.
    anonymous: Lru,
    /// Sessions a user index lists: evicted only to make room for another of
    /// their kind, when the shard holds no anonymous session.
    bound: Lru,
    /// The store keys user indexes list, with the users whose indexes list each
    /// (a session is in two for a moment when it changes user): an eviction
    /// unlists its victim from them. An index lists a session before its record
    /// is written, so this is kept apart from the records.
    listed: HashMap<StoreKey, Owners, BuildHasherDefault<KeyHasher>>,
    /// Evictions left before the next sweep of expired records: 0 sweeps at the
    /// next eviction. Sweeping once per sixteenth of the shard evicted keeps its
    /// cost at a few comparisons per eviction.
    evictions_before_sweep: usize,
}

impl Shard {
    pub(super) fn len(&self) -> usize {
        self.anonymous.len() + self.bound.len()
    }

    fn lru(&mut self, key: &StoreKey) -> &mut Lru {
        if self.listed.contains_key(key) {
            &mut self.bound
        } else {
            &mut self.anonymous
        }
    }

    /// The live record under `key`, now the most recently used; an expired one is
    /// removed on the spot.
    pub(super) fn live(&mut self, key: &StoreKey, now: Timestamp) -> Option<&mut Record> {
        let lru = self.lru(key);
        let expired = lru.get_mut(key)?.deadlines.is_expired(now);
        if expired {
            lru.remove(key);
            return None;
        }
        lru.to_back(key)
    }

    pub(super) fn contains(&self, key: &StoreKey) -> bool {
        self.anonymous.contains_key(key) || self.bound.contains_key(key)
    }

    /// Stores `record` as the most recently used of its kind.
    pub(super) fn insert(&mut self, key: StoreKey, record: Record) {
        self.lru(&key).insert(key, record);
    }

    pub(super) fn remove(&mut self, key: &StoreKey) -> Option<Record> {
        self.lru(key).remove(key)
    }

    /// The index of `user` now lists `key`: the session, if stored, is tied to a
    /// user.
    pub(super) fn list(&mut self, key: StoreKey, user: UserTag) {
        match self.listed.entry(key) {
            Entry::Occupied(mut owners) => owners.get_mut().more.push(user),
            Entry::Vacant(vacant) => {
                vacant.insert(Owners {
                    first: user,
                    more: Vec::new(),
                });
                if let Some(record) = self.anonymous.remove(&key) {
                    self.bound.insert(key, record);
                }
            }
        }
    }

    /// The index of `user` no longer lists `key`.
    pub(super) fn unlist(&mut self, key: &StoreKey, user: &UserTag) {
        let Some(owners) = self.listed.get_mut(key) else {
            return;
        };
        if let Some(at) = owners.more.iter().position(|u| u == user) {
            owners.more.swap_remove(at);
            return;
        }
        if owners.first != *user {
            return;
        }
        match owners.more.pop() {
            Some(next) => owners.first = next,
            None => {
                self.listed.remove(key);
                if let Some(record) = self.bound.remove(key) {
                    self.anonymous.insert(*key, record);
                }
            }
        }
    }

    /// Drops the expired records; returns how many.
    pub(super) fn remove_expired(&mut self, now: Timestamp) -> usize {
        let before = self.len();
        self.anonymous.retain(|_, r| !r.deadlines.is_expired(now));
        self.bound.retain(|_, r| !r.deadlines.is_expired(now));
        before - self.len()
    }

    /// Makes room for one record, never evicting `kept` (the one just used):
    /// an expired record if the shard is due for a sweep, else the least recently
    /// used anonymous session, else, if `kept` is itself tied to a user, the least
    /// recently used session of another user, which is no longer listed here and
    /// goes into `unlisted` with the users whose indexes still list it. Returns
    /// how many records went; 0 when nothing may go (a session tied to a user
    /// never goes to make room for an anonymous one).
    pub(super) fn evict(
        &mut self,
        kept: &StoreKey,
        now: Timestamp,
        unlisted: &mut Vec<(StoreKey, Owners)>,
    ) -> usize {
        if self.evictions_before_sweep == 0 {
            self.evictions_before_sweep = self.len() / 16 + 1;
            let swept = self.remove_expired(now);
            if swept > 0 {
                return swept;
            }
        }
        let victim = match oldest_other(&self.anonymous, kept) {
            Some(victim) => Some(victim),
            None if self.listed.contains_key(kept) => oldest_other(&self.bound, kept),
            None => None,
        };
        match victim {
            Some(victim) => {
                self.remove(&victim);
                if let Some(owners) = self.listed.remove(&victim) {
                    unlisted.push((victim, owners));
                }
                self.evictions_before_sweep -= 1;
                1
            }
            None => 0,
        }
    }

    /// Every record with its key.
    #[cfg(feature = "test-util")]
    pub(super) fn records(&self) -> impl Iterator<Item = (&StoreKey, &Record)> {
        self.anonymous.iter().chain(self.bound.iter())
    }
}

/// The least recently used key of `lru` other than `kept`.
fn oldest_other(lru: &Lru, kept: &StoreKey) -> Option<StoreKey> {
    lru.keys().take(2).find(|k| *k != kept).copied()
}
