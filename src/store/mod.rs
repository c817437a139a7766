//! Where sessions live: the [`SessionStore`] trait, the types a store keeps, and a
//! cleanup task for stores without native expiry.
//!
//! # Implementing a store
//!
//! A store keeps two things, and never sees a session id, a cookie or plaintext
//! data: only HMAC-derived keys and sealed bytes. So a store can be shared, dumped
//! or replicated without handing out sessions.
//!
//! **Records.** One [`Record`] per session, under its [`StoreKey`] (32 bytes,
//! uniformly random: hash it or hex it as the backend likes). A record is a
//! version, three [`Deadlines`] and opaque sealed bytes, which the store keeps as
//! they are.
//!
//! **Versions and compare-and-set.** The version is the record's compare-and-set
//! token: the layer writes with [`update`](SessionStore::update) and
//! [`delete_version`](SessionStore::delete_version), each of which must compare the
//! stored version with the expected one and write, atomically, in one step of the
//! backend (a Lua script, a `WHERE version = $n`, a lock). On a mismatch it
//! returns [`CompareAndSet::Conflict`] with the record as it is now, and the layer
//! re-applies its request's changes on that record and tries again (the writes
//! of one session in one process take turns, so conflicts come from other
//! processes); so a store must
//! never report `Done` for a write it did not make, nor `Conflict` for one it
//! did. A missing or expired record is [`CompareAndSet::Missing`]: nothing is
//! written, and the layer drops the request's changes (logout won).
//! [`touch`](SessionStore::touch) is a compare-and-set on the deadlines alone that
//! leaves the version as it is, so a late touch never undoes a write; and
//! [`delete`](SessionStore::delete) is never undone by a racing write: once it
//! returns, the record stays gone.
//!
//! **Expiry.** A record is dead once [`Deadlines::expires_at`] has passed: the
//! store must not return it from [`load`](SessionStore::load), nor let an
//! `update` or `touch` bring it back. Stores with native expiry (Redis `PXAT`)
//! drop records themselves; others remove them in
//! [`delete_expired`](SessionStore::delete_expired), which [`cleanup_task`] calls
//! on a schedule (or keep them and filter on read, at the cost of space). The
//! layer checks the deadlines again after every load all the same.
//!
//! **The user index.** For each user (known only by a keyed [`UserTag`]) the
//! store keeps a set of [`IndexEntry`]s, one per session, keyed by store key.
//! [`index_add`](SessionStore::index_add) upserts with [`IndexEntry::merged`], so an
//! entry never expires earlier than it did and keeps its first index time;
//! [`index_list`](SessionStore::index_list) returns the entries not yet expired;
//! [`index_sample`](SessionStore::index_sample) returns a bounded, varying part
//! of them, which is what a login checks. A user may hold thousands of sessions
//! (abandoned devices, scripts that log in without keeping cookies), so an
//! upsert, a sample and a removal should cost the same at 2,000 entries as at 10;
//! only a listing grows with the index, by a constant per entry.
//! The index is apart from the records and may live on another shard: no
//! operation spans both, and the layer orders its writes so that a session enters
//! the index before its record is written and leaves it after the record is
//! deleted.
//!
//! # The record cache
//!
//! A Redis or PostgreSQL store can keep the records it reads in the process
//! ([`CacheSettings`]: `store.cache` in a configuration file, `with_cache` on
//! [`RedisSettings`](crate::config::RedisSettings) and
//! [`PostgresSettings`](crate::config::PostgresSettings)), so that a hot session
//! is read with no round trip. Off by default.
//!
//! ```yaml
//! store:
//!   type: redis
//!   url: "redis://10.0.0.5:6379/0"
//!   cache: { max_entries: 100000, ttl: 5m }   # defaults: 10,000 and 1m
//! ```
//!
//! **When to turn it on.** When requests read their sessions much more often
//! than anyone changes them, and the store is a round trip away: each read
//! otherwise waits for the network (50 to 80 µs on loopback, 0.5 to 1 ms across
//! availability zones), against about 2 µs for the whole in-process read. A
//! session changes when its data is written and, with a sliding idle timeout,
//! once per `touch_interval` (a hit still writes when a touch is due), so a
//! cache pays off for sessions read several times between two touches.
//!
//! **What it promises.**
//! - It holds what the store holds, never more: each record's version,
//!   deadlines and sealed bytes, wiped when they leave it (see SECURITY.md).
//! - It is coherent across processes: every change another process makes to a
//!   record (a write, a touch, a logout, a revocation, an expiry) drops it from
//!   this process's cache when the store's notification arrives. Redis notifies
//!   through client tracking on the store's own connections (RESP3,
//!   `CLIENT TRACKING ON NOLOOP`: see its module `tracking`); PostgreSQL through
//!   a trigger on the records table and `LISTEN` (installed when a store with a
//!   cache connects). In the tests, with two processes on loopback, at the
//!   99th percentile over the runs: a write on one was read on the other within
//!   1.7 to 2.7 ms on Redis (1.5 to 1.8 ms on PostgreSQL), and a logout on one
//!   refused on the other within 1.9 to 6.8 ms (1.4 to 2.2 ms).
//! - The process's own writes update its cache, and drop any read of the same
//!   record that was on its way before them, so a read after a write is a
//!   hit (with one connection per node, the Redis default; with more, or with
//!   `wait`, a write on one connection is reported to the others, and the next
//!   read goes to Redis).
//! - A lost notification stream empties the cache, and reads go to the store
//!   until the stream is back: at once when its connection closes (a cut
//!   connection, a restart, a Sentinel failover); within a heartbeat (1 s) and
//!   the store's timeout when it goes silent. Should it fail without either,
//!   an entry is served for at most `ttl` after the store returned it: the
//!   bound on how stale a cached record can be.
//! - A write or delete of this process whose outcome it does not learn (an
//!   error, a timeout, a request dropped half-way) leaves its record uncached
//!   for twice the store's timeout: the store may still carry it out, and the
//!   change, being the process's own, would not be reported to it.
//!
//! **What it costs.** About 130 bytes per entry besides the sealed record
//! itself, which is the session's data as JSON plus 30 bytes: 100,000 entries
//! of sessions holding 200 bytes of data take about 36 MB. The bound is
//! `max_entries`, rounded up to a multiple of 16. On Redis, the server remembers which keys
//! each connection has read (its tracking table, bounded by
//! `tracking-table-max-keys`). On PostgreSQL, every write of a record, by any
//! process, sends a notification, and the listener holds one connection of the
//! pool.
//!
//! On PostgreSQL, each store marks its connections with a writer id (a session
//! setting), so it can tell its own changes: do not put a pooler in transaction
//! mode (PgBouncer's) between a cached store and the database, which would hand
//! those connections to other clients.
//!
//! **Where it is refused.** A SQLite or memory store has no round trip to save,
//! and a Redis Cluster is not supported yet: each is an error naming
//! `store.cache`, as is a Redis server or user that refuses `CLIENT TRACKING`,
//! or a PostgreSQL role that cannot create the trigger.
//!
//! **Checking a store.** With the `test-util` feature, the
//! [`store_conformance_tests!`](crate::store_conformance_tests) macro writes one
//! test per behaviour above against your store; every store in this crate runs it.
//!
//! ```
//! # #[cfg(feature = "memory-store")] {
//! use tower_sealed_sessions::MemoryStore;
//! use tower_sealed_sessions::store::{CompareAndSet, Deadlines, Record, SessionStore, StoreKey, Timestamp};
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = MemoryStore::default();
//! let key = StoreKey::from_bytes([7; 32]);
//! let deadlines = Deadlines {
//!     idle: Timestamp::NEVER,
//!     lifespan: Timestamp::NEVER,
//!     active: Timestamp::from_unix_millis(0),
//! };
//! let first = Record::new(1, deadlines, "sealed".into());
//! assert!(store.create(&key, &first).await.unwrap());
//! let second = Record::new(2, deadlines, "sealed again".into());
//! assert_eq!(store.update(&key, &second, 1).await.unwrap(), CompareAndSet::Done);
//! // A writer still holding version 1 loses, and learns what is there now.
//! let stale = Record::new(2, deadlines, "stale".into());
//! assert_eq!(store.update(&key, &stale, 1).await.unwrap(), CompareAndSet::Conflict(second));
//! # });
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;

mod cache;
mod cleanup;
#[cfg(feature = "test-util")]
pub mod conformance;
mod index;
#[cfg(feature = "memory-store")]
mod memory;
pub(crate) mod observed;
pub use observed::STORE_TARGET;
pub(crate) mod postgres;
pub(crate) mod redis;
pub(crate) mod sql;
pub(crate) mod sqlite;
pub(crate) mod url;

pub use crate::clock::Timestamp;
pub use crate::error::StoreError;
pub use crate::record::{Deadlines, Record, StoreKey};
pub use cache::CacheSettings;
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) use cache::{Front, RecordCache};
pub(crate) use cleanup::check_interval;
pub use cleanup::{DEFAULT_CLEANUP_INTERVAL, MIN_CLEANUP_INTERVAL, cleanup_task};
pub(crate) use index::INDEX_GRACE;
pub use index::{IndexEntry, IndexSample, UserTag};
#[cfg(feature = "memory-store")]
pub use memory::{MemoryStore, MemoryStoreBuilder};
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "redis")]
pub use redis::RedisStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// A boxed future, for store work awaited through a `dyn`.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The outcome of a compare-and-set: [`SessionStore::update`] or
/// [`SessionStore::delete_version`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareAndSet {
    /// The stored version matched; the record was replaced (or deleted).
    Done,
    /// Another writer got there first; this is the record as it is now.
    Conflict(Record),
    /// No record under that key (deleted or expired): nothing was written.
    Missing,
}

/// What [`SessionStore::ping`] found in a store that answers: whether it keeps
/// sessions as it should.
///
/// A degraded store still serves requests, so a health endpoint should report it
/// without failing (the quickstart's `/healthz` answers 200 with `"status":
/// "degraded"`): every instance of an application shares its store, and a load
/// balancer that took them all out of rotation would end the service.
///
/// ```
/// use tower_sealed_sessions::store::StoreHealth;
///
/// let health = StoreHealth::Degraded("Redis evicts keys when full".into());
/// assert!(!health.is_healthy());
/// assert_eq!(health.to_string(), "degraded: Redis evicts keys when full");
/// assert_eq!(StoreHealth::Healthy.to_string(), "ok");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreHealth {
    /// Nothing amiss.
    Healthy,
    /// The store answers, but may lose sessions or user indexes it should keep
    /// (a Redis that evicts keys): what is wrong, and how to mend it.
    Degraded(String),
}

impl StoreHealth {
    /// Whether nothing is amiss.
    pub fn is_healthy(&self) -> bool {
        matches!(self, StoreHealth::Healthy)
    }
}

impl std::fmt::Display for StoreHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreHealth::Healthy => f.write_str("ok"),
            StoreHealth::Degraded(why) => write!(f, "degraded: {why}"),
        }
    }
}

/// A session backend: where records and user indexes live.
///
/// Methods take `&self` and return `Send` futures, so one store serves all requests
/// concurrently. None of them may panic on a backend failure: return
/// [`StoreError`] and the layer answers the request with 503. The
/// [module documentation](self) is the implementor's guide.
pub trait SessionStore: Send + Sync + 'static {
    /// The record stored under `key`, if there is one and it has not expired.
    fn load(
        &self,
        key: &StoreKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// The record under `key` if the store has it at hand, with no wait (in a
    /// cache in process memory), or `None` to [`load`](SessionStore::load) it as
    /// usual. The layer asks before every load of a store that is not
    /// [`IMMEDIATE`](SessionStore::IMMEDIATE), so that such a read is served on
    /// the spot, with no future to box and await. The default has nothing at hand.
    fn load_now(&self, key: &StoreKey) -> Option<Record> {
        let _ = key;
        None
    }

    /// Whether every future this store returns is ready the first time it is
    /// polled, as for a store in process memory that never waits.
    ///
    /// The layer then runs the store's work on the spot: the load inside
    /// `Service::call`, before the inner service is called there, and the write as
    /// soon as the response head is ready, with no boxed future in between. An
    /// implementor that sets it promises that every future returned by every method
    /// completes on its first poll, with a no-op waker and without a runtime. A
    /// future that is still pending then is dropped, and the request answers 503:
    /// the store must survive that drop as it survives a client that goes away in
    /// the middle of a request (no half-applied operation may remain).
    ///
    /// Leave it `false` for any store that does I/O.
    const IMMEDIATE: bool = false;

    /// What kind of store this is, as traces and metrics name it (`memory`,
    /// `redis`, `postgres`, `sqlite`; `custom` unless a store says otherwise).
    const KIND: &'static str = "custom";

    /// The records under `keys`, in their order (`None` where there is none): how
    /// a user's index is checked. The default loads one after another; a store
    /// with round trips should send the loads together, so that a user with a
    /// thousand sessions costs one round trip, not a thousand.
    fn load_many(
        &self,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<Vec<Option<Record>>, StoreError>> + Send {
        async move {
            let mut records = Vec::with_capacity(keys.len());
            for key in keys {
                records.push(self.load(key).await?);
            }
            Ok(records)
        }
    }

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
    ) -> impl Future<Output = Result<CompareAndSet, StoreError>> + Send;

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

    /// Removes the records under `keys`, as [`delete`](SessionStore::delete) does
    /// each (a revocation, or a limit, ending many sessions). The default deletes
    /// one after another; a store with round trips should send them together.
    fn delete_many(
        &self,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            for key in keys {
                self.delete(key).await?;
            }
            Ok(())
        }
    }

    /// Removes the record under `key` if its version is `expected_version`,
    /// atomically; otherwise reports the record as it is now, or that it is gone.
    /// Moving a session to a new id uses it, so that a write made to the old id
    /// meanwhile is carried over rather than deleted.
    fn delete_version(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> impl Future<Output = Result<CompareAndSet, StoreError>> + Send;

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

    /// At most `limit` entries of the index of `user` whose `expires_at` is after
    /// `now`: what a login checks for sessions that are gone, with work bounded
    /// by `limit` however many sessions the user holds. Entries not returned are
    /// kept; expired ones met on the way may be dropped. Successive calls should
    /// not return the same entries each time (a random choice, or a rotation),
    /// so that repeated logins check the whole index in turn; and
    /// [`IndexSample::whole`] must be `true` only when no other entry is left
    /// out.
    ///
    /// The default lists the whole index and picks at random
    /// ([`IndexSample::pick`]), which costs what a listing does: a store that can
    /// read part of an index should override it.
    fn index_sample(
        &self,
        user: &UserTag,
        now: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<IndexSample, StoreError>> + Send {
        let list = self.index_list(user, now);
        async move { Ok(IndexSample::pick(list.await?, limit)) }
    }

    /// Whether the backend answers, and how well it keeps sessions, for a health
    /// check (the default: always, and healthy). An error is a store that does not
    /// answer; [`StoreHealth::Degraded`] one that answers but may lose what it
    /// keeps.
    fn ping(&self) -> impl Future<Output = Result<StoreHealth, StoreError>> + Send {
        std::future::ready(Ok(StoreHealth::Healthy))
    }
}
