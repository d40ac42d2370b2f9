"""The shared outbox backend: Redis (``outbox.backend: redis``), for several pdrelay replicas.

Every replica configured with the same ``outbox.redis.key_prefix`` shares one outbox: the
queue, the per-key state that makes intake idempotent, the dead letters, the send window and
the leases. The delivery rules are :mod:`receiver.delivery`'s, applied to the shared state
inside optimistic transactions.

Keys (``P`` is ``{<key_prefix>}``: one hash tag, so every key lives in one Cluster slot and
every transaction and script may touch any of them; ``<rk>`` a routing key name, ``<ref>`` a
dedup key or, encrypted, its blind index; names with ``<n>:`` carry the byte length first):

- ``P:next_id`` (string, INCRBY): item ids, never reused; ``P:next_nid``: notification ids.
- ``P:item:<id>`` (hash): one event — rk, ref, action, status (queued|dead), body (sealed),
  phash (keyed), prio (0: resolve or critical), rules, attempts, created, next, reason,
  lstatus, lerror, nid, q (its key's queue). ``P:items`` (zset id→id): every stored item.
- ``P:note:<nid>`` (hash): the Alertmanager body (sealed) and ``refs``, the items that came
  from it; deleted when ``refs`` reaches 0.
- ``P:q:<n>:<rk>:<ref>`` (list): the key's queued item ids, oldest first. Only its head is
  ever claimable: never two events of one key in flight, a resolve never overtakes its trigger.
- ``P:due:0``, ``P:due:1`` (zsets, member the id zero-padded, score next attempt): queue heads
  not leased, by priority (0 first). ``P:leases`` (zset id→deadline), ``P:lease_owner`` (hash
  id→owner), ``P:held:<owner>`` (set): claimed heads.
- ``P:s:<n>:<rk>:<ref>`` (hash): the key's :class:`~receiver.delivery.KeyState` (told, tail,
  latest, uncertain); ``P:rks:<ref>`` (set): the routing keys with a state for ``ref``;
  ``P:v:<ref>`` (string): bumped by every write of a state of ``ref`` — what transactions WATCH.
- ``P:counts`` (hash queued, dead); ``P:kq:<rk>`` (zset id→created: queued per routing key),
  ``P:knames`` (set), ``P:kdead`` (hash ``<rk>\\0<reason>``→count): ``depth`` and
  ``depth_by_key`` without reading items. ``P:sends`` (zset, score the send's wall time): the
  send window. ``P:meta`` (hash): ``index_key`` (sealed), ``audit_head:<replica>`` (each replica's
  audit log has its own chain; the replica is named by its host name).

Atomic steps. The decisions need the Python delivery rules, so the writes that decide are
WATCH/MULTI transactions (:mod:`.txn`), retried from fresh reads on conflict, rather than Lua
scripts (which would have to carry a second copy of the rules). Intake (:mod:`.intake`) takes
the notifications that arrive together as one batch: it WATCHes ``P:v:<ref>`` of each dedup
key involved, reads every routing key's state of them and reserves item and notification ids
(``INTAKE_READ``, one round trip), decides with :class:`~receiver.delivery.Ledger` in arrival
order and, in one MULTI, writes the notifications, the items, the states and the counts and
appends each queued item to its key's queue (``INTAKE_WRITE``: the item becomes a due head if
the queue was empty). So two replicas enqueuing the same notification queue it once: the second
one's EXEC fails, it reads again and finds it queued (coalesced).
ack / retry / dead letter / purge / requeue WATCH the item and its ``P:v:<ref>``, apply
``on_sent`` / ``on_retry_timeout`` / ``on_dead`` / ``on_purged`` / ``replay``, and move the
queue (``SETTLE``: out of the queue, due sets and leases; the next item becomes the due head)
in one MULTI. Claiming decides nothing the rules own and is one Lua script (``CLAIM``): expired
leases go back to their due set; the first ``limit`` due heads by (priority, next attempt, id)
are leased to this replica until ``now + lease``. Leases use the injected clock's wall time,
not Redis TIME, so tests drive them with a fake clock; replicas' clocks must agree to well
within the lease (NTP). Scripts queued inside MULTI are sent with EVAL, not EVALSHA: a
NOSCRIPT inside EXEC would apply the rest of the transaction without them.

Crash windows. Intake answers 200 only after EXEC returned (and, with ``wait_replicas``, after
WAIT saw that many replicas; if not, 503: the write may be there, and Alertmanager's retry is
then a duplicate of it, answered 200). A replica dying before EXEC wrote nothing; after EXEC
and before answering, Alertmanager retries and the retry coalesces. A replica dying mid-send
(claimed, not settled) leaves a lease: another replica claims the item once it runs out and
sends it again (PagerDuty dedups by dedup_key; at-least-once). Dying after PagerDuty's 202 and
before the ack's EXEC is the same. A replica stopping cleanly gives its unsettled claims back
at once (``RELEASE_HELD``). An ack whose item another replica already settled changes nothing.
A retry of an EXEC whose reply was lost (connection dropped) meets its own write, watched:
the step is decided again and finds it done. Ids a conflict or a duplicate reserved are skipped.
What Redis itself keeps across its own crash is its persistence's: AOF with
``appendfsync always`` loses no acknowledged write, ``everysec`` up to a second of them;
``wait_replicas`` bounds the loss on failover to a replica.
"""

from __future__ import annotations

from receiver.outbox.redis.store import RedisOutbox

__all__ = ["RedisOutbox"]
