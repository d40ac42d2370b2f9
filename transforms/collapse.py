"""Collapse: per-alert results → one pending event per ``(routing_key, dedup_key)``. No I/O.

- ``dedup: alert`` (the default): the key is the alert's fingerprint; each alert yields
  its own trigger (firing) or resolve (resolved).
- ``dedup: group``: the key is the lowercase hex SHA-256 of the group key, exactly the key
  of Alertmanager's own PagerDuty notifier. The group yields one event: ``trigger`` while
  any member fires (its fields from the first firing alert, in Alertmanager's order),
  ``resolve`` once all members are resolved (fields from the first alert).
  ``custom_details`` gains ``num_firing`` and ``num_resolved`` (render adds them).
- ``dedup: <template>``: the rendered string is the key; alerts sharing it collapse as
  with ``group``.

A key longer than PagerDuty's 255 characters becomes ``sha256:<hex of it>``. A resolve is
not produced when the representative alert's ``send_resolved`` is false; those are
counted.

:func:`collapse` gives :class:`Collapsed` items; :func:`pending_events` gives the same as
plain :data:`Pending` tuples, which is what the engine hands to render.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from transforms.base import Action, AlertEvent
from transforms.fields import text

__all__ = [
    "DEFAULT_ROUTING_KEY",
    "MAX_DEDUP_KEY_CHARS",
    "Collapsed",
    "Pending",
    "collapse",
    "dedup_key_of",
    "limit_dedup_key",
    "pending_events",
]

DEFAULT_ROUTING_KEY = "default"
MAX_DEDUP_KEY_CHARS = 255


@dataclass(frozen=True, slots=True)
class Collapsed:
    """One event to render: its key, action, the alert whose fields it uses, and all members."""

    routing_key: str
    dedup_key: str
    action: Action
    event: AlertEvent
    members: tuple[AlertEvent, ...]
    grouped: bool  # group / template dedup: custom_details gets the member counts
    notes: tuple[str, ...] = ()

    @property
    def num_firing(self) -> int:
        return sum(1 for m in self.members if m.alert.firing)

    @property
    def num_resolved(self) -> int:
        return len(self.members) - self.num_firing


def limit_dedup_key(key: str) -> str:
    """``key`` itself, or ``sha256:<hex>`` of it when it is over 255 characters."""
    if len(key) <= MAX_DEDUP_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def dedup_key_of(event: AlertEvent) -> tuple[str, bool]:
    """The event's dedup key before limiting, and whether it collapses several alerts."""
    mode = text(event.fields.get("dedup", "alert"))
    if mode == "alert":
        return event.alert.fingerprint, False
    if mode == "group":
        return hashlib.sha256(event.group.group_key.encode("utf-8")).hexdigest(), True
    return mode, True


# The fields of a Collapsed, in order, as a plain tuple: what the engine passes from
# collapse to render (building the frozen dataclass costs more than the tuple).
Pending: TypeAlias = tuple[str, str, Action, AlertEvent, tuple[AlertEvent, ...], bool, tuple[str, ...]]


def collapse(events: Sequence[AlertEvent]) -> tuple[list[Collapsed], int]:
    """The events to render, in order of first appearance, and the suppressed-resolve count."""
    pending, suppressed = pending_events(events)
    return [Collapsed(*item) for item in pending], suppressed


def pending_events(events: Sequence[AlertEvent]) -> tuple[list[Pending], int]:
    """:func:`collapse`, giving each result as a :data:`Pending` tuple."""
    buckets: dict[tuple[str, str], tuple[str, list[AlertEvent]]] = {}  # the first raw key, the members
    grouped: set[tuple[str, str]] = set()
    for event in events:
        fields = event.fields
        routing_key = fields.get("routing_key")
        routing_key = (routing_key if type(routing_key) is str else text(routing_key)).strip() or DEFAULT_ROUTING_KEY
        mode = fields.get("dedup", "alert")
        if type(mode) is str and mode == "alert":  # the default, without the call
            raw, collapses = event.alert.fingerprint, False
        else:
            raw, collapses = dedup_key_of(event)
        key = (routing_key, raw if len(raw) <= MAX_DEDUP_KEY_CHARS else limit_dedup_key(raw))
        if collapses:
            grouped.add(key)
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = (raw, [event])
        else:
            bucket[1].append(event)
    result: list[Pending] = []
    suppressed = 0
    for key, (raw, members) in buckets.items():
        representative = members[0]
        firing = representative.alert.firing
        if not firing and len(members) > 1:
            for member in members:
                if member.alert.firing:
                    representative, firing = member, True
                    break
        action: Action = "trigger" if firing else "resolve"
        if not firing and representative.fields.get("send_resolved", True) is False:
            suppressed += 1
            continue
        routing_key, dedup_key = key
        notes: tuple[str, ...] = ()
        if dedup_key != raw:
            notes = (f"dedup_key was {len(raw)} characters (limit {MAX_DEDUP_KEY_CHARS}); sent its SHA-256",)
        result.append((routing_key, dedup_key, action, representative, tuple(members), key in grouped, notes))
    return result, suppressed
