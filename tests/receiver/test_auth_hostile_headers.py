"""Hostile ``Authorization`` bytes against pdrelay's app: an answer, never a crash, never an echo.

aiohttp hands header values to the app decoded as UTF-8 with ``surrogateescape``, so a byte that
is not UTF-8 reaches auth as a lone surrogate, which PyJWT cannot encode: a bearer value with such
a byte and two dots was a 500, before the refusal was recorded. Each case here is sent as raw
bytes over a socket (an HTTP client would clean them up) to ``create_app``'s app on a real
aiohttp server, and must be refused with its exact reason, counted and logged like any refusal.
The property test then throws any header bytes at the server ``pdrelay serve`` runs
(:func:`receiver.server.app_runner`), up for the whole module: the answer is 400 (for bytes the
HTTP parser refuses), 401 or 403, never a 5xx, and what the credential carries never shows in an
answer or in any log record.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.audit import MemoryAudit
from receiver.auth import Authenticator, Refusal
from receiver.auth.outcomes import MESSAGES
from receiver.server import BAD_REQUEST_BODY, app_runner
from receiver.settings import Settings, settings_from_mapping

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]

RULES = "version: 1\ndefaults: {routing_key: default, dedup: alert, severity: error}\nrules: []\n"
TOKEN = "intake-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
PASSWORD = "basic-password-0123456789"
JWT_SECRET = "jwt-hmac-secret-0123456789abcdef0123456789"
AUTH = {"bearer_tokens": [TOKEN], "admin_tokens": [ADMIN], "basic": {"username": "am", "password": PASSWORD},
        "jwt": {"algorithms": ["HS256"], "audience": "pdrelay", "issuer": "https://idp.example"}}
CONFIGURED = (TOKEN, ADMIN, PASSWORD, JWT_SECRET)
FIELD_LIMIT = 8190  # aiohttp's (and server.max_header_bytes') limit on one header line


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def relay_settings(tmp: Path) -> Settings:
    (tmp / "rules.yaml").write_text(RULES)
    return settings_from_mapping({"auth": AUTH, "security": {"jwt_secret": JWT_SECRET},
                                  "outbox": {"path": "outbox.db"}, "rules": {"paths": ["rules.yaml"]}},
                                 environ={}, base_dir=tmp)


class Records(logging.Handler):
    """Every record of the loggers it is attached to, rendered whole (message, fields, traceback).

    ``logger`` is a pdrelay logger of its own, to give the app.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.logger = logging.getLogger(f"pdrelay-test-{uuid.uuid4().hex}")
        self.logger.propagate = False
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = logging.Formatter().format(record) + json.dumps(vars(record), default=str)
        with self._lock:
            self.records.append(record)
            self.lines.append(text)

    def text(self, start: int = 0) -> str:
        """The rendered records from the ``start``-th on."""
        with self._lock:
            return "\n".join(self.lines[start:])



@pytest.fixture
def every_log() -> Iterator[Records]:
    with attached() as records:
        yield records


@contextlib.contextmanager
def attached() -> Iterator[Records]:
    """Records of the app's logger and of aiohttp's and asyncio's, at every level."""
    handler = Records()
    loggers = [handler.logger, logging.getLogger("aiohttp"), logging.getLogger("asyncio")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.removeHandler(handler)
            log.setLevel(level)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes


def parse(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, body, raw)


def request_bytes(method: str, path: str, authorization: list[bytes]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Content-Length: 0", b"Connection: close"]
    lines += [b"Authorization: " + value for value in authorization]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def send_raw(port: int | None, method: str, path: str, authorization: list[bytes]) -> Answer:
    """The request as these bytes, over a socket of its own, to 127.0.0.1:``port``."""
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_bytes(method, path, authorization))
        await writer.drain()
        return parse(await asyncio.wait_for(reader.read(), timeout=30))
    finally:
        writer.close()
        await writer.wait_closed()


# --------------------------------------------------------------------------- each hostile value, exactly

DEEP_HEADER = b64url(b"[" * 3000 + b"]" * 3000)  # nested past Python's recursion limit, under the line limit
OTHER_APP_JWT = jwt.encode({"sub": "x", "aud": "grafana", "iss": "https://idp.example", "exp": 2**31},
                           JWT_SECRET, "HS256").encode()


@pytest.mark.parametrize(("authorization", "reason"), [
    ([b"Bearer a\xff.b.c"], "invalid_token"),  # the finding: a 500 before auth was recorded
    ([b"Bearer \xe9\xe9.\xe9.\xe9"], "invalid_token"),  # latin-1
    ([b"Bearer " + "é.é.é".encode()], "invalid_token"),  # UTF-8, but no JWT is anything but ASCII
    ([b"Bearer " + OTHER_APP_JWT[:-2] + b"\xff\xfe"], "invalid_token"),
    ([b"Bearer " + DEEP_HEADER + b".e30.c2ln"], "malformed"),
    ([b"Bearer " + b"a" * 4000 + b"." + b"b" * 3000 + b".c"], "malformed"),
    ([b"Bearer " + b"x" * (FIELD_LIMIT - len("Authorization: Bearer ") - 10)], "invalid_token"),
    ([b"Basic \xff\xfe"], "malformed"),
    ([b"Basic " + b64(b"\xff\xfe:" + PASSWORD.encode())], "malformed"),  # user not UTF-8
    ([b"Basic " + b64("amé:".encode("latin-1") + PASSWORD.encode())], "malformed"),
    ([b"Basic " + b64(b"am:" + PASSWORD.encode())[:-1] + b"\xff"], "malformed"),
    ([b"Basic " + b64(b"am:" + b"p" * 5000)], "invalid_credentials"),
    ([b"\xff\xfe Bearer " + TOKEN.encode()], "unsupported_scheme"),
    ([b"Bearer " + TOKEN.encode()] * 100, "malformed"),  # many Authorization headers
    ([b"Bearer " + TOKEN.encode(), b"Bearer \xff.\xff.\xff"], "malformed"),
])
async def test_hostile_authorization_is_refused_recorded_and_counted(
    tmp_path: Path, aiohttp_client: ClientFactory, every_log: Records, authorization: list[bytes], reason: str
) -> None:
    registry = CollectorRegistry()
    app = create_app(relay_settings(tmp_path), Deps(registry=registry, log=every_log.logger, audit=MemoryAudit()))
    client = await aiohttp_client(app)
    answer = await send_raw(client.server.port, "POST", "/v1/alertmanager", authorization)
    assert (answer.status, json.loads(answer.body)) == (401, {"error": MESSAGES[reason]})
    assert answer.headers["www-authenticate"].startswith('Bearer realm="pdrelay"')
    assert registry.get_sample_value("pdrelay_auth_refused_total", {"group": "intake", "reason": reason}) == 1
    assert registry.get_sample_value("pdrelay_auth_total", {"group": "intake", "result": "refused"}) == 1
    refusals = [r for r in every_log.records if r.getMessage() == "auth refused"]
    assert [(vars(r)["reason"], vars(r)["group"], vars(r)["status"]) for r in refusals] == [(reason, "intake", 401)]
    assert [r for r in every_log.records if r.levelno >= logging.ERROR] == []
    logged = every_log.text()
    for value in authorization:
        credential = value.partition(b" ")[2]
        assert credential not in answer.raw
        assert credential.decode("utf-8", "surrogateescape") not in logged
    for secret in CONFIGURED:
        assert secret.encode() not in answer.raw and secret not in logged


async def test_a_header_line_over_the_limit_is_answered_by_the_server_and_never_reaches_auth(
    tmp_path: Path, every_log: Records
) -> None:
    """The server ``pdrelay serve`` runs answers it with a fixed 400, nothing of the value in it."""
    settings_ = relay_settings(tmp_path)
    registry = CollectorRegistry()
    app = create_app(settings_, Deps(registry=registry, log=every_log.logger, audit=MemoryAudit()))
    runner = app_runner(app, settings_.server, every_log.logger)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        credential = b"mk-over-the-limit-7f3a" + b"x" * FIELD_LIMIT
        answer = await send_raw(runner.addresses[0][1], "POST", "/v1/alertmanager", [b"Bearer " + credential])
    finally:
        await runner.cleanup()
    assert (answer.status, answer.body) == (400, BAD_REQUEST_BODY)
    assert b"mk-over" not in answer.raw and "mk-over" not in every_log.text()
    assert registry.get_sample_value("pdrelay_auth_total", {"group": "intake", "result": "refused"}) == 0


# --------------------------------------------------------------------------- any bytes (property)


@dataclass
class Running:
    host: str
    port: int
    registry: CollectorRegistry
    records: Records
    checked: int = 0  # log lines checked so far

    def refused(self, group: str) -> float:
        value = self.registry.get_sample_value("pdrelay_auth_total", {"group": group, "result": "refused"})
        assert value is not None
        return value


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """pdrelay's app and server on 127.0.0.1 (port 0), on its own event loop in a thread, for the whole module."""
    tmp = tmp_path_factory.mktemp("auth-hostile")
    with attached() as records:
        yield from _serve(tmp, records)


def _serve(tmp: Path, records: Records) -> Iterator[Running]:
    registry = CollectorRegistry()
    settings_ = relay_settings(tmp)
    app = create_app(settings_, Deps(registry=registry, log=records.logger, audit=MemoryAudit()))
    loop = asyncio.new_event_loop()
    runner = app_runner(app, settings_.server, records.logger)

    async def start() -> int:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port: int = runner.addresses[0][1]
        return port

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    yield Running("127.0.0.1", port, registry, records)
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=30)
    loop.close()


def exchange(host: str, port: int, data: bytes) -> Answer:
    with socket.create_connection((host, port), timeout=30) as conn:
        conn.sendall(data)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return parse(b"".join(chunks))


ENDPOINTS = [("POST", "/v1/alertmanager", "intake"), ("POST", "/v1/events", "events"),
             ("POST", "/-/reload", "admin"), ("GET", "/status", "admin"), ("GET", "/nope", "admin")]
Piece = Callable[[bytes], bytes]  # the marker of an example → bytes of a header value
Value = Callable[[bytes], tuple[bytes, bytes]]  # the marker → (a header value, what of it must never show)


def const(data: bytes) -> Piece:
    return lambda marker: data


def jwt_shaped(marker: bytes) -> bytes:
    return b64url(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64url(b'{"sub":"' + marker + b'"}') + b"." + marker


pieces: st.SearchStrategy[Piece] = st.one_of(
    st.binary(max_size=24).map(const),  # anything, control bytes included
    st.lists(st.integers(0x20, 0xFF), max_size=24).map(lambda xs: const(bytes(xs))),  # what the parser passes on
    st.sampled_from([
        b".", b"..", b":", b" ", b"\t", b"=", b"==", b"\xff", b"\xfe", b"\xc3", b"\xe9", b"\xed\xa0\x80",
        "é".encode(), b"\x00", b"\x7f", b"\x1b[2J", b"%ff", b"Bearer ", b"Basic ", b",", OTHER_APP_JWT,
    ]).map(const),
    st.sampled_from([lambda m: m, jwt_shaped, lambda m: DEEP_HEADER + b"." + m + b".x"]),
    st.integers(min_value=0, max_value=FIELD_LIMIT + 100).map(lambda n: lambda m: m + b"A" * n),
)
schemes = st.sampled_from([b"Bearer ", b"bearer ", b"Basic ", b"BASIC ", b"Token ", b"", b"Bearer", b"  Bearer  "])


def joined(scheme: bytes, parts: list[Piece]) -> Value:
    return lambda m: (scheme + m + b"".join(p(m) for p in parts), m)


def basic_of(user: bytes, password: bytes) -> Value:
    def make(m: bytes) -> tuple[bytes, bytes]:
        credential = b64(user + b":" + m + password)
        return b"Basic " + credential, credential
    return make


def jwt_of(header: bytes, payload: bytes) -> Value:
    def make(m: bytes) -> tuple[bytes, bytes]:
        credential = b64url(header) + b"." + b64url(payload + m) + b"." + b64url(m)
        return b"Bearer " + credential, credential
    return make


def dotted(a: bytes, b: bytes, c: bytes) -> Value:
    """A JWT's shape: three segments, here of any bytes."""
    return lambda m: (b"Bearer " + a + b"." + m + b + b"." + c, m)


segments = st.binary(max_size=16) | st.lists(st.integers(0x21, 0xFF), max_size=16).map(bytes)
values: st.SearchStrategy[Value] = st.one_of(
    st.builds(joined, schemes, st.lists(pieces, max_size=5)),
    st.builds(dotted, segments, segments, segments),
    st.builds(basic_of, st.binary(max_size=16) | st.just(b"am"), st.binary(max_size=16)),
    st.builds(jwt_of, st.binary(max_size=40) | st.just(b'{"alg":"HS256"}') | st.just(b'{"alg":"none"}'),
              st.binary(max_size=40) | st.just(b'{"aud":"pdrelay","exp":1,"sub":"')),
)
headers = st.one_of(st.lists(values, min_size=1, max_size=1), st.lists(values, max_size=3))
_markers = itertools.count()
_sent: list[str] = []  # what must never show, of every example so far


def http_parser_refuses(value: bytes) -> bool:
    """A header value aiohttp's parser answers 400 for, before any handler: a control byte or too long."""
    controls = set(range(0x20)) - {0x09} | {0x7F}
    return any(b in controls for b in value) or len(b"Authorization: " + value) > FIELD_LIMIT


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(endpoint=st.sampled_from(ENDPOINTS), authorization=headers)
def test_any_authorization_bytes_get_400_401_or_403_and_never_an_echo(
    running: Running, endpoint: tuple[str, str, str], authorization: list[Value]
) -> None:
    marker = f"mk{next(_markers):05d}{uuid.uuid4().hex[:8]}".encode()  # unique to this example
    made = [value(marker) for value in authorization]
    sent = [v.replace(b"\r", b"").replace(b"\n", b"") for v, _ in made]  # a line break ends the header
    method, path, group = endpoint
    before = running.refused(group)
    answer = exchange(running.host, running.port, request_bytes(method, path, sent))
    assert answer.status in (400, 401, 403), answer.raw[:300]
    if any(http_parser_refuses(v) for v in sent):
        event("refused by the HTTP parser")
        assert (answer.status, answer.body) == (400, BAD_REQUEST_BODY)  # before any handler: not auth's
        assert running.refused(group) == before
    else:
        event(f"reached auth: {json.loads(answer.body)['error']}")
        assert answer.status == 401  # no example carries a valid credential
        assert json.loads(answer.body)["error"] in MESSAGES.values()
        assert running.refused(group) == before + 1  # recorded and counted like any refusal
    never = [marker, *(w for _, w in made)]
    assert [w for w in never if w in answer.raw] == []
    _sent.extend(w.decode("utf-8", "surrogateescape") for w in never)
    # Every line is written before the answer goes out; one that came late would be checked next time.
    logged = running.records.text(running.checked)
    running.checked = len(running.records.lines)
    assert [w for w in _sent if w in logged] == []
    for secret in CONFIGURED:
        assert secret.encode() not in answer.raw and secret not in logged


# --------------------------------------------------------------------------- any text, to the authenticator itself

# any character, and lone surrogates often (no HTTP parser hands over "\ud800", but a caller may)
any_text = st.lists(st.characters(exclude_categories=()) | st.characters(categories=["Cs"]) | st.sampled_from(".: "),
                    max_size=60).map("".join)
texts = st.one_of(
    any_text,
    st.builds(lambda scheme, t: scheme + t, st.sampled_from(["Bearer ", "Basic ", "bearer "]), any_text),
    st.builds(lambda a, b, c: f"Bearer {a}.{b}.{c}", any_text, any_text, any_text),
)


@pytest.fixture(scope="module")
def authenticator(tmp_path_factory: pytest.TempPathFactory) -> Authenticator:
    settings_ = relay_settings(tmp_path_factory.mktemp("authenticator"))
    return Authenticator(settings_.auth, settings_.security)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(group=st.sampled_from(["intake", "events", "admin"]), authorization=st.lists(texts, max_size=2))
def test_the_authenticator_answers_any_text_with_a_refusal(
    authenticator: Authenticator, group: str, authorization: list[str]
) -> None:
    """Embedders call it with whatever text they hold: a refusal, never an exception."""
    found = authenticator.authenticate(group, authorization)
    assert isinstance(found, Refusal) and found.status == 401
