"""What operators do to the Redis outbox: list, show, requeue, purge; and the depth per routing key.

Requeue and purge change the keys' states through :mod:`receiver.delivery` in WATCH/MULTI
transactions, like every other write (:mod:`.txn`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from receiver import delivery
from receiver.delivery import Incoming, Ledger, Verdict, Word
from receiver.errors import Reason
from receiver.outbox.contract import KeyDepth, NoSuchItem, OutboxItem, RequeueResult
from receiver.outbox.redis.connect import Client, Pipe
from receiver.outbox.redis.intake import intake_read
from receiver.outbox.redis.keys import Keys
from receiver.outbox.redis.records import item_from
from receiver.outbox.redis.scripts import RELEASE_NOTE
from receiver.outbox.sealing import ValueSealer
from transforms.base import InvalidEvent, RenderedEvent

if TYPE_CHECKING:
    from receiver.outbox.redis.store import RedisOutbox
    from receiver.outbox.redis.txn import Transactions

__all__ = ["depth_by_key", "get", "notification", "purge", "requeue", "select"]

_ENCODE = msgspec.json.Encoder().encode
_BATCH = 500


async def depth_by_key(client: Client, keys: Keys) -> dict[str, KeyDepth]:
    """Per routing key name: queued count and the oldest queued creation time, dead letters by reason."""
    names = sorted(bytes(n).decode("utf-8", "replace") for n in await client.smembers(keys.key_names))
    async with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zcard(keys.queued_of(name))
            pipe.zrange(keys.queued_of(name), 0, 0, withscores=True)
        pipe.hgetall(keys.dead_by_key)
        replies = await pipe.execute()
    out: dict[str, KeyDepth] = {}
    dead: dict[str, dict[str, int]] = {}
    for field, n in replies[-1].items():
        if int(n) > 0:
            rk, _, reason = bytes(field).decode("utf-8", "replace").partition("\0")
            dead.setdefault(rk, {})[reason] = int(n)
    for i, name in enumerate(names):
        count, first = int(replies[2 * i]), replies[2 * i + 1]
        if count:
            out[name] = KeyDepth(queued=count, oldest_queued_at=float(first[0][1]), dead=dead.pop(name, {}))
    out.update((name, KeyDepth(dead=by_reason)) for name, by_reason in dead.items())
    return out


async def _fields(client: Client, keys: Keys, ids: Sequence[int]) -> list[dict[bytes, bytes]]:
    async with client.pipeline(transaction=False) as pipe:
        for item_id in ids:
            pipe.hgetall(keys.item(item_id))
        return list(await pipe.execute())


async def select(client: Client, keys: Keys, sealer: ValueSealer, status: str | None, routing_key: str | None,
                 reason: str | None, limit: int | None) -> list[OutboxItem]:
    """Stored items matching every filter given, oldest first."""
    ids = [int(i) for i in await client.zrange(keys.items, 0, -1)]
    out: list[OutboxItem] = []
    for start in range(0, len(ids), _BATCH):
        chunk = ids[start:start + _BATCH]
        for item_id, fields in zip(chunk, await _fields(client, keys, chunk), strict=True):
            if not fields:
                continue
            it = item_from(item_id, fields, sealer, lenient=True)
            if (status is None or it.status == status) and (routing_key is None or it.routing_key == routing_key) \
                    and (reason is None or it.reason == reason):
                out.append(it)
                if limit is not None and len(out) >= limit:
                    return out
    return out


async def get(client: Client, keys: Keys, sealer: ValueSealer, item_id: int) -> OutboxItem:
    fields = await client.hgetall(keys.item(item_id))
    if not fields:
        raise NoSuchItem(item_id)
    return item_from(item_id, fields, sealer, lenient=True)


async def notification(client: Client, keys: Keys, sealer: ValueSealer, item_id: int) -> bytes | None:
    """The opened body of the notification an item came from; raises DecryptError if it fails."""
    if not await client.exists(keys.item(item_id)):
        raise NoSuchItem(item_id)
    nid = await client.hget(keys.item(item_id), "nid")
    if not nid or nid == b"0":
        return None
    blob = await client.hget(keys.note(nid.decode()), "body")
    if blob is None:
        return None
    return sealer.open_notification(bytes(blob), int(nid))


_REQUEUE_FIELDS = ("status", "rk", "ref", "action", "nid", "reason", "created")


async def requeue(box: RedisOutbox, tx: Transactions, item_id: int, event: RenderedEvent | InvalidEvent,
                  now: float, resend_interval: float) -> RequeueResult:
    """Requeue dead letter ``item_id`` as ``event``, as the delivery rules decide."""
    k, sealer = box.keys, box.sealer
    body = _ENCODE(event.body)

    async def work(pipe: Pipe) -> RequeueResult:
        raw = await pipe.hmget(k.item(item_id), *_REQUEUE_FIELDS)
        if raw[0] is None:
            raise NoSuchItem(item_id)
        f = dict(zip(_REQUEUE_FIELDS, (v.decode("utf-8", "surrogateescape") for v in raw), strict=True))
        if f["status"] != "dead":
            return RequeueResult(item_id, "not_dead", detail=f["status"])
        ref = sealer.index(event.dedup_key)
        if (ref, event.action) != (f["ref"], f["action"]):
            return RequeueResult(item_id, "invalid", detail="the rules now give it another dedup key or action")
        if isinstance(event, InvalidEvent):
            phash, valid = sealer.payload_hash(""), False
        else:
            phash, valid = sealer.payload_hash(event.payload_hash), True
        payload = event.body.get("payload")
        critical = isinstance(payload, dict) and payload.get("severity") == "critical"
        await pipe.watch(k.version(ref))
        states, new_id, _ = await intake_read(pipe, k, [ref], 0, [ref])
        ledger = Ledger(states, new_id)
        stored_key = (f["rk"], ref)
        outcomes = ledger.replay(item_id, stored_key, Incoming(event.routing_key, ref, event.action, phash, critical,
                                                               valid), now, resend_interval)
        verdicts = {o.verdict for o in outcomes}
        old_dead = f"{f['rk']}\0{f['reason']}"
        pipe.multi()
        if Verdict.DEAD in verdicts:
            why = event.reason if isinstance(event, InvalidEvent) else ""
            pipe.hset(k.item(item_id), mapping={"reason": Reason.INVALID_EVENT.value, "lstatus": "", "lerror": why})
            pipe.hincrby(k.dead_by_key, old_dead, -1)
            pipe.hincrby(k.dead_by_key, f"{f['rk']}\0{Reason.INVALID_EVENT.value}", 1)
            return RequeueResult(item_id, "invalid", detail=why)
        box.write_states(pipe, ledger)
        pipe.hincrby(k.dead_by_key, old_dead, -1)
        pipe.hincrby(k.counts, "dead", -1)
        queued = [o for o in outcomes if o.verdict is Verdict.QUEUE]
        if not queued or queued[0].item_id != item_id:
            pipe.delete(k.item(item_id))
            pipe.zrem(k.items, str(item_id))
        if not queued:
            if f["nid"] and f["nid"] != "0":
                pipe.eval(RELEASE_NOTE, 1, k.note(f["nid"]), 1)
            first = outcomes[0]
            superseded = first.verdict is Verdict.SUPERSEDED
            detail = (f"item {first.item_id} carries a newer word for this alert" if superseded
                      else f"PagerDuty was told, or is queued to be told, the same (item {first.item_id})")
            return RequeueResult(item_id, "superseded" if superseded else "duplicate", detail=detail)
        created = float(f["created"]) if f["created"] else now
        for n, o in enumerate(queued):
            fields: dict[str, Any] = {
                "id": o.item_id, "rk": o.routing_key, "ref": ref, "action": event.action, "status": "queued",
                "body": sealer.seal_event(body, o.item_id, o.routing_key, ref, event.action, phash), "phash": phash,
                "prio": o.priority, "rules": ",".join(event.rules), "attempts": 0,
                "created": repr(created if n == 0 else now), "next": repr(now), "reason": "", "lstatus": "",
                "lerror": "", "nid": f["nid"], "q": k.queue(o.routing_key, ref)}
            pipe.delete(k.item(o.item_id))
            pipe.hset(k.item(o.item_id), mapping=fields)
            pipe.zadd(k.items, {str(o.item_id): o.item_id})
            box.push(pipe, o.item_id, o.routing_key, ref, o.priority, now, created if n == 0 else now)
            if n > 0 and f["nid"] and f["nid"] != "0":
                pipe.hincrby(k.note(f["nid"]), "refs", 1)
        pipe.hincrby(k.counts, "queued", len(queued))
        return RequeueResult(item_id, "replayed", ids=tuple(o.item_id for o in queued),
                             routing_key=queued[0].routing_key)

    return await tx.run("requeuing a dead letter", [k.item(item_id)], work)


async def purge(box: RedisOutbox, tx: Transactions, ids: Sequence[int], *, include_queued: bool) -> int:
    """Delete the given items (dead ones only unless ``include_queued``); a purged queued item leaves its key's
    queue, and the key's tail falls back to the newest still queued."""
    k = box.keys
    purged = 0
    for item_id in ids:

        async def work(pipe: Pipe, item_id: int = item_id) -> int:
            raw = await pipe.hmget(k.item(item_id), "status", "rk", "ref", "nid", "reason", "q")
            if raw[0] is None or (raw[0] != b"dead" and not include_queued):
                return 0
            status, rk, ref, nid, reason, q = (v.decode("utf-8", "surrogateescape") for v in raw)
            f = {"rk": rk, "ref": ref, "q": q}
            newest: Word | None = None
            state = None
            if status == "queued":
                found = await box.settled(pipe, item_id)
                if found is None:
                    return 0
                _, state = found
                for other in reversed(await pipe.lrange(q, 0, -1)):
                    if int(other) == item_id:
                        continue
                    a, h, t = await pipe.hmget(k.item(int(other)), "action", "phash", "created")
                    if a is not None:
                        newest = Word(a.decode(), h.decode(), float(t), int(other))
                    break
            pipe.multi()
            if status == "queued":
                assert state is not None
                box.settle_queue(pipe, item_id, f)
                box.store_state(pipe, f, delivery.on_purged(state, item_id, newest))
                pipe.hincrby(k.counts, "queued", -1)
            else:
                pipe.hincrby(k.counts, "dead", -1)
                pipe.hincrby(k.dead_by_key, f"{rk}\0{reason}", -1)
            pipe.delete(k.item(item_id))
            pipe.zrem(k.items, str(item_id))
            if nid and nid != "0":
                pipe.eval(RELEASE_NOTE, 1, k.note(nid), 1)
            return 1

        purged += await tx.run("purging an event", [k.item(item_id)], work)
    return purged
