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

/// At most this many entries, a login without a limit checks none of its user's
/// index: it costs one bounded read of the index and no record loads.
const PRUNE_ABOVE: usize = 16;
/// The most entries a login without a limit checks, a different choice each time
/// ([`SessionStore::index_sample`]): the work of a login stays bounded however
/// many sessions its user holds, and repeated logins still sweep the index.
const PRUNE_AT_MOST: usize = 64;
/// A login without a limit checks its user's index one time in this many, at
/// random; the others do no index work beyond their own entry's upsert. A check
/// of [`PRUNE_AT_MOST`] entries one login in 8 is 8 per login on average, so the
/// entries of gone sessions (at most one more per login) stay few: about one
/// for seven live ones, or 8 in an index that fits in one sample.
const CHECK_ONE_IN: u32 = 8;

/// After a login: prunes the user's index of sessions that are gone, and with a
/// limit invalidates the sessions beyond `max`, keeping the most recently logged
/// in. Its work is bounded by the limit, or by [`PRUNE_AT_MOST`] without one, and
/// never by the user's session count:
///
/// - without a limit, one login in [`CHECK_ONE_IN`] (`check_now` says which)
///   reads one [`index_sample`](SessionStore::index_sample) of [`PRUNE_AT_MOST`]
///   entries per tag, and checks their records unless the sample is the whole
///   index and holds at most [`PRUNE_ABOVE`] entries; the others read nothing;
/// - with a limit, one sample of `max + 1` entries per tag; only when the indexes
///   may hold more than `max` entries together is every entry checked (a pass
///   that also drops the entries of sessions that are gone, so the indexes stay
///   near the limit and the pass near `max` entries).
///
/// One total order (first index time, then store key) for every login: two logins
/// counting at once evict the same sessions, so they cannot evict each other.
pub(crate) async fn after_login<St: SessionStore>(
    store: &St,
    tags: &[UserTag],
    max: Option<usize>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let check_now = rand::random_ratio(1, CHECK_ONE_IN);
    after_login_with(store, tags, max, now, check_now).await
}

/// [`after_login`], with `check_now` to say whether a login without a limit
/// checks the index this time.
async fn after_login_with<St: SessionStore>(
    store: &St,
    tags: &[UserTag],
    max: Option<usize>,
    now: Timestamp,
    check_now: bool,
) -> Result<(), StoreError> {
    let Some(max) = max else {
        if !check_now {
            return Ok(());
        }
        let mut found = Scan::default();
        for tag in tags {
            let sample = store.index_sample(tag, now, PRUNE_AT_MOST).await?;
            if sample.whole && sample.entries.len() <= PRUNE_ABOVE {
                continue;
            }
            check(store, tag, sample.entries, now, &mut found).await?;
        }
        return Ok(());
    };
    let mut samples = Vec::with_capacity(tags.len());
    for tag in tags {
        samples.push(store.index_sample(tag, now, max.saturating_add(1)).await?);
    }
    let counted: usize = samples.iter().map(|s| s.entries.len()).sum();
    if counted <= max && samples.iter().all(|s| s.whole) {
        return Ok(());
    }
    let mut found = Scan::default();
    for (tag, sample) in tags.iter().zip(samples) {
        let entries = match sample.whole {
            true => sample.entries,
            false => store.index_list(tag, now).await?,
        };
        check(store, tag, entries, now, &mut found).await?;
    }
    let mut live = found.live;
    if live.len() <= max {
        return Ok(());
    }
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

    /// A login without a limit that checks reads no record while its user's index
    /// is small, and drops the entries of sessions that are gone once it is not.
    #[tokio::test]
    async fn a_login_without_a_limit_prunes_only_an_index_past_sixteen_entries() {
        let hand = ManualClock::new();
        let store = MemoryStore::builder().clock(hand.clone().into()).build();
        let t0 = hand.now();
        let now = t0.saturating_add(INDEX_GRACE * 2);
        for n in 0..PRUNE_ABOVE as u8 {
            index(&store, key(n), t0).await;
        }
        after_login_with(&store, &[TAG], None, now, true)
            .await
            .unwrap();
        assert_eq!(listed(&store, now).await.len(), PRUNE_ABOVE, "not read");
        index(&store, key(100), t0).await;
        after_login_with(&store, &[TAG], None, now, false)
            .await
            .unwrap();
        assert_eq!(listed(&store, now).await.len(), 17, "not this time");
        after_login_with(&store, &[TAG], None, now, true)
            .await
            .unwrap();
        assert!(listed(&store, now).await.is_empty(), "all gone: pruned");
    }

    /// However many entries of gone sessions an index holds, a login without a
    /// limit checks at most 64 of them, and one login in 8 checks a large index;
    /// repeated logins sweep them, down to the 16 a login leaves unchecked.
    #[tokio::test]
    async fn a_login_without_a_limit_checks_at_most_sixty_four_entries() {
        let hand = ManualClock::new();
        let store = MemoryStore::builder().clock(hand.clone().into()).build();
        let t0 = hand.now();
        let now = t0.saturating_add(INDEX_GRACE * 2);
        for n in 0..200u8 {
            index(&store, key(n), t0).await;
        }
        after_login_with(&store, &[TAG], None, now, false)
            .await
            .unwrap();
        assert_eq!(
            listed(&store, now).await.len(),
            200,
            "not checked this time"
        );
        after_login_with(&store, &[TAG], None, now, true)
            .await
            .unwrap();
        assert_eq!(listed(&store, now).await.len(), 200 - PRUNE_AT_MOST);
        after_login_with(&store, &[TAG], None, now, true)
            .await
            .unwrap();
        assert_eq!(listed(&store, now).await.len(), 200 - 2 * PRUNE_AT_MOST);
        // 72 left: each login checks with one chance in 8.
        // Bounded: 400 logins, 50 checks expected, one needed.
        for _ in 0..400 {
            after_login(&store, &[TAG], None, now).await.unwrap();
        }
        assert_eq!(listed(&store, now).await.len(), 8, "8: left unchecked");
    }

    /// With a limit, a login whose user's index holds no more than the limit
    /// loads no record: the entries of gone sessions stay until it is over.
    #[tokio::test]
    async fn a_login_under_its_limit_checks_nothing_and_one_over_it_checks_all() {
        let hand = ManualClock::new();
        let store = MemoryStore::builder().clock(hand.clone().into()).build();
        let t0 = hand.now();
        let now = t0.saturating_add(INDEX_GRACE * 2);
        for n in 0..3u8 {
            index(&store, key(n), t0).await;
        }
        after_login(&store, &[TAG], Some(3), now).await.unwrap();
        assert_eq!(listed(&store, now).await.len(), 3, "not read");
        for n in 10..12u8 {
            index(&store, key(n), t0).await;
            store
                .create(&key(n), &record(Timestamp::NEVER))
                .await
                .unwrap();
        }
        after_login(&store, &[TAG], Some(3), now).await.unwrap();
        assert_eq!(
            listed(&store, now).await,
            [key(10), key(11)],
            "gone ones dropped"
        );
        assert!(
            store.load(&key(10)).await.unwrap().is_some(),
            "under the limit: kept"
        );
    }
}
