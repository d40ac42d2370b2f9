"""What the running service writes to the audit log, and `pdrelay audit verify` on the real file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.audit import MemoryAudit
from receiver.pagerduty.events import SendResult, classify
from receiver.secret import Secret
from receiver.settings import OutboxSettings, PagerDutySettings, RulesSettings, Settings
from tests.fakes import FakeSender

CAPTURED = Path(__file__).parent.parent / "e2e" / "captured"
RULES = "version: 1\ndefaults: {routing_key: default, dedup: alert}\nrules: []\n"
ROUTING_KEY = "r" * 32
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def settings_in(tmp_path: Path, **pd: Any) -> Settings:
    (tmp_path / "rules.yaml").write_text(RULES)
    return Settings(
        pagerduty=PagerDutySettings(routing_keys={"default": Secret(ROUTING_KEY)}, failure_threshold=1,
                                    recovery_timeout=0.2, initial_backoff=0.05, max_backoff=0.05, **pd),
        outbox=OutboxSettings(path=tmp_path / "data" / "outbox.db"),
        rules=RulesSettings(paths=(tmp_path / "rules.yaml",)),
    )


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_intake_rules_delivery_and_breaker_are_audited(tmp_path: Path, aiohttp_client: ClientFactory) -> None:
    """Start (rules.loaded), an accepted and a refused body, a reload, a 400 dead letter, a 503 opening
    the breaker, then a delivery: each is one chained entry with the identity, and no alert content."""
    answers: list[SendResult] = [classify(400, b'{"status":"invalid event","errors":["bad"]}'),
                                 classify(503, b"down")]

    def answer(body: Any) -> SendResult:
        return answers.pop(0) if answers else classify(202, b'{"status":"success"}')

    audit = MemoryAudit()
    deps = Deps(registry=CollectorRegistry(), sender=FakeSender(answer), audit=audit)
    app = create_app(settings_in(tmp_path), deps)
    client = await aiohttp_client(app)
    body = json.loads((CAPTURED / "am-0.25_firing.json").read_text())
    assert (await client.post("/v1/alertmanager", json=body)).status == 200
    assert (await client.post("/v1/alertmanager", data=b"{nope")).status == 400
    assert (await client.post("/-/reload")).status == 200
    await until(lambda: any(e["event"] == "event.sent" for e in audit.entries))
    events = [e["event"] for e in audit.entries]
    # The dispatcher's entries interleave with the requests'; the requests' come in their order.
    requests = [e for e in audit.entries if e["event"].startswith(("rules.", "intake."))]
    assert [e["event"] for e in requests] == ["rules.loaded", "intake.accepted", "intake.refused", "rules.loaded"]
    assert {"event.dead_lettered", "breaker.changed", "event.sent"} <= set(events)
    accepted = requests[1]
    assert (accepted["actor"], accepted["alerts"], accepted["queued"]) == ("anonymous", 2, 2)
    assert requests[2]["reason"] == "invalid_body" and requests[2]["status"] == 400
    assert requests[3]["actor"] == "anonymous"
    dead = next(e for e in audit.entries if e["event"] == "event.dead_lettered")
    assert (dead["reason"], dead["status"], dead["routing_key"]) == ("invalid_event", 400, "default")
    changes = [(e["from"], e["to"]) for e in audit.entries if e["event"] == "breaker.changed"]
    assert changes[0] == ("closed", "open")
    assert audit.verify().ok
    text = "\n".join(audit.lines)
    for alert in body["alerts"]:  # labels and the dedup key (the fingerprint) never appear in clear
        assert alert["fingerprint"] not in text
        assert alert["labels"]["instance"] not in text
    assert ROUTING_KEY not in text


async def test_the_default_audit_file_sits_beside_the_outbox_and_verifies(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    app = create_app(settings_in(tmp_path, dry_run=True), Deps(registry=CollectorRegistry()))
    client = await aiohttp_client(app)
    body = (CAPTURED / "am-0.25_firing.json").read_bytes()
    for _ in range(3):
        assert (await client.post("/v1/alertmanager", data=body)).status == 200
    await client.close()
    path = tmp_path / "data" / "audit.jsonl"
    ok = subprocess.run([sys.executable, "-m", "receiver", "audit", "verify", str(path)], capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: 4 entries in 1 file(s), chain intact, head ")
    lines = path.read_text().splitlines()
    entry = json.loads(lines[1])
    assert (entry["event"], entry["queued"]) == ("intake.accepted", 2)
    entry["queued"] = 0  # someone hides that two events were queued
    lines[1] = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    path.write_text("\n".join(lines) + "\n")
    bad = subprocess.run([sys.executable, "-m", "receiver", "audit", "verify", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1
    assert f"{path}:2: entry was edited: its hash does not match its content" in bad.stderr
