"""The Lua scripts: each a read-check-write that must be atomic across traders.

Redis runs a script alone, so no other trader's command lands between its reads and
writes. redis-py sends them with ``EVALSHA`` and reloads them when the server forgot them
(after a restart). Every script tolerates a key of the wrong type or holding garbage (a
stray writer, an older layout): it treats it as no series, and replaces it when it
publishes, so one bad value never blocks sharing for longer than one fetch.
"""

from __future__ import annotations

#: The longest wait TAKE answers, in ms: the largest ``max_pace_wait_ms`` the settings
#: allow. A longer one is never slept (``pace`` gives up at ``max_pace_wait_ms``), and an
#: unbounded one overflowed Redis's integer reply into a negative: read as a grant.
MAX_WAIT_MS = 600_000
#: How far TAKE trusts the budget hash, in ms: a debt of more than this long's budget, or
#: a stamp this far after the server's clock, is garbage (no trader writes it).
HORIZON_MS = 86_400_000

# A series key's header, read without copying the whole value: a stored series begins
# with 'SLK1' and its close time (little-endian float64), see codec.py.
_HEADER_CLOSE = """
local function header_close(key)
  if redis.call('TYPE', key)['ok'] ~= 'string' then return nil end
  local head = redis.call('GETRANGE', key, 0, 15)
  if #head ~= 16 or string.sub(head, 1, 4) ~= 'SLK1' then return nil end
  return struct.unpack('<d', head, 5)
end
local function finite(x)
  return x == x and x > -math.huge and x < math.huge  -- NaN fails every comparison
end
"""

#: KEYS: series, lease. ARGV: close time wanted, token, lease ms.
#: The series if it closes exactly at the time wanted: ``{1, value}``; else the lease if
#: nobody holds it: ``{2, ''}``; else ``{0, ms the lease still lives}``. A header whose
#: close is not a finite number is never served, whatever was asked.
CLAIM = (
    _HEADER_CLOSE
    + """
local current = header_close(KEYS[1])
if current ~= nil and finite(current) and current == tonumber(ARGV[1]) then
  return {1, redis.call('GET', KEYS[1])}
end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  return {2, ''}
end
return {0, redis.call('PTTL', KEYS[2])}
"""
)

#: KEYS: series, lease. ARGV: close time of the value, value ('' : none), ttl ms,
#: replace ('1': also over a series of the same close time), token ('' : no lease).
#: Stores the value unless the key holds a series at least as new (a trader whose fetch
#: was slow must not overwrite a newer one), then deletes the lease if it still holds
#: it (it may have expired and be another trader's now). Returns ``{stored, garbage}``:
#: stored 1 if stored; garbage the header's close as text when the key held a header no
#: trader could have written, else ''.
#:
#: Such a header (its close not a finite number, or later than both the server's clock
#: and the close being published by more than the ttl: two candles, at least a minute)
#: would otherwise refuse every publish for good, as "newer", and its key would keep no
#: TTL. Traders' clocks agree within far less (NTP), and a simulated clock ahead of the
#: server's publishes closes near its own: neither is taken for garbage.
PUBLISH = (
    _HEADER_CLOSE
    + """
local stored, garbage = 0, ''
local new = tonumber(ARGV[1])
if ARGV[2] ~= '' and new ~= nil and finite(new) then
  local current = header_close(KEYS[1])
  if current ~= nil then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
    if not finite(current) or current > math.max(now, new) + tonumber(ARGV[3]) / 1000 then
      garbage = string.format('%.17g', current)
      current = nil
    end
  end
  if current == nil or current < new or (current == new and ARGV[4] == '1') then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    stored = 1
  end
end
if ARGV[5] ~= '' and redis.call('TYPE', KEYS[2])['ok'] == 'string'
    and redis.call('GET', KEYS[2]) == ARGV[5] then
  redis.call('DEL', KEYS[2])
end
return {stored, garbage}
"""
)

#: KEYS: lease. ARGV: token, lease ms. Extends the lease if the token still holds it.
RENEW = """
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

#: KEYS: bucket. ARGV: tokens per ms, burst, weight, force ('1': grant even if short).
#: A token bucket on the server's clock (``TIME``), so traders on machines whose clocks
#: differ share one budget. Returns ``{wait, reset}``: wait 0 when granted, else the ms
#: until it would be (1 to ``MAX_WAIT_MS``); reset 1 when the bucket held garbage. A
#: forced grant may take the bucket below zero: a request that went anyway still counts,
#: and the next ones wait for it. A weight above the burst is granted once the bucket is
#: full, for the same reason.
#:
#: Garbage (another type, a field missing, not a finite number, a debt of more than
#: ``HORIZON_MS``'s budget, a stamp before 1970 or ``HORIZON_MS`` after now) resets the
#: bucket to empty, not full: whatever the traders took before the garbage came, the
#: reset grants nothing at once, so no window sees more than its budget and the burst.
#: No bucket at all is full: it expires only after a quiet spell long enough to fill it.
TAKE = f"""
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local weight = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local kind = redis.call('TYPE', KEYS[1])['ok']
local tokens, updated, reset = burst, now, 0
if kind == 'hash' then
  tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
  updated = tonumber(redis.call('HGET', KEYS[1], 'updated'))
  -- Every comparison with NaN is false, so NaN fails this too.
  local sane = tokens ~= nil and updated ~= nil
    and tokens >= -(burst + rate * {HORIZON_MS}) and tokens < math.huge
    and updated >= 0 and updated <= now + {HORIZON_MS}
  if not sane then tokens, updated, reset = 0, now, 1 end
elseif kind ~= 'none' then
  redis.call('DEL', KEYS[1])
  tokens, updated, reset = 0, now, 1
end
tokens = math.min(tokens, burst)  -- a trader with a larger burst wrote it
if now > updated then
  tokens = math.min(burst, tokens + (now - updated) * rate)
end
updated = now  -- also when the server's clock went back: refill from here on
local need = math.min(weight, burst)
local wait = 0
if tokens >= need or ARGV[4] == '1' then
  tokens = tokens - weight
else
  wait = math.min(math.max(math.ceil((need - tokens) / rate), 1), {MAX_WAIT_MS})
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'updated', string.format('%.17g', updated))
-- Capped: an uncapped TTL of a very slow rate is not an integer Redis takes (an error at
-- every take). A bucket that fills slower than that is full after a day of quiet.
redis.call('PEXPIRE', KEYS[1], math.min(math.ceil(burst / rate), {HORIZON_MS}) + 60000)
return {{wait, reset}}
"""

#: KEYS: traders. ARGV: this trader's id, how long it counts as present (ms).
#: Marks the trader present until then, on the server's clock, forgets those whose time
#: has passed, and answers how many traders are present (this one included). A key of
#: another type is garbage: replaced. The key lives as long as its longest presence.
PRESENCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + tonumber(ARGV[2])
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'zset' and kind ~= 'none' then redis.call('DEL', KEYS[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], until_ms, ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('ZCARD', KEYS[1])
"""

#: KEYS: traders. ARGV: this trader's id. It is gone (it closed).
LEAVE = """
if redis.call('TYPE', KEYS[1])['ok'] == 'zset' then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""
