"""Render: a collapsed alert → an Events API v2 body within PagerDuty's limits. No I/O.

The body is ``{event_action, dedup_key, payload: {summary, source, severity, timestamp?,
component?, group?, class?, custom_details?}, client?, client_url?, links?, images?}``.
It has no ``routing_key``: :class:`~transforms.base.RenderedEvent` carries the key's
*name* and the sender adds the secret. Resolves carry the full payload, as Alertmanager's
own notifier does, so PagerDuty event rules can route them.

Defaults for fields the rules left unset: summary = ``annotations.summary``, else
``labels.alertname``, else ``"Alertmanager alert"``; source = ``labels.instance``, else
``labels.job``, else the host of ``externalURL``, else ``"alertmanager"``; severity = the
rules' default severity (``error``); client = ``Alertmanager``; client_url = Alertmanager's
alert page for the receiver; custom_details = ``{labels, annotations}``; timestamp = the
alert's ``startsAt`` unless it is Go's zero time.

Limits enforced before anything is queued (each change is described in ``notes``):
severity is one of critical/error/warning/info (lowercased; anything else becomes the
default); summary ≤ 1024 characters (1023 + ``…``); source and summary never empty; links
need an ``href``; image ``src`` must be https; the whole event, counted as compact JSON
with ASCII escapes plus a 32-character routing key, is at most 512,000 bytes, reached by
cutting ``custom_details`` (see :mod:`transforms.shrink`). What still does not fit is an
:class:`~transforms.base.InvalidEvent`. Compact JSON is the upper bound of what a compact
encoder sends, so the sender must encode compactly (no spaces after separators).

``payload_hash`` is the SHA-256 of the body's canonical JSON (sorted keys, ``,``/``:``
separators, ASCII escapes); the same string is what the size is measured on.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_plus, urlsplit

import msgspec

from transforms.base import InvalidEvent, RenderedEvent
from transforms.collapse import Collapsed
from transforms.fields import DEFAULT_SEVERITY, SEVERITIES, text
from transforms.shrink import json_size, shrink_details

__all__ = [
    "DEFAULT_CLIENT",
    "MAX_EVENT_BYTES",
    "MAX_SUMMARY_CHARS",
    "ROUTING_KEY_ALLOWANCE",
    "canonical_json",
    "encoded_size",
    "jsonable",
    "payload_hash",
    "render_event",
]

MAX_EVENT_BYTES = 512_000
MAX_SUMMARY_CHARS = 1024
DEFAULT_CLIENT = "Alertmanager"
# ',"routing_key":"<32 characters>"' -- what the sender adds to the body
ROUTING_KEY_ALLOWANCE = len(',"routing_key":""') + 32
_ZERO_TIME_PREFIX = "0001-01-01"


def canonical_json(body: Mapping[str, Any]) -> str:
    """Sorted keys, compact separators, UTF-8 (the encoding the sender uses, keys sorted)."""
    return _canonical_bytes(body).decode("utf-8")


def _canonical_bytes(body: Mapping[str, Any]) -> bytes:
    return msgspec.json.encode(body, order="sorted")


def payload_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``body``."""
    return _sha256(_canonical_bytes(body))


def _sha256(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()


def encoded_size(body: Mapping[str, Any]) -> int:
    """Bytes the event takes on the wire, routing key included (compact JSON)."""
    return json_size(body) + ROUTING_KEY_ALLOWANCE


def jsonable(value: Any) -> Any:
    """``value`` as JSON data: mappings → dict with str keys, sequences → list, other → str.

    Always a copy for containers, so the body never shares a dict with the alert.
    """
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is dict:
        for key, item in value.items():  # the usual case, a label map: copy it in C
            if type(key) is not str or type(item) is not str:
                break
        else:
            return dict(value)
    if isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


def _as_text(value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text(value)


def _default_source(collapsed: Collapsed) -> str:
    labels = collapsed.event.alert.labels
    host = (
        urlsplit(collapsed.event.group.external_url).hostname if collapsed.event.group.external_url else None
    )
    return labels.get("instance") or labels.get("job") or host or "alertmanager"


def _first(fields: Mapping[str, Any], name: str, notes: list[str]) -> str:
    """The field as stripped text; notes a field that was set but rendered empty."""
    if name not in fields:
        return ""
    value = _as_text(fields[name]).strip()
    if not value:
        notes.append(f"{name} was empty; used the default")
    return value


def _severity(fields: Mapping[str, Any], default: str, notes: list[str]) -> str:
    if "severity" not in fields:
        return default
    raw = _as_text(fields["severity"])
    severity = raw.strip().lower()
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
    if not isinstance(raw, list | tuple):
        notes.append(f"{name} is not a list; dropped")
        return []
    result: list[dict[str, str]] = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            notes.append(f"{name}[{index}] is not a mapping; dropped")
            continue
        entry = {key: value for key in keys if (value := _as_text(item.get(key)).strip())}
        required = entry.get(keys[0], "")
        if not required:
            continue  # like Alertmanager: an entry whose href/src rendered empty is left out
        if name == "images" and not required.lower().startswith("https://"):
            notes.append(f"images[{index}] dropped: src {required[:100]!r} is not https")
            continue
        result.append(entry)
    return result


def _details(collapsed: Collapsed, notes: list[str]) -> dict[str, Any]:
    event = collapsed.event
    if "custom_details" in event.fields:
        details = jsonable(event.fields["custom_details"])
        if not isinstance(details, dict):
            notes.append("custom_details is not a mapping; sent under 'value'")
            details = {"value": details}
    else:
        details = {"labels": jsonable(event.alert.labels), "annotations": jsonable(event.alert.annotations)}
    if collapsed.grouped:
        details = {**details, "num_firing": collapsed.num_firing, "num_resolved": collapsed.num_resolved}
    return details


def _build_body(collapsed: Collapsed, default_severity: str, notes: list[str]) -> dict[str, Any]:
    """The Events v2 body before the size limit (fields checked, defaults filled in)."""
    event = collapsed.event
    fields = event.fields
    alert = event.alert
    group = event.group
    summary = (
        _first(fields, "summary", notes)
        or alert.annotations.get("summary", "").strip()
        or alert.labels.get("alertname", "").strip()
        or "Alertmanager alert"
    )
    if len(summary) > MAX_SUMMARY_CHARS:
        notes.append(f"summary was {len(summary)} characters; cut to {MAX_SUMMARY_CHARS}")
        summary = summary[: MAX_SUMMARY_CHARS - 1] + "…"
    payload: dict[str, Any] = {
        "summary": summary,
        "source": _first(fields, "source", notes) or _default_source(collapsed),
        "severity": _severity(fields, default_severity, notes),
    }
    if alert.starts_at and not alert.starts_at.startswith(_ZERO_TIME_PREFIX):
        payload["timestamp"] = alert.starts_at
    for name in ("component", "group", "class"):
        if value := _as_text(fields.get(name)).strip():
            payload[name] = value
    if details := _details(collapsed, notes):
        payload["custom_details"] = details
    body: dict[str, Any] = {
        "event_action": collapsed.action,
        "dedup_key": collapsed.dedup_key,
        "payload": payload,
    }
    body["client"] = _as_text(fields.get("client")).strip() or DEFAULT_CLIENT
    client_url = _as_text(fields.get("client_url")).strip()
    if not client_url and group.external_url:
        client_url = f"{group.external_url}/#/alerts?receiver={quote_plus(group.receiver, safe='')}"
    if client_url:
        body["client_url"] = client_url
    if links := _items(fields, "links", ("href", "text"), notes):
        body["links"] = links
    if images := _items(fields, "images", ("src", "href", "alt"), notes):
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


def render_event(
    collapsed: Collapsed, default_severity: str = DEFAULT_SEVERITY
) -> RenderedEvent | InvalidEvent:
    """The Events v2 event for one collapsed alert, or why PagerDuty would refuse it."""
    notes = list(collapsed.notes)
    body = _build_body(collapsed, default_severity, notes)
    rules = tuple(dict.fromkeys(name for member in collapsed.members for name in member.fired))
    fingerprints = tuple(member.alert.fingerprint for member in collapsed.members)
    canonical = _canonical_bytes(body)
    size = len(canonical) + ROUTING_KEY_ALLOWANCE
    reason = None if collapsed.dedup_key else "empty dedup_key (the alert has no fingerprint)"
    if reason is None and size > MAX_EVENT_BYTES:
        reason = _fit(body, size, notes)
        canonical = _canonical_bytes(body)
    if reason is not None:
        return InvalidEvent(
            collapsed.routing_key, collapsed.dedup_key, collapsed.action, body, reason, rules, fingerprints
        )
    return RenderedEvent(
        routing_key=collapsed.routing_key,
        dedup_key=collapsed.dedup_key,
        action=collapsed.action,
        body=body,
        payload_hash=_sha256(canonical),
        rules=rules,
        fingerprints=fingerprints,
        notes=tuple(notes),
    )
