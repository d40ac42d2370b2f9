"""Parsing of Alertmanager webhook bodies (version 4) into the rule engine's :class:`Group`.

Accepts what Alertmanager 0.25 sends and what 0.32+ adds (``notification_reason``,
``routeLabels``); unknown fields are ignored. Anything else is a
:class:`~receiver.errors.PayloadError` whose ``field`` names the offending JSON path
(``alerts[0].labels``), so intake can answer 400 with a precise message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

import msgspec

from receiver.errors import PayloadError, PayloadTooLarge
from transforms.base import Alert, Group

__all__ = ["Limits", "parse_notification"]


class _Message(msgspec.Struct):
    version: str
    receiver: str
    status: Literal["firing", "resolved"]
    groupKey: str
    alerts: list[Alert]  # decoded straight into the rule engine's type
    groupLabels: dict[str, str] = {}
    commonLabels: dict[str, str] = {}
    commonAnnotations: dict[str, str] = {}
    externalURL: str = ""
    truncatedAlerts: int = 0
    notification_reason: str | None = None
    routeLabels: dict[str, str] = {}


class Limits(msgspec.Struct, frozen=True):
    """Bounds on one notification, beyond the byte limit enforced by the server (``server.*`` in the config)."""

    max_alerts: int = 10_000
    max_label_bytes: int = 16 * 1024  # one label: name + value, UTF-8
    max_annotation_bytes: int = 256 * 1024  # one annotation: name + value, UTF-8
    max_labels: int = 128  # labels in one map: an alert's labels or annotations, a group-level map


class _AlertMaps(msgspec.Struct):
    """An alert as far as counting its maps goes: their JSON text, not decoded."""

    labels: msgspec.Raw = msgspec.Raw(b"{}")
    annotations: msgspec.Raw = msgspec.Raw(b"{}")


class _Maps(msgspec.Struct):
    """A notification as far as counting its maps goes."""

    version: str = ""
    alerts: list[_AlertMaps] = []
    groupLabels: msgspec.Raw = msgspec.Raw(b"{}")
    commonLabels: msgspec.Raw = msgspec.Raw(b"{}")
    commonAnnotations: msgspec.Raw = msgspec.Raw(b"{}")
    routeLabels: msgspec.Raw = msgspec.Raw(b"{}")


_DECODER = msgspec.json.Decoder(_Message)
_MAPS_DECODER = msgspec.json.Decoder(_Maps)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')  # a JSON string, escapes included
_TOO_DEEP = "invalid JSON: nested too deeply (an Alertmanager webhook body is a few levels deep)"
_PATH_RE = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def parse_notification(body: bytes, limits: Limits | None = None) -> Group:
    """Decode one webhook body, or raise :class:`PayloadError` naming the bad field."""
    if not body.strip():
        raise PayloadError("empty body: expected an Alertmanager webhook JSON object")
    lim = limits or Limits()
    _count_maps(body, lim)
    try:
        msg = _DECODER.decode(body)
    except RecursionError as exc:  # msgspec skips unknown fields recursively: arrays in arrays in arrays…
        raise PayloadError(_TOO_DEEP) from exc
    except UnicodeDecodeError as exc:
        raise _utf8_error(body) or PayloadError("body is not valid UTF-8") from exc
    except msgspec.ValidationError as exc:
        raise _validation_error(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise _utf8_error(body) or PayloadError(f"invalid JSON: {exc}") from exc
    if msg.version != "4":
        raise PayloadError(f"unsupported webhook version {msg.version!r}: expected \"4\"", "version")
    if len(msg.alerts) > lim.max_alerts:
        raise _too_many_alerts(len(msg.alerts), lim)
    _check_maps(msg, lim)
    if msg.truncatedAlerts < 0:
        raise PayloadError("must not be negative", "truncatedAlerts")
    return Group(
        receiver=msg.receiver,
        status=msg.status,
        group_key=msg.groupKey,
        group_labels=msg.groupLabels,
        common_labels=msg.commonLabels,
        common_annotations=msg.commonAnnotations,
        external_url=msg.externalURL,
        alerts=msg.alerts,
        truncated_alerts=msg.truncatedAlerts,
        notification_reason=msg.notification_reason,
        route_labels=msg.routeLabels,
    )


def _count_maps(body: bytes, lim: Limits) -> None:
    """Refuse a body with too many alerts, or a map with too many entries, before decoding it (413).

    Decoding a map of 600,000 labels takes 140 MiB and most of a second; counting its entries in its
    JSON text takes neither. A label is two JSON strings (four quotes): a body with no more quotes
    than ``4 * max_labels`` (every small notification) cannot hold a map over the limit, and is not
    looked at. Otherwise the maps are found undecoded (``msgspec.Raw``) and their strings counted:
    their quotes when none is escaped, else the strings themselves. A map's entries are half its
    strings: exact for a map of strings, which is all a notification's maps may be. A body this
    pass cannot read is left to the full decode, which names what is wrong with it.
    """
    if body.count(b'"') <= 4 * lim.max_labels:
        return
    try:
        shape = _MAPS_DECODER.decode(body)
    except (msgspec.DecodeError, RecursionError, ValueError):  # ValueError: UnicodeDecodeError among others
        return
    if shape.version != "4":
        return
    if len(shape.alerts) > lim.max_alerts:
        raise _too_many_alerts(len(shape.alerts), lim)
    maps = [("groupLabels", shape.groupLabels), ("commonLabels", shape.commonLabels),
            ("commonAnnotations", shape.commonAnnotations), ("routeLabels", shape.routeLabels)]
    for i, alert in enumerate(shape.alerts):
        maps += [(f"alerts[{i}].labels", alert.labels), (f"alerts[{i}].annotations", alert.annotations)]
    for where, raw in maps:
        text = bytes(raw)
        strings = text.count(b'"') // 2 if b"\\" not in text else _STRING.subn(b"", text)[1]
        if strings // 2 > lim.max_labels:
            raise _too_many_entries(where, strings // 2, lim)


def _too_many_alerts(count: int, lim: Limits) -> PayloadTooLarge:
    return PayloadTooLarge(f"too many alerts: {count} > {lim.max_alerts} (server.max_alerts; set Alertmanager's "
                           "webhook max_alerts below it)", "alerts")


def _too_many_entries(where: str, count: int, lim: Limits) -> PayloadTooLarge:
    noun = "annotations" if where.endswith("nnotations") else "labels"
    return PayloadTooLarge(f"{where}: {count} {noun} is over the limit of {lim.max_labels} (server.max_labels)",
                           where)


def _check_maps(msg: _Message, lim: Limits) -> None:
    """Refuse a map with too many entries, then any label or annotation over its size, naming it (413)."""
    maps: list[tuple[str, Mapping[str, str], int, str]] = [
        ("groupLabels", msg.groupLabels, lim.max_label_bytes, "server.max_label_bytes"),
        ("commonLabels", msg.commonLabels, lim.max_label_bytes, "server.max_label_bytes"),
        ("commonAnnotations", msg.commonAnnotations, lim.max_annotation_bytes, "server.max_annotation_bytes"),
        ("routeLabels", msg.routeLabels, lim.max_label_bytes, "server.max_label_bytes"),
    ]
    for i, alert in enumerate(msg.alerts):
        maps.append((f"alerts[{i}].labels", alert.labels, lim.max_label_bytes, "server.max_label_bytes"))
        maps.append((f"alerts[{i}].annotations", alert.annotations, lim.max_annotation_bytes,
                     "server.max_annotation_bytes"))
    for where, mapping, _, _ in maps:
        if len(mapping) > lim.max_labels:  # what _count_maps found already, unless a key came twice
            raise _too_many_entries(where, len(mapping), lim)
    for where, mapping, limit, key in maps:
        for name, value in mapping.items():
            # Characters first (cheap); bytes only when the characters alone might not fit.
            if len(name) + len(value) > limit // 4 and len(name.encode()) + len(value.encode()) > limit:
                size = len(name.encode()) + len(value.encode())
                raise PayloadTooLarge(f"{where}.{name}: {size} bytes is over the limit of {limit} ({key})",
                                      f"{where}.{name}")


def _utf8_error(body: bytes) -> PayloadError | None:
    """The error naming the first byte that is not UTF-8, if there is one."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return PayloadError(f"body is not valid UTF-8 (byte {exc.start})")
    return None


def _validation_error(text: str) -> PayloadError:
    m = _PATH_RE.match(text)
    message, path = (m.group("msg"), m.group("path")) if m else (text, None)
    if path is None and (missing := re.search(r"missing required field `([^`]+)`", message)):
        return PayloadError(f"missing required field {missing.group(1)!r}", missing.group(1))
    # msgspec writes a mapping's values as ``[...]``: name the mapping itself.
    field = path.lstrip(".").replace("[...]", "") if path else None
    if field is not None and (missing := re.search(r"missing required field `([^`]+)`", message)):
        field = f"{field}.{missing.group(1)}" if field else missing.group(1)
        return PayloadError(f"missing required field {missing.group(1)!r}", field)
    if message.startswith("Expected `object`") and not field:
        return PayloadError("expected a JSON object (an Alertmanager webhook body)")
    return PayloadError(message, field or None)
