"""HTTP handlers: the Alertmanager intake, health, readiness, status and rule reload.

Intake answers ``200`` only once the notification's events are committed to the
outbox, ``400``/``413`` for bodies that are not Alertmanager notifications (with a JSON
error naming the field), and ``503`` when the outbox cannot commit, which
Alertmanager retries. It never answers ``500`` for bad input.
"""

from __future__ import annotations

import hashlib
import html
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from receiver import state
from receiver.auth import identity_of
from receiver.errors import OutboxUnavailable, PayloadError, PayloadTooLarge
from receiver.models import parse_notification
from transforms import RulesError

__all__ = ["routes"]

_ENCODE = msgspec.json.Encoder().encode


def _reject(request: web.Request, st: state.AppState, error: PayloadError | OutboxUnavailable) -> web.Response:
    actor = identity_of(request)
    if isinstance(error, OutboxUnavailable):
        st.metrics.bodies_rejected.labels("outbox_unavailable").inc()
        st.log.error("intake refused: outbox unavailable", extra={"error": str(error)})
        st.audit.record("intake.refused", actor=actor, status=503, reason="outbox_unavailable")
        return web.json_response(
            {"error": "outbox unavailable: the notification was not stored; retry later"}, status=503
        )
    reason = "too_large" if isinstance(error, PayloadTooLarge) else "invalid_body"
    st.metrics.bodies_rejected.labels(reason).inc()
    st.log.warning("intake refused", extra={"status": error.status, **error.to_json()})
    st.audit.record("intake.refused", actor=actor, status=error.status, reason=reason, **error.to_json())
    return web.json_response(error.to_json(), status=error.status)


async def alertmanager(request: web.Request) -> web.Response:
    st = request.app[state.STATE]
    st.metrics.bodies_received.inc()
    limit = st.settings.server.body_limit
    if request.content_length is not None and request.content_length > limit:
        too_large = f"body of {request.content_length} bytes is over the limit of {limit}"
        return _reject(request, st, PayloadTooLarge(too_large))
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _reject(request, st, PayloadTooLarge(f"body is over the limit of {limit} bytes"))
    try:
        group = parse_notification(body, st.limits)
    except PayloadError as exc:
        return _reject(request, st, exc)
    evaluation = st.rulebook.current.evaluate(group)
    try:
        result = await st.outbox.enqueue(
            body, evaluation.events, evaluation.invalid,
            resend_interval=st.settings.pagerduty.resend_interval,
        )
    except OutboxUnavailable as exc:
        return _reject(request, st, exc)
    if result.queued:
        st.dispatcher.wake(None if result.rerouted else {ev.routing_key for ev in evaluation.events})
    st.audit.record(
        "intake.accepted", actor=identity_of(request), receiver=group.receiver,
        group_key_sha256=hashlib.sha256(group.group_key.encode()).hexdigest()[:16],
        body_sha256=hashlib.sha256(body).hexdigest(), alerts=len(group.alerts), queued=result.queued,
        duplicates=result.duplicates, dropped=len(evaluation.dropped), dead_lettered=result.dead_lettered,
    )
    m = st.metrics
    m.bodies_accepted.inc()
    m.alerts_received.inc(len(group.alerts))
    m.events_enqueued.inc(result.queued)
    # The rest is rare: skip the counters' locks when there is nothing to add.
    if result.duplicates:
        m.events_duplicate.inc(result.duplicates)
    if evaluation.dropped:
        m.alerts_dropped.inc(len(evaluation.dropped))
    if evaluation.template_errors:
        m.template_errors.inc(len(evaluation.template_errors))
        st.log.warning("templates fell back to defaults", extra={"errors": list(evaluation.template_errors)})
    if evaluation.invalid:
        m.events_dead_lettered.labels("invalid_event").inc(result.dead_lettered)
        for bad in evaluation.invalid:
            st.log.error("event cannot be made valid; dead-lettered",
                         extra={"dedup_key": bad.dedup_key, "routing_key": bad.routing_key, "reason": bad.reason})
    answer = {
        "status": "accepted",
        "alerts": len(group.alerts),
        "queued": result.queued,
        "duplicates": result.duplicates,
        "dropped": len(evaluation.dropped),
        "dead_lettered": result.dead_lettered,
    }
    return web.Response(body=_ENCODE(answer), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    st = request.app[state.STATE]
    try:
        await st.outbox.check()
    except OutboxUnavailable as exc:
        return web.json_response({"status": "not ready", "outbox": str(exc)}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    st = request.app[state.STATE]
    return web.Response(body=generate_latest(st.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def status(request: web.Request) -> web.Response:
    st = request.app[state.STATE]
    pd = st.settings.pagerduty
    depth = st.outbox.depth()
    out: dict[str, Any] = {
        "dry_run": st.dry_run,
        "events_url": pd.events_url,
        "routing_keys": sorted(pd.routing_keys),  # names only
        "rules": {"sha256": st.rulebook.current.sha256,
                  "sources": [str(p) for p in st.rulebook.current.sources]},
        "outbox": {"queued": depth.queued, "dead": depth.dead},
        "breaker": st.breaker.snapshot(),
        "rate_limit": st.limiter.snapshot(),
        "encryption": _encryption(st),
    }
    if "text/html" in request.headers.get("Accept", ""):
        return web.Response(text=_status_page(out), content_type="text/html")
    return web.json_response(out)


def _encryption(st: state.AppState) -> dict[str, Any]:
    """Whether stored alert content is encrypted, and with which key ids (one-way ids, not keys)."""
    keyring = st.keyring
    if keyring is None:
        return {"at_rest": "off"}
    return {"at_rest": "aes-256-gcm", "key_ids": list(keyring.ids), "encrypts_with": keyring.primary_id}


def _status_page(status: dict[str, Any]) -> str:
    """The same facts as the JSON, as a page an on-call engineer can read in a browser."""

    def cell(value: Any) -> str:
        if isinstance(value, dict):
            return "<br>".join(f"{html.escape(str(k))}: {cell(v)}" for k, v in value.items())
        if isinstance(value, list):
            return "<br>".join(cell(v) for v in value) or "(none)"
        return html.escape(str(value))

    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{cell(v)}</td></tr>" for k, v in status.items())
    mode = "DRY-RUN: nothing is sent to PagerDuty" if status["dry_run"] else "delivering to PagerDuty"
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>pdrelay status</title>"
        "<style>body{font-family:sans-serif}th{text-align:left;padding-right:1em;vertical-align:top}</style>"
        f"</head><body><h1>pdrelay</h1><p>{mode}</p><table>{rows}</table></body></html>"
    )


async def reload(request: web.Request) -> web.Response:
    st = request.app[state.STATE]
    try:
        rules = st.rulebook.reload(identity_of(request))
    except RulesError as exc:
        return web.json_response({"status": "failed", "errors": exc.errors,
                                  "sha256": st.rulebook.current.sha256}, status=400)
    return web.json_response({"status": "reloaded", "sha256": rules.sha256})


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/alertmanager", alertmanager),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics),
        web.get("/status", status),
        web.post("/-/reload", reload),
    ]
