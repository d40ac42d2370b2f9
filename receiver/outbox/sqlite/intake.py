"""Intake into the SQLite outbox: a batch of notifications decided and written in one go.

All of a batch's enqueues run together: one read of the states of every dedup key involved,
the delivery rules (:mod:`receiver.delivery`) deciding each event in arrival order, and one
``executemany`` per table, whatever the number of requests.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from receiver.delivery import Incoming, Ledger, Verdict
from receiver.errors import Reason
from receiver.outbox.contract import EnqueueResult
from receiver.outbox.sqlite.schema import IdAllocator, load_states, store_states
from receiver.outbox.sqlite.sealing import Sealer
from transforms.base import InvalidEvent, RenderedEvent

__all__ = ["Enqueue", "write_batch"]

_ENCODE = msgspec.json.Encoder().encode
_INSERT_NOTIFICATIONS = "INSERT INTO notifications (id, body, created_at, refs) VALUES (?, ?, ?, ?)"
_INSERT_EVENTS = """
INSERT INTO events (id, notification_id, routing_key, dedup_key, action, status, body,
                    payload_hash, priority, rules, created_at, next_attempt_at, reason, last_error)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


@dataclass(frozen=True, slots=True)
class Enqueue:
    """One notification's events, already encoded, waiting for the next group commit."""

    source: bytes
    events: list[tuple[RenderedEvent, bytes]]
    invalid: list[tuple[InvalidEvent, bytes]]
    now: float
    resend_interval: float


def write_batch(conn: sqlite3.Connection, ops: Sequence[Enqueue], sealer: Sealer) -> list[EnqueueResult]:
    """Decide and store every notification of the batch, inside the caller's transaction."""
    ix = sealer.index
    refs = {ev.dedup_key: ix(ev.dedup_key) for op in ops for ev, _ in op.events}  # each computed once
    refs.update((bad.dedup_key, ix(bad.dedup_key)) for op in ops for bad, _ in op.invalid)
    ids = IdAllocator(conn)
    ledger = Ledger(load_states(conn, refs.values(), _ENCODE), ids)
    notifications: list[tuple[int, bytes, float, int]] = []
    rows: list[tuple[Any, ...]] = []
    results = []
    # Internal: a notification lives while an event refers to it, so its id may be used again later.
    nid = conn.execute("SELECT COALESCE(MAX(id), 0) FROM notifications").fetchone()[0]
    for op in ops:
        result, op_rows = _plan(op, ledger, refs, sealer)
        results.append(result)
        if op_rows:
            nid += 1
            notifications.append((nid, sealer.seal_notification(op.source, nid), op.now, len(op_rows)))
            rows.extend((r[0], nid, *r[1:]) for r in op_rows)
    store_states(conn, ((key, ledger.states[key]) for key in ledger.changed))
    ids.save()
    if notifications:
        conn.executemany(_INSERT_NOTIFICATIONS, notifications)
        conn.executemany(_INSERT_EVENTS, rows)
    return results


def _plan(
    op: Enqueue, ledger: Ledger, refs: dict[str, str], sealer: Sealer
) -> tuple[EnqueueResult, list[tuple[Any, ...]]]:
    """The delivery rules' decision for each of one notification's events, as rows to insert."""
    now, seal, keyed = op.now, sealer.seal_event, sealer.payload_hash
    queued = duplicates = rerouted = 0
    by_key: dict[str, int] = {}
    rows: list[tuple[Any, ...]] = []
    for ev, body in op.events:
        ref, phash = refs[ev.dedup_key], keyed(ev.payload_hash)
        incoming = Incoming(ev.routing_key, ref, ev.action, phash, critical=_critical(ev.body))
        outcomes = ledger.intake(incoming, now, op.resend_interval)
        stored = [o for o in outcomes if o.verdict is Verdict.QUEUE]
        duplicates += not stored
        for o in stored:
            queued += 1
            rerouted += o.rerouted
            by_key[o.routing_key] = by_key.get(o.routing_key, 0) + 1
            rows.append((o.item_id, o.routing_key, ref, ev.action, "queued",
                         seal(body, o.item_id, o.routing_key, ref, ev.action, phash),
                         phash, o.priority, ",".join(ev.rules), now, now, None, None))
    for bad, body in op.invalid:
        ref, phash = refs[bad.dedup_key], keyed(hashlib.sha256(body).hexdigest())
        [o] = ledger.intake(Incoming(bad.routing_key, ref, bad.action, phash, valid=False), now,
                            op.resend_interval)
        rows.append((o.item_id, bad.routing_key, ref, bad.action, "dead",
                     seal(body, o.item_id, bad.routing_key, ref, bad.action, phash),
                     phash, 1, ",".join(bad.rules), now, now, Reason.INVALID_EVENT.value, bad.reason))
    return EnqueueResult(queued=queued, duplicates=duplicates, dead_lettered=len(op.invalid),
                         rerouted=rerouted, queued_by_key=by_key), rows


def _critical(body: Any) -> bool:
    payload = body.get("payload") if isinstance(body, dict) else None
    return isinstance(payload, dict) and payload.get("severity") == "critical"
