"""Storm benchmark: how fast an alert storm drains through PagerDuty's per-key budget (run by hand).

    .venv/bin/python tests/bench/bench_storm.py [--events 300] [--per-key 20] [--window 1] [--runs 3] [--margin 1.05]

A PagerDuty stand-in (``tests/faults/fault_support.LimitedPagerDuty``) enforces PagerDuty's rule:
at most ``per_key`` events per routing key in any sliding ``window`` seconds, counted on arrival,
429 above it, and a 429 ingests nothing. The defaults are PagerDuty's 120 / 60 s scaled down in
time (×1/60) and count (×1/6) so a run takes seconds; ``--per-key 120 --window 60`` is the real
budget (a 300-event storm then needs two minutes per run).

Three senders drain the same storm of ``--events`` triggers on one key, one after the other, each
against a fresh stand-in, in the same run:

- **naive** (the baseline): what a sender without pacing does, as Alertmanager's own notifier: it
  posts as fast as 16 connections allow and retries a 429 after a fixed pause (a quarter window);
- **pdrelay**: ``pdrelay serve`` with ``rate_limit`` set to the stand-in's budget, fed the storm as
  30 Alertmanager bodies;
- **pdrelay×1.05**: the same with pdrelay's window ``--margin`` (1.05) times the stand-in's, the
  safety margin an operator may add; its drain is also given against its own minimum (the same formula with its
  own window).

The storm tests in ``tests/faults/test_fault_scenarios.py`` check the outcome (every event once,
no 429); these figures are how long it took. Expected: pdrelay within 5 % of the minimum, and
pdrelay×1.05 within 5 % of its own.

Figures, per sender: the drain time (first event to last accepted) as a ratio to the budget's
minimum, the 429s it provoked, and the share of the budget it used. The minimum: a sliding window
that starts empty lets ``per_key`` events through at once and ``per_key`` more a window after each
batch, so ``n`` events need ``(ceil(n / per_key) - 1) × window``. The budget share: events accepted
divided by the most the window allowed in the drain time, ``per_key × (floor(drain / window) + 1)``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "e2e"), str(HERE.parent / "faults")]

from e2e_support import ROUTING_KEY, PdRelay, wait_until  # noqa: E402
from fault_support import LimitedPagerDuty, am_alert, am_body, fingerprint  # noqa: E402


@dataclass(frozen=True)
class Result:
    drain: float
    throttled: int
    accepted: int


def drained(pd: LimitedPagerDuty, events: int) -> Result:
    accepted = pd.accepted()
    first: dict[str, float] = {}
    for r in accepted:
        first.setdefault(r.triple[1], r.at)
    assert len(first) == events, f"only {len(first)} of {events} distinct events arrived"
    start = min(r.at for r in pd.received())
    return Result(drain=max(first.values()) - start, throttled=pd.throttled, accepted=len(first))


def run_naive(events: int, per_key: int, window: float) -> Result:
    """16 connections, no pacing, a 429 retried after window / 4."""
    with LimitedPagerDuty(per_key=per_key, window_seconds=window) as pd:

        async def main() -> None:
            limits = httpx.Limits(max_connections=16)
            async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
                sem = asyncio.Semaphore(16)

                async def send(n: int) -> None:
                    body = {"routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": fingerprint(n),
                            "payload": {"summary": f"Storm on host-{n}", "source": f"host-{n}",
                                        "severity": "critical"}}
                    while True:
                        async with sem:
                            response = await client.post(pd.events_url, json=body)
                        if response.status_code != 429:
                            return
                        await asyncio.sleep(window / 4)

                await asyncio.gather(*(send(n) for n in range(events)))

        asyncio.run(main())
        return drained(pd, events)


def run_pdrelay(events: int, per_key: int, window: float, workdir: Path, margin: float = 1.0) -> Result:
    """pdrelay with ``rate_limit`` = the stand-in's budget, its window ``margin`` times the stand-in's."""
    with LimitedPagerDuty(per_key=per_key, window_seconds=window) as pd:
        relay = PdRelay(workdir, events_url=pd.events_url,
                        pagerduty={"rate_limit": {"per_key": per_key, "window_seconds": window * margin}})
        relay.start()
        try:
            batch = 10
            for b in range(math.ceil(events / batch)):
                alerts = [am_alert(n) for n in range(b * batch, min(events, (b + 1) * batch))]
                response = relay.post_alertmanager(am_body(alerts))
                assert response.status_code == 200, response.text
            minimum = (math.ceil(events / per_key) - 1) * window
            wait_until(lambda: len({r.triple[1] for r in pd.accepted()}) >= events,
                       what="every event accepted", timeout=3 * minimum + 30)
            return drained(pd, events)
        finally:
            relay.stop()


def report(name: str, results: list[Result], events: int, per_key: int, window: float, margin: float = 1.0) -> None:
    minimum = (math.ceil(events / per_key) - 1) * window
    drain = statistics.median(r.drain for r in results)
    share = statistics.median(r.accepted / (per_key * (math.floor(r.drain / window) + 1)) for r in results)
    throttled = [r.throttled for r in results]
    own = f" = {drain / (minimum * margin):5.3f}× its own ({minimum * margin:.2f} s)" if margin != 1.0 else ""
    print(f"{name:12} drain {drain:7.2f} s = {drain / minimum:5.3f}× the minimum ({minimum:.1f} s){own}; "
          f"429s provoked {throttled}; budget used {share:6.1%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--per-key", type=int, default=20)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--margin", type=float, default=1.05, help="the third sender's window ÷ the stand-in's")
    args = parser.parse_args()
    events, per_key, window = args.events, args.per_key, args.window
    print(f"storm of {events} triggers on one key; budget {per_key} per {window:g} s sliding window; "
          f"median of {args.runs} runs")
    naive = [run_naive(events, per_key, window) for _ in range(args.runs)]
    with tempfile.TemporaryDirectory(prefix="pdrelay-bench-storm-") as tmp:
        relay = [run_pdrelay(events, per_key, window, Path(tmp) / f"run-{i}") for i in range(args.runs)]
        wider = [run_pdrelay(events, per_key, window, Path(tmp) / f"margin-{i}", args.margin)
                 for i in range(args.runs)]
    report("naive", naive, events, per_key, window)
    report("pdrelay", relay, events, per_key, window)
    report(f"pdrelay×{args.margin:g}", wider, events, per_key, window, args.margin)
    ratio = statistics.median(r.drain for r in relay) / statistics.median(r.drain for r in naive)
    print(f"pdrelay / naive drain time: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
