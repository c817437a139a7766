//! The user index's types: [`UserTag`], the key a user's index is kept under,
//! [`IndexEntry`], one session in it, and [`IndexSample`], a bounded part of it.

use std::fmt;
use std::time::Duration;

use hmac::Mac;

use crate::clock::Timestamp;
use crate::keys::KeySet;
use crate::record::StoreKey;

/// How long an index entry whose record is missing is kept: the record of a new
/// session is written just after its entry, and a concurrent reader must not drop
/// the entry in between (its session would then escape a later revocation).
pub(crate) const INDEX_GRACE: Duration = Duration::from_secs(60);

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
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
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

/// One session in a user's index, as a [`SessionStore`](super::SessionStore) keeps it.
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

/// A bounded part of a user's index, as
/// [`SessionStore::index_sample`](super::SessionStore::index_sample) reads it: what
/// a login checks, so that its work does not grow with the user's sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexSample {
    /// Entries not expired, no more than were asked for.
    pub entries: Vec<IndexEntry>,
    /// Whether `entries` are all the index holds. `false` when the store cannot
    /// tell (it may count entries that expired but are not dropped yet).
    pub whole: bool,
}

impl IndexSample {
    /// A sample from its parts (for stores that read one).
    pub fn new(entries: Vec<IndexEntry>, whole: bool) -> Self {
        IndexSample { entries, whole }
    }

    /// At most `limit` of `entries` (a whole index, as
    /// [`index_list`](super::SessionStore::index_list) returns it), chosen at
    /// random when there are more.
    pub fn pick(mut entries: Vec<IndexEntry>, limit: usize) -> Self {
        use rand::seq::SliceRandom;
        let whole = entries.len() <= limit;
        if !whole {
            let (chosen, _) = entries.partial_shuffle(&mut rand::rng(), limit);
            entries = chosen.to_vec();
        }
        IndexSample { entries, whole }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Keys;

    #[test]
    fn user_tags_are_keyed() {
        let a = Keys::generate();
        let b = Keys::generate();
        let tag = UserTag::derive(a.primary(), "alice");
        assert_eq!(tag, UserTag::derive(a.primary(), "alice"));
        assert_ne!(tag, UserTag::derive(b.primary(), "alice"));
        assert_ne!(tag, UserTag::derive(a.primary(), "alicf"));
        assert!(!tag.to_string().contains("alice"));
    }

    #[test]
    fn a_tag_shows_as_hex_and_round_trips_through_its_bytes() {
        let tag = UserTag::derive(Keys::generate().primary(), "alice");
        let hex = tag.to_string();
        assert_eq!(hex.len(), 64);
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert_eq!(&bytes[..], tag.as_bytes());
        assert_eq!(UserTag::from_bytes(*tag.as_bytes()), tag);
        assert_eq!(format!("{tag:?}"), format!("UserTag({hex})"));
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

    #[test]
    fn a_pick_is_whole_up_to_its_limit_and_random_beyond() {
        let t = Timestamp::from_unix_millis;
        let entries: Vec<IndexEntry> = (0..40u8)
            .map(|n| IndexEntry::new(StoreKey::from_bytes([n; 32]), t(1), t(9), t(1), false))
            .collect();
        let all = IndexSample::pick(entries.clone(), 40);
        assert!(all.whole);
        assert_eq!(all.entries, entries);
        let mut seen = std::collections::HashSet::new();
        // Bounded: 20 picks of 8 among 40 see more than one pick's 8 entries
        // unless the choice is fixed (chance of failing: below 1e-40).
        for _ in 0..20 {
            let part = IndexSample::pick(entries.clone(), 8);
            assert!(!part.whole);
            assert_eq!(part.entries.len(), 8);
            assert!(part.entries.iter().all(|e| entries.contains(e)));
            seen.extend(part.entries.iter().map(|e| e.store_key));
        }
        assert!(seen.len() > 8, "the picks vary: {}", seen.len());
    }
}
