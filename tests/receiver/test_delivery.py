"""The pure delivery rules: tables of one-line cases, and a property that no page is ever left open."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.delivery import (
    Incoming,
    KeyState,
    Ledger,
    Verdict,
    Word,
    needs_update,
    on_dead,
    on_purged,
    on_retry_timeout,
    on_sent,
    priority,
    resolve_routes,
)

RESEND = 100.0


def w(action: str, h: str = "h1", at: float = 0.0, item_id: int = 1) -> Word:
    return Word(action, h, at, item_id)  # type: ignore[arg-type]


# (case, action, hash, state, now, expected)
NEEDS_UPDATE = [
    ("unknown key: trigger is sent", "trigger", "h1", KeyState(), 0.0, Verdict.QUEUE),
    ("unknown key: resolve is sent too", "resolve", "h1", KeyState(), 0.0, Verdict.QUEUE),
    ("same trigger told inside resend_interval", "trigger", "h1", KeyState(told=w("trigger")), 99.0,
     Verdict.DUPLICATE),
    ("same trigger told, resend_interval passed", "trigger", "h1", KeyState(told=w("trigger")), 100.0,
     Verdict.QUEUE),
    ("same trigger told, but a send timed out since: sent", "trigger", "h1",
     KeyState(told=w("trigger"), uncertain="timed out"), 1.0, Verdict.QUEUE),
    ("changed trigger told inside resend_interval", "trigger", "h2", KeyState(told=w("trigger")), 1.0,
     Verdict.QUEUE),
    ("resolve after a told trigger", "resolve", "r", KeyState(told=w("trigger")), 1.0, Verdict.QUEUE),
    ("resolve after a told resolve", "resolve", "r", KeyState(told=w("resolve", "x")), 1e9, Verdict.DUPLICATE),
    ("trigger after a told resolve", "trigger", "h1", KeyState(told=w("resolve", "h1")), 1.0, Verdict.QUEUE),
    ("same trigger still queued, long after", "trigger", "h1", KeyState(tail=w("trigger")), 1e9,
     Verdict.COALESCED),
    ("changed trigger behind a queued one", "trigger", "h2", KeyState(tail=w("trigger")), 1.0, Verdict.QUEUE),
    ("resolve behind a queued resolve", "resolve", "r", KeyState(tail=w("resolve")), 1.0, Verdict.DUPLICATE),
    ("resolve behind a queued trigger", "resolve", "r", KeyState(tail=w("trigger")), 1.0, Verdict.QUEUE),
    ("the queue, not what was told, is compared: told resolve, queued trigger, resolve", "resolve", "r",
     KeyState(told=w("resolve"), tail=w("trigger", item_id=2)), 1.0, Verdict.QUEUE),
    ("the queue, not what was told: told trigger, queued resolve, same trigger", "trigger", "h1",
     KeyState(told=w("trigger"), tail=w("resolve", item_id=2)), 1.0, Verdict.QUEUE),
]


@pytest.mark.parametrize(("case", "action", "h", "state", "now", "expected"), NEEDS_UPDATE,
                         ids=[c[0] for c in NEEDS_UPDATE])
def test_needs_update(case: str, action: str, h: str, state: KeyState, now: float, expected: Verdict) -> None:
    """Each one-line case: is this word queued, or a duplicate of what is queued or was told?"""
    assert needs_update(action, h, state, now, RESEND) is expected  # type: ignore[arg-type]


# (case, own routing key, states by routing key, expected routing keys)
ROUTES = [
    ("nothing open anywhere: its own key", "a", {}, ["a"]),
    ("its own key has the trigger", "a", {"a": KeyState(told=w("trigger"))}, ["a"]),
    ("the trigger went elsewhere", "a", {"b": KeyState(told=w("trigger"))}, ["b"]),
    ("a queued trigger elsewhere counts", "a", {"b": KeyState(tail=w("trigger", item_id=3))}, ["b"]),
    ("routing changed while firing: every key, newest first", "a",
     {"a": KeyState(told=w("trigger", item_id=3)), "c": KeyState(told=w("trigger", item_id=5))}, ["c", "a"]),
    ("a key resolved elsewhere carries it (a duplicate there)", "a", {"b": KeyState(told=w("resolve"))}, ["b"]),
    ("dead letters alone say nothing was told", "a", {"b": KeyState(latest=7)}, ["a"]),
    ("a trigger that timed out elsewhere may have landed", "a",
     {"b": KeyState(uncertain="timed out")}, ["b"]),
    ("a resolve queued elsewhere carries it", "a",
     {"b": KeyState(told=w("trigger"), tail=w("resolve", item_id=2))}, ["b"]),
]


@pytest.mark.parametrize(("case", "own", "states", "expected"), ROUTES, ids=[c[0] for c in ROUTES])
def test_resolve_routes(case: str, own: str, states: dict[str, KeyState], expected: list[str]) -> None:
    """A resolve follows the routing key(s) of the trigger(s) that opened the incident."""
    assert resolve_routes(own, states) == expected


def test_priority_puts_resolves_and_critical_triggers_first() -> None:
    """Resolves and critical triggers get 0; other triggers 1."""
    assert [priority("resolve", False), priority("trigger", True), priority("trigger", False)] == [0, 0, 1]


def test_sent_records_what_pagerduty_accepted_and_clears_the_tail() -> None:
    """A 2xx makes the item PagerDuty's last word; the tail goes if it was this item, stays if newer."""
    queued = KeyState(tail=w("trigger", item_id=4), latest=4)
    assert on_sent(queued, 4, "trigger", "h1", 7.0) == (
        KeyState(told=w("trigger", at=7.0, item_id=4), latest=4), False)
    behind = KeyState(tail=w("resolve", item_id=5), latest=5)
    assert on_sent(behind, 4, "trigger", "h1", 7.0)[0].tail == w("resolve", item_id=5)


def test_a_timeout_makes_the_next_resolve_go_twice() -> None:
    """After a send timed out, the delivered resolve stays queued once more; the mark is then gone."""
    state = on_retry_timeout(KeyState(tail=w("resolve", item_id=2)), "timed out")
    again, resend = on_sent(state, 2, "resolve", "h1", 3.0)
    assert resend and again.uncertain is None and again.tail == w("resolve", item_id=2)
    assert on_sent(again, 2, "resolve", "h1", 4.0) == (KeyState(told=w("resolve", at=4.0, item_id=2)), False)


def test_dead_and_purged_items_leave_the_tail() -> None:
    """A dead-lettered tail leaves the queue but stays Alertmanager's last word; a purge falls back."""
    state = KeyState(told=w("trigger"), tail=w("resolve", item_id=2), latest=2)
    assert on_dead(state, 2) == KeyState(told=w("trigger"), latest=2)
    assert on_dead(state, 1) == state
    assert on_purged(state, 2, w("trigger", item_id=1)).tail == w("trigger", item_id=1)


def _ledger(states: dict[tuple[str, str], KeyState] | None = None, first_id: int = 10) -> Ledger:
    ids = iter(range(first_id, 10_000))
    return Ledger(dict(states or {}), lambda: next(ids))


def test_intake_queues_then_coalesces_and_points_latest_at_the_carrier() -> None:
    """A new trigger is queued with a fresh id; the same again is coalesced onto it."""
    ledger = _ledger()
    [first] = ledger.intake(Incoming("a", "k", "trigger", "h1"), 0.0, RESEND)
    [again] = ledger.intake(Incoming("a", "k", "trigger", "h1"), 1.0, RESEND)
    assert (first.verdict, first.item_id, again.verdict, again.item_id) == (Verdict.QUEUE, 10, Verdict.COALESCED, 10)
    assert ledger.get(("a", "k")) == KeyState(tail=w("trigger", item_id=10), latest=10)
    assert ledger.changed == {("a", "k")}


def test_intake_reroutes_a_resolve_to_its_triggers_key() -> None:
    """A resolve named for key a goes to b, where its trigger went."""
    ledger = _ledger({("b", "k"): KeyState(told=w("trigger", item_id=3), latest=3)})
    [out] = ledger.intake(Incoming("a", "k", "resolve", "r"), 0.0, RESEND)
    assert (out.verdict, out.routing_key, out.rerouted, out.priority) == (Verdict.QUEUE, "b", True, 0)


def test_intake_resolves_every_key_a_trigger_went_to() -> None:
    """An alert whose routing changed while it fired is resolved under both keys, with two new items."""
    ledger = _ledger({("a", "k"): KeyState(told=w("trigger", item_id=3), latest=3),
                      ("b", "k"): KeyState(told=w("trigger", item_id=4), latest=4)})
    outs = ledger.intake(Incoming("b", "k", "resolve", "r"), 0.0, RESEND)
    assert [(o.verdict, o.routing_key, o.item_id, o.rerouted) for o in outs] == [
        (Verdict.QUEUE, "b", 10, False), (Verdict.QUEUE, "a", 11, True)]


def test_invalid_events_are_dead_and_become_the_latest_word() -> None:
    """An event that could not be made valid is stored dead, with its own id, as the key's last word."""
    ledger = _ledger({("a", "k"): KeyState(told=w("trigger"), latest=1)})
    [out] = ledger.intake(Incoming("a", "k", "resolve", "r", valid=False), 0.0, RESEND)
    assert (out.verdict, out.item_id, ledger.get(("a", "k")).latest) == (Verdict.DEAD, 10, 10)


def test_replay_of_the_last_word_requeues_it_under_the_key_the_rules_name_now() -> None:
    """A dead letter made under a misspelt key name is requeued under the corrected one."""
    ledger = _ledger({("paymnets", "k"): KeyState(latest=5)})
    [out] = ledger.replay(5, ("paymnets", "k"), Incoming("payments", "k", "trigger", "h2"), 9.0, RESEND)
    assert (out.verdict, out.routing_key, out.item_id) == (Verdict.QUEUE, "payments", 5)
    assert ledger.get(("payments", "k")) == KeyState(tail=w("trigger", "h2", 9.0, 5), latest=5)
    assert ledger.get(("paymnets", "k")).latest == 0


def test_replay_of_an_older_word_is_superseded() -> None:
    """A dead trigger followed by a delivered resolve must not be replayed: PagerDuty would reopen it."""
    ledger = _ledger({("a", "k"): KeyState(told=w("resolve", item_id=6), latest=6)})
    [out] = ledger.replay(5, ("a", "k"), Incoming("a", "k", "trigger", "h1"), 9.0, RESEND)
    assert (out.verdict, out.item_id) == (Verdict.SUPERSEDED, 6)
    assert ledger.changed == set()


def test_replay_of_what_pagerduty_already_has_is_a_duplicate() -> None:
    """A dead trigger identical to the trigger PagerDuty accepted since is not sent again."""
    ledger = _ledger({("a", "k"): KeyState(told=w("trigger", at=8.0, item_id=3), latest=5)})
    [out] = ledger.replay(5, ("a", "k"), Incoming("a", "k", "trigger", "h1"), 9.0, RESEND)
    assert (out.verdict, out.item_id) == (Verdict.DUPLICATE, 3)


def test_a_repeated_word_keeps_its_carrier_replayable() -> None:
    """A resolve queued, repeated by Alertmanager (a duplicate), then dead-lettered: the replay sends it."""
    ledger = _ledger({("a", "k"): KeyState(told=w("trigger", item_id=3), latest=3)})
    [first] = ledger.intake(Incoming("a", "k", "resolve", "r"), 0.0, RESEND)
    [again] = ledger.intake(Incoming("a", "k", "resolve", "r"), 1.0, RESEND)
    assert (first.verdict, again.verdict, again.item_id) == (Verdict.QUEUE, Verdict.DUPLICATE, first.item_id)
    ledger.states[("a", "k")] = on_dead(ledger.get(("a", "k")), first.item_id)
    [out] = ledger.replay(first.item_id, ("a", "k"), Incoming("a", "k", "resolve", "r"), 2.0, RESEND)
    assert (out.verdict, out.item_id) == (Verdict.QUEUE, first.item_id)


def test_a_new_word_under_another_key_supersedes_dead_letters_elsewhere() -> None:
    """Dead trigger under b, then Alertmanager's resolve goes to a: the dead trigger has nothing left to say."""
    ledger = _ledger({("b", "k"): KeyState(latest=5)})
    ledger.intake(Incoming("a", "k", "resolve", "r"), 0.0, RESEND)
    [out] = ledger.replay(5, ("b", "k"), Incoming("b", "k", "trigger", "h1"), 1.0, RESEND)
    assert out.verdict is Verdict.SUPERSEDED


def test_replay_that_is_still_invalid_stays_dead() -> None:
    """Rules that still cannot render the event leave it a dead letter."""
    ledger = _ledger({("a", "k"): KeyState(latest=5)})
    [out] = ledger.replay(5, ("a", "k"), Incoming("a", "k", "trigger", "h1", valid=False), 9.0, RESEND)
    assert out.verdict is Verdict.DEAD and ledger.changed == set()


# ---------------------------------------------------------------- the property: no page left open


@dataclass
class _Item:
    key: tuple[str, str]
    action: str
    h: str
    dead: bool = False


@dataclass
class _Model:
    """A minimal backend on the pure rules: items by id, one key's state, PagerDuty's last word per routing key."""

    ledger: Ledger = field(default_factory=lambda: _ledger(first_id=1))
    items: dict[int, _Item] = field(default_factory=dict)
    pagerduty: dict[str, tuple[str, str]] = field(default_factory=dict)
    alertmanager: tuple[str, str] | None = None
    now: float = 0.0

    def intake(self, action: str, h: str, routing_key: str, valid: bool) -> None:
        self.alertmanager = (action, h)
        outs = self.ledger.intake(Incoming(routing_key, "k", action, h, valid=valid),  # type: ignore[arg-type]
                                  self.now, RESEND)
        for out in outs:
            if out.verdict in (Verdict.QUEUE, Verdict.DEAD):
                self.items[out.item_id] = _Item((out.routing_key, "k"), action, h, dead=out.verdict is Verdict.DEAD)

    def head(self, routing_key: str | None = None) -> int | None:
        """The oldest queued item of ``routing_key`` (of any key if None): keys are delivered independently."""
        queued = [i for i, it in self.items.items() if not it.dead and routing_key in (None, it.key[0])]
        return min(queued) if queued else None

    def send(self, outcome: str, routing_key: str | None = None) -> None:
        item_id = self.head(routing_key)
        if item_id is None:
            return
        item = self.items[item_id]
        state = self.ledger.get(item.key)
        if outcome in ("202", "timeout-landed"):
            self.pagerduty[item.key[0]] = (item.action, item.h)
        if outcome == "202":
            new, again = on_sent(state, item_id, item.action, item.h, self.now)  # type: ignore[arg-type]
            self.ledger.states[item.key] = new
            if not again:
                del self.items[item_id]
        elif outcome == "400":
            self.ledger.states[item.key] = on_dead(state, item_id)
            item.dead = True
        elif outcome.startswith("timeout"):
            self.ledger.states[item.key] = on_retry_timeout(state, "timed out")
        # 429 and 5xx: the item stays queued for a later attempt

    def replay_all(self, routing_key: str) -> None:
        for item_id in sorted(i for i, it in self.items.items() if it.dead):
            item = self.items[item_id]
            incoming = Incoming(routing_key, "k", item.action, item.h)  # type: ignore[arg-type]
            del self.items[item_id]
            for out in self.ledger.replay(item_id, item.key, incoming, self.now, RESEND):
                assert out.item_id not in self.items or out.verdict is not Verdict.QUEUE  # ids never reused
                if out.verdict is Verdict.QUEUE:
                    self.items[out.item_id] = _Item((out.routing_key, "k"), item.action, item.h)

    def drain(self) -> None:
        for _ in range(1000):
            if self.head() is None:
                return
            self.send("202")
        raise AssertionError("the queue never drained")


_step = st.one_of(
    st.tuples(st.just("intake"), st.sampled_from(["trigger", "resolve"]), st.sampled_from(["h1", "h2"]),
              st.sampled_from(["a", "b"]), st.booleans()),
    st.tuples(st.just("send"), st.sampled_from(["202", "400", "429", "503", "timeout-landed", "timeout-lost"]),
              st.sampled_from(["a", "b"])),
    st.tuples(st.just("replay"), st.sampled_from(["a", "b"])),
    st.tuples(st.just("wait"), st.sampled_from([1.0, 50.0, 150.0])),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_step, max_size=30), st.sampled_from(["a", "b"]))
def test_pagerdutys_last_word_ends_as_alertmanagers(steps: list[tuple[object, ...]], fixed_key: str) -> None:
    """Any sequence of intake (valid or not, under either routing key), send outcomes, replays and waits,
    followed by PagerDuty recovering, a fix of the rules (``fixed_key``), a replay and a drain: PagerDuty's
    last word for the alert equals Alertmanager's last word."""
    model = _Model()
    for step in steps:
        match step:
            case ("intake", action, h, key, valid):
                model.intake(str(action), str(h), str(key), bool(valid))
            case ("send", outcome, key):
                model.send(str(outcome), str(key))
            case ("replay", key):
                model.replay_all(str(key))
            case ("wait", seconds):
                model.now += float(seconds)  # type: ignore[arg-type]
    model.drain()
    model.replay_all(fixed_key)
    model.drain()
    if model.alertmanager is None:
        assert model.pagerduty == {}
        return
    open_at = {key for key, word in model.pagerduty.items() if word[0] == "trigger"}
    if model.alertmanager[0] == "resolve":
        assert open_at == set(), (model.alertmanager, model.pagerduty)
    else:
        assert model.alertmanager in model.pagerduty.values(), (model.alertmanager, model.pagerduty)
