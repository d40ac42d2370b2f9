"""``create_app(settings, deps)``: the one place where pdrelay is wired together.

Reading top to bottom: metrics, the audit log, rules, the keyring and the outbox it
seals, sender, the rate budget (in Redis, shared by every replica, when the outbox is there;
else in the process) and breaker, dispatcher, the auth middleware, routes, and the
``cleanup_ctx`` entries that open and close them in order (audit log first so it closes
last, then outbox; dispatcher last, so it stops before the outbox closes and aiohttp lets
in-flight intake requests finish before any of it).
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
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry

from receiver import handlers
from receiver.admission import IntakeGate
from receiver.audit import AuditLog, AuditSink, GuardedAudit, NullAudit, RefusalAggregator, head_lost
from receiver.auth import AuthDecision, Authenticator, auth_middleware
from receiver.breaker import BreakerState, CircuitBreaker
from receiver.clock import Clock, SystemClock
from receiver.crypto import Keyring
from receiver.dispatcher import Dispatcher
from receiver.errors import Reason
from receiver.limiter import Budget, RateLimiter
from receiver.metrics import Metrics
from receiver.models import Limits
from receiver.offload import Worker
from receiver.outbox import build_outbox
from receiver.pagerduty.events import DryRunSender, EventsSender, Sender
from receiver.rulebook import Rulebook
from receiver.settings import ENDPOINT_GROUPS, Settings
from receiver.state import STATE, AppState
from receiver.status import RecentErrors
from receiver.supervisor import Sleep, Supervisor

__all__ = ["Deps", "create_app"]

INTAKE_PATH = "/v1/alertmanager"

_Ctx = Callable[[web.Application], AsyncIterator[None]]  # a cleanup_ctx entry


@dataclass(slots=True)
class Deps:
    """What tests (or embedders) may replace; everything defaults to the real thing."""

    clock: Clock = field(default_factory=SystemClock)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("pdrelay"))
    sender: Sender | None = None
    audit: AuditSink | None = None  # default: the file at settings.audit_path (NullAudit if audit.enabled is false)
    sleep: Sleep = asyncio.sleep  # the dispatcher supervisor's backoff between restarts


def create_app(settings: Settings, deps: Deps | None = None) -> web.Application:
    """Build the aiohttp application; raises ``RulesError`` if the rules do not load."""
    d = deps or Deps()
    pd = settings.pagerduty
    dry_run = pd.effective_dry_run
    metrics = Metrics(d.registry, routing_keys=pd.routing_keys.keys())
    metrics.dry_run.set(1 if dry_run else 0)
    audit_failed = _audit_failed(metrics, d.log)
    # auth.refused entries counted by the interval: a flood of refusals cannot rotate the real entries out.
    heads = _Heads(metrics.audit_head_written)  # the outbox listens too, once it has read the head it kept
    audit_log = None if d.audit is not None else _audit_log(settings, d.clock, heads, audit_failed)
    audit_start = audit_log.chain_head if audit_log is not None else ""  # before this run writes to the file
    audit = RefusalAggregator(GuardedAudit(d.audit or audit_log or NullAudit(), audit_failed), d.clock)
    rulebook = Rulebook(settings.rules.paths, metrics, d.log, audit, routing_keys=pd.routing_keys.keys(),
                        allow_plugins=settings.rules.allow_plugins, clock=d.clock)
    keyring = Keyring.from_secrets(settings.security.encryption_keys)
    outbox = build_outbox(settings.outbox.backend, settings.outbox.path, keyring=keyring, clock=d.clock,
                          keep_sends_for=pd.rate_limit.longest_window,
                          on_unreadable=_unreadable_reporter(metrics, d.log, audit), redis=settings.outbox.redis)
    sender: Sender = d.sender or (
        DryRunSender() if dry_run
        else EventsSender(pd.events_url, timeout=pd.api_timeout, connect_timeout=pd.connect_timeout)
    )
    limiter, limiter_ctx = _budget(settings, d, metrics)
    endpoint = urlsplit(pd.events_url).hostname or pd.events_url
    breaker = CircuitBreaker(pd.failure_threshold, pd.recovery_timeout, name=endpoint, clock=d.clock)
    breaker.add_listener(metrics.breaker_changed)
    breaker.add_listener(_breaker_reporter(d.log, audit))
    metrics.breaker_changed(endpoint, breaker.state, breaker.state)
    errors = RecentErrors(d.clock, frozenset(pd.routing_keys))
    dispatcher = Dispatcher(
        outbox, sender, pd.routing_keys, pd, metrics=metrics, clock=d.clock, log=d.log,
        limiter=limiter, breaker=breaker, dry_run=dry_run, audit=audit, errors=errors,
    )
    supervisor = Supervisor("dispatcher", dispatcher.run, log=d.log, on_restart=metrics.dispatcher_restarts.inc,
                            sleep=d.sleep, on_stop=dispatcher.stop)
    metrics.track_depth(lambda: (outbox.depth().queued, outbox.depth().dead))
    metrics.track_keys(outbox.depth_by_key, d.clock.now)

    worker = Worker()
    # Bodies are never inflated: intake refuses any Content-Encoding (415) unread, a gzip bomb included.
    app = web.Application(client_max_size=settings.server.body_limit, handler_args={"auto_decompress": False})
    if settings.auth.enabled:  # without auth nothing is installed: no cost per request
        authenticator = Authenticator(settings.auth, settings.security)
        # First, so that no other middleware runs for a request that is refused.
        app.middlewares.insert(0, auth_middleware(authenticator, _auth_recorder(metrics, d.log, audit)))
    app[STATE] = AppState(
        settings=settings, metrics=metrics, rulebook=rulebook, outbox=outbox,
        dispatcher=dispatcher, supervisor=supervisor, log=d.log, dry_run=dry_run, limiter=limiter, breaker=breaker,
        limits=Limits(max_alerts=settings.server.max_alerts, max_label_bytes=settings.server.max_label_bytes,
                      max_annotation_bytes=settings.server.max_annotation_bytes, max_labels=settings.server.max_labels),
        audit=audit,
        keyring=keyring,
        gate=IntakeGate(settings.server.max_concurrent_intake, settings.server.body_limit),
        worker=worker,
        clock=d.clock,
        errors=errors,
    )
    app.add_routes(_counting_intake(handlers.routes(), metrics))

    async def audit_ctx(_: web.Application) -> AsyncIterator[None]:
        yield
        audit.close()  # last: the dispatcher's final settles are recorded first

    async def outbox_ctx(_: web.Application) -> AsyncIterator[None]:
        done = await outbox.open()
        if done.encrypted_now:
            d.log.warning("the outbox was stored in clear: encrypted it in place",
                          extra={"events": done.events, "notifications": done.notifications, "states": done.states})
        if done.resealed:
            d.log.warning("the outbox's events were sealed again, bound to their ids, with keyed payload hashes",
                          extra={"events": done.resealed})
        if audit_log is not None:
            kept = await outbox.audit_head()
            lost = None if kept is None else head_lost(kept, audit_start)
            if lost is not None:
                d.log.error("the audit log lost entries since the outbox kept its head: " + lost,
                            extra={"audit_path": str(settings.audit_path), "kept_head": kept,
                                   "file_head": audit_start})
                audit.record("audit.head_lost", actor=None, kept_head=kept, file_head=audit_start,
                             problem=lost)
            heads.listeners.append(outbox.note_audit_head)
            outbox.note_audit_head(audit_log.chain_head)
        yield
        await outbox.close()

    async def sender_ctx(_: web.Application) -> AsyncIterator[None]:
        yield
        await sender.aclose()

    async def worker_ctx(_: web.Application) -> AsyncIterator[None]:
        yield
        worker.close()  # after in-flight intake requests finished; before the outbox closes

    app.cleanup_ctx.extend([audit_ctx, outbox_ctx, worker_ctx, sender_ctx, limiter_ctx,
                            _background("pdrelay-dispatcher", supervisor.run, supervisor.stop)])
    if settings.rules.watch:
        app.cleanup_ctx.append(_background("pdrelay-rules-watch", rulebook.watch))
    return app


def _budget(settings: Settings, d: Deps, metrics: Metrics) -> tuple[Budget, _Ctx]:
    """The rate budget and the cleanup_ctx entry that closes what it holds: with ``outbox.backend: redis``
    the window shared by every replica, in the outbox's Redis (its connection settings, its key prefix, a
    pool of its own); else this process's."""
    rate_limit = settings.pagerduty.rate_limit
    if settings.outbox.backend != "redis":
        return RateLimiter(rate_limit, d.clock), _nothing
    # Imported here only: a SQLite deployment never loads redis-py.
    from receiver.outbox.redis.connect import connect
    from receiver.sharedlimit import SharedRateLimiter

    client, close = connect(settings.outbox.redis)
    shared = SharedRateLimiter(rate_limit, d.clock, client, settings.outbox.redis.key_prefix,
                               names=settings.pagerduty.routing_keys.keys(), on_error=metrics.limiter_store_errors.inc,
                               log=d.log)

    async def ctx(_: web.Application) -> AsyncIterator[None]:
        yield
        await close()  # after the dispatcher stopped (its entry comes later, so it is cleaned up first)

    return shared, ctx


async def _nothing(_: web.Application) -> AsyncIterator[None]:
    yield


class _Heads:
    """The audit log's ``on_head``: tells each listener the chain's new head."""

    def __init__(self, *listeners: Callable[[str], None]) -> None:
        self.listeners = list(listeners)

    def __call__(self, head: str) -> None:
        for listener in self.listeners:
            listener(head)


def _audit_log(settings: Settings, clock: Clock, on_head: Callable[[str], None],
               failed: Callable[[str, BaseException], None]) -> AuditLog | None:
    """The audit file of the settings (keyed with ``audit.hmac_key``), its head told to ``on_head``."""
    if not settings.audit.enabled:
        return None
    log = AuditLog(settings.audit_path, clock=clock, max_bytes=settings.audit.max_size,
                   backups=settings.audit.backups, batch_on_loop=True, on_error=failed,
                   on_head=on_head, hmac_key=settings.audit.hmac_key)
    on_head(log.chain_head)  # where the file ends at start: a drop since the last run shows
    return log


def _breaker_reporter(log: logging.Logger, audit: AuditSink) -> Callable[[str, BreakerState, BreakerState], None]:
    """Log and audit each change of the breaker's state."""

    def report(name: str, old: BreakerState, new: BreakerState) -> None:
        log.warning("circuit breaker changed state; events stay queued while it is open" if new == "open"
                    else "circuit breaker changed state", extra={"endpoint": name, "from": old.value, "to": new.value})
        audit.record("breaker.changed", actor=None, endpoint=name, **{"from": old.value, "to": new.value})

    return report


def _counting_intake(routes: list[web.RouteDef], metrics: Metrics) -> list[web.RouteDef]:
    """``routes`` with the handler of ``POST /v1/alertmanager`` counting its answers by status code (the auth
    middleware's refusals are counted by :func:`_auth_recorder`). No middleware: other paths pay nothing."""
    return [web.RouteDef(r.method, r.path, _intake_answers(r.handler, metrics), r.kwargs)
            if (r.method, r.path) == ("POST", INTAKE_PATH) else r for r in routes]


def _intake_answers(handler: Handler, metrics: Metrics) -> Handler:
    async def count(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            metrics.intake_answered(exc.status)
            raise
        except Exception:
            metrics.intake_answered(500)  # aiohttp answers 500 for it
            raise
        metrics.intake_answered(response.status)
        return response

    return count


def _auth_recorder(metrics: Metrics, log: logging.Logger, audit: AuditSink) -> Callable[[AuthDecision], None]:
    """Count every auth decision; log and audit each refusal (never a credential)."""
    allowed = {g: metrics.auth.labels(g, "allowed") for g in ENDPOINT_GROUPS}
    refused = {g: metrics.auth.labels(g, "refused") for g in ENDPOINT_GROUPS}

    def record(decision: AuthDecision) -> None:
        if decision.allowed:
            allowed[decision.group].inc()
            return
        refused[decision.group].inc()
        if decision.group == "intake":
            metrics.intake_answered(decision.status)
        metrics.auth_refused.labels(decision.group, decision.reason).inc()
        log.warning("auth refused", extra={
            "group": decision.group, "status": decision.status, "reason": decision.reason,
            "auth_method": decision.method, "identity": decision.identity, "remote": decision.remote,
        })
        audit.record("auth.refused", actor=decision.identity, group=decision.group, status=decision.status,
                     reason=decision.reason, method=decision.method, remote=decision.remote)

    return record


def _audit_failed(metrics: Metrics, log: logging.Logger) -> Callable[[str, BaseException], None]:
    def failed(event: str, exc: BaseException) -> None:
        metrics.audit_errors.inc()
        log.error("audit record failed; the entry is lost", extra={"audit_event": event, "error": str(exc)})

    return failed


def _unreadable_reporter(metrics: Metrics, log: logging.Logger,
                         audit: AuditSink) -> Callable[[int, Reason, str, str], None]:
    """A queued row that cannot be sent was dead-lettered instead (reason ``undecryptable`` or ``unreadable``):
    count, log, audit it."""

    def report(item_id: int, reason: Reason, error: str, routing_key: str) -> None:
        metrics.dead_lettered(routing_key, reason)
        log.error("stored event fails authentication (altered on disk, or moved or copied from another row); "
                  "dead-lettered, never sent" if reason is Reason.UNDECRYPTABLE else
                  "stored event cannot be read (not UTF-8 JSON, or not the event of its row); dead-lettered, "
                  "never sent", extra={"item_id": item_id, "reason": reason.value, "error": error})
        audit.record("event.dead_lettered", actor=None, item_id=item_id, reason=reason.value, error=error)

    return report


def _background(
    name: str, run: Callable[[], Coroutine[Any, Any, None]], stop: Callable[[], None] = lambda: None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx entry that runs ``run()`` as a task while the app runs, then stops it: ``stop()`` (which
    ends it even if the cancellation is lost inside a library call), then a cancellation."""

    async def ctx(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run(), name=name)
        yield
        stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx
