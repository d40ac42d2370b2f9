"""A real Alertmanager 0.25 authenticates to pdrelay: with a bearer token, with a client certificate
over https (mTLS), and with a wrong token, which pdrelay refuses (401, counted) while the right one
gets its event delivered to the PagerDuty stand-in. Every wait polls against a deadline."""

from __future__ import annotations

import ssl
from pathlib import Path

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
