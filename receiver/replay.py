"""Replay: a dead letter re-rendered from the notification it came from, with the current rules, and requeued.

Storage stores; this module interprets. It reads the stored Alertmanager body through the
``Outbox`` seam, evaluates the current rules on it, picks the event with the dead letter's
dedup key and action — routing key included, so a rule fixed after a misspelt key name
rescues what it dead-lettered — refuses a routing key name the configuration does not
define (it would only be dead-lettered again), and hands the event to
:meth:`~receiver.outbox.Outbox.requeue`, where the delivery rules decide: requeued,
superseded by a newer word for the alert, or already what PagerDuty holds.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from receiver.crypto import DecryptError
from receiver.errors import PayloadError
from receiver.models import parse_notification
from receiver.outbox import Outbox
from transforms import RuleSet
from transforms.base import InvalidEvent, RenderedEvent

__all__ = ["ReplayOutcome", "replay"]

Result = Literal["replayed", "superseded", "duplicate", "invalid", "not_produced", "not_dead", "unreadable",
                 "unknown_routing_key"]


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What replaying one dead letter did."""

    id: int
    result: Result
    detail: str = ""
    ids: tuple[int, ...] = ()  # replayed: the queued item(s)
    routing_key: str = ""  # replayed: where it goes now

    @property
    def settled(self) -> bool:
        """Nothing is left undelivered: requeued, or PagerDuty has (or will have) Alertmanager's last word."""
        return self.result in ("replayed", "superseded", "duplicate")

    def line(self) -> str:
        """The one line the CLI prints for this item."""
        match self.result:
            case "replayed":
                moved = f" as {', '.join(map(str, self.ids))}" if self.ids != (self.id,) else ""
                return f"replayed {self.id}{moved} (routing key {self.routing_key})"
            case "superseded" | "duplicate":
                return f"not needed {self.id}: {self.detail}"
            case "invalid":
                return f"still invalid {self.id}: {self.detail}"
            case "not_produced":
                return f"not produced by the current rules {self.id}"
            case "not_dead":
                return f"not dead {self.id}: {self.detail}"
            case _:
                return f"cannot replay {self.id}: {self.detail}"


async def replay(
    outbox: Outbox, item_id: int, rules: RuleSet, *, routing_keys: Collection[str], resend_interval: float,
    now: datetime | None = None,
) -> ReplayOutcome:
    """Re-render dead letter ``item_id`` with ``rules`` and requeue it.

    ``now``: the time ``when_time`` steps test (default: the system clock's, now); a replay
    routes as the rules would route the alert at the time of the replay.

    ``routing_keys``: the configured names; an event the rules give another name stays
    dead (empty: no key is configured, pdrelay runs dry, and any name goes). Raises
    :class:`~receiver.outbox.NoSuchItem` for an unknown id."""
    item = await outbox.get(item_id)
    if item.status != "dead":
        return ReplayOutcome(item_id, "not_dead", item.status)
    try:
        source = await outbox.notification(item_id)
    except DecryptError as exc:
        return ReplayOutcome(item_id, "unreadable", f"stored notification: {exc}")
    if source is None:
        return ReplayOutcome(item_id, "unreadable", "its notification is no longer stored")
    try:
        group = parse_notification(source)
    except PayloadError as exc:
        return ReplayOutcome(item_id, "unreadable", f"stored notification does not parse: {exc.message}")
    evaluation = rules.evaluate(group, now if now is not None else datetime.now(UTC))
    candidates: list[RenderedEvent | InvalidEvent] = [*evaluation.events, *evaluation.invalid]
    matches = [e for e in candidates if (e.dedup_key, e.action) == (item.dedup_key, item.action)]
    if not matches:
        return ReplayOutcome(item_id, "not_produced")
    event = matches[0]
    if routing_keys and event.routing_key not in routing_keys:
        configured = ", ".join(sorted(routing_keys))
        return ReplayOutcome(item_id, "unknown_routing_key",
                             f"the rules name routing key {event.routing_key!r}, which is not configured "
                             f"(configured: {configured})")
    done = await outbox.requeue(item_id, event, resend_interval=resend_interval)
    return ReplayOutcome(item_id, done.result, done.detail, done.ids, done.routing_key)
