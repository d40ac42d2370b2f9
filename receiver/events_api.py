"""``POST /v1/events``: one native event (see :mod:`receiver.native_events`) into the outbox, answered after the commit.

The same bounds as the Alertmanager intake (:mod:`receiver.intake`), in the same order: an encoded body
``415``, over ``server.body_limit`` ``413``, intake full ``503`` with ``Retry-After``, a body not received
within ``server.body_timeout`` ``408``; then ``400`` naming what is wrong with the event; then the outbox
commit — ``202 {"status": "accepted", "dedup_key": …, "duplicate": …}`` only after it, ``503`` when the
outbox cannot commit. The event goes out through the same dispatcher, limiter and breaker as rendered
alerts; ``duplicate`` is true when PagerDuty was already told, or is queued to be told, the same.
The raw body is stored as the event's notification.
"""

from __future__ import annotations

import hashlib

from aiohttp import hdrs, web

from receiver import state
from receiver.admission import IntakeBusy
from receiver.auth import identity_of
from receiver.errors import OutboxUnavailable, PayloadError, PayloadTooLarge
from receiver.intake import RETRY_AFTER, BodyTimeout, UnsupportedEncoding, close_after, content_encoding, read_body
from receiver.native_events import parse_native_event

__all__ = ["events"]


async def events(request: web.Request) -> web.Response:
    st = request.app[state.STATE]
    if content_encoding(request) is not None:
        return await close_after(request, _refuse(request, st, UnsupportedEncoding(
            "Content-Encoding is not supported: send the body uncompressed")))
    limit = st.settings.server.body_limit
    if request.content_length is not None and request.content_length > limit:
        return await close_after(request, _refuse(request, st, PayloadTooLarge(
            f"body of {request.content_length} bytes is over the limit of {limit}")))
    try:
        reservation = st.gate.reserve(request.content_length)
    except IntakeBusy as exc:
        st.log.warning("events refused: busy", extra={"error": str(exc)})
        return await close_after(request, web.json_response({"error": str(exc)}, status=503,
                                          headers={hdrs.RETRY_AFTER: RETRY_AFTER}))
    with reservation:
        try:
            body = await read_body(request, st)
        except (PayloadTooLarge, BodyTimeout) as exc:
            return await close_after(request, _refuse(request, st, exc))
        return await _store(request, st, body)


async def _store(request: web.Request, st: state.AppState, body: bytes) -> web.Response:
    try:
        event = parse_native_event(body, st.settings.pagerduty.routing_keys.keys())
    except PayloadError as exc:
        return _refuse(request, st, exc)
    try:
        result = await st.outbox.enqueue(body, [event], [], resend_interval=st.settings.pagerduty.resend_interval)
    except OutboxUnavailable as exc:
        st.metrics.outbox_failed("intake")
        st.log.error("events refused: outbox unavailable", extra={"error": str(exc)})
        st.audit.record("events.refused", actor=identity_of(request), status=503, reason="outbox_unavailable")
        return web.json_response(
            {"error": "outbox unavailable: the event was not stored; retry later"}, status=503)
    st.metrics.outbox_reached()
    if result.queued:
        st.dispatcher.wake(None if result.rerouted else {event.routing_key})
    st.metrics.enqueued(result.queued_by_key)
    if result.duplicates:
        st.metrics.events_duplicate.inc(result.duplicates)
    st.audit.record(
        "events.accepted", actor=identity_of(request), routing_key=event.routing_key, action=event.action,
        dedup_key_sha256=hashlib.sha256(event.dedup_key.encode()).hexdigest()[:16],
        body_sha256=hashlib.sha256(body).hexdigest(), queued=result.queued, duplicates=result.duplicates,
    )
    return web.json_response({"status": "accepted", "dedup_key": event.dedup_key,
                              "duplicate": result.queued == 0}, status=202)


def _refuse(request: web.Request, st: state.AppState, error: PayloadError) -> web.Response:
    st.log.warning("events refused", extra={"status": error.status, **error.to_json()})
    st.audit.record("events.refused", actor=identity_of(request), status=error.status, **error.to_json())
    return web.json_response(error.to_json(), status=error.status)

