"""Outbox intake benchmark: CPU per 3-event notification enqueued, against a bare SQLite insert (run by hand).

    .venv/bin/python tests/bench/bench_outbox.py [--notifications 3000] [--rounds 3]

Both sides write the same rows to a file in WAL mode with ``synchronous=FULL``, 32 notifications
per transaction (what group commit gives under load): the baseline inserts the notification and
its three event rows with ``executemany``; pdrelay's ``SQLiteOutbox.enqueue`` also decides each
event with the delivery rules and keeps the per-key state. The ratio is what the outbox's
bookkeeping costs over the rows themselves. The encrypted outbox (``security.encryption_key``)
is measured too: it also seals each body and notification, and keys each payload hash.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from receiver.crypto import Keyring, generate_key
from receiver.outbox.sqlite import SQLiteOutbox
from transforms.base import RenderedEvent

SOURCE = b'{"receiver":"pdrelay","status":"firing","alerts":[]}' * 20
BATCH = 32


def event(i: int, j: int) -> RenderedEvent:
    dedup = f"{i:012x}{j:04x}"
    body = {"event_action": "trigger", "dedup_key": dedup,
            "payload": {"summary": f"disk full on db-{i}", "source": "db", "severity": "error",
                        "custom_details": {"labels": {"alertname": "DiskFull", "instance": f"db-{i}:9100"}}}}
    return RenderedEvent(routing_key="default", dedup_key=dedup, action="trigger", body=body,
                         payload_hash=f"{i:064x}", rules=("r1", "r2"), fingerprints=(dedup,))


async def pdrelay(path: Path, notifications: list[list[RenderedEvent]], keyring: Keyring | None = None) -> float:
    box = SQLiteOutbox(path, keyring=keyring)
    await box.open()
    start = time.process_time()
    for k in range(0, len(notifications), BATCH):
        await asyncio.gather(*(box.enqueue(SOURCE, evs, [], resend_interval=3600.0)
                               for evs in notifications[k:k + BATCH]))
    cpu = time.process_time() - start
    await box.close()
    return cpu


def baseline(path: Path, notifications: list[list[RenderedEvent]]) -> float:
    import msgspec

    encode = msgspec.json.Encoder().encode
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE n (id INTEGER PRIMARY KEY, body BLOB)")
    conn.execute("CREATE TABLE e (id INTEGER PRIMARY KEY, n INTEGER, rk TEXT, dk TEXT, action TEXT, body BLOB, "
                 "hash TEXT, rules TEXT)")
    start = time.process_time()
    nid = 0
    for k in range(0, len(notifications), BATCH):
        conn.execute("BEGIN IMMEDIATE")
        notes, rows = [], []
        for evs in notifications[k:k + BATCH]:
            nid += 1
            notes.append((nid, SOURCE))
            rows.extend((nid, ev.routing_key, ev.dedup_key, ev.action, encode(ev.body), ev.payload_hash,
                         ",".join(ev.rules)) for ev in evs)
        conn.executemany("INSERT INTO n VALUES (?, ?)", notes)
        conn.executemany("INSERT INTO e (n, rk, dk, action, body, hash, rules) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
    cpu = time.process_time() - start
    conn.close()
    return cpu


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notifications", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    notifications = [[event(i, j) for j in range(3)] for i in range(args.notifications)]
    keyring = Keyring.from_keys([generate_key()])
    base, relay, sealed = [], [], []
    for r in range(args.rounds):  # alternating, each on a fresh file
        with tempfile.TemporaryDirectory(prefix="pdrelay-bench-outbox-") as tmp:
            base.append(baseline(Path(tmp) / "b.db", notifications))
            relay.append(asyncio.run(pdrelay(Path(tmp) / f"o{r}.db", notifications)))
            sealed.append(asyncio.run(pdrelay(Path(tmp) / f"e{r}.db", notifications, keyring)))
    n = args.notifications

    def median(cpu: list[float]) -> float:
        return sorted(cpu)[len(cpu) // 2] / n * 1e6

    b, p, e = median(base), median(relay), median(sealed)
    print(f"{n} notifications x 3 events, {BATCH} per transaction, median of {args.rounds}")
    print(f"baseline (rows only)      {b:7.1f} us CPU per notification")
    print(f"pdrelay SQLiteOutbox      {p:7.1f} us CPU per notification   {p / b:.2f} x baseline")
    print(f"  encrypted               {e:7.1f} us CPU per notification   {e / b:.2f} x baseline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
