"""The rule trace (trace_to_json): each alert's steps, why a step did not apply, what each changed,
the template errors per alert and field; and per-step send_resolved: false."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from transforms import RuleSet, evaluation_to_json, trace_to_json
from transforms.base import Alert, Group

Alerts = Callable[..., Alert]
Groups = Callable[..., Group]

MONDAY_NIGHT = datetime(2026, 5, 4, 23, 0, tzinfo=UTC)

RULES = """version: 1
defaults: {routing_key: default, dedup: alert}
rules:
  - name: ignore-watchdog
    match: ['alertname="Watchdog"']
    drop: true
  - name: office
    when_time: {timezone: UTC, hours: ["09:00-17:00"]}
    set: {routing_key: office}
  - name: host
    extract: {from: '{{ labels.instance }}', regex: '(?P<host>[^:]+)(:\\d+)?'}
  - name: text.v2
    set:
      summary: '{{ labels.alertname }} on {{ vars.host }}'
      component: '{{ labels.nope.deeper }}'
      custom_details: {host: '{{ vars.host }}'}
    stop: true
  - name: never
    set: {class: unreachable}
"""


def test_trace_lists_each_step_with_why_and_what_changed(make_alert: Alerts, make_group: Groups) -> None:
    """Per alert: defaults, then each step in order until the run ends, with its changes as old/new values."""
    disk = make_alert(fingerprint="f1", labels={"alertname": "DiskFull", "instance": "db-1:9100"})
    watchdog = make_alert(fingerprint="f2", labels={"alertname": "Watchdog"})
    out = trace_to_json(RuleSet.from_text(RULES), make_group(disk, watchdog), MONDAY_NIGHT)
    defaults = {
        "rule": "defaults", "matched": True, "skipped_by": None, "dropped": False, "stopped": False,
        "changes": [{"field": "routing_key", "old": None, "new": "default"},
                    {"field": "dedup", "old": None, "new": "alert"}],
    }
    skipped = {"matched": False, "changes": [], "dropped": False, "stopped": False}
    assert out["trace"] == [
        {"fingerprint": "f1", "alertname": "DiskFull", "steps": [
            defaults,
            {"rule": "ignore-watchdog", "skipped_by": "match", **skipped},
            {"rule": "office", "skipped_by": "when_time", **skipped},
            {"rule": "host", "matched": True, "skipped_by": None, "dropped": False, "stopped": False,
             "changes": [{"field": "vars.host", "old": None, "new": "db-1"}]},
            {"rule": "text.v2", "matched": True, "skipped_by": None, "dropped": False, "stopped": True,
             "changes": [{"field": "summary", "old": None, "new": "DiskFull on db-1"},
                         {"field": "custom_details", "old": None, "new": {"host": "db-1"}}]},
        ]},
        {"fingerprint": "f2", "alertname": "Watchdog", "steps": [
            defaults,
            {"rule": "ignore-watchdog", "matched": True, "skipped_by": None, "changes": [],
             "dropped": True, "stopped": False},
        ]},
    ]
    assert out["template_errors"] == [
        {"fingerprint": "f1", "rule": "text.v2", "field": "component",
         "message": out["template_errors"][0]["message"]},
    ]
    assert out["template_errors"][0]["message"].startswith("UndefinedError: ")
    assert out["dropped"] == [{"fingerprint": "f2", "rule": "ignore-watchdog"}]


def test_trace_has_the_evaluation_of_the_same_engine(make_alert: Alerts, make_group: Groups) -> None:
    """events, invalid and dropped are exactly what evaluate gives at the same time, in hours and out."""
    rules = RuleSet.from_text(RULES)
    group = make_group(make_alert(fingerprint="f1"), make_alert(fingerprint="f2", status="resolved"))
    for now in (MONDAY_NIGHT, datetime(2026, 5, 4, 10, 0, tzinfo=UTC)):
        traced = trace_to_json(rules, group, now)
        assert {k: v for k, v in traced.items() if k not in ("trace", "template_errors")} == (
            evaluation_to_json(rules.evaluate(group, now))
        )
    assert [e["routing_key"] for e in traced["events"]] == ["office", "office"]


def test_template_errors_name_the_alert_and_field_even_in_defaults(make_alert: Alerts, make_group: Groups) -> None:
    """A failing template in defaults, severity_map or a set is reported once per alert with its field."""
    rules = RuleSet.from_text(
        """version: 1
defaults: {summary: '{{ 1 / 0 }}'}
rules:
  - name: sev
    severity_map: {from: '{{ labels.x.y }}', map: {a: critical}}
"""
    )
    out = trace_to_json(rules, make_group(make_alert(fingerprint="f1")), MONDAY_NIGHT)
    assert [(e["fingerprint"], e["rule"], e["field"]) for e in out["template_errors"]] == [
        ("f1", "defaults", "summary"), ("f1", "sev", "severity_map.from"),
    ]
    assert out["template_errors"][0]["message"] == "ZeroDivisionError: division by zero"


def test_trace_values_are_the_engine_values_unescaped(make_alert: Alerts, make_group: Groups) -> None:
    """Hostile label text reaches the trace as it is (whoever displays it escapes it); maps stay maps."""
    hostile = "<script>alert(1)</script>\x1b[2J"
    rules = RuleSet.from_text("version: 1\nrules: [{name: s, set: {summary: '{{ labels.x }}', "
                              "custom_details: '{{ labels }}'}}]\n")
    alert = make_alert(labels={"alertname": "A", "x": hostile})
    (step,) = trace_to_json(rules, make_group(alert), MONDAY_NIGHT)["trace"][0]["steps"]
    assert step["changes"] == [
        {"field": "summary", "old": None, "new": hostile},
        {"field": "custom_details", "old": None, "new": {"alertname": "A", "x": hostile}},
    ]


def test_send_resolved_false_for_one_team_suppresses_only_its_resolves(
    make_alert: Alerts, make_group: Groups
) -> None:
    """A step setting send_resolved: false for team db: db's resolve yields no event, web's does; both counted."""
    rules = RuleSet.from_text(
        """version: 1
defaults: {dedup: alert, send_resolved: true}
rules:
  - name: db-keeps-incidents-open
    match: ['team="db"']
    set: {send_resolved: false}
"""
    )
    db_resolved = make_alert(fingerprint="db1", status="resolved", labels={"alertname": "A", "team": "db"})
    web_resolved = make_alert(fingerprint="web1", status="resolved", labels={"alertname": "A", "team": "web"})
    db_firing = make_alert(fingerprint="db2", labels={"alertname": "B", "team": "db"})
    evaluation = rules.evaluate(make_group(db_resolved, web_resolved, db_firing))
    assert [(e.dedup_key, e.action) for e in evaluation.events] == [("web1", "resolve"), ("db2", "trigger")]
    assert evaluation.suppressed_resolves == 1
    trace = trace_to_json(rules, make_group(db_resolved), MONDAY_NIGHT)["trace"][0]["steps"]
    assert trace[1]["changes"] == [{"field": "send_resolved", "old": True, "new": False}]
