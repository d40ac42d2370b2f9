"""The value types of the file that are more than one Python type: durations, sizes, counts
and files that must be readable, each an ``Annotated`` type the reader understands.

``Duration``
    seconds, from ``30``, ``1.5``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"4h"``, ``"1d"``; zero allowed
``Period``
    a duration that must be positive
``Size``
    bytes, from ``1048576``, ``"512KiB"``, ``"10MiB"``, ``"1MB"``
``Count``
    an integer ≥ 1
``ReadableFile``
    a path (relative to the config file) that names a readable file
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from receiver.errors import ConfigError
from receiver.settings.read import AtLeast, Check, From, Scalar

__all__ = ["Count", "Duration", "Period", "ReadableFile", "Size", "parse_duration", "parse_period", "parse_size"]

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2, "GB": 1000**3, "GiB": 1024**3,
}


def parse_duration(value: Any, key: str) -> float:
    """``30``, ``1.5``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"4h"``, ``"1d"`` → seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"config: {key}: expected a duration such as 30s or 5m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ConfigError(f"config: {key}: expected a duration such as 30s or 5m, got {value!r}")
    if seconds < 0:
        raise ConfigError(f"config: {key}: must not be negative, got {value!r}")
    return seconds


def parse_period(value: Any, key: str) -> float:
    """A duration that must be positive."""
    seconds = parse_duration(value, key)
    if seconds <= 0:
        raise ConfigError(f"config: {key}: must be positive")
    return seconds


def parse_size(value: Any, key: str) -> int:
    """``1048576``, ``"512KiB"``, ``"10MiB"`` → bytes."""
    if isinstance(value, bool):
        raise ConfigError(f"config: {key}: expected a size such as 10MiB, got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    else:
        raise ConfigError(f"config: {key}: expected a size such as 10MiB, got {value!r}")
    if size <= 0:
        raise ConfigError(f"config: {key}: must be positive, got {value!r}")
    return size


def _readable_file(path: Path, key: str) -> None:
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ConfigError(f"config: {key}: {path} is not a readable file")


Duration = Annotated[float, From(Scalar, parse_duration)]
Period = Annotated[float, From(Scalar, parse_period)]
Size = Annotated[int, From(Scalar, parse_size)]
Count = Annotated[int, AtLeast(1)]
ReadableFile = Annotated[Path, Check(_readable_file)]
