"""Property tests: arbitrary bytes and arbitrary JSON thrown at a running intake.

Whatever arrives, the answer is 200 (a notification, stored) or a 4xx with a JSON ``error``;
never a 5xx, never a crash, and the process does not grow without bound. The server runs on
its own event loop in a thread, on 127.0.0.1, for the whole module.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.settings import OutboxSettings, RulesSettings, ServerSettings, Settings

CAPTURED = Path(__file__).parent.parent / "e2e" / "captured"
VALID = json.loads((CAPTURED / "am-0.25_firing.json").read_text())
RULES = "version: 1\ndefaults: {routing_key: default, dedup: alert}\nrules: []\n"
BODY_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def intake_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("intake-properties")
    (tmp / "rules.yaml").write_text(RULES)
    settings_ = Settings(
        server=ServerSettings(body_limit=BODY_LIMIT, max_alerts=50, max_label_bytes=1024),
        outbox=OutboxSettings(path=tmp / "outbox.db"),
        rules=RulesSettings(paths=(tmp / "rules.yaml",)),
    )  # no routing key: dry-run, nothing leaves the machine
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        runner = web.AppRunner(create_app(settings_, Deps(registry=CollectorRegistry())))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["runner"] = runner
        holder["port"] = runner.addresses[0][1]
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop).result(timeout=30)
    started.wait(30)
    yield f"http://127.0.0.1:{holder['port']}/v1/alertmanager"
    asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=30)
    loop.close()


def check_answer(response: httpx.Response) -> None:
    assert response.status_code in (200, 400, 413), (response.status_code, response.text[:300])
    answer = response.json()
    if response.status_code == 200:
        assert answer["status"] == "accepted"
    else:
        assert isinstance(answer["error"], str) and answer["error"]
        assert set(answer) <= {"error", "field"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
FIELDS = ["version", "status", "receiver", "groupKey", "alerts", "groupLabels", "commonLabels",
          "commonAnnotations", "externalURL", "truncatedAlerts"]
ALERT_FIELDS = ["status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2048))
def test_arbitrary_bytes_get_an_answer_never_a_crash(intake_url: str, body: bytes) -> None:
    check_answer(httpx.post(intake_url, content=body, timeout=10))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values)
def test_arbitrary_json_gets_an_answer_never_a_crash(intake_url: str, body: Any) -> None:
    check_answer(httpx.post(intake_url, json=body, timeout=10))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), alert_field=st.sampled_from(ALERT_FIELDS), value=json_values,
       in_alert=st.booleans())
def test_a_real_body_with_one_field_replaced_by_anything(
    intake_url: str, field: str, alert_field: str, value: Any, in_alert: bool
) -> None:
    """Near-misses: a real Alertmanager body with one field (top level or in an alert) set to any JSON."""
    body = json.loads(json.dumps(VALID))
    if in_alert:
        body["alerts"][0][alert_field] = value
    else:
        body[field] = value
    check_answer(httpx.post(intake_url, json=body, timeout=10))


def test_memory_stays_bounded_under_many_bad_bodies(intake_url: str) -> None:
    """3,000 refused bodies and 300 stored ones later, the process has not grown by more than 40 MiB."""

    def rss_mib() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    with httpx.Client(timeout=10) as client:
        for i in range(50):  # warm up allocators and caches first
            client.post(intake_url, content=b"{" * (i + 1))
        before = rss_mib()
        for i in range(3000):
            check_answer(client.post(intake_url, content=b'{"version": "4", "alerts": [' + b"[" * (i % 500)))
        for i in range(300):
            body = json.loads(json.dumps(VALID))
            for n, alert in enumerate(body["alerts"]):
                alert["fingerprint"] = f"{i:08x}{n:08x}"
            check_answer(client.post(intake_url, json=body))
    growth = rss_mib() - before
    assert growth < 40, f"RSS grew by {growth:.1f} MiB"
