"""``POST /status/playground``: the loaded rules run on a pasted webhook body, traced step by step.

An admin endpoint (see :mod:`receiver.auth.middleware`). The body goes through the same parsing
and limits as intake (:func:`receiver.models.parse_notification` with the server's
:class:`~receiver.models.Limits`), so a bad body gets intake's own ``400``/``413`` answer, and the
rules currently in use evaluate it at the service clock's time through
:func:`transforms.trace_to_json`: the events it would make, the invalid and dropped ones, the trace
of each alert and the template errors. Nothing is sent, queued, stored or audited.

The body is capped at :data:`PLAYGROUND_LIMIT` (or ``server.body_limit`` when lower), read within
``server.body_timeout``, and refused unread when it is compressed.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Final

import msgspec
from aiohttp import hdrs, web

from receiver import state
from receiver.errors import PayloadError, PayloadTooLarge
from receiver.intake import BodyTimeout, UnsupportedEncoding, content_encoding
from receiver.models import parse_notification
from transforms import trace_to_json

__all__ = ["PLAYGROUND_LIMIT", "playground"]

PLAYGROUND_LIMIT: Final = 1024 * 1024  # bytes: a pasted body, not a production notification

_ENCODE = msgspec.json.Encoder().encode


async def playground(request: web.Request) -> web.Response:
    st = request.app[state.STATE]
    limit = min(PLAYGROUND_LIMIT, st.settings.server.body_limit)
    try:
        body = await _read(request, limit, st.settings.server.body_timeout)
        rules = st.rulebook.current
        now = datetime.fromtimestamp(st.clock.now(), UTC)
        answer = await st.worker.run(
            len(body), lambda: trace_to_json(rules, parse_notification(body, st.limits), now))
    except PayloadError as exc:
        st.log.info("playground refused a body", extra={"status": exc.status, **exc.to_json()})
        return web.json_response(exc.to_json(), status=exc.status, headers={hdrs.CACHE_CONTROL: "no-store"})
    return web.Response(body=_ENCODE(answer), content_type="application/json",
                        headers={hdrs.CACHE_CONTROL: "no-store"})


async def _read(request: web.Request, limit: int, timeout: float) -> bytes:
    """The body, at most ``limit`` bytes, or the :class:`PayloadError` intake would answer."""
    if content_encoding(request) is not None:
        raise UnsupportedEncoding("Content-Encoding is not supported: send the body uncompressed")
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body of {request.content_length} bytes is over the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.read(limit + 1 - size):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
    except TimeoutError as exc:
        raise BodyTimeout(f"body not received within {timeout:g} s (server.body_timeout)") from exc
    return b"".join(chunks)
