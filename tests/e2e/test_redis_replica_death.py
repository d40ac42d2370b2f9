"""A replica dies mid-storm: the other delivers everything the dead one had accepted, once each, in order.

Two pdrelays share one Redis outbox and rate budget (the shared 127.0.0.1:6379, this test's own key
prefix) with a 2 s lease and a budget of 10 events per 2 s window on the one routing key. Replica A
accepts a storm of 30 events (15 alerts firing, then resolved: a trigger and a resolve per dedup key);
both replicas deliver from the shared queue. Once the first window's 10 sends are answered and acked
(PagerDuty has them, Redis no longer queues them) and no send may start before the window slides, A is
SIGKILLed holding leases on events it claimed. B takes them back when their leases run out and delivers
the rest: PagerDuty hears every event once (the kill never falls between a send and its ack, the one
crash window where at-least-once means twice), each key's trigger before its resolve, and never more than
10 in any 2 s. How long that takes against the lease and the budget is a benchmark figure
(tests/bench/bench_replicas.py), not a timed assertion.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from e2e_support import (
    REDIS_URL,
    ROUTING_KEY,
    PagerDutyStandIn,
    PdRelayFactory,
    Received,
    drop_redis_prefix,
    redis_outbox,
    wait_until,
)
from test_crash_recovery import alert, notification

pytestmark = pytest.mark.e2e

ALERTS = 15
PER_WINDOW, WINDOW = 10, 2.0
LEASE = 2.0


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"pdrelay-e2e-{os.urandom(6).hex()}"
    yield name
    drop_redis_prefix(name)


def storm(resolved: bool) -> dict[str, Any]:
    return notification([alert(f"host-{n:02d}:9100", f"{n:016x}", resolved=resolved) for n in range(ALERTS)])


def by_key(events: list[Received]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in events:
        out.setdefault(e.triple[1], []).append(e.triple[0])
    return out


def replica_config(prefix: str) -> dict[str, Any]:
    return {"outbox": redis_outbox(prefix, lease=LEASE)}


def test_a_replica_killed_mid_storm_leaves_nothing_undelivered_or_doubled(
    pd: PagerDutyStandIn, start_pdrelay: PdRelayFactory, prefix: str
) -> None:
    budget = {"rate_limit": {"per_key": PER_WINDOW, "window_seconds": WINDOW}, "api_timeout": 1, "connect_timeout": 0.5}
    dying, survivor = (start_pdrelay(pagerduty=budget, config=replica_config(prefix)) for _ in range(2))
    store = redis.Redis.from_url(REDIS_URL)
    tag = "{" + prefix + "}"
    try:
        for resolved in (False, True):
            answer = dying.post_alertmanager(storm(resolved))
            assert answer.status_code == 200, answer.text

        def first_window_settled() -> bool:
            queued = int(store.hget(f"{tag}:counts", "queued") or -1)
            return len(pd.accepted()) >= PER_WINDOW and queued == 2 * ALERTS - len(pd.accepted())

        wait_until(first_window_settled, what="the first window's sends answered and acked", timeout=10)
        assert len(pd.received()) == PER_WINDOW  # the budget is spent: nothing is on its way to PagerDuty
        assert dying.proc is not None
        held = store.smembers(f"{tag}:held:{lease_owner(store, tag, dying.proc.pid)}")
        dying.kill(signal.SIGKILL)

        pd.wait_accepted(lambda ev: len(ev) >= 2 * ALERTS, what="every event delivered", timeout=15)
        wait_until(lambda: survivor.metric("pdrelay_outbox_depth") == 0, what="an empty outbox", timeout=5)
    finally:
        store.close()

    received = pd.received()
    assert [r.status for r in received] == [202] * (2 * ALERTS)
    assert {r.triple[2] for r in received} == {ROUTING_KEY}
    assert by_key(received) == {f"{n:016x}": ["trigger", "resolve"] for n in range(ALERTS)}
    arrivals = [r.at for r in received]
    crowded = [i for i in range(len(arrivals) - PER_WINDOW) if arrivals[i + PER_WINDOW] - arrivals[i] < WINDOW]
    assert crowded == []  # never more than PER_WINDOW sends inside one window
    assert held, "the killed replica held leases on claimed events (what the survivor had to take back)"


def lease_owner(store: redis.Redis, tag: str, pid: int) -> str:
    """The lease owner name of the pdrelay process ``pid`` (``host:pid:random``), from its held set's key."""
    keys = [k.decode() for k in store.scan_iter(match=f"{tag}:held:*:{pid}:*", count=1000)]
    assert len(keys) == 1, keys
    return keys[0].removeprefix(f"{tag}:held:")
