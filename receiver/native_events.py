"""A native event (the body of ``POST /v1/events``) checked and turned into the outbox's event. Pure: no I/O.

The body is PagerDuty-shaped, with the routing key given by its configured *name*::

    {"routing_key": "<NAME>", "event_action": "trigger" | "resolve" | "change",
     "dedup_key"?, "payload": {...}, "links"?, "images"?, "client"?, "client_url"?}

- ``trigger``: ``payload.summary``, ``payload.source`` and ``payload.severity`` (critical, error,
  warning or info) are required; ``timestamp``, ``component``, ``group``, ``class`` and
  ``custom_details`` (an object) are optional. Without ``dedup_key`` one is made (a random UUID).
- ``resolve``: ``dedup_key`` is required; a ``payload``, when given, is checked as a trigger's.
- ``change``: a Change Event, chosen by ``event_action`` (PagerDuty's change body has none, so the
  action says which kind it is): ``payload.summary`` required, ``source``, ``timestamp`` and
  ``custom_details`` optional, ``links`` allowed; no ``dedup_key``, ``images``, ``client``
  or ``client_url``. Its outbox key is ``change:native:<UUID>`` (each goes once).
- ``acknowledge`` is refused for now: the outbox's delivery rules know trigger, resolve and change.

Nothing is cut or defaulted as :mod:`transforms.render` does for rendered alerts: the caller wrote the
event, so a field over PagerDuty's limits is refused with :class:`NativeEventError` naming the field.
The limits are render's: summary ≤ 1024 characters, links need ``href``, image ``src`` must be https,
the whole event (compact UTF-8 JSON plus a 32-character routing key) ≤ 512,000 bytes; ``dedup_key``
≤ 255 characters. Messages never repeat more than a short, escaped piece of what the caller sent.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

import msgspec

from receiver.errors import PayloadError
from transforms.base import RenderedEvent
from transforms.fields import SEVERITIES
from transforms.render import MAX_EVENT_BYTES, MAX_SUMMARY_CHARS, ROUTING_KEY_ALLOWANCE

__all__ = ["ACTIONS", "MAX_DEDUP_KEY_CHARS", "NativeEventError", "parse_native_event"]

ACTIONS = ("trigger", "resolve", "change")
MAX_DEDUP_KEY_CHARS = 255
MAX_TEXT_CHARS = 1024  # source, component, group, class, client, client_url, links' and images' fields
_MAX_TIMESTAMP_CHARS = 64
_TOP = frozenset({"routing_key", "event_action", "dedup_key", "payload", "links", "images", "client",
                  "client_url"})
_PAYLOAD = frozenset({"summary", "source", "severity", "timestamp", "component", "group", "class",
                      "custom_details"})
_CHANGE_TOP = frozenset({"routing_key", "event_action", "payload", "links"})
_CHANGE_PAYLOAD = frozenset({"summary", "source", "timestamp", "custom_details"})
_canonical = msgspec.json.Encoder(order="sorted").encode
_decode = msgspec.json.Decoder().decode


class NativeEventError(PayloadError):
    """A native event PagerDuty would refuse, or pdrelay cannot take: answered 400 with the message."""


def _shown(name: str) -> str:
    """A caller-given name fit for a message: escaped, at most 64 characters."""
    return repr(name[:64])


def _text(where: Mapping[str, Any], name: str, field: str, *, required: bool, limit: int = MAX_TEXT_CHARS
          ) -> str | None:
    value = where.get(name)
    if value is None:
        if required:
            raise NativeEventError(f"{field} is required", field)
        return None
    if not isinstance(value, str):
        raise NativeEventError(f"{field} must be a string", field)
    if not value.strip():
        raise NativeEventError(f"{field} must not be empty", field)
    if len(value) > limit:
        raise NativeEventError(f"{field} is {len(value)} characters, over the limit of {limit}", field)
    return value


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise NativeEventError(f"{field} must be an object", field)
    return value


def _unknown(given: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    extra = sorted(set(given) - allowed)
    if extra:
        raise NativeEventError(f"unknown field {_shown(extra[0])} in {where}", extra[0][:64])


def _items(body: Mapping[str, Any], name: str, keys: tuple[str, ...]) -> list[dict[str, str]] | None:
    raw = body.get(name)
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise NativeEventError(f"{name} must be a list", name)
    out: list[dict[str, str]] = []
    for index, item in enumerate(raw):
        where = f"{name}[{index}]"
        entry = _object(item, where)
        _unknown(entry, frozenset(keys), where)
        checked = {k: v for k in keys
                   if (v := _text(entry, k, f"{where}.{k}", required=k == keys[0])) is not None}
        if name == "images" and not checked["src"].lower().startswith("https://"):
            raise NativeEventError(f"{where}.src must be an https:// URL", f"{where}.src")
        out.append(checked)
    return out


def _payload(raw: Any, change: bool) -> dict[str, Any]:
    given = _object(raw, "payload")
    _unknown(given, _CHANGE_PAYLOAD if change else _PAYLOAD, "payload")
    payload: dict[str, Any] = {
        "summary": _text(given, "summary", "payload.summary", required=True, limit=MAX_SUMMARY_CHARS)}
    if (source := _text(given, "source", "payload.source", required=not change)) is not None:
        payload["source"] = source
    if not change:
        severity = _text(given, "severity", "payload.severity", required=True)
        if severity not in SEVERITIES:
            raise NativeEventError(f"payload.severity must be one of {', '.join(SEVERITIES)}", "payload.severity")
        payload["severity"] = severity
    if (stamp := _text(given, "timestamp", "payload.timestamp", required=False,
                       limit=_MAX_TIMESTAMP_CHARS)) is not None:
        try:
            datetime.fromisoformat(stamp)
        except ValueError:
            raise NativeEventError("payload.timestamp must be an ISO 8601 date and time",
                                   "payload.timestamp") from None
        payload["timestamp"] = stamp
    for name in ("component", "group", "class"):
        if (value := _text(given, name, f"payload.{name}", required=False)) is not None:
            payload[name] = value
    if "custom_details" in given:
        payload["custom_details"] = _object(given["custom_details"], "payload.custom_details")
    return payload


def _dedup_key(body: Mapping[str, Any]) -> str | None:
    return _text(body, "dedup_key", "dedup_key", required=False, limit=MAX_DEDUP_KEY_CHARS)


def parse_native_event(raw: bytes, routing_keys: Collection[str]) -> RenderedEvent:
    """The outbox event for ``raw``, or :class:`NativeEventError` saying what is wrong with it.

    ``routing_keys``: the configured names (empty: none configured, pdrelay runs dry, any name goes)."""
    try:
        decoded = _decode(raw)
    except msgspec.DecodeError:
        raise NativeEventError("body is not valid JSON") from None
    body = _object(decoded, "the body")
    action = body.get("event_action")
    if action == "acknowledge":
        raise NativeEventError("event_action 'acknowledge' is not supported yet: use trigger, resolve or change",
                               "event_action")
    if action not in ACTIONS:
        raise NativeEventError(f"event_action must be one of {', '.join(ACTIONS)}", "event_action")
    change = action == "change"
    _unknown(body, _CHANGE_TOP if change else _TOP, "the event")
    name = _text(body, "routing_key", "routing_key", required=True, limit=MAX_TEXT_CHARS)
    assert name is not None
    if routing_keys and name not in routing_keys:
        raise NativeEventError("unknown routing key name", "routing_key")
    event: dict[str, Any]
    if change:
        dedup_key = f"change:native:{uuid.uuid4()}"
        event = {"dedup_key": dedup_key, "payload": _payload(body.get("payload"), change=True)}
    else:
        given_key = _dedup_key(body)
        if action == "resolve" and given_key is None:
            raise NativeEventError("dedup_key is required to resolve", "dedup_key")
        dedup_key = given_key if given_key is not None else str(uuid.uuid4())
        event = {"event_action": action, "dedup_key": dedup_key}
        if action == "trigger" or "payload" in body:
            event["payload"] = _payload(body.get("payload"), change=False)
        for field in ("client", "client_url"):
            if (value := _text(body, field, field, required=False)) is not None:
                event[field] = value
        if (images := _items(body, "images", ("src", "href", "alt"))) is not None:
            event["images"] = images
    if (links := _items(body, "links", ("href", "text"))) is not None:
        event["links"] = links
    canonical = _canonical(event)
    size = len(canonical) + ROUTING_KEY_ALLOWANCE
    if size > MAX_EVENT_BYTES:
        raise NativeEventError(f"event is {size} bytes, over PagerDuty's {MAX_EVENT_BYTES}-byte limit")
    return RenderedEvent(name, dedup_key, action, event, hashlib.sha256(canonical).hexdigest())
