"""deploy/systemd/pdrelay.service through ``systemd-analyze verify`` (no running systemd needed): a copy whose
ExecStart names this checkout's pdrelay (verify wants an executable there) must pass without a word; a copy
with a typo'd key, which systemd only warns about, is caught by that silence."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
from manifests import DEPLOY, run

from receiver.settings import load_settings

pytestmark = pytest.mark.e2e

UNIT = DEPLOY / "systemd" / "pdrelay.service"
SHIPPED_BINARY = "/opt/pdrelay/bin/pdrelay"


def installed_copy(folder: Path, text: str) -> Path:
    pdrelay = shutil.which("pdrelay", path=str(Path(sys.executable).parent))
    assert pdrelay is not None
    assert text.count(SHIPPED_BINARY) == 1
    unit = folder / "pdrelay.service"
    unit.write_text(text.replace(SHIPPED_BINARY, pdrelay), encoding="utf-8")
    return unit


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    text = UNIT.read_text(encoding="utf-8")
    result = run(["systemd-analyze", "verify", str(installed_copy(tmp_path, text))])
    assert (result.returncode, result.output) == (0, "")
    for line in ("ExecStart=/opt/pdrelay/bin/pdrelay serve --config /etc/pdrelay/pdrelay.yaml",
                 "KillSignal=SIGTERM", "TimeoutStopSec=45", "Restart=on-failure", "StateDirectory=pdrelay",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=",
                 "SystemCallFilter=@system-service"):
        assert f"\n{line}\n" in text


def test_systemd_analyze_flags_a_typo(tmp_path: Path) -> None:
    text = UNIT.read_text(encoding="utf-8").replace("NoNewPrivileges=", "NoNewPrivilege=")
    unit = installed_copy(tmp_path, text)
    result = run(["systemd-analyze", "verify", str(unit)])
    assert "Unknown key 'NoNewPrivilege' in section [Service], ignoring." in result.output


def test_systemd_analyze_security_rates_the_unit_ok(tmp_path: Path) -> None:
    """Exposure 1.1 of 10 ("OK") with systemd 252; --threshold (tenths) fails the run above 1.5."""
    unit = installed_copy(tmp_path, UNIT.read_text(encoding="utf-8"))
    result = run(["systemd-analyze", "security", "--offline=true", "--threshold=15", "--no-pager", str(unit)])
    assert result.failures == ""
    assert "Overall exposure level for pdrelay.service: 1.1 OK" in result.output


def test_the_units_config_loads_with_the_credentials_the_unit_passes(tmp_path: Path) -> None:
    """deploy/systemd/pdrelay.yaml reads exactly the unit's LoadCredential= names from systemd's credentials
    folder (here: tmp_path), and writes only under the StateDirectory."""
    unit = UNIT.read_text(encoding="utf-8")
    credentials = [line.split("=", 1)[1].split(":", 1)[0] for line in unit.splitlines()
                   if line.startswith("LoadCredential=")]
    assert credentials == ["routing-key-default"]
    for name in credentials:
        (tmp_path / name).write_text("0123456789abcdef0123456789abcdef\n", encoding="utf-8")
    text = (UNIT.parent / "pdrelay.yaml").read_text(encoding="utf-8")
    assert re.findall(r"\{file: /run/credentials/pdrelay\.service/([^}]+)\}", text) == credentials
    config = tmp_path / "pdrelay.yaml"
    config.write_text(text.replace("/run/credentials/pdrelay.service/", f"{tmp_path}/"), encoding="utf-8")
    settings = load_settings(config, {})
    assert {n: k.reveal() for n, k in settings.pagerduty.routing_keys.items()} == {
        "default": "0123456789abcdef0123456789abcdef"}
    assert (settings.outbox.path, settings.audit.path) == (
        Path("/var/lib/pdrelay/outbox.db"), Path("/var/lib/pdrelay/audit.jsonl"))
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 9095)
