"""The background worker that drains the outbox into PagerDuty.

It claims due queue heads (never two events of one dedup_key at once, so a resolve
never overtakes its trigger), sends them with at most ``concurrency`` requests in
flight, and then acks (2xx), reschedules with exponential backoff and jitter
(429, 5xx, timeouts, connection errors) or dead-letters (400 and other permanent
answers, unknown routing key names, retries exhausted). Nothing is removed from the
outbox before PagerDuty accepted it, so a crash at any point only means a resend.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable, Mapping

from receiver.clock import Clock
from receiver.errors import Reason
from receiver.metrics import Metrics
from receiver.outbox import Outbox, OutboxItem
from receiver.pagerduty.events import Sender, SendResult
from receiver.settings import PagerDutySettings, Secret

__all__ = ["Dispatcher", "backoff_delay"]

_MAX_IDLE_WAIT = 5.0


def backoff_delay(attempt: int, initial: float, maximum: float, rand: Callable[[], float]) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, half of it jittered."""
    base = min(maximum, initial * 2.0 ** (attempt - 1))
    return base / 2 + rand() * base / 2


class Dispatcher:
    """Claims, sends and settles outbox items until cancelled."""

    def __init__(
        self,
        outbox: Outbox,
        sender: Sender,
        routing_keys: Mapping[str, Secret],
        settings: PagerDutySettings,
        *,
        metrics: Metrics,
        clock: Clock,
        log: logging.Logger,
        dry_run: bool = False,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._outbox = outbox
        self._sender = sender
        self._keys = routing_keys
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._log = log
        self._dry_run = dry_run
        self._rand = rand
        self._wakeup = asyncio.Event()
        self._inflight: dict[int, asyncio.Task[None]] = {}

    def wake(self) -> None:
        """Look for work now (called after intake commits); free while every slot is busy."""
        if len(self._inflight) < self._settings.concurrency:
            self._wakeup.set()

    async def run(self) -> None:
        try:
            while True:
                self._wakeup.clear()
                free = self._settings.concurrency - len(self._inflight)
                if free > 0:
                    for item in await self._outbox.claim(free, self._inflight.keys()):
                        task = asyncio.create_task(self._deliver(item))
                        self._inflight[item.id] = task
                        task.add_done_callback(functools.partial(self._done, item.id))
                    if len(self._inflight) >= self._settings.concurrency:
                        await self._wakeup.wait()
                        continue
                await self._sleep_until_due()
        finally:
            await self._drain()

    async def _sleep_until_due(self) -> None:
        due = await self._outbox.next_due()
        timeout = _MAX_IDLE_WAIT if due is None else min(_MAX_IDLE_WAIT, max(0.0, due - self._clock.now()))
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _done(self, item_id: int, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(item_id, None)
        self._wakeup.set()

    async def _drain(self) -> None:
        """On shutdown, let requests in flight finish settling (they are short, bounded by timeouts)."""
        tasks = list(self._inflight.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _deliver(self, item: OutboxItem) -> None:
        try:
            await self._deliver_once(item)
        except Exception:
            # An outbox write failed while settling: the item stays queued and is retried
            # after the next claim, so nothing is lost; say so loudly.
            self._log.exception("could not settle outbox item", extra={"item_id": item.id})
            await asyncio.sleep(1.0)  # hold the slot briefly: a broken outbox must not become a busy loop

    async def _deliver_once(self, item: OutboxItem) -> None:
        key = Secret("dry-run") if self._dry_run else self._keys.get(item.routing_key)
        if key is None:
            self._log.error(
                "rule names a routing key the config does not define; dead-lettered",
                extra={"routing_key": item.routing_key, "dedup_key": item.dedup_key, "item_id": item.id},
            )
            await self._settle_dead(item, Reason.UNKNOWN_ROUTING_KEY, None,
                                    f"routing key {item.routing_key!r} is not configured")
            return
        started = self._clock.monotonic()
        result = await self._sender.send(key, item.body)
        self._metrics.send_latency.observe(self._clock.monotonic() - started)
        if result.ok:
            await self._outbox.ack(item)
            fields = {"routing_key": item.routing_key, "dedup_key": item.dedup_key, "action": item.action,
                      "item_id": item.id}
            if self._dry_run:
                self._log.info("dry-run: would send event", extra={**fields, "event": item.body})
                return
            self._metrics.events_sent.inc()
            self._log.info("event delivered", extra={**fields, "attempts": item.attempts + 1})
            return
        assert result.reason is not None
        self._metrics.events_failed.labels(result.reason.value).inc()
        if result.retryable:
            await self._settle_retry(item, result)
        else:
            if result.reason is Reason.AUTH_ERROR:
                self._log.error(
                    "PagerDuty refused the routing key (wrong key or region?)",
                    extra={"routing_key": item.routing_key, "status": result.status},
                )
            await self._settle_dead(item, result.reason, result.status, result.detail)

    async def _settle_retry(self, item: OutboxItem, result: SendResult) -> None:
        assert result.reason is not None
        attempts = item.attempts + 1
        now = self._clock.now()
        if attempts >= self._settings.retry_attempts or now - item.created_at >= self._settings.max_age:
            detail = f"gave up after {attempts} attempts; last: {result.reason.value}: {result.detail}"
            await self._settle_dead(item, Reason.EXPIRED, result.status, detail)
            return
        delay = backoff_delay(attempts, self._settings.initial_backoff, self._settings.max_backoff, self._rand)
        await self._outbox.retry_later(item, now + delay, result.reason, result.status, result.detail)
        self._log.warning(
            "delivery failed, will retry",
            extra={"routing_key": item.routing_key, "dedup_key": item.dedup_key, "reason": result.reason.value,
                   "status": result.status, "retry_in": round(delay, 3), "attempts": attempts},
        )

    async def _settle_dead(self, item: OutboxItem, reason: Reason, status: int | None, detail: str) -> None:
        await self._outbox.dead_letter(item, reason, status, detail)
        self._metrics.events_dead_lettered.labels(reason.value).inc()
        self._log.error(
            "event dead-lettered",
            extra={"routing_key": item.routing_key, "dedup_key": item.dedup_key, "action": item.action,
                   "reason": reason.value, "status": status, "detail": detail, "item_id": item.id},
        )
