"""Redis outbox benchmark: durable intake with Redis against SQLite, one and two pdrelays, and Redis memory per
queued event (run by hand; prints ratios against SQLite measured in the same run).

    .venv/bin/python tests/bench/bench_redis.py [--duration 10] [--only sqlite,redis,redis-2,memory]

Every process is this run's own and stopped by PID: a ``redis-server`` on a unix socket in a temporary folder
(AOF with ``appendfsync always`` unless ``--fsync everysec``: durable like SQLite's synchronous=FULL; TCP off),
pdrelay processes (``python -m receiver serve``, ``rules/default.yaml``) and the PagerDuty stand-in of
``baselines.py``, holding every request longer than the run so only intake works (as ``pdrelay-intake`` of
bench_intake.py). wrk posts the same 3-alert bodies as bench_intake.py (``post_body.lua``, new alerts in each):

- **sqlite**: one pdrelay on the SQLite outbox, ``wrk -t2 -c64``;
- **redis**: one pdrelay on the Redis outbox, ``wrk -t2 -c64``;
- **redis-2**: two pdrelays on the same Redis (one key prefix: one shared outbox), a ``wrk -t1 -c32`` on each at
  once, each with alerts of its own (a central Deployment behind a Service); req/s summed, p99 the worse one;
- **memory**: Redis ``INFO memory`` ``used_memory`` before and after ``--events`` events were queued (10-alert
  notifications, PagerDuty refusing every connection so nothing leaves), divided by the events; then as many
  events delivered under another prefix (a stand-in answering 202 at once): what stays per delivered dedup key
  (its state, kept for deduplication, plus the send times of the last window).

A non-2xx answer counts as a wrk error; ``intake is busy`` 503s (``server.max_concurrent_intake``: 64) can
appear where one wrk run's connections overlap the next one's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from bench_intake import (  # noqa: E402
    DEFAULT_RULES_FILE,
    LOOPBACK,
    LUA,
    ROUTING_KEY,
    Server,
    WrkResult,
    baseline,
    pdrelay,
    queue_body,
    refusing_url,
    row,
    wait_until,
)

REDIS_START = 10.0
HOLD_PD = 3600.0  # seconds the stand-in holds each request: the dispatcher is parked, intake alone is measured


# --------------------------------------------------------------------------- redis-server


class RedisServer:
    """This run's own ``redis-server`` on a unix socket in ``folder``; stopped by PID."""

    def __init__(self, folder: Path, fsync: str) -> None:
        self.folder, self.socket = folder, folder / "redis.sock"
        folder.mkdir(parents=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.socket), "--dir", str(folder),
             "--appendonly", "yes", "--appendfsync", fsync, "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.proc.poll() is None and self.socket.exists(), what="redis-server's socket",
                   timeout=REDIS_START, interval=0.01)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def used_memory(self) -> int:
        out = subprocess.run(["redis-cli", "-s", str(self.socket), "info", "memory"], capture_output=True,
                             text=True, check=True, timeout=10).stdout
        return int(next(ln for ln in out.splitlines() if ln.startswith("used_memory:")).split(":")[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)


@contextlib.contextmanager
def redis_server(folder: Path, fsync: str) -> Iterator[RedisServer]:
    srv = RedisServer(folder, fsync)
    try:
        yield srv
    finally:
        srv.stop()


def redis_outbox(srv: RedisServer, prefix: str) -> dict[str, Any]:
    return {"outbox": {"backend": "redis", "redis": {"url": srv.url, "key_prefix": prefix}}}


# --------------------------------------------------------------------------- wrk


def lua_with_offset(workdir: Path, offset: int) -> Path:
    """post_body.lua with its wrk thread ids moved by ``offset``: two wrk processes at once post different
    alerts (each process numbers its threads from 1)."""
    text = LUA.read_text()
    marked = "tid = thread_id or 0"
    if marked not in text:
        raise RuntimeError(f"{LUA} no longer sets its thread id as {marked!r}")
    path = workdir / f"post_body_{offset}.lua"
    path.write_text(text.replace(marked, f"tid = (thread_id or 0) + {offset}"))
    return path


def wrk(url: str, duration: float, threads: int, connections: int, script: Path = LUA) -> WrkResult:
    """One wrk run with ``script`` (post_body.lua or a copy of it); figures from its ``BENCH_JSON`` line."""
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s", "-s", str(script),
            f"{url}/v1/alertmanager"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60, check=True)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no BENCH_JSON line:\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    return WrkResult(requests=raw["requests"], seconds=raw["duration_us"] / 1e6, p50_ms=raw["p50_us"] / 1e3,
                     p90_ms=raw["p90_us"] / 1e3, p99_ms=raw["p99_us"] / 1e3, max_ms=raw["max_us"] / 1e3,
                     errors={k.removeprefix("errors_"): v for k, v in raw.items() if k.startswith("errors_")})


def measured(relay: Server, args: argparse.Namespace) -> WrkResult:
    if args.warmup > 0:
        wrk(relay.url, args.warmup, 2, args.connections)
    return wrk(relay.url, args.duration, 2, args.connections)


def measured_pair(relays: Sequence[Server], scripts: Sequence[Path], args: argparse.Namespace) -> WrkResult:
    """One wrk per pdrelay at once, the connections split between them; requests summed, latencies the worst."""
    per = max(1, args.connections // len(relays))
    with ThreadPoolExecutor(len(relays)) as pool:
        if args.warmup > 0:
            list(pool.map(lambda rs: wrk(rs[0].url, args.warmup, 1, per, rs[1]), zip(relays, scripts, strict=True)))
        results = list(pool.map(lambda rs: wrk(rs[0].url, args.duration, 1, per, rs[1]),
                                zip(relays, scripts, strict=True)))
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r.errors.items():
            errors[k] = errors.get(k, 0) + v
    return WrkResult(requests=sum(r.requests for r in results), seconds=max(r.seconds for r in results),
                     p50_ms=max(r.p50_ms for r in results), p90_ms=max(r.p90_ms for r in results),
                     p99_ms=max(r.p99_ms for r in results), max_ms=max(r.max_ms for r in results), errors=errors)


# --------------------------------------------------------------------------- memory


def queue(relay: Server, events: int, per_body: int) -> None:
    with httpx.Client(timeout=60, trust_env=False) as client:
        for start in range(0, events, per_body):
            answer = client.post(f"{relay.url}/v1/alertmanager", content=queue_body(start, per_body),
                                 headers={"Content-Type": "application/json"})
            if answer.status_code != 200:
                raise RuntimeError(f"pdrelay answered {answer.status_code}: {answer.text[:300]}")


@dataclass(frozen=True)
class Memory:
    queued: float  # bytes of Redis memory per queued event
    delivered: float  # per event delivered: the key's state kept for deduplication (and recent send times)
    events: int
    seconds: float  # to queue them


def memory_per_event(workdir: Path, srv: RedisServer, rules: Path | None, events: int, per_body: int) -> Memory:
    """Redis memory per event queued behind a PagerDuty that refuses every connection, then per event delivered
    (a second prefix, a stand-in answering 202 at once, a budget that never holds back)."""
    before = srv.used_memory()
    with refusing_url() as dead, pdrelay(workdir, dead, rules, name="pdrelay-memory",
                                         extra=redis_outbox(srv, "bench-memory")) as relay:
        started = time.monotonic()
        queue(relay, events, per_body)
        wait_until(lambda: (relay.metric("pdrelay_outbox_depth") or 0) >= events, what=f"{events} queued",
                   timeout=60, interval=0.2)
        seconds = time.monotonic() - started
        after = srv.used_memory()
    middle = srv.used_memory()
    with baseline("pd", workdir, "--status", "202") as pd:
        events_url = f"{pd.url}/v2/enqueue"
        pagerduty = {"events_url": events_url, "allowed_hosts": [LOOPBACK],
                     "routing_keys": {"default": ROUTING_KEY}, "dry_run": False, "resend_interval": "4h",
                     "rate_limit": {"per_key": 10 * events, "window_seconds": 60}, "concurrency": 16}
        with pdrelay(workdir, events_url, rules, name="pdrelay-delivered",
                     extra={**redis_outbox(srv, "bench-delivered"), "pagerduty": pagerduty}) as relay:
            queue(relay, events, per_body)
            wait_until(lambda: relay.metric("pdrelay_outbox_depth") == 0, what="every event delivered",
                       timeout=300, interval=0.5)
            delivered = srv.used_memory()
    return Memory((after - before) / events, (delivered - middle) / events, events, seconds)


# --------------------------------------------------------------------------- report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each measured wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of an unmeasured wrk run before")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--only", default="sqlite,redis,redis-2,memory",
                        help="comma-separated subset of sqlite,redis,redis-2,memory")
    parser.add_argument("--fsync", choices=("always", "everysec"), default="always", help="Redis appendfsync")
    parser.add_argument("--events", type=int, default=20_000, help="events queued for the memory figure")
    parser.add_argument("--per-body", type=int, default=10, help="alerts per notification when queueing")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    if shutil.which("wrk") is None or shutil.which("redis-server") is None:
        print("wrk and redis-server are needed (apt-get install wrk redis-server)", file=sys.stderr)
        return 2
    rules = DEFAULT_RULES_FILE if DEFAULT_RULES_FILE.exists() else None
    results: dict[str, WrkResult] = {}
    memory: Memory | None = None
    with tempfile.TemporaryDirectory(prefix="pdrelay-bench-redis-") as tmp:
        workdir = Path(tmp)
        print(f"wrk -c{args.connections} -d{args.duration:g}s (warm-up {args.warmup:g}s), {os.cpu_count()} CPUs, "
              f"Redis AOF appendfsync {args.fsync} on a unix socket, rules {rules or 'defaults only'}", flush=True)
        with baseline("pd", workdir, "--status", "202", "--delay", str(HOLD_PD)) as pd:
            events_url = f"{pd.url}/v2/enqueue"
            if "sqlite" in only:
                with pdrelay(workdir, events_url, rules, name="pdrelay-sqlite") as relay:
                    results["sqlite, 1 pdrelay"] = measured(relay, args)
            if only & {"redis", "redis-2"}:
                with redis_server(workdir / "redis", args.fsync) as srv:
                    if "redis" in only:
                        with pdrelay(workdir, events_url, rules, name="pdrelay-redis",
                                     extra=redis_outbox(srv, "one")) as relay:
                            results["redis, 1 pdrelay"] = measured(relay, args)
                    if "redis-2" in only:
                        scripts = [lua_with_offset(workdir, 0), lua_with_offset(workdir, 100)]
                        with (pdrelay(workdir, events_url, rules, name="pdrelay-redis-a",
                                      extra=redis_outbox(srv, "two")) as a,
                              pdrelay(workdir, events_url, rules, name="pdrelay-redis-b",
                                      extra=redis_outbox(srv, "two")) as b):
                            results["redis, 2 pdrelays"] = measured_pair([a, b], scripts, args)
        if "memory" in only:
            with redis_server(workdir / "redis-memory", args.fsync) as srv:
                memory = memory_per_event(workdir, srv, rules, args.events, args.per_body)

    print()
    print(f"{'outbox':<22}{'req/s':>10}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'max ms':>10}{'errors':>9}")
    for name, result in results.items():
        print(row(name, result))
    base = results.get("sqlite, 1 pdrelay")
    if base is not None and base.rps:
        print()
        for name, result in results.items():
            if result is not base:
                print(f"{name} / sqlite: req/s x{result.rps / base.rps:.2f}, p99 x{result.p99_ms / base.p99_ms:.2f}")
    if memory is not None:
        print(f"\nRedis memory per queued event: {memory.queued:,.0f} bytes ({memory.events:,} events in "
              f"{args.per_body}-alert notifications, queued in {memory.seconds:.1f} s); per event delivered "
              f"(the state kept for deduplication): {memory.delivered:,.0f} bytes")
    for name, result in results.items():
        if sum(result.errors.values()):
            print(f"\n{name}: wrk errors {result.errors}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
