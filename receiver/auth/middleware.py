"""The aiohttp side of auth: endpoint groups, the middleware, the answers it gives.

Endpoints fall into three groups (``intake``, ``events``, ``admin``, see :data:`GROUP_BY_PATH`);
``/healthz``, ``/readyz`` and ``/metrics`` stay open for probes and scrapes, and any other path
counts as ``admin`` (the strictest group), so a route added later is never open by accident.

Answers: ``401`` with ``WWW-Authenticate`` naming each scheme the group accepts when the
credential is missing or invalid, ``403`` when a valid identity lacks the group's right, ``400``
when a credential is put in the query string (it is not read). Each body is the fixed message of
the refusal's reason, never anything the caller sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from receiver.auth.methods import BEARER_METHODS, Authenticator
from receiver.auth.outcomes import MESSAGES, AuthDecision, Identity, Refusal
from receiver.tls import peer_certificate

__all__ = ["GROUP_BY_PATH", "IDENTITY", "OPEN_PATHS", "auth_middleware", "identity_of"]

REALM = "pdrelay"
ANONYMOUS = "anonymous"

OPEN_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
GROUP_BY_PATH: Final[Mapping[str, str]] = {
    "/v1/alertmanager": "intake",
    "/v1/events": "events",
    "/-/reload": "admin",
    "/status": "admin",
    "/status/playground": "admin",
}
DEFAULT_GROUP = "admin"  # every path neither open nor listed

# Query parameters that carry credentials by convention (RFC 6750 §2.3 and common APIs); names only.
_QUERY_CREDENTIALS: Final = frozenset({
    "access_token", "token", "bearer", "jwt", "id_token", "api_key", "apikey", "api-key", "key",
    "auth", "authorization", "password", "passwd", "secret",
})

if TYPE_CHECKING or hasattr(web, "RequestKey"):
    IDENTITY = web.RequestKey("pdrelay_identity", str)
else:  # aiohttp < 3.14
    IDENTITY = "pdrelay_identity"


def identity_of(request: web.BaseRequest) -> str:
    """The authenticated caller of ``request``: ``bearer:1a2b3c4d``, ``jwt:ci-bot``… or ``anonymous``."""
    found = request.get(IDENTITY)
    return found if isinstance(found, str) else ANONYMOUS


def _group_of(path: str) -> str | None:
    """The endpoint group of ``path``; ``None`` for the open probe and scrape paths."""
    if path in OPEN_PATHS:
        return None
    return GROUP_BY_PATH.get(path, DEFAULT_GROUP)


def _challenges(accepted: frozenset[str], error: str | None = None) -> list[str]:
    out: list[str] = []
    if accepted & BEARER_METHODS:
        bearer = f'Bearer realm="{REALM}"'
        if error is not None:
            bearer += f', error="{error}"'
        out.append(bearer)
    if "basic" in accepted:
        out.append(f'Basic realm="{REALM}", charset="UTF-8"')
    return out


def _refusal_response(authenticator: Authenticator, group: str, refusal: Refusal) -> web.Response:
    """The answer to a refused request: the status, the reason's fixed message, the right challenge."""
    headers: dict[str, str] = {}
    if refusal.status == 401:
        challenges = _challenges(frozenset(authenticator.accepted(group)),
                                 "invalid_token" if refusal.token_error else None)
        if challenges:
            headers["WWW-Authenticate"] = ", ".join(challenges)
    elif refusal.status == 400:
        headers["WWW-Authenticate"] = f'Bearer realm="{REALM}", error="invalid_request"'
    elif refusal.method in BEARER_METHODS:
        scope = authenticator.scope_for(group)
        headers["WWW-Authenticate"] = f'Bearer realm="{REALM}", error="insufficient_scope"' + (
            f', scope="{scope}"' if scope is not None else "")
    return web.json_response({"error": MESSAGES[refusal.reason]}, status=refusal.status, headers=headers)


def auth_middleware(authenticator: Authenticator, on_decision: Callable[[AuthDecision], None]) -> Middleware:
    """An aiohttp middleware that authenticates every request to a protected endpoint.

    ``on_decision`` is called once per protected request, allowed or refused, before the
    answer goes out. The identity is stored under :data:`IDENTITY` (see :func:`identity_of`).
    """

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        group = _group_of(request.path)
        if group is None or not authenticator.enabled:
            return await handler(request)
        outcome: Identity | Refusal
        if not _QUERY_CREDENTIALS.isdisjoint(k.lower() for k in request.rel_url.query):
            outcome = Refusal(400, "credentials_in_query")
        else:
            outcome = authenticator.authenticate(
                group, request.headers.getall("Authorization", []), lambda: peer_certificate(request)
            )
        if isinstance(outcome, Refusal):
            on_decision(AuthDecision(False, outcome.status, group, outcome.method, outcome.identity,
                                     outcome.reason, request.remote))
            return _refusal_response(authenticator, group, outcome)
        on_decision(AuthDecision(True, 200, group, outcome.method, outcome.name, "ok", request.remote))
        request[IDENTITY] = outcome.name
        return await handler(request)

    return authenticate
