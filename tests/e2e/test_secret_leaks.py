"""The secret-leak scan: every configured secret, searched for in everything pdrelay lets out.

One pdrelay process runs with every kind of secret configured (two routing keys, bearer and admin
tokens, a basic-auth password, a JWT secret, two encryption keys). It is driven through accepted and
refused requests, a reload, a PagerDuty 400 (a dead letter), /status (JSON and HTML), /metrics,
requests aiohttp's parser refuses with a credential in the bytes it would quote (a header with a bare
LF or a NUL, a header or request line over server.max_header_bytes, a token as the method), and the
CLI (outbox list/show/replay/purge/rekey, test-rules, check-rules, audit verify, keygen, config
errors). Then its log, its audit file, its outbox file, every HTTP answer and every CLI output are
searched for each secret, and for a token-looking value that is configured nowhere (a credential of
someone all the same: the malformed requests must not be quoted back at all). Only PagerDuty may see
a routing key: the stand-in receives it, and nothing else does.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest
from e2e_support import PagerDutyStandIn, PdRelayFactory, wait_until

from receiver.crypto import generate_key
from tests.malformed import malformed_requests, raw_exchange

pytestmark = pytest.mark.e2e

CAPTURED = Path(__file__).parent / "captured"
ROUTING_KEYS = {"default": "R0utingKeyDefault0123456789abcde", "db-oncall": "R0utingKeyDbOncall0123456789abcd"}
BEARER = "Bearer-Token-For-Alertmanager-4f1e2d"
ADMIN = "Admin-Token-For-Operators-9c8b7a6d"
BASIC_PASSWORD = "Basic-Password-Correct-Horse-77"
JWT_SECRET = "Jwt-Hmac-Secret-Shared-With-IdP-0123456789"
KEYS = [generate_key(), generate_key()]
RULES = """\
version: 1
defaults: {routing_key: default, dedup: alert, severity: error}
rules:
  - name: db
    match: ['job="db"']
    set: {routing_key: db-oncall}
  - name: reject
    match: ['alertname="RejectMe"']
    set: {source: reject-me}
"""


STRANGER = "Someone-Elses-Token-0b1c2d3e4f5a"  # configured nowhere
FIXED_400 = b'{"error": "bad request: malformed request line, header or body framing"}'


def secrets() -> dict[str, str]:
    found = {f"routing_key:{k}": v for k, v in ROUTING_KEYS.items()}
    found |= {"bearer": BEARER, "admin": ADMIN, "basic": BASIC_PASSWORD, "jwt_secret": JWT_SECRET,
              "key0": KEYS[0], "key1": KEYS[1]}
    # also the raw key bytes' other spellings, and the basic header as sent
    found |= {f"key{i}-urlsafe": k.replace("+", "-").replace("/", "_").rstrip("=") for i, k in enumerate(KEYS)}
    found["basic-header"] = base64.b64encode(f"am:{BASIC_PASSWORD}".encode()).decode()
    found["unconfigured token"] = STRANGER
    return found


def scan(where: str, text: str | bytes, exposed: list[str]) -> None:
    data = text.encode() if isinstance(text, str) else text
    for name, value in secrets().items():
        if value.encode() in data:
            exposed.append(f"{name} in {where}")


def test_no_configured_secret_leaks_anywhere(tmp_path: Path, pd: PagerDutyStandIn,
                                             start_pdrelay: PdRelayFactory) -> None:
    pd.queue(400)  # the first event is refused: a dead letter with PagerDuty's answer
    relay = start_pdrelay(
        rules=RULES,
        pagerduty={"routing_keys": dict(ROUTING_KEYS)},
        config={
            "auth": {"bearer_tokens": [BEARER], "admin_tokens": [ADMIN],
                     "basic": {"username": "am", "password": BASIC_PASSWORD},
                     "jwt": {"algorithms": ["HS256"], "audience": "pdrelay", "issuer": "https://idp.example"}},
            "security": {"encryption_key": KEYS, "jwt_secret": JWT_SECRET},
        },
    )
    exposed: list[str] = []
    body = json.loads((CAPTURED / "am-0.25_firing.json").read_text())
    token = jwt.encode({"sub": "ci", "aud": "pdrelay", "iss": "https://idp.example", "exp": int(time.time()) + 300},
                       JWT_SECRET, "HS256")
    url = relay.url
    answers: list[httpx.Response] = []
    with httpx.Client(timeout=10, trust_env=False) as client:
        def post(path: str, headers: dict[str, str], payload: object = None, raw: bytes | None = None) -> None:
            answers.append(client.post(url + path, headers=headers, json=payload, content=raw))

        post("/v1/alertmanager", {"Authorization": f"Bearer {BEARER}"}, body)
        second = json.loads(json.dumps(body))
        for alert in second["alerts"]:
            alert["fingerprint"] = alert["fingerprint"][::-1]
            alert["labels"]["job"] = "db"
        post("/v1/alertmanager", {"Authorization": "Basic " + secrets()["basic-header"]}, second)
        post("/v1/alertmanager", {"Authorization": f"Bearer {token}"}, raw=b"{not json")
        post("/v1/alertmanager", {"Authorization": f"Bearer {BEARER[:-1]}x"}, body)  # near miss: 401
        post("/v1/alertmanager", {"Authorization": "Basic " + base64.b64encode(
            f"am:{BASIC_PASSWORD}!".encode()).decode()}, body)
        post("/-/reload", {"Authorization": f"Bearer {BEARER}"})  # 403: not an admin
        post("/-/reload", {"Authorization": f"Bearer {ADMIN}"})
        for accept in ("application/json", "text/html"):
            answers.append(client.get(url + "/status", headers={"Authorization": f"Bearer {ADMIN}",
                                                                  "Accept": accept}))
        statuses = [a.status_code for a in answers]
        assert statuses == [200, 200, 400, 401, 401, 403, 200, 200, 200], statuses
        wait_until(lambda: len(pd.received()) >= 4, what="4 events at the PagerDuty stand-in")
        wait_until(lambda: relay.metric("pdrelay_outbox_depth") == 1 or None, what="one dead letter")
        answers.append(client.get(url + "/metrics"))
    for i, answer in enumerate(answers):
        scan(f"answer {i} ({answer.request.url.path})", answer.text, exposed)
        scan(f"answer {i} headers", json.dumps(dict(answer.headers)), exposed)
    credentials = {"bearer": BEARER, "admin": ADMIN, "basic-header": "Basic " + secrets()["basic-header"],
                   "jwt": token, "unconfigured": STRANGER}
    for name, credential in credentials.items():
        for i, request in enumerate(malformed_requests(credential)):
            raw = raw_exchange(relay.port, request)
            assert raw.split(b"\r\n")[0] == b"HTTP/1.0 400 Bad Request", raw
            assert raw.endswith(b"\r\n\r\n" + FIXED_400), raw
            scan(f"answer to malformed request {i} with {name}", raw, exposed)
            if credential.encode() in raw:
                exposed.append(f"{name} quoted in the answer to malformed request {i}")

    cfg = str(relay.config_path)
    cli = [
        ["outbox", "list", "--config", cfg], ["outbox", "list", "--json", "--config", cfg],
        ["outbox", "show", "1", "--config", cfg], ["outbox", "show", "1", "--json", "--config", cfg],
        ["test-rules", "--rules", str(relay.rules_path), str(CAPTURED / "am-0.25_firing.json")],
        ["check-rules", str(relay.rules_path)],
    ]
    for args in cli:
        done = subprocess.run([sys.executable, "-m", "receiver", *args], cwd=relay.workdir, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode in (0, 1), (args, done.stderr)
        scan(" ".join(args[:2]), done.stdout + done.stderr, exposed)
    shown = subprocess.run([sys.executable, "-m", "receiver", "outbox", "show", "1", "--json", "--config", cfg],
                           cwd=relay.workdir, capture_output=True, text=True, timeout=60)
    assert json.loads(shown.stdout)["routing_key"] == "default"  # by name

    # Config errors quote neither a bad secret nor a good one.
    bad_key = "QUJD" * 6  # base64 of 18 bytes: a key of the wrong size
    broken = relay.workdir / "broken.yaml"
    for text, key in ((f"security: {{encryption_key: ['{bad_key}']}}\n", "security.encryption_key[0]"),
                      (f"auth: {{bearer_tokens: ['{BEARER[:10]}']}}\n", "auth.bearer_tokens[0]")):
        broken.write_text(text)
        err = subprocess.run([sys.executable, "-m", "receiver", "serve", "--config", str(broken)],
                             cwd=relay.workdir, capture_output=True, text=True, timeout=60)
        assert err.returncode == 2 and key in err.stderr, err.stderr
        assert bad_key not in err.stderr and BEARER[:10] not in err.stderr

    relay.stop()
    log = relay.log()
    scan("pdrelay log", log, exposed)
    assert [line for line in log.splitlines() if not line.startswith("{")] == []  # JSON lines only
    assert token not in log
    refused = [json.loads(line) for line in log.splitlines() if '"bad request: malformed' in line]
    assert len(refused) == len(malformed_requests("")) * len(credentials)

    # The commands that change the outbox or read the audit log, once the server is gone.
    for args in (["outbox", "replay", "--all", "--config", cfg],
                 ["outbox", "purge", "--dead", "--yes", "--config", cfg], ["outbox", "rekey", "--config", cfg],
                 ["audit", "verify", str(relay.workdir / "audit.jsonl")], ["keygen"]):
        done = subprocess.run([sys.executable, "-m", "receiver", *args], cwd=relay.workdir, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode in (0, 1), (args, done.stderr)
        scan(" ".join(args[:2]), done.stdout + done.stderr, exposed)
    audit = (relay.workdir / "audit.jsonl").read_text()
    assert '"intake.accepted"' in audit and '"auth.refused"' in audit
    scan("audit log", audit, exposed)
    for f in relay.workdir.glob("outbox.db*"):
        scan(f.name, f.read_bytes(), exposed)
    assert not exposed, exposed

    # The one place a routing key must go: PagerDuty itself.
    sent = {r.event["routing_key"] for r in pd.received()}
    assert sent == set(ROUTING_KEYS.values())
