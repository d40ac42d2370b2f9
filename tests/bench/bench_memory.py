"""Memory and liveness under hostile intake: peak RSS per attack, and /healthz latency under a storm.

    .venv/bin/python tests/bench/bench_memory.py [--only labels,bombs,storm,wide,slow,all,healthz]
                                                 [--body-limit BYTES]

One ``pdrelay serve`` process at the default settings with rules/default.yaml (the code it runs is
whatever ``receiver`` Python imports: ``PYTHONPATH=<other checkout>`` measures another version),
posting to a PagerDuty stand-in that answers 202. Each attack starts from a reset peak
(``5`` to /proc/PID/clear_refs); the figure is VmHWM after it, and its ratio to the idle RSS:

- **labels**: four 9.6 MiB bodies of one alert with 586,000 labels, at once;
- **bombs**: four gzip bombs (1 MiB inflating to 1 GiB) with ``Content-Encoding: gzip``, at once;
- **storm**: eight 6.5 MiB bodies of 10,000 alerts each, at once;
- **wide**: two 9.5 MiB bodies of 10,000 alerts with 48 labels each, the costliest valid body, at once;
- **slow**: 500 connections sending headers and 16 bytes of a 1,000-byte body, until pdrelay closes
  each (30 s: server.body_timeout);
- **all**: all of these at once (the e2e test ``test_intake_memory_e2e.py`` asserts it < 256 MiB).

Each attack runs against a pdrelay process of its own. The bodies are sized to the body limit
(``--body-limit``: pdrelay's default unless given). Clients try again after a 503 or a dropped
connection, as Alertmanager does. **healthz**: GET /healthz one after another, idle and then during
the storm; the figures are the ratio of each percentile during the storm to the same percentile
idle, in this run.

Figures (2 shared cores, other work running; MiB of VmHWM, and its ratio to the idle RSS of the same
process; deploy/ limits the container to 256 MiB), before the intake bounds (06cc4a0, every body
admitted at once) and after them, at the default settings:

    attack   before                                  after
    idle      62                                      62
    labels   628 (10.1x)  4x 200: 586,000 labels     104 (1.7x)  4x 413, counted in the text
    bombs    233 (3.8x)   4x 413, after inflating     66 (1.1x)  4x 415, never inflated
    storm    472 (7.6x)   8x 200 at once             184 (3.0x)  8x 200, one at a time (48 503s retried)
    wide     332 (5.4x)   2x 200 at once             236 (3.8x)  2x 200, one at a time
    slow      68          500 still open at 120 s     65 (1.0x)  64x 408 at 30 s, 436x 503 at once
    all      660 (10.7x)                             196-229 (3.2-3.7x), two runs

    /healthz during the storm, against idle in the same run:
      before  p99 1350 ms (1044x idle), max 1573 ms
      after   p99 8.8 ms (6x idle),     max 332 ms (12x): the outbox applying a 10,000-event
              batch on the event loop (GroupCommitter._apply, 0.1-0.4 s a batch, asyncio debug)

The costliest valid body (wide: 9.5 MiB, 10,000 alerts with 48 labels each) is the single-body
bound of the default body_limit: +174 MiB over idle, 236 MiB in all, 20 MiB under the limit.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from e2e_support import LOOPBACK, PagerDutyStandIn, PdRelay  # noqa: E402
from intake_attacks import (  # noqa: E402
    Outcome,
    gzip_bomb,
    many_labels_body,
    peak_rss_mib,
    post_until_answered,
    reset_peak,
    rss_mib,
    run_together,
    slow_bodies,
    ten_thousand_alerts_body,
    wide_alerts_body,
)

DEADLINE = 300.0
ATTACKS = ("labels", "bombs", "storm", "wide", "slow", "all", "healthz")


@dataclass
class Figure:
    name: str
    peak_mib: float
    seconds: float
    answers: str


def describe(outcomes: list[Outcome]) -> str:
    counts: dict[str, int] = {}
    for o in outcomes:
        key = str(o.status) if o.status is not None else f"none ({o.error})"
        counts[key] = counts.get(key, 0) + 1
    refused = sum(o.refused for o in outcomes)
    return ", ".join(f"{n}x {k}" for k, n in sorted(counts.items())) + f"; {refused} refusals retried"


class Attacks:
    """The attacks against one pdrelay, each a function returning what its clients were answered."""

    def __init__(self, relay: PdRelay, body_limit: int) -> None:
        self.url = relay.alertmanager_url
        self.port = relay.port
        self.size = body_limit
        self.seed = 0

    def jobs(self, name: str) -> list[Callable[[], Outcome]]:
        deadline = time.monotonic() + DEADLINE
        url = self.url
        if name == "labels":
            labels = many_labels_body(self.size)
            return [lambda: post_until_answered(url, labels, deadline=deadline)] * 4
        if name == "bombs":
            bomb = gzip_bomb()
            return [lambda: post_until_answered(url, bomb, headers={"Content-Encoding": "gzip"},
                                                deadline=deadline)] * 4
        if name == "storm":
            bodies = [ten_thousand_alerts_body(self.seed + i) for i in range(8)]
            self.seed += 8
            return [functools.partial(post_until_answered, url, body, deadline=deadline) for body in bodies]
        if name == "wide":
            wide = [wide_alerts_body(self.seed + i, self.size) for i in range(2)]
            self.seed += 2
            return [functools.partial(post_until_answered, url, body, deadline=deadline) for body in wide]
        raise ValueError(name)

    def slow(self) -> str:
        with slow_bodies(LOOPBACK, self.port, 500) as slow:
            answers = slow.answers(closed=500, timeout=120)
        return ", ".join(f"{answers.count(a)}x {a}" for a in sorted(set(answers)))


def measure(pid: int, name: str, run: Callable[[], str]) -> Figure:
    reset_peak(pid)
    started = time.monotonic()
    answers = run()
    return Figure(name, peak_rss_mib(pid), time.monotonic() - started, answers)


@contextmanager
def healthz_sampler(url: str) -> Iterator[list[float]]:
    """GET /healthz one after another in a thread while the block runs; the latencies in seconds."""
    latencies: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        with httpx.Client(timeout=60, trust_env=False) as client:
            while not stop.is_set():
                started = time.perf_counter()
                client.get(url)
                latencies.append(time.perf_counter() - started)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield latencies
    finally:
        stop.set()
        thread.join()


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


@contextmanager
def fresh_pdrelay(workdir: Path, events_url: str, name: str, body_limit: int | None) -> Iterator[PdRelay]:
    """A pdrelay process of its own for one attack, so that no attack inherits another's heap; at the default
    settings (``body_limit`` None) or with that body limit."""
    relay = PdRelay(workdir / name, events_url=events_url, rules=(REPO / "rules" / "default.yaml").read_text())
    relay.config["server"].pop("body_limit")
    if body_limit is not None:
        relay.config["server"]["body_limit"] = body_limit
    relay.start(timeout=60)
    try:
        time.sleep(2.0)  # start-up settles before the idle reading
        yield relay
    finally:
        relay.stop()


def attack(name: str, attacks: Attacks) -> str:
    """Run attack ``name`` against ``attacks``' pdrelay; what its clients were answered."""
    if name == "slow":
        return attacks.slow()
    if name != "all":
        return describe(run_together(attacks.jobs(name)))
    jobs = attacks.jobs("labels") + attacks.jobs("bombs") + attacks.jobs("storm")
    slow_answers: list[str] = []
    thread = threading.Thread(target=lambda: slow_answers.append(attacks.slow()))
    thread.start()
    answers = describe(run_together(jobs))
    thread.join()
    return f"{answers}; slow: {slow_answers[0]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(ATTACKS), help=f"comma-separated subset of {','.join(ATTACKS)}")
    parser.add_argument("--body-limit", type=int, help="server.body_limit in bytes (default: pdrelay's default)")
    args = parser.parse_args()
    only = args.only.split(",")
    import receiver
    from receiver.settings import ServerSettings

    size = args.body_limit or ServerSettings().body_limit
    print(f"pdrelay code: {Path(receiver.__file__).parent}, body_limit {size}", flush=True)
    figures: list[tuple[Figure, float]] = []
    health = None
    with tempfile.TemporaryDirectory(prefix="pdrelay-bench-memory-") as tmp, PagerDutyStandIn() as pd:
        for name in ATTACKS[:-1]:
            if name not in only:
                continue
            with fresh_pdrelay(Path(tmp), pd.events_url, name, args.body_limit) as relay:
                assert relay.proc is not None
                idle = rss_mib(relay.proc.pid)
                run = functools.partial(attack, name, Attacks(relay, size))
                figures.append((measure(relay.proc.pid, name, run), idle))
            print(f"{name}: done", flush=True)
        if "healthz" in only:
            with fresh_pdrelay(Path(tmp), pd.events_url, "healthz", args.body_limit) as relay:
                url = f"{relay.url}/healthz"
                with healthz_sampler(url) as idle_latencies:
                    time.sleep(3.0)
                with healthz_sampler(url) as storm_latencies:
                    storm = describe(run_together(Attacks(relay, size).jobs("storm")))
                health = (idle_latencies, storm_latencies, storm)

    print(f"\n{'attack':<8}{'idle MiB':>10}{'peak MiB':>10}{'x idle':>8}{'seconds':>9}  answers")
    for f, idle in figures:
        print(f"{f.name:<8}{idle:>10.1f}{f.peak_mib:>10.1f}{f.peak_mib / idle:>8.1f}{f.seconds:>9.1f}  {f.answers}")
    if health is not None:
        idle_l, storm_l, storm = health
        print(f"\n/healthz latency, idle ({len(idle_l)} requests) and during the storm ({len(storm_l)}; {storm}):")
        for q in (50, 99):
            a, b = percentile(idle_l, q), percentile(storm_l, q)
            print(f"  p{q}: idle {a * 1000:.2f} ms, storm {b * 1000:.2f} ms, ratio {b / a:.0f}")
        print(f"  max: idle {max(idle_l) * 1000:.2f} ms, storm {max(storm_l) * 1000:.2f} ms, "
              f"ratio {max(storm_l) / max(idle_l):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
