//! The user index's algorithms over any store: reading a user's sessions, revoking
//! them, and the per-user limit after a login.

use std::cmp::Reverse;
use std::sync::Arc;

use crate::audit::{Fingerprint, audit, audit_expired};
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::keys::Keys;
use crate::record::Record;
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

async fn check<St: SessionStore>(
    store: &St,
    tag: &UserTag,
    entries: Vec<IndexEntry>,
    now: Timestamp,
    found: &mut Scan,
) -> Result<(), StoreError> {
    let mut dead = Vec::new();
    for entry in entries {
        match store.load(&entry.store_key).await? {
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
        let mut deleted = 0;
        for (tag, entry, _) in found.live {
            let fingerprint = Fingerprint::of(&entry.store_key);
            if only.is_some_and(|only| only != fingerprint) {
                continue;
            }
            // Record first, then the entry: a failure in between leaves an entry
            // that a later revocation still finds.
            store.delete(&entry.store_key).await?;
            store.index_remove(&tag, &[entry.store_key]).await?;
            audit(&entry.store_key, "revoked");
            deleted += 1;
        }
        revoked += deleted;
        if deleted == 0 && missing == 0 {
            break;
        }
    }
    Ok(revoked)
}

/// Above this many entries, a login checks its user's index even without a limit,
/// dropping the entries of sessions that are gone; below it a login costs one read
/// of the index and no record loads.
const PRUNE_ABOVE: usize = 16;

/// After a login: invalidates the sessions beyond `max`, keeping the most recently
/// logged in, and prunes the index of sessions that are gone (always with a limit;
/// without one, once it holds more than [`PRUNE_ABOVE`] entries).
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
        let entries = store.index_list(tag, now).await?;
        if max.is_some() || entries.len() > PRUNE_ABOVE {
            check(store, tag, entries, now, &mut found).await?;
        }
    }
    let mut live = found.live;
    let Some(max) = max.filter(|&max| live.len() > max) else {
        return Ok(());
    };
    live.sort_by_key(|(_, entry, _)| (Reverse(entry.indexed_at), *entry.store_key.as_bytes()));
    for (tag, entry, _) in live.drain(max..) {
        store.delete(&entry.store_key).await?;
        store.index_remove(&tag, &[entry.store_key]).await?;
        audit(&entry.store_key, "limit_evicted");
    }
    Ok(())
}
