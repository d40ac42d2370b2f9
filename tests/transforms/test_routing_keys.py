"""RuleSet.unknown_routing_keys: literal routing-key names the config does not define, as file:line lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from transforms import load_rules

DEFAULTS_ONLY = "version: 1\ndefaults: {routing_key: ops}\n"
SET_STEPS = """\
version: 1
defaults:
  severity: warning
  routing_key: default
rules:
  - name: db
    match: '{team="db"}'
    set: {routing_key: db-oncall}
  - name: templated
    set:
      routing_key: '{{ labels.team }}-oncall'
  - name: numbered
    set:
      summary: x
      routing_key: 42
"""
SECOND_FILE = """\
version: 1
rules:
  - set: {routing_key: payments}
  - set: {routing_key: ops}
"""
TEMPLATED_ONLY = "version: 1\ndefaults: {routing_key: '{{ labels.pd_key }}'}\nrules:\n  - set: {summary: x}\n"


def _message(file: Path, line: int, name: str, configured: str) -> str:
    return f"{file}:{line}: unknown routing key name {name!r} (configured: {configured})"


@pytest.mark.parametrize(
    ("files", "configured", "expected"),
    [
        ({"a.yaml": DEFAULTS_ONLY}, ["default"], [("a.yaml", 2, "ops", "default")]),
        ({"a.yaml": DEFAULTS_ONLY}, ["ops", "default"], []),
        (
            {"a.yaml": SET_STEPS},
            ["default"],
            [("a.yaml", 8, "db-oncall", "default"), ("a.yaml", 15, "42", "default")],
        ),
        ({"a.yaml": SET_STEPS}, ["default", "db-oncall", "42"], []),
        (
            {"b.yaml": SECOND_FILE, "a.yaml": SET_STEPS},
            ["zeta", "db-oncall", "alpha"],
            [
                ("a.yaml", 4, "default", "alpha, db-oncall, zeta"),
                ("a.yaml", 15, "42", "alpha, db-oncall, zeta"),
                ("b.yaml", 3, "payments", "alpha, db-oncall, zeta"),
                ("b.yaml", 4, "ops", "alpha, db-oncall, zeta"),
            ],
        ),
        ({"a.yaml": TEMPLATED_ONLY}, ["default"], []),
        ({"a.yaml": DEFAULTS_ONLY}, [], [("a.yaml", 2, "ops", "none")]),
    ],
    ids=[
        "defaults",
        "defaults-known",
        "set-steps",
        "all-known",
        "two-files-sorted",
        "templated-skipped",
        "none-configured",
    ],
)
def test_unknown_routing_keys(
    tmp_path: Path,
    files: dict[str, str],
    configured: list[str],
    expected: list[tuple[str, int, str, str]],
) -> None:
    """One line per literal name not configured, at the value's file and line, sorted by file then line."""
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    rules = load_rules([tmp_path / name for name in files])  # b.yaml first: the order given is not the order reported
    assert rules.unknown_routing_keys(configured) == [
        _message(tmp_path / file, line, name, shown) for file, line, name, shown in expected
    ]
