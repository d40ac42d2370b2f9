"""The Events v2 sender against a real loopback HTTP server, and response classification."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from receiver.errors import Reason
from receiver.pagerduty.events import EventsSender, classify, describe_error_body
from receiver.secret import Secret

KEY = Secret("0123456789abcdef0123456789abcdef")


@pytest.mark.parametrize(
    ("status", "body", "reason", "detail"),
    [
        (202, b'{"status":"success","message":"Event processed","dedup_key":"k"}', None, ""),
        (400, b'{"status":"invalid event","message":"Event object is invalid",'
              b'"errors":["\'payload.source\' is missing or blank"]}',
         Reason.INVALID_EVENT, "invalid event: Event object is invalid: 'payload.source' is missing or blank"),
        (400, b'{"status":"Unrecognized object","message":"Event object format is unrecognized",'
              b'"errors":["JSON parse error"]}',
         Reason.INVALID_EVENT, "Unrecognized object: Event object format is unrecognized: JSON parse error"),
        (400, b"InvalidRoutingKey", Reason.INVALID_EVENT, "InvalidRoutingKey"),
        (401, b"", Reason.AUTH_ERROR, ""),
        (403, b'{"message":"Forbidden"}', Reason.AUTH_ERROR, "Forbidden"),
        (404, b"not found", Reason.AUTH_ERROR, "not found"),
        (408, b"", Reason.TIMEOUT, ""),
        (413, b"too big", Reason.CLIENT_ERROR, "too big"),
        (429, b'{"status":"throttle event","message":"Requests for this service are arriving too quickly."}',
         Reason.RATE_LIMITED, "throttle event: Requests for this service are arriving too quickly."),
        (500, b"<html>oops</html>", Reason.SERVER_ERROR, "<html>oops</html>"),
        (503, b"[1,2]", Reason.SERVER_ERROR, "[1,2]"),
    ],
)
def test_classify_every_answer(status: int, body: bytes, reason: Reason | None, detail: str) -> None:
    """Each PagerDuty status maps to one reason, and error bodies are read defensively."""
    result = classify(status, body)
    assert result.ok is (reason is None)
    assert result.reason is reason
    assert result.detail == detail


def test_error_body_is_trimmed() -> None:
    """An enormous error body does not become an enormous dead-letter note."""
    assert len(describe_error_body(b"x" * 100_000)) == 2000


async def _serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> TestServer:
    app = web.Application()
    app.router.add_post("/v2/enqueue", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_sender_posts_routing_key_and_body() -> None:
    """The secret goes in the body's routing_key, next to the event."""
    seen: list[dict[str, object]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.json_response({"status": "success", "message": "Event processed", "dedup_key": "k"},
                                 status=202)

    server = await _serve(handler)
    sender = EventsSender(str(server.make_url("/v2/enqueue")), timeout=2, connect_timeout=1)
    try:
        result = await sender.send(KEY, {"event_action": "trigger", "dedup_key": "k"})
    finally:
        await sender.aclose()
        await server.close()
    assert result.ok and result.status == 202
    assert seen == [{"routing_key": KEY.reveal(), "event_action": "trigger", "dedup_key": "k"}]


async def test_sender_times_out() -> None:
    """A PagerDuty that does not answer in time is a retryable timeout."""
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=202)

    server = await _serve(handler)
    sender = EventsSender(str(server.make_url("/v2/enqueue")), timeout=0.2, connect_timeout=0.2)
    try:
        result = await sender.send(KEY, {"event_action": "trigger"})
    finally:
        release.set()
        await sender.aclose()
        await server.close()
    assert (result.ok, result.reason, result.retryable) == (False, Reason.TIMEOUT, True)


async def test_sender_connection_refused() -> None:
    """Nothing listening is a retryable connection error whose detail never holds the key."""
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=202)

    server = await _serve(handler)
    url = str(server.make_url("/v2/enqueue"))
    await server.close()
    sender = EventsSender(url, timeout=1, connect_timeout=0.5)
    try:
        result = await sender.send(KEY, {"event_action": "trigger"})
    finally:
        await sender.aclose()
    assert (result.ok, result.reason, result.retryable) == (False, Reason.CONNECTION, True)
    assert KEY.reveal() not in result.detail
    assert json.dumps(result.detail)
