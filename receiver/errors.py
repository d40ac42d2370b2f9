"""pdrelay's exception tree and the closed set of delivery failure reasons.

::

    PdrelayError
    ├── ConfigError          invalid configuration (names the key); refused at start and reload
    ├── PayloadError         a request body that is not an Alertmanager v4 notification (400)
    │   └── PayloadTooLarge  over the body limit (413)
    └── OutboxUnavailable    the outbox cannot commit; intake answers 503 so Alertmanager retries

Delivery outcomes are not exceptions: the sender classifies every PagerDuty answer
once, at its boundary, into a :class:`Reason` (see ``receiver.pagerduty.events``).
The same reason string is the ``reason`` metric label and the audit field.
"""

from __future__ import annotations

import enum

__all__ = [
    "ConfigError",
    "OutboxUnavailable",
    "PayloadError",
    "PayloadTooLarge",
    "PdrelayError",
    "Reason",
]


class PdrelayError(Exception):
    """Base of every error pdrelay raises on purpose."""


class ConfigError(PdrelayError):
    """The configuration is invalid; the message names the key."""


class PayloadError(PdrelayError):
    """A request body is not an Alertmanager webhook v4 notification."""

    status = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_json(self) -> dict[str, str]:
        out = {"error": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


class PayloadTooLarge(PayloadError):
    status = 413


class OutboxUnavailable(PdrelayError):
    """The outbox could not commit; nothing was accepted."""


class Reason(enum.StrEnum):
    """Why a delivery attempt did not succeed (closed set; metric label and audit field)."""

    RATE_LIMITED = "rate_limited"  # 429: retried later
    SERVER_ERROR = "server_error"  # 5xx: retried
    TIMEOUT = "timeout"  # request timed out or 408: retried
    CONNECTION = "connection"  # refused, reset, DNS: retried
    CLIENT_ERROR = "client_error"  # other permanent 4xx: dead-lettered
    AUTH_ERROR = "auth_error"  # 401/403/404: wrong key or region, dead-lettered
    INVALID_EVENT = "invalid_event"  # 400 or not renderable: dead-lettered
    UNKNOWN_ROUTING_KEY = "unknown_routing_key"  # a rule named a key the config lacks
    EXPIRED = "expired"  # retryable, but over retry_attempts or max_age
    UNDECRYPTABLE = "undecryptable"  # the stored value failed authentication: altered on disk or moved
    UNREADABLE = "unreadable"  # the stored value is not an event of its row: not UTF-8 JSON, or the wrong shape

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE


_RETRYABLE = frozenset({Reason.RATE_LIMITED, Reason.SERVER_ERROR, Reason.TIMEOUT, Reason.CONNECTION})
