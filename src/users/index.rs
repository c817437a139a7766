//! The user index's algorithms over any store: reading a user's sessions, revoking
//! them, and the per-user limit after a login.

use std::cmp::Reverse;
use std::sync::Arc;

use crate::audit::{Fingerprint, audit, audit_expired};
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::keys::Keys;
use crate::record::{Record, StoreKey};
use crate::store::{BoxFuture, INDEX_GRACE, IndexEntry, SessionStore, UserTag};

/// The user's tag under every key of the ring: a session is indexed under the key
/// that sealed it, which may be a previous one until its next request.
pub(crate) fn tags(keys: &Keys, user_id: &str) -> Vec<UserTag> {
    keys.ring
        .iter()
        .map(|k| UserTag::derive(k, user_id))
        .collect()
}

/// The store as [`UserSessions`](super::UserSessions) uses it, behind a `dyn` so
/// that the handle does not carry the store's type: every [`SessionStore`] is one.
pub(crate) trait UserIndex: Send + Sync + 'static {
    /// [`scan`] over this store.
    fn scan(&self, tags: Vec<UserTag>, now: Timestamp) -> BoxFuture<Result<Scan, StoreError>>;
    /// [`revoke`] over this store.
    fn revoke(
        &self,
        tags: Vec<UserTag>,
        only: Option<Fingerprint>,
        now: Timestamp,
    ) -> BoxFuture<Result<usize, StoreError>>;
}

/// Each call holds the store (`self`) only until it returns its future, so the
/// future owns a clone of the store's `Arc`.
impl<St: SessionStore> UserIndex for Arc<St> {
    fn scan(&self, tags: Vec<UserTag>, now: Timestamp) -> BoxFuture<Result<Scan, StoreError>> {
        let store = self.clone();
        Box::pin(async move { scan(&*store, &tags, now).await })
    }

    fn revoke(
        &self,
        tags: Vec<UserTag>,
        only: Option<Fingerprint>,
        now: Timestamp,
    ) -> BoxFuture<Result<usize, StoreError>> {
        let store = self.clone();
        Box::pin(async move { revoke(&*store, &tags, only, now).await })
    }
}

/// What a read of some user indexes found.
#[derive(Default)]
pub(crate) struct Scan {
    /// The live sessions, each with its tag, entry and record.
    pub(crate) live: Vec<(UserTag, IndexEntry, Record)>,
    /// Entries whose record was missing or expired (dropped from the index once
    /// past the grace period).
    pub(crate) missing: usize,
}

/// Reads the indexes under `tags` and loads every entry's record. Entries whose
/// record is gone (past the grace period) are dropped from the index on the way.
pub(crate) async fn scan<St: SessionStore>(
    store: &St,
    tags: &[UserTag],
    now: Timestamp,
) -> Result<Scan, StoreError> {
    let mut found = Scan::default();
    for tag in tags {
        let entries = store.index_list(tag, now).await?;
        check(store, tag, entries, now, &mut found).await?;
    }
    Ok(found)
}

/// Loads the records of `entries` (one batch, see [`SessionStore::load_many`])
/// and sorts them into `found`; entries whose record is gone past the grace period
/// leave the index.
async fn check<St: SessionStore>(
    store: &St,
    tag: &UserTag,
    entries: Vec<IndexEntry>,
    now: Timestamp,
    found: &mut Scan,
) -> Result<(), StoreError> {
    let keys: Vec<StoreKey> = entries.iter().map(|e| e.store_key).collect();
    let records = store.load_many(&keys).await?;
    let mut dead = Vec::new();
    for (entry, record) in entries.into_iter().zip(records) {
        match record {
            Some(record) if !record.deadlines.is_expired(now) => {
                found.live.push((*tag, entry, record));
            }
            _ if now.saturating_since(entry.indexed_at) < INDEX_GRACE => found.missing += 1,
            _ => {
                found.missing += 1;
                dead.push(entry.store_key);
            }
        }
    }
    if !dead.is_empty() {
        for key in &dead {
            audit_expired(key, "missing");
        }
        store.index_remove(tag, &dead).await?;
    }
    Ok(())
}

/// Ends `sessions` (their records in one batch first, then their entries, one
/// removal per index: a failure in between leaves entries that a later
/// revocation still finds), and writes `event` to the audit trail for each.
async fn end_sessions<St: SessionStore>(
    store: &St,
    sessions: &[(UserTag, StoreKey)],
    event: &'static str,
) -> Result<(), StoreError> {
    if sessions.is_empty() {
        return Ok(());
    }
    let keys: Vec<StoreKey> = sessions.iter().map(|(_, key)| *key).collect();
    store.delete_many(&keys).await?;
    let mut tags: Vec<UserTag> = sessions.iter().map(|(tag, _)| *tag).collect();
    tags.sort_by_key(|t| *t.as_bytes());
    tags.dedup();
    for tag in tags {
        let of_tag: Vec<StoreKey> = sessions
            .iter()
            .filter(|(t, _)| *t == tag)
            .map(|(_, key)| *key)
            .collect();
        store.index_remove(&tag, &of_tag).await?;
    }
    for (tag, key) in sessions {
        audit(key, event, Some(tag));
    }
    Ok(())
}

/// Deletes the live sessions under `tags` (only the one with `only`'s fingerprint,
/// when given) and their index entries; returns how many it deleted.
pub(crate) async fn revoke<St: SessionStore>(
    store: &St,
    tags: &[UserTag],
    only: Option<Fingerprint>,
    now: Timestamp,
) -> Result<usize, StoreError> {
    // A move indexes the new id before it deletes the old one: a pass that found
    // the old one, live or already gone, may have missed the new one, which the
    // next pass sees.
    let passes = if only.is_some() { 1 } else { 3 };
    let mut revoked = 0;
    for _ in 0..passes {
        let found = scan(store, tags, now).await?;
        let missing = found.missing;
        let ending: Vec<(UserTag, StoreKey)> = found
            .live
            .iter()
            .filter(|(_, entry, _)| {
                only.is_none_or(|only| only == Fingerprint::of(&entry.store_key))
            })
            .map(|(tag, entry, _)| (*tag, entry.store_key))
            .collect();
        end_sessions(store, &ending, "revoked").await?;
        let deleted = ending.len();
        revoked += deleted;
        if deleted == 0 && missing == 0 {
            break;
        }
    }
    Ok(revoked)
}

/// Above this many entries, a login without a limit checks its user's index,
/// dropping the entries of sessions that are gone; below it a login costs one read
/// of the index and no record loads.
const PRUNE_ABOVE: usize = 16;
/// The most entries a login without a limit checks, oldest first: the work of a
/// login stays bounded however many sessions its user holds, and repeated logins
/// still sweep the whole index.
const PRUNE_AT_MOST: usize = 64;

/// After a login: invalidates the sessions beyond `max`, keeping the most recently
/// logged in, and prunes the index of sessions that are gone: with a limit, every
/// entry is checked (the index then stays near the limit); without one, the
/// [`PRUNE_AT_MOST`] oldest, once it holds more than [`PRUNE_ABOVE`].
///
/// One total order (first index time, then store key) for every login: two logins
/// counting at once evict the same sessions, so they cannot evict each other.
pub(crate) async fn after_login<St: SessionStore>(
    store: &St,
    tags: &[UserTag],
    max: Option<usize>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut found = Scan::default();
    for tag in tags {
        let mut entries = store.index_list(tag, now).await?;
        if max.is_none() {
            if entries.len() <= PRUNE_ABOVE {
                continue;
            }
            entries.sort_by_key(|e| (e.indexed_at, *e.store_key.as_bytes()));
            entries.truncate(PRUNE_AT_MOST);
        }
        check(store, tag, entries, now, &mut found).await?;
    }
    let mut live = found.live;
    let Some(max) = max.filter(|&max| live.len() > max) else {
        return Ok(());
    };
    live.sort_by_key(|(_, entry, _)| (Reverse(entry.indexed_at), *entry.store_key.as_bytes()));
    let evicted: Vec<(UserTag, StoreKey)> = live
        .drain(max..)
        .map(|(tag, entry, _)| (tag, entry.store_key))
        .collect();
    end_sessions(store, &evicted, "limit_evicted").await
}

#[cfg(all(test, feature = "memory-store"))]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::clock::ManualClock;
    use crate::record::Deadlines;
    use crate::store::MemoryStore;

    const TAG: UserTag = UserTag::from_bytes([5; 32]);

    fn key(n: u8) -> StoreKey {
        StoreKey::from_bytes([n; 32])
    }

    fn record(ends: Timestamp) -> Record {
        let deadlines = Deadlines {
            idle: ends,
            lifespan: ends,
            active: Timestamp::from_unix_millis(0),
        };
        Record::new(1, deadlines, Bytes::from_static(b"sealed"))
    }

    async fn index(store: &MemoryStore, key: StoreKey, indexed: Timestamp) {
        let entry = IndexEntry::new(key, indexed, Timestamp::NEVER, indexed, false);
        store.index_add(&TAG, &entry).await.unwrap();
    }

    async fn listed(store: &MemoryStore, now: Timestamp) -> Vec<StoreKey> {
        let mut keys: Vec<StoreKey> = store
            .index_list(&TAG, now)
            .await
            .unwrap()
            .iter()
            .map(|e| e.store_key)
            .collect();
        keys.sort_by_key(|k| *k.as_bytes());
        keys
    }

    /// An entry without a record is a session being created for INDEX_GRACE after
    /// it was listed, and stays; from then on it is gone, and leaves the index.
    #[tokio::test]
    async fn entries_without_a_record_stay_for_the_grace_and_then_go() {
        let hand = ManualClock::new();
        let store = MemoryStore::builder().clock(hand.clone().into()).build();
        let t0 = hand.now();
        let now = t0.saturating_add(INDEX_GRACE);
        index(&store, key(1), t0).await; // exactly INDEX_GRACE old at `now`
        index(&store, key(2), t0.saturating_add(Duration::from_secs(1))).await;
        index(&store, key(3), t0).await;
        store
            .create(&key(3), &record(Timestamp::NEVER))
            .await
            .unwrap();
        let found = scan(&store, &[TAG], now).await.unwrap();
        assert_eq!(found.live.len(), 1);
        assert_eq!(found.missing, 2, "both missing entries are counted");
        assert_eq!(listed(&store, now).await, [key(2), key(3)]);
    }

    /// A record the store still returns but whose deadline has passed by the
    /// layer's clock (the store's clock lags) is not a live session.
    #[tokio::test]
    async fn a_record_past_its_deadline_is_not_live_whatever_the_store_says() {
        let hand = ManualClock::new();
        let store = MemoryStore::builder().clock(hand.clone().into()).build();
        let t0 = hand.now();
        index(&store, key(1), t0).await;
        let ends = t0.saturating_add(Duration::from_secs(10));
        store.create(&key(1), &record(ends)).await.unwrap();
        let later = t0.saturating_add(Duration::from_secs(3600));
        let found = scan(&store, &[TAG], later).await.unwrap();
        assert!(found.live.is_empty());
        assert_eq!(revoke(&store, &[TAG], None, later).await.unwrap(), 0);
    }

    /// A login without a limit reads no record while its user's index is small,
    /// and drops the entries of sessions that are gone once it is not.
    #[tokio::test]
    async fn a_login_without_a_limit_prunes_only_an_index_past_sixteen_entries() {
        let hand = ManualClock::new();
        let store = MemoryStore::builder().clock(hand.clone().into()).build();
        let t0 = hand.now();
        let now = t0.saturating_add(INDEX_GRACE * 2);
        for n in 0..PRUNE_ABOVE as u8 {
            index(&store, key(n), t0).await;
        }
        after_login(&store, &[TAG], None, now).await.unwrap();
        assert_eq!(listed(&store, now).await.len(), PRUNE_ABOVE, "not read");
        index(&store, key(100), t0).await;
        after_login(&store, &[TAG], None, now).await.unwrap();
        assert!(listed(&store, now).await.is_empty(), "all gone: pruned");
    }
}
