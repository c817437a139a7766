//! The Lua scripts that make each session operation one atomic round trip.
//!
//! Every write is safe to run twice: the client may send a command again after a
//! connection dropped, without knowing whether the first one ran (a Cluster client
//! does, to follow a failover). So a create or an update finding its own write id
//! in the stored value (formats 2 and 3 carry one: in Lua's 1-based positions,
//! bytes 26 to 41 and 34 to 49) reports success, and
//! a compare-and-delete leaves a tombstone naming its operation for a minute, so
//! that its own second run reports success rather than "missing". Values are read
//! in both formats (see `codec`).
//!
//! A script that writes a record ends with an `EXISTS` of its key: under client
//! tracking (a store with a cache) a write the connection makes itself ends the
//! server's note that the connection holds the key, and this read makes it again,
//! so that the next change by anyone else is still reported (see `tracking`).

/// Returns the value and its expiry time in one atomic step, or nil (no key, or a
/// tombstone). Only for values in a format without the idle deadline (1 and 2): a
/// format 3 value is read with a plain `GET`.
pub(super) const LOAD: &str = r"
local v = redis.call('GET', KEYS[1])
if not v or string.byte(v, 1) == 255 then return false end
return {v, redis.call('PEXPIRETIME', KEYS[1])}
";

/// Stores ARGV[1] unless the key holds a record (a tombstone does not count).
/// ARGV[2]: expiry in Unix ms (0: none). Returns 1 when stored (or already stored
/// by this very write), 0 when the key is taken.
pub(super) const CREATE: &str = r"
local function wid(s)
  local m = string.byte(s, 1)
  if m == 3 then return string.sub(s, 34, 49) elseif m == 2 then return string.sub(s, 26, 41) end
  return nil
end
local v = redis.call('GET', KEYS[1])
if v and string.byte(v, 1) ~= 255 then
  local mine = wid(v)
  if mine and mine == wid(ARGV[1]) then return 1 end
  return 0
end
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
end
redis.call('EXISTS', KEYS[1])
return 1
";

/// Compare-and-set on the version. ARGV: expected version (8 bytes), new value,
/// new expiry in Unix ms (0: none). Returns 1 when done (or already done by this
/// very write), nil when the key is gone, or the current value and expiry on a
/// conflict.
pub(super) const SWAP: &str = r"
local function wid(s)
  local m = string.byte(s, 1)
  if m == 3 then return string.sub(s, 34, 49) elseif m == 2 then return string.sub(s, 26, 41) end
  return nil
end
local v = redis.call('GET', KEYS[1])
if not v or string.byte(v, 1) == 255 then return false end
local m, version = string.byte(v, 1), nil
if m == 2 or m == 3 then
  local mine = wid(v)
  if mine and mine == wid(ARGV[2]) then return 1 end
  version = string.sub(v, 2, 9)
elseif m == 0 then
  version = string.sub(v, 1, 8)
end
if version ~= ARGV[1] then
  return {v, redis.call('PEXPIRETIME', KEYS[1])}
end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
end
redis.call('EXISTS', KEYS[1])
return 1
";

/// Compare-and-delete. ARGV: expected version (8 bytes), the tombstone to leave
/// (byte 255 and an operation id). Returns 1 when deleted (or already deleted by
/// this very operation), nil when the key is gone, or the current value and
/// expiry on a conflict.
pub(super) const DELETE_VERSION: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
if v == ARGV[2] then return 1 end
local m, version = string.byte(v, 1), nil
if m == 255 then return false end
if m == 2 or m == 3 then version = string.sub(v, 2, 9) elseif m == 0 then version = string.sub(v, 1, 8) end
if version ~= ARGV[1] then
  return {v, redis.call('PEXPIRETIME', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', 60000)
return 1
";

/// Moves the expiry if the version is still ARGV[1]. ARGV[2]: new expiry in Unix
/// ms (0: none); ARGV[3] and ARGV[4]: the last activity and the idle deadline (8
/// bytes each); ARGV[5]: the format written (`3` turns a format 2 value into
/// format 3, so that its next read is a plain `GET`). Returns 1 when moved, 0 when
/// the record changed or is gone. Running it twice writes the same twice.
pub(super) const TOUCH: &str = r"
local head = redis.call('GETRANGE', KEYS[1], 0, 8)
local m, version = string.byte(head, 1), nil
if m == 2 or m == 3 then version = string.sub(head, 2, 9)
elseif m == 0 then version = string.sub(head, 1, 8)
else return 0 end
if version ~= ARGV[1] then return 0 end
if m == 3 then
  redis.call('SETRANGE', KEYS[1], 17, ARGV[3] .. ARGV[4])
elseif m == 2 and ARGV[5] == '3' then
  local v = redis.call('GET', KEYS[1])
  redis.call('SET', KEYS[1], '\3' .. string.sub(v, 2, 17) .. ARGV[3] .. ARGV[4] .. string.sub(v, 26), 'KEEPTTL')
elseif m == 2 then
  redis.call('SETRANGE', KEYS[1], 17, ARGV[3])
else
  redis.call('SETRANGE', KEYS[1], 16, ARGV[3])
end
if ARGV[2] == '0' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
end
redis.call('EXISTS', KEYS[1])
return 1
";

/// In every index script, an entry's expiry is its second number, the first
/// between two commas (a malformed entry reads as expired, and goes).
///
/// Upserts one entry of a user index, in O(1) whatever the index holds. ARGV:
/// the store key, the entry (`2;created,expires,indexed,remember` in decimal;
/// format 1, read only, has no `2;`), and the time expired entries are dropped by
/// (Unix ms), and how many random entries to look at. An upsert keeps the later
/// `expires` and the earlier `indexed` (see `IndexEntry::merged`), so running it
/// twice changes nothing. The key expires with its longest-lived entry: an
/// entry's expiry only grows, so that is the later of the key's own and this
/// entry's. It then looks at ARGV[4] random entries (`HRANDFIELD`) and drops the
/// expired ones, so that an index shrinks without a listing.
pub(super) const INDEX_ADD: &str = r"
local function expiry(s)
  return tonumber(string.match(s, ',(%d+),') or '0')
end
local now = tonumber(ARGV[3])
local existed = redis.call('EXISTS', KEYS[1]) == 1
local v = ARGV[2]
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local function fields(s)
    s = string.match(s, '^2;(.*)$') or s
    return string.match(s, '^(%d+),(%d+),(%d+),(%d+)$')
  end
  local _, oe, oi = fields(old)
  local c, e, i, r = fields(v)
  if oe and c then
    if tonumber(oe) > tonumber(e) then e = oe end
    if tonumber(oi) < tonumber(i) then i = oi end
    v = '2;' .. c .. ',' .. e .. ',' .. i .. ',' .. r
  end
end
redis.call('HSET', KEYS[1], ARGV[1], v)
local n = expiry(v)
if n >= 9.2e18 then
  redis.call('PERSIST', KEYS[1])
elseif not existed then
  redis.call('PEXPIREAT', KEYS[1], n)
else
  local at = redis.call('PEXPIRETIME', KEYS[1])
  if at >= 0 and at < n then redis.call('PEXPIREAT', KEYS[1], n) end
end
local some = redis.call('HRANDFIELD', KEYS[1], ARGV[4], 'WITHVALUES')
for i = 1, #some, 2 do
  if expiry(some[i + 1]) <= now then redis.call('HDEL', KEYS[1], some[i]) end
end
return 1
";

/// Drops the expired entries of a user index (ARGV[1]: now, Unix ms) and returns
/// the others, fields and values alternating: a listing, O(entries).
pub(super) const INDEX_LIST: &str = r"
local function expiry(s)
  return tonumber(string.match(s, ',(%d+),') or '0')
end
local now = tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  if expiry(all[i + 1]) <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
return out
";

/// Up to ARGV[2] distinct random entries of a user index (`HRANDFIELD`), the
/// expired ones among them dropped (ARGV[1]: now, Unix ms): O(ARGV[2]) whatever
/// the index holds. Returns how many entries the index holds then (`HLEN`,
/// expired ones not met included), and the entries, fields and values
/// alternating.
pub(super) const INDEX_SAMPLE: &str = r"
local function expiry(s)
  return tonumber(string.match(s, ',(%d+),') or '0')
end
local now = tonumber(ARGV[1])
local some = redis.call('HRANDFIELD', KEYS[1], ARGV[2], 'WITHVALUES')
local out = {}
for i = 1, #some, 2 do
  if expiry(some[i + 1]) <= now then
    redis.call('HDEL', KEYS[1], some[i])
  else
    out[#out + 1] = some[i]
    out[#out + 1] = some[i + 1]
  end
end
return {redis.call('HLEN', KEYS[1]), out}
";

/// Fails on a server without PEXPIRETIME (Redis before 7.0).
pub(super) const PROBE: &str = r"return redis.call('PEXPIRETIME', KEYS[1])";

/// Every script the store runs, loaded into each server it connects to, so that
/// first requests pay no `NOSCRIPT` round trip (a server that lost them, after a
/// restart, gets them again on demand).
pub(super) const ALL: [&str; 8] = [
    LOAD,
    CREATE,
    SWAP,
    DELETE_VERSION,
    TOUCH,
    INDEX_ADD,
    INDEX_LIST,
    INDEX_SAMPLE,
];

/// The scripts on a real server (a `redis-server` of its own, on a free loopback
/// port): every write run twice, as a client may send it again after a dropped
/// connection, reports success the second time, in both written formats; a
/// rival's write is still refused.
#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use redis::aio::MultiplexedConnection;
    use redis::{Script, Value};

    use super::*;
    use crate::clock::Timestamp;
    use crate::record::{Deadlines, Record};
    use crate::store::redis::codec::{RECORD_V2, RECORD_V3, encode, tombstone};

    /// A `redis-server` stopped (by its process id) when dropped.
    struct Server(Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    async fn connect() -> Option<(Server, MultiplexedConnection)> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let spawned = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .spawn();
        let server = match spawned {
            Ok(child) => Server(child),
            Err(err) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI is set but redis-server cannot be started: {err}"
                );
                eprintln!("skipped: redis-server cannot be started: {err}");
                return None;
            }
        };
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
        // Bounded: 100 tries, 50 ms apart.
        for _ in 0..100 {
            if let Ok(conn) = client.get_multiplexed_async_connection().await {
                return Some((server, conn));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {port} did not answer within 5 s");
    }

    fn record(version: u64, data: &'static [u8]) -> Record {
        let deadlines = Deadlines {
            idle: Timestamp::from_unix_millis(4_000_000_000_000),
            lifespan: Timestamp::from_unix_millis(4_100_000_000_000),
            active: Timestamp::from_unix_millis(1),
        };
        Record::new(version, deadlines, bytes::Bytes::from_static(data))
    }

    async fn run(conn: &mut MultiplexedConnection, body: &str, key: &str, args: &[&[u8]]) -> Value {
        let script = Script::new(body);
        let mut invocation = script.key(key);
        for arg in args {
            invocation.arg(*arg);
        }
        invocation.invoke_async(conn).await.unwrap()
    }

    #[tokio::test]
    async fn every_write_run_twice_reports_success_and_a_rival_is_refused() {
        let Some((_server, mut conn)) = connect().await else {
            return;
        };
        for format in [RECORD_V2, RECORD_V3] {
            let key = format!("session:{format}");
            let expiry = b"4000000000000";
            let first = encode(&record(1, b"one"), &[1; 16], format);
            let rival = encode(&record(1, b"two"), &[2; 16], format);
            assert_eq!(
                run(&mut conn, CREATE, &key, &[&first, expiry]).await,
                Value::Int(1)
            );
            assert_eq!(
                run(&mut conn, CREATE, &key, &[&first, expiry]).await,
                Value::Int(1),
                "format {format}: the same create again is its own"
            );
            assert_eq!(
                run(&mut conn, CREATE, &key, &[&rival, expiry]).await,
                Value::Int(0),
                "format {format}: another create finds the key taken"
            );

            let second = encode(&record(2, b"three"), &[3; 16], format);
            let v1 = 1u64.to_be_bytes();
            assert_eq!(
                run(&mut conn, SWAP, &key, &[&v1, &second, expiry]).await,
                Value::Int(1)
            );
            assert_eq!(
                run(&mut conn, SWAP, &key, &[&v1, &second, expiry]).await,
                Value::Int(1),
                "format {format}: the same update again is its own"
            );
            let late = encode(&record(2, b"four"), &[4; 16], format);
            assert!(
                matches!(
                    run(&mut conn, SWAP, &key, &[&v1, &late, expiry]).await,
                    Value::Array(_)
                ),
                "format {format}: a rival on the old version gets the current record"
            );

            let v2 = 2u64.to_be_bytes();
            let idle = 4_050_000_000_000u64.to_be_bytes();
            let active = 7u64.to_be_bytes();
            let touched = run(
                &mut conn,
                TOUCH,
                &key,
                &[&v2, b"4050000000000", &active, &idle, &[b'0' + format]],
            )
            .await;
            assert_eq!(touched, Value::Int(1));
            let stored: Vec<u8> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(stored[0], format, "a touch keeps the format written");
            assert_eq!(&stored[17..25], &active, "the last activity moved");
            if format == RECORD_V3 {
                assert_eq!(&stored[25..33], &idle, "and the idle deadline with it");
            }
            assert_eq!(
                run(&mut conn, TOUCH, &key, &[&v1, b"1", &active, &idle, b"3"]).await,
                Value::Int(0),
                "a stale touch does nothing"
            );

            let stone = tombstone(&[9; 16]);
            assert_eq!(
                run(&mut conn, DELETE_VERSION, &key, &[&v2, &stone]).await,
                Value::Int(1)
            );
            assert_eq!(
                run(&mut conn, DELETE_VERSION, &key, &[&v2, &stone]).await,
                Value::Int(1),
                "format {format}: the same delete again is its own"
            );
            assert_eq!(
                run(&mut conn, LOAD, &key, &[]).await,
                Value::Nil,
                "a tombstone reads as nothing"
            );
            let other = tombstone(&[8; 16]);
            assert_eq!(
                run(&mut conn, DELETE_VERSION, &key, &[&v2, &other]).await,
                Value::Nil,
                "another delete finds nothing"
            );
            let _: i64 = redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
}
