"""The command line as users run it: a real subprocess per command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def pdrelay(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "receiver", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("case", sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()))
def test_test_rules_prints_the_golden_events(case: str) -> None:
    """`pdrelay test-rules` prints exactly the events of each golden fixture."""
    d = FIXTURES / case
    done = pdrelay("test-rules", "--rules", str(d / "rules.yaml"), str(d / "webhook.json"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads((d / "expected.json").read_text())


def test_check_rules_accepts_the_example_rules() -> None:
    """The shipped example rules are valid."""
    done = pdrelay("check-rules", "rules/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: 1 file(s), sha256 ")


def test_check_rules_reports_file_and_line(tmp_path: Path) -> None:
    """A broken rules file exits 1 with file:line: message."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - name: x\n    match: ['severity=~\"(\"']\n    drop: true\n")
    done = pdrelay("check-rules", str(bad))
    assert done.returncode == 1
    assert done.stderr.startswith(f"{bad}:4: ")


def test_test_rules_refuses_a_body_that_is_not_a_notification(tmp_path: Path) -> None:
    """A bad body file is named with the field at fault, and the exit code is 1."""
    body = tmp_path / "b.json"
    body.write_text('{"version": "4"}')
    done = pdrelay("test-rules", "--rules", "rules/", str(body))
    assert done.returncode == 1
    assert done.stderr == f"{body}: not an Alertmanager webhook body at receiver: missing required field 'receiver'\n"


def test_serve_refuses_an_invalid_config(tmp_path: Path) -> None:
    """An invalid config stops serve at once with the key named, exit 2."""
    cfg = tmp_path / "pdrelay.yaml"
    cfg.write_text("pagerduty: {retry_attempts: many}\n")
    done = pdrelay("serve", "--config", str(cfg))
    assert done.returncode == 2
    assert done.stderr == "pdrelay: config: pagerduty.retry_attempts: expected an integer ≥ 1, got 'many'\n"
