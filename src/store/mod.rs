//! The [`SessionStore`] trait: where records live.
//!
//! A store keeps [`Record`]s under [`StoreKey`]s. It never sees a session id, a cookie
//! or plaintext data, only HMAC-derived keys and sealed bytes, so a store can be
//! shared, dumped or replicated without handing out sessions.
//!
//! Every operation is a single atomic step on the backend; the layer builds
//! compare-and-set updates with retries on top of [`SessionStore::update`].
//!
//! Implementations must expire records whose [`Deadlines::expires_at`] has passed:
//! natively (Redis TTL) or through [`SessionStore::delete_expired`], which a cleanup
//! task calls. A record past its deadline must not be returned as live by a store
//! that can tell; the layer checks the deadlines again after every load all the same.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::record::{Deadlines, Record, StoreKey};
use crate::users::{IndexEntry, UserTag};

#[cfg(feature = "memory-store")]
pub(crate) mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;

/// The outcome of a compare-and-set: [`SessionStore::update`] or
/// [`SessionStore::delete_version`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cas {
    /// The stored version matched; the record was replaced (or deleted).
    Done,
    /// Another writer got there first; this is the record as it is now.
    Conflict(Record),
    /// No record under that key (deleted or expired): nothing was written.
    Missing,
}

/// A session backend.
///
/// Methods take `&self` and return `Send` futures, so one store serves all requests
/// concurrently. None of them may panic on a backend failure: return
/// [`StoreError`] and the layer answers the request with 503.
pub trait SessionStore: Send + Sync + 'static {
    /// The record stored under `key`, if there is one and it has not expired.
    fn load(
        &self,
        key: &StoreKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// Whether every future this store returns is ready the first time it is
    /// polled: a store in process memory, which never waits. The layer then runs
    /// the store's work on the spot, with no boxed future and no deferred call of
    /// the inner service. A store that says so and then returns a pending future
    /// fails that request with 503; the future is dropped, as when a client goes
    /// away in the middle of a request.
    const IMMEDIATE: bool = false;

    /// Stores `record` under `key` unless the key is taken. Returns `false`, writing
    /// nothing, when a record already exists there.
    fn create(
        &self,
        key: &StoreKey,
        record: &Record,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Replaces the record under `key` with `record` if the stored version is
    /// `expected_version`, atomically. `record.version` is the new version.
    fn update(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> impl Future<Output = Result<Cas, StoreError>> + Send;

    /// Moves the record's deadlines (and so its expiry) without rewriting its data
    /// or changing its version, if its version is still `expected_version`.
    /// Returns `false`, writing nothing, when the record changed meanwhile (the
    /// writer set its own deadlines, which a stale touch must not undo) or is gone.
    fn touch(
        &self,
        key: &StoreKey,
        deadlines: Deadlines,
        expected_version: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Removes the record under `key`; removing a missing record is not an error.
    /// Atomic with respect to the other operations on the key: a concurrent
    /// [`update`](SessionStore::update) or [`touch`](SessionStore::touch) never
    /// brings the record back.
    fn delete(&self, key: &StoreKey) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes the record under `key` if its version is `expected_version`,
    /// atomically; otherwise reports the record as it is now, or that it is gone.
    /// Moving a session to a new id uses it, so that a write made to the old id
    /// meanwhile is carried over rather than deleted.
    fn delete_version(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> impl Future<Output = Result<Cas, StoreError>> + Send;

    /// Removes every record that has expired at `now` and returns how many it
    /// removed. Stores with native expiry may do nothing and return 0. Stores that
    /// keep user indexes in memory should also drop the entries
    /// [`index_list`](SessionStore::index_list) would no longer return.
    fn delete_expired(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Adds `entry` to the session index of `user`, atomically; an entry with the
    /// same store key is replaced by [`IndexEntry::merged`] (so it never expires
    /// earlier than it did). The index is apart from the records: in a sharded
    /// store it may live on another shard, and no operation spans both.
    fn index_add(
        &self,
        user: &UserTag,
        entry: &IndexEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes the entries for `keys` from the index of `user`; absent ones are not
    /// an error, and an index left empty is removed.
    fn index_remove(
        &self,
        user: &UserTag,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The index of `user`: every entry whose `expires_at` is after `now`, in any
    /// order. The store may drop the others meanwhile. Entries whose record is gone
    /// are returned all the same: the caller checks the records.
    fn index_list(
        &self,
        user: &UserTag,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<IndexEntry>, StoreError>> + Send;
}

/// A store operation failed.
///
/// The layer turns it into 503 Service Unavailable (or gRPC `UNAVAILABLE`) and a
/// traced error; the cause stays available through [`source`](StdError::source).
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed or could not be reached.
    Backend(Box<dyn StdError + Send + Sync>),
    /// The backend did not answer in time.
    Timeout(Duration),
    /// A stored value could not be decoded by the store.
    Corrupt(String),
    /// A compare-and-set update lost to concurrent writers on every attempt.
    Contended {
        /// How many attempts were made.
        attempts: u32,
    },
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(err: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        StoreError::Backend(err.into())
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Backend(err) => write!(f, "session store failed: {err}"),
            StoreError::Timeout(after) => {
                write!(f, "session store did not answer within {after:?}")
            }
            StoreError::Corrupt(what) => write!(f, "session store holds a corrupt value: {what}"),
            StoreError::Contended { attempts } => write!(
                f,
                "session update lost to concurrent writers {attempts} times in a row"
            ),
        }
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            StoreError::Backend(err) => Some(err.as_ref()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_error_keeps_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = StoreError::backend(io);
        assert_eq!(err.to_string(), "session store failed: refused");
        let source = err.source().expect("source kept");
        assert_eq!(source.to_string(), "refused");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
    }
}
