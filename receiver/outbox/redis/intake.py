"""Intake into the Redis outbox: the notifications that arrive together decided and written in one transaction.

Every enqueue that arrives while a transaction is running joins the next one (as the SQLite
outbox's group commit): one WATCH of the ``P:v:<ref>`` of every dedup key involved, one read
(``INTAKE_READ``: the states under every routing key, reserved item and notification ids), the
delivery rules (:class:`~receiver.delivery.Ledger`) deciding each event in arrival order, and
one MULTI (``INTAKE_WRITE``, the notes, the counts). If another replica changed one of those
keys meanwhile, the whole batch is decided again on fresh reads. Each enqueue gets its own
result; with ``wait_replicas`` the batch is answered after ``WAIT``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from receiver.delivery import Incoming, Key, KeyState, Ledger, Verdict
from receiver.errors import Reason
from receiver.outbox.contract import EnqueueResult
from receiver.outbox.redis.connect import Pipe
from receiver.outbox.redis.records import state_fields, state_from
from receiver.outbox.redis.scripts import INTAKE_READ, INTAKE_WRITE
from transforms.base import InvalidEvent, RenderedEvent

if TYPE_CHECKING:
    from receiver.outbox.redis.keys import Keys
    from receiver.outbox.redis.txn import Transactions
    from receiver.outbox.sealing import ValueSealer

__all__ = ["Enqueue", "IntakeWriter", "intake_read"]

_PLAN = msgspec.json.Encoder()
_MAX_BATCH = 256  # notifications per transaction


@dataclass(slots=True)
class Enqueue:
    """One notification's events, encoded, waiting for the next transaction."""

    source: bytes
    good: list[tuple[RenderedEvent, bytes]]
    bad: list[tuple[InvalidEvent, bytes]]
    now: float
    resend_interval: float
    done: asyncio.Future[EnqueueResult] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def _pairs(flat: list[Any]) -> dict[bytes, bytes]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


async def intake_read(pipe: Pipe, keys: Keys, refs: Sequence[str], fixed: int, resolves: Sequence[str],
                      notes: int = 0) -> tuple[dict[Key, KeyState], Callable[[], int], int]:
    """Inside a transaction: the states of ``refs`` under every routing key, ids enough for ``fixed`` events and
    the ``resolves`` (one ref each), and ``notes`` notification ids (returns the first); one round trip."""
    top, n, top_nid, rows = await pipe.eval(INTAKE_READ, 2, keys.next_id, keys.next_nid, keys.tag, fixed, notes,
                                            len(refs), *refs, *resolves)
    states = {(rk.decode(), ref.decode()): state_from(_pairs(fields)) for rk, ref, fields in rows}
    ids = iter(range(int(top) - int(n) + 1, int(top) + 1))

    def new_id() -> int:
        item_id = next(ids, None)
        if item_id is None:
            raise AssertionError("the Redis outbox reserved too few item ids")
        return item_id

    return states, new_id, int(top_nid) - max(notes, 1) + 1


class IntakeWriter:
    """Batches enqueues into transactions (see the module docstring)."""

    def __init__(self, keys: Keys, sealer: ValueSealer, tx: Transactions,
                 after: Callable[[], Any]) -> None:
        self._keys = keys
        self._sealer = sealer
        self._tx = tx
        self._after = after  # awaited after each batch's EXEC (WAIT for replicas)
        self._pending: list[Enqueue] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, op: Enqueue) -> EnqueueResult:
        self._pending.append(op)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        return await op.done

    async def drain(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            try:
                results = await self._tx.run("storing a notification", self._watch(batch),
                                             functools.partial(self._decide, batch=batch))
                await self._after()
            except Exception as exc:
                for op in batch:
                    if not op.done.done():
                        op.done.set_exception(exc)
                continue
            for op, result in zip(batch, results, strict=True):
                if not op.done.done():
                    op.done.set_result(result)

    def _refs(self, batch: Sequence[Enqueue]) -> dict[str, str]:
        ix = self._sealer.index
        refs = {ev.dedup_key: ix(ev.dedup_key) for op in batch for ev, _ in op.good}
        refs.update((b.dedup_key, ix(b.dedup_key)) for op in batch for b, _ in op.bad)
        return refs

    def _watch(self, batch: Sequence[Enqueue]) -> list[str]:
        return [self._keys.version(ref) for ref in sorted(set(self._refs(batch).values()))]

    async def _decide(self, pipe: Pipe, batch: Sequence[Enqueue]) -> list[EnqueueResult]:
        k, sealer = self._keys, self._sealer
        refs = self._refs(batch)
        # A resolve may go to every routing key with a state for its dedup key, including those the batch's
        # earlier events give one: counted as one more id for each event of the same key in the batch.
        resolves = [refs[ev.dedup_key] for op in batch for ev, _ in op.good if ev.action == "resolve"]
        per_ref: dict[str, int] = {}
        for op in batch:
            for ev, _ in op.good:
                per_ref[refs[ev.dedup_key]] = per_ref.get(refs[ev.dedup_key], 0) + 1
        fixed = sum(len(op.good) + len(op.bad) for op in batch) - len(resolves) + sum(per_ref[r] for r in resolves)
        states, new_id, nid = await intake_read(pipe, k, sorted(set(refs.values())), fixed, resolves, len(batch))
        ledger = Ledger(states, new_id)
        blobs: list[bytes] = []  # ARGV[3:]: the sealed values
        notes: list[list[Any]] = []
        items: list[list[Any]] = []
        results = []
        queued_total = dead_total = 0
        for op in batch:
            result, rows = self._plan(op, ledger, refs)
            results.append(result)
            queued_total += result.queued
            dead_total += result.dead_lettered
            if not rows:
                nid += 1  # reserved and left unused: notification ids need not be dense
                continue
            blobs.append(sealer.seal_notification(op.source, nid))
            notes.append([str(nid), len(blobs) + 2, len(rows)])
            for item_id, rk, ref, action, status, raw, phash, prio, rules, reason, error in rows:
                blobs.append(sealer.seal_event(raw, item_id, rk, ref, action, phash))
                items.append([str(item_id), rk, ref, action, status, phash, prio, ",".join(rules), repr(op.now),
                              reason, error, str(nid), len(blobs) + 2, k.queue(rk, ref)])
            nid += 1
        states_out = []
        for rk, ref in sorted(ledger.changed):
            fields = state_fields(ledger.states[(rk, ref)])
            states_out.append([k.state(rk, ref), rk, ref, [str(x) for kv in fields.items() for x in kv]])
        versions = sorted({k.version(ref) for _, ref in ledger.changed})
        plan = {"notes": notes, "items": items, "states": states_out, "versions": versions,
                "queued": queued_total, "dead": dead_total}
        pipe.multi()
        if items or states_out:
            pipe.eval(INTAKE_WRITE, 0, k.tag, _PLAN.encode(plan), *blobs)
        return results

    def _plan(self, op: Enqueue, ledger: Ledger, refs: dict[str, str]) -> tuple[EnqueueResult, list[tuple[Any, ...]]]:
        """The delivery rules' decision for each of one notification's events, as items to write."""
        sealer = self._sealer
        queued = duplicates = rerouted = 0
        by_key: dict[str, int] = {}
        rows: list[tuple[Any, ...]] = []
        for ev, raw in op.good:
            ref, phash = refs[ev.dedup_key], sealer.payload_hash(ev.payload_hash)
            incoming = Incoming(ev.routing_key, ref, ev.action, phash, critical=_critical(ev.body))
            stored = [o for o in ledger.intake(incoming, op.now, op.resend_interval) if o.verdict is Verdict.QUEUE]
            duplicates += not stored
            for o in stored:
                queued += 1
                rerouted += o.rerouted
                by_key[o.routing_key] = by_key.get(o.routing_key, 0) + 1
                rows.append((o.item_id, o.routing_key, ref, ev.action, "queued", raw, phash, o.priority, ev.rules,
                             "", ""))
        for b, raw in op.bad:
            ref, phash = refs[b.dedup_key], sealer.payload_hash(hashlib.sha256(raw).hexdigest())
            [o] = ledger.intake(Incoming(b.routing_key, ref, b.action, phash, valid=False), op.now,
                                op.resend_interval)
            rows.append((o.item_id, b.routing_key, ref, b.action, "dead", raw, phash, 1, b.rules,
                         Reason.INVALID_EVENT.value, b.reason))
        return EnqueueResult(queued=queued, duplicates=duplicates, dead_lettered=len(op.bad), rerouted=rerouted,
                             queued_by_key=by_key), rows


def _critical(body: Any) -> bool:
    payload = body.get("payload") if isinstance(body, dict) else None
    return isinstance(payload, dict) and payload.get("severity") == "critical"
