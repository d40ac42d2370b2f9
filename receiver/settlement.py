"""What the dispatcher records once it knows how a delivery ended.

:class:`Settlement` turns an outcome into outbox writes and their trail: an ack (2xx, or a superseded
trigger skipped unsent), a retry with exponential backoff and jitter (5xx, timeouts, connection errors), a
pause of the whole key on a 429, or a dead letter (400 and other permanent answers, a routing key name the
config lacks, retries or ``max_age`` exhausted). Each comes with its metrics, audit entry, log line, and for
failures an entry in the ring of recent errors that /status shows (:class:`~receiver.status.RecentErrors`).

Every outbox write is retried until the outbox takes it (:func:`~receiver.supervisor.until_available`):
an unsettled item would only be sent again. When to send is :mod:`receiver.dispatcher`'s business.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from receiver.audit import AuditSink
from receiver.clock import Clock
from receiver.errors import Reason
from receiver.limiter import Budget
from receiver.metrics import Metrics
from receiver.outbox import Outbox, OutboxItem
from receiver.pagerduty.events import SendResult
from receiver.settings import PagerDutySettings
from receiver.status import RecentErrors
from receiver.supervisor import until_available

__all__ = ["Settlement", "audit_fields", "backoff_delay"]

_T = TypeVar("_T")


def backoff_delay(attempt: int, initial: float, maximum: float, rand: Callable[[], float]) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, half of it jittered."""
    base = min(maximum, initial * 2.0 ** (attempt - 1))
    return base / 2 + rand() * base / 2


def audit_fields(item: OutboxItem) -> dict[str, Any]:
    """What the audit log says of an event: ids and names, never its content (the dedup key only hashed,
    as it may be built from labels): ``sha256(dedup_key)`` can still be matched by whoever knows the key."""
    return {"item_id": item.id, "routing_key": item.routing_key, "action": item.action,
            "dedup_key_sha256": hashlib.sha256(item.dedup_key.encode()).hexdigest()[:16]}


class Settlement:
    """Settles outbox items after a send (or instead of one) and records how each ended."""

    def __init__(
        self,
        outbox: Outbox,
        settings: PagerDutySettings,
        *,
        metrics: Metrics,
        clock: Clock,
        log: logging.Logger,
        limiter: Budget,
        audit: AuditSink,
        errors: RecentErrors,
        rand: Callable[[], float],
        dry_run: bool,
    ) -> None:
        self._outbox = outbox
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._log = log
        self._limiter = limiter
        self._audit = audit
        self._errors = errors
        self._rand = rand
        self._dry_run = dry_run

    async def settle(self, op: Callable[[], Awaitable[_T]]) -> _T:
        """Run the outbox write ``op`` until the outbox takes it."""
        return await until_available(op, lambda: self._metrics.outbox_failed("settle"))

    async def superseded(self, item: OutboxItem) -> None:
        """Settle a trigger whose resolve is queued behind it without sending it (opt-in)."""
        await self.settle(lambda: self._outbox.ack(item))
        self._metrics.events_superseded.inc()
        self._audit.record("event.superseded", **audit_fields(item))
        self._log.warning(
            "trigger not sent: its resolve is already queued (pagerduty.skip_superseded_triggers)",
            extra={"routing_key": item.routing_key, "dedup_key": item.dedup_key, "item_id": item.id},
        )

    async def unknown_key(self, item: OutboxItem) -> None:
        """Dead-letter ``item``: its routing key name is not in the config (nothing was sent)."""
        self._log.error(
            "rule names a routing key the config does not define; dead-lettered",
            extra={"routing_key": item.routing_key, "dedup_key": item.dedup_key, "item_id": item.id},
        )
        await self.dead(item, Reason.UNKNOWN_ROUTING_KEY, None, f"routing key {item.routing_key!r} is not configured")

    async def result(self, item: OutboxItem, result: SendResult) -> None:
        """Settle ``item`` as PagerDuty's answer ``result`` says: ack, retry later, or dead letter."""
        if result.ok:
            await self._delivered(item, result)
            return
        assert result.reason is not None
        self._metrics.events_failed.labels(result.reason.value).inc()
        self._errors.add(item.routing_key, result.reason,
                         f"PagerDuty {result.status}: {result.detail}" if result.status else result.detail)
        if result.retryable:
            await self._retry(item, result)
        else:
            if result.reason is Reason.AUTH_ERROR:
                self._log.error(
                    "PagerDuty refused the routing key (wrong key or region?)",
                    extra={"routing_key": item.routing_key, "status": result.status},
                )
            await self.dead(item, result.reason, result.status, result.detail)

    async def _delivered(self, item: OutboxItem, result: SendResult) -> None:
        if await self.settle(lambda: self._outbox.ack(item, self._settings.settle_delay)):
            self._log.warning(
                "resolve delivered; it goes once more after the settle delay, because a trigger "
                "attempt for this key timed out and may still land after it",
                extra={"routing_key": item.routing_key, "dedup_key": item.dedup_key,
                       "settle_delay": self._settings.settle_delay},
            )
        fields = {"routing_key": item.routing_key, "dedup_key": item.dedup_key, "action": item.action,
                  "item_id": item.id}
        if self._dry_run:
            self._log.info("dry-run: would send event", extra={**fields, "event": item.body})
            return
        self._metrics.sent(item.routing_key)
        self._audit.record("event.sent", **audit_fields(item), status=result.status, attempts=item.attempts + 1)
        self._log.info("event delivered", extra={**fields, "attempts": item.attempts + 1})

    async def _retry(self, item: OutboxItem, result: SendResult) -> None:
        assert result.reason is not None
        reason = result.reason
        attempts = item.attempts + 1
        now = self._clock.now()
        if result.reason is Reason.RATE_LIMITED:
            # The key's budget is spent (by someone else too, perhaps): back the whole key off
            # and keep its queue. A 429 does not count towards retry_attempts; max_age does.
            pause = self._settings.backoff_on_429
            self._metrics.throttled(item.routing_key)
            await self._limiter.pause(item.routing_key, pause)
            if now - item.created_at >= self._settings.max_age:
                detail = f"gave up after {attempts} attempts; last: {result.reason.value}: {result.detail}"
                await self.dead(item, Reason.EXPIRED, result.status, detail)
                return
            await self.settle(lambda: self._outbox.retry_later(item, now + pause, reason, result.status,
                                                               result.detail))
            self._log.warning(
                "PagerDuty rate-limited the key; it pauses, its queue is kept",
                extra={"routing_key": item.routing_key, "pause": pause, "status": result.status},
            )
            return
        if attempts >= self._settings.retry_attempts or now - item.created_at >= self._settings.max_age:
            detail = f"gave up after {attempts} attempts; last: {result.reason.value}: {result.detail}"
            await self.dead(item, Reason.EXPIRED, result.status, detail)
            return
        delay = backoff_delay(attempts, self._settings.initial_backoff, self._settings.max_backoff, self._rand)
        await self.settle(lambda: self._outbox.retry_later(item, now + delay, reason, result.status, result.detail))
        self._log.warning(
            "delivery failed, will retry",
            extra={"routing_key": item.routing_key, "dedup_key": item.dedup_key, "reason": result.reason.value,
                   "status": result.status, "retry_in": round(delay, 3), "attempts": attempts},
        )

    async def dead(self, item: OutboxItem, reason: Reason, status: int | None, detail: str) -> None:
        """Move ``item`` to the dead letters for ``reason``."""
        await self.settle(lambda: self._outbox.dead_letter(item, reason, status, detail))
        self._metrics.dead_lettered(item.routing_key, reason)
        if reason in (Reason.UNKNOWN_ROUTING_KEY, Reason.EXPIRED):  # the others were kept as they happened
            self._errors.add(item.routing_key, reason, detail)
        self._audit.record("event.dead_lettered", **audit_fields(item), reason=reason.value, status=status)
        self._log.error(
            "event dead-lettered",
            extra={"routing_key": item.routing_key, "dedup_key": item.dedup_key, "action": item.action,
                   "reason": reason.value, "status": status, "detail": detail, "item_id": item.id},
        )
