"""A rule template over its render budget, through the real intake: the alert is still queued with the
field's default, the failure is logged and counted like any template error, and intake answers at once.

Before the budget, the first template below allocated 1.2 GiB and the second never returned: intake
(and every alert behind it) hung on one rules-file line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.pagerduty.events import classify
from receiver.secret import Secret
from receiver.settings import OutboxSettings, PagerDutySettings, RulesSettings, Settings
from receiver.state import STATE
from tests.fakes import FakeSender

CAPTURED = Path(__file__).parent.parent / "e2e" / "captured"
RULES = """\
version: 1
defaults: {routing_key: default, dedup: alert, severity: error}
rules:
  - name: runaway
    set:
      summary: "{{ labels.alertname * 300000000 }}"
      source: '{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}'
"""
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


async def test_a_runaway_template_fails_its_field_and_is_counted(
    tmp_path: Path, aiohttp_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    registry = CollectorRegistry()
    settings = Settings(pagerduty=PagerDutySettings(routing_keys={"default": Secret("k" * 32)}),
                        outbox=OutboxSettings(path=tmp_path / "outbox.db"), rules=RulesSettings(paths=(rules,)))
    sender = FakeSender(lambda body: classify(503, b"down"))  # keeps the events queued, for inspection
    client = await aiohttp_client(create_app(settings, Deps(registry=registry, sender=sender)))
    body: dict[str, Any] = json.loads((CAPTURED / "am-0.25_firing.json").read_text())

    with caplog.at_level(logging.WARNING, logger="pdrelay"):
        response = await client.post("/v1/alertmanager", json=body)
    assert response.status == 200
    assert (await response.json())["queued"] == len(body["alerts"])
    assert client.app[STATE].outbox.depth().queued == len(body["alerts"])
    assert registry.get_sample_value("pdrelay_template_errors_total") == 2 * len(body["alerts"])
    [record] = [r for r in caplog.records if r.getMessage() == "templates fell back to defaults"]
    assert record.errors == [  # type: ignore[attr-defined]
        message
        for alert in body["alerts"]
        for message in (
            f"runaway.summary: BudgetExceeded: '*' would make {len(alert['labels']['alertname']) * 300000000}"
            " characters (limit 512000)",
            "runaway.source: BudgetExceeded: loops over the limit of 10000 iterations",
        )
    ]
