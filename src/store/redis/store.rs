//! [`RedisStore`] and its [`SessionStore`] operations: one script or command each,
//! each safe to run twice.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ErrorKind, FromRedisValue, RedisError, Script, ServerErrorKind, Value};

use super::codec::{decode_index, decode_reply, encode, encode_entry, expire_at, tombstone};
use super::connect::{
    NodeConfig, Target, cluster_client, eviction_policies, eviction_refused, evicts,
};
use super::link::{Conn, Conns, Lease, Link, MasterPool, load_scripts};
use super::scripts;
use super::settings::{DEFAULT_TIMEOUT, RedisSettings, RedisTopology};
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::record::{Deadlines, Record, StoreKey};
use crate::store::{CompareAndSet, IndexEntry, SessionStore, UserTag};

/// A [`SessionStore`] in Redis: standalone, Sentinel or Cluster, over TLS when
/// asked, on the [redis-rs](https://docs.rs/redis) client with rustls.
///
/// Cheap to clone; clones share the connections.
///
/// - **Standalone and Sentinel**: a pool of multiplexed connections to the master
///   (one by default, [`RedisSettings::pool_size`]). A lost connection fails the
///   commands in flight on it, with 503, and is made again on the next request,
///   with back-off after a failed attempt. Under Sentinel the store asks the
///   sentinels for the master, checks that it says it is one, and listens to every
///   sentinel for `+switch-master`, so writes move to a new master as soon as it is
///   announced; a master that turns replica (`READONLY`) is left too.
/// - **Cluster**: the client follows MOVED and ASK (sending `ASKING` with the
///   command) without counting them as failures, and may send a command again
///   after a lost connection.
/// - **Every write is safe to run twice**: a create or an update whose value is
///   already there (values are unique: sealed data carries a random nonce) reports
///   success; a compare-and-delete leaves a tombstone of its operation id for a
///   minute. So a command sent again after it ran reports what the first run did.
/// - **Replication**: with [`RedisSettings::wait`], every write is followed by
///   `WAIT`, and a write that too few replicas acknowledged in time answers 503.
///   Without it, a write is acknowledged once the master has it: a failover may
///   lose the last writes the master had not yet replicated.
///
/// Layout: one Redis string per session, under `prefix` + the store key in hex (a
/// single key, so in a Cluster every session lives in one slot). The value is a
/// format marker, the record's version, lifespan deadline and last activity, then
/// the sealed data; the idle deadline is the key's own expiry (`PXAT`), so Redis
/// drops expired sessions itself and a touch is one `PEXPIREAT` (and an 8-byte
/// `SETRANGE`). A user's session index is one hash under `prefix` + `user:` + the
/// user tag in hex; each index command touches that one key.
///
/// Round trips: a load, an update, a create, a touch or a delete is one command
/// each (plus a `WAIT` with replication). Reading a user's index and checking its
/// entries' records is one round trip each, whatever the number of entries: the
/// records are asked for together.
///
/// Needs Redis 7.0 or later (`PEXPIRETIME`), and a `maxmemory-policy` of
/// `noeviction` unless [`RedisSettings::allow_eviction`] is set: both are checked
/// when connecting.
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
    inner: Arc<Inner>,
}

struct Inner {
    link: Link,
    prefix: String,
    timeout: Duration,
    wait: Option<(u32, Duration)>,
    load: Lua,
    create: Lua,
    swap: Lua,
    delete_version: Lua,
    touch: Lua,
    index: Lua,
}

/// A Lua script: its text, and the SHA-1 digest `EVALSHA` names it by.
struct Lua {
    body: &'static str,
    sha: String,
}

impl Lua {
    fn new(body: &'static str) -> Self {
        Lua {
            body,
            sha: Script::new(body).get_hash().to_owned(),
        }
    }

    /// The script run on `key` with `args`: by its digest (`EVALSHA`), or with
    /// its text (`EVAL`), for a server that does not have it (which then keeps it).
    fn command(&self, key: &str, args: &[&[u8]], by_digest: bool) -> Cmd {
        let mut cmd = match by_digest {
            true => redis::cmd("EVALSHA").arg(&self.sha).to_owned(),
            false => redis::cmd("EVAL").arg(self.body).to_owned(),
        };
        cmd.arg(1).arg(key);
        for arg in args {
            cmd.arg(*arg);
        }
        cmd
    }
}

/// How many MOVED and ASK replies one command follows: resharding moves a key at
/// most twice (ASK while its slot migrates, then MOVED).
const MAX_REDIRECTS: u32 = 5;

/// Shared connections per node, and exclusive ones for writes that wait for
/// replicas (at least 4, so that a replica slow to acknowledge holds up a few
/// writes, never the reads).
fn pool_sizes(settings: &RedisSettings) -> (usize, usize) {
    let shared = settings.pool_size();
    let exclusive = match settings.wait_for() {
        Some(_) => shared.max(4),
        None => 0,
    };
    (shared, exclusive)
}

/// How many commands of one batch (the records of a user's index) are in flight
/// at once; on a multiplexed connection they travel together, so a batch of up to
/// this many costs one round trip.
const BATCH: usize = 1024;

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
        let link = match settings.topology().map_err(StoreError::backend)? {
            RedisTopology::Cluster(cluster) => {
                let client = cluster_client(settings, &config, &cluster.nodes)?;
                let (shared, exclusive) = pool_sizes(settings);
                let mut conns = Vec::with_capacity(shared + exclusive);
                for _ in 0..shared + exclusive {
                    let conn = client
                        .get_async_connection()
                        .await
                        .map_err(|e| config.error(e))?;
                    conns.push(Conn::Cluster(conn));
                }
                load_scripts(&mut conns[0])
                    .await
                    .map_err(|e| config.error(e))?;
                let exclusive = conns.split_off(shared);
                Link::Cluster(Conns::new(conns, exclusive))
            }
            RedisTopology::Url(_) | RedisTopology::Sentinel(_) => {
                let target = Target::from_settings(settings, &config)?
                    .expect("a URL or sentinels name a master");
                let pool = MasterPool::new(
                    target,
                    config.clone(),
                    pool_sizes(settings),
                    settings.reconnect_delays(),
                );
                pool.watch_sentinels();
                Link::Master(pool)
            }
        };
        let store = RedisStore {
            inner: Arc::new(Inner {
                link,
                prefix: settings
                    .prefix
                    .clone()
                    .unwrap_or_else(|| Self::DEFAULT_PREFIX.to_owned()),
                timeout: settings.timeout(),
                wait: settings.wait_for(),
                load: Lua::new(scripts::LOAD),
                create: Lua::new(scripts::CREATE),
                swap: Lua::new(scripts::SWAP),
                delete_version: Lua::new(scripts::DELETE_VERSION),
                touch: Lua::new(scripts::TOUCH),
                index: Lua::new(scripts::INDEX),
            }),
        };
        store.check_server(settings.allow_eviction).await?;
        Ok(store)
    }

    /// Checks the server before use: Redis 7.0 or later (`PEXPIRETIME`), and a
    /// `maxmemory-policy` that keeps keys, on every node.
    async fn check_server(&self, allow_eviction: bool) -> Result<(), StoreError> {
        let probe = Script::new(scripts::PROBE);
        let key = format!("{}version-probe", self.inner.prefix);
        let mut lease = self.lease(false).await?;
        if let Err(err) = probe.key(&key).invoke_async::<Value>(&mut lease.conn).await {
            return Err(StoreError::backend(format!(
                "Redis 7.0 or later is needed (PEXPIRETIME): {err}"
            )));
        }
        let info: Result<Value, RedisError> = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut lease.conn)
            .await;
        match info {
            Ok(info) => {
                let policies = eviction_policies(&info);
                if let Some(policy) = policies.iter().find(|p| evicts(p)) {
                    if !allow_eviction {
                        return Err(eviction_refused(policy));
                    }
                    tracing::warn!(target: "tower_sealed_sessions", policy, "Redis evicts keys when full: sessions and user indexes may vanish (allowed by allow_eviction)");
                }
                if policies.is_empty() {
                    tracing::warn!(target: "tower_sealed_sessions", "Redis did not report its maxmemory-policy; make sure it is noeviction");
                }
            }
            Err(err) => {
                tracing::warn!(target: "tower_sealed_sessions", error = %err, "cannot read Redis' maxmemory-policy (INFO refused); make sure it is noeviction");
            }
        }
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

    /// A failed command: the link learns from it, and the request gets a
    /// [`StoreError`].
    fn failed(&self, lease: &Lease, err: RedisError) -> StoreError {
        self.inner.link.failed(lease, &err);
        if err.is_timeout() {
            StoreError::Timeout(self.inner.timeout)
        } else {
            StoreError::backend(err)
        }
    }

    /// Runs `script` on `key` with `args`; a write then waits for the replicas the
    /// settings ask for.
    async fn script<T: FromRedisValue>(
        &self,
        script: &Lua,
        key: &str,
        args: &[&[u8]],
        write: bool,
    ) -> Result<T, StoreError> {
        let evalsha = script.command(key, args, true);
        self.run(evalsha, key, Some((script, args)), write).await
    }

    /// Runs a plain command on `key`; a write then waits for the replicas.
    async fn command<T: FromRedisValue>(
        &self,
        cmd: Cmd,
        key: &str,
        write: bool,
    ) -> Result<T, StoreError> {
        self.run(cmd, key, None, write).await
    }

    /// Runs `cmd` on `key` to its answer. In a Cluster, a MOVED or ASK reply (the
    /// command did not run) is followed here, at most [`MAX_REDIRECTS`] times: an
    /// ASK by `ASKING` and the command written together in one pipeline, so that no
    /// other request's command on the shared connection can take the `ASKING` (the
    /// client library sends the two apart). A script the server does not have
    /// (`NOSCRIPT`, after a restart, or on a node added since) is sent whole once.
    /// A write then waits for the replicas, on the node that ran it.
    async fn run<T: FromRedisValue>(
        &self,
        mut cmd: Cmd,
        key: &str,
        script: Option<(&Lua, &[&[u8]])>,
        write: bool,
    ) -> Result<T, StoreError> {
        let mut lease = self.lease(write).await?;
        let mut redirect: Option<(bool, String, u16)> = None;
        for _ in 0..MAX_REDIRECTS {
            let reply = match (&mut lease.conn, &redirect) {
                (conn, None) => cmd.query_async::<Value>(conn).await,
                (Conn::Cluster(conn), Some((ask, host, port))) => {
                    let mut pipe = redis::pipe();
                    if *ask {
                        pipe.cmd("ASKING");
                    }
                    pipe.add_command(cmd.clone());
                    let node = SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    };
                    conn.route_pipeline(pipe, usize::from(*ask), 1, node)
                        .await
                        .and_then(|mut replies| replies.pop().unwrap_or(Value::Nil).extract_error())
                }
                (Conn::Master(_), Some(_)) => unreachable!("only a Cluster redirects"),
            };
            let err = match reply {
                Ok(value) => {
                    if write {
                        self.replicated(&mut lease, key, redirect.as_ref()).await?;
                    }
                    return T::from_redis_value(value).map_err(|e| {
                        StoreError::Corrupt(format!("unexpected reply from Redis: {e}"))
                    });
                }
                Err(err) => err,
            };
            match err.kind() {
                ErrorKind::Server(ServerErrorKind::NoScript) if script.is_some() => {
                    let (lua, args) = script.expect("checked");
                    cmd = lua.command(key, args, false);
                }
                ErrorKind::Server(kind @ (ServerErrorKind::Moved | ServerErrorKind::Ask)) => {
                    let Some((host, port)) = err
                        .redirect_node()
                        .and_then(|(addr, _)| addr.rsplit_once(':'))
                        .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
                    else {
                        return Err(self.failed(&lease, err));
                    };
                    redirect = Some((kind == ServerErrorKind::Ask, host, port));
                }
                // A node named by a redirect that the client is not connected to
                // yet (it joined the Cluster since): once the slot map the redirect
                // triggered is refreshed, the usual routing reaches it.
                ErrorKind::ClusterConnectionNotFound if redirect.is_some() => {
                    redirect = None;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => return Err(self.failed(&lease, err)),
            }
        }
        Err(StoreError::backend(format!(
            "the Cluster redirected a command {MAX_REDIRECTS} times in a row"
        )))
    }

    /// A connection for one command: an exclusive one for a write that waits for
    /// replicas.
    async fn lease(&self, write: bool) -> Result<Lease, StoreError> {
        self.inner
            .link
            .lease(write && self.inner.wait.is_some())
            .await
    }

    /// With replication asked for: `WAIT` on the connection (and, in a Cluster,
    /// the node: `redirect`'s when the command was redirected) that took the write
    /// to `key`, and an error when too few replicas have it in time. The write
    /// stays on the master: the request is answered 503, never as saved, since a
    /// failover now could lose it.
    async fn replicated(
        &self,
        lease: &mut Lease,
        key: &str,
        redirect: Option<&(bool, String, u16)>,
    ) -> Result<(), StoreError> {
        let Some((replicas, timeout)) = self.inner.wait else {
            return Ok(());
        };
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas)
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        let acked = match &mut lease.conn {
            Conn::Master(conn) => wait.query_async::<i64>(conn).await,
            Conn::Cluster(conn) => {
                let node = match redirect {
                    Some((_, host, port)) => SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    },
                    None => SingleNodeRoutingInfo::SpecificNode(Route::new(
                        slot(key.as_bytes()),
                        SlotAddr::Master,
                    )),
                };
                conn.route_command(wait, RoutingInfo::SingleNode(node))
                    .await
                    .and_then(|v| i64::from_redis_value(v).map_err(RedisError::from))
            }
        };
        match acked {
            Ok(n) if n >= i64::from(replicas) => Ok(()),
            Ok(n) => Err(StoreError::backend(format!(
                "only {n} of {replicas} replicas acknowledged the write within {timeout:?}"
            ))),
            Err(err) => Err(self.failed(lease, err)),
        }
    }

    /// Runs the index script: upserts `entry` when given, prunes, and returns what
    /// remains.
    async fn index(
        &self,
        user: &UserTag,
        now: Timestamp,
        entry: Option<&IndexEntry>,
    ) -> Result<Vec<IndexEntry>, StoreError> {
        let now = now.unix_millis().to_string();
        let encoded = entry.map(encode_entry);
        let mut args: Vec<&[u8]> = vec![now.as_bytes()];
        if let (Some(entry), Some(encoded)) = (entry, &encoded) {
            args.push(entry.store_key.as_bytes());
            args.push(encoded.as_bytes());
        }
        let key = self.redis_index_key(user);
        let reply: Value = self
            .script(&self.inner.index, &key, &args, entry.is_some())
            .await?;
        decode_index(reply)
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
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("wait", &self.inner.wait)
            .finish_non_exhaustive()
    }
}

/// The Cluster slot of `key`: CRC16 of the key, or of its `{hash tag}`, modulo
/// 16384 (Redis Cluster specification, "Keys distribution model").
fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % 16384
}

/// An expiry argument: Unix milliseconds, or `0` for none.
fn expiry_arg(deadlines: &Deadlines) -> String {
    expire_at(deadlines).unwrap_or(0).to_string()
}

impl SessionStore for RedisStore {
    fn load(
        &self,
        key: &StoreKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        let redis_key = self.redis_key(key);
        async move {
            let reply: Value = self
                .script(&self.inner.load, &redis_key, &[], false)
                .await?;
            decode_reply(reply)
        }
    }

    fn load_many(
        &self,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<Vec<Option<Record>>, StoreError>> + Send {
        let keys = keys.to_vec();
        async move {
            stream::iter(keys)
                .map(|key| async move { self.load(&key).await })
                .buffered(BATCH)
                .try_collect()
                .await
        }
    }

    fn create(
        &self,
        key: &StoreKey,
        record: &Record,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let redis_key = self.redis_key(key);
        // Names this write, so that its own second run is recognised.
        let value = encode(record, &rand::random());
        let expire = expiry_arg(&record.deadlines);
        async move {
            let created: i64 = self
                .script(
                    &self.inner.create,
                    &redis_key,
                    &[&value, expire.as_bytes()],
                    true,
                )
                .await?;
            Ok(created == 1)
        }
    }

    fn update(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> impl Future<Output = Result<CompareAndSet, StoreError>> + Send {
        let key = *key;
        let value = encode(record, &rand::random());
        let expire = expiry_arg(&record.deadlines);
        async move {
            let expected = expected_version.to_be_bytes();
            self.compare_and_set(
                &self.inner.swap,
                &key,
                &[&expected, &value, expire.as_bytes()],
            )
            .await
        }
    }

    fn delete_version(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> impl Future<Output = Result<CompareAndSet, StoreError>> + Send {
        let key = *key;
        // Names this operation, so that its own second run is recognised.
        let tombstone = tombstone(&rand::random());
        async move {
            let expected = expected_version.to_be_bytes();
            self.compare_and_set(&self.inner.delete_version, &key, &[&expected, &tombstone])
                .await
        }
    }

    fn touch(
        &self,
        key: &StoreKey,
        deadlines: Deadlines,
        expected_version: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let redis_key = self.redis_key(key);
        let expire = expiry_arg(&deadlines);
        async move {
            let expected = expected_version.to_be_bytes();
            let active = deadlines.active.unix_millis().to_be_bytes();
            let touched: i64 = self
                .script(
                    &self.inner.touch,
                    &redis_key,
                    &[&expected, expire.as_bytes(), &active],
                    true,
                )
                .await?;
            Ok(touched == 1)
        }
    }

    fn delete(&self, key: &StoreKey) -> impl Future<Output = Result<(), StoreError>> + Send {
        let redis_key = self.redis_key(key);
        async move {
            let mut del = redis::cmd("DEL");
            del.arg(&redis_key);
            let _: i64 = self.command(del, &redis_key, true).await?;
            Ok(())
        }
    }

    fn delete_many(
        &self,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let keys = keys.to_vec();
        async move {
            stream::iter(keys)
                .map(|key| async move { self.delete(&key).await })
                .buffer_unordered(BATCH)
                .try_collect::<Vec<()>>()
                .await?;
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
            let _: i64 = self.command(hdel, &redis_key, true).await?;
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

    /// `PING`: the master, or every master of a Cluster.
    async fn ping(&self) -> Result<(), StoreError> {
        let mut lease = self.lease(false).await?;
        match redis::cmd("PING")
            .query_async::<Value>(&mut lease.conn)
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => Err(self.failed(&lease, err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_cluster_specification() {
        // Examples from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"123456789"), 0x31C3, "the CRC16 check value");
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(
            slot(b"foo{}{bar}"),
            slot(b"foo{}{bar}"),
            "an empty tag hashes the whole key"
        );
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
    }
}
