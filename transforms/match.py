"""Alertmanager label matchers: parsing and evaluation. No I/O.

Syntax and semantics follow Alertmanager (``pkg/labels``, ``matcher/parse``):

- operators ``=``, ``!=``, ``=~``, ``!~``; regexes are RE2 (the ``google-re2`` binding,
  so the syntax is Go's) and fully anchored (``fullmatch``, like ``^(?:re)$``);
- a missing label matches as the empty string (``foo=""`` matches alerts without
  ``foo``; ``foo!=""`` requires it);
- names and values are unquoted literals (no whitespace and none of
  ``{ } ! = ~ , \\ " ' ` ``) or double-quoted strings; in quoted strings ``\\"``, ``\\\\``
  and ``\\n`` are escapes and any other backslash is kept as written (the classic parser's
  rule, so ``"\\d+"`` and ``"\\\\d+"`` both mean the regex ``\\d+``: Alertmanager 0.25
  accepts both, and later versions do unless run with ``utf8-strict-mode``); label names may
  be quoted (``"service.name"="api"``); the value is required (``foo=""``, not ``foo=``);
- a matcher must be valid UTF-8, as Alertmanager requires: a lone surrogate (what a YAML
  ``"\\udc80"`` escape gives) is refused;
- one string may hold several comma-separated matchers, optionally in braces
  (``{a="b", c=~"d"}``), with one trailing comma allowed; a YAML list of such strings is
  flattened. All matchers must match (AND).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import re2

__all__ = ["Guard", "Matcher", "MatcherError", "Op", "Regex", "compile_guard", "parse_matchers"]

Op = Literal["=", "!=", "=~", "!~"]
Guard = Callable[[Mapping[str, str]], bool]

_RESERVED = frozenset("{}!=~,\\\"'`")
# Under RE2 a pattern made only of these characters and "|" is an alternation of literals,
# so a full match is set membership.
_LITERAL_CHARS = frozenset(string.ascii_letters + string.digits + "_-:/|")
_CLASSIC_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")  # names Alertmanager prints unquoted
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n"}


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # errors are reported as load errors, not on stderr
    options.encoding = re2.Options.Encoding.UTF8
    return options


_RE2_OPTIONS = _re2_options()


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate from JSON must not crash


_NO_SPAN = (-1, -1)  # RE2's span of a group that took no part (or of the whole match: no match)
_ANCHOR_BOTH: Any = getattr(getattr(re2, "_Anchor", None), "ANCHOR_BOTH", None)
_SpanMatch = Callable[[Any, bytes, int, int], Sequence[tuple[int, int]]]


def _span_match(compiled: Any) -> _SpanMatch:
    """RE2's own ``Match(anchor, text, pos, endpos)``, which returns the byte spans of all groups.

    The binding's ``fullmatch`` wraps that call in a generator and a ``Match`` object whose
    accessors are Python code: most of the cost of matching a short label value. The raw
    call is private to the binding, so when it is not there the public API stands in.
    """
    # The raw call against the public API: +22 % alerts/s (bench_rules.py, 53,100 vs 43,600).
    raw = getattr(getattr(compiled, "_regexp", None), "Match", None)
    if raw is not None and _ANCHOR_BOTH is not None:
        return raw  # type: ignore[no-any-return]
    return _public_span_match(compiled)


def _public_span_match(compiled: Any) -> _SpanMatch:
    """The same spans (anchored at both ends) through the binding's public API."""
    count: int = compiled.groups + 1

    def match(_anchor: Any, data: bytes, pos: int, endpos: int) -> Sequence[tuple[int, int]]:
        found = compiled.fullmatch(data, pos, endpos)
        if found is None:
            return (_NO_SPAN,) * count
        return [found.span(index) for index in range(count)]

    return match


class Regex:
    """An RE2 regex used fully anchored, like Alertmanager's ``^(?:re)$``.

    It runs on UTF-8 bytes (RE2's own encoding, so the same semantics as the binding's
    ``str`` interface, which spends most of its time converting offsets).

    Raises:
        ValueError: with RE2's message, when the pattern does not compile.
    """

    __slots__ = ("_groups", "_match", "group_names", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        try:
            compiled = re2.compile(_utf8(pattern), _RE2_OPTIONS)
        except re2.error as exc:
            detail = exc.args[0] if exc.args else exc
            if isinstance(detail, bytes):
                detail = detail.decode("utf-8", "replace")
            raise ValueError(f"invalid regex {pattern!r}: {detail}") from None
        self._match = _span_match(compiled)
        names = sorted(compiled.groupindex.items(), key=lambda item: item[1])
        self.group_names = tuple(name.decode("utf-8") for name, _ in names)
        self._groups = tuple(zip(self.group_names, (index for _, index in names), strict=True))

    def fullmatch(self, text: str) -> bool:
        data = text.encode("utf-8", "surrogatepass")
        return self._match(_ANCHOR_BOTH, data, 0, len(data))[0] != _NO_SPAN

    def named_groups(self, text: str) -> dict[str, str] | None:
        """The named groups when ``text`` matches (``""`` for a group that took no part), else None."""
        data = text.encode("utf-8", "surrogatepass")
        spans = self._match(_ANCHOR_BOTH, data, 0, len(data))
        if spans[0] == _NO_SPAN:
            return None
        found: dict[str, str] = {}
        for name, index in self._groups:
            start, end = spans[index]  # (-1, -1) for a group that took no part: an empty slice
            found[name] = data[start:end].decode("utf-8", "surrogatepass")
        return found


class MatcherError(ValueError):
    """A matcher string that cannot be parsed or whose regex does not compile."""


class Matcher:
    """One parsed matcher; ``test(value)`` checks one label value (a missing label is ``""``).

    Raises:
        ValueError: for ``=~`` / ``!~``, when the regex does not compile.
    """

    __slots__ = ("name", "op", "test", "value")

    def __init__(self, name: str, op: Op, value: str) -> None:
        self.name = name
        self.op: Op = op
        self.value = value
        self.test = _value_test(op, value)

    def __str__(self) -> str:
        """Alertmanager's canonical form, e.g. ``env=~"prod|staging"``."""
        name = self.name if _CLASSIC_NAME.fullmatch(self.name) else _quote(self.name)
        return f"{name}{self.op}{_quote(self.value)}"

    def __repr__(self) -> str:
        return f"Matcher({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Matcher):
            return NotImplemented
        return (self.name, self.op, self.value) == (other.name, other.op, other.value)

    def __hash__(self) -> int:
        return hash((self.name, self.op, self.value))


# Compiled matchers (a test per matcher chosen here, plain alternations as set lookups, one guard
# per rule) against Matcher.matches called per rule: +17 % alerts/s (bench_rules.py, 53,100 vs 45,500).
def _value_test(op: Op, value: str) -> Callable[[str], bool]:
    """The check of one label value, chosen once: equality, or the regex (a set lookup for a plain alternation)."""
    if op == "=":
        return value.__eq__
    if op == "!=":
        return value.__ne__
    regex = Regex(value)  # validates the pattern even when the set lookup answers
    found = frozenset(value.split("|")).__contains__ if set(value) <= _LITERAL_CHARS else regex.fullmatch
    if op == "=~":
        return found
    return lambda text: not found(text)


def compile_guard(matchers: Sequence[Matcher]) -> Guard | None:
    """One test that all of ``matchers`` match a label set (a missing label is ``""``); None when there are none."""
    tests = tuple((matcher.name, matcher.test) for matcher in matchers)
    if not tests:
        return None

    def all_match(labels: Mapping[str, str]) -> bool:
        get = labels.get
        for name, test in tests:  # noqa: SIM110 -- a plain loop: all() over a generator costs a frame per call
            if not test(get(name, "")):
                return False
        return True

    return all_match


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def parse_matchers(spec: str | Sequence[str]) -> tuple[Matcher, ...]:
    """Parses one matcher string (list entry or brace form) or a list of them.

    Raises:
        MatcherError: with a message naming the bad string and what is wrong.
    """
    if isinstance(spec, str):
        return _Parser(spec).parse()
    result: list[Matcher] = []
    for entry in spec:
        if not isinstance(entry, str):
            raise MatcherError(f"a matcher must be a string, got {entry!r}")
        result.extend(_Parser(entry).parse())
    return tuple(result)


class _Parser:
    """Recursive-descent parser over one string; positions in messages are 1-based columns."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, problem: str) -> MatcherError:
        return MatcherError(f"bad matcher {self.text!r}: {problem}")

    def check_utf8(self) -> None:
        """Refuses text that has no UTF-8 form: Python's stand-in for invalid UTF-8 is a lone surrogate."""
        try:
            self.text.encode("utf-8")
        except UnicodeEncodeError as exc:
            char = self.text[exc.start]
            raise self.fail(f"not valid UTF-8: {char!r} at column {exc.start + 1} is a lone surrogate") from None

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def parse(self) -> tuple[Matcher, ...]:
        self.check_utf8()
        self.skip_space()
        braced = self.peek() == "{"
        if braced:
            self.pos += 1
        found: list[Matcher] = []
        while True:
            self.skip_space()
            if self.pos == len(self.text) or (braced and self.peek() == "}"):
                break
            found.append(self.matcher())
            self.skip_space()
            if self.peek() == ",":
                self.pos += 1
            elif self.pos < len(self.text) and not (braced and self.peek() == "}"):
                raise self.fail(
                    f"expected ',' after a matcher at column {self.pos + 1}, found {self.peek()!r}"
                )
        if braced:
            if self.peek() != "}":
                raise self.fail("missing closing '}'")
            self.pos += 1
            self.skip_space()
            if self.pos < len(self.text):
                raise self.fail(f"unexpected text after '}}' at column {self.pos + 1}")
        return tuple(found)

    def matcher(self) -> Matcher:
        name = self.literal("label name")
        if not name:
            raise self.fail(f"empty label name at column {self.pos}")
        self.skip_space()
        op = self.operator(name)
        self.skip_space()
        start = self.pos
        value = self.literal("value")
        try:
            return Matcher(name, op, value)
        except ValueError as exc:
            raise self.fail(f"{exc} (column {start + 1})") from None

    def operator(self, name: str) -> Op:
        two = self.text[self.pos : self.pos + 2]
        if two in ("=~", "!=", "!~"):
            self.pos += 2
            return two  # type: ignore[return-value]
        if two[:1] == "=":
            self.pos += 1
            return "="
        found = repr(self.peek()) if self.peek() else "the end"
        raise self.fail(f"expected an operator (=, !=, =~, !~) after {name!r}, found {found}")

    def literal(self, what: str) -> str:
        char = self.peek()
        if char == '"':
            return self.quoted()
        if char == "" or char in _RESERVED or char.isspace():
            found = repr(char) if char else "the end"
            hint = "; quote values with double quotes" if char in ("'", "`") else ""
            if what == "value" and char in ("", ",", "}"):
                hint = '; write "" for an empty value'
            raise self.fail(f"expected a {what} at column {self.pos + 1}, found {found}{hint}")
        start = self.pos
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char.isspace() or char in _RESERVED:
                break
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self) -> str:
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(out)
            if char == "\\" and self.pos + 1 < len(self.text):
                nxt = self.text[self.pos + 1]
                out.append(_ESCAPES.get(nxt, "\\" + nxt))
                self.pos += 2
                continue
            out.append(char)
            self.pos += 1
        raise self.fail(f"unterminated quoted string starting at column {start + 1}")
