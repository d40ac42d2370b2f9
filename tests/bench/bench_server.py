"""The cost of pdrelay's HTTP protocol (receiver/server.py) against aiohttp's own, measured in one run (by hand).

    .venv/bin/python tests/bench/bench_server.py [--duration 5] [--rounds 3]

Two subprocesses serve the same trivial ``GET /ok`` on 127.0.0.1 (port 0, printed on stdout) under
uvloop, as ``pdrelay serve`` does: the baseline through aiohttp's ``web.AppRunner``, the other through
``receiver.server.app_runner`` (its header read timeout armed and disarmed on every request). wrk
(keep-alive, ``-t1 -c32``) runs against each in turn, alternating for ``--rounds`` rounds so that
drift on a shared machine hits both alike; the best round of each and their ratio are printed.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVER = """
import asyncio, logging, sys, uvloop
from aiohttp import web
from receiver.server import app_runner
from receiver.settings import ServerSettings

async def ok(request):
    return web.Response(text="ok")

async def main(variant):
    app = web.Application()
    app.router.add_get("/ok", ok)
    if variant == "aiohttp":
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=75.0)
    else:
        runner = app_runner(app, ServerSettings(), logging.getLogger("pdrelay"))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()

uvloop.run(main(sys.argv[1]))
"""
RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")


def start(variant: str) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", SERVER, variant], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise RuntimeError(f"{variant} server did not start")
    return proc, int(line)


def wrk(port: int, duration: int) -> float:
    done = subprocess.run(["wrk", "-t1", "-c32", f"-d{round(duration)}s", f"http://127.0.0.1:{port}/ok"],
                          capture_output=True, text=True, check=True, timeout=duration + 60)
    match = RATE.search(done.stdout)
    if match is None:
        raise RuntimeError(f"no rate in wrk's output:\n{done.stdout}")
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    servers = {variant: start(variant) for variant in ("aiohttp", "pdrelay")}
    best = dict.fromkeys(servers, 0.0)
    try:
        for _, port in servers.values():
            wrk(port, 1)  # warm-up
        for _ in range(args.rounds):
            for variant, (_, port) in servers.items():
                best[variant] = max(best[variant], wrk(port, args.duration))
    finally:
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
    print(f"wrk -t1 -c32 -d{args.duration}s, {args.rounds} alternating rounds, best of each, GET /ok")
    print(f"aiohttp web.AppRunner:           {best['aiohttp']:10.0f} req/s")
    print(f"receiver.server.app_runner:      {best['pdrelay']:10.0f} req/s")
    print(f"pdrelay's protocol / aiohttp's:  {best['pdrelay'] / best['aiohttp']:10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
