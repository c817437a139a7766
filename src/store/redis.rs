//! [`RedisStore`]: sessions in Redis (standalone, Sentinel or Cluster), on the
//! [fred](https://docs.rs/fred) client.
//!
//! Layout: one Redis string per session, under `prefix` + the store key in hex (a
//! single key, so in a Cluster every session lives in one slot). The value is the
//! record's version, lifespan deadline and last activity (8 bytes each, big-endian)
//! followed by the sealed data; the idle deadline is the key's own expiry (`PXAT`),
//! so Redis drops expired sessions itself and a touch is one `PEXPIREAT` (and an
//! 8-byte `SETRANGE`).
//!
//! A user's session index is one hash under `prefix` + `user:` + the user tag in
//! hex: a field per session (the store key) holding `created,expires,indexed,
//! remember` in decimal. Each index command touches that one key, so in a Cluster
//! it never crosses slots; the key expires with the last of its sessions.
//!
//! Round trips: a load, an update, a create, a touch or a delete is one command
//! each (`EVALSHA`, `EVALSHA`, `SET NX PXAT`, `EVALSHA`, `DEL`). A request that
//! only reads costs one round trip; one that writes, or whose touch is due, one more.
//!
//! Needs Redis 7.0 or later (`PEXPIRETIME`), checked when connecting. TLS
//! (`rediss://`) is not supported yet and is refused rather than downgraded.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tower_sealed_sessions::StoreError> {
//! use tower_sealed_sessions::{Keys, RedisStore, SessionLayer};
//!
//! let store = RedisStore::connect("redis://127.0.0.1:6379/0").await?;
//! let layer = SessionLayer::new(store, Keys::generate());
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use fred::clients::Client;
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike, HashesInterface, KeysInterface};
use fred::types::config::{Config, ReconnectPolicy, Server, ServerConfig};
use fred::types::scripts::Script;
use fred::types::{Expiration, Key, SetOptions, Value};

use crate::clock::Timestamp;
use crate::config::{self, RedisSettings, RedisTopology};
use crate::record::{Deadlines, Record, StoreKey};
use crate::store::{Cas, SessionStore, StoreError};
use crate::users::{IndexEntry, UserTag};

/// Returns the value and its expiry time in one atomic step, or nil.
const LOAD: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('PEXPIRETIME', KEYS[1])}
";

/// Compare-and-set on the version prefix. ARGV: expected version (8 bytes), new
/// value (empty: delete the key), new expiry in Unix ms (0: none). Returns 1 when
/// done, nil when the key is gone, or the current value and expiry on a conflict.
const SWAP: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
if string.sub(v, 1, 8) ~= ARGV[1] then
  return {v, redis.call('PEXPIRETIME', KEYS[1])}
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
elseif ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
end
return 1
";

/// Moves the expiry if the version is still ARGV[1]. ARGV[2]: new expiry in Unix
/// ms (0: none); ARGV[3]: the last activity (8 bytes). Returns 1 when moved, 0 when
/// the record changed or is gone.
const TOUCH: &str = r"
if redis.call('GETRANGE', KEYS[1], 0, 7) ~= ARGV[1] then return 0 end
redis.call('SETRANGE', KEYS[1], 16, ARGV[3])
if ARGV[2] == '0' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
end
return 1
";

/// Upserts one entry of a user index (when ARGV[2] is given), drops the entries that
/// expired by ARGV[1] (Unix ms), sets the key to expire with its last entry, and
/// returns the remaining fields and values (nothing after an upsert). Entries are `created,expires,indexed,
/// remember` in decimal; an upsert keeps the later `expires` and the earlier
/// `indexed` (see `IndexEntry::merged`).
const INDEX: &str = r"
local now = tonumber(ARGV[1])
if ARGV[2] then
  local v = ARGV[3]
  local old = redis.call('HGET', KEYS[1], ARGV[2])
  if old then
    local _, oe, oi = string.match(old, '^(%d+),(%d+),(%d+),')
    local c, e, i, r = string.match(v, '^(%d+),(%d+),(%d+),(%d+)$')
    if oe and c then
      if tonumber(oe) > tonumber(e) then e = oe end
      if tonumber(oi) < tonumber(i) then i = oi end
      v = c .. ',' .. e .. ',' .. i .. ',' .. r
    end
  end
  redis.call('HSET', KEYS[1], ARGV[2], v)
end
local all = redis.call('HGETALL', KEYS[1])
local out = {}
local last, lastn = nil, -1
for i = 1, #all, 2 do
  local e = string.match(all[i + 1], '^%d+,(%d+),')
  local n = tonumber(e or '0')
  if n <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
    if n > lastn then last, lastn = e, n end
  end
end
if last then
  if lastn >= 9.2e18 then
    redis.call('PERSIST', KEYS[1])
  else
    redis.call('PEXPIREAT', KEYS[1], last)
  end
end
if ARGV[2] then return {} end
return out
";

/// Fails on a server without PEXPIRETIME (Redis before 7.0).
const PROBE: &str = r"return redis.call('PEXPIRETIME', KEYS[1])";

const HEADER_LEN: usize = 24;

/// A [`SessionStore`] in Redis.
///
/// Cheap to clone; clones share the connection. The client reconnects by itself
/// (exponential back-off up to 2 s) and, under Sentinel, follows the master after a
/// failover. While Redis cannot be reached every command fails after the configured
/// timeout (default 1 s), so requests get 503 promptly instead of hanging.
#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    prefix: String,
    timeout: Duration,
    load: Script,
    swap: Script,
    touch: Script,
    index: Script,
}

impl RedisStore {
    /// The key prefix when none is configured.
    pub const DEFAULT_PREFIX: &str = "session:";
    /// How long a command may take before the request gets 503, when not configured.
    pub const DEFAULT_TIMEOUT: Duration = config::DEFAULT_REDIS_TIMEOUT;

    /// Connects to the server a URL names, with the default prefix and timeout.
    ///
    /// Besides `redis://[user:password@]host:port/db`, fred's
    /// `redis-sentinel://host:port?sentinelServiceName=name&node=host2:port` and
    /// `redis-cluster://host:port?node=host2:port` schemes are accepted.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] for an invalid URL or when no connection can be made.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        refuse_tls(url)?;
        let config = Config::from_url(url).map_err(StoreError::backend)?;
        Self::start(
            config,
            Self::DEFAULT_PREFIX.to_owned(),
            Self::DEFAULT_TIMEOUT,
        )
        .await
    }

    /// Connects as the `store:` section of a configuration file describes.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] for invalid settings or when no connection can be
    /// made.
    pub async fn from_settings(settings: &RedisSettings) -> Result<Self, StoreError> {
        let mut config = match settings.topology().map_err(StoreError::backend)? {
            RedisTopology::Url(url) => {
                refuse_tls(url)?;
                Config::from_url(url).map_err(StoreError::backend)?
            }
            RedisTopology::Sentinel(sentinel) => Config {
                server: ServerConfig::Sentinel {
                    hosts: servers(&sentinel.nodes)?,
                    service_name: sentinel.master_name.clone(),
                    username: sentinel.username.clone(),
                    password: sentinel.password.clone(),
                },
                ..Config::default()
            },
            RedisTopology::Cluster(cluster) => Config {
                server: ServerConfig::new_clustered(
                    servers(&cluster.nodes)?
                        .into_iter()
                        .map(|s| (s.host.to_string(), s.port))
                        .collect(),
                ),
                ..Config::default()
            },
        };
        if settings.username.is_some() {
            config.username = settings.username.clone();
        }
        if settings.password.is_some() {
            config.password = settings.password.clone();
        }
        let prefix = settings
            .prefix
            .clone()
            .unwrap_or_else(|| Self::DEFAULT_PREFIX.to_owned());
        Self::start(config, prefix, settings.timeout()).await
    }

    async fn start(config: Config, prefix: String, timeout: Duration) -> Result<Self, StoreError> {
        if timeout.is_zero() {
            // fred reads a zero timeout as "none": requests would hang on a dead Redis.
            return Err(StoreError::backend(
                "the Redis timeout must be longer than 0",
            ));
        }
        let client = fred::types::Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = timeout)
            .with_connection_config(|c| {
                c.connection_timeout = timeout;
                c.internal_command_timeout = timeout;
                c.auto_client_setname = false;
                // No silent resend after a reconnect: a compare-and-set that ran
                // before the connection dropped would come back as a conflict or a
                // missing record, and be misread. A failed command is a 503.
                c.max_command_attempts = 1;
            })
            // max_attempts 0: keep trying for as long as the process lives.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build()
            .map_err(StoreError::backend)?;
        client.init().await.map_err(|e| fred_error(e, timeout))?;
        let store = RedisStore {
            client,
            prefix,
            timeout,
            load: Script::from_lua(LOAD),
            swap: Script::from_lua(SWAP),
            touch: Script::from_lua(TOUCH),
            index: Script::from_lua(INDEX),
        };
        if let Err(err) = store.prepare().await {
            let _ = store.client.quit().await;
            return Err(err);
        }
        Ok(store)
    }

    /// Checks the server's version and loads the scripts (on every node of a
    /// Cluster), so that first requests pay no NOSCRIPT round trip; a restarted
    /// server gets them again on demand.
    async fn prepare(&self) -> Result<(), StoreError> {
        let probe = Script::from_lua(PROBE);
        let key = format!("{}version-probe", self.prefix);
        if let Err(err) = probe
            .evalsha_with_reload::<Value, _, _>(&self.client, key, Vec::<Value>::new())
            .await
        {
            return Err(StoreError::backend(format!(
                "Redis 7.0 or later is needed (PEXPIRETIME): {err}"
            )));
        }
        for script in [&self.load, &self.swap, &self.touch, &self.index] {
            script.load(&self.client).await.map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// The Redis key a session's record is stored under.
    pub fn redis_key(&self, key: &StoreKey) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The Redis key a user's session index is stored under.
    pub fn redis_index_key(&self, user: &UserTag) -> String {
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

    fn err(&self, e: FredError) -> StoreError {
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
    ) -> Result<Cas, StoreError> {
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
            Value::Integer(1) => Ok(Cas::Done),
            other => Ok(match decode_reply(other)? {
                None => Cas::Missing,
                Some(current) => Cas::Conflict(current),
            }),
        }
    }
}

/// TLS is not built in yet: refuse a TLS URL rather than send credentials in clear.
fn refuse_tls(url: &str) -> Result<(), StoreError> {
    let scheme = url.split("://").next().unwrap_or("");
    if matches!(
        scheme,
        "rediss" | "valkeys" | "rediss-cluster" | "rediss-sentinel"
    ) {
        return Err(StoreError::backend(format!(
            "{scheme}:// asks for TLS, which this build does not support yet; use a TLS \
             tunnel to a redis:// address"
        )));
    }
    Ok(())
}

fn servers(nodes: &[String]) -> Result<Vec<Server>, StoreError> {
    if nodes.is_empty() {
        return Err(StoreError::backend("no Redis nodes are listed"));
    }
    nodes
        .iter()
        .map(|node| {
            let (host, port) = node
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                .ok_or_else(|| {
                    StoreError::backend(format!("Redis node {node:?} is not host:port"))
                })?;
            // `[::1]:6379`: the brackets belong to the notation, not the address.
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Ok(Server::new(host, port))
        })
        .collect()
}

fn fred_error(e: FredError, timeout: Duration) -> StoreError {
    match e.kind() {
        ErrorKind::Timeout => StoreError::Timeout(timeout),
        _ => StoreError::backend(e),
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

fn encode(record: &Record) -> Bytes {
    let mut out = Vec::with_capacity(HEADER_LEN + record.data.len());
    out.extend_from_slice(&record.version.to_be_bytes());
    out.extend_from_slice(&record.deadlines.lifespan.unix_millis().to_be_bytes());
    out.extend_from_slice(&record.deadlines.active.unix_millis().to_be_bytes());
    out.extend_from_slice(&record.data);
    Bytes::from(out)
}

/// Decodes a value and its `PEXPIRETIME` (-1: no expiry) into a record.
fn decode(value: Value, expire_time: Value) -> Result<Record, StoreError> {
    let bytes = value
        .into_bytes()
        .filter(|b| b.len() >= HEADER_LEN)
        .ok_or_else(|| StoreError::Corrupt("a session value is shorter than its header".into()))?;
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let version = u64_at(0);
    let lifespan = Timestamp::from_unix_millis(u64_at(8));
    let active = Timestamp::from_unix_millis(u64_at(16));
    let idle = match expire_time.as_i64() {
        Some(ms) if ms >= 0 => Timestamp::from_unix_millis(ms as u64),
        Some(-1) => Timestamp::NEVER,
        _ => {
            return Err(StoreError::Corrupt(
                "a session key has no readable expiry".into(),
            ));
        }
    };
    Ok(Record::new(
        version,
        Deadlines {
            idle: idle.min(lifespan),
            lifespan,
            active,
        },
        bytes.slice(HEADER_LEN..),
    ))
}

fn encode_entry(entry: &IndexEntry) -> String {
    format!(
        "{},{},{},{}",
        entry.created_at.unix_millis(),
        entry.expires_at.unix_millis(),
        entry.indexed_at.unix_millis(),
        u8::from(entry.remember_me)
    )
}

/// Decodes the index script's reply: store keys and their entries, alternating.
fn decode_index(reply: Value) -> Result<Vec<IndexEntry>, StoreError> {
    let corrupt = || StoreError::Corrupt("a user index entry is malformed".into());
    let parts = match reply {
        Value::Array(parts) => parts,
        Value::Null => Vec::new(),
        other => {
            return Err(StoreError::Corrupt(format!(
                "unexpected reply from the index script: {other:?}"
            )));
        }
    };
    let mut entries = Vec::with_capacity(parts.len() / 2);
    let mut parts = parts.into_iter();
    while let (Some(field), Some(value)) = (parts.next(), parts.next()) {
        let key: [u8; 32] = field
            .into_bytes()
            .and_then(|b| <[u8; 32]>::try_from(b.as_ref()).ok())
            .ok_or_else(corrupt)?;
        let text = value.into_string().ok_or_else(corrupt)?;
        let mut fields = text.split(',').map(str::parse::<u64>);
        let mut next = || fields.next().and_then(Result::ok).ok_or_else(corrupt);
        let (created, expires, indexed, remember) = (next()?, next()?, next()?, next()?);
        entries.push(IndexEntry::new(
            StoreKey::from_bytes(key),
            Timestamp::from_unix_millis(created),
            Timestamp::from_unix_millis(expires),
            Timestamp::from_unix_millis(indexed),
            remember == 1,
        ));
    }
    Ok(entries)
}

/// A script's reply: nil (no record) or `{value, expiry}`.
fn decode_reply(reply: Value) -> Result<Option<Record>, StoreError> {
    match reply {
        Value::Null => Ok(None),
        Value::Array(mut parts) if parts.len() == 2 => {
            let expire_time = parts.pop().unwrap_or(Value::Null);
            let value = parts.pop().unwrap_or(Value::Null);
            decode(value, expire_time).map(Some)
        }
        other => Err(StoreError::Corrupt(format!(
            "unexpected reply from the session script: {other:?}"
        ))),
    }
}

/// The `PXAT` for a record, or `None` when it never expires.
fn expire_at(deadlines: &Deadlines) -> Option<i64> {
    let at = deadlines.expires_at();
    (!at.is_never()).then(|| i64::try_from(at.unix_millis()).unwrap_or(i64::MAX))
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
    ) -> impl Future<Output = Result<Cas, StoreError>> + Send {
        let expire = expire_at(&record.deadlines).unwrap_or(0);
        self.swap(key, expected_version, encode(record), expire)
    }

    fn delete_version(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> impl Future<Output = Result<Cas, StoreError>> + Send {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let deadlines = Deadlines {
            idle: Timestamp::from_unix_millis(1_000),
            lifespan: Timestamp::from_unix_millis(5_000),
            active: Timestamp::from_unix_millis(400),
        };
        Record::new(7, deadlines, Bytes::from_static(b"sealed"))
    }

    #[test]
    fn values_round_trip_with_the_expiry_as_idle_deadline() {
        let encoded = encode(&record());
        assert_eq!(encoded.len(), HEADER_LEN + 6);
        let decoded = decode(Value::Bytes(encoded), Value::Integer(1_000)).unwrap();
        assert_eq!(decoded, record());
        let never = decode(Value::Bytes(encode(&record())), Value::Integer(-1)).unwrap();
        assert_eq!(
            never.deadlines.idle, never.deadlines.lifespan,
            "capped at the lifespan"
        );
    }

    #[test]
    fn garbage_replies_are_errors_not_panics() {
        assert!(
            decode(
                Value::Bytes(Bytes::from_static(b"short")),
                Value::Integer(1)
            )
            .is_err()
        );
        assert!(decode(Value::Integer(5), Value::Integer(1)).is_err());
        assert!(decode(Value::Bytes(encode(&record())), Value::Integer(-2)).is_err());
        assert!(decode_reply(Value::Integer(3)).is_err());
        assert!(decode_reply(Value::Array(vec![Value::Null])).is_err());
        assert_eq!(decode_reply(Value::Null).unwrap(), None);
    }

    #[test]
    fn expiry_is_the_earlier_deadline_and_never_means_none() {
        assert_eq!(expire_at(&record().deadlines), Some(1_000));
        let never = Deadlines {
            idle: Timestamp::NEVER,
            lifespan: Timestamp::NEVER,
            active: Timestamp::from_unix_millis(0),
        };
        assert_eq!(expire_at(&never), None);
    }
}
