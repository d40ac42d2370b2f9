"""The embedded outbox: one SQLite file in WAL mode with ``synchronous=FULL``.

Writes are group-committed (:mod:`.committer`); the tables are described in
:mod:`.schema`; what each event becomes, and how a key's state changes after each send,
is decided by :mod:`receiver.delivery` inside the write transaction. The operators'
commands (list, show, requeue, purge) are in :mod:`.admin`; what is kept with the next commit
(send times, the audit head) in :mod:`.notes`.

Every enqueue that arrives while a batch is being written joins the next one, which
:mod:`.intake` writes in one go.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import msgspec

from receiver import delivery
from receiver.clock import Clock, SystemClock
from receiver.crypto import Keyring
from receiver.delivery import Key
from receiver.errors import ConfigError, OutboxUnavailable, Reason
from receiver.outbox.contract import Depth, EnqueueResult, KeyDepth, OpenReport, OutboxItem, RequeueResult
from receiver.outbox.sqlite import admin
from receiver.outbox.sqlite.committer import GroupCommitter, is_text, lossless
from receiver.outbox.sqlite.depths import depth_by_key
from receiver.outbox.sqlite.intake import Enqueue, write_batch
from receiver.outbox.sqlite.notes import Notes, recent_sends
from receiver.outbox.sqlite.schema import EVENT_COLUMNS, load_state, migrate, store_states
from receiver.outbox.sqlite.sealing import Sealer
from transforms.base import InvalidEvent, RenderedEvent

__all__ = ["SQLiteOutbox"]

# Heads of each dedup_key's queue: no older queued event for the same key exists,
# so a resolve never overtakes its trigger.
_CLAIM = f"""
SELECT {EVENT_COLUMNS}, e.action = 'trigger' AND EXISTS (
    SELECT 1 FROM events r
    WHERE r.status = 'queued' AND r.routing_key = e.routing_key
      AND r.dedup_key = e.dedup_key AND r.action = 'resolve' AND r.id > e.id) AS superseded
FROM events e
WHERE e.status = 'queued' AND NOT EXISTS (
    SELECT 1 FROM events p
    WHERE p.status = 'queued' AND p.routing_key = e.routing_key
      AND p.dedup_key = e.dedup_key AND p.id < e.id)
  AND e.next_attempt_at <= ? AND e.routing_key NOT IN (SELECT value FROM json_each(?))
ORDER BY e.priority, e.next_attempt_at, e.id
LIMIT ?
"""

_ENCODER = msgspec.json.Encoder()
_RECOUNT_EVERY = 10.0  # seconds between re-counting queued and dead items from the file


class SQLiteOutbox:
    """The :class:`~receiver.outbox.Outbox` on one SQLite file."""

    def __init__(
        self, path: Path, clock: Clock | None = None, *, keep_sends_for: float = 3600.0,
        keyring: Keyring | None = None, on_unreadable: Callable[[int, Reason, str, str], None] | None = None,
        operator: bool = False, encrypt_plain: bool | None = None,
    ) -> None:
        self._path = path
        self._clock = clock or SystemClock()
        self._sealer = Sealer(keyring)
        self._encrypt_plain = not operator if encrypt_plain is None else encrypt_plain
        self._db = GroupCommitter(path, busy_timeout_ms=5000 if operator else 1000, create=not operator)
        self._notes = Notes(self._clock, keep_sends_for)  # send times and the audit head, kept with the next commit
        self._db.before_commit = self._notes.write
        self._db.after_commit = self._after_commit
        self._on_unreadable = on_unreadable or (lambda item_id, reason, error, routing_key: None)
        self._intake: list[tuple[Enqueue, asyncio.Future[EnqueueResult]]] = []
        self._intake_pending = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._queued = self._dead = 0
        self._delta = [0, 0]  # what the batch being written does to (queued, dead), applied once committed
        self._counted_at = float("-inf")

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> OpenReport:
        def prepare(conn: sqlite3.Connection) -> OpenReport:
            migrate(conn)
            report = self._sealer.attach(conn, str(self._path), encrypt_plain=self._encrypt_plain)
            self._notes.load(conn)
            self._count(conn)
            return report

        try:
            return await self._db.open(prepare)
        except ConfigError:
            raise
        except (OSError, sqlite3.Error) as exc:
            raise OutboxUnavailable(f"cannot open outbox {self._path}: {exc}") from exc

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._notes.unwritten:  # the audit head noted after the last write
            with contextlib.suppress(OutboxUnavailable):
                await self._db.write(lambda conn: None)
        await self._db.close()

    # ------------------------------------------------------------------ counts

    def _count(self, conn: sqlite3.Connection) -> None:
        counts = dict(conn.execute("SELECT status, COUNT(*) FROM events GROUP BY status").fetchall())
        self._queued, self._dead = counts.get("queued", 0), counts.get("dead", 0)
        self._counted_at = self._clock.monotonic()

    def _moved(self, queued: int, dead: int) -> None:
        """A write of the batch being applied changes the counts by this, once committed."""
        self._delta[0] += queued
        self._delta[1] += dead

    def _after_commit(self, committed: bool) -> None:
        self._notes.committed(committed)
        if committed:
            self._queued += self._delta[0]
            self._dead += self._delta[1]
        self._delta = [0, 0]
        # Now and then take the counts from the file: operators' commands change it behind the
        # server's back. Between commits, so no batch is counted twice.
        if committed and self._clock.monotonic() - self._counted_at >= _RECOUNT_EVERY:
            with contextlib.suppress(sqlite3.Error, OutboxUnavailable):
                self._count(self._db.writer)

    def depth(self) -> Depth:
        return Depth(queued=self._queued, dead=self._dead)

    async def depth_by_key(self) -> dict[str, KeyDepth]:
        return await self._db.read(depth_by_key)

    async def check(self) -> None:
        await self._db.write(lambda conn: conn.execute("SELECT 1 FROM events LIMIT 1").fetchall())

    # ------------------------------------------------------------------ intake

    async def enqueue(
        self,
        source: bytes,
        events: Sequence[RenderedEvent],
        invalid: Sequence[InvalidEvent],
        *,
        resend_interval: float,
    ) -> EnqueueResult:
        # Encoding happens here, on the event loop, before the batch is written.
        op = Enqueue(source=source, events=[(ev, _ENCODER.encode(ev.body)) for ev in events],
                      invalid=[(bad, _ENCODER.encode(bad.body)) for bad in invalid],
                      now=self._clock.now(), resend_interval=resend_interval)
        fut: asyncio.Future[EnqueueResult] = asyncio.get_running_loop().create_future()
        self._intake.append((op, fut))
        if not self._intake_pending:
            self._intake_pending = True
            task = asyncio.create_task(self._write_intake())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await fut

    async def _write_intake(self) -> None:
        """One write for every enqueue that arrived before the batch it joins is applied."""
        taken: list[tuple[Enqueue, asyncio.Future[EnqueueResult]]] = []

        def apply(conn: sqlite3.Connection) -> list[EnqueueResult]:
            nonlocal taken
            taken, self._intake, self._intake_pending = self._intake, [], False
            return self._enqueue_batch(conn, [op for op, _ in taken])

        try:
            results = await self._db.write(apply)
        except Exception as exc:
            if not taken:
                taken, self._intake, self._intake_pending = self._intake, [], False
            for _, fut in taken:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), result in zip(taken, results, strict=True):
            if not fut.done():
                fut.set_result(result)

    def _enqueue_batch(self, conn: sqlite3.Connection, ops: Sequence[Enqueue]) -> list[EnqueueResult]:
        results = write_batch(conn, ops, self._sealer)
        self._moved(sum(r.queued for r in results), sum(r.dead_lettered for r in results))
        return results

    # ------------------------------------------------------------------ delivery

    async def claim(
        self, limit: int, exclude: Collection[int], exclude_keys: Collection[str] = ()
    ) -> list[OutboxItem]:
        now = self._clock.now()
        keys = _ENCODER.encode(sorted(exclude_keys))

        def read(conn: sqlite3.Connection) -> tuple[list[OutboxItem], list[tuple[int, Reason, str, str]]]:
            with lossless(conn):
                rows = conn.execute(_CLAIM, (now, keys, limit + len(exclude))).fetchall()
            items, unreadable = [], []
            for r in rows:
                if r[0] in exclude:
                    continue
                try:
                    items.append(admin.item(r, self._sealer))
                except admin.Unreadable as exc:
                    unreadable.append((r[0], exc.reason, str(exc), str(r[1])))
            return items[:limit], unreadable

        items, unreadable = await self._db.read(read)
        if unreadable:
            await self._set_aside(unreadable)
        return items

    async def _set_aside(self, rows: list[tuple[int, Reason, str, str]]) -> None:
        """Dead-letter queued rows that cannot be sent: their stored value fails authentication (altered on
        disk, moved or copied from another row) or is not the event of its row. Nothing else can be done
        with them; they stay visible in ``outbox list``, with the reason and why."""

        def work(conn: sqlite3.Connection) -> None:
            with lossless(conn):
                for item_id, reason, error, _ in rows:
                    self._dead_letter_row(conn, item_id, (reason.value, None, error))

        await self._db.write(work)
        for item_id, reason, error, routing_key in rows:
            self._on_unreadable(item_id, reason, error, routing_key)

    def _queued_row(self, conn: sqlite3.Connection, item_id: int) -> tuple[Key, int | None] | None:
        """The key and notification of queued row ``item_id``; None if it is no longer queued (settled twice)."""
        row = conn.execute("SELECT routing_key, dedup_key, notification_id FROM events WHERE id = ? "
                           "AND status = 'queued'", (item_id,)).fetchone()
        return None if row is None else ((row[0], row[1]), row[2])

    def _dead_letter_row(self, conn: sqlite3.Connection, item_id: int, why: tuple[Any, ...]) -> None:
        """Dead-letter queued row ``item_id`` with ``why`` = (reason, status, error), updating its key's state;
        nothing if it is no longer queued (settled twice)."""
        found = self._queued_row(conn, item_id)
        if found is None:
            return
        key, _ = found
        conn.execute("UPDATE events SET status = 'dead', attempts = attempts + 1, reason = ?, last_status = ?, "
                     "last_error = ? WHERE id = ?", (*why, item_id))
        if is_text(key[0]) and is_text(key[1]):  # else a hand-edited key no intake can ever name: no state to keep
            store_states(conn, [(key, delivery.on_dead(load_state(conn, key), item_id))])
        self._moved(-1, 1)

    async def ack(self, item: OutboxItem, settle_delay: float = 0.0) -> bool:
        now = self._clock.now()

        def work(conn: sqlite3.Connection) -> bool:
            found = self._queued_row(conn, item.id)
            if found is None:
                return False  # settled twice
            key, nid = found
            state = load_state(conn, key)
            new, again = delivery.on_sent(state, item.id, item.action, item.payload_hash, now)  # type: ignore[arg-type]
            store_states(conn, [(key, new)])
            if not again:
                conn.execute("DELETE FROM events WHERE id = ?", (item.id,))
                admin.release_notification(conn, nid)
                self._moved(-1, 0)
                return False
            # Keep the row (and its notification): send the same resolve again later.
            conn.execute(
                "UPDATE events SET attempts = 0, next_attempt_at = ?, reason = NULL, last_status = NULL, "
                "last_error = ? WHERE id = ?",
                (now + settle_delay, f"settle: sending the resolve once more because {state.uncertain}", item.id),
            )
            return True

        resent: bool = await self._db.write(work)
        return resent

    async def retry_later(
        self, item: OutboxItem, at: float, reason: Reason, status: int | None, error: str
    ) -> None:
        when = self._clock.now()

        def work(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT routing_key, dedup_key FROM events WHERE id = ?", (item.id,)).fetchone()
            conn.execute(
                "UPDATE events SET attempts = attempts + 1, next_attempt_at = ?, reason = ?, "
                "last_status = ?, last_error = ? WHERE id = ?",
                (at, reason.value, status, error, item.id),
            )
            if reason is Reason.TIMEOUT and row is not None:
                key = (row[0], row[1])
                why = f"a {item.action} attempt timed out (epoch {when:.0f})"
                store_states(conn, [(key, delivery.on_retry_timeout(load_state(conn, key), why))])

        await self._db.write(work)

    async def dead_letter(self, item: OutboxItem, reason: Reason, status: int | None, error: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            self._dead_letter_row(conn, item.id, (reason.value, status, error))

        await self._db.write(work)

    async def next_due(self) -> float | None:
        now = self._clock.now()

        def read(conn: sqlite3.Connection) -> float | None:
            # One step down the (status, next_attempt_at) index. Items already due are not
            # looked at: they are claimable now or wait behind an in-flight head, whose
            # settling wakes the dispatcher anyway.
            row = conn.execute(
                "SELECT MIN(next_attempt_at) FROM events WHERE status = 'queued' AND next_attempt_at > ?", (now,),
            ).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return await self._db.read(read)

    def note_send(self, routing_key: str, at: float) -> None:
        """Written with the next commit (the send's own ack, retry or dead letter), not on its own."""
        self._notes.send(routing_key, at)

    async def recent_sends(self, since: float) -> list[tuple[str, float]]:
        return await self._db.read(lambda conn: recent_sends(conn, since))

    # ------------------------------------------------------------------ audit

    def note_audit_head(self, head: str) -> None:
        """Written with the next commit, or at close."""
        self._notes.audit_head(head)

    async def audit_head(self) -> str | None:
        return self._notes.latest_head

    # ------------------------------------------------------------------ operators

    async def items(
        self, *, status: str | None = None, routing_key: str | None = None, reason: str | None = None,
        limit: int | None = None,
    ) -> list[OutboxItem]:
        def read(conn: sqlite3.Connection) -> list[OutboxItem]:
            with lossless(conn):  # a row set aside for a text column that is not UTF-8 is listed too
                return admin.select(conn, self._sealer, status, routing_key, reason, limit)

        return await self._db.read(read)

    async def get(self, item_id: int) -> OutboxItem:
        def read(conn: sqlite3.Connection) -> OutboxItem:
            with lossless(conn):
                return admin.get(conn, self._sealer, item_id)

        return await self._db.read(read)

    async def notification(self, item_id: int) -> bytes | None:
        return await self._db.read(lambda conn: admin.notification(conn, self._sealer, item_id))

    async def requeue(
        self, item_id: int, event: RenderedEvent | InvalidEvent, *, resend_interval: float
    ) -> RequeueResult:
        now = self._clock.now()
        body = _ENCODER.encode(event.body)

        def work(conn: sqlite3.Connection) -> RequeueResult:
            result, delta = admin.requeue(conn, self._sealer, item_id, event, body, now, resend_interval)
            self._moved(*delta)
            return result

        result: RequeueResult = await self._db.write(work)
        return result

    async def purge(self, ids: Sequence[int], *, include_queued: bool = False) -> int:
        def work(conn: sqlite3.Connection) -> int:
            purged, delta = admin.purge(conn, ids, include_queued=include_queued)
            self._moved(*delta)
            return purged

        purged: int = await self._db.write(work)
        return purged

    async def rekey(self) -> OpenReport:
        # Its own transaction, between batches: it rewrites every row.
        return await self._db.run_alone(self._sealer.rekey)
