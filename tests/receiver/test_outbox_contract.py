"""The ``Outbox`` contract, end to end, run against every backend (``backend`` fixture).

What a backend must do whatever it stores in: commit before answering, decide each event
with the delivery rules (idempotent intake, coalescing, rerouting, replay), hand out queue
heads in order, settle them, remember the send window across a reopen, and never reuse an
item id. A new backend adds its fixture parameter here.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from receiver.errors import Reason
from receiver.outbox import NoSuchItem, Outbox, build_outbox
from receiver.settings.model import RedisSettings
from tests.fakes import FakeClock
from transforms.base import InvalidEvent, RenderedEvent

HOUR = 3600.0
Factory = Callable[[], Awaitable[Outbox]]


def ev(dedup: str, action: str = "trigger", key: str = "default", h: str = "h1",
       severity: str = "error") -> RenderedEvent:
    body = {"event_action": action, "dedup_key": dedup,
            "payload": {"summary": f"{dedup} {h}", "source": "s", "severity": severity}}
    return RenderedEvent(routing_key=key, dedup_key=dedup, action=action,  # type: ignore[arg-type]
                         body=body, payload_hash=h, rules=("r1",), fingerprints=(dedup,))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


REDIS_URL = "redis://127.0.0.1:6379"


async def drop_prefix(prefix: str) -> None:
    """Delete every key of one test's prefix (SCAN + DEL of that prefix only) on the shared Redis."""
    client = Redis.from_url(REDIS_URL)
    try:
        async for key in client.scan_iter(match="{" + prefix + "}:*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


@pytest.fixture(params=["sqlite", "redis"])
async def reopen(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Factory]:
    """Opens a new outbox on the same storage each time it is called; closes them all at the end."""
    opened: list[Outbox] = []
    prefix = f"pdrelay-test-{os.urandom(6).hex()}"
    redis = RedisSettings(url=REDIS_URL, key_prefix=prefix)

    async def make() -> Outbox:
        box = build_outbox(request.param, tmp_path / "outbox.db", keyring=None, clock=clock, keep_sends_for=60.0,
                           redis=redis)
        await box.open()
        opened.append(box)
        return box

    yield make
    for box in reversed(opened):
        await box.close()
    if request.param == "redis":
        await drop_prefix(prefix)


@pytest.fixture
async def outbox(reopen: Factory) -> Outbox:
    return await reopen()


async def enqueue(box: Outbox, *events: RenderedEvent, invalid: tuple[InvalidEvent, ...] = ()) -> tuple[int, ...]:
    r = await box.enqueue(b'{"n": 1}', list(events), list(invalid), resend_interval=HOUR)
    return r.queued, r.duplicates, r.dead_lettered, r.rerouted


async def drain(box: Outbox) -> list[tuple[str, str, str]]:
    """Claim and ack until nothing is due; returns (routing key, dedup key, action) in send order."""
    sent: list[tuple[str, str, str]] = []
    for _ in range(100):
        items = await box.claim(10, ())
        if not items:
            return sent
        for item in items:
            sent.append((item.routing_key, item.dedup_key, item.action))
            await box.ack(item)
    raise AssertionError("never drained")


# ---------------------------------------------------------------- intake


async def test_enqueue_is_durable_across_a_reopen(reopen: Factory) -> None:
    """What enqueue answered for is there for the next outbox on the same storage."""
    box = await reopen()
    assert await enqueue(box, ev("a"), ev("b", "resolve")) == (2, 0, 0, 0)
    again = await reopen()
    assert [(i.dedup_key, i.action) for i in await again.items(status="queued")] == [("a", "trigger"),
                                                                                     ("b", "resolve")]
    assert again.depth().queued == 2


async def test_intake_is_idempotent(outbox: Outbox, clock: FakeClock) -> None:
    """The same notification twice queues once; a changed payload or a resolve is new."""
    assert await enqueue(outbox, ev("a")) == (1, 0, 0, 0)
    assert await enqueue(outbox, ev("a")) == (0, 1, 0, 0)
    assert await enqueue(outbox, ev("a", h="h2")) == (1, 0, 0, 0)
    assert await enqueue(outbox, ev("a", "resolve")) == (1, 0, 0, 0)
    assert await enqueue(outbox, ev("a", "resolve")) == (0, 1, 0, 0)
    assert await drain(outbox) == [("default", "a", "trigger"), ("default", "a", "trigger"),
                                   ("default", "a", "resolve")]
    assert await enqueue(outbox, ev("a", "resolve")) == (0, 1, 0, 0)  # PagerDuty's last word already
    clock.advance(2 * HOUR)
    assert await enqueue(outbox, ev("a")) == (1, 0, 0, 0)


async def test_a_told_trigger_is_a_duplicate_only_inside_resend_interval(outbox: Outbox, clock: FakeClock) -> None:
    """After delivery the same trigger is not resent within resend_interval, and is after it."""
    await enqueue(outbox, ev("a"))
    await drain(outbox)
    clock.advance(HOUR - 1)
    assert await enqueue(outbox, ev("a")) == (0, 1, 0, 0)
    clock.advance(2)
    assert await enqueue(outbox, ev("a")) == (1, 0, 0, 0)


async def test_a_queued_trigger_coalesces_repeats_however_long_it_waits(outbox: Outbox, clock: FakeClock) -> None:
    """While PagerDuty is unreachable, repeats of a queued trigger collapse into it."""
    await enqueue(outbox, ev("a"))
    clock.advance(5 * HOUR)
    assert await enqueue(outbox, ev("a")) == (0, 1, 0, 0)
    assert len(await outbox.items(status="queued")) == 1


async def test_a_resolve_goes_with_the_routing_key_of_its_trigger(outbox: Outbox) -> None:
    """If rules now pick another key, the resolve still goes where the trigger went."""
    await enqueue(outbox, ev("a", key="db-oncall"))
    assert await enqueue(outbox, ev("a", "resolve", key="default")) == (1, 0, 0, 1)
    assert await drain(outbox) == [("db-oncall", "a", "trigger"), ("db-oncall", "a", "resolve")]


async def test_invalid_events_are_kept_as_dead_letters(outbox: Outbox) -> None:
    """An event render could not make valid is stored dead with its reason, never dropped."""
    bad = InvalidEvent(routing_key="default", dedup_key="z", action="trigger", body={"x": 1},
                       reason="summary template produced nothing")
    assert await enqueue(outbox, invalid=(bad,)) == (0, 0, 1, 0)
    (dead,) = await outbox.items(status="dead")
    assert (dead.reason, dead.last_error, dead.body) == ("invalid_event", "summary template produced nothing",
                                                         {"x": 1})
    assert outbox.depth().dead == 1


async def test_concurrent_enqueues_each_get_their_answer(outbox: Outbox) -> None:
    """Many tasks enqueueing at once all succeed, each with its own result, and every id is distinct."""
    results = await asyncio.gather(*(enqueue(outbox, ev(f"k{i % 150}")) for i in range(300)))
    assert sorted(r[:2] for r in results) == [(0, 1)] * 150 + [(1, 0)] * 150
    items = await outbox.items(status="queued")
    assert len({i.id for i in items}) == len(items) == 150 == outbox.depth().queued


# ---------------------------------------------------------------- delivery


async def test_claim_gives_one_head_per_dedup_key_resolves_and_criticals_first(outbox: Outbox) -> None:
    """One head per key (a resolve never overtakes its trigger); among heads resolves and criticals go first."""
    await enqueue(outbox, ev("a"), ev("b", "resolve"), ev("c", severity="critical"), ev("d"))
    await enqueue(outbox, ev("a", "resolve"))
    heads = await outbox.claim(10, ())
    assert [(i.dedup_key, i.action) for i in heads] == [("b", "resolve"), ("c", "trigger"), ("a", "trigger"),
                                                        ("d", "trigger")]
    assert [i.superseded for i in heads] == [False, False, True, False]
    assert [i.dedup_key for i in await outbox.claim(10, [heads[0].id, heads[1].id], ["nobody"])] == ["a", "d"]
    assert await outbox.claim(10, (), ["default"]) == []


async def test_retry_later_holds_the_key_until_due(outbox: Outbox, clock: FakeClock) -> None:
    """A rescheduled head is not claimable, and nor is what queues behind it, until it is due."""
    await enqueue(outbox, ev("a"))
    await enqueue(outbox, ev("a", "resolve"))
    (item,) = await outbox.claim(10, ())
    await outbox.retry_later(item, clock.now() + 30, Reason.SERVER_ERROR, 503, "unavailable")
    assert await outbox.claim(10, ()) == []
    assert await outbox.next_due() == clock.now() + 30
    clock.advance(30)
    (again,) = await outbox.claim(10, ())
    assert (again.id, again.attempts, again.reason, again.last_status) == (item.id, 1, "server_error", 503)


async def test_dead_letter_keeps_the_event_and_the_next_identical_one_is_sent(outbox: Outbox) -> None:
    """A dead-lettered trigger stays with its reason; PagerDuty never heard it, so the same trigger is queued."""
    await enqueue(outbox, ev("a"))
    (item,) = await outbox.claim(1, ())
    await outbox.dead_letter(item, Reason.INVALID_EVENT, 400, "Event object is invalid: bad")
    (dead,) = await outbox.items(status="dead")
    assert (dead.id, dead.reason, dead.last_status, dead.last_error, dead.attempts) == (
        item.id, "invalid_event", 400, "Event object is invalid: bad", 1)
    assert (outbox.depth().queued, outbox.depth().dead) == (0, 1)
    assert await enqueue(outbox, ev("a")) == (1, 0, 0, 0)


async def test_a_timeout_sends_the_resolve_twice(outbox: Outbox, clock: FakeClock) -> None:
    """After a trigger attempt timed out, the delivered resolve goes once more after settle_delay."""
    await enqueue(outbox, ev("a"))
    await enqueue(outbox, ev("a", "resolve"))
    (trigger,) = await outbox.claim(1, ())
    await outbox.retry_later(trigger, clock.now(), Reason.TIMEOUT, None, "timed out")
    (trigger,) = await outbox.claim(1, ())
    assert await outbox.ack(trigger) is False
    (resolve,) = await outbox.claim(1, ())
    assert await outbox.ack(resolve, settle_delay=60) is True
    assert await outbox.claim(1, ()) == []
    clock.advance(60)
    (again,) = await outbox.claim(1, ())
    assert again.id == resolve.id and again.last_error is not None and again.last_error.startswith("settle:")
    assert await outbox.ack(again, settle_delay=60) is False
    assert await outbox.items() == [] and outbox.depth().queued == 0


async def test_settling_twice_changes_nothing(outbox: Outbox) -> None:
    """An ack or dead letter of an item already settled is a no-op."""
    await enqueue(outbox, ev("a"))
    (item,) = await outbox.claim(1, ())
    assert await outbox.ack(item) is False
    assert await outbox.ack(item) is False
    await outbox.dead_letter(item, Reason.EXPIRED, None, "late")
    assert await outbox.items() == [] and (outbox.depth().queued, outbox.depth().dead) == (0, 0)


async def test_the_send_window_survives_a_reopen(reopen: Factory, clock: FakeClock) -> None:
    """Noted send times are written with the next write, survive a reopen, and age out."""
    box = await reopen()
    t0 = clock.now()
    box.note_send("default", t0 - 5)
    box.note_send("db", t0 - 1)
    assert await box.recent_sends(t0 - 60) == []  # not written on its own
    await enqueue(box, ev("a"))
    assert await box.recent_sends(t0 - 2) == [("db", t0 - 1)]
    again = await reopen()
    assert await again.recent_sends(t0 - 60) == [("default", t0 - 5), ("db", t0 - 1)]
    clock.advance(120.0)
    await enqueue(again, ev("b"))
    assert await again.recent_sends(0.0) == []


async def test_the_audit_head_is_stored_with_the_next_write_and_at_close(reopen: Factory) -> None:
    """The audit log's chain head, noted between writes: none at first; stored with the next write (another
    outbox on the same storage reads it then, not before); one noted after the last write is stored at close."""
    box = await reopen()
    assert await box.audit_head() is None
    first, second = "7:" + "a" * 64, "8:" + "b" * 250  # up to 256 characters
    box.note_audit_head(first)
    assert await box.audit_head() == first
    assert await (await reopen()).audit_head() is None  # not written on its own
    await enqueue(box, ev("a"))
    assert await (await reopen()).audit_head() == first
    box.note_audit_head(second)
    await box.close()
    assert await (await reopen()).audit_head() == second


async def test_an_audit_head_over_256_characters_is_refused(outbox: Outbox) -> None:
    with pytest.raises(ValueError, match="^an audit head is text of at most 256 characters$"):
        outbox.note_audit_head("x" * 257)
    assert await outbox.audit_head() is None


async def test_check_passes_on_a_writable_outbox(outbox: Outbox) -> None:
    """check() returns when a write would succeed."""
    await outbox.check()


# ---------------------------------------------------------------- operators


async def test_ids_are_never_reused(reopen: Factory) -> None:
    """Deleting the newest items, even across a reopen, never gives their ids to new ones."""
    box = await reopen()
    await enqueue(box, ev("a"), ev("b"))
    items = await box.items()
    for item in await box.claim(10, ()):
        await box.ack(item)
    again = await reopen()
    await enqueue(again, ev("c"))
    (new,) = await again.items()
    assert new.id > max(i.id for i in items)


async def test_get_items_and_notification(outbox: Outbox) -> None:
    """An operator reads items by id and filter, and the notification each came from."""
    await enqueue(outbox, ev("a"), ev("b", key="db"))
    a, b = await outbox.items()
    assert await outbox.get(b.id) == b
    assert await outbox.items(routing_key="db") == [b]
    assert await outbox.items(status="dead") == []
    assert await outbox.items(limit=1) == [a]
    assert await outbox.notification(a.id) == b'{"n": 1}'
    with pytest.raises(NoSuchItem):
        await outbox.get(10_000)


async def test_requeue_brings_the_last_word_back_under_the_current_key(outbox: Outbox) -> None:
    """A dead letter made under an unknown key name is requeued under the name the rules give now."""
    await enqueue(outbox, ev("a", key="paymnets"))
    (item,) = await outbox.claim(1, ())
    await outbox.dead_letter(item, Reason.UNKNOWN_ROUTING_KEY, None, "routing key 'paymnets' is not configured")
    result = await outbox.requeue(item.id, ev("a", key="payments", h="h2"), resend_interval=HOUR)
    assert (result.result, result.ids, result.routing_key) == ("replayed", (item.id,), "payments")
    (queued,) = await outbox.claim(1, ())
    assert (queued.id, queued.routing_key, queued.payload_hash, queued.attempts) == (item.id, "payments", "h2", 0)
    assert (outbox.depth().queued, outbox.depth().dead) == (1, 0)


async def test_requeue_of_a_superseded_dead_letter_deletes_it(outbox: Outbox) -> None:
    """A dead trigger followed by a delivered resolve is not sent again: the incident would reopen."""
    await enqueue(outbox, ev("a"))
    (trigger,) = await outbox.claim(1, ())
    await outbox.dead_letter(trigger, Reason.INVALID_EVENT, 400, "bad")
    await enqueue(outbox, ev("a", "resolve"))
    await drain(outbox)
    result = await outbox.requeue(trigger.id, ev("a"), resend_interval=HOUR)
    assert result.result == "superseded"
    assert await outbox.items() == [] and outbox.depth().dead == 0


async def test_requeue_then_the_next_resolve_is_sent(outbox: Outbox) -> None:
    """Trigger told; resolve and a changed re-fire dead-lettered; both replayed: the re-fire is sent, the
    stale resolve is not, and Alertmanager's next resolve is sent too (not taken for a duplicate)."""
    await enqueue(outbox, ev("f"))
    await drain(outbox)
    words = (ev("f", "resolve"), ev("f", h="h2"))
    dead = []
    for event in words:
        assert await enqueue(outbox, event) == (1, 0, 0, 0)
        (item,) = await outbox.claim(1, ())
        await outbox.dead_letter(item, Reason.INVALID_EVENT, 400, "bad")
        dead.append(item)
    results = [await outbox.requeue(d.id, e, resend_interval=HOUR) for d, e in zip(dead, words, strict=True)]
    assert [r.result for r in results] == ["superseded", "replayed"]
    assert await drain(outbox) == [("default", "f", "trigger")]
    assert await enqueue(outbox, ev("f", "resolve")) == (1, 0, 0, 0)
    assert await drain(outbox) == [("default", "f", "resolve")]


async def test_a_refire_of_what_pagerduty_holds_is_a_duplicate_even_after_a_dead_resolve(outbox: Outbox) -> None:
    """Trigger told, its resolve dead-lettered: the same trigger again is already PagerDuty's word."""
    await enqueue(outbox, ev("f"))
    await drain(outbox)
    await enqueue(outbox, ev("f", "resolve"))
    (item,) = await outbox.claim(1, ())
    await outbox.dead_letter(item, Reason.INVALID_EVENT, 400, "bad")
    assert await enqueue(outbox, ev("f")) == (0, 1, 0, 0)
    assert (await outbox.requeue(item.id, ev("f", "resolve"), resend_interval=HOUR)).result == "superseded"
    assert await enqueue(outbox, ev("f", "resolve")) == (1, 0, 0, 0)


async def test_requeue_refuses_what_is_not_dead(outbox: Outbox) -> None:
    """Only dead letters are requeued."""
    await enqueue(outbox, ev("a"))
    (item,) = await outbox.items()
    assert (await outbox.requeue(item.id, ev("a"), resend_interval=HOUR)).result == "not_dead"
    with pytest.raises(NoSuchItem):
        await outbox.requeue(10_000, ev("a"), resend_interval=HOUR)


async def test_purge_deletes_dead_items_and_queued_only_when_asked(outbox: Outbox) -> None:
    """Purge removes dead letters; queued items only with include_queued, and then their key forgets them."""
    await enqueue(outbox, ev("a"), ev("b"))
    a, b = await outbox.claim(10, ())
    await outbox.dead_letter(a, Reason.INVALID_EVENT, 400, "bad")
    assert await outbox.purge([a.id, b.id]) == 1
    assert [i.id for i in await outbox.items()] == [b.id]
    assert await outbox.purge([b.id], include_queued=True) == 1
    assert await outbox.items() == [] and (outbox.depth().queued, outbox.depth().dead) == (0, 0)
    assert await enqueue(outbox, ev("b")) == (1, 0, 0, 0)  # PagerDuty never heard it
