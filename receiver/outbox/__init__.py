"""The ``Outbox`` seam: durable storage of events between intake and PagerDuty.

This package is the whole contract that the app, the dispatcher, the handlers and the CLI
use; nothing outside it names a backend. The Protocol and its values are defined in
:mod:`receiver.outbox.contract`; :func:`build_outbox` picks the configured backend.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from receiver.clock import Clock
from receiver.errors import ConfigError, Reason
from receiver.outbox.contract import (
    Depth,
    EnqueueResult,
    NoSuchItem,
    OpenReport,
    Outbox,
    OutboxItem,
    RequeueResult,
)

if TYPE_CHECKING:
    from receiver.crypto import Keyring
    from receiver.settings.model import RedisSettings

__all__ = [
    "Depth",
    "EnqueueResult",
    "NoSuchItem",
    "OpenReport",
    "Outbox",
    "OutboxItem",
    "RequeueResult",
    "build_outbox",
]


def build_outbox(
    backend: str,
    path: Path,
    *,
    keyring: Keyring | None,
    clock: Clock,
    keep_sends_for: float,
    on_unreadable: Callable[[int, Reason, str, str], None] | None = None,
    operator: bool = False,
    encrypt_plain: bool | None = None,
    redis: RedisSettings | None = None,
) -> Outbox:
    """The configured backend: ``sqlite`` on ``path``, ``redis`` as ``redis`` (``outbox.redis``) says.
    ``operator``: for a command beside a possibly running server — an existing outbox only, waiting
    longer for locks, and (unless ``encrypt_plain``) refusing a plain outbox when keys are configured
    instead of encrypting it (a Redis outbox never encrypts one in place)."""
    if backend == "sqlite":
        from receiver.outbox.sqlite import SQLiteOutbox

        return SQLiteOutbox(path, clock=clock, keyring=keyring, keep_sends_for=keep_sends_for,
                            on_unreadable=on_unreadable, operator=operator, encrypt_plain=encrypt_plain)
    if backend == "redis":
        from receiver.outbox.redis import RedisOutbox

        if redis is None or (redis.url is None and not redis.sentinels):
            raise ConfigError("config: outbox.redis.url: required with outbox.backend: redis "
                              "(or outbox.redis.sentinels and service_name)")
        return RedisOutbox(redis, clock=clock, keyring=keyring, keep_sends_for=keep_sends_for,
                           on_unreadable=on_unreadable)
    raise ValueError(f"unknown outbox backend {backend!r}")
