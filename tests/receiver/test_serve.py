"""`pdrelay serve` as a process, and rule reloading while it runs.

Every process listens on port 0 (``--listen 127.0.0.1:0``) and reports the port it got in a
``--port-file``; every wait polls against a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
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
from receiver.server import BAD_REQUEST_BODY
from receiver.settings import OutboxSettings, RulesSettings, Settings
from receiver.state import STATE
from tests.malformed import malformed_requests, raw_exchange

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


def on_port_0(tmp_path: Path) -> list[str]:
    """The ``serve`` options that make it listen on a port the kernel picks and write it to a file."""
    return ["--listen", "127.0.0.1:0", "--port-file", str(tmp_path / "pdrelay.port")]


def wait_port(tmp_path: Path, proc: subprocess.Popen[str], timeout: float = 20.0) -> int:
    """The port ``serve`` wrote to its ``--port-file`` (see :func:`on_port_0`), once it is there."""
    port_file = tmp_path / "pdrelay.port"
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        assert proc.poll() is None, "pdrelay exited early"
        assert time.monotonic() < deadline, "pdrelay wrote no port file"
        time.sleep(0.05)
    return int(port_file.read_text())


def wait_ready(tmp_path: Path, proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    """The URL of a ``serve`` started with :func:`on_port_0`, once it answers ``/readyz`` with 200."""
    url = f"http://127.0.0.1:{wait_port(tmp_path, proc, timeout)}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "pdrelay exited early"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return url
        time.sleep(0.05)
    raise AssertionError("pdrelay did not become ready")


def json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, a clean exit (bounded), and what it wrote to stderr."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert proc.stderr is not None
    return proc.stderr.read()


def test_serve_listens_on_port_0_and_reports_the_port(tmp_path: Path) -> None:
    """``--listen 127.0.0.1:0`` wins over server.listen; the bound port is written, one line, to
    ``--port-file`` and named in the start-up line, and /healthz answers on it."""
    (tmp_path / "rules.yaml").write_text(RULES_V1)
    cfg = tmp_path / "pdrelay.yaml"
    cfg.write_text("server: {listen: '127.0.0.1:1'}\nrules: {paths: [rules.yaml]}\n")
    with running(["serve", "--config", str(cfg), *on_port_0(tmp_path)], tmp_path) as proc:
        port = wait_port(tmp_path, proc)
        assert 0 < port < 65536 and port != 1
        assert (tmp_path / "pdrelay.port").read_text() == f"{port}\n"
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 200
        lines = json_lines(stop(proc))
    (start,) = [line for line in lines if line["msg"] == "pdrelay starting"]
    assert start["listen"] == f"127.0.0.1:{port}"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pdrelay.port")] == []  # no temp file left


def test_listen_keeps_to_loopback_without_auth(tmp_path: Path) -> None:
    """``--listen`` obeys server.listen's rule: elsewhere than loopback only with auth (or opted out)."""
    (tmp_path / "rules.yaml").write_text(RULES_V1)
    cfg = tmp_path / "pdrelay.yaml"
    cfg.write_text("rules: {paths: [rules.yaml]}\n")
    for listen, message in [
        ("0.0.0.0:0", "pdrelay: --listen: 0.0.0.0:0 is not a loopback address and no auth is configured; "
                      "set server.allow_unauthenticated: true to expose pdrelay without authentication"),
        ("9095", "pdrelay: --listen: expected HOST:PORT (port 0: any free port), got '9095'"),
    ]:
        done = subprocess.run([sys.executable, "-m", "receiver", "serve", "--config", str(cfg), "--listen", listen],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stderr.strip().splitlines()[-1]) == (2, message)


def test_serve_on_embedded_defaults_is_dry_run_on_loopback(tmp_path: Path) -> None:
    """With no config and no rules/ folder, serve uses its packaged example rules, stores under ./data,
    accepts a real body, sends nothing, and says it is in dry-run on loopback. (Its port, 9095 by
    default, is replaced by ``--listen 127.0.0.1:0``: a test must not depend on a fixed port being free;
    tests/receiver/test_settings.py checks the default.)"""
    with running(["serve", *on_port_0(tmp_path)], tmp_path) as proc:
        url = wait_ready(tmp_path, proc)
        body = (CAPTURED / "am-0.25_firing.json").read_bytes()
        resp = httpx.post(f"{url}/v1/alertmanager", content=body, timeout=5)
        assert resp.status_code == 200
        assert resp.json()["queued"] == 2
        status = httpx.get(f"{url}/status", timeout=5).json()
        assert status["dry_run"] is True
        assert status["rules"]["sources"][0].endswith("receiver/defaults/rules.yaml")
        lines = json_lines(stop(proc))
    messages = [line["msg"] for line in lines]
    assert "DRY-RUN: no routing key is configured; events are accepted, rendered, stored and logged, "\
        "but NOT sent" in messages
    assert f"no authentication configured: listening on loopback only ({url.removeprefix('http://')})" in messages
    would_send = [line for line in lines if line["msg"] == "dry-run: would send event"]
    assert sorted(line["dedup_key"] for line in would_send) == ["0ee71a229f2262e7", "d55413deeb88df6c"]
    assert all(line["routing_key"] == "default" for line in would_send)
    assert (tmp_path / "data" / "outbox.db").exists()


def test_sighup_reloads_rules(tmp_path: Path) -> None:
    """SIGHUP makes a running pdrelay load its rules again."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_V1)
    cfg = tmp_path / "pdrelay.yaml"
    cfg.write_text("rules: {paths: [rules.yaml]}\n")
    with running(["serve", "--config", str(cfg), *on_port_0(tmp_path)], tmp_path) as proc:
        url = wait_ready(tmp_path, proc)
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
    cfg = tmp_path / "pdrelay.yaml"
    (tmp_path / "rules.yaml").write_text(RULES_V1)
    cfg.write_text("server: {max_header_bytes: 1KiB}\nrules: {paths: [rules.yaml]}\n")
    body = (CAPTURED / "am-0.25_firing.json").read_bytes()
    with running(["serve", "--config", str(cfg), *on_port_0(tmp_path)], tmp_path) as proc:
        url = wait_ready(tmp_path, proc)
        big = httpx.post(f"{url}/v1/alertmanager", content=body, headers={"X-Big": "x" * 1100}, timeout=5)
        assert big.status_code == 400
        assert big.content == BAD_REQUEST_BODY
        fits = httpx.post(f"{url}/v1/alertmanager", content=body, headers={"X-Fits": "x" * 900}, timeout=5)
        assert fits.status_code == 200


# --------------------------------------------------------------------------- hardening of the HTTP server

BEARER = "Bearer-Token-For-Alertmanager-4f1e2d"
ADMIN = "Admin-Token-For-Operators-9c8b7a6d"
STRANGER = "Someone-Elses-Token-0b1c2d3e4f5a"  # token-looking, configured nowhere: a credential all the same
AUTH_CONFIG = f"auth: {{bearer_tokens: ['{BEARER}'], admin_tokens: ['{ADMIN}']}}\nrules: {{paths: [rules.yaml]}}\n"


def test_malformed_requests_echo_no_header_byte_in_answers_or_logs(tmp_path: Path) -> None:
    """A token in a header aiohttp cannot parse (bare LF, NUL, over server.max_header_bytes, in the request
    line) is neither answered back nor logged, configured or not: each gets the fixed 400 body, and stderr
    holds JSON lines only, one per request, naming the error class."""
    (tmp_path / "rules.yaml").write_text(RULES_V1)
    cfg = tmp_path / "pdrelay.yaml"
    cfg.write_text(AUTH_CONFIG)
    tokens = (ADMIN, BEARER, STRANGER)
    with running(["serve", "--config", str(cfg), *on_port_0(tmp_path)], tmp_path) as proc:
        port = wait_port(tmp_path, proc)
        wait_ready(tmp_path, proc)
        answers = [raw_exchange(port, data) for token in tokens for data in malformed_requests(token)]
        stderr = stop(proc)
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert (head.split(b"\r\n")[0], body) == (b"HTTP/1.0 400 Bad Request", BAD_REQUEST_BODY)
    assert [line for line in stderr.splitlines() if not line.startswith("{")] == []
    for token in tokens:
        assert token not in stderr
    refused = [line for line in json_lines(stderr) if line["msg"].startswith("bad request:")]
    assert [line["error"] for line in refused] == [
        "BadHttpMessage", "BadHttpMessage", "LineTooLong", "LineTooLong", "InvalidURLError", "BadHttpMethod"] * 3
    assert {line["logger"] for line in refused} == {"pdrelay"}


def test_header_timeout_closes_a_connection_that_sends_no_complete_request(tmp_path: Path) -> None:
    """server.header_timeout: a connection that sends nothing, or half a request line, is closed unanswered."""
    (tmp_path / "rules.yaml").write_text(RULES_V1)
    cfg = tmp_path / "pdrelay.yaml"
    cfg.write_text("server: {header_timeout: 0.3s}\nrules: {paths: [rules.yaml]}\n")
    with running(["serve", "--config", str(cfg), *on_port_0(tmp_path)], tmp_path) as proc:
        port = wait_port(tmp_path, proc)
        url = wait_ready(tmp_path, proc)
        assert raw_exchange(port, b"") == b""
        assert raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ") == b""
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        lines = json_lines(stop(proc))
    closed = [line for line in lines if line["msg"].startswith("closed a connection")]
    assert [(line["msg"], line["header_timeout"]) for line in closed] == [
        ("closed a connection: no complete request line and headers within server.header_timeout", 0.3)] * 2


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


@pytest.mark.parametrize("layout", ["one data directory", "audit log first, in a directory of its own"])
def test_serve_creates_its_files_for_its_owner_only(tmp_path: Path, layout: str) -> None:
    """Whatever creates them first, the data directories are 0700 and the outbox, its -wal and -shm, and the
    audit log 0600 (the process umask is 077)."""
    (tmp_path / "rules.yaml").write_text(RULES_V1)
    if layout == "one data directory":
        outbox, audit = tmp_path / "data" / "outbox.db", tmp_path / "data" / "audit.jsonl"
    else:
        outbox, audit = tmp_path / "box" / "outbox.db", tmp_path / "trail" / "audit.jsonl"
    cfg = tmp_path / "pdrelay.yaml"
    cfg.write_text(f"outbox: {{path: {outbox}}}\naudit: {{path: {audit}}}\nrules: {{paths: [rules.yaml]}}\n")
    body = (CAPTURED / "am-0.25_firing.json").read_bytes()
    with running(["serve", "--config", str(cfg), *on_port_0(tmp_path)], tmp_path) as proc:
        url = wait_ready(tmp_path, proc)
        assert httpx.post(f"{url}/v1/alertmanager", content=body, timeout=5).status_code == 200
        files = [outbox, outbox.with_name("outbox.db-wal"), outbox.with_name("outbox.db-shm"), audit]
        modes = {p.relative_to(tmp_path).as_posix(): mode(p) for p in [*files, outbox.parent, audit.parent]}
        stop(proc)
    assert modes == {p.relative_to(tmp_path).as_posix(): "0o600" for p in files} | {
        outbox.parent.name: "0o700", audit.parent.name: "0o700"}
