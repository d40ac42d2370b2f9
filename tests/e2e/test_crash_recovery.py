"""pdrelay answers 200 only after commit: events queued behind a PagerDuty outage survive ``kill -9``."""

from __future__ import annotations

import signal
from collections import Counter, defaultdict
from typing import Any

import pytest
from e2e_support import ROUTING_KEY, PagerDutyStandIn, PdRelayFactory, Received, wait_until

pytestmark = pytest.mark.e2e

FIRING_ENDS_AT = "0001-01-01T00:00:00Z"


def alert(instance: str, fingerprint: str, *, resolved: bool = False) -> dict[str, Any]:
    """One ``alerts[]`` item as Alertmanager 0.25 writes it."""
    return {
        "status": "resolved" if resolved else "firing",
        "labels": {"alertname": "CrashDisk", "instance": instance, "job": "node", "severity": "critical"},
        "annotations": {"summary": f"disk almost full on {instance}"},
        "startsAt": "2026-11-25T10:00:00.000Z",
        "endsAt": "2026-11-25T10:05:00.000Z" if resolved else FIRING_ENDS_AT,
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=up",
        "fingerprint": fingerprint,
    }


def notification(alerts: list[dict[str, Any]], group: str = "CrashDisk") -> dict[str, Any]:
    """An Alertmanager 0.25 webhook body for one group of the root route (group_by [alertname])."""
    firing = any(a["status"] == "firing" for a in alerts)
    labels = [a["labels"] for a in alerts]
    common = {k: v for k, v in labels[0].items() if all(lab.get(k) == v for lab in labels)}
    return {
        "receiver": "pdrelay",
        "status": "firing" if firing else "resolved",
        "alerts": alerts,
        "groupLabels": {"alertname": group},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{group}"}}',
        "truncatedAlerts": 0,
    }


# What Alertmanager would send for: a, b fire; c fires; a resolves (b still firing); c resolves.
BODIES = [
    notification([alert("a:9100", "00000000000000a1"), alert("b:9100", "00000000000000b2")]),
    notification([alert("c:9100", "00000000000000c3")]),
    notification([alert("a:9100", "00000000000000a1", resolved=True), alert("b:9100", "00000000000000b2")]),
    notification([alert("c:9100", "00000000000000c3", resolved=True)]),
]
EXPECTED = Counter(
    {
        ("trigger", "00000000000000a1"): 1,
        ("trigger", "00000000000000b2"): 1,
        ("trigger", "00000000000000c3"): 1,
        ("resolve", "00000000000000a1"): 1,
        ("resolve", "00000000000000c3"): 1,
    }
)


def delivered(events: list[Received]) -> Counter[tuple[str, str]]:
    return Counter((e.triple[0], e.triple[1]) for e in events)


def test_queued_events_survive_kill_9(pd: PagerDutyStandIn, start_pdrelay: PdRelayFactory) -> None:
    """Events accepted during a PagerDuty outage are all delivered, in order per key, after kill -9."""
    pd.set_default(503)
    relay = start_pdrelay()
    for body in BODIES:
        response = relay.post_alertmanager(body)
        assert response.status_code == 200, response.text
    wait_until(lambda: pd.received(), what="a delivery attempt answered 503")
    assert not pd.accepted()

    assert relay.kill(signal.SIGKILL) == -signal.SIGKILL
    pd.set_default(202)
    relay.start()

    pd.wait_accepted(lambda ev: delivered(ev) >= EXPECTED, what="every queued event")
    relay.wait_outbox_empty()
    events = pd.accepted()
    assert delivered(events) == EXPECTED
    assert {e.triple[2] for e in events} == {ROUTING_KEY}
    per_key: defaultdict[str, list[str]] = defaultdict(list)
    for event in events:
        per_key[event.triple[1]].append(event.triple[0])
    assert per_key == {
        "00000000000000a1": ["trigger", "resolve"],
        "00000000000000b2": ["trigger"],
        "00000000000000c3": ["trigger", "resolve"],
    }
    assert all(e.status in (202, 503) for e in pd.received())
