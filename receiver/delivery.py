"""The delivery rules: what each event becomes, decided from one key's state. Pure: no I/O, no clock.

Every outbox backend hands these functions the state it keeps per
``(routing_key, dedup_key)`` — a :class:`KeyState` — and writes back what they return,
in the same transaction as the events themselves. The rules are the same for every
backend; a backend only stores.

A key's state holds three things:

- ``told``: PagerDuty's last *accepted* word for the key (set when PagerDuty answered 2xx);
- ``tail``: the newest event of the key still queued (what PagerDuty will be told last,
  once the queue drains);
- ``latest``: the item that carries Alertmanager's last word about the alert under this
  key — queued, dead-lettered, or already told — or 0 when its last word went to another
  routing key. Item ids only grow and are never reused.

The invariant these rules keep: once the queues drain (and dead letters are replayed),
PagerDuty's last word for every key equals Alertmanager's last word, whatever outages,
dead letters and replays came between. From it follow the decisions:

- :func:`needs_update` (the model is Alertmanager's ``DedupStage.needsUpdate``): an event
  is a duplicate only if it repeats what is already queued to be said, or — with nothing
  queued — what PagerDuty last accepted (a trigger only within ``resend_interval``). A
  dead-lettered event is neither, so an identical event after it is queued again.
- :func:`resolve_routes`: a resolve goes with the routing key its trigger went out with,
  or PagerDuty drops it and the incident stays open — to every such key, if the alert's
  routing changed while it fired.
- :meth:`Ledger.replay`: a dead letter is requeued only while it still carries
  Alertmanager's last word for its key; an older one is *superseded* (requeuing it would
  make PagerDuty's last word a stale one).
- :func:`priority`: resolves and critical triggers go first when a key is over budget.

A Change Event (action ``change``) travels the same way on a key of its own
(``change:<fingerprint>@<startsAt>``, see :mod:`transforms.collapse`): nothing resolves it,
it goes once per firing, and a dead-lettered one is queued again when Alertmanager repeats
it (PagerDuty was not told).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

__all__ = [
    "Incoming",
    "Key",
    "KeyState",
    "Ledger",
    "Outcome",
    "Verdict",
    "Word",
    "needs_update",
    "on_dead",
    "on_purged",
    "on_retry_timeout",
    "on_sent",
    "priority",
    "resolve_routes",
]

Action = Literal["trigger", "resolve", "change"]  # change: a Change Event, on its own key (no resolve)
Key = tuple[str, str]  # (routing key name, dedup key as the backend stores it)


class Word(NamedTuple):
    """One thing said, or queued to be said, to PagerDuty about a key."""

    action: Action
    payload_hash: str
    at: float  # epoch seconds: when it was queued (tail), or when PagerDuty accepted it (told)
    item_id: int  # the outbox item that carries it


class KeyState(NamedTuple):
    """What the rules know of one ``(routing_key, dedup_key)``."""

    told: Word | None = None  # PagerDuty's last accepted word
    tail: Word | None = None  # the newest queued event of the key
    latest: int = 0  # the item carrying Alertmanager's last word about the alert (0: it went elsewhere)
    uncertain: str | None = None  # why PagerDuty's state is unknown (a send timed out); a resolve then goes twice

    @property
    def effective(self) -> Word | None:
        """What PagerDuty will have been told once the key's queue drains."""
        return self.tail or self.told


_EMPTY = KeyState()


class Verdict(enum.StrEnum):
    QUEUE = "queue"  # new to PagerDuty: store and send it
    DUPLICATE = "duplicate"  # repeats what PagerDuty was last told (or a resolve already queued)
    COALESCED = "coalesced"  # the same trigger is still waiting in the queue: one copy is enough
    DEAD = "dead"  # could not be made valid: stored as a dead letter
    SUPERSEDED = "superseded"  # replay only: a newer word for the key exists


class Incoming(NamedTuple):
    """An event as the rules see it: where it goes, what it says, and a hash of what it carries."""

    routing_key: str
    dedup_key: str
    action: Action
    payload_hash: str
    critical: bool = False  # payload.severity is critical
    valid: bool = True  # False: an event that could not be made valid (stored dead)


class Outcome(NamedTuple):
    """What one event became."""

    verdict: Verdict
    routing_key: str  # where it is stored: a rerouted resolve carries its trigger's key
    item_id: int = 0  # the item that now carries the word: the new one, or the one it repeats
    rerouted: bool = False
    priority: int = 1


def needs_update(action: Action, payload_hash: str, state: KeyState, now: float, resend_interval: float) -> Verdict:
    """Must this word be queued, given the key's state? (``QUEUE``, ``DUPLICATE`` or ``COALESCED``.)

    A Change Event's key names one firing of one alert, and a change is announced once: it is
    ``COALESCED`` while queued and a ``DUPLICATE`` once told, whatever its payload or age
    (Alertmanager repeats the same firing every repeat_interval)."""
    if action == "change":
        if state.tail is not None:
            return Verdict.COALESCED
        return Verdict.QUEUE if state.told is None else Verdict.DUPLICATE
    tail = state.tail
    if tail is not None:  # compare with what is queued to be said last, never with what was told before it
        if tail.action != action:
            return Verdict.QUEUE
        if action == "resolve":
            return Verdict.DUPLICATE
        return Verdict.COALESCED if tail.payload_hash == payload_hash else Verdict.QUEUE
    told = state.told
    if told is None or state.uncertain is not None or told.action != action:
        # A resolve for a key never told is sent: PagerDuty ignores it if nothing is open. After a
        # timeout PagerDuty may hold what it was told last or what timed out: send rather than guess.
        return Verdict.QUEUE
    if action == "resolve":
        return Verdict.DUPLICATE
    if told.payload_hash == payload_hash and now - told.at < resend_interval:
        return Verdict.DUPLICATE
    return Verdict.QUEUE


def resolve_routes(routing_key: str, states: Mapping[str, KeyState]) -> list[str]:
    """The routing keys a resolve concerns: every one where its dedup key was told or is queued
    something, or where a trigger may have landed (an attempt timed out), newest first; its own
    key if there is none.

    So a resolve goes with the routing key its trigger went out with (or PagerDuty drops it
    and the incident stays open), to each such key if the alert's routing changed while it
    fired (another rule, another time of day); where a resolve is already told or queued it
    is a duplicate, and that resolve carries Alertmanager's last word there.

    ``states``: the dedup key's state under every routing key that has one."""
    known = []
    for key, state in states.items():
        word = state.effective
        if word is not None or state.uncertain is not None:
            known.append((word.item_id if word is not None else 0, key))
    return [key for _, key in sorted(known, reverse=True)] or [routing_key]


def priority(action: Action, critical: bool) -> int:
    """0 for what goes first when a key is over budget: resolves (they close incidents) and critical triggers."""
    return 0 if action == "resolve" or critical else 1


def on_sent(state: KeyState, item_id: int, action: Action, payload_hash: str, now: float) -> tuple[KeyState, bool]:
    """PagerDuty accepted item ``item_id``. Returns the new state, and whether the item stays queued to be
    sent once more (a resolve whose key is uncertain: a timed-out trigger attempt may still land after it)."""
    told = Word(action, payload_hash, now, item_id)
    if action == "resolve" and state.uncertain is not None:
        return state._replace(told=told, uncertain=None), True
    tail = None if state.tail is not None and state.tail.item_id == item_id else state.tail
    return state._replace(told=told, tail=tail), False


def on_retry_timeout(state: KeyState, why: str) -> KeyState:
    """A send of the key timed out: PagerDuty may still act on it, so what it holds is unknown until a
    resolve has gone through. Until then nothing is a duplicate of what was told, and the next delivered
    resolve is sent twice (a trigger landing late, after its resolve, would reopen the incident)."""
    return state._replace(uncertain=why)


def on_dead(state: KeyState, item_id: int) -> KeyState:
    """Item ``item_id``, the head of its key's queue, was dead-lettered: PagerDuty will not be told it
    (if it was Alertmanager's last word, a replay may still deliver it)."""
    if state.tail is not None and state.tail.item_id == item_id:
        return state._replace(tail=None)
    return state


def on_purged(state: KeyState, item_id: int, newest_queued: Word | None) -> KeyState:
    """Item ``item_id`` was deleted by an operator; ``newest_queued`` is the key's newest queued item now."""
    tail = newest_queued if state.tail is not None and state.tail.item_id == item_id else state.tail
    return state._replace(tail=tail)


@dataclass(slots=True)
class Ledger:
    """The states of the keys one write touches, changed by the rules as events are decided.

    A backend loads the states of every key the write involves (every routing key of each
    dedup key involved), decides each event in arrival order, then stores the states that
    :attr:`changed` names together with the items, atomically.
    """

    states: dict[Key, KeyState]
    new_id: Callable[[], int]  # the next item id: ever-growing, never reused
    changed: set[Key] = field(default_factory=set)
    # dedup key -> its routing keys with a state: a batch's events look their dedup key up, never scan
    _routing_keys: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for routing_key, dedup_key in self.states:
            self._routing_keys.setdefault(dedup_key, []).append(routing_key)

    def get(self, key: Key) -> KeyState:
        return self.states.get(key) or _EMPTY

    def _set(self, key: Key, state: KeyState) -> None:
        old = self.states.get(key)
        if old == state:
            return
        if old is None:
            self._routing_keys.setdefault(key[1], []).append(key[0])
        self.states[key] = state
        self.changed.add(key)

    def _routes(self, ev: Incoming) -> list[str]:
        if ev.action != "resolve":
            return [ev.routing_key]
        known = self._routing_keys.get(ev.dedup_key, ())
        return resolve_routes(ev.routing_key, {rk: self.states[(rk, ev.dedup_key)] for rk in known})

    def intake(self, ev: Incoming, now: float, resend_interval: float) -> list[Outcome]:
        """Decide one event that intake received (in arrival order): one outcome, or for a resolve
        one per routing key it must go to."""
        if not ev.valid:
            key = (ev.routing_key, ev.dedup_key)
            item_id = self.new_id()
            self._forget_older_words(ev.dedup_key, [ev.routing_key])
            state = self.get(key)
            self._set(key, KeyState(state.told, state.tail, item_id, state.uncertain))
            return [Outcome(Verdict.DEAD, ev.routing_key, item_id)]
        return self._decide(ev, self._routes(ev), None, now, resend_interval)

    def replay(self, item_id: int, stored_key: Key, ev: Incoming, now: float,
               resend_interval: float) -> list[Outcome]:
        """Decide dead letter ``item_id`` (stored under ``stored_key``), re-rendered by the current rules as ``ev``.

        ``SUPERSEDED`` (alone): Alertmanager has said something newer about the alert, so the
        dead letter has nothing left to say; requeuing it would make PagerDuty's last word a
        stale one. ``DEAD`` (alone): ``ev`` is still not valid, it stays a dead letter.
        Otherwise one outcome per routing key the event goes to: ``QUEUE`` requeues it there
        (under the dead item's own id while that is still the newest of the queue it joins,
        otherwise — and for any further key — under a new id),
        ``DUPLICATE``/``COALESCED`` say PagerDuty was told, or is queued to be told, the same."""
        if self.get(stored_key).latest != item_id:
            return [Outcome(Verdict.SUPERSEDED, stored_key[0], self.get(stored_key).latest)]
        if not ev.valid:
            return [Outcome(Verdict.DEAD, stored_key[0], item_id)]
        return self._decide(ev, self._routes(ev), item_id, now, resend_interval)

    def _forget_older_words(self, dedup_key: str, keep: list[str]) -> None:
        """Alertmanager said something new about the alert: what other keys carry is no longer its last word."""
        for routing_key in self._routing_keys.get(dedup_key, ()):
            state = self.states[(routing_key, dedup_key)]
            if state.latest and routing_key not in keep:
                self._set((routing_key, dedup_key), KeyState(state.told, state.tail, 0, state.uncertain))

    def _decide(self, ev: Incoming, routes: list[str], reuse_id: int | None, now: float,
                resend_interval: float) -> list[Outcome]:
        self._forget_older_words(ev.dedup_key, routes)
        out = []
        for routing_key in routes:
            key = (routing_key, ev.dedup_key)
            state = self.get(key)
            rerouted = routing_key != ev.routing_key
            verdict = needs_update(ev.action, ev.payload_hash, state, now, resend_interval)
            if verdict is not Verdict.QUEUE:
                same = state.effective
                assert same is not None  # only a word already said or queued is repeated
                self._set(key, KeyState(state.told, state.tail, same.item_id, state.uncertain))
                out.append(Outcome(verdict, routing_key, same.item_id, rerouted))
                continue
            if reuse_id is not None and (state.tail is None or state.tail.item_id < reuse_id):
                item_id, reuse_id = reuse_id, None  # still the newest of its queue: it keeps its id
            else:
                item_id = self.new_id()  # behind newer items (a replay moved it): it takes a place at the tail
            tail = Word(ev.action, ev.payload_hash, now, item_id)
            self._set(key, KeyState(state.told, tail, item_id, state.uncertain))
            out.append(Outcome(Verdict.QUEUE, routing_key, item_id, rerouted, priority(ev.action, ev.critical)))
        return out
