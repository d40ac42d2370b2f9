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


_DECODER = msgspec.json.Decoder(_Message)
_PATH_RE = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def parse_notification(body: bytes, limits: Limits | None = None) -> Group:
    """Decode one webhook body, or raise :class:`PayloadError` naming the bad field."""
    if not body.strip():
        raise PayloadError("empty body: expected an Alertmanager webhook JSON object")
    try:
        msg = _DECODER.decode(body)
    except UnicodeDecodeError as exc:
        raise _utf8_error(body) or PayloadError("body is not valid UTF-8") from exc
    except msgspec.ValidationError as exc:
        raise _validation_error(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise _utf8_error(body) or PayloadError(f"invalid JSON: {exc}") from exc
    if msg.version != "4":
        raise PayloadError(f"unsupported webhook version {msg.version!r}: expected \"4\"", "version")
    lim = limits or Limits()
    if len(msg.alerts) > lim.max_alerts:
        raise PayloadTooLarge(
            f"too many alerts: {len(msg.alerts)} > {lim.max_alerts} (server.max_alerts; set Alertmanager's "
            "webhook max_alerts below it)", "alerts")
    _check_sizes(msg, lim)
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


def _check_sizes(msg: _Message, lim: Limits) -> None:
    """Refuse any label or annotation over its limit, naming it (413)."""
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
