"""HTTP handlers: health, readiness, metrics, status and rule reload; the routes, the Alertmanager
intake among them (its handler is :mod:`receiver.intake`)."""

from __future__ import annotations

import html
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from receiver import intake, state
from receiver.auth import identity_of
from receiver.errors import OutboxUnavailable
from transforms import RulesError

__all__ = ["routes"]

async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    st = request.app[state.STATE]
    if (problem := st.supervisor.problem) is not None:  # the dispatcher keeps failing: nothing is delivered
        return web.json_response({"status": "not ready", "dispatcher": problem}, status=503)
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
        web.post("/v1/alertmanager", intake.alertmanager),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics),
        web.get("/status", status),
        web.post("/-/reload", reload),
    ]
