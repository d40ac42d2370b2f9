"""Time guards on steps: when_time / unless_time in an IANA zone (DST included), days, ranges across
midnight, the load errors for every bad value, and the evaluation time as the caller's argument (at
intake the service's injected clock, at replay the time of the replay)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.errors import Reason
from receiver.models import parse_notification
from receiver.outbox.sqlite import SQLiteOutbox
from receiver.replay import replay
from receiver.secret import Secret
from receiver.settings import OutboxSettings, PagerDutySettings, RulesSettings, Settings
from receiver.state import STATE
from tests.fakes import FakeClock
from transforms import RulesError, RuleSet
from transforms.base import Alert, Group
from transforms.when import Moment

Alerts = Callable[..., Alert]
Groups = Callable[..., Group]

AFTER_HOURS = """version: 1
defaults: {routing_key: default}
rules:
  - name: after-hours
    unless_time: {timezone: Europe/Berlin, days: [mon-fri], hours: ["09:00-17:00"]}
    set: {routing_key: night-oncall}
"""


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _routing_key(rules: RuleSet, group: Group, now: datetime) -> str:
    (event,) = rules.evaluate(group, now).events
    return event.routing_key


def _matches(window: str, now: str, make_alert: Alerts, make_group: Groups) -> bool:
    """Whether a step with ``when_time: {window}`` applies at ``now``."""
    rules = RuleSet.from_text(f"version: 1\nrules:\n  - name: timed\n    when_time: {window}\n"
                              "    set: {class: hit}\n")
    event = rules.engine.run(make_alert(), make_group(make_alert()), Moment(_at(now)))[0]
    assert event is not None
    return event.fields.get("class") == "hit"


@pytest.mark.parametrize(
    ("now", "key"),
    [
        # Spring: Berlin leaves CET (+01:00) for CEST (+02:00) on Sunday 2026-03-29.
        ("2026-03-27T07:30:00+00:00", "night-oncall"),  # Friday 08:30 CET: before hours
        ("2026-03-30T07:30:00+00:00", "default"),  # Monday 09:30 CEST: in hours
        ("2026-03-27T15:30:00+00:00", "default"),  # Friday 16:30 CET: in hours
        ("2026-03-30T15:30:00+00:00", "night-oncall"),  # Monday 17:30 CEST: after hours
        # Autumn: back to CET on Sunday 2026-10-25.
        ("2026-10-23T07:30:00+00:00", "default"),  # Friday 09:30 CEST
        ("2026-10-26T07:30:00+00:00", "night-oncall"),  # Monday 08:30 CET
        ("2026-10-25T10:00:00+00:00", "night-oncall"),  # Sunday: no hours at all
    ],
)
def test_after_hours_routing_follows_berlin_across_dst(
    now: str, key: str, make_alert: Alerts, make_group: Groups
) -> None:
    """The same UTC time of day is in or out of Berlin business hours on either side of a DST change."""
    rules = RuleSet.from_text(AFTER_HOURS)
    assert _routing_key(rules, make_group(make_alert()), _at(now)) == key


def test_an_offset_given_in_another_zone_is_the_same_instant(make_alert: Alerts, make_group: Groups) -> None:
    """now is an instant: 09:30+02:00 and 07:30Z are the same Monday morning in Berlin."""
    rules = RuleSet.from_text(AFTER_HOURS)
    group = make_group(make_alert())
    assert _routing_key(rules, group, _at("2026-03-30T09:30:00+02:00")) == "default"
    assert _routing_key(rules, group, _at("2026-03-30T02:30:00-05:00")) == "default"


@pytest.mark.parametrize(
    ("now", "hit"),
    [
        ("2026-05-04T21:59:00+00:00", False),
        ("2026-05-04T22:00:00+00:00", True),
        ("2026-05-04T23:59:00+00:00", True),
        ("2026-05-04T00:00:00+00:00", True),
        ("2026-05-04T05:59:00+00:00", True),
        ("2026-05-04T06:00:00+00:00", False),
        ("2026-05-04T12:00:00+00:00", True),  # the second range
        ("2026-05-04T13:00:00+00:00", False),  # an end is excluded
    ],
)
def test_ranges_cross_midnight_and_any_range_matches(
    now: str, hit: bool, make_alert: Alerts, make_group: Groups
) -> None:
    """22:00-06:00 covers both ends of the day; several ranges match when any does."""
    window = '{timezone: UTC, hours: ["22:00-06:00", "12:00-13:00"]}'
    assert _matches(window, now, make_alert, make_group) is hit


@pytest.mark.parametrize(
    ("window", "now", "hit"),
    [
        # Sunday 12:00 UTC is Monday 01:00 in Auckland (NZDT, +13:00).
        ("{timezone: Pacific/Auckland, days: [mon]}", "2026-01-04T12:00:00+00:00", True),
        ("{timezone: UTC, days: [mon]}", "2026-01-04T12:00:00+00:00", False),
        # Monday 03:00 UTC is Sunday 19:00 in Los Angeles (PST, -08:00).
        ("{timezone: America/Los_Angeles, days: [mon]}", "2026-01-05T03:00:00+00:00", False),
        ("{timezone: America/Los_Angeles, days: [sunday]}", "2026-01-05T03:00:00+00:00", True),
        # A day range may wrap the week, and names are case-insensitive.
        ("{timezone: UTC, days: [Fri-Mon]}", "2026-01-04T12:00:00+00:00", True),
        ("{timezone: UTC, days: [fri-mon]}", "2026-01-07T12:00:00+00:00", False),
        # days and hours must both hold; hours are checked on the local date, not the range's start.
        ('{timezone: UTC, days: [fri], hours: "22:00-06:00"}', "2026-01-09T02:00:00+00:00", True),
        ('{timezone: UTC, days: [fri], hours: "22:00-06:00"}', "2026-01-10T02:00:00+00:00", False),
        ('{timezone: UTC, hours: ["00:00-24:00"]}', "2026-01-10T23:59:59+00:00", True),
    ],
)
def test_days_are_those_of_the_zone(
    window: str, now: str, hit: bool, make_alert: Alerts, make_group: Groups
) -> None:
    """days are checked on the local date in the window's zone, which may differ from the UTC date."""
    assert _matches(window, now, make_alert, make_group) is hit


def test_when_and_unless_and_match_must_all_agree(make_alert: Alerts, make_group: Groups) -> None:
    """A step applies only when its matchers, its when_time and (inverted) its unless_time all agree."""
    rules = RuleSet.from_text(
        """version: 1
rules:
  - name: db-weekday-not-lunch
    match: ['team="db"']
    when_time: {timezone: UTC, days: [mon-fri]}
    unless_time: {timezone: UTC, hours: ["12:00-13:00"]}
    set: {routing_key: db}
"""
    )
    db = make_alert(labels={"alertname": "A", "team": "db"})
    web = make_alert(labels={"alertname": "A", "team": "web"})
    monday_morning, monday_lunch, sunday = (
        _at("2026-05-04T09:00:00+00:00"), _at("2026-05-04T12:30:00+00:00"), _at("2026-05-03T09:00:00+00:00")
    )
    assert _routing_key(rules, make_group(db), monday_morning) == "db"
    assert _routing_key(rules, make_group(db), monday_lunch) == "default"
    assert _routing_key(rules, make_group(db), sunday) == "default"
    assert _routing_key(rules, make_group(web), monday_morning) == "default"


class _CountingUTC(datetime):
    """A UTC datetime that counts its conversions into other zones."""

    conversions: list[object] = []

    def astimezone(self, tz: tzinfo | None = None) -> datetime:
        _CountingUTC.conversions.append(tz)
        return super().astimezone(tz)


def test_local_time_is_computed_once_per_evaluation_and_only_for_timed_rules(
    make_alert: Alerts, make_group: Groups
) -> None:
    """Three alerts through two Berlin steps convert the time once; rules without time guards never do."""
    timed = RuleSet.from_text(
        """version: 1
rules:
  - {name: a, when_time: {timezone: Europe/Berlin, days: [mon-sun]}, set: {class: a}}
  - {name: b, unless_time: {timezone: Europe/Berlin, hours: "03:00-04:00"}, set: {group: b}}
"""
    )
    plain = RuleSet.from_text("version: 1\nrules: [{name: c, set: {class: c}}]\n")
    group = make_group(*(make_alert(fingerprint=f"f{i}") for i in range(3)))
    now = _CountingUTC(2026, 5, 4, 9, 0, tzinfo=UTC)
    _CountingUTC.conversions = []
    events = timed.evaluate(group, now).events
    assert [(e.body["payload"]["class"], e.body["payload"]["group"]) for e in events] == [("a", "b")] * 3
    assert [str(tz) for tz in _CountingUTC.conversions] == ["Europe/Berlin"]
    _CountingUTC.conversions = []
    assert len(plain.evaluate(group, now).events) == 3
    assert _CountingUTC.conversions == []


def test_timed_rules_need_an_aware_now(make_alert: Alerts, make_group: Groups) -> None:
    """Without now, or with a naive one, evaluation refuses with a clear message; untimed rules need none."""
    group = make_group(make_alert())
    timed = RuleSet.from_text(AFTER_HOURS)
    with pytest.raises(ValueError) as missing:
        timed.evaluate(group)
    assert str(missing.value) == (
        "these rules have when_time or unless_time steps: evaluate them with now (a timezone-aware datetime)"
    )
    with pytest.raises(ValueError) as naive:
        timed.evaluate(group, datetime(2026, 5, 4, 9, 0))
    assert str(naive.value) == "now must carry a time zone, got naive 2026-05-04T09:00:00"
    assert len(RuleSet.from_text("version: 1\nrules: [{name: c, set: {class: c}}]\n").evaluate(group).events) == 1


BAD = """version: 1
rules:
  - name: zone
    when_time: {timezone: Europe/Berln, days: [mon]}
    set: {class: x}
  - name: day
    when_time: {timezone: UTC, days: [mon, funday, 3]}
    set: {class: x}
  - name: hour
    unless_time: {timezone: UTC, hours: ["25:00-26:00", "09:60-10:00", "09:00-24:01", "9-17", "09:00-09:00"]}
    set: {class: x}
  - name: keys
    when_time: {timezone: UTC, hours: "09:00-17:00", not: true}
    set: {class: x}
  - name: missing
    when_time: {days: []}
    set: {class: x}
  - name: shape
    when_time: business hours
    unless_time: {timezone: [UTC], hours: {from: 9}}
    set: {class: x}
  - name: alone
    when_time: {timezone: UTC, days: [sat]}
"""


def test_every_bad_value_is_a_load_error_with_its_line() -> None:
    """Unknown zone, bad day, bad or empty range, unknown key, missing keys: file:line: message each."""
    with pytest.raises(RulesError) as caught:
        RuleSet.from_text(BAD, "t.yaml")
    assert caught.value.errors == [
        "t.yaml:4: when_time.timezone: unknown time zone 'Europe/Berln' (an IANA name such as Europe/Berlin, or UTC)",
        "t.yaml:7: when_time.days: bad day 'funday' (expected one of: mon, tue, wed, thu, fri, sat, sun,"
        " or a range such as mon-fri)",
        "t.yaml:7: when_time.days: bad day a number (expected one of: mon, tue, wed, thu, fri, sat, sun,"
        " or a range such as mon-fri)",
        "t.yaml:10: unless_time.hours: range '25:00-26:00' has a bad hour 25 (00 to 23, or 24:00 as an end)",
        "t.yaml:10: unless_time.hours: range '09:60-10:00' has a bad minute 60 (00 to 59)",
        "t.yaml:10: unless_time.hours: range '09:00-24:01' has a bad hour 24 (00 to 23, or 24:00 as an end)",
        "t.yaml:10: unless_time.hours: bad range '9-17' (expected HH:MM-HH:MM, such as \"09:00-17:00\")",
        "t.yaml:10: unless_time.hours: range '09:00-09:00' is empty (it starts where it ends);"
        " for the whole day leave out hours",
        "t.yaml:13: unknown key 'not' in when_time (expected: timezone, days, hours)",
        "t.yaml:16: when_time needs 'timezone' (an IANA name such as Europe/Berlin, or UTC)",
        "t.yaml:16: when_time.days must be a non-empty list of strings, got an empty list",
        "t.yaml:19: when_time must be a mapping with timezone and days and/or hours, got a string",
        "t.yaml:20: unless_time.timezone must be an IANA time zone name such as Europe/Berlin, got a list",
        "t.yaml:20: unless_time.hours must be a non-empty list of strings, got a mapping",
        "t.yaml:22: rule 'alone' has no action (add one of: set, severity_map, extract, drop, transform,"
        " or stop: true)",
    ]


def test_a_window_needs_days_or_hours() -> None:
    """A window with a zone only would always hold: refused, naming what is missing."""
    with pytest.raises(RulesError) as caught:
        RuleSet.from_text("version: 1\nrules:\n  - when_time: {timezone: UTC}\n    set: {class: x}\n", "t.yaml")
    assert caught.value.errors == ["t.yaml:3: when_time needs 'days' or 'hours' (or both)"]


@pytest.mark.parametrize(
    ("now", "key"), [("2026-03-27T07:30:00+00:00", "night-oncall"), ("2026-03-30T07:30:00+00:00", "default")]
)
async def test_intake_evaluates_at_the_service_clock(
    now: str, key: str, tmp_path: Path, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> None:
    """POST /v1/alertmanager tests when_time at the injected clock's wall time, not the machine's."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(AFTER_HOURS)
    settings = Settings(
        pagerduty=PagerDutySettings(routing_keys={"default": Secret("d" * 32), "night-oncall": Secret("n" * 32)},
                                    dry_run=True),
        outbox=OutboxSettings(path=tmp_path / "outbox.db"),
        rules=RulesSettings(paths=(rules,)),
    )
    clock = FakeClock(start=_at(now).timestamp())
    client = await aiohttp_client(create_app(settings, Deps(clock=clock, registry=CollectorRegistry())))
    body = (Path(__file__).parents[1] / "fixtures" / "am025-per-alert-firing" / "webhook.json").read_bytes()
    resp = await client.post("/v1/alertmanager", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    items = await client.app[STATE].outbox.items()
    assert [item.routing_key for item in items] == [key, key]


def _commented_step(text: str, name: str) -> str:
    """The step ``name`` that rules/default.yaml shows commented out, uncommented."""
    lines = text.splitlines()
    start = lines.index(f"  # - name: {name}")
    end = start + 1
    while lines[end].startswith("  #   "):
        end += 1
    return "\n".join(line.replace("# ", "", 1) for line in lines[start:end]) + "\n"


def test_default_rules_commented_time_and_resolve_examples_work(make_alert: Alerts, make_group: Groups) -> None:
    """The after-hours and send_resolved examples in rules/default.yaml do what their comments say."""
    text = (Path(__file__).parents[2] / "rules" / "default.yaml").read_text()
    steps = _commented_step(text, "after-hours") + _commented_step(text, "storage-resolves-by-hand")
    rules = RuleSet.from_text(text + steps)
    assert [rule.name for rule in rules.engine.rules][-2:] == ["after-hours", "storage-resolves-by-hand"]
    firing = make_alert(fingerprint="f1", labels={"alertname": "A", "team": "web"})
    assert _routing_key(rules, make_group(firing), _at("2026-03-27T07:30:00+00:00")) == "night-oncall"
    assert _routing_key(rules, make_group(firing), _at("2026-03-30T07:30:00+00:00")) == "default"
    storage = make_alert(fingerprint="s1", status="resolved", labels={"alertname": "A", "team": "storage"})
    web = make_alert(fingerprint="w1", status="resolved", labels={"alertname": "A", "team": "web"})
    evaluation = rules.evaluate(make_group(storage, web), _at("2026-03-30T07:30:00+00:00"))
    assert [(e.dedup_key, e.action) for e in evaluation.events] == [("w1", "resolve")]
    assert evaluation.suppressed_resolves == 1


@pytest.mark.parametrize(
    ("now", "key"), [("2026-03-27T07:30:00+00:00", "night-oncall"), ("2026-03-30T07:30:00+00:00", "default")]
)
async def test_replay_routes_at_the_time_of_the_replay(now: str, key: str, tmp_path: Path) -> None:
    """A dead letter replayed with when_time rules takes the routing key those rules give at replay time."""
    source = (Path(__file__).parents[1] / "fixtures" / "am025-per-alert-firing" / "webhook.json").read_bytes()
    rules = RuleSet.from_text(AFTER_HOURS)
    evaluation = rules.evaluate(parse_notification(source), _at("2026-03-30T12:00:00+00:00"))
    box = SQLiteOutbox(tmp_path / "outbox.db")
    await box.open()
    try:
        await box.enqueue(source, evaluation.events, evaluation.invalid, resend_interval=3600.0)
        first = (await box.claim(1, ()))[0]
        await box.dead_letter(first, Reason.CLIENT_ERROR, 400, "refused")
        outcome = await replay(box, first.id, rules, routing_keys={"default", "night-oncall"},
                               resend_interval=3600.0, now=_at(now))
        assert (outcome.result, outcome.routing_key) == ("replayed", key)
    finally:
        await box.close()
