"""Change Events end to end in one process: intake → outbox → dispatcher → the PagerDuty stand-in at
``/v2/change/enqueue``, next to alert events at ``/v2/enqueue``; the delivery rule for their keys."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.delivery import KeyState, Verdict, Word, needs_update
from receiver.outbox import Depth
from receiver.pagerduty.events import change_events_url, is_change_event
from receiver.replay import replay
from receiver.secret import Secret
from receiver.settings import OutboxSettings, PagerDutySettings, RulesSettings, SecuritySettings, Settings
from receiver.state import STATE
from tests.e2e.e2e_support import PagerDutyStandIn, Received, Reply

KEY = "c" * 32
RULES = """version: 1
defaults: {routing_key: default, dedup: alert}
rules:
  - name: deploys
    match: ['alertname="Deployed"']
    change_event: true
    set:
      summary: '{{ labels.service }} {{ annotations.version }} deployed'
      links: [{href: 'https://ci.example/{{ annotations.version }}', text: Build}]
"""
DEPLOY_KEY = "change:1111111111111111@2026-11-24T14:38:36Z"
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def _alert(fingerprint: str, labels: dict[str, str], annotations: dict[str, str],
           status: str = "firing") -> dict[str, Any]:
    return {"status": status, "labels": labels, "annotations": annotations,
            "startsAt": "2026-11-24T14:38:36Z",
            "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-24T15:00:00Z",
            "generatorURL": "http://prom.example/graph", "fingerprint": fingerprint}


DEPLOYED = _alert("1111111111111111", {"alertname": "Deployed", "service": "shop", "instance": "ci-1"},
                  {"version": "v42"})
DISK = _alert("2222222222222222", {"alertname": "DiskFull", "instance": "db-1"}, {"summary": "disk full"})


def _notification(*alerts: dict[str, Any]) -> dict[str, Any]:
    firing = any(a["status"] == "firing" for a in alerts)
    return {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing" if firing else "resolved",
            "receiver": "pd", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://am.example:9093", "alerts": list(alerts)}


@pytest.fixture
def pd() -> Iterator[PagerDutyStandIn]:
    with PagerDutyStandIn() as stand_in:
        yield stand_in


@pytest.fixture
def make_client(tmp_path: Path, pd: PagerDutyStandIn,
                aiohttp_client: ClientFactory) -> Callable[..., Awaitable[TestClient[Any, Any]]]:
    async def make(encrypted: bool = False, **pagerduty: Any) -> TestClient[Any, Any]:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES)
        settings = Settings(
            pagerduty=PagerDutySettings(events_url=pd.events_url, allowed_hosts=("127.0.0.1",),
                                        routing_keys={"default": Secret(KEY)}, **pagerduty),
            outbox=OutboxSettings(path=tmp_path / "outbox.db"),
            rules=RulesSettings(paths=(rules,)),
            security=SecuritySettings(encryption_keys=(Secret(base64.b64encode(b"e" * 32).decode()),) if encrypted
                                      else ()),
        )
        log = logging.getLogger("test-change-events")
        return await aiohttp_client(create_app(settings, Deps(registry=CollectorRegistry(), log=log)))

    return make


async def until(pred: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Wait (bounded) until ``pred()`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, f"not reached in time: {what}"
        await asyncio.sleep(0.005)


def _by_path(received: list[Received]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in received:
        out.setdefault(r.path, []).append(r.event)
    return out


CHANGE_BODY = {
    "routing_key": KEY,
    "payload": {
        "summary": "shop v42 deployed",
        "source": "ci-1",
        "timestamp": "2026-11-24T14:38:36Z",
        "custom_details": {"labels": DEPLOYED["labels"], "annotations": DEPLOYED["annotations"]},
    },
    "links": [{"href": "https://ci.example/v42", "text": "Build"}],
}


async def test_change_event_goes_to_the_change_endpoint_and_the_alert_to_enqueue(
        make_client: Any, pd: PagerDutyStandIn) -> None:
    """One notification: the deploy alert arrives at /v2/change/enqueue as the exact change body with the real
    routing key, the other alert at /v2/enqueue as a trigger; the same notification again sends nothing."""
    client = await make_client()
    resp = await client.post("/v1/alertmanager", json=_notification(DEPLOYED, DISK))
    assert (resp.status, (await resp.json())["queued"]) == (200, 2)
    await until(lambda: len(pd.accepted()) == 2, "both events accepted")
    by_path = _by_path(pd.received())
    assert by_path["/v2/change/enqueue"] == [CHANGE_BODY]
    [trigger] = by_path["/v2/enqueue"]
    assert (trigger["routing_key"], trigger["event_action"], trigger["dedup_key"],
            trigger["payload"]["summary"]) == (KEY, "trigger", "2222222222222222", "disk full")
    outbox = client.app[STATE].outbox
    await until(lambda: outbox.depth().queued == 0, "both acks committed")
    again = await client.post("/v1/alertmanager", json=_notification(DEPLOYED, DISK))
    assert (await again.json())["duplicates"] == 2
    assert outbox.depth().queued == 0
    resolved = await client.post("/v1/alertmanager", json=_notification({**DEPLOYED, "status": "resolved"}))
    assert (await resolved.json())["queued"] == 0  # a change has no resolve
    assert len(pd.received()) == 2


async def test_change_event_refused_with_400_is_dead_lettered_with_the_reason(
        make_client: Any, pd: PagerDutyStandIn) -> None:
    """PagerDuty's 400 for a change event dead-letters it with PagerDuty's message, under its change key (shown
    as such by an encrypted outbox); a replay sends it again, and so does Alertmanager's repeat."""
    pd.queue(Reply(400, {"status": "invalid event", "message": "Event object is invalid",
                         "errors": ["Change events cannot be sent to ruleset integration keys"]}))
    client = await make_client(encrypted=True)
    assert (await client.post("/v1/alertmanager", json=_notification(DEPLOYED))).status == 200
    outbox = client.app[STATE].outbox
    await until(lambda: outbox.depth().dead == 1, "the dead letter")
    [dead] = await outbox.items(status="dead")
    assert (dead.routing_key, dead.dedup_key, dead.action, dead.reason, dead.last_status, dead.last_error) == (
        "default", DEPLOY_KEY, "change", "invalid_event", 400,
        "invalid event: Event object is invalid: Change events cannot be sent to ruleset integration keys")
    assert [(r.path, r.status) for r in pd.received()] == [("/v2/change/enqueue", 400)]
    state = client.app[STATE]
    done = await replay(outbox, dead.id, state.rulebook.current, routing_keys={"default"}, resend_interval=60.0)
    assert (done.result, done.ids) == ("replayed", (dead.id,))
    await until(lambda: len(pd.accepted()) == 1, "the replayed change accepted")
    assert pd.accepted()[0].event == CHANGE_BODY
    await until(lambda: outbox.depth() == Depth(0, 0), "the ack committed")
    # Told now: Alertmanager repeating the firing queues nothing.
    assert (await (await client.post("/v1/alertmanager", json=_notification(DEPLOYED))).json())["duplicates"] == 1


async def test_alertmanager_repeat_requeues_a_dead_change_event(make_client: Any, pd: PagerDutyStandIn) -> None:
    """A change PagerDuty refused was never told: the same firing sent again by Alertmanager is queued again."""
    pd.queue(400)
    client = await make_client()
    assert (await client.post("/v1/alertmanager", json=_notification(DEPLOYED))).status == 200
    await until(lambda: client.app[STATE].outbox.depth().dead == 1, "the dead letter")
    assert (await (await client.post("/v1/alertmanager", json=_notification(DEPLOYED))).json())["queued"] == 1
    await until(lambda: len(pd.accepted()) == 1, "the repeat accepted")


async def test_change_event_is_retried_after_429_and_5xx(make_client: Any, pd: PagerDutyStandIn) -> None:
    """A 429 and a 500 from the change endpoint are retried (backoff), then the change is delivered once."""
    pd.queue(429, 500)
    client = await make_client(initial_backoff=0.01, max_backoff=0.02, backoff_on_429=0.01)
    assert (await client.post("/v1/alertmanager", json=_notification(DEPLOYED))).status == 200
    await until(lambda: len(pd.accepted()) == 1, "the change accepted after two failures")
    assert [(r.path, r.status) for r in pd.received()] == [
        ("/v2/change/enqueue", 429), ("/v2/change/enqueue", 500), ("/v2/change/enqueue", 202)]
    await until(lambda: client.app[STATE].outbox.depth().queued == 0, "the ack committed")


async def test_dry_run_logs_the_change_event(make_client: Any, pd: PagerDutyStandIn,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """In dry-run the change event is logged with its action and body, and nothing is sent."""
    caplog.set_level(logging.INFO, logger="test-change-events")
    client = await make_client(dry_run=True)
    assert (await client.post("/v1/alertmanager", json=_notification(DEPLOYED))).status == 200

    def logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == "dry-run: would send event"]

    await until(lambda: bool(logged()), "the dry-run line")
    [record] = logged()
    assert (record.__dict__["action"], record.__dict__["dedup_key"], record.__dict__["event"]) == (
        "change", DEPLOY_KEY,
        {"dedup_key": DEPLOY_KEY, "payload": CHANGE_BODY["payload"], "links": CHANGE_BODY["links"]})
    assert pd.received() == []


@pytest.mark.parametrize(
    ("events_url", "change_url"),
    [
        ("https://events.pagerduty.com/v2/enqueue", "https://events.pagerduty.com/v2/change/enqueue"),
        ("https://events.eu.pagerduty.com/v2/enqueue/", "https://events.eu.pagerduty.com/v2/change/enqueue"),
        ("http://127.0.0.1:8080/pd?x=1", "http://127.0.0.1:8080/pd/change/enqueue?x=1"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/change/enqueue"),
    ],
)
def test_change_events_url_is_beside_the_events_url(events_url: str, change_url: str) -> None:
    """The change URL keeps scheme, host, port and query; only the path's enqueue becomes change/enqueue."""
    assert change_events_url(events_url) == change_url


def test_a_body_without_event_action_is_a_change_event() -> None:
    """The sender tells the endpoint by the body: alert events always carry event_action."""
    assert is_change_event(json.loads('{"payload": {"summary": "s"}}'))
    assert not is_change_event({"event_action": "trigger", "payload": {}})


def test_a_change_is_said_once_per_key() -> None:
    """Queued: coalesced; told: a duplicate whatever its age or payload; dead-lettered (nothing): queued again."""
    told = Word("change", "h1", 0.0, 1)
    day = 24 * 3600.0
    assert needs_update("change", "h1", KeyState(), 10 * day, 60.0) is Verdict.QUEUE
    assert needs_update("change", "h2", KeyState(tail=told), 10 * day, 60.0) is Verdict.COALESCED
    assert needs_update("change", "h2", KeyState(told=told), 10 * day, 60.0) is Verdict.DUPLICATE
    assert needs_update("change", "h1", KeyState(told=told, uncertain="timeout"), 10 * day, 60.0) is Verdict.DUPLICATE
