"""A running pdrelay loads `module:callable` plugins only from `rules.allow_plugins`, everywhere rules load.

`serve` refuses a rules file naming another module at start (exit 2), `/-/reload` and SIGHUP keep
the last good rules, `outbox replay` refuses; none of them runs the step (its marker file never
appears). A plugin module the config allows is loaded and runs. The plugin module is written to
pdrelay's working directory, which `python -m receiver` puts on its import path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from e2e_support import PagerDutyStandIn, PdRelay, PdRelayFactory, wait_until

GOOD_RULES = "version: 1\ndefaults: {routing_key: default, dedup: alert}\nrules: []\n"
PLUGIN = '''\
"""Tags every event with its owner."""
from transforms import AlertEvent, Transform


def owner(name: str) -> Transform:
    def transform(event: AlertEvent) -> AlertEvent:
        event.fields["custom_details"] = {"owner": name}
        return event

    return transform
'''
PLUGIN_RULES = GOOD_RULES.replace("rules: []", "rules:\n  - transform: acme_owner:owner\n    with: {name: team-db}")


def os_system_rules(marker: Path) -> str:
    return GOOD_RULES.replace(
        "rules: []", f"rules:\n  - transform: os:system\n    with: {{command: 'touch {marker}'}}")


def refusal(relay: PdRelay, allowed: str = "none configured") -> str:
    return (f"{relay.rules_path}:4: plugin 'os:system' is not allowed: module 'os' is not under"
            f" rules.allow_plugins ({allowed})")


def body() -> dict[str, object]:
    alert = {"status": "firing", "labels": {"alertname": "DiskFull"}, "annotations": {},
             "startsAt": "2026-12-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "http://prometheus.example/graph", "fingerprint": "00000000000000f1"}
    return {"receiver": "pdrelay", "status": "firing", "alerts": [alert], "groupLabels": {},
            "commonLabels": alert["labels"], "commonAnnotations": {}, "externalURL": "http://am.example",
            "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0}


def test_a_plugin_outside_the_allow_list_is_refused_everywhere(start_pdrelay: PdRelayFactory) -> None:
    """`os:system` is refused by `/-/reload`, SIGHUP, `outbox replay` and `serve`, and never runs."""
    relay = start_pdrelay(rules=GOOD_RULES)
    marker = relay.workdir / "pwned"
    relay.rules_path.write_text(os_system_rules(marker))

    reload = httpx.post(f"{relay.url}/-/reload", timeout=10)
    assert (reload.status_code, reload.json()["status"], reload.json()["errors"]) == (400, "failed", [refusal(relay)])
    assert relay.proc is not None
    os.kill(relay.proc.pid, signal.SIGHUP)
    wait_until(lambda: relay.log().count("rules reload failed") >= 2, what="the SIGHUP reload refused")
    assert relay.metric("pdrelay_rules_last_reload_successful") == 0
    assert relay.post_alertmanager(body()).status_code == 200  # the last good rules still serve

    replay = subprocess.run([sys.executable, "-m", "receiver", "outbox", "replay", "--all", "--config",
                             str(relay.config_path)], cwd=relay.workdir, capture_output=True, text=True,
                            timeout=60, check=False)
    assert (replay.returncode, replay.stdout, replay.stderr) == (2, "", refusal(relay) + "\n")

    relay.stop()
    serve = subprocess.run([sys.executable, "-m", "receiver", "serve", "--config", str(relay.config_path),
                            "--listen", "127.0.0.1:0"], cwd=relay.workdir, capture_output=True, text=True,
                           timeout=60, check=False)
    assert serve.returncode == 2
    assert refusal(relay) in serve.stderr
    assert not marker.exists()


def test_a_plugin_the_config_allows_runs(pd: PagerDutyStandIn, start_pdrelay: PdRelayFactory) -> None:
    """With `rules.allow_plugins: [acme_owner]`, a reload to a rules file using it succeeds and its
    events carry what it set; `os:system` stays refused, naming what is configured."""
    relay = start_pdrelay(rules=GOOD_RULES,
                          config={"rules": {"paths": ["rules.yaml"], "allow_plugins": ["acme_owner"]}})
    (relay.workdir / "acme_owner.py").write_text(PLUGIN)
    relay.rules_path.write_text(PLUGIN_RULES)
    assert httpx.post(f"{relay.url}/-/reload", timeout=10).status_code == 200
    assert relay.post_alertmanager(body()).status_code == 200
    [received] = pd.wait_accepted(lambda ev: len(ev) == 1, what="the event the plugin tagged")
    assert received.event["payload"]["custom_details"] == {"owner": "team-db"}

    relay.rules_path.write_text(os_system_rules(relay.workdir / "pwned"))
    reload = httpx.post(f"{relay.url}/-/reload", timeout=10)
    assert (reload.status_code, reload.json()["errors"]) == (400, [refusal(relay, "configured: acme_owner")])
    assert not (relay.workdir / "pwned").exists()
