"""The ``Outbox`` seam: durable storage of events between intake and PagerDuty.

Intake commits a notification's events (and the per-``(routing_key, dedup_key)`` state
that makes intake idempotent) in one transaction before answering 2xx. The dispatcher
claims the head of each dedup_key's queue, oldest first, and acks, reschedules or
dead-letters it. Implementations: :class:`~receiver.outbox.sqlite.SQLiteOutbox`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from receiver.errors import Reason
from transforms.base import InvalidEvent, RenderedEvent

__all__ = ["Depth", "EnqueueResult", "Outbox", "OutboxItem"]


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One stored event: queued for delivery, or dead-lettered with a reason."""

    id: int
    routing_key: str  # the configured key's name, never the secret
    dedup_key: str
    action: str
    body: dict[str, Any]
    status: str  # "queued" | "dead"
    attempts: int
    created_at: float
    next_attempt_at: float
    payload_hash: str
    rules: tuple[str, ...] = ()
    reason: str | None = None
    last_status: int | None = None
    last_error: str | None = None
    superseded: bool = False  # a trigger whose resolve is already queued behind it (set by claim)


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    queued: int = 0
    duplicates: int = 0  # identical to what PagerDuty was already told: not queued again
    dead_lettered: int = 0  # could not be made valid: stored as dead letters
    rerouted: int = 0  # resolves sent with the routing key of their trigger


@dataclass(frozen=True, slots=True)
class Depth:
    queued: int
    dead: int


class Outbox(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def enqueue(
        self,
        source: bytes,
        events: Sequence[RenderedEvent],
        invalid: Sequence[InvalidEvent],
        *,
        resend_interval: float,
    ) -> EnqueueResult:
        """Commit events durably; returns once they are on disk."""
        ...

    async def claim(
        self, limit: int, exclude: Collection[int], exclude_keys: Collection[str] = ()
    ) -> list[OutboxItem]:
        """Due queue heads (at most one per dedup_key), resolves and critical triggers first, then
        oldest first; skipping the item ids ``exclude`` and the routing key names ``exclude_keys``."""
        ...

    async def ack(self, item: OutboxItem, settle_delay: float = 0.0) -> bool:
        """Forget a delivered item; a resolve for a key whose trigger timed out is kept and sent
        once more after ``settle_delay`` (returns True then)."""
        ...

    async def retry_later(
        self, item: OutboxItem, at: float, reason: Reason, status: int | None, error: str
    ) -> None: ...

    async def dead_letter(self, item: OutboxItem, reason: Reason, status: int | None, error: str) -> None: ...

    async def next_due(self) -> float | None:
        """The next moment (epoch seconds, in the future) when a queued item becomes due, or ``None``."""
        ...

    def note_send(self, routing_key: str, at: float) -> None:
        """PagerDuty answered a send for ``routing_key`` at wall time ``at``; kept with the next write."""
        ...

    async def recent_sends(self, since: float) -> list[tuple[str, float]]:
        """``(routing_key, wall time)`` of the sends noted at or after ``since``, oldest first."""
        ...

    async def check(self) -> None:
        """Raise :class:`~receiver.errors.OutboxUnavailable` unless a write would succeed."""
        ...

    def depth(self) -> Depth: ...
