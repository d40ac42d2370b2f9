"""The shipped configs working together: a real Alertmanager on the StatefulSet example's alertmanager.yml and
pdrelay on the pdrelay-config ConfigMap's pdrelay.yaml, with the pdrelay-rules ConfigMap's rules and the
Secret's files, page a PagerDuty stand-in through both routing keys.

What differs from the pod, and only that: files live under tmp_path instead of /run/secrets/pdrelay,
/etc/pdrelay/rules and /var/lib/pdrelay/data; pdrelay listens on 127.0.0.1:<port 0> instead of
0.0.0.0:9095 (so Alertmanager's url names that port); PagerDuty is the stand-in on loopback; the routing
keys are 32-character test keys instead of the REPLACE-ME placeholders; and Alertmanager's group_wait /
group_interval are 1 s instead of 30 s / 5 m."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_support import ALERTMANAGER_BIN, LOOPBACK, Alertmanager, AlertSpec, PagerDutyStandIn, PdRelay, wait_until
from manifests import find, manifest_files, resources

pytestmark = pytest.mark.e2e

KEYS = {"routing-key-default": "d" * 32, "routing-key-db-oncall": "b" * 32}
POD_PATHS = {"/run/secrets/pdrelay/": "secrets", "/etc/pdrelay/rules/": "rules", "/var/lib/pdrelay/data/": "data"}


def test_alertmanager_and_pdrelay_as_shipped_page_through_both_routing_keys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ALERTMANAGER_BIN.exists(), f"{ALERTMANAGER_BIN} is missing (Debian package prometheus-alertmanager)"
    found = resources(manifest_files())
    secret = {**find(found, "Secret", "pdrelay").body["stringData"], **KEYS}
    for folder in POD_PATHS.values():
        (tmp_path / folder).mkdir()
    for key, value in secret.items():
        (tmp_path / "secrets" / key).write_text(value, encoding="utf-8")
    for key, text in find(found, "ConfigMap", "pdrelay-rules").body["data"].items():
        (tmp_path / "rules" / key).write_text(text, encoding="utf-8")
    text = find(found, "ConfigMap", "pdrelay-config").body["data"]["pdrelay.yaml"]
    for pod_path, folder in POD_PATHS.items():
        text = text.replace(pod_path, f"{tmp_path / folder}/")
    monkeypatch.setenv("PDRELAY_INTAKE_TOKEN", secret["intake-token"])

    am_config: dict[str, Any] = yaml.safe_load(
        find(found, "ConfigMap", "alertmanager-config").body["data"]["alertmanager.yml"])
    (webhook,) = am_config["receivers"][0]["webhook_configs"]
    assert webhook["url"] == "http://127.0.0.1:9095/v1/alertmanager"
    assert webhook["http_config"]["authorization"]["credentials_file"] == (
        "/etc/alertmanager/secrets/pdrelay/intake-token")
    webhook["http_config"]["authorization"]["credentials_file"] = str(tmp_path / "secrets" / "intake-token")
    am_config["route"].update(group_wait="1s", group_interval="1s")

    with PagerDutyStandIn() as pd:
        relay = PdRelay(tmp_path / "pdrelay", events_url=pd.events_url)
        relay.config = yaml.safe_load(text)
        relay.config["pagerduty"].update(events_url=pd.events_url, allowed_hosts=[LOOPBACK])
        relay.start()
        am = Alertmanager(tmp_path / "alertmanager", [])
        try:
            webhook["url"] = relay.alertmanager_url
            am.config = am_config
            am.start()
            am.fire(AlertSpec({"alertname": "DiskFull", "team": "db", "instance": "db-1:9100", "severity": "page"},
                              {"summary": "disk full on db-1"}),
                    AlertSpec({"alertname": "Watchdog"}),
                    AlertSpec({"alertname": "HighLatency", "instance": "web-1:9100", "env": "staging",
                               "severity": "critical", "namespace": "shop"}))
            events = pd.wait_accepted(lambda got: len(got) >= 2, what="two events at the stand-in")
            assert sorted((e.event["routing_key"], e.event["event_action"], e.event["payload"]["summary"],
                           e.event["payload"]["source"], e.event["payload"]["severity"]) for e in events) == [
                ("b" * 32, "trigger", "disk full on db-1", "db-1", "critical"),
                ("d" * 32, "trigger", "HighLatency", "web-1", "warning"),
            ]
            # Watchdog's group is posted on its own: wait for its body, dropped by the rules
            wait_until(lambda: relay.metric("pdrelay_alerts_dropped_total") == 1, what="Watchdog dropped")
            assert relay.metric("pdrelay_auth_refused_total") == 0
            assert len(pd.received()) == 2
        finally:
            am.stop()
            relay.stop()
