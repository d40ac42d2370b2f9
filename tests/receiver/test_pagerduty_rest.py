"""The async REST API client against a loopback PagerDuty stand-in: headers, every endpoint,
pagination, retries and their bounds, regions, and the exception tree."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from receiver.breaker import CircuitBreaker
from receiver.pagerduty.rest import REGIONS, PagerDutyClient
from receiver.pagerduty.rest_errors import (
    PagerDutyAPIError,
    PagerDutyAuthError,
    PagerDutyCircuitOpen,
    PagerDutyNotFound,
    PagerDutyRateLimited,
    PagerDutyRequestError,
    PagerDutyServerError,
    PagerDutyTransportError,
)
from receiver.pagerduty.rest_retry import RetryPolicy, server_hint
from receiver.pagerduty.rest_sync import PagerDutySyncClient
from receiver.secret import Secret
from tests.fakes import FakeClock
from tests.receiver.pd_rest_standin import RestStandIn

TOKEN = "y_NbAkKc66ryYTWUXYEu"
FROM = "oncall@example.com"


class FakeSleep:
    """Records every wait and moves the fake clock by it instead of sleeping."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)


@pytest.fixture
async def pd() -> AsyncIterator[RestStandIn]:
    async with RestStandIn(TOKEN) as standin:
        yield standin


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep(FakeClock())


def client(pd: RestStandIn, sleep: FakeSleep, **kw: Any) -> PagerDutyClient:
    kw.setdefault("default_from", FROM)
    return PagerDutyClient(Secret(TOKEN), base_url=pd.url, sleep=sleep, clock=sleep.clock, rand=lambda: 0.0, **kw)


async def test_create_incident_sends_token_from_and_the_incident(pd: RestStandIn, sleep: FakeSleep) -> None:
    async with client(pd, sleep) as api:
        created = await api.create_incident("Disk full", service_id="PS1", urgency="low", details="92% on /var",
                                            incident_key="disk-db1", escalation_policy_id="PEP1")
    assert created["id"] == "PNEW0" and created["status"] == "triggered"
    [seen] = pd.requests
    assert (seen.method, seen.path) == ("POST", "/incidents")
    assert seen.headers["Authorization"] == f"Token token={TOKEN}"
    assert seen.headers["From"] == FROM
    assert seen.headers["Accept"] == "application/vnd.pagerduty+json;version=2"
    assert seen.body == {"incident": {
        "type": "incident", "title": "Disk full", "service": {"id": "PS1", "type": "service_reference"},
        "urgency": "low", "body": {"type": "incident_body", "details": "92% on /var"}, "incident_key": "disk-db1",
        "escalation_policy": {"id": "PEP1", "type": "escalation_policy_reference"}}}


async def test_assignees_and_the_from_of_one_call(pd: RestStandIn, sleep: FakeSleep) -> None:
    async with client(pd, sleep, default_from=None) as api:
        await api.create_incident("x", service_id="PS1", assignee_ids=["PU1", "PU2"], from_email="a@example.com")
        with pytest.raises(ValueError) as missing:
            await api.create_incident("x", service_id="PS1")
        with pytest.raises(ValueError) as both:
            await api.create_incident("x", service_id="PS1", assignee_ids=["PU1"], escalation_policy_id="PEP1")
    assert str(missing.value) == ("create_incident: PagerDuty requires a From header (a user's e-mail) on this "
                                  "call; pass from_email= or give the client default_from=")
    assert str(both.value) == "create_incident: give escalation_policy_id or assignee_ids, not both"
    [seen] = pd.requests  # the refused calls sent nothing
    assert seen.headers["From"] == "a@example.com"
    assert seen.body["incident"]["assignments"] == [{"assignee": {"id": "PU1", "type": "user_reference"}},
                                                    {"assignee": {"id": "PU2", "type": "user_reference"}}]


async def test_incident_actions_and_notes(pd: RestStandIn, sleep: FakeSleep) -> None:
    pd.seed_incidents(1)
    async with client(pd, sleep) as api:
        assert (await api.acknowledge_incident("PI0"))["status"] == "acknowledged"
        assert (await api.snooze_incident("PI0", 3600))["snoozed_for"] == 3600
        assert (await api.resolve_incident("PI0"))["status"] == "resolved"
        assert await api.add_note("PI0", "fixed by hand") == {"id": "PN0", "content": "fixed by hand"}
        assert (await api.get_incident("PI0"))["status"] == "resolved"
    assert [(r.method, r.path, r.headers.get("From")) for r in pd.requests] == [
        ("PUT", "/incidents/PI0", FROM), ("POST", "/incidents/PI0/snooze", FROM),
        ("PUT", "/incidents/PI0", FROM), ("POST", "/incidents/PI0/notes", FROM), ("GET", "/incidents/PI0", None)]
    assert pd.requests[0].body == {"incident": {"type": "incident_reference", "status": "acknowledged"}}


async def test_list_incidents_walks_every_page(pd: RestStandIn, sleep: FakeSleep) -> None:
    pd.seed_incidents(7)
    async with client(pd, sleep) as api:
        ids = [i["id"] async for i in api.list_incidents(statuses=["triggered", "acknowledged"], page_size=3)]
    assert ids == [f"PI{i}" for i in range(7)]
    assert [r.query for r in pd.requests] == [
        [("statuses[]", "triggered"), ("statuses[]", "acknowledged"), ("offset", str(o)), ("limit", "3")]
        for o in (0, 3, 6)]


async def test_services_policies_and_abilities(pd: RestStandIn, sleep: FakeSleep) -> None:
    async with client(pd, sleep) as api:
        assert (await api.get_service("PS2"))["name"] == "service 2"
        assert [s["id"] async for s in api.list_services(page_size=2)] == ["PS0", "PS1", "PS2"]
        assert (await api.get_escalation_policy("PEP1"))["name"] == "ops"
        assert [p["id"] async for p in api.list_escalation_policies()] == ["PEP1"]
        assert await api.list_abilities() == ["teams", "read_only_users"]
        assert await api.has_ability("teams") is True
        assert await api.has_ability("sso") is False
        with pytest.raises(ValueError, match=r"^list_services: page_size must be an integer from 1 to 100, got 0$"):
            [s async for s in api.list_services(page_size=0)]


async def test_429_waits_for_ratelimit_reset(pd: RestStandIn, sleep: FakeSleep) -> None:
    pd.fail_next(429, {"error": {"message": "Rate Limit Exceeded", "code": 2020}}, {"ratelimit-reset": "7"})
    pd.fail_next(429, b"", {"Retry-After": "3"})
    async with client(pd, sleep) as api:
        assert (await api.get_service("PS0"))["id"] == "PS0"
    assert sleep.waits == [7.0, 3.0]
    assert len(pd.requests) == 3


async def test_jitter_stretches_a_hint_and_shortens_backoff(pd: RestStandIn, sleep: FakeSleep) -> None:
    pd.fail_next(429, b"", {"ratelimit-reset": "10"})
    pd.fail_next(502)
    async with PagerDutyClient(Secret(TOKEN), base_url=pd.url, sleep=sleep, clock=sleep.clock,
                               rand=lambda: 0.5, retry=RetryPolicy(base_delay=2.0, jitter=0.2)) as api:
        await api.get_service("PS0")
    assert sleep.waits == [11.0, pytest.approx(3.6)]


async def test_5xx_then_success(pd: RestStandIn, sleep: FakeSleep) -> None:
    pd.fail_next(503, b"<html>busy</html>")
    pd.fail_next(500)
    pd.seed_incidents(1)
    async with client(pd, sleep) as api:
        assert (await api.get_incident("PI0"))["id"] == "PI0"
    assert sleep.waits == [1.0, 2.0]


async def test_gives_up_after_max_attempts(pd: RestStandIn, sleep: FakeSleep) -> None:
    for _ in range(5):
        pd.fail_next(500, {"error": {"message": "Internal Error", "code": 2000}})
    async with client(pd, sleep, retry=RetryPolicy(max_attempts=3)) as api:
        with pytest.raises(PagerDutyServerError) as caught:
            await api.get_service("PS0")
    assert str(caught.value) == "get_service: HTTP 500 (code 2000): Internal Error after 3 attempts"
    assert caught.value.attempts == 3 and len(pd.requests) == 3
    assert sleep.waits == [1.0, 2.0]


async def test_gives_up_rather_than_wait_past_max_elapsed(pd: RestStandIn, sleep: FakeSleep) -> None:
    pd.fail_next(429, {"error": {"message": "Rate Limit Exceeded", "code": 2020}}, {"ratelimit-reset": "30"})
    pd.fail_next(429, {"error": {"message": "Rate Limit Exceeded", "code": 2020}}, {"ratelimit-reset": "45"})
    async with client(pd, sleep, retry=RetryPolicy(max_attempts=10, max_elapsed=60)) as api:
        with pytest.raises(PagerDutyRateLimited) as caught:
            await api.get_service("PS0")
    assert (caught.value.status, caught.value.code, caught.value.attempts) == (429, 2020, 2)
    assert sleep.waits == [30.0]  # 30 + 45 would pass 60 s: no second wait


async def test_no_answer_is_a_transport_error(sleep: FakeSleep) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    async with PagerDutyClient(Secret(TOKEN), base_url=f"http://127.0.0.1:{port}", sleep=sleep,
                               clock=sleep.clock, rand=lambda: 0.0, retry=RetryPolicy(max_attempts=2)) as api:
        with pytest.raises(PagerDutyTransportError) as caught:
            await api.get_service("PS0")
    assert caught.value.status is None and caught.value.attempts == 2
    assert str(caught.value).startswith("get_service: no answer: ConnectError: ")
    assert sleep.waits == [1.0]


@pytest.mark.parametrize(
    ("status", "body", "cls", "text"),
    [
        (400, {"error": {"message": "Invalid Input Provided", "code": 2001, "errors": ["Title is too long"]}},
         PagerDutyRequestError, "get_service: HTTP 400 (code 2001): Invalid Input Provided [Title is too long]"),
        (401, {"error": {"message": "Authentication failed", "code": 2006}},
         PagerDutyAuthError, "get_service: HTTP 401 (code 2006): Authentication failed"),
        (403, {"error": {"message": "Access Denied", "code": 2010}},
         PagerDutyAuthError, "get_service: HTTP 403 (code 2010): Access Denied"),
        (404, {"error": {"message": "Not Found", "code": 2100}},
         PagerDutyNotFound, "get_service: HTTP 404 (code 2100): Not Found"),
        (409, b"conflict\x1b[31m\r\nforged: line",
         PagerDutyRequestError, "get_service: HTTP 409: conflict [31m forged: line"),
        (408, b"", PagerDutyTransportError, "get_service: HTTP 408"),
        (429, b"", PagerDutyRateLimited, "get_service: HTTP 429"),
        (502, b"<html>bad gateway</html>", PagerDutyServerError, "get_service: HTTP 502: <html>bad gateway</html>"),
    ],
)
async def test_each_error_class(pd: RestStandIn, sleep: FakeSleep, status: int, body: Any,
                                cls: type[PagerDutyAPIError], text: str) -> None:
    pd.fail_next(status, body)
    async with client(pd, sleep, retry=RetryPolicy(max_attempts=1)) as api:
        with pytest.raises(cls) as caught:
            await api.get_service("PS0")
    assert type(caught.value) is cls and caught.value.status == status
    assert str(caught.value) == text
    if isinstance(body, dict):
        assert caught.value.code == body["error"]["code"]
        assert caught.value.errors == tuple(body["error"].get("errors", ()))


async def test_wrong_token_and_unknown_id_from_the_stand_in(pd: RestStandIn, sleep: FakeSleep) -> None:
    async with PagerDutyClient(Secret("wrong"), base_url=pd.url, sleep=sleep, clock=sleep.clock) as api:
        with pytest.raises(PagerDutyAuthError, match=r"^get_service: HTTP 401 \(code 2006\)"):
            await api.get_service("PS0")
    async with client(pd, sleep) as api:
        with pytest.raises(PagerDutyNotFound, match=r"^get_incident: HTTP 404 \(code 2100\): Not Found$"):
            await api.get_incident("P/../services")
    assert pd.requests[-1].path == "/incidents/P%2F..%2Fservices"
    assert sleep.waits == []  # 4xx is never retried


async def test_breaker_opens_and_refuses_without_sending(pd: RestStandIn, sleep: FakeSleep) -> None:
    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=30, name="pagerduty-rest", clock=sleep.clock)
    pd.fail_next(503)
    pd.fail_next(503)
    async with client(pd, sleep, breaker=breaker, retry=RetryPolicy(max_attempts=5)) as api:
        with pytest.raises(PagerDutyCircuitOpen) as caught:
            await api.get_service("PS0")
        assert str(caught.value) == "get_service: circuit 'pagerduty-rest' is open after 3 attempts"
        assert len(pd.requests) == 2
        sleep.clock.advance(30)
        assert (await api.get_service("PS0"))["id"] == "PS0"  # the half-open trial closes it
    assert str(breaker.state) == "closed"


class ToStandIn(httpx.AsyncBaseTransport):
    """Records the URL the client asked for, then sends the request to the stand-in instead."""

    def __init__(self, standin: str) -> None:
        self.asked: list[str] = []
        self._standin = httpx.URL(standin)
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(str(request.url))
        request.url = request.url.copy_with(scheme="http", host=self._standin.host, port=self._standin.port)
        request.headers["Host"] = f"{self._standin.host}:{self._standin.port}"
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.mark.parametrize(("region", "host"), [("us", "api.pagerduty.com"), ("eu", "api.eu.pagerduty.com")])
async def test_region_picks_the_base_url(pd: RestStandIn, region: Any, host: str) -> None:
    transport = ToStandIn(pd.url)
    async with PagerDutyClient(Secret(TOKEN), region=region, transport=transport) as api:
        assert api.base_url == REGIONS[region] == f"https://{host}"
        assert (await api.get_service("PS1"))["id"] == "PS1"
    assert transport.asked == [f"https://{host}/services/PS1"]


@pytest.mark.parametrize(
    ("headers", "hint"),
    [
        ({"ratelimit-reset": "12", "retry-after": "3"}, 12.0),
        ({"retry-after": " 4.5 "}, 4.5),
        ({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}, None),
        ({"ratelimit-reset": "soon", "retry-after": "2"}, 2.0),
        ({"ratelimit-reset": "-1"}, None),
        ({"ratelimit-reset": "inf"}, None),
        ({}, None),
    ],
)
def test_server_hint(headers: dict[str, str], hint: float | None) -> None:
    """ratelimit-reset first, then Retry-After in seconds; a date, a negative or garbage means backoff."""
    assert server_hint(headers) == hint


async def test_a_402_without_json_is_still_a_no(pd: RestStandIn, sleep: FakeSleep) -> None:
    pd.fail_next(402, b"<html>upgrade your plan</html>")
    async with client(pd, sleep) as api:
        assert await api.has_ability("teams") is False


def test_bad_construction_is_refused() -> None:
    with pytest.raises(ValueError) as region:
        PagerDutyClient(Secret(TOKEN), region="ap")  # type: ignore[arg-type]
    assert str(region.value) == "region must be one of ['eu', 'us'], got 'ap'"
    with pytest.raises(ValueError) as url:
        PagerDutyClient(Secret(TOKEN), base_url="http://api.pagerduty.com")
    assert str(url.value) == ("base_url must be an https:// URL (http:// only for a loopback host), "
                              "got 'http://api.pagerduty.com'")
    with pytest.raises(TypeError, match=r"^token must be a receiver.secret.Secret"):
        PagerDutyClient(TOKEN)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^max_attempts must be an integer >= 1, got 0$"):
        RetryPolicy(max_attempts=0)


@pytest.fixture
def threaded_pd() -> Iterator[RestStandIn]:
    """The stand-in on a loop of its own thread, for the blocking client called from this thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    standin = RestStandIn(TOKEN)
    asyncio.run_coroutine_threadsafe(standin.__aenter__(), loop).result(timeout=10)
    try:
        yield standin
    finally:
        asyncio.run_coroutine_threadsafe(standin.__aexit__(None, None, None), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def test_sync_client_calls_iterates_and_raises(threaded_pd: RestStandIn) -> None:
    threaded_pd.seed_incidents(5)
    clock = FakeClock()
    with PagerDutySyncClient(Secret(TOKEN), base_url=threaded_pd.url, default_from=FROM,
                             sleep=FakeSleep(clock), clock=clock) as api:
        created = api.create_incident("Disk full", service_id="PS1", incident_key="disk-db1")
        assert api.acknowledge_incident(created["id"])["status"] == "acknowledged"
        assert [i["id"] for i in api.list_incidents(page_size=2)] == [*(f"PI{i}" for i in range(5)), created["id"]]
        first = next(iter(api.list_services(page_size=1)))  # left early: the generator is closed, nothing leaks
        assert first["id"] == "PS0"
        assert api.has_ability("teams") is True
        with pytest.raises(PagerDutyNotFound, match=r"^get_incident: HTTP 404 \(code 2100\): Not Found$"):
            api.get_incident("PX")
    with pytest.raises(RuntimeError, match=r"^the PagerDuty client is closed$"):
        api.get_service("PS0")
    api.close()  # a second close does nothing


async def test_a_from_that_is_not_one_address_is_refused_before_sending(pd: RestStandIn, sleep: FakeSleep) -> None:
    async with client(pd, sleep) as api:
        with pytest.raises(ValueError) as caught:
            await api.resolve_incident("PI0", from_email="a@example.com\r\nX-Injected: 1")
    assert str(caught.value) == ("resolve_incident: the From header must be one e-mail address, "
                                 "got 'a@example.com X-Injected: 1'")
    assert pd.requests == []


async def test_each_retry_is_logged(pd: RestStandIn, sleep: FakeSleep, caplog: pytest.LogCaptureFixture) -> None:
    pd.fail_next(503, {"error": {"message": "Service Unavailable", "code": 2000}})
    with caplog.at_level("INFO", logger="receiver.pagerduty.rest"):
        async with client(pd, sleep) as api:
            await api.get_service("PS0")
    assert [r.getMessage() for r in caplog.records if r.name == "receiver.pagerduty.rest"] == [
        "get_service: HTTP 503 (code 2000): Service Unavailable; try 2 of 4 in 1.0 s"]


async def test_listing_past_classic_pagination_says_so(pd: RestStandIn, sleep: FakeSleep) -> None:
    pd.seed_incidents(10_001)
    seen = 0
    async with client(pd, sleep) as api:
        with pytest.raises(PagerDutyRequestError) as caught:
            async for _ in api.list_incidents():
                seen += 1
    assert seen == 10_000 and len(pd.requests) == 100
    assert str(caught.value) == ("list_incidents: more than 10000 results; PagerDuty lists no further: "
                                 "narrow the query (since/until, statuses, service ids)")
