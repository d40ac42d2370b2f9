"""Loads rules files into a :class:`RuleSet`; the one place in ``transforms`` that reads files.

A rules file is ``version: 1``, optional ``defaults`` (any field ``set`` accepts) and
``rules``, an ordered list of steps. A step is an optional ``match`` (Alertmanager
matchers, list or brace form), at most one action (``set``, ``severity_map``,
``extract``, ``drop``, ``transform`` + ``with``) and optionally ``stop: true``; ``name``
defaults to ``rule[<index>]`` (the index counts across all files). Several paths (files,
or folders whose ``*.yaml``/``*.yml`` are taken sorted by name) are concatenated in
order; their defaults apply in order, later ones overriding (``custom_details`` merges).

Every problem in every file is collected as ``file:line: message`` and raised together
as :class:`RulesError`; nothing is half-loaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from transforms.base import Alert, AlertEvent, Chain, Group
from transforms.collapse import DEFAULT_ROUTING_KEY
from transforms.engine import Engine, Evaluation
from transforms.fields import DEFAULT_SEVERITY, FieldSetter, compile_fields
from transforms.match import Matcher, MatcherError, parse_matchers
from transforms.registry import STEP_TYPES
from transforms.spec import LineDict, LineList, Problems, StepContext, describe, load_yaml
from transforms.steps import Rule

__all__ = ["RuleSet", "RulesError", "load_rules"]

_TOP_KEYS = ("version", "defaults", "rules")
_STEP_KEYS = ("name", "match", "stop", "with")


class RulesError(Exception):
    """Rules that do not load; ``errors`` holds every ``file:line: message``."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True, slots=True, eq=False)
class RuleSet:
    """Compiled rules plus what the service needs to know about them.

    ``sha256`` hashes the source files' bytes in order; ``routing_key_names`` are the
    literal routing-key names the rules can produce (``default`` unless the defaults set
    a literal key; templated names cannot be known in advance).
    """

    engine: Engine
    sha256: str
    sources: tuple[str, ...]
    routing_key_names: frozenset[str]

    @property
    def chain(self) -> Chain:
        """Defaults and rules as one transform."""
        return self.engine.chain

    def apply(self, alert: Alert, group: Group) -> AlertEvent | None:
        """One alert through the rules; None when a rule dropped it."""
        return self.engine.apply(alert, group)

    def evaluate(self, group: Group) -> Evaluation:
        """A whole notification: rules, collapse, render."""
        return self.engine.evaluate(group)

    @classmethod
    def from_text(cls, text: str, name: str = "<string>") -> RuleSet:
        """Compiles one rules document given as text (``name`` appears in errors)."""
        return _compile([(name, text.encode("utf-8"))])


def load_rules(paths: Iterable[str | Path]) -> RuleSet:
    """Reads and compiles rules files and folders, in order.

    Raises:
        RulesError: listing every problem found, each as ``file:line: message``.
    """
    sources: list[tuple[str, bytes]] = []
    errors: list[str] = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            if not files:
                errors.append(f"{path}:1: no *.yaml or *.yml files in this folder")
        else:
            files = [path]
        for file in files:
            try:
                sources.append((str(file), file.read_bytes()))
            except OSError as exc:
                errors.append(f"{file}:1: cannot read rules file: {exc.strerror or exc}")
    if not sources and not errors:
        errors.append("<rules>:1: no rules files given")
    try:
        ruleset = _compile(sources)
    except RulesError as exc:
        raise RulesError([*errors, *exc.errors]) from None
    if errors:
        raise RulesError(errors)
    return ruleset


def _compile(sources: list[tuple[str, bytes]]) -> RuleSet:
    digest = hashlib.sha256()
    errors: list[str] = []
    defaults: list[FieldSetter] = []
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    steps = 0
    for name, data in sources:
        digest.update(data)
        problems = Problems(name)
        steps += _compile_file(data, problems, defaults, rules, seen, steps)
        errors.extend(problems.messages)
    if errors:
        raise RulesError(errors)
    severity = DEFAULT_SEVERITY
    routing_default = DEFAULT_ROUTING_KEY
    for setter in defaults:
        severity = setter.constant("severity") or severity
        routing_default = setter.constant("routing_key") or routing_default
    names = {routing_default}
    for rule in rules:
        if isinstance(rule.action, FieldSetter) and (key := rule.action.constant("routing_key")):
            names.add(key)
    return RuleSet(
        engine=Engine(defaults, rules, severity),
        sha256=digest.hexdigest(),
        sources=tuple(name for name, _ in sources),
        routing_key_names=frozenset(names),
    )


def _compile_file(
    data: bytes,
    problems: Problems,
    defaults: list[FieldSetter],
    rules: list[Rule],
    seen: dict[str, str],
    first_index: int,
) -> int:
    """Compiles one file into ``defaults`` and ``rules``; returns how many steps it has."""
    try:
        doc, duplicates = load_yaml(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        problems.add(1, f"not UTF-8 text: {exc.reason} at byte {exc.start}")
        return 0
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problems.add(mark.line + 1 if mark else 1, f"YAML syntax error: {exc.problem or exc.context}")
        return 0
    except yaml.YAMLError as exc:
        problems.add(1, f"YAML error: {exc}")
        return 0
    for line, key in duplicates:
        problems.add(line, f"duplicate key {key!r}")
    if doc is None:
        problems.add(1, "empty rules file (expected 'version: 1' and 'rules')")
        return 0
    if not isinstance(doc, LineDict):
        problems.add(1, f"a rules file must be a mapping with 'version' and 'rules', got {describe(doc)}")
        return 0
    for key in doc:
        if key not in _TOP_KEYS:
            problems.add(doc.line_of(key), f"unknown key {key!r} (expected one of: {', '.join(_TOP_KEYS)})")
    version = doc.get("version")
    if "version" not in doc:
        problems.add(doc.line, "missing 'version' (write 'version: 1')")
    elif type(version) is not int or version != 1:
        problems.add(doc.line_of("version"), f"unsupported version {version!r} (expected 1)")
    if doc.get("defaults") is not None:
        setter = compile_fields(doc["defaults"], doc.line_of("defaults"), problems, "defaults", "defaults")
        if setter is not None:
            defaults.append(setter)
    steps = doc.get("rules")
    if steps is None:
        return 0
    if not isinstance(steps, LineList):
        problems.add(doc.line_of("rules"), f"rules must be a list of steps, got {describe(steps)}")
        return 0
    for index, step in enumerate(steps):
        rule = _compile_step(step, steps.line_of(index), first_index + index, problems, seen)
        if rule is not None:
            rules.append(rule)
    return len(steps)


def _compile_step(step: Any, line: int, index: int, problems: Problems, seen: dict[str, str]) -> Rule | None:
    if not isinstance(step, LineDict):
        problems.add(line, f"a step must be a mapping, got {describe(step)}")
        return None
    before = problems.count
    name = step.get("name", f"rule[{index}]")
    if not isinstance(name, str) or not name.strip():
        problems.add(step.line_of("name"), f"name must be a non-empty string, got {name!r}")
        name = f"rule[{index}]"
    elif name in seen:
        problems.add(step.line_of("name"), f"duplicate rule name {name!r} (first at {seen[name]})")
    else:
        seen[name] = f"{problems.source}:{step.line_of('name')}"
    actions = [key for key in step if key in STEP_TYPES]
    for key in step:
        if key not in STEP_TYPES and key not in _STEP_KEYS:
            problems.add(
                step.line_of(key),
                f"unknown step type or key {key!r} in rule {name!r}"
                f" (step types: {', '.join(STEP_TYPES)}, stop; other keys: match, name, with)",
            )
    stop = step.get("stop", False)
    if not isinstance(stop, bool):
        problems.add(step.line_of("stop"), f"stop must be true or false, got {describe(stop)}")
    if len(actions) > 1:
        problems.add(
            step.line_of(actions[1]),
            f"rule {name!r} has {len(actions)} actions ({', '.join(actions)}); a step takes one, split it",
        )
    elif not actions and stop is not True and problems.count == before:
        problems.add(
            line, f"rule {name!r} has no action (add one of: {', '.join(STEP_TYPES)}, or stop: true)"
        )
    if "with" in step and "transform" not in step:
        problems.add(step.line_of("with"), "'with' is only valid with 'transform'")
    matchers = _compile_match(step, problems)
    action = None
    if len(actions) == 1:
        key = actions[0]
        action = STEP_TYPES[key](step[key], StepContext(name, step.line_of(key), step, problems))
    if problems.count > before:
        return None
    return Rule(name, matchers, action, stop is True)


def _compile_match(step: LineDict, problems: Problems) -> tuple[Matcher, ...]:
    if "match" not in step:
        return ()
    spec = step["match"]
    line = step.line_of("match")
    if isinstance(spec, str):
        entries: list[tuple[int, str]] = [(line, spec)]
    elif isinstance(spec, LineList):
        entries = []
        for index, entry in enumerate(spec):
            if not isinstance(entry, str):
                problems.add(spec.line_of(index), f"match entries must be strings, got {describe(entry)}")
            else:
                entries.append((spec.line_of(index), entry))
    else:
        problems.add(line, f"match must be a string or a list of strings, got {describe(spec)}")
        return ()
    matchers: list[Matcher] = []
    for entry_line, entry in entries:
        try:
            matchers.extend(parse_matchers(entry))
        except MatcherError as exc:
            problems.add(entry_line, str(exc))
    return tuple(matchers)
