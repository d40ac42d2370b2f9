"""Command-line start-up benchmark: wall time of ``pdrelay --help`` and ``pdrelay keygen`` (run by hand).

    .venv/bin/python tests/bench/bench_cli_startup.py [--runs 5]

Each command runs ``--runs`` times as a fresh process of the installed console script (the
``pdrelay`` beside this interpreter), interleaved round-robin with the baseline
``python -c pass`` so that load on the machine weighs on all of them alike. The figure is
the median wall time, also shown as a ratio to the baseline's median; the target is under
0.3 s for both commands. These two commands import neither aiohttp nor the rules engine,
so their time is the interpreter's start plus argparse (and, for keygen, ``cryptography``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

TARGET_SECONDS = 0.3


def _commands() -> dict[str, list[str]]:
    pdrelay = str(Path(sys.executable).parent / "pdrelay")
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "pdrelay --help": [pdrelay, "--help"],
        "pdrelay keygen": [pdrelay, "keygen"],
    }


def _wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="runs of each command (default 5)")
    args = p.parse_args(argv)
    commands = _commands()
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, cmd in commands.items():
            times[name].append(_wall(cmd))
    base = statistics.median(times["python -c pass"])
    print(f"{'command':<16}{'median':>10}{'min':>10}{'max':>10}{'× baseline':>12}")
    slow = []
    for name, samples in times.items():
        med = statistics.median(samples)
        print(f"{name:<16}{med * 1000:>8.0f}ms{min(samples) * 1000:>8.0f}ms{max(samples) * 1000:>8.0f}ms"
              f"{med / base:>11.1f}×")
        if name != "python -c pass" and med >= TARGET_SECONDS:
            slow.append(name)
    verdict = f"over the {TARGET_SECONDS} s target: {', '.join(slow)}" if slow else f"all under {TARGET_SECONDS} s"
    print(f"medians of {args.runs} runs; {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
