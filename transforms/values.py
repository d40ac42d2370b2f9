"""Compiled rule values: literals, templates, and maps and lists of them. No I/O.

A value in a rules file compiles once, when the file loads: a string into a
:class:`~transforms.template.Template` (or a :class:`Const` when it holds no template),
a map into a :class:`MapValue`, a list into a :class:`ListValue`, anything else into a
:class:`Const`; subtrees without templates fold into one :class:`Const`. ``render(event)``
gives the value for one alert; it is a plain attribute holding a function bound at load
(part of the compiled set plans, see :mod:`transforms.fields`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from transforms.base import AlertEvent
from transforms.spec import LineDict, LineList, Problems, describe
from transforms.template import TemplateError, compile_template

__all__ = ["Const", "ListValue", "MapValue", "Value", "compile_value", "text"]


def text(value: Any) -> str:
    """A rendered value as text: ``None`` is ``""``, non-strings go through ``str``."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


class Value(Protocol):
    """A compiled (possibly nested) rule value."""

    @property
    def is_constant(self) -> bool: ...

    def render(self, event: AlertEvent) -> Any: ...


class Const:
    """A literal; maps and lists are handed out as fresh copies so no alert (or plugin)
    can change what the compiled rules hold for the next one."""

    __slots__ = ("container", "render", "value")
    is_constant = True

    def __init__(self, value: Any) -> None:
        self.value = value
        self.container = isinstance(value, dict | list)
        self.render: Callable[[AlertEvent], Any] = (
            (lambda _event: _copy(value)) if self.container else (lambda _event: value)
        )


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class MapValue:
    """A map whose values are rendered one by one (at least one is a template)."""

    __slots__ = ("items", "render")
    is_constant = False

    def __init__(self, items: tuple[tuple[str, Value], ...]) -> None:
        self.items = items
        renders = tuple((key, value.render) for key, value in items)

        def render(event: AlertEvent) -> dict[str, Any]:
            result = {}  # a loop, not a comprehension: no extra frame (Python 3.11)
            for key, render_value in renders:
                result[key] = render_value(event)
            return result

        self.render = render


class ListValue:
    """A list whose items are rendered one by one (at least one is a template)."""

    __slots__ = ("items", "render")
    is_constant = False

    def __init__(self, items: tuple[Value, ...]) -> None:
        self.items = items
        renders = tuple(value.render for value in items)

        def render(event: AlertEvent) -> list[Any]:
            result = []
            for render_value in renders:
                result.append(render_value(event))
            return result

        self.render = render


def compile_value(raw: Any, line: int, problems: Problems, where: str) -> Value | None:
    """Compiles a YAML value: strings become templates, maps and lists recurse.

    Constant subtrees are folded. Returns None (after reporting) on a template error.
    """
    if isinstance(raw, str):
        try:
            template = compile_template(raw)
        except TemplateError as exc:
            problems.add(line, f"{where}: {exc}")
            return None
        return Const(raw) if template.is_constant else template
    if isinstance(raw, dict):
        items: list[tuple[str, Value]] = []
        for key, sub in raw.items():
            sub_line = raw.line_of(key) if isinstance(raw, LineDict) else line
            if not isinstance(key, str):
                problems.add(sub_line, f"{where}: keys must be strings, got {describe(key)} {key!r}")
                continue
            value = compile_value(sub, sub_line, problems, f"{where}.{key}")
            if value is not None:
                items.append((key, value))
        if all(isinstance(v, Const) for _, v in items):
            return Const({k: v.value for k, v in items if isinstance(v, Const)})
        return MapValue(tuple(items))
    if isinstance(raw, list):
        elements: list[Value] = []
        for index, sub in enumerate(raw):
            sub_line = raw.line_of(index) if isinstance(raw, LineList) else line
            value = compile_value(sub, sub_line, problems, f"{where}[{index}]")
            if value is not None:
                elements.append(value)
        if all(isinstance(v, Const) for v in elements):
            return Const([v.value for v in elements if isinstance(v, Const)])
        return ListValue(tuple(elements))
    return Const(raw)
