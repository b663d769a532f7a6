"""The Lua scripts: each a read-check-write that must be atomic across traders.

Redis runs a script alone, so no other trader's command lands between its reads and
writes. redis-py sends them with ``EVALSHA`` and reloads them when the server forgot them
(after a restart). Every script tolerates a key of the wrong type or holding garbage (a
stray writer, an older layout): it treats it as no series, and replaces it when it
publishes, so one bad value never blocks sharing for longer than one fetch.
"""

from __future__ import annotations

# A series key's header, read without copying the whole value: a stored series begins
# with 'SLK1' and its close time (little-endian float64), see codec.py.
_HEADER_CLOSE = """
local function header_close(key)
  if redis.call('TYPE', key)['ok'] ~= 'string' then return nil end
  local head = redis.call('GETRANGE', key, 0, 15)
  if #head ~= 16 or string.sub(head, 1, 4) ~= 'SLK1' then return nil end
  return struct.unpack('<d', head, 5)
end
"""

#: KEYS: series, lease. ARGV: close time wanted, token, lease ms.
#: The series if it closes exactly at the time wanted: ``{1, value}``; else the lease if
#: nobody holds it: ``{2, ''}``; else ``{0, ms the lease still lives}``.
CLAIM = (
    _HEADER_CLOSE
    + """
if header_close(KEYS[1]) == tonumber(ARGV[1]) then
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
#: it (it may have expired and be another trader's now). Returns 1 if stored.
PUBLISH = (
    _HEADER_CLOSE
    + """
local stored = 0
if ARGV[2] ~= '' then
  local current = header_close(KEYS[1])
  local new = tonumber(ARGV[1])
  if current == nil or current < new or (current == new and ARGV[4] == '1') then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    stored = 1
  end
end
if ARGV[5] ~= '' and redis.call('TYPE', KEYS[2])['ok'] == 'string'
    and redis.call('GET', KEYS[2]) == ARGV[5] then
  redis.call('DEL', KEYS[2])
end
return stored
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
#: differ share one budget. Returns 0 when granted, else the ms until it would be. A
#: forced grant may take the bucket below zero: a request that went anyway still counts,
#: and the next ones wait for it. A weight above the burst is granted once the bucket is
#: full, for the same reason.
TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local weight = tonumber(ARGV[3])
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' and kind ~= 'none' then redis.call('DEL', KEYS[1]) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
local updated = tonumber(redis.call('HGET', KEYS[1], 'updated'))
if tokens == nil or updated == nil or tokens ~= tokens then
  tokens = burst
  updated = now
end
if now > updated then
  tokens = math.min(burst, tokens + (now - updated) * rate)
end
updated = now  -- also when the server's clock went back: refill from here on
local need = math.min(weight, burst)
local wait = 0
if tokens >= need or ARGV[4] == '1' then
  tokens = tokens - weight
else
  wait = math.ceil((need - tokens) / rate)
  if wait < 1 then wait = 1 end
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'updated', string.format('%.17g', updated))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 60000)
return wait
"""
