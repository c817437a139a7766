//! The Lua scripts that make each session operation one atomic round trip.

/// Returns the value and its expiry time in one atomic step, or nil.
pub(super) const LOAD: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('PEXPIRETIME', KEYS[1])}
";

/// Compare-and-set on the version prefix. ARGV: expected version (8 bytes), new
/// value (empty: delete the key), new expiry in Unix ms (0: none). Returns 1 when
/// done, nil when the key is gone, or the current value and expiry on a conflict.
pub(super) const SWAP: &str = r"
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
pub(super) const TOUCH: &str = r"
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
pub(super) const INDEX: &str = r"
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
pub(super) const PROBE: &str = r"return redis.call('PEXPIRETIME', KEYS[1])";
