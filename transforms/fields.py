"""The PD-CEF fields a rule can ``set`` (and ``defaults`` can preset): validation at load,
rendering per alert. No I/O.

``set`` writes rendered values into ``AlertEvent.fields`` by their rule names; render.py
later checks and converts them for PagerDuty. Nested maps and lists are templated
recursively. ``custom_details`` is merged key by key into what earlier steps set; every
other field is replaced. A template that fails leaves its field (or, for
``custom_details``, its key) as it was and records ``"rule.field: message"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from transforms.base import AlertEvent
from transforms.spec import LineDict, LineList, Problems, describe
from transforms.template import RenderError
from transforms.values import Const, MapValue, Value, compile_value, text

__all__ = [
    "DEDUP_MODES",
    "DEFAULT_SEVERITY",
    "SETTABLE_FIELDS",
    "SEVERITIES",
    "FieldSetter",
    "compile_fields",
]

SEVERITIES = ("critical", "error", "warning", "info")
DEFAULT_SEVERITY = "error"  # when neither rules nor defaults set one (Alertmanager's default too)
DEDUP_MODES = ("alert", "group")
_TEXT_FIELDS = ("summary", "source", "component", "group", "class", "client", "client_url")
SETTABLE_FIELDS = (
    *_TEXT_FIELDS,
    "severity",
    "custom_details",
    "links",
    "images",
    "routing_key",
    "dedup",
    "send_resolved",
)


# Set plans (below) with values rendered by functions bound at load (transforms.values), against a
# loop over the fields calling each value's render method: +15 % alerts/s (bench_rules.py, 53,100 vs 46,200).
class FieldSetter:
    """Applies a compiled ``set`` mapping (or ``defaults``) to an alert.

    ``items`` are compiled once more into a plan, in order: a plain field is rendered and
    stored right in the loop; runs of literal fields become one ``dict.update`` step, and
    ``routing_key`` / ``dedup`` / ``custom_details`` (which check or merge what they
    render) a step each.
    """

    __slots__ = ("_plan", "items", "rule")

    def __init__(self, rule: str, items: tuple[tuple[str, Value], ...]) -> None:
        self.rule = rule
        self.items = items
        self._plan = _plan(rule, items)

    def constant(self, field: str) -> Any:
        """The literal value this setter gives ``field``, or None (absent or templated)."""
        for name, value in self.items:
            if name == field and isinstance(value, Const):
                return value.value
        return None

    def __call__(self, event: AlertEvent) -> AlertEvent:
        fields = event.fields
        for name, run in self._plan:
            if name is None:
                run(event)  # a step
                continue
            try:
                fields[name] = run(event)
            except RenderError as exc:
                event.template_errors.append(f"{self.rule}.{name}: {exc}")
        return event


_Step = Callable[[AlertEvent], None]
# (field, its render function) for a plain field, (None, step) for anything else
_Planned = tuple[str | None, Callable[[AlertEvent], Any]]
_KEY_FIELDS = ("routing_key", "dedup")  # rendered as stripped text; an empty rendering is refused


def _plan(rule: str, items: tuple[tuple[str, Value], ...]) -> tuple[_Planned, ...]:
    plan: list[_Planned] = []
    constants: dict[str, Any] = {}  # a run of literal fields, stored by one dict.update

    def flush() -> None:
        if constants:
            plan.append((None, _set_constants(dict(constants))))
            constants.clear()

    for name, value in items:
        entry: _Planned
        if name == "custom_details":
            entry = (None, _merge_details(rule, value))
        elif isinstance(value, Const) and not value.container:
            literal = value.value
            if name not in _KEY_FIELDS or (literal := text(literal).strip()):
                constants[name] = literal
                continue
            entry = (None, _note(f"{rule}.{name}: rendered empty; value not changed"))
        elif name in _KEY_FIELDS:
            entry = (None, _set_key(rule, name, value.render))
        else:
            entry = (name, value.render)
        flush()
        plan.append(entry)
    flush()
    return tuple(plan)


def _set_constants(values: dict[str, Any]) -> _Step:
    def step(event: AlertEvent) -> None:
        event.fields.update(values)

    return step


def _note(message: str) -> _Step:
    def step(event: AlertEvent) -> None:
        event.template_errors.append(message)

    return step


def _set_key(rule: str, name: str, render: Callable[[AlertEvent], Any]) -> _Step:
    def step(event: AlertEvent) -> None:
        try:
            rendered = render(event)
        except RenderError as exc:
            event.template_errors.append(f"{rule}.{name}: {exc}")
            return
        value = text(rendered).strip()
        if not value:
            event.template_errors.append(f"{rule}.{name}: rendered empty; value not changed")
            return
        event.fields[name] = value

    return step


def _current_details(event: AlertEvent) -> dict[str, Any]:
    """A copy of the custom_details set so far, to merge into (``{}`` if none or not a mapping)."""
    current = event.fields.get("custom_details")
    if current is None:
        return {}
    return dict(current) if type(current) is dict or isinstance(current, Mapping) else {}


def _merge_details(rule: str, value: Value) -> _Step:
    if isinstance(value, MapValue):
        renders = tuple((key, sub.render) for key, sub in value.items)

        def merge_keys(event: AlertEvent) -> None:
            merged = _current_details(event)
            for key, render in renders:
                try:
                    merged[key] = render(event)
                except RenderError as exc:
                    event.template_errors.append(f"{rule}.custom_details.{key}: {exc}")
            event.fields["custom_details"] = merged

        return merge_keys
    render = value.render

    def merge_rendered(event: AlertEvent) -> None:
        merged = _current_details(event)
        try:
            rendered = render(event)
        except RenderError as exc:
            event.template_errors.append(f"{rule}.custom_details: {exc}")
            return
        if not isinstance(rendered, Mapping):
            event.template_errors.append(f"{rule}.custom_details: template gave {describe(rendered)}, not a mapping")
            return
        merged.update(rendered)
        event.fields["custom_details"] = merged

    return merge_rendered


_Check = Callable[[Any, int, Problems, str], Value | None]


def compile_fields(raw: Any, line: int, problems: Problems, rule: str, what: str) -> FieldSetter | None:
    """Validates and compiles a ``set`` / ``defaults`` mapping into a FieldSetter.

    ``rule`` names the setter in run-time messages, ``what`` the mapping in load errors.
    """
    if not isinstance(raw, dict):
        problems.add(line, f"{what} must be a mapping of fields, got {describe(raw)}")
        return None
    before = problems.count
    items: list[tuple[str, Value]] = []
    for key, sub in raw.items():
        key_line = raw.line_of(key) if isinstance(raw, LineDict) else line
        if key not in SETTABLE_FIELDS:
            allowed = ", ".join(sorted(SETTABLE_FIELDS))
            problems.add(key_line, f"unknown field {key!r} in {what} (expected one of: {allowed})")
            continue
        value = _CHECKS.get(key, _check_text)(sub, key_line, problems, f"{what}.{key}")
        if value is not None:
            items.append((key, value))
    if problems.count > before:
        return None
    return FieldSetter(rule, tuple(items))


def _check_text(raw: Any, line: int, problems: Problems, where: str) -> Value | None:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        problems.add(line, f"{where} must be a string, got {describe(raw)}")
        return None
    return compile_value(str(raw), line, problems, where)


def _check_literal(problem: Callable[[Any], str | None]) -> _Check:
    """A text check that also vets the value when it is a literal rather than a template.

    ``problem(value)`` returns what follows the field's name in the error, or None.
    """

    def check(raw: Any, line: int, problems: Problems, where: str) -> Value | None:
        value = _check_text(raw.strip() if isinstance(raw, str) else raw, line, problems, where)
        if isinstance(value, Const) and (message := problem(value.value)) is not None:
            problems.add(line, f"{where}{message}")
            return None
        return value

    return check


def _check_bool(raw: Any, line: int, problems: Problems, where: str) -> Value | None:
    if not isinstance(raw, bool):
        problems.add(line, f"{where} must be true or false, got {describe(raw)}")
        return None
    return Const(raw)


def _check_details(raw: Any, line: int, problems: Problems, where: str) -> Value | None:
    if isinstance(raw, str):
        value = compile_value(raw, line, problems, where)
        if value is not None and value.is_constant:
            problems.add(line, f"{where} must be a mapping or a template giving one, got a constant string")
            return None
        return value
    if not isinstance(raw, dict):
        problems.add(line, f"{where} must be a mapping, got {describe(raw)}")
        return None
    value = compile_value(raw, line, problems, where)
    if isinstance(value, Const):  # keep per-key merging uniform
        return MapValue(tuple((k, Const(v)) for k, v in value.value.items()))
    return value


def _check_items(raw: Any, line: int, problems: Problems, where: str, keys: tuple[str, ...]) -> Value | None:
    if not isinstance(raw, list):
        problems.add(line, f"{where} must be a list of mappings with keys {', '.join(keys)}")
        return None
    ok = True
    for index, item in enumerate(raw):
        item_line = raw.line_of(index) if isinstance(raw, LineList) else line
        if not isinstance(item, dict):
            problems.add(item_line, f"{where}[{index}] must be a mapping, got {describe(item)}")
            ok = False
            continue
        for key, sub in item.items():
            sub_line = item.line_of(key) if isinstance(item, LineDict) else item_line
            if key not in keys:
                problems.add(
                    sub_line, f"unknown key {key!r} in {where}[{index}] (expected: {', '.join(keys)})"
                )
                ok = False
            elif not isinstance(sub, str):
                problems.add(sub_line, f"{where}[{index}].{key} must be a string, got {describe(sub)}")
                ok = False
        if keys[0] not in item:
            problems.add(item_line, f"{where}[{index}] needs {keys[0]!r}")
            ok = False
    return compile_value(raw, line, problems, where) if ok else None


_CHECKS: dict[str, _Check] = {
    "severity": _check_literal(
        lambda v: (
            None if v in SEVERITIES else f": bad severity {v!r} (must be one of: {', '.join(SEVERITIES)})"
        )
    ),
    "routing_key": _check_literal(lambda v: None if v else " must not be empty"),
    "dedup": _check_literal(
        lambda v: None if v in DEDUP_MODES else f": bad dedup {v!r} (must be 'alert', 'group' or a template)"
    ),
    "send_resolved": _check_bool,
    "custom_details": _check_details,
    "links": partial(_check_items, keys=("href", "text")),
    "images": partial(_check_items, keys=("src", "href", "alt")),
}
