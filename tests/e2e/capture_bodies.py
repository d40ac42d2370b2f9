"""Record real Alertmanager webhook bodies into ``tests/e2e/captured/`` (run by hand, not by pytest).

    .venv/bin/python tests/e2e/capture_bodies.py [OUT_DIR]

Starts the local Alertmanager on loopback with a webhook pointing at the PagerDuty stand-in's capture
path, fires two alerts of one group, resolves one, then the other, and writes the three bodies
Alertmanager sent (byte for byte, trailing newline included): ``*_firing.json``,
``*_partial_resolve.json`` and ``*_resolved.json``. Timestamps and fingerprints are those of the run.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from e2e_support import Alertmanager, AlertSpec, PagerDutyStandIn

HERE = Path(__file__).resolve().parent
PREFIX = "am-0.25"


def storage_alert(instance: str, mountpoint: str) -> AlertSpec:
    """A node-exporter style disk alert routed to the storage team."""
    return AlertSpec(
        labels={
            "alertname": "NodeFilesystemAlmostFull",
            "cluster": "eu-west-1",
            "device": "/dev/nvme0n1p1",
            "fstype": "ext4",
            "instance": instance,
            "job": "node",
            "mountpoint": mountpoint,
            "severity": "critical",
            "team": "storage",
        },
        annotations={
            "summary": f"Filesystem {mountpoint} on {instance} has less than 5% space left",
            "description": f"Only 3.1% of {mountpoint} is free on {instance}.",
            "runbook_url": "https://runbooks.example.com/node/NodeFilesystemAlmostFull",
        },
        generator_url="http://prometheus.example:9090/graph?g0.expr=node_filesystem_avail_bytes&g0.tab=1",
    )


def capture(out_dir: Path) -> list[Path]:
    """Run the scenario and write the three bodies; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    first = storage_alert("db-1.example.com:9100", "/var/lib/postgresql")
    second = storage_alert("db-2.example.com:9100", "/var/lib/postgresql")
    route = {
        "receiver": "pdrelay",
        "matchers": ['team="storage"'],
        "group_by": ["alertname", "cluster"],
    }
    with tempfile.TemporaryDirectory(prefix="capture-") as tmp, PagerDutyStandIn() as pd:
        am = Alertmanager(Path(tmp), [pd.capture_url], repeat_interval="1h", routes=[route])
        try:
            am.start()
            steps: list[tuple[str, Callable[[], None]]] = [
                ("firing", lambda: am.fire(first, second)),
                ("partial_resolve", lambda: am.resolve(first)),
                ("resolved", lambda: am.resolve(second)),
            ]
            written = []
            for name, act in steps:
                seen = len(pd.captured())
                act()
                body = pd.wait_captured(seen + 1)[seen]
                path = out_dir / f"{PREFIX}_{name}.json"
                path.write_bytes(body)
                written.append(path)
            return written
        finally:
            am.stop()


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "captured"
    for written_path in capture(target):
        print(written_path)
