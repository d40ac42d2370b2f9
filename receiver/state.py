"""The typed container of everything the handlers use, stored under one ``AppKey``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from receiver.audit import AuditSink
from receiver.breaker import CircuitBreaker
from receiver.crypto import Keyring
from receiver.dispatcher import Dispatcher
from receiver.limiter import RateLimiter
from receiver.metrics import Metrics
from receiver.models import Limits
from receiver.outbox import Outbox
from receiver.rulebook import Rulebook
from receiver.settings import Settings

__all__ = ["STATE", "AppState"]


@dataclass(slots=True)
class AppState:
    settings: Settings
    metrics: Metrics
    rulebook: Rulebook
    outbox: Outbox
    dispatcher: Dispatcher
    log: logging.Logger
    dry_run: bool
    limiter: RateLimiter
    breaker: CircuitBreaker
    limits: Limits
    audit: AuditSink
    keyring: Keyring | None  # what seals stored alert content (None: stored in clear)


STATE = web.AppKey("pdrelay_state", AppState)
