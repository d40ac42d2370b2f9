"""The typed container of everything the handlers use, stored under one ``AppKey``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from receiver.admission import IntakeGate
from receiver.audit import AuditSink
from receiver.breaker import CircuitBreaker
from receiver.clock import Clock
from receiver.crypto import Keyring
from receiver.dispatcher import Dispatcher
from receiver.limiter import Budget
from receiver.metrics import Metrics
from receiver.models import Limits
from receiver.offload import Worker
from receiver.outbox import Outbox
from receiver.rulebook import Rulebook
from receiver.settings import Settings
from receiver.status import RecentErrors
from receiver.supervisor import Supervisor

__all__ = ["STATE", "AppState"]


@dataclass(slots=True)
class AppState:
    settings: Settings
    metrics: Metrics
    rulebook: Rulebook
    outbox: Outbox
    dispatcher: Dispatcher
    supervisor: Supervisor  # keeps the dispatcher running; its problem makes /readyz answer 503
    log: logging.Logger
    dry_run: bool
    limiter: Budget  # this process's window, or the one shared in Redis (outbox.backend: redis)
    breaker: CircuitBreaker
    limits: Limits
    audit: AuditSink
    keyring: Keyring | None  # what seals stored alert content (None: stored in clear)
    gate: IntakeGate  # intake's admission: requests and body bytes at once
    worker: Worker  # the thread that parses and evaluates large bodies
    clock: Clock  # the injected clock (wall time on /status)
    errors: RecentErrors  # the last delivery errors, for /status


STATE = web.AppKey("pdrelay_state", AppState)
