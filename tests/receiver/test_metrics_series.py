"""/metrics of a real app: the per routing key series, limiter wait, rule hits, build info, intake answers and
the process collectors, with exact values after enqueue, send, 429 and dead letters on a fake clock; a name
a hostile template produced never becomes a label value."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import receiver
from receiver.app import Deps, create_app
from receiver.audit import NullAudit
from receiver.limiter import RateLimit
from receiver.outbox import Depth
from receiver.pagerduty.events import SendResult, classify
from receiver.secret import Secret
from receiver.settings import OutboxSettings, PagerDutySettings, RulesSettings, Settings
from receiver.state import STATE
from tests.fakes import FakeClock, FakeSender

RULES = """
version: 1
defaults: {routing_key: default, dedup: alert, severity: error}
rules:
  - name: ignore-watchdog
    match: ['alertname="Watchdog"']
    drop: true
  - name: by-team
    match: ['team=~".+"']
    set: {routing_key: '{{ labels.team }}'}
"""
HOSTILE = 'evil"} 1 <script>x</script>'
KEYS = {"default": Secret("d" * 32), "db": Secret("b" * 32)}


def alert(fingerprint: str, name: str, **labels: str) -> dict[str, Any]:
    return {"status": "firing", "labels": {"alertname": name, **labels}, "annotations": {},
            "startsAt": "2026-12-02T12:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph", "fingerprint": fingerprint}


def notification(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing", "receiver": "pdrelay",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
            "alerts": list(alerts)}


BODY = notification(alert("f1", "A"), alert("f2", "B"), alert("f3", "C", team=HOSTILE), alert("f4", "D", team="db"),
                    alert("f5", "Watchdog"))


def pagerduty() -> Callable[[Mapping[str, Any]], SendResult]:
    """202 for the default key's events; the db event: 429, then 400."""
    db_answers = [classify(429, b'{"status":"throttle event","message":"Requests for this service are arriving '
                                b'too quickly"}'),
                  classify(400, b'{"status":"invalid event","message":"Event object is invalid","errors":'
                                b'["Length of summary is too long"]}')]

    def answer(body: Mapping[str, Any]) -> SendResult:
        return db_answers.pop(0) if body["dedup_key"] == "f4" else classify(202, b"{}")

    return answer


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) until ``pred()`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def scrape(client: TestClient[Any, Any]) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """The /metrics text, and every sample by (name, sorted labels)."""
    resp = await client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return text, samples


def of(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> dict[str, float]:
    """``name``'s samples as {"label=value,…": value}."""
    return {",".join(f"{k}={v}" for k, v in labels): value for (n, labels), value in samples.items() if n == name}


async def test_per_key_series_after_enqueue_send_429_and_dead_letters(tmp_path: Path, aiohttp_client: Any) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    settings = Settings(
        pagerduty=PagerDutySettings(routing_keys=KEYS, rate_limit=RateLimit(per_key=1, window_seconds=60),
                                    backoff_on_429=30),
        outbox=OutboxSettings(path=tmp_path / "outbox.db"), rules=RulesSettings(paths=(tmp_path / "rules.yaml",)),
    )
    clock = FakeClock()
    sender = FakeSender(pagerduty())
    client = await aiohttp_client(create_app(settings, Deps(clock=clock, registry=CollectorRegistry(),
                                                            sender=sender, audit=NullAudit())))
    st = client.app[STATE]

    _, before = await scrape(client)  # every combination exists at start, at 0
    assert of(before, "pdrelay_events_enqueued_total") == {
        "routing_key=db": 0, "routing_key=default": 0, "routing_key=unknown": 0}
    assert len(of(before, "pdrelay_events_dead_lettered_total")) == 3 * 11
    assert of(before, "pdrelay_rule_hits_total") == {"rule=by-team": 0, "rule=ignore-watchdog": 0}
    assert of(before, "pdrelay_intake_responses_total") == {
        f"code={c}": 0 for c in ("200", "400", "401", "403", "408", "413", "415", "429", "500", "503",
                                 "2xx", "3xx", "4xx", "5xx")}
    assert of(before, "pdrelay_build_info") == {f"version={receiver.__version__}": 1}
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_gc_collections_total"):
        assert of(before, name), name
    assert len(of(before, "python_info")) == 1

    assert (await client.post("/v1/alertmanager", json=BODY)).status == 200
    assert (await client.post("/v1/alertmanager", data=b"{not json", headers={"Content-Type": "application/json"})
            ).status == 400
    # At t0: f1 is sent; f2 waits for the default key's budget; f3's key is not configured; f4 gets a 429.
    await until(lambda: len(sender.calls) == 2 and st.outbox.depth() == Depth(queued=2, dead=1)
                and len(st.errors.snapshot()) == 2)
    clock.advance(10)
    text, now = await scrape(client)
    assert "evil" not in text and "<script>" not in text
    assert {dict(labels).get("routing_key") for _, labels in now} == {None, "default", "db", "unknown"}
    assert of(now, "pdrelay_events_enqueued_total") == {
        "routing_key=db": 1, "routing_key=default": 2, "routing_key=unknown": 1}
    assert of(now, "pdrelay_events_sent_total") == {"routing_key=db": 0, "routing_key=default": 1,
                                                    "routing_key=unknown": 0}
    assert of(now, "pdrelay_events_throttled_total") == {"routing_key=db": 1, "routing_key=default": 0,
                                                         "routing_key=unknown": 0}
    assert {k: v for k, v in of(now, "pdrelay_events_dead_lettered_total").items() if v} == {
        "reason=unknown_routing_key,routing_key=unknown": 1}
    assert of(now, "pdrelay_outbox_queued") == {"routing_key=db": 1, "routing_key=default": 1,
                                                "routing_key=unknown": 0}
    assert of(now, "pdrelay_outbox_oldest_queued_age_seconds") == {
        "routing_key=db": 10.0, "routing_key=default": 10.0, "routing_key=unknown": 0.0}
    assert of(now, "pdrelay_rule_hits_total") == {"rule=by-team": 2, "rule=ignore-watchdog": 1}
    assert {k: v for k, v in of(now, "pdrelay_intake_responses_total").items() if v} == {"code=200": 1,
                                                                                          "code=400": 1}

    # At t0 + 60 the window has room again: f2 goes (it waited 60 s), and f4 (ready at t0 + 30 after its
    # 429, and waiting 30 s more for the window its first attempt used) gets a 400: a dead letter.
    clock.advance(50)
    n = st.dispatcher.wake()
    await until(lambda: st.dispatcher.looked_after >= n and st.outbox.depth() == Depth(queued=0, dead=2))
    _, after = await scrape(client)
    assert of(after, "pdrelay_events_sent_total")["routing_key=default"] == 2
    assert {k: v for k, v in of(after, "pdrelay_events_dead_lettered_total").items() if v} == {
        "reason=unknown_routing_key,routing_key=unknown": 1, "reason=invalid_event,routing_key=db": 1}
    assert of(after, "pdrelay_outbox_queued") == {"routing_key=db": 0, "routing_key=default": 0,
                                                  "routing_key=unknown": 0}
    assert set(of(after, "pdrelay_outbox_oldest_queued_age_seconds").values()) == {0.0}
    assert of(after, "pdrelay_limiter_wait_seconds_count") == {"routing_key=db": 2, "routing_key=default": 2,
                                                               "routing_key=unknown": 1}
    assert of(after, "pdrelay_limiter_wait_seconds_sum") == {"routing_key=db": 30.0, "routing_key=default": 60.0,
                                                             "routing_key=unknown": 0.0}
    waits = of(after, "pdrelay_limiter_wait_seconds_bucket")
    assert (waits["le=0.0,routing_key=default"], waits["le=30.0,routing_key=default"],
            waits["le=60.0,routing_key=default"]) == (1, 1, 2)
    assert (waits["le=0.0,routing_key=db"], waits["le=10.0,routing_key=db"], waits["le=30.0,routing_key=db"]) == \
        (1, 1, 2)


async def test_rule_names_of_a_reload_are_added_and_old_ones_kept(tmp_path: Path, aiohttp_client: Any) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings = Settings(pagerduty=PagerDutySettings(routing_keys=KEYS), outbox=OutboxSettings(path=tmp_path / "o.db"),
                        rules=RulesSettings(paths=(rules,)))
    client = await aiohttp_client(create_app(settings, Deps(clock=FakeClock(), registry=CollectorRegistry(),
                                                            sender=FakeSender(lambda b: classify(202, b"{}")),
                                                            audit=NullAudit())))
    rules.write_text("version: 1\nrules:\n  - name: severity\n    set: {severity: critical}\n")
    assert (await client.post("/-/reload")).status == 200
    _, samples = await scrape(client)
    assert of(samples, "pdrelay_rule_hits_total") == {"rule=by-team": 0, "rule=ignore-watchdog": 0,
                                                      "rule=severity": 0}
