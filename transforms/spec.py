"""YAML with line numbers, and the error collector used while compiling rules. No I/O.

Rules files are parsed with PyYAML's safe loader, but mappings and lists come back as
:class:`LineDict` / :class:`LineList`: plain ``dict`` / ``list`` subclasses that remember
the 1-based line of each key and item, so every compile error can say ``file:line:``.
Compilers report into a :class:`Problems` collector instead of raising, so one load lists
every error of every file.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = ["LineDict", "LineList", "Problems", "StepContext", "describe", "load_yaml", "plain"]


class LineDict(dict[Any, Any]):
    """A YAML mapping: ``line`` is where it starts, ``key_lines[key]`` where each key is."""

    line: int
    key_lines: dict[Any, int]

    def __init__(self, line: int = 1) -> None:
        super().__init__()
        self.line = line
        self.key_lines = {}

    def line_of(self, key: Any) -> int:
        """The line of ``key``, or of the mapping itself when the key is absent."""
        return self.key_lines.get(key, self.line)


class LineList(list[Any]):
    """A YAML sequence: ``line`` is where it starts, ``item_lines[i]`` where item ``i`` is."""

    line: int
    item_lines: list[int]

    def __init__(self, line: int = 1) -> None:
        super().__init__()
        self.line = line
        self.item_lines = []

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if 0 <= index < len(self.item_lines) else self.line


class _LineLoader(yaml.SafeLoader):
    """Safe loader building LineDict/LineList and recording duplicate keys."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.duplicates: list[tuple[int, Any]] = []


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)  # resolves "<<" merge keys
    result = LineDict(node.start_mark.line + 1)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                None, None, "found an unhashable mapping key", key_node.start_mark
            )
        if key in result:
            loader.duplicates.append((line, key))
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_seq(loader: _LineLoader, node: yaml.SequenceNode) -> LineList:
    result = LineList(node.start_mark.line + 1)
    for item in node.value:
        result.append(loader.construct_object(item, deep=True))
        result.item_lines.append(item.start_mark.line + 1)
    return result


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def load_yaml(text: str) -> tuple[Any, list[tuple[int, Any]]]:
    """Parses one YAML document; returns it and the ``(line, key)`` of duplicate keys.

    Raises ``yaml.YAMLError`` on a syntax error.
    """
    loader = _LineLoader(text)
    try:
        return loader.get_single_data(), loader.duplicates
    finally:
        loader.dispose()


def plain(value: Any) -> Any:
    """The same data with LineDict/LineList turned back into plain dict/list."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def describe(value: Any) -> str:
    """A short name of a YAML value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


@dataclass(slots=True)
class Problems:
    """Collects the problems of one rules file; ``messages`` lists them by line."""

    source: str
    found: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line: int, message: str) -> None:
        self.found.append((line, message))

    @property
    def count(self) -> int:
        return len(self.found)

    @property
    def messages(self) -> list[str]:
        """``source:line: message`` strings, ordered by line (stable within a line)."""
        return [
            f"{self.source}:{line}: {message}" for line, message in sorted(self.found, key=lambda p: p[0])
        ]


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a step factory gets besides the action's own value.

    ``rule`` is the step's name (for ``rule.field`` messages), ``line`` the line of the
    action key, ``step`` the whole step mapping (a plugin reads ``with`` from it),
    ``allow_plugins`` the module prefixes ``module:callable`` plugins may come from.
    """

    rule: str
    line: int
    step: LineDict
    problems: Problems
    allow_plugins: tuple[str, ...] = ()
