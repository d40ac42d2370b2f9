"""The generic reader: a raw YAML value and a declared type → a typed value, or a
:class:`~receiver.errors.ConfigError` whose message names the key.

A part of the file is declared as a ``TypedDict`` (see :mod:`receiver.settings.schema`);
:meth:`Reader.read` walks the raw mapping with it and returns plain ``dict`` objects that
hold the keys the file gives, each read as its declared type. What each type accepts:

==================  ===================================================================
``str``             a string; ``${ENV_VAR}`` and ``${ENV_VAR:-fallback}`` are replaced
``bool``, ``int``   a YAML scalar; a string with ``${…}`` is replaced, then read as YAML
                    (so ``retry_attempts: ${ATTEMPTS}`` gives a number)
:class:`Scalar`     any YAML scalar, ``${…}`` read as for ``bool``; for :class:`From`
``Path``            a string, relative to the config file's folder
``Secret``          a string, or ``{file: PATH}`` / ``{env: NAME}``; trimmed, never empty. Under
                    one of the reader's ``unset_ok`` keys, a secret whose variable is unset or
                    whose file cannot be read becomes a random placeholder (read-only commands)
``Literal[…]``      one of the listed strings
``tuple[T, ...]``   a list of T;  ``dict[str, T]``: a mapping of names to T
``T | None``        T, or null
a ``TypedDict``     a mapping with only those keys; each ``Required`` one must be given
``Any``             the raw value, untouched
==================  ===================================================================

A null value counts as left out where the key holds a mapping, a list that may be empty or
anything (``Any``), or where its type says ``| None``; elsewhere (a string, a number, a list
that must hold something) null is refused as any other wrong value is.

``Annotated`` markers add rules: an ``int`` is :class:`AtLeast` something, a list may be
given as :class:`OneOrMany` item and must be :class:`NonEmpty`, a required key says what is
:class:`Missing`, a :class:`Check` looks at the value read, and :class:`From` reads the
value as another type and converts it (how a part of the file becomes a settings value).
Durations, sizes and the like are built from these in :mod:`receiver.settings.values`.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import NoneType, UnionType
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    Required,
    TypedDict,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

import yaml

from receiver.errors import ConfigError
from receiver.secret import Secret

__all__ = [
    "AtLeast",
    "Check",
    "From",
    "Missing",
    "NonEmpty",
    "OneOrMany",
    "Reader",
    "Scalar",
    "ValueUnavailable",
]


class Scalar:
    """Type of a value read as any YAML scalar (``${…}`` replaced and read as YAML); used with :class:`From`."""


@dataclass(frozen=True, slots=True)
class AtLeast:
    """An ``int`` must be at least ``minimum``."""

    minimum: int


@dataclass(frozen=True, slots=True)
class OneOrMany:
    """A list may be given as its one item (whose key then has no ``[0]``)."""


@dataclass(frozen=True, slots=True)
class NonEmpty:
    """A list must hold an item; ``message`` answers an empty list, or a value that is no list."""

    message: str


@dataclass(frozen=True, slots=True)
class Missing:
    """What a ``Required`` key says when it is left out (instead of ``required``)."""

    message: str


@dataclass(frozen=True, slots=True)
class Check:
    """``check(value, key)`` raises a ConfigError when the value read is not acceptable."""

    check: Callable[[Any, str], None]


@dataclass(frozen=True, slots=True)
class From:
    """Read the value as ``source``, then ``convert(value, key)`` gives the declared type."""

    source: Any
    convert: Callable[[Any, str], Any]


class _SecretSource(TypedDict, total=False):
    file: str
    env: str


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
class ValueUnavailable(ConfigError):
    """A value the file names whose variable is not set or whose file cannot be read."""


class Reader:
    """Reads raw values as declared types, with ``${ENV}`` from ``environ`` and paths relative to ``base_dir``.

    ``unset_ok`` lists keys (``pagerduty.routing_keys``, ``auth``…) under which an unavailable secret is read as a
    random placeholder instead of refused: for commands that never use those secrets.
    """

    def __init__(self, environ: Mapping[str, str], base_dir: Path, unset_ok: tuple[str, ...] = ()) -> None:
        self.environ = environ
        self.base_dir = base_dir
        self.unset_ok = unset_ok

    def read(self, value: Any, declared: Any, key: str) -> Any:
        """``value`` (found at ``key``) read as ``declared``."""
        tp, rules = _unwrap(declared)
        source = next((r for r in rules if isinstance(r, From)), None)
        if source is not None:
            result = source.convert(self.read(value, source.source, key), key)
        else:
            result = self._read(value, tp, rules, key)
        for rule in rules:
            if isinstance(rule, Check):
                rule.check(result, key)
        return result

    def _read(self, value: Any, tp: Any, rules: tuple[object, ...], key: str) -> Any:
        origin = get_origin(tp)
        if tp is Any:
            return value
        if is_typeddict(tp):
            return self._section(value, tp, key)
        if origin is Union or origin is UnionType:
            (inner,) = (a for a in get_args(tp) if a is not NoneType)
            return self.read(value, inner, key)
        if origin is tuple:
            return self._items(value, get_args(tp)[0], rules, key)
        if origin is dict:
            return self._entries(value, get_args(tp)[1], key)
        if origin is Literal:
            text = self._string(value, key)
            options = get_args(tp)
            if text not in options:
                either = f"{', '.join(options[:-1])} or {options[-1]}" if len(options) > 1 else options[0]
                raise ConfigError(f"config: {key}: expected {either}, got {text!r}")
            return text
        if tp is str:
            return self._string(value, key)
        if tp is bool:
            flag = self._scalar(value, key)
            if not isinstance(flag, bool):
                raise ConfigError(f"config: {key}: expected true or false, got {value!r}")
            return flag
        if tp is int:
            minimum = next((r.minimum for r in rules if isinstance(r, AtLeast)), 0)
            number = self._scalar(value, key)
            if isinstance(number, bool) or not isinstance(number, int) or number < minimum:
                raise ConfigError(f"config: {key}: expected an integer ≥ {minimum}, got {value!r}")
            return number
        if tp is Scalar:
            return self._scalar(value, key)
        if tp is Path:
            return self.base_dir / self._string(value, key)
        if tp is Secret:
            return self._secret(value, key)
        raise TypeError(f"no reader for {tp!r} (at {key})")

    def _section(self, value: Any, section: type, key: str) -> dict[str, Any]:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"config: {key or '<top level>'}: expected a mapping, got {_kind(value)}")
        fields = _fields(section)
        for name in value:
            if not isinstance(name, str) or name not in fields:
                raise ConfigError(f"config: {_join(key, name)}: unknown key (allowed: {', '.join(sorted(fields))})")
        for name, declared in fields.items():
            if get_origin(declared) is Required and name not in value:
                missing = next((r for r in _unwrap(declared)[1] if isinstance(r, Missing)), Missing("required"))
                raise ConfigError(f"config: {_join(key, name)}: {missing.message}")
        return {name: self.read(value[name], declared, _join(key, name)) for name, declared in fields.items()
                if name in value and not (value[name] is None and _null_is_left_out(declared))}

    def _items(self, value: Any, item: Any, rules: tuple[object, ...], key: str) -> tuple[Any, ...]:
        non_empty = next((r for r in rules if isinstance(r, NonEmpty)), None)
        if value is None and non_empty is not None:
            raise ConfigError(f"config: {key}: {non_empty.message}")
        if not isinstance(value, list):
            if any(isinstance(r, OneOrMany) for r in rules):
                return (self.read(value, item, key),)
            wrong = non_empty.message if non_empty else f"expected a list, got {_kind(value)}"
            raise ConfigError(f"config: {key}: {wrong}")
        if not value and non_empty is not None:
            raise ConfigError(f"config: {key}: {non_empty.message}")
        return tuple(self.read(v, item, f"{key}[{i}]") for i, v in enumerate(value))

    def _entries(self, value: Any, item: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ConfigError(f"config: {key}: expected a mapping, got {_kind(value)}")
        for name in value:
            if not isinstance(name, str):
                raise ConfigError(f"config: {key}.{name}: a name must be a string")
        return {name: self.read(v, item, f"{key}.{name}") for name, v in value.items()}

    def _string(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise ConfigError(f"config: {key}: expected a string, got {_kind(value)}")
        return self._interpolate(value, key)

    def _interpolate(self, value: str, key: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name, fallback = m.group(1), m.group(2)
            if name in self.environ:
                return self.environ[name]
            if fallback is not None:
                return fallback
            raise ValueUnavailable(f"config: {key}: environment variable {name} is not set")

        return _ENV_RE.sub(sub, value)

    def _scalar(self, value: Any, key: str) -> Any:
        if isinstance(value, str) and "${" in value:
            return yaml.safe_load(self._interpolate(value, key))
        return value

    def _secret(self, value: Any, key: str) -> Secret:
        try:
            return self._available_secret(value, key)
        except ValueUnavailable:
            if not any(key == k or key.startswith((f"{k}.", f"{k}[")) for k in self.unset_ok):
                raise
            return Secret(secrets.token_urlsafe(32))  # nobody knows it; long enough for every token check

    def _available_secret(self, value: Any, key: str) -> Secret:
        if isinstance(value, dict):
            spec = self._section(value, _SecretSource, key)
            if "file" in spec and "env" not in spec:
                path = self.base_dir / spec["file"]
                try:
                    text = path.read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise ValueUnavailable(f"config: {key}.file: cannot read {path}: {exc.strerror}") from exc
            elif "env" in spec and "file" not in spec:
                name = spec["env"]
                if name not in self.environ:
                    raise ValueUnavailable(f"config: {key}.env: environment variable {name} is not set")
                text = self.environ[name].strip()
            else:
                raise ConfigError(f"config: {key}: give exactly one of file or env")
        else:
            text = self._string(value, key).strip()
        if not text:
            raise ConfigError(f"config: {key}: is empty")
        return Secret(text)


@functools.cache
def _fields(section: type) -> dict[str, Any]:
    return get_type_hints(section, include_extras=True)


def _unwrap(declared: Any) -> tuple[Any, tuple[object, ...]]:
    """``Required[Annotated[T, *rules]]`` → ``(T, rules)``."""
    if get_origin(declared) in (Required, NotRequired):
        declared = get_args(declared)[0]
    if get_origin(declared) is Annotated:
        tp, *rules = get_args(declared)
        return tp, tuple(rules)
    return declared, ()


def _null_is_left_out(declared: Any) -> bool:
    tp, rules = _unwrap(declared)
    if get_origin(tp) in (Union, UnionType) and NoneType in get_args(tp):
        return True
    source = next((r.source for r in rules if isinstance(r, From)), None)
    if source is not None:
        tp, _ = _unwrap(source)
    may_be_empty = get_origin(tp) is tuple and not any(isinstance(r, NonEmpty) for r in rules)
    return tp is Any or is_typeddict(tp) or get_origin(tp) is dict or may_be_empty


def _join(key: str, name: object) -> str:
    return f"{key}.{name}" if key else str(name)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )
