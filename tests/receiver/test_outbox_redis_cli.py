"""``serve`` and ``pdrelay outbox …`` against a Redis outbox (``outbox.backend: redis``), end to end.

Each test has its own key prefix on the shared Redis (127.0.0.1:6379), deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis

from receiver.errors import Reason
from receiver.models import parse_notification
from receiver.outbox.redis import RedisOutbox
from receiver.settings.model import RedisSettings
from tests.fakes import FakeClock
from tests.receiver.test_outbox_cli import DB1, DB2, FIRING, FIXED_RULES, RULES_AT_INTAKE, pdrelay
from tests.receiver.test_outbox_contract import REDIS_URL, drop_prefix
from tests.receiver.test_serve import on_port_0, running, wait_ready
from transforms import load_rules


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"pdrelay-test-{os.urandom(6).hex()}"
    yield name
    asyncio.run(drop_prefix(name))


def configure(tmp_path: Path, prefix: str, rules: str) -> Path:
    (tmp_path / "rules.yaml").write_text(rules)
    (tmp_path / "pdrelay.yaml").write_text(
        f"outbox: {{backend: redis, redis: {{url: '{REDIS_URL}', key_prefix: {prefix}}}}}\n"
        "rules: {paths: [rules.yaml]}\n")
    return tmp_path


def test_outbox_commands_work_against_redis(tmp_path: Path, prefix: str) -> None:
    """list, show, replay and purge read and change the Redis outbox a server would share."""
    d = configure(tmp_path, prefix, FIXED_RULES)
    source = FIRING.read_bytes()
    (tmp_path / "intake.yaml").write_text(RULES_AT_INTAKE)
    evaluation = load_rules([tmp_path / "intake.yaml"]).evaluate(parse_notification(source))

    async def fill() -> None:
        box = RedisOutbox(RedisSettings(url=REDIS_URL, key_prefix=prefix), clock=FakeClock(start=time.time()))
        await box.open()
        await box.enqueue(source, evaluation.events, evaluation.invalid, resend_interval=3600.0)
        for item in await box.claim(10, ()):
            if item.dedup_key == DB1:
                await box.dead_letter(item, Reason.INVALID_EVENT, 400, "Event object is invalid")
            else:
                await box.retry_later(item, time.time(), Reason.SERVER_ERROR, 503, "unavailable")
        await box.close()

    asyncio.run(fill())
    listed = [json.loads(x) for x in pdrelay("list", "--json", cwd=d).stdout.splitlines()]
    assert [(i["id"], i["state"], i["dedup_key"], i["reason"]) for i in listed] == [
        (1, "dead", DB1, "invalid_event"), (2, "queued", DB2, "server_error")]
    shown = json.loads(pdrelay("show", "1", "--json", cwd=d).stdout)
    assert (shown["body"]["dedup_key"], shown["last_error"]) == (DB1, "Event object is invalid")
    done = pdrelay("replay", "1", cwd=d)
    assert (done.returncode, done.stdout, done.stderr) == (0, "replayed 1 (routing key default)\n", "")
    item = json.loads(pdrelay("show", "1", "--json", cwd=d).stdout)
    assert (item["state"], item["rules"], item["body"]["payload"]["summary"]) == (
        "queued", ["fixed"], "fixed db-1.example.com:9100")
    done = pdrelay("purge", "1", "2", "--yes", "--force", cwd=d)
    assert (done.returncode, done.stdout, done.stderr) == (0, "purged 2\n", "")
    assert pdrelay("list", "--json", cwd=d).stdout == ""


def test_serve_stores_in_redis_and_delivers(tmp_path: Path, prefix: str) -> None:
    """A served notification is answered 200 once in Redis; the dispatcher (dry run) delivers and forgets it;
    the same notification again is a duplicate of what PagerDuty was told."""
    d = configure(tmp_path, prefix, RULES_AT_INTAKE)
    client = Redis.from_url(REDIS_URL)
    try:
        with running(["serve", *on_port_0(tmp_path)], cwd=d) as proc:
            url = wait_ready(tmp_path, proc)
            answer = httpx.post(f"{url}/v1/alertmanager", content=FIRING.read_bytes(),
                                headers={"Content-Type": "application/json"}, timeout=10)
            assert answer.status_code == 200
            deadline = time.monotonic() + 20
            while client.zcard(f"{{{prefix}}}:items") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert client.zcard(f"{{{prefix}}}:items") == 0 and client.get(f"{{{prefix}}}:next_id") == b"2"
            again = httpx.post(f"{url}/v1/alertmanager", content=FIRING.read_bytes(),
                               headers={"Content-Type": "application/json"}, timeout=10)
            assert again.status_code == 200 and client.zcard(f"{{{prefix}}}:items") == 0
    finally:
        client.close()
