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

An alert marked ``change_event`` (a ``change_event: true`` step applied) becomes a Change
Event of its own, whatever ``dedup`` says: action ``change``, key
``change:<fingerprint>@<startsAt>``. PagerDuty sees no key; the outbox orders and
suppresses duplicates by it, so the same firing re-sent by Alertmanager (repeat_interval,
a restart, an HA peer) announces the change once, and a new firing (a new ``startsAt``)
again. A resolved alert so marked produces nothing (a change has no resolve) and is
counted with the suppressed resolves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

from transforms.base import CHANGE_EVENT, Action, AlertEvent
from transforms.values import text

__all__ = ["CHANGE_KEY_PREFIX", "DEFAULT_ROUTING_KEY", "MAX_DEDUP_KEY_CHARS", "Collapsed", "change_key", "collapse"]

DEFAULT_ROUTING_KEY = "default"
MAX_DEDUP_KEY_CHARS = 255
CHANGE_KEY_PREFIX = "change:"


class Collapsed(NamedTuple):
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


def collapse(events: Sequence[AlertEvent]) -> tuple[list[Collapsed], int]:
    """The events to render, in order of first appearance, and the suppressed-resolve count."""
    buckets: dict[tuple[str, str], tuple[str, list[AlertEvent]]] = {}  # the first raw key, the members
    grouped: set[tuple[str, str]] = set()
    for event in events:
        routing_key = text(event.fields.get("routing_key")).strip() or DEFAULT_ROUTING_KEY
        raw, collapses = (change_key(event), False) if event.fields.get(CHANGE_EVENT) is True else _dedup_key(event)
        key = (routing_key, _limit(raw))
        if collapses:
            grouped.add(key)
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = (raw, [event])
        else:
            bucket[1].append(event)
    result: list[Collapsed] = []
    suppressed = 0
    for key, (raw, members) in buckets.items():
        representative = next((m for m in members if m.alert.firing), members[0])
        firing = representative.alert.firing
        change = representative.fields.get(CHANGE_EVENT) is True
        if not firing and (change or representative.fields.get("send_resolved", True) is False):
            suppressed += 1
            continue
        routing_key, dedup_key = key
        notes: tuple[str, ...] = ()
        if dedup_key != raw:
            notes = (f"dedup_key was {len(raw)} characters (limit {MAX_DEDUP_KEY_CHARS}); sent its SHA-256",)
        action: Action = "change" if change else "trigger" if firing else "resolve"
        result.append(Collapsed(routing_key, dedup_key, action, representative, tuple(members), key in grouped, notes))
    return result, suppressed


def change_key(event: AlertEvent) -> str:
    """The outbox key of an alert's Change Event: one per firing (fingerprint and ``startsAt``)."""
    return f"{CHANGE_KEY_PREFIX}{event.alert.fingerprint}@{event.alert.starts_at}"


def _dedup_key(event: AlertEvent) -> tuple[str, bool]:
    """The event's dedup key before limiting, and whether it collapses several alerts."""
    mode = text(event.fields.get("dedup", "alert"))
    if mode == "alert":
        return event.alert.fingerprint, False
    if mode == "group":
        return hashlib.sha256(event.group.group_key.encode("utf-8")).hexdigest(), True
    return mode, True


def _limit(key: str) -> str:
    """``key`` itself, or ``sha256:<hex>`` of it when it is over 255 characters."""
    if len(key) <= MAX_DEDUP_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
