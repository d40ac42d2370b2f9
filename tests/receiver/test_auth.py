"""Inbound auth: every method accepted and refused through a real aiohttp server, the answers'
status / JSON / ``WWW-Authenticate``, endpoint restrictions, no-auth passthrough, that no secret
ever leaks into an answer or a log line, and the ``auth:`` config errors (exact messages)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from prometheus_client import CollectorRegistry

import receiver.auth.methods as auth_module
from receiver.app import Deps, create_app
from receiver.audit import AuditSink, MemoryAudit, NullAudit
from receiver.auth import (
    REFUSAL_REASONS,
    AuthDecision,
    Authenticator,
    auth_middleware,
    identity_of,
)
from receiver.cli import serve as serve_cli
from receiver.errors import ConfigError
from receiver.pagerduty.events import classify
from receiver.settings import Settings, settings_from_mapping
from receiver.tls import PeerCertificate, server_ssl_context
from tests.fakes import FakeSender
from tests.tls_support import CertAuthority

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]

CAPTURED = Path(__file__).parent.parent / "e2e" / "captured"
RULES = "version: 1\ndefaults: {routing_key: default, dedup: alert, severity: error}\nrules: []\n"
TOKEN_A = "intake-token-A-0123456789abcdef"
TOKEN_B = "intake-token-B-fedcba9876543210"
ADMIN = "admin-token-00112233445566778899"
PASSWORD = "s3cret-basic-password-xyz"
JWT_SECRET = "jwt-hmac-secret-0123456789abcdef0123456789"
AUDIENCE = "pdrelay"
ISSUER = "https://issuer.example"
BOUND = {"audience": AUDIENCE, "issuer": ISSUER}  # every auth.jwt needs both
PROTECTED_POSTS = ("/v1/alertmanager", "/v1/events", "/-/reload")


def sha8(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def challenges(resp: Any) -> str:
    return ", ".join(resp.headers.getall("WWW-Authenticate", []))


# --------------------------------------------------------------------------- a minimal app around the middleware


@dataclass
class Mini:
    client: TestClient[Any, Any]
    decisions: list[AuthDecision]

    async def call(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        gets = ("/status", "/healthz", "/readyz", "/metrics", "/nope")
        method = self.client.get if path in gets else self.client.post
        resp = await method(path, headers=headers or {})
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def _echo(request: web.Request) -> web.Response:
    return web.json_response({"identity": identity_of(request)})


MiniFactory = Callable[..., Awaitable[Mini]]


@pytest.fixture
def mini(tmp_path: Path, aiohttp_client: ClientFactory) -> MiniFactory:
    """An app with only the auth middleware and handlers that answer with the caller's identity."""

    async def make(auth: dict[str, Any] | None, security: dict[str, Any] | None = None) -> Mini:
        settings = settings_from_mapping({"auth": auth, "security": security}, environ={}, base_dir=tmp_path)
        decisions: list[AuthDecision] = []
        app = web.Application(middlewares=[auth_middleware(Authenticator(settings.auth, settings.security),
                                                           decisions.append)])
        for path in PROTECTED_POSTS:
            app.router.add_post(path, _echo)
        for path in ("/status", "/healthz", "/readyz", "/metrics"):
            app.router.add_get(path, _echo)
        return Mini(await aiohttp_client(app), decisions)

    return make


# --------------------------------------------------------------------------- the whole pdrelay app


class Records(logging.Handler):
    """A logger of its own whose records the test reads."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(f"pdrelay-test-{uuid.uuid4().hex}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(json.dumps(vars(r), default=str) + r.getMessage() for r in self.records)


@dataclass
class Full:
    client: TestClient[Any, Any]
    registry: CollectorRegistry
    logs: Records
    audited: MemoryAudit
    settings: Settings

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        assert value is not None, (name, labels)
        return value


FullFactory = Callable[..., Awaitable[Full]]


@pytest.fixture
def log_records() -> Iterator[Records]:
    handler = Records()
    handler.logger.addHandler(handler)
    yield handler
    handler.logger.removeHandler(handler)


@pytest.fixture
def full(tmp_path: Path, aiohttp_client: ClientFactory, log_records: Records) -> FullFactory:
    """pdrelay's own app (``create_app``) with an auth section."""

    async def make(auth: dict[str, Any] | None, security: dict[str, Any] | None = None,
                   audit: AuditSink | None = None) -> Full:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES)
        settings = settings_from_mapping({
            "auth": auth, "security": security,
            "outbox": {"path": str(tmp_path / "outbox.db")}, "rules": {"paths": [str(rules)]},
            "pagerduty": {"routing_keys": {"default": "k" * 32}},
        }, environ={}, base_dir=tmp_path)
        registry = CollectorRegistry()
        audited = MemoryAudit()
        deps = Deps(registry=registry, sender=FakeSender(lambda body: classify(503, b"down")),
                    log=log_records.logger, audit=audit or audited)
        client = await aiohttp_client(create_app(settings, deps))
        return Full(client, registry, log_records, audited, settings)

    return make


def alertmanager_body() -> bytes:
    return (CAPTURED / "am-0.25_firing.json").read_bytes()


# --------------------------------------------------------------------------- bearer and admin tokens

TOKENS = {"bearer_tokens": [TOKEN_A, TOKEN_B], "admin_tokens": [ADMIN]}


async def test_bearer_rotation_both_tokens_work(mini: MiniFactory) -> None:
    """Two configured bearer tokens (old and new) are both accepted; the identity names the token's hash."""
    m = await mini(TOKENS)
    for token in (TOKEN_A, TOKEN_B):
        assert await m.call("/v1/alertmanager", bearer(token)) == (200, {"identity": f"bearer:{sha8(token)}"})
        assert await m.call("/v1/events", bearer(token)) == (200, {"identity": f"bearer:{sha8(token)}"})
    assert [d.reason for d in m.decisions] == ["ok"] * 4
    assert m.decisions[0] == AuthDecision(True, 200, "intake", "bearer", f"bearer:{sha8(TOKEN_A)}", "ok", "127.0.0.1")


async def test_wrong_bearer_token_is_401_with_challenge(mini: MiniFactory) -> None:
    """A token that is not configured: 401, a JSON error and an RFC 6750 invalid_token challenge."""
    m = await mini(TOKENS)
    resp = await m.client.post("/v1/alertmanager", headers=bearer("not-a-configured-token-123"))
    assert (resp.status, await resp.json()) == (401, {"error": "invalid bearer token"})
    assert resp.headers.getall("WWW-Authenticate") == ['Bearer realm="pdrelay", error="invalid_token"']
    assert m.decisions == [AuthDecision(False, 401, "intake", "bearer", None, "invalid_token", "127.0.0.1")]


async def test_missing_credentials_challenge_every_accepted_scheme(mini: MiniFactory) -> None:
    """No Authorization header: 401 naming Bearer and Basic (each accepted here), without an error code."""
    m = await mini({**TOKENS, "basic": {"username": "am", "password": PASSWORD}})
    resp = await m.client.post("/v1/alertmanager")
    assert resp.status == 401
    assert await resp.json() == {"error": "authentication required"}
    assert challenges(resp) == 'Bearer realm="pdrelay", Basic realm="pdrelay", charset="UTF-8"'
    assert m.decisions[-1].reason == "missing" and m.decisions[-1].method is None


async def test_intake_token_may_not_reload_admin_token_may(mini: MiniFactory) -> None:
    """/-/reload and /status are admin: an intake token gets 403, an admin token gets through (and intake too)."""
    m = await mini(TOKENS)
    status, body = await m.call("/-/reload", bearer(TOKEN_A))
    assert (status, body) == (403, {"error": "this identity may not use this endpoint"})
    assert m.decisions[-1] == AuthDecision(False, 403, "admin", "bearer", f"bearer:{sha8(TOKEN_A)}", "forbidden",
                                           "127.0.0.1")
    assert (await m.call("/status", bearer(TOKEN_B)))[0] == 403
    admin = {"identity": f"admin:{sha8(ADMIN)}"}
    assert await m.call("/-/reload", bearer(ADMIN)) == (200, admin)
    assert await m.call("/status", bearer(ADMIN)) == (200, admin)
    assert await m.call("/v1/alertmanager", bearer(ADMIN)) == (200, admin)


async def test_open_paths_need_nothing_and_unknown_paths_are_admin(mini: MiniFactory) -> None:
    """Probes and scrapes stay open; a path pdrelay does not list counts as admin (never open by accident)."""
    m = await mini(TOKENS)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert await m.call(path) == (200, {"identity": "anonymous"})
    assert m.decisions == []
    assert (await m.call("/nope"))[0] == 401
    assert (await m.call("/nope", bearer(TOKEN_A)))[0] == 403
    assert (await m.call("/nope", bearer(ADMIN)))[0] == 404
    assert [d.group for d in m.decisions] == ["admin"] * 3


async def test_credentials_in_the_query_string_are_refused_unread(mini: MiniFactory) -> None:
    """``?access_token=…`` is refused with 400 even beside a valid header; the value is never used."""
    m = await mini(TOKENS)
    for query in (f"access_token={TOKEN_A}", f"token={ADMIN}", "API_KEY=x"):
        resp = await m.client.post(f"/v1/alertmanager?{query}", headers=bearer(TOKEN_A))
        assert resp.status == 400
        text = await resp.text()
        assert json.loads(text) == {"error": "credentials in the URL are refused (and were not read): "
                                             "send them in the Authorization header"}
        assert TOKEN_A not in text and ADMIN not in text
        assert challenges(resp) == 'Bearer realm="pdrelay", error="invalid_request"'
    assert {d.reason for d in m.decisions} == {"credentials_in_query"}
    assert (await m.client.post("/v1/alertmanager?dry=1", headers=bearer(TOKEN_A))).status == 200


async def test_malformed_authorization_headers(mini: MiniFactory) -> None:
    """Empty Bearer, an unknown scheme and two Authorization headers are each refused with their reason."""
    m = await mini(TOKENS)
    cases: list[tuple[Any, str, str]] = [
        ({"Authorization": "Bearer"}, "malformed", "malformed Authorization header"),
        ({"Authorization": "Bearer    "}, "malformed", "malformed Authorization header"),
        ({"Authorization": f"Token {TOKEN_A}"}, "unsupported_scheme", "unsupported authorization scheme"),
        ([("Authorization", f"Bearer {TOKEN_A}"), ("Authorization", f"Bearer {TOKEN_B}")], "malformed",
         "malformed Authorization header"),
    ]
    for headers, reason, message in cases:
        resp = await m.client.post("/v1/alertmanager", headers=headers)
        assert (resp.status, await resp.json()) == (401, {"error": message})
        assert m.decisions[-1].reason == reason
    # The scheme is case-insensitive (RFC 9110 §11.1).
    assert (await m.call("/v1/alertmanager", {"Authorization": f"bEaReR {TOKEN_A}"}))[0] == 200


async def test_every_token_is_compared_whichever_matches(mini: MiniFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Constant time: each presented token is compared (as SHA-256 digests) with every configured token."""
    calls: list[tuple[int, int]] = []
    original = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return original(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", counting)
    m = await mini(TOKENS)
    for token in (TOKEN_A, TOKEN_B, ADMIN, "x" * 40, "short"):
        calls.clear()
        await m.call("/v1/alertmanager", bearer(token))
        assert calls == [(32, 32)] * 3, token
    m = await mini({"basic": [{"username": "a", "password": PASSWORD}, {"username": "b", "password": PASSWORD}]})
    for user in ("a", "b", "c"):
        calls.clear()
        await m.call("/v1/alertmanager", basic(user, PASSWORD))
        assert calls == [(32, 32)] * 4, user


# --------------------------------------------------------------------------- basic


BASIC = {"basic": [{"username": "alertmanager", "password": PASSWORD}, {"username": "ops", "password": ADMIN}]}


async def test_basic_accepted_and_refused(mini: MiniFactory) -> None:
    """Good username + password → basic:<user>; a wrong password or user → 401 with the Basic challenge."""
    m = await mini(BASIC)
    assert await m.call("/v1/alertmanager", basic("alertmanager", PASSWORD)) == (
        200, {"identity": "basic:alertmanager"})
    assert await m.call("/v1/events", basic("ops", ADMIN)) == (200, {"identity": "basic:ops"})
    for user, password in (("alertmanager", "wrong-password"), ("ops", PASSWORD), ("nobody", PASSWORD),
                           ("alertmanager", "")):
        resp = await m.client.post("/v1/alertmanager", headers=basic(user, password))
        assert (resp.status, await resp.json()) == (401, {"error": "invalid username or password"})
        assert challenges(resp) == 'Basic realm="pdrelay", charset="UTF-8"'
        assert m.decisions[-1].reason == "invalid_credentials" and m.decisions[-1].method == "basic"
    assert (await m.call("/-/reload", basic("alertmanager", PASSWORD)))[0] == 403


@pytest.mark.parametrize("value", [
    "Basic !!!not-base64!!!",
    "Basic " + base64.b64encode(b"no-colon-here").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),  # not UTF-8
    "Basic " + base64.b64encode(b"alertmanager:" + PASSWORD.encode()).decode()[:-2],  # cut padding
    "Basic",
])
async def test_malformed_basic_is_401_with_a_clear_message(mini: MiniFactory, value: str) -> None:
    m = await mini(BASIC)
    resp = await m.client.post("/v1/alertmanager", headers={"Authorization": value})
    assert (resp.status, await resp.json()) == (401, {"error": "malformed Authorization header"})
    assert m.decisions[-1].reason == "malformed"


# --------------------------------------------------------------------------- JWT


@dataclass(frozen=True)
class JWTCase:
    alg: str
    auth: dict[str, Any]
    security: dict[str, Any]
    key: Any  # signs good tokens
    other_key: Any  # signs tokens whose signature must not verify


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    return (rsa.generate_private_key(public_exponent=65537, key_size=2048),
            rsa.generate_private_key(public_exponent=65537, key_size=2048))


def public_pem(key: Any) -> bytes:
    pem: bytes = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem


@pytest.fixture(params=["HS256", "RS256", "ES256"])
def jwt_case(request: pytest.FixtureRequest, tmp_path: Path,
             rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]) -> JWTCase:
    alg: str = request.param
    base = {"algorithms": [alg], "audience": AUDIENCE, "issuer": ISSUER, "leeway": "30s"}
    if alg == "HS256":
        return JWTCase(alg, base, {"jwt_secret": JWT_SECRET}, JWT_SECRET.encode(), b"another-secret-" * 4)
    key: Any
    other: Any
    if alg == "RS256":
        key, other = rsa_keys
    else:
        key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "jwt.pub").write_bytes(public_pem(key))
    return JWTCase(alg, {**base, "public_key_file": "jwt.pub"}, {}, key, other)


def make_jwt(key: Any, alg: str, **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": "ci-bot", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    payload.update(claims)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=alg)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_jwt(alg: str, payload: dict[str, Any], key: bytes | None = None) -> str:
    """A token built by hand: ``alg: none`` or HMAC with any bytes as key (PyJWT refuses to forge these)."""
    head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode()) + "." + b64url(json.dumps(payload).encode())
    sig = b"" if key is None else hmac.new(key, head.encode(), hashlib.sha256).digest()
    return head + "." + b64url(sig)


async def test_jwt_accepted_with_identity_and_default_rights(mini: MiniFactory, jwt_case: JWTCase) -> None:
    """A valid token: jwt:<sub>, intake + events without a scope claim, 403 on admin (with insufficient_scope)."""
    m = await mini({"jwt": jwt_case.auth}, jwt_case.security)
    token = make_jwt(jwt_case.key, jwt_case.alg)
    assert await m.call("/v1/alertmanager", bearer(token)) == (200, {"identity": "jwt:ci-bot"})
    assert await m.call("/v1/events", bearer(token)) == (200, {"identity": "jwt:ci-bot"})
    resp = await m.client.post("/-/reload", headers=bearer(token))
    assert resp.status == 403
    assert challenges(resp) == 'Bearer realm="pdrelay", error="insufficient_scope", scope="pdrelay:admin"'
    assert m.decisions[-1] == AuthDecision(False, 403, "admin", "jwt", "jwt:ci-bot", "forbidden", "127.0.0.1")
    no_sub = make_jwt(jwt_case.key, jwt_case.alg, sub=None)
    assert await m.call("/v1/alertmanager", bearer(no_sub)) == (200, {"identity": f"jwt:{ISSUER}"})


@pytest.mark.parametrize(("claims", "reason", "message"), [
    ({"exp": -100}, "expired", "token expired"),
    ({"nbf": 300}, "not_yet_valid", "token not yet valid"),
    ({"iat": 300}, "not_yet_valid", "token not yet valid"),
    ({"aud": "someone-else"}, "wrong_audience", "token audience does not match"),
    ({"aud": None}, "wrong_audience", "token audience does not match"),
    ({"iss": "https://evil.example"}, "wrong_issuer", "token issuer does not match"),
    ({"iss": None}, "wrong_issuer", "token issuer does not match"),
    ({"exp": None}, "missing_claim", "token lacks a required claim"),
    ({"scope": {"not": "a list"}}, "malformed", "malformed Authorization header"),
])
async def test_jwt_refused_with_a_clear_reason(mini: MiniFactory, jwt_case: JWTCase, claims: dict[str, Any],
                                               reason: str, message: str) -> None:
    m = await mini({"jwt": jwt_case.auth}, jwt_case.security)
    now = int(time.time())
    times = {k: now + v for k, v in claims.items() if k in ("exp", "nbf", "iat") and v is not None}
    token = make_jwt(jwt_case.key, jwt_case.alg, **{**claims, **times})
    resp = await m.client.post("/v1/alertmanager", headers=bearer(token))
    assert (resp.status, await resp.json()) == (401, {"error": message})
    assert challenges(resp) == 'Bearer realm="pdrelay", error="invalid_token"'
    assert m.decisions[-1] == AuthDecision(False, 401, "intake", "jwt", None, reason, "127.0.0.1")


async def test_jwt_leeway_covers_small_clock_skew(mini: MiniFactory, jwt_case: JWTCase) -> None:
    """exp 10 s ago and nbf / iat 10 s ahead pass with the 30 s leeway; 60 s does not."""
    m = await mini({"jwt": jwt_case.auth}, jwt_case.security)
    now = int(time.time())
    for claims in ({"exp": now - 10}, {"nbf": now + 10}, {"iat": now + 10}):
        assert (await m.call("/v1/alertmanager", bearer(make_jwt(jwt_case.key, jwt_case.alg, **claims))))[0] == 200
    for claims in ({"exp": now - 60}, {"nbf": now + 60}):
        assert (await m.call("/v1/alertmanager", bearer(make_jwt(jwt_case.key, jwt_case.alg, **claims))))[0] == 401


async def test_jwt_bad_signature(mini: MiniFactory, jwt_case: JWTCase) -> None:
    m = await mini({"jwt": jwt_case.auth}, jwt_case.security)
    forged = make_jwt(jwt_case.other_key, jwt_case.alg)
    resp = await m.client.post("/v1/alertmanager", headers=bearer(forged))
    assert (resp.status, await resp.json()) == (401, {"error": "token signature does not verify"})
    assert m.decisions[-1].reason == "bad_signature"
    good = make_jwt(jwt_case.key, jwt_case.alg).split(".")
    tampered = ".".join([good[0], b64url(json.dumps({"sub": "root", "exp": 2**31}).encode()), good[2]])
    assert (await m.call("/v1/alertmanager", bearer(tampered)))[1] == {"error": "token signature does not verify"}


async def test_jwt_alg_none_and_algorithm_confusion_are_refused(mini: MiniFactory, jwt_case: JWTCase) -> None:
    """``alg: none`` is never accepted; an HS256 token against an RS/ES key (signed with the public key) neither."""
    m = await mini({"jwt": jwt_case.auth}, jwt_case.security)
    payload = {"sub": "mallory", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300}
    forged = [unsigned_jwt("none", payload), unsigned_jwt("HS512", payload, JWT_SECRET.encode())]
    if jwt_case.alg != "HS256":
        forged.append(unsigned_jwt("HS256", payload, public_pem(jwt_case.key)))
    for token in forged:
        resp = await m.client.post("/v1/alertmanager", headers=bearer(token))
        assert (resp.status, await resp.json()) == (401, {"error": "token algorithm not allowed"})
        assert m.decisions[-1].reason == "algorithm_not_allowed"


async def test_hs256_token_refused_when_only_rs256_is_allowed(
    mini: MiniFactory, tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    (tmp_path / "rs.pub").write_bytes(public_pem(rsa_keys[0]))
    m = await mini({"jwt": {"algorithms": ["RS256"], "public_key_file": "rs.pub", **BOUND}},
                   {"jwt_secret": JWT_SECRET})  # a secret exists, but RS256 alone is allowed
    assert (await m.call("/v1/alertmanager", bearer(make_jwt(rsa_keys[0], "RS256"))))[0] == 200
    status, body = await m.call("/v1/alertmanager", bearer(make_jwt(JWT_SECRET.encode(), "HS256")))
    assert (status, body) == (401, {"error": "token algorithm not allowed"})


@pytest.mark.parametrize(("scope", "allowed"), [
    ("pdrelay:admin", {"admin"}),
    ("pdrelay:intake pdrelay:events pdrelay:admin", {"intake", "events", "admin"}),
    (["pdrelay:intake"], {"intake"}),
    ("intake events admin", set()),  # bare words are other apps' scopes
    ("openid profile", set()),
    ([], set()),
])
async def test_jwt_scope_claim_decides_the_groups(mini: MiniFactory, scope: Any, allowed: set[str]) -> None:
    m = await mini({"jwt": {"algorithms": ["HS256"], "scope_claim": "pdrelay_scope", **BOUND}},
                   {"jwt_secret": JWT_SECRET})
    token = make_jwt(JWT_SECRET.encode(), "HS256", pdrelay_scope=scope)
    for path, group in (("/v1/alertmanager", "intake"), ("/v1/events", "events"), ("/-/reload", "admin")):
        status, _ = await m.call(path, bearer(token))
        assert status == (200 if group in allowed else 403), (path, scope)


async def test_jwt_and_bearer_tokens_together(mini: MiniFactory) -> None:
    """A configured bearer token that happens to contain two dots is a bearer token, not a JWT."""
    dotted = "abc.defghijklmnop.qrstuvwxyz"
    m = await mini({"bearer_tokens": [dotted], "jwt": {"algorithms": ["HS256"], **BOUND}}, {"jwt_secret": JWT_SECRET})
    assert await m.call("/v1/alertmanager", bearer(dotted)) == (200, {"identity": f"bearer:{sha8(dotted)}"})
    assert await m.call("/v1/alertmanager", bearer(make_jwt(JWT_SECRET.encode(), "HS256"))) == (
        200, {"identity": "jwt:ci-bot"})
    assert (await m.call("/v1/alertmanager", bearer("a.b.c")))[1] == {"error": "malformed Authorization header"}
    assert (await m.call("/v1/alertmanager", bearer("not-a-jwt-nor-a-token")))[1] == {"error": "invalid bearer token"}


# --------------------------------------------------------------------------- endpoint restrictions


async def test_endpoints_restrict_the_methods_of_a_group(mini: MiniFactory) -> None:
    """``auth.endpoints.intake: [jwt]``: tokens and passwords are refused there; events accepts everything."""
    m = await mini({**TOKENS, **BASIC, "jwt": {"algorithms": ["HS256"], **BOUND},
                    "endpoints": {"intake": ["jwt"], "admin": ["admin_token"]}}, {"jwt_secret": JWT_SECRET})
    token = make_jwt(JWT_SECRET.encode(), "HS256", scope="pdrelay:intake pdrelay:events pdrelay:admin")
    assert (await m.call("/v1/alertmanager", bearer(token)))[0] == 200
    for headers, method in ((bearer(TOKEN_A), "bearer"), (bearer(ADMIN), "admin_token"),
                            (basic("alertmanager", PASSWORD), "basic")):
        resp = await m.client.post("/v1/alertmanager", headers=headers)
        assert (resp.status, await resp.json()) == (401, {
            "error": "this kind of credential is not accepted for this endpoint"})
        assert challenges(resp) == 'Bearer realm="pdrelay"'  # Basic is not offered here
        assert (m.decisions[-1].reason, m.decisions[-1].method) == ("method_not_accepted", method)
    assert (await m.call("/-/reload", bearer(token)))[0] == 401  # admin: admin tokens only
    assert (await m.call("/-/reload", bearer(ADMIN)))[0] == 200
    for headers in (bearer(TOKEN_A), basic("alertmanager", PASSWORD), bearer(token)):
        assert (await m.call("/v1/events", headers))[0] == 200  # events: not listed, every method


# --------------------------------------------------------------------------- no auth


async def test_no_auth_configured_passes_everything(mini: MiniFactory, full: FullFactory) -> None:
    """Without an auth section every endpoint answers as before, the caller is anonymous, nothing is counted."""
    m = await mini(None)
    for path in (*PROTECTED_POSTS, "/status"):
        assert await m.call(path, {"Authorization": "Bearer whatever"}) == (200, {"identity": "anonymous"})
    assert m.decisions == []
    f = await full(None)
    assert not f.client.app.middlewares
    assert (await f.client.post("/v1/alertmanager", data=alertmanager_body())).status == 200
    assert (await f.client.post("/-/reload")).status == 200
    assert (await f.client.get("/status")).status == 200
    assert f.sample("pdrelay_auth_total", group="intake", result="allowed") == 0


# --------------------------------------------------------------------------- the whole app: metrics, logs, audit


async def test_pdrelay_app_counts_logs_and_audits_refusals(full: FullFactory) -> None:
    f = await full({**TOKENS})
    body = alertmanager_body()
    assert (await f.client.post("/v1/alertmanager", data=body, headers=bearer(TOKEN_A))).status == 200
    assert (await f.client.post("/v1/alertmanager", data=body, headers=bearer("wrong-token-0123456789"))).status == 401
    assert (await f.client.post("/v1/alertmanager", data=body)).status == 401
    assert (await f.client.post("/-/reload", headers=bearer(TOKEN_B))).status == 403
    assert (await f.client.post("/-/reload", headers=bearer(ADMIN))).status == 200
    assert (await f.client.get("/metrics")).status == 200
    assert f.sample("pdrelay_auth_total", group="intake", result="allowed") == 1
    assert f.sample("pdrelay_auth_total", group="intake", result="refused") == 2
    assert f.sample("pdrelay_auth_total", group="admin", result="refused") == 1
    assert f.sample("pdrelay_auth_total", group="admin", result="allowed") == 1
    assert f.sample("pdrelay_auth_refused_total", group="intake", reason="invalid_token") == 1
    assert f.sample("pdrelay_auth_refused_total", group="intake", reason="missing") == 1
    assert f.sample("pdrelay_auth_refused_total", group="admin", reason="forbidden") == 1
    for group in ("intake", "events", "admin"):  # every series exists from the start
        for reason in REFUSAL_REASONS:
            f.sample("pdrelay_auth_refused_total", group=group, reason=reason)
    assert [(e["reason"], e["actor"]) for e in f.audited.entries if e["event"] == "auth.refused"] == [
        ("invalid_token", None), ("missing", None), ("forbidden", f"bearer:{sha8(TOKEN_B)}")]
    refusals = [r for r in f.logs.records if r.getMessage() == "auth refused"]
    assert [(r.levelno, vars(r)["reason"], vars(r)["identity"], vars(r)["remote"]) for r in refusals] == [
        (logging.WARNING, "invalid_token", None, "127.0.0.1"), (logging.WARNING, "missing", None, "127.0.0.1"),
        (logging.WARNING, "forbidden", f"bearer:{sha8(TOKEN_B)}", "127.0.0.1")]


async def test_a_failing_audit_hook_does_not_change_the_answer(full: FullFactory) -> None:
    """The refusal still goes out (and is logged) when the audit sink raises."""

    class Broken(NullAudit):
        def record(self, event: str, *, actor: str | None = None, **fields: object) -> None:
            raise OSError("disk full")

    f = await full({**TOKENS}, audit=Broken())
    resp = await f.client.post("/v1/alertmanager", headers=bearer("wrong-token-0123456789"))
    assert resp.status == 401
    # the first failure is the start's rules.loaded entry
    assert [r.getMessage() for r in f.logs.records] == ["audit record failed; the entry is lost", "auth refused",
                                                        "audit record failed; the entry is lost"]
    assert f.registry.get_sample_value("pdrelay_audit_errors_total") == 2


# --------------------------------------------------------------------------- secrets never leak


async def test_no_secret_in_any_answer_or_log_line(full: FullFactory, tmp_path: Path) -> None:
    """Configured and presented credentials never appear in a body, a header or a log record."""
    f = await full({**TOKENS, **BASIC, "jwt": {"algorithms": ["HS256"], **BOUND}},
                   {"jwt_secret": JWT_SECRET})
    expired = make_jwt(JWT_SECRET.encode(), "HS256", exp=int(time.time()) - 3600)
    forged = make_jwt(b"presented-wrong-secret-0123456789abcdef", "HS256")
    presented = ["presented-wrong-token-0123456789", "presented-wrong-password", expired, forged,
                 base64.b64encode(b"alertmanager:presented-wrong-password").decode()]
    requests: list[dict[str, str]] = [
        bearer(presented[0]), basic("alertmanager", presented[1]), bearer(expired), bearer(forged),
        bearer(TOKEN_A), bearer(ADMIN), basic("alertmanager", PASSWORD), basic("ops", ADMIN),
        {"Authorization": "Basic " + presented[4][:-3]},
    ]
    seen: list[str] = []
    for headers in requests:
        for path in ("/v1/alertmanager", "/-/reload", "/v1/events"):
            resp = await f.client.post(f"{path}", headers=headers)
            seen += [await resp.text(), *(f"{k}: {v}" for k, v in resp.headers.items())]
        resp = await f.client.post(f"/v1/alertmanager?access_token={presented[0]}")
        seen += [await resp.text(), *(f"{k}: {v}" for k, v in resp.headers.items())]
    seen.append(f.logs.text())
    seen.append(await (await f.client.get("/metrics")).text())
    seen.append(repr(f.settings.auth) + repr(f.settings.security))
    secrets = [*f.settings.secrets(), *presented, PASSWORD, JWT_SECRET]
    assert JWT_SECRET in f.settings.secrets() and PASSWORD in f.settings.secrets()
    for text in seen:
        for secret in secrets:
            assert secret not in text
            assert secret.split(".")[-1] not in text  # nor a JWT's signature


# --------------------------------------------------------------------------- the pieces on their own


def test_peer_certificate_names_from_der() -> None:
    ca = CertAuthority("test-ca")
    cert = ca.issue("alertmanager", client=True, org="Acme")
    der = cert.cert.public_bytes(serialization.Encoding.DER)
    assert PeerCertificate.from_der(der) == PeerCertificate("alertmanager", "O=Acme,CN=alertmanager")


def test_describe_lists_the_methods_of_each_group(tmp_path: Path) -> None:
    s = settings_from_mapping({"auth": {**TOKENS, **BASIC, "endpoints": {"admin": ["admin_token"]}}}, environ={})
    assert Authenticator(s.auth, s.security).describe() == {
        "intake": ["bearer", "basic", "admin_token"], "events": ["bearer", "basic", "admin_token"],
        "admin": ["admin_token"]}


# --------------------------------------------------------------------------- config


def _pem_files(tmp_path: Path) -> None:
    (tmp_path / "ec.pub").write_bytes(public_pem(ec.generate_private_key(ec.SECP256R1())))
    (tmp_path / "ec384.pub").write_bytes(public_pem(ec.generate_private_key(ec.SECP384R1())))
    private = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "private.pem").write_bytes(private)
    (tmp_path / "tokens.txt").write_text("# rotation\nlong-enough-token-0123456789\n\nshort\n")
    (tmp_path / "empty-password").write_text("\n")


@pytest.mark.parametrize(("data", "message"), [
    ({"auth": {"tokens": ["x"]}},
     "config: auth.tokens: unknown key (allowed: admin_tokens, admin_tokens_file, basic, bearer_tokens, "
     "bearer_tokens_file, endpoints, jwt, mtls)"),
    ({"auth": {"bearer_tokens": ["short"]}}, "config: auth.bearer_tokens[0]: a token needs at least 16 characters"),
    ({"auth": {"admin_tokens": [ADMIN, ""]}}, "config: auth.admin_tokens[1]: is empty"),
    ({"auth": {"bearer_tokens": ["${PDRELAY_TOKEN}"]}},
     "config: auth.bearer_tokens[0]: environment variable PDRELAY_TOKEN is not set"),
    ({"auth": {"bearer_tokens_file": "tokens.txt"}},
     "config: auth.bearer_tokens_file: line 4: a token needs at least 16 characters"),
    ({"auth": {"basic": {"password": PASSWORD}}}, "config: auth.basic.username: required"),
    ({"auth": {"basic": {"username": "am"}}}, "config: auth.basic: give exactly one of password or password_file"),
    ({"auth": {"basic": [{"username": "am", "password": PASSWORD}, {"username": "a:b", "password": PASSWORD}]}},
     "config: auth.basic[1].username: must be non-empty and contain no ':'"),
    ({"auth": {"basic": {"username": "am", "password_file": "empty-password"}}},
     "config: auth.basic.password_file: {tmp}/empty-password is empty"),
    ({"auth": {"basic": {"username": "am", "password_file": "missing"}}},
     "config: auth.basic.password_file: {tmp}/missing is not a readable file"),
    ({"auth": {"jwt": {"algorithms": ["none"]}}},
     "config: auth.jwt.algorithms: unsupported algorithm 'none' ('none' is never accepted)"),
    ({"auth": {"jwt": {"algorithms": []}}}, "config: auth.jwt.algorithms: expected a non-empty list"),
    ({"auth": {"jwt": {"algorithms": ["HS256", "RS256"]}}},
     "config: auth.jwt.algorithms: do not mix HS* with RS*/ES* algorithms"),
    ({"auth": {"jwt": {"algorithms": ["HS256"], **BOUND}}}, "config: auth.jwt: HS256 needs security.jwt_secret"),
    ({"auth": {"jwt": BOUND}, "security": {"jwt_secret": "too-short"}},
     "config: security.jwt_secret: HS256 needs a secret of at least 32 bytes"),
    ({"auth": {"jwt": {"algorithms": ["HS512"], **BOUND}}, "security": {"jwt_secret": JWT_SECRET}},
     "config: security.jwt_secret: HS512 needs a secret of at least 64 bytes"),
    ({"auth": {"jwt": {"public_key_file": "ec.pub"}}, "security": {"jwt_secret": JWT_SECRET}},
     "config: auth.jwt.public_key_file: not used by HS* algorithms (they use security.jwt_secret); "
     "list RS*/ES* algorithms to verify with a public key"),
    ({"auth": {"jwt": {"algorithms": ["RS256"]}}}, "config: auth.jwt.public_key_file: required for RS256"),
    ({"auth": {"jwt": {"algorithms": ["RS256"], "public_key_file": "ec.pub"}}},
     "config: auth.jwt.public_key_file: {tmp}/ec.pub holds a key RS256 cannot use"),
    ({"auth": {"jwt": {"algorithms": ["ES256"], "public_key_file": "ec384.pub"}}},
     "config: auth.jwt.public_key_file: {tmp}/ec384.pub holds a key ES256 cannot use"),
    ({"auth": {"jwt": {"algorithms": ["ES256"], "public_key_file": "private.pem"}}},
     "config: auth.jwt.public_key_file: {tmp}/private.pem holds no PEM public key"),
    ({"auth": {"jwt": {"algorithms": ["HS256"], "secret": "x"}}},
     "config: auth.jwt.secret: unknown key (allowed: algorithms, audience, issuer, leeway, public_key_file, "
     "scope_claim, scopes)"),
    ({"auth": {"jwt": {"leeway": "a while"}}, "security": {"jwt_secret": JWT_SECRET}},
     "config: auth.jwt.leeway: expected a duration such as 30s or 5m, got 'a while'"),
    ({"auth": {"mtls": {"subjects": ["alertmanager"]}}},
     "config: auth.mtls: needs server.tls with a client_ca_file (and client_auth optional or require)"),
    ({"auth": {"mtls": {"subject": ["alertmanager"]}}},
     "config: auth.mtls.subject: unknown key (allowed: admin_subjects, subjects)"),
    ({"auth": {**TOKENS, "endpoints": {"metrics": ["bearer"]}}},
     "config: auth.endpoints.metrics: unknown key (allowed: admin, events, intake)"),
    ({"auth": {**TOKENS, "endpoints": {"intake": ["oauth"]}}},
     "config: auth.endpoints.intake: unknown method 'oauth' (known: bearer, basic, jwt, mtls, admin_token)"),
    ({"auth": {"bearer_tokens": [TOKEN_A], "endpoints": {"admin": ["admin_token"]}}},
     "config: auth.endpoints.admin: method 'admin_token' is not configured under auth"),
    ({"auth": {**TOKENS, "endpoints": {"admin": []}}},
     "config: auth.endpoints.admin: expected a non-empty list of methods"),
    ({"server": {"tls": {"cert_file": "ec.pub"}}}, "config: server.tls.key_file: required when server.tls is set"),
    ({"server": {"tls": {"cert_file": "ec.pub", "key_file": "nope.key"}}},
     "config: server.tls.key_file: {tmp}/nope.key is not a readable file"),
    ({"server": {"tls": {"cert_file": "ec.pub", "key_file": "private.pem", "client_auth": "maybe"}}},
     "config: server.tls.client_auth: expected none, optional or require, got 'maybe'"),
    ({"server": {"tls": {"cert_file": "ec.pub", "key_file": "private.pem", "client_auth": "require"}}},
     "config: server.tls.client_auth: needs server.tls.client_ca_file to check certificates"),
])
def test_auth_config_errors_name_the_key(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    _pem_files(tmp_path)
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data, environ={}, base_dir=tmp_path)
    assert str(info.value) == message.format(tmp=tmp_path)


def test_auth_config_is_read_from_env_and_files(tmp_path: Path) -> None:
    _pem_files(tmp_path)
    (tmp_path / "tokens.txt").write_text("# rotation: new first\nlong-enough-token-0123456789\n" + TOKEN_B + "\n")
    (tmp_path / "am-password").write_text(PASSWORD + "\n")
    s = settings_from_mapping({
        "server": {"listen": "0.0.0.0:9095"},  # allowed: auth is configured
        "auth": {
            "bearer_tokens": ["${PDRELAY_TOKEN}"], "bearer_tokens_file": "tokens.txt",
            "basic": {"username": "alertmanager", "password_file": "am-password"},
            "jwt": {"algorithms": ["ES256"], "public_key_file": "ec.pub", **BOUND, "leeway": "1m",
                    "scope_claim": "scp"},
            "admin_tokens": [{"env": "PDRELAY_ADMIN_TOKEN"}],
            "endpoints": {"admin": ["admin_token", "admin_token"]},
        },
    }, environ={"PDRELAY_TOKEN": TOKEN_A, "PDRELAY_ADMIN_TOKEN": ADMIN}, base_dir=tmp_path)
    a = s.auth
    assert [t.reveal() for t in a.bearer_tokens] == [TOKEN_A, "long-enough-token-0123456789", TOKEN_B]
    assert [(b.username, b.password.reveal()) for b in a.basic] == [("alertmanager", PASSWORD)]
    assert [t.reveal() for t in a.admin_tokens] == [ADMIN]
    assert a.jwt is not None and a.jwt.algorithms == ("ES256",) and a.jwt.leeway == 60.0
    assert a.jwt.scope_claim == "scp" and a.jwt.public_key is not None and "PUBLIC KEY" in a.jwt.public_key
    assert dict(a.endpoints) == {"admin": ("admin_token",)}
    assert a.enabled and s.server.host == "0.0.0.0"
    assert {TOKEN_A, TOKEN_B, ADMIN, PASSWORD} <= set(s.secrets())
    assert TOKEN_A not in repr(s) and PASSWORD not in repr(s)


def test_jwt_public_key_may_be_a_certificate(tmp_path: Path) -> None:
    ca = CertAuthority("jwt-issuer")
    (tmp_path / "issuer.crt").write_bytes(ca.ca.cert_pem)
    s = settings_from_mapping({"auth": {"jwt": {"algorithms": ["ES256"], "public_key_file": "issuer.crt", **BOUND}}},
                              environ={}, base_dir=tmp_path)
    assert s.auth.jwt is not None and s.auth.jwt.public_key == public_pem(ca.ca.key).decode()


def test_weak_rsa_key_is_refused(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (tmp_path / "weak.pub").write_bytes(public_pem(weak))
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"auth": {"jwt": {"algorithms": ["RS256"], "public_key_file": "weak.pub"}}},
                              environ={}, base_dir=tmp_path)
    assert str(info.value) == (f"config: auth.jwt.public_key_file: {tmp_path}/weak.pub holds a 1024-bit RSA key; "
                               "at least 2048 bits are needed")


# --------------------------------------------------------------------------- server TLS context


def test_server_ssl_context(tmp_path: Path) -> None:
    ca = CertAuthority("test-ca")
    cert, key = ca.issue("pdrelay", ip="127.0.0.1").write(tmp_path, "server")
    ca_file, _ = ca.ca.write(tmp_path, "ca")
    data = {"server": {"tls": {"cert_file": str(cert), "key_file": str(key), "client_ca_file": str(ca_file)}}}
    s = settings_from_mapping(data, environ={})
    assert s.server.tls is not None and s.server.tls.client_auth == "require"
    ctx = server_ssl_context(s.server.tls)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    data["server"]["tls"]["client_auth"] = "optional"
    tls = settings_from_mapping(data, environ={}).server.tls
    assert tls is not None and server_ssl_context(tls).verify_mode == ssl.CERT_OPTIONAL
    data["server"]["tls"] = {"cert_file": str(cert), "key_file": str(key)}
    tls = settings_from_mapping(data, environ={}).server.tls
    assert tls is not None and server_ssl_context(tls).verify_mode == ssl.CERT_NONE


def test_bad_tls_files_give_a_config_error_naming_the_key(tmp_path: Path) -> None:
    ca = CertAuthority("test-ca")
    cert, key = ca.issue("pdrelay", ip="127.0.0.1").write(tmp_path, "server")
    _, other_key = ca.issue("other", ip="127.0.0.1").write(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(ca.ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.BestAvailableEncryption(b"pw")))

    def error(**tls: Any) -> str:
        s = settings_from_mapping({"server": {"tls": {k: str(v) for k, v in tls.items()}}}, environ={})
        assert s.server.tls is not None
        with pytest.raises(ConfigError) as info:
            server_ssl_context(s.server.tls)
        return str(info.value)

    assert error(cert_file=garbage, key_file=key) == f"config: server.tls.cert_file: {garbage} holds no PEM certificate"
    assert error(cert_file=cert, key_file=garbage) == f"config: server.tls.key_file: {garbage} holds no PEM private key"
    assert error(cert_file=cert, key_file=encrypted) == (
        f"config: server.tls.key_file: {encrypted} is encrypted; give an unencrypted private key")
    assert error(cert_file=cert, key_file=other_key).startswith(
        f"config: server.tls.key_file: {other_key} does not fit the certificate in server.tls.cert_file (")
    assert error(cert_file=cert, key_file=key, client_ca_file=garbage) == (
        f"config: server.tls.client_ca_file: {garbage} holds no PEM certificate")


# --------------------------------------------------------------------------- `pdrelay serve`


def test_serve_refuses_a_bad_tls_key_naming_the_key(tmp_path: Path) -> None:
    """A key that does not fit the certificate stops ``serve`` at start with exit 2 and the key's name."""
    ca = CertAuthority("test-ca")
    cert, _ = ca.issue("pdrelay", ip="127.0.0.1").write(tmp_path, "server")
    _, other_key = ca.issue("other", ip="127.0.0.1").write(tmp_path, "other")
    (tmp_path / "rules.yaml").write_text(RULES)
    cfg = tmp_path / "pdrelay.yaml"
    cfg.write_text(f"server: {{listen: '127.0.0.1:1', tls: {{cert_file: {cert}, key_file: {other_key}}}}}\n"
                   f"auth: {{bearer_tokens: ['{TOKEN_A}']}}\nrules: {{paths: [rules.yaml]}}\n")
    done = subprocess.run([sys.executable, "-m", "receiver", "serve", "--config", str(cfg)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(f"pdrelay: config: server.tls.key_file: {other_key} does not fit the "
                                  "certificate in server.tls.cert_file ("), done.stderr
    assert TOKEN_A not in done.stderr + done.stdout


@pytest.mark.parametrize(("data", "level", "message"), [
    ({"auth": {**TOKENS, "endpoints": {"admin": ["admin_token"]}}}, logging.INFO, "authentication enabled"),
    ({}, logging.WARNING, "no authentication configured: listening on loopback only (127.0.0.1:9095)"),
    ({"server": {"listen": "0.0.0.0:9095", "allow_unauthenticated": True}}, logging.WARNING,
     "no authentication configured: server.allow_unauthenticated is set; anyone who reaches 0.0.0.0:9095 "
     "may post alerts and reload rules"),
])
def test_serve_announces_the_auth_in_force(tmp_path: Path, log_records: Records, data: dict[str, Any],
                                           level: int, message: str) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    settings = settings_from_mapping({**data, "rules": {"paths": ["rules.yaml"]},
                                      "outbox": {"path": "outbox.db"}}, environ={}, base_dir=tmp_path)
    app = create_app(settings, Deps(registry=CollectorRegistry(), log=log_records.logger))
    serve_cli._announce(settings, app, log_records.logger)
    (record,) = [r for r in log_records.records if "authentication" in r.getMessage()]
    assert (record.levelno, record.getMessage()) == (level, message)
    if data.get("auth"):
        assert vars(record)["auth_methods"] == {"intake": ["bearer", "admin_token"],
                                                "events": ["bearer", "admin_token"], "admin": ["admin_token"]}
        assert vars(record)["open_paths"] == ["/healthz", "/metrics", "/readyz"]


async def test_jwt_only_refuses_other_bearer_values_as_invalid_tokens(mini: MiniFactory) -> None:
    m = await mini({"jwt": {"algorithms": ["HS256"], **BOUND}}, {"jwt_secret": JWT_SECRET})
    for token in ("not-a-jwt", "a.b", "x" * 40, "é.é.é"):  # a JWT is ASCII
        resp = await m.client.post("/v1/alertmanager", headers=bearer(token))
        assert (resp.status, await resp.json()) == (401, {"error": "invalid bearer token"})
        assert m.decisions[-1].method == "jwt" and m.decisions[-1].reason == "invalid_token"
    assert (await m.call("/v1/alertmanager", basic("am", PASSWORD)))[1] == {
        "error": "this kind of credential is not accepted for this endpoint"}
