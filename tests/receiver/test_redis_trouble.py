"""Redis trouble, in one process: while the outbox's Redis is down intake answers 503 and stores nothing,
/readyz and /status answer 503 naming the outbox (never its password), /metrics still answers and counts it,
and the dispatcher pauses — no restart, no traceback — and resumes by itself; a send made just before the
outage is settled once Redis is back, never sent again.

Each test runs its own ``redis-server`` (:mod:`tests.receiver.redis_server`, AOF with ``appendfsync always``,
a password), stopped and started again by its PID; the shared Redis is never touched.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from receiver import state
from receiver.app import Deps, create_app
from receiver.errors import OutboxUnavailable
from receiver.pagerduty.events import SendResult
from receiver.secret import Secret
from receiver.settings import OutboxSettings, PagerDutySettings, RulesSettings, Settings
from receiver.settings.model import RedisSettings
from receiver.supervisor import Supervisor
from tests.fakes import FakeClock, FakeSender
from tests.receiver.redis_server import OwnRedis

PASSWORD = "s3cret-redis-pass-7f1c"
KEYS = {"default": Secret("k" * 32)}
OK = SendResult(ok=True, status=202)
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
UNSTORED = {"error": "outbox unavailable: the notification was not stored; retry later"}


async def until(pred: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, f"not reached in {timeout} s: {what}"
        await asyncio.sleep(0.01)


def body(name: str) -> dict[str, Any]:
    return {"version": "4", "groupKey": f"g-{name}", "status": "firing", "receiver": "r", "groupLabels": {},
            "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am", "truncatedAlerts": 0,
            "alerts": [{"status": "firing", "labels": {"alertname": name}, "annotations": {},
                        "startsAt": "2024-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "", "fingerprint": f"{abs(hash(name)):016x}"[:16]}]}


# ---------------------------------------------------------------------- the supervisor alone


async def test_an_unavailable_outbox_pauses_the_task_without_restarts_or_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Five attempts meet an unavailable outbox: the task is tried again after 0.25, 0.5, 1, 2, 2 s, no restart is
    counted, nothing is logged with a traceback, /readyz's dispatcher problem stays empty; the log says once
    that it paused and once that it resumed."""
    attempts, delays, restarts = [0], [], []
    resumed = asyncio.Event()

    async def task(clean: Callable[[], None]) -> None:
        attempts[0] += 1
        if attempts[0] <= 5:
            raise OutboxUnavailable("Redis outbox: claiming due events failed: ConnectionError: gone")
        clean()
        resumed.set()
        await asyncio.Event().wait()  # healthy until cancelled

    async def sleep(delay: float) -> None:
        delays.append(delay)

    caplog.set_level(logging.INFO, "pdrelay.test")
    supervisor = Supervisor("dispatcher", task, log=logging.getLogger("pdrelay.test"),
                            on_restart=lambda: restarts.append(1), sleep=sleep)
    running = asyncio.create_task(supervisor.run())
    await asyncio.wait_for(resumed.wait(), 10)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert (attempts[0], delays, restarts) == (6, [0.25, 0.5, 1.0, 2.0, 2.0], [])
    assert (supervisor.problem, supervisor.paused, supervisor.failures) == (None, False, 0)
    assert [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records] == [
        ("WARNING", "the outbox is unavailable; the dispatcher pauses and tries again by itself", None),
        ("WARNING", "the outbox is available again; the dispatcher resumes", None),
    ]


# ---------------------------------------------------------------------- the app on its own redis-server


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "redis", password=PASSWORD)
    server.start()
    yield server
    server.stop()


class Relay:
    def __init__(self, client: TestClient[Any, Any], sender: FakeSender, clock: FakeClock) -> None:
        self.client, self.sender, self.clock = client, sender, clock
        self.st = client.app[state.STATE]

    def sample(self, name: str, **labels: str) -> float | None:
        value: float | None = self.st.metrics.registry.get_sample_value(name, labels)
        return value

    def sent(self) -> list[str]:
        return [str(b["payload"]["summary"]) for _, b in self.sender.calls]

    async def post(self, name: str) -> tuple[int, Any]:
        response = await self.client.post("/v1/alertmanager", json=body(name))
        return response.status, json.loads(await response.text())


@pytest.fixture
async def relay_factory(tmp_path: Path, redis: OwnRedis,
                        aiohttp_client: ClientFactory) -> AsyncIterator[Callable[[FakeSender], Awaitable[Relay]]]:
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\ndefaults: {routing_key: default, dedup: alert}\nrules: []\n")
    settings = Settings(
        pagerduty=PagerDutySettings(routing_keys=KEYS),
        outbox=OutboxSettings(backend="redis", redis=RedisSettings(
            url=redis.url, password=Secret(PASSWORD), key_prefix="trouble", socket_timeout=0.5)),
        rules=RulesSettings(paths=(rules,)))

    async def make(sender: FakeSender) -> Relay:
        clock = FakeClock()
        client = await aiohttp_client(create_app(settings, Deps(clock=clock, registry=CollectorRegistry(),
                                                                sender=sender)))
        return Relay(client, sender, clock)

    yield make


async def test_while_redis_is_down_intake_and_readyz_answer_503_and_delivery_pauses_then_resumes(
    relay_factory: Callable[[FakeSender], Awaitable[Relay]], redis: OwnRedis,
) -> None:
    relay = await relay_factory(FakeSender(lambda b: OK))
    assert await relay.post("a") == (200, {"status": "accepted", "alerts": 1, "queued": 1, "duplicates": 0,
                                           "dropped": 0, "dead_lettered": 0})
    await until(lambda: relay.sent() == ["a"] and relay.st.outbox.depth().queued == 0, "a delivered")

    redis.stop()
    assert await relay.post("b") == (503, UNSTORED)
    ready = await relay.client.get("/readyz")
    text = await ready.text()
    assert ready.status == 503
    assert PASSWORD not in text
    answer = json.loads(text)
    assert answer["status"] == "not ready"
    assert answer["outbox"].startswith(f"Redis outbox: a write to {redis.url} (key prefix 'trouble') failed: "
                                       "ConnectionError: ")
    page = await relay.client.get("/status")
    assert page.status == 503
    seen = json.loads(await page.text())
    assert seen["status"] == "outbox unavailable"
    assert seen["outbox"].startswith("Redis outbox: reading the depth per routing key failed: ConnectionError: ")
    scraped = await relay.client.get("/metrics")
    assert scraped.status == 200  # the per key queue cannot be read: the scrape still answers
    assert PASSWORD not in await scraped.text()
    # The dispatcher looks at the queue at least every second: it finds the outbox down, and pauses.
    await until(lambda: (relay.sample("pdrelay_outbox_unavailable_total", operation="delivery") or 0) >= 1,
                "the dispatcher meets the outage")
    assert relay.st.supervisor.paused
    assert relay.sample("pdrelay_outbox_available") == 0
    assert [relay.sample("pdrelay_outbox_unavailable_total", operation=op)
            for op in ("intake", "readiness", "scrape", "settle")] == [1, 1, 1, 0]
    assert relay.sample("pdrelay_bodies_rejected_total", reason="outbox_unavailable") == 1
    assert relay.sample("pdrelay_dispatcher_restarts_total") == 0
    assert relay.st.supervisor.problem is None

    redis.start()  # the same socket and AOF: the server comes back with everything it acknowledged
    relay.clock.advance(2)  # a shared budget that found Redis down tries again after its retry_after (1 s)
    assert (await relay.client.get("/readyz")).status == 200
    assert relay.sample("pdrelay_outbox_available") == 1
    assert (await relay.post("b"))[0] == 200  # Alertmanager's retry
    await until(lambda: relay.sent() == ["a", "b"] and relay.st.outbox.depth().queued == 0, "b delivered")
    await until(lambda: not relay.st.supervisor.paused, "the dispatcher resumed")
    assert relay.sample("pdrelay_dispatcher_restarts_total") == 0


async def test_a_send_made_as_redis_goes_down_is_settled_when_it_returns_and_never_sent_again(
    relay_factory: Callable[[FakeSender], Awaitable[Relay]], redis: OwnRedis,
) -> None:
    """PagerDuty accepts the event after Redis went down: the ack is tried again until Redis is back, so the
    item is not left leased to be sent a second time once its lease runs out."""
    answered = asyncio.Event()

    async def answer(_: Any) -> SendResult:
        await answered.wait()
        return OK

    relay = await relay_factory(FakeSender(answer))
    assert (await relay.post("a"))[0] == 200
    await until(lambda: relay.sent() == ["a"], "a in flight")
    redis.stop()
    answered.set()  # PagerDuty's 202 arrives while Redis is down: the ack fails and is tried again
    await until(lambda: (relay.sample("pdrelay_outbox_unavailable_total", operation="settle") or 0) >= 1,
                "the ack meets the outage")
    redis.start()
    await until(lambda: relay.st.outbox.depth().queued == 0, "a acked")
    relay.clock.advance(relay.st.settings.outbox.redis.lease + 1)  # a lease left behind would run out now
    wake = relay.st.dispatcher.wake()
    await until(lambda: relay.st.dispatcher.looked_after >= wake, "a look at the queue after the lease")
    assert relay.sent() == ["a"]
    assert relay.sample("pdrelay_events_sent_total", routing_key="default") == 1
