"""The work items the rule engine passes around, and the shape of a transform.

Everything here is pure data: no I/O, no clock, no HTTP. The receiver parses an
Alertmanager webhook body into a :class:`Group` (one notification) holding its
:class:`Alert` items; the rules turn each alert into an :class:`AlertEvent` (the alert
plus the PagerDuty fields set so far); ``collapse`` and ``render`` turn those into
:class:`RenderedEvent` (ready for the outbox) or :class:`InvalidEvent` (to be
dead-lettered with a reason).

A :data:`Transform` is any callable ``(AlertEvent) -> AlertEvent | None``; ``None`` drops
the alert. Every step of a rules file is one, and so is a plugin (see
:mod:`transforms.registry`). :class:`ChangeEvent` wraps a step written with
``change_event: true``: the alert then goes to PagerDuty as a Change Event.

An event's :data:`Action` is ``trigger`` or ``resolve`` (Events API v2 alert events) or
``change`` (a Change Event, sent to ``/v2/change/enqueue``; it has no resolve).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import msgspec

__all__ = [
    "CHANGE_EVENT",
    "Action",
    "Alert",
    "AlertEvent",
    "ChangeEvent",
    "Group",
    "InvalidEvent",
    "RenderedEvent",
    "Transform",
]

Action: TypeAlias = Literal["trigger", "resolve", "change"]
CHANGE_EVENT = "change_event"  # the field a ``change_event: true`` step sets; collapse reads it


class Alert(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    rename={"starts_at": "startsAt", "ends_at": "endsAt", "generator_url": "generatorURL"},
):
    """One alert of an Alertmanager notification (webhook v4 ``alerts[]``).

    A msgspec ``Struct`` whose JSON names are Alertmanager's, so the receiver decodes
    ``alerts[]`` straight into these objects, in C.
    """

    status: Literal["firing", "resolved"]
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = {}
    starts_at: str = ""  # RFC 3339 as Alertmanager sent it
    ends_at: str = ""  # "0001-01-01T00:00:00Z" while firing
    generator_url: str = ""
    fingerprint: str

    @property
    def firing(self) -> bool:
        return self.status == "firing"


@dataclass(frozen=True, slots=True)
class Group:
    """One Alertmanager notification: the group context plus all its alerts."""

    receiver: str
    status: str
    group_key: str
    group_labels: Mapping[str, str]
    common_labels: Mapping[str, str]
    common_annotations: Mapping[str, str]
    external_url: str
    alerts: Sequence[Alert]
    truncated_alerts: int = 0
    notification_reason: str | None = None  # Alertmanager 0.32+
    route_labels: Mapping[str, str] = field(default_factory=dict)  # Alertmanager 0.34+


@dataclass(slots=True)
class AlertEvent:
    """The work item of the chain: one alert, its group, and what the rules decided.

    ``fields`` holds PD-CEF fields by their rule names (``summary``, ``source``,
    ``severity``, ``component``, ``group``, ``class``, ``custom_details``, ``links``,
    ``images``, ``routing_key``, ``dedup``, ``client``, ``client_url``) plus
    ``send_resolved`` and ``change_event`` (set by :class:`ChangeEvent`). ``vars`` holds
    what ``extract`` steps captured. ``fired`` lists the names of the rules that applied, in
    order. ``template_errors`` lists ``"rule.field: message"`` for templates that failed and
    fell back to a default.
    """

    alert: Alert
    group: Group
    fields: dict[str, Any] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    fired: list[str] = field(default_factory=list)
    template_errors: list[str] = field(default_factory=list)
    stopped: bool = False  # set by a ``stop: true`` step; the chain ends there


Transform: TypeAlias = Callable[[AlertEvent], "AlertEvent | None"]


class ChangeEvent:
    """A step's action (or none, for a step that only says ``change_event: true``), then the mark
    that makes the alert a Change Event: ``fields["change_event"] = True``. Once set, later
    steps keep it; an alert the action drops stays dropped."""

    __slots__ = ("action",)

    def __init__(self, action: Transform | None) -> None:
        self.action = action

    def __call__(self, event: AlertEvent) -> AlertEvent | None:
        result = event if self.action is None else self.action(event)
        if result is not None:
            result.fields[CHANGE_EVENT] = True
        return result


@dataclass(frozen=True, slots=True)
class RenderedEvent:
    """An Events API v2 event ready for the outbox.

    ``routing_key`` is the *name* of a configured routing key, never the secret;
    the sender substitutes the secret. ``body`` is the Events v2 JSON object
    without ``routing_key``. ``payload_hash`` is the SHA-256 (hex) of the canonical
    JSON of ``body`` plus the action, used for duplicate suppression.
    """

    routing_key: str
    dedup_key: str
    action: Action
    body: Mapping[str, Any]
    payload_hash: str
    rules: tuple[str, ...] = ()
    fingerprints: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what render had to cut or change, human-readable


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    """An event that cannot be made valid for PagerDuty; it is dead-lettered, never dropped."""

    routing_key: str
    dedup_key: str
    action: Action
    body: Mapping[str, Any]
    reason: str
    rules: tuple[str, ...] = ()
    fingerprints: tuple[str, ...] = ()

