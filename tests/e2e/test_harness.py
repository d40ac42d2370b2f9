"""The end-to-end harness itself: the PagerDuty stand-in answers like PagerDuty and as programmed."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from e2e_support import ROUTING_KEY, PagerDutyStandIn, Reply, metric_sum

pytestmark = pytest.mark.e2e


def trigger(dedup_key: str, **payload: Any) -> dict[str, Any]:
    body = {"summary": "disk full on db-1", "source": "db-1", "severity": "critical", **payload}
    return {"routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": dedup_key, "payload": body}


def post(pd: PagerDutyStandIn, event: Any) -> httpx.Response:
    return httpx.post(pd.events_url, content=json.dumps(event), trust_env=False, timeout=5)


def test_stand_in_uses_programmed_replies_then_the_default(pd: PagerDutyStandIn) -> None:
    """Queued replies are used in order, then 202 with PagerDuty's body; every event is recorded."""
    pd.queue(500, 429, Reply(400, {"status": "invalid event", "message": "nope", "errors": ["x"]}))
    statuses = [post(pd, trigger(f"k{i}")).status_code for i in range(4)]
    assert statuses == [500, 429, 400, 202]
    last = post(pd, trigger("k4")).json()
    assert last == {"status": "success", "message": "Event processed", "dedup_key": "k4"}
    assert [r.status for r in pd.received()] == [500, 429, 400, 202, 202]
    assert [r.triple for r in pd.accepted()] == [("trigger", f"k{i}", ROUTING_KEY) for i in (3, 4)]


def test_stand_in_rejects_what_pagerduty_rejects(pd: PagerDutyStandIn) -> None:
    """An event PagerDuty would refuse gets 400 with an ``errors`` list, even when 202 is the default."""
    response = post(pd, trigger("k", severity="page", summary="x" * 1025))
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert any("severity" in e for e in errors) and any("1024" in e for e in errors)
    assert post(pd, {"routing_key": "short", "event_action": "resolve"}).status_code == 400
    assert httpx.post(pd.events_url, content=b"{", trust_env=False, timeout=5).status_code == 400


def test_stand_in_default_can_change_between_events(pd: PagerDutyStandIn) -> None:
    """``set_default`` switches the answer for every later event."""
    pd.set_default(503)
    assert post(pd, trigger("a")).status_code == 503
    pd.set_default(202)
    assert post(pd, trigger("a")).status_code == 202


def test_metric_parsing() -> None:
    """metric_sum adds a metric's samples over label sets."""
    text = '# HELP d x\nd{state="queued"} 3.0\nd{state="dead"} 1\nd_total 9\n'
    assert metric_sum(text, "d") == 4.0
    assert metric_sum(text, "missing") is None
