"""The Lua scripts of the Redis outbox: the steps that must read and write in one atomic go.

The delivery rules' decisions are made in Python (:mod:`receiver.delivery`) inside WATCH/MULTI
transactions; what a transaction writes conditionally on what Redis holds at that moment (is
the key's queue empty? is this item its head?) is one of these scripts, queued inside the
MULTI with ``EVAL`` (never ``EVALSHA`` there: a NOSCRIPT error inside EXEC would apply the rest
of the transaction without it). :data:`CLAIM` runs on its own. Every key a script touches
carries the outbox's hash tag (passed as ``tag``), so it lives in the same slot as its KEYS.
"""

from __future__ import annotations

__all__ = [
    "CLAIM", "INTAKE_READ", "INTAKE_WRITE", "PUSH", "RELEASE_HELD", "RELEASE_NOTE", "SETTLE", "UNLEASE",
    "UPDATE_IF_EXISTS",
]

# KEYS: next_id, next_nid. ARGV: tag, ids needed whatever the states, notification ids needed, how many refs,
# the refs, then one ref per resolve (a resolve may go to every routing key that has a state for its dedup key).
# Intake's reads in one round trip, run after WATCH: every routing key's state of each ref ({rk, ref, fields}),
# and reserved item and notification ids (INCRBY: what a conflict leaves unused is skipped, never reused).
# Returns {last item id reserved, how many, last notification id reserved, states}.
INTAKE_READ = """
local tag, need, notes, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local states = {}
for i = 5, 4 + n do
  local ref = ARGV[i]
  for _, rk in ipairs(redis.call('SMEMBERS', tag .. ':rks:' .. ref)) do
    table.insert(states, {rk, ref, redis.call('HGETALL', tag .. ':s:' .. #rk .. ':' .. rk .. ':' .. ref)})
  end
end
for i = 5 + n, #ARGV do need = need + 1 + redis.call('SCARD', tag .. ':rks:' .. ARGV[i]) end
need = math.max(need, 1)
return {redis.call('INCRBY', KEYS[1], need), need, redis.call('INCRBY', KEYS[2], math.max(notes, 1)), states}
"""

# ARGV: tag, the plan (JSON), then the sealed values the plan names by their ARGV index.
# Intake's writes, queued inside its MULTI: notifications {nid, value index, refs}; items {id, rk, ref, action,
# status, payload hash, priority, rules, created, reason, error, nid, value index, queue key} — a queued one
# appended to its key's queue (the due head if the queue was empty) and counted under its routing key, a dead
# one counted by reason; states {key, rk, ref, fields} written whole; versions bumped; the counts moved.
INTAKE_WRITE = """
local tag = ARGV[1]
local plan = cjson.decode(ARGV[2])
for _, n in ipairs(plan.notes) do
  redis.call('HSET', tag .. ':note:' .. n[1], 'body', ARGV[n[2]], 'refs', n[3])
end
for _, it in ipairs(plan.items) do
  local id, rk, status, created = it[1], it[2], it[5], it[9]
  redis.call('HSET', tag .. ':item:' .. id, 'rk', rk, 'ref', it[3], 'action', it[4], 'status', status,
             'body', ARGV[it[13]], 'phash', it[6], 'prio', it[7], 'rules', it[8], 'attempts', 0, 'created', created,
             'next', created, 'reason', it[10], 'lstatus', '', 'lerror', it[11], 'nid', it[12], 'q', it[14])
  redis.call('ZADD', tag .. ':items', id, id)
  if status == 'queued' then
    if redis.call('RPUSH', it[14], id) == 1 then
      redis.call('ZADD', tag .. ':due:' .. it[7], created, string.format('%020d', tonumber(id)))
    end
    redis.call('ZADD', tag .. ':kq:' .. rk, created, id)
    redis.call('SADD', tag .. ':knames', rk)
  else
    redis.call('HINCRBY', tag .. ':kdead', rk .. '\\0' .. it[10], 1)
  end
end
for _, st in ipairs(plan.states) do
  redis.call('DEL', st[1])
  redis.call('HSET', st[1], unpack(st[4]))
  redis.call('SADD', tag .. ':rks:' .. st[3], st[2])
end
for _, v in ipairs(plan.versions) do redis.call('INCR', v) end
redis.call('HINCRBY', tag .. ':counts', 'queued', plan.queued)
redis.call('HINCRBY', tag .. ':counts', 'dead', plan.dead)
return 1
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

# KEYS: leases, owners, held set of the owner. ARGV: tag, owner.
# A replica stopping cleanly gives back what it still holds (claimed, not settled): due again at once, for
# the next replica (or itself, restarted) rather than after the lease.
RELEASE_HELD = _LEASE_OFF + """
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if redis.call('HGET', KEYS[2], id) == ARGV[2] then
    lease_off(KEYS[1], KEYS[2], ARGV[1], id)
    local f = redis.call('HMGET', ARGV[1] .. ':item:' .. id, 'status', 'prio', 'next')
    if f[1] == 'queued' then
      redis.call('ZADD', ARGV[1] .. ':due:' .. f[2], f[3], string.format('%020d', tonumber(id)))
      n = n + 1
    end
  end
end
redis.call('DEL', KEYS[3])
return n
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
#    skipping excluded ids and routing key names (looking at 4096 due heads per priority at most: heads of
#    keys out of budget ahead of them wait for the key's budget, or for a later claim).
# 3. The first ``limit`` by (priority, next attempt, id) are leased to the owner until the deadline.
# Returns the counts, then per item: id, superseded (a trigger with a resolve queued behind it), and its fields.
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
  while found < limit and offset < 4096 do  -- bounded: the script blocks Redis while it runs
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
