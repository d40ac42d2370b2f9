"""HTTP handlers: health, readiness, metrics, status and rule reload; the routes, the Alertmanager
intake among them (its handler is :mod:`receiver.intake`)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from receiver import events_api, intake, state
from receiver.auth import identity_of
from receiver.errors import OutboxUnavailable
from receiver.status import status_snapshot
from receiver.web import page as web_page
from receiver.web import playground as web_playground
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
    except OutboxUnavailable as exc:  # its message names the server, never a password (settings refuse one in a URL)
        st.metrics.outbox_failed("readiness")
        return web.json_response({"status": "not ready", "outbox": str(exc)}, status=503)
    st.metrics.outbox_reached()
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    st = request.app[state.STATE]
    await st.metrics.refresh()  # what is read at scrape time: the queue per routing key
    return web.Response(body=generate_latest(st.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def status(request: web.Request) -> web.Response:
    try:
        out = await status_snapshot(request.app[state.STATE])  # routing keys by name only, never a secret
    except OutboxUnavailable as exc:  # the queue per key lives in the outbox: /readyz says the same
        return web.json_response({"status": "outbox unavailable", "outbox": str(exc)}, status=503)
    if "text/html" in request.headers.get("Accept", ""):
        return web_page.page_response(out)
    return web.json_response(out)


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
        web.post("/v1/events", events_api.events),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics),
        web.get("/status", status),
        web.post("/status/playground", web_playground.playground),
        web.post("/-/reload", reload),
    ]
