"""The Lua scripts of the shared budget (:mod:`receiver.sharedlimit`), each run atomically by Redis.

Times are seconds since the epoch from the caller, passed and answered as text (a Lua number
answered to Redis would be cut to an integer). Every key a script touches is under the same hash
tag, so a Redis Cluster runs it in one slot.
"""

from __future__ import annotations

__all__ = ["PAUSE", "PEEK", "TAKE"]

# A window's use at ``now`` (trimmed first) and when it has room again; both scripts define it.
_ROOM = """
local function room(key, limit, window)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local n = redis.call('ZCARD', key)
  local at = now
  if n >= limit then
    local e = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
    at = tonumber(e[2]) + window
  end
  return n, at
end
"""

# KEYS: window, pause[, global window]. ARGV: now, limit, window, member[, global limit, global window].
# Answers {taken (0/1), key's room-again time, global room-again time, used, global used}; times as text.
TAKE = """
local now = tonumber(ARGV[1])
""" + _ROOM + """local limit, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local n, at = room(KEYS[1], limit, window)
local p = redis.call('GET', KEYS[2])
if p and tonumber(p) > at then at = tonumber(p) end
local gn, gat, glimit, gwindow = 0, now, 0, 0
if KEYS[3] then
  glimit, gwindow = tonumber(ARGV[5]), tonumber(ARGV[6])
  gn, gat = room(KEYS[3], glimit, gwindow)
end
local taken = 0
if at <= now and gat <= now then
  taken = 1
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
  n, at = room(KEYS[1], limit, window)
  if p and tonumber(p) > at then at = tonumber(p) end
  if KEYS[3] then
    redis.call('ZADD', KEYS[3], ARGV[1], ARGV[4])
    redis.call('PEXPIRE', KEYS[3], math.ceil(gwindow * 1000) + 1000)
    gn, gat = room(KEYS[3], glimit, gwindow)
  end
end
return {taken, string.format('%.17g', at), string.format('%.17g', gat), n, gn}
"""

# KEYS: window1, pause1, window2, pause2, ...[, global window]. ARGV: now, has global (0/1), limit1, window1,
# ...[, global limit, global window]. Answers per key {used, room-again time, pause deadline or ''}, then
# {global used, global room-again time} when there is a global limit.
PEEK = """
local now = tonumber(ARGV[1])
local has_global = ARGV[2] == '1'
local nkeys = #KEYS
if has_global then nkeys = nkeys - 1 end
local out = {}
""" + _ROOM + """for i = 1, nkeys, 2 do
  local j = (i - 1) + 3
  local n, at = room(KEYS[i], tonumber(ARGV[j]), tonumber(ARGV[j + 1]))
  local p = redis.call('GET', KEYS[i + 1])
  local pause = ''
  if p and tonumber(p) > now then
    pause = p
    if tonumber(p) > at then at = tonumber(p) end
  end
  table.insert(out, n)
  table.insert(out, string.format('%.17g', at))
  table.insert(out, pause)
end
if has_global then
  local j = nkeys + 3
  local gn, gat = room(KEYS[#KEYS], tonumber(ARGV[j]), tonumber(ARGV[j + 1]))
  table.insert(out, gn)
  table.insert(out, string.format('%.17g', gat))
end
return out
"""

# KEYS: pause. ARGV: deadline, expiry in ms. Keeps a later deadline. Answers the deadline in force.
PAUSE = """
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return cur end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""
