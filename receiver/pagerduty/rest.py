"""An async client for PagerDuty's REST API v2: incidents, services, escalation policies, abilities.

::

    async with PagerDutyClient(Secret(token), region="eu", default_from="oncall@example.com") as pd:
        incident = await pd.create_incident("Disk full", service_id="PSERVICE", incident_key="disk-db1")
        async for open_incident in pd.list_incidents(statuses=["triggered", "acknowledged"]):
            ...
        await pd.resolve_incident(incident["id"])

One pooled ``httpx.AsyncClient`` with explicit timeouts; ``Authorization: Token token=…`` from a
:class:`~receiver.secret.Secret`; the ``From`` header (a user's e-mail, which PagerDuty requires)
on every write. Calls are retried by :class:`~receiver.pagerduty.rest_retry.RetryPolicy` on an
injectable ``sleep`` and monotonic clock, optionally behind a
:class:`~receiver.breaker.CircuitBreaker` (5xx, 408 and no answer count as failures, 429 says
nothing about health). Every failure is one of :mod:`receiver.pagerduty.rest_errors`.

Retrying a write after a 5xx or a lost answer can repeat it: give ``create_incident`` an
``incident_key`` so that PagerDuty refuses the duplicate (400) while the first is open.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from ipaddress import ip_address
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx

from receiver.breaker import CircuitBreaker
from receiver.clock import MonotonicClock, SystemClock
from receiver.pagerduty.rest_errors import (
    PagerDutyAPIError,
    PagerDutyCircuitOpen,
    PagerDutyRequestError,
    PagerDutyTransportError,
    clean,
    error_for,
)
from receiver.pagerduty.rest_retry import RetryPolicy, server_hint
from receiver.secret import Secret

__all__ = ["REGIONS", "PagerDutyClient"]

REGIONS = {"us": "https://api.pagerduty.com", "eu": "https://api.eu.pagerduty.com"}
"""The REST API's base URL for each service region."""

log = logging.getLogger(__name__)

_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+")
_ACCEPT = "application/vnd.pagerduty+json;version=2"
_PAGE = 100  # PagerDuty's largest classic page
_MAX_OFFSET = 10_000  # classic pagination ends here: offset + limit may not pass it

Sleep = Callable[[float], Awaitable[None]]
Params = Mapping[str, str | int | bool | Sequence[str]]


def _check_base_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return base_url.rstrip("/")
    if parts.scheme == "http" and host:
        try:
            loopback = host == "localhost" or ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return base_url.rstrip("/")
    raise ValueError(f"base_url must be an https:// URL (http:// only for a loopback host), got {clean(base_url)!r}")


def _ref(kind: str, object_id: str) -> dict[str, str]:
    return {"id": object_id, "type": f"{kind}_reference"}


def _segment(object_id: str) -> str:
    if not isinstance(object_id, str) or not object_id:
        raise ValueError(f"an object id must be a non-empty string, got {object_id!r}")
    return quote(object_id, safe="")


class PagerDutyClient:
    """PagerDuty's REST API v2 over one pooled connection pool; use ``async with`` or call :meth:`aclose`."""

    def __init__(
        self,
        token: Secret,
        *,
        region: Literal["us", "eu"] = "us",
        base_url: str | None = None,
        default_from: str | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: MonotonicClock | None = None,
        rand: Callable[[], float] = random.random,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``base_url`` overrides ``region`` (a proxy, or a stand-in in tests)."""
        if not isinstance(token, Secret):
            raise TypeError("token must be a receiver.secret.Secret, so that it never shows in logs")
        if region not in REGIONS:
            raise ValueError(f"region must be one of {sorted(REGIONS)}, got {clean(region)!r}")
        self.base_url = _check_base_url(base_url) if base_url is not None else REGIONS[region]
        self.default_from = default_from
        self.retry = retry or RetryPolicy()
        self.breaker = breaker
        self._sleep = sleep
        self._clock: MonotonicClock = clock or SystemClock()
        self._rand = rand
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
            headers={"Accept": _ACCEPT, "User-Agent": "pdrelay", "Authorization": f"Token token={token.reveal()}"},
            follow_redirects=False,
            trust_env=False,
            transport=transport,
        )

    async def __aenter__(self) -> PagerDutyClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- incidents -------------------------------------------------------------------------------

    async def create_incident(
        self,
        title: str,
        *,
        service_id: str,
        urgency: Literal["high", "low"] | None = None,
        details: str | None = None,
        incident_key: str | None = None,
        escalation_policy_id: str | None = None,
        assignee_ids: Sequence[str] = (),
        from_email: str | None = None,
    ) -> dict[str, Any]:
        """``POST /incidents``: the created incident. Escalation policy and assignees exclude each other."""
        if escalation_policy_id is not None and assignee_ids:
            raise ValueError("create_incident: give escalation_policy_id or assignee_ids, not both")
        incident: dict[str, Any] = {"type": "incident", "title": title, "service": _ref("service", service_id)}
        if urgency is not None:
            incident["urgency"] = urgency
        if details is not None:
            incident["body"] = {"type": "incident_body", "details": details}
        if incident_key is not None:
            incident["incident_key"] = incident_key
        if escalation_policy_id is not None:
            incident["escalation_policy"] = _ref("escalation_policy", escalation_policy_id)
        if assignee_ids:
            incident["assignments"] = [{"assignee": _ref("user", a)} for a in assignee_ids]
        answer = await self._call("create_incident", "POST", "/incidents", json={"incident": incident},
                                  from_email=self._from("create_incident", from_email))
        return self._entity(answer, "incident", "create_incident")

    async def get_incident(self, incident_id: str) -> dict[str, Any]:
        """``GET /incidents/{id}``."""
        answer = await self._call("get_incident", "GET", f"/incidents/{_segment(incident_id)}")
        return self._entity(answer, "incident", "get_incident")

    def list_incidents(
        self,
        *,
        statuses: Sequence[str] = (),
        service_ids: Sequence[str] = (),
        since: str | None = None,
        until: str | None = None,
        page_size: int = _PAGE,
    ) -> AsyncIterator[dict[str, Any]]:
        """``GET /incidents``, every page: an async iterator of incidents."""
        params: dict[str, str | int | bool | Sequence[str]] = {}
        if statuses:
            params["statuses[]"] = list(statuses)
        if service_ids:
            params["service_ids[]"] = list(service_ids)
        if since is not None:
            params["since"] = since
        if until is not None:
            params["until"] = until
        return self._paginate("list_incidents", "/incidents", "incidents", params, page_size)

    async def acknowledge_incident(self, incident_id: str, *, from_email: str | None = None) -> dict[str, Any]:
        """``PUT /incidents/{id}`` to ``acknowledged``."""
        return await self._set_status("acknowledge_incident", incident_id, "acknowledged", from_email)

    async def resolve_incident(self, incident_id: str, *, from_email: str | None = None) -> dict[str, Any]:
        """``PUT /incidents/{id}`` to ``resolved``."""
        return await self._set_status("resolve_incident", incident_id, "resolved", from_email)

    async def snooze_incident(
        self, incident_id: str, duration: int, *, from_email: str | None = None
    ) -> dict[str, Any]:
        """``POST /incidents/{id}/snooze`` for ``duration`` seconds (the incident must be acknowledged)."""
        if isinstance(duration, bool) or not isinstance(duration, int) or duration < 1:
            raise ValueError(f"snooze_incident: duration must be a whole number of seconds >= 1, got {duration!r}")
        answer = await self._call("snooze_incident", "POST", f"/incidents/{_segment(incident_id)}/snooze",
                                  json={"duration": duration}, from_email=self._from("snooze_incident", from_email))
        return self._entity(answer, "incident", "snooze_incident")

    async def add_note(self, incident_id: str, content: str, *, from_email: str | None = None) -> dict[str, Any]:
        """``POST /incidents/{id}/notes``: the created note."""
        answer = await self._call("add_note", "POST", f"/incidents/{_segment(incident_id)}/notes",
                                  json={"note": {"content": content}}, from_email=self._from("add_note", from_email))
        return self._entity(answer, "note", "add_note")

    # -- services, escalation policies, abilities ------------------------------------------------

    async def get_service(self, service_id: str) -> dict[str, Any]:
        answer = await self._call("get_service", "GET", f"/services/{_segment(service_id)}")
        return self._entity(answer, "service", "get_service")

    def list_services(self, *, query: str | None = None, page_size: int = _PAGE) -> AsyncIterator[dict[str, Any]]:
        params = {"query": query} if query is not None else {}
        return self._paginate("list_services", "/services", "services", params, page_size)

    async def get_escalation_policy(self, policy_id: str) -> dict[str, Any]:
        answer = await self._call("get_escalation_policy", "GET", f"/escalation_policies/{_segment(policy_id)}")
        return self._entity(answer, "escalation_policy", "get_escalation_policy")

    def list_escalation_policies(
        self, *, query: str | None = None, page_size: int = _PAGE
    ) -> AsyncIterator[dict[str, Any]]:
        params = {"query": query} if query is not None else {}
        return self._paginate("list_escalation_policies", "/escalation_policies", "escalation_policies",
                              params, page_size)

    async def list_abilities(self) -> list[str]:
        """``GET /abilities``: what this account may do."""
        answer = await self._call("list_abilities", "GET", "/abilities")
        abilities = answer.get("abilities")
        if not isinstance(abilities, list) or not all(isinstance(a, str) for a in abilities):
            raise PagerDutyAPIError("list_abilities", 200, "the answer has no list of abilities")
        return abilities

    async def has_ability(self, name: str) -> bool:
        """``GET /abilities/{name}``: 204 yes, 402 (not on this plan) no; anything else raises."""
        answer = await self._call("has_ability", "GET", f"/abilities/{_segment(name)}", also_ok=(402,))
        return answer.get("_status") == 204

    # -- the machinery ---------------------------------------------------------------------------

    def _from(self, operation: str, from_email: str | None) -> str:
        value = from_email if from_email is not None else self.default_from
        if not value:
            raise ValueError(f"{operation}: PagerDuty requires a From header (a user's e-mail) on this call; "
                             "pass from_email= or give the client default_from=")
        if not isinstance(value, str) or len(value) > 254 or _EMAIL.fullmatch(value) is None:
            raise ValueError(f"{operation}: the From header must be one e-mail address, got {clean(value, 60)!r}")
        return value

    async def _set_status(self, operation: str, incident_id: str, status: str, from_email: str | None
                          ) -> dict[str, Any]:
        answer = await self._call(operation, "PUT", f"/incidents/{_segment(incident_id)}",
                                  json={"incident": {"type": "incident_reference", "status": status}},
                                  from_email=self._from(operation, from_email))
        return self._entity(answer, "incident", operation)

    @staticmethod
    def _entity(answer: Mapping[str, Any], key: str, operation: str) -> dict[str, Any]:
        value = answer.get(key)
        if not isinstance(value, dict):
            raise PagerDutyAPIError(operation, answer.get("_status"), f"the answer has no {key!r} object")
        return value

    async def _paginate(
        self, operation: str, path: str, key: str, params: Params, page_size: int
    ) -> AsyncIterator[dict[str, Any]]:
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= _PAGE:
            raise ValueError(f"{operation}: page_size must be an integer from 1 to {_PAGE}, got {page_size!r}")
        offset = 0
        while True:
            answer = await self._call(operation, "GET", path,
                                      params={**params, "offset": offset, "limit": page_size})
            items = answer.get(key)
            if not isinstance(items, list):
                raise PagerDutyAPIError(operation, 200, f"the answer has no {key!r} list")
            for item in items:
                yield item
            if answer.get("more") is not True or not items:
                return
            offset += len(items)
            if offset >= _MAX_OFFSET:
                raise PagerDutyRequestError(operation, None, f"more than {_MAX_OFFSET} results; PagerDuty lists "
                                            "no further: narrow the query (since/until, statuses, service ids)")
            page_size = min(page_size, _MAX_OFFSET - offset)

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        from_email: str | None = None,
        also_ok: tuple[int, ...] = (),
    ) -> dict[str, Any]:
        """One API call with retries: the decoded JSON object (``{}`` for no body) plus ``_status``."""
        headers = {"From": from_email} if from_email is not None else {}
        started = self._clock.monotonic()
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._attempt(operation, method, path, params, json, headers, attempt)
            hint: float | None = None
            error: PagerDutyAPIError
            if isinstance(outcome, PagerDutyAPIError):
                error = outcome
            else:
                if outcome.status_code in also_ok:  # an expected answer whose body does not matter
                    return {"_status": outcome.status_code}
                if 200 <= outcome.status_code < 300:
                    return self._decode(operation, outcome)
                error = error_for(operation, outcome.status_code, outcome.content, attempt)
                if not self.retry.retries_status(outcome.status_code):
                    raise error
                hint = server_hint(outcome.headers)
            if attempt >= self.retry.max_attempts:
                raise error
            wait = self.retry.delay(attempt, hint, self._rand())
            if self._clock.monotonic() - started + wait > self.retry.max_elapsed:
                raise error
            log.info("%s; try %d of %d in %.1f s", error, attempt + 1, self.retry.max_attempts, wait)
            await self._sleep(wait)

    async def _attempt(
        self, operation: str, method: str, path: str, params: Params | None, json: Any,
        headers: Mapping[str, str], attempt: int,
    ) -> PagerDutyTransportError | httpx.Response:
        """One HTTP exchange through the breaker: the response, or the error for no answer."""
        breaker = self.breaker
        if breaker is not None and not breaker.allow():
            raise PagerDutyCircuitOpen(operation, None, f"circuit {breaker.name!r} is open", attempts=attempt)
        try:
            response = await self._client.request(method, path, params=params, json=json, headers=headers)
        except httpx.TransportError as exc:
            if breaker is not None:
                breaker.record_failure()
            message = clean(f"no answer: {type(exc).__name__}: {exc}")
            return PagerDutyTransportError(operation, None, message, attempts=attempt)
        except BaseException:
            if breaker is not None:
                breaker.record_ignored()
            raise
        status = response.status_code
        if breaker is not None:
            if status == 429:
                breaker.record_ignored()
            elif status == 408 or status >= 500:
                breaker.record_failure()
            else:
                breaker.record_success()
        return response

    @staticmethod
    def _decode(operation: str, response: httpx.Response) -> dict[str, Any]:
        if not response.content:
            return {"_status": response.status_code}
        try:
            data = response.json()
        except ValueError:
            raise PagerDutyAPIError(operation, response.status_code, "the answer is not JSON") from None
        if not isinstance(data, dict):
            raise PagerDutyAPIError(operation, response.status_code, "the answer is not a JSON object")
        return {**data, "_status": response.status_code}
