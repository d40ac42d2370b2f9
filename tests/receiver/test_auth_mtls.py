"""mTLS: pdrelay on a real TLS listener (``web.TCPSite`` with :func:`server_ssl_context`) on a free
loopback port, called with httpx and client certificates from a CA made in the test."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.pagerduty.events import classify
from receiver.settings import settings_from_mapping
from receiver.tls import server_ssl_context
from tests.fakes import FakeSender
from tests.tls_support import CertAuthority

CAPTURED = Path(__file__).parent.parent / "e2e" / "captured"
RULES = "version: 1\ndefaults: {routing_key: default, dedup: alert, severity: error}\nrules: []\n"
TOKEN = "intake-token-for-mtls-tests-0123"


@dataclass
class PKI:
    folder: Path
    ca: CertAuthority
    ca_file: Path
    server: tuple[Path, Path]
    clients: dict[str, tuple[Path, Path]]  # name → (cert, key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    folder = tmp_path_factory.mktemp("pki")
    ca = CertAuthority("pdrelay-test-ca")
    ca_file, _ = ca.ca.write(folder, "ca")
    server = ca.issue("pdrelay", ip="127.0.0.1").write(folder, "server")
    clients = {
        "alertmanager": ca.issue("alertmanager", client=True).write(folder, "alertmanager"),
        "ops-admin": ca.issue("ops-admin", client=True).write(folder, "ops-admin"),
        "stranger": ca.issue("stranger", client=True).write(folder, "stranger"),
        "ci": ca.issue("ci", client=True, org="Acme").write(folder, "ci"),
        # Same subject as an allowed one, but signed by a CA pdrelay does not trust.
        "rogue": CertAuthority("rogue-ca").issue("alertmanager", client=True).write(folder, "rogue"),
    }
    return PKI(folder, ca, ca_file, server, clients)


Server = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve(tmp_path: Path, pki: PKI) -> AsyncIterator[Server]:
    """Start pdrelay with TLS on 127.0.0.1:<free port>; return its https base URL."""
    runners: list[web.AppRunner] = []

    async def start(client_auth: str, auth: dict[str, Any]) -> str:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES)
        settings = settings_from_mapping({
            "server": {"tls": {"cert_file": str(pki.server[0]), "key_file": str(pki.server[1]),
                               "client_ca_file": str(pki.ca_file), "client_auth": client_auth}},
            "auth": auth,
            "outbox": {"path": str(tmp_path / f"outbox-{len(runners)}.db")}, "rules": {"paths": [str(rules)]},
            "pagerduty": {"routing_keys": {"default": "k" * 32}},
        }, environ={})
        assert settings.server.tls is not None
        app = create_app(settings, Deps(registry=CollectorRegistry(),
                                        sender=FakeSender(lambda body: classify(503, b"down"))))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(settings.server.tls))
        await site.start()
        port = runner.addresses[0][1]
        return f"https://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def client(pki: PKI, name: str | None) -> httpx.AsyncClient:
    """An httpx client trusting the test CA, presenting ``name``'s certificate (or none)."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if name is not None:
        cert, key = pki.clients[name]
        ctx.load_cert_chain(str(cert), str(key))
    return httpx.AsyncClient(verify=ctx, timeout=10, trust_env=False)


async def call(pki: PKI, name: str | None, method: str, url: str, **kwargs: Any) -> httpx.Response:
    async with client(pki, name) as c:
        return await c.request(method, url, **kwargs)


MTLS = {"mtls": {"subjects": ["alertmanager", "O=Acme,CN=ci"], "admin_subjects": ["ops-admin"]}}


async def test_require_allowed_subjects_and_admin_subjects(serve: Server, pki: PKI) -> None:
    """A listed CN (or full RFC 4514 subject) may post; only an admin subject may reload."""
    url = await serve("require", MTLS)
    body = (CAPTURED / "am-0.25_firing.json").read_bytes()
    for name in ("alertmanager", "ci", "ops-admin"):
        resp = await call(pki, name, "POST", f"{url}/v1/alertmanager", content=body)
        assert resp.status_code == 200, (name, resp.text)
    resp = await call(pki, "alertmanager", "POST", f"{url}/-/reload")
    assert (resp.status_code, resp.json()) == (403, {"error": "this identity may not use this endpoint"})
    assert (await call(pki, "ops-admin", "POST", f"{url}/-/reload")).status_code == 200
    assert (await call(pki, "ops-admin", "GET", f"{url}/status")).status_code == 200
    assert (await call(pki, "alertmanager", "GET", f"{url}/healthz")).status_code == 200


async def test_require_refuses_a_subject_not_listed(serve: Server, pki: PKI) -> None:
    url = await serve("require", MTLS)
    resp = await call(pki, "stranger", "POST", f"{url}/v1/alertmanager", content=b"{}")
    assert (resp.status_code, resp.json()) == (403, {"error": "client certificate subject is not allowed"})
    metrics = (await call(pki, "stranger", "GET", f"{url}/metrics")).text
    assert 'pdrelay_auth_refused_total{group="intake",reason="subject_not_allowed"} 1.0' in metrics


async def test_require_refuses_the_handshake_without_a_certificate_or_from_another_ca(
    serve: Server, pki: PKI
) -> None:
    url = await serve("require", MTLS)
    for name in (None, "rogue"):
        with pytest.raises(httpx.TransportError):
            await call(pki, name, "GET", f"{url}/healthz")


async def test_any_certificate_of_the_ca_when_no_subject_is_listed(serve: Server, pki: PKI) -> None:
    url = await serve("require", {"mtls": {}})
    assert (await call(pki, "stranger", "POST", f"{url}/v1/alertmanager", content=b"{}")).status_code == 400
    assert (await call(pki, "stranger", "POST", f"{url}/-/reload")).status_code == 403


async def test_optional_without_a_certificate_is_401_or_another_method(serve: Server, pki: PKI) -> None:
    """``client_auth: optional``: no certificate → 401 (or a bearer token); a foreign CA still fails the handshake."""
    url = await serve("optional", MTLS)
    assert (await call(pki, None, "GET", f"{url}/healthz")).status_code == 200
    resp = await call(pki, None, "POST", f"{url}/v1/alertmanager", content=b"{}")
    assert (resp.status_code, resp.json()) == (401, {"error": "authentication required"})
    assert "www-authenticate" not in resp.headers  # mTLS only: there is no HTTP scheme to name
    assert (await call(pki, "alertmanager", "POST", f"{url}/v1/alertmanager", content=b"{}")).status_code == 400
    with pytest.raises(httpx.TransportError):
        await call(pki, "rogue", "GET", f"{url}/healthz")

    url = await serve("optional", {**MTLS, "bearer_tokens": [TOKEN]})
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert (await call(pki, None, "POST", f"{url}/v1/alertmanager", content=b"{}", headers=headers)).status_code \
        == 400  # authenticated; the body is not a notification
    resp = await call(pki, None, "POST", f"{url}/v1/alertmanager", content=b"{}")
    assert resp.headers["www-authenticate"] == 'Bearer realm="pdrelay"'
