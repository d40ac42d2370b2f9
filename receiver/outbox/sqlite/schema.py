"""The SQLite outbox's tables, their upgrade from earlier files, and the conversions to and from rows.

Tables:

- ``notifications``: the raw Alertmanager body, kept while any of its events is stored
  (for replay); ``refs`` counts those events.
- ``events``: queued and dead-lettered events. Ids come from ``meta.next_id`` and are never
  reused, even after the newest rows are deleted, so an id in a log line always names
  the same event.
- ``key_state``: per ``(routing_key, dedup_key)``, the :class:`~receiver.delivery.KeyState`
  the delivery rules keep: what PagerDuty accepted last, the newest queued word, the item
  carrying Alertmanager's last word, and whether a timeout left PagerDuty's state unknown.
- ``sends``: when each recent send was answered, so a restart does not forget how much of
  PagerDuty's per-key window is used.
- ``meta``: ``next_id``, the sealed index key of an encrypted outbox, and the audit log's
  latest chain head (``audit_head``, kept for the audit log to check its file against).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from receiver.delivery import Key, KeyState, Word

__all__ = ["EVENT_COLUMNS", "SCHEMA", "IdAllocator", "load_state", "load_states", "migrate", "store_states"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    refs INTEGER NOT NULL  -- events still stored that came from it; the row goes at 0
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,  -- from meta.next_id: ids follow arrival order and are never reused
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
CREATE TABLE IF NOT EXISTS key_state (
    routing_key TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    told_action TEXT, told_hash TEXT, told_at REAL, told_id INTEGER,
    tail_action TEXT, tail_hash TEXT, tail_at REAL, tail_id INTEGER,
    latest INTEGER NOT NULL DEFAULT 0,
    uncertain TEXT,
    PRIMARY KEY (dedup_key, routing_key)  -- dedup_key first: intake looks keys up by it
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sends (  -- when PagerDuty answered each recent send: the rate window survives a restart
    routing_key TEXT NOT NULL,
    sent_at REAL NOT NULL  -- wall-clock seconds
);
CREATE INDEX IF NOT EXISTS sends_at ON sends (sent_at);
"""

# The body as BLOB whatever its stored type: a TEXT value that is not UTF-8 must not fail the whole query.
EVENT_COLUMNS = (
    "id, routing_key, dedup_key, action, CAST(body AS BLOB), status, attempts, created_at, next_attempt_at, "
    "payload_hash, rules, reason, last_status, last_error"
)

_STATE_COLUMNS = ("routing_key, dedup_key, told_action, told_hash, told_at, told_id, "
                  "tail_action, tail_hash, tail_at, tail_id, latest, uncertain")
_SELECT_STATES = f"SELECT {_STATE_COLUMNS} FROM key_state WHERE dedup_key IN (SELECT value FROM json_each(?))"
_SELECT_STATE = (f"SELECT {_STATE_COLUMNS.split(', ', 2)[2]} FROM key_state "
                 "WHERE dedup_key = ? AND routing_key = ?")
_UPSERT_STATE = f"""
INSERT INTO key_state ({_STATE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (dedup_key, routing_key) DO UPDATE SET
    told_action = excluded.told_action, told_hash = excluded.told_hash, told_at = excluded.told_at,
    told_id = excluded.told_id, tail_action = excluded.tail_action, tail_hash = excluded.tail_hash,
    tail_at = excluded.tail_at, tail_id = excluded.tail_id, latest = excluded.latest, uncertain = excluded.uncertain
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Create the tables; carry a file written before ``key_state`` existed over to it.

    Such a file kept one ``state`` row per key saying what was *queued*. It becomes what
    PagerDuty was told; the newest queued event of each key becomes its tail, and its
    newest stored event the carrier of Alertmanager's last word (so dead letters from
    before the upgrade can still be replayed)."""
    conn.executescript(SCHEMA)
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'state'").fetchone() is None:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("""
            INSERT OR REPLACE INTO key_state (routing_key, dedup_key, told_action, told_hash, told_at, told_id,
                                              latest, uncertain)
            SELECT routing_key, dedup_key, action, payload_hash, updated_at, 0, 0, uncertain FROM state""")
        conn.execute("""
            INSERT OR IGNORE INTO key_state (routing_key, dedup_key)
            SELECT DISTINCT routing_key, dedup_key FROM events""")
        conn.execute("""
            UPDATE key_state SET latest = COALESCE((SELECT MAX(e.id) FROM events e
                WHERE e.routing_key = key_state.routing_key AND e.dedup_key = key_state.dedup_key), 0)""")
        conn.execute("""
            UPDATE key_state SET (tail_action, tail_hash, tail_at, tail_id) = (
                SELECT e.action, e.payload_hash, e.created_at, e.id FROM events e
                WHERE e.status = 'queued' AND e.routing_key = key_state.routing_key
                  AND e.dedup_key = key_state.dedup_key ORDER BY e.id DESC LIMIT 1)""")
        conn.execute("DROP TABLE state")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class IdAllocator:
    """Hands out item ids inside one write transaction, from ``meta.next_id``; :meth:`save` keeps the counter.

    Read and written inside the transaction, so an operator's command writing beside a
    running server never hands out an id the server also handed out."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        row = conn.execute(
            "SELECT MAX(COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'next_id'), 1), "
            "COALESCE((SELECT MAX(id) FROM events), 0) + 1)").fetchone()
        self._next = int(row[0])
        self._start = self._next

    def __call__(self) -> int:
        self._next += 1
        return self._next - 1

    def save(self) -> None:
        if self._next != self._start:
            self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('next_id', ?)", (self._next,))


def _word(action: Any, phash: Any, at: Any, item_id: Any) -> Word | None:
    return None if action is None else Word(action, phash, float(at), int(item_id))


def load_states(conn: sqlite3.Connection, dedup_keys: Iterable[str], encode: Any) -> dict[Key, KeyState]:
    """The states of the given dedup keys (as stored), under every routing key that has one."""
    out: dict[Key, KeyState] = {}
    keys = sorted(set(dedup_keys))
    if not keys:
        return out
    for r in conn.execute(_SELECT_STATES, (encode(keys),)):
        out[(r[0], r[1])] = KeyState(told=_word(*r[2:6]), tail=_word(*r[6:10]), latest=int(r[10]),
                                     uncertain=r[11])
    return out


def load_state(conn: sqlite3.Connection, key: Key) -> KeyState:
    """The state of one ``(routing_key, dedup_key)`` (as stored); an empty one if it has none."""
    r = conn.execute(_SELECT_STATE, (key[1], key[0])).fetchone()
    if r is None:
        return KeyState()
    return KeyState(told=_word(*r[0:4]), tail=_word(*r[4:8]), latest=int(r[8]), uncertain=r[9])


def store_states(conn: sqlite3.Connection, states: Iterable[tuple[Key, KeyState]]) -> None:
    rows = []
    for (rk, dk), st in states:
        told, tail = st.told, st.tail
        rows.append((
            rk, dk,
            *((told.action, told.payload_hash, told.at, told.item_id) if told else (None,) * 4),
            *((tail.action, tail.payload_hash, tail.at, tail.item_id) if tail else (None,) * 4),
            st.latest, st.uncertain,
        ))
    if rows:
        conn.executemany(_UPSERT_STATE, rows)
