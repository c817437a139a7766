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
    for key in &keys {
        audit(key, event);
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
