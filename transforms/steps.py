"""The built-in step types (``set``, ``severity_map``, ``extract``, ``drop``) and
:class:`Rule`, the guard that runs one of them. No I/O.

Each ``build_*`` factory validates its YAML value, reports problems with their lines and
returns a compiled :data:`~transforms.base.Transform` (or None after reporting).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transforms.base import AlertEvent, Transform
from transforms.fields import SEVERITIES, compile_fields
from transforms.match import Matcher, Regex, compile_guard
from transforms.spec import LineDict, StepContext, describe
from transforms.template import RenderError, Template, TemplateError, compile_template
from transforms.values import text
from transforms.when import TimeGuard

__all__ = [
    "Drop",
    "Extract",
    "Rule",
    "SeverityMap",
    "build_drop",
    "build_extract",
    "build_set",
    "build_severity_map",
]


class Rule:
    """One step: if every matcher matches and the time guard (``when_time`` / ``unless_time``,
    see :mod:`transforms.when`) holds, record the rule, run the action, maybe stop
    (:meth:`transforms.engine.Engine.run` applies it).

    A step without matchers applies to every alert. ``action`` may be None for a bare
    ``stop: true``. The rule's name is appended to ``fired`` before the action runs, so
    when the action drops the alert, ``fired`` ends with the rule that dropped it.
    """

    __slots__ = ("action", "guard", "matchers", "name", "stop", "when")

    def __init__(
        self, name: str, matchers: Sequence[Matcher], action: Transform | None, stop: bool,
        when: TimeGuard | None = None,
    ) -> None:
        self.name = name
        self.matchers = tuple(matchers)
        self.action = action
        self.stop = stop
        self.guard = compile_guard(self.matchers)  # None: every alert
        self.when = when  # None: at any time

    def __repr__(self) -> str:
        return f"Rule({self.name!r})"


def build_set(value: Any, ctx: StepContext) -> Transform | None:
    """``set: {field: value, ...}``."""
    return compile_fields(value, ctx.line, ctx.problems, ctx.rule, "set")


class SeverityMap:
    """``severity_map``: looks the rendered ``from`` up in ``map`` (exact key), else ``default``.

    Without a match and without ``default`` the severity stays as it was.
    """

    __slots__ = ("default", "rule", "source", "table")

    def __init__(self, rule: str, source: Template, table: dict[str, str], default: str | None) -> None:
        self.rule = rule
        self.source = source
        self.table = table
        self.default = default

    def __call__(self, event: AlertEvent) -> AlertEvent:
        try:
            key = self.source.render(event)
        except RenderError as exc:
            event.template_errors.append(f"{self.rule}.severity_map.from: {exc}")
            return event
        severity = self.table.get(text(key), self.default)
        if severity is not None:
            event.fields["severity"] = severity
        return event


class Extract:
    """``extract``: RE2 named groups of ``regex`` go to ``vars`` when it matches ``from``.

    The regex is fully anchored (``fullmatch``), like Alertmanager's ``=~`` matchers:
    write ``.*`` where the text may go on. A group that took no part in the match is
    stored as ``""``. Without a match, ``vars`` are left as they were.
    """

    __slots__ = ("regex", "rule", "source")

    def __init__(self, rule: str, source: Template, regex: Regex) -> None:
        self.rule = rule
        self.source = source
        self.regex = regex

    def __call__(self, event: AlertEvent) -> AlertEvent:
        try:
            subject = self.source.render(event)
        except RenderError as exc:
            event.template_errors.append(f"{self.rule}.extract.from: {exc}")
            return event
        found = self.regex.named_groups(text(subject))
        if found is not None:
            event.vars.update(found)
        return event


class Drop:
    """``drop: true``: the alert produces no event."""

    __slots__ = ()

    def __call__(self, event: AlertEvent) -> None:
        return None


def _keys(
    value: LineDict, ctx: StepContext, what: str, required: tuple[str, ...], optional: tuple[str, ...]
) -> bool:
    ok = True
    for key in value:
        if key not in required and key not in optional:
            expected = ", ".join((*required, *optional))
            ctx.problems.add(value.line_of(key), f"unknown key {key!r} in {what} (expected: {expected})")
            ok = False
    for key in required:
        if key not in value:
            ctx.problems.add(ctx.line, f"{what} needs {key!r}")
            ok = False
    return ok


def _template(value: LineDict, key: str, ctx: StepContext, what: str) -> Template | None:
    raw = value[key]
    line = value.line_of(key)
    if not isinstance(raw, str):
        ctx.problems.add(line, f"{what}.{key} must be a string template, got {describe(raw)}")
        return None
    try:
        return compile_template(raw)
    except TemplateError as exc:
        ctx.problems.add(line, f"{what}.{key}: {exc}")
        return None


def build_severity_map(value: Any, ctx: StepContext) -> Transform | None:
    """``severity_map: {from: template, map: {value: severity}, default: severity}``."""
    if not isinstance(value, LineDict):
        ctx.problems.add(ctx.line, f"severity_map must be a mapping, got {describe(value)}")
        return None
    if not _keys(value, ctx, "severity_map", ("from", "map"), ("default",)):
        return None
    source = _template(value, "from", ctx, "severity_map")
    table_raw = value["map"]
    table: dict[str, str] = {}
    ok = source is not None
    if not isinstance(table_raw, LineDict):
        ctx.problems.add(
            value.line_of("map"), f"severity_map.map must be a mapping, got {describe(table_raw)}"
        )
        ok = False
    else:
        for key, severity in table_raw.items():
            line = table_raw.line_of(key)
            if isinstance(key, bool) or not isinstance(key, str | int | float):
                ctx.problems.add(line, f"severity_map.map: keys must be strings, got {describe(key)}")
                ok = False
            elif severity not in SEVERITIES:
                ctx.problems.add(
                    line,
                    f"severity_map.map: bad severity {severity!r} for {str(key)!r}"
                    f" (must be one of: {', '.join(SEVERITIES)})",
                )
                ok = False
            else:
                table[str(key)] = severity
    default = value.get("default")
    if "default" in value and default not in SEVERITIES:
        ctx.problems.add(
            value.line_of("default"),
            f"severity_map.default: bad severity {default!r} (must be one of: {', '.join(SEVERITIES)})",
        )
        ok = False
    if not ok or source is None:
        return None
    return SeverityMap(ctx.rule, source, table, default)


def build_extract(value: Any, ctx: StepContext) -> Transform | None:
    """``extract: {from: template, regex: RE2 with named groups}``."""
    if not isinstance(value, LineDict):
        ctx.problems.add(ctx.line, f"extract must be a mapping, got {describe(value)}")
        return None
    if not _keys(value, ctx, "extract", ("from", "regex"), ()):
        return None
    source = _template(value, "from", ctx, "extract")
    pattern = value["regex"]
    line = value.line_of("regex")
    if not isinstance(pattern, str):
        ctx.problems.add(line, f"extract.regex must be a string, got {describe(pattern)}")
        return None
    try:
        regex = Regex(pattern)
    except ValueError as exc:
        ctx.problems.add(line, f"extract.regex: {exc}")
        return None
    if not regex.group_names:
        ctx.problems.add(line, f"extract.regex {pattern!r} has no named group; write (?P<name>...)")
        return None
    return Extract(ctx.rule, source, regex) if source is not None else None


def build_drop(value: Any, ctx: StepContext) -> Transform | None:
    """``drop: true``."""
    if value is not True:
        ctx.problems.add(ctx.line, f"drop must be true, got {value!r} (remove the step to keep alerts)")
        return None
    return Drop()
