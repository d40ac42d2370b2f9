"""``change_event: true`` steps: load errors, the exact Change Event body, its limits, and collapse."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from transforms import RulesError, RuleSet
from transforms.base import Alert, Group, InvalidEvent
from transforms.render import ROUTING_KEY_ALLOWANCE

Alerts = Callable[..., Alert]
Groups = Callable[..., Group]

DEPLOY = """version: 1
defaults: {routing_key: default, dedup: alert, severity: warning}
rules:
  - name: deploys
    match: ['alertname="Deployed"']
    change_event: true
  - name: text
    set:
      summary: '{{ labels.service }} {{ annotations.version }} deployed'
      source: '{{ labels.instance }}'
      component: web
      client: CI
      links: [{href: 'https://ci.example/{{ annotations.version }}', text: Build}]
      images: [{src: 'https://ci.example/badge.png'}]
"""


def _deploy(make_alert: Alerts, fingerprint: str = "1111111111111111", status: str = "firing",
            starts_at: str = "2026-11-24T14:38:36Z", **annotations: str) -> Alert:
    return make_alert(fingerprint=fingerprint, status=status, starts_at=starts_at,
                      labels={"alertname": "Deployed", "service": "shop", "instance": "ci-1"},
                      annotations={"version": "v42", **annotations})


def _load_errors(text: str) -> list[str]:
    with pytest.raises(RulesError) as caught:
        RuleSet.from_text(text, "rules.yaml")
    return caught.value.errors


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1", "rules.yaml:4: change_event must be true or false, got a number"),
        ("'yes'", "rules.yaml:4: change_event must be true or false, got a string"),
        ("[true]", "rules.yaml:4: change_event must be true or false, got a list"),
    ],
)
def test_change_event_must_be_a_boolean(value: str, message: str) -> None:
    """A change_event that is not true or false is refused at load with its line."""
    text = f"version: 1\nrules:\n  - name: deploys\n    change_event: {value}\n    stop: true\n"
    assert _load_errors(text) == [message]


def test_change_event_false_alone_is_a_step_without_action() -> None:
    """change_event: false does nothing, so a step with nothing else has no action."""
    text = "version: 1\nrules:\n  - name: deploys\n    change_event: false\n"
    assert _load_errors(text) == [
        "rules.yaml:3: rule 'deploys' has no action (add one of: set, severity_map, extract, drop, transform,"
        " or stop: true)"
    ]


def test_change_event_step_keeps_its_routing_key_checked() -> None:
    """A set step that is also a change_event step still has its literal routing key checked."""
    rules = RuleSet.from_text(
        "version: 1\nrules:\n  - name: deploys\n    change_event: true\n    set: {routing_key: deploys}\n",
        "rules.yaml",
    )
    assert rules.unknown_routing_keys({"default"}) == [
        "rules.yaml:5: unknown routing key name 'deploys' (configured: default)"
    ]


def test_firing_alert_renders_the_exact_change_event_body(make_alert: Alerts, make_group: Groups) -> None:
    """The body has only what the Change Events API takes (payload summary, source, timestamp, custom_details,
    links) plus the outbox's key, fingerprint@startsAt; fields only alert events have are left out."""
    result = RuleSet.from_text(DEPLOY).evaluate(make_group(_deploy(make_alert)))
    assert result.invalid == ()
    [event] = result.events
    assert (event.routing_key, event.dedup_key, event.action, event.rules, event.notes) == (
        "default", "change:1111111111111111@2026-11-24T14:38:36Z", "change", ("deploys", "text"), ())
    assert event.body == {
        "dedup_key": "change:1111111111111111@2026-11-24T14:38:36Z",  # the outbox's; the sender leaves it out
        "payload": {
            "summary": "shop v42 deployed",
            "source": "ci-1",
            "timestamp": "2026-11-24T14:38:36Z",
            "custom_details": {
                "labels": {"alertname": "Deployed", "service": "shop", "instance": "ci-1"},
                "annotations": {"version": "v42"},
            },
        },
        "links": [{"href": "https://ci.example/v42", "text": "Build"}],
    }


def test_change_and_alert_events_from_one_notification(make_alert: Alerts, make_group: Groups) -> None:
    """Only the alerts a change_event step applied to become change events; the others stay alert events."""
    other = make_alert(fingerprint="2222222222222222", labels={"alertname": "DiskFull", "instance": "db-1"})
    result = RuleSet.from_text(DEPLOY).evaluate(make_group(_deploy(make_alert), other))
    assert [(e.dedup_key, e.action, "event_action" in e.body) for e in result.events] == [
        ("change:1111111111111111@2026-11-24T14:38:36Z", "change", False),
        ("2222222222222222", "trigger", True),
    ]


def test_resolved_change_alert_produces_nothing(make_alert: Alerts, make_group: Groups) -> None:
    """A change has no resolve: the resolved alert yields no event and counts as a suppressed resolve."""
    result = RuleSet.from_text(DEPLOY).evaluate(make_group(_deploy(make_alert, status="resolved")))
    assert (result.events, result.invalid, result.suppressed_resolves) == ((), (), 1)


def test_change_events_ignore_group_dedup(make_alert: Alerts, make_group: Groups) -> None:
    """With dedup: group each changed alert is its own change event, keyed by its firing; the group's
    other alerts still collapse into one trigger counting only them."""
    rules = RuleSet.from_text(DEPLOY.replace("dedup: alert", "dedup: group"))
    first = _deploy(make_alert, "1111111111111111")
    again = _deploy(make_alert, "3333333333333333", starts_at="2026-11-24T15:00:00Z")
    other = make_alert(fingerprint="2222222222222222")
    result = rules.evaluate(make_group(first, other, again))
    assert [(e.dedup_key, e.action, e.fingerprints) for e in result.events] == [
        ("change:1111111111111111@2026-11-24T14:38:36Z", "change", ("1111111111111111",)),
        ("02163bc6c6e55f455cddc16ad8d2196ad600d6220119f04da565beb848230947", "trigger", ("2222222222222222",)),
        ("change:3333333333333333@2026-11-24T15:00:00Z", "change", ("3333333333333333",)),
    ]
    details = result.events[1].body["payload"]["custom_details"]
    assert (details["num_firing"], details["num_resolved"]) == (1, 0)
    assert "num_firing" not in result.events[0].body["payload"]["custom_details"]


def test_same_firing_same_key_new_firing_new_key(make_alert: Alerts, make_group: Groups) -> None:
    """The same firing sent again keeps its key (and body); a new firing of the alert gets a new key."""
    rules = RuleSet.from_text(DEPLOY)
    once = rules.evaluate(make_group(_deploy(make_alert))).events[0]
    repeat = rules.evaluate(make_group(_deploy(make_alert))).events[0]
    later = rules.evaluate(make_group(_deploy(make_alert, starts_at="2026-11-25T09:00:00Z"))).events[0]
    assert (repeat.dedup_key, repeat.payload_hash) == (once.dedup_key, once.payload_hash)
    assert later.dedup_key == "change:1111111111111111@2026-11-25T09:00:00Z"


def test_change_event_with_drop_still_drops(make_alert: Alerts, make_group: Groups) -> None:
    """A change_event step whose action drops the alert leaves it dropped."""
    rules = RuleSet.from_text("version: 1\nrules:\n  - name: gone\n    change_event: true\n    drop: true\n")
    result = rules.evaluate(make_group(_deploy(make_alert)))
    assert (result.events, result.dropped) == ((), (("1111111111111111", "gone"),))


def test_change_summary_is_cut_to_1024_characters(make_alert: Alerts, make_group: Groups) -> None:
    """A long summary is cut like an alert event's, and the cut is noted."""
    rules = RuleSet.from_text("version: 1\nrules:\n  - name: deploys\n    change_event: true\n")
    [event] = rules.evaluate(make_group(_deploy(make_alert, summary="x" * 2000))).events
    assert event.body["payload"]["summary"] == "x" * 1023 + "…"
    assert event.notes == ("summary was 2000 characters; cut to 1024",)


def test_oversize_change_event_cuts_custom_details(make_alert: Alerts, make_group: Groups) -> None:
    """A change event over 512,000 bytes is brought under by cutting custom_details."""
    rules = RuleSet.from_text("version: 1\nrules:\n  - name: deploys\n    change_event: true\n")
    [event] = rules.evaluate(make_group(_deploy(make_alert, log="y" * 600_000))).events
    size = len(json.dumps(event.body, separators=(",", ":"), ensure_ascii=False).encode())
    assert size + ROUTING_KEY_ALLOWANCE <= 512_000
    assert event.notes[0].startswith("event was ") and event.notes[0].endswith(
        " bytes (limit 512000); cut custom_details")


def test_change_event_that_cannot_fit_is_invalid(make_alert: Alerts, make_group: Groups) -> None:
    """When cutting custom_details cannot make it fit, the change event is an InvalidEvent with the reason."""
    rules = RuleSet.from_text(
        "version: 1\nrules:\n  - name: deploys\n    change_event: true\n"
        "    set: {links: [{href: '{{ annotations.big }}'}], custom_details: {v: '1'}}\n"
    )
    result = rules.evaluate(make_group(_deploy(make_alert, big="https://x/" + "z" * 600_000)))
    assert result.events == ()
    [bad] = result.invalid
    assert isinstance(bad, InvalidEvent)
    assert (bad.dedup_key, bad.action) == ("change:1111111111111111@2026-11-24T14:38:36Z", "change")
    assert bad.reason == (
        "event is 600252 bytes, over PagerDuty's 512000-byte limit, and cutting custom_details cannot make it fit;"
        " largest field: links (600023 bytes)")
