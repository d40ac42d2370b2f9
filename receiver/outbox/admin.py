"""Operator access to the SQLite outbox for ``pdrelay outbox …``: list, show, replay, purge.

It opens the outbox file with its own connection (WAL, ``busy_timeout`` 5000 ms) while a
pdrelay server may be using the same file: SQLite's locking keeps the two apart, and each
write here is one short ``BEGIN IMMEDIATE`` transaction. Rules are evaluated before a write
transaction starts, never inside one.

A running server keeps its queued/dead counts (``/status``, the depth gauges) in memory:
they reflect changes made here only after its next restart.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from receiver.crypto import DecryptError
from receiver.errors import ConfigError, PayloadError, Reason
from receiver.models import parse_notification
from receiver.outbox.sealing import RekeyReport, Sealer
from transforms import RuleSet

__all__ = ["AdminItem", "NoSuchItem", "OutboxAdmin", "ReplayOutcome"]

_COLUMNS = (
    "id, notification_id, routing_key, dedup_key, action, status, body, payload_hash, rules, attempts, "
    "created_at, next_attempt_at, reason, last_status, last_error"
)
_PURGE_CHUNK = 500  # items per write transaction: each stays short


class NoSuchItem(LookupError):
    """No event with this id is stored."""

    def __init__(self, item_id: int) -> None:
        super().__init__(f"no outbox item {item_id}")
        self.item_id = item_id


@dataclass(frozen=True, slots=True)
class AdminItem:
    """One stored event as the operator sees it; ``routing_key`` is the key's name, never the secret."""

    id: int
    notification_id: int | None
    routing_key: str
    dedup_key: str
    action: str
    status: str  # "queued" | "dead"
    body: Any
    payload_hash: str
    rules: tuple[str, ...]
    attempts: int
    created_at: float
    next_attempt_at: float
    reason: str | None
    last_status: int | None
    last_error: str | None

    def to_json(self, now: float, *, with_body: bool = True) -> dict[str, Any]:
        """A JSON-ready mapping (``state`` rather than ``status``, as the CLI names it)."""
        out: dict[str, Any] = {
            "id": self.id, "state": self.status, "routing_key": self.routing_key, "action": self.action,
            "dedup_key": self.dedup_key, "attempts": self.attempts, "reason": self.reason,
            "last_status": self.last_status, "last_error": self.last_error, "rules": list(self.rules),
            "created_at": self.created_at, "next_attempt_at": self.next_attempt_at,
            "age_seconds": round(max(0.0, now - self.created_at), 3),
        }
        if with_body:
            out["body"] = self.body
        return out


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What replaying one item did."""

    id: int
    result: Literal["replayed", "invalid", "not_produced", "not_dead", "unreadable"]
    detail: str = ""

    def line(self) -> str:
        """The one line the CLI prints for this item."""
        match self.result:
            case "replayed":
                return f"replayed {self.id}"
            case "invalid":
                return f"still invalid {self.id}: {self.detail}"
            case "not_produced":
                return f"not produced by the current rules {self.id}"
            case "not_dead":
                return f"not dead {self.id}: {self.detail}"
            case _:
                return f"cannot replay {self.id}: {self.detail}"


class OutboxAdmin:
    """The outbox file, opened for inspection and repair beside a possibly running server."""

    def __init__(
        self, path: Path, clock: Callable[[], float] = time.time, *, sealer: Sealer | None = None,
        encrypt_plain: bool = False,
    ) -> None:
        """Open an existing outbox file; raises :class:`sqlite3.Error` if it cannot be opened, and
        :class:`~receiver.errors.ConfigError` if the configured keys cannot read it."""
        self.clock = clock
        self._sealer = sealer or Sealer()
        self._conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None)
        try:
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("SELECT 1 FROM events LIMIT 1").fetchall()
            self.encrypted_now = self._sealer.attach(self._conn, str(path), encrypt_plain=encrypt_plain)
        except (sqlite3.Error, ConfigError):
            self._conn.close()
            raise

    def rekey(self) -> RekeyReport:
        """Re-encrypt every stored value made with an older key with the first configured key."""
        return self._sealer.rekey(self._conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> OutboxAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, taken at once (``BEGIN IMMEDIATE``) so it never fails half-way on a lock."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # ------------------------------------------------------------------ reading

    def items(
        self,
        state: str | None = None,
        routing_key: str | None = None,
        reason: str | None = None,
        limit: int | None = None,
    ) -> list[AdminItem]:
        """Stored items matching every filter given, oldest first."""
        where, args = _filters(state, routing_key, reason)
        sql = f"SELECT {_COLUMNS} FROM events{where} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_item(r, self._sealer) for r in self._conn.execute(sql, args)]

    def ids(self, state: str | None = None, reason: str | None = None) -> list[int]:
        """Ids of the items in ``state`` (and with ``reason``), oldest first."""
        where, args = _filters(state, None, reason)
        return [r[0] for r in self._conn.execute(f"SELECT id FROM events{where} ORDER BY id", args)]

    def get(self, item_id: int) -> AdminItem:
        """One item, or :class:`NoSuchItem`."""
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM events WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise NoSuchItem(item_id)
        return _item(row, self._sealer)

    # ------------------------------------------------------------------ replay

    def replay(self, item_id: int, rules: RuleSet) -> ReplayOutcome:
        """Re-render dead item ``item_id`` from its stored notification with ``rules`` and queue it again.

        Only a dead item is touched. The event must come out with the same dedup_key and
        action; it keeps its stored routing key (a resolve must go where its trigger went).
        """
        item = self.get(item_id)
        if item.status != "dead":
            return ReplayOutcome(item_id, "not_dead", item.status)
        row = self._conn.execute(
            "SELECT body FROM notifications WHERE id = ?", (item.notification_id,)
        ).fetchone()
        if row is None:
            return ReplayOutcome(item_id, "unreadable", "its notification is no longer stored")
        try:
            group = parse_notification(self._sealer.open_notification(bytes(row[0]), item.notification_id or 0))
        except DecryptError as exc:
            return ReplayOutcome(item_id, "unreadable", f"stored notification: {exc}")
        except PayloadError as exc:
            return ReplayOutcome(item_id, "unreadable", f"stored notification does not parse: {exc.message}")
        evaluation = rules.evaluate(group)  # outside any transaction: rendering may take a while
        now = self.clock()
        for ev in evaluation.events:
            if (ev.dedup_key, ev.action) != (item.dedup_key, item.action):
                continue
            ref = self._sealer.index(item.dedup_key)
            body = self._sealer.seal_event(msgspec.json.encode(ev.body), item.routing_key, ref, item.action,
                                           ev.payload_hash)
            with self._write() as conn:
                done = conn.execute(
                    "UPDATE events SET status = 'queued', body = ?, payload_hash = ?, rules = ?, attempts = 0, "
                    "reason = NULL, last_status = NULL, last_error = NULL, next_attempt_at = ? "
                    "WHERE id = ? AND status = 'dead'",
                    (body, ev.payload_hash, ",".join(ev.rules), now, item_id),
                ).rowcount
                if done:
                    # Intake idempotency: what is queued counts as told, unless a newer decision is recorded.
                    conn.execute(
                        "INSERT INTO state (routing_key, dedup_key, action, payload_hash, updated_at) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (dedup_key, routing_key) DO NOTHING",
                        (item.routing_key, ref, item.action, ev.payload_hash, now),
                    )
            if not done:
                return ReplayOutcome(item_id, "not_dead", "changed meanwhile")
            return ReplayOutcome(item_id, "replayed")
        for bad in evaluation.invalid:
            if (bad.dedup_key, bad.action) != (item.dedup_key, item.action):
                continue
            with self._write() as conn:
                conn.execute(
                    "UPDATE events SET reason = ?, last_status = NULL, last_error = ? WHERE id = ? AND status = 'dead'",
                    (Reason.INVALID_EVENT.value, bad.reason, item_id),
                )
            return ReplayOutcome(item_id, "invalid", bad.reason)
        return ReplayOutcome(item_id, "not_produced")

    # ------------------------------------------------------------------ purge

    def purge(self, ids: Sequence[int], *, include_queued: bool = False) -> int:
        """Delete the given items (dead ones only unless ``include_queued``); release their notifications.

        Returns how many were deleted. A purged queued item also loses its intake state, as
        PagerDuty was never told about it.
        """
        purged = 0
        for start in range(0, len(ids), _PURGE_CHUNK):
            with self._write() as conn:
                for item_id in ids[start:start + _PURGE_CHUNK]:
                    row = conn.execute(
                        "SELECT notification_id, status, routing_key, dedup_key, action, payload_hash "
                        "FROM events WHERE id = ?",
                        (item_id,),
                    ).fetchone()
                    if row is None or (row[1] != "dead" and not include_queued):
                        continue
                    conn.execute("DELETE FROM events WHERE id = ?", (item_id,))
                    if row[0] is not None:
                        conn.execute("UPDATE notifications SET refs = refs - 1 WHERE id = ?", (row[0],))
                        conn.execute("DELETE FROM notifications WHERE id = ? AND refs <= 0", (row[0],))
                    if row[1] == "queued":
                        conn.execute(
                            "DELETE FROM state WHERE routing_key = ? AND dedup_key = ? AND action = ? "
                            "AND payload_hash = ?",
                            row[2:],
                        )
                    purged += 1
        return purged


def _filters(state: str | None, routing_key: str | None, reason: str | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for column, value in (("status", state), ("routing_key", routing_key), ("reason", reason)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _item(row: tuple[Any, ...], sealer: Sealer) -> AdminItem:
    """A row for the operator; a value that fails authentication shows the error in place of its body."""
    body: Any
    try:
        body = msgspec.json.decode(sealer.open_event(bytes(row[6]), row[2], row[3], row[4], row[7]))
    except DecryptError as exc:
        body = {"undecryptable": str(exc)}
    dedup_key = row[3]
    if sealer.encrypted and isinstance(body, dict) and isinstance(body.get("dedup_key"), str):
        dedup_key = body["dedup_key"]
    return AdminItem(
        id=row[0], notification_id=row[1], routing_key=row[2], dedup_key=dedup_key, action=row[4], status=row[5],
        body=body, payload_hash=row[7], rules=tuple(r for r in row[8].split(",") if r),
        attempts=row[9], created_at=row[10], next_attempt_at=row[11], reason=row[12], last_status=row[13],
        last_error=row[14],
    )
