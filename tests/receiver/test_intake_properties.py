"""Property tests: arbitrary bytes and arbitrary JSON thrown at a running intake.

Whatever arrives, the answer is 200 (a notification, stored) or a 4xx with a JSON ``error``;
never a 5xx, never a crash, and the process does not grow without bound. Intake's bounds are
checked against a model: maps over ``server.max_labels``, JSON nested past what the decoder
follows, numbers out of range, any ``Content-Encoding``; each gets its exact answer, and a
refused body leaves nothing stored. The server runs on its own event loop in a thread, on
127.0.0.1, for the whole module.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.settings import OutboxSettings, RulesSettings, ServerSettings, Settings
from receiver.state import STATE

CAPTURED = Path(__file__).parent.parent / "e2e" / "captured"
REGISTRY: list[CollectorRegistry] = []  # the module server's, once it runs
VALID = json.loads((CAPTURED / "am-0.25_firing.json").read_text())
RULES = "version: 1\ndefaults: {routing_key: default, dedup: alert}\nrules: []\n"
BODY_LIMIT = 64 * 1024
MAX_LABELS = 12  # the real body's maps have up to 9
DEEP = "invalid JSON: nested too deeply (an Alertmanager webhook body is a few levels deep)"


@pytest.fixture(scope="module")
def intake_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("intake-properties")
    (tmp / "rules.yaml").write_text(RULES)
    settings_ = Settings(
        server=ServerSettings(body_limit=BODY_LIMIT, max_alerts=50, max_label_bytes=1024, max_labels=MAX_LABELS),
        outbox=OutboxSettings(path=tmp / "outbox.db"),
        rules=RulesSettings(paths=(tmp / "rules.yaml",)),
    )  # no routing key: dry-run, nothing leaves the machine
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        runner = web.AppRunner(create_app(settings_, Deps(registry=CollectorRegistry())))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["runner"] = runner
        holder["port"] = runner.addresses[0][1]
        REGISTRY.append(runner.app[STATE].metrics.registry)
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop).result(timeout=30)
    started.wait(30)
    yield f"http://127.0.0.1:{holder['port']}/v1/alertmanager"
    asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=30)
    loop.close()


def check_answer(response: httpx.Response) -> None:
    assert response.status_code in (200, 400, 413, 415), (response.status_code, response.text[:300])
    answer = response.json()
    if response.status_code == 200:
        assert answer["status"] == "accepted"
    else:
        assert isinstance(answer["error"], str) and answer["error"]
        assert set(answer) <= {"error", "field"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
FIELDS = ["version", "status", "receiver", "groupKey", "alerts", "groupLabels", "commonLabels",
          "commonAnnotations", "externalURL", "truncatedAlerts"]
ALERT_FIELDS = ["status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2048))
def test_arbitrary_bytes_get_an_answer_never_a_crash(intake_url: str, body: bytes) -> None:
    check_answer(httpx.post(intake_url, content=body, timeout=10))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values)
def test_arbitrary_json_gets_an_answer_never_a_crash(intake_url: str, body: Any) -> None:
    check_answer(httpx.post(intake_url, json=body, timeout=10))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), alert_field=st.sampled_from(ALERT_FIELDS), value=json_values,
       in_alert=st.booleans())
def test_a_real_body_with_one_field_replaced_by_anything(
    intake_url: str, field: str, alert_field: str, value: Any, in_alert: bool
) -> None:
    """Near-misses: a real Alertmanager body with one field (top level or in an alert) set to any JSON."""
    body = json.loads(json.dumps(VALID))
    if in_alert:
        body["alerts"][0][alert_field] = value
    else:
        body[field] = value
    check_answer(httpx.post(intake_url, json=body, timeout=10))


def test_memory_stays_bounded_under_many_bad_bodies(intake_url: str) -> None:
    """3,000 refused bodies and 300 stored ones later, the process has not grown by more than 40 MiB."""

    def rss_mib() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    with httpx.Client(timeout=10) as client:
        for i in range(50):  # warm up allocators and caches first
            client.post(intake_url, content=b"{" * (i + 1))
        before = rss_mib()
        for i in range(3000):
            check_answer(client.post(intake_url, content=b'{"version": "4", "alerts": [' + b"[" * (i % 500)))
        for i in range(300):
            body = json.loads(json.dumps(VALID))
            for n, alert in enumerate(body["alerts"]):
                alert["fingerprint"] = f"{i:08x}{n:08x}"
            check_answer(client.post(intake_url, json=body))
    growth = rss_mib() - before
    assert growth < 40, f"RSS grew by {growth:.1f} MiB"


# --------------------------------------------------------------------------- intake's bounds, against a model


def stored() -> tuple[float, float]:
    """(bodies accepted, events enqueued) so far: what a refused body must leave as it was."""
    registry = REGISTRY[-1]
    return (registry.get_sample_value("pdrelay_bodies_accepted_total") or 0.0,
            sum(s.value for m in registry.collect() for s in m.samples if s.name == "pdrelay_events_enqueued_total"))


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """POST ``body``; its status and JSON answer, checked against what was stored."""
    before = stored()
    response = httpx.post(url, content=body, headers={"Content-Type": "application/json", **(headers or {})},
                          timeout=10)
    check_answer(response)
    after = stored()
    if response.status_code == 200:
        assert after[0] == before[0] + 1
    else:
        assert after == before, "a refused body changed what is stored"
    return response.status_code, response.json()


def fresh(seed: int) -> dict[str, Any]:
    """The real body with fingerprints of its own (its events are new, never duplicates)."""
    body = json.loads(json.dumps(VALID))
    for n, alert in enumerate(body["alerts"]):
        alert["fingerprint"] = f"{seed:012x}{n:04x}"
    return body


label_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
maps = st.dictionaries(label_text, label_text, max_size=MAX_LABELS + 4)
MAP_PLACES = ["groupLabels", "commonLabels", "commonAnnotations", "routeLabels", "labels", "annotations"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(placed=st.dictionaries(st.sampled_from(MAP_PLACES), maps, max_size=3), seed=st.integers(0, 2 ** 40))
def test_maps_get_413_exactly_when_over_max_labels(intake_url: str, placed: dict[str, dict[str, str]],
                                                   seed: int) -> None:
    """Maps of any size with any text (quotes, backslashes, any character) in any place: the first map
    over server.max_labels, in the order intake checks them, is named with its count; else 200."""
    body = fresh(seed)
    for place, mapping in placed.items():
        if place in ("labels", "annotations"):
            body["alerts"][1][place] = mapping
        else:
            body[place] = mapping
    order = [(m, body.get(m, {})) for m in MAP_PLACES[:4]]
    for i, alert in enumerate(body["alerts"]):
        order += [(f"alerts[{i}].labels", alert["labels"]), (f"alerts[{i}].annotations", alert["annotations"])]
    over = next(((where, len(m)) for where, m in order if len(m) > MAX_LABELS), None)
    status, answer = post(intake_url, json.dumps(body).encode())
    if over is None:
        assert status == 200, answer
    else:
        where, count = over
        noun = "annotations" if where.endswith("nnotations") else "labels"
        assert (status, answer) == (413, {
            "error": f"{where}: {count} {noun} is over the limit of {MAX_LABELS} (server.max_labels)",
            "field": where})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(depth=st.integers(1, 3000) | st.sampled_from([5_000, 8_000]), opener=st.sampled_from(["[", '{"a":']),
       in_alert=st.booleans(), seed=st.integers(0, 2 ** 40))
def test_nesting_gets_200_or_the_exact_400(intake_url: str, depth: int, opener: str, in_alert: bool,
                                           seed: int) -> None:
    """A value nested ``depth`` levels in an unknown field: ignored as unknown fields are, or, past what the
    decoder follows, the exact 400; never a 500. (The decoder follows as deep as the interpreter's
    recursion limit allows: under 1,000 levels in pdrelay, about 2,000 while hypothesis runs, as it raises
    the limit; 5,000 levels are past it either way.)"""
    closer = "]" if opener == "[" else "}"
    body = fresh(seed)
    marker = "__nested__"
    (body["alerts"][0] if in_alert else body)["extra"] = marker
    raw = json.dumps(body).replace(json.dumps(marker), opener * depth + "1" * (opener != "[") + closer * depth)
    status, answer = post(intake_url, raw.encode())
    if depth >= 5_000:
        assert (status, answer) == (400, {"error": DEEP})
    elif status != 200:
        assert (status, answer) == (400, {"error": DEEP}), (depth, answer)


NUMBERS = st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1" * 400, "-" + "9" * 400,
                           "0.0", "-0", "1e-400", "18446744073709551616", "0x10", "01", "+1", ".5", "1."])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(number=NUMBERS, field=st.sampled_from(["truncatedAlerts", "extra", "alerts[0].extra", "labels-value"]),
       seed=st.integers(0, 2 ** 40))
def test_numbers_of_any_spelling_get_an_exact_answer(intake_url: str, number: str, field: str,
                                                     seed: int) -> None:
    """Huge, tiny, non-finite and malformed numbers: a 200 where they are ignored or fit, else a 400 naming
    the field, or the byte of malformed JSON; never a 500."""
    body = fresh(seed)
    marker = "__number__"
    if field == "truncatedAlerts":
        body["truncatedAlerts"] = marker
    elif field == "extra":
        body["extra"] = marker
    elif field == "alerts[0].extra":
        body["alerts"][0]["extra"] = marker
    else:
        body["alerts"][0]["labels"]["n"] = marker
    status, answer = post(intake_url, json.dumps(body).replace(json.dumps(marker), number).encode())
    if status == 200:  # an unknown field, or an integer truncatedAlerts (any size Python reads: 4,300 digits)
        assert field != "labels-value"
        return
    assert status == 400
    if answer["error"].startswith("invalid JSON: "):
        assert "field" not in answer
    else:
        expected = {"truncatedAlerts": "truncatedAlerts", "labels-value": "alerts[0].labels"}[field]
        assert answer["field"] == expected, answer


encodings = st.lists(st.sampled_from(["gzip", "deflate", "br", "zstd", "identity", "Identity", "x-gzip",
                                      "compress", "", "*"]), min_size=1, max_size=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=encodings, seed=st.integers(0, 2 ** 40), compress=st.booleans())
def test_any_content_encoding_but_identity_gets_415(intake_url: str, parts: list[str], seed: int,
                                                    compress: bool) -> None:
    """Content-Encoding: any list of codings; identity (or nothing) alone is accepted, anything else is
    refused 415 unread, whether the body is compressed or not; nothing stored."""
    raw = json.dumps(fresh(seed)).encode()
    if compress:
        raw = gzip.compress(raw)
    status, answer = post(intake_url, raw, {"Content-Encoding": ",".join(parts)})
    if all(p.strip().lower() in ("", "identity") for p in parts):
        assert status == (400 if compress else 200), answer
    else:
        assert (status, answer) == (415, {
            "error": "Content-Encoding is not supported: send the body uncompressed, as Alertmanager does"})
