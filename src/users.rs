//! Per-user sessions: the index that ties sessions to a user, the limit on how many
//! a user may hold, and [`UserSessions`], the handle that lists and revokes them.
//!
//! [`Session::set_user_id`](crate::Session::set_user_id) ties a session to a user.
//! The store then keeps the session in that user's index, which is kept under a
//! [`UserTag`]: an HMAC-SHA256 of the user id under a key derived from the server
//! secret. The user id itself is never stored in the clear: it travels only inside
//! the sealed session data, which neither the store nor the server key alone opens.
//! (An unkeyed hash, as Kibana keeps, is reversed by hashing candidate user names.)
//!
//! ```
//! # use tower_sealed_sessions::{Keys, MemoryStore, SessionLayer};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = SessionLayer::new(MemoryStore::default(), Keys::generate())
//!     .with_max_sessions_per_user(Some(5));
//! let users = layer.users();
//! // In an admin endpoint, a CLI or a password change:
//! assert!(users.list("alice").await.unwrap().is_empty());
//! assert_eq!(users.revoke_all("alice").await.unwrap(), 0);
//! # }
//! ```
//!
//! # Guarantees
//!
//! - **Index first.** A session enters its user's index before its record is
//!   written, and leaves it after its record is deleted, so revoking every session
//!   of a user reaches every session that existed when the revocation started.
//! - **Limit.** After a request that sets the user id, the user's live sessions are
//!   counted and, beyond the limit, all but the most recently logged in (by the
//!   time they entered the index, then by store key) are invalidated. Every
//!   login uses that one order, so simultaneous logins evict the same sessions and
//!   never each other: with logins in flight the count can exceed the limit only
//!   between a login's index write and its own count, and once every login has
//!   finished, at most the limit remain, and at least one.
//! - **Cleanup.** An index entry is dropped once its session's lifespan has passed,
//!   and, once its record has been gone for more than a minute, whenever the
//!   index is checked: by a list, a revocation, and a login (with a limit, every
//!   login; without one, a login that finds more than 16 entries). So an index
//!   holds the user's live sessions plus a bounded number of ended ones, and
//!   never more than one lifespan of sessions.
//! - **Revocation.** [`UserSessions::revoke_all`] repeats its pass (up to three)
//!   while a pass found sessions, live or just gone, so a session being moved to a
//!   new id while it runs (a login, or a key rotation) is caught under its new id.
//! - **Stores.** In Redis a user's index is one hash, so in a Cluster it sits in one
//!   slot, apart from the sessions: the request path updates it with separate
//!   single-key commands, never a cross-slot one.

use std::cmp::Reverse;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::keys::{KeySet, Keys};
use crate::layer::Shared;
use crate::record::{Data, Deadlines, Record, StoreKey};
use crate::store::{SessionStore, StoreError};

/// The tracing target of audit events.
///
/// Every event is at `INFO` with an `event` field: `created`, `cycled`,
/// `destroyed`, `expired` (with `reason`: `idle`, `lifespan`, or `missing` when the
/// record was already gone, which in Redis is how an idle expiry shows), `revoked`,
/// `limit_evicted` and `rejected` (with `reason`). Events name sessions by their
/// [`Fingerprint`], never by id, cookie or user id. Route them with a filter such as
/// `tower_sealed_sessions::audit=info`.
pub const AUDIT_TARGET: &str = "tower_sealed_sessions::audit";

/// Where the user id is kept in the session data: a key no handler can write, since
/// [`Session::insert`](crate::Session::insert) refuses keys starting with NUL.
pub(crate) const USER_KEY: &str = "\u{0}user";

/// Whether `key` belongs to the layer rather than to handlers.
pub(crate) fn is_reserved(key: &str) -> bool {
    key.starts_with('\u{0}')
}

/// The user id a session's data ties it to.
pub(crate) fn user_of(data: &Data) -> Option<&str> {
    data.get(USER_KEY).and_then(|v| v.as_str())
}

/// How long an index entry whose record is missing is kept: the record of a new
/// session is written just after its entry, and a concurrent reader must not drop
/// the entry in between (its session would then escape a later revocation).
pub(crate) const GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// The key a user's session index is kept under: HMAC-SHA256 of the user id.
///
/// Not reversible by guessing user ids without the server secret.
/// [`Display`](fmt::Display) gives 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserTag([u8; 32]);

impl UserTag {
    /// The tag's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A tag from its bytes, for stores that keep tags in binary.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        UserTag(bytes)
    }

    pub(crate) fn derive(keys: &KeySet, user_id: &str) -> Self {
        let tag = keys
            .user
            .clone()
            .chain_update(user_id.as_bytes())
            .finalize();
        UserTag(tag.into_bytes().into())
    }
}

impl fmt::Display for UserTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for UserTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserTag({self})")
    }
}

/// A session's public name: 16 URL-safe characters that are safe to show to its
/// user, write to logs and send back to revoke it.
///
/// It is a hash of the session's [`StoreKey`], itself an HMAC of the session id, so
/// it gives away neither the id nor the cookie. A session gets a new fingerprint
/// when its id is cycled (at login).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 12]);

impl Fingerprint {
    /// The fingerprint of the session stored under `key`.
    pub fn of(key: &StoreKey) -> Self {
        let digest = Sha256::new()
            .chain_update(b"tower-sealed-sessions fingerprint v1")
            .chain_update(key.as_bytes())
            .finalize();
        let mut out = [0u8; 12];
        out.copy_from_slice(&digest[..12]);
        Fingerprint(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 12];
        match URL_SAFE_NO_PAD.decode_slice(s.as_bytes(), &mut out) {
            Ok(12) if s.len() == 16 => Ok(Fingerprint(out)),
            _ => Err(FingerprintError(s.chars().take(40).collect())),
        }
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A string that is not a [`Fingerprint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintError(String);

impl fmt::Display for FingerprintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a session fingerprint: 16 characters of URL-safe base64",
            self.0
        )
    }
}

impl std::error::Error for FingerprintError {}

/// One session in a user's index, as a [`SessionStore`] keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexEntry {
    /// Where the session's record is.
    pub store_key: StoreKey,
    /// When the session was created.
    pub created_at: Timestamp,
    /// When the entry may be dropped: never before the session's lifespan ends.
    pub expires_at: Timestamp,
    /// When the session entered this index (its login, or its move to a new id):
    /// evictions keep the latest; and a missing record is expected for a moment
    /// after it, while the session is being created.
    pub indexed_at: Timestamp,
    /// Whether the session is remember-me.
    pub remember_me: bool,
}

impl IndexEntry {
    /// An entry from its parts (for stores that decode entries they keep).
    pub fn new(
        store_key: StoreKey,
        created_at: Timestamp,
        expires_at: Timestamp,
        indexed_at: Timestamp,
        remember_me: bool,
    ) -> Self {
        IndexEntry {
            store_key,
            created_at,
            expires_at,
            indexed_at,
            remember_me,
        }
    }

    /// This entry refreshed by `newer` for the same session: its fields win, but
    /// the entry never expires earlier than it did, and keeps the time the session
    /// first entered the index (its login, which orders evictions).
    pub fn merged(self, newer: IndexEntry) -> IndexEntry {
        IndexEntry {
            expires_at: self.expires_at.max(newer.expires_at),
            indexed_at: self.indexed_at.min(newer.indexed_at),
            ..newer
        }
    }
}

/// One live session of a user, as [`UserSessions::list`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// Names the session for [`UserSessions::revoke`]; not its id.
    pub fingerprint: Fingerprint,
    /// When the session was created.
    pub created_at: SystemTime,
    /// When a request last used it, to within the touch interval.
    pub last_active: SystemTime,
    /// When it ends if unused: the idle deadline, or its lifespan.
    pub expires_at: Option<SystemTime>,
    /// Whether it is a remember-me session.
    pub remember_me: bool,
}

impl SessionInfo {
    fn new(entry: &IndexEntry, deadlines: &Deadlines) -> Self {
        let time = |t: Timestamp| t.to_system_time().unwrap_or(SystemTime::UNIX_EPOCH);
        SessionInfo {
            fingerprint: Fingerprint::of(&entry.store_key),
            created_at: time(entry.created_at),
            last_active: time(deadlines.active.max(entry.created_at)),
            expires_at: deadlines.expires_at().to_system_time(),
            remember_me: entry.remember_me,
        }
    }
}

/// Lists and revokes the sessions of a user, outside any request: from an admin
/// endpoint, a command-line tool, or a password change. Get one from
/// [`SessionLayer::users`](crate::SessionLayer::users); it is cheap to clone.
///
/// Only sessions tied to the user with
/// [`Session::set_user_id`](crate::Session::set_user_id) are known to it.
#[derive(Clone)]
pub struct UserSessions {
    shared: Arc<Shared>,
}

impl UserSessions {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        UserSessions { shared }
    }

    /// The user's live sessions, newest first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn list(&self, user_id: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let now = self.shared.clock.now();
        let found = self
            .shared
            .store
            .scan(tags(&self.shared.keys, user_id), now)
            .await?;
        let mut infos: Vec<SessionInfo> = found
            .live
            .iter()
            .map(|(_, entry, record)| SessionInfo::new(entry, &record.deadlines))
            .collect();
        infos.sort_by_key(|info| Reverse(info.created_at));
        Ok(infos)
    }

    /// Ends the user's session with this fingerprint; returns whether there was one.
    /// Its next request finds no session.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn revoke(
        &self,
        user_id: &str,
        fingerprint: &Fingerprint,
    ) -> Result<bool, StoreError> {
        let now = self.shared.clock.now();
        let revoked = self
            .shared
            .store
            .revoke(tags(&self.shared.keys, user_id), Some(*fingerprint), now)
            .await?;
        Ok(revoked > 0)
    }

    /// Ends every session of the user ("log out everywhere"); returns how many were
    /// live. A session moved to a new id meanwhile is caught under its new id; a
    /// login that starts after this returns is not affected.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails; some sessions may have been ended.
    pub async fn revoke_all(&self, user_id: &str) -> Result<usize, StoreError> {
        let now = self.shared.clock.now();
        self.shared
            .store
            .revoke(tags(&self.shared.keys, user_id), None, now)
            .await
    }
}

impl fmt::Debug for UserSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserSessions").finish_non_exhaustive()
    }
}

/// The user's tag under every key of the ring: a session is indexed under the key
/// that sealed it, which may be a previous one until its next request.
pub(crate) fn tags(keys: &Keys, user_id: &str) -> Vec<UserTag> {
    keys.ring
        .iter()
        .map(|k| UserTag::derive(k, user_id))
        .collect()
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
            _ if now.saturating_since(entry.indexed_at) < GRACE => found.missing += 1,
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

/// Emits an audit event about the session stored under `key`.
pub(crate) fn audit(key: &StoreKey, event: &'static str) {
    tracing::info!(target: AUDIT_TARGET, event, fingerprint = %Fingerprint::of(key));
}

/// Emits an `expired` audit event with its reason.
pub(crate) fn audit_expired(key: &StoreKey, reason: &'static str) {
    tracing::info!(target: AUDIT_TARGET, event = "expired", reason, fingerprint = %Fingerprint::of(key));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_print_and_parse_back() {
        let fp = Fingerprint::of(&StoreKey::from_bytes([7; 32]));
        let text = fp.to_string();
        assert_eq!(text.len(), 16);
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        assert_ne!(fp, Fingerprint::of(&StoreKey::from_bytes([8; 32])));
        for bad in ["", "short", "AAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAA+", "é"] {
            let err = bad.parse::<Fingerprint>().unwrap_err();
            assert!(err.to_string().contains("is not a session fingerprint"));
        }
    }

    #[test]
    fn user_tags_are_keyed() {
        let a = crate::Keys::generate();
        let b = crate::Keys::generate();
        let tag = UserTag::derive(a.primary(), "alice");
        assert_eq!(tag, UserTag::derive(a.primary(), "alice"));
        assert_ne!(tag, UserTag::derive(b.primary(), "alice"));
        assert_ne!(tag, UserTag::derive(a.primary(), "alicf"));
        assert!(!tag.to_string().contains("alice"));
    }

    #[test]
    fn a_merged_entry_never_expires_earlier() {
        let key = StoreKey::from_bytes([1; 32]);
        let t = Timestamp::from_unix_millis;
        let old = IndexEntry::new(key, t(1), t(100), t(1), false);
        let new = IndexEntry::new(key, t(1), t(50), t(2), true);
        let merged = old.merged(new);
        assert_eq!(merged.expires_at, t(100));
        assert!(merged.remember_me);
        assert_eq!(merged.indexed_at, t(1), "the first index time stays");
    }
}
