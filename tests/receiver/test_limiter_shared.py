"""The budget shared by replicas in Redis (receiver.sharedlimit): two limiters on one Redis are two replicas.

Most tests use the shared Redis on 127.0.0.1:6379 under their own random prefix (deleted afterwards);
the outage tests start their own redis-server on a unix socket in tmp_path and stop it by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from receiver.breaker import CircuitBreaker
from receiver.dispatcher import Dispatcher
from receiver.limiter import RateLimit, RateLimiter
from receiver.metrics import Metrics
from receiver.outbox.sqlite import SQLiteOutbox
from receiver.pagerduty.events import SendResult, classify
from receiver.secret import Secret
from receiver.settings import PagerDutySettings
from receiver.sharedlimit import SharedRateLimiter
from tests.fakes import FakeClock, FakeSender
from tests.receiver.redis_server import NO_AOF, OwnRedis
from tests.receiver.test_outbox_sqlite import ev

T0 = 1000.0  # FakeClock's monotonic start


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis(host="127.0.0.1", port=6379, socket_timeout=5)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    name = f"test-limit-{uuid.uuid4().hex}"
    yield name
    keys = [k async for k in redis.scan_iter(match="{" + name + "}*")]
    if keys:
        await redis.delete(*keys)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


Make = Callable[..., SharedRateLimiter]


@pytest.fixture
def make(redis: Redis, prefix: str, clock: FakeClock) -> Make:
    def build(settings: RateLimit, **kw: object) -> SharedRateLimiter:
        return SharedRateLimiter(settings, clock, redis, prefix, **kw)  # type: ignore[arg-type]
    return build


def worst_window(times: list[float], window: float) -> int:
    """The most sends that fall in any ``(t - window, t]``."""
    times = sorted(times)
    return max(sum(1 for s in times if t - window < s <= t) for t in times)


async def test_two_replicas_together_never_exceed_the_budget(make: Make, clock: FakeClock) -> None:
    """Two replicas take turns at one key, both as fast as they may, for 20 windows: together they never
    have more than the limit in any window, and they use all of it (the first 5 at once, then 5 a window)."""
    settings = RateLimit(per_key=5, window_seconds=10)
    a, b = make(settings), make(settings)
    taken: list[float] = []
    for step in range(200):  # a second at a time, both replicas trying three sends each
        for replica in (a, b, a, b, a, b):
            if (t := await replica.acquire("k")) is not None:
                taken.append(t)
        clock.advance(1.0)
        assert step < 199 or clock.monotonic() == T0 + 200
    assert worst_window(taken, 10.0) == 5
    assert len(taken) == 100  # 5 per window of 10 s over 200 s: the whole budget
    assert taken[:5] == [T0] * 5 and taken[5] == T0 + 10


async def test_a_replica_that_was_refused_knows_when_the_key_has_room(make: Make, clock: FakeClock) -> None:
    settings = RateLimit(per_key=2, window_seconds=60)
    a, b = make(settings), make(settings)
    assert await a.acquire("k") == T0
    clock.advance(5)
    assert await a.acquire("k") == T0 + 5
    assert b.next_allowed("k") == T0 + 5  # b has not heard of the key yet: a take will tell
    assert await b.acquire("k") is None
    assert b.next_allowed("k") == T0 + 60  # the oldest send leaves the window
    assert b.blocked() == ({"k": T0 + 60}, T0 + 5)
    clock.advance(55)
    assert await b.acquire("k") == T0 + 60
    assert (await a.refresh())[0] == {"k": T0 + 65}


async def test_a_key_whose_room_came_since_the_last_answer_is_looked_at_again(make: Make, clock: FakeClock) -> None:
    """The dispatcher may be busy (a claim, a read of the queue) while the refused key's room comes: blocked()
    still lists it, with that time now past, so the dispatcher's next wait is short, not its longest."""
    settings = RateLimit(per_key=1, window_seconds=60, global_limit=(2, 60))
    a, b = make(settings), make(settings)
    assert await a.acquire("k") == T0
    assert await b.acquire("k") is None
    clock.advance(60)
    assert b.blocked() == ({"k": T0 + 60}, T0 + 60) and b.next_allowed("k") == T0 + 60
    assert b.blocked() == ({}, T0 + 60)  # once: a dispatcher that cannot look (breaker open) must not spin
    assert await b.refresh() == ({}, T0 + 60)  # asked: room, nothing listed
    assert [await b.acquire("x"), await b.acquire("y"), await b.acquire("z")] == [T0 + 60, T0 + 60, None]
    clock.advance(60)  # the global limit, full since z was refused, has room again: every key is worth a look
    assert b.blocked() == ({k: T0 + 120 for k in "kxyz"}, T0 + 120)
    assert b.blocked() == ({}, T0 + 120)
    assert await b.refresh() == ({}, T0 + 120)


async def test_the_in_process_limiter_also_lists_once_a_key_whose_room_came_after_a_refresh(clock: FakeClock) -> None:
    """The same gap with RateLimiter: refresh() lists what a claim leaves out; if the room comes before the
    dispatcher's next blocked(), that key is listed once with its (past) time. Without refresh() blocked()
    answers as before."""
    limiter = RateLimiter(RateLimit(per_key=1, window_seconds=60, global_limit=(2, 60)), clock)
    assert await limiter.acquire("k") == T0
    assert await limiter.refresh() == ({"k": T0 + 60}, T0)
    clock.advance(60)
    assert limiter.blocked() == ({"k": T0 + 60}, T0 + 60)
    assert limiter.blocked() == ({}, T0 + 60)
    assert [await limiter.acquire("x"), await limiter.acquire("y")] == [T0 + 60, T0 + 60]
    assert await limiter.refresh() == ({"x": T0 + 120, "y": T0 + 120}, T0 + 120)
    clock.advance(60)
    assert limiter.blocked() == ({"x": T0 + 120, "y": T0 + 120}, T0 + 120)  # also as the global room came
    assert limiter.blocked() == ({}, T0 + 120)


async def test_settled_send_counts_from_its_answer_for_every_replica(make: Make, clock: FakeClock) -> None:
    """A send answered 3 s after it was taken leaves the shared window 3 s later."""
    settings = RateLimit(per_key=1, window_seconds=10)
    a, b = make(settings), make(settings)
    taken = await a.acquire("k")
    assert taken == T0
    clock.advance(3)
    await a.confirm("k", taken, clock.monotonic())
    clock.advance(7)  # T0 + 10: the send, counted from T0 + 3, is still in the window
    assert await b.acquire("k") is None
    assert b.next_allowed("k") == T0 + 13
    clock.advance(3)
    assert await b.acquire("k") == T0 + 13
    await a.confirm("k", taken, clock.monotonic())  # twice: nothing left to move


async def test_a_429_seen_by_one_replica_pauses_the_key_for_the_other(make: Make, clock: FakeClock) -> None:
    settings = RateLimit(per_key=100, window_seconds=60)
    a, b = make(settings), make(settings)
    assert await b.acquire("k") == T0
    await a.pause("k", 30)
    assert a.next_allowed("k") == T0 + 30
    assert await b.acquire("k") is None
    assert b.next_allowed("k") == T0 + 30
    assert await b.acquire("other") == T0  # only the key that was throttled pauses
    await b.pause("k", 5)  # a shorter pause does not shorten the one in force
    assert b.next_allowed("k") == T0 + 30
    clock.advance(10)
    assert await b.refresh() == ({"k": T0 + 30}, T0 + 10)
    clock.advance(20)
    assert await b.acquire("k") == T0 + 30 and await a.acquire("k") == T0 + 30


async def test_the_global_limit_is_shared_across_keys_and_replicas(make: Make, clock: FakeClock) -> None:
    settings = RateLimit(per_key=100, window_seconds=60, global_limit=(3, 10))
    a, b = make(settings), make(settings)
    assert [await a.acquire("x"), await a.acquire("x"), await b.acquire("y")] == [T0, T0, T0]
    assert await b.acquire("z") is None
    assert b.blocked() == ({}, T0 + 10)
    assert b.next_allowed("anything") == T0 + 10
    clock.advance(4)
    assert await a.refresh() == ({}, T0 + 10)
    clock.advance(6)
    assert await b.acquire("z") == T0 + 10


async def test_snapshot_and_budget_have_the_shape_of_the_in_process_limiter(make: Make, clock: FakeClock) -> None:
    """The same history through one shared limiter and through RateLimiter: the same /status values."""
    settings = RateLimit(per_key=3, window_seconds=60, overrides={"db": (2, 30)}, global_limit=(10, 60))
    shared, other, local = make(settings, names=["default", "db"]), make(settings), RateLimiter(settings, clock)
    assert shared.snapshot() == {
        "keys": {"db": {"limit": 2, "window_seconds": 30.0, "used": 0},
                 "default": {"limit": 3, "window_seconds": 60.0, "used": 0}},
        "global": {"limit": 10, "window_seconds": 60.0, "used": 0}}
    for key in ("default", "default", "db"):
        assert await other.acquire(key) == T0  # another replica's sends
        assert local.take(key) == T0
    clock.advance(2)
    await other.pause("default", 30)
    local.penalize("default", 30)
    await shared.refresh()
    assert shared.snapshot() == local.snapshot() == {
        "keys": {"db": {"limit": 2, "window_seconds": 30.0, "used": 1},
                 "default": {"limit": 3, "window_seconds": 60.0, "used": 2,
                             "blocked_until": T0 + 32, "blocked_for": 30.0}},
        "global": {"limit": 10, "window_seconds": 60.0, "used": 3}}
    assert shared.budget("default") == local.budget("default") == (2, 3, 60.0, 30.0)
    assert shared.budget("db") == local.budget("db") == (1, 2, 30.0, 0.0)
    assert shared.budget("unseen") == local.budget("unseen") == (0, 3, 60.0, 0.0)


async def test_waits_are_measured_from_what_the_replica_saw(make: Make, clock: FakeClock) -> None:
    settings = RateLimit(per_key=1, window_seconds=60)
    a, b = make(settings), make(settings)
    assert await a.acquire("k") == T0
    clock.advance(10)
    assert await b.acquire("k") is None  # b finds the key full at T0 + 10, until T0 + 60
    clock.advance(50)
    assert b.waited("k", T0 + 5) == 50.0 and b.waited("k", T0 + 70) == 0.0
    assert b.seed([("k", 1.0)]) == 0  # the window is in Redis already: nothing is counted twice


async def test_keys_live_under_the_prefix_hash_tag_and_expire(make: Make, redis: Redis, prefix: str) -> None:
    limiter = make(RateLimit(per_key=5, window_seconds=60, global_limit=(50, 10)))
    await limiter.acquire("db-oncall")
    await limiter.pause("db-oncall", 30)
    tag = "{" + prefix + "}"
    names = sorted([k.decode() async for k in redis.scan_iter(match=tag + "*")])
    assert names == [f"{tag}:limit-global", f"{tag}:limit-pause:db-oncall", f"{tag}:limit:db-oncall"]
    ttls = [await redis.pttl(n) for n in names]
    assert 0 < ttls[0] <= 11_000 and 0 < ttls[1] <= 31_000 and 0 < ttls[2] <= 61_000


@pytest.mark.parametrize(("prefix_value", "message"), [
    ("", "shared rate limit: key prefix must be a non-empty string without braces, got ''"),
    ("a{b}", "shared rate limit: key prefix must be a non-empty string without braces, got 'a{b}'"),
])
def test_a_bad_prefix_is_refused(redis: Redis, clock: FakeClock, prefix_value: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        SharedRateLimiter(RateLimit(), clock, redis, prefix_value)
    assert str(err.value) == message


@pytest.mark.parametrize(("kw", "message"), [
    ({"retry_after": 0}, "shared rate limit: retry_after must be a positive number of seconds, got 0"),
    ({"timeout": float("nan")}, "shared rate limit: timeout must be a positive number of seconds, got nan"),
])
def test_bad_times_are_refused(redis: Redis, clock: FakeClock, kw: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError) as err:
        SharedRateLimiter(RateLimit(), clock, redis, "p", retry_after=kw.get("retry_after", 1.0),
                          timeout=kw.get("timeout", 2.0))
    assert str(err.value) == message


# ---------------------------------------------------------------------------------------------- two dispatchers

KEYS = {"default": Secret("k" * 32)}
OK = SendResult(ok=True, status=202)


def pd_settings(rate: RateLimit) -> PagerDutySettings:
    return PagerDutySettings(routing_keys=KEYS, retry_attempts=3, initial_backoff=1, max_backoff=8, max_age=3600,
                             concurrency=4, rate_limit=rate, backoff_on_429=30, failure_threshold=3,
                             recovery_timeout=60)


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def look_again(dispatcher: Dispatcher) -> None:
    n = dispatcher.wake()
    await until(lambda: dispatcher.looked_after >= n)


@contextlib.asynccontextmanager
async def replica(tmp_path: Path, name: str, clock: FakeClock, limiter: SharedRateLimiter, sent: list[float],
                  metrics: Metrics | None = None, answers: list[SendResult] | None = None,
                  ) -> AsyncIterator[tuple[Dispatcher, SQLiteOutbox]]:
    """A replica's dispatcher and outbox; its PagerDuty answers ``answers`` in turn, then 202, and each send's
    time goes to ``sent``."""
    outbox = SQLiteOutbox(tmp_path / f"{name}.db", clock=clock)
    await outbox.open()
    queue = answers if answers is not None else []

    def answer(_body: object) -> SendResult:
        sent.append(clock.monotonic())
        return queue.pop(0) if queue else OK

    sender = FakeSender(answer)
    dispatcher = Dispatcher(outbox, sender, KEYS, pd_settings(limiter.settings),
                            metrics=metrics or Metrics(CollectorRegistry()), clock=clock,
                            log=logging.getLogger("test"), rand=lambda: 1.0, limiter=limiter,
                            breaker=CircuitBreaker(3, 60, name="pd", clock=clock))
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher, outbox
    finally:
        dispatcher.stop()  # a cancellation can be lost inside redis-py's command writes (asyncio.wait_for)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)
        await asyncio.wait_for(outbox.close(), 10)


async def test_two_dispatchers_drain_one_key_within_the_shared_budget(make: Make, clock: FakeClock,
                                                                      tmp_path: Path) -> None:
    """Two replicas' dispatchers, each with its own queue of 8 events for one key of 3 per 10 s: 16 sends, never
    more than 3 in a window, 3 every 10 s from the start."""
    rate = RateLimit(per_key=3, window_seconds=10)
    sent: list[float] = []
    async with replica(tmp_path, "a", clock, make(rate), sent) as (da, oa), \
            replica(tmp_path, "b", clock, make(rate), sent) as (db, ob):
        for box, dispatcher, side in ((oa, da, "a"), (ob, db, "b")):
            await box.enqueue(b"{}", [ev(f"{side}{i}") for i in range(8)], [], resend_interval=3600)
            dispatcher.wake()
        for _ in range(6):
            await look_again(da)
            await look_again(db)
            await until(lambda: oa.depth().queued + ob.depth().queued == 16 - len(sent))
            clock.advance(10)
        await look_again(da)
        await look_again(db)
        await until(lambda: len(sent) == 16)
    assert worst_window(sent, 10.0) == 3
    assert sorted(sent) == [T0 + 10 * (i // 3) for i in range(16)]


async def test_a_429_at_one_dispatcher_pauses_the_other(make: Make, clock: FakeClock, tmp_path: Path) -> None:
    """Replica a's send meets a 429: replica b, with its own queue for the key, sends nothing until the pause
    (pagerduty.backoff_on_429, 30 s) is over, then both drain."""
    rate = RateLimit(per_key=100, window_seconds=60)
    sent_a: list[float] = []
    sent_b: list[float] = []
    async with replica(tmp_path, "a", clock, make(rate), sent_a, answers=[classify(429, b"{}")]) as (da, oa), \
            replica(tmp_path, "b", clock, make(rate), sent_b) as (db, ob):
        await oa.enqueue(b"{}", [ev("a0")], [], resend_interval=3600)
        await look_again(da)
        deadline = asyncio.get_running_loop().time() + 5
        while not [i for i in await oa.items(status="queued") if i.reason == "rate_limited"]:  # paused by now
            assert asyncio.get_running_loop().time() < deadline, "the 429 was not settled in time"
            await asyncio.sleep(0.005)
        assert sent_a == [T0]
        await ob.enqueue(b"{}", [ev("b0"), ev("b1")], [], resend_interval=3600)
        await look_again(db)
        clock.advance(29)
        await look_again(db)
        assert sent_b == []
        clock.advance(1)
        await look_again(da)
        await look_again(db)
        await until(lambda: oa.depth().queued + ob.depth().queued == 0)
    assert sent_a == [T0, T0 + 30] and sent_b == [T0 + 30, T0 + 30]


# ---------------------------------------------------------------------------------------------- Redis down


async def ready(client: Redis) -> None:
    """Wait (bounded) until the test's own redis-server answers a PING."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        with contextlib.suppress(Exception):
            pong = client.ping()  # typed as either; the asyncio client's is awaitable
            if isinstance(pong, bool) or await pong:
                return
        assert asyncio.get_running_loop().time() < deadline, "own redis-server did not start"
        await asyncio.sleep(0.02)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path, NO_AOF)
    server.start()
    yield server
    if server.proc is not None:
        server.stop()


@pytest.fixture
async def own_client(own_redis: OwnRedis) -> AsyncIterator[Redis]:
    # No retries: the limiter's answer to a failure is under test, not the client's backoff.
    client = Redis(unix_socket_path=str(own_redis.socket), socket_timeout=2, socket_connect_timeout=2,
                   retry=Retry(NoBackoff(), 0))
    await ready(client)
    yield client
    await client.aclose()


async def test_a_redis_that_does_not_answer_holds_nothing_up(own_redis: OwnRedis, own_client: Redis,
                                                              clock: FakeClock) -> None:
    """A stopped (SIGSTOP) Redis: each call gives up after ``timeout``, answers "no room", and counts."""
    errors: list[int] = []
    limiter = SharedRateLimiter(RateLimit(per_key=5, window_seconds=60), clock, own_client, "own",
                                timeout=0.2, retry_after=1.0, on_error=lambda: errors.append(1))
    assert await limiter.acquire("k") == T0
    assert own_redis.proc is not None
    own_redis.proc.send_signal(signal.SIGSTOP)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await limiter.acquire("k") is None
        assert 0.2 <= loop.time() - started < 1.5
        await limiter.pause("k", 10)
        assert len(errors) == 2 and limiter.next_allowed("k") == T0 + 10
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)
    clock.advance(10)
    # The client may have dropped the connection it gave up on: the next call opens another one.
    assert await limiter.acquire("k") == T0 + 10


def store_errors(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("pdrelay_limiter_store_errors_total")
    assert value is not None  # created at start, 0 before any failure
    return value


async def test_redis_down_means_wait_and_retry_never_a_blind_send(own_redis: OwnRedis, own_client: Redis,
                                                                  clock: FakeClock,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="receiver.sharedlimit")
    metrics = Metrics(CollectorRegistry())
    limiter = SharedRateLimiter(RateLimit(per_key=5, window_seconds=60), clock, own_client, "own",
                                retry_after=2.0, on_error=metrics.limiter_store_errors.inc)
    assert await limiter.acquire("k") == T0
    own_redis.stop()
    assert await limiter.acquire("k") is None
    assert store_errors(metrics) == 1
    assert limiter.next_allowed("k") == T0 + 2 and limiter.next_allowed("never-seen") == T0 + 2
    assert limiter.blocked() == ({"k": T0 + 2}, T0 + 2)
    assert await limiter.refresh() == ({"k": T0 + 2}, T0 + 2)  # not tried again before retry_after
    assert await limiter.acquire("k") is None and store_errors(metrics) == 1
    await limiter.pause("k", 30)  # tried, dropped in Redis, kept here; no exception
    await limiter.confirm("k", T0, T0)  # tried, dropped
    assert store_errors(metrics) == 3 and limiter.next_allowed("k") == T0 + 30
    clock.advance(2)
    assert await limiter.refresh() == ({"k": T0 + 30}, T0 + 4)  # tried, failed again: 2 s more
    assert store_errors(metrics) == 4
    assert [r.getMessage() for r in caplog.records if r.name == "receiver.sharedlimit"] == [
        "shared rate budget unreachable in Redis; sends wait and retry"]
    own_redis.start()
    await ready(own_client)
    clock.advance(28)
    assert await limiter.acquire("k") == T0 + 30  # Redis restarted empty (no persistence here): room again
    assert [r.getMessage() for r in caplog.records if r.name == "receiver.sharedlimit"][-1] == \
        "shared rate budget reachable in Redis again"


async def test_a_flushed_script_cache_is_reloaded(own_client: Redis, clock: FakeClock) -> None:
    """EVALSHA meets NOSCRIPT after SCRIPT FLUSH (or a restart): the script is loaded again and runs."""
    limiter = SharedRateLimiter(RateLimit(per_key=1, window_seconds=60), clock, own_client, "own")
    assert await limiter.acquire("k") == T0
    await own_client.script_flush()
    assert await limiter.acquire("k") is None
    assert limiter.next_allowed("k") == T0 + 60
    await own_client.script_flush()
    assert await limiter.refresh() == ({"k": T0 + 60}, T0)


async def test_a_dispatcher_with_redis_down_sends_nothing_and_keeps_running(
        own_redis: OwnRedis, own_client: Redis, clock: FakeClock, tmp_path: Path) -> None:
    metrics = Metrics(CollectorRegistry(), routing_keys=KEYS)
    limiter = SharedRateLimiter(RateLimit(per_key=5, window_seconds=60), clock, own_client, "own",
                                retry_after=1.0, on_error=metrics.limiter_store_errors.inc)
    sent: list[float] = []
    async with replica(tmp_path, "a", clock, limiter, sent, metrics) as (dispatcher, outbox):
        own_redis.stop()
        await outbox.enqueue(b"{}", [ev("a")], [], resend_interval=3600)
        await look_again(dispatcher)
        await look_again(dispatcher)
        assert sent == [] and outbox.depth().queued == 1 and store_errors(metrics) == 1
        own_redis.start()
        await ready(own_client)
        clock.advance(1.0)
        await look_again(dispatcher)
        await until(lambda: outbox.depth().queued == 0)
        assert sent == [T0 + 1.0] and store_errors(metrics) == 1
