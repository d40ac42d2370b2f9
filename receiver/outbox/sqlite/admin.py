"""The SQLite outbox's rows as items, and what operators do to them: list, show, requeue, purge.

Each function runs on a connection the caller gives it (a read, or a write inside the
outbox's transaction); requeue and purge change the keys' states through
:mod:`receiver.delivery`, like every other write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec

from receiver import delivery
from receiver.delivery import Incoming, Ledger, Verdict, Word
from receiver.errors import Reason
from receiver.outbox.contract import NoSuchItem, OutboxItem, RequeueResult
from receiver.outbox.sealing import Unreadable, open_body
from receiver.outbox.sqlite.committer import is_text
from receiver.outbox.sqlite.schema import EVENT_COLUMNS, IdAllocator, load_states, store_states
from receiver.outbox.sqlite.sealing import Sealer
from transforms.base import InvalidEvent, RenderedEvent

__all__ = ["Unreadable", "get", "item", "notification", "purge", "release_notification", "requeue", "select"]

_ENCODE = msgspec.json.Encoder().encode
_PURGE_CHUNK = 500  # items per savepoint-sized step


def item(row: tuple[Any, ...], sealer: Sealer, *, lenient: bool = False) -> OutboxItem:
    """A row as an item; raises :class:`Unreadable` for a row that cannot be sent (its value fails
    authentication, is not UTF-8 JSON, or is not the event of its row), unless ``lenient`` (for
    operators: the item then shows ``{reason: why}`` instead of a body it cannot show)."""
    try:
        body = _body(row, sealer, check=not lenient)
    except Unreadable as exc:
        if not lenient:
            raise
        body = {exc.reason.value: str(exc)}
    dedup_key = row[2]
    if sealer.encrypted and isinstance(body.get("dedup_key"), str):
        dedup_key = body["dedup_key"]  # the column holds a blind index; the body has the key
    return OutboxItem(
        id=row[0], routing_key=row[1], dedup_key=dedup_key, action=row[3], body=body, status=row[5],
        attempts=row[6], created_at=row[7], next_attempt_at=row[8], payload_hash=row[9],
        rules=tuple(r for r in row[10].split(",") if r), reason=row[11], last_status=row[12],
        last_error=row[13], superseded=bool(row[14]) if len(row) > 14 else False,
    )


def _body(row: tuple[Any, ...], sealer: Sealer, *, check: bool) -> dict[str, Any]:
    """The stored body of event row ``row``, opened and decoded; with ``check``, also that it is the event its
    row says (its action and dedup key, and no routing key of its own: the sender adds the configured one)."""
    item_id, routing_key, ref, action, stored, payload_hash = row[0], row[1], row[2], row[3], row[4], row[9]
    if not (isinstance(routing_key, str) and isinstance(ref, str) and isinstance(action, str)
            and isinstance(payload_hash, str) and isinstance(row[10], str)):
        raise Unreadable(Reason.UNREADABLE, "the stored row is malformed (a text column holds another type)")
    if not all(is_text(t) for t in (routing_key, ref, action, payload_hash, row[10])):
        raise Unreadable(Reason.UNREADABLE, "the stored row is malformed (a text column is not UTF-8)")
    return open_body(sealer, _as_bytes(stored), item_id, routing_key, ref, action, payload_hash, check=check)


def _as_bytes(stored: Any) -> bytes:
    """A stored value as bytes (the columns are read as BLOB; a str or a number only from a hand-made row)."""
    if isinstance(stored, bytes):
        return stored
    return str(stored).encode("utf-8", "surrogateescape")


def select(conn: sqlite3.Connection, sealer: Sealer, status: str | None, routing_key: str | None,
           reason: str | None, limit: int | None) -> list[OutboxItem]:
    """Stored items matching every filter given, oldest first."""
    clauses: list[str] = []
    args: list[Any] = []
    for column, value in (("status", status), ("routing_key", routing_key), ("reason", reason)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    sql = f"SELECT {EVENT_COLUMNS} FROM events" + (" WHERE " + " AND ".join(clauses) if clauses else "")
    sql += " ORDER BY id"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return [item(r, sealer, lenient=True) for r in conn.execute(sql, args)]


def get(conn: sqlite3.Connection, sealer: Sealer, item_id: int) -> OutboxItem:
    row = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", (item_id,)).fetchone()
    if row is None:
        raise NoSuchItem(item_id)
    return item(row, sealer, lenient=True)


def notification(conn: sqlite3.Connection, sealer: Sealer, item_id: int) -> bytes | None:
    """The opened body of the notification an item came from; raises :class:`DecryptError` if it fails."""
    row = conn.execute("SELECT n.id, CAST(n.body AS BLOB) FROM events e LEFT JOIN notifications n "
                       "ON n.id = e.notification_id "
                       "WHERE e.id = ?", (item_id,)).fetchone()
    if row is None:
        raise NoSuchItem(item_id)
    if row[0] is None:
        return None
    return sealer.open_notification(bytes(row[1]), row[0])


def release_notification(conn: sqlite3.Connection, nid: int | None, by: int = 1) -> None:
    """``by`` fewer events refer to notification ``nid``; drop it once none does.

    A reference count rather than an index on ``events.notification_id``: intake inserts
    far more often than PagerDuty acks, so the index cost more than it saved."""
    if nid is None:
        return
    conn.execute("UPDATE notifications SET refs = refs - ? WHERE id = ?", (by, nid))
    conn.execute("DELETE FROM notifications WHERE id = ? AND refs <= 0", (nid,))


def requeue(
    conn: sqlite3.Connection, sealer: Sealer, item_id: int, event: RenderedEvent | InvalidEvent, body: bytes,
    now: float, resend_interval: float,
) -> tuple[RequeueResult, tuple[int, int]]:
    """Requeue dead letter ``item_id`` as ``event``, as the delivery rules decide; returns the result and
    what it did to the (queued, dead) counts."""
    row = conn.execute("SELECT routing_key, dedup_key, action, status, notification_id FROM events WHERE id = ?",
                       (item_id,)).fetchone()
    if row is None:
        raise NoSuchItem(item_id)
    stored_key, action, status, nid = (row[0], row[1]), row[2], row[3], row[4]
    if status != "dead":
        return RequeueResult(item_id, "not_dead", detail=status), (0, 0)
    ref = sealer.index(event.dedup_key)
    if (ref, event.action) != (stored_key[1], action):
        return RequeueResult(item_id, "invalid", detail="the rules now give it another dedup key or action"), (0, 0)
    if isinstance(event, InvalidEvent):
        phash, valid = sealer.payload_hash(""), False
    else:
        phash, valid = sealer.payload_hash(event.payload_hash), True
    critical = isinstance(event.body.get("payload"), dict) and event.body["payload"].get("severity") == "critical"
    ids = IdAllocator(conn)
    ledger = Ledger(load_states(conn, [ref], _ENCODE), ids)
    outcomes = ledger.replay(item_id, stored_key, Incoming(event.routing_key, ref, event.action, phash, critical,
                                                           valid), now, resend_interval)
    verdicts = {o.verdict for o in outcomes}
    if Verdict.DEAD in verdicts:
        reason = event.reason if isinstance(event, InvalidEvent) else ""
        conn.execute("UPDATE events SET reason = ?, last_status = NULL, last_error = ? WHERE id = ?",
                     (Reason.INVALID_EVENT.value, reason, item_id))
        return RequeueResult(item_id, "invalid", detail=reason), (0, 0)
    store_states(conn, ((key, ledger.states[key]) for key in ledger.changed))
    queued = [o for o in outcomes if o.verdict is Verdict.QUEUE]
    if not queued:  # superseded, or PagerDuty has (or is queued to get) the same: nothing left to say
        conn.execute("DELETE FROM events WHERE id = ?", (item_id,))
        release_notification(conn, nid)
        first = outcomes[0]
        result = "superseded" if first.verdict is Verdict.SUPERSEDED else "duplicate"
        detail = (f"item {first.item_id} carries a newer word for this alert" if first.verdict is Verdict.SUPERSEDED
                  else f"PagerDuty was told, or is queued to be told, the same (item {first.item_id})")
        return RequeueResult(item_id, result, detail=detail), (0, -1)  # type: ignore[arg-type]
    rules = ",".join(event.rules)
    for n, o in enumerate(queued):
        sealed = sealer.seal_event(body, o.item_id, o.routing_key, ref, event.action, phash)
        if n == 0:  # the dead row itself: requeued in place, or moved to a new id behind newer items
            conn.execute(
                "UPDATE events SET id = ?, status = 'queued', routing_key = ?, body = ?, payload_hash = ?, "
                "priority = ?, rules = ?, attempts = 0, reason = NULL, last_status = NULL, last_error = NULL, "
                "next_attempt_at = ? WHERE id = ?",
                (o.item_id, o.routing_key, sealed, phash, o.priority, rules, now, item_id))
            continue
        conn.execute(
            "INSERT INTO events (id, notification_id, routing_key, dedup_key, action, status, body, payload_hash, "
            "priority, rules, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
            (o.item_id, nid, o.routing_key, ref, event.action, sealed, phash, o.priority, rules, now, now))
        if nid is not None:
            conn.execute("UPDATE notifications SET refs = refs + 1 WHERE id = ?", (nid,))
    ids.save()
    result_ids = tuple(o.item_id for o in queued)
    return RequeueResult(item_id, "replayed", ids=result_ids, routing_key=queued[0].routing_key), \
        (len(queued), -1)


def purge(conn: sqlite3.Connection, ids: Sequence[int], *, include_queued: bool) -> tuple[int, tuple[int, int]]:
    """Delete the given items (dead ones only unless ``include_queued``), releasing their notifications.
    A purged queued item leaves its key's queue: the key's tail falls back to the newest still queued."""
    purged = queued = 0
    for start in range(0, len(ids), _PURGE_CHUNK):
        for item_id in ids[start:start + _PURGE_CHUNK]:
            row = conn.execute("SELECT notification_id, status, routing_key, dedup_key FROM events WHERE id = ?",
                               (item_id,)).fetchone()
            if row is None or (row[1] != "dead" and not include_queued):
                continue
            conn.execute("DELETE FROM events WHERE id = ?", (item_id,))
            release_notification(conn, row[0])
            purged += 1
            if row[1] == "queued":
                queued += 1
                key = (row[2], row[3])
                newest = conn.execute(
                    "SELECT action, payload_hash, created_at, id FROM events WHERE status = 'queued' "
                    "AND routing_key = ? AND dedup_key = ? ORDER BY id DESC LIMIT 1", key).fetchone()
                state = load_states(conn, [row[3]], _ENCODE).get(key, delivery.KeyState())
                store_states(conn, [(key, delivery.on_purged(state, item_id, Word(*newest) if newest else None))])
    return purged, (-queued, -(purged - queued))
