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
return 1
";

/// Upserts one entry of a user index (when ARGV[2] is given), drops the entries
/// that expired by ARGV[1] (Unix ms), sets the key to expire with its last entry,
/// and returns the remaining fields and values (nothing after an upsert). Entries
/// are `2;created,expires,indexed,remember` in decimal (format 1: no `2;`); an
/// upsert keeps the later `expires` and the earlier `indexed` (see
/// `IndexEntry::merged`), so running it twice changes nothing.
pub(super) const INDEX: &str = r"
local function fields(s)
  s = string.match(s, '^2;(.*)$') or s
  return string.match(s, '^(%d+),(%d+),(%d+),(%d+)$')
end
local now = tonumber(ARGV[1])
if ARGV[2] then
  local v = ARGV[3]
  local old = redis.call('HGET', KEYS[1], ARGV[2])
  if old then
    local _, oe, oi = fields(old)
    local c, e, i, r = fields(v)
    if oe and c then
      if tonumber(oe) > tonumber(e) then e = oe end
      if tonumber(oi) < tonumber(i) then i = oi end
      v = '2;' .. c .. ',' .. e .. ',' .. i .. ',' .. r
    end
  end
  redis.call('HSET', KEYS[1], ARGV[2], v)
end
local all = redis.call('HGETALL', KEYS[1])
local out = {}
local last, lastn = nil, -1
for i = 1, #all, 2 do
  local _, e = fields(all[i + 1])
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
pub(super) const PROBE: &str = r"return redis.call('PEXPIRETIME', KEYS[1])";

/// Every script the store runs, loaded into each server it connects to, so that
/// first requests pay no `NOSCRIPT` round trip (a server that lost them, after a
/// restart, gets them again on demand).
pub(super) const ALL: [&str; 6] = [LOAD, CREATE, SWAP, DELETE_VERSION, TOUCH, INDEX];
