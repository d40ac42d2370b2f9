"""The HTTP intake: 200 only after commit, an exact answer for every class of bad input."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.errors import PayloadTooLarge
from receiver.models import Limits, parse_notification
from receiver.pagerduty.events import classify
from receiver.secret import Secret
from receiver.settings import OutboxSettings, PagerDutySettings, RulesSettings, ServerSettings, Settings
from receiver.state import STATE
from tests.fakes import FakeSender

CAPTURED = Path(__file__).parent.parent / "e2e" / "captured"
RULES = """
version: 1
defaults: {routing_key: default, dedup: alert, severity: error}
rules:
  - name: ignore-watchdog
    match: ['alertname="Watchdog"']
    drop: true
"""

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def valid_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((CAPTURED / "am-0.25_firing.json").read_text())
    body.update(overrides)
    return body


@pytest.fixture
def make_client(tmp_path: Path, aiohttp_client: ClientFactory) -> Callable[..., Awaitable[TestClient[Any, Any]]]:
    async def make(body_limit: int = 10 * 1024 * 1024, **server: Any) -> TestClient[Any, Any]:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES)
        settings = Settings(
            server=ServerSettings(body_limit=body_limit, **server),
            pagerduty=PagerDutySettings(routing_keys={"default": Secret("k" * 32)}),
            outbox=OutboxSettings(path=tmp_path / "outbox.db"),
            rules=RulesSettings(paths=(rules,)),
        )
        # A PagerDuty that is down keeps events queued (retried after ≥ 0.5 s) for inspection.
        sender = FakeSender(lambda body: classify(503, b"down"))
        app = create_app(settings, Deps(registry=CollectorRegistry(), sender=sender))
        return await aiohttp_client(app)

    return make


async def test_valid_body_is_committed_before_200(make_client: Any) -> None:
    """A real Alertmanager 0.25 body is answered 200 with what was queued, and the events are stored."""
    client = await make_client()
    resp = await client.post("/v1/alertmanager", json=valid_body())
    assert resp.status == 200
    assert await resp.json() == {"status": "accepted", "alerts": 2, "queued": 2, "duplicates": 0,
                                 "dropped": 0, "dead_lettered": 0}
    outbox = client.app[STATE].outbox
    assert outbox.depth().queued == 2


async def test_repeat_notification_is_not_queued_again(make_client: Any) -> None:
    """Alertmanager's retry or an HA peer's copy of the same notification queues nothing new."""
    client = await make_client()
    assert (await client.post("/v1/alertmanager", json=valid_body())).status == 200
    resp = await client.post("/v1/alertmanager", json=valid_body())
    assert (await resp.json())["duplicates"] == 2
    assert client.app[STATE].outbox.depth().queued == 2


async def test_body_from_newer_alertmanager_with_unknown_fields_is_accepted(make_client: Any) -> None:
    """0.32+ fields (notification_reason, routeLabels) and unknown fields are fine."""
    client = await make_client()
    body = valid_body(notification_reason="first notification", routeLabels={"team": "x"}, somethingNew=[1])
    resp = await client.post("/v1/alertmanager", json=body)
    assert resp.status == 200


@pytest.mark.parametrize(
    ("raw", "status", "answer"),
    [
        (b"{not json", 400, {"error": "invalid JSON: JSON is malformed: object keys must be strings (byte 1)"}),
        (b"", 400, {"error": "empty body: expected an Alertmanager webhook JSON object"}),
        (b'{"version": "4", "receiver": "\xff"}', 400, {"error": "body is not valid UTF-8 (byte 30)"}),
        (b"[]", 400, {"error": "expected a JSON object (an Alertmanager webhook body)"}),
        (json.dumps(valid_body(alerts=None)).encode(), 400,
         {"error": "Expected `array`, got `null`", "field": "alerts"}),
        (json.dumps({k: v for k, v in valid_body().items() if k != "alerts"}).encode(), 400,
         {"error": "missing required field 'alerts'", "field": "alerts"}),
        (json.dumps(valid_body(version="3")).encode(), 400,
         {"error": "unsupported webhook version '3': expected \"4\"", "field": "version"}),
        (json.dumps(valid_body(version=4)).encode(), 400,
         {"error": "Expected `str`, got `int`", "field": "version"}),
        (json.dumps(valid_body(status="on fire")).encode(), 400,
         {"error": "Invalid enum value 'on fire'", "field": "status"}),
        (json.dumps(valid_body(alerts=[{"status": "firing", "labels": {"a": 1}, "fingerprint": "f"}])).encode(),
         400, {"error": "Expected `str`, got `int`", "field": "alerts[0].labels"}),
        (json.dumps(valid_body(alerts=[{"status": "firing", "labels": {}}])).encode(), 400,
         {"error": "missing required field 'fingerprint'", "field": "alerts[0].fingerprint"}),
        (json.dumps(valid_body(truncatedAlerts=-1)).encode(), 400,
         {"error": "must not be negative", "field": "truncatedAlerts"}),
    ],
)
async def test_bad_bodies_get_400_naming_the_field(make_client: Any, raw: bytes, status: int,
                                                   answer: dict[str, str]) -> None:
    """Each class of bad input gets its exact status and JSON error; nothing is stored."""
    client = await make_client()
    resp = await client.post("/v1/alertmanager", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == status
    assert await resp.json() == answer
    assert client.app[STATE].outbox.depth().queued == 0
    reg = client.app[STATE].metrics.registry
    assert reg.get_sample_value("pdrelay_bodies_rejected_total", {"reason": "invalid_body"}) == 1


async def test_body_over_the_limit_gets_413(make_client: Any) -> None:
    """A body over the configured limit is refused with 413 and a JSON error."""
    client = await make_client(body_limit=1000)
    raw = json.dumps(valid_body()).encode()
    resp = await client.post("/v1/alertmanager", data=raw)
    assert resp.status == 413
    assert await resp.json() == {"error": f"body of {len(raw)} bytes is over the limit of 1000"}


async def test_chunked_body_over_the_limit_gets_413(make_client: Any) -> None:
    """A body without Content-Length is cut off at the limit too."""
    client = await make_client(body_limit=1000)
    raw = json.dumps(valid_body()).encode()

    async def chunks() -> Any:
        for i in range(0, len(raw), 100):
            yield raw[i:i + 100]

    resp = await client.post("/v1/alertmanager", data=chunks())
    assert resp.status == 413
    assert await resp.json() == {"error": "body is over the limit of 1000 bytes"}


def alert_like(n: int, **labels: str) -> dict[str, Any]:
    alert: dict[str, Any] = json.loads(json.dumps(valid_body()["alerts"][0]))
    alert["fingerprint"] = f"{n:016x}"
    alert["labels"].update(labels)
    return alert


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        (valid_body(alerts=[alert_like(n) for n in range(4)]),
         {"error": "too many alerts: 4 > 3 (server.max_alerts; set Alertmanager's webhook max_alerts below it)",
          "field": "alerts"}),
        (valid_body(alerts=[alert_like(0), alert_like(1, big="x" * 100)]),
         {"error": "alerts[1].labels.big: 103 bytes is over the limit of 64 (server.max_label_bytes)",
          "field": "alerts[1].labels.big"}),
        (valid_body(alerts=[alert_like(0, ok="é" * 20)], commonLabels={"wide": "é" * 40}),
         {"error": "commonLabels.wide: 84 bytes is over the limit of 64 (server.max_label_bytes)",
          "field": "commonLabels.wide"}),
        (valid_body(commonAnnotations={"description": "d" * 200}),
         {"error": "commonAnnotations.description: 211 bytes is over the limit of 128 (server.max_annotation_bytes)",
          "field": "commonAnnotations.description"}),
    ],
    ids=["alerts", "alert-label", "common-label-utf8", "annotation"],
)
async def test_bodies_over_the_content_limits_get_413_naming_the_limit(
    make_client: Any, body: dict[str, Any], answer: dict[str, str]
) -> None:
    """Too many alerts or an oversized label/annotation: 413, the field, the limit and its config key;
    nothing is stored."""
    client = await make_client(max_alerts=3, max_label_bytes=64, max_annotation_bytes=128)
    resp = await client.post("/v1/alertmanager", json=body)
    assert (resp.status, await resp.json()) == (413, answer)
    assert client.app[STATE].outbox.depth().queued == 0
    ok = await client.post("/v1/alertmanager", json=valid_body())  # the labels of the real body fit
    assert ok.status == 200


def labels(count: int, prefix: str = "l") -> dict[str, str]:
    return {f"{prefix}{i}": str(i) for i in range(count)}


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        (valid_body(alerts=[alert_like(n) for n in range(3)] + [dict(alert_like(3), labels=labels(600))]),
         {"error": "alerts[3].labels: 600 labels is over the limit of 10 (server.max_labels)",
          "field": "alerts[3].labels"}),
        (valid_body(alerts=[dict(alert_like(0), annotations=labels(11, "a"))]),
         {"error": "alerts[0].annotations: 11 annotations is over the limit of 10 (server.max_labels)",
          "field": "alerts[0].annotations"}),
        (valid_body(groupLabels=labels(11)),
         {"error": "groupLabels: 11 labels is over the limit of 10 (server.max_labels)", "field": "groupLabels"}),
        (valid_body(commonLabels=labels(11)),
         {"error": "commonLabels: 11 labels is over the limit of 10 (server.max_labels)", "field": "commonLabels"}),
        (valid_body(commonAnnotations=labels(11)),
         {"error": "commonAnnotations: 11 annotations is over the limit of 10 (server.max_labels)",
          "field": "commonAnnotations"}),
        (valid_body(routeLabels=labels(11)),
         {"error": "routeLabels: 11 labels is over the limit of 10 (server.max_labels)", "field": "routeLabels"}),
        # Values with escaped quotes and backslashes are counted as the strings they are.
        (valid_body(alerts=[dict(alert_like(0), labels={f"l{i}": 'say "hi" \\ ":"' for i in range(11)})]),
         {"error": "alerts[0].labels: 11 labels is over the limit of 10 (server.max_labels)",
          "field": "alerts[0].labels"}),
        # The count is checked before any label's size: the many labels are not read one by one.
        (valid_body(alerts=[alert_like(0, big="x" * 100), dict(alert_like(1), labels=labels(11))]),
         {"error": "alerts[1].labels: 11 labels is over the limit of 10 (server.max_labels)",
          "field": "alerts[1].labels"}),
    ],
    ids=["alert-labels", "alert-annotations", "group-labels", "common-labels", "common-annotations",
         "route-labels", "escaped-values", "count-before-size"],
)
async def test_maps_with_too_many_entries_get_413_naming_the_map(
    make_client: Any, body: dict[str, Any], answer: dict[str, str]
) -> None:
    """Labels (and annotations) per alert and in each group-level map are bounded by server.max_labels:
    413, the map, its count, the limit and its key; nothing stored, nothing evaluated."""
    client = await make_client(max_labels=10, max_label_bytes=64)  # the real body's maps have up to 9
    resp = await client.post("/v1/alertmanager", json=body)
    assert (resp.status, await resp.json()) == (413, answer)
    assert client.app[STATE].outbox.depth().queued == 0
    reg = client.app[STATE].metrics.registry
    assert reg.get_sample_value("pdrelay_bodies_rejected_total", {"reason": "too_large"}) == 1
    assert reg.get_sample_value("pdrelay_alerts_received_total") == 0


async def test_maps_at_the_limit_are_accepted_whatever_their_values_hold(make_client: Any) -> None:
    """Ten labels with quotes, backslashes and colons in their values are ten labels, not more."""
    client = await make_client(max_labels=10)
    tricky = {f"l{i}": 'say "hi" \\ ":", {"a": "b"}' for i in range(10)}
    resp = await client.post("/v1/alertmanager", json=valid_body(alerts=[dict(alert_like(0), labels=tricky)]))
    assert resp.status == 200


def test_a_map_over_the_limit_is_refused_without_being_decoded() -> None:
    """600,000 labels in a 9.6 MiB body are counted in its text: refused with what the body itself takes,
    where decoding the map would take 8 times as much (and the rules, 3 times that)."""
    labels = {"alertname": "ManyLabels", **{f"l{i:05x}": f"{i:x}" for i in range(600_000)}}
    raw = json.dumps(valid_body(alerts=[dict(alert_like(0), labels=labels)]), separators=(",", ":")).encode()
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge) as refused:
            parse_notification(raw, Limits())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.to_json() == {
        "error": "alerts[0].labels: 600001 labels is over the limit of 128 (server.max_labels)",
        "field": "alerts[0].labels"}
    assert peak < 2 * len(raw), f"{peak / 2 ** 20:.1f} MiB for a {len(raw) / 2 ** 20:.1f} MiB body"


async def test_the_label_count_limit_defaults_to_128(make_client: Any) -> None:
    client = await make_client()
    ok = await client.post("/v1/alertmanager", json=valid_body(alerts=[dict(alert_like(0), labels=labels(128))]))
    assert ok.status == 200
    resp = await client.post("/v1/alertmanager", json=valid_body(alerts=[dict(alert_like(1), labels=labels(129))]))
    assert (resp.status, await resp.json()) == (413, {
        "error": "alerts[0].labels: 129 labels is over the limit of 128 (server.max_labels)",
        "field": "alerts[0].labels"})


DEEP = "invalid JSON: nested too deeply (an Alertmanager webhook body is a few levels deep)"


def nested(depth: int, where: str) -> bytes:
    """A valid body with ``depth`` nested arrays in an unknown field, at the top or in an alert."""
    raw = json.dumps(valid_body()).encode()
    deep = b"[" * depth + b"]" * depth
    if where == "top":
        return raw[:-1] + b', "extra": ' + deep + b"}"
    return raw.replace(b'"fingerprint": ', b'"extra": ' + deep + b', "fingerprint": ', 1)


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize("where", ["top", "alert"])
async def test_deeply_nested_json_gets_400(make_client: Any, depth: int, where: str) -> None:
    """JSON nested a thousand levels deep (RecursionError in the decoder) is a bad body like any other."""
    client = await make_client()
    resp = await client.post("/v1/alertmanager", data=nested(depth, where))
    assert (resp.status, await resp.json()) == (400, {"error": DEEP})
    assert client.app[STATE].outbox.depth().queued == 0
    reg = client.app[STATE].metrics.registry
    assert reg.get_sample_value("pdrelay_bodies_rejected_total", {"reason": "invalid_body"}) == 1
    assert (await client.post("/v1/alertmanager", data=nested(100, where))).status == 200


async def test_outbox_that_cannot_commit_gives_503(make_client: Any) -> None:
    """When the outbox cannot store the events, intake answers 503 so Alertmanager retries."""
    client = await make_client()
    outbox = client.app[STATE].outbox
    # The test caps the file at its current size: SQLite's own "disk full".
    await outbox._db.run_alone(lambda conn: conn.execute("PRAGMA max_page_count = 1"))
    many = [dict(valid_body()["alerts"][0], fingerprint=f"{i:016x}") for i in range(400)]
    resp = await client.post("/v1/alertmanager", json=valid_body(alerts=many))
    assert resp.status == 503
    assert await resp.json() == {"error": "outbox unavailable: the notification was not stored; retry later"}
    assert outbox.depth().queued == 0


async def test_health_ready_metrics_status(make_client: Any) -> None:
    """The operational endpoints answer, and /status shows routing keys by name only."""
    client = await make_client()
    await client.post("/v1/alertmanager", json=valid_body())
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert (ready.status, await ready.json()) == (200, {"status": "ready"})
    text = await (await client.get("/metrics")).text()
    assert "pdrelay_bodies_accepted_total 1.0" in text
    assert 'pdrelay_outbox_depth{state="queued"} 2.0' in text
    assert 'pdrelay_events_failed_total{reason="rate_limited"} 0.0' in text
    status = await (await client.get("/status")).json()
    assert [k["name"] for k in status["routing_keys"]] == ["default"]
    assert status["routing_keys"][0]["queued"] == 2
    assert status["outbox"] == {"queued": 2, "dead": 0}
    assert "k" * 32 not in json.dumps(status) + text


async def test_status_page_for_browsers_escapes_and_hides_keys(make_client: Any) -> None:
    """A browser gets /status as HTML with the same facts, escaped, and never the routing key itself."""
    client = await make_client()
    resp = await client.get("/status", headers={"Accept": "text/html,application/xhtml+xml"})
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    assert "<tr><td>default</td>" in page
    assert '<span id="outbox-queued">0</span> queued, <span id="outbox-dead">0</span> dead letters' in page
    assert "k" * 32 not in page
