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
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from transforms.base import Action, AlertEvent
from transforms.fields import text

__all__ = [
    "DEFAULT_ROUTING_KEY",
    "MAX_DEDUP_KEY_CHARS",
    "Collapsed",
    "collapse",
    "dedup_key_of",
    "limit_dedup_key",
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


def collapse(events: Sequence[AlertEvent]) -> tuple[list[Collapsed], int]:
    """The events to render, in order of first appearance, and the suppressed-resolve count."""
    buckets: dict[tuple[str, str], list[AlertEvent]] = {}
    grouped: dict[tuple[str, str], bool] = {}
    raw_keys: dict[tuple[str, str], str] = {}
    for event in events:
        routing_key = text(event.fields.get("routing_key")).strip() or DEFAULT_ROUTING_KEY
        raw, collapses = dedup_key_of(event)
        key = (routing_key, limit_dedup_key(raw))
        buckets.setdefault(key, []).append(event)
        grouped[key] = grouped.get(key, False) or collapses
        raw_keys.setdefault(key, raw)
    result: list[Collapsed] = []
    suppressed = 0
    for key, members in buckets.items():
        firing = [m for m in members if m.alert.firing]
        representative = firing[0] if firing else members[0]
        action: Action = "trigger" if firing else "resolve"
        if action == "resolve" and representative.fields.get("send_resolved", True) is False:
            suppressed += 1
            continue
        notes: tuple[str, ...] = ()
        if key[1] != raw_keys[key]:
            size = len(raw_keys[key])
            notes = (f"dedup_key was {size} characters (limit {MAX_DEDUP_KEY_CHARS}); sent its SHA-256",)
        result.append(Collapsed(key[0], key[1], action, representative, tuple(members), grouped[key], notes))
    return result, suppressed
