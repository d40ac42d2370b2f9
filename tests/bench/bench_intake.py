"""Intake benchmark: pdrelay against two baselines, driven by wrk; plus pdrelay's memory (run by hand).

    .venv/bin/python tests/bench/bench_intake.py [--duration 10] [--only a,b,pdrelay,rss]

Each server runs as its own subprocess on 127.0.0.1, listening on port 0 (pdrelay reports the port
it got in ``--port-file``; a baseline's is read from /proc), and is stopped by PID afterwards:

- **A**: ``baselines.py parse``, an aiohttp handler that parses the body and answers 200;
- **B**: ``baselines.py sqlite``, parse plus a durable SQLite commit (WAL, synchronous=FULL, group commit);
- **pdrelay**: ``python -m receiver serve`` with ``rules/default.yaml`` (``--rules FILE|none``; ``none``
  or a missing file: defaults only, no steps), posting to a PagerDuty stand-in that answers 202.

wrk (``-t2 -c64``, ``post_body.lua``) posts 3-alert Alertmanager bodies, each with new alerts. The
memory figures are VmRSS from ``/proc/PID/status``: idle after start, then after 100,000 events were
queued behind a dead PagerDuty URL (so nothing leaves the outbox).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LOOPBACK = "127.0.0.1"
LUA = HERE / "post_body.lua"
BASELINES = HERE / "baselines.py"
DEFAULT_RULES_FILE = REPO / "rules" / "default.yaml"
FALLBACK_RULES = """\
version: 1
defaults: {routing_key: default, dedup: alert, severity: error, send_resolved: true}
rules: []
"""
ROUTING_KEY = "0123456789abcdef0123456789abcdef"
BENCH_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # a fixed 32-byte test key, never a real one
START_TIMEOUT = 30.0

TARGET_RATIO_B = 0.4
TARGET_RATIO_A = 0.2
TARGET_P99_MS = 25.0
TARGET_RSS_IDLE_MB = 80.0
TARGET_RSS_GROWTH_MB = 50.0


# --------------------------------------------------------------------------- processes


def listening_port(pid: int) -> int | None:
    """The IPv4 TCP port process ``pid`` listens on, from /proc (its socket inodes, then the LISTEN row
    of /proc/PID/net/tcp holding one of them); None until it listens."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # an fd closed meanwhile
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    for row in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if fields[3] == "0A" and fields[9] in inodes:  # st 0A: TCP_LISTEN
            return int(fields[1].rpartition(":")[2], 16)
    return None


def wait_until(probe: Callable[[], Any], *, what: str, timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def get(url: str, timeout: float = 2.0) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=timeout, trust_env=False)
    except httpx.TransportError:
        return None


@dataclass
class Server:
    """A server subprocess whose output goes to a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def wait_ready(self, path: str = "/readyz") -> None:
        def probe() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            response = get(self.url + path)
            return response is not None and response.status_code == 200

        wait_until(probe, what=f"{self.name} {path}", timeout=START_TIMEOUT)

    def rss_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the process in KiB, from /proc/PID/status."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
        return fields["VmRSS"], fields["VmHWM"]

    def metric(self, name: str) -> float | None:
        response = get(f"{self.url}/metrics")
        if response is None or response.status_code != 200:
            return None
        total = None
        for line in response.text.splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                if series.split("{", 1)[0] == name:
                    total = (total or 0.0) + float(value)
        return total

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)


@contextlib.contextmanager
def server(
    name: str, args: Sequence[str], workdir: Path, port_of: Callable[[Server], int | None],
    ready_path: str = "/readyz",
) -> Iterator[Server]:
    """Start ``args`` (output to ``workdir/<name>.log``), learn its port from ``port_of`` (None: not yet),
    wait for ``ready_path``, stop it by PID on exit."""
    log_path = workdir / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(list(args), cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    srv = Server(name, proc, 0, log_path)
    try:
        def bound() -> int | None:
            if srv.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {srv.proc.returncode}:\n{srv.log_tail()}")
            return port_of(srv)

        srv.port = wait_until(bound, what=f"{name}'s port", timeout=START_TIMEOUT)
        srv.wait_ready(ready_path)
        yield srv
    finally:
        srv.stop()


def baseline(mode: str, workdir: Path, *extra: str) -> contextlib.AbstractContextManager[Server]:
    args = [sys.executable, str(BASELINES), mode, "--port", "0", *extra]
    return server(f"baseline-{mode}", args, workdir, lambda srv: listening_port(srv.proc.pid))


def read_port_file(path: Path) -> int | None:
    """The port pdrelay wrote to ``--port-file`` (renamed into place whole), or None before it did."""
    try:
        return int(path.read_text())
    except FileNotFoundError:
        return None


def pdrelay(
    workdir: Path, events_url: str, rules_file: Path | None, name: str = "pdrelay",
    extra: dict[str, Any] | None = None,
) -> contextlib.AbstractContextManager[Server]:
    """pdrelay with a config of its own under ``workdir/name``; ``rules_file`` None: defaults only."""
    home = workdir / name
    home.mkdir()
    rules = home / "rules.yaml"
    if rules_file is not None:
        shutil.copyfile(rules_file, rules)
    else:
        rules.write_text(FALLBACK_RULES)
    config = {
        "server": {"body_limit": "10MiB"},  # listen: given on the command line
        "pagerduty": {
            "events_url": events_url,
            "allowed_hosts": [LOOPBACK],
            "routing_keys": {"default": ROUTING_KEY},
            "dry_run": False,
            "resend_interval": "4h",
            "api_timeout": 5,
            "retry": {"initial_backoff": 0.2, "max_backoff": 2},
        },
        "outbox": {"backend": "sqlite", "path": str(home / "outbox.db")},
        "rules": {"paths": [str(rules)]},
        **(extra or {}),
    }
    config_path = home / "pdrelay.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port_file = home / "pdrelay.port"
    args = [sys.executable, "-m", "receiver", "serve", "--config", str(config_path), "--log-level", "WARNING",
            "--listen", f"{LOOPBACK}:0", "--port-file", str(port_file)]
    return server(name, args, home, lambda _: read_port_file(port_file))


# --------------------------------------------------------------------------- wrk


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(url: str, duration: float, threads: int, connections: int) -> WrkResult:
    """One wrk run with post_body.lua; figures from the script's ``BENCH_JSON`` line."""
    args = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA),
        f"{url}/v1/alertmanager",
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60, check=True)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no BENCH_JSON line:\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    return WrkResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1e3,
        p90_ms=raw["p90_us"] / 1e3,
        p99_ms=raw["p99_us"] / 1e3,
        max_ms=raw["max_us"] / 1e3,
        errors={k.removeprefix("errors_"): v for k, v in raw.items() if k.startswith("errors_")},
    )


def measure(srv: Server, args: argparse.Namespace) -> WrkResult:
    if args.warmup > 0:
        run_wrk(srv.url, args.warmup, args.threads, args.connections)
    return run_wrk(srv.url, args.duration, args.threads, args.connections)


# --------------------------------------------------------------------------- memory


def queue_body(start: int, count: int) -> bytes:
    """An Alertmanager body with ``count`` distinct firing alerts (numbered from ``start``)."""
    alerts = [
        {
            "status": "firing",
            "labels": {
                "alertname": "BenchQueued",
                "instance": f"host-{n}:9100",
                "job": "node",
                "severity": "warning",
            },
            "annotations": {"summary": f"queued alert {n}"},
            "startsAt": "2026-11-25T16:54:52.112179Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example:9090/graph?g0.expr=up",
            "fingerprint": f"{n:016x}",
        }
        for n in range(start, start + count)
    ]
    body = {
        "receiver": "pdrelay",
        "status": "firing",
        "alerts": alerts,
        "groupLabels": {"alertname": "BenchQueued"},
        "commonLabels": {"alertname": "BenchQueued", "job": "node", "severity": "warning"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": '{}:{alertname="BenchQueued"}',
        "truncatedAlerts": 0,
    }
    return (json.dumps(body, separators=(",", ":")) + "\n").encode()


@dataclass(frozen=True)
class MemoryResult:
    idle_mib: float
    queued_mib: float
    peak_mib: float
    queued_events: float
    seconds_to_queue: float

    @property
    def growth_mib(self) -> float:
        return self.queued_mib - self.idle_mib


@contextlib.contextmanager
def refusing_url() -> Iterator[str]:
    """A PagerDuty URL whose port is bound but never listens: every connection is refused at once, and
    no other process can take the port while the block runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        yield f"http://{LOOPBACK}:{sock.getsockname()[1]}/v2/enqueue"


def measure_memory(workdir: Path, rules_file: Path | None, events: int, per_body: int) -> MemoryResult:
    """RSS of pdrelay idle, then with ``events`` events queued behind a PagerDuty URL nobody answers."""
    with refusing_url() as dead_url, pdrelay(workdir, dead_url, rules_file, name="pdrelay-rss") as relay:
        time.sleep(2.0)  # let start-up settle before the idle reading
        idle, _ = relay.rss_kib()
        started = time.monotonic()
        with httpx.Client(timeout=60, trust_env=False) as client:
            for start in range(0, events, per_body):
                response = client.post(
                    f"{relay.url}/v1/alertmanager",
                    content=queue_body(start, min(per_body, events - start)),
                    headers={"Content-Type": "application/json"},
                )
                if response.status_code != 200:
                    raise RuntimeError(f"pdrelay answered {response.status_code}: {response.text[:500]}")

        def queued_depth() -> float | None:
            depth = relay.metric("pdrelay_outbox_depth")
            return depth if depth is not None and depth >= events else None

        depth = wait_until(queued_depth, what=f"{events} queued events", timeout=120, interval=0.5)
        elapsed = time.monotonic() - started
        time.sleep(2.0)  # a dispatcher pass or two over the full queue
        queued, peak = relay.rss_kib()
    return MemoryResult(idle / 1024, queued / 1024, peak / 1024, float(depth), elapsed)


# --------------------------------------------------------------------------- report


def row(name: str, result: WrkResult) -> str:
    errors = sum(result.errors.values())
    return (
        f"{name:<22}{result.rps:>10.0f}{result.p50_ms:>10.2f}{result.p90_ms:>10.2f}{result.p99_ms:>10.2f}"
        f"{result.max_ms:>10.2f}{errors:>9}"
    )


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each measured wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of an unmeasured wrk run before")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--only", default="a,b,pdrelay,pdrelay-intake,pdrelay-no-audit,pdrelay-encrypted,rss",
        help="comma-separated subset of a,b,pdrelay,pdrelay-intake,pdrelay-no-audit,pdrelay-encrypted,rss",
    )
    parser.add_argument(
        "--rules",
        default=str(DEFAULT_RULES_FILE),
        help="pdrelay's rules file (default rules/default.yaml); 'none': defaults only, no steps",
    )
    parser.add_argument("--rss-events", type=int, default=100_000)
    parser.add_argument(
        "--pd-delay", type=float, default=0.2,
        help="seconds the PagerDuty stand-in takes to answer 202 (a WAN round trip; 0 = drain at full speed)",
    )
    parser.add_argument("--rss-per-body", type=int, default=1000, help="alerts per body when queueing")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    rules_file = None if args.rules == "none" else Path(args.rules)
    if rules_file is not None and not rules_file.exists():
        print(f"{rules_file} is missing; using a defaults-only rules file", file=sys.stderr)
        rules_file = None
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    results: dict[str, WrkResult] = {}
    memory: MemoryResult | None = None
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pdrelay-bench-") as tmp:
        workdir = Path(tmp)
        print(
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s (warm-up {args.warmup:g}s), "
            f"{os.cpu_count()} CPUs, pdrelay rules {rules_file or 'defaults only'}, work dir {workdir}",
            flush=True,
        )
        if "a" in only:
            with baseline("parse", workdir) as srv:
                results["A: parse only"] = measure(srv, args)
        if "b" in only:
            with baseline("sqlite", workdir, "--db", str(workdir / "baseline-b.db")) as srv:
                results["B: parse+SQLite"] = measure(srv, args)
        # "pdrelay": the dispatcher drains to a stand-in answering after --pd-delay (16 requests in
        # flight: ~80 events/s, 40x PagerDuty's per-key budget). "pdrelay-intake": the stand-in
        # holds every request longer than the run, so the dispatcher is parked and only intake works.
        # The cost of the audit log and of encryption at rest: the same pdrelay without the one, with the other.
        variants: list[tuple[str, float, dict[str, Any]]] = [
            ("pdrelay", args.pd_delay, {}),
            ("pdrelay-intake", 3600.0, {}),
            ("pdrelay-no-audit", args.pd_delay, {"audit": {"enabled": False}}),
            ("pdrelay-encrypted", args.pd_delay, {"security": {"encryption_key": [BENCH_KEY]}}),
        ]
        for name, delay, extra in variants:
            if name not in only:
                continue
            try:
                with (
                    baseline("pd", workdir, "--status", "202", "--delay", str(delay)) as pd,
                    pdrelay(workdir, f"{pd.url}/v2/enqueue", rules_file, name=name, extra=extra) as relay,
                ):
                    results[name] = measure(relay, args)
            except (RuntimeError, TimeoutError) as exc:
                failures.append(f"{name} throughput not measured: {exc}")
        if "rss" in only:
            try:
                memory = measure_memory(workdir, rules_file, args.rss_events, args.rss_per_body)
            except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
                failures.append(f"pdrelay memory not measured: {exc}")

    print()
    print(f"{'server':<22}{'req/s':>10}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'max ms':>10}{'errors':>9}")
    for name, result in results.items():
        print(row(name, result))
    for name in ("pdrelay", "pdrelay-intake"):
        relay_result = results.get(name)
        if relay_result is None:
            continue
        print()
        for label, key, target in (
            (f"{name} / B", "B: parse+SQLite", TARGET_RATIO_B),
            (f"{name} / A", "A: parse only", TARGET_RATIO_A),
        ):
            if key in results:
                ratio = relay_result.rps / results[key].rps
                print(f"{label}: {ratio:.2f} (target >= {target}) {verdict(ratio >= target)}")
        p99_ok = relay_result.p99_ms <= TARGET_P99_MS
        print(f"{name} p99: {relay_result.p99_ms:.2f} ms (target <= {TARGET_P99_MS:g} ms) {verdict(p99_ok)}")
    if memory is not None:
        print()
        print(
            f"pdrelay RSS idle: {memory.idle_mib:.1f} MiB (target <= {TARGET_RSS_IDLE_MB:g}) "
            f"{verdict(memory.idle_mib <= TARGET_RSS_IDLE_MB)}"
        )
        print(
            f"pdrelay RSS with {memory.queued_events:,.0f} queued events: {memory.queued_mib:.1f} MiB, "
            f"growth {memory.growth_mib:+.1f} MiB (target <= +{TARGET_RSS_GROWTH_MB:g}) "
            f"{verdict(memory.growth_mib <= TARGET_RSS_GROWTH_MB)}; peak {memory.peak_mib:.1f} MiB; "
            f"queued in {memory.seconds_to_queue:.1f} s"
        )
    for failure in failures:
        print(f"\n{failure}", file=sys.stderr)
    for name, result in results.items():
        if sum(result.errors.values()):
            print(f"\n{name}: wrk errors {result.errors}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
