"""Collapse: per-alert vs per-group vs templated dedup keys, partial resolves, send_resolved."""

from __future__ import annotations

from collections.abc import Callable

from transforms import RuleSet
from transforms.base import Alert, Group

Alerts = Callable[..., Alert]
Groups = Callable[..., Group]

# sha256 of '{}/{team="pd"}:{alertname="DiskFull"}': the key Alertmanager's notifier sends
GROUP_KEY_SHA = "02163bc6c6e55f455cddc16ad8d2196ad600d6220119f04da565beb848230947"


def _rules(extra: str = "") -> RuleSet:
    return RuleSet.from_text("version: 1\n" + extra)


def test_dedup_alert_gives_one_event_per_alert(make_alert: Alerts, make_group: Groups) -> None:
    """Each alert keeps its own key: firing ones trigger, resolved ones resolve."""
    a = make_alert(fingerprint="aaaaaaaaaaaaaaaa")
    b = make_alert(fingerprint="bbbbbbbbbbbbbbbb", status="resolved")
    result = _rules().evaluate(make_group(a, b))
    assert [(e.routing_key, e.dedup_key, e.action, e.fingerprints) for e in result.events] == [
        ("default", "aaaaaaaaaaaaaaaa", "trigger", ("aaaaaaaaaaaaaaaa",)),
        ("default", "bbbbbbbbbbbbbbbb", "resolve", ("bbbbbbbbbbbbbbbb",)),
    ]
    assert "num_firing" not in result.events[0].body["payload"]["custom_details"]


def test_dedup_group_partial_resolve_triggers_with_first_firing_alert(
    make_alert: Alerts, make_group: Groups
) -> None:
    """With dedup: group a partly resolved group is one trigger built from its first firing alert."""
    resolved = make_alert(fingerprint="aaaaaaaaaaaaaaaa", status="resolved", annotations={"summary": "first"})
    firing = make_alert(fingerprint="bbbbbbbbbbbbbbbb", annotations={"summary": "second"})
    result = _rules("defaults: {dedup: group}\n").evaluate(make_group(resolved, firing))
    assert len(result.events) == 1
    event = result.events[0]
    assert (event.dedup_key, event.action, event.fingerprints) == (
        GROUP_KEY_SHA,
        "trigger",
        ("aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"),
    )
    assert event.body["payload"]["summary"] == "second"
    details = event.body["payload"]["custom_details"]
    assert (details["num_firing"], details["num_resolved"]) == (1, 1)


def test_dedup_group_all_resolved_resolves_once(make_alert: Alerts, make_group: Groups) -> None:
    """When every member is resolved the group yields a single resolve with the first alert's fields."""
    a = make_alert(fingerprint="aaaaaaaaaaaaaaaa", status="resolved", annotations={"summary": "first"})
    b = make_alert(fingerprint="bbbbbbbbbbbbbbbb", status="resolved", annotations={"summary": "second"})
    result = _rules("defaults: {dedup: group}\n").evaluate(make_group(a, b))
    assert [(e.dedup_key, e.action, e.body["payload"]["summary"]) for e in result.events] == [
        (GROUP_KEY_SHA, "resolve", "first")
    ]
    details = result.events[0].body["payload"]["custom_details"]
    assert (details["num_firing"], details["num_resolved"]) == (0, 2)


def test_template_dedup_collapses_alerts_sharing_a_key(make_alert: Alerts, make_group: Groups) -> None:
    """A templated key collapses the alerts that render to the same string, like group does."""
    rules = _rules("defaults: {dedup: '{{ labels.service }}'}\n")
    alerts = [
        make_alert(fingerprint="aaaaaaaaaaaaaaaa", labels={"service": "api"}, status="resolved"),
        make_alert(fingerprint="bbbbbbbbbbbbbbbb", labels={"service": "db"}),
        make_alert(fingerprint="cccccccccccccccc", labels={"service": "api"}),
    ]
    result = rules.evaluate(make_group(*alerts))
    summary = [
        (e.dedup_key, e.action, e.fingerprints, e.body["payload"]["custom_details"]["num_firing"])
        for e in result.events
    ]
    assert summary == [
        ("api", "trigger", ("aaaaaaaaaaaaaaaa", "cccccccccccccccc"), 1),
        ("db", "trigger", ("bbbbbbbbbbbbbbbb",), 1),
    ]


def test_routing_keys_split_collapsed_groups(make_alert: Alerts, make_group: Groups) -> None:
    """The same dedup key under two routing keys makes two events."""
    rules = _rules(
        "defaults: {dedup: group}\nrules:\n  - match: '{team=\"db\"}'\n    set: {routing_key: db-oncall}\n"
    )
    a = make_alert(fingerprint="aaaaaaaaaaaaaaaa", labels={"team": "db"})
    b = make_alert(fingerprint="bbbbbbbbbbbbbbbb", labels={"team": "web"})
    result = rules.evaluate(make_group(a, b))
    assert [(e.routing_key, e.dedup_key, e.rules) for e in result.events] == [
        ("db-oncall", GROUP_KEY_SHA, ("rule[0]",)),
        ("default", GROUP_KEY_SHA, ()),
    ]


def test_send_resolved_false_suppresses_and_counts_resolves(make_alert: Alerts, make_group: Groups) -> None:
    """Resolves are not produced and are counted; triggers, partial-resolve ones included, still are."""
    per_alert = _rules("defaults: {send_resolved: false}\n")
    a = make_alert(fingerprint="aaaaaaaaaaaaaaaa", status="resolved")
    b = make_alert(fingerprint="bbbbbbbbbbbbbbbb", status="resolved")
    c = make_alert(fingerprint="cccccccccccccccc")
    result = per_alert.evaluate(make_group(a, b, c))
    assert ([e.dedup_key for e in result.events], result.suppressed_resolves) == (["cccccccccccccccc"], 2)

    grouped = _rules("defaults: {send_resolved: false, dedup: group}\n")
    partial = grouped.evaluate(make_group(a, c))
    assert ([e.action for e in partial.events], partial.suppressed_resolves) == (["trigger"], 0)
    done = grouped.evaluate(make_group(a, b))
    assert (done.events, done.suppressed_resolves) == ((), 1)


def test_long_dedup_key_is_hashed(make_alert: Alerts, make_group: Groups) -> None:
    """A key over 255 characters becomes sha256:<hex>, deterministically, with a note."""
    rules = _rules("defaults: {dedup: '{{ labels.long }}'}\n")
    alert = make_alert(labels={"long": "x" * 300})
    event = rules.evaluate(make_group(alert)).events[0]
    assert event.dedup_key == "sha256:0d4e2ca9e9cbced7a7a5380eb29e1a3783b9b6d0db72de36a1051038e1c1fbc7"
    assert event.body["dedup_key"] == event.dedup_key
    assert event.notes == ("dedup_key was 300 characters (limit 255); sent its SHA-256",)
