"""Fault-scenario timings: how long a restart costs against PagerDuty's window (run by hand).

    .venv/bin/python tests/bench/bench_faults.py [--runs 3] [--per-key 20] [--window 6] [--storm 120]

The fault tests (``tests/faults/test_fault_scenarios.py``) check what arrives, how often, in which
order and how many 429s; they assert no durations. This script times two of their scenarios, against
the same stand-in (``tests/faults/fault_support.LimitedPagerDuty``: ``per_key`` events per sliding
window, counted on arrival, 429 above it), each figure a ratio to the minimum of the same run:

- **restart**: pdrelay (rate limit = the stand-in's, window ``--window`` s) sends a full window of
  triggers, is killed with SIGKILL once they are acknowledged, and restarted on the same outbox with
  as many triggers still queued. Figures: when the restarted pdrelay was ready, and when its first
  send arrived, both after the first send of the window and ÷ the window. A send before 1.000 window
  would spend a window that is still full (the stand-in answers 429); the minimum is 1.000, and the
  distance above it is what pacing after a restart costs.
- **sigkill mid-storm**: ``--storm`` triggers on one key at 20 per 1 s (pdrelay's window 5 % longer),
  SIGKILL after 30 are accepted, restart. Figures: the restart (from the last send before the kill
  to ready) in seconds, and the whole drain ÷ the storm's sliding-window minimum without a restart,
  ``(ceil(n / per_key) - 1) × window``.

Every process listens on port 0 and is stopped by PID; every wait is bounded.
"""

from __future__ import annotations

import argparse
import math
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "e2e"), str(HERE.parent / "faults")]

from e2e_support import PdRelay, wait_until  # noqa: E402
from fault_support import LimitedPagerDuty, am_alert, am_body, fingerprint  # noqa: E402

STORM_WINDOW = 1.0
STORM_MARGIN = 1.05


@dataclass(frozen=True)
class Restart:
    ready: float  # seconds from the window's first send to the restarted pdrelay's /readyz
    next_send: float  # seconds from the window's first send to the first send after the restart
    throttled: int


@dataclass(frozen=True)
class MidStorm:
    restart: float  # seconds from the last send before the kill to the restarted pdrelay's /readyz
    drain: float  # seconds from the first send to the last first-time acceptance
    throttled: int


def post_storm(relay: PdRelay, first: int, count: int) -> None:
    """Post triggers ``first`` … ``first + count - 1`` as Alertmanager bodies of 10 alerts."""
    for start in range(first, first + count, 10):
        body = am_body([am_alert(n) for n in range(start, min(start + 10, first + count))])
        response = relay.post_alertmanager(body)
        assert response.status_code == 200, response.text


def every_trigger(pd: LimitedPagerDuty, count: int, timeout: float) -> None:
    wanted = {fingerprint(n) for n in range(count)}
    pd.wait_accepted(lambda ev: wanted <= {e.triple[1] for e in ev}, what=f"{count} triggers", timeout=timeout)


def run_restart(per_key: int, window: float, workdir: Path) -> Restart:
    with LimitedPagerDuty(per_key=per_key, window_seconds=window) as pd:
        relay = PdRelay(workdir, events_url=pd.events_url,
                        pagerduty={"rate_limit": {"per_key": per_key, "window_seconds": window}, "backoff_on_429": 1})
        try:
            relay.start()
            post_storm(relay, 0, 2 * per_key)
            first = pd.wait_accepted(lambda ev: len(ev) >= per_key, what="a full window of triggers")
            wait_until(lambda: relay.metric("pdrelay_events_sent_total") == per_key or None,
                       what="the first window's acks")
            relay.kill(signal.SIGKILL)
            relay.start()
            ready = time.monotonic()
            every_trigger(pd, 2 * per_key, timeout=window + 30)
            opened = first[0].at
            after = [r.at for r in pd.received() if r.at > first[-1].at]
            return Restart(ready=ready - opened, next_send=after[0] - opened, throttled=pd.throttled)
        finally:
            relay.stop()


def run_mid_storm(events: int, per_key: int, workdir: Path) -> MidStorm:
    with LimitedPagerDuty(per_key=per_key, window_seconds=STORM_WINDOW) as pd:
        rate = {"per_key": per_key, "window_seconds": STORM_WINDOW * STORM_MARGIN}
        relay = PdRelay(workdir, events_url=pd.events_url, pagerduty={"rate_limit": rate, "backoff_on_429": 1})
        try:
            relay.start()
            post_storm(relay, 0, events)
            pd.wait_accepted(lambda ev: len(ev) >= 30, what="30 accepted triggers")
            relay.kill(signal.SIGKILL)
            last_send = pd.received()[-1].at
            relay.start()
            restart = time.monotonic() - last_send
            minimum = (math.ceil(events / per_key) - 1) * STORM_WINDOW
            every_trigger(pd, events, timeout=3 * minimum + 30)
            first: dict[str, float] = {}
            for r in pd.accepted():
                first.setdefault(r.triple[1], r.at)
            drain = max(first.values()) - min(r.at for r in pd.received())
            return MidStorm(restart=restart, drain=drain, throttled=pd.throttled)
        finally:
            relay.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--per-key", type=int, default=20)
    parser.add_argument("--window", type=float, default=6.0, help="the restart scenario's window, seconds")
    parser.add_argument("--storm", type=int, default=120, help="events of the mid-storm scenario")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pdrelay-bench-faults-") as tmp:
        restarts = [run_restart(args.per_key, args.window, Path(tmp) / f"restart-{i}") for i in range(args.runs)]
        storms = [run_mid_storm(args.storm, args.per_key, Path(tmp) / f"storm-{i}") for i in range(args.runs)]
    w = args.window
    ready = statistics.median(r.ready for r in restarts)
    nxt = statistics.median(r.next_send for r in restarts)
    print(f"restart ({args.per_key} per {w:g} s, median of {args.runs}): ready {ready:.2f} s = {ready / w:.3f} "
          f"window; first send after it {nxt:.2f} s = {nxt / w:.3f} window (minimum 1.000); "
          f"429s {[r.throttled for r in restarts]}")
    minimum = (math.ceil(args.storm / args.per_key) - 1) * STORM_WINDOW
    restart = statistics.median(s.restart for s in storms)
    drain = statistics.median(s.drain for s in storms)
    print(f"sigkill mid-storm ({args.storm} events, {args.per_key} per {STORM_WINDOW:g} s, pdrelay's window "
          f"×{STORM_MARGIN}): restart {restart:.2f} s; drain {drain:.2f} s = {drain / minimum:.3f}× the minimum "
          f"({minimum:.1f} s); 429s {[s.throttled for s in storms]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
