"""Alertmanager HA with a pdrelay sidecar per peer, both sidecars on one Redis outbox.

Two real Alertmanager 0.25 peers form a cluster on loopback (gossip on ports memberlist binds and logs,
so no port is guessed), each posting to its own pdrelay; the two pdrelays share one Redis (the shared
127.0.0.1:6379, under this test's own key prefix). Alerts are posted to both peers, as Prometheus does.
With ``--cluster.peer-timeout=0s`` and a ``repeat_interval`` of 10 ms (far under the 1 s group tick and
under the peers' phase difference), both peers send every firing notification at every tick, whatever the
notification log gossiped: both pdrelays receive the same notifications, at times at the same moment. The
resolved notification goes out once or twice (twice when the second peer flushes before the first one's
log entry reached it). PagerDuty must hear each trigger and each resolve exactly once, the trigger first.

Every wait is on a condition, bounded. The last one waits until both peers logged the flush of the
resolved alerts, then until the pdrelays answered every notification sent and drained; a peer sends
milliseconds after that log line, so a late duplicate could in principle go unseen (a missed failure,
never a false one).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest
from e2e_support import (
    ROUTING_KEY,
    AlertmanagerFactory,
    AlertSpec,
    PagerDutyStandIn,
    PdRelay,
    PdRelayFactory,
    Received,
    drop_redis_prefix,
    redis_outbox,
    wait_until,
)

pytestmark = pytest.mark.e2e

REPEATS = 2  # notifications of each state (from either peer) pdrelay must absorb


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"pdrelay-e2e-{os.urandom(6).hex()}"
    yield name
    drop_redis_prefix(name)


def flushes(log: str) -> list[list[str]]:
    """The alerts of each ``msg=flushing`` line of an Alertmanager log, sorted."""
    return [sorted(m.group(1).split()) for m in re.finditer(r'msg=flushing alerts="\[(.*)\]"', log)]


def by_key(events: list[Received]) -> dict[str, list[str]]:
    """Each dedup_key's actions in arrival order."""
    out: dict[str, list[str]] = {}
    for e in events:
        out.setdefault(str(e.event.get("dedup_key")), []).append(str(e.event.get("event_action")))
    return out


def drained(relays: list[PdRelay], pd: PagerDutyStandIn, count: int) -> None:
    """Wait until ``count`` Alertmanager notifications were sent (to the capture path, next to the pdrelays)
    and both pdrelays have answered each and queue nothing."""
    pd.wait_captured(count)

    def done() -> bool:
        answered = sum(r.metric("pdrelay_intake_responses_total") or 0 for r in relays)
        return answered >= len(pd.captured()) and all(r.metric("pdrelay_outbox_depth") == 0 for r in relays)

    wait_until(done, what="both pdrelays answered every notification and drained", timeout=10)


def test_two_clustered_peers_each_with_a_pdrelay_page_once_per_change(
    pd: PagerDutyStandIn, start_pdrelay: PdRelayFactory, start_alertmanager: AlertmanagerFactory, prefix: str
) -> None:
    relays = [start_pdrelay(config={"outbox": redis_outbox(prefix)}) for _ in range(2)]
    timing = {"repeat_interval": "10ms", "peer_timeout": "0s"}
    first = start_alertmanager([relays[0].alertmanager_url, pd.capture_url], peers=[], **timing)
    second = start_alertmanager([relays[1].alertmanager_url, pd.capture_url], peers=[first.cluster_address],
                                **timing)
    wait_until(lambda: first.cluster_peers() == 2 and second.cluster_peers() == 2, what="a cluster of two",
               timeout=10)
    alerts = [AlertSpec(labels={"alertname": "E2EReplicaDisk", "instance": f"host-{n}:9100", "severity": "critical"},
                        annotations={"summary": f"disk almost full on host-{n}"}) for n in "abc"]

    for am in (first, second):
        am.fire(*alerts)
    fingerprints = first.fingerprints(*alerts)
    assert second.fingerprints(*alerts) == fingerprints
    pd.wait_accepted(lambda ev: len(ev) >= 3, what="three triggers")
    drained(relays, pd, len(pd.captured()) + REPEATS)

    for am in (first, second):
        am.resolve(*alerts)
    pd.wait_accepted(lambda ev: len(ev) >= 6, what="three resolves")
    resolved = sorted(f"E2EReplicaDisk[{fp[:7]}][resolved]" for fp in fingerprints)
    wait_until(lambda: all(resolved in flushes(am.log()) for am in (first, second)),
               what="both peers flushed the resolved alerts", timeout=10)
    drained(relays, pd, 1)

    received = pd.received()
    assert [r.status for r in received] == [202] * 6
    assert {r.event["routing_key"] for r in received} == {ROUTING_KEY}
    assert by_key(received) == {fp: ["trigger", "resolve"] for fp in fingerprints}
    answered = [r.metric("pdrelay_intake_responses_total") or 0 for r in relays]
    assert all(answered), f"each pdrelay got notifications (answers: {answered})"
