"""Render: Events v2 body shape, defaults, and PagerDuty's limits enforced before queueing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from transforms import InvalidEvent, RenderedEvent, RuleSet
from transforms.base import Alert, AlertEvent, Group
from transforms.engine import Engine
from transforms.render import MAX_EVENT_BYTES, ROUTING_KEY_ALLOWANCE
from transforms.steps import Rule

Alerts = Callable[..., Alert]
Groups = Callable[..., Group]


def _render(
    alert: Alert, group: Group, default_severity: str = "error", **fields: Any
) -> RenderedEvent | InvalidEvent:
    """The one event ``alert`` makes when a step has set ``fields`` (which rules files could not always write)."""

    def set_fields(event: AlertEvent) -> AlertEvent:
        event.fields.update(fields)
        return event

    evaluation = Engine([], [Rule("fields", (), set_fields, stop=False)], default_severity).evaluate(group)
    (result,) = (*evaluation.events, *evaluation.invalid)
    return result


def _wire_size(body: Mapping[str, Any]) -> int:
    """Bytes of the event as sent: compact UTF-8 JSON, with the routing key the sender adds."""
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()) + ROUTING_KEY_ALLOWANCE


def _ok(result: RenderedEvent | InvalidEvent) -> RenderedEvent:
    assert isinstance(result, RenderedEvent), result
    return result


def test_body_shape_and_defaults(make_alert: Alerts, make_group: Groups) -> None:
    """With no rules the body carries Alertmanager's data and every documented default."""
    alert = make_alert(
        labels={"alertname": "DiskFull", "instance": "a:9100"}, annotations={"summary": "disk full"}
    )
    group = make_group(alert, receiver="team.pager ops")
    event = _ok(_render(alert, group))
    assert event.body == {
        "event_action": "trigger",
        "dedup_key": "0123456789abcdef",
        "payload": {
            "summary": "disk full",
            "source": "a:9100",
            "severity": "error",
            "timestamp": "2026-11-24T14:38:36Z",
            "custom_details": {
                "labels": {"alertname": "DiskFull", "instance": "a:9100"},
                "annotations": {"summary": "disk full"},
            },
        },
        "client": "Alertmanager",
        "client_url": "http://am.example:9093/#/alerts?receiver=team.pager+ops",
    }
    assert "routing_key" not in event.body
    canonical = json.dumps(event.body, sort_keys=True, separators=(",", ":"))
    assert event.payload_hash == hashlib.sha256(canonical.encode()).hexdigest()
    assert event.notes == ()


def test_resolve_carries_the_full_payload(make_alert: Alerts, make_group: Groups) -> None:
    """A resolve has the same payload fields as a trigger, so PagerDuty event rules can route it."""
    alert = make_alert(status="resolved", annotations={"summary": "disk full"})
    event = _ok(_render(alert, make_group(alert), component="disk"))
    assert event.body["event_action"] == "resolve"
    assert sorted(event.body["payload"]) == [
        "component",
        "custom_details",
        "severity",
        "source",
        "summary",
        "timestamp",
    ]


def test_summary_and_source_fallbacks(make_alert: Alerts, make_group: Groups) -> None:
    """summary falls back to alertname, then a constant; source to job, Alertmanager's host, a constant."""
    cases = [
        ({"alertname": "A", "job": "node"}, "http://am.example:9093", ("A", "node")),
        ({"alertname": "A"}, "http://am.example:9093", ("A", "am.example")),
        ({}, "", ("Alertmanager alert", "alertmanager")),
    ]
    for labels, url, expected in cases:
        alert = make_alert(labels=labels)
        payload = _ok(_render(alert, make_group(alert, external_url=url))).body["payload"]
        assert (payload["summary"], payload["source"]) == expected


def test_empty_rendered_text_uses_defaults_with_a_note(make_alert: Alerts, make_group: Groups) -> None:
    """A summary or source that rendered empty is replaced by the default and noted."""
    alert = make_alert(labels={"alertname": "A", "instance": "h:1"})
    event = _ok(_render(alert, make_group(alert), summary="  ", source=""))
    assert (event.body["payload"]["summary"], event.body["payload"]["source"]) == ("A", "h:1")
    assert event.notes == ("summary was empty; used the default", "source was empty; used the default")


def test_summary_is_cut_to_1024_characters(make_alert: Alerts, make_group: Groups) -> None:
    """A longer summary becomes its first 1023 characters plus an ellipsis; 1024 is kept as is."""
    alert = make_alert()
    long = _ok(_render(alert, make_group(alert), summary="é" * 2000))
    assert long.body["payload"]["summary"] == "é" * 1023 + "…"
    assert long.notes == ("summary was 2000 characters; cut to 1024",)
    exact = _ok(_render(alert, make_group(alert), summary="s" * 1024))
    assert exact.body["payload"]["summary"] == "s" * 1024
    assert exact.notes == ()


def test_severity_is_normalised(make_alert: Alerts, make_group: Groups) -> None:
    """Severity is lowercased; a value PagerDuty refuses becomes the default severity with a note."""
    alert = make_alert()
    assert (
        _ok(_render(alert, make_group(alert), severity=" Critical ")).body["payload"]["severity"]
        == "critical"
    )
    odd = _ok(_render(alert, make_group(alert), default_severity="warning", severity="page"))
    assert odd.body["payload"]["severity"] == "warning"
    assert odd.notes == ("severity 'page' is not one of critical, error, warning, info; used 'warning'",)


def test_default_severity_comes_from_rules_defaults(make_alert: Alerts, make_group: Groups) -> None:
    """defaults.severity is both the unset severity and the replacement for invalid values."""
    rules = RuleSet.from_text(
        "version: 1\ndefaults: {severity: info}\nrules:\n  - set: {severity: '{{ labels.sev }}'}\n"
    )
    alert = make_alert(labels={"sev": "bogus"})
    event = rules.evaluate(make_group(alert)).events[0]
    assert event.body["payload"]["severity"] == "info"


def test_links_and_images_are_checked(make_alert: Alerts, make_group: Groups) -> None:
    """Links without href are left out; images need an https src, others are dropped with a note."""
    alert = make_alert()
    event = _ok(
        _render(
            alert,
            make_group(alert),
            links=[
                {"href": "http://prom/x", "text": "Prometheus"},
                {"href": "", "text": "Runbook"},
                {"href": "http://b"},
            ],
            images=[{"src": "https://img/x.png", "alt": ""}, {"src": "http://img/y.png", "alt": "graph"}],
        )
    )
    assert event.body["links"] == [{"href": "http://prom/x", "text": "Prometheus"}, {"href": "http://b"}]
    assert event.body["images"] == [{"src": "https://img/x.png"}]
    assert event.notes == ("images[1] dropped: src 'http://img/y.png' is not https",)


def test_timestamp_is_left_out_for_go_zero_time(make_alert: Alerts, make_group: Groups) -> None:
    """payload.timestamp is startsAt unless Alertmanager sent Go's zero time."""
    alert = make_alert(starts_at="0001-01-01T00:00:00Z")
    assert "timestamp" not in _ok(_render(alert, make_group(alert))).body["payload"]


def test_oversized_event_shrinks_custom_details_keeping_structure(
    make_alert: Alerts, make_group: Groups
) -> None:
    """Over 512,000 bytes, the largest custom_details values are cut, keys stay, and the cuts are listed."""
    alert = make_alert()
    details = {
        "log": "x" * 600_000,
        "small": "keep",
        "lines": ["y" * 100] * 3000,
        "nested": {"deep": "z" * 100_000, "n": 1},
    }
    event = _ok(_render(alert, make_group(alert), custom_details=details))
    cut = event.body["payload"]["custom_details"]
    assert _wire_size(event.body) <= MAX_EVENT_BYTES
    assert list(cut) == ["log", "small", "lines", "nested", "_pdrelay_truncated"]
    assert cut["_pdrelay_truncated"] == ["log"]
    assert cut["log"].startswith("xxxx")
    # the excess, plus 256 bytes of room for the list of cuts and 40 for the marker
    removed = 1_009_374 - MAX_EVENT_BYTES + 256 + 40
    assert cut["log"] == "x" * (600_000 - removed) + f"…[truncated {removed} bytes]"
    assert (cut["small"], cut["lines"], cut["nested"]) == ("keep", details["lines"], details["nested"])
    assert event.notes == ("event was 1009374 bytes (limit 512000); cut custom_details",)
    assert details["log"] == "x" * 600_000  # the rule's value itself is untouched


def test_many_small_list_items_are_dropped_from_the_end(make_alert: Alerts, make_group: Groups) -> None:
    """A big list of small items keeps its head and ends with a count of the items removed."""
    alert = make_alert()
    event = _ok(
        _render(alert, make_group(alert), custom_details={"lines": [f"{i:0100d}" for i in range(6000)]})
    )
    lines = event.body["payload"]["custom_details"]["lines"]
    assert _wire_size(event.body) <= MAX_EVENT_BYTES
    assert (len(lines), lines[0], lines[-2], lines[-1]) == (
        4965,
        f"{0:0100d}",
        f"{4963:0100d}",
        "…[truncated 1036 items]",
    )
    assert event.body["payload"]["custom_details"]["_pdrelay_truncated"] == ["lines[4964:]"]


def test_shrinking_is_deterministic(make_alert: Alerts, make_group: Groups) -> None:
    """The same oversized input always gives the same body and hash."""
    alert = make_alert()
    details = {"a": "a" * 300_000, "b": "b" * 300_000}
    first = _ok(_render(alert, make_group(alert), custom_details=details))
    second = _ok(_render(alert, make_group(alert), custom_details=dict(details)))
    assert (first.body, first.payload_hash) == (second.body, second.payload_hash)
    assert first.body["payload"]["custom_details"]["_pdrelay_truncated"] == ["a"]


def test_event_that_cannot_fit_is_invalid(make_alert: Alerts, make_group: Groups) -> None:
    """When fields other than custom_details are too big, the result is an InvalidEvent with the reason."""
    alert = make_alert()
    result = _render(alert, make_group(alert), component="c" * 600_000)
    assert isinstance(result, InvalidEvent)
    assert result.reason == (
        "event is 600399 bytes, over PagerDuty's 512000-byte limit,"
        " and cutting custom_details cannot make it fit;"
        " largest field: payload.component (600002 bytes)"
    )
    assert (result.routing_key, result.dedup_key, result.action) == ("default", "0123456789abcdef", "trigger")


def test_invalid_events_are_reported_by_evaluate(make_alert: Alerts, make_group: Groups) -> None:
    """evaluate() separates events PagerDuty would refuse into Evaluation.invalid."""
    rules = RuleSet.from_text("version: 1\nrules:\n  - name: huge\n    set: {class: '{{ labels.big }}'}\n")
    alert = make_alert(labels={"big": "b" * 600_000})
    result = rules.evaluate(make_group(alert))
    assert (result.events, len(result.invalid), result.invalid[0].rules) == ((), 1, ("huge",))
