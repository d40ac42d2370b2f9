"""What pdrelay_limiter_wait_seconds and /status's budget read from the limiter: how long a send ready at a
given time waited for its key's room (window, 429 pause, global limit), and a key's budget, on a fake clock."""

from __future__ import annotations

from receiver.limiter import RateLimit, RateLimiter
from tests.fakes import FakeClock


def test_a_send_waits_only_for_the_time_its_key_had_no_room() -> None:
    clock = FakeClock()
    t0 = clock.monotonic()
    limiter = RateLimiter(RateLimit(per_key=2, window_seconds=60), clock)
    assert limiter.waited("k", t0) == 0.0  # never without room
    assert limiter.take("k") == t0
    assert limiter.waited("k", t0) == 0.0
    assert limiter.take("k") == t0  # the window is full from now until t0 + 60
    clock.advance(60)
    assert limiter.waited("k", t0 + 10) == 50.0  # ready at t0 + 10: waited until the window had room
    assert limiter.waited("k", t0 - 5) == 60.0  # ready before the key was full: only the full time counts
    assert limiter.take("k") == t0 + 60 and limiter.take("k") == t0 + 60  # full again at once: one stretch
    clock.advance(60)
    assert limiter.waited("k", t0 + 10) == 110.0
    clock.advance(100)  # room since t0 + 180
    assert limiter.waited("k", t0 + 200) == 0.0  # ready after the room came back: it did not wait


def test_a_429_pause_and_the_global_limit_count_as_waiting() -> None:
    clock = FakeClock()
    t0 = clock.monotonic()
    limiter = RateLimiter(RateLimit(per_key=100, window_seconds=60, global_limit=(1, 10)), clock)
    limiter.penalize("a", 30)
    clock.advance(30)
    assert limiter.waited("a", t0) == 30.0
    assert limiter.take("b") == t0 + 30  # the global window is full for 10 s
    clock.advance(4)
    assert limiter.take("c") is None
    clock.advance(6)
    assert (limiter.waited("c", t0 + 32), limiter.waited("a", t0 + 30)) == (8.0, 10.0)


def test_budget_reads_used_limit_and_next_send_without_changing_anything() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(per_key=2, window_seconds=60, overrides={"slow": (1, 30.0)}), clock)
    assert limiter.budget("k") == (0, 2, 60.0, 0.0)
    limiter.take("k")
    clock.advance(15)
    limiter.take("k")
    assert limiter.budget("k") == (2, 2, 60.0, 45.0)
    limiter.take("slow")
    limiter.penalize("slow", 50)
    assert limiter.budget("slow") == (1, 1, 30.0, 50.0)
    clock.advance(45)
    assert limiter.budget("k") == (1, 2, 60.0, 0.0)
    assert limiter.budget("never-seen") == (0, 2, 60.0, 0.0)
