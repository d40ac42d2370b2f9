"""deploy/kubernetes as a cluster would take it: core kinds against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict: an unknown field fails), prometheus-operator's kinds against their CRD schemas
made strict (check-jsonschema), every Alertmanager config in them through ``amtool check-config``, the names
they refer to defined next to them, and pdrelay's config and rules from the ConfigMaps loaded by pdrelay."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from manifests import (
    DEPLOY,
    KUBERNETES_VERSION,
    REPO,
    Resource,
    Run,
    SchemaReport,
    alertmanager_configs,
    check_jsonschema,
    find,
    manifest_files,
    resources,
    run,
)

from receiver.settings import load_settings

pytestmark = pytest.mark.e2e

EXPECTED = {  # what the examples are made of: a file or resource left out would not be checked
    "operator.yaml": ["Alertmanager/main", "AlertmanagerConfig/pdrelay", "Service/pdrelay", "ServiceMonitor/pdrelay"],
    "pdrelay-config.yaml": ["Secret/pdrelay", "ConfigMap/pdrelay-config", "ConfigMap/pdrelay-rules"],
    "prometheus-rule.yaml": ["PrometheusRule/pdrelay"],
    "statefulset.yaml": ["ConfigMap/alertmanager-config", "Service/alertmanager", "StatefulSet/alertmanager"],
}


@pytest.fixture(scope="module")
def found() -> list[Resource]:
    return resources(manifest_files())


def broken_alertmanagers(found: list[Resource]) -> list[Resource]:
    """Two copies of the operator's Alertmanager with a typo: in its spec, and in pdrelay's container."""
    spec = json.loads(json.dumps(find(found, "Alertmanager", "main").body))
    spec["spec"]["alertmanagerConfigurations"] = spec["spec"].pop("alertmanagerConfiguration")
    container = json.loads(json.dumps(find(found, "Alertmanager", "main").body))
    container["spec"]["containers"][0]["volumeMount"] = container["spec"]["containers"][0].pop("volumeMounts")
    return [Resource(Path("broken-spec.yaml"), spec), Resource(Path("broken-container.yaml"), container)]


@pytest.fixture(scope="module")
def schema_reports(found: list[Resource], tmp_path_factory: pytest.TempPathFactory) -> dict[str, SchemaReport]:
    """One check-jsonschema run per kind over the shipped resources; the Alertmanager run also gets a broken
    copy (a run costs seconds: the negative case rides along)."""
    checked = [r for r in found if r.crd] + broken_alertmanagers(found)
    return {report.kind: report for report in check_jsonschema(checked, tmp_path_factory.mktemp("crd"))}


@pytest.fixture(scope="module")
def amtool_run(found: list[Resource], tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Run]:
    """Where each config comes from, and one ``amtool check-config`` run over all of them."""
    tmp = tmp_path_factory.mktemp("am")
    files = {}
    for n, (where, text) in enumerate(alertmanager_configs(found)):
        path = tmp / f"alertmanager-{n}.yml"
        path.write_text(text, encoding="utf-8")
        files[where] = path
    return list(files), run(["amtool", "check-config", *map(str, files.values())])


def validate_core(body: dict[str, Any]) -> str:
    """kubernetes-validate's refusal of a core resource, or "" when it passes."""
    try:
        kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{exc.path}: {exc.message}" if hasattr(exc, "path") else str(exc)
    return ""


def test_the_examples_are_made_of_the_expected_resources(found: list[Resource]) -> None:
    listed: dict[str, list[str]] = {}
    for r in found:
        listed.setdefault(r.file.name, []).append(f"{r.kind}/{r.name}")
    assert listed == EXPECTED


def test_core_kinds_pass_the_kubernetes_schemas_strictly(found: list[Resource]) -> None:
    core = [r for r in found if not r.crd]
    assert len(core) == 7
    assert {str(r): validate_core(r.body) for r in core} == {str(r): "" for r in core}


def test_a_typo_in_a_core_kind_is_refused(found: list[Resource]) -> None:
    body = json.loads(json.dumps(find(found, "StatefulSet", "alertmanager").body))
    container = body["spec"]["template"]["spec"]["containers"][1]
    container["readinesProbe"] = container.pop("readinessProbe")
    assert "readinesProbe" in validate_core(body)


def test_operator_kinds_pass_their_crd_schemas_with_unknown_fields_refused(
        schema_reports: dict[str, SchemaReport]) -> None:
    """Only the broken copy is refused."""
    assert {kind: (r.returncode, sorted(r.errors)) for kind, r in schema_reports.items()} == {
        "Alertmanager": (1, ["broken-container--Alertmanager-main.json", "broken-spec--Alertmanager-main.json"]),
        "AlertmanagerConfig": (0, []),
        "PrometheusRule": (0, []),
        "ServiceMonitor": (0, []),
    }


def test_a_typo_in_an_operator_kind_is_refused(schema_reports: dict[str, SchemaReport]) -> None:
    assert schema_reports["Alertmanager"].errors == {
        "broken-spec--Alertmanager-main.json": [
            "$.spec: Additional properties are not allowed ('alertmanagerConfigurations' was unexpected)"],
        "broken-container--Alertmanager-main.json": [
            "$.spec.containers[0]: Additional properties are not allowed ('volumeMount' was unexpected)"],
    }


def test_every_alertmanager_config_passes_amtool(amtool_run: tuple[list[str], Run]) -> None:
    wheres, result = amtool_run
    assert sorted(wheres) == [
        "operator.yaml: AlertmanagerConfig/pdrelay",
        "statefulset.yaml: ConfigMap/alertmanager-config [alertmanager.yml]",
    ]
    assert result.failures == ""
    assert result.output.count("SUCCESS") == 2


def test_a_typo_in_an_alertmanager_config_is_refused(found: list[Resource], tmp_path: Path) -> None:
    (_, text) = next(c for c in alertmanager_configs(found) if "ConfigMap/alertmanager-config" in c[0])
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(text.replace("send_resolved:", "send_resolve:"), encoding="utf-8")
    result = run(["amtool", "check-config", str(broken)])
    assert result.returncode == 1
    assert "field send_resolve not found" in result.output


def test_the_operator_example_posts_to_pdrelay_with_the_secret_token(found: list[Resource]) -> None:
    alertmanager, config = find(found, "Alertmanager", "main"), find(found, "AlertmanagerConfig", "pdrelay")
    assert alertmanager.body["spec"]["alertmanagerConfiguration"] == {"name": "pdrelay"}
    (receiver,) = config.body["spec"]["receivers"]
    (webhook,) = receiver["webhookConfigs"]
    assert webhook["url"] == "http://127.0.0.1:9095/v1/alertmanager"
    assert webhook["httpConfig"]["authorization"] == {"type": "Bearer",
                                                      "credentials": {"name": "pdrelay", "key": "intake-token"}}


def pod_specs(found: list[Resource]) -> Iterator[tuple[Resource, dict[str, Any], set[str]]]:
    """(resource, pod spec, volume names the pod has) for the StatefulSet and the operator's Alertmanager
    (whose PVC the operator mounts as volume alertmanager-<name>-db)."""
    for r in found:
        if r.kind == "StatefulSet":
            spec = r.body["spec"]["template"]["spec"]
            claims = {c["metadata"]["name"] for c in r.body["spec"].get("volumeClaimTemplates", [])}
            yield r, spec, {v["name"] for v in spec["volumes"]} | claims
        elif r.kind == "Alertmanager":
            spec = r.body["spec"]
            yield r, spec, {v["name"] for v in spec["volumes"]} | {f"alertmanager-{r.name}-db"}


def test_every_name_a_pod_refers_to_is_defined(found: list[Resource]) -> None:
    """Volumes, ConfigMaps, Secrets and their keys, as the pods name them; the config file the pdrelay
    container is given lies in the ConfigMap mounted there."""
    defined = {(r.kind, r.name): set((r.body.get("data") or r.body.get("stringData") or {}).keys())
               for r in found if r.kind in ("ConfigMap", "Secret")}
    missing = []
    specs = list(pod_specs(found))
    assert len(specs) == 2
    for r, spec, volumes in specs:
        for v in spec["volumes"]:
            if "configMap" in v and ("ConfigMap", v["configMap"]["name"]) not in defined:
                missing.append(f"{r}: ConfigMap {v['configMap']['name']}")
            if "secret" in v and ("Secret", v["secret"]["secretName"]) not in defined:
                missing.append(f"{r}: Secret {v['secret']['secretName']}")
        for c in spec["containers"]:
            missing += [f"{r}: volume {m['name']}" for m in c["volumeMounts"] if m["name"] not in volumes]
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["key"] not in defined.get(("Secret", ref["name"]), set()):
                    missing.append(f"{r}: {c['name']} env {env['name']}: Secret {ref['name']} key {ref['key']}")
        (pdrelay,) = [c for c in spec["containers"] if c["name"] == "pdrelay"]
        assert pdrelay["args"] == ["serve", "--config", "/etc/pdrelay/config/pdrelay.yaml"]
        mounts = {m["mountPath"]: m["name"] for m in pdrelay["volumeMounts"]}
        (config_volume,) = [v for v in spec["volumes"] if v["name"] == mounts["/etc/pdrelay/config"]]
        assert "pdrelay.yaml" in defined[("ConfigMap", config_volume["configMap"]["name"])]
        assert pdrelay["securityContext"] == {
            "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        assert spec["securityContext"]["fsGroup"] == 10001
        assert (pdrelay["livenessProbe"]["httpGet"]["path"], pdrelay["readinessProbe"]["httpGet"]["path"]) == (
            "/healthz", "/readyz")
    assert missing == []


def test_the_configmaps_hold_a_config_and_rules_pdrelay_loads(found: list[Resource], tmp_path: Path) -> None:
    """pdrelay.yaml from the ConfigMap with the Secret's files where the pod mounts them (here: under tmp_path),
    and the rules ConfigMap through `pdrelay check-rules` with that config."""
    secret = find(found, "Secret", "pdrelay").body["stringData"]
    (tmp_path / "secrets").mkdir()
    for key, value in secret.items():
        (tmp_path / "secrets" / key).write_text(value, encoding="utf-8")
    (tmp_path / "rules").mkdir()
    for key, text in find(found, "ConfigMap", "pdrelay-rules").body["data"].items():
        (tmp_path / "rules" / key).write_text(text, encoding="utf-8")
    text = find(found, "ConfigMap", "pdrelay-config").body["data"]["pdrelay.yaml"]
    for pod_path, here in (("/run/secrets/pdrelay/", "secrets/"), ("/var/lib/pdrelay/data/", "data/"),
                           ("/etc/pdrelay/rules/", "rules/")):
        assert pod_path in text
        text = text.replace(pod_path, f"{tmp_path}/{here}")
    config = tmp_path / "pdrelay.yaml"
    config.write_text(text, encoding="utf-8")
    settings = load_settings(config, {"PDRELAY_INTAKE_TOKEN": secret["intake-token"]})
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 9095)
    assert {n: k.reveal() for n, k in settings.pagerduty.routing_keys.items()} == {
        "default": secret["routing-key-default"], "db-oncall": secret["routing-key-db-oncall"]}
    assert all("REPLACE-ME" in value for value in secret.values())
    checked = subprocess.run([sys.executable, "-m", "receiver", "check-rules", "--config", str(config),
                              str(tmp_path / "rules")], capture_output=True, text=True, cwd=REPO, check=False,
                             env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert (checked.returncode, checked.stderr) == (0, "")
    assert checked.stdout.startswith("ok: 1 file(s), sha256 ")


def test_the_prometheus_rule_holds_the_alert_rules_file(found: list[Resource]) -> None:
    shipped = yaml.safe_load((DEPLOY / "prometheus-rules.yaml").read_text(encoding="utf-8"))
    assert find(found, "PrometheusRule", "pdrelay").body["spec"]["groups"] == shipped["groups"]
