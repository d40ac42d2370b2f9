"""A loopback stand-in for PagerDuty's REST API v2, for the REST client's tests.

It runs in the test's own event loop on 127.0.0.1, port 0 (``async with RestStandIn(token) as pd``,
then ``pd.url``). It keeps incidents, services and escalation policies in memory and answers the
way PagerDuty does: ``Authorization: Token token=…`` checked on every call (401, code 2006),
``From`` required on writes (400, code 2001), unknown ids 404 (code 2100), classic pagination
(``offset``/``limit``/``more``), ``GET /abilities`` and ``/abilities/{name}`` (204 or 402).
Every request is recorded (:attr:`requests`); programmed answers (:meth:`fail_next`) are served
first, in order, before the normal handling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class Canned:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def pd_error(status: int, message: str, code: int, errors: list[str] | None = None) -> web.Response:
    body: dict[str, Any] = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return web.json_response({"error": body}, status=status)


class RestStandIn:
    def __init__(self, token: str, *, abilities: tuple[str, ...] = ("teams", "read_only_users")) -> None:
        self.token = token
        self.abilities = abilities
        self.requests: list[Seen] = []
        self.canned: list[Canned] = []
        self.incidents: dict[str, dict[str, Any]] = {}
        self.services = {f"PS{i}": {"id": f"PS{i}", "type": "service", "name": f"service {i}"} for i in range(3)}
        self.policies = {"PEP1": {"id": "PEP1", "type": "escalation_policy", "name": "ops"}}
        self.notes: list[dict[str, Any]] = []
        self._server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.port}"

    def fail_next(self, status: int, body: bytes | dict[str, Any] = b"", headers: dict[str, str] | None = None
                  ) -> None:
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        self.canned.append(Canned(status, raw, headers or {}))

    def seed_incidents(self, n: int) -> None:
        for i in range(n):
            self.incidents[f"PI{i}"] = {"id": f"PI{i}", "type": "incident", "title": f"incident {i}",
                                        "status": "triggered"}

    async def __aenter__(self) -> Self:
        app = web.Application(middlewares=[self._front])
        r = app.router
        r.add_post("/incidents", self._create)
        r.add_get("/incidents", self._lister(lambda: self.incidents, "incidents"))
        r.add_get("/incidents/{id}", self._getter(lambda: self.incidents, "incident"))
        r.add_put("/incidents/{id}", self._update)
        r.add_post("/incidents/{id}/snooze", self._snooze)
        r.add_post("/incidents/{id}/notes", self._note)
        r.add_get("/services", self._lister(lambda: self.services, "services"))
        r.add_get("/services/{id}", self._getter(lambda: self.services, "service"))
        r.add_get("/escalation_policies", self._lister(lambda: self.policies, "escalation_policies"))
        r.add_get("/escalation_policies/{id}", self._getter(lambda: self.policies, "escalation_policy"))
        r.add_get("/abilities", self._abilities)
        r.add_get("/abilities/{name}", self._ability)
        self._server = TestServer(app, host="127.0.0.1", port=0)
        await self._server.start_server()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._server is not None
        await self._server.close()

    @web.middleware
    async def _front(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        self.requests.append(Seen(request.method, request.rel_url.raw_path, list(request.query.items()),
                                  dict(request.headers), json.loads(raw) if raw else None))
        if self.canned:
            canned = self.canned.pop(0)
            return web.Response(status=canned.status, body=canned.body, headers=canned.headers,
                                content_type="application/json")
        if request.headers.get("Authorization") != f"Token token={self.token}":
            return pd_error(401, "Authentication failed", 2006)
        if request.method in ("POST", "PUT") and not request.headers.get("From"):
            return pd_error(400, "Invalid Input Provided", 2001, ["A valid user email is required in From"])
        response: web.StreamResponse = await handler(request)
        return response

    def _lister(self, source: Any, key: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            items = list(source().values())
            offset, limit = int(request.query.get("offset", "0")), int(request.query.get("limit", "25"))
            page = items[offset:offset + limit]
            return web.json_response({key: page, "offset": offset, "limit": limit,
                                      "more": offset + limit < len(items), "total": None})
        return handle

    def _getter(self, source: Any, key: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            found = source().get(request.match_info["id"])
            if found is None:
                return pd_error(404, "Not Found", 2100)
            return web.json_response({key: found})
        return handle

    async def _create(self, request: web.Request) -> web.Response:
        incident = dict((await request.json())["incident"])
        key = incident.get("incident_key")
        if key is not None and any(i.get("incident_key") == key and i["status"] != "resolved"
                                   for i in self.incidents.values()):
            return pd_error(400, "Incident Already Exists", 2001, ["Open incident with key exists"])
        incident.update(id=f"PNEW{len(self.incidents)}", status="triggered")
        self.incidents[incident["id"]] = incident
        return web.json_response({"incident": incident}, status=201)

    async def _update(self, request: web.Request) -> web.Response:
        found = self.incidents.get(request.match_info["id"])
        if found is None:
            return pd_error(404, "Not Found", 2100)
        found["status"] = (await request.json())["incident"]["status"]
        return web.json_response({"incident": found})

    async def _snooze(self, request: web.Request) -> web.Response:
        found = self.incidents.get(request.match_info["id"])
        if found is None:
            return pd_error(404, "Not Found", 2100)
        found["snoozed_for"] = (await request.json())["duration"]
        return web.json_response({"incident": found}, status=201)

    async def _note(self, request: web.Request) -> web.Response:
        if request.match_info["id"] not in self.incidents:
            return pd_error(404, "Not Found", 2100)
        note = {"id": f"PN{len(self.notes)}", "content": (await request.json())["note"]["content"]}
        self.notes.append(note)
        return web.json_response({"note": note}, status=201)

    async def _abilities(self, request: web.Request) -> web.Response:
        return web.json_response({"abilities": list(self.abilities)})

    async def _ability(self, request: web.Request) -> web.Response:
        if request.match_info["name"] in self.abilities:
            return web.Response(status=204)
        return pd_error(402, "Account does not have the ability", 5001)
