"""Render: a collapsed alert → an Events API v2 body within PagerDuty's limits. No I/O.

The body is ``{event_action, dedup_key, payload: {summary, source, severity, timestamp?,
component?, group?, class?, custom_details?}, client?, client_url?, links?, images?}``.
It has no ``routing_key``: :class:`~transforms.base.RenderedEvent` carries the key's
*name* and the sender adds the secret. Resolves carry the full payload, as Alertmanager's
own notifier does, so PagerDuty event rules can route them.

A Change Event (action ``change``, see :mod:`transforms.collapse`) has its own, smaller
body: ``{dedup_key, payload: {summary, source, timestamp?, custom_details?}, links?}`` — no
``event_action`` (which is how the sender tells it goes to ``/v2/change/enqueue``), severity,
component, group, class, client or images. Its ``dedup_key`` is pdrelay's own key for the
outbox (stored with the body, like every event's, so an encrypted outbox can still show and
replay it); the sender leaves it out, as PagerDuty's Change Events take none. The same
defaults and limits apply (summary cut, 512,000 bytes by cutting ``custom_details``).

Defaults for fields the rules left unset: summary = ``annotations.summary``, else
``labels.alertname``, else ``"Alertmanager alert"``; source = ``labels.instance``, else
``labels.job``, else the host of ``externalURL``, else ``"alertmanager"``; severity = the
rules' default severity (``error``); client = ``Alertmanager``; client_url = Alertmanager's
alert page for the receiver; custom_details = ``{labels, annotations}``; timestamp = the
alert's ``startsAt`` unless it is Go's zero time.

Limits enforced before anything is queued (each change is described in ``notes``):
severity is one of critical/error/warning/info (lowercased; anything else becomes the
default); summary ≤ 1024 characters (1023 + ``…``); source and summary never empty; links
need an ``href``; image ``src`` must be https; the whole event, counted as compact UTF-8
JSON plus a 32-character routing key, is at most 512,000 bytes, reached by
cutting ``custom_details`` (see :mod:`transforms.shrink`). What still does not fit is an
:class:`~transforms.base.InvalidEvent`. The sender must encode the same way for the count
to hold: compact (no spaces after separators) and UTF-8 (no ``\\u`` escapes).

``payload_hash`` is the SHA-256 of the body's canonical JSON (sorted keys, ``,``/``:``
separators, UTF-8); the same bytes are what the size is measured on.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote_plus, urlsplit

import msgspec

from transforms.base import AlertEvent, InvalidEvent, RenderedEvent
from transforms.collapse import Collapsed
from transforms.fields import DEFAULT_SEVERITY, SEVERITIES
from transforms.shrink import json_size, shrink_details
from transforms.values import text

__all__ = [
    "DEFAULT_CLIENT", "MAX_EVENT_BYTES", "MAX_SUMMARY_CHARS", "ROUTING_KEY_ALLOWANCE", "jsonable", "jsonable_plain",
    "render",
]

MAX_EVENT_BYTES = 512_000
MAX_SUMMARY_CHARS = 1024
DEFAULT_CLIENT = "Alertmanager"
# ',"routing_key":"<32 characters>"' -- what the sender adds to the body
ROUTING_KEY_ALLOWANCE = len(',"routing_key":""') + 32
_ZERO_TIME_PREFIX = "0001-01-01"
_ABSENT: Any = object()
_OPTIONAL_PAYLOAD = ("component", "group", "class")


# Sorted keys, compact separators, UTF-8: the bytes hashed and measured.
_canonical_bytes = msgspec.json.Encoder(order="sorted").encode


def jsonable(value: Any) -> Any:
    """``value`` as JSON data: mappings → dict with str keys, sequences → list, other → str.

    Always a copy for containers, so the body never shares a dict with the alert. Gives what
    :func:`jsonable_plain` gives (a property test holds them equal), faster for plain values.
    """
    # This and the other `type(x) is str` shortcuts of render, and its URL caches:
    # +16 % per-alert (bench_rules.py, 0.50 vs 0.43 × the hand-built baseline, same run).
    kind = type(value)
    if kind is dict:
        for key, item in value.items():  # the usual case, a label map: copy it in C
            if type(key) is not str or type(item) is not str:
                break
        else:
            return dict(value)
        copy = {}
        for key, item in value.items():
            copy[key if type(key) is str else str(key)] = item if type(item) is str else jsonable(item)
        return copy
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is list or kind is tuple:
        return [item if type(item) is str else jsonable(item) for item in value]
    return jsonable_plain(value)


def jsonable_plain(value: Any) -> Any:
    """:func:`jsonable` without its shortcuts: the reference its tests compare it with."""
    if isinstance(value, str | int) or value is None:  # bool is an int
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable_plain(v) for v in value]
    return str(value)


def _as_text(value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text(value)


@lru_cache(maxsize=256)
def _host(external_url: str) -> str | None:
    return urlsplit(external_url).hostname if external_url else None


@lru_cache(maxsize=256)
def _alerts_page(external_url: str, receiver: str) -> str:
    """Alertmanager's alert page for the receiver: the default ``client_url``."""
    return f"{external_url}/#/alerts?receiver={quote_plus(receiver, safe='')}"


def _default_source(event: AlertEvent) -> str:
    labels = event.alert.labels
    host = _host(event.group.external_url)
    return labels.get("instance") or labels.get("job") or host or "alertmanager"


def _first(fields: Mapping[str, Any], name: str, notes: list[str]) -> str:
    """The field as stripped text; notes a field that was set but rendered empty."""
    value = fields.get(name, _ABSENT)
    if value is _ABSENT:
        return ""
    value = (value if type(value) is str else _as_text(value)).strip()
    if not value:
        notes.append(f"{name} was empty; used the default")
    return value


def _optional(fields: Mapping[str, Any], name: str) -> str:
    """The field as stripped text, ``""`` when it is unset."""
    value = fields.get(name)
    if type(value) is str:
        return value.strip()
    return "" if value is None else _as_text(value).strip()


def _severity(fields: Mapping[str, Any], default: str, notes: list[str]) -> str:
    raw = fields.get("severity", _ABSENT)
    if raw is _ABSENT:
        return default
    raw = raw if type(raw) is str else _as_text(raw)
    severity = raw if raw in SEVERITIES else raw.strip().lower()
    if severity not in SEVERITIES:
        notes.append(f"severity {raw!r} is not one of {', '.join(SEVERITIES)}; used {default!r}")
        return default
    return severity


def _items(
    fields: Mapping[str, Any], name: str, keys: tuple[str, ...], notes: list[str]
) -> list[dict[str, str]]:
    raw = fields.get(name)
    if raw is None:
        return []
    if type(raw) is not list and not isinstance(raw, list | tuple):
        notes.append(f"{name} is not a list; dropped")
        return []
    result: list[dict[str, str]] = []
    for index, item in enumerate(raw):
        if type(item) is not dict and not isinstance(item, Mapping):
            notes.append(f"{name}[{index}] is not a mapping; dropped")
            continue
        entry: dict[str, str] = {}
        for key in keys:
            value = item.get(key)
            if value is not None and (value := (value if type(value) is str else _as_text(value)).strip()):
                entry[key] = value
        required = entry.get(keys[0], "")
        if not required:
            continue  # like Alertmanager: an entry whose href/src rendered empty is left out
        if name == "images" and not required.lower().startswith("https://"):
            notes.append(f"images[{index}] dropped: src {required[:100]!r} is not https")
            continue
        result.append(entry)
    return result


def _summary(event: AlertEvent, notes: list[str]) -> str:
    """The summary the rules set, else a default; cut to PagerDuty's 1024 characters."""
    alert = event.alert
    summary = (
        _first(event.fields, "summary", notes)
        or alert.annotations.get("summary", "").strip()
        or alert.labels.get("alertname", "").strip()
        or "Alertmanager alert"
    )
    if len(summary) > MAX_SUMMARY_CHARS:
        notes.append(f"summary was {len(summary)} characters; cut to {MAX_SUMMARY_CHARS}")
        summary = summary[: MAX_SUMMARY_CHARS - 1] + "…"
    return summary


def _timestamp(event: AlertEvent, payload: dict[str, Any]) -> None:
    """Adds ``timestamp``: the alert's ``startsAt``, unless it is Go's zero time."""
    starts_at = event.alert.starts_at
    if starts_at and not starts_at.startswith(_ZERO_TIME_PREFIX):
        payload["timestamp"] = starts_at


def _details(collapsed: Collapsed, payload: dict[str, Any], notes: list[str]) -> None:
    """Adds ``custom_details``: what the rules set (a mapping), else the alert's labels and annotations."""
    alert = collapsed.event.alert
    details = collapsed.event.fields.get("custom_details", _ABSENT)
    if details is _ABSENT:
        details = {"labels": jsonable(alert.labels), "annotations": jsonable(alert.annotations)}
    elif type(details := jsonable(details)) is not dict:
        notes.append("custom_details is not a mapping; sent under 'value'")
        details = {"value": details}
    if collapsed.grouped:
        details = {**details, "num_firing": collapsed.num_firing, "num_resolved": collapsed.num_resolved}
    if details:
        payload["custom_details"] = details


def _build_change_body(collapsed: Collapsed, notes: list[str]) -> dict[str, Any]:
    """The Change Event body before the size limit: ``{dedup_key, payload: {summary, source, timestamp?,
    custom_details?}, links?}``. Change events have no action, severity, component, group, class,
    client or images: fields the rules set for those are left out (``dedup_key`` stays in the outbox)."""
    event = collapsed.event
    payload: dict[str, Any] = {
        "summary": _summary(event, notes),
        "source": _first(event.fields, "source", notes) or _default_source(event),
    }
    _timestamp(event, payload)
    _details(collapsed, payload, notes)
    body: dict[str, Any] = {"dedup_key": collapsed.dedup_key, "payload": payload}
    if "links" in event.fields and (links := _items(event.fields, "links", ("href", "text"), notes)):
        body["links"] = links
    return body


def _build_body(collapsed: Collapsed, default_severity: str, notes: list[str]) -> dict[str, Any]:
    """The Events v2 body before the size limit (fields checked, defaults filled in)."""
    event = collapsed.event
    fields = event.fields
    payload: dict[str, Any] = {
        "summary": _summary(event, notes),
        "source": _first(fields, "source", notes) or _default_source(event),
        "severity": _severity(fields, default_severity, notes),
    }
    _timestamp(event, payload)
    for name in _OPTIONAL_PAYLOAD:
        value = fields.get(name)
        if value is not None and (value := (value if type(value) is str else _as_text(value)).strip()):
            payload[name] = value
    _details(collapsed, payload, notes)
    body: dict[str, Any] = {
        "event_action": collapsed.action,
        "dedup_key": collapsed.dedup_key,
        "payload": payload,
        "client": _optional(fields, "client") or DEFAULT_CLIENT,
    }
    if client_url := _optional(fields, "client_url"):
        body["client_url"] = client_url
    elif external_url := event.group.external_url:
        body["client_url"] = _alerts_page(external_url, event.group.receiver)
    if "links" in fields and (links := _items(fields, "links", ("href", "text"), notes)):
        body["links"] = links
    if "images" in fields and (images := _items(fields, "images", ("src", "href", "alt"), notes)):
        body["images"] = images
    return body


def _fit(body: dict[str, Any], size: int, notes: list[str]) -> str | None:
    """Cuts custom_details of an over-size event until it fits; returns why it cannot, or None."""
    payload = body["payload"]
    details = payload.get("custom_details")
    if isinstance(details, dict):
        budget = MAX_EVENT_BYTES - (size - json_size(details))
        smaller = shrink_details(details, budget) if budget > 2 else None
        if smaller is not None:
            payload["custom_details"] = smaller
            notes.append(f"event was {size} bytes (limit {MAX_EVENT_BYTES}); cut custom_details")
            return None
    sizes = {f"payload.{k}": json_size(v) for k, v in payload.items()}
    sizes.update({k: json_size(v) for k, v in body.items() if k != "payload"})
    largest = max(sizes, key=lambda k: sizes[k])
    return (
        f"event is {size} bytes, over PagerDuty's {MAX_EVENT_BYTES}-byte limit, and cutting custom_details"
        f" cannot make it fit; largest field: {largest} ({sizes[largest]} bytes)"
    )


def render(collapsed: Collapsed, default_severity: str = DEFAULT_SEVERITY) -> RenderedEvent | InvalidEvent:
    """The Events v2 event for one collapsed alert, or why PagerDuty would refuse it."""
    routing_key, dedup_key, action, members = (
        collapsed.routing_key, collapsed.dedup_key, collapsed.action, collapsed.members
    )
    notes = list(collapsed.notes)
    if action == "change":
        body = _build_change_body(collapsed, notes)
    else:
        body = _build_body(collapsed, default_severity, notes)
    rules = tuple(dict.fromkeys(name for member in members for name in member.fired))
    fingerprints = tuple(member.alert.fingerprint for member in members)
    canonical = _canonical_bytes(body)
    size = len(canonical) + ROUTING_KEY_ALLOWANCE
    reason = None if dedup_key else "empty dedup_key (the alert has no fingerprint)"
    if reason is None and size > MAX_EVENT_BYTES:
        reason = _fit(body, size, notes)
        canonical = _canonical_bytes(body)
    if reason is not None:
        return InvalidEvent(routing_key, dedup_key, action, body, reason, rules, fingerprints)
    digest = hashlib.sha256(canonical).hexdigest()
    return RenderedEvent(routing_key, dedup_key, action, body, digest, rules, fingerprints, tuple(notes))
