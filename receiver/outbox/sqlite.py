"""The embedded outbox: one SQLite file in WAL mode with ``synchronous=FULL``.

Writes are **group-committed**: every write that arrives while a transaction is being
committed joins the next one, so concurrent intake requests share one fsync instead of
paying one each.

A batch's statements run on the event loop: they only touch SQLite's page cache, and a
batch's enqueues take one ``executemany`` per table whatever its size. Only the
``COMMIT`` — the fsync — runs on a dedicated thread; the next batch waits for it.
Running the statements on that thread instead was measured 1.5× slower: the thread
must re-take the GIL after every SQLite call (every row), and a busy event loop makes
it wait. (Expanding one JSON array per table with ``json_each`` avoids the per-row GIL
round trips, but SQLite's JSON extraction made each body cost 2.4× more.) Each plain write (ack, retry,
dead-letter) runs in its own savepoint, so one failing write cannot spoil the others in
its batch. Reads use a second connection on a thread of their own, and see only
committed data.

Tables: ``notifications`` (the raw Alertmanager body, kept while any of its events
is stored, for replay), ``events`` (queued and dead-lettered events), ``state``
(per ``(routing_key, dedup_key)``: what PagerDuty was last told) and ``sends`` (when
each recent send was answered, so a restart does not forget how much of PagerDuty's
per-key window is used; rows older than ``keep_sends_for`` are pruned).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import sqlite3
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from receiver.clock import Clock, SystemClock
from receiver.crypto import DecryptError
from receiver.errors import ConfigError, OutboxUnavailable, Reason
from receiver.outbox import Depth, EnqueueResult, OutboxItem
from receiver.outbox.sealing import RekeyReport, Sealer
from transforms.base import InvalidEvent, RenderedEvent

__all__ = ["SQLiteOutbox"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    refs INTEGER NOT NULL  -- events still stored that came from it; the row goes at 0
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,  -- a new row always gets max(id) + 1: ids follow arrival order
    notification_id INTEGER,
    routing_key TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    body BLOB NOT NULL,
    payload_hash TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 1,  -- 0: resolves and critical triggers, sent first when over budget
    rules TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    reason TEXT,
    last_status INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS events_queue ON events (status, priority, next_attempt_at);
CREATE INDEX IF NOT EXISTS events_due ON events (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS events_key ON events (routing_key, dedup_key, id) WHERE status = 'queued';
CREATE TABLE IF NOT EXISTS state (
    routing_key TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    action TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    updated_at REAL NOT NULL,
    uncertain TEXT,  -- why a resolve must be sent once more after a settle delay (NULL: no need)
    PRIMARY KEY (dedup_key, routing_key)  -- dedup_key first: intake looks keys up by it
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sends (  -- when PagerDuty answered each recent send: the rate window survives a restart
    routing_key TEXT NOT NULL,
    sent_at REAL NOT NULL  -- wall-clock seconds
);
CREATE INDEX IF NOT EXISTS sends_at ON sends (sent_at);
"""

_COLUMNS = (
    "id, routing_key, dedup_key, action, body, status, attempts, created_at, next_attempt_at, "
    "payload_hash, rules, reason, last_status, last_error"
)

# Heads of each dedup_key's queue: no older queued event for the same key exists,
# so a resolve never overtakes its trigger.
_HEAD = """e.status = 'queued' AND NOT EXISTS (
    SELECT 1 FROM events p
    WHERE p.status = 'queued' AND p.routing_key = e.routing_key
      AND p.dedup_key = e.dedup_key AND p.id < e.id)"""
_CLAIM = f"""
SELECT {_COLUMNS}, e.action = 'trigger' AND EXISTS (
    SELECT 1 FROM events r
    WHERE r.status = 'queued' AND r.routing_key = e.routing_key
      AND r.dedup_key = e.dedup_key AND r.action = 'resolve' AND r.id > e.id) AS superseded
FROM events e
WHERE {_HEAD} AND e.next_attempt_at <= ? AND e.routing_key NOT IN (SELECT value FROM json_each(?))
ORDER BY e.priority, e.next_attempt_at, e.id
LIMIT ?
"""

_SELECT_STATE = (
    "SELECT routing_key, dedup_key, action, payload_hash, updated_at FROM state "
    "WHERE dedup_key IN (SELECT value FROM json_each(?))"
)
_UPSERT_STATE = """
INSERT INTO state (routing_key, dedup_key, action, payload_hash, updated_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (dedup_key, routing_key) DO UPDATE SET
    action = excluded.action, payload_hash = excluded.payload_hash, updated_at = excluded.updated_at
"""
_INSERT_NOTIFICATIONS = "INSERT INTO notifications (id, body, created_at, refs) VALUES (?, ?, ?, ?)"
_INSERT_EVENTS = """
INSERT INTO events (notification_id, routing_key, dedup_key, action, status, body,
                    payload_hash, priority, rules, created_at, next_attempt_at, reason, last_error)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_ENCODER = msgspec.json.Encoder()
_RECOUNT_EVERY = 10.0  # seconds between re-counting queued and dead items from the file


@dataclass(frozen=True, slots=True)
class _Enqueue:
    """One notification's events, already encoded, waiting for the next group commit."""

    source: bytes
    events: list[tuple[RenderedEvent, bytes]]
    invalid: list[tuple[InvalidEvent, bytes]]
    now: float
    resend_interval: float


_Op = Callable[[sqlite3.Connection], Any] | _Enqueue
_Delta = tuple[int, int] | Callable[[Any], tuple[int, int]]


class SQLiteOutbox:
    """The :class:`~receiver.outbox.Outbox` on one SQLite file."""

    def __init__(
        self, path: Path, clock: Clock | None = None, *, keep_sends_for: float = 3600.0, sealer: Sealer | None = None,
    ) -> None:
        self._path = path
        self._clock = clock or SystemClock()
        self._sealer = sealer or Sealer()
        self.sealed_at_open = RekeyReport()  # what opening had to encrypt (a plain file meeting keys)
        self._keep_sends_for = keep_sends_for
        self._sends: list[tuple[str, float]] = []  # noted sends, written with the next commit
        self._sends_pruned_at = float("-inf")
        # Told (id, error) of each queued row set aside because its stored value fails authentication.
        self.on_set_aside: Callable[[int, str], None] = lambda item_id, error: None
        self._executor: ThreadPoolExecutor | None = None  # open, COMMIT, close
        self._reader: ThreadPoolExecutor | None = None  # reads, on self._rconn
        self._conn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._ckconn: sqlite3.Connection | None = None  # checkpoints, on the reader thread
        self._checkpoint: asyncio.Task[None] | None = None
        self._commits_since_checkpoint = 0
        self._pending: list[tuple[_Op, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._queued = 0
        self._dead = 0
        self._counted_at = float("-inf")
        self._deltas: dict[int, _Delta] = {}
        self._next_notification_id = 1

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdrelay-outbox")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdrelay-outbox-read")
        try:
            await self._call(self._open_sync)
        except (OSError, sqlite3.Error, ConfigError) as exc:
            self._executor.shutdown(wait=True)
            self._reader.shutdown(wait=True)
            self._executor = self._reader = None
            if isinstance(exc, ConfigError):
                raise
            raise OutboxUnavailable(f"cannot open outbox {self._path}: {exc}") from exc

    def _open_sync(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # Checkpoints run beside the writer (see _maybe_checkpoint), not inside a COMMIT,
        # where copying the WAL back and syncing the database file stalled intake.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA cache_size=-8192")  # 8 MiB of pages: intake rarely reads from disk
        conn.execute("PRAGMA busy_timeout=1000")  # statements run on the event loop: never wait long
        conn.executescript(_SCHEMA)
        self.sealed_at_open = self._sealer.attach(conn, str(self._path))
        counts = dict(conn.execute("SELECT status, COUNT(*) FROM events GROUP BY status").fetchall())
        self._queued, self._dead = counts.get("queued", 0), counts.get("dead", 0)
        self._next_notification_id = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM notifications").fetchone()[0]
        self._conn = conn
        self._rconn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        self._rconn.execute("PRAGMA query_only=1")
        self._ckconn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._checkpoint is not None:
            await self._checkpoint
        if self._reader is not None:
            for c in (self._rconn, self._ckconn):
                if c is not None:
                    await asyncio.get_running_loop().run_in_executor(self._reader, c.close)
            self._reader.shutdown(wait=True)
        if self._executor is not None:
            if self._conn is not None:
                await self._call(self._conn.close)
            self._executor.shutdown(wait=True)
        self._executor = self._reader = None
        self._conn = self._rconn = self._ckconn = None

    # ------------------------------------------------------------------ plumbing

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise OutboxUnavailable("outbox is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is None or self._rconn is None:
            raise OutboxUnavailable("outbox is not open")
        rconn = self._rconn
        return await asyncio.get_running_loop().run_in_executor(self._reader, lambda: fn(rconn))

    async def _write(self, op: _Op, delta: _Delta = (0, 0)) -> Any:
        """Run ``op`` in the next group commit; return once that commit is durable.

        ``delta`` is what the op does to the (queued, dead) counts once committed, or a
        function of the op's result giving it (an enqueue's always comes from its result).
        """
        if self._executor is None:
            raise OutboxUnavailable("outbox is not open")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, fut))
        self._deltas[id(fut)] = delta
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = self._apply(batch)
                await self._call(self._commit)
            except Exception as exc:  # the commit failed: nothing in this batch is durable
                with contextlib.suppress(Exception):
                    await self._call(self._rollback)
                error = OutboxUnavailable(f"outbox commit failed: {exc}")
                for _, fut in batch:
                    self._deltas.pop(id(fut), None)
                    if not fut.done():
                        fut.set_exception(error)
                continue
            self._maybe_checkpoint()
            # Counts change here, with the commit, never later in the callers: a recount from
            # the file below then cannot count one batch twice.
            for (op, fut), (ok, value) in zip(batch, results, strict=True):
                delta = self._deltas.pop(id(fut), (0, 0))
                if not ok:
                    continue
                if isinstance(op, _Enqueue):
                    delta = (value.queued, value.dead_lettered)
                elif callable(delta):
                    delta = delta(value)
                self._queued += delta[0]
                self._dead += delta[1]
            self._maybe_recount()
            for (_, fut), (ok, value) in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

    def _maybe_checkpoint(self, every: int = 64) -> None:
        """Every ``every`` commits, copy the WAL back into the database on the reader thread.

        A PASSIVE checkpoint never blocks the writer; the WAL restarts from its beginning
        once a checkpoint has copied all of it, so the file stays small.
        """
        self._commits_since_checkpoint += 1
        if self._commits_since_checkpoint < every or self._ckconn is None or self._reader is None:
            return
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        self._commits_since_checkpoint = 0
        ckconn, reader = self._ckconn, self._reader

        async def run() -> None:
            # On error the next one tries again; a WAL that grows for a while loses nothing.
            with contextlib.suppress(sqlite3.Error):
                await asyncio.get_running_loop().run_in_executor(
                    reader, lambda: ckconn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                )

        self._checkpoint = asyncio.create_task(run())

    def _maybe_recount(self) -> None:
        """Now and then take the counts from the file: ``pdrelay outbox replay/purge`` change
        it behind the server's back. Runs between commits, so no batch is counted twice."""
        now = self._clock.monotonic()
        if now - self._counted_at < _RECOUNT_EVERY:
            return
        self._counted_at = now
        with contextlib.suppress(sqlite3.Error):  # keep the running counts; try again next time
            rows = self._require_conn().execute("SELECT status, COUNT(*) FROM events GROUP BY status").fetchall()
            counts = dict(rows)
            self._queued, self._dead = counts.get("queued", 0), counts.get("dead", 0)

    def _commit(self) -> None:
        self._require_conn().execute("COMMIT")

    def _rollback(self) -> None:
        conn = self._require_conn()
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def _apply(self, batch: Sequence[tuple[_Op, asyncio.Future[Any]]]) -> list[tuple[bool, Any]]:
        """Run the batch's statements in one open transaction (on the event loop); the caller commits.

        Plain writes (ack, retry, dead-letter) run first, each in its own savepoint. All
        enqueues of the batch then run together, with one read of the state and one
        ``executemany`` per table.
        """
        conn = self._require_conn()
        out: list[tuple[bool, Any]] = [(False, None)] * len(batch)
        enqueues = [(i, op) for i, (op, _) in enumerate(batch) if isinstance(op, _Enqueue)]
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._write_sends(conn)
            for i, (op, _) in enumerate(batch):
                if not isinstance(op, _Enqueue):
                    out[i] = self._in_savepoint(conn, functools.partial(op, conn))
            if enqueues:
                done = self._in_savepoint(conn, lambda: self._enqueue_batch(conn, [op for _, op in enqueues]))
                for k, (i, _) in enumerate(enqueues):
                    out[i] = (True, done[1][k]) if done[0] else done
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return out

    def _write_sends(self, conn: sqlite3.Connection) -> None:
        """Write the noted send times (lost, harmlessly, if this commit fails) and prune old ones."""
        if self._sends:
            sends, self._sends = self._sends, []
            conn.executemany("INSERT INTO sends (routing_key, sent_at) VALUES (?, ?)", sends)
        now = self._clock.now()
        if now - self._sends_pruned_at >= 60.0:
            self._sends_pruned_at = now
            conn.execute("DELETE FROM sends WHERE sent_at < ?", (now - self._keep_sends_for,))

    def note_send(self, routing_key: str, at: float) -> None:
        """Remember that PagerDuty answered a send for ``routing_key`` at wall time ``at``.

        Written with the next commit (the send's own ack, retry or dead letter), not on its own."""
        self._sends.append((routing_key, at))

    async def recent_sends(self, since: float) -> list[tuple[str, float]]:
        """``(routing_key, wall time)`` of the sends answered at or after ``since``, oldest first."""

        def read(conn: sqlite3.Connection) -> list[tuple[str, float]]:
            rows = conn.execute(
                "SELECT routing_key, sent_at FROM sends WHERE sent_at >= ? ORDER BY sent_at", (since,)
            ).fetchall()
            return [(str(k), float(t)) for k, t in rows]

        return await self._read(read)

    @staticmethod
    def _in_savepoint(conn: sqlite3.Connection, fn: Callable[[], Any]) -> tuple[bool, Any]:
        conn.execute("SAVEPOINT op")
        try:
            result = fn()
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            return False, (OutboxUnavailable(str(exc)) if isinstance(exc, sqlite3.Error) else exc)
        conn.execute("RELEASE op")
        return True, result

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise OutboxUnavailable("outbox is not open")
        return self._conn

    # ------------------------------------------------------------------ intake

    async def enqueue(
        self,
        source: bytes,
        events: Sequence[RenderedEvent],
        invalid: Sequence[InvalidEvent],
        *,
        resend_interval: float,
    ) -> EnqueueResult:
        # Encoding happens here, on the event loop, so the writer thread's turn is short.
        op = _Enqueue(
            source=source,
            events=[(ev, _ENCODER.encode(ev.body)) for ev in events],
            invalid=[(bad, _ENCODER.encode(bad.body)) for bad in invalid],
            now=self._clock.now(),
            resend_interval=resend_interval,
        )
        result: EnqueueResult = await self._write(op)
        return result

    def _enqueue_batch(self, conn: sqlite3.Connection, ops: Sequence[_Enqueue]) -> list[EnqueueResult]:
        # One read of the state of every dedup_key involved, whatever its routing key.
        known: dict[tuple[str, str], tuple[str, str, float]] = {}
        opened: dict[str, tuple[float, str]] = {}  # dedup_key -> (when, routing key) of its latest trigger
        ix = self._sealer.index
        refs = {ev.dedup_key: ix(ev.dedup_key) for op in ops for ev, _ in op.events}  # each computed once
        dedup_keys = list(set(refs.values()))
        if dedup_keys:
            for rk, dk, action, phash, updated in conn.execute(_SELECT_STATE, (_ENCODER.encode(dedup_keys),)):
                known[(rk, dk)] = (action, phash, updated)
                if action == "trigger" and updated >= opened.get(dk, (float("-inf"), ""))[0]:
                    opened[dk] = (updated, rk)
        states: list[tuple[str, str, str, str, float]] = []
        notifications: list[tuple[int, bytes, float, int]] = []
        rows: list[tuple[Any, ...]] = []
        results = []
        for op in ops:
            result, op_rows = self._plan(conn, op, known, opened, states, refs)
            results.append(result)
            if op_rows:
                nid = self._next_notification_id
                self._next_notification_id += 1
                notifications.append((nid, self._sealer.seal_notification(op.source, nid), op.now, len(op_rows)))
                rows.extend((nid, *r) for r in op_rows)
        if states:
            conn.executemany(_UPSERT_STATE, states)
        if notifications:
            conn.executemany(_INSERT_NOTIFICATIONS, notifications)
            conn.executemany(_INSERT_EVENTS, rows)
        return results

    def _plan(
        self,
        conn: sqlite3.Connection,
        op: _Enqueue,
        known: dict[tuple[str, str], tuple[str, str, float]],
        opened: dict[str, tuple[float, str]],
        states: list[tuple[str, str, str, str, float]],
        refs: dict[str, str],
    ) -> tuple[EnqueueResult, list[tuple[Any, ...]]]:
        """Decide, for one notification, which events are new; update ``known``/``opened``/``states``.

        Keys of ``known`` and ``opened`` are dedup keys as stored (``ref``: a blind index when sealed)."""
        now = op.now
        sealer = self._sealer
        queued = duplicates = rerouted = 0
        rows: list[tuple[Any, ...]] = []
        for ev, body in op.events:
            routing_key = ev.routing_key
            ref = refs[ev.dedup_key]
            if ev.action == "resolve" and ref in opened and opened[ref][1] != routing_key:
                # A resolve must use the routing key its trigger went out with, or
                # PagerDuty drops it and the incident stays open.
                routing_key = opened[ref][1]
                rerouted += 1
            last = known.get((routing_key, ref))
            if last is not None and last[0] == ev.action and (
                ev.action == "resolve" or (last[1] == ev.payload_hash and now - last[2] < op.resend_interval)
            ):
                duplicates += 1
                continue
            same_trigger = ev.action == "trigger" and last is not None and last[:2] == ("trigger", ev.payload_hash)
            if same_trigger and _queued_trigger(conn, routing_key, ref, ev.payload_hash):
                # Storm coalescing: the same trigger is still waiting in the queue (PagerDuty has
                # been unreachable for longer than resend_interval); one copy is enough.
                duplicates += 1
                continue
            known[(routing_key, ref)] = (ev.action, ev.payload_hash, now)
            if ev.action == "trigger":
                opened[ref] = (now, routing_key)
            else:
                opened.pop(ref, None)
            states.append((routing_key, ref, ev.action, ev.payload_hash, now))
            rows.append((routing_key, ref, ev.action, "queued",
                         sealer.seal_event(body, routing_key, ref, ev.action, ev.payload_hash),
                         ev.payload_hash, _priority(ev), ",".join(ev.rules), now, now, None, None))
            queued += 1
        for bad, body in op.invalid:
            ref, phash = sealer.index(bad.dedup_key), hashlib.sha256(body).hexdigest()
            rows.append((bad.routing_key, ref, bad.action, "dead",
                         sealer.seal_event(body, bad.routing_key, ref, bad.action, phash),
                         phash, 1, ",".join(bad.rules), now, now, Reason.INVALID_EVENT.value, bad.reason))
        return EnqueueResult(queued=queued, duplicates=duplicates, dead_lettered=len(op.invalid),
                             rerouted=rerouted), rows

    # ------------------------------------------------------------------ dispatch

    async def claim(
        self, limit: int, exclude: Collection[int], exclude_keys: Collection[str] = ()
    ) -> list[OutboxItem]:
        now = self._clock.now()
        keys = _ENCODER.encode(sorted(exclude_keys))

        def read(conn: sqlite3.Connection) -> tuple[list[OutboxItem], list[tuple[int, str]]]:
            rows = conn.execute(_CLAIM, (now, keys, limit + len(exclude))).fetchall()
            items, unreadable = [], []
            for r in rows:
                if r[0] in exclude:
                    continue
                try:
                    items.append(self._item(r))
                except DecryptError as exc:
                    unreadable.append((r[0], str(exc)))
            return items[:limit], unreadable

        items, unreadable = await self._read(read)
        if unreadable:
            await self._set_aside(unreadable)
        return items

    async def _set_aside(self, rows: list[tuple[int, str]]) -> None:
        """Dead-letter queued rows whose stored value fails authentication: altered on disk, or moved
        from another row. Nothing else can be done with them; they stay visible in ``outbox list``."""

        def work(conn: sqlite3.Connection) -> int:
            return conn.executemany(
                "UPDATE events SET status = 'dead', reason = ?, last_error = ? WHERE id = ? AND status = 'queued'",
                [(Reason.UNDECRYPTABLE.value, error, eid) for eid, error in rows],
            ).rowcount

        await self._write(work, lambda n: (-n, n))
        for item_id, error in rows:
            self.on_set_aside(item_id, error)

    async def next_due(self) -> float | None:
        now = self._clock.now()

        def read(conn: sqlite3.Connection) -> float | None:
            # One step down the (status, next_attempt_at) index. Items already due are not
            # looked at: they are claimable now or wait behind an in-flight head, whose
            # settling wakes the dispatcher anyway.
            row = conn.execute(
                "SELECT MIN(next_attempt_at) FROM events WHERE status = 'queued' AND next_attempt_at > ?",
                (now,),
            ).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return await self._read(read)

    async def ack(self, item: OutboxItem, settle_delay: float = 0.0) -> bool:
        """Forget a delivered item. A resolve whose key is marked uncertain (a trigger attempt
        timed out, so that trigger may still land after this resolve) is queued once more,
        ``settle_delay`` seconds from now; returns True when it was."""
        now = self._clock.now()
        ref = self._sealer.index(item.dedup_key)

        def work(conn: sqlite3.Connection) -> bool | None:
            nid = conn.execute("SELECT notification_id FROM events WHERE id = ?", (item.id,)).fetchone()
            uncertain = None
            if item.action == "resolve":
                row = conn.execute(
                    "SELECT uncertain FROM state WHERE dedup_key = ? AND routing_key = ?",
                    (ref, item.routing_key),
                ).fetchone()
                uncertain = row[0] if row is not None else None
            if uncertain is None:
                deleted = conn.execute("DELETE FROM events WHERE id = ? AND status = 'queued'", (item.id,)).rowcount
                if deleted and nid is not None:
                    _release_notification(conn, nid[0])
                return False if deleted else None
            # Keep the row (and its notification): send the same resolve again later.
            conn.execute(
                "UPDATE events SET attempts = 0, next_attempt_at = ?, reason = NULL, last_status = NULL, "
                "last_error = ? WHERE id = ?",
                (now + settle_delay, f"settle: sending the resolve once more because {uncertain}", item.id),
            )
            conn.execute(
                "UPDATE state SET uncertain = NULL WHERE dedup_key = ? AND routing_key = ?",
                (ref, item.routing_key),
            )
            return True

        # None: the row was already gone (settled twice); nothing to count.
        resent: bool | None = await self._write(
            work, lambda again: (0, 0) if again or again is None else (-1, 0)
        )
        return bool(resent)

    async def retry_later(
        self, item: OutboxItem, at: float, reason: Reason, status: int | None, error: str
    ) -> None:
        """Reschedule ``item``. A trigger that timed out may still land at PagerDuty later, so
        its key is marked uncertain: its resolve will be sent twice (see :meth:`ack`)."""
        when = self._clock.now()
        ref = self._sealer.index(item.dedup_key)

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE events SET attempts = attempts + 1, next_attempt_at = ?, reason = ?, "
                "last_status = ?, last_error = ? WHERE id = ?",
                (at, reason.value, status, error, item.id),
            )
            if reason is Reason.TIMEOUT and item.action == "trigger":
                conn.execute(
                    "UPDATE state SET uncertain = ? WHERE dedup_key = ? AND routing_key = ?",
                    (f"a trigger attempt timed out (epoch {when:.0f})", ref, item.routing_key),
                )

        await self._write(work)

    async def dead_letter(self, item: OutboxItem, reason: Reason, status: int | None, error: str) -> None:
        ref = self._sealer.index(item.dedup_key)

        def work(conn: sqlite3.Connection) -> bool:
            changed = conn.execute(
                "UPDATE events SET status = 'dead', attempts = attempts + 1, reason = ?, "
                "last_status = ?, last_error = ? WHERE id = ? AND status = 'queued'",
                (reason.value, status, error, item.id),
            ).rowcount
            if changed:
                # PagerDuty was never told this: forget it, so the next identical event is sent.
                conn.execute(
                    "DELETE FROM state WHERE routing_key = ? AND dedup_key = ? AND action = ? AND payload_hash = ?",
                    (item.routing_key, ref, item.action, item.payload_hash),
                )
            return bool(changed)

        await self._write(work, lambda changed: (-1, 1) if changed else (0, 0))

    def _item(self, row: tuple[Any, ...], *, lenient: bool = False) -> OutboxItem:
        return _item(row, self._sealer, lenient=lenient)

    # ------------------------------------------------------------------ health

    async def check(self) -> None:
        def probe(conn: sqlite3.Connection) -> None:
            conn.execute("SELECT 1 FROM events LIMIT 1").fetchall()

        await self._write(probe)

    def depth(self) -> Depth:
        return Depth(queued=self._queued, dead=self._dead)

    # ------------------------------------------------------------------ inspection

    async def items(self, status: str | None = None, limit: int = 100) -> list[OutboxItem]:
        """Stored items, oldest first (for ``/status`` and the CLI)."""

        def read(conn: sqlite3.Connection) -> list[OutboxItem]:
            sql = f"SELECT {_COLUMNS} FROM events"
            args: tuple[Any, ...] = ()
            if status is not None:
                sql += " WHERE status = ?"
                args = (status,)
            rows = conn.execute(sql + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
            return [self._item(r, lenient=True) for r in rows]

        return await self._read(read)


def _queued_trigger(conn: sqlite3.Connection, routing_key: str, dedup_key: str, payload_hash: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM events WHERE status = 'queued' AND routing_key = ? AND dedup_key = ? "
        "AND action = 'trigger' AND payload_hash = ? LIMIT 1",
        (routing_key, dedup_key, payload_hash),
    ).fetchone()
    return row is not None


def _priority(ev: RenderedEvent) -> int:
    """0 for what goes first when a key is over budget: resolves (close incidents) and critical triggers."""
    if ev.action == "resolve":
        return 0
    payload = ev.body.get("payload")
    return 0 if isinstance(payload, dict) and payload.get("severity") == "critical" else 1


def _release_notification(conn: sqlite3.Connection, nid: int) -> None:
    """One fewer event refers to notification ``nid``; drop it once none does.

    A reference count rather than an index on ``events.notification_id``: intake inserts
    far more often than PagerDuty acks, so the index cost more than it saved."""
    conn.execute("UPDATE notifications SET refs = refs - 1 WHERE id = ?", (nid,))
    conn.execute("DELETE FROM notifications WHERE id = ? AND refs <= 0", (nid,))


def _item(row: tuple[Any, ...], sealer: Sealer, *, lenient: bool = False) -> OutboxItem:
    """A row as an item; raises :class:`DecryptError` for a value that fails authentication, unless
    ``lenient`` (for inspection: the item then shows the error instead of its body)."""
    try:
        body = msgspec.json.decode(sealer.open_event(row[4], row[1], row[2], row[3], row[9]))
    except DecryptError as exc:
        if not lenient:
            raise
        body = {"undecryptable": str(exc)}
    dedup_key = row[2]
    if sealer.encrypted and isinstance(body, dict) and isinstance(body.get("dedup_key"), str):
        dedup_key = body["dedup_key"]
    return OutboxItem(
        id=row[0],
        routing_key=row[1],
        dedup_key=dedup_key,
        action=row[3],
        body=body,
        status=row[5],
        attempts=row[6],
        created_at=row[7],
        next_attempt_at=row[8],
        payload_hash=row[9],
        rules=tuple(r for r in row[10].split(",") if r),
        reason=row[11],
        last_status=row[12],
        last_error=row[13],
        superseded=bool(row[14]) if len(row) > 14 else False,
    )
