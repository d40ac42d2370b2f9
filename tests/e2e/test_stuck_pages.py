"""Two ways a PagerDuty alert used to stay open for ever, against a running pdrelay and the stand-in.

1. A replay swallowed the next resolve: intake compared with what had once been *queued*, not
   with what PagerDuty was last told.
2. A misspelt routing key name passed every check, and a replay kept the stored name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from e2e_support import ROUTING_KEY, PagerDutyStandIn, PdRelay, PdRelayFactory, wait_until

ALERT_RULES = """\
version: 1
defaults: {routing_key: default, dedup: alert, severity: error, send_resolved: true}
rules: []
"""


def body(status: str, summary: str = "disk full", labels: dict[str, str] | None = None) -> dict[str, Any]:
    """An Alertmanager 0.25 body with one alert F (fingerprint fixed), firing or resolved."""
    alert = {
        "status": status, "labels": {"alertname": "DiskFull", "instance": "db-1:9100", **(labels or {})},
        "annotations": {"summary": summary}, "startsAt": "2026-12-01T10:00:00Z",
        "endsAt": "2026-12-01T11:00:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example/graph", "fingerprint": "00000000000000f0",
    }
    return {"receiver": "pdrelay", "status": status, "alerts": [alert], "groupLabels": {"alertname": "DiskFull"},
            "commonLabels": alert["labels"], "commonAnnotations": {}, "externalURL": "http://am.example",
            "version": "4", "groupKey": '{}:{alertname="DiskFull"}', "truncatedAlerts": 0}


def post(relay: PdRelay, payload: dict[str, Any]) -> dict[str, Any]:
    response = relay.post_alertmanager(payload)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def cli(relay: PdRelay, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "receiver", *args, "--config", str(relay.config_path)],
                          cwd=relay.workdir, capture_output=True, text=True, timeout=60, check=False)


def dead_count(relay: PdRelay) -> float:
    return relay.metric("pdrelay_events_dead_lettered_total") or 0.0


def test_a_replay_never_swallows_the_next_resolve(pd: PagerDutyStandIn, start_pdrelay: PdRelayFactory) -> None:
    """Trigger delivered; PagerDuty answers 400 while F resolves and fires again (both dead-lettered);
    PagerDuty recovers and `replay --all` runs; Alertmanager then resolves F: the resolve is sent, and
    PagerDuty's last word for F is `resolve`."""
    relay = start_pdrelay(rules=ALERT_RULES)
    post(relay, body("firing"))
    pd.wait_accepted(lambda ev: len(ev) == 1, what="the first trigger")
    pd.set_default(400)
    for payload, dead in ((body("resolved"), 1), (body("firing", summary="disk full again"), 2)):
        assert post(relay, payload)["queued"] == 1
        wait_until(lambda n=dead: dead_count(relay) >= n, what=f"{dead} dead letter(s)")  # type: ignore[misc]
    pd.set_default(202)
    run = cli(relay, "outbox", "replay", "--all")
    assert run.returncode == 0, (run.stdout, run.stderr)
    lines = run.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["not", "replayed"], lines  # the stale resolve is not needed
    pd.wait_accepted(lambda ev: len(ev) == 2, what="the replayed trigger")
    answer = post(relay, body("resolved"))
    assert (answer["queued"], answer["duplicates"]) == (1, 0)
    accepted = pd.wait_accepted(lambda ev: len(ev) == 3, what="the resolve after the replay")
    assert [r.triple[0] for r in accepted] == ["trigger", "trigger", "resolve"]
    assert {r.triple[1] for r in accepted} == {"00000000000000f0"}
    assert accepted[1].event["payload"]["summary"] == "disk full again"
    wait_until(lambda: cli(relay, "outbox", "list", "--json").stdout == "", what="an empty outbox")


PAYMENTS_KEY = "f" * 32
TYPO_RULES = """\
version: 1
defaults: {routing_key: default, dedup: alert, severity: error}
rules:
  - name: payments
    match: ['team="payments"']
    set: {routing_key: paymnets}
"""
GOOD_RULES = TYPO_RULES.replace("paymnets", "payments")
TEMPLATED_RULES = GOOD_RULES.replace("routing_key: payments", "routing_key: '{{ labels.team }}-x'")
KEYS = {"pagerduty": {"routing_keys": {"default": ROUTING_KEY, "payments": PAYMENTS_KEY}}}
REFUSAL = "rules.yaml:6: unknown routing key name 'paymnets' (configured: default, payments)"


def test_a_misspelt_routing_key_name_is_refused_everywhere(start_pdrelay: PdRelayFactory, tmp_path: Path) -> None:
    """`check-rules --config`, `serve`, `/-/reload` and SIGHUP all refuse `paymnets`, naming file and line;
    a reload keeps the last good rules."""
    relay = start_pdrelay(rules=GOOD_RULES, pagerduty=KEYS["pagerduty"])
    relay.rules_path.write_text(TYPO_RULES)
    run = subprocess.run([sys.executable, "-m", "receiver", "check-rules", "--config", str(relay.config_path),
                          "rules.yaml"], cwd=relay.workdir, capture_output=True, text=True, timeout=60, check=False)
    assert (run.returncode, run.stdout, run.stderr) == (1, "", REFUSAL + "\n")
    plain = subprocess.run([sys.executable, "-m", "receiver", "check-rules", "rules.yaml"], cwd=relay.workdir,
                           capture_output=True, text=True, timeout=60, check=False)
    assert plain.returncode == 0, plain.stderr  # without --config only the rules themselves are checked

    response = relay_post_reload(relay)
    assert response == (400, {"status": "failed", "errors": [REFUSAL.replace("rules.yaml", str(relay.rules_path))],
                              "sha256": response[1]["sha256"]})
    assert relay.proc is not None
    os.kill(relay.proc.pid, signal.SIGHUP)
    wait_until(lambda: relay.log().count("rules reload failed") >= 2, what="the SIGHUP reload refused")
    assert relay.metric("pdrelay_rules_last_reload_successful") == 0

    relay.stop()
    serve = subprocess.run([sys.executable, "-m", "receiver", "serve", "--config", str(relay.config_path),
                            "--listen", "127.0.0.1:0"], cwd=relay.workdir, capture_output=True, text=True,
                           timeout=60, check=False)
    assert serve.returncode == 2
    assert REFUSAL.replace("rules.yaml", str(relay.rules_path)) in serve.stderr


def relay_post_reload(relay: PdRelay) -> tuple[int, dict[str, Any]]:
    import httpx

    response = httpx.post(f"{relay.url}/-/reload", timeout=10)
    return response.status_code, response.json()


def test_a_dead_letter_under_an_unknown_name_is_rescued_by_a_fix_and_a_replay(
    pd: PagerDutyStandIn, start_pdrelay: PdRelayFactory
) -> None:
    """A templated name (not checkable at load) gives `payments-x`: dead-lettered at dispatch. The rule is
    fixed and reloaded; `replay --all` re-renders the routing key too, and PagerDuty gets the event on
    the payments key."""
    relay = start_pdrelay(rules=TEMPLATED_RULES, pagerduty=KEYS["pagerduty"])
    post(relay, body("firing", labels={"team": "payments"}))
    wait_until(lambda: dead_count(relay) >= 1, what="the dead letter under payments-x")
    listed = cli(relay, "outbox", "list", "--state", "dead", "--json")
    [item] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (item["routing_key"], item["reason"]) == ("payments-x", "unknown_routing_key")

    unchanged = cli(relay, "outbox", "replay", "--all")
    assert unchanged.returncode == 1
    assert unchanged.stdout == (f"cannot replay {item['id']}: the rules name routing key 'payments-x', which is "
                                "not configured (configured: default, payments)\n")

    relay.rules_path.write_text(GOOD_RULES)
    assert relay_post_reload(relay)[0] == 200
    fixed = cli(relay, "outbox", "replay", "--all")
    assert (fixed.returncode, fixed.stdout) == (0, f"replayed {item['id']} (routing key payments)\n")
    [received] = pd.wait_accepted(lambda ev: len(ev) == 1, what="the rescued trigger")
    assert (received.triple[0], received.triple[2]) == ("trigger", PAYMENTS_KEY)
    wait_until(lambda: cli(relay, "outbox", "list", "--json").stdout == "", what="an empty outbox")
