"""A blocking face of :class:`~receiver.pagerduty.rest.PagerDutyClient`, for code that is not async.

::

    with PagerDutySyncClient(Secret(token), default_from="oncall@example.com") as pd:
        incident = pd.create_incident("Disk full", service_id="PSERVICE", incident_key="disk-db1")
        for open_incident in pd.list_incidents(statuses=["triggered"]):
            ...

The async client lives on an event loop of its own, in one daemon thread this object starts and
stops; each method hands its call to that loop and waits for the answer. So it works from plain
threads and also from code that already runs an event loop of its own (which it blocks while it
waits, as any blocking call does). Same arguments, results and exceptions as the async client.
The ``sleep`` given must be a coroutine function: it runs on the client's loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar

from receiver.pagerduty.rest import PagerDutyClient
from receiver.secret import Secret

__all__ = ["PagerDutySyncClient"]

T = TypeVar("T")


class PagerDutySyncClient:
    """Blocking calls to PagerDuty's REST API; use ``with`` or call :meth:`close`."""

    def __init__(self, token: Secret, **options: Any) -> None:
        """``options`` are :class:`PagerDutyClient`'s keyword arguments."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pagerduty-rest", daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self.client: PagerDutyClient = self._run(self._make(token, options))
        except BaseException:
            self._stop()
            raise

    @staticmethod
    async def _make(token: Secret, options: dict[str, Any]) -> PagerDutyClient:
        return PagerDutyClient(token, **options)  # the httpx pool belongs to this loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("the PagerDuty client is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("PagerDutySyncClient called from its own loop; use the async client there")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _iterate(self, pages: AsyncIterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        async def step() -> tuple[bool, dict[str, Any] | None]:
            try:
                return True, await anext(pages)
            except StopAsyncIteration:
                return False, None

        try:
            while True:
                more, item = self._run(step())
                if not more or item is None:
                    return
                yield item
        finally:
            aclose = getattr(pages, "aclose", None)  # an iterator left early frees its generator now
            if aclose is not None and not self._closed:
                self._run(aclose())

    def __enter__(self) -> PagerDutySyncClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool and stop the thread; calling it again does nothing."""
        if self._closed:
            return
        try:
            self._run(self.client.aclose())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    # -- the calls -------------------------------------------------------------------------------

    def create_incident(
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
        return self._run(self.client.create_incident(
            title, service_id=service_id, urgency=urgency, details=details, incident_key=incident_key,
            escalation_policy_id=escalation_policy_id, assignee_ids=assignee_ids, from_email=from_email))

    def get_incident(self, incident_id: str) -> dict[str, Any]:
        return self._run(self.client.get_incident(incident_id))

    def list_incidents(
        self,
        *,
        statuses: Sequence[str] = (),
        service_ids: Sequence[str] = (),
        since: str | None = None,
        until: str | None = None,
        page_size: int = 100,
    ) -> Iterator[dict[str, Any]]:
        return self._iterate(self.client.list_incidents(
            statuses=statuses, service_ids=service_ids, since=since, until=until, page_size=page_size))

    def acknowledge_incident(self, incident_id: str, *, from_email: str | None = None) -> dict[str, Any]:
        return self._run(self.client.acknowledge_incident(incident_id, from_email=from_email))

    def resolve_incident(self, incident_id: str, *, from_email: str | None = None) -> dict[str, Any]:
        return self._run(self.client.resolve_incident(incident_id, from_email=from_email))

    def snooze_incident(self, incident_id: str, duration: int, *, from_email: str | None = None) -> dict[str, Any]:
        return self._run(self.client.snooze_incident(incident_id, duration, from_email=from_email))

    def add_note(self, incident_id: str, content: str, *, from_email: str | None = None) -> dict[str, Any]:
        return self._run(self.client.add_note(incident_id, content, from_email=from_email))

    def get_service(self, service_id: str) -> dict[str, Any]:
        return self._run(self.client.get_service(service_id))

    def list_services(self, *, query: str | None = None, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._iterate(self.client.list_services(query=query, page_size=page_size))

    def get_escalation_policy(self, policy_id: str) -> dict[str, Any]:
        return self._run(self.client.get_escalation_policy(policy_id))

    def list_escalation_policies(
        self, *, query: str | None = None, page_size: int = 100
    ) -> Iterator[dict[str, Any]]:
        return self._iterate(self.client.list_escalation_policies(query=query, page_size=page_size))

    def list_abilities(self) -> list[str]:
        return self._run(self.client.list_abilities())

    def has_ability(self, name: str) -> bool:
        return self._run(self.client.has_ability(name))
