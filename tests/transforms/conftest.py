"""Test helpers for the rule engine: a minimal webhook parser and Alert/Group builders.

The receiver has its own, validating parser; this one only maps an Alertmanager v4 body
onto the engine's types so fixtures can be fed to ``RuleSet.evaluate``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from transforms.base import Alert, Group

ZERO_TIME = "0001-01-01T00:00:00Z"


def _group_from_webhook(body: Mapping[str, Any]) -> Group:
    return Group(
        receiver=body["receiver"],
        status=body["status"],
        group_key=body["groupKey"],
        group_labels=dict(body["groupLabels"]),
        common_labels=dict(body["commonLabels"]),
        common_annotations=dict(body["commonAnnotations"]),
        external_url=body["externalURL"],
        alerts=[
            Alert(
                status=a["status"],
                labels=dict(a["labels"]),
                annotations=dict(a["annotations"]),
                starts_at=a["startsAt"],
                ends_at=a["endsAt"],
                generator_url=a["generatorURL"],
                fingerprint=a["fingerprint"],
            )
            for a in body["alerts"]
        ],
        truncated_alerts=body.get("truncatedAlerts", 0),
        notification_reason=body.get("notification_reason"),
        route_labels=dict(body.get("routeLabels") or {}),
    )


def _make_alert(
    fingerprint: str = "0123456789abcdef",
    status: str = "firing",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    starts_at: str = "2026-11-24T14:38:36Z",
) -> Alert:
    return Alert(
        status=status,
        labels=dict(labels if labels is not None else {"alertname": "DiskFull", "instance": "a:9100"}),
        annotations=dict(annotations or {}),
        starts_at=starts_at,
        ends_at=ZERO_TIME if status == "firing" else "2026-11-24T15:00:00Z",
        generator_url="http://prom.example/graph?g0.expr=x",
        fingerprint=fingerprint,
    )


def _make_group(
    *alerts: Alert, group_key: str = '{}/{team="pd"}:{alertname="DiskFull"}', **extra: Any
) -> Group:
    fields: dict[str, Any] = {
        "receiver": "pd",
        "status": "firing" if any(a.firing for a in alerts) else "resolved",
        "group_key": group_key,
        "group_labels": {"alertname": "DiskFull"},
        "common_labels": {},
        "common_annotations": {},
        "external_url": "http://am.example:9093",
    }
    fields.update(extra)
    return Group(alerts=list(alerts), **fields)


@pytest.fixture
def group_from_webhook() -> Callable[[Mapping[str, Any]], Group]:
    """Parses an Alertmanager v4 webhook body (as loaded JSON) into a Group."""
    return _group_from_webhook


@pytest.fixture
def make_alert() -> Callable[..., Alert]:
    """Builds an Alert with sensible defaults; override any field by keyword."""
    return _make_alert


@pytest.fixture
def make_group() -> Callable[..., Group]:
    """Builds a Group around the given alerts; override any field by keyword."""
    return _make_group
