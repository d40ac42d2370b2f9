"""A real Alertmanager 0.25 notifies pdrelay, which delivers to the PagerDuty stand-in.

Alertmanager runs with ``group_wait``/``group_interval`` of 1 s and ``repeat_interval`` of 500 ms, so
it re-sends each group's notification at every 1 s tick (``repeat_interval`` is only checked at those
ticks; with 1 s it would repeat every other tick): pdrelay has to tell PagerDuty each change once.
Every wait polls against a deadline.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from e2e_support import (
    ROUTING_KEY,
    Alertmanager,
    AlertmanagerFactory,
    AlertSpec,
    PagerDutyStandIn,
    PdRelay,
    PdRelayFactory,
    Received,
    group_dedup_key,
)

pytestmark = pytest.mark.e2e

RULES_TEMPLATE = """\
version: 1
defaults: {{routing_key: default, dedup: {dedup}, severity: error, send_resolved: true}}
rules: []
"""
REPEATS = 3  # Alertmanager notifications pdrelay must absorb while a state holds


def disk_alert(alertname: str, instance: str) -> AlertSpec:
    return AlertSpec(
        labels={"alertname": alertname, "instance": instance, "job": "node", "severity": "critical"},
        annotations={"summary": f"disk almost full on {instance}"},
    )


def actions(events: list[Received], action: str) -> list[Received]:
    return [e for e in events if e.event.get("event_action") == action]


def absorb_repeats(pd: PagerDutyStandIn, relay: PdRelay) -> None:
    """Let Alertmanager send ``REPEATS`` more notifications of the same state, then drain pdrelay."""
    seen = len(pd.captured())
    pd.wait_captured(seen + REPEATS)
    relay.wait_outbox_empty()


def start_pair(
    pd: PagerDutyStandIn, start_pdrelay: PdRelayFactory, start_alertmanager: AlertmanagerFactory, dedup: str
) -> tuple[PdRelay, Alertmanager]:
    """pdrelay with ``dedup``, and an Alertmanager posting to it and to the stand-in's capture path."""
    relay = start_pdrelay(rules=RULES_TEMPLATE.format(dedup=dedup))
    am = start_alertmanager([relay.alertmanager_url, pd.capture_url], repeat_interval="500ms")
    return relay, am


def test_dedup_alert_sends_one_trigger_and_one_resolve_per_alert(
    pd: PagerDutyStandIn, start_pdrelay: PdRelayFactory, start_alertmanager: AlertmanagerFactory
) -> None:
    """With dedup: alert, two alerts of one group give two triggers and two resolves keyed by fingerprint."""
    relay, am = start_pair(pd, start_pdrelay, start_alertmanager, "alert")
    first, second = disk_alert("E2EDiskFull", "host-a:9100"), disk_alert("E2EDiskFull", "host-b:9100")

    am.fire(first, second)
    fp_first, fp_second = am.fingerprints(first, second)
    pd.wait_accepted(lambda ev: len(actions(ev, "trigger")) >= 2, what="two triggers")
    absorb_repeats(pd, relay)

    am.resolve(first)  # partial resolve: the group stays firing with `second`
    pd.wait_accepted(lambda ev: len(actions(ev, "resolve")) >= 1, what="the first resolve")
    absorb_repeats(pd, relay)

    am.resolve(second)
    pd.wait_accepted(lambda ev: len(actions(ev, "resolve")) >= 2, what="the second resolve")
    relay.wait_outbox_empty()

    events = pd.received()
    assert all(e.accepted for e in events), [(e.status, e.event) for e in events]
    triples = [e.triple for e in events]
    # Both triggers come from one notification; pdrelay may send them in either order.
    first_two = sorted(triples[:2])
    assert first_two == sorted([("trigger", fp_first, ROUTING_KEY), ("trigger", fp_second, ROUTING_KEY)])
    assert triples[2:] == [("resolve", fp_first, ROUTING_KEY), ("resolve", fp_second, ROUTING_KEY)]
    bodies = pd.captured_json()
    assert [b["status"] for b in bodies].count("firing") >= 2 * REPEATS, "Alertmanager did not repeat"
    assert bodies[-1]["status"] == "resolved"


def test_dedup_group_sends_one_trigger_and_one_resolve_per_group(
    pd: PagerDutyStandIn, start_pdrelay: PdRelayFactory, start_alertmanager: AlertmanagerFactory
) -> None:
    """With dedup: group, a two-alert group becomes one trigger and one resolve keyed by sha256(groupKey)."""
    relay, am = start_pair(pd, start_pdrelay, start_alertmanager, "group")
    first, second = disk_alert("E2EGroupDisk", "host-a:9100"), disk_alert("E2EGroupDisk", "host-b:9100")
    group_key = '{}:{alertname="E2EGroupDisk"}'  # root route `{}`, group_by [alertname]
    dedup_key = group_dedup_key(group_key)

    am.fire(first, second)
    pd.wait_accepted(lambda ev: len(actions(ev, "trigger")) >= 1, what="the group trigger")
    absorb_repeats(pd, relay)

    am.resolve(first, second)
    pd.wait_accepted(lambda ev: len(actions(ev, "resolve")) >= 1, what="the group resolve")
    relay.wait_outbox_empty()

    bodies = pd.captured_json()
    assert {b["groupKey"] for b in bodies} == {group_key}
    assert len(bodies[0]["alerts"]) == 2
    assert bodies[-1]["status"] == "resolved"
    events = pd.received()
    assert all(e.accepted for e in events), [(e.status, e.event) for e in events]
    assert [e.triple for e in events] == [
        ("trigger", dedup_key, ROUTING_KEY),
        ("resolve", dedup_key, ROUTING_KEY),
    ]
    assert Counter(b["status"] for b in bodies)["firing"] >= REPEATS + 1, "Alertmanager did not repeat"


def test_fingerprints_match_what_alertmanager_sends(
    pd: PagerDutyStandIn, start_alertmanager: AlertmanagerFactory
) -> None:
    """The fingerprints of GET /api/v2/alerts are the ones in Alertmanager's webhook body."""
    am = start_alertmanager([pd.capture_url])
    first, second = disk_alert("E2EFingerprint", "host-a:9100"), disk_alert("E2EFingerprint", "host-b:9100")
    am.fire(first, second)
    fingerprints = am.fingerprints(first, second)
    body = json.loads(pd.wait_captured(1)[0])
    by_instance = {a["labels"]["instance"]: a["fingerprint"] for a in body["alerts"]}
    assert [by_instance["host-a:9100"], by_instance["host-b:9100"]] == fingerprints
    assert body["groupKey"] == '{}:{alertname="E2EFingerprint"}'
