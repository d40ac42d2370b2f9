"""``POST /v1/events`` in one process: each action through the outbox and dispatcher to the PagerDuty stand-in,
and the exact answer to each bad input (nothing stored for any of them)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.secret import Secret
from receiver.settings import OutboxSettings, PagerDutySettings, RulesSettings, ServerSettings, Settings
from receiver.state import STATE
from tests.e2e.e2e_support import PagerDutyStandIn

KEY = "e" * 32
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
PAYLOAD = {"summary": "nightly load failed", "source": "airflow-1", "severity": "error",
           "custom_details": {"task": "load", "try": 2}}


@pytest.fixture
def pd() -> Iterator[PagerDutyStandIn]:
    with PagerDutyStandIn() as stand_in:
        yield stand_in


@pytest.fixture
async def client(tmp_path: Path, pd: PagerDutyStandIn, aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n")
    settings = Settings(
        server=ServerSettings(body_limit=600_000),
        pagerduty=PagerDutySettings(events_url=pd.events_url, allowed_hosts=("127.0.0.1",),
                                    routing_keys={"pipelines": Secret(KEY)}),
        outbox=OutboxSettings(path=tmp_path / "outbox.db"),
        rules=RulesSettings(paths=(rules,)),
    )
    return await aiohttp_client(create_app(settings, Deps(registry=CollectorRegistry(),
                                                          log=logging.getLogger("test-events-api"))))


async def until(pred: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Wait (bounded) until ``pred()`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, f"not reached in time: {what}"
        await asyncio.sleep(0.005)


async def test_trigger_then_resolve_reach_pagerduty_with_the_generated_dedup_key(
        client: TestClient[Any, Any], pd: PagerDutyStandIn, tmp_path: Path) -> None:
    """A trigger without dedup_key gets one (a UUID) in the 202; the stand-in receives it with the real key,
    then the resolve for it; the same trigger again is answered as a duplicate and not sent. Each is counted
    and audited (the dedup_key as a hash prefix), and so is a refusal."""
    resp = await client.post("/v1/events", json={"routing_key": "pipelines", "event_action": "trigger",
                                                 "payload": PAYLOAD, "client": "Airflow",
                                                 "links": [{"href": "https://airflow.example/x", "text": "log"}]})
    assert resp.status == 202
    answer = await resp.json()
    key = answer["dedup_key"]
    assert UUID.fullmatch(key)
    assert answer == {"status": "accepted", "dedup_key": key, "duplicate": False}
    await until(lambda: len(pd.accepted()) == 1, "the trigger accepted")
    assert pd.accepted()[0].event == {
        "routing_key": KEY, "event_action": "trigger", "dedup_key": key, "payload": PAYLOAD, "client": "Airflow",
        "links": [{"href": "https://airflow.example/x", "text": "log"}]}
    outbox = client.app[STATE].outbox
    await until(lambda: outbox.depth().queued == 0, "the ack committed")
    again = await client.post("/v1/events", json={"routing_key": "pipelines", "event_action": "trigger",
                                                  "dedup_key": key, "payload": PAYLOAD, "client": "Airflow",
                                                  "links": [{"href": "https://airflow.example/x", "text": "log"}]})
    assert (again.status, await again.json()) == (202, {"status": "accepted", "dedup_key": key, "duplicate": True})
    resolve = await client.post("/v1/events", json={"routing_key": "pipelines", "event_action": "resolve",
                                                    "dedup_key": key})
    assert (resolve.status, await resolve.json()) == (
        202, {"status": "accepted", "dedup_key": key, "duplicate": False})
    await until(lambda: len(pd.accepted()) == 2, "the resolve accepted")
    assert pd.accepted()[1].event == {"routing_key": KEY, "event_action": "resolve", "dedup_key": key}
    assert len(pd.received()) == 2
    registry = client.app[STATE].metrics.registry
    assert (registry.get_sample_value("pdrelay_events_enqueued_total", {"routing_key": "pipelines"}),
            registry.get_sample_value("pdrelay_events_duplicate_total")) == (2, 1)
    bad = await client.post("/v1/events", json={"routing_key": "pipelines", "event_action": "resolve"})
    assert bad.status == 400
    await client.close()
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    assert [(e["event"], e["actor"], e.get("action"), e.get("dedup_key_sha256"), e.get("queued"), e.get("error"))
            for e in audit if e["event"].startswith("events.")] == [
        ("events.accepted", "anonymous", "trigger", digest, 1, None),
        ("events.accepted", "anonymous", "trigger", digest, 0, None),
        ("events.accepted", "anonymous", "resolve", digest, 1, None),
        ("events.refused", "anonymous", None, None, None, "dedup_key is required to resolve"),
    ]


async def test_change_event_goes_to_the_change_endpoint(client: TestClient[Any, Any], pd: PagerDutyStandIn) -> None:
    """``event_action: change`` is a Change Event: sent to /v2/change/enqueue without action or dedup_key."""
    payload = {"summary": "shop v43 deployed", "source": "ci", "timestamp": "2026-12-02T14:00:00Z"}
    resp = await client.post("/v1/events", json={"routing_key": "pipelines", "event_action": "change",
                                                 "payload": payload, "links": [{"href": "https://ci.example/43"}]})
    assert resp.status == 202
    key = (await resp.json())["dedup_key"]
    assert key.startswith("change:native:") and UUID.fullmatch(key.removeprefix("change:native:"))
    await until(lambda: len(pd.accepted()) == 1, "the change accepted")
    [got] = pd.accepted()
    assert (got.path, got.event) == ("/v2/change/enqueue", {
        "routing_key": KEY, "payload": payload, "links": [{"href": "https://ci.example/43"}]})


TRIGGER: dict[str, Any] = {"routing_key": "pipelines", "event_action": "trigger", "payload": PAYLOAD}
BAD: list[tuple[str, Any, int, dict[str, str]]] = [
    ("not json", b"{nope", 400, {"error": "body is not valid JSON"}),
    ("not an object", [1], 400, {"error": "the body must be an object", "field": "the body"}),
    ("no action", {"routing_key": "pipelines", "payload": PAYLOAD}, 400,
     {"error": "event_action must be one of trigger, resolve, change", "field": "event_action"}),
    ("acknowledge", {**TRIGGER, "event_action": "acknowledge", "dedup_key": "k"}, 400,
     {"error": "event_action 'acknowledge' is not supported yet: use trigger, resolve or change",
      "field": "event_action"}),
    ("unknown key name", {**TRIGGER, "routing_key": "db-oncall"}, 400,
     {"error": "unknown routing key name", "field": "routing_key"}),
    ("routing key not a string", {**TRIGGER, "routing_key": 7}, 400,
     {"error": "routing_key must be a string", "field": "routing_key"}),
    ("no payload", {"routing_key": "pipelines", "event_action": "trigger"}, 400,
     {"error": "payload must be an object", "field": "payload"}),
    ("no summary", {**TRIGGER, "payload": {"source": "s", "severity": "info"}}, 400,
     {"error": "payload.summary is required", "field": "payload.summary"}),
    ("no source", {**TRIGGER, "payload": {"summary": "s", "severity": "info"}}, 400,
     {"error": "payload.source is required", "field": "payload.source"}),
    ("no severity", {**TRIGGER, "payload": {"summary": "s", "source": "s"}}, 400,
     {"error": "payload.severity is required", "field": "payload.severity"}),
    ("bad severity", {**TRIGGER, "payload": {**PAYLOAD, "severity": "Critical"}}, 400,
     {"error": "payload.severity must be one of critical, error, warning, info", "field": "payload.severity"}),
    ("empty summary", {**TRIGGER, "payload": {**PAYLOAD, "summary": " "}}, 400,
     {"error": "payload.summary must not be empty", "field": "payload.summary"}),
    ("long summary", {**TRIGGER, "payload": {**PAYLOAD, "summary": "x" * 1025}}, 400,
     {"error": "payload.summary is 1025 characters, over the limit of 1024", "field": "payload.summary"}),
    ("bad timestamp", {**TRIGGER, "payload": {**PAYLOAD, "timestamp": "yesterday"}}, 400,
     {"error": "payload.timestamp must be an ISO 8601 date and time", "field": "payload.timestamp"}),
    ("details not an object", {**TRIGGER, "payload": {**PAYLOAD, "custom_details": "x"}}, 400,
     {"error": "payload.custom_details must be an object", "field": "payload.custom_details"}),
    ("resolve without dedup_key", {"routing_key": "pipelines", "event_action": "resolve"}, 400,
     {"error": "dedup_key is required to resolve", "field": "dedup_key"}),
    ("long dedup_key", {**TRIGGER, "dedup_key": "k" * 256}, 400,
     {"error": "dedup_key is 256 characters, over the limit of 255", "field": "dedup_key"}),
    ("http image", {**TRIGGER, "images": [{"src": "http://img.example/a.png"}]}, 400,
     {"error": "images[0].src must be an https:// URL", "field": "images[0].src"}),
    ("link without href", {**TRIGGER, "links": [{"text": "t"}]}, 400,
     {"error": "links[0].href is required", "field": "links[0].href"}),
    ("unknown field, escaped and cut", {**TRIGGER, "<script>" + "a" * 100: 1}, 400,
     {"error": f"unknown field {'<script>' + 'a' * 56!r} in the event", "field": "<script>" + "a" * 56}),
    ("images on a change", {**TRIGGER, "event_action": "change", "images": []}, 400,
     {"error": "unknown field 'images' in the event", "field": "images"}),
    ("over 512,000 bytes", {**TRIGGER, "payload": {**PAYLOAD, "custom_details": {"x": "y" * 512_000}}}, 400,
     {"error": "event is 512236 bytes, over PagerDuty's 512000-byte limit"}),
]


@pytest.mark.parametrize(("body", "status", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
async def test_bad_input_is_refused_with_its_exact_message(
        client: TestClient[Any, Any], pd: PagerDutyStandIn, body: Any, status: int, expected: dict[str, str]) -> None:
    resp = await (client.post("/v1/events", data=body) if isinstance(body, bytes)
                  else client.post("/v1/events", json=body))
    assert (resp.status, await resp.json()) == (status, expected)
    assert client.app[STATE].outbox.depth().queued == 0


async def test_body_over_the_limit_is_413(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/v1/events", data=b"x" * 600_001)
    assert (resp.status, await resp.json()) == (413, {"error": "body of 600001 bytes is over the limit of 600000"})


async def test_outbox_that_cannot_commit_gives_503(client: TestClient[Any, Any]) -> None:
    """Nothing stored, 503: the caller retries."""
    outbox = client.app[STATE].outbox
    await outbox._db.run_alone(lambda conn: conn.execute("PRAGMA max_page_count = 1"))
    resp = await client.post("/v1/events", json={**TRIGGER, "payload": {**PAYLOAD, "custom_details": {
        "x": "y" * 200_000}}})
    assert (resp.status, await resp.json()) == (
        503, {"error": "outbox unavailable: the event was not stored; retry later"})
    assert outbox.depth().queued == 0
