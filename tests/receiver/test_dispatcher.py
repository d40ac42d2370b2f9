"""The dispatcher with a real SQLite outbox, a fake clock and a sender made from a function."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from receiver.breaker import CircuitBreaker
from receiver.dispatcher import Dispatcher
from receiver.errors import Reason
from receiver.limiter import RateLimit, RateLimiter
from receiver.metrics import Metrics
from receiver.outbox import OutboxItem
from receiver.outbox.sqlite import SQLiteOutbox
from receiver.pagerduty.events import SendResult, classify
from receiver.secret import Secret
from receiver.settings import PagerDutySettings
from receiver.settlement import backoff_delay
from receiver.supervisor import Supervisor
from tests.fakes import FakeClock, FakeSender
from tests.receiver.test_outbox_sqlite import ev
from transforms.base import RenderedEvent

KEYS = {"default": Secret("k" * 32), "db": Secret("d" * 32)}
OK = SendResult(ok=True, status=202)


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) until ``pred()`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def until_item(rig: Rig, pred: Callable[[OutboxItem], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) until the one queued item satisfies ``pred`` (a settle commits just after it is counted)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not any(pred(i) for i in await rig.outbox.items(status="queued")):
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def look_again(rig: Rig) -> None:
    """Wake the dispatcher and wait (bounded) until it has looked at the queue since: what it did not send
    then, it did not send on purpose."""
    n = rig.dispatcher.wake()
    await until(lambda: rig.dispatcher.looked_after >= n)


@dataclass
class Rig:
    outbox: SQLiteOutbox
    sender: FakeSender
    clock: FakeClock
    dispatcher: Dispatcher
    metrics: Metrics
    limiter: RateLimiter
    breaker: CircuitBreaker

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """The sum of ``name``'s samples whose labels include ``labels`` (routing keys summed unless named)."""
        want = dict(labels or {}).items()
        return sum(s.value for m in self.metrics.registry.collect() for s in m.samples
                   if s.name == name and want <= s.labels.items())


@pytest.fixture
def skip_superseded() -> bool:
    """pagerduty.skip_superseded_triggers (off by default)."""
    return False


@pytest.fixture
def answers() -> list[SendResult]:
    """Answers the fake PagerDuty gives, in order; 202 once the list is empty."""
    return []


async def build(tmp_path: Path, answers: list[SendResult], rate_limit: RateLimit | None = None,
                skip_superseded: bool = False) -> Rig:
    """A dispatcher on a SQLite outbox, a fake PagerDuty and a fake clock, not yet running."""
    clock = FakeClock()
    outbox = SQLiteOutbox(tmp_path / "o.db", clock=clock)
    await outbox.open()
    sender = FakeSender(lambda body: answers.pop(0) if answers else OK)
    metrics = Metrics(CollectorRegistry())
    settings = PagerDutySettings(routing_keys=KEYS, retry_attempts=3, initial_backoff=1, max_backoff=8,
                                 max_age=3600, concurrency=4, rate_limit=rate_limit or RateLimit(),
                                 backoff_on_429=30,
                                 failure_threshold=3, recovery_timeout=60,
                                 skip_superseded_triggers=skip_superseded)
    limiter = RateLimiter(settings.rate_limit, clock)
    breaker = CircuitBreaker(3, 60, name="pd", clock=clock)
    dispatcher = Dispatcher(outbox, sender, KEYS, settings, metrics=metrics, clock=clock,
                            log=logging.getLogger("test"), rand=lambda: 1.0, limiter=limiter, breaker=breaker)
    return Rig(outbox, sender, clock, dispatcher, metrics, limiter, breaker)


@pytest.fixture(params=[RateLimit()])
async def rig(request: pytest.FixtureRequest, tmp_path: Path, answers: list[SendResult],
              skip_superseded: bool) -> AsyncIterator[Rig]:
    built = await build(tmp_path, answers, request.param, skip_superseded)
    dispatcher, outbox = built.dispatcher, built.outbox
    task = asyncio.create_task(dispatcher.run())
    yield built
    dispatcher.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 20)  # bounded: a hang here fails the test instead of stalling the suite
    await asyncio.wait_for(outbox.close(), 10)


async def put(rig: Rig, *events: Any) -> None:
    await rig.outbox.enqueue(b"{}", list(events), [], resend_interval=3600)
    rig.dispatcher.wake()


async def test_delivers_trigger_then_resolve_with_the_secret(rig: Rig) -> None:
    """Events reach PagerDuty in order per dedup_key, with the named key's secret, and leave the outbox."""
    await put(rig, ev("a"), ev("b", key="db"))
    await put(rig, ev("a", "resolve"))
    await until(lambda: rig.outbox.depth().queued == 0)
    sent = [(k, b["dedup_key"], b["event_action"]) for k, b in rig.sender.calls]
    assert sent.index((KEYS["default"].reveal(), "a", "trigger")) < sent.index(
        (KEYS["default"].reveal(), "a", "resolve"))
    assert (KEYS["db"].reveal(), "b", "trigger") in sent and len(sent) == 3
    await until(lambda: rig.value("pdrelay_events_sent_total") == 3)  # counted just after the commit


async def test_server_error_is_retried_after_backoff(rig: Rig, answers: list[SendResult]) -> None:
    """A 503 reschedules the event; once the backoff has passed it is sent again and acked."""
    answers.append(classify(503, b"down"))
    await put(rig, ev("a"))
    await until(lambda: len(rig.sender.calls) == 1)
    # the failure is counted before the retry is written: wait for the stored retry itself
    await until_item(rig, lambda i: i.attempts == 1)
    assert rig.value("pdrelay_events_failed_total", {"reason": "server_error"}) == 1
    (item,) = await rig.outbox.items(status="queued")
    assert (item.attempts, item.reason, item.next_attempt_at) == (1, "server_error", rig.clock.now() + 1.0)
    rig.clock.advance(1.0)
    rig.dispatcher.wake()
    await until(lambda: rig.outbox.depth().queued == 0)
    assert len(rig.sender.calls) == 2


async def test_invalid_event_is_dead_lettered_and_the_key_moves_on(rig: Rig, answers: list[SendResult]) -> None:
    """A 400 dead-letters the trigger with PagerDuty's errors; its resolve is still sent."""
    answers.append(classify(400, b'{"status":"invalid event","message":"Event object is invalid",'
                                 b'"errors":["bad severity"]}'))
    await put(rig, ev("a"), ev("a", "resolve"))
    await until(lambda: rig.outbox.depth().queued == 0)
    (dead,) = await rig.outbox.items(status="dead")
    assert (dead.action, dead.reason, dead.last_status, dead.last_error) == (
        "trigger", "invalid_event", 400, "invalid event: Event object is invalid: bad severity")
    assert [b["event_action"] for _, b in rig.sender.calls] == ["trigger", "resolve"]
    await until(lambda: rig.value("pdrelay_events_dead_lettered_total", {"reason": "invalid_event"}) == 1)


async def test_unknown_routing_key_name_is_dead_lettered_without_sending(rig: Rig) -> None:
    """A rule naming a key the config lacks never reaches PagerDuty."""
    await put(rig, ev("a", key="nobody"))
    await until(lambda: rig.outbox.depth().dead == 1)
    (dead,) = await rig.outbox.items(status="dead")
    assert (dead.reason, dead.last_error) == ("unknown_routing_key", "routing key 'nobody' is not configured")
    assert rig.sender.calls == []


async def test_retries_end_in_a_dead_letter_after_retry_attempts(rig: Rig, answers: list[SendResult]) -> None:
    """An event that keeps failing is dead-lettered as expired after retry_attempts, with the last reason."""
    answers.extend([classify(502, b"bad gateway")] * 3)
    await put(rig, ev("a"))
    for attempt in (1, 2):
        await until(lambda a=attempt: len(rig.sender.calls) == a)  # type: ignore[misc]
        await until(lambda a=attempt: rig.value("pdrelay_events_failed_total", {"reason": "server_error"}) == a)  # type: ignore[misc]
        await until_item(rig, lambda item, a=attempt: item.attempts == a)  # type: ignore[misc]  # the retry's commit
        rig.clock.advance(8)
        rig.dispatcher.wake()
    await until(lambda: rig.outbox.depth().dead == 1)
    (dead,) = await rig.outbox.items(status="dead")
    assert (dead.reason, dead.attempts, dead.last_error) == (
        "expired", 3, "gave up after 3 attempts; last: server_error: bad gateway")


def test_backoff_is_exponential_capped_and_jittered() -> None:
    """Delays double from initial up to max; jitter only ever takes away up to half."""
    assert [backoff_delay(n, 1, 8, lambda: 1.0) for n in range(1, 6)] == [1, 2, 4, 8, 8]
    assert [backoff_delay(n, 1, 8, lambda: 0.0) for n in range(1, 6)] == [0.5, 1, 2, 4, 4]
    assert Reason.RATE_LIMITED.retryable and not Reason.INVALID_EVENT.retryable


@pytest.mark.parametrize("rig", [RateLimit(per_key=2, window_seconds=60)], indirect=True)
async def test_a_key_is_paced_to_its_budget_and_others_are_not_held_up(rig: Rig) -> None:
    """With 2 per 60 s, a key sends two events, waits for its window, then the rest; another key goes at once."""
    await put(rig, *(ev(f"a{i}") for i in range(5)))
    await until(lambda: len(rig.sender.calls) == 2)
    await put(rig, ev("b0", key="db"))
    # The send is recorded before its ack commits (on the outbox's thread): wait for both.
    await until(lambda: len(rig.sender.calls) == 3 and rig.outbox.depth().queued == 3)
    assert [b["dedup_key"] for _, b in rig.sender.calls] == ["a0", "a1", "b0"]
    rig.clock.advance(59.9)
    await look_again(rig)
    assert len(rig.sender.calls) == 3  # the window has not moved yet
    rig.clock.advance(0.1)
    rig.dispatcher.wake()
    await until(lambda: len(rig.sender.calls) == 5)
    assert [b["dedup_key"] for _, b in rig.sender.calls][3:] == ["a2", "a3"]
    rig.clock.advance(60)
    rig.dispatcher.wake()
    await until(lambda: rig.outbox.depth().queued == 0)


@pytest.mark.parametrize("rig", [RateLimit(per_key=1, window_seconds=60)], indirect=True)
async def test_over_budget_resolves_and_critical_triggers_go_first(rig: Rig) -> None:
    """When a key has room for one event at a time, resolves and critical triggers jump the queue."""
    crit = RenderedEvent(routing_key="default", dedup_key="c", action="trigger", payload_hash="hc",
                         body={"event_action": "trigger", "dedup_key": "c",
                               "payload": {"summary": "c", "source": "s", "severity": "critical"}})
    await put(rig, ev("w1"), ev("w2"), crit, ev("r", "resolve"))
    await until(lambda: len(rig.sender.calls) == 1)
    for sent in (2, 3, 4):
        rig.clock.advance(60)
        rig.dispatcher.wake()
        await until(lambda n=sent: len(rig.sender.calls) == n)  # type: ignore[misc]
    assert [b["dedup_key"] for _, b in rig.sender.calls] == ["c", "r", "w1", "w2"]


async def test_429_pauses_the_key_keeps_its_queue_and_does_not_use_up_attempts(
    rig: Rig, answers: list[SendResult]
) -> None:
    """A 429 pauses the key for backoff_on_429; the event is sent afterwards, attempts notwithstanding."""
    answers.extend([classify(429, b"slow down")] * 5)
    await put(rig, ev("a"))
    for n in range(1, 6):
        await until(lambda n=n: len(rig.sender.calls) == n)  # type: ignore[misc]
        await until(lambda n=n: rig.value("pdrelay_events_failed_total", {"reason": "rate_limited"}) == n)  # type: ignore[misc]
        # The failure is counted before its reschedule commits: wait for the commit, bounded.
        await until_item(rig, lambda item, n=n: item.attempts == n)  # type: ignore[misc]
        (item,) = await rig.outbox.items(status="queued")
        assert (item.attempts, item.next_attempt_at) == (n, rig.clock.now() + 30)
        rig.clock.advance(29.9)
        await look_again(rig)
        assert len(rig.sender.calls) == n
        rig.clock.advance(0.1)
        rig.dispatcher.wake()
    await until(lambda: rig.outbox.depth().queued == 0)
    assert rig.outbox.depth().dead == 0 and len(rig.sender.calls) == 6


async def test_breaker_opens_holds_events_and_closes_after_a_good_trial(
    rig: Rig, answers: list[SendResult]
) -> None:
    """Three 503s in a row open the breaker: nothing is sent until recovery_timeout, then one trial, then the rest."""
    answers.extend([classify(503, b"down")] * 3)
    await put(rig, ev("a"), ev("b"), ev("c"), ev("d"))  # all four go out at once (concurrency 4); d succeeds
    await until(lambda: rig.breaker.state == "open")
    await until(lambda: rig.outbox.depth().queued == 3)
    assert len(rig.sender.calls) == 4
    assert rig.value("pdrelay_breaker_state", {"endpoint": "pd"}) == 0  # the rig wires no metrics listener
    rig.clock.advance(8)  # every event is due again, but the breaker is open
    await look_again(rig)
    assert len(rig.sender.calls) == 4
    rig.clock.advance(52)
    rig.dispatcher.wake()
    await until(lambda: rig.outbox.depth().queued == 0)
    assert rig.breaker.state == "closed"
    assert sorted(b["dedup_key"] for _, b in rig.sender.calls[4:]) == ["a", "b", "c"]


async def test_resolve_is_sent_again_after_the_settle_delay_when_a_trigger_timed_out(
    rig: Rig, answers: list[SendResult]
) -> None:
    """A trigger that timed out may land late; its resolve goes once more settle_delay later, and only once."""
    answers.append(SendResult(ok=False, reason=Reason.TIMEOUT, detail="timed out (ReadTimeout)"))
    await put(rig, ev("a"))
    await until(lambda: rig.value("pdrelay_events_failed_total", {"reason": "timeout"}) == 1)
    await until_item(rig, lambda item: item.attempts == 1)  # the retry's commit follows the count
    rig.clock.advance(1)
    rig.dispatcher.wake()
    await until(lambda: rig.outbox.depth().queued == 0)
    await put(rig, ev("a", "resolve"))
    await until(lambda: [b["event_action"] for _, b in rig.sender.calls] == ["trigger", "trigger", "resolve"])
    await until(lambda: rig.value("pdrelay_events_sent_total") == 2)  # the first trigger attempt failed
    (again,) = await rig.outbox.items(status="queued")
    assert (again.action, again.attempts, again.next_attempt_at) == ("resolve", 0, rig.clock.now() + 60)
    assert again.last_error is not None and again.last_error.startswith(
        "settle: sending the resolve once more because a trigger attempt timed out")
    rig.clock.advance(60)
    rig.dispatcher.wake()
    await until(lambda: rig.value("pdrelay_events_sent_total") == 3)
    assert rig.outbox.depth().queued == 0
    assert [b["event_action"] for _, b in rig.sender.calls] == ["trigger", "trigger", "resolve", "resolve"]


@pytest.mark.parametrize(("skip_superseded", "sent"), [(False, ["trigger", "resolve"]), (True, ["resolve"])])
@pytest.mark.parametrize("rig", [RateLimit(per_key=1, window_seconds=60)], indirect=True)
async def test_a_trigger_with_its_resolve_queued_behind_is_sent_unless_told_otherwise(
    rig: Rig, skip_superseded: bool, sent: list[str]
) -> None:
    """By default PagerDuty hears the trigger and then the resolve; with skip_superseded_triggers only the resolve."""
    await put(rig, ev("x"))  # uses the key's only slot in this window
    await until(lambda: len(rig.sender.calls) == 1)
    await put(rig, ev("a"), ev("a", "resolve"))
    for _ in range(len(sent)):
        rig.clock.advance(60)
        await look_again(rig)
    await until(lambda: rig.value("pdrelay_events_sent_total") == 1 + len(sent))
    assert rig.outbox.depth().queued == 0
    assert [b["event_action"] for _, b in rig.sender.calls[1:]] == sent
    assert rig.value("pdrelay_events_superseded_total") == (1 if skip_superseded else 0)


async def test_stop_ends_the_run_even_when_a_call_swallows_the_cancellation(tmp_path: Path) -> None:
    """Python 3.11's asyncio.wait_for (redis-py writes each command with it) returns normally when the cancel
    lands as its write finishes: the supervised dispatcher still ends once stopped, and is not restarted."""
    rig = await build(tmp_path, [])
    real, entered, swallowed = rig.outbox.next_due, asyncio.Event(), asyncio.Event()

    async def next_due() -> float | None:
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()  # and carry on as if nothing happened
        return await real()

    rig.outbox.next_due = next_due  # type: ignore[method-assign]
    supervisor = Supervisor("dispatcher", rig.dispatcher.run, log=logging.getLogger("test"),
                            on_stop=rig.dispatcher.stop)
    task = asyncio.create_task(supervisor.run())
    await asyncio.wait_for(entered.wait(), 5)
    supervisor.stop()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)  # bounded: without stop() this never ends
    assert done == {task} and swallowed.is_set() and not task.cancelled() and task.exception() is None
    await rig.outbox.close()
