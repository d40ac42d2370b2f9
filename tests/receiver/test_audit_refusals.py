"""Refused requests in the audit log: counted by the interval, bounded in keys, and a flood of them against
the real app that leaves the real entries in place."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.audit import AuditError, MemoryAudit, RefusalAggregator, verify_files
from receiver.secret import Secret
from receiver.settings import AuditSettings, AuthSettings, OutboxSettings, PagerDutySettings, RulesSettings, Settings
from tests.fakes import FakeClock

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
CAPTURED = Path(__file__).parent.parent / "e2e" / "captured"
RULES = "version: 1\ndefaults: {routing_key: default, dedup: alert}\nrules: []\n"
TOKEN = "intake-token-A-0123456789abcdef"
T0 = "2023-11-14T22:13:20.000Z"  # FakeClock's start


def refuse(audit: RefusalAggregator, remote: str = "198.51.100.7", reason: str = "missing") -> None:
    audit.record("auth.refused", actor=None, group="admin", status=401, reason=reason, method=None, remote=remote)


def summary(audit: MemoryAudit) -> list[tuple[Any, ...]]:
    return [(e["event"], e.get("remote"), e.get("reason"), e.get("count"), e.get("first"), e.get("last"))
            for e in audit.entries]


def test_the_first_refusal_is_written_at_once_and_the_rest_once_per_interval() -> None:
    clock = FakeClock()
    memory = MemoryAudit(clock=clock)
    audit = RefusalAggregator(memory, clock, interval=10.0)
    for _ in range(100):
        refuse(audit)
        clock.advance(0.0625)  # 100 refusals over 6.25 s
    assert summary(memory) == [("auth.refused", "198.51.100.7", "missing", 1, T0, T0)]
    audit.record("intake.accepted", actor="alertmanager", alerts=2)  # other events pass through at once
    clock.advance(3.75)  # the interval is over: the next refusal writes the 99 counted, then counts itself
    refuse(audit)
    assert summary(memory)[1:] == [
        ("intake.accepted", None, None, None, None, None),
        ("auth.refused", "198.51.100.7", "missing", 99, "2023-11-14T22:13:20.062Z", "2023-11-14T22:13:26.187Z"),
    ]
    audit.close()  # what is pending is written at close
    assert summary(memory)[3:] == [
        ("auth.refused", "198.51.100.7", "missing", 1, "2023-11-14T22:13:30.000Z", "2023-11-14T22:13:30.000Z")]
    aggregate = memory.entries[2]
    assert {k: aggregate[k] for k in ("actor", "group", "status", "method")} == {
        "actor": None, "group": "admin", "status": 401, "method": None}
    assert memory.verify().ok
    with pytest.raises(AuditError, match="closed"):
        refuse(audit)


def test_a_quiet_key_is_forgotten_and_written_at_once_again() -> None:
    clock = FakeClock()
    memory = MemoryAudit(clock=clock)
    audit = RefusalAggregator(memory, clock, interval=10.0)
    refuse(audit)
    clock.advance(10.0)
    refuse(audit, reason="invalid_token")  # ends the interval: the first key had nothing more, it is forgotten
    clock.advance(10.0)
    refuse(audit)  # ends the second interval (nothing more for invalid_token either): written at once again
    audit.close()
    assert [(e["reason"], e["count"]) for e in memory.entries] == [("missing", 1), ("invalid_token", 1),
                                                                   ("missing", 1)]


def test_keys_are_bounded_and_the_rest_is_counted_in_one_overflow_entry() -> None:
    """A client that varies its address fills max_keys; the other addresses are one entry that says so."""
    clock = FakeClock()
    memory = MemoryAudit(clock=clock)
    audit = RefusalAggregator(memory, clock, interval=10.0, max_keys=3)
    for _ in range(5):
        for i in range(10):
            refuse(audit, remote=f"2001:db8::{i}")
            clock.advance(0.125)
    assert [e["remote"] for e in memory.entries] == ["2001:db8::0", "2001:db8::1", "2001:db8::2"]
    clock.advance(3.75)
    audit.flush()
    entries = memory.entries[3:]
    assert [(e.get("remote"), e["count"]) for e in entries] == [
        ("2001:db8::0", 4), ("2001:db8::1", 4), ("2001:db8::2", 4), (None, 35)]
    overflow = entries[-1]
    assert {k: v for k, v in overflow.items() if k not in ("seq", "ts", "prev", "hash")} == {
        "event": "auth.refused", "actor": None, "overflow": True, "count": 35, "max_keys": 3,
        "first": "2023-11-14T22:13:20.375Z", "last": "2023-11-14T22:13:26.125Z"}
    audit.close()
    assert len(memory.entries) == 7  # nothing was pending


def test_refusals_are_written_by_the_timer_when_the_interval_ends(tmp_path: Path) -> None:
    """On a running loop, a pending count is written once the interval is over by the injected clock,
    without another refusal."""
    async def scenario() -> list[tuple[Any, ...]]:
        clock = FakeClock()
        memory = MemoryAudit(clock=clock)
        audit = RefusalAggregator(memory, clock, interval=0.01)
        for _ in range(3):
            refuse(audit)
        clock.advance(1.0)
        deadline = asyncio.get_running_loop().time() + 5.0
        while len(memory.entries) < 2:
            assert asyncio.get_running_loop().time() < deadline, "the timer did not write the count"
            await asyncio.sleep(0.01)
        audit.close()
        return summary(memory)

    assert asyncio.run(scenario()) == [("auth.refused", "198.51.100.7", "missing", 1, T0, T0),
                                       ("auth.refused", "198.51.100.7", "missing", 2, T0, T0)]


def test_bad_settings_are_refused() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="interval must be a number of seconds > 0, got 0"):
        RefusalAggregator(MemoryAudit(), clock, interval=0)
    with pytest.raises(ValueError, match="max_keys must be an integer >= 1, got 0"):
        RefusalAggregator(MemoryAudit(), clock, max_keys=0)


# --------------------------------------------------------------------------- the flood, against the app


def flood_settings(tmp_path: Path) -> Settings:
    (tmp_path / "rules.yaml").write_text(RULES)
    return Settings(
        pagerduty=PagerDutySettings(routing_keys={"default": Secret("r" * 32)}, dry_run=True),
        outbox=OutboxSettings(path=tmp_path / "data" / "outbox.db"),
        rules=RulesSettings(paths=(tmp_path / "rules.yaml",)),
        auth=AuthSettings(bearer_tokens=(Secret(TOKEN),)),
        audit=AuditSettings(max_size=16 * 1024, backups=1),
    )


async def test_a_flood_of_refused_requests_leaves_the_real_entries(tmp_path: Path,
                                                                  aiohttp_client: ClientFactory) -> None:
    """3,000 unauthenticated GET /status against a 16 KiB audit file with one backup: the real entries
    (rules.loaded, intake.accepted) are still there, the refusals are four entries whose counts add up,
    the metrics and the chain are whole."""
    clock = FakeClock()
    registry = CollectorRegistry()
    app = create_app(flood_settings(tmp_path), Deps(clock=clock, registry=registry))
    client = await aiohttp_client(app)
    body = (CAPTURED / "am-0.25_firing.json").read_bytes()
    answer = await client.post("/v1/alertmanager", data=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status == 200
    for _ in range(3):  # three intervals of 1,000
        for _ in range(20):
            answers = await asyncio.gather(*(client.get("/status") for _ in range(50)))
            assert [a.status for a in answers] == [401] * 50
        clock.advance(10.0)
    assert registry.get_sample_value("pdrelay_auth_refused_total", {"group": "admin", "reason": "missing"}) == 3000
    await client.close()

    path = tmp_path / "data" / "audit.jsonl"
    files = [p for p in (path.with_name("audit.jsonl.1"), path) if p.exists()]
    entries = [json.loads(line) for p in files for line in p.read_text().splitlines()]
    real = [e["event"] for e in entries if e["event"] in ("rules.loaded", "intake.accepted")]
    assert real == ["rules.loaded", "intake.accepted"] and entries[0]["seq"] == 1
    refused = [e for e in entries if e["event"] == "auth.refused"]
    assert [(e["count"], e["group"], e["reason"], e["status"], e["remote"]) for e in refused] == [
        (1, "admin", "missing", 401, "127.0.0.1"), (999, "admin", "missing", 401, "127.0.0.1"),
        (1000, "admin", "missing", 401, "127.0.0.1"), (1000, "admin", "missing", 401, "127.0.0.1")]
    assert [(e["first"], e["last"]) for e in refused[1:]] == [
        ("2023-11-14T22:13:20.000Z", "2023-11-14T22:13:20.000Z"),
        ("2023-11-14T22:13:30.000Z", "2023-11-14T22:13:30.000Z"),
        ("2023-11-14T22:13:40.000Z", "2023-11-14T22:13:40.000Z")]
    report = verify_files(files)
    assert report.ok, [str(p) for p in report.problems]
    assert (report.first_seq, report.entries) == (1, len(entries))
