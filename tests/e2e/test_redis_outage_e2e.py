"""A real ``pdrelay serve`` on a Redis outbox whose ``redis-server`` is killed (SIGKILL, by its PID) while
notifications arrive and a queue drains to the PagerDuty stand-in, then started again on the same socket and
data folder (AOF, ``appendfsync always``).

While Redis is down: every notification is answered 503 with a clear error, ``/readyz`` answers 503 naming the
outbox, and nothing more reaches PagerDuty. After it returns: the refused notifications, posted again as
Alertmanager retries them, are accepted; every notification answered 200 is delivered exactly once.
"""

from __future__ import annotations

import json
import re
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from e2e_support import PagerDutyStandIn, PdRelay, PdRelayFactory, http_get, wait_until

from tests.receiver.redis_server import OwnRedis

pytestmark = pytest.mark.e2e

UNSTORED = {"error": "outbox unavailable: the notification was not stored; retry later"}
BEFORE, DURING = 24, 8  # notifications posted before the outage, and while Redis is down


def notification(i: int) -> dict[str, Any]:
    fingerprint = f"{i:016x}"
    return {
        "receiver": "pdrelay", "status": "firing", "version": "4", "truncatedAlerts": 0,
        "groupLabels": {"alertname": f"Outage{i}"}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093", "groupKey": f'{{}}:{{alertname="Outage{i}"}}',
        "alerts": [{"status": "firing", "labels": {"alertname": f"Outage{i}", "severity": "critical"},
                    "annotations": {"summary": f"outage test {i}"}, "startsAt": "2026-11-25T10:00:00.000Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus.example:9090/graph",
                    "fingerprint": fingerprint}],
    }


def unavailable(relay: PdRelay, operation: str) -> float:
    response = http_get(f"{relay.url}/metrics")
    assert response is not None and response.status_code == 200
    found = re.search(rf'^pdrelay_outbox_unavailable_total{{operation="{operation}"}} (\S+)$', response.text, re.M)
    assert found is not None
    return float(found.group(1))


def test_redis_killed_during_intake_and_delivery_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path, pd: PagerDutyStandIn, start_pdrelay: PdRelayFactory,
) -> None:
    redis = OwnRedis(tmp_path / "redis")
    redis.start()
    try:
        relay = start_pdrelay(
            pagerduty={"rate_limit": {"per_key": 8, "window_seconds": 1}},  # a queue that drains for ~4 s
            config={"outbox": {"backend": "redis",
                               "redis": {"url": redis.url, "key_prefix": "outage", "socket_timeout": 0.5}}})
        answers: dict[int, int] = {}
        for i in range(BEFORE):
            answers[i] = relay.post_alertmanager(notification(i)).status_code
        assert set(answers.values()) == {200}
        wait_until(lambda: len(pd.accepted()) >= 4, what="delivery under way", timeout=10)

        # Notifications keep arriving while Redis is killed: the one in flight at the kill may go either way.
        first_posted = threading.Event()

        def post_through_the_kill() -> None:
            for i in range(BEFORE, BEFORE + DURING):
                answers[i] = relay.post_alertmanager(notification(i)).status_code
                first_posted.set()

        poster = threading.Thread(target=post_through_the_kill)
        poster.start()
        assert first_posted.wait(timeout=10)
        redis.stop(signal.SIGKILL)
        poster.join(timeout=30)
        assert not poster.is_alive()
        refused = sorted(i for i, status in answers.items() if status == 503)
        assert set(answers.values()) <= {200, 503} and len(answers) == BEFORE + DURING
        assert refused and refused[-1] == BEFORE + DURING - 1  # every post after the kill refused

        again = relay.post_alertmanager(notification(refused[-1]))
        assert (again.status_code, again.json()) == (503, UNSTORED)
        ready = http_get(f"{relay.url}/readyz")
        assert ready is not None and ready.status_code == 503
        assert json.loads(ready.text)["outbox"].startswith(
            f"Redis outbox: a write to {redis.url} (key prefix 'outage') failed: ConnectionError: ")
        wait_until(lambda: unavailable(relay, "delivery") >= 1, what="the dispatcher meeting the outage",
                   timeout=5)
        delivered_while_down = len(pd.accepted())

        redis.start()  # the same socket and data folder: AOF replays every acknowledged write
        wait_until(lambda: (r := http_get(f"{relay.url}/readyz")) is not None and r.status_code == 200,
                   what="/readyz 200 again", timeout=10)
        for i in refused:  # Alertmanager retries what was answered 5xx
            assert relay.post_alertmanager(notification(i)).status_code == 200
        wait_until(lambda: len(pd.accepted()) >= BEFORE + DURING, what="every notification delivered",
                   timeout=15)
        relay.wait_outbox_empty(timeout=10)
        assert relay.metric("pdrelay_dispatcher_restarts_total") == 0
        assert relay.metric("pdrelay_outbox_available") == 1
    finally:
        redis.stop()

    sent = Counter(r.event["dedup_key"] for r in pd.accepted())
    assert sent == Counter({f"{i:016x}": 1 for i in range(BEFORE + DURING)})
    assert [r.status for r in pd.received()] == [202] * (BEFORE + DURING)
    assert delivered_while_down < BEFORE  # the kill came while the queue was draining
