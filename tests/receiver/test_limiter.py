"""The sliding-window limiter on a fake clock: exact schedules, overrides, global limit, 429 blocks, memory."""

from __future__ import annotations

from collections import deque

import pytest

from receiver.limiter import RateLimit, RateLimiter
from tests.fakes import FakeClock

T0 = 1000.0  # FakeClock's monotonic start


def reserve(limiter: RateLimiter, key: str) -> float:
    """Take a send for ``key`` now (0.0), or say how long until one is allowed (recording nothing)."""
    if limiter.take(key) is not None:
        return 0.0
    return limiter.next_allowed(key) - limiter._clock.monotonic()


def budget(limiter: RateLimiter, key: str) -> int:
    """How many sends ``key`` could make now, from what the limiter shows on /status and says is blocked."""
    snap = limiter.snapshot()
    entry = snap["keys"].get(key)
    if entry is not None and "blocked_until" in entry:
        return 0
    room = limiter.settings.for_key(key)[0] - (entry["used"] if entry else 0)
    if snap["global"] is not None:
        room = min(room, snap["global"]["limit"] - snap["global"]["used"])
    return max(room, 0)


def remembered(limiter: RateLimiter) -> int:
    return len(limiter.snapshot()["keys"])


def drive(limiter: RateLimiter, clock: FakeClock, keys: list[str]) -> list[tuple[str, float]]:
    """Send every key in order as a dispatcher would: reserve, sleep the delay, reserve again."""
    sent: list[tuple[str, float]] = []
    for key in keys:
        while (delay := reserve(limiter, key)) > 0:
            assert limiter.next_allowed(key) == clock.monotonic() + delay
            clock.advance(delay)
        sent.append((key, clock.monotonic() - T0))
    return sent


def max_in_window(times: list[float], window: float) -> int:
    """The most sends inside any window [t, t + window) — independent of the limiter's code."""
    times = sorted(times)
    best, live = 0, deque[float]()
    for t in times:
        live.append(t)
        while live[0] <= t - window:
            live.popleft()
        best = max(best, len(live))
    return best


def test_a_storm_of_300_goes_out_at_the_full_budget_and_never_over_it() -> None:
    """300 events on one key at 120/60 s go 120 at 0 s, 120 at 60 s, 60 at 120 s: the fastest legal schedule."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(), clock)
    times = [t for _, t in drive(limiter, clock, ["k"] * 300)]
    assert times == [0.0] * 120 + [60.0] * 120 + [120.0] * 60
    assert max_in_window(times, 60.0) == 120
    assert times[-1] == 120.0
    # Any 300 sends with at most 120 in every [t, t+60) need a send at >= 120 s: [0,60) and [60,120) hold 240.
    assert max_in_window(times[:-1] + [119.999], 60.0) > 120


def test_the_token_bucket_schedule_would_provoke_a_429() -> None:
    """The token-bucket schedule (120 at 0 s, then one per 0.5 s, last at 90 s) puts 239 sends in one window."""
    bucket = [0.0] * 120 + [0.5 * i for i in range(1, 181)]
    assert bucket[-1] == 90.0
    assert max_in_window(bucket, 60.0) == 239
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(), clock)
    drive(limiter, clock, ["k"] * 120)
    clock.advance(0.5)
    assert reserve(limiter, "k") == 59.5


def test_sends_leave_the_window_one_by_one_when_they_were_spread_out() -> None:
    """Sends made one per 0.5 s free their slots one per 0.5 s exactly 60 s later."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(per_key=4, window_seconds=2.0), clock)
    for _ in range(4):
        assert reserve(limiter, "k") == 0.0
        clock.advance(0.5)
    assert clock.monotonic() - T0 == 2.0
    times = [t for _, t in drive(limiter, clock, ["k"] * 6)]
    assert times == [2.0, 2.5, 3.0, 3.5, 4.0, 4.5]


def test_reserve_records_nothing_when_it_answers_a_delay() -> None:
    """A refused reserve leaves the budget and the next allowed time unchanged."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(per_key=2, window_seconds=10.0), clock)
    assert reserve(limiter, "k") == 0.0
    clock.advance(3.0)
    assert reserve(limiter, "k") == 0.0
    for _ in range(5):
        assert reserve(limiter, "k") == 7.0
    assert limiter.next_allowed("k") == T0 + 10.0
    assert budget(limiter, "k") == 0
    clock.advance(7.0)
    assert budget(limiter, "k") == 1
    assert reserve(limiter, "k") == 0.0
    assert reserve(limiter, "k") == 3.0


def test_keys_are_independent() -> None:
    """A key at its limit does not slow another key."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(), clock)
    drive(limiter, clock, ["a"] * 120)
    assert reserve(limiter, "a") == 60.0
    assert limiter.next_allowed("b") == T0
    assert [t for _, t in drive(limiter, clock, ["b"] * 120)] == [0.0] * 120
    assert budget(limiter, "a") == 0
    assert budget(limiter, "b") == 0
    assert budget(limiter, "c") == 120


def test_overrides_apply_only_to_their_key() -> None:
    """An AIOps key with 10,000/60 s sends 10,000 at once while the default key stops at 120."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(overrides={"aiops": (10_000, 60)}), clock)
    assert budget(limiter, "aiops") == 10_000
    sent = drive(limiter, clock, ["aiops"] * 10_000 + ["default"] * 121)
    assert {t for k, t in sent if k == "aiops"} == {0.0}
    assert [t for k, t in sent if k == "default"] == [0.0] * 120 + [60.0]
    assert reserve(limiter, "aiops") == 0.0  # the aiops window from 0 s closed at 60 s as well


def test_override_with_its_own_window() -> None:
    """An override (3, 10 s) schedules on a 10 s window."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(overrides={"slow": (3, 10.0)}), clock)
    assert [t for _, t in drive(limiter, clock, ["slow"] * 7)] == [0.0, 0.0, 0.0, 10.0, 10.0, 10.0, 20.0]


def test_global_limit_spans_all_keys() -> None:
    """With a global limit of 5/10 s, three keys share five sends per window even though each allows 120."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(global_limit=(5, 10.0)), clock)
    sent = drive(limiter, clock, ["a", "b", "c"] * 4)
    assert [t for _, t in sent] == [0.0] * 5 + [10.0] * 5 + [20.0] * 2
    assert max_in_window([t for _, t in sent], 10.0) == 5
    assert budget(limiter, "a") == 3  # key room 118, global room 3
    assert limiter.next_allowed("z") == T0 + 20.0


def test_both_windows_must_have_room() -> None:
    """The later of the key's and the global window's next slot wins."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(per_key=2, window_seconds=30.0, global_limit=(3, 10.0)), clock)
    sent = drive(limiter, clock, ["a", "a", "a", "b", "c", "c"])
    # a's third waits for its key window (30 s); c's second waits for the global window (40 s).
    assert sent == [("a", 0.0), ("a", 0.0), ("a", 30.0), ("b", 30.0), ("c", 30.0), ("c", 40.0)]


def test_penalize_blocks_only_that_key() -> None:
    """After a 429, the key waits the penalty; other keys and its own window are untouched."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(), clock)
    assert reserve(limiter, "a") == 0.0
    limiter.penalize("a", 30.0)
    assert reserve(limiter, "a") == 30.0
    assert limiter.next_allowed("a") == T0 + 30.0
    assert budget(limiter, "a") == 0
    assert reserve(limiter, "b") == 0.0
    clock.advance(12.5)
    assert reserve(limiter, "a") == 17.5
    limiter.penalize("a", 5.0)  # a shorter penalty does not shorten the block
    assert reserve(limiter, "a") == 17.5
    clock.advance(17.5)
    assert budget(limiter, "a") == 119
    assert reserve(limiter, "a") == 0.0


def test_penalize_extends_and_combines_with_the_window() -> None:
    """A longer penalty extends the block, and a window that frees later than the block still governs."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(per_key=1, window_seconds=60.0), clock)
    assert reserve(limiter, "a") == 0.0
    limiter.penalize("a", 10.0)
    assert reserve(limiter, "a") == 60.0
    limiter.penalize("a", 90.0)
    assert reserve(limiter, "a") == 90.0
    limiter.penalize("fresh", 0.0)
    assert reserve(limiter, "fresh") == 0.0


def test_snapshot_shows_limits_usage_and_blocks() -> None:
    """The snapshot lists each remembered key with limit, window, used and any block, plus the global window."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(overrides={"aiops": (10_000, 60.0)}, global_limit=(500, 60.0)), clock)
    drive(limiter, clock, ["default"] * 3 + ["aiops"] * 2)
    limiter.penalize("default", 30.0)
    clock.advance(10.0)
    assert limiter.snapshot() == {
        "keys": {
            "aiops": {"limit": 10_000, "window_seconds": 60.0, "used": 2},
            "default": {"limit": 120, "window_seconds": 60.0, "used": 3,
                        "blocked_until": T0 + 30.0, "blocked_for": 20.0},
        },
        "global": {"limit": 500, "window_seconds": 60.0, "used": 5},
    }
    clock.advance(50.0)
    assert limiter.snapshot() == {"keys": {}, "global": {"limit": 500, "window_seconds": 60.0, "used": 0}}
    assert RateLimiter(RateLimit(), clock).snapshot() == {"keys": {}, "global": None}


def test_idle_keys_are_forgotten() -> None:
    """Ten thousand keys used once are dropped after their window; memory follows the active keys only."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(), clock)
    for i in range(10_000):
        assert reserve(limiter, f"k{i}") == 0.0
    assert remembered(limiter) == 10_000
    clock.advance(60.0)
    assert reserve(limiter, "busy") == 0.0
    assert remembered(limiter) == 1
    assert budget(limiter, "k0") == 120


def test_a_blocked_key_is_not_forgotten_while_blocked() -> None:
    """A penalized key outlives its window until the block ends."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(), clock)
    limiter.penalize("a", 300.0)
    clock.advance(120.0)
    assert reserve(limiter, "b") == 0.0
    assert remembered(limiter) == 2
    assert reserve(limiter, "a") == 180.0
    clock.advance(180.0)
    assert reserve(limiter, "b") == 0.0
    assert remembered(limiter) == 1


def test_memory_per_key_is_bounded_by_its_limit() -> None:
    """However many reserves are refused, a key's log never holds more than its limit."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(per_key=5, window_seconds=1.0), clock)
    for _ in range(1_000):
        reserve(limiter, "k")
        clock.advance(0.01)
    assert max(len(st.window.sends) for st in limiter._keys.values()) == 5


def test_settings_are_immutable_and_normalised() -> None:
    """RateLimit defaults to 120/60 s, and copies overrides into a read-only mapping."""
    raw = {"aiops": (10_000, 60)}
    s = RateLimit(overrides=raw)
    raw["other"] = (1, 1)
    assert (s.per_key, s.window_seconds, s.global_limit) == (120, 60.0, None)
    assert dict(s.overrides) == {"aiops": (10_000, 60.0)}
    assert s.for_key("aiops") == (10_000, 60.0)
    assert s.for_key("x") == (120, 60.0)
    with pytest.raises(TypeError):
        s.overrides["x"] = (1, 1.0)  # type: ignore[index]
    with pytest.raises(AttributeError):
        s.per_key = 1  # type: ignore[misc]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"per_key": 0}, "rate_limit.per_key must be a positive integer, got 0"),
    ({"per_key": -5}, "rate_limit.per_key must be a positive integer, got -5"),
    ({"per_key": 1.5}, "rate_limit.per_key must be a positive integer, got 1.5"),
    ({"per_key": True}, "rate_limit.per_key must be a positive integer, got True"),
    ({"window_seconds": 0}, "rate_limit.window_seconds must be a positive number of seconds, got 0"),
    ({"window_seconds": -1.0}, "rate_limit.window_seconds must be a positive number of seconds, got -1.0"),
    ({"window_seconds": float("inf")}, "rate_limit.window_seconds must be a positive number of seconds, got inf"),
    ({"overrides": {"aiops": (0, 60)}}, "rate_limit.overrides['aiops'] events must be a positive integer, got 0"),
    ({"overrides": {"aiops": (10, 0)}},
     "rate_limit.overrides['aiops'] window_seconds must be a positive number of seconds, got 0"),
    ({"overrides": {"aiops": 10}}, "rate_limit.overrides['aiops'] must be a pair (events, window_seconds), got 10"),
    ({"global_limit": (-1, 60.0)}, "rate_limit.global_limit events must be a positive integer, got -1"),
    ({"global_limit": (100, -60.0)},
     "rate_limit.global_limit window_seconds must be a positive number of seconds, got -60.0"),
])
def test_invalid_settings_are_rejected_with_a_clear_message(kwargs: dict[str, object], message: str) -> None:
    """Non-positive or malformed numbers raise ValueError naming the setting and the bad value."""
    with pytest.raises(ValueError) as info:
        RateLimit(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_negative_penalty_is_rejected() -> None:
    """penalize refuses a negative number of seconds."""
    limiter = RateLimiter(RateLimit(), FakeClock())
    with pytest.raises(ValueError, match="penalize: seconds must be a non-negative number, got -1"):
        limiter.penalize("a", -1)


def test_settle_counts_a_send_from_its_answer() -> None:
    """A send answered later is counted from the answer, so the next window opens that much later."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(per_key=1, window_seconds=1.0), clock)
    taken = limiter.take("k")
    assert taken == clock.monotonic()
    assert limiter.take("k") is None
    clock.advance(0.3)
    limiter.settle("k", taken, clock.monotonic())
    clock.advance(0.8)  # 1.1 s after the take, 0.8 s after the answer
    assert reserve(limiter, "k") == pytest.approx(0.2)
    clock.advance(0.2)
    assert reserve(limiter, "k") == 0.0


def test_seeded_sends_fill_the_window_until_they_age_out() -> None:
    """Sends remembered from before a restart count exactly as if this limiter had made them."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(per_key=3, window_seconds=60.0, global_limit=(4, 60.0)), clock)
    counted = limiter.seed([("a", 50.0), ("a", 10.0), ("a", 70.0), ("b", 5.0)])
    assert counted == 3  # the send 70 s ago is already out of the window
    assert budget(limiter, "a") == 1
    assert budget(limiter, "b") == 1  # global: 3 of 4 used
    assert limiter.take("a") is not None
    assert limiter.take("b") is None  # the global window is full now
    clock.advance(10.0)  # the send 50 s ago leaves the window at 60 s
    assert budget(limiter, "a") == 1
    assert limiter.next_allowed("b") == clock.monotonic()


def test_seed_ignores_future_times_as_now() -> None:
    """A wall clock that stepped back makes a send look like it is from the future: count it as now."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(per_key=1, window_seconds=60.0), clock)
    assert limiter.seed([("a", -30.0)]) == 1
    assert limiter.next_allowed("a") == clock.monotonic() + 60.0


def test_blocked_names_each_key_without_budget_and_when_it_has_room_again() -> None:
    """A full window and a 429 pause both show in blocked(), with the time each key may send again."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(per_key=2, window_seconds=10.0, global_limit=(3, 10.0)), clock)
    assert limiter.blocked() == ({}, T0)
    limiter.take("full")
    clock.advance(1.0)
    limiter.take("full")
    limiter.penalize("paused", 30.0)
    assert limiter.blocked() == ({"full": T0 + 10.0, "paused": T0 + 31.0}, T0 + 1.0)
    limiter.take("other")  # the third send in the global window
    assert limiter.blocked()[1] == T0 + 10.0
    clock.advance(9.0)  # the send at T0 leaves both windows: room again, but not for the paused key
    assert limiter.blocked() == ({"paused": T0 + 31.0}, T0 + 10.0)
