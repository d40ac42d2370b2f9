"""The HTTP server under ``pdrelay serve``: aiohttp's, with what pdrelay asks of it that aiohttp has no setting for.

:func:`app_runner` gives a :class:`aiohttp.web.AppRunner` whose connections are :class:`Protocol`,
aiohttp's own request handler with three differences:

- A request aiohttp cannot parse (a header line with a bare LF or a NUL byte, a request line or
  header over ``server.max_header_bytes``, a bad method or URL, broken chunked framing) is
  answered ``400`` with the fixed :data:`BAD_REQUEST_BODY`, never with the parser's message,
  which quotes the offending bytes, credentials and all. It is logged as one fixed line naming
  the error class and the parser's reason cut before the first quoted byte
  (:func:`parser_reason`); no traceback. Bodies are never decoded (``auto_decompress`` off:
  intake refuses any ``Content-Encoding``), so a compressed body cannot inflate here.
- Any other error a request runs into is answered with a fixed JSON body too and logged with its
  traceback (redacted by :mod:`receiver.logs` like every line).
- A connection must send a request's line and headers within ``server.header_timeout``: from
  its opening for the first request, from the first byte of the next one on a kept-alive
  connection; otherwise it is closed. Waiting idle between requests stays governed by aiohttp's
  ``keepalive_timeout``; reading a body by the handlers (``server.body_timeout``).

aiohttp 3.14 has no documented hook for the answer to a malformed request: it is built by
``RequestHandler.handle_error`` before any middleware or signal runs, and ``handler_args`` or the
runner's keyword arguments only reach the handler's constructor parameters. So :class:`Runner`
overrides ``_make_server``, the factory method every ``BaseRunner`` subclass implements, to wrap
the server aiohttp built for the application in a :class:`Server` that makes :class:`Protocol`
connections. Of aiohttp's classes only public methods are overridden (``handle_error``,
``log_exception``, ``connection_made``, ``data_received``, ``finish_response``,
``connection_lost``) and only
public attributes read (the server's ``request_handler``, ``request_factory``,
``handler_cancellation``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader

from receiver.settings import ServerSettings

__all__ = ["BAD_REQUEST_BODY", "Protocol", "Runner", "Server", "app_runner", "parser_reason"]

BAD_REQUEST_BODY = b'{"error": "bad request: malformed request line, header or body framing"}'
"""The whole body of the ``400`` answer to a request that does not parse, whatever it held."""
INTERNAL_ERROR_BODY = b'{"error": "internal error; the request was not processed"}'
KEEPALIVE_TIMEOUT = 75.0  # web.run_app's
SHUTDOWN_TIMEOUT = 10.0

_REASON = re.compile(r"[A-Za-z0-9 ,.()_-]{0,80}")


def parser_reason(exc: BaseException | None) -> str:
    """What the parser said about a malformed request, cut before the first byte it quotes.

    aiohttp's messages start with a fixed description ("Invalid header value char", "Got more
    than 8190 bytes when reading") and then quote the request after a ``:`` or a quote; only the
    description is kept, in a small alphabet and at most 80 characters.
    """
    message = exc.message if isinstance(exc, HttpProcessingError) else ""
    if not isinstance(message, str):
        return ""
    head = re.split(r"[:'\"\n`]", message, maxsplit=1)[0]
    match = _REASON.match(head)
    return match.group(0).strip() if match else ""


class Protocol(web.RequestHandler):
    """aiohttp's request handler with a fixed answer to malformed requests and a header read timeout."""

    __slots__ = ("_events", "_header_timeout", "_header_timer", "_last_body")

    def __init__(self, manager: web.Server, *, header_timeout: float, events: logging.Logger, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._last_body: StreamReader | None = None  # the finished request's body, until the next one starts
        self._events = events

    @property
    def awaiting_headers(self) -> bool:
        """Whether the header timeout runs: a request's line and headers are due."""
        return self._header_timer is not None

    # ----------------------------------------------------------------- the header read timeout
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        # The first byte after a finished request (its body read to the end) starts the next one.
        if data and self._last_body is not None and self._last_body.is_eof():
            self._last_body = None
            self._arm()
        super().data_received(data)

    def request_started(self) -> None:
        """The line and headers of a request are in: the timeout stops until it is finished."""
        self._disarm()
        self._last_body = None

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        done = await super().finish_response(request, resp, start_time)
        self._last_body = request.content
        return done

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if self._header_timeout > 0:
            self._header_timer = asyncio.get_running_loop().call_later(self._header_timeout, self._headers_overdue)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_overdue(self) -> None:
        self._header_timer = None
        peer = self.peername
        self._events.info(
            "closed a connection: no complete request line and headers within server.header_timeout",
            extra={"remote": peer[0] if isinstance(peer, tuple) else None, "header_timeout": self._header_timeout},
        )
        self.force_close()

    # ----------------------------------------------------------------- errors
    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request that failed outside any handler's own error handling; logs it once.

        ``message`` (the parser's text, raw bytes included) is never used.
        """
        if isinstance(exc, HttpProcessingError | web.RequestPayloadError):  # the body's framing: the same fault
            status, body = 400, BAD_REQUEST_BODY
            self._events.warning(
                "bad request: malformed request line, header or body framing; answered 400 and closed the connection",
                extra={"error": type(exc).__name__, "detail": parser_reason(exc), "remote": request.remote},
            )
        else:
            body = INTERNAL_ERROR_BODY
            self._events.error(
                "error while handling a request; answered with a fixed error and closed the connection",
                exc_info=exc, extra={"status": status, "error": type(exc).__name__ if exc else None,
                                     "method": request.method, "path": request.path},
            )
        if request.writer.output_size > 0:  # part of an answer is out: nothing else can be sent
            raise ConnectionError("response already started; cannot send the error answer")
        resp = web.Response(status=status, body=body, content_type="application/json")
        resp.force_close()
        return resp

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's own error lines, but none for a client's malformed request: it was answered and logged once."""
        if isinstance(kw.get("exc_info"), HttpProcessingError | web.RequestPayloadError):
            return
        super().log_exception(*args, **kw)


RequestFactory = Any  # aiohttp's (message, payload, protocol, writer, task) -> BaseRequest


class Server(web.Server):
    """aiohttp's server for the application, making :class:`Protocol` connections."""

    def __init__(self, made: web.Server, *, header_timeout: float, events: logging.Logger, **kwargs: Any) -> None:
        super().__init__(made.request_handler, request_factory=self._request, loop=asyncio.get_running_loop(),
                         handler_cancellation=made.handler_cancellation, **kwargs)
        self._app_request: RequestFactory = made.request_factory
        self._protocol_kwargs = dict(kwargs, header_timeout=header_timeout, events=events)
        self._protocol_loop = asyncio.get_running_loop()

    def _request(
        self, message: RawRequestMessage, payload: StreamReader, protocol: web.RequestHandler,
        writer: AbstractStreamWriter, task: asyncio.Task[None],
    ) -> web.BaseRequest:
        if isinstance(protocol, Protocol):
            protocol.request_started()
        request: web.BaseRequest = self._app_request(message, payload, protocol, writer, task)
        return request

    def __call__(self) -> web.RequestHandler:
        return Protocol(self, loop=self._protocol_loop, **self._protocol_kwargs)


class Runner(web.AppRunner):
    """An :class:`~aiohttp.web.AppRunner` serving the application through :class:`Server`."""

    def __init__(self, app: web.Application, server: ServerSettings, events: logging.Logger, *,
                 handle_signals: bool = False) -> None:
        super().__init__(app, handle_signals=handle_signals, shutdown_timeout=SHUTDOWN_TIMEOUT)
        self._protocol_settings: dict[str, Any] = {
            "header_timeout": server.header_timeout, "events": events, "keepalive_timeout": KEEPALIVE_TIMEOUT,
            "access_log": None, "max_line_size": server.max_header_bytes, "max_field_size": server.max_header_bytes,
            # Never inflate a body: intake refuses any Content-Encoding with 415, unread (a gzip bomb included).
            # The application's own handler_args say the same but do not reach the connections made here.
            "auto_decompress": False,
        }

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # starts the application up and freezes it
        return Server(made, **self._protocol_settings)


def app_runner(app: web.Application, server: ServerSettings, events: logging.Logger, *,
               handle_signals: bool = False) -> Runner:
    """The runner ``pdrelay serve`` uses for ``app``, with ``server``'s protocol settings; ``events``
    is the logger of the malformed requests and closed connections."""
    return Runner(app, server, events, handle_signals=handle_signals)
