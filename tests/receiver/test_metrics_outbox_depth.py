"""``Outbox.depth_by_key`` on SQLite: queued count and the first queued event's creation time per routing key
name, dead letters by reason; read from what is stored, so it follows acks, dead letters and purges."""

from __future__ import annotations

from pathlib import Path

from receiver.errors import Reason
from receiver.outbox.contract import KeyDepth
from receiver.outbox.sqlite import SQLiteOutbox
from tests.fakes import FakeClock
from transforms.base import InvalidEvent, RenderedEvent

T0 = 1_700_000_000.0


def ev(key: str, dedup: str) -> RenderedEvent:
    body = {"payload": {"summary": dedup, "severity": "error", "source": "s"}, "dedup_key": dedup,
            "event_action": "trigger"}
    return RenderedEvent(routing_key=key, dedup_key=dedup, action="trigger", body=body, payload_hash=dedup)


async def test_depth_by_key_follows_what_is_stored(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    box = SQLiteOutbox(tmp_path / "o.db", clock=clock)
    await box.open()
    try:
        assert await box.depth_by_key() == {}
        await box.enqueue(b"{}", [ev("default", "a"), ev("db", "b")],
                          [InvalidEvent("db", "bad", "trigger", {}, "summary missing")], resend_interval=3600)
        clock.advance(5)
        await box.enqueue(b"{}", [ev("default", "c"), ev("nowhere", "d")], [], resend_interval=3600)
        assert await box.depth_by_key() == {
            "default": KeyDepth(queued=2, oldest_queued_at=T0),
            "db": KeyDepth(queued=1, oldest_queued_at=T0, dead={"invalid_event": 1}),
            "nowhere": KeyDepth(queued=1, oldest_queued_at=T0 + 5),
        }
        by_id = {i.dedup_key: i for i in await box.items(status="queued")}
        await box.ack(by_id["a"])
        await box.dead_letter(by_id["b"], Reason.EXPIRED, 503, "gave up")
        await box.dead_letter(by_id["d"], Reason.UNKNOWN_ROUTING_KEY, None, "not configured")
        assert await box.depth_by_key() == {
            "default": KeyDepth(queued=1, oldest_queued_at=T0 + 5),
            "db": KeyDepth(dead={"invalid_event": 1, "expired": 1}),
            "nowhere": KeyDepth(dead={"unknown_routing_key": 1}),
        }
        await box.purge([by_id["d"].id])
        assert "nowhere" not in await box.depth_by_key()
    finally:
        await box.close()
