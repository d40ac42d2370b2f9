"""What only the SQLite backend does: its file, its full disk, its notification refcount, its upgrade.

The behaviour every backend shares is in ``test_outbox_contract.py``."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from receiver.errors import OutboxUnavailable
from receiver.outbox.sqlite import SQLiteOutbox
from tests.fakes import FakeClock
from transforms.base import RenderedEvent

HOUR = 3600.0


def ev(dedup: str, action: str = "trigger", key: str = "default", h: str = "h1") -> RenderedEvent:
    body = {"event_action": action, "dedup_key": dedup, "payload": {"summary": dedup, "source": "s",
                                                                     "severity": "error"}}
    return RenderedEvent(routing_key=key, dedup_key=dedup, action=action,  # type: ignore[arg-type]
                         body=body, payload_hash=h, rules=("r1",), fingerprints=(dedup,))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def outbox(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteOutbox]:
    box = SQLiteOutbox(tmp_path / "outbox.db", clock=clock)
    await box.open()
    yield box
    await box.close()


async def test_full_disk_makes_enqueue_fail_without_losing_earlier_events(outbox: SQLiteOutbox) -> None:
    """When SQLite cannot grow the file, enqueue raises OutboxUnavailable and what was stored stays."""
    await outbox.enqueue(b"{}", [ev("kept")], [], resend_interval=HOUR)
    # The test reaches in to cap the file at its current size (max_page_count clamps to the current count).
    await outbox._db.run_alone(lambda conn: conn.execute("PRAGMA max_page_count = 1"))
    with pytest.raises(OutboxUnavailable):
        await outbox.enqueue(b"x" * 200_000, [ev(f"big{i}") for i in range(50)], [], resend_interval=HOUR)
    items = await outbox.items(status="queued")
    assert [i.dedup_key for i in items] == ["kept"]


async def test_open_fails_clearly_when_the_path_is_unusable(tmp_path: Path) -> None:
    """An outbox path under a regular file cannot be opened, and says why."""
    (tmp_path / "file").write_text("x")
    box = SQLiteOutbox(tmp_path / "file" / "o.db")
    with pytest.raises(OutboxUnavailable, match="cannot open outbox"):
        await box.open()


async def test_notification_is_kept_until_its_last_event_is_acked(outbox: SQLiteOutbox) -> None:
    """The stored Alertmanager body stays while any of its events is stored, and goes with the last."""
    await outbox.enqueue(b'{"n": 1}', [ev("a"), ev("b")], [], resend_interval=HOUR)

    async def bodies() -> list[bytes]:
        return await outbox._db.read(lambda c: [r[0] for r in c.execute("SELECT body FROM notifications")])

    first, second = await outbox.claim(10, ())
    await outbox.ack(first)
    assert await bodies() == [b'{"n": 1}']
    await outbox.ack(second)
    assert await bodies() == []


async def test_a_file_from_before_key_state_is_upgraded(tmp_path: Path, clock: FakeClock) -> None:
    """An outbox written with the old per-key ``state`` table opens: queued events stay queued, what was
    recorded becomes what PagerDuty was told, and a dead letter from before can still be replayed."""
    path = tmp_path / "o.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE notifications (id INTEGER PRIMARY KEY, body BLOB NOT NULL, created_at REAL NOT NULL,
                                    refs INTEGER NOT NULL);
        CREATE TABLE events (id INTEGER PRIMARY KEY, notification_id INTEGER, routing_key TEXT NOT NULL,
            dedup_key TEXT NOT NULL, action TEXT NOT NULL, status TEXT NOT NULL, body BLOB NOT NULL,
            payload_hash TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 1, rules TEXT NOT NULL DEFAULT '',
            attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, next_attempt_at REAL NOT NULL,
            reason TEXT, last_status INTEGER, last_error TEXT);
        CREATE TABLE state (routing_key TEXT NOT NULL, dedup_key TEXT NOT NULL, action TEXT NOT NULL,
            payload_hash TEXT NOT NULL, updated_at REAL NOT NULL, uncertain TEXT,
            PRIMARY KEY (dedup_key, routing_key)) WITHOUT ROWID;
        INSERT INTO notifications VALUES (1, '{}', 0, 2);
        INSERT INTO events (id, notification_id, routing_key, dedup_key, action, status, body, payload_hash,
                            created_at, next_attempt_at, reason)
            VALUES (1, 1, 'default', 'q', 'trigger', 'queued', '{"dedup_key": "q"}', 'h1', 0, 0, NULL),
                   (2, 1, 'default', 'd', 'resolve', 'dead', '{"dedup_key": "d"}', 'r', 0, 0, 'invalid_event');
        INSERT INTO state VALUES ('default', 'told', 'trigger', 'h1', ?, NULL);
    """.replace("?", str(clock.now())))
    conn.commit()
    conn.close()
    box = SQLiteOutbox(path, clock=clock)
    await box.open()
    try:
        assert (box.depth().queued, box.depth().dead) == (1, 1)
        assert (await box.enqueue(b"{}", [ev("told")], [], resend_interval=HOUR)).duplicates == 1
        assert (await box.enqueue(b"{}", [ev("q")], [], resend_interval=HOUR)).duplicates == 1  # coalesced
        assert (await box.requeue(2, ev("d", "resolve"), resend_interval=HOUR)).result == "replayed"
        new = await box.enqueue(b"{}", [ev("n")], [], resend_interval=HOUR)
        assert new.queued == 1 and max(i.id for i in await box.items()) > 2
    finally:
        await box.close()


async def test_an_operator_never_creates_an_outbox(tmp_path: Path) -> None:
    """Opened for an operator's command, a missing file is an error, not a new empty outbox."""
    box = SQLiteOutbox(tmp_path / "missing.db", operator=True)
    with pytest.raises(OutboxUnavailable, match="cannot open outbox"):
        await box.open()
    assert not (tmp_path / "missing.db").exists()
