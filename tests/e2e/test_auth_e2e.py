"""A real Alertmanager 0.25 authenticates to pdrelay: with a bearer token, with a client certificate
over https (mTLS), and with a wrong token, which pdrelay refuses (401, counted) while the right one
gets its event delivered to the PagerDuty stand-in. A pdrelay process with JWT auth refuses a token
issued for another app and a bearer value that is not UTF-8, and does not start without an
audience and issuer. Every wait polls against a deadline."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest
from e2e_support import (
    ROUTING_KEY,
    AlertmanagerFactory,
    AlertSpec,
    PagerDutyStandIn,
    PdRelay,
    PdRelayFactory,
    Received,
    http_get,
    wait_until,
)

from tests.tls_support import CertAuthority

pytestmark = pytest.mark.e2e

TOKEN = "e2e-intake-token-0123456789abcdef"
WRONG = "e2e-wrong-token-fedcba9876543210"
JWT_SECRET = "e2e-jwt-secret-shared-with-the-idp-0123456789"
IDP = "https://idp.example"


def alert(name: str) -> AlertSpec:
    return AlertSpec(labels={"alertname": name, "instance": "db-1", "job": "node", "severity": "critical"},
                     annotations={"summary": f"{name} on db-1"})


def triggers_for(name: str, events: list[Received]) -> list[Received]:
    """The triggers for the alert named ``name`` (its labels travel in ``custom_details``)."""
    return [e for e in events if e.event.get("event_action") == "trigger"
            and e.event["payload"]["custom_details"]["labels"]["alertname"] == name]


def sample(relay: PdRelay, series: str) -> float:
    """One exact series (name and labels as pdrelay writes them) from pdrelay's /metrics."""
    response = http_get(f"{relay.url}/metrics", verify=relay.client_tls or True)
    assert response is not None and response.status_code == 200
    for line in response.text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    raise AssertionError(f"{series} is not exported")


ALLOWED = 'pdrelay_auth_total{group="intake",result="allowed"}'
INVALID = 'pdrelay_auth_refused_total{group="intake",reason="invalid_token"}'


def test_bearer_token_from_alertmanager_is_accepted(
    pd: PagerDutyStandIn, start_pdrelay: PdRelayFactory, start_alertmanager: AlertmanagerFactory
) -> None:
    relay = start_pdrelay(config={"auth": {"bearer_tokens": [TOKEN]}})
    am = start_alertmanager([relay.alertmanager_url],
                            http_config={"authorization": {"type": "Bearer", "credentials": TOKEN}})
    am.fire(alert("AuthBearer"))
    (event,) = pd.wait_accepted(lambda evs: bool(triggers_for("AuthBearer", evs)), what="the trigger")
    assert event.triple[0::2] == ("trigger", ROUTING_KEY)
    assert sample(relay, ALLOWED) >= 1
    assert sum(sample(relay, f'pdrelay_auth_total{{group="{g}",result="refused"}}')
               for g in ("intake", "events", "admin")) == 0
    assert TOKEN not in relay.log()


def test_client_certificate_from_alertmanager_over_https(
    tmp_path: Path, pd: PagerDutyStandIn, start_pdrelay: PdRelayFactory, start_alertmanager: AlertmanagerFactory
) -> None:
    pki = tmp_path / "pki"
    ca = CertAuthority("e2e-ca")
    ca_file, _ = ca.ca.write(pki, "ca")
    server_cert, server_key = ca.issue("pdrelay", ip="127.0.0.1").write(pki, "server")
    am_cert, am_key = ca.issue("alertmanager", client=True).write(pki, "alertmanager")
    probe_cert, probe_key = ca.issue("probe", client=True).write(pki, "probe")
    probe = ssl.create_default_context(cafile=str(ca_file))
    probe.load_cert_chain(str(probe_cert), str(probe_key))
    relay = start_pdrelay(
        config={
            "server": {"tls": {"cert_file": str(server_cert), "key_file": str(server_key),
                               "client_ca_file": str(ca_file), "client_auth": "require"}},
            "auth": {"mtls": {"subjects": ["alertmanager"]}},
        },
        client_tls=probe,
    )
    assert relay.alertmanager_url.startswith("https://127.0.0.1:")
    am = start_alertmanager([relay.alertmanager_url], http_config={
        "tls_config": {"ca_file": str(ca_file), "cert_file": str(am_cert), "key_file": str(am_key)}})
    am.fire(alert("AuthMTLS"))
    pd.wait_accepted(lambda evs: bool(triggers_for("AuthMTLS", evs)), what="the trigger over mTLS")
    assert sample(relay, ALLOWED) >= 1
    # The probe's certificate is valid but its subject is not listed: open paths only.
    assert http_get(f"{relay.url}/readyz", verify=probe) is not None
    assert sample(relay, 'pdrelay_auth_refused_total{group="intake",reason="subject_not_allowed"}') == 0


def test_wrong_token_is_refused_and_the_right_one_delivers(
    pd: PagerDutyStandIn, start_pdrelay: PdRelayFactory, start_alertmanager: AlertmanagerFactory
) -> None:
    relay = start_pdrelay(config={"auth": {"bearer_tokens": [TOKEN]}})
    wrong = start_alertmanager([relay.alertmanager_url],
                               http_config={"authorization": {"type": "Bearer", "credentials": WRONG}})
    wrong.fire(alert("AuthWrongToken"))
    wait_until(lambda: sample(relay, INVALID) >= 1, what="pdrelay refusing the wrong token")
    wait_until(lambda: "401" in wrong.log(), what="Alertmanager logging the 401")
    assert pd.received() == []

    right = start_alertmanager([relay.alertmanager_url],
                               http_config={"authorization": {"type": "Bearer", "credentials": TOKEN}})
    right.fire(alert("AuthRightToken"))
    pd.wait_accepted(lambda evs: bool(triggers_for("AuthRightToken", evs)), what="the right token's trigger")
    assert triggers_for("AuthWrongToken", pd.received()) == []
    assert sample(relay, ALLOWED) >= 1
    log = relay.log()
    assert '"msg": "auth refused"' in log and '"reason": "invalid_token"' in log
    assert WRONG not in log and TOKEN not in log


def idp_token(**claims: object) -> str:
    payload = {"sub": "alice", "iss": IDP, "aud": "pdrelay", "exp": int(time.time()) + 300, **claims}
    return jwt.encode(payload, JWT_SECRET, "HS256")


def test_jwt_for_another_app_and_bytes_that_are_not_utf8_are_refused(start_pdrelay: PdRelayFactory) -> None:
    relay = start_pdrelay(config={"auth": {"jwt": {"algorithms": ["HS256"], "audience": "pdrelay", "issuer": IDP}},
                                  "security": {"jwt_secret": JWT_SECRET}})
    grafana = idp_token(aud="grafana", scope="openid profile email admin")
    bare = idp_token(scope="openid profile email admin")
    admin = idp_token(scope="openid pdrelay:admin")
    with httpx.Client(base_url=relay.url, timeout=10, trust_env=False) as client:
        def call(method: str, path: str, token: str) -> tuple[int, object]:
            answer = client.request(method, path, headers={"Authorization": f"Bearer {token}",
                                                           "Accept": "application/json"})
            return answer.status_code, answer.json()

        assert call("GET", "/status", grafana) == (401, {"error": "token audience does not match"})
        assert call("POST", "/-/reload", grafana) == (401, {"error": "token audience does not match"})
        assert call("GET", "/status", bare) == (403, {"error": "this identity may not use this endpoint"})
        assert call("POST", "/-/reload", bare) == (403, {"error": "this identity may not use this endpoint"})
        assert call("GET", "/status", admin)[0] == 200
        assert call("POST", "/-/reload", admin)[0] == 200
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as conn:
        conn.sendall(b"POST /v1/alertmanager HTTP/1.1\r\nHost: pdrelay\r\nContent-Length: 0\r\n"
                     b"Authorization: Bearer a\xff.b.c\r\nConnection: close\r\n\r\n")
        answer = b"".join(iter(lambda: conn.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 401 ") and answer.endswith(b'{"error": "invalid bearer token"}')
    assert sample(relay, 'pdrelay_auth_refused_total{group="admin",reason="wrong_audience"}') == 2
    assert sample(relay, 'pdrelay_auth_refused_total{group="admin",reason="forbidden"}') == 2
    assert sample(relay, 'pdrelay_auth_refused_total{group="intake",reason="invalid_token"}') == 1
    assert sample(relay, 'pdrelay_auth_total{group="admin",result="allowed"}') == 2
    relay.stop()
    log = relay.log()
    assert log.count('"msg": "auth refused"') == 5
    assert "Traceback" not in log
    for token in (grafana, bare, admin, JWT_SECRET):
        assert token not in log and token.rpartition(".")[2] not in log


def test_serve_refuses_jwt_without_audience_or_issuer(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("version: 1\ndefaults: {routing_key: default, dedup: alert}\nrules: []\n")
    for jwt_config, message in (
        ("{algorithms: [HS256], issuer: 'https://idp.example'}",
         "auth.jwt.audience: required (the audience pdrelay's tokens are issued for); "
         "a token for another app must not open pdrelay"),
        ("{algorithms: [HS256], audience: pdrelay}",
         "auth.jwt.issuer: required (the issuer pdrelay's tokens come from); "
         "a token from another issuer must not open pdrelay"),
    ):
        config = tmp_path / "pdrelay.yaml"
        config.write_text(f"auth: {{jwt: {jwt_config}}}\nsecurity: {{jwt_secret: {JWT_SECRET}}}\n"
                          "rules: {paths: [rules.yaml]}\noutbox: {path: outbox.db}\n")
        done = subprocess.run([sys.executable, "-m", "receiver", "serve", "--config", str(config),
                               "--listen", "127.0.0.1:0"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stderr) == (2, f"pdrelay: config: {message}\n")
        assert JWT_SECRET not in done.stdout + done.stderr
