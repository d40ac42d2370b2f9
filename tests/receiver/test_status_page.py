"""The /status HTML page: every value shown as text, the CSP header, no external asset, admin-only;
and ``POST /status/playground``: intake's answers to bad bodies, nothing sent or stored."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.pagerduty.events import classify
from receiver.secret import Secret
from receiver.settings import (
    AuthSettings,
    OutboxSettings,
    PagerDutySettings,
    RulesSettings,
    ServerSettings,
    Settings,
)
from receiver.state import STATE
from receiver.web.page import CONTENT_SECURITY_POLICY, examples, render_page
from receiver.web.view import human_duration
from tests.fakes import FakeClock, FakeSender

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]

CAPTURED = Path(__file__).parent.parent / "e2e" / "captured"
HOSTILE = "<script>alert(1)</script> \"q\" 'a' & b"
HOSTILE_HTML = "&lt;script&gt;alert(1)&lt;/script&gt; &#34;q&#34; &#39;a&#39; &amp; b"
ADMIN = "admin-token-00112233445566778899"
INTAKE = "intake-token-A-0123456789abcdef"
RULES = """
version: 1
defaults: {routing_key: default, dedup: alert, severity: error}
rules:
  - name: ignore-watchdog
    match: ['alertname="Watchdog"']
    drop: true
  - name: storage-critical
    match: ['team="storage"']
    set: {severity: critical}
"""


def status_dict(**overrides: Any) -> dict[str, Any]:
    """A /status dict of the contract's shape, hostile text in every free-form value."""
    out: dict[str, Any] = {
        "version": "0.1.0",
        "dry_run": False,
        "events_url": "https://events.pagerduty.com/v2/enqueue",
        "routing_keys": [
            {"name": "default", "queued": 3, "oldest_queued_age_seconds": 252.4,
             "budget": {"used": 7, "limit": 120, "window_seconds": 60.0}, "next_send_in_seconds": 0.0,
             "throttled_429": 2, "dead_letters": {"bad_request": 1, "unreadable": 0, "undecryptable": 0}},
            {"name": HOSTILE, "queued": 0, "oldest_queued_age_seconds": None,
             "budget": {"used": 0, "limit": 120, "window_seconds": 60.0}, "next_send_in_seconds": 3725.0,
             "throttled_429": 0, "dead_letters": {"bad_request": 0, "unreadable": 0}},
        ],
        "outbox": {"queued": 3, "dead": 1},
        "breaker": {"endpoint": "events.pagerduty.com", "state": "open", "failures": 5, "failure_threshold": 5,
                    "recovery_timeout": 60.0,
                    "retry_in_seconds": 42.0},
        "last_errors": [{"at": "2026-12-02T12:00:00Z", "routing_key": "default", "reason": "server_error",
                         "message": "PagerDuty 503: " + HOSTILE}],
        "rules": {"sha256": "0123456789abcdef" * 4, "sources": ["rules/default.yaml"],
                  "loaded_at": "2026-12-02T11:59:00Z", "rule_names": ["ignore-watchdog", HOSTILE],
                  "last_reload_error": {"at": "2026-12-02T12:01:00Z", "errors": ["rules/x.yaml:3: " + HOSTILE]}},
        "encryption": {"at_rest": "aes-256-gcm", "key_ids": ["k1a2b3c4"], "encrypts_with": "k1a2b3c4"},
    }
    out.update(overrides)
    return out


def test_human_durations() -> None:
    """Ages read as an on-call engineer says them: the two largest units."""
    cases = {0: "0.0 s", 0.44: "0.4 s", 9.96: "10.0 s", 12.5: "12 s", 252.4: "4 m 12 s", 240: "4 m", 3600: "1 h",
             3725: "1 h 2 m", 90061: "1 d 1 h", None: "—", -1: "—", float("nan"): "—", True: "—"}
    assert {k: human_duration(k) for k in cases} == cases


def test_page_shows_every_fact_as_escaped_text() -> None:
    """The per-key table, breaker, errors, rules and reload error; hostile text never becomes markup."""
    page = render_page(status_dict())
    assert "<script>alert(1)</script>" not in page
    assert page.count("<script") == 1  # the page's own script
    assert ('<tr><td>default</td><td class="num">3</td><td>4 m 12 s</td><td>7 / 120 in 1 m</td>\n'
            '<td>now</td><td class="num">2</td>\n<td>bad_request: 1</td></tr>') in page
    assert (f'<tr><td>{HOSTILE_HTML}</td><td class="num">0</td><td>none queued</td><td>0 / 120 in 1 m</td>\n'
            '<td>1 h 2 m</td><td class="num">0</td>\n<td>none</td></tr>') in page
    assert ('<tr><th scope="row">endpoint</th><td>events.pagerduty.com</td></tr>\n'
            '<tr><th scope="row">state</th><td>open</td></tr>') in page
    assert '<tr><th scope="row">next try in</th><td>42 s</td></tr>' in page
    assert f"<td>PagerDuty 503: {HOSTILE_HTML}</td>" in page
    assert f"<li>{HOSTILE_HTML}</li>" in page  # a rule name
    assert '<div class="warning" id="reload-error" role="alert">' in page
    assert f"<li><code>rules/x.yaml:3: {HOSTILE_HTML}</code></li>" in page
    assert f'<code title="{"0123456789abcdef" * 4}">0123456789ab</code>' in page
    assert '<tr><th scope="row">key ids</th><td>k1a2b3c4</td></tr>' in page
    assert 'id="dry-run"' not in page


def test_page_banner_and_quiet_sections() -> None:
    """DRY-RUN shows as a banner; no reload error, no errors and a closed breaker show no warning."""
    status = status_dict(dry_run=True, last_errors=[], breaker={"state": "closed", "failures": 0,
                         "failure_threshold": 5, "recovery_timeout": 60.0, "retry_in_seconds": None})
    status["rules"]["last_reload_error"] = None
    page = render_page(status)
    assert '<p class="banner" id="dry-run">DRY-RUN: nothing is sent to PagerDuty</p>' in page
    assert 'id="reload-error"' not in page and 'class="warning"' not in page
    assert '<p id="last-errors">none since start</p>' in page
    assert "next try in" not in page


def test_page_loads_nothing_from_elsewhere_and_csp_allows_only_its_own_code() -> None:
    """No http(s) asset, import or font; the CSP names the inline script and style by their hashes."""
    page = render_page(status_dict())
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "@import" not in page and "url(" not in page and "<link" not in page
    script = re.search(r"<script>(.*)</script>", page, re.S)
    style = re.search(r"<style>(.*)</style>", page, re.S)
    assert script is not None and style is not None

    def sha(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    assert (
        f"default-src 'none'; script-src {sha(script.group(1))}; style-src {sha(style.group(1))}; "
        "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ) == CONTENT_SECURITY_POLICY
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", script.group(1))


def test_examples_are_the_captured_bodies() -> None:
    """The playground offers the shipped examples, each a real webhook body, in the page as escaped attributes."""
    names = [name for name, _ in examples()]
    assert names == ["am-0.25-firing", "am-0.25-partial-resolve", "am-0.25-resolved", "am-0.32-notification-reason"]
    firing = dict(examples())["am-0.25-firing"]
    assert json.loads(firing) == json.loads((CAPTURED / "am-0.25_firing.json").read_text())
    page = render_page(status_dict())
    escaped = firing.replace("&", "&amp;").replace('"', "&#34;").replace("<", "&lt;").replace(">", "&gt;")
    assert f'<option value="am-0.25-firing" data-body="{escaped}">am-0.25-firing</option>' in page


def test_page_survives_a_partial_dict() -> None:
    """A dict missing facts (or of an older shape) still renders, the gaps shown as a dash."""
    page = render_page({"dry_run": False, "routing_keys": ["default"]})
    assert ('<tr><td>default</td><td class="num">—</td><td>—</td><td>—</td>\n<td>—</td><td class="num">—</td>\n'
            "<td>none</td></tr>") in page


# --------------------------------------------------------------------------- through the app


@pytest.fixture
def sender() -> FakeSender:
    """A PagerDuty that is down: whatever is queued stays queued."""
    return FakeSender(lambda body: classify(503, b"down"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()  # 2023-11-14T22:13:20Z


@pytest.fixture
def make_client(tmp_path: Path, aiohttp_client: ClientFactory, sender: FakeSender,
                clock: FakeClock) -> Callable[..., Awaitable[TestClient[Any, Any]]]:
    async def make(auth: AuthSettings | None = None, body_limit: int = 10 * 1024 * 1024,
                   rules: str = RULES) -> TestClient[Any, Any]:
        home = tmp_path / str(len(list(tmp_path.iterdir())))  # each app its own outbox and audit log
        home.mkdir()
        path = home / "rules.yaml"
        path.write_text(rules)
        settings = Settings(
            server=ServerSettings(body_limit=body_limit),
            pagerduty=PagerDutySettings(routing_keys={"default": Secret("k" * 32)}),
            outbox=OutboxSettings(path=home / "outbox.db"),
            rules=RulesSettings(paths=(path,)),
            auth=auth or AuthSettings(),
        )
        app = create_app(settings, Deps(registry=CollectorRegistry(), sender=sender, clock=clock))
        return await aiohttp_client(app)

    return make


HTML = {"Accept": "text/html,application/xhtml+xml"}


async def test_status_page_answer_has_its_headers(make_client: Any) -> None:
    """A browser gets the page with its CSP and no caching; JSON stays the default."""
    client = await make_client()
    resp = await client.get("/status", headers=HTML)
    assert (resp.status, resp.content_type, resp.charset) == (200, "text/html", "utf-8")
    assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert (resp.headers["X-Content-Type-Options"], resp.headers["Cache-Control"],
            resp.headers["Referrer-Policy"], resp.headers["X-Frame-Options"]) == (
        "nosniff", "no-store", "no-referrer", "DENY")
    page = await resp.text()
    assert "<tr><td>default</td>" in page and "k" * 32 not in page
    plain = await client.get("/status")
    assert plain.content_type == "application/json"


async def test_status_page_and_playground_are_admin_only(make_client: Any) -> None:
    """With auth configured: 401 without a credential, 403 for an intake token, the answer for an admin token."""
    client = await make_client(AuthSettings(bearer_tokens=(Secret(INTAKE),), admin_tokens=(Secret(ADMIN),)))
    body = (CAPTURED / "am-0.25_firing.json").read_bytes()
    for method, path in (("GET", "/status"), ("POST", "/status/playground")):
        resp = await client.request(method, path, headers=HTML, data=body)
        assert (resp.status, await resp.json()) == (401, {"error": "authentication required"}), path
        resp = await client.request(method, path, headers={**HTML, "Authorization": f"Bearer {INTAKE}"}, data=body)
        assert (resp.status, await resp.json()) == (403, {"error": "this identity may not use this endpoint"}), path
    resp = await client.get("/status", headers={**HTML, "Authorization": f"Bearer {ADMIN}"})
    assert (resp.status, resp.content_type) == (200, "text/html")
    resp = await client.post("/status/playground", headers={"Authorization": f"Bearer {ADMIN}"}, data=body)
    assert (resp.status, [e["dedup_key"] for e in (await resp.json())["events"]]) == (
        200, ["d55413deeb88df6c", "0ee71a229f2262e7"])


# --------------------------------------------------------------------------- the playground

PLAY_RULES = """
version: 1
defaults: {routing_key: default, dedup: alert, severity: error}
rules:
  - name: late-evening
    when_time: {timezone: UTC, hours: ["22:00-23:00"]}
    set: {severity: critical}
  - name: broken
    set: {summary: '{{ 1 // (labels.zero | int) }}'}
  - name: drop-test
    match: ['alertname="Test"']
    drop: true
"""
FIRING = "0001-01-01T00:00:00Z"


def play_body() -> dict[str, Any]:
    alert = {"status": "firing", "annotations": {}, "startsAt": "2026-11-25T16:54:58Z", "endsAt": FIRING,
             "generatorURL": ""}
    return {"version": "4", "receiver": "r", "status": "firing", "groupKey": "{}:{}", "externalURL": "http://am:9093",
            "alerts": [{**alert, "labels": {"alertname": "DiskFull", "instance": HOSTILE},
                        "fingerprint": "aaaa000000000001"},
                       {**alert, "labels": {"alertname": "Test"}, "fingerprint": "aaaa000000000002"}]}


def expected_answer(severity: str, evening: dict[str, Any]) -> dict[str, Any]:
    defaults = {"rule": "defaults", "matched": True, "skipped_by": None, "dropped": False, "stopped": False,
                "changes": [{"field": "routing_key", "old": None, "new": "default"},
                            {"field": "dedup", "old": None, "new": "alert"},
                            {"field": "severity", "old": None, "new": "error"}]}
    broken = {"rule": "broken", "matched": True, "skipped_by": None, "changes": [], "dropped": False, "stopped": False}
    drop = {"rule": "drop-test", "matched": False, "skipped_by": "match", "changes": [], "dropped": False,
            "stopped": False}
    dropped = {**drop, "matched": True, "skipped_by": None, "dropped": True}
    error = "UndefinedError: 'dict object' has no attribute 'zero'"
    rules = ["late-evening", "broken"] if evening["matched"] else ["broken"]
    return {
        "events": [{"routing_key": "default", "dedup_key": "aaaa000000000001", "action": "trigger", "rules": rules,
                    "body": {"event_action": "trigger", "dedup_key": "aaaa000000000001",
                             "payload": {"summary": "DiskFull", "source": HOSTILE, "severity": severity,
                                         "timestamp": "2026-11-25T16:54:58Z",
                                         "custom_details": {"labels": {"alertname": "DiskFull", "instance": HOSTILE},
                                                            "annotations": {}}},
                             "client": "Alertmanager", "client_url": "http://am:9093/#/alerts?receiver=r"}}],
        "invalid": [],
        "dropped": [{"fingerprint": "aaaa000000000002", "rule": "drop-test"}],
        "trace": [{"fingerprint": "aaaa000000000001", "alertname": "DiskFull",
                   "steps": [defaults, evening, broken, drop]},
                  {"fingerprint": "aaaa000000000002", "alertname": "Test",
                   "steps": [defaults, evening, broken, dropped]}],
        "template_errors": [{"fingerprint": f"aaaa00000000000{i}", "rule": "broken", "field": "summary",
                             "message": error} for i in (1, 2)],
    }


async def test_playground_traces_the_body_at_the_service_clock(make_client: Any, clock: FakeClock,
                                                               sender: FakeSender) -> None:
    """The exact trace of the loaded rules, evaluated at the injected clock's time; nothing sent or stored."""
    client = await make_client(rules=PLAY_RULES)
    resp = await client.post("/status/playground", json=play_body())  # 2023-11-14 22:13 UTC: in the window
    assert (resp.status, resp.headers["Cache-Control"]) == (200, "no-store")
    evening = {"rule": "late-evening", "matched": True, "skipped_by": None, "dropped": False, "stopped": False,
               "changes": [{"field": "severity", "old": "error", "new": "critical"}]}
    assert await resp.json() == expected_answer("critical", evening)
    clock.advance(3600)  # 23:13 UTC: outside it
    resp = await client.post("/status/playground", json=play_body())
    skipped = {**evening, "matched": False, "skipped_by": "when_time", "changes": []}
    assert await resp.json() == expected_answer("error", skipped)
    assert client.app[STATE].outbox.depth().queued == 0 and client.app[STATE].outbox.depth().dead == 0
    assert sender.calls == []


@pytest.mark.parametrize("body", [
    b"", b"{not json", b"[]", b'{"version": "3", "receiver": "r", "status": "firing", "groupKey": "", "alerts": []}',
    b'{"version": "4", "receiver": "r", "status": "firing", "groupKey": "k"}', b"\xff\xfe",
])
async def test_playground_refuses_bad_bodies_as_intake_does(make_client: Any, body: bytes) -> None:
    """A bad body gets intake's own status and message, word for word."""
    client = await make_client()
    headers = {"Content-Type": "application/json"}
    intake = await client.post("/v1/alertmanager", data=body, headers=headers)
    play = await client.post("/status/playground", data=body, headers=headers)
    assert (play.status, await play.json()) == (intake.status, await intake.json())
    assert play.status == 400


async def test_playground_refusals_by_message(make_client: Any) -> None:
    """The exact answers: an empty body, a wrong version, a compressed body."""
    client = await make_client()
    resp = await client.post("/status/playground", data=b" ")
    assert (resp.status, await resp.json()) == (
        400, {"error": "empty body: expected an Alertmanager webhook JSON object"})
    resp = await client.post("/status/playground", json={**play_body(), "version": "3"})
    assert (resp.status, await resp.json()) == (
        400, {"error": "unsupported webhook version '3': expected \"4\"", "field": "version"})
    resp = await client.post("/status/playground", data=b"{}", headers={"Content-Encoding": "gzip"})
    assert (resp.status, await resp.json()) == (
        415, {"error": "Content-Encoding is not supported: send the body uncompressed"})


async def test_playground_body_is_capped(make_client: Any) -> None:
    """Over 1 MiB (or server.body_limit when lower) is 413, declared or streamed, before any parsing."""
    client = await make_client()
    big = b" " * (1024 * 1024 + 1)
    resp = await client.post("/status/playground", data=io.BytesIO(big))
    assert (resp.status, await resp.json()) == (413, {"error": "body of 1048577 bytes is over the limit of 1048576"})

    async def chunks() -> Any:
        for _ in range(17):
            yield b" " * 65536

    resp = await client.post("/status/playground", data=chunks())
    assert (resp.status, await resp.json()) == (413, {"error": "body is over the limit of 1048576 bytes"})
    small = await make_client(body_limit=1000)
    resp = await small.post("/status/playground", data=b" " * 1001)
    assert (resp.status, await resp.json()) == (413, {"error": "body of 1001 bytes is over the limit of 1000"})
