"""Loads rules files into a :class:`RuleSet`; the one place in ``transforms`` that reads files.

A rules file is ``version: 1``, optional ``defaults`` (any field ``set`` accepts) and
``rules``, an ordered list of steps. A step is an optional ``match`` (Alertmanager
matchers, list or brace form), optional ``when_time`` / ``unless_time`` (time guards, see
:mod:`transforms.when`), at most one action (``set``, ``severity_map``,
``extract``, ``drop``, ``transform`` + ``with``), optionally ``stop: true`` and
``change_event: true`` (the alert goes as a Change Event; such a step needs no action); ``name``
defaults to ``rule[<index>]`` (the index counts across all files). Several paths (files,
or folders whose ``*.yaml``/``*.yml`` are taken sorted by name) are concatenated in
order; their defaults apply in order, later ones overriding (``custom_details`` merges).

Every problem in every file is collected as ``file:line: message`` and raised together
as :class:`RulesError`; nothing is half-loaded. ``allow_plugins`` lists the module
prefixes ``module:callable`` plugins may come from (none by default: see
:mod:`transforms.registry`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from transforms.base import ChangeEvent, Group
from transforms.engine import Engine, Evaluation
from transforms.fields import DEFAULT_SEVERITY, FieldSetter, compile_fields
from transforms.match import Matcher, MatcherError, parse_matchers
from transforms.registry import STEP_TYPES
from transforms.spec import LineDict, LineList, Problems, StepContext, describe, load_yaml
from transforms.steps import Rule
from transforms.when import TIME_KEYS, compile_time_guard

__all__ = ["RoutingKeyRef", "RuleSet", "RulesError", "load_rules"]

_TOP_KEYS = ("version", "defaults", "rules")
_STEP_KEYS = ("name", "match", "stop", "with", "change_event", *TIME_KEYS)


class RulesError(Exception):
    """Rules that do not load; ``errors`` holds every ``file:line: message``."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True, slots=True)
class RoutingKeyRef:
    """A routing-key name written literally in a rules file, and where."""

    source: str
    line: int
    name: str


@dataclass(frozen=True, slots=True, eq=False)
class RuleSet:
    """Compiled rules plus what the service needs to know about them.

    ``sha256`` hashes the source files' bytes in order; ``routing_keys`` lists every
    routing-key name written literally (in ``defaults`` and in ``set`` steps), sorted by
    file and line.
    """

    engine: Engine
    sha256: str
    sources: tuple[str, ...]
    routing_keys: tuple[RoutingKeyRef, ...]

    def evaluate(self, group: Group, now: datetime | None = None) -> Evaluation:
        """A whole notification: rules, collapse, render; ``now`` (timezone-aware) is the time
        ``when_time`` / ``unless_time`` steps test, required when the rules have any."""
        return self.engine.evaluate(group, now)

    def unknown_routing_keys(self, configured: Collection[str]) -> list[str]:
        """``file:line: unknown routing key name 'x' (configured: a, b)`` for each literal name
        not in ``configured``, sorted by file then line.

        Only names written literally can be checked: a name given by a template
        (``routing_key: '{{ labels.team }}'``) is known only per alert and is skipped, and
        so is a name a plugin sets. The ``default`` key that events take when nothing names
        one is not written anywhere and is not reported either.
        """
        known = ", ".join(sorted(configured)) or "none"
        return [
            f"{ref.source}:{ref.line}: unknown routing key name {ref.name!r} (configured: {known})"
            for ref in self.routing_keys
            if ref.name not in configured
        ]

    @classmethod
    def from_text(cls, text: str, name: str = "<string>", *, allow_plugins: Sequence[str] = ()) -> RuleSet:
        """Compiles one rules document given as text (``name`` appears in errors)."""
        return _compile([(name, text.encode("utf-8"))], tuple(allow_plugins))


def load_rules(paths: Iterable[str | Path], *, allow_plugins: Sequence[str] = ()) -> RuleSet:
    """Reads and compiles rules files and folders, in order; ``module:callable`` plugins only from
    modules under ``allow_plugins``.

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
        ruleset = _compile(sources, tuple(allow_plugins))
    except RulesError as exc:
        raise RulesError([*errors, *exc.errors]) from None
    if errors:
        raise RulesError(errors)
    return ruleset


def _compile(sources: list[tuple[str, bytes]], allow_plugins: tuple[str, ...]) -> RuleSet:
    digest = hashlib.sha256()
    errors: list[str] = []
    compiled = _Compiled(allow_plugins)
    for name, data in sources:
        digest.update(data)
        problems = Problems(name)
        _compile_file(data, problems, compiled)
        errors.extend(problems.messages)
    if errors:
        raise RulesError(errors)
    severity = DEFAULT_SEVERITY
    for setter in compiled.defaults:
        severity = setter.constant("severity") or severity
    return RuleSet(
        engine=Engine(compiled.defaults, compiled.rules, severity),
        sha256=digest.hexdigest(),
        sources=tuple(name for name, _ in sources),
        routing_keys=tuple(sorted(compiled.routing_keys, key=lambda ref: (ref.source, ref.line))),
    )


@dataclass(slots=True)
class _Compiled:
    """What the files compiled so far contribute, in order."""

    allow_plugins: tuple[str, ...]  # module prefixes module:callable plugins may come from
    defaults: list[FieldSetter] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    routing_keys: list[RoutingKeyRef] = field(default_factory=list)
    seen: dict[str, str] = field(default_factory=dict)  # rule name -> where it was first defined
    steps: int = 0  # steps so far, across files: the index in a default name rule[<index>]

    def note_routing_key(self, setter: FieldSetter, mapping: Any, problems: Problems) -> None:
        """Records the literal routing key ``setter`` sets, at its line in ``mapping``."""
        name = setter.constant("routing_key")
        if name is not None and isinstance(mapping, LineDict):
            self.routing_keys.append(RoutingKeyRef(problems.source, mapping.line_of("routing_key"), name))


def _compile_file(data: bytes, problems: Problems, compiled: _Compiled) -> None:
    """Compiles one file into ``compiled``."""
    try:
        doc, duplicates = load_yaml(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        problems.add(1, f"not UTF-8 text: {exc.reason} at byte {exc.start}")
        return
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problems.add(mark.line + 1 if mark else 1, f"YAML syntax error: {exc.problem or exc.context}")
        return
    except yaml.YAMLError as exc:
        problems.add(1, f"YAML error: {exc}")
        return
    for line, key in duplicates:
        problems.add(line, f"duplicate key {key!r}")
    if doc is None:
        problems.add(1, "empty rules file (expected 'version: 1' and 'rules')")
        return
    if not isinstance(doc, LineDict):
        problems.add(1, f"a rules file must be a mapping with 'version' and 'rules', got {describe(doc)}")
        return
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
            compiled.defaults.append(setter)
            compiled.note_routing_key(setter, doc["defaults"], problems)
    steps = doc.get("rules")
    if steps is None:
        return
    if not isinstance(steps, LineList):
        problems.add(doc.line_of("rules"), f"rules must be a list of steps, got {describe(steps)}")
        return
    first_index = compiled.steps
    compiled.steps += len(steps)
    for index, step in enumerate(steps):
        rule = _compile_step(step, steps.line_of(index), first_index + index, problems, compiled)
        if rule is None:
            continue
        compiled.rules.append(rule)
        if isinstance(action := rule.action, ChangeEvent):
            action = action.action
        if isinstance(action, FieldSetter):
            compiled.note_routing_key(action, step.get("set"), problems)


def _compile_step(step: Any, line: int, index: int, problems: Problems, compiled: _Compiled) -> Rule | None:
    if not isinstance(step, LineDict):
        problems.add(line, f"a step must be a mapping, got {describe(step)}")
        return None
    before = problems.count
    seen = compiled.seen
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
                f" (step types: {', '.join(STEP_TYPES)}, stop;"
                " other keys: change_event, match, name, unless_time, when_time, with)",
            )
    stop = step.get("stop", False)
    if not isinstance(stop, bool):
        problems.add(step.line_of("stop"), f"stop must be true or false, got {describe(stop)}")
    change = step.get("change_event", False)
    if not isinstance(change, bool):
        problems.add(step.line_of("change_event"), f"change_event must be true or false, got {describe(change)}")
    if len(actions) > 1:
        problems.add(
            step.line_of(actions[1]),
            f"rule {name!r} has {len(actions)} actions ({', '.join(actions)}); a step takes one, split it",
        )
    elif not actions and stop is not True and change is not True and problems.count == before:
        problems.add(
            line, f"rule {name!r} has no action (add one of: {', '.join(STEP_TYPES)}, or stop: true)"
        )
    if "with" in step and "transform" not in step:
        problems.add(step.line_of("with"), "'with' is only valid with 'transform'")
    matchers = _compile_match(step, problems)
    when = compile_time_guard(step, problems)
    action = None
    if len(actions) == 1:
        key = actions[0]
        context = StepContext(name, step.line_of(key), step, problems, compiled.allow_plugins)
        action = STEP_TYPES[key](step[key], context)
    if problems.count > before:
        return None
    return Rule(name, matchers, ChangeEvent(action) if change is True else action, stop is True, when=when)


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
