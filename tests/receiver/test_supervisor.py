"""The dispatcher never stops silently: an unexpected error is logged with its traceback, counted, and the
dispatcher runs again after a backoff; one that keeps failing makes /readyz answer 503 until it recovers.

The backoff sleeps on the fake clock (:class:`Backoff`): nothing here waits for real time to pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.breaker import CircuitBreaker
from receiver.dispatcher import Dispatcher
from receiver.limiter import RateLimiter
from receiver.metrics import Metrics
from receiver.outbox import OutboxItem
from receiver.outbox.sqlite import SQLiteOutbox
from receiver.pagerduty.events import SendResult
from receiver.secret import Secret
from receiver.settings import OutboxSettings, PagerDutySettings, RulesSettings, Settings
from receiver.supervisor import Supervisor
from tests.fakes import FakeClock, FakeSender
from tests.receiver.test_outbox_sqlite import ev

KEYS = {"default": Secret("k" * 32)}
OK = SendResult(ok=True, status=202)
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


class Backoff:
    """The supervisor's sleep on the fake clock: records each delay and moves the clock by it; from the
    ``hold_at``-th delay on, waits until the test opens :attr:`gate`."""

    def __init__(self, clock: FakeClock, hold_at: int | None = None) -> None:
        self.clock, self.hold_at = clock, hold_at
        self.delays: list[float] = []
        self.gate = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.clock.advance(delay)
        if self.hold_at is not None and len(self.delays) >= self.hold_at:
            await self.gate.wait()


async def until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The formatted tracebacks of the supervisor's error lines."""
    return [logging.Formatter().formatException(r.exc_info) for r in caplog.records
            if r.exc_info and r.getMessage().endswith("failed with an unexpected error; restarting it")]


# ---------------------------------------------------------------------- the supervisor alone


async def test_failures_back_off_exponentially_capped_and_a_clean_pass_resets_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each failure is counted and logged with its traceback; restarts wait 1, 2, 4 … 60 s (capped); the
    problem is reported from the third failure in a row until a clean pass; cancellation stops it."""
    clock, failures = FakeClock(), 9
    backoff, restarts, problems = Backoff(clock), [], []
    passed = asyncio.Event()

    async def task(clean: Callable[[], None]) -> None:
        nonlocal failures
        problems.append(supervisor.problem)
        if failures:
            failures -= 1
            raise RuntimeError(f"boom {9 - failures}")
        clean()
        passed.set()
        await asyncio.Event().wait()  # runs until cancelled

    supervisor = Supervisor("dispatcher", task, log=logging.getLogger("pdrelay.test"),
                            on_restart=lambda: restarts.append(clock.now()), sleep=backoff)
    runner = asyncio.create_task(supervisor.run())
    await asyncio.wait_for(passed.wait(), 10)
    assert backoff.delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert len(restarts) == 9
    assert problems == [None, None, None, *(f"RuntimeError: boom {n}" for n in range(3, 10))]
    assert supervisor.problem is None and supervisor.failures == 0
    found = tracebacks(caplog)
    assert len(found) == 9 and all("in task" in t and "RuntimeError: boom" in t for t in found)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(runner, 10)


async def test_cancellation_during_a_backoff_stops_it_at_once() -> None:
    clock = FakeClock()
    backoff = Backoff(clock, hold_at=1)

    async def task(clean: Callable[[], None]) -> None:
        raise OSError("down")

    supervisor = Supervisor("dispatcher", task, log=logging.getLogger("pdrelay.test"), sleep=backoff)
    runner = asyncio.create_task(supervisor.run())
    await until(lambda: backoff.delays == [1.0])
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(runner, 10)


def test_a_long_message_is_capped_in_the_problem() -> None:
    async def run() -> str | None:
        supervisor = Supervisor("dispatcher", lambda clean: _raise(ValueError("x" * 500)),
                                log=logging.getLogger("pdrelay.test"), sleep=_stop_after(3), unready_after=3)
        with contextlib.suppress(_Stop):
            await supervisor.run()
        return supervisor.problem

    assert asyncio.run(run()) == "ValueError: " + "x" * 200 + "…"


class _Stop(Exception):
    pass


async def _raise(exc: BaseException) -> None:
    raise exc


def _stop_after(n: int) -> Callable[[float], Awaitable[None]]:
    calls = []

    async def sleep(delay: float) -> None:
        calls.append(delay)
        if len(calls) >= n:
            raise _Stop

    return sleep


# ---------------------------------------------------------------------- the dispatcher, supervised


class ClaimFails(SQLiteOutbox):
    """A real outbox whose next ``failures`` claims raise an error nobody classified (a bug, a driver error)."""

    failures = 0

    async def claim(self, limit: int, exclude: Collection[int], exclude_keys: Collection[str] = ()
                    ) -> list[OutboxItem]:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("claim blew up")
        return await super().claim(limit, exclude, exclude_keys)


@dataclass
class Rig:
    outbox: ClaimFails
    sender: FakeSender
    dispatcher: Dispatcher
    supervisor: Supervisor
    metrics: Metrics
    backoff: Backoff
    sender_fails: list[bool]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = FakeClock()
    outbox = ClaimFails(tmp_path / "o.db", clock=clock)
    await outbox.open()
    sender_fails = [False]

    def answer(body: Any) -> SendResult:
        if sender_fails[0]:
            sender_fails[0] = False
            raise TypeError("the sender blew up")
        return OK

    sender = FakeSender(answer)
    metrics = Metrics(CollectorRegistry())
    settings = PagerDutySettings(routing_keys=KEYS, concurrency=2)
    dispatcher = Dispatcher(outbox, sender, KEYS, settings, metrics=metrics, clock=clock,
                            log=logging.getLogger("pdrelay.test"), rand=lambda: 1.0,
                            limiter=RateLimiter(settings.rate_limit, clock),
                            breaker=CircuitBreaker(3, 60, name="pd", clock=clock))
    backoff = Backoff(clock)
    supervisor = Supervisor("dispatcher", dispatcher.run, log=logging.getLogger("pdrelay.test"),
                            on_restart=metrics.dispatcher_restarts.inc, sleep=backoff)
    task = asyncio.create_task(supervisor.run())
    yield Rig(outbox, sender, dispatcher, supervisor, metrics, backoff, sender_fails)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 20)
    await asyncio.wait_for(outbox.close(), 10)


@pytest.mark.parametrize("failing", ["outbox", "sender"])
async def test_an_unexpected_error_restarts_the_dispatcher_and_the_event_is_delivered(
    rig: Rig, caplog: pytest.LogCaptureFixture, failing: str
) -> None:
    """An outbox claim or a send that raises what nobody expected: logged with its traceback, counted in
    pdrelay_dispatcher_restarts_total, the dispatcher restarted after 1 s, and the event delivered once."""
    if failing == "outbox":
        rig.outbox.failures = 1
    else:
        rig.sender_fails[0] = True
    await rig.outbox.enqueue(b"{}", [ev("a")], [], resend_interval=3600)
    rig.dispatcher.wake()
    await until(lambda: rig.outbox.depth().queued == 0)
    assert rig.metrics.registry.get_sample_value("pdrelay_dispatcher_restarts_total") == 1
    assert rig.backoff.delays == [1.0]
    assert [b["dedup_key"] for _, b in rig.sender.calls] == (["a"] if failing == "outbox" else ["a", "a"])
    (trace,) = tracebacks(caplog)
    expected = ("RuntimeError: claim blew up", "in claim") if failing == "outbox" else (
        "TypeError: the sender blew up", "in answer")
    assert all(part in trace for part in expected), trace
    assert rig.supervisor.problem is None


# ---------------------------------------------------------------------- /readyz


async def test_a_dispatcher_that_keeps_failing_makes_readyz_503_until_it_recovers(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    """Three failures in a row without a clean pass: /readyz answers 503 naming the error; once the sender
    works again the event goes and /readyz answers 200. The restarts metric exists from the start."""
    (tmp_path / "rules.yaml").write_text("version: 1\ndefaults: {routing_key: default, dedup: alert}\nrules: []\n")
    settings = Settings(pagerduty=PagerDutySettings(routing_keys=KEYS),
                        outbox=OutboxSettings(path=tmp_path / "outbox.db"),
                        rules=RulesSettings(paths=(tmp_path / "rules.yaml",)))
    clock = FakeClock()
    backoff = Backoff(clock, hold_at=3)
    broken = [True]

    def answer(body: Any) -> SendResult:
        if broken[0]:
            raise RuntimeError("PagerDuty client blew up")
        return OK

    sender = FakeSender(answer)
    client = await aiohttp_client(create_app(settings, Deps(clock=clock, registry=CollectorRegistry(),
                                                            sender=sender, sleep=backoff)))
    assert "pdrelay_dispatcher_restarts_total 0.0" in await (await client.get("/metrics")).text()
    assert (await client.get("/readyz")).status == 200
    alert = {"version": "4", "groupKey": "g", "status": "firing", "receiver": "r", "groupLabels": {},
             "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am", "truncatedAlerts": 0,
             "alerts": [{"status": "firing", "labels": {"alertname": "Disk"}, "annotations": {},
                         "startsAt": "2024-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                         "generatorURL": "", "fingerprint": "0123456789abcdef"}]}
    assert (await client.post("/v1/alertmanager", json=alert)).status == 200
    await until(lambda: len(backoff.delays) == 3)
    ready = await client.get("/readyz")
    assert (ready.status, json.loads(await ready.text())) == (
        503, {"status": "not ready", "dispatcher": "RuntimeError: PagerDuty client blew up"})
    assert "pdrelay_dispatcher_restarts_total 3.0" in await (await client.get("/metrics")).text()
    assert len(sender.calls) == 3
    broken[0] = False
    backoff.gate.set()
    await until(lambda: len(sender.calls) == 4)
    deadline = asyncio.get_running_loop().time() + 10
    while (await client.get("/readyz")).status != 200:  # the delivery's settle is the clean pass
        assert asyncio.get_running_loop().time() < deadline, "never ready again"
        await asyncio.sleep(0.005)
    assert backoff.delays == [1.0, 2.0, 4.0]
