"""deploy/prometheus-rules.yaml through promtool: ``check rules`` (syntax, PromQL, templates) and ``test rules``
with deploy/prometheus-rules.test.yaml, whose cases make every alert fire on its own trouble and none on a
healthy pdrelay; a broken rule file and a wrong expectation are refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from manifests import DEPLOY, run

pytestmark = pytest.mark.e2e

RULES = DEPLOY / "prometheus-rules.yaml"
RULE_TESTS = DEPLOY / "prometheus-rules.test.yaml"
ALERTS = [
    "PdrelayDown", "PdrelayNotScraped", "PdrelayDeliveryFailing", "PdrelayBreakerOpen", "PdrelayOldestQueuedEvent",
    "PdrelayOutboxGrowing", "PdrelayDeadLetters", "PdrelayRateLimited", "PdrelayIntakeFailing",
    "PdrelayOutboxUnavailable", "PdrelayRulesReloadFailed", "PdrelayAuditWriteErrors", "PdrelayDispatcherRestarting",
    "PdrelayDryRun",
]


def test_promtool_checks_the_rules() -> None:
    result = run(["promtool", "check", "rules", str(RULES)])
    assert result.failures == ""
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.output


def test_every_alert_has_a_for_a_severity_and_text_that_says_what_to_do() -> None:
    (group,) = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    rules = group["rules"]
    assert [r["alert"] for r in rules] == ALERTS
    for rule in rules:
        assert rule["for"], rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]


def test_promtool_unit_tests_fire_every_alert_and_none_when_healthy() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    healthy = cases[0]["alert_rule_test"]
    assert {t["alertname"] for t in healthy} == set(ALERTS)
    assert all("exp_alerts" not in t for t in healthy)
    fired = [t["alertname"] for case in cases[1:] for t in case["alert_rule_test"] if t.get("exp_alerts")]
    assert sorted(fired) == sorted(ALERTS)
    result = run(["promtool", "test", "rules", str(RULE_TESTS)])
    assert result.failures == ""
    assert "SUCCESS" in result.output


def test_promtool_refuses_a_broken_rule_file_and_a_wrong_expectation(tmp_path: Path) -> None:
    broken = tmp_path / "prometheus-rules.yaml"
    broken.write_text(RULES.read_text(encoding="utf-8").replace("annotations:", "anotations:", 1), encoding="utf-8")
    checked = run(["promtool", "check", "rules", str(broken)])
    assert checked.returncode == 1
    assert "field anotations not found" in checked.output
    shutil.copy(RULES, tmp_path / "prometheus-rules.yaml")
    wrong = tmp_path / "prometheus-rules.test.yaml"
    wrong.write_text(RULE_TESTS.read_text(encoding="utf-8").replace("severity: critical", "severity: warning", 1),
                     encoding="utf-8")
    tested = run(["promtool", "test", "rules", str(wrong)])
    assert tested.returncode == 1
    assert "FAILED" in tested.output
