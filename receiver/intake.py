"""``POST /v1/alertmanager``: a notification from admission to the answer, bounded at every step.

In order, each refusal before any later step's cost:

1. ``Content-Encoding`` other than identity: ``415``, the body neither read nor inflated
   (Alertmanager does not compress; a gzip bomb is refused by its headers).
2. ``Content-Length`` over ``server.body_limit``: ``413``.
3. Admission (:mod:`receiver.admission`): ``503`` with ``Retry-After`` when intake is full.
4. The body read within ``server.body_timeout``: ``408`` otherwise.
   After any of these four the connection is closed, what is left of the body unread.
5. Parsing and the rules (:mod:`receiver.models`, the rule set): ``400``/``413`` naming the field.
   For a large body both run in the worker thread (:mod:`receiver.offload`), so that ``/healthz``
   and the rest of the server keep answering meanwhile.
6. The outbox commit: ``200`` only after it, ``503`` when the outbox cannot commit.

Refused bodies leave nothing in the outbox. Nothing here answers ``500`` for bad input.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

import msgspec
from aiohttp import hdrs, web

from receiver import state
from receiver.admission import IntakeBusy
from receiver.auth import identity_of
from receiver.errors import OutboxUnavailable, PayloadError, PayloadTooLarge, Reason
from receiver.models import Limits, parse_notification
from transforms import Evaluation, Group, RuleSet

__all__ = ["BodyTimeout", "UnsupportedEncoding", "alertmanager"]

RETRY_AFTER = "1"  # seconds; Alertmanager ignores it and retries with its own backoff, other clients may not

_ENCODE = msgspec.json.Encoder().encode


class UnsupportedEncoding(PayloadError):
    """The body is compressed (or otherwise encoded): refused unread."""

    status = 415


class BodyTimeout(PayloadError):
    """The body did not arrive within ``server.body_timeout``."""

    status = 408


_REASONS: dict[type[PayloadError], str] = {
    PayloadTooLarge: "too_large", UnsupportedEncoding: "unsupported_encoding", BodyTimeout: "body_timeout",
}


def _prepare(rules: RuleSet, body: bytes, limits: Limits, now: datetime) -> tuple[Group, Evaluation]:
    group = parse_notification(body, limits)
    return group, rules.evaluate(group, now)


async def alertmanager(request: web.Request) -> web.Response:
    st = request.app[state.STATE]
    st.metrics.bodies_received.inc()
    if (encoding := content_encoding(request)) is not None:
        st.log.warning("intake refused: encoded body", extra={"content_encoding": encoding[:64]})
        return await close_after(request, _reject(request, st, UnsupportedEncoding(
            "Content-Encoding is not supported: send the body uncompressed, as Alertmanager does")))
    limit = st.settings.server.body_limit
    if request.content_length is not None and request.content_length > limit:
        return await close_after(request, _reject(request, st, PayloadTooLarge(
            f"body of {request.content_length} bytes is over the limit of {limit}")))
    try:
        reservation = st.gate.reserve(request.content_length)
    except IntakeBusy as exc:
        return await close_after(request, _busy(st, exc))
    with reservation:
        return await _admitted(request, st)


async def read_body(request: web.Request, st: state.AppState) -> bytes:
    """The whole body, within ``server.body_limit`` and ``server.body_timeout``; raises
    :class:`~receiver.errors.PayloadTooLarge` or :class:`BodyTimeout` (``ConnectionError`` when the client left)."""
    limit, timeout = st.settings.server.body_limit, st.settings.server.body_timeout
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"body is over the limit of {limit} bytes") from None
    except TimeoutError:
        raise BodyTimeout(f"body not received within {timeout:g} s (server.body_timeout)") from None


async def _admitted(request: web.Request, st: state.AppState) -> web.Response:
    try:
        body = await read_body(request, st)
    except (PayloadTooLarge, BodyTimeout) as exc:
        return await close_after(request, _reject(request, st, exc))
    except ConnectionError:  # the client went away mid-body: nobody to answer, nothing to store
        st.log.info("intake: the client closed the connection before the end of its body")
        return web.Response(status=400)  # aiohttp finds the connection gone and sends nothing
    rules = st.rulebook.current
    now = datetime.fromtimestamp(st.clock.now(), UTC)  # the time when_time steps test: the injected clock's
    try:
        group, evaluation = await st.worker.run(len(body), lambda: _prepare(rules, body, st.limits, now))
    except PayloadError as exc:
        return _reject(request, st, exc)
    # The parsed alerts go before the commit, which is where a large body's memory peaks: only these are kept.
    receiver, group_key, alerts = group.receiver, group.group_key, len(group.alerts)
    del group
    try:
        result = await st.outbox.enqueue(
            body, evaluation.events, evaluation.invalid,
            resend_interval=st.settings.pagerduty.resend_interval,
        )
    except OutboxUnavailable as exc:
        return _reject(request, st, exc)
    st.metrics.outbox_reached()
    if result.queued:
        st.dispatcher.wake(None if result.rerouted else {ev.routing_key for ev in evaluation.events})
    st.audit.record(
        "intake.accepted", actor=identity_of(request), receiver=receiver,
        group_key_sha256=hashlib.sha256(group_key.encode()).hexdigest()[:16],
        body_sha256=hashlib.sha256(body).hexdigest(), alerts=alerts, queued=result.queued,
        duplicates=result.duplicates, dropped=len(evaluation.dropped), dead_lettered=result.dead_lettered,
    )
    m = st.metrics
    m.bodies_accepted.inc()
    m.alerts_received.inc(alerts)
    m.enqueued(result.queued_by_key)
    m.evaluated(evaluation)
    # The rest is rare: skip the counters' locks when there is nothing to add.
    if result.duplicates:
        m.events_duplicate.inc(result.duplicates)
    if evaluation.dropped:
        m.alerts_dropped.inc(len(evaluation.dropped))
    if evaluation.template_errors:
        m.template_errors.inc(len(evaluation.template_errors))
        st.log.warning("templates fell back to defaults", extra={"errors": list(evaluation.template_errors)})
    if evaluation.invalid:
        for bad in evaluation.invalid:
            m.dead_lettered(bad.routing_key, Reason.INVALID_EVENT)
            st.log.error("event cannot be made valid; dead-lettered",
                         extra={"dedup_key": bad.dedup_key, "routing_key": bad.routing_key, "reason": bad.reason})
    answer = {
        "status": "accepted",
        "alerts": alerts,
        "queued": result.queued,
        "duplicates": result.duplicates,
        "dropped": len(evaluation.dropped),
        "dead_lettered": result.dead_lettered,
    }
    return web.Response(body=_ENCODE(answer), content_type="application/json")


def content_encoding(request: web.Request) -> str | None:
    """The request's ``Content-Encoding`` when it is anything but identity (or absent), else None."""
    values = request.headers.getall(hdrs.CONTENT_ENCODING, ())
    for value in values:
        if any(part.strip().lower() not in ("", "identity") for part in value.split(",")):
            return ", ".join(values)
    return None


def _reject(request: web.Request, st: state.AppState, error: PayloadError | OutboxUnavailable) -> web.Response:
    actor = identity_of(request)
    if isinstance(error, OutboxUnavailable):
        st.metrics.bodies_rejected.labels("outbox_unavailable").inc()
        st.metrics.outbox_failed("intake")
        st.log.error("intake refused: outbox unavailable", extra={"error": str(error)})
        st.audit.record("intake.refused", actor=actor, status=503, reason="outbox_unavailable")
        return web.json_response(
            {"error": "outbox unavailable: the notification was not stored; retry later"}, status=503
        )
    reason = _REASONS.get(type(error), "invalid_body")
    st.metrics.bodies_rejected.labels(reason).inc()
    st.log.warning("intake refused", extra={"status": error.status, **error.to_json()})
    st.audit.record("intake.refused", actor=actor, status=error.status, reason=reason, **error.to_json())
    return web.json_response(error.to_json(), status=error.status)


def _busy(st: state.AppState, error: IntakeBusy) -> web.Response:
    """503 for a request intake has no room for. Counted and logged, not audited: it says nothing about
    the notification, and a flood of them must not rotate the audit log."""
    st.metrics.bodies_rejected.labels("busy").inc()
    st.log.warning("intake refused: busy", extra={"error": str(error)})
    return web.json_response({"error": str(error)}, status=503, headers={hdrs.RETRY_AFTER: RETRY_AFTER})


async def close_after(request: web.Request, response: web.Response) -> web.Response:
    """Send ``response`` and close the connection at once, without reading what is left of the body.

    For every refusal before the body is read whole. aiohttp would otherwise read and discard the
    rest for up to ten seconds after the answer (inflating it, for a compressed body), keeping a
    slow or hostile client's connection open.
    """
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()  # the answer is written to the transport; closing it sends it first
    return response
