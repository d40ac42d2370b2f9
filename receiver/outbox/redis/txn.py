"""WATCH/MULTI optimistic transactions on the outbox's client, retried on conflict, and what goes with every write.

:func:`Transactions.run` WATCHes the given keys, lets the caller read (and WATCH more), queue its
writes after ``pipe.multi()``, adds what is kept "with the next write" (send times, the audit
head, pruning of old send times) and a read of the counts, and EXECs. If a watched key changed
meanwhile (another replica, another task), the whole step runs again on fresh reads.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis import exceptions as rx

from receiver.clock import Clock
from receiver.errors import OutboxUnavailable
from receiver.outbox.contract import Depth
from receiver.outbox.redis.connect import Client, Pipe, unavailable
from receiver.outbox.redis.keys import Keys

__all__ = ["MAX_AUDIT_HEAD", "Transactions"]

T = TypeVar("T")
MAX_AUDIT_HEAD = 256
_ATTEMPTS = 64
_AT_ONCE = 48  # transactions holding a connection at once: the pool has 64, the rest serve single commands
_PRUNE_EVERY = 60.0


class Transactions:
    """The outbox's writes: optimistic transactions, and the notes they carry."""

    def __init__(self, client: Client, keys: Keys, clock: Clock, keep_sends_for: float, head_field: str) -> None:
        self._r = client
        self._head_field = head_field  # this replica's audit head: each replica has an audit log of its own
        self._keys = keys
        self._clock = clock
        self._keep_sends_for = keep_sends_for
        self._sends: list[tuple[str, float]] = []
        self._pruned_at = float("-inf")
        self.head: str | None = None  # the latest audit head noted (or loaded)
        self._head_stored: str | None = None
        self.depth = Depth(0, 0)  # refreshed by every write and claim
        self._slots = asyncio.Semaphore(_AT_ONCE)

    # ------------------------------------------------------------------ notes

    def note_send(self, routing_key: str, at: float) -> None:
        self._sends.append((routing_key, at))

    def note_head(self, head: str) -> None:
        if not isinstance(head, str) or len(head) > MAX_AUDIT_HEAD:
            raise ValueError(f"an audit head is text of at most {MAX_AUDIT_HEAD} characters")
        self.head = head

    def loaded_head(self, head: str | None) -> None:
        self.head = self._head_stored = head

    @property
    def unwritten(self) -> bool:
        return self.head is not None and self.head != self._head_stored

    def set_counts(self, raw: list[Any]) -> None:
        self.depth = Depth(queued=int(raw[0] or 0), dead=int(raw[1] or 0))

    # ------------------------------------------------------------------ transactions

    async def run(self, what: str, watch: list[str], body: Callable[[Pipe], Awaitable[T]]) -> T:
        """Run ``body`` in a transaction watching ``watch``. ``body`` reads in immediate mode, may WATCH more,
        and calls ``pipe.multi()`` before queueing its writes (if it does not, nothing is written)."""
        for attempt in range(_ATTEMPTS):
            sends: list[tuple[str, float]] = []
            with unavailable(what):
                async with self._slots, self._r.pipeline(transaction=True) as pipe:
                    try:
                        if watch:
                            await pipe.watch(*watch)
                        result = await body(pipe)
                        if not pipe.explicit_transaction:
                            return result
                        sends, head = self._queue_notes(pipe)
                        pipe.hmget(self._keys.counts, "queued", "dead")
                        replies = await pipe.execute()
                    except rx.WatchError:
                        self._sends = sends + self._sends  # not written: they go with the next attempt
                        replies = None
            if replies is None:  # a watched key changed: decide again on fresh reads, after a short pause
                await asyncio.sleep(random.uniform(0, 0.001 * min(attempt + 1, 20)))
                continue
            if head is not None:
                self._head_stored = head
            self.set_counts(replies[-1])
            return result
        raise OutboxUnavailable(f"Redis outbox: {what} failed: {_ATTEMPTS} attempts met conflicting writes")

    def _queue_notes(self, pipe: Pipe) -> tuple[list[tuple[str, float]], str | None]:
        """Queue the noted send times (taken: lost, harmlessly, if the EXEC fails) and the head (kept until a
        write that stored it succeeds)."""
        sends, self._sends = self._sends, []
        if sends:
            pipe.zadd(self._keys.sends, {f"{rk}\0{at!r}\0{os.urandom(4).hex()}": at for rk, at in sends})
        now = self._clock.now()
        if now - self._pruned_at >= _PRUNE_EVERY:
            self._pruned_at = now
            pipe.zremrangebyscore(self._keys.sends, "-inf", f"({now - self._keep_sends_for!r}")
        head = self.head if self.unwritten else None
        if head is not None:
            pipe.hset(self._keys.meta, self._head_field, head)
        return sends, head
