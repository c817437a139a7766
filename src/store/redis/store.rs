//! [`RedisStore`] and its [`SessionStore`] operations: one script or command each,
//! each safe to run twice.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt, stream};
use redis::{RedisError, Script, Value};

use super::codec::{
    Got, decode_get, decode_index, decode_reply, decode_sample, encode, encode_entry, expire_at,
    tombstone,
};
use super::command::{Lua, Runner};
use super::connect::NodeConfig;
use super::eviction::{CHECK_INTERVAL, Evictions, eviction_refused, evicts, node_infos};
use super::link::{Lease, Link};
use super::scripts;
use super::settings::{DEFAULT_TIMEOUT, RedisSettings};
use super::tracking::Tracking;
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::record::{Deadlines, Record, StoreKey};
use crate::store::{
    CompareAndSet, Front, IndexEntry, IndexSample, RecordCache, SessionStore, StoreHealth, UserTag,
};

#[doc = include_str!("store.md")]
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    runner: Runner,
    prefix: String,
    /// The value format written (2 or 3).
    format: u8,
    load: Lua,
    create: Lua,
    swap: Lua,
    delete_version: Lua,
    touch: Lua,
    index_add: Lua,
    index_list: Lua,
    index_sample: Lua,
    /// What the eviction checks last saw of each node.
    evictions: Mutex<Evictions>,
    /// The record cache, when `cache` is set.
    cache: Front,
}

/// How many commands of one batch (the records of a user's index) are in flight
/// at once; on a multiplexed connection they travel together, so a batch of up to
/// this many costs one round trip.
const BATCH: usize = 1024;

/// How many keys one `MGET` or `DEL` names, outside a Cluster: a user's thousand
/// sessions are read in one command, which holds the server up for well under a
/// millisecond.
const KEYS_PER_COMMAND: usize = 1024;

/// How many random entries an index upsert looks at for expiry: more than the
/// one entry it adds, so that an index of expired entries shrinks.
const UPSERT_PRUNES: &[u8] = b"2";

impl RedisStore {
    /// The key prefix when none is configured.
    pub const DEFAULT_PREFIX: &str = "session:";
    /// How long a command may take before the request gets 503, when not configured.
    pub const DEFAULT_TIMEOUT: Duration = DEFAULT_TIMEOUT;

    /// Connects to the server a URL names (`redis://` or `rediss://`, with
    /// `user:password@` and a database when needed), with the default settings.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] for an invalid URL, when no connection can be made,
    /// or when the server is older than Redis 7 or evicts keys.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::from_settings(&RedisSettings::url(url)).await
    }

    /// Connects as `settings` (the `store:` section of a configuration file)
    /// describe.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] for invalid settings, an unreadable password or
    /// certificate, when no connection can be made (a wrong CA shows here), or
    /// when the server is older than Redis 7 or evicts keys.
    pub async fn from_settings(settings: &RedisSettings) -> Result<Self, StoreError> {
        settings.validate().map_err(StoreError::backend)?;
        let config = NodeConfig::from_settings(settings)?;
        let prefix = settings
            .prefix
            .clone()
            .unwrap_or_else(|| Self::DEFAULT_PREFIX.to_owned());
        let cache = settings.cache.map(|cache| {
            // A command the store gave up on runs within its timeout, or its
            // WAIT's, or not at all.
            let wait = settings.wait_for().map_or(Duration::ZERO, |(_, t)| t);
            let hold = 2 * settings.timeout() + wait;
            Arc::new(RecordCache::new(&cache, hold))
        });
        let tracking = cache.clone().map(|cache| Tracking {
            cache,
            prefix: prefix.as_str().into(),
        });
        let link = Link::open(settings, &config, tracking).await?;
        let store = RedisStore {
            inner: Arc::new(Inner {
                runner: Runner {
                    link,
                    timeout: settings.timeout(),
                    wait: settings.wait_for(),
                },
                prefix,
                format: settings.value_format(),
                load: Lua::new(scripts::LOAD),
                create: Lua::new(scripts::CREATE),
                swap: Lua::new(scripts::SWAP),
                delete_version: Lua::new(scripts::DELETE_VERSION),
                touch: Lua::new(scripts::TOUCH),
                index_add: Lua::new(scripts::INDEX_ADD),
                index_list: Lua::new(scripts::INDEX_LIST),
                index_sample: Lua::new(scripts::INDEX_SAMPLE),
                evictions: Mutex::new(Evictions::new(settings.allow_eviction)),
                cache: Front(cache),
            }),
        };
        store.check_server(settings.allow_eviction).await?;
        tokio::spawn(check_periodically(Arc::downgrade(&store.inner)));
        Ok(store)
    }

    /// Checks the server before use: Redis 7.0 or later (`PEXPIRETIME`), and a
    /// `maxmemory-policy` that keeps keys, on every node; what it finds is the
    /// baseline of the later eviction checks.
    async fn check_server(&self, allow_eviction: bool) -> Result<(), StoreError> {
        let probe = Script::new(scripts::PROBE);
        let key = format!("{}version-probe", self.inner.prefix);
        let mut lease = self.inner.runner.lease(false).await?;
        if let Err(err) = probe.key(&key).invoke_async::<Value>(&mut lease.conn).await {
            return Err(StoreError::backend(format!(
                "Redis 7.0 or later is needed (PEXPIRETIME): {err}"
            )));
        }
        let info = match self.inner.read_nodes(&mut lease).await {
            Ok(info) => info,
            Err(err) => {
                tracing::warn!(target: "tower_sealed_sessions", error = %err, "cannot read Redis' maxmemory-policy (INFO refused); make sure it is noeviction");
                return Ok(());
            }
        };
        let policies: Vec<&str> = info.iter().filter_map(|n| n.policy.as_deref()).collect();
        if let Some(policy) = policies.iter().find(|p| evicts(p)) {
            if !allow_eviction {
                return Err(eviction_refused(policy));
            }
            tracing::warn!(target: "tower_sealed_sessions", policy, "Redis evicts keys when full: sessions and user indexes may vanish (allowed by allow_eviction)");
        }
        if policies.is_empty() {
            tracing::warn!(target: "tower_sealed_sessions", "Redis did not report its maxmemory-policy; make sure it is noeviction");
        }
        self.inner.evictions().observe(&info, Instant::now());
        Ok(())
    }

    /// The Redis key a session's record is stored under.
    fn redis_key(&self, key: &StoreKey) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    /// The Redis key a user's session index is stored under.
    fn redis_index_key(&self, user: &UserTag) -> String {
        format!("{}user:{user}", self.inner.prefix)
    }

    /// The records under `keys`, in their order, with one `MGET` (not in a
    /// Cluster); values in a format without the idle deadline are read again
    /// one by one with the `LOAD` script, as [`load`](SessionStore::load) does.
    async fn load_together(&self, keys: &[StoreKey]) -> Result<Vec<Option<Record>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = keys.iter().map(|k| self.redis_key(k)).collect();
        let mut mget = redis::cmd("MGET");
        mget.arg(&names);
        let runner = &self.inner.runner;
        let values: Vec<Value> = runner.command(mget, &names[0], false).await?;
        if values.len() != keys.len() {
            return Err(StoreError::Corrupt(format!(
                "MGET of {} keys answered {} values",
                keys.len(),
                values.len()
            )));
        }
        let mut records = Vec::with_capacity(keys.len());
        for (value, name) in values.into_iter().zip(&names) {
            records.push(match decode_get(value)? {
                Got::Record(record) => Some(record),
                Got::Missing => None,
                Got::NeedsExpiry => {
                    let reply: Value = runner.script(&self.inner.load, name, &[], false).await?;
                    decode_reply(reply)?
                }
            });
        }
        Ok(records)
    }

    /// Whether the store's keys may live on different nodes (a Cluster): then a
    /// command names one key, or keys of one slot.
    fn sharded(&self) -> bool {
        matches!(self.inner.runner.link, Link::Cluster(_))
    }

    /// Runs a compare-and-set script, whose reply is 1 (done), nil (missing), or
    /// the current record (a conflict).
    async fn compare_and_set(
        &self,
        script: &Lua,
        key: &StoreKey,
        args: &[&[u8]],
    ) -> Result<CompareAndSet, StoreError> {
        let reply: Value = self
            .inner
            .runner
            .script(script, &self.redis_key(key), args, true)
            .await?;
        match reply {
            Value::Int(1) => Ok(CompareAndSet::Done),
            other => Ok(match decode_reply(other)? {
                None => CompareAndSet::Missing,
                Some(current) => CompareAndSet::Conflict(current),
            }),
        }
    }
}

impl Inner {
    fn evictions(&self) -> std::sync::MutexGuard<'_, Evictions> {
        // `Evictions::observe` cannot panic half-way through an update.
        self.evictions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every node's `maxmemory-policy` and `evicted_keys`: one `INFO memory
    /// stats` to the master, or to every master of a Cluster.
    async fn read_nodes(
        &self,
        lease: &mut Lease,
    ) -> Result<Vec<super::eviction::NodeInfo>, RedisError> {
        let reply: Value = redis::cmd("INFO")
            .arg("memory")
            .arg("stats")
            .query_async(&mut lease.conn)
            .await?;
        Ok(node_infos(
            &reply,
            lease.node.as_deref().unwrap_or("master"),
        ))
    }

    /// Reads every node's eviction state and says what it makes of it; a node
    /// that refuses `INFO` (a restricted user) leaves the health as it was.
    async fn check_evictions(&self, lease: &mut Lease) -> Result<StoreHealth, StoreError> {
        let info = match self.read_nodes(lease).await {
            Ok(info) => info,
            Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) => {
                tracing::debug!(target: "tower_sealed_sessions", error = %err, "INFO refused: eviction not checked");
                Vec::new()
            }
            Err(err) => return Err(self.runner.failed(lease, err)),
        };
        Ok(self.evictions().observe(&info, Instant::now()))
    }
}

/// Checks the nodes' eviction state every [`CHECK_INTERVAL`], so that a change
/// is logged even when nothing pings the store; ends with the store.
async fn check_periodically(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(CHECK_INTERVAL).await;
        let Some(inner) = inner.upgrade() else { return };
        let checked = async {
            let mut lease = inner.runner.lease(false).await?;
            inner.check_evictions(&mut lease).await
        };
        if let Err(err) = checked.await {
            tracing::debug!(target: "tower_sealed_sessions", error = %err, "eviction check failed");
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

    /// How many records the cache holds and whether its invalidation stream is
    /// up; `None` without a cache.
    pub fn cache_state(&self) -> Option<(usize, bool)> {
        self.inner.cache.inspect()
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.runner.timeout)
            .field("wait", &self.inner.runner.wait)
            .finish_non_exhaustive()
    }
}

/// An expiry argument: Unix milliseconds, or `0` for none.
fn expiry_arg(deadlines: &Deadlines) -> String {
    expire_at(deadlines).unwrap_or(0).to_string()
}

impl SessionStore for RedisStore {
    const KIND: &'static str = "redis";

    /// A hit of the record cache (`cache`), if there is one.
    fn load_now(&self, key: &StoreKey) -> Option<Record> {
        self.inner.cache.hit(key)
    }

    /// One `GET`; a value in a format without the idle deadline (written by an
    /// older release, or with `value_format: 2`) is read again with the `LOAD`
    /// script, which returns the key's expiry with it.
    fn load(
        &self,
        key: &StoreKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        let redis_key = self.redis_key(key);
        let fetch = async move {
            let runner = &self.inner.runner;
            let mut get = redis::cmd("GET");
            get.arg(&redis_key);
            let value: Value = runner.command(get, &redis_key, false).await?;
            match decode_get(value)? {
                Got::Record(record) => Ok(Some(record)),
                Got::Missing => Ok(None),
                Got::NeedsExpiry => {
                    let reply: Value = runner
                        .script(&self.inner.load, &redis_key, &[], false)
                        .await?;
                    decode_reply(reply)
                }
            }
        };
        self.inner.cache.load(key, fetch)
    }

    fn load_many(
        &self,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<Vec<Option<Record>>, StoreError>> + Send {
        let keys = keys.to_vec();
        async move {
            if self.sharded() {
                return stream::iter(keys)
                    .map(|key| async move { self.load(&key).await })
                    .buffered(BATCH)
                    .try_collect()
                    .await;
            }
            let chunks: Vec<Vec<StoreKey>> =
                keys.chunks(KEYS_PER_COMMAND).map(<[_]>::to_vec).collect();
            let batches: Vec<Vec<Option<Record>>> = stream::iter(chunks)
                .map(|chunk| async move { self.load_together(&chunk).await })
                .buffered(4)
                .try_collect()
                .await?;
            Ok(batches.into_iter().flatten().collect())
        }
    }

    fn create(
        &self,
        key: &StoreKey,
        record: &Record,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let redis_key = self.redis_key(key);
        // Names this write, so that its own second run is recognised.
        let value = encode(record, &rand::random(), self.inner.format);
        let expire = expiry_arg(&record.deadlines);
        let create = async move {
            let created: i64 = self
                .inner
                .runner
                .script(
                    &self.inner.create,
                    &redis_key,
                    &[&value, expire.as_bytes()],
                    true,
                )
                .await?;
            Ok(created == 1)
        };
        self.inner.cache.create(key, record, create)
    }

    fn update(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> impl Future<Output = Result<CompareAndSet, StoreError>> + Send {
        let store_key = *key;
        let value = encode(record, &rand::random(), self.inner.format);
        let expire = expiry_arg(&record.deadlines);
        let update = async move {
            let expected = expected_version.to_be_bytes();
            self.compare_and_set(
                &self.inner.swap,
                &store_key,
                &[&expected, &value, expire.as_bytes()],
            )
            .await
        };
        self.inner.cache.write(key, record, update)
    }

    fn delete_version(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> impl Future<Output = Result<CompareAndSet, StoreError>> + Send {
        let store_key = *key;
        // Names this operation, so that its own second run is recognised.
        let tombstone = tombstone(&rand::random());
        let delete = async move {
            let expected = expected_version.to_be_bytes();
            self.compare_and_set(
                &self.inner.delete_version,
                &store_key,
                &[&expected, &tombstone],
            )
            .await
        };
        self.inner.cache.delete(std::slice::from_ref(key), delete)
    }

    fn touch(
        &self,
        key: &StoreKey,
        deadlines: Deadlines,
        expected_version: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let redis_key = self.redis_key(key);
        let expire = expiry_arg(&deadlines);
        let touch = async move {
            let expected = expected_version.to_be_bytes();
            let active = deadlines.active.unix_millis().to_be_bytes();
            let idle = deadlines.idle.unix_millis().to_be_bytes();
            let format = [b'0' + self.inner.format];
            let touched: i64 = self
                .inner
                .runner
                .script(
                    &self.inner.touch,
                    &redis_key,
                    &[&expected, expire.as_bytes(), &active, &idle, &format],
                    true,
                )
                .await?;
            Ok(touched == 1)
        };
        self.inner
            .cache
            .touch(key, deadlines, expected_version, touch)
    }

    fn delete(&self, key: &StoreKey) -> impl Future<Output = Result<(), StoreError>> + Send {
        let redis_key = self.redis_key(key);
        let delete = async move {
            let mut del = redis::cmd("DEL");
            del.arg(&redis_key);
            let _: i64 = self.inner.runner.command(del, &redis_key, true).await?;
            Ok(())
        };
        self.inner.cache.delete(std::slice::from_ref(key), delete)
    }

    fn delete_many(
        &self,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let all = keys.to_vec();
        let keys = all.clone();
        let delete = async move {
            if self.sharded() {
                stream::iter(keys)
                    .map(|key| async move { self.delete(&key).await })
                    .buffer_unordered(BATCH)
                    .try_collect::<Vec<()>>()
                    .await?;
                return Ok(());
            }
            // One `DEL` per batch of keys: it removes each of them atomically, as
            // `delete` does.
            let chunks: Vec<Vec<String>> = keys
                .chunks(KEYS_PER_COMMAND)
                .map(|chunk| chunk.iter().map(|k| self.redis_key(k)).collect())
                .collect();
            stream::iter(chunks)
                .map(|names| async move {
                    let mut del = redis::cmd("DEL");
                    del.arg(&names);
                    let _: i64 = self.inner.runner.command(del, &names[0], true).await?;
                    Ok::<(), StoreError>(())
                })
                .buffer_unordered(4)
                .try_collect::<Vec<()>>()
                .await?;
            Ok(())
        };
        async move { self.inner.cache.delete(&all, delete).await }
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
        let key = self.redis_index_key(user);
        let encoded = encode_entry(entry);
        let now = entry.indexed_at.unix_millis().to_string();
        let field = *entry.store_key.as_bytes();
        async move {
            let args: [&[u8]; 4] = [&field, encoded.as_bytes(), now.as_bytes(), UPSERT_PRUNES];
            let _: Value = self
                .inner
                .runner
                .script(&self.inner.index_add, &key, &args, true)
                .await?;
            Ok(())
        }
    }

    fn index_remove(
        &self,
        user: &UserTag,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let redis_key = self.redis_index_key(user);
        let mut hdel = redis::cmd("HDEL");
        hdel.arg(&redis_key);
        for key in keys {
            hdel.arg(key.as_bytes());
        }
        let empty = keys.is_empty();
        async move {
            if empty {
                return Ok(());
            }
            let _: i64 = self.inner.runner.command(hdel, &redis_key, true).await?;
            Ok(())
        }
    }

    fn index_list(
        &self,
        user: &UserTag,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<IndexEntry>, StoreError>> + Send {
        let key = self.redis_index_key(user);
        let now = now.unix_millis().to_string();
        async move {
            let reply: Value = self
                .inner
                .runner
                .script(&self.inner.index_list, &key, &[now.as_bytes()], false)
                .await?;
            decode_index(reply)
        }
    }

    /// One `INDEX_SAMPLE` script: `limit` random entries (`HRANDFIELD`), and the
    /// index's length to tell whether they are all of it.
    fn index_sample(
        &self,
        user: &UserTag,
        now: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<IndexSample, StoreError>> + Send {
        let key = self.redis_index_key(user);
        let now = now.unix_millis().to_string();
        let limit = limit.to_string();
        async move {
            let args: [&[u8]; 2] = [now.as_bytes(), limit.as_bytes()];
            let reply: Value = self
                .inner
                .runner
                .script(&self.inner.index_sample, &key, &args, false)
                .await?;
            decode_sample(reply)
        }
    }

    /// `PING`, then the eviction check: the master, or every master of a
    /// Cluster. Degraded while a node's `maxmemory-policy` evicts (unless
    /// `allow_eviction`), and for ten minutes after a check found keys evicted.
    async fn ping(&self) -> Result<StoreHealth, StoreError> {
        let mut lease = self.inner.runner.lease(false).await?;
        if let Err(err) = redis::cmd("PING")
            .query_async::<Value>(&mut lease.conn)
            .await
        {
            return Err(self.inner.runner.failed(&lease, err));
        }
        self.inner.check_evictions(&mut lease).await
    }
}
