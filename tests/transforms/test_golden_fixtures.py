"""Golden cases: real Alertmanager bodies + rules → exactly the expected PagerDuty events.

Each folder of tests/fixtures holds webhook.json (an Alertmanager 0.25 body captured byte
for byte, or a 0.32/0.34-shaped one with Alertmanager's fingerprints), rules.yaml and
expected.json, which is what ``pdrelay test-rules`` prints (``evaluation_to_json``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from transforms import evaluation_to_json, load_rules
from transforms.base import Group

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "expected.json").is_file())


def test_there_are_golden_cases() -> None:
    """The fixture set covers per-alert, group partial/all resolved, 0.32+ bodies and the default rules."""
    assert CASES == [
        "am025-group-partial-resolve",
        "am025-group-resolved",
        "am025-per-alert-firing",
        "am032-notification-reason",
        "am034-default-rules",
    ]


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, group_from_webhook: Callable[[Mapping[str, Any]], Group]) -> None:
    """The rules turn the webhook body into exactly expected.json."""
    folder = FIXTURES / case
    rules = load_rules([folder / "rules.yaml"])
    evaluation = rules.evaluate(group_from_webhook(json.loads((folder / "webhook.json").read_text())))
    expected = json.loads((folder / "expected.json").read_text())
    assert json.loads(json.dumps(evaluation_to_json(evaluation))) == expected
    assert evaluation.template_errors == ()


def test_default_rules_fixture_uses_the_shipped_file() -> None:
    """The default-rules case reads rules/default.yaml itself, not a copy that could drift."""
    shipped = FIXTURES.parents[1] / "rules" / "default.yaml"
    assert (FIXTURES / "am034-default-rules" / "rules.yaml").resolve() == shipped.resolve()
