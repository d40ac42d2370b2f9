"""Every step type: set (with merging and nesting), severity_map, extract, drop, stop, plugins."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from transforms import RuleSet
from transforms.base import Alert, AlertEvent, Group

Alerts = Callable[..., Alert]
Groups = Callable[..., Group]


def _run(rules: RuleSet, alert: Alert, group: Group) -> AlertEvent | None:
    """One alert through the defaults and rules, as RuleSet.evaluate runs it (None: dropped)."""
    return rules.engine.run(alert, group)[0]


# The plugins these tests name: the example module and this one's factories.
ALLOWED = ("transforms.examples", __name__)


def _apply(rules_yaml: str, alert: Alert, group: Group) -> AlertEvent | None:
    return _run(RuleSet.from_text("version: 1\n" + rules_yaml, allow_plugins=ALLOWED), alert, group)


def test_set_writes_fields_and_templates_nested_values(make_alert: Alerts, make_group: Groups) -> None:
    """set renders every field; maps and lists are templated recursively and keep native values."""
    alert = make_alert(labels={"alertname": "DiskFull", "instance": "db-1:9100", "team": "db"})
    event = _apply(
        """
rules:
  - name: text
    set:
      summary: '{{ labels.alertname }} on {{ labels.instance }}'
      severity: critical
      class: disk
      custom_details:
        labels: '{{ labels }}'
        nested: {team: '{{ labels.team }}', list: ['{{ labels.instance }}', 7]}
      links: [{href: '{{ alert.generatorURL }}', text: Prometheus}]
      images: [{src: 'https://img.example/{{ labels.team }}.png', alt: graph}]
      send_resolved: false
""",
        alert,
        make_group(alert),
    )
    assert event is not None
    assert event.fired == ["text"]
    assert event.fields == {
        "summary": "DiskFull on db-1:9100",
        "severity": "critical",
        "class": "disk",
        "custom_details": {
            "labels": {"alertname": "DiskFull", "instance": "db-1:9100", "team": "db"},
            "nested": {"team": "db", "list": ["db-1:9100", 7]},
        },
        "links": [{"href": "http://prom.example/graph?g0.expr=x", "text": "Prometheus"}],
        "images": [{"src": "https://img.example/db.png", "alt": "graph"}],
        "send_resolved": False,
    }


def test_set_merges_custom_details_and_replaces_other_fields(make_alert: Alerts, make_group: Groups) -> None:
    """A later set adds custom_details keys (overriding equal ones); other fields are replaced."""
    alert = make_alert()
    event = _apply(
        """
defaults: {custom_details: {env: prod, owner: nobody}, summary: first}
rules:
  - set: {custom_details: {owner: team-db, extra: '{{ labels.instance }}'}, summary: second}
  - set: {custom_details: '{{ {"from_template": labels.alertname} }}'}
""",
        alert,
        make_group(alert),
    )
    assert event is not None
    assert event.fields["summary"] == "second"
    assert event.fields["custom_details"] == {
        "env": "prod",
        "owner": "team-db",
        "extra": "a:9100",
        "from_template": "DiskFull",
    }


def test_set_custom_details_template_must_give_a_map(make_alert: Alerts, make_group: Groups) -> None:
    """A custom_details template giving a non-map is a render failure; earlier details stay."""
    alert = make_alert()
    rules = RuleSet.from_text(
        "version: 1\nrules:\n  - name: cd\n    set: {custom_details: '{{ labels.instance }}'}\n"
    )
    result = rules.evaluate(make_group(alert))
    assert result.template_errors == ("cd.custom_details: template gave a string, not a mapping",)
    assert result.events[0].body["payload"]["custom_details"] == {
        "labels": {"alertname": "DiskFull", "instance": "a:9100"},
        "annotations": {},
    }


def test_set_routing_key_and_dedup_templates(make_alert: Alerts, make_group: Groups) -> None:
    """routing_key and dedup may be templates; an empty rendering keeps the earlier value."""
    alert = make_alert(labels={"alertname": "A", "team": "db"})
    event = _apply(
        """
rules:
  - name: route
    set: {routing_key: '{{ labels.team }}-oncall', dedup: '{{ labels.alertname }}'}
  - name: empty
    set: {routing_key: '{{ labels.nope }}'}
""",
        alert,
        make_group(alert),
    )
    assert event is not None
    assert (event.fields["routing_key"], event.fields["dedup"]) == ("db-oncall", "A")
    assert event.template_errors == ["empty.routing_key: rendered empty; value not changed"]


def test_severity_map(make_alert: Alerts, make_group: Groups) -> None:
    """The rendered value is looked up exactly; unknown values get the default."""
    rules = RuleSet.from_text(
        """version: 1
rules:
  - severity_map:
      from: '{{ labels.severity }}'
      map: {page: critical, warn: warning, 1: info}
      default: error
"""
    )
    results = {}
    for value in ("page", "warn", "1", "PAGE", ""):
        alert = make_alert(labels={"severity": value} if value else {})
        event = _run(rules, alert, make_group(alert))
        assert event is not None
        results[value] = event.fields["severity"]
    assert results == {"page": "critical", "warn": "warning", "1": "info", "PAGE": "error", "": "error"}


def test_severity_map_without_default_keeps_severity(make_alert: Alerts, make_group: Groups) -> None:
    """Without a default, an unmapped value leaves the severity as it was."""
    alert = make_alert(labels={"severity": "odd"})
    event = _apply(
        "defaults: {severity: warning}\nrules:\n  - severity_map: {from: '{{ labels.severity }}', map: {}}\n",
        alert,
        make_group(alert),
    )
    assert event is not None
    assert event.fields["severity"] == "warning"


def test_extract_fills_vars_on_full_match_only(make_alert: Alerts, make_group: Groups) -> None:
    """Named groups go to vars when the anchored regex matches; otherwise vars stay unchanged."""
    rules = RuleSet.from_text(
        r"""version: 1
rules:
  - name: host
    extract: {from: '{{ labels.instance }}', regex: '(?P<host>[^:]+)(:(?P<port>\d+))?'}
  - name: summary
    set: {summary: 'host={{ vars.host }} port={{ vars.port }}'}
"""
    )
    outcomes = {}
    for instance in ("db-1:9100", "db-1", "db-1:http"):
        alert = make_alert(labels={"instance": instance})
        event = _run(rules, alert, make_group(alert))
        assert event is not None
        outcomes[instance] = (event.vars, event.fields["summary"])
    assert outcomes == {
        "db-1:9100": ({"host": "db-1", "port": "9100"}, "host=db-1 port=9100"),
        "db-1": ({"host": "db-1", "port": ""}, "host=db-1 port="),
        "db-1:http": ({}, "host= port="),  # fullmatch: a partial match is no match
    }


def test_extract_keeps_earlier_vars_when_not_matching(make_alert: Alerts, make_group: Groups) -> None:
    """A second extract that does not match leaves the first one's vars in place."""
    alert = make_alert(labels={"instance": "db-1:9100", "pod": "not-a-pod"})
    event = _apply(
        r"""rules:
  - extract: {from: '{{ labels.instance }}', regex: '(?P<host>[^:]+):\d+'}
  - extract: {from: '{{ labels.pod }}', regex: '(?P<host>.+)-[a-z0-9]{5}-[a-z0-9]{5}'}
""",
        alert,
        make_group(alert),
    )
    assert event is not None
    assert event.vars == {"host": "db-1"}


def test_drop_records_the_rule(make_alert: Alerts, make_group: Groups) -> None:
    """A matching drop removes the alert and names the rule; non-matching alerts go on."""
    rules = RuleSet.from_text(
        "version: 1\nrules:\n  - name: no-watchdog\n    match: ['alertname=\"Watchdog\"']\n    drop: true\n"
    )
    watchdog = make_alert(fingerprint="aaaaaaaaaaaaaaaa", labels={"alertname": "Watchdog"})
    real = make_alert(fingerprint="bbbbbbbbbbbbbbbb", labels={"alertname": "DiskFull"})
    result = rules.evaluate(make_group(watchdog, real))
    assert result.dropped == (("aaaaaaaaaaaaaaaa", "no-watchdog"),)
    assert [e.dedup_key for e in result.events] == ["bbbbbbbbbbbbbbbb"]
    assert _run(rules, watchdog, make_group(watchdog)) is None


def test_stop_ends_the_chain(make_alert: Alerts, make_group: Groups) -> None:
    """stop, alone or next to an action, skips every later step for matching alerts only."""
    rules = RuleSet.from_text(
        """version: 1
rules:
  - name: grouped
    match: '{mode="group"}'
    set: {dedup: group}
    stop: true
  - name: bare-stop
    match: '{mode="quiet"}'
    stop: true
  - name: later
    set: {summary: later}
"""
    )
    fired = {}
    for mode in ("group", "quiet", "other"):
        alert = make_alert(labels={"mode": mode})
        event = _run(rules, alert, make_group(alert))
        assert event is not None
        fired[mode] = (event.fired, event.stopped, event.fields.get("summary"))
    assert fired == {
        "group": (["grouped"], True, None),
        "quiet": (["bare-stop"], True, None),
        "other": (["later"], False, "later"),
    }


def test_default_rule_names(make_alert: Alerts, make_group: Groups) -> None:
    """Unnamed steps are called rule[<index>], counting across the rule list."""
    alert = make_alert()
    event = _apply(
        "rules:\n  - set: {class: a}\n  - name: named\n    set: {class: b}\n  - set: {class: c}\n",
        alert,
        make_group(alert),
    )
    assert event is not None
    assert event.fired == ["rule[0]", "named", "rule[2]"]


def test_plugin_by_module_path(make_alert: Alerts, make_group: Groups) -> None:
    """transform: module:callable builds the plugin from `with` and runs it in order."""
    alert = make_alert(labels={"team": "payments"})
    event = _apply(
        """
rules:
  - set: {custom_details: {env: prod}}
  - name: owner
    transform: transforms.examples:add_owner
    with: {table: {payments: team-pay}, key: owner}
""",
        alert,
        make_group(alert),
    )
    assert event is not None
    assert event.fired == ["rule[0]", "owner"]
    assert event.fields["custom_details"] == {"env": "prod", "owner": "team-pay"}


def _exploding_factory() -> Callable[[AlertEvent], AlertEvent]:
    def transform(event: AlertEvent) -> AlertEvent:
        event.fields["summary"] = "half-done"
        raise RuntimeError("boom")

    return transform


def _wrong_type_factory() -> Callable[[AlertEvent], object]:
    return lambda event: "not an event"


def test_plugin_failure_at_run_time_is_recorded(make_alert: Alerts, make_group: Groups) -> None:
    """A plugin that raises or returns junk is reported; the alert still becomes an event."""
    rules = RuleSet.from_text(
        f"""version: 1
rules:
  - name: explodes
    transform: {__name__}:_exploding_factory
  - name: junk
    transform: {__name__}:_wrong_type_factory
""",
        allow_plugins=ALLOWED,
    )
    result = rules.evaluate(make_group(make_alert()))
    assert result.template_errors == (
        f"explodes.transform: plugin {__name__}:_exploding_factory raised RuntimeError: boom",
        f"junk.transform: plugin {__name__}:_wrong_type_factory returned str, not an AlertEvent or None",
    )
    assert [e.action for e in result.events] == ["trigger"]


def test_plugin_by_entry_point_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_alert: Alerts, make_group: Groups
) -> None:
    """transform: <name> loads the entry point of that name in group pdrelay.transforms."""
    dist = tmp_path / "acme_pdrelay-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-pdrelay\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pdrelay.transforms]\nowner = transforms.examples:add_owner\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    alert = make_alert(labels={"team": "db"})
    event = _apply(
        "rules:\n  - transform: owner\n    with: {table: {db: team-dba}}\n", alert, make_group(alert)
    )
    assert event is not None
    assert event.fields["custom_details"] == {"owner": "team-dba"}


def test_constant_values_are_not_shared_between_alerts(make_alert: Alerts, make_group: Groups) -> None:
    """A plugin changing a constant nested value of one alert does not change the next alert's."""
    rules = RuleSet.from_text(
        "version: 1\nrules:\n  - set: {custom_details: {tags: [a]}}\n"
        f"  - transform: {__name__}:_appending_factory\n",
        allow_plugins=ALLOWED,
    )
    first = _run(rules, make_alert(), make_group(make_alert()))
    second = _run(rules, make_alert(), make_group(make_alert()))
    assert first is not None and second is not None
    assert (first.fields["custom_details"]["tags"], second.fields["custom_details"]["tags"]) == (
        ["a", "b"],
        ["a", "b"],
    )


def _appending_factory() -> Callable[[AlertEvent], AlertEvent]:
    def transform(event: AlertEvent) -> AlertEvent:
        event.fields["custom_details"]["tags"].append("b")
        return event

    return transform


def test_set_applies_fields_in_the_order_written(make_alert: Alerts, make_group: Groups) -> None:
    """Literal, templated, failing and checked fields keep their written order, in fields and in errors."""
    alert = make_alert(labels={"instance": "h:1"})
    event = _apply(
        """
rules:
  - name: mixed
    set:
      summary: first
      class: '{{ labels.nope.deeper }}'
      routing_key: team-a
      source: '{{ labels.instance }}'
      dedup: '{{ labels.nope }}'
      custom_details: {a: '{{ labels.nope.deeper }}', b: x}
      component: c
      group: '{{ 1 / 0 }}'
      send_resolved: false
""",
        alert,
        make_group(alert),
    )
    assert event is not None
    assert list(event.fields.items()) == [
        ("summary", "first"),
        ("routing_key", "team-a"),
        ("source", "h:1"),
        ("custom_details", {"b": "x"}),
        ("component", "c"),
        ("send_resolved", False),
    ]
    assert event.template_errors == [
        "mixed.class: UndefinedError: 'dict object' has no attribute 'nope'",
        "mixed.dedup: rendered empty; value not changed",
        "mixed.custom_details.a: UndefinedError: 'dict object' has no attribute 'nope'",
        "mixed.group: ZeroDivisionError: division by zero",
    ]


def _replacing_factory() -> Callable[[AlertEvent], AlertEvent]:
    def transform(event: AlertEvent) -> AlertEvent:
        return AlertEvent(alert=event.alert, group=event.group, fields=dict(event.fields), fired=list(event.fired))

    return transform


def _dropping_factory() -> Callable[[AlertEvent], None]:
    return lambda event: None


@pytest.mark.parametrize(
    ("last_step", "dropped_by"),
    [("drop: true", "gone"), (f"transform: {__name__}:_dropping_factory", "gone"), ("set: {class: kept}", None)],
)
def test_a_drop_after_a_plugin_replaced_the_work_item(
    make_alert: Alerts, make_group: Groups, last_step: str, dropped_by: str | None
) -> None:
    """A plugin may hand back a new work item; a later drop names its rule and keeps the errors recorded on the way."""
    rules = RuleSet.from_text(
        "version: 1\nrules:\n"
        f"  - name: replace\n    transform: {__name__}:_replacing_factory\n"
        "  - name: broken\n    set: {component: '{{ 1 / 0 }}'}\n"
        f"  - name: gone\n    {last_step}\n",
        allow_plugins=ALLOWED,
    )
    alert = make_alert(fingerprint="aaaaaaaaaaaaaaaa")
    result = rules.evaluate(make_group(alert))
    assert result.template_errors == ("broken.component: ZeroDivisionError: division by zero",)
    if dropped_by is None:
        assert (len(result.events), result.dropped, result.events[0].rules) == (1, (), ("replace", "broken", "gone"))
    else:
        assert (result.events, result.dropped) == ((), (("aaaaaaaaaaaaaaaa", dropped_by),))
