"""`pdrelay serve` as a process, and rule reloading while it runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.settings import OutboxSettings, RulesSettings, Settings
from receiver.state import STATE

CAPTURED = Path(__file__).parent.parent / "e2e" / "captured"
RULES_V1 = "version: 1\ndefaults: {routing_key: default, severity: warning}\nrules: []\n"
RULES_V2 = "version: 1\ndefaults: {routing_key: default, severity: critical}\nrules: []\n"


@contextlib.contextmanager
def running(args: list[str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "receiver", *args], cwd=cwd, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "pdrelay exited early"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError("pdrelay did not become ready")


def test_serve_on_embedded_defaults_is_dry_run_on_loopback(tmp_path: Path) -> None:
    """With no config and no rules/ folder, serve uses its packaged example rules, stores under ./data,
    accepts a real body, sends nothing, and says it is in dry-run on loopback."""
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", 9095)) != 0, "port 9095 (the embedded default) is taken"
    with running(["serve"], tmp_path) as proc:
        wait_ready("http://127.0.0.1:9095", proc)
        body = (CAPTURED / "am-0.25_firing.json").read_bytes()
        resp = httpx.post("http://127.0.0.1:9095/v1/alertmanager", content=body, timeout=5)
        assert resp.status_code == 200
        assert resp.json()["queued"] == 2
        status = httpx.get("http://127.0.0.1:9095/status", timeout=5).json()
        assert status["dry_run"] is True
        assert status["rules"]["sources"][0].endswith("receiver/defaults/rules.yaml")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        assert proc.stderr is not None
        lines = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
    messages = [line["msg"] for line in lines]
    assert "DRY-RUN: no routing key is configured; events are accepted, rendered, stored and logged, "\
        "but NOT sent" in messages
    assert "no authentication configured: listening on loopback only (127.0.0.1:9095)" in messages
    would_send = [line for line in lines if line["msg"] == "dry-run: would send event"]
    assert sorted(line["dedup_key"] for line in would_send) == ["0ee71a229f2262e7", "d55413deeb88df6c"]
    assert all(line["routing_key"] == "default" for line in would_send)
    assert (tmp_path / "data" / "outbox.db").exists()


def test_sighup_reloads_rules(tmp_path: Path) -> None:
    """SIGHUP makes a running pdrelay load its rules again."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_V1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "pdrelay.yaml"
    cfg.write_text(f"server: {{listen: '127.0.0.1:{port}'}}\nrules: {{paths: [rules.yaml]}}\n")
    url = f"http://127.0.0.1:{port}"
    with running(["serve", "--config", str(cfg)], tmp_path) as proc:
        wait_ready(url, proc)
        before = httpx.get(f"{url}/status").json()["rules"]["sha256"]
        rules.write_text(RULES_V2)
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/status").json()["rules"]["sha256"] == before:
            assert time.monotonic() < deadline, "rules were not reloaded"
            time.sleep(0.05)


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: Any) -> TestClient[Any, Any]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_V1)
    settings = Settings(outbox=OutboxSettings(path=tmp_path / "o.db"), rules=RulesSettings(paths=(rules,)))
    c: TestClient[Any, Any] = await aiohttp_client(create_app(settings, Deps(registry=CollectorRegistry())))
    return c


async def test_reload_endpoint_swaps_good_rules_and_keeps_them_on_error(client: Any, tmp_path: Path) -> None:
    """POST /-/reload loads valid rules; invalid ones are refused with file:line errors and the old set stays."""
    st = client.app[STATE]
    rules = tmp_path / "rules.yaml"
    first = st.rulebook.current.sha256
    rules.write_text(RULES_V2)
    resp = await client.post("/-/reload")
    assert resp.status == 200
    second = (await resp.json())["sha256"]
    assert second != first and st.rulebook.current.sha256 == second
    rules.write_text("version: 1\nrules:\n  - drop: maybe\n")
    resp = await client.post("/-/reload")
    assert resp.status == 400
    answer = await resp.json()
    assert answer["status"] == "failed" and answer["sha256"] == second
    assert answer["errors"] and all(e.startswith(f"{rules}:3: ") for e in answer["errors"])
    assert st.rulebook.current.sha256 == second
    assert st.metrics.registry.get_sample_value("pdrelay_rules_last_reload_successful") == 0


async def test_watch_reloads_when_the_file_changes(client: Any, tmp_path: Path) -> None:
    """The rules watcher notices an edited file and reloads it."""
    st = client.app[STATE]
    first = st.rulebook.current.sha256
    task = asyncio.create_task(st.rulebook.watch(interval=0.02))
    try:
        (tmp_path / "rules.yaml").write_text(RULES_V2)
        deadline = asyncio.get_running_loop().time() + 5
        while st.rulebook.current.sha256 == first:
            assert asyncio.get_running_loop().time() < deadline, "watcher did not reload"
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_oversized_request_headers_are_refused_before_any_work(tmp_path: Path) -> None:
    """server.max_header_bytes bounds every header line: a larger one is refused by the HTTP parser with
    a 4xx, and the server goes on serving."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "pdrelay.yaml"
    (tmp_path / "rules.yaml").write_text(RULES_V1)
    cfg.write_text(f"server: {{listen: '127.0.0.1:{port}', max_header_bytes: 1KiB}}\nrules: {{paths: [rules.yaml]}}\n")
    url = f"http://127.0.0.1:{port}"
    body = (CAPTURED / "am-0.25_firing.json").read_bytes()
    with running(["serve", "--config", str(cfg)], tmp_path) as proc:
        wait_ready(url, proc)
        big = httpx.post(f"{url}/v1/alertmanager", content=body, headers={"X-Big": "x" * 1100}, timeout=5)
        assert big.status_code == 400
        assert big.text.startswith("Got more than 1024 bytes when reading"), big.text
        fits = httpx.post(f"{url}/v1/alertmanager", content=body, headers={"X-Fits": "x" * 900}, timeout=5)
        assert fits.status_code == 200
