"""What ``outbox.backend: redis`` wires beside the outbox: the rate budget shared in the same Redis under the
same key prefix, the start line naming where both live (no credential), and ``pdrelay audit verify --config``
reading this replica's kept audit head from Redis.

Each test has its own key prefix on the shared Redis (127.0.0.1:6379), deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from redis import Redis

from receiver.app import Deps, create_app
from receiver.cli import serve
from receiver.limiter import RateLimiter
from receiver.settings import load_settings, settings_from_mapping
from receiver.sharedlimit import SharedRateLimiter
from receiver.state import STATE
from receiver.status import status_snapshot
from tests.receiver.test_audit_integrity import raw_lines
from tests.receiver.test_outbox_contract import REDIS_URL, drop_prefix

RULES = "version: 1\ndefaults: {routing_key: default, dedup: alert}\nrules: []\n"


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"pdrelay-test-{os.urandom(6).hex()}"
    yield name
    asyncio.run(drop_prefix(name))


def redis_config(tmp_path: Path, prefix: str, url: str = REDIS_URL, per_key: int = 2) -> dict[str, object]:
    (tmp_path / "rules.yaml").write_text(RULES)
    return {
        "pagerduty": {"routing_keys": {"default": "r" * 32}, "dry_run": True,
                      "rate_limit": {"per_key": per_key, "window_seconds": 60}},
        "outbox": {"backend": "redis", "redis": {"url": url, "key_prefix": prefix}},
        "rules": {"paths": [str(tmp_path / "rules.yaml")]},
        "audit": {"path": str(tmp_path / "audit.jsonl")},
    }


async def test_replicas_on_one_redis_outbox_share_one_rate_budget(tmp_path: Path, prefix: str) -> None:
    """Two apps on the same Redis outbox take from one window (2 per 60 s between them), kept under the
    outbox's key prefix; an app on SQLite keeps its own window in the process."""
    settings = settings_from_mapping(redis_config(tmp_path, prefix))
    apps = [create_app(settings, Deps(registry=CollectorRegistry())) for _ in range(2)]
    runners = [web.AppRunner(app) for app in apps]
    for runner in runners:
        await runner.setup()
    try:
        first, second = (app[STATE].limiter for app in apps)
        assert isinstance(first, SharedRateLimiter) and isinstance(second, SharedRateLimiter)
        assert first.window_key("default") == "{" + prefix + "}:limit:default"
        taken = [await first.acquire("default"), await second.acquire("default")]
        assert None not in taken
        assert await first.acquire("default") is None and await second.acquire("default") is None
        (key,) = (await status_snapshot(apps[0][STATE]))["routing_keys"]  # /status: the shared window, as Redis said
        assert (key["name"], key["budget"]) == ("default", {"used": 2, "limit": 2, "window_seconds": 60.0})
        client = Redis.from_url(REDIS_URL)
        try:
            assert client.zcard("{" + prefix + "}:limit:default") == 2
        finally:
            client.close()
    finally:
        for runner in runners:
            await runner.cleanup()

    local = dict(redis_config(tmp_path, prefix))
    local["outbox"] = {"path": str(tmp_path / "outbox.db")}
    app = create_app(settings_from_mapping(local), Deps(registry=CollectorRegistry()))
    assert type(app[STATE].limiter) is RateLimiter


def test_the_start_line_names_the_redis_server_without_credentials_and_the_prefix(tmp_path: Path,
                                                                                  prefix: str) -> None:
    settings = settings_from_mapping(redis_config(tmp_path, prefix, url="redis://operator@127.0.0.1:6379/3"))
    app = create_app(settings, Deps(registry=CollectorRegistry()))
    summary = serve.start_summary(settings, app)
    assert {k: summary[k] for k in ("outbox_backend", "outbox", "outbox_key_prefix", "rate_budget")} == {
        "outbox_backend": "redis", "outbox": "redis://127.0.0.1:6379/3", "outbox_key_prefix": prefix,
        "rate_budget": "redis"}
    assert "operator" not in repr(summary)


@pytest.mark.parametrize(("url", "sentinels", "service", "shown"), [
    ("rediss://user@[::1]:6380/0?ssl_ca_certs=/ca.pem", (), None, "rediss://[::1]:6380/0"),
    ("unix:///run/redis/redis.sock?db=1", (), None, "unix:///run/redis/redis.sock"),
    (None, (("10.0.0.1", 26379), ("10.0.0.2", 26379)), "mymaster", "sentinel mymaster@10.0.0.1:26379,10.0.0.2:26379"),
])
def test_redis_location_shows_scheme_host_port_and_database_only(
    url: str | None, sentinels: tuple[tuple[str, int], ...], service: str | None, shown: str
) -> None:
    assert serve.redis_location(url, sentinels, service) == shown


def test_audit_verify_reads_this_replicas_head_from_the_redis_outbox(tmp_path: Path, prefix: str) -> None:
    """The head the service kept in Redis (under this host's name) catches a log cut short at its end."""
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "pdrelay.yaml").write_text(
        f"pagerduty: {{routing_keys: {{default: '{'r' * 32}'}}, dry_run: true}}\n"
        f"outbox: {{backend: redis, redis: {{url: '{REDIS_URL}', key_prefix: {prefix}}}}}\n"
        "rules: {paths: [rules.yaml]}\naudit: {path: audit.jsonl}\n")

    async def run_service() -> None:
        settings = load_settings(tmp_path / "pdrelay.yaml")
        async with TestClient(TestServer(create_app(settings, Deps(registry=CollectorRegistry())))) as client:
            for _ in range(3):
                assert (await client.post("/-/reload")).status == 200

    asyncio.run(run_service())
    lines = raw_lines(tmp_path / "audit.jsonl")
    client = Redis.from_url(REDIS_URL)
    try:
        kept = client.hget("{" + prefix + "}:meta", f"audit_head:{socket.gethostname()}")
    finally:
        client.close()
    assert kept is not None and kept.decode().startswith(f"{len(lines)}:")
    verify = [sys.executable, "-m", "receiver", "audit", "verify", "--config", "pdrelay.yaml"]
    ok = subprocess.run(verify, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (tmp_path / "audit.jsonl").write_bytes(b"".join(line + b"\n" for line in lines[:-2]))
    cut = subprocess.run(verify, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert cut.returncode == 1
    assert (f"the log ends at entry {len(lines) - 2}, before the recorded head (entry {len(lines)}): "
            f"entries {len(lines) - 1} to {len(lines)} were removed from the end") in cut.stdout + cut.stderr


def test_audit_verify_with_an_unreachable_redis_outbox_fails_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "audit.jsonl").write_bytes(b"")
    socket_path = tmp_path / "nothing.sock"
    (tmp_path / "pdrelay.yaml").write_text(
        f"outbox: {{backend: redis, redis: {{url: 'unix://{socket_path}', key_prefix: gone}}}}\n"
        "rules: {paths: [rules.yaml]}\naudit: {path: audit.jsonl}\n")
    verify = [sys.executable, "-m", "receiver", "audit", "verify", "--config", "pdrelay.yaml"]
    done = subprocess.run(verify, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"pdrelay: Redis outbox: opening unix://{socket_path} (key prefix 'gone') "
                                  "failed: ConnectionError: "), done.stderr
