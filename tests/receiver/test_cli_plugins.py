"""`check-rules` and `test-rules` run no code a rules file names unless the config allows its module.

`check-rules` is what users run on a rules change from a pull request: a `transform: os:system`
step used to be imported and called there. Each test runs the real command in a subprocess; the
allowed plugin package is ``tests/transforms/acme_sample``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "tests" / "transforms"  # acme_sample lives there
FIXTURE = ROOT / "tests" / "fixtures" / "am025-per-alert-firing" / "webhook.json"


def pdrelay(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "receiver", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def os_system_rules(tmp_path: Path) -> tuple[Path, Path]:
    """A rules file whose step would create ``marker`` if ``os:system`` were called; and ``marker``."""
    marker = tmp_path / "pwned"
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"version: 1\nrules:\n  - name: x\n    transform: os:system\n"
                     f"    with: {{command: 'touch {marker}'}}\n")
    return rules, marker


def config(tmp_path: Path, allow: list[str]) -> Path:
    path = tmp_path / "pdrelay.yaml"
    path.write_text(f"rules:\n  allow_plugins: {allow}\n")
    return path


def test_check_rules_refuses_os_system_without_running_it(tmp_path: Path) -> None:
    """Exit 1, the step named with its file and line, and the command never ran: no marker file."""
    rules, marker = os_system_rules(tmp_path)
    done = pdrelay("check-rules", str(rules))
    assert (done.returncode, done.stdout, done.stderr) == (
        1, "", f"{rules}:4: plugin 'os:system' is not allowed: module 'os' is not under rules.allow_plugins"
               " (none configured)\n")
    assert not marker.exists()


def test_check_rules_with_a_config_refuses_os_system_too(tmp_path: Path) -> None:
    """With --config, its allow list is used: `os` is not in it, so nothing runs either."""
    rules, marker = os_system_rules(tmp_path)
    done = pdrelay("check-rules", "--config", str(config(tmp_path, ["acme_sample"])), str(rules))
    assert (done.returncode, done.stderr) == (
        1, f"{rules}:4: plugin 'os:system' is not allowed: module 'os' is not under rules.allow_plugins"
           " (configured: acme_sample)\n")
    assert not marker.exists()


def test_test_rules_refuses_os_system_without_running_it(tmp_path: Path) -> None:
    """test-rules loads the rules the same way: exit 1, no marker file."""
    rules, marker = os_system_rules(tmp_path)
    done = pdrelay("test-rules", "--rules", str(rules), str(FIXTURE))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith(f"{rules}:4: plugin 'os:system' is not allowed: ")
    assert not marker.exists()


def test_check_rules_loads_a_plugin_the_config_allows(tmp_path: Path) -> None:
    """`acme_sample:tag` passes with a config allowing `acme_sample`, and is refused without one."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules:\n  - transform: acme_sample:tag\n    with: {value: blue}\n")
    allowed = pdrelay("check-rules", "--config", str(config(tmp_path, ["acme_sample"])), str(rules))
    assert (allowed.returncode, allowed.stderr) == (0, "")
    assert allowed.stdout.startswith("ok: 1 file(s), sha256 ")
    refused = pdrelay("check-rules", str(rules))
    assert (refused.returncode, refused.stderr) == (
        1, f"{rules}:3: plugin 'acme_sample:tag' is not allowed: module 'acme_sample' is not under"
           " rules.allow_plugins (none configured)\n")
