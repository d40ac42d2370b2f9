"""The Redis outbox: lifecycle and delivery (the design is in :mod:`receiver.outbox.redis`).

Intake's batches are in :mod:`.intake`, operators' commands in :mod:`.admin`; every write is a
:class:`~.txn.Transactions` step.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import msgspec
from redis import exceptions as rx

from receiver import delivery
from receiver.clock import Clock, SystemClock
from receiver.crypto import Keyring
from receiver.delivery import KeyState, Ledger
from receiver.errors import ConfigError, OutboxUnavailable, Reason
from receiver.outbox.contract import Depth, EnqueueResult, KeyDepth, OpenReport, OutboxItem, RequeueResult
from receiver.outbox.redis import admin, sealing
from receiver.outbox.redis.connect import Client, Pipe, connect, unavailable, where
from receiver.outbox.redis.intake import Enqueue, IntakeWriter
from receiver.outbox.redis.keys import Keys, pad
from receiver.outbox.redis.records import Unreadable, item_from, state_fields, state_from
from receiver.outbox.redis.scripts import CLAIM, PUSH, RELEASE_HELD, RELEASE_NOTE, SETTLE, UNLEASE
from receiver.outbox.redis.txn import Transactions
from receiver.outbox.sealing import ValueSealer
from receiver.settings.model import RedisSettings
from transforms.base import InvalidEvent, RenderedEvent

__all__ = ["RedisOutbox"]

_ENCODE = msgspec.json.Encoder().encode

def _pairs(flat: list[Any]) -> dict[bytes, bytes]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


class RedisOutbox:
    """The :class:`~receiver.outbox.Outbox` on Redis, shared by every replica configured with the same prefix."""

    def __init__(
        self, settings: RedisSettings, clock: Clock | None = None, *, keep_sends_for: float = 3600.0,
        keyring: Keyring | None = None, on_unreadable: Callable[[int, Reason, str, str], None] | None = None,
        client: Client | None = None, replica: str | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock or SystemClock()
        self._keys = Keys(settings.key_prefix)
        self._r: Client
        self._disconnect: Callable[[], Awaitable[None]]
        self._r, self._disconnect = (client, client.aclose) if client is not None else connect(settings)
        self._where = f"{where(settings)} (key prefix {settings.key_prefix!r})"
        self._sealer = ValueSealer(keyring)
        # Each replica keeps the head of its own audit log, under its name (the host name: stable for a
        # StatefulSet's pods and a sidecar per Alertmanager peer; a new pod has a new log and no head yet).
        self._head_field = f"audit_head:{replica or socket.gethostname()}"
        self._tx = Transactions(self._r, self._keys, self._clock, keep_sends_for, self._head_field)
        self._on_unreadable = on_unreadable or (lambda item_id, reason, error, routing_key: None)
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"  # who holds a lease
        self._claim = self._r.register_script(CLAIM)
        self._intake = IntakeWriter(self._keys, self._sealer, self._tx, self._wait_replicas)

    @property
    def keys(self) -> Keys:
        return self._keys

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> OpenReport:
        try:
            with unavailable(f"opening {self._where}"):
                await self._r.ping()
                await sealing.attach(self._r, self._keys, self._sealer, self._where)
                head = await self._r.hget(self._keys.meta, self._head_field)
                self._tx.loaded_head(None if head is None else bytes(head).decode("utf-8", "replace")[:256])
                self._tx.set_counts(await self._r.hmget(self._keys.counts, "queued", "dead"))
        except ConfigError:
            await self._disconnect()
            raise
        except OutboxUnavailable:
            await self._disconnect()
            raise
        return OpenReport()

    async def close(self) -> None:
        await self._intake.drain()
        k = self._keys
        # What this replica claimed and did not settle goes back to the queue now (the dispatcher has stopped):
        # due at once for another replica, or for this one restarted, instead of after the lease. If Redis is
        # unreachable at stop, the leases run out by themselves.
        with contextlib.suppress(rx.RedisError, OSError):
            await self._r.eval(RELEASE_HELD, 3, k.leases, k.owners, k.held(self._owner), k.tag, self._owner)
        try:
            if self._tx.unwritten:  # the audit head noted after the last write
                async def nothing(pipe: Pipe) -> None:
                    pipe.multi()

                await self._tx.run("storing the audit head", [], nothing)
        except OutboxUnavailable:
            pass
        finally:
            await self._disconnect()

    # ------------------------------------------------------------------ counts and health

    def depth(self) -> Depth:
        return self._tx.depth

    async def depth_by_key(self) -> dict[str, KeyDepth]:
        with unavailable("reading the depth per routing key"):
            return await admin.depth_by_key(self._r, self._keys)

    async def check(self) -> None:
        with unavailable(f"a write to {self._where}"):
            await self._r.set(self._keys.check, repr(self._clock.now()), px=60_000)

    # ------------------------------------------------------------------ intake

    def _write_states(self, pipe: Pipe, ledger: Ledger) -> None:
        for rk, ref in ledger.changed:
            key = self._keys.state(rk, ref)
            pipe.delete(key)
            pipe.hset(key, mapping=state_fields(ledger.states[(rk, ref)]))
            pipe.sadd(self._keys.routes(ref), rk)
        for ref in {ref for _, ref in ledger.changed}:
            pipe.incr(self._keys.version(ref))

    def _push(self, pipe: Pipe, item_id: int, rk: str, ref: str, prio: int, at: float, created: float) -> None:
        k = self._keys
        pipe.eval(PUSH, 2, k.queue(rk, ref), k.due(prio), item_id, pad(item_id), repr(at))
        pipe.zadd(k.queued_of(rk), {str(item_id): created})
        pipe.sadd(k.key_names, rk)

    async def enqueue(
        self, source: bytes, events: Sequence[RenderedEvent], invalid: Sequence[InvalidEvent], *,
        resend_interval: float,
    ) -> EnqueueResult:
        # Encoding happens here, on the event loop, before the batch is written.
        op = Enqueue(source=source, good=[(ev, _ENCODE(ev.body)) for ev in events],
                     bad=[(b, _ENCODE(b.body)) for b in invalid], now=self._clock.now(),
                     resend_interval=resend_interval)
        return await self._intake.submit(op)

    async def _wait_replicas(self) -> None:
        n = self._settings.wait_replicas
        if n <= 0:
            return
        with unavailable("waiting for replicas"):
            acked = int(await self._r.execute_command("WAIT", n, max(1, int(self._settings.wait_timeout * 1000))))
        if acked < n:
            raise OutboxUnavailable(
                f"Redis outbox: the write reached {acked} of the {n} replicas outbox.redis.wait_replicas asks for "
                f"within {self._settings.wait_timeout:g}s")

    # ------------------------------------------------------------------ delivery

    async def claim(
        self, limit: int, exclude: Collection[int], exclude_keys: Collection[str] = ()
    ) -> list[OutboxItem]:
        now = self._clock.now()
        k = self._keys
        with unavailable("claiming due events"):
            reply = await self._claim(
                keys=[k.due(0), k.due(1), k.leases, k.owners, k.counts],
                args=[repr(now), repr(now + self._settings.lease), limit, self._owner, k.tag,
                      json.dumps(sorted(exclude)), json.dumps(sorted(exclude_keys))])
        self._tx.set_counts(reply[0])
        items, unreadable = [], []
        for raw_id, superseded, flat in reply[1:]:
            item_id, fields = int(raw_id), _pairs(flat)
            try:
                items.append(item_from(item_id, fields, self._sealer, superseded=bool(superseded)))
            except Unreadable as exc:
                unreadable.append((item_id, exc.reason, str(exc), fields.get(b"rk", b"").decode("utf-8", "replace")))
        for item_id, reason, error, routing_key in unreadable:
            await self._dead_letter_id(item_id, reason.value, None, error)
            self._on_unreadable(item_id, reason, error, routing_key)
        return items

    async def _settled(self, pipe: Pipe, item_id: int) -> tuple[dict[str, str], KeyState] | None:
        """Inside a transaction: the queued item's fields and its key's state, both WATCHed; None if it is no
        longer queued (settled twice, or by another replica)."""
        raw = await pipe.hmget(self._keys.item(item_id), "status", "rk", "ref", "nid", "prio", "q", "created")
        if raw[0] != b"queued":
            return None
        f = dict(zip(("status", "rk", "ref", "nid", "prio", "q", "created"),
                     (v.decode("utf-8", "surrogateescape") for v in raw), strict=True))
        await pipe.watch(self._keys.version(f["ref"]))
        state = state_from(await pipe.hgetall(self._keys.state(f["rk"], f["ref"])))
        return f, state

    def _settle_queue(self, pipe: Pipe, item_id: int, f: dict[str, str]) -> None:
        k = self._keys
        pipe.eval(SETTLE, 5, f["q"], k.due(0), k.due(1), k.leases, k.owners, item_id, pad(item_id), k.tag)
        pipe.zrem(k.queued_of(f["rk"]), str(item_id))

    def _store_state(self, pipe: Pipe, f: dict[str, str], state: KeyState) -> None:
        key = self._keys.state(f["rk"], f["ref"])
        pipe.delete(key)
        pipe.hset(key, mapping=state_fields(state))
        pipe.sadd(self._keys.routes(f["ref"]), f["rk"])
        pipe.incr(self._keys.version(f["ref"]))

    async def ack(self, item: OutboxItem, settle_delay: float = 0.0) -> bool:
        now = self._clock.now()
        k = self._keys

        async def body(pipe: Pipe) -> bool:
            found = await self._settled(pipe, item.id)
            if found is None:
                return False
            f, state = found
            new, again = delivery.on_sent(state, item.id, item.action, item.payload_hash, now)  # type: ignore[arg-type]
            pipe.multi()
            self._store_state(pipe, f, new)
            if not again:
                self._settle_queue(pipe, item.id, f)
                pipe.delete(k.item(item.id))
                pipe.zrem(k.items, str(item.id))
                if f["nid"]:
                    pipe.eval(RELEASE_NOTE, 1, k.note(f["nid"]), 1)
                pipe.hincrby(k.counts, "queued", -1)
                return False
            at = now + settle_delay
            pipe.hset(k.item(item.id), mapping={
                "attempts": 0, "next": repr(at), "reason": "", "lstatus": "",
                "lerror": f"settle: sending the resolve once more because {state.uncertain}"})
            pipe.eval(UNLEASE, 3, k.leases, k.owners, k.due(int(f["prio"])), item.id, pad(item.id), repr(at), k.tag)
            return True

        return await self._tx.run("acknowledging an event", [k.item(item.id)], body)

    async def retry_later(
        self, item: OutboxItem, at: float, reason: Reason, status: int | None, error: str
    ) -> None:
        when = self._clock.now()
        k = self._keys

        async def body(pipe: Pipe) -> None:
            found = await self._settled(pipe, item.id)
            if found is None:
                return
            f, state = found
            pipe.multi()
            pipe.hincrby(k.item(item.id), "attempts", 1)
            pipe.hset(k.item(item.id), mapping={"next": repr(at), "reason": reason.value,
                                                "lstatus": "" if status is None else status, "lerror": error})
            pipe.eval(UNLEASE, 3, k.leases, k.owners, k.due(int(f["prio"])), item.id, pad(item.id), repr(at), k.tag)
            if reason is Reason.TIMEOUT:
                why = f"a {item.action} attempt timed out (epoch {when:.0f})"
                self._store_state(pipe, f, delivery.on_retry_timeout(state, why))

        await self._tx.run("rescheduling an event", [k.item(item.id)], body)

    async def dead_letter(self, item: OutboxItem, reason: Reason, status: int | None, error: str) -> None:
        await self._dead_letter_id(item.id, reason.value, status, error)

    async def _dead_letter_id(self, item_id: int, reason: str, status: int | None, error: str) -> None:
        k = self._keys

        async def body(pipe: Pipe) -> None:
            found = await self._settled(pipe, item_id)
            if found is None:
                return
            f, state = found
            pipe.multi()
            self._settle_queue(pipe, item_id, f)
            pipe.hincrby(k.item(item_id), "attempts", 1)
            pipe.hset(k.item(item_id), mapping={"status": "dead", "reason": reason,
                                                "lstatus": "" if status is None else status, "lerror": error})
            self._store_state(pipe, f, delivery.on_dead(state, item_id))
            pipe.hincrby(k.counts, "queued", -1)
            pipe.hincrby(k.counts, "dead", 1)
            pipe.hincrby(k.dead_by_key, f"{f['rk']}\0{reason}", 1)

        await self._tx.run("dead-lettering an event", [k.item(item_id)], body)

    async def next_due(self) -> float | None:
        now = self._clock.now()
        k = self._keys
        with unavailable("reading the next due time"):
            async with self._r.pipeline(transaction=False) as pipe:
                for key in (k.due(0), k.due(1), k.leases):  # a lease that runs out makes its item due again
                    pipe.zrangebyscore(key, f"({now!r}", "+inf", start=0, num=1, withscores=True)
                pipe.hmget(k.counts, "queued", "dead")  # what other replicas did shows in depth() too
                replies = await pipe.execute()
        self._tx.set_counts(replies.pop())
        found = [float(score) for reply in replies for _, score in reply]
        return min(found) if found else None

    def note_send(self, routing_key: str, at: float) -> None:
        """Written with the next write (the send's own ack, retry or dead letter), not on its own."""
        self._tx.note_send(routing_key, at)

    async def recent_sends(self, since: float) -> list[tuple[str, float]]:
        with unavailable("reading recent sends"):
            members = await self._r.zrangebyscore(self._keys.sends, repr(since), "+inf")
        out = []
        for member in members:
            rk, at, _ = bytes(member).decode("utf-8", "replace").split("\0")
            out.append((rk, float(at)))
        return out

    # ------------------------------------------------------------------ audit

    def note_audit_head(self, head: str) -> None:
        """Written with the next write, or at close."""
        self._tx.note_head(head)

    async def audit_head(self) -> str | None:
        return self._tx.head

    # ------------------------------------------------------------------ operators

    async def items(
        self, *, status: str | None = None, routing_key: str | None = None, reason: str | None = None,
        limit: int | None = None,
    ) -> list[OutboxItem]:
        with unavailable("listing events"):
            return await admin.select(self._r, self._keys, self._sealer, status, routing_key, reason, limit)

    async def get(self, item_id: int) -> OutboxItem:
        with unavailable("reading an event"):
            return await admin.get(self._r, self._keys, self._sealer, item_id)

    async def notification(self, item_id: int) -> bytes | None:
        with unavailable("reading a notification"):
            return await admin.notification(self._r, self._keys, self._sealer, item_id)

    async def requeue(
        self, item_id: int, event: RenderedEvent | InvalidEvent, *, resend_interval: float
    ) -> RequeueResult:
        return await admin.requeue(self, self._tx, item_id, event, self._clock.now(), resend_interval)

    async def purge(self, ids: Sequence[int], *, include_queued: bool = False) -> int:
        return await admin.purge(self, self._tx, ids, include_queued=include_queued)

    async def rekey(self) -> OpenReport:
        with unavailable("re-encrypting"):
            return await sealing.rekey(self._r, self._keys, self._sealer)

    # ------------------------------------------------------------------ for .admin

    @property
    def sealer(self) -> ValueSealer:
        return self._sealer

    write_states = _write_states
    push = _push
    settle_queue = _settle_queue
    settled = _settled
    store_state = _store_state

