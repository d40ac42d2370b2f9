"""Loading rules files: every error as file:line: message, all of them at once; folders, defaults, hashes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from transforms import RulesError, RuleSet, load_rules
from transforms.base import Alert, Group

REPO = Path(__file__).resolve().parents[2]

BAD = """\
version: 1
defaults:
  routing_key: ''
  dedup: sometimes
  severity: urgent
  send_resolved: "yes"
  colour: red
rules:
  - name: two
    set: {summary: x}
    drop: true
  - name: typo
    sett: {summary: x}
  - name: badmatch
    match: ['env=~"prod', 'team="db"']
    set: {summary: x}
  - name: badregex
    extract: {from: '{{ labels.instance }}', regex: '(?P<host>[^:]+'}
  - name: badtemplate
    set: {summary: '{{ labels.instance '}
  - name: sevmap
    severity_map:
      from: '{{ labels.severity }}'
      map: {page: critical, warn: warnin}
      default: urgent
  - name: nothing
    match: ['a="b"']
  - name: plugin
    transform: nonexistent_module_xyz:factory
  - name: plugin2
    transform: no-such-entry-point
  - name: links
    set:
      links: [{text: no href}]
      images: [{src: 'https://x', size: 3}]
      custom_details: [1, 2]
  - name: two
    drop: false
  - 'a string'
  - name: dedup
    set: {dedup: custom}
  - stop: "yes"
    with: {a: 1}
  - name: noregexgroup
    extract: {from: '{{ labels.instance }}', regex: '[^:]+'}
"""

BAD_ERRORS = [
    "bad.yaml:3: defaults.routing_key must not be empty",
    "bad.yaml:4: defaults.dedup: bad dedup 'sometimes' (must be 'alert', 'group' or a template)",
    "bad.yaml:5: defaults.severity: bad severity 'urgent' (must be one of: critical, error, warning, info)",
    "bad.yaml:6: defaults.send_resolved must be true or false, got a string",
    "bad.yaml:7: unknown field 'colour' in defaults (expected one of: class, client, client_url, component,"
    " custom_details, dedup, group, images, links, routing_key, send_resolved, severity, source, summary)",
    "bad.yaml:11: rule 'two' has 2 actions (set, drop); a step takes one, split it",
    "bad.yaml:13: unknown step type or key 'sett' in rule 'typo'"
    " (step types: set, severity_map, extract, drop,"
    " transform, stop; other keys: change_event, match, name, unless_time, when_time, with)",
    "bad.yaml:15: bad matcher 'env=~\"prod': unterminated quoted string starting at column 6",
    "bad.yaml:18: extract.regex: invalid regex '(?P<host>[^:]+': missing ): (?P<host>[^:]+",
    "bad.yaml:20: set.summary: template syntax error in '{{ labels.instance ': unexpected end of template,"
    " expected 'end of print statement'.",
    "bad.yaml:24: severity_map.map: bad severity 'warnin' for 'warn' (must be one of: critical, error, warning, info)",
    "bad.yaml:25: severity_map.default: bad severity 'urgent' (must be one of: critical, error, warning, info)",
    "bad.yaml:26: rule 'nothing' has no action (add one of: set, severity_map, extract, drop, transform,"
    " or stop: true)",
    "bad.yaml:29: transform 'nonexistent_module_xyz:factory': cannot import module 'nonexistent_module_xyz':"
    " ModuleNotFoundError: No module named 'nonexistent_module_xyz'",
    "bad.yaml:31: transform 'no-such-entry-point': no plugin named 'no-such-entry-point'"
    " (no entry point of that"
    " name in group 'pdrelay.transforms'; or write module:callable)",
    "bad.yaml:34: set.links[0] needs 'href'",
    "bad.yaml:35: unknown key 'size' in set.images[0] (expected: src, href, alt)",
    "bad.yaml:36: set.custom_details must be a mapping, got a list",
    "bad.yaml:37: duplicate rule name 'two' (first at bad.yaml:9)",
    "bad.yaml:38: drop must be true, got False (remove the step to keep alerts)",
    "bad.yaml:39: a step must be a mapping, got a string",
    "bad.yaml:41: set.dedup: bad dedup 'custom' (must be 'alert', 'group' or a template)",
    "bad.yaml:42: stop must be true or false, got a string",
    "bad.yaml:43: 'with' is only valid with 'transform'",
    "bad.yaml:45: extract.regex '[^:]+' has no named group; write (?P<name>...)",
]


def test_every_error_is_reported_with_its_line() -> None:
    """One load reports every problem of the file, each as file:line: message, ordered by line."""
    with pytest.raises(RulesError) as info:
        RuleSet.from_text(BAD, "bad.yaml", allow_plugins=["nonexistent_module_xyz"])
    assert info.value.errors == BAD_ERRORS
    assert str(info.value) == "\n".join(BAD_ERRORS)


@pytest.mark.parametrize(
    ("text", "errors"),
    [
        ("", ["r.yaml:1: empty rules file (expected 'version: 1' and 'rules')"]),
        ("# only a comment\n", ["r.yaml:1: empty rules file (expected 'version: 1' and 'rules')"]),
        ("rules: []\n", ["r.yaml:1: missing 'version' (write 'version: 1')"]),
        ("version: 2\nrules: []\n", ["r.yaml:1: unsupported version 2 (expected 1)"]),
        ('version: "1"\n', ["r.yaml:1: unsupported version '1' (expected 1)"]),
        ("version: true\n", ["r.yaml:1: unsupported version True (expected 1)"]),
        ("version: 1\nrules: {a: 1}\n", ["r.yaml:2: rules must be a list of steps, got a mapping"]),
        ("- a\n- b\n", ["r.yaml:1: a rules file must be a mapping with 'version' and 'rules', got a list"]),
        ("version: 1\nfoo: 1\n", ["r.yaml:2: unknown key 'foo' (expected one of: version, defaults, rules)"]),
        ("version: 1\nversion: 1\n", ["r.yaml:2: duplicate key 'version'"]),
        (
            "version: 1\nrules:\n  - name: a\n    set:\n      summary: x\n      summary: y\n",
            ["r.yaml:6: duplicate key 'summary'"],
        ),
        (
            "version: 1\nrules:\n  - set: {summary: [x}\n",
            ["r.yaml:3: YAML syntax error: expected ',' or ']', but got '}'"],
        ),
        (
            "version: 1\nrules:\n\t- x\n",
            ["r.yaml:3: YAML syntax error: found character '\\t' that cannot start any token"],
        ),
        ("version: 1\ndefaults: [1]\n", ["r.yaml:2: defaults must be a mapping of fields, got a list"]),
        (
            "version: 1\nrules:\n  - match: 5\n    drop: true\n  - match: [5]\n    drop: true\n"
            '  - name: ""\n    drop: true\n',
            [
                "r.yaml:3: match must be a string or a list of strings, got a number",
                "r.yaml:5: match entries must be strings, got a number",
                "r.yaml:7: name must be a non-empty string, got ''",
            ],
        ),
        (
            "version: 1\nrules:\n  - transform: transforms.examples:add_owner\n    with: {table: [1]}\n",
            [
                "r.yaml:3: transform 'transforms.examples:add_owner': factory failed:"
                " TypeError: table must map"
                " label values to owner names (strings)"
            ],
        ),
        (
            "version: 1\nrules:\n  - transform: transforms.examples:add_owner\n    with: {tabel: {}}\n",
            [
                "r.yaml:3: transform 'transforms.examples:add_owner': factory failed:"
                " TypeError: add_owner() got an"
                " unexpected keyword argument 'tabel'"
            ],
        ),
        (
            "version: 1\nrules:\n  - transform: transforms.examples:nope\n",
            ["r.yaml:3: transform 'transforms.examples:nope': 'transforms.examples' has no attribute 'nope'"],
        ),
        (
            "version: 1\nrules:\n  - severity_map: {from: '{{ x }}', map: {a: critical}, to: x}\n",
            ["r.yaml:3: unknown key 'to' in severity_map (expected: from, map, default)"],
        ),
        (
            "version: 1\nrules:\n  - extract: {regex: '(?P<a>.)'}\n",
            ["r.yaml:3: extract needs 'from'"],
        ),
    ],
)
def test_load_errors(text: str, errors: list[str]) -> None:
    """Each malformed document yields exactly these errors."""
    with pytest.raises(RulesError) as info:
        RuleSet.from_text(text, "r.yaml", allow_plugins=["transforms.examples"])
    assert info.value.errors == errors


def test_errors_from_every_file_are_collected(tmp_path: Path) -> None:
    """Problems in several files, and unreadable paths, are all reported in one RulesError."""
    (tmp_path / "a.yaml").write_text("version: 1\nrules:\n  - drop: maybe\n")
    (tmp_path / "b.yaml").write_text("version: 3\n")
    missing = tmp_path / "missing.yaml"
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(RulesError) as info:
        load_rules([tmp_path / "a.yaml", tmp_path / "b.yaml", missing, empty_dir])
    assert info.value.errors == [
        f"{missing}:1: cannot read rules file: No such file or directory",
        f"{empty_dir}:1: no *.yaml or *.yml files in this folder",
        f"{tmp_path / 'a.yaml'}:3: drop must be true, got 'maybe' (remove the step to keep alerts)",
        f"{tmp_path / 'b.yaml'}:1: unsupported version 3 (expected 1)",
    ]


def test_folder_loads_yaml_files_sorted_and_concatenates(
    tmp_path: Path, make_alert: Callable[..., Alert], make_group: Callable[..., Group]
) -> None:
    """A folder contributes its *.yaml/*.yml files by name; rules run in that order and defaults merge."""
    first = (
        b"version: 1\ndefaults: {routing_key: ops, custom_details: {a: 1}}\nrules:\n  - set: {class: one}\n"
    )
    second = b"version: 1\ndefaults: {custom_details: {b: 2}, severity: warning}\nrules:\n  - set: {summary: two}\n"
    (tmp_path / "20-second.yml").write_bytes(second)
    (tmp_path / "10-first.yaml").write_bytes(first)
    (tmp_path / "notes.txt").write_text("not rules")
    rules = load_rules([tmp_path])
    assert rules.sources == (str(tmp_path / "10-first.yaml"), str(tmp_path / "20-second.yml"))
    assert rules.sha256 == hashlib.sha256(first + second).hexdigest()
    assert rules.unknown_routing_keys(["ops"]) == []
    alert = make_alert()
    event, _ = rules.engine.run(alert, make_group(alert))
    assert event is not None
    assert event.fired == ["rule[0]", "rule[1]"]
    assert event.fields == {
        "routing_key": "ops",
        "custom_details": {"a": 1, "b": 2},
        "severity": "warning",
        "class": "one",
        "summary": "two",
    }


def test_default_rules_file_loads() -> None:
    """rules/default.yaml loads and refers to the `default` routing key only."""
    rules = load_rules([REPO / "rules" / "default.yaml"])
    assert [(ref.name, ref.line) for ref in rules.routing_keys] == [("default", 43)]
    assert [rule.name for rule in rules.engine.rules] == [
        "drop-heartbeats",
        "severity",
        "host",
        "fields",
        "non-production",
        "group-per-incident",
        "summary",
    ]


def test_default_rules_commented_plugin_example_works() -> None:
    """The plugin example commented out in rules/default.yaml loads when uncommented and allowed."""
    text = (REPO / "rules" / "default.yaml").read_text()
    start = text.index("  # - name: owner")
    example = "\n".join(line.replace("# ", "", 1) for line in text[start:].splitlines())
    rules = RuleSet.from_text(text[:start] + example + "\n", allow_plugins=["transforms.examples"])
    assert rules.engine.rules[-1].name == "owner"
