"""The ``Outbox`` contract: the Protocol every backend implements and the values it trades in.

Re-exported, with the backend factory, by :mod:`receiver.outbox`; backends import this leaf
module so that the package can pick a backend without an import circle.

The seam: durable storage of events between intake and PagerDuty.

This module is the whole contract that the app, the dispatcher, the handlers and the CLI
use; nothing outside it names a backend. Intake commits a notification's events (and
the per-``(routing_key, dedup_key)`` state that makes intake idempotent) in one
transaction before answering 2xx. The dispatcher claims the head of each dedup_key's
queue, and acks, reschedules or dead-letters it. Operators list, show, requeue, purge
and re-encrypt items.

A backend stores; it does not decide. What each event becomes (queued, duplicate,
coalesced, rerouted, dead, superseded) and how the state changes after each send are
decided by :mod:`receiver.delivery`, which every backend calls inside its transactions.
Backends: :class:`~receiver.outbox.sqlite.SQLiteOutbox` (``outbox.backend: sqlite``) and
:class:`~receiver.outbox.redis.RedisOutbox` (``outbox.backend: redis``, shared by replicas).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from receiver.errors import Reason
from transforms.base import InvalidEvent, RenderedEvent

__all__ = [
    "Depth",
    "EnqueueResult",
    "KeyDepth",
    "NoSuchItem",
    "OpenReport",
    "Outbox",
    "OutboxItem",
    "RequeueResult",
]


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One stored event: queued for delivery, or dead-lettered with a reason."""

    id: int
    routing_key: str  # the configured key's name, never the secret
    dedup_key: str
    action: str
    body: dict[str, Any]  # operator reads show a stored value that cannot be read as {reason: why}
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
    queued: int = 0  # events stored for delivery (a resolve going to two routing keys counts twice)
    duplicates: int = 0  # events not queued: PagerDuty was told, or is queued to be told, the same
    dead_lettered: int = 0  # could not be made valid: stored as dead letters
    rerouted: int = 0  # resolves sent with the routing key of their trigger
    queued_by_key: Mapping[str, int] = field(default_factory=dict)  # ``queued`` per routing key name


@dataclass(frozen=True, slots=True)
class Depth:
    queued: int
    dead: int


@dataclass(frozen=True, slots=True)
class KeyDepth:
    """What one routing key name has stored: queued events, when the oldest of them was created (epoch
    seconds; ``None`` with none queued), and dead letters by reason."""

    queued: int = 0
    oldest_queued_at: float | None = None
    dead: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OpenReport:
    """What opening had to do: a plain outbox meeting keys for the first time is encrypted in place; one
    encrypted by an earlier version has its events sealed again, bound to their ids (``resealed``)."""

    encrypted_now: bool = False
    events: int = 0
    notifications: int = 0
    states: int = 0
    resealed: int = 0


@dataclass(frozen=True, slots=True)
class RequeueResult:
    """What requeuing one dead letter did."""

    id: int
    result: Literal["replayed", "superseded", "duplicate", "invalid", "not_dead"]
    ids: tuple[int, ...] = ()  # replayed: the queued item(s); its own id unless it had to go behind newer ones
    routing_key: str = ""  # replayed: where it goes now
    detail: str = ""


class NoSuchItem(LookupError):
    """No event with this id is stored."""

    def __init__(self, item_id: int) -> None:
        super().__init__(f"no outbox item {item_id}")
        self.item_id = item_id


class Outbox(Protocol):
    """Durable storage of events. Every write returns only once it is durable."""

    async def open(self) -> OpenReport:
        """Open (creating it if the backend may) and check it against the configured keys.

        Raises :class:`~receiver.errors.OutboxUnavailable` when it cannot be opened and
        :class:`~receiver.errors.ConfigError` when the configured keys cannot read it."""
        ...

    async def close(self) -> None: ...

    # ------------------------------------------------------------------ intake

    async def enqueue(
        self,
        source: bytes,
        events: Sequence[RenderedEvent],
        invalid: Sequence[InvalidEvent],
        *,
        resend_interval: float,
    ) -> EnqueueResult:
        """Decide and store one notification's events (``source``: its raw body, kept for replay)."""
        ...

    # ------------------------------------------------------------------ delivery

    async def claim(
        self, limit: int, exclude: Collection[int], exclude_keys: Collection[str] = ()
    ) -> list[OutboxItem]:
        """Due queue heads (at most one per dedup_key), resolves and critical triggers first, then
        oldest first; skipping the item ids ``exclude`` and the routing key names ``exclude_keys``.
        A head that cannot be sent is dead-lettered instead of being returned, and reported to the
        backend's ``on_unreadable(item_id, reason, why, routing_key)`` callback: reason ``undecryptable`` when its
        stored value fails authentication (altered, or moved or copied from another row),
        ``unreadable`` when it is not UTF-8 JSON or not the event of its row (action, dedup key).
        The other heads are returned as usual."""
        ...

    async def ack(self, item: OutboxItem, settle_delay: float = 0.0) -> bool:
        """PagerDuty accepted ``item``: forget it, unless a timeout left the key uncertain — then a
        resolve stays queued and goes once more after ``settle_delay`` (returns True then)."""
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

    # ------------------------------------------------------------------ audit

    def note_audit_head(self, head: str) -> None:
        """The audit log's chain head is now ``head`` (opaque text of at most 256 characters; a
        ``ValueError`` otherwise): stored with the next write, and at :meth:`close` at the latest."""
        ...

    async def audit_head(self) -> str | None:
        """The latest audit chain head noted, by this process or (as stored) an earlier one; ``None`` if none."""
        ...

    # ------------------------------------------------------------------ health

    async def check(self) -> None:
        """Raise :class:`~receiver.errors.OutboxUnavailable` unless a write would succeed."""
        ...

    def depth(self) -> Depth:
        """Queued and dead items, as last seen, without I/O (read by metrics callbacks and /status): a
        backend keeps it refreshed by its own calls — a shared one (Redis) by every write, claim and
        :meth:`next_due`, so what other replicas did shows within the dispatcher's next look at the queue."""
        ...

    async def depth_by_key(self) -> dict[str, KeyDepth]:
        """Per routing key name (as stored, configured or not), its :class:`KeyDepth`; keys with
        nothing stored are absent. Read at each scrape of /metrics and /status: one cheap query,
        nothing decrypted."""
        ...

    # ------------------------------------------------------------------ operators

    async def items(
        self, *, status: str | None = None, routing_key: str | None = None, reason: str | None = None,
        limit: int | None = None,
    ) -> list[OutboxItem]:
        """Stored items matching every filter given, oldest first."""
        ...

    async def get(self, item_id: int) -> OutboxItem:
        """One item, or :class:`NoSuchItem`."""
        ...

    async def notification(self, item_id: int) -> bytes | None:
        """The raw Alertmanager body item ``item_id`` came from (``None`` if it has none);
        raises :class:`NoSuchItem`, or :class:`~receiver.crypto.DecryptError` if it cannot be read."""
        ...

    async def requeue(
        self, item_id: int, event: RenderedEvent | InvalidEvent, *, resend_interval: float
    ) -> RequeueResult:
        """Put dead letter ``item_id`` back in the queue as ``event`` (the same dedup key and action,
        re-rendered by the current rules: body, routing key and all), as the delivery rules decide."""
        ...

    async def purge(self, ids: Sequence[int], *, include_queued: bool = False) -> int:
        """Delete the given items (dead ones only unless ``include_queued``); returns how many."""
        ...

    async def rekey(self) -> OpenReport:
        """Re-encrypt every stored value made with an older key with the first configured key."""
        ...
