"""Shared budget benchmark: two replicas drain one routing key's storm through one budget in Redis (run by hand).

    .venv/bin/python tests/bench/bench_shared_budget.py [--events 200] [--per-key 20] [--window 1] [--runs 1]

A PagerDuty stand-in (``tests/faults/fault_support.LimitedPagerDuty``) allows ``per_key`` events per
routing key in any sliding ``window`` seconds, counted on arrival, and answers 429 above it (a 429
ingests nothing). The storm, ``--events`` triggers on one key, is larger than the budget. In the same
run, each against a fresh stand-in:

- **1 × local** (the baseline): one dispatcher with the in-process :class:`~receiver.limiter.RateLimiter`
  drains the whole storm — what one pdrelay does today;
- **2 × shared**: two dispatchers ("replicas": own SQLite outbox, own HTTP client, own Redis client)
  each drain half the storm, paced by :class:`~receiver.sharedlimit.SharedRateLimiter` on the Redis at
  127.0.0.1:6379 (a random key prefix, deleted afterwards);
- **2 × local**: the same two replicas, each with its own in-process limiter — what N replicas pacing
  themselves as if alone provoke. Its 429 pause is one window; it stops at ``--bound`` × the minimum.

Figures per row: 429s provoked (must be 0 for the first two), and the drain time (first arrival to the
last event accepted) as a ratio to the budget's minimum, ``(ceil(n / per_key) - 1) × window`` (a
sliding window that starts empty passes ``per_key`` at once and ``per_key`` more each window).
The events are stored directly in the outboxes (no intake), so the figures are about pacing alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent.parent), str(HERE.parent / "e2e"), str(HERE.parent / "faults")]

from e2e_support import ROUTING_KEY  # noqa: E402
from fault_support import LimitedPagerDuty  # noqa: E402

from receiver.breaker import CircuitBreaker  # noqa: E402
from receiver.clock import SystemClock  # noqa: E402
from receiver.dispatcher import Dispatcher  # noqa: E402
from receiver.limiter import Budget, RateLimit, RateLimiter  # noqa: E402
from receiver.metrics import Metrics  # noqa: E402
from receiver.outbox.sqlite import SQLiteOutbox  # noqa: E402
from receiver.pagerduty.events import EventsSender  # noqa: E402
from receiver.secret import Secret  # noqa: E402
from receiver.settings import PagerDutySettings  # noqa: E402
from receiver.sharedlimit import SharedRateLimiter  # noqa: E402
from transforms.base import RenderedEvent  # noqa: E402

KEYS = {"default": Secret(ROUTING_KEY)}


@dataclass(frozen=True)
class Result:
    drain: float | None  # None: not drained within the bound
    throttled: int
    accepted: int


def event(n: int) -> RenderedEvent:
    dedup = f"storm-{n:05d}"
    body = {"event_action": "trigger", "dedup_key": dedup,
            "payload": {"summary": f"Storm on host-{n}", "source": f"host-{n}", "severity": "critical"}}
    return RenderedEvent(routing_key="default", dedup_key=dedup, action="trigger", body=body,
                         payload_hash=f"h{n}", rules=("storm",), fingerprints=(dedup,))


def outcome(pd: LimitedPagerDuty, events: int) -> Result:
    first: dict[str, float] = {}
    for r in pd.accepted():
        first.setdefault(r.triple[1], r.at)
    if len(first) < events:
        return Result(None, pd.throttled, len(first))
    start = min(r.at for r in pd.received())
    return Result(max(first.values()) - start, pd.throttled, len(first))


@contextlib.asynccontextmanager
async def replica(workdir: Path, name: str, pd: LimitedPagerDuty, limiter: Budget,
                  events: list[RenderedEvent]) -> AsyncIterator[SQLiteOutbox]:
    clock = SystemClock()
    outbox = SQLiteOutbox(workdir / f"{name}.db", clock=clock)
    await outbox.open()
    await outbox.enqueue(b"{}", events, [], resend_interval=3600)
    sender = EventsSender(pd.events_url, timeout=10.0, connect_timeout=5.0)
    settings = PagerDutySettings(routing_keys=KEYS, rate_limit=limiter.settings,
                                 backoff_on_429=limiter.settings.window_seconds)
    dispatcher = Dispatcher(outbox, sender, KEYS, settings, metrics=Metrics(CollectorRegistry()), clock=clock,
                            log=logging.getLogger(f"bench.{name}"), limiter=limiter,
                            breaker=CircuitBreaker(5, 60, name="pd", clock=clock))
    task = asyncio.create_task(dispatcher.run())
    try:
        yield outbox
    finally:
        dispatcher.stop()  # a cancellation can be lost inside redis-py's command writes (asyncio.wait_for)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sender.aclose()
        await outbox.close()


async def drain(workdir: Path, pd: LimitedPagerDuty, limiters: list[Budget], events: int, bound: float) -> None:
    """Start one replica per limiter, the storm split between them; wait until the stand-in has every event or
    ``bound`` seconds have passed."""
    storm = [event(n) for n in range(events)]
    async with contextlib.AsyncExitStack() as stack:
        for i, limiter in enumerate(limiters):
            await stack.enter_async_context(replica(workdir, f"r{i}", pd, limiter, storm[i::len(limiters)]))
        deadline = time.monotonic() + bound
        while len({r.triple[1] for r in pd.accepted()}) < events and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


def run(kind: str, events: int, per_key: int, window: float, bound: float, workdir: Path) -> Result:
    rate = RateLimit(per_key=per_key, window_seconds=window)
    with LimitedPagerDuty(per_key=per_key, window_seconds=window) as pd:

        async def main() -> None:
            if kind != "shared":
                count = 1 if kind == "1 × local" else 2
                await drain(workdir, pd, [RateLimiter(rate, SystemClock()) for _ in range(count)], events, bound)
                return
            prefix = f"bench-shared-{uuid.uuid4().hex[:12]}"
            clients = [Redis(host="127.0.0.1", port=6379, socket_timeout=5) for _ in range(2)]
            try:
                limiters: list[Budget] = [SharedRateLimiter(rate, SystemClock(), c, prefix, names=["default"])
                                          for c in clients]
                await drain(workdir, pd, limiters, events, bound)
            finally:
                keys = [k async for k in clients[0].scan_iter(match="{" + prefix + "}*")]
                if keys:
                    await clients[0].delete(*keys)
                for c in clients:
                    await c.aclose()

        asyncio.run(main())
        return outcome(pd, events)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--per-key", type=int, default=20)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--bound", type=float, default=2.0, help="give up after this × the minimum (+5 s)")
    args = parser.parse_args()
    logging.getLogger("bench").addHandler(logging.NullHandler())  # 429 warnings of "2 × local": counted, not printed
    events, per_key, window = args.events, args.per_key, args.window
    minimum = (math.ceil(events / per_key) - 1) * window
    bound = args.bound * minimum + 5.0
    print(f"storm of {events} triggers on one key; budget {per_key} per {window:g} s; minimum drain "
          f"{minimum:.2f} s; {args.runs} run(s) each")
    drains: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="pdrelay-bench-shared-") as tmp:
        for kind in ("1 × local", "shared", "2 × local"):
            for i in range(args.runs):
                workdir = Path(tmp) / f"{kind.replace(' ', '')}-{i}"
                workdir.mkdir()
                r = run(kind, events, per_key, window, bound, workdir)
                if r.drain is not None:
                    drains.setdefault(kind, []).append(r.drain)
                name = "2 × shared" if kind == "shared" else kind
                drained = (f"drain {r.drain:6.2f} s = {r.drain / minimum:5.3f}× the minimum" if r.drain is not None
                           else f"not drained in {bound:.0f} s ({r.accepted} of {events} accepted)")
                print(f"{name:10} {drained}; 429s provoked {r.throttled}")
    if drains.get("shared") and drains.get("1 × local"):
        ratio = statistics.median(drains["shared"]) / statistics.median(drains["1 × local"])
        print(f"2 × shared / 1 × local drain time (medians): {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
