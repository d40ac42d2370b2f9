"""Every file under deploy/ is one the deploy tests check, so a file added there without a check fails here."""

from __future__ import annotations

from manifests import DEPLOY

CHECKED_BY = {
    "Dockerfile": "test_dockerfile_lint.py (hadolint), test_image_filesystem.py (replayed and started)",
    "grafana/build_dashboard.py": "test_grafana_and_metric_names.py (its output is the committed JSON)",
    "grafana/pdrelay.json": "test_grafana_and_metric_names.py (every metric it queries is served)",
    "kubernetes/operator.yaml": "test_kubernetes.py (CRD schemas, kubernetes-validate, amtool)",
    "kubernetes/pdrelay-config.yaml": "test_kubernetes.py, test_shipped_configs_e2e.py (pdrelay runs on it)",
    "kubernetes/prometheus-rule.yaml": "test_kubernetes.py (CRD schema; the same groups as prometheus-rules.yaml)",
    "kubernetes/statefulset.yaml": "test_kubernetes.py, test_shipped_configs_e2e.py (Alertmanager runs on it)",
    "prometheus-rules.test.yaml": "test_alert_rules.py (promtool test rules)",
    "prometheus-rules.yaml": "test_alert_rules.py (promtool check rules and test rules)",
    "systemd/pdrelay.service": "test_systemd_unit.py (systemd-analyze verify and security)",
    "systemd/pdrelay.yaml": "test_systemd_unit.py (loads with the unit's credentials)",
}


def test_every_file_under_deploy_is_checked() -> None:
    present = sorted(str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts)
    assert present == sorted(CHECKED_BY)
