"""``create_app(settings, deps)``: the one place where pdrelay is wired together.

Reading top to bottom: metrics, rules, outbox, sender, dispatcher, routes, and the
``cleanup_ctx`` entries that open and close them in order (outbox first, dispatcher
last, so the dispatcher stops before the outbox closes and aiohttp lets in-flight
intake requests finish before any of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CollectorRegistry

from receiver import handlers
from receiver.breaker import CircuitBreaker
from receiver.clock import Clock, SystemClock
from receiver.dispatcher import Dispatcher
from receiver.limiter import RateLimiter
from receiver.metrics import Metrics
from receiver.outbox import Outbox
from receiver.outbox.sqlite import SQLiteOutbox
from receiver.pagerduty.events import DryRunSender, EventsSender, Sender
from receiver.rulebook import Rulebook
from receiver.settings import Settings
from receiver.state import STATE, AppState

__all__ = ["Deps", "create_app"]


@dataclass(slots=True)
class Deps:
    """What tests (or embedders) may replace; everything defaults to the real thing."""

    clock: Clock = field(default_factory=SystemClock)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("pdrelay"))
    sender: Sender | None = None
    outbox: Outbox | None = None


def create_app(settings: Settings, deps: Deps | None = None) -> web.Application:
    """Build the aiohttp application; raises ``RulesError`` if the rules do not load."""
    d = deps or Deps()
    pd = settings.pagerduty
    dry_run = pd.effective_dry_run
    metrics = Metrics(d.registry)
    metrics.dry_run.set(1 if dry_run else 0)
    rulebook = Rulebook(settings.rules.paths, metrics, d.log)
    outbox = d.outbox or SQLiteOutbox(settings.outbox.path, clock=d.clock,
                                      keep_sends_for=pd.rate_limit.longest_window)
    sender: Sender = d.sender or (
        DryRunSender() if dry_run
        else EventsSender(pd.events_url, timeout=pd.api_timeout, connect_timeout=pd.connect_timeout)
    )
    limiter = RateLimiter(pd.rate_limit, d.clock)
    endpoint = urlsplit(pd.events_url).hostname or pd.events_url
    breaker = CircuitBreaker(pd.failure_threshold, pd.recovery_timeout, name=endpoint, clock=d.clock)
    breaker.add_listener(metrics.breaker_changed)
    breaker.add_listener(
        lambda name, old, new: d.log.warning(
            "circuit breaker changed state; events stay queued while it is open" if new == "open"
            else "circuit breaker changed state",
            extra={"endpoint": name, "from": old.value, "to": new.value},
        )
    )
    metrics.breaker_changed(endpoint, breaker.state, breaker.state)
    dispatcher = Dispatcher(
        outbox, sender, pd.routing_keys, pd, metrics=metrics, clock=d.clock, log=d.log,
        limiter=limiter, breaker=breaker, dry_run=dry_run,
    )
    metrics.track_depth(lambda: (outbox.depth().queued, outbox.depth().dead))

    app = web.Application(client_max_size=settings.server.body_limit)
    app[STATE] = AppState(
        settings=settings, metrics=metrics, rulebook=rulebook, outbox=outbox,
        dispatcher=dispatcher, log=d.log, dry_run=dry_run, limiter=limiter, breaker=breaker,
    )
    app.add_routes(handlers.routes())

    async def outbox_ctx(_: web.Application) -> AsyncIterator[None]:
        await outbox.open()
        yield
        await outbox.close()

    async def sender_ctx(_: web.Application) -> AsyncIterator[None]:
        yield
        await sender.aclose()

    app.cleanup_ctx.extend([outbox_ctx, sender_ctx, _background("pdrelay-dispatcher", dispatcher.run)])
    if settings.rules.watch:
        app.cleanup_ctx.append(_background("pdrelay-rules-watch", rulebook.watch))
    return app


def _background(
    name: str, run: Callable[[], Coroutine[Any, Any, None]]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx entry that runs ``run()`` as a task while the app runs, then cancels it."""

    async def ctx(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run(), name=name)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx
