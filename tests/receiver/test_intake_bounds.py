"""Intake's bounds, against a real server on 127.0.0.1: compressed bodies, slow bodies, admission.

Slow clients are raw sockets that send a request's headers and part of its body, then wait: the
server's answer (or its closing the connection) is read with a bounded deadline.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.offload import OFFLOAD_BYTES, Worker
from receiver.pagerduty.events import classify
from receiver.secret import Secret
from receiver.settings import OutboxSettings, PagerDutySettings, RulesSettings, ServerSettings, Settings
from receiver.state import STATE
from tests.fakes import FakeSender

CAPTURED = Path(__file__).parent.parent / "e2e" / "captured"
RULES = "version: 1\ndefaults: {routing_key: default, dedup: alert, severity: error}\nrules: []\n"
DEADLINE = 10.0  # for an answer the server owes now; a broken bound shows as this timeout

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def valid_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((CAPTURED / "am-0.25_firing.json").read_text())
    body.update(overrides)
    return body


def raw_valid() -> bytes:
    return json.dumps(valid_body()).encode()


@pytest.fixture
def make_client(tmp_path: Path, aiohttp_client: ClientFactory) -> ClientFactory:
    async def make(**server: Any) -> TestClient[Any, Any]:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES)
        settings = Settings(
            server=ServerSettings(**server),
            pagerduty=PagerDutySettings(routing_keys={"default": Secret("k" * 32)}),
            outbox=OutboxSettings(path=tmp_path / "outbox.db"),
            rules=RulesSettings(paths=(rules,)),
        )
        # A PagerDuty that is down keeps events queued for inspection.
        sender = FakeSender(lambda body: classify(503, b"down"))
        return await aiohttp_client(create_app(settings, Deps(registry=CollectorRegistry(), sender=sender)))

    return make


def rejected(client: TestClient[Any, Any], reason: str) -> float | None:
    return client.app[STATE].metrics.registry.get_sample_value("pdrelay_bodies_rejected_total", {"reason": reason})


def head(content_length: int | None, *headers: str) -> bytes:
    lines = ["POST /v1/alertmanager HTTP/1.1", "Host: pdrelay", "Content-Type: application/json", *headers]
    lines.append(f"Content-Length: {content_length}" if content_length is not None else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_to_eof(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Status, headers and JSON body of the one answer on a connection the server then closes."""
    raw = await asyncio.wait_for(reader.read(), DEADLINE)  # to EOF: the server closed the connection
    head_part, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head_part.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


@asynccontextmanager
async def slow_body(client: TestClient[Any, Any] | tuple[str, int], content_length: int | None,
                    start: bytes = b'{"version"') -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection that sent a request's headers and the first bytes of its body, and waits."""
    host, port = client if isinstance(client, tuple) else (client.host, client.port)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(head(content_length) + (start if content_length is not None else b"%x\r\n%s" % (len(start), start)))
    await writer.drain()
    try:
        yield reader, writer
    finally:
        writer.close()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition()`` on the event loop, at most :data:`DEADLINE` seconds."""
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), DEADLINE)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


# --------------------------------------------------------------------------- Content-Encoding


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "gzip, identity", "x-pdrelay", "GZIP"])
async def test_encoded_body_gets_415_unread_and_the_connection_closed(make_client: Any, encoding: str) -> None:
    """A body with a Content-Encoding other than identity is refused by its headers: 415, nothing stored,
    the connection closed (a gzip bomb is never inflated)."""
    client = await make_client()
    body = gzip.compress(raw_valid())
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(head(len(body), f"Content-Encoding: {encoding}") + body)
    await writer.drain()
    status, headers, answer = await read_to_eof(reader)
    writer.close()
    assert (status, answer) == (415, {
        "error": "Content-Encoding is not supported: send the body uncompressed, as Alertmanager does"})
    assert headers["connection"] == "close"
    assert client.app[STATE].outbox.depth().queued == 0
    assert rejected(client, "unsupported_encoding") == 1
    resp = await client.post("/v1/alertmanager", data=raw_valid(), headers={"Content-Encoding": " Identity "})
    assert resp.status == 200  # identity is no encoding


# --------------------------------------------------------------------------- body read timeout


@pytest.mark.parametrize("content_length", [5000, None], ids=["content-length", "chunked"])
async def test_body_not_received_in_time_gets_408_and_the_connection_closed(
    make_client: Any, content_length: int | None
) -> None:
    """A body that stops arriving is answered 408 after server.body_timeout and its connection closed;
    nothing is stored and its admission is given back."""
    client = await make_client(body_timeout=0.2)
    async with slow_body(client, content_length) as (reader, _):
        status, headers, answer = await read_to_eof(reader)
    assert (status, answer) == (408, {"error": "body not received within 0.2 s (server.body_timeout)"})
    assert headers["connection"] == "close"
    assert rejected(client, "body_timeout") == 1
    gate = client.app[STATE].gate
    assert (gate.requests, gate.bytes, client.app[STATE].outbox.depth().queued) == (0, 0, 0)
    assert (await client.post("/v1/alertmanager", data=raw_valid())).status == 200


async def test_a_client_leaving_mid_body_is_no_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A connection closed before the end of its body: its admission is given back, nothing is stored, and
    no error (with a traceback) is logged for it. (A server as ``pdrelay serve`` runs it: aiohttp's test
    server cancels the handler instead, which hides the error.)"""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings = Settings(outbox=OutboxSettings(path=tmp_path / "outbox.db"), rules=RulesSettings(paths=(rules,)))
    app = create_app(settings, Deps(registry=CollectorRegistry()))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        gate = app[STATE].gate
        async with slow_body(("127.0.0.1", runner.addresses[0][1]), 5000):
            await until(lambda: gate.requests == 1, "the slow body admitted")
        await until(lambda: gate.requests == 0, "the admission given back")
        assert app[STATE].outbox.depth().queued == 0
    finally:
        await runner.cleanup()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# --------------------------------------------------------------------------- admission


async def test_requests_over_the_concurrency_limit_get_503_with_retry_after(make_client: Any) -> None:
    """With server.max_concurrent_intake requests in progress, the next one is refused at once: 503,
    Retry-After, an exact error, counted, nothing stored; once one finishes, intake accepts again."""
    client = await make_client(max_concurrent_intake=2)
    gate = client.app[STATE].gate
    async with slow_body(client, 5000), slow_body(client, 5000):
        await until(lambda: gate.requests == 2, "two slow bodies admitted")
        resp = await client.post("/v1/alertmanager", data=raw_valid())
        assert (resp.status, resp.headers["Retry-After"], await resp.json()) == (503, "1", {
            "error": "intake is busy: 2 requests in progress (server.max_concurrent_intake); retry later"})
        assert rejected(client, "busy") == 1
        assert client.app[STATE].outbox.depth().queued == 0
    await until(lambda: gate.requests == 0, "the slow bodies' admissions given back")
    assert (await client.post("/v1/alertmanager", data=raw_valid())).status == 200


async def test_bodies_over_the_byte_bound_get_503(make_client: Any) -> None:
    """Bodies in progress add up to server.body_limit at most: a body that does not fit beside them is
    refused (503), one that does is accepted."""
    client = await make_client(body_limit=8000)
    body = raw_valid()
    gate = client.app[STATE].gate
    async with slow_body(client, 8000 - len(body) + 1):
        await until(lambda: gate.requests == 1, "the slow body admitted")
        resp = await client.post("/v1/alertmanager", data=body)
        assert (resp.status, resp.headers["Retry-After"], await resp.json()) == (503, "1", {
            "error": f"intake is busy: {8001 - len(body)} bytes of bodies in progress, no room for {len(body)} more "
                     "(server.body_limit); retry later"})
    async with slow_body(client, 8000 - len(body)):
        await until(lambda: gate.requests == 1, "the smaller slow body admitted")
        assert (await client.post("/v1/alertmanager", data=body)).status == 200


async def test_a_chunked_body_counts_as_the_whole_byte_bound(make_client: Any) -> None:
    """A body of unknown length (chunked) may be body_limit bytes long: nothing else fits beside it."""
    client = await make_client()
    gate = client.app[STATE].gate
    async with slow_body(client, None):
        await until(lambda: gate.requests == 1, "the chunked body admitted")
        assert gate.bytes == 10 * 1024 * 1024
        assert (await client.post("/v1/alertmanager", data=raw_valid())).status == 503


async def test_operational_endpoints_answer_while_intake_is_full(make_client: Any) -> None:
    """Health, readiness, metrics, status and reload are not held back by intake's bounds."""
    client = await make_client(max_concurrent_intake=1)
    gate = client.app[STATE].gate
    async with slow_body(client, 5000):
        await until(lambda: gate.requests == 1, "the slow body admitted")
        assert (await client.post("/v1/alertmanager", data=raw_valid())).status == 503
        for method, path in [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/status"),
                             ("POST", "/-/reload")]:
            assert (await client.request(method, path)).status == 200, path
        text = await (await client.get("/metrics")).text()
        assert 'pdrelay_bodies_rejected_total{reason="busy"} 1.0' in text


@pytest.mark.parametrize("reason", ["busy", "unsupported_encoding", "body_timeout"])
async def test_the_new_refusal_reasons_are_counted_from_the_start(make_client: Any, reason: str) -> None:
    client = await make_client()
    assert rejected(client, reason) == 0


async def test_body_declared_over_the_limit_gets_413_and_the_connection_closed(make_client: Any) -> None:
    """A Content-Length over server.body_limit is refused before a byte of the body is read."""
    client = await make_client(body_limit=1000)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(head(10 * 1024 ** 3))
    await writer.drain()
    status, headers, answer = await read_to_eof(reader)
    writer.close()
    assert (status, answer) == (413, {"error": f"body of {10 * 1024 ** 3} bytes is over the limit of 1000"})
    assert headers["connection"] == "close"
    assert client.app[STATE].gate.requests == 0


# --------------------------------------------------------------------------- the worker thread


async def test_the_worker_runs_large_bodies_in_its_thread_and_small_ones_here() -> None:
    worker = Worker()
    try:
        small = await worker.run(OFFLOAD_BYTES - 1, lambda: threading.current_thread().name)
        large = await worker.run(OFFLOAD_BYTES, lambda: threading.current_thread().name)
    finally:
        worker.close()
    assert small == threading.current_thread().name
    assert large.startswith("pdrelay-intake")


def alerts(count: int) -> list[dict[str, Any]]:
    template = valid_body()["alerts"][0]
    return [dict(template, fingerprint=f"{n:016x}", labels=dict(template["labels"], n=str(n))) for n in range(count)]


async def test_large_bodies_go_through_the_worker(make_client: Any) -> None:
    """A body over the worker's threshold is parsed and evaluated there, with the same answers: 200 for a
    valid one, the exact 400/413 for a bad one."""
    client = await make_client(max_labels=20)
    many = alerts(200)
    raw = json.dumps(valid_body(alerts=many)).encode()
    assert len(raw) > OFFLOAD_BYTES
    resp = await client.post("/v1/alertmanager", data=raw)
    assert (resp.status, (await resp.json())["queued"]) == (200, 200)
    wide = alerts(200)
    wide[150]["labels"] = {f"l{i}": "v" for i in range(21)}
    resp = await client.post("/v1/alertmanager", json=valid_body(alerts=wide))
    assert (resp.status, await resp.json()) == (413, {
        "error": "alerts[150].labels: 21 labels is over the limit of 20 (server.max_labels)",
        "field": "alerts[150].labels"})
    resp = await client.post("/v1/alertmanager", data=raw[:-2])
    assert resp.status == 400 and (await resp.json())["error"].startswith("invalid JSON: ")
    assert client.app[STATE].outbox.depth().queued == 200
