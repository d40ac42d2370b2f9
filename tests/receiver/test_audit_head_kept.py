"""The audit chain's head kept in the outbox: written as the service runs, checked at its next start,
and used by ``pdrelay audit verify --config``, so a log cut short at its end, or emptied, is caught."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.audit import head_lost
from receiver.audit.entry import ZERO_HASH
from receiver.clock import SystemClock
from receiver.outbox import build_outbox
from receiver.settings import load_settings
from tests.receiver.test_audit_integrity import ClientFactory, app_settings, raw_lines, sha

H1, H2 = "1" * 64, "2" * 64


@pytest.mark.parametrize(("kept", "start", "lost"), [
    (f"3:{H1}", f"3:{H1}", None),
    (f"3:{H1}", f"5:{H2}", None),  # entries written after the head was kept (a crash, operator commands)
    (f"3:{H1}", f"2:{H2}", "the file ends at entry 2, before entry 3 (truncated, emptied or replaced)"),
    (f"3:{H1}", f"0:{ZERO_HASH}", "the file ends at entry 0, before entry 3 (truncated, emptied or replaced)"),
    (f"3:{H1}", f"3:{H2}", "entry 3 is not the entry written (rewritten or replaced)"),
    ("3:\x1b[2J", f"3:{H1}",
     "the head kept in the outbox is not one: a chain head is <seq>:<64 lower-case hex digits>, got '3:\\x1b[2J'"),
])
def test_head_lost_compares_the_kept_head_with_the_files(kept: str, start: str, lost: str | None) -> None:
    assert head_lost(kept, start) == lost


async def kept_head(outbox_path: Path) -> str | None:
    box = build_outbox("sqlite", outbox_path, keyring=None, clock=SystemClock(), keep_sends_for=60.0, operator=True)
    await box.open()
    try:
        return await box.audit_head()
    finally:
        await box.close()


async def run_once(tmp_path: Path, aiohttp_client: ClientFactory, log: logging.Logger) -> None:
    client = await aiohttp_client(create_app(app_settings(tmp_path), Deps(registry=CollectorRegistry(), log=log)))
    assert (await client.post("/-/reload")).status == 200
    await client.close()


async def test_the_outbox_keeps_the_head_and_the_next_start_checks_the_file_against_it(
    tmp_path: Path, aiohttp_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("test.audit_head")
    audit = tmp_path / "data" / "audit.jsonl"
    await run_once(tmp_path, aiohttp_client, log)
    lines = raw_lines(audit)
    assert await kept_head(tmp_path / "data" / "outbox.db") == f"{len(lines)}:{sha(lines[-1])}"

    await run_once(tmp_path, aiohttp_client, log)  # the file as the service left it: nothing to say
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    lines = raw_lines(audit)
    kept = f"{len(lines)}:{sha(lines[-1])}"
    assert await kept_head(tmp_path / "data" / "outbox.db") == kept

    audit.write_bytes(b"")  # emptied while the service was down
    await run_once(tmp_path, aiohttp_client, log)
    (error,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    problem = f"the file ends at entry 0, before entry {len(lines)} (truncated, emptied or replaced)"
    assert error.getMessage() == "the audit log lost entries since the outbox kept its head: " + problem
    entries = [json.loads(line) for line in raw_lines(audit)]
    (noted,) = [e for e in entries if e["event"] == "audit.head_lost"]
    assert (noted["kept_head"], noted["file_head"], noted["problem"]) == (kept, f"0:{ZERO_HASH}", problem)
    assert entries[0]["event"] == "rules.loaded" and entries[0]["prev"] == ZERO_HASH  # the new chain's start


def test_verify_with_the_config_checks_the_log_against_the_kept_head(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("version: 1\ndefaults: {routing_key: default, dedup: alert}\nrules: []\n")
    (tmp_path / "pdrelay.yaml").write_text("outbox: {path: data/outbox.db}\nrules: {paths: [rules.yaml]}\n")

    async def run_service() -> None:
        settings = load_settings(tmp_path / "pdrelay.yaml")
        async with TestClient(TestServer(create_app(settings, Deps(registry=CollectorRegistry())))) as client:
            for _ in range(3):
                assert (await client.post("/-/reload")).status == 200
    asyncio.run(run_service())
    verify = [sys.executable, "-m", "receiver", "audit", "verify", "--config", "pdrelay.yaml"]
    ok = subprocess.run(verify, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    audit = tmp_path / "data" / "audit.jsonl"
    lines = raw_lines(audit)
    audit.write_bytes(b"".join(line + b"\n" for line in lines[:-2]))  # the last two entries cut away
    cut = subprocess.run(verify, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert cut.returncode == 1
    assert (f"the log ends at entry {len(lines) - 2}, before the recorded head (entry {len(lines)}): "
            f"entries {len(lines) - 1} to {len(lines)} were removed from the end") in cut.stdout + cut.stderr
