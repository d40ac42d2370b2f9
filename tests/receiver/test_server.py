"""The HTTP server under `pdrelay serve` (receiver/server.py), on loopback, driven over raw sockets.

Malformed requests get one fixed answer and one fixed log line, never their own bytes back; a
connection that does not send its request line and headers within ``server.header_timeout`` is
closed, while an idle kept-alive connection is left to aiohttp's keep-alive timeout. Times are
only waited for: a "clock" connection opened at the right moment and closed by the same timeout
shows that the timeout has passed.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, BadStatusLine, InvalidHeader, LineTooLong

from receiver.server import (
    BAD_REQUEST_BODY,
    INTERNAL_ERROR_BODY,
    Protocol,
    Runner,
    app_runner,
    parser_reason,
)
from receiver.settings import ServerSettings

TOKEN = b"Unconfigured-Token-Of-Someone-7f3a9c"
HEADER_TIMEOUT = 0.3
WAIT = 10.0  # bound on every wait for an answer or a close; never reached when things work


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Served:
    port: int
    runner: Runner
    records: list[logging.LogRecord]

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    def protocols(self) -> list[Protocol]:
        assert self.runner.server is not None
        return [p for p in self.runner.server.connections if isinstance(p, Protocol)]


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _boom(request: web.Request) -> web.Response:
    raise RuntimeError("a bug")


async def _read(request: web.Request) -> web.Response:
    return web.Response(text=f"read {len(await request.read())}")


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    app = web.Application()
    app.add_routes([web.get("/ok", _ok), web.get("/boom", _boom), web.post("/read", _read)])
    events = logging.getLogger(f"test.server.{id(app)}")
    events.propagate = False
    events.setLevel(logging.DEBUG)
    handler = Records()
    events.addHandler(handler)
    runner = app_runner(app, ServerSettings(header_timeout=HEADER_TIMEOUT, max_header_bytes=8190), events)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield Served(runner.addresses[0][1], runner, handler.records)
    finally:
        await runner.cleanup()
        events.removeHandler(handler)


async def exchange(served: Served, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes the connection."""
    reader, writer = await served.connect()
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (bounded by WAIT)."""
    return await asyncio.wait_for(reader.read(), WAIT)


async def one_response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    (length,) = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    return head + await asyncio.wait_for(reader.readexactly(length), WAIT)


MALFORMED_LINE = "bad request: malformed request line, header or body framing; answered 400 and closed the connection"
MALFORMED = {
    "bare LF in a header": (b"GET /ok HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN + b"\nX: y\r\n\r\n",
                            "BadHttpMessage", "Missing expected CR after header value"),
    "NUL in a header": (b"GET /ok HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN + b"\x00\r\n\r\n",
                        "BadHttpMessage", "Invalid header value char"),
    "header value over the limit": (
        b"GET /ok HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN + b"A" * 9000 + b"\r\n\r\n",
        "LineTooLong", "Got more than 8190 bytes when reading"),
    "header name over the limit": (b"GET /ok HTTP/1.1\r\nHost: x\r\n" + TOKEN + b"A" * 9000 + b": v\r\n\r\n",
                                   "LineTooLong", "Got more than 8190 bytes when reading"),
    "control byte in the request line": (b"GET /ok?t=" + TOKEN + b"\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
                                         "InvalidURLError", "Invalid char in url query"),
    "token as the method": (TOKEN + b" /ok HTTP/1.1\r\nHost: x\r\n\r\n", "BadHttpMethod", "Invalid method encountered"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_malformed_request_gets_the_fixed_answer_and_one_fixed_log_line(served: Served, case: str) -> None:
    """The 400's body is BAD_REQUEST_BODY whatever the request held; the log line names the error class and the
    parser's reason, and neither holds a byte of the request."""
    data, error, detail = MALFORMED[case]
    answer = await exchange(served, data)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.0 400 Bad Request"
    assert b"Content-Type: application/json" in head.split(b"\r\n")
    assert body == BAD_REQUEST_BODY == b'{"error": "bad request: malformed request line, header or body framing"}'
    assert TOKEN not in answer
    (record,) = served.records
    assert (record.levelname, record.getMessage()) == (
        "WARNING", MALFORMED_LINE)
    assert (record.error, record.detail, record.remote) == (error, detail, "127.0.0.1")  # type: ignore[attr-defined]
    assert record.exc_info is None
    assert TOKEN.decode() not in repr(vars(record))


def test_parser_reason_keeps_the_description_and_drops_what_the_parser_quotes() -> None:
    assert parser_reason(LineTooLong(TOKEN + b"...", 8190)) == "Got more than 8190 bytes when reading"
    assert parser_reason(BadStatusLine("GET /?t=" + TOKEN.decode())) == "Bad status line"
    assert parser_reason(InvalidHeader(TOKEN)) == "Invalid HTTP header"
    assert parser_reason(BadHttpMessage("Duplicate 'Content-Length' header found.")) == "Duplicate"
    assert parser_reason(BadHttpMessage("Missing 'Host' header in request.")) == "Missing"
    assert parser_reason(BadHttpMessage(TOKEN.decode() + "\x1b]0;x\x07 and more")) == TOKEN.decode()[:80]
    assert parser_reason(BadHttpMessage("é" + TOKEN.decode())) == ""
    assert parser_reason(RuntimeError("no parser error")) == ""
    assert parser_reason(None) == ""


async def test_an_error_in_a_handler_gets_a_fixed_answer_and_is_logged_with_its_traceback(served: Served) -> None:
    answer = await exchange(served, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 500 Internal Server Error"
    assert body == INTERNAL_ERROR_BODY
    (record,) = served.records
    assert (record.levelname, record.status, record.error, record.path) == (  # type: ignore[attr-defined]
        "ERROR", 500, "RuntimeError", "/boom")
    assert record.exc_info is not None and str(record.exc_info[1]) == "a bug"


async def test_broken_chunked_framing_is_a_malformed_request(served: Served) -> None:
    answer = await exchange(served, b"POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    b"zz" + TOKEN + b"\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert (head.split(b"\r\n")[0], body) == (b"HTTP/1.0 400 Bad Request", BAD_REQUEST_BODY)
    (record,) = served.records
    assert (record.getMessage(), record.detail) == (MALFORMED_LINE, "Invalid character in chunk size")  # type: ignore[attr-defined]


async def test_a_compressed_body_is_never_inflated(served: Served) -> None:
    """What the handler reads is the bytes sent: a gzip bomb stays its own size (intake refuses it, 415)."""
    bomb = gzip.compress(bytes(1 << 20))
    answer = await exchange(served, b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
                                    b"Connection: close\r\nContent-Length: " + str(len(bomb)).encode()
                                    + b"\r\n\r\n" + bomb)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert (head.split(b"\r\n")[0], body) == (b"HTTP/1.1 200 OK", f"read {len(bomb)}".encode())
    assert len(bomb) < 2048 and served.records == []


# --------------------------------------------------------------------------- the header read timeout


async def test_a_connection_that_sends_nothing_is_closed(served: Served) -> None:
    reader, writer = await served.connect()
    try:
        assert await closed_by_server(reader) == b""
    finally:
        writer.close()
    (record,) = served.records
    assert record.getMessage() == (
        "closed a connection: no complete request line and headers within server.header_timeout")
    assert (record.levelname, record.remote, record.header_timeout) == (  # type: ignore[attr-defined]
        "INFO", "127.0.0.1", HEADER_TIMEOUT)


async def test_a_request_whose_headers_never_end_is_closed_unanswered(served: Served) -> None:
    reader, writer = await served.connect()
    try:
        writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
        assert await closed_by_server(reader) == b""
    finally:
        writer.close()
    assert [r.getMessage() for r in served.records] == [
        "closed a connection: no complete request line and headers within server.header_timeout"]


async def _clock(served: Served) -> None:
    """Return once a connection opened now has been closed by the header timeout: at least that long has passed."""
    reader, writer = await served.connect()
    try:
        assert await closed_by_server(reader) == b""
    finally:
        writer.close()


async def test_the_clock_stops_once_the_headers_are_in(served: Served) -> None:
    """A request whose headers arrived in time is not cut while its body comes (that is server.body_timeout's)."""
    reader, writer = await served.connect()
    try:
        writer.write(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        await writer.drain()
        await _clock(served)
        writer.write(b"cd")
        await writer.drain()
        answer = await one_response(reader)
        assert answer.split(b"\r\n")[0] == b"HTTP/1.1 200 OK" and answer.endswith(b"read 4")
    finally:
        writer.close()


async def test_an_idle_kept_alive_connection_is_left_to_the_keepalive_timeout(served: Served) -> None:
    """Between requests the header timeout does not run; the first byte of the next request starts it again."""
    reader, writer = await served.connect()
    try:
        writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert (await one_response(reader)).endswith(b"ok")
        (idle,) = served.protocols()
        assert not idle.awaiting_headers
        await _clock(served)  # longer than the header timeout, idle
        writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert (await one_response(reader)).endswith(b"ok")
        writer.write(b"GET /ok HT")  # the next request starts, and stalls
        await writer.drain()
        assert await closed_by_server(reader) == b""
    finally:
        writer.close()
    closed = "closed a connection: no complete request line and headers within server.header_timeout"
    assert [r.getMessage() for r in served.records] == [closed, closed]  # the clock's, then this one's
