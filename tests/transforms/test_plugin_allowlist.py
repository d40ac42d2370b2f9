"""``module:callable`` plugins load only from the modules ``rules.allow_plugins`` allows; nothing else is imported.

The plugin modules named here are ``acme_sample`` (a package with a submodule ``extra``) and
``acme_samplex``, next to this file; entry-point plugins need no allow list.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from transforms import RulesError, RuleSet
from transforms.base import Alert, Group

Alerts = Callable[..., Alert]
Groups = Callable[..., Group]


def _errors(text: str, allow: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(RulesError) as info:
        RuleSet.from_text(text, "rules.yaml", allow_plugins=allow)
    return info.value.errors


def test_os_system_is_refused_and_never_called(tmp_path: Path) -> None:
    """`transform: os:system` used to be imported and called while the rules loaded; now it is a load
    error naming the module and the config key, and the command does not run."""
    marker = tmp_path / "pwned"
    text = f"version: 1\nrules:\n  - name: x\n    transform: os:system\n    with: {{command: 'touch {marker}'}}\n"
    assert _errors(text) == [
        "rules.yaml:4: plugin 'os:system' is not allowed: module 'os' is not under rules.allow_plugins"
        " (none configured)"
    ]
    assert not marker.exists()
    assert _errors(text, ("acme_sample", "ops.tools")) == [
        "rules.yaml:4: plugin 'os:system' is not allowed: module 'os' is not under rules.allow_plugins"
        " (configured: acme_sample, ops.tools)"
    ]
    assert not marker.exists()


def test_an_allowed_module_and_its_submodules_load(make_alert: Alerts, make_group: Groups) -> None:
    """`acme_sample` allows `acme_sample:tag` and `acme_sample.extra:component`; both run in order."""
    rules = RuleSet.from_text(
        "version: 1\nrules:\n"
        "  - transform: acme_sample:tag\n    with: {value: blue}\n"
        "  - transform: acme_sample.extra:component\n    with: {name: disk}\n",
        allow_plugins=["acme_sample"],
    )
    (event,) = rules.evaluate(make_group(make_alert())).events
    assert (event.body["payload"]["custom_details"], event.body["payload"]["component"]) == ({"tag": "blue"}, "disk")


def test_the_same_module_is_refused_when_not_allowed() -> None:
    """Without `acme_sample` in the list, the same step is a load error (not an import error)."""
    text = "version: 1\nrules:\n  - transform: acme_sample.extra:component\n    with: {name: disk}\n"
    assert _errors(text, ("transforms.examples",)) == [
        "rules.yaml:3: plugin 'acme_sample.extra:component' is not allowed: module 'acme_sample.extra' is not"
        " under rules.allow_plugins (configured: transforms.examples)"
    ]


def test_a_prefix_allows_whole_module_names_only() -> None:
    """`acme_sample` does not allow `acme_samplex`, and refusing it imports nothing."""
    assert _errors("version: 1\nrules:\n  - transform: acme_samplex:tag\n    with: {value: x}\n", ("acme_sample",)) == [
        "rules.yaml:3: plugin 'acme_samplex:tag' is not allowed: module 'acme_samplex' is not under"
        " rules.allow_plugins (configured: acme_sample)"
    ]
    assert "acme_samplex" not in sys.modules


def test_the_path_after_the_colon_stays_in_allowed_code() -> None:
    """An allowed module that imports `os` does not open it: neither `acme_sample:os.system` nor a function
    imported from `os` (`acme_sample:cwd`, defined in `posix`) is allowed."""
    text = "version: 1\nrules:\n  - transform: acme_sample:os.system\n    with: {command: 'true'}\n"
    assert _errors(text, ("acme_sample",)) == [
        "rules.yaml:3: plugin 'acme_sample:os.system' is not allowed: 'acme_sample:os' is module 'os', which is"
        " not under rules.allow_plugins (configured: acme_sample)"
    ]
    assert _errors("version: 1\nrules:\n  - transform: acme_sample:cwd\n", ("acme_sample",)) == [
        f"rules.yaml:3: plugin 'acme_sample:cwd' is not allowed: 'cwd' is defined in module {os.getcwd.__module__!r},"
        " which is not under rules.allow_plugins (configured: acme_sample)"
    ]


def test_a_reference_that_is_not_a_module_name_is_refused() -> None:
    """A module part that is not a dotted name (relative, spaces, empty) is refused before any import."""
    assert _errors("version: 1\nrules:\n  - transform: '.acme_sample:tag'\n", ("acme_sample",)) == [
        "rules.yaml:3: transform '.acme_sample:tag': '.acme_sample' is not a module name"
        " (write module.name:callable)"
    ]


def test_entry_point_plugins_need_no_allow_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_alert: Alerts, make_group: Groups
) -> None:
    """An entry point of the pdrelay.transforms group is installed code: it loads with no allow list at all."""
    dist = tmp_path / "acme_owner-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-owner\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pdrelay.transforms]\nowner = transforms.examples:add_owner\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rules = RuleSet.from_text("version: 1\nrules:\n  - transform: owner\n    with: {table: {db: team-dba}}\n")
    alert = make_alert(labels={"team": "db"})
    (event,) = rules.evaluate(make_group(alert)).events
    assert event.body["payload"]["custom_details"] == {"owner": "team-dba"}
