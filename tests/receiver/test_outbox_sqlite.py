"""The SQLite outbox: durability, ordering per dedup_key, idempotent intake, dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from receiver.errors import OutboxUnavailable, Reason
from receiver.outbox.sqlite import SQLiteOutbox
from tests.fakes import FakeClock
from transforms.base import InvalidEvent, RenderedEvent

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


async def test_enqueued_events_survive_reopen(tmp_path: Path, clock: FakeClock) -> None:
    """What enqueue returned for is on disk: a new outbox on the same file sees it."""
    box = SQLiteOutbox(tmp_path / "o.db", clock=clock)
    await box.open()
    result = await box.enqueue(b"{}", [ev("a"), ev("b")], [], resend_interval=HOUR)
    assert (result.queued, result.duplicates) == (2, 0)
    await box.close()
    again = SQLiteOutbox(tmp_path / "o.db", clock=clock)
    await again.open()
    assert again.depth().queued == 2
    items = await again.claim(10, ())
    assert [(i.dedup_key, i.action, i.rules) for i in items] == [("a", "trigger", ("r1",)), ("b", "trigger", ("r1",))]
    await again.close()


async def test_claim_gives_one_head_per_dedup_key(outbox: SQLiteOutbox) -> None:
    """A resolve queued behind its trigger is not claimed until the trigger is settled."""
    await outbox.enqueue(b"{}", [ev("a")], [], resend_interval=HOUR)
    await outbox.enqueue(b"{}", [ev("a", "resolve"), ev("b")], [], resend_interval=HOUR)
    first = await outbox.claim(10, ())
    assert [(i.dedup_key, i.action) for i in first] == [("a", "trigger"), ("b", "trigger")]
    await outbox.ack(first[0])
    second = await outbox.claim(10, {first[1].id})
    assert [(i.dedup_key, i.action) for i in second] == [("a", "resolve")]


async def test_retry_later_blocks_the_key_until_due(outbox: SQLiteOutbox, clock: FakeClock) -> None:
    """A rescheduled head keeps its followers waiting, and is claimed again once due."""
    await outbox.enqueue(b"{}", [ev("a")], [], resend_interval=HOUR)
    await outbox.enqueue(b"{}", [ev("a", "resolve")], [], resend_interval=HOUR)
    (head,) = await outbox.claim(10, ())
    await outbox.retry_later(head, clock.now() + 30, Reason.SERVER_ERROR, 503, "boom")
    assert await outbox.claim(10, ()) == []
    assert await outbox.next_due() == clock.now() + 30
    clock.advance(30)
    (again,) = await outbox.claim(10, ())
    assert (again.action, again.attempts, again.reason, again.last_status) == ("trigger", 1, "server_error", 503)


async def test_identical_trigger_within_resend_interval_is_a_duplicate(
    outbox: SQLiteOutbox, clock: FakeClock
) -> None:
    """Alertmanager retries and HA peers do not queue the same trigger twice; once it was sent and the
    interval passed, they do."""
    assert (await outbox.enqueue(b"{}", [ev("a")], [], resend_interval=HOUR)).queued == 1
    dup = await outbox.enqueue(b"{}", [ev("a")], [], resend_interval=HOUR)
    assert (dup.queued, dup.duplicates) == (0, 1)
    changed = await outbox.enqueue(b"{}", [ev("a", h="h2")], [], resend_interval=HOUR)
    assert changed.queued == 1
    for _ in range(2):  # PagerDuty gets both
        (head,) = await outbox.claim(10, ())
        await outbox.ack(head)
    clock.advance(HOUR)
    assert (await outbox.enqueue(b"{}", [ev("a", h="h2")], [], resend_interval=HOUR)).queued == 1


async def test_resolve_of_resolved_key_is_a_duplicate_but_unknown_key_resolve_is_sent(
    outbox: SQLiteOutbox,
) -> None:
    """A resolve for a key pdrelay never saw is sent; a second resolve is not."""
    assert (await outbox.enqueue(b"{}", [ev("x", "resolve")], [], resend_interval=HOUR)).queued == 1
    assert (await outbox.enqueue(b"{}", [ev("x", "resolve")], [], resend_interval=HOUR)).duplicates == 1
    assert (await outbox.enqueue(b"{}", [ev("x")], [], resend_interval=HOUR)).queued == 1


async def test_resolve_goes_with_the_routing_key_of_its_trigger(outbox: SQLiteOutbox) -> None:
    """If rules now pick another key, the resolve still uses the key the trigger went out with."""
    await outbox.enqueue(b"{}", [ev("a", key="db-oncall")], [], resend_interval=HOUR)
    result = await outbox.enqueue(b"{}", [ev("a", "resolve", key="default")], [], resend_interval=HOUR)
    assert result.rerouted == 1
    items = await outbox.items("queued")
    assert [(i.routing_key, i.action) for i in items] == [("db-oncall", "trigger"), ("db-oncall", "resolve")]


async def test_dead_letter_keeps_the_event_and_forgets_the_state(outbox: SQLiteOutbox) -> None:
    """A dead-lettered trigger is kept with its reason, and the same trigger can be queued again."""
    await outbox.enqueue(b"{}", [ev("a")], [], resend_interval=HOUR)
    (item,) = await outbox.claim(1, ())
    await outbox.dead_letter(item, Reason.INVALID_EVENT, 400, "Event object is invalid: bad")
    (dead,) = await outbox.items("dead")
    assert (dead.dedup_key, dead.reason, dead.last_status, dead.last_error) == (
        "a", "invalid_event", 400, "Event object is invalid: bad")
    assert outbox.depth().queued == 0 and outbox.depth().dead == 1
    assert (await outbox.enqueue(b"{}", [ev("a")], [], resend_interval=HOUR)).queued == 1


async def test_invalid_events_are_stored_as_dead_letters(outbox: SQLiteOutbox) -> None:
    """An event render could not make valid is stored dead with its reason, never dropped."""
    bad = InvalidEvent(routing_key="default", dedup_key="z", action="trigger", body={"x": 1},
                       reason="summary template produced nothing")
    result = await outbox.enqueue(b"{}", [], [bad], resend_interval=HOUR)
    assert result.dead_lettered == 1
    (dead,) = await outbox.items("dead")
    assert (dead.reason, dead.last_error, dead.body) == ("invalid_event", "summary template produced nothing",
                                                         {"x": 1})


async def test_concurrent_writes_are_group_committed(outbox: SQLiteOutbox) -> None:
    """Many concurrent enqueues all succeed and each gets its own answer."""
    results = await asyncio.gather(
        *(outbox.enqueue(b"{}", [ev(f"k{i}")], [], resend_interval=HOUR) for i in range(200))
    )
    assert sum(r.queued for r in results) == 200
    assert outbox.depth().queued == 200
    assert len(await outbox.items("queued", limit=1000)) == 200


async def test_full_disk_makes_enqueue_fail_without_losing_earlier_events(outbox: SQLiteOutbox) -> None:
    """When SQLite cannot grow the file, enqueue raises OutboxUnavailable and what was stored stays."""
    await outbox.enqueue(b"{}", [ev("kept")], [], resend_interval=HOUR)
    conn = outbox._conn  # the test reaches in to cap the file at its current size
    assert conn is not None
    await outbox._call(lambda: conn.execute("PRAGMA max_page_count = 1"))  # clamps to the current count
    with pytest.raises(OutboxUnavailable):
        await outbox.enqueue(b"x" * 200_000, [ev(f"big{i}") for i in range(50)], [], resend_interval=HOUR)
    items = await outbox.items("queued")
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
        return await outbox._read(lambda c: [r[0] for r in c.execute("SELECT body FROM notifications")])

    first, second = await outbox.claim(10, ())
    await outbox.ack(first)
    assert await bodies() == [b'{"n": 1}']
    await outbox.ack(second)
    assert await bodies() == []


async def test_identical_trigger_still_queued_after_resend_interval_is_coalesced(
    outbox: SQLiteOutbox, clock: FakeClock
) -> None:
    """While PagerDuty is unreachable for longer than resend_interval, repeats of a queued trigger collapse into it."""
    await outbox.enqueue(b"{}", [ev("a")], [], resend_interval=HOUR)
    clock.advance(2 * HOUR)
    again = await outbox.enqueue(b"{}", [ev("a")], [], resend_interval=HOUR)
    assert (again.queued, again.duplicates) == (0, 1)
    (item,) = await outbox.claim(10, ())
    await outbox.ack(item)
    clock.advance(2 * HOUR)
    assert (await outbox.enqueue(b"{}", [ev("a")], [], resend_interval=HOUR)).queued == 1  # sent: refresh it


async def test_send_times_are_kept_with_the_next_commit_and_pruned(tmp_path: Path, clock: FakeClock) -> None:
    """Noted send times reach the file with the next write, survive a reopen, and age out."""
    box = SQLiteOutbox(tmp_path / "o.db", clock=clock, keep_sends_for=60.0)
    await box.open()
    t0 = clock.now()
    box.note_send("default", t0 - 5)
    box.note_send("db", t0 - 1)
    assert await box.recent_sends(t0 - 60) == []  # not written on its own
    await box.enqueue(b"{}", [ev("a")], [], resend_interval=HOUR)
    assert await box.recent_sends(t0 - 60) == [("default", t0 - 5), ("db", t0 - 1)]
    assert await box.recent_sends(t0 - 2) == [("db", t0 - 1)]
    await box.close()
    again = SQLiteOutbox(tmp_path / "o.db", clock=clock, keep_sends_for=60.0)
    await again.open()
    assert await again.recent_sends(t0 - 60) == [("default", t0 - 5), ("db", t0 - 1)]
    clock.advance(120.0)
    await again.enqueue(b"{}", [ev("b")], [], resend_interval=HOUR)  # prunes rows older than 60 s
    assert await again.recent_sends(0.0) == []
    await again.close()
