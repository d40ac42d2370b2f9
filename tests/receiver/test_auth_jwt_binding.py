"""JWTs are bound to pdrelay: ``audience`` and ``issuer`` are required, and scopes are namespaced.

A token an identity provider issued for another app (Grafana, say) must not open pdrelay, even
when its scope claim carries a word such as ``admin``: the audience and issuer are refused at
load when missing (and by the authenticator when settings are built in code), and only the
configured scope of a group (``pdrelay:intake``, ``pdrelay:events``, ``pdrelay:admin`` by
default, ``auth.jwt.scopes``) opens it. Every request goes through pdrelay's own app on a real
aiohttp test server.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.audit import MemoryAudit
from receiver.auth import Authenticator
from receiver.errors import ConfigError
from receiver.pagerduty.events import classify
from receiver.secret import Secret
from receiver.settings import AuthSettings, JWTSettings, SecuritySettings, settings_from_mapping
from tests.fakes import FakeSender

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]

RULES = "version: 1\ndefaults: {routing_key: default, dedup: alert, severity: error}\nrules: []\n"
BODY = (Path(__file__).parent.parent / "e2e" / "captured" / "am-0.25_firing.json").read_bytes()
SECRET = "jwt-hmac-secret-shared-with-the-idp-0123"
IDP = "https://idp.example"
JWT = {"algorithms": ["HS256"], "audience": "pdrelay", "issuer": IDP}
AUDIENCE_REQUIRED = ("auth.jwt.audience: required (the audience pdrelay's tokens are issued for); "
                     "a token for another app must not open pdrelay")
ISSUER_REQUIRED = ("auth.jwt.issuer: required (the issuer pdrelay's tokens come from); "
                   "a token from another issuer must not open pdrelay")
GROUPS = {"intake": ("POST", "/v1/alertmanager"), "events": ("POST", "/v1/events"),
          "admin": ("POST", "/-/reload"), "status": ("GET", "/status")}
# The answer once auth let the request through (/v1/events refuses the empty body it is sent here).
PAST_AUTH = {"intake": 200, "events": 400, "admin": 200, "status": 200}


def token(**claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": "someone", "iss": IDP, "aud": "pdrelay", "iat": now, "exp": now + 300}
    payload.update(claims)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, SECRET, algorithm="HS256")


@dataclass
class Relay:
    client: TestClient[Any, Any]
    registry: CollectorRegistry

    async def call(self, where: str, bearer: str) -> tuple[int, Any]:
        method, path = GROUPS[where]
        resp = await self.client.request(method, path, headers={"Authorization": f"Bearer {bearer}",
                                                                "Accept": "application/json"},
                                         data=BODY if where == "intake" else None)
        return resp.status, await resp.json() if resp.content_type == "application/json" else await resp.text()

    def refused(self, group: str, reason: str) -> float:
        value = self.registry.get_sample_value("pdrelay_auth_refused_total", {"group": group, "reason": reason})
        assert value is not None
        return value


RelayFactory = Callable[..., Awaitable[Relay]]


@pytest.fixture
def relay(tmp_path: Path, aiohttp_client: ClientFactory) -> RelayFactory:
    """pdrelay's app (``create_app``) with ``auth.jwt`` as given."""

    async def make(jwt_config: dict[str, Any]) -> Relay:
        (tmp_path / "rules.yaml").write_text(RULES)
        settings = settings_from_mapping({
            "auth": {"jwt": jwt_config}, "security": {"jwt_secret": SECRET},
            "outbox": {"path": "outbox.db"}, "rules": {"paths": ["rules.yaml"]},
            "pagerduty": {"routing_keys": {"default": "k" * 32}},
        }, environ={}, base_dir=tmp_path)
        registry = CollectorRegistry()
        deps = Deps(registry=registry, sender=FakeSender(lambda body: classify(503, b"down")), audit=MemoryAudit())
        return Relay(await aiohttp_client(create_app(settings, deps)), registry)

    return make


# --------------------------------------------------------------------------- audience and issuer are required


@pytest.mark.parametrize(("jwt_config", "message"), [
    ({"algorithms": ["HS256"]}, AUDIENCE_REQUIRED),
    ({"algorithms": ["HS256"], "issuer": IDP}, AUDIENCE_REQUIRED),
    ({"algorithms": ["HS256"], "audience": "", "issuer": IDP}, AUDIENCE_REQUIRED),
    ({"algorithms": ["HS256"], "audience": "pdrelay"}, ISSUER_REQUIRED),
    ({"algorithms": ["HS256"], "audience": "pdrelay", "issuer": ""}, ISSUER_REQUIRED),
    ({}, AUDIENCE_REQUIRED),
    ({**JWT, "scopes": {"admin": 'pdrelay"admin'}}, "auth.jwt.scopes.admin: expected one scope word, got "
                                                   "'pdrelay\"admin'"),
    ({**JWT, "scopes": {"admin": "pdrelay:admin\t"}}, "auth.jwt.scopes.admin: expected one scope word, got "
                                                     "'pdrelay:admin\\t'"),
])
def test_jwt_without_audience_or_issuer_is_refused_at_load(tmp_path: Path, jwt_config: dict[str, Any],
                                                           message: str) -> None:
    """So is a scope that is not one RFC 6749 scope-token (it is quoted in the 403's challenge)."""
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"auth": {"jwt": jwt_config}, "security": {"jwt_secret": SECRET}},
                              environ={}, base_dir=tmp_path)
    assert str(info.value) == f"config: {message}"


@pytest.mark.parametrize(("jwt_settings", "message"), [
    (JWTSettings(), AUDIENCE_REQUIRED),
    (JWTSettings(issuer=IDP), AUDIENCE_REQUIRED),
    (JWTSettings(audience="pdrelay"), ISSUER_REQUIRED),
    (JWTSettings(audience="pdrelay", issuer=""), ISSUER_REQUIRED),
])
def test_settings_built_in_code_without_audience_or_issuer_are_refused(
    tmp_path: Path, jwt_settings: JWTSettings, message: str
) -> None:
    """No path accepts any audience: the authenticator (and so ``create_app``) refuses such settings."""
    auth = AuthSettings(jwt=jwt_settings)
    security = SecuritySettings(jwt_secret=Secret(SECRET))
    with pytest.raises(ConfigError) as info:
        Authenticator(auth, security)
    assert str(info.value) == f"config: {message}"
    (tmp_path / "rules.yaml").write_text(RULES)
    settings = settings_from_mapping({"outbox": {"path": "outbox.db"}, "rules": {"paths": ["rules.yaml"]}},
                                     environ={}, base_dir=tmp_path)
    with pytest.raises(ConfigError) as info:
        create_app(replace(settings, auth=auth, security=security),
                   Deps(registry=CollectorRegistry(), audit=MemoryAudit()))
    assert str(info.value) == f"config: {message}"


# --------------------------------------------------------------------------- a token for another app


async def test_a_grafana_token_with_an_admin_scope_opens_nothing(relay: RelayFactory) -> None:
    """The finding: an IdP token for Grafana with ``scope: "openid profile email admin"``. Its audience
    is refused (401) everywhere; with pdrelay's audience, the bare word ``admin`` still opens nothing (403)."""
    r = await relay(JWT)
    grafana = token(aud="grafana", sub="alice", scope="openid profile email admin")
    for where in ("status", "admin", "intake", "events"):
        assert await r.call(where, grafana) == (401, {"error": "token audience does not match"}), where
    assert r.refused("admin", "wrong_audience") == 2
    assert r.refused("intake", "wrong_audience") == r.refused("events", "wrong_audience") == 1

    bare = token(sub="alice", scope="openid profile email admin intake events")
    for where in ("status", "admin", "intake", "events"):
        assert await r.call(where, bare) == (403, {"error": "this identity may not use this endpoint"}), where
    assert r.refused("admin", "forbidden") == 2
    assert r.refused("intake", "forbidden") == r.refused("events", "forbidden") == 1


async def test_a_token_from_another_issuer_is_refused(relay: RelayFactory) -> None:
    r = await relay(JWT)
    other = token(iss="https://other-idp.example", scope="pdrelay:admin")
    assert await r.call("status", other) == (401, {"error": "token issuer does not match"})
    assert await r.call("status", token(iss=None, scope="pdrelay:admin")) == (
        401, {"error": "token issuer does not match"})
    assert await r.call("status", token(aud=None, scope="pdrelay:admin")) == (
        401, {"error": "token audience does not match"})
    assert r.refused("admin", "wrong_issuer") == 2
    assert r.refused("admin", "wrong_audience") == 1


async def test_a_pdrelay_admin_token_opens_the_admin_endpoints(relay: RelayFactory) -> None:
    r = await relay(JWT)
    admin = token(sub="ops", scope="openid pdrelay:admin")
    status, body = await r.call("status", admin)
    assert status == 200 and "outbox" in body
    assert (await r.call("admin", admin))[0] == 200
    assert await r.call("intake", admin) == (403, {"error": "this identity may not use this endpoint"})
    everything = token(sub="ops", aud=["grafana", "pdrelay"], scope=["pdrelay:intake", "pdrelay:events",
                                                                      "pdrelay:admin"])
    for where in GROUPS:
        assert (await r.call(where, everything))[0] == PAST_AUTH[where], where


async def test_a_token_without_a_scope_claim_may_post_alerts_and_events_only(relay: RelayFactory) -> None:
    r = await relay(JWT)
    plain = token(sub="alertmanager")
    assert (await r.call("intake", plain))[0] == 200
    assert (await r.call("events", plain))[0] == PAST_AUTH["events"]
    assert await r.call("status", plain) == (403, {"error": "this identity may not use this endpoint"})


@pytest.mark.parametrize(("scope", "opens"), [
    ("alerts.write", {"intake"}),
    (["alerts.write", "ops/pdrelay-admin"], {"intake", "admin", "status"}),
    ("pdrelay:events", {"events"}),  # events keeps its default
    ("pdrelay:intake pdrelay:admin", set()),  # the defaults that were replaced open nothing
    ("ALERTS.WRITE ops/pdrelay-admin/extra", set()),  # scopes are compared exactly
])
async def test_custom_scopes_replace_the_defaults(relay: RelayFactory, scope: Any, opens: set[str]) -> None:
    r = await relay({**JWT, "scopes": {"intake": "alerts.write", "admin": "ops/pdrelay-admin"}})
    bearer = token(scope=scope)
    for where in GROUPS:
        status, body = await r.call(where, bearer)
        if where in opens:
            assert status == PAST_AUTH[where], (where, body)
        else:
            assert (status, body) == (403, {"error": "this identity may not use this endpoint"}), where
    resp = await r.client.post("/-/reload", headers={"Authorization": f"Bearer {token(scope='pdrelay:admin')}"})
    assert resp.headers.getall("WWW-Authenticate") == [
        'Bearer realm="pdrelay", error="insufficient_scope", scope="ops/pdrelay-admin"']


async def test_the_scope_claim_name_is_configurable(relay: RelayFactory) -> None:
    r = await relay({**JWT, "scope_claim": "scp"})
    assert (await r.call("status", token(scp=["pdrelay:admin"])))[0] == 200
    assert (await r.call("status", token(scope="pdrelay:admin", scp="openid")))[0] == 403
