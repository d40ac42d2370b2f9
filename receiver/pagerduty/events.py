"""Sending Events API v2 events, and classifying every outcome once, at this boundary.

Alert events (a body with ``event_action``) go to the configured ``pagerduty.events_url``;
Change Events (a body without one, see :mod:`transforms.render`) go to
:func:`change_events_url` of it, on the same host (so ``allowed_hosts`` and the breaker
keyed by host hold for both), with the same routing key and the same classification, and
without the ``dedup_key`` the outbox keeps in their body (PagerDuty's Change Events take none).

No other module sees an httpx exception or a raw status code: :func:`classify`
turns a response into a :class:`SendResult` with a closed :class:`Reason`, and
:meth:`EventsSender.send` maps transport errors the same way.

=========================  ==================  =========
PagerDuty answer           reason              retried
=========================  ==================  =========
2xx                        (ok)                –
400                        invalid_event       no: dead letter with ``errors[]``
401, 403, 404              auth_error          no: wrong key or region
408                        timeout             yes
429                        rate_limited        yes
other 4xx                  client_error        no
5xx                        server_error        yes
timeout                    timeout             yes
refused / reset / DNS      connection          yes
=========================  ==================  =========
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec

from receiver.errors import Reason
from receiver.secret import Secret

__all__ = ["DryRunSender", "EventsSender", "SendResult", "Sender", "change_events_url", "classify", "is_change_event"]

_DETAIL_LIMIT = 2000
_ENCODE = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of one delivery attempt."""

    ok: bool
    reason: Reason | None = None
    status: int | None = None
    detail: str = ""  # PagerDuty's message and errors, or the transport error; never the key

    @property
    def retryable(self) -> bool:
        return not self.ok and self.reason is not None and self.reason.retryable


class Sender(Protocol):
    async def send(self, routing_key: Secret, body: Mapping[str, Any]) -> SendResult: ...

    async def aclose(self) -> None: ...


def classify(status: int, content: bytes) -> SendResult:
    """Map a PagerDuty HTTP answer to a :class:`SendResult`."""
    if 200 <= status < 300:
        return SendResult(ok=True, status=status)
    detail = describe_error_body(content)
    if status == 400:
        reason = Reason.INVALID_EVENT
    elif status in (401, 403, 404):
        reason = Reason.AUTH_ERROR
    elif status == 408:
        reason = Reason.TIMEOUT
    elif status == 429:
        reason = Reason.RATE_LIMITED
    elif status >= 500:
        reason = Reason.SERVER_ERROR
    else:
        reason = Reason.CLIENT_ERROR
    return SendResult(ok=False, reason=reason, status=status, detail=detail)


def describe_error_body(content: bytes) -> str:
    """PagerDuty's ``message: errors…`` from a JSON body, else the (trimmed) text itself."""
    text = content.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:_DETAIL_LIMIT]
    if not isinstance(data, dict):
        return text[:_DETAIL_LIMIT]
    parts = [str(data[k]) for k in ("status", "message") if isinstance(data.get(k), str)]
    errors = data.get("errors")
    if isinstance(errors, list) and errors:
        parts.append("; ".join(str(e) for e in errors))
    return (": ".join(parts) if parts else text)[:_DETAIL_LIMIT]


def change_events_url(events_url: str) -> str:
    """The Change Events URL beside ``events_url``: its last path segment ``enqueue`` becomes
    ``change/enqueue`` (``https://events.pagerduty.com/v2/enqueue`` →
    ``https://events.pagerduty.com/v2/change/enqueue``); a path not ending in ``/enqueue``
    (a proxy) gets ``/change/enqueue`` appended. Scheme, host, port and query are kept."""
    parts = urlsplit(events_url)
    path = parts.path.rstrip("/")
    path = path.removesuffix("/enqueue") + "/change/enqueue"
    return urlunsplit(parts._replace(path=path))


def is_change_event(body: Mapping[str, Any]) -> bool:
    """A Change Event's body has no ``event_action``; every alert event's has one."""
    return "event_action" not in body


class EventsSender:
    """POSTs events over one pooled ``httpx.AsyncClient``: alert events to ``url``, Change Events
    to :func:`change_events_url` of it."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        connect_timeout: float,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._url = url
        self.change_url = change_events_url(url)
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            headers={"User-Agent": "pdrelay", "Content-Type": "application/json"},
            follow_redirects=False,
            trust_env=False,
        )

    async def send(self, routing_key: Secret, body: Mapping[str, Any]) -> SendResult:
        # Compact UTF-8 JSON: the encoding render measured against PagerDuty's 512 KB limit.
        url = self._url
        if is_change_event(body):
            url, body = self.change_url, {k: v for k, v in body.items() if k != "dedup_key"}
        payload = _ENCODE({"routing_key": routing_key.reveal(), **body})
        try:
            response = await self._client.post(url, content=payload)
        except httpx.TimeoutException as exc:
            return SendResult(ok=False, reason=Reason.TIMEOUT, detail=f"timed out ({type(exc).__name__})")
        except httpx.TransportError as exc:
            return SendResult(ok=False, reason=Reason.CONNECTION, detail=f"{type(exc).__name__}: {exc}"[:500])
        return classify(response.status_code, response.content)

    async def aclose(self) -> None:
        await self._client.aclose()


class DryRunSender:
    """Sends nothing and succeeds; the dispatcher logs what would have been sent."""

    async def send(self, routing_key: Secret, body: Mapping[str, Any]) -> SendResult:
        return SendResult(ok=True, status=None, detail="dry-run")

    async def aclose(self) -> None:
        return None
