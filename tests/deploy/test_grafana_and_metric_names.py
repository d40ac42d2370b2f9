"""deploy/grafana/pdrelay.json is what deploy/grafana/build_dashboard.py builds with grafana-foundation-sdk, and
every metric that it and the alert rules (deploy/prometheus-rules.yaml) query is served by a real pdrelay: the
app started in this process with two routing keys and named rules, its /metrics scraped at once (every label
combination is created at start, so a metric that needs traffic to appear would fail here)."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient
from manifests import DEPLOY
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from receiver.app import Deps, create_app
from receiver.secret import Secret
from receiver.settings import AuditSettings, OutboxSettings, PagerDutySettings, RulesSettings, Settings

GRAFANA = DEPLOY / "grafana"
# A metric name in PromQL: pdrelay's own, the process/platform/gc collectors', and Prometheus' `up`.
METRIC = re.compile(r"\b(?:pdrelay|process|python)_[a-z0-9_]+\b")
# `by (a, b) (f(metric` / `by (a, b) (metric`: the labels an aggregation keeps, and the metric it reads.
GROUPED = re.compile(r"by \(([a-z_, ]+)\) \((?:[a-z_]+\()?((?:pdrelay|process|python)_[a-z0-9_]+)")
QUERIED = [
    "pdrelay_alerts_dropped_total", "pdrelay_alerts_received_total", "pdrelay_audit_errors_total",
    "pdrelay_auth_refused_total", "pdrelay_bodies_rejected_total", "pdrelay_breaker_state", "pdrelay_build_info",
    "pdrelay_dispatcher_restarts_total", "pdrelay_dry_run", "pdrelay_events_dead_lettered_total",
    "pdrelay_events_enqueued_total", "pdrelay_events_failed_total", "pdrelay_events_sent_total",
    "pdrelay_events_throttled_total", "pdrelay_intake_responses_total", "pdrelay_limiter_wait_seconds_bucket",
    "pdrelay_outbox_available", "pdrelay_outbox_depth", "pdrelay_outbox_oldest_queued_age_seconds",
    "pdrelay_outbox_queued",
    "pdrelay_rule_hits_total", "pdrelay_rules_last_reload_success_timestamp_seconds",
    "pdrelay_rules_last_reload_successful", "pdrelay_send_duration_seconds_bucket", "pdrelay_template_errors_total",
    "process_cpu_seconds_total", "process_open_fds", "process_resident_memory_bytes",
    "python_gc_objects_collected_total",
]
ClientFactory = Callable[..., Any]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads((GRAFANA / "pdrelay.json").read_text(encoding="utf-8"))
    return board


def walk_exprs(node: Any) -> Iterator[str]:
    """Every PromQL text of the dashboard: panel targets' ``expr`` and variables' ``query``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query") and isinstance(value, str):
                yield value
            else:
                yield from walk_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_exprs(item)


def rule_exprs() -> list[str]:
    groups = yaml.safe_load((DEPLOY / "prometheus-rules.yaml").read_text(encoding="utf-8"))["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_the_committed_dashboard_is_the_generators_output() -> None:
    assert generator().render() == (GRAFANA / "pdrelay.json").read_text(encoding="utf-8")


def test_the_dashboard_has_a_routing_key_variable_and_the_panels_it_promises() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance", "routing_key"]
    assert variables["routing_key"]["query"]["query"] == 'label_values(pdrelay_outbox_queued{job=~"$job"}, routing_key)'
    assert [(p["type"], p["title"]) for p in board["panels"] if p["type"] != "row"] == [
        ("stat", "pdrelay up"), ("stat", "Version"), ("stat", "Dry-run"), ("stat", "Queued"),
        ("stat", "Oldest queued"), ("stat", "Dead letters stored"),
        ("timeseries", "Intake answers"), ("timeseries", "Refused bodies"), ("timeseries", "Alerts"),
        ("timeseries", "Auth refusals"),
        ("timeseries", "Enqueued"), ("timeseries", "Sent"), ("timeseries", "Dead-lettered"),
        ("timeseries", "Throttled (429)"),
        ("timeseries", "Queue depth"), ("timeseries", "Oldest queued age"),
        ("heatmap", "Limiter wait"), ("timeseries", "Limiter wait p99"), ("timeseries", "Send latency"),
        ("timeseries", "Failed attempts"), ("state-timeline", "Circuit breaker"),
        ("timeseries", "Dispatcher restarts and audit errors"),
        ("timeseries", "Rule hits"), ("timeseries", "Rules reloads"),
        ("timeseries", "Memory"), ("timeseries", "CPU"), ("timeseries", "Open files"), ("timeseries", "Python GC"),
    ]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    per_key = [e for e in walk_exprs(board) if "routing_key" in e and "label_values" not in e]
    assert per_key and all('routing_key=~"$routing_key"' in e for e in per_key)


@pytest.fixture
async def scraped(tmp_path: Path, aiohttp_client: ClientFactory) -> dict[str, set[str]]:
    """Each sample name of a freshly started pdrelay's /metrics (two routing keys, two named rules), with the
    label names its series carry."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\ndefaults: {routing_key: default, dedup: alert}\nrules:\n"
                     "  - {name: db, match: ['team=\"db\"'], set: {routing_key: db-oncall}}\n"
                     "  - {name: heartbeat, match: ['alertname=\"Watchdog\"'], drop: true}\n", encoding="utf-8")
    settings = Settings(
        pagerduty=PagerDutySettings(routing_keys={"default": Secret("k" * 32), "db-oncall": Secret("d" * 32)}),
        outbox=OutboxSettings(path=tmp_path / "outbox.db"), rules=RulesSettings(paths=(rules,)),
        audit=AuditSettings(path=tmp_path / "audit.jsonl"))
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, Deps(registry=CollectorRegistry())))
    response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


async def test_every_metric_the_dashboard_and_the_alerts_query_is_served(scraped: dict[str, set[str]]) -> None:
    exprs = [*walk_exprs(dashboard()), *rule_exprs()]
    queried = sorted({m for expr in exprs for m in METRIC.findall(expr)})
    assert queried == QUERIED
    assert [m for m in queried if m not in scraped] == []


async def test_every_label_the_queries_group_by_is_on_the_metric(scraped: dict[str, set[str]]) -> None:
    grouped = {(metric, label.strip()) for expr in [*walk_exprs(dashboard()), *rule_exprs()]
               for labels, metric in GROUPED.findall(expr) for label in labels.split(",")}
    assert len(grouped) == 30
    missing = [(metric, label) for metric, label in sorted(grouped)
               if label not in scraped.get(metric, set()) and label != "instance"]  # instance: added by the scrape
    assert missing == []
