"""A running pdrelay loads `module:callable` plugins only from `rules.allow_plugins`, everywhere rules load.

`serve` refuses a rules file naming another module at start (exit 2), `/-/reload` and SIGHUP keep
the last good rules, `outbox replay` refuses; none of them runs the step (its marker file never
appears).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from e2e_support import PdRelay, PdRelayFactory, wait_until

GOOD_RULES = "version: 1\ndefaults: {routing_key: default, dedup: alert}\nrules: []\n"


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
