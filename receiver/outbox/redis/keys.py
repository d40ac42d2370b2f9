"""The Redis outbox's key names: every one under the hash tag ``{<prefix>}``, so one Cluster slot holds them all.

A routing key name or a dedup key (or its blind index) inside a key name is written with its
length first (``q:<len>:<routing key>:<ref>``), so no two pairs give the same name whatever
characters they hold. What each key holds is described in :mod:`receiver.outbox.redis`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys", "pad"]


def pad(item_id: int) -> str:
    """An item id as the due queues hold it: fixed width, so equal scores sort by id (members sort as text)."""
    return f"{item_id:020d}"


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str  # as configured; the tag is "{prefix}"

    @property
    def tag(self) -> str:
        return "{" + self.prefix + "}"

    def _k(self, name: str) -> str:
        return f"{self.tag}:{name}"

    @property
    def next_id(self) -> str:
        return self._k("next_id")

    @property
    def next_nid(self) -> str:
        return self._k("next_nid")

    @property
    def items(self) -> str:
        return self._k("items")

    def item(self, item_id: int | str) -> str:
        return self._k(f"item:{item_id}")

    def note(self, nid: int | str) -> str:
        return self._k(f"note:{nid}")

    def queue(self, routing_key: str, ref: str) -> str:
        return self._k(f"q:{_n(routing_key)}:{routing_key}:{ref}")

    def state(self, routing_key: str, ref: str) -> str:
        return self._k(f"s:{_n(routing_key)}:{routing_key}:{ref}")

    def routes(self, ref: str) -> str:
        """The routing key names that have a state for dedup key ``ref``."""
        return self._k(f"rks:{ref}")

    def version(self, ref: str) -> str:
        """Bumped by every write of a state of ``ref``: what a transaction on ``ref`` WATCHes."""
        return self._k(f"v:{ref}")

    def due(self, priority: int) -> str:
        return self._k(f"due:{priority}")

    @property
    def leases(self) -> str:
        return self._k("leases")

    @property
    def owners(self) -> str:
        return self._k("lease_owner")

    def held(self, owner: str) -> str:
        return self._k(f"held:{owner}")

    @property
    def counts(self) -> str:
        return self._k("counts")

    def queued_of(self, routing_key: str) -> str:
        return self._k(f"kq:{routing_key}")

    @property
    def key_names(self) -> str:
        return self._k("knames")

    @property
    def dead_by_key(self) -> str:
        return self._k("kdead")

    @property
    def sends(self) -> str:
        return self._k("sends")

    @property
    def meta(self) -> str:
        return self._k("meta")

    @property
    def check(self) -> str:
        return self._k("check")


def _n(name: str) -> int:
    return len(name.encode("utf-8", "surrogatepass"))
