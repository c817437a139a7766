//! [`RedisStore`] and its [`SessionStore`] operations: one script or command each.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use fred::clients::Client;
use fred::error::Error as FredError;
use fred::interfaces::{HashesInterface, KeysInterface};
use fred::types::scripts::Script;
use fred::types::{Expiration, Key, SetOptions, Value};

use super::codec::{decode_index, decode_reply, encode, encode_entry, expire_at};
use super::connect::fred_error;
use super::settings::DEFAULT_TIMEOUT;
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::record::{Deadlines, Record, StoreKey};
use crate::store::{CompareAndSet, IndexEntry, SessionStore, UserTag};

/// A [`SessionStore`] in Redis: standalone, Sentinel or Cluster, on the
/// [fred](https://docs.rs/fred) client.
///
/// Cheap to clone; clones share the connection. The client reconnects by itself
/// (exponential back-off up to 2 s) and, under Sentinel, follows the master after a
/// failover. While Redis cannot be reached every command fails after the configured
/// timeout (default 1 s), so requests get 503 promptly instead of hanging.
///
/// Layout: one Redis string per session, under `prefix` + the store key in hex (a
/// single key, so in a Cluster every session lives in one slot). The value is the
/// record's version, lifespan deadline and last activity (8 bytes each, big-endian)
/// followed by the sealed data; the idle deadline is the key's own expiry (`PXAT`),
/// so Redis drops expired sessions itself and a touch is one `PEXPIREAT` (and an
/// 8-byte `SETRANGE`).
///
/// A user's session index is one hash under `prefix` + `user:` + the user tag in
/// hex: a field per session (the store key) holding `created,expires,indexed,
/// remember` in decimal. Each index command touches that one key, so in a Cluster
/// it never crosses slots; the key expires with the last of its sessions.
///
/// Round trips: a load, an update, a create, a touch or a delete is one command
/// each (`EVALSHA`, `EVALSHA`, `SET NX PXAT`, `EVALSHA`, `DEL`). A request that
/// only reads costs one round trip; one that writes, or whose touch is due, one more.
///
/// Needs Redis 7.0 or later (`PEXPIRETIME`), checked when connecting. TLS
/// (`rediss://`) is not supported yet and is refused rather than downgraded.
///
/// ```no_run
/// # async fn demo() -> Result<(), tower_sealed_sessions::StoreError> {
/// use tower_sealed_sessions::{Keys, RedisStore, SessionLayer};
///
/// let store = RedisStore::connect("redis://127.0.0.1:6379/0").await?;
/// let layer = SessionLayer::new(store, Keys::generate());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    pub(super) client: Client,
    pub(super) prefix: String,
    pub(super) timeout: Duration,
    pub(super) load: Script,
    pub(super) swap: Script,
    pub(super) touch: Script,
    pub(super) index: Script,
}

impl RedisStore {
    /// The key prefix when none is configured.
    pub const DEFAULT_PREFIX: &str = "session:";
    /// How long a command may take before the request gets 503, when not configured.
    pub const DEFAULT_TIMEOUT: Duration = DEFAULT_TIMEOUT;

    /// The Redis key a session's record is stored under.
    pub(crate) fn redis_key(&self, key: &StoreKey) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The Redis key a user's session index is stored under.
    pub(crate) fn redis_index_key(&self, user: &UserTag) -> String {
        format!("{}user:{user}", self.prefix)
    }

    /// Runs the index script: upserts `entry` when given, prunes, and returns
    /// what remains.
    async fn index(
        &self,
        user: &UserTag,
        now: Timestamp,
        entry: Option<&IndexEntry>,
    ) -> Result<Vec<IndexEntry>, StoreError> {
        let mut args: Vec<Value> = vec![Value::String(now.unix_millis().to_string().into())];
        if let Some(entry) = entry {
            args.push(Value::Bytes(Bytes::copy_from_slice(
                entry.store_key.as_bytes(),
            )));
            args.push(Value::String(encode_entry(entry).into()));
        }
        let reply: Value = self
            .index
            .evalsha_with_reload(&self.client, self.redis_index_key(user), args)
            .await
            .map_err(|e| self.err(e))?;
        decode_index(reply)
    }

    pub(super) fn err(&self, e: FredError) -> StoreError {
        fred_error(e, self.timeout)
    }

    /// Runs the compare-and-set script: `value` replaces the record (or, empty,
    /// deletes it) if its version is `expected_version`.
    async fn swap(
        &self,
        key: &StoreKey,
        expected_version: u64,
        value: Bytes,
        expire_at: i64,
    ) -> Result<CompareAndSet, StoreError> {
        let args: Vec<Value> = vec![
            Value::Bytes(Bytes::copy_from_slice(&expected_version.to_be_bytes())),
            Value::Bytes(value),
            Value::String(expire_at.to_string().into()),
        ];
        let reply: Value = self
            .swap
            .evalsha_with_reload(&self.client, self.redis_key(key), args)
            .await
            .map_err(|e| self.err(e))?;
        match reply {
            Value::Integer(1) => Ok(CompareAndSet::Done),
            other => Ok(match decode_reply(other)? {
                None => CompareAndSet::Missing,
                Some(current) => CompareAndSet::Conflict(current),
            }),
        }
    }
}

/// Inspection hooks for tests: where a session and a user index live in Redis.
#[cfg(feature = "test-util")]
impl RedisStore {
    /// The Redis key a session's record is stored under.
    pub fn key_of(&self, key: &StoreKey) -> String {
        self.redis_key(key)
    }

    /// The Redis key a user's session index is stored under.
    pub fn index_key_of(&self, user: &UserTag) -> String {
        self.redis_index_key(user)
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SessionStore for RedisStore {
    fn load(
        &self,
        key: &StoreKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        let redis_key = self.redis_key(key);
        async move {
            let reply: Value = self
                .load
                .evalsha_with_reload(&self.client, redis_key, Vec::<Value>::new())
                .await
                .map_err(|e| self.err(e))?;
            decode_reply(reply)
        }
    }

    fn create(
        &self,
        key: &StoreKey,
        record: &Record,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let redis_key = self.redis_key(key);
        let value = encode(record);
        let expire = expire_at(&record.deadlines).map(Expiration::PXAT);
        async move {
            let reply: Value = self
                .client
                .set(redis_key, value, expire, Some(SetOptions::NX), false)
                .await
                .map_err(|e| self.err(e))?;
            Ok(!reply.is_null())
        }
    }

    fn update(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> impl Future<Output = Result<CompareAndSet, StoreError>> + Send {
        let expire = expire_at(&record.deadlines).unwrap_or(0);
        self.swap(key, expected_version, encode(record), expire)
    }

    fn delete_version(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> impl Future<Output = Result<CompareAndSet, StoreError>> + Send {
        self.swap(key, expected_version, Bytes::new(), 0)
    }

    fn touch(
        &self,
        key: &StoreKey,
        deadlines: Deadlines,
        expected_version: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let redis_key = self.redis_key(key);
        let args: Vec<Value> = vec![
            Value::Bytes(Bytes::copy_from_slice(&expected_version.to_be_bytes())),
            Value::String(expire_at(&deadlines).unwrap_or(0).to_string().into()),
            Value::Bytes(Bytes::copy_from_slice(
                &deadlines.active.unix_millis().to_be_bytes(),
            )),
        ];
        async move {
            let touched: i64 = self
                .touch
                .evalsha_with_reload(&self.client, redis_key, args)
                .await
                .map_err(|e| self.err(e))?;
            Ok(touched == 1)
        }
    }

    fn delete(&self, key: &StoreKey) -> impl Future<Output = Result<(), StoreError>> + Send {
        let redis_key = self.redis_key(key);
        async move {
            let _: i64 = self.client.del(redis_key).await.map_err(|e| self.err(e))?;
            Ok(())
        }
    }

    /// Redis expires records itself: nothing to do.
    fn delete_expired(
        &self,
        _now: Timestamp,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        std::future::ready(Ok(0))
    }

    fn index_add(
        &self,
        user: &UserTag,
        entry: &IndexEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        // Entries expire by the clock of the writer; pruning with the entry's own
        // index time keeps a fresh entry even when clocks disagree.
        let (user, entry) = (*user, *entry);
        async move {
            self.index(&user, entry.indexed_at, Some(&entry)).await?;
            Ok(())
        }
    }

    fn index_remove(
        &self,
        user: &UserTag,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let redis_key = self.redis_index_key(user);
        let fields: Vec<Key> = keys
            .iter()
            .map(|k| Key::from(Bytes::copy_from_slice(k.as_bytes())))
            .collect();
        async move {
            if fields.is_empty() {
                return Ok(());
            }
            let _: i64 = self
                .client
                .hdel(redis_key, fields)
                .await
                .map_err(|e| self.err(e))?;
            Ok(())
        }
    }

    fn index_list(
        &self,
        user: &UserTag,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<IndexEntry>, StoreError>> + Send {
        let user = *user;
        async move { self.index(&user, now, None).await }
    }
}
