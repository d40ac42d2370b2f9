"""Replicas benchmark: pdrelay processes on one Redis outbox drain a storm on one routing key (run by hand).

    .venv/bin/python tests/bench/bench_replicas.py [--alerts 30] [--per-key 10] [--window 1] [--lease 2]

Real ``pdrelay serve`` processes (``outbox.backend: redis`` on 127.0.0.1:6379, a fresh key prefix per
row, deleted afterwards) post to a PagerDuty stand-in that enforces the budget itself
(``tests/faults/fault_support.LimitedPagerDuty``: ``per_key`` events per routing key in any sliding
``window`` seconds, counted on arrival; a 429 above it). The storm is one Alertmanager notification of
``--alerts`` alerts firing and one of the same alerts resolved, posted to the first replica: a trigger and
a resolve per dedup key, ``2 × alerts`` events, more than one window holds. Rows:

- **1 replica** (the baseline): one pdrelay drains the storm;
- **2 replicas**: two pdrelays share the queue and the budget;
- **2 replicas, 1 killed**: as above, and the replica that accepted the storm is SIGKILLed once the first
  window's sends are answered and acked, holding leases on what it claimed; the other takes them back
  after ``--lease`` seconds and delivers the rest.

Figures per row: 429s provoked (0 expected: the replicas pace to the shared budget, counted from each
answer), events delivered more than once (0 expected), and the drain time (first event's arrival to the
last one's) as a ratio to the budget's minimum, ``(ceil(n / per_key) - 1) × window``, and to that plus
the lease (the bound for the killed row: its leased events wait out the lease, overlapping the windows
the budget makes the storm wait anyway). Each row gives up after ``2 × (lease + minimum) + 10`` seconds.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent.parent), str(HERE.parent / "e2e"), str(HERE.parent / "faults")]

from e2e_support import REDIS_URL, PdRelay, drop_redis_prefix, redis_outbox, wait_until  # noqa: E402
from fault_support import LimitedPagerDuty  # noqa: E402
from test_crash_recovery import alert, notification  # noqa: E402


@dataclass(frozen=True)
class Row:
    drain: float | None  # None: not drained within the bound
    throttled: int
    doubled: int
    delivered: int


def storm(alerts: int, resolved: bool) -> dict[str, object]:
    return notification([alert(f"host-{n:03d}:9100", f"{n:016x}", resolved=resolved) for n in range(alerts)])


def run(replicas: int, kill: bool, args: argparse.Namespace, workdir: Path, bound: float) -> Row:
    events = 2 * args.alerts
    prefix = f"bench-replicas-{uuid.uuid4().hex[:12]}"
    pagerduty = {"rate_limit": {"per_key": args.per_key, "window_seconds": args.window},
                 "api_timeout": min(5.0, args.lease / 2), "connect_timeout": min(2.0, args.lease / 4)}
    store = redis.Redis.from_url(REDIS_URL)
    with LimitedPagerDuty(per_key=args.per_key, window_seconds=args.window) as pd:
        relays = [PdRelay(workdir / f"r{i}", events_url=pd.events_url, pagerduty=pagerduty,
                          config={"outbox": redis_outbox(prefix, lease=args.lease)}) for i in range(replicas)]
        try:
            for relay in relays:
                relay.start()
            for resolved in (False, True):
                answer = relays[0].post_alertmanager(storm(args.alerts, resolved))
                if answer.status_code != 200:
                    raise RuntimeError(f"intake answered {answer.status_code}: {answer.text}")
            if kill:
                def first_window_settled() -> bool:
                    queued = int(store.hget("{" + prefix + "}:counts", "queued") or -1)
                    return len(pd.accepted()) >= args.per_key and queued == events - len(pd.accepted())

                wait_until(first_window_settled, what="the first window settled", timeout=bound)
                relays[0].kill(signal.SIGKILL)
            deadline = time.monotonic() + bound
            while len({r.triple[:2] for r in pd.accepted()}) < events and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            for relay in relays:
                relay.stop()
            store.close()
            drop_redis_prefix(prefix)
        accepted = pd.accepted()
        copies = Counter(r.triple[:2] for r in accepted)
        doubled = sum(n - 1 for n in copies.values())
        if len(copies) < events:
            return Row(None, pd.throttled, doubled, len(copies))
        arrivals = [r.at for r in pd.received()]
        return Row(max(r.at for r in accepted) - min(arrivals), pd.throttled, doubled, len(copies))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=30, help="alerts in the storm (a trigger and a resolve each)")
    parser.add_argument("--per-key", type=int, default=10)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--lease", type=float, default=2.0, help="outbox.redis.lease of every replica")
    args = parser.parse_args()
    events = 2 * args.alerts
    minimum = (math.ceil(events / args.per_key) - 1) * args.window
    bound = 2 * (args.lease + minimum) + 10.0
    print(f"storm of {events} events on one key; budget {args.per_key} per {args.window:g} s (minimum drain "
          f"{minimum:.2f} s); lease {args.lease:g} s")
    with tempfile.TemporaryDirectory(prefix="pdrelay-bench-replicas-") as tmp:
        for name, replicas, kill in (("1 replica", 1, False), ("2 replicas", 2, False),
                                     ("2 replicas, 1 killed", 2, True)):
            workdir = Path(tmp) / name.replace(" ", "").replace(",", "-")
            r = run(replicas, kill, args, workdir, bound)
            if r.drain is None:
                drained = f"not drained in {bound:.0f} s ({r.delivered} of {events} delivered)"
            else:
                drained = (f"drain {r.drain:6.2f} s = {r.drain / minimum:5.3f}× the minimum, "
                           f"{r.drain / (args.lease + minimum):5.3f}× (lease + minimum)")
            print(f"{name:21} {drained}; 429s provoked {r.throttled}; delivered twice {r.doubled}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
