"""GET /status as JSON: the exact dict of a real app after sends, a 503, a 429 and a dead letter on a fake
clock; a failed rules reload shown until a later one succeeds; the error ring bounded, newest first, its
messages capped and free of control characters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

import receiver
from receiver.app import Deps, create_app
from receiver.audit import NullAudit
from receiver.errors import Reason
from receiver.limiter import RateLimit
from receiver.outbox import Depth
from receiver.pagerduty.events import SendResult, classify
from receiver.secret import Secret
from receiver.settings import OutboxSettings, PagerDutySettings, RulesSettings, Settings
from receiver.state import STATE
from receiver.status import RecentErrors, clean_text
from tests.fakes import FakeClock, FakeSender

RULES = """version: 1
defaults: {routing_key: default, dedup: alert, severity: error}
rules:
  - name: by-team
    match: ['team=~".+"']
    set: {routing_key: '{{ labels.team }}'}
"""
KEYS = {"default": Secret("d" * 32), "db": Secret("b" * 32)}
T0 = "2023-11-14T22:13:20Z"  # FakeClock's start
NO_DEAD = {r.value: 0 for r in Reason}
HOSTILE_503 = b"upstream \x1b[31mdown\x1b[0m\r\nretry\t" + b"x" * 400
CUT_503 = "PagerDuty 503: upstream [31mdown [0m retry "  # escapes, CR, LF and tab gone; cut at 300 characters


def alert(fingerprint: str, **labels: str) -> dict[str, Any]:
    return {"status": "firing", "labels": {"alertname": fingerprint.upper(), **labels}, "annotations": {},
            "startsAt": "2026-12-02T12:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph", "fingerprint": fingerprint}


BODY = {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing", "receiver": "pdrelay",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [alert("f1"), alert("f3", team="db"), alert("f4", team="payments")]}


def pagerduty(body: Mapping[str, Any]) -> SendResult:
    """f1: 503 with a hostile body; f3 (db): 429; everything else 202."""
    return {"f1": classify(503, HOSTILE_503), "f3": classify(429, b'{"status":"throttle event"}')}.get(
        body["dedup_key"], classify(202, b"{}"))


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_status_json_is_exact(tmp_path: Path, aiohttp_client: Any) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings = Settings(
        pagerduty=PagerDutySettings(routing_keys=KEYS, rate_limit=RateLimit(per_key=2, window_seconds=60),
                                    backoff_on_429=30, failure_threshold=5, recovery_timeout=60),
        outbox=OutboxSettings(path=tmp_path / "outbox.db"), rules=RulesSettings(paths=(rules,)),
    )
    clock = FakeClock()
    sender = FakeSender(pagerduty)
    client = await aiohttp_client(create_app(settings, Deps(clock=clock, registry=CollectorRegistry(),
                                                            sender=sender, audit=NullAudit())))
    st = client.app[STATE]
    assert (await client.post("/v1/alertmanager", json=BODY)).status == 200
    await until(lambda: len(sender.calls) == 2 and st.outbox.depth() == Depth(queued=2, dead=1)
                and len(st.errors.snapshot()) == 3)
    clock.advance(12.5)

    status = await (await client.get("/status")).json()
    errors = status.pop("last_errors")
    assert status == {
        "version": str(receiver.__version__),
        "dry_run": False,
        "events_url": "https://events.pagerduty.com/v2/enqueue",
        "routing_keys": [
            {"name": "db", "queued": 1, "oldest_queued_age_seconds": 12.5,
             "budget": {"used": 1, "limit": 2, "window_seconds": 60.0}, "next_send_in_seconds": 17.5,
             "throttled_429": 1, "dead_letters": NO_DEAD},
            {"name": "default", "queued": 1, "oldest_queued_age_seconds": 12.5,
             "budget": {"used": 1, "limit": 2, "window_seconds": 60.0}, "next_send_in_seconds": 0.0,
             "throttled_429": 0, "dead_letters": NO_DEAD},
        ],
        "outbox": {"queued": 2, "dead": 1},
        "breaker": {"endpoint": "events.pagerduty.com", "state": "closed", "failures": 1, "failure_threshold": 5,
                    "recovery_timeout": 60.0, "retry_in_seconds": None},
        "rules": {"sha256": st.rulebook.current.sha256, "sources": [str(rules)], "loaded_at": T0,
                  "rule_names": ["by-team"], "last_reload_error": None},
        "encryption": {"at_rest": "off"},
    }
    # Concurrent deliveries at the same instant: their order in the ring is theirs.
    assert sorted(errors, key=lambda e: e["reason"]) == [
        {"at": T0, "routing_key": "db", "reason": "rate_limited", "message": "PagerDuty 429: throttle event"},
        {"at": T0, "routing_key": "default", "reason": "server_error",
         "message": CUT_503 + "x" * (299 - len(CUT_503)) + "…"},
        {"at": T0, "routing_key": "unknown", "reason": "unknown_routing_key",
         "message": "routing key 'payments' is not configured"},
    ]
    assert all(len(e["message"]) <= 300 for e in errors)
    assert "d" * 32 not in str(status) + str(errors) and "b" * 32 not in str(status) + str(errors)

    # A failed reload is shown with its errors, the rules in force kept; a later success clears it.
    clock.advance(60)
    rules.write_text(RULES.replace("'{{ labels.team }}'", "nowhere"))
    assert (await client.post("/-/reload")).status == 400
    failed = (await (await client.get("/status")).json())["rules"]
    assert failed == {"sha256": st.rulebook.current.sha256, "sources": [str(rules)], "loaded_at": T0,
                      "rule_names": ["by-team"],
                      "last_reload_error": {"at": "2023-11-14T22:14:32Z", "errors": [
                          f"{rules}:6: unknown routing key name 'nowhere' (configured: db, default)"]}}
    clock.advance(1)
    rules.write_text(RULES.replace("by-team", "team-route"))
    assert (await client.post("/-/reload")).status == 200
    fixed = (await (await client.get("/status")).json())["rules"]
    assert (fixed["loaded_at"], fixed["rule_names"], fixed["last_reload_error"]) == (
        "2023-11-14T22:14:33Z", ["team-route"], None)


def test_the_error_ring_keeps_the_last_20_newest_first() -> None:
    clock = FakeClock()
    ring = RecentErrors(clock, frozenset({"default"}))
    for i in range(25):
        ring.add("default" if i % 2 else "<b>other</b>", Reason.SERVER_ERROR, f"error {i}")
        clock.advance(1)
    kept = ring.snapshot()
    assert [e["message"] for e in kept] == [f"error {i}" for i in range(24, 4, -1)]
    assert (kept[0]["at"], kept[0]["routing_key"], kept[1]["routing_key"]) == ("2023-11-14T22:13:44Z", "unknown",
                                                                              "default")


def test_clean_text_strips_control_and_format_characters_and_caps() -> None:
    assert clean_text("a\x00b\x07c\u202ed\u200be\nf\udcff") == "a b c d e f"
    assert clean_text("y" * 301) == "y" * 299 + "…"
    assert clean_text("y" * 300) == "y" * 300
