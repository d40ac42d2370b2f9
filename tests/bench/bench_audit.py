"""Audit benchmark: what one ``intake.accepted`` entry costs, and what the two candidate shortcuts would save.

    .venv/bin/python tests/bench/bench_audit.py [--entries 20000] [--rounds 5] [--request-us 650]

One core, run by hand, not a test. Each figure is the median of ``--rounds`` runs of ``--entries``
entries, in µs per entry, and each candidate is shown as a ratio to the plain path measured in the
same run. An optimisation is kept only if its saving is at least 10 % of an intake request
(``--request-us``: about 650 µs of CPU per request, from ``bench_intake.py``); each accepted request
writes one entry.

- **encoding**: the plain path (``json``, canonical text, encoded twice: once for the entry hash,
  once for the line) against candidate (a), msgspec's sorted compact JSON, which gives the same
  bytes for entries of scalars (checked here for the entry measured); and what a keyed chain
  (``audit.hmac_key``: an HMAC-SHA256 entry hash) costs over the plain one;
- **writing**: ``AuditLog.record`` to a file (lock, stat, one ``write(2)``) against
  ``MemoryAudit.record`` (the same entry, no file). Their difference is the file work per entry:
  the most that candidate (b), writing the entries of one event-loop iteration with one lock and
  one write, could save.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from receiver.audit import AuditLog, MemoryAudit  # noqa: E402
from receiver.audit.entry import Chain, prepare  # noqa: E402

TS = "2023-11-14T22:13:20.123Z"
ACTOR = "bearer:1a2b3c4d"
FIELDS: dict[str, object] = {  # what handlers.py records for an accepted 3-alert body
    "receiver": "pagerduty", "group_key_sha256": "0123456789abcdef", "body_sha256": "ab" * 32,
    "alerts": 3, "queued": 3, "duplicates": 0, "dropped": 0, "dead_lettered": 0,
}
KEEP_SHARE = 0.10


def per_entry_us(run: Callable[[int], None], entries: int, rounds: int) -> float:
    """Median over ``rounds`` of ``run(entries)``, in µs per entry."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run(entries)
        times.append((time.perf_counter() - start) / entries * 1e6)
    return statistics.median(times)


def plain_encoding(entries: int) -> None:
    chain = Chain()
    actor, fields = prepare("intake.accepted", ACTOR, FIELDS)
    for _ in range(entries):
        _, line_hash = chain.build("intake.accepted", actor, fields, TS)
        chain.advance(line_hash)


def keyed_encoding(entries: int) -> None:
    chain = Chain(b"audit-hmac-key-0123456789abcdef")
    actor, fields = prepare("intake.accepted", ACTOR, FIELDS)
    for _ in range(entries):
        _, line_hash = chain.build("intake.accepted", actor, fields, TS)
        chain.advance(line_hash)


_MSGSPEC = msgspec.json.Encoder(order="sorted")


def msgspec_line(seq: int, prev: str, actor: str | None, fields: dict[str, object]) -> tuple[bytes, str]:
    """Candidate (a): the same entry as ``Chain.build`` makes, encoded by msgspec."""
    entry: dict[str, object] = {**fields, "seq": seq, "ts": TS, "event": "intake.accepted", "actor": actor,
                                "prev": prev}
    entry["hash"] = hashlib.sha256(_MSGSPEC.encode(entry)).hexdigest()
    line = _MSGSPEC.encode(entry)
    return line + b"\n", hashlib.sha256(line).hexdigest()


def msgspec_encoding(entries: int) -> None:
    head = "0" * 64
    actor, fields = prepare("intake.accepted", ACTOR, FIELDS)
    for seq in range(1, entries + 1):
        _, head = msgspec_line(seq, head, actor, fields)


def same_bytes() -> bool:
    """Whether candidate (a) writes exactly the plain path's first two lines for the measured entry."""
    chain = Chain()
    actor, fields = prepare("intake.accepted", ACTOR, FIELDS)
    head = chain.head
    for seq in (1, 2):
        plain, line_hash = chain.build("intake.accepted", actor, fields, TS)
        chain.advance(line_hash)
        fast, head = msgspec_line(seq, head, actor, fields)
        if plain != fast:
            return False
    return True


def file_records(entries: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, AuditLog(Path(tmp) / "audit.jsonl") as log:
        for _ in range(entries):
            log.record("intake.accepted", actor=ACTOR, **FIELDS)


def memory_records(entries: int) -> None:
    audit = MemoryAudit()
    for _ in range(entries):
        audit.record("intake.accepted", actor=ACTOR, **FIELDS)


def row(name: str, us: float, plain: float, request_us: float) -> str:
    text = f"  {name:<44} {us:7.2f} µs   {us / plain:5.2f}× plain"
    if us < plain:
        share = (plain - us) / request_us
        verdict = "keep" if share >= KEEP_SHARE else "not worth keeping"
        text += f"   saves {plain - us:5.2f} µs = {share:6.2%} of a request ({verdict})"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--request-us", type=float, default=650.0, help="CPU per intake request (µs)")
    args = parser.parse_args(argv)
    n, rounds, request_us = args.entries, args.rounds, args.request_us

    print(f"intake.accepted entry, {n:,} entries per round, median of {rounds}; "
          f"a request is {request_us:.0f} µs; keep at >= {KEEP_SHARE:.0%}")
    plain = per_entry_us(plain_encoding, n, rounds)
    fast = per_entry_us(msgspec_encoding, n, rounds)
    print("encoding and hashing one entry")
    print(row("plain: json, canonical text", plain, plain, request_us))
    print(row("candidate (a): msgspec" + ("" if same_bytes() else " (DIFFERENT BYTES)"), fast, plain, request_us))
    keyed = per_entry_us(keyed_encoding, n, rounds)
    print(f"  {'keyed chain: HMAC-SHA256 entry hash':<44} {keyed:7.2f} µs   {keyed / plain:5.2f}× plain   "
          f"costs {(keyed - plain) / request_us:+6.2%} of a request")

    on_file = per_entry_us(file_records, n, rounds)
    in_memory = per_entry_us(memory_records, n, rounds)
    print("recording one entry")
    print(row("plain: AuditLog.record, a file", on_file, on_file, request_us))
    print(row("bound on candidate (b): MemoryAudit, no file", in_memory, on_file, request_us))
    print(f"  the whole audit entry costs {on_file / request_us:.2%} of a request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
