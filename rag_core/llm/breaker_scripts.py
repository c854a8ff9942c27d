"""The circuit breaker's two Lua scripts: every state transition is atomic inside Redis.

:data:`ACQUIRE_LUA` admits a call (closed), refuses it (open) or hands out one of the
half-open probe slots; :data:`RECORD_LUA` records an outcome in the per-second buckets of the
window and opens or closes the breaker. The semantics they implement, the key layout and why
time is an argument rather than Redis' ``TIME`` are described in :mod:`rag_core.llm.breaker`.
Thresholds arrive in integer parts per million (see ``_PPM`` there), so that no floating
point rounding decides whether a breaker trips. A probe's verdict (``probe_succeeded``,
``probe_failed``) returns when the open period it ends began (``opened_at``), so that the
one process that ended it can count its length.
"""

from __future__ import annotations

__all__ = ["ACQUIRE_LUA", "RECORD_LUA"]

ACQUIRE_LUA = """
-- KEYS: state, probes. ARGV: now, probe_lease_s, half_open_max_calls, token
local now = tonumber(ARGV[1])
local st = redis.call('HMGET', KEYS[1], 'state', 'open_until')
if st[1] ~= 'open' then
  return {'closed', '0'}
end
local open_until = tonumber(st[2]) or 0
if now < open_until then
  return {'open', string.format('%.17g', open_until - now)}
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[2], string.format('%.17g', now + tonumber(ARGV[2])), ARGV[4])
  return {'half_open', '0'}
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
return {'probing', string.format('%.17g', tonumber(first[2]) - now)}
"""

RECORD_LUA = """
-- KEYS: state, window, probes.
-- ARGV: now, ok (1|0), probe token or '', window_s, minimum_calls, threshold_ppm, open_s,
--       window_ttl_s
local now = tonumber(ARGV[1])
local ok = ARGV[2] == '1'
local token = ARGV[3]
local open_s = tonumber(ARGV[7])
local function fmt(x) return string.format('%.17g', x) end
local st = redis.call('HMGET', KEYS[1], 'state', 'open_until', 'opened_at')
local function trip(reason)
  redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', fmt(now + open_s),
             'opened_at', fmt(now), 'reason', reason)
  redis.call('HINCRBY', KEYS[1], 'trips', 1)
  redis.call('DEL', KEYS[2], KEYS[3])
end
if st[1] == 'open' then
  if token == '' then
    return {'open', 'ignored', '0', '0'}
  end
  redis.call('ZREM', KEYS[3], token)
  if now < (tonumber(st[2]) or 0) then
    -- another probe already re-opened the breaker: this late outcome decides nothing
    return {'open', 'ignored', '0', '0'}
  end
  local opened_at = st[3] or '0'
  if ok then
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
    return {'closed', 'probe_succeeded', opened_at, '0'}
  end
  trip('probe failed')
  return {'open', 'probe_failed', opened_at, '0'}
end
local window_s = tonumber(ARGV[4])
local sec = math.floor(now)
redis.call('HINCRBY', KEYS[2], 't:' .. sec, 1)
if not ok then
  redis.call('HINCRBY', KEYS[2], 'f:' .. sec, 1)
end
local oldest = sec - window_s + 1
local all = redis.call('HGETALL', KEYS[2])
local total, fails, stale = 0, 0, {}
for i = 1, #all, 2 do
  local field = all[i]
  local n = tonumber(all[i + 1])
  if tonumber(string.sub(field, 3)) < oldest then
    stale[#stale + 1] = field
  elseif string.sub(field, 1, 1) == 't' then
    total = total + n
  else
    fails = fails + n
  end
end
if #stale > 0 then
  redis.call('HDEL', KEYS[2], unpack(stale))
end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[8]))
if total >= tonumber(ARGV[5]) and fails * 1000000 >= tonumber(ARGV[6]) * total then
  trip('failure rate ' .. fails .. '/' .. total)
  return {'open', 'tripped', tostring(total), tostring(fails)}
end
return {'closed', 'recorded', tostring(total), tostring(fails)}
"""
