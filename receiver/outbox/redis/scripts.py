"""The Lua scripts of the Redis outbox: the steps that must read and write in one atomic go.

The delivery rules' decisions are made in Python (:mod:`receiver.delivery`) inside WATCH/MULTI
transactions; what a transaction writes conditionally on what Redis holds at that moment (is
the key's queue empty? is this item its head?) is one of these scripts, queued inside the
MULTI with ``EVAL`` (never ``EVALSHA`` there: a NOSCRIPT error inside EXEC would apply the rest
of the transaction without it). :data:`CLAIM` runs on its own. Every key a script touches
carries the outbox's hash tag (passed as ``tag``), so it lives in the same slot as its KEYS.
"""

from __future__ import annotations

__all__ = ["CLAIM", "INTAKE_READ", "PUSH", "RELEASE_NOTE", "SETTLE", "UNLEASE", "UPDATE_IF_EXISTS"]

# KEYS: next_id, next_nid. ARGV: tag, ids needed whatever the states, how many refs, the refs, then one ref per
# resolve (a resolve may go to every routing key that has a state for its dedup key).
# Intake's reads in one round trip, run after WATCH: every routing key's state of each ref ({rk, ref, fields}),
# and reserved ids (INCRBY: what a conflict leaves unused is skipped, never reused) and a notification id.
# Returns {last id reserved, how many, notification id, states}.
INTAKE_READ = """
local tag, need, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local states = {}
for i = 4, 3 + n do
  local ref = ARGV[i]
  for _, rk in ipairs(redis.call('SMEMBERS', tag .. ':rks:' .. ref)) do
    table.insert(states, {rk, ref, redis.call('HGETALL', tag .. ':s:' .. #rk .. ':' .. rk .. ':' .. ref)})
  end
end
for i = 4 + n, #ARGV do need = need + 1 + redis.call('SCARD', tag .. ':rks:' .. ARGV[i]) end
need = math.max(need, 1)
return {redis.call('INCRBY', KEYS[1], need), need, redis.call('INCR', KEYS[2]), states}
"""

# KEYS: queue, due set of the item's priority. ARGV: id, padded id, next attempt.
# Append to the key's queue; the item is the due head if the queue was empty.
PUSH = """
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
if n == 1 then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2]) end
return n
"""

_LEASE_OFF = """
local function lease_off(leases, owners, tag, id)
  redis.call('ZREM', leases, id)
  local owner = redis.call('HGET', owners, id)
  if owner then
    redis.call('HDEL', owners, id)
    redis.call('SREM', tag .. ':held:' .. owner, id)
  end
end
"""

# KEYS: queue, due:0, due:1, leases, owners. ARGV: id, padded id, tag.
# Take the item out of its key's queue, the due sets and the leases; if it was the head, the next
# item of the queue becomes the due head.
SETTLE = _LEASE_OFF + """
local q, id, pid, tag = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local head = redis.call('LINDEX', q, 0)
redis.call('LREM', q, 1, id)
redis.call('ZREM', KEYS[2], pid)
redis.call('ZREM', KEYS[3], pid)
lease_off(KEYS[4], KEYS[5], tag, id)
if head == id then
  local h = redis.call('LINDEX', q, 0)
  if h then
    local f = redis.call('HMGET', tag .. ':item:' .. h, 'prio', 'next')
    if f[1] then redis.call('ZADD', tag .. ':due:' .. f[1], f[2], string.format('%020d', tonumber(h))) end
  end
end
return 1
"""

# KEYS: leases, owners, due set of the item's priority. ARGV: id, padded id, next attempt, tag.
# A claimed head goes back to its due set (rescheduled, or kept to be sent once more).
UNLEASE = _LEASE_OFF + """
lease_off(KEYS[1], KEYS[2], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
return 1
"""

# KEYS: note. ARGV: how many fewer events refer to it. The note goes once none does.
RELEASE_NOTE = """
local n = redis.call('HINCRBY', KEYS[1], 'refs', -tonumber(ARGV[1]))
if n <= 0 then redis.call('DEL', KEYS[1]) end
return n
"""

# KEYS: item. ARGV: field, value, ... Only an item still stored is written (rekey beside a server).
UPDATE_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS: due:0, due:1, leases, owners, counts.
# ARGV: now, lease deadline, limit, owner, tag, JSON list of excluded ids, JSON list of excluded routing keys.
# 1. Leases past their deadline (their holder died, or was too slow) go back to their due set.
# 2. Candidates: items this owner holds but has not in flight (claimed and left unsent), and due heads,
#    skipping excluded ids and routing key names. 3. The first ``limit`` by (priority, next attempt, id)
#    are leased to the owner until the deadline. Returns the counts, then per item: id, superseded (a
#    trigger with a resolve queued behind it), and its fields.
CLAIM = _LEASE_OFF + """
local now, deadline, limit, me, tag = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local leases, owners = KEYS[3], KEYS[4]
local excl, exkeys = {}, {}
for _, v in ipairs(cjson.decode(ARGV[6])) do excl[tostring(v)] = true end
for _, v in ipairs(cjson.decode(ARGV[7])) do exkeys[v] = true end
local function item(id) return tag .. ':item:' .. id end
local function pad(id) return string.format('%020d', tonumber(id)) end

for _, id in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 1000)) do
  lease_off(leases, owners, tag, id)
  local f = redis.call('HMGET', item(id), 'status', 'prio', 'next')
  if f[1] == 'queued' then redis.call('ZADD', tag .. ':due:' .. f[2], f[3], pad(id)) end
end

local cands = {}
local held = tag .. ':held:' .. me
for _, id in ipairs(redis.call('SMEMBERS', held)) do
  if not excl[id] then
    local f = redis.call('HMGET', item(id), 'status', 'prio', 'next', 'rk')
    if f[1] == 'queued' and redis.call('HGET', owners, id) == me then
      if not exkeys[f[4]] then table.insert(cands, {tonumber(f[2]), tonumber(f[3]), tonumber(id)}) end
    else
      redis.call('SREM', held, id)
    end
  end
end
for p = 0, 1 do
  local due, offset, found = KEYS[p + 1], 0, 0
  while found < limit do
    local page = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'WITHSCORES', 'LIMIT', offset, 256)
    if #page == 0 then break end
    for i = 1, #page, 2 do
      local id = tostring(tonumber(page[i]))
      if not excl[id] then
        local rk = redis.call('HGET', item(id), 'rk')
        if not rk then
          redis.call('ZREM', due, page[i])
        elseif not exkeys[rk] then
          table.insert(cands, {p, tonumber(page[i + 1]), tonumber(id)})
          found = found + 1
        end
      end
    end
    offset = offset + 256
  end
end
table.sort(cands, function(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[3] < b[3]
end)

local out = {redis.call('HMGET', KEYS[5], 'queued', 'dead')}
for n = 1, math.min(limit, #cands) do
  local c = cands[n]
  local id = tostring(c[3])
  redis.call('ZREM', KEYS[c[1] + 1], pad(id))
  redis.call('ZADD', leases, deadline, id)
  redis.call('HSET', owners, id, me)
  redis.call('SADD', held, id)
  local superseded = 0
  local f = redis.call('HMGET', item(id), 'action', 'q')
  if f[1] == 'trigger' then
    local later = false
    for _, other in ipairs(redis.call('LRANGE', f[2], 0, -1)) do
      if later and redis.call('HGET', item(other), 'action') == 'resolve' then superseded = 1; break end
      if other == id then later = true end
    end
  end
  table.insert(out, {id, superseded, redis.call('HGETALL', item(id))})
end
return out
"""
