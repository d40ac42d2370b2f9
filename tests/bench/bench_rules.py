"""Rule-engine benchmark: alerts/s of ``RuleSet.evaluate`` with rules/default.yaml (run by hand).

    .venv/bin/python tests/bench/bench_rules.py [--rounds 5] [--notifications 2000] [--no-fast-path]

One core, no I/O. Each notification is a realistic 3-alert Alertmanager body, already parsed
into a ``Group`` (parsing is the receiver's job and is measured by bench_intake.py); 1,000
distinct bodies are cycled so no two consecutive evaluations see the same labels.

- **per-alert**: three node/api/database alerts going through every default rule
  (severity_map, extract, set with nested custom_details and links, matchers), one
  event per alert;
- **grouped**: three alerts labelled ``pagerduty_dedup="group"``: one collapsed event, its
  summary rendered by sandboxed Jinja;
- **baseline**: the least any relay does per alert -- build the Events v2 body by hand from
  the labels (no rules), encode it as canonical JSON and hash it.

The figure is the best of ``--rounds`` runs, also shown as µs per 3-alert body; the target
is 50,000 alerts/s for per-alert (60 µs per body). ``--no-fast-path`` renders every template
with Jinja's own sandboxed render (what the template fast path is measured against).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from transforms import Alert, Group, load_rules  # noqa: E402
from transforms.template import compile_template  # noqa: E402

ZERO = "0001-01-01T00:00:00Z"
DISTINCT = 1000


def _alert(labels: dict[str, str], annotations: dict[str, str], fingerprint: str) -> Alert:
    return Alert(
        status="firing",
        labels=labels,
        annotations=annotations,
        starts_at="2026-11-25T09:54:58.347Z",
        ends_at=ZERO,
        generator_url="http://prometheus.example:9090/graph?g0.expr=node_filesystem_avail_bytes&g0.tab=1",
        fingerprint=fingerprint,
    )


def _group(alerts: list[Alert], n: int) -> Group:
    return Group(
        receiver="pdrelay",
        status="firing",
        group_key=f'{{}}/{{env=~"prod|staging"}}:{{cluster="eu-west-{n}"}}',
        group_labels={"cluster": f"eu-west-{n}"},
        common_labels={"cluster": f"eu-west-{n}"},
        common_annotations={},
        external_url="http://alertmanager.monitoring.svc:9093",
        alerts=alerts,
        notification_reason="first notification",
        route_labels={},
    )


def per_alert_bodies() -> list[Group]:
    groups = []
    for n in range(DISTINCT):
        cluster = {"cluster": f"eu-west-{n}", "env": "prod"}
        groups.append(
            _group(
                [
                    _alert(
                        {
                            "alertname": "HighRequestLatency",
                            "instance": f"api-{n}.example.com:8080",
                            "job": "api",
                            "severity": "page",
                            **cluster,
                        },
                        {
                            "summary": f"p99 latency of api-{n} is 2.4s",
                            "runbook_url": "https://runbooks.example.com/api",
                        },
                        f"{n:08x}00000001",
                    ),
                    _alert(
                        {
                            "alertname": "PostgresReplicationLag",
                            "instance": f"db-{n}.example.com:9187",
                            "job": "postgres",
                            "severity": "warning",
                            "team": "db",
                            **cluster,
                        },
                        {
                            "summary": f"replica db-{n} is 45s behind",
                            "description": "Replication lag above 30s.",
                        },
                        f"{n:08x}00000002",
                    ),
                    _alert(
                        {
                            "alertname": "NodeFilesystemAlmostFull",
                            "device": "/dev/nvme0n1p1",
                            "fstype": "ext4",
                            "instance": f"db-{n}.example.com:9100",
                            "job": "node",
                            "mountpoint": "/var/lib/postgresql",
                            "severity": "critical",
                            **cluster,
                        },
                        {
                            "description": f"Only 3.1% of /var/lib/postgresql is free on db-{n}.",
                            "runbook_url": "https://runbooks.example.com/node/NodeFilesystemAlmostFull",
                            "summary": f"Filesystem /var/lib/postgresql on db-{n} has less than 5% space left",
                        },
                        f"{n:08x}00000003",
                    ),
                ],
                n,
            )
        )
    return groups


def grouped_bodies() -> list[Group]:
    groups = []
    for n in range(DISTINCT):
        alerts = [
            _alert(
                {
                    "alertname": "BackupJobFailed",
                    "cluster": f"eu-west-{n}",
                    "database": db,
                    "env": "prod",
                    "job": "backup",
                    "pagerduty_dedup": "group",
                    "severity": "critical",
                },
                {"summary": f"Nightly backup of {db} failed"},
                f"{n:08x}0000000{i}",
            )
            for i, db in enumerate(("orders", "payments", "users"))
        ]
        groups.append(_group(alerts, n))
    return groups


def baseline(group: Group) -> list[tuple[str, dict[str, Any]]]:
    """The Events v2 bodies built by hand, without rules: the floor for any relay."""
    out = []
    for alert in group.alerts:
        labels = alert.labels
        body = {
            "event_action": "trigger" if alert.status == "firing" else "resolve",
            "dedup_key": alert.fingerprint,
            "payload": {
                "summary": alert.annotations.get("summary") or labels.get("alertname", ""),
                "source": labels.get("instance") or labels.get("job") or "alertmanager",
                "severity": labels.get("severity")
                if labels.get("severity") in ("critical", "warning")
                else "error",
                "timestamp": alert.starts_at,
                "custom_details": {"labels": dict(labels), "annotations": dict(alert.annotations)},
            },
            "client": "Alertmanager",
            "client_url": f"{group.external_url}/#/alerts?receiver={group.receiver}",
            "links": [{"href": alert.generator_url, "text": "Prometheus"}],
        }
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        out.append((hashlib.sha256(canonical.encode()).hexdigest(), body))
    return out


def measure(
    run: Callable[[Group], object], groups: Sequence[Group], notifications: int, rounds: int
) -> float:
    """Best alerts/s over ``rounds`` runs of ``notifications`` evaluations."""
    alerts_per = len(groups[0].alerts)
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(notifications):
            run(groups[i % len(groups)])
        elapsed = time.perf_counter() - start
        best = max(best, notifications * alerts_per / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument("--no-fast-path", action="store_true", help="render every template with Jinja")
    args = parser.parse_args()
    if args.no_fast_path:
        assert compile_template.__kwdefaults__ is not None
        compile_template.__kwdefaults__["fast"] = False  # the rules loader compiles with the default

    rules = load_rules([ROOT / "rules" / "default.yaml"])
    per_alert = per_alert_bodies()
    grouped = grouped_bodies()
    check = rules.evaluate(per_alert[0])
    assert len(check.events) == 3 and not check.template_errors, check
    check = rules.evaluate(grouped[0])
    assert len(check.events) == 1 and not check.template_errors, check

    base = measure(baseline, per_alert, args.notifications, args.rounds)
    engine = measure(rules.evaluate, per_alert, args.notifications, args.rounds)
    group = measure(rules.evaluate, grouped, args.notifications, args.rounds)
    templates = "Jinja for every template" if args.no_fast_path else "template fast path"
    print(f"python {sys.version.split()[0]}, rules/default.yaml, {templates}, 3-alert bodies, best of {args.rounds}")
    alerts_per_body = len(per_alert[0].alerts)
    for label, rate in (
        ("baseline (hand-built bodies)", base),
        ("engine, per-alert events", engine),
        ("engine, grouped (Jinja)", group),
    ):
        ratio = "" if rate is base else f"   {rate / base:.2f} x baseline"
        print(f"{label:<30}{rate:10,.0f} alerts/s  {alerts_per_body * 1e6 / rate:6.1f} µs/body{ratio}")
    print(f"target 50,000 alerts/s: {'met' if engine >= 50_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
